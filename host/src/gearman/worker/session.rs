//! One connection's life, again and again until shutdown: connect, register, then serve the
//! session (grab, hand jobs to the handler, write what waits) until the server or the worker
//! ends it; reconnect after a growing delay. Each step of a session is one function below.

use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, AcquireError, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tracing::{debug, error, info, warn};

use super::job::{self, AssignedJob};
use super::outbox::Outbox;
use super::reporter::JobReporter;
use super::settings::{ConnSpec, Role};
use super::Shared;
use crate::gearman::codec::{Frame, OversizedJob, WorkerCodec};
use crate::gearman::packet::{Packet, PacketType};
use crate::gearman::{Error, Result};

/// Most bytes read from a socket at once.
const READ_CHUNK: usize = 16 * 1024;

/// The `result` of a job whose data exceeded the packet limit (`max_packet_bytes` in the
/// daemon's configuration).
pub fn oversized_job_result(data_len: usize, max_body: usize) -> String {
    format!("FAILURE - job data of {data_len} bytes exceeds max_packet_bytes ({max_body})")
}

/// Keeps one server connection of one role alive until shutdown.
pub(super) async fn connection_task(shared: Arc<Shared>, spec: ConnSpec) {
    let cfg = &shared.config;
    let mut backoff = cfg.reconnect_initial;
    // Whether a session of this connection was ever registered: the next one is a reconnect.
    let mut registered_before = false;
    loop {
        let started = Instant::now();
        let Some(healthy) = run_session(&shared, &spec, &mut registered_before).await else {
            return;
        };
        if healthy || started.elapsed() >= cfg.reconnect_max {
            backoff = cfg.reconnect_initial;
        }
        let role = spec.role.name();
        debug!(server = %spec.server, role, delay = ?backoff, "reconnecting after delay");
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(cfg.reconnect_max);
    }
}

/// How a session ended without an error.
enum SessionEnd {
    /// The server closed the connection.
    ServerClosed,
    /// The worker is shutting down.
    Shutdown,
}

/// Runs one session and logs how it ended: `None` at shutdown, else whether the session was
/// healthy (it got a packet from the server, so the reconnect backoff starts over).
async fn run_session(
    shared: &Arc<Shared>,
    spec: &ConnSpec,
    registered_before: &mut bool,
) -> Option<bool> {
    let (end, heard) = match Session::open(shared, spec, registered_before).await {
        Ok(Some(mut session)) => (session.serve().await, session.heard),
        Ok(None) => return None,
        Err(e) => (Err(e), false),
    };
    let role = spec.role.name();
    match end {
        Ok(SessionEnd::Shutdown) => None,
        Ok(SessionEnd::ServerClosed) => {
            warn!(server = %spec.server, role, "Gearman server closed the connection");
            Some(heard)
        }
        Err(e) => {
            warn!(server = %spec.server, role, error = %e, "Gearman connection failed");
            // A server that keeps sending what we refuse must not make us reconnect at once,
            // again and again: a protocol error keeps the backoff growing.
            Some(heard && !matches!(e, Error::Protocol(_)))
        }
    }
}

/// A connected, registered session. Its fields drop in order: the registration gauge, the
/// read side, then the outbox is closed (its jobs learn that their connection is gone).
struct Session<'a> {
    shared: &'a Arc<Shared>,
    spec: &'a ConnSpec,
    /// Whether the server sent anything on this session.
    heard: bool,
    grabbing_rx: watch::Receiver<bool>,
    _registered: RegisteredGuard<'a>,
    reader: FramedRead<ReadSide, WorkerCodec>,
    outbox: CloseOnDrop,
    stream: Arc<TcpStream>,
}

/// What the session may wait for in one turn of its loop.
struct Turn {
    may_grab: bool,
    linger: Option<Instant>,
    blocked: bool,
}

