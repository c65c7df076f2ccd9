#![cfg(not(shmq_loom))] // these drive the public API, which loom builds do not have
//! Multi-process tests of the multi-producer flavours (`shmq::mpsc`, `shmq::mpmc`): every
//! producer and consumer is a real process.
//!
//! Children are this test binary started again through libtest, running only the `#[ignore]`d
//! [`child_entry`] test with their role in `SHMQ_IT_ROLE` (see `common::Scope::spawn`). Every
//! test ends with `Scope::finish`: no `/dev/shm/shmq.*` entry of the test is left and every child
//! was reaped. Children report counts to the parent on stdout (`common::report`).
//!
//! Every test message carries its producer and sequence number and a checksum (see
//! [`make_message`]); receivers check each message they get, so a lost, duplicated, reordered,
//! torn or mixed-up message fails the test with the producer and sequence number concerned.
//!
//! Producers wait at a start barrier (every producer attached, see [`wait_for_senders`]) so that
//! they really send at the same time, and so that none can finish and detach before the last
//! one attached (the last sender detaching drains the channel: a late producer would be refused).
//!
//! The heavy tests take `common::exclusive()`: they keep both CPUs busy, and must not run at the
//! same time as each other or as the timing tests of the other test binaries (under nextest).

mod common;

use common::*;
use shmq::mpmc;
use shmq::{
    Config, RecvError, RecvTimeoutError, SegmentError, SendError, SendTimeoutError, State, Stats, TryRecvError,
    TrySendError, mpsc, shm_path,
};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Longest a child of the light tests may run.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a child of the heavy tests may run (they take a few seconds on 2 busy cores).
const HEAVY_TIMEOUT: Duration = Duration::from_secs(120);
/// After this long a heavy test's channel is closed, so that blocked calls return and the test
/// fails on its own checks instead of hanging.
const WATCHDOG_AFTER: Duration = Duration::from_secs(100);
/// Longest a receive of the light tests may wait.
const RECV_TIMEOUT: Duration = Duration::from_secs(30);

/// Entry point of every child process. Does nothing unless started by `Scope::spawn`.
#[test]
#[ignore = "entry point of the child processes of the other tests; does nothing when run directly"]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else { return };
    match role.as_str() {
        "produce" => child_produce(),
        "consume" => child_consume(),
        "close_race" => child_close_race(),
        "attach_hold" => child_attach_hold(),
        "fd_send" => child_fd_send(),
        "refused" => child_refused(),
        other => panic!("unknown child role {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Test messages.

/// Bytes of the header every test message starts with: the checksum (u64 LE, hash64 of every
/// byte after it), the producer id (u32 LE), the body length (u32 LE), the sequence number
/// (u64 LE). The body is pseudo-random, seeded by (producer, sequence number).
const HDR: usize = 24;
/// Largest message of the "small" size mix: total sizes are uniform in HDR..=SMALL_MAX.
const SMALL_MAX: usize = 4096;
/// Size of the large messages of test 4 (8 MiB, header included).
const LARGE: usize = 8 << 20;
const BODY_SEED: u64 = 0xB0D1_5EED_0000_0001;
const SIZE_SEED: u64 = 0x512E_5EED_0000_0002;

fn seed(base: u64, id: u32, seq: u64) -> u64 {
    base ^ (u64::from(id) << 48) ^ seq
}

/// Message `seq` of producer `id` with a `body_len`-byte body, into `buf`.
fn make_message(id: u32, seq: u64, body_len: usize, buf: &mut Vec<u8>) {
    buf.clear();
    buf.resize(HDR + body_len, 0);
    buf[8..12].copy_from_slice(&id.to_le_bytes());
    buf[12..16].copy_from_slice(&u32::try_from(body_len).unwrap().to_le_bytes());
    buf[16..24].copy_from_slice(&seq.to_le_bytes());
    SplitMix64::new(seed(BODY_SEED, id, seq)).fill(&mut buf[HDR..]);
    let sum = hash64(&buf[8..]);
    buf[..8].copy_from_slice(&sum.to_le_bytes());
}

/// (producer id, sequence number) of a received message, after checking its length and checksum.
fn parse_message(msg: &[u8]) -> Result<(u32, u64), String> {
    if msg.len() < HDR {
        return Err(format!("a {}-byte message, shorter than the {HDR}-byte header", msg.len()));
    }
    let word = |r: std::ops::Range<usize>| {
        let mut b = [0u8; 8];
        b[..r.len()].copy_from_slice(&msg[r]);
        u64::from_le_bytes(b)
    };
    let (sum, id, body_len, seq) = (word(0..8), word(8..12) as u32, word(12..16) as usize, word(16..24));
    if body_len != msg.len() - HDR {
        return Err(format!(
            "message (producer {id}, seq {seq}) is {} bytes, its header says {}",
            msg.len(),
            HDR + body_len
        ));
    }
    if hash64(&msg[8..]) != sum {
        return Err(format!("message (producer {id}, seq {seq}, {} bytes): checksum mismatch", msg.len()));
    }
    Ok((id, seq))
}

/// The size mixes a producer can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sizes {
    /// Total sizes uniform in HDR..=SMALL_MAX.
    Small,
    /// Even sequence numbers: LARGE bytes; odd ones: as `Small`.
    Large,
}

impl Sizes {
    fn from_env() -> Sizes {
        match env_var("SHMQ_IT_SIZES").as_str() {
            "small" => Sizes::Small,
            "large" => Sizes::Large,
            other => panic!("unknown size mix {other:?}"),
        }
    }

    fn env(self) -> &'static str {
        match self {
            Sizes::Small => "small",
            Sizes::Large => "large",
        }
    }

    /// Body length of message `seq` of producer `id`.
    fn body_len(self, id: u32, seq: u64) -> usize {
        if self == Sizes::Large && seq % 2 == 0 {
            return LARGE - HDR;
        }
        let r = SplitMix64::new(seed(SIZE_SEED, id, seq)).next_u64();
        (r % (SMALL_MAX - HDR + 1) as u64) as usize
    }
}

/// A receiver's bookkeeping when it must get every producer's messages exactly once and in
/// order (the MPSC receivers).
struct InOrder {
    next: Vec<u64>,
    msgs: u64,
    bytes: u64,
}

impl InOrder {
    fn new(producers: usize) -> InOrder {
        InOrder { next: vec![0; producers], msgs: 0, bytes: 0 }
    }

    fn check(&mut self, msg: &[u8]) -> Result<(u32, u64), String> {
        let (id, seq) = parse_message(msg)?;
        let Some(next) = self.next.get_mut(id as usize) else {
            return Err(format!("message (seq {seq}) from unknown producer {id}"));
        };
        if seq != *next {
            let what = if seq < *next { "a duplicate or out of order" } else { "messages lost or out of order" };
            return Err(format!("producer {id}: received seq {seq}, expected {next}: {what}"));
        }
        *next += 1;
        self.msgs += 1;
        self.bytes += msg.len() as u64;
        Ok((id, seq))
    }
}

