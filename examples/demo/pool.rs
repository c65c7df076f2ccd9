//! Act 2 of the demo: a supervisor and a pool of runner processes.
//!
//! The supervisor hands tasks to `RUNNERS` runner processes over one MPMC channel (each task is
//! taken by exactly one runner) and collects their results over one MPSC channel (every runner
//! sends into it). Shutdown has three phases, and every process observes each one the same way:
//!
//! 1. **stop intake**: the supervisor closes the task channel (DRAINING). Runners finish every
//!    task already queued, then see end-of-stream. No sentinel per runner is needed.
//! 2. **drain results**: each runner sends a BYE event and drops its sender; when the last one
//!    detaches, the event channel is DRAINING and the supervisor receives the remaining results,
//!    then end-of-stream.
//! 3. **closed**: both channels are CLOSED and their names are gone from /dev/shm.

use crate::{CHILD_FLAG, Res, grouped, monotonic_ns, ms, splitmix64};
use shmq::{Config, RecvError, State};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runner processes.
const RUNNERS: usize = 3;
/// Tasks the supervisor sends.
const TASKS: u64 = 60_000;
/// Tasks per `send_batch` call.
const BATCH: usize = 64;
/// Event kinds (u32 after the task id and runner id).
const RESULT: u32 = 1;
const BYE: u32 = 2;
/// How long the supervisor waits for the runners to attach.
const ATTACH_WAIT: Duration = Duration::from_secs(10);

/// Task `id`: its id, then a pseudo-random payload of 24..=472 bytes.
fn task(id: u64) -> Vec<u8> {
    let len = 24 + (splitmix64(id) % 449) as usize;
    let mut t = Vec::with_capacity(8 + len);
    t.extend_from_slice(&id.to_le_bytes());
    let mut x = id;
    while t.len() < 8 + len {
        x = splitmix64(x);
        t.extend_from_slice(&x.to_le_bytes());
    }
    t.truncate(8 + len);
    t
}

/// The "work": a checksum of the task's payload.
fn work(payload: &[u8]) -> u64 {
    payload.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3))
}

