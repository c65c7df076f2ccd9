//! `shmq`: look at the shmq segments in `/dev/shm`, and remove the stale ones.
//!
//! * `shmq list` prints every `/dev/shm/shmq.*` entry: its flavour, size, lifecycle state, the
//!   process that created it and the processes attached to it (and whether they are alive), and
//!   what is wrong with it if anything is (corrupt and foreign entries are listed with their
//!   problem, never hidden). `--json` prints one JSON object per line instead.
//! * `shmq clean` removes the stale segments (creator and every attached process dead, nothing
//!   wrong with the header: [`shmq::SegmentInfo::is_stale`]) with [`shmq::remove_stale`], and
//!   says what it removed and what it kept, and why. `--dry-run` only says what it would remove.
//!
//! Both take `--prefix` to look only at names that start with it (`clean --prefix` then removes
//! only such names).
//!
//! Exit status: 0 on success, 1 on an error (the message is on stderr), 2 on a usage error.
//! Built with the `cli` feature: `cargo install shmq --features cli`.

#![warn(missing_docs)]

use clap::{Args, Parser, Subcommand};
use shmq::process::Liveness;
use shmq::{Attachment, SegmentInfo};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "shmq",
    version,
    about = "Inspect shmq shared-memory channels in /dev/shm and remove stale ones",
    long_about = "Inspect shmq shared-memory channels in /dev/shm and remove stale ones.\n\n\
A segment is stale when nothing is wrong with its header, the process that created it is\n\
dead, and so is every process attached to it or holding it open. Processes are judged by\n\
pid and start time, so a reused pid does not count as alive. Processes in another pid\n\
namespace look dead: run this where the channels' processes run.\n\n\
Exit status: 0 success, 1 error (message on stderr), 2 usage error."
)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
enum Command {
    /// List every shmq segment with its state, creator and attachments
    #[command(long_about = "List every shmq segment (/dev/shm/shmq.*) with its flavour, size,\n\
lifecycle state, creator, attached processes and whether they are alive.\n\n\
Entries that are corrupt, of another layout version, or not segments at all are listed\n\
with their problem. Nothing is changed: each entry is read, never mapped or written.")]
    List(ListArgs),
    /// Remove stale segments (creator and every attached process dead)
    #[command(long_about = "Remove the stale shmq segments: nothing is wrong with the header,\n\
the creator is dead, and every process attached to the segment or holding it open is dead.\n\
Prints each segment with what was done to it and why.\n\n\
Segments with a problem (corrupt, foreign, creator not recorded) are never removed.\n\
Without --prefix this acts on every shmq segment of the machine that you may remove.\n\
Processes that still have a removed segment mapped keep working; only the name is gone.")]
    Clean(CleanArgs),
}

/// Options of `shmq list`.
#[derive(Args, Debug)]
struct ListArgs {
    /// Print one JSON object per segment and line instead of a table
    #[arg(long)]
    json: bool,
    /// Only segments whose name (without the "shmq." file prefix) starts with PREFIX
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<String>,
}

/// Options of `shmq clean`.
#[derive(Args, Debug)]
struct CleanArgs {
    /// Only say what would be removed; remove nothing
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Print one JSON object per segment and line instead of text
    #[arg(long)]
    json: bool,
    /// Only look at (and remove) segments whose name starts with PREFIX
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<String>,
}

