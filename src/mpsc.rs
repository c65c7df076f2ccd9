//! Multi-producer single-consumer channels: any number of [`Sender`]s, in any threads of any
//! processes, and one [`Receiver`].
//!
//! Senders claim space in the ring with one CAS and commit by publishing a record header, so
//! there is no lock on the send path. One sender's messages arrive in the order it sent them;
//! messages larger than the ring are sent in pieces and delivered whole, even while other
//! senders send. The lifecycle is the same as for [`crate::Channel`]:
//!
//! * a sender's [`close`](Sender::close), or the last sender attachment dropped: DRAINING. Every
//!   sender is refused from then on (the message comes back); the receiver gets the backlog,
//!   then end-of-stream.
//! * the receiver's [`close`](Receiver::close) or drop: CLOSING, the backlog is discarded and
//!   counted, sends are refused.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use shmq::{Config, mpsc::Channel};
//! let ch = Channel::anonymous(&Config::new())?;
//! let tx = ch.sender()?;
//! let mut rx = ch.receiver()?;
//! let workers: Vec<_> = (0..4u8)
//!     .map(|id| {
//!         let tx = tx.clone(); // clones share one attachment
//!         std::thread::spawn(move || tx.send([id; 8]).unwrap())
//!     })
//!     .collect();
//! drop(tx);
//! for w in workers {
//!     w.join().unwrap();
//! }
//! let mut n = 0;
//! while rx.recv().is_ok() {
//!     n += 1; // ends when the last sender is gone and the backlog is drained
//! }
//! assert_eq!(n, 4);
//! # Ok(()) }
//! ```

use crate::channel::Discarded;
use crate::error::{
    AttachError, Corrupt, DeadPeer, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError,
};
use crate::lifecycle::{self, State};
use crate::ring::intent;
use crate::ring::memory::{RawRing, RingMemory};
use crate::ring::mpsc::{BatchPlan, Consumer, Next, PopError, Producer, PushError, Rec, Reserved};
use crate::ring::record::{HDR, Kind};
use crate::shared::{Role, Shared};
use crate::sync::Ordering;
use crate::view::View;
use crate::wait::{Deadline, OsPark};
use crate::{Stats, layout};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An MPSC channel segment opened (or created) by this process. Attach any number of senders
/// and one receiver, each possibly in another process.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let name = format!("doc-mpsc-{}", std::process::id());
/// let ch = shmq::mpsc::Channel::create(&name, &shmq::Config::new())?;
/// let tx = shmq::mpsc::Channel::open(&name, &shmq::Config::new())?.sender()?; // another process
/// let mut rx = ch.receiver()?;
/// tx.send(b"hi")?;
/// assert_eq!(rx.recv()?, b"hi");
/// assert_eq!(ch.stats()?.senders, 1);
/// # ch.unlink()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Channel {
    shared: Arc<Shared>,
}

crate::shared::channel_methods!(Channel, "shmq::mpsc::Channel", crate::layout::FLAVOR_MPSC);

impl Channel {
    /// Attach a sender. Any number may be attached, in any processes; clone the handle to share
    /// one attachment between threads. When the last attachment is dropped the channel drains.
    pub fn sender(&self) -> Result<Sender, AttachError> {
        let shared = self.shared.clone();
        let slot = shared.attach(Role::Sender, false)?;
        match Producer::new(shared.ctl(), shared.seg.capacity(), shared.spin) {
            Ok(prod) => {
                let prod = prod.with_owner(crate::peers::owner_mark(slot));
                let ring = shared.seg.ring();
                let max_message = shared.seg.max_message();
                Ok(Sender { inner: Arc::new(SenderInner { shared, prod, ring, max_message, slot }) })
            }
            Err(c) => {
                shared.detach_quietly(Role::Sender);
                Err(c.into())
            }
        }
    }

    /// Take the receiver role. Fails with `RoleTaken` while another handle (in any process)
    /// holds it.
    pub fn receiver(&self) -> Result<Receiver, AttachError> {
        let shared = self.shared.clone();
        shared.attach(Role::Receiver, true)?;
        let seg = &shared.seg;
        match Consumer::attach(shared.ctl(), seg.capacity(), seg.max_message(), shared.spin) {
            Ok(cons) => {
                let ring = seg.ring();
                Ok(Receiver { shared, cons, ring, stuck: None })
            }
            Err(c) => {
                shared.detach_quietly(Role::Receiver);
                Err(c.into())
            }
        }
    }
}

struct SenderInner {
    shared: Arc<Shared>,
    prod: Producer,
    ring: RawRing,
    max_message: u64,
    /// Our peer slot (freed on drop; our CLAIMED markers name it).
    slot: Option<usize>,
}

