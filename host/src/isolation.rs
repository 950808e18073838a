//! Crash isolation: a job in a child process of its own (`job_isolation: "process"`).
//!
//! A plugin is native code: a segfault or an abort in it ends whatever process it runs in. Run
//! in the daemon (`"in-process"`), it takes every running job and the Gearman connections with
//! it, and gearmand hands the same job to the restarted daemon, which dies again. Run in a
//! child, it costs only its own job: `FAILURE - plugin crashed: SIGSEGV`.
//!
//! How: the job's thread re-executes the daemon's own binary (`/proc/self/exe`, so an upgrade
//! of the file on disk does not mix versions) with the hidden subcommand [`CHILD_COMMAND`]
//! and pipes. It writes one JSON line, a [`ChildRequest`] (the plugin's file, the job's config
//! as given to the plugin's `new_runner`, the job JSON, the work and results dirs); the child
//! loads the plugin with the daemon's own loader ([`crate::plugins`]), creates the runner and
//! runs it with a [`JobHost`] whose progress and work data, and a log forwarder, become JSON
//! lines ([`ChildEvent`]) on a private copy of its stdout; its fd 1 then points at its stderr
//! and fd 0 at /dev/null, so nothing the plugin or its tools print can garble the protocol.
//! The job JSON and the directories are local to the child: `task_output.log`, the results
//! and the work dir are written by it exactly as in the daemon. The outcome is the last line.
//! A cancel (Zuul's `stop:`, a lost connection, shutdown) is one more line on the child's
//! stdin; a child that has not ended [`KILL_AFTER`] after it is killed.
//!
//! The parent relays the events to the job's [`EventSink`] as they come. When the child ends
//! it looks at how: a signal is a crash named after it, an exit without an outcome line is a
//! crash with its exit status. Nothing the job started may outlive it: the child makes itself
//! a session leader (`setsid`), and once it is dead — still a zombie, so that its pid, which
//! is the session id, cannot be reused meanwhile — every process left in that session is
//! killed (the plugin's tools run in process groups of their own, so a process group kill
//! would miss them; a tool that made a session of its own escapes, as it would any
//! supervisor but a cgroup). `PR_SET_PDEATHSIG` ends the child if the daemon dies.
//!
//! The host crate forbids unsafe code, so the child does `setsid` and `prctl` itself at the
//! start of its `main` rather than between fork and exec.
//!
//! Cost: an exec of the daemon's binary, loading the plugin and creating its runner again, and
//! the sweep of `/proc` — about 3–4 ms per job on the 2-core development machine (the benchmark
//! `zuul_throughput` prints it), nothing next to a real job's minutes; hence the default. A
//! program other than `turbo-hipster` that uses this library (a test binary) has no
//! subcommand to re-execute: its jobs run in-process unless `$TURBO_HIPSTER_BIN` names the
//! daemon's binary.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RStr, RString};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use turbo_hipster_sdk::abi::{Host, Host_TO};
use turbo_hipster_sdk::support::env::remove_daemon_secrets;
use turbo_hipster_sdk::{JobConfig, Outcome};

pub use crate::config::Isolation;
use crate::host_context::{forward_log, CancelToken, EventSink, JobEvent, JobHost};
use crate::plugins::JobRunner;

/// The hidden subcommand a job's child process runs (not in `--help`).
pub const CHILD_COMMAND: &str = "__run-job-child";
/// How long a cancelled child may take to end before it is killed.
pub const KILL_AFTER: Duration = Duration::from_secs(30);

impl Isolation {
    /// A job's isolation: its config entry's `job_isolation`, else the daemon's; in-process
    /// when this program cannot run jobs in children (see [`child_program`]).
    pub fn of(runner: &JobRunner, default: Self) -> Self {
        let wanted = runner
            .config
            .config
            .get("job_isolation")
            .and_then(|v| v.as_str())
            .and_then(Self::parse)
            .unwrap_or(default);
        if wanted == Self::Process && child_program().is_none() {
            return Self::InProcess;
        }
        wanted
    }
}

