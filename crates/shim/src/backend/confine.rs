//! The Wasm container process confines itself as runc would confine a
//! container of the same spec (the plan's [`Confinement`]), in two steps
//! around loading the app:
//!
//! 1. [`enter`], with one thread, before anything is loaded: a mount
//!    namespace of its own (and uts, ipc and cgroup namespaces as the spec
//!    asks), its sysctls, the rootfs bound in it with the spec's mounts, masked and
//!    read-only paths, the default devices. The host's paths still resolve,
//!    so the module, the node's code cache and the granted directories are
//!    opened next from where they are.
//! 2. [`finish`], still with one thread (the engine's ticker starts with the
//!    first instance, the compiler runs on the calling thread): pivot_root
//!    into the rootfs (an exec joins its init's mount namespace instead),
//!    rlimits, AppArmor, the user and capabilities, no_new_privs and
//!    seccomp last. Every thread made after that (the serving threads, the
//!    ticker) inherits all of it.
//!
//! Doing it in this process rather than in a separate container runtime
//! keeps what makes a Wasm pod cheap: one process, no exec of runc, the app
//! loaded from the node's cache before the privileges go.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::mount::{MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::bundle::confine::{Confinement, DEFAULT_DEVICES, MountStep, Root};
use crate::bundle::plan::{PlanError, resolve_in_rootfs};
use crate::os::creds::{self, CredStep};

/// What [`enter`] set up: where each mount's destination is, seen from the
/// host side, until the pivot.
#[derive(Debug, Default)]
pub struct Entered {
    pub mounted: Vec<(String, PathBuf)>,
    /// The rootfs as it was before anything was mounted in it: what the
    /// guest's `/` is. Lookups through it cross none of the container's
    /// mounts, which sit on the bind made after it, so the container's
    /// `/proc` (its own process's memory, `/proc/self/mem`), `/sys` and
    /// `/dev` are never reachable from the guest, as before confinement.
    bare_root: Option<File>,
}

/// Step 1 (see the module's doc). Needs a single thread.
pub fn enter(c: &Confinement) -> Result<Entered> {
    let mut entered = Entered::default();
    // Through the host's /proc, while it is the one mounted.
    if let Some(adj) = c.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .context("failed to set oom_score_adj (process.oomScoreAdj)")?;
    }
    let Some(root) = &c.root else {
        return Ok(entered);
    };
    let mut flags = CloneFlags::CLONE_NEWNS;
    if root.new_uts {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    if root.new_ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    unshare(flags).context("failed to create the container's mount namespace")?;
    if let Some(h) = &root.hostname {
        // SAFETY: sethostname reads `len` bytes of the string.
        if unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) } != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("failed to set hostname `{h}`"));
        }
    }
    // Through the host's /proc, before any path is made read-only: net.*,
    // ipc and uts sysctls act on the namespaces of the writer, which are the
    // container's now.
    for (path, value) in &root.sysctls {
        std::fs::write(path, value)
            .with_context(|| format!("failed to set sysctl `{path}` (linux.sysctl)"))?;
    }
    // Nothing mounted here may reach the host's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .context("failed to make the mounts private")?;
    let rootfs = &root.rootfs;
    entered.bare_root = Some(
        File::options()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(rootfs)
            .with_context(|| format!("failed to open the rootfs `{}`", rootfs.display()))?,
    );
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("failed to bind the rootfs `{}`", rootfs.display()))?;
    for m in &root.mounts {
        let target = mount_one(rootfs, m)
            .with_context(|| format!("failed to mount `{}` ({})", m.destination, m.kind))?;
        entered.mounted.push((m.destination.clone(), target));
    }
    for path in &root.masked {
        mask(rootfs, path).with_context(|| format!("failed to mask `{path}`"))?;
    }
    for path in &root.readonly_paths {
        readonly(rootfs, path).with_context(|| format!("failed to make `{path}` read-only"))?;
    }
    // The working directory exists, as runc makes sure.
    target(rootfs, &c.cwd, true)
        .with_context(|| format!("failed to create the working directory `{}`", c.cwd))?;
    if root.new_cgroup {
        // After the cgroup mount, which shows the container's own cgroup
        // at its root either way.
        unshare(CloneFlags::CLONE_NEWCGROUP)
            .context("failed to create the container's cgroup namespace")?;
    }
    Ok(entered)
}