/// Receive from an MPSC receiver until end-of-stream, rotating through the receive forms
/// (`recv_into`, `recv_batch`, `recv_ref`, `try_recv_into`), checking every message with `chk`.
/// `after` is called after every message (e.g. to trigger something once enough arrived).
fn receive_all_mpsc(rx: &mut mpsc::Receiver, chk: &mut InOrder, mut after: impl FnMut(&InOrder)) {
    fn fail(e: String, chk: &InOrder) -> ! {
        panic!("after {} messages: {e}", chk.msgs)
    }
    let mut buf = Vec::new();
    for round in 0u64.. {
        let closed = match round % 4 {
            0 => match rx.recv_into(&mut buf) {
                Ok(n) => {
                    assert_eq!(n, buf.len(), "recv_into returned a length other than the buffer's");
                    chk.check(&buf).unwrap_or_else(|e| fail(e, chk));
                    false
                }
                Err(RecvError::Closed) => true,
                Err(e) => fail(format!("recv_into: {e}"), chk),
            },
            1 => match rx.recv_batch(64) {
                Ok(batch) => {
                    assert!(!batch.is_empty(), "an empty batch");
                    for view in batch.iter() {
                        view.copy_into(&mut buf);
                        chk.check(&buf).unwrap_or_else(|e| fail(e, chk));
                        after(chk);
                    }
                    false
                }
                Err(RecvError::Closed) => true,
                Err(e) => fail(format!("recv_batch: {e}"), chk),
            },
            2 => match rx.recv_ref() {
                Ok(m) => {
                    buf.resize(m.len(), 0);
                    m.read_at(0, &mut buf);
                    drop(m);
                    chk.check(&buf).unwrap_or_else(|e| fail(e, chk));
                    false
                }
                Err(RecvError::Closed) => true,
                Err(e) => fail(format!("recv_ref: {e}"), chk),
            },
            _ => match rx.try_recv_into(&mut buf) {
                Ok(_) => {
                    chk.check(&buf).unwrap_or_else(|e| fail(e, chk));
                    false
                }
                Err(TryRecvError::Empty) => continue,
                Err(TryRecvError::Closed) => true,
                Err(e) => fail(format!("try_recv_into: {e}"), chk),
            },
        };
        if closed {
            return;
        }
        if round % 4 != 1 {
            after(chk);
        }
    }
}

fn assert_unlinked(name: &str) {
    assert!(!shm_path(name).exists(), "the last handle of a CLOSED channel must remove {}", shm_path(name).display());
}

// ---------------------------------------------------------------------------------------------
// Producers: the same code for both flavours.

/// What a producer needs of a sender; implemented for `mpsc::Sender` and `mpmc::Sender`.
trait Tx {
    fn send_msg<'a>(&self, m: &'a [u8]) -> Result<(), SendError<&'a [u8]>>;
    fn try_send_msg<'a>(&self, m: &'a [u8]) -> Result<(), TrySendError<&'a [u8]>>;
    fn send_timeout_msg<'a>(&self, m: &'a [u8], t: Duration) -> Result<(), SendTimeoutError<&'a [u8]>>;
    fn send_batch_msgs(&self, m: &[Vec<u8>]) -> Result<(), SendError<usize>>;
    /// `reserve`, `write_at`, `commit`. `Err(None)`: `reserve` refused (it has nothing to hand
    /// back); `Err(Some(msg))`: `commit` refused, handing `msg` back.
    fn reserve_commit(&self, m: &[u8]) -> Result<(), Option<SendError<Vec<u8>>>>;
    fn reserve_err(&self, len: usize) -> Option<SendError<()>>;
    fn max_zero_copy(&self) -> usize;
    fn stats(&self) -> Stats;
}

macro_rules! impl_tx {
    ($flavour:ident) => {
        impl Tx for $flavour::Sender {
            fn send_msg<'a>(&self, m: &'a [u8]) -> Result<(), SendError<&'a [u8]>> {
                self.send(m)
            }
            fn try_send_msg<'a>(&self, m: &'a [u8]) -> Result<(), TrySendError<&'a [u8]>> {
                self.try_send(m)
            }
            fn send_timeout_msg<'a>(&self, m: &'a [u8], t: Duration) -> Result<(), SendTimeoutError<&'a [u8]>> {
                self.send_timeout(m, t)
            }
            fn send_batch_msgs(&self, m: &[Vec<u8>]) -> Result<(), SendError<usize>> {
                self.send_batch(m)
            }
            fn reserve_commit(&self, m: &[u8]) -> Result<(), Option<SendError<Vec<u8>>>> {
                let mut slot = match self.reserve(m.len()) {
                    Ok(slot) => slot,
                    Err(SendError::Closed(())) => return Err(None),
                    Err(e) => panic!("reserve({}): {e}", m.len()),
                };
                assert_eq!(slot.len(), m.len());
                slot.write_at(0, m);
                slot.commit().map_err(Some)
            }
            fn reserve_err(&self, len: usize) -> Option<SendError<()>> {
                self.reserve(len).err()
            }
            fn max_zero_copy(&self) -> usize {
                $flavour::Sender::max_zero_copy(self)
            }
            fn stats(&self) -> Stats {
                $flavour::Sender::stats(self).expect("stats")
            }
        }
    };
}

impl_tx!(mpsc);
impl_tx!(mpmc);

/// `try_send` until it is accepted (yielding, then sleeping briefly, while the ring is full).
fn try_send_until_accepted<T: Tx>(tx: &T, m: &[u8]) -> Result<(), String> {
    for attempt in 0u64.. {
        match tx.try_send_msg(m) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(back)) => {
                assert!(std::ptr::eq(back, m), "try_send handed back another message");
                if attempt < 100 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            Err(e) => return Err(format!("try_send: {e}")),
        }
    }
    unreachable!()
}

