//! The operating system's plumbing, used by every layer above and using
//! none: cgroups, OOM notifications, network namespaces, stdio, threads,
//! the process title, cgroup metrics, credentials and seccomp filters.

pub mod cgroup;
pub mod creds;
pub mod metrics;
pub mod netns;
pub mod oom;
pub mod proctitle;
pub mod seccomp;
pub mod stdio;
pub mod threads;
