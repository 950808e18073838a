//! Prepares a checkout of the change Zuul asks a job to test.
//!
//! Zuul names the change with `ZUUL_URL`, `ZUUL_PROJECT` and `ZUUL_REF` (a ref its merger
//! prepared, `refs/zuul/master/Z…`), or `ZUUL_NEWREV` (a commit) for ref updates. Each project
//! has a bare mirror under the git cache directory, `<git_working_dir>/<project>.git`, shared
//! by all jobs and guarded by an `flock` on `<project>.git.lock` next to it. A job fetches its
//! ref into the mirror (retrying failures with a growing pause), then makes its own repository
//! that borrows the mirror's objects (like `git clone --shared`: nothing is copied) and checks
//! the fetched commit out, detached. Every git command's output goes to the job's
//! `git_prep.log`.
//!
//! ## Transports and stalls
//!
//! `ZUUL_URL` comes from the network. git can reach a repository through transports that run
//! commands (`ext::sh -c …`) or read a file descriptor (`fd::7`, which made a fetch wait for
//! ever): a job allows only [`GitOptions::protocols`] (default [`DEFAULT_PROTOCOLS`],
//! configurable with `git_protocols`). The URL's transport is worked out the way git does it
//! ([`transport_of`]) and a URL with any other is refused before git runs; git itself gets
//! the same list as `GIT_ALLOW_PROTOCOL`, so a redirect or a submodule cannot use another
//! one either.
//!
//! A git command is stopped when it runs longer than [`GitOptions::command_timeout`]
//! (`git_timeout`, default 30 min), and also when it makes no progress for
//! [`GitOptions::stall_timeout`] (`git_stall_timeout`, default 5 min): no output and no
//! growth of the directory it writes (the mirror's objects for a fetch, the checkout for a
//! checkout). Over HTTP git stops by itself first (`http.lowSpeedLimit` of 1 byte/s for the
//! same time). A stalled fetch counts as a failed attempt, and the mirror's lock is released
//! when the job's preparation ends, so the next job for the project proceeds.
//!
//! The mirror's [`FETCHED_REF`] holds only the latest fetch; older fetched commits stay in the
//! mirror as unreachable objects, which `git gc` keeps for two weeks by default. Never run
//! `git gc --prune=now` on a mirror while jobs use it.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::logfile::LogFile;
use super::process::{
    seconds, Cancellation, ProcessError, ProcessOutcome, ProcessRunner, Stream, Termination,
};
use crate::Job;

/// How many times a fetch is tried by default.
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// The pause after the first failed fetch; it doubles after each further failure.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(2);
/// The default limit on one git command.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The default limit on a git command that makes no progress.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(300);
/// The transports a job may fetch through unless its configuration says otherwise.
pub const DEFAULT_PROTOCOLS: [&str; 5] = ["http", "https", "git", "ssh", "file"];
/// Transports that can never be allowed: they run a command or use a descriptor.
pub const NEVER_PROTOCOLS: [&str; 2] = ["ext", "fd"];
/// The ref in the mirror that keeps the last fetched commit from being garbage-collected.
pub const FETCHED_REF: &str = "refs/turbo-hipster/fetched";

/// The tag of git lines in the log.
const TAG: &str = "git";

/// Why a checkout could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The change's description is unusable; one entry per problem.
    #[error("invalid Zuul change: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// Every fetch attempt failed; `message` is git's last error line.
    #[error("git fetch of {reference} from {remote} failed: {message}")]
    Fetch {
        /// The ref (or commit) asked for.
        reference: String,
        /// `<ZUUL_URL>/<ZUUL_PROJECT>`.
        remote: String,
        /// Why the last attempt failed.
        message: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// Another git command failed.
    #[error("{command} failed: {message}")]
    Command {
        /// The command, e.g. `git clone`.
        command: String,
        /// git's last error line, or how the command ended.
        message: String,
    },
    /// The destination already holds something.
    #[error("the checkout directory {0} exists and is not empty")]
    DestinationNotEmpty(PathBuf),
    /// The job was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// A file system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// git could not be run.
    #[error(transparent)]
    Process(#[from] ProcessError),
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> GitError {
    let context = context.into();
    move |source| GitError::Io { context, source }
}

/// A change to check out: where from, which project, which ref. Validated on creation, so its
/// parts are safe to pass to git as arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZuulChange {
    url: String,
    project: String,
    reference: String,
}

impl ZuulChange {
    /// Validates a change's description.
    ///
    /// - `url` (`ZUUL_URL`): not empty, no leading `-`, no whitespace or control characters.
    /// - `project` (`ZUUL_PROJECT`): `name(/name)*`, each name of `[A-Za-z0-9._-]`, not `.` or
    ///   `..`, not starting with `-`; a name other than the last must not end in `.git`.
    /// - `reference` (`ZUUL_REF` or `ZUUL_NEWREV`): not empty, no leading `-` or `+`, no `..`,
    ///   no whitespace, control characters or any of `:~^?*[\`.
    ///
    /// ```
    /// use turbo_hipster_sdk::support::git::ZuulChange;
    ///
    /// let c = ZuulChange::new("http://zuul/p/", "openstack/nova", "refs/zuul/master/Z1").unwrap();
    /// assert_eq!(c.remote(), "http://zuul/p/openstack/nova");
    /// assert!(ZuulChange::new("http://zuul/p", "../etc", "master").is_err());
    /// ```
    ///
    /// # Errors
    /// [`GitError::Invalid`], naming every problem.
    pub fn new(url: &str, project: &str, reference: &str) -> Result<Self, GitError> {
        let mut problems = Vec::new();
        if let Err(why) = check_url(url) {
            problems.push(format!("ZUUL_URL {url:?} {why}"));
        }
        if let Err(why) = check_project(project) {
            problems.push(format!("ZUUL_PROJECT {project:?} {why}"));
        }
        if let Err(why) = check_ref(reference) {
            problems.push(format!("ref {reference:?} {why}"));
        }
        if !problems.is_empty() {
            return Err(GitError::Invalid(problems));
        }
        Ok(Self {
            url: url.to_string(),
            project: project.to_string(),
            reference: reference.to_string(),
        })
    }

    /// The change a job names: `ZUUL_URL`, `ZUUL_PROJECT` and `ZUUL_REF`, or `ZUUL_NEWREV`
    /// when `ZUUL_REF` is absent or empty. `None` when any of them is missing.
    ///
    /// # Errors
    /// Inside the `Some`: the parameters are invalid (see [`ZuulChange::new`]).
    pub fn from_job(job: &Job) -> Option<Result<Self, GitError>> {
        let url = job.param("ZUUL_URL")?;
        let project = job.param("ZUUL_PROJECT")?;
        let reference = job.param("ZUUL_REF").or_else(|| job.param("ZUUL_NEWREV"))?;
        Some(Self::new(url, project, reference))
    }

    /// `ZUUL_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `ZUUL_PROJECT`.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The ref or commit to fetch.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The repository to fetch from: `<ZUUL_URL>/<ZUUL_PROJECT>`.
    pub fn remote(&self) -> String {
        format!("{}/{}", self.url.trim_end_matches('/'), self.project)
    }
}

fn bad_char(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

fn check_url(url: &str) -> Result<(), &'static str> {
    if url.is_empty() {
        Err("is empty")
    } else if url.starts_with('-') {
        Err("starts with '-'")
    } else if url.chars().any(bad_char) {
        Err("contains whitespace or control characters")
    } else {
        Ok(())
    }
}

fn check_project(project: &str) -> Result<(), &'static str> {
    if project.is_empty() {
        return Err("is empty");
    }
    let names: Vec<&str> = project.split('/').collect();
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err("has an empty path component");
        }
        if *name == "." || *name == ".." {
            return Err("has a '.' or '..' component");
        }
        if name.starts_with('-') {
            return Err("has a component starting with '-'");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err("may only contain letters, digits, '.', '_', '-' and '/'");
        }
        if i + 1 < names.len() && name.ends_with(".git") {
            return Err("has a directory component ending in .git");
        }
    }
    Ok(())
}

