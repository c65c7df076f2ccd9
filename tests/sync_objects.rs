#![cfg(not(shmq_loom))] // these drive the public API, which loom builds do not have
//! The events and crash-aware mutexes of a channel segment, used by real processes: an event
//! set in one process wakes waiters in others; a mutex excludes processes from each other; and
//! a process killed while holding the mutex hands the next locker `OwnerDied` (never a silent
//! recovery, never a deadlock), after which the lock is repaired or becomes unrecoverable; a
//! `try_lock` takes such a lock over at once, without waiting, but never from a live holder.

mod common;

use common::*;
use shmq::{Channel, Config, Lock, LockError, Reset};
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
#[ignore = "entry point of the child processes of the other tests; does nothing when run directly"]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else { return };
    let name = env_var("SHMQ_IT_NAME");
    let ch = Channel::open(&name, &Config::new()).unwrap();
    match role.as_str() {
        "wait_event" => {
            let reset = if env_var("SHMQ_IT_RESET") == "auto" { Reset::Auto } else { Reset::Manual };
            let ev = ch.event(2, reset).unwrap();
            report("ready", 1);
            let t0 = Instant::now();
            assert!(ev.wait_timeout(Duration::from_secs(20)).unwrap(), "the event was never set");
            report("waited_ms", t0.elapsed().as_millis());
        }
        "count_under_mutex" => {
            let path = env_var("SHMQ_IT_FILE");
            let m = ch.mutex(1).unwrap();
            for _ in 0..500 {
                let g = m.lock().unwrap();
                assert!(!g.owner_died(), "nobody died here");
                // A non-atomic read-modify-write of a file: only exclusion keeps it exact.
                let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
                let mut s = String::new();
                f.read_to_string(&mut s).unwrap();
                let n: u64 = s.trim().parse().unwrap_or(0);
                std::thread::yield_now();
                f.seek(SeekFrom::Start(0)).unwrap();
                write!(f, "{:020}", n + 1).unwrap();
                drop(g);
            }
        }
        "lock_then_die" => {
            let m = ch.mutex(0).unwrap();
            let g = m.lock().unwrap().into_guard();
            report("locked", 1);
            std::mem::forget(g);
            // SAFETY: kill(2) on our own pid; SIGKILL ends the process at once.
            unsafe { libc::kill(std::process::id() as i32, libc::SIGKILL) };
            unreachable!();
        }
        "lock_and_hold" => {
            // Lock mutex SHMQ_IT_MUTEX, say so through the event of the same index, and hold the
            // lock until the parent's SIGKILL (bounded, should the parent never send it).
            let i: usize = env_var("SHMQ_IT_MUTEX").parse().unwrap();
            let m = ch.mutex(i).unwrap();
            let g = m.lock().unwrap();
            assert!(!g.owner_died(), "nobody died here");
            ch.event(i, Reset::Manual).unwrap().set().unwrap();
            std::mem::forget(g);
            std::thread::sleep(Duration::from_secs(60));
            panic!("lock_and_hold: the parent never killed this child");
        }
        "mutex_loop" => {
            // Lock, update the file, unlock, forever: killed by the parent at a random moment.
            let path = env_var("SHMQ_IT_FILE");
            let m = ch.mutex(2).unwrap();
            loop {
                let l = m.lock().unwrap();
                if l.owner_died() {
                    l.into_guard().mark_consistent().unwrap();
                    continue;
                }
                let n: u64 = std::fs::read_to_string(&path).unwrap().trim().parse().unwrap_or(0);
                std::fs::write(&path, format!("{:020}", n + 1)).unwrap();
                drop(l);
            }
        }
        other => panic!("unknown child role {other:?}"),
    }
}

/// A manual-reset event set by this process wakes two waiting processes; an auto-reset one
/// set once releases exactly one of two.
#[test]
fn events_wake_waiters_in_other_processes() {
    let scope = Scope::new("ev");
    let name = scope.name("ch");
    let ch = Channel::create(&name, &Config::new()).unwrap();
    let ev = ch.event(2, Reset::Manual).unwrap();
    let env = [("SHMQ_IT_NAME", name.as_str()), ("SHMQ_IT_RESET", "manual")];
    let kids = [scope.spawn("wait_event", &env), scope.spawn("wait_event", &env)];
    std::thread::sleep(Duration::from_millis(100)); // let them block
    assert!(!ev.set().unwrap(), "the event was not set before");
    for k in kids {
        let f = k.wait(CHILD_TIMEOUT);
        f.assert_success();
        eprintln!("manual event: a waiter returned after {} ms", f.report("waited_ms"));
    }
    assert!(ev.is_set().unwrap(), "a manual-reset event stays set");

    let auto = ch.event(2, Reset::Auto).unwrap();
    auto.reset().unwrap();
    let env = [("SHMQ_IT_NAME", name.as_str()), ("SHMQ_IT_RESET", "auto")];
    let kids = [scope.spawn("wait_event", &env), scope.spawn("wait_event", &env)];
    std::thread::sleep(Duration::from_millis(100));
    auto.set().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // Exactly one waiter consumed the set; the event is unset again; a second set frees the other.
    assert!(!auto.is_set().unwrap(), "an auto-reset event is consumed");
    auto.set().unwrap();
    for k in kids {
        k.wait(CHILD_TIMEOUT).assert_success();
    }
    assert!(!auto.is_set().unwrap());
    drop((ev, auto, ch));
    scope.finish();
}

