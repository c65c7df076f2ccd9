//! Helpers shared by the fuzz targets: the segment layout as an outsider sees it (offsets of the
//! header words, the record header encoding), a reusable memfd, and "interesting" values.
//!
//! The offsets are copied from src/layout.rs on purpose: a hostile peer does not link shmq, it
//! only knows the byte layout. If the layout changes, the targets keep working (they only lose
//! precision) and `field_table_matches_a_fresh_segment` in open_segment notices.

#![allow(dead_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub const HEADER_SIZE: usize = 4096;
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMQSEG1");
pub const TAG: u64 = 0xA5;
/// Record kinds: WHOLE=1, FIRST=2, MIDDLE=3, LAST=4, PAD=5, ABORT=6.
pub const KINDS: u8 = 6;

pub const OFF_MAGIC: usize = 0;
pub const OFF_MAX_MESSAGE: usize = 48;
pub const OFF_STATE: usize = 128;
pub const OFF_SENDERS: usize = 132;
pub const OFF_RECEIVERS: usize = 136;
pub const OFF_HANDLES: usize = 140;
pub const OFF_TAIL: usize = 256;
pub const OFF_HEAD: usize = 384;

/// Every header word: (offset, width in bytes, name).
pub const FIELDS: &[(usize, usize, &str)] = &[
    (0, 8, "magic"),
    (8, 4, "layout_version"),
    (12, 4, "abi"),
    (16, 4, "header_size"),
    (20, 4, "flavor"),
    (24, 8, "segment_size"),
    (32, 8, "ring_offset"),
    (40, 8, "ring_capacity"),
    (48, 8, "max_message"),
    (56, 4, "creator_pid"),
    (64, 8, "creator_start_time"),
    (72, 8, "generation"),
    (128, 4, "state"),
    (132, 4, "senders"),
    (136, 4, "receivers"),
    (140, 4, "handles"),
    (144, 8, "discarded_msgs"),
    (152, 8, "discarded_bytes"),
    (160, 8, "t_draining"),
    (168, 8, "t_closing"),
    (176, 8, "t_closed"),
    (256, 8, "tail"),
    (264, 8, "sent_msgs"),
    (272, 8, "sent_bytes"),
    (384, 8, "head"),
    (392, 8, "recv_msgs"),
    (400, 8, "recv_bytes"),
    (512, 4, "rx_seq"),
    (516, 4, "tx_seq"),
];

/// Values that sit on the edges of the checks shmq makes.
pub const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    16,
    1008,
    1016,
    1024,
    4088,
    4096,
    4104,
    8192,
    8192 + 4096,
    65536,
    65536 + 4096,
    1 << 20,
    (1 << 32) - 1,
    1 << 32,
    1 << 40,
    (1 << 40) + 1,
    (1 << 62) - 8,
    1 << 62,
    (1 << 62) | 8,
    1 << 63,
    (1 << 63) | 8,
    u64::MAX - 7,
    u64::MAX,
    MAGIC,
    1 | (1 << 8) | (16 << 16) | (8 << 24), // the ABI word's value on x86_64/aarch64 builds
];

/// How a fuzzer-chosen value is turned into a word.
#[derive(arbitrary::Arbitrary, Debug, Clone, Copy)]
pub enum Value {
    Raw(u64),
    Interesting(u8),
    /// The current value plus `8 * delta` (wrapping): positions and lengths stay aligned.
    Delta(i16),
    /// The current value with one bit flipped.
    FlipBit(u8),
}

impl Value {
    pub fn resolve(self, cur: u64) -> u64 {
        match self {
            Value::Raw(v) => v,
            Value::Interesting(i) => INTERESTING[i as usize % INTERESTING.len()],
            Value::Delta(d) => cur.wrapping_add((d as i64 * 8) as u64),
            Value::FlipBit(b) => cur ^ (1u64 << (b % 64)),
        }
    }
}

/// A record header word as src/ring/record.rs encodes it.
pub fn record_header(kind: u8, len: u32) -> u64 {
    (len as u64) | ((kind as u64) << 32) | (TAG << 40)
}

/// Size of a record with `len` payload bytes.
pub fn record_size(len: usize) -> usize {
    8 + len.next_multiple_of(8)
}

