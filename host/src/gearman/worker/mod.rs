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
//! writable. Progress packets may wait [`PROGRESS_LINGER`] for company (a quick job then goes
//! out in one write, start data to result); terminal packets go at once. A job's slot passes
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
//! that is its last reporter is gone, and no normal grab in flight), or [`Worker::shutdown`] which does both and then
//! closes the connections. Dropping the [`Worker`] closes the connections at once.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, AcquireError, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::codec::{Frame, OversizedJob, PacketCodec, WorkerCodec, DEFAULT_MAX_BODY};
use super::error::{Error, Result};
use super::packet::{Packet, PacketType, MAX_FUNCTION_LEN};

/// Suffix appended to the client id of the per-server control connections.
pub const CONTROL_CLIENT_ID_SUFFIX: &str = "-control";

/// How long a job's progress packets (`WORK_DATA`, `WORK_STATUS`, `WORK_WARNING`) may wait in
/// the connection's buffer for company before they are sent. A job that ends within it goes out
/// in one write, start data to result (the server and the client then wake once per job, not
/// twice); for a real build the start data is late by this much at most. Terminal packets and
/// grabs are sent at once, and take whatever waits with them.
const PROGRESS_LINGER: Duration = Duration::from_millis(5);

/// Configuration of a [`Worker`]. Build it with struct-update syntax over
/// [`WorkerConfig::default`] and check it with [`WorkerConfig::validate`] (also done by
/// [`Worker::spawn`]).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Gearman servers as (host, port). One connection (plus a control connection when there
    /// are priority functions) is kept to each.
    pub servers: Vec<(String, u16)>,
    /// Sent with `SET_CLIENT_ID`; control connections use `<client_id>-control`.
    pub client_id: String,
    /// Functions registered with `CAN_DO` exactly as given (e.g. `build:gate-nova-python27`).
    pub functions: Vec<String>,
    /// Functions served even while every slot is busy (e.g. `stop:<manager>`), registered only on
    /// the control connections.
    pub priority_functions: Vec<String>,
    /// Jobs of `functions` running at once, over all servers together.
    pub max_concurrent_jobs: usize,
    /// Jobs of `priority_functions` running at once, over all servers together.
    pub max_concurrent_priority_jobs: usize,
    /// Largest packet body accepted from a server (and sent to it). A larger job is failed
    /// with [`oversized_job_result`] (see the module documentation); any other larger packet
    /// is a protocol error.
    pub max_packet_body: usize,
    /// First reconnect delay; doubles after every failed attempt.
    pub reconnect_initial: Duration,
    /// Cap of the reconnect delay.
    pub reconnect_max: Duration,
    /// Bound on one TCP connect attempt.
    pub connect_timeout: Duration,
    /// Idle time before TCP keepalive probes start (probes then every 10 s, 6 of them).
    pub keepalive_idle: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            servers: Vec::new(),
            client_id: "turbo-hipster".to_string(),
            functions: Vec::new(),
            priority_functions: Vec::new(),
            max_concurrent_jobs: 1,
            max_concurrent_priority_jobs: 4,
            max_packet_body: DEFAULT_MAX_BODY,
            reconnect_initial: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            keepalive_idle: Duration::from_secs(60),
        }
    }
}

fn check_name(what: &str, name: &str, max: usize, errors: &mut Vec<String>) {
    if name.is_empty() {
        errors.push(format!("{what} is empty"));
    } else if name.len() > max {
        errors.push(format!("{what} {name:?} is longer than {max} bytes"));
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        errors.push(format!(
            "{what} {name:?} contains whitespace or control characters"
        ));
    }
}

impl WorkerConfig {
    /// Checks every field and reports all problems at once.
    ///
    /// # Errors
    /// [`Error::Config`] listing every problem found.
    pub fn validate(&self) -> Result<()> {
        let mut errors = Vec::new();
        if self.servers.is_empty() {
            errors.push("no Gearman servers configured".to_string());
        }
        for (host, port) in &self.servers {
            if host.is_empty() {
                errors.push("a Gearman server has an empty host".to_string());
            }
            if *port == 0 {
                errors.push(format!("Gearman server {host:?} has port 0"));
            }
        }
        check_name("client id", &self.client_id, 200, &mut errors);
        if self.functions.is_empty() && self.priority_functions.is_empty() {
            errors.push("no functions to register".to_string());
        }
        let mut seen = std::collections::HashSet::new();
        for f in self.functions.iter().chain(&self.priority_functions) {
            check_name("function name", f, MAX_FUNCTION_LEN, &mut errors);
            if !seen.insert(f.as_str()) {
                errors.push(format!("function {f:?} is listed twice"));
            }
        }
        if self.max_concurrent_jobs == 0 {
            errors.push("max_concurrent_jobs must be at least 1".to_string());
        }
        if !self.priority_functions.is_empty() && self.max_concurrent_priority_jobs == 0 {
            errors.push("max_concurrent_priority_jobs must be at least 1".to_string());
        }
        if self.max_packet_body < 1024 {
            errors.push("max_packet_body must be at least 1024 bytes".to_string());
        }
        if self.reconnect_initial.is_zero() || self.reconnect_max < self.reconnect_initial {
            errors.push(
                "reconnect delays must be positive with reconnect_max >= reconnect_initial"
                    .to_string(),
            );
        }
        if self.connect_timeout.is_zero() || self.keepalive_idle < Duration::from_secs(1) {
            errors.push("connect_timeout and keepalive_idle (>= 1 s) must be positive".to_string());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(errors.join("; ")))
        }
    }
}

