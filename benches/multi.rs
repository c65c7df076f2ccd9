//! shmq MPSC / MPMC benchmarks, with their baselines measured in the same run.
//!
//! Every shmq producer and consumer is a **process**: this binary re-executes itself
//! (`std::env::current_exe()`) in a child role chosen by the `SHMQ_BENCH_CHILD` environment
//! variable, checked at the very top of `main` before criterion sees the arguments. Children get
//! anonymous channels (memfds: nothing in /dev/shm) as inherited descriptors, plus a Unix socket
//! for control: per criterion sample the parent writes "send N messages" to each producer, which
//! sends them and acknowledges. The parent times the sample (`iter_custom`): the clock starts
//! before the first command is written and stops when the last message has been received; the
//! acknowledgements are read outside the timed region.
//!
//! | group          | one iteration = one message of | producers → consumers                | contenders |
//! |----------------|--------------------------------|--------------------------------------|------------|
//! | `m4to1_64B`    | 64 B                           | 4 child processes → this thread      | shmq::mpsc `send` / `send_batch`, crossbeam 4 threads → 1 |
//! | `m4to1_4KiB`   | 4 KiB                          | same                                 | same |
//! | `m4to4_64B`    | 64 B                           | 4 child processes → 4 child processes | shmq::mpmc `send` / `send_batch`, crossbeam 4 threads → 4 threads |
//! | `m4to4_4KiB`   | 4 KiB                          | same                                 | same |
//! | `m1to1_64B`    | 64 B                           | 1 child process → this thread        | shmq::mpsc `send`, mpsc `send_batch`, shmq::Channel (SPSC) `send` |
//!
//! * Producers send their share of N (N/4 each, the remainder spread) with `send`, or with
//!   `send_batch` of [`SEND_BATCH`] messages. The shmq receiver in the parent (4→1, 1→1) takes
//!   exactly N messages with `recv_into` (plain contenders) or `recv_batch(`[`RECV_BATCH`]`)`
//!   (batched contenders), and copies every message out (`recv_into` / `View::read_at`).
//! * 4→4: the consumers run until the channel closes; each producer ends its share with a 1-byte
//!   end marker. Every consumer keeps receiving (and copying out) and writes one byte to a shared
//!   pipe per marker it takes; the parent stops the clock when it has read 4 such bytes. A
//!   producer's marker follows all its messages in ring order, so when all 4 markers are taken
//!   every message has been claimed by a consumer (at most one batch per consumer may still be
//!   being copied: microseconds against samples of milliseconds).
//! * crossbeam-channel baselines: `bounded(1024)` carrying `[u8; 64]` / `[u8; 4096]` **by value**
//!   (no allocation per message, like spsc.rs); 4 sender threads and 1 receiver thread (this
//!   one), or 4 receiver threads that signal the markers (a message whose first byte is 0) on a
//!   crossbeam channel to this thread. crossbeam has no batch API: the batched shmq contenders
//!   are compared with the same crossbeam contender.
//! * Placement: the 4→1 and 4→4 groups (5 and 8 busy processes or threads on a 2-CPU machine)
//!   are left to the scheduler; the 1→1 group pins this thread to CPU 0 and the producer to CPU 1
//!   as spsc.rs's throughput groups do (`SHMQ_BENCH_UNPINNED=1` leaves it to the scheduler too).
//!
//! After each group its contenders run again, alternating (A B C A B C ..., 10 rounds of 100 ms
//! each; 5 of 20 ms in smoke runs; `SHMQ_BENCH_ROUNDS=N` changes the rounds, 0 turns this off):
//! on this shared 2-CPU VM the speed changes from one criterion bench to the next, so the
//! per-round ratios of the interleaved check are the fairer comparison. After criterion's report
//! a summary prints the criterion medians of this run and the interleaved medians, with the
//! ratios against the targets of issue #3 (4→1 64 B `send` ≥ 1.0× crossbeam; 1→1 64 B batched
//! ≥ 2× unbatched).
//!
//! ```text
//! cargo bench --bench multi                                  # full run, ~2 min on 2 cores
//! cargo bench --bench multi -- --warm-up-time 0.1 --measurement-time 0.3 --sample-size 10  # smoke
//! cargo bench --bench multi -- m4to1                         # one family of groups
//! ```

use criterion::{Criterion, Throughput};
use std::error::Error;
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Set (to an encoded [`Spec`]) in the environment of a child process.
const CHILD_ENV: &str = "SHMQ_BENCH_CHILD";

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Producers in the 4→1 and 4→4 groups, consumers in 4→4.
const PRODUCERS: usize = 4;
const CONSUMERS: usize = 4;
/// Messages per `send_batch` call of the batched contenders.
const SEND_BATCH: usize = 32;
/// `max` of the batched receivers' `recv_batch`.
const RECV_BATCH: usize = 128;
/// The command that makes a child exit (any other is a message count, 0 included).
const QUIT: u64 = u64::MAX;
/// crossbeam-channel bound (messages), the same in every group.
const CB_BOUND: usize = 1024;

type BoxError = Box<dyn Error + Send + Sync>;

fn main() {
    // A child never runs criterion: check the role before anything parses the arguments.
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child::main(&spec);
    }

    let started = SystemTime::now();
    let t0 = Instant::now();
    let load_before = loadavg();
    let out_dir = criterion_dir();
    let check = InterleaveConfig::from_env_and_args();
    // Defaults sized for a full run of about 2 minutes on 2 cores; command-line options
    // (--warm-up-time, --measurement-time, --sample-size, --quick) override them.
    let mut c = Criterion::default()
        .output_directory(&out_dir)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();

    let mut checks = Vec::new();
    for w in workloads() {
        run_workload(&mut c, w, &check, &mut checks);
    }

    c.final_summary();
    summary::print(&out_dir, started, t0.elapsed(), &load_before, &check, &checks);
}

/// Where criterion writes its results (the same rule as criterion's default), set explicitly so
/// the summary reads from the directory criterion writes to.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

