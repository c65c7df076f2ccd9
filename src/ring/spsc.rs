//! The single-producer single-consumer ring of variable-length records.
//!
//! Who writes which word (positions are byte counts since creation, see `layout.rs`):
//!
//! | word            | written by                                   | how                     |
//! |-----------------|----------------------------------------------|-------------------------|
//! | tail position   | producer                                     | CAS (commit)            |
//! | TAIL_CLOSED     | any closer                                   | fetch_or, never cleared |
//! | TAIL_RX_WAITING | consumer sets (fetch_or) / clears (fetch_and); producer clears by its commit CAS |
//! | head position   | consumer                                     | swap (release)          |
//! | HEAD_TX_WAITING | producer sets (fetch_or); consumer clears by its swap |      |
//! | rx_seq / tx_seq | whoever wakes the other side                 | fetch_add, then FUTEX_WAKE |
//!
//! Every change of the tail word is a read-modify-write, so a commit, a close and a receiver
//! announcing that it will sleep are totally ordered on that one word; likewise release and
//! "sender will sleep" on the head word. That is what makes the send/close race and the
//! no-lost-wake-up argument hold without SeqCst fences (see DESIGN.md), and it is exactly what
//! loom can check.
//!
//! Everything read from shared memory is validated before use: positions must be ordered,
//! aligned and within one capacity of each other; record headers must carry the tag, a known
//! kind and a length that stays inside both the ring and the committed region.

use crate::error::Corrupt;
use crate::futex::Wake;
use crate::layout::{HEAD_TX_WAITING, POS_MASK, RingCtl, TAIL_CLOSED, TAIL_RX_WAITING};
use crate::lifecycle::{self, State};
use crate::ring::memory::RingMemory;
use crate::ring::record::{self, HDR, Kind};
use crate::sync::Ordering;
use crate::wait::{Deadline, Park, Spinner};
use std::time::Duration;

/// Why a push did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// No room before the deadline (for `Deadline::Now`: no room now).
    Full,
    /// The channel no longer accepts sends.
    Closed,
    /// Shared memory failed validation.
    Corrupt(Corrupt),
}

impl From<Corrupt> for PushError {
    fn from(c: Corrupt) -> Self {
        PushError::Corrupt(c)
    }
}

/// Why a pop returned no message.
#[derive(Debug, PartialEq, Eq)]
pub enum PopError {
    /// Nothing before the deadline.
    Empty,
    /// End of stream.
    Closed,
    /// Shared memory failed validation.
    Corrupt(Corrupt),
}

impl From<Corrupt> for PopError {
    fn from(c: Corrupt) -> Self {
        PopError::Corrupt(c)
    }
}

/// Largest payload that travels as one record: a quarter of the ring, so that a record plus the
/// padding before it always fits in an otherwise empty ring, and the producer can fill one
/// quarter while the consumer reads another.
pub fn max_whole(cap: usize) -> usize {
    cap / 4 - HDR
}

/// Check a (head, tail) pair read from shared memory.
fn check_positions(head: u64, tail: u64, cap: u64) -> Result<(), Corrupt> {
    if tail > POS_MASK || head > tail || tail - head > cap || head % 8 != 0 || tail % 8 != 0 {
        return Err(Corrupt::new(format!("ring positions head={head} tail={tail} are impossible for capacity {cap}")));
    }
    Ok(())
}

/// Where a record goes.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    /// Offset of a padding record to write first (the record did not fit before the end).
    pad_at: Option<usize>,
    /// Offset of the record header.
    pub off: usize,
    /// Payload length.
    pub len: usize,
    /// How far the tail moves (padding + record).
    advance: u64,
}

/// The producer's private state. Exactly one exists per ring at a time.
pub struct Producer {
    tail: u64,
    cached_head: u64,
    cap: u64,
    max_whole: usize,
    spin: Duration,
}

