//! The lifecycle word: ACTIVE → DRAINING → CLOSING → CLOSED.
//!
//! | state    | send                       | recv                                         |
//! |----------|----------------------------|----------------------------------------------|
//! | ACTIVE   | accepted if room           | next message, or wait                         |
//! | DRAINING | refused, message handed back | everything committed before the close, then end-of-stream |
//! | CLOSING  | refused                    | end-of-stream now; the backlog is discarded and counted |
//! | CLOSED   | refused                    | end-of-stream                                 |
//!
//! Transitions only ever raise the state's rank, so every transition is one CAS loop that gives
//! up when the word is already at or past the target: close is idempotent, callable from any
//! thread of any process in any order, and two closers cannot undo each other.
//!
//! The state word says *which* kind of close happened. The linearisation point for "no more
//! sends" is a separate bit, `TAIL_CLOSED` in the tail word, because a send commits by a CAS on
//! that same word (see `close_channel` and DESIGN.md, "the send/close race").

use crate::error::Corrupt;
use crate::layout::{RingCtl, TAIL_CLOSED};
use crate::sync::{AtomicU32, Ordering};
use crate::wait::Park;

/// The state of a channel, as stored in its lifecycle word.
///
/// ```
/// use shmq::State;
/// assert!(State::Active < State::Draining && State::Closing < State::Closed);
/// assert_eq!(State::Draining.to_string(), "DRAINING");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum State {
    /// Sends are accepted, receives return messages.
    Active = 1,
    /// No new sends; the receiver drains what was committed, then sees end-of-stream.
    Draining = 2,
    /// No new sends; the receiver sees end-of-stream at once, the backlog is discarded.
    Closing = 3,
    /// Finished. The segment may be unlinked.
    Closed = 4,
}

impl State {
    /// Decode a raw word read from shared memory.
    pub(crate) fn from_raw(raw: u32) -> Result<State, Corrupt> {
        match raw {
            1 => Ok(State::Active),
            2 => Ok(State::Draining),
            3 => Ok(State::Closing),
            4 => Ok(State::Closed),
            other => Err(Corrupt::new(format!("lifecycle word holds unknown state {other}"))),
        }
    }

    /// True once sends are refused.
    pub fn is_closed_for_send(self) -> bool {
        self != State::Active
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Active => "ACTIVE",
            State::Draining => "DRAINING",
            State::Closing => "CLOSING",
            State::Closed => "CLOSED",
        })
    }
}

/// Read the lifecycle word.
// SYNC(state): Acquire; pairs with the AcqRel CAS in `advance`, so whoever sees a state also
// sees the counters and timestamps written before it.
pub fn load(word: &AtomicU32) -> Result<State, Corrupt> {
    State::from_raw(word.load(Ordering::Acquire))
}

/// Raise the state to at least `to`. Returns the state found before, or `Corrupt` for an
/// unknown value (the word is then left alone).
pub fn advance(ctl: &RingCtl, to: State) -> Result<State, Corrupt> {
    let word = &ctl.lifecycle.state;
    // Start from a guess and let the CAS read the word (its failure ordering is Acquire, like a
    // load): a close costs at most one extra failed CAS, and a model checker sees one atomic
    // access per attempt. (loom 0.7 never reorders a CAS before another thread's earlier load
    // when the CAS's own thread loaded the word just before it, tokio-rs/loom#392; with a plain
    // load here, the models never let a close finish before a peer's first look at the state.)
    // `cur` is always ACTIVE or a validated state below `to`, so the CAS only ever raises it.
    let mut cur = State::Active as u32;
    loop {
        // SYNC(state): AcqRel on success, Acquire on failure; pairs with `load`.
        match word.compare_exchange_weak(cur, to as u32, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                stamp(ctl, to);
                return State::from_raw(cur);
            }
            Err(actual) => {
                let found = State::from_raw(actual)?;
                if found >= to {
                    return Ok(found);
                }
                cur = actual;
            }
        }
    }
}

