//! Multi-process integration tests: every peer is a real process.
//!
//! A child is this test binary started again (`std::env::current_exe()`) with libtest arguments
//! that run only the `#[ignore]`d [`child_entry`] test, and with its role and the channel name
//! (or an inherited memfd number) in environment variables; see `common::Scope::spawn`. Without
//! the role variable `child_entry` returns at once, so `cargo test -- --ignored` is harmless.
//!
//! Every test with segments or children ends with `Scope::finish`: no `/dev/shm/shmq.*` entry of
//! the test remains and every child was reaped (no zombie). Segments are removed, and children
//! killed and reaped, on failure too (the drops of `Scope` and `Proc`).
//!
//! Wake-up latencies are measured between two CLOCK_MONOTONIC readings taken in two processes:
//! the closer reads the clock just before it calls close, the blocked process reads it right
//! after its blocking call returns. CLOCK_MONOTONIC is one system-wide clock (`std::time::Instant`
//! uses it too, but does not expose its value), so the difference is the wake-up latency, and it
//! excludes process start-up: the close happens only once the blocked process is asleep (its
//! waiting flag is set in the segment and all its threads are in state S). As a cross-check, the
//! transition timestamp shmq itself records (`Stats::closing_ns` / `draining_ns`, also
//! CLOCK_MONOTONIC) must fall between the closer's readings before and after the call.
#![cfg(not(shmq_loom))] // these drive the public API, which loom builds do not have

mod common;

use common::*;
use shmq::{Channel, Config, RecvError, RecvTimeoutError, SendError, State, TryRecvError, shm_path};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The bound on wake-up latency after a close from another process.
const WAKE_LIMIT: Duration = Duration::from_millis(50);
/// Longest any child may run in the light tests (a hang fails the test instead of blocking it).
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the heavy tests' children may run.
const HEAVY_TIMEOUT: Duration = Duration::from_secs(120);

/// Entry point of every child process. Does nothing unless started by `Scope::spawn`.
#[test]
#[ignore = "entry point of the child processes of the other tests; does nothing when run directly"]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else { return };
    match role.as_str() {
        "send5" => child_send5(),
        "block_send" => child_block_send(),
        "block_recv" => child_block_recv(),
        "closer" => child_closer(),
        "big_send" => child_big_send(),
        "stream_send" => child_stream_send(),
        "memfd_echo" => child_memfd_echo(),
        other => panic!("unknown child role {other:?}"),
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    SplitMix64::new(seed).fill(&mut v);
    v
}

/// Latency between the closer's clock reading and the woken process's.
fn wake_latency(what: &str, t_close: u64, t_woke: u64) -> Duration {
    let ns = t_woke.checked_sub(t_close).unwrap_or_else(|| {
        panic!("{what}: returned at {t_woke} ns, before the close at {t_close} ns: it was not blocked")
    });
    Duration::from_nanos(ns)
}

fn assert_fast_wake(what: &str, latency: Duration) {
    println!("{what}: woke {:.3} ms after the close", latency.as_secs_f64() * 1e3);
    assert!(latency < WAKE_LIMIT, "{what}: woke {latency:?} after the close (limit {WAKE_LIMIT:?})");
}

fn assert_between(what: &str, t: Option<u64>, lo: u64, hi: u64) {
    let t = t.unwrap_or_else(|| panic!("{what}: transition time not recorded"));
    assert!(lo <= t && t <= hi, "{what}: recorded at {t} ns, outside the close call [{lo}, {hi}]");
}

fn assert_unlinked(name: &str) {
    assert!(!shm_path(name).exists(), "the last handle of a CLOSED channel must remove {}", shm_path(name).display());
}

// ---------------------------------------------------------------------------------------------
// a. The sender process sends 5 messages and exits before the receiver starts.

fn five_messages() -> Vec<Vec<u8>> {
    // 20000 bytes is more than a quarter of the 64 KiB ring: it travels in fragments.
    [0usize, 1, 7, 1000, 20_000].iter().map(|&len| pattern(len as u64, len)).collect()
}

