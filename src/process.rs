//! Who a process is: its pid plus its start time, so that a reused pid is not mistaken for the
//! process that created a segment.

/// Start time of process `pid` in clock ticks since boot (field 22 of `/proc/PID/stat`), or
/// `None` if the process does not exist or the file cannot be parsed.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/PID/stat` line. Field 2 is the command name in parentheses and may itself
/// contain spaces and ')', so counting starts after the *last* ')'.
fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')' come field 3 (state) onwards; field 22 is the 20th of them.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// This process: (pid, start time). The start time is 0 if /proc is not mounted.
pub(crate) fn me() -> (u32, u64) {
    let pid = std::process::id();
    (pid, start_time(pid).unwrap_or(0))
}

#[cfg(all(test, not(shmq_loom)))]
mod tests {
    use super::*;

    #[test]
    fn parses_field_22_even_with_parens_in_the_name() {
        let line = "1234 (a) b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 50";
        assert_eq!(parse_start_time(line), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
        assert_eq!(parse_start_time("1 (x) S 1 2"), None);
    }

    #[test]
    fn my_start_time_is_known_and_stable() {
        let (pid, t) = me();
        assert_eq!(pid, std::process::id());
        assert!(t > 0);
        assert_eq!(start_time(pid), Some(t));
    }
}
