//! Loom models of the MPSC ring (Agrona-style claim on the tail, commit by the first header):
//! nothing lost, nothing duplicated, each producer's messages in order, the send/close race
//! (a refused send is never delivered, an accepted one is delivered once), wrap-around with a
//! batch sharing one claim, fragments of two producers interleaving, no lost wake-up in either
//! direction, and `unblock` past a claim whose producer died.
//!
//! Run with
//! `RUSTFLAGS="--cfg shmq_loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom_mpsc`.
//!
//! Every blocking call uses `Deadline::Never` and a zero spin budget, so a waiter sleeps at once
//! in `LoomPark`, which has no timeout: a lost wake-up is a loom deadlock.
#![cfg(shmq_loom)]

mod common;

use common::{Outcomes, let_spawned_run_first, model};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use shmq::loom_api::{Deadline, LoomPark, LoomRing, RingCtl, State, close_channel};
use shmq::ring::intent::{self, Owners};
use shmq::ring::memory::RingMemory;
use shmq::ring::mpsc::{Consumer, Next, PopError, Producer, PushError, Rec};
use shmq::ring::record::Kind;
use std::time::Duration;

/// Largest message the consumer accepts.
const MAX_MESSAGE: u64 = 1 << 20;

/// An MPSC channel on the heap: control block, ring words, futex model.
struct Mpsc {
    ctl: RingCtl,
    mem: LoomRing,
    park: LoomPark,
    cap: usize,
}

impl Mpsc {
    fn new(cap: usize) -> Arc<Mpsc> {
        Arc::new(Mpsc { ctl: RingCtl::new_active(), mem: LoomRing::new(cap), park: LoomPark::new(), cap })
    }

    /// One producer attachment (each thread gets its own, as each process would).
    fn producer(&self) -> Producer {
        Producer::new(&self.ctl, self.cap, Duration::ZERO).expect("producer")
    }

    fn consumer(&self) -> Consumer {
        Consumer::attach(&self.ctl, self.cap, MAX_MESSAGE, Duration::ZERO).expect("consumer")
    }

    fn send(&self, p: &Producer, msg: &[u8]) -> Result<(), PushError> {
        p.send(&self.ctl, &self.mem, &self.park, msg, Deadline::Never)
    }

    /// Send a batch of whole messages; returns how many one claim took.
    fn send_batch(&self, p: &Producer, msgs: &[&[u8]]) -> Result<usize, PushError> {
        let recs: Vec<Rec<'_>> = msgs.iter().map(|m| Rec { kind: Kind::Whole, prefix: None, body: m }).collect();
        p.push(&self.ctl, &self.mem, &self.park, &recs, Deadline::Never).map(|c| c.n)
    }

    /// Blocking receive of one message, copied out, space released.
    fn recv(&self, c: &mut Consumer) -> Result<Vec<u8>, PopError> {
        match c.next(&self.ctl, &self.mem, &self.park, Deadline::Never)? {
            Next::Whole { off, len, next } => {
                let mut buf = vec![0u8; len];
                self.mem.read_bytes(off, &mut buf);
                c.finish_whole(&self.ctl, &self.mem, &self.park, next, len);
                Ok(buf)
            }
            Next::Assembled => Ok(c.assembled().to_vec()),
        }
    }

    /// Blocking receive of up to `max` messages with one head update.
    fn recv_batch(&self, c: &mut Consumer, max: usize) -> Result<Vec<Vec<u8>>, PopError> {
        match c.next_batch(&self.ctl, &self.mem, &self.park, max, Deadline::Never)? {
            Some(plan) => {
                let msgs = plan
                    .items
                    .iter()
                    .map(|&(off, len)| {
                        let mut b = vec![0u8; len];
                        self.mem.read_bytes(off, &mut b);
                        b
                    })
                    .collect();
                c.finish_batch(&self.ctl, &self.mem, &self.park, &plan);
                Ok(msgs)
            }
            None => Ok(vec![c.assembled().to_vec()]),
        }
    }

    /// Receive until end-of-stream.
    fn recv_all(&self, c: &mut Consumer) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        loop {
            match self.recv(c) {
                Ok(m) => got.push(m),
                Err(PopError::Closed) => return got,
                Err(e) => panic!("receive failed: {e:?}"),
            }
        }
    }

    fn drain(&self) {
        close_channel(&self.ctl, &self.park, State::Draining).expect("close");
    }

    fn wakes(&self) -> (u32, u32) {
        (self.ctl.wake.rx_seq.load(Ordering::SeqCst), self.ctl.wake.tx_seq.load(Ordering::SeqCst))
    }
}

