//! The multi-server Gearman worker core: connections, registration, grabbing, job slots,
//! reporting, reconnects and graceful drain. What a job *does* lives in a [`JobHandler`].
//!
//! # Connections
//! Every configured server gets one connection task per role, each with its own reconnect loop
//! (0.5 s backoff doubling to 30 s, reset once a session got a packet from the server). A session
//! connects (TCP_NODELAY, TCP keepalive), sends `SET_CLIENT_ID` and one `CAN_DO` per function
//! (exactly as configured, `build:` prefix included), then loops over
//! `GRAB_JOB_UNIQ` → `NO_JOB` → `PRE_SLEEP` → `NOOP` → `GRAB_JOB_UNIQ` → `JOB_ASSIGN_UNIQ`.
//! An idle worker is parked in `PRE_SLEEP` and wakes only for packets: no polling, and no timer
//! but the one a job's progress may arm (see Reporting).
//! Liveness comes from TCP keepalive; the worker never sends `ECHO_REQ`, `GRAB_JOB`,
//! `CAN_DO_TIMEOUT`, `CANT_DO` or `RESET_ABILITIES` (Zuul's server ignores the first three and
//! gearmand re-queues running jobs on the last two).
//!
//! # Slots
//! Gearman cannot hand a job back, so a connection sends `GRAB_JOB_UNIQ` only after it reserved a
//! slot from a semaphore shared by *all* servers; it keeps as many grabs outstanding as it has
//! reserved slots (answers come back in order), so several free slots fill in one round trip. `NO_JOB`
//! returns the slot; `JOB_ASSIGN_UNIQ` gives it to the job; the job's terminal packet
//! (`WORK_COMPLETE`, `WORK_FAIL` or `WORK_EXCEPTION`) frees it.
//!
//! # Over-large jobs
//! A job assignment over [`WorkerConfig::max_packet_body`] is not a broken connection: closing
//! it would make gearmand re-queue the job and hand it straight back, starving every other job.
//! The codec consumes its data without buffering it ([`super::codec::WorkerCodec`]); the job
//! takes its grab's slot like any other, is answered with `WORK_DATA` carrying a `result`
//! ([`oversized_job_result`]) and `WORK_FAIL`, and the slot goes on to the next grab. Any other
//! protocol error closes the connection and keeps the reconnect backoff growing, so a server
//! that keeps sending what we refuse cannot make us reconnect in a tight loop.
//!
//! # Priority functions (`stop:<manager>`)
//! Gearman has no per-function grab: a grab on a connection that registered both `build:*` and
//! `stop:*` may return either. So priority functions are registered on a **separate control
//! connection** per server, with client id `<client_id>-control`, which registers *only* the
//! priority functions and grabs from its own small budget
//! ([`WorkerConfig::max_concurrent_priority_jobs`]); the normal connections register only the
//! normal functions. A stop is therefore served even when every build slot is busy, and it is
//! still served while draining ([`Worker::stop_grabbing`] only stops normal grabs).
//!
//! # Reporting
//! A job is keyed by (server, handle) because handles are only unique per server. Its
//! [`JobReporter`] writes to the session that assigned it, from whichever thread reports: the
//! packets are encoded into the session's outbox and written by that thread at once, so a job
//! that ends on its own thread sends its result without waking the async runtime. Only what the
//! socket cannot take at once is left to the session task, which finishes it when the socket is
//! writable. Progress packets may wait [`PROGRESS_LINGER`](outbox::PROGRESS_LINGER) for
//! company (a quick job then goes out in one write, start data to result); terminal packets go
//! at once. A job's slot passes
//! from its terminal packet straight to the next `GRAB_JOB_UNIQ` in the same write when its
//! connection may grab and no other connection waits for a slot; otherwise it goes back to the
//! budget. Once the session is gone (gearmand then re-queues the job, Zuul's server fails it),
//! reports are dropped with a log line and the job's [`JobReporter::on_connection_lost`] hook
//! runs. Exactly one terminal packet is sent per job: when the last clone of a job's reporter
//! goes without one, the worker sends `WORK_FAIL`.
//!
//! # Lifecycle
//! [`Worker::spawn`] starts everything on the current tokio runtime and returns the handle.
//! Graceful drain: [`Worker::stop_grabbing`], then [`Worker::wait_idle`] (every job ended,
//!
//! # Where each part lives
//! [`settings`]: the configuration and the connections it asks for; [`slots`]: the slot
//! budgets and the activity [`Worker::wait_idle`] waits on; [`outbox`]: a session's write side
//! and grab state; [`reporter`]: a job's side of it; [`job`]: what a handler gets;
//! [`session`]: a connection's life, step by step; [`stats`]: what each server's connections
//! report (registered, reconnects, over-large jobs), read by the daemon's metrics.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::error::Result;

