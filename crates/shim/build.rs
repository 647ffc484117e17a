//! Links the shim as a position-dependent executable.
//!
//! Every container costs two processes of this binary (the shim daemon is
//! shared per pod, the Wasm container process is not). As a PIE, the loader
//! must relocate ~1.1 MiB of `.data.rel.ro` (vtables, wasmtime's and
//! cranelift's static tables) in each process, which turns those pages into
//! private, dirty memory. Linked at a fixed address they need no relocation
//! and stay clean page-cache pages shared by every container on the node.
//! ASLR of the stack, heap and mmaps is unaffected.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
