//! Loading an app: read the bytes, tell what they are, compile them (through the
//! code cache) and find out which world the app implements.

use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::{Module, Precompiled};

use crate::cache::Lookup;
use crate::engine::Engine;

/// What an app is, detected from its bytes and exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppShape {
    /// A WASI preview1 core module exporting `_start`. `run` runs it; `serve` runs it
    /// once per request as a WAGI (CGI) handler.
    P1Command,
    /// A WASI 0.2 component exporting `wasi:cli/run`.
    P2Command,
    /// A WASI 0.2 component exporting `wasi:http/incoming-handler`.
    HttpProxy,
}

impl std::fmt::Display for AppShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::P1Command => "WASI preview1 command module",
            Self::P2Command => "WASI 0.2 command component (wasi:cli/run)",
            Self::HttpProxy => "WASI 0.2 HTTP component (wasi:http/incoming-handler)",
        })
    }
}

/// Compiled code of an app.
#[derive(Clone)]
pub enum Code {
    /// A core module.
    Module(Module),
    /// A component.
    Component(Component),
}

/// A loaded, compiled app.
#[derive(Clone)]
pub struct App {
    path: PathBuf,
    shape: AppShape,
    code: Code,
    from_cache: bool,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("path", &self.path)
            .field("shape", &self.shape)
            .field("from_cache", &self.from_cache)
            .finish()
    }
}

/// Why an app could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("failed to read `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not Wasm at all.
    #[error("`{}` is not a WebAssembly file: {found}", path.display())]
    NotWasm {
        /// The file.
        path: PathBuf,
        /// What it looks like instead.
        found: String,
    },
    /// The bytes are Wasm-shaped but do not compile.
    #[error("invalid WebAssembly in `{}`", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's or compiler's error.
        #[source]
        source: wasmtime::Error,
    },
    /// A precompiled artifact was given without permission to load it.
    #[error(
        "`{}` is precompiled native code, not Wasm; pass --allow-precompiled to trust and load it",
        path.display()
    )]
    PrecompiledNotAllowed {
        /// The file.
        path: PathBuf,
    },
    /// A precompiled artifact that this engine cannot load.
    #[error("cannot load precompiled `{}`", path.display())]
    Precompiled {
        /// The file.
        path: PathBuf,
        /// wasmtime's reason (e.g. another wasmtime version or engine settings).
        #[source]
        source: wasmtime::Error,
    },
    /// Valid Wasm, but not an app Wisp can run.
    #[error("`{}` is not a runnable app: {found}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        found: String,
    },
}

const WASM_MAGIC: &[u8; 4] = b"\0asm";
const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0, 0x01, 0];

enum Raw {
    Module,
    Component,
}

impl App {
    /// Loads the app at `path`, compiling it or taking it from the code cache.
    /// Precompiled (`wisp compile`) artifacts are loaded only if `allow_precompiled`.
    pub fn load(engine: &Engine, path: &Path, allow_precompiled: bool) -> Result<Self, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(engine, path, &bytes, allow_precompiled)
    }

    /// Like [`App::load`], from bytes already in memory; `path` names them in errors.
    pub fn from_bytes(
        engine: &Engine,
        path: &Path,
        bytes: &[u8],
        allow_precompiled: bool,
    ) -> Result<Self, LoadError> {
        let (code, from_cache) = if let Some(kind) = wasmtime::Engine::detect_precompiled(bytes) {
            if !allow_precompiled {
                return Err(LoadError::PrecompiledNotAllowed {
                    path: path.to_owned(),
                });
            }
            let err = |source| LoadError::Precompiled {
                path: path.to_owned(),
                source,
            };
            let code = match kind {
                // SAFETY: the user vouched for this artifact with --allow-precompiled;
                // wasmtime still checks its header, version and engine compatibility.
                Precompiled::Module => Code::Module(
                    unsafe { Module::deserialize(engine.wasmtime(), bytes) }.map_err(err)?,
                ),
                // SAFETY: as above.
                Precompiled::Component => Code::Component(
                    unsafe { Component::deserialize(engine.wasmtime(), bytes) }.map_err(err)?,
                ),
            };
            (code, false)
        } else {
            let wasm;
            let bytes = if looks_like_wat(path, bytes) {
                wasm = wat::parse_bytes(bytes).map_err(|e| LoadError::Invalid {
                    path: path.to_owned(),
                    source: e.into(),
                })?;
                &wasm[..]
            } else {
                bytes
            };
            let raw = classify(path, bytes)?;
            compile(engine, path, raw, bytes)?
        };
        let shape = detect_shape(engine, path, &code)?;
        Ok(Self {
            path: path.to_owned(),
            shape,
            code,
            from_cache,
        })
    }

    /// Where the app came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the app is.
    pub fn shape(&self) -> AppShape {
        self.shape
    }

    /// The compiled code.
    pub fn code(&self) -> &Code {
        &self.code
    }

    /// Whether the code came from the on-disk cache rather than a compile.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }
}

