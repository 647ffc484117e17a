//! `wisp oci`: build Wasm OCI image archives for `ctr images import`, inspect
//! image layouts, and push images to / pull them from OCI registries.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use wisp_oci::{BuildOptions, Reference, Shape};

use crate::options::parse_env;

/// Suffix of the default output file, after the sanitised reference.
const DEFAULT_OUTPUT_SUFFIX: &str = ".oci.tar";

/// Build, inspect, push and pull Wasm OCI images.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    wisp oci build app.wasm --name hello:latest\n  \
    ctr images import --all-platforms hello_latest.oci.tar\n  \
    wisp oci inspect hello_latest.oci.tar\n  \
    wisp oci push app.wasm ghcr.io/me/hello:v1\n  \
    wisp oci pull ghcr.io/me/hello:v1")]
pub struct OciCommand {
    #[command(subcommand)]
    command: OciSubcommand,
}

#[derive(Debug, Subcommand)]
enum OciSubcommand {
    Build(BuildCommand),
    Inspect(InspectCommand),
    Push(PushCommand),
    Pull(PullCommand),
}

impl OciCommand {
    pub fn execute(self) -> Result<()> {
        match self.command {
            OciSubcommand::Build(c) => c.execute(),
            OciSubcommand::Inspect(c) => c.execute(),
            OciSubcommand::Push(c) => c.execute(),
            OciSubcommand::Pull(c) => c.execute(),
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
        let wasm = std::fs::read(&self.app)
            .with_context(|| format!("failed to read `{}`", self.app.display()))?;
        let archive = build(&self.app, &wasm, reference, self.shape, self.env, self.args)?;
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

/// Packages `wasm` (read from `app`) as an image of `shape`.
fn build(
    app: &Path,
    wasm: &[u8],
    reference: Reference,
    shape: ShapeArg,
    env: Vec<(String, String)>,
    args: Vec<String>,
) -> Result<wisp_oci::ImageArchive> {
    let mut opts = BuildOptions::new(reference, shape.into());
    opts.env = env;
    opts.args = args;
    opts.created = wisp_oci::source_date_epoch()?.unwrap_or(0);
    wisp_oci::build_image(wasm, &opts)
        .with_context(|| format!("failed to build an image from `{}`", app.display()))
}

/// How to reach a registry: shared by push and pull.
#[derive(Debug, Args)]
struct RegistryArgs {
    /// Speak plain HTTP to the registry instead of HTTPS (a registry on
    /// loopback or in a lab).
    #[arg(long)]
    plain_http: bool,

    /// User name for the registry's basic or token auth [default: the
    /// credentials `docker login` saved in $DOCKER_CONFIG/config.json or
    /// ~/.docker/config.json, else anonymous].
    #[arg(long, env = "WISP_REGISTRY_USERNAME", value_name = "USER")]
    username: Option<String>,

    /// Read the password (or token) from standard input, up to the first line
    /// end.
    #[arg(long, requires = "username", conflicts_with = "password")]
    password_stdin: bool,

    /// The password (or token); prefer --password-stdin or the environment,
    /// which other users on the machine cannot read.
    #[arg(
        long,
        env = "WISP_REGISTRY_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    password: Option<String>,
}

impl RegistryArgs {
    fn options(&self, reference: &Reference) -> Result<wisp_oci::RegistryOptions> {
        let credentials = match (&self.username, self.password_stdin, &self.password) {
            (Some(user), true, _) => {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("failed to read the password from standard input")?;
                let password = line.trim_end_matches(['\r', '\n']).to_owned();
                anyhow::ensure!(
                    !password.is_empty(),
                    "--password-stdin read an empty password"
                );
                Some((user.clone(), password))
            }
            (Some(user), false, Some(password)) => Some((user.clone(), password.clone())),
            (Some(user), false, None) => anyhow::bail!(
                "--username `{user}` needs a password: --password-stdin, or WISP_REGISTRY_PASSWORD"
            ),
            (None, _, Some(_)) => anyhow::bail!("a password needs --username"),
            (None, _, None) => match docker_config() {
                Some(path) => wisp_oci::docker_credentials(&path, reference.domain())?,
                None => None,
            },
        };
        Ok(wisp_oci::RegistryOptions {
            plain_http: self.plain_http,
            credentials,
        })
    }
}

impl RegistryArgs {
    /// A registry error, with what to do when it is HTTPS meeting plain HTTP
    /// (rustls's only words for that are "corrupt message").
    fn explain<T>(
        &self,
        result: Result<T, wisp_oci::RegistryError>,
        reference: &Reference,
    ) -> Result<T> {
        result.map_err(|e| {
            let e = anyhow::Error::from(e);
            if !self.plain_http && format!("{e:#}").contains("InvalidContentType") {
                e.context(format!(
                    "`{}` did not answer in TLS: if it serves plain HTTP, pass --plain-http",
                    reference.domain()
                ))
            } else {
                e
            }
        })
    }
}

/// Where `docker login` keeps credentials.
fn docker_config() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// A runtime for one registry call.
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    Ok(rt.block_on(f))
}

/// Push a Wasm app, or an image archive, to an OCI registry.
///
/// SOURCE is a `.wasm` (packaged as `wisp oci build` would, in the --shape
/// given), or an image-layout archive or directory holding one image (pushed
/// as it is, digests unchanged).
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    wisp oci push app.wasm ghcr.io/me/app:v1\n  \
    wisp oci push app.wasm localhost:5000/app:v1 --plain-http --shape artifact\n  \
    wisp oci push hello_latest.oci.tar registry.example/hello:v2\n  \
    echo \"$TOKEN\" | wisp oci push app.wasm ghcr.io/me/app:v1 --username me --password-stdin")]
