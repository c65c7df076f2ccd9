#![cfg(not(shmq_loom))] // drives the public API, which loom builds do not have
//! The `shmq` command-line tool (feature `cli`), run as a real process against real segments.
//!
//! The segments are real: channels of this process (alive), and channels of children (this test
//! binary re-executed in a child role, see `common::Scope::spawn`) that SIGKILL themselves (dead
//! creator and attachments). Other tests create their own `shmq.*` segments at the same time, so
//! every assertion is about this file's own names, and everything that removes anything is
//! narrowed with `--prefix` to this test's names. Reading the whole listing (`list`, `list
//! --json`, `clean --dry-run`) is fine: it changes nothing.

mod common;

use common::*;
use shmq::process::ProcessId;
use shmq::{Config, mpsc, shm_path};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
#[ignore = "entry point of the child processes of the other tests; does nothing when run directly"]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else { return };
    match role.as_str() {
        // Create an MPSC channel, attach as sender and receiver, die.
        "mpsc_create_attach_die" => {
            let ch = mpsc::Channel::create(&env_var("SHMQ_IT_NAME"), &Config::new()).unwrap();
            let tx = ch.sender().unwrap();
            let _rx = ch.receiver().unwrap();
            tx.send(b"left behind").unwrap();
            report("start_time", ProcessId::me().start_time);
            // SAFETY: kill(2) on our own pid; SIGKILL ends the process at once, no cleanup runs.
            unsafe { libc::kill(std::process::id() as i32, libc::SIGKILL) };
            unreachable!("SIGKILL did not end the process");
        }
        other => panic!("unknown child role {other:?}"),
    }
}

/// Run the `shmq` binary with `args` (stdin closed) and collect what it printed.
fn shmq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shmq"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running shmq {args:?}: {e}"))
}

/// Run `shmq` with `args`, require exit status 0 and an empty stderr, and return stdout.
fn shmq_ok(args: &[&str]) -> String {
    let out = shmq(args);
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "shmq {args:?} failed: {}\n{stdout}\n{stderr}", out.status);
    assert!(stderr.is_empty(), "shmq {args:?} wrote to stderr: {stderr}");
    stdout
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// A child that created a channel `name` (MPSC, attached as sender and receiver) and was killed.
fn dead_channel(scope: &Scope, name: &str) -> ProcessId {
    let f = scope.spawn("mpsc_create_attach_die", &[("SHMQ_IT_NAME", name)]).wait(CHILD_TIMEOUT);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(f.status.signal(), Some(libc::SIGKILL), "the child should have been killed\n{}", f.output());
    let id = ProcessId { pid: f.pid, start_time: f.report_u64("start_time") };
    assert_eq!(id.liveness(), shmq::process::Liveness::Dead);
    id
}

// ---------------------------------------------------------------------------------------------
// The table of `shmq list`

