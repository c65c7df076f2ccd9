//! A mutex in shared memory that knows its owner, so that a process dying with the lock held
//! neither deadlocks the others nor hands them half-updated data silently. The lock-free core.
//!
//! [`MutexWords`] lives in shared memory (`#[repr(C)]`, shim atomics; all zero = free,
//! consistent, nobody waiting). Its methods are generic over [`Park`] (the shared futex, or a
//! loom model) and [`Liveness`] (how to tell that a process has died: `/proc` in production, a
//! flag in loom models).
//!
//! # The words
//!
//! | word | values | written by | how |
//! |---|---|---|---|
//! | `lock` | 0 = free; else the owner's [`Owner`] word (below) | a locker (0 → me; or a dead owner's exact word → me), the owner (me → 0) | CAS only |
//! | `health` | 0 CONSISTENT, 1 INCONSISTENT (the owner took the lock over from a dead owner and has not decided yet), 2 UNRECOVERABLE (terminal); else `Corrupt` | only the current owner, while it holds `lock` | plain stores |
//! | `seq` | event count, wraps | `unlock` when `waiters != 0`; a death notifier ([`MutexWords::wake_waiters`]) | Release `fetch_add`, then FUTEX_WAKE |
//! | `waiters` | lockers asleep or about to sleep on `seq` (may over-count) | sleepers (+1), `unlock` (swap to 0 when it wakes) | RMW (`wait::sleep_counted` / `wake_counted`) |
//! | `reserved` | 0 | nobody | room for later |
//!
//! The owner word packs the identity so that ownership *and* identity change in one CAS, and a
//! reader never sees half an identity:
//!
//! ```text
//! bits  0..32  pid (1 ..= i32::MAX)
//! bits 32..62  low 30 bits of the owner's start time (clock ticks since boot, /proc/PID/stat field 22)
//! bit  62      NO_START: the owner could not read its own start time (the start bits are then 0)
//! bit  63      reserved, 0
//! ```
//!
//! Any other word (pid 0 or above `i32::MAX`, start bits with NO_START, bit 63) is `Corrupt`.
//!
//! | pair | release side | acquire side | what it carries |
//! |---|---|---|---|
//! | **SYNC(lock)** | `unlock`'s Release CAS me → 0 | a locker's Acquire CAS 0 → me | the critical section and `health` written by the previous owner |
//! | **SYNC(death)** | the death of the owner: in production the kernel's exit path, observed through `/proc` (a system call); in loom the dying thread's Release store of its "dead" flag | `Liveness::is_dead` (a `/proc` read; in loom an Acquire load), then the Acquire takeover CAS | everything the dead owner wrote, including half-done updates and `health` |
//! | **SYNC(waiters)** | `unlock`: CAS, SeqCst fence, load `waiters`, Release bump of `seq` | a locker: Acquire load of `seq`, `waiters += 1`, SeqCst fence, re-check `lock` | no lost wake-up (see `wait::sleep_counted`) |
//!
//! # The protocol
//!
//! * **lock**: if `health` is UNRECOVERABLE, fail. CAS `lock` 0 → me: won → read `health`:
//!   CONSISTENT gives [`Locked::Acquired`]; INCONSISTENT (cannot happen in the protocol, only
//!   through a foreign write) gives [`Locked::OwnerDied`]; UNRECOVERABLE or a corrupt value
//!   releases the lock again (and wakes the others, so they find out too) and fails. Lost → spin
//!   briefly, then sleep on `seq` with the waiter count (so an uncontended unlock makes no system
//!   call), in slices of the liveness check interval (default [`CHECK_INTERVAL`], 2 ms). After a
//!   slice that ended without a wake, check the owner in the word: if it is dead, take over with
//!   ONE CAS from the dead owner's exact word to mine (two survivors cannot both win; a word that
//!   changed meanwhile is not taken). The winner sets `health` to INCONSISTENT and gets
//!   [`Locked::OwnerDied`]: the data may be half-updated, and the caller must decide.
//! * **try_lock**: the same first step without any waiting: if UNRECOVERABLE, fail; CAS 0 → me;
//!   if held, ask once whether the owner in the word is dead and, if so, the same takeover (ONE
//!   CAS from that exact word, INCONSISTENT, [`Locked::OwnerDied`]). A live owner, or one whose
//!   liveness cannot be told, gives `Timeout`. A failed takeover CAS is followed by one more
//!   CAS 0 → me (the word may have become free), never by a loop.
//! * **mark_consistent**: the owner repaired the data: INCONSISTENT → CONSISTENT.
//! * **unlock**: if `health` is still INCONSISTENT, the owner did not decide: it becomes
//!   UNRECOVERABLE (every later lock fails with [`LockError::Unrecoverable`]). Then the Release
//!   CAS me → 0, and wake the sleepers if there are any.
//!
//! A lock whose owner died is never recovered silently (the taker is told, and an undecided
//! takeover poisons the lock for good, as with `pthread_mutex_consistent`), and never left
//! blocked forever (a blocked locker finds the death within one check interval, a `try_lock` at
//! once). A new owner that dies in turn before deciding is itself taken over: the next one gets
//! `OwnerDied` again.
//!
//! # Why this design
//!
//! * The 64-bit `lock` word holds the whole identity, so "who owns it" can never be read torn,
//!   and a takeover is one CAS from the exact dead word: if the owner changed in between (another
//!   survivor took over, unlocked, and a third process locked), the CAS fails and nothing is
//!   stolen from a live owner.
//! * A futex word is 32 bits, so lockers cannot sleep on `lock` itself (unlike a classic futex
//!   mutex with a "waiters" bit); they sleep on `seq`, an event count, with a waiter count
//!   beside it, the same Dekker handshake as the MPSC/MPMC rings.
//! * The start time makes a reused pid harmless: a process that got the dead owner's pid has
//!   another start time. 30 bits of clock ticks wrap every 124 days at `USER_HZ` = 100; a false
//!   match needs the same pid *and* a start time equal modulo 124 days.
//! * The kernel's robust futexes (`set_robust_list`) would report a death at once, but they work
//!   on a 32-bit word holding a *thread* id, are per thread, and cannot be modelled by loom. The
//!   polling here costs nothing until a locker has been blocked for a whole check interval.
//! * Ownership is per *process*: the threads of one process share its identity. A thread that
//!   exits holding the lock in a process that lives on is not detected (the owner is alive); the
//!   lock is not re-entrant either (a second `lock` from the owner waits for its deadline).
//! * [`Liveness::is_dead`] must never say "dead" for a live process: that would hand its lock
//!   to another. The production check ([`ProcLiveness`]) answers "alive" whenever `/proc`
//!   cannot tell. All processes sharing a mutex must see the same pid namespace.

