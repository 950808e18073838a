//! The daemon's job history (`jobs.jsonl`): one JSON line per finished job, never a torn one.
//!
//! Lines are appended with a single `write` on an `O_APPEND` handle, so a line is either all
//! there or not at all: a short or failed write (a full disk) is cut back to the length the file
//! had before. Should even that fail, the handle is dropped and the file repaired when it is
//! opened again: a last line without its `\n` is moved to `jobs.jsonl.torn`, so it can never be
//! glued to the next record. A record that could not be written is kept in memory (bounded)
//! and written with the next one, so the history is complete once the disk has room again.
//!
//! Beside the raw record, every job's migrations (from the outcome's details: duration,
//! counters, locks, dataset, engine, commit, status) go into the per-migration history
//! database ([`th_history::HistoryDb`], config `history_database`), which the `history`,
//! `limits` and `trends` commands read and the gate plugin's regression warning compares
//! with. A job that was aborted or failed by the infrastructure is not recorded there (its
//! figures say nothing about the change); one that cannot be recorded is logged.
//!
//! One [`History`] per service (its [`crate::pipeline::Pipeline`] owns it): every job of the
//! service appends through it, one at a time.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Most bytes of records kept for a later write while the history cannot be written.
const MAX_PENDING: usize = 4 * 1024 * 1024;

/// A service's job history.
pub struct History {
    path: PathBuf,
    state: Mutex<State>,
    migrations: Option<th_history::HistoryDb>,
}

/// The open history file and what waits to be written to it.
#[derive(Default)]
struct State {
    file: Option<File>,
    /// Whole lines not written yet (oldest first).
    pending: Vec<u8>,
    /// Records that failed to be written since the last success.
    failures: usize,
}

impl History {
    /// The history at `path`, opened at once if it exists, so that a torn last line left by a
    /// predecessor (killed mid-write, or on a full disk) is moved aside when the service
    /// starts, not at the first job. A history that does not exist yet is left to the first
    /// job to create.
    pub fn open(path: &Path) -> Self {
        let mut state = State::default();
        if path.exists() {
            match open_repaired(path) {
                Ok(file) => state.file = Some(file),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "cannot open the job history: {e}")
                }
            }
        }
        History {
            path: path.to_path_buf(),
            state: Mutex::new(state),
            migrations: None,
        }
    }

    /// Records every job's migrations in `db` too.
    pub fn with_migrations(mut self, db: th_history::HistoryDb) -> Self {
        self.migrations = Some(db);
        self
    }

    /// Records the migrations of the job `unique` (from its outcome's `details`) in the
    /// history database, unless it was aborted or failed by the infrastructure. Failures are
    /// logged, never returned.
    pub fn record_migrations(&self, unique: &str, result: &str, details: &serde_json::Value) {
        let Some(db) = &self.migrations else {
            return;
        };
        if result == turbo_hipster_sdk::results::ABORTED
            || turbo_hipster_sdk::results::infrastructure_failure(result).is_some()
        {
            return;
        }
        let samples = th_history::samples_from_details(details, unique);
        match db.record(&samples) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(unique, samples = n, "migrations recorded in the history"),
            Err(e) => tracing::warn!(unique, "cannot record the job's migrations: {e}"),
        }
    }

    /// Where the history is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `line` (one JSON record ending with `\n`), with whatever earlier records could
    /// not be written. Failures are logged, never returned: the history is the daemon's record,
    /// not the job's result.
    pub fn append(&self, line: &[u8]) {
        let path = &self.path;
        let mut h = self.state.lock().unwrap_or_else(|e| e.into_inner());
        h.pending.extend_from_slice(line);
        match h.write_pending(path) {
            Ok(()) if h.failures > 0 => {
                tracing::info!(path = %path.display(), records = h.failures + 1, "the job history is writable again: records that had failed are written now");
                h.failures = 0;
            }
            Ok(()) => {}
            Err(e) => {
                h.failures += 1;
                h.file = None;
                tracing::warn!(path = %path.display(), "cannot record the job in the history (kept for the next record): {e}");
                if h.pending.len() > MAX_PENDING {
                    tracing::error!(path = %path.display(), records = h.failures, "the job history cannot be written: records dropped");
                    h.pending.clear();
                    h.failures = 0;
                }
            }
        }
    }
}

impl State {
    fn write_pending(&mut self, path: &Path) -> io::Result<()> {
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(open_repaired(path)?),
        };
        append_whole(file, &self.pending)?;
        self.pending.clear();
        Ok(())
    }
}

