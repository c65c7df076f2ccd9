//! Helpers shared by the integration tests.
//!
//! * [`Scope`]: unique segment names (test-binary pid + tag + counter) that are removed when the
//!   scope ends, even when the test fails, and child processes that are always reaped. A test ends
//!   with [`Scope::finish`], which asserts that no `/dev/shm/shmq.*` entry of the scope remains
//!   and that no child of the scope is left unreaped (a zombie).
//! * Child processes are the test binary itself, re-executed through libtest so that it runs only
//!   the `#[ignore]`d `child_entry` test, with its role in [`ROLE_VAR`]. This works the same under
//!   `cargo test` and `cargo nextest run` (both run the libtest harness of the binary).
//! * [`monotonic_ns`]: CLOCK_MONOTONIC in ns, the clock shmq stamps its transitions with. It is
//!   system-wide, so values taken in different processes can be subtracted.
//! * [`SplitMix64`] and [`hash64`]: a deterministic PRNG and a checksum, written here so the
//!   tests need no extra dependency.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Environment variable telling a re-executed test binary which role to play.
pub const ROLE_VAR: &str = "SHMQ_IT_ROLE";
/// Name of the `#[ignore]`d test that is a child's entry point (at the root of each test crate).
pub const CHILD_ENTRY: &str = "child_entry";
/// Lines a child prints to report a value to its parent: `@@shmq key=value`.
const REPORT_PREFIX: &str = "@@shmq ";

// Byte offsets of header fields, from src/layout.rs (private there; the offsets are checked at
// compile time in that file, so a change there must be mirrored here).
/// `Identity::magic` (u64).
pub const OFF_MAGIC: u64 = 0;
/// `Identity::layout_version` (u32).
pub const OFF_VERSION: u64 = 8;
/// `Identity::abi` (u32).
pub const OFF_ABI: u64 = 12;
/// `Identity::header_size` (u32).
pub const OFF_HEADER_SIZE: u64 = 16;
/// `Identity::flavor` (u32).
pub const OFF_FLAVOR: u64 = 20;
/// `Identity::segment_size` (u64).
pub const OFF_SEGMENT_SIZE: u64 = 24;
/// `Identity::ring_offset` (u64).
pub const OFF_RING_OFFSET: u64 = 32;
/// `Identity::ring_capacity` (u64).
pub const OFF_RING_CAPACITY: u64 = 40;
/// `Identity::max_message` (u64).
pub const OFF_MAX_MESSAGE: u64 = 48;
/// `Identity::cell_size` (u32).
pub const OFF_CELL_SIZE: u64 = 60;
/// `LifecycleLine::state` (u32), at 128 + 0.
pub const OFF_STATE: u64 = 128;
/// `ProducerLine::tail` (u64), at 128 + 128.
pub const OFF_TAIL: u64 = 256;
/// `ConsumerLine::head` (u64), at 128 + 256.
pub const OFF_HEAD: u64 = 384;
/// Start of the ring data (`HEADER_SIZE`).
pub const OFF_RING: u64 = 4096;
/// Tail word flag: the receiver is (about to be) asleep.
pub const TAIL_RX_WAITING: u64 = 1 << 62;
/// Head word flag: the sender is (about to be) asleep.
pub const HEAD_TX_WAITING: u64 = 1 << 63;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// CLOCK_MONOTONIC in nanoseconds (the clock of `shmq::Stats::*_ns`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Print a value for the parent (children only).
pub fn report(key: &str, value: impl std::fmt::Display) {
    println!("{REPORT_PREFIX}{key}={value}");
}

/// A required environment variable (children only).
pub fn env_var(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("child started without {key}"))
}

/// The resources of one test: segment names and child processes.
pub struct Scope {
    prefix: String,
    names: Mutex<Vec<String>>,
    pids: Mutex<Vec<u32>>,
}

impl Scope {
    /// A scope whose names all start with `it-PID-TAG-N-`.
    pub fn new(tag: &str) -> Scope {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Scope {
            prefix: format!("it-{}-{tag}-{n}-", std::process::id()),
            names: Mutex::new(Vec::new()),
            pids: Mutex::new(Vec::new()),
        }
    }

    /// The prefix of every name of this scope.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A fresh segment name, removed (if it still exists) when the scope ends.
    pub fn name(&self, what: &str) -> String {
        let name = format!("{}{what}", self.prefix);
        self.names.lock().unwrap().push(name.clone());
        name
    }