/// The program a job's child runs: this one if it is the `turbo-hipster` binary (as
/// `/proc/self/exe`: the running version even if the file was replaced), else
/// `$TURBO_HIPSTER_BIN`. `None` in another program using this library without that variable
/// (a test binary): its jobs run in-process, with a warning once.
pub fn child_program() -> Option<PathBuf> {
    static PROGRAM: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    PROGRAM
        .get_or_init(|| {
            let exe = std::env::current_exe().ok();
            let name = exe
                .as_ref()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy());
            if name.is_some_and(|n| n.starts_with("turbo-hipster")) {
                return Some(PathBuf::from("/proc/self/exe"));
            }
            let program = std::env::var_os(CHILD_PROGRAM_ENV).map(PathBuf::from);
            if program.is_none() {
                tracing::warn!(
                    program = ?exe,
                    "this program is not turbo-hipster and ${CHILD_PROGRAM_ENV} is not set: \
                     jobs run in-process"
                );
            }
            program
        })
        .clone()
}

/// Names the `turbo-hipster` binary for programs other than it that run jobs in children.
pub const CHILD_PROGRAM_ENV: &str = "TURBO_HIPSTER_BIN";

/// What the daemon tells a job's child: one JSON line.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChildRequest {
    /// The plugin's name.
    pub plugin: String,
    /// The plugin's `libtask.so`, loaded again in the child.
    pub plugin_path: PathBuf,
    /// The job's config as given to the plugin's `new_runner`.
    pub job_config: JobConfig,
    /// The job as the plugin reads it (`Host::job_json`).
    pub job_json: String,
    /// The job's work dir.
    pub working_dir: PathBuf,
    /// The job's results dir.
    pub results_dir: PathBuf,
    /// The daemon's pid: a child whose parent is already another process ends at once.
    pub daemon_pid: u32,
}

/// What a job's child tells the daemon: one JSON line each.
#[derive(Debug, Serialize, Deserialize)]
pub enum ChildEvent {
    /// A plugin log line: level, target, message.
    Log(u8, String, String),
    /// WORK_STATUS.
    Progress(u64, u64),
    /// WORK_DATA (a JSON object, already checked).
    WorkData(String),
    /// The job's outcome, or why there is none; always the last line.
    Outcome(Result<Outcome, String>),
}

