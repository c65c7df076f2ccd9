//! Loom models of the crash-aware mutex (`src/robust_mutex.rs`): mutual exclusion (a plain
//! counter in a loom `UnsafeCell`, so an overlap of two critical sections is a reported race),
//! no lost wake-up when the owner unlocks with a locker asleep, and an owner that dies holding
//! the lock: exactly one survivor gets `OwnerDied` (seeing everything the dead owner wrote), and
//! its decision is kept: `mark_consistent` → later lockers get `Acquired`; no decision → later
//! lockers get `Unrecoverable`. `try_lock` takes a dead owner's lock over too (without waiting):
//! two `try_lock`s, or a `try_lock` and a blocking `lock`, never both get `OwnerDied`, and a
//! `try_lock` never takes the lock from an owner that is still alive.
//!
//! Run with
//! `RUSTFLAGS="--cfg shmq_loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom_mutex`.
//!
//! Each thread plays a process with its own identity (pid 1, 2, ...). Deaths are notified, not
//! polled (`check_interval() == None`): the dying thread sets its "dead" flag (Release, standing
//! for the kernel's exit path) and wakes the lockers, as a death watcher would. Locks use
//! `Deadline::Never` and `LoomPark` has no timeouts, so a lost wake-up is a loom deadlock.
#![cfg(shmq_loom)]

mod common;

use common::{Outcomes, let_spawned_run_first, model};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use shmq::loom_api::{Deadline, LoomPark};
use shmq::robust_mutex::{Health, Liveness, LockError, Locked, MutexWords, Owner};
use std::time::Duration;

/// A mutex as processes would share it, the data it protects, and who has died.
struct Shared {
    words: MutexWords,
    park: LoomPark,
    data: UnsafeCell<u32>,
    /// `dead[pid]`: process `pid` has died (pids 1..=3).
    dead: [AtomicBool; 4],
}

// SAFETY: `data` is only touched by the holder of the mutex; loom's UnsafeCell reports any two
// accesses that are not ordered by the mutex protocol.
unsafe impl Sync for Shared {}

impl Liveness for Shared {
    fn is_dead(&self, pid: u32, _start_low30: Option<u32>) -> bool {
        // SYNC(death), acquire side.
        self.dead.get(pid as usize).is_some_and(|d| d.load(Ordering::Acquire))
    }
    fn check_interval(&self) -> Option<Duration> {
        None // deaths are notified by `die`
    }
}

fn me(pid: u32) -> Owner {
    Owner::new(pid, Some(1000 + u64::from(pid))).unwrap()
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            words: MutexWords::new(),
            park: LoomPark::new(),
            data: UnsafeCell::new(0),
            dead: std::array::from_fn(|_| AtomicBool::new(false)),
        })
    }

    fn lock(&self, pid: u32) -> Result<Locked, LockError> {
        self.words.lock(&self.park, self, me(pid), Deadline::Never)
    }

    /// `try_lock` as process `pid` (asks the liveness once if the lock is held, never waits).
    fn try_lock(&self, pid: u32) -> Result<Locked, LockError> {
        self.words.try_lock(&self.park, self, me(pid))
    }

    fn unlock(&self, pid: u32) {
        self.words.unlock(&self.park, me(pid)).expect("unlock by the owner");
    }

    /// The holder's view of the data.
    fn read(&self) -> u32 {
        // SAFETY: called only while holding the mutex.
        self.data.with(|p| unsafe { *p })
    }

    fn write(&self, v: u32) {
        // SAFETY: called only while holding the mutex.
        self.data.with_mut(|p| unsafe { *p = v })
    }

    /// Process `pid` dies (holding whatever it holds): the kernel makes its writes visible
    /// (SYNC(death), release side) and a watcher wakes the blocked lockers.
    fn die(&self, pid: u32) {
        self.dead[pid as usize].store(true, Ordering::Release);
        self.words.wake_waiters(&self.park);
    }

    /// Take the (free) lock single-threaded, read the data, release it.
    fn try_lock_for_check(&self) -> u32 {
        assert_eq!(self.words.try_lock(&self.park, self, me(1)), Ok(Locked::Acquired));
        let v = self.read();
        self.unlock(1);
        v
    }

    /// Whether some locker slept and was woken by an unlock (seq is bumped only for announced
    /// sleepers, or by `die`).
    fn unlock_woke_someone(&self) -> bool {
        self.words.seq.load(Ordering::SeqCst) > 0
    }
}

