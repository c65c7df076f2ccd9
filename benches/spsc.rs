//! shmq SPSC benchmarks, with their baselines measured in the same run.
//!
//! shmq's sender and receiver are in **two processes**: this binary re-executes itself
//! (`std::env::current_exe()`) in a child role chosen by the `SHMQ_BENCH_CHILD` environment
//! variable, which is checked at the very top of `main`, before criterion sees the arguments. The
//! child gets anonymous channels (memfds, nothing in /dev/shm) or pipe / socket ends as inherited
//! descriptors, plus a Unix socket for control: per criterion sample the parent writes "do N
//! messages / round trips", the child does them and acknowledges. The parent times the sample
//! (`iter_custom`): the clock starts before the command is written and stops when the parent has
//! received the last message (or reply); the acknowledgement is read outside the timed region.
//!
//! | group               | one iteration                 | placement (parent / peer) | contenders                         |
//! |---------------------|-------------------------------|---------------------------|------------------------------------|
//! | `tput_64B`          | a 64 B message, peer → parent | CPU 0 / CPU 1             | shmq, crossbeam, socketpair, pipe  |
//! | `tput_4KiB`         | a 4 KiB message               | CPU 0 / CPU 1             | same                               |
//! | `tput_1MiB`         | a 1 MiB message               | CPU 0 / CPU 1             | same                               |
//! | `rt_busy_64B`       | ping-pong, try_* spin loops   | CPU 0 / CPU 1             | shmq, crossbeam                    |
//! | `rt_block_same_cpu` | ping-pong, blocking calls     | CPU 0 / CPU 0             | shmq spin 20 µs (default) and spin 0, pipe, crossbeam |
//! | `rt_block_diff_cpu` | ping-pong, blocking calls     | CPU 0 / CPU 1             | same                               |
//!
//! "crossbeam" is crossbeam-channel between two threads of the parent process (the peer is a
//! thread); every other peer is a child process. `SHMQ_BENCH_UNPINNED=1` leaves the placement of
//! the throughput groups to the scheduler.
//!
//! Messages are real messages everywhere: the pipe and socket carry a 4-byte length prefix, and
//! the reader reads exactly the prefix, then exactly the payload (two `read`s, one `write` per
//! message). crossbeam carries `[u8; N]` by value (no allocation) for 64 B and 4 KiB, and a
//! `Vec<u8>` made by `to_vec()` for 1 MiB. shmq's receiver uses `recv_into` with a reused buffer
//! (blocking) or `try_recv_ref` + `read_at` (busy-poll; `try_recv` would allocate a `Vec` per
//! message).
//!
//! After each group its contenders run again, alternating (A B C D A B C D ..., 10 rounds of
//! 100 ms each; `SHMQ_BENCH_ROUNDS=N` changes the rounds, 0 turns this off): criterion measures
//! one contender after the other, and on this VM the speed of a 4 KiB or 64 B stream can change
//! several-fold from one bench to the next, so the per-round ratios of the interleaved check are
//! the fairer comparison. After criterion's own report a summary prints both: the medians
//! criterion stored for this run (`<target>/criterion/<group>/<bench>/new/estimates.json`) and
//! the interleaved medians, with the ratios shmq / baseline against the targets of DESIGN-NOTES §6.
//!
//! ```text
//! cargo bench --bench spsc                                  # full run, ~2.5 min on 2 cores
//! cargo bench --bench spsc -- --warm-up-time 0.1 --measurement-time 0.3 --sample-size 10  # smoke
//! cargo bench --bench spsc -- --quick                       # criterion's quick mode, also short
//! cargo bench --bench spsc -- rt_block                      # one family of groups
//! ```

use criterion::{Criterion, Throughput};
use shmq::{Channel, Config};
use std::error::Error;
use std::hint::{black_box, spin_loop};
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

/// Ring capacity of the round-trip channels (one message in flight).
const RT_RING: usize = 64 * KIB;
/// Size of the round-trip messages.
const RT_SIZE: usize = 64;

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
    // Defaults sized for a full run of about 2.5 minutes on 2 cores; command-line options
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

/// Where criterion writes its results: the same rule as criterion's default (CRITERION_HOME,
/// else $CARGO_TARGET_DIR/criterion, else target/criterion of this package), set explicitly so
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

/// Runs `n` iterations of one contender (its child or thread already started) and returns the
/// time the parent measured.
type Runner = Box<dyn FnMut(u64) -> Duration>;

/// One contender of a workload. Its peer is started on first use, so that criterion's filter
/// (`cargo bench --bench spsc -- rt_block`) starts only what it runs.
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
    throughput: Option<Throughput>,
    /// Pin this thread to the first CPU while the group runs; the peers pin themselves (to the
    /// second). `None`: placement is left to the scheduler.
    pin: Option<(usize, usize)>,
    contenders: Vec<Contender>,
}