fn child_send5() {
    let name = env_var("SHMQ_IT_NAME");
    let ch = Channel::create(&name, &Config::new().capacity(64 * 1024)).unwrap();
    let mut tx = ch.sender().unwrap();
    for m in five_messages() {
        // Nobody receives yet: everything must fit. A timeout turns a misfit into a failure.
        tx.send_timeout(m, Duration::from_secs(10)).unwrap();
    }
    tx.close();
    match tx.send(b"late".to_vec()) {
        Err(SendError::Closed(m)) => assert_eq!(m, b"late"),
        other => panic!("send after close: {other:?}"),
    }
    report("sent", 5);
}

#[test]
fn sender_process_exits_before_receiver_starts() {
    let scope = Scope::new("a");
    let name = scope.name("ch");
    let sender = scope.spawn("send5", &[("SHMQ_IT_NAME", &name)]);
    let sender_pid = sender.pid();
    let out = sender.wait(CHILD_TIMEOUT);
    out.assert_success();
    assert_eq!(out.report_u64("sent"), 5);

    // The sender process is gone; its segment remains, DRAINING, with the 5 messages in it.
    let ch = Channel::open(&name, &Config::new()).unwrap();
    assert_eq!(ch.state().unwrap(), State::Draining);
    let st = ch.stats().unwrap();
    assert_eq!((st.sent_msgs, st.recv_msgs, st.creator_pid), (5, 0, sender_pid));
    let mut rx = ch.receiver().unwrap();
    for (i, want) in five_messages().into_iter().enumerate() {
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|e| panic!("message {i}: {e}"));
        assert!(got == want, "message {i}: {} bytes, expected {} bytes", got.len(), want.len());
    }
    assert_eq!(rx.recv(), Err(RecvError::Closed));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    assert_eq!(ch.state().unwrap(), State::Closed);
    assert_eq!(ch.stats().unwrap().recv_msgs, 5);
    drop(rx);
    drop(ch);
    assert_unlinked(&name);
    scope.finish();
}

// ---------------------------------------------------------------------------------------------
// b. A receiver-side close wakes a sender blocked on a full ring, which gets its message back.

/// Opens SHMQ_IT_NAME as sender; if SHMQ_IT_FILL=1 fills the ring with SHMQ_IT_MSG_LEN-byte
/// messages (try_send until Full), then blocks in `send` of one more. Expects `Closed(msg)`.
fn child_block_send() {
    let name = env_var("SHMQ_IT_NAME");
    let len: usize = env_var("SHMQ_IT_MSG_LEN").parse().unwrap();
    let ch = Channel::open(&name, &Config::new()).unwrap();
    let mut tx = ch.sender().unwrap();
    let mut filled = 0u64;
    if env_var("SHMQ_IT_FILL") == "1" {
        loop {
            match tx.try_send(pattern(filled, len)) {
                Ok(()) => filled += 1,
                Err(e) if e.is_full() => break,
                Err(e) => panic!("filling the ring: {e}"),
            }
        }
        assert!(filled > 0);
    }
    report("filled", filled);
    let msg = pattern(u64::MAX, len);
    let result = tx.send(msg.clone());
    let woke = monotonic_ns();
    match result {
        Err(SendError::Closed(back)) => assert!(back == msg, "the message handed back differs from the one sent"),
        other => panic!("blocked send ended with {other:?}, expected Closed(msg)"),
    }
    assert!(tx.state().unwrap() >= State::Closing, "{:?}", tx.state());
    report("woke_ns", woke);
}

/// Opens SHMQ_IT_NAME and closes it with SHMQ_IT_OP (`close_now` or `drain`), reporting the
/// clock just before and after the call.
fn child_closer() {
    let name = env_var("SHMQ_IT_NAME");
    let ch = Channel::open(&name, &Config::new()).unwrap();
    let op = env_var("SHMQ_IT_OP");
    let t0 = monotonic_ns();
    let before = match op.as_str() {
        "close_now" => ch.close_now(),
        "drain" => ch.drain(),
        other => panic!("unknown close op {other:?}"),
    }
    .unwrap();
    let t1 = monotonic_ns();
    report("t0", t0);
    report("t1", t1);
    report("before", before);
}

