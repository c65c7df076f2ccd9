//! The byte layout of a shmq segment: one offset table, checked at compile time.
//!
//! ```text
//! offset  size  line           written by            contents
//! 0       128   identity       creator, once         magic (published last), version, ABI, sizes,
//!                                                    creator pid + start time, generation
//! 128     128   lifecycle      anyone (CAS)          state word, attach counts, discard counters,
//!                                                    transition timestamps
//! 256     128   producer       sender                tail word (position | CLOSED | RX_WAITING),
//!                                                    sent counters
//! 384     128   consumer       receiver              head word (position | TX_WAITING),
//!                                                    received counters
//! 512     128   wake           anyone                rx_seq, tx_seq: the two futex words;
//!                                                    rx_waiters, tx_waiters (MPSC/MPMC)
//! 640     512   peers          each attaching process 64 attachment slots: pid, start time, role
//!                              (or a survivor, once  (see peers.rs); 0 = free
//!                              the owner is dead)
//! 1152    128   events         anyone                8 user events (state, seq, waiters; 12 B each)
//! 1280    128   mutexes        their owners          4 user mutexes (owner word, seq, waiters,
//!                                                    health; 24 B each)
//! 1408    2048  intents        each attachment       one intent word per peer slot (MPMC: what an
//!                                                    attachment is about to claim, take or reclaim;
//!                                                    see ring/intent.rs), slot s in line s % 16
//! 3456    640   reserved       -                     zero; room for later versions
//! 4096    cap   ring data      sender / receiver     records (see ring/record.rs), or MPMC cells
//! 4096+cap 8*N  cell seqs      MPMC only             one sequence word per cell (N = cap/cell)
//! ```
//!
//! Lines are 128 bytes, not 64, because x86 prefetches cache lines in adjacent pairs and Apple
//! Silicon has 128-byte lines: the producer and consumer words must never share a pair. The
//! figure is fixed (not `CachePadded`, which changes with the target) and recorded in the ABI word,
//! so a build with another layout refuses to open the segment instead of misreading it.

use crate::sync::{AtomicU32, AtomicU64};

/// Bytes reserved for each line of the header.
pub const LINE: usize = 128;
/// Size of the header; the ring data starts here (page aligned).
pub const HEADER_SIZE: usize = 4096;
/// `b"SHMQSEG1"` read as a little-endian u64. Stored last, with Release, by the creator.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMQSEG1");
/// Bumped whenever the layout or the meaning of a field changes.
pub const LAYOUT_VERSION: u32 = 3;
/// Channel flavours (the `flavor` word of the identity line). One sender, one receiver.
pub const FLAVOR_SPSC: u32 = 1;
/// Many senders, one receiver: Agrona-style claim/commit of variable-length records.
pub const FLAVOR_MPSC: u32 = 2;
/// Many senders, many receivers: Vyukov cells with per-cell sequence words after the ring.
pub const FLAVOR_MPMC: u32 = 3;

/// ABI facts a peer must share with us: pointer width, byte order, line size, record alignment.
pub const fn abi_word() -> u32 {
    let ptr_bytes = std::mem::size_of::<usize>() as u32; // 8 on 64-bit
    let little = if cfg!(target_endian = "little") { 1 } else { 0 };
    ptr_bytes | (little << 8) | ((LINE as u32 / 8) << 16) | ((crate::ring::record::ALIGN as u32) << 24)
}

/// Position bits of the head and tail words. Positions count bytes since creation and never
/// wrap in practice (2^62 bytes is 14 years at 10 GB/s); a position past this mask is corrupt.
pub const POS_MASK: u64 = (1 << 62) - 1;
/// Tail word: the channel no longer accepts sends. Set once, never cleared.
pub const TAIL_CLOSED: u64 = 1 << 63;
/// Tail word: the receiver is (about to be) asleep on `rx_seq`; the next commit must wake it.
pub const TAIL_RX_WAITING: u64 = 1 << 62;
/// Head word: the sender is (about to be) asleep on `tx_seq`; the next release must wake it.
pub const HEAD_TX_WAITING: u64 = 1 << 63;

/// Line 0: identity. Immutable once `magic` is published.
#[repr(C, align(128))]
pub struct Identity {
    pub magic: AtomicU64,
    pub layout_version: AtomicU32,
    pub abi: AtomicU32,
    pub header_size: AtomicU32,
    pub flavor: AtomicU32,
    pub segment_size: AtomicU64,
    pub ring_offset: AtomicU64,
    pub ring_capacity: AtomicU64,
    pub max_message: AtomicU64,
    pub creator_pid: AtomicU32,
    /// MPMC only: bytes per cell (a power of two); 0 for the other flavours.
    pub cell_size: AtomicU32,
    pub creator_start_time: AtomicU64,
    pub generation: AtomicU64,
}

