//! The Task verbs' unit tier: a stub backend and a channel of events, so the
//! verbs' semantics are checked without root, containerd or a real process
//! (as containerd/runwasi tests its `Local` service).

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, OnceLock};

use containerd_shim::ExitSignal;
use containerd_shim::api::{
    CreateTaskRequest, DeleteRequest, ExecProcessRequest, KillRequest, StartRequest, StateRequest,
    Status,
};
use containerd_shim::protos::cgroups::metrics::Metrics;
use containerd_shim::protos::events::task::TaskExit;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use oci_spec::runtime::{LinuxResources, Process};

use crate::backend::api::{Backend, CreateCtx, Created, Factory, OnExit, Register};
use crate::backend::proc::Proc;
use crate::bundle::state::StateRecord;
use crate::error::{ErrorKind, TaskError, TaskResult};
use crate::task::events::{Event, Events};
use crate::task::service::Service;

/// Pids above any kernel's `pid_max` (2^22): a signal to one reaches nobody.
static NEXT_PID: AtomicU32 = AtomicU32::new(5_000_000);

/// What the stub does at Start: report an exit at once (a process that dies
/// while Start runs), or nothing.
#[derive(Clone, Copy, PartialEq)]
enum OnStart {
    Run,
    ExitAt(i32),
}

struct Stub {
    service: Arc<OnceLock<Service>>,
    on_start: OnStart,
    fail_create: bool,
    /// The pid of every container made (else a fresh one each).
    pid: Option<u32>,
    deleted: Arc<Mutex<Vec<String>>>,
}

struct StubBackend {
    id: String,
    service: Arc<OnceLock<Service>>,
    on_start: OnStart,
    deleted: Arc<Mutex<Vec<String>>>,
}

impl Factory for Stub {
    fn create(&self, ctx: &CreateCtx<'_>) -> TaskResult<Created> {
        if self.fail_create {
            return Err(TaskError::invalid(format!("{}: no such module", ctx.id)));
        }
        let pid = self
            .pid
            .unwrap_or_else(|| NEXT_PID.fetch_add(1, Ordering::Relaxed));
        ctx.register.register(pid, ctx.init);
        Ok(Created {
            backend: Box::new(StubBackend {
                id: ctx.id.into(),
                service: self.service.clone(),
                on_start: self.on_start,
                deleted: self.deleted.clone(),
            }),
            record: StateRecord {
                linux: false,
                pid,
                cgroup: None,
                mounted: None,
            },
            feeder: None,
            oom_dir: None,
        })
    }
}

impl StubBackend {
    fn started(&self, proc: &Proc) {
        if let OnStart::ExitAt(code) = self.on_start {
            let pid = proc.lock().pid;
            self.service.get().unwrap().reaped(pid, code);
        }
    }
}

impl Backend for StubBackend {
    fn start(&self, init: &Arc<Proc>, _on_exit: OnExit) -> TaskResult<()> {
        self.started(init);
        Ok(())
    }

    fn exec(
        &self,
        proc: &Arc<Proc>,
        _process: &Process,
        _spec_json: Vec<u8>,
        _init_pid: u32,
        register: Register<'_>,
    ) -> TaskResult<()> {
        register.register(NEXT_PID.fetch_add(1, Ordering::Relaxed), proc);
        Ok(())
    }

    fn start_exec(&self, proc: &Arc<Proc>, _register: Register<'_>) -> TaskResult<()> {
        self.started(proc);
        Ok(())
    }

    fn pids(&self, init_pid: u32) -> Vec<u32> {
        vec![init_pid]
    }

    fn stats(&self, _init_pid: u32) -> io::Result<Metrics> {
        Ok(Metrics::new())
    }

    fn update(&self, _resources: &LinuxResources, _json: &[u8]) -> TaskResult<()> {
        Ok(())
    }

    fn pause(&self) -> TaskResult<()> {
        Ok(())
    }

    fn resume(&self) -> TaskResult<()> {
        Ok(())
    }

    fn delete(&self) -> TaskResult<()> {
        self.deleted.lock().unwrap().push(self.id.clone());
        Ok(())
    }
}

