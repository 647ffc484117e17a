//! The node installer: the shim on the node, the handlers in containerd's
//! config. Idempotent: a second run changes nothing and says so.
//!
//! - The shim binary is copied into the bin directory under both of its
//!   names ([`crate::handlers::PER_POD`] and [`crate::handlers::NODE`]); a file already holding
//!   the same bytes is left alone. Each copy is written beside its target and
//!   renamed over it, so a shim starting meanwhile runs the old or the new
//!   binary, never half of one.
//! - containerd's config gets a `runtimes.<handler>` table with the runtime
//!   type for each handler, under the CRI plugin's name for the config's
//!   `version` (1: `cri`; 2: `io.containerd.grpc.v1.cri`, containerd 1.x;
//!   3: `io.containerd.cri.v1.runtime`, containerd 2.x). The rest of the
//!   file, comments included, is kept byte for byte. It is written to a
//!   temporary file and renamed, so a bad run never leaves half a config.
//! - containerd reads its config at start only: when the config changed the
//!   report says a restart is needed; a new shim binary needs none (each new
//!   pod starts the binary on disk).

use std::fmt;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use toml_edit::{DocumentMut, Item, Table, value};

use crate::handlers::{HANDLERS, PER_POD};

/// Where and what to install.
#[derive(Debug, Clone)]
pub struct Options {
    /// The host's root; the paths below are inside it (`/host` in the
    /// installer DaemonSet's pod, `/` on the node itself).
    pub root: PathBuf,
    /// containerd's config file.
    pub config: PathBuf,
    /// Where containerd finds shims (on its PATH).
    pub bin_dir: PathBuf,
    /// The shim binary to install.
    pub shim: PathBuf,
    /// The config version to write when the file is missing or empty (2 for
    /// containerd 1.x, 3 for 2.x); an existing file keeps its own.
    pub new_config_version: i64,
    /// Report what would change without changing anything.
    pub dry_run: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            config: PathBuf::from("/etc/containerd/config.toml"),
            bin_dir: PathBuf::from("/usr/local/bin"),
            shim: PathBuf::from(PER_POD.binary),
            new_config_version: 2,
            dry_run: false,
        }
    }
}

/// Why the installer stopped; nothing was changed past the step named.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot read the shim binary {path}: {source}")]
    ReadShim {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a Linux executable (it does not start with an ELF header)")]
    NotAnExecutable { path: PathBuf },
    #[error("cannot read containerd's config {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("containerd's config {path} is not valid TOML: {source}")]
    ParseConfig {
        path: PathBuf,
        #[source]
        source: Box<toml_edit::TomlError>,
    },
    #[error("containerd's config {path}: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One thing the installer did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    ShimInstalled(PathBuf),
    ShimUpdated(PathBuf),
    ShimUnchanged(PathBuf),
    HandlerAdded {
        handler: String,
        config: PathBuf,
    },
    HandlerUpdated {
        handler: String,
        config: PathBuf,
        was: String,
    },
    HandlerUnchanged {
        handler: String,
        config: PathBuf,
    },
}

/// What the installer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub steps: Vec<Step>,
    /// containerd must restart to load the new handlers.
    pub restart_needed: bool,
    pub dry_run: bool,
}

impl Report {
    /// Whether anything was (or would be) changed.
    pub fn changed(&self) -> bool {
        self.steps
            .iter()
            .any(|s| !matches!(s, Step::ShimUnchanged(_) | Step::HandlerUnchanged { .. }))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let would = if self.dry_run { "would be " } else { "" };
        for step in &self.steps {
            match step {
                Step::ShimInstalled(p) => writeln!(f, "shim {} {would}installed", p.display())?,
                Step::ShimUpdated(p) => writeln!(f, "shim {} {would}updated", p.display())?,
                Step::ShimUnchanged(p) => writeln!(f, "shim {} unchanged", p.display())?,
                Step::HandlerAdded { handler, config } => writeln!(
                    f,
                    "runtime handler `{handler}` {would}added to {}",
                    config.display()
                )?,
                Step::HandlerUpdated {
                    handler,
                    config,
                    was,
                } => writeln!(
                    f,
                    "runtime handler `{handler}` in {} {would}updated (its runtime_type was `{was}`)",
                    config.display()
                )?,
                Step::HandlerUnchanged { handler, config } => writeln!(
                    f,
                    "runtime handler `{handler}` in {} unchanged",
                    config.display()
                )?,
            }
        }
        if self.restart_needed {
            writeln!(
                f,
                "containerd must be restarted to load the handlers (e.g. systemctl restart containerd)"
            )
        } else {
            writeln!(f, "containerd needs no restart")
        }
    }
}

