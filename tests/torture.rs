#![cfg(not(shmq_loom))] // drives the public API, which loom builds do not have
//! The kill -9 torture test of issue #4: the producers and consumers of a channel are real
//! processes, one of them is killed with SIGKILL at a random moment, and then
//!
//! * the survivors must neither hang nor crash: they finish within [`DEADLINE`] of the kill, with
//!   a clean exit (a hang fails the iteration with the state of every process and of the
//!   segment);
//! * when the consumers survived, every message a producer reported as sent is received exactly
//!   once, intact, in order per producer (MPMC, whose consumers share the messages: every
//!   (producer, seq) exactly once, in order per producer within each consumer). A producer
//!   killed in the middle of an operation may have had it accepted without reporting it, so the
//!   messages of that one operation (one, or the rest of a `send_batch`) may arrive unreported,
//!   and only as its next seqs. A live producer's count must match exactly;
//! * when a consumer was killed, the surviving producers finish, or are refused with the
//!   message handed back intact, within the deadline;
//! * in a mutex iteration (one in three) the victim holds the channel's mutex around most of its
//!   operations and every survivor locks it from a thread of its own every few hundred µs: a
//!   lock returns `Acquired` or `OwnerDied` within [`MX_LIMIT`] (never hangs), `OwnerDied`
//!   exactly once if the victim died holding the mutex and never if it did not, `Acquired` never
//!   finds the data the mutex protects half-updated, and after `mark_consistent` the mutex
//!   works (the parent locks it twice more at the end);
//! * a death before the victim's own close is reported as one (`RecvError::PeerDead` /
//!   `SendError::PeerDead`, naming the victim; not checked for MPMC, where the survivors of the
//!   victim's side may close first), and `dead_peer()` names the victim if anyone;
//! * the test then plays the cleaner (`shmq::unlink`): nothing of it is left in `/dev/shm`, and
//!   every child is reaped (`Scope::finish`).
//!
//! ```sh
//! cargo test --release --test torture                                            # CI: 500 iterations
//! SHMQ_TORTURE_ITERS=10000 cargo test --release --test torture -- --nocapture    # the long run
//! ```
//!
//! Both print a summary on stderr (`--nocapture` shows it for a passing run too): iterations and
//! messages checked per flavour and victim, where the victims died (by plan), how long the
//! survivors took to notice, the mutex figures, the MPMC dead-claim figures, the failures with
//! their seeds. On the 2-core VM, with other jobs running, 500 iterations take 9-10 s and 2,000
//! about 41 s.
//!
//! A peer that attaches and dies within one watcher rescan (50 ms) is noticed by blocked calls
//! (every 5 ms), not by the pidfd watcher at once; the children here live a few ms, so the notice
//! latencies in the summary are mostly that 5 ms check (20 ms for an MPSC receiver behind a dead
//! claim).
//!
//! | variable | meaning |
//! |---|---|
//! | `SHMQ_TORTURE_ITERS` | iterations of [`torture`] (default [`DEFAULT_ITERS`]) |
//! | `SHMQ_TORTURE_BASE` | base seed (hex); default: from the clock, printed at the start |
//! | `SHMQ_TORTURE_SEED` | run only the iteration with this seed (printed with every failure); the kill lands at another instruction each time, so a failure may take a few runs to recur |
//! | `SHMQ_TORTURE_WINDOW_TRIES` | attempts of the window tests (defaults 200 and 300) |
//!
//! # One iteration
//!
//! Everything is derived from one seed ([`Spec::from_seed`]): the flavour (in rotation SPSC,
//! MPSC, SPSC, MPSC, MPMC), the ring size (4-64 KiB), the messages per producer (200-3000, each
//! 24 B - 2 KiB, one in 16 larger than a quarter of the ring, up to 1.75 rings, so they travel in
//! pieces; MPMC messages stay under its half-ring limit), the mix of send and receive forms
//! (`send`, `send_timeout`, `reserve` + `commit`, `send_batch`; `recv_into`, `recv_ref` held
//! while checking, `recv_timeout`, `recv_batch`), who dies (SPSC: the producer or the consumer;
//! MPSC, 2 producers: either producer or the consumer; MPMC: with 2 producers and 2 consumers a
//! consumer, or with 3 producers and 2 consumers a producer, while the other two go on and
//! close normally), where consumer 0 runs (a child, or a thread of this process when a producer
//! dies), whether the mutex is used, and how the victim dies ([`Plan`]):
//!
//! * by the parent: SIGKILL a random 0-300 µs after it sees the victim reach a random message;
//! * at a step: the victim's killer goes off a random time into a chosen send or receive;
//! * after reserve: the victim dies right after a `reserve` (holding an uncommitted claim), or
//!   a few µs later, while writing or committing it;
//! * in close: the victim stops early and closes (drops its handle) with its killer armed to go
//!   off inside the close (a close takes about 2 µs; the delay that lands there is learnt as the
//!   loop goes, see [`close_delay`]).
//!
//! The victim's killer is a POSIX timer whose signal is SIGKILL ([`Killer`]): the kernel kills
//! the process from the timer interrupt, at whatever instruction it is, with no helper thread
//! that would need a CPU. Everything starts once every process is attached; kills inside
//! `sender()` / `receiver()` and inside an MPSC sender's detach are the business of the window
//! tests below.
//!
//! Children are this test binary started again in a child role (`common::Scope::spawn`). They
//! report through a *board*: a small file every process maps, where each child stores, with
//! atomic stores, its phase (in a send, in a receive, holding a borrowed message, closing...),
//! the operation in flight, whether it holds the mutex, and after every accepted send the
//! number of messages accepted (after every received message, the next seq expected from each
//! producer). Unlike lines on a pipe, these stores are neither lost nor torn by SIGKILL and cost
//! no system call, so the reporting does not slow the senders down, and the victim's last phase
//! says where it died.
//!
//! # Stalls
//!
//! No stall is excused: a producer or consumer killed anywhere in its claim or take is covered
//! by its intent word (DESIGN.md section 4d), in MPSC and MPMC alike, so every stall after a kill
//! is a hang, and fails the iteration when the survivors are not done within [`DEADLINE`] of
//! the kill.
//!
//! # The windows around attach and detach
//!
//! [`kill_while_attaching`] and [`kill_while_detaching`] aim kills at the few instructions
//! between an attachment's count and its peer slot: a process killed inside `sender()` /
//! `receiver()` after raising the count and before writing its slot, or inside the drop of the
//! last MPSC `Sender` after freeing its slot and before the count and the DRAINING close are
//! done, leaves a count that no one can ever reap, and the other side's blocked call waits
//! forever. Both tests fail while that is so.

mod common;

use common::*;
use shmq::{Config, DeadPeer, Lock, MutexGuard, mpmc, mpsc};
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Iterations of [`torture`] without `SHMQ_TORTURE_ITERS`.
const DEFAULT_ITERS: u64 = 500;
/// Survivors must be done this long after the kill.
const DEADLINE: Duration = Duration::from_secs(10);
/// A deadline no blocking call of a child should ever reach (the parent's deadline comes first).
const LONG: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// The board: a shared file of u64 words every process of an iteration maps.

const BOARD_BYTES: usize = 16384;
/// Producers of an iteration, at most (MPMC with a producer victim).
const MAX_PRODUCERS: usize = 3;
/// Slots: producers 0..MAX_PRODUCERS, then 2 consumers.
const SLOTS: usize = MAX_PRODUCERS + 2;
const SLOT_WORDS: usize = 32;
const CONSUMER_SLOT: usize = MAX_PRODUCERS;
/// Set by the parent once every process is attached.
const W_GO: usize = SLOTS * SLOT_WORDS;
/// Two words: the data the mutex protects in a mutex iteration ([`ledger`]).
const W_LEDGER: usize = W_GO + 1;
/// MPMC, at W_RX_ATTACHED + p: 1 + the highest seq of producer p that a consumer received while
/// p had not started its close.
const W_RX_ATTACHED: usize = W_GO + 4;
/// MPMC: one bit per (producer, seq), set by the consumer that got the message.
const W_BITMAP: usize = 256;
const MAX_COUNT: u64 = 16384;
const BITMAP_WORDS: usize = (MAX_COUNT / 64) as usize;
const _: () = assert!(W_RX_ATTACHED + MAX_PRODUCERS <= W_BITMAP);
const _: () = assert!((W_BITMAP + MAX_PRODUCERS * BITMAP_WORDS) * 8 <= BOARD_BYTES);

// Fields of a slot.
const F_PHASE: usize = 0;
/// First seq (producer) or messages received before (consumer) of the operation in flight.
const F_OP_SEQ: usize = 1;
/// Messages the operation in flight may carry.
const F_OP_N: usize = 2;
/// Producer: messages accepted (seqs 0..n); consumer: messages received.
const F_DONE: usize = 3;
const F_OUTCOME: usize = 4;
/// CLOCK_MONOTONIC ns of the outcome (the last send or receive returned).
const F_T_OUT: usize = 5;
/// CLOCK_MONOTONIC ns at which the victim's own killer fired (or the parent sent SIGKILL).
const F_KILL_NS: usize = 6;
const F_PID: usize = 7;
const F_BYTES: usize = 8;
/// The pid a `PeerDead` error named.
const F_DEAD_PID: usize = 9;
/// Consumer: fragmented (larger than a quarter of the ring) messages received.
const F_BIG: usize = 10;
/// How long the close (the drop of the handle) took, in ns.
const F_CLOSE_NS: usize = 11;
/// The victim, mutex iterations: where it is with the mutex (`MX_*`).
const F_MX: usize = 12;
/// A survivor's locker: locks taken.
const F_MX_LOCKS: usize = 13;
/// A survivor's locker: `OwnerDied` results.
const F_MX_DIED: usize = 14;
/// A survivor's locker: 1 + the longest a lock that returned after the kill took, counted from
/// the kill or from the call if it came later, in ns (0: none returned after the kill).
const F_MX_AFTER_NS: usize = 15;
/// Consumer: next seq expected from producer p, at F_NEXT + p.
const F_NEXT: usize = 16;
/// A survivor's locker: 1 + how long its `OwnerDied` lock took, from the kill or from the call
/// if it came later, in ns.
const F_MX_DIED_NS: usize = F_NEXT + MAX_PRODUCERS;
/// A survivor's locker: its `OwnerDied` found the ledger half-updated.
const F_MX_TORN: usize = F_MX_DIED_NS + 1;
const _: () = assert!(F_MX_TORN < SLOT_WORDS);

// Phases.
const PH_START: u64 = 0;
const PH_ATTACHING: u64 = 1;
const PH_READY: u64 = 2;
const PH_IDLE: u64 = 3;
const PH_SEND: u64 = 4;
const PH_RESERVED: u64 = 5;
const PH_RECV: u64 = 6;
const PH_HOLD: u64 = 7;
const PH_CHECK: u64 = 8;
const PH_CLOSING: u64 = 9;
const PH_DONE: u64 = 10;

fn phase_name(p: u64) -> &'static str {
    match p {
        PH_START => "before attaching",
        PH_ATTACHING => "attaching",
        PH_READY => "before the start",
        PH_IDLE => "between operations",
        PH_SEND => "mid-send",
        PH_RESERVED => "mid-send, holding a reserved slot",
        PH_RECV => "mid-receive",
        PH_HOLD => "holding a borrowed message/batch",
        PH_CHECK => "checking a received message",
        PH_CLOSING => "mid-close (dropping its handle)",
        PH_DONE => "after its close",
        _ => "unknown phase",
    }
}

// Outcomes.
const O_RUNNING: u64 = 0;
const O_FINISHED: u64 = 1;
const O_REFUSED_CLOSED: u64 = 2;
const O_REFUSED_DEAD: u64 = 3;
const O_END_CLOSED: u64 = 4;
const O_END_DEAD: u64 = 5;
const O_STOPPED: u64 = 6;

fn outcome_name(o: u64) -> &'static str {
    match o {
        O_RUNNING => "still running",
        O_FINISHED => "sent everything",
        O_REFUSED_CLOSED => "refused (Closed)",
        O_REFUSED_DEAD => "refused (PeerDead)",
        O_END_CLOSED => "end-of-stream (Closed)",
        O_END_DEAD => "end-of-stream (PeerDead)",
        O_STOPPED => "stopped early to close",
        _ => "unknown outcome",
    }
}

