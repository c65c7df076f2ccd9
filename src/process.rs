//! Who a process is, and whether it is still alive, in a way that pid reuse cannot fool.
//!
//! # Why a pid alone is not enough
//!
//! A pid names a process only while that process exists. Once it has exited and been reaped,
//! the kernel hands the same number to a later process (pids wrap at `pid_max`, 32768 by
//! default, so on a busy machine within seconds). "Is pid 4242 alive?" then answers for a
//! stranger. Even before the reap, the process is a *zombie*: it has exited, but `kill(pid, 0)`
//! still succeeds and `/proc/PID` still exists.
//!
//! So a [`ProcessId`] is the pid **plus the start time** of the process (`/proc/PID/stat`
//! field 22, clock ticks since boot): a process that later gets the same pid has a later start
//! time. [`ProcessId::liveness`] says [`Liveness::Dead`] when `/proc/PID` is gone, when the
//! process there has another start time (the pid was reused), or when it is a zombie.
//!
//! The start time has the resolution of a clock tick (`USER_HZ`, 10 ms). Two processes with the
//! same pid and the same start time would need the pid to be freed and handed out again within
//! one tick, which takes a privileged process choosing pids (`ns_last_pid`, `clone3` with
//! `set_tid`); natural reuse needs the whole pid space to wrap around first. A [`PidWatch`] (a
//! pidfd) has no such hole at all: it refers to the process itself, not to its number. Use
//! one to wait for a death, and a `ProcessId` where an identity must be stored (in shared
//! memory, say).
//!
//! Pids, like `/proc`, belong to a pid namespace: a `ProcessId` means something only to
//! processes that see the same `/proc` (the same pid namespace, and the same time namespace,
//! which offsets start times).

use crate::sync::{AtomicU32, AtomicU64, Ordering};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// This process's identity once known (pid 0 = not yet; see `ProcessId::me`).
static ME_PID: AtomicU32 = AtomicU32::new(0);
static ME_START: AtomicU64 = AtomicU64::new(0);
static FORK_HANDLER: std::sync::Once = std::sync::Once::new();

extern "C" fn forget_me_after_fork() {
    ME_PID.store(0, Ordering::Release);
}

/// A process: its pid plus its start time, which together name one process for the life of the
/// system (see the [module documentation](self) for why the pid alone does not).
///
/// ```
/// use shmq::process::{Liveness, ProcessId};
/// let me = ProcessId::me();
/// assert_eq!(me.pid, std::process::id());
/// assert_eq!(me.liveness(), Liveness::Alive);
/// // The same pid with another start time is another (long gone) process.
/// let impostor = ProcessId { pid: me.pid, start_time: me.start_time + 1 };
/// assert_eq!(impostor.liveness(), Liveness::Dead);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcessId {
    /// The process id (in the pid namespace of `/proc`).
    pub pid: u32,
    /// Start time of the process, in clock ticks since boot (`/proc/PID/stat` field 22). 0 means
    /// unknown (from [`ProcessId::me`] when `/proc` is unusable).
    pub start_time: u64,
}

/// What [`ProcessId::liveness`] found out.
///
/// ```
/// use shmq::process::{Liveness, ProcessId};
/// assert_eq!(ProcessId::me().liveness(), Liveness::Alive);
/// assert_eq!(ProcessId { pid: 0, start_time: 1 }.liveness(), Liveness::Dead);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// The process is running (or stopped, or sleeping): it has not exited.
    Alive,
    /// The process has exited: no process has that pid, or the one that has it started at
    /// another time (the pid was reused), or it is a zombie waiting to be reaped.
    Dead,
    /// `/proc` could not say (not mounted, the process is hidden by `hidepid`, an unreadable
    /// or unparsable `/proc/PID/stat`). Treat it as alive: never reclaim what it may hold.
    Unknown,
}

impl ProcessId {
    /// This process. The start time is 0 (unknown) if `/proc` is not mounted, or belongs to
    /// another pid namespace (it then shows another pid for `/proc/self`).
    ///
    /// ```
    /// let me = shmq::process::ProcessId::me();
    /// assert_eq!(me.pid, std::process::id());
    /// assert!(me.start_time > 0);
    /// ```
    pub fn me() -> ProcessId {
        // Cached per process: `me` is on the path of every attach and every mutex lock. A
        // forked child must not inherit the parent's identity: the fork handler clears it.
        let pid = ME_PID.load(Ordering::Acquire);
        if pid != 0 {
            return ProcessId { pid, start_time: ME_START.load(Ordering::Relaxed) };
        }
        let me = Self::me_uncached();
        FORK_HANDLER.call_once(|| {
            // SAFETY: registers a handler that only stores to an atomic (async-signal-safe, as
            // a child handler after fork must be); no prepare or parent handler.
            unsafe { libc::pthread_atfork(None, None, Some(forget_me_after_fork)) };
        });
        if me.start_time != 0 {
            ME_START.store(me.start_time, Ordering::Relaxed);
            // SYNC(me-cache): Release; pairs with the Acquire load above, so whoever sees the
            // pid sees the start time stored before it.
            ME_PID.store(me.pid, Ordering::Release);
        }
        me
    }

