//! Media types of the OCI image spec and of the Wasm image formats in use.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI filesystem layer, uncompressed tar.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI filesystem layer, gzipped tar.
pub const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI filesystem layer, zstd-compressed tar (recognised when reading only).
pub const OCI_LAYER_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Docker schema 2 manifest (recognised when reading only).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (recognised when reading only).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config (recognised when reading only).
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker filesystem layer, gzipped tar (recognised when reading only).
pub const DOCKER_LAYER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// CNCF TAG Runtime Wasm artifact config.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// wasm-to-oci's config (read only; it carries nothing a runtime needs).
pub const WASM_TO_OCI_CONFIG: &str = "application/vnd.wasm.config.v1+json";
/// CNCF TAG Runtime Wasm artifact layer: the raw module or component.
pub const WASM_LAYER: &str = "application/wasm";
/// runwasi's Wasm layer (`oci-tar-builder`, the containerd Wasm shims).
pub const RUNWASI_COMPONENT_LAYER: &str =
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
/// Spin's and wasm-to-oci's Wasm layer.
pub const WASM_CONTENT_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// The core-module layer of runwasi's earlier `oci-tar-builder --module` and the
/// containerd Wasm stream-processor prototype.
pub const W3C_MODULE_LAYER: &str = "application/vnd.w3c.wasm.module.v1+wasm";

/// Every layer media type that holds raw Wasm bytes.
pub const WASM_LAYERS: [&str; 4] = [
    WASM_LAYER,
    RUNWASI_COMPONENT_LAYER,
    WASM_CONTENT_LAYER,
    W3C_MODULE_LAYER,
];

/// Every layer media type that holds a filesystem (a tar, possibly compressed).
pub const FILESYSTEM_LAYERS: [&str; 4] = [
    OCI_LAYER_TAR,
    OCI_LAYER_TAR_GZIP,
    OCI_LAYER_TAR_ZSTD,
    DOCKER_LAYER_TAR_GZIP,
];