// Where the victim is with the mutex (F_MX).
const MX_OUT: u64 = 0;
const MX_LOCKING: u64 = 1;
const MX_HOLDING: u64 = 2;
const MX_UNLOCKING: u64 = 3;

fn mx_name(m: u64) -> &'static str {
    match m {
        MX_OUT => "not holding the mutex",
        MX_LOCKING => "inside lock()",
        MX_HOLDING => "holding the mutex",
        MX_UNLOCKING => "inside the unlock",
        _ => "unknown mutex state",
    }
}

struct Board {
    map: memmap2::MmapRaw,
    path: PathBuf,
    owner: bool,
}

impl Board {
    fn path_for(tag: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(&dir).expect("create CARGO_TARGET_TMPDIR");
        dir.join(format!("torture-{tag}.board"))
    }

    fn create(path: PathBuf) -> Board {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create board file");
        f.set_len(BOARD_BYTES as u64).expect("size board file");
        let map = memmap2::MmapRaw::map_raw(&f).expect("map board file");
        Board { map, path, owner: true }
    }

    fn open(path: PathBuf) -> Board {
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).expect("open board file");
        let map = memmap2::MmapRaw::map_raw(&f).expect("map board file");
        assert_eq!(map.len(), BOARD_BYTES, "board file of the wrong size");
        Board { map, path, owner: false }
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < BOARD_BYTES / 8, "board word {i} out of range");
        // SAFETY: the mapping is BOARD_BYTES long and page-aligned, so word i is in bounds and
        // 8-byte aligned, and it lives as long as `self`; every process reaches the words only
        // through atomics.
        unsafe { &*(self.map.as_mut_ptr() as *const AtomicU64).add(i) }
    }

    fn slot(&self, s: usize) -> Slot<'_> {
        assert!(s < SLOTS);
        Slot { board: self, base: s * SLOT_WORDS }
    }

    fn go(&self) {
        self.word(W_GO).store(1, Ordering::Release);
    }

    fn wait_go(&self) {
        let t0 = Instant::now();
        while self.word(W_GO).load(Ordering::Acquire) == 0 {
            assert!(t0.elapsed() < Duration::from_secs(60), "the parent never said go");
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    fn bitmap(&self, p: usize, seq: u64) -> (&AtomicU64, u64) {
        assert!(p < MAX_PRODUCERS && seq < MAX_COUNT);
        (self.word(W_BITMAP + p * BITMAP_WORDS + (seq / 64) as usize), 1u64 << (seq % 64))
    }

    /// Mark (producer p, seq) received; true if it already was (a duplicate).
    fn mark(&self, p: usize, seq: u64) -> bool {
        let (w, bit) = self.bitmap(p, seq);
        w.fetch_or(bit, Ordering::AcqRel) & bit != 0
    }

    fn marked(&self, p: usize, seq: u64) -> bool {
        let (w, bit) = self.bitmap(p, seq);
        w.load(Ordering::Acquire) & bit != 0
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        if self.owner {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[derive(Clone, Copy)]
struct Slot<'a> {
    board: &'a Board,
    base: usize,
}

impl Slot<'_> {
    fn get(&self, f: usize) -> u64 {
        self.board.word(self.base + f).load(Ordering::Acquire)
    }

    fn set(&self, f: usize, v: u64) {
        self.board.word(self.base + f).store(v, Ordering::Release);
    }

    /// An operation on `n` messages from `seq` starts.
    fn begin(&self, phase: u64, seq: u64, n: u64) {
        self.set(F_OP_SEQ, seq);
        self.set(F_OP_N, n);
        self.set(F_PHASE, phase);
    }

    fn outcome(&self, o: u64, dead_pid: u32) {
        self.set(F_T_OUT, monotonic_ns());
        self.set(F_DEAD_PID, u64::from(dead_pid));
        self.set(F_OUTCOME, o);
    }

    /// A producer's messages that may be accepted already: those reported, plus those of the
    /// operation in flight.
    fn maybe_sent(&self) -> u64 {
        let in_op = matches!(self.get(F_PHASE), PH_SEND | PH_RESERVED);
        self.get(F_DONE) + if in_op { self.get(F_OP_N) } else { 0 }
    }
}

// ---------------------------------------------------------------------------------------------
// What an iteration does, derived from its seed.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Flavour {
    Spsc,
    Mpsc,
    Mpmc,
}

impl Flavour {
    fn name(self) -> &'static str {
        match self {
            Flavour::Spsc => "spsc",
            Flavour::Mpsc => "mpsc",
            Flavour::Mpmc => "mpmc",
        }
    }

    /// Whether it has `send_batch` and `recv_batch`.
    fn batches(self) -> bool {
        self != Flavour::Spsc
    }
}

const ROTATION: [Flavour; 5] = [Flavour::Spsc, Flavour::Mpsc, Flavour::Spsc, Flavour::Mpsc, Flavour::Mpmc];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Victim {
    Producer(usize),
    Consumer(usize),
}

impl Victim {
    fn slot(self) -> usize {
        match self {
            Victim::Producer(p) => p,
            Victim::Consumer(c) => CONSUMER_SLOT + c,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Victim::Producer(_) => "producer",
            Victim::Consumer(_) => "consumer",
        }
    }
}

/// How the victim dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// The parent sends SIGKILL `delay_us` after it sees (on the board) that the victim has sent
    /// or received `at` messages (or finished).
    Parent { at: u64, delay_us: u64 },
    /// The victim arms its killer for `delay_ns` ([`step_delay`]) just before operation `at`
    /// (producer: the send of seq `at`; consumer: the receive after `at` messages).
    Step { at: u64, delay_ns: u64 },
    /// Producer: the message of seq `at` goes through `reserve`; the victim dies right after the
    /// reserve (`None`) or `delay_ns` later, while writing or committing the slot.
    Reserve { at: u64, delay_ns: Option<u64> },
    /// The victim stops after `at` messages, arms its killer and closes (drops its handle) at
    /// once. A close takes a few µs, less than arming the timer may cost, so the delay is the
    /// parent's running estimate of the delay that lands in the close plus `jitter_ns` -
    /// `CLOSE_JITTER_NS / 2` ([`close_delay`]).
    Close { at: u64, jitter_ns: u64 },
}

/// [`Plan::name`]s, in the order of the summary's columns.
const PLAN_NAMES: [&str; 4] = ["by the parent", "at a step", "after reserve", "in close"];

impl Plan {
    fn name(self) -> &'static str {
        PLAN_NAMES[match self {
            Plan::Parent { .. } => 0,
            Plan::Step { .. } => 1,
            Plan::Reserve { .. } => 2,
            Plan::Close { .. } => 3,
        }]
    }
}

#[derive(Clone, Copy, Debug)]
struct Spec {
    seed: u64,
    flavour: Flavour,
    cap: usize,
    producers: usize,
    consumers: usize,
    counts: [u64; MAX_PRODUCERS],
    victim: Victim,
    plan: Plan,
    /// Consumer 0 is a thread of the parent (only when a producer is the victim).
    consumer_in_parent: bool,
    /// The victim holds the channel's mutex around most of its operations, and every survivor
    /// locks it now and then ([`Holder`], [`Locker`]).
    mutex: bool,
}

/// Messages the victim would send or receive if it lived.
/// (An MPMC consumer gets about half of them: a third is what it surely reaches.)
fn victim_ops(victim: Victim, counts: &[u64], producers: usize, flavour: Flavour) -> u64 {
    match victim {
        Victim::Producer(p) => counts[p],
        Victim::Consumer(_) if flavour == Flavour::Mpmc => counts[..producers].iter().sum::<u64>() / 3,
        Victim::Consumer(_) => counts[..producers].iter().sum(),
    }
}

fn roll(r: &mut SplitMix64, n: u64) -> u64 {
    r.next_u64() % n.max(1)
}

/// What arming a timer that is due soon costs on the 2-core Firecracker VM this was written on
/// (reprogramming the timer device exits the VM): a kill due sooner lands inside
/// `timer_settime`, before the operation starts. Step delays start from here.
const ARM_COST_NS: u64 = 18_000;

/// `ARM_COST_NS` plus 0, or plus 1 ns .. 0.5 ms spread over the orders of magnitude (a producer
/// sends a message in 1-10 µs, so this is up to a few hundred messages on).
fn step_delay(r: &mut SplitMix64) -> u64 {
    if roll(r, 4) == 0 {
        return ARM_COST_NS;
    }
    let e = roll(r, 19);
    ARM_COST_NS + (1 << e) + roll(r, 1 << e)
}

/// Spread of the delays of [`Plan::Close`] around the estimate.
const CLOSE_JITTER_NS: u64 = 6_000;

/// The killer's delay for [`Plan::Close`], from the estimate the parent passes down.
fn close_delay(jitter_ns: u64) -> u64 {
    let edge = std::env::var("TORTURE_CLOSE_EDGE_NS").ok().map_or(ARM_COST_NS, |v| parse_u64(&v));
    (edge + jitter_ns).saturating_sub(CLOSE_JITTER_NS / 2)
}

impl Spec {
    fn from_seed(seed: u64) -> Spec {
        let flavour = ROTATION[(seed % 5) as usize];
        let r = &mut SplitMix64::new(seed);
        let cap = 4096usize << roll(r, 5);
        let counts = [(); MAX_PRODUCERS].map(|()| 200 + roll(r, 2800));
        let victim = match flavour {
            Flavour::Spsc if roll(r, 2) == 0 => Victim::Producer(0),
            Flavour::Spsc => Victim::Consumer(0),
            Flavour::Mpsc if roll(r, 3) < 2 => Victim::Producer(roll(r, 2) as usize),
            Flavour::Mpsc => Victim::Consumer(0),
            Flavour::Mpmc if roll(r, 2) == 0 => Victim::Producer(roll(r, 3) as usize),
            Flavour::Mpmc => Victim::Consumer(roll(r, 2) as usize),
        };
        let (producers, consumers) = match (flavour, victim) {
            (Flavour::Spsc, _) => (1, 1),
            (Flavour::Mpsc, _) => (2, 1),
            (Flavour::Mpmc, Victim::Producer(_)) => (3, 2),
            (Flavour::Mpmc, Victim::Consumer(_)) => (2, 2),
        };
        let consumer_in_parent = matches!(victim, Victim::Producer(_)) && roll(r, 2) == 0;
        let ops = victim_ops(victim, &counts, producers, flavour);
        let plan = match (victim, roll(r, 20)) {
            (_, 0..=5) => Plan::Parent { at: roll(r, ops), delay_us: roll(r, 300) },
            (Victim::Producer(_), 6..=13) | (Victim::Consumer(_), 6..=15) => {
                Plan::Step { at: roll(r, ops), delay_ns: step_delay(r) }
            }
            (Victim::Producer(_), 14..=16) => {
                let delay_ns = if roll(r, 2) == 0 { None } else { Some(roll(r, 5_000)) };
                Plan::Reserve { at: roll(r, ops), delay_ns }
            }
            _ => Plan::Close { at: ops / 2 + roll(r, ops / 2 + 1), jitter_ns: roll(r, CLOSE_JITTER_NS) },
        };
        let mutex = roll(r, 3) == 0;
        Spec { seed, flavour, cap, producers, consumers, counts, victim, plan, consumer_in_parent, mutex }
    }

    fn config(&self) -> Config {
        Config::new().capacity(self.cap)
    }

    /// The board slots in use.
    fn slots(&self) -> Vec<usize> {
        (0..self.producers).chain(CONSUMER_SLOT..CONSUMER_SLOT + self.consumers).collect()
    }
}

/// Seed of iteration `i`: random, but `seed % 5` follows the flavour rotation.
fn iteration_seed(base: u64, i: u64) -> u64 {
    let s = SplitMix64::new(base ^ i.wrapping_mul(0xA076_1D64_78BD_642F)).next_u64() >> 4;
    s - s % 5 + i % 5
}

fn parse_u64(s: &str) -> u64 {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|e| panic!("bad number {s:?}: {e}"))
}

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().map(|v| parse_u64(&v))
}

// ---------------------------------------------------------------------------------------------
// Messages: checksum (u64), producer (u32), length (u32), seq (u64), pseudo-random body. The
// length of message (p, seq) is a function of the seed, so the receiver checks it too.

