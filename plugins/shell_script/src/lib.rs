//! The `shell_script` plugin: runs a script as a job, as the original turbo-hipster's second
//! plugin did.
//!
//! For a job whose parameters name a Zuul change (`ZUUL_URL`, `ZUUL_PROJECT` and `ZUUL_REF` or
//! `ZUUL_NEWREV`), the change is first checked out into `<working_dir>/git/<project>` (through
//! the mirror cache in `git_working_dir`, logging to `git_prep.log`). Then
//! `<shell_script> <git_path> <working_dir> <unique>` runs in the working directory, with
//! `TH_JOB_NAME`, `TH_RESULT_FILE`, `TH_WORKING_DIR`, `TH_RESULTS_DIR` and the job's allowed
//! parameters in its environment; its output goes to `shell_script.log`.
//!
//! ## What the script gets
//!
//! The script runs the change's code, and a build's parameters come from whoever reaches the
//! Gearman server. So only the parameters Zuul defines (`ZUUL_*`, `LOG_PATH`,
//! `BASE_LOG_PATH`) and those the job's `pass_parameters` names reach its environment, never
//! one that changes how programs start (`BASH_ENV`, `LD_*`, `PATH`, …:
//! [`turbo_hipster_sdk::support::env`]); the others are named once in `shell_script.log`. It
//! inherits the daemon's environment without the daemon's secrets (object store keys, database
//! passwords: [`turbo_hipster_sdk::support::env::DAEMON_SECRETS`]).
//!
//! It runs contained ([`turbo_hipster_sdk::support::contain`]): when the daemon is root, as
//! `containment.run_as` (default `nobody`), never as root; with memory, process and open-file
//! limits; optionally in a network namespace with only loopback. Its working directory (with
//! the checkout) is handed over to that user. It then does not write the published results
//! directory itself: `TH_RESULTS_DIR` is `<working_dir>/script_results`, whose regular files
//! are copied into the results directory after it ended (symbolic links and special files are
//! left out; a file never replaces one the job wrote). The result file is read the same way.
//!
//! The result: a non-zero exit fails the job with `Return code from test script was non-zero
//! (N)`; on exit 0 the first line of the result file becomes the result unless it is empty or
//! starts with `SUCCESS`.
//!
//! Job configuration:
//!
//! | key | meaning |
//! |---|---|
//! | `shell_script` | required: absolute path of the script (`check-config` also checks it is an executable regular file) |
//! | `timeout` | seconds (over 0, at most 604800: a week) the script may run; unlimited when absent |
//! | `kill_grace_seconds` | seconds (0 to 3600) between SIGTERM and SIGKILL when the script is stopped (default 5) |
//! | `git_retries` | how many times to try fetching the change (1 to 100, default 3) |
//! | `git_timeout` | seconds one git command may run (default 1800) |
//! | `git_stall_timeout` | seconds a git command may go without progress (default 300) |
//! | `git_protocols` | transports `ZUUL_URL` may use (default `["http", "https", "git", "ssh", "file"]`) |
//! | `pass_parameters` | extra parameter names (`NAME` or `PREFIX*`) to pass to the script; a name that changes how programs start is a configuration error |
//! | `containment` | `{run_as, memory_mib, processes, open_files, network_namespace}` (defaults `nobody` when root, 4096, 512, 4096, false) |

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Map, Value};
use turbo_hipster_sdk::config::{present, Checker, PathNeed, SecondsRange};
use turbo_hipster_sdk::support::contain::{self, Contained, Containment};
use turbo_hipster_sdk::support::env::{describe_dropped, remove_daemon_secrets, ParameterFilter};
use turbo_hipster_sdk::support::git::{self, GitError, GitOptions, ZuulChange};
use turbo_hipster_sdk::support::process::{
    self, seconds, signal_name, Cancellation, ProcessRunner, Termination,
};
use turbo_hipster_sdk::support::LogFile;
use turbo_hipster_sdk::{export_plugin, Context, Job, JobConfig, Outcome, Plugin, PluginError};