/// Parse the command line, run the subcommand, print its output; 1 on an error.
fn main() -> ExitCode {
    // Usage errors: clap prints them and exits with status 2 (0 for --help and --version).
    let cli = Cli::parse();
    let output = match &cli.command {
        Command::List(args) => list(args).map(|text| (text, None)),
        Command::Clean(args) => clean(args),
    };
    // The report is printed even when part of the work failed; the failure then decides the status.
    let result = output.and_then(|(text, failure)| {
        write_stdout(&text)?;
        failure.map_or(Ok(()), |f| Err(io::Error::other(f)))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Nothing useful can be done if stderr is gone too.
            let _ = writeln!(io::stderr(), "shmq: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Write all of `text` to stdout. A reader that went away (`shmq list | head -1`) is not an
/// error; any other failure is.
fn write_stdout(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("writing the output: {e}"))),
        Ok(()) => Ok(()),
    }
}

/// The listing, narrowed to `prefix`.
fn listing(prefix: Option<&str>) -> io::Result<Vec<SegmentInfo>> {
    let all = shmq::list_segments().map_err(|e| io::Error::new(e.kind(), format!("cannot list /dev/shm: {e}")))?;
    Ok(all.into_iter().filter(|s| matches(prefix, &s.name)).collect())
}

/// Whether `name` is selected by `--prefix` (everything is without one).
fn matches(prefix: Option<&str>, name: &str) -> bool {
    prefix.is_none_or(|p| name.starts_with(p))
}

// ---------------------------------------------------------------------------------------------
// shmq list

/// `shmq list`: the text to print.
fn list(args: &ListArgs) -> io::Result<String> {
    let segments = listing(args.prefix.as_deref())?;
    if args.json {
        let mut out = String::new();
        for s in &segments {
            out.push_str(&segment_json(s));
            out.push('\n');
        }
        return Ok(out);
    }
    Ok(table(&segments, args.prefix.as_deref()))
}

/// The human-readable table: one row per segment, and under a row the segment's problem.
fn table(segments: &[SegmentInfo], prefix: Option<&str>) -> String {
    if segments.is_empty() {
        return match prefix {
            Some(p) => format!("no shmq segments named {}* in /dev/shm\n", printable(p)),
            None => "no shmq segments in /dev/shm\n".to_string(),
        };
    }
    const HEAD: [&str; 8] =
        ["NAME", "FLAVOUR", "STATE", "SIZE", "CREATOR", "TX/RX", "STALE", "ATTACHED (pid liveness: roles)"];
    let rows: Vec<[String; 8]> = segments
        .iter()
        .map(|s| {
            [
                printable(&s.name),
                s.flavor.unwrap_or("-").to_string(),
                state_text(s),
                human_size(s.size_bytes),
                creator_text(s),
                match (s.senders, s.receivers) {
                    (Some(tx), Some(rx)) => format!("{tx}/{rx}"),
                    _ => "-".to_string(),
                },
                if s.is_stale() { "yes" } else { "no" }.to_string(),
                attachments_text(&s.attachments).unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect();
    let mut width = HEAD.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell); // no padding after the last column
            } else {
                let _ = write!(l, "{cell:<w$}  ", w = width[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &HEAD);
    for (s, row) in segments.iter().zip(&rows) {
        line(&mut out, &row.each_ref().map(String::as_str));
        if let Some(p) = &s.problem {
            let _ = writeln!(out, "  problem: {}", printable(p));
        }
    }
    let stale = segments.iter().filter(|s| s.is_stale()).count();
    let broken = segments.iter().filter(|s| s.problem.is_some()).count();
    let _ = write!(out, "\n{}, {stale} stale", plural(segments.len(), "segment"));
    if stale > 0 {
        out.push_str(" (`shmq clean` removes them)");
    }
    let _ = writeln!(out, ", {broken} with a problem");
    out
}

/// The lifecycle state, or why there is none.
fn state_text(s: &SegmentInfo) -> String {
    match s.state {
        Some(state) => state.to_string(),
        None if !s.published && s.problem.is_none() => "creating".to_string(),
        None => "-".to_string(),
    }
}

/// `1234 alive`, or `-` if the creator is not recorded.
fn creator_text(s: &SegmentInfo) -> String {
    match s.creator {
        Some(c) => format!("{} {}", c.pid, s.creator_alive.map_or("unknown", liveness_name)),
        None => "-".to_string(),
    }
}

/// The attachments grouped by process, in slot order: `1234 alive: handle, sender; 99 dead:
/// receiver`. `None` if there are none.
fn attachments_text(attachments: &[Attachment]) -> Option<String> {
    let mut groups: Vec<(u32, u64, Liveness, Vec<&str>)> = Vec::new();
    for a in attachments {
        match groups.iter_mut().find(|g| (g.0, g.1) == (a.pid, a.start_time)) {
            Some(g) => g.3.push(a.role),
            None => groups.push((a.pid, a.start_time, a.liveness, vec![a.role])),
        }
    }
    if groups.is_empty() {
        return None;
    }
    let parts: Vec<String> =
        groups.iter().map(|(pid, _, l, roles)| format!("{pid} {}: {}", liveness_name(*l), roles.join(", "))).collect();
    Some(parts.join("; "))
}

/// `alive`, `dead` or `unknown`.
fn liveness_name(l: Liveness) -> &'static str {
    match l {
        Liveness::Alive => "alive",
        Liveness::Dead => "dead",
        Liveness::Unknown => "unknown",
    }
}

/// Bytes with a binary unit, never rounded misleadingly: `512 B`, `68 KiB`, `1.5 MiB`,
/// `1028 KiB` (not `1.0 MiB` for a 1 MiB ring and its 4 KiB header).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    let mut scale = 1u64;
    while unit + 1 < UNITS.len() && bytes >= scale * 1024 {
        unit += 1;
        scale *= 1024;
    }
    let exact_tenths = u128::from(bytes) * 10 % u128::from(scale) == 0;
    if bytes % scale == 0 {
        format!("{} {}", bytes / scale, UNITS[unit])
    } else if !exact_tenths && bytes % (scale / 1024) == 0 {
        // Exact in the unit below (and below 1024 * 1024 of it).
        format!("{} {}", bytes / (scale / 1024), UNITS[unit - 1])
    } else {
        format!("{:.1} {}", bytes as f64 / scale as f64, UNITS[unit])
    }
}

/// `1 segment`, `2 segments`.
fn plural(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

/// `s` with control characters escaped, so that a hostile file name cannot break the table or
/// drive the terminal.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// One segment as a JSON object (one line, no trailing newline).
///
/// Fields: `name`, `path`, `size_bytes`, `published`, `flavor`, `state`, `capacity`, `creator`
/// (`{"pid", "start_time", "liveness"}` or null), `senders`, `receivers`, `attachments`
/// (`[{"slot", "pid", "start_time", "role", "liveness"}]`), `stale` and `problem`. Absent
/// values are `null`.
fn segment_json(s: &SegmentInfo) -> String {
    let mut o = JsonObject::new();
    o.str("name", &s.name);
    o.str("path", &s.path.to_string_lossy());
    o.raw("size_bytes", s.size_bytes.to_string());
    o.raw("published", s.published.to_string());
    o.opt_str("flavor", s.flavor);
    o.opt_str("state", s.state.map(|st| st.to_string()).as_deref());
    o.raw("capacity", opt_num(s.capacity));
    let creator = s.creator.map(|c| {
        let mut co = JsonObject::new();
        co.raw("pid", c.pid.to_string());
        co.raw("start_time", c.start_time.to_string());
        co.opt_str("liveness", s.creator_alive.map(liveness_name));
        co.finish()
    });
    o.raw("creator", creator.unwrap_or_else(|| "null".to_string()));
    o.raw("senders", opt_num(s.senders));
    o.raw("receivers", opt_num(s.receivers));
    let attachments: Vec<String> = s
        .attachments
        .iter()
        .map(|a| {
            let mut ao = JsonObject::new();
            ao.raw("slot", a.slot.to_string());
            ao.raw("pid", a.pid.to_string());
            ao.raw("start_time", a.start_time.to_string());
            ao.str("role", a.role);
            ao.str("liveness", liveness_name(a.liveness));
            ao.finish()
        })
        .collect();
    o.raw("attachments", format!("[{}]", attachments.join(",")));
    o.raw("stale", s.is_stale().to_string());
    o.opt_str("problem", s.problem.as_deref());
    o.finish()
}

/// A number, or `null`.
fn opt_num<T: ToString>(n: Option<T>) -> String {
    n.map_or_else(|| "null".to_string(), |n| n.to_string())
}

/// A JSON object written field by field (keys are ours and need no escaping beyond
/// [`json_string`], which they get anyway).
struct JsonObject(String);

impl JsonObject {
    /// An empty object.
    fn new() -> JsonObject {
        JsonObject(String::from("{"))
    }

    /// Add a field whose value is already JSON text.
    fn raw(&mut self, key: &str, value: impl AsRef<str>) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        json_string(&mut self.0, key);
        self.0.push(':');
        self.0.push_str(value.as_ref());
    }

    /// Add a string field.
    fn str(&mut self, key: &str, value: &str) {
        let mut v = String::new();
        json_string(&mut v, value);
        self.raw(key, v);
    }

    /// Add a string field, or `null`.
    fn opt_str(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(v) => self.str(key, v),
            None => self.raw(key, "null"),
        }
    }

    /// The object's text.
    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// Append `s` to `out` as a JSON string literal (RFC 8259): `"` and `\` escaped, control
/// characters (U+0000..U+001F) as `\n`, `\t` etc. or `\u00XX`, everything else as is (the
/// output is UTF-8). U+007F and the line separators U+2028/2029 are escaped too, so that the
/// output stays on one line for any reader.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c < '\u{20}' || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------------------------
// shmq clean

/// What `clean` did (or would do) with one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// Removed (stale).
    Removed,
    /// Stale: a real run would remove it (`--dry-run`).
    WouldRemove,
    /// Not removed; the reason says why.
    Kept,
    /// Stale, but removing it failed unexpectedly (the exit status is then 1).
    Failed,
}

impl Action {
    /// How the text report says it.
    fn name(self) -> &'static str {
        match self {
            Action::Removed => "removed",
            Action::WouldRemove => "would remove",
            Action::Kept => "kept",
            Action::Failed => "failed",
        }
    }

    /// How the JSON report says it (`"action"`).
    fn json_name(self) -> &'static str {
        match self {
            Action::Removed => "removed",
            Action::WouldRemove => "would_remove",
            Action::Kept => "kept",
            Action::Failed => "failed",
        }
    }
}