/// Start barrier: wait until `producers` senders are attached, or until one of them has
/// already passed the barrier (sent something or closed), so that no producer can finish and
/// detach (draining the channel) before the last one attached.
fn wait_for_senders<T: Tx>(tx: &T, producers: u32) {
    let t0 = Instant::now();
    loop {
        let st = tx.stats();
        if st.senders >= producers || st.sent_msgs > 0 || st.state != State::Active {
            return;
        }
        let attached = st.senders;
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "start barrier: only {attached} of {producers} senders attached"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Send messages `0..count` of producer `id`, rotating through the send forms (`send`,
/// `send_timeout`, `reserve`+`commit`, `try_send`, `send_batch`). Returns the bytes sent.
fn produce<T: Tx>(tx: &T, id: u32, count: u64, sizes: Sizes) -> u64 {
    let mut buf = Vec::new();
    let mut batch: Vec<Vec<u8>> = vec![Vec::new(); 4];
    let (mut seq, mut bytes) = (0u64, 0u64);
    let zero_copy = tx.max_zero_copy();
    while seq < count {
        if seq % 16 == 4 && seq + batch.len() as u64 <= count {
            for (k, m) in batch.iter_mut().enumerate() {
                let s = seq + k as u64;
                make_message(id, s, sizes.body_len(id, s), m);
                bytes += m.len() as u64;
            }
            tx.send_batch_msgs(&batch).unwrap_or_else(|e| panic!("producer {id}: batch from seq {seq}: {e}"));
            seq += batch.len() as u64;
            continue;
        }
        make_message(id, seq, sizes.body_len(id, seq), &mut buf);
        bytes += buf.len() as u64;
        let result = match seq % 16 {
            9 | 10 if buf.len() <= zero_copy => tx.reserve_commit(&buf).map_err(|e| format!("reserve/commit: {e:?}")),
            11 if buf.len() <= zero_copy => try_send_until_accepted(tx, &buf),
            13 => tx.send_timeout_msg(&buf, HEAVY_TIMEOUT).map_err(|e| format!("send_timeout: {e}")),
            _ => tx.send_msg(&buf).map_err(|e| format!("send: {e}")),
        };
        result.unwrap_or_else(|e| panic!("producer {id}: seq {seq} ({} bytes): {e}", buf.len()));
        seq += 1;
    }
    bytes
}

/// Role `produce`: opens SHMQ_IT_NAME (flavour SHMQ_IT_FLAVOUR), attaches a sender, waits for
/// SHMQ_IT_PRODUCERS senders, sends SHMQ_IT_COUNT messages as producer SHMQ_IT_ID, detaches.
fn child_produce() {
    let name = env_var("SHMQ_IT_NAME");
    let id: u32 = env_var("SHMQ_IT_ID").parse().unwrap();
    let count: u64 = env_var("SHMQ_IT_COUNT").parse().unwrap();
    let producers: u32 = env_var("SHMQ_IT_PRODUCERS").parse().unwrap();
    let sizes = Sizes::from_env();
    let run = |tx: &dyn Fn() -> u64| {
        let t0 = Instant::now();
        let bytes = tx();
        report("secs", t0.elapsed().as_secs_f64());
        report("bytes", bytes);
        report("sent", count);
    };
    match env_var("SHMQ_IT_FLAVOUR").as_str() {
        "mpsc" => {
            let ch = mpsc::Channel::open(&name, &Config::new()).unwrap();
            let tx = ch.sender().unwrap();
            wait_for_senders(&tx, producers);
            run(&|| produce(&tx, id, count, sizes));
        }
        "mpmc" => {
            let ch = mpmc::Channel::open(&name, &Config::new()).unwrap();
            let tx = ch.sender().unwrap();
            wait_for_senders(&tx, producers);
            run(&|| produce(&tx, id, count, sizes));
        }
        other => panic!("unknown flavour {other:?}"),
    }
}

/// Spawn `n` `produce` children (ids 0..n) on channel `name`.
fn spawn_producers(scope: &Scope, flavour: &str, name: &str, n: u32, count: u64, sizes: Sizes) -> Vec<Proc> {
    let (n_s, count_s) = (n.to_string(), count.to_string());
    (0..n)
        .map(|id| {
            let id_s = id.to_string();
            scope.spawn(
                "produce",
                &[
                    ("SHMQ_IT_FLAVOUR", flavour),
                    ("SHMQ_IT_NAME", name),
                    ("SHMQ_IT_ID", &id_s),
                    ("SHMQ_IT_COUNT", &count_s),
                    ("SHMQ_IT_PRODUCERS", &n_s),
                    ("SHMQ_IT_SIZES", sizes.env()),
                ],
            )
        })
        .collect()
}

/// Check what every producer reported; returns the total bytes they sent.
fn finish_producers(producers: Vec<Finished>, count: u64) -> u64 {
    let mut bytes = 0;
    for out in producers {
        out.assert_success();
        assert_eq!(out.report_u64("sent"), count);
        bytes += out.report_u64("bytes");
        eprintln!("  producer pid {}: {} s", out.pid, out.report("secs"));
    }
    bytes
}

/// MPSC parent side of tests 1 and 4: receive everything from `producers` producers of `count`
/// messages each, in order per producer, then end-of-stream.
fn mpsc_stream(tag: &str, cfg: &Config, producers: u32, count: u64, sizes: Sizes) {
    let _busy = exclusive();
    let scope = Scope::new(tag);
    let name = scope.name("ch");
    let ch = mpsc::Channel::create(&name, cfg).unwrap();
    let mut rx = ch.receiver().unwrap();
    let watchdog = {
        let ch = ch.clone();
        Watchdog::with(WATCHDOG_AFTER, "MPSC stream", move || drop(ch.close_now()))
    };
    let t0 = Instant::now();
    let children = spawn_producers(&scope, "mpsc", &name, producers, count, sizes);
    let mut chk = InOrder::new(producers as usize);
    let mut max_senders = 0;
    receive_all_mpsc(&mut rx, &mut chk, |c| {
        if c.msgs % 4096 == 1 {
            max_senders = max_senders.max(ch.stats().unwrap().senders);
        }
    });
    let elapsed = t0.elapsed();
    let outs: Vec<Finished> = children.into_iter().map(|p| p.wait(HEAVY_TIMEOUT)).collect();
    // End-of-stream came only after every producer's last message.
    if chk.next != vec![count; producers as usize] {
        let all: Vec<String> = outs.iter().map(Finished::output).collect();
        panic!(
            "end-of-stream after {:?} messages per producer, {count} expected; stats {:?}\n{}",
            chk.next,
            ch.stats(),
            all.join("\n")
        );
    }
    let bytes = finish_producers(outs, count);
    assert_eq!(chk.bytes, bytes, "bytes received vs bytes the producers sent");
    eprintln!(
        "{tag}: {producers} producer processes -> 1 receiver: {} messages, {:.1} MB in {:.2} s: {:.2} M msg/s, \
         {:.2} GB/s (process start-up included; at most {max_senders} senders seen attached)",
        chk.msgs,
        chk.bytes as f64 / 1e6,
        elapsed.as_secs_f64(),
        chk.msgs as f64 / elapsed.as_secs_f64() / 1e6,
        chk.bytes as f64 / elapsed.as_secs_f64() / 1e9
    );
    let st = ch.stats().unwrap();
    let total = u64::from(producers) * count;
    assert_eq!((st.sent_msgs, st.recv_msgs, st.discarded_msgs), (total, total, 0), "{st:?}");
    assert_eq!((st.sent_bytes, st.recv_bytes), (bytes, bytes), "{st:?}");
    assert_eq!((st.state, st.senders), (State::Closed, 0), "{st:?}");
    assert!(st.draining_ns.is_some() && st.closing_ns.is_none(), "DRAINING, never CLOSING: {st:?}");
    drop(watchdog); // it holds a handle
    drop(rx);
    drop(ch);
    assert_unlinked(&name);
    scope.finish();
}

// ---------------------------------------------------------------------------------------------
// 1. MPSC: 4 producer processes x 250,000 messages of random sizes, one receiver.

#[test]
fn mpsc_four_producer_processes_quarter_million_messages_each() {
    mpsc_stream("mpsc4", &Config::new().capacity(1 << 20), 4, 250_000, Sizes::Small);
}

/// The same through a 16 KiB ring: it is full most of the time, the producers contend for every
/// claim and sleep and wake often, and 4 KiB messages are a quarter of the ring (the largest
/// sent whole).
#[test]
fn mpsc_four_producer_processes_through_a_small_ring() {
    mpsc_stream("mpsc4small", &Config::new().capacity(16 << 10), 4, 50_000, Sizes::Small);
}

// ---------------------------------------------------------------------------------------------
// 4. MPSC: 8 MiB messages through a 1 MiB ring, from 3 producer processes at once.

#[test]
fn mpsc_eight_mib_messages_from_three_processes_through_a_one_mib_ring() {
    // 10 messages each: 5 of 8 MiB (alternating with small ones; one batch holds two of them).
    mpsc_stream("mpscbig", &Config::new().capacity(1 << 20).max_message(16 << 20), 3, 10, Sizes::Large);
}

// ---------------------------------------------------------------------------------------------
// 2. MPMC: 4 producer processes, 4 consumer processes; every message exactly once.

/// Role `consume`: opens the MPMC channel SHMQ_IT_NAME, receives until end-of-stream with every
/// receive form, checks every message and that each producer's messages come in increasing
/// sequence order, and writes the (producer u32 LE, seq u64 LE) of every message, in receive
/// order, to SHMQ_IT_OUT.
fn child_consume() {
    let name = env_var("SHMQ_IT_NAME");
    let producers: usize = env_var("SHMQ_IT_PRODUCERS").parse().unwrap();
    let out = PathBuf::from(env_var("SHMQ_IT_OUT"));
    let ch = mpmc::Channel::open(&name, &Config::new()).unwrap();
    let rx = ch.receiver().unwrap();
    let mut last: Vec<Option<u64>> = vec![None; producers];
    let mut log = Vec::new();
    let (mut msgs, mut bytes, mut batches) = (0u64, 0u64, 0u64);
    let mut take = |msg: &[u8]| {
        let (id, seq) = parse_message(msg).unwrap_or_else(|e| panic!("after {msgs} messages: {e}"));
        let prev = last.get_mut(id as usize).unwrap_or_else(|| panic!("message from unknown producer {id}"));
        if let Some(p) = *prev {
            assert!(seq > p, "producer {id}: seq {seq} received after seq {p} by the same consumer");
        }
        *prev = Some(seq);
        log.extend_from_slice(&id.to_le_bytes());
        log.extend_from_slice(&seq.to_le_bytes());
        msgs += 1;
        bytes += msg.len() as u64;
    };
    let mut buf = Vec::new();
    for round in 0u64.. {
        let end = match round % 4 {
            0 => rx.recv_into(&mut buf).map(|_| take(&buf)),
            1 => rx.recv_batch(16).map(|batch| {
                batches += 1;
                for view in batch.iter() {
                    view.copy_into(&mut buf);
                    take(&buf);
                }
            }),
            2 => rx.recv_ref().map(|m| {
                buf.resize(m.len(), 0);
                m.read_at(0, &mut buf);
                drop(m);
                take(&buf);
            }),
            _ => match rx.recv_timeout(HEAVY_TIMEOUT) {
                Ok(v) => {
                    take(&v);
                    Ok(())
                }
                Err(RecvTimeoutError::Closed) => Err(RecvError::Closed),
                Err(e) => panic!("recv_timeout: {e}"),
            },
        };
        match end {
            Ok(()) => {}
            Err(RecvError::Closed) => break,
            Err(e) => panic!("after {msgs} messages: {e}"),
        }
    }
    assert_eq!(rx.try_recv(), Err(TryRecvError::Closed), "end-of-stream is final");
    std::fs::write(&out, &log).expect("write the consumer's log");
    report("received", msgs);
    report("bytes", bytes);
    report("batches", batches);
}

/// Removes the given files when dropped (the consumers' logs, also when the test fails).
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[test]
fn mpmc_four_producer_and_four_consumer_processes_every_message_exactly_once() {
    const PRODUCERS: u32 = 4;
    const CONSUMERS: usize = 4;
    const COUNT: u64 = 50_000;
    let _busy = exclusive();
    let scope = Scope::new("mpmc4x4");
    let name = scope.name("ch");
    let ch = mpmc::Channel::create(&name, &Config::new().capacity(1 << 20)).unwrap();
    let watchdog = {
        let ch = ch.clone();
        Watchdog::with(WATCHDOG_AFTER, "MPMC 4x4", move || drop(ch.close_now()))
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let logs = RemoveOnDrop((0..CONSUMERS).map(|i| dir.join(format!("{}consumer{i}.log", scope.prefix()))).collect());
    let t0 = Instant::now();
    let consumers: Vec<Proc> = logs
        .0
        .iter()
        .map(|out| {
            scope.spawn(
                "consume",
                &[
                    ("SHMQ_IT_NAME", &name),
                    ("SHMQ_IT_PRODUCERS", &PRODUCERS.to_string()),
                    ("SHMQ_IT_OUT", out.to_str().unwrap()),
                ],
            )
        })
        .collect();
    let producers = spawn_producers(&scope, "mpmc", &name, PRODUCERS, COUNT, Sizes::Small);
    let sent_bytes = finish_producers(producers.into_iter().map(|p| p.wait(HEAVY_TIMEOUT)).collect(), COUNT);
    let mut got = Vec::new();
    for c in consumers {
        let out = c.wait(HEAVY_TIMEOUT);
        out.assert_success();
        got.push((out.report_u64("received"), out.report_u64("bytes"), out.report_u64("batches")));
    }
    let elapsed = t0.elapsed();

    // Union of the consumers' logs = every (producer, seq) exactly once.
    let mut seen = vec![vec![usize::MAX; COUNT as usize]; PRODUCERS as usize];
    for (c, path) in logs.0.iter().enumerate() {
        let log = std::fs::read(path).unwrap();
        assert_eq!(log.len() as u64, got[c].0 * 12, "consumer {c}: log length vs its report");
        for rec in log.chunks_exact(12) {
            let id = u32::from_le_bytes(rec[..4].try_into().unwrap()) as usize;
            let seq = u64::from_le_bytes(rec[4..].try_into().unwrap()) as usize;
            assert!(id < PRODUCERS as usize && seq < COUNT as usize, "consumer {c}: message ({id}, {seq}) never sent");
            let slot = &mut seen[id][seq];
            assert!(*slot == usize::MAX, "message ({id}, {seq}) received twice: by consumers {} and {c}", *slot);
            *slot = c;
        }
    }
    for (id, s) in seen.iter().enumerate() {
        let lost: Vec<usize> = (0..s.len()).filter(|&q| s[q] == usize::MAX).take(10).collect();
        assert!(lost.is_empty(), "producer {id}: messages never received (first ones): {lost:?}");
    }
    let total = u64::from(PRODUCERS) * COUNT;
    let (recv_msgs, recv_bytes) = got.iter().fold((0, 0), |(m, b), g| (m + g.0, b + g.1));
    assert_eq!((recv_msgs, recv_bytes), (total, sent_bytes));
    eprintln!(
        "mpmc: {PRODUCERS} producer processes -> {CONSUMERS} consumer processes: {total} messages, {:.1} MB in {:.2} s \
         ({:.2} M msg/s, process start-up included); per consumer (messages, bytes, batches): {got:?}",
        sent_bytes as f64 / 1e6,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64() / 1e6
    );
    let st = ch.stats().unwrap();
    assert_eq!((st.sent_msgs, st.recv_msgs, st.discarded_msgs), (total, total, 0), "{st:?}");
    assert_eq!((st.sent_bytes, st.recv_bytes), (sent_bytes, sent_bytes), "{st:?}");
    assert_eq!((st.state, st.senders, st.receivers), (State::Closed, 0, 0), "{st:?}");
    drop(watchdog);
    drop(ch);
    assert_unlinked(&name);
    drop(logs);
    scope.finish();
}

// ---------------------------------------------------------------------------------------------
// 3. A producer process closes the MPSC channel while three others are sending.

/// Role `close_race`: producer SHMQ_IT_ID of SHMQ_IT_PRODUCERS on MPSC channel SHMQ_IT_NAME.
/// Sends until a send is refused (rotating through `send`, `send_batch`, `reserve`+`commit`).
/// If SHMQ_IT_CTL is set (the closer), it also polls that SPSC channel and calls
/// `Sender::close` when a message arrives there. After the first refusal, every send form must be
/// refused too, handing the message back. Reports `accepted` (sequence numbers 0..accepted were
/// accepted) and `refused`.
fn child_close_race() {
    let name = env_var("SHMQ_IT_NAME");
    let id: u32 = env_var("SHMQ_IT_ID").parse().unwrap();
    let producers: u32 = env_var("SHMQ_IT_PRODUCERS").parse().unwrap();
    let ctl = std::env::var("SHMQ_IT_CTL").ok().map(|n| shmq::Channel::open(&n, &Config::new()).unwrap());
    let mut ctl_rx = ctl.as_ref().map(|c| c.receiver().unwrap());
    let ch = mpsc::Channel::open(&name, &Config::new()).unwrap();
    let tx = ch.sender().unwrap();
    wait_for_senders(&tx, producers);
    let (mut accepted, mut refused, mut closed_at) = (0u64, 0u64, None);
    let mut buf = Vec::new();
    let mut batch: Vec<Vec<u8>> = vec![Vec::new(); 3];
    'sending: for round in 0u64.. {
        if let Some(rx) = ctl_rx.as_mut() {
            match rx.try_recv() {
                Ok(_) => {
                    tx.close();
                    closed_at = Some(accepted);
                    ctl_rx = None;
                }
                Err(TryRecvError::Empty) => {}
                Err(e) => panic!("control channel: {e}"),
            }
        }
        match round % 8 {
            6 => {
                for (k, m) in batch.iter_mut().enumerate() {
                    let s = accepted + k as u64;
                    make_message(id, s, Sizes::Small.body_len(id, s), m);
                }
                match tx.send_batch(&batch) {
                    Ok(()) => accepted += 3,
                    Err(SendError::Closed(n)) => {
                        assert!(n < 3, "send_batch refused after accepting all {n}");
                        accepted += n as u64;
                        refused += (3 - n) as u64;
                        break 'sending;
                    }
                    Err(e) => panic!("send_batch: {e}"),
                }
            }
            7 if Sizes::Small.body_len(id, accepted) + HDR <= tx.max_zero_copy() => {
                make_message(id, accepted, Sizes::Small.body_len(id, accepted), &mut buf);
                match tx.reserve_commit(&buf) {
                    Ok(()) => accepted += 1,
                    Err(None) => {
                        refused += 1;
                        break 'sending;
                    }
                    Err(Some(SendError::Closed(back))) => {
                        assert!(back == buf, "commit handed back another message");
                        refused += 1;
                        break 'sending;
                    }
                    Err(Some(e)) => panic!("commit: {e}"),
                }
            }
            _ => {
                make_message(id, accepted, Sizes::Small.body_len(id, accepted), &mut buf);
                match tx.send(&buf[..]) {
                    Ok(()) => accepted += 1,
                    Err(SendError::Closed(back)) => {
                        assert!(std::ptr::eq(back, &buf[..]), "send handed back another message");
                        refused += 1;
                        break 'sending;
                    }
                    Err(e) => panic!("send: {e}"),
                }
            }
        }
        assert!(closed_at.is_none(), "a send after this process's own close was accepted");
    }
    if ctl.is_some() {
        // The closer: refused only by its own close, and at once.
        assert_eq!(closed_at, Some(accepted), "the closer was refused before it closed, or accepted after");
    }
    let state = tx.state().unwrap();
    assert!(state >= State::Draining, "refused while {state:?}");
    // Once refused, always refused, by every form, with the message handed back.
    for s in accepted..accepted + 20 {
        make_message(id, s, Sizes::Small.body_len(id, s), &mut buf);
        match tx.try_send(buf.clone()) {
            Err(TrySendError::Closed(back)) => assert!(back == buf, "try_send handed back another message"),
            other => panic!("try_send after the close: {other:?}"),
        }
        match tx.send_timeout(buf.clone(), Duration::from_secs(5)) {
            Err(SendTimeoutError::Closed(back)) => assert!(back == buf, "send_timeout handed back another message"),
            other => panic!("send_timeout after the close: {other:?}"),
        }
        match tx.send_batch(&[buf.clone(), buf.clone()]) {
            Err(SendError::Closed(0)) => {}
            other => panic!("send_batch after the close: {other:?}"),
        }
        match tx.reserve_err(buf.len().min(tx.max_zero_copy())) {
            Some(SendError::Closed(())) => {}
            other => panic!("reserve after the close: {other:?}"),
        }
        match tx.send(buf.clone()) {
            Err(SendError::Closed(back)) => assert!(back == buf, "send handed back another message"),
            other => panic!("send after the close: {other:?}"),
        }
        refused += 6;
    }
    report("accepted", accepted);
    report("refused", refused);
}

#[test]
fn mpsc_producer_process_closes_while_others_send() {
    let _busy = exclusive();
    // (closer, messages received from every producer before the close is requested, ring size)
    for (round, &(closer, before_close, capacity)) in
        [(0, 3000, 256 << 10), (1, 1, 64 << 10), (2, 200, 4 << 10), (3, 10_000, 1 << 20), (0, 50, 16 << 10)]
            .iter()
            .enumerate()
    {
        close_race_round(round, closer, before_close, capacity);
    }
}

/// One round of the close race: 4 producer processes send until refused; producer `closer`
/// closes the channel once the receiver has `before_close` messages from every producer.
fn close_race_round(round: usize, closer: u32, before_close: u64, capacity: usize) {
    const PRODUCERS: u32 = 4;
    let scope = Scope::new(&format!("mpscclose{round}"));
    let name = scope.name("ch");
    let ctl_name = scope.name("ctl");
    let ch = mpsc::Channel::create(&name, &Config::new().capacity(capacity)).unwrap();
    let mut rx = ch.receiver().unwrap();
    let ctl = shmq::Channel::create(&ctl_name, &Config::new().capacity(4096)).unwrap();
    let mut ctl_tx = Some(ctl.sender().unwrap());
    let watchdog = {
        let ch = ch.clone();
        Watchdog::with(WATCHDOG_AFTER, "MPSC close race", move || drop(ch.close_now()))
    };
    let producers: Vec<Proc> = (0..PRODUCERS)
        .map(|id| {
            let mut env = vec![
                ("SHMQ_IT_NAME", name.clone()),
                ("SHMQ_IT_ID", id.to_string()),
                ("SHMQ_IT_PRODUCERS", PRODUCERS.to_string()),
            ];
            if id == closer {
                env.push(("SHMQ_IT_CTL", ctl_name.clone()));
            }
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            scope.spawn("close_race", &env)
        })
        .collect();

    let mut chk = InOrder::new(PRODUCERS as usize);
    let mut at_close = None;
    receive_all_mpsc(&mut rx, &mut chk, |c| {
        if ctl_tx.is_some() && c.next.iter().all(|&n| n >= before_close) {
            // Every producer is in full flow: ask the closer to close the channel.
            let mut tx = ctl_tx.take().unwrap();
            tx.send_timeout(b"close", RECV_TIMEOUT).unwrap();
            drop(tx);
            at_close = Some(c.next.clone());
        }
    });
    let outs: Vec<Finished> = producers.into_iter().map(|p| p.wait(HEAVY_TIMEOUT)).collect();
    for out in &outs {
        out.assert_success();
    }
    let at_close = at_close.unwrap_or_else(|| {
        let all: Vec<String> = outs.iter().map(Finished::output).collect();
        panic!("end-of-stream before the close was requested (received {:?})\n{}", chk.next, all.join("\n"))
    });
    let reports: Vec<(u64, u64)> =
        outs.iter().map(|out| (out.report_u64("accepted"), out.report_u64("refused"))).collect();
    eprintln!(
        "close race {round} (closer {closer}, {} KiB ring): received per producer when the close was requested \
         {at_close:?}, at the end {:?}; (accepted, refused) per producer {reports:?}",
        capacity >> 10,
        chk.next
    );
    for (id, &(accepted, refused)) in reports.iter().enumerate() {
        // Every accepted send was received exactly once, in order (InOrder checked the order and
        // uniqueness; this checks that none is missing), and nothing else was received.
        assert_eq!(chk.next[id], accepted, "producer {id}: received vs accepted");
        assert!(refused > 0, "producer {id} was never refused");
    }
    let st = ch.stats().unwrap();
    let total: u64 = reports.iter().map(|r| r.0).sum();
    assert_eq!((st.sent_msgs, st.recv_msgs, st.discarded_msgs), (total, total, 0), "{st:?}");
    assert_eq!((st.state, st.senders), (State::Closed, 0), "{st:?}");
    assert!(st.closing_ns.is_none(), "a sender-side close must not discard: {st:?}");
    drop(watchdog);
    drop(rx);
    drop(ch);
    assert_unlinked(&name);
    drop(ctl);
    scope.finish();
}

// ---------------------------------------------------------------------------------------------
// 5a. Senders attach by name from many processes; Stats::senders follows them up and down.

/// Role `attach_hold`: attaches a sender to MPSC channel SHMQ_IT_NAME, sends message 0, waits
/// for a message on SPSC channel SHMQ_IT_CTL, sends message 1, detaches.
fn child_attach_hold() {
    let id: u32 = env_var("SHMQ_IT_ID").parse().unwrap();
    let ctl = shmq::Channel::open(&env_var("SHMQ_IT_CTL"), &Config::new()).unwrap();
    let mut go = ctl.receiver().unwrap();
    let ch = mpsc::Channel::open(&env_var("SHMQ_IT_NAME"), &Config::new()).unwrap();
    let tx = ch.sender().unwrap();
    let mut buf = Vec::new();
    make_message(id, 0, 100, &mut buf);
    tx.send(&buf[..]).unwrap();
    assert_eq!(go.recv_timeout(RECV_TIMEOUT).unwrap(), b"go");
    make_message(id, 1, 200, &mut buf);
    tx.send(&buf[..]).unwrap();
    drop(tx);
    report("done", 1);
}

#[test]
fn mpsc_sender_count_follows_processes_attaching_by_name() {
    const N: u32 = 6;
    let scope = Scope::new("attach");
    let name = scope.name("ch");
    let ch = mpsc::Channel::create(&name, &Config::new().capacity(64 * 1024)).unwrap();
    let mut rx = ch.receiver().unwrap();
    let own = ch.sender().unwrap();
    let st = ch.stats().unwrap();
    assert_eq!((st.senders, st.receivers), (1, 1));
    let ctls: Vec<(String, shmq::Channel)> = (0..N)
        .map(|i| {
            let n = scope.name(&format!("go{i}"));
            let c = shmq::Channel::create(&n, &Config::new().capacity(4096)).unwrap();
            (n, c)
        })
        .collect();
    let mut gos: Vec<shmq::Sender> = ctls.iter().map(|(_, c)| c.sender().unwrap()).collect();
    let children: Vec<Proc> = (0..N)
        .map(|i| {
            let (id, ctl) = (i.to_string(), &ctls[i as usize].0);
            scope.spawn("attach_hold", &[("SHMQ_IT_NAME", &name), ("SHMQ_IT_ID", &id), ("SHMQ_IT_CTL", ctl)])
        })
        .collect();

    // Up: a child's first message means its sender is attached (and stays until we say go).
    let mut chk = InOrder::new(N as usize);
    let mut counts = vec![ch.stats().unwrap().senders];
    for _ in 0..N {
        let m = rx.recv_timeout(RECV_TIMEOUT).unwrap_or_else(|e| panic!("first messages: {e}"));
        let (_, seq) = chk.check(&m).unwrap();
        assert_eq!(seq, 0);
        counts.push(ch.stats().unwrap().senders);
    }
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "sender count went down while attaching: {counts:?}");
    assert_eq!(*counts.last().unwrap(), N + 1, "{counts:?}");

    // Down: one child at a time sends its last message, detaches and exits.
    for (i, child) in children.into_iter().enumerate() {
        gos[i].send(b"go").unwrap();
        gos[i].close();
        let m = rx.recv_timeout(RECV_TIMEOUT).unwrap_or_else(|e| panic!("last message of child {i}: {e}"));
        assert_eq!(chk.check(&m).unwrap(), (i as u32, 1));
        child.wait(CHILD_TIMEOUT).assert_success();
        let st = ch.stats().unwrap();
        assert_eq!(st.senders, N - i as u32, "after child {i} exited: {st:?}");
        assert_eq!(st.state, State::Active, "a sender still attached: {st:?}");
        counts.push(st.senders);
    }
    eprintln!("attach: senders counted over time: {counts:?}");
    // The last sender leaves: DRAINING, then end-of-stream once the backlog (nothing) is read.
    drop(own);
    let st = ch.stats().unwrap();
    assert_eq!((st.senders, st.state), (0, State::Draining), "{st:?}");
    assert_eq!(rx.recv_timeout(RECV_TIMEOUT), Err(RecvTimeoutError::Closed));
    assert_eq!(chk.next, vec![2; N as usize]);
    assert_eq!(ch.state().unwrap(), State::Closed);
    drop(rx);
    drop(gos);
    drop(ctls);
    drop(ch);
    assert_unlinked(&name);
    scope.finish();
}

// ---------------------------------------------------------------------------------------------
// 5b. A sender attached through an inherited descriptor.

/// Role `fd_send`: opens the anonymous MPSC channel whose descriptor number is SHMQ_IT_FD
/// (inherited), checks that the other flavours refuse it, and sends SHMQ_IT_COUNT messages.
fn child_fd_send() {
    let fd: RawFd = env_var("SHMQ_IT_FD").parse().unwrap();
    let count: u64 = env_var("SHMQ_IT_COUNT").parse().unwrap();
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).expect("the inherited fd is open");
    assert!(link.to_string_lossy().starts_with("/memfd:shmq"), "fd {fd} is {link:?}, not a shmq memfd");
    // SAFETY: the parent passed this descriptor number, inherited across exec (no close-on-exec
    // flag), and nothing else in this process owns or closes it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    match shmq::Channel::from_fd(fd.try_clone().unwrap(), &Config::new()) {
        Err(SegmentError::WrongFlavor { .. }) => {}
        other => panic!("an MPSC segment opened as SPSC: {other:?}"),
    }
    match mpmc::Channel::from_fd(fd.try_clone().unwrap(), &Config::new()) {
        Err(SegmentError::WrongFlavor { .. }) => {}
        other => panic!("an MPSC segment opened as MPMC: {other:?}"),
    }
    let ch = mpsc::Channel::from_fd(fd, &Config::new()).unwrap();
    assert!(ch.name().is_none());
    let tx = ch.sender().unwrap();
    let bytes = produce(&tx, 0, count, Sizes::Small);
    drop(tx);
    report("sent", count);
    report("bytes", bytes);
}

