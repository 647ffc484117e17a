//! The Wasm container process: one per Wasm container (and per exec).
//!
//! The zygote forks this process (see [`crate::backend::zygote`]), or, without a
//! zygote, the shim executes its own binary with [`CHILD_ARG`]; either way
//! it starts in [`main`] with fds 3 and 4 set. It joins the
//! container's namespaces, loads the app (compiling it or mapping it from the
//! node's code cache) and reports "ok" or the error on the status pipe, so that
//! Create fails with the real reason. It then waits on the control pipe for
//! Start. Its stdio are the container's FIFOs and it sits in the container's
//! cgroup, so logs, stats, limits and signals act on it like on any container
//! process. The shim daemon itself never loads wasmtime (its zygote only
//! builds the engine its forks take).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, Result};
use nix::sched::{CloneFlags, setns, unshare};
use wisp_runtime::command::{self, Outcome, Stdio};
use wisp_runtime::config::Config;
use wisp_runtime::http::HttpServer;
use wisp_runtime::{App, Engine, EngineSettings};

use crate::backend::confine;
use crate::bundle::plan::{Executor, WasmPlan};

/// argv[1] that turns the shim binary into a container process.
pub const CHILD_ARG: &str = "--wisp-container";
/// The child reads the plan (one JSON line), then one byte to start, from here.
pub const CONTROL_FD: i32 = 3;
/// The child writes `ok` or an error message here, then closes it.
pub const STATUS_FD: i32 = 4;

/// Entry point of the container process. Never returns.
pub fn main() -> ! {
    // SAFETY: the shim starts this process with the control and status pipes
    // dup'ed onto fds 3 and 4 (see `process::spawn_wasm` and
    // `zygote::become_container`), and nothing else in this process uses
    // those numbers, so taking ownership of them is sound.
    let (control, status) = unsafe {
        (
            File::from(OwnedFd::from_raw_fd(CONTROL_FD)),
            File::from(OwnedFd::from_raw_fd(STATUS_FD)),
        )
    };
    let code = match run(control, status) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wisp: {e:#}");
            1
        }
    };
    std::process::exit(code)
}

fn run(control: File, mut status: File) -> Result<i32> {
    let mut control = BufReader::new(control);
    let mut line = String::new();
    control
        .read_line(&mut line)
        .context("failed to read the container plan")?;
    let mut plan: WasmPlan = serde_json::from_str(&line).context("invalid container plan")?;
    let prepared = match prepare(&mut plan) {
        Ok(p) => p,
        Err(e) => {
            // The shim turns this into Create's error; ctr prints it.
            let _ = status.write_all(format!("{e:#}").as_bytes());
            return Ok(1);
        }
    };
    status.write_all(b"ok").context("failed to report ready")?;
    drop(status);

    let mut go = [0u8; 1];
    if control.read(&mut go).context("failed to wait for start")? == 0 {
        // The shim went away or deleted the task before starting it.
        return Ok(0);
    }
    prepared.run(&plan)
}

/// A loaded app, ready to start.
enum Prepared {
    /// A command, linked and with its WASI context built before Start.
    Command {
        command: Box<command::Prepared>,
        runtime: tokio::runtime::Runtime,
    },
    /// An HTTP app, built (and instantiated once) before Start.
    Serve { server: HttpServer, config: Config },
}

fn prepare(plan: &mut WasmPlan) -> Result<Prepared> {
    // The engine must exist before the app is loaded, so the choice between
    // the pooling (serving) and the on-demand (command) allocator is made from
    // the plan and the binary's header: under `Auto` only components can be
    // HTTP apps.
    let serving = match plan.executor {
        Executor::Command => false,
        Executor::Http => true,
        Executor::Auto => is_component(&plan.module),
    };
    enter_namespaces(plan, serving)?;
    let entered = plan.confine.as_ref().map(confine::enter).transpose()?;
    // Granted directories are opened through the container's mounts, so
    // their flags (a read-only volume) hold as they would for runc.
    if let (Some(root), Some(entered)) = (
        plan.confine.as_ref().and_then(|c| c.root.as_ref()),
        &entered,
    ) {
        for dir in &mut plan.dirs {
            if let Some(p) = confine::granted_path(root, entered, &dir.guest) {
                dir.host = p;
            }
        }
    }
    let config = plan.config()?;
    let mut settings = if serving {
        EngineSettings::for_serve(&config)
    } else {
        EngineSettings::for_run(&config)
    };
    // The process stays single-threaded until it has confined itself.
    settings.defer_threads = plan.confine.is_some();
    let engine = Engine::new(&settings).context("failed to create the Wasm engine")?;
    let module = plan.module.display().to_string();
    let app = App::load(&engine, &plan.module, false)
        .with_context(|| format!("failed to load `{module}`"))?;
    let serve = plan.executor.serves(app.shape(), &module)?;
    let prepared = if serve {
        let server = HttpServer::new(&engine, &app, &plan.serve_config()?)
            .with_context(|| format!("`{module}` cannot be served"))?;
        Prepared::Serve { server, config }
    } else {
        let command = command::prepare(&engine, &app, &config, &plan.args, Stdio::Inherit)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("failed to prepare `{module}`"))?;
        Prepared::Command {
            command: Box::new(command),
            runtime: current_thread()?,
        }
    };
    if let Some(c) = &plan.confine {
        confine::finish(c)?;
    }
    // Confined first: the first instance starts the engine's ticker thread.
    if let Prepared::Serve { server, .. } = &prepared {
        current_thread()?
            .block_on(server.instantiate_once())
            .map_err(anyhow::Error::from)
            .with_context(|| format!("failed to instantiate `{module}`"))?;
    }
    Ok(prepared)
}