impl Producer {
    /// Take the producer side of a ring, checking the positions found there.
    pub fn attach(ctl: &RingCtl, cap: usize, spin: Duration) -> Result<Producer, Corrupt> {
        // Segments never hold less than 4096 bytes; the loom models use rings down to 64 bytes.
        // Below 32, `max_whole` would underflow.
        if !cap.is_power_of_two() || cap < 4 * HDR {
            return Err(Corrupt::new(format!("ring capacity {cap} is not a power of two of at least {}", 4 * HDR)));
        }
        // SYNC(tail-commit), SYNC(head-release): Acquire, so a producer that re-attaches sees the
        // ring as the previous holders left it.
        let tail = ctl.producer.tail.load(Ordering::Acquire) & POS_MASK;
        let head = ctl.consumer.head.load(Ordering::Acquire) & !HEAD_TX_WAITING;
        check_positions(head, tail, cap as u64)?;
        Ok(Producer { tail, cached_head: head, cap: cap as u64, max_whole: max_whole(cap), spin })
    }

    /// Largest payload of one record.
    pub fn max_whole(&self) -> usize {
        self.max_whole
    }

    fn place(&self, len: usize) -> Placement {
        let rec = record::size(len);
        let off = (self.tail & (self.cap - 1)) as usize;
        let to_end = self.cap as usize - off;
        if rec <= to_end {
            Placement { pad_at: None, off, len, advance: rec as u64 }
        } else {
            Placement { pad_at: Some(off), off: 0, len, advance: (to_end + rec) as u64 }
        }
    }

    /// Adopt a head value read from shared memory, after checking it.
    fn observe_head(&mut self, raw: u64) -> Result<(), Corrupt> {
        let head = raw & !HEAD_TX_WAITING;
        if head < self.cached_head {
            return Err(Corrupt::new(format!("head moved backwards from {} to {head}", self.cached_head)));
        }
        check_positions(head, self.tail, self.cap)?;
        self.cached_head = head;
        Ok(())
    }

    /// Is there room for `need` bytes? Reads the consumer's head only when the cached one says no.
    fn has_room(&mut self, ctl: &RingCtl, need: u64) -> Result<bool, Corrupt> {
        if self.tail + need - self.cached_head <= self.cap {
            return Ok(true);
        }
        // SYNC(head-release): Acquire; pairs with the consumer's swap in `Consumer::release`: the
        // consumer has finished reading everything before this head, so we may overwrite it.
        self.observe_head(ctl.consumer.head.load(Ordering::Acquire))?;
        Ok(self.tail + need - self.cached_head <= self.cap)
    }

