//! The Task service: containerd's calls, answered synchronously;
//! [`crate::lifecycle::daemon`] serves them over ttrpc (the blocking ones on
//! its blocking pool).

use std::sync::Arc;
use std::time::{Duration, Instant};

use containerd_shim::ExitSignal;
use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest,
    PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest,
    StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse, Status,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::monitor::Topic;
use containerd_shim::protos::events::task::{
    TaskDelete, TaskExecAdded, TaskExecStarted, TaskOOM, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::shim::shim::CheckpointTaskRequest;
use containerd_shim::protos::topics::{
    TASK_DELETE_EVENT_TOPIC, TASK_EXEC_ADDED_EVENT_TOPIC, TASK_EXEC_STARTED_EVENT_TOPIC,
    TASK_OOM_EVENT_TOPIC, TASK_PAUSED_EVENT_TOPIC, TASK_RESUMED_EVENT_TOPIC,
    TASK_START_EVENT_TOPIC,
};
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::synchronous::monitor::monitor_subscribe;
use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxResources, Process};

use crate::backend::api::{Factory, ProcessTable};
use crate::backend::proc::Proc;
use crate::bundle::rootfs::unmount;
use crate::bundle::state::STATE_FILE;
use crate::error::{ErrorKind, TaskError, TaskResult};
use crate::os::oom::OomWatcher;
use crate::os::stdio::StdioPaths;
use crate::os::threads::lock;
use crate::task::create::Kinds;
use crate::task::events::{Events, timestamp};
use crate::task::registry::{Registry, pid_of};

/// The Task service.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Registry>,
}

impl Service {
    /// The service of a daemon: containers classified from their bundles,
    /// exits learnt from the crate's reaper.
    pub fn new(
        events: Events,
        namespace: &str,
        address: &str,
        exit: Arc<ExitSignal>,
        node: bool,
    ) -> Self {
        let kinds = Kinds::new(namespace, address, node);
        let service = Self::with_factory(events, namespace, exit, Box::new(kinds));
        // Subscribed before any process exists, so no exit is missed.
        let sub = monitor_subscribe(Topic::All).expect("monitor subscription");
        let weak = Arc::downgrade(&service.inner);
        std::thread::Builder::new()
            .name("wisp-exits".into())
            .spawn(move || {
                for ev in sub.rx.iter() {
                    let Some(inner) = weak.upgrade() else { break };
                    if let Some(pid) = pid_of(&ev.subject) {
                        inner.on_exit(pid, ev.exit_code);
                    }
                }
            })
            .expect("failed to start the exit thread");
        service
    }

    /// The service with backends from `factory` and no reaper of its own:
    /// the caller reports exits through [`Self::reaped`].
    pub fn with_factory(
        events: Events,
        namespace: &str,
        exit: Arc<ExitSignal>,
        factory: Box<dyn Factory>,
    ) -> Self {
        let oom_events = events.clone();
        let oom = OomWatcher::start(move |container| {
            oom_events.send(
                TASK_OOM_EVENT_TOPIC,
                TaskOOM {
                    container_id: container.into(),
                    ..Default::default()
                },
            );
        })
        .inspect_err(|e| tracing::error!(error = %e, "OOM kills will not be reported"))
        .ok();
        let inner = Arc::new(Registry {
            namespace: namespace.into(),
            containers: Default::default(),
            pids: Default::default(),
            events,
            exit,
            factory,
            oom,
        });
        Self { inner }
    }

    /// Reports that `pid` exited with `code` (what the reaper thread does).
    pub fn reaped(&self, pid: u32, code: i32) {
        self.inner.on_exit(pid, code);
    }

