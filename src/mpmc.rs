//! Multi-producer multi-consumer channels: any number of [`Sender`]s and [`Receiver`]s, in any
//! threads of any processes; each message is received by exactly one receiver.
//!
//! The ring is cut into cells (`Config::cell_size`, default 128 bytes) with one sequence word
//! each, Vyukov style: a send claims consecutive cells with one CAS, a receive takes them with one
//! CAS, and neither takes a lock. A message may span several cells, up to half the ring
//! (`Sender::max_message`); use [`crate::mpsc`] for messages larger than that. The lifecycle is
//! the one of every shmq channel:
//!
//! * a sender's [`close`](Sender::close), or the last sender attachment dropped: DRAINING. Sends
//!   are refused (the message comes back); receivers share the backlog, then each sees
//!   end-of-stream.
//! * a receiver's [`close`](Receiver::close), or the last receiver attachment dropped: CLOSING,
//!   the backlog is discarded and counted, sends are refused.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use shmq::{Config, mpmc::Channel};
//! let ch = Channel::anonymous(&Config::new())?;
//! let (tx, rx) = (ch.sender()?, ch.receiver()?);
//! let workers: Vec<_> = (0..3)
//!     .map(|_| {
//!         let rx = rx.clone(); // clones share one attachment
//!         std::thread::spawn(move || {
//!             let mut n = 0;
//!             while rx.recv().is_ok() {
//!                 n += 1; // ends once the senders are gone and the backlog is shared out
//!             }
//!             n
//!         })
//!     })
//!     .collect();
//! for i in 0..100u32 {
//!     tx.send(i.to_le_bytes())?;
//! }
//! drop(tx); // the last sender: DRAINING
//! let total: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
//! assert_eq!(total, 100);
//! # Ok(()) }
//! ```

use crate::Stats;
use crate::channel::Discarded;
use crate::error::{
    AttachError, Corrupt, DeadPeer, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError,
};
use crate::lifecycle::{self, State};
use crate::ring::memory::{RawRing, RingMemory};
use crate::ring::mpmc::{PopError, PushError, Reserved, Ring, Take};
use crate::ring::record::HDR;
use crate::shared::{Role, Shared};
use crate::sync::{AtomicU64, Ordering};
use crate::view::View;

/// How long a blocked call waits behind a unit whose owner may be dead before it checks
/// (`/proc` reads): a live owner commits or releases within microseconds, and a death is also
/// noticed by the peer checks every 5 ms, so 20 ms costs little latency and no work while
/// things flow.
const RECOVERY_PATIENCE: Duration = Duration::from_millis(20);
use crate::wait::{Deadline, OsPark};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An MPMC channel segment opened (or created) by this process. Attach any number of senders
/// and receivers, each possibly in another process.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let name = format!("doc-mpmc-{}", std::process::id());
/// let ch = shmq::mpmc::Channel::create(&name, &shmq::Config::new().cell_size(64))?;
/// let rx = shmq::mpmc::Channel::open(&name, &shmq::Config::new())?.receiver()?; // a worker
/// let tx = ch.sender()?;
/// tx.send(b"task")?;
/// assert_eq!(rx.recv()?, b"task");
/// assert_eq!((ch.stats()?.senders, ch.stats()?.receivers), (1, 1));
/// # ch.unlink()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Channel {
    shared: Arc<Shared>,
}

crate::shared::channel_methods!(Channel, "shmq::mpmc::Channel", crate::layout::FLAVOR_MPMC);

impl Channel {
    fn ring(&self) -> Result<Ring, Corrupt> {
        let seg = &self.shared.seg;
        Ring::new(seg.capacity(), seg.cell_size(), seg.max_message(), self.shared.spin)
    }

    /// Attach a sender (any number, in any processes; clone it to share one attachment between
    /// threads). When the last sender attachment is dropped the channel drains.
    pub fn sender(&self) -> Result<Sender, AttachError> {
        let ring = self.ring()?;
        let slot = self.shared.attach(Role::Sender, false)?;
        let ring = ring.with_recovery(crate::peers::owner_mark(slot), RECOVERY_PATIENCE);
        let shared = self.shared.clone();
        let mem = shared.seg.ring();
        Ok(Sender { inner: Arc::new(Inner { shared, ring, mem, role: Role::Sender, slot }) })
    }

    /// Attach a receiver (any number, in any processes; clone it to share one attachment
    /// between threads). When the last receiver attachment is dropped the channel closes
    /// (CLOSING): sends are refused and the backlog is discarded and counted.
    pub fn receiver(&self) -> Result<Receiver, AttachError> {
        let ring = self.ring()?;
        let slot = self.shared.attach(Role::Receiver, false)?;
        let ring = ring.with_recovery(crate::peers::owner_mark(slot), RECOVERY_PATIENCE);
        let shared = self.shared.clone();
        let mem = shared.seg.ring();
        Ok(Receiver { inner: Arc::new(Inner { shared, ring, mem, role: Role::Receiver, slot }) })
    }
}

