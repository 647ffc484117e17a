//! The container's root filesystem: containerd's rootfs mounts, mounted
//! into the bundle on Create and detached on Delete.

use std::path::Path;

/// Mounts one of containerd's rootfs mounts on `target`. An overlay whose
/// options are all plain data (the overlayfs snapshotter's) is mounted here,
/// directly: the crate's `mount_rootfs` forks a child for every mount (so it
/// can chdir for long lowerdir lists) and waits for its exit through the
/// reaper, which cost 1.2 ms of every Create. Anything else goes to the crate.
pub fn mount_rootfs(
    m: &containerd_shim::protos::types::mount::Mount,
    target: &Path,
) -> containerd_shim::Result<()> {
    use nix::mount::MsFlags;
    let page = 4096;
    let direct = m.type_ == "overlay"
        && m.options.iter().map(|o| o.len() + 1).sum::<usize>() < page - 512
        && m.options
            .iter()
            .all(|o| o.contains('=') || o == "ro" || o == "rw");
    if !direct {
        return containerd_shim::mount::mount_rootfs(
            Some(m.type_.as_str()).filter(|t| !t.is_empty()),
            Some(m.source.as_str()),
            &m.options,
            target,
        );
    }
    let flags = if m.options.iter().any(|o| o == "ro") {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    let data: Vec<&str> = m
        .options
        .iter()
        .filter(|o| o.contains('='))
        .map(String::as_str)
        .collect();
    nix::mount::mount(
        Some(m.source.as_str()),
        target,
        Some("overlay"),
        flags,
        Some(data.join(",").as_str()),
    )
    .map_err(|e| containerd_shim::Error::IoError {
        context: format!("mount overlay on {}", target.display()),
        err: e.into(),
    })
}

/// Detaches every mount stacked on `target`, leaving the release of their
/// filesystems to a thread.
///
/// Unmounting an overlay syncs its upper filesystem (on ext4, a journal
/// commit): 1 to 4 ms here, on the path of every Delete, so of every
/// `ctr run --rm` and pod teardown. A lazy unmount detaches the mount from the
/// namespace at once, and when a descriptor still refers to it the filesystem
/// is released, synced, by that descriptor's close. The mount is gone from
/// every mount table when Delete answers; its sync runs beside the reply.
pub fn unmount(target: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut held = Vec::new();
    // Bounded: a target with more mounts stacked than this is not ours.
    for _ in 0..16 {
        let fd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(target);
        if nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH).is_err() {
            break;
        }
        held.extend(fd.ok());
    }
    if !held.is_empty() {
        let spawned = std::thread::Builder::new()
            .name("wisp-unmount".into())
            .spawn(move || drop(held));
        // Without a thread the descriptors close here, which only costs time.
        drop(spawned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn mounted_at(target: &Path) -> usize {
        let target = target.to_string_lossy();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(&*target))
            .count()
    }

    /// Every mount stacked on the rootfs goes, the one in use included (its
    /// release is left to a thread).
    #[test]
    fn unmount_detaches_every_stacked_mount() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("rootfs");
        std::fs::create_dir(&target).unwrap();
        for size in ["size=1m", "size=2m"] {
            nix::mount::mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(size),
            )
            .unwrap();
        }
        let busy = File::create(target.join("busy")).unwrap();
        assert_eq!(mounted_at(&target), 2);
        unmount(&target);
        assert_eq!(mounted_at(&target), 0, "mounts left on {target:?}");
        drop(busy);
        // Nothing is mounted there now: a second call finds nothing to do.
        unmount(&target);
        assert!(std::fs::read_dir(&target).unwrap().next().is_none());
    }
}