/// One line of `clean`'s report.
struct Outcome {
    /// The segment's name (without the `shmq.` prefix).
    name: String,
    /// Its file under `/dev/shm`.
    path: PathBuf,
    /// What was done.
    action: Action,
    /// Why.
    reason: String,
}

/// `shmq clean`: remove (or, with `--dry-run`, only pick) the stale segments and say what
/// happened to every segment looked at. Returns the report and, if a stale segment could not be
/// removed for an unexpected reason, what to say on stderr (the status is then 1).
fn clean(args: &CleanArgs) -> io::Result<(String, Option<String>)> {
    let prefix = args.prefix.as_deref();
    let outcomes = match (args.dry_run, prefix) {
        (true, _) => dry_run(prefix)?,
        (false, None) => clean_all()?,
        (false, Some(p)) => clean_prefix(p)?,
    };
    let failed = outcomes.iter().filter(|o| o.action == Action::Failed).count();
    let failure = (failed > 0).then(|| format!("{} could not be removed", plural(failed, "stale segment")));
    if args.json {
        let mut out = String::new();
        for o in &outcomes {
            let mut j = JsonObject::new();
            j.str("name", &o.name);
            j.str("path", &o.path.to_string_lossy());
            j.str("action", o.action.json_name());
            j.str("reason", &o.reason);
            out.push_str(&j.finish());
            out.push('\n');
        }
        return Ok((out, failure));
    }
    Ok((clean_text(&outcomes, args.dry_run, prefix), failure))
}

