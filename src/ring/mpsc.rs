//! The multi-producer single-consumer ring: Agrona-style claim, write, commit of variable-length
//! records (see DESIGN.md, "MPSC ring").
//!
//! | word                         | written by                     | how                                |
//! |------------------------------|--------------------------------|------------------------------------|
//! | tail position                | producers                      | CAS (the claim)                    |
//! | TAIL_CLOSED                  | any closer                     | fetch_or, never cleared            |
//! | header word at a claim start | its producer: CLAIMED, then the committed header (Release) | store |
//! | other header words of a claim| its producer, before the first header is committed | store (Relaxed) |
//! | consumed bytes               | the consumer zeroes them before releasing | memset          |
//! | head position                | the consumer                   | store (Release)                    |
//! | rx_seq / rx_waiters          | producers wake / the consumer sleeps | `wait::wake_counted` / `sleep_counted` |
//! | tx_seq / tx_waiters          | the consumer wakes / producers sleep | same                          |
//!
//! A producer claims `[start, start + extent)` by moving the tail with one CAS, which fails once
//! the closed bit is set: a claim and a close are totally ordered on that word. It then marks the
//! claim start CLAIMED (with the extent, so that `unblock` can skip the claim if its producer
//! dies), writes its records, and commits them all by storing the header at the claim start with
//! Release. The consumer reads the header at its head with Acquire: 0 or CLAIMED means "not yet".
//! Because the consumer zeroes every byte it consumes before giving the space back, a header
//! word reads 0 until a producer has claimed it in this lap: stale bytes from an earlier lap can
//! never pass for a committed record.
//!
//! Messages larger than a quarter of the ring travel as FIRST / MIDDLE* / LAST records whose
//! pieces from several producers may interleave: FIRST carries the total length, every later
//! piece carries the ring position of its FIRST record as an id, and the consumer assembles each
//! message separately. A message is delivered when its LAST piece arrives, so one producer's
//! messages keep their order.

use crate::error::Corrupt;
use crate::futex::Wake;
use crate::layout::{HEAD_TX_WAITING, POS_MASK, RingCtl, TAIL_CLOSED, TAIL_RX_WAITING};
use crate::lifecycle::{self, State};
use crate::ring::intent::{self, Held, Owners};
use crate::ring::memory::RingMemory;
use crate::ring::record::{self, HDR, Kind};
pub use crate::ring::spsc::{Next, PopError, PushError};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::wait::{self, Deadline, Park, Spinner};
use std::collections::HashMap;
use std::time::Duration;

/// Largest payload of one record: a quarter of the ring (as for SPSC).
pub fn max_whole(cap: usize) -> usize {
    cap / 4 - HDR
}

/// At most this many fragmented messages may be in assembly at once (one per producer that is
/// sending a large message); more means a corrupt or hostile ring.
const MAX_PARTIALS: usize = 4096;

/// One record to write: kind, an optional u64 written before the body, the body.
#[derive(Clone, Copy, Debug)]
pub struct Rec<'a> {
    pub kind: Kind,
    pub prefix: Option<u64>,
    pub body: &'a [u8],
}

impl Rec<'_> {
    fn len(&self) -> usize {
        self.body.len() + if self.prefix.is_some() { 8 } else { 0 }
    }
}

/// Where the records of a claim go, computed by `walk`.
enum Spot {
    /// A padding record at `off` with `len` payload bytes (up to the ring's end).
    Pad { off: usize, len: usize },
    /// Record number `i` of the claim, its header at ring offset `off`.
    Rec { i: usize, off: usize },
}

/// A claim the producer won.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Position of the claim start.
    pub start: u64,
    /// Records covered.
    pub n: usize,
    /// Bytes covered (records and padding).
    pub extent: u64,
}

/// The producer side. One per attachment; every thread of every clone uses it through `&self`.
pub struct Producer {
    cap: u64,
    max_whole: usize,
    spin: Duration,
    /// A head value some thread of this process read; saves a read of the consumer's line per
    /// claim. SYNC(cached-head): Release store / Acquire load, so whatever the consumer released
    /// before that head (its reads and its zeroing) happens-before our writes, whichever thread
    /// refreshed the cache.
    cached_head: AtomicU64,
    /// ABORT records owed for fragmented sends that gave up while the ring was full (their ids).
    pending_aborts: std::sync::Mutex<Vec<u64>>,
    pending: AtomicU32,
    /// Messages and bytes sent but not yet added to the shared counters: the shared counters sit
    /// on the tail's line, which every producer hammers, so they are updated every
    /// `COUNT_FLUSH` messages (and on `flush_counts`), not per message.
    unflushed_msgs: AtomicU64,
    unflushed_bytes: AtomicU64,
    /// Our owner mark (`peers::owner_mark`; 0: unknown), written into CLAIMED markers so that the receiver can
    /// tell whose claim is stuck and skip it once that producer is dead.
    owner: u16,
}

/// See `Producer::unflushed_msgs`.
const COUNT_FLUSH: u64 = 256;

impl Producer {
    /// The producer side of a ring of `cap` bytes.
    pub fn new(ctl: &RingCtl, cap: usize, spin: Duration) -> Result<Producer, Corrupt> {
        if !cap.is_power_of_two() || cap < 4 * HDR || cap > u32::MAX as usize {
            return Err(Corrupt::new(format!("MPSC ring capacity {cap} is not a power of two in [32, 2^32)")));
        }
        // SYNC(head-release): Acquire; see `cached_head`.
        let head = ctl.consumer.head.load(Ordering::Acquire);
        Ok(Producer {
            cap: cap as u64,
            max_whole: max_whole(cap),
            spin,
            cached_head: AtomicU64::new(head & POS_MASK),
            pending_aborts: std::sync::Mutex::new(Vec::new()),
            pending: AtomicU32::new(0),
            unflushed_msgs: AtomicU64::new(0),
            unflushed_bytes: AtomicU64::new(0),
            owner: 0,
        })
    }

