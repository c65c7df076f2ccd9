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

mod common;

use common::child::{Child, serve};
use common::{
    BoxError, Contender, Fields, KIB, MIB, Peer, ProcPeer, Report, ThreadPeer, Workload, contender, inheritable,
    name_of, opt_field, payload, pipe,
};
use criterion::Throughput;
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Producers in the 4→1 and 4→4 groups, consumers in 4→4.
const PRODUCERS: usize = 4;
const CONSUMERS: usize = 4;
/// Messages per `send_batch` call of the batched contenders.
const SEND_BATCH: usize = 32;
/// `max` of the batched receivers' `recv_batch`.
const RECV_BATCH: usize = 128;
/// crossbeam-channel bound (messages), the same in every group.
const CB_BOUND: usize = 1024;

fn main() {
    // A child never runs criterion: check the role before anything parses the arguments.
    common::child::run_if_child("multi", ChildSpec::decode, child::run);
    // The interleaved check's calibration starts from 64 messages.
    let report = common::measure(workloads, 64);
    summary::print(&report);
}

// ------------------------------------------------------------------------------------------
// Workloads, contenders, and how they are run
// ------------------------------------------------------------------------------------------

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

/// Throughput per iteration: one message of `size` bytes.
fn per_message(size: usize) -> Option<Throughput> {
    Some(Throughput::ElementsAndBytes { elements: 1, bytes: size as u64 })
}

fn workloads() -> Vec<Workload> {
    let mut all = Vec::new();
    for case in CASES {
        all.push(Workload {
            group: format!("m4to1_{}", case.label),
            throughput: per_message(case.size),
            pin: None,
            contenders: m4to1_contenders(case),
        });
    }
    for case in CASES {
        all.push(Workload {
            group: format!("m4to4_{}", case.label),
            throughput: per_message(case.size),
            pin: None,
            contenders: m4to4_contenders(case),
        });
    }
    let pin = common::pin_pair();
    all.push(Workload {
        group: "m1to1_64B".into(),
        throughput: per_message(64),
        pin,
        contenders: m1to1_contenders(CASES[0], pin),
    });
    all
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
            ProcPeer::spawn(spec.encode(), vec![fd], Box::new(on_death))
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
                ProcPeer::spawn(spec.encode(), fds, closer(&ch))
            })
            .collect();
        drop(markers_w); // the consumers hold the write end now
        let producers = (0..PRODUCERS)
            .map(|_| {
                let fds = vec![ch.inheritable_fd().expect("inheritable fd")];
                let spec = ChildSpec { role: Role::MpmcSend, size: case.size, batch, cpu: None };
                ProcPeer::spawn(spec.encode(), fds, closer(&ch))
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
            let peer = ProcPeer::spawn(spec.encode(), vec![fd], Box::new(on_death));
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
// Child processes
// ------------------------------------------------------------------------------------------

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
/// What the parent chooses for a child: the bench's part of its spec (`SHMQ_BENCH_CHILD`,
/// `key=value;...`; see common).
#[derive(Clone, Copy, Debug)]
struct ChildSpec {
    role: Role,
    /// Message size in bytes.
    size: usize,
    /// Messages per `send_batch` (producers) / batched receive if > 1 (consumers); 1 = plain.
    batch: usize,
    cpu: Option<usize>,
}

impl ChildSpec {
    fn encode(&self) -> String {
        format!(
            "role={};size={};batch={};cpu={}",
            name_of(&ROLES, &self.role),
            self.size,
            self.batch,
            opt_field(self.cpu)
        )
    }

    fn decode(f: &Fields) -> Result<ChildSpec, String> {
        Ok(ChildSpec {
            role: f.named("role", &ROLES)?,
            size: f.num("size")? as usize,
            batch: f.num("batch")? as usize,
            cpu: f.opt("cpu")?.map(|c| c as usize),
        })
    }
}

mod child {
    use super::*;

    pub fn run(c: ChildSpec, Child { mut ctl, mut fds }: Child) -> Result<(), BoxError> {
        let mut fd = || fds.take();
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
}

// ------------------------------------------------------------------------------------------
// Summary table
// ------------------------------------------------------------------------------------------

mod summary {
    use super::*;
    use crate::common::{Ratio, median, print_table, ratio_cell, ratio_range, si};

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

    fn rate(ns: f64) -> String {
        si(1e9 / ns)
    }

    fn mbps(ns: f64, size: usize) -> String {
        format!("{:.0}", 1e9 / ns * size as f64 / 1e6)
    }

    const HEADER: [&str; 10] =
        ["workload", "contender", "msg/s", "MB/s", "baseline", "msg/s", "MB/s", "ratio", "target", "met"];

    /// A table line from the two times (ns per message) and the ratio (with its range).
    fn line(row: &Row, shmq: Option<f64>, base: Option<f64>, ratio: Option<Ratio>) -> Vec<String> {
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
            ratio_cell(ratio),
            row.target.map_or_else(String::new, |t| format!(">= {t:.1}x")),
            match (row.target, ratio) {
                (Some(t), Some((r, _))) => (if r >= t { "yes" } else { "NO" }).to_string(),
                _ => String::new(),
            },
        ]
    }

    pub fn print(report: &Report) {
        let rows = rows();
        let median_of = |id: &str| report.estimate(id).map(|e| e.median);
        let crit: Vec<(Option<f64>, Option<f64>)> = rows.iter().map(|r| (median_of(r.id), median_of(r.base))).collect();
        let have_crit = crit.iter().any(|(a, b)| a.is_some() || b.is_some());
        if !have_crit && report.checks.is_empty() {
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
        if !report.checks.is_empty() {
            report.print_interleaved_heading();
            let mut table = vec![HEADER.iter().map(|h| h.to_string()).collect()];
            for row in &rows {
                let (s, b) = (report.per_round(row.id), report.per_round(row.base));
                if s.is_none() && b.is_none() {
                    continue;
                }
                let ratio = s.zip(b).map(|(s, b)| {
                    let rs: Vec<f64> = s.iter().zip(b).map(|(&s, &b)| b / s).collect();
                    ratio_range(&rs)
                });
                table.push(line(row, s.map(median), b.map(median), ratio));
            }
            print_table(table);
        }
        let one = if common::unpinned() { "placed by the scheduler" } else { "pinned to CPUs 0/1" };
        report.print_footer(&format!(
            "4→1 and 4→4 placed by the scheduler, 1→1 {one}; send_batch = {SEND_BATCH} per call, recv_batch max \
             {RECV_BATCH}"
        ));
    }
}
