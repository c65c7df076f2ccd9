//! # shmq: shared-memory channels between processes
//!
//! A channel lives in a shared-memory segment (named in `/dev/shm`, or an anonymous memfd passed
//! to a child). One process sends, another receives, through a lock-free ring of variable-length
//! records; blocked calls sleep on *shared* futexes and are woken only when someone waits.
//!
//! Closing is part of the protocol, not an afterthought. Every channel has a lifecycle word,
//! ACTIVE → DRAINING → CLOSING → CLOSED, that every process observes the same way:
//!
//! * the sender closes (or drops its [`Sender`]): DRAINING. Sends are refused with the message
//!   handed back; the receiver still gets every message committed before the close, then a clean
//!   end-of-stream ([`RecvError::Closed`]).
//! * the receiver closes (or drops its [`Receiver`]): CLOSING. Sends are refused; what is still
//!   queued is discarded and counted ([`Stats::discarded_msgs`]); then CLOSED.
//! * close is idempotent, works from any thread of any process, and wakes every blocked peer.
//!
//! A send is either accepted (and then delivered, or counted as discarded by a receiver-side
//! close) or refused with its message handed back. Nothing is lost silently.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use shmq::{Channel, Config};
//! let name = format!("doc-crate-{}", std::process::id());
//! let ch = Channel::create(&name, &Config::new())?;     // normally: one process creates,
//! let mut tx = ch.sender()?;                            // one sends,
//! let mut rx = Channel::open(&name, &Config::new())?.receiver()?; // another receives
//! for i in 0..5u8 {
//!     tx.send([i; 3])?;
//! }
//! drop(tx); // sender-side close: DRAINING
//! let mut got = 0;
//! while let Ok(msg) = rx.recv() {
//!     assert_eq!(msg, [got; 3]);
//!     got += 1;
//! }
//! assert_eq!(got, 5); // every message, then end-of-stream
//! # ch.unlink()?;
//! # Ok(()) }
//! ```
//!
//! See DESIGN.md for the segment layout, the ring protocol and the proofs.

#![cfg_attr(shmq_loom, allow(dead_code, unused_imports, unreachable_pub))]
#![warn(missing_docs)]

mod clock;
mod error;
#[cfg(not(shmq_loom))]
mod futex;
#[cfg(shmq_loom)]
#[doc(hidden)]
pub mod futex;

// The protocol modules are public only in loom builds, where loom-tests/ drive them directly.
#[cfg(shmq_loom)]
#[doc(hidden)]
pub mod layout;
#[cfg(not(shmq_loom))]
mod layout;
mod lifecycle;
#[cfg(shmq_loom)]
#[doc(hidden)]
pub mod ring;
#[cfg(not(shmq_loom))]
mod ring;
#[cfg(shmq_loom)]
#[doc(hidden)]
pub mod wait;
#[cfg(not(shmq_loom))]
mod wait;

mod sync;

#[cfg(not(shmq_loom))]
mod channel;
#[cfg(not(shmq_loom))]
mod peers;
#[cfg(not(shmq_loom))]
pub mod process;
#[cfg(not(shmq_loom))]
mod segment;
#[cfg(not(shmq_loom))]
mod shared;
#[cfg(not(shmq_loom))]
mod stale;
#[cfg(not(shmq_loom))]
mod user_sync;
#[cfg(not(shmq_loom))]
mod view;
#[cfg(not(shmq_loom))]
mod watcher;

#[doc(hidden)]
pub mod event;
#[cfg(not(shmq_loom))]
pub mod mpmc;
#[cfg(not(shmq_loom))]
pub mod mpsc;
#[doc(hidden)]
pub mod robust_mutex;

#[cfg(not(shmq_loom))]
pub use channel::{Channel, Config, Discarded, Message, Receiver, SendSlot, Sender, Stats, max_single_record};
pub use error::{
    AttachError, Corrupt, DeadPeer, RecvError, RecvTimeoutError, SegmentError, SendError, SendTimeoutError,
    TryRecvError, TrySendError,
};
pub use lifecycle::State;
#[cfg(not(shmq_loom))]
pub use segment::shm_path;
#[cfg(not(shmq_loom))]
pub use stale::{Attachment, SegmentInfo, list_segments, remove_stale};
#[cfg(not(shmq_loom))]
pub use user_sync::{Event, Lock, LockError, Mutex, MutexGuard, NoSuchObject, Reset};
#[cfg(not(shmq_loom))]
pub use view::View;

/// Remove a named segment (e.g. one left behind by a crashed process). Processes that have it
/// open keep using it.
///
/// ```
/// let e = shmq::unlink("no-such-shmq-segment").unwrap_err();
/// assert!(matches!(e, shmq::SegmentError::NotFound { .. }));
/// ```
#[cfg(not(shmq_loom))]
pub fn unlink(name: &str) -> Result<(), SegmentError> {
    segment::unlink(name)
}

/// Loom entry points for loom-tests/: the ring and lifecycle protocols on heap memory.
#[cfg(shmq_loom)]
#[doc(hidden)]
pub mod loom_api {
    pub use crate::layout::RingCtl;
    pub use crate::lifecycle::{State, advance, close_channel, load};
    pub use crate::ring::memory::LoomRing;
    pub use crate::ring::spsc::{Consumer, Next, PopError, Producer, PushError};
    pub use crate::wait::{Deadline, LoomPark};
}