use crate::error::Corrupt;
use crate::futex::Wake;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::wait::{Deadline, Park, Spinner, sleep_counted, wake_counted};
use std::time::Duration;

/// How long a blocked locker sleeps before it checks whether the owner is still alive.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(2);

/// How long a locker spins (and yields) before it sleeps. Zero in loom models.
#[cfg(not(shmq_loom))]
const SPIN: Duration = Duration::from_micros(20);
#[cfg(shmq_loom)]
const SPIN: Duration = Duration::ZERO;

const PID_MASK: u64 = 0xFFFF_FFFF;
const START_SHIFT: u32 = 32;
const START_MASK: u64 = (1 << 30) - 1;
/// Owner word flag: the owner could not read its own start time; it is judged by its pid only.
pub const NO_START: u64 = 1 << 62;
const RESERVED: u64 = 1 << 63;

/// `health`: the data is consistent.
pub const CONSISTENT: u32 = 0;
/// `health`: the owner took the lock over from a dead owner and has not called `mark_consistent`.
pub const INCONSISTENT: u32 = 1;
/// `health`: a new owner released the lock without repairing it; every lock fails from now on.
pub const UNRECOVERABLE: u32 = 2;

/// The shared words of one mutex. All zero = free, consistent, nobody waiting.
#[repr(C)]
#[derive(Debug)]
pub struct MutexWords {
    /// 0, or the owner's packed identity ([`Owner::word`]).
    pub lock: AtomicU64,
    /// Futex word lockers sleep on (an event count).
    pub seq: AtomicU32,
    /// Lockers asleep or about to sleep on `seq`.
    pub waiters: AtomicU32,
    /// CONSISTENT, INCONSISTENT or UNRECOVERABLE.
    pub health: AtomicU32,
    /// Zero (explicit padding to the 8-byte alignment).
    pub reserved: AtomicU32,
}

#[cfg(not(shmq_loom))]
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(offset_of!(MutexWords, lock) == 0);
    assert!(offset_of!(MutexWords, seq) == 8);
    assert!(offset_of!(MutexWords, waiters) == 12);
    assert!(offset_of!(MutexWords, health) == 16);
    assert!(size_of::<MutexWords>() == 24);
    assert!(align_of::<MutexWords>() == 8);
};

/// Who holds a mutex: a process, by pid and (the low 30 bits of) its start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    word: u64,
}

impl Owner {
    /// The identity of process `pid` started at `start_time` (clock ticks since boot; `None`
    /// if unknown). `None` for a pid that cannot name a process (0, or above `i32::MAX`).
    pub fn new(pid: u32, start_time: Option<u64>) -> Option<Owner> {
        if pid == 0 || pid > i32::MAX as u32 {
            return None;
        }
        let rest = match start_time {
            Some(t) => (t & START_MASK) << START_SHIFT,
            None => NO_START,
        };
        Some(Owner { word: u64::from(pid) | rest })
    }

    /// This process. Its start time comes from `/proc/self/stat` (unknown → `NO_START`).
    /// Read it once per process (after a `fork`, again in the child).
    #[cfg(not(shmq_loom))]
    pub fn current() -> Owner {
        let (pid, start) = crate::process::me();
        let start = (start != 0).then_some(start);
        // getpid() is always in 1..=i32::MAX; mask anyway rather than panic.
        Owner::new(pid, start).unwrap_or(Owner { word: u64::from(pid & 0x7FFF_FFFF).max(1) | NO_START })
    }

    /// Validate a non-zero word read from shared memory.
    pub fn from_word(word: u64) -> Result<Owner, Corrupt> {
        let pid = word & PID_MASK;
        let start = word >> START_SHIFT & START_MASK;
        let bad = word & RESERVED != 0 || pid == 0 || pid > i32::MAX as u64 || (word & NO_START != 0 && start != 0);
        if bad {
            return Err(Corrupt::new(format!("mutex owner word {word:#x} is not a valid owner identity")));
        }
        Ok(Owner { word })
    }

    /// The packed word stored in `lock` (never 0).
    pub fn word(self) -> u64 {
        self.word
    }

    /// The process id.
    pub fn pid(self) -> u32 {
        (self.word & PID_MASK) as u32
    }

    /// The low 30 bits of the process start time, if the owner knew it.
    pub fn start_low30(self) -> Option<u32> {
        (self.word & NO_START == 0).then_some((self.word >> START_SHIFT & START_MASK) as u32)
    }
}

/// How a locker finds out that the owner has died.
pub trait Liveness {
    /// Has process `pid`, whose start time had these low 30 bits (`None`: unknown), died? Must
    /// never say `true` for a live process (its lock would be handed to someone else): when in
    /// doubt, say `false`.
    fn is_dead(&self, pid: u32, start_low30: Option<u32>) -> bool;

    /// How a death becomes known. `Some(d)`: only by asking; a blocked locker sleeps at most `d`
    /// at a time and checks the owner after every slice that ended without a wake. `None`:
    /// whoever learns of a death calls [`MutexWords::wake_waiters`] after it, so a locker checks
    /// the owner before every sleep and sleeps until woken (loom models, or a death watcher).
    fn check_interval(&self) -> Option<Duration> {
        Some(CHECK_INTERVAL)
    }
}

