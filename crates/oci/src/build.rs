//! Building a Wasm image and writing it as an OCI image-layout tar archive.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use serde::Serialize;

use crate::digest::SHA256_PREFIX;
use crate::digest::sha256_digest;
use crate::media_type;
use crate::names::{
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, ANNOTATION_TITLE, APP_PATH, IMAGE_OS,
    WASM_ARCHITECTURE,
};
use crate::reference::Reference;
use crate::spec::{
    Annotations, ContainerConfig, Descriptor, ImageConfig, Index, Manifest, OciLayout, Platform,
    RootFs, WasmConfig,
};
use crate::tarball::TarWriter;
use crate::wasm::{WasmError, WasmKind, component_info, detect_wasm};

/// Errors building an image.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The input is not Wasm this crate can package.
    #[error(transparent)]
    Wasm(#[from] WasmError),
    #[error("the artifact shape carries no environment or arguments; use the image shape")]
    ProcessInArtifact,
    #[error("invalid environment variable name `{0}`")]
    EnvName(String),
    #[error("NUL byte in the {0}")]
    Nul(&'static str),
    #[error("created time {0} is past the year 9999")]
    CreatedOutOfRange(u64),
    #[error("SOURCE_DATE_EPOCH `{0}` is not a whole number of seconds")]
    SourceDateEpoch(String),
    #[error("failed to build the layer")]
    Layer(#[source] io::Error),
    #[error("failed to serialise the {0}")]
    Json(&'static str, #[source] serde_json::Error),
}

/// Errors writing an archive.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("failed to write `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How the Wasm is packaged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Shape {
    /// An ordinary OCI image, platform `wasi/wasm`: one gzipped tar layer holding
    /// the app at [`APP_PATH`], `Entrypoint: ["/app.wasm"]`. containerd 1.6
    /// unpacks it into a snapshot like any image.
    #[default]
    Image,
    /// The CNCF TAG Runtime Wasm artifact: config
    /// `application/vnd.wasm.config.v0+json`, one `application/wasm` layer with the
    /// raw bytes; platform `wasip1/wasm` (module) or `wasip2/wasm` (component).
    /// containerd 1.6 stores it but cannot unpack it (import with `--no-unpack`).
    Artifact,
    /// runwasi's shape (`oci-tar-builder`): an OCI image config, platform
    /// `wasi/wasm`, with `Entrypoint: ["/app.wasm"]`, and one raw
    /// `application/vnd.bytecodealliance.wasm.component.layer.v0+wasm` layer.
    /// There is no filesystem: the shim reads the layer from containerd's content
    /// store. containerd 1.6.20 cannot unpack it (import with `--no-unpack`).
    Runwasi,
    /// Spin's and wasm-to-oci's layer type, `application/vnd.wasm.content.layer.v1+wasm`,
    /// under an OCI image config as [`Shape::Runwasi`] has.
    WasmContent,
}

impl Shape {
    /// The media type of the one layer.
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Shape::Image => media_type::OCI_LAYER_TAR_GZIP,
            Shape::Artifact => media_type::WASM_LAYER,
            Shape::Runwasi => media_type::RUNWASI_COMPONENT_LAYER,
            Shape::WasmContent => media_type::WASM_CONTENT_LAYER,
        }
    }

    /// Whether the image config carries a process (env, entrypoint, args).
    pub fn has_process(self) -> bool {
        self != Shape::Artifact
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Shape::Image => "image",
            Shape::Artifact => "artifact",
            Shape::Runwasi => "runwasi",
            Shape::WasmContent => "wasm-content",
        })
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The image's name; becomes the `index.json` annotations.
    pub reference: Reference,
    pub shape: Shape,
    /// The app's environment ([`Shape::Image`] only).
    pub env: Vec<(String, String)>,
    /// The app's arguments after its name ([`Shape::Image`] only): the config's `Cmd`.
    pub args: Vec<String>,
    /// The `created` time, seconds since the Unix epoch. Fixed, so that builds are
    /// reproducible; see [`source_date_epoch`].
    pub created: u64,
    /// The `author` field of the config.
    pub author: Option<String>,
}

