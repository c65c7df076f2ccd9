//! The multi-producer multi-consumer ring: Vyukov's bounded queue with per-cell sequence words,
//! extended to messages that take several consecutive cells (see DESIGN.md, "MPMC ring").
//!
//! | word                       | written by                          | how                          |
//! |----------------------------|-------------------------------------|------------------------------|
//! | tail position              | producers                           | CAS (the claim)              |
//! | TAIL_CLOSED                | any closer                          | fetch_or, never cleared      |
//! | head position              | consumers                           | CAS (the take)               |
//! | seq of a unit's first cell | its producer: `pos + 1` (Release) = committed | store              |
//! | seq of every cell of a unit| its consumer (or a reclaimer): `pos + cap` (Release) = free for the next lap | store |
//! | cell bytes                 | the producer that claimed them, then read by the consumer that took them | copy |
//! | a unit's header word       | its producer: CLAIMED marker, then the header at commit (Release); its consumer: TAKEN marker after the take (Release) | store |
//! | first word of every cell   | whoever frees it: 0 (the first cell's last, Release) | store |
//! | seq of a dead claim's first cell | a consumer that found its claimer gone: `pos + 2` (ABANDONED), or `pos + 1` if the unit was written whole | CAS |
//! | seq of a dead taker's unit | a producer reclaiming it: `pos + 3 + k` (RECLAIMING, k = dead reclaimers replaced) | CAS |
//! | our intent word            | this attachment, one thread at a time (`ring::intent`) | CAS / store |
//!
//! Positions count bytes and are multiples of the cell size; cell `i` of lap `l` has position
//! `p = l * cap + i * cell`. Its sequence word reads `p` when the cell is free for position `p`,
//! `p + 1` when a unit starting there is committed, and `p + cap` once consumed (free for the
//! next lap). A *unit* is one message (header word + payload, `ceil((8 + len) / cell)` cells) or
//! a padding unit that fills the cells up to the ring's end when a message would not fit before
//! it; units never wrap.
//!
//! Ownership markers and intent words let survivors recover from a process that died holding
//! cells (DESIGN.md 4d): a producer publishes a CLAIM intent, claims, marks every unit of its
//! claim CLAIMED (with its owner mark), and keeps the intent until its units are committed; a
//! consumer publishes a TAKE intent, takes, and marks every unit it took TAKEN. A consumer stuck
//! at a claimed head unit whose claimer is gone (its marker names a gone owner, or no live
//! intent covers it) abandons it (`pos + 2`, padding) or, if it was written whole, commits it
//! for the dead producer. A producer stuck behind a unit whose taker is gone reclaims it (one
//! CAS of its sequence word to RECLAIMING) and frees it. Freeing zeroes the first word of every
//! cell, so no stale byte can pass for a marker later.

use crate::error::Corrupt;
use crate::futex::Wake;
use crate::layout::{POS_MASK, RingCtl, TAIL_CLOSED, TAIL_RX_WAITING};
use crate::lifecycle::{self, State};
use crate::ring::intent::{self, Held};
use crate::ring::memory::RingMemory;
use crate::ring::record::{self, HDR, Kind};
pub use crate::ring::spsc::{PopError, PushError};
use crate::sync::{AtomicU64, Ordering};
use crate::wait::{self, Deadline, Park, Spinner};
use std::time::Duration;

pub use crate::ring::intent::Owners;

/// Sequence word offset of a unit abandoned by a dead producer (`pos + 2`).
const ABANDONED: u64 = 2;
/// Sequence word offsets `pos + 3 ..` of a unit's first cell while a producer frees the unit
/// for a consumer that died holding it: 3 for the first reclaimer, one more for each that
/// replaces a reclaimer that died too (at most `cell - 4` replacements).
const RECLAIMING: u64 = 3;
/// Bit 0 of a TAKEN marker's length (unit sizes are multiples of the cell): the unit held a
/// message (not padding).
const TAKEN_MSG: u32 = 1;

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
    /// Our owner mark (`peers::owner_mark`; 0: unknown), written into ownership markers.
    owner: u16,
    /// How long a blocked call waits on a stuck unit before it asks whether its owner is gone;
    /// None: never (no peer table to ask).
    patience: Option<Duration>,
    /// Counted by this attachment, not yet in the segment.
    pub counts: Counts,
    /// Where we are stuck, across calls (for `patience`).
    stuck: Stuck,
}

