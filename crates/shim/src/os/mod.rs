//! The operating system's plumbing, used by every layer above and using
//! none: cgroups, OOM notifications, network namespaces, stdio, threads,
//! the process title and cgroup metrics.

pub mod cgroup;
pub mod metrics;
pub mod netns;
pub mod oom;
pub mod proctitle;
pub mod stdio;
pub mod threads;
