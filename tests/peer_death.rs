#![cfg(not(shmq_loom))] // these drive the public API, which loom builds do not have
//! A peer process that dies (SIGKILL, no cleanup) must not wedge the survivors: blocked calls
//! return promptly, nothing committed is lost, and `dead_peer()` names the dead process.
//!
//! Children are this test binary started again in a child role (see `common::Scope::spawn`);
//! the children that "die" send SIGKILL to themselves at the chosen moment, so the parent knows
//! exactly what they did before.

mod common;

use common::*;
use shmq::{Channel, Config, RecvTimeoutError, SendError, State, mpsc};
use std::time::{Duration, Instant};

const CHILD_TIMEOUT: Duration = Duration::from_secs(30);
/// Far longer than detection needs (milliseconds): a receive that takes this long has hung.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
#[ignore = "entry point of the child processes of the other tests; does nothing when run directly"]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else { return };
    let name = env_var("SHMQ_IT_NAME");
    let cfg = Config::new();
    match role.as_str() {
        "spsc_send_then_die" => {
            let mut tx = Channel::open(&name, &cfg).unwrap().sender().unwrap();
            for i in 0..100u32 {
                tx.send(i.to_le_bytes()).unwrap();
            }
            die();
        }
        "spsc_recv_one_then_die" => {
            let mut rx = Channel::open(&name, &cfg).unwrap().receiver().unwrap();
            rx.recv().unwrap();
            die();
        }
        "mpsc_claim_then_die" => {
            let tx = mpsc::Channel::open(&name, &cfg).unwrap().sender().unwrap();
            let mut slot = tx.reserve(64).unwrap();
            slot.write_at(0, &[0xEE; 32]); // half written, never committed
            die();
        }
        "mpsc_survivor_send_50" => {
            // Attached before the other producer dies; sends once its death is known.
            let ch = mpsc::Channel::open(&name, &cfg).unwrap();
            let tx = ch.sender().unwrap();
            wait_until("the other producer's death to be noticed", || ch.dead_peer().unwrap().is_some());
            for i in 0..50u32 {
                tx.send(i.to_le_bytes()).unwrap();
            }
        }
        "mpsc_survivor_stays" => {
            // As above, but stays attached until the parent has received everything.
            let ch = mpsc::Channel::open(&name, &cfg).unwrap();
            let tx = ch.sender().unwrap();
            wait_until("the other producer's death to be noticed", || ch.dead_peer().unwrap().is_some());
            for i in 0..50u32 {
                tx.send(i.to_le_bytes()).unwrap();
            }
            let done = ch.event(3, shmq::Reset::Manual).unwrap();
            assert!(done.wait_timeout(CHILD_TIMEOUT).unwrap(), "the parent never said it got everything");
            drop(tx);
        }
        "mpmc_claim_then_die" => {
            let tx = shmq::mpmc::Channel::open(&name, &cfg).unwrap().sender().unwrap();
            let mut slot = tx.reserve(300).unwrap(); // several cells, never committed
            slot.write_at(0, &[0xEE; 32]);
            die();
        }
        "mpmc_survivor_send_50" => {
            let ch = shmq::mpmc::Channel::open(&name, &cfg).unwrap();
            let tx = ch.sender().unwrap();
            wait_until("the other producer's death to be noticed", || ch.dead_peer().unwrap().is_some());
            for i in 0..50u32 {
                tx.send(i.to_le_bytes()).unwrap();
            }
        }
        "mpmc_take_then_die" => {
            let rx = shmq::mpmc::Channel::open(&name, &cfg).unwrap().receiver().unwrap();
            let held = rx.recv_ref().unwrap(); // taken, never released
            let mut first = [0u8; 4];
            held.read_at(0, &mut first);
            assert_eq!(first, 0u32.to_le_bytes());
            die();
        }
        "watcher_thread_lifetime" => {
            assert_eq!(watcher_threads(), 0, "no channel yet, no watcher thread");
            let ch = Channel::anonymous(&cfg).unwrap();
            // The new thread names itself as it starts: give it a moment.
            let t0 = Instant::now();
            while watcher_threads() == 0 && t0.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(watcher_threads(), 1, "a channel is open: one watcher thread");
            let ch2 = mpsc::Channel::anonymous(&cfg).unwrap();
            assert_eq!(watcher_threads(), 1, "still one thread for two channels");
            drop((ch, ch2));
            let t0 = Instant::now();
            while watcher_threads() > 0 {
                assert!(t0.elapsed() < Duration::from_secs(2), "the watcher thread outlived every channel");
                std::thread::sleep(Duration::from_millis(5));
            }
            report("watcher_gone_after_ms", t0.elapsed().as_millis());
        }
        other => panic!("unknown child role {other:?}"),
    }
}

