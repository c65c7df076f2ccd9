//! # shmq demo: processes exchange messages and close cleanly
//!
//! Run it with `cargo run --release --example demo` (no arguments, a few seconds).
//!
//! **Act 1** (this file): a producer process streams to a consumer process over an SPSC
//! channel, then closes while busy. **Act 2** (`pool.rs`): a supervisor hands tasks to three
//! runner processes over an MPMC channel, collects their results over an MPSC channel, and shuts
//! the pool down in three phases (stop intake, drain results, closed).
//!
//! Act 1 in detail:
//!
//! The parent creates a named channel (`/dev/shm/shmq.demo-<pid>`, 1 MiB ring) and re-executes
//! itself twice, as a **producer** and a **consumer** process. The producer streams a few hundred
//! thousand messages of mixed sizes (token events of 64 B-1 KiB, some 4-64 KiB blobs, 512 KiB
//! image chunks and one 3 MiB message, three times the ring), each carrying its sequence number
//! and a checksum. The consumer verifies order, length and checksum of every message.
//!
//! What it shows:
//!
//! * **close is not abort.** Before the last messages the consumer pauses briefly, so the
//!   producer's final burst is still queued when it closes the channel from the sender side
//!   (DRAINING). The consumer nevertheless receives every one of them, then a clean
//!   end-of-stream. (With `multiprocessing.Queue` plus a "closed" event those messages are lost.)
//! * **a refused send hands the message back**: after the close the producer sends once more and
//!   gets `SendError::Closed(msg)` with its own bytes.
//! * **the lifecycle is shared**: the parent, which neither sent nor received, reads the counters
//!   and the CLOCK_MONOTONIC transition times (ACTIVE -> DRAINING -> CLOSED) from the segment.
//! * **no leftovers**: the last handle of a CLOSED channel removes its name; the parent checks
//!   that `/dev/shm` is clean (and removes the segment itself on every error path).
//!
//! The parent exits non-zero if a child fails or any message is missing, reordered or corrupt.

mod crash;
mod pool;

use shmq::{Channel, Config, RecvError, SendError, State, Stats};
use std::collections::HashMap;
use std::io::Read;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Messages the producer sends.
const TOTAL: u64 = 300_000;
/// The last `BURST` messages are small token events, sent while the consumer pauses, so that
/// they are still queued when the producer closes. They fit in the ring together.
const BURST: u64 = 2_000;
/// The message after which the consumer pauses.
const PAUSE_AFTER: u64 = TOTAL - BURST - 1;
/// How long the consumer pauses.
const PAUSE: Duration = Duration::from_millis(100);
/// The one message larger than the ring.
const BIG_SEQ: u64 = TOTAL / 2;
const BIG_LEN: usize = 3 << 20;
/// Every message starts with its sequence number and checksum (two little-endian u64s).
const HEADER: usize = 16;
/// Random bytes the payloads are cut from.
const POOL_LEN: usize = 4 << 20;
/// Ring size (the crate's default, stated here so the summary can say it).
const RING: usize = 1 << 20;
/// How long the parent lets the children run before it gives up on them.
const CHILD_DEADLINE: Duration = Duration::from_secs(60);
/// How long the other child may take to finish once one failed or the demo was interrupted.
const GRACE: Duration = Duration::from_secs(2);
/// Marks a child invocation: `demo __shmq_demo_child producer|consumer NAME`.
const CHILD_FLAG: &str = "__shmq_demo_child";