// ------------------------------------------------------------------------------------------
// Workloads, contenders, and how they are run
// ------------------------------------------------------------------------------------------

/// Runs `n` iterations (messages) of one contender (its peers already started) and returns the
/// time the parent measured.
type Runner = Box<dyn FnMut(u64) -> Duration>;

/// One contender of a workload. Its peers are started on first use, so that criterion's filter
/// (`cargo bench --bench multi -- m4to1`) starts only what it runs.
struct Contender {
    name: &'static str,
    make: Box<dyn Fn() -> Runner>,
}

fn contender(name: &'static str, make: impl Fn() -> Runner + 'static) -> Contender {
    Contender { name, make: Box::new(make) }
}

/// A criterion group: its contenders, in the order they run.
struct Workload {
    group: String,
    size: usize,
    /// Pin this thread to the first CPU while the group runs; the peers pin themselves (to the
    /// second). `None`: placement is left to the scheduler.
    pin: Option<(usize, usize)>,
    contenders: Vec<Contender>,
}

/// A message size and the rings that hold about 1024 such messages.
#[derive(Clone, Copy)]
struct Case {
    label: &'static str,
    size: usize,
    /// MPSC and SPSC ring capacity: 64 B messages take 72-byte records (64 KiB = 910 messages),
    /// 4 KiB ones 4104 bytes (4 MiB = 1021 messages).
    ring: usize,
}

const CASES: [Case; 2] =
    [Case { label: "64B", size: 64, ring: 64 * KIB }, Case { label: "4KiB", size: 4 * KIB, ring: 4 * MIB }];

fn workloads() -> Vec<Workload> {
    let mut all = Vec::new();
    for case in CASES {
        all.push(Workload {
            group: format!("m4to1_{}", case.label),
            size: case.size,
            pin: None,
            contenders: m4to1_contenders(case),
        });
    }
    for case in CASES {
        all.push(Workload {
            group: format!("m4to4_{}", case.label),
            size: case.size,
            pin: None,
            contenders: m4to4_contenders(case),
        });
    }
    let two_cpus = cpu::allowed(0) && cpu::allowed(1);
    let pin = (two_cpus && !env_flag("SHMQ_BENCH_UNPINNED")).then_some((0, 1));
    all.push(Workload { group: "m1to1_64B".into(), size: 64, pin, contenders: m1to1_contenders(CASES[0], pin) });
    all
}

fn run_workload(c: &mut Criterion, w: Workload, check: &InterleaveConfig, checks: &mut Vec<Check>) {
    let _pin = match w.pin {
        Some((me, peer)) => match cpu::Pinned::to(me, Some(peer)) {
            Some(p) => Some(p),
            None => {
                eprintln!("{} skipped: cannot pin to CPUs {me} and {peer}", w.group);
                return;
            }
        },
        None => None,
    };
    let mut runners: Vec<(&'static str, Option<Runner>)> = w.contenders.iter().map(|c| (c.name, None)).collect();
    let mut g = c.benchmark_group(&w.group);
    g.throughput(Throughput::ElementsAndBytes { elements: 1, bytes: w.size as u64 });
    for (ct, (_, runner)) in w.contenders.iter().zip(runners.iter_mut()) {
        g.bench_function(ct.name, |b| {
            let run = runner.get_or_insert_with(|| (ct.make)());
            b.iter_custom(run)
        });
    }
    g.finish();
    // The contenders criterion ran (filter) are still up: measure them again, interleaved.
    let mut ran: Vec<(&'static str, Runner)> = runners.into_iter().filter_map(|(n, r)| Some((n, r?))).collect();
    if check.rounds > 0 && check.bench_mode && !ran.is_empty() {
        checks.extend(interleave(&w.group, &mut ran, check));
    }
    // Runners (and their children / threads) are dropped here, before the pin is undone.
}

/// The share of `n` messages that producer `i` of `k` sends.
fn share(n: u64, i: usize, k: usize) -> u64 {
    n / k as u64 + u64::from((i as u64) < n % k as u64)
}

/// Run one timed sample: start the clock, tell every peer to send its share of `n`, run the
/// parent's side, stop the clock, then collect the acknowledgements (untimed).
fn timed<P: Peer>(peers: &mut [P], n: u64, body: impl FnOnce()) -> Duration {
    let k = peers.len();
    let t0 = Instant::now();
    for (i, p) in peers.iter_mut().enumerate() {
        p.start(share(n, i, k));
    }
    body();
    let elapsed = t0.elapsed();
    for (i, p) in peers.iter_mut().enumerate() {
        p.finish(share(n, i, k));
    }
    elapsed
}

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 7 + 1) as u8).collect()
}

// ------------------------------------------------------------------------------------------
// Interleaved cross-check
// ------------------------------------------------------------------------------------------

/// After each criterion group, its contenders run again in alternation (A B C A B C ...),
/// `rounds` times for `slot` each, so that their per-round ratios are taken under the same
/// conditions, and their spread shows when the machine did not hold still.
struct InterleaveConfig {
    rounds: usize,
    slot: Duration,
    bench_mode: bool,
}

impl InterleaveConfig {
    /// SHMQ_BENCH_ROUNDS=N sets the rounds (0 turns the check off). Default: 10 rounds of
    /// 100 ms; with --quick or a --measurement-time under 1 s (smoke runs), 5 rounds of 20 ms.
    fn from_env_and_args() -> InterleaveConfig {
        let args: Vec<String> = std::env::args().collect();
        let below_1s = |v: &str| v.parse::<f64>().is_ok_and(|t| t < 1.0);
        let short = args.iter().any(|a| a == "--quick")
            || args.windows(2).any(|w| w[0] == "--measurement-time" && below_1s(&w[1]))
            || args.iter().any(|a| a.strip_prefix("--measurement-time=").is_some_and(below_1s));
        let (mut rounds, slot) = if short { (5, Duration::from_millis(20)) } else { (10, Duration::from_millis(100)) };
        if let Some(n) = std::env::var("SHMQ_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()) {
            rounds = n;
        }
        // Criterion measures only with --bench (which `cargo bench` passes) and none of these.
        let other_mode = args.iter().any(|a| ["--test", "--list", "--profile-time"].contains(&a.as_str()));
        let bench_mode = args.iter().any(|a| a == "--bench") && !other_mode;
        InterleaveConfig { rounds, slot, bench_mode }
    }
}

