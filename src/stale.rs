//! Stale segments: list every shmq segment in `/dev/shm`, and remove the ones no live process
//! can be using any more.
//!
//! A killed process cannot clean up after itself: the segments it created keep their names (and
//! their memory) until someone removes them. [`list_segments`] says what is there, who created
//! it and who is attached, and whether those processes are still alive; [`remove_stale`] removes
//! the segments whose creator, attachments and open handles all belong to dead processes.
//!
//! # Reading without trusting
//!
//! Listing never maps a segment and never writes to one. Every `/dev/shm/shmq.*` entry is
//! treated as hostile input:
//!
//! * it is looked at with `lstat` first and opened only if it is a regular file, read-only, with
//!   `O_NOFOLLOW | O_NONBLOCK` (a symlink or FIFO planted under a shmq name is reported, not
//!   followed or waited on);
//! * its header is copied out with `pread` into a local buffer: a segment truncated meanwhile
//!   gives a short read (reported), never a SIGBUS as a mapping would;
//! * every field is checked as `Segment::open` checks it (magic, layout version, ABI, sizes,
//!   state, ring positions) before anything in it is believed. What is wrong is reported in
//!   [`SegmentInfo::problem`]; one bad entry never fails the whole listing.
//!
//! The header is read twice and believed only if the parts that matter here (the identity and
//! lifecycle lines and the peer table) read the same both times; a header that fails a check is
//! read again a few times before the failure is reported, because a live channel's ring
//! positions can move between two reads of one copy.
//!
//! The peer table is decoded here with its own copy of the slot packing (see `peers.rs` and
//! DESIGN.md section 4d, which define it): bits 0..22 pid, bits 22..62 start time, bits 62..64
//! kind (1 sender, 2 receiver, 3 handle: a process that has the channel open).
//!
//! # When a segment is stale
//!
//! All of:
//!
//! * nothing is wrong with it ([`SegmentInfo::problem`] is `None`): a corrupt segment, one of
//!   another layout version or ABI, or one whose creator is not recorded is never removed (use
//!   [`unlink`](crate::unlink) once you know);
//! * its creator is [`Liveness::Dead`] (pid *and* start time, so a reused pid does not count as
//!   alive, and a zombie counts as dead);
//! * every process recorded in its peer table (attached as sender or receiver, or merely holding
//!   the channel open: a handle) is `Dead`. `Unknown` counts as alive.
//!
//! A segment whose header is not published yet (magic still 0) is being created: it is left
//! alone while its creator lives, and is stale once the creator is dead (it died half way).
//!
//! # Limits
//!
//! * The peer table has 64 slots, and a process without a usable `/proc` takes none: processes
//!   beyond that are invisible here. Removing a name never disturbs a process that has the
//!   segment open: it keeps its mapping and keeps working; the name is simply gone for later
//!   openers.
//! * A channel whose sender closed (DRAINING) and whose processes all exited normally is stale
//!   by the rule above, even though a receiver that opens it later would still get its backlog:
//!   removing it discards those messages.
//! * The decision is made from one look: a process that opens and attaches to a stale segment
//!   between that look and the unlink finds the name removed under it (it keeps working, as
//!   above).
//! * The name is removed only if it still refers to the file that was inspected (device and
//!   inode compared just before `shm_unlink`). Linux has no unlink-by-descriptor, so a window of
//!   microseconds remains in which the segment could be removed by someone else and another one
//!   created under the same name.
//! * Liveness is judged from this process's `/proc`: processes in another pid namespace (a
//!   container sharing `/dev/shm`) look dead. Run this where the channels' processes run.

use crate::error::SegmentError;
use crate::layout::{self, HEADER_SIZE, Header, MAGIC, PEER_SLOTS};
use crate::lifecycle::State;
use crate::process::{Liveness, ProcessId};
use crate::segment::{self, MAX_CAPACITY, MAX_CELL, MAX_MESSAGE_LIMIT, MIN_CAPACITY, MIN_CELL, NAME_PREFIX};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::mem::offset_of;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where named segments live (see `segment::shm_path`).
const SHM_DIR: &str = "/dev/shm";

/// How often a header is read before a failed check (or a header that keeps changing) is
/// reported as a problem.
const ATTEMPTS: usize = 4;