const HDR: usize = 24;
const SMALL_MAX: usize = 2048;
const SIZE_SALT: u64 = 0x512E_5EED_7041_0001;
const BODY_SALT: u64 = 0xB0D1_5EED_7041_0002;

fn mpmc_max(cap: usize) -> usize {
    (cap / 128 / 2) * 128 - 8
}

fn msg_len(spec: &Spec, p: usize, seq: u64) -> usize {
    let r = SplitMix64::new(spec.seed ^ SIZE_SALT ^ ((p as u64) << 56) ^ seq).next_u64();
    let small = HDR + (r % (SMALL_MAX - HDR + 1) as u64) as usize;
    match spec.flavour {
        Flavour::Mpmc => small.min(mpmc_max(spec.cap)),
        _ if (r >> 48) % 16 == 0 => spec.cap / 4 + 1 + ((r >> 16) % (spec.cap as u64 * 3 / 2)) as usize,
        _ => small,
    }
}

fn make_msg(spec: &Spec, p: usize, seq: u64, buf: &mut Vec<u8>) {
    let len = msg_len(spec, p, seq);
    buf.clear();
    buf.resize(len, 0);
    buf[8..12].copy_from_slice(&(p as u32).to_le_bytes());
    buf[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    buf[16..24].copy_from_slice(&seq.to_le_bytes());
    SplitMix64::new(spec.seed ^ BODY_SALT ^ ((p as u64) << 56) ^ seq).fill(&mut buf[HDR..]);
    let sum = hash64(&buf[8..]);
    buf[..8].copy_from_slice(&sum.to_le_bytes());
}

/// (producer, seq) of a received message, after checking its length and checksum.
fn parse_msg(spec: &Spec, msg: &[u8]) -> Result<(usize, u64), String> {
    if msg.len() < HDR {
        return Err(format!("a {}-byte message, shorter than the header", msg.len()));
    }
    let u32_at = |i: usize| u32::from_le_bytes(msg[i..i + 4].try_into().unwrap());
    let u64_at = |i: usize| u64::from_le_bytes(msg[i..i + 8].try_into().unwrap());
    let (sum, p, len, seq) = (u64_at(0), u32_at(8) as usize, u32_at(12) as usize, u64_at(16));
    if hash64(&msg[8..]) != sum {
        return Err(format!("a {}-byte message (producer {p}?, seq {seq}?) with a bad checksum", msg.len()));
    }
    if p >= spec.producers || len != msg.len() || len != msg_len(spec, p, seq) {
        return Err(format!("message (producer {p}, seq {seq}) of {} bytes is not the one sent", msg.len()));
    }
    Ok((p, seq))
}

/// A consumer's checks: every message intact, each producer's seqs in order without gaps or
/// duplicates (SPSC, MPSC), or increasing and never seen by any consumer before (MPMC).
struct Checker<'a> {
    spec: &'a Spec,
    board: &'a Board,
    slot: usize,
    next: [u64; MAX_PRODUCERS],
    total: u64,
    bytes: u64,
    big: u64,
}

impl Checker<'_> {
    fn check(&mut self, msg: &[u8]) {
        let who = format!("consumer (slot {}) after {} messages", self.slot, self.total);
        let (p, seq) = parse_msg(self.spec, msg).unwrap_or_else(|e| panic!("{who}: {e}"));
        if self.spec.flavour == Flavour::Mpmc {
            assert!(seq >= self.next[p], "{who}: producer {p} seq {seq} after seq {}: out of order", self.next[p]);
            assert!(!self.board.mark(p, seq), "{who}: producer {p} seq {seq} received twice");
            if self.board.slot(p).get(F_PHASE) < PH_CLOSING {
                self.board.word(W_RX_ATTACHED + p).fetch_max(seq + 1, Ordering::AcqRel);
            }
        } else {
            assert!(
                seq == self.next[p],
                "{who}: producer {p}: got seq {seq}, expected {}: {}",
                self.next[p],
                if seq < self.next[p] { "a duplicate" } else { "messages lost or reordered" }
            );
        }
        self.next[p] = seq + 1;
        self.total += 1;
        self.bytes += msg.len() as u64;
        if msg.len() > self.spec.cap / 4 - 8 {
            self.big += 1;
        }
        let s = self.board.slot(self.slot);
        s.set(F_NEXT + p, self.next[p]);
        s.set(F_BYTES, self.bytes);
        s.set(F_BIG, self.big);
        s.set(F_DONE, self.total);
    }
}

/// What the consumers got of one producer's messages: how many of its first `acked` seqs are
/// missing, how many it got in all, and 1 + the highest seq got (0: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Got {
    missing: u64,
    count: u64,
    beyond: u64,
}

impl Got {
    /// SPSC, MPSC: the one consumer got seqs 0..next, each once and in order (it checked).
    fn in_order(next: u64, acked: u64) -> Got {
        Got { missing: acked.saturating_sub(next), count: next, beyond: next }
    }

    /// MPMC: from the bitmap the consumers marked.
    fn marked(board: &Board, p: usize, acked: u64) -> Got {
        let mut g = Got { missing: 0, count: 0, beyond: 0 };
        for seq in 0..MAX_COUNT {
            if board.marked(p, seq) {
                g.count += 1;
                g.beyond = seq + 1;
            } else if seq < acked {
                g.missing += 1;
            }
        }
        g
    }
}

/// How a send or receive ended, told from the error's variant *name*: the error enums gain a
/// `PeerDead` variant while this test is being written, and both `Closed` and `PeerDead` mean
/// "closed" here. Anything else (`Corrupt`, `Timeout` of a wait that should not time out) is a
/// failure of the child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Closed,
    Dead(u32),
}

fn ended(what: &str, dbg: &str) -> End {
    if dbg.contains("Corrupt") {
        panic!("{what}: {dbg}");
    }
    if let Some(i) = dbg.find("PeerDead") {
        let pid = dbg[i..]
            .split("pid: ")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        return End::Dead(pid);
    }
    if dbg.contains("Closed") {
        return End::Closed;
    }
    panic!("{what}: unexpected error {dbg}");
}

/// A refused send: how it ended, after checking the message came back intact.
macro_rules! refused {
    ($what:expr, $err:expr, $msg:expr) => {{
        let e = $err;
        let end = ended($what, &format!("{e:?}"));
        assert!(e.into_inner() == *$msg, "{}: the refused message was not handed back intact", $what);
        end
    }};
}

// ---------------------------------------------------------------------------------------------
// Channels of the three flavours behind one face.

enum Ch {
    Spsc(shmq::Channel),
    Mpsc(mpsc::Channel),
    Mpmc(mpmc::Channel),
}

enum Tx {
    Spsc(shmq::Sender),
    Mpsc(mpsc::Sender),
    Mpmc(mpmc::Sender),
}

enum Rx {
    Spsc(shmq::Receiver),
    Mpsc(mpsc::Receiver),
    Mpmc(mpmc::Receiver),
}

/// `$body` with `$x` bound to the channel, sender or receiver inside `$e` (a [`Ch`], [`Tx`] or
/// [`Rx`], named by `$ty`), whatever its flavour: one body for the three types.
macro_rules! each {
    ($e:expr, $ty:ident, $x:ident => $body:expr) => {
        match $e {
            $ty::Spsc($x) => $body,
            $ty::Mpsc($x) => $body,
            $ty::Mpmc($x) => $body,
        }
    };
}

/// SPSC has no batch forms. These stand in for them so that one body of code serves the three
/// flavours ([`each!`]); it never picks a batch form for SPSC ([`Flavour::batches`]).
trait SpscHasNoBatches {
    fn send_batch(&mut self, _: &[Vec<u8>]) -> Result<(), shmq::SendError<usize>> {
        unreachable!("SPSC has no send_batch")
    }

    fn recv_batch(&mut self, _: usize) -> Result<mpmc::Batch<'_>, shmq::RecvError> {
        unreachable!("SPSC has no recv_batch")
    }
}

impl SpscHasNoBatches for shmq::Sender {}
impl SpscHasNoBatches for shmq::Receiver {}

impl Ch {
    fn create(spec: &Spec, name: &str) -> Ch {
        let cfg = spec.config();
        match spec.flavour {
            Flavour::Spsc => Ch::Spsc(shmq::Channel::create(name, &cfg).expect("create")),
            Flavour::Mpsc => Ch::Mpsc(mpsc::Channel::create(name, &cfg).expect("create")),
            Flavour::Mpmc => Ch::Mpmc(mpmc::Channel::create(name, &cfg).expect("create")),
        }
    }

    fn open(flavour: Flavour, name: &str) -> Ch {
        let cfg = Config::new();
        match flavour {
            Flavour::Spsc => Ch::Spsc(shmq::Channel::open(name, &cfg).expect("open")),
            Flavour::Mpsc => Ch::Mpsc(mpsc::Channel::open(name, &cfg).expect("open")),
            Flavour::Mpmc => Ch::Mpmc(mpmc::Channel::open(name, &cfg).expect("open")),
        }
    }

    fn close_now(&self) {
        each!(self, Ch, c => c.close_now()).expect("close_now");
    }

    fn dead_peer(&self) -> Option<DeadPeer> {
        each!(self, Ch, c => c.dead_peer()).expect("dead_peer")
    }

    fn stats(&self) -> shmq::Stats {
        each!(self, Ch, c => c.stats()).expect("stats")
    }

    /// The mutex of the mutex iterations.
    fn mutex(&self) -> shmq::Mutex {
        each!(self, Ch, c => c.mutex(MX_INDEX)).expect("mutex")
    }

    fn sender(&self) -> Tx {
        match self {
            Ch::Spsc(c) => Tx::Spsc(c.sender().expect("attach sender")),
            Ch::Mpsc(c) => Tx::Mpsc(c.sender().expect("attach sender")),
            Ch::Mpmc(c) => Tx::Mpmc(c.sender().expect("attach sender")),
        }
    }