fn workloads() -> Vec<Workload> {
    let two_cpus = cpu::allowed(0) && cpu::allowed(1);
    let mut all = Vec::new();
    // Throughput: receiver (this thread) on CPU 0, sender on CPU 1: the same placement for every
    // contender, and the parallel one that DESIGN-NOTES §6 assumes. On a loaded machine pinning
    // hurts (each side shares its CPU with the load; 3-5x slower at 1 MiB, seen at loadavg 3.5):
    // SHMQ_BENCH_UNPINNED=1 leaves placement to the scheduler.
    let tput_pin = (two_cpus && !env_flag("SHMQ_BENCH_UNPINNED")).then_some((0, 1));
    for case in &TPUT_CASES {
        all.push(Workload {
            group: format!("tput_{}", case.label),
            throughput: Some(Throughput::ElementsAndBytes { elements: 1, bytes: case.size as u64 }),
            pin: tput_pin,
            contenders: tput_contenders(case, tput_pin.map(|p| p.1)),
        });
    }
    if !two_cpus {
        eprintln!("round-trip groups skipped: they need CPUs 0 and 1");
        return all;
    }
    // Busy-polling only makes sense with the two sides on different CPUs.
    all.push(Workload {
        group: "rt_busy_64B".into(),
        throughput: None,
        pin: Some((0, 1)),
        contenders: busy_contenders(),
    });
    for (group, peer_cpu) in [("rt_block_same_cpu", 0), ("rt_block_diff_cpu", 1)] {
        all.push(Workload {
            group: group.into(),
            throughput: None,
            pin: Some((0, peer_cpu)),
            contenders: blocking_contenders(peer_cpu),
        });
    }
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
    if let Some(t) = w.throughput {
        g.throughput(t);
    }
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

/// Run one timed sample: start the clock, tell the peer to go, run the parent's side, stop the
/// clock, then collect the peer's acknowledgement (untimed).
fn timed(peer: &mut dyn Peer, n: u64, body: impl FnOnce()) -> Duration {
    let t0 = Instant::now();
    peer.start(n);
    body();
    let elapsed = t0.elapsed();
    peer.finish(n);
    elapsed
}

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 7 + 1) as u8).collect()
}

// ------------------------------------------------------------------------------------------
// Interleaved cross-check
// ------------------------------------------------------------------------------------------

/// After each criterion group, its contenders run again in alternation (A B C D A B C D ...),
/// `rounds` times for `slot` each: a machine whose speed changes between one criterion bench
/// and the next (this VM's 4 KiB streams, shmq's and crossbeam's alike, switch between about
/// 0.12 and 2 µs per message) then still gives per-round ratios taken under the same conditions,
/// and their spread shows when it did not hold still.
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

/// Per-round times (ns per iteration) of one contender in the interleaved check.
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
            let mut n = 1u64;
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
// Throughput: one-way, the peer sends, this thread receives
// ------------------------------------------------------------------------------------------

/// A one-way throughput workload.
struct TputCase {
    label: &'static str,
    size: usize,
    /// shmq ring capacity: about 1024 messages where that is sensible.
    ring: usize,
    /// crossbeam-channel bound.
    bound: usize,
}

const TPUT_CASES: [TputCase; 3] = [
    // 64 B: 72-byte records, 64 KiB ring = 910 messages; crossbeam 1024.
    TputCase { label: "64B", size: 64, ring: 64 * KIB, bound: 1024 },
    // 4 KiB: 4104-byte records, 4 MiB ring = 1021 messages; crossbeam 1024 (4 MiB of slots).
    TputCase { label: "4KiB", size: 4 * KIB, ring: 4 * MIB, bound: 1024 },
    // 1 MiB: the default 1 MiB ring (a message travels as 256 KiB fragments, the default user
    // experience); crossbeam bound 4 (4 MiB in flight). Pipe 64 KiB, socket ~200 KiB (kernel).
    TputCase { label: "1MiB", size: MIB, ring: MIB, bound: 4 },
];