fn receiver_close_wakes_blocked_sender(tag: &str, msg_len: usize, fill: bool) {
    let _timing = exclusive();
    let scope = Scope::new(tag);
    let name = scope.name("ch");
    let ch = Channel::create(&name, &Config::new().capacity(64 * 1024)).unwrap();
    let mut rx = ch.receiver().unwrap();
    let sender = scope.spawn(
        "block_send",
        &[
            ("SHMQ_IT_NAME", &name),
            ("SHMQ_IT_MSG_LEN", &msg_len.to_string()),
            ("SHMQ_IT_FILL", if fill { "1" } else { "0" }),
        ],
    );
    let sender = sender.wait_until_asleep(&shm_path(&name), OFF_HEAD, HEAD_TX_WAITING);

    let t0 = monotonic_ns();
    let discarded = rx.close().unwrap();
    let t1 = monotonic_ns();

    let out = sender.wait(CHILD_TIMEOUT);
    out.assert_success();
    assert_fast_wake(
        &format!("{tag}: sender blocked in send({msg_len} bytes), Receiver::close"),
        wake_latency(tag, t0, out.report_u64("woke_ns")),
    );
    let st = ch.stats().unwrap();
    assert_between("closing_ns", st.closing_ns, t0, t1);
    assert_eq!(st.state, State::Closed);
    let filled = out.report_u64("filled");
    assert_eq!(st.sent_msgs, filled, "the refused message is not counted as sent");
    // Every accepted message was discarded by the close and counted; the refused one was not.
    assert_eq!(discarded.msgs, filled);
    if fill {
        assert_eq!(discarded.bytes, filled * msg_len as u64);
    } else {
        // The cut message was refused and handed back, so its fragments are not "discarded".
        assert_eq!(discarded.bytes, 0, "fragments of the refused message must not be counted: {discarded:?}");
    }
    assert_eq!(rx.recv(), Err(RecvError::Closed));
    drop(rx);
    drop(ch);
    assert_unlinked(&name);
    scope.finish();
}

#[test]
fn receiver_close_wakes_sender_blocked_on_full_ring() {
    receiver_close_wakes_blocked_sender("b1", 1000, true);
}

#[test]
fn receiver_close_wakes_sender_blocked_half_way_through_a_fragmented_message() {
    // 200 000 bytes through a 64 KiB ring nobody reads: the sender commits fragments until the
    // ring is full, then sleeps. The whole message comes back; its fragments are dropped uncounted.
    receiver_close_wakes_blocked_sender("b3", 200_000, false);
}

#[test]
fn close_now_from_a_third_process_wakes_blocked_sender() {
    let _timing = exclusive();
    let scope = Scope::new("b2");
    let name = scope.name("ch");
    let ch = Channel::create(&name, &Config::new().capacity(64 * 1024)).unwrap();
    let mut rx = ch.receiver().unwrap(); // attached, but never reads before the close
    let sender =
        scope.spawn("block_send", &[("SHMQ_IT_NAME", &name), ("SHMQ_IT_MSG_LEN", "1000"), ("SHMQ_IT_FILL", "1")]);
    let sender = sender.wait_until_asleep(&shm_path(&name), OFF_HEAD, HEAD_TX_WAITING);

    let closer = scope.spawn("closer", &[("SHMQ_IT_NAME", &name), ("SHMQ_IT_OP", "close_now")]);
    let closed = closer.wait(CHILD_TIMEOUT);
    closed.assert_success();
    let out = sender.wait(CHILD_TIMEOUT);
    out.assert_success();
    let (t0, t1) = (closed.report_u64("t0"), closed.report_u64("t1"));
    assert_eq!(closed.report("before"), "ACTIVE");
    assert_fast_wake(
        "b2: sender blocked on a full ring, close_now in a third process",
        wake_latency("b2", t0, out.report_u64("woke_ns")),
    );
    let st = ch.stats().unwrap();
    assert_between("closing_ns", st.closing_ns, t0, t1);
    assert_eq!(st.state, State::Closing);
    // The receiver sees end-of-stream at once; the backlog is discarded and counted.
    assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    let st = ch.stats().unwrap();
    assert_eq!(st.state, State::Closed);
    assert_eq!((st.discarded_msgs, st.sent_msgs), (out.report_u64("filled"), out.report_u64("filled")));
    drop(rx);
    drop(ch);
    assert_unlinked(&name);
    scope.finish();
}

