//! The guest lane: guests run behind everything else a serving thread has to
//! do, so that a burst cannot starve the host's own work.
//!
//! A serving thread runs a current-thread tokio runtime whose run queue is
//! FIFO. Running a guest is by far the most expensive thing on it: starting
//! an instance (allocate its slot, instantiate, run the guest until it first
//! waits) takes around 100 µs with the page faults of a fresh slot, and
//! ending one (its response, freeing the slot) tens of µs. When a burst of
//! requests arrives, or a burst of guests finishes, anything queued behind
//! them (a health probe's connection, the stats endpoint, a connection
//! writing out a response) waited for all of them: seconds, at 100,000
//! requests in flight.
//!
//! With a lane, a request hands its guest's future to the lane of its thread
//! and waits. The lane is one task that polls the guests that are ready, up
//! to [`SLICE`] of work at a time, then yields in a way that lets the runtime
//! poll its I/O driver and run every other ready task before the lane runs
//! again ([`yield_now`] defers a task until then). A guest's waker puts it
//! back in the lane's ready queue. The lane changes the order of work, not
//! its amount: the guests a thread can run per second stay the same, while a
//! probe waits for at most a slice and the cheap tasks ready alongside it.
//!
//! A lane exists only on a current-thread runtime serving HTTP (see
//! [`Lane::install`]); elsewhere [`spawn_guest`] is `tokio::spawn`.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};
use tokio::task::yield_now;

/// Work the lane does before it lets the rest of the thread run.
pub const SLICE: Duration = Duration::from_millis(1);

type BoxedGuest = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One guest's future in a lane.
struct Job {
    id: u64,
    /// `None` once it finished, panicked or its lane went away.
    fut: Mutex<Option<BoxedGuest>>,
    /// In the ready queue (or about to be): a second wake adds nothing.
    queued: AtomicBool,
    lane: Weak<Lane>,
}

impl Wake for Job {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel)
            && let Some(lane) = self.lane.upgrade()
        {
            lane.ready
                .lock()
                .expect("lane lock")
                .push_back(self.clone());
            lane.notify.notify_one();
        }
    }
}

/// The guests of one serving thread.
#[derive(Default)]
pub struct Lane {
    ready: Mutex<VecDeque<Arc<Job>>>,
    notify: Notify,
    /// Every unfinished job, so that dropping the lane drops their futures:
    /// a pending future holds its own waker (in a timer, say), and with it
    /// its job, which nothing else would ever free.
    jobs: Mutex<HashMap<u64, Arc<Job>>>,
    next_id: AtomicU64,
}

thread_local! {
    /// The lane of the current-thread runtime this thread runs, if any.
    static CURRENT: RefCell<Option<Arc<Lane>>> = const { RefCell::new(None) };
}

/// The lane stays installed on its thread while this lives; dropping it
/// drops the guests still in it.
pub struct Installed {
    lane: Arc<Lane>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
        self.task.abort();
        let jobs: Vec<_> = self.lane.jobs.lock().expect("lane lock").drain().collect();
        for (_, job) in jobs {
            let fut = job.fut.lock().expect("job lock").take();
            drop(fut);
        }
        self.lane.ready.lock().expect("lane lock").clear();
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
            lane: lane.clone(),
            task: tokio::spawn(lane.run()),
        })
    }

    fn add(self: &Arc<Self>, fut: BoxedGuest) {
        let job = Arc::new(Job {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            fut: Mutex::new(Some(fut)),
            queued: AtomicBool::new(false),
            lane: Arc::downgrade(self),
        });
        self.jobs
            .lock()
            .expect("lane lock")
            .insert(job.id, job.clone());
        job.wake_by_ref();
    }

    fn pop(&self) -> Option<Arc<Job>> {
        self.ready.lock().expect("lane lock").pop_front()
    }

    /// Polls `job` once, and forgets it once it is finished (or panicked).
    fn poll(&self, job: &Arc<Job>) {
        // Cleared before the poll: a wake during it queues the job again.
        job.queued.store(false, Ordering::Release);
        let mut slot = job.fut.lock().expect("job lock");
        let Some(fut) = slot.as_mut() else { return };
        let waker = Waker::from(job.clone());
        let mut cx = Context::from_waker(&waker);
        let done = match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))) {
            Ok(Poll::Ready(())) => true,
            Ok(Poll::Pending) => false,
            // Its result's sender is dropped with it: the request sees the
            // job fail, as it would a panicking task.
            Err(_) => {
                tracing::error!("guest task panicked");
                true
            }
        };
        if done {
            *slot = None;
            drop(slot);
            self.jobs.lock().expect("lane lock").remove(&job.id);
        }
    }

    async fn run(self: Arc<Self>) {
        loop {
            let slice_end = Instant::now() + SLICE;
            let mut more = false;
            while let Some(job) = self.pop() {
                self.poll(&job);
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
                self.notify.notified().await;
            }
        }
    }
}