    /// Publish everything written up to `new_tail`, unless the channel was closed.
    fn commit<P: Park>(&mut self, ctl: &RingCtl, park: &P, new_tail: u64) -> Result<(), PushError> {
        let mut expected = self.tail;
        loop {
            // SYNC(tail-commit): AcqRel CAS. Release pairs with the consumer's Acquire load of the
            // tail (`Consumer::refresh_tail`): whoever sees the new tail sees the record bytes.
            // Acquire pairs with the consumer's fetch_or of RX_WAITING (SYNC(rx-waiting)).
            // The CAS fails if a closer set TAIL_CLOSED (SYNC(closed-bit)): then the message was
            // never visible to the consumer and is handed back.
            match ctl.producer.tail.compare_exchange(expected, new_tail, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    self.tail = new_tail;
                    if expected & TAIL_RX_WAITING != 0 {
                        // SYNC(rx-seq): Release; pairs with the consumer's Acquire load in `sleep`.
                        ctl.wake.rx_seq.fetch_add(1, Ordering::Release);
                        park.wake_all(&ctl.wake.rx_seq);
                    }
                    return Ok(());
                }
                Err(actual) => {
                    if actual & POS_MASK != self.tail {
                        return Err(Corrupt::new(format!(
                            "tail moved from {} to {} behind the producer's back",
                            self.tail,
                            actual & POS_MASK
                        ))
                        .into());
                    }
                    if actual & TAIL_CLOSED != 0 {
                        return Err(PushError::Closed);
                    }
                    expected = actual; // only RX_WAITING changed: commit and clear it
                }
            }
        }
    }

    /// Write one record and commit it if it fits now, keeping `keep_free` more bytes free.
    /// `prefix` is an optional u64 written before `body` (the total length of a FIRST record).
    #[allow(clippy::too_many_arguments)]
    fn push_record<M: RingMemory, P: Park>(
        &mut self,
        ctl: &RingCtl,
        mem: &M,
        park: &P,
        kind: Kind,
        prefix: Option<u64>,
        body: &[u8],
        keep_free: u64,
    ) -> Result<bool, PushError> {
        let len = body.len() + if prefix.is_some() { 8 } else { 0 };
        let p = self.place(len);
        if !self.has_room(ctl, p.advance + keep_free)? {
            return Ok(false);
        }
        self.write_frame(mem, &p, kind);
        let mut at = p.off + HDR;
        if let Some(v) = prefix {
            mem.write_word(at, v);
            at += 8;
        }
        mem.write_bytes(at, body);
        let new_tail = self.tail + p.advance;
        self.commit(ctl, park, new_tail)?;
        Ok(true)
    }

    /// Write the padding (if any) and the header of a placed record.
    fn write_frame<M: RingMemory>(&self, mem: &M, p: &Placement, kind: Kind) {
        if let Some(pad) = p.pad_at {
            let pad_len = self.cap as usize - pad - HDR;
            mem.write_word(pad, record::encode(Kind::Pad, pad_len as u32));
        }
        mem.write_word(p.off, record::encode(kind, p.len as u32));
    }

    /// Wait until `need` bytes are free, the channel closes, or the deadline passes (`Full`).
    fn wait_for_room<P: Park>(
        &mut self,
        ctl: &RingCtl,
        park: &P,
        need: u64,
        deadline: Deadline,
        spinner: &mut Spinner,
    ) -> Result<(), PushError> {
        loop {
            if self.has_room(ctl, need)? {
                return Ok(());
            }
            // SYNC(closed-bit): Acquire load; a closer's fetch_or is seen here or our commit fails.
            if ctl.producer.tail.load(Ordering::Acquire) & TAIL_CLOSED != 0 {
                return Err(PushError::Closed);
            }
            let state = lifecycle::load(&ctl.lifecycle.state)?;
            if state.is_closed_for_send() {
                lifecycle::ensure_closed_bit(ctl, state); // a closer died half way: finish its job
                return Err(PushError::Closed);
            }
            if deadline.passed() {
                return Err(PushError::Full);
            }
            if spinner.spin(deadline) {
                continue;
            }
            // SYNC(tx-seq): Acquire; pairs with the Release bump in `Consumer::release` and
            // `lifecycle::wake_everyone`. Read before re-checking the condition (event count).
            let seq = ctl.wake.tx_seq.load(Ordering::Acquire);
            // SYNC(tx-waiting): AcqRel; pairs with the consumer's AcqRel swap in `release`: either
            // the swap sees our bit and wakes us, or this RMW returns the head that swap wrote.
            let raw = ctl.consumer.head.fetch_or(HEAD_TX_WAITING, Ordering::AcqRel);
            self.observe_head(raw)?;
            if self.tail + need - self.cached_head <= self.cap {
                continue;
            }
            if ctl.producer.tail.load(Ordering::Acquire) & TAIL_CLOSED != 0 {
                return Err(PushError::Closed);
            }
            if park.wait(&ctl.wake.tx_seq, seq, deadline.instant()) == Wake::TimedOut {
                return if self.has_room(ctl, need)? { Ok(()) } else { Err(PushError::Full) };
            }
        }
    }

    fn count(&self, ctl: &RingCtl, bytes: usize) {
        // Producer-owned counters: plain load + store, no RMW needed. Wrapping: the words are in
        // shared memory, so a peer may have left any value there (found by fuzzing).
        let p = &ctl.producer;
        p.sent_msgs.store(p.sent_msgs.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        p.sent_bytes.store(p.sent_bytes.load(Ordering::Relaxed).wrapping_add(bytes as u64), Ordering::Relaxed);
    }

    /// Send one message of any length, waiting for room until `deadline`.
    ///
    /// Accepted means every byte is committed and will be delivered unless the receiver side
    /// closes with CLOSING. `Full` (deadline) and `Closed` mean the receiver will never see the
    /// message: a large message cut short is ended with an ABORT record (or by the close).
    pub fn send<M: RingMemory, P: Park>(
        &mut self,
        ctl: &RingCtl,
        mem: &M,
        park: &P,
        msg: &[u8],
        deadline: Deadline,
    ) -> Result<(), PushError> {
        let mut spinner = Spinner::new(self.spin);
        if msg.len() <= self.max_whole {
            loop {
                if self.push_record(ctl, mem, park, Kind::Whole, None, msg, 0)? {
                    self.count(ctl, msg.len());
                    return Ok(());
                }
                let need = self.place(msg.len()).advance;
                self.wait_for_room(ctl, park, need, deadline, &mut spinner)?;
            }
        }
        // Fragmented: FIRST carries the total length. Every record but the LAST keeps 8 bytes
        // free behind it, so an ABORT record always fits if the deadline passes half way.
        if self.max_whole <= 8 {
            // A FIRST record would carry its length prefix and no payload: no progress, ever.
            // Only reachable with rings under 128 bytes (loom models), never with a segment.
            return Err(Corrupt::new(format!("a {}-byte ring is too small to fragment messages", self.cap)).into());
        }
        let mut sent = 0usize;
        while sent < msg.len() {
            let first = sent == 0;
            let room = if first { self.max_whole - 8 } else { self.max_whole };
            let n = room.min(msg.len() - sent);
            let last = sent + n == msg.len();
            let kind = match (first, last) {
                (true, _) => Kind::First,
                (false, false) => Kind::Middle,
                (false, true) => Kind::Last,
            };
            let prefix = first.then_some(msg.len() as u64);
            let keep_free = if last { 0 } else { HDR as u64 };
            let body = &msg[sent..sent + n];
            loop {
                if self.push_record(ctl, mem, park, kind, prefix, body, keep_free)? {
                    break;
                }
                let need = self.place(n + if first { 8 } else { 0 }).advance + keep_free;
                match self.wait_for_room(ctl, park, need, deadline, &mut spinner) {
                    Ok(()) => {}
                    Err(PushError::Full) if !first => {
                        self.abort(ctl, mem, park)?;
                        return Err(PushError::Full);
                    }
                    Err(e) => return Err(e),
                }
            }
            sent += n;
        }
        self.count(ctl, msg.len());
        Ok(())
    }

    /// End a half-sent fragmented message so the receiver drops its pieces.
    fn abort<M: RingMemory, P: Park>(&mut self, ctl: &RingCtl, mem: &M, park: &P) -> Result<(), PushError> {
        if self.push_record(ctl, mem, park, Kind::Abort, None, &[], 0)? {
            Ok(())
        } else {
            Err(Corrupt::new("no room for an ABORT record although 8 bytes were kept free").into())
        }
    }

    /// Find room for a record of `len` payload bytes (at most `max_whole`) without writing it.
    pub fn reserve<P: Park>(
        &mut self,
        ctl: &RingCtl,
        park: &P,
        len: usize,
        deadline: Deadline,
    ) -> Result<Placement, PushError> {
        debug_assert!(len <= self.max_whole);
        let mut spinner = Spinner::new(self.spin);
        loop {
            let p = self.place(len);
            if self.has_room(ctl, p.advance)? {
                return Ok(p);
            }
            self.wait_for_room(ctl, park, p.advance, deadline, &mut spinner)?;
        }
    }

    /// Commit a record whose payload the caller wrote at `p.off + HDR`, possibly shortened to
    /// `len <= p.len` bytes. `p` must come from `reserve` with no push in between.
    pub fn commit_reserved<M: RingMemory, P: Park>(
        &mut self,
        ctl: &RingCtl,
        mem: &M,
        park: &P,
        p: Placement,
        len: usize,
    ) -> Result<(), PushError> {
        debug_assert!(len <= p.len);
        let shrunk = Placement { len, ..p };
        let advance = match p.pad_at {
            Some(pad) => (self.cap as usize - pad + record::size(len)) as u64,
            None => record::size(len) as u64,
        };
        self.write_frame(mem, &shrunk, Kind::Whole);
        self.commit(ctl, park, self.tail + advance)?;
        self.count(ctl, len);
        Ok(())
    }
}

