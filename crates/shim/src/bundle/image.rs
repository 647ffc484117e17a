//! Wasm from the container's image, for images whose Wasm is a raw layer
//! (the CNCF `application/wasm` artifact, runwasi's component layer, Spin's and
//! wasm-to-oci's content layer). Such a layer is not a filesystem, so nothing
//! of it reaches the bundle's rootfs: the shim asks containerd (gRPC, the
//! `-address` it was started with) for the container's image, walks its
//! manifest, and copies the layer from the content store into the node's
//! blob store, named by digest. The compiled-code cache then keys on those
//! bytes, so a second container of the image (or a restarted shim) compiles
//! nothing.

use std::io::Write;
use std::path::PathBuf;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{GetContainerRequest, GetImageRequest, ReadContentRequest};
use containerd_client::tonic::{self, Request};
use wisp_oci::media_type;
use wisp_oci::spec::{Descriptor, Index, Manifest};

/// The gRPC metadata key containerd reads the namespace from.
const NAMESPACE_HEADER: &str = "containerd-namespace";

/// Manifests bigger than this are refused rather than buffered.
const MAX_MANIFEST: u64 = 4 << 20;

/// Errors reading a container's Wasm from its image; each names the image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("failed to reach containerd at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("containerd could not {what}: {}", .status.message())]
    Rpc { what: String, status: tonic::Status },
    #[error("image `{image}`: {what} {digest} is not valid JSON: {source}")]
    Json {
        image: String,
        what: &'static str,
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("image `{image}`: unsupported manifest media type `{media_type}`")]
    ManifestType { image: String, media_type: String },
    #[error(
        "image `{image}`: the index has no manifest for wasi/wasm or {}/{}",
        std::env::consts::OS,
        GO_ARCH
    )]
    NoPlatform { image: String },
    #[error("image `{image}`: {source}")]
    Kind {
        image: String,
        #[source]
        source: wisp_oci::KindError,
    },
    #[error("image `{image}` has no Wasm layer")]
    NoWasmLayer { image: String },
    #[error(
        "image `{image}` has {count} Wasm layers and process.args[0] names none of them (titles: {titles})"
    )]
    Ambiguous {
        image: String,
        count: usize,
        titles: String,
    },
    #[error("image `{image}`: blob {digest} is {size} bytes, over the {limit}-byte limit")]
    TooBig {
        image: String,
        digest: String,
        size: u64,
        limit: u64,
    },
    #[error("image `{image}`: blob {digest} read from the content store does not match its digest")]
    DigestMismatch { image: String, digest: String },
    #[error("image `{image}`: invalid digest `{digest}`")]
    BadDigest { image: String, digest: String },
    #[error("failed to start the async runtime for containerd's API: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("failed to store layer {digest} in {}: {source}", .dir.display())]
    Store {
        digest: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Go's name of this machine's architecture, as image platforms spell it.
const GO_ARCH: &str = match std::env::consts::ARCH.as_bytes() {
    b"x86_64" => "amd64",
    b"aarch64" => "arm64",
    _ => std::env::consts::ARCH,
};

/// The Wasm layer a container runs, stored on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageModule {
    /// Host path of the layer's bytes, named by digest.
    pub path: PathBuf,
    pub image: String,
    pub media_type: String,
    pub digest: String,
    /// The layer's `org.opencontainers.image.title`, the module's file name.
    pub title: Option<String>,
}

/// Where to reach containerd and where to keep layers.
#[derive(Debug, Clone)]
pub struct ImageSource {
    pub address: String,
    pub namespace: String,
    /// `<dir>/sha256/<hex>` holds each layer.
    pub blobs: PathBuf,
}

