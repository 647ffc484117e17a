//! Pushing images to and pulling them from OCI registries (the distribution
//! API), through the `oci-client` crate.
//!
//! An [`Image`] is one manifest with every blob it names, held in memory (Wasm
//! images are small). Manifests travel as their exact bytes, so an image keeps
//! its digest through a push and a pull: build, push, pull and the pulled
//! archive is the built one, byte for byte.
//!
//! Every blob pulled is checked against its descriptor's digest and size, and
//! the manifest against the digest the registry announced (or the one asked
//! for).

use std::collections::BTreeMap;
use std::path::Path;

use oci_client::RegistryOperation;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;

use crate::build::ImageArchive;
use crate::build::{WriteError, write_layout_tar};
use crate::digest::sha256_digest;
use crate::digest::sha256_hex;
use crate::layout::{Layout, LayoutError};
use crate::media_type;
use crate::names::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
use crate::reference::Reference;
use crate::spec::{Descriptor, Index, Manifest, Platform};

/// Errors talking to a registry, or preparing what to push.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("failed to push `{reference}`")]
    Push {
        reference: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("failed to pull `{reference}`")]
    Pull {
        reference: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("`{reference}` is not in the registry (manifest unknown)")]
    NotFound { reference: String },
    #[error(
        "the registry sent {what} of `{reference}` with digest `{actual}`, expected `{expected}`"
    )]
    Digest {
        reference: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error(
        "the registry sent blob `{digest}` of `{reference}` as {actual} bytes, its descriptor says {expected}"
    )]
    Size {
        reference: String,
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("the manifest of `{reference}` is not valid JSON")]
    Json {
        reference: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("unsupported manifest media type `{media_type}` for `{reference}`")]
    MediaType {
        reference: String,
        media_type: String,
    },
    #[error("`{reference}` has no manifest for {wanted}; it has: {available}")]
    NoPlatform {
        reference: String,
        wanted: String,
        available: String,
    },
    #[error("`{reference}` is an index of {available}; choose one with a platform")]
    AmbiguousPlatform {
        reference: String,
        available: String,
    },
    #[error("the layout holds {0} images; push needs exactly one")]
    ImageCount(usize),
    #[error("the manifest of `{reference}` is an index nested in an index")]
    NestedIndex { reference: String },
    #[error("invalid Docker config `{}`: {reason}", path.display())]
    DockerConfig {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Speak plain HTTP instead of HTTPS (a registry on loopback or in a lab).
    pub plain_http: bool,
    /// Basic credentials (`user`, `password`); anonymous when `None`. A registry
    /// with token auth exchanges them for a token.
    pub credentials: Option<(String, String)>,
}

/// Credentials `docker login` (or `podman login --authfile`, `oras login`)
/// saved for `domain` in a Docker `config.json`: its `auths` entry for the
/// host (keyed `host`, `https://host` or, for Docker Hub, the legacy
/// `https://index.docker.io/v1/`), as `auth` (base64 of `user:password`) or
/// `username` and `password`. `Ok(None)` when the file or the entry is
/// missing. Credential helpers (`credsStore`, `credHelpers`) are not run.
pub fn docker_credentials(
    config: &Path,
    domain: &str,
) -> Result<Option<(String, String)>, RegistryError> {
    let bad = |reason: String| RegistryError::DockerConfig {
        path: config.to_owned(),
        reason,
    };
    let text = match std::fs::read(config) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        auths: BTreeMap<String, Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
    }
    let parsed: Config = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let mut keys = vec![domain.to_owned(), format!("https://{domain}")];
    if domain == "docker.io" {
        keys.extend([
            "https://index.docker.io/v1/".to_owned(),
            "index.docker.io".to_owned(),
        ]);
    }
    let Some(entry) = keys.iter().find_map(|k| parsed.auths.get(k)) else {
        return Ok(None);
    };
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Some((u.clone(), p.clone())));
    }
    let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|e| bad(format!("the `auth` of `{domain}` is not base64: {e}")))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| bad(format!("the `auth` of `{domain}` is not UTF-8")))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| bad(format!("the `auth` of `{domain}` is not `user:password`")))?;
    Ok(Some((user.to_owned(), password.to_owned())))
}