pub fn read_le(buf: &[u8], off: usize, width: usize) -> u64 {
    let mut b = [0u8; 8];
    let n = width.min(buf.len().saturating_sub(off));
    if n > 0 {
        b[..n].copy_from_slice(&buf[off..off + n]);
    }
    u64::from_le_bytes(b)
}

pub fn write_le(buf: &mut [u8], off: usize, width: usize, v: u64) {
    let n = width.min(buf.len().saturating_sub(off));
    if n > 0 {
        buf[off..off + n].copy_from_slice(&v.to_le_bytes()[..n]);
    }
}

/// A memfd (no seals) to hold a segment image.
pub fn memfd(label: &std::ffi::CStr) -> OwnedFd {
    // SAFETY: `label` is a valid C string; the returned fd is owned below.
    let fd = unsafe { libc::memfd_create(label.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: fresh descriptor, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Make `fd`'s content exactly `image` (truncating first, so no old byte survives).
pub fn fill(fd: &OwnedFd, image: &[u8]) {
    let raw = fd.as_raw_fd();
    // SAFETY: `raw` is an open memfd for the duration of the calls; `image` outlives pwrite.
    unsafe {
        assert_eq!(libc::ftruncate(raw, 0), 0);
        assert_eq!(libc::ftruncate(raw, image.len() as libc::off_t), 0);
        let mut done = 0usize;
        while done < image.len() {
            let n = libc::pwrite(raw, image[done..].as_ptr().cast(), image.len() - done, done as libc::off_t);
            assert!(n > 0, "pwrite: {}", std::io::Error::last_os_error());
            done += n as usize;
        }
    }
}

/// The whole content of a segment's file.
pub fn snapshot(fd: std::os::fd::BorrowedFd<'_>) -> Vec<u8> {
    let raw = fd.as_raw_fd();
    // SAFETY: fstat/pread on an open descriptor into buffers we own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        assert_eq!(libc::fstat(raw, &mut st), 0);
        let mut buf = vec![0u8; st.st_size as usize];
        let mut done = 0usize;
        while done < buf.len() {
            let n = libc::pread(raw, buf[done..].as_mut_ptr().cast(), buf.len() - done, done as libc::off_t);
            assert!(n > 0);
            done += n as usize;
        }
        buf
    }
}

/// `dup` with close-on-exec.
pub fn dup(fd: &OwnedFd) -> OwnedFd {
    fd.try_clone().expect("dup")
}

/// The content of message number `seq` of length `len`: distinct for every (seq, len), so a
/// reordered, duplicated, truncated or mixed-up message never compares equal by accident.
pub fn pattern(seq: u64, len: usize, fill: u8) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add((i >> 8) as u8).wrapping_add(fill) ^ (seq as u8))
        .collect();
    let tag = seq.to_le_bytes();
    let n = len.min(8);
    v[..n].copy_from_slice(&tag[..n]);
    v
}

/// Known shmq bugs the targets can be told to steer around, so that fuzzing can go on looking for
/// others while a fix is pending: `SHMQ_FUZZ_AVOID=counter-overflow,...`. Empty by default
/// (CI runs strict). Each id is documented where it is checked.
pub fn avoid(id: &str) -> bool {
    static LIST: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    LIST.get_or_init(|| {
        std::env::var("SHMQ_FUZZ_AVOID")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .iter()
    .any(|s| s == id)
}

/// Offsets of the statistics counters that shmq increments with plain (overflow-checked) adds.
pub const COUNTERS: &[usize] = &[264, 272, 392, 400];

/// With `SHMQ_FUZZ_LOG=1`, print every error the library returned (one line each), e.g. to see
/// which of shmq's corruption checks a corpus reaches:
/// `SHMQ_FUZZ_LOG=1 cargo fuzz run hostile_peer corpus/hostile_peer -- -runs=0 2>&1 | grep '^err:' | sort | uniq -c`
pub fn note(e: &dyn std::fmt::Display) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let text = e.to_string(); // always format: Display must not panic either
    if *ON.get_or_init(|| std::env::var_os("SHMQ_FUZZ_LOG").is_some()) {
        // Numbers vary; keep the shape of the message.
        let shape: String = text.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect();
        eprintln!("err: {shape}");
    }
}

/// `r.ok()`, noting the error.
pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            note(&e);
            None
        }
    }
}
