//! What a job handler gets: the assigned job, and the task it runs on.

use std::borrow::Cow;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use tracing::{debug, error};

use super::reporter::JobReporter;
use super::settings::ServerId;
use crate::gearman::packet::{Packet, PacketType};

/// Identifies a running job: handles are unique only per server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobKey {
    /// Index of the server in [`WorkerConfig::servers`](super::WorkerConfig::servers).
    pub server: usize,
    /// The server's job handle.
    pub handle: Bytes,
}

/// A job a server assigned to this worker.
#[derive(Debug, Clone)]
pub struct AssignedJob {
    /// The server that assigned it (and that gets its reports).
    pub server: ServerId,
    /// The server's job handle.
    pub handle: Bytes,
    /// The function as registered (e.g. `build:gate-nova-python27`).
    pub function: String,
    /// The submitter's unique id (Zuul: `ZUUL_UUID`); empty for plain `JOB_ASSIGN`.
    pub unique: Bytes,
    /// The job's argument (Zuul: a JSON object of string parameters). Untrusted.
    pub data: Bytes,
    /// Whether it came in on a control connection (a priority function).
    pub priority: bool,
}

impl AssignedJob {
    /// The job a `JOB_ASSIGN_UNIQ` (or `JOB_ASSIGN`) packet from `server` carries.
    pub(super) fn from_assignment(server: &ServerId, packet: &Packet, priority: bool) -> Self {
        let (function, unique, data) = match packet.kind {
            PacketType::JobAssignUniq => (packet.arg(1), packet.arg_bytes(2), packet.arg_bytes(3)),
            _ => (packet.arg(1), Bytes::new(), packet.arg_bytes(2)),
        };
        AssignedJob {
            server: server.clone(),
            handle: packet.arg_bytes(0),
            function: String::from_utf8_lossy(function).into_owned(),
            unique,
            data,
            priority,
        }
    }

    /// The (server, handle) key of this job.
    pub fn key(&self) -> JobKey {
        JobKey {
            server: self.server.index,
            handle: self.handle.clone(),
        }
    }

    /// The handle for logs.
    pub fn handle_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.handle)
    }

    /// The unique id as text.
    ///
    /// # Errors
    /// When it is not UTF-8 (never the case for Zuul's UUIDs).
    pub fn unique_str(&self) -> std::result::Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.unique)
    }
}

/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Runs assigned jobs. The handler reports through the [`JobReporter`] and should end with
/// [`JobReporter::complete`], [`JobReporter::fail`] or [`JobReporter::exception`]. A job lives
/// as long as a clone of its reporter does: the handler may hand one to a thread of its own
/// and return at once. When the last clone goes without a terminal packet (the handler
/// forgot, panicked, or its thread died), the worker sends `WORK_FAIL`.
///
/// Closures `Fn(AssignedJob, JobReporter) -> impl Future<Output = ()>` implement it.
pub trait JobHandler: Send + Sync + 'static {
    /// Starts one job. Called on the connection's task: do the work in the returned future
    /// (or on a thread it starts).
    fn run(&self, job: AssignedJob, reporter: JobReporter) -> HandlerFuture;
}

impl<F, Fut> JobHandler for F
where
    F: Fn(AssignedJob, JobReporter) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn run(&self, job: AssignedJob, reporter: JobReporter) -> HandlerFuture {
        Box::pin(self(job, reporter))
    }
}

/// Runs `job` through `handler` on a task of its own. A handler that panics is logged; its
/// job then ends like any other whose reporter goes without a result.
pub(super) fn start(handler: Arc<dyn JobHandler>, job: AssignedJob, reporter: JobReporter) {
    debug!(
        server = %job.server,
        handle = %job.handle_str(),
        function = %job.function,
        unique = %String::from_utf8_lossy(&job.unique),
        "job assigned"
    );
    tokio::spawn(async move {
        let server = reporter.server().clone();
        let handle = reporter.handle().clone();
        // The job ends when the last clone of its reporter goes (see `JobState`'s drop).
        let run = AssertUnwindSafe(handler.run(job, reporter));
        if run.catch_unwind().await.is_err() {
            error!(
                %server,
                handle = %String::from_utf8_lossy(&handle),
                "job handler panicked"
            );
        }
    });
}