impl BuildOptions {
    /// An image of `reference` with no environment or arguments, created at the
    /// Unix epoch.
    pub fn new(reference: Reference, shape: Shape) -> Self {
        Self {
            reference,
            shape,
            env: Vec::new(),
            args: Vec::new(),
            created: 0,
            author: None,
        }
    }
}

/// `SOURCE_DATE_EPOCH` (<https://reproducible-builds.org/specs/source-date-epoch/>)
/// if set and not empty. A value that does not parse is an error, never ignored.
pub fn source_date_epoch() -> Result<Option<u64>, BuildError> {
    parse_epoch(std::env::var_os("SOURCE_DATE_EPOCH").as_deref())
}

fn parse_epoch(value: Option<&std::ffi::OsStr>) -> Result<Option<u64>, BuildError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => {
            let s = v.to_string_lossy();
            s.parse::<u64>()
                .map(Some)
                .map_err(|_| BuildError::SourceDateEpoch(s.into_owned()))
        }
    }
}

/// A built image, in memory: the blobs and the index that names them.
#[derive(Debug, Clone)]
pub struct ImageArchive {
    reference: Reference,
    shape: Shape,
    kind: WasmKind,
    index: Index,
    manifest: Manifest,
    /// Keyed by digest hex, so iteration is the archive's sorted order.
    blobs: BTreeMap<String, Vec<u8>>,
}

/// Packages `wasm` as an image of the given shape.
pub fn build_image(wasm: &[u8], opts: &BuildOptions) -> Result<ImageArchive, BuildError> {
    let kind = detect_wasm(wasm)?;
    check_process(opts)?;
    let created = rfc3339(opts.created)?;

    // Each shape gives: the config (media type, bytes), the one layer (media type,
    // bytes) and the platform recorded in index.json.
    let image_config = |diff_ids: Vec<String>| ImageConfig {
        created: Some(created.clone()),
        author: opts.author.clone(),
        architecture: WASM_ARCHITECTURE.to_owned(),
        os: IMAGE_OS.to_owned(),
        config: Some(ContainerConfig {
            env: (!opts.env.is_empty())
                .then(|| opts.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            entrypoint: Some(vec![APP_PATH.to_owned()]),
            cmd: (!opts.args.is_empty()).then(|| opts.args.clone()),
            working_dir: Some("/".to_owned()),
        }),
        rootfs: RootFs {
            kind: "layers".to_owned(),
            diff_ids,
        },
    };
    // Each shape gives: the config (media type, bytes), the one layer's bytes
    // and the platform recorded in index.json.
    let (config_type, config, layer, platform) = match opts.shape {
        Shape::Image => {
            let tar = layer_tar(wasm).map_err(BuildError::Layer)?;
            let gz = gzip(&tar).map_err(BuildError::Layer)?;
            let config = image_config(vec![sha256_digest(&tar)]);
            (
                media_type::OCI_CONFIG,
                json(&config, "image config")?,
                gz,
                Platform::new(IMAGE_OS, WASM_ARCHITECTURE),
            )
        }
        // No filesystem layer, so no diff_ids: containers of these images
        // get an empty rootfs and the Wasm from the content store.
        Shape::Runwasi | Shape::WasmContent => (
            media_type::OCI_CONFIG,
            json(&image_config(Vec::new()), "image config")?,
            wasm.to_vec(),
            Platform::new(IMAGE_OS, WASM_ARCHITECTURE),
        ),
        Shape::Artifact => {
            let component = match kind {
                WasmKind::Component => Some(component_info(wasm)?),
                WasmKind::Module => None,
            };
            let config = WasmConfig {
                created: created.clone(),
                author: opts.author.clone(),
                architecture: WASM_ARCHITECTURE.to_owned(),
                os: kind.os().to_owned(),
                layer_digests: vec![sha256_digest(wasm)],
                component,
            };
            (
                media_type::WASM_CONFIG,
                json(&config, "Wasm config")?,
                wasm.to_vec(),
                Platform::new(kind.os(), WASM_ARCHITECTURE),
            )
        }
    };
    let mut blobs = BTreeMap::new();
    let config = insert(&mut blobs, config_type, config);
    let mut layer = insert(&mut blobs, opts.shape.layer_media_type(), layer);
    if opts.shape != Shape::Image {
        // The file name a raw layer would have, as ORAS and runwasi write it.
        layer.annotations.insert(
            ANNOTATION_TITLE.to_owned(),
            APP_PATH.trim_start_matches('/').to_owned(),
        );
    }

    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_owned()),
        artifact_type: None,
        config,
        layers: vec![layer],
        annotations: Annotations::new(),
    };
    let mut manifest_descriptor = insert(
        &mut blobs,
        media_type::OCI_MANIFEST,
        json(&manifest, "manifest")?,
    );
    manifest_descriptor.platform = Some(platform);
    manifest_descriptor.annotations = Annotations::from([
        (ANNOTATION_IMAGE_NAME.to_owned(), opts.reference.to_string()),
        (
            ANNOTATION_REF_NAME.to_owned(),
            opts.reference.tag().to_owned(),
        ),
    ]);
    let index = Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.to_owned()),
        manifests: vec![manifest_descriptor],
        annotations: Annotations::new(),
    };
    Ok(ImageArchive {
        reference: opts.reference.clone(),
        shape: opts.shape,
        kind,
        index,
        manifest,
        blobs,
    })
}

