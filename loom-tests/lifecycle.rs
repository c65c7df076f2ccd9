//! Loom models of the lifecycle word and the send/close race.
//!
//! Run with
//! `RUSTFLAGS="--cfg shmq_loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom_lifecycle`.
//!
//! What is checked, for every execution loom explores within `LOOM_MAX_PREEMPTIONS` (see
//! DESIGN-NOTES §2): a send that races with a close is either accepted and
//! then delivered (DRAINING) or delivered-or-counted-as-discarded (CLOSING), or refused and never
//! seen by the receiver; never accepted-and-lost, never duplicated. A close wakes every blocked
//! peer. Concurrent closes only ever raise the state. Blocking calls never time out
//! (`Deadline::Never`, zero spin budget, `LoomPark` without timeouts), so a missed wake-up is
//! reported by loom as a deadlock.
//!
//! Every execution asserts that its outcome is one of the allowed ones; after exploring, each
//! test asserts that the set of outcomes reached is exactly the allowed set (`Outcomes`), so a
//! model cannot pass by never exercising the race it describes. The race models run twice
//! (`common::model`): as written, and with the spawned threads started first.
#![cfg(shmq_loom)]

mod common;

use common::{Chan, Outcomes, head_pos, msg};
use loom::sync::atomic::Ordering;
use loom::thread;
use shmq::layout::{HEAD_TX_WAITING, TAIL_RX_WAITING};
use shmq::loom_api::{PopError, PushError, State, advance, close_channel};

/// Which sends were accepted, as booleans in send order; checks that each result is Ok or
/// Closed and that once a send is refused every later one is refused too (the closed mark is
/// never cleared).
fn accepted(results: &[Result<(), PushError>]) -> Vec<bool> {
    let acc: Vec<bool> = results
        .iter()
        .map(|r| match r {
            Ok(()) => true,
            Err(PushError::Closed) => false,
            Err(e) => panic!("send failed with {e:?}, only Ok or Closed are allowed"),
        })
        .collect();
    assert!(acc.windows(2).all(|w| w[0] || !w[1]), "a send was accepted after one was refused: {acc:?}");
    acc
}

/// One line per outcome: each send Ok (`O`) or Closed (`C`), messages received, messages
/// discarded, and the consumer's final position (which tells, for a refused fragmented message,
/// whether the close fell between its fragments).
fn outcome(acc: &[bool], got: usize, discarded: u64, head: u64) -> String {
    let sends: String = acc.iter().map(|&a| if a { 'O' } else { 'C' }).collect();
    format!("sends={sends} got={got} discarded={discarded} head={head}")
}

/// The send/close race with a sender-side close (DRAINING), for the given messages.
///
/// Threads: a producer sending every message (blocking), a closer calling
/// `close_channel(DRAINING)`, and the consumer (main thread) receiving until end-of-stream.
///
/// Allowed outcomes: the accepted sends are a prefix of the messages (Ok until the close, Closed
/// from then on) and the consumer receives exactly the accepted ones, in order, intact; so a
/// send is Ok if and only if its message is received. Nothing is discarded; the close found
/// ACTIVE (nobody else closes); the final state is CLOSED (the consumer finished the drain) with
/// the tail closed.
fn send_close_race_draining(cap: usize, msgs: Vec<Vec<u8>>, spawned_first: bool) -> String {
    let ch = Chan::new(cap);
    let (mut p, mut c) = (ch.producer(), ch.consumer());
    let tx = {
        let (ch, msgs) = (ch.clone(), msgs.clone());
        thread::spawn(move || msgs.iter().map(|m| ch.send(&mut p, m)).collect::<Vec<_>>())
    };
    let closer = {
        let ch = ch.clone();
        thread::spawn(move || close_channel(&ch.ctl, &ch.park, State::Draining).unwrap())
    };
    common::let_spawned_run_first(spawned_first);
    let got = ch.recv_all(&mut c);
    let results = tx.join().unwrap();
    let before = closer.join().unwrap();

    let acc = accepted(&results);
    let n_ok = acc.iter().filter(|&&a| a).count();
    assert_eq!(got, msgs[..n_ok], "Ok sends must be exactly the received messages ({results:?})");
    assert_eq!(ch.discarded_msgs(), 0);
    assert_eq!(before, State::Active);
    assert_eq!(ch.state(), State::Closed);
    assert!(ch.tail_closed());
    outcome(&acc, got.len(), ch.discarded_msgs(), head_pos(&ch))
}