/// The production [`Liveness`]: `/proc/PID/stat`. Dead when no process has the pid any more
/// (`/proc` and `kill(pid, 0)` agree), when the process under that pid has another start time
/// (the pid was reused), or when it is a zombie. Alive whenever `/proc` cannot tell.
#[cfg(not(shmq_loom))]
#[derive(Clone, Copy, Debug)]
pub struct ProcLiveness {
    /// How often a blocked locker checks the owner ([`CHECK_INTERVAL`] by default).
    pub interval: Duration,
}

#[cfg(not(shmq_loom))]
impl Default for ProcLiveness {
    fn default() -> ProcLiveness {
        ProcLiveness { interval: CHECK_INTERVAL }
    }
}

#[cfg(not(shmq_loom))]
impl Liveness for ProcLiveness {
    fn is_dead(&self, pid: u32, start_low30: Option<u32>) -> bool {
        use crate::process::{Liveness as Proc, ProcessId};
        match ProcessId::of(pid) {
            // Another process has the pid now: ours is gone.
            Some(now) if start_low30.is_some_and(|low| (now.start_time & START_MASK) as u32 != low) => true,
            // The same process (or, without a start time, whoever has the pid): dead if it has
            // exited since, or is a zombie.
            Some(now) => now.liveness() == Proc::Dead,
            None => no_such_pid(pid),
        }
    }

    fn check_interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
}

/// True only if the kernel says no process has `pid` (`kill(pid, 0)` fails with ESRCH).
#[cfg(not(shmq_loom))]
fn no_such_pid(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false; // not a process id at all (and kill would address a process group)
    }
    // SAFETY: signal 0 sends nothing and touches no memory; `pid` is a positive pid_t, so it
    // names one process, never a group.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

fn owner_dead<L: Liveness>(live: &L, owner: Owner) -> bool {
    live.is_dead(owner.pid(), owner.start_low30())
}

/// How a lock was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "OwnerDied means the protected data may be half-updated"]
pub enum Locked {
    /// The lock was free (or released normally): the data is consistent.
    Acquired,
    /// The previous owner died holding the lock; the caller holds it now. The protected data may
    /// be half-updated: repair or check it, then call `mark_consistent`. Unlocking without that
    /// makes the mutex unrecoverable.
    OwnerDied,
}

/// Why a lock was not obtained.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// The deadline passed while a live owner held the lock (`try_lock`: a live owner holds it).
    #[error("lock timed out: another process holds it (and is alive)")]
    Timeout,
    /// An owner died holding the lock and the process that took it over released it without
    /// marking the data consistent: nobody can trust the protected data any more.
    #[error("lock is unrecoverable: an owner died holding it and the data was never marked consistent")]
    Unrecoverable,
    /// A word of the mutex holds an impossible value.
    #[error("lock failed: {0}")]
    Corrupt(#[from] Corrupt),
}

/// The state of the protected data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Consistent.
    Consistent,
    /// Taken over from a dead owner; not decided yet.
    Inconsistent,
    /// Released without a decision: every lock fails.
    Unrecoverable,
}

fn health_of(v: u32) -> Result<Health, Corrupt> {
    match v {
        CONSISTENT => Ok(Health::Consistent),
        INCONSISTENT => Ok(Health::Inconsistent),
        UNRECOVERABLE => Ok(Health::Unrecoverable),
        v => Err(Corrupt::new(format!("mutex health word is {v:#x} (expected 0, 1 or 2)"))),
    }
}

impl Default for MutexWords {
    fn default() -> MutexWords {
        MutexWords::new()
    }
}

impl MutexWords {
    /// A free, consistent mutex (the same as an all-zero block of shared memory).
    pub fn new() -> MutexWords {
        MutexWords {
            lock: AtomicU64::new(0),
            seq: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            health: AtomicU32::new(CONSISTENT),
            reserved: AtomicU32::new(0),
        }
    }

    /// Take the lock, waiting until `deadline`. A blocked caller checks the owner's liveness
    /// after every check interval without a wake, and takes the lock over if the owner died
    /// ([`Locked::OwnerDied`]). Once the deadline has passed, the owner is checked one last
    /// time before `Timeout`.
    pub fn lock<P: Park, L: Liveness>(
        &self,
        park: &P,
        live: &L,
        me: Owner,
        deadline: Deadline,
    ) -> Result<Locked, LockError> {
        let interval = live.check_interval();
        let mut spinner = Spinner::new(SPIN);
        let mut check_owner = false;
        loop {
            let checked = check_owner || interval.is_none();
            match self.attempt(park, live, me, checked)? {
                Attempt::Got(locked) => return Ok(locked),
                Attempt::Changed => continue, // the dead owner's word changed under us: look again
                Attempt::Held => {}
            }
            check_owner = false;
            if deadline.passed() {
                if !checked {
                    check_owner = true; // one last look at the owner
                    continue;
                }
                return Err(LockError::Timeout);
            }
            if spinner.spin(deadline) {
                continue;
            }
            let slice = match interval {
                None => deadline,
                Some(d) => slice_end(deadline, d),
            };
            // SYNC(waiters): read seq, announce, fence, re-check the lock, sleep while seq holds.
            let woke = sleep_counted(park, &self.seq, &self.waiters, slice, || {
                let cur = self.lock.load(Ordering::Relaxed);
                if cur == 0 {
                    return Ok::<bool, Corrupt>(false);
                }
                // Notified deaths: the check comes after the seq read, so a death announced
                // after it bumps seq and FUTEX_WAIT returns at once.
                Ok(interval.is_some() || !owner_dead(live, Owner::from_word(cur)?))
            })?;
            if woke == Wake::TimedOut {
                check_owner = true;
            }
        }
    }