/// Where this attachment is stuck and since when (for `Ring::patience`). Kept in the ring, not
/// per call, so that an attachment that only polls (`try_send`, `try_recv`: each call gives up
/// at once) recovers too once it has found the same unit stuck for long enough. A timing
/// heuristic local to the process: threads of one attachment racing here only shift the clock.
struct Stuck {
    /// The stuck position + 1 (0: none yet).
    at: AtomicU64,
    /// When we first found it stuck (`clock::monotonic_ns`).
    since: AtomicU64,
}

impl Stuck {
    fn new() -> Stuck {
        Stuck { at: AtomicU64::new(0), since: AtomicU64::new(0) }
    }

    /// Whether we have been stuck at `pos` for `patience` (starting the clock when we find a
    /// new position stuck).
    fn long_enough(&self, pos: u64, patience: Option<Duration>) -> bool {
        match patience {
            None => false,
            Some(p) if p.is_zero() => true,
            Some(p) => {
                let now = crate::clock::monotonic_ns();
                if self.at.load(Ordering::Relaxed) != pos + 1 {
                    self.since.store(now, Ordering::Relaxed);
                    self.at.store(pos + 1, Ordering::Relaxed);
                    return false;
                }
                now.saturating_sub(self.since.load(Ordering::Relaxed)) >= p.as_nanos() as u64
            }
        }
    }
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
        Ok(Ring { cells, max_message: max, spin, owner: 0, patience: None, counts: Counts::new(), stuck: Stuck::new() })
    }

    /// Take part in crash recovery: mark what we own with `owner` (`peers::owner_mark`) and,
    /// after being stuck for `patience` on a unit whose owner is gone, recover it.
    pub fn with_recovery(mut self, owner: u16, patience: Duration) -> Ring {
        self.owner = owner;
        self.patience = Some(patience);
        self
    }

    /// Largest message this ring carries.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    fn seq<'a>(&self, seqs: &'a [AtomicU64], pos: u64) -> &'a AtomicU64 {
        &seqs[self.cells.index(pos)]
    }

    // ---- producer side -------------------------------------------------------------------

    /// Our intent word, if we take part in recovery and have a slot.
    fn intent_word<'p, P: Owners>(&self, park: &'p P) -> Option<&'p AtomicU64> {
        if self.patience.is_none() || self.owner == 0 { None } else { park.intent_word(self.owner) }
    }

    /// Claim room for the longest prefix of `lens` that fits now (at least one message) and
    /// mark its units CLAIMED, or `Ok(None)` if not even the first fits. Our CLAIM intent is
    /// published before the CAS and stays held (the returned `Held`) while the caller writes
    /// and commits, so that no survivor mistakes a live claim that is not marked yet, or a unit
    /// between its header store and its commit, for a dead producer's (DESIGN 4d).
    fn try_claim<'p, M: RingMemory, P: Owners>(
        &self,
        ctl: &RingCtl,
        mem: &M,
        seqs: &[AtomicU64],
        park: &'p P,
        lens: &[usize],
    ) -> Result<Option<(Claim, Held<'p>)>, PushError> {
        let c = self.cells;
        let mut held: Option<Held<'p>> = None;
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
            // SYNC(intent): published before the CAS, whose Release carries it.
            let mine = intent::encode(intent::CLAIM, start);
            match &held {
                Some(h) => h.set(mine),
                None => held = Some(Held::hold(self.intent_word(park), mine)?),
            }
            // SYNC(claim): AcqRel CAS on the tail word; fails if another producer claimed first
            // or a closer set TAIL_CLOSED: claims and closes are totally ordered (SYNC(closed-bit)).
            match ctl.producer.tail.compare_exchange(raw, raw + (pos - start), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if n == 1 {
                        self.mark_one(mem, start, lens[0]);
                    } else if self.owner != 0 {
                        self.mark_claim(mem, self.units_of(start, lens[..n].iter().copied()).into_iter());
                    }
                    let held = held.take().expect("held before the CAS");
                    return Ok(Some((Claim { start, n, extent: pos - start }, held)));
                }
                Err(actual) => raw = actual,
            }
        }
    }

    /// Mark every unit of a won claim CLAIMED with our owner mark, the last unit first: a
    /// producer that dies after marking its first unit has marked them all, so the consumers can
    /// skip the whole claim unit by unit (`recover_claim`). `units` yields (position, bytes).
    fn mark_claim<M: RingMemory>(&self, mem: &M, units: impl DoubleEndedIterator<Item = (u64, u64)>) {
        if self.owner == 0 {
            return; // nobody could tell whether we are gone
        }
        for (pos, bytes) in units.rev() {
            mem.store_word(
                self.cells.off(pos),
                record::encode_owned(Kind::Claimed, bytes as u32, self.owner),
                Ordering::Relaxed,
            );
        }
    }

    /// `mark_claim` for a claim of one message of `len` bytes at `start` (and the padding
    /// before it, if any), without allocating.
    fn mark_one<M: RingMemory>(&self, mem: &M, start: u64, len: usize) {
        let (pad, unit) = self.cells.place(start, len);
        let units = [(start, pad), (start + pad, unit)];
        self.mark_claim(mem, units.into_iter().filter(|&(_, bytes)| bytes != 0));
    }

    /// The units of a claim of messages of lengths `lens` from `start`: (position, bytes) of
    /// each padding and message unit, in order.
    fn units_of(&self, start: u64, lens: impl Iterator<Item = usize>) -> Vec<(u64, u64)> {
        let mut units = Vec::new();
        let mut pos = start;
        for len in lens {
            let (pad, unit) = self.cells.place(pos, len);
            if pad != 0 {
                units.push((pos, pad));
            }
            units.push((pos + pad, unit));
            pos += pad + unit;
        }
        units
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
        // SYNC(header): Release; pairs with the Acquire header load in `recover_claim`: a
        // survivor that finds this header with the commit not stored (we died in between) sees
        // the payload, and may store the commit for us.
        mem.store_word(self.cells.off(pos), header, Ordering::Release);
        // SYNC(cell-commit): Release; pairs with the consumer's Acquire load of the first cell's
        // sequence in `look`: who sees `pos + 1` sees the header and the payload.
        self.seq(seqs, pos).store(pos + 1, Ordering::Release);
    }

    /// Blocked for room: if the unit in our way was taken by a consumer that is gone, and we
    /// have been stuck for `patience`, free it (the message it held is lost with that consumer
    /// and counted in `reclaimed_takes`). Returns whether a unit was freed (then try again).
    ///
    /// The taker is gone if its TAKEN marker names a gone owner, or, with no marker yet, if no
    /// live consumer's TAKE intent covers the unit (it was killed between its take CAS and its
    /// markers). One CAS of the unit's first sequence word (committed or abandoned → `u + 3`)
    /// makes us its only reclaimer: positions never repeat, so it cannot succeed on a later lap.
    /// Our RECLAIM intent, published before that CAS, says we are at it; a producer that finds
    /// the word reclaiming with no live RECLAIM intent for it replaces the dead reclaimer by the
    /// same CAS (one more). Freeing is the same stores whoever does it, and nobody can reuse
    /// the unit's cells before its first cell is free (the last store).
    fn recover_take<M: RingMemory, P: Park + Owners>(
        &self,
        ctl: &RingCtl,
        mem: &M,
        seqs: &[AtomicU64],
        park: &P,
        len: usize,
    ) -> bool {
        if self.patience.is_none() {
            return false;
        }
        let c = self.cells;
        let raw_tail = ctl.producer.tail.load(Ordering::Acquire);
        if raw_tail & TAIL_CLOSED != 0 {
            return false;
        }
        let pos = raw_tail & POS_MASK;
        let (pad, unit) = c.place(pos, len);
        // The first cell in our way holds an earlier lap. It is the first cell of a unit: a
        // unit's other cells are released before its first (`free_unit`), and no claim can pass
        // a cell that is not free.
        let mut p = pos;
        let (p, s) = loop {
            if p >= pos + pad + unit {
                return false;
            }
            // SYNC(cell-release): Acquire, as in `try_claim`.
            let s = self.seq(seqs, p).load(Ordering::Acquire);
            match s.cmp(&p) {
                std::cmp::Ordering::Less => break (p, s),
                std::cmp::Ordering::Equal => p += c.cell,
                std::cmp::Ordering::Greater => return false, // stale tail: just try again
            }
        };
        let Some(u) = p.checked_sub(c.cap) else { return false };
        // Committed or abandoned in the previous lap, or being reclaimed.
        let step = match s.checked_sub(u) {
            Some(1 | ABANDONED) => false,
            Some(k) if (RECLAIMING..c.cell).contains(&k) => true,
            _ => return false,
        };
        // SYNC(take): Acquire; a unit at or past the head was not taken: its consumer is just
        // slow. Past the head, the taker's CAS (and the TAKE intent before it) is visible.
        if ctl.consumer.head.load(Ordering::Acquire) <= u || !self.stuck.long_enough(u, self.patience) {
            return false;
        }
        let off = c.off(u);
        if step {
            // Being reclaimed: wait while the reclaimer lives; past the last replacement the
            // unit stays where it is (DESIGN 4d).
            if park.intent_live(true, &|w| w == intent::encode(intent::RECLAIM, u)) || s + 1 >= u + c.cell {
                return false;
            }
        } else {
            // Relaxed would do for the marker (one word); Acquire orders the intent loads below.
            let raw = mem.load_word(off, Ordering::Acquire);
            if matches!(record::decode(raw), Ok((Kind::Taken, _))) {
                let owner = record::claim_owner(raw);
                if owner == 0 || !park.owner_gone(owner) {
                    return false;
                }
            } else if park.intent_live(false, &|w| intent::covers(w, intent::TAKE, u))
                // SYNC(intent): a taker that cleared its intent has marked the unit TAKEN.
                || mem.load_word(off, Ordering::Acquire) != raw
            {
                return false;
            }
        }
        let next = if step { s + 1 } else { u + RECLAIMING };
        let Ok(_held) = Held::hold(self.intent_word(park), intent::encode(intent::RECLAIM, u)) else {
            return false; // our intent word is scribbled on: do not reclaim without it
        };
        // SYNC(reclaim): AcqRel CAS of the first sequence word: exactly one reclaimer at a time;
        // a replacement's CAS acquires what the one before it did.
        if self.seq(seqs, u).compare_exchange(s, next, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return true; // somebody else is at it: look again
        }
        // The header is final now (its taker is gone, reclaimers do not write it).
        let (bytes, msg) = self.reclaimed_unit(mem.load_word(off, Ordering::Acquire), u);
        if !step && msg {
            ctl.lifecycle.reclaimed_takes.fetch_add(1, Ordering::Relaxed);
        }
        self.free_unit(mem, seqs, u, bytes);
        wait::wake_counted(park, &ctl.wake.tx_seq, &ctl.wake.tx_waiters);
        true
    }

    /// The size of a unit being reclaimed at `pos` and whether it held a message, from its
    /// header: its taker's TAKEN marker, or (not marked) the committed header, or (abandoned)
    /// the dead producer's CLAIMED marker or nothing (one cell), as the consumer took it.
    fn reclaimed_unit(&self, raw: u64, pos: u64) -> (u64, bool) {
        let c = self.cells;
        let (bytes, msg) = match record::decode(raw) {
            Ok((Kind::Taken, marked)) => (u64::from(marked & !TAKEN_MSG), marked & TAKEN_MSG != 0),
            Ok((Kind::Whole, len)) if len as usize <= self.max_message => (c.unit(len as usize), true),
            Ok((Kind::Pad, len)) => (HDR as u64 + u64::from(len), false),
            Ok((Kind::Claimed, bytes)) => (u64::from(bytes), false),
            _ => (0, false),
        };
        (self.unit_bytes(pos, bytes), msg)
    }

    /// A unit size read from a marker at `pos`, checked: a multiple of the cell that fits before
    /// the ring's end; anything else (a scribbled marker) counts as one cell.
    fn unit_bytes(&self, pos: u64, bytes: u64) -> u64 {
        let c = self.cells;
        let to_end = c.cap - (pos & (c.cap - 1));
        if bytes == 0 || bytes % c.cell != 0 || bytes > to_end { c.cell } else { bytes }
    }

    /// Free the unit of `bytes` at `pos`: zero the first word of each of its other cells and
    /// hand them back, then zero its first word and hand back its first cell.
    fn free_unit<M: RingMemory>(&self, mem: &M, seqs: &[AtomicU64], pos: u64, bytes: u64) {
        let c = self.cells;
        let mut p = pos + c.cell;
        while p < pos + bytes {
            mem.store_word(c.off(p), 0, Ordering::Relaxed);
            // SYNC(cell-release): Release; pairs with the producers' Acquire loads in
            // `try_claim`: our reads of this cell (and the zero) are done before it is reused.
            self.seq(seqs, p).store(p + c.cap, Ordering::Release);
            p += c.cell;
        }
        // Its first word too, so that a free cell's first word is always 0 and a claim not
        // marked yet reads 0 (not a stale marker that could pass for this lap's). SYNC(taken-mark):
        // Release, as a TAKEN marker: a consumer with a stale head that reads this 0 sees the head
        // moved.
        mem.store_word(c.off(pos), 0, Ordering::Release);
        // SYNC(cell-release): as above; the first cell last, so that a unit whose first cell is
        // free is free as a whole (what `recover_take` relies on).
        self.seq(seqs, pos).store(pos + c.cap, Ordering::Release);
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
    pub fn send<M: RingMemory, P: Park + Owners>(
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
            if let Some((claim, held)) = self.try_claim(ctl, mem, seqs, park, lens)? {
                self.write_claim(ctl, mem, seqs, park, claim, msgs);
                drop(held); // every unit is committed
                return Ok(claim.n);
            }
            if self.recover_take(ctl, mem, seqs, park, lens[0]) {
                continue;
            }
            self.wait_for_room(ctl, seqs, park, lens[0], deadline, &mut spinner)?;
        }
    }

    /// Claim one message unit of `len` bytes for zero-copy writing (padding before it, if any,
    /// is committed at once). Commit with `commit_reserved`.
    pub fn reserve<M: RingMemory, P: Park + Owners>(
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
            if let Some((claim, held)) = self.try_claim(ctl, mem, seqs, park, &[len])? {
                let (pad, _) = self.cells.place(claim.start, len);
                if pad != 0 {
                    self.commit_unit(mem, seqs, claim.start, record::encode(Kind::Pad, (pad - HDR as u64) as u32));
                    wait::wake_counted(park, &ctl.wake.rx_seq, &ctl.wake.rx_waiters);
                }
                // The message unit is marked CLAIMED: the marker speaks for it from here on.
                drop(held);
                let pos = claim.start + pad;
                return Ok(Reserved { claim, pos, off: self.cells.off(pos) + HDR, len });
            }
            if self.recover_take(ctl, mem, seqs, park, len) {
                continue;
            }
            self.wait_for_room(ctl, seqs, park, len, deadline, &mut spinner)?;
        }
    }

    /// Commit a reservation as a message of `used <= r.len` bytes, or as padding (`None`).
    pub fn commit_reserved<M: RingMemory, P: Park + Owners>(
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
        {
            // Our CLAIM intent again while the header replaces our CLAIMED marker and the
            // commit is not stored yet (see `try_claim`).
            // (A scribbled intent word: commit without it; only a crash right here would then
            // be misjudged.)
            let _held = Held::hold(self.intent_word(park), intent::encode(intent::CLAIM, r.pos)).ok();
            self.commit_unit(mem, seqs, r.pos, header);
        }
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
        // SYNC(taken-mark): Acquire; pairs with the Release store of a TAKEN marker in
        // `try_take`. A consumer that re-reads the head after this load (to tell a stale header
        // from a corrupt one) must not have that read moved before this one, and one that sees
        // TAKEN then sees the head CAS that preceded it.
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

    /// The unit at `pos` whose first sequence word reads `seq` (committed or abandoned).
    fn unit_here<M: RingMemory>(&self, mem: &M, pos: u64, seq: u64) -> Result<(Kind, usize, u64), Corrupt> {
        if seq != pos + ABANDONED {
            return self.unit_at(mem, pos);
        }
        // A dead producer's claim: padding, as long as its CLAIMED marker says (one cell if it
        // died before marking). Its words are final: nobody writes them until it is released.
        let bytes = match record::decode(mem.load_word(self.cells.off(pos), Ordering::Acquire)) {
            Ok((Kind::Claimed, bytes)) => u64::from(bytes),
            _ => 0,
        };
        Ok((Kind::Pad, 0, self.unit_bytes(pos, bytes)))
    }

    /// Take up to `max` messages (padding units are taken along and skipped) with one head CAS,
    /// and mark them TAKEN. Our TAKE intent is published before the CAS and cleared once the
    /// units are marked, so no producer frees a take of ours that is not marked yet (DESIGN 4d).
    fn try_take<M: RingMemory, P: Owners>(
        &self,
        ctl: &RingCtl,
        mem: &M,
        seqs: &[AtomicU64],
        park: &P,
        max: usize,
    ) -> Result<Result<Take, Empty>, Corrupt> {
        let mut held: Option<Held<'_>> = None;
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
                if s != pos + 1 && s != pos + ABANDONED {
                    ahead = s > pos + ABANDONED && pos == head;
                    break;
                }
                let (kind, _, unit) = match self.unit_here(mem, pos, s) {
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
                // Another consumer took this unit and the cell moved on: our head is stale. Who
                // moved the word past `head + 2` (a release, a later commit, a reclaim) did so
                // after the head left `head`, and our Acquire load of the word saw that: a head
                // still at `head` means the word was scribbled on (found by the random-scribble
                // test: without this the receiver spun here for ever).
                let fresh = ctl.consumer.head.load(Ordering::Acquire);
                if fresh == head {
                    let s = self.seq(seqs, head).load(Ordering::Acquire);
                    return Err(Corrupt::new(format!("MPMC cell sequence {s} is ahead of the head {head}")));
                }
                head = fresh;
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
            // SYNC(intent): published before the CAS, whose Release carries it.
            let mine = intent::encode(intent::TAKE, head);
            match &held {
                Some(h) => h.set(mine),
                None => held = Some(Held::hold(self.intent_word(park), mine)?),
            }
            // SYNC(take): AcqRel CAS on the head: exactly one consumer takes these units.
            match ctl.consumer.head.compare_exchange(head, pos, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    // The units are ours now and cannot change: read them again and validate,
                    // and mark each TAKEN by us (with its size, for `free` and for a survivor
                    // that frees it if we die before releasing it: `recover_take`).
                    let mut take = Take { start: head, end: pos, msgs: Vec::with_capacity(msgs) };
                    let mut p = head;
                    while p < pos {
                        let s = self.seq(seqs, p).load(Ordering::Relaxed);
                        let (kind, len, unit) = self.unit_here(mem, p, s)?;
                        let msg = if kind == Kind::Whole {
                            take.msgs.push(Taken { off: self.cells.off(p) + HDR, len });
                            TAKEN_MSG
                        } else {
                            0
                        };
                        let mark = record::encode_owned(Kind::Taken, unit as u32 | msg, self.owner);
                        // SYNC(taken-mark): Release; pairs with the Acquire header load in
                        // `unit_at` of a consumer with a stale head: who sees TAKEN also sees
                        // our head CAS when it re-reads the head, so it does not call the
                        // marker corrupt (found by loom: `two_consumers_exactly_once`).
                        mem.store_word(self.cells.off(p), mark, Ordering::Release);
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
    pub fn release<M: RingMemory, P: Park>(&self, ctl: &RingCtl, mem: &M, seqs: &[AtomicU64], park: &P, take: &Take) {
        self.free(ctl, mem, seqs, park, take);
        let bytes = take.msgs.iter().map(|m| m.len as u64).sum();
        self.counts.add(take.msgs.len() as u64, bytes, received(ctl));
    }

    fn free<M: RingMemory, P: Park>(&self, ctl: &RingCtl, mem: &M, seqs: &[AtomicU64], park: &P, take: &Take) {
        let mut p = take.start;
        while p < take.end {
            // Our own TAKEN marker gives the unit's size (a scribbled one: a cell at a time).
            let bytes = match record::decode(mem.load_word(self.cells.off(p), Ordering::Relaxed)) {
                Ok((Kind::Taken, marked)) => u64::from(marked & !TAKEN_MSG),
                _ => 0,
            };
            let bytes = self.unit_bytes(p, bytes).min(take.end - p);
            self.free_unit(mem, seqs, p, bytes);
            p += bytes;
        }
        wait::wake_counted(park, &ctl.wake.tx_seq, &ctl.wake.tx_waiters);
    }

    /// Take up to `max` messages (at least one), waiting until `deadline`. An empty take (only
    /// padding) is released and the wait goes on.
    pub fn take<M: RingMemory, P: Park + Owners>(
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
            match self.try_take(ctl, mem, seqs, park, max.max(1))? {
                Ok(take) if take.msgs.is_empty() => self.free(ctl, mem, seqs, park, &take),
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
                        && self.pad_abandoned(ctl, seqs, park, head)
                    {
                        continue;
                    }
                    if self.recover_claim(ctl, mem, seqs, park, head, raw_tail) {
                        continue;
                    }
                    self.wait(ctl, seqs, park, deadline, &mut spinner)?;
                }
            }
        }
    }

    /// The unit at the head was claimed by a producer that is gone, and we have been stuck
    /// behind it for `patience`: abandon it (its sequence word `head` → `head + 2`, one CAS, so
    /// that several consumers cannot both do it and a late one fails once the cell moved on),
    /// and the consumers skip it as padding of the size its CLAIMED marker gives. The claimer is
    /// gone if its marker names a gone owner, or, with no marker, if no live producer's CLAIM
    /// intent covers the cell (it was killed between its claim CAS and its markers; then one
    /// cell is abandoned, and the next is looked at the same way). Returns whether the unit is
    /// abandoned now.
    #[allow(clippy::too_many_arguments)]
    fn recover_claim<M: RingMemory, P: Park + Owners>(
        &self,
        ctl: &RingCtl,
        mem: &M,
        seqs: &[AtomicU64],
        park: &P,
        head: u64,
        raw_tail: u64,
    ) -> bool {
        if self.patience.is_none() || head >= raw_tail & POS_MASK {
            return false; // not recovering, or nothing claimed at the head
        }
        let seq = self.seq(seqs, head);
        if seq.load(Ordering::Acquire) != head || !self.stuck.long_enough(head, self.patience) {
            return false;
        }
        // A CLAIMED marker at a cell whose sequence word reads `head` was written by this lap's
        // claimer: releasing zeroes a cell's first word. Acquire orders the intent loads below.
        let off = self.cells.off(head);
        // SYNC(header): Acquire; pairs with the Release header store in `commit_unit`.
        let raw = mem.load_word(off, Ordering::Acquire);
        if matches!(record::decode(raw), Ok((Kind::Claimed, _))) {
            let owner = record::claim_owner(raw);
            if owner == 0 || !park.owner_gone(owner) {
                return false;
            }
            return self.abandon(ctl, seq, park, head);
        }
        // Not marked (0), or already a unit header: a producer holds its CLAIM intent until it
        // has marked its claim, and again from a unit's header store to its commit.
        if park.intent_live(true, &|w| intent::covers(w, intent::CLAIM, head))
            // SYNC(intent): one who cleared its intent has marked its claim or committed.
            || mem.load_word(off, Ordering::Acquire) != raw
        {
            return false;
        }
        if self.unit_at(mem, head).is_ok() {
            // Its producer died between writing this unit's header (after the payload) and
            // storing its commit: the message is whole, so commit it for them (one CAS: a late
            // one fails once the cell moved on) rather than lose it.
            // SYNC(cell-commit): AcqRel, as the producer's own commit would have been.
            let _ = seq.compare_exchange(head, head + 1, Ordering::AcqRel, Ordering::Relaxed);
            wait::wake_counted(park, &ctl.wake.rx_seq, &ctl.wake.rx_waiters);
            return true;
        }
        // Claimed and killed before marking: nothing was written there (payload comes after
        // the markers), so abandon one cell and look at the next the same way.
        self.abandon(ctl, seq, park, head)
    }

    /// Sequence word `head` → `head + ABANDONED`; counts and wakes the consumers if we did it.
    fn abandon<P: Park>(&self, ctl: &RingCtl, seq: &AtomicU64, park: &P, head: u64) -> bool {
        // SYNC(cell-commit): AcqRel, as the producer's commit: the consumer that sees the
        // ABANDONED value reads the marker, which is final (its writer is gone).
        if seq.compare_exchange(head, head + ABANDONED, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            ctl.lifecycle.abandoned_claims.fetch_add(1, Ordering::Relaxed);
            wait::wake_counted(park, &ctl.wake.rx_seq, &ctl.wake.rx_waiters);
        }
        true
    }

    /// The channel is closed for sending (no claim can start) and no sender is attached (every
    /// producer has committed what it claimed, or died and was reaped): a cell at the head that
    /// is still uncommitted was claimed by a producer that died, perhaps before it could mark
    /// its claim. Abandon it (`abandon`): it becomes padding of the size its CLAIMED marker
    /// gives, or of one cell if there is none, and the consumers move on. Returns whether the
    /// head cell is committed or abandoned now.
    fn pad_abandoned<P: Park>(&self, ctl: &RingCtl, seqs: &[AtomicU64], park: &P, head: u64) -> bool {
        let seq = self.seq(seqs, head);
        if seq.load(Ordering::Acquire) != head {
            return false;
        }
        self.abandon(ctl, seq, park, head)
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
    fn discard<M: RingMemory, P: Park + Owners>(
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
            match self.try_take(ctl, mem, seqs, park, usize::MAX)? {
                Ok(take) => {
                    let (m, b) = (take.msgs.len() as u64, take.msgs.iter().map(|t| t.len as u64).sum::<u64>());
                    self.free(ctl, mem, seqs, park, &take);
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