// ---------------------------------------------------------------------------------------------
// c. A sender-side close wakes a receiver blocked on an empty ring.

/// Opens SHMQ_IT_NAME as receiver, takes SHMQ_IT_EXPECT messages, then blocks (SHMQ_IT_MODE
/// `recv` or `recv_timeout`) until end-of-stream.
fn child_block_recv() {
    let name = env_var("SHMQ_IT_NAME");
    let expect: u64 = env_var("SHMQ_IT_EXPECT").parse().unwrap();
    let ch = Channel::open(&name, &Config::new()).unwrap();
    let mut rx = ch.receiver().unwrap();
    for i in 0..expect {
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), pattern(i, 100 + i as usize));
    }
    let mode = env_var("SHMQ_IT_MODE");
    let (closed, woke) = match mode.as_str() {
        "recv" => {
            let r = rx.recv();
            (matches!(r, Err(RecvError::Closed)), monotonic_ns())
        }
        "recv_timeout" => {
            let r = rx.recv_timeout(Duration::from_secs(60));
            (matches!(r, Err(RecvTimeoutError::Closed)), monotonic_ns())
        }
        other => panic!("unknown mode {other:?}"),
    };
    assert!(closed, "the blocked {mode} did not end with Closed");
    assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    report("woke_ns", woke);
}

#[test]
fn sender_close_wakes_receiver_blocked_on_empty_ring() {
    let _timing = exclusive();
    let scope = Scope::new("c1");
    let name = scope.name("ch");
    let ch = Channel::create(&name, &Config::new().capacity(64 * 1024)).unwrap();
    let mut tx = ch.sender().unwrap();
    let receiver =
        scope.spawn("block_recv", &[("SHMQ_IT_NAME", &name), ("SHMQ_IT_EXPECT", "0"), ("SHMQ_IT_MODE", "recv")]);
    let receiver = receiver.wait_until_asleep(&shm_path(&name), OFF_TAIL, TAIL_RX_WAITING);

    let t0 = monotonic_ns();
    tx.close();
    let t1 = monotonic_ns();

    let out = receiver.wait(CHILD_TIMEOUT);
    out.assert_success();
    assert_fast_wake("c1: receiver blocked in recv, Sender::close", wake_latency("c1", t0, out.report_u64("woke_ns")));
    let st = ch.stats().unwrap();
    assert_between("draining_ns", st.draining_ns, t0, t1);
    assert_eq!((st.state, st.discarded_msgs), (State::Closed, 0));
    drop(tx);
    drop(ch);
    assert_unlinked(&name);
    scope.finish();
}

#[test]
fn drain_from_a_third_process_wakes_receiver_blocked_in_recv_timeout() {
    let _timing = exclusive();
    let scope = Scope::new("c2");
    let name = scope.name("ch");
    let ch = Channel::create(&name, &Config::new().capacity(64 * 1024)).unwrap();
    let mut tx = ch.sender().unwrap();
    // Three messages before the receiver even exists: it gets them, then blocks.
    for i in 0..3u64 {
        tx.send(pattern(i, 100 + i as usize)).unwrap();
    }
    let receiver = scope
        .spawn("block_recv", &[("SHMQ_IT_NAME", &name), ("SHMQ_IT_EXPECT", "3"), ("SHMQ_IT_MODE", "recv_timeout")]);
    let receiver = receiver.wait_until_asleep(&shm_path(&name), OFF_TAIL, TAIL_RX_WAITING);

    let closer = scope.spawn("closer", &[("SHMQ_IT_NAME", &name), ("SHMQ_IT_OP", "drain")]);
    let closed = closer.wait(CHILD_TIMEOUT);
    closed.assert_success();
    let out = receiver.wait(CHILD_TIMEOUT);
    out.assert_success();
    let (t0, t1) = (closed.report_u64("t0"), closed.report_u64("t1"));
    assert_eq!(closed.report("before"), "ACTIVE");
    assert_fast_wake(
        "c2: receiver blocked in recv_timeout, drain in a third process",
        wake_latency("c2", t0, out.report_u64("woke_ns")),
    );
    let st = ch.stats().unwrap();
    assert_between("draining_ns", st.draining_ns, t0, t1);
    assert_eq!((st.state, st.sent_msgs, st.recv_msgs, st.discarded_msgs), (State::Closed, 3, 3, 0));
    // The channel is closed for our sender too, and the message comes back.
    match tx.send(b"late".to_vec()) {
        Err(SendError::Closed(m)) => assert_eq!(m, b"late"),
        other => panic!("{other:?}"),
    }
    drop(tx);
    drop(ch);
    assert_unlinked(&name);
    scope.finish();
}

