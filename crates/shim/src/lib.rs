//! wisp-shim: the containerd shim v2 `containerd-shim-wisp-v1`
//! (runtime type `io.containerd.wisp.v1`).
//!
//! Layers, each calling only the ones below it:
//! - [`lifecycle`]: the binary's `start` and `delete`, and the daemon
//!   serving the Task API over ttrpc;
//! - [`task`]: the Task verbs, the container registry, task events;
//! - [`backend`]: what runs a container, one backend per kind (Wasm
//!   process, node-hosted app, runc, pod sandbox), and their processes;
//! - [`bundle`]: what a bundle asks for (the OCI spec as a plan, image
//!   layers, rootfs mounts, the cleanup record);
//! - [`os`]: cgroups, OOM events, namespaces, stdio, threads.
//!
//! [`error`] is the one error of the Task boundary, used by every layer.

pub mod backend;
pub mod bundle;
pub mod error;
pub mod lifecycle;
pub mod os;
pub mod task;

pub use lifecycle::shim::{RUNTIME_ID, WispShim};

/// The binary's entry: a Wasm container process, or the shim itself.
pub fn main() {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == backend::child::CHILD_ARG)
    {
        backend::child::main();
    }
    let runtime_id = if backend::node::is_node_mode() {
        backend::node::NODE_RUNTIME_ID
    } else {
        RUNTIME_ID
    };
    let args: Vec<_> = std::env::args_os().collect();
    let parsed = containerd_shim::parse(&args[1..]).ok();
    if parsed.as_ref().is_some_and(|f| f.version) {
        // As every containerd shim answers `-v` (scripts list shims so).
        print!("{}", version_text(&args[0].to_string_lossy()));
        std::process::exit(0);
    }
    let flags = parsed.filter(|f| !f.namespace.is_empty());
    let result: Result<(), Box<dyn std::error::Error>> = match flags {
        // The daemon: no action.
        Some(flags) if flags.action.is_empty() => {
            lifecycle::daemon::serve(runtime_id, flags, None).map_err(Into::into)
        }
        Some(flags) if flags.action == "start" => {
            lifecycle::shim::start(runtime_id, flags).map_err(Into::into)
        }
        Some(flags) if flags.action == "delete" => {
            lifecycle::shim::delete(runtime_id, flags).map_err(Into::into)
        }
        // Bad flags and other actions: the crate reports or handles them.
        _ => {
            containerd_shim::run::<WispShim>(runtime_id, None);
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("{runtime_id}: {e}");
        std::process::exit(1);
    }
}

/// What `-v` prints, in `containerd-shim-runc-v2 -v`'s shape.
pub fn version_text(argv0: &str) -> String {
    let name = std::path::Path::new(argv0)
        .file_name()
        .map_or_else(|| argv0.to_string(), |n| n.to_string_lossy().into_owned());
    format!(
        "{name}:\n  Version:  {}\n  Revision: {}\n  Wasmtime: {}\n",
        env!("CARGO_PKG_VERSION"),
        env!("WISP_REVISION"),
        env!("WISP_WASMTIME_VERSION"),
    )
}