/// Poll `cond` every millisecond until it holds; fail after `CHILD_TIMEOUT`.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < CHILD_TIMEOUT, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Threads of this process named like shmq's peer watcher.
fn watcher_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim() == "shmq-peer-watch")
        .count()
}

fn die() -> ! {
    // SAFETY: kill(2) on our own pid; SIGKILL ends the process at once, no cleanup runs.
    unsafe { libc::kill(std::process::id() as i32, libc::SIGKILL) };
    unreachable!("SIGKILL did not end the process");
}

fn assert_killed(f: &Finished) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(f.status.signal(), Some(libc::SIGKILL), "child {:?} should have been killed\n{}", f.role, f.output());
}

/// The sender dies after committing 100 messages, without detaching: the receiver gets all 100,
/// then `PeerDead` naming the sender (not a hang, not a timeout, not a clean `Closed`).
#[test]
fn dead_sender_spsc_backlog_then_end_of_stream() {
    let scope = Scope::new("dsend");
    let name = scope.name("ch");
    let ch = Channel::create(&name, &Config::new()).unwrap();
    let mut rx = ch.receiver().unwrap();
    let child = scope.spawn("spsc_send_then_die", &[("SHMQ_IT_NAME", &name)]);
    let pid = child.pid();
    let f = child.wait(CHILD_TIMEOUT);
    assert_killed(&f);
    for i in 0..100u32 {
        assert_eq!(rx.recv_timeout(RECV_TIMEOUT).unwrap(), i.to_le_bytes());
    }
    let t0 = Instant::now();
    let end = rx.recv_timeout(RECV_TIMEOUT);
    eprintln!("end-of-stream {:?} after the backlog", t0.elapsed());
    let Err(RecvTimeoutError::PeerDead(dead)) = end else { panic!("expected PeerDead, got {end:?}") };
    assert_eq!((dead.pid, dead.was_sender), (pid, true));
    assert_eq!(ch.dead_peer().unwrap(), Some(dead));
    assert_eq!(ch.stats().unwrap().senders, 0);
    drop((rx, ch));
    scope.finish();
}