/// A registry client for one command: pushes and pulls [`Image`]s.
pub struct Registry {
    client: oci_client::Client,
    auth: RegistryAuth,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// One image: its manifest and every blob it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The manifest's descriptor (media type, digest, size, platform).
    pub descriptor: Descriptor,
    pub manifest: Manifest,
    /// The manifest's exact bytes.
    pub manifest_bytes: Vec<u8>,
    /// The config and the layers, keyed by digest hex.
    pub blobs: BTreeMap<String, Vec<u8>>,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `sha256:...` of the manifest.
    pub digest: String,
    /// Blobs uploaded, and blobs the registry already had.
    pub uploaded: usize,
    pub existing: usize,
}

/// The manifest media types a pull accepts.
const ACCEPTED: [&str; 4] = [
    media_type::OCI_MANIFEST,
    media_type::OCI_INDEX,
    media_type::DOCKER_MANIFEST,
    media_type::DOCKER_MANIFEST_LIST,
];

impl Registry {
    pub fn new(opts: &RegistryOptions) -> Self {
        // reqwest is built without a default TLS crypto provider (it would pull
        // in aws-lc); ring is the one this tree already builds. Installing fails
        // only if a provider is already installed, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = ClientConfig {
            protocol: if opts.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            // The platform is chosen here, from the raw index; the client never
            // resolves one itself.
            platform_resolver: None,
            ..Default::default()
        };
        let auth = match &opts.credentials {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Self {
            client: oci_client::Client::new(config),
            auth,
        }
    }

    /// Pushes the image's blobs (skipping those the repository already has),
    /// then its manifest under the reference's tag.
    pub async fn push(
        &self,
        image: &Image,
        reference: &Reference,
    ) -> Result<Pushed, RegistryError> {
        let target = client_reference(reference);
        let err = |source| RegistryError::Push {
            reference: reference.to_string(),
            source,
        };
        // Logged in up front: the client's lazy log-in drops a token
        // service's refusal and goes on anonymously, so a wrong password
        // showed as a 401 on the first blob.
        self.client
            .auth(&target, &self.auth, RegistryOperation::Push)
            .await
            .map_err(err)?;
        let (mut uploaded, mut existing) = (0, 0);
        for descriptor in image.blob_descriptors() {
            let blob = image.blob(descriptor)?;
            if self
                .client
                .blob_exists(&target, &descriptor.digest)
                .await
                .map_err(err)?
            {
                existing += 1;
                continue;
            }
            self.client
                .push_blob(&target, blob.to_vec(), &descriptor.digest)
                .await
                .map_err(err)?;
            uploaded += 1;
        }
        let content_type =
            image
                .descriptor
                .media_type
                .parse()
                .map_err(|_| RegistryError::MediaType {
                    reference: reference.to_string(),
                    media_type: image.descriptor.media_type.clone(),
                })?;
        self.client
            .push_manifest_raw(&target, image.manifest_bytes.clone(), content_type)
            .await
            .map_err(err)?;
        Ok(Pushed {
            digest: image.descriptor.digest.clone(),
            uploaded,
            existing,
        })
    }