// Byte offsets of the header fields read here, from the one layout definition.
const OFF_MAGIC: usize = offset_of!(Header, identity.magic);
const OFF_VERSION: usize = offset_of!(Header, identity.layout_version);
const OFF_ABI: usize = offset_of!(Header, identity.abi);
const OFF_HEADER_SIZE: usize = offset_of!(Header, identity.header_size);
const OFF_FLAVOR: usize = offset_of!(Header, identity.flavor);
const OFF_SEGMENT_SIZE: usize = offset_of!(Header, identity.segment_size);
const OFF_RING_OFFSET: usize = offset_of!(Header, identity.ring_offset);
const OFF_RING_CAPACITY: usize = offset_of!(Header, identity.ring_capacity);
const OFF_MAX_MESSAGE: usize = offset_of!(Header, identity.max_message);
const OFF_CREATOR_PID: usize = offset_of!(Header, identity.creator_pid);
const OFF_CELL_SIZE: usize = offset_of!(Header, identity.cell_size);
const OFF_CREATOR_START: usize = offset_of!(Header, identity.creator_start_time);
const OFF_STATE: usize = offset_of!(Header, ctl.lifecycle.state);
const OFF_SENDERS: usize = offset_of!(Header, ctl.lifecycle.senders);
const OFF_RECEIVERS: usize = offset_of!(Header, ctl.lifecycle.receivers);
const OFF_TAIL: usize = offset_of!(Header, ctl.producer.tail);
const OFF_HEAD: usize = offset_of!(Header, ctl.consumer.head);
const OFF_SLOTS: usize = offset_of!(Header, peers.slots);
/// The identity and lifecycle lines: they end where the producer line starts.
const STEADY_END: usize = offset_of!(Header, ctl.producer);
const SLOTS_END: usize = OFF_SLOTS + 8 * PEER_SLOTS;
const _: () = assert!(SLOTS_END <= HEADER_SIZE && STEADY_END <= OFF_SLOTS);

// The peer slot packing, as defined in `peers.rs` (`pack` / `unpack`) and DESIGN.md 4d.
const PID_BITS: u32 = 22;
const START_BITS: u32 = 40;
const ROLE_SHIFT: u32 = PID_BITS + START_BITS;

/// One occupied slot of a segment's peer table: a process attached as a sender or a receiver,
/// or holding the channel open (a handle).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use shmq::process::{Liveness, ProcessId};
/// let name = format!("doc-stale-attachment-{}", std::process::id());
/// let ch = shmq::Channel::create(&name, &shmq::Config::new())?;
/// let rx = ch.receiver()?;
/// let info = shmq::list_segments()?.into_iter().find(|s| s.name == name).expect("listed");
/// // Our handle (the open `ch`) and our receiver.
/// assert_eq!(info.attachments.len(), 2);
/// let a = info.attachments.iter().find(|a| a.role != "handle").expect("the receiver");
/// assert_eq!((a.pid, a.role, a.liveness), (std::process::id(), "receiver", Liveness::Alive));
/// assert_eq!(a.process(), ProcessId::me());
/// drop(rx);
/// ch.unlink()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attachment {
    /// Index of the slot in the peer table (0..64).
    pub slot: usize,
    /// Process id of the attached process.
    pub pid: u32,
    /// Its start time (clock ticks since boot), which tells it apart from a later process that
    /// got the same pid.
    pub start_time: u64,
    /// `"sender"` or `"receiver"` (an attachment), or `"handle"` (the process has the channel
    /// open; one slot per process and channel object, whether attached or not).
    pub role: &'static str,
    /// Whether that process was alive when the segment was listed.
    pub liveness: Liveness,
}

impl Attachment {
    /// The attached process as a [`ProcessId`] (pid and start time).
    ///
    /// ```
    /// use shmq::Attachment;
    /// use shmq::process::{Liveness, ProcessId};
    /// let a = Attachment { slot: 0, pid: 42, start_time: 7, role: "sender", liveness: Liveness::Dead };
    /// assert_eq!(a.process(), ProcessId { pid: 42, start_time: 7 });
    /// ```
    pub fn process(&self) -> ProcessId {
        ProcessId { pid: self.pid, start_time: self.start_time }
    }
}