/// Line 1: the lifecycle word and everything that changes only when attaching or closing.
#[repr(C, align(128))]
pub struct LifecycleLine {
    /// `lifecycle::State` as u32; 0 until the creator initialises it.
    pub state: AtomicU32,
    /// Attached senders (0 or 1 for SPSC).
    pub senders: AtomicU32,
    /// Attached receivers (0 or 1 for SPSC).
    pub receivers: AtomicU32,
    /// Open handles of any kind (channel objects); the last one out of a CLOSED channel unlinks.
    pub handles: AtomicU32,
    /// Messages discarded by a CLOSING transition (or a partial message cut by a close).
    pub discarded_msgs: AtomicU64,
    pub discarded_bytes: AtomicU64,
    /// CLOCK_MONOTONIC nanoseconds of each transition (0 = not entered). Diagnostics only.
    pub t_draining: AtomicU64,
    pub t_closing: AtomicU64,
    pub t_closed: AtomicU64,
    /// MPSC: claims skipped by `unblock` because their producer died before committing.
    pub abandoned_claims: AtomicU64,
    /// The first attachment found dead and reaped (a packed `peers::Ident`; 0 = none).
    pub dead_peer: AtomicU64,
    /// Bit 0: a sender has attached at some time; bit 1: a receiver has. Set before the count
    /// is raised, never cleared (see `peers::reconcile`).
    pub ever_attached: AtomicU32,
    /// MPMC: units a consumer took and died before releasing, freed by a producer (messages
    /// among them were lost with that consumer).
    pub reclaimed_takes: AtomicU64,
}

/// Line 2: written only by the producer.
#[repr(C, align(128))]
pub struct ProducerLine {
    /// Position of the end of the last committed record, plus `TAIL_*` flag bits.
    pub tail: AtomicU64,
    /// Messages and payload bytes accepted (diagnostics; may lag the tail by one message).
    pub sent_msgs: AtomicU64,
    pub sent_bytes: AtomicU64,
}

/// Line 3: written only by the consumer.
#[repr(C, align(128))]
pub struct ConsumerLine {
    /// Position up to which records have been consumed, plus `HEAD_TX_WAITING`.
    pub head: AtomicU64,
    pub recv_msgs: AtomicU64,
    pub recv_bytes: AtomicU64,
}

/// Line 4: the futex words. Each is an event count: a waker changes the condition, then bumps
/// the count, then calls FUTEX_WAKE; a sleeper reads the count before checking the condition.
#[repr(C, align(128))]
pub struct WakeLine {
    /// The receiver sleeps here (waiting for data or a close).
    pub rx_seq: AtomicU32,
    /// The sender sleeps here (waiting for space or a close).
    pub tx_seq: AtomicU32,
    /// MPSC/MPMC: receivers (about to be) asleep on `rx_seq`; a committer wakes only if non-zero.
    pub rx_waiters: AtomicU32,
    /// MPSC/MPMC: senders (about to be) asleep on `tx_seq`; a releaser wakes only if non-zero.
    pub tx_waiters: AtomicU32,
}

/// The part of the header that the lock-free protocols operate on. Loom tests build it on the
/// heap; production code finds it at offset 128 of the mapping.
#[repr(C)]
pub struct RingCtl {
    pub lifecycle: LifecycleLine,
    pub producer: ProducerLine,
    pub consumer: ConsumerLine,
    pub wake: WakeLine,
}

/// Attachment slots: who is attached, as what (see `peers`). Lines 5-8.
pub const PEER_SLOTS: usize = 64;

/// Lines 5-8: one word per attachment, 0 = free, else a packed `peers::Ident` (pid, start time,
/// role) written by the attaching process with a CAS and cleared by it when it detaches, or by a
/// survivor that found the process dead.
#[repr(C, align(128))]
pub struct PeerTable {
    pub slots: [AtomicU64; PEER_SLOTS],
}

/// Cross-process events every channel segment carries (`Channel::event`).
pub const EVENTS: usize = 8;
/// Cross-process mutexes every channel segment carries (`Channel::mutex`).
pub const MUTEXES: usize = 4;

/// Line 9: the channel's user events (all zero = unset, nobody waiting).
#[repr(C, align(128))]
pub struct EventLine {
    pub events: [crate::event::EventWords; EVENTS],
}

/// Line 10: the channel's user mutexes (all zero = free, consistent, nobody waiting).
#[repr(C, align(128))]
pub struct MutexLine {
    pub mutexes: [crate::robust_mutex::MutexWords; MUTEXES],
}

/// The whole header as it sits at offset 0 of a segment.
/// Intent words are spread over this many lines, so that up to 16 attachments (the slots are
/// taken lowest first) write their intents on lines of their own.
pub const INTENT_LINES: usize = 16;

/// One line of intent words: those of slots `i`, `i + 16`, `i + 32`, `i + 48`.
#[repr(C, align(128))]
pub struct IntentLine {
    pub words: [AtomicU64; PEER_SLOTS / INTENT_LINES],
}