impl Drop for SenderInner {
    fn drop(&mut self) {
        self.prod.flush_counts(self.shared.ctl());
        self.shared.detach_and_close_if_last(Role::Sender, self.slot);
    }
}

/// A sending handle: `Clone + Send + Sync`; clones share one attachment. Dropping the last
/// handle of the last attachment drains the channel (DRAINING).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ch = shmq::mpsc::Channel::anonymous(&shmq::Config::new())?;
/// let tx = ch.sender()?;
/// tx.send(vec![7u8; 100])?;
/// tx.send_batch(&[b"a", b"b", b"c"])?;
/// assert_eq!(tx.stats()?.sent_msgs, 4);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Sender {
    inner: Arc<SenderInner>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("mpsc::Sender").field("channel", &self.inner.shared.seg.name()).finish()
    }
}

impl Sender {
    fn push(&self, msg: &[u8], deadline: Deadline) -> Result<(), PushError> {
        let i = &*self.inner;
        i.prod.send(i.shared.ctl(), &i.ring, &i.shared.watch(Role::Receiver), msg, deadline)
    }

    fn too_large(&self, len: usize) -> bool {
        len as u64 > self.inner.max_message
    }

    /// Send a message, waiting while the ring is full. Messages larger than a quarter of the ring
    /// are sent in pieces as the receiver makes room, and delivered whole.
    ///
    /// `Ok` means the message is committed: the receiver gets it unless it closes the channel
    /// with a backlog (then it is counted in `Stats::discarded_msgs`). Every error hands the
    /// message back and means the receiver will never see it.
    pub fn send<M: AsRef<[u8]>>(&self, msg: M) -> Result<(), SendError<M>> {
        if self.too_large(msg.as_ref().len()) {
            return Err(SendError::TooLarge(msg));
        }
        match self.push(msg.as_ref(), Deadline::Never) {
            Ok(()) => Ok(()),
            Err(e) => Err(send_error(msg, e, || self.inner.shared.dead(Role::Receiver))),
        }
    }

    /// Send if there is room right now (a message larger than a quarter of the ring needs room
    /// for all its pieces at once; use `send_timeout` for those).
    pub fn try_send<M: AsRef<[u8]>>(&self, msg: M) -> Result<(), TrySendError<M>> {
        if self.too_large(msg.as_ref().len()) {
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
        if self.too_large(msg.as_ref().len()) {
            return Err(SendTimeoutError::TooLarge(msg));
        }
        match self.push(msg.as_ref(), deadline) {
            Ok(()) => Ok(()),
            Err(e) => Err(timeout_error(msg, e, || self.inner.shared.dead(Role::Receiver))),
        }
    }

    /// Send many messages, claiming ring space for as many as fit with one atomic operation
    /// (and waiting for room when none fit). Messages larger than a quarter of the ring are
    /// sent on their own, in order. The messages keep their order.
    ///
    /// `Err` carries how many of `msgs` were accepted before the refusal: `msgs[n..]` were not
    /// sent.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = shmq::mpsc::Channel::anonymous(&shmq::Config::new())?;
    /// let (tx, mut rx) = (ch.sender()?, ch.receiver()?);
    /// let msgs: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 64]).collect();
    /// tx.send_batch(&msgs)?;
    /// tx.close();
    /// assert!(matches!(tx.send_batch(&msgs), Err(shmq::SendError::Closed(0))));
    /// let batch = rx.recv_batch(1000)?;
    /// assert_eq!(batch.len(), 100);
    /// # Ok(()) }
    /// ```
    pub fn send_batch<M: AsRef<[u8]>>(&self, msgs: &[M]) -> Result<(), SendError<usize>> {
        match self.batch(msgs, Deadline::Never) {
            (_, None) => Ok(()),
            (n, Some(BatchStop::TooLarge)) => Err(SendError::TooLarge(n)),
            (n, Some(BatchStop::Push(e))) => Err(send_error(n, e, || self.inner.shared.dead(Role::Receiver))),
        }
    }

    /// Send as many of `msgs` as fit right now, with one claim; `Ok(n)`: `msgs[..n]` were sent.
    /// `Err(Full(0))` if not even the first fits; `TooLarge(n)` if `msgs[n]` exceeds
    /// `max_message`.
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

    /// Sends `msgs` in order; returns how many were accepted and why it stopped early.
    fn batch<M: AsRef<[u8]>>(&self, msgs: &[M], deadline: Deadline) -> (usize, Option<BatchStop>) {
        let i = &*self.inner;
        let max_whole = i.prod.max_whole();
        let mut done = 0;
        let mut recs: Vec<Rec<'_>> = Vec::new();
        while done < msgs.len() {
            let first = msgs[done].as_ref();
            if self.too_large(first.len()) {
                return (done, Some(BatchStop::TooLarge));
            }
            if first.len() > max_whole {
                if let Err(e) = i.prod.send(i.shared.ctl(), &i.ring, &i.shared.watch(Role::Receiver), first, deadline) {
                    return (done, Some(BatchStop::Push(e)));
                }
                done += 1;
                continue;
            }
            recs.clear();
            recs.extend(
                msgs[done..]
                    .iter()
                    .map(AsRef::as_ref)
                    .take_while(|m| m.len() <= max_whole && !self.too_large(m.len()))
                    .map(|body| Rec { kind: Kind::Whole, prefix: None, body }),
            );
            match i.prod.push(i.shared.ctl(), &i.ring, &i.shared.watch(Role::Receiver), &recs, deadline) {
                Ok(claim) => done += claim.n,
                Err(e) => return (done, Some(BatchStop::Push(e))),
            }
        }
        (done, None)
    }

    /// Largest message [`reserve`](Sender::reserve) can hand out: a quarter of the ring minus a
    /// record header.
    pub fn max_zero_copy(&self) -> usize {
        self.inner.prod.max_whole().min(self.inner.max_message as usize)
    }

    /// Reserve `len` bytes in the ring, waiting for room, to be written in place and committed.
    /// Commit promptly: the receiver cannot pass an uncommitted slot. Dropping the slot without
    /// committing sends nothing.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = shmq::mpsc::Channel::anonymous(&shmq::Config::new())?;
    /// let (tx, mut rx) = (ch.sender()?, ch.receiver()?);
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
        if len > self.max_zero_copy() {
            return Err(SendTimeoutError::TooLarge(()));
        }
        let i = &*self.inner;
        match i.prod.reserve(i.shared.ctl(), &i.ring, &i.shared.watch(Role::Receiver), len, deadline) {
            Ok(res) => Ok(SendSlot { sender: self, res: Some(res) }),
            Err(e) => Err(timeout_error((), e, || self.inner.shared.dead(Role::Receiver))),
        }
    }

