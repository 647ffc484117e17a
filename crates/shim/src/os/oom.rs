//! OOM kills in the memory cgroups of the shim's containers, reported to
//! containerd as TaskOOM so that CRI gives the container the reason
//! `OOMKilled`, as containerd's runc shim does.
//!
//! One thread watches every container: on cgroup v1 an eventfd registered
//! for `memory.oom_control` through `cgroup.event_control`, which the kernel
//! signals when the cgroup runs out of memory (and when it is removed); on
//! v2 an inotify watch of `memory.events`, modified by any memory event, of
//! which only a grown `oom_kill` counter is a kill. A counter that can no
//! longer be read means the cgroup is gone, and so is the watch.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// What wakes the thread for one cgroup.
enum Source {
    /// v1: the eventfd, and `memory.oom_control`, open for as long as the
    /// registration should last.
    EventFd { efd: EventFd, _control: File },
    /// v2: an inotify instance watching `memory.events`.
    Inotify(Inotify),
}

impl Source {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::EventFd { efd, .. } => efd.as_fd(),
            Self::Inotify(i) => i.as_fd(),
        }
    }

    /// Empties the source so that level-triggered epoll stops reporting it.
    fn drain(&self) {
        match self {
            Self::EventFd { efd, .. } => {
                let _ = efd.read();
            }
            Self::Inotify(i) => while i.read_events().is_ok_and(|e| !e.is_empty()) {},
        }
    }
}

struct Watch {
    container: String,
    /// The file whose `oom_kill` line counts the cgroup's kills.
    counter: PathBuf,
    kills: u64,
    source: Source,
}

type Watches = Arc<Mutex<HashMap<u64, Watch>>>;

/// Watches containers' memory cgroups for OOM kills.
pub struct OomWatcher {
    epoll: Arc<Epoll>,
    watches: Watches,
    next: AtomicU64,
}

fn lock(w: &Watches) -> std::sync::MutexGuard<'_, HashMap<u64, Watch>> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

impl OomWatcher {
    /// Starts the watching thread; `on_oom(container)` runs on it for every
    /// kill.
    pub fn start(on_oom: impl Fn(&str) + Send + 'static) -> io::Result<Self> {
        let epoll = Arc::new(Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?);
        let watches = Watches::default();
        let (e, w) = (epoll.clone(), watches.clone());
        std::thread::Builder::new()
            .name("wisp-oom".into())
            .spawn(move || run(&e, &w, on_oom))?;
        Ok(Self {
            epoll,
            watches,
            next: AtomicU64::new(0),
        })
    }

    /// Watches the memory cgroup directory `dir` of `container`.
    pub fn watch(&self, container: &str, dir: &Path) -> io::Result<()> {
        let v2 = dir.join("memory.events");
        let (counter, source) = if v2.exists() {
            let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
            inotify.add_watch(&v2, AddWatchFlags::IN_MODIFY)?;
            (v2, Source::Inotify(inotify))
        } else {
            let counter = dir.join("memory.oom_control");
            let control = File::open(&counter)?;
            let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
            std::fs::write(
                dir.join("cgroup.event_control"),
                format!("{} {}", efd.as_fd().as_raw_fd(), control.as_raw_fd()),
            )?;
            (
                counter,
                Source::EventFd {
                    efd,
                    _control: control,
                },
            )
        };
        let kills = read_kills(&counter).ok_or_else(|| {
            io::Error::other(format!("no oom_kill counter in {}", counter.display()))
        })?;
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let mut watches = lock(&self.watches);
        self.epoll
            .add(source.fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))?;
        watches.insert(
            token,
            Watch {
                container: container.into(),
                counter,
                kills,
                source,
            },
        );
        Ok(())
    }

    /// Stops watching `container` (before its cgroup is removed).
    pub fn forget(&self, container: &str) {
        lock(&self.watches).retain(|_, w| {
            if w.container != container {
                return true;
            }
            let _ = self.epoll.delete(w.source.fd());
            false
        });
    }
}

