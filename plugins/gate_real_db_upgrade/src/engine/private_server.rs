//! A private, throw-away MariaDB server: `mariadbd` started by us on a data directory of its
//! own, listening on 127.0.0.1 at a free port and on a socket in its directory
//! ([`crate::provisioning`] uses it for MariaDB golden copies and runs).
//!
//! - The configured server's settings that change what a migration does or how fast
//!   ([`COPIED_VARIABLES`]: SQL mode, character set, buffer pool, redo log, flush policy…) are
//!   read from it and passed on the command line; nothing else is (`--no-defaults`).
//! - The configured user and password are (re)made by an `--init-file` at every start, with
//!   every privilege: the migration tool connects to the private server exactly as it would
//!   to the configured one. The file is 0600, in the instance directory, outside the datadir.
//! - The process gets `PR_SET_PDEATHSIG` (SIGKILL: a killed worker takes its servers along)
//!   and its own process group. The signal fires when the *thread* that forked ends, so
//!   servers are forked by one spawner thread that lives as long as the process
//!   ([`spawn`]): a server may outlive the run thread that asked for it. Dropping a
//!   [`PrivateServer`] kills it (SIGKILL: the copy is thrown away, a clean shutdown would only
//!   cost time) and removes its directory, on every path: success, failure, timeout, cancel.
//!   A killed worker's instance (directory and, should it live, process) is found through
//!   its claim ([`crate::leftovers`]) at the next start.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use turbo_hipster_sdk::support::process::Cancellation;

use super::{mysql, Backend, EngineError, Server};
use super::{Connection, Engine};

/// The configured server's global variables a private server copies (when the server has
/// them). They shape what a migration does (SQL mode, character set and collation, strict
/// mode, default row format, timestamp defaults) and how long it takes (buffer pool, redo
/// log size, flush policy, doublewrite).
pub const COPIED_VARIABLES: [&str; 11] = [
    "sql_mode",
    "character_set_server",
    "collation_server",
    "explicit_defaults_for_timestamp",
    "innodb_strict_mode",
    "innodb_default_row_format",
    "innodb_buffer_pool_size",
    "innodb_log_file_size",
    "innodb_flush_log_at_trx_commit",
    "innodb_doublewrite",
    "max_allowed_packet",
];

/// How long a private server may take to answer after it started (InnoDB recovery, a redo
/// log resize).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a clean shutdown (of a golden copy's build) may take.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(300);
/// Tries with another port when the chosen one was taken in between.
const PORT_TRIES: usize = 3;
/// The longest Unix socket path (`sun_path` holds 108 bytes with the NUL).
const SOCKET_PATH_MAX: usize = 100;

/// The local MariaDB programs: the server and its datadir installer, with the server's version.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `mariadbd` (or `mysqld` when it is MariaDB's).
    pub server: PathBuf,
    /// `mariadb-install-db` (or `mysql_install_db`).
    pub install: PathBuf,
    /// `x.y.z`, from `--version`.
    pub version: String,
}

impl Binaries {
    /// Found once per process (in `PATH`, then the usual sbin directories).
    ///
    /// # Errors
    /// Why there is no usable MariaDB server program here.
    pub fn find() -> Result<&'static Binaries, String> {
        static FOUND: OnceLock<Result<Binaries, String>> = OnceLock::new();
        FOUND
            .get_or_init(Self::probe)
            .as_ref()
            .map_err(Clone::clone)
    }

    fn probe() -> Result<Binaries, String> {
        let server =
            find_program(&["mariadbd", "mysqld"]).ok_or("no mariadbd program on this host")?;
        let install = find_program(&["mariadb-install-db", "mysql_install_db"])
            .ok_or("no mariadb-install-db program on this host")?;
        let out = Command::new(&server)
            .args(["--no-defaults", "--version"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", server.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !text.contains("MariaDB") {
            return Err(format!(
                "{} is not MariaDB's server ({}); only MariaDB's can be started privately",
                server.display(),
                text.trim()
            ));
        }
        let version =
            version_number(&text).ok_or_else(|| format!("no version in {:?}", text.trim()))?;
        Ok(Binaries {
            server,
            install,
            version,
        })
    }
}