fn tput_contenders(case: &TputCase, cpu: Option<usize>) -> Vec<Contender> {
    let (size, ring, bound) = (case.size, case.ring, case.bound);
    vec![
        // shmq: the child sends with `send`, this thread receives with `recv_into` (buffer reused).
        contender("shmq", move || {
            let ch = Channel::anonymous(&Config::new().capacity(ring)).expect("create channel");
            let rx = ch.receiver().expect("receiver role");
            let fd = ch.inheritable_fd().expect("inheritable fd");
            let peer = ProcPeer::spawn(Role::TputShmq, size, cpu, None, vec![fd], vec![ch]);
            // Tuple fields drop in order: the child quits before the receiver closes.
            let mut st = (peer, rx, Vec::with_capacity(size));
            Box::new(move |n| {
                let (peer, rx, buf) = &mut st;
                timed(peer, n, || {
                    for _ in 0..n {
                        let len = rx.recv_into(buf).expect("shmq recv (did the child fail?)");
                        assert_eq!(len, size);
                    }
                })
            })
        }),
        // crossbeam-channel between two threads of this process.
        match size {
            64 => crossbeam_tput_array::<64>(bound, cpu),
            4096 => crossbeam_tput_array::<4096>(bound, cpu),
            _ => crossbeam_tput_vec(size, bound, cpu),
        },
        // Unix stream socket pair and pipe between two processes, length-prefixed frames.
        contender("socketpair", move || {
            let (mine, theirs) = UnixStream::pair().expect("socketpair");
            let fd = inheritable(theirs.as_fd());
            drop(theirs);
            let peer = ProcPeer::spawn(Role::TputStream, size, cpu, None, vec![fd], vec![]);
            let mut st = (peer, mine, vec![0u8; size]);
            Box::new(move |n| {
                let (peer, sock, buf) = &mut st;
                timed(peer, n, || recv_frames(sock, buf, n, size))
            })
        }),
        contender("pipe", move || {
            let (reader, writer) = pipe().expect("pipe");
            let fd = inheritable(writer.as_fd());
            drop(writer);
            let peer = ProcPeer::spawn(Role::TputStream, size, cpu, None, vec![fd], vec![]);
            let mut st = (peer, reader, vec![0u8; size]);
            Box::new(move |n| {
                let (peer, reader, buf) = &mut st;
                timed(peer, n, || recv_frames(reader, buf, n, size))
            })
        }),
    ]
}

fn recv_frames(r: &mut impl Read, buf: &mut [u8], n: u64, size: usize) {
    for _ in 0..n {
        let len = read_frame(r, buf).expect("read frame (did the child fail?)");
        assert_eq!(len, size);
    }
}

fn crossbeam_tput_array<const N: usize>(bound: usize, cpu: Option<usize>) -> Contender {
    contender("crossbeam_threads", move || {
        let (tx, rx) = crossbeam_channel::bounded::<[u8; N]>(bound);
        let msg: [u8; N] = payload(N).try_into().expect("N bytes");
        let mut peer = ThreadPeer::spawn(cpu, move |n| {
            for _ in 0..n {
                tx.send(black_box(msg)).expect("crossbeam send");
            }
        });
        Box::new(move |n| {
            timed(&mut peer, n, || {
                for _ in 0..n {
                    black_box(rx.recv().expect("crossbeam recv"));
                }
            })
        })
    })
}

fn crossbeam_tput_vec(size: usize, bound: usize, cpu: Option<usize>) -> Contender {
    contender("crossbeam_threads", move || {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(bound);
        let msg = payload(size);
        let mut peer = ThreadPeer::spawn(cpu, move |n| {
            for _ in 0..n {
                tx.send(msg.to_vec()).expect("crossbeam send");
            }
        });
        Box::new(move |n| {
            timed(&mut peer, n, || {
                for _ in 0..n {
                    let v = rx.recv().expect("crossbeam recv");
                    assert_eq!(black_box(&v).len(), size);
                }
            })
        })
    })
}

// ------------------------------------------------------------------------------------------
// Round trips: this thread sends a 64-byte ping, the peer echoes it
// ------------------------------------------------------------------------------------------

/// Two anonymous shmq channels for a ping-pong, (parent → child, child → parent), and a child
/// echoing on them: returns the child and the parent's ends.
fn shmq_echo(cfg: &Config, role: Role, cpu: usize, spin: Option<Duration>) -> (ProcPeer, shmq::Sender, shmq::Receiver) {
    let ping = Channel::anonymous(cfg).expect("create channel");
    let pong = Channel::anonymous(cfg).expect("create channel");
    let tx = ping.sender().expect("sender role");
    let rx = pong.receiver().expect("receiver role");
    let fds = vec![ping.inheritable_fd().expect("fd"), pong.inheritable_fd().expect("fd")];
    (ProcPeer::spawn(role, RT_SIZE, Some(cpu), spin, fds, vec![ping, pong]), tx, rx)
}

type RtMsg = [u8; RT_SIZE];