/// Compiles `wasm` to a precompiled artifact for `wisp compile`; the result loads
/// with [`App::load`] and `allow_precompiled`.
pub fn precompile(engine: &Engine, path: &Path, wasm: &[u8]) -> Result<Vec<u8>, LoadError> {
    let wasm_buf;
    let wasm = if looks_like_wat(path, wasm) {
        wasm_buf = wat::parse_bytes(wasm).map_err(|e| LoadError::Invalid {
            path: path.to_owned(),
            source: e.into(),
        })?;
        &wasm_buf[..]
    } else {
        wasm
    };
    let invalid = |source| LoadError::Invalid {
        path: path.to_owned(),
        source,
    };
    // Compile fully first so the shape check below refuses non-apps.
    let (code, _) = compile(engine, path, classify(path, wasm)?, wasm)?;
    detect_shape(engine, path, &code)?;
    match code {
        Code::Module(m) => m.serialize().map_err(invalid),
        Code::Component(c) => c.serialize().map_err(invalid),
    }
}

fn looks_like_wat(path: &Path, bytes: &[u8]) -> bool {
    if bytes.starts_with(WASM_MAGIC) {
        return false;
    }
    let ext = path.extension().and_then(|e| e.to_str());
    if matches!(ext, Some("wat" | "wast")) {
        return true;
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(256)]);
    let trimmed = text.trim_start();
    trimmed.starts_with("(module") || trimmed.starts_with("(component")
}

fn classify(path: &Path, bytes: &[u8]) -> Result<Raw, LoadError> {
    if bytes.len() < 8 || !bytes.starts_with(WASM_MAGIC) {
        return Err(LoadError::NotWasm {
            path: path.to_owned(),
            found: describe_non_wasm(bytes),
        });
    }
    let version: [u8; 4] = bytes[4..8].try_into().expect("length checked");
    match version {
        CORE_VERSION => Ok(Raw::Module),
        COMPONENT_VERSION => Ok(Raw::Component),
        other => Err(LoadError::NotWasm {
            path: path.to_owned(),
            found: format!("unsupported Wasm binary version {other:02x?}"),
        }),
    }
}

fn describe_non_wasm(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "the file is empty".into();
    }
    if bytes.starts_with(WASM_MAGIC) {
        return format!("truncated header ({} bytes)", bytes.len());
    }
    if bytes.starts_with(b"\x7fELF") {
        return "found an ELF executable".into();
    }
    if bytes.starts_with(b"#!") {
        return "found a script (#!)".into();
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return "found a zip archive".into();
    }
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return "found a gzip archive".into();
    }
    let head = &bytes[..bytes.len().min(512)];
    if std::str::from_utf8(head).is_ok() {
        return "found text, and it is not WAT".into();
    }
    format!(
        "missing the `\\0asm` magic (starts with {:02x?})",
        &bytes[..bytes.len().min(4)]
    )
}

