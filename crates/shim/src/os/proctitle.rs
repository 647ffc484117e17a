//! Rewriting this process's command line in place, as `setproctitle` does,
//! for the processes that are forks rather than executions of the binary
//! (the daemon, the zygote, container processes), so `ps` and the tests tell
//! them apart.

/// This process's argument area, `[arg_start, arg_end)` from
/// `/proc/self/stat`.
fn arg_area() -> Option<&'static mut [u8]> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<usize>().ok());
    let (start, end) = (field(48)?, field(49)?);
    if end <= start {
        return None;
    }
    // SAFETY: [arg_start, arg_end) is this process's own argument area, at
    // the top of its main thread's stack: mapped, writable, and only read
    // through std's saved argv, which these processes no longer consult
    // once rewritten (argv[0], which node mode reads, is never changed).
    Some(unsafe {
        std::slice::from_raw_parts_mut(
            std::ptr::with_exposed_provenance_mut::<u8>(start),
            end - start,
        )
    })
}

/// Blanks a last argument equal to `action` (the forked daemon's `start`).
pub fn blank_last(action: &str) {
    let Some(area) = arg_area() else { return };
    let tail = [b"\0", action.as_bytes(), b"\0"].concat();
    if area.ends_with(&tail) {
        let n = area.len();
        area[n - tail.len() + 1..n - 1].fill(0);
    }
}

/// Keeps argv[0] and replaces every other argument with `arg`, if it fits;
/// the rest of the area is zeroed.
pub fn replace_args(arg: &[u8]) {
    let Some(area) = arg_area() else { return };
    let Some(argv0) = area.iter().position(|b| *b == 0) else {
        return;
    };
    let from = argv0 + 1;
    if from + arg.len() + 1 > area.len() {
        return;
    }
    area[from..from + arg.len()].copy_from_slice(arg);
    area[from + arg.len()..].fill(0);
}
