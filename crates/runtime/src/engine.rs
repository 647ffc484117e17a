//! The engine: a configured `wasmtime::Engine`, its epoch ticker and the code cache.
//!
//! One engine serves every app of a process, so compiled code and the instance pool
//! are shared. Epoch interruption is always on: a background thread advances the
//! epoch every [`EPOCH_TICK`], which lets running guests yield to the executor and
//! lets deadlines stop guests that never call the host. It ticks only while some
//! store of the engine is alive ([`Engine::running`]) and for a short linger after
//! the last one ends: an idle app costs no wake-ups, which matters when a node
//! holds a thousand idle pods, and an app serving requests one after another
//! costs no wake-up per request.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::cache::CodeCache;
use crate::config::{Config, MemoryInit, PoolingConfig};

/// How often the epoch advances: the granularity of deadlines and of the
/// cooperative yields of long-running guests.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Instance slots whose memory is returned to the kernel in one batch.
const DECOMMIT_BATCH: usize = 32;

/// Errors of building an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime refused the configuration.
    #[error("failed to configure the Wasm engine")]
    Config(#[source] wasmtime::Error),
}

/// How instances get their memory.
#[derive(Debug, Clone, PartialEq)]
pub enum Allocation {
    /// mmap per instance; right for one-shot `run`.
    OnDemand,
    /// Preallocated slots; right for serving many short-lived instances.
    Pooling(PoolingConfig),
}

/// Engine settings, usually derived from a [`Config`].
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Instance allocation strategy.
    pub allocation: Allocation,
    /// Cap on each linear memory, also sizing the pool's memory slots.
    pub max_memory: Option<u64>,
    /// Compiled-code cache directory; `None` disables caching.
    pub cache_dir: Option<PathBuf>,
    /// Start no thread before the first store: the epoch ticker starts with
    /// it, and a module compiles on the calling thread. For a process that
    /// must stay single-threaded until it has confined itself (the shim's
    /// container process). Otherwise the ticker starts with the engine, on
    /// the building thread, so it inherits that thread's cgroups rather
    /// than those of whichever app's thread makes the first store (node
    /// mode's apps each run in their pod's CPU cgroup).
    pub defer_threads: bool,
}

impl EngineSettings {
    /// Settings for serving: pooling allocator.
    pub fn for_serve(config: &Config) -> Self {
        Self {
            allocation: Allocation::Pooling(config.engine.pooling.clone()),
            max_memory: config.limits.max_memory.map(|b| b.0),
            cache_dir: config.engine.cache_dir.clone(),
            defer_threads: false,
        }
    }

    /// Settings for a one-shot run: on-demand allocation.
    pub fn for_run(config: &Config) -> Self {
        Self {
            allocation: Allocation::OnDemand,
            max_memory: config.limits.max_memory.map(|b| b.0),
            cache_dir: config.engine.cache_dir.clone(),
            defer_threads: false,
        }
    }
}

/// A configured engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: wasmtime::Engine,
    cache: Option<CodeCache>,
    ticker: Arc<EpochTicker>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("cache", &self.cache)
            .finish()
    }
}

/// The wasmtime engine of a one-shot run, built ahead of need by
/// [`prebuild_for_run`] and taken by the next [`Engine::new`] for a run.
static PREBUILT_FOR_RUN: std::sync::Mutex<Option<wasmtime::Engine>> = std::sync::Mutex::new(None);

/// Builds the wasmtime engine of a one-shot run (on-demand allocation) ahead
/// of time, for a process that forks others that each then make one
/// [`Engine`] for a run: the shim's zygote. The compiler's set-up (its CPU
/// feature probing, which traps to the hypervisor in a VM, and its settings)
/// is then done once, before the forks, rather than in every process.
///
/// Starts no thread and installs nothing process-wide beyond what any engine
/// does. Only one engine takes it: two engines sharing one epoch counter
/// would each advance the other's deadlines.
pub fn prebuild_for_run() -> Result<(), EngineError> {
    let settings = EngineSettings {
        allocation: Allocation::OnDemand,
        max_memory: None,
        cache_dir: None,
        defer_threads: false,
    };
    let engine = wasmtime::Engine::new(&wasmtime_config(&settings)).map_err(EngineError::Config)?;
    *PREBUILT_FOR_RUN.lock().unwrap_or_else(|p| p.into_inner()) = Some(engine);
    Ok(())
}

