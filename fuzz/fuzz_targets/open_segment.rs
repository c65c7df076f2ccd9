//! Fuzz target: arbitrary bytes as the content of a segment.
//!
//! A segment's content is hostile input (DESIGN-NOTES section 3): whatever the bytes, opening it
//! and then using it must end in `Ok` or a typed error, never a panic, a hang, an abort or UB.
//!
//! Two input modes:
//! * `Raw(bytes)`: the file is exactly these bytes (up to 64 KiB + header). Exercises the
//!   size / magic / version checks.
//! * `Patched { base, patches, ops }`: one of a few valid segment images made by shmq itself
//!   (fresh, messages in flight, wrapped with padding, fragmented, aborted, DRAINING, CLOSING,
//!   large max_message), then a list of patches (header fields with edge values, record headers
//!   with a valid tag, raw ring bytes, a resize). This gets past the magic check and reaches the
//!   ring. Then the channel is opened and a list of non-blocking operations runs on it.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use arbitrary::Arbitrary;
use common::*;
use libfuzzer_sys::fuzz_target;
use shmq::{Channel, Config, Receiver, Sender};
use std::os::fd::OwnedFd;
use std::sync::OnceLock;
use std::time::Duration;

/// Largest file the target makes: header + a 64 KiB ring.
const MAX_SEGMENT: usize = HEADER_SIZE + 65536;
const MAX_OPS: usize = 64;

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(Vec<u8>),
    Patched { base: u8, patches: Vec<Patch>, ops: Vec<Op> },
}

#[derive(Arbitrary, Debug)]
enum Patch {
    /// One of the header words (see `FIELDS`).
    Field { field: u8, value: Value },
    /// Any byte of the header page.
    HeaderByte { off: u16, byte: u8 },
    /// An aligned word of the ring.
    RingWord { slot: u16, value: Value },
    /// Any byte of the ring.
    RingByte { off: u16, byte: u8 },
    /// A record header with a valid tag at an aligned ring offset (kind 0 and 7 are invalid).
    Record { slot: u16, kind: u8, len: Value },
    /// A record header `skip` records after the head (where the receiver looks next).
    RecordAtHead { skip: u8, kind: u8, len: Value },
    /// The word after the record header at the head: a FIRST record's announced total length.
    TotalAtHead { skip: u8, value: Value },
    /// Change the file size.
    Resize { size: u32 },
}

#[derive(Arbitrary, Debug)]
enum Op {
    TakeSender,
    TakeReceiver,
    TrySend { len: u16, fill: u8 },
    TryReserve { len: u16, commit: Option<u16> },
    TryRecv,
    TryRecvRef { at: u16 },
    RecvTimeoutZero,
    SenderClose,
    ReceiverClose,
    Drain,
    CloseNow,
    Stats,
    DropSender,
    DropReceiver,
}

fn cfg() -> Config {
    // Zero open timeout: an all-zero file is "not initialised yet", reported at once.
    Config::new().open_timeout(Duration::ZERO).spin(Duration::ZERO)
}

/// A snapshot of a live channel's segment with the attach counts cleared (as if every handle
/// had gone), so that opening it can take both roles.
fn snap(ch: &Channel) -> Vec<u8> {
    let mut img = snapshot(ch.as_fd());
    for off in [OFF_SENDERS, OFF_RECEIVERS, OFF_HANDLES] {
        write_le(&mut img, off, 4, 0);
    }
    img
}

fn small(cap: usize, max: u64) -> Config {
    Config::new().capacity(cap).max_message(max).spin(Duration::ZERO)
}