/// One attachment, shared by its clones.
struct Inner {
    shared: Arc<Shared>,
    ring: Ring,
    mem: RawRing,
    role: Role,
    /// Our peer slot: our markers and intent word are under it; freed on drop.
    slot: Option<usize>,
}

impl Inner {
    fn ctl(&self) -> &crate::layout::RingCtl {
        self.shared.ctl()
    }

    fn seqs(&self) -> &[AtomicU64] {
        self.shared.seg.cell_seqs()
    }

    fn counters(&self) -> (&AtomicU64, &AtomicU64) {
        let ctl = self.ctl();
        match self.role {
            Role::Sender => (&ctl.producer.sent_msgs, &ctl.producer.sent_bytes),
            Role::Receiver => (&ctl.consumer.recv_msgs, &ctl.consumer.recv_bytes),
        }
    }

    fn stats(&self) -> Result<Stats, Corrupt> {
        self.ring.counts.flush(self.counters());
        crate::shared::stats(&self.shared)
    }

    fn take(&self, max: usize, deadline: Deadline) -> Result<Take, PopError> {
        self.ring.take(self.ctl(), &self.mem, self.seqs(), &self.shared.watch(Role::Sender), max, deadline)
    }

    fn release(&self, take: &Take) {
        self.ring.release(self.ctl(), &self.mem, self.seqs(), &OsPark, take);
    }

    /// CLOSING, then discard what is queued; returns what was discarded.
    fn close_receiving(&self) -> Result<Discarded, Corrupt> {
        let l = &self.ctl().lifecycle;
        let (m0, b0) = (l.discarded_msgs.load(Ordering::Relaxed), l.discarded_bytes.load(Ordering::Relaxed));
        lifecycle::close_channel(self.ctl(), &OsPark, State::Closing)?;
        // Claims made just before the close are accepted sends: give them a moment to commit.
        match self.take(usize::MAX, Deadline::after(Duration::from_millis(100))) {
            Err(PopError::Closed) => {}
            Err(PopError::Corrupt(c)) => return Err(c),
            Ok(t) => {
                self.release(&t);
                return Err(Corrupt::new("a message was taken after CLOSING"));
            }
            Err(PopError::Empty) => return Err(Corrupt::new("a CLOSING take timed out")),
        }
        Ok(Discarded {
            msgs: l.discarded_msgs.load(Ordering::Relaxed).saturating_sub(m0),
            bytes: l.discarded_bytes.load(Ordering::Relaxed).saturating_sub(b0),
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ring.counts.flush(self.counters());
        if self.shared.detach(self.role, self.slot) {
            let _ = match self.role {
                Role::Sender => lifecycle::close_channel(self.ctl(), &OsPark, State::Draining).map(|_| ()),
                Role::Receiver => self.close_receiving().map(|_| ()),
            };
        }
    }
}

/// A sending handle: `Clone + Send + Sync`; clones share one attachment. Dropping the last
/// handle of the last sender attachment drains the channel (DRAINING).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ch = shmq::mpmc::Channel::anonymous(&shmq::Config::new())?;
/// let (tx, rx) = (ch.sender()?, ch.receiver()?);
/// tx.send_batch(&[b"a", b"b"])?;
/// assert!(tx.send(vec![0u8; 1 << 20]).is_err()); // larger than half the ring: use mpsc
/// assert_eq!(rx.recv_batch(8)?.len(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Sender {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("mpmc::Sender").field("channel", &self.inner.shared.seg.name()).finish()
    }
}

/// Why a batch stopped early.
enum BatchStop {
    TooLarge,
    Push(PushError),
}

impl Sender {
    /// Largest message this channel carries: `max_message` of the segment, at most half the
    /// ring (minus an 8-byte header).
    pub fn max_message(&self) -> usize {
        self.inner.ring.max_message()
    }

    fn push(&self, msg: &[u8], deadline: Deadline) -> Result<(), PushError> {
        let i = &*self.inner;
        i.ring.send(i.ctl(), &i.mem, i.seqs(), &i.shared.watch(Role::Receiver), &[msg], deadline).map(|_| ())
    }