    /// Close the channel from the sender side (DRAINING), for every sender: later sends are
    /// refused with their message handed back; the receiver drains what was sent. Idempotent.
    pub fn close(&self) {
        self.inner.prod.flush_counts(self.inner.shared.ctl());
        let _ = lifecycle::close_channel(self.inner.shared.ctl(), &OsPark, State::Draining);
    }

    /// The channel's state.
    pub fn state(&self) -> Result<State, Corrupt> {
        lifecycle::load(&self.inner.shared.ctl().lifecycle.state)
    }

    /// Counters, sizes and transition times. This attachment's own sends are flushed to the
    /// segment first; other attachments add theirs every 256 messages (and when they sleep,
    /// close or detach), so `sent_msgs` may lag behind while they are sending.
    pub fn stats(&self) -> Result<Stats, Corrupt> {
        self.inner.prod.flush_counts(self.inner.shared.ctl());
        crate::shared::stats(&self.inner.shared)
    }
}

/// Why a batch stopped early.
enum BatchStop {
    TooLarge,
    Push(PushError),
}

fn send_error<M>(msg: M, e: PushError, dead: impl FnOnce() -> Option<DeadPeer>) -> SendError<M> {
    match e {
        PushError::Closed => SendError::closed_or_dead(msg, dead()),
        PushError::Corrupt(c) => SendError::Corrupt(msg, c),
        // Without a deadline the wait only ends with room, a close or corruption.
        PushError::Full => SendError::Corrupt(msg, Corrupt::new("a wait without deadline timed out")),
    }
}

fn timeout_error<M>(msg: M, e: PushError, dead: impl FnOnce() -> Option<DeadPeer>) -> SendTimeoutError<M> {
    match e {
        PushError::Full => SendTimeoutError::Timeout(msg),
        PushError::Closed => SendTimeoutError::closed_or_dead(msg, dead()),
        PushError::Corrupt(c) => SendTimeoutError::Corrupt(msg, c),
    }
}

/// Space reserved in the ring by [`Sender::reserve`]. Write the payload with
/// [`write_at`](SendSlot::write_at) (or through [`as_mut_ptr`](SendSlot::as_mut_ptr)), then
/// [`commit`](SendSlot::commit). Dropped uncommitted, it becomes padding the receiver skips.
pub struct SendSlot<'a> {
    sender: &'a Sender,
    res: Option<Reserved>,
}

impl std::fmt::Debug for SendSlot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("mpsc::SendSlot").field("len", &self.len()).finish()
    }
}

