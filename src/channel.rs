//! The public SPSC channel: a segment plus one [`Sender`] and one [`Receiver`], each possibly in
//! a different process.

use crate::error::{
    AttachError, Corrupt, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::lifecycle::{self, State};
use crate::ring::memory::{RawRing, RingMemory};
use crate::ring::record::HDR;
use crate::ring::spsc::{self, Consumer, Next, Placement, PopError, Producer, PushError};
use crate::segment::Geometry;
use crate::shared::{Role, Shared};
use crate::sync::Ordering;
use crate::wait::{Deadline, OsPark};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a channel is created or opened.
///
/// ```
/// let cfg = shmq::Config::new().capacity(64 * 1024).max_message(1 << 20);
/// assert_eq!(cfg.get_capacity(), 64 * 1024);
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    capacity: usize,
    max_message: u64,
    spin: Duration,
    open_timeout: Duration,
    cell_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            capacity: 1 << 20,
            max_message: 64 << 20,
            cell_size: 128,
            spin: Duration::from_micros(20),
            open_timeout: Duration::from_secs(1),
        }
    }
}

impl Config {
    /// The defaults: 1 MiB ring, 64 MiB largest message, 20 µs spin before sleeping, 1 s wait
    /// for a creator to publish the header.
    pub fn new() -> Config {
        Config::default()
    }

    /// Ring size in bytes: a power of two, at least 4096. Messages larger than a quarter of it
    /// travel in pieces (and are still delivered whole).
    pub fn capacity(mut self, bytes: usize) -> Config {
        self.capacity = bytes;
        self
    }

    /// Largest message the channel accepts (default 64 MiB). Larger sends fail with `TooLarge`.
    pub fn max_message(mut self, bytes: u64) -> Config {
        self.max_message = bytes;
        self
    }

    /// How long a blocking call spins (yielding the CPU) before it sleeps on a futex. Spinning
    /// keeps round trips fast when the peer answers quickly; after the budget no CPU is burnt.
    /// `Duration::ZERO` sleeps at once.
    pub fn spin(mut self, budget: Duration) -> Config {
        self.spin = budget;
        self
    }

    /// How long `open` waits for a segment's creator to finish initialising it.
    pub fn open_timeout(mut self, timeout: Duration) -> Config {
        self.open_timeout = timeout;
        self
    }

    /// The configured ring size.
    pub fn get_capacity(&self) -> usize {
        self.capacity
    }

    /// MPMC channels only: the ring is cut into cells of this many bytes (a power of two, 16 to
    /// 1 MiB, at most half the capacity; default 128). A message takes `ceil((len + 8) / cell)`
    /// consecutive cells, so the cell should hold the typical message plus its 8-byte header.
    ///
    /// ```
    /// let cfg = shmq::Config::new().capacity(1 << 16).cell_size(256);
    /// assert_eq!(cfg.get_cell_size(), 256);
    /// ```
    pub fn cell_size(mut self, bytes: usize) -> Config {
        self.cell_size = bytes;
        self
    }

    /// The configured MPMC cell size.
    pub fn get_cell_size(&self) -> usize {
        self.cell_size
    }

    pub(crate) fn geometry(&self, flavor: u32) -> Geometry {
        Geometry { capacity: self.capacity, max_message: self.max_message, flavor, cell_size: self.cell_size }
    }

    pub(crate) fn spin_budget(&self) -> Duration {
        self.spin
    }

    pub(crate) fn open_timeout_value(&self) -> Duration {
        self.open_timeout
    }
}