fn check_ref(reference: &str) -> Result<(), &'static str> {
    if reference.is_empty() {
        Err("is empty")
    } else if reference.starts_with('-') || reference.starts_with('+') {
        Err("starts with '-' or '+'")
    } else if reference.contains("..") {
        Err("contains '..'")
    } else if reference.chars().any(bad_char) {
        Err("contains whitespace or control characters")
    } else if reference.contains([':', '~', '^', '?', '*', '[', '\\']) {
        Err("contains one of ':~^?*[\\'")
    } else {
        Ok(())
    }
}

/// How hard to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitOptions {
    /// How many times to try the fetch (at least once).
    pub attempts: u32,
    /// The pause after the first failed attempt; doubled after each further one.
    pub backoff: Duration,
    /// The limit on each git command (a hung fetch counts as a failed attempt).
    pub command_timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when a git command is stopped.
    pub kill_grace: Duration,
    /// Stop a git command that makes no progress for this long (a stalled fetch counts as a
    /// failed attempt).
    pub stall_timeout: Option<Duration>,
    /// The transports allowed (`http`, `https`, `git`, `ssh`, `file`, …).
    pub protocols: Vec<String>,
}

impl Default for GitOptions {
    fn default() -> Self {
        Self {
            attempts: DEFAULT_ATTEMPTS,
            backoff: DEFAULT_BACKOFF,
            command_timeout: Some(DEFAULT_COMMAND_TIMEOUT),
            kill_grace: super::process::DEFAULT_KILL_GRACE,
            stall_timeout: Some(DEFAULT_STALL_TIMEOUT),
            protocols: DEFAULT_PROTOCOLS.map(String::from).to_vec(),
        }
    }
}

impl GitOptions {
    /// Reads the job configuration keys `git_timeout` (seconds one git command may run, 1 to
    /// 86400), `git_stall_timeout` (seconds without progress, 1 to 86400) and `git_protocols`
    /// (a non-empty list of transport names) into `self`, recording every problem in `c`.
    ///
    /// ```
    /// use serde_json::json;
    /// use turbo_hipster_sdk::config::Checker;
    /// use turbo_hipster_sdk::support::git::GitOptions;
    ///
    /// let config = json!({"git_stall_timeout": 60, "git_protocols": ["https"]});
    /// let mut options = GitOptions::default();
    /// let mut c = Checker::bare();
    /// options.read_config(&mut c, config.as_object().unwrap());
    /// assert!(!c.has_errors());
    /// assert_eq!(options.protocols, ["https"]);
    /// let bad = json!({"git_protocols": ["ext"], "git_timeout": 0});
    /// options.read_config(&mut c, bad.as_object().unwrap());
    /// assert_eq!(c.into_lines().0, [
    ///     "git_timeout: must be between 1 and 86400 seconds, got 0",
    ///     "git_protocols[0]: ext is never allowed: it runs a command or reads a file descriptor",
    /// ]);
    /// ```
    pub fn read_config(
        &mut self,
        c: &mut crate::config::Checker,
        config: &serde_json::Map<String, serde_json::Value>,
    ) {
        use crate::config::{present, SecondsRange};
        const RANGE: SecondsRange = SecondsRange::from_to(1.0, 86_400.0);
        if let Some(d) =
            present(config, "git_timeout").and_then(|v| c.seconds("git_timeout", v, RANGE))
        {
            self.command_timeout = Some(d);
        }
        if let Some(d) = present(config, "git_stall_timeout")
            .and_then(|v| c.seconds("git_stall_timeout", v, RANGE))
        {
            self.stall_timeout = Some(d);
        }
        if let Some(list) =
            present(config, "git_protocols").and_then(|v| c.list("git_protocols", v))
        {
            if list.is_empty() {
                c.error("git_protocols", crate::config::says::EMPTY);
            } else {
                self.protocols = read_protocols(c, list);
            }
        }
    }
}

