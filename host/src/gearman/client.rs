//! A minimal async Gearman client: submit foreground jobs and follow their events.
//!
//! One TCP connection (TCP_NODELAY) carries any number of outstanding jobs. The server answers
//! submissions with `JOB_CREATED` in the order they were sent, so pending submissions wait in a
//! FIFO; afterwards events are routed by job handle. gearmand merges submissions with the same
//! function and unique into one job, so one handle may have several subscribers.
//!
//! Used by tests and tools (the daemon itself is a worker); it is the shape Zuul uses to submit.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::codec::{PacketCodec, DEFAULT_MAX_BODY};
use super::error::{Error, Result};
use super::packet::{Packet, PacketType};

/// Queue priority of a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// `SUBMIT_JOB`.
    #[default]
    Normal,
    /// `SUBMIT_JOB_HIGH` (Zuul uses it for `stop:` jobs).
    High,
    /// `SUBMIT_JOB_LOW`.
    Low,
}

impl Priority {
    fn packet_type(self) -> PacketType {
        match self {
            Priority::Normal => PacketType::SubmitJob,
            Priority::High => PacketType::SubmitJobHigh,
            Priority::Low => PacketType::SubmitJobLow,
        }
    }
}

/// Something a worker reported about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    /// `WORK_DATA`.
    Data(Bytes),
    /// `WORK_WARNING`.
    Warning(Bytes),
    /// `WORK_STATUS` (unparsable numbers are reported as 0).
    Status {
        /// Work done so far, out of `denominator`.
        numerator: u64,
        denominator: u64,
    },
    /// `WORK_COMPLETE` (terminal).
    Complete(Bytes),
    /// `WORK_FAIL` (terminal).
    Fail,
    /// `WORK_EXCEPTION` (terminal).
    Exception(Bytes),
}

impl JobEvent {
    /// Whether this event ends the job.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobEvent::Complete(_) | JobEvent::Fail | JobEvent::Exception(_)
        )
    }
}

/// The answer to `GET_STATUS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// The server knows the handle.
    pub known: bool,
    /// A worker is running it.
    pub running: bool,
    /// Last reported numerator.
    pub numerator: u64,
    /// Last reported denominator.
    pub denominator: u64,
}

type EventTx = mpsc::UnboundedSender<JobEvent>;

#[derive(Default)]
struct State {
    closed: bool,
    submits: VecDeque<(oneshot::Sender<Result<Bytes>>, EventTx)>,
    jobs: HashMap<Bytes, Vec<EventTx>>,
    statuses: HashMap<Bytes, VecDeque<oneshot::Sender<JobStatus>>>,
}

struct Inner {
    state: Mutex<State>,
    write_tx: mpsc::UnboundedSender<Packet>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update; the maps stay usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(|e| e.into_inner());
        for t in tasks.drain(..) {
            t.abort();
        }
    }
}

/// A client connection. Cheap to clone; the connection closes when the last clone and the last
/// [`SubmittedJob`] are dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A submitted job: its handle and the stream of its events.
pub struct SubmittedJob {
    handle: Bytes,
    events: mpsc::UnboundedReceiver<JobEvent>,
    _conn: Arc<Inner>,
}

impl SubmittedJob {
    /// The job handle the server assigned.
    pub fn handle(&self) -> &Bytes {
        &self.handle
    }

    /// The next event; `None` once the job ended (after its terminal event) or the connection
    /// was lost (then without a terminal event).
    pub async fn next_event(&mut self) -> Option<JobEvent> {
        self.events.recv().await
    }

    /// Collects every event up to and including the terminal one.
    ///
    /// # Errors
    /// [`Error::Closed`] if the connection ends before the job does.
    pub async fn wait(mut self) -> Result<Vec<JobEvent>> {
        let mut all = Vec::new();
        while let Some(ev) = self.events.recv().await {
            let done = ev.is_terminal();
            all.push(ev);
            if done {
                return Ok(all);
            }
        }
        Err(Error::Closed)
    }
}

impl Client {
    /// Connects to `host:port` with the default packet-size limit.
    ///
    /// # Errors
    /// [`Error::Io`] when the connection fails.
    pub async fn connect(host: &str, port: u16) -> Result<Client> {
        Client::connect_with_limit(host, port, DEFAULT_MAX_BODY).await
    }

    /// Connects to `host:port`, refusing packets with bodies over `max_body` bytes.
    ///
    /// # Errors
    /// [`Error::Io`] when the connection fails.
    pub async fn connect_with_limit(host: &str, port: u16, max_body: usize) -> Result<Client> {
        let stream = TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        let (write_tx, write_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            write_tx,
            tasks: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&inner);
        let reader = tokio::spawn(read_loop(
            FramedRead::new(rd, PacketCodec::new(max_body)),
            weak.clone(),
        ));
        let writer = tokio::spawn(write_loop(
            FramedWrite::new(wr, PacketCodec::new(max_body)),
            write_rx,
            weak,
        ));
        inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([reader, writer]);
        Ok(Client { inner })
    }

