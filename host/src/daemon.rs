//! Running as a service: the locked PID file, `-b` (detach into the background), logging.
//!
//! `-b` re-executes the daemon as a child that starts a new session (setsid) with its standard
//! streams detached; the parent waits until the child reports it is serving (or why it could
//! not) and exits. This is fork + setsid + detach without forking a threaded process.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{Flock, FlockArg};

/// Set in the environment of the background child.
pub const DAEMON_CHILD_ENV: &str = "TURBO_HIPSTER_DAEMON_CHILD";

/// Problems with the PID file or with going into the background.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another instance holds the lock.
    #[error("another turbo-hipster is running with PID file {} (pid {pid})", .path.display())]
    AlreadyRunning {
        /// The PID file.
        path: PathBuf,
        /// The pid the file holds.
        pid: String,
    },
    /// The PID file cannot be used.
    #[error("PID file {}: {source}", .path.display())]
    PidFile {
        /// The PID file.
        path: PathBuf,
        source: std::io::Error,
    },
    /// The background child could not be started or failed to start up.
    #[error("could not start in the background: {0}")]
    Background(String),
}

/// A locked PID file, removed when dropped.
pub struct PidFile {
    path: PathBuf,
    _lock: Flock<File>,
}

impl PidFile {
    /// Creates (or takes over a stale) PID file, locks it and writes our pid.
    ///
    /// # Errors
    /// Another live process holds the lock, or the file cannot be written.
    pub fn acquire(path: &Path) -> Result<Self, DaemonError> {
        let io = |source| DaemonError::PidFile {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, errno)) => {
                if errno == nix::errno::Errno::EWOULDBLOCK {
                    let mut pid = String::new();
                    let _ = file.read_to_string(&mut pid);
                    return Err(DaemonError::AlreadyRunning {
                        path: path.to_path_buf(),
                        pid: pid.trim().to_string(),
                    });
                }
                return Err(io(std::io::Error::from(errno)));
            }
        };
        // Unlocked means any previous owner is gone: take the file over.
        lock.set_len(0).map_err(io)?;
        lock.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(&mut *lock, "{}", std::process::id()).map_err(io)?;
        lock.flush().map_err(io)?;
        Ok(PidFile {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether this process is the background child of `-b`.
pub fn is_background_child() -> bool {
    std::env::var_os(DAEMON_CHILD_ENV).is_some()
}

/// In the parent: starts the background child with `args` (without `-b`) and waits for it to
/// report. Returns the child's pid.
///
/// # Errors
/// The child could not be spawned or reported a start-up failure.
pub fn spawn_background(args: &[OsString]) -> Result<u32, DaemonError> {
    let exe = std::env::current_exe().map_err(|e| DaemonError::Background(e.to_string()))?;
    let mut child = Command::new(exe)
        .args(args)
        .env(DAEMON_CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| DaemonError::Background(e.to_string()))?;
    let pid = child.id();
    let Some(stdout) = child.stdout.take() else {
        return Err(DaemonError::Background("no pipe to the child".into()));
    };
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    if line.starts_with("READY") {
        return Ok(pid);
    }
    let _ = child.wait();
    let why = line
        .strip_prefix("ERROR ")
        .map(|s| s.trim().replace("\\n", "\n"))
        .unwrap_or_else(|| "the background process exited during start-up".to_string());
    Err(DaemonError::Background(why))
}

/// In the child: leaves the parent's session.
pub fn detach_session() {
    if let Err(e) = nix::unistd::setsid() {
        tracing::warn!("setsid failed: {e}");
    }
}

/// In the child: tells the parent we are up, then detaches stdout.
pub fn report_ready() {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "READY {}", std::process::id());
    let _ = out.flush();
    if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), std::io::stdout().as_raw_fd());
    }
}

/// In the child: tells the parent why start-up failed.
pub fn report_failure(message: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ERROR {}", message.replace('\n', "\\n"));
    let _ = out.flush();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_lock_takeover_and_removal() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run/th.pid");
        // A stale file from a dead process is taken over.
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "999999\n").unwrap();
        let held = PidFile::acquire(&p).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap().trim(),
            std::process::id().to_string()
        );
        // A second holder is refused, naming the pid.
        let e = PidFile::acquire(&p).err().unwrap();
        assert!(
            e.to_string()
                .contains(&format!("(pid {})", std::process::id())),
            "{e}"
        );
        drop(held);
        assert!(!p.exists());
    }
}