/// Counters and state of a channel, read from its segment.
///
/// Timestamps are CLOCK_MONOTONIC nanoseconds (comparable across processes on one machine);
/// `None` means the state was never entered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// The lifecycle state.
    pub state: State,
    /// Messages and payload bytes accepted by the sender.
    pub sent_msgs: u64,
    /// See `sent_msgs`.
    pub sent_bytes: u64,
    /// Messages and payload bytes the receiver has taken.
    pub recv_msgs: u64,
    /// See `recv_msgs`.
    pub recv_bytes: u64,
    /// Messages (and their bytes) discarded because the receiver side closed with a backlog.
    pub discarded_msgs: u64,
    /// See `discarded_msgs`.
    pub discarded_bytes: u64,
    /// When the segment was created (CLOCK_MONOTONIC ns).
    pub created_ns: u64,
    /// When the channel entered DRAINING.
    pub draining_ns: Option<u64>,
    /// When the channel entered CLOSING.
    pub closing_ns: Option<u64>,
    /// When the channel entered CLOSED.
    pub closed_ns: Option<u64>,
    /// Ring size in bytes.
    pub capacity: usize,
    /// Largest message accepted.
    pub max_message: u64,
    /// Process that created the segment.
    pub creator_pid: u32,
    /// Sender attachments recorded in the segment (each `sender()` call is one; clones share it).
    pub senders: u32,
    /// Receiver attachments recorded in the segment.
    pub receivers: u32,
    /// The first attachment found dead (see `Channel::dead_peer`).
    pub dead_peer: Option<crate::DeadPeer>,
    /// Claims (MPSC) or message units (MPMC) of producers that died before committing them,
    /// skipped by the receivers (each was a send that never completed, so none of it was
    /// delivered).
    pub abandoned_claims: u64,
    /// MPMC: message units a receiver took and died before releasing, freed by a sender
    /// blocked behind them; the messages among them were lost with that receiver (this counts
    /// those messages).
    pub reclaimed_takes: u64,
}

/// A channel segment opened (or created) by this process. Take the [`Sender`] and/or
/// [`Receiver`] role from it; each role can be held by one handle at a time, in any process.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ch = shmq::Channel::anonymous(&shmq::Config::new().capacity(4096))?;
/// let (mut tx, mut rx) = (ch.sender()?, ch.receiver()?);
/// tx.send(b"hello")?;
/// tx.close();
/// assert_eq!(rx.recv()?, b"hello");
/// assert!(rx.recv().is_err()); // end of stream
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Channel {
    shared: Arc<Shared>,
}

crate::shared::channel_methods!(Channel, "shmq::Channel", crate::layout::FLAVOR_SPSC);

impl Channel {
    /// Take the sender role. Fails with `RoleTaken` while another handle (in any process) holds it.
    pub fn sender(&self) -> Result<Sender, AttachError> {
        let shared = self.shared.clone();
        shared.attach(Role::Sender, true)?;
        match Producer::attach(shared.ctl(), shared.seg.capacity(), shared.spin) {
            Ok(prod) => {
                let ring = shared.seg.ring();
                Ok(Sender { shared, prod, ring, max_message: self.shared.seg.max_message() })
            }
            Err(c) => {
                shared.detach_quietly(Role::Sender);
                Err(c.into())
            }
        }
    }

    /// Take the receiver role. Fails with `RoleTaken` while another handle holds it.
    pub fn receiver(&self) -> Result<Receiver, AttachError> {
        let shared = self.shared.clone();
        shared.attach(Role::Receiver, true)?;
        let seg = &shared.seg;
        match Consumer::attach(shared.ctl(), seg.capacity(), seg.max_message(), shared.spin) {
            Ok(cons) => {
                let ring = seg.ring();
                Ok(Receiver { shared, cons, ring })
            }
            Err(c) => {
                shared.detach_quietly(Role::Receiver);
                Err(c.into())
            }
        }
    }
}

/// The sending side of a channel. Dropping it closes the channel from the sender side
/// (DRAINING): the receiver drains the backlog, then sees end-of-stream.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ch = shmq::Channel::anonymous(&shmq::Config::new())?;
/// let mut tx = ch.sender()?;
/// tx.send(vec![7u8; 100])?;
/// assert!(tx.try_send(b"x").is_ok());
/// # Ok(()) }
/// ```
pub struct Sender {
    shared: Arc<Shared>,
    prod: Producer,
    ring: RawRing,
    max_message: u64,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("channel", &self.shared.seg.name()).finish()
    }
}

impl Sender {
    fn push(&mut self, msg: &[u8], deadline: Deadline) -> Result<(), PushError> {
        self.prod.send(self.shared.ctl(), &self.ring, &self.shared.watch(Role::Receiver), msg, deadline)
    }

    fn too_large(&self, len: usize) -> bool {
        len as u64 > self.max_message
    }