/// Valid images made by shmq itself, covering the record kinds and states.
fn bases() -> &'static [Vec<u8>] {
    static BASES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    BASES.get_or_init(|| {
        let mut v = Vec::new();
        let pair = |c: &Config| {
            let ch = Channel::anonymous(c).unwrap();
            let (tx, rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
            (ch, tx, rx)
        };
        // 0: fresh.
        v.push(snap(&Channel::anonymous(&small(4096, 65536)).unwrap()));
        // 1: three whole messages in flight.
        {
            let (ch, mut tx, _rx) = pair(&small(4096, 65536));
            for len in [0usize, 5, 100] {
                tx.try_send(pattern(len as u64, len, 1)).unwrap();
            }
            v.push(snap(&ch));
        }
        // 2: wrapped: a padding record before a message, then another message.
        {
            let (ch, mut tx, mut rx) = pair(&small(4096, 65536));
            for i in 0..9 {
                tx.try_send(pattern(i, 400, 2)).unwrap();
                rx.try_recv().unwrap();
            }
            tx.try_send(pattern(9, 600, 2)).unwrap();
            tx.try_send(pattern(10, 7, 2)).unwrap();
            v.push(snap(&ch));
        }
        // 3: one fragmented message (FIRST, MIDDLE, LAST) in flight.
        {
            let (ch, mut tx, _rx) = pair(&small(4096, 65536));
            tx.try_send(pattern(3, 3000, 3)).unwrap();
            v.push(snap(&ch));
        }
        // 4: an aborted fragmented send (FIRST, ABORT) between whole messages.
        {
            let (ch, mut tx, _rx) = pair(&small(4096, 65536));
            tx.try_send(pattern(0, 950, 4)).unwrap();
            tx.try_send(pattern(1, 950, 4)).unwrap();
            assert!(tx.try_send(pattern(2, 3000, 4)).unwrap_err().is_full());
            tx.try_send(pattern(3, 7, 4)).unwrap();
            v.push(snap(&ch));
        }
        // 5: DRAINING with a backlog.
        {
            let (ch, mut tx, _rx) = pair(&small(4096, 65536));
            for i in 0..3 {
                tx.try_send(pattern(i, 10 + i as usize, 5)).unwrap();
            }
            ch.drain().unwrap();
            v.push(snap(&ch));
        }
        // 6: CLOSING with a backlog not yet discarded.
        {
            let (ch, mut tx, _rx) = pair(&small(4096, 65536));
            for i in 0..3 {
                tx.try_send(pattern(i, 20, 6)).unwrap();
            }
            ch.close_now().unwrap();
            v.push(snap(&ch));
        }
        // 7: a channel configured for the largest messages shmq allows, fragment in flight.
        {
            let (ch, mut tx, _rx) = pair(&small(8192, 1 << 40));
            tx.try_send(pattern(7, 5000, 7)).unwrap();
            v.push(snap(&ch));
        }
        // 8: the largest ring the target uses, a mix of messages.
        {
            let (ch, mut tx, _rx) = pair(&small(65536, 1 << 20));
            for (i, len) in [1usize, 16000, 20000, 3].into_iter().enumerate() {
                tx.try_send(pattern(i as u64, len, 8)).unwrap();
            }
            v.push(snap(&ch));
        }
        // The field table must describe the images (it is copied from src/layout.rs).
        let f = &v[1];
        assert_eq!(read_le(f, OFF_MAGIC, 8), MAGIC, "layout changed: update fuzz/fuzz_targets/common");
        assert_eq!(read_le(f, OFF_STATE, 4), 1, "layout changed: update fuzz/fuzz_targets/common");
        assert_eq!(read_le(f, 40, 8), 4096, "layout changed: update fuzz/fuzz_targets/common");
        assert_eq!(read_le(f, OFF_HEAD, 8), 0, "layout changed: update fuzz/fuzz_targets/common");
        assert_eq!(read_le(f, OFF_TAIL, 8), 8 + 16 + 112, "layout changed: update fuzz/fuzz_targets/common");
        assert_eq!(read_le(f, HEADER_SIZE, 8), record_header(1, 0), "record encoding changed");
        v
    })
}