/// Two processes increment a plain counter under the mutex: never both inside (loom would
/// report the race on the cell), no increment lost, no lost wake-up (a locker that went to sleep
/// is woken by the unlock). Both the sleeping and the non-sleeping paths are reached.
#[test]
fn mutual_exclusion_and_no_lost_wakeup() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move |spawned_first| {
        let m = Shared::new();
        let other = {
            let m = m.clone();
            loom::thread::spawn(move || {
                assert_eq!(m.lock(2), Ok(Locked::Acquired));
                m.write(m.read() + 1);
                m.unlock(2);
            })
        };
        let_spawned_run_first(spawned_first);
        assert_eq!(m.lock(1), Ok(Locked::Acquired));
        m.write(m.read() + 1);
        m.unlock(1);
        other.join().unwrap();
        assert_eq!(m.lock(1), Ok(Locked::Acquired));
        assert_eq!(m.read(), 2, "an increment was lost");
        m.unlock(1);
        seen.record(if m.unlock_woke_someone() { "a locker slept" } else { "nobody slept" }.to_string());
    });
    outcomes.assert_exactly(&["a locker slept", "nobody slept"]);
}

/// The owner holds the lock while another locker arrives; the unlock must wake it whether it is
/// asleep, about to sleep, or not yet waiting.
#[test]
fn unlock_wakes_a_sleeping_locker() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move |spawned_first| {
        let m = Shared::new();
        assert_eq!(m.lock(1), Ok(Locked::Acquired));
        let locker = {
            let m = m.clone();
            loom::thread::spawn(move || {
                assert_eq!(m.lock(2), Ok(Locked::Acquired));
                let v = m.read();
                m.unlock(2);
                v
            })
        };
        let_spawned_run_first(spawned_first);
        m.write(7);
        m.unlock(1);
        assert_eq!(locker.join().unwrap(), 7, "the next owner must see the previous one's writes");
        seen.record(if m.unlock_woke_someone() { "a locker slept" } else { "nobody slept" }.to_string());
    });
    outcomes.assert_exactly(&["a locker slept", "nobody slept"]);
}

/// Process 1 locks, writes, and dies holding the lock; process 2 locks concurrently and decides
/// (`mark_consistent` or not) if it gets `OwnerDied`; afterwards process 3 locks. Returns, per
/// execution, what 2 got and what 3 got.
fn owner_dies(decide: bool, spawned_first: bool) -> (Locked, Result<Locked, LockError>) {
    let m = Shared::new();
    let dying = {
        let m = m.clone();
        loom::thread::spawn(move || {
            assert_eq!(m.lock(1), Ok(Locked::Acquired));
            m.write(1); // half an update, then death
            m.die(1);
        })
    };
    let_spawned_run_first(spawned_first);
    let got2 = m.lock(2).expect("process 2 gets the lock");
    match got2 {
        Locked::OwnerDied => {
            assert_eq!(m.read(), 1, "the taker sees what the dead owner wrote");
            assert_eq!(m.words.health(), Ok(Health::Inconsistent));
            if decide {
                m.write(2);
                m.words.mark_consistent(me(2)).unwrap();
            }
        }
        Locked::Acquired => assert_eq!(m.read(), 0, "process 2 went first"),
    }
    m.unlock(2);
    dying.join().unwrap();
    let got3 = m.lock(3);
    if got3 == Ok(Locked::OwnerDied) {
        // Process 2 went first, so process 1 died holding the lock and 3 is the one to decide.
        assert_eq!(m.read(), 1);
        if decide {
            m.words.mark_consistent(me(3)).unwrap();
        }
        m.unlock(3);
        let again = m.lock(3);
        if decide {
            assert_eq!(again, Ok(Locked::Acquired));
        } else {
            assert_eq!(again, Err(LockError::Unrecoverable));
        }
    }
    (got2, got3)
}

/// The taker repairs the data: later lockers get `Acquired`.
#[test]
fn owner_died_then_mark_consistent() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move |spawned_first| {
        let (got2, got3) = owner_dies(true, spawned_first);
        match (got2, &got3) {
            (Locked::OwnerDied, Ok(Locked::Acquired)) | (Locked::Acquired, Ok(Locked::OwnerDied)) => {}
            other => panic!("not allowed: {other:?}"),
        }
        seen.record(format!("2: {got2:?}, 3: {got3:?}"));
    });
    outcomes.assert_exactly(&["2: Acquired, 3: Ok(OwnerDied)", "2: OwnerDied, 3: Ok(Acquired)"]);
}