/// The human-readable report of `clean`.
fn clean_text(outcomes: &[Outcome], dry_run: bool, prefix: Option<&str>) -> String {
    let mut out = String::new();
    if dry_run {
        out.push_str("dry run: nothing is removed\n");
    }
    if outcomes.is_empty() {
        match prefix {
            Some(p) => {
                let _ = writeln!(out, "no shmq segments named {}* in /dev/shm", printable(p));
            }
            None => out.push_str("no shmq segments in /dev/shm\n"),
        }
        return out;
    }
    let action_w = outcomes.iter().map(|o| o.action.name().len()).max().unwrap_or(0);
    let names: Vec<String> = outcomes.iter().map(|o| printable(&o.name)).collect();
    let name_w = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    for (o, name) in outcomes.iter().zip(&names) {
        let _ = writeln!(out, "{:<action_w$}  {name:<name_w$}  {}", o.action.name(), printable(&o.reason));
    }
    let count = |a: Action| outcomes.iter().filter(|o| o.action == a).count();
    let kept = count(Action::Kept);
    if dry_run {
        let _ = write!(out, "\n{} would be removed, {kept} kept", plural(count(Action::WouldRemove), "segment"));
    } else {
        let _ = write!(out, "\n{} removed, {kept} kept", plural(count(Action::Removed), "segment"));
    }
    match count(Action::Failed) {
        0 => out.push('\n'),
        failed => {
            let _ = writeln!(out, ", {failed} failed");
        }
    }
    out
}