/// The first `x.y.z` in `text` (`mariadbd  Ver 10.11.6-MariaDB-0+deb12u1 …` → `10.11.6`).
pub fn version_number(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|word| word.split('.').filter(|p| !p.is_empty()).count() >= 3)
        .map(|word| word.split('.').take(3).collect::<Vec<_>>().join("."))
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/libexec"].map(PathBuf::from))
        .collect();
    names.iter().find_map(|name| {
        dirs.iter().map(|d| d.join(name)).find(|p| {
            use std::os::unix::fs::PermissionsExt as _;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// What the configured server is, for a private one to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// `x.y.z` of `VERSION()`.
    pub version: String,
    /// `VERSION()` says MariaDB.
    pub mariadb: bool,
    /// [`COPIED_VARIABLES`] as the server has them.
    pub variables: BTreeMap<String, String>,
}

impl Server {
    /// The version and [`COPIED_VARIABLES`] of this MySQL/MariaDB server.
    ///
    /// # Errors
    /// The server cannot be read, or it is not MySQL/MariaDB.
    pub fn profile(&self) -> Result<Profile, EngineError> {
        let Backend::MySql(ep) = self.backend() else {
            return Err(EngineError::Other("not a MySQL/MariaDB server".into()));
        };
        let (version, variables) =
            self.block_on(|| mysql::version_and_variables(&ep, &COPIED_VARIABLES))?;
        Ok(Profile {
            mariadb: version.contains("MariaDB"),
            version: version_number(&version).unwrap_or(version),
            variables,
        })
    }
}

impl Server {
    /// Reads every table and index of database `name` once (the `cache: warm` option); the
    /// number of tables and indexes read.
    ///
    /// # Errors
    /// The server failed, or it is not MySQL/MariaDB.
    pub fn warm(&self, name: &str) -> Result<(usize, usize), EngineError> {
        super::check_database_name(name)?;
        let Backend::MySql(ep) = self.backend() else {
            return Err(EngineError::Other(
                "only MySQL/MariaDB caches are warmed".into(),
            ));
        };
        self.block_on(|| mysql::warm(&ep, name))
    }
}

/// How a private server is started.
#[derive(Debug, Clone)]
pub struct Instance<'a> {
    /// The programs.
    pub binaries: &'a Binaries,
    /// The instance directory: `data/` (the datadir) and the server's runtime files.
    pub dir: PathBuf,
    /// The engine the run's [`Server`] speaks.
    pub engine: Engine,
    /// The configured server's settings.
    pub profile: &'a Profile,
    /// The user and password the run uses (made by the init file).
    pub user: String,
    pub password: String,
    /// The run reaches the server through its socket (the configured connection does: a tool
    /// in a network namespace of its own cannot reach 127.0.0.1 of ours); the socket is then
    /// in the temporary directory, which every user can reach.
    pub via_socket: bool,
}

impl Instance<'_> {
    /// The datadir.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Makes an empty datadir with the system tables (`mariadb-install-db`).
    ///
    /// # Errors
    /// The installer failed; its last output lines say why.
    pub fn install(&self) -> Result<(), EngineError> {
        let tmp = self.make_tmp()?;
        let mut cmd = Command::new(&self.binaries.install);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.data().display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .arg(format!("--tmpdir={}", tmp.display()))
            .stdin(Stdio::null());
        if nix::unistd::geteuid().is_root() {
            cmd.arg("--user=root");
        }
        let out = cmd.output().map_err(|e| {
            EngineError::Other(format!(
                "cannot run {}: {e}",
                self.binaries.install.display()
            ))
        })?;
        if out.status.success() {
            return Ok(());
        }
        // stderr last: its lines say what failed (stdout ends with the installer's trailer).
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        Err(EngineError::Other(format!(
            "{} failed ({}): {}",
            self.binaries.install.display(),
            out.status,
            last_lines(&text, 5)
        )))
    }

    /// The instance's own temporary directory (`<dir>/tmp`, made if missing). Each installer
    /// and server gets its own: several `mariadb-install-db` at once sharing `/tmp` fail
    /// (`ERROR: 1051 Unknown table 'mysql.tmp_user_sys'`, after `Could not remove temporary
    /// table '/tmp/#sql-temptable-…'`), seen with a dozen at once on this machine.
    fn make_tmp(&self) -> Result<PathBuf, EngineError> {
        let tmp = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp)
            .map_err(|e| EngineError::Other(format!("cannot make {}: {e}", tmp.display())))?;
        Ok(tmp)
    }

    /// Starts the server on the datadir and waits until it answers as the run's user.
    /// `claims`: where the instance is claimed ([`super::instance_claims::claim_instance`]).
    ///
    /// # Errors
    /// It exited or did not answer within [`START_TIMEOUT`] (the error log's end says why),
    /// or `cancel` fired. The instance's directory is removed then.
    pub fn start(
        &self,
        claims: Option<&Path>,
        cancel: &dyn Cancellation,
    ) -> Result<PrivateServer, EngineError> {
        let mut private = PrivateServer {
            child: None,
            dir: self.dir.clone(),
            socket: socket_path(&self.dir, self.via_socket),
            port: 0,
            engine: self.engine,
            user: self.user.clone(),
            password: self.password.clone(),
            claims: claims.map(Path::to_path_buf),
            claim: None,
            keep: false,
            via_socket: self.via_socket,
        };
        private.claim = claims.and_then(|dir| {
            super::instance_claims::claim_instance(dir, &private.dir, &private.socket, None)
        });
        self.write_init_file()?;
        self.make_tmp()?;
        for attempt in 1..=PORT_TRIES {
            private.port = free_port()?;
            let child = spawn(self.command(&private)).map_err(|e| {
                EngineError::Other(format!(
                    "cannot start {}: {e}",
                    self.binaries.server.display()
                ))
            })?;
            private.child = Some(child);
            if let (Some(dir), Some(pid)) = (claims, private.pid()) {
                super::instance_claims::claim_instance(
                    dir,
                    &private.dir,
                    &private.socket,
                    Some(pid),
                );
            }
            match private.wait_ready(cancel) {
                Ok(()) => return Ok(private),
                Err(e) if attempt < PORT_TRIES && private.port_taken() => {
                    tracing::info!(
                        "private server: port {} taken, another try: {e}",
                        private.port
                    );
                    private.kill();
                }
                Err(e) => return Err(e),
            }
        }
        Err(EngineError::Other(
            "no free port for a private server".into(),
        ))
    }

    fn command(&self, private: &PrivateServer) -> Command {
        let mut cmd = Command::new(&self.binaries.server);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.data().display()))
            .arg(format!("--socket={}", private.socket.display()))
            .arg(format!("--port={}", private.port))
            .arg("--bind-address=127.0.0.1")
            .arg("--skip-name-resolve")
            .arg(format!("--tmpdir={}", self.dir.join("tmp").display()))
            .arg(format!(
                "--pid-file={}",
                self.dir.join("mariadbd.pid").display()
            ))
            .arg(format!(
                "--log-error={}",
                self.dir.join("error.log").display()
            ))
            .arg(format!(
                "--init-file={}",
                self.dir.join("init.sql").display()
            ))
            // A cold buffer pool: nothing loaded from (nor dumped to) `ib_buffer_pool`.
            .arg("--innodb-buffer-pool-load-at-startup=OFF")
            .arg("--innodb-buffer-pool-dump-at-shutdown=OFF");
        if nix::unistd::geteuid().is_root() {
            cmd.arg("--user=root");
        }
        for (name, value) in &self.profile.variables {
            cmd.arg(format!("--{name}={value}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// The init file: the run's user with the run's password and every privilege.
    fn write_init_file(&self) -> Result<(), EngineError> {
        if self.user.contains(['\n', '\r']) || self.password.contains(['\n', '\r']) {
            return Err(EngineError::Other(
                "a private server cannot take a user or password with a line break".into(),
            ));
        }
        let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"));
        let (user, password) = (quote(&self.user), quote(&self.password));
        let mut sql = String::new();
        for host in ["'localhost'", "'%'"] {
            let _ = writeln!(sql, "CREATE USER IF NOT EXISTS {user}@{host};");
            let _ = writeln!(sql, "ALTER USER {user}@{host} IDENTIFIED BY {password};");
            let _ = writeln!(
                sql,
                "GRANT ALL PRIVILEGES ON *.* TO {user}@{host} WITH GRANT OPTION;"
            );
        }
        let path = self.dir.join("init.sql");
        std::fs::create_dir_all(&self.dir)
            .and_then(|()| {
                use std::io::Write as _;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&path)?
                    .write_all(sql.as_bytes())
            })
            .map_err(|e| EngineError::Other(format!("cannot write {}: {e}", path.display())))
    }
}

type SpawnRequest = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from the process-wide spawner thread (see the module docs).
fn spawn(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<
        std::io::Result<std::sync::Mutex<std::sync::mpsc::Sender<SpawnRequest>>>,
    > = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("th-private-servers".into())
            .spawn(move || {
                for (mut cmd, reply) in incoming {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .map(|_| std::sync::Mutex::new(requests))
    });
    let sender = match spawner {
        Ok(sender) => sender,
        Err(e) => return Err(std::io::Error::new(e.kind(), e.to_string())),
    };
    let (reply, answer) = std::sync::mpsc::channel();
    sender
        .lock()
        .map_err(|_| std::io::Error::other("the spawner thread's lock is poisoned"))?
        .send((cmd, reply))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

/// `<dir>/mariadbd.sock`, or one in the temporary directory when that path is too long or
/// the socket must be reachable by every user.
fn socket_path(dir: &Path, shared: bool) -> PathBuf {
    let inside = dir.join("mariadbd.sock");
    if inside.as_os_str().len() <= SOCKET_PATH_MAX && !shared {
        return inside;
    }
    std::env::temp_dir().join(format!(
        "th-mariadbd-{}-{}.sock",
        std::process::id(),
        super::random_digits()
    ))
}

fn free_port() -> Result<u16, EngineError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| EngineError::Other(format!("no free port on 127.0.0.1: {e}")))
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// A running private server; dropping it kills it and removes its directory (see the module
/// docs), unless [`PrivateServer::keep_files`].
#[derive(Debug)]
pub struct PrivateServer {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    port: u16,
    engine: Engine,
    user: String,
    password: String,
    claims: Option<PathBuf>,
    claim: Option<PathBuf>,
    keep: bool,
    via_socket: bool,
}

impl PrivateServer {
    /// How the run reaches it: TCP on 127.0.0.1, or its socket when the configured
    /// connection uses one ([`Instance::via_socket`]).
    pub fn connection(&self) -> Connection {
        Connection {
            host: (!self.via_socket).then(|| "127.0.0.1".into()),
            port: Some(self.port),
            socket: self.via_socket.then(|| self.socket.clone()),
            user: Some(self.user.clone()),
            password: Some(self.password.clone()),
        }
    }

    /// A [`Server`] for it.
    pub fn server(&self) -> Server {
        Server::new(self.engine, self.connection(), PathBuf::new()).run_private()
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its instance directory (the datadir is `data/` in it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Leaves the directory in place when dropped (`keep_databases`); the process still ends.
    pub fn keep_files(&mut self) {
        self.keep = true;
    }

    /// Shuts the server down cleanly (SIGTERM: InnoDB flushes everything, a datadir that
    /// starts without recovery), keeping the directory. For a golden copy's build.
    ///
    /// # Errors
    /// It did not end within [`SHUTDOWN_TIMEOUT`] or ended with a failure.
    pub fn shut_down(&mut self) -> Result<(), EngineError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => {
                    self.record_claim();
                    return Ok(());
                }
                Ok(Some(status)) => {
                    return Err(EngineError::Other(format!(
                        "the private server ended with {status}: {}",
                        self.error_log_tail()
                    )))
                }
                Ok(None) if started.elapsed() < SHUTDOWN_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(EngineError::Other(format!(
                        "the private server did not shut down within {} s",
                        SHUTDOWN_TIMEOUT.as_secs()
                    )));
                }
            }
        }
    }

    fn record_claim(&self) {
        if let Some(dir) = &self.claims {
            super::instance_claims::claim_instance(dir, &self.dir, &self.socket, self.pid());
        }
    }

    fn wait_ready(&mut self, cancel: &dyn Cancellation) -> Result<(), EngineError> {
        let started = Instant::now();
        let server = self.server();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(EngineError::Other(format!(
                        "the private server exited at start ({status}): {}",
                        self.error_log_tail()
                    )));
                }
            }
            if server.ping().is_ok() {
                return Ok(());
            }
            if cancel.is_cancelled() {
                return Err(EngineError::Other(
                    "cancelled while starting the private server".into(),
                ));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(EngineError::Other(format!(
                    "the private server did not answer within {} s: {}",
                    START_TIMEOUT.as_secs(),
                    self.error_log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn error_log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        last_lines(&text, 4)
    }

    fn port_taken(&self) -> bool {
        let text = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        text.contains("Address already in use") || text.contains("Can't start server: Bind")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.socket.starts_with(&self.dir) {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.kill();
        if self.keep {
            tracing::info!(
                "keeping the private server's files in {}",
                self.dir.display()
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                // The claim stays: the next start tries again.
                tracing::warn!("cannot remove {}: {e}", self.dir.display());
                return;
            }
        }
        if let Some(claim) = &self.claim {
            turbo_hipster_sdk::support::owner::release(claim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_programs_words() {
        assert_eq!(
            version_number(
                "mariadbd  Ver 10.11.6-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64"
            )
            .as_deref(),
            Some("10.11.6")
        );
        assert_eq!(
            version_number("10.11.19-MariaDB-0+deb12u1").as_deref(),
            Some("10.11.19")
        );
        assert_eq!(version_number("8.0.36").as_deref(), Some("8.0.36"));
        assert_eq!(version_number("no version here 1.2"), None);
    }
}