/// Two processes increment a number in a file 500 times each under the mutex: exactly 1000.
#[test]
fn mutex_excludes_processes() {
    let scope = Scope::new("mx");
    let name = scope.name("ch");
    let ch = Channel::create(&name, &Config::new()).unwrap();
    let file = std::env::temp_dir().join(format!("shmq-mx-{}-{}", std::process::id(), name));
    std::fs::write(&file, format!("{:020}", 0)).unwrap();
    let env = [("SHMQ_IT_NAME", name.as_str()), ("SHMQ_IT_FILE", file.to_str().unwrap())];
    let kids = [scope.spawn("count_under_mutex", &env), scope.spawn("count_under_mutex", &env)];
    for k in kids {
        k.wait(CHILD_TIMEOUT).assert_success();
    }
    let n: u64 = std::fs::read_to_string(&file).unwrap().trim().parse().unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(n, 1000, "increments were lost: the mutex did not exclude");
    drop(ch);
    scope.finish();
}

/// The owner is SIGKILLed holding the mutex: the next locker gets `OwnerDied` promptly (not a
/// hang); after `mark_consistent` the mutex is healthy again.
#[test]
fn owner_died_then_repaired() {
    let scope = Scope::new("od");
    let name = scope.name("ch");
    let ch = Channel::create(&name, &Config::new()).unwrap();
    let f = scope.spawn("lock_then_die", &[("SHMQ_IT_NAME", &name)]).wait(CHILD_TIMEOUT);
    assert_eq!(f.report("locked"), "1", "the child took the lock before dying");
    {
        let m = ch.mutex(0).unwrap();
        let t0 = Instant::now();
        let l = m.lock_timeout(Duration::from_secs(10)).unwrap();
        eprintln!("OwnerDied after {:?}", t0.elapsed());
        let g = match l {
            Lock::OwnerDied(g) => g,
            other => panic!("expected OwnerDied, got {other:?}"),
        };
        g.mark_consistent().unwrap();
        drop(g);
        assert!(!m.is_unrecoverable().unwrap());
        assert!(matches!(m.try_lock().unwrap(), Lock::Acquired(_)), "repaired: a plain Acquired");
    }
    drop(ch);
    scope.finish();
}

/// The same, but the taker does not repair: the mutex becomes unrecoverable for everyone.
#[test]
fn owner_died_not_repaired_is_unrecoverable() {
    let scope = Scope::new("ur");
    let name = scope.name("ch");
    let ch = Channel::create(&name, &Config::new()).unwrap();
    scope.spawn("lock_then_die", &[("SHMQ_IT_NAME", &name)]).wait(CHILD_TIMEOUT);
    let m = ch.mutex(0).unwrap();
    let l = m.lock_timeout(Duration::from_secs(10)).unwrap();
    assert!(l.owner_died());
    drop(l); // no mark_consistent
    assert!(m.is_unrecoverable().unwrap());
    assert!(matches!(m.lock_timeout(Duration::from_millis(100)), Err(LockError::Unrecoverable)));
    // The other mutexes of the segment are independent.
    assert!(matches!(ch.mutex(1).unwrap().try_lock().unwrap(), Lock::Acquired(_)));
    assert!(ch.mutex(4).is_err(), "there are 4 mutexes");
    assert!(ch.event(8, Reset::Auto).is_err(), "there are 8 events");
    drop((m, ch));
    scope.finish();
}

/// A process that locks and unlocks in a loop is SIGKILLed at a random moment, 100 times: the
/// next locker never hangs and never finds the mutex silently recovered: it gets `Acquired` (the
/// victim died between unlock and lock) or `OwnerDied` (it died holding it), and after
/// `mark_consistent` the mutex works again. Most kills land while the lock is held.
#[test]
fn kill_while_holding_the_mutex_in_a_loop() {
    let scope = Scope::new("mxkill");
    let name = scope.name("ch");
    let ch = Channel::create(&name, &Config::new()).unwrap();
    let file = std::env::temp_dir().join(format!("shmq-mxkill-{}-{}", std::process::id(), name));
    std::fs::write(&file, format!("{:020}", 0)).unwrap();
    let m = ch.mutex(2).unwrap();
    let (mut died, mut acquired) = (0, 0);
    let mut rng = SplitMix64::new(std::process::id() as u64);
    let mut worst = Duration::ZERO;
    for _ in 0..100 {
        let env = [("SHMQ_IT_NAME", name.as_str()), ("SHMQ_IT_FILE", file.to_str().unwrap())];
        let child = scope.spawn("mutex_loop", &env);
        std::thread::sleep(Duration::from_micros(2_000 + rng.next_u64() % 8_000));
        let pid = child.pid() as i32;
        // SAFETY: kill(2) on our own unreaped child (its pid cannot have been reused).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = child.wait(CHILD_TIMEOUT);
        let t0 = Instant::now();
        match m.lock_timeout(Duration::from_secs(10)) {
            Ok(Lock::Acquired(_)) => acquired += 1,
            Ok(Lock::OwnerDied(g)) => {
                died += 1;
                g.mark_consistent().unwrap();
            }
            Err(e) => panic!("lock after a kill: {e}"),
        }
        worst = worst.max(t0.elapsed());
        assert!(!m.is_unrecoverable().unwrap());
    }
    eprintln!("100 kills: {died} while holding the mutex (OwnerDied), {acquired} between; slowest lock {worst:?}");
    assert!(died > 0, "no kill landed while the mutex was held: the test did not test the case");
    std::fs::remove_file(&file).unwrap();
    drop((m, ch));
    scope.finish();
}