/// What the consumer found next.
#[derive(Debug)]
enum Peeked {
    /// A record (not padding): its kind, payload offset and length, and the head after it.
    Record { kind: Kind, off: usize, len: usize, next: u64 },
    /// Nothing committed beyond the head; the tail word as read (with its flag bits).
    Empty { raw_tail: u64 },
}

/// A received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A whole record at `off..off + len` of the ring; call `finish_whole(next)` when done.
    Whole { off: usize, len: usize, next: u64 },
    /// A fragmented message, now complete in `Consumer::assembled()`.
    Assembled,
}

/// The consumer's private state. Exactly one exists per ring at a time.
pub struct Consumer {
    head: u64,
    cached_tail: u64,
    cap: u64,
    max_message: u64,
    spin: Duration,
    /// Total length of the fragmented message being assembled, if any.
    partial: Option<u64>,
    assembly: Vec<u8>,
}

impl Consumer {
    /// Take the consumer side of a ring, checking the positions found there.
    pub fn attach(ctl: &RingCtl, cap: usize, max_message: u64, spin: Duration) -> Result<Consumer, Corrupt> {
        // SYNC(tail-commit), SYNC(head-release): Acquire, as in `Producer::attach`.
        let tail = ctl.producer.tail.load(Ordering::Acquire) & POS_MASK;
        let head = ctl.consumer.head.load(Ordering::Acquire) & !HEAD_TX_WAITING;
        check_positions(head, tail, cap as u64)?;
        Ok(Consumer {
            head,
            cached_tail: head,
            cap: cap as u64,
            max_message,
            spin,
            partial: None,
            assembly: Vec::new(),
        })
    }

