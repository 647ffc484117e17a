//! What runs a container, one [`api::Backend`] per kind: a Wasm process of
//! its own ([`wasm`]), an app hosted by the node-mode process ([`hosted`]),
//! a Linux container given to runc ([`linux`]), and the CRI's pod sandbox
//! made by the shim itself ([`pod`]). Below them: the processes they start
//! ([`proc`], [`spawn`], [`zygote`], [`child`]), node mode's engine
//! ([`node`]), runc's CLI ([`runc`]) and terminals ([`console`]).

pub mod api;
pub mod child;
pub mod confine;
pub mod console;
pub mod hosted;
pub mod linux;
pub mod node;
pub mod pod;
pub mod proc;
pub mod runc;
pub mod sandbox;
pub mod spawn;
pub mod wasm;
pub mod zygote;