    /// Send a message, waiting while the ring is full. `Ok` means it is committed: exactly one
    /// receiver gets it, unless the channel is closed from the receiving side with a backlog
    /// (then it is counted in `Stats::discarded_msgs`). Every error hands the message back.
    pub fn send<M: AsRef<[u8]>>(&self, msg: M) -> Result<(), SendError<M>> {
        if msg.as_ref().len() > self.max_message() {
            return Err(SendError::TooLarge(msg));
        }
        match self.push(msg.as_ref(), Deadline::Never) {
            Ok(()) => Ok(()),
            Err(PushError::Closed) => Err(SendError::closed_or_dead(msg, self.inner.shared.dead(Role::Receiver))),
            Err(PushError::Corrupt(c)) => Err(SendError::Corrupt(msg, c)),
            Err(PushError::Full) => Err(SendError::Corrupt(msg, Corrupt::new("a wait without deadline timed out"))),
        }
    }

    /// Send if there is room right now.
    pub fn try_send<M: AsRef<[u8]>>(&self, msg: M) -> Result<(), TrySendError<M>> {
        if msg.as_ref().len() > self.max_message() {
            return Err(TrySendError::TooLarge(msg));
        }
        match self.push(msg.as_ref(), Deadline::Now) {
            Ok(()) => Ok(()),
            Err(PushError::Full) => Err(TrySendError::Full(msg)),
            Err(PushError::Closed) => Err(TrySendError::closed_or_dead(msg, self.inner.shared.dead(Role::Receiver))),
            Err(PushError::Corrupt(c)) => Err(TrySendError::Corrupt(msg, c)),
        }
    }

    /// Send, waiting at most `timeout` for room.
    pub fn send_timeout<M: AsRef<[u8]>>(&self, msg: M, timeout: Duration) -> Result<(), SendTimeoutError<M>> {
        self.send_with(msg, Deadline::after(timeout))
    }

    /// Send, waiting for room until `deadline`.
    pub fn send_deadline<M: AsRef<[u8]>>(&self, msg: M, deadline: Instant) -> Result<(), SendTimeoutError<M>> {
        self.send_with(msg, Deadline::At(deadline))
    }

    fn send_with<M: AsRef<[u8]>>(&self, msg: M, deadline: Deadline) -> Result<(), SendTimeoutError<M>> {
        if msg.as_ref().len() > self.max_message() {
            return Err(SendTimeoutError::TooLarge(msg));
        }
        match self.push(msg.as_ref(), deadline) {
            Ok(()) => Ok(()),
            Err(PushError::Full) => Err(SendTimeoutError::Timeout(msg)),
            Err(PushError::Closed) => {
                Err(SendTimeoutError::closed_or_dead(msg, self.inner.shared.dead(Role::Receiver)))
            }
            Err(PushError::Corrupt(c)) => Err(SendTimeoutError::Corrupt(msg, c)),
        }
    }

    fn batch<M: AsRef<[u8]>>(&self, msgs: &[M], deadline: Deadline) -> (usize, Option<BatchStop>) {
        let i = &*self.inner;
        let max = self.max_message();
        let mut done = 0;
        let mut refs: Vec<&[u8]> = Vec::new();
        while done < msgs.len() {
            refs.clear();
            refs.extend(msgs[done..].iter().map(AsRef::as_ref).take_while(|m| m.len() <= max));
            if refs.is_empty() {
                return (done, Some(BatchStop::TooLarge));
            }
            match i.ring.send(i.ctl(), &i.mem, i.seqs(), &i.shared.watch(Role::Receiver), &refs, deadline) {
                Ok(n) => done += n,
                Err(e) => return (done, Some(BatchStop::Push(e))),
            }
        }
        (done, None)
    }

    /// Send many messages, claiming room for as many as fit with one atomic operation (and
    /// waiting for room when none fit). `Err` carries how many were accepted before the
    /// refusal: `msgs[n..]` were not sent.
    pub fn send_batch<M: AsRef<[u8]>>(&self, msgs: &[M]) -> Result<(), SendError<usize>> {
        match self.batch(msgs, Deadline::Never) {
            (_, None) => Ok(()),
            (n, Some(BatchStop::TooLarge)) => Err(SendError::TooLarge(n)),
            (n, Some(BatchStop::Push(PushError::Closed))) => {
                Err(SendError::closed_or_dead(n, self.inner.shared.dead(Role::Receiver)))
            }
            (n, Some(BatchStop::Push(PushError::Corrupt(c)))) => Err(SendError::Corrupt(n, c)),
            (n, Some(BatchStop::Push(PushError::Full))) => {
                Err(SendError::Corrupt(n, Corrupt::new("a wait without deadline timed out")))
            }
        }
    }