    /// The message assembled from fragments (valid after `Next::Assembled`).
    pub fn assembled(&self) -> &[u8] {
        &self.assembly
    }

    /// Hand the assembled message over, leaving `other` as the next assembly buffer.
    pub fn swap_assembled(&mut self, other: &mut Vec<u8>) {
        std::mem::swap(&mut self.assembly, other);
    }

    fn observe_tail(&mut self, raw: u64) -> Result<u64, Corrupt> {
        let tail = raw & POS_MASK;
        if tail == self.cached_tail {
            return Ok(raw); // unchanged, and (head, cached_tail) was validated already
        }
        if tail < self.cached_tail {
            return Err(Corrupt::new(format!("tail moved backwards from {} to {tail}", self.cached_tail)));
        }
        check_positions(self.head, tail, self.cap)?;
        self.cached_tail = tail;
        Ok(raw)
    }

    fn refresh_tail(&mut self, ctl: &RingCtl) -> Result<u64, Corrupt> {
        // SYNC(tail-commit): Acquire; pairs with the producer's CAS in `Producer::commit`.
        self.observe_tail(ctl.producer.tail.load(Ordering::Acquire))
    }

    /// The next record that is not padding, or the tail word when there is none.
    fn peek<M: RingMemory, P: Park>(&mut self, ctl: &RingCtl, mem: &M, park: &P) -> Result<Peeked, Corrupt> {
        loop {
            if self.head == self.cached_tail {
                let raw_tail = self.refresh_tail(ctl)?;
                if self.head == self.cached_tail {
                    return Ok(Peeked::Empty { raw_tail });
                }
            }
            let off = (self.head & (self.cap - 1)) as usize;
            let (kind, len) = record::decode(mem.read_word(off))?;
            let rec = record::size(len as usize) as u64;
            if rec > self.cap - off as u64 {
                return Err(Corrupt::new(format!("record of {len} bytes at offset {off} runs past the ring's end")));
            }
            if rec > self.cached_tail - self.head {
                return Err(Corrupt::new(format!("record of {len} bytes runs past the committed tail")));
            }
            if kind == Kind::Pad {
                if off as u64 + rec != self.cap {
                    return Err(Corrupt::new(format!("padding at offset {off} does not end at the ring's end")));
                }
                self.release(ctl, park, self.head + rec);
                continue;
            }
            return Ok(Peeked::Record { kind, off: off + HDR, len: len as usize, next: self.head + rec });
        }
    }

    /// Give everything before `next` back to the producer.
    fn release<P: Park>(&mut self, ctl: &RingCtl, park: &P, next: u64) {
        self.head = next;
        // SYNC(head-release): AcqRel swap. Release pairs with the producer's Acquire head load in
        // `has_room` (we are done reading those bytes); Acquire pairs with its fetch_or of
        // TX_WAITING (SYNC(tx-waiting)), whose bit this swap sees and clears.
        let old = ctl.consumer.head.swap(next, Ordering::AcqRel);
        if old & HEAD_TX_WAITING != 0 {
            // SYNC(tx-seq): Release; pairs with the producer's Acquire load in `wait_for_room`.
            ctl.wake.tx_seq.fetch_add(1, Ordering::Release);
            park.wake_all(&ctl.wake.tx_seq);
        }
    }