/// Two producers (two attachments, as two processes), two messages each, one consumer: each
/// message exactly once, each producer's in order. The consumer may sleep and must be woken.
#[test]
fn two_producers_in_order() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move |spawned_first| {
        let ch = Mpsc::new(128);
        let producers: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|id| {
                let ch = ch.clone();
                loom::thread::spawn(move || {
                    let p = ch.producer();
                    ch.send(&p, &[id, 0]).unwrap();
                    ch.send(&p, &[id, 1]).unwrap();
                })
            })
            .collect();
        let_spawned_run_first(spawned_first);
        let mut c = ch.consumer();
        let got: Vec<Vec<u8>> = (0..4).map(|_| ch.recv(&mut c).unwrap()).collect();
        for p in producers {
            p.join().unwrap();
        }
        for id in [1u8, 2] {
            let seqs: Vec<u8> = got.iter().filter(|m| m[0] == id).map(|m| m[1]).collect();
            assert_eq!(seqs, [0, 1], "producer {id}: {got:?}");
        }
        seen.record(format!("first from {}", got[0][0]));
    });
    // Either producer can win the first claim.
    outcomes.assert_exactly(&["first from 1", "first from 2"]);
}

/// Two threads of one process share one `Producer` (a cloned `Sender`): its cached head is
/// shared too. Each message exactly once.
#[test]
fn two_threads_share_one_producer() {
    model(|spawned_first| {
        let ch = Mpsc::new(64); // four 16-byte records: the ring fills, the cached head refreshes
        let p = Arc::new(ch.producer());
        let threads: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|id| {
                let (ch, p) = (ch.clone(), p.clone());
                loom::thread::spawn(move || {
                    for k in 0..2u8 {
                        ch.send(&p, &[id, k]).unwrap();
                    }
                })
            })
            .collect();
        let_spawned_run_first(spawned_first);
        let mut c = ch.consumer();
        let mut got: Vec<Vec<u8>> = (0..4).map(|_| ch.recv(&mut c).unwrap()).collect();
        for t in threads {
            t.join().unwrap();
        }
        got.sort();
        assert_eq!(got, [vec![1, 0], vec![1, 1], vec![2, 0], vec![2, 1]]);
    });
}

/// A send races a DRAINING close (and the consumer reads until end-of-stream): accepted and
/// received exactly once, or refused and never received. Both outcomes occur.
#[test]
fn send_close_race() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move |spawned_first| {
        let ch = Mpsc::new(64);
        let sender = {
            let ch = ch.clone();
            loom::thread::spawn(move || ch.send(&ch.producer(), &[7]))
        };
        let closer = {
            let ch = ch.clone();
            loom::thread::spawn(move || ch.drain())
        };
        let_spawned_run_first(spawned_first);
        let got = ch.recv_all(&mut ch.consumer());
        let sent = sender.join().unwrap();
        closer.join().unwrap();
        match sent {
            Ok(()) => assert_eq!(got, [vec![7]], "accepted but not delivered once"),
            Err(PushError::Closed) => assert!(got.is_empty(), "refused but delivered: {got:?}"),
            Err(e) => panic!("{e:?}"),
        }
        seen.record((if sent.is_ok() { "accepted" } else { "refused" }).to_string());
    });
    outcomes.assert_exactly(&["accepted", "refused"]);
}

/// A 64-byte ring: a 16-byte record, then a batch of two 24-byte records in one claim, which
/// does not fit before the ring's end once the first is consumed: padding, then the batch at
/// offset 0. The consumer takes batches. Order and contents survive the wrap.
#[test]
fn wrap_with_padding_and_a_batch() {
    model(|spawned_first| {
        let ch = Mpsc::new(64);
        let producer = {
            let ch = ch.clone();
            loom::thread::spawn(move || {
                let p = ch.producer();
                ch.send(&p, &[1u8; 8]).unwrap(); // 16 bytes at 0
                ch.send(&p, &[2u8; 8]).unwrap(); // 16 bytes at 16
                let (a, b) = ([3u8; 8], [4u8; 1]);
                let batch: [&[u8]; 2] = [&a, &b]; // 32 bytes: at 32 (fits) or wraps
                let mut sent = 0;
                while sent < 2 {
                    sent += ch.send_batch(&p, &batch[sent..]).unwrap();
                }
                ch.send(&p, &[5u8; 8]).unwrap(); // after the batch: wraps to offset 0
            })
        };
        let_spawned_run_first(spawned_first);
        let mut c = ch.consumer();
        let mut got = Vec::new();
        while got.len() < 5 {
            got.extend(ch.recv_batch(&mut c, 4).unwrap());
        }
        producer.join().unwrap();
        let firsts: Vec<u8> = got.iter().map(|m| m[0]).collect();
        assert_eq!(firsts, [1, 2, 3, 4, 5]);
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [8, 8, 8, 1, 8]);
        assert!(got.iter().all(|m| m.iter().all(|&b| b == m[0])));
    });
}

