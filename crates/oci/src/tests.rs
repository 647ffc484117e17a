//! Round trips: build -> write_tar -> read, with every digest and size checked.

use std::path::Path;

use crate::spec::{ImageConfig, WasmConfig};
use crate::*;

fn module() -> Vec<u8> {
    wat::parse_str(r#"(module (func (export "_start")) (memory (export "memory") 1))"#).unwrap()
}

fn component() -> Vec<u8> {
    wat::parse_str(
        r#"(component
            (import "wasi:cli/stdout@0.2.0" (instance))
            (component $c)
            (export "wasi:cli/run@0.2.0" (component $c)))"#,
    )
    .unwrap()
}

fn opts(name: &str, shape: Shape) -> BuildOptions {
    BuildOptions::new(Reference::parse(name).unwrap(), shape)
}

/// Reads the tar back and checks the layout's own invariants independently of
/// `read_layout_tar`: every blob's sha256 is its file name, entries are sorted,
/// metadata is fixed.
fn check_tar_invariants(path: &Path) {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let h = entry.header();
        assert_eq!(h.mtime().unwrap(), 0, "{name}");
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0), "{name}");
        if let Some(hex) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            assert_eq!(h.mode().unwrap(), 0o644, "{name}");
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            assert_eq!(sha256_digest(&data), format!("sha256:{hex}"), "{name}");
        }
        names.push(name);
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are not sorted");
    assert!(
        names.contains(&"oci-layout".to_owned()) && names.contains(&"index.json".to_owned()),
        "{names:?}"
    );
}

/// Every descriptor reachable from the index resolves, with the right size.
fn check_descriptors(layout: &Layout) {
    for image in layout.images().unwrap() {
        layout.blob(&image.descriptor).unwrap();
        layout.blob(&image.manifest.config).unwrap();
        for layer in &image.manifest.layers {
            layout.blob(layer).unwrap();
        }
    }
}

#[test]
fn image_shape_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = module();
    let mut o = opts("hello:latest", Shape::Image);
    o.env = vec![("GREETING".into(), "hi there".into())];
    o.args = vec!["--loud".into(), "world".into()];
    let archive = build_image(&wasm, &o).unwrap();
    assert_eq!(archive.wasm_kind(), WasmKind::Module);
    let path = dir.path().join("hello.oci.tar");
    archive.write_tar(&path).unwrap();
    check_tar_invariants(&path);

    let layout = read_layout_tar(&path).unwrap();
    check_descriptors(&layout);
    assert_eq!(layout.blob_digests().count(), 3, "config, layer, manifest");
    let images = layout.images().unwrap();
    assert_eq!(images.len(), 1);
    let image = &images[0];
    assert_eq!(
        image.name.as_deref(),
        Some("docker.io/library/hello:latest")
    );
    assert_eq!(image.descriptor.digest, archive.manifest_digest());
    assert_eq!(image.descriptor.annotations[ANNOTATION_REF_NAME], "latest");
    let platform = image.descriptor.platform.as_ref().unwrap();
    assert_eq!(platform.to_string(), "wasi/wasm");
    assert_eq!(&image.manifest, archive.manifest());
    assert_eq!(
        image.manifest.media_type.as_deref(),
        Some(media_type::OCI_MANIFEST)
    );
    assert_eq!(image.manifest.config.media_type, media_type::OCI_CONFIG);
    assert_eq!(
        image.manifest.layers[0].media_type,
        media_type::OCI_LAYER_TAR_GZIP
    );
    assert!(wasm_layers(&image.manifest).is_empty());
    assert!(matches!(image.kind().unwrap(), ImageKind::Image { .. }));

    let config: ImageConfig = layout.image_config(&image.manifest).unwrap();
    assert_eq!(
        (config.os.as_str(), config.architecture.as_str()),
        ("wasi", "wasm")
    );
    assert_eq!(config.created.as_deref(), Some("1970-01-01T00:00:00Z"));
    let process = config.config.as_ref().unwrap();
    assert_eq!(
        process.entrypoint.as_deref(),
        Some(&["/app.wasm".to_owned()][..])
    );
    assert_eq!(
        process.cmd.as_deref(),
        Some(&["--loud".to_owned(), "world".to_owned()][..])
    );
    assert_eq!(
        process.env.as_deref(),
        Some(&["GREETING=hi there".to_owned()][..])
    );
    assert_eq!(process.working_dir.as_deref(), Some("/"));

    // diff_id is the sha256 of the uncompressed layer; the layer holds /app.wasm.
    let gz = layout.blob(&image.manifest.layers[0]).unwrap();
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut tar).unwrap();
    assert_eq!(config.rootfs.diff_ids, [sha256_digest(&tar)]);
    assert_eq!(config.rootfs.kind, "layers");
    let mut layer = tar::Archive::new(&tar[..]);
    let entries: Vec<_> = layer
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.mtime().unwrap(),
            )
        })
        .collect();
    assert_eq!(entries, [("app.wasm".to_owned(), 0o644, 0, 0)]);
    assert_eq!(layout.wasm(&image.manifest).unwrap(), wasm);
}