type Res<T> = Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some(CHILD_FLAG) => match (args.get(2).map(String::as_str), args.get(3)) {
            (Some("producer"), Some(name)) => producer(name),
            (Some("consumer"), Some(name)) => consumer(name),
            (Some("victim"), Some(name)) => crash::victim(name),
            (Some("runner"), Some(tasks)) => match (args.get(4), args.get(5)) {
                (Some(events), Some(index)) => pool::runner(tasks, events, index),
                _ => Err(format!("usage: {} {CHILD_FLAG} runner TASKS EVENTS INDEX", args[0])),
            },
            _ => Err(format!("usage: {} {CHILD_FLAG} producer|consumer NAME", args[0])),
        },
        None => parent().and_then(|()| pool::supervise()).and_then(|()| crash::supervise()),
        Some(other) => Err(format!("unexpected argument {other:?}: run the demo without arguments")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let who = args.get(2).filter(|_| args.get(1).map(String::as_str) == Some(CHILD_FLAG));
            eprintln!("shmq demo{}: {e}", who.map(|w| format!(" ({w})")).unwrap_or_default());
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Message contents, shared by producer and consumer (same binary, same constants).

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Length of message `seq` (header included): mostly token events, some blobs, a few image
/// chunks, one message three times the ring.
fn msg_len(seq: u64) -> usize {
    if seq == BIG_SEQ {
        return BIG_LEN;
    }
    let r = splitmix64(seq ^ 0x5eed);
    let pick = (r >> 32) as usize;
    if seq > PAUSE_AFTER {
        return 64 + pick % 449; // the final burst: small token events only
    }
    match r % 10_000 {
        0..=2 => 512 << 10,                       // image chunk, 0.03 %
        3..=152 => (4 << 10) + pick % (60 << 10), // 4-64 KiB, 1.5 %
        _ => 64 + pick % (1024 - 64 + 1),         // token event, 64 B-1 KiB
    }
}

/// A fast 64-bit checksum of the sequence number and the payload.
fn checksum(seq: u64, payload: &[u8]) -> u64 {
    const K: u64 = 0x9fb2_1c65_1e98_df25;
    let mut h = splitmix64(seq) ^ payload.len() as u64;
    let mut words = payload.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().expect("8-byte chunk"));
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(K);
    }
    splitmix64(h)
}

fn random_pool() -> Vec<u8> {
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut pool = Vec::with_capacity(POOL_LEN);
    while pool.len() < POOL_LEN {
        state = splitmix64(state);
        pool.extend_from_slice(&state.to_le_bytes());
    }
    pool
}

