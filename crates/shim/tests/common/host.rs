//! Facts about the host's processes, for the leak checks of both tiers and
//! the memory figures of the benchmarks, and the containerd set-up the tiers
//! share.
#![allow(dead_code)]

/// Pids of the processes whose command line contains both `name` and
/// `needle` (e.g. a shim binary and a containerd's address).
pub fn processes_matching(name: &str, needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.contains(name) && cmdline.contains(needle)).then_some(pid)
        })
        .collect()
}

/// Proportional set size of a process, in KiB.
pub fn pss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Every process whose cmdline names `shim` and mentions `needle`, plus all
/// their descendants.
pub fn shim_tree(shim: &str, needle: &str) -> Vec<u32> {
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    let mut tree = processes_matching(shim, needle);
    loop {
        let before = tree.len();
        for p in &all {
            if !tree.contains(p) && ppid(*p).is_some_and(|pp| tree.contains(&pp)) {
                tree.push(*p);
            }
        }
        if tree.len() == before {
            return tree;
        }
    }
}

/// The plugins a test containerd does without, as a TOML list: snapshotters
/// that cannot load here and tracing, and the CRI unless the tier drives it.
pub fn disabled_plugins(cri: bool, v2: bool) -> String {
    let mut names = vec![
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.zfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.snapshotter.v1.aufs",
        "io.containerd.tracing.processor.v1.otlp",
        "io.containerd.internal.v1.tracing",
    ];
    if !cri {
        names.push("io.containerd.grpc.v1.cri");
    }
    if v2 {
        names.extend([
            "io.containerd.snapshotter.v1.erofs",
            "io.containerd.cri.v1.images",
            "io.containerd.cri.v1.runtime",
        ]);
    }
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}