    /// Send a message, waiting while the ring is full. Messages larger than the ring are sent in
    /// pieces as the receiver makes room, and delivered whole.
    ///
    /// `Ok` means the message is committed: the receiver gets it unless it closes the channel
    /// with a backlog (then it is counted in `Stats::discarded_msgs`). Every error hands the
    /// message back and means the receiver will never see any of it.
    pub fn send<M: AsRef<[u8]>>(&mut self, msg: M) -> Result<(), SendError<M>> {
        if self.too_large(msg.as_ref().len()) {
            return Err(SendError::TooLarge(msg));
        }
        match self.push(msg.as_ref(), Deadline::Never) {
            Ok(()) => Ok(()),
            Err(PushError::Closed) => Err(SendError::closed_or_dead(msg, self.shared.dead(Role::Receiver))),
            Err(PushError::Corrupt(c)) => Err(SendError::Corrupt(msg, c)),
            // Without a deadline the wait only ends with room, a close or corruption.
            Err(PushError::Full) => Err(SendError::Corrupt(msg, Corrupt::new("a wait without deadline timed out"))),
        }
    }

    /// Send if there is room right now. A message larger than a quarter of the ring needs the
    /// receiver to make room while it is sent, so `try_send` returns `Full` for it unless the
    /// ring has room for all its pieces at once; use `send_timeout` for those.
    pub fn try_send<M: AsRef<[u8]>>(&mut self, msg: M) -> Result<(), TrySendError<M>> {
        if self.too_large(msg.as_ref().len()) {
            return Err(TrySendError::TooLarge(msg));
        }
        match self.push(msg.as_ref(), Deadline::Now) {
            Ok(()) => Ok(()),
            Err(PushError::Full) => Err(TrySendError::Full(msg)),
            Err(PushError::Closed) => Err(TrySendError::closed_or_dead(msg, self.shared.dead(Role::Receiver))),
            Err(PushError::Corrupt(c)) => Err(TrySendError::Corrupt(msg, c)),
        }
    }

    /// Send, waiting at most `timeout` for room.
    pub fn send_timeout<M: AsRef<[u8]>>(&mut self, msg: M, timeout: Duration) -> Result<(), SendTimeoutError<M>> {
        self.send_with(msg, Deadline::after(timeout))
    }

    /// Send, waiting for room until `deadline`.
    pub fn send_deadline<M: AsRef<[u8]>>(&mut self, msg: M, deadline: Instant) -> Result<(), SendTimeoutError<M>> {
        self.send_with(msg, Deadline::At(deadline))
    }

    fn send_with<M: AsRef<[u8]>>(&mut self, msg: M, deadline: Deadline) -> Result<(), SendTimeoutError<M>> {
        if self.too_large(msg.as_ref().len()) {
            return Err(SendTimeoutError::TooLarge(msg));
        }
        match self.push(msg.as_ref(), deadline) {
            Ok(()) => Ok(()),
            Err(PushError::Full) => Err(SendTimeoutError::Timeout(msg)),
            Err(PushError::Closed) => Err(SendTimeoutError::closed_or_dead(msg, self.shared.dead(Role::Receiver))),
            Err(PushError::Corrupt(c)) => Err(SendTimeoutError::Corrupt(msg, c)),
        }
    }

    /// Largest message [`reserve`](Sender::reserve) can hand out: a quarter of the ring minus a
    /// record header.
    pub fn max_zero_copy(&self) -> usize {
        self.prod.max_whole().min(self.max_message as usize)
    }

