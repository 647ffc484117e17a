//! What each instance's store holds (the WASI and HTTP contexts, limits,
//! the live-instance count) and where guests' output goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::OutputFile;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::command::HasLimits;
use crate::meter::MeteredLimits;
use crate::wasi::OutboundPolicy;

/// Store state of a `wasi:http` instance.
pub struct ProxyState {
    pub(super) wasi: WasiCtx,
    pub(super) http: WasiHttpCtx,
    pub(super) table: ResourceTable,
    pub(super) hooks: OutboundPolicy,
    pub(super) limits: MeteredLimits,
    pub(super) _live: LiveGuard,
    pub(super) _epoch: crate::engine::Running,
}

impl WasiView for ProxyState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ProxyState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl HasLimits for ProxyState {
    fn limits(&mut self) -> &mut MeteredLimits {
        &mut self.limits
    }
}

/// Store state of a WAGI instance.
pub struct WagiState {
    pub(super) wasi: WasiP1Ctx,
    pub(super) limits: MeteredLimits,
    pub(super) _live: LiveGuard,
    pub(super) _epoch: crate::engine::Running,
}

impl HasLimits for WagiState {
    fn limits(&mut self) -> &mut MeteredLimits {
        &mut self.limits
    }
}

/// Counts live instances; one lives in each store's data.
pub(super) struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    pub(super) fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts requests waiting for an execution slot while it lives.
pub(super) struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    pub(super) fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where the guests' stdout and stderr go; `None` inherits the process's.
#[derive(Clone, Default)]
pub struct GuestOutput {
    pub stdout: Option<OutputFile>,
    pub stderr: Option<OutputFile>,
}

impl GuestOutput {
    /// Output to these files (a container's log FIFOs, say).
    pub fn files(stdout: Option<std::fs::File>, stderr: Option<std::fs::File>) -> Self {
        Self {
            stdout: stdout.map(OutputFile::new),
            stderr: stderr.map(OutputFile::new),
        }
    }

    pub(super) fn apply_stderr(&self, builder: &mut WasiCtxBuilder) {
        match &self.stderr {
            Some(f) => builder.stderr(f.clone()),
            None => builder.inherit_stderr(),
        };
    }

    pub(super) fn apply(&self, builder: &mut WasiCtxBuilder) {
        match &self.stdout {
            Some(f) => builder.stdout(f.clone()),
            None => builder.inherit_stdout(),
        };
        self.apply_stderr(builder);
    }
}