/// The taker unlocks without deciding: the mutex becomes unrecoverable for everybody after.
#[test]
fn owner_died_without_decision_is_unrecoverable() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move |spawned_first| {
        let (got2, got3) = owner_dies(false, spawned_first);
        match (got2, &got3) {
            (Locked::OwnerDied, Err(LockError::Unrecoverable)) | (Locked::Acquired, Ok(Locked::OwnerDied)) => {}
            other => panic!("not allowed: {other:?}"),
        }
        seen.record(format!("2: {got2:?}, 3: {got3:?}"));
    });
    outcomes.assert_exactly(&["2: Acquired, 3: Ok(OwnerDied)", "2: OwnerDied, 3: Err(Unrecoverable)"]);
}

/// Two survivors race to take over a dead owner's lock: exactly one gets `OwnerDied` (one CAS
/// from the dead owner's exact word), the other waits for it and gets `Acquired`.
#[test]
fn two_survivors_one_takeover() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move |spawned_first| {
        let m = Shared::new();
        assert_eq!(m.lock(1), Ok(Locked::Acquired));
        m.dead[1].store(true, Ordering::Release); // died before the others came
        let other = {
            let m = m.clone();
            loom::thread::spawn(move || {
                let got = m.lock(3).unwrap();
                if got == Locked::OwnerDied {
                    m.words.mark_consistent(me(3)).unwrap();
                }
                m.unlock(3);
                got
            })
        };
        let_spawned_run_first(spawned_first);
        let got = m.lock(2).unwrap();
        if got == Locked::OwnerDied {
            m.words.mark_consistent(me(2)).unwrap();
        }
        m.unlock(2);
        let got_other = other.join().unwrap();
        let mut both = [got, got_other];
        both.sort_by_key(|l| *l == Locked::OwnerDied);
        assert_eq!(both, [Locked::Acquired, Locked::OwnerDied], "exactly one takes over");
        seen.record(format!("takeover by {}", if got == Locked::OwnerDied { 2 } else { 3 }));
    });
    outcomes.assert_exactly(&["takeover by 2", "takeover by 3"]);
}

/// Three processes contend: the unlock's wake clears the waiter count and wakes everyone, so a
/// woken locker that loses the lock again must announce itself again. Every increment counted,
/// no overlap, nobody left asleep.
#[test]
fn three_lockers_exclusion() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move |spawned_first| {
        let m = Shared::new();
        let others: Vec<_> = [2u32, 3]
            .into_iter()
            .map(|pid| {
                let m = m.clone();
                loom::thread::spawn(move || {
                    assert_eq!(m.lock(pid), Ok(Locked::Acquired));
                    m.write(m.read() + 1);
                    m.unlock(pid);
                })
            })
            .collect();
        let_spawned_run_first(spawned_first);
        assert_eq!(m.lock(1), Ok(Locked::Acquired));
        m.write(m.read() + 1);
        m.unlock(1);
        for t in others {
            t.join().unwrap();
        }
        assert_eq!(m.try_lock_for_check(), 3, "an increment was lost");
        seen.record(if m.unlock_woke_someone() { "a locker slept" } else { "nobody slept" }.to_string());
    });
    outcomes.assert_exactly(&["a locker slept", "nobody slept"]);
}

/// The owner dies while two survivors may already be asleep: the death notice wakes both,
/// exactly one takes over (and repairs), the other then gets the lock normally.
#[test]
fn owner_dies_while_two_wait() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move |spawned_first| {
        let m = Shared::new();
        assert_eq!(m.lock(1), Ok(Locked::Acquired));
        let survivor = |m: &Shared, pid: u32| {
            let got = m.lock(pid).unwrap();
            if got == Locked::OwnerDied {
                assert_eq!(m.read(), 1, "the taker sees the dead owner's write");
                m.words.mark_consistent(me(pid)).unwrap();
            }
            m.unlock(pid);
            got
        };
        let other = {
            let m = m.clone();
            loom::thread::spawn(move || survivor(&m, 3))
        };
        let dying = {
            let m = m.clone();
            loom::thread::spawn(move || {
                m.write(1);
                m.die(1); // process 1 (which locked above) dies holding the lock
            })
        };
        let_spawned_run_first(spawned_first);
        let got = survivor(&m, 2);
        let got_other = other.join().unwrap();
        dying.join().unwrap();
        let mut both = [got, got_other];
        both.sort_by_key(|l| *l == Locked::OwnerDied);
        assert_eq!(both, [Locked::Acquired, Locked::OwnerDied], "exactly one takes over");
        seen.record(format!("takeover by {}", if got == Locked::OwnerDied { 2 } else { 3 }));
    });
    outcomes.assert_exactly(&["takeover by 2", "takeover by 3"]);
}