    fn receiver(&self) -> Rx {
        match self {
            Ch::Spsc(c) => Rx::Spsc(c.receiver().expect("attach receiver")),
            Ch::Mpsc(c) => Rx::Mpsc(c.receiver().expect("attach receiver")),
            Ch::Mpmc(c) => Rx::Mpmc(c.receiver().expect("attach receiver")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dying.

/// SIGKILL to ourselves, after noting the time on the board.
fn die(board: &Board, slot: usize) -> ! {
    board.slot(slot).set(F_KILL_NS, monotonic_ns());
    // SAFETY: kill(2) on our own pid; SIGKILL ends every thread at once, no cleanup runs.
    unsafe { libc::kill(std::process::id() as i32, libc::SIGKILL) };
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A POSIX timer whose signal is SIGKILL: armed, the kernel kills the process from the timer
/// interrupt at the chosen moment, at whatever instruction its threads are (or were, if they
/// were not on a CPU just then). No helper thread, so nothing needs a CPU to fire on time.
struct Killer {
    timer: libc::timer_t,
    armed: bool,
    board: Arc<Board>,
    slot: usize,
}

impl Killer {
    fn new(board: Arc<Board>, slot: usize) -> Killer {
        // SAFETY: an all-zero sigevent is valid; we set the fields timer_create reads.
        let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
        sev.sigev_notify = libc::SIGEV_SIGNAL;
        sev.sigev_signo = libc::SIGKILL;
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: valid pointers to a sigevent and a timer id to fill in.
        let rc = unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer) };
        assert_eq!(rc, 0, "timer_create: {}", std::io::Error::last_os_error());
        Killer { timer, armed: false, board, slot }
    }

    /// Die `delay_ns` from now (the first call counts).
    fn arm(&mut self, delay_ns: u64) {
        if std::mem::replace(&mut self.armed, true) {
            return;
        }
        let d = delay_ns.max(1); // 0 would disarm
        self.board.slot(self.slot).set(F_KILL_NS, monotonic_ns() + d);
        let ts = |sec: u64, nsec: u64| libc::timespec { tv_sec: sec as libc::time_t, tv_nsec: nsec as libc::c_long };
        let its = libc::itimerspec { it_interval: ts(0, 0), it_value: ts(d / 1_000_000_000, d % 1_000_000_000) };
        // SAFETY: `timer` was created by timer_create and is never deleted; `its` is valid.
        let rc = unsafe { libc::timer_settime(self.timer, 0, &its, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "timer_settime: {}", std::io::Error::last_os_error());
    }
}

/// The victim's end: wait to be killed (by its killer, armed now if it has not fired yet, or by
/// the parent).
fn linger(killer: Option<&mut Killer>) -> ! {
    if let Some(k) = killer {
        k.arm(0);
    }
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("the victim was never killed");
}

// ---------------------------------------------------------------------------------------------
// The channel's mutex, in the mutex iterations.

/// The mutex of the segment the mutex iterations use.
const MX_INDEX: usize = 0;
/// A lock that takes longer fails the iteration. The victim holds the mutex for at most one
/// send, receive or close, which live peers let it finish in milliseconds, and a dead owner is
/// noticed within 2 ms.
const MX_LIMIT: Duration = Duration::from_secs(5);

/// The data the mutex protects: two board words that a holder makes unequal on entering and
/// equal again before leaving. A lock that returns `Acquired` and finds them unequal means the
/// mutex let two holders in, or recovered silently from a holder's death.
fn ledger(board: &Board) -> (&AtomicU64, &AtomicU64) {
    (board.word(W_LEDGER), board.word(W_LEDGER + 1))
}

/// The victim's use of the mutex: it holds it around most of its operations ([`Held`]), so that
/// the kill lands while it is held in most mutex iterations, and says on the board where it is
/// with it (`F_MX`), so the parent knows whether it died holding it.
struct Holder {
    m: shmq::Mutex,
    board: Arc<Board>,
    slot: usize,
}

/// The mutex held by the victim around one operation; dropping it balances the ledger and
/// unlocks.
struct Held<'a> {
    h: &'a Holder,
    guard: Option<MutexGuard<'a>>,
}

impl Holder {
    fn new(ch: &Ch, board: &Arc<Board>, slot: usize) -> Holder {
        Holder { m: ch.mutex(), board: board.clone(), slot }
    }

    /// The victim holds the mutex around three operations in four.
    fn maybe<'a>(h: Option<&'a Holder>, rng: &mut SplitMix64) -> Option<Held<'a>> {
        h.filter(|_| roll(rng, 4) != 0).map(Holder::lock)
    }

    fn lock(&self) -> Held<'_> {
        let s = self.board.slot(self.slot);
        s.set(F_MX, MX_LOCKING);
        // Nobody else dies holding it, and nobody holds it long.
        let guard = match self.m.lock_timeout(MX_LIMIT) {
            Ok(Lock::Acquired(g)) => g,
            other => panic!("the victim's lock: {other:?}"),
        };
        s.set(F_MX, MX_HOLDING);
        let (a, b) = ledger(&self.board);
        let v = a.load(Ordering::Acquire);
        assert_eq!(v, b.load(Ordering::Acquire), "the victim's lock: Acquired with the ledger half-updated");
        a.store(v + 1, Ordering::Release);
        Held { h: self, guard: Some(guard) }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let (a, b) = ledger(&self.h.board);
        b.store(a.load(Ordering::Acquire), Ordering::Release);
        let s = self.h.board.slot(self.h.slot);
        s.set(F_MX, MX_UNLOCKING);
        drop(self.guard.take());
        s.set(F_MX, MX_OUT);
    }
}

/// A survivor's lock: within [`MX_LIMIT`] it returns `Acquired` with the ledger balanced, or
/// `OwnerDied`, after which the ledger (maybe half-updated) is balanced again and the mutex
/// marked consistent. Then one balanced update of the ledger, and unlock. `Ok(Some(torn))` for
/// `OwnerDied`.
fn survivor_lock(m: &shmq::Mutex, board: &Board) -> Result<Option<bool>, String> {
    let l = m.lock_timeout(MX_LIMIT).map_err(|e| format!("lock_timeout({MX_LIMIT:?}): {e}"))?;
    let (a, b) = ledger(board);
    let (va, vb) = (a.load(Ordering::Acquire), b.load(Ordering::Acquire));
    let died = match &l {
        Lock::Acquired(_) if va != vb => {
            return Err(format!("Acquired with the ledger half-updated ({va} != {vb}): a silent recovery"));
        }
        Lock::Acquired(_) => None,
        Lock::OwnerDied(g) => {
            b.store(va, Ordering::Release);
            g.mark_consistent().map_err(|e| format!("mark_consistent after OwnerDied: {e}"))?;
            Some(va != vb)
        }
    };
    a.store(va + 1, Ordering::Release);
    b.store(va + 1, Ordering::Release);
    drop(l);
    Ok(died)
}

/// A survivor's locker thread: takes the mutex ([`survivor_lock`]) every 100-400 µs until
/// stopped, and notes on the board how many locks it took, its `OwnerDied`, and how long its
/// locks took after the kill. A failed lock panics the thread, and [`Locker::finish`] passes the
/// panic on. Dropped unfinished (its process panicked), it still stops.
struct Locker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Locker {
    fn start(ch: &Ch, board: &Arc<Board>, slot: usize, victim_slot: usize) -> Locker {
        let (m, board) = (ch.mutex(), board.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let s = board.slot(slot);
            let killed_at = || board.slot(victim_slot).get(F_KILL_NS);
            let mut rng = SplitMix64::new(monotonic_ns() ^ slot as u64);
            let mut locks: Vec<(u64, u64)> = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                let t0 = monotonic_ns();
                let got = survivor_lock(&m, &board)
                    .unwrap_or_else(|e| panic!("the locker of slot {slot}, lock {}: {e}", locks.len() + 1));
                let t1 = monotonic_ns();
                locks.push((t0, t1));
                s.set(F_MX_LOCKS, locks.len() as u64);
                if let Some(torn) = got {
                    s.set(F_MX_DIED, s.get(F_MX_DIED) + 1);
                    s.set(F_MX_DIED_NS, 1 + t1.saturating_sub(t0.max(killed_at())));
                    s.set(F_MX_TORN, u64::from(torn));
                }
                std::thread::sleep(Duration::from_micros(100 + roll(&mut rng, 300)));
            }
            let kill = killed_at();
            let after = locks.iter().filter(|&&(_, t1)| kill != 0 && t1 > kill).map(|&(t0, t1)| t1 - t0.max(kill));
            s.set(F_MX_AFTER_NS, after.max().map_or(0, |ns| ns + 1));
        });
        Locker { stop, thread: Some(thread) }
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(Err(panic)) = self.thread.take().map(JoinHandle::join) {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Children.

#[test]
#[ignore = "entry point of the child processes of the other tests; does nothing when run directly"]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else { return };
    let board = Arc::new(Board::open(PathBuf::from(env_var("TORTURE_BOARD"))));
    let name = env_var("TORTURE_NAME");
    match role.as_str() {
        "producer" | "consumer" => {
            let spec = Spec::from_seed(parse_u64(&env_var("TORTURE_SEED")));
            let slot: usize = env_var("TORTURE_SLOT").parse().unwrap();
            if role == "producer" {
                run_producer(&spec, slot, board, &name);
            } else {
                run_consumer(&spec, slot - CONSUMER_SLOT, board, &name);
            }
        }
        "window" => child_window(board, &name),
        other => panic!("unknown child role {other:?}"),
    }
}

/// What producers and consumers share: attaching, the victim's killer and mutex, a survivor's
/// locker, and the close.
struct Role {
    board: Arc<Board>,
    me: usize,
    /// The victim's plan.
    plan: Option<Plan>,
    killer: Option<Killer>,
    holder: Option<Holder>,
    locker: Option<Locker>,
    ch: Ch,
}

impl Role {
    /// Open the channel and attach (`attach`), then wait for the parent's go.
    fn start<A>(spec: &Spec, me: usize, board: Arc<Board>, name: &str, attach: impl FnOnce(&Ch) -> A) -> (Role, A) {
        let slot = board.slot(me);
        slot.set(F_PID, u64::from(std::process::id()));
        let victim = spec.victim.slot() == me;
        let plan = victim.then_some(spec.plan);
        let killer = (victim && !matches!(spec.plan, Plan::Parent { .. })).then(|| Killer::new(board.clone(), me));
        slot.set(F_PHASE, PH_ATTACHING);
        let ch = Ch::open(spec.flavour, name);
        let handle = attach(&ch);
        let holder = (victim && spec.mutex).then(|| Holder::new(&ch, &board, me));
        slot.set(F_PHASE, PH_READY);
        board.wait_go();
        slot.set(F_PHASE, PH_IDLE);
        let locker = (!victim && spec.mutex).then(|| Locker::start(&ch, &board, me, spec.victim.slot()));
        (Role { board, me, plan, killer, holder, locker, ch }, handle)
    }

    /// Close (drop `handle`, maybe holding the mutex, the victim's killer armed for the close
    /// plan), stop the locker, and for the victim wait to be killed.
    fn close<H>(self, handle: H, rng: &mut SplitMix64) {
        let Role { board, me, plan, mut killer, holder, locker, ch } = self;
        let slot = board.slot(me);
        let held = Holder::maybe(holder.as_ref(), rng);
        if let (Some(Plan::Close { jitter_ns, .. }), Some(k)) = (plan, killer.as_mut()) {
            k.arm(close_delay(jitter_ns));
        }
        slot.set(F_PHASE, PH_CLOSING);
        let t = monotonic_ns();
        drop(handle);
        slot.set(F_CLOSE_NS, monotonic_ns() - t);
        drop(held);
        if let Some(l) = locker {
            l.finish();
        }
        drop((holder, ch));
        slot.set(F_PHASE, PH_DONE);
        if plan.is_some() {
            linger(killer.as_mut());
        }
    }
}

/// The victim's step plan: arm the killer before operation `at` (the first one from there: a
/// batch may step over it).
fn step(plan: Option<Plan>, killer: Option<&mut Killer>, done: u64) {
    if let (Some(Plan::Step { at, delay_ns }), Some(k)) = (plan, killer) {
        if done >= at {
            k.arm(delay_ns);
        }
    }
}

// Send forms: 0 `send` (the default arm), and:
const FORM_TIMEOUT: u64 = 1;
const FORM_RESERVE: u64 = 2;
const FORM_BATCH: u64 = 3;

/// Producer `id`: send `counts[id]` messages in a mix of forms, reporting every accepted one on
/// the board, then close (drop the sender). The victim follows its plan.
fn run_producer(spec: &Spec, id: usize, board: Arc<Board>, name: &str) {
    let (mut role, mut tx) = Role::start(spec, id, board.clone(), name, Ch::sender);
    let slot = board.slot(id);
    let mut rng = SplitMix64::new(spec.seed ^ 0x7E57_0000 ^ id as u64);
    let mut count = spec.counts[id];
    if let Some(Plan::Close { at, .. }) = role.plan {
        count = count.min(at);
    }
    let mut msgs: Vec<Vec<u8>> = vec![Vec::new(); 4];
    let mut seq = 0u64;
    let end = loop {
        if seq >= count {
            break None;
        }
        let reserve_kill = match role.plan {
            Some(Plan::Reserve { at, delay_ns }) if seq == at => Some(delay_ns),
            _ => None,
        };
        let form = if reserve_kill.is_some() { FORM_RESERVE } else { rng.next_u64() % 4 };
        let batch = form == FORM_BATCH && spec.flavour.batches();
        let n = if batch { (1 + rng.next_u64() % 4).min(count - seq) } else { 1 };
        for (j, m) in msgs.iter_mut().take(n as usize).enumerate() {
            make_msg(spec, id, seq + j as u64, m);
        }
        let held = Holder::maybe(role.holder.as_ref(), &mut rng);
        step(role.plan, role.killer.as_mut(), seq);
        let killer = role.killer.as_mut();
        slot.begin(PH_SEND, seq, n);
        let msg = &msgs[0];
        // Ok(accepted) or Err((accepted, how it ended)).
        let res: Result<u64, (u64, End)> = each!(&mut tx, Tx, t => match form {
            FORM_TIMEOUT => {
                t.send_timeout(msg.clone(), LONG).map(|()| 1).map_err(|e| (0, refused!("send_timeout", e, msg)))
            }
            FORM_RESERVE if msg.len() <= t.max_zero_copy() => match t.reserve(msg.len()) {
                Err(e) => Err((0, ended("reserve", &format!("{e:?}")))),
                Ok(mut s) => {
                    slot.set(F_PHASE, PH_RESERVED);
                    reserved_kill(reserve_kill, killer, &board, id);
                    let half = msg.len() / 2;
                    s.write_at(0, &msg[..half]);
                    s.write_at(half, &msg[half..]);
                    s.commit().map(|()| 1).map_err(|e| (0, refused!("commit", e, msg)))
                }
            },
            FORM_BATCH if batch => t.send_batch(&msgs[..n as usize]).map(|()| n).map_err(|e| {
                let end = ended("send_batch", &format!("{e:?}"));
                (e.into_inner() as u64, end)
            }),
            _ => {
                reserved_kill_fallback(reserve_kill, killer);
                t.send(msg.clone()).map(|()| 1).map_err(|e| (0, refused!("send", e, msg)))
            }
        });
        let (k, end) = match res {
            Ok(k) => (k, None),
            Err((k, end)) => (k, Some(end)),
        };
        seq += k;
        slot.set(F_DONE, seq);
        if end.is_some() {
            break end;
        }
        slot.set(F_PHASE, PH_IDLE);
        drop(held);
    };
    match end {
        None if seq < spec.counts[id] => slot.outcome(O_STOPPED, 0),
        None => slot.outcome(O_FINISHED, 0),
        Some(End::Closed) => slot.outcome(O_REFUSED_CLOSED, 0),
        Some(End::Dead(pid)) => slot.outcome(O_REFUSED_DEAD, pid),
    }
    role.close(tx, &mut rng);
}