pub struct PushCommand {
    /// A `.wasm` app, or an image-layout tar archive or directory.
    #[arg(value_name = "SOURCE")]
    source: PathBuf,

    /// Where to push: `registry/repository:tag`.
    #[arg(value_name = "REF")]
    reference: String,

    /// How to package a `.wasm` SOURCE [default: image].
    #[arg(long, value_enum)]
    shape: Option<ShapeArg>,

    /// An environment variable of a `.wasm` SOURCE's app (every shape but
    /// artifact). Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,

    #[command(flatten)]
    registry: RegistryArgs,

    /// Arguments of a `.wasm` SOURCE's app, after its name.
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

impl PushCommand {
    pub fn execute(self) -> Result<()> {
        let reference = Reference::parse(&self.reference)?;
        let opts = self.registry.options(&reference)?;
        let image = self.image(&reference)?;
        let registry = wisp_oci::Registry::new(&opts);
        let pushed = block_on(registry.push(&image, &reference))?;
        let pushed = self.registry.explain(pushed, &reference)?;
        println!("pushed {}@{}", reference, pushed.digest);
        println!(
            "  blobs: {} uploaded, {} already there",
            pushed.uploaded, pushed.existing
        );
        Ok(())
    }

    /// The image SOURCE holds, or packages.
    fn image(&self, reference: &Reference) -> Result<wisp_oci::Image> {
        let path = &self.source;
        let context = || format!("failed to read `{}`", path.display());
        if path.is_dir() {
            self.no_build_options()?;
            let layout = wisp_oci::read_layout_dir(path).with_context(context)?;
            return wisp_oci::Image::from_layout(&layout).with_context(context);
        }
        let mut magic = [0u8; 4];
        let n = {
            use std::io::Read;
            let mut f = std::fs::File::open(path).with_context(context)?;
            f.read(&mut magic).with_context(context)?
        };
        if n == 4 && magic == *b"\0asm" {
            let wasm = std::fs::read(path).with_context(context)?;
            let archive = build(
                path,
                &wasm,
                reference.clone(),
                self.shape.unwrap_or(ShapeArg::Image),
                self.env.clone(),
                self.args.clone(),
            )?;
            return Ok(wisp_oci::Image::from_archive(&archive));
        }
        self.no_build_options()?;
        let layout = wisp_oci::read_layout_tar(path).with_context(|| {
            format!(
                "`{}` is neither Wasm nor an image-layout archive",
                path.display()
            )
        })?;
        wisp_oci::Image::from_layout(&layout).with_context(context)
    }

    /// --shape, --env and arguments package a `.wasm`; an image has its own.
    fn no_build_options(&self) -> Result<()> {
        anyhow::ensure!(
            self.shape.is_none() && self.env.is_empty() && self.args.is_empty(),
            "--shape, --env and app arguments apply to a `.wasm` SOURCE; `{}` is an image",
            self.source.display()
        );
        Ok(())
    }
}

/// Pull an image from an OCI registry into an image-layout archive.
///
/// The archive is what `wisp oci build` writes: `ctr images import` and `wisp
/// oci inspect` read it. Every blob is checked against its digest. When the
/// tag names a multi-platform index, the Wasm manifest is taken (or the one
/// for --platform).
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    wisp oci pull ghcr.io/me/app:v1\n  \
    wisp oci pull localhost:5000/app:v1 --plain-http -o app.tar\n  \
    ctr images import --all-platforms app.tar")]
pub struct PullCommand {
    /// What to pull: `registry/repository:tag`.
    #[arg(value_name = "REF")]
    reference: String,

    /// Where to write the archive [default: the reference with `/` and `:` as `_`,
    /// plus `.oci.tar`, in the current directory].
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// The platform to take from a multi-platform index, `os/arch[/variant]`
    /// (e.g. `wasip2/wasm`).
    #[arg(long, value_name = "OS/ARCH", value_parser = parse_platform)]
    platform: Option<wisp_oci::spec::Platform>,

    #[command(flatten)]
    registry: RegistryArgs,
}

impl PullCommand {
    pub fn execute(self) -> Result<()> {
        let reference = Reference::parse(&self.reference)?;
        let opts = self.registry.options(&reference)?;
        let output = self
            .output
            .clone()
            .unwrap_or_else(|| PathBuf::from(default_output(&self.reference)));
        let registry = wisp_oci::Registry::new(&opts);
        let image = block_on(registry.pull(&reference, self.platform.as_ref()))?;
        let image = self.registry.explain(image, &reference)?;
        image.write_tar(&reference, &output)?;
        println!("wrote `{}`", output.display());
        println!("  reference: {reference}");
        println!("  manifest:  {}", image.descriptor.digest);
        if let Some(p) = &image.descriptor.platform {
            println!("  platform:  {p}");
        }
        match wisp_oci::detect_kind(&image.manifest) {
            Ok(kind) => println!("  kind:      {kind}"),
            Err(e) => println!("  kind:      not a Wasm image ({e})"),
        }
        Ok(())
    }
}

/// `os/arch[/variant]`.
fn parse_platform(s: &str) -> Result<wisp_oci::spec::Platform, String> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => {
            let mut p = wisp_oci::spec::Platform::new(os, arch);
            p.variant = parts
                .get(2)
                .filter(|v| !v.is_empty())
                .map(|v| (*v).to_owned());
            Ok(p)
        }
        _ => Err(format!("`{s}` is not `os/arch[/variant]`")),
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
