//! Runs the code of the change under test contained: as an unprivileged user, with resource
//! limits, and optionally in a network namespace of its own with only loopback.
//!
//! A job runs the proposed change's code by design (its migrations, its test script): it must
//! not get the daemon's privileges. [`Containment`] is a job's setting (the
//! [`CONTAINMENT_KEY`] object of its configuration); [`Containment::prepare`] turns it into a
//! [`Contained`] for one run, which [`Contained::apply`] puts on a [`Command`]. The child then,
//! between `fork` and `exec` (after the runner made it a process group leader):
//!
//! 1. enters a new network namespace and brings its `lo` up (`network_namespace`): the
//!    process reaches nothing but itself and unix sockets (a database server's socket works;
//!    TCP to `127.0.0.1` does not: that is the namespace's own loopback);
//! 2. lowers its limits: `RLIMIT_DATA` (memory: heap and private writable mappings; unlike
//!    `RLIMIT_AS` it does not count the address space that thread stacks and malloc arenas
//!    only reserve, which makes Python with many threads fail long before it uses memory),
//!    `RLIMIT_NPROC` (processes **of the user**, all its processes together: runs sharing
//!    `nobody` share the limit; root ignores it) and `RLIMIT_NOFILE`;
//! 3. drops every supplementary group, then sets its group and user;
//! 4. sets `no_new_privs`, so no set-user-id program (`sudo`, `su`) gives privileges back.
//!
//! The user: when the daemon runs as root, `run_as` (default [`DEFAULT_USER`]); a user that
//! does not exist, or is root, fails the job with a clear message: it never silently runs as
//! root. A daemon that is not root stays the user it is (naming another user is an error
//! then, as is a network namespace, which needs root).
//!
//! The files the contained process needs to write must belong to it: [`Contained::grant`]
//! hands a directory tree over (without following symbolic links). Files the plugin reads
//! back afterwards are written by the contained user, who may have replaced them with
//! symbolic links: read them with [`read_regular_file`], never through a plain open.
//!
//! Only the steps above use `unsafe` code (the `pre_exec` hook and the system calls it makes
//! are async-signal-safe: no allocation, no lock).

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::{Gid, Uid, User};
use serde_json::{Map, Value};

use crate::config::{key, present, says, Checker};

/// The job configuration key holding the containment settings.
pub const CONTAINMENT_KEY: &str = "containment";
/// The user a root daemon runs the change's code as, unless configured.
pub const DEFAULT_USER: &str = "nobody";
/// The default memory limit (`RLIMIT_DATA`), MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 4096;
/// The default limit on the processes of the user (`RLIMIT_NPROC`).
pub const DEFAULT_PROCESSES: u64 = 512;
/// The default limit on open files (`RLIMIT_NOFILE`).
pub const DEFAULT_OPEN_FILES: u64 = 4096;

const MIB: u64 = 1 << 20;

/// A job's containment settings, as configured.
///
/// ```
/// use serde_json::json;
/// use turbo_hipster_sdk::support::contain::Containment;
///
/// let c = Containment::from_config(json!({}).as_object().unwrap()).unwrap();
/// assert_eq!(c, Containment::default());
/// let c = json!({"containment": {"memory_mib": "unlimited", "network_namespace": true}});
/// let c = Containment::from_config(c.as_object().unwrap()).unwrap();
/// assert_eq!(c.memory_bytes, None);
/// assert!(c.network_namespace);
/// let bad = json!({"containment": {"run_as": "root"}});
/// let err = Containment::from_config(bad.as_object().unwrap()).unwrap_err();
/// assert!(err[0].starts_with("containment.run_as: "), "{err:?}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Containment {
    /// The user to run as when the daemon is root (`None`: [`DEFAULT_USER`]).
    pub run_as: Option<String>,
    /// `RLIMIT_DATA` in bytes (`None`: unlimited).
    pub memory_bytes: Option<u64>,
    /// `RLIMIT_NPROC` (`None`: unlimited).
    pub processes: Option<u64>,
    /// `RLIMIT_NOFILE` (`None`: unchanged).
    pub open_files: Option<u64>,
    /// Run in a network namespace of its own with only loopback.
    pub network_namespace: bool,
}