/// The log of the script's output, in the results directory.
pub const SCRIPT_LOG: &str = "shell_script.log";
/// The log of the checkout, in the results directory.
pub const GIT_LOG: &str = "git_prep.log";
/// The result file the script may write (`TH_RESULT_FILE`), in the working directory.
pub const RESULT_FILE: &str = "th_result";
/// The copy of the result file kept with the logs.
pub const RESULT_COPY: &str = "th_result.txt";
/// The script's `TH_RESULTS_DIR` when it runs as another user, in the working directory.
pub const SCRIPT_RESULTS: &str = "script_results";
/// The most bytes of one file the script wrote that are read back or published.
const MAX_SCRIPT_FILE: u64 = 256 << 20;

/// Progress steps reported to Zuul.
const STEPS: u64 = 3;

/// A validated job configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The script to run (absolute).
    pub script: PathBuf,
    /// How long the script may run.
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// How many times to try fetching the change.
    pub git_attempts: u32,
    /// The git limits and transports (`git_timeout`, `git_stall_timeout`, `git_protocols`).
    pub git: GitOptions,
    /// Which build parameters reach the script (`pass_parameters`).
    pub parameters: ParameterFilter,
    /// How the script is contained (`containment`).
    pub containment: Containment,
}

impl Settings {
    /// Validates a job's configuration keys; unknown keys are ignored (the daemon warns).
    ///
    /// # Errors
    /// [`PluginError::Config`] listing every problem, each naming its key.
    pub fn from_config(config: &Map<String, Value>) -> Result<Self, PluginError> {
        let mut c = Checker::bare();
        let script = match present(config, "shell_script") {
            None => {
                c.required("shell_script", "the absolute path of the script to run");
                None
            }
            Some(v) => c.path("shell_script", v, Path::new(""), PathNeed::Absolute),
        };
        let timeout = present(config, "timeout").and_then(|v| c.seconds("timeout", v, TIMEOUT));
        let kill_grace = present(config, "kill_grace_seconds")
            .and_then(|v| c.seconds("kill_grace_seconds", v, KILL_GRACE))
            .unwrap_or(process::DEFAULT_KILL_GRACE);
        let git_attempts = present(config, "git_retries")
            .and_then(|v| c.integer("git_retries", v, 1..=MAX_GIT_RETRIES))
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(git::DEFAULT_ATTEMPTS);
        let mut git = GitOptions::default();
        git.read_config(&mut c, config);
        let parameters = ParameterFilter::check(&mut c, config);
        let containment = Containment::check(&mut c, config);
        c.finish_plugin(Self {
            // Missing only with an error recorded, which refuses the whole config.
            script: script.unwrap_or_default(),
            timeout,
            kill_grace,
            git_attempts,
            git,
            parameters,
            containment,
        })
    }
}

impl Settings {
    /// What a job would find wrong with the script: it must be a regular file (symlinks
    /// followed) the daemon's user may execute.
    ///
    /// # Errors
    /// Why not, as one line starting with the key.
    pub fn check_script(&self) -> Result<(), String> {
        let path = self.script.display();
        match fs::metadata(&self.script) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("shell_script: {path} does not exist"))
            }
            Err(e) => Err(format!("shell_script: cannot read {path}: {e}")),
            Ok(m) if !m.is_file() => Err(format!("shell_script: {path} is not a regular file")),
            Ok(_) => nix::unistd::access(&self.script, nix::unistd::AccessFlags::X_OK)
                .map_err(|e| format!("shell_script: {path} is not executable: {e}")),
        }
    }
}

/// The longest `timeout` accepted, in seconds (a week).
pub const MAX_TIMEOUT_SECONDS: f64 = 7.0 * 24.0 * 3600.0;
/// The longest `kill_grace_seconds` accepted (an hour).
pub const MAX_KILL_GRACE_SECONDS: f64 = 3600.0;
/// The most `git_retries` accepted.
pub const MAX_GIT_RETRIES: u64 = 100;
const TIMEOUT: SecondsRange = SecondsRange::over(0.0, MAX_TIMEOUT_SECONDS);
const KILL_GRACE: SecondsRange = SecondsRange::from_to(0.0, MAX_KILL_GRACE_SECONDS);

/// The directories of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDirs {
    /// The job's private working directory.
    pub working_dir: PathBuf,
    /// The directory published as the job's logs.
    pub results_dir: PathBuf,
}

/// The plugin: one per configured job, holding its validated settings.
#[derive(Debug)]
pub struct ShellScript {
    settings: Settings,
}

