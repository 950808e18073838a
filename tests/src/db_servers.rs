//! Private database servers for fault tests: a MariaDB and a PostgreSQL instance of the test's
//! own, on a temporary data directory and a free port, that a test may kill (`SIGKILL`) mid-run
//! without touching the shared servers other tests use.
//!
//! MariaDB: `mariadb-install-db` then `mariadbd --user=root`, root without a password on
//! 127.0.0.1. PostgreSQL: `initdb` and `postgres` from `/usr/lib/postgresql/<v>/bin`, run as the
//! `postgres` OS user (the server refuses root), trust authentication on 127.0.0.1. Each server
//! runs in a process group of its own; dropping the handle kills the group and removes the data.
//!
//! The engines' clients ([`query`], [`databases`], [`psql`]) serve the private servers and the
//! machine's shared ones alike.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::free_port;

/// The kind of a private database server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// MariaDB (`mariadbd`).
    MariaDb,
    /// PostgreSQL (`postgres`).
    PostgreSql,
}

impl DbKind {
    /// The port of the machine's shared server of this kind (`scripts/setup-test-env.sh`).
    pub const fn shared_port(self) -> u16 {
        match self {
            DbKind::MariaDb => 3306,
            DbKind::PostgreSql => 5432,
        }
    }
}

/// Runs `sql` with the engine's client against the server on 127.0.0.1:`port` (as root, or
/// postgres), in database `db` (PostgreSQL's `postgres` when `None`); its output, or the
/// client's error output when it fails.
pub fn query(kind: DbKind, port: u16, db: Option<&str>, sql: &str) -> Result<String, String> {
    let port = port.to_string();
    let out = match kind {
        DbKind::MariaDb => Command::new("mysql")
            .args(["--protocol=TCP", "-h", "127.0.0.1", "-P", &port])
            .args(["-u", "root", "-N", "-B"])
            .args(db)
            .args(["-e", sql])
            .output(),
        DbKind::PostgreSql => Command::new("psql")
            .args(["-X", "-w", "-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
            .args(["-v", "ON_ERROR_STOP=1", "-At"])
            .args(["-d", db.unwrap_or("postgres"), "-c", sql])
            .output(),
    }
    .map_err(|e| format!("cannot run the {kind:?} client: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The databases of the server on 127.0.0.1:`port` whose names start with `prefix`, sorted.
/// Panics when the server cannot be asked.
pub fn databases(kind: DbKind, port: u16, prefix: &str) -> Vec<String> {
    let sql = match kind {
        DbKind::MariaDb => "SHOW DATABASES",
        DbKind::PostgreSql => "SELECT datname FROM pg_database",
    };
    let listed = query(kind, port, None, sql)
        .unwrap_or_else(|e| panic!("cannot list the databases of {kind:?} on port {port}: {e}"));
    let mut names: Vec<String> = listed
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

/// `psql` as `postgres` against the shared server (127.0.0.1:5432) in database `db`: the
/// output of `sql`, trimmed (one value). Panics, naming the statement, if psql fails.
pub fn psql(db: &str, sql: &str) -> String {
    query(
        DbKind::PostgreSql,
        DbKind::PostgreSql.shared_port(),
        Some(db),
        sql,
    )
    .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    .trim()
    .to_string()
}

/// The MariaDB client as root against the server on 127.0.0.1:`port`, in database `db` if
/// any: the output of `sql`, trimmed. Panics, naming the statement, if the client fails.
pub fn mariadb(port: u16, db: Option<&str>, sql: &str) -> String {
    query(DbKind::MariaDb, port, db, sql)
        .unwrap_or_else(|e| panic!("mariadb {sql}: {e}"))
        .trim()
        .to_string()
}

/// A private database server, killed and removed on drop.
pub struct PrivateDb {
    pub kind: DbKind,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateDb {
    /// Starts a fresh server of `kind` and waits until it answers (panics after 60 s).
    pub fn start(kind: DbKind) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = match kind {
            DbKind::MariaDb => start_mariadb(dir.path(), port),
            DbKind::PostgreSql => start_postgres(dir.path(), port),
        };
        let db = PrivateDb {
            kind,
            port,
            dir,
            child: Some(child),
        };
        db.wait_ready(Duration::from_secs(60));
        db
    }

    /// The job config's `engine` for this server.
    pub fn engine(&self) -> &'static str {
        match self.kind {
            DbKind::MariaDb => "mariadb",
            DbKind::PostgreSql => "postgresql",
        }
    }

    /// The job config's `connection` for this server.
    pub fn connection(&self) -> serde_json::Value {
        let user = match self.kind {
            DbKind::MariaDb => "root",
            DbKind::PostgreSql => "postgres",
        };
        serde_json::json!({"host": "127.0.0.1", "port": self.port, "user": user})
    }

    /// Runs `sql` with the engine's client; `None` when the client fails (server down).
    pub fn query(&self, sql: &str) -> Option<String> {
        query(self.kind, self.port, None, sql).ok()
    }

    /// The databases whose names start with `prefix`, sorted.
    pub fn databases(&self, prefix: &str) -> Vec<String> {
        databases(self.kind, self.port, prefix)
    }

    /// Kills the whole server (`SIGKILL` to its process group) and waits for it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// The server's own log (for assertion messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn wait_ready(&self, within: Duration) {
        let start = Instant::now();
        while self.query("SELECT 1").is_none() {
            assert!(
                start.elapsed() < within,
                "{:?} did not start on port {}:\n{}",
                self.kind,
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PrivateDb {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn log_file(dir: &Path) -> std::fs::File {
    std::fs::File::create(dir.join("server.log")).unwrap()
}

fn start_mariadb(dir: &Path, port: u16) -> Child {
    let data = dir.join("data");
    let install = || {
        // Its own TMPDIR: runs started at once collided on a temporary file in /tmp.
        Command::new("mariadb-install-db")
            .env("TMPDIR", dir)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ])
            .output()
            .unwrap()
    };
    let mut out = install();
    if !out.status.success() {
        // Seen once with several private servers starting at once: one more try on a clean
        // data directory, then the whole output.
        eprintln!(
            "mariadb-install-db failed, trying once more: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_dir_all(&data);
        out = install();
    }
    assert!(
        out.status.success(),
        "mariadb-install-db failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let log = log_file(dir);
    Command::new("mariadbd")
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
        .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
        .arg(format!("--port={port}"))
        .args([
            "--bind-address=127.0.0.1",
            "--user=root",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=16M",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap()
}

/// `/usr/lib/postgresql/<highest version>/bin`.
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").is_file())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL server binary")
}

fn start_postgres(dir: &Path, port: u16) -> Child {
    let user = nix::unistd::User::from_name("postgres")
        .unwrap()
        .expect("a postgres OS user");
    nix::unistd::chown(dir, Some(user.uid), Some(user.gid)).unwrap();
    let data = dir.join("data");
    let bin = postgres_bin();
    let as_postgres = |program: &str| {
        let mut cmd = Command::new(bin.join(program));
        cmd.uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .env("HOME", dir)
            .current_dir(dir);
        cmd
    };
    let out = as_postgres("initdb")
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "--no-sync"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = log_file(dir);
    nix::unistd::chown(&dir.join("server.log"), Some(user.uid), Some(user.gid)).unwrap();
    as_postgres("postgres")
        .arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(dir)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap()
}
