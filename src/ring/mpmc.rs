//! The multi-producer multi-consumer ring: Vyukov's bounded queue with per-cell sequence words,
//! extended to messages that take several consecutive cells (see DESIGN.md, "MPMC ring").
//!
//! | word                       | written by                          | how                          |
//! |----------------------------|-------------------------------------|------------------------------|
//! | tail position              | producers                           | CAS (the claim)              |
//! | TAIL_CLOSED                | any closer                          | fetch_or, never cleared      |
//! | head position              | consumers                           | CAS (the take)               |
//! | seq of a unit's first cell | its producer: `pos + 1` (Release) = committed | store              |
//! | seq of every cell of a unit| its consumer: `pos + cap` (Release) = free for the next lap | store |
//! | cell bytes                 | the producer that claimed them, then read by the consumer that took them | copy |
//!
//! Positions count bytes and are multiples of the cell size; cell `i` of lap `l` has position
//! `p = l * cap + i * cell`. Its sequence word reads `p` when the cell is free for position `p`,
//! `p + 1` when a unit starting there is committed, and `p + cap` once consumed (free for the
//! next lap). A *unit* is one message (header word + payload, `ceil((8 + len) / cell)` cells) or
//! a padding unit that fills the cells up to the ring's end when a message would not fit before
//! it; units never wrap.

use crate::error::Corrupt;
use crate::futex::Wake;
use crate::layout::{POS_MASK, RingCtl, TAIL_CLOSED, TAIL_RX_WAITING};
use crate::lifecycle::{self, State};
use crate::ring::memory::RingMemory;
use crate::ring::record::{self, HDR, Kind};
pub use crate::ring::spsc::{PopError, PushError};
use crate::sync::{AtomicU64, Ordering};
use crate::wait::{self, Deadline, Park, Spinner};
use std::time::Duration;

/// Largest message for a ring of `cap` bytes cut into `cell`-byte cells: half the cells (so a
/// message plus the padding before it always fits in an empty ring) minus the header.
pub fn max_message(cap: usize, cell: usize) -> usize {
    (cap / cell / 2) * cell - HDR
}

/// The geometry both sides share.
#[derive(Clone, Copy, Debug)]
pub struct Cells {
    cap: u64,
    cell: u64,
}

impl Cells {
    /// Check a (capacity, cell size) pair.
    pub fn new(cap: usize, cell: usize) -> Result<Cells, Corrupt> {
        if !cap.is_power_of_two() || !cell.is_power_of_two() || cell < 16 || cell * 2 > cap {
            return Err(Corrupt::new(format!("MPMC ring of {cap} bytes with {cell}-byte cells is impossible")));
        }
        Ok(Cells { cap: cap as u64, cell: cell as u64 })
    }

    fn index(&self, pos: u64) -> usize {
        ((pos & (self.cap - 1)) / self.cell) as usize
    }

    fn off(&self, pos: u64) -> usize {
        (pos & (self.cap - 1)) as usize
    }

    /// Bytes a message of `len` bytes occupies.
    fn unit(&self, len: usize) -> u64 {
        ((HDR + len) as u64).div_ceil(self.cell) * self.cell
    }

    /// Place a message of `len` bytes at `pos`: (padding bytes before it, its unit size).
    fn place(&self, pos: u64, len: usize) -> (u64, u64) {
        let unit = self.unit(len);
        let to_end = self.cap - (pos & (self.cap - 1));
        if unit > to_end { (to_end, unit) } else { (0, unit) }
    }
}

/// What a producer claimed: `[start, start + extent)`, holding `n` messages (and padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub start: u64,
    pub n: usize,
    pub extent: u64,
}

/// A claimed, uncommitted message unit (zero-copy send).
#[derive(Clone, Copy, Debug)]
pub struct Reserved {
    claim: Claim,
    /// Position of the message unit (after padding, if any).
    pos: u64,
    /// Ring offset of the payload.
    pub off: usize,
    /// Payload bytes reserved.
    pub len: usize,
}

