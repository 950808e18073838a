//! Runs a command as a job step: in a process group of its own, with every line of its output
//! stamped the moment it is read, written to a [`LogFile`] and handed to the caller, and with
//! the whole group killed on cancellation, timeout, or (when asked) a stall: no output and no
//! change of a caller's progress probe for a while ([`ProcessRunner::stall_timeout`]; git uses
//! it with the size of the directory it writes, so a server that accepts a connection and
//! never answers cannot hold a job for the whole timeout).
//!
//! Output is read by one blocking thread per pipe; the calling thread receives the lines over a
//! channel, so a line callback may borrow from the caller and need not be `Send`. The caller's
//! thread wakes for every line, for the command's exit, for the timeout and kill deadlines, and
//! every [`CANCEL_CHECK_INTERVAL`] to look at the cancellation source (which the host exposes
//! only as a query or a bounded wait).

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chrono::{DateTime, Local};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::logfile::LogFile;
use crate::Context;

/// How often a running command's caller looks at its cancellation source.
pub const CANCEL_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// The default time between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);
/// The default time to wait, after the command exited, for its output pipes to close.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Longer lines are split into pieces of this many bytes.
pub const MAX_LINE_BYTES: u64 = 1 << 20;

/// Something that says whether a job has been cancelled: the job's [`Context`], or a
/// [`CancelFlag`] for tests and standalone tools.
pub trait Cancellation: Sync {
    /// Blocks until cancelled or `timeout` passed; returns whether cancelled.
    fn wait_cancelled(&self, timeout: Duration) -> bool;

    /// Whether cancelled now, without waiting.
    fn is_cancelled(&self) -> bool {
        self.wait_cancelled(Duration::ZERO)
    }
}

impl Cancellation for Context<'_> {
    fn wait_cancelled(&self, timeout: Duration) -> bool {
        Context::wait_cancelled(self, timeout)
    }

    fn is_cancelled(&self) -> bool {
        Context::is_cancelled(self)
    }
}

/// A cancellation source of one's own: clones share the flag, [`CancelFlag::cancel`] wakes
/// every waiter.
///
/// ```
/// use std::time::Duration;
/// use turbo_hipster_sdk::support::process::{CancelFlag, Cancellation};
///
/// let flag = CancelFlag::new();
/// let other = flag.clone();
/// std::thread::spawn(move || other.cancel());
/// assert!(flag.wait_cancelled(Duration::from_secs(10)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<(Mutex<bool>, Condvar)>);

impl CancelFlag {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag and wakes everyone waiting on it.
    pub fn cancel(&self) {
        let (lock, condvar) = &*self.0;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        condvar.notify_all();
    }
}

impl Cancellation for CancelFlag {
    fn wait_cancelled(&self, timeout: Duration) -> bool {
        let (lock, condvar) = &*self.0;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        if *guard || timeout.is_zero() {
            return *guard;
        }
        let (guard, _) = condvar
            .wait_timeout_while(guard, timeout, |cancelled| !*cancelled)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

/// A cancellation source that never fires (its `wait_cancelled` just sleeps).
#[derive(Debug, Clone, Copy, Default)]
pub struct NeverCancelled;

impl Cancellation for NeverCancelled {
    fn wait_cancelled(&self, timeout: Duration) -> bool {
        thread::sleep(timeout);
        false
    }

    fn is_cancelled(&self) -> bool {
        false
    }
}

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        })
    }
}

/// One line of a command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The pipe it came from.
    pub stream: Stream,
    /// When it was read (wall clock, as written to the log).
    pub time: DateTime<Local>,
    /// When it was read (monotonic, for measuring durations).
    pub instant: Instant,
    /// The text, without the line ending; invalid UTF-8 replaced by U+FFFD.
    pub text: String,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal (not by us).
    Signalled(i32),
    /// The job was cancelled; we killed its process group.
    Cancelled,
    /// It ran longer than this; we killed its process group.
    TimedOut(Duration),
    /// It made no progress (no output, no change seen by its progress probe) for this long;
    /// we killed its process group.
    Stalled(Duration),
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Termination::Exited(code) => write!(f, "exit code {code}"),
            Termination::Signalled(sig) => write!(f, "killed by signal {}", signal_name(sig)),
            Termination::Cancelled => f.write_str("cancelled"),
            Termination::TimedOut(t) => write!(f, "timed out after {}", seconds(t)),
            Termination::Stalled(t) => write!(f, "stalled: no progress for {}", seconds(t)),
        }
    }
}

