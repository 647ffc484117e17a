//! containerd-shim-wisp-v1: see the wisp-shim library.
#![forbid(unsafe_code)]

fn main() {
    wisp_shim::main();
}
