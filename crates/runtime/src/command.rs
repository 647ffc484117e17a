//! Running command apps to completion: WASI preview1 `_start` modules and WASI 0.2
//! `wasi:cli/run` components.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::cli::{StdinStream, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::{InputStream, bindings::CommandPre};
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::app::{App, AppShape, Code};
use crate::config::Config;
use crate::engine::Engine;
use crate::meter::{CpuTimed, Meter, MeteredLimits};
use crate::wasi::{Grants, WasiError};

/// Exit status reported for a guest that trapped, mimicking `abort()` (128 + SIGABRT),
/// as wasmtime's own CLI does.
pub const TRAP_EXIT_CODE: i32 = 134;
/// Exit status reported for a guest stopped by its `timeout`, as `timeout(1)` does.
pub const TIMEOUT_EXIT_CODE: i32 = 124;

/// How a command ended.
#[derive(Debug)]
pub enum Outcome {
    /// The guest returned or called `exit(code)`.
    Exited(i32),
    /// The guest trapped; the error carries the trap and the Wasm backtrace.
    Trapped(wasmtime::Error),
    /// The guest ran past its deadline and was stopped.
    TimedOut(Duration),
}

impl Outcome {
    /// The process exit status that represents this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Exited(c) => *c,
            Self::Trapped(_) => TRAP_EXIT_CODE,
            Self::TimedOut(_) => TIMEOUT_EXIT_CODE,
        }
    }
}

/// Errors that prevent a command from running at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The app is not a command.
    #[error("`{}` is a {shape}, not a command; serve it with `wisp serve`", path.display())]
    NotACommand {
        /// The app.
        path: std::path::PathBuf,
        /// What it is.
        shape: AppShape,
    },
    /// The guest's context could not be built.
    #[error(transparent)]
    Wasi(#[from] WasiError),
    /// Linking or instantiation failed (e.g. an unknown import).
    #[error("failed to instantiate `{}`", path.display())]
    Instantiate {
        /// The app.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: wasmtime::Error,
    },
}

/// Standard streams for a command.
pub enum Stdio {
    /// The host process's own stdin/stdout/stderr.
    Inherit,
    /// Caller-provided streams (the shim's FIFOs, tests' pipes).
    Custom {
        /// Standard input.
        stdin: Box<dyn StdinStream>,
        /// Standard output.
        stdout: Box<dyn StdoutStream>,
        /// Standard error.
        stderr: Box<dyn StdoutStream>,
    },
}

impl Stdio {
    /// Output to these files (a container's log FIFOs), no input; a
    /// missing file discards what the guest writes there.
    pub fn files(stdout: Option<std::fs::File>, stderr: Option<std::fs::File>) -> Self {
        let out = |f: Option<std::fs::File>| -> Box<dyn StdoutStream> {
            match f {
                Some(f) => Box::new(wasmtime_wasi::cli::OutputFile::new(f)),
                None => Box::new(std::io::empty()),
            }
        };
        Self::Custom {
            stdin: Box::new(std::io::empty()),
            stdout: out(stdout),
            stderr: out(stderr),
        }
    }
}

/// Store state of a command instance.
pub struct CommandState {
    p1: Option<WasiP1Ctx>,
    p2: Option<(WasiCtx, ResourceTable)>,
    limits: MeteredLimits,
    /// Taken when the command starts: a prepared command waiting for its
    /// start keeps no epoch ticking.
    _epoch: Option<crate::engine::Running>,
}

impl WasiView for CommandState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (ctx, table) = self.p2.as_mut().expect("p2 context for a component");
        WasiCtxView { ctx, table }
    }
}

/// Runs `app` to completion with `args` (`args[0]` is the program name the guest
/// sees) under the capabilities and limits of `config`.
pub async fn run(
    engine: &Engine,
    app: &App,
    config: &Config,
    args: &[String],
    stdio: Stdio,
) -> Result<Outcome, RunError> {
    prepare(engine, app, config, args, stdio)?.run().await
}

/// [`run`], with the instance's memory and CPU time counted in `meter` (a
/// command hosted by a process that also runs others).
pub async fn run_metered(
    engine: &Engine,
    app: &App,
    config: &Config,
    args: &[String],
    stdio: Stdio,
    meter: Arc<Meter>,
) -> Result<Outcome, RunError> {
    let prepared = prepare_inner(engine, app, config, args, stdio, Some(&meter))?;
    CpuTimed::new(prepared.run(), Some(meter.clone())).await
}