/// Two producers each send a message larger than a record may be (fragments), on a 128-byte
/// ring: their pieces may interleave; the consumer assembles both whole.
#[test]
fn fragments_of_two_producers() {
    model(|spawned_first| {
        let ch = Mpsc::new(128); // max_whole 24: a 20-byte message travels as FIRST + LAST
        let producers: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|id| {
                let ch = ch.clone();
                loom::thread::spawn(move || ch.send(&ch.producer(), &[id; 20]).unwrap())
            })
            .collect();
        let_spawned_run_first(spawned_first);
        let mut c = ch.consumer();
        let mut got: Vec<Vec<u8>> = (0..2).map(|_| ch.recv(&mut c).unwrap()).collect();
        for p in producers {
            p.join().unwrap();
        }
        got.sort();
        assert_eq!(got, [vec![1u8; 20], vec![2u8; 20]]);
    });
}

/// A producer blocked on a full ring (four 16-byte records in 64 bytes) must be woken by the
/// consumer's release, and a consumer blocked on an empty ring by the producer's commit.
#[test]
fn no_lost_wakeup_either_way() {
    let coverage = Outcomes::default();
    let seen = coverage.clone();
    model(move |spawned_first| {
        let ch = Mpsc::new(64);
        let producer = {
            let ch = ch.clone();
            loom::thread::spawn(move || {
                let p = ch.producer();
                for i in 0..5u8 {
                    ch.send(&p, &[i]).unwrap();
                }
            })
        };
        let_spawned_run_first(spawned_first);
        let mut c = ch.consumer();
        let got: Vec<Vec<u8>> = (0..5).map(|_| ch.recv(&mut c).unwrap()).collect();
        producer.join().unwrap();
        assert_eq!(got, [vec![0], vec![1], vec![2], vec![3], vec![4]]);
        let (rx, tx) = ch.wakes();
        if rx > 0 {
            seen.record("woke consumer".into());
        }
        if tx > 0 {
            seen.record("woke producer".into());
        }
    });
    coverage.assert_exactly(&["woke consumer", "woke producer"]);
}

/// A producer claims space and dies before committing (a reservation never committed), while
/// a second producer sends: their claims race, so either may be first in the ring. Once the
/// first is known dead, `unblock` skips its claim (by the extent in its CLAIMED marker) and
/// counts it; the survivor's message is delivered, exactly once, whichever came first.
/// (`unblock` runs after both have finished: with a live producer between its claim and its
/// marker, `unblock` cannot tell whose zeroed claim it sees: see its documentation.)
#[test]
fn unblock_skips_a_dead_producers_claim() {
    let outcomes = Outcomes::default();
    let seen = outcomes.clone();
    model(move |spawned_first| {
        let ch = Mpsc::new(64);
        let dead = {
            let ch = ch.clone();
            loom::thread::spawn(move || {
                let p = ch.producer();
                // Claimed and marked, never committed: the process "dies" here.
                let _ = p.reserve(&ch.ctl, &ch.mem, &ch.park, 8, Deadline::Never).unwrap();
            })
        };
        let survivor = {
            let ch = ch.clone();
            loom::thread::spawn(move || ch.send(&ch.producer(), &[2]).unwrap())
        };
        let_spawned_run_first(spawned_first);
        dead.join().unwrap(); // the death is confirmed
        survivor.join().unwrap();
        let mut c = ch.consumer();
        let skipped = c.unblock(&ch.ctl, &ch.mem, &ch.park).unwrap();
        // If the survivor claimed first, its message is at the head: nothing is stuck yet.
        let got = if skipped == 0 {
            let m = ch.recv(&mut c).unwrap();
            let skipped = c.unblock(&ch.ctl, &ch.mem, &ch.park).unwrap();
            assert_eq!(skipped, 16, "the dead claim is a 16-byte record");
            seen.record("survivor first".into());
            m
        } else {
            assert_eq!(skipped, 16, "the dead claim is a 16-byte record");
            seen.record("dead claim first".into());
            ch.recv(&mut c).unwrap()
        };
        assert_eq!(got, [2]);
        assert_eq!(ch.ctl.lifecycle.abandoned_claims.load(Ordering::Relaxed), 1);
        ch.drain();
        assert!(matches!(ch.recv(&mut c), Err(PopError::Closed)), "nothing else was committed");
    });
    outcomes.assert_exactly(&["dead claim first", "survivor first"]);
}

/// The futex model plus intent words for owner marks 1 and 2 (`intents[mark - 1]`).
struct IntentPark {
    futex: LoomPark,
    intents: [AtomicU64; 2],
}

impl shmq::wait::Park for IntentPark {
    fn wait(&self, word: &AtomicU32, expected: u32, deadline: Option<std::time::Instant>) -> shmq::futex::Wake {
        self.futex.wait(word, expected, deadline)
    }
    fn wake_all(&self, word: &AtomicU32) {
        self.futex.wake_all(word)
    }
}