/// The name of a signal number, as `9 (SIGKILL)`.
pub fn signal_name(signal: i32) -> String {
    match Signal::try_from(signal) {
        Ok(s) => format!("{signal} ({})", s.as_str()),
        Err(_) => signal.to_string(),
    }
}

/// A duration in seconds for messages: `30 s`, `1.5 s`, `0.012 s`.
pub fn seconds(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        let text = format!("{:.3}", duration.as_secs_f64());
        let text = text.trim_end_matches('0').trim_end_matches('.');
        format!("{text} s")
    }
}

/// What happened to a command run by [`ProcessRunner::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOutcome {
    /// How it ended.
    pub termination: Termination,
    /// From start to the end of its output.
    pub duration: Duration,
    /// False when we stopped reading before its output pipes closed (a process outside its
    /// group kept them open); the log says so.
    pub output_complete: bool,
}

impl ProcessOutcome {
    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.termination == Termination::Exited(0)
    }

    /// The exit code, if it exited by itself.
    pub fn exit_code(&self) -> Option<i32> {
        match self.termination {
            Termination::Exited(code) => Some(code),
            _ => None,
        }
    }
}

/// Why a command could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The command could not be started (not found, not executable, …).
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program, as given to the runner.
        program: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Running it failed after the start (no thread could be started, waiting failed).
    #[error("running {program} failed: {source}")]
    Io {
        /// The program, as given to the runner.
        program: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

type LineCallback<'a> = Box<dyn FnMut(&Line) + 'a>;
type ProgressProbe<'a> = Box<dyn FnMut() -> u64 + 'a>;

/// How often a stall watchdog's progress probe is called, at most.
pub const STALL_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// A stall watchdog: the command is stopped when it neither writes output nor changes the
/// probe's value for `limit`.
struct Stall<'a> {
    limit: Duration,
    probe: Option<ProgressProbe<'a>>,
    last_value: u64,
    last_progress: Instant,
    next_probe: Instant,
}

impl Stall<'_> {
    fn interval(&self) -> Duration {
        STALL_PROBE_INTERVAL.min(self.limit / 4)
    }

    /// Calls the probe when due; returns whether the command stalled.
    fn check(&mut self, now: Instant) -> bool {
        if now >= self.next_probe {
            if let Some(probe) = self.probe.as_mut() {
                let value = probe();
                if value != self.last_value {
                    self.last_value = value;
                    self.last_progress = now;
                }
            }
            self.next_probe = now + self.interval();
        }
        now >= self.last_progress + self.limit
    }

    fn wake(&self) -> Instant {
        self.next_probe.min(self.last_progress + self.limit)
    }
}

/// Runs one command with output capture, cancellation and an optional timeout.
///
/// The command runs in a new process group, with stdin from `/dev/null`. Each output line is
/// written to the log (if one was given) as `<timestamp> [<tag>] <text>` (stdout and stderr
/// alike), preceded by a `[command]` line and followed by an `[exit]` line. On cancellation or
/// timeout the group gets SIGTERM, then SIGKILL after the grace period. When the command exits
/// but its output stays open, the runner waits for the drain timeout, then stops what is left
/// of the group the same way; output held open by a process that left the group (a daemon) is
/// abandoned after one more drain timeout, with a note in the log. Other processes the command
/// left behind in its group are not touched.
///
/// ```
/// use turbo_hipster_sdk::support::process::{NeverCancelled, ProcessRunner, Termination};
///
/// let mut lines = Vec::new();
/// let mut cmd = std::process::Command::new("sh");
/// cmd.args(["-c", "echo hello; exit 3"]);
/// let outcome = ProcessRunner::new(cmd)
///     .on_line(|line| lines.push(line.text.clone()))
///     .run(&NeverCancelled)
///     .unwrap();
/// assert_eq!(outcome.termination, Termination::Exited(3));
/// assert_eq!(lines, ["hello"]);
/// ```
pub struct ProcessRunner<'a> {
    command: Command,
    log: Option<&'a LogFile>,
    tag: String,
    timeout: Option<Duration>,
    kill_grace: Duration,
    drain_timeout: Duration,
    on_line: Option<LineCallback<'a>>,
    stall: Option<(Duration, Option<ProgressProbe<'a>>)>,
}