/// Record when a state was first entered (diagnostics; a lost race just keeps the first stamp).
fn stamp(ctl: &RingCtl, to: State) {
    let slot = match to {
        State::Draining => &ctl.lifecycle.t_draining,
        State::Closing => &ctl.lifecycle.t_closing,
        State::Closed => &ctl.lifecycle.t_closed,
        State::Active => return,
    };
    let _ = slot.compare_exchange(0, crate::clock::monotonic_ns().max(1), Ordering::Relaxed, Ordering::Relaxed);
}

/// Close a channel: raise the state to `to` (DRAINING or CLOSING), set `TAIL_CLOSED` so that no
/// send can commit from now on, and wake every sleeper on both sides.
///
/// Each step is idempotent and the whole is safe to repeat or to run concurrently from many
/// places; a later observer that finds the state raised but the bit missing (a closer died in
/// between) repeats it (`ensure_closed_bit`).
pub fn close_channel<P: Park>(ctl: &RingCtl, park: &P, to: State) -> Result<State, Corrupt> {
    debug_assert!(to == State::Draining || to == State::Closing);
    let before = advance(ctl, to)?;
    // SYNC(closed-bit): AcqRel RMW on the tail word. A producer commits with a CAS on the same
    // word, so the commit and this RMW are totally ordered: a commit ordered before it is
    // delivered (the receiver drains to the tail it reads with the bit), a commit ordered after
    // it fails and the message is handed back.
    ctl.producer.tail.fetch_or(TAIL_CLOSED, Ordering::AcqRel);
    wake_everyone(ctl, park);
    Ok(before)
}

/// Set `TAIL_CLOSED` if the state says the channel is closed but the bit is missing.
pub(crate) fn ensure_closed_bit(ctl: &RingCtl, state: State) {
    if state.is_closed_for_send() {
        // SYNC(closed-bit): see `close_channel`.
        ctl.producer.tail.fetch_or(TAIL_CLOSED, Ordering::AcqRel);
    }
}

/// Bump both event counts and wake all sleepers (used on every state change).
pub(crate) fn wake_everyone<P: Park>(ctl: &RingCtl, park: &P) {
    // SYNC(rx-seq): Release; pairs with the Acquire load of the count in the receiver's wait.
    ctl.wake.rx_seq.fetch_add(1, Ordering::Release);
    park.wake_all(&ctl.wake.rx_seq);
    // SYNC(tx-seq): Release; pairs with the Acquire load of the count in the sender's wait.
    ctl.wake.tx_seq.fetch_add(1, Ordering::Release);
    park.wake_all(&ctl.wake.tx_seq);
}

#[cfg(all(test, not(shmq_loom)))]
mod tests {
    use super::*;

    #[test]
    fn advance_is_monotonic_and_idempotent() {
        let ctl = RingCtl::new_active();
        assert_eq!(advance(&ctl, State::Draining).unwrap(), State::Active);
        assert_eq!(advance(&ctl, State::Draining).unwrap(), State::Draining);
        assert_eq!(advance(&ctl, State::Closing).unwrap(), State::Draining);
        // Going "back" is a no-op that reports the current state.
        assert_eq!(advance(&ctl, State::Draining).unwrap(), State::Closing);
        assert_eq!(load(&ctl.lifecycle.state).unwrap(), State::Closing);
        assert_ne!(ctl.lifecycle.t_draining.load(Ordering::Relaxed), 0);
        assert_ne!(ctl.lifecycle.t_closing.load(Ordering::Relaxed), 0);
        assert_eq!(ctl.lifecycle.t_closed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn unknown_state_is_corrupt_and_left_alone() {
        let ctl = RingCtl::new_active();
        ctl.lifecycle.state.store(77, Ordering::Relaxed);
        assert!(advance(&ctl, State::Closed).is_err());
        assert!(load(&ctl.lifecycle.state).is_err());
        assert_eq!(ctl.lifecycle.state.load(Ordering::Relaxed), 77);
        ctl.lifecycle.state.store(0, Ordering::Relaxed);
        assert!(load(&ctl.lifecycle.state).is_err(), "0 means uninitialised, not a state");
    }
}