/// A component's preamble has layer 1 in bytes 6..8; a core module's has 0.
fn is_component(path: &std::path::Path) -> bool {
    let mut head = [0u8; 8];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head[..4] == *b"\0asm" && head[6..8] == [1, 0])
}

/// What wisp says on the container's stderr about how a command ended, if
/// anything: a trap's reason, a timeout.
pub(crate) fn outcome_message(program: &str, outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Exited(_) => None,
        Outcome::Trapped(e) => Some(format!(
            "wisp: `{program}` trapped: {}",
            command::describe_trap(e)
        )),
        Outcome::TimedOut(t) => Some(format!("wisp: guest stopped after the timeout of {t:?}")),
    }
}

/// Joins the namespaces the spec names and creates the ones it asks for
/// without a path, where a guest could tell the difference. Runs while the
/// process has a single thread: `setns` and `unshare` of a network namespace
/// act on the calling thread only, and every thread created later inherits it.
///
/// A fresh network namespace is made for a guest that has a network: one
/// that listens (an HTTP app) or one granted outbound access
/// (`WISP_ALLOW_OUTBOUND`), which then connects from the container's
/// namespace, never the host's. A command granted nothing has no socket to
/// isolate, and skipping the namespace saves its cost. Fresh UTS and IPC
/// namespaces are never made:
/// WASI has no hostname and no System V IPC, so no guest can see either.
/// Namespaces with a path (a pod's) are always joined, so execs and CRI pods
/// share what the spec says they share.
fn enter_namespaces(plan: &WasmPlan, serving: bool) -> Result<()> {
    for path in &plan.join {
        let f = File::open(path)
            .with_context(|| format!("failed to open namespace `{}`", path.display()))?;
        setns(&f, CloneFlags::empty())
            .with_context(|| format!("failed to join namespace `{}`", path.display()))?;
    }
    if plan.unshare_net && (serving || !plan.allow_outbound.is_empty()) {
        unshare(CloneFlags::CLONE_NEWNET)
            .context("failed to create the container's network namespace")?;
        crate::os::netns::loopback_up().context("failed to bring up `lo` in the new netns")?;
    }
    Ok(())
}

fn current_thread() -> Result<tokio::runtime::Runtime> {
    crate::os::threads::current_thread().context("failed to start the async runtime")
}

impl Prepared {
    fn run(self, plan: &WasmPlan) -> Result<i32> {
        let (command, runtime) = match self {
            Self::Serve { server, config } => return serve(server, &config, plan),
            Self::Command { command, runtime } => (command, runtime),
        };
        if std::process::id() == 1 {
            die_on_signals();
        }
        let outcome = runtime
            .block_on(command.run())
            .with_context(|| format!("failed to run `{}`", plan.module.display()))?;
        let program = plan.args.first().map_or("guest", String::as_str);
        if let Some(m) = outcome_message(program, &outcome) {
            eprintln!("{m}");
        }
        // Exit here, without dropping the runtime, the engine and the code:
        // the kernel frees all of it at once as the process ends, and the
        // container's exit is reported a millisecond sooner than after
        // running their destructors.
        std::process::exit(outcome.exit_code())
    }
}

/// As pid 1 of its own pid namespace the process receives no signal it has
/// no handler for (the kernel's rule for a namespace's init; only SIGKILL
/// and SIGSTOP from outside pass). A guest has no handlers of its own, so
/// these end it as they end a process with the default disposition.
fn die_on_signals() {
    extern "C" fn on_signal(sig: libc::c_int) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + sig) }
    }
    for sig in [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
    ] {
        // SAFETY: installs a handler that only calls _exit.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Serves until SIGTERM or SIGINT, drains, and exits 128+signal, as a
/// process killed by that signal would report.
fn serve(server: HttpServer, config: &Config, plan: &WasmPlan) -> Result<i32> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let signal = Arc::new(AtomicI32::new(0));
    // Registered before serving starts, so a SIGTERM that arrives during
    // start-up drains instead of killing the process.
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT])
        .context("failed to install signal handlers")?;
    let got = signal.clone();
    std::thread::Builder::new()
        .name("wisp-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                got.store(sig, Ordering::SeqCst);
                let _ = tx.send(());
            }
        })
        .context("failed to start the signal thread")?;
    let report = server.serve_per_core(
        &config.server,
        plan.threads,
        |addr| eprintln!("wisp: serving HTTP on http://{addr}/"),
        async move {
            let _ = rx.await;
        },
    )?;
    if !report.drained {
        eprintln!("wisp: drain timeout reached; in-flight requests were cut off");
    }
    let sig = signal.load(Ordering::SeqCst);
    Ok(if sig == 0 { 0 } else { 128 + sig })
}
