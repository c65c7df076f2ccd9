//! Hostile and torn segments: every corruption gives a typed error, never a panic or a hang.
//!
//! Each test creates a real segment with `Channel::create`, corrupts its bytes through
//! `/dev/shm/shmq.NAME` with `std::fs` (at the offsets of src/layout.rs, mirrored in
//! `common`), then opens it or uses it. Opens are given a long `open_timeout` and must fail well
//! before it: the error comes from validation, not from giving up on a wait. Blocking receives
//! run under a watchdog that closes the channel after a while, so a hang turns into a failed
//! assertion rather than a stuck test. One test runs its receiver in a child process (the test
//! binary re-executed, see `common::Scope::spawn`), because its failure mode is an abort.
#![cfg(not(shmq_loom))] // these drive the public API, which loom builds do not have

mod common;

use common::*;
use shmq::{
    Channel, Config, RecvError, RecvTimeoutError, SegmentError, SendTimeoutError, TryRecvError, TrySendError, shm_path,
};
use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const CAP: u64 = 4096;

/// Entry point of the child processes of this file. Does nothing unless started by `Scope::spawn`.
#[test]
#[ignore = "entry point of the child processes of the other tests; does nothing when run directly"]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else { return };
    match role.as_str() {
        "huge_first" => child_huge_first(),
        other => panic!("unknown child role {other:?}"),
    }
}

/// Create a segment (4 KiB ring) and let go of it: it stays in /dev/shm, ACTIVE, unattached.
fn segment(scope: &Scope, what: &str) -> (String, PathBuf) {
    let name = scope.name(what);
    drop(Channel::create(&name, &Config::new().capacity(CAP as usize).max_message(1 << 20)).unwrap());
    let path = shm_path(&name);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), OFF_RING + CAP);
    (name, path)
}

fn long_wait() -> Config {
    Config::new().open_timeout(Duration::from_secs(5))
}

/// Open `name`, which must fail promptly; the error is returned.
fn open_err(name: &str) -> SegmentError {
    let t0 = Instant::now();
    let r = Channel::open(name, &long_wait());
    let elapsed = t0.elapsed();
    let e = match r {
        Ok(ch) => panic!("opened a corrupt segment: {ch:?}"),
        Err(e) => e,
    };
    assert!(elapsed < Duration::from_secs(1), "open took {elapsed:?} to fail with {e}: it waited instead of rejecting");
    assert!(!e.to_string().is_empty());
    e
}

/// The same through `Channel::from_fd` (a descriptor of the corrupt file).
fn from_fd_err(path: &std::path::Path) -> SegmentError {
    let file = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let t0 = Instant::now();
    let e = Channel::from_fd(OwnedFd::from(file), &long_wait()).expect_err("from_fd accepted a corrupt segment");
    assert!(t0.elapsed() < Duration::from_secs(1));
    e
}

fn expect_corrupt(what: &str, e: SegmentError) {
    match e {
        SegmentError::Corrupt(c) => assert!(!c.detail().is_empty(), "{what}: empty detail"),
        other => panic!("{what}: expected SegmentError::Corrupt, got {other:?}"),
    }
}

fn poke_u32(path: &std::path::Path, off: u64, v: u32) {
    poke(path, off, &v.to_le_bytes());
}

fn poke_u64(path: &std::path::Path, off: u64, v: u64) {
    poke(path, off, &v.to_le_bytes());
}

fn set_len(path: &std::path::Path, len: u64) {
    OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
}

#[test]
fn missing_segment_is_not_found() {
    let scope = Scope::new("f-missing");
    let name = scope.name("never-created");
    match open_err(&name) {
        SegmentError::NotFound { name: n } => assert_eq!(n, name),
        other => panic!("{other:?}"),
    }
    // Also once it existed and was removed.
    let (name, _) = segment(&scope, "removed");
    shmq::unlink(&name).unwrap();
    assert!(matches!(open_err(&name), SegmentError::NotFound { .. }));
    assert!(matches!(shmq::unlink(&name), Err(SegmentError::NotFound { .. })));
    scope.finish();
}

