//! Loom models of the MPMC ring (Vyukov cells): nothing lost, nothing duplicated, one
//! producer's messages in order at each consumer, the send/close race, wrap-around padding, and
//! no lost wake-up in either direction.
//!
//! Run with
//! `RUSTFLAGS="--cfg shmq_loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom_mpmc`.
//!
//! Every blocking call uses `Deadline::Never` and a zero spin budget, so a waiter sleeps at once
//! in `LoomPark`, which has no timeout: a lost wake-up is a loom deadlock.
#![cfg(shmq_loom)]

mod common;

use common::{Outcomes, let_spawned_run_first, model};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use shmq::futex::Wake;
use shmq::loom_api::{Deadline, LoomPark, LoomRing, RingCtl, State, close_channel};
use shmq::ring::intent;
use shmq::ring::memory::RingMemory;
use shmq::ring::mpmc::{Owners, PopError, PushError, Ring, Take};
use shmq::ring::record::{self, Kind};
use shmq::wait::Park;
use std::time::{Duration, Instant};

/// The futex model plus the peer table's verdict: owner marks listed in `dead` are gone (a
/// bit per mark); marks 1..=4 have intent words (`intents[mark - 1]`), and `receivers` says
/// which of them are consumers. In a process a blocked call sleeps in 5 ms slices and looks again after each
/// (`peers::WatchPark`), so after a death every sleep ends. Here that holds for the side that
/// must recover (the word whose address is in `sliced`): after the death its waits return at
/// once. The other side sleeps as usual (modelling its slices too only multiplies loom's
/// executions: it has nothing to recover).
struct ModelPark {
    futex: LoomPark,
    dead: AtomicU64,
    sliced: AtomicU64,
    intents: [AtomicU64; MARKS],
    receivers: AtomicU64,
}

/// Owner marks with an intent word in the models: 1..=MARKS.
const MARKS: usize = 4;

impl Park for ModelPark {
    fn wait(&self, word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Wake {
        if self.sliced.load(Ordering::SeqCst) == word as *const AtomicU32 as u64 {
            loom::thread::yield_now(); // a slice passes: let the others run
            return Wake::Woken;
        }
        self.futex.wait(word, expected, deadline)
    }

    fn wake_all(&self, word: &AtomicU32) {
        self.futex.wake_all(word)
    }
}

impl Owners for ModelPark {
    fn owner_gone(&self, mark: u16) -> bool {
        mark < 64 && self.dead.load(Ordering::SeqCst) & (1 << mark) != 0
    }

    fn intent_word(&self, mark: u16) -> Option<&AtomicU64> {
        (mark as usize).checked_sub(1).and_then(|i| self.intents.get(i))
    }

    /// As `peers::intent_live`: the intents of live attachments of that side (loaded Acquire,
    /// as there).
    fn intent_live(&self, senders: bool, covers: &dyn Fn(u64) -> bool) -> bool {
        let dead = self.dead.load(Ordering::SeqCst);
        let receivers = self.receivers.load(Ordering::SeqCst);
        (1..=MARKS as u16).any(|mark| {
            let side_ok = (receivers & (1 << mark) == 0) == senders;
            side_ok && dead & (1 << mark) == 0 && {
                let w = self.intents[mark as usize - 1].load(Ordering::Acquire);
                w != 0 && covers(w)
            }
        })
    }
}

/// An MPMC channel on the heap: control block, cells, sequence words, futex model.
struct Mpmc {
    ctl: RingCtl,
    mem: LoomRing,
    seqs: Vec<AtomicU64>,
    park: ModelPark,
    cap: usize,
    cell: usize,
}

impl Mpmc {
    fn new(cap: usize, cell: usize) -> Arc<Mpmc> {
        let seqs = (0..cap / cell).map(|i| AtomicU64::new((i * cell) as u64)).collect();
        let ctl = RingCtl::new_active();
        // One sender counted as attached throughout (as a live process's would be), so that a
        // consumer never takes an in-flight claim for a dead producer's; the model of a dead
        // producer sets the count itself.
        ctl.lifecycle.senders.store(1, Ordering::SeqCst);
        let park = ModelPark {
            futex: LoomPark::new(),
            dead: AtomicU64::new(0),
            sliced: AtomicU64::new(0),
            intents: std::array::from_fn(|_| AtomicU64::new(0)),
            receivers: AtomicU64::new(0),
        };
        Arc::new(Mpmc { ctl, mem: LoomRing::new(cap), seqs, park, cap, cell })
    }