impl Owners for IntentPark {
    fn intent_word(&self, mark: u16) -> Option<&AtomicU64> {
        (mark as usize).checked_sub(1).and_then(|i| self.intents.get(i))
    }
}

/// A producer (mark 1) is killed between its claim CAS and its CLAIMED marker: its CLAIM
/// intent says 0 and 16 bytes are claimed, all zeroes. A live producer (mark 2) sends after it,
/// anywhere in its own claim window while the receiver looks. The receiver, finding zeroes at
/// the head, asks for the live producers' CLAIM intents (the dead one's no longer counts) and
/// skips the dead claim with `unblock_unmarked`: exactly its 16 bytes, never the live
/// producer's claim (zeroes too until it is marked, but its intent says where it starts). The
/// survivor's message is delivered exactly once.
#[test]
fn unmarked_dead_claim_is_skipped_while_a_sender_is_live() {
    model(|spawned_first| {
        let ch = Arc::new((
            Mpsc { ctl: RingCtl::new_active(), mem: LoomRing::new(64), park: LoomPark::new(), cap: 64 },
            IntentPark { futex: LoomPark::new(), intents: [AtomicU64::new(0), AtomicU64::new(0)] },
        ));
        // The dead producer's two writes, in `try_claim`'s order: intent, then the claim CAS.
        ch.1.intents[0].store(intent::encode(intent::CLAIM, 0), Ordering::Release);
        ch.0.ctl.producer.tail.compare_exchange(0, 16, Ordering::AcqRel, Ordering::Acquire).unwrap();
        let survivor = {
            let ch = ch.clone();
            loom::thread::spawn(move || {
                let p = ch.0.producer().with_owner(2);
                p.send(&ch.0.ctl, &ch.0.mem, &ch.1, &[2], Deadline::Never).unwrap();
            })
        };
        let_spawned_run_first(spawned_first);
        let (m, park) = (&ch.0, &ch.1);
        let mut c = m.consumer();
        let mut skipped = 0;
        let got = loop {
            match c.next(&m.ctl, &m.mem, &m.park, Deadline::Now) {
                Ok(Next::Whole { off, len, next }) => {
                    let mut buf = vec![0u8; len];
                    m.mem.read_bytes(off, &mut buf);
                    c.finish_whole(&m.ctl, &m.mem, &m.park, next, len);
                    break buf;
                }
                Ok(Next::Assembled) => panic!("no fragmented message was sent"),
                Err(PopError::Empty) => {
                    // Only the survivor (mark 2) is alive: its intent is all that counts.
                    let live = || {
                        let w = park.intents[1].load(Ordering::Acquire);
                        Some(if intent::kind(w) == intent::CLAIM { vec![w] } else { vec![] })
                    };
                    skipped += c.unblock_unmarked(&m.ctl, &m.mem, live).unwrap();
                    loom::thread::yield_now();
                }
                Err(e) => panic!("{e:?}"),
            }
        };
        survivor.join().unwrap();
        assert_eq!(got, [2]);
        assert_eq!(skipped, 16, "exactly the dead claim");
        assert_eq!(m.ctl.lifecycle.abandoned_claims.load(Ordering::Relaxed), 1);
    });
}

/// The intent word doubles as a lock among the threads of one attachment: two threads that
/// hold it never overlap (loom's cell reports any overlapping access), and each one's intent is
/// the word's value while it holds it; the word is 0 after both.
#[test]
fn intent_word_is_held_by_one_thread_at_a_time() {
    model(|spawned_first| {
        let shared = Arc::new((AtomicU64::new(0), loom::cell::UnsafeCell::new(0u64)));
        let other = {
            let shared = shared.clone();
            loom::thread::spawn(move || {
                let _held = intent::Held::hold(Some(&shared.0), intent::encode(intent::CLAIM, 8)).unwrap();
                assert_eq!(shared.0.load(Ordering::Relaxed), intent::encode(intent::CLAIM, 8));
                // SAFETY: the word is held: no other thread touches the cell (loom checks it).
                shared.1.with_mut(|v| unsafe { *v += 1 });
            })
        };
        let_spawned_run_first(spawned_first);
        {
            let held = intent::Held::hold(Some(&shared.0), intent::encode(intent::TAKE, 16)).unwrap();
            held.set(intent::encode(intent::TAKE, 24));
            assert_eq!(shared.0.load(Ordering::Relaxed), intent::encode(intent::TAKE, 24));
            // SAFETY: as in the other thread.
            shared.1.with_mut(|v| unsafe { *v += 1 });
        }
        other.join().unwrap();
        assert_eq!(shared.0.load(Ordering::Relaxed), 0);
        // SAFETY: both threads are done (joined / out of their held section).
        assert_eq!(shared.1.with(|v| unsafe { *v }), 2);
    });
}
