#![cfg(not(shmq_loom))] // these drive the public API, which loom builds do not have
//! Stale segments: `list_segments` reports every `/dev/shm/shmq.*` entry (hostile ones
//! included) without changing anything, and `remove_stale` removes exactly the segments whose
//! creator and attachments are all dead.
//!
//! The dead processes are real: children (this test binary re-executed in a child role, see
//! `common::Scope::spawn`) that create a channel and SIGKILL themselves. `remove_stale` acts on
//! every shmq segment of the machine, so the tests only assert about their own names, and run
//! one at a time (a stale segment of one test must not be removed by another test's call).

mod common;

use common::*;
use shmq::process::{Liveness, ProcessId};
use shmq::{Channel, Config, SegmentInfo, State, list_segments, mpmc, mpsc, remove_stale, shm_path};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

// Header offsets not in `common` (src/layout.rs, checked at compile time there).
/// `Identity::creator_pid` (u32).
const OFF_CREATOR_PID: usize = 56;
/// `Identity::creator_start_time` (u64).
const OFF_CREATOR_START: usize = 64;
/// `PeerTable::slots` (64 u64 words).
const OFF_SLOTS: usize = 640;

static SERIAL: Mutex<()> = Mutex::new(());

/// One test at a time (see the module documentation); a failed test does not block the others.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
#[ignore = "entry point of the child processes of the other tests; does nothing when run directly"]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else { return };
    let cfg = Config::new();
    match role.as_str() {
        // Create an MPMC channel, attach as sender and receiver, die.
        "mpmc_create_attach_die" => {
            let ch = mpmc::Channel::create(&env_var("SHMQ_IT_NAME"), &cfg).unwrap();
            let tx = ch.sender().unwrap();
            let _rx = ch.receiver().unwrap();
            tx.send(b"left behind").unwrap();
            report("start_time", ProcessId::me().start_time);
            die();
        }
        // Create an SPSC channel, send 3 messages, die.
        "spsc_create_send_die" => {
            let ch = Channel::create(&env_var("SHMQ_IT_NAME"), &cfg).unwrap();
            let mut tx = ch.sender().unwrap();
            for i in 0..3u8 {
                tx.send([i; 4]).unwrap();
            }
            report("start_time", ProcessId::me().start_time);
            die();
        }
        // Just exit: a process identity that is certainly dead afterwards.
        "report_and_exit" => report("start_time", ProcessId::me().start_time),
        other => panic!("unknown child role {other:?}"),
    }
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

/// The listing of the entry at `path`.
fn listed(path: &Path) -> SegmentInfo {
    let all = list_segments().expect("list_segments");
    all.into_iter().find(|s| s.path == path).unwrap_or_else(|| panic!("{} is not listed", path.display()))
}

/// The identity of a child that has exited (and been reaped): certainly dead.
fn dead_process(scope: &Scope) -> ProcessId {
    let f = scope.spawn("report_and_exit", &[]).wait(CHILD_TIMEOUT);
    f.assert_success();
    let id = ProcessId { pid: f.pid, start_time: f.report_u64("start_time") };
    assert_eq!(id.liveness(), Liveness::Dead);
    id
}

/// A peer slot word, packed as src/peers.rs packs it: kind 1 sender, 2 receiver, 3 handle.
fn slot_kind(id: ProcessId, kind: u64) -> u64 {
    u64::from(id.pid) | id.start_time << 22 | kind << 62
}

fn slot_word(id: ProcessId, sender: bool) -> u64 {
    slot_kind(id, if sender { 1 } else { 2 })
}

/// Create a file under /dev/shm (mode 0600, never replacing anything) holding `bytes`.
fn write_file(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).expect("create file");
    f.write_all(bytes).expect("write file");
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// A channel of this (live) process, attached as a sender: listed with its flavour, state,
/// creator and attachment, all alive, and never removed.
#[test]
fn a_live_channel_is_listed_and_kept() {
    let _serial = serial();
    let scope = Scope::new("slive");
    let name = scope.name("ch");
    let ch = mpsc::Channel::create(&name, &Config::new().capacity(64 * 1024)).unwrap();
    let tx = ch.sender().unwrap();
    let me = ProcessId::me();

    let info = listed(&shm_path(&name));
    assert_eq!(info.name, name);
    assert_eq!(info.size_bytes, std::fs::metadata(shm_path(&name)).unwrap().len());
    assert!(info.published);
    assert_eq!(info.problem, None);
    assert_eq!((info.flavor, info.state, info.capacity), (Some("mpsc"), Some(State::Active), Some(64 * 1024)));
    assert_eq!((info.creator, info.creator_alive), (Some(me), Some(Liveness::Alive)));
    assert_eq!((info.senders, info.receivers), (Some(1), Some(0)));
    let mut seen: Vec<_> = info.attachments.iter().map(|a| (a.process(), a.role, a.liveness)).collect();
    seen.sort_by_key(|r| r.1);
    assert_eq!(seen, vec![(me, "handle", Liveness::Alive), (me, "sender", Liveness::Alive)]);
    assert!(!info.is_stale());

    let removed = remove_stale().unwrap();
    assert!(!removed.contains(&name), "removed a live channel: {removed:?}");
    assert!(exists(&shm_path(&name)));
    tx.send(b"still works").unwrap();

    drop(tx);
    ch.unlink().unwrap();
    drop(ch);
    scope.finish();
}