#[test]
fn mpsc_sender_attached_through_an_inherited_fd() {
    const COUNT: u64 = 20_000;
    let scope = Scope::new("fd");
    let ch = mpsc::Channel::anonymous(&Config::new().capacity(64 * 1024)).unwrap();
    let mut rx = ch.receiver().unwrap();
    let fd = ch.inheritable_fd().unwrap();
    let child =
        scope.spawn("fd_send", &[("SHMQ_IT_FD", &fd.as_raw_fd().to_string()), ("SHMQ_IT_COUNT", &COUNT.to_string())]);
    drop(fd); // the child has its copy
    let watchdog = {
        let ch = ch.clone();
        Watchdog::with(Duration::from_secs(60), "fd sender", move || drop(ch.close_now()))
    };
    let mut chk = InOrder::new(1);
    let first = rx.recv_timeout(RECV_TIMEOUT).unwrap_or_else(|e| panic!("first message: {e}"));
    chk.check(&first).unwrap();
    // 20,000 messages cannot fit in a 64 KiB ring: the child is still attached.
    assert_eq!(ch.stats().unwrap().senders, 1);
    receive_all_mpsc(&mut rx, &mut chk, |_| {});
    assert_eq!(chk.next, [COUNT]);
    let out = child.wait(CHILD_TIMEOUT);
    out.assert_success();
    assert_eq!(out.report_u64("bytes"), chk.bytes);
    let st = ch.stats().unwrap();
    assert_eq!((st.sent_msgs, st.recv_msgs, st.senders, st.state), (COUNT, COUNT, 0, State::Closed), "{st:?}");
    drop(watchdog);
    drop(rx);
    drop(ch);
    scope.finish();
}