/// Whether a [`prebuild_for_run`] engine waits for its [`Engine`].
pub fn prebuilt_for_run() -> bool {
    PREBUILT_FOR_RUN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_some()
}

/// The wasmtime configuration of `settings`. For on-demand allocation it
/// depends on nothing in them (limits are the store's), which is what lets
/// [`prebuild_for_run`] build it ahead of time.
fn wasmtime_config(settings: &EngineSettings) -> wasmtime::Config {
    let mut cfg = wasmtime::Config::new();
    cfg.epoch_interruption(true);
    cfg.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable);
    cfg.parallel_compilation(!settings.defer_threads);
    if let Allocation::Pooling(p) = &settings.allocation {
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(
            p,
            settings.max_memory,
        )));
        cfg.memory_reservation(p.memory_reservation.0);
        // Fiber stacks go back to the pool dirty and resident unless zeroed;
        // with keep-resident 0 (return everything when idle, as after a
        // burst) they are decommitted like the memories.
        cfg.async_stack_zeroing(p.keep_resident.0 == 0);
        cfg.memory_guard_size(p.memory_guard.0);
        cfg.memory_init_cow(p.memory_init == MemoryInit::Cow);
    }
    cfg
}

impl Engine {
    /// Builds an engine and starts its epoch ticker (with the first store,
    /// under [`EngineSettings::defer_threads`]).
    pub fn new(settings: &EngineSettings) -> Result<Self, EngineError> {
        let prebuilt = match settings.allocation {
            Allocation::OnDemand if !settings.defer_threads => PREBUILT_FOR_RUN
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
            _ => None,
        };
        let inner = match prebuilt {
            Some(engine) => engine,
            None => {
                wasmtime::Engine::new(&wasmtime_config(settings)).map_err(EngineError::Config)?
            }
        };
        let ticker = EpochTicker::start(inner.clone());
        if !settings.defer_threads {
            ticker.thread();
        }
        Ok(Self {
            inner,
            cache: settings.cache_dir.clone().map(CodeCache::new),
            ticker: Arc::new(ticker),
        })
    }

    /// The wasmtime engine.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner
    }

    /// Keeps the epoch ticking while held: every store holds one, since its
    /// guest's deadline and yields need the epoch to advance.
    pub fn running(&self) -> Running {
        let t = &self.ticker;
        t.started.fetch_add(1, Ordering::Relaxed);
        t.active.fetch_add(1, Ordering::SeqCst);
        // Only a parked ticker needs waking: one that is still ticking through
        // its linger sees `active` on its next tick. Waking it on every 0 -> 1
        // (every request of an app serving one at a time) cost two context
        // switches per request.
        let thread = t.thread();
        if t.parked.load(Ordering::SeqCst) && t.parked.swap(false, Ordering::SeqCst) {
            thread.unpark();
        }
        Running {
            ticker: self.ticker.clone(),
        }
    }

    /// The code cache, if enabled.
    pub fn cache(&self) -> Option<&CodeCache> {
        self.cache.as_ref()
    }
}

fn pooling_config(p: &PoolingConfig, max_memory: Option<u64>) -> PoolingAllocationConfig {
    let n = p.total_instances;
    let mut pool = PoolingAllocationConfig::default();
    // A componentized C or Rust app instantiates a handful of core modules (the app,
    // the WASI adapter, the canonical-ABI shims) with one or two memories and tables.
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(4))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_memory_size(
            max_memory
                .unwrap_or(p.memory_reservation.0.max(64 << 10))
                .min(usize::MAX as u64) as usize,
        )
        // Keeping a little of each slot resident saves an madvise and the page
        // faults of re-touching it on the next request.
        .linear_memory_keep_resident(p.keep_resident.0 as usize)
        // With zeroing on (see Engine::new) a fiber stack is decommitted
        // whole when its instance ends.
        .async_stack_keep_resident(0)
        .table_keep_resident(p.keep_resident.0 as usize)
        // Returning memory to the kernel (madvise) costs a TLB shootdown on every
        // core running this process; batching amortizes it across instances.
        .decommit_batch_size(DECOMMIT_BATCH);
    pool
}