/// A command made ready to start: its WASI context, its store and its code
/// linked against the host. Starting it then only instantiates it and calls
/// its entry point. The shim prepares a container's command at Create, so
/// that what would stop it from running at all (an unknown import, a
/// directory grant that cannot be opened) fails Create, and Start is quick.
pub struct Prepared {
    store: Store<CommandState>,
    entry: Entry,
    timeout: Option<Duration>,
    engine: Engine,
    path: std::path::PathBuf,
}

enum Entry {
    Module(wasmtime::InstancePre<CommandState>),
    Component(CommandPre<CommandState>),
}

/// Prepares `app` to run with `args` under `config` (see [`Prepared`]); the
/// guest's deadline counts from [`Prepared::run`].
pub fn prepare(
    engine: &Engine,
    app: &App,
    config: &Config,
    args: &[String],
    stdio: Stdio,
) -> Result<Prepared, RunError> {
    prepare_inner(engine, app, config, args, stdio, None)
}

fn prepare_inner(
    engine: &Engine,
    app: &App,
    config: &Config,
    args: &[String],
    stdio: Stdio,
    meter: Option<&Arc<Meter>>,
) -> Result<Prepared, RunError> {
    let grants = Grants::new(&config.capabilities)?;
    let mut builder = WasiCtxBuilder::new();
    builder.args(args);
    match stdio {
        Stdio::Inherit => {
            builder.inherit_stdio();
        }
        Stdio::Custom {
            stdin,
            stdout,
            stderr,
        } => {
            builder
                .stdin(BoxedIn(stdin))
                .stdout(BoxedOut(stdout))
                .stderr(BoxedOut(stderr));
        }
    }
    grants.apply(&mut builder);

    let mut limits = StoreLimitsBuilder::new().trap_on_grow_failure(true);
    if let Some(max) = config.limits.max_memory {
        limits = limits.memory_size(max.0 as usize);
    }
    let limits = MeteredLimits::new(limits.build(), meter);
    let instantiate_err = |source| RunError::Instantiate {
        path: app.path().to_owned(),
        source,
    };

    let wt = engine.wasmtime();
    let (p1, p2, entry) = match (app.shape(), app.code()) {
        (AppShape::P1Command, Code::Module(module)) => {
            let mut linker = wasmtime::Linker::<CommandState>::new(wt);
            wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s| {
                s.p1.as_mut().expect("p1 context for a module")
            })
            .map_err(instantiate_err)?;
            let pre = linker.instantiate_pre(module).map_err(instantiate_err)?;
            let mut p1 = builder.build_p1();
            grants.give_dirs(p1.ctx().ctx);
            (Some(p1), None, Entry::Module(pre))
        }
        (AppShape::P2Command, Code::Component(component)) => {
            let mut linker = wasmtime::component::Linker::<CommandState>::new(wt);
            wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(instantiate_err)?;
            let pre = linker
                .instantiate_pre(component)
                .and_then(CommandPre::new)
                .map_err(instantiate_err)?;
            let mut wasi = builder.build();
            grants.give_dirs(&mut wasi);
            let p2 = (wasi, ResourceTable::new());
            (None, Some(p2), Entry::Component(pre))
        }
        (shape, _) => {
            return Err(RunError::NotACommand {
                path: app.path().to_owned(),
                shape,
            });
        }
    };
    let state = CommandState {
        p1,
        p2,
        limits,
        _epoch: None,
    };
    let mut store = Store::new(wt, state);
    store.limiter(|s| s.limits());
    Ok(Prepared {
        store,
        entry,
        timeout: config.limits.timeout.map(|t| t.0),
        engine: engine.clone(),
        path: app.path().to_owned(),
    })
}