// ---------------------------------------------------------------------------------------------
// d. A 32 MiB message through a 1 MiB ring.

const BIG_SEED: u64 = 0xB16_B16;

fn child_big_send() {
    let name = env_var("SHMQ_IT_NAME");
    let len: usize = env_var("SHMQ_IT_LEN").parse().unwrap();
    let ch = Channel::open(&name, &Config::new()).unwrap();
    let mut tx = ch.sender().unwrap();
    let msg = pattern(BIG_SEED, len);
    let sum = hash64(&msg);
    tx.send(msg).unwrap();
    tx.send(sum.to_le_bytes()).unwrap();
    tx.close();
    report("hash", sum);
}

#[test]
fn message_of_32_mib_through_a_1_mib_ring() {
    const LEN: usize = 32 << 20;
    let _timing = exclusive();
    let scope = Scope::new("d");
    let name = scope.name("ch");
    let ch = Channel::create(&name, &Config::new().capacity(1 << 20).max_message(64 << 20)).unwrap();
    let mut rx = ch.receiver().unwrap();
    let watchdog = Watchdog::new(&ch, Duration::from_secs(60), "32 MiB transfer");
    let sender = scope.spawn("big_send", &[("SHMQ_IT_NAME", &name), ("SHMQ_IT_LEN", &LEN.to_string())]);

    let t0 = Instant::now();
    let got = rx.recv().unwrap();
    println!("d: 32 MiB received {:.1} ms after the child was started", t0.elapsed().as_secs_f64() * 1e3);
    let sender_sum = u64::from_le_bytes(rx.recv().unwrap().try_into().expect("an 8-byte checksum message"));
    assert_eq!(rx.recv(), Err(RecvError::Closed));
    let out = sender.wait(HEAVY_TIMEOUT);
    out.assert_success();

    assert_eq!(got.len(), LEN);
    let sum = hash64(&got);
    assert_eq!(sum, sender_sum, "checksum of the received message differs from the sender's");
    assert_eq!(out.report_u64("hash"), sender_sum);
    let want = pattern(BIG_SEED, LEN);
    if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
        panic!("32 MiB message differs from byte {i} on");
    }
    let st = ch.stats().unwrap();
    assert_eq!((st.sent_msgs, st.recv_msgs, st.sent_bytes, st.recv_bytes), (2, 2, LEN as u64 + 8, LEN as u64 + 8));
    drop(watchdog); // it holds a handle too
    drop(rx);
    drop(ch);
    assert_unlinked(&name);
    scope.finish();
}

// ---------------------------------------------------------------------------------------------
// e. One million messages of random sizes, in order and intact, between two processes.

const STREAM_SEED: u64 = 0x5EED_0001;
const STREAM_COUNT: u64 = 1_000_000;
/// Sizes are uniform in 0..=4096.
const STREAM_MAX_LEN: u64 = 4096;
/// Messages of at least this size carry their sequence number and the checksum of the rest.
const STREAM_HDR: usize = 16;