#[test]
fn bad_magic_is_corrupt() {
    let scope = Scope::new("f-magic");
    let (name, path) = segment(&scope, "m");
    poke(&path, OFF_MAGIC, b"NOTSHMQ!");
    expect_corrupt("bad magic", open_err(&name));
    expect_corrupt("bad magic via fd", from_fd_err(&path));
    scope.finish();
}

#[test]
fn wrong_layout_version_is_version_mismatch() {
    let scope = Scope::new("f-version");
    let (name, path) = segment(&scope, "v");
    // Version 1 is the layout before ownership markers (MPMC crash recovery), 2 the one before
    // intent words; 3 is current.
    for found in [1u32, 2, 4, 0, u32::MAX] {
        poke_u32(&path, OFF_VERSION, found);
        match open_err(&name) {
            SegmentError::VersionMismatch { found: f, expected: 3 } => assert_eq!(f, found),
            other => panic!("version {found}: {other:?}"),
        }
        assert!(matches!(from_fd_err(&path), SegmentError::VersionMismatch { found: f, expected: 3 } if f == found));
    }
    scope.finish();
}

#[test]
fn wrong_abi_word_is_abi_mismatch() {
    let scope = Scope::new("f-abi");
    let (name, path) = segment(&scope, "a");
    let file = std::fs::File::open(&path).unwrap();
    let ours = read_u64(&file, OFF_VERSION) >> 32; // the u32 at offset 12
    assert_ne!(ours, 0);
    // Another pointer width, another byte order, another line size.
    for found in [ours as u32 ^ 0xC, ours as u32 ^ (1 << 8), ours as u32 ^ (1 << 20)] {
        poke_u32(&path, OFF_ABI, found);
        match open_err(&name) {
            SegmentError::AbiMismatch { found: f, expected } => assert_eq!((f, expected as u64), (found, ours)),
            other => panic!("ABI {found:#x}: {other:?}"),
        }
    }
    scope.finish();
}

#[test]
fn truncated_or_resized_file_is_size_mismatch() {
    let scope = Scope::new("f-size");
    let full = OFF_RING + CAP;
    // Shorter than a header.
    for len in [1u64, 100, OFF_RING - 1] {
        let (name, path) = segment(&scope, &format!("short{len}"));
        set_len(&path, len);
        match open_err(&name) {
            SegmentError::SizeMismatch { expected, actual } => assert_eq!((expected, actual), (OFF_RING, len)),
            other => panic!("truncated to {len}: {other:?}"),
        }
    }
    // A whole header, but the ring cut (or grown): the header says another size.
    for len in [OFF_RING, OFF_RING + CAP / 2, full + 1, 2 * full] {
        let (name, path) = segment(&scope, &format!("cut{len}"));
        set_len(&path, len);
        match open_err(&name) {
            SegmentError::SizeMismatch { expected, actual } => assert_eq!((expected, actual), (full, len)),
            other => panic!("resized to {len}: {other:?}"),
        }
        assert!(matches!(from_fd_err(&path), SegmentError::SizeMismatch { .. }));
    }
    scope.finish();
}

#[test]
fn header_claiming_another_size_is_size_mismatch() {
    let scope = Scope::new("f-hdrsize");
    let (name, path) = segment(&scope, "s");
    let full = OFF_RING + CAP;
    for claimed in [full + 4096, full - 8, 0, u64::MAX] {
        poke_u64(&path, OFF_SEGMENT_SIZE, claimed);
        match open_err(&name) {
            SegmentError::SizeMismatch { expected, actual } => assert_eq!((expected, actual), (claimed, full)),
            other => panic!("header size {claimed}: {other:?}"),
        }
    }
    scope.finish();
}

