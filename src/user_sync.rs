//! Cross-process events and crash-aware mutexes, carried by every channel segment (header lines
//! 9 and 10: [`EVENTS`] events, [`MUTEXES`] mutexes). Any process that has the channel open
//! can use them; they need no attachment. The protocols are in `event.rs` and
//! `robust_mutex.rs` (loom-checked); this module is the safe, documented face.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ch = shmq::Channel::anonymous(&shmq::Config::new())?;
//! // e.g. "the model is loaded": every runner waits for it (manual reset: stays set).
//! let loaded = ch.event(0, shmq::Reset::Manual)?;
//! loaded.set()?;
//! assert!(loaded.wait_timeout(std::time::Duration::from_secs(1))?);
//! # Ok(()) }
//! ```

use crate::error::Corrupt;
use crate::event::EventWords;
pub use crate::event::Reset;
use crate::layout::{EVENTS, MUTEXES};
pub use crate::robust_mutex::LockError;
use crate::robust_mutex::{Locked, MutexWords, Owner, ProcLiveness};
use crate::shared::Shared;
use crate::wait::{Deadline, OsPark};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why [`Channel::event`](crate::Channel::event) or [`Channel::mutex`](crate::Channel::mutex)
/// refused an index.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("there is no {what} {index} in a channel segment (there are {count})")]
pub struct NoSuchObject {
    what: &'static str,
    index: usize,
    count: usize,
}

/// A cross-process event in a channel segment: `set` wakes the waiters (without a system call
/// when nobody waits), `wait` sleeps on a shared futex until the event is set.
///
/// With [`Reset::Auto`] each `set` releases one waiting call and the event is unset again;
/// with [`Reset::Manual`] it stays set (every waiter returns) until [`reset`](Event::reset).
/// All processes using one event index should agree on its mode.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ch = shmq::Channel::anonymous(&shmq::Config::new())?;
/// let ev = ch.event(1, shmq::Reset::Auto)?;
/// let waiter = {
///     let ev = ev.clone();
///     std::thread::spawn(move || ev.wait())
/// };
/// ev.set()?;
/// waiter.join().unwrap()?;
/// assert!(!ev.is_set()?, "an auto-reset event is consumed by the waiter");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Event {
    shared: Arc<Shared>,
    index: usize,
    reset: Reset,
}

impl Event {
    pub(crate) fn new(shared: &Arc<Shared>, index: usize, reset: Reset) -> Result<Event, NoSuchObject> {
        if index >= EVENTS {
            return Err(NoSuchObject { what: "event", index, count: EVENTS });
        }
        Ok(Event { shared: shared.clone(), index, reset })
    }

    fn words(&self) -> &EventWords {
        &self.shared.seg.header().events.events[self.index]
    }

    /// Set the event, waking the waiters if there are any. Returns whether it was already set.
    pub fn set(&self) -> Result<bool, Corrupt> {
        self.words().set(&OsPark)
    }

    /// Unset the event. Returns whether it was set.
    pub fn reset(&self) -> Result<bool, Corrupt> {
        self.words().reset()
    }

    /// Whether the event is set now.
    pub fn is_set(&self) -> Result<bool, Corrupt> {
        self.words().is_set()
    }

    /// Wait until the event is set (consuming it if auto-reset).
    pub fn wait(&self) -> Result<(), Corrupt> {
        self.words().wait(&OsPark, self.reset, Deadline::Never).map(|_| ())
    }

    /// Wait at most `timeout`; `Ok(false)` if the event was not set in time.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, Corrupt> {
        self.words().wait(&OsPark, self.reset, Deadline::after(timeout))
    }

    /// Wait until `deadline`; `Ok(false)` if the event was not set in time.
    pub fn wait_deadline(&self, deadline: Instant) -> Result<bool, Corrupt> {
        self.words().wait(&OsPark, self.reset, Deadline::At(deadline))
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event").field("index", &self.index).field("reset", &self.reset).finish()
    }
}

/// A cross-process mutex in a channel segment that knows its owner (pid + process start time,
/// so a reused pid cannot fool it). If the owner dies holding it, the next locker gets
/// [`Lock::OwnerDied`] with the guard and decides: repair the protected data and call
/// [`MutexGuard::mark_consistent`], or drop the guard without doing so, which makes the mutex
/// unrecoverable (every later `lock` fails with [`LockError::Unrecoverable`]). Never silently
/// recovered, never deadlocked: a waiter checks the owner's liveness every 2 ms, and
/// [`try_lock`](Mutex::try_lock) checks it once, without waiting.
///
/// The mutex is per process: threads of one process exclude each other too, but a thread must
/// not lock it twice (that deadlocks, as with `std::sync::Mutex`).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ch = shmq::Channel::anonymous(&shmq::Config::new())?;
/// let m = ch.mutex(0)?;
/// match m.lock()? {
///     shmq::Lock::Acquired(_guard) => { /* update the shared state */ }
///     shmq::Lock::OwnerDied(guard) => {
///         /* repair the shared state, then: */
///         guard.mark_consistent()?;
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Mutex {
    shared: Arc<Shared>,
    index: usize,
}

