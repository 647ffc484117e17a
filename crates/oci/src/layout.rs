//! Reading an OCI image layout, from a tar archive or a directory, with every blob
//! checked against its digest.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use serde::de::DeserializeOwned;

use crate::digest::sha256_digest;
use crate::digest::{SHA256_PREFIX, sha256_hex};
use crate::kind::{ImageKind, KindError, detect_kind};
use crate::media_type;
use crate::names::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
use crate::spec::{
    Descriptor, IMAGE_LAYOUT_VERSION, ImageConfig, Index, Manifest, OciLayout, WasmConfig,
};

/// Errors reading a layout or what it holds.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("failed to read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("not an OCI image layout: `{0}` is missing")]
    Missing(&'static str),
    #[error("unsupported image layout version `{0}`")]
    Version(String),
    #[error("invalid JSON in `{what}`")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("unexpected file `{0}` among the blobs")]
    BlobName(String),
    #[error("blob `{path}` does not match its name: its digest is `{actual}`")]
    Corrupt { path: String, actual: String },
    #[error("unsupported digest `{0}`: only sha256 is supported")]
    Digest(String),
    #[error("blob `{0}` is missing from the layout")]
    MissingBlob(String),
    #[error("blob `{digest}` is {actual} bytes, but its descriptor says {expected}")]
    Size {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("image indexes nest deeper than {MAX_INDEX_DEPTH} levels")]
    TooDeep,
    #[error("unsupported manifest media type `{0}`")]
    ManifestMediaType(String),
    #[error(transparent)]
    Kind(#[from] KindError),
    #[error("the image config has no entrypoint")]
    NoEntrypoint,
    #[error("`{0}` is in none of the image's layers")]
    NotInLayers(String),
    #[error("failed to read layer `{digest}`")]
    Layer {
        digest: String,
        #[source]
        source: io::Error,
    },
    #[error("unsupported layer media type `{0}` for extracting files")]
    LayerMediaType(String),
}

/// How deep nested indexes may go; layouts written by tools nest at most once.
const MAX_INDEX_DEPTH: usize = 4;

/// An image layout in memory: `index.json` and the blobs, each verified.
#[derive(Debug, Clone)]
pub struct Layout {
    index: Index,
    /// Keyed by digest hex.
    blobs: BTreeMap<String, Vec<u8>>,
}

/// One image of a layout: a manifest reached from `index.json`.
#[derive(Debug, Clone)]
pub struct LayoutImage {
    /// The descriptor that names the manifest (platform, annotations).
    pub descriptor: Descriptor,
    pub manifest: Manifest,
    /// `io.containerd.image.name`, else `org.opencontainers.image.ref.name`, of
    /// the `index.json` entry that leads here.
    pub name: Option<String>,
}

impl LayoutImage {
    /// The kind, from the media types.
    pub fn kind(&self) -> Result<ImageKind<'_>, KindError> {
        detect_kind(&self.manifest)
    }
}

/// Reads an image-layout tar archive (as `ctr images export` and
/// [`crate::ImageArchive::write_tar`] write). Entries other than `oci-layout`,
/// `index.json` and `blobs/...` (e.g. Docker's `manifest.json`) are ignored.
pub fn read_layout_tar(path: &Path) -> Result<Layout, LayoutError> {
    let read_err = |source| LayoutError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut builder = LayoutBuilder::default();
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(read_err)?
            .to_string_lossy()
            .into_owned();
        let name = normalise(&name);
        if !builder.wants(&name) {
            continue;
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut data).map_err(read_err)?;
        builder.add(&name, data)?;
    }
    builder.finish()
}

