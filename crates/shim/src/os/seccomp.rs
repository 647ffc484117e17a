//! OCI seccomp profiles compiled to classic BPF and loaded, without
//! libseccomp.
//!
//! The CRI's `RuntimeDefault` arrives in the spec as containerd's default
//! profile: an `SCMP_ACT_ERRNO` default and a list of allowed syscalls, some
//! with argument conditions. The compiled program checks the architecture
//! (the native one only: a syscall of another ABI, x32 included, ends the
//! process, which is stricter than a profile that lists it), then tries the
//! profile's rules in order, first match wins, then the default action.
//! Names the native architecture does not have are skipped, as runc and
//! libseccomp skip them (profiles cover many kernels and architectures).
//!
//! Compiled in the daemon at Create, so a profile the shim cannot apply
//! fails Create naming it; loaded by the container process as its last step.

use std::str::FromStr;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use serde::{Deserialize, Serialize};
use syscalls::Sysno;

/// One classic BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// A compiled profile, ready to load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub program: Vec<Insn>,
    /// `SECCOMP_FILTER_FLAG_*` for seccomp(2).
    pub flags: u32,
}

/// Why a profile cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SeccompError {
    #[error(
        "linux.seccomp: SCMP_ACT_NOTIFY needs a seccomp agent, which this runtime does not run"
    )]
    Notify,
    #[error("linux.seccomp: syscall `{0}` has an argument index {1} (at most 5)")]
    ArgIndex(String, usize),
    #[error("linux.seccomp: the profile compiles to {0} BPF instructions, over the kernel's 4096")]
    TooLong(usize),
}

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;
const MAX_INSNS: usize = 4096;

const RET_KILL_THREAD: u32 = 0x0000_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARGS: u32 = 16;

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xc000_00b7;
/// x32 syscalls on x86_64 carry this bit in their number.
const X32_BIT: u32 = 0x4000_0000;

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<u32, SeccompError> {
    use LinuxSeccompAction as A;
    let data = errno.unwrap_or(libc::EPERM as u32) & 0xffff;
    Ok(match a {
        A::ScmpActKill | A::ScmpActKillThread => RET_KILL_THREAD,
        A::ScmpActKillProcess => RET_KILL_PROCESS,
        A::ScmpActTrap => RET_TRAP,
        A::ScmpActErrno => RET_ERRNO | data,
        A::ScmpActTrace => RET_TRACE | data,
        A::ScmpActLog => RET_LOG,
        A::ScmpActAllow => RET_ALLOW,
        A::ScmpActNotify => return Err(SeccompError::Notify),
    })
}

/// A jump target while a rule's block is built.
#[derive(Clone, Copy)]
enum To {
    Rel(u8),
    /// The end of the block: the rule does not match.
    Fail,
}

struct Pending {
    code: u16,
    jt: To,
    jf: To,
    k: u32,
}

fn stmt(code: u16, k: u32) -> Pending {
    Pending {
        code,
        jt: To::Rel(0),
        jf: To::Rel(0),
        k,
    }
}

fn jump(code: u16, k: u32, jt: To, jf: To) -> Pending {
    Pending { code, jt, jf, k }
}

/// The checks of one argument condition; falls through when it holds.
fn condition(arg: &LinuxSeccompArg, out: &mut Vec<Pending>) {
    let (lo, hi) = (
        ARGS + 8 * arg.index() as u32,
        ARGS + 8 * arg.index() as u32 + 4,
    );
    let v = arg.value();
    let (vlo, vhi) = (v as u32, (v >> 32) as u32);
    use LinuxSeccompOperator as Op;
    use To::{Fail, Rel};
    match arg.op() {
        Op::ScmpCmpEq => out.extend([
            stmt(LD_W_ABS, hi),
            jump(JEQ_K, vhi, Rel(0), Fail),
            stmt(LD_W_ABS, lo),
            jump(JEQ_K, vlo, Rel(0), Fail),
        ]),
        Op::ScmpCmpNe => out.extend([
            stmt(LD_W_ABS, hi),
            jump(JEQ_K, vhi, Rel(0), Rel(2)),
            stmt(LD_W_ABS, lo),
            jump(JEQ_K, vlo, Fail, Rel(0)),
        ]),
        Op::ScmpCmpGt | Op::ScmpCmpGe => out.extend([
            stmt(LD_W_ABS, hi),
            jump(JGT_K, vhi, Rel(3), Rel(0)),
            jump(JEQ_K, vhi, Rel(0), Fail),
            stmt(LD_W_ABS, lo),
            jump(
                if arg.op() == Op::ScmpCmpGt {
                    JGT_K
                } else {
                    JGE_K
                },
                vlo,
                Rel(0),
                Fail,
            ),
        ]),
        Op::ScmpCmpLt | Op::ScmpCmpLe => out.extend([
            stmt(LD_W_ABS, hi),
            jump(JGT_K, vhi, Fail, Rel(0)),
            jump(JEQ_K, vhi, Rel(0), Rel(2)),
            stmt(LD_W_ABS, lo),
            jump(
                if arg.op() == Op::ScmpCmpLt {
                    JGE_K
                } else {
                    JGT_K
                },
                vlo,
                Fail,
                Rel(0),
            ),
        ]),
        Op::ScmpCmpMaskedEq => {
            // OCI: `value` is the mask, `valueTwo` the expected bits.
            let want = arg.value_two().unwrap_or(0);
            out.extend([
                stmt(LD_W_ABS, hi),
                stmt(AND_K, vhi),
                jump(JEQ_K, (want >> 32) as u32, Rel(0), Fail),
                stmt(LD_W_ABS, lo),
                stmt(AND_K, vlo),
                jump(JEQ_K, want as u32, Rel(0), Fail),
            ])
        }
    }
}