/// Which configured server something belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerId {
    /// Position in [`WorkerConfig::servers`].
    pub index: usize,
    /// Host as configured.
    pub host: Arc<str>,
    /// Port.
    pub port: u16,
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Identifies a running job: handles are unique only per server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobKey {
    /// Index of the server in [`WorkerConfig::servers`].
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

/// What to do with a job when its connection is lost.
type LostHook = Box<dyn FnOnce() + Send>;

/// The write side of one session, shared by the session task and every job it assigned (jobs
/// report from any thread). Packets are encoded into one buffer and written by the thread that
/// reports them, without a hand-over to the runtime; only what the socket cannot take at once
/// is left to the session task, which it finishes once the socket is writable.
struct Outbox {
    state: Mutex<OutState>,
    /// Wakes the session task: a linger to arm, a write to finish, a slot freed, an error.
    kick: Notify,
    codec: PacketCodec,
}

struct OutState {
    /// The socket; `None` once the session ended (reports are then dropped).
    stream: Option<Arc<TcpStream>>,
    /// Encoded packets not yet written.
    buf: BytesMut,
    /// When the progress waiting in `buf` must be written (see [`PROGRESS_LINGER`]).
    linger: Option<Instant>,
    /// A write found the socket full; the session task writes the rest once it is writable.
    blocked: bool,
    /// A write failed; the session ends with this error.
    failed: Option<std::io::Error>,
    /// Grabs in flight, each with its reserved slot; the server answers them in order.
    grabs: VecDeque<Reservation>,
    /// Whether the server may have jobs for us (false from `NO_JOB` to `NOOP`).
    wants_grab: bool,
    /// Jobs assigned on this session that have not sent their terminal packet.
    running: usize,
    /// Per running job (by handle): what to do if the connection is lost.
    lost_hooks: HashMap<Bytes, LostHook>,
}

impl Outbox {
    fn new(stream: Arc<TcpStream>, max_body: usize) -> Self {
        Outbox {
            state: Mutex::new(OutState {
                stream: Some(stream),
                buf: BytesMut::with_capacity(4096),
                linger: None,
                blocked: false,
                failed: None,
                grabs: VecDeque::new(),
                wants_grab: true,
                running: 0,
                lost_hooks: HashMap::new(),
            }),
            kick: Notify::new(),
            codec: PacketCodec::new(max_body),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Encodes `packet` into the buffer; false (logged) when it cannot be encoded.
    fn push(&self, st: &mut OutState, packet: &Packet) -> bool {
        match self.codec.encode_ref(packet, &mut st.buf) {
            Ok(()) => true,
            Err(e) => {
                error!(packet = %packet.kind, "cannot encode packet, dropped: {e}");
                false
            }
        }
    }

    /// Queues a `GRAB_JOB_UNIQ` that holds `permit` until the server answers it. A normal
    /// connection's grab is counted as activity *before* the grabbing flag is read again, so that
    /// [`Worker::wait_idle`] after [`Worker::stop_grabbing`] either sees this grab or this grab
    /// sees the flag; when grabbing has stopped, nothing is queued and the permit is handed back.
    fn queue_grab(
        &self,
        st: &mut OutState,
        shared: &Shared,
        role: Role,
        permit: OwnedSemaphorePermit,
    ) -> Option<OwnedSemaphorePermit> {
        let activity = (role == Role::Normal).then(|| ActivityGuard::new(&shared.activity));
        if role == Role::Normal && !*shared.grabbing.borrow() {
            return Some(permit);
        }
        st.grabs.push_back(Reservation {
            permit,
            _activity: activity,
        });
        self.push(st, &Packet::grab_job_uniq());
        None
    }

    /// The slot reserved by the grab a job assignment answers, counted as running (`None`
    /// when there was no grab outstanding, which never happens with a well-behaved server).
    fn take_reservation(&self) -> Option<Reservation> {
        let mut st = self.lock();
        st.wants_grab = true;
        let r = st.grabs.pop_front();
        if r.is_some() {
            st.running += 1;
        }
        r
    }

    /// Writes what the socket takes now. A full socket leaves the rest to the session task; a
    /// failure is kept for it.
    fn write_now(&self, st: &mut OutState) {
        if st.blocked || st.failed.is_some() {
            return;
        }
        let Some(stream) = st.stream.clone() else {
            st.buf.clear();
            return;
        };
        while !st.buf.is_empty() {
            match stream.try_write(&st.buf) {
                Ok(0) => {
                    st.failed = Some(std::io::ErrorKind::WriteZero.into());
                    self.kick.notify_one();
                    return;
                }
                Ok(n) => st.buf.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    st.blocked = true;
                    self.kick.notify_one();
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    st.failed = Some(e);
                    self.kick.notify_one();
                    return;
                }
            }
        }
        st.linger = None;
    }

    /// Writes everything buffered, waiting for the socket as needed (session task only).
    async fn finish_writes(&self, stream: &TcpStream) -> Result<()> {
        self.write_now(&mut self.lock());
        loop {
            {
                let mut st = self.lock();
                if let Some(e) = st.failed.take() {
                    return Err(e.into());
                }
                if !st.blocked {
                    return Ok(());
                }
            }
            stream.writable().await?;
            self.writable_again();
        }
    }

    /// The socket takes data again after a blocked write: write what waits.
    fn writable_again(&self) {
        let mut st = self.lock();
        st.blocked = false;
        self.write_now(&mut st);
    }

    /// Ends the session's side: no more writes, running jobs told through their hooks.
    fn close(&self) {
        let hooks = {
            let mut st = self.lock();
            st.stream = None;
            st.buf.clear();
            st.grabs.clear();
            std::mem::take(&mut st.lost_hooks)
        };
        for (_, hook) in hooks {
            hook();
        }
    }
}

/// Most bytes read from a socket at once.
const READ_CHUNK: usize = 16 * 1024;

/// The read side of a session's socket (the write side lives in its [`Outbox`]).
struct ReadSide(Arc<TcpStream>);

impl AsyncRead for ReadSide {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            std::task::ready!(self.0.poll_read_ready(cx))?;
            // Safe code must initialise what it reads into; a bounded piece keeps that cheap
            // when the read buffer has grown for a large packet.
            let n = buf.remaining().min(READ_CHUNK);
            match self.0.try_read(buf.initialize_unfilled_to(n)) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

struct JobState {
    server: ServerId,
    handle: Bytes,
    role: Role,
    /// The session that assigned the job.
    outbox: Arc<Outbox>,
    finished: AtomicBool,
    /// The job's slot; released (or handed to the next grab) by the terminal packet.
    slot: Mutex<Option<OwnedSemaphorePermit>>,
    slots: Arc<Slots>,
    max_grabs: usize,
    max_body: usize,
    shared: Arc<Shared>,
    _activity: ActivityGuard,
}

impl JobState {
    fn send_progress(&self, packet: Packet) -> bool {
        if self.finished.load(Ordering::Acquire) {
            debug!(
                server = %self.server,
                handle = %String::from_utf8_lossy(&self.handle),
                packet = %packet.kind,
                "job already finished; dropping report"
            );
            return false;
        }
        let mut st = self.outbox.lock();
        if st.stream.is_none() {
            drop(st);
            self.gone(packet.kind);
            return false;
        }
        let queued = self.outbox.push(&mut st, &packet);
        if queued && st.linger.is_none() && !st.blocked {
            st.linger = Some(Instant::now() + PROGRESS_LINGER);
            self.outbox.kick.notify_one();
        }
        queued
    }

    fn gone(&self, kind: PacketType) {
        warn!(
            server = %self.server,
            handle = %String::from_utf8_lossy(&self.handle),
            packet = %kind,
            "connection that assigned the job is gone; dropping report"
        );
    }

    /// Sends the job's last packets, at most once per job, and frees its slot: straight into a
    /// new grab on the same connection (in the same write) when this connection may grab and no
    /// other connection waits for a slot, else back to the budget.
    fn terminal(&self, packets: &[Packet]) -> bool {
        let kind = packets.last().map(|p| p.kind);
        if self.finished.swap(true, Ordering::AcqRel) {
            warn!(
                server = %self.server,
                handle = %String::from_utf8_lossy(&self.handle),
                packet = ?kind,
                "job already finished; dropping second terminal packet"
            );
            return false;
        }
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Declared before the lock so that it is dropped after it: a hook may own anything.
        let _hook;
        let mut st = self.outbox.lock();
        _hook = st.lost_hooks.remove(&self.handle);
        st.running = st.running.saturating_sub(1);
        if st.stream.is_none() {
            drop(st);
            if let Some(kind) = kind {
                self.gone(kind);
            }
            return false;
        }
        let mut sent = true;
        for p in packets {
            sent &= self.outbox.push(&mut st, p);
        }
        let grabbing = self.role == Role::Control || *self.shared.grabbing.borrow();
        if grabbing
            && st.wants_grab
            && st.grabs.len() + st.running < self.max_grabs
            && self.slots.waiting.load(Ordering::Acquire) == 0
        {
            if let Some(permit) = slot.take() {
                slot = self
                    .outbox
                    .queue_grab(&mut st, &self.shared, self.role, permit);
            }
        }
        self.outbox.write_now(&mut st);
        drop(st);
        if slot.is_some() {
            // The slot goes back to the budget: another connection may take it, and this one
            // may want to grab again once the server has work.
            drop(slot);
            self.outbox.kick.notify_one();
        }
        sent
    }
}

impl Drop for JobState {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::Acquire) {
            warn!(
                server = %self.server,
                handle = %String::from_utf8_lossy(&self.handle),
                "job ended without a result; sending WORK_FAIL"
            );
            self.terminal(&[Packet::work_fail(self.handle.clone())]);
        }
        self.shared.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sends a job's progress and result to the server that assigned it. Cheap to clone, `Send`,
/// usable from any thread: packets are written by the calling thread.
///
/// Every method returns whether the packet was queued on the job's connection. Packets are
/// dropped (with a log line) after the terminal packet, when the connection that assigned the job
/// is gone, or when the data would exceed the packet-size limit (an over-large terminal payload
/// is turned into `WORK_FAIL` so the job still ends). Progress (`WORK_DATA`, `WORK_STATUS`,
/// `WORK_WARNING`) may wait up to [`PROGRESS_LINGER`] to share a write; terminal packets go at
/// once.
#[derive(Clone)]
pub struct JobReporter {
    state: Arc<JobState>,
}

impl fmt::Debug for JobReporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobReporter")
            .field("server", &self.state.server)
            .field("handle", &String::from_utf8_lossy(&self.state.handle))
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl JobReporter {
    /// The server that assigned the job.
    pub fn server(&self) -> &ServerId {
        &self.state.server
    }

    /// The job handle.
    pub fn handle(&self) -> &Bytes {
        &self.state.handle
    }

    /// Whether a terminal packet was sent (or attempted).
    pub fn is_finished(&self) -> bool {
        self.state.finished.load(Ordering::Acquire)
    }

    /// Whether the connection that assigned the job is still up.
    pub fn is_connected(&self) -> bool {
        self.state.outbox.lock().stream.is_some()
    }

    /// Runs `hook` once if the connection that assigned the job is lost before the job ends
    /// (gearmand then gives the job to another worker, so it may be wise to abort): at once if
    /// it is already gone. The hook runs on the connection's task and must not block; it must
    /// not hold this reporter (that would keep the job alive).
    pub fn on_connection_lost(&self, hook: impl FnOnce() + Send + 'static) {
        let mut st = self.state.outbox.lock();
        if st.stream.is_none() {
            drop(st);
            hook();
        } else if !self.is_finished() {
            let replaced = st
                .lost_hooks
                .insert(self.state.handle.clone(), Box::new(hook));
            drop(st);
            drop(replaced);
        }
    }

    fn fits(&self, data: &Bytes) -> bool {
        // handle + NUL + data (+ a little for WORK_STATUS numbers) must fit the limit.
        self.state.handle.len() + 1 + data.len() <= self.state.max_body
    }

    /// `WORK_DATA` (Zuul: JSON with `name`, `number`, `manager`, `url`, ... and at the end
    /// `result`).
    pub fn work_data(&self, data: impl Into<Bytes>) -> bool {
        let data = data.into();
        if !self.fits(&data) {
            error!(
                len = data.len(),
                "WORK_DATA too large for the packet limit; dropped"
            );
            return false;
        }
        self.state
            .send_progress(Packet::work_data(self.state.handle.clone(), data))
    }

    /// `WORK_WARNING`.
    pub fn work_warning(&self, data: impl Into<Bytes>) -> bool {
        let data = data.into();
        if !self.fits(&data) {
            error!(
                len = data.len(),
                "WORK_WARNING too large for the packet limit; dropped"
            );
            return false;
        }
        self.state
            .send_progress(Packet::work_warning(self.state.handle.clone(), data))
    }

    /// `WORK_STATUS numerator/denominator`.
    pub fn work_status(&self, numerator: u64, denominator: u64) -> bool {
        self.state.send_progress(Packet::work_status(
            self.state.handle.clone(),
            numerator,
            denominator,
        ))
    }

    /// Ends the job with `packets(handle, data)`, or with a plain `WORK_FAIL` (logged as
    /// `what`) when `data` would exceed the packet limit, so that the job still ends.
    fn terminal_with<const N: usize>(
        &self,
        data: Bytes,
        what: &str,
        packets: impl FnOnce(Bytes, Bytes) -> [Packet; N],
    ) -> bool {
        if !self.fits(&data) {
            error!(len = data.len(), "{what}");
            return self.fail();
        }
        self.state
            .terminal(&packets(self.state.handle.clone(), data))
    }

    /// `WORK_COMPLETE` with `data` (Zuul reads a non-empty payload as the last work data, so it
    /// must then carry `result`). Terminal: frees the slot.
    pub fn complete(&self, data: impl Into<Bytes>) -> bool {
        self.terminal_with(
            data.into(),
            "WORK_COMPLETE too large for the packet limit; failing the job",
            |handle, data| [Packet::work_complete(handle, data)],
        )
    }

    /// `WORK_DATA` with `data`, then `WORK_COMPLETE` with the same `data`, in one write (how a
    /// Zuul build reports SUCCESS). Terminal: frees the slot.
    pub fn data_and_complete(&self, data: impl Into<Bytes>) -> bool {
        self.terminal_with(
            data.into(),
            "WORK_COMPLETE too large for the packet limit; failing the job",
            |handle, data| {
                [
                    Packet::work_data(handle.clone(), data.clone()),
                    Packet::work_complete(handle, data),
                ]
            },
        )
    }

    /// `WORK_DATA` with `data`, then `WORK_FAIL`, in one write (how a Zuul build reports any
    /// other result). Terminal: frees the slot.
    pub fn data_and_fail(&self, data: impl Into<Bytes>) -> bool {
        self.terminal_with(
            data.into(),
            "WORK_DATA too large for the packet limit; failing the job without it",
            |handle, data| {
                [
                    Packet::work_data(handle.clone(), data),
                    Packet::work_fail(handle),
                ]
            },
        )
    }

    /// `WORK_FAIL`. Terminal: frees the slot.
    pub fn fail(&self) -> bool {
        self.state
            .terminal(&[Packet::work_fail(self.state.handle.clone())])
    }

    /// `WORK_EXCEPTION` with `data`. Terminal: frees the slot.
    ///
    /// Prefer [`JobReporter::fail`] for Zuul: both servers end the job at the exception, but
    /// gearmand (1.1.20) forwards it only to clients that enabled the `exceptions` option and
    /// sends nothing at all to the others (Zuul's `gear` client included), which then wait until
    /// their status poll finds the job gone. A `WORK_FAIL` after it would only earn an
    /// `ERROR JOB_NOT_FOUND`.
    pub fn exception(&self, data: impl Into<Bytes>) -> bool {
        self.terminal_with(
            data.into(),
            "WORK_EXCEPTION too large for the packet limit; failing the job",
            |handle, data| [Packet::work_exception(handle, data)],
        )
    }
}

/// Counts "busy" things (normal grabs in flight + running jobs) for [`Worker::wait_idle`].
struct ActivityGuard {
    activity: Arc<watch::Sender<usize>>,
}

impl ActivityGuard {
    fn new(activity: &Arc<watch::Sender<usize>>) -> Self {
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
struct Reservation {
    permit: OwnedSemaphorePermit,
    _activity: Option<ActivityGuard>,
}

/// The slot budget of one role, over all servers, and how many connections wait for a slot
/// (an ending job hands its slot to a new grab on its own connection only when none waits, so
/// that no server starves).
struct Slots {
    sem: Arc<Semaphore>,
    waiting: AtomicUsize,
}

impl Slots {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Slots {
            sem: Arc::new(Semaphore::new(n)),
            waiting: AtomicUsize::new(0),
        })
    }

    /// Waits for a slot, counted in `waiting` while it waits (cancel-safe).
    async fn acquire(&self) -> std::result::Result<OwnedSemaphorePermit, AcquireError> {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Normal,
    Control,
}

struct ConnSpec {
    server: ServerId,
    role: Role,
    client_id: Bytes,
    functions: Vec<Bytes>,
    slots: Arc<Slots>,
    /// How many grabs may be outstanding at once on this connection (its role's slot count).
    max_grabs: usize,
}

struct Shared {
    config: WorkerConfig,
    handler: Arc<dyn JobHandler>,
    grabbing: watch::Sender<bool>,
    activity: Arc<watch::Sender<usize>>,
    running: AtomicUsize,
    registered: AtomicUsize,
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
    /// [`Error::Config`] when the configuration is invalid.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn spawn<H: JobHandler>(config: WorkerConfig, handler: H) -> Result<Worker> {
        config.validate()?;
        let (grabbing, _) = watch::channel(true);
        let (activity, _) = watch::channel(0usize);
        let shared = Arc::new(Shared {
            handler: Arc::new(handler),
            grabbing,
            activity: Arc::new(activity),
            running: AtomicUsize::new(0),
            registered: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            config,
        });
        let cfg = &shared.config;
        let normal_slots = Slots::new(cfg.max_concurrent_jobs);
        let control_slots = Slots::new(cfg.max_concurrent_priority_jobs);
        let to_bytes =
            |fs: &[String]| -> Vec<Bytes> { fs.iter().map(|f| Bytes::from(f.clone())).collect() };
        let mut tasks = Vec::new();
        for (index, (host, port)) in cfg.servers.iter().enumerate() {
            let server = ServerId {
                index,
                host: Arc::from(host.as_str()),
                port: *port,
            };
            if !cfg.functions.is_empty() {
                let spec = ConnSpec {
                    server: server.clone(),
                    role: Role::Normal,
                    client_id: Bytes::from(cfg.client_id.clone()),
                    functions: to_bytes(&cfg.functions),
                    slots: normal_slots.clone(),
                    max_grabs: cfg.max_concurrent_jobs.max(1),
                };
                tasks.push(tokio::spawn(connection_task(shared.clone(), spec)));
            }
            if !cfg.priority_functions.is_empty() {
                let spec = ConnSpec {
                    server,
                    role: Role::Control,
                    client_id: Bytes::from(format!("{}{CONTROL_CLIENT_ID_SUFFIX}", cfg.client_id)),
                    functions: to_bytes(&cfg.priority_functions),
                    slots: control_slots.clone(),
                    max_grabs: cfg.max_concurrent_priority_jobs.max(1),
                };
                tasks.push(tokio::spawn(connection_task(shared.clone(), spec)));
            }
        }
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

/// Keeps one server connection of one role alive until shutdown.
async fn connection_task(shared: Arc<Shared>, spec: ConnSpec) {
    let cfg = &shared.config;
    let role = match spec.role {
        Role::Normal => "normal",
        Role::Control => "control",
    };
    let mut backoff = cfg.reconnect_initial;
    loop {
        let mut healthy = false;
        let started = Instant::now();
        match session(&shared, &spec, &mut healthy).await {
            Ok(SessionEnd::Shutdown) => return,
            Ok(SessionEnd::ServerClosed) => {
                warn!(server = %spec.server, role, "Gearman server closed the connection")
            }
            Err(e) => {
                // A server that keeps sending what we refuse must not make us reconnect at
                // once, again and again: a protocol error keeps the backoff growing.
                healthy &= !matches!(e, Error::Protocol(_));
                warn!(server = %spec.server, role, error = %e, "Gearman connection failed")
            }
        }
        if healthy || started.elapsed() >= cfg.reconnect_max {
            backoff = cfg.reconnect_initial;
        }
        debug!(server = %spec.server, role, delay = ?backoff, "reconnecting after delay");
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(cfg.reconnect_max);
    }
}

fn configure_socket(stream: &TcpStream, keepalive_idle: Duration) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(keepalive_idle)
        .with_interval(Duration::from_secs(10));
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "freebsd"
    ))]
    let keepalive = keepalive.with_retries(6);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

/// Decrements the registered-connections gauge when a registered session ends.
struct RegisteredGuard<'a>(&'a AtomicUsize);

impl Drop for RegisteredGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How a session ended without an error.
enum SessionEnd {
    /// The server closed the connection.
    ServerClosed,
    /// The worker is shutting down.
    Shutdown,
}

/// One connection's life: connect, register, grab and run jobs until the connection ends or the
/// worker shuts down (then reports already queued are flushed before closing).
async fn session(shared: &Arc<Shared>, spec: &ConnSpec, healthy: &mut bool) -> Result<SessionEnd> {
    let cfg = &shared.config;
    let host: &str = &spec.server.host;
    let connect = tokio::time::timeout(
        cfg.connect_timeout,
        TcpStream::connect((host, spec.server.port)),
    );
    let stream = tokio::select! {
        _ = shared.shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
        r = connect => r.map_err(|_| Error::Timeout(cfg.connect_timeout))??,
    };
    configure_socket(&stream, cfg.keepalive_idle)?;
    let stream = Arc::new(stream);
    let outbox = Arc::new(Outbox::new(stream.clone(), cfg.max_packet_body));
    // However the session ends, its jobs learn that their connection is gone.
    let _close = CloseOnDrop(&outbox);
    let mut reader = FramedRead::new(
        ReadSide(stream.clone()),
        WorkerCodec::new(cfg.max_packet_body),
    );

    {
        let mut st = outbox.lock();
        outbox.push(&mut st, &Packet::set_client_id(spec.client_id.clone()));
        for f in &spec.functions {
            outbox.push(&mut st, &Packet::can_do(f.clone()));
        }
    }
    outbox.finish_writes(&stream).await?;
    shared.registered.fetch_add(1, Ordering::AcqRel);
    let _registered = RegisteredGuard(&shared.registered);
    info!(
        server = %spec.server,
        client_id = %String::from_utf8_lossy(&spec.client_id),
        functions = spec.functions.len(),
        "connected to Gearman and registered"
    );

    let mut grabbing_rx = shared.grabbing.subscribe();
    loop {
        let grabbing_allowed = spec.role == Role::Control || *grabbing_rx.borrow_and_update();
        let (may_grab, linger, blocked) = {
            let mut st = outbox.lock();
            if let Some(e) = st.failed.take() {
                return Err(e.into());
            }
            (
                grabbing_allowed && st.wants_grab && st.grabs.len() + st.running < spec.max_grabs,
                st.linger,
                st.blocked,
            )
        };
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => {
                // Deliver what jobs already reported, then close.
                let flush = tokio::time::timeout(cfg.connect_timeout, outbox.finish_writes(&stream));
                flush.await.map_err(|_| Error::Timeout(cfg.connect_timeout))??;
                return Ok(SessionEnd::Shutdown);
            }
            incoming = reader.next() => {
                let Some(frame) = incoming else { return Ok(SessionEnd::ServerClosed) };
                let frame = frame?;
                *healthy = true;
                let packet = match frame {
                    Frame::Packet(packet) => packet,
                    Frame::OversizedJob(job) => {
                        refuse_oversized(shared, spec, &outbox, job);
                        continue;
                    }
                };
                match packet.kind {
                    PacketType::Noop => {
                        outbox.lock().wants_grab = true;
                    }
                    PacketType::NoJob => {
                        let mut st = outbox.lock();
                        st.grabs.pop_front();
                        st.wants_grab = false;
                        // Sleep only once every grab is answered: the server handles packets
                        // in order, so an earlier PRE_SLEEP would race the grabs still queued.
                        if st.grabs.is_empty() {
                            outbox.push(&mut st, &Packet::pre_sleep());
                            outbox.write_now(&mut st);
                        }
                    }
                    PacketType::JobAssignUniq | PacketType::JobAssign => {
                        match outbox.take_reservation() {
                            Some(reservation) => {
                                start_job(shared, spec, &outbox, packet, reservation.permit);
                            }
                            None => {
                                // Never expected: we only grab with a reserved slot.
                                error!(server = %spec.server, ?packet, "job assigned without a grab; failing it");
                                let mut st = outbox.lock();
                                outbox.push(&mut st, &Packet::work_fail(packet.arg_bytes(0)));
                                outbox.write_now(&mut st);
                            }
                        }
                    }
                    PacketType::Error => {
                        warn!(
                            server = %spec.server,
                            code = %String::from_utf8_lossy(packet.arg(0)),
                            text = %String::from_utf8_lossy(packet.arg(1)).trim_end_matches('\0'),
                            "Gearman server sent ERROR"
                        );
                    }
                    PacketType::Unknown(code) => {
                        debug!(server = %spec.server, code, "skipping unknown packet type");
                    }
                    other => {
                        debug!(server = %spec.server, packet = %other, "ignoring unexpected packet");
                    }
                }
            }
            _ = outbox.kick.notified() => {
                // Re-evaluate linger, blocked writes, errors and `may_grab` at the top.
            }
            r = stream.writable(), if blocked => {
                r?;
                outbox.writable_again();
            }
            _ = tokio::time::sleep_until(linger.unwrap_or_else(Instant::now)), if linger.is_some() && !blocked => {
                let mut st = outbox.lock();
                if st.linger.is_some_and(|d| d <= Instant::now()) {
                    outbox.write_now(&mut st);
                }
            }
            _ = grabbing_rx.changed() => {
                // Re-evaluate `may_grab` at the top of the loop.
            }
            permit = spec.slots.acquire(), if may_grab => {
                let Ok(permit) = permit else {
                    return Err(Error::Closed);
                };
                let mut st = outbox.lock();
                // A permit handed back (grabbing stopped meanwhile) goes back to the budget.
                if outbox.queue_grab(&mut st, shared, spec.role, permit).is_none() {
                    outbox.write_now(&mut st);
                }
            }
        }
    }
}

