//! Links the shim as a position-dependent executable, and stamps it with
//! what `containerd-shim-wisp-v1 -v` prints.
//!
//! Every container costs two processes of this binary (the shim daemon is
//! shared per pod, the Wasm container process is not). As a PIE, the loader
//! must relocate ~1.1 MiB of `.data.rel.ro` (vtables, wasmtime's and
//! cranelift's static tables) in each process, which turns those pages into
//! private, dirty memory. Linked at a fixed address they need no relocation
//! and stay clean page-cache pages shared by every container on the node.
//! ASLR of the stack, heap and mmaps is unaffected.
//!
//! The stamp: the source revision (when built from a git checkout) and the
//! Wasmtime version of the workspace's lock file.

use std::path::Path;
use std::process::Command;

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(&root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=WISP_REVISION={revision}");
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let wasmtime = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"wasmtime\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=WISP_WASMTIME_VERSION={wasmtime}");
    println!("cargo:rerun-if-changed=../../Cargo.lock");
    for git in ["../../.git/HEAD", "../../.git/refs/heads"] {
        if root.join(git.trim_start_matches("../../")).exists() {
            println!("cargo:rerun-if-changed={git}");
        }
    }
}