struct Harness {
    service: Service,
    events: Receiver<Event>,
    deleted: Arc<Mutex<Vec<String>>>,
    bundle: tempfile::TempDir,
}

fn harness(on_start: OnStart, fail_create: bool) -> Harness {
    harness_with_pid(on_start, fail_create, None)
}

fn harness_with_pid(on_start: OnStart, fail_create: bool, pid: Option<u32>) -> Harness {
    let (events, rx) = Events::captured();
    let cell = Arc::new(OnceLock::new());
    let deleted = Arc::new(Mutex::new(Vec::new()));
    let stub = Stub {
        service: cell.clone(),
        on_start,
        fail_create,
        pid,
        deleted: deleted.clone(),
    };
    let service = Service::with_factory(
        events,
        "test",
        Arc::new(ExitSignal::default()),
        Box::new(stub),
    );
    let _ = cell.set(service.clone());
    let bundle = tempfile::tempdir().unwrap();
    oci_spec::runtime::Spec::default()
        .save(bundle.path().join("config.json"))
        .unwrap();
    Harness {
        service,
        events: rx,
        deleted,
        bundle,
    }
}

impl Harness {
    fn create(&self, id: &str) -> TaskResult<u32> {
        let req = CreateTaskRequest {
            id: id.into(),
            bundle: self.bundle.path().display().to_string(),
            ..Default::default()
        };
        self.service.create(req).map(|r| r.pid)
    }

    fn start(&self, id: &str, exec_id: &str) -> TaskResult<u32> {
        let req = StartRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.service.start(req).map(|r| r.pid)
    }

    fn exec(&self, id: &str, exec_id: &str) -> TaskResult<()> {
        let mut spec = Any::new();
        spec.value = serde_json::to_vec(&Process::default()).unwrap();
        let req = ExecProcessRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            spec: Some(spec).into(),
            ..Default::default()
        };
        self.service.exec(req).map(|_| ())
    }

    fn state(&self, id: &str, exec_id: &str) -> TaskResult<(Status, u32)> {
        let req = StateRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        let s = self.service.state(req)?;
        Ok((s.status.enum_value_or_default(), s.exit_status))
    }

    fn kill(&self, id: &str, exec_id: &str) -> TaskResult<()> {
        let req = KillRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            signal: 9,
            ..Default::default()
        };
        self.service.kill(req).map(|_| ())
    }

    fn delete(&self, id: &str, exec_id: &str) -> TaskResult<u32> {
        let req = DeleteRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.service.delete(req).map(|r| r.exit_status)
    }

    /// The topics published so far, exits with their process id.
    fn topics(&self) -> Vec<String> {
        self.events
            .try_iter()
            .map(|e| {
                let topic = e.topic.trim_start_matches("/tasks/").to_string();
                if e.event.type_url.ends_with("TaskExit") {
                    let exit = TaskExit::parse_from_bytes(&e.event.value).unwrap();
                    format!("{topic}:{}:{}", exit.id, exit.exit_status)
                } else {
                    topic
                }
            })
            .collect()
    }
}

fn kind<T: std::fmt::Debug>(r: TaskResult<T>) -> ErrorKind {
    r.expect_err("the call succeeded").kind
}

#[test]
fn one_exit_per_process_and_its_state_after() {
    let h = harness(OnStart::Run, false);
    let pid = h.create("c").unwrap();
    assert_eq!(h.start("c", "").unwrap(), pid);
    h.service.reaped(pid, 3);
    h.service.reaped(pid, 3);
    assert_eq!(h.topics(), ["create", "start", "exit:c:3"]);
    assert_eq!(h.state("c", "").unwrap(), (Status::STOPPED, 3));
    assert_eq!(kind(h.start("c", "")), ErrorKind::FailedPrecondition);
}

#[test]
fn an_exit_during_start_follows_task_start() {
    let h = harness(OnStart::ExitAt(0), false);
    h.create("c").unwrap();
    h.start("c", "").unwrap();
    assert_eq!(h.topics(), ["create", "start", "exit:c:0"]);
    assert_eq!(h.state("c", "").unwrap(), (Status::STOPPED, 0));
}