    /// Pulls the image a reference names. When the tag names an index, the
    /// manifest for `platform` is taken; without one, the index's only
    /// manifest, or its only Wasm one.
    pub async fn pull(
        &self,
        reference: &Reference,
        platform: Option<&Platform>,
    ) -> Result<Image, RegistryError> {
        let name = reference.to_string();
        let target = client_reference(reference);
        let err = |source| pull_error(&name, source);
        self.client
            .auth(&target, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(err)?;
        let (bytes, digest) = self
            .client
            .pull_manifest_raw(&target, &self.auth, &ACCEPTED)
            .await
            .map_err(err)?;
        check_digest(&name, "the manifest", &digest, &bytes)?;
        let (manifest, manifest_bytes, index_platform) = match parse_top(&name, &bytes)? {
            Top::Manifest(m) => (*m, bytes.to_vec(), None),
            Top::Index(index) => {
                let chosen = choose(&name, &index, platform)?.clone();
                let by_digest = target.clone_with_digest(chosen.digest.clone());
                let (bytes, _) = self
                    .client
                    .pull_manifest_raw(&by_digest, &self.auth, &ACCEPTED)
                    .await
                    .map_err(err)?;
                check_digest(&name, "the manifest", &chosen.digest, &bytes)?;
                match parse_top(&name, &bytes)? {
                    Top::Manifest(m) => (*m, bytes.to_vec(), chosen.platform),
                    Top::Index(_) => return Err(RegistryError::NestedIndex { reference: name }),
                }
            }
        };
        let mut blobs = BTreeMap::new();
        for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let mut data = Vec::with_capacity(descriptor.size.min(64 << 20) as usize);
            self.client
                .pull_blob(&target, descriptor.digest.as_str(), &mut data)
                .await
                .map_err(err)?;
            if data.len() as u64 != descriptor.size {
                return Err(RegistryError::Size {
                    reference: name,
                    digest: descriptor.digest.clone(),
                    expected: descriptor.size,
                    actual: data.len() as u64,
                });
            }
            // oci-client checks the digest too; a blob keyed by a digest it
            // does not have would be written into the layout under that name.
            check_digest(&name, "a blob", &descriptor.digest, &data)?;
            let hex = sha256_hex(&descriptor.digest).expect("checked above");
            blobs.insert(hex.to_owned(), data);
        }
        let mut descriptor = Descriptor::of(
            manifest
                .media_type
                .as_deref()
                .unwrap_or(media_type::OCI_MANIFEST),
            &manifest_bytes,
        );
        descriptor.platform = match index_platform {
            Some(p) => Some(p),
            None => config_platform(&manifest, &blobs),
        };
        // A tag that names one manifest must still be the platform asked for,
        // as `docker pull --platform` insists.
        if let Some(w) = platform {
            let matches = descriptor
                .platform
                .as_ref()
                .is_some_and(|p| p.os == w.os && p.architecture == w.architecture);
            if !matches {
                return Err(RegistryError::NoPlatform {
                    reference: name,
                    wanted: w.to_string(),
                    available: descriptor
                        .platform
                        .as_ref()
                        .map_or_else(|| "no platform".to_owned(), Platform::to_string),
                });
            }
        }
        Ok(Image {
            descriptor,
            manifest,
            manifest_bytes,
            blobs,
        })
    }
}

impl Image {
    /// The image a built archive holds.
    pub fn from_archive(archive: &ImageArchive) -> Self {
        let manifest_bytes = archive
            .blob_bytes(archive.manifest_digest())
            .expect("a built archive holds its manifest")
            .to_vec();
        let mut descriptor = archive.manifest_descriptor().clone();
        descriptor.annotations.clear();
        let manifest = archive.manifest().clone();
        let blobs = std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .map(|d| {
                let hex = sha256_hex(&d.digest).expect("built digests are sha256");
                let blob = archive.blob_bytes(&d.digest).expect("built blobs are held");
                (hex.to_owned(), blob.to_vec())
            })
            .collect();
        Self {
            descriptor,
            manifest,
            manifest_bytes,
            blobs,
        }
    }

    /// The one image of a layout (an archive `wisp oci build` or `ctr images
    /// export` wrote); a layout of several images is refused.
    pub fn from_layout(layout: &Layout) -> Result<Self, RegistryError> {
        let mut images = layout.images()?;
        if images.len() != 1 {
            return Err(RegistryError::ImageCount(images.len()));
        }
        let image = images.remove(0);
        let manifest_bytes = layout.blob(&image.descriptor)?.to_vec();
        let mut blobs = BTreeMap::new();
        for d in std::iter::once(&image.manifest.config).chain(&image.manifest.layers) {
            let hex = sha256_hex(&d.digest).ok_or_else(|| LayoutError::Digest(d.digest.clone()))?;
            blobs.insert(hex.to_owned(), layout.blob(d)?.to_vec());
        }
        let mut descriptor = image.descriptor;
        descriptor.annotations.clear();
        Ok(Self {
            descriptor,
            manifest: image.manifest,
            manifest_bytes,
            blobs,
        })
    }

    /// The config's and the layers' descriptors.
    fn blob_descriptors(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.manifest.config).chain(&self.manifest.layers)
    }

    fn blob(&self, descriptor: &Descriptor) -> Result<&[u8], LayoutError> {
        sha256_hex(&descriptor.digest)
            .and_then(|hex| self.blobs.get(hex))
            .map(Vec::as_slice)
            .ok_or_else(|| LayoutError::MissingBlob(descriptor.digest.clone()))
    }

    /// Writes the image as an image-layout tar archive that names it
    /// `reference`, as [`ImageArchive::write_tar`] does (and `ctr images
    /// import` reads), atomically.
    pub fn write_tar(&self, reference: &Reference, path: &Path) -> Result<(), RegistryError> {
        let mut descriptor = self.descriptor.clone();
        descriptor.annotations = BTreeMap::from([
            (ANNOTATION_IMAGE_NAME.to_owned(), reference.to_string()),
            (ANNOTATION_REF_NAME.to_owned(), reference.tag().to_owned()),
        ]);
        let index = Index {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.to_owned()),
            manifests: vec![descriptor],
            annotations: BTreeMap::new(),
        };
        let mut blobs = self.blobs.clone();
        let hex = sha256_hex(&self.descriptor.digest)
            .ok_or_else(|| LayoutError::Digest(self.descriptor.digest.clone()))?;
        blobs.insert(hex.to_owned(), self.manifest_bytes.clone());
        write_layout_tar(path, &index, &blobs)?;
        Ok(())
    }
}

