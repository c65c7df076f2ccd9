//! Who is attached to a channel, and what happens when one of them dies.
//!
//! Each handle (an open channel object) and each attachment (a `sender()` or `receiver()` call;
//! clones share theirs) takes one slot of the
//! segment's peer table: a u64 packing the process id, the process start time and the role, so
//! that one CAS claims or frees a slot and a reader never sees half an identity:
//!
//! ```text
//! bits 0..22   pid (Linux pids are below 2^22)
//! bits 22..62  start time of the process, clock ticks since boot (/proc/PID/stat field 22)
//! bits 62..64  kind: 1 sender, 2 receiver, 3 handle (0 is invalid in a used slot)
//! ```
//!
//! | word | written by | how |
//! |---|---|---|
//! | a slot | the attaching process (0 → ident), the detaching process (ident → 0), or a survivor that found the process dead (ident → 0) | CAS, so exactly one of them frees it |
//! | `dead_peer` | the first survivor to reap a dead attachment | CAS 0 → ident |
//! | `senders` / `receivers` | as in `shared.rs`: one decrement per freed slot | `Shared::detach` |
//!
//! The pid with its start time cannot be fooled by pid reuse: a new process under the same pid
//! has another start time. A blocked call sleeps on its futex in slices ([`CHECK_INTERVAL`]) and
//! checks the other side's attachments between slices ([`WatchPark`]); reaping the last sender
//! closes the channel for sending (DRAINING: the receiver gets the backlog, then end-of-stream),
//! reaping the last receiver closes it for receiving (CLOSING: senders are refused with their
//! message), and either wakes every waiter. [`dead_peer`] then says who died.

use crate::error::{Corrupt, DeadPeer};
use crate::futex::Wake;
use crate::layout::Header;
use crate::process::{Liveness, ProcessId};
use crate::shared::{Role, Shared};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::wait::Park;
use std::time::{Duration, Instant};

/// How long a blocked call sleeps before it checks whether its peers are still alive: half the
/// 10 ms detection target of issue #4, so a death is noticed within about 5 ms of it plus the
/// check itself.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(5);

const PID_BITS: u32 = 22;
const START_BITS: u32 = 40;
const ROLE_SHIFT: u32 = PID_BITS + START_BITS;

/// What a slot stands for: an attachment as sender or receiver, or a handle (an open channel
/// object, counted in `handles`; a process has one per channel it opened).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    Attached(Role),
    Handle,
}

fn slot_bits(slot: Slot) -> u64 {
    match slot {
        Slot::Attached(Role::Sender) => 1,
        Slot::Attached(Role::Receiver) => 2,
        Slot::Handle => 3,
    }
}

/// Pack an identity into a slot word (never 0: the kind bits are non-zero).
fn pack(id: ProcessId, slot: Slot) -> u64 {
    let pid = u64::from(id.pid) & ((1 << PID_BITS) - 1);
    let start = id.start_time & ((1 << START_BITS) - 1);
    pid | start << PID_BITS | slot_bits(slot) << ROLE_SHIFT
}

/// Unpack a used slot word; kind bits 0 are corrupt.
fn unpack(word: u64) -> Result<(ProcessId, Slot), Corrupt> {
    let slot = match word >> ROLE_SHIFT {
        1 => Slot::Attached(Role::Sender),
        2 => Slot::Attached(Role::Receiver),
        3 => Slot::Handle,
        r => return Err(Corrupt::new(format!("peer slot {word:#x} has kind bits {r}"))),
    };
    let pid = (word & ((1 << PID_BITS) - 1)) as u32;
    let start_time = (word >> PID_BITS) & ((1 << START_BITS) - 1);
    Ok((ProcessId { pid, start_time }, slot))
}

/// The kind of a used slot word (None for a free or corrupt one).
fn slot_kind(word: u64) -> Option<Slot> {
    if word == 0 {
        return None;
    }
    unpack(word).ok().map(|(_, k)| k)
}

/// This process in a slot of kind `slot`, or None if /proc cannot tell our start time (then
/// nobody could check our liveness either, so we do not take a slot).
fn my_ident(slot: Slot) -> Option<u64> {
    let me = ProcessId::me();
    (me.start_time != 0).then(|| pack(me, slot))
}