/// What [`list_segments`] found out about one `/dev/shm/shmq.*` entry. Read-only facts as of
/// the listing; anything that could not be read or failed a check is `None` (or empty) and
/// [`problem`](Self::problem) says why.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use shmq::process::{Liveness, ProcessId};
/// let name = format!("doc-stale-info-{}", std::process::id());
/// let ch = shmq::mpsc::Channel::create(&name, &shmq::Config::new())?;
/// let tx = ch.sender()?;
/// let info = shmq::list_segments()?.into_iter().find(|s| s.name == name).expect("listed");
/// assert_eq!(info.path, shmq::shm_path(&name));
/// assert_eq!(info.flavor, Some("mpsc"));
/// assert_eq!(info.state, Some(shmq::State::Active));
/// assert_eq!(info.creator, Some(ProcessId::me()));
/// assert_eq!(info.creator_alive, Some(Liveness::Alive));
/// assert_eq!((info.senders, info.receivers), (Some(1), Some(0)));
/// assert_eq!(info.attachments.len(), 2); // our handle and our sender
/// assert_eq!(info.problem, None);
/// assert!(!info.is_stale());
/// drop(tx);
/// ch.unlink()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SegmentInfo {
    /// The segment's name, without the `shmq.` prefix: what `Channel::open` takes. (Lossily
    /// converted if the file name is not UTF-8; such a name is reported as a problem.)
    pub name: String,
    /// The file under `/dev/shm`.
    pub path: PathBuf,
    /// The file's size in bytes.
    pub size_bytes: u64,
    /// Whether the creator has published the header (its magic word is set). A segment that is
    /// not published yet is being created, or its creator died half way.
    pub published: bool,
    /// `"spsc"`, `"mpsc"` or `"mpmc"` (published segments with a known flavour only).
    pub flavor: Option<&'static str>,
    /// The lifecycle state (published segments with a valid state word only).
    pub state: Option<State>,
    /// Ring capacity in bytes, as recorded in the header (published segments only).
    pub capacity: Option<u64>,
    /// The process that created the segment, if the header records it (a header of our layout
    /// with a non-zero creator pid).
    pub creator: Option<ProcessId>,
    /// Whether the creator was alive when listed. `Unknown` if its start time is not recorded
    /// (the creator had no `/proc`) or `/proc` cannot tell.
    pub creator_alive: Option<Liveness>,
    /// Every occupied slot of the peer table (at most 64): attachments and handles. A process
    /// attached or open several times appears several times.
    pub attachments: Vec<Attachment>,
    /// The header's count of attached senders (published segments only). It also counts
    /// attachments that were killed and not yet reaped.
    pub senders: Option<u32>,
    /// The header's count of attached receivers (published segments only), likewise.
    pub receivers: Option<u32>,
    /// What is wrong with the entry, if anything: it cannot be opened or read, it is not a
    /// regular file, its name is not a valid shmq name, it is too small, its header fails a
    /// check, or its creator is not recorded. Such an entry is never removed by
    /// [`remove_stale`].
    pub problem: Option<String>,
}

impl SegmentInfo {
    fn new(name: String, path: PathBuf) -> SegmentInfo {
        SegmentInfo {
            name,
            path,
            size_bytes: 0,
            published: false,
            flavor: None,
            state: None,
            capacity: None,
            creator: None,
            creator_alive: None,
            attachments: Vec::new(),
            senders: None,
            receivers: None,
            problem: None,
        }
    }

    /// Whether [`remove_stale`] would remove this segment, judged from this listing: nothing is
    /// wrong with it, its creator is dead and every process in its peer table is dead.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let name = format!("doc-stale-is-stale-{}", std::process::id());
    /// let ch = shmq::Channel::create(&name, &shmq::Config::new())?;
    /// let info = shmq::list_segments()?.into_iter().find(|s| s.name == name).expect("listed");
    /// assert!(!info.is_stale()); // we created it, and we are alive
    /// ch.unlink()?;
    /// # Ok(()) }
    /// ```
    pub fn is_stale(&self) -> bool {
        self.problem.is_none()
            && self.creator_alive == Some(Liveness::Dead)
            && self.attachments.iter().all(|a| a.liveness == Liveness::Dead)
    }
}

/// Every shmq segment in `/dev/shm` (the entries named `shmq.*`), sorted by name, with its
/// creator, its attachments and open handles, and whether those processes are alive. Nothing
/// is changed: each entry is opened read-only and its header copied with `pread` (see the module
/// documentation). An entry that cannot be read, or fails a check, is listed with a
/// [`problem`](SegmentInfo::problem); an entry that disappears during the listing is left out. Fails only if `/dev/shm` cannot be
/// read.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let name = format!("doc-stale-list-{}", std::process::id());
/// let ch = shmq::Channel::create(&name, &shmq::Config::new())?;
/// for s in shmq::list_segments()? {
///     println!("{} {:?} {:?} creator {:?} ({:?}) {:?}", s.name, s.flavor, s.state, s.creator, s.creator_alive, s.problem);
/// }
/// assert!(shmq::list_segments()?.iter().any(|s| s.name == name && s.problem.is_none()));
/// ch.unlink()?;
/// # Ok(()) }
/// ```
pub fn list_segments() -> io::Result<Vec<SegmentInfo>> {
    Ok(shmq_entries()?.iter().filter_map(|n| inspect(n)).map(|(info, _)| info).collect())
}