    fn count(&self, ctl: &RingCtl, bytes: usize) {
        // Consumer-owned counters: plain load + store, wrapping (any value may be found there).
        let c = &ctl.consumer;
        c.recv_msgs.store(c.recv_msgs.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        c.recv_bytes.store(c.recv_bytes.load(Ordering::Relaxed).wrapping_add(bytes as u64), Ordering::Relaxed);
    }

    /// Done with a `Next::Whole` message.
    pub fn finish_whole<P: Park>(&mut self, ctl: &RingCtl, park: &P, next: u64, len: usize) {
        self.release(ctl, park, next);
        self.count(ctl, len);
    }

    fn append<M: RingMemory>(&mut self, mem: &M, off: usize, len: usize) -> Result<(), Corrupt> {
        let total = self.partial.ok_or_else(|| Corrupt::new("a fragment arrived outside a fragmented message"))?;
        if (self.assembly.len() + len) as u64 > total {
            return Err(Corrupt::new(format!("fragments add up to more than the announced {total} bytes")));
        }
        let at = self.assembly.len();
        self.assembly.resize(at + len, 0);
        mem.read_bytes(off, &mut self.assembly[at..]);
        Ok(())
    }

    /// Receive the next message, waiting until `deadline`.
    pub fn next<M: RingMemory, P: Park>(
        &mut self,
        ctl: &RingCtl,
        mem: &M,
        park: &P,
        deadline: Deadline,
    ) -> Result<Next, PopError> {
        let mut spinner = Spinner::new(self.spin);
        loop {
            let state = lifecycle::load(&ctl.lifecycle.state)?;
            if state >= State::Closing {
                self.discard_backlog(ctl, mem, park, state)?;
                lifecycle::advance(ctl, State::Closed)?;
                return Err(PopError::Closed);
            }
            match self.peek(ctl, mem, park)? {
                Peeked::Record { kind: Kind::Whole, off, len, next } => {
                    if self.partial.is_some() {
                        return Err(Corrupt::new("a whole message began inside a fragmented one").into());
                    }
                    if len as u64 > self.max_message {
                        return Err(Corrupt::new(format!("a {len}-byte record exceeds max_message")).into());
                    }
                    return Ok(Next::Whole { off, len, next });
                }
                Peeked::Record { kind: Kind::First, off, len, next } => {
                    if self.partial.is_some() || len < 8 {
                        return Err(Corrupt::new("malformed FIRST fragment").into());
                    }
                    let total = mem.read_word(off);
                    if total > self.max_message || total <= (len - 8) as u64 {
                        return Err(Corrupt::new(format!("fragmented message announces {total} bytes")).into());
                    }
                    self.partial = Some(total);
                    self.assembly.clear();
                    // Grow with the data rather than trusting a (possibly hostile) announced size.
                    self.assembly.reserve((total as usize).min(16 << 20));
                    self.append(mem, off + 8, len - 8)?;
                    self.release(ctl, park, next);
                }
                Peeked::Record { kind: kind @ (Kind::Middle | Kind::Last), off, len, next } => {
                    self.append(mem, off, len)?;
                    self.release(ctl, park, next);
                    if kind == Kind::Last {
                        let total = self.partial.take().unwrap_or(0);
                        if self.assembly.len() as u64 != total {
                            return Err(Corrupt::new("LAST fragment ends a message short of its length").into());
                        }
                        self.count(ctl, self.assembly.len());
                        return Ok(Next::Assembled);
                    }
                }
                Peeked::Record { kind: Kind::Abort, next, .. } => {
                    if self.partial.take().is_none() {
                        return Err(Corrupt::new("ABORT record outside a fragmented message").into());
                    }
                    self.assembly.clear();
                    self.release(ctl, park, next);
                }
                Peeked::Record { kind: Kind::Pad, .. } => unreachable!("peek skips padding"),
                Peeked::Record { kind: Kind::Claimed | Kind::Taken | Kind::Recovering, .. } => {
                    return Err(Corrupt::new("an ownership marker in an SPSC ring").into());
                }
                Peeked::Empty { raw_tail } => {
                    if raw_tail & TAIL_CLOSED != 0 {
                        // The tail is final and fully consumed. A half-assembled message belongs
                        // to a send that was refused (its sender got the message back).
                        self.partial = None;
                        self.assembly.clear();
                        let now = lifecycle::load(&ctl.lifecycle.state)?;
                        if now == State::Active {
                            return Err(Corrupt::new("tail marked closed while the state is ACTIVE").into());
                        }
                        if now >= State::Closing {
                            continue; // discard path above
                        }
                        lifecycle::advance(ctl, State::Closed)?;
                        return Err(PopError::Closed);
                    }
                    if state.is_closed_for_send() {
                        // DRAINING without the tail bit: a closer died half way. Finish its job so
                        // the tail becomes final, then look again.
                        lifecycle::ensure_closed_bit(ctl, state);
                        continue;
                    }
                    if deadline.passed() {
                        return Err(PopError::Empty);
                    }
                    if spinner.spin(deadline) {
                        continue;
                    }
                    self.sleep(ctl, park, deadline)?;
                }
            }
        }
    }

    /// Sleep until the producer commits, someone closes, or the deadline passes.
    fn sleep<P: Park>(&mut self, ctl: &RingCtl, park: &P, deadline: Deadline) -> Result<(), Corrupt> {
        // SYNC(rx-seq): Acquire; pairs with the Release bump in `Producer::commit` and in
        // `lifecycle::wake_everyone`. Read before re-checking the condition (event count).
        let seq = ctl.wake.rx_seq.load(Ordering::Acquire);
        // SYNC(rx-waiting): AcqRel; pairs with the producer's commit CAS: either the CAS sees the
        // bit (and wakes us after bumping rx_seq), or this RMW returns the tail it wrote.
        let raw = ctl.producer.tail.fetch_or(TAIL_RX_WAITING, Ordering::AcqRel);
        self.observe_tail(raw)?;
        if self.cached_tail != self.head || raw & TAIL_CLOSED != 0 {
            ctl.producer.tail.fetch_and(!TAIL_RX_WAITING, Ordering::Relaxed);
            return Ok(());
        }
        if park.wait(&ctl.wake.rx_seq, seq, deadline.instant()) == Wake::TimedOut {
            // Nobody needs to wake us any more; spare the producer a syscall.
            ctl.producer.tail.fetch_and(!TAIL_RX_WAITING, Ordering::Relaxed);
        }
        Ok(())
    }

    /// CLOSING: drop everything between head and tail, counting it.
    fn discard_backlog<M: RingMemory, P: Park>(
        &mut self,
        ctl: &RingCtl,
        mem: &M,
        park: &P,
        state: State,
    ) -> Result<(), Corrupt> {
        lifecycle::ensure_closed_bit(ctl, state); // the tail is final from here on
        let (mut msgs, mut bytes) = (0u64, 0u64);
        // Pieces of a fragmented message count only once its LAST piece shows it was accepted;
        // the pieces of a refused send (ended by ABORT or by the close) were handed back.
        let mut pending = if self.partial.is_some() { self.assembly.len() as u64 } else { 0 };
        while let Peeked::Record { kind, len, next, .. } = self.peek(ctl, mem, park)? {
            match kind {
                Kind::Whole => {
                    msgs += 1;
                    bytes = bytes.wrapping_add(len as u64);
                }
                Kind::First => pending = len.saturating_sub(8) as u64, // minus the length prefix
                Kind::Middle => pending = pending.wrapping_add(len as u64),
                Kind::Last => {
                    msgs += 1;
                    bytes = bytes.wrapping_add(pending).wrapping_add(len as u64);
                    pending = 0;
                }
                Kind::Abort | Kind::Pad => pending = 0,
                Kind::Claimed | Kind::Taken | Kind::Recovering => {
                    return Err(Corrupt::new("an ownership marker in an SPSC ring"));
                }
            }
            self.head = next;
        }
        self.partial = None;
        self.assembly.clear();
        self.release(ctl, park, self.head);
        if msgs != 0 || bytes != 0 {
            ctl.lifecycle.discarded_msgs.fetch_add(msgs, Ordering::Relaxed);
            ctl.lifecycle.discarded_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        Ok(())
    }
}