    /// Start the test binary again as a child playing `role`. The child is killed and reaped if
    /// the returned [`Proc`] is dropped without being waited for.
    pub fn spawn(&self, role: &str, env: &[(&str, &str)]) -> Proc {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.args(["--exact", CHILD_ENTRY, "--ignored", "--nocapture", "--test-threads=1"])
            .env(ROLE_VAR, role)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn child test process");
        self.pids.lock().unwrap().push(child.id());
        let out = drain(child.stdout.take().unwrap());
        let err = drain(child.stderr.take().unwrap());
        Proc { role: role.to_string(), child: Some(child), out: Some(out), err: Some(err) }
    }

    /// The end of a passing test: remove what is left of the scope's names (segments a test
    /// deliberately corrupted cannot be removed by shmq itself), then assert that `/dev/shm`
    /// holds nothing of this scope and that every child has been reaped.
    pub fn finish(self) {
        self.cleanup();
        let left = leftover_segments(&self.prefix);
        assert!(left.is_empty(), "segments left in /dev/shm: {left:?}");
        let me = std::process::id();
        for &pid in self.pids.lock().unwrap().iter() {
            // A reaped child has no /proc entry, or the pid now belongs to another process (whose
            // parent is not us). A zombie, or a child still running, has us as parent.
            if let Some((state, ppid)) = proc_state(pid, pid) {
                assert!(ppid != me, "child {pid} was not reaped (state {state})");
            }
        }
    }

    fn cleanup(&self) {
        for name in self.names.lock().unwrap().iter() {
            match shmq::unlink(name) {
                Ok(()) | Err(shmq::SegmentError::NotFound { .. }) => {}
                Err(e) => eprintln!("could not remove test segment {name}: {e}"),
            }
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// `/dev/shm/shmq.PREFIX*` entries.
pub fn leftover_segments(prefix: &str) -> Vec<String> {
    let want = format!("shmq.{prefix}");
    std::fs::read_dir("/dev/shm")
        .expect("read /dev/shm")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&want))
        .collect()
}

/// (state letter, ppid) of task `tid` of process `pid`, from /proc.
fn proc_state(pid: u32, tid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    // Field 2 (the command) is in parentheses and may contain anything: parse after the last ')'.
    let mut rest = stat[stat.rfind(')')? + 1..].split_ascii_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

/// State letters of every thread of process `pid` (empty if it is gone).
fn thread_states(pid: u32) -> Vec<char> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|tid| proc_state(pid, tid).map(|(s, _)| s))
        .collect()
}

fn drain<R: Read + Send + 'static>(mut r: R) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = r.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A running child process.
pub struct Proc {
    role: String,
    child: Option<Child>,
    out: Option<JoinHandle<String>>,
    err: Option<JoinHandle<String>>,
}

