//! Process identity and liveness with real processes (issue #4): `ProcessId` (pid + start time)
//! is not fooled by zombies or by a reused pid, a `PidWatch` (pidfd) wakes a waiter when its
//! process dies, `die_with_parent` kills a child whose parent died, and a segment of one user
//! cannot be opened by another.
//!
//! Children are this test binary re-executed in a role (see `common`), except where a test
//! needs its own `Command` settings (another uid). Every child is killed and reaped on failure
//! too (`Proc`'s and `Kid`'s drops), and segments are removed by `Scope`.
//!
//! Two tests need root: the pid-reuse test (it writes `/proc/sys/kernel/ns_last_pid` to make
//! the kernel hand out a pid again at once) and the permission test (root ignores file modes, so
//! the child must drop to another uid). Without root they print a loud SKIPPED line on stderr
//! (not captured by the harness) and return; set `SHMQ_IT_REQUIRE_ROOT=1` to make that a
//! failure instead.
#![cfg(not(shmq_loom))] // the public API does not exist in loom builds

mod common;

use common::*;
use shmq::process::{Liveness, PidWatch, ProcessId, die_with_parent, parent_alive};
use shmq::{Channel, Config, SegmentError, shm_path};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest any child may run before the test kills it and fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a sleeping child lives if nobody kills it (a leak ends by itself).
const SLEEP_LIMIT: Duration = Duration::from_secs(60);
/// The generous bound asserted on a pidfd wake-up after SIGKILL (the target is 50 ms;
/// the measured values are printed).
const WAKE_BOUND: Duration = Duration::from_secs(1);
/// The uid and gid the permission test's child drops to ("nobody").
const NOBODY: u32 = 65534;

/// Taken around every process and thread creation of this binary, so that the pid-reuse test's
/// forced pid is not taken by a sibling test's child (other processes of the machine can still
/// take it: that test retries).
static SPAWN: Mutex<()> = Mutex::new(());

fn spawn_lock() -> std::sync::MutexGuard<'static, ()> {
    SPAWN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Write to stderr bypassing the harness's capture, so a measurement or a skip is seen even
/// when the test passes.
fn loud(msg: &str) {
    let _ = writeln!(std::io::stderr(), "liveness: {msg}");
}

/// Returns true if the test may go on as root; otherwise prints why it is skipped (or fails if
/// `SHMQ_IT_REQUIRE_ROOT` is set).
fn require_root(test: &str, why: &str) -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    let msg = format!("SKIPPED {test}: needs root ({why}), running as euid {euid}");
    assert!(std::env::var_os("SHMQ_IT_REQUIRE_ROOT").is_none(), "{msg} (SHMQ_IT_REQUIRE_ROOT is set)");
    loud(&format!("!!!!!!!!!! {msg} !!!!!!!!!!"));
    false
}

fn sigkill(pid: u32) {
    // SAFETY: kill touches no memory; `pid` is a child of this process that has not been reaped
    // (so the pid cannot belong to anyone else).
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0, "kill {pid}");
}

/// Field 3 (state) of /proc/PID/stat, read independently of shmq's parser.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].split_ascii_whitespace().next()?.chars().next()
}

/// Field 20 of `/proc/PID/stat`: the threads still in the process.
fn proc_threads(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command: 3 (state) is the first, so field 20 is the 18th.
    stat[stat.rfind(')')? + 1..].split_ascii_whitespace().nth(17)?.parse().ok()
}

