//! Intent words: what an attachment is about to do to cells it cannot mark yet (DESIGN.md 4d,
//! "Intent words").
//!
//! An ownership marker (CLAIMED, TAKEN) can only be written after the CAS that gives the cells
//! to their new owner, so a process killed between the CAS and the marker leaves cells that name
//! nobody. To close that window every attachment with a peer slot publishes, *before* the CAS, an
//! intent word in the slot's entry of the segment's intent table: the kind of operation and the
//! position it starts from. It stays set until the markers are written (or the CAS failed). A
//! survivor stuck on unmarked cells asks whether any *live* attachment's intent covers them
//! (`Owners::intent_live`); if none does, whoever owns them is dead.
//!
//! | word | written by | how |
//! |---|---|---|
//! | intent of slot `s` | the attachment holding slot `s` (any of its threads, one at a time) | CAS 0 → intent (Acquire), Release stores while held, Release store of 0 |
//! | intent of slot `s` | a process taking slot `s` after a dead holder | store 0 |
//!
//! The threads of one attachment share its slot, so the word is also a tiny lock among them:
//! `Held::hold` spins until the word is 0 and CASes its intent in; dropping the `Held` clears it.
//! It is held for a few instructions (CAS, marker stores), never across user code or a sleep.
//!
//! Orderings. SYNC(intent): the intent is written before the claim/take/reclaim CAS, whose
//! Release covers it; a survivor that sees the CAS's result (Acquire load of the tail, head or
//! sequence word) and then loads the intent (Acquire) sees it or a later value. Later values are
//! the clear (a Release store after the markers: who sees it sees the markers) and the next
//! intent (a CAS that Acquires the clear and stores with Release, so who sees it sees the
//! markers of the one before).

use crate::error::Corrupt;
use crate::layout::POS_MASK;
use crate::sync::{AtomicU64, Ordering};
use std::time::Duration;

/// How long `Held::hold` waits for another thread of the attachment before it calls the word
/// corrupt. A holder keeps it for a few instructions; only a word that some other process
/// scribbles on (a hostile or broken peer) stays taken this long.
const HOLD_LIMIT: Duration = Duration::from_secs(2);

/// A producer is about to claim cells from the position (tail CAS), or is marking its claim.
pub const CLAIM: u64 = 1 << 62;
/// A consumer is about to take units from the position (head CAS), or is marking its take.
pub const TAKE: u64 = 2 << 62;
/// A producer is freeing the unit at the position that a dead consumer took.
pub const RECLAIM: u64 = 3 << 62;
const KIND: u64 = 3 << 62;

/// The intent word for `kind` at `pos`.
pub fn encode(kind: u64, pos: u64) -> u64 {
    kind | (pos & POS_MASK)
}

/// The kind of an intent word (`CLAIM`, `TAKE`, `RECLAIM`; 0 = none).
pub fn kind(word: u64) -> u64 {
    word & KIND
}

/// The position of an intent word.
pub fn pos(word: u64) -> u64 {
    word & POS_MASK
}

/// Whether `word` is an intent of `kind` that may cover `pos`: its operation starts at or
/// before `pos` (a claim or take covers cells from where it starts; a stale one that will fail
/// its CAS covers too much, which only makes a survivor wait a little longer).
pub fn covers(word: u64, kind_: u64, pos_: u64) -> bool {
    kind(word) == kind_ && pos(word) <= pos_
}

/// Who tells a ring whether the owner of a marker is gone and what live attachments intend
/// (`peers::owner_gone` and `peers::intent_live` over the segment's peer table, in the parks of
/// blocking calls). A park without a peer table knows nothing: nobody is gone, every intent may
/// be live, and there is no intent word to publish.
pub trait Owners {
    /// Whether the attachment with owner mark `mark` is gone for sure (dead or reaped).
    fn owner_gone(&self, _mark: u16) -> bool {
        false
    }
    /// The intent word of the attachment with owner mark `mark` (None: it has no slot).
    fn intent_word(&self, _mark: u16) -> Option<&AtomicU64> {
        None
    }
    /// Whether an attachment on the sending (`senders`) or receiving side that may be alive
    /// has an intent for which `covers` holds (true as well when that cannot be told).
    fn intent_live(&self, _senders: bool, _covers: &dyn Fn(u64) -> bool) -> bool {
        true
    }
}