    /// Send as many of `msgs` as fit right now with one claim; `Ok(n)`: `msgs[..n]` were sent.
    /// `Err(Full(0))` if not even the first fits.
    pub fn try_send_batch<M: AsRef<[u8]>>(&self, msgs: &[M]) -> Result<usize, TrySendError<usize>> {
        match self.batch(msgs, Deadline::Now) {
            (n, None) => Ok(n),
            (n, Some(BatchStop::Push(PushError::Full))) if n > 0 => Ok(n),
            (n, Some(BatchStop::Push(PushError::Full))) => Err(TrySendError::Full(n)),
            (n, Some(BatchStop::Push(PushError::Closed))) => {
                Err(TrySendError::closed_or_dead(n, self.inner.shared.dead(Role::Receiver)))
            }
            (n, Some(BatchStop::Push(PushError::Corrupt(c)))) => Err(TrySendError::Corrupt(n, c)),
            (n, Some(BatchStop::TooLarge)) => Err(TrySendError::TooLarge(n)),
        }
    }

    /// Largest message [`reserve`](Sender::reserve) can hand out (the same as `max_message`).
    pub fn max_zero_copy(&self) -> usize {
        self.max_message()
    }

    /// Reserve `len` bytes in the ring, waiting for room, to be written in place and committed.
    /// Commit promptly: receivers cannot pass an uncommitted slot. Dropping the slot without
    /// committing sends nothing.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = shmq::mpmc::Channel::anonymous(&shmq::Config::new())?;
    /// let (tx, rx) = (ch.sender()?, ch.receiver()?);
    /// let mut slot = tx.reserve(5)?;
    /// slot.write_at(0, b"hello");
    /// slot.commit()?;
    /// assert_eq!(rx.recv()?, b"hello");
    /// # Ok(()) }
    /// ```
    pub fn reserve(&self, len: usize) -> Result<SendSlot<'_>, SendError<()>> {
        self.reserve_with(len, Deadline::Never).map_err(|e| match e {
            SendTimeoutError::Timeout(()) => SendError::Corrupt((), Corrupt::new("a wait without deadline timed out")),
            SendTimeoutError::Closed(()) => SendError::Closed(()),
            SendTimeoutError::PeerDead((), p) => SendError::PeerDead((), p),
            SendTimeoutError::TooLarge(()) => SendError::TooLarge(()),
            SendTimeoutError::Corrupt((), c) => SendError::Corrupt((), c),
        })
    }

    /// Reserve `len` bytes if there is room right now.
    pub fn try_reserve(&self, len: usize) -> Result<SendSlot<'_>, TrySendError<()>> {
        self.reserve_with(len, Deadline::Now).map_err(|e| match e {
            SendTimeoutError::Timeout(()) => TrySendError::Full(()),
            SendTimeoutError::Closed(()) => TrySendError::Closed(()),
            SendTimeoutError::PeerDead((), p) => TrySendError::PeerDead((), p),
            SendTimeoutError::TooLarge(()) => TrySendError::TooLarge(()),
            SendTimeoutError::Corrupt((), c) => TrySendError::Corrupt((), c),
        })
    }

    /// Reserve `len` bytes, waiting at most `timeout` for room.
    pub fn reserve_timeout(&self, len: usize, timeout: Duration) -> Result<SendSlot<'_>, SendTimeoutError<()>> {
        self.reserve_with(len, Deadline::after(timeout))
    }

    fn reserve_with(&self, len: usize, deadline: Deadline) -> Result<SendSlot<'_>, SendTimeoutError<()>> {
        if len > self.max_message() {
            return Err(SendTimeoutError::TooLarge(()));
        }
        let i = &*self.inner;
        match i.ring.reserve(i.ctl(), &i.mem, i.seqs(), &i.shared.watch(Role::Receiver), len, deadline) {
            Ok(res) => Ok(SendSlot { sender: self, res: Some(res) }),
            Err(PushError::Full) => Err(SendTimeoutError::Timeout(())),
            Err(PushError::Closed) => Err(SendTimeoutError::closed_or_dead((), self.inner.shared.dead(Role::Receiver))),
            Err(PushError::Corrupt(c)) => Err(SendTimeoutError::Corrupt((), c)),
        }
    }

    /// Close the channel from the sending side (DRAINING), for every sender. Idempotent.
    pub fn close(&self) {
        self.inner.ring.counts.flush(self.inner.counters());
        let _ = lifecycle::close_channel(self.inner.ctl(), &OsPark, State::Draining);
    }

    /// The channel's state.
    pub fn state(&self) -> Result<State, Corrupt> {
        lifecycle::load(&self.inner.ctl().lifecycle.state)
    }

    /// Counters, sizes and transition times (this attachment's counts flushed first; others
    /// add theirs every 256 messages and when they sleep or detach).
    pub fn stats(&self) -> Result<Stats, Corrupt> {
        self.inner.stats()
    }
}