/// `--dry-run`: the segments [`shmq::remove_stale`] would remove, judged from one listing with
/// the same rule it applies ([`SegmentInfo::is_stale`]). A real run makes its own look, so it
/// can differ if processes start or die in between.
fn dry_run(prefix: Option<&str>) -> io::Result<Vec<Outcome>> {
    Ok(listing(prefix)?
        .into_iter()
        .map(|s| {
            let (action, reason) =
                if s.is_stale() { (Action::WouldRemove, stale_reason(&s)) } else { (Action::Kept, kept_reason(&s)) };
            Outcome { name: s.name, path: s.path, action, reason }
        })
        .collect())
}

/// Every stale segment of the machine, through [`shmq::remove_stale`]. The reasons come from a
/// listing made just before (remove_stale makes its own look and decides by that).
fn clean_all() -> io::Result<Vec<Outcome>> {
    let before = listing(None)?;
    let removed =
        shmq::remove_stale().map_err(|e| io::Error::new(e.kind(), format!("removing stale segments: {e}")))?;
    let mut outcomes: Vec<Outcome> = before
        .into_iter()
        .map(|s| {
            let (action, reason) = match (removed.contains(&s.name), s.is_stale()) {
                (true, true) => (Action::Removed, stale_reason(&s)),
                (true, false) => (Action::Removed, "it became stale after it was listed".to_string()),
                (false, true) => (Action::Kept, not_removed_reason(&s)),
                (false, false) => (Action::Kept, kept_reason(&s)),
            };
            Outcome { name: s.name, path: s.path, action, reason }
        })
        .collect();
    for name in removed {
        if !outcomes.iter().any(|o| o.name == name) {
            let path = shmq::shm_path(&name);
            outcomes.push(Outcome {
                name,
                path,
                action: Action::Removed,
                reason: "stale (appeared after it was listed)".into(),
            });
        }
    }
    outcomes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(outcomes)
}

/// The stale segments whose name starts with `prefix`, and only those.
///
/// [`shmq::remove_stale`] acts on every segment of the machine and has no filter, so this removes
/// the names itself with [`shmq::unlink`], keeping remove_stale's guarantee that a name is
/// removed only if it still refers to the file that was judged: the name's device and inode are
/// recorded before the listing and compared again just before the unlink (a segment created
/// under the same name in between has another inode and is kept).
fn clean_prefix(prefix: &str) -> io::Result<Vec<Outcome>> {
    let before = identities(prefix)?;
    let segments = listing(Some(prefix))?;
    let mut outcomes = Vec::new();
    for s in segments {
        let (action, reason) = if !s.is_stale() {
            (Action::Kept, kept_reason(&s))
        } else {
            let same = match (before.get(&s.path), std::fs::symlink_metadata(&s.path)) {
                (Some(&id), Ok(now)) => id == (now.dev(), now.ino()),
                _ => false,
            };
            if !same {
                (Action::Kept, not_removed_reason(&s))
            } else {
                match shmq::unlink(&s.name) {
                    Ok(()) => (Action::Removed, stale_reason(&s)),
                    Err(shmq::SegmentError::NotFound { .. } | shmq::SegmentError::PermissionDenied { .. }) => {
                        (Action::Kept, not_removed_reason(&s))
                    }
                    Err(e) => (Action::Failed, format!("stale, but removing it failed: {e}")),
                }
            }
        };
        outcomes.push(Outcome { name: s.name, path: s.path, action, reason });
    }
    Ok(outcomes)
}

/// (device, inode) of every `/dev/shm/shmq.PREFIX*` name, by path.
fn identities(prefix: &str) -> io::Result<HashMap<PathBuf, (u64, u64)>> {
    let want = format!("shmq.{prefix}");
    let mut ids = HashMap::new();
    let dir =
        std::fs::read_dir("/dev/shm").map_err(|e| io::Error::new(e.kind(), format!("cannot list /dev/shm: {e}")))?;
    for entry in dir {
        let entry = entry.map_err(|e| io::Error::new(e.kind(), format!("cannot list /dev/shm: {e}")))?;
        if entry.file_name().as_encoded_bytes().starts_with(want.as_bytes()) {
            // An entry that vanished meanwhile is simply not recorded (and so never removed).
            if let Ok(m) = std::fs::symlink_metadata(entry.path()) {
                ids.insert(entry.path(), (m.dev(), m.ino()));
            }
        }
    }
    Ok(ids)
}