impl fmt::Debug for ProcessRunner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessRunner")
            .field("command", &self.command)
            .field("log", &self.log.map(LogFile::path))
            .field("tag", &self.tag)
            .field("timeout", &self.timeout)
            .field("kill_grace", &self.kill_grace)
            .field("drain_timeout", &self.drain_timeout)
            .finish_non_exhaustive()
    }
}

impl<'a> ProcessRunner<'a> {
    /// A runner for `command` (its stdin, stdout, stderr and process group are set by the
    /// runner; everything else, such as arguments, environment and directory, is kept).
    pub fn new(command: Command) -> Self {
        Self {
            command,
            log: None,
            tag: "output".to_string(),
            timeout: None,
            kill_grace: DEFAULT_KILL_GRACE,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            on_line: None,
            stall: None,
        }
    }

    /// Writes the output to `log`.
    pub fn log(mut self, log: &'a LogFile) -> Self {
        self.log = Some(log);
        self
    }

    /// The tag of output lines in the log (default `output`).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = tag.into();
        self
    }

    /// Kills the command when it runs longer than this (default: no limit).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time between SIGTERM and SIGKILL (default [`DEFAULT_KILL_GRACE`]).
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// How long to wait for the output to close after the command exited (default
    /// [`DEFAULT_DRAIN_TIMEOUT`]).
    pub fn drain_timeout(mut self, drain: Duration) -> Self {
        self.drain_timeout = drain;
        self
    }

    /// Stops the command when it makes no progress for `limit`: no output line and no change
    /// of `probe`'s value (called at most every [`STALL_PROBE_INTERVAL`] on the calling
    /// thread; e.g. the size of the directory the command writes). The outcome is then
    /// [`Termination::Stalled`]. `None` turns the watchdog off.
    pub fn stall_timeout(
        mut self,
        limit: Option<Duration>,
        probe: Option<Box<dyn FnMut() -> u64 + 'a>>,
    ) -> Self {
        self.stall = limit.map(|l| (l, probe));
        self
    }

    /// Calls `f` with every line, on the calling thread, in the order the lines were read.
    pub fn on_line(mut self, f: impl FnMut(&Line) + 'a) -> Self {
        self.on_line = Some(Box::new(f));
        self
    }

    /// Runs the command to its end. Returns after its output was read to the end (or
    /// abandoned, see [`ProcessOutcome::output_complete`]). When `cancel` is already cancelled
    /// the command is not started and the outcome is [`Termination::Cancelled`].
    ///
    /// # Errors
    /// The command could not be started, or a thread to watch it could not be started (the
    /// command is killed then).
    pub fn run(mut self, cancel: &dyn Cancellation) -> Result<ProcessOutcome, ProcessError> {
        let program = self.command.get_program().to_string_lossy().into_owned();
        self.note("command", &describe(&self.command));
        if cancel.is_cancelled() {
            self.note("exit", "cancelled before it started");
            return Ok(ProcessOutcome {
                termination: Termination::Cancelled,
                duration: Duration::ZERO,
                output_complete: true,
            });
        }

        self.command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let start = Instant::now();
        let mut child = match self.command.spawn() {
            Ok(child) => child,
            Err(source) => {
                self.note("exit", &format!("cannot start: {source}"));
                return Err(ProcessError::Spawn { program, source });
            }
        };
        let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));

        let (tx, rx) = mpsc::channel();
        let pipes = (child.stdout.take(), child.stderr.take());
        let threads = (|| -> io::Result<_> {
            let mut readers = Vec::new();
            if let Some(out) = pipes.0 {
                readers.push(spawn_reader(Stream::Stdout, out, tx.clone())?);
            }
            if let Some(err) = pipes.1 {
                readers.push(spawn_reader(Stream::Stderr, err, tx.clone())?);
            }
            Ok(readers)
        })();
        let readers = match threads {
            Ok(readers) => readers,
            Err(source) => {
                let _ = killpg(pgid, Signal::SIGKILL);
                let _ = child.wait();
                self.note("exit", &format!("killed: cannot start a thread: {source}"));
                return Err(ProcessError::Io { program, source });
            }
        };
        let mut open_streams = readers.len();
        let waiter = {
            let tx = tx.clone();
            thread::Builder::new()
                .name("th-process-wait".into())
                .spawn(move || {
                    let status = child.wait();
                    let _ = tx.send(Event::Exited(status));
                })
        };
        let waiter = match waiter {
            Ok(w) => w,
            Err(source) => {
                let _ = killpg(pgid, Signal::SIGKILL);
                self.note("exit", &format!("killed: cannot start a thread: {source}"));
                return Err(ProcessError::Io { program, source });
            }
        };

        // `tx` stays alive here so that `recv_timeout` always waits instead of failing.
        let deadline = self.timeout.map(|t| start + t);
        let mut stall = self.stall.take().map(|(limit, mut probe)| Stall {
            limit,
            last_value: probe.as_mut().map_or(0, |p| p()),
            probe,
            last_progress: start,
            next_probe: start,
        });
        let mut exit: Option<(io::Result<ExitStatus>, Instant)> = None;
        let mut reason: Option<Termination> = None;
        let mut kill = Kill::NotYet;
        let mut output_complete = true;
        loop {
            let now = Instant::now();
            if exit.is_some() && open_streams == 0 {
                match kill {
                    // Done, unless members of the group survive SIGTERM: give them until the
                    // grace period ends.
                    Kill::Terminated { kill_at } if !group_gone(pgid) => {
                        if now >= kill_at {
                            let _ = killpg(pgid, Signal::SIGKILL);
                            break;
                        }
                    }
                    _ => break,
                }
            }
            if kill == Kill::NotYet {
                if cancel.is_cancelled() {
                    if exit.is_none() {
                        reason = Some(Termination::Cancelled);
                        self.note("cancel", "the job was cancelled: stopping the command");
                    }
                    kill = self.terminate(pgid, now);
                } else if exit.is_none() && deadline.is_some_and(|d| now >= d) {
                    let timeout = self.timeout.unwrap_or_default();
                    reason = Some(Termination::TimedOut(timeout));
                    self.note(
                        "timeout",
                        &format!("still running after {}: stopping it", seconds(timeout)),
                    );
                    kill = self.terminate(pgid, now);
                } else if exit.is_none() && stall.as_mut().is_some_and(|s| s.check(now)) {
                    let limit = stall.as_ref().map(|s| s.limit).unwrap_or_default();
                    reason = Some(Termination::Stalled(limit));
                    self.note(
                        "stall",
                        &format!("no progress for {}: stopping it", seconds(limit)),
                    );
                    kill = self.terminate(pgid, now);
                }
            }
            if let Kill::Terminated { kill_at } = kill {
                if now >= kill_at {
                    self.note("kill", "still running after SIGTERM: sending SIGKILL");
                    let _ = killpg(pgid, Signal::SIGKILL);
                    kill = Kill::Killed { at: now };
                }
            }
            if let Some((_, exited_at)) = exit {
                if open_streams > 0 {
                    match kill {
                        Kill::NotYet if now >= exited_at + self.drain_timeout => {
                            self.note(
                                "note",
                                "the command exited but processes of its group still hold \
                                 its output open: stopping them",
                            );
                            kill = self.terminate(pgid, now);
                        }
                        Kill::Killed { at } if now >= at.max(exited_at) + self.drain_timeout => {
                            self.note(
                                "note",
                                "stopped reading: the output is held open by a process \
                                 outside the command's process group",
                            );
                            output_complete = false;
                            break;
                        }
                        _ => {}
                    }
                }
            }

            let mut wake = now + Duration::from_secs(3600);
            if kill == Kill::NotYet {
                wake = wake.min(now + CANCEL_CHECK_INTERVAL);
                if exit.is_none() {
                    if let Some(d) = deadline {
                        wake = wake.min(d);
                    }
                    if let Some(s) = &stall {
                        wake = wake.min(s.wake());
                    }
                }
            }
            match (kill, &exit) {
                (Kill::Terminated { kill_at }, _) => {
                    wake = wake.min(kill_at);
                    if exit.is_some() && open_streams == 0 {
                        wake = wake.min(now + CANCEL_CHECK_INTERVAL);
                    }
                }
                (Kill::Killed { at }, Some((_, exited_at))) => {
                    wake = wake.min(at.max(*exited_at) + self.drain_timeout);
                }
                (Kill::NotYet, Some((_, exited_at))) => {
                    wake = wake.min(*exited_at + self.drain_timeout);
                }
                _ => {}
            }
            match rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(Event::Line(line)) => {
                    if let Some(s) = stall.as_mut() {
                        s.last_progress = line.instant;
                    }
                    if let Some(log) = self.log {
                        // A log that cannot be written reports it itself, once, with a count.
                        let _ = log.line_at(&line.time, &self.tag, &line.text);
                    }
                    if let Some(f) = self.on_line.as_mut() {
                        f(&line);
                    }
                }
                Ok(Event::Eof) => open_streams = open_streams.saturating_sub(1),
                Ok(Event::Exited(status)) => exit = Some((status, Instant::now())),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
        }
        let duration = start.elapsed();
        let _ = waiter.join();
        if output_complete {
            for reader in readers {
                let _ = reader.join();
            }
        }
        // else: the readers stay blocked until the daemon holding the pipes closes them.

        let status = match exit {
            Some((status, _)) => status,
            None => Err(io::Error::other("the command's exit status was lost")),
        };
        let status = match status {
            Ok(s) => s,
            Err(source) => {
                self.note("exit", &format!("waiting for the command failed: {source}"));
                return Err(ProcessError::Io { program, source });
            }
        };
        let termination = reason.unwrap_or_else(|| match (status.code(), status.signal()) {
            (Some(code), _) => Termination::Exited(code),
            (None, Some(sig)) => Termination::Signalled(sig),
            (None, None) => Termination::Exited(-1),
        });
        self.note(
            "exit",
            &format!("{termination} after {}", seconds(round_ms(duration))),
        );
        Ok(ProcessOutcome {
            termination,
            duration,
            output_complete,
        })
    }

    fn note(&self, tag: &str, text: &str) {
        if let Some(log) = self.log {
            // A log that cannot be written reports it itself, once, with a count.
            let _ = log.line(tag, text);
        }
    }

    /// Sends SIGTERM to the group; skips the grace period when the group is already gone.
    fn terminate(&self, pgid: Pid, now: Instant) -> Kill {
        match killpg(pgid, Signal::SIGTERM) {
            Err(Errno::ESRCH) => Kill::Killed { at: now },
            _ => Kill::Terminated {
                kill_at: now + self.kill_grace,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    NotYet,
    Terminated { kill_at: Instant },
    Killed { at: Instant },
}

enum Event {
    Line(Line),
    Eof,
    Exited(io::Result<ExitStatus>),
}

fn spawn_reader(
    stream: Stream,
    pipe: impl Read + Send + 'static,
    tx: Sender<Event>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("th-{stream}"))
        .spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader
                    .by_ref()
                    .take(MAX_LINE_BYTES)
                    .read_until(b'\n', &mut buf)
                {
                    Ok(0) => break,
                    Ok(_) => {
                        let time = Local::now();
                        let instant = Instant::now();
                        if buf.last() == Some(&b'\n') {
                            buf.pop();
                            if buf.last() == Some(&b'\r') {
                                buf.pop();
                            }
                        }
                        let text = String::from_utf8_lossy(&buf).into_owned();
                        let line = Line {
                            stream,
                            time,
                            instant,
                            text,
                        };
                        if tx.send(Event::Line(line)).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(Event::Eof);
        })
}

/// Whether no running process is left in the group (or it is not ours to signal). Zombies do
/// not count: where nobody reaps orphans (some containers) they linger in the group for ever.
fn group_gone(pgid: Pid) -> bool {
    match killpg(pgid, None) {
        Err(Errno::ESRCH | Errno::EPERM) => true,
        _ => !group_has_live_member(pgid).unwrap_or(true),
    }
}

fn group_has_live_member(pgid: Pid) -> io::Result<bool> {
    std::fs::metadata("/proc")?;
    Ok(crate::support::procfs::processes()
        .any(|p| p.pgrp == pgid.as_raw() && !matches!(p.state, 'Z' | 'X')))
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The command line for the log, quoted like a shell would need it.
fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::support::logfile::parse_line;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    /// Whether `pid` is gone (or a zombie nobody reaped yet: it runs nothing any more).
    fn process_dead(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => {
                let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
                after_comm.starts_with('Z') || after_comm.starts_with('X')
            }
        }
    }

    fn wait_dead(pid: i32) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if process_dead(pid) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn log_lines(log: &LogFile) -> Vec<(String, String)> {
        std::fs::read_to_string(log.path())
            .unwrap()
            .lines()
            .map(|l| {
                let l = parse_line(l).unwrap();
                (l.tag, l.text)
            })
            .collect()
    }

    #[test]
    fn captures_lines_in_order_with_read_time() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::create(dir.path().join("p.log")).unwrap();
        let mut lines = Vec::new();
        let outcome = ProcessRunner::new(sh(
            "echo one; echo two; printf 'no newline'; sleep 0.4; echo; sleep 0.1; echo err >&2; \
             sleep 0.2; printf 'last\\r\\n'",
        ))
        .log(&log)
        .on_line(|l| lines.push(l.clone()))
        .run(&NeverCancelled)
        .unwrap();
        assert_eq!(outcome.termination, Termination::Exited(0));
        assert!(outcome.success());
        assert!(outcome.output_complete);
        let stdout: Vec<&str> = lines
            .iter()
            .filter(|l| l.stream == Stream::Stdout)
            .map(|l| l.text.as_str())
            .collect();
        assert_eq!(stdout, ["one", "two", "no newline", "last"]);
        let stderr: Vec<&str> = lines
            .iter()
            .filter(|l| l.stream == Stream::Stderr)
            .map(|l| l.text.as_str())
            .collect();
        assert_eq!(stderr, ["err"]);
        // Each line is stamped when it is read, not when the command ends.
        let last = lines.iter().find(|l| l.text == "last").unwrap();
        let gap = last.instant.duration_since(lines[0].instant);
        assert!(gap >= Duration::from_millis(500), "{gap:?}");
        let wall = last.time - lines[0].time;
        assert!(wall >= chrono::Duration::milliseconds(500), "{wall}");

        let logged = log_lines(&log);
        assert_eq!(logged[0].0, "command");
        assert!(
            logged[0].1.starts_with("sh -c 'echo one;"),
            "{}",
            logged[0].1
        );
        let output: Vec<&str> = logged
            .iter()
            .filter(|(tag, _)| tag == "output")
            .map(|(_, text)| text.as_str())
            .collect();
        assert_eq!(output, ["one", "two", "no newline", "err", "last"]);
        let last = logged.last().unwrap();
        assert_eq!(last.0, "exit");
        assert!(last.1.starts_with("exit code 0 after "), "{}", last.1);
    }

    #[test]
    fn reports_exit_codes_and_signals() {
        let outcome = ProcessRunner::new(sh("exit 3"))
            .run(&NeverCancelled)
            .unwrap();
        assert_eq!(outcome.termination, Termination::Exited(3));
        assert_eq!(outcome.exit_code(), Some(3));
        assert!(!outcome.success());

        let outcome = ProcessRunner::new(sh("kill -9 $$"))
            .run(&NeverCancelled)
            .unwrap();
        assert_eq!(outcome.termination, Termination::Signalled(9));
        assert_eq!(outcome.exit_code(), None);
        assert_eq!(
            outcome.termination.to_string(),
            "killed by signal 9 (SIGKILL)"
        );
    }

    #[test]
    fn decodes_invalid_utf8_lossily() {
        let mut lines = Vec::new();
        ProcessRunner::new(sh(r"printf 'a\377b\n'"))
            .on_line(|l| lines.push(l.text.clone()))
            .run(&NeverCancelled)
            .unwrap();
        assert_eq!(lines, ["a\u{FFFD}b"]);
    }

    #[test]
    fn spawn_failure_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::create(dir.path().join("p.log")).unwrap();
        let err = ProcessRunner::new(Command::new(dir.path().join("missing")))
            .log(&log)
            .run(&NeverCancelled)
            .unwrap_err();
        assert!(matches!(err, ProcessError::Spawn { .. }), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
        let logged = log_lines(&log);
        assert_eq!(logged.last().unwrap().0, "exit");
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::create(dir.path().join("p.log")).unwrap();
        let mut grandchild = None;
        let start = Instant::now();
        let outcome = ProcessRunner::new(sh("sleep 100 & echo $!; sleep 100"))
            .log(&log)
            .timeout(Some(Duration::from_millis(500)))
            .kill_grace(Duration::from_secs(2))
            .on_line(|l| grandchild = l.text.parse::<i32>().ok())
            .run(&NeverCancelled)
            .unwrap();
        assert_eq!(
            outcome.termination,
            Termination::TimedOut(Duration::from_millis(500))
        );
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(outcome.duration >= Duration::from_millis(500));
        let grandchild = grandchild.expect("the script printed its background pid");
        assert!(wait_dead(grandchild), "grandchild {grandchild} survived");
        let logged = log_lines(&log);
        assert!(logged.iter().any(|(tag, _)| tag == "timeout"));
        assert!(logged
            .last()
            .unwrap()
            .1
            .starts_with("timed out after 0.5 s"));
    }

    #[test]
    fn cancellation_escalates_to_sigkill() {
        let flag = CancelFlag::new();
        let canceller = {
            let flag = flag.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(300));
                flag.cancel();
            })
        };
        let mut pids = Vec::new();
        let start = Instant::now();
        // Ignored signals stay ignored in the children: only SIGKILL stops this group.
        let outcome = ProcessRunner::new(sh("trap '' TERM; sleep 100 & echo $!; echo $$; wait"))
            .kill_grace(Duration::from_millis(500))
            .on_line(|l| pids.extend(l.text.parse::<i32>().ok()))
            .run(&flag)
            .unwrap();
        canceller.join().unwrap();
        assert_eq!(outcome.termination, Termination::Cancelled);
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(800), "{took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert_eq!(pids.len(), 2);
        for pid in pids {
            assert!(wait_dead(pid), "{pid} survived");
        }
    }

    #[test]
    fn a_silent_command_is_stopped_as_stalled_and_progress_keeps_it_alive() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::create(dir.path().join("p.log")).unwrap();
        let limit = Duration::from_millis(400);
        let start = Instant::now();
        let outcome = ProcessRunner::new(sh("echo start; sleep 100"))
            .log(&log)
            .kill_grace(Duration::from_millis(500))
            .stall_timeout(Some(limit), None)
            .run(&NeverCancelled)
            .unwrap();
        assert_eq!(outcome.termination, Termination::Stalled(limit));
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(
            outcome.termination.to_string(),
            "stalled: no progress for 0.4 s"
        );
        assert!(log_lines(&log).iter().any(|(tag, _)| tag == "stall"));

        // Output, or a growing file the probe watches, is progress.
        let outcome = ProcessRunner::new(sh("for i in 1 2 3 4 5 6; do echo $i; sleep 0.2; done"))
            .stall_timeout(Some(limit), None)
            .run(&NeverCancelled)
            .unwrap();
        assert_eq!(outcome.termination, Termination::Exited(0));
        let file = dir.path().join("growing");
        let script = format!(
            "for i in 1 2 3 4 5 6; do echo $i >> '{}'; sleep 0.2; done",
            file.display()
        );
        let watched = file.clone();
        let outcome = ProcessRunner::new(sh(&script))
            .stall_timeout(
                Some(limit),
                Some(Box::new(move || {
                    std::fs::metadata(&watched).map_or(0, |m| m.len())
                })),
            )
            .run(&NeverCancelled)
            .unwrap();
        assert_eq!(outcome.termination, Termination::Exited(0));
    }

    #[test]
    fn cancelled_before_start_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let flag = CancelFlag::new();
        flag.cancel();
        let outcome = ProcessRunner::new(sh(&format!("touch '{}'", marker.display())))
            .run(&flag)
            .unwrap();
        assert_eq!(outcome.termination, Termination::Cancelled);
        assert!(!marker.exists());
    }

    #[test]
    fn leftover_group_members_holding_output_are_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::create(dir.path().join("p.log")).unwrap();
        let mut pid = None;
        let start = Instant::now();
        let outcome = ProcessRunner::new(sh("sleep 100 & echo $!"))
            .log(&log)
            .drain_timeout(Duration::from_millis(300))
            .on_line(|l| pid = l.text.parse::<i32>().ok())
            .run(&NeverCancelled)
            .unwrap();
        assert_eq!(outcome.termination, Termination::Exited(0));
        assert!(outcome.output_complete);
        assert!(start.elapsed() < Duration::from_secs(4));
        assert!(wait_dead(pid.unwrap()));
        assert!(log_lines(&log)
            .iter()
            .any(|(tag, text)| tag == "note" && text.contains("stopping them")));
    }

    #[test]
    fn a_daemon_holding_output_is_abandoned_after_a_bounded_wait() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::create(dir.path().join("p.log")).unwrap();
        let mut pid = None;
        let start = Instant::now();
        let outcome = ProcessRunner::new(sh("setsid sleep 100 & echo $!"))
            .log(&log)
            .drain_timeout(Duration::from_millis(300))
            .on_line(|l| pid = l.text.parse::<i32>().ok())
            .run(&NeverCancelled)
            .unwrap();
        let pid = pid.unwrap();
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        assert_eq!(outcome.termination, Termination::Exited(0));
        assert!(!outcome.output_complete);
        assert!(start.elapsed() < Duration::from_secs(4));
        assert!(log_lines(&log)
            .iter()
            .any(|(tag, text)| tag == "note" && text.contains("stopped reading")));
    }

    #[test]
    fn cancel_flag_waits_and_wakes() {
        let flag = CancelFlag::new();
        assert!(!flag.is_cancelled());
        let start = Instant::now();
        assert!(!flag.wait_cancelled(Duration::from_millis(100)));
        assert!(start.elapsed() >= Duration::from_millis(100));
        let other = flag.clone();
        let t = thread::spawn(move || other.wait_cancelled(Duration::from_secs(30)));
        thread::sleep(Duration::from_millis(50));
        flag.cancel();
        assert!(t.join().unwrap());
        assert!(flag.is_cancelled());
    }

    #[test]
    fn formats_seconds_and_commands() {
        assert_eq!(seconds(Duration::from_secs(30)), "30 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(seconds(Duration::from_millis(12)), "0.012 s");
        let mut cmd = Command::new("git");
        cmd.args(["fetch", "it's", "a b", ""]);
        assert_eq!(describe(&cmd), r"git fetch 'it'\''s' 'a b' ''");
    }
}