    /// Take the lock now, without waiting: if it is free, [`Locked::Acquired`]; if its owner
    /// has died, take it over exactly as a blocked [`lock`](MutexWords::lock) does (one CAS from
    /// the dead owner's exact word, `health` INCONSISTENT, [`Locked::OwnerDied`]); if a live
    /// owner holds it, `Timeout`. The owner's liveness is asked once per call (in production a
    /// `/proc` read, only when the lock is held); an owner whose liveness cannot be told is
    /// alive. If the takeover CAS fails (another survivor took over first, or the word changed),
    /// the lock is tried once more only in case it became free: no second liveness check, no loop.
    pub fn try_lock<P: Park, L: Liveness>(&self, park: &P, live: &L, me: Owner) -> Result<Locked, LockError> {
        match self.attempt(park, live, me, true)? {
            Attempt::Got(locked) => Ok(locked),
            Attempt::Held => Err(LockError::Timeout),
            Attempt::Changed => match self.attempt(park, live, me, false)? {
                Attempt::Got(locked) => Ok(locked),
                Attempt::Held | Attempt::Changed => Err(LockError::Timeout),
            },
        }
    }

    /// Release the lock held by `me`, and wake the blocked lockers if there are any (no system
    /// call otherwise). If the data is still INCONSISTENT (taken over from a dead owner and not
    /// marked consistent), the mutex becomes UNRECOVERABLE.
    ///
    /// `Corrupt` if the lock word is not `me` (the lock was not held, or was taken from us) —
    /// nothing is changed then — or if `health` holds an impossible value (the lock is released
    /// anyway, so that the others find out too).
    pub fn unlock<P: Park>(&self, park: &P, me: Owner) -> Result<(), Corrupt> {
        let cur = self.lock.load(Ordering::Relaxed);
        if cur != me.word {
            return Err(Corrupt::new(format!(
                "unlock of a mutex whose lock word is {cur:#x}, not this owner's {:#x}",
                me.word
            )));
        }
        let health = health_of(self.health.load(Ordering::Relaxed));
        if health == Ok(Health::Inconsistent) {
            // Published by the Release CAS below (SYNC(lock)).
            self.health.store(UNRECOVERABLE, Ordering::Relaxed);
        }
        self.release(park, me)?;
        health.map(|_| ())
    }

    /// The owner (`me`) declares the data repaired after [`Locked::OwnerDied`]. A no-op on a
    /// consistent mutex; `Unrecoverable` if it is too late.
    pub fn mark_consistent(&self, me: Owner) -> Result<(), LockError> {
        let cur = self.lock.load(Ordering::Relaxed);
        if cur != me.word {
            return Err(Corrupt::new(format!(
                "mark_consistent on a mutex whose lock word is {cur:#x}, not this owner's {:#x}",
                me.word
            ))
            .into());
        }
        match health_of(self.health.load(Ordering::Relaxed))? {
            Health::Consistent => Ok(()),
            Health::Inconsistent => {
                // Published by the Release CAS of `unlock` (SYNC(lock)).
                self.health.store(CONSISTENT, Ordering::Relaxed);
                Ok(())
            }
            Health::Unrecoverable => Err(LockError::Unrecoverable),
        }
    }

    /// The state of the protected data (a snapshot).
    pub fn health(&self) -> Result<Health, Corrupt> {
        health_of(self.health.load(Ordering::Acquire))
    }

    /// Who holds the lock now (a snapshot), or `None` if it is free.
    pub fn owner(&self) -> Result<Option<Owner>, Corrupt> {
        match self.lock.load(Ordering::Acquire) {
            0 => Ok(None),
            w => Owner::from_word(w).map(Some),
        }
    }

    /// Wake every blocked locker, unconditionally, so that it checks the owner again: for a death
    /// watcher, after it learnt that a process died (see [`Liveness::check_interval`]).
    pub fn wake_waiters<P: Park>(&self, park: &P) {
        // SYNC(waiters): Release bump; pairs with the Acquire load of seq in `sleep_counted`, so
        // a locker that read the new count also sees the death the caller learnt of before it.
        self.seq.fetch_add(1, Ordering::Release);
        park.wake_all(&self.seq);
    }

    /// One attempt, shared by `lock` and `try_lock`: refuse an UNRECOVERABLE mutex, CAS 0 → me,
    /// and if the lock is held and `check_owner`, ask whether its owner is dead and take it over.
    fn attempt<P: Park, L: Liveness>(
        &self,
        park: &P,
        live: &L,
        me: Owner,
        check_owner: bool,
    ) -> Result<Attempt, LockError> {
        self.refuse_unrecoverable()?;
        // SYNC(lock): Acquire CAS 0 → me; pairs with the Release CAS in `unlock`.
        let cur = match self.lock.compare_exchange(0, me.word, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return self.acquired(park, me, false).map(Attempt::Got),
            Err(cur) => cur,
        };
        let owner = Owner::from_word(cur)?;
        // SYNC(death): `is_dead` observes the death (acquire side), then the takeover CAS.
        if check_owner && owner_dead(live, owner) {
            return Ok(match self.take_over(park, cur, me)? {
                Some(locked) => Attempt::Got(locked),
                None => Attempt::Changed,
            });
        }
        Ok(Attempt::Held)
    }

    /// UNRECOVERABLE is terminal, so it can be read without the lock.
    fn refuse_unrecoverable(&self) -> Result<(), LockError> {
        match health_of(self.health.load(Ordering::Acquire))? {
            Health::Unrecoverable => Err(LockError::Unrecoverable),
            _ => Ok(()),
        }
    }