    fn me_uncached() -> ProcessId {
        let pid = std::process::id();
        let start_time = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| parse_stat(&s))
            .filter(|st| st.pid == pid)
            .map_or(0, |st| st.start_time);
        ProcessId { pid, start_time }
    }

    /// The process that has pid `pid` now, or `None` if there is none (or `/proc` cannot say).
    /// A zombie still has an identity; its [`liveness`](ProcessId::liveness) is `Dead`.
    ///
    /// ```
    /// use shmq::process::ProcessId;
    /// assert_eq!(ProcessId::of(std::process::id()), Some(ProcessId::me()));
    /// assert_eq!(ProcessId::of(0), None);
    /// ```
    pub fn of(pid: u32) -> Option<ProcessId> {
        if !valid_pid(pid) {
            return None;
        }
        let stat = read_stat(pid).ok()?;
        Some(ProcessId { pid, start_time: stat.start_time })
    }

    /// Whether this process is still alive. `Dead` if `/proc/PID` is gone (and `kill(pid, 0)`
    /// agrees that no such process exists), if the process there has another start time (the pid
    /// was reused), or if it is a zombie (it has exited and waits for its parent to reap it). A
    /// process whose main thread has exited while other threads run is alive (its `/proc/PID`
    /// shows a zombie leader, but it has more than one thread). A pid of 0 or above `i32::MAX`
    /// never names a process: `Dead`.
    ///
    /// ```
    /// use shmq::process::{Liveness, ProcessId};
    /// let mut child = std::process::Command::new("sleep").arg("10").spawn()?;
    /// let id = ProcessId::of(child.id()).expect("the child exists");
    /// assert_eq!(id.liveness(), Liveness::Alive);
    /// child.kill()?;
    /// child.wait()?;
    /// assert_eq!(id.liveness(), Liveness::Dead); // even if the pid is reused by now
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn liveness(&self) -> Liveness {
        if !valid_pid(self.pid) {
            return Liveness::Dead;
        }
        match read_stat(self.pid) {
            Ok(st) if st.start_time != self.start_time => Liveness::Dead,
            Ok(st) if st.has_exited() => Liveness::Dead,
            Ok(_) => Liveness::Alive,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Liveness::Dead,
            // No /proc/PID: the process is gone, unless /proc is not mounted or hides it
            // (hidepid=invisible). kill(pid, 0) tells the two apart without being hidden.
            Err(e) if e.kind() == io::ErrorKind::NotFound => match pid_exists(self.pid) {
                Some(false) => Liveness::Dead,
                _ => Liveness::Unknown,
            },
            Err(_) => Liveness::Unknown,
        }
    }
}

/// What we read from `/proc/PID/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    /// Field 1.
    pid: u32,
    /// Field 3: R, S, D, Z, T, t, X, ...
    state: u8,
    /// Field 20 (counts a zombie leader of a live thread group).
    num_threads: u64,
    /// Field 22.
    start_time: u64,
}

impl Stat {
    /// The whole process has exited. A zombie *leader* with other threads still running is a
    /// process whose main thread called `pthread_exit`: it is alive (a pidfd is not readable
    /// either until the last thread exits).
    fn has_exited(&self) -> bool {
        match self.state {
            b'Z' => self.num_threads <= 1,
            b'X' | b'x' => true,
            _ => false,
        }
    }
}

fn valid_pid(pid: u32) -> bool {
    pid != 0 && pid <= i32::MAX as u32
}

fn read_stat(pid: u32) -> io::Result<Stat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&s).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc/PID/stat"))
}

/// Does a process with this pid exist (zombies included)? `None` if `kill` cannot say.
fn pid_exists(pid: u32) -> Option<bool> {
    // SAFETY: kill with signal 0 sends nothing and touches no memory; it only checks that the
    // pid exists and that we may signal it.
    if unsafe { libc::kill(pid as libc::pid_t, 0) } == 0 {
        return Some(true);
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::ESRCH) => Some(false),
        Some(libc::EPERM) => Some(true),
        _ => None,
    }
}