// ---------------------------------------------------------------------------------------------
// 5c. Sends to a channel whose receiver is gone are refused, the message handed back.

/// Role `refused`: attaches a sender to MPSC channel SHMQ_IT_NAME and sends (blocking when the
/// ring is full) until refused; then every send form must be refused, handing the message back.
/// Reports `accepted` and `refused`.
fn child_refused() {
    let id: u32 = env_var("SHMQ_IT_ID").parse().unwrap();
    let ch = mpsc::Channel::open(&env_var("SHMQ_IT_NAME"), &Config::new()).unwrap();
    let tx = ch.sender().unwrap();
    let mut buf = Vec::new();
    let mut accepted = 0u64;
    loop {
        make_message(id, accepted, Sizes::Small.body_len(id, accepted), &mut buf);
        match tx.send(buf.clone()) {
            Ok(()) => accepted += 1,
            Err(SendError::Closed(back)) => {
                assert!(back == buf, "send handed back another message");
                break;
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    let state = tx.state().unwrap();
    assert!(state >= State::Closing, "refused in state {state:?}: the receiver closed, it should be CLOSING or later");
    let mut refused = 1;
    for _ in 0..10 {
        match tx.try_send(buf.clone()) {
            Err(TrySendError::Closed(back)) => assert!(back == buf, "try_send handed back another message"),
            other => panic!("try_send: {other:?}"),
        }
        match tx.send_timeout(buf.clone(), Duration::from_secs(5)) {
            Err(SendTimeoutError::Closed(back)) => assert!(back == buf, "send_timeout handed back another message"),
            other => panic!("send_timeout: {other:?}"),
        }
        match tx.send_batch(&[&buf[..], &buf[..]]) {
            Err(SendError::Closed(0)) => {}
            other => panic!("send_batch: {other:?}"),
        }
        match tx.reserve(buf.len().min(tx.max_zero_copy())) {
            Err(SendError::Closed(())) => {}
            other => panic!("reserve: {other:?}"),
        }
        refused += 4;
    }
    report("accepted", accepted);
    report("refused", refused);
}

#[test]
fn mpsc_sends_without_receiver_are_refused_and_handed_back() {
    const RECEIVED: u64 = 500;
    let scope = Scope::new("norx");
    let name = scope.name("ch");
    let ch = mpsc::Channel::create(&name, &Config::new().capacity(64 * 1024)).unwrap();
    let mut rx = ch.receiver().unwrap();
    // A sender that is sending (and blocked on the full ring) when the receiver goes away.
    let early = scope.spawn("refused", &[("SHMQ_IT_NAME", &name), ("SHMQ_IT_ID", "0")]);
    let mut chk = InOrder::new(1);
    for _ in 0..RECEIVED {
        let m = rx.recv_timeout(RECV_TIMEOUT).unwrap_or_else(|e| panic!("after {} messages: {e}", chk.msgs));
        chk.check(&m).unwrap();
    }
    // Let the sender get ahead: it has sent more than we received (its count reaches the segment
    // every 256 messages and when it sleeps on the full ring).
    let t0 = Instant::now();
    while ch.stats().unwrap().sent_msgs <= RECEIVED {
        assert!(t0.elapsed() < RECV_TIMEOUT, "the sender did not get ahead: {:?}", ch.stats());
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(rx); // receiver-side close: CLOSING, the backlog is discarded and counted
    let out = early.wait(CHILD_TIMEOUT);
    out.assert_success();
    let accepted = out.report_u64("accepted");
    let st = ch.stats().unwrap();
    eprintln!("no receiver: accepted {accepted}, received {RECEIVED}, discarded {}", st.discarded_msgs);
    // Every accepted send was either received or counted as discarded.
    assert_eq!(accepted, RECEIVED + st.discarded_msgs, "{st:?}");
    assert!(st.discarded_msgs > 0, "the sender was ahead of the receiver when it left: {st:?}");
    assert_eq!((st.sent_msgs, st.recv_msgs, st.senders, st.receivers), (accepted, RECEIVED, 0, 0), "{st:?}");
    assert!(st.state >= State::Closing, "{st:?}");

    // A sender that attaches after the receiver left: its very first send is refused.
    let late = scope.spawn("refused", &[("SHMQ_IT_NAME", &name), ("SHMQ_IT_ID", "1")]).wait(CHILD_TIMEOUT);
    late.assert_success();
    assert_eq!(late.report_u64("accepted"), 0);
    assert!(late.report_u64("refused") > 0);
    assert_eq!(ch.stats().unwrap().sent_msgs, accepted);
    drop(ch);
    assert_unlinked(&name);
    scope.finish();
}

// ---------------------------------------------------------------------------------------------
// The helpers themselves.

#[test]
fn helpers_message_format_detects_damage() {
    let mut m = Vec::new();
    make_message(3, 77, 1000, &mut m);
    assert_eq!(parse_message(&m), Ok((3, 77)));
    for pos in [0, 8, 12, 16, 23, 24, 500, 1023] {
        let mut bad = m.clone();
        bad[pos] ^= 0x10;
        assert!(parse_message(&bad).is_err(), "a flipped byte at {pos} went unnoticed");
    }
    assert!(parse_message(&m[..1023]).is_err());
    assert!(parse_message(&m[..10]).is_err());
    make_message(0, 0, 0, &mut m);
    assert_eq!((m.len(), parse_message(&m)), (HDR, Ok((0, 0))));
    let mut chk = InOrder::new(2);
    make_message(1, 0, 5, &mut m);
    assert!(chk.check(&m).is_ok());
    assert!(chk.check(&m).is_err(), "a duplicate went unnoticed");
    make_message(1, 2, 5, &mut m);
    assert!(chk.check(&m).is_err(), "a gap went unnoticed");
    make_message(2, 0, 5, &mut m);
    assert!(chk.check(&m).is_err(), "an unknown producer went unnoticed");
    let lens: Vec<usize> = (0..1000).map(|s| Sizes::Small.body_len(1, s)).collect();
    assert!(lens.iter().all(|&l| HDR + l <= SMALL_MAX));
    assert!(lens.iter().any(|&l| l < 100) && lens.iter().any(|&l| l > SMALL_MAX - HDR - 100));
    assert_eq!(Sizes::Large.body_len(1, 4), LARGE - HDR);
}

// ---------------------------------------------------------------------------------------------
// Minimal reproduction (threads of one process, so it needs no child processes).

/// Regression test (the bug was in src/ring/mpmc.rs `try_take`, found by the MPMC 4×4 test
/// above): a consumer walks the committed units from the head *before* its head CAS, and used
/// to return `Corrupt` at once when a header it read did not decode. Between its check of the
/// cell's sequence word and its read of the header, another consumer can take and release that
/// unit and a producer can reuse the cells for the next lap with a different layout: the word
/// read is then payload of another message, and the CAS would have failed anyway. Small rings
/// with small cells and varied message sizes made it happen within a second.
#[test]
fn mpmc_consumers_never_report_corrupt_on_a_stale_header() {
    const PRODUCERS: u32 = 2;
    const CONSUMERS: usize = 3;
    const COUNT: u64 = 2_000_000;
    let _busy = exclusive();
    let ch = mpmc::Channel::anonymous(&Config::new().capacity(4096).cell_size(16)).unwrap();
    let watchdog = {
        let ch = ch.clone();
        Watchdog::with(Duration::from_secs(60), "MPMC stale-header repro", move || drop(ch.close_now()))
    };
    let rx = ch.receiver().unwrap();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let rx = rx.clone();
            std::thread::spawn(move || {
                let (mut n, mut buf) = (0u64, Vec::new());
                loop {
                    match rx.recv_into(&mut buf) {
                        Ok(_) => {
                            parse_message(&buf).unwrap_or_else(|e| panic!("after {n} messages: {e}"));
                            n += 1;
                        }
                        Err(RecvError::Closed) => return Ok(n),
                        Err(e) => return Err(format!("after {n} messages: {e}")),
                    }
                }
            })
        })
        .collect();
    drop(rx);
    let tx = ch.sender().unwrap();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                for seq in 0..COUNT {
                    let body = (SplitMix64::new(seed(SIZE_SEED, id, seq)).next_u64() % 200) as usize;
                    make_message(id, seq, body, &mut buf);
                    if let Err(e) = tx.send(&buf[..]) {
                        return Err(format!("producer {id}, seq {seq}: {e}"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    drop(tx);
    let sent: Vec<Result<(), String>> = producers.into_iter().map(|p| p.join().unwrap()).collect();
    let got: Vec<Result<u64, String>> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
    drop(watchdog);
    assert!(got.iter().all(Result::is_ok), "consumers: {got:?}; producers: {sent:?}");
    assert!(sent.iter().all(Result::is_ok), "producers: {sent:?}");
    let total: u64 = got.iter().map(|g| *g.as_ref().unwrap()).sum();
    assert_eq!(total, u64::from(PRODUCERS) * COUNT);
}