    /// One CAS from the dead owner's exact word to ours. `None`: the word changed.
    fn take_over<P: Park>(&self, park: &P, dead: u64, me: Owner) -> Result<Option<Locked>, LockError> {
        // SYNC(lock) / SYNC(death): Acquire CAS; the dead owner's writes were made visible by its
        // death (observed by `is_dead` just before).
        match self.lock.compare_exchange(dead, me.word, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => self.acquired(park, me, true).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// We hold the lock: what state is the data in?
    fn acquired<P: Park>(&self, park: &P, me: Owner, took_over: bool) -> Result<Locked, LockError> {
        match health_of(self.health.load(Ordering::Relaxed)) {
            Ok(Health::Consistent) if !took_over => Ok(Locked::Acquired),
            Ok(Health::Consistent) => {
                self.health.store(INCONSISTENT, Ordering::Relaxed);
                Ok(Locked::OwnerDied)
            }
            // Undecided (its owner died before deciding, or a foreign write): still suspect.
            Ok(Health::Inconsistent) => Ok(Locked::OwnerDied),
            Ok(Health::Unrecoverable) => {
                self.release(park, me)?;
                Err(LockError::Unrecoverable)
            }
            Err(c) => {
                self.release(park, me)?;
                Err(c.into())
            }
        }
    }

    /// me → 0 and wake the sleepers.
    fn release<P: Park>(&self, park: &P, me: Owner) -> Result<(), Corrupt> {
        // SYNC(lock): Release CAS; pairs with the next locker's Acquire CAS.
        let r = self.lock.compare_exchange(me.word, 0, Ordering::Release, Ordering::Relaxed);
        // SYNC(waiters): fence, then `waiters`, inside wake_counted.
        wake_counted(park, &self.seq, &self.waiters);
        match r {
            Ok(_) => Ok(()),
            Err(w) => Err(Corrupt::new(format!("mutex lock word changed to {w:#x} while this owner held it"))),
        }
    }
}

/// What one lock attempt found.
enum Attempt {
    /// We hold the lock now (free, or taken over from a dead owner).
    Got(Locked),
    /// A live owner holds it (or its liveness was not asked).
    Held,
    /// The owner was dead, but the takeover CAS failed: the word changed meanwhile.
    Changed,
}

/// The end of the next sleep slice: `interval` from now, or the deadline if that is sooner.
fn slice_end(deadline: Deadline, interval: Duration) -> Deadline {
    let end = Deadline::after(interval);
    match (deadline, end) {
        (Deadline::At(d), Deadline::At(e)) if d < e => deadline,
        _ => end,
    }
}

#[cfg(all(test, not(shmq_loom)))]
mod tests {
    use super::*;
    use crate::wait::OsPark;
    use crate::wait::test_support::CountingPark;
    use std::cell::UnsafeCell;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as StdOrdering};
    use std::time::Instant;

    /// Declares `dead_pid` dead once `dead` is true; checks every millisecond, or (interval
    /// `None`) relies on wakes only.
    struct FakeLiveness {
        dead_pid: u32,
        dead: AtomicBool,
        interval: Option<Duration>,
    }

    impl FakeLiveness {
        fn dead(pid: u32) -> FakeLiveness {
            FakeLiveness { dead_pid: pid, dead: AtomicBool::new(true), interval: Some(Duration::from_millis(1)) }
        }
        fn alive(pid: u32) -> FakeLiveness {
            FakeLiveness { dead: AtomicBool::new(false), ..FakeLiveness::dead(pid) }
        }
    }

    impl Liveness for FakeLiveness {
        fn is_dead(&self, pid: u32, _start: Option<u32>) -> bool {
            pid == self.dead_pid && self.dead.load(StdOrdering::SeqCst)
        }
        fn check_interval(&self) -> Option<Duration> {
            self.interval
        }
    }

    /// Nobody dies, and only wakes end a sleep: a lost wake-up shows as a long wait.
    struct WakesOnly;
    impl Liveness for WakesOnly {
        fn is_dead(&self, _pid: u32, _start: Option<u32>) -> bool {
            false
        }
        fn check_interval(&self) -> Option<Duration> {
            None
        }
    }

    const FOREIGN_PID: u32 = 0x7000_0001; // no real process: pids stay below 2^22
    fn foreign() -> Owner {
        Owner::new(FOREIGN_PID, Some(12345)).unwrap()
    }

    fn soon(ms: u64) -> Deadline {
        Deadline::after(Duration::from_millis(ms))
    }

    fn until_waiting(m: &MutexWords) {
        let t0 = Instant::now();
        while m.waiters.load(StdOrdering::SeqCst) == 0 {
            assert!(t0.elapsed() < Duration::from_secs(10), "the locker never went to sleep");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    #[test]
    fn owner_word_round_trips_and_rejects_impossible_words() {
        let o = Owner::new(4242, Some((1 << 40) + 77)).unwrap();
        assert_eq!((o.pid(), o.start_low30()), (4242, Some(77)));
        assert_eq!(Owner::from_word(o.word()), Ok(o));
        let n = Owner::new(7, None).unwrap();
        assert_eq!((n.pid(), n.start_low30()), (7, None));
        assert_eq!(Owner::from_word(n.word()), Ok(n));
        assert_eq!(Owner::new(0, Some(1)), None);
        assert_eq!(Owner::new(u32::MAX, Some(1)), None);
        for bad in [1 << 63 | 5, 5 << 32, 0x8000_0000, NO_START | 1 << 32 | 5] {
            assert!(Owner::from_word(bad).is_err(), "{bad:#x} accepted");
        }
        let me = Owner::current();
        assert_eq!(me.pid(), std::process::id());
        assert!(me.start_low30().is_some());
    }

    #[test]
    fn zeroed_words_are_a_free_consistent_mutex() {
        let m = MutexWords::default();
        let me = Owner::current();
        assert_eq!(m.owner(), Ok(None));
        assert_eq!(m.health(), Ok(Health::Consistent));
        assert_eq!(m.try_lock(&OsPark, &ProcLiveness::default(), me), Ok(Locked::Acquired));
        assert_eq!(m.owner(), Ok(Some(me)));
        m.unlock(&OsPark, me).unwrap();
        assert_eq!(m.owner(), Ok(None));
    }

    #[test]
    fn uncontended_lock_and_unlock_make_no_system_call() {
        let m = MutexWords::new();
        let park = CountingPark::default();
        let me = Owner::current();
        for _ in 0..100 {
            assert_eq!(m.lock(&park, &ProcLiveness::default(), me, Deadline::Never), Ok(Locked::Acquired));
            m.unlock(&park, me).unwrap();
        }
        assert_eq!(park.wakes.load(StdOrdering::SeqCst), 0);
        assert_eq!(m.seq.load(StdOrdering::SeqCst), 0);
    }

    #[test]
    fn try_lock_and_timeouts_on_a_held_lock() {
        let m = MutexWords::new();
        let me = Owner::current();
        assert_eq!(m.try_lock(&OsPark, &ProcLiveness::default(), me), Ok(Locked::Acquired));
        assert_eq!(m.try_lock(&OsPark, &ProcLiveness::default(), me), Err(LockError::Timeout)); // not re-entrant
        let t0 = Instant::now();
        assert_eq!(m.lock(&OsPark, &ProcLiveness::default(), me, soon(30)), Err(LockError::Timeout));
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(30) && took < Duration::from_secs(5), "took {took:?}");
        // A live foreign owner (this very process under another identity is not dead either).
        m.unlock(&OsPark, me).unwrap();
        m.lock.store(foreign().word(), StdOrdering::SeqCst);
        let live = FakeLiveness::alive(FOREIGN_PID);
        assert_eq!(m.lock(&OsPark, &live, me, soon(20)), Err(LockError::Timeout));
        assert_eq!(m.owner(), Ok(Some(foreign())), "a live owner keeps its lock");
    }

    #[test]
    fn unlock_wakes_a_sleeping_locker_with_one_futex_wake() {
        let m = Arc::new(MutexWords::new());
        let park = Arc::new(CountingPark::default());
        let me = Owner::current();
        assert_eq!(m.try_lock(&*park, &ProcLiveness::default(), me), Ok(Locked::Acquired));
        let locker = {
            let (m, park) = (m.clone(), park.clone());
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let r = m.lock(&*park, &WakesOnly, me, soon(10_000));
                (r, t0.elapsed())
            })
        };
        until_waiting(&m);
        m.unlock(&*park, me).unwrap();
        let (r, took) = locker.join().unwrap();
        assert_eq!(r, Ok(Locked::Acquired));
        assert!(took < Duration::from_secs(5), "woken after {took:?}: the wake was lost");
        assert_eq!(park.wakes.load(StdOrdering::SeqCst), 1);
        m.unlock(&*park, me).unwrap();
    }

