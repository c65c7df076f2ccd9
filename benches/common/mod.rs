//! What the spsc and multi benches share (sync uses the descriptor helpers): running a bench's
//! workloads under criterion with an interleaved cross-check afterwards, the peers a workload's
//! parent drives (child processes that re-execute this binary, and threads), CPU pinning, and
//! the pieces of the summary tables.
//!
//! A child process is this binary re-executed with `SHMQ_BENCH_CHILD` set to its spec,
//! `key=value;...`: the bench's own keys (which must include `cpu`, a CPU number or `-`), then
//! `ctl`, `fds` and `ppid`, which this module adds and reads. [`child::run_if_child`], called at
//! the very top of `main` (before criterion sees the arguments), turns such a process into the
//! child: it dies with the parent, pins itself, takes its descriptors, and runs the bench's
//! role. Per sample the parent writes "do N" on the control socket, the child does N and
//! acknowledges with N; [`QUIT`] (or end-of-file) makes it exit.
//!
//! Included with `mod common;` by spsc, multi and sync; each uses a part of it (hence the
//! `allow(dead_code)`). peer_death does not include it.
#![allow(dead_code)]

use criterion::{Criterion, Throughput};
use std::error::Error;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Set (to the child's spec) in the environment of a child process.
pub const CHILD_ENV: &str = "SHMQ_BENCH_CHILD";

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * KIB;

/// The command that makes a child exit (any other is a count, 0 included).
pub const QUIT: u64 = u64::MAX;

pub type BoxError = Box<dyn Error + Send + Sync>;

// ------------------------------------------------------------------------------------------
// A bench run: criterion, then the interleaved check, then what the summary needs
// ------------------------------------------------------------------------------------------

/// Run every workload under criterion (each followed by its interleaved check) and print
/// criterion's final summary. `first_iters`: where the interleaved check's calibration starts.
/// Defaults sized for a full run of about 2 to 2.5 minutes on 2 cores; command-line options
/// (--warm-up-time, --measurement-time, --sample-size, --quick) override them.
pub fn measure(workloads: impl FnOnce() -> Vec<Workload>, first_iters: u64) -> Report {
    let started = SystemTime::now();
    let t0 = Instant::now();
    let load_before = loadavg();
    let dir = criterion_dir();
    let cfg = InterleaveConfig::from_env_and_args(first_iters);
    let mut c = Criterion::default()
        .output_directory(&dir)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();

    let mut checks = Vec::new();
    for w in workloads() {
        run_workload(&mut c, w, &cfg, &mut checks);
    }

    c.final_summary();
    Report { dir, started, runtime: t0.elapsed(), load_before, cfg, checks }
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

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

pub fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// Whether this thread may run on CPUs 0 and 1.
pub fn two_cpus() -> bool {
    cpu::allowed(0) && cpu::allowed(1)
}

/// This thread on CPU 0, the peer on CPU 1, unless `SHMQ_BENCH_UNPINNED=1` leaves placement to
/// the scheduler (on a loaded machine pinning hurts: each side shares its CPU with the load) or
/// the two CPUs are not both allowed.
pub fn pin_pair() -> Option<(usize, usize)> {
    (two_cpus() && !unpinned()).then_some((0, 1))
}

/// `SHMQ_BENCH_UNPINNED` is set.
pub fn unpinned() -> bool {
    env_flag("SHMQ_BENCH_UNPINNED")
}

pub fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 7 + 1) as u8).collect()
}

// ------------------------------------------------------------------------------------------
// Workloads, contenders, and how they are run
// ------------------------------------------------------------------------------------------

/// Runs `n` iterations of one contender (its peers already started) and returns the time the
/// parent measured.
pub type Runner = Box<dyn FnMut(u64) -> Duration>;

/// One contender of a workload. Its peers are started on first use, so that criterion's filter
/// (`cargo bench --bench spsc -- rt_block`) starts only what it runs.
pub struct Contender {
    name: &'static str,
    make: Box<dyn Fn() -> Runner>,
}

pub fn contender(name: &'static str, make: impl Fn() -> Runner + 'static) -> Contender {
    Contender { name, make: Box::new(make) }
}