/// Message `seq` of the stream, `len` bytes, into `buf`: sequence number (u64 LE), hash64 of the
/// payload (u64 LE), then the payload (pseudo-random, seeded by `seq`). Messages shorter than 16
/// bytes are the first `len` bytes of that 16-byte header for an empty payload.
fn stream_message(seq: u64, len: usize, buf: &mut Vec<u8>) {
    buf.clear();
    buf.resize(len.max(STREAM_HDR), 0);
    let payload = &mut buf[STREAM_HDR..];
    SplitMix64::new(seq ^ STREAM_SEED).fill(payload);
    let sum = hash64(payload);
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..16].copy_from_slice(&sum.to_le_bytes());
    buf.truncate(len);
}

fn check_stream_message(seq: u64, len: usize, got: &[u8], scratch: &mut Vec<u8>) {
    assert_eq!(got.len(), len, "message {seq}: wrong length");
    if len >= STREAM_HDR {
        let found_seq = u64::from_le_bytes(got[..8].try_into().unwrap());
        assert_eq!(found_seq, seq, "message {seq}: out of order (carries sequence number {found_seq})");
        let sum = u64::from_le_bytes(got[8..16].try_into().unwrap());
        assert_eq!(hash64(&got[STREAM_HDR..]), sum, "message {seq}: checksum mismatch");
    } else {
        stream_message(seq, len, scratch);
        assert_eq!(got, &scratch[..], "message {seq}");
    }
}

fn child_stream_send() {
    let name = env_var("SHMQ_IT_NAME");
    let count: u64 = env_var("SHMQ_IT_COUNT").parse().unwrap();
    let ch = Channel::open(&name, &Config::new()).unwrap();
    let mut tx = ch.sender().unwrap();
    let mut sizes = SplitMix64::new(STREAM_SEED);
    let mut buf = Vec::with_capacity(STREAM_MAX_LEN as usize + STREAM_HDR);
    for seq in 0..count {
        let len = (sizes.next_u64() % (STREAM_MAX_LEN + 1)) as usize;
        stream_message(seq, len, &mut buf);
        if seq % 4 == 3 {
            // Every fourth message is written in place (zero-copy path).
            let mut slot = tx.reserve(len).unwrap();
            slot.write_at(0, &buf);
            slot.commit().unwrap();
        } else {
            tx.send(&buf[..]).unwrap();
        }
    }
    tx.close();
    report("sent", count);
}

#[test]
fn a_million_random_messages_arrive_in_order_and_intact() {
    let _timing = exclusive();
    let scope = Scope::new("e");
    let name = scope.name("ch");
    let ch = Channel::create(&name, &Config::new().capacity(1 << 20)).unwrap();
    let mut rx = ch.receiver().unwrap();
    let watchdog = Watchdog::new(&ch, Duration::from_secs(100), "1M-message stream");
    let sender = scope.spawn("stream_send", &[("SHMQ_IT_NAME", &name), ("SHMQ_IT_COUNT", &STREAM_COUNT.to_string())]);

    let t0 = Instant::now();
    let mut sizes = SplitMix64::new(STREAM_SEED);
    let (mut buf, mut scratch, mut total) = (Vec::new(), Vec::new(), 0u64);
    for seq in 0..STREAM_COUNT {
        let len = (sizes.next_u64() % (STREAM_MAX_LEN + 1)) as usize;
        total += len as u64;
        // Exercise the three receive forms.
        match seq % 3 {
            0 => {
                let n = rx.recv_into(&mut buf).unwrap_or_else(|e| panic!("message {seq}: {e}"));
                assert_eq!(n, buf.len());
                check_stream_message(seq, len, &buf, &mut scratch);
            }
            1 => {
                let m = rx.recv_ref().unwrap_or_else(|e| panic!("message {seq}: {e}"));
                buf.resize(m.len(), 0);
                m.read_at(0, &mut buf);
                drop(m);
                check_stream_message(seq, len, &buf, &mut scratch);
            }
            _ => {
                let v = rx.recv().unwrap_or_else(|e| panic!("message {seq}: {e}"));
                check_stream_message(seq, len, &v, &mut scratch);
            }
        }
    }
    assert_eq!(rx.recv(), Err(RecvError::Closed));
    let elapsed = t0.elapsed();
    let out = sender.wait(HEAVY_TIMEOUT);
    out.assert_success();
    assert_eq!(out.report_u64("sent"), STREAM_COUNT);
    println!(
        "e: {STREAM_COUNT} messages, {:.2} GB in {:.2} s ({:.2} M msg/s, {:.2} GB/s, child start-up included)",
        total as f64 / 1e9,
        elapsed.as_secs_f64(),
        STREAM_COUNT as f64 / elapsed.as_secs_f64() / 1e6,
        total as f64 / elapsed.as_secs_f64() / 1e9
    );
    let st = ch.stats().unwrap();
    assert_eq!((st.sent_msgs, st.recv_msgs), (STREAM_COUNT, STREAM_COUNT));
    assert_eq!((st.sent_bytes, st.recv_bytes), (total, total));
    assert_eq!(st.state, State::Closed);
    drop(watchdog); // it holds a handle too
    drop(rx);
    drop(ch);
    assert_unlinked(&name);
    scope.finish();
}

