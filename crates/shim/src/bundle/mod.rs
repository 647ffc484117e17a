//! What a bundle asks for: the OCI spec read into a Wasm plan or a Linux
//! container ([`plan`]), Wasm layers of the image ([`image`]), and the
//! rootfs mounts ([`rootfs`]).

pub mod confine;
pub mod image;
pub mod plan;
pub mod rootfs;
pub mod state;