    /// One attachment's view (each thread gets its own, as each process would).
    fn ring(&self) -> Ring {
        Ring::new(self.cap, self.cell, 1 << 20, Duration::ZERO).expect("valid geometry")
    }

    /// A producer attachment that marks what it owns with `mark`, publishes intents, and
    /// recovers from gone owners at once (no patience: loom has no clock).
    fn owned_ring(&self, mark: u16) -> Ring {
        self.ring().with_recovery(mark, Duration::ZERO)
    }

    /// `owned_ring` for a consumer attachment (its intents count on the receiving side).
    fn consumer_ring(&self, mark: u16) -> Ring {
        self.park.receivers.fetch_or(1 << mark, Ordering::SeqCst);
        self.owned_ring(mark)
    }

    /// The attachment with owner mark `mark` dies: the peer checks of the other side (the
    /// producers if `producers_recover`, else the consumers) find it gone and end every sleep,
    /// as their 5 ms slices do.
    fn kill(&self, mark: u16, producers_recover: bool) {
        self.park.dead.fetch_or(1 << mark, Ordering::SeqCst);
        let seq = if producers_recover { &self.ctl.wake.tx_seq } else { &self.ctl.wake.rx_seq };
        self.park.sliced.store(seq as *const AtomicU32 as u64, Ordering::SeqCst);
        seq.fetch_add(1, Ordering::SeqCst);
        self.park.wake_all(seq);
    }

    /// Take up to `max` messages and keep them (the taker will die holding them).
    fn take_and_keep(&self, r: &Ring, max: usize) -> Take {
        r.take(&self.ctl, &self.mem, &self.seqs, &self.park, max, Deadline::Never).expect("take")
    }

    fn send(&self, r: &Ring, msg: &[u8]) -> Result<(), PushError> {
        r.send(&self.ctl, &self.mem, &self.seqs, &self.park, &[msg], Deadline::Never).map(|n| assert_eq!(n, 1))
    }

    fn send_batch(&self, r: &Ring, msgs: &[&[u8]]) -> Result<usize, PushError> {
        r.send(&self.ctl, &self.mem, &self.seqs, &self.park, msgs, Deadline::Never)
    }

    /// Blocking receive of up to `max` messages, copied out, cells released.
    fn recv(&self, r: &Ring, max: usize) -> Result<Vec<Vec<u8>>, PopError> {
        let take = r.take(&self.ctl, &self.mem, &self.seqs, &self.park, max, Deadline::Never)?;
        let msgs = take
            .msgs
            .iter()
            .map(|t| {
                let mut b = vec![0u8; t.len];
                self.mem.read_bytes(t.off, &mut b);
                b
            })
            .collect();
        r.release(&self.ctl, &self.mem, &self.seqs, &self.park, &take);
        Ok(msgs)
    }

    /// Receive until end-of-stream.
    fn recv_all(&self, r: &Ring, max: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        loop {
            match self.recv(r, max) {
                Ok(m) => got.extend(m),
                Err(PopError::Closed) => return got,
                Err(e) => panic!("receive failed: {e:?}"),
            }
        }
    }

    fn drain(&self) {
        close_channel(&self.ctl, &self.park, State::Draining).expect("close");
    }

