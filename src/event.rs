//! A cross-process event (a flag that processes wait for), the lock-free core.
//!
//! [`EventWords`] is three 32-bit words that live in shared memory (`#[repr(C)]`, shim atomics);
//! an all-zero block is a valid *unset* event, so a freshly created segment needs no
//! initialisation. Every operation is a method generic over [`Park`], so production code passes
//! the shared futex (`OsPark`) and loom models pass `LoomPark`.
//!
//! Two reset modes ([`Reset`]), chosen by the caller. The mode is not stored in the words: it is
//! part of how the segment that holds them was created, and every process must use the same one.
//!
//! * **Auto-reset**: [`set`](EventWords::set) makes the event SET; exactly one waiting call
//!   consumes it (one CAS from SET to UNSET) and returns `true`; every other waiter keeps
//!   waiting. Sets do not accumulate: a set on a SET event is a no-op (Win32 `SetEvent`).
//! * **Manual-reset**: the event stays SET until [`reset`](EventWords::reset); every waiter that
//!   sees it SET returns `true`. A `reset` racing a `set` may leave waiters that had not yet run
//!   asleep (there are no "pulse" semantics; use auto-reset for hand-offs).
//!
//! | word | values | written by | how |
//! |---|---|---|---|
//! | `state` | 0 UNSET, 1 SET; anything else is `Corrupt` (never overwritten) | `set` (→ SET), an auto-reset waiter (SET → UNSET), `reset` (SET → UNSET) | CAS only, from a validated value |
//! | `seq` | event count, wraps | `set` when `waiters != 0` (`wait::wake_counted`) | Release `fetch_add`, then FUTEX_WAKE |
//! | `waiters` | waiters asleep or about to sleep on `seq` (may over-count) | sleepers (+1, `wait::sleep_counted`), `set` (swap to 0 when it wakes) | RMW |
//!
//! | pair | release side | acquire side | what it carries |
//! |---|---|---|---|
//! | **SYNC(event-set)** | the setter's Release CAS of `state` to SET (a CAS SET → SET too, so the last setter is always in the release sequence) | an auto-reset waiter's Acquire CAS SET → UNSET; a manual-reset waiter's / `is_set`'s Acquire load | everything the setter wrote before `set` |
//! | **SYNC(waiters)** | `set`: state CAS, SeqCst fence, load `waiters`, Release bump of `seq` | waiter: Acquire load of `seq`, `waiters += 1`, SeqCst fence, re-check `state` | no lost wake-up (see `wait::sleep_counted`) |
//!
//! Why no wake-up is lost: a waiter reads `seq`, announces itself in `waiters`, fences, and
//! sleeps only if `state` is still UNSET, and only while `seq` still holds what it read. The
//! setter writes `state`, fences, and bumps `seq` + wakes if it sees a waiter. The two SeqCst
//! fences forbid both sides missing each other's write. `set` with nobody waiting costs a CAS, a
//! fence and a load: no system call.

use crate::error::Corrupt;
use crate::futex::Wake;
use crate::sync::{AtomicU32, Ordering};
use crate::wait::{Deadline, Park, sleep_counted, wake_counted};

/// `state`: not set.
pub const UNSET: u32 = 0;
/// `state`: set.
pub const SET: u32 = 1;

/// How a set event is consumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reset {
    /// One waiting call consumes each set; the event is UNSET again when it returns.
    Auto,
    /// The event stays set (every waiter returns) until `reset`.
    Manual,
}

/// The shared words of one event. All zero = unset, nobody waiting.
#[repr(C)]
#[derive(Debug)]
pub struct EventWords {
    /// UNSET or SET.
    pub state: AtomicU32,
    /// Futex word waiters sleep on (an event count).
    pub seq: AtomicU32,
    /// Waiters asleep or about to sleep on `seq`.
    pub waiters: AtomicU32,
}

#[cfg(not(shmq_loom))]
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(offset_of!(EventWords, state) == 0);
    assert!(offset_of!(EventWords, seq) == 4);
    assert!(offset_of!(EventWords, waiters) == 8);
    assert!(size_of::<EventWords>() == 12);
    assert!(align_of::<EventWords>() == 4);
};

impl Default for EventWords {
    fn default() -> EventWords {
        EventWords::new()
    }
}

fn check(state: u32) -> Result<u32, Corrupt> {
    match state {
        UNSET | SET => Ok(state),
        v => Err(Corrupt::new(format!("event state word is {v:#x} (expected 0 or 1)"))),
    }
}

impl EventWords {
    /// An unset event (the same as an all-zero block of shared memory).
    pub fn new() -> EventWords {
        EventWords { state: AtomicU32::new(UNSET), seq: AtomicU32::new(0), waiters: AtomicU32::new(0) }
    }