/// Space reserved by [`Sender::reserve`]: write it with [`write_at`](SendSlot::write_at) or
/// through [`as_mut_ptr`](SendSlot::as_mut_ptr), then [`commit`](SendSlot::commit). Dropped
/// uncommitted, it becomes padding that receivers skip.
pub struct SendSlot<'a> {
    sender: &'a Sender,
    res: Option<Reserved>,
}

impl std::fmt::Debug for SendSlot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("mpmc::SendSlot").field("len", &self.len()).finish()
    }
}

impl SendSlot<'_> {
    fn res(&self) -> Reserved {
        self.res.expect("a slot is only emptied by commit, which consumes it")
    }

    /// Bytes reserved.
    pub fn len(&self) -> usize {
        self.res().len
    }

    /// True for a zero-length reservation.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copy `src` to `offset..offset + src.len()` of the slot.
    ///
    /// # Panics
    /// If the range is outside the slot (as slice indexing would).
    pub fn write_at(&mut self, offset: usize, src: &[u8]) {
        let r = self.res();
        assert!(
            offset <= r.len && src.len() <= r.len - offset,
            "write of {} bytes at {offset} outside a {}-byte slot",
            src.len(),
            r.len
        );
        self.sender.inner.mem.write_bytes(r.off + offset, src);
    }

    /// Pointer to the first payload byte; the `len()` bytes behind it belong to this slot until
    /// it is committed or dropped.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        let r = self.res();
        self.sender.inner.mem.ptr_at(r.off, r.len)
    }

    /// Publish the whole slot as one message.
    pub fn commit(self) -> Result<(), SendError<Vec<u8>>> {
        let len = self.len();
        self.commit_len(len)
    }

    /// Publish the first `len` bytes (clamped to the slot). The space was claimed before any
    /// close, so the commit always succeeds; the `Result` matches the SPSC form.
    pub fn commit_len(mut self, len: usize) -> Result<(), SendError<Vec<u8>>> {
        let r = self.res.take().expect("slot not yet committed");
        let i = &*self.sender.inner;
        i.ring.commit_reserved(i.ctl(), &i.mem, i.seqs(), &i.shared.watch(Role::Receiver), r, Some(len.min(r.len)));
        Ok(())
    }
}

impl Drop for SendSlot<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.res.take() {
            let i = &*self.sender.inner;
            i.ring.commit_reserved(i.ctl(), &i.mem, i.seqs(), &i.shared.watch(Role::Receiver), r, None);
        }
    }
}

/// A receiving handle: `Clone + Send + Sync`; clones share one attachment, and every message
/// goes to exactly one receiver. Dropping the last handle of the last receiver attachment closes
/// the channel (CLOSING).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ch = shmq::mpmc::Channel::anonymous(&shmq::Config::new())?;
/// let (tx, rx) = (ch.sender()?, ch.receiver()?);
/// assert!(rx.try_recv().unwrap_err().is_empty());
/// tx.send(b"x")?;
/// drop(tx);
/// assert_eq!(rx.recv()?, b"x");
/// assert!(rx.recv().is_err()); // end-of-stream
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("mpmc::Receiver").field("channel", &self.inner.shared.seg.name()).finish()
    }
}

fn recv_error(e: PopError, dead: impl FnOnce() -> Option<DeadPeer>) -> RecvError {
    match e {
        PopError::Closed => RecvError::closed_or_dead(dead()),
        PopError::Corrupt(c) => RecvError::Corrupt(c),
        PopError::Empty => RecvError::Corrupt(Corrupt::new("a wait without deadline timed out")),
    }
}

fn try_recv_error(e: PopError, dead: impl FnOnce() -> Option<DeadPeer>) -> TryRecvError {
    match e {
        PopError::Empty => TryRecvError::Empty,
        PopError::Closed => TryRecvError::closed_or_dead(dead()),
        PopError::Corrupt(c) => TryRecvError::Corrupt(c),
    }
}

fn recv_timeout_error(e: PopError, dead: impl FnOnce() -> Option<DeadPeer>) -> RecvTimeoutError {
    match e {
        PopError::Empty => RecvTimeoutError::Timeout,
        PopError::Closed => RecvTimeoutError::closed_or_dead(dead()),
        PopError::Corrupt(c) => RecvTimeoutError::Corrupt(c),
    }
}

impl Receiver {
    fn take_into(&self, deadline: Deadline, buf: &mut Vec<u8>) -> Result<usize, PopError> {
        let take = self.inner.take(1, deadline)?;
        let m = take.msgs[0];
        self.inner.mem.read_to_vec(m.off, m.len, buf);
        self.inner.release(&take);
        Ok(m.len)
    }