    pub fn create(&self, req: CreateTaskRequest) -> TaskResult<CreateTaskResponse> {
        let inner = &self.inner;
        if lock(&inner.containers).contains_key(&req.id) {
            return Err(TaskError::already_exists(format!(
                "container {} already exists",
                req.id
            )));
        }
        let started = Instant::now();
        let pid = inner.create(&req)?;
        tracing::debug!(id = req.id, pid, took = ?started.elapsed(), "created");
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    pub fn start(&self, req: StartRequest) -> TaskResult<StartResponse> {
        let inner = &self.inner;
        let (c, p) = inner.process(&req.id, &req.exec_id)?;
        {
            let mut s = p.lock();
            if s.status != Status::CREATED {
                return Err(TaskError::precondition(format!(
                    "process {} is {:?}, not created",
                    p.event_id(),
                    s.status
                )));
            }
            s.starting = true;
        }
        let result = if req.exec_id.is_empty() {
            let weak = Arc::downgrade(inner);
            let proc = p.clone();
            c.backend.start(
                &p,
                Box::new(move |code| {
                    if let Some(inner) = weak.upgrade() {
                        let pid = proc.lock().pid;
                        inner.exited(&proc, pid, code);
                    }
                }),
            )
        } else {
            c.backend.start_exec(&p, &**inner)
        }
        .map(|()| self.started(&p, &req));
        // An exit that came while starting is published now, after TaskStart.
        let deferred = {
            let mut s = p.lock();
            s.starting = false;
            s.deferred_exit.take()
        };
        if let Some((pid, code)) = deferred {
            // TaskStart is queued, so this TaskExit follows it on the one
            // event thread: the order holds by construction. (No shim can
            // order the exit after CRI's StartedAt, which containerd stamps
            // with its own clock once Start has returned: runc's `/bin/true`
            // shows finishing before it started in 26 of 100 runs.)
            inner.exited(&p, pid, code);
        }
        result
    }

    /// Marks a started process running and publishes its start.
    fn started(&self, p: &Proc, req: &StartRequest) -> StartResponse {
        let pid = {
            let mut s = p.lock();
            if s.exit.is_none() {
                s.status = Status::RUNNING;
            }
            s.pid
        };
        let events = &self.inner.events;
        if req.exec_id.is_empty() {
            events.send(
                TASK_START_EVENT_TOPIC,
                TaskStart {
                    container_id: req.id.clone(),
                    pid,
                    ..Default::default()
                },
            );
        } else {
            events.send(
                TASK_EXEC_STARTED_EVENT_TOPIC,
                TaskExecStarted {
                    container_id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    pid,
                    ..Default::default()
                },
            );
        }
        StartResponse {
            pid,
            ..Default::default()
        }
    }

    pub fn state(&self, req: StateRequest) -> TaskResult<StateResponse> {
        let (c, p) = self.inner.process(&req.id, &req.exec_id)?;
        let s = p.lock();
        Ok(StateResponse {
            id: p.event_id().into(),
            bundle: c.bundle.display().to_string(),
            pid: s.pid,
            status: s.status.into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: s.exit.map_or(0, |e| e.code),
            exited_at: s.exit.map(|e| timestamp(e.at)).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    pub async fn wait(&self, req: WaitRequest) -> TaskResult<WaitResponse> {
        let (_, p) = self.inner.process(&req.id, &req.exec_id)?;
        let exit = p.exited().await;
        Ok(WaitResponse {
            exit_status: exit.code,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    pub fn kill(&self, req: KillRequest) -> TaskResult<Empty> {
        let (c, p) = self.inner.process(&req.id, &req.exec_id)?;
        let sig = Signal::try_from(req.signal as i32)
            .map_err(|_| TaskError::invalid(format!("invalid signal {}", req.signal)))?;
        if p.lock().exit.is_some() {
            return Err(TaskError::not_found("process already finished"));
        }
        if req.exec_id.is_empty() {
            if c.backend.signal_init(&p, sig, req.all)? {
                for e in lock(&c.execs).values() {
                    e.signal(sig);
                }
            }
        } else {
            p.signal(sig);
        }
        // A frozen process cannot act on a signal: thaw it so kill works.
        if p.lock().status == Status::PAUSED && c.backend.thaw() {
            p.lock().status = Status::RUNNING;
        }
        Ok(Empty::new())
    }

    pub fn delete(&self, req: DeleteRequest) -> TaskResult<DeleteResponse> {
        let inner = &self.inner;
        let (c, p) = inner.process(&req.id, &req.exec_id)?;
        let status = p.lock().status;
        if matches!(status, Status::RUNNING | Status::PAUSED) {
            return Err(TaskError::precondition(format!(
                "cannot delete {} while it is running; kill it first",
                p.event_id()
            )));
        }
        if status == Status::CREATED && req.exec_id.is_empty() && c.backend.hosted() {
            // Nothing runs yet: it stops as a killed process would.
            let pid = p.lock().pid;
            inner.exited(&p, pid, 128 + libc::SIGKILL);
        } else if status == Status::CREATED {
            // Never started: containerd deletes it after a failed start.
            p.signal(Signal::SIGKILL);
            if p.wait_timeout(Duration::from_secs(10)).is_none() {
                return Err(TaskError::new(
                    ErrorKind::DeadlineExceeded,
                    "the process did not exit after SIGKILL",
                ));
            }
        }
        let exit = p.lock().exit.expect("stopped");
        let pid = p.lock().pid;
        inner.forget(pid);
        if !req.exec_id.is_empty() {
            lock(&c.execs).remove(&req.exec_id);
        } else {
            for e in lock(&c.execs).values() {
                e.signal(Signal::SIGKILL);
                let _ = e.wait_timeout(Duration::from_secs(5));
            }
            if let Some(oom) = &inner.oom {
                oom.forget(&c.id);
            }
            let started = Instant::now();
            let cleanup = c.backend.delete();
            tracing::debug!(id = c.id, took = ?started.elapsed(), "released the container's host resources");
            if let Some(m) = &c.mounted {
                unmount(m);
            }
            let _ = std::fs::remove_file(c.bundle.join(STATE_FILE));
            lock(&inner.containers).remove(&c.id);
            cleanup?;
            inner.events.send(
                TASK_DELETE_EVENT_TOPIC,
                TaskDelete {
                    container_id: c.id.clone(),
                    pid,
                    exit_status: exit.code,
                    exited_at: MessageField::some(timestamp(exit.at)),
                    id: c.id.clone(),
                    ..Default::default()
                },
            );
        }
        Ok(DeleteResponse {
            pid,
            exit_status: exit.code,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    pub fn exec(&self, req: ExecProcessRequest) -> TaskResult<Empty> {
        let inner = &self.inner;
        let c = inner.container(&req.id)?;
        if lock(&c.execs).contains_key(&req.exec_id) {
            return Err(TaskError::already_exists(format!(
                "exec {} already exists",
                req.exec_id
            )));
        }
        let init_pid = {
            let s = c.init.lock();
            if s.exit.is_some() {
                return Err(TaskError::precondition("the container is not running"));
            }
            s.pid
        };
        let spec_json = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        let process: Process = serde_json::from_slice(&spec_json)
            .map_err(|e| TaskError::invalid(format!("invalid exec process spec: {e}")))?;
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let proc = Proc::new(&req.id, &req.exec_id, paths);
        c.backend
            .exec(&proc, &process, spec_json, init_pid, &**inner)?;
        lock(&c.execs).insert(req.exec_id.clone(), proc);
        inner.events.send(
            TASK_EXEC_ADDED_EVENT_TOPIC,
            TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            },
        );
        Ok(Empty::new())
    }

    pub fn pids(&self, req: PidsRequest) -> TaskResult<PidsResponse> {
        let c = self.inner.container(&req.id)?;
        let init_pid = c.init.lock().pid;
        Ok(PidsResponse {
            processes: c
                .backend
                .pids(init_pid)
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    pub fn stats(&self, req: StatsRequest) -> TaskResult<StatsResponse> {
        let c = self.inner.container(&req.id)?;
        let pid = {
            let s = c.init.lock();
            if s.exit.is_some() {
                return Err(TaskError::precondition("the task is not running"));
            }
            s.pid
        };
        let metrics = c
            .backend
            .stats(pid)
            .map_err(|e| TaskError::internal_io("failed to read cgroup metrics", e))?;
        let mut any = Any::new();
        any.type_url = "io.containerd.cgroups.v1.Metrics".into();
        any.value = metrics
            .write_to_bytes()
            .map_err(|e| TaskError::internal(e.to_string()))?;
        Ok(StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    pub fn update(&self, req: UpdateTaskRequest) -> TaskResult<Empty> {
        let c = self.inner.container(&req.id)?;
        let json = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        let resources: LinuxResources = serde_json::from_slice(&json)
            .map_err(|e| TaskError::invalid(format!("invalid resources: {e}")))?;
        c.backend.update(&resources, &json)?;
        Ok(Empty::new())
    }

    pub fn pause(&self, req: PauseRequest) -> TaskResult<Empty> {
        let c = self.inner.container(&req.id)?;
        if c.init.lock().status != Status::RUNNING {
            return Err(TaskError::precondition("the task is not running"));
        }
        c.backend.pause()?;
        c.init.lock().status = Status::PAUSED;
        self.inner.events.send(
            TASK_PAUSED_EVENT_TOPIC,
            TaskPaused {
                container_id: req.id.clone(),
                ..Default::default()
            },
        );
        Ok(Empty::new())
    }

    pub fn resume(&self, req: ResumeRequest) -> TaskResult<Empty> {
        let c = self.inner.container(&req.id)?;
        if c.init.lock().status != Status::PAUSED {
            return Err(TaskError::precondition("the task is not paused"));
        }
        c.backend.resume()?;
        c.init.lock().status = Status::RUNNING;
        self.inner.events.send(
            TASK_RESUMED_EVENT_TOPIC,
            TaskResumed {
                container_id: req.id.clone(),
                ..Default::default()
            },
        );
        Ok(Empty::new())
    }

    pub fn close_io(&self, req: CloseIORequest) -> TaskResult<Empty> {
        let (_, p) = self.inner.process(&req.id, &req.exec_id)?;
        if req.stdin {
            // Dropping the feeder lets it reach EOF and close the pipe.
            p.lock().stdin.take();
        }
        Ok(Empty::new())
    }

    pub fn resize_pty(&self, req: ResizePtyRequest) -> TaskResult<Empty> {
        let (_, p) = self.inner.process(&req.id, &req.exec_id)?;
        let console = p.lock().console.clone();
        let Some(console) = console else {
            return Err(TaskError::precondition(format!(
                "process {} has no terminal",
                p.event_id()
            )));
        };
        console.resize(req.width, req.height).map_err(|e| {
            TaskError::internal(format!(
                "failed to resize the terminal of {}: {e}",
                p.event_id()
            ))
        })?;
        Ok(Empty::new())
    }

    pub fn checkpoint(&self, _req: CheckpointTaskRequest) -> TaskResult<Empty> {
        Err(TaskError::unimplemented(
            "checkpoint is not implemented by wisp",
        ))
    }

    pub fn connect(&self, req: ConnectRequest) -> TaskResult<ConnectResponse> {
        let c = self.inner.container(&req.id)?;
        let task_pid = c.init.lock().pid;
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    pub fn shutdown(&self, _req: ShutdownRequest) -> TaskResult<Empty> {
        // One shim serves every container of a pod: it exits with the last.
        if lock(&self.inner.containers).is_empty() {
            self.inner.exit.signal();
        }
        Ok(Empty::new())
    }
}
