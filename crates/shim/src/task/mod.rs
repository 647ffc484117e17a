//! The Task verbs: a ttrpc request becomes an operation on a container of the
//! registry and a response, and the verbs publish containerd's task events.
//! One [`crate::error::TaskError`] carries every failure to the protocol.
//! Calls into [`crate::backend`] for what runs a container and into
//! [`crate::bundle`] for what a bundle asks.

mod create;
pub mod events;
mod registry;
pub mod service;
#[cfg(test)]
mod tests;