    fn wakes(&self) -> (u32, u32) {
        (self.ctl.wake.rx_seq.load(Ordering::SeqCst), self.ctl.wake.tx_seq.load(Ordering::SeqCst))
    }
}

/// Two producers, one consumer taking batches: each message exactly once, each producer's two
/// messages in order. The consumer may sleep on an empty ring and must be woken.
#[test]
fn two_producers_one_consumer_in_order() {
    model(|spawned_first| {
        let ch = Mpmc::new(64, 16);
        let producers: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|id| {
                let ch = ch.clone();
                loom::thread::spawn(move || {
                    let r = ch.ring();
                    ch.send(&r, &[id, 0]).unwrap();
                    ch.send(&r, &[id, 1]).unwrap();
                })
            })
            .collect();
        let_spawned_run_first(spawned_first);
        let r = ch.ring();
        let mut got = Vec::new();
        while got.len() < 4 {
            got.extend(ch.recv(&r, 4).unwrap());
        }
        for p in producers {
            p.join().unwrap();
        }
        for id in [1u8, 2] {
            let seqs: Vec<u8> = got.iter().filter(|m| m[0] == id).map(|m| m[1]).collect();
            assert_eq!(seqs, [0, 1], "producer {id}: {got:?}");
        }
    });
}

/// Two consumers receive until end-of-stream while the main thread sends one message and
/// drains: exactly one consumer gets it, both see end-of-stream. A consumer that read the head
/// just before the other took the unit there must not go to sleep (taking a unit wakes nobody,
/// and the close's wake may already have passed): loom found that lost wake-up in an earlier
/// version. (With two messages, `two_consumers_exactly_once_while_sending`, too slow for CI.)
#[test]
fn two_consumers_exactly_once() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move |spawned_first| {
        let ch = Mpmc::new(64, 16);
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let ch = ch.clone();
                loom::thread::spawn(move || ch.recv_all(&ch.ring(), 1))
            })
            .collect();
        let_spawned_run_first(spawned_first);
        ch.send(&ch.ring(), &[7]).unwrap();
        ch.drain();
        let got: Vec<Vec<Vec<u8>>> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
        let all: Vec<&Vec<u8>> = got.iter().flatten().collect();
        assert_eq!(all, [&vec![7u8]], "{got:?}");
        seen.record(format!("split {}/{}", got[0].len(), got[1].len()));
    });
    outcomes.assert_exactly(&["split 0/1", "split 1/0"]);
}

/// One producer, two consumers until end-of-stream: the union is every message exactly once,
/// and each consumer sees the producer's messages in order.
#[test]
#[ignore = "did not finish within 17 min at LOOM_MAX_PREEMPTIONS=2 on 2 cores; run with --ignored"]
fn two_consumers_exactly_once_while_sending() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move |spawned_first| {
        let ch = Mpmc::new(64, 16);
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let ch = ch.clone();
                loom::thread::spawn(move || ch.recv_all(&ch.ring(), 1))
            })
            .collect();
        let_spawned_run_first(spawned_first);
        let r = ch.ring();
        ch.send(&r, &[0]).unwrap();
        ch.send(&r, &[1]).unwrap();
        ch.drain();
        let got: Vec<Vec<Vec<u8>>> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
        for g in &got {
            assert!(g.windows(2).all(|w| w[0][0] < w[1][0]), "out of order at one consumer: {g:?}");
        }
        let mut all: Vec<u8> = got.iter().flatten().map(|m| m[0]).collect();
        all.sort();
        assert_eq!(all, [0, 1], "{got:?}");
        seen.record(format!("split {}/{}", got[0].len(), got[1].len()));
    });
    // Both consumers take part in some executions, and either may take everything.
    outcomes.assert_exactly(&["split 0/2", "split 1/1", "split 2/0"]);
}

/// A send races a DRAINING close: accepted and received exactly once, or refused (the caller
/// keeps the message) and never received.
#[test]
fn send_close_race() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move |spawned_first| {
        let ch = Mpmc::new(64, 16);
        let sender = {
            let ch = ch.clone();
            loom::thread::spawn(move || ch.send(&ch.ring(), &[7]))
        };
        let closer = {
            let ch = ch.clone();
            loom::thread::spawn(move || ch.drain())
        };
        let_spawned_run_first(spawned_first);
        let got = ch.recv_all(&ch.ring(), 4);
        let sent = sender.join().unwrap();
        closer.join().unwrap();
        match sent {
            Ok(()) => assert_eq!(got, [vec![7]], "accepted but not delivered once"),
            Err(PushError::Closed) => assert!(got.is_empty(), "refused but delivered"),
            Err(e) => panic!("{e:?}"),
        }
        seen.record(format!("{}", if sent.is_ok() { "accepted" } else { "refused" }));
    });
    outcomes.assert_exactly(&["accepted", "refused"]);
}