// ---------------------------------------------------------------------------------------------
// g. An anonymous (memfd) channel pair passed to a child by fd inheritance.

const ECHO_COUNT: u64 = 20_000;

fn echo_message(i: u64) -> Vec<u8> {
    // Mostly small, every 1000th larger than the 64 KiB ring (fragmented both ways).
    let len = if i % 1000 == 999 { 100_000 } else { (SplitMix64::new(i).next_u64() % 2049) as usize };
    pattern(i.wrapping_mul(31), len)
}

fn inherited_channel(var: &str) -> Channel {
    let fd: RawFd = env_var(var).parse().unwrap();
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).expect("the inherited fd is open");
    assert!(link.to_string_lossy().starts_with("/memfd:shmq"), "fd {fd} is {link:?}, not a shmq memfd");
    // SAFETY: the parent passed this descriptor number, inherited across exec (it has no
    // close-on-exec flag), and nothing else in this process owns or closes it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Channel::from_fd(fd, &Config::new()).unwrap()
}

fn child_memfd_echo() {
    let req = inherited_channel("SHMQ_IT_REQ_FD");
    let resp = inherited_channel("SHMQ_IT_RESP_FD");
    assert!(req.name().is_none() && resp.name().is_none());
    let mut rx = req.receiver().unwrap();
    let mut tx = resp.sender().unwrap();
    let (mut n, mut buf) = (0u64, Vec::new());
    loop {
        match rx.recv_into(&mut buf) {
            Ok(_) => {
                tx.send(&buf[..]).unwrap();
                n += 1;
            }
            Err(RecvError::Closed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    tx.close();
    report("echoed", n);
}

fn memfds_open_in_this_process() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("/memfd:shmq"))
        .count()
}

#[test]
fn anonymous_channel_passed_to_a_child_by_fd() {
    let scope = Scope::new("g");
    let cfg = Config::new().capacity(64 * 1024).max_message(1 << 20);
    let req = Channel::anonymous(&cfg).unwrap();
    let resp = Channel::anonymous(&cfg).unwrap();
    let (req_fd, resp_fd) = (req.inheritable_fd().unwrap(), resp.inheritable_fd().unwrap());
    let child = scope.spawn(
        "memfd_echo",
        &[("SHMQ_IT_REQ_FD", &req_fd.as_raw_fd().to_string()), ("SHMQ_IT_RESP_FD", &resp_fd.as_raw_fd().to_string())],
    );
    drop((req_fd, resp_fd)); // the child has its copies
    let watchdogs = [
        Watchdog::new(&req, Duration::from_secs(60), "echo requests"),
        Watchdog::new(&resp, Duration::from_secs(60), "echo responses"),
    ];

    let mut tx = req.sender().unwrap();
    let mut rx = resp.receiver().unwrap();
    let feeder = std::thread::spawn(move || {
        for i in 0..ECHO_COUNT {
            tx.send(echo_message(i)).unwrap_or_else(|e| panic!("request {i}: {e}"));
        }
        tx.close();
    });
    for i in 0..ECHO_COUNT {
        let got = rx.recv().unwrap_or_else(|e| panic!("echo {i}: {e}"));
        assert!(got == echo_message(i), "echo {i} differs ({} bytes)", got.len());
    }
    assert_eq!(rx.recv(), Err(RecvError::Closed));
    feeder.join().unwrap();
    let out = child.wait(CHILD_TIMEOUT);
    out.assert_success();
    assert_eq!(out.report_u64("echoed"), ECHO_COUNT);
    assert_eq!(req.state().unwrap(), State::Closed);
    assert_eq!(resp.state().unwrap(), State::Closed);
    drop(watchdogs); // they hold handles too
    drop(rx);
    drop((req, resp));
    // Only this test opens memfds in this binary: none may remain open here.
    assert_eq!(memfds_open_in_this_process(), 0, "a shmq memfd is still open");
    scope.finish();
}

// ---------------------------------------------------------------------------------------------
// h. Create/close cycles leave nothing behind: no segment, no mapping, no descriptor, no zombie.

fn receive_five(name: &str) {
    let ch = Channel::open(name, &Config::new()).unwrap();
    let mut rx = ch.receiver().unwrap();
    for want in five_messages() {
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap() == want);
    }
    assert_eq!(rx.recv(), Err(RecvError::Closed));
}