#[test]
fn artifact_shape_round_trips_for_modules_and_components() {
    let dir = tempfile::tempdir().unwrap();
    for (wasm, os) in [(module(), "wasip1"), (component(), "wasip2")] {
        let mut o = opts("ghcr.io/wisp/app:v1", Shape::Artifact);
        o.author = Some("wisp tests".into());
        o.created = 1_700_000_000;
        let archive = build_image(&wasm, &o).unwrap();
        let path = dir.path().join(format!("{os}.tar"));
        archive.write_tar(&path).unwrap();
        check_tar_invariants(&path);

        let layout = read_layout_tar(&path).unwrap();
        check_descriptors(&layout);
        let images = layout.images().unwrap();
        let image = &images[0];
        assert_eq!(image.name.as_deref(), Some("ghcr.io/wisp/app:v1"));
        assert_eq!(image.descriptor.annotations[ANNOTATION_REF_NAME], "v1");
        assert_eq!(
            image.descriptor.platform.as_ref().unwrap().to_string(),
            format!("{os}/wasm")
        );
        assert_eq!(image.manifest.config.media_type, media_type::WASM_CONFIG);
        assert_eq!(image.manifest.layers.len(), 1);
        let layer = &image.manifest.layers[0];
        assert_eq!(layer.media_type, media_type::WASM_LAYER);
        assert_eq!(layer.size, wasm.len() as u64);
        assert_eq!(
            layout.blob(layer).unwrap(),
            &wasm[..],
            "the layer is the raw bytes"
        );
        assert_eq!(wasm_layers(&image.manifest), [layer]);
        assert_eq!(
            image.kind().unwrap(),
            ImageKind::WasmArtifact {
                wasm_layers: vec![layer]
            }
        );
        assert_eq!(layout.wasm(&image.manifest).unwrap(), wasm);

        let config: WasmConfig = layout.wasm_config(&image.manifest).unwrap();
        assert_eq!(config.os, os);
        assert_eq!(config.architecture, "wasm");
        assert_eq!(config.created, "2023-11-14T22:13:20Z");
        assert_eq!(config.author.as_deref(), Some("wisp tests"));
        assert_eq!(config.layer_digests, std::slice::from_ref(&layer.digest));
        match os {
            "wasip2" => {
                let c = config.component.unwrap();
                assert_eq!(c.exports, ["wasi:cli/run@0.2.0"]);
                assert_eq!(c.imports, ["wasi:cli/stdout@0.2.0"]);
            }
            _ => assert!(config.component.is_none()),
        }
        // Optional fields stay absent rather than null.
        let raw = String::from_utf8(layout.blob(&image.manifest.config).unwrap().to_vec()).unwrap();
        assert!(!raw.contains("null"), "{raw}");
        assert!(raw.contains(r#""layerDigests":["sha256:"#), "{raw}");
    }
}

#[test]
fn raw_layer_image_shapes_carry_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = component();
    for (shape, layer_type) in [
        (Shape::Runwasi, media_type::RUNWASI_COMPONENT_LAYER),
        (Shape::WasmContent, media_type::WASM_CONTENT_LAYER),
    ] {
        let mut o = opts("ghcr.io/wisp/app:v2", shape);
        o.env = vec![("MODE".into(), "prod".into())];
        o.args = vec!["--verbose".into()];
        let archive = build_image(&wasm, &o).unwrap();
        let path = dir.path().join(format!("{shape}.tar"));
        archive.write_tar(&path).unwrap();
        check_tar_invariants(&path);

        let layout = read_layout_tar(&path).unwrap();
        check_descriptors(&layout);
        let image = &layout.images().unwrap()[0];
        assert_eq!(
            image.descriptor.platform.as_ref().unwrap().to_string(),
            "wasi/wasm"
        );
        assert_eq!(image.manifest.config.media_type, media_type::OCI_CONFIG);
        let layer = &image.manifest.layers[0];
        assert_eq!(layer.media_type, layer_type, "{shape}");
        assert_eq!(layer.annotations[ANNOTATION_TITLE], "app.wasm");
        assert_eq!(layout.blob(layer).unwrap(), &wasm[..]);
        assert_eq!(
            image.kind().unwrap(),
            ImageKind::Image {
                filesystem_layers: vec![],
                wasm_layers: vec![layer]
            }
        );
        let config: ImageConfig = layout.image_config(&image.manifest).unwrap();
        let process = config.config.unwrap();
        assert_eq!(process.entrypoint.unwrap(), [APP_PATH]);
        assert_eq!(process.cmd.unwrap(), ["--verbose"]);
        assert_eq!(process.env.unwrap(), ["MODE=prod"]);
        assert!(config.rootfs.diff_ids.is_empty(), "no filesystem layer");
    }
}

#[test]
fn builds_are_byte_for_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    for shape in [
        Shape::Image,
        Shape::Artifact,
        Shape::Runwasi,
        Shape::WasmContent,
    ] {
        let a = dir.path().join(format!("{shape}-a.tar"));
        let b = dir.path().join(format!("{shape}-b.tar"));
        build_image(&module(), &opts("hello", shape))
            .unwrap()
            .write_tar(&a)
            .unwrap();
        build_image(&module(), &opts("hello", shape))
            .unwrap()
            .write_tar(&b)
            .unwrap();
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{shape}"
        );
        // A different created time gives a different image.
        let mut later = opts("hello", shape);
        later.created = 1;
        let c = build_image(&module(), &later).unwrap();
        assert_ne!(
            c.manifest_digest(),
            build_image(&module(), &opts("hello", shape))
                .unwrap()
                .manifest_digest()
        );
    }
}

