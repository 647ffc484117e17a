//! wisp-shim: the containerd shim v2 `containerd-shim-wisp-v1`
//! (runtime type `io.containerd.wisp.v1`).
//!
//! - [`shim`]: start/delete (one daemon per pod, or one per node).
//! - [`daemon`]: the daemon, serving the Task API over async ttrpc.
//! - [`service`]: the Task calls.
//! - [`plan`]: what a bundle runs: a Wasm plan or a Linux container.
//! - [`image`]: Wasm layers from containerd's content store (artifact images).
//! - [`child`]: the Wasm container process (forked by the zygote, or the
//!   shim binary executed again).
//! - [`runc`]: Linux containers (sidecars) delegated to runc; [`console`]:
//!   their terminals.
//! - [`node`]: node mode, every Wasm HTTP app of the node in one process.
//! - [`sandbox`]: the CRI's pod sandbox (pause), made by the shim itself.
//! - [`zygote`]: container processes forked, not executed.
//! - [`oom`]: OOM kills in containers' memory cgroups, reported as TaskOOM.
//! - [`process`], [`proctitle`], [`cgroup`], [`events`], [`netns`]: the plumbing.

pub mod cgroup;
pub mod child;
pub mod console;
pub mod daemon;
pub mod events;
pub mod image;
pub mod metrics;
pub mod netns;
pub mod node;
pub mod oom;
pub mod plan;
pub mod process;
pub mod proctitle;
pub mod runc;
pub mod sandbox;
pub mod service;
pub mod shim;
pub mod zygote;

pub use shim::{RUNTIME_ID, WispShim};

/// The binary's entry: a Wasm container process, or the shim itself.
pub fn main() {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == child::CHILD_ARG)
    {
        child::main();
    }
    let runtime_id = if node::is_node_mode() {
        node::NODE_RUNTIME_ID
    } else {
        RUNTIME_ID
    };
    let args: Vec<_> = std::env::args_os().collect();
    let flags = containerd_shim::parse(&args[1..])
        .ok()
        .filter(|f| !f.namespace.is_empty());
    let result: Result<(), Box<dyn std::error::Error>> = match flags {
        // The daemon: no action.
        Some(flags) if flags.action.is_empty() => {
            daemon::serve(runtime_id, flags, None).map_err(Into::into)
        }
        Some(flags) if flags.action == "start" => {
            shim::start(runtime_id, flags).map_err(Into::into)
        }
        Some(flags) if flags.action == "delete" => {
            shim::delete(runtime_id, flags).map_err(Into::into)
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
