//! Fuzz target: a hostile peer scribbles on the shared segment between our operations.
//!
//! Messages are in flight on an anonymous channel (4096-byte ring, 64 KiB messages); the peer
//! holds a second mapping of the same memfd and, between operations, writes header words (with
//! edge values or small moves of the positions), ring words and bytes, forged record headers at
//! the head, or whole forged "commits" at the tail. Every operation must end in a message or a
//! typed error: never a panic, a hang, an abort or an out-of-bounds access. A refused send must
//! still hand its message back unchanged, and no delivered message may be longer than the ring
//! or the channel's max_message.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use arbitrary::Arbitrary;
use common::*;
use libfuzzer_sys::fuzz_target;
use shmq::{Channel, Config, Receiver, Sender};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

const CAP: usize = 4096;
const MAX_MESSAGE: usize = 64 * 1024;
const MAX_OPS: usize = 128;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    // Our side.
    Send {
        len: u16,
        fill: u8,
    },
    Reserve {
        len: u16,
        commit: Option<u16>,
    },
    Recv,
    RecvRef {
        at: u16,
    },
    RecvTimeoutZero,
    /// Waits of 50 µs: the sleeping paths (waiting flags, futex words) under a hostile peer.
    RecvTimeoutShort,
    SendTimeoutShort {
        len: u16,
    },
    SenderClose,
    ReceiverClose,
    Drain,
    CloseNow,
    Stats,
    DropSender,
    DropReceiver,
    NewSender,
    NewReceiver,
    // The peer's scribbles.
    Field {
        field: u8,
        value: Value,
    },
    RingWord {
        slot: u16,
        value: Value,
    },
    RingByte {
        off: u16,
        byte: u8,
    },
    RecordAtHead {
        skip: u8,
        kind: u8,
        len: Value,
    },
    TotalAtHead {
        skip: u8,
        value: Value,
    },
    /// A forged commit: a record header (and, for FIRST, a total) at the tail, then the tail
    /// moved past it, keeping its flag bits.
    ForgeCommit {
        kind: u8,
        len: u16,
        total: Value,
    },
}

/// The peer's view: raw pointers into its own mapping.
struct Peer {
    _map: memmap2::MmapRaw,
    base: *mut u8,
}

impl Peer {
    fn word64(&self, off: usize) -> &AtomicU64 {
        assert!(off.is_multiple_of(8) && off + 8 <= HEADER_SIZE + CAP);
        // SAFETY: in bounds and aligned (the mapping is page aligned); the mapping lives as long
        // as `self`; every access to shared words is atomic.
        unsafe { AtomicU64::from_ptr(self.base.add(off).cast()) }
    }
    fn word32(&self, off: usize) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off + 4 <= HEADER_SIZE + CAP);
        // SAFETY: as in `word64`.
        unsafe { AtomicU32::from_ptr(self.base.add(off).cast()) }
    }
    fn load(&self, off: usize, width: usize) -> u64 {
        if width == 8 {
            self.word64(off).load(Ordering::Relaxed)
        } else {
            self.word32(off).load(Ordering::Relaxed) as u64
        }
    }
    fn store(&self, off: usize, width: usize, v: u64) {
        if width == 8 {
            self.word64(off).store(v, Ordering::Release)
        } else {
            self.word32(off).store(v as u32, Ordering::Release)
        }
    }
    /// Ring word at ring offset `ring_off` (wrapped, aligned down).
    fn ring_word(&self, ring_off: u64) -> &AtomicU64 {
        self.word64(HEADER_SIZE + (ring_off as usize % CAP) / 8 * 8)
    }
    fn ring_byte(&self, ring_off: usize, b: u8) {
        // SAFETY: in bounds of the mapping. Our side runs on this thread, so no access races.
        unsafe { self.base.add(HEADER_SIZE + ring_off % CAP).write_volatile(b) }
    }
    fn head(&self) -> u64 {
        self.load(OFF_HEAD, 8) & !(1 << 63)
    }
}

struct Run {
    ch: Channel,
    peer: Peer,
    tx: Option<Sender>,
    rx: Option<Receiver>,
    seq: u64,
}

impl Run {
    fn got(&self, len: usize) {
        assert!(len <= CAP.max(MAX_MESSAGE), "delivered a {len}-byte message");
    }