/// A child creates an MPMC channel, attaches both ways and is killed: the creator and both
/// attachments are dead, so `remove_stale` removes it (once).
#[test]
fn a_killed_creators_channel_with_dead_attachments_is_removed() {
    let _serial = serial();
    let scope = Scope::new("sdead");
    let name = scope.name("ch");
    let child = scope.spawn("mpmc_create_attach_die", &[("SHMQ_IT_NAME", &name)]);
    let f = child.wait(CHILD_TIMEOUT);
    assert_killed(&f);
    let dead = ProcessId { pid: f.pid, start_time: f.report_u64("start_time") };

    let info = listed(&shm_path(&name));
    assert_eq!(info.problem, None, "{info:?}");
    assert_eq!((info.flavor, info.state), (Some("mpmc"), Some(State::Active)));
    assert_eq!((info.creator, info.creator_alive), (Some(dead), Some(Liveness::Dead)));
    assert_eq!((info.senders, info.receivers), (Some(1), Some(1)));
    let mut roles: Vec<_> = info.attachments.iter().map(|a| (a.process(), a.role, a.liveness)).collect();
    roles.sort_by_key(|r| r.1);
    let want = ["handle", "receiver", "sender"].map(|r| (dead, r, Liveness::Dead));
    assert_eq!(roles, want, "{info:?}");
    assert!(info.is_stale());

    let removed = remove_stale().unwrap();
    assert!(removed.contains(&name), "{name} not removed: {removed:?}");
    assert!(!exists(&shm_path(&name)));
    assert!(!list_segments().unwrap().iter().any(|s| s.name == name));
    let again = remove_stale().unwrap();
    assert!(!again.iter().any(|n| n.starts_with(scope.prefix())), "removed twice: {again:?}");
    scope.finish();
}

/// A child creates an SPSC channel, sends and is killed; this process opens it and attaches as
/// the receiver. The creator is dead but an attachment lives: kept (and the backlog is still
/// there to read). Our open handle alone keeps it too. Once we have closed it, nothing of it is
/// left (shmq removes the name of a CLOSED channel with its last live handle, or remove_stale
/// does).
#[test]
fn a_live_attachment_keeps_a_killed_creators_channel() {
    let _serial = serial();
    let scope = Scope::new("skeep");
    let name = scope.name("ch");
    let f = scope.spawn("spsc_create_send_die", &[("SHMQ_IT_NAME", &name)]).wait(CHILD_TIMEOUT);
    assert_killed(&f);
    let dead = ProcessId { pid: f.pid, start_time: f.report_u64("start_time") };
    let ch = Channel::open(&name, &Config::new()).unwrap();
    let mut rx = ch.receiver().unwrap();

    let info = listed(&shm_path(&name));
    assert_eq!(info.problem, None, "{info:?}");
    assert_eq!((info.flavor, info.creator, info.creator_alive), (Some("spsc"), Some(dead), Some(Liveness::Dead)));
    // Ours are alive; the child's (its handle and sender), unless the peer watcher has reaped
    // them already, are dead.
    let mut ours: Vec<_> =
        info.attachments.iter().filter(|a| a.pid != dead.pid).map(|a| (a.process(), a.role, a.liveness)).collect();
    ours.sort_by_key(|r| r.1);
    let me = ProcessId::me();
    assert_eq!(ours, vec![(me, "handle", Liveness::Alive), (me, "receiver", Liveness::Alive)], "{info:?}");
    for a in info.attachments.iter().filter(|a| a.pid == dead.pid) {
        assert_eq!((a.process(), a.liveness), (dead, Liveness::Dead), "{info:?}");
    }
    assert!(!info.is_stale());

    let removed = remove_stale().unwrap();
    assert!(!removed.contains(&name), "removed a channel with a live receiver: {removed:?}");
    assert!(exists(&shm_path(&name)));
    for i in 0..3u8 {
        assert_eq!(rx.try_recv().unwrap(), [i; 4]);
    }

    drop(rx);
    let info = listed(&shm_path(&name));
    assert!(!info.is_stale(), "our open handle keeps it: {info:?}");
    assert!(!remove_stale().unwrap().contains(&name));
    drop(ch);
    if exists(&shm_path(&name)) {
        let info = listed(&shm_path(&name));
        assert!(info.is_stale(), "{info:?}");
        let removed = remove_stale().unwrap();
        assert!(removed.contains(&name), "{name} not removed: {removed:?}");
    } else {
        eprintln!("the last live handle removed the name itself");
    }
    assert!(!exists(&shm_path(&name)));
    scope.finish();
}

