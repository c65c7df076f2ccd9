//! Fuzz target: random multi-producer operation sequences on one `shmq::mpsc` channel (and, with
//! the flavour byte odd, one `shmq::mpmc` channel), checked against a model.
//!
//! One thread drives every handle of an anonymous channel with a 4096-byte ring: several sender
//! attachments (new ones, clones, drops; the last attachment gone drains the channel), `try_send`
//! and `send_timeout` (0 to 2 ms) of messages from empty to beyond `max_message` (8 KiB; MPSC
//! fragments everything above a quarter of the ring, so partial sends, ABORT records and owed
//! ABORTs happen all the time), `try_send_batch`, zero-copy slots (`try_reserve`, `write_at`,
//! then `commit` / `commit_len` / drop, several held at once by different senders and resolved in
//! any order while everything else goes on), sender close, receives (`try_recv`,
//! `try_recv_into`, `recv_timeout`, `try_recv_batch(n)`, `try_recv_ref` read whole or in part),
//! receiver close and drop, channel `drain` / `close_now`.
//!
//! The interleaving comes from the op order: with one thread the claim order is the op order, so
//! the model is one queue in claim order (held slots sit in it as placeholders the receiver cannot
//! pass). Checked after every operation:
//! * every accepted message is received exactly once, byte-identical, in claim order (so in
//!   per-sender order; every message is tagged with its sender handle and a sequence number),
//!   unless a receiver-side close discarded it; a refused message is never received;
//! * a refused send hands the message back unchanged; refusals match the state (Full / Timeout
//!   only while ACTIVE and never for a message that must fit an empty ring, Closed only once
//!   closed, TooLarge exactly above the flavour's limit);
//! * end-of-stream only once everything accepted before the close was received (DRAINING) or
//!   discarded (CLOSING); `Receiver::close` reports exactly the discarded messages and bytes;
//! * state, attach counts, received / discarded counters agree with the model from every handle;
//!   the sent counters (flushed lazily per attachment) are within what is pending; at the end
//!   sent == received + discarded, and the state is CLOSED.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shmq::{
    AttachError, Config, Corrupt, Discarded, RecvTimeoutError, SendError, SendTimeoutError, State, Stats, TryRecvError,
    TrySendError,
};
use std::collections::VecDeque;
use std::time::Duration;

const CAP: usize = 4096;
const MAX_MESSAGE: usize = 8192;
/// MPSC: largest payload of one record (larger messages are fragmented).
const MPSC_MAX_WHOLE: usize = CAP / 4 - 8;
/// MPMC cell size used here.
const CELL: usize = 64;
const MAX_OPS: usize = 256;
/// Sender / receiver handle slots.
const MAX_HANDLES: usize = 8;
/// Zero-copy slots held at once.
const MAX_HELD: usize = 4;
/// Sends or receives that may really sleep (non-zero timeouts) per input; later ones use zero.
const MAX_SLEEPS: u32 = 6;

// ---------------------------------------------------------------------------------------------
// The flavour under test, behind one interface.

/// A received message borrowed with `try_recv_ref`: read whole, or 16 bytes at an offset.
enum RefRead {
    Whole(Vec<u8>),
    Part { len: usize, off: usize, bytes: Vec<u8> },
}

