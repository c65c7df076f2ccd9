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

mod common;

use common::child::{Child, serve};
use common::{
    BoxError, Contender, Fields, KIB, MIB, Peer, ProcPeer, Report, Runner, ThreadPeer, Workload, contender,
    inheritable, name_of, opt_field, payload, pipe,
};
use criterion::Throughput;
use shmq::{Channel, Config};
use std::hint::{black_box, spin_loop};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Ring capacity of the round-trip channels (one message in flight).
const RT_RING: usize = 64 * KIB;
/// Size of the round-trip messages.
const RT_SIZE: usize = 64;

fn main() {
    // A child never runs criterion: check the role before anything parses the arguments.
    common::child::run_if_child("spsc", Spec::decode, child::run);
    // The interleaved check's calibration starts from 1 iteration.
    let report = common::measure(workloads, 1);
    summary::print(&report);
}

// ------------------------------------------------------------------------------------------
// Workloads, contenders, and how they are run
// ------------------------------------------------------------------------------------------

fn workloads() -> Vec<Workload> {
    let two_cpus = common::two_cpus();
    let mut all = Vec::new();
    // Throughput: receiver (this thread) on CPU 0, sender on CPU 1: the same placement for every
    // contender, and the parallel one that DESIGN-NOTES §6 assumes. On a loaded machine pinning
    // hurts (each side shares its CPU with the load; 3-5x slower at 1 MiB, seen at loadavg 3.5):
    // SHMQ_BENCH_UNPINNED=1 leaves placement to the scheduler.
    let tput_pin = common::pin_pair();
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
            let peer = spawn_child(Role::TputShmq, size, cpu, None, vec![fd], vec![ch]);
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
            let peer = spawn_child(Role::TputStream, size, cpu, None, vec![fd], vec![]);
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
            let peer = spawn_child(Role::TputStream, size, cpu, None, vec![fd], vec![]);
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
    (spawn_child(role, RT_SIZE, Some(cpu), spin, fds, vec![ping, pong]), tx, rx)
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
            let peer = spawn_child(Role::EchoStream, RT_SIZE, Some(peer_cpu), None, fds, vec![]);
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
// Child processes
// ------------------------------------------------------------------------------------------

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

/// The bench's part of a child's spec (`SHMQ_BENCH_CHILD`, `key=value;...`; see common).
#[derive(Debug)]
struct Spec {
    role: Role,
    size: usize,
    cpu: Option<usize>,
    /// shmq spin budget; `None` = the default of `Config::new()`.
    spin: Option<Duration>,
}

impl Spec {
    fn encode(&self) -> String {
        format!(
            "role={};size={};cpu={};spin_ns={}",
            name_of(&ROLES, &self.role),
            self.size,
            opt_field(self.cpu),
            opt_field(self.spin.map(|s| s.as_nanos()))
        )
    }

    fn decode(f: &Fields) -> Result<Spec, String> {
        Ok(Spec {
            role: f.named("role", &ROLES)?,
            size: f.num("size")? as usize,
            cpu: f.opt("cpu")?.map(|c| c as usize),
            spin: f.opt("spin_ns")?.map(Duration::from_nanos),
        })
    }
}

/// Start a child running `role`. `fds` are inheritable descriptors for it (closed here once
/// the child has them). `watch` are the parent's shmq channels shared with the child: if the
/// child dies, they are closed (CLOSING), so that the parent's blocked or polling calls fail
/// instead of waiting forever (shmq does not notice a dead peer by itself yet).
fn spawn_child(
    role: Role,
    size: usize,
    cpu: Option<usize>,
    spin: Option<Duration>,
    fds: Vec<OwnedFd>,
    watch: Vec<Channel>,
) -> ProcPeer {
    let on_death = move || {
        for ch in watch {
            let _ = ch.close_now();
        }
    };
    ProcPeer::spawn(Spec { role, size, cpu, spin }.encode(), fds, Box::new(on_death))
}

mod child {
    use super::*;

    pub fn run(spec: Spec, Child { mut ctl, mut fds }: Child) -> Result<(), BoxError> {
        let mut fd = || fds.take();

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
}

// ------------------------------------------------------------------------------------------
// Summary table
// ------------------------------------------------------------------------------------------

mod summary {
    use super::*;
    use crate::common::{Est, Ratio, median, ratio_cell, ratio_range, si};

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
            cells.extend(l.ratios.iter().map(|&r| ratio_cell(r)));
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
        common::print_table(table);
    }

    pub fn print(report: &Report) {
        let rows = rows();
        let crit: Vec<[Option<Est>; 4]> =
            rows.iter().map(|r| r.ids.map(|id| id.and_then(|id| report.estimate(id)))).collect();
        let have_crit = crit.iter().any(|f| f.iter().any(Option::is_some));
        if !have_crit && report.checks.is_empty() {
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
        if !report.checks.is_empty() {
            report.print_interleaved_heading();
            let lines: Vec<Line<'_>> = rows
                .iter()
                .map(|row| {
                    let per = row.ids.map(|id| id.and_then(|id| report.per_round(id)));
                    Line {
                        row,
                        vals: per.map(|p| p.map(|p| cell(row.kind, median(p), None))),
                        ratios: [1, 2, 3].map(|b| {
                            let (s, x) = (per[0]?, per[b]?);
                            let rs: Vec<f64> = s.iter().zip(x).map(|(&s, &x)| ratio(row.kind, s, x)).collect();
                            Some(ratio_range(&rs))
                        }),
                    }
                })
                .filter(|l| l.vals.iter().any(Option::is_some))
                .collect();
            print_table(&lines);
        }
        let tput = if common::unpinned() { "placed by the scheduler" } else { "pinned to CPUs 0/1" };
        report.print_footer(&format!("throughput groups {tput}"));
    }
}
