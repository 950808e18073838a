//! Who owns a leftover: claim files that let a starting daemon remove what a killed
//! predecessor left (run databases, work directories) without touching what a live process
//! still uses.
//!
//! A claim is a small JSON file written *before* the thing it claims is made and removed once
//! the thing is gone. It names its owner by process id **and** that process's start time
//! (`/proc/<pid>/stat`, so a reused pid is not mistaken for the owner), the boot id (a pid from
//! before a reboot is never alive) and the host name. A claim's owner is [`Owner::is_gone`]
//! only when it ran on this host and that exact process no longer exists: claims of live
//! processes (another daemon sharing the jobs directory, a `run-job` next to the daemon) and
//! claims written on another host (a jobs directory on shared storage) are never acted on.
//! A claim file is private (mode 0600): it may record how to reach a database server.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A process, identified so that it cannot be confused with a later one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Its pid (reused pids are told apart by `start_ticks` and `boot_id`).
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat`, field 22).
    pub start_ticks: u64,
    /// `/proc/sys/kernel/random/boot_id` when it ran.
    pub boot_id: String,
    /// The host name it ran on.
    pub host: String,
}

impl Owner {
    /// The calling process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Owner {
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
            boot_id: boot_id(),
            host: host_name(),
        }
    }

    /// Whether this owner ran on this host and no longer runs. Unknown → not gone.
    pub fn is_gone(&self) -> bool {
        // Another host's process, or no /proc to look at: cannot judge.
        if self.host != host_name() || start_ticks(std::process::id()).is_none() {
            return false;
        }
        if self.boot_id != boot_id() {
            return true;
        }
        match stat_fields(self.pid) {
            None => true,
            // A zombie has exited; only its parent (or init, slow to reap, after the parent
            // was killed) has not collected it yet.
            Some(('Z' | 'X' | 'x', _)) => true,
            Some((_, ticks)) => ticks != self.start_ticks,
        }
    }
}

fn start_ticks(pid: u32) -> Option<u64> {
    stat_fields(pid).map(|(_, ticks)| ticks)
}

/// A process's state letter and start time.
fn stat_fields(pid: u32) -> Option<(char, u64)> {
    let s = crate::support::procfs::stat(i32::try_from(pid).ok()?)?;
    Some((s.state, s.start_ticks))
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A claim as stored: its owner and what it claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim<T> {
    /// Who made the claimed thing.
    pub owner: Owner,
    /// What it is (the caller's own description).
    pub what: T,
}

/// Writes `what` as a claim of the current process to `dir/name` (made private, 0600; `dir`
/// is created). Returns the claim's path, to [`release`] once the thing is gone.
///
/// # Errors
/// The directory or file cannot be written.
pub fn claim<T: Serialize>(dir: &Path, name: &str, what: &T) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    let text = serde_json::to_vec(&Claim {
        owner: Owner::current(),
        what,
    })
    .map_err(std::io::Error::other)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(&text)?;
    Ok(path)
}

/// Removes a claim (the claimed thing is gone, or is kept on purpose). Missing is fine.
pub fn release(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("cannot remove the claim {}: {e}", path.display());
        }
    }
}

/// Reads one claim.
///
/// # Errors
/// It cannot be read or is not a claim; the message says why.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Claim<T>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// The claims in `dir` whose owner is gone, with their paths. Unreadable claims are skipped
/// (logged); a missing directory holds none.
pub fn orphaned<T: DeserializeOwned>(dir: &Path) -> Vec<(PathBuf, T)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        match load::<T>(&path) {
            Ok(c) if c.owner.is_gone() => found.push((path, c.what)),
            Ok(_) => {}
            Err(e) => tracing::warn!("ignoring the unreadable claim {}: {e}", path.display()),
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_current_process_is_alive_and_a_dead_one_is_gone() {
        let me = Owner::current();
        assert!(me.start_ticks > 0, "{me:?}");
        assert!(!me.is_gone());
        // A process that has exited.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = Owner { pid, ..me.clone() };
        assert!(dead.is_gone());
        // A process that has exited but is not reaped yet (a zombie) is gone too: after a
        // daemon's kill -9, init may take a while to collect its job's child process.
        let zombie = std::process::Command::new("true").spawn().unwrap();
        let zpid = zombie.id();
        let waited = std::time::Instant::now();
        while stat_fields(zpid).is_some_and(|(state, _)| state != 'Z') {
            assert!(waited.elapsed() < std::time::Duration::from_secs(5));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let ticks = start_ticks(zpid).unwrap();
        assert!(Owner {
            pid: zpid,
            start_ticks: ticks,
            ..me.clone()
        }
        .is_gone());
        drop(zombie);
        // The same pid with another start time: a reused pid is not the owner.
        let reused = Owner {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert!(reused.is_gone());
        // Another boot: gone; another host: never judged.
        assert!(Owner {
            boot_id: "other".into(),
            ..me.clone()
        }
        .is_gone());
        assert!(!Owner {
            host: "elsewhere".into(),
            pid,
            ..me
        }
        .is_gone());
    }

    #[test]
    fn claims_of_live_owners_are_not_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let mine = claim(dir.path(), "a.json", &"db_a").unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = Claim {
            owner: Owner {
                pid,
                ..Owner::current()
            },
            what: "db_b",
        };
        std::fs::write(
            dir.path().join("b.json"),
            serde_json::to_vec(&dead).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("junk.json"), "{").unwrap();
        let found: Vec<(PathBuf, String)> = orphaned(dir.path());
        assert_eq!(found, vec![(dir.path().join("b.json"), "db_b".to_string())]);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&mine).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        release(&mine);
        release(&mine);
        assert!(!mine.exists());
    }
}