fn compile(engine: &Engine, path: &Path, raw: Raw, wasm: &[u8]) -> Result<(Code, bool), LoadError> {
    let wt = engine.wasmtime();
    let kind = match raw {
        Raw::Module => "module",
        Raw::Component => "component",
    };
    let invalid = |source| LoadError::Invalid {
        path: path.to_owned(),
        source,
    };
    let Some(cache) = engine.cache() else {
        let code = match raw {
            Raw::Module => Code::Module(Module::new(wt, wasm).map_err(invalid)?),
            Raw::Component => Code::Component(Component::new(wt, wasm).map_err(invalid)?),
        };
        return Ok((code, false));
    };

    let key = crate::cache::CodeCache::key(wt, kind, wasm);
    if let Lookup::Hit(file) = cache.lookup(&key) {
        // SAFETY: the file is a cache entry this crate wrote with `serialize` for an
        // engine with the same compatibility hash (part of the key), and its SHA-256
        // digest was verified just now. Entries are replaced only by rename, never
        // modified in place, so the mapping cannot change under us.
        match unsafe { deserialize_file(wt, &raw, &file) } {
            Ok(code) => {
                tracing::debug!(entry = %file.display(), "loaded compiled code from cache");
                return Ok((code, true));
            }
            Err(e) => {
                tracing::warn!(entry = %file.display(), error = %e, "cache entry refused by wasmtime; rebuilding");
                cache.remove(&key);
            }
        }
    }

    let artifact = match raw {
        Raw::Module => wt.precompile_module(wasm),
        Raw::Component => wt.precompile_component(wasm),
    }
    .map_err(invalid)?;
    match cache.store(&key, &artifact) {
        // Load from the stored file (not the buffer) so the code pages are a shared
        // file mapping, as they will be on every later start.
        // SAFETY: we just produced and stored this artifact with this engine.
        Ok(file) => Ok((
            unsafe { deserialize_file(wt, &raw, &file) }.map_err(invalid)?,
            false,
        )),
        Err(e) => {
            tracing::warn!(error = %crate::error::error_chain(&e), "code cache not written; continuing without it");
            // SAFETY: the artifact was produced by `precompile_*` of this engine just now.
            let code = match raw {
                Raw::Module => {
                    Code::Module(unsafe { Module::deserialize(wt, &artifact) }.map_err(invalid)?)
                }
                Raw::Component => Code::Component(
                    unsafe { Component::deserialize(wt, &artifact) }.map_err(invalid)?,
                ),
            };
            Ok((code, false))
        }
    }
}

/// Maps a compiled artifact from `file`.
///
/// # Safety
///
/// `file` must hold an artifact that `wt` (or an engine with the same
/// compatibility hash) serialized, and must not be modified while mapped.
unsafe fn deserialize_file(
    wt: &wasmtime::Engine,
    raw: &Raw,
    file: &Path,
) -> wasmtime::Result<Code> {
    // SAFETY: forwarded to the caller.
    unsafe {
        match raw {
            Raw::Module => Module::deserialize_file(wt, file).map(Code::Module),
            Raw::Component => Component::deserialize_file(wt, file).map(Code::Component),
        }
    }
}

fn detect_shape(engine: &Engine, path: &Path, code: &Code) -> Result<AppShape, LoadError> {
    let unsupported = |found: String| LoadError::Unsupported {
        path: path.to_owned(),
        found,
    };
    match code {
        Code::Module(m) => {
            let exports: Vec<&str> = m.exports().map(|e| e.name()).collect();
            if m.get_export("_start")
                .and_then(|e| e.func().cloned())
                .is_some()
            {
                Ok(AppShape::P1Command)
            } else if exports.contains(&"_initialize") {
                Err(unsupported(
                    "found a reactor module (exports `_initialize`, no `_start`); \
                     Wisp runs command modules"
                        .into(),
                ))
            } else {
                Err(unsupported(format!(
                    "found a core module without a `_start` function (exports: {})",
                    list_or_none(&exports)
                )))
            }
        }
        Code::Component(c) => {
            let ty = c.component_type();
            let names: Vec<String> = ty
                .exports(engine.wasmtime())
                .map(|(n, _)| n.to_owned())
                .collect();
            let has = |iface: &str| {
                names
                    .iter()
                    .any(|n| n.strip_prefix(iface).is_some_and(|v| v.starts_with("@0.2")))
            };
            if has("wasi:http/incoming-handler") {
                Ok(AppShape::HttpProxy)
            } else if has("wasi:cli/run") {
                Ok(AppShape::P2Command)
            } else {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                Err(unsupported(format!(
                    "found a component exporting neither wasi:cli/run@0.2 nor \
                     wasi:http/incoming-handler@0.2 (exports: {})",
                    list_or_none(&names)
                )))
            }
        }
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