impl Default for Containment {
    fn default() -> Self {
        Self {
            run_as: None,
            memory_bytes: Some(DEFAULT_MEMORY_MIB * MIB),
            processes: Some(DEFAULT_PROCESSES),
            open_files: Some(DEFAULT_OPEN_FILES),
            network_namespace: false,
        }
    }
}

/// Why a job cannot run contained.
#[derive(Debug, thiserror::Error)]
pub enum ContainError {
    /// The configured user does not exist (or cannot be looked up).
    #[error("containment: cannot run as {user}: {why}")]
    User {
        /// The user's name.
        user: String,
        /// Why the user cannot be used (unknown, root, lookup failed).
        why: String,
    },
    /// The daemon is not root and cannot do what the settings ask.
    #[error("containment: {0}")]
    NotRoot(String),
    /// The contained user cannot reach a path it needs.
    #[error("containment: {user} cannot reach {path} ({why})")]
    Unreachable {
        /// The user's name.
        user: String,
        /// The path it needs.
        path: PathBuf,
        /// Which directory stops it.
        why: String,
    },
    /// Handing files over failed.
    #[error("containment: cannot hand {path} over to {user}: {source}")]
    Grant {
        /// The user the files go to.
        user: String,
        /// The file or directory that could not be handed over.
        path: PathBuf,
        /// The `chown` error.
        #[source]
        source: io::Error,
    },
}

impl Containment {
    /// Reads [`CONTAINMENT_KEY`] from a job's configuration (absent: the defaults). Keys:
    /// `run_as` (a user name, not root), `memory_mib` (64 to 1048576, or `"unlimited"`),
    /// `processes` (16 to 1048576, or `"unlimited"`), `open_files` (64 to 1048576, or
    /// `"unlimited"`: left as inherited), `network_namespace` (bool).
    ///
    /// # Errors
    /// One line per problem, each starting with its key path (`containment.processes: …`).
    pub fn from_config(config: &Map<String, Value>) -> Result<Self, Vec<String>> {
        let mut c = Checker::bare();
        let containment = Self::check(&mut c, config);
        c.finish(containment).map(|(containment, _)| containment)
    }

    /// [`from_config`](Self::from_config), recording every problem in `c` (the defaults
    /// where a key has one).
    pub fn check(c: &mut Checker, config: &Map<String, Value>) -> Self {
        let mut out = Self::default();
        if let Some(object) =
            present(config, CONTAINMENT_KEY).and_then(|v| c.object(CONTAINMENT_KEY, v))
        {
            for (name, value) in object {
                let at = key(CONTAINMENT_KEY, name);
                match name.as_str() {
                    "run_as" => out.run_as = run_as(c, &at, value),
                    "memory_mib" => out.memory_bytes = limit(c, &at, value, 64).map(|m| m * MIB),
                    "processes" => out.processes = limit(c, &at, value, 16),
                    "open_files" => out.open_files = limit(c, &at, value, 64),
                    "network_namespace" => {
                        out.network_namespace = c.boolean(&at, value).unwrap_or_default();
                    }
                    _ => c.error(&at, says::unknown_key(CONTAINMENT_KEYS)),
                }
            }
        }
        if out.run_as.is_none() && Uid::effective().is_root() {
            if let Ok(None) = User::from_name(DEFAULT_USER) {
                c.error(
                    &key(CONTAINMENT_KEY, "run_as"),
                    format!(
                        "not set, and the default user {DEFAULT_USER} does not exist on this \
                         host: name an unprivileged user"
                    ),
                );
            }
        }
        out
    }

    /// The user a root daemon runs as.
    pub fn user_name(&self) -> &str {
        self.run_as.as_deref().unwrap_or(DEFAULT_USER)
    }