/// Build message `seq` into `buf`: header, then a slice of the random pool.
fn build(seq: u64, pool: &[u8], buf: &mut Vec<u8>) {
    let len = msg_len(seq);
    let body = len - HEADER;
    let start = (splitmix64(seq) as usize) % (pool.len() - body);
    let payload = &pool[start..start + body];
    buf.clear();
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&checksum(seq, payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// CLOCK_MONOTONIC in nanoseconds: the clock the segment's timestamps use, comparable across
/// the three processes.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call; CLOCK_MONOTONIC is
    // always available on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---------------------------------------------------------------------------------------------
// The producer process.

fn producer(name: &str) -> Res<()> {
    let ch = Channel::open(name, &Config::new()).map_err(|e| format!("open {name}: {e}"))?;
    let mut tx = ch.sender().map_err(|e| format!("take the sender role: {e}"))?;
    let pool = random_pool();
    let mut buf = Vec::with_capacity(BIG_LEN);
    let (mut bytes, mut largest) = (0u64, 0usize);

    let start_ns = monotonic_ns();
    for seq in 0..TOTAL {
        build(seq, &pool, &mut buf);
        tx.send(&buf[..]).map_err(|e| format!("send #{seq} ({} bytes): {e}", buf.len()))?;
        bytes += buf.len() as u64;
        largest = largest.max(buf.len());
    }

    // Sender-side close (DRAINING) while the final burst is still in the ring.
    tx.close();
    let close_ns = monotonic_ns();
    // Read after the close: `sent` is final, `recv` can only have grown since the close, so this
    // is a lower bound of what was queued at the moment of the close.
    let s = tx.stats().map_err(|e| format!("stats: {e}"))?;
    let queued = s.sent_msgs.saturating_sub(s.recv_msgs);
    let queued_bytes = s.sent_bytes.saturating_sub(s.recv_bytes);

    // One more send after the close: refused, and the message comes back.
    build(TOTAL, &pool, &mut buf);
    let late = buf.clone();
    let (refused, back_len) = match tx.send(late) {
        Err(SendError::Closed(back)) => {
            (if back == buf { "closed-msg-back" } else { "closed-wrong-bytes" }, back.len())
        }
        Err(e) => {
            eprintln!("shmq demo (producer): the send after close failed with {e}, not Closed");
            ("other-error", 0)
        }
        Ok(()) => ("accepted", 0),
    };

    println!(
        "REPORT pid={} sent={TOTAL} bytes={bytes} largest={largest} start_ns={start_ns} close_ns={close_ns} \
         queued={queued} queued_bytes={queued_bytes} refused={refused} refused_len={back_len}",
        std::process::id()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The consumer process.

fn consumer(name: &str) -> Res<()> {
    let ch = Channel::open(name, &Config::new()).map_err(|e| format!("open {name}: {e}"))?;
    let mut rx = ch.receiver().map_err(|e| format!("take the receiver role: {e}"))?;
    let mut buf = Vec::new();
    let (mut received, mut bytes, mut largest) = (0u64, 0u64, 0usize);
    let (mut out_of_order, mut bad_len, mut bad_sum) = (0u64, 0u64, 0u64);
    let mut expected = 0u64;
    let (mut pause_ns, mut bytes_before_pause) = (0u64, 0u64);
    // Messages received when this process first saw the channel closed for sending.
    let mut seen_closed_at: Option<u64> = None;

    loop {
        let n = match rx.recv_into(&mut buf) {
            Ok(n) => n,
            Err(RecvError::Closed) => break, // end-of-stream: everything committed was delivered
            Err(e) => return Err(format!("recv after {received} messages: {e}")),
        };
        received += 1;
        bytes += n as u64;
        largest = largest.max(n);
        if n < HEADER {
            bad_len += 1;
            continue;
        }
        let seq = u64::from_le_bytes(buf[0..8].try_into().expect("8 bytes"));
        let sum = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
        if seq != expected {
            out_of_order += 1;
        }
        expected = seq.wrapping_add(1);
        if seq > TOTAL || n != msg_len(seq) {
            bad_len += 1;
        } else if sum != checksum(seq, &buf[HEADER..n]) {
            bad_sum += 1;
        }

        if seq == PAUSE_AFTER {
            // Fall behind on purpose: the producer sends its final burst and closes meanwhile.
            pause_ns = monotonic_ns();
            bytes_before_pause = bytes;
            std::thread::sleep(PAUSE);
        }
        if seen_closed_at.is_none() && rx.state().map_err(|e| format!("state: {e}"))? != State::Active {
            seen_closed_at = Some(received);
        }
    }
    let end_ns = monotonic_ns();
    let after_close = seen_closed_at.map_or(0, |at| received - at);

    println!(
        "REPORT pid={} received={received} bytes={bytes} largest={largest} out_of_order={out_of_order} \
         bad_len={bad_len} bad_sum={bad_sum} pause_ns={pause_ns} before_pause={} bytes_before_pause={bytes_before_pause} \
         after_close={after_close} end_ns={end_ns}",
        std::process::id(),
        PAUSE_AFTER + 1,
    );
    if received != TOTAL || out_of_order + bad_len + bad_sum != 0 {
        return Err(format!(
            "received {received} of {TOTAL} messages; {out_of_order} out of order, {bad_len} bad lengths, \
             {bad_sum} bad checksums"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The parent process.

/// Set by SIGINT/SIGTERM so that the parent can clean up instead of dying with the segment.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` is an `extern "C" fn(c_int)` that only stores to an atomic, which
        // is async-signal-safe. The children get the default disposition back on exec.
        unsafe {
            libc::signal(sig, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        }
    }
}

/// Removes the segment's name when the parent is done, whatever happened (NotFound is fine:
/// normally the channel has already removed itself).
struct Cleanup<'a> {
    name: &'a str,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        match shmq::unlink(self.name) {
            Ok(()) | Err(shmq::SegmentError::NotFound { .. }) => {}
            Err(e) => eprintln!("shmq demo: could not remove segment {:?}: {e}", self.name),
        }
    }
}

struct Kid {
    role: &'static str,
    child: Child,
    status: Option<ExitStatus>,
}

fn spawn(role: &'static str, name: &str) -> Res<Kid> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let child = Command::new(exe)
        .args([CHILD_FLAG, role, name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start the {role}: {e}"))?;
    Ok(Kid { role, child, status: None })
}

/// Wait for every child, reaping each one. If one fails, or on Ctrl-C / SIGTERM, close the
/// channel (CLOSING, from this third process) so that the other is not left blocked, and give it
/// a moment to finish; past the deadline, kill what is left.
fn wait_all(kids: &mut [Kid], ch: &Channel, problems: &mut Vec<String>) {
    let mut deadline = Instant::now() + CHILD_DEADLINE;
    let mut closed = false;
    loop {
        for k in kids.iter_mut().filter(|k| k.status.is_none()) {
            match k.child.try_wait() {
                Ok(Some(st)) => k.status = Some(st),
                Ok(None) => {}
                Err(e) => {
                    problems.push(format!("waiting for the {}: {e}", k.role));
                    let _ = k.child.kill();
                    k.status = k.child.wait().ok();
                }
            }
        }
        if kids.iter().all(|k| k.status.is_some()) {
            break;
        }
        let failed = kids.iter().any(|k| k.status.is_some_and(|s| !s.success()));
        if (failed || INTERRUPTED.load(Ordering::Relaxed)) && !closed {
            let _ = ch.close_now();
            closed = true;
            deadline = deadline.min(Instant::now() + GRACE);
        }
        if Instant::now() > deadline {
            problems.push(format!(
                "killed the children still running after {:?}",
                if closed { GRACE } else { CHILD_DEADLINE }
            ));
            for k in kids.iter_mut().filter(|k| k.status.is_none()) {
                let _ = k.child.kill();
                k.status = k.child.wait().ok();
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if INTERRUPTED.load(Ordering::Relaxed) {
        problems.push("interrupted (SIGINT/SIGTERM)".to_string());
    }
}

/// Parse the child's `REPORT key=value ...` line.
fn report(kid: &mut Kid, problems: &mut Vec<String>) -> HashMap<String, String> {
    let mut out = String::new();
    if let Some(mut stdout) = kid.child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    match kid.status {
        Some(st) if st.success() => {}
        Some(st) => problems.push(format!("the {} exited with {st}", kid.role)),
        None => problems.push(format!("the {} could not be reaped", kid.role)),
    }
    let line = out.lines().find_map(|l| l.strip_prefix("REPORT "));
    if line.is_none() {
        problems.push(format!("the {} printed no report", kid.role));
    }
    line.unwrap_or_default()
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn num(r: &HashMap<String, String>, key: &str) -> u64 {
    r.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

fn ms(ns: u64) -> String {
    format!("{:.1} ms", ns as f64 / 1e6)
}

fn parent() -> Res<()> {
    let t0 = Instant::now();
    catch_signals();
    let name = format!("demo-{}", std::process::id());
    let ch =
        Channel::create(&name, &Config::new().capacity(RING)).map_err(|e| format!("create channel {name}: {e}"))?;
    let _cleanup = Cleanup { name: &name };
    let path = shmq::shm_path(&name);

    let mut problems = Vec::new();
    let mut kids = Vec::new();
    for role in ["consumer", "producer"] {
        match spawn(role, &name) {
            Ok(k) => kids.push(k),
            Err(e) => problems.push(e),
        }
    }
    wait_all(&mut kids, &ch, &mut problems);
    if kids.len() < 2 {
        return Err(problems.join("; "));
    }
    let cons = report(&mut kids[0], &mut problems);
    let prod = report(&mut kids[1], &mut problems);
    let stats = ch.stats().map_err(|e| format!("stats: {e}"))?;
    let reported = !prod.is_empty() && !cons.is_empty();
    if reported {
        check(&prod, &cons, &stats, &mut problems);
    }

    // Drop the last handle: a CLOSED channel removes its own name.
    drop(ch);
    let removed = !path.exists();
    if !removed && problems.is_empty() {
        // (After a failure a child may have died holding its handle; `Cleanup` removes it then.)
        problems.push(format!("{} still exists after the last handle was dropped", path.display()));
    }

    if reported {
        print_summary(&path, &prod, &cons, &stats, removed);
    } else {
        let s = &stats;
        println!(
            "shmq demo: incomplete run over {}: state {}, sent {}, received {}, discarded {}, segment removed: {}",
            path.display(),
            s.state,
            grouped(s.sent_msgs),
            grouped(s.recv_msgs),
            grouped(s.discarded_msgs),
            if removed { "yes" } else { "no (removed by the demo's cleanup)" }
        );
    }
    println!(
        "wall time {:.2} s (3 processes, incl. start-up and the {} ms pause)",
        t0.elapsed().as_secs_f64(),
        PAUSE.as_millis()
    );
    if problems.is_empty() { Ok(()) } else { Err(format!("FAILED:\n  - {}", problems.join("\n  - "))) }
}

fn check(prod: &HashMap<String, String>, cons: &HashMap<String, String>, s: &Stats, problems: &mut Vec<String>) {
    let mut expect = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    let (sent, recv) = (num(prod, "sent"), num(cons, "received"));
    expect(sent == TOTAL, format!("producer sent {sent} of {TOTAL}"));
    expect(recv == sent, format!("consumer received {recv} of {sent}"));
    expect(num(cons, "bytes") == num(prod, "bytes"), "received bytes differ from sent bytes".into());
    for key in ["out_of_order", "bad_len", "bad_sum"] {
        expect(num(cons, key) == 0, format!("consumer counted {} {key}", num(cons, key)));
    }
    expect(
        prod.get("refused").map(String::as_str) == Some("closed-msg-back"),
        format!("the send after close gave {:?}, not Closed(msg)", prod.get("refused")),
    );
    expect(s.state == State::Closed, format!("final state {} (expected CLOSED)", s.state));
    expect((s.sent_msgs, s.recv_msgs) == (sent, recv), format!("segment counters {}/{}", s.sent_msgs, s.recv_msgs));
    expect(s.sent_bytes == s.recv_bytes, format!("segment bytes {}/{}", s.sent_bytes, s.recv_bytes));
    expect(s.discarded_msgs == 0, format!("{} messages discarded", s.discarded_msgs));
    expect(s.closing_ns.is_none(), "the channel went through CLOSING (a receiver-side close)".into());
    let order = s.draining_ns.zip(s.closed_ns).is_some_and(|(d, c)| s.created_ns <= d && d <= c);
    expect(order, format!("transition times out of order: {s:?}"));
}

fn print_summary(
    path: &std::path::Path,
    prod: &HashMap<String, String>,
    cons: &HashMap<String, String>,
    s: &Stats,
    removed: bool,
) {
    let ok = |b: bool| if b { "yes" } else { "NO" };
    println!(
        "shmq demo: producer pid {} -> consumer pid {} over {} ({} ring)",
        num(prod, "pid"),
        num(cons, "pid"),
        path.display(),
        mib(s.capacity as u64).replace(".0", "")
    );
    println!(
        "sent      {:>9} messages  {:>10}   (largest {}, through a {} ring)",
        grouped(num(prod, "sent")),
        mib(num(prod, "bytes")),
        mib(num(prod, "largest")),
        mib(s.capacity as u64).replace(".0", "")
    );
    let clean = num(cons, "out_of_order") + num(cons, "bad_len") + num(cons, "bad_sum") == 0;
    println!(
        "received  {:>9} messages  {:>10}   {}",
        grouped(num(cons, "received")),
        mib(num(cons, "bytes")),
        if clean {
            "in order, lengths and checksums ok".to_string()
        } else {
            format!(
                "{} out of order, {} bad lengths, {} bad checksums",
                num(cons, "out_of_order"),
                num(cons, "bad_len"),
                num(cons, "bad_sum")
            )
        }
    );
    println!(
        "queued at close: {} messages ({}) still in the ring when the sender closed;",
        grouped(num(prod, "queued")),
        mib(num(prod, "queued_bytes"))
    );
    println!(
        "                 the consumer received {} after it saw DRAINING, then end-of-stream",
        grouped(num(cons, "after_close"))
    );
    println!(
        "                 (it paused {} ms before the last {} messages, so they were queued)",
        PAUSE.as_millis(),
        grouped(BURST)
    );
    println!(
        "send after close: {}",
        match prod.get("refused").map(String::as_str) {
            Some("closed-msg-back") =>
                format!("refused, Closed(msg) with its {} bytes handed back", num(prod, "refused_len")),
            other => format!("UNEXPECTED {other:?}"),
        }
    );
    // Throughput from the first send to the consumer's pause (the pause would only dilute it).
    let window = num(cons, "pause_ns").saturating_sub(num(prod, "start_ns"));
    if window > 0 {
        let secs = window as f64 / 1e9;
        println!(
            "throughput: {:.2} M msg/s, {:.2} GiB/s  ({} messages, {} in {}, before the pause)",
            num(cons, "before_pause") as f64 / secs / 1e6,
            num(cons, "bytes_before_pause") as f64 / secs / (1u64 << 30) as f64,
            grouped(num(cons, "before_pause")),
            mib(num(cons, "bytes_before_pause")),
            ms(window)
        );
    }
    let rel = |t: Option<u64>| t.map_or("never".to_string(), |t| format!("+{}", ms(t.saturating_sub(s.created_ns))));
    println!(
        "lifecycle: ACTIVE +0.0 ms (created)  ->  DRAINING {} (sender closed)  ->  CLOSED {} (receiver saw end-of-stream)",
        rel(s.draining_ns),
        rel(s.closed_ns)
    );
    println!(
        "           first send {}; CLOSING {}",
        rel(Some(num(prod, "start_ns"))),
        if s.closing_ns.is_none() { "never entered (nothing aborted)".to_string() } else { rel(s.closing_ns) }
    );
    println!("discarded: {}   segment removed: {}", grouped(s.discarded_msgs), ok(removed));
}