/// Start time of process `pid` in clock ticks since boot (field 22 of `/proc/PID/stat`), or
/// `None` if the process does not exist or the file cannot be parsed.
#[allow(dead_code)] // kept for crate code that needs the bare start time
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    ProcessId::of(pid).map(|p| p.start_time)
}

/// Fields 1, 3, 20 and 22 of a `/proc/PID/stat` line. Field 2 is the command name in
/// parentheses and may itself contain spaces and ')', so counting starts after the *last* ')'.
fn parse_stat(stat: &str) -> Option<Stat> {
    let close = stat.rfind(')')?;
    let pid = stat[..stat.find(" (")?].trim().parse().ok()?;
    // After ')' come field 3 (state) onwards: field N is the (N - 3)th of them.
    let mut rest = stat[close + 1..].split_ascii_whitespace();
    let state = *rest.next()?.as_bytes().first()?;
    let num_threads = rest.nth(16)?.parse().ok()?; // field 20
    let start_time = rest.nth(1)?.parse().ok()?; // field 22
    Some(Stat { pid, state, num_threads, start_time })
}

/// This process: (pid, start time). The start time is 0 if /proc is not mounted.
pub(crate) fn me() -> (u32, u64) {
    let me = ProcessId::me();
    (me.pid, me.start_time)
}

/// A pidfd (Linux 5.3 or later): a handle on one process that becomes readable when the process
/// exits, and that keeps referring to that process even after its pid is reused. Closed on drop;
/// not inherited across `exec` (pidfds are close-on-exec).
///
/// ```
/// use shmq::process::{PidWatch, ProcessId};
/// use std::time::Duration;
/// let mut child = std::process::Command::new("sleep").arg("10").spawn()?;
/// let watch = PidWatch::open(&ProcessId::of(child.id()).unwrap())?;
/// assert!(!watch.is_dead());
/// child.kill()?;
/// assert_eq!(PidWatch::wait_any(&[&watch], Some(Duration::from_secs(5)))?, Some(0));
/// assert!(watch.is_dead());
/// child.wait()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct PidWatch {
    fd: OwnedFd,
    id: ProcessId,
}