/// Runs `fut` as a guest: in this thread's lane if it has one, else as a
/// task of its own. The returned future resolves to its output, or to an
/// error if it panicked or its runtime or lane shut down first.
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
        // tokio's cooperative budget is per task, and the lane is one task
        // for all its guests: unconstrained, a guest never finds the budget
        // spent by the others (the lane's slice bounds its work instead).
        Some(lane) => lane.add(Box::pin(tokio::task::coop::unconstrained(job))),
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
    use std::sync::atomic::AtomicUsize;

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
    fn guests_start_in_order_wait_and_finish_and_panics_fail_only_their_own() {
        current_thread().block_on(async {
            let _lane = Lane::install().expect("current-thread runtime");
            let order = Arc::new(Mutex::new(Vec::new()));
            let mut results = Vec::new();
            for i in 0..5 {
                let order = order.clone();
                results.push(spawn_guest(async move {
                    order.lock().unwrap().push(i);
                    // Woken by a timer later, through the lane.
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

    #[test]
    fn a_wake_from_another_thread_reaches_the_lane() {
        current_thread().block_on(async {
            let _lane = Lane::install().expect("current-thread runtime");
            let (tx, rx) = oneshot::channel();
            let guest = spawn_guest(async move { rx.await.unwrap() + 1 });
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                tx.send(41).unwrap();
            });
            assert_eq!(guest.await.unwrap(), 42);
        });
    }

    /// Dropping the lane drops its pending guests (their stores, in a
    /// server), though each holds its own waker.
    #[test]
    fn uninstalling_drops_pending_guests() {
        struct Dropped(Arc<AtomicUsize>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let dropped = Arc::new(AtomicUsize::new(0));
        current_thread().block_on(async {
            let lane = Lane::install().expect("current-thread runtime");
            let mut results = Vec::new();
            for _ in 0..3 {
                let guard = Dropped(dropped.clone());
                results.push(spawn_guest(async move {
                    let _guard = guard;
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(lane);
            for r in results {
                assert!(r.await.is_err());
            }
        });
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
    }

    /// The point of the lane: a task that becomes ready while a flood of
    /// expensive guest work is queued runs after at most a slice of it, not
    /// after all of it; and so does one while guests finish.
    #[test]
    fn a_flood_of_guests_does_not_hold_up_other_tasks() {
        fn spin(ms: u64) {
            let until = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        current_thread().block_on(async {
            let _lane = Lane::install().expect("current-thread runtime");
            let started = Arc::new(AtomicUsize::new(0));
            let finished = Arc::new(AtomicUsize::new(0));
            const JOBS: usize = 200;
            // They all end at once, like a burst's guests holding for a
            // fixed time.
            let end_at = tokio::time::Instant::now() + Duration::from_millis(400);
            let mut results = Vec::new();
            for _ in 0..JOBS {
                let (started, finished) = (started.clone(), finished.clone());
                results.push(spawn_guest(async move {
                    // An expensive start and an expensive end.
                    spin(1);
                    started.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep_until(end_at).await;
                    spin(1);
                    finished.fetch_add(1, Ordering::Relaxed);
                }));
            }
            // An ordinary task ready now (a probe's connection, say).
            let probe = |counter: Arc<AtomicUsize>| {
                tokio::spawn(async move { counter.load(Ordering::Relaxed) })
            };
            let seen = probe(started.clone()).await.unwrap();
            // Without the lane all 200 would start first (each spawned task
            // ahead of it in the FIFO queue).
            assert!(seen < JOBS / 4, "{seen} of {JOBS} starts ran before it");
            // Now while they finish.
            while started.load(Ordering::Relaxed) < JOBS {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            while finished.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            let seen = probe(finished.clone()).await.unwrap();
            assert!(seen < JOBS / 4, "{seen} of {JOBS} ends ran before it");
            for r in results {
                r.await.unwrap();
            }
            assert_eq!(finished.load(Ordering::Relaxed), JOBS);
        });
    }
}
