//! Segments: a shared mapping holding a header and a ring, created by name (`shm_open`) or
//! anonymously (`memfd_create`), and opened only after every header field has been validated.
//!
//! Create/publish protocol (after iceoryx2's): the creator makes the object with `O_EXCL` and mode
//! 0600, preallocates every byte (`posix_fallocate`: a full /dev/shm fails here with `NoSpace`
//! instead of a SIGBUS on first touch), maps it, writes every header field, and stores the magic
//! word last with Release. An opener that finds the object but not the magic waits, up to a
//! timeout, and reports `NotInitialized` rather than guessing.
//!
//! The mapping is only ever accessed through atomics (the header) and raw pointers (the ring):
//! no `&[u8]` is formed over memory another process writes.

use crate::error::{Corrupt, SegmentError};
use crate::layout::{self, HEADER_SIZE, Header, MAGIC, RingCtl};
use crate::lifecycle::State;
use crate::ring::memory::RawRing;
use crate::sync::Ordering;
use memmap2::{MmapOptions, MmapRaw};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Prefix of every shmq object in /dev/shm, so that shmq's segments can be listed (and stale
/// ones found) without opening anything else.
pub const NAME_PREFIX: &str = "shmq.";
/// Longest user-supplied name (NAME_MAX is 255; leave room for the prefix).
pub const MAX_NAME: usize = 200;
/// Smallest ring: one page.
pub const MIN_CAPACITY: usize = 4096;
/// Largest ring: 1 TiB (record lengths are u32; the fragment size is a quarter of the ring).
pub const MAX_CAPACITY: usize = 1 << 40;
/// Largest message a channel may be configured for (record-level lengths are u64).
pub const MAX_MESSAGE_LIMIT: u64 = 1 << 40;

/// The shape of a new segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub capacity: usize,
    pub max_message: u64,
    /// `layout::FLAVOR_*`.
    pub flavor: u32,
    /// MPMC cell size in bytes (ignored by the other flavours).
    pub cell_size: usize,
}

/// Smallest and largest MPMC cell.
pub const MIN_CELL: usize = 16;
/// See `MIN_CELL`. At least 2 cells must fit in the ring, and the cell holds its 8-byte header.
pub const MAX_CELL: usize = 1 << 20;

/// Check an MPMC (capacity, cell) pair; returns the number of cells.
fn check_cells(capacity: u64, cell: u64) -> Result<u64, String> {
    if !cell.is_power_of_two() || cell < MIN_CELL as u64 || cell > MAX_CELL as u64 || cell * 2 > capacity {
        return Err(format!(
            "cell size {cell} must be a power of two between {MIN_CELL} and {MAX_CELL}, at most half the capacity {capacity}"
        ));
    }
    Ok(capacity / cell)
}

impl Geometry {
    pub(crate) fn check(&self) -> Result<(), SegmentError> {
        if !self.capacity.is_power_of_two() || self.capacity < MIN_CAPACITY || self.capacity > MAX_CAPACITY {
            return Err(SegmentError::InvalidConfig(format!(
                "capacity {} must be a power of two between {MIN_CAPACITY} and {MAX_CAPACITY}",
                self.capacity
            )));
        }
        if self.max_message > MAX_MESSAGE_LIMIT {
            return Err(SegmentError::InvalidConfig(format!(
                "max_message {} exceeds the limit of {MAX_MESSAGE_LIMIT} bytes",
                self.max_message
            )));
        }
        match self.flavor {
            layout::FLAVOR_SPSC | layout::FLAVOR_MPSC => {}
            layout::FLAVOR_MPMC => {
                check_cells(self.capacity as u64, self.cell_size as u64).map_err(SegmentError::InvalidConfig)?;
            }
            f => return Err(SegmentError::InvalidConfig(format!("unknown flavour {f}"))),
        }
        Ok(())
    }

    fn segment_size(&self) -> u64 {
        (HEADER_SIZE + self.capacity) as u64 + seq_bytes(self.flavor, self.capacity as u64, self.cell_size as u64)
    }
}

/// Bytes of the MPMC sequence array that follows the ring (0 for other flavours).
fn seq_bytes(flavor: u32, capacity: u64, cell: u64) -> u64 {
    if flavor == layout::FLAVOR_MPMC && cell != 0 { capacity / cell * 8 } else { 0 }
}

/// A mapped, validated segment.
pub(crate) struct Segment {
    map: MmapRaw,
    file: File,
    /// The user's name (without prefix), for named segments.
    name: Option<String>,
    capacity: usize,
    max_message: u64,
    flavor: u32,
    cell_size: usize,
}

fn io(op: &'static str) -> SegmentError {
    SegmentError::Io { op, source: std::io::Error::last_os_error() }
}