impl<'a> Session<'a> {
    /// Connects and registers; `None` when the worker shuts down meanwhile. A registration
    /// after `registered_before` counts as a reconnect of the server.
    async fn open(
        shared: &'a Arc<Shared>,
        spec: &'a ConnSpec,
        registered_before: &mut bool,
    ) -> Result<Option<Session<'a>>> {
        let cfg = &shared.config;
        let Some(stream) = connect(shared, spec).await? else {
            return Ok(None);
        };
        let stream = Arc::new(stream);
        // However the session ends, from here on, its jobs learn that their connection is gone.
        let outbox = CloseOnDrop(Arc::new(Outbox::new(stream.clone(), cfg.max_packet_body)));
        let reader = FramedRead::new(
            ReadSide(stream.clone()),
            WorkerCodec::new(cfg.max_packet_body),
        );
        register(&outbox.0, &stream, spec).await?;
        let stats = shared.stats.server(spec.server.index);
        if std::mem::replace(registered_before, true) {
            if let Some(s) = stats {
                s.reconnects.fetch_add(1, Ordering::Relaxed);
            }
        }
        let session = Session {
            shared,
            spec,
            heard: false,
            grabbing_rx: shared.grabbing.subscribe(),
            _registered: RegisteredGuard::new(&shared.registered, stats.map(|s| &s.registered)),
            reader,
            outbox,
            stream,
        };
        info!(
            server = %spec.server,
            client_id = %String::from_utf8_lossy(&spec.client_id),
            functions = spec.functions.len(),
            "connected to Gearman and registered"
        );
        Ok(Some(session))
    }

    /// Grabs and runs jobs until the connection ends or the worker shuts down (then reports
    /// already queued are flushed before closing).
    async fn serve(&mut self) -> Result<SessionEnd> {
        loop {
            let turn = self.turn()?;
            let outbox = &self.outbox.0;
            let step = tokio::select! {
                biased;
                _ = self.shared.shutdown.cancelled() => return self.flush().await,
                incoming = self.reader.next() => self.on_frame(incoming)?,
                // Re-evaluate linger, blocked writes, errors and `may_grab` at the top.
                _ = outbox.kick.notified() => ControlFlow::Continue(()),
                r = self.stream.writable(), if turn.blocked => {
                    r?;
                    outbox.writable_again();
                    ControlFlow::Continue(())
                }
                _ = tokio::time::sleep_until(turn.linger.unwrap_or_else(Instant::now)),
                    if turn.linger.is_some() && !turn.blocked => {
                    outbox.write_if_lingered();
                    ControlFlow::Continue(())
                }
                // Re-evaluate `may_grab` at the top of the loop.
                _ = self.grabbing_rx.changed() => ControlFlow::Continue(()),
                permit = self.spec.slots.acquire(), if turn.may_grab => self.grab(permit)?,
            };
            if let ControlFlow::Break(end) = step {
                return Ok(end);
            }
        }
    }

    /// What this turn of the loop may wait for; the error a job's write left, if any.
    fn turn(&mut self) -> Result<Turn> {
        let grabbing = self.spec.role == Role::Control || *self.grabbing_rx.borrow_and_update();
        let mut st = self.outbox.0.lock();
        if let Some(e) = st.failed.take() {
            return Err(e.into());
        }
        Ok(Turn {
            may_grab: grabbing && st.has_room(self.spec.max_grabs),
            linger: st.linger,
            blocked: st.blocked,
        })
    }

    /// Delivers what jobs already reported, at shutdown.
    async fn flush(&self) -> Result<SessionEnd> {
        let timeout = self.shared.config.connect_timeout;
        let flush = tokio::time::timeout(timeout, self.outbox.0.finish_writes(&self.stream));
        flush.await.map_err(|_| Error::Timeout(timeout))??;
        Ok(SessionEnd::Shutdown)
    }

    /// Handles what the server sent: a packet, a job too large to take, or the end.
    fn on_frame(&mut self, incoming: Option<Result<Frame>>) -> Result<ControlFlow<SessionEnd>> {
        let Some(frame) = incoming else {
            return Ok(ControlFlow::Break(SessionEnd::ServerClosed));
        };
        let frame = frame?;
        self.heard = true;
        match frame {
            Frame::Packet(packet) => self.on_packet(packet),
            Frame::OversizedJob(job) => self.refuse_oversized(job),
        }
        Ok(ControlFlow::Continue(()))
    }

    fn on_packet(&self, packet: Packet) {
        let server = &self.spec.server;
        match packet.kind {
            PacketType::Noop => self.outbox.0.lock().wants_grab = true,
            PacketType::NoJob => self.outbox.0.no_job(),
            PacketType::JobAssignUniq | PacketType::JobAssign => self.on_assigned(packet),
            PacketType::Error => warn!(
                %server,
                code = %String::from_utf8_lossy(packet.arg(0)),
                text = %String::from_utf8_lossy(packet.arg(1)).trim_end_matches('\0'),
                "Gearman server sent ERROR"
            ),
            PacketType::Unknown(code) => debug!(%server, code, "skipping unknown packet type"),
            other => debug!(%server, packet = %other, "ignoring unexpected packet"),
        }
    }

    /// Starts an assigned job on the slot its grab reserved.
    fn on_assigned(&self, packet: Packet) {
        // Kept until the job's reporter counts it as activity, so that the worker never looks
        // idle in between.
        let Some(reservation) = self.outbox.0.take_reservation() else {
            // Never expected: we only grab with a reserved slot.
            error!(server = %self.spec.server, ?packet, "job assigned without a grab; failing it");
            self.outbox.0.send([Packet::work_fail(packet.arg_bytes(0))]);
            return;
        };
        let priority = self.spec.role == Role::Control;
        let job = AssignedJob::from_assignment(&self.spec.server, &packet, priority);
        let reporter = self.reporter(job.handle.clone(), reservation.permit);
        job::start(self.shared.handler.clone(), job, reporter);
    }

    /// Fails a job whose assignment was too large to take (its data is already discarded):
    /// Zuul gets a `result` saying why, the server gets `WORK_FAIL` (so it does not hand the
    /// job out again), and the slot its grab reserved is free again.
    fn refuse_oversized(&self, job: OversizedJob) {
        let result = oversized_job_result(job.data_len, self.shared.config.max_packet_body);
        if let Some(s) = self.shared.stats.server(self.spec.server.index) {
            s.oversized_jobs.fetch_add(1, Ordering::Relaxed);
        }
        warn!(
            server = %self.spec.server,
            handle = %String::from_utf8_lossy(&job.handle),
            function = %String::from_utf8_lossy(&job.function),
            unique = %String::from_utf8_lossy(&job.unique),
            "job refused: {result}"
        );
        let payload = serde_json::json!({ "result": result }).to_string();
        match self.outbox.0.take_reservation() {
            Some(reservation) => {
                self.reporter(job.handle, reservation.permit)
                    .data_and_fail(payload);
            }
            None => self.outbox.0.send([
                Packet::work_data(job.handle.clone(), Bytes::from(payload)),
                Packet::work_fail(job.handle),
            ]),
        }
    }

    fn reporter(&self, handle: Bytes, permit: OwnedSemaphorePermit) -> JobReporter {
        JobReporter::new(self.shared, self.spec, &self.outbox.0, handle, permit)
    }

    /// Sends a grab on the slot just reserved (handed back when grabbing stopped meanwhile).
    fn grab(
        &self,
        permit: std::result::Result<OwnedSemaphorePermit, AcquireError>,
    ) -> Result<ControlFlow<SessionEnd>> {
        let permit = permit.map_err(|_| Error::Closed)?;
        let outbox = &self.outbox.0;
        let mut st = outbox.lock();
        if outbox
            .queue_grab(&mut st, self.shared, self.spec.role, permit)
            .is_none()
        {
            outbox.write_now(&mut st);
        }
        Ok(ControlFlow::Continue(()))
    }
}

