//! What every channel flavour shares: the mapped segment of one process, the attach counts of
//! senders and receivers recorded in the segment, the statistics, and the channel-level methods
//! (create, open, close, stats...) generated for each flavour's `Channel` type by
//! [`channel_methods!`].

use crate::channel::Stats;
use crate::error::{AttachError, Corrupt, SegmentError};
use crate::layout::{self, RingCtl};
use crate::lifecycle::{self, State};
use crate::segment::Segment;
use crate::sync::{AtomicU32, Ordering};
use crate::wait::OsPark;
use std::sync::Arc;
use std::time::Duration;

/// The two sides a handle can attach as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Sender,
    Receiver,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        }
    }
}

/// Human name of a flavour word.
pub(crate) fn flavor_name(flavor: u32) -> &'static str {
    match flavor {
        layout::FLAVOR_SPSC => "spsc",
        layout::FLAVOR_MPSC => "mpsc",
        layout::FLAVOR_MPMC => "mpmc",
        _ => "unknown",
    }
}

/// What every handle of one channel in this process shares: the mapping.
pub(crate) struct Shared {
    /// Shared with the peer watcher (`watcher.rs`), which may keep the mapping a moment longer.
    pub(crate) seg: Arc<Segment>,
    /// Per role (sender, receiver): when this process first saw the attach count disagree with
    /// the peer table (CLOCK_MONOTONIC ns; 0 = it agrees). See `peers::reconcile`.
    pub(crate) suspect_since: [crate::sync::AtomicU64; 2],
    pub(crate) spin: Duration,
}

impl Shared {
    /// Wrap a segment, refusing one of another flavour.
    pub(crate) fn new(seg: Segment, spin: Duration, flavor: u32) -> Result<Arc<Shared>, SegmentError> {
        if seg.flavor() != flavor {
            return Err(SegmentError::WrongFlavor { expected: flavor_name(flavor), found: flavor_name(seg.flavor()) });
        }
        // Count this process's handle in the segment (the last one out of a CLOSED channel
        // removes its name).
        seg.ctl().lifecycle.handles.fetch_add(1, Ordering::AcqRel);
        crate::peers::register(seg.header(), crate::peers::Slot::Handle);
        let suspect_since = [crate::sync::AtomicU64::new(0), crate::sync::AtomicU64::new(0)];
        let shared = Arc::new(Shared { seg: Arc::new(seg), spin, suspect_since });
        crate::watcher::watch(&shared.seg);
        Ok(shared)
    }

    pub(crate) fn ctl(&self) -> &RingCtl {
        self.seg.ctl()
    }

    fn role_word(&self, role: Role) -> &AtomicU32 {
        let l = &self.ctl().lifecycle;
        match role {
            Role::Sender => &l.senders,
            Role::Receiver => &l.receivers,
        }
    }

