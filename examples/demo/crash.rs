//! Act 3 of the demo: a runner is killed with SIGKILL in the middle of its work.
//!
//! The runner sends results into an MPSC channel, says how many, and then waits (still
//! attached, as a runner busy with a long task would be). The supervisor receives what it sent
//! and blocks in `recv()`; then it kills the runner. No sentinel, no timeout: the supervisor's
//! blocked `recv` returns `PeerDead` naming the runner, after every result the runner committed.

use crate::{CHILD_FLAG, Res, grouped};
use shmq::{Config, RecvError, mpsc};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Results the runner commits before it is killed.
const RESULTS: u32 = 1_000;

/// The runner of act 3: send `RESULTS` results, then wait to be killed.
pub fn victim(name: &str) -> Res<()> {
    let ch = mpsc::Channel::open(name, &Config::new()).map_err(|e| format!("open {name}: {e}"))?;
    let tx = ch.sender().map_err(|e| format!("attach to {name}: {e}"))?;
    for i in 0..RESULTS {
        tx.send(i.to_le_bytes()).map_err(|e| format!("send: {e}"))?;
    }
    std::thread::sleep(Duration::from_secs(60)); // "a long task": the supervisor kills us here
    Err("act 3: the runner was not killed".into())
}

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The supervisor side of act 3.
pub fn supervise() -> Res<()> {
    let name = format!("demo-{}-crash", std::process::id());
    let ch = mpsc::Channel::create(&name, &Config::new()).map_err(|e| format!("create {name}: {e}"))?;
    let mut rx = ch.receiver().map_err(|e| format!("receiver: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut runner = Reaped(
        Command::new(exe)
            .args([CHILD_FLAG, "victim", &name])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("start the runner: {e}"))?,
    );
    let pid = runner.0.id();
    let mut got = 0u32;
    while got < RESULTS {
        let m = rx.recv_timeout(Duration::from_secs(10)).map_err(|e| format!("result {got}: {e}"))?;
        if m != got.to_le_bytes() {
            return Err(format!("result {got} is wrong: {m:?}"));
        }
        got += 1;
    }
    // Block in recv() on another thread, as a supervisor loop would, and kill the runner.
    let waiter = std::thread::spawn(move || {
        let r = rx.recv();
        (Instant::now(), r)
    });
    std::thread::sleep(Duration::from_millis(20));
    let t0 = Instant::now();
    runner.0.kill().map_err(|e| format!("kill the runner: {e}"))?;
    let (t1, r) = waiter.join().map_err(|_| "the receiving thread panicked".to_string())?;
    let noticed = t1.saturating_duration_since(t0);
    let _ = runner.0.wait();
    let dead = match r {
        Err(RecvError::PeerDead(p)) => p,
        other => return Err(format!("act 3: expected PeerDead, got {other:?}")),
    };
    let stats = ch.stats().map_err(|e| e.to_string())?;
    drop(ch);
    let removed = !shmq::shm_path(&name).exists();
    let _ = shmq::unlink(&name);
    println!();
    println!("shmq demo, act 3: a runner (pid {pid}) is SIGKILLed while the supervisor is blocked in recv()");
    println!(
        "received  {} results the runner committed before it died, in order; then recv() returned PeerDead({dead}) {:.1} ms after the kill",
        grouped(u64::from(got)),
        noticed.as_secs_f64() * 1e3
    );
    println!(
        "channel   {} (the dead sender was reaped: senders {}), segment removed: {}",
        stats.state,
        stats.senders,
        if removed { "yes" } else { "NO" }
    );
    if dead.pid == pid && dead.was_sender && removed {
        Ok(())
    } else {
        Err(format!("act 3 FAILED: dead {dead:?}, removed {removed}"))
    }
}