/// Installs the shim and the handlers as `opts` says.
pub fn install(opts: &Options) -> Result<Report, InstallError> {
    let shim = std::fs::read(&opts.shim).map_err(|source| InstallError::ReadShim {
        path: opts.shim.clone(),
        source,
    })?;
    if !shim.starts_with(b"\x7fELF") {
        return Err(InstallError::NotAnExecutable {
            path: opts.shim.clone(),
        });
    }
    // The config is read and edited before anything is written, so a bad
    // config stops the run with the node untouched.
    let config_path = under(&opts.root, &opts.config);
    let (config_text, config_steps) = edit_config(&config_path, opts.new_config_version)?;
    let mut steps = Vec::new();
    let bin_dir = under(&opts.root, &opts.bin_dir);
    for h in HANDLERS {
        let target = bin_dir.join(h.binary);
        let step = match std::fs::read(&target) {
            Ok(old) if sha256(&old) == sha256(&shim) => Step::ShimUnchanged(target),
            Ok(_) => Step::ShimUpdated(target),
            Err(_) => Step::ShimInstalled(target),
        };
        if !opts.dry_run
            && let Step::ShimInstalled(p) | Step::ShimUpdated(p) = &step
        {
            write_atomically(p, &shim, 0o755)?;
        }
        steps.push(step);
    }
    let restart_needed = config_text.is_some();
    if let (Some(text), false) = (&config_text, opts.dry_run) {
        write_atomically(&config_path, text.as_bytes(), 0o644)?;
    }
    steps.extend(config_steps);
    Ok(Report {
        steps,
        restart_needed,
        dry_run: opts.dry_run,
    })
}

/// `path` inside `root`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The CRI plugin's table name for a config `version`.
fn cri_plugin(version: i64) -> Option<&'static str> {
    match version {
        1 => Some("cri"),
        2 => Some("io.containerd.grpc.v1.cri"),
        3 => Some("io.containerd.cri.v1.runtime"),
        _ => None,
    }
}

/// The config with the handlers added: the new text (`None` when it already
/// had them) and what changed.
fn edit_config(path: &Path, new_version: i64) -> Result<(Option<String>, Vec<Step>), InstallError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(InstallError::ReadConfig {
                path: path.into(),
                source,
            });
        }
    };
    let mut doc: DocumentMut = text.parse().map_err(|e| InstallError::ParseConfig {
        path: path.into(),
        source: Box::new(e),
    })?;
    let bad = |reason: String| InstallError::BadConfig {
        path: path.into(),
        reason,
    };
    let version = match doc.get("version") {
        Some(v) => v
            .as_integer()
            .ok_or_else(|| bad("`version` is not an integer".into()))?,
        // containerd reads a config without a version as version 1; an
        // empty one has nothing to keep, so it gets a current version.
        None if doc.as_table().is_empty() => {
            doc.insert("version", value(new_version));
            new_version
        }
        None => 1,
    };
    let plugin = cri_plugin(version).ok_or_else(|| {
        bad(format!(
            "unknown config version {version} (expected 1, 2 or 3)"
        ))
    })?;
    let mut steps = Vec::new();
    let mut changed = false;
    let runtimes = table_at(
        doc.as_table_mut(),
        &["plugins", plugin, "containerd", "runtimes"],
    )
    .map_err(bad)?;
    for h in HANDLERS {
        let handler = h.name.to_string();
        let config = path.to_path_buf();
        let entry = runtimes
            .entry(h.name)
            .or_insert_with(|| Item::Table(Table::new()));
        let entry = entry
            .as_table_mut()
            .ok_or_else(|| bad(format!("`runtimes.{}` is not a table", h.name)))?;
        match entry.get("runtime_type").and_then(|v| v.as_str()) {
            Some(t) if t == h.runtime_type => {
                steps.push(Step::HandlerUnchanged { handler, config });
                continue;
            }
            Some(was) => steps.push(Step::HandlerUpdated {
                handler,
                config,
                was: was.to_string(),
            }),
            None => steps.push(Step::HandlerAdded { handler, config }),
        }
        entry.insert("runtime_type", value(h.runtime_type));
        changed = true;
    }
    Ok((changed.then(|| doc.to_string()), steps))
}