/// Appends one rule: `nr` with `args` (all must hold) returns `ret`. Leaves
/// the syscall number in the accumulator for the next rule.
fn rule(nr: u32, args: &[&LinuxSeccompArg], ret: u32, prog: &mut Vec<Insn>) {
    let mut body = Vec::new();
    for a in args {
        condition(a, &mut body);
    }
    body.push(stmt(RET_K, ret));
    if !args.is_empty() {
        // The conditions loaded arguments: reload the number.
        body.push(stmt(LD_W_ABS, NR));
    }
    // Where a failed condition goes: the reload (or past the return).
    let end = if args.is_empty() {
        body.len()
    } else {
        body.len() - 1
    };
    let skip = u8::try_from(end).expect("a rule's block is short");
    prog.push(Insn {
        code: JEQ_K,
        jt: 0,
        jf: skip,
        k: nr,
    });
    for (i, p) in body.into_iter().enumerate() {
        let resolve = |t: To| match t {
            To::Rel(n) => n,
            To::Fail => (end - i - 1) as u8,
        };
        prog.push(Insn {
            code: p.code,
            jt: resolve(p.jt),
            jf: resolve(p.jf),
            k: p.k,
        });
    }
}

/// Compiles `profile` for the native architecture.
pub fn compile(profile: &LinuxSeccomp) -> Result<Filter, SeccompError> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    // Another ABI's syscall numbers mean other syscalls: never let one reach
    // a default that allows.
    let foreign = if matches!(default, RET_ALLOW | RET_LOG) || default & 0xffff_0000 == RET_TRACE {
        RET_KILL_PROCESS
    } else {
        default
    };
    let mut prog = vec![
        Insn {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: ARCH,
        },
        Insn {
            code: JEQ_K,
            jt: 1,
            jf: 0,
            k: NATIVE_ARCH,
        },
        Insn {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: foreign,
        },
        Insn {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: NR,
        },
    ];
    if cfg!(target_arch = "x86_64") {
        prog.extend([
            Insn {
                code: JGE_K,
                jt: 0,
                jf: 1,
                k: X32_BIT,
            },
            Insn {
                code: RET_K,
                jt: 0,
                jf: 0,
                k: foreign,
            },
        ]);
    }
    for call in profile.syscalls().as_deref().unwrap_or_default() {
        let ret = action(call.action(), call.errno_ret())?;
        let args: Vec<&LinuxSeccompArg> =
            call.args().as_deref().unwrap_or_default().iter().collect();
        for name in call.names() {
            if let Some(a) = args.iter().find(|a| a.index() > 5) {
                return Err(SeccompError::ArgIndex(name.clone(), a.index()));
            }
            let Ok(sysno) = Sysno::from_str(name) else {
                tracing::debug!("seccomp: `{name}` is no syscall of this architecture; skipped");
                continue;
            };
            let nr = sysno.id() as u32;
            // Conditions on distinct arguments must all hold; several on the
            // same argument are alternatives (runc's reading of libseccomp).
            let mut indices: Vec<usize> = args.iter().map(|a| a.index()).collect();
            indices.sort_unstable();
            indices.dedup();
            if indices.len() == args.len() {
                rule(nr, &args, ret, &mut prog);
            } else {
                for a in &args {
                    rule(nr, &[a], ret, &mut prog);
                }
            }
        }
    }
    prog.push(Insn {
        code: RET_K,
        jt: 0,
        jf: 0,
        k: default,
    });
    if prog.len() > MAX_INSNS {
        return Err(SeccompError::TooLong(prog.len()));
    }
    let flags = profile
        .flags()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .fold(0u32, |f, flag| {
            f | match flag {
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 1,
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4,
            }
        });
    Ok(Filter {
        program: prog,
        flags,
    })
}

#[repr(C)]
struct Fprog {
    len: libc::c_ushort,
    filter: *const Insn,
}

/// Loads `filter` on the calling thread (and, with TSYNC, every thread).
/// Needs no_new_privs or CAP_SYS_ADMIN. Makes one system call and
/// allocates nothing.
pub fn load(filter: &Filter) -> std::io::Result<()> {
    let prog = Fprog {
        len: filter.program.len() as libc::c_ushort,
        filter: filter.program.as_ptr(),
    };
    // SAFETY: seccomp(2) reads `prog` and the instructions it points to,
    // both alive for the call; `Insn` has `struct sock_filter`'s layout.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            1 as libc::c_ulong, // SECCOMP_SET_MODE_FILTER
            filter.flags as libc::c_ulong,
            &prog as *const Fprog,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
