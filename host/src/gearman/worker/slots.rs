//! Job slots: Gearman cannot hand a job back, so a grab is sent only with a slot reserved from
//! its role's budget, shared by all servers; and the count of busy things (normal grabs in
//! flight, running jobs) that [`Worker::wait_idle`](super::Worker::wait_idle) waits on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, AcquireError, OwnedSemaphorePermit, Semaphore};

/// Counts "busy" things (normal grabs in flight + running jobs) for
/// [`Worker::wait_idle`](super::Worker::wait_idle).
pub(super) struct ActivityGuard {
    activity: Arc<watch::Sender<usize>>,
}

impl ActivityGuard {
    pub(super) fn new(activity: &Arc<watch::Sender<usize>>) -> Self {
        activity.send_modify(|n| *n += 1);
        ActivityGuard {
            activity: activity.clone(),
        }
    }
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.activity.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A slot reserved for an outstanding grab.
pub(super) struct Reservation {
    pub(super) permit: OwnedSemaphorePermit,
    pub(super) _activity: Option<ActivityGuard>,
}

/// The slot budget of one role, over all servers, and how many connections wait for a slot
/// (an ending job hands its slot to a new grab on its own connection only when none waits, so
/// that no server starves).
pub(super) struct Slots {
    sem: Arc<Semaphore>,
    waiting: AtomicUsize,
}

impl Slots {
    pub(super) fn new(n: usize) -> Arc<Self> {
        Arc::new(Slots {
            sem: Arc::new(Semaphore::new(n)),
            waiting: AtomicUsize::new(0),
        })
    }

    /// Whether a connection waits for a slot of this budget.
    pub(super) fn is_awaited(&self) -> bool {
        self.waiting.load(Ordering::Acquire) != 0
    }

    /// Waits for a slot, counted in `waiting` while it waits (cancel-safe).
    pub(super) async fn acquire(&self) -> std::result::Result<OwnedSemaphorePermit, AcquireError> {
        if let Ok(p) = self.sem.clone().try_acquire_owned() {
            return Ok(p);
        }
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        self.sem.clone().acquire_owned().await
    }
}