/// Per-round times (ns per message) of one contender in the interleaved check.
struct Check {
    id: String,
    per_round: Vec<f64>,
}

fn interleave(group: &str, runners: &mut [(&'static str, Runner)], cfg: &InterleaveConfig) -> Vec<Check> {
    eprintln!("{group}: interleaved check, {} rounds of {:?} per contender", cfg.rounds, cfg.slot);
    // Calibrate: iterations that take about one slot.
    let iters: Vec<u64> = runners
        .iter_mut()
        .map(|(_, run)| {
            let mut n = 64u64;
            loop {
                let took = run(n);
                if took >= cfg.slot / 10 || n >= 1 << 40 {
                    let per_iter = (took.as_secs_f64() / n as f64).max(1e-9);
                    return ((cfg.slot.as_secs_f64() / per_iter) as u64).max(1);
                }
                n *= 2;
            }
        })
        .collect();
    let mut per_round = vec![Vec::with_capacity(cfg.rounds); runners.len()];
    for _ in 0..cfg.rounds {
        for (i, (_, run)) in runners.iter_mut().enumerate() {
            per_round[i].push(run(iters[i]).as_nanos() as f64 / iters[i] as f64);
        }
    }
    runners
        .iter()
        .zip(per_round)
        .map(|((name, _), per_round)| Check { id: format!("{group}/{name}"), per_round })
        .collect()
}

// ------------------------------------------------------------------------------------------
// 4 → 1: shmq::mpsc (4 child processes → this thread) vs crossbeam (4 threads → this thread)
// ------------------------------------------------------------------------------------------

/// An MPSC channel, `k` producer children sending `size`-byte messages on it (`batch` per
/// `send_batch`, 1 = `send`), and the parent's receiver.
fn mpsc_rig(case: Case, k: usize, batch: usize, cpu: Option<usize>) -> (Vec<ProcPeer>, shmq::mpsc::Receiver) {
    let ch = shmq::mpsc::Channel::anonymous(&shmq::Config::new().capacity(case.ring)).expect("create mpsc channel");
    let rx = ch.receiver().expect("receiver role");
    let peers = (0..k)
        .map(|_| {
            let fd = ch.inheritable_fd().expect("inheritable fd");
            let watch = ch.clone();
            let on_death = move || {
                let _ = watch.close_now();
            };
            let spec = ChildSpec { role: Role::MpscSend, size: case.size, batch, cpu };
            ProcPeer::spawn(spec, vec![fd], Box::new(on_death))
        })
        .collect();
    (peers, rx)
}

/// The parent's side of a shmq MPSC contender: receive exactly `n` messages, copying each out.
fn mpsc_receive(rx: &mut shmq::mpsc::Receiver, buf: &mut Vec<u8>, n: u64, size: usize, batched: bool) {
    if !batched {
        for _ in 0..n {
            let len = rx.recv_into(buf).expect("shmq recv (did a child fail?)");
            assert_eq!(len, size);
        }
        return;
    }
    buf.resize(size, 0);
    let mut got = 0u64;
    while got < n {
        let max = (n - got).min(RECV_BATCH as u64) as usize;
        let b = rx.recv_batch(max).expect("shmq recv_batch (did a child fail?)");
        for v in b.iter() {
            assert_eq!(v.len(), size);
            v.read_at(0, &mut buf[..size]);
        }
        got += b.len() as u64;
        black_box(&buf);
    }
}

fn mpsc_contender(name: &'static str, case: Case, k: usize, batch: usize, cpu: Option<usize>) -> Contender {
    contender(name, move || {
        let (peers, rx) = mpsc_rig(case, k, batch, cpu);
        // Tuple fields drop in order: the children quit before the receiver closes.
        let mut st = (peers, rx, Vec::with_capacity(case.size));
        Box::new(move |n| {
            let (peers, rx, buf) = &mut st;
            timed(peers, n, || mpsc_receive(rx, buf, n, case.size, batch > 1))
        })
    })
}

fn m4to1_contenders(case: Case) -> Vec<Contender> {
    vec![
        mpsc_contender("shmq_send", case, PRODUCERS, 1, None),
        mpsc_contender("shmq_batch32", case, PRODUCERS, SEND_BATCH, None),
        match case.size {
            64 => crossbeam_4to1::<64>(),
            4096 => crossbeam_4to1::<4096>(),
            s => unreachable!("no crossbeam contender for {s} B"),
        },
    ]
}

/// `PRODUCERS` crossbeam sender threads, each with its own `Sender` clone.
fn crossbeam_senders<const N: usize>(tx: &crossbeam_channel::Sender<[u8; N]>, marker: bool) -> Vec<ThreadPeer> {
    let msg: [u8; N] = payload(N).try_into().expect("N bytes");
    (0..PRODUCERS)
        .map(|_| {
            let tx = tx.clone();
            ThreadPeer::spawn(None, move |n| {
                for _ in 0..n {
                    tx.send(black_box(msg)).expect("crossbeam send");
                }
                if marker {
                    tx.send([0u8; N]).expect("crossbeam send");
                }
            })
        })
        .collect()
}

fn crossbeam_4to1<const N: usize>() -> Contender {
    contender("crossbeam_threads", move || {
        let (tx, rx) = crossbeam_channel::bounded::<[u8; N]>(CB_BOUND);
        let mut peers = crossbeam_senders::<N>(&tx, false);
        drop(tx);
        Box::new(move |n| {
            timed(&mut peers, n, || {
                for _ in 0..n {
                    black_box(rx.recv().expect("crossbeam recv"));
                }
            })
        })
    })
}

// ------------------------------------------------------------------------------------------
// 4 → 4: shmq::mpmc (4 child processes → 4 child processes) vs crossbeam (4 threads → 4 threads)
// ------------------------------------------------------------------------------------------

fn m4to4_contenders(case: Case) -> Vec<Contender> {
    vec![
        mpmc_contender("shmq_send", case, 1),
        mpmc_contender("shmq_batch32", case, SEND_BATCH),
        match case.size {
            64 => crossbeam_4to4::<64>(),
            4096 => crossbeam_4to4::<4096>(),
            s => unreachable!("no crossbeam contender for {s} B"),
        },
    ]
}

/// MPMC ring capacity for a case: 64 B messages take one 128-byte cell (128 KiB = 1024
/// messages), 4 KiB ones 33 cells (4 MiB = 993 messages): about the crossbeam bound.
fn mpmc_ring(case: Case) -> usize {
    if case.size <= 64 { 128 * KIB } else { case.ring }
}

/// The processes of a shmq 4→4 contender. Dropped in order: the producers quit (the last
/// sender's detach drains the channel), then the consumers see end-of-stream and exit.
struct MpmcRig {
    producers: Vec<ProcPeer>,
    consumers: Vec<ProcPeer>,
    markers: std::fs::File,
    ch: shmq::mpmc::Channel,
}

impl Drop for MpmcRig {
    fn drop(&mut self) {
        self.producers.clear();
        let _ = self.ch.drain(); // in case a producer never attached
        self.consumers.clear();
    }
}

fn mpmc_contender(name: &'static str, case: Case, batch: usize) -> Contender {
    contender(name, move || {
        let ch = shmq::mpmc::Channel::anonymous(&shmq::Config::new().capacity(mpmc_ring(case)))
            .expect("create mpmc channel");
        let (markers, markers_w) = pipe().expect("marker pipe");
        let closer = |ch: &shmq::mpmc::Channel| {
            let watch = ch.clone();
            Box::new(move || {
                let _ = watch.close_now();
            }) as Box<dyn FnOnce() + Send>
        };
        let consumers = (0..CONSUMERS)
            .map(|_| {
                let fds = vec![ch.inheritable_fd().expect("inheritable fd"), inheritable(markers_w.as_fd())];
                let spec = ChildSpec { role: Role::MpmcRecv, size: case.size, batch, cpu: None };
                ProcPeer::spawn(spec, fds, closer(&ch))
            })
            .collect();
        drop(markers_w); // the consumers hold the write end now
        let producers = (0..PRODUCERS)
            .map(|_| {
                let fds = vec![ch.inheritable_fd().expect("inheritable fd")];
                let spec = ChildSpec { role: Role::MpmcSend, size: case.size, batch, cpu: None };
                ProcPeer::spawn(spec, fds, closer(&ch))
            })
            .collect();
        let mut rig = MpmcRig { producers, consumers, markers, ch };
        Box::new(move |n| {
            let MpmcRig { producers, markers, .. } = &mut rig;
            timed(producers, n, || {
                let mut got = [0u8; PRODUCERS];
                markers.read_exact(&mut got).expect("end markers (did a child fail?)");
            })
        })
    })
}

/// The threads of a crossbeam 4→4 contender; the consumers end when the producers are gone.
struct CbRig {
    producers: Vec<ThreadPeer>,
    consumers: Vec<std::thread::JoinHandle<()>>,
    notes: crossbeam_channel::Receiver<()>,
}

impl Drop for CbRig {
    fn drop(&mut self) {
        self.producers.clear(); // their Senders go: the consumers' recv fails
        for h in self.consumers.drain(..) {
            let r = h.join();
            if r.is_err() && !std::thread::panicking() {
                panic!("crossbeam consumer thread panicked");
            }
        }
    }
}

fn crossbeam_4to4<const N: usize>() -> Contender {
    contender("crossbeam_threads", move || {
        let (tx, rx) = crossbeam_channel::bounded::<[u8; N]>(CB_BOUND);
        let (note_tx, notes) = crossbeam_channel::bounded::<()>(PRODUCERS);
        let consumers = (0..CONSUMERS)
            .map(|_| {
                let (rx, note_tx) = (rx.clone(), note_tx.clone());
                std::thread::spawn(move || {
                    while let Ok(m) = rx.recv() {
                        if m[0] == 0 {
                            note_tx.send(()).expect("end-marker note");
                        } else {
                            black_box(m);
                        }
                    }
                })
            })
            .collect();
        drop((rx, note_tx));
        let producers = crossbeam_senders::<N>(&tx, true);
        drop(tx);
        let mut rig = CbRig { producers, consumers, notes };
        Box::new(move |n| {
            let CbRig { producers, notes, .. } = &mut rig;
            timed(producers, n, || {
                for _ in 0..PRODUCERS {
                    notes.recv().expect("end-marker note");
                }
            })
        })
    })
}

// ------------------------------------------------------------------------------------------
// 1 → 1, 64 B: mpsc send vs send_batch, and the SPSC channel for reference
// ------------------------------------------------------------------------------------------

fn m1to1_contenders(case: Case, pin: Option<(usize, usize)>) -> Vec<Contender> {
    let cpu = pin.map(|p| p.1);
    vec![
        mpsc_contender("mpsc_send", case, 1, 1, cpu),
        mpsc_contender("mpsc_batch32", case, 1, SEND_BATCH, cpu),
        contender("spsc_send", move || {
            let ch = shmq::Channel::anonymous(&shmq::Config::new().capacity(case.ring)).expect("create channel");
            let rx = ch.receiver().expect("receiver role");
            let fd = ch.inheritable_fd().expect("inheritable fd");
            let on_death = move || {
                let _ = ch.close_now();
            };
            let spec = ChildSpec { role: Role::SpscSend, size: case.size, batch: 1, cpu };
            let peer = ProcPeer::spawn(spec, vec![fd], Box::new(on_death));
            let mut st = ([peer], rx, Vec::with_capacity(case.size));
            Box::new(move |n| {
                let (peers, rx, buf) = &mut st;
                timed(peers, n, || {
                    for _ in 0..n {
                        let len = rx.recv_into(buf).expect("shmq recv (did the child fail?)");
                        assert_eq!(len, case.size);
                    }
                })
            })
        }),
    ]
}

// ------------------------------------------------------------------------------------------
// Peers: child processes or threads, driven by "send N" commands.
// ------------------------------------------------------------------------------------------

trait Peer {
    /// Tell the peer to send `n` messages.
    fn start(&mut self, n: u64);
    /// Wait until the peer reports that it has sent them.
    fn finish(&mut self, n: u64);
}

/// What a child process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Send on the shmq::mpsc channel `fds[0]`.
    MpscSend,
    /// Send on the shmq::Channel (SPSC) `fds[0]`.
    SpscSend,
    /// Send on the shmq::mpmc channel `fds[0]`; every command's share ends with a 1-byte marker.
    MpmcSend,
    /// Receive on the shmq::mpmc channel `fds[0]` until end-of-stream; write one byte to the
    /// pipe `fds[1]` per 1-byte marker taken. Ignores commands.
    MpmcRecv,
}

const ROLES: [(Role, &str); 4] = [
    (Role::MpscSend, "mpsc-send"),
    (Role::SpscSend, "spsc-send"),
    (Role::MpmcSend, "mpmc-send"),
    (Role::MpmcRecv, "mpmc-recv"),
];

/// What the parent chooses for a child.
#[derive(Clone, Copy, Debug)]
struct ChildSpec {
    role: Role,
    /// Message size in bytes.
    size: usize,
    /// Messages per `send_batch` (producers) / batched receive if > 1 (consumers); 1 = plain.
    batch: usize,
    cpu: Option<usize>,
}

/// Everything a child needs, passed in `SHMQ_BENCH_CHILD` as `key=value;...`.
#[derive(Debug)]
struct Spec {
    child: ChildSpec,
    ctl: RawFd,
    fds: Vec<RawFd>,
    ppid: u32,
}

impl Spec {
    fn encode(&self) -> String {
        let c = &self.child;
        let role = ROLES.iter().find(|(r, _)| *r == c.role).map(|(_, s)| *s).unwrap_or("?");
        let fds: Vec<String> = self.fds.iter().map(|f| f.to_string()).collect();
        format!(
            "role={role};size={};batch={};cpu={};ctl={};fds={};ppid={}",
            c.size,
            c.batch,
            c.cpu.map_or_else(|| "-".to_string(), |c| c.to_string()),
            self.ctl,
            fds.join(","),
            self.ppid
        )
    }

    fn decode(s: &str) -> Result<Spec, String> {
        let get = |key: &str| -> Result<&str, String> {
            s.split(';')
                .find_map(|kv| kv.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
                .ok_or_else(|| format!("no {key} in {s:?}"))
        };
        let num = |key: &str| -> Result<u64, String> { get(key)?.parse().map_err(|e| format!("{key}: {e}")) };
        let role_s = get("role")?;
        let role = ROLES.iter().find(|(_, n)| *n == role_s).map(|(r, _)| *r).ok_or(format!("role {role_s}"))?;
        let cpu = match get("cpu")? {
            "-" => None,
            v => Some(v.parse().map_err(|e| format!("cpu: {e}"))?),
        };
        let fds = match get("fds")? {
            "" => Vec::new(),
            list => list.split(',').map(|f| f.parse().map_err(|e| format!("fds: {e}"))).collect::<Result<_, _>>()?,
        };
        Ok(Spec {
            child: ChildSpec { role, size: num("size")? as usize, batch: num("batch")? as usize, cpu },
            ctl: num("ctl")? as RawFd,
            fds,
            ppid: num("ppid")? as u32,
        })
    }
}

/// A pipe (read end, write end), both close-on-exec. (`std::io::pipe` needs Rust 1.87; the
/// crate's MSRV is 1.85.)
fn pipe() -> io::Result<(std::fs::File, std::fs::File)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a writable array of two descriptors, as pipe2 requires.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both descriptors are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((r.into(), w.into()))
}

/// A duplicate of `fd` without close-on-exec, for a child to inherit under the same number.
fn inheritable(fd: BorrowedFd<'_>) -> OwnedFd {
    let dup = fd.try_clone_to_owned().expect("dup");
    // SAFETY: `dup` is a valid descriptor we own; F_SETFD with 0 only clears FD_CLOEXEC.
    let rc = unsafe { libc::fcntl(dup.as_raw_fd(), libc::F_SETFD, 0) };
    assert_eq!(rc, 0, "fcntl(F_SETFD): {}", io::Error::last_os_error());
    dup
}

/// A child process running one [`Role`].
struct ProcPeer {
    child: std::process::Child,
    ctl: UnixStream,
    watchdog: Option<std::thread::JoinHandle<()>>,
}

impl ProcPeer {
    /// Start a child. `fds` are inheritable descriptors for it; they are closed here once the
    /// child has them, so that end-of-file and close propagate. If the child dies, a watchdog
    /// thread runs `on_death` (which closes the shared channel, CLOSING), so that the parent's
    /// blocked calls fail instead of waiting forever (shmq does not notice a dead peer itself).
    fn spawn(child: ChildSpec, fds: Vec<OwnedFd>, on_death: Box<dyn FnOnce() + Send>) -> ProcPeer {
        let (ctl, theirs) = UnixStream::pair().expect("control socketpair");
        let theirs = inheritable(theirs.as_fd());
        // The child inherits the write end of this pipe and never writes: the read end sees
        // end-of-file exactly when the child is gone.
        let (mut death_r, death_w) = pipe().expect("pipe");
        let death_w_child = inheritable(death_w.as_fd());
        drop(death_w);
        let spec = Spec {
            child,
            ctl: theirs.as_raw_fd(),
            fds: fds.iter().map(|f| f.as_raw_fd()).collect(),
            ppid: std::process::id(),
        };
        let exe = std::env::current_exe().expect("current_exe");
        let child = Command::new(exe)
            .env(CHILD_ENV, spec.encode())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn bench child");
        drop((theirs, fds, death_w_child));
        let watchdog = std::thread::spawn(move || {
            let _ = death_r.read(&mut [0u8; 1]);
            on_death();
        });
        ProcPeer { child, ctl, watchdog: Some(watchdog) }
    }
}

impl Peer for ProcPeer {
    fn start(&mut self, n: u64) {
        self.ctl.write_all(&n.to_le_bytes()).expect("command to child (did it fail?)");
    }
    fn finish(&mut self, n: u64) {
        let mut ack = [0u8; 8];
        self.ctl.read_exact(&mut ack).expect("acknowledgement from child (did it fail?)");
        assert_eq!(u64::from_le_bytes(ack), n);
    }
}

impl Drop for ProcPeer {
    fn drop(&mut self) {
        let _ = self.ctl.write_all(&QUIT.to_le_bytes()); // EOF would do too
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    if let Some(w) = self.watchdog.take() {
                        let _ = w.join();
                    }
                    if !status.success() && !std::thread::panicking() {
                        panic!("bench child exited with {status}");
                    }
                    return;
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                _ => {
                    eprintln!("bench child {} did not quit; killing it", self.child.id());
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    if let Some(w) = self.watchdog.take() {
                        let _ = w.join();
                    }
                    return;
                }
            }
        }
    }
}