/// A survivor's part in the `try_lock` models: one `try_lock` as `pid`; on `OwnerDied` it sees
/// the dead owner's write, repairs (writes its pid) and marks the data consistent; on `Acquired`
/// it sees a repaired value. Returns what `try_lock` gave.
fn try_lock_once(m: &Shared, pid: u32) -> Result<Locked, LockError> {
    let got = m.try_lock(pid);
    match got {
        Ok(Locked::OwnerDied) => {
            assert_eq!(m.read(), 1, "the taker sees the dead owner's write");
            assert_eq!(m.words.health(), Ok(Health::Inconsistent));
            m.write(pid);
            m.words.mark_consistent(me(pid)).unwrap();
            m.unlock(pid);
        }
        Ok(Locked::Acquired) => {
            assert!(m.read() > 1, "Acquired after a takeover: the data is repaired");
            m.unlock(pid);
        }
        Err(LockError::Timeout) => {}
        Err(e) => panic!("try_lock failed: {e:?}"),
    }
    got
}

/// The owner died holding the lock before the others came; two survivors race with `try_lock`:
/// exactly one gets `OwnerDied` (one CAS from the dead owner's exact word), never both; the other
/// finds the lock held by the (live) winner (`Timeout`), or already repaired and free
/// (`Acquired`), possibly after losing the takeover CAS and retrying once.
#[test]
fn try_lock_two_survivors_one_takeover() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move |spawned_first| {
        let m = Shared::new();
        assert_eq!(m.lock(1), Ok(Locked::Acquired));
        m.write(1);
        m.dead[1].store(true, Ordering::Release); // SYNC(death), release side
        let other = {
            let m = m.clone();
            loom::thread::spawn(move || try_lock_once(&m, 3))
        };
        let_spawned_run_first(spawned_first);
        let got = try_lock_once(&m, 2);
        let got_other = other.join().unwrap();
        let died = [&got, &got_other].iter().filter(|g| ***g == Ok(Locked::OwnerDied)).count();
        assert_eq!(died, 1, "exactly one takes over: 2 got {got:?}, 3 got {got_other:?}");
        let (winner, loser) = if got == Ok(Locked::OwnerDied) { (2, got_other) } else { (3, got) };
        assert_eq!(m.try_lock_for_check(), winner, "the repair is what the data holds");
        seen.record(format!("the other: {loser:?}"));
    });
    outcomes.assert_exactly(&["the other: Err(Timeout)", "the other: Ok(Acquired)"]);
}

/// Process 1 holds the lock, writes and dies while process 2 calls `try_lock` once and process 3
/// blocks in `lock`. `try_lock` never takes the lock from 1 while it lives (loom reports a race
/// on the data if it did), exactly one of 2 and 3 gets `OwnerDied`, and 3 always gets the lock.
#[test]
fn try_lock_and_lock_race_a_dying_owner() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move |spawned_first| {
        let m = Shared::new();
        assert_eq!(m.lock(1), Ok(Locked::Acquired));
        let trier = {
            let m = m.clone();
            loom::thread::spawn(move || try_lock_once(&m, 2))
        };
        let dying = {
            let m = m.clone();
            loom::thread::spawn(move || {
                m.write(1); // half an update, then death, holding the lock
                m.die(1);
            })
        };
        let_spawned_run_first(spawned_first);
        let got3 = m.lock(3).expect("a blocking lock always gets it");
        match got3 {
            Locked::OwnerDied => {
                assert_eq!(m.read(), 1, "the taker sees the dead owner's write");
                m.write(3);
                m.words.mark_consistent(me(3)).unwrap();
            }
            Locked::Acquired => assert_eq!(m.read(), 2, "process 2 took over and repaired"),
        }
        m.unlock(3);
        let got2 = trier.join().unwrap();
        dying.join().unwrap();
        let died = (got2 == Ok(Locked::OwnerDied)) as u32 + (got3 == Locked::OwnerDied) as u32;
        assert_eq!(died, 1, "exactly one takes over: 2 got {got2:?}, 3 got {got3:?}");
        seen.record(format!("2: {got2:?}, 3: {got3:?}"));
    });
    outcomes.assert_exactly(&[
        "2: Err(Timeout), 3: OwnerDied",
        "2: Ok(Acquired), 3: OwnerDied",
        "2: Ok(OwnerDied), 3: Acquired",
    ]);
}