    /// Record one more attachment of `role`, and who holds it (the peer table, so that a
    /// survivor can tell when this process dies); returns the peer slot taken, if any. `exclusive`: fail with `RoleTaken` unless
    /// there is none (SPSC senders and receivers, the MPSC receiver); a holder that died is
    /// reaped first.
    pub(crate) fn attach(&self, role: Role, exclusive: bool) -> Result<Option<usize>, AttachError> {
        let word = self.role_word(role);
        self.ctl().lifecycle.ever_attached.fetch_or(crate::peers::ever_bit(role), Ordering::AcqRel);
        if exclusive {
            // SYNC(role): AcqRel CAS; pairs with the Release decrement in `detach`, so a new
            // holder sees everything the previous one did.
            let mut taken = word.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_err();
            if taken && crate::peers::reap(self.seg.header(), Some(role)).unwrap_or(0) > 0 {
                taken = word.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_err();
            }
            if taken {
                return Err(AttachError::RoleTaken { role: role.name() });
            }
        } else {
            // SYNC(role): as above. A count at u32::MAX is corrupt; refuse rather than wrap.
            word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_add(1))
                .map_err(|_| AttachError::Corrupt(Corrupt::new(format!("{} count is at its maximum", role.name()))))?;
        }
        Ok(crate::peers::register(self.seg.header(), crate::peers::Slot::Attached(role)))
    }

    /// Remove one attachment of `role` of this process (holding peer slot `slot`, as `attach`
    /// returned it); true if it was the last one.
    pub(crate) fn detach(&self, role: Role, slot: Option<usize>) -> bool {
        crate::peers::unregister(self.seg.header(), crate::peers::Slot::Attached(role), slot);
        self.count_down(role)
    }

    /// Decrement the count of `role` (an attachment went away, or died and was reaped); true if
    /// it was the last one. A corrupt (zero) count is left alone rather than wrapped, and
    /// reported as "not the last".
    fn count_down(&self, role: Role) -> bool {
        count_down(self.ctl(), role)
    }

    /// `detach` when the caller closes the channel anyway (SPSC) or never used the role.
    pub(crate) fn detach_quietly(&self, role: Role) {
        let _ = self.detach(role, None);
    }

    /// Multi-handle flavours: the last sender gone closes for sending (DRAINING, the receivers
    /// drain the backlog); the last receiver gone closes for receiving (CLOSING, sends refused).
    pub(crate) fn detach_and_close_if_last(&self, role: Role, slot: Option<usize>) {
        if self.detach(role, slot) {
            close_for(self.ctl(), role);
        }
    }

    /// The dead attachment recorded in the segment, if it was on side `role` (the side whose
    /// death closed the channel for the caller). Read only on the error path.
    pub(crate) fn dead(&self, role: Role) -> Option<crate::DeadPeer> {
        crate::peers::dead_peer(self.seg.header()).ok().flatten().filter(|p| p.was_sender == (role == Role::Sender))
    }

    /// A park for a blocked call of this channel that watches the attachments of `watch` and
    /// notices when they die (see `peers::WatchPark`).
    pub(crate) fn watch(&self, watch: Role) -> crate::peers::WatchPark<'_> {
        crate::peers::WatchPark { shared: self, watch }
    }
}

/// Decrement the attach count of `role`; true if it was the last one. A corrupt (zero) count is
/// left alone rather than wrapped, and reported as "not the last".
fn count_down(ctl: &RingCtl, role: Role) -> bool {
    let word = match role {
        Role::Sender => &ctl.lifecycle.senders,
        Role::Receiver => &ctl.lifecycle.receivers,
    };
    // SYNC(role): Release; see `Shared::attach`.
    word.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1)) == Ok(1)
}

/// Close the channel for the side `role` (its last attachment is gone).
pub(crate) fn close_side(ctl: &RingCtl, role: Role) {
    close_for(ctl, role);
}

/// `count_down` for an attachment whose process died, closing as a detach would.
pub(crate) fn count_down_and_close_if_last(ctl: &RingCtl, role: Role) {
    if count_down(ctl, role) {
        close_for(ctl, role);
    }
}

/// The last sender gone: DRAINING (receivers drain the backlog); the last receiver gone:
/// CLOSING (sends refused).
fn close_for(ctl: &RingCtl, role: Role) {
    let target = match role {
        Role::Sender => State::Draining,
        Role::Receiver => State::Closing,
    };
    let _ = lifecycle::close_channel(ctl, &OsPark, target);
}

impl Drop for Shared {
    fn drop(&mut self) {
        crate::watcher::unwatch(&self.seg);
        crate::peers::unregister(self.seg.header(), crate::peers::Slot::Handle, None);
        // Handles of processes that died count no more: the last live handle removes the name.
        let _ = crate::peers::reap(self.seg.header(), None);
        let ctl = self.seg.ctl();
        let prev = ctl.lifecycle.handles.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        let last = prev == Ok(1);
        if last && lifecycle::load(&ctl.lifecycle.state) == Ok(State::Closed) {
            if let Some(name) = self.seg.name() {
                // Only remove the name if it still refers to *our* segment.
                let _ = unlink_if_same(name, self.seg.file());
            }
        }
    }
}

fn unlink_if_same(name: &str, ours: &std::fs::File) -> Result<(), SegmentError> {
    use std::os::unix::fs::MetadataExt;
    let mine = ours.metadata().map_err(|source| SegmentError::Io { op: "fstat", source })?;
    let theirs = std::fs::metadata(crate::segment::shm_path(name));
    match theirs {
        Ok(m) if m.ino() == mine.ino() && m.dev() == mine.dev() => crate::segment::unlink(name),
        _ => Ok(()),
    }
}