/// Closes a session's outbox when the session ends, however it ends.
struct CloseOnDrop<'a>(&'a Outbox);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The reporter of a job assigned on `spec`'s session, holding its slot; the job counts as
/// running until the reporter's last clone is gone.
fn new_reporter(
    shared: &Arc<Shared>,
    spec: &ConnSpec,
    outbox: &Arc<Outbox>,
    handle: Bytes,
    permit: OwnedSemaphorePermit,
) -> JobReporter {
    shared.running.fetch_add(1, Ordering::AcqRel);
    JobReporter {
        state: Arc::new(JobState {
            server: spec.server.clone(),
            handle,
            role: spec.role,
            outbox: outbox.clone(),
            finished: AtomicBool::new(false),
            slot: Mutex::new(Some(permit)),
            slots: spec.slots.clone(),
            max_grabs: spec.max_grabs,
            max_body: shared.config.max_packet_body,
            shared: shared.clone(),
            _activity: ActivityGuard::new(&shared.activity),
        }),
    }
}

/// The `result` of a job whose data exceeded the packet limit (`max_packet_bytes` in the
/// daemon's configuration).
pub fn oversized_job_result(data_len: usize, max_body: usize) -> String {
    format!("FAILURE - job data of {data_len} bytes exceeds max_packet_bytes ({max_body})")
}