/// What [`Mutex::lock`] (or `try_lock`, `lock_timeout`) got.
#[derive(Debug)]
#[must_use = "OwnerDied means the protected data may be half-updated"]
pub enum Lock<'a> {
    /// The mutex, as its last owner left it.
    Acquired(MutexGuard<'a>),
    /// The mutex, taken over from an owner that died holding it: the data it protects may be
    /// half-updated. Repair it and call [`MutexGuard::mark_consistent`]; dropping the guard
    /// without that makes the mutex unrecoverable.
    OwnerDied(MutexGuard<'a>),
}

impl<'a> Lock<'a> {
    /// The guard, whichever way it was obtained.
    pub fn into_guard(self) -> MutexGuard<'a> {
        match self {
            Lock::Acquired(g) | Lock::OwnerDied(g) => g,
        }
    }

    /// True for `OwnerDied`.
    pub fn owner_died(&self) -> bool {
        matches!(self, Lock::OwnerDied(_))
    }
}

/// The mutex is held while this lives; dropping it unlocks.
#[derive(Debug)]
pub struct MutexGuard<'a> {
    mutex: &'a Mutex,
    me: Owner,
}

/// This process as a mutex owner (`ProcessId::me` is cached, so this costs no system call).
fn owner() -> Owner {
    let me = crate::process::ProcessId::me();
    Owner::new(me.pid, (me.start_time != 0).then_some(me.start_time)).unwrap_or_else(Owner::current)
}

impl Mutex {
    pub(crate) fn new(shared: &Arc<Shared>, index: usize) -> Result<Mutex, NoSuchObject> {
        if index >= MUTEXES {
            return Err(NoSuchObject { what: "mutex", index, count: MUTEXES });
        }
        Ok(Mutex { shared: shared.clone(), index })
    }

    fn words(&self) -> &MutexWords {
        &self.shared.seg.header().mutexes.mutexes[self.index]
    }

    fn locked(&self, me: Owner, l: Locked) -> Lock<'_> {
        let guard = MutexGuard { mutex: self, me };
        match l {
            Locked::Acquired => Lock::Acquired(guard),
            Locked::OwnerDied => Lock::OwnerDied(guard),
        }
    }

    fn lock_until(&self, deadline: Deadline) -> Result<Lock<'_>, LockError> {
        let me = owner();
        let l = self.words().lock(&OsPark, &ProcLiveness::default(), me, deadline)?;
        Ok(self.locked(me, l))
    }

    /// Lock, waiting as long as the owner lives.
    pub fn lock(&self) -> Result<Lock<'_>, LockError> {
        self.lock_until(Deadline::Never)
    }

    /// Lock without waiting. A free mutex gives [`Lock::Acquired`]. A mutex whose holder has
    /// died is taken over at once, exactly as a blocked [`lock`](Mutex::lock) would after its
    /// next liveness check: [`Lock::OwnerDied`], and the data must be repaired and marked
    /// consistent. A mutex held by a live process (this one included), or by one whose liveness
    /// `/proc` cannot tell, gives `Err(LockError::Timeout)`; an unrecoverable one
    /// `Err(LockError::Unrecoverable)`. Costs a CAS, plus one `/proc` read when the mutex is held.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = shmq::Channel::anonymous(&shmq::Config::new())?;
    /// let m = ch.mutex(0)?;
    /// let held = m.try_lock()?; // free: Acquired
    /// assert!(!held.owner_died());
    /// // Held by a live process (here: this one), so try_lock gives up at once.
    /// assert!(matches!(m.try_lock(), Err(shmq::LockError::Timeout)));
    /// drop(held);
    /// match m.try_lock()? {
    ///     shmq::Lock::Acquired(_guard) => { /* update the shared state */ }
    ///     shmq::Lock::OwnerDied(guard) => {
    ///         // The holder died holding it: repair the shared state, then:
    ///         guard.mark_consistent()?;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn try_lock(&self) -> Result<Lock<'_>, LockError> {
        let me = owner();
        let l = self.words().try_lock(&OsPark, &ProcLiveness::default(), me)?;
        Ok(self.locked(me, l))
    }

    /// Lock, waiting at most `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Lock<'_>, LockError> {
        self.lock_until(Deadline::after(timeout))
    }

    /// Whether the mutex was made unrecoverable (an owner died and nobody repaired the data).
    pub fn is_unrecoverable(&self) -> Result<bool, Corrupt> {
        Ok(self.words().health()? == crate::robust_mutex::Health::Unrecoverable)
    }
}

impl std::fmt::Debug for Mutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mutex").field("index", &self.index).finish()
    }
}

impl MutexGuard<'_> {
    /// The data is repaired: the mutex is consistent again (after [`Lock::OwnerDied`]).
    pub fn mark_consistent(&self) -> Result<(), LockError> {
        self.mutex.words().mark_consistent(self.me)
    }
}

impl Drop for MutexGuard<'_> {
    fn drop(&mut self) {
        // A corrupt health word is reported by the next lock.
        let _ = self.mutex.words().unlock(&OsPark, self.me);
    }
}