/// Remove every stale shmq segment: its creator is dead and every process recorded in its peer
/// table (attachments and open handles) is dead (see [`SegmentInfo::is_stale`] and the module
/// documentation; a segment with a [`problem`](SegmentInfo::problem) is never removed). Returns the names removed.
///
/// Each name is removed only if it still refers to the file that was inspected (device and
/// inode compared just before the unlink), so a live segment created under the same name in
/// between is left alone. Segments that another user owns and we may not remove are skipped.
/// Processes that still have a removed segment open keep using it; its memory is freed when the
/// last of them unmaps it.
///
/// This acts on every shmq segment of the machine (that this user may remove), not only on the
/// caller's.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let name = format!("doc-stale-remove-{}", std::process::id());
/// let ch = shmq::Channel::create(&name, &shmq::Config::new())?;
/// let removed = shmq::remove_stale()?;
/// assert!(!removed.contains(&name)); // its creator (this process) is alive
/// assert!(shmq::shm_path(&name).exists());
/// ch.unlink()?;
/// # Ok(()) }
/// ```
pub fn remove_stale() -> io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for entry in shmq_entries()? {
        let Some((info, Some(file))) = inspect(&entry) else { continue };
        if info.is_stale() && remove_if_same(&info, &file)? {
            removed.push(info.name);
        }
    }
    Ok(removed)
}