    /// Resolves the settings for one run, for the user the daemon runs as now.
    ///
    /// # Errors
    /// [`ContainError::User`] when the user does not exist or is root;
    /// [`ContainError::NotRoot`] when a daemon that is not root is asked to switch users or
    /// make a network namespace.
    pub fn prepare(&self) -> Result<Contained, ContainError> {
        let root = Uid::effective().is_root();
        let user = if root {
            Some(target_user(self.user_name())?)
        } else {
            if let Some(name) = &self.run_as {
                let u = target_user(name)?;
                if u.uid != Uid::effective() {
                    return Err(ContainError::NotRoot(format!(
                        "cannot run as {name}: the daemon runs as uid {}, not root",
                        Uid::effective()
                    )));
                }
            }
            None
        };
        if self.network_namespace && !root {
            return Err(ContainError::NotRoot(
                "network_namespace needs a daemon running as root".into(),
            ));
        }
        Ok(Contained {
            user,
            memory_bytes: self.memory_bytes,
            processes: self.processes,
            open_files: self.open_files,
            network_namespace: self.network_namespace,
        })
    }
}

/// The keys of [`CONTAINMENT_KEY`].
const CONTAINMENT_KEYS: &[&str] = &[
    "run_as",
    "memory_mib",
    "processes",
    "open_files",
    "network_namespace",
];

/// The largest `memory_mib`, `processes` and `open_files`.
const MAX_LIMIT: u64 = 1 << 20;

/// `run_as`: an existing user other than root (`null`: the default).
fn run_as(c: &mut Checker, at: &str, value: &Value) -> Option<String> {
    if value.is_null() {
        return None;
    }
    let name = c.nonempty(at, value)?;
    let problem = match User::from_name(&name) {
        Ok(Some(u)) if u.uid.is_root() => {
            format!("{name} is root: the change's code never runs as root")
        }
        Ok(Some(_)) => return Some(name),
        Ok(None) => format!("no user named {name:?} on this host"),
        Err(e) => format!("cannot look up the user {name:?}: {e}"),
    };
    c.error(at, problem);
    None
}

/// A limit from `min` to [`MAX_LIMIT`], or `"unlimited"` (`None`); a bad one is recorded and
/// left unlimited.
fn limit(c: &mut Checker, at: &str, value: &Value, min: u64) -> Option<u64> {
    match value {
        Value::String(s) if s == "unlimited" => None,
        Value::Number(_) => c.integer(at, value, min..=MAX_LIMIT),
        other => {
            c.error(at, says::expected("a whole number or \"unlimited\"", other));
            None
        }
    }
}