impl ImageArchive {
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Whether the packaged Wasm is a core module or a component.
    pub fn wasm_kind(&self) -> WasmKind {
        self.kind
    }

    /// `index.json`.
    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The descriptor of the manifest in `index.json` (platform, annotations).
    pub fn manifest_descriptor(&self) -> &Descriptor {
        &self.index.manifests[0]
    }

    /// `sha256:...` of the manifest: what `ctr images ls` shows as the digest.
    pub fn manifest_digest(&self) -> &str {
        &self.manifest_descriptor().digest
    }

    /// Every blob (config, layers, manifest) by digest, in digest order.
    pub fn blobs(&self) -> impl Iterator<Item = (String, &[u8])> {
        self.blobs
            .iter()
            .map(|(hex, b)| (format!("{SHA256_PREFIX}{hex}"), b.as_slice()))
    }

    /// The blob with this `sha256:...` digest, if the archive holds it.
    pub fn blob_bytes(&self, digest: &str) -> Option<&[u8]> {
        let hex = digest.strip_prefix(SHA256_PREFIX)?;
        self.blobs.get(hex).map(Vec::as_slice)
    }

    /// Writes the image layout as a tar stream: `blobs/sha256/<hex>` for every
    /// blob, `index.json` and `oci-layout`, in sorted order with fixed metadata.
    pub fn write_to<W: Write>(&self, w: W) -> io::Result<W> {
        write_layout(w, &self.index, &self.blobs)
    }

    /// Writes the archive to `path`: to a temporary file beside it, then renamed,
    /// so an error leaves no half-written file (and an existing one untouched).
    pub fn write_tar(&self, path: &Path) -> Result<(), WriteError> {
        write_layout_tar(path, &self.index, &self.blobs)
    }
}

/// An image layout as a tar stream: `blobs/sha256/<hex>` for every blob (keyed
/// by digest hex), `index.json` and `oci-layout`, sorted, with fixed metadata.
pub(crate) fn write_layout<W: Write>(
    w: W,
    index: &Index,
    blobs: &BTreeMap<String, Vec<u8>>,
) -> io::Result<W> {
    let index = serde_json::to_vec(index).map_err(io::Error::other)?;
    let layout = serde_json::to_vec(&OciLayout::default()).map_err(io::Error::other)?;
    let mut tar = TarWriter::new(w);
    tar.dir("blobs/")?;
    tar.dir("blobs/sha256/")?;
    for (hex, blob) in blobs {
        tar.file(&format!("blobs/sha256/{hex}"), blob)?;
    }
    tar.file("index.json", &index)?;
    tar.file("oci-layout", &layout)?;
    tar.finish()
}

