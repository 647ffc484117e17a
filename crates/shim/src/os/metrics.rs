//! Container metrics in containerd's `io.containerd.cgroups.v1.Metrics` form.
//!
//! On cgroup v1 (these machines' hybrid layout included) the files are read
//! here directly: the `containerd-shim` crate's collector only understands
//! v2's `cpu.stat`, and reports zero CPU on v1. On a v2 host the crate's
//! collector is used.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat, Throttle,
};
use containerd_shim::protos::protobuf::MessageField;

const ROOT: &str = "/sys/fs/cgroup";

/// Metrics of an app the node process serves (no cgroup of its own): its
/// instances' CPU time and the linear memory they hold.
pub fn hosted(usage: wisp_runtime::meter::Usage) -> Metrics {
    let mut m = Metrics::new();
    let mut cpu_usage = CPUUsage::new();
    cpu_usage.total = usage.cpu_ns;
    cpu_usage.user = usage.cpu_ns;
    let mut cpu = CPUStat::new();
    cpu.usage = MessageField::some(cpu_usage);
    m.cpu = MessageField::some(cpu);
    let mut entry = MemoryEntry::new();
    entry.usage = usage.memory_bytes;
    entry.max = usage.peak_memory_bytes;
    let mem = MemoryStat {
        rss: usage.memory_bytes,
        total_rss: usage.memory_bytes,
        active_anon: usage.memory_bytes,
        total_active_anon: usage.memory_bytes,
        usage: MessageField::some(entry),
        ..Default::default()
    };
    m.memory = MessageField::some(mem);
    m
}

/// Metrics of the cgroup `pid` is in.
pub fn collect(pid: u32) -> io::Result<Metrics> {
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        return containerd_shim::cgroup::collect_metrics(pid).map_err(io::Error::other);
    }
    let dirs = v1_dirs(pid)?;
    collect_v1(&dirs)
}

/// The cgroup directory of `pid` for `controller` (the unified one on v2).
pub fn cgroup_dir(pid: u32, controller: &str) -> Option<PathBuf> {
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        return Some(Path::new(ROOT).join(path.trim_start_matches('/')));
    }
    v1_dirs(pid).ok()?.remove(controller)
}

/// controller name -> cgroup dir of `pid`.
fn v1_dirs(pid: u32) -> io::Result<HashMap<String, PathBuf>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let mut dirs = HashMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            continue;
        }
        let mount = Path::new(ROOT).join(controllers);
        for c in controllers.split(',') {
            // Co-mounted controllers (cpu,cpuacct) live in one directory,
            // which may be named either way; the joint name is what exists.
            let base = if mount.exists() {
                mount.clone()
            } else {
                Path::new(ROOT).join(c)
            };
            dirs.insert(c.to_string(), base.join(path.trim_start_matches('/')));
        }
    }
    Ok(dirs)
}

fn read_u64(dir: &Path, file: &str) -> u64 {
    std::fs::read_to_string(dir.join(file))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn read_kv(dir: &Path, file: &str) -> HashMap<String, u64> {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// USER_HZ, the unit of `cpuacct.stat`; 100 on every Linux ABI in use.
const USER_HZ: u64 = 100;

fn collect_v1(dirs: &HashMap<String, PathBuf>) -> io::Result<Metrics> {
    let mut m = Metrics::new();
    if let Some(d) = dirs.get("cpuacct") {
        let stat = read_kv(d, "cpuacct.stat");
        let tick_ns = 1_000_000_000 / USER_HZ;
        let mut usage = CPUUsage::new();
        usage.total = read_u64(d, "cpuacct.usage");
        usage.user = stat.get("user").copied().unwrap_or(0) * tick_ns;
        usage.kernel = stat.get("system").copied().unwrap_or(0) * tick_ns;
        usage.per_cpu = std::fs::read_to_string(d.join("cpuacct.usage_percpu"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let mut cpu = CPUStat::new();
        cpu.usage = MessageField::some(usage);
        if let Some(c) = dirs.get("cpu") {
            let s = read_kv(c, "cpu.stat");
            let mut t = Throttle::new();
            t.periods = s.get("nr_periods").copied().unwrap_or(0);
            t.throttled_periods = s.get("nr_throttled").copied().unwrap_or(0);
            t.throttled_time = s.get("throttled_time").copied().unwrap_or(0);
            cpu.throttling = MessageField::some(t);
        }
        m.cpu = MessageField::some(cpu);
    }
    if let Some(d) = dirs.get("memory") {
        let s = read_kv(d, "memory.stat");
        let g = |k: &str| s.get(k).copied().unwrap_or(0);
        let entry = |prefix: &str| {
            let mut e = MemoryEntry::new();
            e.usage = read_u64(d, &format!("{prefix}usage_in_bytes"));
            e.max = read_u64(d, &format!("{prefix}max_usage_in_bytes"));
            e.limit = read_u64(d, &format!("{prefix}limit_in_bytes"));
            e.failcnt = read_u64(d, &format!("{prefix}failcnt"));
            MessageField::some(e)
        };
        let mem = MemoryStat {
            cache: g("cache"),
            rss: g("rss"),
            rss_huge: g("rss_huge"),
            mapped_file: g("mapped_file"),
            dirty: g("dirty"),
            writeback: g("writeback"),
            pg_pg_in: g("pgpgin"),
            pg_pg_out: g("pgpgout"),
            pg_fault: g("pgfault"),
            pg_maj_fault: g("pgmajfault"),
            inactive_anon: g("inactive_anon"),
            active_anon: g("active_anon"),
            inactive_file: g("inactive_file"),
            active_file: g("active_file"),
            unevictable: g("unevictable"),
            hierarchical_memory_limit: g("hierarchical_memory_limit"),
            hierarchical_swap_limit: g("hierarchical_memsw_limit"),
            total_cache: g("total_cache"),
            total_rss: g("total_rss"),
            total_rss_huge: g("total_rss_huge"),
            total_mapped_file: g("total_mapped_file"),
            total_dirty: g("total_dirty"),
            total_writeback: g("total_writeback"),
            total_pg_pg_in: g("total_pgpgin"),
            total_pg_pg_out: g("total_pgpgout"),
            total_pg_fault: g("total_pgfault"),
            total_pg_maj_fault: g("total_pgmajfault"),
            total_inactive_anon: g("total_inactive_anon"),
            total_active_anon: g("total_active_anon"),
            total_inactive_file: g("total_inactive_file"),
            total_active_file: g("total_active_file"),
            total_unevictable: g("total_unevictable"),
            usage: entry("memory."),
            swap: entry("memory.memsw."),
            kernel: entry("memory.kmem."),
            kernel_tcp: entry("memory.kmem.tcp."),
            ..Default::default()
        };
        m.memory = MessageField::some(mem);
    }
    if let Some(d) = dirs.get("pids") {
        let mut p = PidsStat::new();
        p.current = read_u64(d, "pids.current");
        // "max" (no limit) does not parse and reports 0, as runc does.
        p.limit = read_u64(d, "pids.max");
        m.pids = MessageField::some(p);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_cpu_and_memory() {
        if Path::new(ROOT).join("cgroup.controllers").exists() {
            return; // v2 host: the crate's collector is used.
        }
        // Burn a little CPU so the counters move.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        let m = collect(std::process::id()).unwrap();
        assert!(m.cpu.usage.total > 0, "{m:?}");
        assert!(m.memory.usage.usage > 0, "{m:?}");
    }
}