fn apply(img: &mut Vec<u8>, p: &Patch) {
    let cap = img.len().saturating_sub(HEADER_SIZE);
    let ring_word = |img: &mut Vec<u8>, ring_off: usize, v: u64| {
        if cap >= 8 {
            let at = HEADER_SIZE + (ring_off % cap) / 8 * 8;
            write_le(img, at, 8, v);
        }
    };
    let head_pos = |img: &Vec<u8>, skip: u8| (read_le(img, OFF_HEAD, 8) as usize).wrapping_add(8 * skip as usize);
    match *p {
        Patch::Field { field, value } => {
            let (off, width, _) = FIELDS[field as usize % FIELDS.len()];
            if off + width <= img.len() {
                let cur = read_le(img, off, width);
                write_le(img, off, width, value.resolve(cur));
            }
        }
        Patch::HeaderByte { off, byte } => {
            let off = off as usize % HEADER_SIZE;
            if off < img.len() {
                img[off] = byte;
            }
        }
        Patch::RingWord { slot, value } => {
            if cap >= 8 {
                let at = HEADER_SIZE + (slot as usize * 8) % cap / 8 * 8;
                let cur = read_le(img, at, 8);
                write_le(img, at, 8, value.resolve(cur));
            }
        }
        Patch::RingByte { off, byte } => {
            if cap > 0 {
                img[HEADER_SIZE + off as usize % cap] = byte;
            }
        }
        Patch::Record { slot, kind, len } => {
            let len = len.resolve(8) as u32;
            ring_word(img, slot as usize * 8, record_header(kind % (KINDS + 2), len));
        }
        Patch::RecordAtHead { skip, kind, len } => {
            let len = len.resolve(8) as u32;
            let at = head_pos(img, skip);
            ring_word(img, at, record_header(kind % (KINDS + 2), len));
        }
        Patch::TotalAtHead { skip, value } => {
            let at = head_pos(img, skip).wrapping_add(8);
            ring_word(img, at, value.resolve(4096));
        }
        Patch::Resize { size } => img.resize(size as usize % (MAX_SEGMENT + 1), 0),
    }
}

struct Run<'a> {
    ch: &'a Channel,
    tx: Option<Sender>,
    rx: Option<Receiver>,
    seq: u64,
    /// Largest message length the segment may legitimately deliver.
    bound: usize,
}

