//! Shared scaffolding of the loom models: one SPSC channel on the heap (control block, ring
//! bytes as loom cells, a per-word futex model) and blocking send/receive helpers.
//!
//! Every blocking call uses `Deadline::Never` and a zero spin budget, so a waiter goes straight
//! to `LoomPark::wait`, which has no timeout: a lost wake-up is a loom deadlock, i.e. a failure.

#![allow(dead_code)] // each test binary uses a different subset

use loom::sync::Arc;
use loom::sync::atomic::Ordering;
use shmq::layout::{HEAD_TX_WAITING, TAIL_CLOSED};
use shmq::loom_api::{
    Consumer, Deadline, LoomPark, LoomRing, Next, PopError, Producer, PushError, RingCtl, State, load,
};
use shmq::ring::memory::RingMemory;
use std::time::Duration;

/// Largest message the consumer accepts (only fragmented messages are checked against it).
pub const MAX_MESSAGE: u64 = 1 << 20;

/// One channel: what two processes would share in a segment.
pub struct Chan {
    pub ctl: RingCtl,
    pub mem: LoomRing,
    pub park: LoomPark,
    pub cap: usize,
}

impl Chan {
    /// A fresh ACTIVE channel with a ring of `cap` bytes (a power of two).
    pub fn new(cap: usize) -> Arc<Chan> {
        Arc::new(Chan { ctl: RingCtl::new_active(), mem: LoomRing::new(cap), park: LoomPark::new(), cap })
    }

    pub fn producer(&self) -> Producer {
        Producer::attach(&self.ctl, self.cap, Duration::ZERO).expect("producer attach")
    }

    pub fn consumer(&self) -> Consumer {
        Consumer::attach(&self.ctl, self.cap, MAX_MESSAGE, Duration::ZERO).expect("consumer attach")
    }

    /// Blocking send (no deadline).
    pub fn send(&self, p: &mut Producer, msg: &[u8]) -> Result<(), PushError> {
        p.send(&self.ctl, &self.mem, &self.park, msg, Deadline::Never)
    }

    /// Blocking receive (no deadline); the message is copied out and its space released.
    pub fn recv(&self, c: &mut Consumer) -> Result<Vec<u8>, PopError> {
        match c.next(&self.ctl, &self.mem, &self.park, Deadline::Never)? {
            Next::Whole { off, len, next } => {
                let mut buf = vec![0u8; len];
                self.mem.read_bytes(off, &mut buf);
                c.finish_whole(&self.ctl, &self.park, next, len);
                Ok(buf)
            }
            Next::Assembled => Ok(c.assembled().to_vec()),
        }
    }

    /// Receive until end-of-stream; every other error fails the model.
    pub fn recv_all(&self, c: &mut Consumer) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        loop {
            match self.recv(c) {
                Ok(m) => got.push(m),
                Err(PopError::Closed) => return got,
                Err(e) => panic!("receive failed: {e:?}"),
            }
        }
    }

    pub fn state(&self) -> State {
        load(&self.ctl.lifecycle.state).expect("valid state")
    }

    pub fn discarded_msgs(&self) -> u64 {
        self.ctl.lifecycle.discarded_msgs.load(Ordering::SeqCst)
    }

    pub fn tail_closed(&self) -> bool {
        self.ctl.producer.tail.load(Ordering::SeqCst) & TAIL_CLOSED != 0
    }
}

/// A message of `len` bytes whose content identifies it (`tag`) and each byte's position.
pub fn msg(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag.wrapping_mul(37).wrapping_add(i as u8)).collect()
}

/// Single-threaded warm-up: push and pop messages of these lengths so that the positions start
/// at a chosen offset of the ring. Costs no interleavings (only one thread runs).
pub fn advance_positions(ch: &Chan, p: &mut Producer, c: &mut Consumer, lens: &[usize]) {
    for (i, &len) in lens.iter().enumerate() {
        let m = msg(0xF0 ^ i as u8, len);
        ch.send(p, &m).expect("warm-up send");
        assert_eq!(ch.recv(c).expect("warm-up recv"), m);
    }
}