/// Runs the job in a child process (see the module docs) and waits for it; the events reach
/// `events` as they come, `cancel` is forwarded.
pub fn run_in_child(
    runner: &JobRunner,
    job_json: String,
    events: &EventSink,
    cancel: &CancelToken,
    working_dir: &Path,
    results_dir: &Path,
) -> Result<Outcome, String> {
    let mut job_config = runner.config.clone();
    // Leftovers of killed runs were removed when the daemon started; a job's child must not
    // scan for them again (once per job, beside other jobs' live runs).
    job_config.host.clean_leftovers = false;
    let request = ChildRequest {
        plugin: runner.plugin.name.clone(),
        plugin_path: runner.plugin.path.clone(),
        job_config,
        job_json,
        working_dir: working_dir.to_path_buf(),
        results_dir: results_dir.to_path_buf(),
        daemon_pid: std::process::id(),
    };
    let mut line =
        serde_json::to_vec(&request).map_err(|e| format!("cannot encode the job: {e}"))?;
    line.push(b'\n');
    let program = child_program().ok_or("this program cannot run jobs in child processes")?;
    let mut command = Command::new(program);
    // The daemon's secrets (`publish_logs`' object store keys, database passwords) are not the
    // job's.
    remove_daemon_secrets(&mut command);
    let mut child = command
        .arg(CHILD_COMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the job's process: {e}"))?;
    let pid = Pid::from_raw(child.id() as i32);
    let mut stdin = child.stdin.take();
    if let Some(s) = stdin.as_mut() {
        // A child that died at once is reported below from its status.
        let _ = s.write_all(&line);
    }
    let watch = Arc::new(Watch {
        reaped: Mutex::new(false),
        done: AtomicBool::new(false),
    });
    spawn_canceller(cancel.clone(), stdin, pid, watch.clone());
    let outcome = relay(&mut child, &runner.plugin.name, events);
    let status = end_child(&mut child, pid, &watch);
    verdict(outcome, status)
}

/// Shared by the job's thread and its canceller: whether the child was reaped (its pid may
/// then be another process's: no more signals to it).
struct Watch {
    reaped: Mutex<bool>,
    done: AtomicBool,
}

/// Forwards a cancel to the child as a line on its stdin; kills it if it has not ended
/// [`KILL_AFTER`] later. Ends with the job.
fn spawn_canceller(
    cancel: CancelToken,
    mut stdin: Option<std::process::ChildStdin>,
    pid: Pid,
    watch: Arc<Watch>,
) {
    let run = move || {
        while !watch.done.load(Ordering::Acquire) {
            if !cancel.wait_blocking(Duration::from_millis(100)) {
                continue;
            }
            let reason = cancel.reason().unwrap_or_default();
            if let Some(s) = stdin.as_mut() {
                let mut line = serde_json::to_vec(&reason).unwrap_or_default();
                line.push(b'\n');
                let _ = s.write_all(&line);
            }
            let deadline = Instant::now() + KILL_AFTER;
            while !watch.done.load(Ordering::Acquire) {
                if Instant::now() >= deadline {
                    let reaped = watch.reaped.lock().unwrap_or_else(|e| e.into_inner());
                    if !*reaped {
                        tracing::warn!(
                            pid = pid.as_raw(),
                            "the cancelled job's process did not end; killing it"
                        );
                        let _ = kill(pid, Signal::SIGKILL);
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("th-job-cancel".into())
        .spawn(run)
    {
        tracing::error!("cannot start a thread to forward a cancel to the job's process: {e}");
    }
}

/// Reads the child's events until its outcome (the last line) or until it closes its end.
fn relay(child: &mut Child, plugin: &str, events: &EventSink) -> Option<Result<Outcome, String>> {
    let stdout = child.stdout.take()?;
    let mut outcome = None;
    let mut garbled = 0usize;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<ChildEvent>(&line) {
            Ok(ChildEvent::Log(level, target, message)) => {
                forward_log(plugin, level, &target, &message)
            }
            Ok(ChildEvent::Progress(n, d)) => events(JobEvent::Progress(n, d)),
            Ok(ChildEvent::WorkData(data)) => events(JobEvent::WorkData(data)),
            Ok(ChildEvent::Outcome(o)) => {
                outcome = Some(o);
                break;
            }
            Err(_) => garbled += 1,
        }
    }
    if garbled > 0 {
        tracing::warn!(
            plugin,
            lines = garbled,
            "ignored unreadable lines from the job's process"
        );
    }
    outcome
}

/// Waits for the child to end, kills what is left in its session, reaps it.
fn end_child(child: &mut Child, pid: Pid, watch: &Watch) -> Option<WaitStatus> {
    // Not reaped yet: the pid (= the session id) stays the child's while its session is swept.
    let status = loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.ok(),
        }
    };
    kill_session(pid);
    watch.done.store(true, Ordering::Release);
    *watch.reaped.lock().unwrap_or_else(|e| e.into_inner()) = true;
    let _ = child.wait();
    status
}

/// The job's outcome from what the child said and how it ended.
fn verdict(
    outcome: Option<Result<Outcome, String>>,
    status: Option<WaitStatus>,
) -> Result<Outcome, String> {
    match (outcome, status) {
        (_, Some(WaitStatus::Signaled(_, signal, _))) => {
            Err(format!("plugin crashed: {}", signal.as_str()))
        }
        (Some(outcome), _) => outcome,
        (None, Some(WaitStatus::Exited(_, code))) => {
            Err(format!("plugin crashed: exit status {code}"))
        }
        (None, other) => Err(format!(
            "plugin crashed: the job's process ended without an outcome ({other:?})"
        )),
    }
}

/// Kills every process in session `sid` (the dead child's leftovers), until none is left.
pub fn kill_session(sid: Pid) {
    for _ in 0..5 {
        let members = session_members(sid);
        if members.is_empty() {
            return;
        }
        for p in &members {
            let _ = kill(*p, Signal::SIGKILL);
        }
        tracing::warn!(
            session = sid.as_raw(),
            count = members.len(),
            "killed processes the job left behind"
        );
    }
}

/// Live processes (zombies excluded) whose session is `sid`, `sid` itself excluded.
fn session_members(sid: Pid) -> Vec<Pid> {
    turbo_hipster_sdk::support::procfs::processes()
        .filter(|p| p.session == sid.as_raw() && p.pid != sid.as_raw() && p.state != 'Z')
        .map(|p| Pid::from_raw(p.pid))
        .collect()
}

/// The child's side: see the module docs. Returns its exit code.
pub fn child_main() -> ExitCode {
    // Its own session (tools in their own process groups stay in it), and no life without
    // the daemon.
    let _ = nix::unistd::setsid();
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let Some((input, out)) = take_protocol_fds() else {
        eprintln!("turbo-hipster {CHILD_COMMAND}: cannot set up its pipes");
        return ExitCode::FAILURE;
    };
    let mut input = BufReader::new(input);
    let mut line = String::new();
    let request = match input.read_line(&mut line) {
        Ok(n) if n > 0 => serde_json::from_str::<ChildRequest>(&line).map_err(|e| e.to_string()),
        Ok(_) => return ExitCode::FAILURE,
        Err(e) => Err(e.to_string()),
    };
    let out = Arc::new(Mutex::new(out));
    forward_tracing(out.clone());
    let request = match request {
        Ok(r) if nix::unistd::getppid().as_raw() as u32 == r.daemon_pid => r,
        Ok(_) => return ExitCode::FAILURE,
        Err(e) => {
            send(
                &out,
                &ChildEvent::Outcome(Err(format!("unreadable job request: {e}"))),
            );
            return ExitCode::SUCCESS;
        }
    };
    let outcome = run_request(request, input, &out);
    send(&out, &ChildEvent::Outcome(outcome));
    ExitCode::SUCCESS
}

/// Private copies of stdin and stdout for the protocol; fd 0 becomes /dev/null and fd 1 the
/// child's stderr, for the plugin and its tools.
fn take_protocol_fds() -> Option<(std::fs::File, std::fs::File)> {
    use std::os::fd::AsRawFd;
    let input = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    let out = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
    let null = std::fs::File::open("/dev/null").ok()?;
    nix::unistd::dup2(null.as_raw_fd(), 0).ok()?;
    nix::unistd::dup2(2, 1).ok()?;
    Some((input.into(), out.into()))
}

/// The child's own log events (the host context's warnings, the loader's) go to the daemon's
/// log as [`ChildEvent::Log`] lines; `RUST_LOG` (inherited) filters them, default `info`.
fn forward_tracing(out: Arc<Mutex<std::fs::File>>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(Forward(out).with_filter(filter))
        .try_init();
}

struct Forward(Arc<Mutex<std::fs::File>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Forward {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut text = Text(String::new());
        event.record(&mut text);
        let meta = event.metadata();
        let level = match *meta.level() {
            tracing::Level::ERROR => 1,
            tracing::Level::WARN => 2,
            tracing::Level::INFO => 3,
            tracing::Level::DEBUG => 4,
            tracing::Level::TRACE => 5,
        };
        send(
            &self.0,
            &ChildEvent::Log(level, meta.target().into(), text.0),
        );
    }
}

/// An event's message, then its other fields as `key=value`.
struct Text(String);

impl tracing::field::Visit for Text {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let sep = if self.0.is_empty() { "" } else { " " };
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}{sep}"));
        } else {
            let _ = write!(self.0, "{sep}{}={value:?}", field.name());
        }
    }
}