/// Appends `bytes` with one `write`; when not all of it went, cuts the file back to its length
/// before, so that no part of it stays.
///
/// # Errors
/// The write failed or was short (the file is then as before), or the cut failed too (the file
/// may then end in a torn line: [`open_repaired`] handles it).
pub fn append_whole(file: &mut File, bytes: &[u8]) -> io::Result<()> {
    let before = file.metadata()?.len();
    let failure = loop {
        match file.write(bytes) {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(n) => {
                break io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!("short write ({n} of {} bytes; disk full?)", bytes.len()),
                )
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break e,
        }
    };
    match file.set_len(before) {
        Ok(()) => Err(failure),
        Err(cut) => Err(io::Error::new(
            failure.kind(),
            format!("{failure}; and the part written cannot be cut back: {cut}"),
        )),
    }
}

/// Opens (creating) the history for appending; a last line without its `\n` is moved to
/// `<path>.torn` first.
///
/// # Errors
/// The file cannot be opened, read or repaired.
pub fn open_repaired(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)?;
    let len = file.metadata()?.len();
    let cut = last_line_end(&file, len)?;
    if cut < len {
        let torn_len = usize::try_from(len - cut).map_err(io::Error::other)?;
        let mut torn = vec![0; torn_len];
        file.read_exact_at(&mut torn, cut)?;
        torn.push(b'\n');
        let torn_path = PathBuf::from(format!("{}.torn", path.display()));
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&torn_path)?;
        out.write_all(&torn)?;
        file.set_len(cut)?;
        tracing::warn!(
            path = %path.display(),
            bytes = torn_len,
            "the job history ended in a torn line: moved to {}",
            torn_path.display()
        );
    }
    Ok(file)
}

/// Where the last complete line of `file` (of length `len`) ends: `len` when the file ends
/// with `\n` (or is empty), else just after the last `\n` (0 when there is none).
fn last_line_end(file: &File, len: u64) -> io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut end = len;
    let mut buf = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let piece = &mut buf[..usize::try_from(end - start).map_err(io::Error::other)?];
        file.read_exact_at(piece, start)?;
        if end == len && piece.last() == Some(&b'\n') {
            return Ok(len);
        }
        if let Some(i) = piece.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_moved_aside_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"b\":2}\n{\"torn\":").unwrap();
        let mut f = open_repaired(&path).unwrap();
        append_whole(&mut f, b"{\"c\":3}\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n"
        );
        let torn = dir.path().join("jobs.jsonl.torn");
        assert_eq!(std::fs::read_to_string(&torn).unwrap(), "{\"torn\":\n");
        // A whole file is left alone; so is an empty one; a file of only a torn line empties.
        drop(open_repaired(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
        let empty = dir.path().join("empty.jsonl");
        drop(open_repaired(&empty).unwrap());
        assert_eq!(std::fs::read(&empty).unwrap(), b"");
        let only = dir.path().join("only.jsonl");
        std::fs::write(&only, "x".repeat(200_000)).unwrap();
        drop(open_repaired(&only).unwrap());
        assert_eq!(std::fs::read(&only).unwrap(), b"");
        assert_eq!(
            std::fs::read(dir.path().join("only.jsonl.torn"))
                .unwrap()
                .len(),
            200_001
        );
    }

    #[test]
    fn a_full_device_leaves_nothing() {
        // /dev/full: every write fails with ENOSPC (and it has no length to cut back to).
        let mut f = OpenOptions::new().append(true).open("/dev/full").unwrap();
        let e = append_whole(&mut f, b"{\"x\":1}\n").unwrap_err();
        assert!(e.to_string().contains("No space left"), "{e}");
    }

    /// A one-page tmpfs (the tests run as root): a line that only partly fits is cut back, the
    /// lines before stay whole, and the next line that fits is appended cleanly.
    #[test]
    fn a_short_write_on_a_full_filesystem_is_cut_back() {
        let Some(fs) = TinyFs::mount("4k") else {
            eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
            return;
        };
        let path = fs.dir.path().join("jobs.jsonl");
        let mut f = open_repaired(&path).unwrap();
        let first = format!("{{\"first\":\"{}\"}}\n", "a".repeat(3000));
        append_whole(&mut f, first.as_bytes()).unwrap();
        let big = format!("{{\"big\":\"{}\"}}\n", "b".repeat(2000));
        let e = append_whole(&mut f, big.as_bytes()).unwrap_err();
        assert!(
            e.to_string().contains("short write") || e.to_string().contains("No space"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        append_whole(&mut f, b"{\"small\":1}\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        assert_eq!(text.lines().count(), 2);
    }

    /// A tmpfs of the given size on a temp dir, unmounted on drop.
    struct TinyFs {
        dir: tempfile::TempDir,
    }

    impl TinyFs {
        fn mount(size: &str) -> Option<Self> {
            let dir = tempfile::tempdir().ok()?;
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            ok.then_some(TinyFs { dir })
        }
    }

    impl Drop for TinyFs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.dir.path())
                .status();
        }
    }
}