/// Fails a job whose assignment was too large to take (its data is already discarded): Zuul
/// gets a `result` saying why, the server gets `WORK_FAIL` (so it does not hand the job out
/// again), and the slot its grab reserved is free again.
fn refuse_oversized(
    shared: &Arc<Shared>,
    spec: &ConnSpec,
    outbox: &Arc<Outbox>,
    job: OversizedJob,
) {
    let result = oversized_job_result(job.data_len, shared.config.max_packet_body);
    warn!(
        server = %spec.server,
        handle = %String::from_utf8_lossy(&job.handle),
        function = %String::from_utf8_lossy(&job.function),
        unique = %String::from_utf8_lossy(&job.unique),
        "job refused: {result}"
    );
    let payload = serde_json::json!({ "result": result }).to_string();
    match outbox.take_reservation() {
        Some(reservation) => {
            new_reporter(shared, spec, outbox, job.handle, reservation.permit)
                .data_and_fail(payload);
        }
        None => {
            let mut st = outbox.lock();
            outbox.push(
                &mut st,
                &Packet::work_data(job.handle.clone(), Bytes::from(payload)),
            );
            outbox.push(&mut st, &Packet::work_fail(job.handle));
            outbox.write_now(&mut st);
        }
    }
}

fn start_job(
    shared: &Arc<Shared>,
    spec: &ConnSpec,
    outbox: &Arc<Outbox>,
    packet: Packet,
    permit: OwnedSemaphorePermit,
) {
    let (function, unique, data) = match packet.kind {
        PacketType::JobAssignUniq => (packet.arg(1), packet.arg_bytes(2), packet.arg_bytes(3)),
        _ => (packet.arg(1), Bytes::new(), packet.arg_bytes(2)),
    };
    let job = AssignedJob {
        server: spec.server.clone(),
        handle: packet.arg_bytes(0),
        function: String::from_utf8_lossy(function).into_owned(),
        unique,
        data,
        priority: spec.role == Role::Control,
    };
    debug!(
        server = %job.server,
        handle = %job.handle_str(),
        function = %job.function,
        unique = %String::from_utf8_lossy(&job.unique),
        "job assigned"
    );
    let reporter = new_reporter(shared, spec, outbox, job.handle.clone(), permit);
    let handler = shared.handler.clone();
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn validate_reports_every_problem() {
        let cfg = WorkerConfig {
            servers: vec![(String::new(), 0)],
            client_id: "a b".into(),
            functions: vec!["build:x".into(), "build:x".into(), String::new()],
            max_concurrent_jobs: 0,
            ..WorkerConfig::default()
        };
        let Err(Error::Config(msg)) = cfg.validate() else {
            panic!("expected a config error")
        };
        for needle in [
            "empty host",
            "port 0",
            "client id",
            "listed twice",
            "function name is empty",
            "max_concurrent_jobs",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing from {msg}");
        }
        let ok = WorkerConfig {
            servers: vec![("127.0.0.1".into(), 4730)],
            functions: vec!["build:x".into()],
            priority_functions: vec!["stop:th".into()],
            ..WorkerConfig::default()
        };
        ok.validate().unwrap();
    }

    #[test]
    fn server_id_display() {
        let s = ServerId {
            index: 0,
            host: Arc::from("::1"),
            port: 4730,
        };
        assert_eq!(s.to_string(), "[::1]:4730");
    }
}