/// Check a user-supplied name and turn it into the shm object name.
pub(crate) fn object_name(name: &str) -> Result<CString, SegmentError> {
    let bad = |reason| Err(SegmentError::InvalidName { name: name.to_string(), reason });
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME {
        return bad("it is longer than 200 bytes");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        return bad("only ASCII letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(CString::new(format!("/{NAME_PREFIX}{name}")).expect("checked: no NUL bytes"))
}

/// The file name under /dev/shm of a named segment (for tests and tools).
pub fn shm_path(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/dev/shm/{NAME_PREFIX}{name}"))
}

/// Remove a named segment. Processes that have it mapped keep using it; the name is free again.
pub(crate) fn unlink(name: &str) -> Result<(), SegmentError> {
    let c = object_name(name)?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::shm_unlink(c.as_ptr()) } != 0 {
        return Err(match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOENT) => SegmentError::NotFound { name: name.to_string() },
            Some(libc::EACCES) | Some(libc::EPERM) => SegmentError::PermissionDenied { name: name.to_string() },
            _ => io("shm_unlink"),
        });
    }
    Ok(())
}

fn file_size(file: &File) -> Result<u64, SegmentError> {
    file.metadata().map(|m| m.len()).map_err(|source| SegmentError::Io { op: "fstat", source })
}