#[test]
fn refuses_bad_inputs() {
    let err = build_image(b"hello world\n", &opts("hello", Shape::Image)).unwrap_err();
    assert!(
        matches!(err, BuildError::Wasm(WasmError::NotWasm { .. })),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "not a WebAssembly binary: text starting with `hello world`"
    );

    let mut o = opts("hello", Shape::Artifact);
    o.env = vec![("A".into(), "b".into())];
    assert!(matches!(
        build_image(&module(), &o),
        Err(BuildError::ProcessInArtifact)
    ));
    let mut o = opts("hello", Shape::Artifact);
    o.args = vec!["x".into()];
    assert!(matches!(
        build_image(&module(), &o),
        Err(BuildError::ProcessInArtifact)
    ));

    for key in ["", "A=B", "A\0"] {
        let mut o = opts("hello", Shape::Image);
        o.env = vec![(key.into(), "v".into())];
        assert!(
            matches!(build_image(&module(), &o), Err(BuildError::EnvName(_))),
            "{key:?}"
        );
    }
    let mut o = opts("hello", Shape::Image);
    o.created = u64::MAX;
    assert!(matches!(
        build_image(&module(), &o),
        Err(BuildError::CreatedOutOfRange(_))
    ));
}

#[test]
fn failed_write_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let archive = build_image(&module(), &opts("hello", Shape::Image)).unwrap();
    // The target is a directory: the rename fails, and the temp file goes away.
    let target = dir.path().join("taken");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    let err = archive.write_tar(&target).unwrap_err();
    assert!(err.to_string().starts_with("failed to write `"), "{err}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["taken"], "leftovers: {names:?}");
    // A missing parent directory is an error naming the target.
    let err = archive
        .write_tar(&dir.path().join("no/such/dir/x.tar"))
        .unwrap_err();
    assert!(err.to_string().contains("x.tar"), "{err}");
}

#[test]
fn reads_layout_directories_and_refuses_corrupt_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let archive = build_image(&module(), &opts("hello", Shape::Image)).unwrap();
    let path = dir.path().join("img.tar");
    archive.write_tar(&path).unwrap();
    let unpacked = dir.path().join("layout");
    tar::Archive::new(std::fs::File::open(&path).unwrap())
        .unpack(&unpacked)
        .unwrap();
    let layout = read_layout_dir(&unpacked).unwrap();
    assert_eq!(
        layout.images().unwrap()[0].descriptor.digest,
        archive.manifest_digest()
    );
    assert_eq!(layout.index(), archive.index());

    // A blob whose content does not match its name.
    let (digest, _) = archive.blobs().next().unwrap();
    let blob = unpacked.join("blobs/sha256").join(&digest[7..]);
    std::fs::write(&blob, b"tampered").unwrap();
    let err = read_layout_dir(&unpacked).unwrap_err();
    assert!(matches!(err, LayoutError::Corrupt { .. }), "{err}");
    std::fs::remove_file(&blob).unwrap();
    // Now missing: reading the layout works, resolving the image does not.
    let layout = read_layout_dir(&unpacked).unwrap();
    let err = layout
        .images()
        .and_then(|images| {
            let m = &images[0].manifest;
            layout.blob(&m.config)?;
            m.layers.iter().try_for_each(|l| layout.blob(l).map(drop))
        })
        .unwrap_err();
    assert!(matches!(err, LayoutError::MissingBlob(_)), "{err}");

    std::fs::remove_file(unpacked.join("oci-layout")).unwrap();
    let err = read_layout_dir(&unpacked).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not an OCI image layout: `oci-layout` is missing"
    );

    // Not a tar at all.
    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "not a tar archive, just words that go on for a while",
    )
    .unwrap();
    assert!(read_layout_tar(&text).is_err());
}