/// Wait (up to 10 s) until process `pid` is a zombie: killed, not yet reaped. Right after a
/// SIGKILL the leader can show `Z` while its other threads are still exiting (then it counts as
/// alive, like a leader that called `pthread_exit`): wait until it is the last one.
fn wait_for_zombie(pid: u32) {
    let t0 = Instant::now();
    while proc_state(pid) != Some('Z') || proc_threads(pid) != Some(1) {
        assert!(t0.elapsed() < Duration::from_secs(10), "pid {pid} did not become a zombie: {:?}", proc_state(pid));
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Start a sleeping child with the scope (its death signal tied to this process).
fn sleeper(scope: &Scope) -> Proc {
    let me = std::process::id().to_string();
    let _g = spawn_lock();
    scope.spawn("sleep", &[("LIVENESS_PARENT", &me)])
}

fn id_of(p: &Proc) -> ProcessId {
    ProcessId::of(p.pid()).expect("a running child has a /proc entry")
}

// ---------------------------------------------------------------------------------------------
// Children.

/// Entry point of every child process. Does nothing unless started by `Scope::spawn` or `Kid`.
#[test]
#[ignore = "entry point of the child processes of the other tests; does nothing when run directly"]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else { return };
    match role.as_str() {
        "sleep" => child_sleep(),
        "open_as_nobody" => child_open_as_nobody(),
        "check_parent" => child_check_parent(),
        "middle" => child_middle(),
        "orphan" => child_orphan(),
        "leader_exits" => child_leader_exits(),
        other => panic!("unknown child role {other:?}"),
    }
}

fn parent_from_env() -> ProcessId {
    ProcessId {
        pid: env_var("LIVENESS_PARENT").parse().unwrap(),
        start_time: std::env::var("LIVENESS_PARENT_START").map_or(0, |s| s.parse().unwrap()),
    }
}

/// Sleep until killed (at most `SLEEP_LIMIT`), dying with the parent.
fn child_sleep() {
    die_with_parent(parent_from_env().pid, libc::SIGKILL).expect("the parent is alive");
    std::thread::sleep(SLEEP_LIMIT);
}

/// Report who we are and what opening the segment as that user gives.
fn child_open_as_nobody() {
    // SAFETY: these getters cannot fail and touch no memory.
    let ids = unsafe { [libc::getuid(), libc::geteuid(), libc::getgid(), libc::getegid()] };
    report("ids", format!("{ids:?}"));
    // SAFETY: a null list with size 0 asks only for the count.
    report("groups", unsafe { libc::getgroups(0, std::ptr::null_mut()) });
    let name = env_var("LIVENESS_SEG");
    match Channel::open(&name, &Config::new()) {
        Ok(_) => report("open", "Ok"),
        Err(SegmentError::PermissionDenied { name: n }) => report("open", format!("PermissionDenied {n}")),
        Err(e) => report("open", format!("other {e:?}")),
    }
    if let Err(e) = Channel::open(&name, &Config::new()) {
        report("open_display", e);
    }
    let raw = std::fs::OpenOptions::new().read(true).write(true).open(shm_path(&name));
    report("raw_open", raw.map_or_else(|e| format!("{:?} {e}", e.kind()), |_| "Ok".to_string()));
    report("parent_alive", parent_alive(&parent_from_env()));
}

/// Report what `parent_alive` says about the right parent and a wrong one, then check that
/// `die_with_parent` with the right parent lets us live.
fn child_check_parent() {
    let parent = parent_from_env();
    report("right", parent_alive(&parent));
    report("wrong_start", parent_alive(&ProcessId { start_time: parent.start_time + 1, ..parent }));
    report("wrong_pid", parent_alive(&ProcessId { pid: parent.pid + 1, ..parent }));
    let expected: u32 = env_var("LIVENESS_EXPECTED").parse().unwrap();
    let r = die_with_parent(expected, libc::SIGKILL);
    report("die_with_parent", format!("{r:?}")); // only reached if we were not killed
}

/// Start an orphan-to-be that dies with us, publish its identity, then sleep until killed.
fn child_middle() {
    let me = ProcessId::me();
    let exe = std::env::current_exe().unwrap();
    let orphan = Command::new(exe)
        .args(["--exact", CHILD_ENTRY, "--ignored", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, "orphan")
        .env("LIVENESS_PARENT", me.pid.to_string())
        // Not our pipes: the test reads them to the end, which must not wait for the orphan.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = ProcessId::of(orphan.id()).unwrap();
    let file = env_var("LIVENESS_FILE");
    std::fs::write(format!("{file}.tmp"), format!("{} {}", id.pid, id.start_time)).unwrap();
    std::fs::rename(format!("{file}.tmp"), &file).unwrap();
    std::thread::sleep(SLEEP_LIMIT);
    drop(orphan); // never reached in the test: we are killed first
}

fn child_orphan() {
    // If the middle process is already gone, this kills us at once (the race check).
    let _ = die_with_parent(parent_from_env().pid, libc::SIGKILL);
    std::thread::sleep(SLEEP_LIMIT);
}

extern "C" fn exit_this_thread(_: libc::c_int) {
    // SAFETY: exit(2) ends only the calling thread (exit_group(2) would end the process); the
    // call does not return, and nothing of this thread is used afterwards.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
}

/// The main thread exits (only it: `SYS_exit`, not `exit_group`) while another thread sleeps.
/// /proc/PID/stat then shows a zombie leader of a process that is alive. libtest runs this on
/// one of its threads, so the main thread is made to exit by a signal whose handler does it.
fn child_leader_exits() {
    let pid = std::process::id() as libc::pid_t;
    // SAFETY: gettid cannot fail.
    let on_main = unsafe { libc::gettid() } == pid;
    report("on_main", on_main);
    let _ = std::io::stdout().flush();
    if on_main {
        std::thread::spawn(|| std::thread::sleep(SLEEP_LIMIT));
        exit_this_thread(0);
    }
    // SAFETY: the handler only makes a raw syscall (async-signal-safe). tgkill with the pid as the
    // thread id signals the main thread (the leader), which then exits inside the handler; this
    // thread is not affected and keeps the process alive.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = exit_this_thread as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
        assert_eq!(libc::syscall(libc::SYS_tgkill, pid, pid, libc::SIGUSR1), 0);
    }
    std::thread::sleep(SLEEP_LIMIT);
}

// ---------------------------------------------------------------------------------------------
// A child started with its own Command settings.

struct Kid {
    role: String,
    child: Option<Child>,
    out: Option<JoinHandle<String>>,
    err: Option<JoinHandle<String>>,
}

fn drain<R: Read + Send + 'static>(mut r: R) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

impl Kid {
    fn spawn(role: &str, env: &[(&str, String)], configure: impl FnOnce(&mut Command)) -> Kid {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", CHILD_ENTRY, "--ignored", "--nocapture", "--test-threads=1"])
            .env(ROLE_VAR, role)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        configure(&mut cmd);
        let _g = spawn_lock();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn child {role:?}: {e}"));
        let out = drain(child.stdout.take().unwrap());
        let err = drain(child.stderr.take().unwrap());
        Kid { role: role.to_string(), child: Some(child), out: Some(out), err: Some(err) }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Wait for the exit (killing the child after `CHILD_TIMEOUT`) and collect the output.
    fn finish(mut self) -> Finished {
        let mut child = self.child.take().unwrap();
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if t0.elapsed() > CHILD_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("child {:?} did not finish within {CHILD_TIMEOUT:?}", self.role);
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let stdout = self.out.take().unwrap().join().unwrap();
        let stderr = self.err.take().unwrap().join().unwrap();
        Finished { role: self.role.clone(), pid: child.id(), status, stdout, stderr }
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for h in [self.out.take(), self.err.take()].into_iter().flatten() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn a_child_is_alive_then_a_zombie_is_dead_then_a_reaped_one_is_dead() {
    let scope = Scope::new("alive");
    let child = sleeper(&scope);
    let pid = child.pid();
    let id = id_of(&child);
    assert_eq!(id.liveness(), Liveness::Alive);
    assert_eq!(ProcessId { start_time: id.start_time + 1, ..id }.liveness(), Liveness::Dead, "wrong start time");
    assert_eq!(ProcessId { start_time: id.start_time - 1, ..id }.liveness(), Liveness::Dead, "wrong start time");

    sigkill(pid);
    wait_for_zombie(pid);
    // The zombie still has its pid, its /proc entry and its identity, and kill(pid, 0) still
    // succeeds: a pid-only check would call it alive.
    // SAFETY: signal 0 sends nothing; the zombie's pid is still ours.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, 0) }, 0);
    assert_eq!(ProcessId::of(pid), Some(id));
    assert_eq!(id.liveness(), Liveness::Dead, "a zombie has exited");
    // A pidfd on a zombie opens, and is readable at once.
    let watch = PidWatch::open(&id).expect("a zombie can be watched");
    assert!(watch.is_dead());
    assert_eq!(PidWatch::wait_any(&[&watch], Some(Duration::ZERO)).unwrap(), Some(0));

    let out = child.wait(CHILD_TIMEOUT);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{}", out.output());
    assert_eq!(id.liveness(), Liveness::Dead, "reaped");
    assert!(watch.is_dead());
    let e = PidWatch::open(&id).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    scope.finish();
}

#[test]
fn a_pidfd_wakes_wait_any_when_its_process_is_killed() {
    let _x = exclusive(); // no CPU-heavy test of this target runs meanwhile
    let scope = Scope::new("pidfd");
    let mut latencies = Vec::new();
    for round in 0..6 {
        let children = [sleeper(&scope), sleeper(&scope)];
        let watches: Vec<PidWatch> = children.iter().map(|c| PidWatch::open(&id_of(c)).unwrap()).collect();
        let refs: Vec<&PidWatch> = watches.iter().collect();
        assert!(watches.iter().all(|w| !w.is_dead()));
        assert_eq!(PidWatch::wait_any(&refs, Some(Duration::from_millis(20))).unwrap(), None);

        let victim = round % 2;
        let victim_pid = children[victim].pid();
        let killer = {
            let _g = spawn_lock();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30)); // the waiter is in poll by now
                let t0 = Instant::now();
                sigkill(victim_pid);
                t0
            })
        };
        let got = PidWatch::wait_any(&refs, Some(Duration::from_secs(10))).unwrap();
        let woke = Instant::now();
        let killed = killer.join().unwrap();
        let latency = woke.saturating_duration_since(killed);
        assert_eq!(got, Some(victim), "round {round}");
        assert!(latency < WAKE_BOUND, "round {round}: woke {latency:?} after the SIGKILL");
        assert!(watches[victim].is_dead());
        assert!(!watches[1 - victim].is_dead());
        latencies.push(latency);
        for c in children {
            // SAFETY: signal 0 sends nothing; an unreaped child's pid is ours.
            if unsafe { libc::kill(c.pid() as libc::pid_t, 0) } == 0 {
                sigkill(c.pid());
            }
            assert_eq!(c.wait(CHILD_TIMEOUT).status.signal(), Some(libc::SIGKILL));
        }
    }
    latencies.sort();
    loud(&format!(
        "pidfd wake-up after SIGKILL: min {:?}, median {:?}, max {:?} over {} rounds (issue target 50 ms, asserted < {WAKE_BOUND:?})",
        latencies[0],
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        latencies.len()
    ));
    scope.finish();
}

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn wait_any_keeps_waiting_through_signals() {
    // SAFETY: `sa` is zero-initialised (a valid sigaction), then given a handler that only
    // touches an atomic (async-signal-safe) and an empty mask; no SA_RESTART, so poll returns
    // EINTR. SIGUSR2 is used by no other test of this binary.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = count_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()), 0);
    }
    let scope = Scope::new("eintr");
    let child = sleeper(&scope);
    let watch = PidWatch::open(&id_of(&child)).unwrap();
    // SAFETY: pthread_self cannot fail.
    let me = unsafe { libc::pthread_self() };
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let pester = {
        let stop = stop.clone();
        let _g = spawn_lock();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: `me` is the test thread, which joins this thread before it ends.
                unsafe { libc::pthread_kill(me, libc::SIGUSR2) };
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    let before = SIGNALS.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let r = PidWatch::wait_any(&[&watch], Some(Duration::from_millis(300)));
    let waited = t0.elapsed();
    let signals = SIGNALS.load(Ordering::Relaxed) - before;
    assert_eq!(r.unwrap(), None);
    assert!(waited >= Duration::from_millis(300), "returned early, after {waited:?}");
    assert!(signals >= 10, "only {signals} signals arrived");

    let pid = child.pid();
    let killer = {
        let _g = spawn_lock();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            sigkill(pid);
        })
    };
    assert_eq!(PidWatch::wait_any(&[&watch], None).unwrap(), Some(0));
    stop.store(true, Ordering::Relaxed);
    pester.join().unwrap();
    killer.join().unwrap();
    loud(&format!("wait_any: {signals} signals during a 300 ms wait, which lasted {waited:?}"));
    assert_eq!(child.wait(CHILD_TIMEOUT).status.signal(), Some(libc::SIGKILL));
    scope.finish();
}