/// Why a stale segment is (or would be) removed.
fn stale_reason(s: &SegmentInfo) -> String {
    let creator = s.creator.map_or_else(|| "creator dead".to_string(), |c| format!("creator {} dead", c.pid));
    match attachments_text(&s.attachments) {
        Some(a) => format!("{creator}; every attached process dead ({a})"),
        None => format!("{creator}; nothing attached"),
    }
}

/// Why a segment that is not stale is kept: its problem, or who is (or may be) alive.
fn kept_reason(s: &SegmentInfo) -> String {
    if let Some(p) = &s.problem {
        return format!("problem: {p} (never removed automatically)");
    }
    let mut why = Vec::new();
    match (s.creator, s.creator_alive) {
        (None, _) => why.push("its creator is not recorded".to_string()),
        (Some(_), Some(Liveness::Dead)) => {}
        (Some(c), Some(Liveness::Alive)) => why.push(format!("creator {} alive", c.pid)),
        (Some(c), _) => why.push(format!("creator {} may be alive (liveness unknown)", c.pid)),
    }
    let live: Vec<Attachment> = s.attachments.iter().filter(|a| a.liveness != Liveness::Dead).copied().collect();
    if let Some(a) = attachments_text(&live) {
        why.push(format!("attached and not dead: {a}"));
    }
    if why.is_empty() {
        // Not stale, but no reason found: cannot happen with today's rule; say so rather than guess.
        why.push("not stale".to_string());
    }
    why.join("; ")
}

/// Why a segment that was stale when listed was not removed.
fn not_removed_reason(s: &SegmentInfo) -> String {
    format!(
        "was stale when listed ({}), but not removed: it changed or vanished meanwhile, or another user owns it",
        stale_reason(s)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js(s: &str) -> String {
        let mut out = String::new();
        json_string(&mut out, s);
        out
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(js(""), r#""""#);
        assert_eq!(js("plain-name_1.x"), r#""plain-name_1.x""#);
        assert_eq!(js(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(js("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(js("\u{0}\u{1}\u{1f}\u{7f}"), r#""\u0000\u0001\u001f\u007f""#);
        assert_eq!(js("é\u{fffd}😀/"), "\"é\u{fffd}😀/\"");
        assert_eq!(js("\u{2028}\u{2029}"), r#""\u2028\u2029""#);
    }

    #[test]
    fn objects_are_comma_separated() {
        let mut o = JsonObject::new();
        assert_eq!(JsonObject::new().finish(), "{}");
        o.str("a", "x");
        o.raw("b", "1");
        o.opt_str("c", None);
        assert_eq!(o.finish(), r#"{"a":"x","b":1,"c":null}"#);
    }

    #[test]
    fn sizes_are_readable() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1 KiB");
        assert_eq!(human_size(68 * 1024), "68 KiB");
        assert_eq!(human_size(1536 * 1024), "1.5 MiB");
        assert_eq!(human_size((1 << 20) + 4096), "1028 KiB");
        assert_eq!(human_size(1025), "1025 B");
        assert_eq!(human_size(1 << 30 | 1), "1.0 GiB");
        assert_eq!(human_size(u64::MAX), "16.0 EiB");
        assert_eq!(human_size(1 << 60), "1 EiB");
    }

    #[test]
    fn control_characters_are_not_printed() {
        assert_eq!(printable("a\nb\u{1b}[2Jc\u{7f}"), "a\\nb\\u{1b}[2Jc\\u{7f}");
        assert_eq!(printable("ok-é"), "ok-é");
    }

    #[test]
    fn attachments_group_by_process() {
        let a = |slot, pid, role, liveness| Attachment { slot, pid, start_time: u64::from(pid), role, liveness };
        let atts = [
            a(0, 10, "handle", Liveness::Alive),
            a(1, 20, "receiver", Liveness::Dead),
            a(2, 10, "sender", Liveness::Alive),
        ];
        assert_eq!(attachments_text(&atts).unwrap(), "10 alive: handle, sender; 20 dead: receiver");
        assert_eq!(attachments_text(&[]), None);
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