impl Plugin for ShellScript {
    const NAME: &'static str = "shell_script";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DEFAULT_JOB: &'static str = "build:shell-script";
    const DESCRIPTION: &'static str =
        "runs a script against a checkout of the change; its exit code and result file decide";

    fn new(config: &JobConfig) -> Result<Self, PluginError> {
        let settings = Settings::from_config(&config.config)?;
        // check-config also reports a script a job could not start (the daemon starts anyway:
        // the script may be installed after the config).
        if config.host.check_only {
            settings
                .check_script()
                .map_err(|why| PluginError::Config(vec![why]))?;
        }
        Ok(Self { settings })
    }

    fn run(&self, ctx: &Context<'_>) -> Result<Outcome, PluginError> {
        let dirs = JobDirs {
            working_dir: ctx.working_dir(),
            results_dir: ctx.results_dir(),
        };
        run_job(&self.settings, ctx.job(), &dirs, ctx, &|n, d| {
            ctx.progress(n, d)
        })
    }
}

export_plugin!(ShellScript);

/// Runs one job: the checkout (when the job names a change), then the script. The daemon's
/// [`Plugin::run`] calls this with its context.
///
/// # Errors
/// Problems of the worker rather than of the change: the script is missing or cannot be
/// started, a directory or log cannot be created.
pub fn run_job(
    settings: &Settings,
    job: &Job,
    dirs: &JobDirs,
    cancel: &dyn Cancellation,
    progress: &dyn Fn(u64, u64),
) -> Result<Outcome, PluginError> {
    let working_dir = &dirs.working_dir;
    let results_dir = &dirs.results_dir;
    for dir in [working_dir, results_dir] {
        fs::create_dir_all(dir)
            .map_err(|e| PluginError::io(format!("cannot create {}", dir.display()), e))?;
    }
    let mut details = Map::new();
    let mut logs = Vec::new();

    // 1. The change.
    let git_path = match ZuulChange::from_job(job) {
        None => {
            tracing::info!("the job names no Zuul change: the script gets an empty git dir");
            let path = working_dir.join("git");
            fs::create_dir_all(&path)
                .map_err(|e| PluginError::io(format!("cannot create {}", path.display()), e))?;
            path
        }
        Some(change) => {
            logs.push(GIT_LOG);
            let log_path = results_dir.join(GIT_LOG);
            let log = LogFile::create(&log_path)
                .map_err(|e| PluginError::io(format!("cannot create {}", log_path.display()), e))?;
            match checkout(settings, job, working_dir, &log, change, cancel) {
                Ok(checkout) => {
                    details.insert("commit".into(), json!(checkout.commit));
                    checkout.path
                }
                Err(GitError::Cancelled) => {
                    return Ok(finish(Outcome::aborted(), details, &logs, progress));
                }
                Err(e) => {
                    tracing::warn!("could not prepare the git checkout: {e}");
                    let outcome = Outcome::failure(format!(
                        "FAILURE - could not prepare the git checkout: {e}"
                    ));
                    return Ok(finish(outcome, details, &logs, progress));
                }
            }
        }
    };
    progress(1, STEPS);

    // 2. The script.
    let script = &settings.script;
    if !script.is_file() {
        return Err(PluginError::msg(format!(
            "the job's shell_script {} does not exist or is not a file",
            script.display()
        )));
    }
    let contained = settings
        .containment
        .prepare()
        .map_err(|e| PluginError::msg(e.to_string()))?;
    let script_results = if contained.switches_user() {
        let dir = working_dir.join(SCRIPT_RESULTS);
        fs::create_dir_all(&dir)
            .map_err(|e| PluginError::io(format!("cannot create {}", dir.display()), e))?;
        contained
            .check_executable(script)
            .and_then(|()| contained.check_reachable(working_dir))
            .and_then(|()| contained.grant(working_dir))
            .map_err(|e| PluginError::msg(e.to_string()))?;
        dir
    } else {
        results_dir.clone()
    };
    let result_file = working_dir.join(RESULT_FILE);
    let mut cmd = Command::new(script);
    cmd.arg(&git_path)
        .arg(working_dir)
        .arg(&job.unique)
        .current_dir(working_dir);
    // The daemon's secrets (object store keys, database passwords) are not the script's.
    remove_daemon_secrets(&mut cmd);
    let parameters = settings.parameters.split(&job.parameters);
    for (key, value) in &parameters.passed {
        cmd.env(key, value);
    }
    let job_name = if job.name.is_empty() {
        job.function.strip_prefix("build:").unwrap_or(&job.function)
    } else {
        job.name.as_str()
    };
    cmd.env("TH_JOB_NAME", job_name)
        .env("TH_RESULT_FILE", &result_file)
        .env("TH_WORKING_DIR", working_dir)
        .env("TH_RESULTS_DIR", &script_results);
    contained.apply(&mut cmd);

    logs.push(SCRIPT_LOG);
    let log_path = results_dir.join(SCRIPT_LOG);
    let log = LogFile::create(&log_path)
        .map_err(|e| PluginError::io(format!("cannot create {}", log_path.display()), e))?;
    if !parameters.dropped.is_empty() {
        let line = describe_dropped(&parameters.dropped);
        tracing::warn!("{line}");
        let _ = log.line("th", &line);
    }
    let _ = log.line(
        "th",
        &format!("running contained: {}", contained.describe()),
    );
    progress(2, STEPS);
    tracing::info!("running {}", script.display());
    let outcome = ProcessRunner::new(cmd)
        .log(&log)
        .timeout(settings.timeout)
        .kill_grace(settings.kill_grace)
        .run(cancel)
        .map_err(|e| PluginError::msg(e.to_string()))?;

    let duration_ms = u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX);
    details.insert("duration_ms".into(), json!(duration_ms));
    details.insert("exit_code".into(), json!(outcome.exit_code()));
    details.insert("termination".into(), json!(outcome.termination.to_string()));
    if !outcome.output_complete {
        details.insert("output_complete".into(), json!(false));
    }
    publish_script_results(&contained, &script_results, results_dir);
    // The script may have made the result file a link to a file it cannot read itself.
    let first_line = match contain::read_regular_file(&result_file, MAX_SCRIPT_FILE) {
        Ok(Some(bytes)) => {
            let text = String::from_utf8_lossy(&bytes);
            let copy = results_dir.join(RESULT_COPY);
            if let Err(e) = fs::write(&copy, text.as_bytes()) {
                tracing::warn!("cannot copy the result file to {}: {e}", copy.display());
            } else {
                logs.push(RESULT_COPY);
            }
            text.lines().next().unwrap_or("").trim().to_string()
        }
        Ok(None) | Err(_) => String::new(),
    };

    let result = match outcome.termination {
        Termination::Cancelled => Outcome::aborted(),
        Termination::TimedOut(t) => {
            Outcome::failure(format!("FAILURE - Job timed out after {}", seconds(t)))
        }
        Termination::Stalled(t) => {
            Outcome::failure(format!("FAILURE - Job made no progress for {}", seconds(t)))
        }
        Termination::Signalled(sig) => Outcome::failure(format!(
            "FAILURE - Test script was killed by signal {}",
            signal_name(sig)
        )),
        Termination::Exited(0) => {
            if first_line.is_empty() || first_line.starts_with("SUCCESS") {
                Outcome::success()
            } else {
                Outcome::failure(first_line)
            }
        }
        Termination::Exited(code) => Outcome::failure(format!(
            "Return code from test script was non-zero ({code})"
        )),
    };
    tracing::info!("{} ended: {}", script.display(), outcome.termination);
    // A script whose output could not be logged (a full disk) did not leave its results.
    let result = match log.failures() {
        Some(lost) if result.is_success() => {
            Outcome::infrastructure(turbo_hipster_sdk::results::cannot_write_results(format!(
                "{}: {lost}",
                log_path.display()
            )))
        }
        _ => result,
    };
    Ok(finish(result, details, &logs, progress))
}