/// What a finished child left behind.
#[derive(Debug)]
pub struct Finished {
    pub role: String,
    pub pid: u32,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Wait for the child to exit (killing it after `timeout`) and collect its output.
    pub fn wait(mut self, timeout: Duration) -> Finished {
        let mut child = self.child.take().unwrap();
        let pid = child.id();
        let t0 = Instant::now();
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if t0.elapsed() > timeout {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("wait after kill");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let stdout = self.out.take().unwrap().join().unwrap_or_default();
        let stderr = self.err.take().unwrap().join().unwrap_or_default();
        let f = Finished { role: self.role.clone(), pid, status, stdout, stderr };
        assert!(!timed_out, "child {:?} did not finish within {timeout:?}; killed it\n{}", f.role, f.output());
        f
    }

    /// Kill the child, reap it and fail the test with `msg` and the child's output.
    pub fn fail(self, msg: &str) -> ! {
        let role = self.role.clone();
        let mut me = self;
        let _ = me.child.as_mut().unwrap().kill();
        let f = me.wait(Duration::from_secs(10));
        panic!("{msg} (child {role:?})\n{}", f.output());
    }

    /// Wait until the child is asleep in a blocking call: the flag `bit` of the 64-bit word at
    /// `offset` of segment file `seg` is set (shmq sets it just before FUTEX_WAIT) and every
    /// thread of the child is in state S (sleeping). Fails the test after 20 s or if the child
    /// exits instead.
    pub fn wait_until_asleep(self, seg: &Path, offset: u64, bit: u64) -> Proc {
        let file = std::fs::File::open(seg).expect("open segment file");
        let t0 = Instant::now();
        loop {
            let flagged = read_u64(&file, offset) & bit != 0;
            let states = thread_states(self.pid());
            if states.is_empty() || states.contains(&'Z') {
                self.fail("the child exited instead of blocking");
            }
            if flagged && states.iter().all(|&s| s == 'S') {
                return self;
            }
            if t0.elapsed() > Duration::from_secs(20) {
                self.fail(&format!("the child did not block within 20 s (flag {flagged}, threads {states:?})"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for h in [self.out.take(), self.err.take()].into_iter().flatten() {
            let _ = h.join();
        }
    }
}

impl Finished {
    pub fn output(&self) -> String {
        format!(
            "--- pid {} status {} stdout ---\n{}\n--- stderr ---\n{}",
            self.pid, self.status, self.stdout, self.stderr
        )
    }

    /// Assert a clean exit (the child's `child_entry` passed).
    pub fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "child {:?} failed\n{}", self.role, self.output());
        self
    }

    /// Everything the child reported with [`report`].
    pub fn reports(&self) -> HashMap<String, String> {
        self.stdout
            .lines()
            .filter_map(|l| Some(&l[l.find(REPORT_PREFIX)? + REPORT_PREFIX.len()..])) // libtest may print first
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn report(&self, key: &str) -> String {
        self.reports()
            .remove(key)
            .unwrap_or_else(|| panic!("child {:?} did not report {key:?}\n{}", self.role, self.output()))
    }

    pub fn report_u64(&self, key: &str) -> u64 {
        self.report(key).parse().expect("numeric report")
    }
}

/// Read a little-endian u64 from a segment file.
pub fn read_u64(file: &std::fs::File, offset: u64) -> u64 {
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, offset).expect("read segment file");
    u64::from_le_bytes(b)
}

/// Overwrite bytes of a segment file (through the page cache, so every mapping sees them).
pub fn poke(path: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).expect("open segment file for writing");
    f.write_all_at(bytes, offset).expect("write segment file");
}

/// An exclusive lock shared by every test process built in this target directory. The tests
/// that assert wake-up latencies take it, and so do the tests that keep both CPUs busy, so the
/// former never measure the latter (under `cargo test` they are threads of one process; under
/// nextest, separate processes: an flock on one file covers both).
pub struct Exclusive(std::fs::File);

pub fn exclusive() -> Exclusive {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).expect("create CARGO_TARGET_TMPDIR");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("shmq-it-timing.lock"))
        .expect("open lock file");
    loop {
        // SAFETY: `f` is an open file for the duration of the call.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) } == 0 {
            return Exclusive(f);
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.raw_os_error(), Some(libc::EINTR), "flock: {e}");
    }
}

/// Closes a channel (CLOSING) if the test is still running after `after`: a blocking receive or
/// send then returns instead of hanging, and the test fails on its own assertions.
pub struct Watchdog {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub fn new(ch: &shmq::Channel, after: Duration, what: &'static str) -> Watchdog {
        let ch = ch.clone();
        let (stop, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(after) {
                eprintln!("watchdog: {what} still running after {after:?}; closing the channel");
                let _ = ch.close_now();
            }
        });
        Watchdog { stop: Some(stop), thread: Some(thread) }
    }
}

impl Watchdog {
    /// Like [`Watchdog::new`] for any flavour: runs `close` (which should close the channel, e.g.
    /// `close_now` on a clone of an `mpsc::Channel` or `mpmc::Channel`) if the test is still
    /// running after `after`.
    pub fn with(after: Duration, what: &'static str, close: impl FnOnce() + Send + 'static) -> Watchdog {
        let (stop, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(after) {
                eprintln!("watchdog: {what} still running after {after:?}; closing the channel");
                close();
            }
        });
        Watchdog { stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, deterministic.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fill `buf` with pseudo-random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// A 64-bit checksum: FNV-1a style over 64-bit words, with a xor-shift after every multiply so
/// that high bits feed back into low ones. Every step is a bijection of the running state, so any
/// change to a single word or byte always changes the result. Four independent lanes keep it
/// fast enough for the 2 GB stream test; the length is mixed in.
pub fn hash64(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    const P: u64 = 0x0000_0100_0000_01B3; // the FNV-64 prime
    #[inline]
    fn mix(h: u64, w: u64) -> u64 {
        let h = (h ^ w).wrapping_mul(K);
        h ^ (h >> 29)
    }
    let mut lanes = [0xCBF2_9CE4_8422_2325u64 ^ bytes.len() as u64, 1, 2, 3];
    let mut blocks = bytes.chunks_exact(32);
    for b in &mut blocks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            *lane = mix(*lane, u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap()));
        }
    }
    let mut h = lanes.iter().fold(0u64, |acc, &l| mix(acc, l));
    for &b in blocks.remainder() {
        h = (h ^ b as u64).wrapping_mul(P);
    }
    mix(h, bytes.len() as u64)
}
