//! Fuzz target: random operation sequences on one channel, checked against a `VecDeque` model.
//!
//! One thread drives both sides of an anonymous channel with a small ring (4096 bytes, messages
//! up to 64 KiB), so only forms that cannot block are used when the model says they might
//! (`try_*`, zero timeouts; the blocking forms only when the model knows they return at once).
//!
//! Checked after every operation:
//! * every accepted message is received exactly once, in order, byte-identical, unless a
//!   receiver-side close discarded it (then it is counted in `Stats::discarded_msgs`, and
//!   `Receiver::close` reports it);
//! * a refused send hands the message back unchanged (`into_inner`), a refused commit the bytes
//!   written; refusal kinds match the state (Full only while ACTIVE, Closed only once closed,
//!   TooLarge exactly above max_message);
//! * no spurious Full: a send of up to half the ring into a ring known to be empty succeeds;
//! * after a sender-side close the backlog drains, then `Closed`; the state only moves forward
//!   and is the same seen from the channel, the sender and the receiver;
//! * the counters (`sent_*`, `recv_*`, `discarded_msgs`) match the model; at the end
//!   sent == received + discarded.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use arbitrary::Arbitrary;
use common::pattern;
use libfuzzer_sys::fuzz_target;
use shmq::{
    Channel, Config, Receiver, RecvTimeoutError, SendError, SendTimeoutError, Sender, State, TryRecvError, TrySendError,
};
use std::collections::VecDeque;
use std::time::Duration;

const CAP: usize = 4096;
const MAX_MESSAGE: usize = 64 * 1024;
/// `max_single_record(CAP)`: larger messages are fragmented.
const MAX_WHOLE: usize = CAP / 4 - 8;
const MAX_OPS: usize = 200;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Tiny(u8),
    Small(u16),
    Big(u16),
    Edge(u8),
}

const EDGES: &[usize] = &[
    0,
    1,
    7,
    8,
    9,
    MAX_WHOLE - 9,
    MAX_WHOLE - 8,
    MAX_WHOLE - 7,
    MAX_WHOLE - 1,
    MAX_WHOLE,
    MAX_WHOLE + 1,
    1024,
    2 * MAX_WHOLE - 8,
    2 * MAX_WHOLE - 7,
    CAP / 2,
    CAP - 16,
    CAP,
    CAP + 1,
    MAX_MESSAGE - 1,
    MAX_MESSAGE,
    MAX_MESSAGE + 1,
];