/// Two crossbeam channels and an echo thread on `cpu`; `poll` chooses try_* spin loops over
/// blocking calls (on both sides).
fn crossbeam_echo(cpu: usize, poll: bool) -> Runner {
    let (ping_tx, ping_rx) = crossbeam_channel::bounded::<RtMsg>(1024);
    let (pong_tx, pong_rx) = crossbeam_channel::bounded::<RtMsg>(1024);
    let mut peer = ThreadPeer::spawn(Some(cpu), move |n| {
        for _ in 0..n {
            if poll {
                cb_poll_send(&pong_tx, cb_poll_recv(&ping_rx));
            } else {
                pong_tx.send(ping_rx.recv().expect("crossbeam recv")).expect("crossbeam send");
            }
        }
    });
    let msg: RtMsg = payload(RT_SIZE).try_into().expect("64 bytes");
    Box::new(move |n| {
        timed(&mut peer, n, || {
            for _ in 0..n {
                if poll {
                    cb_poll_send(&ping_tx, msg);
                    black_box(cb_poll_recv(&pong_rx));
                } else {
                    ping_tx.send(msg).expect("crossbeam send");
                    black_box(pong_rx.recv().expect("crossbeam recv"));
                }
            }
        })
    })
}

fn busy_contenders() -> Vec<Contender> {
    vec![
        contender("shmq", || {
            let msg = payload(RT_SIZE);
            let cfg = Config::new().capacity(RT_RING);
            let (peer, tx, rx) = shmq_echo(&cfg, Role::EchoShmqPoll, 1, None);
            let mut st = (peer, tx, rx, vec![0u8; RT_SIZE]);
            Box::new(move |n| {
                let (peer, tx, rx, buf) = &mut st;
                timed(peer, n, || {
                    for _ in 0..n {
                        poll_send(tx, &msg).expect("shmq try_send");
                        let len = poll_recv(rx, buf).expect("shmq try_recv_ref (did the child fail?)");
                        assert_eq!(len, RT_SIZE);
                    }
                })
            })
        }),
        contender("crossbeam_threads", || crossbeam_echo(1, true)),
    ]
}