    /// Reserve `len` bytes in the ring, waiting for room, to be written in place and committed.
    /// Dropping the slot without committing sends nothing.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = shmq::Channel::anonymous(&shmq::Config::new())?;
    /// let (mut tx, mut rx) = (ch.sender()?, ch.receiver()?);
    /// let mut slot = tx.reserve(5)?;
    /// slot.write_at(0, b"hello");
    /// slot.commit()?;
    /// assert_eq!(rx.recv()?, b"hello");
    /// # Ok(()) }
    /// ```
    pub fn reserve(&mut self, len: usize) -> Result<SendSlot<'_>, SendError<()>> {
        match self.reserve_with(len, Deadline::Never) {
            Ok(slot) => Ok(slot),
            Err(SendTimeoutError::Timeout(())) => {
                Err(SendError::Corrupt((), Corrupt::new("a wait without deadline timed out")))
            }
            Err(SendTimeoutError::Closed(())) => Err(SendError::Closed(())),
            Err(SendTimeoutError::PeerDead((), p)) => Err(SendError::PeerDead((), p)),
            Err(SendTimeoutError::TooLarge(())) => Err(SendError::TooLarge(())),
            Err(SendTimeoutError::Corrupt((), c)) => Err(SendError::Corrupt((), c)),
        }
    }

    /// Reserve `len` bytes if there is room right now.
    pub fn try_reserve(&mut self, len: usize) -> Result<SendSlot<'_>, TrySendError<()>> {
        match self.reserve_with(len, Deadline::Now) {
            Ok(slot) => Ok(slot),
            Err(SendTimeoutError::Timeout(())) => Err(TrySendError::Full(())),
            Err(SendTimeoutError::Closed(())) => Err(TrySendError::Closed(())),
            Err(SendTimeoutError::PeerDead((), p)) => Err(TrySendError::PeerDead((), p)),
            Err(SendTimeoutError::TooLarge(())) => Err(TrySendError::TooLarge(())),
            Err(SendTimeoutError::Corrupt((), c)) => Err(TrySendError::Corrupt((), c)),
        }
    }

    /// Reserve `len` bytes, waiting at most `timeout` for room.
    pub fn reserve_timeout(&mut self, len: usize, timeout: Duration) -> Result<SendSlot<'_>, SendTimeoutError<()>> {
        self.reserve_with(len, Deadline::after(timeout))
    }

    fn reserve_with(&mut self, len: usize, deadline: Deadline) -> Result<SendSlot<'_>, SendTimeoutError<()>> {
        if len > self.max_zero_copy() {
            return Err(SendTimeoutError::TooLarge(()));
        }
        match self.prod.reserve(self.shared.ctl(), &self.shared.watch(Role::Receiver), len, deadline) {
            Ok(place) => Ok(SendSlot { sender: self, place }),
            Err(PushError::Full) => Err(SendTimeoutError::Timeout(())),
            Err(PushError::Closed) => Err(SendTimeoutError::closed_or_dead((), self.shared.dead(Role::Receiver))),
            Err(PushError::Corrupt(c)) => Err(SendTimeoutError::Corrupt((), c)),
        }
    }

    /// Close the channel from the sender side (DRAINING). Later sends are refused with their
    /// message handed back; the receiver drains what was sent. Idempotent.
    pub fn close(&mut self) {
        let _ = lifecycle::close_channel(self.shared.ctl(), &OsPark, State::Draining);
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

impl Drop for Sender {
    fn drop(&mut self) {
        self.close();
        self.shared.detach_quietly(Role::Sender);
    }
}

/// Space reserved in the ring by [`Sender::reserve`]. Write the payload with
/// [`write_at`](SendSlot::write_at) (or through [`as_mut_ptr`](SendSlot::as_mut_ptr)), then
/// [`commit`](SendSlot::commit). Dropped uncommitted, it sends nothing.
pub struct SendSlot<'a> {
    sender: &'a mut Sender,
    place: Placement,
}

impl std::fmt::Debug for SendSlot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendSlot").field("len", &self.place.len).finish()
    }
}