/// Read the counters of a segment.
pub(crate) fn stats(shared: &Shared) -> Result<Stats, Corrupt> {
    let h = shared.seg.header();
    let ctl = &h.ctl;
    let r = |w: &crate::sync::AtomicU64| w.load(Ordering::Relaxed);
    let t = |w: &crate::sync::AtomicU64| Some(r(w)).filter(|&v| v != 0);
    Ok(Stats {
        state: lifecycle::load(&ctl.lifecycle.state)?,
        sent_msgs: r(&ctl.producer.sent_msgs),
        sent_bytes: r(&ctl.producer.sent_bytes),
        recv_msgs: r(&ctl.consumer.recv_msgs),
        recv_bytes: r(&ctl.consumer.recv_bytes),
        discarded_msgs: r(&ctl.lifecycle.discarded_msgs),
        discarded_bytes: r(&ctl.lifecycle.discarded_bytes),
        created_ns: r(&h.identity.generation),
        draining_ns: t(&ctl.lifecycle.t_draining),
        closing_ns: t(&ctl.lifecycle.t_closing),
        closed_ns: t(&ctl.lifecycle.t_closed),
        capacity: shared.seg.capacity(),
        max_message: shared.seg.max_message(),
        creator_pid: h.identity.creator_pid.load(Ordering::Relaxed),
        senders: ctl.lifecycle.senders.load(Ordering::Relaxed),
        receivers: ctl.lifecycle.receivers.load(Ordering::Relaxed),
        dead_peer: crate::peers::dead_peer(h)?,
        abandoned_claims: r(&ctl.lifecycle.abandoned_claims),
        reclaimed_takes: r(&ctl.lifecycle.reclaimed_takes),
    })
}