/// Step 2 (see the module's doc). Needs a single thread.
pub fn finish(c: &Confinement) -> Result<()> {
    if !crate::os::threads::single_threaded() {
        bail!("the Wasm container process has more than one thread before confining itself");
    }
    if let Some(root) = &c.root {
        pivot(root)?;
    }
    // All opened first: once in the init's mount namespace, `/proc` is
    // the container's, where the init's host pid names nothing.
    let late = c
        .join_late
        .iter()
        .map(|ns| {
            File::open(ns)
                .with_context(|| format!("failed to open namespace `{}`", ns.display()))
                .map(|f| (ns, f))
        })
        .collect::<Result<Vec<_>>>()?;
    for (ns, f) in late {
        setns(&f, CloneFlags::empty())
            .with_context(|| format!("failed to join namespace `{}`", ns.display()))?;
    }
    for &(resource, soft, hard) in &c.rlimits {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the struct, alive for the call.
        if unsafe { libc::setrlimit(resource as _, &limit) } != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("failed to set rlimit {resource} (process.rlimits)"));
        }
    }
    if let Some(profile) = &c.apparmor {
        apparmor(profile)
            .with_context(|| format!("failed to apply AppArmor profile `{profile}`"))?;
    }
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which the
    // user switch may drop: then it is loaded first, as runc does (the
    // profile must then allow the switch's own system calls).
    if !c.no_new_privs
        && let Some(filter) = &c.seccomp
    {
        crate::os::seccomp::load(filter).context("failed to load the seccomp profile")?;
    }
    // SAFETY: this process has a single thread (checked above).
    match unsafe { creds::apply(&c.creds, creds::cap_last()) } {
        Ok(()) => {}
        Err(step) => {
            let e = io::Error::last_os_error();
            let what = match step {
                CredStep::User => format!(
                    "failed to switch to uid {} gid {} (process.user)",
                    c.creds.uid, c.creds.gid
                ),
                CredStep::Caps => "failed to set capabilities (process.capabilities)".into(),
            };
            return Err(e).context(what);
        }
    }
    if c.no_new_privs {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error()).context("failed to set no_new_privs");
        }
        if let Some(filter) = &c.seccomp {
            crate::os::seccomp::load(filter).context("failed to load the seccomp profile")?;
        }
    }
    std::env::set_current_dir(&c.cwd)
        .with_context(|| format!("failed to enter the working directory `{}`", c.cwd))?;
    Ok(())
}

/// pivot_root into the rootfs, as runc does (`pivot_root(".", ".")`: the old
/// root ends up stacked on the new one and is detached from it).
fn pivot(root: &Root) -> Result<()> {
    std::env::set_current_dir(&root.rootfs).context("failed to enter the rootfs")?;
    // SAFETY: pivot_root with two NUL-terminated literals.
    if unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } != 0 {
        return Err(io::Error::last_os_error()).context("failed to pivot_root into the rootfs");
    }
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("failed to detach the host's root")?;
    umount2(".", nix::mount::MntFlags::MNT_DETACH).context("failed to detach the host's root")?;
    std::env::set_current_dir("/").context("failed to enter the new root")?;
    if root.readonly {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .context("failed to make the rootfs read-only (root.readonly)")?;
    }
    if root.propagation != 0 {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::from_bits_truncate(root.propagation),
            None::<&str>,
        )
        .context("failed to set linux.rootfsPropagation")?;
    }
    Ok(())
}

/// The host-side path of `dest` inside `rootfs`, created (as a directory or
/// an empty file) where missing; symlinks never lead out of `rootfs`.
fn target(rootfs: &Path, dest: &str, dir: bool) -> io::Result<PathBuf> {
    match resolve_in_rootfs(rootfs, dest, "/") {
        Ok(p) => return Ok(p),
        Err(PlanError::NotFound(_)) => {}
        Err(e) => return Err(io::Error::other(e.to_string())),
    }
    let path = Path::new(dest);
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::other(format!("`{dest}` cannot be created")));
    };
    let parent = target(rootfs, &parent.to_string_lossy(), true)?;
    let host = parent.join(name);
    let made = if dir {
        std::fs::create_dir(&host)
    } else {
        File::options()
            .write(true)
            .create_new(true)
            .open(&host)
            .map(drop)
    };
    match made {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(host),
    }
}

fn mount_one(rootfs: &Path, m: &MountStep) -> io::Result<PathBuf> {
    let flags = MsFlags::from_bits_truncate(m.flags);
    let data = (!m.data.is_empty()).then_some(m.data.as_str());
    let target_path;
    match m.kind.as_str() {
        "bind" => {
            let dir = std::fs::metadata(&m.source)?.is_dir();
            target_path = target(rootfs, &m.destination, dir)?;
            let rec = flags & MsFlags::MS_REC;
            mount(
                Some(m.source.as_str()),
                &target_path,
                None::<&str>,
                MsFlags::MS_BIND | rec,
                None::<&str>,
            )?;
            let rest = flags - MsFlags::MS_BIND - MsFlags::MS_REC;
            if !rest.is_empty() {
                mount(
                    None::<&str>,
                    &target_path,
                    None::<&str>,
                    MsFlags::MS_REMOUNT | MsFlags::MS_BIND | rest,
                    None::<&str>,
                )?;
            }
        }
        "cgroup" | "cgroup2" => {
            target_path = target(rootfs, &m.destination, true)?;
            cgroup_mount(&target_path, flags)?;
        }
        kind => {
            target_path = target(rootfs, &m.destination, true)?;
            mount(
                Some(m.source.as_str()),
                &target_path,
                Some(kind),
                flags,
                data,
            )?;
            if kind == "tmpfs" && m.destination == "/dev" {
                default_devices(&target_path)?;
            }
        }
    }
    if m.propagation != 0 {
        mount(
            None::<&str>,
            &target_path,
            None::<&str>,
            MsFlags::from_bits_truncate(m.propagation),
            None::<&str>,
        )?;
    }
    Ok(target_path)
}

