//! Wasm OCI images: build them offline into OCI image-layout tar archives that
//! `ctr images import` accepts, and read them back for the shim.
//!
//! Four shapes, see [`Shape`]:
//! - [`Shape::Image`]: an ordinary OCI image (platform `wasi/wasm`) whose one
//!   gzipped tar layer holds the app at `/app.wasm`, with `Entrypoint: ["/app.wasm"]`.
//!   This is what runwasi-style shims run and what containerd 1.6 can unpack into a
//!   snapshot.
//! - [`Shape::Artifact`]: the CNCF TAG Runtime Wasm OCI artifact
//!   (<https://tag-runtime.cncf.io/wgs/wasm/deliverables/wasm-oci-artifact/>): config
//!   `application/vnd.wasm.config.v0+json`, one `application/wasm` layer holding the
//!   raw bytes.
//! - [`Shape::Runwasi`] and [`Shape::WasmContent`]: an OCI image config (so
//!   env, entrypoint and args travel with the image) and one raw Wasm layer of
//!   runwasi's media type, or Spin's / wasm-to-oci's.
//!
//! Importing into containerd 1.6.20 (checked by hand): `ctr images import
//! --all-platforms FILE` (or `--platform wasi/wasm`) imports and unpacks the image
//! shape; without either, ctr filters the `wasi/wasm` manifest out ("image might
//! be filtered out"). The three raw-layer shapes are stored but cannot be unpacked
//! into a snapshot ("mismatched image rootfs and manifest layers"): import them
//! with `--all-platforms --no-unpack`; the shim reads their layer from the
//! content store.
//!
//! Where to start: [`build_image`] -> [`ImageArchive::write_tar`] on the writing
//! side; [`read_layout_tar`] / [`read_layout_dir`] -> [`Layout::images`] ->
//! [`detect_kind`] / [`wasm_layers`] on the reading side. The JSON types are in
//! [`spec`], the media types in [`media_type`].
//!
//! With the `registry` feature, [`Registry`] pushes an [`Image`] (from a built
//! archive or a layout) to an OCI registry and pulls one back.
//!
//! Archives are byte-for-byte reproducible: fixed timestamps and owners, sorted
//! entries, a `created` time given by the caller (see [`source_date_epoch`]).

#![forbid(unsafe_code)]

mod build;
mod digest;
mod kind;
mod layout;
pub mod media_type;
mod names;
mod reference;
#[cfg(feature = "registry")]
mod registry;
pub mod spec;
mod tarball;
mod wasm;

pub use build::{
    BuildError, BuildOptions, ImageArchive, Shape, WriteError, build_image, source_date_epoch,
};
pub use digest::sha256_digest;
pub use kind::{ImageKind, KindError, detect_kind, is_wasm_layer, wasm_layers};
pub use layout::{Layout, LayoutError, LayoutImage, read_layout_dir, read_layout_tar};
pub use names::{
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, ANNOTATION_TITLE, APP_PATH, COMPONENT_OS, IMAGE_OS,
    MODULE_OS, WASM_ARCHITECTURE,
};
pub use reference::{Reference, ReferenceError};
#[cfg(feature = "registry")]
pub use registry::{Image, Pushed, Registry, RegistryError, RegistryOptions, docker_credentials};
pub use wasm::{WasmError, WasmKind, component_info, detect_wasm};

#[cfg(test)]
mod tests;