fn run(epoll: &Epoll, watches: &Watches, on_oom: impl Fn(&str)) {
    let mut events = [EpollEvent::empty(); 16];
    loop {
        let n = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "OOM watcher: epoll failed; OOM kills go unreported");
                return;
            }
        };
        for ev in &events[..n] {
            let token = ev.data();

            let fired = {
                let mut map = lock(watches);
                let Some(w) = map.get_mut(&token) else {
                    continue;
                };
                w.source.drain();
                // v1 signals when the cgroup enters OOM, before the kernel
                // has picked and killed a process (the counter has not
                // grown yet): that signal is the kill, as runc counts it.
                let v1 = matches!(w.source, Source::EventFd { .. });
                match read_kills(&w.counter) {
                    Some(k) if v1 || k > w.kills => {
                        w.kills = k;
                        Some(w.container.clone())
                    }
                    Some(_) => None,
                    None => {
                        let _ = epoll.delete(w.source.fd());
                        map.remove(&token);
                        None
                    }
                }
            };
            if let Some(container) = fired {
                tracing::info!(container, "OOM kill in the container's memory cgroup");
                on_oom(&container);
            }
        }
    }
}

/// The `oom_kill` count of `memory.oom_control` (v1) or `memory.events`
/// (v2); None once the file is gone.
fn read_kills(counter: &Path) -> Option<u64> {
    std::fs::read_to_string(counter)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kill_counter_is_read_from_either_version() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("memory.oom_control");
        std::fs::write(&v1, "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n").unwrap();
        assert_eq!(read_kills(&v1), Some(3));
        let v2 = dir.path().join("memory.events");
        std::fs::write(
            &v2,
            "low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        assert_eq!(read_kills(&v2), Some(1));
        assert_eq!(read_kills(&dir.path().join("gone")), None);
    }

    /// A process that outgrows its cgroup's memory limit is killed by the
    /// kernel, and the watcher names its container once.
    #[test]
    fn an_oom_kill_in_a_watched_cgroup_is_reported() {
        use crate::os::cgroup::ContainerCgroup;
        use std::sync::mpsc;
        use std::time::Duration;
        if !nix::unistd::geteuid().is_root() || !Path::new("/bin/busybox").exists() {
            eprintln!("skipped: needs root and busybox-static");
            return;
        }
        let cgroup =
            ContainerCgroup::create(&format!("/wisp-test-oom-{}", std::process::id())).unwrap();
        let dir = cgroup.memory_dir().unwrap();
        let limit = (16 << 20).to_string();
        if dir.join("memory.max").exists() {
            std::fs::write(dir.join("memory.max"), &limit).unwrap();
            let _ = std::fs::write(dir.join("memory.swap.max"), "0");
        } else {
            std::fs::write(dir.join("memory.limit_in_bytes"), &limit).unwrap();
            let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), &limit);
        }
        let (tx, rx) = mpsc::channel();
        let watcher = OomWatcher::start(move |c| {
            let _ = tx.send(c.to_string());
        })
        .unwrap();
        watcher.watch("hog", &dir).unwrap();
        // A shell string that doubles until the kernel kills the shell.
        let mut hog = std::process::Command::new("/bin/busybox")
            .args(["sh", "-c", "sleep 0.3; a=x; while :; do a=$a$a; done"])
            .spawn()
            .unwrap();
        let joined = cgroup.add(hog.id());
        if joined.is_err() {
            let _ = hog.kill();
        }
        let status = hog.wait().unwrap();
        let reported = rx.recv_timeout(Duration::from_secs(10));
        watcher.forget("hog");
        cgroup.delete().unwrap();
        joined.unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        assert_eq!(reported.as_deref(), Ok("hog"));
        // Once: neither the kill's aftermath nor the removal is another.
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    }
}