/// The send/close race with a receiver-side close (CLOSING).
///
/// Threads as in `send_close_race_draining`, but the closer calls `close_channel(CLOSING)`.
///
/// Allowed outcomes: the accepted sends are a prefix of the messages; the consumer receives a
/// prefix of the accepted ones, in order, intact, and every accepted message it did not receive
/// is counted in `discarded_msgs` (received + discarded = accepted, exactly). A refused message
/// is never received. The final state is CLOSED once the consumer has seen end-of-stream.
fn send_close_race_closing(cap: usize, msgs: Vec<Vec<u8>>, spawned_first: bool) -> String {
    let ch = Chan::new(cap);
    let (mut p, mut c) = (ch.producer(), ch.consumer());
    let tx = {
        let (ch, msgs) = (ch.clone(), msgs.clone());
        thread::spawn(move || msgs.iter().map(|m| ch.send(&mut p, m)).collect::<Vec<_>>())
    };
    let closer = {
        let ch = ch.clone();
        thread::spawn(move || close_channel(&ch.ctl, &ch.park, State::Closing).unwrap())
    };
    common::let_spawned_run_first(spawned_first);
    let got = ch.recv_all(&mut c);
    let results = tx.join().unwrap();
    let before = closer.join().unwrap();

    let acc = accepted(&results);
    let n_ok = acc.iter().filter(|&&a| a).count();
    assert!(got.len() <= n_ok, "received {} messages but only {n_ok} sends were accepted", got.len());
    assert_eq!(got, msgs[..got.len()], "received messages must be the first accepted ones, in order");
    assert_eq!(ch.discarded_msgs(), (n_ok - got.len()) as u64, "accepted = received + discarded ({results:?})");
    assert_eq!(before, State::Active);
    assert_eq!(ch.state(), State::Closed);
    assert!(ch.tail_closed());
    outcome(&acc, got.len(), ch.discarded_msgs(), head_pos(&ch))
}

/// Two small whole messages race a DRAINING close. Allowed outcomes (sends / received):
/// (Ok, Ok) / [m1, m2]; (Ok, Closed) / [m1]; (Closed, Closed) / [].
#[test]
fn send_close_race_draining_whole() {
    let seen = Outcomes::default();
    let rec = seen.clone();
    common::model(move |spawned_first| {
        rec.record(send_close_race_draining(64, vec![msg(1, 5), msg(2, 3)], spawned_first))
    });
    seen.assert_exactly(&[
        "sends=OO got=2 discarded=0 head=32",
        "sends=OC got=1 discarded=0 head=16",
        "sends=CC got=0 discarded=0 head=0",
    ]);
}

/// Two small whole messages race a CLOSING close. Allowed outcomes (sends / received /
/// discarded): (Ok, Ok) / [m1, m2] / 0, [m1] / 1, [] / 2; (Ok, Closed) / [m1] / 0, [] / 1;
/// (Closed, Closed) / [] / 0.
#[test]
fn send_close_race_closing_whole() {
    let seen = Outcomes::default();
    let rec = seen.clone();
    common::model(move |spawned_first| {
        rec.record(send_close_race_closing(64, vec![msg(1, 5), msg(2, 3)], spawned_first))
    });
    seen.assert_exactly(&[
        "sends=OO got=2 discarded=0 head=32",
        "sends=OO got=1 discarded=1 head=32",
        "sends=OO got=0 discarded=2 head=32",
        "sends=OC got=1 discarded=0 head=16",
        "sends=OC got=0 discarded=1 head=16",
        "sends=CC got=0 discarded=0 head=0",
    ]);
}