    /// Record this attachment's owner mark (`peers::owner_mark`) for the CLAIMED markers.
    pub fn with_owner(mut self, owner: u16) -> Producer {
        self.owner = owner;
        self
    }

    /// Largest payload of one record.
    pub fn max_whole(&self) -> usize {
        self.max_whole
    }

    /// Lay records of `lens` out from position `start`, calling `f` for every spot, stopping
    /// before the first record that would take the claim past `room` bytes. Returns (records
    /// placed, extent).
    fn walk(&self, start: u64, lens: impl Iterator<Item = usize>, room: u64, mut f: impl FnMut(Spot)) -> (usize, u64) {
        let mut pos = start;
        let mut n = 0;
        for (i, len) in lens.enumerate() {
            let rec = record::size(len) as u64;
            let off = pos & (self.cap - 1);
            let to_end = self.cap - off;
            let need = if rec > to_end { to_end + rec } else { rec };
            if pos - start + need > room {
                break;
            }
            if rec > to_end {
                f(Spot::Pad { off: off as usize, len: (to_end as usize) - HDR });
                pos += to_end;
            }
            f(Spot::Rec { i, off: (pos & (self.cap - 1)) as usize });
            pos += rec;
            n += 1;
        }
        (n, pos - start)
    }

    /// Read the consumer's head and check it against `tail`, a tail value read earlier. A head
    /// past that tail is not necessarily corrupt: other producers may have claimed and the
    /// consumer consumed since; the tail is read again then, and only a head past a tail read
    /// after it is corrupt (the head never passes the tail). Returns (head, tail).
    fn load_head_at(&self, ctl: &RingCtl, mut tail: u64) -> Result<(u64, u64), Corrupt> {
        // SYNC(head-release): Acquire; pairs with the consumer's Release store in `release`.
        let head = ctl.consumer.head.load(Ordering::Acquire);
        if head > tail {
            tail = ctl.producer.tail.load(Ordering::Acquire) & POS_MASK;
        }
        if head & HEAD_TX_WAITING != 0 || head > tail || tail - head > self.cap || head % 8 != 0 {
            return Err(Corrupt::new(format!("MPSC head {head:#x} is impossible for tail {tail}")));
        }
        // SYNC(cached-head): AcqRel; see the field.
        self.cached_head.fetch_max(head, Ordering::AcqRel);
        Ok((head, tail))
    }