impl SendSlot<'_> {
    fn res(&self) -> &Reserved {
        self.res.as_ref().expect("a slot is only emptied by commit, which consumes it")
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
        let r = *self.res();
        assert!(
            offset <= r.len && src.len() <= r.len - offset,
            "write of {} bytes at {offset} outside a {}-byte slot",
            src.len(),
            r.len
        );
        self.sender.inner.ring.write_bytes(r.off + HDR + offset, src);
    }

    /// Pointer to the first payload byte. The `len()` bytes behind it belong to this slot until
    /// it is committed or dropped; do not form references wider than the slot.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        let r = *self.res();
        self.sender.inner.ring.ptr_at(r.off + HDR, r.len)
    }

    /// Publish the whole slot as one message.
    pub fn commit(self) -> Result<(), SendError<Vec<u8>>> {
        let len = self.len();
        self.commit_len(len)
    }

    /// Publish the first `len` bytes of the slot (`len` is clamped to the slot's size). The
    /// space was claimed before any close, so the commit always succeeds; the `Result` matches
    /// the other flavours.
    pub fn commit_len(mut self, len: usize) -> Result<(), SendError<Vec<u8>>> {
        let r = self.res.take().expect("slot not yet committed");
        let i = &*self.sender.inner;
        i.prod.commit_reserved(i.shared.ctl(), &i.ring, &OsPark, r, Some(len.min(r.len)));
        Ok(())
    }
}

impl Drop for SendSlot<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.res.take() {
            let i = &*self.sender.inner;
            i.prod.commit_reserved(i.shared.ctl(), &i.ring, &OsPark, r, None);
        }
    }
}