/// Reads an image-layout directory.
pub fn read_layout_dir(path: &Path) -> Result<Layout, LayoutError> {
    let read = |rel: &str| -> Result<Option<Vec<u8>>, LayoutError> {
        let p = path.join(rel);
        match std::fs::read(&p) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LayoutError::Read { path: p, source }),
        }
    };
    let mut builder = LayoutBuilder::default();
    for name in ["oci-layout", "index.json"] {
        if let Some(data) = read(name)? {
            builder.add(name, data)?;
        }
    }
    let blobs = path.join("blobs").join("sha256");
    let entries = match std::fs::read_dir(&blobs) {
        Ok(entries) => Some(entries),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(LayoutError::Read {
                path: blobs,
                source,
            });
        }
    };
    for entry in entries.into_iter().flatten() {
        let entry = entry.map_err(|source| LayoutError::Read {
            path: blobs.clone(),
            source,
        })?;
        let name = format!("blobs/sha256/{}", entry.file_name().to_string_lossy());
        if let Some(data) = read(&name)? {
            builder.add(&name, data)?;
        }
    }
    builder.finish()
}

/// `./a/b` and `/a/b` -> `a/b`.
fn normalise(name: &str) -> String {
    let mut n = name;
    loop {
        if let Some(rest) = n.strip_prefix("./") {
            n = rest;
        } else if let Some(rest) = n.strip_prefix('/') {
            n = rest;
        } else {
            return n.to_owned();
        }
    }
}

#[derive(Default)]
struct LayoutBuilder {
    layout: Option<Vec<u8>>,
    index: Option<Vec<u8>>,
    blobs: BTreeMap<String, Vec<u8>>,
}

impl LayoutBuilder {
    fn wants(&self, name: &str) -> bool {
        name == "oci-layout" || name == "index.json" || name.starts_with("blobs/sha256/")
    }