/// Segments written byte by byte: a header not yet published is left alone while its creator
/// lives and removed once the creator is dead; published ones follow their creator and peer
/// table; a corrupt one, or one whose creator is not recorded, is only reported.
#[test]
fn headers_in_every_stage_follow_the_rules() {
    let _serial = serial();
    let scope = Scope::new("sfab");
    let me = ProcessId::me();
    let dead = dead_process(&scope);

    // A template: a real SPSC segment of this process, copied and then removed.
    let tname = scope.name("template");
    let template = {
        let ch = Channel::create(&tname, &Config::new().capacity(4096)).unwrap();
        let mut bytes = std::fs::read(shm_path(&tname)).unwrap();
        ch.unlink().unwrap();
        bytes[OFF_SLOTS..OFF_SLOTS + 8 * 64].fill(0); // our own handle's slot
        bytes
    };
    let with = |creator: Option<ProcessId>, magic: bool, edits: &[(usize, &[u8])]| {
        let mut b = template.clone();
        let c = creator.unwrap_or(ProcessId { pid: 0, start_time: 0 });
        b[OFF_CREATOR_PID..OFF_CREATOR_PID + 4].copy_from_slice(&c.pid.to_ne_bytes());
        b[OFF_CREATOR_START..OFF_CREATOR_START + 8].copy_from_slice(&c.start_time.to_ne_bytes());
        if !magic {
            b[..8].fill(0);
        }
        for (off, bytes) in edits {
            b[*off..*off + bytes.len()].copy_from_slice(bytes);
        }
        b
    };
    let live_slot = slot_word(me, false).to_ne_bytes();
    let dead_slot = slot_word(dead, true).to_ne_bytes();
    let bad_flavor = 9u32.to_ne_bytes();
    let bad_slot = (slot_word(dead, true) & !(3 << 62)).to_ne_bytes(); // kind bits 0
    let live_handle = slot_kind(me, 3).to_ne_bytes();
    let dead_handle = slot_kind(dead, 3).to_ne_bytes();
    // (name, bytes, stale?, a problem?)
    let cases: Vec<(&str, Vec<u8>, bool, bool)> = vec![
        ("unpub-live", with(Some(me), false, &[]), false, false),
        ("unpub-dead", with(Some(dead), false, &[]), true, false),
        ("unpub-unknown", with(None, false, &[]), false, true),
        ("pub-dead", with(Some(dead), true, &[]), true, false),
        ("pub-dead-deadpeer", with(Some(dead), true, &[(OFF_SLOTS + 8, &dead_slot)]), true, false),
        (
            "pub-dead-livepeer",
            with(Some(dead), true, &[(OFF_SLOTS, &dead_slot), (OFF_SLOTS + 16, &live_slot)]),
            false,
            false,
        ),
        ("pub-dead-deadhandle", with(Some(dead), true, &[(OFF_SLOTS + 24, &dead_handle)]), true, false),
        ("pub-dead-livehandle", with(Some(dead), true, &[(OFF_SLOTS + 24, &live_handle)]), false, false),
        ("pub-unknown", with(None, true, &[]), false, true),
        ("pub-dead-badflavor", with(Some(dead), true, &[(20, &bad_flavor)]), false, true),
        ("pub-dead-badslot", with(Some(dead), true, &[(OFF_SLOTS + 8, &bad_slot)]), false, true),
        ("pub-dead-truncated", with(Some(dead), true, &[])[..4096].to_vec(), false, true),
    ];
    let mut paths = Vec::new();
    for (what, bytes, _, _) in &cases {
        let path = shm_path(&scope.name(what));
        write_file(&path, bytes);
        paths.push(path);
    }

    for ((what, _, stale, problem), path) in cases.iter().zip(&paths) {
        let info = listed(path);
        assert_eq!(info.is_stale(), *stale, "{what}: {info:?}");
        assert_eq!(info.problem.is_some(), *problem, "{what}: {info:?}");
        assert_eq!(info.published, what.starts_with("pub"), "{what}");
        if what.contains("dead") {
            assert_eq!((info.creator, info.creator_alive), (Some(dead), Some(Liveness::Dead)), "{what}");
        }
    }
    let removed = remove_stale().unwrap();
    for ((what, _, stale, _), path) in cases.iter().zip(&paths) {
        let name = path.file_name().unwrap().to_str().unwrap().strip_prefix("shmq.").unwrap();
        assert_eq!(removed.iter().any(|n| n == name), *stale, "{what}: removed {removed:?}");
        assert_eq!(exists(path), !stale, "{what}");
    }
    scope.finish(); // removes what is left
}

