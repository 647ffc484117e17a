//! A container process's credentials as runc sets them: user, groups and
//! the five capability sets, shared by the pod sandbox's cloned child and
//! the Wasm container process.
//!
//! [`apply`] makes raw system calls only and allocates nothing, so a cloned
//! copy of the multithreaded daemon may call it (see `sandbox.rs`).

use std::collections::HashSet;

use oci_spec::runtime::{Capability, LinuxCapabilities, PosixRlimitType};
use serde::{Deserialize, Serialize};

/// The capability sets as bit masks (bit n: capability number n).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Caps {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

impl Caps {
    pub fn from_spec(c: &LinuxCapabilities) -> Self {
        let mask = |set: &Option<HashSet<Capability>>| {
            set.iter()
                .flatten()
                .fold(0u64, |m, cap| m | 1u64 << cap_number(*cap))
        };
        Caps {
            bounding: mask(c.bounding()),
            effective: mask(c.effective()),
            permitted: mask(c.permitted()),
            inheritable: mask(c.inheritable()),
            ambient: mask(c.ambient()),
        }
    }
}

/// Who the process becomes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Creds {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// The whole supplementary list (the shim's own groups are not the
    /// container's).
    pub groups: Vec<libc::gid_t>,
    /// `None`: the spec names no capabilities, and a switch to a non-zero
    /// uid clears them all, as the kernel does.
    pub caps: Option<Caps>,
}

/// The highest capability number this kernel knows.
pub fn cap_last() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Which step of [`apply`] failed (errno is in `errno`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredStep {
    User,
    Caps,
}

/// Switches the calling thread to `creds`, in runc's order (libcontainer's
/// finalizeNamespace): the bounding set while still root (PR_CAPBSET_DROP
/// needs CAP_SETPCAP, which a non-zero uid no longer has in its effective
/// set), keep-caps so the user switch keeps the permitted set, the switch,
/// keep-caps cleared, then the sets the spec names and the ambient ones.
///
/// # Safety
/// Raw system calls on the caller's thread only: the caller must have a
/// single thread (the set*id calls are not broadcast to other threads, as
/// glibc's wrappers would, which a cloned copy of a threaded process must
/// not use: they wait on threads that do not exist there).
pub unsafe fn apply(creds: &Creds, cap_last: u32) -> Result<(), CredStep> {
    // SAFETY: plain system calls on memory `creds` owns.
    unsafe {
        if let Some(caps) = creds.caps {
            for cap in 0..=cap_last {
                if caps.bounding & (1u64 << cap) == 0
                    && libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0
                {
                    return Err(CredStep::Caps);
                }
            }
        }
        let keep = creds.caps.is_some();
        if keep && libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            return Err(CredStep::User);
        }
        if libc::syscall(
            libc::SYS_setgroups,
            creds.groups.len() as libc::c_ulong,
            creds.groups.as_ptr(),
        ) != 0
            || libc::syscall(libc::SYS_setresgid, creds.gid, creds.gid, creds.gid) != 0
            || libc::syscall(libc::SYS_setresuid, creds.uid, creds.uid, creds.uid) != 0
        {
            return Err(CredStep::User);
        }
        if keep && libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0 {
            return Err(CredStep::User);
        }
        let Some(caps) = creds.caps else {
            return Ok(());
        };
        let mut header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [
            CapData {
                effective: caps.effective as u32,
                permitted: caps.permitted as u32,
                inheritable: caps.inheritable as u32,
            },
            CapData {
                effective: (caps.effective >> 32) as u32,
                permitted: (caps.permitted >> 32) as u32,
                inheritable: (caps.inheritable >> 32) as u32,
            },
        ];
        if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) != 0 {
            return Err(CredStep::Caps);
        }
        // Ambient capabilities survive the exec of a non-setuid program;
        // each must already be permitted and inheritable.
        for cap in 0..=cap_last {
            if caps.ambient & (1u64 << cap) != 0
                && libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                ) != 0
            {
                return Err(CredStep::Caps);
            }
        }
        Ok(())
    }
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The kernel's number of a resource limit.
pub fn rlimit_resource(t: PosixRlimitType) -> libc::c_int {
    use PosixRlimitType as T;
    (match t {
        T::RlimitCpu => libc::RLIMIT_CPU,
        T::RlimitFsize => libc::RLIMIT_FSIZE,
        T::RlimitData => libc::RLIMIT_DATA,
        T::RlimitStack => libc::RLIMIT_STACK,
        T::RlimitCore => libc::RLIMIT_CORE,
        T::RlimitRss => libc::RLIMIT_RSS,
        T::RlimitNproc => libc::RLIMIT_NPROC,
        T::RlimitNofile => libc::RLIMIT_NOFILE,
        T::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        T::RlimitAs => libc::RLIMIT_AS,
        T::RlimitLocks => libc::RLIMIT_LOCKS,
        T::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        T::RlimitNice => libc::RLIMIT_NICE,
        T::RlimitRtprio => libc::RLIMIT_RTPRIO,
        T::RlimitRttime => libc::RLIMIT_RTTIME,
    }) as libc::c_int
}

/// The kernel's number of a capability.
pub fn cap_number(c: Capability) -> u32 {
    use Capability as C;
    match c {
        C::Chown => 0,
        C::DacOverride => 1,
        C::DacReadSearch => 2,
        C::Fowner => 3,
        C::Fsetid => 4,
        C::Kill => 5,
        C::Setgid => 6,
        C::Setuid => 7,
        C::Setpcap => 8,
        C::LinuxImmutable => 9,
        C::NetBindService => 10,
        C::NetBroadcast => 11,
        C::NetAdmin => 12,
        C::NetRaw => 13,
        C::IpcLock => 14,
        C::IpcOwner => 15,
        C::SysModule => 16,
        C::SysRawio => 17,
        C::SysChroot => 18,
        C::SysPtrace => 19,
        C::SysPacct => 20,
        C::SysAdmin => 21,
        C::SysBoot => 22,
        C::SysNice => 23,
        C::SysResource => 24,
        C::SysTime => 25,
        C::SysTtyConfig => 26,
        C::Mknod => 27,
        C::Lease => 28,
        C::AuditWrite => 29,
        C::AuditControl => 30,
        C::Setfcap => 31,
        C::MacOverride => 32,
        C::MacAdmin => 33,
        C::Syslog => 34,
        C::WakeAlarm => 35,
        C::BlockSuspend => 36,
        C::AuditRead => 37,
        C::Perfmon => 38,
        C::Bpf => 39,
        C::CheckpointRestore => 40,
    }
}
