//! Who is attached to a channel, and what happens when one of them dies.
//!
//! Each attachment (a `sender()` or `receiver()` call; clones share theirs) takes one slot of the
//! segment's peer table: a u64 packing the process id, the process start time and the role, so
//! that one CAS claims or frees a slot and a reader never sees half an identity:
//!
//! ```text
//! bits 0..22   pid (Linux pids are below 2^22)
//! bits 22..62  start time of the process, clock ticks since boot (/proc/PID/stat field 22)
//! bits 62..64  role: 1 sender, 2 receiver (0 and 3 are invalid in a used slot)
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
use crate::sync::{AtomicU32, Ordering};
use crate::wait::Park;
use std::time::{Duration, Instant};

/// How long a blocked call sleeps before it checks whether its peers are still alive: half the
/// 10 ms detection target of issue #4, so a death is noticed within about 5 ms of it plus the
/// check itself.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(5);

const PID_BITS: u32 = 22;
const START_BITS: u32 = 40;
const ROLE_SHIFT: u32 = PID_BITS + START_BITS;

fn role_bits(role: Role) -> u64 {
    match role {
        Role::Sender => 1,
        Role::Receiver => 2,
    }
}

/// Pack an identity into a slot word (never 0: the role bits are non-zero).
fn pack(id: ProcessId, role: Role) -> u64 {
    let pid = u64::from(id.pid) & ((1 << PID_BITS) - 1);
    let start = id.start_time & ((1 << START_BITS) - 1);
    pid | start << PID_BITS | role_bits(role) << ROLE_SHIFT
}

/// Unpack a used slot word; an invalid one (role 0 or 3) is corrupt.
fn unpack(word: u64) -> Result<(ProcessId, Role), Corrupt> {
    let role = match word >> ROLE_SHIFT {
        1 => Role::Sender,
        2 => Role::Receiver,
        r => return Err(Corrupt::new(format!("peer slot {word:#x} has role bits {r}"))),
    };
    let pid = (word & ((1 << PID_BITS) - 1)) as u32;
    let start_time = (word >> PID_BITS) & ((1 << START_BITS) - 1);
    Ok((ProcessId { pid, start_time }, role))
}

/// This process as an attachment of `role`, or None if /proc cannot tell our start time (then
/// nobody could check our liveness either, so we do not take a slot).
fn my_ident(role: Role) -> Option<u64> {
    let me = ProcessId::me();
    (me.start_time != 0).then(|| pack(me, role))
}

/// Take a slot for a new attachment of `role`. Returns false (the attachment works but cannot
/// be watched) if the table is full even after reaping dead attachments, or /proc is missing.
pub(crate) fn register(shared: &Shared, role: Role) -> bool {
    let Some(ident) = my_ident(role) else { return false };
    for attempt in 0..2 {
        for slot in &shared.seg.header().peers.slots {
            // SYNC(peer-slot): AcqRel CAS; pairs with the CAS that freed the slot.
            if slot.compare_exchange(0, ident, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                return true;
            }
        }
        // Full: reap the attachments of dead processes and try once more.
        if attempt == 1 || reap(shared.seg.header(), None).unwrap_or(0) == 0 {
            break;
        }
    }
    false
}

/// Free our slot for an attachment of `role` that is going away. Our attachments of one role
/// are indistinguishable, so any slot with our identity and that role will do.
pub(crate) fn unregister(h: &Header, role: Role) {
    let Some(ident) = my_ident(role) else { return };
    for slot in &h.peers.slots {
        if slot.load(Ordering::Relaxed) == ident
            && slot.compare_exchange(ident, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            return;
        }
    }
}

/// Find dead attachments of `role` (or of either role), free their slots and detach them: the
/// last dead sender closes the channel for sending, the last dead receiver for receiving (both
/// wake every waiter). Returns how many were reaped. A corrupt slot is an error.
pub(crate) fn reap(h: &Header, role: Option<Role>) -> Result<usize, Corrupt> {
    let mut reaped = 0;
    for slot in &h.peers.slots {
        // SYNC(peer-slot): Acquire; the ident was published by the attaching CAS.
        let w = slot.load(Ordering::Acquire);
        if w == 0 {
            continue;
        }
        let (id, r) = unpack(w)?;
        if role.is_some_and(|want| want != r) || id.liveness() != Liveness::Dead {
            continue;
        }
        // Exactly one survivor frees the slot, and only it detaches the attachment.
        if slot.compare_exchange(w, 0, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            continue;
        }
        let _ = h.ctl.lifecycle.dead_peer.compare_exchange(0, w, Ordering::AcqRel, Ordering::Relaxed);
        crate::shared::count_down_and_close_if_last(&h.ctl, r);
        reaped += 1;
    }
    Ok(reaped)
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
    let (id, role) = unpack(w)?;
    Ok(Some(DeadPeer { pid: id.pid, start_time: id.start_time, was_sender: role == Role::Sender }))
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
        }
        Wake::Woken
    }

    fn wake_all(&self, word: &AtomicU32) {
        crate::futex::wake_all(word);
    }
}

#[cfg(all(test, not(shmq_loom)))]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips_and_rejects_bad_roles() {
        let id = ProcessId { pid: 4_194_303, start_time: (1 << 40) - 1 };
        for role in [Role::Sender, Role::Receiver] {
            let w = pack(id, role);
            assert_ne!(w, 0);
            assert_eq!(unpack(w).unwrap(), (id, role));
        }
        assert!(unpack(5).is_err());
        assert!(unpack(3 << ROLE_SHIFT).is_err());
    }
}
