//! Which kind of Wasm image a manifest describes, from its media types alone.

use crate::media_type;
use crate::spec::{Descriptor, Manifest};

/// Errors classifying a manifest.
#[derive(Debug, thiserror::Error)]
pub enum KindError {
    #[error("unknown layer media type `{media_type}` (layer `{digest}`)")]
    UnknownLayerMediaType { media_type: String, digest: String },
    #[error("unknown config media type `{0}`")]
    UnknownConfigMediaType(String),
    #[error("the Wasm artifact has no Wasm layer")]
    NoWasmLayer,
    #[error("the Wasm artifact has a filesystem layer (`{0}`)")]
    FilesystemLayerInArtifact(String),
    #[error("the image has no layers")]
    NoLayers,
}

/// What a manifest holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageKind<'a> {
    /// CNCF TAG Wasm artifact: config `application/vnd.wasm.config.v0+json` (or
    /// wasm-to-oci's `v1+json`), only Wasm layers (raw bytes).
    WasmArtifact { wasm_layers: Vec<&'a Descriptor> },
    /// An OCI (or Docker) image: filesystem layers, possibly with Wasm layers beside
    /// them (runwasi's `oci-tar-builder` adds those to an image config).
    Image {
        filesystem_layers: Vec<&'a Descriptor>,
        wasm_layers: Vec<&'a Descriptor>,
    },
}

impl std::fmt::Display for ImageKind<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageKind::WasmArtifact { wasm_layers } => {
                write!(
                    f,
                    "Wasm artifact ({})",
                    count(wasm_layers.len(), "Wasm layer")
                )
            }
            ImageKind::Image {
                filesystem_layers,
                wasm_layers,
            } => write!(
                f,
                "image ({}, {})",
                count(filesystem_layers.len(), "filesystem layer"),
                count(wasm_layers.len(), "Wasm layer")
            ),
        }
    }
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Whether a layer of this media type holds raw Wasm bytes: the TAG Wasm layer,
/// runwasi's, Spin's / wasm-to-oci's, and the early W3C module type.
pub fn is_wasm_layer(media_type: &str) -> bool {
    media_type::WASM_LAYERS.contains(&media_type)
}

fn is_filesystem_layer(media_type: &str) -> bool {
    media_type::FILESYSTEM_LAYERS.contains(&media_type)
}

/// The manifest's Wasm layers, in manifest order.
pub fn wasm_layers(manifest: &Manifest) -> Vec<&Descriptor> {
    manifest
        .layers
        .iter()
        .filter(|l| is_wasm_layer(&l.media_type))
        .collect()
}

/// Classifies a manifest by its config and layer media types. Any layer that is
/// neither Wasm nor a filesystem tar is an error naming its media type: a shim
/// must not run an image while ignoring part of it.
pub fn detect_kind(manifest: &Manifest) -> Result<ImageKind<'_>, KindError> {
    let mut wasm = Vec::new();
    let mut filesystem = Vec::new();
    for layer in &manifest.layers {
        if is_wasm_layer(&layer.media_type) {
            wasm.push(layer);
        } else if is_filesystem_layer(&layer.media_type) {
            filesystem.push(layer);
        } else {
            return Err(KindError::UnknownLayerMediaType {
                media_type: layer.media_type.clone(),
                digest: layer.digest.clone(),
            });
        }
    }
    match manifest.config.media_type.as_str() {
        media_type::WASM_CONFIG | media_type::WASM_TO_OCI_CONFIG => {
            if let Some(fs) = filesystem.first() {
                return Err(KindError::FilesystemLayerInArtifact(fs.media_type.clone()));
            }
            if wasm.is_empty() {
                return Err(KindError::NoWasmLayer);
            }
            Ok(ImageKind::WasmArtifact { wasm_layers: wasm })
        }
        media_type::OCI_CONFIG | media_type::DOCKER_CONFIG => {
            if wasm.is_empty() && filesystem.is_empty() {
                return Err(KindError::NoLayers);
            }
            Ok(ImageKind::Image {
                filesystem_layers: filesystem,
                wasm_layers: wasm,
            })
        }
        other => Err(KindError::UnknownConfigMediaType(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Annotations;

    fn manifest(config: &str, layers: &[&str]) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.to_owned()),
            artifact_type: None,
            config: Descriptor::of(config, b"{}"),
            layers: layers
                .iter()
                .enumerate()
                .map(|(i, t)| Descriptor::of(t, &[i as u8]))
                .collect(),
            annotations: Annotations::new(),
        }
    }

    #[test]
    fn recognises_all_four_wasm_layer_types() {
        for t in media_type::WASM_LAYERS {
            let m = manifest(media_type::WASM_CONFIG, &[t]);
            assert_eq!(wasm_layers(&m).len(), 1, "{t}");
            assert!(
                matches!(detect_kind(&m).unwrap(), ImageKind::WasmArtifact { .. }),
                "{t}"
            );
        }
        assert_eq!(media_type::WASM_LAYERS.len(), 4);
    }

    #[test]
    fn images_with_filesystem_and_wasm_layers() {
        let m = manifest(
            media_type::OCI_CONFIG,
            &[
                media_type::OCI_LAYER_TAR_GZIP,
                media_type::RUNWASI_COMPONENT_LAYER,
            ],
        );
        let kind = detect_kind(&m).unwrap();
        let ImageKind::Image {
            filesystem_layers,
            wasm_layers: wasm,
        } = &kind
        else {
            panic!("{kind:?}")
        };
        assert_eq!((filesystem_layers.len(), wasm.len()), (1, 1));
        assert_eq!(wasm[0].media_type, media_type::RUNWASI_COMPONENT_LAYER);
        assert_eq!(kind.to_string(), "image (1 filesystem layer, 1 Wasm layer)");
    }

    #[test]
    fn unknown_media_types_are_named() {
        let m = manifest(media_type::OCI_CONFIG, &["application/x-mystery"]);
        let err = detect_kind(&m).unwrap_err().to_string();
        assert!(
            err.contains("unknown layer media type `application/x-mystery`"),
            "{err}"
        );

        let m = manifest(
            "application/vnd.example.config+json",
            &[media_type::WASM_LAYER],
        );
        let err = detect_kind(&m).unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown config media type `application/vnd.example.config+json`"
        );

        let m = manifest(media_type::WASM_CONFIG, &[media_type::OCI_LAYER_TAR]);
        assert!(matches!(
            detect_kind(&m),
            Err(KindError::FilesystemLayerInArtifact(_))
        ));
        let m = manifest(media_type::WASM_CONFIG, &[]);
        assert!(matches!(detect_kind(&m), Err(KindError::NoWasmLayer)));
        let m = manifest(media_type::OCI_CONFIG, &[]);
        assert!(matches!(detect_kind(&m), Err(KindError::NoLayers)));
    }
}