/// Entries that are not shmq segments at all: random bytes, a 10-byte file, an empty file, a
/// FIFO, a symlink, names shmq cannot have. Each is listed with a problem, nothing hangs or
/// panics, and nothing is removed.
#[test]
fn garbage_is_reported_and_left_alone() {
    let _serial = serial();
    let scope = Scope::new("sjunk");
    let dead = dead_process(&scope);
    let mut rng = SplitMix64::new(0x5eed_57a1e);
    let mut random = vec![0u8; 8192];
    rng.fill(&mut random);
    let short = &random[..10];

    let p_random = shm_path(&scope.name("random"));
    write_file(&p_random, &random);
    let p_short = shm_path(&scope.name("short"));
    write_file(&p_short, short);
    let p_empty = shm_path(&scope.name("empty"));
    write_file(&p_empty, &[]);
    let p_fifo = shm_path(&scope.name("fifo"));
    let c = std::ffi::CString::new(p_fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo: {}", std::io::Error::last_os_error());
    let p_link = shm_path(&scope.name("symlink"));
    std::os::unix::fs::symlink(&p_random, &p_link).unwrap();
    // A perfectly stale segment (dead creator, no attachments), but under names shmq never
    // makes: reported, not removed (shm_unlink could not even name the second one).
    let ch_name = scope.name("template");
    let mut stale_bytes = {
        let ch = Channel::create(&ch_name, &Config::new().capacity(4096)).unwrap();
        let mut bytes = std::fs::read(shm_path(&ch_name)).unwrap();
        ch.unlink().unwrap();
        bytes[OFF_SLOTS..OFF_SLOTS + 8 * 64].fill(0); // our own handle's slot
        bytes
    };
    stale_bytes[OFF_CREATOR_PID..OFF_CREATOR_PID + 4].copy_from_slice(&dead.pid.to_ne_bytes());
    stale_bytes[OFF_CREATOR_START..OFF_CREATOR_START + 8].copy_from_slice(&dead.start_time.to_ne_bytes());
    let p_space = shm_path(&format!("{}bad name", scope.prefix()));
    write_file(&p_space, &stale_bytes);
    let p_utf8 = {
        let mut b = format!("/dev/shm/shmq.{}bad-", scope.prefix()).into_bytes();
        b.push(0xFF);
        PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(b))
    };
    write_file(&p_utf8, &stale_bytes);

    let all = [&p_random, &p_short, &p_empty, &p_fifo, &p_link, &p_space, &p_utf8];
    for p in all {
        let info = listed(p);
        let problem = info.problem.clone().unwrap_or_else(|| panic!("no problem reported for {info:?}"));
        eprintln!("{}: {problem}", p.display());
        assert!(!info.is_stale(), "{info:?}");
    }
    assert!(listed(&p_fifo).problem.unwrap().contains("not a regular file"));
    assert!(listed(&p_link).problem.unwrap().contains("not a regular file"));
    assert!(listed(&p_short).problem.unwrap().contains("too small"));
    assert_eq!(listed(&p_short).size_bytes, 10);
    assert_eq!(listed(&p_space).creator_alive, Some(Liveness::Dead), "the header itself is fine");

    let removed = remove_stale().unwrap();
    assert!(!removed.iter().any(|n| n.contains(scope.prefix())), "removed garbage: {removed:?}");
    for p in all {
        assert!(exists(p), "{} was removed", p.display());
    }
    for p in [&p_space, &p_utf8] {
        std::fs::remove_file(p).unwrap();
    }
    scope.finish(); // removes the rest by name (shm_unlink removes FIFOs and symlinks too)
}