fn poll_send(tx: &mut shmq::Sender, msg: &[u8]) -> Result<(), String> {
    loop {
        match tx.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(e) if e.is_full() => spin_loop(),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Busy-poll for the next message and copy it into `buf` (no allocation). Returns its length.
fn poll_recv(rx: &mut shmq::Receiver, buf: &mut [u8]) -> Result<usize, String> {
    loop {
        match rx.try_recv_ref() {
            Ok(m) => {
                let len = m.len();
                if len > buf.len() {
                    return Err(format!("unexpected {len}-byte message"));
                }
                m.read_at(0, &mut buf[..len]);
                return Ok(len);
            }
            Err(e) if e.is_empty() => spin_loop(),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn cb_poll_send<T>(tx: &crossbeam_channel::Sender<T>, mut msg: T) {
    loop {
        match tx.try_send(msg) {
            Ok(()) => return,
            Err(crossbeam_channel::TrySendError::Full(m)) => {
                msg = m;
                spin_loop();
            }
            Err(e) => panic!("crossbeam try_send: {e}"),
        }
    }
}

fn cb_poll_recv<T>(rx: &crossbeam_channel::Receiver<T>) -> T {
    loop {
        match rx.try_recv() {
            Ok(m) => return m,
            Err(crossbeam_channel::TryRecvError::Empty) => spin_loop(),
            Err(e) => panic!("crossbeam try_recv: {e}"),
        }
    }
}

/// Blocking round trips; this thread is on CPU 0, the peer on `peer_cpu`.
fn blocking_contenders(peer_cpu: usize) -> Vec<Contender> {
    let shmq = |spin: Option<Duration>| {
        move || -> Runner {
            let msg = payload(RT_SIZE);
            let mut cfg = Config::new().capacity(RT_RING);
            if let Some(s) = spin {
                cfg = cfg.spin(s);
            }
            let (peer, tx, rx) = shmq_echo(&cfg, Role::EchoShmqBlock, peer_cpu, spin);
            let mut st = (peer, tx, rx, Vec::with_capacity(RT_SIZE));
            Box::new(move |n| {
                let (peer, tx, rx, buf) = &mut st;
                timed(peer, n, || {
                    for _ in 0..n {
                        tx.send(&msg[..]).expect("shmq send");
                        let len = rx.recv_into(buf).expect("shmq recv (did the child fail?)");
                        assert_eq!(len, RT_SIZE);
                    }
                })
            })
        }
    };
    vec![
        contender("shmq_spin20us", shmq(None)), // the default of Config::new()
        contender("shmq_spin0", shmq(Some(Duration::ZERO))),
        contender("pipe", move || {
            let (ping_r, ping_w) = pipe().expect("pipe");
            let (pong_r, pong_w) = pipe().expect("pipe");
            let fds = vec![inheritable(ping_r.as_fd()), inheritable(pong_w.as_fd())];
            drop((ping_r, pong_w));
            let peer = ProcPeer::spawn(Role::EchoStream, RT_SIZE, Some(peer_cpu), None, fds, vec![]);
            let frame = frame(&payload(RT_SIZE));
            let mut st = (peer, ping_w, pong_r, vec![0u8; RT_SIZE]);
            Box::new(move |n| {
                let (peer, w, r, buf) = &mut st;
                timed(peer, n, || {
                    for _ in 0..n {
                        w.write_all(&frame).expect("pipe write");
                        let len = read_frame(r, buf).expect("pipe read (did the child fail?)");
                        assert_eq!(len, RT_SIZE);
                    }
                })
            })
        }),
        contender("crossbeam_threads", move || crossbeam_echo(peer_cpu, false)),
    ]
}

// ------------------------------------------------------------------------------------------
// Framing for pipes and sockets: u32 little-endian length, then the payload.
// ------------------------------------------------------------------------------------------

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// Read exactly one frame into `buf` (which must be large enough); returns the payload length.
fn read_frame(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut hdr = [0u8; 4];
    r.read_exact(&mut hdr)?;
    let len = u32::from_le_bytes(hdr) as usize;
    if len > buf.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{len}-byte frame")));
    }
    r.read_exact(&mut buf[..len])?;
    Ok(len)
}

// ------------------------------------------------------------------------------------------
// Peers: a child process or a thread, driven by "do N" commands.
// ------------------------------------------------------------------------------------------

trait Peer {
    /// Tell the peer to do `n` messages / round trips.
    fn start(&mut self, n: u64);
    /// Wait until the peer reports that it has done them.
    fn finish(&mut self, n: u64);
}

/// What a child process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Send `size`-byte messages on the shmq channel `fds[0]`.
    TputShmq,
    /// Write `size`-byte frames to the pipe or socket `fds[0]`.
    TputStream,
    /// Echo: shmq `fds[0]` → shmq `fds[1]`, busy-polling with try_* calls.
    EchoShmqPoll,
    /// Echo: shmq `fds[0]` → shmq `fds[1]`, blocking calls.
    EchoShmqBlock,
    /// Echo: frames from pipe `fds[0]` to pipe `fds[1]`.
    EchoStream,
}

const ROLES: [(Role, &str); 5] = [
    (Role::TputShmq, "tput-shmq"),
    (Role::TputStream, "tput-stream"),
    (Role::EchoShmqPoll, "echo-shmq-poll"),
    (Role::EchoShmqBlock, "echo-shmq-block"),
    (Role::EchoStream, "echo-stream"),
];

/// Everything a child needs, passed in `SHMQ_BENCH_CHILD` as `key=value;...`.
#[derive(Debug)]
struct Spec {
    role: Role,
    size: usize,
    cpu: Option<usize>,
    /// shmq spin budget; `None` = the default of `Config::new()`.
    spin: Option<Duration>,
    ctl: RawFd,
    fds: Vec<RawFd>,
    ppid: u32,
}

impl Spec {
    fn encode(&self) -> String {
        let role = ROLES.iter().find(|(r, _)| *r == self.role).map(|(_, s)| *s).unwrap_or("?");
        let opt = |v: Option<u128>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        let fds: Vec<String> = self.fds.iter().map(|f| f.to_string()).collect();
        format!(
            "role={role};size={};cpu={};spin_ns={};ctl={};fds={};ppid={}",
            self.size,
            opt(self.cpu.map(|c| c as u128)),
            opt(self.spin.map(|s| s.as_nanos())),
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
        let opt = |key: &str| -> Result<Option<u64>, String> {
            match get(key)? {
                "-" => Ok(None),
                v => v.parse().map(Some).map_err(|e| format!("{key}: {e}")),
            }
        };
        let role_s = get("role")?;
        let role = ROLES.iter().find(|(_, n)| *n == role_s).map(|(r, _)| *r).ok_or(format!("role {role_s}"))?;
        let fds = match get("fds")? {
            "" => Vec::new(),
            list => list.split(',').map(|f| f.parse().map_err(|e| format!("fds: {e}"))).collect::<Result<_, _>>()?,
        };
        Ok(Spec {
            role,
            size: num("size")? as usize,
            cpu: opt("cpu")?.map(|c| c as usize),
            spin: opt("spin_ns")?.map(Duration::from_nanos),
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
    /// child has them, so that end-of-file and close propagate. `watch` are the parent's shmq
    /// channels shared with the child: if the child dies, a watchdog closes them (CLOSING), so
    /// that the parent's blocked or polling calls fail instead of waiting forever (shmq does not
    /// notice a dead peer by itself yet).
    fn spawn(
        role: Role,
        size: usize,
        cpu: Option<usize>,
        spin: Option<Duration>,
        fds: Vec<OwnedFd>,
        watch: Vec<Channel>,
    ) -> ProcPeer {
        let (ctl, theirs) = UnixStream::pair().expect("control socketpair");
        let theirs = inheritable(theirs.as_fd());
        // The child inherits the write end of this pipe and never writes: the read end sees
        // end-of-file exactly when the child is gone.
        let (mut death_r, death_w) = pipe().expect("pipe");
        let death_w_child = inheritable(death_w.as_fd());
        drop(death_w);
        let spec = Spec {
            role,
            size,
            cpu,
            spin,
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
            for ch in watch {
                let _ = ch.close_now();
            }
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
        let _ = self.ctl.write_all(&0u64.to_le_bytes()); // "quit"; EOF would do too
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
                cpu::pin(cpu).expect("pin echo thread");
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
                eprintln!("spsc bench child ({spec}): {e}");
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
        if let Some(cpu) = spec.cpu {
            cpu::pin(cpu)?;
        }
        let mut ctl = UnixStream::from(owned(spec.ctl)?);
        let mut fds = spec.fds.iter().map(|&fd| owned(fd)).collect::<Result<Vec<_>, _>>()?.into_iter();
        let mut fd = || fds.next().ok_or("missing descriptor");
        let mut cfg = Config::new();
        if let Some(s) = spec.spin {
            cfg = cfg.spin(s);
        }
        let size = spec.size;

        match spec.role {
            Role::TputShmq => {
                let mut tx = Channel::from_fd(fd()?, &cfg)?.sender()?;
                let msg = payload(size);
                serve(&mut ctl, |n| {
                    for _ in 0..n {
                        tx.send(&msg[..]).map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
            }
            Role::TputStream => {
                let mut w = std::fs::File::from(fd()?);
                let frame = frame(&payload(size));
                serve(&mut ctl, |n| {
                    for _ in 0..n {
                        w.write_all(&frame)?;
                    }
                    Ok(())
                })
            }
            Role::EchoShmqPoll | Role::EchoShmqBlock => {
                let mut rx = Channel::from_fd(fd()?, &cfg)?.receiver()?;
                let mut tx = Channel::from_fd(fd()?, &cfg)?.sender()?;
                let mut buf = vec![0u8; size];
                if spec.role == Role::EchoShmqPoll {
                    serve(&mut ctl, |n| {
                        for _ in 0..n {
                            let len = poll_recv(&mut rx, &mut buf)?;
                            poll_send(&mut tx, &buf[..len])?;
                        }
                        Ok(())
                    })
                } else {
                    serve(&mut ctl, |n| {
                        for _ in 0..n {
                            rx.recv_into(&mut buf)?;
                            tx.send(&buf[..]).map_err(|e| e.to_string())?;
                        }
                        Ok(())
                    })
                }
            }
            Role::EchoStream => {
                let mut r = std::fs::File::from(fd()?);
                let mut w = std::fs::File::from(fd()?);
                let mut buf = vec![0u8; size];
                let mut out = Vec::with_capacity(size + 4);
                serve(&mut ctl, |n| {
                    for _ in 0..n {
                        let len = read_frame(&mut r, &mut buf)?;
                        out.clear();
                        out.extend_from_slice(&(len as u32).to_le_bytes());
                        out.extend_from_slice(&buf[..len]);
                        w.write_all(&out)?;
                    }
                    Ok(())
                })
            }
        }
    }

    /// Answer commands until "quit" (0) or end-of-file: do `n`, then acknowledge with `n`.
    fn serve(ctl: &mut UnixStream, mut work: impl FnMut(u64) -> Result<(), BoxError>) -> Result<(), BoxError> {
        loop {
            let mut cmd = [0u8; 8];
            match ctl.read_exact(&mut cmd) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            let n = u64::from_le_bytes(cmd);
            if n == 0 {
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

    /// Median and its 95% confidence interval (ns per iteration), from criterion's estimates of
    /// this run (files older than the run are ignored).
    #[derive(Clone, Copy)]
    struct Est {
        median: f64,
        lo: f64,
        hi: f64,
    }

    fn estimate(dir: &Path, id: &str, since: SystemTime) -> Option<Est> {
        let path = dir.join(id).join("new").join("estimates.json");
        let fresh = std::fs::metadata(&path).ok()?.modified().ok()? >= since;
        if !fresh {
            return None;
        }
        let text = std::fs::read_to_string(&path).ok()?;
        let med = &text[text.find("\"median\":")?..];
        let num = |key: &str| -> Option<f64> {
            let rest = &med[med.find(key)? + key.len()..];
            let end = rest.find([',', '}'])?;
            rest[..end].trim().parse().ok()
        };
        Some(Est { median: num("\"point_estimate\":")?, lo: num("\"lower_bound\":")?, hi: num("\"upper_bound\":")? })
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        /// Bytes per message: higher rate is better; ratio = shmq rate / baseline rate.
        Throughput(usize),
        /// Round trip: lower time is better; ratio = shmq time / baseline time.
        Latency,
    }

    /// A target: shmq vs a baseline column, and the bound on the ratio.
    #[derive(Clone, Copy)]
    struct Target {
        against: usize,
        bound: f64,
    }

    struct Row {
        name: &'static str,
        kind: Kind,
        /// Bench ids: shmq, crossbeam, socketpair, pipe (None: not measured for this row).
        ids: [Option<&'static str>; 4],
        target: Option<Target>,
    }

    const CB: usize = 1;
    const PIPE: usize = 3;
    const COLS: [&str; 4] = ["shmq", "crossbeam (threads)", "socketpair", "pipe"];

    fn rows() -> Vec<Row> {
        let tput = |name, size, group: &'static [&'static str; 4], bound: Option<f64>| Row {
            name,
            kind: Kind::Throughput(size),
            ids: group.map(Some),
            target: bound.map(|bound| Target { against: CB, bound }),
        };
        let block = |name, shmq, cb, pipe, bound| Row {
            name,
            kind: Kind::Latency,
            ids: [Some(shmq), Some(cb), None, Some(pipe)],
            target: Some(Target { against: PIPE, bound }),
        };
        vec![
            tput(
                "throughput 64 B",
                64,
                &["tput_64B/shmq", "tput_64B/crossbeam_threads", "tput_64B/socketpair", "tput_64B/pipe"],
                Some(1.0),
            ),
            tput(
                "throughput 4 KiB",
                4 * KIB,
                &["tput_4KiB/shmq", "tput_4KiB/crossbeam_threads", "tput_4KiB/socketpair", "tput_4KiB/pipe"],
                Some(0.9),
            ),
            tput(
                "throughput 1 MiB",
                MIB,
                &["tput_1MiB/shmq", "tput_1MiB/crossbeam_threads", "tput_1MiB/socketpair", "tput_1MiB/pipe"],
                None,
            ),
            Row {
                name: "round trip busy-poll, CPUs 0/1",
                kind: Kind::Latency,
                ids: [Some("rt_busy_64B/shmq"), Some("rt_busy_64B/crossbeam_threads"), None, None],
                target: Some(Target { against: CB, bound: 1.0 }),
            },
            block(
                "rt blocking, one CPU, spin 20us",
                "rt_block_same_cpu/shmq_spin20us",
                "rt_block_same_cpu/crossbeam_threads",
                "rt_block_same_cpu/pipe",
                1.0,
            ),
            block(
                "rt blocking, one CPU, spin 0",
                "rt_block_same_cpu/shmq_spin0",
                "rt_block_same_cpu/crossbeam_threads",
                "rt_block_same_cpu/pipe",
                1.0,
            ),
            block(
                "rt blocking, two CPUs, spin 20us",
                "rt_block_diff_cpu/shmq_spin20us",
                "rt_block_diff_cpu/crossbeam_threads",
                "rt_block_diff_cpu/pipe",
                0.5,
            ),
            block(
                "rt blocking, two CPUs, spin 0",
                "rt_block_diff_cpu/shmq_spin0",
                "rt_block_diff_cpu/crossbeam_threads",
                "rt_block_diff_cpu/pipe",
                0.5,
            ),
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

    /// A time per iteration as the row shows it; `pm` is a relative ± in percent.
    fn cell(kind: Kind, ns: f64, pm: Option<f64>) -> String {
        let pm = pm.map_or_else(String::new, |pm| format!(" ±{pm:.0}%"));
        match kind {
            Kind::Throughput(size) => {
                let rate = 1e9 / ns;
                format!("{}msg/s {}B/s{pm}", si(rate), si(rate * size as f64))
            }
            Kind::Latency => format!("{:.2} µs{pm}", ns / 1e3),
        }
    }

    /// shmq relative to a baseline, as defined on [`Kind`].
    fn ratio(kind: Kind, shmq_ns: f64, base_ns: f64) -> f64 {
        match kind {
            Kind::Throughput(_) => base_ns / shmq_ns, // rate ratio
            Kind::Latency => shmq_ns / base_ns,       // time ratio
        }
    }

    fn median(v: &[f64]) -> f64 {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
    }

    /// shmq's ratio to a baseline, with the lowest and highest per-round ratio (interleaved).
    type Ratio = (f64, Option<(f64, f64)>);

    /// One printed row: the contenders' cells and shmq's ratio to each baseline (with the range
    /// over rounds for the interleaved check).
    struct Line<'a> {
        row: &'a Row,
        vals: [Option<String>; 4],
        ratios: [Option<Ratio>; 3],
    }

    fn print_table(lines: &[Line<'_>]) {
        let header =
            ["workload", COLS[0], COLS[1], COLS[2], COLS[3], "÷crossbeam", "÷socketpair", "÷pipe", "target", "met"];
        let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
        for l in lines {
            let mut cells = vec![l.row.name.to_string()];
            cells.extend(l.vals.iter().map(|v| v.clone().unwrap_or_else(|| "-".into())));
            for r in &l.ratios {
                cells.push(match r {
                    Some((r, None)) => format!("{r:.2}"),
                    Some((r, Some((lo, hi)))) => format!("{r:.2} [{lo:.2}, {hi:.2}]"),
                    None => "-".into(),
                });
            }
            match l.row.target {
                Some(t) => {
                    let higher = matches!(l.row.kind, Kind::Throughput(_));
                    let op = if higher { ">=" } else { "<=" };
                    cells.push(format!("{op} {:.1}x {}", t.bound, ["", "crossbeam", "socketpair", "pipe"][t.against]));
                    cells.push(match l.ratios[t.against - 1] {
                        Some((r, _)) if (higher && r >= t.bound) || (!higher && r <= t.bound) => "yes".into(),
                        Some(_) => "NO".into(),
                        None => "-".into(),
                    });
                }
                None => cells.extend(["(none)".to_string(), String::new()]),
            }
            table.push(cells);
        }
        let widths: Vec<usize> =
            (0..header.len()).map(|c| table.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
        for (i, r) in table.iter().enumerate() {
            let s: Vec<String> = r.iter().zip(&widths).map(|(c, &w)| format!("{c:<w$}")).collect();
            println!("{}", s.join(" | ").trim_end());
            if i == 0 {
                let s: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
                println!("{}", s.join("-|-"));
            }
        }
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
        let crit: Vec<[Option<Est>; 4]> =
            rows.iter().map(|r| r.ids.map(|id| id.and_then(|id| estimate(dir, id, since)))).collect();
        let have_crit = crit.iter().any(|f| f.iter().any(Option::is_some));
        if !have_crit && checks.is_empty() {
            return; // test / list mode, or everything filtered out
        }

        println!();
        println!("shmq spsc summary");
        println!("ratios: throughput = shmq rate / baseline rate (higher is better);");
        println!("        round trip = shmq time / baseline time (lower is better)");
        if have_crit {
            println!();
            println!("criterion: medians of this run (± = half the median's 95% confidence interval)");
            let lines: Vec<Line<'_>> = rows
                .iter()
                .zip(&crit)
                .map(|(row, est)| Line {
                    row,
                    vals: est.map(|e| e.map(|e| cell(row.kind, e.median, Some(50.0 * (e.hi - e.lo) / e.median)))),
                    ratios: [1, 2, 3].map(|b| match (est[0], est[b]) {
                        (Some(s), Some(x)) => Some((ratio(row.kind, s.median, x.median), None)),
                        _ => None,
                    }),
                })
                .collect();
            print_table(&lines);
        }
        if !checks.is_empty() {
            println!();
            println!(
                "interleaved check: contenders alternated, {} rounds of {:?} each; value = median over rounds, \
                 ratio = median of the per-round ratios [lowest, highest]",
                cfg.rounds, cfg.slot
            );
            let find = |id: Option<&str>| id.and_then(|id| checks.iter().find(|c| c.id == id)).map(|c| &c.per_round);
            let lines: Vec<Line<'_>> = rows
                .iter()
                .map(|row| {
                    let per = row.ids.map(find);
                    Line {
                        row,
                        vals: per.map(|p| p.map(|p| cell(row.kind, median(p), None))),
                        ratios: [1, 2, 3].map(|b| {
                            let (s, x) = (per[0]?, per[b]?);
                            let rs: Vec<f64> = s.iter().zip(x).map(|(&s, &x)| ratio(row.kind, s, x)).collect();
                            let lo = rs.iter().copied().fold(f64::INFINITY, f64::min);
                            let hi = rs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                            Some((median(&rs), Some((lo, hi))))
                        }),
                    }
                })
                .filter(|l| l.vals.iter().any(Option::is_some))
                .collect();
            print_table(&lines);
        }
        let tput = if env_flag("SHMQ_BENCH_UNPINNED") { "placed by the scheduler" } else { "pinned to CPUs 0/1" };
        println!();
        println!(
            "run time {:.0} s; loadavg at start {load_before}, at end {}; {} CPUs; throughput groups {tput}",
            runtime.as_secs_f64(),
            loadavg(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    }
}