impl SendSlot<'_> {
    /// Bytes reserved.
    pub fn len(&self) -> usize {
        self.place.len
    }

    /// True for a zero-length reservation.
    pub fn is_empty(&self) -> bool {
        self.place.len == 0
    }

    /// Copy `src` to `offset..offset + src.len()` of the slot.
    ///
    /// # Panics
    /// If the range is outside the slot (as slice indexing would).
    pub fn write_at(&mut self, offset: usize, src: &[u8]) {
        assert!(
            offset <= self.place.len && src.len() <= self.place.len - offset,
            "write of {} bytes at {offset} outside a {}-byte slot",
            src.len(),
            self.place.len
        );
        self.sender.ring.write_bytes(self.place.off + HDR + offset, src);
    }

    /// Pointer to the first payload byte. The `len()` bytes behind it belong to this slot until
    /// it is committed or dropped; another process must not be reading them, so do not form
    /// references wider than the slot.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.sender.ring.ptr_at(self.place.off + HDR, self.place.len)
    }

    /// Publish the whole slot as one message.
    pub fn commit(self) -> Result<(), SendError<Vec<u8>>> {
        let len = self.place.len;
        self.commit_len(len)
    }

    /// Publish the first `len` bytes of the slot (`len` is clamped to the slot's size). If the
    /// channel closed meanwhile, the bytes written come back as `Closed(bytes)`.
    pub fn commit_len(self, len: usize) -> Result<(), SendError<Vec<u8>>> {
        let len = len.min(self.place.len);
        let s = self.sender;
        match s.prod.commit_reserved(s.shared.ctl(), &s.ring, &OsPark, self.place, len) {
            Ok(()) => Ok(()),
            Err(e) => {
                let mut bytes = vec![0; len];
                s.ring.read_bytes(self.place.off + HDR, &mut bytes);
                Err(match e {
                    PushError::Closed => SendError::closed_or_dead(bytes, s.shared.dead(Role::Receiver)),
                    PushError::Corrupt(c) => SendError::Corrupt(bytes, c),
                    PushError::Full => SendError::Corrupt(bytes, Corrupt::new("reserved space vanished")),
                })
            }
        }
    }
}

/// The receiving side of a channel. Dropping it closes the channel from the receiver side
/// (CLOSING): senders are refused, the backlog is discarded and counted, then CLOSED.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ch = shmq::Channel::anonymous(&shmq::Config::new())?;
/// let (mut tx, mut rx) = (ch.sender()?, ch.receiver()?);
/// assert!(rx.try_recv().unwrap_err().is_empty());
/// tx.send(b"x")?;
/// drop(tx); // DRAINING
/// assert_eq!(rx.recv()?, b"x");
/// assert!(rx.recv().is_err());
/// assert_eq!(ch.state()?, shmq::State::Closed);
/// # Ok(()) }
/// ```
pub struct Receiver {
    shared: Arc<Shared>,
    cons: Consumer,
    ring: RawRing,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("channel", &self.shared.seg.name()).finish()
    }
}

/// Messages and bytes a receiver-side close threw away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Discarded {
    /// Whole messages discarded.
    pub msgs: u64,
    /// Their payload bytes.
    pub bytes: u64,
}

impl Receiver {
    fn next(&mut self, deadline: Deadline) -> Result<Next, PopError> {
        self.cons.next(self.shared.ctl(), &self.ring, &self.shared.watch(Role::Sender), deadline)
    }

