//! The cleanup record a container leaves in its bundle, for the shim's
//! `delete` action to act on when the daemon died without deleting it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// File in the bundle recording what `delete` must clean up if the shim dies.
pub const STATE_FILE: &str = "wisp-state.json";

/// Cleanup record kept in the bundle (see [`STATE_FILE`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct StateRecord {
    /// A runc container: `runc delete` cleans it up.
    pub linux: bool,
    /// The process to kill (0 for none of its own: a hosted app).
    pub pid: u32,
    pub cgroup: Option<String>,
    pub mounted: Option<PathBuf>,
}