/// [`write_layout`] to `path`, through a temporary file beside it that is then
/// renamed: an error leaves no half-written file, and an existing one untouched.
pub(crate) fn write_layout_tar(
    path: &Path,
    index: &Index,
    blobs: &BTreeMap<String, Vec<u8>>,
) -> Result<(), WriteError> {
    let err = |source| WriteError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".wisp-oci-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(err)?;
    // tempfile creates 0600; an image archive is not a secret.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(err)?;
    }
    write_layout(BufWriter::new(tmp.as_file_mut()), index, blobs)
        .and_then(|mut w| w.flush())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

fn check_process(opts: &BuildOptions) -> Result<(), BuildError> {
    let has_process = !(opts.env.is_empty() && opts.args.is_empty());
    if has_process && !opts.shape.has_process() {
        return Err(BuildError::ProcessInArtifact);
    }
    for (k, v) in &opts.env {
        if k.is_empty() || k.contains(['=', '\0']) {
            return Err(BuildError::EnvName(k.clone()));
        }
        if v.contains('\0') {
            return Err(BuildError::Nul("environment"));
        }
    }
    if opts.args.iter().any(|a| a.contains('\0')) {
        return Err(BuildError::Nul("arguments"));
    }
    Ok(())
}

/// The layer's uncompressed tar: the app at [`APP_PATH`], 0644, root-owned, mtime 0.
fn layer_tar(wasm: &[u8]) -> io::Result<Vec<u8>> {
    let mut tar = TarWriter::new(Vec::new());
    tar.file(APP_PATH.trim_start_matches('/'), wasm)?;
    tar.finish()
}

/// gzip with a fixed header (mtime 0, no file name, OS "unknown").
fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::default());
    gz.write_all(data)?;
    gz.finish()
}

fn json<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, BuildError> {
    serde_json::to_vec(value).map_err(|e| BuildError::Json(what, e))
}

/// Adds a blob and returns its descriptor.
fn insert(blobs: &mut BTreeMap<String, Vec<u8>>, media_type: &str, bytes: Vec<u8>) -> Descriptor {
    let descriptor = Descriptor::of(media_type, &bytes);
    blobs.insert(descriptor.digest[SHA256_PREFIX.len()..].to_owned(), bytes);
    descriptor
}

/// Seconds since the epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
fn rfc3339(secs: u64) -> Result<String, BuildError> {
    // 9999-12-31T23:59:59Z: beyond it the year no longer has four digits.
    const MAX: u64 = 253_402_300_799;
    if secs > MAX {
        return Err(BuildError::CreatedOutOfRange(secs));
    }
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    Ok(format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000).unwrap(), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(253_402_300_799).unwrap(), "9999-12-31T23:59:59Z");
        assert!(matches!(
            rfc3339(253_402_300_800),
            Err(BuildError::CreatedOutOfRange(_))
        ));
    }

    #[test]
    fn source_date_epoch_parses_strictly() {
        use std::ffi::OsStr;
        assert_eq!(parse_epoch(None).unwrap(), None);
        assert_eq!(parse_epoch(Some(OsStr::new(""))).unwrap(), None);
        assert_eq!(
            parse_epoch(Some(OsStr::new("1700000000"))).unwrap(),
            Some(1_700_000_000)
        );
        for bad in ["yesterday", "-1", "1.5", " 1"] {
            let err = parse_epoch(Some(OsStr::new(bad))).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("SOURCE_DATE_EPOCH `{bad}` is not a whole number of seconds")
            );
        }
    }

    #[test]
    fn gzip_header_is_fixed() {
        let gz = gzip(b"x").unwrap();
        // magic, deflate, no flags, mtime 0, xfl, OS 255.
        assert_eq!(&gz[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&gz[4..8], &[0, 0, 0, 0]);
        assert_eq!(gz[9], 255);
    }
}
