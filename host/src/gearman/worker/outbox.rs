//! The write side of one session, shared by the session task and every job it assigned (jobs
//! report from any thread). Packets are encoded into one buffer and written by the thread that
//! reports them, without a hand-over to the runtime; only what the socket cannot take at once
//! is left to the session task, which finishes it once the socket is writable. The outbox also
//! keeps the session's grab state (grabs in flight with their slots, jobs running), which the
//! session and its jobs change under the same lock as the writes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tracing::error;

use super::settings::Role;
use super::slots::{ActivityGuard, Reservation};
use super::Shared;
use crate::gearman::codec::PacketCodec;
use crate::gearman::packet::Packet;
use crate::gearman::Result;

/// How long a job's progress packets (`WORK_DATA`, `WORK_STATUS`, `WORK_WARNING`) may wait in
/// the connection's buffer for company before they are sent. A job that ends within it goes out
/// in one write, start data to result (the server and the client then wake once per job, not
/// twice); for a real build the start data is late by this much at most. Terminal packets and
/// grabs are sent at once, and take whatever waits with them.
pub(super) const PROGRESS_LINGER: Duration = Duration::from_millis(5);

/// What to do with a job when its connection is lost.
type LostHook = Box<dyn FnOnce() + Send>;

pub(super) struct Outbox {
    state: Mutex<OutState>,
    /// Wakes the session task: a linger to arm, a write to finish, a slot freed, an error.
    pub(super) kick: Notify,
    codec: PacketCodec,
}

pub(super) struct OutState {
    /// The socket; `None` once the session ended (reports are then dropped).
    pub(super) stream: Option<Arc<TcpStream>>,
    /// Encoded packets not yet written.
    buf: BytesMut,
    /// When the progress waiting in `buf` must be written (see [`PROGRESS_LINGER`]).
    pub(super) linger: Option<Instant>,
    /// A write found the socket full; the session task writes the rest once it is writable.
    pub(super) blocked: bool,
    /// A write failed; the session ends with this error.
    pub(super) failed: Option<std::io::Error>,
    /// Grabs in flight, each with its reserved slot; the server answers them in order.
    grabs: VecDeque<Reservation>,
    /// Whether the server may have jobs for us (false from `NO_JOB` to `NOOP`).
    pub(super) wants_grab: bool,
    /// Jobs assigned on this session that have not sent their terminal packet.
    pub(super) running: usize,
    /// Per running job (by handle): what to do if the connection is lost.
    pub(super) lost_hooks: HashMap<Bytes, LostHook>,
}

impl OutState {
    /// Whether another grab may go out: the server may have work and fewer than `max_grabs`
    /// grabs and jobs of this session are under way.
    pub(super) fn has_room(&self, max_grabs: usize) -> bool {
        self.wants_grab && self.grabs.len() + self.running < max_grabs
    }
}

impl Outbox {
    pub(super) fn new(stream: Arc<TcpStream>, max_body: usize) -> Self {
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

    pub(super) fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Encodes `packet` into the buffer; false (logged) when it cannot be encoded.
    pub(super) fn push(&self, st: &mut OutState, packet: &Packet) -> bool {
        match self.codec.encode_ref(packet, &mut st.buf) {
            Ok(()) => true,
            Err(e) => {
                error!(packet = %packet.kind, "cannot encode packet, dropped: {e}");
                false
            }
        }
    }

    /// Queues `packets` and writes what the socket takes now.
    pub(super) fn send(&self, packets: impl IntoIterator<Item = Packet>) {
        let mut st = self.lock();
        for packet in packets {
            self.push(&mut st, &packet);
        }
        self.write_now(&mut st);
    }

    /// Queues a `GRAB_JOB_UNIQ` that holds `permit` until the server answers it. A normal
    /// connection's grab is counted as activity *before* the grabbing flag is read again, so that
    /// [`Worker::wait_idle`](super::Worker::wait_idle) after
    /// [`Worker::stop_grabbing`](super::Worker::stop_grabbing) either sees this grab or this grab
    /// sees the flag; when grabbing has stopped, nothing is queued and the permit is handed back.
    pub(super) fn queue_grab(
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
    pub(super) fn take_reservation(&self) -> Option<Reservation> {
        let mut st = self.lock();
        st.wants_grab = true;
        let r = st.grabs.pop_front();
        if r.is_some() {
            st.running += 1;
        }
        r
    }

    /// `NO_JOB` answered the oldest grab: its slot goes back, and the session sleeps once every
    /// grab is answered (the server handles packets in order, so an earlier `PRE_SLEEP` would
    /// race the grabs still queued).
    pub(super) fn no_job(&self) {
        let mut st = self.lock();
        st.grabs.pop_front();
        st.wants_grab = false;
        if st.grabs.is_empty() {
            self.push(&mut st, &Packet::pre_sleep());
            self.write_now(&mut st);
        }
    }

    /// Writes what the socket takes now. A full socket leaves the rest to the session task; a
    /// failure is kept for it.
    pub(super) fn write_now(&self, st: &mut OutState) {
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

    /// Writes the progress that waited its [`PROGRESS_LINGER`], once that is over.
    pub(super) fn write_if_lingered(&self) {
        let mut st = self.lock();
        if st.linger.is_some_and(|d| d <= Instant::now()) {
            self.write_now(&mut st);
        }
    }

    /// Writes everything buffered, waiting for the socket as needed (session task only).
    pub(super) async fn finish_writes(&self, stream: &TcpStream) -> Result<()> {
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
    pub(super) fn writable_again(&self) {
        let mut st = self.lock();
        st.blocked = false;
        self.write_now(&mut st);
    }

    /// Ends the session's side: no more writes, running jobs told through their hooks.
    pub(super) fn close(&self) {
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
