use super::*;

fn profile(json: &str) -> LinuxSeccomp {
    serde_json::from_str(json).unwrap()
}

/// Runs `checks` (syscall, first argument, whether it must succeed) in a
/// forked child under `filter`; the index + 1 of the first that behaves
/// otherwise, or 0.
fn run_checks(filter: &Filter, checks: &[(libc::c_long, u64, bool)]) -> i32 {
    // SAFETY: the child only makes system calls on memory it already has
    // (no allocation, no lock) and leaves with _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || load(filter).is_err() {
                libc::_exit(100);
            }
            for (i, (nr, arg, ok)) in checks.iter().enumerate() {
                let r = libc::syscall(*nr, *arg);
                if (r >= 0) != *ok {
                    libc::_exit(i as i32 + 1);
                }
            }
            libc::_exit(0);
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert!(
            libc::WIFEXITED(status),
            "child ended by a signal: {status:#x}"
        );
        libc::WEXITSTATUS(status)
    }
}

#[test]
fn a_profile_allows_and_denies_by_name_and_argument() {
    let filter = compile(&profile(
        r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["exit_group", "exit", "write", "rt_sigreturn", "no_such_syscall"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["getpid"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 5, "op": "SCMP_CMP_EQ"}]},
            {"names": ["gettid"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 8589934592, "op": "SCMP_CMP_GT"}]},
            {"names": ["getuid"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 240, "valueTwo": 48, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["getgid"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 7, "op": "SCMP_CMP_NE"}]},
            {"names": ["geteuid"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 10, "op": "SCMP_CMP_LE"}]},
            {"names": ["getegid"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 10, "op": "SCMP_CMP_LT"}]},
            {"names": ["getpgrp"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 10, "op": "SCMP_CMP_GE"}]}
        ]
    }"#,
    ))
    .unwrap();
    let checks = [
        (libc::SYS_getpid, 5, true),
        (libc::SYS_getpid, 6, false),
        (libc::SYS_getpid, 5 | 1 << 32, false),
        (libc::SYS_gettid, 1 << 33, false),
        (libc::SYS_gettid, (1 << 33) + 1, true),
        (libc::SYS_gettid, 1 << 34, true),
        (libc::SYS_gettid, 7, false),
        (libc::SYS_getuid, 0x3f, true),
        (libc::SYS_getuid, 0x4f, false),
        (libc::SYS_getgid, 7, false),
        (libc::SYS_getgid, 8, true),
        (libc::SYS_getgid, 7 | 1 << 40, true),
        (libc::SYS_geteuid, 10, true),
        (libc::SYS_geteuid, 11, false),
        (libc::SYS_geteuid, 1 << 32, false),
        (libc::SYS_getegid, 9, true),
        (libc::SYS_getegid, 10, false),
        (libc::SYS_getpgrp, 10, true),
        (libc::SYS_getpgrp, 9, false),
        (libc::SYS_getppid, 0, false),
    ];
    assert_eq!(run_checks(&filter, &checks), 0);
}

#[test]
fn an_errno_rule_returns_its_errno() {
    let filter = compile(&profile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}"#,
    ))
    .unwrap();
    // SAFETY: as in `run_checks`.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || load(&filter).is_err() {
                libc::_exit(100);
            }
            let r = libc::syscall(libc::SYS_getppid);
            libc::_exit(if r == -1 {
                *libc::__errno_location()
            } else {
                0
            });
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert_eq!(libc::WEXITSTATUS(status), libc::ENOSYS);
    }
}

#[test]
fn what_cannot_be_applied_is_refused_by_name() {
    let notify = profile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}"#,
    );
    assert_eq!(compile(&notify), Err(SeccompError::Notify));
    let index = profile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#,
    );
    assert_eq!(
        compile(&index).unwrap_err().to_string(),
        "linux.seccomp: syscall `mkdir` has an argument index 6 (at most 5)"
    );
}