    /// Take the next message into `buf` (cleared first), returning its length.
    fn take_into(&mut self, deadline: Deadline, buf: &mut Vec<u8>) -> Result<usize, PopError> {
        match self.next(deadline)? {
            Next::Whole { off, len, next } => {
                self.ring.read_to_vec(off, len, buf);
                self.cons.finish_whole(self.shared.ctl(), &OsPark, next, len);
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
    /// Returns the message length.
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<usize, RecvError> {
        match self.take_into(Deadline::Never, buf) {
            Ok(n) => Ok(n),
            Err(PopError::Closed) => Err(RecvError::closed_or_dead(self.shared.dead(Role::Sender))),
            Err(PopError::Corrupt(c)) => Err(RecvError::Corrupt(c)),
            Err(PopError::Empty) => Err(RecvError::Corrupt(Corrupt::new("a wait without deadline timed out"))),
        }
    }

    /// Receive a message if one is ready.
    pub fn try_recv(&mut self) -> Result<Vec<u8>, TryRecvError> {
        let mut buf = Vec::new();
        self.try_recv_into(&mut buf).map(|_| buf)
    }

    /// Receive into `buf` (cleared first; its allocation is reused) if a message is ready.
    pub fn try_recv_into(&mut self, buf: &mut Vec<u8>) -> Result<usize, TryRecvError> {
        match self.take_into(Deadline::Now, buf) {
            Ok(n) => Ok(n),
            Err(PopError::Empty) => Err(TryRecvError::Empty),
            Err(PopError::Closed) => Err(TryRecvError::closed_or_dead(self.shared.dead(Role::Sender))),
            Err(PopError::Corrupt(c)) => Err(TryRecvError::Corrupt(c)),
        }
    }

    /// Receive, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvTimeoutError> {
        let mut buf = Vec::new();
        self.recv_into_with(&mut buf, Deadline::after(timeout)).map(|_| buf)
    }

    /// Receive, waiting until `deadline`.
    pub fn recv_deadline(&mut self, deadline: Instant) -> Result<Vec<u8>, RecvTimeoutError> {
        let mut buf = Vec::new();
        self.recv_into_with(&mut buf, Deadline::At(deadline)).map(|_| buf)
    }

    /// Receive into `buf`, waiting at most `timeout`.
    pub fn recv_into_timeout(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> Result<usize, RecvTimeoutError> {
        self.recv_into_with(buf, Deadline::after(timeout))
    }

    fn recv_into_with(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<usize, RecvTimeoutError> {
        match self.take_into(deadline, buf) {
            Ok(n) => Ok(n),
            Err(PopError::Empty) => Err(RecvTimeoutError::Timeout),
            Err(PopError::Closed) => Err(RecvTimeoutError::closed_or_dead(self.shared.dead(Role::Sender))),
            Err(PopError::Corrupt(c)) => Err(RecvTimeoutError::Corrupt(c)),
        }
    }

    /// Borrow the next message in place (zero-copy for messages up to a quarter of the ring),
    /// waiting for one. The ring space is given back when the [`Message`] is dropped.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = shmq::Channel::anonymous(&shmq::Config::new())?;
    /// let (mut tx, mut rx) = (ch.sender()?, ch.receiver()?);
    /// tx.send(b"abc")?;
    /// let msg = rx.recv_ref()?;
    /// let mut first = [0u8; 2];
    /// msg.read_at(0, &mut first);
    /// assert_eq!((&first, msg.len()), (b"ab", 3));
    /// # Ok(()) }
    /// ```
    pub fn recv_ref(&mut self) -> Result<Message<'_>, RecvError> {
        match self.next(Deadline::Never) {
            Ok(next) => Ok(Message { rx: self, next }),
            Err(PopError::Closed) => Err(RecvError::closed_or_dead(self.shared.dead(Role::Sender))),
            Err(PopError::Corrupt(c)) => Err(RecvError::Corrupt(c)),
            Err(PopError::Empty) => Err(RecvError::Corrupt(Corrupt::new("a wait without deadline timed out"))),
        }
    }

    /// Borrow the next message if one is ready.
    pub fn try_recv_ref(&mut self) -> Result<Message<'_>, TryRecvError> {
        match self.next(Deadline::Now) {
            Ok(next) => Ok(Message { rx: self, next }),
            Err(PopError::Empty) => Err(TryRecvError::Empty),
            Err(PopError::Closed) => Err(TryRecvError::closed_or_dead(self.shared.dead(Role::Sender))),
            Err(PopError::Corrupt(c)) => Err(TryRecvError::Corrupt(c)),
        }
    }

    /// Close from the receiver side (CLOSING): senders are refused from now on, and whatever is
    /// still queued is discarded. Returns what was discarded. Idempotent.
    pub fn close(&mut self) -> Result<Discarded, Corrupt> {
        let l = &self.shared.ctl().lifecycle;
        let (m0, b0) = (l.discarded_msgs.load(Ordering::Relaxed), l.discarded_bytes.load(Ordering::Relaxed));
        lifecycle::close_channel(self.shared.ctl(), &OsPark, State::Closing)?;
        match self.next(Deadline::Now) {
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

/// A message borrowed in place by [`Receiver::recv_ref`]. Its ring space goes back to the
/// sender when it is dropped.
pub struct Message<'a> {
    rx: &'a mut Receiver,
    next: Next,
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message").field("len", &self.len()).finish()
    }
}

impl Message<'_> {
    /// Payload length.
    pub fn len(&self) -> usize {
        match self.next {
            Next::Whole { len, .. } => len,
            Next::Assembled => self.rx.cons.assembled().len(),
        }
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
        let len = self.len();
        assert!(
            offset <= len && dst.len() <= len - offset,
            "read of {} bytes at {offset} outside a {len}-byte message",
            dst.len()
        );
        match self.next {
            Next::Whole { off, .. } => self.rx.ring.read_bytes(off + offset, dst),
            Next::Assembled => dst.copy_from_slice(&self.rx.cons.assembled()[offset..offset + dst.len()]),
        }
    }

    /// Copy the whole message into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len()];
        self.read_at(0, &mut v);
        v
    }

    /// Pointer to the first payload byte, valid until the message is dropped. The bytes may be
    /// in shared memory: read them through raw pointers, not a long-lived slice.
    pub fn as_ptr(&self) -> *const u8 {
        match self.next {
            Next::Whole { off, len, .. } => self.rx.ring.ptr_at(off, len),
            Next::Assembled => self.rx.cons.assembled().as_ptr(),
        }
    }
}

impl Drop for Message<'_> {
    fn drop(&mut self) {
        if let Next::Whole { len, next, .. } = self.next {
            self.rx.cons.finish_whole(self.rx.shared.ctl(), &OsPark, next, len);
        }
    }
}

