//! The server process's CPU time, page faults and resident memory, read
//! from `/proc`.

/// CPU time (user + system, ms) and minor page faults of `pid` so far, from
/// `/proc/PID/stat`.
pub fn cpu_and_faults(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// Parses `/proc/PID/stat`: fields 10 (minflt), 14 (utime) and 15 (stime),
/// counted after the command name, which may hold spaces and parentheses.
pub(crate) fn parse_stat(stat: &str) -> Option<(f64, u64)> {
    let rest: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // `rest[0]` is field 3 (state).
    let minflt: u64 = rest.get(7)?.parse().ok()?;
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(((utime + stime) as f64 * 1000.0 / hz, minflt))
}

/// Resident memory of `pid` from `/proc/PID/statm` (one line, cheap to read).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    Some(pages * page)
}
