//! Events and mutexes of a channel segment (issue #4), with baselines measured in the same run:
//!
//! | group | what one iteration is | contenders |
//! |---|---|---|
//! | `event_set_no_waiter` | `Event::set` + `reset` with nobody waiting (must make no system call) | shmq, `std::sync::atomic` store pair (the floor) |
//! | `mutex_uncontended` | lock + unlock, nobody else wants it | shmq::Mutex, `std::sync::Mutex` (in-process only, the floor) |
//! | `pingpong_blocking_{one_cpu,two_cpus}` | one round trip between two processes that sleep while waiting, both pinned to CPU 0, or to CPUs 0 and 1 | two shmq auto-reset events, a pair of pipes |
//!
//! The ping-pong partner is this binary re-executed (`SHMQ_BENCH_CHILD`), given the channel and
//! the pipes as inherited descriptors. Both sides block in the kernel each time (the events
//! have no spin phase), so this measures futex wake-up against pipe wake-up.
//!
//! ```text
//! cargo bench --bench sync
//! cargo bench --bench sync -- --warm-up-time 0.1 --measurement-time 0.3 --sample-size 10   # smoke
//! ```

mod common;

use common::{CHILD_ENV, inheritable, pipe};
use criterion::{Criterion, criterion_group};
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Pin the calling thread to `cpu` (None: every CPU of the machine).
fn pin(cpu: Option<usize>) {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // Online CPUs of the machine (not of our current mask, which may be one pinned CPU).
    // SAFETY: sysconf only reads a system value.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    for c in 0..n {
        if cpu.is_none_or(|want| want == c) {
            // SAFETY: CPU_SET writes one bit of `set`; `c` is below CPU_SETSIZE.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
    }
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(rc, 0, "sched_setaffinity: {}", std::io::Error::last_os_error());
}

fn child(spec: &str) -> ! {
    // Die with the bench.
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let (cpu, spec) = spec.split_once(';').expect("cpu;fds");
    pin(cpu.parse().ok());
    let fds: Vec<i32> = spec.split(',').map(|f| f.parse().expect("fd")).collect();
    // SAFETY: the parent passed these inherited descriptors for this process alone.
    let owned: Vec<OwnedFd> = fds.iter().map(|&f| unsafe { OwnedFd::from_raw_fd(f) }).collect();
    let mut it = owned.into_iter();
    let ch = shmq::Channel::from_fd(it.next().unwrap(), &shmq::Config::new()).expect("channel");
    let (ping, pong) = (ch.event(0, shmq::Reset::Auto).unwrap(), ch.event(1, shmq::Reset::Auto).unwrap());
    let mut rd = std::fs::File::from(it.next().unwrap());
    let mut wr = std::fs::File::from(it.next().unwrap());
    // Mode byte: 'e' events, 'p' pipes; then serve until the parent goes away.
    let mut mode = [0u8; 1];
    let mut b = [0u8; 1];
    while rd.read_exact(&mut mode).is_ok() {
        match mode[0] {
            b'e' => loop {
                ping.wait().unwrap();
                if ch.state().unwrap() != shmq::State::Active {
                    break; // the parent drained the channel: back to reading the next mode
                }
                pong.set().unwrap();
            },
            b'p' => loop {
                rd.read_exact(&mut b).unwrap();
                if b[0] == b'q' {
                    break;
                }
                wr.write_all(&b).unwrap();
            },
            _ => break,
        }
    }
    std::process::exit(0)
}

fn bench_local(c: &mut Criterion) {
    let ch = shmq::Channel::anonymous(&shmq::Config::new()).unwrap();
    let ev = ch.event(0, shmq::Reset::Manual).unwrap();
    let mut g = c.benchmark_group("event_set_no_waiter");
    g.bench_function("shmq_event", |b| {
        b.iter(|| {
            ev.set().unwrap();
            ev.reset().unwrap();
        })
    });
    let word = AtomicU32::new(0);
    g.bench_function("atomic_store_pair", |b| {
        b.iter(|| {
            black_box(&word).store(1, Ordering::Release);
            black_box(&word).store(0, Ordering::Release);
        })
    });
    g.finish();

    let m = ch.mutex(0).unwrap();
    let sm = std::sync::Mutex::new(0u64);
    let mut g = c.benchmark_group("mutex_uncontended");
    g.bench_function("shmq_mutex", |b| b.iter(|| drop(black_box(m.lock().unwrap()))));
    g.bench_function("std_mutex", |b| b.iter(|| drop(black_box(sm.lock().unwrap()))));
    g.finish();
}

fn bench_pingpong(c: &mut Criterion) {
    // SAFETY: sysconf only reads a system value.
    if unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } < 2 {
        return pingpong(c, "pingpong_blocking", None, None);
    }
    pingpong(c, "pingpong_blocking_one_cpu", Some(0), Some(0));
    pingpong(c, "pingpong_blocking_two_cpus", Some(0), Some(1));
}

/// One ping-pong group with this thread on `me` and the partner on `peer`.
fn pingpong(c: &mut Criterion, group: &str, me: Option<usize>, peer: Option<usize>) {
    pin(me);
    let ch = shmq::Channel::anonymous(&shmq::Config::new()).unwrap();
    let (ping, pong) = (ch.event(0, shmq::Reset::Auto).unwrap(), ch.event(1, shmq::Reset::Auto).unwrap());
    let (child_rd, mut to_child) = pipe().expect("pipe");
    let (mut from_child, child_wr) = pipe().expect("pipe");
    let fds = [inheritable(ch.as_fd()), inheritable(child_rd.as_fd()), inheritable(child_wr.as_fd())];
    let spec: Vec<String> = fds.iter().map(|f| f.as_raw_fd().to_string()).collect();
    let mut kid = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, format!("{};{}", peer.map_or("-".into(), |c| c.to_string()), spec.join(",")))
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn the ping-pong partner");
    drop((fds, child_rd, child_wr));

    let mut g = c.benchmark_group(group);
    to_child.write_all(b"e").unwrap();
    g.bench_function("shmq_events", |b| {
        b.iter_custom(|n| {
            let t0 = Instant::now();
            for _ in 0..n {
                ping.set().unwrap();
                pong.wait().unwrap();
            }
            t0.elapsed()
        })
    });
    ch.drain().unwrap(); // tells the partner to leave the event loop
    ping.set().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    to_child.write_all(b"p").unwrap();
    let mut byte = [0u8; 1];
    g.bench_function("pipes", |b| {
        b.iter_custom(|n| {
            let t0 = Instant::now();
            for _ in 0..n {
                to_child.write_all(b"x").unwrap();
                from_child.read_exact(&mut byte).unwrap();
            }
            t0.elapsed()
        })
    });
    g.finish();
    to_child.write_all(b"q").unwrap();
    drop(to_child);
    let _ = kid.wait();
    pin(None);
}

criterion_group!(benches, bench_local, bench_pingpong);

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