/// One intent word per peer slot, written only by the attachment holding the slot (see
/// `ring::intent`). Zero means none; a new holder of a slot clears it.
#[repr(C)]
pub struct IntentTable {
    pub lines: [IntentLine; INTENT_LINES],
}

impl IntentTable {
    /// The intent word of peer slot `slot` (None past the table).
    pub fn word(&self, slot: usize) -> Option<&AtomicU64> {
        if slot >= PEER_SLOTS {
            return None;
        }
        self.lines[slot % INTENT_LINES].words.get(slot / INTENT_LINES)
    }
}

#[repr(C)]
pub struct Header {
    pub identity: Identity,
    pub ctl: RingCtl,
    pub peers: PeerTable,
    pub events: EventLine,
    pub mutexes: MutexLine,
    pub intents: IntentTable,
}

impl RingCtl {
    /// A fresh control block in the ACTIVE state (used by loom models and unit tests; a
    /// segment initialises the mapped one in place).
    #[cfg(any(test, shmq_loom))]
    pub fn new_active() -> Self {
        RingCtl {
            lifecycle: LifecycleLine {
                state: AtomicU32::new(crate::lifecycle::State::Active as u32),
                senders: AtomicU32::new(0),
                receivers: AtomicU32::new(0),
                handles: AtomicU32::new(0),
                discarded_msgs: AtomicU64::new(0),
                discarded_bytes: AtomicU64::new(0),
                t_draining: AtomicU64::new(0),
                t_closing: AtomicU64::new(0),
                t_closed: AtomicU64::new(0),
                abandoned_claims: AtomicU64::new(0),
                dead_peer: AtomicU64::new(0),
                ever_attached: AtomicU32::new(0),
                reclaimed_takes: AtomicU64::new(0),
            },
            producer: ProducerLine {
                tail: AtomicU64::new(0),
                sent_msgs: AtomicU64::new(0),
                sent_bytes: AtomicU64::new(0),
            },
            consumer: ConsumerLine {
                head: AtomicU64::new(0),
                recv_msgs: AtomicU64::new(0),
                recv_bytes: AtomicU64::new(0),
            },
            wake: WakeLine {
                rx_seq: AtomicU32::new(0),
                tx_seq: AtomicU32::new(0),
                rx_waiters: AtomicU32::new(0),
                tx_waiters: AtomicU32::new(0),
            },
        }
    }
}

// The offset table above is the contract with other processes (and other builds): check it.
#[cfg(not(shmq_loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<Identity>() == LINE);
    assert!(offset_of!(Identity, magic) == 0);
    assert!(offset_of!(Identity, layout_version) == 8);
    assert!(offset_of!(Identity, abi) == 12);
    assert!(offset_of!(Identity, header_size) == 16);
    assert!(offset_of!(Identity, flavor) == 20);
    assert!(offset_of!(Identity, segment_size) == 24);
    assert!(offset_of!(Identity, ring_offset) == 32);
    assert!(offset_of!(Identity, ring_capacity) == 40);
    assert!(offset_of!(Identity, max_message) == 48);
    assert!(offset_of!(Identity, creator_pid) == 56);
    assert!(offset_of!(Identity, cell_size) == 60);
    assert!(offset_of!(Identity, creator_start_time) == 64);
    assert!(offset_of!(Identity, generation) == 72);
    assert!(offset_of!(Header, ctl) == 128);
    assert!(offset_of!(RingCtl, lifecycle) == 0);
    assert!(offset_of!(RingCtl, producer) == LINE);
    assert!(offset_of!(RingCtl, consumer) == 2 * LINE);
    assert!(offset_of!(RingCtl, wake) == 3 * LINE);
    assert!(offset_of!(LifecycleLine, state) == 0);
    assert!(offset_of!(LifecycleLine, discarded_msgs) == 16);
    assert!(offset_of!(LifecycleLine, t_closed) == 48);
    assert!(offset_of!(LifecycleLine, abandoned_claims) == 56);
    assert!(offset_of!(LifecycleLine, dead_peer) == 64);
    assert!(offset_of!(LifecycleLine, ever_attached) == 72);
    assert!(offset_of!(LifecycleLine, reclaimed_takes) == 80);
    assert!(offset_of!(Header, peers) == 5 * LINE);
    assert!(size_of::<PeerTable>() == 4 * LINE);
    assert!(offset_of!(WakeLine, rx_waiters) == 8);
    assert!(offset_of!(WakeLine, tx_waiters) == 12);
    assert!(offset_of!(Header, events) == 9 * LINE);
    assert!(offset_of!(Header, mutexes) == 10 * LINE);
    assert!(size_of::<EventLine>() == LINE);
    assert!(size_of::<MutexLine>() == LINE);
    assert!(offset_of!(Header, intents) == 11 * LINE);
    assert!(size_of::<IntentLine>() == LINE);
    assert!(size_of::<Header>() == 27 * LINE);
    assert!(size_of::<Header>() <= HEADER_SIZE);
};
