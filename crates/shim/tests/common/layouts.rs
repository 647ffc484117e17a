//! OCI image archives the tests write themselves, for images wisp-oci would
//! refuse to build: Linux images (busybox-static, a static pause) and Wasm
//! images with unknown media types. Shared by the containerd and CRI tiers.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// A file of a Linux image's single layer.
pub enum Entry {
    Dir(String),
    File(String, Vec<u8>, u32),
    Symlink(String, String),
}

impl Entry {
    pub fn file(path: &str, bytes: Vec<u8>, mode: u32) -> Self {
        Self::File(path.into(), bytes, mode)
    }
}

/// The commands busybox-static provides in the test images.
pub const BUSYBOX_TOOLS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "ls", "wget", "httpd", "true", "false", "nc", "hostname",
];

/// Entries of an image with busybox-static as /bin/busybox, /bin/sh and friends.
/// (Debian's `busybox-static` package).
pub fn busybox_entries() -> Vec<Entry> {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut entries = vec![
        Entry::Dir("bin/".into()),
        Entry::Dir("tmp/".into()),
        Entry::file("bin/busybox", busybox, 0o755),
    ];
    entries.extend(
        BUSYBOX_TOOLS
            .iter()
            .map(|t| Entry::Symlink(format!("bin/{t}"), "busybox".into())),
    );
    entries
}

/// Writes an OCI image archive (linux/amd64) of one tar.gz layer.
pub fn linux_image(reference: &str, out: &Path, entries: &[Entry], cmd: &[&str]) {
    layer_image(reference, out, entries, &[], cmd, ("linux", "amd64"));
}

/// Writes an OCI image archive of one tar.gz layer for `platform`
/// (`("wasi", "wasm")` for a Wasm image of several files).
pub fn layer_image(
    reference: &str,
    out: &Path,
    entries: &[Entry],
    entrypoint: &[&str],
    cmd: &[&str],
    platform: (&str, &str),
) {
    layer_image_as(reference, out, entries, entrypoint, cmd, platform, None);
}

/// [`layer_image`] whose config names the user its processes run as
/// (`"65535:65535"`, as upstream's pause images say).
pub fn layer_image_as(
    reference: &str,
    out: &Path,
    entries: &[Entry],
    entrypoint: &[&str],
    cmd: &[&str],
    (os, arch): (&str, &str),
    user: Option<&str>,
) {
    let mut layer = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut h = tar::Header::new_gnu();
        match entry {
            Entry::Dir(path) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                layer.append_data(&mut h, path, &[][..]).unwrap();
            }
            Entry::File(path, bytes, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(bytes.len() as u64);
                layer.append_data(&mut h, path, &bytes[..]).unwrap();
            }
            Entry::Symlink(path, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                layer.append_link(&mut h, path, target).unwrap();
            }
        }
    }
    let tar_bytes = layer.into_inner().unwrap();
    let diff_id = sha256(&tar_bytes);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_bytes).unwrap();
    let layer_gz = gz.finish().unwrap();
    let mut image_config =
        serde_json::json!({"Env": ["PATH=/bin"], "Entrypoint": entrypoint, "Cmd": cmd});
    if let Some(user) = user {
        image_config["User"] = user.into();
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": os,
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .unwrap();
    write_layout(
        reference,
        out,
        ("application/vnd.oci.image.config.v1+json", &config),
        &[("application/vnd.oci.image.layer.v1.tar+gzip", &layer_gz)],
        (os, arch),
    );
}

/// Writes an OCI image-layout archive of one manifest.
pub fn write_layout(
    reference: &str,
    out: &Path,
    config: (&str, &[u8]),
    layers: &[(&str, &[u8])],
    (os, arch): (&str, &str),
) {
    let descriptor = |(media, bytes): (&str, &[u8])| serde_json::json!({"mediaType": media, "digest": sha256(bytes), "size": bytes.len()});
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor(config),
        "layers": layers.iter().copied().map(descriptor).collect::<Vec<_>>(),
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&manifest), "size": manifest.len(),
            "platform": {"architecture": arch, "os": os},
            "annotations": {"io.containerd.image.name": reference, "org.opencontainers.image.ref.name": "latest"}}],
    }))
    .unwrap();
    let mut archive = tar::Builder::new(std::fs::File::create(out).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        archive.append_data(&mut h, name, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    let mut blobs = vec![config.1, &manifest[..]];
    blobs.extend(layers.iter().map(|l| l.1));
    for blob in blobs {
        add(&format!("blobs/sha256/{}", &sha256(blob)[7..]), blob);
    }
    archive.finish().unwrap();
}