/// Take a slot for a new attachment or handle; returns its index, or None (it works but cannot
/// be watched) if the table is full even after reaping dead processes' slots, or /proc is
/// missing.
pub(crate) fn register(h: &Header, slot: Slot) -> Option<usize> {
    let ident = my_ident(slot)?;
    for attempt in 0..2 {
        for (i, word) in h.peers.slots.iter().enumerate() {
            // SYNC(peer-slot): AcqRel CAS; pairs with the CAS that freed the slot.
            if word.compare_exchange(0, ident, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                // A dead holder of the slot may have left its intent: it is ours to write now.
                if let Some(intent) = h.intents.word(i) {
                    intent.store(0, Ordering::Release);
                }
                return Some(i);
            }
        }
        // Full: reap the slots of dead processes and try once more.
        if attempt == 1 || reap(h, None).unwrap_or(0) == 0 {
            break;
        }
    }
    None
}

/// The owner mark this process writes into ownership markers (MPSC/MPMC CLAIMED, MPMC TAKEN)
/// while it holds peer slot `slot` (it also names the slot's intent word): the slot + 1 in bits 0..7 and 9 bits of a hash
/// of the process identity above, so that a marker left by a dead process is not mistaken for
/// the mark of a live process that took its slot after it was reaped. 0 (no slot) = unknown.
pub(crate) fn owner_mark(slot: Option<usize>) -> u16 {
    let Some(slot) = slot.filter(|&s| s < 127) else { return 0 };
    (slot as u16 + 1) | ident_hash(ProcessId::me()) << 7
}

fn ident_hash(id: ProcessId) -> u16 {
    let x = (u64::from(id.pid) ^ id.start_time.rotate_left(22)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 55) as u16 // the top 9 bits
}

/// Whether the attachment whose owner mark is `mark` is gone: its slot is free (its process
/// was reaped; a live attachment cannot detach while it owns a claim or a take), names another
/// process (the slot was reaped and taken again), or names a process that is dead. An unknown
/// mark (0), a mark out of the table, and a process whose liveness cannot be told are not gone.
pub(crate) fn owner_gone(h: &Header, mark: u16) -> bool {
    let Some(word) = ((mark & 0x7f) as usize).checked_sub(1).and_then(|i| h.peers.slots.get(i)) else {
        return false;
    };
    match word.load(Ordering::Acquire) {
        0 => true,
        w => match unpack(w) {
            Ok((id, Slot::Attached(_))) if ident_hash(id) != mark >> 7 => true,
            Ok((id, Slot::Attached(_))) => id.liveness() == Liveness::Dead,
            // A handle in the slot: the attachment that held it was freed.
            Ok((_, Slot::Handle)) => true,
            Err(_) => false,
        },
    }
}

/// Whether an attachment of `role` that may be alive has an intent word (`ring::intent`) for
/// which `covers` holds. Also true when that cannot be told (see [`live_intents`]).
pub(crate) fn intent_live(h: &Header, role: Role, covers: &dyn Fn(u64) -> bool) -> bool {
    live_intents(h, role, covers).is_none_or(|found| !found.is_empty())
}

/// The intent words of attachments of `role` that may be alive and for which `want` holds, or
/// None when that cannot be told: an attachment of `role` without a slot (the count exceeds the
/// slots: the table was full, or one is between attaching and taking its slot) publishes no
/// intent and could be about to do anything. A process whose liveness `/proc` cannot tell counts
/// as alive. A dead attachment not reaped yet still holds its slot; its intent does not count.
pub(crate) fn live_intents(h: &Header, role: Role, want: &dyn Fn(u64) -> bool) -> Option<Vec<u64>> {
    let count = match role {
        Role::Sender => &h.ctl.lifecycle.senders,
        Role::Receiver => &h.ctl.lifecycle.receivers,
    }
    .load(Ordering::Acquire);
    let mut slots = 0u32;
    let mut found = Vec::new();
    for (i, word) in h.peers.slots.iter().enumerate() {
        // SYNC(peer-slot): Acquire, as in `reap`.
        let w = word.load(Ordering::Acquire);
        // A free slot (0) or a corrupt one does not unpack to an attachment.
        let Ok((id, Slot::Attached(r))) = unpack(w) else { continue };
        if r != role {
            continue;
        }
        slots += 1;
        // SYNC(intent): Acquire; pairs with the holder's Release writes (ring/intent.rs). The
        // caller read the claim, take or reclaim CAS's result before, so it sees that intent or
        // a later value.
        let intent = h.intents.word(i).map_or(0, |x| x.load(Ordering::Acquire));
        if intent != 0 && want(intent) && id.liveness() != Liveness::Dead {
            found.push(intent);
        }
    }
    (count <= slots).then_some(found)
}

