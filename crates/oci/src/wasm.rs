//! What kind of Wasm a byte string is, from its preamble, and what a component
//! imports and exports.

use wasmparser::{Parser, Payload};

use crate::names::{COMPONENT_OS, MODULE_OS};
use crate::spec::ComponentInfo;

/// Errors about the Wasm input itself.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    #[error("not a WebAssembly binary: {found}")]
    NotWasm { found: String },
    #[error("unsupported WebAssembly binary version {version:#x} (layer {layer})")]
    UnsupportedVersion { version: u16, layer: u16 },
    #[error("malformed component")]
    MalformedComponent(#[source] wasmparser::BinaryReaderError),
}

/// A core module or a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmKind {
    /// A core module (binary version 1, layer 0): WASI preview 1.
    Module,
    /// A component (binary version 0xd, layer 1): WASI preview 2.
    Component,
}

impl WasmKind {
    /// The TAG Wasm config `os`: `wasip1` or `wasip2`.
    pub fn os(self) -> &'static str {
        match self {
            WasmKind::Module => MODULE_OS,
            WasmKind::Component => COMPONENT_OS,
        }
    }
}

impl std::fmt::Display for WasmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WasmKind::Module => "core module",
            WasmKind::Component => "component",
        })
    }
}

const MAGIC: &[u8; 4] = b"\0asm";
const MODULE_VERSION: u16 = 1;
const COMPONENT_VERSION: u16 = 0xd;

/// Reads the 8-byte preamble: `\0asm`, a 16-bit version and a 16-bit layer
/// (0 for core modules, 1 for components), both little-endian.
pub fn detect_wasm(bytes: &[u8]) -> Result<WasmKind, WasmError> {
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(WasmError::NotWasm {
            found: describe(bytes),
        });
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    let layer = u16::from_le_bytes([bytes[6], bytes[7]]);
    match (layer, version) {
        (0, MODULE_VERSION) => Ok(WasmKind::Module),
        (1, COMPONENT_VERSION) => Ok(WasmKind::Component),
        _ => Err(WasmError::UnsupportedVersion { version, layer }),
    }
}

/// The component's top-level import and export names, in binary order.
pub fn component_info(bytes: &[u8]) -> Result<ComponentInfo, WasmError> {
    let mut info = ComponentInfo::default();
    // Nested modules and components come inline in the payload stream; only depth
    // 0 is the component's own interface.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(WasmError::MalformedComponent)? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(WasmError::MalformedComponent)?;
                    info.imports.push(import.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(WasmError::MalformedComponent)?;
                    info.exports.push(export.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// Says what a non-Wasm input looks like, for the error message.
fn describe(bytes: &[u8]) -> String {
    const SHOWN: usize = 32;
    if bytes.is_empty() {
        return "the input is empty".to_owned();
    }
    if bytes.starts_with(MAGIC) {
        return format!("truncated preamble ({} bytes)", bytes.len());
    }
    if bytes.starts_with(b"\x7fELF") {
        return "an ELF file (native code, e.g. a `wisp compile` artifact)".to_owned();
    }
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return "gzip data".to_owned();
    }
    let head = &bytes[..bytes.len().min(256)];
    // Cutting at 256 bytes may split a character: accept an incomplete tail.
    let text = match std::str::from_utf8(head) {
        Ok(t) => Some(t),
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).ok(),
        Err(_) => None,
    };
    match text {
        Some(t) if !t.chars().any(|c| c.is_control() && !c.is_whitespace()) => {
            let trimmed = t.trim_start();
            if trimmed.starts_with("(module") || trimmed.starts_with("(component") {
                return "WebAssembly text; assemble it into a binary first".to_owned();
            }
            let first: String = trimmed
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(SHOWN)
                .collect();
            format!("text starting with `{first}`")
        }
        _ => {
            let hex: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            format!("data starting with bytes {}", hex.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_and_components_by_preamble() {
        let module = wat_module();
        assert_eq!(detect_wasm(&module).unwrap(), WasmKind::Module);
        let component = wat::parse_str("(component)").unwrap();
        assert_eq!(detect_wasm(&component).unwrap(), WasmKind::Component);
        assert_eq!(WasmKind::Component.os(), "wasip2");
        assert_eq!(WasmKind::Module.os(), "wasip1");
    }

    #[test]
    fn refuses_what_is_not_wasm_and_says_what_it_is() {
        let cases: [(&[u8], &str); 7] = [
            (b"", "empty"),
            (b"\0asm", "truncated"),
            (b"\x7fELF\x02\x01\x01\0", "ELF"),
            (b"\x1f\x8b\x08\0\0\0\0\0", "gzip"),
            (b"(module (func))", "WebAssembly text"),
            (
                b"just some text\nmore",
                "text starting with `just some text`",
            ),
            (b"\x01\x02\x03\x04\x05\x06\x07\x08\x09", "bytes 01 02 03"),
        ];
        for (bytes, expected) in cases {
            let err = detect_wasm(bytes).unwrap_err().to_string();
            assert!(err.starts_with("not a WebAssembly binary"), "{err}");
            assert!(err.contains(expected), "{err} (wanted {expected})");
        }
        let err = detect_wasm(b"\0asm\x02\0\0\0").unwrap_err();
        assert!(
            matches!(
                err,
                WasmError::UnsupportedVersion {
                    version: 2,
                    layer: 0
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn component_imports_and_exports_at_top_level_only() {
        let bytes = wat::parse_str(
            r#"(component
                (import "wasi:cli/environment@0.2.0" (instance))
                (component $inner (import "inner:pkg/iface@1.0.0" (instance)))
                (export "wasi:cli/run@0.2.0" (component $inner)))"#,
        )
        .unwrap();
        assert_eq!(detect_wasm(&bytes).unwrap(), WasmKind::Component);
        let info = component_info(&bytes).unwrap();
        assert_eq!(info.imports, ["wasi:cli/environment@0.2.0"]);
        assert_eq!(info.exports, ["wasi:cli/run@0.2.0"]);
        assert_eq!(info.target, None);
    }

    fn wat_module() -> Vec<u8> {
        wat::parse_str("(module)").unwrap()
    }
}