impl ImageSource {
    /// The Wasm layer of `container_id`'s image, `Ok(None)` when the container
    /// has no image (`ctr run --rootfs`). `program` is `process.args[0]`, used to
    /// choose between several Wasm layers by title.
    pub fn module_of(
        &self,
        container_id: &str,
        program: Option<&str>,
    ) -> Result<Option<ImageModule>, ImageError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ImageError::Runtime)?;
        rt.block_on(self.fetch(container_id, program))
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut req = Request::new(message);
        if let Ok(ns) = self.namespace.parse() {
            req.metadata_mut().insert(NAMESPACE_HEADER, ns);
        }
        req
    }

    async fn fetch(
        &self,
        container_id: &str,
        program: Option<&str>,
    ) -> Result<Option<ImageModule>, ImageError> {
        let channel = containerd_client::connect(&self.address)
            .await
            .map_err(|source| ImageError::Connect {
                address: self.address.clone(),
                source,
            })?;
        let rpc = |what: String| move |status| ImageError::Rpc { what, status };
        let container = ContainersClient::new(channel.clone())
            .get(self.request(GetContainerRequest {
                id: container_id.to_owned(),
            }))
            .await
            .map_err(rpc(format!("get container `{container_id}`")))?
            .into_inner()
            .container
            .unwrap_or_default();
        let image = container.image;
        if image.is_empty() {
            return Ok(None);
        }
        let target = ImagesClient::new(channel.clone())
            .get(self.request(GetImageRequest {
                name: image.clone(),
            }))
            .await
            .map_err(rpc(format!("get image `{image}`")))?
            .into_inner()
            .image
            .and_then(|i| i.target)
            .unwrap_or_default();
        let mut content = ContentClient::new(channel);
        let mut descriptor = (target.media_type, target.digest, target.size as u64);
        let manifest: Manifest = loop {
            let (media, digest, size) = &descriptor;
            let bytes = self
                .read_blob(&mut content, &image, digest, *size, MAX_MANIFEST)
                .await?;
            let json_err = |what| {
                let (image, digest) = (image.clone(), digest.clone());
                move |source| ImageError::Json {
                    image,
                    what,
                    digest,
                    source,
                }
            };
            match media.as_str() {
                media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST => {
                    break serde_json::from_slice(&bytes).map_err(json_err("manifest"))?;
                }
                media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST => {
                    let index: Index = serde_json::from_slice(&bytes).map_err(json_err("index"))?;
                    let chosen =
                        pick_manifest(&index.manifests).ok_or_else(|| ImageError::NoPlatform {
                            image: image.clone(),
                        })?;
                    descriptor = (
                        chosen.media_type.clone(),
                        chosen.digest.clone(),
                        chosen.size,
                    );
                }
                other => {
                    return Err(ImageError::ManifestType {
                        image,
                        media_type: other.to_owned(),
                    });
                }
            }
        };
        let layer = pick_layer(&image, &manifest, program)?.clone();
        let path = self.store(&mut content, &image, &layer).await?;
        Ok(Some(ImageModule {
            path,
            image,
            media_type: layer.media_type,
            title: layer.annotations.get(wisp_oci::ANNOTATION_TITLE).cloned(),
            digest: layer.digest,
        }))
    }

    /// Reads a whole blob and checks it against its digest.
    async fn read_blob(
        &self,
        content: &mut ContentClient<tonic::transport::Channel>,
        image: &str,
        digest: &str,
        size: u64,
        limit: u64,
    ) -> Result<Vec<u8>, ImageError> {
        if size > limit {
            return Err(ImageError::TooBig {
                image: image.into(),
                digest: digest.into(),
                size,
                limit,
            });
        }
        let mut stream = content
            .read(self.request(ReadContentRequest {
                digest: digest.to_owned(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(|status| ImageError::Rpc {
                what: format!("read blob {digest} of image `{image}`"),
                status,
            })?
            .into_inner();
        let mut bytes = Vec::with_capacity(size as usize);
        while let Some(chunk) = stream.message().await.map_err(|status| ImageError::Rpc {
            what: format!("read blob {digest} of image `{image}`"),
            status,
        })? {
            bytes.extend_from_slice(&chunk.data);
            if bytes.len() as u64 > limit {
                return Err(ImageError::TooBig {
                    image: image.into(),
                    digest: digest.into(),
                    size: bytes.len() as u64,
                    limit,
                });
            }
        }
        if wisp_oci::sha256_digest(&bytes) != digest {
            return Err(ImageError::DigestMismatch {
                image: image.into(),
                digest: digest.into(),
            });
        }
        Ok(bytes)
    }

    /// The layer's host path, copying it from the content store the first time.
    /// Writes go to a temporary file that is renamed into place, so a crash
    /// never leaves a partial blob under its digest.
    async fn store(
        &self,
        content: &mut ContentClient<tonic::transport::Channel>,
        image: &str,
        layer: &Descriptor,
    ) -> Result<PathBuf, ImageError> {
        let hex = layer
            .digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| ImageError::BadDigest {
                image: image.into(),
                digest: layer.digest.clone(),
            })?;
        let dir = self.blobs.join("sha256");
        let path = dir.join(hex);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == layer.size) {
            return Ok(path);
        }
        // Wasm modules are at most a few hundred MiB; wasmtime itself caps a
        // module's size well below this.
        let bytes = self
            .read_blob(content, image, &layer.digest, layer.size, 1 << 30)
            .await?;
        let store_err = |source| ImageError::Store {
            digest: layer.digest.clone(),
            dir: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(store_err)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(store_err)?;
        tmp.write_all(&bytes).map_err(store_err)?;
        tmp.as_file().sync_all().map_err(store_err)?;
        tmp.persist(&path).map_err(|e| store_err(e.error))?;
        Ok(path)
    }
}

/// The manifest of an index to run: a Wasm platform first, then this
/// machine's (a runwasi image built for linux), then a lone manifest.
fn pick_manifest(manifests: &[Descriptor]) -> Option<&Descriptor> {
    let is_wasm = |d: &&Descriptor| {
        d.platform.as_ref().is_some_and(|p| {
            p.architecture == wisp_oci::WASM_ARCHITECTURE
                && matches!(p.os.as_str(), "wasi" | "wasip1" | "wasip2")
        })
    };
    let is_native = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == std::env::consts::OS && p.architecture == GO_ARCH)
    };
    manifests
        .iter()
        .find(is_wasm)
        .or_else(|| manifests.iter().find(is_native))
        .or_else(|| (manifests.len() == 1).then(|| &manifests[0]))
}