/// A live store's hold on the epoch ticker (see [`Engine::running`]).
pub struct Running {
    ticker: Arc<EpochTicker>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Running")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.ticker.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] while stores are alive,
/// until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    /// Live stores; at zero for [`EPOCH_LINGER`] the thread parks until
    /// [`Engine::running`].
    active: Arc<AtomicUsize>,
    /// Set by the thread just before it parks for want of stores.
    parked: Arc<AtomicBool>,
    /// Stores started since the allocator last returned free memory.
    started: Arc<AtomicUsize>,
    /// Epochs advanced so far (read by the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    ticks: Arc<AtomicU64>,
    /// The thread's body until [`Self::thread`] starts it.
    body: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    handle: std::sync::OnceLock<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: wasmtime::Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let parked = Arc::new(AtomicBool::new(false));
        let ticks = Arc::new(AtomicU64::new(0));
        let ticked = ticks.clone();
        let tick = move || {
            engine.increment_epoch();
            ticked.fetch_add(1, Ordering::Relaxed);
        };
        let flag = stop.clone();
        let asleep = parked.clone();
        let live = active.clone();
        let since_trim = started.clone();
        let body = Box::new(move || {
            // Parks until `running` unparks (or `timeout` passes). It
            // unparks once it sees `parked`, and an unpark before the
            // park makes it return at once; a store that came after the
            // caller's check but before `parked` was set is seen by the
            // check here.
            let park_while_idle = |timeout: Option<Duration>| {
                asleep.store(true, Ordering::SeqCst);
                if live.load(Ordering::SeqCst) == 0 && !flag.load(Ordering::Acquire) {
                    match timeout {
                        Some(t) => std::thread::park_timeout(t),
                        None => std::thread::park(),
                    }
                }
                asleep.store(false, Ordering::SeqCst);
            };
            let mut next = std::time::Instant::now() + EPOCH_TICK;
            // When the second trim of an idle spell is due.
            let mut trim_again_at: Option<std::time::Instant> = None;
            // When the last store ended (None while any is alive).
            let mut idle_since: Option<std::time::Instant> = None;
            while !flag.load(Ordering::Acquire) {
                if live.load(Ordering::SeqCst) == 0 {
                    let now = std::time::Instant::now();
                    let since = *idle_since.get_or_insert(now);
                    // Idle after a busy spell: hand the host allocations
                    // of its instances back to the kernel (see
                    // `release_free_memory`), off every request's path;
                    // and once more shortly after, for what the spell's
                    // connections freed as they closed.
                    if since_trim.load(Ordering::Relaxed) >= TRIM_AFTER_STORES {
                        since_trim.store(0, Ordering::Relaxed);
                        release_free_memory();
                        trim_again_at = Some(std::time::Instant::now() + TRIM_AGAIN_AFTER);
                    }
                    if trim_again_at.is_some_and(|at| now >= at) {
                        trim_again_at = None;
                        release_free_memory();
                    }
                    if now.duration_since(since) >= EPOCH_LINGER {
                        // Idle: no guest needs the epoch.
                        let seen = since_trim.load(Ordering::Relaxed);
                        park_while_idle(trim_again_at.map(|at| at.saturating_duration_since(now)));
                        if since_trim.load(Ordering::Relaxed) != seen {
                            // Woken by a store: linger again once it ends.
                            idle_since = None;
                        }
                        next = std::time::Instant::now() + EPOCH_TICK;
                        continue;
                    }
                    // Between requests: keep ticking through the linger,
                    // so that the next store needs no wake-up.
                } else {
                    idle_since = None;
                }
                // Parked rather than asleep, so that dropping the engine
                // wakes the thread at once: a command's process exits
                // right after, and a sleep would hold it up to a tick.
                let now = std::time::Instant::now();
                if now < next {
                    std::thread::park_timeout(next - now);
                    continue;
                }
                tick();
                next += EPOCH_TICK;
                if next < now {
                    // Fell behind (a stopped VM, a loaded machine):
                    // resume from now rather than catching up in a burst.
                    next = now + EPOCH_TICK;
                }
            }
        });
        Self {
            stop,
            active,
            parked,
            started,
            ticks,
            body: std::sync::Mutex::new(Some(body)),
            handle: std::sync::OnceLock::new(),
        }
    }

    /// The ticking thread, started on first use.
    fn thread(&self) -> &std::thread::Thread {
        self.handle
            .get_or_init(|| {
                let body = self
                    .body
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .expect("the ticker's body is taken once");
                std::thread::Builder::new()
                    .name("wisp-epoch".into())
                    .spawn(body)
                    .expect("spawn epoch thread")
            })
            .thread()
    }
}