    /// A counter behind the mutex, incremented without atomics: lost updates would show.
    struct Counter(UnsafeCell<u64>);
    // SAFETY: the cell is only read or written while the test holds the mutex.
    unsafe impl Sync for Counter {}

    #[test]
    fn mutual_exclusion_four_threads_ten_thousand_each() {
        const THREADS: u64 = 4;
        const ROUNDS: u64 = 10_000;
        let m = Arc::new(MutexWords::new());
        let c = Arc::new(Counter(UnsafeCell::new(0)));
        let me = Owner::current();
        let t0 = Instant::now();
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (m, c) = (m.clone(), c.clone());
                std::thread::spawn(move || {
                    let live = ProcLiveness::default();
                    for _ in 0..ROUNDS {
                        assert_eq!(m.lock(&OsPark, &live, me, Deadline::Never), Ok(Locked::Acquired));
                        // SAFETY: we hold the mutex, so no other thread touches the cell.
                        unsafe { *c.0.get() += 1 };
                        m.unlock(&OsPark, me).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(t0.elapsed() < Duration::from_secs(60));
        assert_eq!(m.try_lock(&OsPark, &ProcLiveness::default(), me), Ok(Locked::Acquired));
        // SAFETY: we hold the mutex and every other thread has been joined.
        assert_eq!(unsafe { *c.0.get() }, THREADS * ROUNDS);
        m.unlock(&OsPark, me).unwrap();
    }

    #[test]
    fn dead_owner_is_taken_over_and_repaired() {
        let m = MutexWords::new();
        let me = Owner::current();
        m.lock.store(foreign().word(), StdOrdering::SeqCst); // a process that died holding it
        let live = FakeLiveness::dead(FOREIGN_PID);
        assert_eq!(m.lock(&OsPark, &live, me, soon(5_000)), Ok(Locked::OwnerDied));
        assert_eq!(m.owner(), Ok(Some(me)));
        assert_eq!(m.health(), Ok(Health::Inconsistent));
        m.mark_consistent(me).unwrap();
        m.mark_consistent(me).unwrap(); // idempotent
        m.unlock(&OsPark, me).unwrap();
        assert_eq!(m.health(), Ok(Health::Consistent));
        assert_eq!(m.lock(&OsPark, &live, me, soon(100)), Ok(Locked::Acquired));
        m.unlock(&OsPark, me).unwrap();
    }

    /// Counts the liveness questions; `then` runs inside `is_dead`, to play a racing survivor.
    struct Asked<'a> {
        dead: bool,
        asked: AtomicUsize,
        then: Option<Box<dyn Fn() + 'a>>,
    }

    impl<'a> Asked<'a> {
        fn new(dead: bool) -> Asked<'a> {
            Asked { dead, asked: AtomicUsize::new(0), then: None }
        }
        fn racing(then: impl Fn() + 'a) -> Asked<'a> {
            Asked { then: Some(Box::new(then)), ..Asked::new(true) }
        }
        fn asked(&self) -> usize {
            self.asked.load(StdOrdering::SeqCst)
        }
    }

    impl Liveness for Asked<'_> {
        fn is_dead(&self, _pid: u32, _start: Option<u32>) -> bool {
            self.asked.fetch_add(1, StdOrdering::SeqCst);
            if let Some(f) = &self.then {
                f();
            }
            self.dead
        }
    }

    #[test]
    fn try_lock_takes_over_a_dead_owner_without_waiting() {
        let m = MutexWords::new();
        let me = Owner::current();
        // Free: no liveness question at all.
        let alive = Asked::new(false);
        assert_eq!(m.try_lock(&OsPark, &alive, me), Ok(Locked::Acquired));
        assert_eq!(alive.asked(), 0);
        m.unlock(&OsPark, me).unwrap();
        // A live (or unknown) owner: asked once, never taken over.
        m.lock.store(foreign().word(), StdOrdering::SeqCst);
        assert_eq!(m.try_lock(&OsPark, &alive, me), Err(LockError::Timeout));
        assert_eq!(alive.asked(), 1);
        assert_eq!(m.owner(), Ok(Some(foreign())), "a live owner keeps its lock");
        assert_eq!(m.health(), Ok(Health::Consistent));
        // A dead owner: asked once, taken over at once, exactly as `lock` does.
        let dead = Asked::new(true);
        let park = CountingPark::default();
        let t0 = Instant::now();
        assert_eq!(m.try_lock(&park, &dead, me), Ok(Locked::OwnerDied));
        assert!(t0.elapsed() < Duration::from_secs(1), "try_lock took {:?}", t0.elapsed());
        assert_eq!(dead.asked(), 1);
        assert_eq!(park.wakes.load(StdOrdering::SeqCst), 0);
        assert_eq!(m.owner(), Ok(Some(me)));
        assert_eq!(m.health(), Ok(Health::Inconsistent));
        // Now we hold it (and are alive): a second try_lock is refused, nothing changes.
        assert_eq!(m.try_lock(&OsPark, &ProcLiveness::default(), me), Err(LockError::Timeout));
        assert_eq!(m.health(), Ok(Health::Inconsistent));
        m.mark_consistent(me).unwrap();
        m.unlock(&OsPark, me).unwrap();
        assert_eq!(m.try_lock(&OsPark, &dead, me), Ok(Locked::Acquired));
        m.unlock(&OsPark, me).unwrap();
        // A dead taker that never decided: the next try_lock gets OwnerDied again.
        m.lock.store(foreign().word(), StdOrdering::SeqCst);
        m.health.store(INCONSISTENT, StdOrdering::SeqCst);
        assert_eq!(m.try_lock(&OsPark, &dead, me), Ok(Locked::OwnerDied));
        // Left without a decision: unrecoverable, also for try_lock, and the word stays free.
        m.unlock(&OsPark, me).unwrap();
        assert_eq!(m.try_lock(&OsPark, &dead, me), Err(LockError::Unrecoverable));
        assert_eq!(m.owner(), Ok(None));
        // A dead owner that wrote UNRECOVERABLE but died before releasing: refused, untouched.
        m.lock.store(foreign().word(), StdOrdering::SeqCst);
        assert_eq!(m.try_lock(&OsPark, &dead, me), Err(LockError::Unrecoverable));
        assert_eq!(m.owner(), Ok(Some(foreign())));
    }

    #[test]
    fn try_lock_losing_the_takeover_race_never_steals() {
        let me = Owner::current();
        let other = Owner::new(FOREIGN_PID + 1, Some(999)).unwrap();
        // Between our liveness question and our CAS, another survivor takes over: we lose the
        // CAS, find the lock held by a live owner, and give up without asking again.
        let m = MutexWords::new();
        m.lock.store(foreign().word(), StdOrdering::SeqCst);
        let racer = Asked::racing(|| m.lock.store(other.word(), StdOrdering::SeqCst));
        assert_eq!(m.try_lock(&OsPark, &racer, me), Err(LockError::Timeout));
        assert_eq!(racer.asked(), 1, "one liveness question per try_lock");
        assert_eq!(m.owner(), Ok(Some(other)), "the winner keeps the lock");
        // ... and has already unlocked again: the one retry gets the free lock.
        let m = MutexWords::new();
        m.lock.store(foreign().word(), StdOrdering::SeqCst);
        let racer = Asked::racing(|| m.lock.store(0, StdOrdering::SeqCst));
        assert_eq!(m.try_lock(&OsPark, &racer, me), Ok(Locked::Acquired));
        assert_eq!(racer.asked(), 1);
        assert_eq!(m.owner(), Ok(Some(me)));
        m.unlock(&OsPark, me).unwrap();
    }

    #[test]
    fn try_lock_treats_an_owner_it_cannot_judge_as_alive() {
        let me = Owner::current();
        let live = ProcLiveness::default();
        let m = MutexWords::new();
        // This very process, known by its pid only (NO_START): alive.
        m.lock.store(Owner::new(me.pid(), None).unwrap().word(), StdOrdering::SeqCst);
        assert_eq!(m.try_lock(&OsPark, &live, me), Err(LockError::Timeout));
        // pid 1 (init, or this container's first process) with its real start time: alive, even
        // though `kill(1, 0)` may be refused.
        let init = crate::process::ProcessId::of(1).expect("pid 1 exists");
        let init = Owner::new(1, Some(init.start_time)).unwrap();
        m.lock.store(init.word(), StdOrdering::SeqCst);
        assert_eq!(m.try_lock(&OsPark, &live, me), Err(LockError::Timeout));
        assert_eq!(m.owner(), Ok(Some(init)));
    }

    #[test]
    fn lock_with_a_passed_deadline_still_checks_the_owner_once() {
        let m = MutexWords::new();
        let me = Owner::current();
        m.lock.store(foreign().word(), StdOrdering::SeqCst);
        let alive = Asked::new(false);
        assert_eq!(m.lock(&OsPark, &alive, me, Deadline::Now), Err(LockError::Timeout));
        assert_eq!(alive.asked(), 1);
        assert_eq!(m.lock(&OsPark, &Asked::new(true), me, Deadline::Now), Ok(Locked::OwnerDied));
    }

    #[test]
    fn a_takeover_without_a_decision_makes_the_mutex_unrecoverable() {
        let m = MutexWords::new();
        let park = OsPark;
        let me = Owner::current();
        let live = FakeLiveness::dead(FOREIGN_PID);
        m.lock.store(foreign().word(), StdOrdering::SeqCst);
        assert_eq!(m.lock(&park, &live, me, soon(5_000)), Ok(Locked::OwnerDied));
        m.unlock(&park, me).unwrap(); // no mark_consistent
        assert_eq!(m.health(), Ok(Health::Unrecoverable));
        assert_eq!(m.owner(), Ok(None));
        assert_eq!(m.lock(&park, &live, me, soon(100)), Err(LockError::Unrecoverable));
        assert_eq!(m.try_lock(&park, &live, me), Err(LockError::Unrecoverable));
        assert_eq!(m.owner(), Ok(None), "a refused lock leaves the mutex free");
    }

    #[test]
    fn an_owner_that_dies_before_deciding_passes_ownerdied_on() {
        let m = MutexWords::new();
        let me = Owner::current();
        // The first taker (FOREIGN_PID) died after taking over, health still INCONSISTENT.
        m.lock.store(foreign().word(), StdOrdering::SeqCst);
        m.health.store(INCONSISTENT, StdOrdering::SeqCst);
        let live = FakeLiveness::dead(FOREIGN_PID);
        assert_eq!(m.lock(&OsPark, &live, me, soon(5_000)), Ok(Locked::OwnerDied));
        // It died while unlocking without a decision (UNRECOVERABLE written, lock not released).
        m.health.store(UNRECOVERABLE, StdOrdering::SeqCst);
        m.lock.store(foreign().word(), StdOrdering::SeqCst);
        assert_eq!(m.lock(&OsPark, &live, me, soon(5_000)), Err(LockError::Unrecoverable));
    }

    #[test]
    fn a_blocked_locker_notices_the_death_within_a_few_intervals() {
        let m = Arc::new(MutexWords::new());
        let me = Owner::current();
        m.lock.store(foreign().word(), StdOrdering::SeqCst);
        let live = Arc::new(FakeLiveness::alive(FOREIGN_PID));
        let locker = {
            let (m, live) = (m.clone(), live.clone());
            std::thread::spawn(move || m.lock(&OsPark, &*live, me, soon(10_000)))
        };
        until_waiting(&m);
        let t0 = Instant::now();
        live.dead.store(true, StdOrdering::SeqCst); // nobody wakes the locker: it must poll
        assert_eq!(locker.join().unwrap(), Ok(Locked::OwnerDied));
        assert!(t0.elapsed() < Duration::from_secs(2), "noticed after {:?}", t0.elapsed());
    }

    #[test]
    fn a_notified_death_wakes_the_locker() {
        let m = Arc::new(MutexWords::new());
        let me = Owner::current();
        m.lock.store(foreign().word(), StdOrdering::SeqCst);
        let live = Arc::new(FakeLiveness { interval: None, ..FakeLiveness::alive(FOREIGN_PID) });
        let locker = {
            let (m, live) = (m.clone(), live.clone());
            std::thread::spawn(move || m.lock(&OsPark, &*live, me, soon(10_000)))
        };
        until_waiting(&m);
        let t0 = Instant::now();
        live.dead.store(true, StdOrdering::SeqCst);
        m.wake_waiters(&OsPark);
        assert_eq!(locker.join().unwrap(), Ok(Locked::OwnerDied));
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn two_lockers_one_takeover() {
        let m = Arc::new(MutexWords::new());
        let me = Owner::current();
        m.lock.store(foreign().word(), StdOrdering::SeqCst);
        let results: Vec<_> = (0..2)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    let live = FakeLiveness::dead(FOREIGN_PID);
                    let r = m.lock(&OsPark, &live, me, soon(10_000));
                    if r == Ok(Locked::OwnerDied) {
                        m.mark_consistent(me).unwrap();
                    }
                    std::thread::sleep(Duration::from_millis(5));
                    m.unlock(&OsPark, me).unwrap();
                    r
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let died = results.iter().filter(|r| **r == Ok(Locked::OwnerDied)).count();
        let acquired = results.iter().filter(|r| **r == Ok(Locked::Acquired)).count();
        assert_eq!((died, acquired), (1, 1), "{results:?}");
    }

    #[test]
    fn corrupt_words_give_errors_not_panics() {
        let me = Owner::current();
        let live = FakeLiveness::dead(FOREIGN_PID);
        for bad in [1u64 << 63 | 5, 5 << 32, NO_START | 1 << 40 | 3] {
            let m = MutexWords::new();
            m.lock.store(bad, StdOrdering::SeqCst);
            assert!(matches!(m.lock(&OsPark, &live, me, soon(10)), Err(LockError::Corrupt(_))));
            assert!(matches!(m.try_lock(&OsPark, &live, me), Err(LockError::Corrupt(_))));
            assert!(m.owner().is_err());
            assert!(m.unlock(&OsPark, me).is_err());
            assert_eq!(m.lock.load(StdOrdering::SeqCst), bad, "a corrupt word is never overwritten");
        }
        // A corrupt health word: the lock is taken, found corrupt, and given back.
        let m = MutexWords::new();
        m.health.store(9, StdOrdering::SeqCst);
        assert!(matches!(m.lock(&OsPark, &live, me, soon(10)), Err(LockError::Corrupt(_))));
        assert_eq!(m.owner(), Ok(None));
        assert!(m.health().is_err());
        // Unlocking or repairing a lock we do not hold.
        let m = MutexWords::new();
        assert!(m.unlock(&OsPark, me).is_err());
        assert!(matches!(m.mark_consistent(me), Err(LockError::Corrupt(_))));
    }

    /// The production liveness against real processes: alive, zombie, reaped, reused pid.
    #[test]
    fn proc_liveness_tells_dead_from_alive() {
        use crate::process::ProcessId;
        let live = ProcLiveness::default();
        let me = Owner::current();
        assert!(!live.is_dead(me.pid(), me.start_low30()));
        assert!(!live.is_dead(me.pid(), None));
        // Our pid with another start time: the process that had it is gone.
        let other = me.start_low30().map(|s| (s + 1) & START_MASK as u32);
        assert!(live.is_dead(me.pid(), other));

        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let id = ProcessId::of(child.id()).unwrap();
        let owner = Owner::new(id.pid, Some(id.start_time)).unwrap();
        assert!(!live.is_dead(owner.pid(), owner.start_low30()));
        child.kill().unwrap();
        // Until `wait`, the child is a zombie: dead all the same.
        let t0 = Instant::now();
        while !live.is_dead(owner.pid(), owner.start_low30()) {
            assert!(t0.elapsed() < Duration::from_secs(5), "a killed (zombie) child still looks alive");
            std::thread::sleep(Duration::from_millis(1));
        }
        // A lock it held is taken over by a real `lock` call.
        let m = MutexWords::new();
        m.lock.store(owner.word(), StdOrdering::SeqCst);
        assert_eq!(m.lock(&OsPark, &live, me, soon(5_000)), Ok(Locked::OwnerDied));
        child.wait().unwrap();
        assert!(live.is_dead(owner.pid(), owner.start_low30()));
        assert!(live.is_dead(owner.pid(), None));
    }
}