    /// Receive the next message, waiting for one. `Err(Closed)` is end-of-stream.
    pub fn recv(&self) -> Result<Vec<u8>, RecvError> {
        let mut buf = Vec::new();
        self.recv_into(&mut buf)?;
        Ok(buf)
    }

    /// Receive into `buf` (cleared first; its allocation is reused), waiting for a message.
    pub fn recv_into(&self, buf: &mut Vec<u8>) -> Result<usize, RecvError> {
        self.take_into(Deadline::Never, buf).map_err(|e| recv_error(e, || self.inner.shared.dead(Role::Sender)))
    }

    /// Receive a message if one is ready.
    pub fn try_recv(&self) -> Result<Vec<u8>, TryRecvError> {
        let mut buf = Vec::new();
        self.try_recv_into(&mut buf).map(|_| buf)
    }

    /// Receive into `buf` if a message is ready.
    pub fn try_recv_into(&self, buf: &mut Vec<u8>) -> Result<usize, TryRecvError> {
        self.take_into(Deadline::Now, buf).map_err(|e| try_recv_error(e, || self.inner.shared.dead(Role::Sender)))
    }

    /// Receive, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Vec<u8>, RecvTimeoutError> {
        let mut buf = Vec::new();
        self.recv_into_timeout(&mut buf, timeout).map(|_| buf)
    }

    /// Receive, waiting until `deadline`.
    pub fn recv_deadline(&self, deadline: Instant) -> Result<Vec<u8>, RecvTimeoutError> {
        let mut buf = Vec::new();
        self.take_into(Deadline::At(deadline), &mut buf)
            .map_err(|e| recv_timeout_error(e, || self.inner.shared.dead(Role::Sender)))
            .map(|_| buf)
    }

    /// Receive into `buf`, waiting at most `timeout`.
    pub fn recv_into_timeout(&self, buf: &mut Vec<u8>, timeout: Duration) -> Result<usize, RecvTimeoutError> {
        self.take_into(Deadline::after(timeout), buf)
            .map_err(|e| recv_timeout_error(e, || self.inner.shared.dead(Role::Sender)))
    }

    /// Borrow the next message in place, waiting for one; its cells go back when the
    /// [`Message`] is dropped.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = shmq::mpmc::Channel::anonymous(&shmq::Config::new())?;
    /// let (tx, rx) = (ch.sender()?, ch.receiver()?);
    /// tx.send(b"abc")?;
    /// assert_eq!(rx.recv_ref()?.to_vec(), b"abc");
    /// # Ok(()) }
    /// ```
    pub fn recv_ref(&self) -> Result<Message<'_>, RecvError> {
        let take =
            self.inner.take(1, Deadline::Never).map_err(|e| recv_error(e, || self.inner.shared.dead(Role::Sender)))?;
        Ok(Message { rx: self, take })
    }

    /// Borrow the next message if one is ready.
    pub fn try_recv_ref(&self) -> Result<Message<'_>, TryRecvError> {
        let take = self
            .inner
            .take(1, Deadline::Now)
            .map_err(|e| try_recv_error(e, || self.inner.shared.dead(Role::Sender)))?;
        Ok(Message { rx: self, take })
    }

    /// Take up to `max` messages (at least one; waits for the first) with one index update;
    /// their cells go back when the [`Batch`] is dropped.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = shmq::mpmc::Channel::anonymous(&shmq::Config::new())?;
    /// let (tx, rx) = (ch.sender()?, ch.receiver()?);
    /// tx.send_batch(&[[1u8], [2], [3]])?;
    /// let firsts: Vec<u8> = rx.recv_batch(2)?.iter().map(|m| m.to_vec()[0]).collect();
    /// assert_eq!(firsts, [1, 2]);
    /// # Ok(()) }
    /// ```
    pub fn recv_batch(&self, max: usize) -> Result<Batch<'_>, RecvError> {
        let take = self
            .inner
            .take(max, Deadline::Never)
            .map_err(|e| recv_error(e, || self.inner.shared.dead(Role::Sender)))?;
        Ok(Batch { rx: self, take })
    }

    /// Take up to `max` messages if at least one is ready.
    pub fn try_recv_batch(&self, max: usize) -> Result<Batch<'_>, TryRecvError> {
        let take = self
            .inner
            .take(max, Deadline::Now)
            .map_err(|e| try_recv_error(e, || self.inner.shared.dead(Role::Sender)))?;
        Ok(Batch { rx: self, take })
    }

    /// Take up to `max` messages, waiting at most `timeout` for the first.
    pub fn recv_batch_timeout(&self, max: usize, timeout: Duration) -> Result<Batch<'_>, RecvTimeoutError> {
        let take = self
            .inner
            .take(max, Deadline::after(timeout))
            .map_err(|e| recv_timeout_error(e, || self.inner.shared.dead(Role::Sender)))?;
        Ok(Batch { rx: self, take })
    }

    /// Close from the receiving side (CLOSING), for every receiver: senders are refused from
    /// now on and what is queued is discarded. Returns what this call discarded. Idempotent.
    pub fn close(&self) -> Result<Discarded, Corrupt> {
        self.inner.close_receiving()
    }

    /// The channel's state.
    pub fn state(&self) -> Result<State, Corrupt> {
        lifecycle::load(&self.inner.ctl().lifecycle.state)
    }

    /// Counters, sizes and transition times (see [`Sender::stats`]).
    pub fn stats(&self) -> Result<Stats, Corrupt> {
        self.inner.stats()
    }
}