/// A thread of this process doing `work(n)` per command (the crossbeam baselines).
struct ThreadPeer {
    cmd: Option<crossbeam_channel::Sender<u64>>,
    ack: crossbeam_channel::Receiver<u64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl ThreadPeer {
    fn spawn(cpu: Option<usize>, mut work: impl FnMut(u64) + Send + 'static) -> ThreadPeer {
        let (cmd_tx, cmd_rx) = crossbeam_channel::bounded::<u64>(1);
        let (ack_tx, ack_rx) = crossbeam_channel::bounded::<u64>(1);
        let handle = std::thread::spawn(move || {
            if let Some(cpu) = cpu {
                cpu::pin(cpu).expect("pin thread");
            }
            while let Ok(n) = cmd_rx.recv() {
                work(n);
                if ack_tx.send(n).is_err() {
                    break;
                }
            }
        });
        ThreadPeer { cmd: Some(cmd_tx), ack: ack_rx, handle: Some(handle) }
    }
}

impl Peer for ThreadPeer {
    fn start(&mut self, n: u64) {
        self.cmd.as_ref().expect("running").send(n).expect("command to thread");
    }
    fn finish(&mut self, n: u64) {
        assert_eq!(self.ack.recv().expect("acknowledgement from thread"), n);
    }
}

impl Drop for ThreadPeer {
    fn drop(&mut self) {
        drop(self.cmd.take()); // the thread's recv fails: it ends
        if let Some(h) = self.handle.take() {
            let r = h.join();
            if r.is_err() && !std::thread::panicking() {
                panic!("crossbeam peer thread panicked");
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// CPU affinity
// ------------------------------------------------------------------------------------------

mod cpu {
    use std::io;

    fn empty() -> libc::cpu_set_t {
        // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
        unsafe { std::mem::zeroed() }
    }

    fn get() -> io::Result<libc::cpu_set_t> {
        let mut set = empty();
        // SAFETY: pid 0 is the calling thread; `set` is a writable cpu_set_t of the size passed.
        let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        if rc == 0 { Ok(set) } else { Err(io::Error::last_os_error()) }
    }

    fn set(set: &libc::cpu_set_t) -> io::Result<()> {
        // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
        let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
        if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    pub fn allowed(cpu: usize) -> bool {
        let Ok(set) = get() else { return false };
        // SAFETY: CPU_ISSET only reads the bit array; `cpu` is below CPU_SETSIZE (checked).
        cpu < libc::CPU_SETSIZE as usize && unsafe { libc::CPU_ISSET(cpu, &set) }
    }

    /// Pin the calling thread to `cpu`.
    pub fn pin(cpu: usize) -> io::Result<()> {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("CPU {cpu}")));
        }
        let mut s = empty();
        // SAFETY: CPU_SET writes one bit of `s`; `cpu` is below CPU_SETSIZE (checked above).
        unsafe { libc::CPU_SET(cpu, &mut s) };
        set(&s)
    }

    /// The calling thread pinned to one CPU until dropped (then its old mask is restored).
    pub struct Pinned(libc::cpu_set_t);

    impl Pinned {
        /// Pin to `cpu` if it and `also` (a CPU a peer will use) are allowed; None otherwise.
        pub fn to(cpu: usize, also: Option<usize>) -> Option<Pinned> {
            if !allowed(cpu) || !also.is_none_or(allowed) {
                return None;
            }
            let saved = get().ok()?;
            pin(cpu).ok()?;
            Some(Pinned(saved))
        }
    }

    impl Drop for Pinned {
        fn drop(&mut self) {
            let _ = set(&self.0);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Child process
// ------------------------------------------------------------------------------------------

mod child {
    use super::*;

    pub fn main(spec: &str) -> ! {
        let code = match run(spec) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("multi bench child ({spec}): {e}");
                1
            }
        };
        std::process::exit(code)
    }

    /// Take ownership of an inherited descriptor.
    fn owned(fd: RawFd) -> Result<OwnedFd, BoxError> {
        // SAFETY: F_GETFD only checks that the descriptor is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(format!("descriptor {fd} is not open: {}", io::Error::last_os_error()).into());
        }
        // SAFETY: the parent passed this open descriptor for us alone; nothing else in this
        // process owns it, so the OwnedFd is its only owner.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn run(spec: &str) -> Result<(), BoxError> {
        let spec = Spec::decode(spec)?;
        // Die with the parent, so an aborted bench leaves no spinning or blocked children.
        // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory of ours.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
            return Err(format!("prctl: {}", io::Error::last_os_error()).into());
        }
        if std::os::unix::process::parent_id() != spec.ppid {
            return Err("parent already gone".into());
        }
        let c = spec.child;
        if let Some(cpu) = c.cpu {
            cpu::pin(cpu)?;
        }
        let mut ctl = UnixStream::from(owned(spec.ctl)?);
        let mut fds = spec.fds.iter().map(|&fd| owned(fd)).collect::<Result<Vec<_>, _>>()?.into_iter();
        let mut fd = || fds.next().ok_or("missing descriptor");
        let cfg = shmq::Config::new();
        let msg = payload(c.size);

        match c.role {
            Role::MpscSend => {
                let tx = shmq::mpsc::Channel::from_fd(fd()?, &cfg)?.sender()?;
                let msgs = vec![&msg[..]; c.batch.max(1)];
                serve(&mut ctl, |n| {
                    if c.batch <= 1 {
                        for _ in 0..n {
                            tx.send(&msg[..]).map_err(|e| e.to_string())?;
                        }
                    } else {
                        for k in chunks(n, c.batch) {
                            tx.send_batch(&msgs[..k]).map_err(|e| e.to_string())?;
                        }
                    }
                    Ok(())
                })
            }
            Role::SpscSend => {
                let mut tx = shmq::Channel::from_fd(fd()?, &cfg)?.sender()?;
                serve(&mut ctl, |n| {
                    for _ in 0..n {
                        tx.send(&msg[..]).map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
            }
            Role::MpmcSend => {
                let tx = shmq::mpmc::Channel::from_fd(fd()?, &cfg)?.sender()?;
                let msgs = vec![&msg[..]; c.batch.max(1)];
                serve(&mut ctl, |n| {
                    if c.batch <= 1 {
                        for _ in 0..n {
                            tx.send(&msg[..]).map_err(|e| e.to_string())?;
                        }
                    } else {
                        for k in chunks(n, c.batch) {
                            tx.send_batch(&msgs[..k]).map_err(|e| e.to_string())?;
                        }
                    }
                    tx.send([0u8]).map_err(|e| e.to_string())?;
                    Ok(())
                })
            }
            Role::MpmcRecv => {
                let rx = shmq::mpmc::Channel::from_fd(fd()?, &cfg)?.receiver()?;
                let mut markers = std::fs::File::from(fd()?);
                drop(ctl); // consumers take no commands; they run until end-of-stream
                let mut buf = vec![0u8; c.size];
                let mut note = |len: usize| -> Result<(), BoxError> {
                    if len == 1 {
                        markers.write_all(&[1])?;
                    }
                    Ok(())
                };
                loop {
                    if c.batch <= 1 {
                        match rx.recv_into(&mut buf) {
                            Ok(len) => note(len)?,
                            Err(shmq::RecvError::Closed) => return Ok(()),
                            Err(e) => return Err(e.to_string().into()),
                        }
                    } else {
                        match rx.recv_batch(RECV_BATCH) {
                            Ok(b) => {
                                for v in b.iter() {
                                    let len = v.len();
                                    v.read_at(0, &mut buf[..len]);
                                    note(len)?;
                                }
                                black_box(&buf);
                            }
                            Err(shmq::RecvError::Closed) => return Ok(()),
                            Err(e) => return Err(e.to_string().into()),
                        }
                    }
                }
            }
        }
    }

    /// Batch sizes that add up to `n`, each at most `batch`.
    fn chunks(n: u64, batch: usize) -> impl Iterator<Item = usize> {
        let b = batch as u64;
        (0..n.div_ceil(b)).map(move |i| (n - i * b).min(b) as usize)
    }

    /// Answer commands until [`QUIT`] or end-of-file: do `n` (0 is valid: a producer's share of
    /// a 1-message sample), then acknowledge with `n`.
    fn serve(ctl: &mut UnixStream, mut work: impl FnMut(u64) -> Result<(), BoxError>) -> Result<(), BoxError> {
        loop {
            let mut cmd = [0u8; 8];
            match ctl.read_exact(&mut cmd) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            let n = u64::from_le_bytes(cmd);
            if n == QUIT {
                return Ok(());
            }
            work(n)?;
            ctl.write_all(&cmd)?;
        }
    }
}

// ------------------------------------------------------------------------------------------
// Summary table
// ------------------------------------------------------------------------------------------

mod summary {
    use super::*;

    /// Median (ns per message) from criterion's estimates of this run (files older than the run
    /// are ignored).
    fn estimate(dir: &Path, id: &str, since: SystemTime) -> Option<f64> {
        let path = dir.join(id).join("new").join("estimates.json");
        let fresh = std::fs::metadata(&path).ok()?.modified().ok()? >= since;
        if !fresh {
            return None;
        }
        let text = std::fs::read_to_string(&path).ok()?;
        let med = &text[text.find("\"median\":")?..];
        let key = "\"point_estimate\":";
        let rest = &med[med.find(key)? + key.len()..];
        let end = rest.find([',', '}'])?;
        rest[..end].trim().parse().ok()
    }

    /// One line of the table: a contender, the baseline it is compared with, and the target on
    /// the rate ratio contender / baseline.
    struct Row {
        name: &'static str,
        size: usize,
        id: &'static str,
        base: &'static str,
        target: Option<f64>,
    }

    fn rows() -> Vec<Row> {
        let r = |name, size, id, base, target| Row { name, size, id, base, target };
        vec![
            r("4→1 64 B send", 64, "m4to1_64B/shmq_send", "m4to1_64B/crossbeam_threads", Some(1.0)),
            r("4→1 64 B send_batch", 64, "m4to1_64B/shmq_batch32", "m4to1_64B/crossbeam_threads", None),
            r("4→1 4 KiB send", 4 * KIB, "m4to1_4KiB/shmq_send", "m4to1_4KiB/crossbeam_threads", None),
            r("4→1 4 KiB send_batch", 4 * KIB, "m4to1_4KiB/shmq_batch32", "m4to1_4KiB/crossbeam_threads", None),
            r("4→4 64 B send", 64, "m4to4_64B/shmq_send", "m4to4_64B/crossbeam_threads", None),
            r("4→4 64 B send_batch", 64, "m4to4_64B/shmq_batch32", "m4to4_64B/crossbeam_threads", None),
            r("4→4 4 KiB send", 4 * KIB, "m4to4_4KiB/shmq_send", "m4to4_4KiB/crossbeam_threads", None),
            r("4→4 4 KiB send_batch", 4 * KIB, "m4to4_4KiB/shmq_batch32", "m4to4_4KiB/crossbeam_threads", None),
            r("1→1 64 B mpsc send_batch", 64, "m1to1_64B/mpsc_batch32", "m1to1_64B/mpsc_send", Some(2.0)),
            r("1→1 64 B mpsc send", 64, "m1to1_64B/mpsc_send", "m1to1_64B/spsc_send", None),
        ]
    }

    fn si(v: f64) -> String {
        if v >= 1e9 {
            format!("{:.2}G", v / 1e9)
        } else if v >= 1e6 {
            format!("{:.2}M", v / 1e6)
        } else if v >= 1e3 {
            format!("{:.1}k", v / 1e3)
        } else {
            format!("{v:.0}")
        }
    }

    fn rate(ns: f64) -> String {
        si(1e9 / ns)
    }

    fn mbps(ns: f64, size: usize) -> String {
        format!("{:.0}", 1e9 / ns * size as f64 / 1e6)
    }

    fn median(v: &[f64]) -> f64 {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
    }

    fn print_table(table: Vec<Vec<String>>) {
        let cols = table[0].len();
        let widths: Vec<usize> =
            (0..cols).map(|c| table.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
        for (i, r) in table.iter().enumerate() {
            let s: Vec<String> = r.iter().zip(&widths).map(|(c, &w)| format!("{c:<w$}")).collect();
            println!("{}", s.join(" | ").trim_end());
            if i == 0 {
                let s: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
                println!("{}", s.join("-|-"));
            }
        }
    }

    const HEADER: [&str; 10] =
        ["workload", "contender", "msg/s", "MB/s", "baseline", "msg/s", "MB/s", "ratio", "target", "met"];

    /// A table line from the two times (ns per message) and the ratio (with its range).
    fn line(row: &Row, shmq: Option<f64>, base: Option<f64>, ratio: Option<(f64, Option<(f64, f64)>)>) -> Vec<String> {
        let dash = || "-".to_string();
        let short = |id: &str| id.split('/').nth(1).unwrap_or(id).to_string();
        vec![
            row.name.to_string(),
            short(row.id),
            shmq.map_or_else(dash, rate),
            shmq.map_or_else(dash, |t| mbps(t, row.size)),
            short(row.base),
            base.map_or_else(dash, rate),
            base.map_or_else(dash, |t| mbps(t, row.size)),
            match ratio {
                Some((r, None)) => format!("{r:.2}"),
                Some((r, Some((lo, hi)))) => format!("{r:.2} [{lo:.2}, {hi:.2}]"),
                None => dash(),
            },
            row.target.map_or_else(String::new, |t| format!(">= {t:.1}x")),
            match (row.target, ratio) {
                (Some(t), Some((r, _))) => (if r >= t { "yes" } else { "NO" }).to_string(),
                _ => String::new(),
            },
        ]
    }

    pub fn print(
        dir: &Path,
        started: SystemTime,
        runtime: Duration,
        load_before: &str,
        cfg: &InterleaveConfig,
        checks: &[Check],
    ) {
        let since = started.checked_sub(Duration::from_secs(1)).unwrap_or(started);
        let rows = rows();
        let crit: Vec<(Option<f64>, Option<f64>)> =
            rows.iter().map(|r| (estimate(dir, r.id, since), estimate(dir, r.base, since))).collect();
        let have_crit = crit.iter().any(|(a, b)| a.is_some() || b.is_some());
        if !have_crit && checks.is_empty() {
            return; // test / list mode, or everything filtered out
        }

        println!();
        println!("shmq multi-producer summary (producers and consumers of shmq are processes; of crossbeam, threads)");
        println!("ratio = contender rate / baseline rate (higher is better); MB/s = 10^6 payload bytes per second");
        if have_crit {
            println!();
            println!("criterion: medians of this run");
            let mut table = vec![HEADER.iter().map(|h| h.to_string()).collect()];
            for (row, &(s, b)) in rows.iter().zip(&crit) {
                if s.is_none() && b.is_none() {
                    continue;
                }
                let ratio = s.zip(b).map(|(s, b)| (b / s, None));
                table.push(line(row, s, b, ratio));
            }
            print_table(table);
        }
        if !checks.is_empty() {
            println!();
            println!(
                "interleaved check: contenders alternated, {} rounds of {:?} each; value = median over rounds, \
                 ratio = median of the per-round ratios [lowest, highest]",
                cfg.rounds, cfg.slot
            );
            let find = |id: &str| checks.iter().find(|c| c.id == id).map(|c| &c.per_round);
            let mut table = vec![HEADER.iter().map(|h| h.to_string()).collect()];
            for row in &rows {
                let (s, b) = (find(row.id), find(row.base));
                if s.is_none() && b.is_none() {
                    continue;
                }
                let ratio = s.zip(b).map(|(s, b)| {
                    let rs: Vec<f64> = s.iter().zip(b).map(|(&s, &b)| b / s).collect();
                    let lo = rs.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = rs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (median(&rs), Some((lo, hi)))
                });
                table.push(line(row, s.map(|v| median(v)), b.map(|v| median(v)), ratio));
            }
            print_table(table);
        }
        let one = if env_flag("SHMQ_BENCH_UNPINNED") { "placed by the scheduler" } else { "pinned to CPUs 0/1" };
        println!();
        println!(
            "run time {:.0} s; loadavg at start {load_before}, at end {}; {} CPUs; 4→1 and 4→4 placed by the \
             scheduler, 1→1 {one}; send_batch = {SEND_BATCH} per call, recv_batch max {RECV_BATCH}",
            runtime.as_secs_f64(),
            loadavg(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    }
}