/// A fragmented message (FIRST 0..32 + LAST 32..64 in a 128-byte ring) races a DRAINING close:
/// the close can fall between its fragments, after the consumer has taken the FIRST. Allowed
/// outcomes: Ok / [m]; Closed before the FIRST / []; Closed between the fragments / [] with the
/// FIRST consumed (head 32) and the half-assembled message dropped.
#[test]
fn send_close_race_draining_fragmented() {
    let seen = Outcomes::default();
    let rec = seen.clone();
    common::model(move |spawned_first| rec.record(send_close_race_draining(128, vec![msg(1, 40)], spawned_first)));
    seen.assert_exactly(&[
        "sends=O got=1 discarded=0 head=64",
        "sends=C got=0 discarded=0 head=32",
        "sends=C got=0 discarded=0 head=0",
    ]);
}

/// A fragmented message races a CLOSING close. Allowed outcomes (send / received /
/// discarded): Ok / [m] / 0; Ok / [] / 1; Closed before the FIRST / [] / 0; Closed between the
/// fragments / [] / 0 (the FIRST was committed and is dropped, but the fragments of a refused
/// message never count as a discarded message).
#[test]
fn send_close_race_closing_fragmented() {
    let seen = Outcomes::default();
    let rec = seen.clone();
    common::model(move |spawned_first| rec.record(send_close_race_closing(128, vec![msg(1, 40)], spawned_first)));
    seen.assert_exactly(&[
        "sends=O got=1 discarded=0 head=64",
        "sends=O got=0 discarded=1 head=64",
        "sends=C got=0 discarded=0 head=32",
        "sends=C got=0 discarded=0 head=0",
    ]);
}

/// The send/close race while the sender is blocked for room: the 64-byte ring starts full (four
/// 16-byte records), the producer sends one more message, a closer calls `close_channel(to)`,
/// and the consumer receives until end-of-stream. The send can only complete after the consumer
/// has released space, so the close races with a sender that is asleep, being woken, or
/// committing. Returns the outcome line.
fn send_close_race_full_ring(to: State, spawned_first: bool) -> String {
    let ch = Chan::new(64);
    let (mut p, mut c) = (ch.producer(), ch.consumer());
    let mut msgs: Vec<Vec<u8>> = (0..4).map(|i| msg(0x10 + i, 8)).collect();
    for m in &msgs {
        ch.send(&mut p, m).expect("prefill");
    }
    msgs.push(msg(9, 6));
    let tx = {
        let (ch, m) = (ch.clone(), msgs[4].clone());
        thread::spawn(move || ch.send(&mut p, &m))
    };
    let closer = {
        let ch = ch.clone();
        thread::spawn(move || close_channel(&ch.ctl, &ch.park, to).unwrap())
    };
    common::let_spawned_run_first(spawned_first);
    let got = ch.recv_all(&mut c);
    let result = tx.join().unwrap();
    assert_eq!(closer.join().unwrap(), State::Active);

    let acc = accepted(std::slice::from_ref(&result));
    let n_accepted = if acc[0] { 5 } else { 4 };
    assert!(got.len() <= n_accepted);
    assert_eq!(got, msgs[..got.len()], "received messages must be the first accepted ones, in order");
    assert_eq!(ch.discarded_msgs(), (n_accepted - got.len()) as u64, "accepted = received + discarded");
    if to == State::Draining {
        assert_eq!(got.len(), n_accepted, "DRAINING delivers every accepted message ({result:?})");
    }
    assert_eq!(ch.state(), State::Closed);
    assert!(ch.tail_closed());
    outcome(&acc, got.len(), ch.discarded_msgs(), head_pos(&ch))
}

/// DRAINING close against a sender blocked on a full ring. Allowed outcomes (send / received /
/// discarded): Ok / the four prefilled messages then m / 0; Closed / the four prefilled only / 0.
#[test]
fn send_close_race_draining_full_ring() {
    let seen = Outcomes::default();
    let rec = seen.clone();
    common::model(move |spawned_first| rec.record(send_close_race_full_ring(State::Draining, spawned_first)));
    seen.assert_exactly(&["sends=O got=5 discarded=0 head=80", "sends=C got=4 discarded=0 head=64"]);
}