impl Size {
    fn get(self) -> usize {
        match self {
            Size::Tiny(n) => n as usize % 24,
            Size::Small(n) => n as usize % (MAX_WHOLE + 64),
            Size::Big(n) => n as usize % (MAX_MESSAGE + 16),
            Size::Edge(i) => EDGES[i as usize % EDGES.len()],
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum SendKind {
    Try,
    TimeoutZero,
    /// 50 µs: the sender really sleeps when the ring is full.
    TimeoutShort,
    /// `send()`, used only when the model knows it cannot block; otherwise `try_send`.
    Blocking,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Commit {
    Whole,
    Len(u16),
    Drop,
}

/// Something another handle does while a reserved slot is held.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Between {
    Nothing,
    TryRecv,
    Drain,
    CloseNow,
    ReceiverClose,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum RecvKind {
    Try,
    TimeoutZero,
    /// A 50 µs timeout: when nothing is there the receiver really sleeps (and sets the
    /// waiting flag the next commit must clear).
    TimeoutShort,
    IntoTimeoutZero,
    /// `recv()` / `recv_into()`, only when the model knows a message or the end is there.
    Blocking,
    BlockingInto,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    Send { size: Size, fill: u8, kind: SendKind },
    Reserve { size: Size, fill: u8, commit: Commit, between: Between },
    Recv { kind: RecvKind },
    RecvRef { blocking: bool, at: u16, whole: bool },
    SenderClose,
    ReceiverClose,
    Drain,
    CloseNow,
    DropSender,
    DropReceiver,
    NewSender { via_fd: bool },
    NewReceiver { via_fd: bool },
    Check,
}

struct Model {
    ch: Channel,
    /// Other mappings of the same segment (opened from its fd), to take roles through.
    others: Vec<Channel>,
    tx: Option<Sender>,
    rx: Option<Receiver>,
    /// Accepted, not yet received or discarded.
    queue: VecDeque<Vec<u8>>,
    state: State,
    seq: u64,
    /// Nothing at all is in the ring: every record committed so far has been consumed.
    known_empty: bool,
    /// A refused fragmented send may have left its first pieces (and an ABORT) in the ring.
    junk: bool,
    sent_msgs: u64,
    sent_bytes: u64,
    recv_msgs: u64,
    recv_bytes: u64,
    /// Messages doomed by a receiver-side close, and of those, how many the receiver has not
    /// thrown away yet (it does so at its next operation).
    doomed_msgs: u64,
    doomed_bytes: u64,
    /// [msgs, bytes]
    undiscarded: [u64; 2],
}

/// Discarded bytes are the payload bytes of the accepted messages a receiver-side close threw
/// away: not the pieces of a refused (aborted) fragmented send that were still in the ring.
fn check_discarded_bytes(got: u64, want: u64, who: &str) {
    if common::avoid("discarded-bytes") {
        // Known bug: the pieces of refused sends are counted too.
        assert!(got >= want, "{who}: {got} bytes discarded, at least {want} expected");
    } else {
        assert_eq!(got, want, "{who}: discarded bytes (accepted messages only)");
    }
}

fn cfg() -> Config {
    Config::new().capacity(CAP).max_message(MAX_MESSAGE as u64).spin(Duration::ZERO)
}

impl Model {
    fn new() -> Model {
        let ch = Channel::anonymous(&cfg()).expect("anonymous channel");
        let tx = ch.sender().expect("sender");
        let rx = ch.receiver().expect("receiver");
        Model {
            ch,
            others: Vec::new(),
            tx: Some(tx),
            rx: Some(rx),
            queue: VecDeque::new(),
            state: State::Active,
            seq: 0,
            known_empty: true,
            junk: false,
            sent_msgs: 0,
            sent_bytes: 0,
            recv_msgs: 0,
            recv_bytes: 0,
            doomed_msgs: 0,
            doomed_bytes: 0,
            undiscarded: [0, 0],
        }
    }

    fn next_msg(&mut self, len: usize, fill: u8) -> Vec<u8> {
        self.seq += 1;
        pattern(self.seq, len, fill)
    }

    fn raise(&mut self, to: State) {
        if to > self.state {
            self.state = to;
        }
    }

    /// Receiver-side close (or CLOSE_NOW): the backlog is doomed.
    fn doom(&mut self) {
        self.raise(State::Closing);
        let n = self.queue.len() as u64;
        let b: u64 = self.queue.iter().map(|m| m.len() as u64).sum();
        self.queue.clear();
        self.doomed_msgs += n;
        self.doomed_bytes += b;
        self.undiscarded[0] += n;
        self.undiscarded[1] += b;
    }

    fn accepted(&mut self, msg: Vec<u8>) {
        assert_eq!(self.state, State::Active, "a send was accepted in state {:?}", self.state);
        self.sent_msgs += 1;
        self.sent_bytes += msg.len() as u64;
        self.queue.push_back(msg);
        self.known_empty = false;
    }

    /// A send that must have fit: ACTIVE, ring known empty, at most half the ring.
    fn must_fit(&self, len: usize) -> bool {
        self.state == State::Active && self.known_empty && len <= CAP / 2
    }

    fn refused<M: AsRef<[u8]>>(&mut self, what: &str, len: usize, back: M, msg: &[u8]) {
        assert_eq!(back.as_ref(), msg, "{what}: the refused message must come back unchanged");
        if what == "Full" || what == "Timeout" {
            assert_eq!(self.state, State::Active, "{what} although the channel is {:?}", self.state);
            assert!(len <= MAX_MESSAGE);
            assert!(!self.must_fit(len), "{what} for {len} bytes into an empty {CAP}-byte ring");
            if len > MAX_WHOLE {
                // The first pieces may have been written and aborted: they use ring space.
                self.junk = true;
                self.known_empty = false;
            }
        } else if what == "Closed" {
            assert_ne!(self.state, State::Active, "Closed while the model is ACTIVE");
            assert!(len <= MAX_MESSAGE);
        } else if what == "TooLarge" {
            assert!(len > MAX_MESSAGE, "TooLarge for {len} bytes");
        } else {
            panic!("send refused: {what}");
        }
    }

    fn send(&mut self, size: Size, fill: u8, kind: SendKind) {
        let len = size.get();
        let msg = self.next_msg(len, fill);
        let closed = self.state != State::Active;
        let fits = self.must_fit(len);
        let Some(tx) = self.tx.as_mut() else { return };
        let res: Result<(), (&str, Vec<u8>)> = match kind {
            SendKind::Blocking if closed || len > MAX_MESSAGE || fits => tx.send(msg.clone()).map_err(|e| match e {
                SendError::Closed(m) => ("Closed", m),
                SendError::TooLarge(m) => ("TooLarge", m),
                SendError::Corrupt(_, c) => panic!("corrupt: {c}"),
                SendError::PeerDead(_, p) => panic!("PeerDead({p}) although no process died"),
            }),
            SendKind::Try | SendKind::Blocking => tx.try_send(msg.clone()).map_err(|e| match e {
                TrySendError::Full(m) => ("Full", m),
                TrySendError::Closed(m) => ("Closed", m),
                TrySendError::TooLarge(m) => ("TooLarge", m),
                TrySendError::Corrupt(_, c) => panic!("corrupt: {c}"),
                TrySendError::PeerDead(_, p) => panic!("PeerDead({p}) although no process died"),
            }),
            SendKind::TimeoutZero | SendKind::TimeoutShort => {
                let t = if matches!(kind, SendKind::TimeoutZero) { Duration::ZERO } else { Duration::from_micros(50) };
                tx.send_timeout(msg.clone(), t).map_err(|e| match e {
                    SendTimeoutError::Timeout(m) => ("Timeout", m),
                    SendTimeoutError::Closed(m) => ("Closed", m),
                    SendTimeoutError::TooLarge(m) => ("TooLarge", m),
                    SendTimeoutError::Corrupt(_, c) => panic!("corrupt: {c}"),
                    SendTimeoutError::PeerDead(_, p) => panic!("PeerDead({p}) although no process died"),
                })
            }
        };
        match res {
            Ok(()) => self.accepted(msg),
            Err((what, back)) => self.refused(what, len, back, &msg),
        }
    }

    fn reserve(&mut self, size: Size, fill: u8, commit: Commit, between: Between) {
        let len = size.get();
        let data = self.next_msg(len, fill);
        let Some(tx) = self.tx.as_mut() else { return };
        let max_zc = tx.max_zero_copy();
        assert_eq!(max_zc, MAX_WHOLE);
        let closed = self.state != State::Active;
        let known_empty = self.known_empty;
        let mut slot = match tx.try_reserve(len) {
            Ok(slot) => slot,
            Err(TrySendError::TooLarge(())) => {
                assert!(len > max_zc, "TooLarge for a {len}-byte reservation");
                return;
            }
            Err(TrySendError::Full(())) => {
                assert!(len <= max_zc && !closed, "Full for a reservation while {:?}", self.state);
                assert!(!known_empty, "Full for a {len}-byte reservation in an empty ring");
                return;
            }
            Err(TrySendError::Closed(())) => {
                assert!(closed, "reservation refused as Closed while ACTIVE");
                return;
            }
            Err(TrySendError::Corrupt((), c)) => panic!("corrupt: {c}"),
            Err(TrySendError::PeerDead(_, p)) => panic!("PeerDead({p}) although no process died"),
        };
        // A reservation may be granted while closed (the close is noticed at commit).
        assert!(len <= max_zc);
        assert_eq!(slot.len(), len);
        assert_eq!(slot.is_empty(), len == 0);
        slot.write_at(0, &data);
        // Another handle acts while the slot is held.
        match between {
            Between::Nothing => {}
            Between::TryRecv => {
                if let Some(rx) = self.rx.as_mut() {
                    let r = rx.try_recv();
                    // Checked like any receive (the reserved message must not be visible).
                    let r = r.map_err(|e| match e {
                        TryRecvError::Empty => "Empty",
                        TryRecvError::Closed => "Closed",
                        TryRecvError::Corrupt(c) => panic!("corrupt: {c}"),
                        TryRecvError::PeerDead(p) => panic!("PeerDead({p}) although no process died"),
                    });
                    Self::check_recv(
                        &mut self.queue,
                        &mut self.state,
                        &mut self.known_empty,
                        &mut self.junk,
                        &mut self.undiscarded,
                        &mut self.recv_msgs,
                        &mut self.recv_bytes,
                        r,
                    );
                }
            }
            Between::Drain => {
                self.ch.drain().expect("drain");
                if self.state == State::Active {
                    self.state = State::Draining;
                }
            }
            Between::CloseNow => {
                self.ch.close_now().expect("close_now");
                // inline `doom` (self.tx is borrowed by the slot)
                if self.state < State::Closing {
                    self.state = State::Closing;
                }
                let n = self.queue.len() as u64;
                let b = self.queue.iter().map(|m| m.len() as u64).sum::<u64>();
                self.doomed_bytes += b;
                self.undiscarded[1] += b;
                self.queue.clear();
                self.doomed_msgs += n;
                self.undiscarded[0] += n;
            }
            Between::ReceiverClose => {
                if let Some(rx) = self.rx.as_mut() {
                    if self.state < State::Closing {
                        self.state = State::Closing;
                    }
                    let n = self.queue.len() as u64;
                    let b = self.queue.iter().map(|m| m.len() as u64).sum::<u64>();
                    self.doomed_bytes += b;
                    self.undiscarded[1] += b;
                    self.queue.clear();
                    self.doomed_msgs += n;
                    self.undiscarded[0] += n;
                    let d = rx.close().expect("receiver close");
                    assert_eq!(d.msgs, self.undiscarded[0], "Receiver::close reports what it discarded");
                    check_discarded_bytes(d.bytes, self.undiscarded[1], "Receiver::close");
                    self.undiscarded[0] = 0;
                    self.undiscarded[1] = 0;
                    self.state = State::Closed;
                    self.known_empty = true;
                    self.junk = false;
                }
            }
        }
        let n = match commit {
            Commit::Whole => len,
            Commit::Len(c) => (c as usize).min(len),
            Commit::Drop => {
                // Abandoned: sends nothing (SendSlot has no Drop; nothing was written yet).
                #[allow(clippy::drop_non_drop)]
                drop(slot);
                return;
            }
        };
        let res = match commit {
            Commit::Whole => slot.commit(),
            _ => slot.commit_len(n),
        };
        match res {
            Ok(()) => {
                let mut msg = data;
                msg.truncate(n);
                self.accepted(msg);
            }
            Err(SendError::Closed(bytes)) => {
                assert_ne!(self.state, State::Active, "commit refused as Closed while ACTIVE");
                assert_eq!(bytes, data[..n], "a refused commit hands back the bytes written");
            }
            Err(e) => panic!("commit: {e}"),
        }
    }

    /// Check one receive result against the model (an associated fn so that it can run while
    /// the sender is borrowed).
    #[allow(clippy::too_many_arguments)]
    fn check_recv(
        queue: &mut VecDeque<Vec<u8>>,
        state: &mut State,
        known_empty: &mut bool,
        junk: &mut bool,
        undiscarded: &mut [u64; 2],
        recv_msgs: &mut u64,
        recv_bytes: &mut u64,
        r: Result<Vec<u8>, &str>,
    ) {
        match r {
            Ok(got) => {
                assert!(*state <= State::Draining, "a message was delivered in state {state:?}");
                let want = queue.pop_front().unwrap_or_else(|| panic!("received {} bytes nobody sent", got.len()));
                assert!(
                    got == want,
                    "received {} bytes, expected the {}-byte message {:?}",
                    got.len(),
                    want.len(),
                    &want[..want.len().min(8)]
                );
                *recv_msgs += 1;
                *recv_bytes += got.len() as u64;
                if queue.is_empty() {
                    // Not necessarily empty: junk of a refused send may still follow.
                    *known_empty = false;
                }
            }
            Err("Empty") | Err("Timeout") => {
                assert_eq!(*state, State::Active, "no message and no end-of-stream while {state:?}");
                assert!(queue.is_empty(), "Empty while {} messages are queued", queue.len());
                *known_empty = true;
                *junk = false;
            }
            Err("Closed") => {
                assert_ne!(*state, State::Active, "end-of-stream while ACTIVE");
                assert!(queue.is_empty(), "end-of-stream before {} queued messages", queue.len());
                *state = State::Closed;
                undiscarded[0] = 0;
                undiscarded[1] = 0;
                *known_empty = true;
                *junk = false;
            }
            Err(other) => panic!("{other}"),
        }
    }

    fn recv_checked(&mut self, r: Result<Vec<u8>, &str>) {
        Self::check_recv(
            &mut self.queue,
            &mut self.state,
            &mut self.known_empty,
            &mut self.junk,
            &mut self.undiscarded,
            &mut self.recv_msgs,
            &mut self.recv_bytes,
            r,
        );
    }

    /// Will a blocking receive return at once?
    fn recv_ready(&self) -> bool {
        !self.queue.is_empty() || self.state != State::Active
    }

    fn recv(&mut self, kind: RecvKind) {
        let ready = self.recv_ready();
        let Some(rx) = self.rx.as_mut() else { return };
        let try_map = |e: TryRecvError| match e {
            TryRecvError::Empty => "Empty",
            TryRecvError::Closed => "Closed",
            TryRecvError::Corrupt(c) => panic!("corrupt: {c}"),
            TryRecvError::PeerDead(p) => panic!("PeerDead({p}) although no process died"),
        };
        let to_map = |e: RecvTimeoutError| match e {
            RecvTimeoutError::Timeout => "Timeout",
            RecvTimeoutError::Closed => "Closed",
            RecvTimeoutError::Corrupt(c) => panic!("corrupt: {c}"),
            RecvTimeoutError::PeerDead(p) => panic!("PeerDead({p}) although no process died"),
        };
        let r = match kind {
            RecvKind::Blocking if ready => rx.recv().map_err(|e| match e {
                shmq::RecvError::Closed => "Closed",
                shmq::RecvError::Corrupt(c) => panic!("corrupt: {c}"),
                shmq::RecvError::PeerDead(p) => panic!("PeerDead({p}) although no process died"),
            }),
            RecvKind::BlockingInto if ready => {
                let mut buf = vec![0xEE; 3]; // cleared first
                rx.recv_into(&mut buf)
                    .map(|n| {
                        assert_eq!(n, buf.len());
                        buf
                    })
                    .map_err(|e| match e {
                        shmq::RecvError::Closed => "Closed",
                        shmq::RecvError::Corrupt(c) => panic!("corrupt: {c}"),
                        shmq::RecvError::PeerDead(p) => panic!("PeerDead({p}) although no process died"),
                    })
            }
            RecvKind::Try | RecvKind::Blocking | RecvKind::BlockingInto => rx.try_recv().map_err(try_map),
            RecvKind::TimeoutZero => rx.recv_timeout(Duration::ZERO).map_err(to_map),
            RecvKind::TimeoutShort => rx.recv_timeout(Duration::from_micros(50)).map_err(to_map),
            RecvKind::IntoTimeoutZero => {
                let mut buf = vec![0xEE; 5];
                rx.recv_into_timeout(&mut buf, Duration::ZERO)
                    .map(|n| {
                        assert_eq!(n, buf.len());
                        buf
                    })
                    .map_err(to_map)
            }
        };
        self.recv_checked(r);
    }

    fn recv_ref(&mut self, blocking: bool, at: u16, whole: bool) {
        let ready = self.recv_ready();
        let Some(rx) = self.rx.as_mut() else { return };
        let r = if blocking && ready {
            rx.recv_ref().map_err(|e| match e {
                shmq::RecvError::Closed => "Closed",
                shmq::RecvError::Corrupt(c) => panic!("corrupt: {c}"),
                shmq::RecvError::PeerDead(p) => panic!("PeerDead({p}) although no process died"),
            })
        } else {
            rx.try_recv_ref().map_err(|e| match e {
                TryRecvError::Empty => "Empty",
                TryRecvError::Closed => "Closed",
                TryRecvError::Corrupt(c) => panic!("corrupt: {c}"),
                TryRecvError::PeerDead(p) => panic!("PeerDead({p}) although no process died"),
            })
        };
        let r = r.map(|m| {
            let len = m.len();
            assert_eq!(m.is_empty(), len == 0);
            if whole {
                m.to_vec()
            } else {
                // Read only a part, then drop: the message counts as received all the same.
                let want = self.queue.front().cloned().unwrap_or_default();
                if len > 0 {
                    let off = at as usize % len;
                    let n = (len - off).min(16);
                    let mut part = vec![0u8; n];
                    m.read_at(off, &mut part);
                    assert_eq!(len, want.len(), "recv_ref length");
                    assert_eq!(part, want[off..off + n], "recv_ref bytes at {off}");
                    // SAFETY: `as_ptr` points at `len` readable bytes while `m` lives; read
                    // one byte through it (no slice over shared memory is formed).
                    let first = unsafe { m.as_ptr().read_volatile() };
                    assert_eq!(first, want[0]);
                }
                want
            }
        });
        self.recv_checked(r);
    }

    fn receiver_close(&mut self) {
        if self.rx.is_none() {
            return;
        }
        self.doom();
        let d = self.rx.as_mut().unwrap().close().expect("receiver close");
        assert_eq!(d.msgs, self.undiscarded[0], "Receiver::close reports the discarded messages");
        check_discarded_bytes(d.bytes, self.undiscarded[1], "Receiver::close");
        self.undiscarded[0] = 0;
        self.undiscarded[1] = 0;
        self.state = State::Closed;
        self.known_empty = true;
        self.junk = false;
    }

    fn op(&mut self, op: Op) {
        match op {
            Op::Send { size, fill, kind } => self.send(size, fill, kind),
            Op::Reserve { size, fill, commit, between } => self.reserve(size, fill, commit, between),
            Op::Recv { kind } => self.recv(kind),
            Op::RecvRef { blocking, at, whole } => self.recv_ref(blocking, at, whole),
            Op::SenderClose => {
                if let Some(tx) = self.tx.as_mut() {
                    tx.close();
                    self.raise(State::Draining);
                }
            }
            Op::Drain => {
                let before = self.ch.drain().expect("drain");
                assert_eq!(before, self.state, "drain reports the state found");
                self.raise(State::Draining);
            }
            Op::CloseNow => {
                let before = self.ch.close_now().expect("close_now");
                assert_eq!(before, self.state, "close_now reports the state found");
                // The backlog is doomed now; the receiver throws it away (and counts it) at its
                // next operation. (Without a receiver the state is already CLOSED.)
                self.doom();
            }
            Op::ReceiverClose => self.receiver_close(),
            Op::DropSender => {
                if self.tx.take().is_some() {
                    self.raise(State::Draining);
                }
            }
            Op::DropReceiver => {
                if self.rx.is_some() {
                    self.doom();
                    self.rx = None;
                    self.undiscarded[0] = 0;
                    self.undiscarded[1] = 0;
                    self.state = State::Closed;
                    self.known_empty = true;
                    self.junk = false;
                }
            }
            Op::NewSender { via_fd } => {
                let ch = self.handle(via_fd);
                match ch.sender() {
                    Ok(tx) => {
                        assert!(self.tx.is_none(), "a second sender role was handed out");
                        assert_eq!(tx.state().unwrap(), self.state);
                        self.tx = Some(tx);
                    }
                    Err(e) => assert!(self.tx.is_some(), "sender role refused although free: {e}"),
                }
            }
            Op::NewReceiver { via_fd } => {
                let ch = self.handle(via_fd);
                match ch.receiver() {
                    Ok(rx) => {
                        assert!(self.rx.is_none(), "a second receiver role was handed out");
                        self.rx = Some(rx);
                    }
                    Err(e) => assert!(self.rx.is_some(), "receiver role refused although free: {e}"),
                }
            }
            Op::Check => {}
        }
        self.check();
    }

    /// A channel handle to take a role through: the original, or a new mapping of its fd.
    fn handle(&mut self, via_fd: bool) -> Channel {
        if !via_fd {
            return self.ch.clone();
        }
        if self.others.len() < 4 {
            let fd = self.ch.as_fd().try_clone_to_owned().expect("dup");
            self.others.push(Channel::from_fd(fd, &cfg()).expect("from_fd of a live channel"));
        }
        self.others.last().unwrap().clone()
    }

    fn check(&self) {
        let s = self.ch.stats().expect("stats");
        assert_eq!(s.state, self.state, "state");
        assert_eq!(self.ch.state().unwrap(), self.state);
        if let Some(tx) = &self.tx {
            assert_eq!(tx.state().unwrap(), self.state);
        }
        if let Some(rx) = &self.rx {
            assert_eq!(rx.state().unwrap(), self.state);
            assert_eq!(rx.stats().unwrap(), s);
        }
        assert_eq!((s.capacity, s.max_message), (CAP, MAX_MESSAGE as u64));
        assert_eq!((s.sent_msgs, s.sent_bytes), (self.sent_msgs, self.sent_bytes), "sent counters");
        assert_eq!((s.recv_msgs, s.recv_bytes), (self.recv_msgs, self.recv_bytes), "received counters");
        assert_eq!(s.discarded_msgs, self.doomed_msgs - self.undiscarded[0], "discarded_msgs");
        if self.undiscarded[0] == 0 {
            check_discarded_bytes(s.discarded_bytes, self.doomed_bytes, "Stats");
        }
        if self.state == State::Active {
            assert_eq!((s.draining_ns, s.closing_ns, s.closed_ns), (None, None, None), "timestamps while ACTIVE");
        }
        if self.state == State::Draining {
            assert!(s.draining_ns.is_some() && s.closing_ns.is_none(), "DRAINING timestamps");
        }
        if self.state == State::Closing {
            assert!(s.closing_ns.is_some(), "CLOSING entered without a timestamp");
        }
        if self.state == State::Closed {
            assert!(s.closed_ns.is_some(), "CLOSED entered without a timestamp");
        }
        assert_eq!(s.sent_msgs, s.recv_msgs + s.discarded_msgs + self.undiscarded[0] + self.queue.len() as u64);
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut m = Model::new();
    for &op in ops.iter().take(MAX_OPS) {
        m.op(op);
    }
    // Drain what is left (the model knows every receive returns at once now).
    if let Some(tx) = m.tx.as_mut() {
        tx.close();
        m.raise(State::Draining);
    }
    while m.rx.is_some() && m.state != State::Closed {
        m.recv(RecvKind::Blocking);
    }
    m.check();
    assert!(m.queue.is_empty() || m.rx.is_none());
    let (tx, rx) = (m.tx.take(), m.rx.take());
    drop((tx, rx));
    let s = m.ch.stats().unwrap();
    assert_eq!(s.state, State::Closed);
    assert_eq!(s.sent_msgs, s.recv_msgs + s.discarded_msgs, "every accepted message received or discarded");
});
