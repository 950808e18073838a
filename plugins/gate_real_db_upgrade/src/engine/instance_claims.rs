//! Claims of private MariaDB servers ([`super::PrivateServer`]: a golden copy's build, a
//! run's server), read by [`crate::leftovers`] at the next start: the instance directory and,
//! while it runs, the server's process (pid and start time, so a reused pid is never taken
//! for it). Here, beside the servers, so that the engine does not depend on the leftovers'
//! run-database side.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use turbo_hipster_sdk::support::owner::{self, Owner};

/// The claims directory under `jobs_working_dir` (hidden: the host's own scan skips it).
pub const CLAIMS_DIR: &str = ".gate_real_db_upgrade";

/// A private server's instance, as its claim records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInstance {
    /// The instance directory (datadir and runtime files).
    pub dir: PathBuf,
    /// Its socket, when outside the directory.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// The server's process while it runs.
    pub process: Option<Owner>,
}

/// Where private server instances are claimed, next to the run databases' `claims` dir.
pub fn instances_dir(claims: &Path) -> PathBuf {
    let name = claims
        .file_name()
        .map_or_else(|| CLAIMS_DIR.into(), |n| n.to_string_lossy().into_owned());
    claims.with_file_name(format!("{name}-servers"))
}

/// Claims (or claims again, once its process runs) the private server instance `dir` for the
/// current process; the claim's path, or `None` (logged).
pub fn claim_instance(
    claims: &Path,
    dir: &Path,
    socket: &Path,
    pid: Option<u32>,
) -> Option<PathBuf> {
    let process = pid.and_then(|pid| {
        let stat = turbo_hipster_sdk::support::procfs::stat(i32::try_from(pid).ok()?)?;
        Some(Owner {
            pid,
            start_ticks: stat.start_ticks,
            ..Owner::current()
        })
    });
    let name = dir.file_name()?.to_string_lossy().into_owned();
    let instance = ServerInstance {
        dir: dir.to_path_buf(),
        socket: (!socket.starts_with(dir)).then(|| socket.to_path_buf()),
        process,
    };
    owner::claim(&instances_dir(claims), &format!("{name}.json"), &instance)
        .map_err(|e| tracing::warn!("cannot record the private server {}: {e}", dir.display()))
        .ok()
}

/// Ends the private servers whose claim (next to `claims`) names a process that is gone:
/// kills the server if it still runs, removes its directory. Returns the directories removed.
pub fn remove_orphaned_instances(claims: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for (path, instance) in owner::orphaned::<ServerInstance>(&instances_dir(claims)) {
        if let Some(process) = instance.process.as_ref().filter(|p| !p.is_gone()) {
            kill_and_wait(process);
        }
        match std::fs::remove_dir_all(&instance.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(
                    "cannot remove the private server {} left by a killed run (kept for the next \
                     start): {e}",
                    instance.dir.display()
                );
                continue;
            }
            _ => {}
        }
        if let Some(socket) = &instance.socket {
            let _ = std::fs::remove_file(socket);
        }
        tracing::info!(
            "removed the private server {} left by a killed run",
            instance.dir.display()
        );
        owner::release(&path);
        removed.push(instance.dir);
    }
    removed
}

fn kill_and_wait(process: &Owner) {
    let Ok(pid) = i32::try_from(process.pid) else {
        return;
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let started = std::time::Instant::now();
    while !process.is_gone() && started.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
