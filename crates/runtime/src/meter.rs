//! What an app's instances use: linear memory held right now and CPU time
//! spent running the guest, per app.
//!
//! A process hosting many apps (the shim's node mode) has no cgroup per app,
//! so it cannot read these from the kernel; it counts them here instead. The
//! memory is what the guest's linear memories and tables grew to (each
//! instance's counted until its store is dropped), the CPU time is the
//! thread CPU clock across every poll of the guest's futures.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use wasmtime::{ResourceLimiter, StoreLimits};

/// Counters of one app, shared by all its instances.
#[derive(Debug, Default)]
pub struct Meter {
    memory: AtomicU64,
    peak_memory: AtomicU64,
    cpu_ns: AtomicU64,
    instances: AtomicU64,
}

/// A snapshot of a [`Meter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of linear memory and tables the live instances hold.
    pub memory_bytes: u64,
    /// The largest `memory_bytes` seen.
    pub peak_memory_bytes: u64,
    /// Thread CPU time spent in the guest's futures, in nanoseconds.
    pub cpu_ns: u64,
    /// Instances created so far.
    pub instances: u64,
}

impl Meter {
    pub fn usage(&self) -> Usage {
        Usage {
            memory_bytes: self.memory.load(Ordering::Relaxed),
            peak_memory_bytes: self.peak_memory.load(Ordering::Relaxed),
            cpu_ns: self.cpu_ns.load(Ordering::Relaxed),
            instances: self.instances.load(Ordering::Relaxed),
        }
    }

    /// Charges the metered poll running on this thread (see [`CpuTimed`])
    /// with its CPU time so far, and restarts its clock. A store is dropped
    /// inside its guest's last poll, before that poll's time is charged: this
    /// counts it first, so an instance that is gone has all its time counted.
    fn settle_running_poll(&self) {
        POLL_STARTED.with(|started| {
            if let Some(start) = started.get() {
                let now = thread_cpu_ns();
                self.cpu_ns
                    .fetch_add(now.saturating_sub(start), Ordering::Relaxed);
                started.set(Some(now));
            }
        });
    }

    fn grew(&self, bytes: u64) {
        let now = self.memory.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak_memory.fetch_max(now, Ordering::Relaxed);
    }
}

/// [`StoreLimits`] that also count what they allow into a [`Meter`].
pub struct MeteredLimits {
    limits: StoreLimits,
    meter: Option<Arc<Meter>>,
    held: u64,
}

impl MeteredLimits {
    pub fn new(limits: StoreLimits, meter: Option<&Arc<Meter>>) -> Self {
        if let Some(m) = meter {
            m.instances.fetch_add(1, Ordering::Relaxed);
        }
        Self {
            limits,
            meter: meter.cloned(),
            held: 0,
        }
    }

    fn count(&mut self, allowed: bool, current: usize, desired: usize) {
        if allowed && let Some(m) = &self.meter {
            let grown = desired.saturating_sub(current) as u64;
            m.grew(grown);
            self.held += grown;
        }
    }
}

impl ResourceLimiter for MeteredLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.limits.memory_growing(current, desired, maximum)?;
        self.count(ok, current, desired);
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.limits.table_growing(current, desired, maximum)?;
        // Table elements are pointer-sized.
        self.count(ok, current * 8, desired * 8);
        Ok(ok)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl Drop for MeteredLimits {
    fn drop(&mut self) {
        if let Some(m) = &self.meter {
            m.settle_running_poll();
            m.memory.fetch_sub(self.held, Ordering::Relaxed);
        }
    }
}

/// The calling thread's CPU time, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

thread_local! {
    /// The thread CPU time at which the running [`CpuTimed`] poll on this
    /// thread started, or was last settled; `None` outside one.
    static POLL_STARTED: Cell<Option<u64>> = const { Cell::new(None) };
}

pin_project_lite::pin_project! {
    /// A future whose polls are charged to a [`Meter`]'s CPU time.
    pub struct CpuTimed<F> {
        #[pin]
        inner: F,
        meter: Option<Arc<Meter>>,
    }
}

impl<F> CpuTimed<F> {
    pub fn new(inner: F, meter: Option<Arc<Meter>>) -> Self {
        Self { inner, meter }
    }
}

impl<F: Future> Future for CpuTimed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let Some(meter) = this.meter else {
            return this.inner.poll(cx);
        };
        let outer = POLL_STARTED.replace(Some(thread_cpu_ns()));
        let out = this.inner.poll(cx);
        let now = thread_cpu_ns();
        // Where the poll started, or was last settled.
        let since = POLL_STARTED.replace(outer).unwrap_or(now);
        meter
            .cpu_ns
            .fetch_add(now.saturating_sub(since), Ordering::Relaxed);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_counted_while_held_and_cpu_across_polls() {
        let meter = Arc::new(Meter::default());
        let mut a = MeteredLimits::new(StoreLimits::default(), Some(&meter));
        let mut b = MeteredLimits::new(StoreLimits::default(), Some(&meter));
        assert!(a.memory_growing(0, 65536, None).unwrap());
        assert!(b.memory_growing(0, 131072, None).unwrap());
        assert!(b.memory_growing(131072, 196608, None).unwrap());
        assert_eq!(meter.usage().memory_bytes, 65536 + 196608);
        drop(b);
        let u = meter.usage();
        assert_eq!(
            (u.memory_bytes, u.peak_memory_bytes, u.instances),
            (65536, 262144, 2)
        );
        drop(a);
        assert_eq!(meter.usage().memory_bytes, 0);

        let busy = CpuTimed::new(
            async {
                let mut x = 0u64;
                for i in 0..5_000_000u64 {
                    x = x.wrapping_add(std::hint::black_box(i));
                }
                x
            },
            Some(meter.clone()),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(busy);
        assert!(meter.usage().cpu_ns > 0);
    }

    /// A store is dropped inside its guest's last poll: its time is counted
    /// by then, not only when that poll returns.
    #[test]
    fn an_instance_gone_has_its_cpu_counted() {
        let meter = Arc::new(Meter::default());
        let seen = {
            let inside = meter.clone();
            CpuTimed::new(
                async move {
                    let limits = MeteredLimits::new(StoreLimits::default(), Some(&inside));
                    let mut x = 0u64;
                    for i in 0..5_000_000u64 {
                        x = x.wrapping_add(std::hint::black_box(i));
                    }
                    std::hint::black_box(x);
                    drop(limits);
                    inside.usage().cpu_ns
                },
                Some(meter.clone()),
            )
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let at_drop = rt.block_on(seen);
        assert!(at_drop > 0, "no CPU counted when the instance was gone");
        // The rest of the poll is still counted, once.
        assert!(meter.usage().cpu_ns >= at_drop);
    }
}