/// Run a model twice: once as written, once with the main thread yielding right after it has
/// spawned the other threads (`spawned_first == true`, see `let_spawned_run_first`).
///
/// Why: loom 0.7's DPOR does not reorder a read-modify-write before another thread's earlier
/// load when the RMW's own thread loaded the same atomic just before it (the RMW is only checked
/// against the *last* access, its own load; tokio-rs/loom#392, #166). `lifecycle::advance` used
/// to do exactly that (load, then CAS), and loom then never let a close finish before the main
/// thread's first look at the state; `advance` now starts with the CAS. Other load-then-RMW
/// pairs remain (the producer checks the tail for the closed bit, later commits with a CAS), so
/// a second run with the other threads started first widens the explored schedules cheaply.
/// `Outcomes::assert_exactly` checks that the union of both runs reaches every allowed outcome.
pub fn model<F: Fn(bool) + Send + Sync + 'static>(f: F) {
    let f = std::sync::Arc::new(f);
    for spawned_first in [false, true] {
        let f = f.clone();
        loom::model(move || f(spawned_first));
    }
}

/// Call in the main thread after spawning: with `true`, give way so the spawned threads start.
pub fn let_spawned_run_first(yes: bool) {
    if yes {
        loom::thread::yield_now();
    }
}

/// The outcomes a model produced, over all of loom's executions. Each execution checks its own
/// outcome against the allowed ones; `assert_exactly` then checks that every allowed outcome
/// was actually reached, so a model cannot pass by never exercising the race it describes.
#[derive(Clone, Default)]
pub struct Outcomes(std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>);

impl Outcomes {
    pub fn record(&self, outcome: String) {
        self.0.lock().unwrap().insert(outcome);
    }

    /// Every allowed outcome was observed, and nothing else.
    pub fn assert_exactly(&self, allowed: &[&str]) {
        let seen = self.0.lock().unwrap();
        let allowed: std::collections::BTreeSet<String> = allowed.iter().map(|s| s.to_string()).collect();
        assert_eq!(*seen, allowed, "outcomes observed (left) differ from the allowed ones (right)");
    }
}

/// The consumer's position (head word without its flag bit).
pub fn head_pos(ch: &Chan) -> u64 {
    ch.ctl.consumer.head.load(Ordering::SeqCst) & !HEAD_TX_WAITING
}

/// Which sleep / wake paths a model reached: for each execution, how many times `rx_seq` and
/// `tx_seq` were bumped. A producer commit bumps `rx_seq` only when the consumer had announced
/// that it sleeps (and a consumer release bumps `tx_seq` only for a sleeping producer), so a
/// non-zero count proves that the model reached the blocking path and not only the fast path.
#[derive(Clone, Default)]
pub struct WakeCoverage(std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<(u32, u32)>>>);

impl WakeCoverage {
    /// Call at the end of each execution, after every thread has been joined.
    pub fn record(&self, ch: &Chan) {
        let w = (ch.ctl.wake.rx_seq.load(Ordering::SeqCst), ch.ctl.wake.tx_seq.load(Ordering::SeqCst));
        self.0.lock().unwrap().insert(w);
    }

    /// Some execution woke a sleeping consumer (`rx`) / a sleeping producer (`tx`).
    pub fn assert_reached(&self, rx: bool, tx: bool) {
        let seen = self.0.lock().unwrap();
        if rx {
            assert!(seen.iter().any(|w| w.0 > 0), "no execution woke a sleeping consumer: {seen:?}");
        }
        if tx {
            assert!(seen.iter().any(|w| w.1 > 0), "no execution woke a sleeping producer: {seen:?}");
        }
    }
}

/// A spawned producer thread sends `msgs` (each must be accepted) while the calling thread
/// receives `n` messages; returns what was received, after joining the producer.
pub fn stream(
    ch: &Arc<Chan>,
    mut p: Producer,
    c: &mut Consumer,
    msgs: Vec<Vec<u8>>,
    n: usize,
    spawned_first: bool,
) -> Vec<Vec<u8>> {
    let tx = {
        let ch = ch.clone();
        loom::thread::spawn(move || {
            for m in &msgs {
                ch.send(&mut p, m).expect("send on an open channel");
            }
        })
    };
    let_spawned_run_first(spawned_first);
    let got = (0..n).map(|_| ch.recv(c).expect("recv on an open channel")).collect();
    tx.join().unwrap();
    got
}