/// The transports of `git_protocols`, every bad one recorded in `c`.
fn read_protocols(c: &mut crate::config::Checker, list: &[serde_json::Value]) -> Vec<String> {
    let mut protocols = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let at = crate::config::index("git_protocols", i);
        match c.string(&at, item) {
            Some(p) if NEVER_PROTOCOLS.contains(&p) => c.error(
                &at,
                format!("{p} is never allowed: it runs a command or reads a file descriptor"),
            ),
            Some(p)
                if !p.is_empty()
                    && p.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b)
                    }) =>
            {
                protocols.push(p.to_string());
            }
            Some(p) => c.error(
                &at,
                format!("{p:?} is not a transport name (lower-case letters, digits, + . -)"),
            ),
            None => {}
        }
    }
    protocols
}

/// The transport git uses for `url`, as git works it out: `<name>::…` is the remote helper
/// `<name>` (`fd::7` → `fd`, `ext::…` → `ext`); a URL without a colon, or with a slash before
/// its first colon, is a local path (`file`); `<scheme>://…` is the scheme (`git+ssh` and
/// `ssh+git` are `ssh`); anything else (`host:path`) is `ssh`.
///
/// ```
/// use turbo_hipster_sdk::support::git::transport_of;
///
/// assert_eq!(transport_of("https://review.example.org/p"), "https");
/// assert_eq!(transport_of("fd::7"), "fd");
/// assert_eq!(transport_of("/srv/git"), "file");
/// assert_eq!(transport_of("git@host:repo"), "ssh");
/// ```
pub fn transport_of(url: &str) -> String {
    let scheme_len = url
        .bytes()
        .enumerate()
        .take_while(|&(i, b)| {
            b.is_ascii_alphabetic() || (i > 0 && (b.is_ascii_digit() || b"+.-".contains(&b)))
        })
        .count();
    let (scheme, rest) = url.split_at(scheme_len);
    if scheme_len > 0 && rest.starts_with("::") {
        return scheme.to_ascii_lowercase();
    }
    match (url.find(':'), url.find('/')) {
        (None, _) => return "file".into(),
        (Some(colon), Some(slash)) if slash < colon => return "file".into(),
        _ => {}
    }
    if scheme_len > 0 && rest.starts_with("://") {
        match scheme.to_ascii_lowercase().as_str() {
            "git+ssh" | "ssh+git" => "ssh".into(),
            other => other.into(),
        }
    } else {
        "ssh".into()
    }
}

/// Refuses a change whose `ZUUL_URL` uses a transport `options` does not allow.
fn check_transport(change: &ZuulChange, options: &GitOptions) -> Result<(), GitError> {
    let transport = transport_of(&change.url);
    if options.protocols.contains(&transport) && !NEVER_PROTOCOLS.contains(&transport.as_str()) {
        return Ok(());
    }
    Err(GitError::Invalid(vec![format!(
        "ZUUL_URL {:?} uses the git transport {transport:?}, which this job does not allow \
         (allowed: {})",
        change.url,
        options.protocols.join(", ")
    )]))
}

/// A prepared checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The working tree, with the change checked out (detached `HEAD`).
    pub path: PathBuf,
    /// The full sha of the checked-out commit.
    pub commit: String,
    /// The project's mirror in the cache (the checkout borrows its objects: it must stay).
    pub mirror: PathBuf,
}

/// The mirror of `project` in `cache_dir`: `<cache_dir>/<project>.git`.
pub fn mirror_path(cache_dir: &Path, project: &str) -> PathBuf {
    cache_dir.join(format!("{project}.git"))
}

/// Checks `change` out into `dest` (which must not exist or be empty), through the project's
/// mirror in `cache_dir`, logging every git command and its output to `log`.
///
/// ```no_run
/// use std::path::Path;
/// use turbo_hipster_sdk::support::git::{prepare_checkout, GitOptions, ZuulChange};
/// use turbo_hipster_sdk::support::{LogFile, process::NeverCancelled};
///
/// let change = ZuulChange::new("http://zuul/p", "openstack/nova", "refs/zuul/master/Z1")?;
/// let log = LogFile::create("/tmp/job/results/git_prep.log")?;
/// let checkout = prepare_checkout(
///     &change,
///     Path::new("/var/lib/turbo-hipster/git"),
///     Path::new("/tmp/job/git/openstack/nova"),
///     &log,
///     &GitOptions::default(),
///     &NeverCancelled,
/// )?;
/// println!("testing {}", checkout.commit);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`GitError::Fetch`] when the ref cannot be fetched (with git's reason, e.g. `couldn't find
/// remote ref …`), [`GitError::Cancelled`] when `cancel` fires, and the other variants for
/// local failures.
pub fn prepare_checkout(
    change: &ZuulChange,
    cache_dir: &Path,
    dest: &Path,
    log: &LogFile,
    options: &GitOptions,
    cancel: &dyn Cancellation,
) -> Result<Checkout, GitError> {
    let git = Git {
        log,
        cancel,
        options,
    };
    git.note(&format!(
        "preparing {} at {} from {}",
        change.reference,
        dest.display(),
        change.remote()
    ));
    check_transport(change, options).inspect_err(|e| git.note(&e.to_string()))?;
    check_destination(dest)?;

    // Absolute: the checkout refers to the mirror's objects by path.
    let cache_dir = std::path::absolute(cache_dir)
        .map_err(io_error(format!("cannot resolve {}", cache_dir.display())))?;
    let mirror = mirror_path(&cache_dir, &change.project);
    if let Some(parent) = mirror.parent() {
        fs::create_dir_all(parent)
            .map_err(io_error(format!("cannot create {}", parent.display())))?;
    }
    let commit = {
        let _lock = git.lock(&mirror)?;
        if mirror.join("HEAD").is_file() {
            git.note(&format!("reusing the mirror {}", mirror.display()));
        } else {
            git.init("--bare", &mirror)?;
        }
        git.fetch(change, &mirror)?;
        git.rev_parse(&mirror, &format!("{FETCHED_REF}^{{commit}}"))?
    };

    // What `git clone --shared` does, without its "cloned an empty repository" warning (the
    // mirror has no branches): borrow the mirror's objects through an alternates file.
    git.init("--quiet", dest)?;
    let alternates = dest.join(".git/objects/info/alternates");
    let mut objects = mirror.join("objects").into_os_string();
    objects.push("\n");
    fs::write(&alternates, objects.as_encoded_bytes())
        .map_err(io_error(format!("cannot write {}", alternates.display())))?;
    git.note(&format!(
        "{} borrows the objects of {}",
        dest.display(),
        mirror.display()
    ));
    git.run_ok(
        "git checkout",
        Some(dest),
        ["checkout", "--quiet", "--detach", &commit].map(OsStr::new),
    )?;
    let head = git.rev_parse(&dest.join(".git"), "HEAD")?;
    if head != commit {
        return Err(GitError::Command {
            command: "git checkout".into(),
            message: format!("HEAD is {head}, expected {commit}"),
        });
    }
    git.note(&format!("checked out {commit} at {}", dest.display()));
    Ok(Checkout {
        path: dest.to_path_buf(),
        commit,
        mirror,
    })
}