    /// Submits a foreground job and waits for its `JOB_CREATED`.
    ///
    /// # Errors
    /// [`Error::Closed`] if the connection is gone, [`Error::Server`] if the server refused the
    /// submission with an `ERROR` packet, [`Error::Protocol`] if an argument contains NUL.
    pub async fn submit(
        &self,
        function: &str,
        unique: &str,
        data: impl Into<Bytes>,
        priority: Priority,
    ) -> Result<SubmittedJob> {
        if function.contains('\0') || unique.contains('\0') {
            return Err(Error::protocol("function and unique must not contain NUL"));
        }
        let packet = Packet::submit(
            priority.packet_type(),
            Bytes::copy_from_slice(function.as_bytes()),
            Bytes::copy_from_slice(unique.as_bytes()),
            data.into(),
        );
        let (created_tx, created_rx) = oneshot::channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        {
            // Queue the waiter and the packet under one lock so their orders agree.
            let mut st = self.inner.state();
            if st.closed {
                return Err(Error::Closed);
            }
            st.submits.push_back((created_tx, events_tx));
            self.inner
                .write_tx
                .send(packet)
                .map_err(|_| Error::Closed)?;
        }
        let handle = created_rx.await.map_err(|_| Error::Closed)??;
        Ok(SubmittedJob {
            handle,
            events: events_rx,
            _conn: self.inner.clone(),
        })
    }

    /// Asks the server about a job handle (`GET_STATUS`), as Zuul does every 300 s.
    ///
    /// # Errors
    /// [`Error::Closed`] if the connection is gone.
    pub async fn get_status(&self, handle: &[u8]) -> Result<JobStatus> {
        let handle = Bytes::copy_from_slice(handle);
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.inner.state();
            if st.closed {
                return Err(Error::Closed);
            }
            st.statuses.entry(handle.clone()).or_default().push_back(tx);
            self.inner
                .write_tx
                .send(Packet::get_status(handle))
                .map_err(|_| Error::Closed)?;
        }
        rx.await.map_err(|_| Error::Closed)
    }
}

fn parse_u64(b: &[u8]) -> u64 {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Marks the connection closed and fails everything waiting on it.
fn close(inner: &std::sync::Weak<Inner>) {
    if let Some(inner) = inner.upgrade() {
        let mut st = inner.state();
        st.closed = true;
        for (tx, _) in st.submits.drain(..) {
            let _ = tx.send(Err(Error::Closed));
        }
        st.jobs.clear();
        st.statuses.clear();
    }
}

async fn write_loop(
    mut sink: FramedWrite<OwnedWriteHalf, PacketCodec>,
    mut rx: mpsc::UnboundedReceiver<Packet>,
    inner: std::sync::Weak<Inner>,
) {
    while let Some(p) = rx.recv().await {
        let mut res = sink.feed(p).await;
        while res.is_ok() {
            match rx.try_recv() {
                Ok(p) => res = sink.feed(p).await,
                Err(_) => break,
            }
        }
        if let Err(e) = res.and(sink.flush().await) {
            tracing::warn!(error = %e, "gearman client: write failed");
            break;
        }
    }
    close(&inner);
}

async fn read_loop(
    mut stream: FramedRead<OwnedReadHalf, PacketCodec>,
    inner: std::sync::Weak<Inner>,
) {
    while let Some(next) = stream.next().await {
        let packet = match next {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "gearman client: read failed");
                break;
            }
        };
        let Some(inner) = inner.upgrade() else { return };
        let mut st = inner.state();
        dispatch(&mut st, packet);
    }
    close(&inner);
}

fn dispatch(st: &mut State, p: Packet) {
    let handle = p.arg_bytes(0);
    let event = match p.kind {
        PacketType::JobCreated => {
            match st.submits.pop_front() {
                Some((created, events)) => {
                    if created.send(Ok(handle.clone())).is_ok() {
                        st.jobs.entry(handle).or_default().push(events);
                    }
                }
                None => tracing::warn!(?p, "gearman client: JOB_CREATED without a submission"),
            }
            return;
        }
        PacketType::Error => {
            let err = Error::Server {
                code: String::from_utf8_lossy(p.arg(0)).into_owned(),
                text: String::from_utf8_lossy(p.arg(1))
                    .trim_end_matches('\0')
                    .to_string(),
            };
            // gearmand answers a refused submission with ERROR instead of JOB_CREATED.
            match st.submits.pop_front() {
                Some((created, _)) => {
                    let _ = created.send(Err(err));
                }
                None => tracing::warn!(error = %err, "gearman client: server error"),
            }
            return;
        }
        PacketType::StatusRes => {
            if let Some(q) = st.statuses.get_mut(&handle) {
                if let Some(tx) = q.pop_front() {
                    let _ = tx.send(JobStatus {
                        known: p.arg(1) == b"1",
                        running: p.arg(2) == b"1",
                        numerator: parse_u64(p.arg(3)),
                        denominator: parse_u64(p.arg(4)),
                    });
                }
                if q.is_empty() {
                    st.statuses.remove(&handle);
                }
            }
            return;
        }
        PacketType::WorkData => JobEvent::Data(p.arg_bytes(1)),
        PacketType::WorkWarning => JobEvent::Warning(p.arg_bytes(1)),
        PacketType::WorkStatus => JobEvent::Status {
            numerator: parse_u64(p.arg(1)),
            denominator: parse_u64(p.arg(2)),
        },
        PacketType::WorkComplete => JobEvent::Complete(p.arg_bytes(1)),
        PacketType::WorkFail => JobEvent::Fail,
        PacketType::WorkException => JobEvent::Exception(p.arg_bytes(1)),
        other => {
            tracing::debug!(packet = %other, "gearman client: ignoring packet");
            return;
        }
    };
    let terminal = event.is_terminal();
    if let Some(subs) = st.jobs.get_mut(&handle) {
        subs.retain(|tx| tx.send(event.clone()).is_ok());
        if terminal || subs.is_empty() {
            st.jobs.remove(&handle);
        }
    } else {
        tracing::debug!(handle = %String::from_utf8_lossy(&handle), "gearman client: event for unknown job");
    }
}