fn send(out: &Mutex<std::fs::File>, event: &ChildEvent) {
    let Ok(mut line) = serde_json::to_vec(event) else {
        return;
    };
    line.push(b'\n');
    let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
    let _ = out.write_all(&line);
}

/// Loads the plugin, creates the runner, runs the job; cancels come from `input`.
fn run_request(
    request: ChildRequest,
    mut input: BufReader<std::fs::File>,
    out: &Arc<Mutex<std::fs::File>>,
) -> Result<Outcome, String> {
    let plugin = crate::plugins::load_library(&request.plugin, &request.plugin_path)
        .map_err(|e| e.to_string())?;
    let runner = crate::plugins::new_runner(&Arc::new(plugin), request.job_config)?;
    let cancel = CancelToken::new();
    let canceller = cancel.clone();
    let _ = std::thread::Builder::new().spawn(move || {
        let mut line = String::new();
        let reason = match input.read_line(&mut line) {
            Ok(n) if n > 0 => serde_json::from_str::<String>(&line)
                .unwrap_or_else(|_| "cancelled by the daemon".into()),
            _ => "the daemon closed the job's pipe".into(),
        };
        canceller.cancel(&reason);
    });
    let sink: EventSink = {
        let out = out.clone();
        Arc::new(move |ev| {
            let event = match ev {
                JobEvent::Progress(n, d) => ChildEvent::Progress(n, d),
                JobEvent::WorkData(data) => ChildEvent::WorkData(data),
            };
            send(&out, &event);
        })
    };
    let host = ChildHost {
        inner: JobHost::new(
            &request.plugin,
            request.job_json,
            sink,
            cancel,
            request.working_dir,
            request.results_dir,
        ),
        out: out.clone(),
    };
    crate::plugins::run_plugin(&runner, Host_TO::from_ptr(&host, TD_Opaque))
}

/// A job's host in its child: a [`JobHost`] whose log lines also go to the daemon.
struct ChildHost {
    inner: JobHost,
    out: Arc<Mutex<std::fs::File>>,
}