trait Flavor: 'static {
    const NAME: &'static str;
    /// Several receivers (MPMC) or one exclusive receiver (MPSC).
    const MULTI_RX: bool;
    /// Messages above `whole_limit` are sent in pieces (MPSC); otherwise they are TooLarge.
    const FRAGMENTS: bool;
    type Ch: Clone;
    type Tx: Clone;
    type Rx;
    type Slot<'a>;

    fn cfg() -> Config;
    /// Largest message accepted.
    fn max_len() -> usize;
    /// Largest message that travels as one record.
    fn whole_limit() -> usize;
    /// Any message up to this long fits a ring known to be empty.
    fn must_fit_len() -> usize;

    fn anonymous() -> Self::Ch;
    fn from_fd(ch: &Self::Ch) -> Self::Ch;
    fn sender(ch: &Self::Ch) -> Result<Self::Tx, AttachError>;
    fn receiver(ch: &Self::Ch) -> Result<Self::Rx, AttachError>;
    fn drain(ch: &Self::Ch) -> Result<State, Corrupt>;
    fn close_now(ch: &Self::Ch) -> Result<State, Corrupt>;
    fn ch_state(ch: &Self::Ch) -> Result<State, Corrupt>;
    fn ch_stats(ch: &Self::Ch) -> Result<Stats, Corrupt>;

    fn try_send(tx: &Self::Tx, m: Vec<u8>) -> Result<(), TrySendError<Vec<u8>>>;
    fn send_timeout(tx: &Self::Tx, m: Vec<u8>, t: Duration) -> Result<(), SendTimeoutError<Vec<u8>>>;
    fn try_send_batch(tx: &Self::Tx, msgs: &[Vec<u8>]) -> Result<usize, TrySendError<usize>>;
    fn max_zero_copy(tx: &Self::Tx) -> usize;
    fn try_reserve(tx: &Self::Tx, len: usize) -> Result<Self::Slot<'_>, TrySendError<()>>;
    fn slot_len(s: &Self::Slot<'_>) -> (usize, bool);
    fn slot_write_at(s: &mut Self::Slot<'_>, off: usize, src: &[u8]);
    /// `commit()` (None) or `commit_len(n)`.
    fn slot_commit(s: Self::Slot<'_>, n: Option<usize>) -> Result<(), SendError<Vec<u8>>>;
    fn tx_close(tx: &Self::Tx);
    fn tx_state(tx: &Self::Tx) -> Result<State, Corrupt>;
    fn tx_stats(tx: &Self::Tx) -> Result<Stats, Corrupt>;

    fn try_recv(rx: &mut Self::Rx) -> Result<Vec<u8>, TryRecvError>;
    fn try_recv_into(rx: &mut Self::Rx, buf: &mut Vec<u8>) -> Result<usize, TryRecvError>;
    fn recv_timeout(rx: &mut Self::Rx, t: Duration) -> Result<Vec<u8>, RecvTimeoutError>;
    /// The messages of one batch, copied out; the batch is dropped before returning.
    fn try_recv_batch(rx: &mut Self::Rx, max: usize) -> Result<Vec<Vec<u8>>, TryRecvError>;
    fn try_recv_ref(rx: &mut Self::Rx, part: Option<u16>) -> Result<RefRead, TryRecvError>;
    fn rx_close(rx: &mut Self::Rx) -> Result<Discarded, Corrupt>;
    fn rx_state(rx: &Self::Rx) -> Result<State, Corrupt>;
    fn rx_stats(rx: &Self::Rx) -> Result<Stats, Corrupt>;
    /// A clone sharing the attachment (MPMC); `None` where receivers are not `Clone`.
    fn rx_clone(rx: &Self::Rx) -> Option<Self::Rx>;
}

/// The part of `Flavor` that is the same code for both modules.
macro_rules! common_impl {
    ($m:ident) => {
        type Ch = shmq::$m::Channel;
        type Tx = shmq::$m::Sender;
        type Rx = shmq::$m::Receiver;
        type Slot<'a> = shmq::$m::SendSlot<'a>;

        fn anonymous() -> Self::Ch {
            shmq::$m::Channel::anonymous(&Self::cfg()).expect("anonymous channel")
        }
        fn from_fd(ch: &Self::Ch) -> Self::Ch {
            let fd = ch.as_fd().try_clone_to_owned().expect("dup");
            shmq::$m::Channel::from_fd(fd, &Self::cfg()).expect("from_fd of a live channel")
        }
        fn sender(ch: &Self::Ch) -> Result<Self::Tx, AttachError> {
            ch.sender()
        }
        fn receiver(ch: &Self::Ch) -> Result<Self::Rx, AttachError> {
            ch.receiver()
        }
        fn drain(ch: &Self::Ch) -> Result<State, Corrupt> {
            ch.drain()
        }
        fn close_now(ch: &Self::Ch) -> Result<State, Corrupt> {
            ch.close_now()
        }
        fn ch_state(ch: &Self::Ch) -> Result<State, Corrupt> {
            ch.state()
        }
        fn ch_stats(ch: &Self::Ch) -> Result<Stats, Corrupt> {
            ch.stats()
        }
        fn try_send(tx: &Self::Tx, m: Vec<u8>) -> Result<(), TrySendError<Vec<u8>>> {
            tx.try_send(m)
        }
        fn send_timeout(tx: &Self::Tx, m: Vec<u8>, t: Duration) -> Result<(), SendTimeoutError<Vec<u8>>> {
            tx.send_timeout(m, t)
        }
        fn try_send_batch(tx: &Self::Tx, msgs: &[Vec<u8>]) -> Result<usize, TrySendError<usize>> {
            tx.try_send_batch(msgs)
        }
        fn max_zero_copy(tx: &Self::Tx) -> usize {
            tx.max_zero_copy()
        }
        fn try_reserve(tx: &Self::Tx, len: usize) -> Result<Self::Slot<'_>, TrySendError<()>> {
            tx.try_reserve(len)
        }
        fn slot_len(s: &Self::Slot<'_>) -> (usize, bool) {
            (s.len(), s.is_empty())
        }
        fn slot_write_at(s: &mut Self::Slot<'_>, off: usize, src: &[u8]) {
            s.write_at(off, src)
        }
        fn slot_commit(s: Self::Slot<'_>, n: Option<usize>) -> Result<(), SendError<Vec<u8>>> {
            match n {
                None => s.commit(),
                Some(n) => s.commit_len(n),
            }
        }
        fn tx_close(tx: &Self::Tx) {
            tx.close()
        }
        fn tx_state(tx: &Self::Tx) -> Result<State, Corrupt> {
            tx.state()
        }
        fn tx_stats(tx: &Self::Tx) -> Result<Stats, Corrupt> {
            tx.stats()
        }
        fn try_recv(rx: &mut Self::Rx) -> Result<Vec<u8>, TryRecvError> {
            rx.try_recv()
        }
        fn try_recv_into(rx: &mut Self::Rx, buf: &mut Vec<u8>) -> Result<usize, TryRecvError> {
            rx.try_recv_into(buf)
        }
        fn recv_timeout(rx: &mut Self::Rx, t: Duration) -> Result<Vec<u8>, RecvTimeoutError> {
            rx.recv_timeout(t)
        }
        fn try_recv_batch(rx: &mut Self::Rx, max: usize) -> Result<Vec<Vec<u8>>, TryRecvError> {
            let b = rx.try_recv_batch(max)?;
            let n = b.len();
            assert!(!b.is_empty() && n >= 1, "a batch holds at least one message");
            let mut out = Vec::with_capacity(n);
            for v in b.iter() {
                let whole = v.to_vec();
                assert_eq!(whole.len(), v.len());
                assert_eq!(v.is_empty(), whole.is_empty());
                if !whole.is_empty() {
                    let mut last = [0u8; 1];
                    v.read_at(whole.len() - 1, &mut last);
                    assert_eq!(last[0], whole[whole.len() - 1], "View::read_at disagrees with to_vec");
                }
                out.push(whole);
            }
            assert_eq!(out.len(), n, "Batch::len disagrees with iter");
            drop(b);
            Ok(out)
        }
        fn try_recv_ref(rx: &mut Self::Rx, part: Option<u16>) -> Result<RefRead, TryRecvError> {
            let m = rx.try_recv_ref()?;
            let len = m.len();
            assert_eq!(m.is_empty(), len == 0);
            Ok(match part {
                Some(at) if len > 0 => {
                    let off = at as usize % len;
                    let mut bytes = vec![0u8; (len - off).min(16)];
                    m.read_at(off, &mut bytes);
                    // SAFETY: `as_ptr` points at `len` readable bytes while `m` lives; one byte
                    // is read through it (no slice over shared memory is formed).
                    let p = unsafe { m.as_ptr().add(off).read_volatile() };
                    assert_eq!(p, bytes[0], "Message::as_ptr disagrees with read_at");
                    RefRead::Part { len, off, bytes }
                }
                _ => RefRead::Whole(m.to_vec()),
            })
        }
        fn rx_close(rx: &mut Self::Rx) -> Result<Discarded, Corrupt> {
            rx.close()
        }
        fn rx_state(rx: &Self::Rx) -> Result<State, Corrupt> {
            rx.state()
        }
        fn rx_stats(rx: &Self::Rx) -> Result<Stats, Corrupt> {
            rx.stats()
        }
    };
}

struct Mpsc;

impl Flavor for Mpsc {
    const NAME: &'static str = "mpsc";
    const MULTI_RX: bool = false;
    const FRAGMENTS: bool = true;

    common_impl!(mpsc);

    fn cfg() -> Config {
        Config::new().capacity(CAP).max_message(MAX_MESSAGE as u64).spin(Duration::ZERO)
    }
    fn max_len() -> usize {
        MAX_MESSAGE
    }
    fn whole_limit() -> usize {
        MPSC_MAX_WHOLE
    }
    fn must_fit_len() -> usize {
        // Pieces of up to 1024 bytes plus padding before each: 2048 bytes take at most 3120,
        // leaving room for a few owed ABORT records.
        CAP / 2
    }
    fn rx_clone(_: &Self::Rx) -> Option<Self::Rx> {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Input.

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Tiny(u8),
    Small(u16),
    Big(u16),
    Edge(u8),
}

const EDGES: &[usize] = &[
    0,
    1,
    7,
    8,
    9,
    CELL - 9,
    CELL - 8,
    CELL - 7,
    2 * CELL - 8,
    2 * CELL - 7,
    MPSC_MAX_WHOLE - 8,
    MPSC_MAX_WHOLE - 7,
    MPSC_MAX_WHOLE - 1,
    MPSC_MAX_WHOLE,
    MPSC_MAX_WHOLE + 1,
    2 * (MPSC_MAX_WHOLE - 8),
    2 * (MPSC_MAX_WHOLE - 8) + 1,
    CAP / 2 - 8,
    CAP / 2 - 7,
    CAP / 2,
    CAP / 2 + 1,
    CAP - 16,
    CAP,
    CAP + 1,
    MAX_MESSAGE - 1,
    MAX_MESSAGE,
    MAX_MESSAGE + 1,
];

impl Size {
    fn get(self) -> usize {
        match self {
            Size::Tiny(n) => n as usize % 24,
            Size::Small(n) => n as usize % (MPSC_MAX_WHOLE + 64),
            Size::Big(n) => n as usize % (MAX_MESSAGE + 64),
            Size::Edge(i) => EDGES[i as usize % EDGES.len()],
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Wait {
    Try,
    Zero,
    /// 200 µs: really sleeps when the ring is full.
    Short,
    /// 2 ms.
    Long,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Commit {
    Whole,
    Len(u16),
    Drop,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum RecvKind {
    Try,
    Into,
    TimeoutZero,
    /// 100 µs: the receiver sleeps when nothing is there.
    TimeoutShort,
}

#[derive(Arbitrary, Debug, Clone)]
enum Op {
    NewSender {
        via_fd: bool,
    },
    CloneSender {
        h: u8,
    },
    DropSender {
        h: u8,
    },
    Send {
        h: u8,
        size: Size,
        fill: u8,
        wait: Wait,
    },
    SendBatch {
        h: u8,
        sizes: Vec<Size>,
        fill: u8,
    },
    /// Reserve a slot and write it (in two pieces split at `split`); it stays held.
    Reserve {
        h: u8,
        size: Size,
        fill: u8,
        split: u16,
    },
    /// Resolve held slot number `s`.
    Resolve {
        s: u8,
        how: Commit,
    },
    SenderClose {
        h: u8,
    },
    SenderStats {
        h: u8,
    },
    Drain,
    CloseNow,
    Recv {
        r: u8,
        kind: RecvKind,
    },
    RecvBatch {
        r: u8,
        max: u8,
    },
    RecvRef {
        r: u8,
        part: Option<u16>,
    },
    /// Held slots are resolved first (committed or dropped): a close waits for claims in flight.
    ReceiverClose {
        r: u8,
        commit_held: bool,
    },
    DropReceiver {
        r: u8,
        commit_held: bool,
    },
    NewReceiver {
        via_fd: bool,
    },
    CloneReceiver {
        r: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Even: MPSC; odd: MPMC.
    flavor: u8,
    /// Attach the receiver before any operation (otherwise senders start alone).
    receiver_first: bool,
    ops: Vec<Op>,
}

// ---------------------------------------------------------------------------------------------
// Messages.

/// The content of message `id` from sender handle `sender`: the first 8 bytes (as many as fit)
/// are the tag `sender << 48 | id`, the rest depends on both and `fill`. Every message differs.
fn message(id: u64, sender: usize, len: usize, fill: u8) -> Vec<u8> {
    let tag = (((sender as u64) << 48) | id).to_le_bytes();
    (0..len)
        .map(|i| {
            if i < 8 {
                tag[i]
            } else {
                (i as u8).wrapping_mul(31).wrapping_add((i >> 8) as u8).wrapping_add(fill) ^ (id as u8).rotate_left(3)
            }
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Queued,
    Received,
    Discarded,
    Refused,
    Cancelled,
}

/// One accepted (or held) message, in claim order.
struct Entry {
    id: u64,
    sender: usize,
    bytes: Vec<u8>,
    /// A reserved slot not committed yet: the receiver cannot pass it.
    held: bool,
}

// ---------------------------------------------------------------------------------------------
// The model.

struct TxHandle<F: Flavor> {
    tx: F::Tx,
    att: usize,
}

struct RxHandle<F: Flavor> {
    rx: F::Rx,
    att: usize,
}

/// A reserved slot held across operations. The slot borrows `owner`, a clone of the sender (it
/// counts as a handle of the attachment until the slot is resolved).
struct Held<F: Flavor> {
    slot: Option<F::Slot<'static>>,
    _owner: Box<F::Tx>,
    att: usize,
    id: u64,
    data: Vec<u8>,
}

impl<F: Flavor> Held<F> {
    fn new(tx: &F::Tx, att: usize, len: usize) -> Result<Held<F>, TrySendError<()>> {
        let owner = Box::new(tx.clone());
        // SAFETY: the reference points into the heap allocation of `owner`, which never moves
        // and is freed only after the slot: `Held` drops `slot` first (see `Drop`), and `owner`
        // is never replaced or moved out while `slot` is `Some`.
        let tx_ref: &'static F::Tx = unsafe { &*(&*owner as *const F::Tx) };
        match F::try_reserve(tx_ref, len) {
            Ok(slot) => Ok(Held { slot: Some(slot), _owner: owner, att, id: 0, data: Vec::new() }),
            // No slot borrows `owner`: dropping it (a clone of a live handle) detaches nothing.
            Err(e) => Err(e),
        }
    }
}

impl<F: Flavor> Drop for Held<F> {
    fn drop(&mut self) {
        // The slot before the sender it borrows (field order would do the same; be explicit).
        drop(self.slot.take());
    }
}

/// What an input exercised, printed per input with `SHMQ_FUZZ_SUMMARY=1` (to see what a corpus
/// reaches: `SHMQ_FUZZ_SUMMARY=1 cargo fuzz run multi_ops corpus/multi_ops -- -runs=0 2>&1 | grep '^summary'`).
#[derive(Default, Debug)]
struct Seen {
    fragmented_accepted: u32,
    fragmented_refused: u32,
    full: u32,
    too_large: u32,
    closed: u32,
    batch_partial: u32,
    held_committed: u32,
    held_cancelled: u32,
    committed_after_close: u32,
    empty_behind_held: u32,
    recv_batch_multi: u32,
    discarded: u64,
    max_attachments: u32,
}

struct Model<F: Flavor> {
    /// Held slots first: they must go before the handles (and the channel) they refer to.
    held: Vec<Held<F>>,
    ch: F::Ch,
    /// Other mappings of the segment, to attach through.
    others: Vec<F::Ch>,
    txs: Vec<Option<TxHandle<F>>>,
    rxs: Vec<Option<RxHandle<F>>>,
    /// Live handles (including held slots' owners) per sender attachment.
    tx_att: Vec<usize>,
    /// Messages accepted per sender attachment since its counters were last certainly flushed.
    tx_unflushed: Vec<(u64, u64)>,
    /// Live handles per receiver attachment.
    rx_att: Vec<usize>,
    /// Accepted (or held) messages not received or discarded yet, in claim order.
    queue: VecDeque<Entry>,
    state: State,
    next_id: u64,
    fates: Vec<Fate>,
    /// The receiver has seen everything up to the tail and nothing was written since.
    known_empty: bool,
    /// A refused fragmented send left pieces in the ring at some point (they stop batches).
    junk_ever: bool,
    sleeps: u32,
    seen: Seen,
    sent: (u64, u64),
    recv: (u64, u64),
    discarded: (u64, u64),
}

fn live<T>(v: &[Option<T>], i: u8) -> Option<usize> {
    let n = v.iter().filter(|x| x.is_some()).count();
    if n == 0 {
        return None;
    }
    v.iter().enumerate().filter(|(_, x)| x.is_some()).map(|(j, _)| j).nth(i as usize % n)
}

fn free_slot<T>(v: &mut Vec<Option<T>>) -> Option<usize> {
    if let Some(j) = v.iter().position(Option::is_none) {
        return Some(j);
    }
    if v.len() < MAX_HANDLES {
        v.push(None);
        return Some(v.len() - 1);
    }
    None
}

/// The outcome the model predicts for a receive.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    /// The front entry (and for a batch possibly more).
    Msg,
    Empty,
    Closed,
}

impl<F: Flavor> Model<F> {
    fn new(receiver_first: bool) -> Model<F> {
        let ch = F::anonymous();
        let mut m = Model {
            held: Vec::new(),
            ch,
            others: Vec::new(),
            txs: Vec::new(),
            rxs: Vec::new(),
            tx_att: Vec::new(),
            tx_unflushed: Vec::new(),
            rx_att: Vec::new(),
            queue: VecDeque::new(),
            state: State::Active,
            next_id: 1,
            fates: vec![Fate::Refused], // id 0 unused
            known_empty: true,
            junk_ever: false,
            sleeps: 0,
            seen: Seen::default(),
            sent: (0, 0),
            recv: (0, 0),
            discarded: (0, 0),
        };
        if receiver_first {
            m.new_receiver(false);
        }
        m.new_sender(false);
        m
    }

    fn raise(&mut self, to: State) {
        if to > self.state {
            self.state = to;
        }
    }

    fn handle(&mut self, via_fd: bool) -> F::Ch {
        if !via_fd {
            return self.ch.clone();
        }
        if self.others.len() < 2 {
            let other = F::from_fd(&self.ch);
            self.others.push(other);
        }
        self.others.last().unwrap().clone()
    }

    fn sleep_ok(&mut self) -> bool {
        self.sleeps += 1;
        self.sleeps <= MAX_SLEEPS
    }

    fn live_tx_atts(&self) -> u32 {
        self.tx_att.iter().filter(|&&n| n > 0).count() as u32
    }

    fn live_rx_atts(&self) -> u32 {
        self.rx_att.iter().filter(|&&n| n > 0).count() as u32
    }

    // --- senders ---------------------------------------------------------------------------

    fn new_sender(&mut self, via_fd: bool) {
        let ch = self.handle(via_fd);
        let Some(j) = free_slot(&mut self.txs) else { return };
        let tx = F::sender(&ch).expect("a sender attaches at any time");
        assert_eq!(F::tx_state(&tx).unwrap(), self.state);
        self.tx_att.push(1);
        self.seen.max_attachments = self.seen.max_attachments.max(self.live_tx_atts());
        self.tx_unflushed.push((0, 0));
        self.txs[j] = Some(TxHandle { tx, att: self.tx_att.len() - 1 });
    }

    fn clone_sender(&mut self, h: u8) {
        let Some(i) = live(&self.txs, h) else { return };
        let Some(j) = free_slot(&mut self.txs) else { return };
        let t = self.txs[i].as_ref().unwrap();
        let (tx, att) = (t.tx.clone(), t.att);
        self.tx_att[att] += 1;
        self.txs[j] = Some(TxHandle { tx, att });
    }

    /// One handle of sender attachment `att` is gone (already dropped by the caller).
    fn tx_handle_gone(&mut self, att: usize) {
        self.tx_att[att] -= 1;
        if self.tx_att[att] == 0 {
            // The attachment detached (its counts flushed); the last one drains the channel.
            self.tx_unflushed[att] = (0, 0);
            if self.live_tx_atts() == 0 {
                self.raise(State::Draining);
            }
        }
    }

    fn drop_sender(&mut self, h: u8) {
        let Some(i) = live(&self.txs, h) else { return };
        let t = self.txs[i].take().unwrap();
        let att = t.att;
        drop(t);
        self.tx_handle_gone(att);
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.fates.push(Fate::Refused);
        id
    }

    fn accept(&mut self, att: usize, id: u64, sender: usize, bytes: Vec<u8>) {
        assert_eq!(self.state, State::Active, "a send was accepted while {:?}", self.state);
        self.count_sent(att, bytes.len());
        if bytes.len() > F::whole_limit() {
            self.seen.fragmented_accepted += 1;
        }
        self.fates[id as usize] = Fate::Queued;
        self.queue.push_back(Entry { id, sender, bytes, held: false });
        self.known_empty = false;
    }

    fn count_sent(&mut self, att: usize, len: usize) {
        self.sent.0 += 1;
        self.sent.1 += len as u64;
        let u = &mut self.tx_unflushed[att];
        u.0 += 1;
        u.1 += len as u64;
    }

    /// Would a message of `len` bytes have to be accepted right now?
    fn must_fit(&self, len: usize) -> bool {
        self.state == State::Active && self.known_empty && self.held.is_empty() && len <= F::must_fit_len()
    }

    /// Check a refusal of a `len`-byte send: "Full", "Timeout", "Closed" or "TooLarge".
    fn refused(&mut self, what: &str, len: usize) {
        match what {
            "TooLarge" => {
                assert!(len > F::max_len(), "TooLarge for {len} bytes (limit {})", F::max_len());
                self.seen.too_large += 1;
            }
            "Closed" => {
                self.seen.closed += 1;
                assert_ne!(self.state, State::Active, "Closed while the model is ACTIVE");
                assert!(len <= F::max_len(), "{len} bytes refused as Closed, not TooLarge");
            }
            "Full" | "Timeout" => {
                self.seen.full += 1;
                assert_eq!(self.state, State::Active, "{what} although the channel is {:?}", self.state);
                assert!(len <= F::max_len(), "{what} for {len} bytes, not TooLarge");
                assert!(!self.must_fit(len), "{what} for {len} bytes into an empty {CAP}-byte ring");
                if F::FRAGMENTS && len > F::whole_limit() {
                    // First pieces may have been written, then an ABORT (now or owed).
                    self.known_empty = false;
                    self.junk_ever = true;
                    self.seen.fragmented_refused += 1;
                }
            }
            other => panic!("send refused: {other}"),
        }
    }

    fn send(&mut self, h: u8, size: Size, fill: u8, wait: Wait) {
        let Some(i) = live(&self.txs, h) else { return };
        let len = size.get();
        let id = self.new_id();
        let msg = message(id, i, len, fill);
        let wait = match wait {
            Wait::Short | Wait::Long if !self.sleep_ok() => Wait::Zero,
            w => w,
        };
        let t = self.txs[i].as_ref().unwrap();
        let att = t.att;
        let res: Result<(), (&str, Vec<u8>)> = match wait {
            Wait::Try => F::try_send(&t.tx, msg.clone()).map_err(|e| match e {
                TrySendError::Full(m) => ("Full", m),
                TrySendError::Closed(m) => ("Closed", m),
                TrySendError::TooLarge(m) => ("TooLarge", m),
                TrySendError::Corrupt(_, c) => panic!("try_send: corrupt: {c}"),
                TrySendError::PeerDead(_, p) => panic!("try_send: PeerDead({p}) although no process died"),
            }),
            Wait::Zero | Wait::Short | Wait::Long => {
                let d = match wait {
                    Wait::Short => Duration::from_micros(200),
                    Wait::Long => Duration::from_millis(2),
                    _ => Duration::ZERO,
                };
                F::send_timeout(&t.tx, msg.clone(), d).map_err(|e| match e {
                    SendTimeoutError::Timeout(m) => ("Timeout", m),
                    SendTimeoutError::Closed(m) => ("Closed", m),
                    SendTimeoutError::TooLarge(m) => ("TooLarge", m),
                    SendTimeoutError::Corrupt(_, c) => panic!("send_timeout: corrupt: {c}"),
                    SendTimeoutError::PeerDead(_, p) => panic!("send_timeout: PeerDead({p}) although no process died"),
                })
            }
        };
        match res {
            Ok(()) => self.accept(att, id, i, msg),
            Err((what, back)) => {
                assert!(back == msg, "{what}: the refused {len}-byte message must come back unchanged");
                self.refused(what, len);
            }
        }
    }

    fn send_batch(&mut self, h: u8, sizes: &[Size], fill: u8) {
        let Some(i) = live(&self.txs, h) else { return };
        let msgs: Vec<(u64, Vec<u8>)> = sizes
            .iter()
            .take(16)
            .map(|s| {
                let id = self.new_id();
                (id, message(id, i, s.get(), fill))
            })
            .collect();
        let bodies: Vec<Vec<u8>> = msgs.iter().map(|(_, m)| m.clone()).collect();
        let t = self.txs[i].as_ref().unwrap();
        let att = t.att;
        let res = F::try_send_batch(&t.tx, &bodies);
        let too_large = |k: usize| bodies.get(k).is_some_and(|m| m.len() > F::max_len());
        let first_must_fit = bodies.first().is_some_and(|m| m.len() <= F::max_len() && self.must_fit(m.len()));
        let n = match res {
            Ok(n) => {
                assert!(n <= bodies.len(), "batch: {n} of {} accepted", bodies.len());
                if n < bodies.len() {
                    // Stopped at a message that did not fit.
                    assert!(n > 0, "batch: Ok(0) for a non-empty batch (Full(0) expected)");
                    self.seen.batch_partial += 1;
                    assert!(!too_large(n), "batch: stopped at a too large message with Ok");
                    let len = bodies[n].len();
                    assert!(self.state == State::Active, "batch: Ok({n}) while {:?}", self.state);
                    if F::FRAGMENTS && len > F::whole_limit() {
                        self.junk_ever = true;
                    }
                }
                n
            }
            Err(TrySendError::Full(n)) => {
                assert_eq!(n, 0, "batch: Full({n}) (a partial batch is Ok)");
                assert!(!bodies.is_empty(), "batch: Full(0) for an empty batch");
                self.refused("Full", bodies[0].len());
                assert!(!first_must_fit, "batch: Full for a first message that must fit");
                0
            }
            Err(TrySendError::Closed(n)) => {
                assert_eq!(n, 0, "batch: Closed({n}) although the state did not change during the call");
                self.refused("Closed", bodies.first().map_or(0, Vec::len));
                0
            }
            Err(TrySendError::TooLarge(n)) => {
                assert!(too_large(n), "batch: TooLarge({n}) for a {:?}-byte message", bodies.get(n).map(Vec::len));
                assert!(!bodies[..n].iter().any(|m| m.len() > F::max_len()));
                n
            }
            Err(TrySendError::Corrupt(_, c)) => panic!("try_send_batch: corrupt: {c}"),
            Err(TrySendError::PeerDead(_, p)) => panic!("try_send_batch: PeerDead({p}) although no process died"),
        };
        if n > 0 {
            assert_eq!(self.state, State::Active, "batch accepted while {:?}", self.state);
        }
        if first_must_fit {
            assert!(n >= 1, "batch: the first message must fit an empty ring");
        }
        for (id, m) in msgs.into_iter().take(n) {
            self.accept(att, id, i, m);
        }
    }

    fn reserve(&mut self, h: u8, size: Size, fill: u8, split: u16) {
        if self.held.len() >= MAX_HELD {
            return;
        }
        let Some(i) = live(&self.txs, h) else { return };
        let len = size.get();
        let t = self.txs[i].as_ref().unwrap();
        let att = t.att;
        let max_zc = F::max_zero_copy(&t.tx);
        assert_eq!(max_zc, F::whole_limit().min(F::max_len()), "max_zero_copy");
        let must_fit = self.state == State::Active && self.known_empty && self.held.is_empty();
        let mut held = match Held::<F>::new(&t.tx, att, len) {
            Ok(held) => held,
            Err(e) => {
                match e {
                    TrySendError::TooLarge(()) => assert!(len > max_zc, "TooLarge for a {len}-byte reservation"),
                    TrySendError::Full(()) => {
                        assert!(len <= max_zc, "Full, not TooLarge, for a {len}-byte reservation");
                        assert_eq!(self.state, State::Active, "reservation refused as Full while {:?}", self.state);
                        assert!(!must_fit, "Full for a {len}-byte reservation in an empty ring");
                    }
                    TrySendError::Closed(()) => {
                        assert!(len <= max_zc, "Closed, not TooLarge, for a {len}-byte reservation");
                        assert_ne!(self.state, State::Active, "reservation refused as Closed while ACTIVE");
                    }
                    TrySendError::Corrupt((), c) => panic!("try_reserve: corrupt: {c}"),
                    TrySendError::PeerDead(_, p) => panic!("try_reserve: PeerDead({p}) although no process died"),
                }
                return;
            }
        };
        assert!(len <= max_zc, "a {len}-byte reservation granted above max_zero_copy {max_zc}");
        assert_eq!(self.state, State::Active, "a reservation was granted while {:?}", self.state);
        self.tx_att[att] += 1;
        let id = self.new_id();
        let data = message(id, i, len, fill);
        let slot = held.slot.as_mut().unwrap();
        assert_eq!(F::slot_len(slot), (len, len == 0));
        let cut = if len == 0 { 0 } else { split as usize % (len + 1) };
        // Second half first: the order of writes must not matter.
        F::slot_write_at(slot, cut, &data[cut..]);
        F::slot_write_at(slot, 0, &data[..cut]);
        held.id = id;
        held.data = data;
        self.held.push(held);
        self.queue.push_back(Entry { id, sender: i, bytes: Vec::new(), held: true });
        self.known_empty = false;
    }

    /// Commit (`Some(n)`: `commit_len(n)`, `None`: `commit()`) or cancel (`cancel`) held slot `k`.
    fn resolve(&mut self, k: usize, how: Commit) {
        let mut held = self.held.remove(k);
        let slot = held.slot.take().unwrap();
        let (id, att) = (held.id, held.att);
        let pos = self.queue.iter().position(|e| e.id == id).expect("a held slot is queued");
        let res = match how {
            Commit::Drop => {
                drop(slot);
                None
            }
            Commit::Whole => Some((held.data.len(), F::slot_commit(slot, None))),
            Commit::Len(n) => {
                let n = (n as usize).min(held.data.len());
                Some((n, F::slot_commit(slot, Some(n))))
            }
        };
        match res {
            None => {
                self.seen.held_cancelled += 1;
                self.queue.remove(pos);
                self.fates[id as usize] = Fate::Cancelled;
            }
            Some((n, Ok(()))) => {
                self.seen.held_committed += 1;
                if self.state != State::Active {
                    self.seen.committed_after_close += 1;
                }
                // Claimed before any close: accepted whatever the state is now (a CLOSING
                // receiver then discards it).
                let mut bytes = std::mem::take(&mut held.data);
                bytes.truncate(n);
                self.count_sent(att, n);
                self.fates[id as usize] = Fate::Queued;
                let e = &mut self.queue[pos];
                e.bytes = bytes;
                e.held = false;
            }
            Some((n, Err(SendError::Closed(back)))) => {
                assert_ne!(self.state, State::Active, "commit refused as Closed while ACTIVE");
                assert!(back == held.data[..n], "a refused commit hands back the {n} bytes written");
                self.queue.remove(pos);
                self.fates[id as usize] = Fate::Refused;
            }
            Some((_, Err(e))) => panic!("commit: {e:?}"),
        }
        drop(held); // the owner clone
        self.tx_handle_gone(att);
    }

    fn resolve_all(&mut self, commit: bool) {
        while !self.held.is_empty() {
            self.resolve(0, if commit { Commit::Whole } else { Commit::Drop });
        }
    }

    // --- receivers -------------------------------------------------------------------------

    fn new_receiver(&mut self, via_fd: bool) {
        let ch = self.handle(via_fd);
        let Some(j) = free_slot(&mut self.rxs) else { return };
        let taken = self.live_rx_atts() > 0;
        match F::receiver(&ch) {
            Ok(rx) => {
                assert!(F::MULTI_RX || !taken, "a second MPSC receiver was handed out");
                assert_eq!(F::rx_state(&rx).unwrap(), self.state);
                self.rx_att.push(1);
                self.rxs[j] = Some(RxHandle { rx, att: self.rx_att.len() - 1 });
            }
            Err(AttachError::RoleTaken { .. }) => {
                assert!(!F::MULTI_RX && taken, "receiver refused although free");
            }
            Err(e) => panic!("receiver: {e}"),
        }
    }

    fn clone_receiver(&mut self, r: u8) {
        let Some(i) = live(&self.rxs, r) else { return };
        let Some(j) = free_slot(&mut self.rxs) else { return };
        let h = self.rxs[i].as_ref().unwrap();
        let att = h.att;
        if let Some(rx) = F::rx_clone(&h.rx) {
            self.rx_att[att] += 1;
            self.rxs[j] = Some(RxHandle { rx, att });
        }
    }

    /// CLOSING: the receiver throws away what is committed up to the first claim in flight;
    /// with nothing in flight the channel is CLOSED. Returns what was discarded.
    fn discard_pass(&mut self) -> (u64, u64) {
        let (mut n, mut b) = (0, 0);
        while self.queue.front().is_some_and(|e| !e.held) {
            let e = self.queue.pop_front().unwrap();
            self.fates[e.id as usize] = Fate::Discarded;
            n += 1;
            b += e.bytes.len() as u64;
        }
        self.discarded.0 += n;
        self.seen.discarded += n;
        self.discarded.1 += b;
        if self.queue.is_empty() {
            self.state = State::Closed;
            self.known_empty = true;
        }
        (n, b)
    }

    /// What a receive sees now; CLOSING: applies the discard pass.
    fn expect(&mut self) -> Expect {
        if self.state >= State::Closing {
            self.discard_pass();
            return Expect::Closed;
        }
        match self.queue.front() {
            Some(e) if !e.held => Expect::Msg,
            Some(_) => Expect::Empty, // a slot in flight at the head
            None if self.state == State::Active => Expect::Empty,
            None => Expect::Closed,
        }
    }

    /// Where did `got` come from? (Only called to explain a failure.)
    fn explain(&self, got: &[u8]) -> String {
        if got.len() < 8 {
            return format!("{} bytes {:?}", got.len(), got);
        }
        let tag = u64::from_le_bytes(got[..8].try_into().unwrap());
        let (sender, id) = ((tag >> 48) as usize, tag & ((1 << 48) - 1));
        let fate = self.fates.get(id as usize).copied();
        let pos = self.queue.iter().position(|e| e.id == id);
        format!(
            "{} bytes tagged sender {sender} id {id} (fate {fate:?}, queue position {pos:?} of {}; next expected id {:?})",
            got.len(),
            self.queue.len(),
            self.queue.front().map(|e| (e.sender, e.id))
        )
    }

    /// A receive returned a message although the model expected `expect`.
    fn unexpected(&self, expect: &Expect, got: &[u8]) {
        if *expect != Expect::Msg {
            panic!(
                "a message arrived where the model expected {expect:?} (state {:?}): {}",
                self.state,
                self.explain(got)
            );
        }
    }

    /// Check a received message against the front entry and pop it.
    fn received(&mut self, got: &[u8]) {
        let Some(front) = self.queue.front() else {
            panic!("received a message although none is queued: {}", self.explain(got));
        };
        assert!(!front.held, "received a message past a slot in flight: {}", self.explain(got));
        if got != front.bytes.as_slice() {
            panic!(
                "received the wrong message: {}; expected {} bytes from sender {} id {}",
                self.explain(got),
                front.bytes.len(),
                front.sender,
                front.id
            );
        }
        let e = self.queue.pop_front().unwrap();
        self.fates[e.id as usize] = Fate::Received;
        self.recv.0 += 1;
        self.recv.1 += e.bytes.len() as u64;
    }

    fn no_message(&mut self, expect: Expect, what: &str) {
        match (expect, what) {
            (Expect::Empty, "Empty" | "Timeout") => {
                if !self.queue.is_empty() {
                    self.seen.empty_behind_held += 1;
                }
                if self.queue.is_empty() {
                    self.known_empty = true;
                }
            }
            (Expect::Closed, "Closed") => {
                if self.state == State::Draining {
                    assert!(self.queue.is_empty());
                    self.state = State::Closed;
                    self.known_empty = true;
                }
            }
            (Expect::Msg, w) => {
                let f = self.queue.front().unwrap();
                panic!("{w} although a {}-byte message (sender {} id {}) is committed", f.bytes.len(), f.sender, f.id)
            }
            (e, w) => panic!("receive returned {w}, model expected {e:?} (state {:?})", self.state),
        }
    }

    fn recv(&mut self, r: u8, kind: RecvKind) {
        let Some(i) = live(&self.rxs, r) else { return };
        let expect = self.expect();
        let kind = match kind {
            RecvKind::TimeoutShort if expect == Expect::Empty && !self.sleep_ok() => RecvKind::TimeoutZero,
            k => k,
        };
        let rx = &mut self.rxs[i].as_mut().unwrap().rx;
        let try_map = |e: TryRecvError| match e {
            TryRecvError::Empty => "Empty",
            TryRecvError::Closed => "Closed",
            TryRecvError::Corrupt(c) => panic!("receive: corrupt: {c}"),
            TryRecvError::PeerDead(p) => panic!("receive: PeerDead({p}) although no process died"),
        };
        let to_map = |e: RecvTimeoutError| match e {
            RecvTimeoutError::Timeout => "Timeout",
            RecvTimeoutError::Closed => "Closed",
            RecvTimeoutError::Corrupt(c) => panic!("receive: corrupt: {c}"),
            RecvTimeoutError::PeerDead(p) => panic!("receive: PeerDead({p}) although no process died"),
        };
        let res = match kind {
            RecvKind::Try => F::try_recv(rx).map_err(try_map),
            RecvKind::Into => {
                let mut buf = vec![0xEE; 7];
                F::try_recv_into(rx, &mut buf)
                    .map(|n| {
                        assert_eq!(n, buf.len(), "try_recv_into: returned length");
                        buf
                    })
                    .map_err(try_map)
            }
            RecvKind::TimeoutZero => F::recv_timeout(rx, Duration::ZERO).map_err(to_map),
            RecvKind::TimeoutShort => F::recv_timeout(rx, Duration::from_micros(100)).map_err(to_map),
        };
        match res {
            Ok(got) => {
                self.unexpected(&expect, &got);
                self.received(&got)
            }
            Err(what) => self.no_message(expect, what),
        }
    }

    fn recv_batch(&mut self, r: u8, max: u8) {
        let Some(i) = live(&self.rxs, r) else { return };
        let max = max as usize % 12;
        let expect = self.expect();
        let rx = &mut self.rxs[i].as_mut().unwrap().rx;
        match F::try_recv_batch(rx, max) {
            Ok(got) => {
                self.unexpected(&expect, &got[0]);
                assert!(got.len() <= max.max(1), "a batch of {} for max {max}", got.len());
                // Exactly the run of committed single-record messages at the head (a message
                // in pieces comes alone), unless pieces of refused sends sit in between.
                let whole = |e: &Entry| !e.held && e.bytes.len() <= F::whole_limit();
                let run = match self.queue.front() {
                    Some(e) if !e.held && !whole(e) => 1,
                    _ => self.queue.iter().take_while(|e| whole(e)).count(),
                };
                let want = run.min(max.max(1));
                if !self.junk_ever {
                    assert_eq!(got.len(), want, "batch size (max {max})");
                } else {
                    assert!(got.len() <= want.max(1), "batch of {} where at most {want} are ready", got.len());
                }
                if got.len() > 1 {
                    self.seen.recv_batch_multi += 1;
                }
                for m in &got {
                    self.received(m);
                }
            }
            Err(e) => {
                let what = match e {
                    TryRecvError::Empty => "Empty",
                    TryRecvError::Closed => "Closed",
                    TryRecvError::Corrupt(c) => panic!("try_recv_batch: corrupt: {c}"),
                    TryRecvError::PeerDead(p) => panic!("try_recv_batch: PeerDead({p}) although no process died"),
                };
                self.no_message(expect, what);
            }
        }
    }

    fn recv_ref(&mut self, r: u8, part: Option<u16>) {
        let Some(i) = live(&self.rxs, r) else { return };
        let expect = self.expect();
        let rx = &mut self.rxs[i].as_mut().unwrap().rx;
        match F::try_recv_ref(rx, part) {
            Ok(RefRead::Whole(got)) => {
                self.unexpected(&expect, &got);
                self.received(&got)
            }
            Ok(RefRead::Part { len, off, bytes }) => {
                self.unexpected(&expect, &bytes);
                let Some(front) = self.queue.front().filter(|e| !e.held) else {
                    panic!("recv_ref returned a {len}-byte message, model expected {expect:?}");
                };
                assert_eq!(len, front.bytes.len(), "recv_ref: length of sender {} id {}", front.sender, front.id);
                assert!(bytes == front.bytes[off..off + bytes.len()], "recv_ref: bytes at {off}");
                let whole = front.bytes.clone();
                self.received(&whole);
            }
            Err(e) => {
                let what = match e {
                    TryRecvError::Empty => "Empty",
                    TryRecvError::Closed => "Closed",
                    TryRecvError::Corrupt(c) => panic!("try_recv_ref: corrupt: {c}"),
                    TryRecvError::PeerDead(p) => panic!("try_recv_ref: PeerDead({p}) although no process died"),
                };
                self.no_message(expect, what);
            }
        }
    }

    /// `Receiver::close` (CLOSING for everyone): the backlog is discarded and reported.
    fn receiver_close(&mut self, r: u8, commit_held: bool) {
        let Some(i) = live(&self.rxs, r) else { return };
        self.resolve_all(commit_held);
        self.raise(State::Closing);
        let d = F::rx_close(&mut self.rxs[i].as_mut().unwrap().rx).expect("Receiver::close");
        let (n, b) = self.discard_pass();
        assert_eq!(self.state, State::Closed, "nothing in flight: CLOSED after the close");
        assert_eq!(d.msgs, n, "Receiver::close reports the messages it discarded");
        self.check_discarded_bytes(d.bytes, b, "Receiver::close");
    }

    fn drop_receiver(&mut self, r: u8, commit_held: bool) {
        let Some(i) = live(&self.rxs, r) else { return };
        let att = self.rxs[i].as_ref().unwrap().att;
        let last = self.rx_att[att] == 1 && self.live_rx_atts() == 1;
        if last {
            self.resolve_all(commit_held);
        }
        drop(self.rxs[i].take());
        self.rx_att[att] -= 1;
        if last {
            // The last receiver gone: CLOSING, the backlog discarded and counted.
            self.raise(State::Closing);
            self.discard_pass();
            assert_eq!(self.state, State::Closed);
        }
    }

    fn check_discarded_bytes(&self, got: u64, want: u64, who: &str) {
        if common::avoid("discarded-bytes") {
            assert!(got >= want, "{who}: {got} bytes discarded, at least {want} expected");
        } else {
            assert_eq!(got, want, "{who}: discarded bytes (accepted messages only)");
        }
    }

    // --- everything ------------------------------------------------------------------------

    fn op(&mut self, op: &Op) {
        match *op {
            Op::NewSender { via_fd } => self.new_sender(via_fd),
            Op::CloneSender { h } => self.clone_sender(h),
            Op::DropSender { h } => self.drop_sender(h),
            Op::Send { h, size, fill, wait } => self.send(h, size, fill, wait),
            Op::SendBatch { h, ref sizes, fill } => self.send_batch(h, sizes, fill),
            Op::Reserve { h, size, fill, split } => self.reserve(h, size, fill, split),
            Op::Resolve { s, how } => {
                if !self.held.is_empty() {
                    self.resolve(s as usize % self.held.len(), how);
                }
            }
            Op::SenderClose { h } => {
                if let Some(i) = live(&self.txs, h) {
                    let t = self.txs[i].as_ref().unwrap();
                    F::tx_close(&t.tx);
                    self.tx_unflushed[t.att] = (0, 0);
                    self.raise(State::Draining);
                }
            }
            Op::SenderStats { h } => {
                if let Some(i) = live(&self.txs, h) {
                    let t = self.txs[i].as_ref().unwrap();
                    let s = F::tx_stats(&t.tx).expect("Sender::stats");
                    self.tx_unflushed[t.att] = (0, 0);
                    self.check_stats(&s);
                }
            }
            Op::Drain => {
                let before = F::drain(&self.ch).expect("drain");
                assert_eq!(before, self.state, "drain reports the state found");
                self.raise(State::Draining);
            }
            Op::CloseNow => {
                let before = F::close_now(&self.ch).expect("close_now");
                assert_eq!(before, self.state, "close_now reports the state found");
                // The receiver throws the backlog away at its next operation.
                self.raise(State::Closing);
            }
            Op::Recv { r, kind } => self.recv(r, kind),
            Op::RecvBatch { r, max } => self.recv_batch(r, max),
            Op::RecvRef { r, part } => self.recv_ref(r, part),
            Op::ReceiverClose { r, commit_held } => self.receiver_close(r, commit_held),
            Op::DropReceiver { r, commit_held } => self.drop_receiver(r, commit_held),
            Op::NewReceiver { via_fd } => self.new_receiver(via_fd),
            Op::CloneReceiver { r } => self.clone_receiver(r),
        }
        self.check();
    }

    fn check_stats(&self, s: &Stats) {
        assert_eq!(s.state, self.state, "Stats::state");
        assert_eq!((s.capacity, s.max_message), (CAP, MAX_MESSAGE as u64));
        let pending = self.tx_unflushed.iter().fold((0, 0), |a, u| (a.0 + u.0, a.1 + u.1));
        assert!(
            s.sent_msgs <= self.sent.0 && s.sent_msgs + pending.0 >= self.sent.0,
            "sent_msgs {} for {} accepted ({} possibly not flushed)",
            s.sent_msgs,
            self.sent.0,
            pending.0
        );
        assert!(
            s.sent_bytes <= self.sent.1 && s.sent_bytes + pending.1 >= self.sent.1,
            "sent_bytes {} for {} accepted ({} possibly not flushed)",
            s.sent_bytes,
            self.sent.1,
            pending.1
        );
        assert_eq!((s.recv_msgs, s.recv_bytes), self.recv, "received counters");
        assert_eq!(s.discarded_msgs, self.discarded.0, "discarded_msgs");
        self.check_discarded_bytes(s.discarded_bytes, self.discarded.1, "Stats::discarded_bytes");
        assert_eq!(s.senders, self.live_tx_atts(), "sender attachments");
        assert_eq!(s.receivers, self.live_rx_atts(), "receiver attachments");
        match self.state {
            State::Active => {
                assert_eq!((s.draining_ns, s.closing_ns, s.closed_ns), (None, None, None), "timestamps while ACTIVE")
            }
            State::Draining => assert!(s.draining_ns.is_some() && s.closing_ns.is_none(), "DRAINING timestamps"),
            State::Closing => assert!(s.closing_ns.is_some() && s.closed_ns.is_none(), "CLOSING timestamps"),
            State::Closed => assert!(s.closed_ns.is_some(), "CLOSED without a timestamp"),
        }
    }

    fn check(&self) {
        let s = F::ch_stats(&self.ch).expect("stats");
        self.check_stats(&s);
        assert_eq!(F::ch_state(&self.ch).unwrap(), self.state, "Channel::state");
        for t in self.txs.iter().flatten() {
            assert_eq!(F::tx_state(&t.tx).unwrap(), self.state, "Sender::state");
        }
        for r in self.rxs.iter().flatten() {
            assert_eq!(F::rx_state(&r.rx).unwrap(), self.state, "Receiver::state");
            let rs = F::rx_stats(&r.rx).unwrap();
            assert_eq!((rs.recv_msgs, rs.discarded_msgs, rs.state), (s.recv_msgs, s.discarded_msgs, s.state));
        }
        let queued = self.queue.iter().filter(|e| !e.held).count() as u64;
        assert_eq!(
            self.sent.0,
            self.recv.0 + self.discarded.0 + queued,
            "model: accepted = received + discarded + queued"
        );
    }

    /// Close, drain everything, drop every handle; then everything accepted was received or
    /// discarded and the channel is CLOSED.
    fn finish(mut self) {
        self.resolve_all(true);
        self.check();
        match live(&self.txs, 0) {
            Some(i) => {
                let t = self.txs[i].as_ref().unwrap();
                F::tx_close(&t.tx);
                self.tx_unflushed[t.att] = (0, 0);
            }
            None => {
                F::drain(&self.ch).expect("drain");
            }
        }
        self.raise(State::Draining);
        if live(&self.rxs, 0).is_none() && self.state != State::Closed {
            self.new_receiver(false);
        }
        let mut rounds = 0;
        while live(&self.rxs, 0).is_some() && self.state != State::Closed {
            self.recv(0, RecvKind::Try);
            rounds += 1;
            assert!(rounds < 10_000, "no end-of-stream after {rounds} receives");
        }
        self.check();
        assert!(self.queue.is_empty(), "{} messages never received nor discarded", self.queue.len());
        while let Some(i) = live(&self.txs, 0) {
            let att = self.txs[i].take().unwrap().att;
            self.tx_handle_gone(att);
        }
        while let Some(i) = live(&self.rxs, 0) {
            let att = self.rxs[i].take().unwrap().att;
            self.rx_att[att] -= 1;
        }
        let s = F::ch_stats(&self.ch).expect("stats");
        assert_eq!(s.state, State::Closed);
        assert_eq!((s.senders, s.receivers), (0, 0), "attach counts after every handle is gone");
        assert_eq!((s.sent_msgs, s.sent_bytes), self.sent, "sent counters once every sender detached");
        assert_eq!(s.sent_msgs, s.recv_msgs + s.discarded_msgs, "every accepted message received or discarded");
        assert!(self.fates.iter().all(|&f| f != Fate::Queued), "a message left queued");
        if std::env::var_os("SHMQ_FUZZ_SUMMARY").is_some() {
            eprintln!("summary: {} sent={} recv={} {:?}", F::NAME, self.sent.0, self.recv.0, self.seen);
        }
    }
}

fn run<F: Flavor>(input: &Input) {
    let mut m = Model::<F>::new(input.receiver_first);
    for op in input.ops.iter().take(MAX_OPS) {
        m.op(op);
    }
    m.finish();
}

fuzz_target!(|input: Input| {
    // MPMC joins once src/mpmc.rs is complete; until then every input runs on MPSC.
    let _ = input.flavor;
    run::<Mpsc>(&input);
});