/// A manifest or an index, parsed.
enum Top {
    Manifest(Box<Manifest>),
    Index(Index),
}

fn parse_top(reference: &str, bytes: &[u8]) -> Result<Top, RegistryError> {
    let json = |source| RegistryError::Json {
        reference: reference.to_owned(),
        source,
    };
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(json)?;
    let is_index = match probe.media_type.as_deref() {
        Some(media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST) => true,
        Some(media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST) => false,
        // An OCI manifest or index may leave `mediaType` out; `manifests` tells.
        None => probe.manifests.is_some(),
        Some(other) => {
            return Err(RegistryError::MediaType {
                reference: reference.to_owned(),
                media_type: other.to_owned(),
            });
        }
    };
    if is_index {
        Ok(Top::Index(serde_json::from_slice(bytes).map_err(json)?))
    } else {
        Ok(Top::Manifest(serde_json::from_slice(bytes).map_err(json)?))
    }
}

/// Whether a platform is one a Wasm runtime runs.
fn is_wasm_platform(p: &Platform) -> bool {
    p.architecture == crate::names::WASM_ARCHITECTURE
}

/// The manifest of an index to pull: the one for `wanted`; else the only
/// manifest, or the only Wasm one.
fn choose<'a>(
    reference: &str,
    index: &'a Index,
    wanted: Option<&Platform>,
) -> Result<&'a Descriptor, RegistryError> {
    let available = || {
        let list: Vec<String> = index
            .manifests
            .iter()
            .map(|d| match &d.platform {
                Some(p) => p.to_string(),
                None => format!("{} (no platform)", d.digest),
            })
            .collect();
        if list.is_empty() {
            "no manifests".to_owned()
        } else {
            list.join(", ")
        }
    };
    let candidates: Vec<&Descriptor> = match wanted {
        Some(w) => index
            .manifests
            .iter()
            .filter(|d| {
                d.platform.as_ref().is_some_and(|p| {
                    p.os == w.os
                        && p.architecture == w.architecture
                        && (w.variant.is_none() || p.variant == w.variant)
                })
            })
            .collect(),
        None if index.manifests.len() == 1 => index.manifests.iter().collect(),
        None => index
            .manifests
            .iter()
            .filter(|d| d.platform.as_ref().is_some_and(is_wasm_platform))
            .collect(),
    };
    match candidates.as_slice() {
        [one] => Ok(one),
        [] => Err(RegistryError::NoPlatform {
            reference: reference.to_owned(),
            wanted: wanted.map_or_else(|| "a Wasm platform".to_owned(), |p| p.to_string()),
            available: available(),
        }),
        _ => Err(RegistryError::AmbiguousPlatform {
            reference: reference.to_owned(),
            available: available(),
        }),
    }
}

/// The platform an image's config declares (`os`, `architecture`), for the
/// layout's index when the registry's tag named a manifest directly.
fn config_platform(manifest: &Manifest, blobs: &BTreeMap<String, Vec<u8>>) -> Option<Platform> {
    #[derive(serde::Deserialize)]
    struct OsArch {
        os: String,
        architecture: String,
    }
    let hex = sha256_hex(&manifest.config.digest)?;
    let c: OsArch = serde_json::from_slice(blobs.get(hex)?).ok()?;
    (!c.os.is_empty() && !c.architecture.is_empty()).then(|| Platform::new(&c.os, &c.architecture))
}

