//! How blocking calls wait: a short spin, then sleep on a futex word.
//!
//! The [`Park`] trait is the seam between the protocols and the OS: production code uses
//! [`OsPark`] (shared futexes), loom models use a mutex + condvar model with the same
//! "sleep only while the word still holds the value I read" contract.

use crate::futex::Wake;
use crate::sync::AtomicU32;
use std::time::{Duration, Instant};

/// Sleep on / wake a 32-bit word.
pub trait Park {
    /// Sleep while `*word == expected`, until woken or `deadline`. Spurious returns are allowed.
    fn wait(&self, word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Wake;
    /// Wake every sleeper on `word`.
    fn wake_all(&self, word: &AtomicU32);
}

/// The OS futex.
#[cfg(not(shmq_loom))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OsPark;

/// No peer table behind it: the defaults (nobody gone, no intents).
#[cfg(not(shmq_loom))]
impl crate::ring::intent::Owners for OsPark {}

#[cfg(not(shmq_loom))]
impl Park for OsPark {
    #[inline]
    fn wait(&self, word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Wake {
        crate::futex::wait(word, expected, deadline)
    }
    #[inline]
    fn wake_all(&self, word: &AtomicU32) {
        crate::futex::wake_all(word);
    }
}

/// A loom model of a futex: the value check and the sleep are atomic with respect to wakers,
/// exactly the guarantee FUTEX_WAIT gives. Timeouts are not modelled (a wait blocks until woken),
/// so a lost wake-up shows up as a loom deadlock.
///
/// Wakes are per word, as with a real futex: a `wake_all` on `rx_seq` does not release a sleeper
/// on `tx_seq`. (One shared condvar would wake every sleeper on every wake and so hide a missing
/// wake on the other word.) Each word has a wake generation; a sleeper returns only once the
/// generation of *its* word has moved.
#[cfg(shmq_loom)]
#[doc(hidden)]
pub struct LoomPark {
    /// (address of a word, number of `wake_all` calls on it so far).
    wakes: loom::sync::Mutex<Vec<(usize, u64)>>,
    cond: loom::sync::Condvar,
}

#[cfg(shmq_loom)]
impl LoomPark {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        LoomPark { wakes: loom::sync::Mutex::new(Vec::new()), cond: loom::sync::Condvar::new() }
    }

    fn generation(wakes: &[(usize, u64)], key: usize) -> u64 {
        wakes.iter().find(|(k, _)| *k == key).map_or(0, |(_, g)| *g)
    }
}

/// No peer table behind it: the defaults (nobody gone, no intents).
#[cfg(shmq_loom)]
impl crate::ring::intent::Owners for LoomPark {}

#[cfg(shmq_loom)]
impl Park for LoomPark {
    fn wait(&self, word: &AtomicU32, expected: u32, _deadline: Option<Instant>) -> Wake {
        let key = word as *const AtomicU32 as usize;
        let mut wakes = self.wakes.lock().unwrap();
        if word.load(crate::sync::Ordering::SeqCst) != expected {
            return Wake::Woken;
        }
        let seen = Self::generation(&wakes, key);
        while Self::generation(&wakes, key) == seen {
            wakes = self.cond.wait(wakes).unwrap();
        }
        Wake::Woken
    }
    fn wake_all(&self, word: &AtomicU32) {
        let key = word as *const AtomicU32 as usize;
        let mut wakes = self.wakes.lock().unwrap();
        match wakes.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => *g += 1,
            None => wakes.push((key, 1)),
        }
        self.cond.notify_all();
    }
}