/// Write `last` to /proc/sys/kernel/ns_last_pid: the next pid handed out is `last + 1` if free.
fn set_last_pid(last: u32) -> std::io::Result<()> {
    std::fs::write("/proc/sys/kernel/ns_last_pid", last.to_string())
}

#[test]
fn a_reused_pid_is_not_the_process_we_recorded() {
    if !require_root("a_reused_pid_is_not_the_process_we_recorded", "writes /proc/sys/kernel/ns_last_pid") {
        return;
    }
    const ATTEMPTS: u32 = 20;
    let scope = Scope::new("reuse");
    let me = std::process::id().to_string();
    let guard = spawn_lock(); // for the whole test: no sibling test creates a process or thread
    for attempt in 1..=ATTEMPTS {
        let old = scope.spawn("sleep", &[("LIVENESS_PARENT", &me)]);
        let pid = old.pid();
        let old_id = id_of(&old);
        let old_watch = PidWatch::open(&old_id).unwrap();
        // Start times count 10 ms ticks: let the next process start at least two ticks later,
        // or pid + start time could not tell the two apart (see the module docs).
        std::thread::sleep(Duration::from_millis(30));
        sigkill(pid);
        old.wait(CHILD_TIMEOUT);
        assert_eq!(old_id.liveness(), Liveness::Dead);
        assert!(old_watch.is_dead());

        match set_last_pid(pid - 1) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::EROFS)) => {
                assert!(std::env::var_os("SHMQ_IT_REQUIRE_ROOT").is_none(), "cannot write ns_last_pid: {e}");
                loud(&format!("!!!!!!!!!! SKIPPED the pid-reuse test: cannot write ns_last_pid: {e} !!!!!!!!!!"));
                return;
            }
            Err(e) => panic!("write ns_last_pid: {e}"),
        }
        let new = scope.spawn("sleep", &[("LIVENESS_PARENT", &me)]);
        if new.pid() != pid {
            loud(&format!(
                "pid reuse attempt {attempt}: wanted pid {pid}, got {} (taken by another process)",
                new.pid()
            ));
            sigkill(new.pid());
            new.wait(CHILD_TIMEOUT);
            continue;
        }
        // The kernel handed the same pid to a new process.
        let new_id = id_of(&new);
        assert_eq!(new_id.pid, old_id.pid);
        assert!(new_id.start_time > old_id.start_time, "{old_id:?} then {new_id:?}");
        // SAFETY: signal 0 sends nothing; the pid is our unreaped child's.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, 0) }, 0, "a pid-only check says: alive");
        assert_eq!(old_id.liveness(), Liveness::Dead, "the recorded process must stay dead");
        assert_eq!(new_id.liveness(), Liveness::Alive);
        let e = PidWatch::open(&old_id).expect_err("a pidfd on the reused pid must be refused");
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
        assert!(old_watch.is_dead(), "a pidfd opened before the reuse still refers to the dead process");
        let new_watch = PidWatch::open(&new_id).unwrap();
        assert!(!new_watch.is_dead());
        loud(&format!(
            "pid reuse reproduced on attempt {attempt}: pid {pid} had start time {} and now {}; the old ProcessId is Dead and PidWatch::open refuses it",
            old_id.start_time, new_id.start_time
        ));
        sigkill(pid);
        assert_eq!(new.wait(CHILD_TIMEOUT).status.signal(), Some(libc::SIGKILL));
        assert!(new_watch.is_dead());
        drop(guard);
        scope.finish();
        return;
    }
    panic!("the kernel never handed a pid out again in {ATTEMPTS} attempts (other processes took it)");
}

