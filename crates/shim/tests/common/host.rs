//! Facts about the host's processes, for the leak checks of both tiers.

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