/// The receiving side of an MPSC channel. Dropping it closes the channel from the receiver side
/// (CLOSING): senders are refused, the backlog is discarded and counted.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ch = shmq::mpsc::Channel::anonymous(&shmq::Config::new())?;
/// let (tx, mut rx) = (ch.sender()?, ch.receiver()?);
/// assert!(rx.try_recv().unwrap_err().is_empty());
/// tx.send(b"x")?;
/// drop(tx); // the last sender: DRAINING
/// assert_eq!(rx.recv()?, b"x");
/// assert!(rx.recv().is_err());
/// assert_eq!(ch.state()?, shmq::State::Closed);
/// # Ok(()) }
/// ```
pub struct Receiver {
    shared: Arc<Shared>,
    cons: Consumer,
    ring: RawRing,
    /// The head position at which calls found nothing to receive, and since when (so that a
    /// receiver that only polls with `try_recv` also skips a dead producer's claim, once it has
    /// found it stuck for `ABANDONED_CHECK`).
    stuck: Option<(u64, std::time::Instant)>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("mpsc::Receiver").field("channel", &self.shared.seg.name()).finish()
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

/// How long a receiver waits at an uncommitted claim before it checks whether every sender is
/// gone (then the claim was abandoned by one that died, and is skipped).
const ABANDONED_CHECK: Duration = Duration::from_millis(20);

/// The earlier of two deadlines.
fn earliest(a: Deadline, b: Deadline) -> Deadline {
    match (a, b) {
        (Deadline::Now, _) | (_, Deadline::Now) => Deadline::Now,
        (Deadline::Never, x) | (x, Deadline::Never) => x,
        (Deadline::At(x), Deadline::At(y)) => Deadline::At(x.min(y)),
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
    fn next(&mut self, deadline: Deadline) -> Result<Next, PopError> {
        loop {
            // Wait in slices: a claim whose producer died is never committed, and is ours to skip
            // once no sender is attached any more (a live sender keeps its attachment while it
            // sends, and dead ones are reaped by the watch).
            let slice = match deadline {
                Deadline::Now => Deadline::Now,
                _ => earliest(deadline, Deadline::after(ABANDONED_CHECK)),
            };
            match self.cons.next(self.shared.ctl(), &self.ring, &self.shared.watch(Role::Sender), slice) {
                Err(PopError::Empty) if !deadline.passed() => {
                    self.skip_abandoned()?;
                }
                // Out of time (a `try_recv`, or the end of a timeout): still skip a dead
                // producer's claim if calls have found the head stuck for long enough, and look
                // once more if something was skipped.
                Err(PopError::Empty) if self.stuck_long_enough() && self.skip_abandoned()? => {}
                other => return other,
            }
        }
    }

    /// Whether calls have found nothing to receive at the same head for `ABANDONED_CHECK`.
    fn stuck_long_enough(&mut self) -> bool {
        let (head, now) = (self.cons.head(), std::time::Instant::now());
        match self.stuck {
            Some((h, since)) if h == head => now.duration_since(since) >= ABANDONED_CHECK,
            _ => {
                self.stuck = Some((head, now));
                false
            }
        }
    }

    /// Skip a claim at the head that can never be committed: either the channel is closed for
    /// sending (no new claim can start) and no sender is attached (every one that claimed has
    /// either committed or died and been reaped), or the claim's CLAIMED marker names a sender
    /// whose process is dead, or it is not marked and no live sender intends to claim there.
    /// Returns whether something was skipped.
    fn skip_abandoned(&mut self) -> Result<bool, PopError> {
        let ctl = self.shared.ctl();
        let skipped = if lifecycle::load(&ctl.lifecycle.state)?.is_closed_for_send()
            && ctl.lifecycle.senders.load(Ordering::Acquire) == 0
        {
            self.cons.unblock(ctl, &self.ring, &OsPark)?
        } else {
            // Live senders remain: skip the claim only if its marker names a claimer that died,
            // or it is not marked and no live sender's intent covers it (DESIGN 4d).
            let h = self.shared.seg.header();
            let skipped =
                self.cons.unblock_owned(ctl, &self.ring, &OsPark, |owner| crate::peers::owner_gone(h, owner))?;
            if skipped == 0 {
                let claims = |w| intent::kind(w) == intent::CLAIM;
                self.cons.unblock_unmarked(ctl, &self.ring, || crate::peers::live_intents(h, Role::Sender, &claims))?
            } else {
                skipped
            }
        };
        Ok(skipped != 0)
    }

    fn take_into(&mut self, deadline: Deadline, buf: &mut Vec<u8>) -> Result<usize, PopError> {
        match self.next(deadline)? {
            Next::Whole { off, len, next } => {
                self.ring.read_to_vec(off, len, buf);
                self.cons.finish_whole(self.shared.ctl(), &self.ring, &OsPark, next, len);
                Ok(len)
            }
            Next::Assembled => {
                self.cons.swap_assembled(buf);
                Ok(buf.len())
            }
        }
    }

    /// Receive the next message, waiting for one. `Err(Closed)` is end-of-stream: every message
    /// committed before the close has been delivered.
    pub fn recv(&mut self) -> Result<Vec<u8>, RecvError> {
        let mut buf = Vec::new();
        self.recv_into(&mut buf)?;
        Ok(buf)
    }

    /// Receive into `buf` (cleared first; its allocation is reused), waiting for a message.
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<usize, RecvError> {
        self.take_into(Deadline::Never, buf).map_err(|e| recv_error(e, || self.shared.dead(Role::Sender)))
    }

    /// Receive a message if one is ready.
    pub fn try_recv(&mut self) -> Result<Vec<u8>, TryRecvError> {
        let mut buf = Vec::new();
        self.try_recv_into(&mut buf).map(|_| buf)
    }

    /// Receive into `buf` if a message is ready.
    pub fn try_recv_into(&mut self, buf: &mut Vec<u8>) -> Result<usize, TryRecvError> {
        self.take_into(Deadline::Now, buf).map_err(|e| try_recv_error(e, || self.shared.dead(Role::Sender)))
    }

    /// Receive, waiting at most `timeout`. Also returns (with `Timeout`) when a sender that
    /// claimed space died before committing it: see [`unblock_abandoned`](Self::unblock_abandoned).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvTimeoutError> {
        let mut buf = Vec::new();
        self.recv_into_timeout(&mut buf, timeout).map(|_| buf)
    }

    /// Receive, waiting until `deadline`.
    pub fn recv_deadline(&mut self, deadline: Instant) -> Result<Vec<u8>, RecvTimeoutError> {
        let mut buf = Vec::new();
        self.take_into(Deadline::At(deadline), &mut buf)
            .map_err(|e| recv_timeout_error(e, || self.shared.dead(Role::Sender)))
            .map(|_| buf)
    }

    /// Receive into `buf`, waiting at most `timeout`.
    pub fn recv_into_timeout(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> Result<usize, RecvTimeoutError> {
        self.take_into(Deadline::after(timeout), buf)
            .map_err(|e| recv_timeout_error(e, || self.shared.dead(Role::Sender)))
    }

    /// Borrow the next message in place (zero-copy for messages up to a quarter of the ring),
    /// waiting for one. The ring space is given back when the [`Message`] is dropped.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = shmq::mpsc::Channel::anonymous(&shmq::Config::new())?;
    /// let (tx, mut rx) = (ch.sender()?, ch.receiver()?);
    /// tx.send(b"abc")?;
    /// let msg = rx.recv_ref()?;
    /// assert_eq!(msg.to_vec(), b"abc");
    /// # Ok(()) }
    /// ```
    pub fn recv_ref(&mut self) -> Result<Message<'_>, RecvError> {
        let next = self.next(Deadline::Never).map_err(|e| recv_error(e, || self.shared.dead(Role::Sender)))?;
        Ok(Message { rx: self, next })
    }

    /// Borrow the next message if one is ready.
    pub fn try_recv_ref(&mut self) -> Result<Message<'_>, TryRecvError> {
        let next = self.next(Deadline::Now).map_err(|e| try_recv_error(e, || self.shared.dead(Role::Sender)))?;
        Ok(Message { rx: self, next })
    }