impl PidWatch {
    /// Open a pidfd on process `id`. The pidfd is opened first and the start time checked
    /// second: if the process that has the pid now is the one `id` names, it has had that pid
    /// since before the open (a pid is not reused while its process lives), so the pidfd refers
    /// to it and not to a later process with the same pid.
    ///
    /// Errors: [`NotFound`](io::ErrorKind::NotFound) if the process is gone (reaped, or its pid
    /// now belongs to another process); [`Unsupported`](io::ErrorKind::Unsupported) if the kernel
    /// has no `pidfd_open` (before 5.3, or refused by seccomp): use [`ProcessId::liveness`]
    /// instead; any other OS error as is. A process that has exited but is not yet reaped (a
    /// zombie) is opened, and [`is_dead`](PidWatch::is_dead) is true at once.
    ///
    /// ```
    /// use shmq::process::{PidWatch, ProcessId};
    /// let me = ProcessId::me();
    /// assert!(!PidWatch::open(&me)?.is_dead());
    /// let impostor = ProcessId { pid: me.pid, start_time: me.start_time + 1 };
    /// assert_eq!(PidWatch::open(&impostor).unwrap_err().kind(), std::io::ErrorKind::NotFound);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn open(id: &ProcessId) -> io::Result<PidWatch> {
        if !valid_pid(id.pid) {
            return Err(gone(id, "no process has that pid"));
        }
        // SAFETY: pidfd_open(pid_t pid, unsigned int flags) reads only its two integer
        // arguments; it returns a new fd or -1 with errno set.
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, id.pid as libc::pid_t, 0 as libc::c_uint) };
        if rc < 0 {
            return Err(pidfd_open_error(io::Error::last_os_error(), id));
        }
        // SAFETY: `rc` is a file descriptor the kernel just created for us; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(rc as RawFd) };
        match read_stat(id.pid) {
            Ok(st) if st.start_time == id.start_time => Ok(PidWatch { fd, id: *id }),
            Ok(_) => Err(gone(id, "the pid now belongs to another process")),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) || e.kind() == io::ErrorKind::NotFound => {
                Err(gone(id, "it has exited"))
            }
            Err(e) => Err(io::Error::new(e.kind(), format!("cannot check the start time of pid {}: {e}", id.pid))),
        }
    }

    /// The process this watch is on.
    ///
    /// ```
    /// use shmq::process::{PidWatch, ProcessId};
    /// let me = ProcessId::me();
    /// assert_eq!(PidWatch::open(&me)?.process(), me);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn process(&self) -> ProcessId {
        self.id
    }

    /// Whether the process has exited (a zombie counts as exited). Never blocks: a `poll` with
    /// timeout 0 (a pidfd is readable once its process has exited). Should `poll` fail (out of
    /// memory), the answer comes from [`ProcessId::liveness`] instead.
    ///
    /// ```
    /// use shmq::process::{PidWatch, ProcessId};
    /// let mut child = std::process::Command::new("sleep").arg("10").spawn()?;
    /// let watch = PidWatch::open(&ProcessId::of(child.id()).unwrap())?;
    /// assert!(!watch.is_dead());
    /// child.kill()?;
    /// child.wait()?;
    /// assert!(watch.is_dead());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_dead(&self) -> bool {
        let mut p = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        loop {
            // SAFETY: `p` is one valid, writable pollfd and we pass a count of 1; our fd stays
            // open for the call (we own it).
            let rc = unsafe { libc::poll(&mut p, 1, 0) };
            if rc >= 0 {
                return rc > 0;
            }
            if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return self.id.liveness() == Liveness::Dead;
            }
        }
    }

    /// Wait until one of `watches` has exited, or `timeout` has passed (`None`: no limit).
    /// Returns the index of an exited one (the lowest, if several have), or `None` on timeout.
    /// A signal does not cut the wait short: it resumes with the time that is left. A timeout of
    /// zero only looks. An empty `watches` with no timeout would wait forever: `InvalidInput`.
    ///
    /// ```
    /// use shmq::process::{PidWatch, ProcessId};
    /// use std::time::Duration;
    /// let mut a = std::process::Command::new("sleep").arg("10").spawn()?;
    /// let mut b = std::process::Command::new("sleep").arg("10").spawn()?;
    /// let wa = PidWatch::open(&ProcessId::of(a.id()).unwrap())?;
    /// let wb = PidWatch::open(&ProcessId::of(b.id()).unwrap())?;
    /// assert_eq!(PidWatch::wait_any(&[&wa, &wb], Some(Duration::from_millis(10)))?, None);
    /// b.kill()?;
    /// assert_eq!(PidWatch::wait_any(&[&wa, &wb], None)?, Some(1));
    /// a.kill()?;
    /// a.wait()?;
    /// b.wait()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait_any(watches: &[&PidWatch], timeout: Option<Duration>) -> io::Result<Option<usize>> {
        if watches.is_empty() && timeout.is_none() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "wait_any on no processes without a timeout"));
        }
        let mut fds: Vec<libc::pollfd> =
            watches.iter().map(|w| libc::pollfd { fd: w.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        // A deadline too far away to represent is no deadline.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let ms = match deadline {
                None => -1,
                Some(d) => poll_ms(d.saturating_duration_since(Instant::now())),
            };
            // SAFETY: `fds` is a valid, writable array of `fds.len()` pollfds, and every fd in it
            // stays open for the call (the watches are borrowed).
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            if rc > 0 {
                return Ok(fds.iter().position(|p| p.revents != 0));
            }
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(e);
                }
            }
            // Timed out (or interrupted): done once the deadline has really passed.
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }
}

impl AsFd for PidWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for PidWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A poll timeout in ms for `d`, rounded up (so poll never returns before the deadline).
fn poll_ms(d: Duration) -> libc::c_int {
    d.as_nanos().div_ceil(1_000_000).min(libc::c_int::MAX as u128) as libc::c_int
}

fn gone(id: &ProcessId, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("process {} (start time {}) is gone: {why}", id.pid, id.start_time))
}

/// The error of a failed `pidfd_open`.
fn pidfd_open_error(e: io::Error, id: &ProcessId) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ESRCH) => gone(id, "it has exited"),
        Some(libc::EINVAL) => gone(id, "the pid is now a thread of another process"),
        // ENOSYS: before Linux 5.3. EPERM: seccomp filters that answer unknown calls so.
        Some(libc::ENOSYS) | Some(libc::EPERM) => io::Error::new(
            io::ErrorKind::Unsupported,
            format!("pidfd_open is not available ({e}); it needs Linux 5.3 or later, allowed by seccomp"),
        ),
        _ => e,
    }
}