fn check_destination(dest: &Path) -> Result<(), GitError> {
    match fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(GitError::DestinationNotEmpty(dest.to_path_buf()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(format!("cannot read {}", dest.display()))(e)),
    }
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)
            .map_err(io_error(format!("cannot create {}", parent.display())))?;
    }
    Ok(())
}

/// What a finished git command said.
struct GitRun {
    outcome: ProcessOutcome,
    stdout: Vec<String>,
    /// The first `fatal:` or `error:` line, else the last non-empty line, of stderr.
    reason: Option<String>,
}

impl GitRun {
    /// Why it failed, in one line: git's error line, or how it ended.
    fn failure(&self) -> String {
        match (&self.outcome.termination, &self.reason) {
            (Termination::TimedOut(t), _) => format!("timed out after {}", seconds(*t)),
            (Termination::Stalled(t), _) => format!("stalled: no progress for {}", seconds(*t)),
            (_, Some(line)) => {
                let line = line.trim();
                ["fatal: ", "error: "]
                    .iter()
                    .find_map(|p| line.strip_prefix(p))
                    .unwrap_or(line)
                    .to_string()
            }
            (t, None) => t.to_string(),
        }
    }
}

struct Git<'a> {
    log: &'a LogFile,
    cancel: &'a dyn Cancellation,
    options: &'a GitOptions,
}