/// Free our slot of kind `slot` (an attachment or handle going away): the one at `index` (the
/// slot `register` gave it: another attachment of ours in this process may own markers and an
/// intent under its own slot, which must stay taken), or, without an index, any with our
/// identity and that kind (a handle, or a role only one attachment can hold).
pub(crate) fn unregister(h: &Header, slot: Slot, index: Option<usize>) {
    let Some(ident) = my_ident(slot) else { return };
    if let Some(word) = index.and_then(|i| h.peers.slots.get(i))
        && word.compare_exchange(ident, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    {
        return;
    }
    for word in &h.peers.slots {
        if word.load(Ordering::Relaxed) == ident
            && word.compare_exchange(ident, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            return;
        }
    }
}

/// Find the slots of dead processes (only attachments of `role`, or every slot if `None`), free
/// them and undo what they counted: a dead attachment is detached (the last dead sender closes
/// the channel for sending, the last dead receiver for receiving; both wake every waiter), a
/// dead handle leaves `handles` (so that the last live handle of a CLOSED channel still removes
/// its name). Returns how many were reaped. A corrupt slot is an error.
pub(crate) fn reap(h: &Header, role: Option<Role>) -> Result<usize, Corrupt> {
    let mut reaped = 0;
    for slot in &h.peers.slots {
        // SYNC(peer-slot): Acquire; the ident was published by the attaching CAS.
        let w = slot.load(Ordering::Acquire);
        if w == 0 {
            continue;
        }
        let (id, kind) = unpack(w)?;
        if role.is_some_and(|want| kind != Slot::Attached(want)) || id.liveness() != Liveness::Dead {
            continue;
        }
        // Exactly one survivor frees the slot, and only it undoes what the slot counted.
        if slot.compare_exchange(w, 0, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            continue;
        }
        // A slot stands for one count only if the count exceeds the slots of its kind that
        // remain (a live attachment raises its count before taking its slot, and frees its slot
        // before lowering its count, so slots never outnumber the count). A segment that says
        // otherwise was scribbled on: do not let its garbage lower our counts.
        let remaining = h.peers.slots.iter().filter(|x| slot_kind(x.load(Ordering::Acquire)) == Some(kind)).count();
        let counted = |n: u32| n as usize > remaining;
        match kind {
            Slot::Attached(r) => {
                let _ = h.ctl.lifecycle.dead_peer.compare_exchange(0, w, Ordering::AcqRel, Ordering::Relaxed);
                let count = match r {
                    Role::Sender => &h.ctl.lifecycle.senders,
                    Role::Receiver => &h.ctl.lifecycle.receivers,
                };
                if counted(count.load(Ordering::Acquire)) {
                    crate::shared::count_down_and_close_if_last(&h.ctl, r);
                }
            }
            Slot::Handle => {
                let _ = h.ctl.lifecycle.handles.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                    if counted(n) { n.checked_sub(1) } else { None }
                });
            }
        }
        reaped += 1;
    }
    Ok(reaped)
}

/// `LifecycleLine::ever_attached` bit of `role`.
pub(crate) fn ever_bit(role: Role) -> u32 {
    match role {
        Role::Sender => 1,
        Role::Receiver => 2,
    }
}

/// How long the attach count of a role may disagree with the peer table before this process
/// repairs it. Attaching raises the count and then takes a slot; detaching frees the slot, then
/// lowers the count, then closes the channel if it was the last: a few instructions apart, so a
/// disagreement that lasts this long means the process was killed in between.
const RECONCILE_AFTER: Duration = Duration::from_millis(100);

/// Repair what a process killed in the middle of attaching or detaching as `role` left: a count
/// above the number of `role` slots (the count is lowered to it), or no attachment left at all
/// on a side that had one while the channel is still open for it (closed as the last detach
/// would have). Only when the table is not full and this process could register itself (else
/// attachments without a slot are legitimate), and only after the disagreement has lasted
/// [`RECONCILE_AFTER`].
pub(crate) fn reconcile(shared: &Shared, role: Role) {
    let h = shared.seg.header();
    let l = &h.ctl.lifecycle;
    let mut used = 0;
    let mut of_role = 0u32;
    for word in &h.peers.slots {
        let w = word.load(Ordering::Acquire);
        if w != 0 {
            used += 1;
            if let Ok((_, Slot::Attached(r))) = unpack(w)
                && r == role
            {
                of_role += 1;
            }
        }
    }
    let count_word = match role {
        Role::Sender => &l.senders,
        Role::Receiver => &l.receivers,
    };
    let count = count_word.load(Ordering::Acquire);
    let Ok(state) = crate::lifecycle::load(&l.state) else { return };
    let open_for_role = match role {
        Role::Sender => !state.is_closed_for_send(),
        Role::Receiver => state < crate::lifecycle::State::Closing,
    };
    let ever = l.ever_attached.load(Ordering::Acquire) & ever_bit(role) != 0;
    let trustworthy = used < h.peers.slots.len() && ProcessId::me().start_time != 0;
    let off = count > of_role || (count == 0 && of_role == 0 && ever && open_for_role);
    let since = &shared.suspect_since[role as usize];
    if !trustworthy || !off {
        since.store(0, Ordering::Relaxed);
        return;
    }
    let now = crate::clock::monotonic_ns().max(1);
    let first = since.load(Ordering::Relaxed);
    if first == 0 {
        since.store(now, Ordering::Relaxed);
        return;
    }
    if now - first < RECONCILE_AFTER.as_nanos() as u64 {
        return;
    }
    since.store(0, Ordering::Relaxed);
    if count > of_role {
        let _ = count_word.compare_exchange(count, of_role, Ordering::AcqRel, Ordering::Relaxed);
    }
    if of_role == 0 && open_for_role {
        crate::shared::close_side(&h.ctl, role);
    }
}