    /// Set the event and wake the waiters, if there are any (no system call otherwise).
    /// Returns whether the event was already set (then this call changed nothing, but it still
    /// publishes the caller's writes to the next waiter that sees the event set).
    ///
    /// An auto-reset event wakes every sleeper but exactly one of them consumes the set; the
    /// others go back to sleep. A corrupt state word is left as it is and reported.
    pub fn set<P: Park>(&self, park: &P) -> Result<bool, Corrupt> {
        let mut cur = check(self.state.load(Ordering::Relaxed))?;
        loop {
            // SYNC(event-set): Release CAS (SET → SET included, so this setter heads the release
            // sequence); pairs with the waiters' Acquire CAS / load of `state`.
            match self.state.compare_exchange(cur, SET, Ordering::Release, Ordering::Relaxed) {
                Ok(prev) => {
                    // SYNC(waiters): fence, then `waiters`, inside wake_counted.
                    wake_counted(park, &self.seq, &self.waiters);
                    return Ok(prev == SET);
                }
                Err(now) => cur = check(now)?,
            }
        }
    }

    /// Make the event UNSET. Returns whether it was set. Wakes nobody.
    pub fn reset(&self) -> Result<bool, Corrupt> {
        // Relaxed is enough: a reset publishes nothing, and a waiter that saw SET before it
        // has already synchronised with the setter.
        match self.state.compare_exchange(SET, UNSET, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => Ok(true),
            Err(now) => check(now).map(|_| false),
        }
    }

    /// Whether the event is set now (does not consume an auto-reset event).
    pub fn is_set(&self) -> Result<bool, Corrupt> {
        // SYNC(event-set): Acquire load.
        Ok(check(self.state.load(Ordering::Acquire))? == SET)
    }

    /// One attempt to take the event: auto-reset consumes a set (CAS SET → UNSET), manual-reset
    /// only looks.
    fn take(&self, reset: Reset) -> Result<bool, Corrupt> {
        match reset {
            // SYNC(event-set): Acquire CAS; exactly one waiter wins each SET.
            Reset::Auto => match self.state.compare_exchange(SET, UNSET, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => Ok(true),
                Err(now) => check(now).map(|_| false),
            },
            Reset::Manual => self.is_set(),
        }
    }

    /// Wait until the event is set, or `deadline`. `Ok(true)`: the event was set (and, for an
    /// auto-reset event, this call consumed it); `Ok(false)`: the deadline passed first
    /// (`Deadline::Now`: one attempt, no sleep). Spurious futex returns are re-checked.
    pub fn wait<P: Park>(&self, park: &P, reset: Reset, deadline: Deadline) -> Result<bool, Corrupt> {
        loop {
            if self.take(reset)? {
                return Ok(true);
            }
            if deadline.passed() {
                return Ok(false);
            }
            // SYNC(waiters): read seq, announce, fence, re-check the state, sleep while seq holds.
            let woke = sleep_counted(park, &self.seq, &self.waiters, deadline, || {
                Ok::<bool, Corrupt>(check(self.state.load(Ordering::Relaxed))? == UNSET)
            })?;
            if woke == Wake::TimedOut {
                // One last look: a set that raced the timeout still counts.
                return self.take(reset);
            }
        }
    }
}