    fn op(&mut self, op: Op) {
        match op {
            Op::Send { len, fill } => {
                if let Some(tx) = &mut self.tx {
                    self.seq += 1;
                    let msg = pattern(self.seq, len as usize, fill);
                    if let Err(e) = tx.try_send(msg.clone()) {
                        note(&e);
                        assert_eq!(e.into_inner(), msg, "a refused message must come back unchanged");
                    }
                }
            }
            Op::Reserve { len, commit } => {
                if let Some(tx) = &mut self.tx
                    && let Some(mut slot) = ok(tx.try_reserve(len as usize))
                {
                    assert_eq!(slot.len(), len as usize);
                    self.seq += 1;
                    let data = pattern(self.seq, slot.len(), 3);
                    slot.write_at(0, &data);
                    if let Some(c) = commit
                        && let Err(e) = slot.commit_len(c as usize)
                    {
                        note(&e);
                    }
                }
            }
            Op::Recv => {
                if let Some(rx) = &mut self.rx {
                    match rx.try_recv() {
                        Ok(m) => self.got(m.len()),
                        Err(e) => {
                            note(&e);
                        }
                    }
                }
            }
            Op::RecvRef { at } => {
                if let Some(rx) = &mut self.rx
                    && let Some(m) = ok(rx.try_recv_ref())
                {
                    let len = m.len();
                    assert!(len <= CAP.max(MAX_MESSAGE));
                    if len > 0 {
                        let off = at as usize % len;
                        let mut b = vec![0u8; (len - off).min(32)];
                        m.read_at(off, &mut b);
                        // SAFETY: `len` > 0 readable bytes while `m` lives.
                        let _ = unsafe { m.as_ptr().read_volatile() };
                    }
                    assert_eq!(m.to_vec().len(), len);
                }
            }
            Op::RecvTimeoutZero => {
                if let Some(rx) = &mut self.rx
                    && let Some(m) = ok(rx.recv_timeout(Duration::ZERO))
                {
                    self.got(m.len());
                }
            }
            Op::RecvTimeoutShort => {
                if let Some(rx) = &mut self.rx
                    && let Some(m) = ok(rx.recv_timeout(Duration::from_micros(50)))
                {
                    self.got(m.len());
                }
            }
            Op::SendTimeoutShort { len } => {
                if let Some(tx) = &mut self.tx {
                    self.seq += 1;
                    let msg = pattern(self.seq, len as usize, 7);
                    if let Err(e) = tx.send_timeout(msg.clone(), Duration::from_micros(50)) {
                        assert_eq!(e.into_inner(), msg, "a refused message must come back unchanged");
                    }
                }
            }
            Op::SenderClose => {
                if let Some(tx) = &mut self.tx {
                    tx.close();
                }
            }
            Op::ReceiverClose => {
                if let Some(rx) = &mut self.rx {
                    let _ = ok(rx.close());
                }
            }
            Op::Drain => {
                let _ = ok(self.ch.drain());
            }
            Op::CloseNow => {
                let _ = ok(self.ch.close_now());
            }
            Op::Stats => {
                let _ = (self.ch.state(), format!("{:?}", self.ch.stats()));
                if let Some(tx) = &self.tx {
                    let _ = (tx.state(), tx.stats());
                }
                if let Some(rx) = &self.rx {
                    let _ = (rx.state(), rx.stats());
                }
            }
            Op::DropSender => self.tx = None,
            Op::DropReceiver => self.rx = None,
            Op::NewSender => {
                if self.tx.is_none() {
                    self.tx = ok(self.ch.sender());
                }
            }
            Op::NewReceiver => {
                if self.rx.is_none() {
                    self.rx = ok(self.ch.receiver());
                }
            }
            Op::Field { field, value } => {
                let (off, width, _) = FIELDS[field as usize % FIELDS.len()];
                let mut v = value.resolve(self.peer.load(off, width));
                if avoid("counter-overflow") && COUNTERS.contains(&off) {
                    v &= 0xffff_ffff; // known bug: see common::avoid
                }
                self.peer.store(off, width, v);
            }
            Op::RingWord { slot, value } => {
                let w = self.peer.ring_word(slot as u64 * 8);
                w.store(value.resolve(w.load(Ordering::Relaxed)), Ordering::Relaxed);
            }
            Op::RingByte { off, byte } => self.peer.ring_byte(off as usize, byte),
            Op::RecordAtHead { skip, kind, len } => {
                let at = self.peer.head().wrapping_add(8 * skip as u64);
                let w = self.peer.ring_word(at);
                let cur = w.load(Ordering::Relaxed) & 0xffff_ffff;
                w.store(record_header(kind % (KINDS + 2), len.resolve(cur) as u32), Ordering::Relaxed);
            }
            Op::TotalAtHead { skip, value } => {
                let at = self.peer.head().wrapping_add(8 * skip as u64 + 8);
                let w = self.peer.ring_word(at);
                w.store(value.resolve(w.load(Ordering::Relaxed)), Ordering::Relaxed);
            }
            Op::ForgeCommit { kind, len, total } => {
                let len = len as usize % (CAP / 2);
                let raw_tail = self.peer.load(OFF_TAIL, 8);
                let tail = raw_tail & ((1 << 62) - 1);
                self.peer.ring_word(tail).store(record_header(kind % (KINDS + 2), len as u32), Ordering::Relaxed);
                if len >= 8 {
                    self.peer.ring_word(tail + 8).store(total.resolve(len as u64 * 3), Ordering::Relaxed);
                }
                let new =
                    (raw_tail & !((1 << 62) - 1)) | (tail.wrapping_add(record_size(len) as u64) & ((1 << 62) - 1));
                self.peer.store(OFF_TAIL, 8, new);
            }
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let cfg = Config::new().capacity(CAP).max_message(MAX_MESSAGE as u64).spin(Duration::ZERO);
    let ch = Channel::anonymous(&cfg).expect("anonymous channel");
    let file = std::fs::File::from(ch.as_fd().try_clone_to_owned().expect("dup"));
    let map = memmap2::MmapOptions::new().len(HEADER_SIZE + CAP).map_raw(&file).expect("peer mapping");
    let base = map.as_mut_ptr();
    let peer = Peer { _map: map, base };
    let (tx, rx) = (ch.sender().expect("sender"), ch.receiver().expect("receiver"));
    let mut run = Run { ch, peer, tx: Some(tx), rx: Some(rx), seq: 0 };
    // Some traffic in flight before the peer starts: whole, fragmented, wrapped.
    for len in [5usize, 1500, 40] {
        run.op(Op::Send { len: len as u16, fill: 1 });
    }
    for op in ops.iter().take(MAX_OPS) {
        run.op(*op);
    }
    // Handles dropped last: their closes run against whatever the peer left.
    let Run { ch, tx, rx, peer, .. } = run;
    drop((tx, rx, ch));
    drop(peer);
});
