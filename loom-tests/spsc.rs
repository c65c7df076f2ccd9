//! Loom models of the SPSC ring: FIFO order, no loss, no duplication, and no lost wake-up.
//!
//! Run with
//! `RUSTFLAGS="--cfg shmq_loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom_spsc`.
//!
//! The rings are tiny (64 or 128 bytes: the largest whole record is `cap/4 - 8` payload bytes)
//! so that wrap-around, padding records, fragmentation and a full ring all happen within a few
//! messages. A single-threaded warm-up moves the positions next to the end of the ring first; it
//! adds no interleavings. Blocking calls never time out (`Deadline::Never`, zero spin budget,
//! `LoomPark` without timeouts): a lost wake-up is reported by loom as a deadlock. `LoomPark`
//! wakes per word, like a futex, so a wake sent to the wrong word is a deadlock too.
//!
//! Each model runs twice (`common::model`): as written, and with the spawned threads started
//! first, to make up for a gap in loom's exploration (see `common::model`). Each one also checks
//! that its executions reached the sleep/wake paths it is about (`WakeCoverage`), so a model
//! cannot pass by only ever taking the fast path.
#![cfg(shmq_loom)]

mod common;

use common::{Chan, WakeCoverage, advance_positions, msg};
use loom::thread;
use shmq::loom_api::State;

/// Messages whose records, starting at ring offset 40 of a 64-byte ring, are: 16 bytes at 40;
/// padding 56..64 and 16 bytes at 0 (wrap); 16 at 16; 16 at 32. Together they take 72 bytes,
/// more than the ring holds, so the last send cannot finish before the consumer releases space.
const WRAP_LENS: [usize; 4] = [8, 5, 1, 2];

/// FIFO / no loss / no duplication through a wrapping, filling 64-byte ring.
///
/// Allowed outcome (the only one): every send returns Ok, and the consumer receives exactly the
/// four messages, byte for byte, in the order sent. The channel stays ACTIVE and open.
#[test]
fn fifo_wraparound_whole_records() {
    let cov = WakeCoverage::default();
    let rec = cov.clone();
    common::model(move |spawned_first| {
        let ch = Chan::new(64);
        let (mut p, mut c) = (ch.producer(), ch.consumer());
        advance_positions(&ch, &mut p, &mut c, &[8, 8, 0]); // head = tail = 40
        let sent: Vec<Vec<u8>> = WRAP_LENS.iter().enumerate().map(|(i, &n)| msg(i as u8 + 1, n)).collect();

        let got = common::stream(&ch, p, &mut c, sent.clone(), sent.len(), spawned_first);

        assert_eq!(got, sent);
        rec.record(&ch);
        assert_eq!(ch.state(), State::Active);
        assert!(!ch.tail_closed());
    });
    cov.assert_reached(true, true);
}

/// FIFO through the fragmentation path, with wrap-around inside a fragmented message.
///
/// 128-byte ring (whole records carry at most 24 bytes), positions start at 104. Sent: 3 bytes
/// (whole, 104..120); 50 bytes (FIRST: padding 120..128 then 0..32; MIDDLE 32..64; LAST 64..88);
/// 9 bytes (whole, 88..112, which needs the consumer to have released space first).
///
/// Allowed outcome (the only one): every send returns Ok; the consumer receives the three
/// messages in order, the 50-byte one reassembled byte for byte.
#[test]
fn fifo_fragmented_message() {
    let cov = WakeCoverage::default();
    let rec = cov.clone();
    common::model(move |spawned_first| {
        let ch = Chan::new(128);
        let (mut p, mut c) = (ch.producer(), ch.consumer());
        advance_positions(&ch, &mut p, &mut c, &[24, 24, 24, 0]); // head = tail = 104
        let sent = vec![msg(1, 3), msg(2, 50), msg(3, 9)];

        let got = common::stream(&ch, p, &mut c, sent.clone(), sent.len(), spawned_first);

        assert_eq!(got, sent);
        rec.record(&ch);
        assert_eq!(ch.state(), State::Active);
    });
    cov.assert_reached(true, true);
}

/// A message larger than the whole ring streams through it: the producer must wait for the
/// consumer to release fragments while the message is still being written.
///
/// 128-byte ring from position 0; one 136-byte message = FIRST (16 bytes of payload after the
/// 8-byte total length) + four MIDDLE (24 each) + LAST (24): six 32-byte records, 192 bytes, so
/// the ring wraps inside the message and the producer waits at least once.
///
/// Allowed outcome (the only one): the send returns Ok and the consumer returns the message
/// intact.
#[test]
fn fragmented_message_larger_than_ring() {
    let cov = WakeCoverage::default();
    let rec = cov.clone();
    common::model(move |spawned_first| {
        let ch = Chan::new(128);
        let (p, mut c) = (ch.producer(), ch.consumer());
        let sent = vec![msg(7, 136)];

        let got = common::stream(&ch, p, &mut c, sent.clone(), sent.len(), spawned_first);

        assert_eq!(got, sent);
        rec.record(&ch);
    });
    cov.assert_reached(true, true);
}

/// No lost wake-up, receiver side: the consumer blocks on an empty ring (no spinning, no
/// timeout) while the producer commits two messages. Each commit races with the consumer
/// announcing sleep (TAIL_RX_WAITING on the tail word); the second commit races with the consumer
/// going back to sleep after the first.
///
/// Allowed outcome (the only one): the consumer returns both messages in order; loom finds no
/// execution in which it sleeps forever (that would be reported as a deadlock).
#[test]
fn no_lost_wakeup_blocked_receiver() {
    let cov = WakeCoverage::default();
    let rec = cov.clone();
    common::model(move |spawned_first| {
        let ch = Chan::new(64);
        let (mut p, mut c) = (ch.producer(), ch.consumer());
        let sent = vec![msg(1, 3), msg(2, 8)];

        let rx = {
            let ch = ch.clone();
            thread::spawn(move || (0..2).map(|_| ch.recv(&mut c).expect("recv on an open channel")).collect::<Vec<_>>())
        };
        common::let_spawned_run_first(spawned_first);
        for m in &sent {
            ch.send(&mut p, m).expect("send on an open channel");
        }
        assert_eq!(rx.join().unwrap(), sent);
        rec.record(&ch);
    });
    cov.assert_reached(true, false);
}

/// No lost wake-up, sender side: the ring starts full (four 16-byte records in 64 bytes); the
/// producer sends two more messages and must sleep for room before each (HEAD_TX_WAITING on the
/// head word) while the consumer drains.
///
/// Allowed outcome (the only one): both sends return Ok and the consumer receives all six
/// messages in order; loom finds no execution in which the producer sleeps forever.
#[test]
fn no_lost_wakeup_blocked_sender() {
    let cov = WakeCoverage::default();
    let rec = cov.clone();
    common::model(move |spawned_first| {
        let ch = Chan::new(64);
        let (mut p, mut c) = (ch.producer(), ch.consumer());
        let prefill: Vec<Vec<u8>> = (0..4).map(|i| msg(0x10 + i, 8)).collect();
        for m in &prefill {
            ch.send(&mut p, m).expect("prefill");
        }
        let more = vec![msg(1, 8), msg(2, 7)];

        let got = common::stream(&ch, p, &mut c, more.clone(), 6, spawned_first);

        let expected: Vec<Vec<u8>> = prefill.into_iter().chain(more).collect();
        assert_eq!(got, expected);
        rec.record(&ch);
    });
    cov.assert_reached(false, true);
}