/// CLOSING close against a sender blocked on a full ring. Allowed outcomes (send / received /
/// discarded): Closed / the first k prefilled messages / 4 - k, for k = 0..=4; Ok / the first k
/// of the five / 5 - k, for k = 1..=5 (k = 0 is impossible: the send needs the room released by
/// receiving the first message, and a discard only starts once the tail is closed). The final
/// position covers everything committed: 64 after a refusal, 80 after an accepted send.
#[test]
fn send_close_race_closing_full_ring() {
    let seen = Outcomes::default();
    let rec = seen.clone();
    common::model(move |spawned_first| rec.record(send_close_race_full_ring(State::Closing, spawned_first)));
    let mut allowed: Vec<String> = (0..=4).map(|k| format!("sends=C got={k} discarded={} head=64", 4 - k)).collect();
    allowed.extend((1..=5).map(|k| format!("sends=O got={k} discarded={} head=80", 5 - k)));
    seen.assert_exactly(&allowed.iter().map(String::as_str).collect::<Vec<_>>());
}

/// A close wakes a receiver blocked on an empty ring. Threads: the consumer (blocking receive,
/// no timeout) and a closer. Allowed outcome (the only one), for DRAINING and for CLOSING: the
/// receive returns `Closed` with no message, nothing is discarded, the final state is CLOSED.
#[test]
fn close_wakes_blocked_receiver() {
    let seen = Outcomes::default();
    for to in [State::Draining, State::Closing] {
        let rec = seen.clone();
        common::model(move |spawned_first| {
            let ch = Chan::new(64);
            let mut c = ch.consumer();
            let rx = {
                let ch = ch.clone();
                thread::spawn(move || ch.recv(&mut c))
            };
            common::let_spawned_run_first(spawned_first);
            close_channel(&ch.ctl, &ch.park, to).unwrap();
            assert_eq!(rx.join().unwrap(), Err(PopError::Closed));
            assert_eq!(ch.discarded_msgs(), 0);
            assert_eq!(ch.state(), State::Closed);
            // Coverage: the consumer's "I sleep" bit is left set only if it went to sleep
            // before the close (a consumer that saw the close first clears it or never sets it).
            let slept = ch.ctl.producer.tail.load(Ordering::SeqCst) & TAIL_RX_WAITING != 0;
            rec.record(format!("{to:?} slept={slept}"));
        });
    }
    seen.assert_exactly(&["Closing slept=false", "Closing slept=true", "Draining slept=false", "Draining slept=true"]);
}

/// A close wakes a sender blocked on a full ring (four 16-byte records fill 64 bytes; nobody
/// receives). Threads: the producer (blocking send, no timeout) and a closer.
///
/// Allowed outcome (the only one): the send returns `Closed`. Afterwards a consumer finds, for
/// DRAINING, exactly the four messages sent before the close and then end-of-stream; for
/// CLOSING, end-of-stream at once with the four counted as discarded. The refused message is
/// never received. The final state is CLOSED.
#[test]
fn close_wakes_blocked_sender() {
    let seen = Outcomes::default();
    for to in [State::Draining, State::Closing] {
        let rec = seen.clone();
        common::model(move |spawned_first| {
            let ch = Chan::new(64);
            let mut p = ch.producer();
            let prefill: Vec<Vec<u8>> = (0..4).map(|i| msg(0x10 + i, 8)).collect();
            for m in &prefill {
                ch.send(&mut p, m).expect("prefill");
            }
            let tx = {
                let ch = ch.clone();
                thread::spawn(move || ch.send(&mut p, &msg(9, 8)))
            };
            common::let_spawned_run_first(spawned_first);
            close_channel(&ch.ctl, &ch.park, to).unwrap();
            assert_eq!(tx.join().unwrap(), Err(PushError::Closed));
            // Coverage: the producer's "I sleep" bit stays set (until the next release) only if
            // it announced its sleep; with a zero spin budget it does so unless the close came
            // first.
            let slept = ch.ctl.consumer.head.load(Ordering::SeqCst) & HEAD_TX_WAITING != 0;
            rec.record(format!("{to:?} slept={slept}"));

            let got = ch.recv_all(&mut ch.consumer());
            match to {
                State::Draining => {
                    assert_eq!(got, prefill);
                    assert_eq!(ch.discarded_msgs(), 0);
                }
                _ => {
                    assert!(got.is_empty());
                    assert_eq!(ch.discarded_msgs(), 4);
                }
            }
            assert_eq!(ch.state(), State::Closed);
        });
    }
    seen.assert_exactly(&["Closing slept=false", "Closing slept=true", "Draining slept=false", "Draining slept=true"]);
}

