//! Threads: whether this process may fork freely, locks that survive a
//! panicking holder, and the single-threaded async runtimes the shim's
//! processes and serving threads use.

use std::sync::{Mutex, MutexGuard};

/// Whether this process has one thread, so a forked child may run anything.
pub fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
}

/// Locks `m`, taking over a lock whose holder panicked: the shim's state is
/// kept consistent under every lock by construction, and one failed call must
/// not wedge every later one.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A current-thread tokio runtime with I/O and timers.
pub fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