/// How long the ticker keeps ticking after the last store ends before it
/// parks: an app serving requests one after another keeps it awake (no
/// wake-up per request), an idle one costs nothing after this.
const EPOCH_LINGER: Duration = Duration::from_millis(250);

/// Stores started in a busy spell after which going idle returns the
/// allocator's free memory: a burst of 100,000 requests leaves hundreds of MiB
/// of freed host state (stores, tables, buffers) in glibc's arenas, which it
/// would otherwise keep.
const TRIM_AFTER_STORES: usize = 1000;
/// When the second trim of an idle spell runs, after the first one ends:
/// by then the clients have closed the spell's connections (at 100,000
/// requests, 20 MiB of their buffers came free after the first trim).
const TRIM_AGAIN_AFTER: Duration = Duration::from_millis(200);

/// Returns the C allocator's free pages to the kernel (glibc `malloc_trim`:
/// whole free pages anywhere in its arenas, not only at their tops).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arenas' locks itself; it is safe to call
    // from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.handle.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks(e: &Engine) -> u64 {
        e.ticker.ticks.load(Ordering::Relaxed)
    }

    /// Waits up to 2 s for the ticker to advance past `from`.
    fn ticks_past(e: &Engine, from: u64) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            if ticks(e) > from {
                return true;
            }
            std::thread::sleep(EPOCH_TICK);
        }
        false
    }

    #[test]
    fn deferred_threads_start_with_the_first_store() {
        let mut settings = EngineSettings::for_run(&Config::default());
        settings.defer_threads = true;
        let e = Engine::new(&settings).unwrap();
        assert!(e.ticker.handle.get().is_none(), "a thread before any store");
        let before = ticks(&e);
        let running = e.running();
        assert!(e.ticker.handle.get().is_some());
        assert!(ticks_past(&e, before), "the ticker never ticked");
        drop(running);
        let eager = Engine::new(&EngineSettings::for_run(&Config::default())).unwrap();
        assert!(eager.ticker.handle.get().is_some(), "no ticker at build");
    }

    #[test]
    fn ticker_ticks_while_stores_live_lingers_then_parks_and_wakes() {
        let e = Engine::new(&EngineSettings::for_run(&Config::default())).unwrap();
        let running = e.running();
        let t0 = ticks(&e);
        assert!(ticks_past(&e, t0), "no tick while a store is alive");
        drop(running);
        // Still ticking in the linger: the next store finds it awake.
        let t1 = ticks(&e);
        assert!(ticks_past(&e, t1), "no tick right after the last store");
        // Then parked: no tick at all.
        std::thread::sleep(EPOCH_LINGER + Duration::from_millis(200));
        let idle = ticks(&e);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(ticks(&e), idle, "ticking while idle past the linger");
        // And woken by the next store.
        let _running = e.running();
        assert!(ticks_past(&e, idle), "a new store did not wake the ticker");
    }
}
