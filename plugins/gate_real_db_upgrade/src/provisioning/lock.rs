//! A lock file shared by the jobs of one worker (and of every `run-job` using the same jobs
//! directory): shared while a run clones a golden copy, exclusive while one is built or
//! dropped. Waiting says so in the dataset's log (every [`PROGRESS_EVERY`]) and gives up when
//! the job is cancelled. The kernel releases the lock when its holder dies, so a killed
//! builder never blocks the next one.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use turbo_hipster_sdk::support::process::Cancellation;

/// How often a waiting job says it still waits.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// How long between attempts.
const POLL: Duration = Duration::from_millis(200);

/// Shared or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Several holders (runs cloning).
    Shared,
    /// One holder (building or dropping golden copies).
    Exclusive,
}

/// A held lock; released when dropped (closing the file releases it).
#[derive(Debug)]
pub struct Held {
    _file: File,
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file cannot be opened or locked.
    #[error("lock {path}: {error}")]
    Io {
        /// The lock file.
        path: String,
        /// What went wrong.
        error: io::Error,
    },
    /// The job was cancelled while waiting.
    #[error("cancelled while waiting for {0}")]
    Cancelled(String),
}

/// Takes the lock `path` in `mode`, waiting as long as it takes; `progress` is called with
/// the time waited so far, once when the wait starts and every [`PROGRESS_EVERY`] after.
///
/// # Errors
/// [`LockError`].
pub fn acquire(
    path: &Path,
    mode: Mode,
    cancel: &dyn Cancellation,
    progress: &dyn Fn(Duration),
) -> Result<Held, LockError> {
    let io_error = |error| LockError::Io {
        path: path.display().to_string(),
        error,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_error)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_error)?;
    let started = Instant::now();
    let mut next_progress = Duration::ZERO;
    loop {
        let attempt = match mode {
            Mode::Shared => file.try_lock_shared(),
            Mode::Exclusive => file.try_lock(),
        };
        match attempt {
            Ok(()) => return Ok(Held { _file: file }),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(io_error(e)),
        }
        let waited = started.elapsed();
        if waited >= next_progress {
            progress(waited);
            next_progress += PROGRESS_EVERY;
        }
        if cancel.wait_cancelled(POLL) {
            return Err(LockError::Cancelled(path.display().to_string()));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use turbo_hipster_sdk::support::process::NeverCancelled;

    #[test]
    fn exclusive_waits_for_shared_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let calls = AtomicUsize::new(0);
        let progress = |_: Duration| {
            calls.fetch_add(1, Ordering::SeqCst);
        };
        let a = acquire(&path, Mode::Shared, &NeverCancelled, &progress).unwrap();
        let b = acquire(&path, Mode::Shared, &NeverCancelled, &progress).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 0, "shared locks do not wait");
        std::thread::scope(|s| {
            let waiter =
                s.spawn(|| acquire(&path, Mode::Exclusive, &NeverCancelled, &progress).unwrap());
            std::thread::sleep(Duration::from_millis(500));
            assert!(
                !waiter.is_finished(),
                "exclusive must wait for the shared holders"
            );
            drop(a);
            drop(b);
            let held = waiter.join().unwrap();
            drop(held);
        });
        assert!(calls.load(Ordering::SeqCst) >= 1, "the wait was reported");
    }
}