/// A message borrowed in place by [`Receiver::recv_ref`]; its cells go back when it is dropped.
pub struct Message<'a> {
    rx: &'a Receiver,
    take: Take,
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("mpmc::Message").field("len", &self.len()).finish()
    }
}

impl Message<'_> {
    fn view(&self) -> View<'_> {
        let m = self.take.msgs[0];
        View::new(self.rx.inner.mem, m.off, m.len)
    }

    /// Payload length.
    pub fn len(&self) -> usize {
        self.view().len()
    }

    /// True for an empty message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copy `dst.len()` bytes starting at `offset` out of the message.
    ///
    /// # Panics
    /// If the range is outside the message.
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) {
        self.view().read_at(offset, dst)
    }

    /// Copy the whole message into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        self.view().to_vec()
    }

    /// Pointer to the first payload byte, valid until the message is dropped (shared memory:
    /// read through raw pointers, not a long-lived slice).
    pub fn as_ptr(&self) -> *const u8 {
        self.view().as_ptr()
    }
}

impl Drop for Message<'_> {
    fn drop(&mut self) {
        self.rx.inner.release(&self.take);
    }
}

/// Messages taken by [`Receiver::recv_batch`], still in the ring; dropping the batch gives all
/// their cells back.
pub struct Batch<'a> {
    rx: &'a Receiver,
    take: Take,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("mpmc::Batch").field("len", &self.len()).finish()
    }
}

impl Batch<'_> {
    /// Number of messages (at least one).
    pub fn len(&self) -> usize {
        self.take.msgs.len()
    }

    /// Never true; for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.take.msgs.is_empty()
    }

    /// The messages, in ring order.
    pub fn iter(&self) -> impl Iterator<Item = View<'_>> + '_ {
        let mem = self.rx.inner.mem;
        self.take.msgs.iter().map(move |m| View::new(mem, m.off, m.len))
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.rx.inner.release(&self.take);
    }
}

// Both handles can be shared between threads.
const _: () = {
    const fn send<T: Send>() {}
    const fn sync<T: Sync>() {}
    send::<Sender>();
    sync::<Sender>();
    send::<Receiver>();
    sync::<Receiver>();
    send::<Channel>();
    sync::<Channel>();
};