/// The Wasm layer to run: the only one, or the one whose title is the file
/// name `program` names.
fn pick_layer<'m>(
    image: &str,
    manifest: &'m Manifest,
    program: Option<&str>,
) -> Result<&'m Descriptor, ImageError> {
    let kind = wisp_oci::detect_kind(manifest).map_err(|source| ImageError::Kind {
        image: image.into(),
        source,
    })?;
    let layers = match kind {
        wisp_oci::ImageKind::WasmArtifact { wasm_layers } => wasm_layers,
        wisp_oci::ImageKind::Image { wasm_layers, .. } => wasm_layers,
    };
    let title = |d: &Descriptor| d.annotations.get(wisp_oci::ANNOTATION_TITLE).cloned();
    match layers.as_slice() {
        [] => Err(ImageError::NoWasmLayer {
            image: image.into(),
        }),
        [only] => Ok(only),
        many => {
            let wanted = program.map(|p| p.rsplit('/').next().unwrap_or(p));
            many.iter()
                .copied()
                .find(|d| wanted.is_some() && title(d).as_deref() == wanted)
                .ok_or_else(|| ImageError::Ambiguous {
                    image: image.into(),
                    count: many.len(),
                    titles: many
                        .iter()
                        .map(|d| title(d).unwrap_or_else(|| "(none)".into()))
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp_oci::spec::{Annotations, Platform};

    fn layer(media: &str, title: Option<&str>, byte: u8) -> Descriptor {
        let mut d = Descriptor::of(media, &[byte]);
        if let Some(t) = title {
            d.annotations
                .insert(wisp_oci::ANNOTATION_TITLE.into(), t.into());
        }
        d
    }

    fn manifest(config: &str, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            artifact_type: None,
            config: Descriptor::of(config, b"{}"),
            layers,
            annotations: Annotations::new(),
        }
    }

    #[test]
    fn picks_the_only_wasm_layer_or_the_one_named() {
        let m = manifest(
            media_type::OCI_CONFIG,
            vec![
                layer(media_type::OCI_LAYER_TAR_GZIP, None, 0),
                layer(media_type::RUNWASI_COMPONENT_LAYER, Some("app.wasm"), 1),
            ],
        );
        assert_eq!(pick_layer("i", &m, None).unwrap(), &m.layers[1]);

        let m = manifest(
            media_type::WASM_CONFIG,
            vec![
                layer(media_type::WASM_LAYER, Some("a.wasm"), 1),
                layer(media_type::WASM_LAYER, Some("b.wasm"), 2),
            ],
        );
        assert_eq!(pick_layer("i", &m, Some("/b.wasm")).unwrap(), &m.layers[1]);
        let err = pick_layer("i", &m, Some("c.wasm")).unwrap_err().to_string();
        assert_eq!(
            err,
            "image `i` has 2 Wasm layers and process.args[0] names none of them (titles: a.wasm, b.wasm)"
        );
    }

    #[test]
    fn unknown_layers_and_no_wasm_are_named() {
        let m = manifest(
            media_type::OCI_CONFIG,
            vec![layer("application/vnd.example.thing", None, 0)],
        );
        let err = pick_layer("ex:1", &m, None).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "image `ex:1`: unknown layer media type `application/vnd.example.thing`"
            ),
            "{err}"
        );
        let m = manifest(
            media_type::OCI_CONFIG,
            vec![layer(media_type::OCI_LAYER_TAR_GZIP, None, 0)],
        );
        assert!(matches!(
            pick_layer("i", &m, None),
            Err(ImageError::NoWasmLayer { .. })
        ));
    }

    #[test]
    fn prefers_a_wasm_platform_then_this_machine() {
        let with = |os: &str, arch: &str, b: u8| {
            let mut d = Descriptor::of(media_type::OCI_MANIFEST, &[b]);
            d.platform = Some(Platform::new(os, arch));
            d
        };
        let list = [
            with("linux", "arm", 0),
            with("linux", GO_ARCH, 1),
            with("wasip2", "wasm", 2),
        ];
        assert_eq!(pick_manifest(&list).unwrap(), &list[2]);
        assert_eq!(pick_manifest(&list[..2]).unwrap(), &list[1]);
        assert!(pick_manifest(&list[..1]).is_some(), "a lone manifest");
        assert!(pick_manifest(&[list[0].clone(), with("windows", "amd64", 3)]).is_none());
    }
}