/// The victim's reserve plan, once the slot is reserved: die now, or arm the killer.
fn reserved_kill(plan: Option<Option<u64>>, killer: Option<&mut Killer>, board: &Board, slot: usize) {
    match (plan, killer) {
        (Some(None), _) => die(board, slot),
        (Some(Some(d)), Some(k)) => k.arm(d),
        _ => {}
    }
}

/// The reserve plan for a message too large to reserve: die during its send instead.
fn reserved_kill_fallback(plan: Option<Option<u64>>, killer: Option<&mut Killer>) {
    if let (Some(d), Some(k)) = (plan, killer) {
        k.arm(ARM_COST_NS + d.unwrap_or(0));
    }
}

const BATCH_MAX: usize = 16;

/// Consumer `idx`: receive in a mix of forms until end-of-stream, checking every message, then
/// close (drop the receiver). The victim follows its plan. Runs in a child, or in a thread of
/// the parent.
fn run_consumer(spec: &Spec, idx: usize, board: Arc<Board>, name: &str) {
    let me = CONSUMER_SLOT + idx;
    let (mut role, mut rx) = Role::start(spec, me, board.clone(), name, Ch::receiver);
    let slot = board.slot(me);
    let mut rng = SplitMix64::new(spec.seed ^ 0xC0_5E00 ^ idx as u64);
    let stop_at = match role.plan {
        Some(Plan::Close { at, .. }) => at,
        _ => u64::MAX,
    };
    let mut chk = Checker { spec, board: &board, slot: me, next: [0; MAX_PRODUCERS], total: 0, bytes: 0, big: 0 };
    let mut buf = Vec::new();
    let end = loop {
        if chk.total >= stop_at {
            break None;
        }
        let form = rng.next_u64() % 4;
        let batch = form == 2 && spec.flavour.batches();
        let held = Holder::maybe(role.holder.as_ref(), &mut rng);
        step(role.plan, role.killer.as_mut(), chk.total);
        slot.begin(PH_RECV, chk.total, if batch { BATCH_MAX as u64 } else { 1 });
        // A receive form: the call, then the phase while `$m` (what it returned) is checked.
        macro_rules! got {
            ($res:expr, $what:literal, $phase:expr, |$m:pat_param| $check:expr) => {
                match $res {
                    Ok($m) => {
                        slot.set(F_PHASE, $phase);
                        $check;
                        Ok(())
                    }
                    Err(e) => Err(ended($what, &format!("{e:?}"))),
                }
            };
        }
        let res: Result<(), End> = each!(&mut rx, Rx, r => match form {
            // The ring space of a borrowed message or batch stays borrowed while it is checked.
            1 => got!(r.recv_ref(), "recv_ref", PH_HOLD, |m| chk.check(&m.to_vec())),
            2 if batch => got!(r.recv_batch(BATCH_MAX), "recv_batch", PH_HOLD, |b| for v in b.iter() {
                v.copy_into(&mut buf);
                chk.check(&buf);
            }),
            2 | 3 => got!(r.recv_timeout(LONG), "recv_timeout", PH_CHECK, |v| chk.check(&v)),
            _ => got!(r.recv_into(&mut buf), "recv_into", PH_CHECK, |_| chk.check(&buf)),
        });
        if let Err(end) = res {
            break Some(end);
        }
        slot.set(F_PHASE, PH_IDLE);
        drop(held);
    };
    match end {
        None => slot.outcome(O_STOPPED, 0),
        Some(End::Closed) => slot.outcome(O_END_CLOSED, 0),
        Some(End::Dead(pid)) => slot.outcome(O_END_DEAD, pid),
    }
    role.close(rx, &mut rng);
}

// ---------------------------------------------------------------------------------------------
// The parent's side of an iteration.

/// Has child `pid` exited (without reaping it)?
fn has_exited(pid: u32) -> bool {
    // SAFETY: an all-zero siginfo_t is a valid value for waitid to fill in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child with WNOWAIT only inspects it; `info` is writable.
    let rc = unsafe {
        libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT)
    };
    // SAFETY: waitid filled `info` (or left it zeroed, when nothing happened).
    rc == 0 && unsafe { info.si_pid() } != 0
}