#[test]
fn an_exit_before_the_pid_is_registered_is_claimed() {
    // A pid below the shared counter's range: no other test takes it.
    let h = harness_with_pid(OnStart::Run, false, Some(4_999_999));
    h.service.reaped(4_999_999, 7);
    assert_eq!(h.create("c").unwrap(), 4_999_999);
    assert_eq!(h.state("c", "").unwrap(), (Status::STOPPED, 7));
    let topics = h.topics();
    assert!(
        topics.contains(&"exit:c:7".to_string()) && topics.contains(&"create".to_string()),
        "{topics:?}"
    );
}

#[test]
fn execs_have_their_own_ids_events_and_exits() {
    let h = harness(OnStart::Run, false);
    h.create("c").unwrap();
    h.start("c", "").unwrap();
    h.exec("c", "e1").unwrap();
    assert_eq!(kind(h.exec("c", "e1")), ErrorKind::AlreadyExists);
    assert_eq!(kind(h.exec("nope", "e2")), ErrorKind::NotFound);
    let pid = h.start("c", "e1").unwrap();
    h.service.reaped(pid, 1);
    assert_eq!(
        h.topics(),
        ["create", "start", "exec-added", "exec-started", "exit:e1:1"]
    );
    assert_eq!(h.state("c", "e1").unwrap(), (Status::STOPPED, 1));
    assert_eq!(h.delete("c", "e1").unwrap(), 1);
    assert_eq!(kind(h.state("c", "e1")), ErrorKind::NotFound);
    // The init still runs.
    assert_eq!(h.state("c", "").unwrap().0, Status::RUNNING);
}

#[test]
fn kill_of_unknown_or_finished_processes_is_not_found() {
    let h = harness(OnStart::Run, false);
    assert_eq!(kind(h.kill("nope", "")), ErrorKind::NotFound);
    let pid = h.create("c").unwrap();
    h.start("c", "").unwrap();
    assert_eq!(kind(h.kill("c", "nope")), ErrorKind::NotFound);
    h.kill("c", "").unwrap();
    h.service.reaped(pid, 137);
    assert_eq!(kind(h.kill("c", "")), ErrorKind::NotFound);
}

#[test]
fn a_running_task_is_not_deleted_and_a_stopped_one_is() {
    let h = harness(OnStart::Run, false);
    let pid = h.create("c").unwrap();
    h.start("c", "").unwrap();
    assert_eq!(kind(h.delete("c", "")), ErrorKind::FailedPrecondition);
    assert!(h.deleted.lock().unwrap().is_empty());
    h.service.reaped(pid, 0);
    assert_eq!(h.delete("c", "").unwrap(), 0);
    assert_eq!(*h.deleted.lock().unwrap(), ["c"]);
    assert_eq!(h.topics(), ["create", "start", "exit:c:0", "delete"]);
    assert_eq!(kind(h.state("c", "")), ErrorKind::NotFound);
    // The id is free again.
    h.create("c").unwrap();
}

#[test]
fn a_failed_create_leaves_nothing_behind() {
    let h = harness(OnStart::Run, true);
    let e = h.create("c").unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("no such module"), "{e}");
    assert_eq!(kind(h.state("c", "")), ErrorKind::NotFound);
    assert!(h.topics().is_empty());
}

#[test]
fn a_second_create_of_an_id_is_refused() {
    let h = harness(OnStart::Run, false);
    h.create("c").unwrap();
    assert_eq!(kind(h.create("c")), ErrorKind::AlreadyExists);
}

#[test]
fn bundle_without_a_spec_fails_create_naming_it() {
    let h = harness(OnStart::Run, false);
    let req = CreateTaskRequest {
        id: "c".into(),
        bundle: PathBuf::from("/nonexistent/bundle").display().to_string(),
        ..Default::default()
    };
    let e = h.service.create(req).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("/nonexistent/bundle/config.json"), "{e}");
}