/// A tiny ring (4 cells): a 1-cell message, then 2-cell messages, so that one needs padding to
/// the ring's end and starts over at cell 0, racing a consumer that frees cells out of order
/// with respect to the producer's view. A batch of two shares one claim.
#[test]
fn wrap_with_padding_and_a_batch() {
    model(|spawned_first| {
        let ch = Mpmc::new(64, 16);
        let producer = {
            let ch = ch.clone();
            loom::thread::spawn(move || {
                let r = ch.ring();
                ch.send(&r, &[1]).unwrap(); // cell 0
                let big = [2u8; 20]; // 28 bytes with its header: 2 cells (1, 2)
                ch.send(&r, &big).unwrap();
                // Cell 3 is too short for 2 cells: padding, then cells 0-1 of the next lap.
                let (a, b) = ([3u8; 20], [4u8]);
                let mut sent = 0;
                let batch: [&[u8]; 2] = [&a, &b];
                while sent < 2 {
                    sent += ch.send_batch(&r, &batch[sent..]).unwrap();
                }
            })
        };
        let_spawned_run_first(spawned_first);
        let r = ch.ring();
        let mut got = Vec::new();
        while got.len() < 4 {
            got.extend(ch.recv(&r, 2).unwrap());
        }
        producer.join().unwrap();
        let firsts: Vec<u8> = got.iter().map(|m| m[0]).collect();
        assert_eq!(firsts, [1, 2, 3, 4]);
        assert_eq!((got[1].len(), got[2].len()), (20, 20));
        assert!(got[2].iter().all(|&b| b == 3));
    });
}

/// A producer blocked on a full ring (2 cells, 1-cell messages) must be woken by the consumer's
/// release, and a consumer blocked on an empty ring by the producer's commit.
#[test]
fn no_lost_wakeup_either_way() {
    let coverage = Outcomes::default();
    let seen = coverage.clone();
    model(move |spawned_first| {
        let ch = Mpmc::new(32, 16);
        let producer = {
            let ch = ch.clone();
            loom::thread::spawn(move || {
                let r = ch.ring();
                for i in 0..3u8 {
                    ch.send(&r, &[i]).unwrap();
                }
            })
        };
        let_spawned_run_first(spawned_first);
        let r = ch.ring();
        let mut got = Vec::new();
        while got.len() < 3 {
            got.extend(ch.recv(&r, 1).unwrap());
        }
        producer.join().unwrap();
        assert_eq!(got, [vec![0], vec![1], vec![2]]);
        let (rx, tx) = ch.wakes();
        if rx > 0 {
            seen.record("woke consumer".into());
        }
        if tx > 0 {
            seen.record("woke producer".into());
        }
    });
    // Both sleeping paths were reached (and every execution finished: no lost wake-up).
    coverage.assert_exactly(&["woke consumer", "woke producer"]);
}

/// A producer claims two cells and dies before committing; another producer commits a message
/// after them and detaches; the dead one is reaped (the sender count reaches 0) and the channel
/// drained. A consumer receives until end-of-stream: it pads the dead claim cell by cell and
/// delivers the survivor's message exactly once; it never sleeps on a cell nobody will commit.
/// (One consumer: with two, the model did not finish in 15 minutes. Two padders racing write
/// the same header and one CAS of the sequence word wins; see `pad_abandoned`.)
#[test]
fn dead_producer_claim_is_padded() {
    model(|spawned_first| {
        let ch = Mpmc::new(64, 16);
        ch.ctl.lifecycle.senders.store(2, Ordering::SeqCst);
        let r = ch.ring();
        // The dead producer: claimed (2 cells for 20 bytes), never committed.
        let _claim = r.reserve(&ch.ctl, &ch.mem, &ch.seqs, &ch.park, 20, Deadline::Never).unwrap();
        // The survivor: one message after the dead claim, then it detaches.
        ch.send(&r, &[9]).unwrap();
        ch.ctl.lifecycle.senders.fetch_sub(1, Ordering::SeqCst);
        let consumer = {
            let ch = ch.clone();
            loom::thread::spawn(move || ch.recv_all(&ch.ring(), 1))
        };
        let_spawned_run_first(spawned_first);
        // The reaper: the dead producer's attachment is gone, and it was the last: DRAINING.
        ch.ctl.lifecycle.senders.fetch_sub(1, Ordering::SeqCst);
        ch.drain();
        let got = consumer.join().unwrap();
        assert_eq!(got, [vec![9u8]]);
        assert!(ch.ctl.lifecycle.abandoned_claims.load(Ordering::SeqCst) >= 2, "both cells padded");
    });
}