#[test]
fn impossible_ring_indices_are_corrupt() {
    let scope = Scope::new("f-indices");
    let cases: [(&str, u64, u64); 6] = [
        ("head > tail", 64, 0),
        ("misaligned tail", 0, 12),
        ("misaligned head", 4, 8),
        ("tail - head > capacity", 0, CAP + 8),
        ("tail - head far beyond capacity", 8, 1 << 40),
        ("head with a stray high bit", 1 << 62, 1 << 62),
    ];
    for (i, (what, head, tail)) in cases.into_iter().enumerate() {
        let (name, path) = segment(&scope, &format!("i{i}"));
        poke_u64(&path, OFF_HEAD, head);
        poke_u64(&path, OFF_TAIL, tail);
        expect_corrupt(what, open_err(&name));
    }
    // Sanity: a full ring (tail - head == capacity) with aligned positions is fine.
    let (name, path) = segment(&scope, "full");
    poke_u64(&path, OFF_HEAD, 8 * CAP);
    poke_u64(&path, OFF_TAIL, 9 * CAP);
    drop(Channel::open(&name, &long_wait()).expect("a full ring is a valid ring"));
    scope.finish();
}

#[test]
fn unknown_lifecycle_state_is_corrupt() {
    let scope = Scope::new("f-state");
    let (name, path) = segment(&scope, "st");
    for state in [0u32, 5, 77, u32::MAX] {
        poke_u32(&path, OFF_STATE, state);
        expect_corrupt(&format!("state {state}"), open_err(&name));
    }
    scope.finish();
}

#[test]
fn other_impossible_header_fields_are_corrupt() {
    let scope = Scope::new("f-fields");
    let cases: [(&str, u64, u64, usize); 9] = [
        ("header size", OFF_HEADER_SIZE, 8192, 4),
        ("unknown flavour", OFF_FLAVOR, 9, 4),
        ("MPMC flavour without cells", OFF_FLAVOR, 3, 4),
        ("cell size on a flavour without cells", OFF_CELL_SIZE, 128, 4),
        ("ring offset", OFF_RING_OFFSET, 8192, 8),
        ("capacity not a power of two", OFF_RING_CAPACITY, CAP - 8, 8),
        ("capacity larger than the file", OFF_RING_CAPACITY, 2 * CAP, 8),
        ("capacity zero", OFF_RING_CAPACITY, 0, 8),
        ("max_message beyond any limit", OFF_MAX_MESSAGE, 1 << 50, 8),
    ];
    for (i, (what, off, v, width)) in cases.into_iter().enumerate() {
        let (name, path) = segment(&scope, &format!("h{i}"));
        poke(&path, off, &v.to_le_bytes()[..width]);
        expect_corrupt(what, open_err(&name));
    }
    // A valid segment of another flavour is not corrupt, but not an SPSC channel either.
    let (name, path) = segment(&scope, "mpsc");
    poke_u32(&path, OFF_FLAVOR, 2);
    match open_err(&name) {
        SegmentError::WrongFlavor { expected: "spsc", found: "mpsc" } => {}
        other => panic!("expected WrongFlavor, got {other:?}"),
    }
    scope.finish();
}