/// The `shmq.*` entries of `/dev/shm`, sorted.
fn shmq_entries() -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(SHM_DIR)? {
        let name = entry?.file_name();
        if name.as_bytes().starts_with(NAME_PREFIX.as_bytes()) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Look at one entry. `None` if it vanished; otherwise what was found, and the open file (for
/// the same-inode check of `remove_stale`) if it could be opened.
fn inspect(file_name: &OsStr) -> Option<(SegmentInfo, Option<File>)> {
    let path = Path::new(SHM_DIR).join(file_name);
    let name = String::from_utf8_lossy(&file_name.as_bytes()[NAME_PREFIX.len()..]).into_owned();
    let mut info = SegmentInfo::new(name, path);
    let name_problem = match segment::object_name(&info.name) {
        Err(e) if file_name.to_str().is_none() => Some(format!("the file name is not UTF-8 ({e})")),
        Err(e) => Some(e.to_string()),
        Ok(_) => None,
    };
    let file = match open_read_only(&info.path) {
        Ok(Some(file)) => file,
        Ok(None) => return None,
        Err(problem) => {
            info.problem = Some(join(name_problem, problem));
            return Some((info, None));
        }
    };
    let found = examine(&file);
    info.size_bytes = found.size;
    let d = found.decoded;
    info.published = d.published;
    info.flavor = d.flavor;
    info.state = d.state;
    info.capacity = d.capacity;
    info.creator = d.creator;
    info.creator_alive = d.creator.map(|c| liveness(&c));
    info.attachments = d
        .slots
        .into_iter()
        .map(|(slot, id, role)| Attachment {
            slot,
            pid: id.pid,
            start_time: id.start_time,
            role,
            liveness: liveness(&id),
        })
        .collect();
    info.senders = d.senders;
    info.receivers = d.receivers;
    info.problem = match (name_problem, d.problem) {
        (None, p) => p,
        (Some(n), None) => Some(n),
        (Some(n), Some(p)) => Some(join(Some(n), p)),
    };
    Some((info, Some(file)))
}

fn join(first: Option<String>, second: String) -> String {
    match first {
        Some(f) => format!("{f}; {second}"),
        None => second,
    }
}

/// A process's liveness; a start time of 0 means "not recorded", which cannot be checked.
fn liveness(id: &ProcessId) -> Liveness {
    if id.start_time == 0 { Liveness::Unknown } else { id.liveness() }
}

/// Open a regular file read-only without following symlinks or blocking on FIFOs. `Ok(None)` if
/// it no longer exists; `Err(problem)` if it is not a regular file or cannot be opened.
fn open_read_only(path: &Path) -> Result<Option<File>, String> {
    // lstat first, so that nothing but a regular file is ever opened (opening a device or a FIFO
    // may have effects of its own).
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => {}
        Ok(m) => return Err(format!("not a regular file but a {}", kind(m.file_type()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot stat it: {e}")),
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    match file {
        // Replaced by something else since the lstat: check again on the descriptor.
        Ok(f) => match f.metadata() {
            Ok(m) if m.file_type().is_file() => Ok(Some(f)),
            Ok(m) => Err(format!("not a regular file but a {}", kind(m.file_type()))),
            Err(e) => Err(format!("cannot stat it: {e}")),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot open it read-only: {e}")),
    }
}

/// What a file that is not a regular file is.
fn kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    match () {
        _ if t.is_symlink() => "symbolic link",
        _ if t.is_dir() => "directory",
        _ if t.is_fifo() => "FIFO",
        _ if t.is_socket() => "socket",
        _ if t.is_block_device() => "block device",
        _ if t.is_char_device() => "character device",
        _ => "special file",
    }
}

/// What one look at an open segment file found.
struct Examined {
    size: u64,
    decoded: Decoded,
}

/// Read and check the header, up to [`ATTEMPTS`] times while the reads disagree or a check
/// fails (a segment being created, or a live ring moving between two reads).
fn examine(file: &File) -> Examined {
    let mut last = Examined { size: 0, decoded: Decoded::problem("never examined") };
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        last = examine_once(file);
        if last.decoded.problem.is_none() {
            break;
        }
    }
    last
}

fn examine_once(file: &File) -> Examined {
    let size = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return Examined { size: 0, decoded: Decoded::problem(format!("cannot stat it: {e}")) },
    };
    let bad = |p: String| Examined { size, decoded: Decoded::problem(p) };
    if size == 0 {
        return bad(
            "empty: its creator has not sized it yet, or died before it did (the creator is not recorded)".into()
        );
    }
    if size < HEADER_SIZE as u64 {
        return bad(format!("{size} bytes: too small for a {HEADER_SIZE}-byte shmq header"));
    }
    let first = match read_header(file) {
        Ok(h) => h,
        Err(p) => return bad(p),
    };
    let second = match read_header(file) {
        Ok(h) => h,
        Err(p) => return bad(p),
    };
    if first[..STEADY_END] != second[..STEADY_END] || first[OFF_SLOTS..SLOTS_END] != second[OFF_SLOTS..SLOTS_END] {
        return bad("its header changed while being read (a busy segment)".into());
    }
    Examined { size, decoded: decode(&second, size) }
}

/// Copy the header out of the file (never through a mapping: a file truncated under us gives a
/// short read here, where a mapping would raise SIGBUS).
fn read_header(file: &File) -> Result<Box<[u8; HEADER_SIZE]>, String> {
    let mut buf = Box::new([0u8; HEADER_SIZE]);
    match file.read_exact_at(&mut buf[..], 0) {
        Ok(()) => Ok(buf),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err("it shrank below the header size while being read".into())
        }
        Err(e) => Err(format!("cannot read its header: {e}")),
    }
}

/// What a header says, before any liveness check.
#[derive(Debug, Default)]
struct Decoded {
    published: bool,
    flavor: Option<&'static str>,
    state: Option<State>,
    capacity: Option<u64>,
    creator: Option<ProcessId>,
    senders: Option<u32>,
    receivers: Option<u32>,
    slots: Vec<(usize, ProcessId, &'static str)>,
    problem: Option<String>,
}

impl Decoded {
    fn problem(p: impl Into<String>) -> Decoded {
        Decoded { problem: Some(p.into()), ..Decoded::default() }
    }
}

fn u32_at(b: &[u8; HEADER_SIZE], off: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[off..off + 4]);
    // Native byte order: the ABI word (checked before any other field is used) says the
    // segment was written with ours.
    u32::from_ne_bytes(w)
}

fn u64_at(b: &[u8; HEADER_SIZE], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(w)
}

/// Decode a used peer slot (the inverse of `peers::pack`): the process and its kind.
fn decode_slot(word: u64) -> Result<(ProcessId, &'static str), String> {
    let role = match word >> ROLE_SHIFT {
        1 => "sender",
        2 => "receiver",
        3 => "handle",
        r => return Err(format!("holds {word:#x}, whose kind bits {r} are not sender, receiver or handle")),
    };
    let pid = (word & ((1 << PID_BITS) - 1)) as u32;
    let start_time = (word >> PID_BITS) & ((1 << START_BITS) - 1);
    Ok((ProcessId { pid, start_time }, role))
}

fn flavor_name(flavor: u32) -> Option<&'static str> {
    match flavor {
        layout::FLAVOR_SPSC => Some("spsc"),
        layout::FLAVOR_MPSC => Some("mpsc"),
        layout::FLAVOR_MPMC => Some("mpmc"),
        _ => None,
    }
}

/// Decode and check a header copied from a file of `file_size` bytes. Mirrors
/// `segment::validate`; the first failed check becomes the problem.
fn decode(b: &[u8; HEADER_SIZE], file_size: u64) -> Decoded {
    let magic = u64_at(b, OFF_MAGIC);
    if magic != MAGIC && magic != 0 {
        return Decoded::problem(format!("magic {magic:#018x} is not a shmq segment's"));
    }
    let published = magic == MAGIC;
    let version = u32_at(b, OFF_VERSION);
    let abi = u32_at(b, OFF_ABI);
    if !published && (version != layout::LAYOUT_VERSION || abi != layout::abi_word()) {
        // The creator writes the version and ABI before its identity: none of it is there yet.
        return Decoded::problem(NOT_RECORDED);
    }
    if version != layout::LAYOUT_VERSION {
        let e = SegmentError::VersionMismatch { found: version, expected: layout::LAYOUT_VERSION };
        return Decoded { published, ..Decoded::problem(e.to_string()) };
    }
    if abi != layout::abi_word() {
        let e = SegmentError::AbiMismatch { found: abi, expected: layout::abi_word() };
        return Decoded { published, ..Decoded::problem(e.to_string()) };
    }
    // The layout is ours: the creator and the peer table are where we expect them.
    let mut d = Decoded { published, ..Decoded::default() };
    let pid = u32_at(b, OFF_CREATOR_PID);
    d.creator = (pid != 0).then(|| ProcessId { pid, start_time: u64_at(b, OFF_CREATOR_START) });
    for slot in 0..PEER_SLOTS {
        let word = u64_at(b, OFF_SLOTS + 8 * slot);
        if word == 0 {
            continue;
        }
        match decode_slot(word) {
            Ok((id, role)) => d.slots.push((slot, id, role)),
            Err(e) => {
                d.problem.get_or_insert(format!("peer slot {slot} {e}"));
            }
        }
    }
    if !published {
        if d.creator.is_none() {
            d.problem.get_or_insert(NOT_RECORDED.into());
        }
        return d;
    }
    d.flavor = flavor_name(u32_at(b, OFF_FLAVOR));
    d.state = State::from_raw(u32_at(b, OFF_STATE)).ok();
    d.senders = Some(u32_at(b, OFF_SENDERS));
    d.receivers = Some(u32_at(b, OFF_RECEIVERS));
    d.capacity = Some(u64_at(b, OFF_RING_CAPACITY));
    if d.creator.is_none() {
        d.problem.get_or_insert("its creator is not recorded (creator pid 0)".into());
    }
    if let Err(p) = check_published(b, file_size) {
        // A failed check comes first: it says why nothing else in the header can be trusted.
        d.problem = Some(p);
    }
    d
}

const NOT_RECORDED: &str =
    "not initialised, and its creator is not recorded yet: being created, or its creator died half way";

/// The checks of `segment::validate` after magic, version and ABI, on a copied header.
fn check_published(b: &[u8; HEADER_SIZE], file_size: u64) -> Result<(), String> {
    let header_size = u32_at(b, OFF_HEADER_SIZE);
    if header_size as usize != HEADER_SIZE {
        return Err(format!("header size {header_size}, expected {HEADER_SIZE}"));
    }
    let flavor = u32_at(b, OFF_FLAVOR);
    if flavor_name(flavor).is_none() {
        return Err(format!("unknown channel flavour {flavor}"));
    }
    let seg_size = u64_at(b, OFF_SEGMENT_SIZE);
    if seg_size != file_size {
        return Err(SegmentError::SizeMismatch { expected: seg_size, actual: file_size }.to_string());
    }
    let ring_offset = u64_at(b, OFF_RING_OFFSET);
    let cap = u64_at(b, OFF_RING_CAPACITY);
    let cell = u64::from(u32_at(b, OFF_CELL_SIZE));
    let cap_ok = cap.is_power_of_two() && (MIN_CAPACITY as u64..=MAX_CAPACITY as u64).contains(&cap);
    if flavor == layout::FLAVOR_MPMC {
        // cap_ok first: the cell count below needs a sane capacity and a non-zero cell.
        let cell_ok = cell.is_power_of_two()
            && (MIN_CELL as u64..=MAX_CELL as u64).contains(&cell)
            && cell.checked_mul(2).is_some_and(|c2| c2 <= cap);
        if cap_ok && !cell_ok {
            return Err(format!(
                "cell size {cell} must be a power of two between {MIN_CELL} and {MAX_CELL}, at most half the capacity {cap}"
            ));
        }
    } else if cell != 0 {
        return Err(format!("cell size {cell} set on a flavour without cells"));
    }
    let seq_bytes = if flavor == layout::FLAVOR_MPMC && cell != 0 { cap / cell * 8 } else { 0 };
    let end = ring_offset.checked_add(cap).and_then(|e| e.checked_add(seq_bytes));
    if ring_offset != HEADER_SIZE as u64 || !cap_ok || end != Some(seg_size) {
        return Err(format!("ring at offset {ring_offset} with capacity {cap} does not fit a {seg_size}-byte segment"));
    }
    let max_message = u64_at(b, OFF_MAX_MESSAGE);
    if max_message > MAX_MESSAGE_LIMIT {
        return Err(format!("max_message {max_message} is beyond any shmq limit"));
    }
    State::from_raw(u32_at(b, OFF_STATE)).map_err(|c| c.to_string())?;
    let tail = u64_at(b, OFF_TAIL) & layout::POS_MASK;
    let head = u64_at(b, OFF_HEAD) & !layout::HEAD_TX_WAITING;
    if head > tail || tail - head > cap || head % 8 != 0 || tail % 8 != 0 {
        return Err(format!("ring positions head={head} tail={tail} are impossible for capacity {cap}"));
    }
    Ok(())
}

/// Unlink `info`'s name if it still refers to `file` (as `shared.rs::unlink_if_same` does).
/// False if it no longer does, is already gone, or belongs to someone we may not remove.
fn remove_if_same(info: &SegmentInfo, file: &File) -> io::Result<bool> {
    let ours = file.metadata()?;
    match std::fs::symlink_metadata(&info.path) {
        Ok(m) if m.dev() == ours.dev() && m.ino() == ours.ino() => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    match segment::unlink(&info.name) {
        Ok(()) => Ok(true),
        Err(SegmentError::NotFound { .. } | SegmentError::PermissionDenied { .. }) => Ok(false),
        Err(SegmentError::Io { source, .. }) => {
            Err(io::Error::new(source.kind(), format!("removing stale segment {:?}: {source}", info.name)))
        }
        Err(e) => Err(io::Error::other(format!("removing stale segment {:?}: {e}", info.name))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{Geometry, Segment};

    /// The header of a fresh anonymous segment, copied out as `examine` copies it.
    fn fresh(flavor: u32) -> (Box<[u8; HEADER_SIZE]>, u64) {
        let geo = Geometry { capacity: 8192, max_message: 1 << 20, flavor, cell_size: 64 };
        let seg = Segment::create_anonymous(geo).unwrap();
        let size = seg.file().metadata().unwrap().len();
        (read_header(seg.file()).unwrap(), size)
    }

    fn put32(b: &mut [u8; HEADER_SIZE], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn put64(b: &mut [u8; HEADER_SIZE], off: usize, v: u64) {
        b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    }

    #[test]
    fn a_fresh_header_of_each_flavour_decodes_cleanly() {
        for (flavor, name) in
            [(layout::FLAVOR_SPSC, "spsc"), (layout::FLAVOR_MPSC, "mpsc"), (layout::FLAVOR_MPMC, "mpmc")]
        {
            let (b, size) = fresh(flavor);
            let d = decode(&b, size);
            assert_eq!(d.problem, None, "{name}");
            assert!(d.published);
            assert_eq!((d.flavor, d.state, d.capacity), (Some(name), Some(State::Active), Some(8192)));
            assert_eq!(d.creator, Some(ProcessId::me()));
            assert_eq!((d.senders, d.receivers), (Some(0), Some(0)));
            assert!(d.slots.is_empty());
        }
    }

    #[test]
    fn slots_decode_like_peers_packs_them() {
        let (mut b, size) = fresh(layout::FLAVOR_MPSC);
        let word = |pid: u64, start: u64, role: u64| pid | start << PID_BITS | role << ROLE_SHIFT;
        put64(&mut b, OFF_SLOTS, word(4_194_303, (1 << 40) - 1, 1));
        put64(&mut b, OFF_SLOTS + 8 * 63, word(17, 99, 2));
        put64(&mut b, OFF_SLOTS + 8 * 7, word(18, 100, 3));
        let d = decode(&b, size);
        assert_eq!(d.problem, None);
        assert_eq!(
            d.slots,
            vec![
                (0, ProcessId { pid: 4_194_303, start_time: (1 << 40) - 1 }, "sender"),
                (7, ProcessId { pid: 18, start_time: 100 }, "handle"),
                (63, ProcessId { pid: 17, start_time: 99 }, "receiver")
            ]
        );
        put64(&mut b, OFF_SLOTS + 8 * 5, word(17, 99, 0));
        let p = decode(&b, size).problem.expect("kind bits 0 are a problem");
        assert!(p.contains("peer slot 5"), "{p}");
    }

    #[test]
    fn unpublished_headers_need_a_recorded_creator() {
        let (mut b, size) = fresh(layout::FLAVOR_SPSC);
        put64(&mut b, OFF_MAGIC, 0);
        let d = decode(&b, size);
        assert_eq!((d.problem.as_deref(), d.published, d.creator), (None, false, Some(ProcessId::me())));
        assert_eq!((d.flavor, d.state, d.senders), (None, None, None));
        put32(&mut b, OFF_CREATOR_PID, 0);
        assert_eq!(decode(&b, size).problem.as_deref(), Some(NOT_RECORDED));
        let zero = Box::new([0u8; HEADER_SIZE]);
        assert_eq!(decode(&zero, size).problem.as_deref(), Some(NOT_RECORDED));
    }

    #[test]
    fn every_broken_field_is_a_problem_not_a_panic() {
        let (good, size) = fresh(layout::FLAVOR_MPMC);
        let cases: &[(usize, u64, bool, &str)] = &[
            (OFF_MAGIC, 0x1234, true, "magic"),
            (OFF_VERSION, u64::from(layout::LAYOUT_VERSION) + 1, false, "layout version"),
            (OFF_ABI, 0, false, "ABI word"),
            (OFF_HEADER_SIZE, 8192, false, "header size"),
            (OFF_FLAVOR, 9, false, "flavour"),
            (OFF_SEGMENT_SIZE, 1, true, "bytes"),
            (OFF_RING_OFFSET, 0, false, "ring at offset"),
            (OFF_RING_CAPACITY, 1 << 50, false, "ring at offset"),
            (OFF_RING_CAPACITY, 0, false, "ring at offset"),
            (OFF_CELL_SIZE, 0, false, "cell size"),
            (OFF_CELL_SIZE, 1, false, "cell size"),
            (OFF_MAX_MESSAGE, u64::MAX, true, "max_message"),
            (OFF_STATE, 77, false, "state"),
            (OFF_HEAD, 8, true, "positions"),
            (OFF_TAIL, 3, true, "positions"),
        ];
        for &(off, value, wide, what) in cases {
            let mut b = good.clone();
            let wide = wide || [OFF_SEGMENT_SIZE, OFF_RING_OFFSET, OFF_RING_CAPACITY].contains(&off);
            if wide {
                put64(&mut b, off, value)
            } else {
                put32(&mut b, off, value as u32)
            }
            let p = decode(&b, size).problem.unwrap_or_else(|| panic!("{what} at {off} = {value} not caught"));
            assert!(p.contains(what), "{what}: {p}");
        }
        // A size that disagrees with the header, and arbitrary bytes.
        assert!(decode(&good, size + 1).problem.is_some());
        let mut junk = Box::new([0u8; HEADER_SIZE]);
        for (i, byte) in junk.iter_mut().enumerate() {
            *byte = (i * 131 % 251) as u8 ^ 0x5A;
        }
        assert!(decode(&junk, size).problem.is_some());
    }

    #[test]
    fn the_identity_is_read_even_when_the_rest_is_corrupt() {
        let (mut b, size) = fresh(layout::FLAVOR_SPSC);
        put32(&mut b, OFF_FLAVOR, 9);
        let d = decode(&b, size);
        assert!(d.problem.is_some());
        assert_eq!((d.creator, d.flavor), (Some(ProcessId::me()), None));
        put32(&mut b, OFF_VERSION, layout::LAYOUT_VERSION + 1);
        assert_eq!(decode(&b, size).creator, None, "another layout: its creator is not where we look");
    }
}