/// The table at `keys`, made (as implicit parents, so only the leaf gets a
/// header) where missing.
fn table_at<'a>(mut table: &'a mut Table, keys: &[&str]) -> Result<&'a mut Table, String> {
    for (i, key) in keys.iter().enumerate() {
        let item = table.entry(key).or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        table = item
            .as_table_mut()
            .ok_or_else(|| format!("`{}` is not a table", keys[..=i].join(".")))?;
    }
    Ok(table)
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let err = |source| InstallError::Write {
        path: path.into(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(config: Option<&str>) -> (tempfile::TempDir, Options) {
        let dir = tempfile::tempdir().unwrap();
        let shim = dir.path().join("shim");
        std::fs::write(&shim, b"\x7fELF fake shim").unwrap();
        if let Some(c) = config {
            std::fs::create_dir_all(dir.path().join("root/etc/containerd")).unwrap();
            std::fs::write(dir.path().join("root/etc/containerd/config.toml"), c).unwrap();
        }
        let opts = Options {
            root: dir.path().join("root"),
            shim,
            ..Options::default()
        };
        (dir, opts)
    }

    fn config(opts: &Options) -> String {
        std::fs::read_to_string(opts.root.join("etc/containerd/config.toml")).unwrap()
    }

    #[test]
    fn a_second_run_changes_nothing() {
        let (_d, opts) = setup(None);
        let first = install(&opts).unwrap();
        assert!(first.restart_needed && first.changed(), "{first}");
        let text = config(&opts);
        assert!(text.starts_with("version = 2\n"), "{text}");
        assert!(
            text.contains(
                "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wisp]\n\
                 runtime_type = \"io.containerd.wisp.v1\"\n"
            ),
            "{text}"
        );
        assert!(text.contains("runtime_type = \"io.containerd.wisp-node.v1\""));
        for b in ["containerd-shim-wisp-v1", "containerd-shim-wisp-node-v1"] {
            let p = opts.root.join("usr/local/bin").join(b);
            assert_eq!(std::fs::read(&p).unwrap(), b"\x7fELF fake shim");
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o755);
        }
        let second = install(&opts).unwrap();
        assert!(!second.restart_needed && !second.changed(), "{second}");
        assert_eq!(config(&opts), text);
        assert!(second.to_string().contains("containerd needs no restart"));
    }

    #[test]
    fn existing_config_is_kept_and_the_version_picks_the_plugin() {
        let original = "# ours\nversion = 3\n\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\" # keep\n";
        let (_d, opts) = setup(Some(original));
        install(&opts).unwrap();
        let text = config(&opts);
        assert!(text.starts_with(original), "{text}");
        assert!(
            text.contains(
                "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wisp-node]"
            )
        );
    }

    #[test]
    fn a_wrong_runtime_type_is_corrected_and_reported() {
        let (_d, opts) = setup(Some(
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wisp]\nruntime_type = \"io.containerd.runc.v2\"\n",
        ));
        let r = install(&opts).unwrap();
        assert!(r.steps.contains(&Step::HandlerUpdated {
            handler: "wisp".into(),
            config: opts.root.join("etc/containerd/config.toml"),
            was: "io.containerd.runc.v2".into(),
        }));
        assert!(config(&opts).contains("runtime_type = \"io.containerd.wisp.v1\""));
    }

    #[test]
    fn a_dry_run_writes_nothing() {
        let (_d, mut opts) = setup(None);
        opts.dry_run = true;
        let r = install(&opts).unwrap();
        assert!(r.changed() && r.restart_needed);
        assert!(r.to_string().contains("would be installed"), "{r}");
        assert!(!opts.root.exists());
    }

    #[test]
    fn bad_input_names_the_problem_and_changes_nothing() {
        let (_d, opts) = setup(Some("version = 2\n[plugins\n"));
        let e = install(&opts).unwrap_err().to_string();
        assert!(
            e.contains("is not valid TOML") && e.contains("config.toml"),
            "{e}"
        );
        assert!(!opts.root.join("usr/local/bin").exists());

        let (_d, opts) = setup(Some("version = 9\n"));
        let e = install(&opts).unwrap_err().to_string();
        assert!(e.contains("unknown config version 9"), "{e}");

        let (_d, opts) = setup(Some(
            "version = 2\n[plugins]\n\"io.containerd.grpc.v1.cri\" = 1\n",
        ));
        let e = install(&opts).unwrap_err().to_string();
        assert!(e.contains("is not a table"), "{e}");

        let (_d, mut opts) = setup(None);
        std::fs::write(&opts.shim, b"#!/bin/sh\n").unwrap();
        let e = install(&opts).unwrap_err().to_string();
        assert!(e.contains("not a Linux executable"), "{e}");
        opts.shim = opts.shim.with_file_name("missing");
        let e = install(&opts).unwrap_err().to_string();
        assert!(e.contains("cannot read the shim binary"), "{e}");
    }
}
