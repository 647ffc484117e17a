//! Linux containers (the pause container, sidecars) run by runc.
//!
//! runc is driven the way containerd's own runc shim drives it: `create` with
//! the container's stdio inherited by its init, `start`, `kill`, `exec
//! --detach`, `delete --force`. The shim is the subreaper, so the init and exec
//! processes are reaped (and their exits reported) here.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::os::stdio::{ChildStdio, run_cmd};

/// Env var naming the runc binary; `runc` on PATH by default.
pub const RUNC_ENV: &str = "WISP_RUNC";

/// Where a runc-run process's stdio goes.
pub enum RuncIo<'a> {
    /// Inherited by the process from runc.
    Stdio(ChildStdio),
    /// A terminal, whose master runc sends to this socket.
    Console(&'a Path),
}

impl RuncIo<'_> {
    /// Adds the flag a console needs; returns the stdio to inherit.
    fn apply(self, cmd: &mut Command) -> Option<ChildStdio> {
        match self {
            Self::Stdio(s) => Some(s),
            Self::Console(socket) => {
                cmd.arg("--console-socket").arg(socket);
                None
            }
        }
    }
}

/// One runc container; its state lives in the bundle, so nothing of it
/// outlives the bundle containerd removes.
#[derive(Debug, Clone)]
pub struct Runc {
    pub id: String,
    pub bundle: PathBuf,
    /// `--systemd-cgroup`: the spec's cgroupsPath is in the systemd form.
    /// Only `create` needs it; runc keeps the choice in its state.
    pub systemd_cgroup: bool,
}

impl Runc {
    pub fn new(id: &str, bundle: &Path) -> Self {
        Self {
            id: id.into(),
            bundle: bundle.into(),
            systemd_cgroup: false,
        }
    }

    fn root(&self) -> PathBuf {
        self.bundle.join("runc")
    }

    fn log(&self) -> PathBuf {
        self.bundle.join("runc-log.json")
    }

    fn command(&self) -> Command {
        let bin = std::env::var_os(RUNC_ENV).unwrap_or_else(|| "runc".into());
        let mut cmd = Command::new(bin);
        cmd.arg("--root")
            .arg(self.root())
            .arg("--log")
            .arg(self.log())
            .arg("--log-format")
            .arg("json");
        if self.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd
    }

    /// Runs `cmd`; on failure returns runc's last logged error.
    fn run(&self, what: &str, mut cmd: Command, stdio: Option<ChildStdio>) -> io::Result<()> {
        let capture = stdio.is_none();
        if let Some(s) = stdio {
            cmd.stdin(Stdio::from(s.stdin))
                .stdout(Stdio::from(s.stdout))
                .stderr(Stdio::from(s.stderr));
        } else {
            cmd.stdin(Stdio::null());
        }
        let out = run_cmd(&mut cmd, capture)?;
        if out.code == 0 {
            return Ok(());
        }
        let mut reason = self.last_error().unwrap_or_default();
        if reason.is_empty() {
            reason = String::from_utf8_lossy(&out.stderr).trim().to_string();
        }
        Err(io::Error::other(format!(
            "runc {what} failed (exit {}): {reason}",
            out.code
        )))
    }

    fn last_error(&self) -> Option<String> {
        let log = std::fs::read_to_string(self.log()).ok()?;
        log.lines().rev().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v.get("level")?.as_str()? == "error")
                .then(|| v.get("msg")?.as_str().map(String::from))?
        })
    }

    /// `runc VERB ID`.
    fn simple(&self, verb: &str) -> io::Result<()> {
        let mut cmd = self.command();
        cmd.arg(verb).arg(&self.id);
        self.run(verb, cmd, None)
    }

    /// `runc create`; returns the init's pid. With a `console` socket
    /// instead of stdio, the init gets a terminal whose master runc sends
    /// there (see `console.rs`).
    pub fn create(&self, io: RuncIo<'_>) -> io::Result<u32> {
        let pid_file = self.bundle.join("init.pid");
        let mut cmd = self.command();
        cmd.arg("create")
            .arg("--bundle")
            .arg(&self.bundle)
            .arg("--pid-file")
            .arg(&pid_file);
        let stdio = io.apply(&mut cmd);
        cmd.arg(&self.id);
        self.run("create", cmd, stdio)?;
        read_pid(&pid_file)
    }

    pub fn start(&self) -> io::Result<()> {
        self.simple("start")
    }

    /// `runc exec --detach` of a process spec (JSON); returns its pid.
    pub fn exec(&self, exec_id: &str, process_json: &[u8], io: RuncIo<'_>) -> io::Result<u32> {
        let spec = self.bundle.join(format!("exec-{exec_id}.json"));
        let pid_file = self.bundle.join(format!("exec-{exec_id}.pid"));
        std::fs::write(&spec, process_json)?;
        let mut cmd = self.command();
        cmd.arg("exec")
            .arg("--detach")
            .arg("--process")
            .arg(&spec)
            .arg("--pid-file")
            .arg(&pid_file);
        let stdio = io.apply(&mut cmd);
        cmd.arg(&self.id);
        let result = self.run("exec", cmd, stdio);
        let _ = std::fs::remove_file(&spec);
        result?;
        let pid = read_pid(&pid_file);
        let _ = std::fs::remove_file(&pid_file);
        pid
    }

    pub fn kill_all(&self, signal: u32) -> io::Result<()> {
        let mut cmd = self.command();
        cmd.arg("kill")
            .arg("--all")
            .arg(&self.id)
            .arg(signal.to_string());
        self.run("kill", cmd, None)
    }

    pub fn pause(&self) -> io::Result<()> {
        self.simple("pause")
    }

    pub fn resume(&self) -> io::Result<()> {
        self.simple("resume")
    }

    /// Applies new resources (a runtime-spec LinuxResources JSON).
    pub fn update(&self, resources_json: &[u8]) -> io::Result<()> {
        let file = self.bundle.join("update-resources.json");
        std::fs::write(&file, resources_json)?;
        let mut cmd = self.command();
        cmd.arg("update")
            .arg("--resources")
            .arg(&file)
            .arg(&self.id);
        let result = self.run("update", cmd, None);
        let _ = std::fs::remove_file(&file);
        result
    }

    /// `runc delete --force`: kills what is left and removes the cgroup.
    pub fn delete(&self) -> io::Result<()> {
        if !self.root().join(&self.id).exists() {
            return Ok(());
        }
        let mut cmd = self.command();
        cmd.arg("delete").arg("--force").arg(&self.id);
        self.run("delete", cmd, None)
    }
}

fn read_pid(path: &Path) -> io::Result<u32> {
    let text = std::fs::read_to_string(path)?;
    text.trim()
        .parse()
        .map_err(|_| io::Error::other(format!("bad pid file {}: {text:?}", path.display())))
}