impl Segment {
    /// Create a named segment. Fails with `AlreadyExists` rather than touching an existing one.
    pub(crate) fn create(name: &str, geo: Geometry) -> Result<Segment, SegmentError> {
        geo.check()?;
        let c = object_name(name)?;
        // SAFETY: `c` is a valid C string; the returned fd (if any) is owned by us below.
        let fd =
            unsafe { libc::shm_open(c.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC, 0o600) };
        if fd < 0 {
            return Err(match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EEXIST) => SegmentError::AlreadyExists { name: name.to_string() },
                Some(libc::EACCES) | Some(libc::EPERM) => SegmentError::PermissionDenied { name: name.to_string() },
                Some(libc::ENOSPC) | Some(libc::ENOMEM) => SegmentError::NoSpace { requested: geo.segment_size() },
                _ => io("shm_open"),
            });
        }
        // SAFETY: `fd` was just returned by shm_open and is owned by nobody else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        match Self::initialise(file, Some(name.to_string()), geo) {
            Ok(seg) => Ok(seg),
            Err(e) => {
                // We made the object, we remove it: a failed create leaves nothing behind.
                let _ = unlink(name);
                Err(e)
            }
        }
    }

    /// Create an anonymous segment (memfd), sealed against resizing. Share it with a child
    /// process by passing its fd (see `Channel::inheritable_fd`).
    pub(crate) fn create_anonymous(geo: Geometry) -> Result<Segment, SegmentError> {
        geo.check()?;
        let label = CString::new("shmq").expect("no NUL");
        // SAFETY: `label` is a valid C string; the fd is owned by us below.
        let fd = unsafe { libc::memfd_create(label.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if fd < 0 {
            return Err(io("memfd_create"));
        }
        // SAFETY: fresh fd owned by nobody else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Self::initialise(file, None, geo)
    }

    /// Size, preallocate, map, write the header, publish.
    fn initialise(file: File, name: Option<String>, geo: Geometry) -> Result<Segment, SegmentError> {
        let fd = file.as_raw_fd();
        // Exact mode 0600 whatever the umask (shm_open applies it; memfd has 0777 by default).
        // SAFETY: `fd` is open for the duration of the call.
        if unsafe { libc::fchmod(fd, 0o600) } != 0 {
            return Err(io("fchmod"));
        }
        let size = geo.segment_size();
        // SAFETY: `fd` is open; posix_fallocate returns an errno value instead of setting errno.
        let rc = unsafe { libc::posix_fallocate(fd, 0, size as libc::off_t) };
        if rc != 0 {
            return Err(if rc == libc::ENOSPC || rc == libc::EFBIG {
                SegmentError::NoSpace { requested: size }
            } else {
                SegmentError::Io { op: "posix_fallocate", source: std::io::Error::from_raw_os_error(rc) }
            });
        }
        if name.is_none() {
            // The size is final: forbid shrinking (a SIGBUS for every mapper) and growing.
            let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
            // SAFETY: `fd` is an open memfd created with MFD_ALLOW_SEALING.
            if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } != 0 {
                return Err(io("fcntl(F_ADD_SEALS)"));
            }
        }
        let map = MmapOptions::new()
            .len(size as usize)
            .map_raw(&file)
            .map_err(|source| SegmentError::Io { op: "mmap", source })?;
        let seg = Segment {
            map,
            file,
            name,
            capacity: geo.capacity,
            max_message: geo.max_message,
            flavor: geo.flavor,
            cell_size: if geo.flavor == layout::FLAVOR_MPMC { geo.cell_size } else { 0 },
        };
        let h = seg.header();
        let (pid, start) = crate::process::me();
        let id = &h.identity;
        // Fresh tmpfs pages are zero; only non-zero fields need writing. Relaxed is enough: the
        // Release store of the magic below publishes all of them.
        id.layout_version.store(layout::LAYOUT_VERSION, Ordering::Relaxed);
        id.abi.store(layout::abi_word(), Ordering::Relaxed);
        id.header_size.store(HEADER_SIZE as u32, Ordering::Relaxed);
        id.flavor.store(geo.flavor, Ordering::Relaxed);
        id.cell_size.store(seg.cell_size as u32, Ordering::Relaxed);
        id.segment_size.store(size, Ordering::Relaxed);
        id.ring_offset.store(HEADER_SIZE as u64, Ordering::Relaxed);
        id.ring_capacity.store(geo.capacity as u64, Ordering::Relaxed);
        id.max_message.store(geo.max_message, Ordering::Relaxed);
        id.creator_pid.store(pid, Ordering::Relaxed);
        id.creator_start_time.store(start, Ordering::Relaxed);
        id.generation.store(crate::clock::monotonic_ns(), Ordering::Relaxed);
        h.ctl.lifecycle.state.store(State::Active as u32, Ordering::Relaxed);
        if seg.flavor == layout::FLAVOR_MPMC {
            // Cell i starts out free for lap 0: its sequence word is its own byte position.
            for (i, s) in seg.cell_seqs().iter().enumerate() {
                s.store((i * seg.cell_size) as u64, Ordering::Relaxed);
            }
        }
        // SYNC(publish): Release; pairs with the Acquire load of the magic in `validate`: an
        // opener that sees the magic sees every field above.
        id.magic.store(MAGIC, Ordering::Release);
        Ok(seg)
    }

    /// Open a named segment, waiting up to `timeout` for its creator to publish the header.
    pub(crate) fn open(name: &str, timeout: Duration) -> Result<Segment, SegmentError> {
        let c = object_name(name)?;
        // SAFETY: `c` is a valid C string; the fd is owned by us below.
        let fd = unsafe { libc::shm_open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
        if fd < 0 {
            return Err(match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::ENOENT) => SegmentError::NotFound { name: name.to_string() },
                Some(libc::EACCES) | Some(libc::EPERM) => SegmentError::PermissionDenied { name: name.to_string() },
                _ => io("shm_open"),
            });
        }
        // SAFETY: fresh fd owned by nobody else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Self::attach(file, Some(name.to_string()), timeout)
    }

    /// Open a segment from a file descriptor (an inherited memfd, or any fd of a segment).
    pub(crate) fn from_fd(fd: OwnedFd, timeout: Duration) -> Result<Segment, SegmentError> {
        Self::attach(File::from(fd), None, timeout)
    }

    /// Wait for the header, map the whole segment, validate.
    fn attach(file: File, name: Option<String>, timeout: Duration) -> Result<Segment, SegmentError> {
        let start = Instant::now();
        let label = || name.clone().unwrap_or_else(|| "<fd>".to_string());
        loop {
            let size = file_size(&file)?;
            // A size of 0 is a creator between shm_open and posix_fallocate; anything else too
            // small to hold a header is a truncated or foreign file.
            if size != 0 && size < HEADER_SIZE as u64 {
                return Err(SegmentError::SizeMismatch { expected: HEADER_SIZE as u64, actual: size });
            }
            if size != 0 {
                let map = MmapOptions::new()
                    .len(size as usize)
                    .map_raw(&file)
                    .map_err(|source| SegmentError::Io { op: "mmap", source })?;
                // SAFETY: the mapping is at least HEADER_SIZE bytes, page aligned, and Header is
                // made of atomics only (any bit pattern is a valid value).
                let h = unsafe { &*(map.as_ptr() as *const Header) };
                // SYNC(publish): Acquire; pairs with the creator's Release store in `initialise`.
                let magic = h.identity.magic.load(Ordering::Acquire);
                if magic == MAGIC {
                    let v = validate(h, size)?;
                    let (capacity, max_message, flavor, cell_size) = v;
                    return Ok(Segment { map, file, name, capacity, max_message, flavor, cell_size });
                }
                if magic != 0 {
                    return Err(Corrupt::new(format!("magic {magic:#018x} is not a shmq segment's")).into());
                }
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(SegmentError::NotInitialized { name: label(), waited });
            }
            std::thread::sleep(Duration::from_millis(1).min(timeout - waited));
        }
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HEADER_SIZE bytes (checked at create/attach), page
        // aligned (so 128-aligned), lives as long as `self`, and Header is atomics only.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    pub(crate) fn ctl(&self) -> &RingCtl {
        &self.header().ctl
    }

    pub(crate) fn ring(&self) -> RawRing {
        // SAFETY: HEADER_SIZE + capacity == the mapping's length (validated), HEADER_SIZE is a
        // multiple of 8, capacity a power of two; the mapping outlives every user of the RawRing
        // because channel handles hold the Segment through an Arc.
        unsafe { RawRing::new(self.map.as_mut_ptr().add(HEADER_SIZE), self.capacity) }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// `layout::FLAVOR_*` (validated).
    pub(crate) fn flavor(&self) -> u32 {
        self.flavor
    }

    /// MPMC cell size (validated), 0 for other flavours.
    pub(crate) fn cell_size(&self) -> usize {
        self.cell_size
    }

    /// MPMC: the per-cell sequence words that follow the ring (`capacity / cell_size` of them).
    pub(crate) fn cell_seqs(&self) -> &[crate::sync::AtomicU64] {
        assert_eq!(self.flavor, layout::FLAVOR_MPMC, "shmq bug: cell sequences of a non-MPMC segment");
        let n = self.capacity / self.cell_size;
        // SAFETY: for MPMC segments the mapping is HEADER_SIZE + capacity + 8 * n bytes (checked
        // by `validate` / set by `initialise`); that offset is 8-aligned (page + power of two
        // >= 16); AtomicU64 accepts any bit pattern; the slice lives no longer than `self`.
        unsafe {
            let p = self.map.as_mut_ptr().add(HEADER_SIZE + self.capacity) as *const crate::sync::AtomicU64;
            std::slice::from_raw_parts(p, n)
        }
    }

    pub(crate) fn max_message(&self) -> u64 {
        self.max_message
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }
}

