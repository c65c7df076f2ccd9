//! How fast a blocked receiver learns that its only sender was SIGKILLed (issue #4).
//!
//! Per run: an anonymous SPSC channel, a child process (this binary re-executed with
//! `SHMQ_BENCH_CHILD=sender`) that attaches as the sender, sends one message and then sleeps;
//! a thread of this process that receives it and then blocks in `recv()` with no deadline. The
//! parent sends SIGKILL to the child and measures from just before `kill(2)` until the receiver
//! thread's `recv` returned `PeerDead` (it records its own return time). Nothing reaps the
//! child before the receiver returns: shmq must see the zombie as dead by itself.
//!
//! ```text
//! cargo bench --bench peer_death              # 1000 runs (about 15 s)
//! cargo bench --bench peer_death -- 50        # 50 runs (CI smoke)
//! ```
//!
//! Prints the median, p90, p99 and maximum. Target (issue #4): median ≤ 10 ms, p99 ≤ 50 ms.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "SHMQ_BENCH_CHILD";

fn main() {
    if let Ok(role) = std::env::var(CHILD_ENV) {
        child(&role);
    }
    // `cargo bench` passes `--bench`; the first plain number is the run count.
    let runs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1000);
    let mut lat = Vec::with_capacity(runs);
    let t = Instant::now();
    for _ in 0..runs {
        lat.push(one_run());
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "peer death: a receiver blocked in recv(), its only sender SIGKILLed; {runs} runs in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    println!("| median | p90 | p99 | max | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | median ≤ 10 ms: {}, p99 ≤ 50 ms: {} |",
        ms(pct(0.5)),
        ms(pct(0.9)),
        ms(pct(0.99)),
        ms(lat[lat.len() - 1]),
        if pct(0.5) <= Duration::from_millis(10) { "met" } else { "NOT met" },
        if pct(0.99) <= Duration::from_millis(50) { "met" } else { "NOT met" },
    );
}

fn one_run() -> Duration {
    let ch = shmq::Channel::anonymous(&shmq::Config::new()).expect("channel");
    let fd = ch.inheritable_fd().expect("fd");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .env(CHILD_ENV, format!("sender:{}", fd.as_raw_fd()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    drop(fd);
    let mut rx = ch.receiver().expect("receiver");
    // The child's message says it is attached and running.
    assert_eq!(rx.recv().expect("hello from the child"), b"attached");
    let receiver = std::thread::spawn(move || {
        let r = rx.recv();
        (Instant::now(), r)
    });
    std::thread::sleep(Duration::from_millis(2)); // let the receiver block
    let t0 = Instant::now();
    // SAFETY: kill(2) with a pid we spawned and have not reaped (so it cannot have been reused).
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    let (t1, r) = receiver.join().expect("receiver thread");
    assert!(matches!(r, Err(shmq::RecvError::PeerDead(_))), "expected PeerDead, got {r:?}");
    let _ = child.wait();
    let mut out = String::new();
    let _ = child.stdout.take().map(|mut s| s.read_to_string(&mut out));
    t1.saturating_duration_since(t0)
}

fn child(role: &str) -> ! {
    let fd: i32 = role.strip_prefix("sender:").and_then(|f| f.parse().ok()).expect("child role");
    // Die with the bench, should it be interrupted.
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // SAFETY: the parent passed this inherited descriptor for this process alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let ch = shmq::Channel::from_fd(fd, &shmq::Config::new()).expect("open channel");
    let mut tx = ch.sender().expect("sender");
    tx.send(b"attached").expect("send");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(60)); // until SIGKILL
    }
}
