//! Create: the bundle's spec and rootfs, the kind of container it is, and
//! the backend that runs it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use containerd_shim::api::CreateTaskRequest;
use containerd_shim::protos::events::task::{TaskCreate, TaskIO};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics::TASK_CREATE_EVENT_TOPIC;
use oci_spec::runtime::Spec;

use crate::backend::api::{CreateCtx, Created, Factory, no_wasm_terminal};
use crate::backend::hosted::Hosted;
use crate::backend::linux::Linux;
use crate::backend::node::NodeHost;
use crate::backend::pod::PodSandbox;
use crate::backend::proc::Proc;
use crate::backend::sandbox;
use crate::backend::wasm::WasmProcess;
use crate::bundle::image::ImageSource;
use crate::bundle::plan::{self, Entrypoint, HostSettings, PlanError};
use crate::bundle::rootfs::{mount_rootfs, unmount};
use crate::bundle::state::STATE_FILE;
use crate::error::{TaskError, TaskResult};
use crate::os::stdio::StdioPaths;
use crate::os::threads::lock;
use crate::task::registry::{Container, Registry};

/// The node's compiled-code cache (and, under `blobs/`, the Wasm layers read
/// from containerd's content store) when `WISP_CACHE_DIR` is unset.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/wisp/cache";

/// The host settings of the shim: the node's code cache and CPU count.
pub fn host_settings() -> HostSettings {
    HostSettings {
        cache_dir: Some(
            std::env::var_os("WISP_CACHE_DIR")
                .filter(|d| !d.is_empty())
                .map_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR), PathBuf::from),
        ),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// The real [`Factory`]: classifies the bundle and makes the backend of its
/// kind.
pub struct Kinds {
    host: HostSettings,
    images: ImageSource,
    /// Node mode's engine for hosted apps.
    node: Option<NodeHost>,
}

impl Kinds {
    /// `address` is containerd's gRPC address (its content store holds the
    /// Wasm layers of artifact images).
    pub fn new(namespace: &str, address: &str, node: bool) -> Self {
        let host = host_settings();
        let images = ImageSource {
            address: address.into(),
            namespace: namespace.into(),
            blobs: host
                .cache_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR))
                .join("blobs"),
        };
        Self {
            host,
            images,
            node: node.then(NodeHost::default),
        }
    }

    /// What the bundle runs; the module name argv[0] gets when the spec has
    /// no args (an artifact).
    fn classify(&self, ctx: &CreateCtx<'_>) -> TaskResult<(Entrypoint, Option<String>)> {
        let (id, spec) = (ctx.id, ctx.spec);
        let native_sandbox = plan::is_sandbox(spec)
            && match sandbox::unsupported(spec) {
                None => true,
                Some(why) => {
                    tracing::info!(
                        id,
                        why,
                        "the spec asks for what runc applies: the pod sandbox goes to runc"
                    );
                    false
                }
            };
        let classified = if native_sandbox {
            Ok(Entrypoint::Sandbox)
        } else {
            plan::classify(spec, ctx.rootfs)
        };
        match classified {
            Ok(entry) => Ok((entry, None)),
            // Nothing to run in the rootfs: the Wasm may be a raw layer of the
            // image, which containerd stored but did not unpack.
            Err(e @ (PlanError::NotFound(_) | PlanError::NoEntrypoint)) => {
                let program = spec
                    .process()
                    .as_ref()
                    .and_then(|p| p.args().as_ref())
                    .and_then(|a| a.first())
                    .map(String::as_str);
                match self.images.module_of(id, program) {
                    Ok(Some(m)) => {
                        tracing::info!(id, image = %m.image, layer = %m.digest, media_type = %m.media_type, "Wasm from the image's layer");
                        Ok((Entrypoint::Wasm(m.path), m.title))
                    }
                    Ok(None) => Err(TaskError::invalid_chain(&e)),
                    Err(image_err) => Err(TaskError::invalid(format!(
                        "{}; {}",
                        wisp_runtime::error_chain(&e),
                        wisp_runtime::error_chain(&image_err)
                    ))),
                }
            }
            Err(e) => Err(TaskError::invalid_chain(&e)),
        }
    }
}