mod job;
mod outbox;
mod reporter;
mod session;
mod settings;
mod slots;
mod stats;

pub use job::{AssignedJob, HandlerFuture, JobHandler, JobKey};
pub use reporter::JobReporter;
pub use session::oversized_job_result;
pub use settings::{ServerId, WorkerConfig, CONTROL_CLIENT_ID_SUFFIX};
pub use stats::{ServerState, WorkerStats};

/// What the worker's connections and jobs share.
struct Shared {
    config: WorkerConfig,
    handler: Arc<dyn JobHandler>,
    /// Whether normal connections may grab (see [`Worker::stop_grabbing`]).
    grabbing: watch::Sender<bool>,
    /// Normal grabs in flight + running jobs (see [`Worker::wait_idle`]).
    activity: Arc<watch::Sender<usize>>,
    running: AtomicUsize,
    registered: AtomicUsize,
    /// Per server: registered connections, reconnects, over-large jobs (for metrics).
    stats: Arc<WorkerStats>,
    shutdown: CancellationToken,
}

/// A running worker. See the module documentation for the design.
///
/// Dropping it closes every connection immediately (handlers already running keep running, but
/// their reports are dropped); use [`Worker::shutdown`] to drain first.
pub struct Worker {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("client_id", &self.shared.config.client_id)
            .field("running_jobs", &self.running_jobs())
            .field("registered_connections", &self.registered_connections())
            .finish()
    }
}

impl Worker {
    /// Validates `config` and starts one connection task per server (plus one control
    /// connection per server when there are priority functions) on the current tokio runtime.
    ///
    /// # Errors
    /// [`Error::Config`](super::Error::Config) when the configuration is invalid.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn spawn<H: JobHandler>(config: WorkerConfig, handler: H) -> Result<Worker> {
        config.validate()?;
        let connections = config.connections();
        let stats = Arc::new(WorkerStats::new(&connections));
        let (grabbing, _) = watch::channel(true);
        let (activity, _) = watch::channel(0usize);
        let shared = Arc::new(Shared {
            handler: Arc::new(handler),
            grabbing,
            activity: Arc::new(activity),
            running: AtomicUsize::new(0),
            registered: AtomicUsize::new(0),
            stats,
            shutdown: CancellationToken::new(),
            config,
        });
        let tasks = connections
            .into_iter()
            .map(|spec| tokio::spawn(session::connection_task(shared.clone(), spec)))
            .collect();
        Ok(Worker { shared, tasks })
    }

    /// Stops grabbing normal jobs on every connection. Priority jobs (stops) are still served so
    /// Zuul can abort what is draining. A grab already in flight may still deliver a job; it runs
    /// (there is no way to hand it back) and [`Worker::wait_idle`] waits for it.
    pub fn stop_grabbing(&self) {
        self.shared.grabbing.send_replace(false);
    }

    /// Undoes [`Worker::stop_grabbing`].
    pub fn resume_grabbing(&self) {
        self.shared.grabbing.send_replace(true);
    }

    /// Jobs currently running (normal and priority): assigned, and a reporter still held.
    pub fn running_jobs(&self) -> usize {
        self.shared.running.load(Ordering::Acquire)
    }

    /// Connections currently connected and registered (normal and control).
    pub fn registered_connections(&self) -> usize {
        self.shared.registered.load(Ordering::Acquire)
    }

    /// Each server's connection state and counters, readable after the worker is gone too.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.shared.stats.clone()
    }

    /// Waits until no job runs (every reporter is gone) and no normal grab is in flight. After
    /// [`Worker::stop_grabbing`], once this returns no new normal job will start.
    pub async fn wait_idle(&self) {
        let mut rx = self.shared.activity.subscribe();
        // The sender lives in `shared`, which we hold, so this cannot fail.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Graceful shutdown: stop grabbing, wait for every running handler, then close the
    /// connections and wait for their tasks.
    pub async fn shutdown(mut self) {
        self.stop_grabbing();
        self.wait_idle().await;
        self.shared.shutdown.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }

    /// Closes every connection now, without waiting for running handlers (their later reports
    /// are dropped). Connections are not reopened.
    pub fn close(&self) {
        self.shared.shutdown.cancel();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}