/// The rows of `shmq list`'s table, by name: column name -> cell. Columns are cut where the
/// header's titles start. Also returns each row's problem line, if any.
fn table(out: &str) -> HashMap<String, (HashMap<String, String>, Option<String>)> {
    let mut lines = out.lines();
    let header = lines.next().expect("a header line");
    assert!(header.starts_with("NAME "), "not a table header: {header:?}\n{out}");
    let titles = ["NAME", "FLAVOUR", "STATE", "SIZE", "CREATOR", "TX/RX", "STALE", "ATTACHED"];
    let starts: Vec<usize> = titles
        .iter()
        .map(|t| header.find(&format!("{t} ")).or_else(|| header.find(t)).unwrap_or_else(|| panic!("no {t} column")))
        .collect();
    let mut rows: HashMap<String, (HashMap<String, String>, Option<String>)> = HashMap::new();
    let mut last: Option<String> = None;
    for line in lines.by_ref() {
        if line.is_empty() {
            break; // the summary follows
        }
        if let Some(p) = line.strip_prefix("  problem: ") {
            let name = last.clone().expect("a problem line follows a row");
            rows.get_mut(&name).unwrap().1 = Some(p.to_string());
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        let cell = |i: usize| -> String {
            let from = starts[i].min(chars.len());
            let to = if i + 1 < starts.len() { starts[i + 1].min(chars.len()) } else { chars.len() };
            chars[from..to].iter().collect::<String>().trim().to_string()
        };
        let cells: HashMap<String, String> = (0..titles.len()).map(|i| (titles[i].to_string(), cell(i))).collect();
        let name = cells["NAME"].clone();
        last = Some(name.clone());
        rows.insert(name, (cells, None));
    }
    let summary: Vec<&str> = lines.collect();
    assert_eq!(summary.len(), 1, "one summary line after the table: {summary:?}\n{out}");
    rows
}

/// `"PID liveness: role, role; PID liveness: role"` -> {(pid, liveness) -> sorted roles}.
fn attached(cell: &str) -> HashMap<(u32, String), Vec<String>> {
    let mut m = HashMap::new();
    if cell == "-" {
        return m;
    }
    for group in cell.split("; ") {
        let (who, roles) = group.split_once(": ").unwrap_or_else(|| panic!("bad attachment group {group:?}"));
        let (pid, liveness) = who.split_once(' ').unwrap_or_else(|| panic!("bad attachment group {group:?}"));
        let mut roles: Vec<String> = roles.split(", ").map(str::to_string).collect();
        roles.sort();
        m.insert((pid.parse().expect("pid"), liveness.to_string()), roles);
    }
    m
}

// ---------------------------------------------------------------------------------------------
// A tiny, strict JSON parser for the `--json` lines (no serde in this crate).

#[derive(Clone, Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    /// The number's text (only non-negative integers are expected).
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser { b: text.as_bytes(), i: 0 };
        let v = p.value()?;
        p.ws();
        if p.i != p.b.len() {
            return Err(format!("trailing text at byte {}", p.i));
        }
        Ok(v)
    }

    fn get(&self, key: &str) -> &Json {
        let Json::Obj(fields) = self else { panic!("not an object: {self:?}") };
        let mut found = fields.iter().filter(|(k, _)| k == key);
        let v = found.next().map(|(_, v)| v).unwrap_or_else(|| panic!("no field {key:?} in {self:?}"));
        assert!(found.next().is_none(), "field {key:?} twice in {self:?}");
        v
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    fn u64(&self) -> u64 {
        match self {
            Json::Num(n) => n.parse().unwrap_or_else(|_| panic!("not a u64: {n}")),
            other => panic!("not a number: {other:?}"),
        }
    }

    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            other => panic!("not an array: {other:?}"),
        }
    }

    fn keys(&self) -> Vec<&str> {
        let Json::Obj(fields) = self else { panic!("not an object: {self:?}") };
        fields.iter().map(|(k, _)| k.as_str()).collect()
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, lit: &str) -> Result<(), String> {
        if self.b[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(format!("expected {lit:?} at byte {}", self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.peek().ok_or("unexpected end")? {
            b'n' => self.eat("null").map(|()| Json::Null),
            b't' => self.eat("true").map(|()| Json::Bool(true)),
            b'f' => self.eat("false").map(|()| Json::Bool(false)),
            b'"' => self.string().map(Json::Str),
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(format!("expected ',' or ']' at byte {}", self.i)),
                    }
                }
            }
            b'{' => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(fields));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.ws();
                    self.eat(":")?;
                    fields.push((key, self.value()?));
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(fields));
                        }
                        _ => return Err(format!("expected ',' or '}}' at byte {}", self.i)),
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = self.i;
                while matches!(self.peek(), Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
                    self.i += 1;
                }
                Ok(Json::Num(String::from_utf8(self.b[start..self.i].to_vec()).unwrap()))
            }
            c => Err(format!("unexpected {:?} at byte {}", c as char, self.i)),
        }
    }

    /// A string literal; raw control characters are rejected, as RFC 8259 requires.
    fn string(&mut self) -> Result<String, String> {
        self.eat("\"")?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let c = self.peek().ok_or("unterminated string")?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = self.peek().ok_or("unterminated escape")?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                self.eat("\\u")?;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err("unpaired surrogate".into());
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            char::from_u32(code).ok_or("bad \\u escape")?
                        }
                        other => return Err(format!("bad escape \\{}", other as char)),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c if c < 0x20 => return Err(format!("raw control character {c:#04x} in a string")),
                c => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let h = self.b.get(self.i..self.i + 4).ok_or("short \\u escape")?;
        let h = std::str::from_utf8(h).map_err(|e| e.to_string())?;
        self.i += 4;
        u32::from_str_radix(h, 16).map_err(|e| e.to_string())
    }
}

