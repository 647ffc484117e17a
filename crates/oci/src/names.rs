//! The names Wasm images are written and read with: paths, platforms and
//! annotations.

/// Where [`Shape::Image`] puts the app inside the image's filesystem.
pub const APP_PATH: &str = "/app.wasm";

/// The platform OS of [`Shape::Image`], as runwasi and `docker buildx --platform
/// wasi/wasm` write it.
pub const IMAGE_OS: &str = "wasi";

/// The platform architecture of every Wasm image.
pub const WASM_ARCHITECTURE: &str = "wasm";

/// The TAG Wasm config `os` of a core module (WASI preview 1).
pub const MODULE_OS: &str = "wasip1";

/// The TAG Wasm config `os` of a component (WASI preview 2).
pub const COMPONENT_OS: &str = "wasip2";

/// Annotation with the full image name, read by `ctr images import`.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// OCI annotation with a blob's file name (set on raw Wasm layers).
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";

/// OCI annotation with the reference's tag, in `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
