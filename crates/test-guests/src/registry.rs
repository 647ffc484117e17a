//! A real OCI registry for tests: the CNCF Distribution registry
//! (`scripts/install-registry.sh`, found through `WISP_REGISTRY_BIN`), serving
//! plain HTTP on a loopback port of its own choosing, with its storage in a
//! directory the test owns. Killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long the registry may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running registry.
#[derive(Debug)]
pub struct TestRegistry {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl TestRegistry {
    /// Starts a registry storing under `dir`. With `users`, every request
    /// needs one of these `(user, password)` pairs (htpasswd, bcrypt).
    pub fn start(dir: &Path, users: &[(&str, &str)]) -> Self {
        let bin = std::env::var_os("WISP_REGISTRY_BIN")
            .map(|d| PathBuf::from(d).join("registry"))
            .filter(|b| b.is_file())
            .expect(
                "WISP_REGISTRY_BIN names no registry build: run \
                 `export WISP_REGISTRY_BIN=$(bash scripts/install-registry.sh)`",
            );
        std::fs::create_dir_all(dir).expect("create the registry's directory");
        let mut auth = String::new();
        if !users.is_empty() {
            let htpasswd = dir.join("htpasswd");
            let lines: String = users
                .iter()
                .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).expect("bcrypt")))
                .collect();
            std::fs::write(&htpasswd, lines).expect("write htpasswd");
            auth = format!(
                "auth:\n  htpasswd:\n    realm: wisp-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:0\n  secret: wisp-test\n{auth}",
                dir.join("data").display()
            ),
        )
        .expect("write the registry config");
        let log = dir.join("registry.log");
        let mut child = Command::new(&bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        // The registry logs the address it bound (`listening on 127.0.0.1:N`);
        // the rest of its log goes to a file for failures to show.
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        let log_path = log.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(&log_path).ok();
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = file.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if let Some(rest) = line.split("msg=\"listening on ").nth(1)
                    && let Some(t) = tx.take()
                {
                    let _ = t.send(rest.split('"').next().unwrap_or_default().to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the registry did not listen within {START_TIMEOUT:?}; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        Self { child, addr, log }
    }

    /// `127.0.0.1:PORT`: the registry part of references to it.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