/// The processes attached to a channel (a corrupt slot is skipped: `reap` reports it).
pub(crate) fn attached(h: &Header) -> Vec<ProcessId> {
    h.peers
        .slots
        .iter()
        .filter_map(|slot| match slot.load(Ordering::Acquire) {
            0 => None,
            w => unpack(w).ok().map(|(id, _)| id),
        })
        .collect()
}

/// The first dead attachment reaped in this channel, if any.
pub(crate) fn dead_peer(h: &Header) -> Result<Option<DeadPeer>, Corrupt> {
    let w = h.ctl.lifecycle.dead_peer.load(Ordering::Acquire);
    if w == 0 {
        return Ok(None);
    }
    match unpack(w)? {
        (id, Slot::Attached(role)) => {
            Ok(Some(DeadPeer { pid: id.pid, start_time: id.start_time, was_sender: role == Role::Sender }))
        }
        (_, Slot::Handle) => Err(Corrupt::new(format!("dead peer word {w:#x} names a handle"))),
    }
}

/// The futex park of a blocked channel call that watches the other side: it sleeps in slices of
/// [`CHECK_INTERVAL`] and, between slices, reaps dead attachments of `watch` (which closes the
/// channel if the last of them died, waking everyone). A wake-up or the end of a slice returns
/// `Woken`, so the caller re-checks its condition; only the caller's own deadline gives
/// `TimedOut`.
pub(crate) struct WatchPark<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) watch: Role,
}

impl Park for WatchPark<'_> {
    fn wait(&self, word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Wake {
        let slice_end = Instant::now() + CHECK_INTERVAL;
        let slice = match deadline {
            Some(d) if d <= slice_end => return crate::futex::wait(word, expected, Some(d)),
            _ => slice_end,
        };
        if crate::futex::wait(word, expected, Some(slice)) == Wake::TimedOut {
            // A corrupt peer table is reported by the caller's next look at the segment.
            let _ = reap(self.shared.seg.header(), Some(self.watch));
            reconcile(self.shared, self.watch);
        }
        Wake::Woken
    }

    fn wake_all(&self, word: &AtomicU32) {
        crate::futex::wake_all(word);
    }
}

impl crate::ring::intent::Owners for WatchPark<'_> {
    fn owner_gone(&self, mark: u16) -> bool {
        owner_gone(self.shared.seg.header(), mark)
    }

    fn intent_word(&self, mark: u16) -> Option<&AtomicU64> {
        intent_word(self.shared.seg.header(), mark)
    }

    fn intent_live(&self, senders: bool, covers: &dyn Fn(u64) -> bool) -> bool {
        let role = if senders { Role::Sender } else { Role::Receiver };
        intent_live(self.shared.seg.header(), role, covers)
    }
}

/// The intent word of the attachment with owner mark `mark` (its slot's; None for mark 0).
pub(crate) fn intent_word(h: &Header, mark: u16) -> Option<&AtomicU64> {
    ((mark & 0x7f) as usize).checked_sub(1).and_then(|slot| h.intents.word(slot))
}

#[cfg(all(test, not(shmq_loom)))]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips_and_rejects_bad_roles() {
        let id = ProcessId { pid: 4_194_303, start_time: (1 << 40) - 1 };
        for slot in [Slot::Attached(Role::Sender), Slot::Attached(Role::Receiver), Slot::Handle] {
            let w = pack(id, slot);
            assert_ne!(w, 0);
            assert_eq!(unpack(w).unwrap(), (id, slot));
        }
        assert!(unpack(5).is_err(), "kind bits 0 are corrupt");
    }
}