/// A `/dev` of the container's own: the default devices bound from the
/// host's, and the usual links.
fn default_devices(dev: &Path) -> io::Result<()> {
    for (path, _, _) in DEFAULT_DEVICES {
        let name = path.trim_start_matches("/dev/");
        let node = dev.join(name);
        File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&node)?;
        mount(
            Some(path),
            &node,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        match std::os::unix::fs::symlink(to, dev.join(link)) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The spec's cgroup filesystem: the container's own cgroup, read-only
/// unless the spec says otherwise. On cgroup v2 its directory; on v1 a
/// tmpfs with each hierarchy's directory of this process bound in it (what
/// runc mounts without a cgroup namespace).
fn cgroup_mount(at: &Path, flags: MsFlags) -> io::Result<()> {
    let ro = flags & MsFlags::MS_RDONLY;
    let bind = |src: &Path, dst: &Path| -> io::Result<()> {
        mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
        mount(
            None::<&str>,
            dst,
            None::<&str>,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_BIND
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | ro,
            None::<&str>,
        )
        .map_err(io::Error::from)
    };
    let own = std::fs::read_to_string("/proc/self/cgroup")?;
    if let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::"))
        && own.lines().count() == 1
    {
        return bind(
            &Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')),
            at,
        );
    }
    mount(
        Some("tmpfs"),
        at,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )?;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, names, path) = (parts.next(), parts.next(), parts.next());
        let (Some(names), Some(path)) = (names, path) else {
            continue;
        };
        let dir = if names.is_empty() {
            "unified".to_string()
        } else {
            names.trim_start_matches("name=").to_string()
        };
        let host = Path::new("/sys/fs/cgroup")
            .join(&dir)
            .join(path.trim_start_matches('/'));
        if !host.is_dir() {
            continue;
        }
        let dst = at.join(&dir);
        std::fs::create_dir_all(&dst)?;
        bind(&host, &dst)?;
        // cpu,cpuacct is also reachable as cpu and cpuacct, as on the host.
        if dir.contains(',') {
            for alias in dir.split(',') {
                let _ = std::os::unix::fs::symlink(&dir, at.join(alias));
            }
        }
    }
    if !ro.is_empty() {
        mount(
            None::<&str>,
            at,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | ro,
            None::<&str>,
        )?;
    }
    Ok(())
}

/// Hides `path`: a tmpfs over a directory, the host's /dev/null over a file.
fn mask(rootfs: &Path, path: &str) -> io::Result<()> {
    let host = match resolve_in_rootfs(rootfs, path, "/") {
        Ok(p) => p,
        Err(_) => return Ok(()),
    };
    if host.is_dir() {
        mount(
            Some("tmpfs"),
            &host,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(io::Error::from)
    } else {
        mount(
            Some("/dev/null"),
            &host,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(io::Error::from)
    }
}

fn readonly(rootfs: &Path, path: &str) -> io::Result<()> {
    let host = match resolve_in_rootfs(rootfs, path, "/") {
        Ok(p) => p,
        Err(_) => return Ok(()),
    };
    mount(
        Some(&host),
        &host,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    mount(
        None::<&str>,
        &host,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_REC,
        None::<&str>,
    )?;
    Ok(())
}

/// Changes this thread's AppArmor profile now (there is no exec to wait
/// for): `changeprofile`, as libapparmor's aa_change_profile writes it.
fn apparmor(profile: &str) -> io::Result<()> {
    let cmd = CString::new(format!("changeprofile {profile}")).map_err(io::Error::other)?;
    let path = if Path::new("/proc/self/attr/apparmor/current").exists() {
        "/proc/self/attr/apparmor/current"
    } else {
        "/proc/self/attr/current"
    };
    File::options()
        .write(true)
        .open(path)?
        .write_all(cmd.as_bytes())
}

/// The host-side path a granted directory's guest path names once the
/// container's mounts are in place: the mount at that destination (through
/// it, so its flags hold), or the rootfs for `/`.
pub fn granted_path(root: &Root, entered: &Entered, guest: &str) -> Option<PathBuf> {
    if guest == "/" {
        return Some(match &entered.bare_root {
            Some(f) => PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd())),
            None => root.rootfs.clone(),
        });
    }
    entered
        .mounted
        .iter()
        .rev()
        .find(|(dest, _)| dest == guest)
        .map(|(_, p)| p.clone())
}