#[test]
fn unpublished_header_is_not_initialized_after_open_timeout() {
    let scope = Scope::new("f-uninit");
    let short = Duration::from_millis(50);
    // An all-zero header (a creator that died before publishing), and an empty file (one that
    // died between shm_open and sizing it).
    let (zeroed, path) = segment(&scope, "zero");
    poke(&path, 0, &[0u8; OFF_RING as usize]);
    let (empty, path) = segment(&scope, "empty");
    set_len(&path, 0);
    for name in [zeroed, empty] {
        let t0 = Instant::now();
        let e = Channel::open(&name, &Config::new().open_timeout(short)).expect_err("opened an unpublished segment");
        let elapsed = t0.elapsed();
        match e {
            SegmentError::NotInitialized { name: n, waited } => {
                assert_eq!(n, name);
                assert!(waited >= short, "gave up after {waited:?}, before the {short:?} timeout");
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(elapsed < Duration::from_secs(2), "open took {elapsed:?} with a {short:?} timeout");
    }
    scope.finish();
}

// ---------------------------------------------------------------------------------------------
// Corruption inside the ring, found by a receiver (or sender) already attached.

/// Record header word, as in src/ring/record.rs: length | kind << 32 | 0xA5 << 40.
fn record(kind: u64, len: u32) -> u64 {
    len as u64 | kind << 32 | 0xA5 << 40
}
const WHOLE: u64 = 1;
const FIRST: u64 = 2;
const MIDDLE: u64 = 3;
const LAST: u64 = 4;
const PAD: u64 = 5;
const ABORT: u64 = 6;

/// How a test receives.
#[derive(Clone, Copy, Debug)]
enum Form {
    Recv,
    TryRecv,
    RecvTimeout,
    RecvInto,
    RecvRef,
    TryRecvRef,
}
const FORMS: [Form; 6] =
    [Form::Recv, Form::TryRecv, Form::RecvTimeout, Form::RecvInto, Form::RecvRef, Form::TryRecvRef];

/// Receive once with `form`; true if the result is the form's `Corrupt` error. Anything else
/// (a message, Empty, Closed, a timeout) is reported in the panic message by the caller.
fn receive_is_corrupt(rx: &mut shmq::Receiver, form: Form) -> Result<(), String> {
    let bad = |what: String| Err(format!("{form:?} returned {what}"));
    match form {
        Form::Recv => match rx.recv() {
            Err(RecvError::Corrupt(_)) => Ok(()),
            other => bad(format!("{other:?}")),
        },
        Form::TryRecv => match rx.try_recv() {
            Err(TryRecvError::Corrupt(_)) => Ok(()),
            other => bad(format!("{other:?}")),
        },
        Form::RecvTimeout => match rx.recv_timeout(Duration::from_secs(10)) {
            Err(RecvTimeoutError::Corrupt(_)) => Ok(()),
            other => bad(format!("{other:?}")),
        },
        Form::RecvInto => match rx.recv_into(&mut Vec::new()) {
            Err(RecvError::Corrupt(_)) => Ok(()),
            other => bad(format!("{other:?}")),
        },
        Form::RecvRef => match rx.recv_ref() {
            Err(RecvError::Corrupt(_)) => Ok(()),
            other => bad(format!("{:?}", other.map(|m| m.len()))),
        },
        Form::TryRecvRef => match rx.try_recv_ref() {
            Err(TryRecvError::Corrupt(_)) => Ok(()),
            other => bad(format!("{:?}", other.map(|m| m.len()))),
        },
    }
}

#[test]
fn corrupt_record_headers_give_corrupt_errors() {
    // Three messages: 1 byte at ring offset 0 (16-byte record), 20 bytes at 16 (32-byte record),
    // 5 bytes at 48. The second record is then damaged; the first must still arrive, and the
    // second must give Corrupt, through every receive form, without panicking or hanging.
    let at = OFF_RING + 16;
    let cases: Vec<(&str, Vec<(u64, u64)>)> = vec![
        ("garbage header", vec![(at, 0x1122_3344_5566_7788)]),
        ("zeroed header", vec![(at, 0)]),
        ("unknown kind", vec![(at, record(9, 20))]),
        ("length past the committed tail", vec![(at, record(WHOLE, 1000))]),
        ("length past the ring's end", vec![(at, record(WHOLE, 5000))]),
        ("length of 4 GiB", vec![(at, record(WHOLE, u32::MAX))]),
        ("padding that does not end at the ring's end", vec![(at, record(PAD, 20))]),
        ("MIDDLE outside a fragmented message", vec![(at, record(MIDDLE, 20))]),
        ("LAST outside a fragmented message", vec![(at, record(LAST, 20))]),
        ("ABORT outside a fragmented message", vec![(at, record(ABORT, 0))]),
        ("FIRST shorter than its length prefix", vec![(at, record(FIRST, 4))]),
        ("FIRST announcing more than max_message", vec![(at, record(FIRST, 20)), (at + 8, 1 << 40)]),
        ("FIRST announcing less than it carries", vec![(at, record(FIRST, 20)), (at + 8, 5)]),
        // A valid FIRST (1000 bytes announced), then a WHOLE record where a fragment must follow.
        ("WHOLE inside a fragmented message", vec![(at, record(FIRST, 20)), (at + 8, 1000)]),
    ];
    let scope = Scope::new("f-records");
    for (i, (what, pokes)) in cases.into_iter().enumerate() {
        let form = FORMS[i % FORMS.len()];
        let name = scope.name(&format!("r{i}"));
        let ch = Channel::create(&name, &Config::new().capacity(CAP as usize).max_message(1 << 20)).unwrap();
        let (mut tx, mut rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        tx.send([1u8; 1]).unwrap();
        tx.send([2u8; 20]).unwrap();
        tx.send([3u8; 5]).unwrap();
        for (off, v) in pokes {
            poke_u64(&shm_path(&name), off, v);
        }
        let watchdog = Watchdog::new(&ch, Duration::from_secs(10), "receive from a corrupt ring");
        assert_eq!(rx.recv().unwrap(), [1u8; 1], "{what}: the record before the damage");
        if let Err(e) = receive_is_corrupt(&mut rx, form) {
            panic!("{what}: {e}");
        }
        // Still an error (not a panic, not a message) when asked again.
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Corrupt(_))), "{what}: second receive");
        drop(watchdog);
        // Dropping the handles (a receiver-side close over a corrupt backlog) must not panic.
        drop((tx, rx, ch));
    }
    scope.finish();
}