// Handles can move to another thread (a compile error otherwise); `Channel` can also be shared.
const _: () = {
    const fn send<T: Send>() {}
    const fn sync<T: Sync>() {}
    send::<Sender>();
    send::<Receiver>();
    send::<Channel>();
    sync::<Channel>();
};

/// Largest message that travels as a single record in a ring of `capacity` bytes.
pub fn max_single_record(capacity: usize) -> usize {
    spsc::max_whole(capacity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SegmentError;

    fn small() -> Config {
        Config::new().capacity(4096).max_message(1 << 20)
    }

    #[test]
    fn roundtrip_sizes_including_larger_than_ring() {
        let ch = Channel::anonymous(&small()).unwrap();
        let (mut tx, mut rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        let t = std::thread::spawn(move || {
            for len in [0usize, 1, 7, 8, 9, 1000, 1016, 1017, 4096, 100_000] {
                let msg: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
                tx.send(msg).unwrap();
            }
        });
        for len in [0usize, 1, 7, 8, 9, 1000, 1016, 1017, 4096, 100_000] {
            let got = rx.recv().unwrap();
            let want: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            assert_eq!(got, want, "len {len}");
        }
        t.join().unwrap();
        assert_eq!(rx.recv(), Err(RecvError::Closed));
        assert_eq!(ch.state().unwrap(), State::Closed);
        let s = ch.stats().unwrap();
        assert_eq!((s.sent_msgs, s.recv_msgs), (10, 10));
    }

    #[test]
    fn draining_delivers_backlog_then_refuses() {
        let ch = Channel::anonymous(&small()).unwrap();
        let (mut tx, mut rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        for i in 0..5u8 {
            tx.send([i]).unwrap();
        }
        tx.close();
        tx.close(); // idempotent
        match tx.send(b"late".to_vec()) {
            Err(SendError::Closed(m)) => assert_eq!(m, b"late"),
            other => panic!("{other:?}"),
        }
        for i in 0..5u8 {
            assert_eq!(rx.recv().unwrap(), [i]);
        }
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn closing_discards_and_counts() {
        let ch = Channel::anonymous(&small()).unwrap();
        let (mut tx, mut rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        for _ in 0..3 {
            tx.send([1u8; 10]).unwrap();
        }
        assert_eq!(rx.close().unwrap(), Discarded { msgs: 3, bytes: 30 });
        assert!(tx.try_send(b"x").unwrap_err().is_closed());
        assert_eq!(ch.state().unwrap(), State::Closed);
    }

    #[test]
    fn full_ring_and_timeouts() {
        let ch = Channel::anonymous(&small().spin(Duration::ZERO)).unwrap();
        let (mut tx, mut rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        let mut n = 0;
        while tx.try_send([0u8; 100]).is_ok() {
            n += 1;
        }
        assert!(n > 30 && n < 40, "{n} messages of 108 bytes in 4096");
        let e = tx.send_timeout([0u8; 100], Duration::from_millis(5)).unwrap_err();
        assert!(e.is_timeout());
        assert_eq!(rx.recv().unwrap().len(), 100);
        tx.send_timeout([0u8; 100], Duration::from_millis(5)).unwrap();
        for _ in 0..n {
            rx.recv().unwrap();
        }
        assert!(rx.recv_timeout(Duration::from_millis(5)).unwrap_err().is_timeout());
    }

    #[test]
    fn zero_copy_forms() {
        let ch = Channel::anonymous(&small()).unwrap();
        let (mut tx, mut rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        let mut slot = tx.reserve(10).unwrap();
        slot.write_at(0, b"0123456789");
        slot.commit_len(4).unwrap();
        {
            let _abandoned = tx.reserve(20).unwrap(); // dropped uncommitted: sends nothing
        }
        assert!(matches!(tx.reserve(2000), Err(SendError::TooLarge(()))));
        tx.send(b"after").unwrap();
        {
            let m = rx.recv_ref().unwrap();
            assert_eq!(m.to_vec(), b"0123");
        }
        assert_eq!(rx.recv().unwrap(), b"after");
        assert!(rx.try_recv_ref().unwrap_err().is_empty());
    }

    #[test]
    fn roles_are_exclusive_and_released() {
        let ch = Channel::anonymous(&small()).unwrap();
        let rx = ch.receiver().unwrap();
        assert!(matches!(ch.receiver(), Err(AttachError::RoleTaken { role: "receiver" })));
        drop(rx);
        assert!(ch.receiver().is_ok());
    }

    #[test]
    fn too_large_is_handed_back() {
        let ch = Channel::anonymous(&Config::new().capacity(4096).max_message(10)).unwrap();
        let mut tx = ch.sender().unwrap();
        assert_eq!(tx.send(vec![0u8; 11]).unwrap_err().into_inner().len(), 11);
    }

    #[test]
    fn named_lifecycle_unlinks_when_closed() {
        let name = format!("unit-named-{}", std::process::id());
        let ch = Channel::create(&name, &small()).unwrap();
        assert!(matches!(Channel::create(&name, &small()), Err(SegmentError::AlreadyExists { .. })));
        let other = Channel::open(&name, &small()).unwrap();
        let (tx, mut rx) = (ch.sender().unwrap(), other.receiver().unwrap());
        drop(tx);
        assert_eq!(rx.recv(), Err(RecvError::Closed));
        drop((rx, ch, other));
        assert!(!crate::segment::shm_path(&name).exists(), "last handle of a CLOSED channel unlinks");
        assert!(matches!(Channel::open(&name, &small()), Err(SegmentError::NotFound { .. })));
    }

    #[test]
    fn bad_config_and_names() {
        assert!(matches!(Channel::anonymous(&Config::new().capacity(5000)), Err(SegmentError::InvalidConfig(_))));
        assert!(matches!(Channel::create("a/b", &small()), Err(SegmentError::InvalidName { .. })));
        assert!(matches!(Channel::create("", &small()), Err(SegmentError::InvalidName { .. })));
    }

    #[test]
    fn refused_fragmented_send_is_not_counted_as_discarded() {
        // Found by fuzzing: the pieces of a send that timed out half way were added to
        // discarded_bytes although the message was handed back.
        let ch = Channel::anonymous(&Config::new().capacity(4096).max_message(65536)).unwrap();
        let (mut tx, mut rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        let e = tx.send_timeout(vec![0x65u8; 15743], Duration::ZERO).unwrap_err();
        assert!(e.is_timeout());
        tx.send([1u8; 5]).unwrap();
        assert_eq!(rx.close().unwrap(), Discarded { msgs: 1, bytes: 5 });
    }

    #[test]
    fn counters_near_overflow_do_not_panic() {
        // Found by fuzzing: a peer may leave any value in the shared counters.
        let ch = Channel::anonymous(&small()).unwrap();
        let (mut tx, mut rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        let ctl = ch.shared.ctl();
        for w in [&ctl.producer.sent_msgs, &ctl.producer.sent_bytes, &ctl.consumer.recv_msgs, &ctl.consumer.recv_bytes]
        {
            w.store(u64::MAX, Ordering::Relaxed);
        }
        tx.send(b"x").unwrap();
        assert_eq!(rx.recv().unwrap(), b"x");
        assert_eq!(ch.stats().unwrap().sent_msgs, 0, "wrapped");
    }
}