/// Copies what a script that ran as another user wrote to its `TH_RESULTS_DIR` into the
/// results directory: regular files only, never replacing one that is there.
fn publish_script_results(contained: &Contained, from: &Path, results_dir: &Path) {
    if !contained.switches_user() {
        return;
    }
    match contain::copy_regular_tree(from, results_dir, MAX_SCRIPT_FILE) {
        Ok(0) => {}
        Ok(n) => tracing::info!("published {n} files the script wrote"),
        Err(e) => tracing::warn!("cannot publish the files the script wrote: {e}"),
    }
}

fn checkout(
    settings: &Settings,
    job: &Job,
    working_dir: &Path,
    log: &LogFile,
    change: Result<ZuulChange, GitError>,
    cancel: &dyn Cancellation,
) -> Result<git::Checkout, GitError> {
    let change = change.inspect_err(|e| {
        let _ = log.line("git", &e.to_string());
    })?;
    let cache = if job.host.git_working_dir.as_os_str().is_empty() {
        tracing::warn!("no git_working_dir configured: the mirror is made in the job's directory");
        working_dir.join("git_cache")
    } else {
        job.host.git_working_dir.clone()
    };
    let dest = working_dir.join("git").join(change.project());
    let options = GitOptions {
        attempts: settings.git_attempts,
        kill_grace: settings.kill_grace,
        ..settings.git.clone()
    };
    git::prepare_checkout(&change, &cache, &dest, log, &options, cancel)
}