#[cfg(all(test, not(shmq_loom)))]
mod tests {
    use super::*;
    use crate::wait::OsPark;
    use crate::wait::test_support::CountingPark;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};
    use std::time::{Duration, Instant};

    fn soon(ms: u64) -> Deadline {
        Deadline::after(Duration::from_millis(ms))
    }

    /// Wait (bounded) until some thread has announced itself as a waiter.
    fn until_waiting(ev: &EventWords) {
        let t0 = Instant::now();
        while ev.waiters.load(StdOrdering::SeqCst) == 0 {
            assert!(t0.elapsed() < Duration::from_secs(10), "the waiter never announced itself");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20)); // let it reach FUTEX_WAIT
    }

    #[test]
    fn zeroed_words_are_an_unset_event() {
        let ev = EventWords::default();
        assert_eq!(ev.is_set(), Ok(false));
        assert_eq!(ev.wait(&OsPark, Reset::Auto, Deadline::Now), Ok(false));
        assert_eq!(ev.wait(&OsPark, Reset::Manual, Deadline::Now), Ok(false));
    }

    #[test]
    fn set_without_a_waiter_makes_no_system_call() {
        let ev = EventWords::new();
        let park = CountingPark::default();
        assert_eq!(ev.set(&park), Ok(false));
        assert_eq!(ev.set(&park), Ok(true)); // already set: a no-op
        assert_eq!(park.wakes.load(StdOrdering::SeqCst), 0);
        assert_eq!(ev.seq.load(StdOrdering::SeqCst), 0);
        assert!(ev.is_set().unwrap());
    }

    #[test]
    fn auto_reset_is_consumed_by_exactly_one_wait() {
        let ev = EventWords::new();
        ev.set(&OsPark).unwrap();
        assert_eq!(ev.wait(&OsPark, Reset::Auto, Deadline::Now), Ok(true));
        assert_eq!(ev.is_set(), Ok(false));
        assert_eq!(ev.wait(&OsPark, Reset::Auto, Deadline::Now), Ok(false));
    }

    #[test]
    fn manual_reset_stays_set_until_reset() {
        let ev = EventWords::new();
        ev.set(&OsPark).unwrap();
        for _ in 0..3 {
            assert_eq!(ev.wait(&OsPark, Reset::Manual, Deadline::Now), Ok(true));
        }
        assert_eq!(ev.reset(), Ok(true));
        assert_eq!(ev.reset(), Ok(false));
        assert_eq!(ev.wait(&OsPark, Reset::Manual, soon(10)), Ok(false));
    }

    #[test]
    fn wait_times_out_after_the_deadline() {
        let ev = EventWords::new();
        let t0 = Instant::now();
        assert_eq!(ev.wait(&OsPark, Reset::Auto, soon(30)), Ok(false));
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(30), "returned after {took:?}");
        assert!(took < Duration::from_secs(5), "returned after {took:?}");
    }

    #[test]
    fn set_wakes_a_sleeping_waiter_with_one_futex_wake() {
        let ev = Arc::new(EventWords::new());
        let park = Arc::new(CountingPark::default());
        let waiter = {
            let (ev, park) = (ev.clone(), park.clone());
            std::thread::spawn(move || {
                let t0 = Instant::now();
                (ev.wait(&*park, Reset::Auto, soon(10_000)), t0.elapsed())
            })
        };
        until_waiting(&ev);
        ev.set(&*park).unwrap();
        let (got, took) = waiter.join().unwrap();
        assert_eq!(got, Ok(true));
        assert!(took < Duration::from_secs(5), "woken after {took:?}: the wake was lost");
        assert_eq!(park.wakes.load(StdOrdering::SeqCst), 1);
        assert_eq!(ev.is_set(), Ok(false), "the waiter consumed the set");
    }

    #[test]
    fn auto_reset_releases_one_waiter_per_set() {
        let ev = Arc::new(EventWords::new());
        let done = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (ev, done) = (ev.clone(), done.clone());
                std::thread::spawn(move || {
                    let r = ev.wait(&OsPark, Reset::Auto, soon(10_000));
                    done.fetch_add(1, StdOrdering::SeqCst);
                    r
                })
            })
            .collect();
        until_waiting(&ev);
        ev.set(&OsPark).unwrap();
        let t0 = Instant::now();
        while done.load(StdOrdering::SeqCst) == 0 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(50)); // give a wrong second return time to show
        assert_eq!(done.load(StdOrdering::SeqCst), 1, "one set must release exactly one waiter");
        assert_eq!(ev.is_set(), Ok(false));
        ev.set(&OsPark).unwrap();
        for w in waiters {
            assert_eq!(w.join().unwrap(), Ok(true));
        }
        assert_eq!(ev.is_set(), Ok(false));
    }

    #[test]
    fn manual_reset_wakes_every_waiter() {
        let ev = Arc::new(EventWords::new());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let ev = ev.clone();
                std::thread::spawn(move || ev.wait(&OsPark, Reset::Manual, soon(10_000)))
            })
            .collect();
        until_waiting(&ev);
        ev.set(&OsPark).unwrap();
        for w in waiters {
            assert_eq!(w.join().unwrap(), Ok(true));
        }
        assert_eq!(ev.is_set(), Ok(true), "manual reset stays set");
    }

    #[test]
    fn a_set_publishes_what_was_written_before_it() {
        let ev = Arc::new(EventWords::new());
        let data = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let (ev, data) = (ev.clone(), data.clone());
            std::thread::spawn(move || {
                assert_eq!(ev.wait(&OsPark, Reset::Auto, soon(10_000)), Ok(true));
                data.load(StdOrdering::Relaxed)
            })
        };
        data.store(42, StdOrdering::Relaxed);
        ev.set(&OsPark).unwrap();
        assert_eq!(waiter.join().unwrap(), 42);
    }

    #[test]
    fn corrupt_state_is_reported_and_left_alone() {
        let ev = EventWords::new();
        ev.state.store(7, StdOrdering::SeqCst);
        let p = OsPark;
        assert!(ev.is_set().unwrap_err().detail().contains("0x7"));
        assert!(ev.set(&p).is_err());
        assert!(ev.reset().is_err());
        assert!(ev.wait(&p, Reset::Auto, soon(10)).is_err());
        assert!(ev.wait(&p, Reset::Manual, Deadline::Now).is_err());
        assert_eq!(ev.state.load(StdOrdering::SeqCst), 7, "a corrupt word is never overwritten");
    }

    #[test]
    fn a_state_turning_corrupt_while_asleep_is_reported() {
        let ev = Arc::new(EventWords::new());
        let waiter = {
            let ev = ev.clone();
            std::thread::spawn(move || ev.wait(&OsPark, Reset::Auto, soon(10_000)))
        };
        until_waiting(&ev);
        ev.state.store(0xdead, StdOrdering::SeqCst);
        ev.seq.fetch_add(1, StdOrdering::SeqCst);
        OsPark.wake_all(&ev.seq);
        assert!(waiter.join().unwrap().is_err());
    }
}
