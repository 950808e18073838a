//! A job's side of its session: its reports go into the outbox of the session that assigned
//! it, from whichever thread reports; its terminal packet frees its slot (straight into the
//! next grab when it may); and the last clone of its reporter ends it.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use super::outbox::{OutState, Outbox, PROGRESS_LINGER};
use super::settings::{ConnSpec, Role, ServerId};
use super::slots::{ActivityGuard, Slots};
use super::Shared;
use crate::gearman::packet::{Packet, PacketType};

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

    /// Sends the job's last packets, at most once per job, and frees its slot (see
    /// [`JobState::pass_slot`]).
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
        let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
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
        let slot = slot.and_then(|permit| self.pass_slot(&mut st, permit));
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

    /// Queues a new grab on the job's connection that takes over its slot (in the same write
    /// as its terminal packet) when this connection may grab and no other connection waits
    /// for a slot; else hands the slot back.
    fn pass_slot(
        &self,
        st: &mut OutState,
        permit: OwnedSemaphorePermit,
    ) -> Option<OwnedSemaphorePermit> {
        let grabbing = self.role == Role::Control || *self.shared.grabbing.borrow();
        if !grabbing || !st.has_room(self.max_grabs) || self.slots.is_awaited() {
            return Some(permit);
        }
        self.outbox.queue_grab(st, &self.shared, self.role, permit)
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
    /// The reporter of a job assigned on `spec`'s session, holding its slot; the job counts as
    /// running until the reporter's last clone is gone.
    pub(super) fn new(
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

    /// Sends the progress packet `packet(handle, data)`, or drops it (logged as `what`) when
    /// `data` would exceed the packet limit.
    fn progress_with(&self, data: Bytes, what: &str, packet: fn(Bytes, Bytes) -> Packet) -> bool {
        if !self.fits(&data) {
            error!(len = data.len(), "{what}");
            return false;
        }
        self.state
            .send_progress(packet(self.state.handle.clone(), data))
    }

    /// `WORK_DATA` (Zuul: JSON with `name`, `number`, `manager`, `url`, ... and at the end
    /// `result`).
    pub fn work_data(&self, data: impl Into<Bytes>) -> bool {
        self.progress_with(
            data.into(),
            "WORK_DATA too large for the packet limit; dropped",
            Packet::work_data,
        )
    }

    /// `WORK_WARNING`.
    pub fn work_warning(&self, data: impl Into<Bytes>) -> bool {
        self.progress_with(
            data.into(),
            "WORK_WARNING too large for the packet limit; dropped",
            Packet::work_warning,
        )
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