fn finish(
    outcome: Outcome,
    mut details: Map<String, Value>,
    logs: &[&str],
    progress: &dyn Fn(u64, u64),
) -> Outcome {
    progress(STEPS, STEPS);
    details.insert("logs".into(), json!(logs));
    outcome.with_details(Value::Object(details))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;
    use turbo_hipster_sdk::support::logfile::parse_line;
    use turbo_hipster_sdk::testing::{Report, TestJob};
    use turbo_hipster_tests::git;

    /// A job whose script is `body` (run by sh), run through the SDK's test host as the daemon
    /// runs it; the script, upstream repositories and git cache live in `dir`.
    struct Setup {
        dir: tempfile::TempDir,
        script: PathBuf,
        job: TestJob,
    }

    fn setup(body: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script.sh");
        fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let cache = dir.path().join("cache");
        let job = TestJob::new("build:shell-script")
            .unique("abc-123")
            .config("shell_script", json!(script))
            .config("kill_grace_seconds", json!(1))
            .config("git_retries", json!(1))
            .host_settings(|host| host.git_working_dir = cache);
        Setup { dir, script, job }
    }

    fn run(s: &Setup) -> Report {
        s.job.run::<ShellScript>().unwrap()
    }

    fn outcome_of(s: &Setup) -> Outcome {
        run(s).outcome.unwrap()
    }

    fn set_params(s: &mut Setup, params: &[(&str, &str)]) {
        for (k, v) in params {
            s.job.parameters_mut().insert(k.to_string(), v.to_string());
        }
    }

    fn log_texts(path: &Path) -> Vec<(String, String)> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let l = parse_line(l).unwrap();
                (l.tag, l.text)
            })
            .collect()
    }

    #[test]
    fn a_passing_script_succeeds_and_logs_its_output() {
        let s = setup("echo hello; echo oops >&2; exit 0");
        let report = run(&s);
        assert_eq!(report.progress, [(1, 3), (2, 3), (3, 3)]);
        assert!(
            report.logged("the job names no Zuul change"),
            "{:?}",
            report.logs
        );
        let outcome = report.outcome.unwrap();
        assert_eq!(outcome.result, "SUCCESS");
        assert_eq!(outcome.details["exit_code"], 0);
        assert!(outcome.details["duration_ms"].is_u64());
        assert_eq!(outcome.details["logs"], json!([SCRIPT_LOG]));
        let logged = log_texts(&s.job.results_dir().join(SCRIPT_LOG));
        let output: Vec<&str> = logged
            .iter()
            .filter(|(tag, _)| tag == "output")
            .map(|(_, t)| t.as_str())
            .collect();
        assert_eq!(output.len(), 2);
        assert!(output.contains(&"hello") && output.contains(&"oops"));
        // Without a change the script gets an empty git directory.
        assert!(s.job.working_dir().join("git").is_dir());
    }

    #[test]
    fn a_non_zero_exit_fails() {
        let s = setup("echo 'FAILURE - ignored' > \"$TH_RESULT_FILE\"; exit 3");
        let outcome = outcome_of(&s);
        assert_eq!(
            outcome.result,
            "Return code from test script was non-zero (3)"
        );
        assert_eq!(outcome.details["exit_code"], 3);
    }

    #[test]
    fn a_killed_script_says_by_what() {
        let s = setup("kill -9 $$");
        let outcome = outcome_of(&s);
        assert_eq!(
            outcome.result,
            "FAILURE - Test script was killed by signal 9 (SIGKILL)"
        );
    }

    #[test]
    fn the_result_files_first_line_decides() {
        let s = setup("printf 'FAILURE - 3 tests failed\\nsecond line\\n' > \"$TH_RESULT_FILE\"");
        let outcome = outcome_of(&s);
        assert_eq!(outcome.result, "FAILURE - 3 tests failed");
        assert_eq!(
            fs::read_to_string(s.job.results_dir().join(RESULT_COPY)).unwrap(),
            "FAILURE - 3 tests failed\nsecond line\n"
        );
        assert_eq!(outcome.details["logs"], json!([SCRIPT_LOG, RESULT_COPY]));

        let s = setup("echo 'SUCCESS - all good' > \"$TH_RESULT_FILE\"");
        assert_eq!(outcome_of(&s).result, "SUCCESS");

        let s = setup(": > \"$TH_RESULT_FILE\"");
        assert_eq!(outcome_of(&s).result, "SUCCESS");
    }

    #[test]
    fn a_script_that_runs_too_long_is_stopped() {
        let mut s = setup("sleep 100");
        s.job.config_mut().insert("timeout".into(), json!(0.3));
        let start = Instant::now();
        let outcome = outcome_of(&s);
        assert_eq!(outcome.result, "FAILURE - Job timed out after 0.3 s");
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(outcome.details["exit_code"], Value::Null);
    }

    #[test]
    fn a_cancelled_job_is_aborted() {
        let s = setup("sleep 100");
        let canceller = s.job.canceller();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            canceller.cancel();
        });
        let start = Instant::now();
        let outcome = outcome_of(&s);
        canceller.join().unwrap();
        assert_eq!(outcome.result, "ABORTED");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn the_script_gets_its_arguments_and_environment() {
        let mut s = setup(
            "{ echo \"args=$1|$2|$3\"; echo \"pwd=$(pwd)\"; echo \"name=$TH_JOB_NAME\"; \
             echo \"result=$TH_RESULT_FILE\"; echo \"work=$TH_WORKING_DIR\"; \
             echo \"results=$TH_RESULTS_DIR\"; echo \"change=$ZUUL_CHANGE\"; \
             echo \"pipeline=$ZUUL_PIPELINE\"; } > \"$TH_RESULTS_DIR/env.txt\"",
        );
        set_params(
            &mut s,
            &[
                ("ZUUL_CHANGE", "65615"),
                ("ZUUL_PIPELINE", "check me"),
                ("TH_JOB_NAME", "not this"),
                ("BAD=NAME", "x"),
            ],
        );
        assert!(outcome_of(&s).is_success());
        let env = fs::read_to_string(s.job.results_dir().join("env.txt")).unwrap();
        let work_dir = s.job.working_dir();
        let work = work_dir.display();
        // A root daemon runs the script as nobody, which writes its own results directory.
        let results = if nix::unistd::Uid::effective().is_root() {
            work_dir.join(SCRIPT_RESULTS)
        } else {
            s.job.results_dir()
        };
        let results = results.display();
        let real_work = fs::canonicalize(&work_dir).unwrap();
        assert_eq!(
            env,
            format!(
                "args={work}/git|{work}|abc-123\npwd={}\nname=shell-script\n\
                 result={work}/th_result\nwork={work}\nresults={results}\nchange=65615\n\
                 pipeline=check me\n",
                real_work.display()
            )
        );
    }

    #[test]
    fn only_allowed_parameters_reach_the_script() {
        let mut s = setup(
            "{ echo \"bash_env=${BASH_ENV-unset}\"; echo \"ld=${LD_PRELOAD-unset}\"; \
             echo \"mine=${MY_VAR-unset}\"; echo \"other=${OTHER-unset}\"; \
             echo \"log=$LOG_PATH\"; echo \"path_is_ours=$([ \"$PATH\" != /evil ] && echo yes)\"; \
             } > \"$TH_RESULTS_DIR/env.txt\"",
        );
        // Where the script's user (nobody, under a root daemon) could create the marker.
        let open_dir = s.dir.path().join("open");
        fs::create_dir(&open_dir).unwrap();
        fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o777)).unwrap();
        let marker = open_dir.join("evil-ran");
        let evil = s.dir.path().join("evil.sh");
        fs::write(&evil, format!("touch '{}'\n", marker.display())).unwrap();
        s.job
            .config_mut()
            .insert("pass_parameters".into(), json!(["MY_VAR"]));
        let evil = evil.to_str().unwrap();
        set_params(
            &mut s,
            &[
                ("BASH_ENV", evil),
                ("ENV", evil),
                ("LD_PRELOAD", "/nonexistent.so"),
                ("PATH", "/evil"),
                ("MY_VAR", "mine"),
                ("OTHER", "x"),
                ("LOG_PATH", "12/34/1/check/x/abc"),
            ],
        );
        // The script runs under bash, which honours BASH_ENV.
        let script = fs::read_to_string(&s.script).unwrap();
        fs::write(&s.script, script.replacen("#!/bin/sh", "#!/bin/bash", 1)).unwrap();
        assert!(outcome_of(&s).is_success());
        assert!(!marker.exists(), "BASH_ENV ran");
        let env = fs::read_to_string(s.job.results_dir().join("env.txt")).unwrap();
        assert_eq!(
            env,
            "bash_env=unset\nld=unset\nmine=mine\nother=unset\nlog=12/34/1/check/x/abc\n\
             path_is_ours=yes\n"
        );
        let logged = log_texts(&s.job.results_dir().join(SCRIPT_LOG));
        let dropped = logged
            .iter()
            .find(|(_, t)| t.starts_with("build parameters not passed"))
            .unwrap();
        assert!(
            dropped
                .1
                .ends_with("\"BASH_ENV\", \"ENV\", \"LD_PRELOAD\", \"OTHER\", \"PATH\""),
            "{dropped:?}"
        );
    }

    #[test]
    fn a_result_file_linked_elsewhere_is_not_read() {
        let s = setup("ln -s /etc/passwd \"$TH_RESULT_FILE\"");
        let outcome = outcome_of(&s);
        assert_eq!(outcome.result, "SUCCESS");
        assert!(!s.job.results_dir().join(RESULT_COPY).exists());
    }

    #[test]
    fn a_missing_script_is_a_clear_error() {
        let mut s = setup("exit 0");
        let nowhere = s.dir.path().join("nowhere.sh");
        s.job
            .config_mut()
            .insert("shell_script".into(), json!(nowhere));
        let err = run(&s).outcome.unwrap_err();
        assert!(
            err.to_string().contains("nowhere.sh does not exist"),
            "{err}"
        );
    }

    /// An upstream `<dir>/upstream/openstack/nova` with `refs/zuul/master/Zabc`.
    fn upstream(s: &Setup) -> (String, String) {
        let base = s.dir.path().join("upstream");
        let repo = base.join("openstack/nova");
        fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "-q"]);
        fs::write(repo.join("setup.py"), "print('nova')\n").unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "first"]);
        let sha = git(&repo, &["rev-parse", "HEAD"]);
        git(&repo, &["update-ref", "refs/zuul/master/Zabc", &sha]);
        (base.display().to_string(), sha)
    }

    #[test]
    fn a_zuul_change_is_checked_out_first() {
        let mut s = setup("cat \"$1/setup.py\"; git -C \"$1\" rev-parse HEAD");
        let (url, sha) = upstream(&s);
        set_params(
            &mut s,
            &[
                ("ZUUL_URL", url.as_str()),
                ("ZUUL_PROJECT", "openstack/nova"),
                ("ZUUL_REF", "refs/zuul/master/Zabc"),
            ],
        );
        let outcome = outcome_of(&s);
        assert_eq!(outcome.result, "SUCCESS");
        assert_eq!(outcome.details["commit"], sha);
        assert_eq!(outcome.details["logs"], json!([GIT_LOG, SCRIPT_LOG]));
        let output: Vec<String> = log_texts(&s.job.results_dir().join(SCRIPT_LOG))
            .into_iter()
            .filter(|(tag, _)| tag == "output")
            .map(|(_, t)| t)
            .collect();
        assert_eq!(output, ["print('nova')", sha.as_str()]);
        assert!(s
            .job
            .working_dir()
            .join("git/openstack/nova/setup.py")
            .is_file());
        assert!(s.dir.path().join("cache/openstack/nova.git").is_dir());
        assert!(log_texts(&s.job.results_dir().join(GIT_LOG))
            .iter()
            .any(|(_, t)| t.starts_with("checked out")));
    }

    #[test]
    fn a_missing_zuul_ref_fails_the_job_without_running_the_script() {
        let mut s = setup("touch \"$TH_WORKING_DIR/ran\"");
        let (url, _) = upstream(&s);
        set_params(
            &mut s,
            &[
                ("ZUUL_URL", url.as_str()),
                ("ZUUL_PROJECT", "openstack/nova"),
                ("ZUUL_REF", "refs/zuul/master/Zmissing"),
            ],
        );
        let report = run(&s);
        let outcome = report.outcome.unwrap();
        assert_eq!(
            outcome.result,
            format!(
                "FAILURE - could not prepare the git checkout: git fetch of \
                 refs/zuul/master/Zmissing from {url}/openstack/nova failed: couldn't find \
                 remote ref refs/zuul/master/Zmissing"
            )
        );
        assert_eq!(report.progress, [(3, 3)]);
        assert!(!s.job.working_dir().join("ran").exists());

        set_params(&mut s, &[("ZUUL_PROJECT", "../../etc")]);
        let outcome = outcome_of(&s);
        assert!(
            outcome
                .result
                .starts_with("FAILURE - could not prepare the git checkout: invalid Zuul change"),
            "{}",
            outcome.result
        );
    }

    #[test]
    fn a_job_cancelled_during_the_checkout_is_aborted() {
        let mut s = setup("touch \"$TH_WORKING_DIR/ran\"");
        let (url, _) = upstream(&s);
        set_params(
            &mut s,
            &[
                ("ZUUL_URL", url.as_str()),
                ("ZUUL_PROJECT", "openstack/nova"),
                ("ZUUL_REF", "refs/zuul/master/Zabc"),
            ],
        );
        s.job.canceller().cancel();
        let outcome = outcome_of(&s);
        assert_eq!(outcome.result, "ABORTED");
        assert!(!s.job.working_dir().join("ran").exists());
    }

    #[test]
    fn configuration_problems_are_reported_together() {
        let config = |v: Value| v.as_object().unwrap().clone();
        let ok = Settings::from_config(&config(json!({
            "shell_script": "/usr/bin/true",
            "timeout": 90,
            "kill_grace_seconds": 0.5,
            "git_retries": 5,
            "something_else": true,
        })))
        .unwrap();
        assert_eq!(
            ok,
            Settings {
                script: "/usr/bin/true".into(),
                timeout: Some(Duration::from_secs(90)),
                kill_grace: Duration::from_millis(500),
                git_attempts: 5,
                git: GitOptions::default(),
                parameters: ParameterFilter::zuul_only(),
                containment: Containment::default(),
            }
        );
        let defaults = Settings::from_config(&config(json!({"shell_script": "/x"}))).unwrap();
        assert_eq!(defaults.timeout, None);
        assert_eq!(defaults.kill_grace, Duration::from_secs(5));
        assert_eq!(defaults.git_attempts, 3);

        let PluginError::Config(problems) = Settings::from_config(&config(json!({
            "shell_script": "run.sh",
            "timeout": 0,
            "kill_grace_seconds": "5",
            "git_retries": 0,
        })))
        .unwrap_err() else {
            panic!("not a config error");
        };
        let keys: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "shell_script",
                "timeout",
                "kill_grace_seconds",
                "git_retries"
            ],
            "{problems:?}"
        );
        assert!(problems[0].contains("absolute"), "{problems:?}");

        for (value, word) in [
            (json!({}), "required"),
            (json!({"shell_script": 3}), "expected a string"),
        ] {
            let PluginError::Config(p) = Settings::from_config(&config(value)).unwrap_err() else {
                panic!()
            };
            assert!(
                p[0].starts_with("shell_script:") && p[0].contains(word),
                "{p:?}"
            );
        }
        for timeout in [json!(-1), json!("10"), json!(true), json!(1e300)] {
            let err =
                Settings::from_config(&config(json!({"shell_script": "/x", "timeout": timeout})))
                    .unwrap_err();
            assert!(err.to_string().starts_with("timeout:"), "{err}");
        }
    }

    #[test]
    fn the_plugin_validates_its_job_config() {
        let mut config = JobConfig::default();
        assert!(ShellScript::new(&config).is_err());
        config
            .config
            .insert("shell_script".into(), json!("/bin/true"));
        assert!(ShellScript::new(&config).is_ok());
        assert_eq!(ShellScript::NAME, "shell_script");
        assert_eq!(ShellScript::DEFAULT_JOB, "build:shell-script");
    }
}