impl Git<'_> {
    fn note(&self, text: &str) {
        // A log that cannot be written reports it itself, once, with a count.
        let _ = self.log.line(TAG, text);
    }

    /// Runs git; `Err` only when it could not run or the job was cancelled. `watch` is the
    /// directory whose growth counts as progress for the stall watchdog.
    fn run<I, S>(
        &self,
        cwd: Option<&Path>,
        watch: Option<&Path>,
        args: I,
    ) -> Result<GitRun, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("git");
        if let Some(stall) = self.options.stall_timeout {
            // Over HTTP, git gives up by itself on a connection slower than 1 byte/s.
            cmd.args(["-c", "http.lowSpeedLimit=1", "-c"])
                .arg(format!("http.lowSpeedTime={}", stall.as_secs().max(1)));
        }
        cmd.args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ALLOW_PROTOCOL", self.options.protocols.join(":"))
            .env("LC_ALL", "C");
        for var in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_OBJECT_DIRECTORY",
            "GIT_ALTERNATE_OBJECT_DIRECTORIES",
            "GIT_CEILING_DIRECTORIES",
            "GIT_SSH_COMMAND",
            "GIT_PROXY_COMMAND",
            "GIT_EXEC_PATH",
            "GIT_CONFIG_PARAMETERS",
        ] {
            cmd.env_remove(var);
        }
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let mut stdout = Vec::new();
        let mut fatal: Option<String> = None;
        let mut last_stderr = None;
        let outcome = ProcessRunner::new(cmd)
            .log(self.log)
            .tag(TAG)
            .timeout(self.options.command_timeout)
            .stall_timeout(
                self.options.stall_timeout,
                watch.map(|dir| {
                    let dir = dir.to_path_buf();
                    Box::new(move || tree_size(&dir)) as Box<dyn FnMut() -> u64>
                }),
            )
            .kill_grace(self.options.kill_grace)
            .on_line(|line| match line.stream {
                Stream::Stdout => stdout.push(line.text.clone()),
                Stream::Stderr if !line.text.trim().is_empty() => {
                    // git explains first ("fatal: '…' does not appear to be a git
                    // repository"), then adds generic advice; keep the explanation.
                    let text = line.text.trim_start();
                    if fatal.is_none() && (text.starts_with("fatal:") || text.starts_with("error:"))
                    {
                        fatal = Some(line.text.clone());
                    }
                    last_stderr = Some(line.text.clone());
                }
                Stream::Stderr => {}
            })
            .run(self.cancel)?;
        if outcome.termination == Termination::Cancelled {
            return Err(GitError::Cancelled);
        }
        Ok(GitRun {
            outcome,
            stdout,
            reason: fatal.or(last_stderr),
        })
    }

    fn run_ok<I, S>(&self, what: &str, cwd: Option<&Path>, args: I) -> Result<GitRun, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let run = self.run(cwd, cwd, args)?;
        if run.outcome.success() {
            Ok(run)
        } else {
            Err(GitError::Command {
                command: what.to_string(),
                message: run.failure(),
            })
        }
    }

    /// `git init <flag> <dir>` with `master` as the initial branch.
    fn init(&self, flag: &str, dir: &Path) -> Result<(), GitError> {
        self.run_ok(
            "git init",
            None,
            [
                OsStr::new("-c"),
                OsStr::new("init.defaultBranch=master"),
                OsStr::new("init"),
                OsStr::new(flag),
                dir.as_os_str(),
            ],
        )
        .map(drop)
    }

    fn rev_parse(&self, git_dir: &Path, what: &str) -> Result<String, GitError> {
        let run = self.run_ok(
            "git rev-parse",
            None,
            [
                OsStr::new("--git-dir"),
                git_dir.as_os_str(),
                OsStr::new("rev-parse"),
                OsStr::new("--verify"),
                OsStr::new(what),
            ],
        )?;
        match run.stdout.first() {
            Some(sha) if sha.len() >= 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(sha.clone())
            }
            other => Err(GitError::Command {
                command: "git rev-parse".into(),
                message: format!("unexpected output {other:?}"),
            }),
        }
    }

    /// Fetches the change into the mirror's [`FETCHED_REF`], retrying failures that may pass.
    fn fetch(&self, change: &ZuulChange, mirror: &Path) -> Result<(), GitError> {
        let remote = change.remote();
        let refspec = format!("+{}:{FETCHED_REF}", change.reference);
        let attempts = self.options.attempts.max(1);
        let mut pause = self.options.backoff;
        let mut attempt = 1;
        loop {
            self.note(&format!(
                "fetching {} from {remote} (attempt {attempt} of {attempts})",
                change.reference
            ));
            let run = self.run(
                None,
                Some(&mirror.join("objects")),
                [
                    OsStr::new("--git-dir"),
                    mirror.as_os_str(),
                    OsStr::new("fetch"),
                    OsStr::new("--no-tags"),
                    OsStr::new("--"),
                    OsStr::new(&remote),
                    OsStr::new(&refspec),
                ],
            )?;
            if run.outcome.success() {
                return Ok(());
            }
            let message = run.failure();
            let permanent = is_missing_ref(&message);
            if permanent || attempt >= attempts {
                self.note(&format!("fetch failed: {message}"));
                return Err(GitError::Fetch {
                    reference: change.reference.clone(),
                    remote,
                    message,
                    attempts: attempt,
                });
            }
            self.note(&format!(
                "fetch failed: {message}; trying again in {}",
                seconds(pause)
            ));
            if self.cancel.wait_cancelled(pause) {
                return Err(GitError::Cancelled);
            }
            pause = pause.saturating_mul(2);
            attempt += 1;
        }
    }

    /// Takes the mirror's lock, waiting (cancellably) while another job holds it.
    fn lock(&self, mirror: &Path) -> Result<Flock<File>, GitError> {
        let mut path = mirror.as_os_str().to_owned();
        path.push(".lock");
        let path = PathBuf::from(path);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error(format!("cannot open {}", path.display())))?;
        let mut waiting = false;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(lock),
                Err((f, Errno::EWOULDBLOCK | Errno::EINTR)) => {
                    file = f;
                    if !waiting {
                        self.note(&format!(
                            "waiting for another job to finish with {}",
                            mirror.display()
                        ));
                        waiting = true;
                    }
                    // flock cannot be interrupted by our cancellation: retry between waits.
                    if self.cancel.wait_cancelled(Duration::from_millis(100)) {
                        return Err(GitError::Cancelled);
                    }
                }
                Err((_, errno)) => {
                    return Err(GitError::Io {
                        context: format!("cannot lock {}", path.display()),
                        source: io::Error::from(errno),
                    })
                }
            }
        }
    }
}