fn target_user(name: &str) -> Result<TargetUser, ContainError> {
    let err = |why: String| ContainError::User {
        user: name.to_string(),
        why,
    };
    let user = User::from_name(name)
        .map_err(|e| err(format!("cannot look the user up: {e}")))?
        .ok_or_else(|| err("no such user on this host".into()))?;
    if user.uid.is_root() {
        return Err(err(
            "it is root: the change's code never runs as root".into()
        ));
    }
    Ok(TargetUser {
        name: user.name,
        uid: user.uid,
        gid: user.gid,
        home: user.dir,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TargetUser {
    name: String,
    uid: Uid,
    gid: Gid,
    home: PathBuf,
}

/// Containment resolved for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contained {
    user: Option<TargetUser>,
    memory_bytes: Option<u64>,
    processes: Option<u64>,
    open_files: Option<u64>,
    network_namespace: bool,
}

/// What the child does before `exec`; plain values only (the hook must not allocate).
#[derive(Debug, Clone, Copy)]
struct Plan {
    ids: Option<(u32, u32)>,
    memory_bytes: Option<u64>,
    processes: Option<u64>,
    open_files: Option<u64>,
    network_namespace: bool,
}

impl Contained {
    /// Whether the process switches to another user (the daemon is root).
    pub fn switches_user(&self) -> bool {
        self.user.is_some()
    }

    /// The user's uid and gid when it switches.
    pub fn ids(&self) -> Option<(u32, u32)> {
        self.user.as_ref().map(|u| (u.uid.as_raw(), u.gid.as_raw()))
    }

    /// One line for the job's log: `as nobody (uid 65534), memory 4096 MiB, …`.
    pub fn describe(&self) -> String {
        let mut parts = vec![match &self.user {
            Some(u) => format!("as {} (uid {})", u.name, u.uid),
            None => format!("as the daemon's user (uid {})", Uid::effective()),
        }];
        let show = |what: &str, v: Option<u64>, unit: &str| match v {
            Some(n) => format!("{what} {n}{unit}"),
            None => format!("{what} unlimited"),
        };
        parts.push(show("memory", self.memory_bytes.map(|b| b / MIB), " MiB"));
        parts.push(show("processes", self.processes, ""));
        if let Some(n) = self.open_files {
            parts.push(format!("open files {n}"));
        }
        if self.network_namespace {
            parts.push("own network namespace (loopback only)".into());
        }
        parts.join(", ")
    }

    /// Makes `command` run contained (see the module documentation). When the user switches,
    /// `HOME`, `USER` and `LOGNAME` are set to the user's.
    pub fn apply(&self, command: &mut Command) {
        if let Some(u) = &self.user {
            command
                .env("HOME", &u.home)
                .env("USER", &u.name)
                .env("LOGNAME", &u.name);
        }
        let plan = Plan {
            ids: self.ids(),
            memory_bytes: self.memory_bytes,
            processes: self.processes,
            open_files: self.open_files,
            network_namespace: self.network_namespace,
        };
        // SAFETY: `enter` only makes async-signal-safe system calls on plain values copied
        // into the closure; it neither allocates nor takes locks.
        unsafe {
            command.pre_exec(move || enter(&plan));
        }
    }

    /// Hands the tree at `path` over to the contained user (nothing to do when it does not
    /// switch). Symbolic links are changed themselves, never followed.
    ///
    /// # Errors
    /// [`ContainError::Grant`] naming the file that could not be changed.
    pub fn grant(&self, path: &Path) -> Result<(), ContainError> {
        let Some(u) = &self.user else {
            return Ok(());
        };
        chown_tree(path, u.uid.as_raw(), u.gid.as_raw()).map_err(|(path, source)| {
            ContainError::Grant {
                user: u.name.clone(),
                path,
                source,
            }
        })
    }

    /// Checks that the contained user can reach `path` (search permission on every directory
    /// above it, as written and after following symbolic links), so that a job fails with a
    /// clear message rather than `Permission denied` from `exec`.
    ///
    /// # Errors
    /// [`ContainError::Unreachable`] naming the directory that stops the user.
    pub fn check_reachable(&self, path: &Path) -> Result<(), ContainError> {
        let Some(u) = &self.user else {
            return Ok(());
        };
        u.check_reachable(path)
    }

    /// Checks that the contained user can run `program`: reach it, execute it, and for a
    /// script (`#!`), read it and reach and execute its interpreter (a venv's `bin/alembic`
    /// whose `python3` links into `/root/.pyenv/…` is the common case this catches). Every
    /// step follows symbolic links. Access control lists are not read.
    ///
    /// # Errors
    /// [`ContainError::Unreachable`] naming the file or directory that stops the user.
    pub fn check_executable(&self, program: &Path) -> Result<(), ContainError> {
        let Some(u) = &self.user else {
            return Ok(());
        };
        u.check_executable(program, true)
    }
}

impl TargetUser {
    fn unreachable(&self, path: &Path, why: String) -> ContainError {
        ContainError::Unreachable {
            user: self.name.clone(),
            path: path.to_path_buf(),
            why,
        }
    }

    /// Whether the mode of `meta` grants this user `bits` (read 4, write 2, execute 1),
    /// by the owner, group or others class that applies to it.
    fn may(&self, meta: &fs::Metadata, bits: u32) -> bool {
        let shift = if meta.uid() == self.uid.as_raw() {
            6
        } else if meta.gid() == self.gid.as_raw() {
            3
        } else {
            0
        };
        meta.mode() & (bits << shift) == bits << shift
    }

    fn check_reachable(&self, path: &Path) -> Result<(), ContainError> {
        let real = fs::canonicalize(path).ok();
        for p in std::iter::once(path).chain(real.as_deref()) {
            for dir in p.ancestors().skip(1) {
                let Ok(meta) = fs::metadata(dir) else {
                    continue;
                };
                if !self.may(&meta, 1) {
                    return Err(self.unreachable(
                        path,
                        format!(
                            "{} has mode {:o}: make it searchable by others",
                            dir.display(),
                            meta.mode() & 0o7777
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_executable(
        &self,
        program: &Path,
        follow_interpreter: bool,
    ) -> Result<(), ContainError> {
        self.check_reachable(program)?;
        let Ok(meta) = fs::metadata(program) else {
            // Missing: exec says so itself, and the caller reports it as such.
            return Ok(());
        };
        let mode = meta.mode() & 0o7777;
        if !self.may(&meta, 1) {
            return Err(self.unreachable(
                program,
                format!(
                    "{} has mode {mode:o}: not executable by it",
                    program.display()
                ),
            ));
        }
        let Some(interpreter) = interpreter_of(program) else {
            return Ok(());
        };
        if !self.may(&meta, 4) {
            return Err(self.unreachable(
                program,
                format!(
                    "{} has mode {mode:o}: a script it cannot read",
                    program.display()
                ),
            ));
        }
        if follow_interpreter {
            self.check_executable(&interpreter, false)
                .map_err(|e| match e {
                    ContainError::Unreachable { why, .. } => self.unreachable(
                        program,
                        format!("its interpreter {}: {why}", interpreter.display()),
                    ),
                    other => other,
                })?;
        }
        Ok(())
    }
}

/// The absolute interpreter a `#!` line names, if `program` starts with one.
fn interpreter_of(program: &Path) -> Option<PathBuf> {
    use std::io::Read as _;
    let mut head = [0u8; 256];
    let n = fs::File::open(program).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let first = text.split_whitespace().next()?;
    first.starts_with('/').then(|| PathBuf::from(first))
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), (PathBuf, io::Error)> {
    let fail = |p: &Path| {
        let p = p.to_path_buf();
        move |e| (p, e)
    };
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(fail(path))?;
    let meta = fs::symlink_metadata(path).map_err(fail(path))?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).map_err(fail(path))? {
            let entry = entry.map_err(fail(path))?;
            chown_tree(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Reads at most `max` bytes of `path` if it is a regular file, without following a symbolic
/// link: for files a contained process wrote. `Ok(None)` when it is absent or not a regular
/// file (a link, a FIFO, a device).
///
/// # Errors
/// Reading failed otherwise.
pub fn read_regular_file(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Copies the regular files and directories under `from` into `to` (created), skipping
/// symbolic links and special files, without following links: to publish what a contained
/// process wrote. A file never replaces anything already in `to`; files larger than
/// `max_file` bytes are cut there. Returns how many files were copied.
///
/// # Errors
/// A directory could not be read or a file could not be written.
pub fn copy_regular_tree(from: &Path, to: &Path, max_file: u64) -> io::Result<usize> {
    let meta = fs::symlink_metadata(from)?;
    if !meta.is_dir() {
        return Ok(0);
    }
    fs::create_dir_all(to)?;
    let mut copied = 0;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        let taken = fs::symlink_metadata(&target).is_ok();
        if kind.is_dir() && (!taken || fs::symlink_metadata(&target)?.is_dir()) {
            copied += copy_regular_tree(&entry.path(), &target, max_file)?;
        } else if kind.is_file() && !taken {
            if let Some(bytes) = read_regular_file(&entry.path(), max_file)? {
                fs::write(&target, bytes)?;
                copied += 1;
            }
        }
    }
    Ok(copied)
}

/// Runs in the child between `fork` and `exec`.
fn enter(plan: &Plan) -> io::Result<()> {
    use nix::libc;
    if plan.network_namespace {
        // SAFETY: plain system calls on integers.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        loopback_up()?;
    }
    for (resource, value) in [
        (libc::RLIMIT_DATA, plan.memory_bytes),
        (libc::RLIMIT_NPROC, plan.processes),
        (libc::RLIMIT_NOFILE, plan.open_files),
    ] {
        if let Some(v) = value {
            let limit = libc::rlimit {
                rlim_cur: v,
                rlim_max: v,
            };
            // SAFETY: `limit` is a valid rlimit for the call's duration.
            if unsafe { libc::setrlimit(resource, &limit) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    if let Some((uid, gid)) = plan.ids {
        let groups = [gid];
        // SAFETY: `groups` outlives the call; the rest are plain system calls on integers.
        unsafe {
            if libc::setgroups(1, groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
    }
    // SAFETY: a plain system call.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Brings `lo` up in the new network namespace (it starts down), as `ip link set lo up`.
fn loopback_up() -> io::Result<()> {
    use nix::libc;
    // SAFETY: a socket for the ioctls, closed below on every path; `req` is a zeroed ifreq
    // (a valid value: integers and arrays) naming "lo", alive for both calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req);
        }
        let err = io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(err);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::support::process::{NeverCancelled, ProcessRunner};
    use serde_json::json;

    fn parse(v: Value) -> Result<Containment, Vec<String>> {
        Containment::from_config(v.as_object().unwrap())
    }

    #[test]
    fn config_keys_and_their_errors() {
        let c = parse(json!({"containment": {
            "run_as": "nobody", "memory_mib": 512, "processes": "unlimited",
            "open_files": 256, "network_namespace": true
        }}))
        .unwrap();
        assert_eq!(c.run_as.as_deref(), Some("nobody"));
        assert_eq!(c.memory_bytes, Some(512 * MIB));
        assert_eq!(c.processes, None);
        assert_eq!(c.open_files, Some(256));
        assert!(c.network_namespace);
        let errors = parse(json!({"containment": {
            "run_as": "no-such-user-th", "memory_mib": 1, "processes": -1,
            "open_files": "lots", "network_namespace": "yes", "uid": 0
        }}))
        .unwrap_err();
        let keys: Vec<&str> = errors
            .iter()
            .map(|e| e.split(':').next().unwrap())
            .collect();
        // serde_json's map is ordered by key.
        assert_eq!(
            keys,
            [
                "containment.memory_mib",
                "containment.network_namespace",
                "containment.open_files",
                "containment.processes",
                "containment.run_as",
                "containment.uid"
            ],
            "{errors:?}"
        );
        assert!(parse(json!({"containment": {"run_as": "root"}})).is_err());
        assert!(parse(json!({"containment": true})).is_err());
    }

    fn run(contained: &Contained, script: &str) -> (i32, Vec<String>) {
        let mut cmd = Command::new("bash");
        cmd.args(["-c", script]).current_dir("/");
        contained.apply(&mut cmd);
        let mut lines = Vec::new();
        let o = ProcessRunner::new(cmd)
            .on_line(|l| lines.push(l.text.clone()))
            .run(&NeverCancelled)
            .unwrap();
        (o.exit_code().unwrap_or(-1), lines)
    }

    #[test]
    fn a_contained_process_runs_as_the_user_with_its_limits() {
        if !Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let c = Containment {
            memory_bytes: Some(1024 * MIB),
            processes: Some(100),
            open_files: Some(200),
            ..Containment::default()
        };
        let contained = c.prepare().unwrap();
        assert!(contained.switches_user());
        let nobody = User::from_name("nobody").unwrap().unwrap();
        let (code, lines) = run(
            &contained,
            "id -u; id -G; ulimit -d; ulimit -u; ulimit -n; echo $HOME; \
             grep NoNewPrivs /proc/self/status",
        );
        assert_eq!(code, 0, "{lines:?}");
        assert_eq!(lines[0], nobody.uid.to_string());
        assert_eq!(lines[1], nobody.gid.to_string());
        assert_eq!(lines[2], (1024 * 1024).to_string());
        assert_eq!(lines[3], "100");
        assert_eq!(lines[4], "200");
        assert_eq!(lines[5], nobody.dir.display().to_string());
        assert_eq!(lines[6].split_whitespace().last(), Some("1"));
        assert!(contained
            .describe()
            .starts_with("as nobody (uid 65534), memory 1024 MiB"));
    }

    #[test]
    fn a_network_namespace_has_only_loopback() {
        if !Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let c = Containment {
            network_namespace: true,
            ..Containment::default()
        };
        let (code, lines) = run(&c.prepare().unwrap(), "cat /proc/net/dev");
        assert_eq!(code, 0, "{lines:?}");
        let interfaces: Vec<&str> = lines
            .iter()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(str::trim)
            .collect();
        assert_eq!(interfaces, ["lo"], "{lines:?}");
        let (code, lines) = run(
            &c.prepare().unwrap(),
            "cat /sys/class/net/lo/operstate /sys/class/net/lo/flags",
        );
        assert_eq!(code, 0, "{lines:?}");
        // IFF_UP set.
        let flags = u32::from_str_radix(lines[1].trim_start_matches("0x"), 16).unwrap();
        assert_eq!(flags & 1, 1, "{lines:?}");
    }

    #[test]
    fn grant_and_reachability() {
        if !Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("a/b");
        fs::create_dir_all(&tree).unwrap();
        fs::write(tree.join("f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tree.join("link")).unwrap();
        let contained = Containment::default().prepare().unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let err = contained.check_reachable(&tree.join("f")).unwrap_err();
        assert!(err.to_string().contains("mode 700"), "{err}");
        contained.grant(&dir.path().join("a")).unwrap();
        let (uid, _) = contained.ids().unwrap();
        assert_eq!(fs::metadata(tree.join("f")).unwrap().uid(), uid);
        assert_eq!(fs::symlink_metadata(tree.join("link")).unwrap().uid(), uid);
        assert_eq!(fs::metadata("/etc/passwd").unwrap().uid(), 0);
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        contained.check_reachable(&tree.join("f")).unwrap();
    }

    /// The venv case: `venv/bin/alembic` is world-readable, but its `#!` interpreter is a
    /// link into a directory only root may enter (pyenv under /root).
    #[test]
    fn a_script_whose_interpreter_links_into_a_private_directory_is_named() {
        if !Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path, m| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        mode(dir.path(), 0o755);
        let private = dir.path().join("private");
        let venv = dir.path().join("venv/bin");
        fs::create_dir_all(&private).unwrap();
        fs::create_dir_all(&venv).unwrap();
        fs::copy("/bin/sh", private.join("python3")).unwrap();
        std::os::unix::fs::symlink(private.join("python3"), venv.join("python3")).unwrap();
        let tool = venv.join("alembic");
        fs::write(
            &tool,
            format!("#!{}\necho hi\n", venv.join("python3").display()),
        )
        .unwrap();
        mode(&tool, 0o755);
        let contained = Containment::default().prepare().unwrap();

        mode(&private, 0o755);
        contained.check_executable(&tool).unwrap();

        mode(&private, 0o700);
        let err = contained.check_executable(&tool).unwrap_err().to_string();
        assert!(
            err.contains("its interpreter") && err.contains("private has mode 700"),
            "{err}"
        );
        // Reaching the link alone is not enough: where it leads counts.
        assert!(contained.check_reachable(&venv.join("python3")).is_err());

        mode(&private, 0o755);
        mode(&tool, 0o711);
        let err = contained.check_executable(&tool).unwrap_err().to_string();
        assert!(err.contains("a script it cannot read"), "{err}");
        mode(&tool, 0o744);
        let err = contained.check_executable(&tool).unwrap_err().to_string();
        assert!(err.contains("not executable by it"), "{err}");
    }

    #[test]
    fn regular_files_are_read_and_copied_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("a.txt"), "hello world").unwrap();
        fs::write(src.join("sub/b.txt"), "b").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("leak")).unwrap();
        std::os::unix::fs::symlink("/etc", src.join("dirleak")).unwrap();
        assert_eq!(
            read_regular_file(&src.join("a.txt"), 5).unwrap().unwrap(),
            b"hello"
        );
        assert_eq!(read_regular_file(&src.join("leak"), 100).unwrap(), None);
        assert_eq!(read_regular_file(&src.join("none"), 100).unwrap(), None);
        assert_eq!(read_regular_file(&src, 100).unwrap(), None);
        let dst = dir.path().join("dst");
        fs::create_dir_all(&dst).unwrap();
        fs::write(dst.join("a.txt"), "mine").unwrap();
        assert_eq!(copy_regular_tree(&src, &dst, 1 << 20).unwrap(), 1);
        assert_eq!(fs::read_to_string(dst.join("a.txt")).unwrap(), "mine");
        assert_eq!(fs::read_to_string(dst.join("sub/b.txt")).unwrap(), "b");
        assert!(!dst.join("leak").exists() && !dst.join("dirleak").exists());
    }
}
