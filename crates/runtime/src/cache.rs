//! Content-addressed cache of compiled code on disk.
//!
//! An entry's key is a SHA-256 over the Wasm bytes, the wasmtime version and the
//! engine's compatibility hash (target, features, tunables such as the memory
//! reservation), so an entry made by another engine configuration is never even
//! looked up. Each entry is two files: `<key>.cwasm`, the artifact, written so it can
//! be memory-mapped (its code pages are shared with every process that maps it), and
//! `<key>.sha256`, the artifact's own digest. An entry is loaded only after its
//! digest checks out; anything else (truncated, flipped bits, a foreign file, a
//! version wasmtime refuses) is removed and rebuilt.
//!
//! Writes go to a temporary file in the same directory and are renamed into place,
//! so concurrent writers and crashes never leave a half-written entry under a key.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Bumped whenever the entry layout changes.
const LAYOUT_VERSION: &str = "wisp-code-cache-v1";

/// Errors of the code cache. A cache that cannot be written is not fatal to
/// callers (they compile in memory), but it is reported.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache directory cannot be created or written.
    #[error("failed to write code cache entry `{}`", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A compiled-code cache rooted at a directory.
#[derive(Debug, Clone)]
pub struct CodeCache {
    dir: PathBuf,
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A verified entry: deserialize this file.
    Hit(PathBuf),
    /// No entry.
    Miss,
    /// An entry existed but failed verification and was removed.
    Corrupt,
}

impl CodeCache {
    /// A cache rooted at `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key of `wasm` compiled as `kind` by `engine`.
    pub fn key(engine: &wasmtime::Engine, kind: &str, wasm: &[u8]) -> String {
        let mut h = ShaHasher(Sha256::new());
        h.0.update(LAYOUT_VERSION.as_bytes());
        h.0.update(env!("CARGO_PKG_VERSION").as_bytes());
        h.0.update(kind.as_bytes());
        engine.precompile_compatibility_hash().hash(&mut h);
        h.0.update(Sha256::digest(wasm));
        hex::encode(h.0.finalize())
    }

    fn paths(&self, key: &str) -> (PathBuf, PathBuf) {
        let sub = self.dir.join(&key[..2]);
        (
            sub.join(format!("{key}.cwasm")),
            sub.join(format!("{key}.sha256")),
        )
    }

    /// Looks `key` up and verifies the artifact's digest.
    pub fn lookup(&self, key: &str) -> Lookup {
        let (artifact, sum) = self.paths(key);
        let Ok(expected) = fs::read_to_string(&sum) else {
            return Lookup::Miss;
        };
        match fs::read(&artifact) {
            Ok(bytes) if hex::encode(Sha256::digest(&bytes)) == expected.trim() => {
                Lookup::Hit(artifact)
            }
            Ok(_) => {
                tracing::warn!(entry = %artifact.display(), "code cache entry failed its digest check; rebuilding");
                self.remove(key);
                Lookup::Corrupt
            }
            Err(e) => {
                tracing::warn!(entry = %artifact.display(), error = %e, "code cache entry unreadable; rebuilding");
                self.remove(key);
                Lookup::Corrupt
            }
        }
    }

    /// Removes an entry (used when wasmtime refuses a verified artifact).
    pub fn remove(&self, key: &str) {
        let (artifact, sum) = self.paths(key);
        // Digest first: without it the entry is a miss even if the artifact stays.
        let _ = fs::remove_file(sum);
        let _ = fs::remove_file(artifact);
    }

    /// Stores `artifact` under `key` and returns the artifact's path.
    pub fn store(&self, key: &str, artifact: &[u8]) -> Result<PathBuf, CacheError> {
        let (path, sum) = self.paths(key);
        let dir = path.parent().expect("entry has a parent");
        fs::create_dir_all(dir).map_err(|source| CacheError::Write {
            path: dir.to_owned(),
            source,
        })?;
        write_atomic(&path, artifact)?;
        // The digest goes last: an entry is visible only once both files are whole.
        write_atomic(&sum, hex::encode(Sha256::digest(artifact)).as_bytes())?;
        Ok(path)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let err = |source| CacheError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().expect("entry has a parent");
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_data().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Feeds `Hash` impls into SHA-256 so the key is stable across processes and Rust
/// versions (unlike `DefaultHasher`).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        unreachable!("only the SHA-256 state is read")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_lookup_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CodeCache::new(dir.path());
        assert_eq!(cache.lookup("ab12"), Lookup::Miss);
        let path = cache.store("ab12", b"artifact").unwrap();
        assert_eq!(cache.lookup("ab12"), Lookup::Hit(path.clone()));

        // Flip a byte: the entry is detected, removed, and a miss afterwards.
        fs::write(&path, b"artifacT").unwrap();
        assert_eq!(cache.lookup("ab12"), Lookup::Corrupt);
        assert!(!path.exists());
        assert_eq!(cache.lookup("ab12"), Lookup::Miss);

        // An artifact without its digest is not an entry.
        cache.store("cd34", b"x").unwrap();
        fs::remove_file(dir.path().join("cd").join("cd34.sha256")).unwrap();
        assert_eq!(cache.lookup("cd34"), Lookup::Miss);
    }

    #[test]
    fn keys_depend_on_bytes_and_engine() {
        let a = wasmtime::Engine::default();
        let mut cfg = wasmtime::Config::new();
        cfg.epoch_interruption(true);
        let b = wasmtime::Engine::new(&cfg).unwrap();
        let k = CodeCache::key(&a, "module", b"wasm");
        assert_eq!(k, CodeCache::key(&a, "module", b"wasm"));
        assert_ne!(k, CodeCache::key(&a, "module", b"wasn"));
        assert_ne!(k, CodeCache::key(&a, "component", b"wasm"));
        assert_ne!(k, CodeCache::key(&b, "module", b"wasm"));
    }
}
