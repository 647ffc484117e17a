//! `wisp oci`: build Wasm OCI image archives for `ctr images import`, and inspect
//! image layouts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use wisp_oci::{BuildOptions, Reference, Shape};

use crate::options::parse_env;

/// Suffix of the default output file, after the sanitised reference.
const DEFAULT_OUTPUT_SUFFIX: &str = ".oci.tar";

/// Build and inspect Wasm OCI images (image-layout tar archives).
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    wisp oci build app.wasm --name hello:latest\n  \
    ctr images import --all-platforms hello_latest.oci.tar\n  \
    wisp oci inspect hello_latest.oci.tar")]
pub struct OciCommand {
    #[command(subcommand)]
    command: OciSubcommand,
}

#[derive(Debug, Subcommand)]
enum OciSubcommand {
    Build(BuildCommand),
    Inspect(InspectCommand),
}

impl OciCommand {
    pub fn execute(self) -> Result<()> {
        match self.command {
            OciSubcommand::Build(c) => c.execute(),
            OciSubcommand::Inspect(c) => c.execute(),
        }
    }
}

/// Package a Wasm app as an OCI image archive for `ctr images import`.
///
/// The archive is byte-for-byte reproducible: fixed timestamps and owners, and a
/// `created` time from SOURCE_DATE_EPOCH (default: 1970-01-01).
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    wisp oci build app.wasm --name hello:latest\n  \
    wisp oci build app.wasm --name ghcr.io/me/app:v1 --shape artifact -o app.tar\n  \
    wisp oci build app.wasm --name app:v1 --env MODE=prod -- --verbose input.txt\n\n\
    Import (containerd 1.6; the platform is wasi/wasm, or wasip1/wasip2 for artifacts;\n  \
    the shapes with a raw Wasm layer cannot be unpacked there, and the shim reads\n  \
    their layer from containerd's content store):\n  \
    ctr images import --all-platforms hello_latest.oci.tar\n  \
    ctr images import --all-platforms --no-unpack app.tar")]
pub struct BuildCommand {
    /// The app: a core module or a component.
    #[arg(value_name = "APP")]
    app: PathBuf,

    /// The image reference, e.g. `hello:latest` (stored normalised, as
    /// `docker.io/library/hello:latest`).
    #[arg(long, value_name = "REF")]
    name: String,

    /// How to package the app.
    #[arg(long, value_enum, default_value_t = ShapeArg::Image)]
    shape: ShapeArg,

    /// Where to write the archive [default: the reference with `/` and `:` as `_`,
    /// plus `.oci.tar`, in the current directory].
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// An environment variable of the app (every shape but artifact). Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,

    /// Arguments of the app, after its name (every shape but artifact): the
    /// image's `Cmd`.
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// The shapes of `wisp_oci::Shape`, for the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ShapeArg {
    /// An OCI image, platform wasi/wasm, the app at /app.wasm in a tar+gzip layer
    /// (runwasi style; containerd 1.6 unpacks it).
    Image,
    /// A CNCF TAG Wasm OCI artifact: config application/vnd.wasm.config.v0+json,
    /// one application/wasm layer with the raw bytes (containerd 1.6 stores it
    /// but cannot unpack it: import with --no-unpack).
    Artifact,
    /// runwasi's shape: an OCI image config (platform wasi/wasm, entrypoint
    /// /app.wasm, env and args) and one raw
    /// application/vnd.bytecodealliance.wasm.component.layer.v0+wasm layer
    /// (import with --no-unpack on containerd 1.6).
    Runwasi,
    /// As runwasi, with Spin's and wasm-to-oci's layer type
    /// application/vnd.wasm.content.layer.v1+wasm.
    WasmContent,
}

impl From<ShapeArg> for Shape {
    fn from(s: ShapeArg) -> Self {
        match s {
            ShapeArg::Image => Shape::Image,
            ShapeArg::Artifact => Shape::Artifact,
            ShapeArg::Runwasi => Shape::Runwasi,
            ShapeArg::WasmContent => Shape::WasmContent,
        }
    }
}

impl BuildCommand {
    pub fn execute(self) -> Result<()> {
        let reference = Reference::parse(&self.name)?;
        let output = self
            .output
            .clone()
            .unwrap_or_else(|| PathBuf::from(default_output(&self.name)));
        let mut opts = BuildOptions::new(reference, self.shape.into());
        opts.env = self.env;
        opts.args = self.args;
        opts.created = wisp_oci::source_date_epoch()?.unwrap_or(0);
        let wasm = std::fs::read(&self.app)
            .with_context(|| format!("failed to read `{}`", self.app.display()))?;
        let archive = wisp_oci::build_image(&wasm, &opts)
            .with_context(|| format!("failed to build an image from `{}`", self.app.display()))?;
        archive.write_tar(&output)?;
        println!("wrote `{}`", output.display());
        println!("  reference: {}", archive.reference());
        println!("  manifest:  {}", archive.manifest_digest());
        println!("  shape:     {} ({})", archive.shape(), archive.wasm_kind());
        if let Some(p) = &archive.manifest_descriptor().platform {
            println!("  platform:  {p}");
        }
        Ok(())
    }
}

/// `ghcr.io/me/app:v1` -> `ghcr.io_me_app_v1.oci.tar`: only `[A-Za-z0-9._-]` kept.
fn default_output(name: &str) -> String {
    let stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // Never a hidden file or `..`.
    let stem = stem.trim_start_matches('.');
    format!("{stem}{DEFAULT_OUTPUT_SUFFIX}")
}

/// Show what an OCI image archive or layout directory holds.
///
/// Prints each image's name, manifest digest, platform, config and layer media
/// types, the Wasm layers found and the kind (Wasm artifact or image).
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  wisp oci inspect hello_latest.oci.tar")]
pub struct InspectCommand {
    /// An image-layout tar archive, or a directory holding an image layout.
    #[arg(value_name = "FILE")]
    path: PathBuf,
}

impl InspectCommand {
    pub fn execute(self) -> Result<()> {
        let context = || format!("failed to inspect `{}`", self.path.display());
        let layout = read(&self.path).with_context(context)?;
        let images = layout.images().with_context(context)?;
        if images.is_empty() {
            anyhow::bail!(
                "`{}` holds no images: its index.json lists none",
                self.path.display()
            );
        }
        let mut out = String::new();
        for image in &images {
            let kind = image.kind().with_context(context)?;
            let d = &image.descriptor;
            let m = &image.manifest;
            out += &format!("image: {}\n", image.name.as_deref().unwrap_or("(unnamed)"));
            out += &format!("  manifest: {} {}\n", d.media_type, d.digest);
            if let Some(p) = &d.platform {
                out += &format!("  platform: {p}\n");
            }
            out += &format!("  config:   {} {}\n", m.config.media_type, m.config.digest);
            for layer in &m.layers {
                out += &format!(
                    "  layer:    {} {} ({} bytes)\n",
                    layer.media_type, layer.digest, layer.size
                );
            }
            let wasm_layers = wisp_oci::wasm_layers(m);
            if wasm_layers.is_empty() {
                out += "  wasm layers: none\n";
            }
            for layer in wasm_layers {
                out += &format!("  wasm layer: {} {}\n", layer.media_type, layer.digest);
            }
            let wasm = layout.wasm(m).with_context(context)?;
            let wasm_kind = wisp_oci::detect_wasm(&wasm).with_context(context)?;
            out += &format!("  wasm:     {wasm_kind}, {} bytes\n", wasm.len());
            out += &format!("  kind:     {kind}\n");
        }
        print!("{out}");
        Ok(())
    }
}

fn read(path: &Path) -> Result<wisp_oci::Layout, wisp_oci::LayoutError> {
    if path.is_dir() {
        wisp_oci::read_layout_dir(path)
    } else {
        wisp_oci::read_layout_tar(path)
    }
}

#[cfg(test)]
mod tests {
    use super::default_output;

    #[test]
    fn default_output_is_sanitised() {
        assert_eq!(default_output("hello:latest"), "hello_latest.oci.tar");
        assert_eq!(
            default_output("ghcr.io/me/app:v1"),
            "ghcr.io_me_app_v1.oci.tar"
        );
        assert_eq!(default_output("../x"), "_x.oci.tar");
    }
}