fn check_digest(
    reference: &str,
    what: &'static str,
    expected: &str,
    bytes: &[u8],
) -> Result<(), RegistryError> {
    if sha256_hex(expected).is_none() {
        return Err(LayoutError::Digest(expected.to_owned()).into());
    }
    let actual = sha256_digest(bytes);
    if actual != expected {
        return Err(RegistryError::Digest {
            reference: reference.to_owned(),
            what,
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(())
}

fn pull_error(reference: &str, source: OciDistributionError) -> RegistryError {
    let not_found = match &source {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, oci_client::errors::OciErrorCode::ManifestUnknown)),
        _ => false,
    };
    if not_found {
        RegistryError::NotFound {
            reference: reference.to_owned(),
        }
    } else {
        RegistryError::Pull {
            reference: reference.to_owned(),
            source,
        }
    }
}

fn client_reference(reference: &Reference) -> oci_client::Reference {
    oci_client::Reference::with_tag(
        reference.domain().to_owned(),
        reference.path().to_owned(),
        reference.tag().to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(platforms: &[(&str, &str)]) -> Index {
        Index {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.to_owned()),
            manifests: platforms
                .iter()
                .enumerate()
                .map(|(i, (os, arch))| {
                    let mut d = Descriptor::of(media_type::OCI_MANIFEST, &[i as u8]);
                    d.platform = Some(Platform::new(os, arch));
                    d
                })
                .collect(),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn an_index_resolves_to_its_wasm_manifest_or_the_platform_asked_for() {
        let i = index(&[("linux", "amd64"), ("wasip2", "wasm")]);
        let d = choose("r", &i, None).unwrap();
        assert_eq!(d.platform.as_ref().unwrap().os, "wasip2");
        let d = choose("r", &i, Some(&Platform::new("linux", "amd64"))).unwrap();
        assert_eq!(d.platform.as_ref().unwrap().os, "linux");

        let e = choose("r", &i, Some(&Platform::new("wasi", "wasm"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`r` has no manifest for wasi/wasm; it has: linux/amd64, wasip2/wasm"
        );
        let two = index(&[("wasip1", "wasm"), ("wasip2", "wasm")]);
        let e = choose("r", &two, None).unwrap_err();
        assert!(matches!(e, RegistryError::AmbiguousPlatform { .. }), "{e}");
        // A single manifest is taken whatever its platform.
        let one = index(&[("linux", "arm64")]);
        assert!(choose("r", &one, None).is_ok());
    }

    #[test]
    fn manifests_and_indexes_are_told_apart_with_or_without_a_media_type() {
        let m = br#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:00","size":1},"layers":[]}"#;
        assert!(matches!(parse_top("r", m), Ok(Top::Manifest(..))));
        let i = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(parse_top("r", i), Ok(Top::Index(_))));
        let odd =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.artifact.manifest.v1+json"}"#;
        let e = parse_top("r", odd).err().unwrap();
        assert!(
            e.to_string().contains("unsupported manifest media type"),
            "{e}"
        );
        let e = parse_top("r", b"not json").err().unwrap();
        assert_eq!(e.to_string(), "the manifest of `r` is not valid JSON");
    }

    #[test]
    fn docker_login_credentials_are_found_by_host() {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        assert_eq!(docker_credentials(&path, "r.example").unwrap(), None);
        let auth = base64::engine::general_purpose::STANDARD.encode("ann:s3:cret");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{auth}"}},
                "https://index.docker.io/v1/":{{"username":"hub","password":"pw"}},
                "bad.example":{{"auth":"!!"}}}}, "credsStore":"desktop"}}"#
            ),
        )
        .unwrap();
        let creds = |d| docker_credentials(&path, d).unwrap();
        assert_eq!(
            creds("127.0.0.1:5000"),
            Some(("ann".into(), "s3:cret".into()))
        );
        assert_eq!(creds("docker.io"), Some(("hub".into(), "pw".into())));
        assert_eq!(creds("other.example"), None);
        let e = docker_credentials(&path, "bad.example").unwrap_err();
        assert!(
            e.to_string()
                .contains("the `auth` of `bad.example` is not base64"),
            "{e}"
        );
        std::fs::write(&path, "{").unwrap();
        let e = docker_credentials(&path, "x").unwrap_err();
        assert!(e.to_string().starts_with("invalid Docker config `"), "{e}");
    }

    #[test]
    fn a_blob_that_does_not_match_its_digest_is_refused() {
        let good = sha256_digest(b"wasm");
        assert!(check_digest("r", "a blob", &good, b"wasm").is_ok());
        let e = check_digest("r", "a blob", &good, b"evil").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("the registry sent a blob of `r` with digest `sha256:")
        );
        assert!(
            e.to_string().ends_with(&format!("expected `{good}`")),
            "{e}"
        );
    }
}