impl Run<'_> {
    fn got(&self, len: usize) {
        assert!(len <= self.bound, "received {len} bytes, beyond both the ring and max_message");
    }

    fn op(&mut self, op: &Op) {
        match *op {
            Op::TakeSender => {
                if self.tx.is_none() {
                    self.tx = ok(self.ch.sender());
                } else {
                    assert!(self.ch.sender().is_err(), "a second sender role was handed out");
                }
            }
            Op::TakeReceiver => {
                if self.rx.is_none() {
                    self.rx = ok(self.ch.receiver());
                } else {
                    assert!(self.ch.receiver().is_err(), "a second receiver role was handed out");
                }
            }
            Op::TrySend { len, fill } => {
                if let Some(tx) = &mut self.tx {
                    self.seq += 1;
                    let msg = pattern(self.seq, len as usize, fill);
                    if let Err(e) = tx.try_send(msg.clone()) {
                        note(&e);
                        assert_eq!(e.into_inner(), msg, "a refused message must come back unchanged");
                    }
                }
            }
            Op::TryReserve { len, commit } => {
                if let Some(tx) = &mut self.tx {
                    match tx.try_reserve(len as usize) {
                        Ok(mut slot) => {
                            assert_eq!(slot.len(), len as usize);
                            self.seq += 1;
                            let data = pattern(self.seq, slot.len(), 9);
                            slot.write_at(0, &data);
                            if let Some(c) = commit
                                && let Err(e) = slot.commit_len(c as usize)
                            {
                                let n = (c as usize).min(len as usize);
                                assert_eq!(e.into_inner(), data[..n], "refused commit hands back the bytes");
                            }
                        }
                        Err(e) => {
                            note(&e);
                        }
                    }
                }
            }
            Op::TryRecv => {
                if let Some(rx) = &mut self.rx {
                    match rx.try_recv() {
                        Ok(m) => self.got(m.len()),
                        Err(e) => {
                            note(&e);
                        }
                    }
                }
            }
            Op::TryRecvRef { at } => {
                if let Some(rx) = &mut self.rx {
                    match rx.try_recv_ref() {
                        Ok(m) => {
                            let len = m.len();
                            assert!(len <= self.bound, "received {len} bytes");
                            if len > 0 {
                                let mut b = [0u8; 1];
                                m.read_at(at as usize % len, &mut b);
                                let _ = m.as_ptr();
                            }
                            if len <= 4096 {
                                assert_eq!(m.to_vec().len(), len);
                            }
                        }
                        Err(e) => {
                            note(&e);
                        }
                    }
                }
            }
            Op::RecvTimeoutZero => {
                if let Some(rx) = &mut self.rx {
                    match rx.recv_timeout(Duration::ZERO) {
                        Ok(m) => self.got(m.len()),
                        Err(e) => {
                            note(&e);
                        }
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
                let _ = ok(self.ch.state());
                if let Some(s) = ok(self.ch.stats()) {
                    let _ = format!("{s:?}");
                }
                if let Some(tx) = &self.tx {
                    let _ = (tx.state(), tx.stats(), tx.max_zero_copy());
                }
                if let Some(rx) = &self.rx {
                    let _ = (rx.state(), rx.stats());
                }
            }
            Op::DropSender => self.tx = None,
            Op::DropReceiver => self.rx = None,
        }
    }
}

/// What runs when the input names no operations: both roles, a few receives, a send, closes.
const DEFAULT_OPS: &[Op] = &[
    Op::TakeReceiver,
    Op::TryRecv,
    Op::TryRecvRef { at: 3 },
    Op::TryRecv,
    Op::TakeSender,
    Op::TrySend { len: 10, fill: 1 },
    Op::TrySend { len: 3000, fill: 2 },
    Op::TryReserve { len: 100, commit: Some(50) },
    Op::TryRecv,
    Op::TryRecv,
    Op::Stats,
    Op::SenderClose,
    Op::TryRecv,
    Op::TryRecv,
    Op::ReceiverClose,
    Op::Stats,
];

fn fd() -> &'static OwnedFd {
    static FD: OnceLock<OwnedFd> = OnceLock::new();
    FD.get_or_init(|| memfd(c"shmq-fuzz-open"))
}

fuzz_target!(|input: Input| {
    let (image, ops): (Vec<u8>, &[Op]) = match &input {
        Input::Raw(bytes) => (bytes[..bytes.len().min(MAX_SEGMENT)].to_vec(), DEFAULT_OPS),
        Input::Patched { base, patches, ops } => {
            let b = bases();
            let mut img = b[*base as usize % b.len()].clone();
            for p in patches.iter().take(64) {
                apply(&mut img, p);
            }
            if avoid("counter-overflow") {
                // Known bug: a counter near u64::MAX makes the next send/receive overflow.
                for &off in COUNTERS {
                    let v = read_le(&img, off, 8);
                    write_le(&mut img, off, 8, v & 0xffff_ffff);
                }
            }
            (img, if ops.is_empty() { DEFAULT_OPS } else { &ops[..ops.len().min(MAX_OPS)] })
        }
    };
    let fd = fd();
    fill(fd, &image);
    let ch = match Channel::from_fd(dup(fd), &cfg()) {
        Ok(ch) => ch,
        Err(e) => {
            note(&e);
            return;
        }
    };
    // What validation promised: the sizes are the file's.
    let cap = read_le(&image, 40, 8) as usize;
    assert_eq!(cap + HEADER_SIZE, image.len(), "opened a segment whose ring does not fill the file");
    let max_message = read_le(&image, OFF_MAX_MESSAGE, 8);
    if let Some(s) = ok(ch.stats()) {
        assert_eq!(s.capacity, cap);
        assert_eq!(s.max_message, max_message);
    }
    let bound = cap.max(max_message.min(usize::MAX as u64) as usize);
    let mut run = Run { ch: &ch, tx: None, rx: None, seq: 0, bound };
    for op in ops {
        run.op(op);
    }
    drop(run);
});