    fn batch_plan(&mut self, max: usize, deadline: Deadline) -> Result<Option<BatchPlan>, PopError> {
        loop {
            // Sliced as in `next`, for the same reason.
            let slice = match deadline {
                Deadline::Now => Deadline::Now,
                _ => earliest(deadline, Deadline::after(ABANDONED_CHECK)),
            };
            let watch = self.shared.watch(Role::Sender);
            match self.cons.next_batch(self.shared.ctl(), &self.ring, &watch, max.max(1), slice) {
                Ok(plan) => return Ok(plan),
                Err(PopError::Empty) if !deadline.passed() => {
                    self.skip_abandoned()?;
                }
                Err(PopError::Empty) if self.stuck_long_enough() && self.skip_abandoned()? => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Receive up to `max` messages (at least one; waits for the first) and give their space back
    /// with one index update when the [`Batch`] is dropped.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = shmq::mpsc::Channel::anonymous(&shmq::Config::new())?;
    /// let (tx, mut rx) = (ch.sender()?, ch.receiver()?);
    /// for i in 0..10u8 {
    ///     tx.send([i])?;
    /// }
    /// let batch = rx.recv_batch(4)?;
    /// let firsts: Vec<u8> = batch.iter().map(|m| m.to_vec()[0]).collect();
    /// assert_eq!(firsts, [0, 1, 2, 3]);
    /// # Ok(()) }
    /// ```
    pub fn recv_batch(&mut self, max: usize) -> Result<Batch<'_>, RecvError> {
        let plan =
            self.batch_plan(max, Deadline::Never).map_err(|e| recv_error(e, || self.shared.dead(Role::Sender)))?;
        Ok(Batch { rx: self, plan })
    }

    /// Receive up to `max` messages if at least one is ready.
    pub fn try_recv_batch(&mut self, max: usize) -> Result<Batch<'_>, TryRecvError> {
        let plan =
            self.batch_plan(max, Deadline::Now).map_err(|e| try_recv_error(e, || self.shared.dead(Role::Sender)))?;
        Ok(Batch { rx: self, plan })
    }

    /// Receive up to `max` messages, waiting at most `timeout` for the first.
    pub fn recv_batch_timeout(&mut self, max: usize, timeout: Duration) -> Result<Batch<'_>, RecvTimeoutError> {
        let plan = self
            .batch_plan(max, Deadline::after(timeout))
            .map_err(|e| recv_timeout_error(e, || self.shared.dead(Role::Sender)))?;
        Ok(Batch { rx: self, plan })
    }

    /// Skip a claim at the head of the ring whose sender died between claiming space and
    /// committing it (the receiver would otherwise wait for it forever; the timeout forms of
    /// `recv` return meanwhile). Returns the bytes skipped, 0 if nothing was stuck; counted in
    /// the segment as an abandoned claim.
    ///
    /// Call it only when the sender that claimed the space is known to be dead: a live sender
    /// that is merely slow would have its message dropped. (Issue #4 adds the death check.)
    pub fn unblock_abandoned(&mut self) -> Result<u64, Corrupt> {
        self.cons.unblock(self.shared.ctl(), &self.ring, &OsPark)
    }

    /// Close from the receiver side (CLOSING): senders are refused from now on, and whatever is
    /// still queued is discarded. Returns what was discarded. Idempotent.
    pub fn close(&mut self) -> Result<Discarded, Corrupt> {
        let l = &self.shared.ctl().lifecycle;
        let (m0, b0) = (l.discarded_msgs.load(Ordering::Relaxed), l.discarded_bytes.load(Ordering::Relaxed));
        lifecycle::close_channel(self.shared.ctl(), &OsPark, State::Closing)?;
        // Claims made just before the close are accepted sends: give them a moment to commit
        // so they are counted.
        match self.next(Deadline::after(Duration::from_millis(100))) {
            Err(PopError::Closed) => {}
            Err(PopError::Corrupt(c)) => return Err(c),
            other => return Err(Corrupt::new(format!("a message arrived after CLOSING: {other:?}"))),
        }
        let l = &self.shared.ctl().lifecycle;
        Ok(Discarded {
            msgs: l.discarded_msgs.load(Ordering::Relaxed).saturating_sub(m0),
            bytes: l.discarded_bytes.load(Ordering::Relaxed).saturating_sub(b0),
        })
    }

    /// The channel's state.
    pub fn state(&self) -> Result<State, Corrupt> {
        lifecycle::load(&self.shared.ctl().lifecycle.state)
    }