/// A producer (mark 1) claims two cells, marks them and dies before committing; a live
/// producer (mark 2) sends after it while the dead one is still counted as attached. The
/// consumer must skip the dead claim as soon as the peer table says its owner is gone (it is
/// padding of the marker's size: one ABANDONED word), deliver the survivor's message exactly
/// once, and never sleep through the death.
#[test]
fn dead_claimer_is_skipped_while_others_send() {
    model(|spawned_first| {
        let ch = Mpmc::new(64, 16);
        ch.ctl.lifecycle.senders.store(2, Ordering::SeqCst);
        let dead = ch.owned_ring(1);
        let _claim = dead.reserve(&ch.ctl, &ch.mem, &ch.seqs, &ch.park, 20, Deadline::Never).unwrap();
        let survivor = {
            let ch = ch.clone();
            loom::thread::spawn(move || ch.send(&ch.owned_ring(2), &[9]).unwrap())
        };
        let killer = {
            let ch = ch.clone();
            loom::thread::spawn(move || ch.kill(1, false))
        };
        let_spawned_run_first(spawned_first);
        let got = ch.recv(&ch.consumer_ring(3), 4).unwrap();
        survivor.join().unwrap();
        killer.join().unwrap();
        assert_eq!(got, [vec![9u8]]);
        assert_eq!(ch.ctl.lifecycle.abandoned_claims.load(Ordering::SeqCst), 1, "one unit abandoned");
    });
}

/// A producer (mark 1) is killed holding its CLAIM intent: between its claim CAS and its
/// CLAIMED markers (cells 0-1 claimed, unmarked), or (`headed`) after writing its message and
/// header but before storing the commit. A live producer (mark 2) sends after it while the dead
/// one is still counted as attached, and may itself be anywhere in its own claim window. The
/// consumer (mark 3) must pad the unmarked claim cell by cell, or commit the written message
/// for the dead producer, once the dead producer's intent no longer counts; never pad the live
/// producer's claim (its intent covers it until its marker is written, and again from its
/// header to its commit); deliver every message exactly once, and never sleep through the
/// death.
fn dead_claim_in_its_window(headed: bool) {
    model(move |spawned_first| {
        let ch = Mpmc::new(64, 16);
        ch.ctl.lifecycle.senders.store(2, Ordering::SeqCst);
        claim_by_hand(&ch, 1, 32);
        if headed {
            ch.mem.write_bytes(8, &[1; 20]);
            ch.mem.store_word(0, record::encode(Kind::Whole, 20), Ordering::Release);
        }
        let survivor = {
            let ch = ch.clone();
            loom::thread::spawn(move || ch.send(&ch.owned_ring(2), &[9]).unwrap())
        };
        let killer = {
            let ch = ch.clone();
            loom::thread::spawn(move || ch.kill(1, false))
        };
        let_spawned_run_first(spawned_first);
        let r = ch.consumer_ring(3);
        let mut got = ch.recv(&r, 4).unwrap();
        if headed && got.len() == 1 {
            got.extend(ch.recv(&r, 4).unwrap());
        }
        survivor.join().unwrap();
        killer.join().unwrap();
        let abandoned = ch.ctl.lifecycle.abandoned_claims.load(Ordering::SeqCst);
        if headed {
            assert_eq!(got, [vec![1u8; 20], vec![9u8]]);
            assert_eq!(abandoned, 0, "a written message is delivered, not abandoned");
        } else {
            assert_eq!(got, [vec![9u8]]);
            assert_eq!(abandoned, 2, "two cells abandoned, one at a time");
        }
    });
}