#[test]
fn corrupt_positions_and_state_after_attach_give_corrupt_errors() {
    let scope = Scope::new("f-live");
    let cfg = Config::new().capacity(CAP as usize).max_message(1 << 20).spin(Duration::ZERO);

    // The tail word, rewritten behind both sides' backs once the receiver has consumed all it saw
    // (it re-reads the tail only then).
    for (i, (what, tail)) in
        [("misaligned tail", 100u64), ("tail moved backwards", 16), ("tail beyond a capacity", 96 + CAP + 8)]
            .into_iter()
            .enumerate()
    {
        let name = scope.name(&format!("t{i}"));
        let ch = Channel::create(&name, &cfg).unwrap();
        let (mut tx, mut rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
        for n in 1..=3u8 {
            tx.send([n; 20]).unwrap(); // 32-byte records: tail 96
            assert_eq!(rx.recv().unwrap(), [n; 20]);
        }
        poke_u64(&shm_path(&name), OFF_TAIL, tail);
        let r = rx.try_recv();
        assert!(matches!(r, Err(TryRecvError::Corrupt(_))), "{what}: receiver got {r:?}");
        let watchdog = Watchdog::new(&ch, Duration::from_secs(10), "recv on a corrupt tail");
        let r = rx.recv();
        assert!(matches!(r, Err(RecvError::Corrupt(_))), "{what}: receiver got {r:?}");
        drop(watchdog);
        // The sender's commit (a CAS from the tail it last wrote) notices too.
        match tx.send([4u8; 20]) {
            Err(shmq::SendError::Corrupt(m, _)) => assert_eq!(m, [4u8; 20]),
            other => panic!("{what}: sender got {other:?}"),
        }
        drop((tx, rx, ch));
    }

    // The head word, rewritten behind the sender's back: once its cached room is used up, the
    // sender reads the head, finds it impossible and hands the message back with Corrupt.
    let name = scope.name("head");
    let ch = Channel::create(&name, &cfg).unwrap();
    let mut tx = ch.sender().unwrap();
    poke_u64(&shm_path(&name), OFF_HEAD, 1 << 40);
    let mut outcome = None;
    for _ in 0..100 {
        match tx.try_send([7u8; 100]) {
            Ok(()) => continue,
            Err(e) => {
                outcome = Some(e);
                break;
            }
        }
    }
    match outcome {
        Some(TrySendError::Corrupt(m, _)) => assert_eq!(m, [7u8; 100]),
        other => panic!("garbage head: {other:?}"),
    }
    drop((tx, ch));

    // The lifecycle word, rewritten while both sides are attached.
    let name = scope.name("state");
    let ch = Channel::create(&name, &cfg).unwrap();
    let (mut tx, mut rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
    while tx.try_send([9u8; 100]).is_ok() {}
    poke_u32(&shm_path(&name), OFF_STATE, 77);
    let watchdog = Watchdog::new(&ch, Duration::from_secs(10), "blocking calls on a corrupt state word");
    assert!(matches!(rx.recv(), Err(RecvError::Corrupt(_))));
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Corrupt(_))));
    match tx.send_timeout([8u8; 100], Duration::from_secs(5)) {
        Err(SendTimeoutError::Corrupt(m, _)) => assert_eq!(m, [8u8; 100]),
        other => panic!("send on a corrupt state word: {other:?}"),
    }
    assert!(ch.state().is_err());
    assert!(ch.stats().is_err());
    assert!(ch.close_now().is_err());
    assert!(ch.drain().is_err());
    assert!(rx.close().is_err());
    assert!(tx.state().is_err());
    drop(watchdog);
    drop((tx, rx, ch));
    scope.finish();
}