/// The receiver dies: a sender blocked on the full ring gets `PeerDead` naming the receiver,
/// with its message back (not a hang); later sends too.
#[test]
fn dead_receiver_spsc_refuses_the_blocked_sender() {
    let scope = Scope::new("drecv");
    let name = scope.name("ch");
    let ch = Channel::create(&name, &Config::new().capacity(4096)).unwrap();
    let mut tx = ch.sender().unwrap();
    let child = scope.spawn("spsc_recv_one_then_die", &[("SHMQ_IT_NAME", &name)]);
    let pid = child.pid();
    tx.send(b"one").unwrap();
    let f = child.wait(CHILD_TIMEOUT);
    assert_killed(&f);
    // Fill the ring until a send blocks; the watch must then notice the dead receiver.
    let t0 = Instant::now();
    let msg = vec![7u8; 100];
    let refused = loop {
        match tx.send(msg.clone()) {
            Ok(()) => assert!(t0.elapsed() < RECV_TIMEOUT, "sends never stopped"),
            Err(SendError::PeerDead(back, dead)) => {
                assert_eq!((dead.pid, dead.was_sender), (pid, false));
                break back;
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    };
    assert_eq!(refused, msg, "the refused message is handed back");
    assert!(matches!(tx.try_send(b"later"), Err(shmq::TrySendError::PeerDead(m, _)) if m == b"later"));
    assert!(t0.elapsed() < RECV_TIMEOUT);
    assert_eq!(ch.state().unwrap(), State::Closing);
    let dead = ch.dead_peer().unwrap().expect("the dead receiver is named");
    assert_eq!((dead.pid, dead.was_sender), (pid, false));
    drop((tx, ch));
    scope.finish();
}

/// Two MPSC producers are attached; one claims space and dies before committing; the survivor
/// (told of the death by its process's peer watcher) then sends 50 messages and exits. The
/// receiver, blocked behind the dead claim, gets all 50 and then `PeerDead`: once every sender
/// is gone (the dead one reaped), the claim is skipped.
#[test]
fn dead_producer_mid_claim_does_not_wedge_mpsc() {
    let scope = Scope::new("dclaim");
    let name = scope.name("ch");
    let ch = mpsc::Channel::create(&name, &Config::new()).unwrap();
    let mut rx = ch.receiver().unwrap();
    let survivor = scope.spawn("mpsc_survivor_send_50", &[("SHMQ_IT_NAME", &name)]);
    wait_until("the survivor to attach", || ch.stats().unwrap().senders >= 1);
    let dead = scope.spawn("mpsc_claim_then_die", &[("SHMQ_IT_NAME", &name)]);
    let dead_pid = dead.pid();
    assert_killed(&dead.wait(CHILD_TIMEOUT));
    survivor.wait(CHILD_TIMEOUT).assert_success();
    for i in 0..50u32 {
        assert_eq!(rx.recv_timeout(RECV_TIMEOUT).unwrap(), i.to_le_bytes(), "message {i}");
    }
    let end = rx.recv_timeout(RECV_TIMEOUT);
    let Err(RecvTimeoutError::PeerDead(d)) = end else { panic!("expected PeerDead, got {end:?}") };
    assert_eq!((d.pid, d.was_sender), (dead_pid, true));
    assert_eq!(ch.stats().unwrap().dead_peer, Some(d));
    assert_eq!(ch.stats().unwrap().senders, 0);
    drop((rx, ch));
    scope.finish();
}

/// A sender that never blocks (the ring has room) still learns promptly that the receiver died:
/// the process's peer watcher holds a pidfd for it and closes the channel at once.
#[test]
fn non_blocking_sender_learns_of_a_dead_receiver() {
    let scope = Scope::new("nbsend");
    let name = scope.name("ch");
    let ch = Channel::create(&name, &Config::new()).unwrap();
    let mut tx = ch.sender().unwrap();
    let child = scope.spawn("spsc_recv_one_then_die", &[("SHMQ_IT_NAME", &name)]);
    let pid = child.pid();
    tx.send(b"one").unwrap();
    let f = child.wait(CHILD_TIMEOUT);
    assert_killed(&f);
    let t0 = Instant::now();
    let refused = loop {
        match tx.try_send(b"x") {
            Ok(()) => {
                assert!(t0.elapsed() < Duration::from_secs(5), "try_send kept succeeding after the receiver died");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(shmq::TrySendError::PeerDead(m, p)) => {
                assert_eq!((p.pid, p.was_sender), (pid, false));
                break m;
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    };
    eprintln!("a non-blocking sender saw PeerDead {:?} after the receiver was reaped", t0.elapsed());
    assert_eq!(refused, b"x");
    drop((tx, ch));
    scope.finish();
}

/// The watcher thread exists only while the process has channels open (checked in a child
/// process, where no other test's channels keep it alive).
#[test]
fn watcher_thread_ends_with_the_last_channel() {
    let scope = Scope::new("wthread");
    let f = scope.spawn("watcher_thread_lifetime", &[("SHMQ_IT_NAME", "unused")]).wait(CHILD_TIMEOUT);
    f.assert_success();
    eprintln!("watcher thread gone {} ms after the last channel", f.report("watcher_gone_after_ms"));
    scope.finish();
}

/// A producer dies mid-claim while another producer stays attached and keeps sending: the
/// receiver skips the dead one's claim (its CLAIMED marker names the dead producer's peer
/// slot) and gets the survivor's messages while the survivor is still attached.
#[test]
fn dead_producer_mid_claim_while_another_stays_attached() {
    let scope = Scope::new("dclaim2");
    let name = scope.name("ch");
    let ch = mpsc::Channel::create(&name, &Config::new()).unwrap();
    let mut rx = ch.receiver().unwrap();
    let survivor = scope.spawn("mpsc_survivor_stays", &[("SHMQ_IT_NAME", &name)]);
    wait_until("the survivor to attach", || ch.stats().unwrap().senders >= 1);
    let dead = scope.spawn("mpsc_claim_then_die", &[("SHMQ_IT_NAME", &name)]);
    assert_killed(&dead.wait(CHILD_TIMEOUT));
    let t1 = Instant::now();
    for i in 0..50u32 {
        assert_eq!(rx.recv_timeout(RECV_TIMEOUT).unwrap(), i.to_le_bytes(), "message {i}");
    }
    eprintln!("the survivor's 50 messages arrived {:?} after the claimer died", t1.elapsed());
    assert_eq!(ch.stats().unwrap().senders, 1, "the survivor is still attached");
    assert_eq!(ch.stats().unwrap().abandoned_claims, 1, "the receiver counted the dead claim");
    assert_eq!(ch.state().unwrap(), State::Active, "the channel keeps working");
    ch.event(3, shmq::Reset::Manual).unwrap().set().unwrap();
    survivor.wait(CHILD_TIMEOUT).assert_success();
    let end = rx.recv_timeout(RECV_TIMEOUT);
    assert!(matches!(end, Err(RecvTimeoutError::PeerDead(_))), "{end:?}");
    drop((rx, ch));
    scope.finish();
}

/// MPMC: a producer claims cells and dies before committing; the surviving producer sends 50
/// messages after them and exits. Once no sender is left (the dead one reaped), the consumers
/// pad the dead claim cell by cell and deliver all 50, then `PeerDead`.
#[test]
fn dead_producer_mid_claim_does_not_wedge_mpmc() {
    let scope = Scope::new("dclaim3");
    let name = scope.name("ch");
    let ch = shmq::mpmc::Channel::create(&name, &Config::new()).unwrap();
    let rx = ch.receiver().unwrap();
    let survivor = scope.spawn("mpmc_survivor_send_50", &[("SHMQ_IT_NAME", &name)]);
    wait_until("the survivor to attach", || ch.stats().unwrap().senders >= 1);
    let dead = scope.spawn("mpmc_claim_then_die", &[("SHMQ_IT_NAME", &name)]);
    let dead_pid = dead.pid();
    assert_killed(&dead.wait(CHILD_TIMEOUT));
    survivor.wait(CHILD_TIMEOUT).assert_success();
    let mut got: Vec<u32> = Vec::new();
    let end = loop {
        match rx.recv_timeout(RECV_TIMEOUT) {
            Ok(m) => got.push(u32::from_le_bytes(m[..4].try_into().unwrap())),
            Err(e) => break e,
        }
    };
    assert_eq!(got, (0..50).collect::<Vec<u32>>(), "the survivor's messages, in order");
    let RecvTimeoutError::PeerDead(d) = end else { panic!("expected PeerDead, got {end:?}") };
    assert_eq!((d.pid, d.was_sender), (dead_pid, true));
    assert!(ch.stats().unwrap().abandoned_claims >= 1, "the dead claim's cells were padded");
    drop((rx, ch));
    scope.finish();
}

/// MPMC: a receiver takes a message (borrowed in place, never released) and is killed. The
/// parent sends 100 more messages through the 32-cell ring, so the sender comes round to the
/// dead receiver's cell: it frees it (the TAKEN marker names a gone owner) instead of waiting
/// for ever, the parent's own receiver gets all 100 in order, and the lost message is counted.
#[test]
fn dead_consumer_holding_a_message_does_not_wedge_mpmc() {
    let scope = Scope::new("dtake");
    let name = scope.name("ch");
    let ch = shmq::mpmc::Channel::create(&name, &Config::new().capacity(4096).cell_size(128)).unwrap();
    let (tx, rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
    tx.send(0u32.to_le_bytes()).unwrap();
    let dead = scope.spawn("mpmc_take_then_die", &[("SHMQ_IT_NAME", &name)]);
    assert_killed(&dead.wait(CHILD_TIMEOUT));
    for i in 1..=100u32 {
        tx.send_timeout(i.to_le_bytes(), RECV_TIMEOUT).unwrap_or_else(|e| panic!("send {i}: {e:?}"));
        let m = rx.recv_timeout(RECV_TIMEOUT).unwrap_or_else(|e| panic!("recv {i}: {e:?}"));
        assert_eq!(m, i.to_le_bytes());
    }
    assert_eq!(ch.stats().unwrap().reclaimed_takes, 1, "the dead receiver's message is counted as lost");
    drop((tx, rx, ch));
    scope.finish();
}

/// A `try_recv` result as `poll` wants it: the message, None while empty; any other error fails.
fn empty_is_none(r: Result<Vec<u8>, shmq::TryRecvError>) -> Option<Vec<u8>> {
    match r {
        Ok(m) => Some(m),
        Err(shmq::TryRecvError::Empty) => None,
        Err(e) => panic!("try_recv: {e:?}"),
    }
}

/// Poll `attempt` every millisecond until it gives a value, for at most [`RECV_TIMEOUT`].
fn poll<T>(what: &str, mut attempt: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = attempt() {
            return v;
        }
        assert!(t0.elapsed() < RECV_TIMEOUT, "{what}: nothing after {RECV_TIMEOUT:?} of polling");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// MPMC, with only the non-blocking calls: a producer killed holding a claim (reserved, never
/// committed) and a receiver killed holding a message. A receiver that only polls with
/// `try_recv` skips the dead claim, and a sender that only polls with `try_send` frees the dead
/// receiver's cells: each call gives up at once, but the attachment remembers how long it has
/// found the same unit stuck (20 ms of polling, as one blocking call would wait).
#[test]
fn polling_calls_recover_from_dead_peers_mpmc() {
    let scope = Scope::new("dpoll");
    let name = scope.name("ch");
    let ch = shmq::mpmc::Channel::create(&name, &Config::new().capacity(4096).cell_size(128)).unwrap();
    let (tx, rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
    // A dead producer's claim at the head, then a live producer's message behind it.
    assert_killed(&scope.spawn("mpmc_claim_then_die", &[("SHMQ_IT_NAME", &name)]).wait(CHILD_TIMEOUT));
    tx.try_send(7u32.to_le_bytes()).unwrap();
    let m = poll("try_recv behind a dead claim", || empty_is_none(rx.try_recv()));
    assert_eq!(m, 7u32.to_le_bytes());
    assert!(ch.stats().unwrap().abandoned_claims >= 1, "the dead claim was skipped");
    // A dead receiver holding a message; the sender fills the ring and comes round to it.
    tx.try_send(0u32.to_le_bytes()).unwrap();
    assert_killed(&scope.spawn("mpmc_take_then_die", &[("SHMQ_IT_NAME", &name)]).wait(CHILD_TIMEOUT));
    for i in 1..=100u32 {
        poll("try_send behind a dead receiver's cells", || match tx.try_send(i.to_le_bytes()) {
            Ok(()) => Some(()),
            Err(shmq::TrySendError::Full(_)) => None,
            Err(e) => panic!("try_send {i}: {e:?}"),
        });
        let m = poll("try_recv", || rx.try_recv().ok());
        assert_eq!(m, i.to_le_bytes());
    }
    assert_eq!(ch.stats().unwrap().reclaimed_takes, 1, "the dead receiver's message is counted as lost");
    drop((tx, rx, ch));
    scope.finish();
}

/// MPSC, with only `try_recv`: a producer killed holding a claim (reserved, never committed)
/// while another sender stays attached. The polling receiver skips the dead claim once its
/// calls have found the head stuck for 20 ms, and gets the live sender's message behind it.
#[test]
fn polling_receiver_recovers_from_a_dead_producer_mpsc() {
    let scope = Scope::new("dpolls");
    let name = scope.name("ch");
    let ch = mpsc::Channel::create(&name, &Config::new().capacity(4096)).unwrap();
    let (tx, mut rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
    assert_killed(&scope.spawn("mpsc_claim_then_die", &[("SHMQ_IT_NAME", &name)]).wait(CHILD_TIMEOUT));
    tx.try_send(7u32.to_le_bytes()).unwrap();
    let m = poll("try_recv behind a dead claim", || empty_is_none(rx.try_recv()));
    assert_eq!(m, 7u32.to_le_bytes());
    assert_eq!(ch.stats().unwrap().abandoned_claims, 1, "the dead claim was skipped");
    drop((tx, rx, ch));
    scope.finish();
}