/// Concurrent closes, DRAINING from one thread and CLOSING from another, while a third thread
/// watches the lifecycle word.
///
/// Allowed outcomes (state each close found): (ACTIVE, DRAINING) — the DRAINING close went
/// first; or (CLOSING, ACTIVE) — the CLOSING close went first and the DRAINING one was a no-op.
/// Never both ACTIVE. The watcher sees a non-decreasing sequence of states. Finally the state is
/// CLOSING (the maximum), the tail is closed, the CLOSING timestamp is set and the DRAINING one
/// is set if and only if DRAINING was actually entered. Afterwards `advance` to a lower state
/// changes nothing and reports CLOSING; a further close is a harmless no-op.
#[test]
fn concurrent_close_only_goes_up() {
    let seen = Outcomes::default();
    let rec = seen.clone();
    loom::model(move || {
        let ch = Chan::new(64);
        let closers: Vec<_> = [State::Draining, State::Closing]
            .into_iter()
            .map(|to| {
                let ch = ch.clone();
                thread::spawn(move || close_channel(&ch.ctl, &ch.park, to).unwrap())
            })
            .collect();
        let watcher = {
            let ch = ch.clone();
            thread::spawn(move || {
                let seen: Vec<State> = (0..3).map(|_| ch.state()).collect();
                assert!(seen.windows(2).all(|w| w[0] <= w[1]), "state went backwards: {seen:?}");
            })
        };
        let befores: Vec<State> = closers.into_iter().map(|t| t.join().unwrap()).collect();
        watcher.join().unwrap();

        match (befores[0], befores[1]) {
            (State::Active, State::Draining) | (State::Closing, State::Active) => {}
            other => panic!("impossible close results {other:?}"),
        }
        assert_eq!(ch.state(), State::Closing);
        assert!(ch.tail_closed());
        let lc = &ch.ctl.lifecycle;
        assert_ne!(lc.t_closing.load(Ordering::SeqCst), 0);
        assert_eq!(lc.t_draining.load(Ordering::SeqCst) != 0, befores[0] == State::Active);
        assert_eq!(lc.t_closed.load(Ordering::SeqCst), 0);

        assert_eq!(advance(&ch.ctl, State::Draining).unwrap(), State::Closing);
        assert_eq!(close_channel(&ch.ctl, &ch.park, State::Draining).unwrap(), State::Closing);
        assert_eq!(ch.state(), State::Closing);
        rec.record(format!("{:?}", befores));
    });
    seen.assert_exactly(&["[Active, Draining]", "[Closing, Active]"]);
}

/// Two concurrent closes of the same kind (DRAINING twice): exactly one of them performs the
/// transition. Allowed outcomes: (ACTIVE, DRAINING) or (DRAINING, ACTIVE). Final state DRAINING,
/// tail closed.
#[test]
fn concurrent_close_is_idempotent() {
    let seen = Outcomes::default();
    let rec = seen.clone();
    loom::model(move || {
        let ch = Chan::new(64);
        let closers: Vec<_> = (0..2)
            .map(|_| {
                let ch = ch.clone();
                thread::spawn(move || close_channel(&ch.ctl, &ch.park, State::Draining).unwrap())
            })
            .collect();
        let befores: Vec<State> = closers.into_iter().map(|t| t.join().unwrap()).collect();
        match (befores[0], befores[1]) {
            (State::Active, State::Draining) | (State::Draining, State::Active) => {}
            other => panic!("impossible close results {other:?}"),
        }
        assert_eq!(ch.state(), State::Draining);
        assert!(ch.tail_closed());
        rec.record(format!("{:?}", befores));
    });
    seen.assert_exactly(&["[Active, Draining]", "[Draining, Active]"]);
}