/// Peak virtual size of this process in bytes.
fn vm_peak() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmPeak:")).expect("VmPeak in /proc/self/status");
    line.split_ascii_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn child_huge_first() {
    let ch = Channel::open(&env_var("SHMQ_IT_NAME"), &Config::new()).unwrap();
    let mut rx = ch.receiver().unwrap();
    // The FIRST fragment is well-formed; the rest of the message simply has not arrived.
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    let peak = vm_peak();
    report("vm_peak", peak);
    assert!(peak < 4 << 30, "a 12-byte fragment made the receiver reserve {peak} bytes of address space");
}

#[test]
fn huge_announced_length_does_not_make_the_receiver_allocate_it() {
    // The segment's creator (a peer, possibly hostile) chose the largest max_message validation
    // accepts (1 TiB) and announces a message of nearly that size in a FIRST fragment. The
    // receiver, in another process, must neither abort on an impossible allocation nor reserve
    // the announced size up front: memory may only follow the bytes that actually arrive.
    let scope = Scope::new("f-huge");
    let name = scope.name("h");
    let ch = Channel::create(&name, &Config::new().capacity(CAP as usize).max_message(1 << 40)).unwrap();
    let mut tx = ch.sender().unwrap(); // stays attached: the stream is not closed
    tx.send([2u8; 20]).unwrap();
    poke_u64(&shm_path(&name), OFF_RING, record(FIRST, 20));
    poke_u64(&shm_path(&name), OFF_RING + 8, (1 << 40) - 1);
    let out = scope.spawn("huge_first", &[("SHMQ_IT_NAME", &name)]).wait(Duration::from_secs(30));
    out.assert_success();
    println!("receiver's peak virtual size: {} MiB", out.report_u64("vm_peak") >> 20);
    drop((tx, ch));
    scope.finish();
}

/// Offsets of the 64 intent words (header lines 11-26, four words used per line).
fn intent_word_offsets() -> impl Iterator<Item = u64> {
    (0..16u64).flat_map(|line| (0..4u64).map(move |w| 11 * 128 + line * 128 + w * 8))
}

/// Another process scribbles a value into every intent word (ours included) that none of our
/// threads will ever clear. MPSC and MPMC sends, and an MPMC receive with a message waiting,
/// return `Corrupt` (the message handed back) after the hold limit instead of spinning for ever.
#[test]
fn scribbled_intent_words_are_corrupt_not_a_hang() {
    let scope = Scope::new("f-intent");
    let garbage = (1u64 << 62 | 0x1234).to_le_bytes(); // a CLAIM intent nobody of ours wrote
    let m_name = scope.name("m");
    let m = shmq::mpmc::Channel::create(&m_name, &Config::new()).unwrap();
    let (tx, rx) = (m.sender().unwrap(), m.receiver().unwrap());
    tx.send(*b"before").unwrap();
    for off in intent_word_offsets() {
        poke(&shm_path(&m_name), off, &garbage);
    }
    match tx.send_timeout(*b"hello", Duration::from_secs(10)) {
        Err(shmq::SendTimeoutError::Corrupt(msg, c)) => {
            assert_eq!(msg, *b"hello", "the message is handed back");
            assert!(c.to_string().contains("intent"), "{c}");
        }
        other => panic!("MPMC send over a scribbled intent word: {other:?}"),
    }
    let err = rx.recv_timeout(Duration::from_secs(10)).expect_err("the take needs the intent word");
    assert!(matches!(err, shmq::RecvTimeoutError::Corrupt(_)), "{err:?}");
    drop((tx, rx, m));

    let s_name = scope.name("s");
    let s = shmq::mpsc::Channel::create(&s_name, &Config::new()).unwrap();
    let tx = s.sender().unwrap();
    for off in intent_word_offsets() {
        poke(&shm_path(&s_name), off, &garbage);
    }
    assert!(matches!(tx.try_send(*b"hello"), Err(shmq::TrySendError::Corrupt(..))));
    drop((tx, s));
    scope.finish();
}