/// One message taken by a consumer: its payload in the ring, and the unit to release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taken {
    /// Ring offset and length of the payload.
    pub off: usize,
    pub len: usize,
}

/// Units a consumer took with one head CAS: `[start, end)`, releasing all of them at once.
#[derive(Debug, Default)]
pub struct Take {
    pub start: u64,
    pub end: u64,
    pub msgs: Vec<Taken>,
}

/// Sent/received counters kept per attachment and added to the segment now and then: the
/// segment's counters share a line with a word every producer (or consumer) CASes.
#[derive(Debug, Default)]
pub struct Counts {
    msgs: AtomicU64,
    bytes: AtomicU64,
}

const COUNT_FLUSH: u64 = 256;

impl Counts {
    /// A fresh, empty counter.
    pub fn new() -> Counts {
        Counts { msgs: AtomicU64::new(0), bytes: AtomicU64::new(0) }
    }

    fn add(&self, msgs: u64, bytes: u64, to: (&AtomicU64, &AtomicU64)) {
        if msgs == 0 {
            return;
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if self.msgs.fetch_add(msgs, Ordering::Relaxed) + msgs >= COUNT_FLUSH {
            self.flush(to);
        }
    }

    /// Add what was counted here to the segment's counters.
    pub fn flush(&self, to: (&AtomicU64, &AtomicU64)) {
        let m = self.msgs.swap(0, Ordering::Relaxed);
        let b = self.bytes.swap(0, Ordering::Relaxed);
        if m != 0 || b != 0 {
            to.0.fetch_add(m, Ordering::Relaxed);
            to.1.fetch_add(b, Ordering::Relaxed);
        }
    }
}

fn sent(ctl: &RingCtl) -> (&AtomicU64, &AtomicU64) {
    (&ctl.producer.sent_msgs, &ctl.producer.sent_bytes)
}

fn received(ctl: &RingCtl) -> (&AtomicU64, &AtomicU64) {
    (&ctl.consumer.recv_msgs, &ctl.consumer.recv_bytes)
}

/// Either side's view of the ring: geometry, spin budget, counters. Shared through `&self` by
/// every thread of an attachment.
pub struct Ring {
    cells: Cells,
    max_message: usize,
    spin: Duration,
    /// Counted by this attachment, not yet in the segment.
    pub counts: Counts,
}

/// Nothing committed at the head; the tail word as read.
struct Empty {
    raw_tail: u64,
}

impl Ring {
    /// The ring of a segment: `cap` bytes of `cell`-byte cells, messages up to `max_message`.
    pub fn new(cap: usize, cell: usize, max_message: u64, spin: Duration) -> Result<Ring, Corrupt> {
        let cells = Cells::new(cap, cell)?;
        let max = (max_message as usize).min(self::max_message(cap, cell));
        Ok(Ring { cells, max_message: max, spin, counts: Counts::new() })
    }

    /// Largest message this ring carries.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    fn seq<'a>(&self, seqs: &'a [AtomicU64], pos: u64) -> &'a AtomicU64 {
        &seqs[self.cells.index(pos)]
    }

    // ---- producer side -------------------------------------------------------------------