/// A criterion group: its contenders, in the order they run.
pub struct Workload {
    pub group: String,
    pub throughput: Option<Throughput>,
    /// Pin this thread to the first CPU while the group runs; the peers pin themselves (to the
    /// second). `None`: placement is left to the scheduler.
    pub pin: Option<(usize, usize)>,
    pub contenders: Vec<Contender>,
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

// ------------------------------------------------------------------------------------------
// Interleaved cross-check
// ------------------------------------------------------------------------------------------

/// After each criterion group, its contenders run again in alternation (A B C D A B C D ...),
/// `rounds` times for `slot` each: a machine whose speed changes between one criterion bench
/// and the next (this VM's 4 KiB streams, shmq's and crossbeam's alike, switch between about
/// 0.12 and 2 µs per message) then still gives per-round ratios taken under the same conditions,
/// and their spread shows when it did not hold still.
pub struct InterleaveConfig {
    pub rounds: usize,
    pub slot: Duration,
    bench_mode: bool,
    /// Iterations the calibration starts from (doubled until a run takes a tenth of a slot).
    first_iters: u64,
}

impl InterleaveConfig {
    /// SHMQ_BENCH_ROUNDS=N sets the rounds (0 turns the check off). Default: 10 rounds of
    /// 100 ms; with --quick or a --measurement-time under 1 s (smoke runs), 5 rounds of 20 ms.
    fn from_env_and_args(first_iters: u64) -> InterleaveConfig {
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
        InterleaveConfig { rounds, slot, bench_mode, first_iters }
    }
}

/// Per-round times (ns per iteration) of one contender in the interleaved check.
pub struct Check {
    id: String,
    per_round: Vec<f64>,
}

fn interleave(group: &str, runners: &mut [(&'static str, Runner)], cfg: &InterleaveConfig) -> Vec<Check> {
    eprintln!("{group}: interleaved check, {} rounds of {:?} per contender", cfg.rounds, cfg.slot);
    // Calibrate: iterations that take about one slot.
    let iters: Vec<u64> = runners
        .iter_mut()
        .map(|(_, run)| {
            let mut n = cfg.first_iters;
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
// Summary: what a bench's tables are made of
// ------------------------------------------------------------------------------------------

/// What [`measure`] leaves for the summary.
pub struct Report {
    dir: PathBuf,
    started: SystemTime,
    runtime: Duration,
    load_before: String,
    pub cfg: InterleaveConfig,
    pub checks: Vec<Check>,
}

/// Median and its 95% confidence interval (ns per iteration), from criterion's estimates.
#[derive(Clone, Copy)]
pub struct Est {
    pub median: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Report {
    /// Criterion's estimate for bench `id` (`group/name`) from this run (files older than the
    /// run are ignored).
    pub fn estimate(&self, id: &str) -> Option<Est> {
        let since = self.started.checked_sub(Duration::from_secs(1)).unwrap_or(self.started);
        let path = self.dir.join(id).join("new").join("estimates.json");
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

    /// The interleaved check's per-round times of bench `id`, if it ran.
    pub fn per_round(&self, id: &str) -> Option<&[f64]> {
        self.checks.iter().find(|c| c.id == id).map(|c| &c.per_round[..])
    }

    /// The heading of the interleaved check's table.
    pub fn print_interleaved_heading(&self) {
        println!();
        println!(
            "interleaved check: contenders alternated, {} rounds of {:?} each; value = median over rounds, \
             ratio = median of the per-round ratios [lowest, highest]",
            self.cfg.rounds, self.cfg.slot
        );
    }

    /// The last line: run time, load, CPUs, then `placement` (the bench's own words).
    pub fn print_footer(&self, placement: &str) {
        println!();
        println!(
            "run time {:.0} s; loadavg at start {}, at end {}; {} CPUs; {placement}",
            self.runtime.as_secs_f64(),
            self.load_before,
            loadavg(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    }
}

/// A ratio, with the lowest and highest per-round ratio (interleaved check).
pub type Ratio = (f64, Option<(f64, f64)>);

/// The median of per-round ratios, with their range.
pub fn ratio_range(rs: &[f64]) -> Ratio {
    let lo = rs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = rs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(rs), Some((lo, hi)))
}

/// A ratio as a table shows it.
pub fn ratio_cell(r: Option<Ratio>) -> String {
    match r {
        Some((r, None)) => format!("{r:.2}"),
        Some((r, Some((lo, hi)))) => format!("{r:.2} [{lo:.2}, {hi:.2}]"),
        None => "-".into(),
    }
}

pub fn si(v: f64) -> String {
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

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

/// Print `table` (its first row is the header) with aligned columns.
pub fn print_table(table: Vec<Vec<String>>) {
    let cols = table[0].len();
    let widths: Vec<usize> = (0..cols).map(|c| table.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for (i, r) in table.iter().enumerate() {
        let s: Vec<String> = r.iter().zip(&widths).map(|(c, &w)| format!("{c:<w$}")).collect();
        println!("{}", s.join(" | ").trim_end());
        if i == 0 {
            let s: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
            println!("{}", s.join("-|-"));
        }
    }
}

// ------------------------------------------------------------------------------------------
// Descriptors
// ------------------------------------------------------------------------------------------

/// A pipe (read end, write end), both close-on-exec. (`std::io::pipe` needs Rust 1.87; the
/// crate's MSRV is 1.85.)
pub fn pipe() -> io::Result<(std::fs::File, std::fs::File)> {
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
pub fn inheritable(fd: BorrowedFd<'_>) -> OwnedFd {
    let dup = fd.try_clone_to_owned().expect("dup");
    // SAFETY: `dup` is a valid descriptor we own; F_SETFD with 0 only clears FD_CLOEXEC.
    let rc = unsafe { libc::fcntl(dup.as_raw_fd(), libc::F_SETFD, 0) };
    assert_eq!(rc, 0, "fcntl(F_SETFD): {}", io::Error::last_os_error());
    dup
}

// ------------------------------------------------------------------------------------------
// Peers: child processes or threads, driven by "do N" commands.
// ------------------------------------------------------------------------------------------

pub trait Peer {
    /// Tell the peer to do `n` messages / round trips.
    fn start(&mut self, n: u64);
    /// Wait until the peer reports that it has done them.
    fn finish(&mut self, n: u64);
}

/// A child process running one of the bench's roles.
pub struct ProcPeer {
    child: std::process::Child,
    ctl: UnixStream,
    watchdog: Option<std::thread::JoinHandle<()>>,
}

impl ProcPeer {
    /// Start a child with the bench's part of the spec, `params` (`key=value;...`, with a `cpu`
    /// key). `fds` are inheritable descriptors for it; they are closed here once the child has
    /// them, so that end-of-file and close propagate. If the child dies, a watchdog thread runs
    /// `on_death` (which closes the shared channels, CLOSING), so that the parent's blocked or
    /// polling calls fail instead of waiting forever.
    pub fn spawn(params: String, fds: Vec<OwnedFd>, on_death: Box<dyn FnOnce() + Send>) -> ProcPeer {
        let (ctl, theirs) = UnixStream::pair().expect("control socketpair");
        let theirs = inheritable(theirs.as_fd());
        // The child inherits the write end of this pipe and never writes: the read end sees
        // end-of-file exactly when the child is gone.
        let (mut death_r, death_w) = pipe().expect("pipe");
        let death_w_child = inheritable(death_w.as_fd());
        drop(death_w);
        let fd_list: Vec<String> = fds.iter().map(|f| f.as_raw_fd().to_string()).collect();
        let spec = format!("{params};ctl={};fds={};ppid={}", theirs.as_raw_fd(), fd_list.join(","), std::process::id());
        let exe = std::env::current_exe().expect("current_exe");
        let child = Command::new(exe)
            .env(CHILD_ENV, spec)
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
pub struct ThreadPeer {
    cmd: Option<crossbeam_channel::Sender<u64>>,
    ack: crossbeam_channel::Receiver<u64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl ThreadPeer {
    pub fn spawn(cpu: Option<usize>, mut work: impl FnMut(u64) + Send + 'static) -> ThreadPeer {
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
// Child processes: the spec, and the child's side
// ------------------------------------------------------------------------------------------

/// An optional number as a spec writes it: the number, or `-`.
pub fn opt_field(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The name of `value` in a table of (value, name).
pub fn name_of<R: PartialEq>(table: &[(R, &'static str)], value: &R) -> &'static str {
    table.iter().find(|(r, _)| r == value).map(|(_, s)| *s).unwrap_or("?")
}

/// A child's spec, `key=value;...`, for reading.
pub struct Fields(String);

impl Fields {
    pub fn get(&self, key: &str) -> Result<&str, String> {
        let s = &self.0;
        s.split(';')
            .find_map(|kv| kv.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
            .ok_or_else(|| format!("no {key} in {s:?}"))
    }

    pub fn num(&self, key: &str) -> Result<u64, String> {
        self.get(key)?.parse().map_err(|e| format!("{key}: {e}"))
    }

    /// A number or `-` (None).
    pub fn opt(&self, key: &str) -> Result<Option<u64>, String> {
        match self.get(key)? {
            "-" => Ok(None),
            v => v.parse().map(Some).map_err(|e| format!("{key}: {e}")),
        }
    }

    /// The value of `key` looked up by name in a table of (value, name).
    pub fn named<R: Copy>(&self, key: &str, table: &[(R, &'static str)]) -> Result<R, String> {
        let name = self.get(key)?;
        table.iter().find(|(_, n)| *n == name).map(|(r, _)| *r).ok_or(format!("{key} {name}"))
    }
}

pub mod child {
    use super::*;

    /// What a child process starts with: the control socket and its descriptors.
    pub struct Child {
        pub ctl: UnixStream,
        pub fds: Fds,
    }

    /// The inherited descriptors, in the order the parent passed them.
    pub struct Fds(std::vec::IntoIter<OwnedFd>);

    impl Fds {
        pub fn take(&mut self) -> Result<OwnedFd, BoxError> {
            Ok(self.0.next().ok_or("missing descriptor")?)
        }
    }

    /// Call first in `main`: in a child process (`SHMQ_BENCH_CHILD` set) read the bench's part
    /// of the spec with `decode`, start (see `start`), run `role` and exit (an error is printed
    /// with `bench` and the spec); in the parent, return.
    pub fn run_if_child<S>(
        bench: &str,
        decode: impl FnOnce(&Fields) -> Result<S, String>,
        role: impl FnOnce(S, Child) -> Result<(), BoxError>,
    ) {
        let Ok(spec) = std::env::var(CHILD_ENV) else { return };
        let fields = Fields(spec.clone());
        let run = || -> Result<(), BoxError> {
            let s = decode(&fields)?;
            role(s, start(&fields)?)
        };
        let code = match run() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{bench} bench child ({spec}): {e}");
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

    /// Read this module's part of the spec, die with the parent, pin to `cpu`, and take the
    /// control socket and the descriptors.
    fn start(spec: &Fields) -> Result<Child, BoxError> {
        let ctl = spec.num("ctl")? as RawFd;
        let fds: Vec<RawFd> = match spec.get("fds")? {
            "" => Vec::new(),
            list => list.split(',').map(|f| f.parse().map_err(|e| format!("fds: {e}"))).collect::<Result<_, _>>()?,
        };
        let ppid = spec.num("ppid")? as u32;
        let cpu = spec.opt("cpu")?;
        // Die with the parent, so an aborted bench leaves no spinning or blocked children.
        // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory of ours.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
            return Err(format!("prctl: {}", io::Error::last_os_error()).into());
        }
        if std::os::unix::process::parent_id() != ppid {
            return Err("parent already gone".into());
        }
        if let Some(cpu) = cpu {
            cpu::pin(cpu as usize)?;
        }
        let ctl = UnixStream::from(owned(ctl)?);
        let fds = fds.into_iter().map(owned).collect::<Result<Vec<_>, _>>()?.into_iter();
        Ok(Child { ctl, fds: Fds(fds) })
    }

    /// Answer commands until [`QUIT`] or end-of-file: do `n` (0 is valid: a producer's share of
    /// a 1-message sample), then acknowledge with `n`.
    pub fn serve(ctl: &mut UnixStream, mut work: impl FnMut(u64) -> Result<(), BoxError>) -> Result<(), BoxError> {
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
// CPU affinity
// ------------------------------------------------------------------------------------------

pub mod cpu {
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