/// Have the kernel send `signal` to this process when its parent dies (`PR_SET_PDEATHSIG`),
/// closing the race with a parent that died before the call: if our parent is no longer
/// `expected_parent`, the parent has already died (we were re-parented to a reaper) and the
/// death signal will never come, so `signal` is sent to this process at once. If that did not
/// end the process (the signal is caught, ignored or blocked), the result is the OS error
/// `ESRCH` ("no such process": the parent), which survives being returned from `pre_exec`. `expected_parent` must come from the parent (`std::process::id()` before the
/// spawn), not from `getppid()` in the child, which is exactly the racy value. A parent that
/// is pid 1 (as in a container) is fine: only a *change* of parent counts.
///
/// Caveats of `PR_SET_PDEATHSIG`: it fires when the parent *thread* that created this process
/// exits, even if the rest of the parent lives on (spawn from a thread that outlives the child);
/// it is cleared by `fork` (children do not inherit it) and by executing a set-user-ID or
/// set-group-ID program, but kept across other `exec`s.
///
/// It makes only async-signal-safe calls (`prctl`, `getppid`, `getpid`, `kill`) and does not
/// allocate, so it may run in [`CommandExt::pre_exec`](std::os::unix::process::CommandExt::pre_exec).
///
/// ```
/// use std::os::unix::process::CommandExt;
/// let parent = std::process::id();
/// let mut cmd = std::process::Command::new("sleep");
/// cmd.arg("10");
/// // SAFETY: die_with_parent is async-signal-safe and does not allocate.
/// unsafe { cmd.pre_exec(move || shmq::process::die_with_parent(parent, libc::SIGKILL)) };
/// let mut child = cmd.spawn()?; // dies with this process (rather: with this thread)
/// child.kill()?;
/// child.wait()?;
/// // A wrong expected parent: the signal comes at once (here an ignored one, so an error).
/// let mut cmd = std::process::Command::new("true");
/// // SAFETY: as above; signal() is async-signal-safe too.
/// unsafe {
///     cmd.pre_exec(|| {
///         libc::signal(libc::SIGUSR1, libc::SIG_IGN);
///         shmq::process::die_with_parent(u32::MAX, libc::SIGUSR1)
///     })
/// };
/// assert_eq!(cmd.spawn().unwrap_err().raw_os_error(), Some(libc::ESRCH));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn die_with_parent(expected_parent: u32, signal: i32) -> io::Result<()> {
    if signal <= 0 {
        // prctl would take 0 as "clear the setting"; that is not what this function is for.
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: prctl(PR_SET_PDEATHSIG, sig) reads only its integer arguments (the unused ones are
    // passed as 0); it fails with EINVAL for an invalid signal number.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0 as libc::c_ulong, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid cannot fail and touches no memory.
    let parent = unsafe { libc::getppid() };
    if parent as u32 != expected_parent {
        // SAFETY: getpid cannot fail; kill on our own pid with a valid signal (prctl accepted
        // it) touches no memory.
        unsafe { libc::kill(libc::getpid(), signal) };
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Whether our parent is still `expected` (the process that started us, identified by the
/// parent itself, e.g. passed in the environment). False once it has died: we have been
/// re-parented to a reaper, or (checked as well) `expected` is dead by its start time.
///
/// ```
/// use shmq::process::{ProcessId, parent_alive};
/// # // SAFETY: getppid cannot fail and touches no memory.
/// # let parent = ProcessId::of(unsafe { libc::getppid() } as u32).unwrap();
/// assert!(parent_alive(&parent)); // `parent` as the parent passed it to us
/// assert!(!parent_alive(&ProcessId { start_time: parent.start_time + 1, ..parent }));
/// assert!(!parent_alive(&ProcessId::me())); // we are not our own parent
/// ```
pub fn parent_alive(expected: &ProcessId) -> bool {
    // SAFETY: getppid cannot fail and touches no memory.
    let parent = unsafe { libc::getppid() } as u32;
    parent == expected.pid && expected.liveness() != Liveness::Dead
}

#[cfg(all(test, not(shmq_loom)))]
mod tests {
    use super::*;

    const LINE: &str =
        "1234 (a) b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 7 0 987654 1000 50 18446744073709551615";

    #[test]
    fn parses_field_22_even_with_parens_in_the_name() {
        assert_eq!(parse_stat(LINE).map(|st| st.start_time), Some(987654));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn parses_pid_state_and_threads() {
        let st = parse_stat(LINE).unwrap();
        assert_eq!(st, Stat { pid: 1234, state: b'S', num_threads: 7, start_time: 987654 });
        assert!(!st.has_exited());
        // A zombie leader with live threads is a live process; a lone zombie has exited.
        let zombie_leader = LINE.replace(") S ", ") Z ");
        assert!(!parse_stat(&zombie_leader).unwrap().has_exited());
        let zombie = zombie_leader.replace(" 20 0 7 0 ", " 20 0 1 0 ");
        assert!(parse_stat(&zombie).unwrap().has_exited());
        assert!(Stat { state: b'X', ..st }.has_exited());
    }

    #[test]
    fn my_start_time_is_known_and_stable() {
        let (pid, t) = me();
        assert_eq!(pid, std::process::id());
        assert!(t > 0);
        assert_eq!(start_time(pid), Some(t));
        assert_eq!(ProcessId::of(pid), Some(ProcessId { pid, start_time: t }));
    }

    #[test]
    fn i_am_alive_and_an_impostor_is_dead() {
        let me = ProcessId::me();
        assert_eq!(me.liveness(), Liveness::Alive);
        for start_time in [me.start_time - 1, me.start_time + 1, 0, u64::MAX] {
            assert_eq!(ProcessId { start_time, ..me }.liveness(), Liveness::Dead, "start time {start_time}");
        }
        for pid in [0, u32::MAX, i32::MAX as u32 + 1] {
            assert_eq!(ProcessId { pid, ..me }.liveness(), Liveness::Dead, "pid {pid}");
            assert_eq!(ProcessId::of(pid), None);
        }
        // pid_max is at most 2^22: this pid never exists.
        assert_eq!(ProcessId { pid: i32::MAX as u32, ..me }.liveness(), Liveness::Dead);
    }

    #[test]
    fn a_watch_on_myself_is_not_dead_and_times_out() {
        let me = ProcessId::me();
        let w = PidWatch::open(&me).unwrap();
        assert_eq!(w.process(), me);
        assert!(!w.is_dead());
        let t0 = Instant::now();
        assert_eq!(PidWatch::wait_any(&[&w, &w], Some(Duration::from_millis(30))).unwrap(), None);
        assert!(t0.elapsed() >= Duration::from_millis(30));
        assert_eq!(PidWatch::wait_any(&[&w], Some(Duration::ZERO)).unwrap(), None);
        assert_eq!(PidWatch::wait_any(&[], Some(Duration::from_millis(1))).unwrap(), None);
        assert_eq!(PidWatch::wait_any(&[], None).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let e = PidWatch::open(&ProcessId { start_time: me.start_time + 1, ..me }).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert_eq!(PidWatch::open(&ProcessId { pid: 0, ..me }).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn pidfd_open_errors_map_to_kinds() {
        let id = ProcessId { pid: 42, start_time: 7 };
        let kind = |errno| pidfd_open_error(io::Error::from_raw_os_error(errno), &id).kind();
        assert_eq!(kind(libc::ENOSYS), io::ErrorKind::Unsupported);
        assert_eq!(kind(libc::EPERM), io::ErrorKind::Unsupported);
        assert_eq!(kind(libc::ESRCH), io::ErrorKind::NotFound);
        assert_eq!(kind(libc::EMFILE), io::Error::from_raw_os_error(libc::EMFILE).kind());
    }

    #[test]
    fn poll_timeouts_round_up() {
        assert_eq!(poll_ms(Duration::ZERO), 0);
        assert_eq!(poll_ms(Duration::from_nanos(1)), 1);
        assert_eq!(poll_ms(Duration::from_millis(5)), 5);
        assert_eq!(poll_ms(Duration::from_secs(u64::MAX)), libc::c_int::MAX);
    }

    #[test]
    fn die_with_parent_rejects_signal_zero_and_keeps_a_live_parent() {
        assert_eq!(die_with_parent(std::process::id(), 0).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        // SAFETY: getppid cannot fail.
        let parent = unsafe { libc::getppid() } as u32;
        // Our real parent: nothing happens now. (The test harness's parent outlives this test;
        // clear the setting again so it cannot matter.)
        die_with_parent(parent, libc::SIGTERM).unwrap();
        // SAFETY: prctl(PR_SET_PDEATHSIG, 0) clears the setting; integer arguments only.
        assert_eq!(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0 as libc::c_ulong, 0 as libc::c_ulong, 0, 0) }, 0);
        assert!(parent_alive(&ProcessId::of(parent).unwrap()));
    }
}