const _: usize = HDR;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use std::collections::HashSet;

    fn small() -> Config {
        Config::new().capacity(4096).cell_size(64).max_message(1 << 20)
    }

    fn pattern(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + seed) as u8).collect()
    }

    #[test]
    fn roundtrip_sizes_multi_cell_and_wrap() {
        let ch = Channel::anonymous(&small()).unwrap();
        let (tx, rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        assert_eq!(tx.max_message(), 2048 - 8);
        let sizes: Vec<usize> = (0..300).map(|i| [0, 1, 55, 56, 57, 120, 500, 2040][i % 8]).collect();
        let s2 = sizes.clone();
        let t = std::thread::spawn(move || {
            for (i, len) in s2.into_iter().enumerate() {
                tx.send(pattern(len, i)).unwrap();
            }
        });
        for (i, &len) in sizes.iter().enumerate() {
            assert_eq!(rx.recv().unwrap(), pattern(len, i), "message {i}");
        }
        t.join().unwrap();
        assert_eq!(rx.recv(), Err(RecvError::Closed));
        assert_eq!(ch.state().unwrap(), State::Closed);
        let s = rx.stats().unwrap();
        assert_eq!((s.sent_msgs, s.recv_msgs), (300, 300));
    }

    #[test]
    fn too_large_is_handed_back() {
        let ch = Channel::anonymous(&small()).unwrap();
        let tx = ch.sender().unwrap();
        assert_eq!(tx.send(vec![1u8; 2041]).unwrap_err().into_inner().len(), 2041);
        assert!(matches!(tx.try_send_batch(&[vec![0u8; 3], vec![0u8; 5000]]), Err(TrySendError::TooLarge(1))));
    }

    #[test]
    fn many_producers_many_consumers_exactly_once_in_per_producer_order() {
        let ch = Channel::anonymous(&small()).unwrap();
        let (tx, rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        let producers: Vec<_> = (0..3u8)
            .map(|id| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for seq in 0..3000u32 {
                        let mut m = vec![id; 5 + (seq as usize * 13) % 200];
                        m[1..5].copy_from_slice(&seq.to_le_bytes());
                        if seq % 2 == 0 {
                            tx.send(m).unwrap();
                        } else {
                            tx.send_batch(&[m]).unwrap();
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let consumers: Vec<_> = (0..3)
            .map(|k| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut last = [None::<u32>; 3];
                    loop {
                        let batch = if k == 0 {
                            rx.recv_batch(5).map(|b| b.iter().map(|v| v.to_vec()).collect())
                        } else {
                            rx.recv().map(|m| vec![m])
                        };
                        let Ok(msgs) = batch else { break };
                        for m in msgs {
                            let (id, seq) = (m[0] as usize, u32::from_le_bytes(m[1..5].try_into().unwrap()));
                            assert!(last[id].is_none_or(|l| l < seq), "producer {id} out of order at one consumer");
                            assert!(m[5..].iter().all(|&b| b == id as u8));
                            last[id] = Some(seq);
                            got.push((id, seq));
                        }
                    }
                    got
                })
            })
            .collect();
        drop(rx);
        for p in producers {
            p.join().unwrap();
        }
        let mut all = HashSet::new();
        for c in consumers {
            for x in c.join().unwrap() {
                assert!(all.insert(x), "{x:?} received twice");
            }
        }
        assert_eq!(all.len(), 9000);
    }

    #[test]
    fn draining_delivers_backlog_and_closing_discards() {
        let ch = Channel::anonymous(&small()).unwrap();
        let (tx, rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        for i in 0..5u8 {
            tx.send([i]).unwrap();
        }
        tx.clone().close();
        assert!(tx.try_send(b"late").unwrap_err().is_closed());
        for i in 0..5u8 {
            assert_eq!(rx.recv().unwrap(), [i]);
        }
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));

        let ch = Channel::anonymous(&small()).unwrap();
        let (tx, rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        for _ in 0..3 {
            tx.send([1u8; 10]).unwrap();
        }
        assert_eq!(rx.close().unwrap(), Discarded { msgs: 3, bytes: 30 });
        assert!(tx.try_send(b"x").unwrap_err().is_closed());
        assert_eq!(ch.state().unwrap(), State::Closed);
    }

    #[test]
    fn last_receiver_detaching_refuses_sends() {
        let ch = Channel::anonymous(&small()).unwrap();
        let (tx, a, b) = (ch.sender().unwrap(), ch.receiver().unwrap(), ch.receiver().unwrap());
        tx.send(b"queued").unwrap();
        drop(a);
        tx.send(b"still fine").unwrap();
        assert_eq!(ch.stats().unwrap().receivers, 1);
        drop(b);
        assert!(matches!(tx.send(b"refused".to_vec()), Err(SendError::Closed(m)) if m == b"refused"));
        let s = ch.stats().unwrap();
        assert_eq!((s.state, s.discarded_msgs), (State::Closed, 2));
    }

    #[test]
    fn full_ring_timeouts_reserve_and_batches() {
        let ch = Channel::anonymous(&small().spin(Duration::ZERO)).unwrap();
        let (tx, rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        let n = tx.try_send_batch(&vec![[7u8; 50]; 100]).unwrap();
        assert_eq!(n, 64, "one 64-byte cell each");
        assert!(tx.try_send([0u8; 1]).unwrap_err().is_full());
        assert!(tx.send_timeout([0u8; 1], Duration::from_millis(5)).unwrap_err().is_timeout());
        {
            let b = rx.try_recv_batch(1000).unwrap();
            assert_eq!(b.len(), 64);
            assert!(b.iter().all(|v| v.to_vec() == [7u8; 50]));
        }
        assert!(rx.recv_timeout(Duration::from_millis(5)).unwrap_err().is_timeout());
        let mut slot = tx.reserve(100).unwrap();
        slot.write_at(0, &[9u8; 100]);
        slot.commit_len(60).unwrap();
        drop(tx.reserve(30).unwrap()); // abandoned: padding
        tx.send(b"after").unwrap();
        assert_eq!(rx.recv_ref().unwrap().to_vec(), vec![9u8; 60]);
        assert_eq!(rx.recv().unwrap(), b"after");
        assert!(rx.try_recv_ref().unwrap_err().is_empty());
    }
}