    /// Counters, sizes and transition times.
    pub fn stats(&self) -> Result<Stats, Corrupt> {
        crate::shared::stats(&self.shared)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.close();
        self.shared.detach_quietly(Role::Receiver);
    }
}

/// A message borrowed in place by [`Receiver::recv_ref`]; its space goes back to the senders
/// when it is dropped.
pub struct Message<'a> {
    rx: &'a mut Receiver,
    next: Next,
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("mpsc::Message").field("len", &self.len()).finish()
    }
}

impl Message<'_> {
    fn view(&self) -> View<'_> {
        match self.next {
            Next::Whole { off, len, .. } => View::new(self.rx.ring, off, len),
            Next::Assembled => View::heap(self.rx.cons.assembled()),
        }
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
    /// If the range is outside the message (as slice indexing would).
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) {
        self.view().read_at(offset, dst)
    }

    /// Copy the whole message into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        self.view().to_vec()
    }

    /// Pointer to the first payload byte, valid until the message is dropped. The bytes may be
    /// in shared memory: read them through raw pointers, not a long-lived slice.
    pub fn as_ptr(&self) -> *const u8 {
        self.view().as_ptr()
    }
}

impl Drop for Message<'_> {
    fn drop(&mut self) {
        if let Next::Whole { len, next, .. } = self.next {
            self.rx.cons.finish_whole(self.rx.shared.ctl(), &self.rx.ring, &OsPark, next, len);
        }
    }
}

/// Messages received by [`Receiver::recv_batch`], still in the ring. Iterate with
/// [`iter`](Batch::iter); dropping the batch gives all their space back at once.
pub struct Batch<'a> {
    rx: &'a mut Receiver,
    /// `None`: a single message assembled from fragments (in the consumer's buffer).
    plan: Option<BatchPlan>,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("mpsc::Batch").field("len", &self.len()).finish()
    }
}

impl Batch<'_> {
    /// Number of messages.
    pub fn len(&self) -> usize {
        self.plan.as_ref().map_or(1, |p| p.items.len())
    }

    /// Never true (a batch holds at least one message); for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The messages, in order.
    pub fn iter(&self) -> impl Iterator<Item = View<'_>> + '_ {
        let ring = self.rx.ring;
        let assembled = self.plan.is_none().then(|| View::heap(self.rx.cons.assembled()));
        let items = self.plan.iter().flat_map(|p| p.items.iter());
        assembled.into_iter().chain(items.map(move |&(off, len)| View::new(ring, off, len)))
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if let Some(plan) = self.plan.take() {
            self.rx.cons.finish_batch(self.rx.shared.ctl(), &self.rx.ring, &OsPark, &plan);
        }
    }
}