/// Connects to `spec`'s server (bounded by the connect timeout); `None` at shutdown.
async fn connect(shared: &Shared, spec: &ConnSpec) -> Result<Option<TcpStream>> {
    let cfg = &shared.config;
    let host: &str = &spec.server.host;
    let connect = tokio::time::timeout(
        cfg.connect_timeout,
        TcpStream::connect((host, spec.server.port)),
    );
    let stream = tokio::select! {
        _ = shared.shutdown.cancelled() => return Ok(None),
        r = connect => r.map_err(|_| Error::Timeout(cfg.connect_timeout))??,
    };
    configure_socket(&stream, cfg.keepalive_idle)?;
    Ok(Some(stream))
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

/// Sends `SET_CLIENT_ID` and one `CAN_DO` per function, and waits until they are written.
async fn register(outbox: &Outbox, stream: &TcpStream, spec: &ConnSpec) -> Result<()> {
    let functions = spec.functions.iter().map(|f| Packet::can_do(f.clone()));
    outbox.send(std::iter::once(Packet::set_client_id(spec.client_id.clone())).chain(functions));
    outbox.finish_writes(stream).await
}

/// Counts a registered session in the worker's gauge (and its server's) while it lives.
struct RegisteredGuard<'a>(&'a AtomicUsize, Option<&'a AtomicUsize>);

impl<'a> RegisteredGuard<'a> {
    fn new(registered: &'a AtomicUsize, server: Option<&'a AtomicUsize>) -> Self {
        registered.fetch_add(1, Ordering::AcqRel);
        if let Some(s) = server {
            s.fetch_add(1, Ordering::AcqRel);
        }
        RegisteredGuard(registered, server)
    }
}

impl Drop for RegisteredGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        if let Some(s) = self.1 {
            s.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A session's outbox, closed when the session ends, however it ends.
struct CloseOnDrop(Arc<Outbox>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

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
