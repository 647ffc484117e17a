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
use std::time::{Duration, Instant};

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::publisher::RemotePublisher;

/// How long an event is retried while containerd is unreachable.
const GIVE_UP_AFTER: Duration = Duration::from_secs(600);
/// How long the connection to containerd stays open without events.
const IDLE: Duration = Duration::from_secs(2);

struct Event {
    topic: &'static str,
    message: Box<dyn MessageDyn>,
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct Events {
    tx: Sender<Event>,
}

impl Events {
    /// Starts the publishing thread.
    pub fn start(publisher: RemotePublisher, namespace: String, ttrpc_address: String) -> Self {
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("wisp-events".into())
            .spawn(move || forward(rx, publisher, namespace, ttrpc_address))
            .expect("failed to start the event thread");
        Self { tx }
    }

    pub fn send(&self, topic: &'static str, message: impl MessageDyn + 'static) {
        let _ = self.tx.send(Event {
            topic,
            message: Box::new(message),
        });
    }
}

fn forward(rx: Receiver<Event>, publisher: RemotePublisher, namespace: String, address: String) {
    let mut publisher = Some(publisher);
    loop {
        let event = if publisher.is_some() {
            match rx.recv_timeout(IDLE) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => {
                    publisher = None;
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
        let deadline = Instant::now() + GIVE_UP_AFTER;
        let mut delay = Duration::from_millis(50);
        loop {
            if publisher.is_none() {
                publisher = RemotePublisher::new(&address).ok();
            }
            if let Some(p) = &publisher {
                let message = event.message.clone_box();
                match p.publish(Context::default(), event.topic, &namespace, message) {
                    Ok(()) => {
                        log::debug!("published {}", event.topic);
                        break;
                    }
                    Err(e) => {
                        log::warn!("publishing {} failed, will retry: {e}", event.topic);
                        publisher = None;
                    }
                }
            }
            if Instant::now() > deadline {
                log::error!("dropping event {}: containerd unreachable", event.topic);
                break;
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
}