    /// Claim room for the longest prefix of `lens` (record payload lengths, at least one) that
    /// fits now. `Ok(None)`: not even the first fits. Our CLAIM intent is published before the
    /// CAS; the caller drops the returned `Held` once the CLAIMED marker is stored, so that a
    /// receiver never mistakes a live claim that is not marked yet for a dead producer's
    /// (DESIGN 4d).
    fn try_claim<'p, P: Owners>(
        &self,
        ctl: &RingCtl,
        park: &'p P,
        lens: &[usize],
    ) -> Result<Option<(Claim, Held<'p>)>, PushError> {
        let mut held: Option<Held<'p>> = None;
        // SYNC(claim): Relaxed is enough for the load; the CAS below decides.
        let mut raw = ctl.producer.tail.load(Ordering::Relaxed);
        loop {
            if raw & TAIL_CLOSED != 0 {
                return Err(PushError::Closed);
            }
            if raw & TAIL_RX_WAITING != 0 {
                return Err(Corrupt::new("SPSC waiting bit set in an MPSC tail").into());
            }
            let tail = raw & POS_MASK;
            if tail % 8 != 0 {
                return Err(Corrupt::new(format!("MPSC tail {tail} is not record-aligned")).into());
            }
            // SYNC(cached-head): Acquire; see the field.
            let mut head = self.cached_head.load(Ordering::Acquire);
            if head > tail {
                // Our tail is stale (others claimed and the consumer moved on since we read it).
                raw = ctl.producer.tail.load(Ordering::Relaxed);
                continue;
            }
            if tail - head > self.cap {
                let (h, t) = self.load_head_at(ctl, tail)?;
                if t != tail {
                    raw = ctl.producer.tail.load(Ordering::Relaxed);
                    continue;
                }
                head = h;
            }
            let room = |head: u64| (self.cap - (tail - head)).min(u32::MAX as u64);
            let (mut n, mut extent) = self.walk(tail, lens.iter().copied(), room(head), |_| {});
            if n < lens.len() {
                // The cached head may be stale: look at the real one before settling for less.
                let (h, t) = self.load_head_at(ctl, tail)?;
                if t != tail {
                    raw = ctl.producer.tail.load(Ordering::Relaxed);
                    continue; // our tail was stale: start over from a fresh one
                }
                head = h;
                (n, extent) = self.walk(tail, lens.iter().copied(), room(head), |_| {});
            }
            if n == 0 {
                return Ok(None);
            }
            // SYNC(intent): published before the CAS, whose Release carries it.
            let mine = intent::encode(intent::CLAIM, tail);
            match &held {
                Some(h) => h.set(mine),
                None => held = Some(Held::hold(self.intent_word(park), mine)?),
            }
            // SYNC(claim): AcqRel CAS on the tail word. It fails if another producer claimed
            // first (retry with its tail) or a closer set TAIL_CLOSED (SYNC(closed-bit)): a claim
            // and a close are totally ordered, so no claim starts after the close.
            match ctl.producer.tail.compare_exchange(raw, raw + extent, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    let held = held.take().expect("held before the CAS");
                    return Ok(Some((Claim { start: tail, n, extent }, held)));
                }
                Err(actual) => {
                    if actual & POS_MASK < tail {
                        return Err(Corrupt::new("MPSC tail moved backwards").into());
                    }
                    raw = actual;
                }
            }
        }
    }

    /// Our intent word (None without an owner mark, i.e. without a peer slot).
    fn intent_word<'p, P: Owners>(&self, park: &'p P) -> Option<&'p AtomicU64> {
        if self.owner == 0 { None } else { park.intent_word(self.owner) }
    }

    /// Mark a won claim CLAIMED (what `unblock` reads if we die before the commit), then let
    /// go of our intent: the marker speaks for the claim from here on.
    fn mark_claim<M: RingMemory>(&self, mem: &M, claim: Claim, held: Held<'_>) {
        let start_off = (claim.start & (self.cap - 1)) as usize;
        // SYNC(intent): the Release clear in `held`'s drop publishes this marker.
        mem.store_word(start_off, record::encode_claimed(claim.extent as u32, self.owner), Ordering::Relaxed);
        drop(held);
    }

    /// Write the records of a won claim and commit them with one Release store.
    #[allow(clippy::too_many_arguments)]
    fn write_claim<M: RingMemory, P: Park>(
        &self,
        ctl: &RingCtl,
        mem: &M,
        park: &P,
        claim: Claim,
        held: Held<'_>,
        recs: &[Rec<'_>],
    ) {
        let start_off = (claim.start & (self.cap - 1)) as usize;
        self.mark_claim(mem, claim, held);
        let mut first = 0u64;
        self.walk(claim.start, recs[..claim.n].iter().map(Rec::len), claim.extent, |spot| {
            let (off, word) = match spot {
                Spot::Pad { off, len } => (off, record::encode(Kind::Pad, len as u32)),
                Spot::Rec { i, off, .. } => {
                    let r = &recs[i];
                    let mut at = off + HDR;
                    if let Some(v) = r.prefix {
                        mem.write_word(at, v);
                        at += 8;
                    }
                    mem.write_bytes(at, r.body);
                    (off, record::encode(r.kind, r.len() as u32))
                }
            };
            if off == start_off {
                first = word;
            } else {
                // Published by the Release store of the first header below.
                mem.store_word(off, word, Ordering::Relaxed);
            }
        });
        // SYNC(commit): Release; pairs with the consumer's Acquire load of the header word in
        // `look`: whoever sees this header sees every byte and header of the claim.
        mem.store_word(start_off, first, Ordering::Release);
        wait::wake_counted(park, &ctl.wake.rx_seq, &ctl.wake.rx_waiters);
        // Counters (diagnostics): whole messages here; fragmented ones once their LAST is in.
        let (mut msgs, mut bytes) = (0u64, 0u64);
        for r in recs[..claim.n].iter().filter(|r| r.kind == Kind::Whole) {
            msgs += 1;
            bytes += r.body.len() as u64;
        }
        self.count(ctl, msgs, bytes);
    }

    /// Count sent messages (diagnostics), flushing to the segment now and then.
    fn count(&self, ctl: &RingCtl, msgs: u64, bytes: u64) {
        if msgs == 0 {
            return;
        }
        self.unflushed_bytes.fetch_add(bytes, Ordering::Relaxed);
        if self.unflushed_msgs.fetch_add(msgs, Ordering::Relaxed) + msgs >= COUNT_FLUSH {
            self.flush_counts(ctl);
        }
    }

    /// Add the locally counted messages and bytes to the segment's `sent_*` counters (done every
    /// few hundred messages, before sleeping, and when the attachment goes away).
    pub fn flush_counts(&self, ctl: &RingCtl) {
        let msgs = self.unflushed_msgs.swap(0, Ordering::Relaxed);
        let bytes = self.unflushed_bytes.swap(0, Ordering::Relaxed);
        if msgs != 0 || bytes != 0 {
            ctl.producer.sent_msgs.fetch_add(msgs, Ordering::Relaxed);
            ctl.producer.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Is there room for a record of `len` payload bytes right now, or is the channel closed?
    fn room_or_closed(&self, ctl: &RingCtl, len: usize) -> Result<bool, Corrupt> {
        // SYNC(closed-bit): Acquire load; a closer's fetch_or is seen here or our claim fails.
        let raw = ctl.producer.tail.load(Ordering::Acquire);
        if raw & TAIL_CLOSED != 0 {
            return Ok(true);
        }
        let (head, tail) = self.load_head_at(ctl, raw & POS_MASK)?;
        let (n, _) = self.walk(tail, std::iter::once(len), self.cap - (tail - head), |_| {});
        Ok(n == 1)
    }

    /// Wait until a record of `len` bytes might fit, the channel closes, or the deadline passes.
    fn wait_for_room<P: Park>(
        &self,
        ctl: &RingCtl,
        park: &P,
        len: usize,
        deadline: Deadline,
        spinner: &mut Spinner,
    ) -> Result<(), PushError> {
        loop {
            if ctl.producer.tail.load(Ordering::Acquire) & TAIL_CLOSED != 0 {
                return Err(PushError::Closed);
            }
            let state = lifecycle::load(&ctl.lifecycle.state)?;
            if state.is_closed_for_send() {
                lifecycle::ensure_closed_bit(ctl, state); // a closer died half way: finish its job
                return Err(PushError::Closed);
            }
            if self.room_or_closed(ctl, len)? {
                return Ok(());
            }
            if deadline.passed() {
                return Err(PushError::Full);
            }
            if spinner.spin(deadline) {
                continue;
            }
            self.flush_counts(ctl);
            let woke = wait::sleep_counted(park, &ctl.wake.tx_seq, &ctl.wake.tx_waiters, deadline, || {
                self.room_or_closed(ctl, len).map(|ok| !ok)
            })?;
            if woke == Wake::TimedOut {
                return if self.room_or_closed(ctl, len)? { Ok(()) } else { Err(PushError::Full) };
            }
        }
    }

    /// Claim (waiting for room until `deadline`), write and commit a prefix of `recs` of at
    /// least one record; returns the claim (`claim.n` records were sent).
    pub fn push<M: RingMemory, P: Park + Owners>(
        &self,
        ctl: &RingCtl,
        mem: &M,
        park: &P,
        recs: &[Rec<'_>],
        deadline: Deadline,
    ) -> Result<Claim, PushError> {
        debug_assert!(!recs.is_empty() && recs.iter().all(|r| r.len() <= self.max_whole));
        self.flush_aborts(ctl, mem, park);
        let mut spinner = Spinner::new(self.spin);
        let one;
        let many: Vec<usize>;
        let lens: &[usize] = if recs.len() == 1 {
            one = [recs[0].len()];
            &one
        } else {
            many = recs.iter().map(Rec::len).collect();
            &many
        };
        loop {
            if let Some((claim, held)) = self.try_claim(ctl, park, lens)? {
                self.write_claim(ctl, mem, park, claim, held, recs);
                return Ok(claim);
            }
            self.wait_for_room(ctl, park, lens[0], deadline, &mut spinner)?;
        }
    }

    /// Send one message of any length (fragmented above `max_whole`), waiting until `deadline`.
    pub fn send<M: RingMemory, P: Park + Owners>(
        &self,
        ctl: &RingCtl,
        mem: &M,
        park: &P,
        msg: &[u8],
        deadline: Deadline,
    ) -> Result<(), PushError> {
        if msg.len() <= self.max_whole {
            let rec = Rec { kind: Kind::Whole, prefix: None, body: msg };
            return self.push(ctl, mem, park, &[rec], deadline).map(|_| ());
        }
        if self.max_whole <= 8 {
            return Err(Corrupt::new(format!("a {}-byte ring is too small to fragment messages", self.cap)).into());
        }
        let piece = self.max_whole - 8; // every piece carries a u64: the total or the id
        let first = Rec { kind: Kind::First, prefix: Some(msg.len() as u64), body: &msg[..piece] };
        let claim = self.push(ctl, mem, park, &[first], deadline)?;
        // The id of the message: the position of its FIRST record (after any padding).
        let id = claim.start + claim.extent - record::size(first.len()) as u64;
        let mut sent = piece;
        while sent < msg.len() {
            let n = piece.min(msg.len() - sent);
            let kind = if sent + n == msg.len() { Kind::Last } else { Kind::Middle };
            let rec = Rec { kind, prefix: Some(id), body: &msg[sent..sent + n] };
            match self.push(ctl, mem, park, &[rec], deadline) {
                Ok(_) => sent += n,
                Err(PushError::Full) => {
                    self.abort(ctl, mem, park, id);
                    return Err(PushError::Full);
                }
                Err(e) => return Err(e), // closed: the consumer drops the pieces at end-of-stream
            }
        }
        self.count(ctl, 1, msg.len() as u64);
        Ok(())
    }

    /// End a fragmented message that will not be finished: an ABORT record now if it fits,
    /// else owed and written by a later push of this producer.
    fn abort<M: RingMemory, P: Park + Owners>(&self, ctl: &RingCtl, mem: &M, park: &P, id: u64) {
        let rec = Rec { kind: Kind::Abort, prefix: Some(id), body: &[] };
        match self.try_claim(ctl, park, &[rec.len()]) {
            Ok(Some((c, held))) => self.write_claim(ctl, mem, park, c, held, &[rec]),
            Ok(None) => {
                let mut owed = self.pending_aborts.lock().unwrap_or_else(|e| e.into_inner());
                owed.push(id);
                self.pending.store(1, Ordering::Release);
            }
            Err(_) => {} // closed or corrupt: the consumer drops partial messages at end-of-stream
        }
    }

    /// Write the ABORT records owed (without waiting; those that do not fit stay owed).
    fn flush_aborts<M: RingMemory, P: Park + Owners>(&self, ctl: &RingCtl, mem: &M, park: &P) {
        if self.pending.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut owed = self.pending_aborts.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(&id) = owed.last() {
            let rec = Rec { kind: Kind::Abort, prefix: Some(id), body: &[] };
            match self.try_claim(ctl, park, &[rec.len()]) {
                Ok(Some((c, held))) => {
                    self.write_claim(ctl, mem, park, c, held, &[rec]);
                    owed.pop();
                }
                Ok(None) => return,
                Err(_) => owed.clear(), // closed: partial messages are dropped at end-of-stream
            }
        }
        self.pending.store(0, Ordering::Release);
    }

    /// Reserve one record of `len` payload bytes for zero-copy writing: claimed and marked, not
    /// committed. The caller writes the payload at `off + HDR`, then calls `commit_reserved`.
    /// Until then the consumer waits at this record: commit (or cancel) promptly.
    pub fn reserve<M: RingMemory, P: Park + Owners>(
        &self,
        ctl: &RingCtl,
        mem: &M,
        park: &P,
        len: usize,
        deadline: Deadline,
    ) -> Result<Reserved, PushError> {
        debug_assert!(len <= self.max_whole);
        self.flush_aborts(ctl, mem, park);
        let mut spinner = Spinner::new(self.spin);
        loop {
            if let Some((claim, held)) = self.try_claim(ctl, park, &[len])? {
                self.mark_claim(mem, claim, held);
                let rec_off = ((claim.start + claim.extent - record::size(len) as u64) & (self.cap - 1)) as usize;
                return Ok(Reserved { claim, off: rec_off, len });
            }
            self.wait_for_room(ctl, park, len, deadline, &mut spinner)?;
        }
    }

    /// Commit a reservation as a WHOLE message of `used <= r.len` bytes (the rest becomes
    /// padding), or as padding only (`used == None`: the caller cancelled).
    pub fn commit_reserved<M: RingMemory, P: Park>(
        &self,
        ctl: &RingCtl,
        mem: &M,
        park: &P,
        r: Reserved,
        used: Option<usize>,
    ) {
        let start_off = (r.claim.start & (self.cap - 1)) as usize;
        let rec_size = record::size(r.len);
        let main = match used {
            Some(u) => {
                debug_assert!(u <= r.len);
                let rest = rec_size - record::size(u);
                if rest != 0 {
                    mem.store_word(
                        r.off + record::size(u),
                        record::encode(Kind::Pad, (rest - HDR) as u32),
                        Ordering::Relaxed,
                    );
                }
                record::encode(Kind::Whole, u as u32)
            }
            None => record::encode(Kind::Pad, (rec_size - HDR) as u32),
        };
        let first = if r.off == start_off {
            main
        } else {
            // Padding up to the ring's end comes first; the record sits at offset 0.
            mem.store_word(r.off, main, Ordering::Relaxed);
            record::encode(Kind::Pad, (self.cap as usize - start_off - HDR) as u32)
        };
        // SYNC(commit): Release; see `write_claim`.
        mem.store_word(start_off, first, Ordering::Release);
        wait::wake_counted(park, &ctl.wake.rx_seq, &ctl.wake.rx_waiters);
        if let Some(u) = used {
            self.count(ctl, 1, u as u64);
        }
    }
}

/// A claimed, uncommitted WHOLE record (zero-copy send).
#[derive(Clone, Copy, Debug)]
pub struct Reserved {
    claim: Claim,
    /// Ring offset of the record's header (after padding, if any).
    pub off: usize,
    /// Payload bytes reserved.
    pub len: usize,
}

/// What the consumer found at a position.
#[derive(Debug, Clone, Copy)]
enum Look {
    /// A committed record: kind, payload offset and length, the position after it.
    Record { kind: Kind, off: usize, len: usize, next: u64 },
    /// Claimed (or being claimed) but not committed yet.
    InFlight,
    /// Nothing claimed here; the tail word as read (with its flag bits).
    End { raw_tail: u64 },
}

/// A message being assembled from fragments.
struct Partial {
    total: u64,
    buf: Vec<u8>,
}

/// A run of whole messages that `next_batch` found after the head, still in the ring.
#[derive(Debug, Default)]
pub struct BatchPlan {
    /// (payload offset, length) of each message.
    pub items: Vec<(usize, usize)>,
    /// Position after the last record of the batch (pass it to `finish_batch`).
    pub next: u64,
}

/// The consumer side. Exactly one exists per ring at a time.
pub struct Consumer {
    head: u64,
    cached_tail: u64,
    cap: u64,
    max_message: u64,
    spin: Duration,
    partials: HashMap<u64, Partial>,
    assembled: Vec<u8>,
}

impl Consumer {
    /// Take the consumer side of a ring, checking the positions found there.
    pub fn attach(ctl: &RingCtl, cap: usize, max_message: u64, spin: Duration) -> Result<Consumer, Corrupt> {
        if !cap.is_power_of_two() || cap < 4 * HDR || cap > u32::MAX as usize {
            return Err(Corrupt::new(format!("MPSC ring capacity {cap} is not a power of two in [32, 2^32)")));
        }
        // SYNC(head-release): Acquire, so a re-attaching consumer sees the ring as left.
        let head = ctl.consumer.head.load(Ordering::Acquire);
        let tail = ctl.producer.tail.load(Ordering::Acquire) & POS_MASK;
        if head & HEAD_TX_WAITING != 0 || head > tail || tail - head > cap as u64 || head % 8 != 0 {
            return Err(Corrupt::new(format!("MPSC positions head={head:#x} tail={tail} are impossible")));
        }
        Ok(Consumer {
            head,
            cached_tail: tail,
            cap: cap as u64,
            max_message,
            spin,
            partials: HashMap::new(),
            assembled: Vec::new(),
        })
    }

    /// The head position (where the next record is read).
    pub fn head(&self) -> u64 {
        self.head
    }

    /// The message assembled from fragments (valid after `Next::Assembled`).
    pub fn assembled(&self) -> &[u8] {
        &self.assembled
    }

    /// Hand the assembled message over, leaving `other` as the next assembly buffer.
    pub fn swap_assembled(&mut self, other: &mut Vec<u8>) {
        std::mem::swap(&mut self.assembled, other);
    }

    fn refresh_tail(&mut self, ctl: &RingCtl) -> Result<u64, Corrupt> {
        // SYNC(claim): Acquire is not needed for data (headers carry the commit), only to see the
        // closed bit no earlier than the claims before it.
        let raw = ctl.producer.tail.load(Ordering::Acquire);
        let tail = raw & POS_MASK;
        if tail < self.cached_tail || tail < self.head || tail - self.head > self.cap || tail % 8 != 0 {
            return Err(Corrupt::new(format!("MPSC tail {tail} is impossible for head {}", self.head)));
        }
        self.cached_tail = tail;
        Ok(raw)
    }

    /// What is at position `pos` (at or after the head, before the tail or at it).
    fn look<M: RingMemory>(&mut self, ctl: &RingCtl, mem: &M, pos: u64) -> Result<Look, Corrupt> {
        // Every word in [head, head + cap) that no producer has claimed reads 0: we zeroed it
        // before releasing it. At head + cap and beyond lie bytes of a batch still borrowed
        // (not yet zeroed), which must not be read; the tail cannot be there anyway.
        let raw = if pos < self.head + self.cap {
            // SYNC(commit): Acquire; pairs with the producer's Release store of the claim's first
            // header in `write_claim` / `commit_reserved`.
            mem.load_word((pos & (self.cap - 1)) as usize, Ordering::Acquire)
        } else {
            0
        };
        if raw == 0 {
            // Claimed but not marked yet, or nothing claimed: only the tail tells. (Reading the
            // tail only here keeps the contended tail line out of the per-message path.)
            let raw_tail = self.refresh_tail(ctl)?;
            return Ok(if pos >= self.cached_tail { Look::End { raw_tail } } else { Look::InFlight });
        }
        let (kind, len) = record::decode(raw)?;
        if kind == Kind::Claimed {
            return Ok(Look::InFlight);
        }
        if matches!(kind, Kind::Taken | Kind::Recovering) {
            return Err(Corrupt::new(format!("MPMC marker {raw:#x} in an MPSC ring")));
        }
        let off = (pos & (self.cap - 1)) as usize;
        let rec = record::size(len as usize) as u64;
        if rec > self.cap - off as u64 {
            return Err(Corrupt::new(format!("record of {len} bytes at offset {off} runs past the ring's end")));
        }
        if pos + rec > self.head + self.cap {
            return Err(Corrupt::new(format!("record of {len} bytes runs past the consumer's window")));
        }
        Ok(Look::Record { kind, off: off + HDR, len: len as usize, next: pos + rec })
    }

    /// Zero everything consumed before `next` and give it back to the producers.
    fn release<M: RingMemory, P: Park>(&mut self, ctl: &RingCtl, mem: &M, park: &P, next: u64) {
        let mut pos = self.head;
        while pos < next {
            let off = (pos & (self.cap - 1)) as usize;
            let n = ((self.cap - off as u64).min(next - pos)) as usize;
            mem.zero(off, n);
            pos += n as u64;
        }
        self.head = next;
        // SYNC(head-release): Release; pairs with the producers' Acquire loads of the head: they
        // see our reads finished and the bytes zeroed before they claim the space again.
        ctl.consumer.head.store(next, Ordering::Release);
        wait::wake_counted(park, &ctl.wake.tx_seq, &ctl.wake.tx_waiters);
    }

    fn count(&self, ctl: &RingCtl, msgs: u64, bytes: u64) {
        // Consumer-owned counters: load + store, wrapping (a peer may have left any value there).
        let c = &ctl.consumer;
        c.recv_msgs.store(c.recv_msgs.load(Ordering::Relaxed).wrapping_add(msgs), Ordering::Relaxed);
        c.recv_bytes.store(c.recv_bytes.load(Ordering::Relaxed).wrapping_add(bytes), Ordering::Relaxed);
    }

    /// Done with a `Next::Whole` message.
    pub fn finish_whole<M: RingMemory, P: Park>(&mut self, ctl: &RingCtl, mem: &M, park: &P, next: u64, len: usize) {
        self.release(ctl, mem, park, next);
        self.count(ctl, 1, len as u64);
    }

    /// Done with a batch from `next_batch`.
    pub fn finish_batch<M: RingMemory, P: Park>(&mut self, ctl: &RingCtl, mem: &M, park: &P, plan: &BatchPlan) {
        if plan.next > self.head {
            self.release(ctl, mem, park, plan.next);
            let bytes = plan.items.iter().map(|&(_, l)| l as u64).sum();
            self.count(ctl, plan.items.len() as u64, bytes);
        }
    }

    /// Handle a fragment record at the head; true when it completed a message.
    #[allow(clippy::too_many_arguments)]
    fn fragment<M: RingMemory, P: Park>(
        &mut self,
        ctl: &RingCtl,
        mem: &M,
        park: &P,
        kind: Kind,
        off: usize,
        len: usize,
        next: u64,
    ) -> Result<bool, Corrupt> {
        if len < 8 {
            return Err(Corrupt::new(format!("{kind:?} record of {len} bytes has no room for its prefix")));
        }
        let word = mem.read_word(off);
        let body = (off + 8, len - 8);
        let mut done = false;
        match kind {
            Kind::First => {
                if word > self.max_message || word <= body.1 as u64 {
                    return Err(Corrupt::new(format!("fragmented message announces {word} bytes")));
                }
                if self.partials.len() >= MAX_PARTIALS || self.partials.contains_key(&self.head) {
                    return Err(Corrupt::new("too many fragmented messages in assembly"));
                }
                // Grow with the data rather than trusting a (possibly hostile) announced size.
                let mut buf = Vec::with_capacity((word as usize).min(16 << 20));
                append(mem, &mut buf, body, word)?;
                self.partials.insert(self.head, Partial { total: word, buf });
            }
            Kind::Middle | Kind::Last => {
                let p = self
                    .partials
                    .get_mut(&word)
                    .ok_or_else(|| Corrupt::new(format!("a fragment names unknown message {word}")))?;
                append(mem, &mut p.buf, body, p.total)?;
                if kind == Kind::Last {
                    let p = self.partials.remove(&word).expect("just found");
                    if p.buf.len() as u64 != p.total {
                        return Err(Corrupt::new("LAST fragment ends a message short of its length"));
                    }
                    self.assembled = p.buf;
                    self.count(ctl, 1, p.total);
                    done = true;
                }
            }
            Kind::Abort => {
                if self.partials.remove(&word).is_none() {
                    return Err(Corrupt::new(format!("ABORT names unknown message {word}")));
                }
            }
            _ => unreachable!("only fragment kinds reach here"),
        }
        self.release(ctl, mem, park, next);
        Ok(done)
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
                self.discard_backlog(ctl, mem, park, state, deadline)?;
                return Err(PopError::Closed);
            }
            match self.look(ctl, mem, self.head)? {
                Look::Record { kind: Kind::Whole, off, len, next } => {
                    if len as u64 > self.max_message {
                        return Err(Corrupt::new(format!("a {len}-byte record exceeds max_message")).into());
                    }
                    return Ok(Next::Whole { off, len, next });
                }
                Look::Record { kind: Kind::Pad, next, .. } => self.release(ctl, mem, park, next),
                Look::Record { kind, off, len, next } => {
                    if self.fragment(ctl, mem, park, kind, off, len, next)? {
                        return Ok(Next::Assembled);
                    }
                }
                Look::End { raw_tail } if raw_tail & TAIL_CLOSED != 0 => {
                    // The tail is final and everything before it consumed. Partial messages
                    // belong to sends that were refused (their senders got them back).
                    self.partials.clear();
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
                look => {
                    if matches!(look, Look::End { .. }) && state.is_closed_for_send() {
                        // DRAINING without the tail bit: a closer died half way. Finish its job.
                        lifecycle::ensure_closed_bit(ctl, state);
                        continue;
                    }
                    self.wait(ctl, mem, park, deadline, &mut spinner)?;
                }
            }
        }
    }

    /// Wait for the record at the head to be committed (or a close), until `deadline`.
    fn wait<M: RingMemory, P: Park>(
        &mut self,
        ctl: &RingCtl,
        mem: &M,
        park: &P,
        deadline: Deadline,
        spinner: &mut Spinner,
    ) -> Result<(), PopError> {
        if deadline.passed() {
            return Err(PopError::Empty);
        }
        if spinner.spin(deadline) {
            return Ok(());
        }
        let head = self.head;
        let woke = wait::sleep_counted(park, &ctl.wake.rx_seq, &ctl.wake.rx_waiters, deadline, || {
            // Still nothing to do: no record committed at the head, and not at a closed end.
            Ok::<bool, Corrupt>(match self.look(ctl, mem, head)? {
                Look::Record { .. } => false,
                Look::InFlight => true,
                Look::End { raw_tail } => raw_tail & TAIL_CLOSED == 0,
            })
        })?;
        if woke == Wake::TimedOut && deadline.passed() {
            return Err(PopError::Empty);
        }
        Ok(())
    }

    /// Up to `max` whole messages in a row, waiting until `deadline` for the first. A fragmented
    /// message comes alone, as `Err(Assembled)`-like: `Ok(None)` plus `assembled()`.
    pub fn next_batch<M: RingMemory, P: Park>(
        &mut self,
        ctl: &RingCtl,
        mem: &M,
        park: &P,
        max: usize,
        deadline: Deadline,
    ) -> Result<Option<BatchPlan>, PopError> {
        let (off, len, mut next) = match self.next(ctl, mem, park, deadline)? {
            Next::Whole { off, len, next } => (off, len, next),
            Next::Assembled => return Ok(None),
        };
        let mut plan = BatchPlan { items: Vec::with_capacity(max.min(1024)), next };
        plan.items.push((off, len));
        while plan.items.len() < max {
            match self.look(ctl, mem, next)? {
                Look::Record { kind: Kind::Whole, off, len, next: after } if len as u64 <= self.max_message => {
                    plan.items.push((off, len));
                    next = after;
                }
                Look::Record { kind: Kind::Pad, next: after, .. } => next = after,
                _ => break,
            }
        }
        // Trailing padding is released with the batch; `plan.next` covers it.
        plan.next = next;
        Ok(Some(plan))
    }

    /// CLOSING: drop everything committed between head and the final tail, counting it. Claims
    /// still in flight are waited for until `deadline` (they were accepted before the close).
    fn discard_backlog<M: RingMemory, P: Park>(
        &mut self,
        ctl: &RingCtl,
        mem: &M,
        park: &P,
        state: State,
        deadline: Deadline,
    ) -> Result<(), PopError> {
        lifecycle::ensure_closed_bit(ctl, state); // the tail is final from here on
        let (mut msgs, mut bytes) = (0u64, 0u64);
        let mut spinner = Spinner::new(self.spin);
        let result = loop {
            match self.look(ctl, mem, self.head)? {
                Look::Record { kind, off, len, next } => {
                    match kind {
                        Kind::Whole => {
                            msgs += 1;
                            bytes = bytes.wrapping_add(len as u64);
                        }
                        Kind::Last if len >= 8 => {
                            // Completes an accepted message: count all of it.
                            let id = mem.read_word(off);
                            if let Some(p) = self.partials.remove(&id) {
                                msgs += 1;
                                bytes = bytes.wrapping_add(p.buf.len() as u64 + (len - 8) as u64);
                            }
                        }
                        Kind::First if len >= 8 => {
                            self.partials.insert(self.head, Partial { total: 0, buf: Vec::new() });
                            // Only the length matters now; keep a cheap stand-in for the bytes.
                            if let Some(p) = self.partials.get_mut(&self.head) {
                                p.buf.resize(len - 8, 0);
                            }
                        }
                        Kind::Middle if len >= 8 => {
                            let id = mem.read_word(off);
                            if let Some(p) = self.partials.get_mut(&id) {
                                p.buf.resize(p.buf.len() + len - 8, 0);
                            }
                        }
                        Kind::Abort if len >= 8 => {
                            let id = mem.read_word(off);
                            self.partials.remove(&id);
                        }
                        _ => {}
                    }
                    self.release(ctl, mem, park, next);
                }
                Look::End { .. } => break Ok(true),
                Look::InFlight => match self.wait(ctl, mem, park, deadline, &mut spinner) {
                    Ok(()) => {}
                    Err(PopError::Empty) => break Ok(false),
                    Err(e) => break Err(e),
                },
            }
        };
        if msgs != 0 || bytes != 0 {
            ctl.lifecycle.discarded_msgs.fetch_add(msgs, Ordering::Relaxed);
            ctl.lifecycle.discarded_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        if result? {
            // Everything up to the final tail is consumed and counted.
            self.partials.clear();
            lifecycle::advance(ctl, State::Closed)?;
        }
        Ok(())
    }

    /// Skip the claim at the head, whose producer is known to be dead (it claimed space and
    /// died before committing). Returns the bytes skipped (0: nothing was stuck at the head).
    ///
    /// The claim is found by its CLAIMED marker, which carries its extent. A producer that died
    /// between its claim and the marker (a window of a few instructions) left zeroes: then the
    /// claim ends at the next non-zero word before the tail; if a second producer is inside that
    /// same window at this moment, its claim is skipped too (Agrona's unblock has the same
    /// limit), which is why the caller must be sure a producer died.
    pub fn unblock<M: RingMemory, P: Park>(&mut self, ctl: &RingCtl, mem: &M, park: &P) -> Result<u64, Corrupt> {
        self.unblock_if(ctl, mem, park, |_| true)
    }

    /// `unblock`, but only a claim whose CLAIMED marker names a claimer (peer slot + 1) for
    /// which `gone` says true; a claim not marked yet, or marked by an unknown claimer, is left
    /// alone (0 is returned). Safe while other producers live: it skips only the dead one's.
    pub fn unblock_owned<M: RingMemory, P: Park>(
        &mut self,
        ctl: &RingCtl,
        mem: &M,
        park: &P,
        gone: impl Fn(u16) -> bool,
    ) -> Result<u64, Corrupt> {
        self.unblock_if(ctl, mem, park, |raw| {
            let owner = record::claim_owner(raw);
            raw != 0 && owner != 0 && gone(owner)
        })
    }

    fn unblock_if<M: RingMemory, P: Park>(
        &mut self,
        ctl: &RingCtl,
        mem: &M,
        park: &P,
        skip: impl Fn(u64) -> bool,
    ) -> Result<u64, Corrupt> {
        let _ = park;
        self.refresh_tail(ctl)?;
        let head = self.head;
        if self.cached_tail == head {
            return Ok(0);
        }
        let off = (head & (self.cap - 1)) as usize;
        let raw = mem.load_word(off, Ordering::Acquire);
        if !skip(raw) {
            return Ok(0);
        }
        let extent = if raw == 0 {
            self.zeroes_from(mem, head + 8, self.cached_tail) - head
        } else {
            match record::decode(raw)? {
                (Kind::Claimed, len) => len as u64,
                _ => return Ok(0), // committed: nothing is stuck
            }
        };
        self.pad_claim(ctl, mem, head, extent)
    }

    /// `unblock` for a claim at the head that is not marked yet (zeroes), while senders may be
    /// alive: `live_claims` gives the CLAIM intents of the live senders (None: cannot tell, then
    /// nothing is skipped). If none covers the head, whoever claimed there was killed between
    /// its claim CAS and its marker; the claim ends at the next non-zero word, or where a live
    /// sender's intent starts, or at the tail, whichever comes first (a live claim not marked
    /// yet is zeroes too, but its intent says where it starts). Returns the bytes skipped.
    pub fn unblock_unmarked<M: RingMemory>(
        &mut self,
        ctl: &RingCtl,
        mem: &M,
        live_claims: impl FnOnce() -> Option<Vec<u64>>,
    ) -> Result<u64, Corrupt> {
        // SYNC(claim): the tail (Acquire) first: every claim before it has published its intent.
        self.refresh_tail(ctl)?;
        let head = self.head;
        let off = (head & (self.cap - 1)) as usize;
        if self.cached_tail == head || mem.load_word(off, Ordering::Acquire) != 0 {
            return Ok(0);
        }
        let Some(live) = live_claims() else { return Ok(0) };
        let starts = live.iter().map(|&w| intent::pos(w));
        if starts.clone().any(|p| p <= head)
            // SYNC(intent): a sender that cleared its intent has stored its marker.
            || mem.load_word(off, Ordering::Acquire) != 0
        {
            return Ok(0);
        }
        let bound = starts.filter(|&p| p > head).fold(self.cached_tail, u64::min);
        let extent = self.zeroes_from(mem, head + 8, bound) - head;
        self.pad_claim(ctl, mem, head, extent)
    }

    /// The first position from `pos` (8-aligned) up to `end` whose word is not zero, or `end`.
    fn zeroes_from<M: RingMemory>(&self, mem: &M, mut pos: u64, end: u64) -> u64 {
        while pos < end && mem.load_word((pos & (self.cap - 1)) as usize, Ordering::Acquire) == 0 {
            pos += 8;
        }
        pos.min(end)
    }

    /// Turn the `extent` bytes of a dead producer's claim at the head into padding: one record
    /// up to the ring's end, one for the rest. Returns `extent`.
    fn pad_claim<M: RingMemory>(&mut self, ctl: &RingCtl, mem: &M, head: u64, extent: u64) -> Result<u64, Corrupt> {
        let off = (head & (self.cap - 1)) as usize;
        if extent == 0 || extent % 8 != 0 || head + extent > self.cached_tail {
            return Err(Corrupt::new(format!("claim of {extent} bytes at {head} is impossible")));
        }
        let to_end = self.cap - off as u64;
        let first_len = extent.min(to_end);
        if extent > to_end {
            mem.store_word(0, record::encode(Kind::Pad, (extent - to_end - HDR as u64) as u32), Ordering::Relaxed);
        }
        mem.store_word(off, record::encode(Kind::Pad, (first_len - HDR as u64) as u32), Ordering::Release);
        ctl.lifecycle.abandoned_claims.fetch_add(1, Ordering::Relaxed);
        Ok(extent)
    }
}

/// Append `body` (offset, length) of the ring to `buf`, refusing to grow past `total`.
fn append<M: RingMemory>(mem: &M, buf: &mut Vec<u8>, body: (usize, usize), total: u64) -> Result<(), Corrupt> {
    if (buf.len() + body.1) as u64 > total {
        return Err(Corrupt::new(format!("fragments add up to more than the announced {total} bytes")));
    }
    let at = buf.len();
    buf.resize(at + body.1, 0);
    mem.read_bytes(body.0, &mut buf[at..]);
    Ok(())
}