#[test]
fn another_user_cannot_open_a_0600_segment() {
    if !require_root("another_user_cannot_open_a_0600_segment", "only root can start a child under another uid") {
        return;
    }
    let scope = Scope::new("perm");
    let name = scope.name("seg"); // removed when `scope` ends, failed or not
    let ch = Channel::create(&name, &Config::new()).unwrap();
    let mode = std::fs::metadata(shm_path(&name)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "segment mode {mode:o}");
    let me = ProcessId::me();
    let kid = Kid::spawn(
        "open_as_nobody",
        &[
            ("LIVENESS_SEG", name.clone()),
            ("LIVENESS_PARENT", me.pid.to_string()),
            ("LIVENESS_PARENT_START", me.start_time.to_string()),
        ],
        |cmd| {
            // std sets the gid, drops the supplementary groups (as root), then sets the uid,
            // before exec.
            cmd.uid(NOBODY).gid(NOBODY);
        },
    );
    let out = kid.finish();
    out.assert_success();
    loud(&format!(
        "permission test: child ids {}, open -> {}, Display: {:?}, raw open -> {}",
        out.report("ids"),
        out.report("open"),
        out.report("open_display"),
        out.report("raw_open")
    ));
    assert_eq!(out.report("ids"), format!("{:?}", [NOBODY; 4]), "the child did not drop to nobody");
    assert_eq!(out.report("groups"), "0", "the child kept supplementary groups");
    assert_eq!(out.report("open"), format!("PermissionDenied {name}"), "{}", out.output());
    assert!(out.report("raw_open").starts_with("PermissionDenied"), "{}", out.output());
    assert_eq!(out.report("parent_alive"), "true", "nobody can read root's /proc/PID/stat");
    // The owner itself still opens it.
    assert!(Channel::open(&name, &Config::new()).is_ok());
    ch.unlink().unwrap();
    scope.finish();
}