/// Wait until our child `pid` has exited as a whole (every thread), without reaping it: a
/// zombie whose pid is still taken. (Only the *leader* being a zombie is not enough: while other
/// threads are still exiting, `/proc` shows a zombie leader of a live thread group, which shmq
/// rightly treats as alive.)
fn wait_until_zombie(pid: u32) {
    let t0 = Instant::now();
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOWAIT | libc::WNOHANG;
        // SAFETY: `info` is valid and writable; WNOWAIT leaves the child unreaped (its pid stays
        // ours), WNOHANG returns at once.
        let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        assert_eq!(rc, 0, "waitid({pid}): {}", std::io::Error::last_os_error());
        // SAFETY: waitid filled `info` (or left it zeroed: si_pid 0), and si_pid is valid for
        // SIGCHLD information.
        if unsafe { info.si_pid() } == pid as libc::pid_t {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "child {pid} has not exited 10 s after SIGKILL");
        std::thread::sleep(Duration::from_millis(1));
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("an unreaped child has a /proc entry");
    // Field 2 (the command) is in parentheses and may contain anything: parse after the last ')'.
    let state = stat[stat.rfind(')').unwrap() + 1..].split_ascii_whitespace().next().map(str::to_owned);
    assert_eq!(state.as_deref(), Some("Z"), "an exited, unreaped child is a zombie");
}

/// A child locks mutex `index` and holds it. While it lives, the parent's `try_lock` is refused
/// (`Timeout`) at once. The child is SIGKILLed (and reaped first, or left a zombie): the parent's
/// next `try_lock` returns `OwnerDied` with the guard at once, without waiting; after
/// `mark_consistent` and unlock, a plain `try_lock` is `Acquired`.
fn try_lock_takes_over_a_killed_owner(tag: &str, index: usize, reap_first: bool) {
    let scope = Scope::new(tag);
    let name = scope.name("ch");
    let ch = Channel::create(&name, &Config::new()).unwrap();
    let m = ch.mutex(index).unwrap();
    let locked = ch.event(index, Reset::Manual).unwrap();
    let idx = index.to_string();
    let child = scope.spawn("lock_and_hold", &[("SHMQ_IT_NAME", name.as_str()), ("SHMQ_IT_MUTEX", idx.as_str())]);
    if !locked.wait_timeout(Duration::from_secs(20)).unwrap() {
        child.fail("the child never took the lock");
    }
    let t0 = Instant::now();
    assert!(matches!(m.try_lock(), Err(LockError::Timeout)), "try_lock must not take a live holder's lock");
    let refused = t0.elapsed();

    let pid = child.pid();
    // SAFETY: kill(2) on our own unreaped child (its pid cannot have been reused).
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let zombie = if reap_first {
        let f = child.wait(CHILD_TIMEOUT);
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&f.status), Some(libc::SIGKILL), "{}", f.output());
        None
    } else {
        wait_until_zombie(pid);
        Some(child)
    };

    let t0 = Instant::now();
    let g = match m.try_lock().expect("try_lock after the holder was killed") {
        Lock::OwnerDied(g) => g,
        other => panic!("expected OwnerDied from try_lock, got {other:?}"),
    };
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(1), "try_lock took {took:?}: it must not wait");
    assert!(!m.is_unrecoverable().unwrap());
    assert!(matches!(m.try_lock(), Err(LockError::Timeout)), "we hold it now, and we are alive");
    g.mark_consistent().unwrap();
    drop(g);
    assert!(!m.is_unrecoverable().unwrap());
    assert!(matches!(m.try_lock().unwrap(), Lock::Acquired(_)), "repaired: a plain Acquired");
    eprintln!(
        "try_lock (mutex {index}, holder {}): refused a live holder in {refused:?}, took over in {took:?}",
        if reap_first { "reaped" } else { "a zombie" }
    );
    if let Some(child) = zombie {
        let f = child.wait(CHILD_TIMEOUT);
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&f.status), Some(libc::SIGKILL), "{}", f.output());
    }
    drop((locked, m, ch));
    scope.finish();
}

#[test]
fn try_lock_takes_over_from_a_killed_and_reaped_owner() {
    try_lock_takes_over_a_killed_owner("tlr", 3, true);
}

#[test]
fn try_lock_takes_over_from_a_killed_zombie_owner() {
    try_lock_takes_over_a_killed_owner("tlz", 1, false);
}