/// The channel-level methods every flavour's `Channel` type has: constructors, fd passing,
/// close, state, stats, unlink. `$ty` must be a struct with one field `shared: Arc<Shared>`.
macro_rules! channel_methods {
    ($ty:ident, $path:literal, $flavor:expr) => {
        impl $ty {
            #[doc = concat!("Create a named channel (`/dev/shm/shmq.NAME`, mode 0600). Fails with `AlreadyExists` if the name is taken: shmq never replaces a segment.\n\n```\n# fn main() -> Result<(), Box<dyn std::error::Error>> {\nlet name = format!(\"doc-create-{}-{}\", std::process::id(), line!());\nlet ch = ", $path, "::create(&name, &shmq::Config::new())?;\nlet other = ", $path, "::open(&name, &shmq::Config::new())?; // e.g. in another process\nassert_eq!(other.state()?, shmq::State::Active);\nch.unlink()?;\n# Ok(()) }\n```")]
            pub fn create(name: &str, cfg: &$crate::Config) -> Result<$ty, $crate::SegmentError> {
                let seg = $crate::segment::Segment::create(name, cfg.geometry($flavor))?;
                Ok($ty { shared: $crate::shared::Shared::new(seg, cfg.spin_budget(), $flavor)? })
            }

            /// Open an existing named channel, waiting up to `cfg`'s open timeout for its creator
            /// to finish initialising it. Only the spin budget and the open timeout of `cfg` are
            /// used; the sizes come from the segment. A segment of another flavour is refused
            /// with `WrongFlavor`.
            pub fn open(name: &str, cfg: &$crate::Config) -> Result<$ty, $crate::SegmentError> {
                let seg = $crate::segment::Segment::open(name, cfg.open_timeout_value())?;
                Ok($ty { shared: $crate::shared::Shared::new(seg, cfg.spin_budget(), $flavor)? })
            }

            #[doc = concat!("Create a channel with no name (a sealed memfd). Share it with a child process through [`inheritable_fd`](Self::inheritable_fd) and [`from_fd`](Self::from_fd).\n\n```\n# fn main() -> Result<(), Box<dyn std::error::Error>> {\nlet ch = ", $path, "::anonymous(&shmq::Config::new())?;\nassert!(ch.name().is_none());\n# Ok(()) }\n```")]
            pub fn anonymous(cfg: &$crate::Config) -> Result<$ty, $crate::SegmentError> {
                let seg = $crate::segment::Segment::create_anonymous(cfg.geometry($flavor))?;
                Ok($ty { shared: $crate::shared::Shared::new(seg, cfg.spin_budget(), $flavor)? })
            }

            #[doc = concat!("Open a channel from a file descriptor, typically one a parent passed down.\n\n```\n# fn main() -> Result<(), Box<dyn std::error::Error>> {\nlet ch = ", $path, "::anonymous(&shmq::Config::new())?;\nlet fd = ch.inheritable_fd()?; // pass fd.as_raw_fd() to a child, e.g. in an env var\nlet same = ", $path, "::from_fd(fd, &shmq::Config::new())?;\nassert_eq!(same.stats()?.capacity, ch.stats()?.capacity);\n# Ok(()) }\n```")]
            pub fn from_fd(fd: std::os::fd::OwnedFd, cfg: &$crate::Config) -> Result<$ty, $crate::SegmentError> {
                let seg = $crate::segment::Segment::from_fd(fd, cfg.open_timeout_value())?;
                Ok($ty { shared: $crate::shared::Shared::new(seg, cfg.spin_budget(), $flavor)? })
            }

            /// A duplicate of the segment's descriptor *without* close-on-exec, so that a child
            /// started with `std::process::Command` inherits it under the same number. Drop it in
            /// the parent once the child is spawned.
            pub fn inheritable_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
                use std::os::fd::{AsFd, AsRawFd};
                let fd = self.shared.seg.file().as_fd().try_clone_to_owned()?;
                // SAFETY: `fd` is a valid open descriptor we own; F_SETFD only changes its flags.
                if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(fd)
            }

            /// The segment's descriptor (close-on-exec), e.g. to send over a Unix socket.
            pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                use std::os::fd::AsFd;
                self.shared.seg.file().as_fd()
            }

            /// The name the channel was created or opened with (`None` for anonymous channels).
            pub fn name(&self) -> Option<&str> {
                self.shared.seg.name()
            }

            /// Sender-side close: DRAINING. Sends are refused from now on; receivers still get
            /// everything committed before, then end-of-stream. Idempotent; returns the state found.
            pub fn drain(&self) -> Result<$crate::State, $crate::Corrupt> {
                $crate::lifecycle::close_channel(self.shared.ctl(), &$crate::wait::OsPark, $crate::State::Draining)
            }

            /// Receiver-side close: CLOSING. Sends are refused; receivers see end-of-stream at
            /// once and the backlog is discarded (and counted). Idempotent; returns the state found.
            pub fn close_now(&self) -> Result<$crate::State, $crate::Corrupt> {
                $crate::lifecycle::close_channel(self.shared.ctl(), &$crate::wait::OsPark, $crate::State::Closing)
            }

            /// The lifecycle state.
            pub fn state(&self) -> Result<$crate::State, $crate::Corrupt> {
                $crate::lifecycle::load(&self.shared.ctl().lifecycle.state)
            }

            /// Counters, sizes, attach counts and transition times.
            pub fn stats(&self) -> Result<$crate::Stats, $crate::Corrupt> {
                $crate::shared::stats(&self.shared)
            }

            /// The first attachment (sender or receiver) found dead, if any: its process was
            /// killed or exited without detaching. Reaping it closed the channel for its side
            /// if it was the last one (a dead last sender: DRAINING, the receivers get the
            /// backlog and then end-of-stream; a dead last receiver: CLOSING, sends are
            /// refused with their message). Blocked calls notice within about 5 ms.
            pub fn dead_peer(&self) -> Result<Option<$crate::DeadPeer>, $crate::Corrupt> {
                $crate::peers::dead_peer(self.shared.seg.header())
            }

            /// Cross-process event number `index` (`0..8`) of this channel's segment; see
            /// [`Event`]($crate::Event). Every process that has the channel open can use it.
            pub fn event(&self, index: usize, reset: $crate::Reset) -> Result<$crate::Event, $crate::NoSuchObject> {
                $crate::Event::new(&self.shared, index, reset)
            }

            /// Crash-aware cross-process mutex number `index` (`0..4`) of this channel's
            /// segment; see [`Mutex`]($crate::Mutex).
            pub fn mutex(&self, index: usize) -> Result<$crate::Mutex, $crate::NoSuchObject> {
                $crate::Mutex::new(&self.shared, index)
            }

            /// Remove the channel's name now. Processes that have it open keep working; the
            /// memory is freed when the last one unmaps it. Anonymous channels: `Ok(())`.
            pub fn unlink(&self) -> Result<(), $crate::SegmentError> {
                match self.shared.seg.name() {
                    Some(name) => $crate::segment::unlink(name),
                    None => Ok(()),
                }
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("name", &self.shared.seg.name())
                    .field("capacity", &self.shared.seg.capacity())
                    .field("state", &self.state())
                    .finish()
            }
        }
    };
}
pub(crate) use channel_methods;
