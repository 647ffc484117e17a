//! Publishing task events to containerd, in order, surviving its restarts.
//!
//! Handlers queue events and return at once; one thread forwards them over
//! ttrpc. When containerd is down (restarting), the thread reconnects and
//! retries, so an exit that happens meanwhile is still reported once
//! containerd is back.
//!
//! The connection is dropped after [`IDLE`] without events: the ttrpc client
//! keeps a thread that polls its socket every 10 ms, which in an idle pod's
//! shim was 100 wake-ups a second for nothing (a thousand idle pods kept
//! two cores busy). Reconnecting for the next burst costs one connect.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant, SystemTime};

use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::shim::events::{Envelope, ForwardRequest};
use containerd_shim::protos::shim_sync::{Client, EventsClient};
use containerd_shim::protos::ttrpc::context::Context;

/// How long an event is retried while containerd is unreachable.
const GIVE_UP_AFTER: Duration = Duration::from_secs(600);
/// How long the connection to containerd stays open without events.
const IDLE: Duration = Duration::from_secs(2);

/// A task event, with the protobuf type name containerd reads it back by.
///
/// The name is written here instead of read from the message's reflection
/// descriptor, as the crate's `RemotePublisher::publish` does: the first
/// descriptor lookup parses every embedded `.proto` file of the crate, about
/// a millisecond of CPU in every shim process, on a core that a starting
/// container needs.
pub trait TaskEvent: Message {
    const TYPE_URL: &'static str;
}

macro_rules! task_events {
    ($($name:ident),*) => {
        $(impl TaskEvent for $name {
            const TYPE_URL: &'static str = concat!("containerd.events.", stringify!($name));
        })*
    };
}

task_events!(
    TaskCreate,
    TaskStart,
    TaskDelete,
    TaskExit,
    TaskExecAdded,
    TaskExecStarted,
    TaskPaused,
    TaskResumed,
    TaskIO,
    TaskOOM
);

/// A queued event: its topic and the message.
pub struct Event {
    pub topic: &'static str,
    pub event: Any,
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct Events {
    tx: Sender<Event>,
}

impl Events {
    /// Starts the publishing thread. It connects to containerd's ttrpc
    /// `address` with the first event, off the path of the daemon's start.
    pub fn start(namespace: String, address: String) -> Self {
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("wisp-events".into())
            .spawn(move || forward(rx, namespace, address))
            .expect("failed to start the event thread");
        Self { tx }
    }

    /// Events kept in a channel instead of published: for tests of the
    /// Task verbs, which read what containerd would have received.
    pub fn captured() -> (Self, Receiver<Event>) {
        let (tx, rx) = channel();
        (Self { tx }, rx)
    }

    pub fn send<E: TaskEvent>(&self, topic: &'static str, message: E) {
        let value = match message.write_to_bytes() {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("dropping event {topic}: {e}");
                return;
            }
        };
        let mut event = Any::new();
        event.type_url = E::TYPE_URL.to_string();
        event.value = value;
        let _ = self.tx.send(Event { topic, event });
    }
}

/// `t` as a protobuf timestamp.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    ts
}

fn connect(address: &str) -> Option<EventsClient> {
    let fd = containerd_shim::util::connect(address).ok()?;
    Client::new(fd).ok().map(EventsClient::new)
}

fn forward(rx: Receiver<Event>, namespace: String, address: String) {
    let mut client: Option<EventsClient> = None;
    loop {
        let event = if client.is_some() {
            match rx.recv_timeout(IDLE) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => {
                    client = None;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(e) => e,
                Err(_) => break,
            }
        };
        let mut envelope = Envelope::new();
        envelope.set_topic(event.topic.to_owned());
        envelope.set_namespace(namespace.clone());
        envelope.set_event(event.event);
        let mut request = ForwardRequest::new();
        let deadline = Instant::now() + GIVE_UP_AFTER;
        let mut delay = Duration::from_millis(50);
        loop {
            if client.is_none() {
                client = connect(&address);
            }
            if let Some(c) = &client {
                // Stamped at each try, as the crate's publisher does.
                envelope.timestamp = containerd_shim::protos::protobuf::MessageField::some(
                    timestamp(SystemTime::now()),
                );
                request.set_envelope(envelope.clone());
                match c.forward(Context::default(), &request) {
                    Ok(_) => {
                        tracing::debug!("published {}", event.topic);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!("publishing {} failed, will retry: {e}", event.topic);
                        client = None;
                    }
                }
            }
            if Instant::now() > deadline {
                tracing::error!("dropping event {}: containerd unreachable", event.topic);
                break;
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use containerd_shim::protos::protobuf::MessageFull;

    use super::*;

    fn named_as_its_descriptor<E: TaskEvent + MessageFull>() {
        assert_eq!(E::TYPE_URL, E::descriptor().full_name());
    }

    /// containerd decodes an event by its type name: the names written here
    /// are the messages' own.
    #[test]
    fn type_urls_are_the_descriptors_full_names() {
        named_as_its_descriptor::<TaskCreate>();
        named_as_its_descriptor::<TaskStart>();
        named_as_its_descriptor::<TaskDelete>();
        named_as_its_descriptor::<TaskExit>();
        named_as_its_descriptor::<TaskExecAdded>();
        named_as_its_descriptor::<TaskExecStarted>();
        named_as_its_descriptor::<TaskPaused>();
        named_as_its_descriptor::<TaskResumed>();
        named_as_its_descriptor::<TaskIO>();
        named_as_its_descriptor::<TaskOOM>();
    }
}
