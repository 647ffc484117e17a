//! The instantiation lane: new instances are started behind everything else
//! a serving thread has to do, so that a burst cannot starve it.
//!
//! A serving thread runs a current-thread tokio runtime whose run queue is
//! FIFO. Starting an instance (allocate its slot, instantiate, run the guest
//! until it first waits) is by far the most expensive thing on it, around
//! 100 µs with the page faults of a fresh slot. When a burst of requests
//! arrives, each request's task would do that work in turn, and anything
//! queued behind them (a health probe's connection, the stats endpoint, the
//! responses of guests whose wait ended) waited for all of them: seconds,
//! at 100,000 requests in flight.
//!
//! With a lane, a request hands its instance's future to the lane of its
//! thread and waits. The lane is one task that gives each queued future its
//! first poll (where the instance is started), up to [`SLICE`] of work at a
//! time, then yields in a way that lets the runtime poll its I/O driver and
//! run every other ready task before the lane runs again ([`yield_now`]
//! defers a task until then). A future still pending after its first poll is
//! spawned as an ordinary task, so its later polls cost what they always did.
//! The lane changes the order of work, not its amount: the starts a thread
//! can do per second stay the same, while a probe waits for at most a slice
//! and the cheap tasks ready alongside it.
//!
//! A lane exists only on a current-thread runtime serving HTTP (see
//! [`Lane::install`]); elsewhere [`spawn_guest`] is `tokio::spawn`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};
use tokio::task::yield_now;

/// Work the lane does before it lets the rest of the thread run.
pub const SLICE: Duration = Duration::from_millis(1);

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The queue of one serving thread's lane.
#[derive(Default)]
pub struct Lane {
    jobs: Mutex<VecDeque<Job>>,
    ready: Notify,
}

thread_local! {
    /// The lane of the current-thread runtime this thread runs, if any.
    static CURRENT: RefCell<Option<Arc<Lane>>> = const { RefCell::new(None) };
}

/// The lane stays installed on its thread while this lives.
pub struct Installed {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
        self.task.abort();
    }
}

impl Lane {
    /// Starts a lane on the current runtime and makes it this thread's, if
    /// the runtime is current-thread (every task it spawns stays on this
    /// thread); on a multi-thread runtime tasks move between workers, and
    /// there is no lane.
    pub fn install() -> Option<Installed> {
        let flavor = tokio::runtime::Handle::try_current().ok()?.runtime_flavor();
        if flavor != tokio::runtime::RuntimeFlavor::CurrentThread {
            return None;
        }
        let lane = Arc::new(Lane::default());
        CURRENT.with(|c| *c.borrow_mut() = Some(lane.clone()));
        Some(Installed {
            task: tokio::spawn(lane.run()),
        })
    }

    fn push(&self, job: Job) {
        self.jobs.lock().expect("lane lock").push_back(job);
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<Job> {
        self.jobs.lock().expect("lane lock").pop_front()
    }

    async fn run(self: Arc<Self>) {
        loop {
            let slice_end = Instant::now() + SLICE;
            let mut more = false;
            while let Some(mut job) = self.pop() {
                // Its first poll here, with the lane's waker, which it
                // replaces on its next poll as a task of its own. tokio's
                // cooperative budget is the lane's for its whole slice; a
                // job must not find it spent and stop short of its start.
                let first = tokio::task::coop::unconstrained(std::future::poll_fn(|cx| {
                    Poll::Ready(std::panic::catch_unwind(AssertUnwindSafe(|| {
                        job.as_mut().poll(cx)
                    })))
                }))
                .await;
                match first {
                    Ok(Poll::Ready(())) => {}
                    Ok(Poll::Pending) => {
                        tokio::spawn(job);
                    }
                    // Its result's sender is dropped with it: the request
                    // sees the job fail, as it would a panicking task.
                    Err(_) => tracing::error!("guest task panicked while starting"),
                }
                if Instant::now() >= slice_end {
                    more = true;
                    break;
                }
            }
            if more {
                // Deferred until the runtime has polled its I/O driver and
                // run what else is ready.
                yield_now().await;
            } else {
                self.ready.notified().await;
            }
        }
    }
}

/// Runs `fut` as a task of its own, started through this thread's lane if it
/// has one; the returned future resolves to its output, or to an error if it
/// panicked or its runtime shut down first.
pub fn spawn_guest<F>(fut: F) -> impl Future<Output = Result<F::Output, GuestTaskFailed>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let lane = CURRENT.with(|c| c.borrow().clone());
    let (tx, rx) = oneshot::channel();
    let job = async move {
        let _ = tx.send(fut.await);
    };
    match lane {
        Some(lane) => lane.push(Box::pin(job)),
        None => {
            tokio::spawn(job);
        }
    }
    async move { rx.await.map_err(|_| GuestTaskFailed) }
}

/// A guest task ended without an output: it panicked, or its runtime shut
/// down before it finished.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("guest task panicked or was cancelled")]
pub struct GuestTaskFailed;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn without_a_lane_jobs_are_plain_tasks() {
        current_thread().block_on(async {
            assert_eq!(spawn_guest(async { 7 }).await.unwrap(), 7);
        });
    }

    #[test]
    fn jobs_run_in_order_finish_as_tasks_and_panics_fail_only_their_own() {
        current_thread().block_on(async {
            let _lane = Lane::install().expect("current-thread runtime");
            let order = Arc::new(Mutex::new(Vec::new()));
            let mut results = Vec::new();
            for i in 0..5 {
                let order = order.clone();
                results.push(spawn_guest(async move {
                    order.lock().unwrap().push(i);
                    // Pending after the first poll: finished as a task.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    i * 10
                }));
            }
            let boom = spawn_guest(async { panic!("guest blew up") });
            let after = spawn_guest(async { "still serving" });
            for (i, r) in results.into_iter().enumerate() {
                assert_eq!(r.await.unwrap(), i * 10);
            }
            assert!(boom.await.is_err());
            assert_eq!(after.await.unwrap(), "still serving");
            assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        });
    }

    /// The point of the lane: a task that becomes ready while a flood of
    /// expensive starts is queued runs after at most a slice of them, not
    /// after all of them.
    #[test]
    fn a_flood_of_starts_does_not_hold_up_other_tasks() {
        current_thread().block_on(async {
            let _lane = Lane::install().expect("current-thread runtime");
            let started = Arc::new(AtomicUsize::new(0));
            const JOBS: usize = 200;
            let mut results = Vec::new();
            for _ in 0..JOBS {
                let started = started.clone();
                results.push(spawn_guest(async move {
                    // An expensive start: 1 ms of work on the thread.
                    let until = Instant::now() + Duration::from_millis(1);
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                    started.fetch_add(1, Ordering::Relaxed);
                }));
            }
            // An ordinary task ready now (a probe's connection, say).
            let seen = tokio::spawn({
                let started = started.clone();
                async move { started.load(Ordering::Relaxed) }
            })
            .await
            .unwrap();
            // Without the lane all 200 would run first (each spawned task
            // ahead of it in the FIFO queue).
            assert!(seen < JOBS / 4, "{seen} of {JOBS} starts ran before it");
            for r in results {
                r.await.unwrap();
            }
            assert_eq!(started.load(Ordering::Relaxed), JOBS);
        });
    }
}