fn sigkill(pid: u32) {
    // SAFETY: kill(2) on a child of ours that has not been reaped yet (so the pid is still ours).
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

struct Child {
    slot: usize,
    pid: u32,
    proc: Option<Proc>,
    fin: Option<Finished>,
}

/// What the segment says (read through its file, as any process sees it).
#[derive(Debug)]
struct SegView {
    state: u32,
    senders: u32,
    receivers: u32,
    tail: u64,
    closed_bit: bool,
    head: u64,
    /// The ring word at the head (MPSC: the header of the message or claim there).
    head_word: u64,
    /// Peer-table words naming a pid (pid, role 1 sender / 2 receiver).
    peers: Vec<(u32, u64)>,
}

const POS_MASK: u64 = (1 << 62) - 1;
const OFF_PEERS: u64 = 640;

fn seg_view(name: &str, cap: usize) -> Option<SegView> {
    let f = std::fs::File::open(shmq::shm_path(name)).ok()?;
    let w128 = read_u64(&f, OFF_STATE);
    let w136 = read_u64(&f, OFF_STATE + 8);
    let tail_raw = read_u64(&f, OFF_TAIL);
    let head = read_u64(&f, OFF_HEAD) & POS_MASK;
    let head_word = read_u64(&f, OFF_RING + (head & (cap as u64 - 1)));
    let peers = (0..64)
        .map(|i| read_u64(&f, OFF_PEERS + 8 * i))
        .filter(|&w| w != 0)
        .map(|w| ((w & ((1 << 22) - 1)) as u32, w >> 62))
        .collect();
    Some(SegView {
        state: w128 as u32,
        senders: (w128 >> 32) as u32,
        receivers: w136 as u32,
        tail: tail_raw & POS_MASK,
        closed_bit: tail_raw >> 63 != 0,
        head,
        head_word,
        peers,
    })
}

fn describe(spec: &Spec, board: &Board, name: &str, children: &[Child]) -> String {
    // Field by field: nothing else reads the positions, and a derived Debug is no read for the
    // dead-code lint.
    let mut s = match seg_view(name, spec.cap) {
        Some(v) => format!(
            "segment: state {}, senders {}, receivers {}, head {}, tail {} (closed bit {}), word at the head {:#x}, \
             peers {:?}\n",
            v.state, v.senders, v.receivers, v.head, v.tail, v.closed_bit, v.head_word, v.peers
        ),
        None => "segment: gone\n".to_string(),
    };
    for slot in spec.slots() {
        let b = board.slot(slot);
        let alive = children
            .iter()
            .find(|c| c.slot == slot)
            .map_or("thread", |c| if c.fin.is_some() { "exited" } else { "alive" });
        s += &format!(
            "  slot {slot} pid {} ({alive}): {}, op at {} x{}, done {}, {}{}\n",
            b.get(F_PID),
            phase_name(b.get(F_PHASE)),
            b.get(F_OP_SEQ),
            b.get(F_OP_N),
            b.get(F_DONE),
            outcome_name(b.get(F_OUTCOME)),
            if spec.mutex { format!(", {}, {} locks", mx_name(b.get(F_MX)), b.get(F_MX_LOCKS)) } else { String::new() }
        );
    }
    s
}

/// What one iteration found.
#[derive(Default)]
struct Report {
    failures: Vec<String>,
    victim_phase: Option<u64>,
    msgs: u64,
    bytes: u64,
    big: u64,
    extras: u64,
    refusals: u64,
    /// Kill → end-of-stream of the consumers (a producer died and no other was still sending).
    notice_rx_ns: Option<u64>,
    /// Kill → refusal of a producer (the consumer died).
    notice_tx_ns: Vec<u64>,
    run_ns: u64,
    /// How long the closes (drops of a handle) that completed took.
    close_ns: Vec<u64>,
    mx: Option<MxReport>,
    claim: Option<ClaimReport>,
}

/// The mutex in a mutex iteration.
#[derive(Default)]
struct MxReport {
    /// Where the victim was with the mutex when it died (`MX_*`).
    victim: u64,
    /// `OwnerDied` got by the survivors' lockers, and by the parent's lock at the end.
    died_survivors: u64,
    died_parent: bool,
    /// An `OwnerDied` found the ledger half-updated.
    torn: bool,
    /// Locks the survivors' lockers took.
    locks: u64,
    /// A survivor's `OwnerDied`: how long its lock took, from the kill or from the call.
    takeover_ns: Option<u64>,
    /// The slowest lock that returned after the kill (the survivors' and the parent's).
    after_kill_ns: Option<u64>,
}

/// MPMC, a producer killed while the others go on.
#[derive(Default)]
struct ClaimReport {
    /// The consumers padded a claim it left uncommitted (`abandoned_claims`).
    dead_claim: bool,
    /// The surviving producers had messages left to send at the kill ...
    left_at_kill: bool,
    /// ... and sent some of them.
    sent_after: bool,
    /// A consumer received one of those while its producer was still attached.
    got_while_attached: bool,
}

fn run_iteration(scope: &Scope, idx: u64, seed: u64, close_edge: u64) -> Report {
    let spec = Spec::from_seed(seed);
    let mut rep = Report::default();
    let name = scope.name(&format!("{idx}"));
    let board = Arc::new(Board::create(Board::path_for(&format!("{}{idx}", scope.prefix()))));
    let ch = Ch::create(&spec, &name);
    let seed_s = format!("{seed:#x}");
    let edge_s = close_edge.to_string();
    let board_s = board.path.to_str().expect("utf-8 path").to_string();
    let spawn = |role: &str, slot: usize| {
        let slot_s = slot.to_string();
        let env = [
            ("TORTURE_NAME", name.as_str()),
            ("TORTURE_BOARD", &board_s),
            ("TORTURE_SEED", &seed_s),
            ("TORTURE_SLOT", &slot_s),
            ("TORTURE_CLOSE_EDGE_NS", &edge_s),
        ];
        let proc = scope.spawn(role, &env);
        Child { slot, pid: proc.pid(), proc: Some(proc), fin: None }
    };
    let mut children: Vec<Child> = (0..spec.producers).map(|p| spawn("producer", p)).collect();
    let mut thread: Option<JoinHandle<()>> = None;
    for c in 0..spec.consumers {
        if c == 0 && spec.consumer_in_parent {
            let (b, n) = (board.clone(), name.clone());
            thread = Some(std::thread::spawn(move || run_consumer(&spec, 0, b, &n)));
        } else {
            children.push(spawn("consumer", CONSUMER_SLOT + c));
        }
    }
    let victim_slot = spec.victim.slot();
    let victim_pid = children.iter().find(|c| c.slot == victim_slot).expect("the victim is a child").pid;

    // Everyone attached, then go.
    let t0 = Instant::now();
    let used = spec.slots();
    let mut start_failed = None;
    while used.iter().any(|&s| board.slot(s).get(F_PHASE) < PH_READY) {
        if let Some(c) = children.iter().find(|c| has_exited(c.pid)) {
            start_failed = Some(format!("child in slot {} exited before the start", c.slot));
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            start_failed = Some("children did not attach within 30 s".to_string());
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    board.go();
    let t_go = monotonic_ns();
    let mut kill_at: Option<u64> = None;
    if start_failed.is_some() {
        ch.close_now();
        for c in &children {
            sigkill(c.pid);
        }
    }

    // Watch until everyone is done, killing on time, or declaring a hang.
    let mut t_kill: Option<u64> = None;
    // What each producer may have sent when the parent learnt of the kill.
    let mut sent_at_kill: Option<Vec<u64>> = None;
    let mut parent_killed = false;
    let mut hang: Option<String> = None;
    let mut hang_at: Option<Instant> = None;
    loop {
        if hang_at.is_some_and(|t| t.elapsed() > DEADLINE) {
            break; // a consumer thread that even close_now did not release: leave it
        }
        for c in children.iter_mut().filter(|c| c.fin.is_none()) {
            if has_exited(c.pid) {
                c.fin = Some(c.proc.take().unwrap().wait(Duration::from_secs(10)));
                if c.slot == victim_slot && t_kill.is_none() {
                    let own = board.slot(victim_slot).get(F_KILL_NS);
                    t_kill = Some(if own != 0 { own } else { monotonic_ns() });
                }
            }
        }
        let thread_done = thread.as_ref().is_none_or(|h| h.is_finished());
        if children.iter().all(|c| c.fin.is_some()) && thread_done {
            break;
        }
        let now = monotonic_ns();
        if let (Plan::Parent { at, delay_us }, None) = (spec.plan, kill_at) {
            let v = board.slot(victim_slot);
            if v.get(F_DONE) >= at || v.get(F_OUTCOME) != O_RUNNING {
                kill_at = Some(now + delay_us * 1000);
            }
        }
        if let Some(at) = kill_at {
            if now >= at && !parent_killed && t_kill.is_none() {
                parent_killed = true;
                board.slot(victim_slot).set(F_KILL_NS, monotonic_ns());
                sigkill(victim_pid);
                t_kill = Some(monotonic_ns());
            }
        }
        if t_kill.is_some() && sent_at_kill.is_none() {
            sent_at_kill = Some((0..spec.producers).map(|p| board.slot(p).maybe_sent()).collect());
        }
        let deadline = match t_kill {
            Some(t) => t + DEADLINE.as_nanos() as u64,
            None => t_go + 3 * DEADLINE.as_nanos() as u64,
        };
        if now > deadline && hang.is_none() {
            let what = match t_kill {
                Some(_) => format!("survivors still running {DEADLINE:?} after the kill"),
                None => format!("the victim was not dead {:?} after the start", 3 * DEADLINE),
            };
            hang = Some(format!("HANG: {what}\n{}", describe(&spec, &board, &name, &children)));
            hang_at = Some(Instant::now());
            ch.close_now();
            for c in children.iter().filter(|c| c.fin.is_none()) {
                sigkill(c.pid);
            }
            if t_kill.is_none() {
                t_kill = Some(now);
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    rep.run_ns = monotonic_ns() - t_go;
    for c in children.iter_mut().filter(|c| c.fin.is_none()) {
        sigkill(c.pid); // only after a hang whose consumer thread never returned
        c.fin = Some(c.proc.take().unwrap().wait(Duration::from_secs(10)));
    }
    let thread = thread.filter(|h| h.is_finished() || hang_at.is_none());
    let thread_panic = thread.map(|h| h.join()).and_then(|r| r.err()).map(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    });

    // Checks.
    let f = &mut rep.failures;
    f.extend(start_failed);
    f.extend(hang.clone());
    if let Some(p) = thread_panic {
        f.push(format!("the consumer thread of the parent panicked: {p}"));
    }
    for c in &children {
        let fin = c.fin.as_ref().expect("reaped");
        if c.slot == victim_slot {
            if fin.status.signal() != Some(libc::SIGKILL) {
                f.push(format!(
                    "the victim (slot {}) was not killed but ended with {}\n{}",
                    c.slot,
                    fin.status,
                    fin.output()
                ));
            }
        } else if !fin.status.success() && hang.is_none() {
            f.push(format!("survivor in slot {} failed: {}\n{}", c.slot, fin.status, fin.output()));
        }
    }
    let vs = board.slot(victim_slot);
    rep.victim_phase = Some(vs.get(F_PHASE));
    rep.close_ns =
        used.iter().map(|&s| board.slot(s)).filter(|s| s.get(F_PHASE) == PH_DONE).map(|s| s.get(F_CLOSE_NS)).collect();
    let t_kill = t_kill.unwrap_or(t_go);
    let b = |s: usize| board.slot(s);
    let consumers: Vec<usize> = (CONSUMER_SLOT..CONSUMER_SLOT + spec.consumers).collect();
    // What the consumers got of producer p's messages.
    let got = |p: usize| {
        let acked = b(p).get(F_DONE);
        match spec.flavour {
            Flavour::Mpmc => Got::marked(&board, p, acked),
            _ => Got::in_order(b(CONSUMER_SLOT).get(F_NEXT + p), acked),
        }
    };
    if hang.is_none() && f.is_empty() {
        match spec.victim {
            Victim::Producer(v) => {
                // The consumers survived: everything reported is received exactly once, in order.
                for &c in &consumers {
                    if !matches!(b(c).get(F_OUTCOME), O_END_CLOSED | O_END_DEAD) {
                        f.push(format!("the consumer in slot {c} ended with {}", outcome_name(b(c).get(F_OUTCOME))));
                    }
                }
                for p in 0..spec.producers {
                    let (g, acked) = (got(p), b(p).get(F_DONE));
                    if p == v {
                        if g.missing > 0 || g.beyond > vs.maybe_sent() {
                            f.push(format!(
                                "killed producer {p} reported {acked} sent ({}, op of {} at {}), the consumers got {g:?}",
                                phase_name(vs.get(F_PHASE)),
                                vs.get(F_OP_N),
                                vs.get(F_OP_SEQ)
                            ));
                        }
                        rep.extras += g.count.saturating_sub(acked);
                    } else {
                        let o = b(p).get(F_OUTCOME);
                        if g.missing > 0 || g.beyond != acked {
                            f.push(format!(
                                "live producer {p} ({}) reported {acked} sent, the consumers got {g:?}",
                                outcome_name(o)
                            ));
                        }
                        if o == O_FINISHED && acked != spec.counts[p] {
                            f.push(format!("producer {p} finished after {acked} of {} messages", spec.counts[p]));
                        }
                        if matches!(o, O_REFUSED_CLOSED | O_REFUSED_DEAD) {
                            f.push(format!("live producer {p} was refused although the consumers lived"));
                        }
                    }
                }
                rep.msgs = consumers.iter().map(|&c| b(c).get(F_DONE)).sum();
                rep.bytes = consumers.iter().map(|&c| b(c).get(F_BYTES)).sum();
                rep.big = consumers.iter().map(|&c| b(c).get(F_BIG)).sum();
                let others_done = (0..spec.producers).filter(|&p| p != v).all(|p| {
                    let o = b(p);
                    o.get(F_OUTCOME) != O_RUNNING && o.get(F_T_OUT) < t_kill
                });
                let end = consumers.iter().map(|&c| b(c).get(F_T_OUT)).max().unwrap_or(0);
                let all_after = consumers.iter().all(|&c| b(c).get(F_T_OUT) > t_kill);
                if others_done && all_after && vs.get(F_PHASE) < PH_CLOSING {
                    rep.notice_rx_ns = Some(end - t_kill);
                }
                if spec.flavour == Flavour::Mpmc {
                    // Whether a survivor's message sent after the kill (beyond what it may have
                    // sent when the parent learnt of the kill) reached a consumer while that
                    // survivor was still attached.
                    let sent = |p: usize| sent_at_kill.as_ref().map_or(u64::MAX, |s| s[p]);
                    let survivors = || (0..spec.producers).filter(|&p| p != v);
                    rep.claim = Some(ClaimReport {
                        dead_claim: ch.stats().abandoned_claims > 0,
                        left_at_kill: survivors().any(|p| sent(p) < spec.counts[p]),
                        sent_after: survivors().any(|p| b(p).get(F_DONE) > sent(p)),
                        got_while_attached: survivors()
                            .any(|p| board.word(W_RX_ATTACHED + p).load(Ordering::Acquire) > sent(p)),
                    });
                }
            }
            Victim::Consumer(_) if spec.flavour != Flavour::Mpmc => {
                // The consumer died: every producer finished or was refused (checked by the
                // exit statuses and this), and the dead consumer got nothing that was not sent.
                for p in 0..spec.producers {
                    let o = b(p).get(F_OUTCOME);
                    let acked = b(p).get(F_DONE);
                    match o {
                        O_FINISHED if acked == spec.counts[p] => {}
                        O_REFUSED_CLOSED | O_REFUSED_DEAD => {
                            rep.refusals += 1;
                            if b(p).get(F_T_OUT) > t_kill && vs.get(F_PHASE) < PH_CLOSING {
                                rep.notice_tx_ns.push(b(p).get(F_T_OUT) - t_kill);
                            }
                        }
                        _ => f.push(format!("producer {p} ended with {} after {acked} messages", outcome_name(o))),
                    }
                    if got(p).beyond > acked {
                        f.push(format!(
                            "the dead consumer got {} messages of producer {p}, which sent {acked}",
                            got(p).beyond
                        ));
                    }
                }
                rep.msgs = vs.get(F_DONE);
                rep.bytes = vs.get(F_BYTES);
                rep.big = vs.get(F_BIG);
            }
            Victim::Consumer(vc) => {
                // MPMC, one of two consumers died: the other gets the rest; every message at
                // most once (checked as it arrived), and only the victim's operation in flight
                // may be lost.
                let sc = b(CONSUMER_SLOT + (1 - vc));
                if !matches!(sc.get(F_OUTCOME), O_END_CLOSED | O_END_DEAD) {
                    f.push(format!("the surviving consumer ended with {}", outcome_name(sc.get(F_OUTCOME))));
                }
                let in_op = matches!(vs.get(F_PHASE), PH_RECV | PH_HOLD | PH_CHECK);
                let mut missing = 0;
                for p in 0..spec.producers {
                    let o = b(p).get(F_OUTCOME);
                    let (g, acked) = (got(p), b(p).get(F_DONE));
                    if o != O_FINISHED {
                        f.push(format!("producer {p} ended with {}", outcome_name(o)));
                    }
                    missing += g.missing;
                    if g.beyond > acked {
                        f.push(format!("producer {p} seq {} was received, but only {acked} were sent", g.beyond - 1));
                    }
                }
                let allowed = if in_op { vs.get(F_OP_N) } else { 0 };
                if missing > allowed {
                    f.push(format!("{missing} accepted messages were never received ({} allowed)", allowed.min(99)));
                }
                rep.msgs = sc.get(F_DONE) + vs.get(F_DONE);
                rep.bytes = sc.get(F_BYTES) + vs.get(F_BYTES);
            }
        }
        // A death before the victim's close is reported as a death (PeerDead), not as a close:
        // the channel was closed by reaping the victim, which records it first.
        if vs.get(F_PHASE) < PH_CLOSING && spec.flavour != Flavour::Mpmc {
            let expect = |s: usize, want: u64, what: &str, f: &mut Vec<String>| {
                let o = b(s).get(F_OUTCOME);
                if o != want {
                    f.push(format!(
                        "slot {s}: {what} after the victim was killed ({}): {}",
                        phase_name(vs.get(F_PHASE)),
                        outcome_name(o)
                    ));
                }
            };
            match spec.victim {
                Victim::Producer(_) => expect(CONSUMER_SLOT, O_END_DEAD, "expected end-of-stream with PeerDead", f),
                Victim::Consumer(_) => {
                    for p in (0..spec.producers).filter(|&p| b(p).get(F_OUTCOME) != O_FINISHED) {
                        expect(p, O_REFUSED_DEAD, "expected a refusal with PeerDead", f);
                    }
                }
            }
        }
        // Whoever was named dead is the victim.
        if let Some(d) = ch.dead_peer() {
            if d.pid != victim_pid {
                f.push(format!("dead_peer names pid {} ({d:?}), the victim was {victim_pid}", d.pid));
            }
        }
        for &s in &used {
            let named = b(s).get(F_DEAD_PID);
            if s != victim_slot && named != 0 && named != u64::from(victim_pid) {
                f.push(format!("slot {s} got PeerDead naming pid {named}, the victim was {victim_pid}"));
            }
        }
        if spec.mutex {
            rep.mx = Some(check_mutex(&spec, &board, &ch, f));
        }
    }

    // The test plays the cleaner: remove the name; nothing of it may be left.
    drop(ch);
    match shmq::unlink(&name) {
        Ok(()) | Err(shmq::SegmentError::NotFound { .. }) => {}
        Err(e) => f.push(format!("unlink: {e}")),
    }
    if shmq::shm_path(&name).exists() {
        f.push(format!("{} is left after unlink", shmq::shm_path(&name).display()));
    }
    if !f.is_empty() {
        let head = format!(
            "iteration {idx}, SHMQ_TORTURE_SEED={seed:#x} ({} {} victim, plan {:?}, victim pid {victim_pid}, died {}{}):",
            spec.flavour.name(),
            spec.victim.kind(),
            spec.plan,
            phase_name(vs.get(F_PHASE)),
            if spec.mutex { format!(", {}", mx_name(vs.get(F_MX))) } else { String::new() }
        );
        f.insert(0, format!("{head}\n  spec {spec:?}"));
    }
    rep
}

/// The mutex after a mutex iteration, everyone done: the parent locks it as a survivor would
/// (`OwnerDied` only if no locker took it over from the dead victim yet), then once more (a
/// plain `Acquired`: marked consistent, it works). `OwnerDied` must have been seen exactly once
/// if the victim died holding the mutex, never if it died without it.
fn check_mutex(spec: &Spec, board: &Board, ch: &Ch, f: &mut Vec<String>) -> MxReport {
    let m = ch.mutex();
    let vs = board.slot(spec.victim.slot());
    let survivors: Vec<usize> = spec.slots().into_iter().filter(|&s| s != spec.victim.slot()).collect();
    let field = |s: usize, x: usize| board.slot(s).get(x);
    let t = monotonic_ns();
    let parent = survivor_lock(&m, board);
    let parent_ns = monotonic_ns() - t;
    let mut mx = MxReport {
        victim: vs.get(F_MX),
        died_survivors: survivors.iter().map(|&s| field(s, F_MX_DIED)).sum(),
        died_parent: matches!(parent, Ok(Some(_))),
        torn: matches!(parent, Ok(Some(true))) || survivors.iter().any(|&s| field(s, F_MX_TORN) != 0),
        locks: survivors.iter().map(|&s| field(s, F_MX_LOCKS)).sum(),
        takeover_ns: survivors.iter().map(|&s| field(s, F_MX_DIED_NS)).max().filter(|&ns| ns > 0).map(|ns| ns - 1),
        after_kill_ns: None,
    };
    let lockers_after = survivors.iter().map(|&s| field(s, F_MX_AFTER_NS)).filter(|&ns| ns > 0).map(|ns| ns - 1);
    mx.after_kill_ns = lockers_after.chain([parent_ns]).max();
    if let Err(e) = parent {
        f.push(format!("the parent's lock after the run: {e}"));
    }
    match m.try_lock() {
        Ok(Lock::Acquired(_)) => {}
        other => f.push(format!("the lock after the repair: {other:?}, expected Acquired")),
    }
    if m.is_unrecoverable() != Ok(false) {
        f.push(format!("the mutex is unrecoverable after the repair: {:?}", m.is_unrecoverable()));
    }
    let died = mx.died_survivors + u64::from(mx.died_parent);
    let expected = match mx.victim {
        MX_HOLDING => 1..=1,
        MX_OUT => 0..=0,
        _ => 0..=1,
    };
    if !expected.contains(&died) {
        f.push(format!(
            "the victim died {}, and OwnerDied was seen {died} times ({} by the survivors' lockers, {} by the parent's \
             lock at the end)",
            mx_name(mx.victim),
            mx.died_survivors,
            u64::from(mx.died_parent)
        ));
    }
    mx
}

// ---------------------------------------------------------------------------------------------
// Figures.

#[derive(Default)]
struct Row {
    iters: u64,
    msgs: u64,
    bytes: u64,
    big: u64,
    extras: u64,
    refusals: u64,
    failures: u64,
}

impl Row {
    fn add(&mut self, o: &Row) {
        self.iters += o.iters;
        self.msgs += o.msgs;
        self.bytes += o.bytes;
        self.big += o.big;
        self.extras += o.extras;
        self.refusals += o.refusals;
        self.failures += o.failures;
    }

    fn line(&self, flavour: &str, victim: &str) -> String {
        format!(
            "{flavour:<6} {victim:<9} {:>6} {:>12} {:>9.1} {:>11} {:>7} {:>9} {:>8}\n",
            self.iters,
            self.msgs,
            self.bytes as f64 / 1048576.0,
            self.big,
            self.extras,
            self.refusals,
            self.failures
        )
    }
}

/// The mutex iterations.
#[derive(Default)]
struct MxTotals {
    iters: u64,
    /// By where the victim was with the mutex when it died (`MX_*`).
    victim: [u64; 4],
    died_survivors: u64,
    died_parent: u64,
    torn: u64,
    locks: u64,
    takeover_ns: Vec<u64>,
    /// The slowest lock after the kill, per iteration: OwnerDied seen, or not.
    after_kill_died_ns: Vec<u64>,
    after_kill_ns: Vec<u64>,
}

/// MPMC iterations whose victim was a producer.
#[derive(Default)]
struct ClaimTotals {
    iters: u64,
    dead_claim: u64,
    /// Of those with a dead claim: the survivors had messages left at the kill ...
    left_at_kill: u64,
    /// ... sent some of them ...
    sent_after: u64,
    /// ... and a consumer got one while its producer was still attached.
    got_while_attached: u64,
    /// The same, in all of them (with or without a dead claim).
    got_while_attached_all: u64,
}

#[derive(Default)]
struct Totals {
    rows: BTreeMap<(Flavour, &'static str), Row>,
    /// (phase the victim died in, plan) → kills.
    phases: BTreeMap<(u64, &'static str), u64>,
    notice_rx: Vec<u64>,
    notice_tx: Vec<u64>,
    run_ns: Vec<u64>,
    close_ns: Vec<u64>,
    mx: MxTotals,
    claim: ClaimTotals,
    failures: Vec<String>,
}

fn ms(ns: u64) -> String {
    if ns < 1_000_000 { format!("{:.1} µs", ns as f64 / 1e3) } else { format!("{:.1} ms", ns as f64 / 1e6) }
}

fn spread(v: &mut [u64]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.sort_unstable();
    let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
    format!("n={} median {} p90 {} p99 {} max {}", v.len(), ms(q(0.5)), ms(q(0.9)), ms(q(0.99)), ms(q(1.0)))
}

impl Totals {
    fn add(&mut self, spec: &Spec, rep: Report) {
        let row = Row {
            iters: 1,
            msgs: rep.msgs,
            bytes: rep.bytes,
            big: rep.big,
            extras: rep.extras,
            refusals: rep.refusals,
            failures: u64::from(!rep.failures.is_empty()),
        };
        self.rows.entry((spec.flavour, spec.victim.kind())).or_default().add(&row);
        *self.phases.entry((rep.victim_phase.unwrap_or(99), spec.plan.name())).or_default() += 1;
        self.notice_rx.extend(rep.notice_rx_ns);
        self.notice_tx.extend(rep.notice_tx_ns);
        self.run_ns.push(rep.run_ns);
        self.close_ns.extend(rep.close_ns);
        if let Some(mx) = rep.mx {
            let t = &mut self.mx;
            t.iters += 1;
            t.victim[(mx.victim as usize).min(3)] += 1;
            t.died_survivors += mx.died_survivors;
            t.died_parent += u64::from(mx.died_parent);
            t.torn += u64::from(mx.torn);
            t.locks += mx.locks;
            t.takeover_ns.extend(mx.takeover_ns);
            let died = mx.died_survivors > 0 || mx.died_parent;
            if died { &mut t.after_kill_died_ns } else { &mut t.after_kill_ns }.extend(mx.after_kill_ns);
        }
        if let Some(c) = rep.claim {
            let t = &mut self.claim;
            t.iters += 1;
            t.dead_claim += u64::from(c.dead_claim);
            t.left_at_kill += u64::from(c.dead_claim && c.left_at_kill);
            t.sent_after += u64::from(c.dead_claim && c.sent_after);
            t.got_while_attached += u64::from(c.dead_claim && c.got_while_attached);
            t.got_while_attached_all += u64::from(c.got_while_attached);
        }
        if !rep.failures.is_empty() {
            self.failures.push(rep.failures.join("\n  "));
        }
    }

    fn print(&mut self, iters: u64, secs: f64, base: u64) {
        let mut s =
            format!("\n=== kill -9 torture: {iters} iterations in {secs:.1} s (SHMQ_TORTURE_BASE={base:#x}) ===\n");
        s += &format!(
            "{:<6} {:<9} {:>6} {:>12} {:>9} {:>11} {:>7} {:>9} {:>8}\n",
            "flavr", "victim", "iters", "msgs checked", "MiB", "fragmented", "extras", "refusals", "failures"
        );
        let mut all = Row::default();
        for ((fl, v), r) in &self.rows {
            s += &r.line(fl.name(), v);
            all.add(r);
        }
        s += &all.line("all", "");
        let p = PLAN_NAMES;
        s += &format!(
            "{:<36} {:>15} {:>15} {:>15} {:>15} {:>7}\n",
            "where the victims died, by plan", p[0], p[1], p[2], p[3], "all"
        );
        let mut phases: Vec<u64> = self.phases.keys().map(|&(p, _)| p).collect();
        phases.dedup();
        for ph in phases {
            let n = p.map(|p| self.phases.get(&(ph, p)).copied().unwrap_or(0));
            s += &format!(
                "  {:<34} {:>15} {:>15} {:>15} {:>15} {:>7}\n",
                phase_name(ph),
                n[0],
                n[1],
                n[2],
                n[3],
                n.iter().sum::<u64>()
            );
        }
        s += &format!("kill -> consumers' end-of-stream (a producer died): {}\n", spread(&mut self.notice_rx));
        s += &format!("kill -> a producer refused (the consumer died): {}\n", spread(&mut self.notice_tx));
        s += &format!("iteration run time (start -> all done): {}\n", spread(&mut self.run_ns));
        s += &format!("a close (drop of a sender/receiver): {}\n", spread(&mut self.close_ns));
        let mx = &mut self.mx;
        let v = mx.victim;
        s += &format!(
            "mutex iterations: {} ({} locks by the survivors' lockers); the victim died holding the mutex {}, inside \
             lock() {}, inside the unlock {}, not holding it {}\n",
            mx.iters,
            mx.locks,
            v[MX_HOLDING as usize],
            v[MX_LOCKING as usize],
            v[MX_UNLOCKING as usize],
            v[MX_OUT as usize]
        );
        s += &format!(
            "  OwnerDied seen {} times: {} by a survivor's locker, {} by the parent's lock after the run; the data \
             found half-updated {} times\n",
            mx.died_survivors + mx.died_parent,
            mx.died_survivors,
            mx.died_parent,
            mx.torn
        );
        s += &format!("  a survivor's OwnerDied, from the kill (or its call): {}\n", spread(&mut mx.takeover_ns));
        s += &format!(
            "  slowest lock after the kill, per iteration (from the kill or its call): with an OwnerDied {}; without {}\n",
            spread(&mut mx.after_kill_died_ns),
            spread(&mut mx.after_kill_ns)
        );
        let c = &self.claim;
        s += &format!(
            "mpmc, a producer killed while two go on: {} iterations, a dead claim padded in {}; of these, the \
             survivors had messages left at the kill in {}, sent some after it in {}, and a consumer got one while its \
             producer was still attached (before its close) in {} (in all {}: {})\n",
            c.iters,
            c.dead_claim,
            c.left_at_kill,
            c.sent_after,
            c.got_while_attached,
            c.iters,
            c.got_while_attached_all
        );
        s += &format!("failures: {}\n", self.failures.len());
        eprintln!("{s}");
    }
}

/// The kill -9 torture of issue #4; see the module documentation.
#[test]
fn torture() {
    let _x = exclusive();
    let scope = Scope::new("torture");
    let one = env_u64("SHMQ_TORTURE_SEED");
    let iters = if one.is_some() { 1 } else { env_u64("SHMQ_TORTURE_ITERS").unwrap_or(DEFAULT_ITERS) };
    let base = env_u64("SHMQ_TORTURE_BASE").unwrap_or_else(|| monotonic_ns() ^ u64::from(std::process::id()) << 40);
    eprintln!("torture: {iters} iterations, SHMQ_TORTURE_BASE={base:#x}");
    let mut totals = Totals::default();
    // The killer's delay that lands a kill inside a close (see `Plan::Close`), learnt as we go.
    let mut close_edge = ARM_COST_NS as f64;
    let t0 = Instant::now();
    for i in 0..iters {
        let seed = one.unwrap_or_else(|| iteration_seed(base, i));
        let spec = Spec::from_seed(seed);
        let rep = run_iteration(&scope, i, seed, close_edge as u64);
        if let (Plan::Close { .. }, Some(ph)) = (spec.plan, rep.victim_phase) {
            // Steer the close kills into the close: earlier if they land after it, later if before.
            close_edge = match ph {
                PH_DONE => close_edge - 300.0,
                PH_CLOSING => close_edge,
                _ => close_edge + 300.0,
            }
            .clamp(0.0, 100_000.0);
        }
        if !rep.failures.is_empty() {
            eprintln!("FAILED {}", rep.failures.join("\n  "));
        }
        totals.add(&spec, rep);
        if (i + 1) % 500 == 0 {
            eprintln!(
                "torture: {} iterations, {:.0} s, {} failures",
                i + 1,
                t0.elapsed().as_secs_f64(),
                totals.failures.len()
            );
        }
    }
    totals.print(iters, t0.elapsed().as_secs_f64(), base);
    eprintln!("close kills: killer delay estimate at the end {close_edge:.0} ns");
    assert!(
        totals.failures.is_empty(),
        "{} of {iters} iterations failed; the first:\n{}",
        totals.failures.len(),
        totals.failures[0]
    );
    scope.finish();
}

// ---------------------------------------------------------------------------------------------
// The windows around attach and detach, aimed at directly.

/// A child that arms its killer for `TORTURE_DELAY_NS` and attaches (or detaches) at once: the
/// parent places the death just before, inside or just after the operation by that delay.
fn child_window(board: Arc<Board>, name: &str) {
    let slot = board.slot(0);
    slot.set(F_PID, u64::from(std::process::id()));
    let delay: u64 = parse_u64(&env_var("TORTURE_DELAY_NS"));
    let mut k = Killer::new(board.clone(), 0);
    let fire_then_wait = |k: &mut Killer| {
        k.arm(delay);
        monotonic_ns()
    };
    match env_var("TORTURE_WINDOW").as_str() {
        mode @ ("attach-sender" | "attach-receiver") => {
            let ch = shmq::Channel::open(name, &Config::new()).unwrap();
            slot.set(F_PHASE, PH_ATTACHING);
            let t0 = fire_then_wait(&mut k);
            let handles = if mode == "attach-sender" {
                (Some(ch.sender().unwrap()), None)
            } else {
                (None, Some(ch.receiver().unwrap()))
            };
            slot.set(F_T_OUT, monotonic_ns() - t0);
            slot.set(F_PHASE, PH_READY);
            let _keep = (ch, handles);
            linger(None);
        }
        "detach-sender" => {
            let ch = mpsc::Channel::open(name, &Config::new()).unwrap();
            let tx = ch.sender().unwrap();
            tx.send(b"before the close").unwrap();
            slot.set(F_PHASE, PH_CLOSING);
            let t0 = fire_then_wait(&mut k);
            drop(tx);
            slot.set(F_T_OUT, monotonic_ns() - t0);
            slot.set(F_PHASE, PH_DONE);
            let _keep = ch;
            linger(None);
        }
        other => panic!("unknown window {other:?}"),
    }
}

/// Extra handles the parent holds open in the attach attempts (see `window_attempt`): with its
/// own handle and attachment and the child's handle, 61 of the 64 peer slots are taken.
const BUSY_HANDLES: usize = 58;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Window {
    AttachSender,
    AttachReceiver,
    DetachSender,
}

/// Where a window child died relative to its operation.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
enum Landed {
    Before,
    Inside,
    After,
}

/// One attempt (see [`child_window`]); then the parent checks that its own blocked call notices
/// the death. Returns where the kill landed, a description, and Some(failure).
fn window_attempt(scope: &Scope, i: u64, w: Window, delay_ns: u64) -> (Landed, String, Option<String>) {
    let name = scope.name(&format!("w{i}"));
    let board = Board::create(Board::path_for(&format!("{}w{i}", scope.prefix())));
    let cfg = Config::new().capacity(4096);
    let spawn = |mode: &str| {
        let delay = delay_ns.to_string();
        let b = board.path.to_str().unwrap().to_string();
        let env = [
            ("TORTURE_NAME", name.as_str()),
            ("TORTURE_BOARD", &b),
            ("TORTURE_WINDOW", mode),
            ("TORTURE_DELAY_NS", &delay),
        ];
        scope.spawn("window", &env)
    };
    let confirm = Duration::from_secs(2);
    let phase = |b: &Board| b.slot(0).get(F_PHASE);
    let result = match w {
        Window::AttachSender | Window::AttachReceiver => {
            let ch = shmq::Channel::create(&name, &cfg).unwrap();
            // A busy channel: many open handles (each holds a slot of the 64-slot peer table),
            // as a supervisor of many workers would have. The child's `register` then walks
            // past them between raising the count and writing its slot.
            let _busy: Vec<shmq::Channel> =
                (0..BUSY_HANDLES).map(|_| shmq::Channel::open(&name, &Config::new()).unwrap()).collect();
            let sender_side = w == Window::AttachSender;
            let mut rx = if sender_side { Some(ch.receiver().unwrap()) } else { None };
            let mut tx = if sender_side { None } else { Some(ch.sender().unwrap()) };
            let child = spawn(if sender_side { "attach-sender" } else { "attach-receiver" });
            let pid = child.pid();
            let fin = child.wait(Duration::from_secs(30));
            assert_eq!(fin.status.signal(), Some(libc::SIGKILL), "the window child was not killed\n{}", fin.output());
            let seg = seg_view(&name, 4096).expect("segment");
            let count = if sender_side { seg.senders } else { seg.receivers };
            let in_table = seg.peers.iter().any(|&(p, kind)| p == pid && kind != 3);
            let landed = match (phase(&board), count) {
                (PH_READY, _) => Landed::After,
                (_, 0) => Landed::Before,
                _ => Landed::Inside,
            };
            let what = format!("count {count}, {} attachment slot", if in_table { "with its" } else { "no" });
            if count == 0 {
                (landed, what, None)
            } else {
                // Its death must be noticed: our blocked call returns.
                let t = Instant::now();
                let noticed = match (rx.as_mut(), tx.as_mut()) {
                    (Some(rx), _) => match rx.recv_timeout(confirm) {
                        Err(e) => !e.is_timeout(),
                        Ok(m) => panic!("received {m:?} from nobody"),
                    },
                    (None, Some(tx)) => loop {
                        if let Err(e) = tx.send_timeout(vec![0u8; 500], confirm) {
                            break !e.is_timeout();
                        }
                    },
                    (None, None) => unreachable!(),
                };
                let side = if sender_side { "sender" } else { "receiver" };
                let failure = (!noticed).then(|| {
                    format!(
                        "attempt {i}: the {side} (pid {pid}) was killed inside {side}() ({delay_ns} ns after arming its killer, {}): the \
                         segment shows {what}, and our blocked {} did not notice the death within {confirm:?}\n  {seg:?}",
                        phase_name(phase(&board)),
                        if sender_side { "recv_timeout" } else { "send_timeout" },
                    )
                });
                (landed, format!("{what}, noticed after {:?}", t.elapsed()), failure)
            }
        }
        Window::DetachSender => {
            let ch = mpsc::Channel::create(&name, &cfg).unwrap();
            let mut rx = ch.receiver().unwrap();
            let child = spawn("detach-sender");
            let pid = child.pid();
            let fin = child.wait(Duration::from_secs(30));
            assert_eq!(fin.status.signal(), Some(libc::SIGKILL), "the window child was not killed\n{}", fin.output());
            let seg = seg_view(&name, 4096).expect("segment");
            let in_table = seg.peers.iter().any(|&(p, kind)| p == pid && kind != 3);
            let landed = match phase(&board) {
                PH_DONE => Landed::After,
                _ if seg.senders == 1 && in_table && seg.state == 1 => Landed::Before,
                _ => Landed::Inside,
            };
            let what = format!(
                "state {}, senders {}, {} attachment slot, closed bit {}",
                seg.state,
                seg.senders,
                if in_table { "with its" } else { "no" },
                seg.closed_bit
            );
            assert_eq!(rx.recv_timeout(confirm).expect("the message sent before the close"), b"before the close");
            let t = Instant::now();
            let noticed = !matches!(rx.recv_timeout(confirm), Err(e) if e.is_timeout());
            let failure = (!noticed).then(|| {
                format!(
                    "attempt {i}: the only MPSC sender (pid {pid}) was killed inside the drop of its Sender (killer armed \
                     {delay_ns} ns before): the segment shows {what}, and our blocked recv_timeout did not reach end-of-stream \
                     within {confirm:?}\n  {seg:?}"
                )
            });
            (landed, format!("{what}, noticed after {:?}", t.elapsed()), failure)
        }
    };
    let _ = shmq::unlink(&name);
    result
}

fn window_test(tag: &str, windows: &[Window], default_tries: u64) {
    let _x = exclusive();
    let scope = Scope::new(tag);
    let tries = env_u64("SHMQ_TORTURE_WINDOW_TRIES").unwrap_or(default_tries);
    let mut r = SplitMix64::new(monotonic_ns());
    // The killer's delay at which the kill lands at the start of the operation (about what
    // arming the timer and its expiry take), found as we go: too early a kill (the operation had
    // not started) moves it up, too late a kill (it had finished) moves it down.
    let mut edge = 1500.0f64;
    let mut classes: BTreeMap<String, u64> = BTreeMap::new();
    let mut landed: BTreeMap<Landed, u64> = BTreeMap::new();
    let mut failures = Vec::new();
    let t0 = Instant::now();
    let mut done = 0;
    for i in 0..tries {
        let w = windows[(i % windows.len() as u64) as usize];
        let step = (1000.0 * 0.97f64.powi(i as i32)).max(100.0);
        let delay = (edge + (roll(&mut r, 2001) as f64 - 1000.0) / 1000.0 * 2.0 * step).max(0.0) as u64;
        let (l, what, failure) = window_attempt(&scope, i, w, delay);
        match l {
            Landed::Before => edge += step / 2.0,
            Landed::After => edge -= step / 2.0,
            Landed::Inside => {}
        }
        edge = edge.clamp(0.0, 50_000.0);
        *landed.entry(l).or_default() += 1;
        let key = what.split(", noticed").next().unwrap_or_default().to_string();
        *classes.entry(format!("{w:?} {l:?}: {key}")).or_default() += 1;
        done += 1;
        if let Some(f) = failure {
            eprintln!("{f}");
            failures.push(f);
            if failures.len() >= 3 {
                break;
            }
        }
    }
    let mut s = format!(
        "\n=== kill while {tag}ing: {done} attempts in {:.1} s (killer delay at the edge ~{edge:.0} ns) ===\n",
        t0.elapsed().as_secs_f64()
    );
    for (c, n) in &classes {
        s += &format!("  {n:>5}  {c}\n");
    }
    s += &format!("landed {landed:?}; deaths never noticed: {}\n", failures.len());
    eprintln!("{s}");
    assert!(failures.is_empty(), "a death was never noticed ({} times); the first:\n{}", failures.len(), failures[0]);
    scope.finish();
}

/// A process killed inside `sender()` / `receiver()`: once it counts in the segment, its death
/// must be noticed by the other side's blocked call, like any other death.
#[test]
fn kill_while_attaching() {
    window_test("attach", &[Window::AttachSender, Window::AttachReceiver], 200);
}

/// The only MPSC sender killed inside the drop of its `Sender` (detach, then the close as the
/// last sender): the receiver must still reach end-of-stream.
#[test]
fn kill_while_detaching() {
    window_test("detach", &[Window::DetachSender], 300);
}