#[test]
fn create_close_cycles_leak_no_segment_mapping_fd_or_zombie() {
    let scope = Scope::new("h");
    // In this process: create, open a second handle, send, close, drain, drop.
    for i in 0..300u32 {
        let name = scope.name(&format!("c{i}"));
        let ch = Channel::create(&name, &Config::new().capacity(4096)).unwrap();
        let other = Channel::open(&name, &Config::new()).unwrap();
        let (mut tx, mut rx) = (ch.sender().unwrap(), other.receiver().unwrap());
        tx.send(i.to_le_bytes()).unwrap();
        drop(tx);
        assert_eq!(rx.recv().unwrap(), i.to_le_bytes());
        assert_eq!(rx.recv(), Err(RecvError::Closed));
        drop((rx, ch, other));
        assert_unlinked(&name);
    }
    // Across processes: each child creates a channel, sends 5 messages and exits; then we
    // receive them and close.
    for i in 0..10 {
        let name = scope.name(&format!("p{i}"));
        scope.spawn("send5", &[("SHMQ_IT_NAME", &name)]).wait(CHILD_TIMEOUT).assert_success();
        receive_five(&name);
        assert_unlinked(&name);
    }
    // Nothing of these channels is still mapped or open here (an unlinked segment would still
    // show, as "/dev/shm/shmq.NAME (deleted)").
    let needle = format!("/dev/shm/shmq.{}", scope.prefix());
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mapped: Vec<&str> = maps.lines().filter(|l| l.contains(&needle)).collect();
    assert!(mapped.is_empty(), "still mapped: {mapped:?}");
    let open: Vec<_> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with(&needle))
        .collect();
    assert!(open.is_empty(), "still open: {open:?}");
    scope.finish(); // no segment left, every child reaped
}

// ---------------------------------------------------------------------------------------------
// The helpers themselves.

#[test]
fn helpers_hash_and_prng_are_deterministic() {
    let (x, y) = (pattern(7, 1001), pattern(7, 1001));
    assert_eq!(x, y);
    assert_eq!(hash64(&x), hash64(&y));
    // Any single-bit flip (in the 4 lanes or the tail bytes) changes the checksum; so does length.
    for pos in [0usize, 7, 8, 31, 32, 500, 991, 992, 1000] {
        for bit in [0u8, 3, 7] {
            let mut z = x.clone();
            z[pos] ^= 1 << bit;
            assert_ne!(hash64(&z), hash64(&x), "flip at {pos}.{bit}");
        }
    }
    assert_ne!(hash64(&x[..1000]), hash64(&x));
    assert_ne!(hash64(&[]), hash64(&[0]));
    let mut buf = Vec::new();
    stream_message(5, 40, &mut buf);
    check_stream_message(5, 40, &buf, &mut Vec::new());
    stream_message(5, 3, &mut buf);
    assert_eq!(buf, 5u64.to_le_bytes()[..3]);
}