#[test]
fn parent_alive_and_die_with_parent_in_a_child() {
    let me = ProcessId::me();
    let env = |expected: u32| {
        vec![
            ("LIVENESS_PARENT", me.pid.to_string()),
            ("LIVENESS_PARENT_START", me.start_time.to_string()),
            ("LIVENESS_EXPECTED", expected.to_string()),
        ]
    };
    // The right parent: parent_alive says so, and die_with_parent lets the child live.
    let out = Kid::spawn("check_parent", &env(me.pid), |_| {}).finish();
    out.assert_success();
    assert_eq!(out.report("right"), "true");
    assert_eq!(out.report("wrong_start"), "false");
    assert_eq!(out.report("wrong_pid"), "false");
    assert_eq!(out.report("die_with_parent"), "Ok(())");
    // A parent that is not ours any more: die_with_parent kills at once (the race check).
    let out = Kid::spawn("check_parent", &env(me.pid + 1), |_| {}).finish();
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{}", out.output());
    assert!(!out.stdout.contains("die_with_parent="), "{}", out.output());
}

#[test]
fn die_with_parent_kills_an_orphan_when_its_parent_dies() {
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("liveness-{}-orphan", std::process::id()))
        .to_string_lossy()
        .into_owned();
    let _ = std::fs::remove_file(&file);
    // Orphans of this process's descendants are re-parented to it (not to pid 1), so that this
    // test can reap the orphan itself. Only this test makes orphans.
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) reads only its integer arguments.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0 as libc::c_ulong, 0, 0) }, 0);
    let middle = Kid::spawn("middle", &[("LIVENESS_FILE", file.clone())], |_| {});
    let t0 = Instant::now();
    let orphan = loop {
        if let Ok(s) = std::fs::read_to_string(&file) {
            let (pid, start) = s.split_once(' ').unwrap();
            break ProcessId { pid: pid.parse().unwrap(), start_time: start.parse().unwrap() };
        }
        assert!(t0.elapsed() < CHILD_TIMEOUT, "the middle process never published its child");
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = std::fs::remove_file(&file);
    let watch = PidWatch::open(&orphan).expect("the orphan-to-be is alive");
    assert_eq!(orphan.liveness(), Liveness::Alive);
    // Let the orphan reach its die_with_parent call (if it does not, the race check kills it
    // anyway), then kill its parent.
    std::thread::sleep(Duration::from_millis(100));
    let killed = Instant::now();
    sigkill(middle.pid());
    let got = PidWatch::wait_any(&[&watch], Some(Duration::from_secs(10))).unwrap();
    let latency = killed.elapsed();
    let out = middle.finish();
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{}", out.output());
    assert_eq!(got, Some(0), "the orphan outlived its parent by 10 s");
    // It is our child now (we are its subreaper), a zombie until we reap it.
    assert_eq!(orphan.liveness(), Liveness::Dead);
    let mut status = 0;
    // SAFETY: `status` is a valid, writable int; the orphan is a child of this process (re-parented
    // to its subreaper) and nothing else in this binary waits for it.
    let reaped = unsafe { libc::waitpid(orphan.pid as libc::pid_t, &mut status, 0) };
    assert_eq!(reaped, orphan.pid as libc::pid_t, "waitpid: {}", std::io::Error::last_os_error());
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL, "status {status:#x}");
    assert_eq!(orphan.liveness(), Liveness::Dead);
    loud(&format!("die_with_parent: the orphan died {latency:?} after its parent was killed"));
}

#[test]
fn a_process_whose_main_thread_exited_is_alive() {
    let kid = Kid::spawn("leader_exits", &[("LIVENESS_PARENT", std::process::id().to_string())], |_| {});
    let pid = kid.pid();
    let id = ProcessId::of(pid).unwrap();
    // Wait for the leader to exit while another thread runs.
    let t0 = Instant::now();
    loop {
        let st = proc_state(pid);
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
        if st == Some('Z') {
            assert!(threads >= 2, "the whole child exited instead of its main thread only");
            break; // a zombie leader with a live thread
        }
        assert!(t0.elapsed() < CHILD_TIMEOUT, "the child's main thread did not exit ({st:?})");
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: signal 0 sends nothing; the pid is our unreaped child's.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, 0) }, 0);
    assert_eq!(id.liveness(), Liveness::Alive, "a zombie leader with a live thread is a live process");
    let watch = PidWatch::open(&id).unwrap();
    assert!(!watch.is_dead());
    sigkill(pid);
    assert_eq!(PidWatch::wait_any(&[&watch], Some(Duration::from_secs(10))).unwrap(), Some(0));
    let out = kid.finish();
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{}", out.output());
    assert_eq!(id.liveness(), Liveness::Dead);
}