impl Host for ChildHost {
    fn job_json(&self) -> RString {
        self.inner.job_json()
    }
    fn log(&self, level: u8, target: RStr<'_>, message: RStr<'_>) {
        let event = ChildEvent::Log(level, target.as_str().into(), message.as_str().into());
        send(&self.out, &event);
        self.inner.write_task_log(level, message.as_str());
    }
    fn progress(&self, numerator: u64, denominator: u64) {
        self.inner.progress(numerator, denominator)
    }
    fn send_work_data(&self, json: RStr<'_>) {
        self.inner.send_work_data(json)
    }
    fn is_cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }
    fn wait_cancelled(&self, timeout_ms: u64) -> bool {
        self.inner.wait_cancelled(timeout_ms)
    }
    fn working_dir(&self) -> RString {
        self.inner.working_dir()
    }
    fn results_dir(&self) -> RString {
        self.inner.results_dir()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn isolation_spellings() {
        assert_eq!(Isolation::parse("process"), Some(Isolation::Process));
        assert_eq!(Isolation::parse("in-process"), Some(Isolation::InProcess));
        assert_eq!(Isolation::parse("thread"), None);
        for i in [Isolation::Process, Isolation::InProcess] {
            assert_eq!(Isolation::parse(i.as_str()), Some(i));
        }
    }

    #[test]
    fn a_bad_job_isolation_is_named_with_its_place() {
        let d = tempfile::tempdir().unwrap();
        let main = d.path().join("config.json");
        std::fs::create_dir(d.path().join("conf.d")).unwrap();
        std::fs::write(
            &main,
            r#"{"job_isolation": 1, "conf_d": "conf.d", "jobs": [{"name": "build:a"}]}"#,
        )
        .unwrap();
        let snippet = d.path().join("conf.d/b.json");
        std::fs::write(
            &snippet,
            r#"{"jobs": [{"name": "build:b", "job_isolation": "thread"}]}"#,
        )
        .unwrap();
        let e = crate::config::load(&main).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "{}: job_isolation: must be one of process, in-process, got 1",
                main.display()
            )),
            "{e}"
        );
        assert!(
            e.contains(&format!(
                "{}: jobs[0].job_isolation: must be one of process, in-process, got \"thread\"",
                snippet.display()
            )),
            "{e}"
        );
        std::fs::write(
            &snippet,
            r#"{"jobs": [{"name": "build:b", "job_isolation": "in-process"}]}"#,
        )
        .unwrap();
        std::fs::write(
            &main,
            r#"{"conf_d": "conf.d", "jobs": [{"name": "build:a"}]}"#,
        )
        .unwrap();
        let c = crate::config::load(&main).unwrap();
        assert_eq!(c.job_isolation, Isolation::default());
        assert_eq!(c.jobs[1].config["job_isolation"], "in-process");
    }

    #[test]
    fn a_signal_is_a_crash_named_after_it_whatever_was_said() {
        let pid = Pid::from_raw(1);
        let said = Some(Ok(Outcome::success()));
        let segv = Some(WaitStatus::Signaled(pid, Signal::SIGSEGV, true));
        assert_eq!(verdict(said, segv).unwrap_err(), "plugin crashed: SIGSEGV");
        let abrt = Some(WaitStatus::Signaled(pid, Signal::SIGABRT, false));
        assert_eq!(verdict(None, abrt).unwrap_err(), "plugin crashed: SIGABRT");
        let exit3 = Some(WaitStatus::Exited(pid, 3));
        assert_eq!(
            verdict(None, exit3).unwrap_err(),
            "plugin crashed: exit status 3"
        );
        let ok = Some(WaitStatus::Exited(pid, 0));
        assert!(verdict(Some(Ok(Outcome::success())), ok).is_ok());
    }

    #[test]
    fn session_sweep_kills_a_process_left_in_a_session() {
        // `setsid sleep` makes a session whose id is the sleep's pid; a `sh` in it forks
        // another sleep in its own process group.
        let mut leader = Command::new("setsid")
            .args(["-w", "sh", "-c", "sleep 300 & echo $!; wait"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(leader.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let sleeper = Pid::from_raw(first.trim().parse().unwrap());
        let sid = nix::unistd::getsid(Some(sleeper)).unwrap();
        assert_ne!(sid, nix::unistd::getsid(None).unwrap());
        assert!(session_members(sid).contains(&sleeper));
        kill_session(sid);
        let _ = leader.wait();
        assert!(session_members(sid).is_empty());
    }
}