/// Every line of `out` parsed as one JSON object.
fn json_lines(out: &str) -> Vec<Json> {
    out.lines()
        .map(|l| {
            let v = Json::parse(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(matches!(v, Json::Obj(_)), "not an object: {l}");
            v
        })
        .collect()
}

/// The objects among `lines` whose `name` is `name` (exactly one expected).
fn by_name<'a>(lines: &'a [Json], name: &str) -> &'a Json {
    let mut hits = lines.iter().filter(|j| j.get("name").str() == name);
    let hit = hits.next().unwrap_or_else(|| panic!("{name} not in the JSON output"));
    assert!(hits.next().is_none(), "{name} twice in the JSON output");
    hit
}

#[test]
fn the_json_parser_is_strict() {
    let v = Json::parse(r#" {"a":[1,true,null,{}],"b":"x\"\\\n\u00e9\ud83d\ude00"} "#).unwrap();
    assert_eq!(v.get("a").arr().len(), 4);
    assert_eq!(v.get("b").str(), "x\"\\\né😀");
    for bad in ["{", r#"{"a":1,}"#, "\"raw\nnewline\"", r#""\x""#, "{} {}", r#""\ud800""#] {
        assert!(Json::parse(bad).is_err(), "{bad:?} parsed");
    }
}

// ---------------------------------------------------------------------------------------------
// The tests

/// A live channel of this process and a channel whose creator (a child) was SIGKILLed: `list`
/// shows both with the right fields (table and JSON), `clean --dry-run` names the dead one
/// without removing anything, and `clean` removes it while the live one survives and still works.
#[test]
fn list_and_clean_a_killed_creators_channel() {
    let scope = Scope::new("cli");
    let prefix = scope.prefix().to_string();
    let live = scope.name("live");
    let dead = scope.name("dead");
    let me = ProcessId::me();
    let ch = mpsc::Channel::create(&live, &Config::new().capacity(64 * 1024)).unwrap();
    let tx = ch.sender().unwrap();
    let killed = dead_channel(&scope, &dead);
    let live_size = std::fs::metadata(shm_path(&live)).unwrap().len();
    assert_eq!(live_size, 64 * 1024 + 4096, "a 4 KiB header and the ring");

    // The table, unfiltered (other tests' segments may be in it) and narrowed to ours.
    for args in [&["list"][..], &["list", "--prefix", &prefix]] {
        let out = shmq_ok(args);
        let rows = table(&out);
        let (l, problem) = rows.get(&live).unwrap_or_else(|| panic!("{live} not listed by {args:?}:\n{out}"));
        assert_eq!(problem, &None, "{out}");
        assert_eq!(l["FLAVOUR"], "mpsc");
        assert_eq!(l["STATE"], "ACTIVE");
        assert_eq!(l["SIZE"], "68 KiB");
        assert_eq!(l["CREATOR"], format!("{} alive", me.pid));
        assert_eq!(l["TX/RX"], "1/0");
        assert_eq!(l["STALE"], "no");
        let want = HashMap::from([((me.pid, "alive".to_string()), vec!["handle".to_string(), "sender".to_string()])]);
        assert_eq!(attached(&l["ATTACHED"]), want, "{out}");

        let (d, problem) = rows.get(&dead).unwrap_or_else(|| panic!("{dead} not listed by {args:?}:\n{out}"));
        assert_eq!(problem, &None, "{out}");
        assert_eq!((d["FLAVOUR"].as_str(), d["STATE"].as_str()), ("mpsc", "ACTIVE"));
        assert_eq!(d["CREATOR"], format!("{} dead", killed.pid));
        assert_eq!(d["TX/RX"], "1/1");
        assert_eq!(d["STALE"], "yes");
        let roles = ["handle", "receiver", "sender"].map(String::from).to_vec();
        assert_eq!(attached(&d["ATTACHED"]), HashMap::from([((killed.pid, "dead".to_string()), roles)]), "{out}");
        if args.len() > 1 {
            assert_eq!(rows.len(), 2, "--prefix shows only ours:\n{out}");
            assert!(out.ends_with("\n2 segments, 1 stale (`shmq clean` removes them), 0 with a problem\n"), "{out}");
        }
    }

    // JSON lines: every line of the whole listing parses (whatever other tests left there), and
    // ours carry the same facts.
    let all = json_lines(&shmq_ok(&["list", "--json"]));
    let mine = json_lines(&shmq_ok(&["list", "--json", "--prefix", &prefix]));
    assert_eq!(mine.len(), 2);
    for lines in [&all, &mine] {
        let l = by_name(lines, &live);
        let keys = [
            "name",
            "path",
            "size_bytes",
            "published",
            "flavor",
            "state",
            "capacity",
            "creator",
            "senders",
            "receivers",
            "attachments",
            "stale",
            "problem",
        ];
        assert_eq!(l.keys(), keys);
        assert_eq!(l.get("path").str(), shm_path(&live).to_str().unwrap());
        assert_eq!(l.get("size_bytes").u64(), live_size);
        assert_eq!(l.get("published"), &Json::Bool(true));
        assert_eq!((l.get("flavor").str(), l.get("state").str()), ("mpsc", "ACTIVE"));
        assert_eq!(l.get("capacity").u64(), 64 * 1024);
        let c = l.get("creator");
        assert_eq!((c.get("pid").u64(), c.get("start_time").u64()), (u64::from(me.pid), me.start_time));
        assert_eq!(c.get("liveness").str(), "alive");
        assert_eq!((l.get("senders").u64(), l.get("receivers").u64()), (1, 0));
        let mut roles: Vec<&str> = l.get("attachments").arr().iter().map(|a| a.get("role").str()).collect();
        roles.sort();
        assert_eq!(roles, ["handle", "sender"]);
        for a in l.get("attachments").arr() {
            assert_eq!(a.keys(), ["slot", "pid", "start_time", "role", "liveness"]);
            assert_eq!((a.get("pid").u64(), a.get("liveness").str()), (u64::from(me.pid), "alive"));
            assert!(a.get("slot").u64() < 64);
        }
        assert_eq!((l.get("stale"), l.get("problem")), (&Json::Bool(false), &Json::Null));

        let d = by_name(lines, &dead);
        let c = d.get("creator");
        assert_eq!((c.get("pid").u64(), c.get("start_time").u64()), (u64::from(killed.pid), killed.start_time));
        assert_eq!(c.get("liveness").str(), "dead");
        assert_eq!((d.get("senders").u64(), d.get("receivers").u64()), (1, 1));
        let atts = d.get("attachments").arr();
        assert_eq!(atts.len(), 3);
        assert!(atts.iter().all(|a| a.get("pid").u64() == u64::from(killed.pid) && a.get("liveness").str() == "dead"));
        assert_eq!((d.get("stale"), d.get("problem")), (&Json::Bool(true), &Json::Null));
    }

    // Dry run: names the dead one, keeps the live one, removes nothing. Unfiltered too (it only
    // reads).
    let out = shmq_ok(&["clean", "--dry-run", "--prefix", &prefix]);
    assert!(out.starts_with("dry run: nothing is removed\n"), "{out}");
    let line_of = |out: &str, name: &str| -> String {
        let mut hits = out.lines().filter(|l| l.split_whitespace().any(|w| w == name));
        let hit = hits.next().unwrap_or_else(|| panic!("{name} not in:\n{out}")).to_string();
        assert!(hits.next().is_none(), "{name} on two lines:\n{out}");
        hit
    };
    let d = line_of(&out, &dead);
    assert!(d.starts_with("would remove  "), "{d}");
    assert!(d.contains(&format!("creator {} dead", killed.pid)), "{d}");
    let l = line_of(&out, &live);
    assert!(l.starts_with("kept  "), "{l}");
    assert!(l.contains(&format!("creator {} alive", me.pid)), "{l}");
    assert!(out.ends_with("\n1 segment would be removed, 1 kept\n"), "{out}");
    let d = line_of(&shmq_ok(&["clean", "--dry-run"]), &dead);
    assert!(d.starts_with("would remove  "), "{d}");
    let j = json_lines(&shmq_ok(&["clean", "--dry-run", "--json", "--prefix", &prefix]));
    assert_eq!(j.len(), 2);
    assert_eq!(by_name(&j, &dead).get("action").str(), "would_remove");
    assert_eq!(by_name(&j, &live).get("action").str(), "kept");
    assert_eq!(by_name(&j, &dead).keys(), ["name", "path", "action", "reason"]);
    assert!(exists(&shm_path(&dead)) && exists(&shm_path(&live)), "a dry run removed something");

    // The real thing.
    let out = shmq_ok(&["clean", "--prefix", &prefix]);
    assert!(line_of(&out, &dead).starts_with("removed  "), "{out}");
    assert!(line_of(&out, &live).starts_with("kept  "), "{out}");
    assert!(out.ends_with("\n1 segment removed, 1 kept\n"), "{out}");
    assert!(!exists(&shm_path(&dead)), "the dead channel's segment is still there");
    assert!(exists(&shm_path(&live)), "the live channel's segment was removed");
    tx.send(b"still works").unwrap();
    let mut rx = mpsc::Channel::open(&live, &Config::new()).unwrap().receiver().unwrap();
    assert_eq!(rx.try_recv().unwrap(), b"still works");

    // Again: nothing left to remove.
    let j = json_lines(&shmq_ok(&["clean", "--json", "--prefix", &prefix]));
    assert_eq!(j.len(), 1);
    assert_eq!((by_name(&j, &live).get("action").str()), "kept");

    drop((rx, tx));
    ch.unlink().unwrap();
    drop(ch);
    scope.finish();
}

/// Entries that are not usable segments (random bytes under a name full of characters that need
/// escaping, and a 10-byte file) are listed with their problem, escaped in the table (no raw
/// control character reaches the terminal) and in JSON (the name round-trips exactly), and
/// `clean` keeps them.
#[test]
fn broken_entries_are_listed_with_their_problem_and_kept() {
    let scope = Scope::new("clibad");
    let prefix = scope.prefix().to_string();
    let evil = format!("{prefix}evil\"\\\t\n\u{1b}[2Jé\u{7f}");
    let short = format!("{prefix}short");
    let mut random = vec![0u8; 8192];
    SplitMix64::new(0xC11).fill(&mut random);
    for (name, bytes) in [(&evil, &random[..]), (&short, &random[..10])] {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(shm_path(name))
            .expect("create file");
        f.write_all(bytes).expect("write file");
    }

    let out = shmq_ok(&["list", "--prefix", &prefix]);
    assert!(!out.contains(['\t', '\u{1b}', '\u{7f}']), "raw control characters in the table:\n{out}");
    let rows = table(&out);
    assert_eq!(rows.len(), 2, "{out}");
    let shown = format!("{prefix}evil\"\\\\t\\n\\u{{1b}}[2Jé\\u{{7f}}");
    let (e, problem) = rows.get(&shown).unwrap_or_else(|| panic!("{shown} not in:\n{out}"));
    assert!(problem.is_some(), "{out}");
    assert_eq!((e["FLAVOUR"].as_str(), e["CREATOR"].as_str(), e["STALE"].as_str()), ("-", "-", "no"), "{out}");
    assert_eq!(e["SIZE"], "8 KiB");
    let (s, problem) = &rows[&short];
    assert!(problem.as_deref().unwrap().contains("too small"), "{out}");
    assert_eq!((s["SIZE"].as_str(), s["STALE"].as_str()), ("10 B", "no"));
    assert!(out.ends_with("\n2 segments, 0 stale, 2 with a problem\n"), "{out}");

    let j = json_lines(&shmq_ok(&["list", "--json", "--prefix", &prefix]));
    assert_eq!(j.len(), 2);
    let e = by_name(&j, &evil); // the exact name, control characters and all
    assert_eq!(e.get("path").str(), shm_path(&evil).to_str().unwrap());
    assert_eq!((e.get("size_bytes").u64(), e.get("stale")), (8192, &Json::Bool(false)));
    assert_eq!((e.get("creator"), e.get("flavor")), (&Json::Null, &Json::Null));
    assert!(!e.get("problem").str().is_empty());
    assert!(by_name(&j, &short).get("problem").str().contains("too small"));

    for args in [&["clean", "--dry-run", "--prefix", &prefix][..], &["clean", "--prefix", &prefix]] {
        let out = shmq_ok(args);
        assert!(!out.contains(['\t', '\u{1b}', '\u{7f}']), "raw control characters:\n{out}");
        let kept: Vec<&str> = out.lines().filter(|l| l.starts_with("kept  ")).collect();
        assert_eq!(kept.len(), 2, "{out}");
        assert!(kept.iter().all(|l| l.contains("problem: ")), "{out}");
        assert!(exists(&shm_path(&evil)) && exists(&shm_path(&short)), "{args:?} removed a broken entry");
    }

    for name in [&evil, &short] {
        std::fs::remove_file(shm_path(name)).unwrap();
    }
    scope.finish();
}

/// Nothing matches: a plain message, status 0.
#[test]
fn an_empty_listing_says_so() {
    let scope = Scope::new("cliempty");
    let prefix = scope.prefix();
    assert_eq!(shmq_ok(&["list", "--prefix", prefix]), format!("no shmq segments named {prefix}* in /dev/shm\n"));
    assert_eq!(shmq_ok(&["list", "--json", "--prefix", prefix]), "");
    let out = shmq_ok(&["clean", "--prefix", prefix]);
    assert_eq!(out, format!("no shmq segments named {prefix}* in /dev/shm\n"));
    scope.finish();
}

/// Usage errors exit with 2 and a message on stderr; `--help` exits with 0 and describes the
/// subcommands and their options.
#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    for args in [&[][..], &["frobnicate"], &["list", "--bogus"], &["clean", "--prefix"], &["list", "extra"]] {
        let out = shmq(args);
        assert_eq!(out.status.code(), Some(2), "shmq {args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "shmq {args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("error:") || stderr.contains("Usage: shmq"), "shmq {args:?}: {out:?}");
        assert!(!stderr.contains("panicked"), "shmq {args:?}: {stderr}");
    }
    let help = shmq_ok(&["--help"]);
    for want in ["list", "clean", "stale", "Exit status"] {
        assert!(help.contains(want), "{want:?} not in --help:\n{help}");
    }
    let help = shmq_ok(&["list", "--help"]);
    assert!(help.contains("--json") && help.contains("--prefix"), "{help}");
    let help = shmq_ok(&["clean", "--help"]);
    assert!(help.contains("--dry-run") && help.contains("--json") && help.contains("never removed"), "{help}");
    assert!(shmq_ok(&["--version"]).starts_with("shmq "));
}