/// A small deterministic generator (xorshift64*), so that a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One MPSC or MPMC channel (4 KiB ring, 64-byte cells) with a few messages in flight, then a
/// hostile process writes 1-4 words anywhere in the segment (header, peer table, intent words,
/// ring, MPMC sequence words): edge values, nearby positions or noise. Every later operation
/// must return (a message or a typed error) within the intent hold limit and never panic,
/// including the drops at the end. 300 seeds per flavour.
#[test]
fn random_scribbles_on_multi_channels_are_errors_not_panics() {
    let scope = Scope::new("f-scrib");
    for seed in 1..=600u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let name = scope.name(&format!("s{seed}"));
        let mpmc = seed % 2 == 0;
        let cfg = Config::new().capacity(CAP as usize).cell_size(64).open_timeout(Duration::from_millis(50));
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            scribble_and_operate(&name, mpmc, &cfg, &mut rng);
        }));
        let _ = shmq::unlink(&name);
        if let Err(p) = run {
            let what = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!("seed {seed} ({}): {what:?}", if mpmc { "mpmc" } else { "mpsc" });
        }
    }
    scope.finish();
}

fn scribble_and_operate(name: &str, mpmc: bool, cfg: &Config, rng: &mut Rng) {
    let len = |rng: &mut Rng| rng.below(600) as usize;
    let path = shm_path(name);
    let seg_len = if mpmc { OFF_RING + CAP + 8 * (CAP / 64) } else { OFF_RING + CAP };
    let scribble = |rng: &mut Rng| {
        for _ in 0..1 + rng.below(4) {
            let off = match rng.below(4) {
                0 => rng.below(OFF_RING / 8) * 8,        // anywhere in the header
                1 => 11 * 128 + rng.below(2048 / 8) * 8, // the intent words
                2 => OFF_RING + rng.below(CAP / 8) * 8,  // the ring
                _ => OFF_RING + CAP + rng.below((seg_len - OFF_RING - CAP).max(8) / 8) * 8, // seqs
            }
            .min(seg_len - 8);
            let old = {
                let f = std::fs::File::open(&path).unwrap();
                read_u64(&f, off)
            };
            let v = match rng.below(6) {
                0 => 0,
                1 => u64::MAX,
                2 => old.wrapping_add(rng.below(5) * 64),
                3 => old.wrapping_sub(rng.below(5) * 64),
                4 => old ^ (1 << rng.below(64)),
                _ => rng.next(),
            };
            poke(&path, off, &v.to_le_bytes());
        }
    };
    // A bounded operation: returns within the hold limit, whatever it returns.
    let bounded = |what: &str, t0: Instant| {
        assert!(t0.elapsed() < Duration::from_secs(4), "{what} took {:?}", t0.elapsed());
    };
    // The same steps for both flavours (their handle types differ).
    macro_rules! operate {
        ($flavour:literal, $ch:expr) => {{
            let ch = $ch;
            #[allow(unused_mut)]
            let (tx, mut rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
            for _ in 0..rng.below(6) {
                let _ = tx.try_send(vec![7u8; len(rng)]);
            }
            scribble(rng);
            for _ in 0..12 {
                let t0 = Instant::now();
                match rng.below(5) {
                    0 => drop(tx.try_send(vec![1u8; len(rng)])),
                    1 => drop(tx.send_timeout(vec![2u8; len(rng)], Duration::from_millis(2))),
                    2 => drop(rx.try_recv()),
                    3 => drop(rx.recv_timeout(Duration::from_millis(2))),
                    _ => drop(ch.stats()),
                }
                bounded(concat!("an ", $flavour, " operation"), t0);
            }
            let t0 = Instant::now();
            drop((tx, rx, ch));
            bounded(concat!($flavour, " drops"), t0);
        }};
    }
    if mpmc {
        operate!("MPMC", shmq::mpmc::Channel::create(name, cfg).unwrap());
    } else {
        operate!("MPSC", shmq::mpsc::Channel::create(name, cfg).unwrap());
    }
}