    fn add(&mut self, name: &str, data: Vec<u8>) -> Result<(), LayoutError> {
        match name {
            "oci-layout" => self.layout = Some(data),
            "index.json" => self.index = Some(data),
            _ => {
                let Some(hex) = name.strip_prefix("blobs/sha256/") else {
                    return Ok(());
                };
                let digest = format!("{SHA256_PREFIX}{hex}");
                if sha256_hex(&digest).is_none() {
                    return Err(LayoutError::BlobName(name.to_owned()));
                }
                let actual = sha256_digest(&data);
                if actual != digest {
                    return Err(LayoutError::Corrupt {
                        path: name.to_owned(),
                        actual,
                    });
                }
                self.blobs.insert(hex.to_owned(), data);
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Layout, LayoutError> {
        let layout: OciLayout = parse(
            &self.layout.ok_or(LayoutError::Missing("oci-layout"))?,
            "oci-layout",
        )?;
        if layout.image_layout_version != IMAGE_LAYOUT_VERSION {
            return Err(LayoutError::Version(layout.image_layout_version));
        }
        let index = parse(
            &self.index.ok_or(LayoutError::Missing("index.json"))?,
            "index.json",
        )?;
        Ok(Layout {
            index,
            blobs: self.blobs,
        })
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, LayoutError> {
    serde_json::from_slice(bytes).map_err(|source| LayoutError::Json {
        what: what.to_owned(),
        source,
    })
}

impl Layout {
    /// `index.json`.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Digests of every blob present, sorted.
    pub fn blob_digests(&self) -> impl Iterator<Item = String> + '_ {
        self.blobs.keys().map(|hex| format!("{SHA256_PREFIX}{hex}"))
    }

    /// The blob a descriptor names, checked against its size (its digest was
    /// checked on reading).
    pub fn blob(&self, descriptor: &Descriptor) -> Result<&[u8], LayoutError> {
        let hex = sha256_hex(&descriptor.digest)
            .ok_or_else(|| LayoutError::Digest(descriptor.digest.clone()))?;
        let blob = self
            .blobs
            .get(hex)
            .ok_or_else(|| LayoutError::MissingBlob(descriptor.digest.clone()))?;
        if blob.len() as u64 != descriptor.size {
            return Err(LayoutError::Size {
                digest: descriptor.digest.clone(),
                expected: descriptor.size,
                actual: blob.len() as u64,
            });
        }
        Ok(blob)
    }

    /// Every image manifest reachable from `index.json`, through nested indexes,
    /// in index order.
    pub fn images(&self) -> Result<Vec<LayoutImage>, LayoutError> {
        let mut out = Vec::new();
        self.collect(&self.index, None, 0, &mut out)?;
        Ok(out)
    }

    fn collect(
        &self,
        index: &Index,
        inherited: Option<&str>,
        depth: usize,
        out: &mut Vec<LayoutImage>,
    ) -> Result<(), LayoutError> {
        if depth > MAX_INDEX_DEPTH {
            return Err(LayoutError::TooDeep);
        }
        for descriptor in &index.manifests {
            let name = descriptor
                .annotations
                .get(ANNOTATION_IMAGE_NAME)
                .or_else(|| descriptor.annotations.get(ANNOTATION_REF_NAME))
                .map(String::as_str)
                .or(inherited);
            match descriptor.media_type.as_str() {
                media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST => out.push(LayoutImage {
                    descriptor: descriptor.clone(),
                    manifest: self.json(descriptor, "manifest")?,
                    name: name.map(str::to_owned),
                }),
                media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST => {
                    let nested: Index = self.json(descriptor, "index")?;
                    self.collect(&nested, name, depth + 1, out)?;
                }
                other => return Err(LayoutError::ManifestMediaType(other.to_owned())),
            }
        }
        Ok(())
    }

    fn json<T: DeserializeOwned>(
        &self,
        descriptor: &Descriptor,
        what: &str,
    ) -> Result<T, LayoutError> {
        parse(
            self.blob(descriptor)?,
            &format!("{what} {}", descriptor.digest),
        )
    }

    /// The OCI image config of an image manifest.
    pub fn image_config(&self, manifest: &Manifest) -> Result<ImageConfig, LayoutError> {
        self.json(&manifest.config, "image config")
    }

    /// The TAG Wasm config of an artifact manifest.
    pub fn wasm_config(&self, manifest: &Manifest) -> Result<WasmConfig, LayoutError> {
        self.json(&manifest.config, "Wasm config")
    }

    /// The Wasm an image runs: the first Wasm layer if there is one, else the
    /// config's entrypoint looked up in the filesystem layers (top layer first).
    pub fn wasm(&self, manifest: &Manifest) -> Result<Vec<u8>, LayoutError> {
        let filesystem_layers = match detect_kind(manifest)? {
            ImageKind::WasmArtifact { wasm_layers } | ImageKind::Image { wasm_layers, .. }
                if !wasm_layers.is_empty() =>
            {
                return Ok(self.blob(wasm_layers[0])?.to_vec());
            }
            ImageKind::WasmArtifact { .. } => return Err(KindError::NoWasmLayer.into()),
            ImageKind::Image {
                filesystem_layers, ..
            } => filesystem_layers,
        };
        let config = self.image_config(manifest)?;
        let entrypoint = config
            .config
            .and_then(|c| c.entrypoint)
            .and_then(|e| e.into_iter().next())
            .ok_or(LayoutError::NoEntrypoint)?;
        let wanted = normalise(&entrypoint);
        for layer in filesystem_layers.iter().rev() {
            if let Some(data) = self.file_in_layer(layer, &wanted)? {
                return Ok(data);
            }
        }
        Err(LayoutError::NotInLayers(entrypoint))
    }

    /// A regular file from a filesystem layer, if the layer has it.
    fn file_in_layer(
        &self,
        layer: &Descriptor,
        wanted: &str,
    ) -> Result<Option<Vec<u8>>, LayoutError> {
        let blob = self.blob(layer)?;
        let reader: Box<dyn Read + '_> = match layer.media_type.as_str() {
            media_type::OCI_LAYER_TAR => Box::new(blob),
            media_type::OCI_LAYER_TAR_GZIP | media_type::DOCKER_LAYER_TAR_GZIP => {
                Box::new(GzDecoder::new(blob))
            }
            other => return Err(LayoutError::LayerMediaType(other.to_owned())),
        };
        let layer_err = |source| LayoutError::Layer {
            digest: layer.digest.clone(),
            source,
        };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(layer_err)? {
            let mut entry = entry.map_err(layer_err)?;
            let path = entry.path().map_err(layer_err)?;
            if normalise(&path.to_string_lossy()) != wanted {
                continue;
            }
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(layer_err)?;
            return Ok(Some(data));
        }
        Ok(None)
    }
}
