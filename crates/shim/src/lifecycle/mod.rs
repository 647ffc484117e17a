//! The top layer: the binary's `start` and `delete` actions and the daemon
//! that serves the Task API over ttrpc. Calls into [`crate::task`].

pub mod daemon;
pub mod shim;