impl Factory for Kinds {
    fn create(&self, ctx: &CreateCtx<'_>) -> TaskResult<Created> {
        let (entry, module_name) = self.classify(ctx)?;
        match entry {
            Entrypoint::Wasm(_) if ctx.paths.terminal => Err(no_wasm_terminal("containers")),
            Entrypoint::Wasm(module) => {
                let mut plan = plan::wasm_plan(ctx.id, ctx.spec, ctx.rootfs, module, &self.host)
                    .map_err(|e| TaskError::invalid_chain(&e))?;
                if plan.args.is_empty() {
                    // An artifact without a process: argv[0] is the module's name.
                    plan.args = vec![module_name.unwrap_or_else(|| "app.wasm".into())];
                }
                let cgroup = ctx.create_cgroup()?;
                let (plan, cgroup) = match &self.node {
                    Some(node) => match Hosted::create(ctx, node, plan, cgroup)? {
                        Ok(created) => return Ok(created),
                        Err(back) => back,
                    },
                    None => (plan, cgroup),
                };
                WasmProcess::create(ctx, plan, cgroup)
            }
            Entrypoint::Linux => Linux::create(ctx),
            Entrypoint::Sandbox => PodSandbox::create(ctx),
        }
    }
}

impl Registry {
    /// Creates the container `req` names; returns its pid.
    pub fn create(&self, req: &CreateTaskRequest) -> TaskResult<u32> {
        let bundle = PathBuf::from(&req.bundle);
        let spec = Spec::load(bundle.join("config.json")).map_err(|e| {
            TaskError::invalid(format!("invalid OCI spec {}/config.json: {e}", req.bundle))
        })?;
        let mut mounted = None;
        let rootfs = if req.rootfs.is_empty() {
            let root = spec
                .root()
                .as_ref()
                .map_or_else(|| PathBuf::from("rootfs"), |r| r.path().clone());
            bundle.join(root)
        } else {
            let target = bundle.join("rootfs");
            std::fs::create_dir_all(&target)
                .map_err(|e| TaskError::internal_io("failed to create rootfs dir", e))?;
            for m in &req.rootfs {
                mount_rootfs(m, &target).map_err(|e| {
                    unmount(&target);
                    TaskError::internal_io("failed to mount the rootfs", e)
                })?;
                mounted = Some(target.clone());
            }
            target
        };
        let result = self.create_in(req, &bundle, &spec, &rootfs, mounted.clone());
        if result.is_err()
            && let Some(m) = &mounted
        {
            unmount(m);
        }
        result
    }

    fn create_in(
        &self,
        req: &CreateTaskRequest,
        bundle: &Path,
        spec: &Spec,
        rootfs: &Path,
        mounted: Option<PathBuf>,
    ) -> TaskResult<u32> {
        let id = req.id.as_str();
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let init = Proc::new(id, "", paths.clone());
        let ctx = CreateCtx {
            id,
            bundle,
            spec,
            rootfs,
            paths: &paths,
            init: &init,
            register: self,
            namespace: &self.namespace,
        };
        let Created {
            backend,
            mut record,
            feeder,
            oom_dir,
        } = self.factory.create(&ctx)?;
        init.lock().stdin = feeder;
        record.mounted = mounted.clone();
        if let Ok(json) = serde_json::to_vec(&record) {
            let _ = std::fs::write(bundle.join(STATE_FILE), json);
        }
        let pid = init.lock().pid.max(record.pid);
        if let (Some(oom), Some(dir)) = (&self.oom, oom_dir)
            && let Err(e) = oom.watch(id, &dir)
        {
            tracing::warn!(id, error = %e, dir = %dir.display(), "OOM kills of this container will not be reported");
        }
        let container = Arc::new(Container {
            id: id.into(),
            bundle: bundle.into(),
            backend,
            init,
            execs: Mutex::default(),
            mounted,
        });
        lock(&self.containers).insert(id.into(), container);
        self.events.send(
            TASK_CREATE_EVENT_TOPIC,
            TaskCreate {
                container_id: id.into(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                }),
                pid,
                ..Default::default()
            },
        );
        Ok(pid)
    }
}