impl Prepared {
    /// Instantiates the command and runs it to completion; its deadline
    /// starts now.
    pub async fn run(self) -> Result<Outcome, RunError> {
        let Self {
            mut store,
            entry,
            timeout,
            engine,
            path,
        } = self;
        store.data_mut()._epoch = Some(engine.running());
        install_deadline(&mut store, timeout);
        let instantiate_err = |source| RunError::Instantiate {
            path: path.clone(),
            source,
        };
        let result = match entry {
            Entry::Module(pre) => {
                let instance = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(instantiate_err)?;
                let start = instance
                    .get_typed_func::<(), ()>(&mut store, "_start")
                    .map_err(instantiate_err)?;
                with_deadline(timeout, start.call_async(&mut store, ()))
                    .await
                    .map(|()| 0)
            }
            Entry::Component(pre) => {
                let command = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(instantiate_err)?;
                with_deadline(timeout, command.wasi_cli_run().call_run(&mut store))
                    .await
                    .map(|r| if r.is_ok() { 0 } else { 1 })
            }
        };
        Ok(match result {
            Ok(code) => Outcome::Exited(code),
            Err(e) => classify_exit(e, timeout),
        })
    }
}

/// Describes a guest failure for people: the reason (the trap, or the host error
/// that stopped the guest) on the first line, then the Wasm backtrace if any.
pub fn describe_trap(e: &wasmtime::Error) -> String {
    let reason = match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        // The innermost cause is the reason; outer layers are the backtrace
        // context, printed below.
        None => e.chain().last().map(|c| c.to_string()).unwrap_or_default(),
    };
    match e.downcast_ref::<wasmtime::WasmBacktrace>() {
        // WasmBacktrace displays as "error while executing at wasm backtrace:\n  0: ...".
        Some(bt) => format!("{reason}\n{bt}"),
        None => reason,
    }
}

/// Runs a guest future under its deadline. The epoch callback traps guests that
/// compute past it; this also stops guests parked in host calls (a stdin read, a
/// sleep, outbound I/O), where no epoch check runs.
pub(crate) async fn with_deadline<T>(
    timeout: Option<Duration>,
    run: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    match timeout {
        Some(t) => tokio::time::timeout(t, run)
            .await
            .unwrap_or_else(|_| Err(wasmtime::Error::from(Trap::Interrupt))),
        None => run.await,
    }
}

/// Sorts a guest error into exit, timeout or trap.
pub(crate) fn classify_exit(e: wasmtime::Error, timeout: Option<Duration>) -> Outcome {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return Outcome::Exited(exit.0);
    }
    if let (Some(Trap::Interrupt), Some(t)) = (e.downcast_ref::<Trap>(), timeout) {
        return Outcome::TimedOut(t);
    }
    Outcome::Trapped(e)
}

/// A store with the memory limiter and the epoch policy installed: yield to the
/// executor every tick, and trap with `Trap::Interrupt` once past `timeout`.
pub(crate) fn new_store<T: HasLimits + Send + 'static>(
    engine: &wasmtime::Engine,
    data: T,
    timeout: Option<Duration>,
) -> Store<T> {
    let mut store = Store::new(engine, data);
    store.limiter(|s| s.limits());
    install_deadline(&mut store, timeout);
    store
}

/// Installs the epoch policy on `store`.
fn install_deadline<T: 'static>(store: &mut Store<T>, timeout: Option<Duration>) {
    let deadline = timeout.map(|t| Instant::now() + t);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| match deadline {
        Some(d) if Instant::now() >= d => Ok(UpdateDeadline::Interrupt),
        _ => Ok(UpdateDeadline::Yield(1)),
    });
}

/// Store data that carries [`StoreLimits`].
pub(crate) trait HasLimits {
    fn limits(&mut self) -> &mut MeteredLimits;
}

impl HasLimits for CommandState {
    fn limits(&mut self) -> &mut MeteredLimits {
        &mut self.limits
    }
}

struct BoxedIn(Box<dyn StdinStream>);

impl wasmtime_wasi::cli::IsTerminal for BoxedIn {
    fn is_terminal(&self) -> bool {
        self.0.is_terminal()
    }
}

impl StdinStream for BoxedIn {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        self.0.p2_stream()
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        self.0.async_stream()
    }
}

struct BoxedOut(Box<dyn StdoutStream>);

impl wasmtime_wasi::cli::IsTerminal for BoxedOut {
    fn is_terminal(&self) -> bool {
        self.0.is_terminal()
    }
}

impl StdoutStream for BoxedOut {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        self.0.p2_stream()
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        self.0.async_stream()
    }
}