/// Validate a published header against the file it came from.
/// Returns (capacity, max_message, flavor, cell_size).
fn validate(h: &Header, file_size: u64) -> Result<(usize, u64, u32, usize), SegmentError> {
    let id = &h.identity;
    let version = id.layout_version.load(Ordering::Relaxed);
    if version != layout::LAYOUT_VERSION {
        return Err(SegmentError::VersionMismatch { found: version, expected: layout::LAYOUT_VERSION });
    }
    let abi = id.abi.load(Ordering::Relaxed);
    if abi != layout::abi_word() {
        return Err(SegmentError::AbiMismatch { found: abi, expected: layout::abi_word() });
    }
    let corrupt = |what: String| -> SegmentError { Corrupt::new(what).into() };
    let header_size = id.header_size.load(Ordering::Relaxed);
    if header_size as usize != HEADER_SIZE {
        return Err(corrupt(format!("header size {header_size}, expected {HEADER_SIZE}")));
    }
    let flavor = id.flavor.load(Ordering::Relaxed);
    if !matches!(flavor, layout::FLAVOR_SPSC | layout::FLAVOR_MPSC | layout::FLAVOR_MPMC) {
        return Err(corrupt(format!("unknown channel flavour {flavor}")));
    }
    let cell = id.cell_size.load(Ordering::Relaxed) as u64;
    let seg_size = id.segment_size.load(Ordering::Relaxed);
    if seg_size != file_size {
        return Err(SegmentError::SizeMismatch { expected: seg_size, actual: file_size });
    }
    let ring_offset = id.ring_offset.load(Ordering::Relaxed);
    let cap = id.ring_capacity.load(Ordering::Relaxed);
    if ring_offset != HEADER_SIZE as u64
        || !cap.is_power_of_two()
        || cap < MIN_CAPACITY as u64
        || cap > MAX_CAPACITY as u64
        || ring_offset.checked_add(cap).and_then(|e| e.checked_add(seq_bytes(flavor, cap, cell))) != Some(seg_size)
    {
        return Err(corrupt(format!(
            "ring at offset {ring_offset} with capacity {cap} does not fit a {seg_size}-byte segment"
        )));
    }
    match flavor {
        layout::FLAVOR_MPMC => {
            check_cells(cap, cell).map_err(corrupt)?;
        }
        _ if cell != 0 => return Err(corrupt(format!("cell size {cell} set on a flavour without cells"))),
        _ => {}
    }
    let max_message = id.max_message.load(Ordering::Relaxed);
    if max_message > MAX_MESSAGE_LIMIT {
        return Err(corrupt(format!("max_message {max_message} is beyond any shmq limit")));
    }
    State::from_raw(h.ctl.lifecycle.state.load(Ordering::Acquire))?;
    let tail = h.ctl.producer.tail.load(Ordering::Acquire) & layout::POS_MASK;
    let head = h.ctl.consumer.head.load(Ordering::Acquire) & !layout::HEAD_TX_WAITING;
    if head > tail || tail - head > cap || head % 8 != 0 || tail % 8 != 0 {
        return Err(corrupt(format!("ring positions head={head} tail={tail} are impossible for capacity {cap}")));
    }
    Ok((cap as usize, max_message, flavor, cell as usize))
}