#[test]
fn unmarked_dead_claim_is_skipped_while_others_send() {
    dead_claim_in_its_window(false);
}

#[test]
fn dead_producers_written_message_is_committed_for_it() {
    dead_claim_in_its_window(true);
}

/// What a producer with owner mark `mark` leaves when it is killed right after winning a claim
/// of `extent` bytes at the tail, before its first CLAIMED marker: its CLAIM intent and the
/// moved tail (the same two writes `Ring::try_claim` makes, in the same order).
fn claim_by_hand(ch: &Mpmc, mark: u16, extent: u64) {
    let tail = ch.ctl.producer.tail.load(Ordering::SeqCst);
    ch.park.intents[mark as usize - 1].store(intent::encode(intent::CLAIM, tail), Ordering::Release);
    ch.ctl.producer.tail.compare_exchange(tail, tail + extent, Ordering::AcqRel, Ordering::Acquire).unwrap();
}

/// What a consumer with owner mark `mark` leaves when it is killed right after its take CAS
/// over `extent` bytes, before its TAKEN markers: its TAKE intent and the moved head.
fn take_by_hand(ch: &Mpmc, mark: u16, extent: u64) {
    ch.park.receivers.fetch_or(1 << mark, Ordering::SeqCst);
    let head = ch.ctl.consumer.head.load(Ordering::SeqCst);
    ch.park.intents[mark as usize - 1].store(intent::encode(intent::TAKE, head), Ordering::Release);
    ch.ctl.consumer.head.compare_exchange(head, head + extent, Ordering::AcqRel, Ordering::Acquire).unwrap();
}

/// A consumer (mark 2) takes a 2-cell message and dies before releasing it: after marking it
/// TAKEN (`marked`), or between its take CAS and its marker (only its TAKE intent is left).
/// The producer (mark 1) fills the rest of the 4-cell ring and blocks on the dead consumer's
/// cells; a live consumer (mark 3) receives meanwhile, its own takes in their unmarked window
/// at any moment, and the producer's last message needs a cell of the live consumer's take.
/// The producer must free the dead consumer's unit (one CAS of its sequence word to
/// RECLAIMING), never a live consumer's, and the live consumer receive every later message
/// exactly once.
fn dead_consumer_take_is_reclaimed(marked: bool) {
    model(move |spawned_first| {
        let ch = Mpmc::new(64, 16);
        let p = ch.owned_ring(1);
        ch.send(&p, &[1; 20]).unwrap(); // cells 0-1
        if marked {
            let kept = ch.take_and_keep(&ch.consumer_ring(2), 1);
            assert_eq!(kept.msgs.len(), 1);
        } else {
            take_by_hand(&ch, 2, 32);
        }
        ch.send(&p, &[2; 20]).unwrap(); // cells 2-3: the ring is full now
        let killer = {
            let ch = ch.clone();
            loom::thread::spawn(move || ch.kill(2, true))
        };
        let consumer = {
            let ch = ch.clone();
            loom::thread::spawn(move || {
                let r = ch.consumer_ring(3);
                let mut got = Vec::new();
                while got.len() < 3 {
                    got.extend(ch.recv(&r, 1).unwrap());
                }
                got
            })
        };
        let_spawned_run_first(spawned_first);
        ch.send(&p, &[3]).unwrap(); // needs the dead consumer's cells
        // Needs cell 2 as well, held by the live consumer's take (perhaps not marked yet):
        // the producer must wait for its release, never reclaim it.
        ch.send(&p, &[4; 20]).unwrap();
        killer.join().unwrap();
        let got = consumer.join().unwrap();
        assert_eq!(got, [vec![2u8; 20], vec![3u8], vec![4u8; 20]]);
        assert_eq!(ch.ctl.lifecycle.reclaimed_takes.load(Ordering::SeqCst), 1, "one message lost with its taker");
    });
}

#[test]
fn dead_consumer_marked_take_is_reclaimed() {
    dead_consumer_take_is_reclaimed(true);
}

#[test]
fn dead_consumer_unmarked_take_is_reclaimed() {
    dead_consumer_take_is_reclaimed(false);
}
