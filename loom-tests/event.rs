//! Loom models of the cross-process event (`src/event.rs`): a set is never lost by a waiter that
//! is going to sleep, it publishes the setter's writes, an auto-reset set is consumed by exactly
//! one waiter (and a second set releases the other), and a manual-reset set releases every waiter.
//!
//! Run with
//! `RUSTFLAGS="--cfg shmq_loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom_event`.
//!
//! Waits use `Deadline::Never` and `LoomPark` has no timeouts, so a lost wake-up is a loom
//! deadlock, i.e. a failure.
#![cfg(shmq_loom)]

mod common;

use common::{Outcomes, let_spawned_run_first, model};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use shmq::event::{EventWords, Reset};
use shmq::loom_api::{Deadline, LoomPark};

/// One event as two processes would share it, plus a payload the setter writes before `set`.
struct Ev {
    words: EventWords,
    park: LoomPark,
    payload: UnsafeCell<u32>,
}

// SAFETY: the payload is written by the setter before `set` and read by a waiter after its wait
// returned; loom's UnsafeCell checks that those accesses are ordered (else it reports a race).
unsafe impl Sync for Ev {}

impl Ev {
    fn new() -> Arc<Ev> {
        Arc::new(Ev { words: EventWords::new(), park: LoomPark::new(), payload: UnsafeCell::new(0) })
    }

    fn wait(&self, reset: Reset) -> bool {
        self.words.wait(&self.park, reset, Deadline::Never).expect("valid event")
    }

    fn set(&self) {
        self.words.set(&self.park).expect("valid event");
    }

    /// Whether any waiter went to sleep and was woken (seq is bumped only for announced waiters).
    fn slept(&self) -> &'static str {
        if self.words.seq.load(Ordering::SeqCst) > 0 { "waiter slept" } else { "waiter never slept" }
    }
}

/// One waiter, one setter, for both modes: the waiter returns (no lost wake-up) and sees the
/// payload written before the set (SYNC(event-set)). Both the fast path and the sleeping path
/// are reached.
fn set_then_wait(reset: Reset) {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move |spawned_first| {
        let ev = Ev::new();
        let waiter = {
            let ev = ev.clone();
            loom::thread::spawn(move || {
                assert!(ev.wait(reset));
                // SAFETY: ordered after the setter's write by the set → wait synchronisation.
                ev.payload.with(|p| unsafe { *p })
            })
        };
        let_spawned_run_first(spawned_first);
        // SAFETY: the waiter reads the payload only after its wait returned, i.e. after `set`.
        ev.payload.with_mut(|p| unsafe { *p = 42 });
        ev.set();
        assert_eq!(waiter.join().unwrap(), 42);
        let expect_set = reset == Reset::Manual;
        assert_eq!(ev.words.is_set().unwrap(), expect_set, "auto-reset is consumed, manual stays set");
        seen.record(ev.slept().to_string());
    });
    outcomes.assert_exactly(&["waiter never slept", "waiter slept"]);
}

#[test]
fn auto_reset_set_wait_no_lost_wakeup() {
    set_then_wait(Reset::Auto);
}

#[test]
fn manual_reset_set_wait_no_lost_wakeup() {
    set_then_wait(Reset::Manual);
}

/// Two auto-reset waiters, one set: exactly one returns (the other is still waiting, and the
/// event is consumed); a second set releases the other. Either waiter may be the first.
#[test]
fn auto_reset_one_set_releases_exactly_one_waiter() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move |spawned_first| {
        let ev = Ev::new();
        let done = Arc::new(AtomicUsize::new(0));
        let first = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = [1usize, 2]
            .into_iter()
            .map(|id| {
                let (ev, done, first) = (ev.clone(), done.clone(), first.clone());
                loom::thread::spawn(move || {
                    assert!(ev.wait(Reset::Auto));
                    let _ = first.compare_exchange(0, id, Ordering::SeqCst, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        let_spawned_run_first(spawned_first);
        ev.set();
        while done.load(Ordering::SeqCst) == 0 {
            loom::thread::yield_now();
        }
        // One set, one return: the other waiter must still be waiting, the event consumed.
        assert_eq!(done.load(Ordering::SeqCst), 1, "one set released two waiters");
        assert!(!ev.words.is_set().unwrap(), "the returning waiter consumed the set");
        ev.set();
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(done.load(Ordering::SeqCst), 2);
        assert!(!ev.words.is_set().unwrap());
        seen.record(format!("first: waiter {}", first.load(Ordering::SeqCst)));
    });
    outcomes.assert_exactly(&["first: waiter 1", "first: waiter 2"]);
}

/// Two manual-reset waiters, one set: both return, and the event stays set.
#[test]
fn manual_reset_one_set_releases_every_waiter() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move |spawned_first| {
        let ev = Ev::new();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let ev = ev.clone();
                loom::thread::spawn(move || assert!(ev.wait(Reset::Manual)))
            })
            .collect();
        let_spawned_run_first(spawned_first);
        ev.set();
        for w in waiters {
            w.join().unwrap();
        }
        assert!(ev.words.is_set().unwrap());
        seen.record(ev.slept().to_string());
    });
    outcomes.assert_exactly(&["waiter never slept", "waiter slept"]);
}