    /// Claim room for the longest prefix of `lens` that fits now (at least one message), or
    /// `Ok(None)` if not even the first fits.
    fn try_claim(&self, ctl: &RingCtl, seqs: &[AtomicU64], lens: &[usize]) -> Result<Option<Claim>, PushError> {
        let c = self.cells;
        let mut raw = ctl.producer.tail.load(Ordering::Acquire);
        let mut stale = 0u32;
        'retry: loop {
            if raw & TAIL_CLOSED != 0 {
                return Err(PushError::Closed);
            }
            if raw & TAIL_RX_WAITING != 0 || (raw & POS_MASK) % c.cell != 0 {
                return Err(Corrupt::new(format!("MPMC tail word {raw:#x} is impossible")).into());
            }
            let start = raw & POS_MASK;
            let (mut pos, mut n) = (start, 0usize);
            for &len in lens {
                let (pad, unit) = c.place(pos, len);
                // Every cell of the padding and the unit must be free for this lap.
                let mut p = pos;
                while p < pos + pad + unit {
                    // SYNC(cell-release): Acquire; pairs with the consumer's Release store of
                    // `p` (+cap of the previous lap) in `release`: its reads of this cell are done.
                    let s = self.seq(seqs, p).load(Ordering::Acquire);
                    if s != p {
                        if n > 0 {
                            break; // a prefix fits; claim that
                        }
                        if s < p {
                            return Ok(None); // still holds an earlier lap: full
                        }
                        // Another producer claimed past our tail: reload it.
                        let fresh = ctl.producer.tail.load(Ordering::Acquire);
                        stale = if fresh == raw { stale + 1 } else { 0 };
                        if stale > 1000 {
                            return Err(Corrupt::new(format!("cell sequence {s} is ahead of tail {start}")).into());
                        }
                        raw = fresh;
                        continue 'retry;
                    }
                    p += c.cell;
                }
                if p < pos + pad + unit {
                    break;
                }
                pos += pad + unit;
                n += 1;
            }
            if n == 0 {
                return Ok(None);
            }
            // SYNC(claim): AcqRel CAS on the tail word; fails if another producer claimed first
            // or a closer set TAIL_CLOSED: claims and closes are totally ordered (SYNC(closed-bit)).
            match ctl.producer.tail.compare_exchange(raw, raw + (pos - start), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(Some(Claim { start, n, extent: pos - start })),
                Err(actual) => raw = actual,
            }
        }
    }

    /// Write the messages of a won claim and commit each unit.
    fn write_claim<M: RingMemory, P: Park>(
        &self,
        ctl: &RingCtl,
        mem: &M,
        seqs: &[AtomicU64],
        park: &P,
        claim: Claim,
        msgs: &[&[u8]],
    ) {
        let c = self.cells;
        let mut pos = claim.start;
        let mut bytes = 0u64;
        for m in &msgs[..claim.n] {
            let (pad, unit) = c.place(pos, m.len());
            if pad != 0 {
                self.commit_unit(mem, seqs, pos, record::encode(Kind::Pad, (pad - HDR as u64) as u32));
                pos += pad;
            }
            mem.write_bytes(c.off(pos) + HDR, m);
            self.commit_unit(mem, seqs, pos, record::encode(Kind::Whole, m.len() as u32));
            pos += unit;
            bytes += m.len() as u64;
        }
        debug_assert_eq!(pos, claim.start + claim.extent);
        wait::wake_counted(park, &ctl.wake.rx_seq, &ctl.wake.rx_waiters);
        self.counts.add(claim.n as u64, bytes, sent(ctl));
    }

    /// Write a unit's header and publish it.
    fn commit_unit<M: RingMemory>(&self, mem: &M, seqs: &[AtomicU64], pos: u64, header: u64) {
        mem.store_word(self.cells.off(pos), header, Ordering::Relaxed);
        // SYNC(cell-commit): Release; pairs with the consumer's Acquire load of the first cell's
        // sequence in `look`: who sees `pos + 1` sees the header and the payload.
        self.seq(seqs, pos).store(pos + 1, Ordering::Release);
    }

    fn wait_for_room<P: Park>(
        &self,
        ctl: &RingCtl,
        seqs: &[AtomicU64],
        park: &P,
        len: usize,
        deadline: Deadline,
        spinner: &mut Spinner,
    ) -> Result<(), PushError> {
        let room = || -> Result<bool, Corrupt> {
            let raw = ctl.producer.tail.load(Ordering::Acquire);
            if raw & TAIL_CLOSED != 0 {
                return Ok(true);
            }
            let pos = raw & POS_MASK;
            let (pad, unit) = self.cells.place(pos, len);
            let last = pos + pad + unit - self.cells.cell;
            // The cells are freed in order of their units' positions only roughly (consumers
            // finish in any order): room means the first and the last cell are free.
            Ok(self.seq(seqs, pos).load(Ordering::Acquire) >= pos
                && self.seq(seqs, last).load(Ordering::Acquire) >= last)
        };
        if ctl.producer.tail.load(Ordering::Acquire) & TAIL_CLOSED != 0 {
            return Err(PushError::Closed);
        }
        let state = lifecycle::load(&ctl.lifecycle.state)?;
        if state.is_closed_for_send() {
            lifecycle::ensure_closed_bit(ctl, state);
            return Err(PushError::Closed);
        }
        if deadline.passed() {
            return Err(PushError::Full);
        }
        if spinner.spin(deadline) {
            return Ok(());
        }
        self.counts.flush(sent(ctl));
        let woke =
            wait::sleep_counted(park, &ctl.wake.tx_seq, &ctl.wake.tx_waiters, deadline, || room().map(|ok| !ok))?;
        if woke == Wake::TimedOut && deadline.passed() {
            return Err(PushError::Full);
        }
        Ok(())
    }

    /// Send a prefix of `msgs` (at least one, each at most `max_message()`), waiting for room
    /// until `deadline`. Returns how many were sent.
    pub fn send<M: RingMemory, P: Park>(
        &self,
        ctl: &RingCtl,
        mem: &M,
        seqs: &[AtomicU64],
        park: &P,
        msgs: &[&[u8]],
        deadline: Deadline,
    ) -> Result<usize, PushError> {
        debug_assert!(!msgs.is_empty() && msgs.iter().all(|m| m.len() <= self.max_message));
        let one;
        let many: Vec<usize>;
        let lens: &[usize] = if msgs.len() == 1 {
            one = [msgs[0].len()];
            &one
        } else {
            many = msgs.iter().map(|m| m.len()).collect();
            &many
        };
        let mut spinner = Spinner::new(self.spin);
        loop {
            if let Some(claim) = self.try_claim(ctl, seqs, lens)? {
                self.write_claim(ctl, mem, seqs, park, claim, msgs);
                return Ok(claim.n);
            }
            self.wait_for_room(ctl, seqs, park, lens[0], deadline, &mut spinner)?;
        }
    }

    /// Claim one message unit of `len` bytes for zero-copy writing (padding before it, if any,
    /// is committed at once). Commit with `commit_reserved`.
    pub fn reserve<M: RingMemory, P: Park>(
        &self,
        ctl: &RingCtl,
        mem: &M,
        seqs: &[AtomicU64],
        park: &P,
        len: usize,
        deadline: Deadline,
    ) -> Result<Reserved, PushError> {
        let mut spinner = Spinner::new(self.spin);
        loop {
            if let Some(claim) = self.try_claim(ctl, seqs, &[len])? {
                let (pad, _) = self.cells.place(claim.start, len);
                if pad != 0 {
                    self.commit_unit(mem, seqs, claim.start, record::encode(Kind::Pad, (pad - HDR as u64) as u32));
                    wait::wake_counted(park, &ctl.wake.rx_seq, &ctl.wake.rx_waiters);
                }
                let pos = claim.start + pad;
                return Ok(Reserved { claim, pos, off: self.cells.off(pos) + HDR, len });
            }
            self.wait_for_room(ctl, seqs, park, len, deadline, &mut spinner)?;
        }
    }

    /// Commit a reservation as a message of `used <= r.len` bytes, or as padding (`None`).
    pub fn commit_reserved<M: RingMemory, P: Park>(
        &self,
        ctl: &RingCtl,
        mem: &M,
        seqs: &[AtomicU64],
        park: &P,
        r: Reserved,
        used: Option<usize>,
    ) {
        let _ = r.claim;
        let header = match used {
            Some(u) => record::encode(Kind::Whole, u.min(r.len) as u32),
            None => record::encode(Kind::Pad, (self.cells.unit(r.len) - HDR as u64) as u32),
        };
        self.commit_unit(mem, seqs, r.pos, header);
        wait::wake_counted(park, &ctl.wake.rx_seq, &ctl.wake.rx_waiters);
        if let Some(u) = used {
            self.counts.add(1, u.min(r.len) as u64, sent(ctl));
        }
    }

    // ---- consumer side -------------------------------------------------------------------

    /// Decode and check the header of a committed unit at `pos`: (kind, payload length, unit
    /// bytes).
    fn unit_at<M: RingMemory>(&self, mem: &M, pos: u64) -> Result<(Kind, usize, u64), Corrupt> {
        let c = self.cells;
        // Acquire: a consumer that re-reads the head after this load (to tell a stale header from
        // a corrupt one, see `try_take`) must not have that read moved before this one.
        let (kind, len) = record::decode(mem.load_word(c.off(pos), Ordering::Acquire))?;
        let to_end = c.cap - (pos & (c.cap - 1));
        let unit = match kind {
            Kind::Whole if len as usize <= self.max_message => c.unit(len as usize),
            Kind::Pad => HDR as u64 + len as u64,
            _ => return Err(Corrupt::new(format!("MPMC unit at {pos}: {kind:?} of {len} bytes"))),
        };
        if unit == 0 || unit % c.cell != 0 || unit > to_end {
            return Err(Corrupt::new(format!("MPMC unit of {unit} bytes at {pos} does not fit the ring")));
        }
        Ok((kind, len as usize, unit))
    }

    /// Take up to `max` messages (padding units are taken along and skipped) with one head CAS.
    fn try_take<M: RingMemory>(
        &self,
        ctl: &RingCtl,
        mem: &M,
        seqs: &[AtomicU64],
        max: usize,
    ) -> Result<Result<Take, Empty>, Corrupt> {
        let mut head = ctl.consumer.head.load(Ordering::Acquire);
        loop {
            if head > POS_MASK || head % self.cells.cell != 0 {
                return Err(Corrupt::new(format!("MPMC head {head:#x} is impossible")));
            }
            // Walk committed units from the head (reading only atomics: nothing is ours yet).
            let mut pos = head;
            let mut msgs = 0usize;
            let mut ahead = false;
            let mut stale_head = None;
            while msgs < max && pos - head < self.cells.cap {
                // SYNC(cell-commit): Acquire; pairs with the producer's Release in `commit_unit`.
                let s = self.seq(seqs, pos).load(Ordering::Acquire);
                if s != pos + 1 {
                    ahead = s > pos + 1 && pos == head;
                    break;
                }
                let (kind, _, unit) = match self.unit_at(mem, pos) {
                    Ok(u) => u,
                    Err(e) => {
                        // Before our head CAS nothing is ours: another consumer may have taken
                        // and released this unit, and a producer reused the cells, since we
                        // read the sequence word (found by the multi-process tests). Only a
                        // header read while the head stood still is evidence of corruption.
                        let fresh = ctl.consumer.head.load(Ordering::Acquire);
                        if fresh == head {
                            return Err(e);
                        }
                        stale_head = Some(fresh);
                        break;
                    }
                };
                pos += unit;
                if kind == Kind::Whole {
                    msgs += 1;
                }
            }
            if let Some(fresh) = stale_head {
                head = fresh;
                continue;
            }
            if ahead {
                // Another consumer took this unit and the cell moved on: our head is stale.
                head = ctl.consumer.head.load(Ordering::Acquire);
                continue;
            }
            if pos == head {
                // SYNC(claim): Acquire, to see the closed bit no earlier than the claims before it.
                let raw_tail = ctl.producer.tail.load(Ordering::Acquire);
                let fresh = ctl.consumer.head.load(Ordering::Acquire);
                if fresh != head {
                    head = fresh;
                    continue;
                }
                return Ok(Err(Empty { raw_tail }));
            }
            // SYNC(take): AcqRel CAS on the head: exactly one consumer takes these units.
            match ctl.consumer.head.compare_exchange(head, pos, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    // The units are ours now and cannot change: read them again and validate.
                    let mut take = Take { start: head, end: pos, msgs: Vec::with_capacity(msgs) };
                    let mut p = head;
                    while p < pos {
                        let (kind, len, unit) = self.unit_at(mem, p)?;
                        if kind == Kind::Whole {
                            take.msgs.push(Taken { off: self.cells.off(p) + HDR, len });
                        }
                        p += unit;
                    }
                    if p != pos {
                        return Err(Corrupt::new("MPMC units changed under a consumer"));
                    }
                    return Ok(Ok(take));
                }
                Err(actual) => head = actual,
            }
        }
    }

    /// Give the cells of a take back to the producers, counting its messages as received.
    pub fn release<P: Park>(&self, ctl: &RingCtl, seqs: &[AtomicU64], park: &P, take: &Take) {
        self.free(ctl, seqs, park, take);
        let bytes = take.msgs.iter().map(|m| m.len as u64).sum();
        self.counts.add(take.msgs.len() as u64, bytes, received(ctl));
    }

    fn free<P: Park>(&self, ctl: &RingCtl, seqs: &[AtomicU64], park: &P, take: &Take) {
        let mut p = take.start;
        while p < take.end {
            // SYNC(cell-release): Release; pairs with the producers' Acquire loads in
            // `try_claim`: our reads of this cell are done before it is reused.
            self.seq(seqs, p).store(p + self.cells.cap, Ordering::Release);
            p += self.cells.cell;
        }
        wait::wake_counted(park, &ctl.wake.tx_seq, &ctl.wake.tx_waiters);
    }

    /// Take up to `max` messages (at least one), waiting until `deadline`. An empty take (only
    /// padding) is released and the wait goes on.
    pub fn take<M: RingMemory, P: Park>(
        &self,
        ctl: &RingCtl,
        mem: &M,
        seqs: &[AtomicU64],
        park: &P,
        max: usize,
        deadline: Deadline,
    ) -> Result<Take, PopError> {
        let mut spinner = Spinner::new(self.spin);
        loop {
            let state = lifecycle::load(&ctl.lifecycle.state)?;
            if state >= State::Closing {
                self.discard(ctl, mem, seqs, park, state, deadline)?;
                return Err(PopError::Closed);
            }
            match self.try_take(ctl, mem, seqs, max.max(1))? {
                Ok(take) if take.msgs.is_empty() => self.free(ctl, seqs, park, &take),
                Ok(take) => return Ok(take),
                Err(Empty { raw_tail }) => {
                    let head = ctl.consumer.head.load(Ordering::Acquire);
                    if raw_tail & TAIL_CLOSED != 0 && raw_tail & POS_MASK == head {
                        // The tail is final and every unit before it was taken.
                        if lifecycle::load(&ctl.lifecycle.state)? == State::Active {
                            return Err(Corrupt::new("tail marked closed while the state is ACTIVE").into());
                        }
                        if lifecycle::load(&ctl.lifecycle.state)? >= State::Closing {
                            continue;
                        }
                        lifecycle::advance(ctl, State::Closed)?;
                        return Err(PopError::Closed);
                    }
                    if raw_tail & TAIL_CLOSED == 0 && state.is_closed_for_send() {
                        lifecycle::ensure_closed_bit(ctl, state); // a closer died half way
                        continue;
                    }
                    if raw_tail & TAIL_CLOSED != 0
                        && ctl.lifecycle.senders.load(Ordering::Acquire) == 0
                        && self.pad_abandoned(ctl, mem, seqs, park, head)
                    {
                        continue;
                    }
                    self.wait(ctl, seqs, park, deadline, &mut spinner)?;
                }
            }
        }
    }

    /// The channel is closed for sending (no claim can start) and no sender is attached (every
    /// producer has committed what it claimed, or died and was reaped): a cell at the head that
    /// is still uncommitted was claimed by a producer that died. Commit it as a one-cell PAD so
    /// that the consumers move on (cell by cell through the dead claim). Any consumer may do it,
    /// and several may race: they write the same header, and one CAS of the sequence word wins;
    /// a late header write lands on a cell no producer will ever use again (closed for sending).
    /// Returns whether the cell is committed now.
    fn pad_abandoned<M: RingMemory, P: Park>(
        &self,
        ctl: &RingCtl,
        mem: &M,
        seqs: &[AtomicU64],
        park: &P,
        head: u64,
    ) -> bool {
        let seq = self.seq(seqs, head);
        if seq.load(Ordering::Acquire) != head {
            return false;
        }
        mem.store_word(
            self.cells.off(head),
            record::encode(Kind::Pad, (self.cells.cell - HDR as u64) as u32),
            Ordering::Relaxed,
        );
        // SYNC(cell-commit): Release, as in `commit_unit`: who sees `head + 1` sees the header.
        if seq.compare_exchange(head, head + 1, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            ctl.lifecycle.abandoned_claims.fetch_add(1, Ordering::Relaxed);
            wait::wake_counted(park, &ctl.wake.rx_seq, &ctl.wake.rx_waiters);
        }
        true
    }

    fn wait<P: Park>(
        &self,
        ctl: &RingCtl,
        seqs: &[AtomicU64],
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
        self.counts.flush(received(ctl));
        let woke = wait::sleep_counted(park, &ctl.wake.rx_seq, &ctl.wake.rx_waiters, deadline, || {
            let head = ctl.consumer.head.load(Ordering::Acquire);
            // `head + 1`: committed; beyond: another consumer took this unit after we read the
            // head (found by loom: sleeping then is a lost wake-up, since taking a unit wakes
            // nobody). Only a cell still waiting for its commit is worth sleeping on.
            let uncommitted = self.seq(seqs, head).load(Ordering::Acquire) <= head;
            let raw_tail = ctl.producer.tail.load(Ordering::Acquire);
            let at_end = raw_tail & TAIL_CLOSED != 0 && raw_tail & POS_MASK == head;
            // Closed for sending with no sender left: an uncommitted head cell is a dead
            // producer's, and ours to pad (`pad_abandoned`), not to wait for (found by loom).
            let abandoned = raw_tail & TAIL_CLOSED != 0 && ctl.lifecycle.senders.load(Ordering::Acquire) == 0;
            Ok::<bool, Corrupt>(uncommitted && !at_end && !abandoned)
        })?;
        if woke == Wake::TimedOut && deadline.passed() {
            return Err(PopError::Empty);
        }
        Ok(())
    }

    /// CLOSING: take and count everything committed up to the final tail; claims in flight
    /// (accepted before the close) are waited for until `deadline`. Then CLOSED.
    fn discard<M: RingMemory, P: Park>(
        &self,
        ctl: &RingCtl,
        mem: &M,
        seqs: &[AtomicU64],
        park: &P,
        state: State,
        deadline: Deadline,
    ) -> Result<(), PopError> {
        lifecycle::ensure_closed_bit(ctl, state);
        let mut spinner = Spinner::new(self.spin);
        loop {
            match self.try_take(ctl, mem, seqs, usize::MAX)? {
                Ok(take) => {
                    let (m, b) = (take.msgs.len() as u64, take.msgs.iter().map(|t| t.len as u64).sum::<u64>());
                    self.free(ctl, seqs, park, &take);
                    if m != 0 {
                        ctl.lifecycle.discarded_msgs.fetch_add(m, Ordering::Relaxed);
                        ctl.lifecycle.discarded_bytes.fetch_add(b, Ordering::Relaxed);
                    }
                }
                Err(Empty { raw_tail }) => {
                    let head = ctl.consumer.head.load(Ordering::Acquire);
                    if raw_tail & POS_MASK == head {
                        lifecycle::advance(ctl, State::Closed)?;
                        return Ok(());
                    }
                    match self.wait(ctl, seqs, park, deadline, &mut spinner) {
                        Ok(()) => {}
                        Err(PopError::Empty) => return Ok(()), // in-flight claims: left for later
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
}