/// Our intent word while we hold it; cleared (Release) when dropped. A ring without a slot has
/// no word, and then nothing is published (survivors then never recover unmarked cells, see
/// `Owners::intent_live`).
pub struct Held<'a>(Option<&'a AtomicU64>);

impl<'a> Held<'a> {
    /// Wait until no other thread of our attachment holds the word, then publish `intent`.
    /// A word that stays taken for [`HOLD_LIMIT`] is `Corrupt` (somebody else writes it).
    pub fn hold(word: Option<&'a AtomicU64>, intent: u64) -> Result<Held<'a>, Corrupt> {
        if let Some(w) = word {
            let mut spins = 0u32;
            let mut since = None;
            // SYNC(intent): Acquire CAS; pairs with the Release clear of the thread that held it
            // before (so one who sees our intent sees that thread's markers too).
            while let Err(seen) = w.compare_exchange_weak(0, intent, Ordering::Acquire, Ordering::Relaxed) {
                spins = spins.wrapping_add(1);
                if spins % 64 != 0 {
                    crate::sync::spin_hint();
                    continue;
                }
                crate::sync::yield_now();
                if spins % 1024 == 0 {
                    let now = crate::clock::monotonic_ns();
                    let start = *since.get_or_insert(now);
                    if now.saturating_sub(start) >= HOLD_LIMIT.as_nanos() as u64 {
                        return Err(Corrupt::new(format!(
                            "our intent word stays {seen:#x}: another process writes it"
                        )));
                    }
                }
            }
        }
        Ok(Held(word))
    }

    /// Publish another intent while holding the word (a CAS retry from a fresh position).
    pub fn set(&self, intent: u64) {
        if let Some(w) = self.0 {
            // SYNC(intent): Release; as the clear.
            w.store(intent, Ordering::Release);
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.0 {
            // SYNC(intent): Release; pairs with survivors' Acquire loads in `intent_live`: who
            // sees the word cleared sees the markers we wrote while holding it.
            w.store(0, Ordering::Release);
        }
    }
}

#[cfg(all(test, not(shmq_loom)))]
mod tests {
    use super::*;

    #[test]
    fn intents_encode_kind_and_position() {
        let w = encode(TAKE, 4096);
        assert_eq!((kind(w), pos(w)), (TAKE, 4096));
        assert!(covers(w, TAKE, 4096) && covers(w, TAKE, 8192));
        assert!(!covers(w, TAKE, 4095) && !covers(w, CLAIM, 8192));
        assert_eq!(kind(0), 0);
    }

    #[test]
    fn held_word_excludes_other_threads_and_clears_on_drop() {
        let word = AtomicU64::new(0);
        {
            let held = Held::hold(Some(&word), encode(CLAIM, 64)).unwrap();
            assert_eq!(word.load(Ordering::Relaxed), encode(CLAIM, 64));
            held.set(encode(CLAIM, 128));
            assert_eq!(word.load(Ordering::Relaxed), encode(CLAIM, 128));
            // Another thread of the attachment waits until we are done.
            std::thread::scope(|s| {
                let t = s.spawn(|| {
                    let _h = Held::hold(Some(&word), encode(TAKE, 1)).unwrap();
                });
                std::thread::sleep(std::time::Duration::from_millis(20));
                assert!(!t.is_finished());
                drop(held);
                t.join().unwrap();
            });
        }
        assert_eq!(word.load(Ordering::Relaxed), 0);
        let none = Held::hold(None, encode(CLAIM, 0)).unwrap();
        none.set(1);
    }

    #[test]
    fn a_word_nobody_of_ours_clears_is_corrupt() {
        // A scribbled value that no thread of ours will ever clear: an error, not a hang.
        let word = AtomicU64::new(0xdead_beef);
        let t0 = std::time::Instant::now();
        let err = Held::hold(Some(&word), encode(CLAIM, 0)).err().expect("corrupt");
        assert!(err.to_string().contains("0xdeadbeef"), "{err}");
        assert!(t0.elapsed() >= HOLD_LIMIT);
        assert_eq!(word.load(Ordering::Relaxed), 0xdead_beef, "left as found");
    }
}