/// An event: task id (or u64::MAX), runner index, kind, value.
fn event(task: u64, runner: u32, kind: u32, value: u64) -> [u8; 24] {
    let mut e = [0u8; 24];
    e[0..8].copy_from_slice(&task.to_le_bytes());
    e[8..12].copy_from_slice(&runner.to_le_bytes());
    e[12..16].copy_from_slice(&kind.to_le_bytes());
    e[16..24].copy_from_slice(&value.to_le_bytes());
    e
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// A runner process: take tasks until end-of-stream, send one result per task, then BYE.
pub fn runner(tasks: &str, events: &str, index: &str) -> Res<()> {
    let index: u32 = index.parse().map_err(|e| format!("runner index {index:?}: {e}"))?;
    let tasks_ch = shmq::mpmc::Channel::open(tasks, &Config::new()).map_err(|e| format!("open {tasks}: {e}"))?;
    let rx = tasks_ch.receiver().map_err(|e| format!("attach to {tasks}: {e}"))?;
    let events_ch = shmq::mpsc::Channel::open(events, &Config::new()).map_err(|e| format!("open {events}: {e}"))?;
    let tx = events_ch.sender().map_err(|e| format!("attach to {events}: {e}"))?;
    let mut buf = Vec::new();
    let mut done = 0u64;
    loop {
        match rx.recv_into(&mut buf) {
            Ok(n) if n >= 8 => {
                let id = u64_at(&buf, 0);
                tx.send(event(id, index, RESULT, work(&buf[8..n]))).map_err(|e| format!("send result: {e}"))?;
                done += 1;
            }
            Ok(n) => return Err(format!("a {n}-byte task")),
            Err(RecvError::Closed) => break, // phase 1 reached us: every queued task is done
            Err(e) => return Err(format!("recv task: {e}")),
        }
    }
    tx.send(event(u64::MAX, index, BYE, done)).map_err(|e| format!("send bye: {e}"))?;
    drop(tx); // the last runner to detach moves the event channel to DRAINING (phase 2)
    Ok(())
}

struct Runner {
    child: Child,
}

impl Drop for Runner {
    fn drop(&mut self) {
        // Never leave a runner behind: kill it if it is still running, and reap it.
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Removes both names whatever happens (NotFound is the normal case: CLOSED channels remove
/// their own names).
struct Names(Vec<String>);

impl Drop for Names {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = shmq::unlink(n);
        }
    }
}

/// The supervisor: run the pool, check every result, print the summary.
pub fn supervise() -> Res<()> {
    let t0 = Instant::now();
    let pid = std::process::id();
    let (tasks_name, events_name) = (format!("demo-{pid}-tasks"), format!("demo-{pid}-events"));
    let names = Names(vec![tasks_name.clone(), events_name.clone()]);
    let tasks = shmq::mpmc::Channel::create(&tasks_name, &Config::new().capacity(256 << 10).cell_size(128))
        .map_err(|e| format!("create {tasks_name}: {e}"))?;
    let events = shmq::mpsc::Channel::create(&events_name, &Config::new().capacity(1 << 20))
        .map_err(|e| format!("create {events_name}: {e}"))?;
    let created_ns = monotonic_ns();
    let task_tx = tasks.sender().map_err(|e| format!("task sender: {e}"))?;
    let mut event_rx = events.receiver().map_err(|e| format!("event receiver: {e}"))?;

    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut runners = Vec::new();
    for i in 0..RUNNERS {
        let child = Command::new(&exe)
            .args([CHILD_FLAG, "runner", &tasks_name, &events_name, &i.to_string()])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("start runner {i}: {e}"))?;
        runners.push(Runner { child });
    }
    let pids: Vec<u32> = runners.iter().map(|r| r.child.id()).collect();

    // Attach by name: wait until every runner is counted in both segments.
    let attached = Instant::now() + ATTACH_WAIT;
    loop {
        let (t, e) = (tasks.stats().map_err(|e| e.to_string())?, events.stats().map_err(|e| e.to_string())?);
        if t.receivers as usize == RUNNERS && e.senders as usize == RUNNERS {
            break;
        }
        if Instant::now() > attached {
            return Err(format!("runners did not attach within {ATTACH_WAIT:?} ({t:?}, {e:?})"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }

    // Hand out the tasks in batches (one claim per batch), collecting results meanwhile so
    // that neither ring blocks the other.
    let mut results: Vec<Option<(u32, u64)>> = vec![None; TASKS as usize];
    let (mut dup, mut wrong, mut byes, mut bye_total) = (0u64, 0u64, 0usize, 0u64);
    let mut per_runner = [0u64; RUNNERS];
    let mut handle = |ev: &[u8]| {
        if ev.len() != 24 {
            wrong += 1;
            return;
        }
        let (id, r, kind, v) = (u64_at(ev, 0), u32_at(ev, 8), u32_at(ev, 12), u64_at(ev, 16));
        match kind {
            RESULT if id < TASKS && (r as usize) < RUNNERS => {
                let slot = &mut results[id as usize];
                if slot.is_some() {
                    dup += 1;
                }
                if v != work(&task(id)[8..]) {
                    wrong += 1;
                }
                *slot = Some((r, v));
                per_runner[r as usize] += 1;
            }
            BYE => {
                byes += 1;
                bye_total += v;
            }
            _ => wrong += 1,
        }
    };
    let send_start = Instant::now();
    let mut next = 0u64;
    while next < TASKS {
        let batch: Vec<Vec<u8>> = (next..(next + BATCH as u64).min(TASKS)).map(task).collect();
        match task_tx.try_send_batch(&batch) {
            Ok(n) => next += n as u64,
            Err(shmq::TrySendError::Full(_)) => {}
            Err(e) => return Err(format!("send tasks: {e}")),
        }
        while let Ok(b) = event_rx.try_recv_batch(256) {
            b.iter().for_each(|v| handle(&v.to_vec()));
        }
    }
    let sent_secs = send_start.elapsed().as_secs_f64();

    // Phase 1: stop intake. Runners finish what is queued, then see end-of-stream.
    task_tx.close();
    let phase1_ns = monotonic_ns();
    // Phase 2: the runners say BYE and detach; the last one drains the event channel.
    loop {
        match event_rx.recv_batch(256) {
            Ok(b) => b.iter().for_each(|v| handle(&v.to_vec())),
            Err(RecvError::Closed) => break,
            Err(e) => return Err(format!("recv events: {e}")),
        }
    }
    let ev_stats = events.stats().map_err(|e| e.to_string())?;
    let task_stats = tasks.stats().map_err(|e| e.to_string())?;
    let mut failed = Vec::new();
    for (i, mut r) in runners.drain(..).enumerate() {
        match r.child.wait() {
            Ok(st) if st.success() => {}
            Ok(st) => failed.push(format!("runner {i} exited with {st}")),
            Err(e) => failed.push(format!("runner {i}: {e}")),
        }
    }
    // Phase 3: our last handles go; CLOSED channels remove their names.
    drop((task_tx, event_rx, tasks, events));
    let removed = names.0.iter().all(|n| !shmq::shm_path(n).exists());
    let phase3_ns = monotonic_ns();

    let missing = results.iter().filter(|r| r.is_none()).count();
    let ok = missing == 0 && dup == 0 && wrong == 0 && byes == RUNNERS && bye_total == TASKS && failed.is_empty();
    let rel = |t: Option<u64>| t.map_or("never".into(), |t| format!("+{}", ms(t.saturating_sub(created_ns))));
    println!();
    println!(
        "shmq demo, act 2: a supervisor and {RUNNERS} runner processes (pids {pids:?}); tasks over shmq::mpmc, results over shmq::mpsc"
    );
    println!(
        "tasks     {:>7} sent in batches of {BATCH} ({:.2} M tasks/s), taken by the runners {} = {}, each exactly once: {}",
        grouped(TASKS),
        TASKS as f64 / sent_secs / 1e6,
        per_runner.iter().map(|&n| grouped(n)).collect::<Vec<_>>().join(" + "),
        grouped(per_runner.iter().sum()),
        if missing == 0 && dup == 0 { "yes".to_string() } else { format!("NO ({missing} missing, {dup} twice)") },
    );
    println!(
        "results   {:>7} received and checked ({} wrong), {byes} BYE events reporting {} tasks",
        grouped(ev_stats.recv_msgs),
        wrong,
        grouped(bye_total)
    );
    println!(
        "shutdown: phase 1 tasks DRAINING {} -> runners saw end-of-stream, tasks CLOSED {}",
        rel(Some(phase1_ns)),
        rel(task_stats.closed_ns)
    );
    println!(
        "          phase 2 last runner detached, results DRAINING {} -> supervisor saw end-of-stream, results CLOSED {}",
        rel(ev_stats.draining_ns),
        rel(ev_stats.closed_ns)
    );
    println!(
        "          phase 3 handles dropped {}: both segments removed: {}; states {} / {}; discarded {} / {}",
        rel(Some(phase3_ns)),
        if removed { "yes" } else { "NO" },
        task_stats.state,
        ev_stats.state,
        task_stats.discarded_msgs,
        ev_stats.discarded_msgs
    );
    println!("act 2 wall time {:.2} s", t0.elapsed().as_secs_f64());
    let closed = task_stats.state == State::Closed && ev_stats.state == State::Closed;
    if ok && removed && closed {
        Ok(())
    } else {
        Err(format!(
            "act 2 FAILED: missing {missing}, duplicates {dup}, wrong {wrong}, byes {byes}, bye total {bye_total}, \
             removed {removed}, closed {closed}, {failed:?}"
        ))
    }
}