/// Waiter-counted sleep (MPSC/MPMC), the sleeper's half. `seq` is an event count, `waiters`
/// says "someone may be asleep on it"; `blocked` re-checks the condition after announcing
/// ourselves.
///
/// SYNC(waiters): Dekker handshake through two SeqCst fences. The sleeper increments `waiters`,
/// fences, then reads the condition; the waker (`wake_counted`) makes the condition true, fences,
/// then reads `waiters`. The fences forbid both reads missing the other side's write: either the
/// sleeper sees the condition and does not sleep, or the waker sees the sleeper and wakes it.
/// `seq` is read before anything else (Acquire, paired with the Release bump), so a bump that
/// lands between our check and the futex call makes FUTEX_WAIT return at once.
///
/// The waker *clears* `waiters` (swap to 0) when it wakes, and wakes everybody; sleepers never
/// decrement. So one sleep costs the wakers one FUTEX_WAKE, not one per commit until the sleeper
/// has run (measured: a receiver paid a futex_wake per message while a sender slept). A sleeper
/// that did not sleep, or timed out, leaves its count behind: at most one needless wake later.
pub(crate) fn sleep_counted<P: Park, E>(
    park: &P,
    seq: &AtomicU32,
    waiters: &AtomicU32,
    deadline: Deadline,
    blocked: impl FnOnce() -> Result<bool, E>,
) -> Result<Wake, E> {
    use crate::sync::{Ordering, fence};
    let seen = seq.load(Ordering::Acquire);
    waiters.fetch_add(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    match blocked() {
        Ok(true) => Ok(park.wait(seq, seen, deadline.instant())),
        Ok(false) => Ok(Wake::Woken),
        Err(e) => Err(e),
    }
}

/// Waiter-counted wake, the waker's half: call after making the condition true. Costs a fence
/// and a load of a read-mostly word when nobody sleeps; a swap and a syscall when somebody does.
/// See `sleep_counted`.
#[inline]
pub(crate) fn wake_counted<P: Park>(park: &P, seq: &AtomicU32, waiters: &AtomicU32) {
    use crate::sync::{Ordering, fence};
    fence(Ordering::SeqCst);
    if waiters.load(Ordering::Relaxed) != 0 && waiters.swap(0, Ordering::Relaxed) != 0 {
        // SYNC(waiters): Release bump; pairs with the Acquire load at the top of `sleep_counted`.
        seq.fetch_add(1, Ordering::Release);
        park.wake_all(seq);
    }
}

/// When a blocking call gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    /// Do not wait at all (`try_*`).
    Now,
    /// Wait as long as it takes.
    Never,
    /// Wait until this instant.
    At(Instant),
}

impl Deadline {
    pub(crate) fn after(timeout: Duration) -> Deadline {
        match Instant::now().checked_add(timeout) {
            Some(t) => Deadline::At(t),
            None => Deadline::Never,
        }
    }

    pub(crate) fn passed(self) -> bool {
        match self {
            Deadline::Now => true,
            Deadline::Never => false,
            Deadline::At(t) => Instant::now() >= t,
        }
    }

    pub(crate) fn instant(self) -> Option<Instant> {
        match self {
            Deadline::At(t) => Some(t),
            _ => None,
        }
    }
}

/// The spin phase of a blocking call: busy `pause` for about a microsecond, then `sched_yield`
/// until the budget is used. Spinning keeps a round trip in the fast path when the peer runs on
/// another CPU (waking a sleeping process there costs ~35 µs on this VM); yielding soon lets a
/// peer pinned to the *same* CPU run (a count of 142 pauses cost 5.5 µs per hop there, measured
/// by the benches, so the pause phase is bounded by time, not by count). Once the budget is
/// spent, the caller sleeps and burns no CPU.
pub(crate) struct Spinner {
    budget: Duration,
    start: Option<Instant>,
}

/// How long a spinner pauses before it starts yielding.
const PAUSE_PHASE: Duration = Duration::from_micros(1);

impl Spinner {
    pub(crate) fn new(budget: Duration) -> Spinner {
        Spinner { budget, start: None }
    }

    /// Spin once more; false when the budget is spent and the caller should sleep.
    pub(crate) fn spin(&mut self, deadline: Deadline) -> bool {
        if self.budget.is_zero() || deadline == Deadline::Now {
            return false;
        }
        let now = Instant::now();
        let spent = now - *self.start.get_or_insert(now);
        if spent >= self.budget || deadline.passed() {
            return false;
        }
        if spent < PAUSE_PHASE {
            for _ in 0..8 {
                crate::sync::spin_hint();
            }
        } else {
            crate::sync::yield_now();
        }
        true
    }
}

/// Helpers shared by the unit tests of the protocols built on [`Park`].
#[cfg(all(test, not(shmq_loom)))]
pub(crate) mod test_support {
    use super::{OsPark, Park};
    use crate::futex::Wake;
    use crate::sync::AtomicU32;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    /// The shared futex, counting the FUTEX_WAKE calls: shows which paths make a system call.
    #[derive(Debug, Default)]
    pub(crate) struct CountingPark {
        /// How many times `wake_all` was called.
        pub(crate) wakes: AtomicUsize,
    }

    impl Park for CountingPark {
        fn wait(&self, word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Wake {
            OsPark.wait(word, expected, deadline)
        }
        fn wake_all(&self, word: &AtomicU32) {
            self.wakes.fetch_add(1, Ordering::SeqCst);
            OsPark.wake_all(word);
        }
    }
}