// Senders can be shared between threads; the receiver can move to another thread.
const _: () = {
    const fn send<T: Send>() {}
    const fn sync<T: Sync>() {}
    send::<Sender>();
    sync::<Sender>();
    send::<Receiver>();
    send::<Channel>();
    sync::<Channel>();
    let _ = layout::FLAVOR_MPSC;
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn small() -> Config {
        Config::new().capacity(4096).max_message(1 << 20)
    }

    fn pattern(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + seed) as u8).collect()
    }

    #[test]
    fn roundtrip_sizes_including_larger_than_ring() {
        let ch = Channel::anonymous(&small()).unwrap();
        let (tx, mut rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        let sizes = [0usize, 1, 7, 8, 9, 1000, 1016, 1017, 4096, 100_000];
        let t = std::thread::spawn(move || {
            for len in sizes {
                tx.send(pattern(len, len)).unwrap();
            }
        });
        for len in sizes {
            assert_eq!(rx.recv().unwrap(), pattern(len, len), "len {len}");
        }
        t.join().unwrap();
        assert_eq!(rx.recv(), Err(RecvError::Closed));
        assert_eq!(ch.state().unwrap(), State::Closed);
        let s = ch.stats().unwrap();
        assert_eq!((s.sent_msgs, s.recv_msgs), (10, 10));
    }

    #[test]
    fn many_threads_exactly_once_in_order_with_interleaved_large_messages() {
        let ch = Channel::anonymous(&small()).unwrap();
        let (tx, mut rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        let threads: Vec<_> = (0..4u8)
            .map(|id| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for seq in 0..2000u32 {
                        let len = if seq % 97 == 0 { 5000 } else { (seq as usize * 7) % 300 };
                        let mut m = vec![id; len.max(5)];
                        m[1..5].copy_from_slice(&seq.to_le_bytes());
                        tx.send(m).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let mut next = [0u32; 4];
        while let Ok(m) = rx.recv() {
            let id = m[0] as usize;
            let seq = u32::from_le_bytes(m[1..5].try_into().unwrap());
            assert_eq!(seq, next[id], "producer {id} out of order");
            assert!(m[5..].iter().all(|&b| b == id as u8));
            next[id] += 1;
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(next, [2000; 4]);
    }

    #[test]
    fn last_sender_drop_drains_and_close_refuses_everyone() {
        let ch = Channel::anonymous(&small()).unwrap();
        let (a, mut rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        let b = ch.sender().unwrap();
        assert_eq!(ch.stats().unwrap().senders, 2);
        a.send(b"1").unwrap();
        drop(a);
        assert_eq!(ch.state().unwrap(), State::Active, "one sender left");
        b.send(b"2").unwrap();
        let c = b.clone();
        b.close();
        match c.send(b"late".to_vec()) {
            Err(SendError::Closed(m)) => assert_eq!(m, b"late"),
            other => panic!("{other:?}"),
        }
        assert_eq!(rx.recv().unwrap(), b"1");
        assert_eq!(rx.recv().unwrap(), b"2");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn receiver_drop_refuses_sends_and_counts_backlog() {
        let ch = Channel::anonymous(&small()).unwrap();
        let (tx, mut rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        for _ in 0..3 {
            tx.send([1u8; 10]).unwrap();
        }
        assert_eq!(rx.close().unwrap(), Discarded { msgs: 3, bytes: 30 });
        drop(rx);
        assert!(tx.try_send(b"x").unwrap_err().is_closed());
        assert_eq!(ch.state().unwrap(), State::Closed);
        assert!(ch.receiver().is_ok(), "role released");
    }

    #[test]
    fn batches_both_ways_and_zero_copy() {
        let ch = Channel::anonymous(&small().spin(Duration::ZERO)).unwrap();
        let (tx, mut rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        let msgs: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 50]).collect();
        let n = tx.try_send_batch(&msgs).unwrap();
        assert!(n > 30 && n < 100, "{n} of 100 fit in 4 KiB");
        {
            let b = rx.try_recv_batch(1000).unwrap();
            assert_eq!(b.len(), n);
            for (i, v) in b.iter().enumerate() {
                assert_eq!(v.to_vec(), msgs[i]);
            }
        }
        let t = {
            let tx = tx.clone();
            let rest = msgs[n..].to_vec();
            std::thread::spawn(move || tx.send_batch(&rest).unwrap())
        };
        let mut got = n;
        while got < 100 {
            let b = rx.recv_batch(7).unwrap();
            assert!(b.len() <= 7);
            for v in b.iter() {
                assert_eq!(v.to_vec(), msgs[got]);
                got += 1;
            }
        }
        t.join().unwrap();
        let mut slot = tx.reserve(10).unwrap();
        slot.write_at(0, b"0123456789");
        slot.commit_len(4).unwrap();
        drop(tx.reserve(20).unwrap()); // abandoned: padding
        assert!(matches!(tx.reserve(2000), Err(SendError::TooLarge(()))));
        tx.send(b"after").unwrap();
        assert_eq!(rx.recv_ref().unwrap().to_vec(), b"0123");
        assert_eq!(rx.recv().unwrap(), b"after");
        assert!(rx.try_recv_ref().unwrap_err().is_empty());
    }

    #[test]
    fn timeouts_and_a_dead_claim_unblocked() {
        let ch = Channel::anonymous(&small().spin(Duration::ZERO)).unwrap();
        let (tx, mut rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        let mut n = 0;
        while tx.try_send([0u8; 100]).is_ok() {
            n += 1;
        }
        assert!(n > 30 && n < 40, "{n}");
        assert!(tx.send_timeout([0u8; 100], Duration::from_millis(5)).unwrap_err().is_timeout());
        for _ in 0..n {
            rx.recv().unwrap();
        }
        assert!(rx.recv_timeout(Duration::from_millis(5)).unwrap_err().is_timeout());
        // A sender that claims and never commits (as if it died): the receiver times out, then
        // `unblock_abandoned` skips the claim and later messages flow again.
        let slot = tx.reserve(40).unwrap();
        std::mem::forget(slot);
        tx.send(b"behind").unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(5)).unwrap_err().is_timeout());
        assert_eq!(rx.unblock_abandoned().unwrap(), 48);
        assert_eq!(rx.recv().unwrap(), b"behind");
        assert_eq!(rx.unblock_abandoned().unwrap(), 0);
    }

    #[test]
    fn wrong_flavour_is_refused() {
        let name = format!("unit-mpsc-flavour-{}", std::process::id());
        let ch = Channel::create(&name, &small()).unwrap();
        let e = crate::Channel::open(&name, &small()).unwrap_err();
        assert!(matches!(e, crate::SegmentError::WrongFlavor { expected: "spsc", found: "mpsc" }), "{e}");
        ch.unlink().unwrap();
    }
}