/// An error (here: stdout is a full device) exits with 1 and a message on stderr, no panic.
#[test]
fn an_error_exits_1_with_a_message() {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("open /dev/full");
    let out = Command::new(env!("CARGO_BIN_EXE_shmq"))
        .args(["list", "--prefix", "cli-no-such-prefix-"])
        .stdin(Stdio::null())
        .stdout(full)
        .output()
        .expect("run shmq");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.starts_with("shmq: error: writing the output: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `shmq clean` without `--prefix` goes through `shmq::remove_stale`, which acts on every stale
/// segment of the machine, other tests' included: run it by hand
/// (`cargo test --features cli --test cli -- --ignored machine_wide`).
#[test]
#[ignore = "removes every stale shmq segment of the machine, not only this test's"]
fn machine_wide_clean_removes_a_dead_channel_and_keeps_a_live_one() {
    let scope = Scope::new("cliall");
    let live = scope.name("live");
    let dead = scope.name("dead");
    let ch = mpsc::Channel::create(&live, &Config::new()).unwrap();
    let killed = dead_channel(&scope, &dead);
    let out = shmq_ok(&["clean"]);
    let line = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().any(|w| w == name))
            .unwrap_or_else(|| panic!("{name} not in:\n{out}"))
            .to_string()
    };
    assert!(line(&dead).starts_with("removed  "), "{out}");
    assert!(line(&dead).contains(&format!("creator {} dead", killed.pid)), "{out}");
    assert!(line(&live).starts_with("kept  "), "{out}");
    assert!(!exists(&shm_path(&dead)) && exists(&shm_path(&live)));
    ch.unlink().unwrap();
    drop(ch);
    scope.finish();
}
