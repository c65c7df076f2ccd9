//! One background thread per process that notices the death of any peer of any open channel
//! at once, so that even calls that never block (a sender with room in the ring) learn of it:
//! it holds a pidfd for every peer process recorded in the channels' peer tables and sleeps in
//! `poll` on all of them. When one becomes readable (the process exited), it reaps the dead
//! attachments (`peers::reap`), which closes the channel for the dead side and wakes every
//! waiter. Blocked calls have their own 5 ms check as well (`peers::WatchPark`), so the watcher
//! speeds things up but nothing depends on it.
//!
//! The thread reads a channel's mapping only under a lock that the channel's `Drop` takes to
//! remove it (so it never keeps a mapping or descriptor alive), rescans the tables every
//! [`RESCAN`] for peers that attached since, and ends when the last channel of the process is
//! gone: a process without open channels has no watcher thread.

use crate::process::{PidWatch, ProcessId};
use crate::segment::Segment;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the watcher looks for peers that attached since its last look (a peer that
/// attaches and dies within this time is still noticed: at the next rescan, or by a blocked
/// call's own check).
const RESCAN: Duration = Duration::from_millis(50);

/// The mappings of the channels the watcher serves; `None` while no watcher thread runs. The
/// watcher reads them only while it holds this lock, and a channel removes its own entry in its
/// `Drop` ([`unwatch`]), so the watcher never keeps a mapping or descriptor alive after the
/// channel is gone.
static CHANNELS: Mutex<Option<Vec<Arc<Segment>>>> = Mutex::new(None);

fn lock() -> std::sync::MutexGuard<'static, Option<Vec<Arc<Segment>>>> {
    CHANNELS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Have the watcher serve this channel (starting the thread if none runs).
pub(crate) fn watch(seg: &Arc<Segment>) {
    let mut guard = lock();
    match guard.as_mut() {
        Some(list) => list.push(seg.clone()),
        None => {
            *guard = Some(vec![seg.clone()]);
            let spawned = std::thread::Builder::new().name("shmq-peer-watch".into()).spawn(run);
            if spawned.is_err() {
                // No thread: the blocked calls' own checks still notice deaths.
                *guard = None;
            }
        }
    }
}

/// The channel is going away: stop serving it (the thread ends after the last one).
pub(crate) fn unwatch(seg: &Arc<Segment>) {
    if let Some(list) = lock().as_mut() {
        if let Some(i) = list.iter().position(|s| Arc::ptr_eq(s, seg)) {
            list.swap_remove(i);
        }
    }
}

fn run() {
    let me = std::process::id();
    // One pidfd per peer process (keyed by pid + start time), kept across rescans.
    let mut watches: HashMap<ProcessId, PidWatch> = HashMap::new();
    // Processes seen dead (their pidfd fired, or could not be opened): not watched again, so
    // that a slot nobody can reap (liveness unknown) does not make the thread spin.
    let mut dead: HashSet<ProcessId> = HashSet::new();
    loop {
        {
            let mut guard = lock();
            let Some(list) = guard.as_mut() else { return };
            if list.is_empty() {
                *guard = None; // decided under the lock: the next `watch` starts a new thread
                return;
            }
            let mut seen = HashSet::new();
            let mut dead_found = false;
            for seg in list.iter() {
                for id in crate::peers::attached(seg.header()) {
                    if id.pid == me || !seen.insert(id) || watches.contains_key(&id) || dead.contains(&id) {
                        continue;
                    }
                    match PidWatch::open(&id) {
                        Ok(w) => {
                            watches.insert(id, w);
                        }
                        // Gone already (or pidfds unsupported: then only blocked calls check).
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            dead.insert(id);
                            dead_found = true;
                        }
                        Err(_) => {}
                    }
                }
            }
            watches.retain(|id, _| seen.contains(id));
            dead.retain(|id| seen.contains(id));
            if dead_found {
                reap_all(list);
            }
        }
        let ids: Vec<ProcessId> = watches.keys().copied().collect();
        let list: Vec<&PidWatch> = ids.iter().map(|id| &watches[id]).collect();
        let fired = if list.is_empty() {
            std::thread::sleep(RESCAN);
            None
        } else {
            PidWatch::wait_any(&list, Some(RESCAN)).ok().flatten()
        };
        if let Some(i) = fired {
            watches.remove(&ids[i]);
            dead.insert(ids[i]);
            if let Some(list) = lock().as_ref() {
                reap_all(list);
            }
        }
    }
}

fn reap_all(channels: &[Arc<Segment>]) {
    for seg in channels {
        // A corrupt peer table is reported to the channel's users by their own calls.
        let _ = crate::peers::reap(seg.header(), None);
    }
}