/// The bytes and entries under `dir` (at most 100,000 entries looked at), without following
/// links: a measure that grows while git writes there.
fn tree_size(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut seen = 0u32;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > 100_000 {
                return total;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            total = total.saturating_add(meta.len()).saturating_add(1);
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

/// Whether git said the ref does not exist (no point in trying again).
fn is_missing_ref(message: &str) -> bool {
    ["couldn't find remote ref", "not our ref", "invalid refspec"]
        .iter()
        .any(|m| message.contains(m))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::support::logfile::parse_line;
    use crate::support::process::{CancelFlag, NeverCancelled};

    /// Runs git in `dir` for test set-up; returns its trimmed stdout.
    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=t@example.com"])
            .args([
                "-c",
                "init.defaultBranch=master",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    struct Upstream {
        _dir: tempfile::TempDir,
        url: String,
        repo: PathBuf,
    }

    /// `<tmp>/openstack/nova` with two commits on master and `refs/zuul/master/Zabc` on a
    /// third one.
    fn upstream() -> (Upstream, String) {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("openstack/nova");
        fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "-q"]);
        fs::write(repo.join("a.txt"), "one\n").unwrap();
        git(&repo, &["add", "a.txt"]);
        git(&repo, &["commit", "-q", "-m", "one"]);
        fs::write(repo.join("a.txt"), "two\n").unwrap();
        git(&repo, &["commit", "-q", "-am", "two"]);
        git(&repo, &["checkout", "-q", "-b", "change"]);
        fs::write(repo.join("b.txt"), "change\n").unwrap();
        git(&repo, &["add", "b.txt"]);
        git(&repo, &["commit", "-q", "-m", "the change"]);
        let sha = git(&repo, &["rev-parse", "HEAD"]);
        git(&repo, &["update-ref", "refs/zuul/master/Zabc", &sha]);
        git(&repo, &["checkout", "-q", "master"]);
        git(&repo, &["branch", "-q", "-D", "change"]);
        let url = dir.path().display().to_string();
        (
            Upstream {
                _dir: dir,
                url,
                repo,
            },
            sha,
        )
    }

    fn options() -> GitOptions {
        GitOptions {
            backoff: Duration::from_millis(10),
            ..GitOptions::default()
        }
    }

    fn logged(log: &LogFile) -> Vec<(String, String)> {
        fs::read_to_string(log.path())
            .unwrap()
            .lines()
            .map(|l| {
                let l = parse_line(l).unwrap();
                (l.tag, l.text)
            })
            .collect()
    }

    #[test]
    fn checks_out_a_zuul_ref_and_reuses_the_mirror() {
        let (up, sha) = upstream();
        let work = tempfile::tempdir().unwrap();
        let cache = work.path().join("cache");
        let log = LogFile::create(work.path().join("git_prep.log")).unwrap();
        let change = ZuulChange::new(&up.url, "openstack/nova", "refs/zuul/master/Zabc").unwrap();
        let dest = work.path().join("job1/git/openstack/nova");
        let checkout =
            prepare_checkout(&change, &cache, &dest, &log, &options(), &NeverCancelled).unwrap();
        assert_eq!(checkout.commit, sha);
        assert_eq!(checkout.path, dest);
        assert_eq!(checkout.mirror, cache.join("openstack/nova.git"));
        assert_eq!(fs::read_to_string(dest.join("b.txt")).unwrap(), "change\n");
        assert_eq!(git(&dest, &["rev-parse", "HEAD"]), sha);
        assert!(cache.join("openstack/nova.git.lock").exists());
        let first = logged(&log);
        assert!(first
            .iter()
            .any(|(tag, text)| tag == "command" && text.contains("init --bare")));
        assert!(first
            .iter()
            .any(|(tag, text)| tag == "git" && text.contains("refs/zuul/master/Zabc")));
        assert!(first.iter().all(|(tag, _)| tag != "output"));

        // Upstream moves on; a second job fetches into the same mirror without a new clone.
        fs::write(cache.join("openstack/nova.git/marker"), "kept").unwrap();
        fs::write(up.repo.join("a.txt"), "three\n").unwrap();
        git(&up.repo, &["commit", "-q", "-am", "three"]);
        let master = git(&up.repo, &["rev-parse", "HEAD"]);
        let log2 = LogFile::create(work.path().join("git_prep2.log")).unwrap();
        let change2 = ZuulChange::new(&up.url, "openstack/nova", "master").unwrap();
        let dest2 = work.path().join("job2/nova");
        let checkout2 =
            prepare_checkout(&change2, &cache, &dest2, &log2, &options(), &NeverCancelled).unwrap();
        assert_eq!(checkout2.commit, master);
        assert_eq!(fs::read_to_string(dest2.join("a.txt")).unwrap(), "three\n");
        assert!(!dest2.join("b.txt").exists());
        assert!(cache.join("openstack/nova.git/marker").exists());
        let second = logged(&log2);
        assert!(second
            .iter()
            .all(|(tag, text)| !(tag == "command" && text.contains("init --bare"))));
        assert!(second
            .iter()
            .any(|(_, text)| text.starts_with("reusing the mirror")));
        // The first checkout is untouched.
        assert_eq!(git(&dest, &["rev-parse", "HEAD"]), sha);
    }

    #[test]
    fn fetches_a_commit_by_sha_over_file_urls() {
        let (up, sha) = upstream();
        let work = tempfile::tempdir().unwrap();
        let log = LogFile::create(work.path().join("git_prep.log")).unwrap();
        let url = format!("file://{}/", up.url);
        let change = ZuulChange::new(&url, "openstack/nova", &sha).unwrap();
        let checkout = prepare_checkout(
            &change,
            &work.path().join("cache"),
            &work.path().join("dest"),
            &log,
            &options(),
            &NeverCancelled,
        )
        .unwrap();
        assert_eq!(checkout.commit, sha);
    }

    #[test]
    fn a_missing_ref_fails_at_once_with_gits_reason() {
        let (up, _) = upstream();
        let work = tempfile::tempdir().unwrap();
        let log = LogFile::create(work.path().join("git_prep.log")).unwrap();
        let change =
            ZuulChange::new(&up.url, "openstack/nova", "refs/zuul/master/Zmissing").unwrap();
        let err = prepare_checkout(
            &change,
            &work.path().join("cache"),
            &work.path().join("dest"),
            &log,
            &options(),
            &NeverCancelled,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "git fetch of refs/zuul/master/Zmissing from {}/openstack/nova failed: \
                 couldn't find remote ref refs/zuul/master/Zmissing",
                up.url
            )
        );
        assert!(
            matches!(err, GitError::Fetch { attempts: 1, .. }),
            "{err:?}"
        );
        assert!(!work.path().join("dest").exists());
    }

    #[test]
    fn an_unreachable_remote_is_retried() {
        let work = tempfile::tempdir().unwrap();
        let log = LogFile::create(work.path().join("git_prep.log")).unwrap();
        let url = work.path().join("nowhere").display().to_string();
        let change = ZuulChange::new(&url, "openstack/nova", "master").unwrap();
        let err = prepare_checkout(
            &change,
            &work.path().join("cache"),
            &work.path().join("dest"),
            &log,
            &options(),
            &NeverCancelled,
        )
        .unwrap_err();
        let GitError::Fetch {
            attempts, message, ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(*attempts, 3);
        assert!(
            message.contains("does not appear to be a git repository"),
            "{message}"
        );
        let attempts_logged = logged(&log)
            .iter()
            .filter(|(_, text)| text.starts_with("fetching master"))
            .count();
        assert_eq!(attempts_logged, 3);
    }

    #[test]
    fn cancellation_stops_preparation() {
        let (up, _) = upstream();
        let work = tempfile::tempdir().unwrap();
        let log = LogFile::create(work.path().join("git_prep.log")).unwrap();
        let change = ZuulChange::new(&up.url, "openstack/nova", "refs/zuul/master/Zabc").unwrap();
        let flag = CancelFlag::new();
        flag.cancel();
        let err = prepare_checkout(
            &change,
            &work.path().join("cache"),
            &work.path().join("dest"),
            &log,
            &options(),
            &flag,
        )
        .unwrap_err();
        assert!(matches!(err, GitError::Cancelled), "{err:?}");
    }

    #[test]
    fn concurrent_jobs_share_the_mirror() {
        let (up, sha) = upstream();
        let work = tempfile::tempdir().unwrap();
        let cache = work.path().join("cache");
        let change = ZuulChange::new(&up.url, "openstack/nova", "refs/zuul/master/Zabc").unwrap();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|i| {
                    let (work, cache, change) = (work.path(), &cache, &change);
                    s.spawn(move || {
                        let log = LogFile::create(work.join(format!("{i}.log"))).unwrap();
                        prepare_checkout(
                            change,
                            cache,
                            &work.join(format!("dest{i}")),
                            &log,
                            &options(),
                            &NeverCancelled,
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            assert_eq!(r.unwrap().commit, sha);
        }
    }

    #[test]
    fn transports_are_recognised_like_git_does() {
        for (url, t) in [
            ("https://h/p", "https"),
            ("HTTP://h/p", "http"),
            ("git://h/p", "git"),
            ("ssh://h/p", "ssh"),
            ("git+ssh://h/p", "ssh"),
            ("git@h:p", "ssh"),
            ("h:p/q", "ssh"),
            ("file:///srv/git", "file"),
            ("/srv/git", "file"),
            ("relative/dir", "file"),
            ("./a:b", "file"),
            ("fd::7", "fd"),
            ("ext::sh", "ext"),
            ("FD::7", "fd"),
            ("foo://x", "foo"),
            ("persistent-https::x", "persistent-https"),
        ] {
            assert_eq!(transport_of(url), t, "{url}");
        }
    }

    #[test]
    fn a_url_with_a_transport_not_allowed_is_refused_before_git_runs() {
        let work = tempfile::tempdir().unwrap();
        let log = LogFile::create(work.path().join("git_prep.log")).unwrap();
        for url in ["fd::7", "ext::sh", "foo://host/x"] {
            let change = ZuulChange::new(url, "openstack/nova", "master").unwrap();
            let start = std::time::Instant::now();
            let err = prepare_checkout(
                &change,
                &work.path().join("cache"),
                &work.path().join("dest"),
                &log,
                &options(),
                &NeverCancelled,
            )
            .unwrap_err();
            assert!(start.elapsed() < Duration::from_secs(2));
            let text = err.to_string();
            assert!(
                text.starts_with(&format!(
                    "invalid Zuul change: ZUUL_URL {url:?} uses the git transport"
                )),
                "{text}"
            );
        }
        assert!(!work.path().join("cache").exists());
        let logged = logged(&log);
        assert!(logged.iter().all(|(tag, _)| tag != "command"), "{logged:?}");

        // A job that allows only https refuses a local path too.
        let (up, _) = upstream();
        let change = ZuulChange::new(&up.url, "openstack/nova", "master").unwrap();
        let only_https = GitOptions {
            protocols: vec!["https".into()],
            ..options()
        };
        let err = prepare_checkout(
            &change,
            &work.path().join("cache"),
            &work.path().join("dest"),
            &log,
            &only_https,
            &NeverCancelled,
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"file\""), "{err}");
    }

    #[test]
    fn git_itself_refuses_a_transport_not_allowed() {
        // The second wall: even a URL that passed the check cannot make git use another
        // transport (here: the check is bypassed by allowing "file" in our list but not
        // in git's, which a redirect or submodule would hit the same way).
        let (up, _) = upstream();
        let work = tempfile::tempdir().unwrap();
        let log = LogFile::create(work.path().join("git_prep.log")).unwrap();
        let git = Git {
            log: &log,
            cancel: &NeverCancelled,
            options: &GitOptions {
                protocols: vec!["https".into()],
                ..options()
            },
        };
        let mirror = work.path().join("m.git");
        git.init("--bare", &mirror).unwrap();
        let change = ZuulChange::new(&up.url, "openstack/nova", "master").unwrap();
        let err = git.fetch(&change, &mirror).unwrap_err();
        assert!(
            err.to_string().contains("transport 'file' not allowed"),
            "{err}"
        );
    }

    #[test]
    fn a_stalled_fetch_ends_and_releases_the_mirror_for_the_next_job() {
        use std::net::TcpListener;
        // A "git server" that accepts connections and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        {
            let held = held.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming().flatten() {
                    held.lock().unwrap().push(conn);
                }
            });
        }
        let (up, sha) = upstream();
        let work = tempfile::tempdir().unwrap();
        let cache = work.path().join("cache");
        let stalling = GitOptions {
            attempts: 2,
            stall_timeout: Some(Duration::from_secs(1)),
            kill_grace: Duration::from_millis(200),
            ..options()
        };
        let start = std::time::Instant::now();
        let (first, second) = std::thread::scope(|s| {
            let first = s.spawn(|| {
                let log = LogFile::create(work.path().join("1.log")).unwrap();
                let url = format!("git://127.0.0.1:{port}/");
                let change = ZuulChange::new(&url, "openstack/nova", "master").unwrap();
                let r = prepare_checkout(
                    &change,
                    &cache,
                    &work.path().join("dest1"),
                    &log,
                    &stalling,
                    &NeverCancelled,
                );
                (r, start.elapsed())
            });
            // The second job for the same project waits for the mirror, then proceeds.
            std::thread::sleep(Duration::from_millis(300));
            let second = s.spawn(|| {
                let log = LogFile::create(work.path().join("2.log")).unwrap();
                let change =
                    ZuulChange::new(&up.url, "openstack/nova", "refs/zuul/master/Zabc").unwrap();
                let r = prepare_checkout(
                    &change,
                    &cache,
                    &work.path().join("dest2"),
                    &log,
                    &options(),
                    &NeverCancelled,
                );
                (r, start.elapsed())
            });
            (first.join().unwrap(), second.join().unwrap())
        });
        let (err, took) = (first.0.unwrap_err(), first.1);
        assert!(
            matches!(&err, GitError::Fetch { attempts: 2, message, .. } if message.starts_with("stalled: no progress for 1 s")),
            "{err:?}"
        );
        // Two stalls of 1 s, a pause of 10 ms, the kill grace: well under 10 s.
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert!(!held.lock().unwrap().is_empty(), "git never connected");
        assert_eq!(second.0.unwrap().commit, sha);
        assert!(
            second.1 >= took,
            "the second job ran while the first held the mirror"
        );
        let first_log = logged(&LogFile::append(work.path().join("1.log")).unwrap());
        assert!(
            first_log.iter().any(|(tag, _)| tag == "stall"),
            "{first_log:?}"
        );
    }

    #[test]
    fn git_options_from_the_job_config() {
        use crate::config::Checker;
        let config = serde_json::json!({
            "git_timeout": 600, "git_stall_timeout": 30, "git_protocols": ["https", "ssh"]
        });
        let mut o = GitOptions::default();
        let mut c = Checker::bare();
        o.read_config(&mut c, config.as_object().unwrap());
        assert!(!c.has_errors());
        assert_eq!(o.command_timeout, Some(Duration::from_secs(600)));
        assert_eq!(o.stall_timeout, Some(Duration::from_secs(30)));
        assert_eq!(o.protocols, ["https", "ssh"]);
        let bad = serde_json::json!({
            "git_timeout": "x", "git_stall_timeout": 0, "git_protocols": ["fd", "HTTPS", 3]
        });
        o.read_config(&mut c, bad.as_object().unwrap());
        let problems = c.into_lines().0;
        let keys: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "git_timeout",
                "git_stall_timeout",
                "git_protocols[0]",
                "git_protocols[1]",
                "git_protocols[2]"
            ],
            "{problems:?}"
        );
        let mut c = Checker::bare();
        o.read_config(
            &mut c,
            serde_json::json!({"git_protocols": []})
                .as_object()
                .unwrap(),
        );
        assert_eq!(c.into_lines().0, ["git_protocols: must not be empty"]);
    }

    #[test]
    fn a_non_empty_destination_is_refused() {
        let (up, _) = upstream();
        let work = tempfile::tempdir().unwrap();
        let log = LogFile::create(work.path().join("git_prep.log")).unwrap();
        let dest = work.path().join("dest");
        fs::create_dir_all(&dest).unwrap();
        fs::write(dest.join("x"), "").unwrap();
        let change = ZuulChange::new(&up.url, "openstack/nova", "master").unwrap();
        let err = prepare_checkout(
            &change,
            &work.path().join("cache"),
            &dest,
            &log,
            &options(),
            &NeverCancelled,
        )
        .unwrap_err();
        assert!(matches!(err, GitError::DestinationNotEmpty(_)), "{err:?}");
    }

    #[test]
    fn invalid_inputs_are_rejected() {
        let ok = ("http://zuul/p", "openstack/nova", "refs/zuul/master/Zabc");
        assert!(ZuulChange::new(ok.0, ok.1, ok.2).is_ok());
        assert!(ZuulChange::new(ok.0, "a/b.c_d-e/F9", "0123abcd").is_ok());
        for project in [
            "", "../x", "a/../b", "a/./b", "./a", "a//b", "/a", "a/", "-a", "a/-b", "a b", "a;b",
            "a\nb", "x.git/y", "ä",
        ] {
            let err = ZuulChange::new(ok.0, project, ok.2).unwrap_err();
            assert!(
                err.to_string().contains("ZUUL_PROJECT"),
                "{project:?}: {err}"
            );
        }
        for reference in [
            "",
            "-b",
            "--upload-pack=x",
            "+x",
            "a..b",
            "a b",
            "a\tb",
            "a\nb",
            "a:b",
            "a~1",
            "a^",
            "a*",
            "a[",
        ] {
            let err = ZuulChange::new(ok.0, ok.1, reference).unwrap_err();
            assert!(err.to_string().contains("ref "), "{reference:?}: {err}");
        }
        for url in [
            "",
            "-u",
            "--upload-pack=touch /tmp/x",
            "http://a b",
            "http://a\n",
        ] {
            let err = ZuulChange::new(url, ok.1, ok.2).unwrap_err();
            assert!(err.to_string().contains("ZUUL_URL"), "{url:?}: {err}");
        }
        let GitError::Invalid(problems) = ZuulChange::new("-u", "..", "-r").unwrap_err() else {
            panic!()
        };
        assert_eq!(problems.len(), 3);
    }

    #[test]
    fn takes_the_change_from_job_parameters() {
        let mut job = Job::default();
        assert!(ZuulChange::from_job(&job).is_none());
        for (k, v) in [
            ("ZUUL_URL", "http://zuul/p"),
            ("ZUUL_PROJECT", "openstack/nova"),
            ("ZUUL_REF", ""),
            ("ZUUL_NEWREV", "abc123"),
        ] {
            job.parameters.insert(k.into(), v.into());
        }
        let change = ZuulChange::from_job(&job).unwrap().unwrap();
        assert_eq!(change.reference(), "abc123");
        job.parameters
            .insert("ZUUL_REF".into(), "refs/zuul/master/Z1".into());
        let change = ZuulChange::from_job(&job).unwrap().unwrap();
        assert_eq!(change.reference(), "refs/zuul/master/Z1");
        assert_eq!(change.project(), "openstack/nova");
        assert_eq!(change.url(), "http://zuul/p");
        job.parameters.insert("ZUUL_PROJECT".into(), "../x".into());
        assert!(ZuulChange::from_job(&job).unwrap().is_err());
    }
}
