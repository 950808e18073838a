//! The journal of in-process jobs: a job that killed the daemon twice is refused.
//!
//! With `job_isolation: "in-process"`, a plugin that segfaults or aborts takes the daemon down
//! and gearmand hands the same job to the restarted daemon: without a memory of it, the daemon
//! crash-loops. So a daemon appends one line when an in-process job starts
//! (`S <pid> <n> <function> <unique>`) and one when it ends (`E <pid> <n>`) to
//! `jobs_working_dir/running-<worker_name>.journal` (functions and uniques hold no spaces: both
//! are checked before a job starts). At its first in-process job, a daemon reads the journal:
//! a start of another pid without an end, whose pid is not a live turbo-hipster, is a job that
//! was running when that daemon died — a crash of `(function, unique)`. Counts are kept across
//! restarts as `C <count> <function> <unique>` lines; a pair counted [`REFUSE_AFTER`] times is
//! refused when it comes again, with [`refused_message`], instead of being run (Zuul sends a
//! new unique for a new build, so only the crashing job's retries are refused).
//!
//! Bounded: the journal is rewritten (crash counts, the most recent [`MAX_CRASHES`], and the
//! starts of live daemons) when it is read, and again when it passes [`COMPACT_BYTES`] while
//! running. Cheap: two short `write`s per job on a file kept open, no fsync (a crash of the
//! daemon does not lose what the kernel has). A daemon killed by the operator (`kill -9`)
//! mid-job also counts as a crash of that job: a job is refused only after the second.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::Config;

/// How many crashes of the daemon a job may cause before it is refused.
pub const REFUSE_AFTER: u32 = 2;
/// The journal is rewritten with only what matters once it is this large.
pub const COMPACT_BYTES: u64 = 1 << 20;
/// Crash counts kept (the most recent).
pub const MAX_CRASHES: usize = 1000;

/// The reason (after `FAILURE - `) a job that crashed the daemon twice gets.
pub fn refused_message() -> String {
    format!(
        "this job crashed the worker {}; refused (job_isolation \"process\" contains it)",
        if REFUSE_AFTER == 2 {
            "twice".to_string()
        } else {
            format!("{REFUSE_AFTER} times")
        }
    )
}

/// The journal's file for a worker in a jobs dir.
pub fn path(jobs_dir: &Path, worker_name: &str) -> PathBuf {
    let worker: String = worker_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    jobs_dir.join(format!("running-{worker}.journal"))
}

/// A running in-process job's place in the journal; its end is written when it is dropped.
pub struct Entry {
    id: u64,
}

impl Entry {
    /// Records that the job `(function, unique)` starts, or refuses it (`Err`: the reason for
    /// its result).
    ///
    /// # Errors
    /// The job crashed the daemon [`REFUSE_AFTER`] times.
    pub fn start(config: &Config, function: &str, unique: &str) -> Result<Self, String> {
        let path = path(&config.jobs_working_dir, &config.worker_name);
        let mut guard = JOURNAL.lock().unwrap_or_else(|e| e.into_inner());
        if guard.as_ref().is_none_or(|j| j.path != path) {
            *guard = Some(Journal::open(path));
        }
        let Some(journal) = guard.as_mut() else {
            return Ok(Entry { id: 0 });
        };
        let key = (function.to_string(), unique.to_string());
        if !unique.is_empty() && journal.crash_count(&key) >= REFUSE_AFTER {
            return Err(refused_message());
        }
        journal.next_id += 1;
        let id = journal.next_id;
        journal.append(&format!(
            "S {} {id} {} {}\n",
            std::process::id(),
            key.0,
            key.1
        ));
        journal.running.insert(id, key);
        Ok(Entry { id })
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut guard = JOURNAL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(journal) = guard.as_mut() {
            if journal.running.remove(&self.id).is_some() {
                journal.append(&format!("E {} {}\n", std::process::id(), self.id));
                if journal.bytes > COMPACT_BYTES {
                    journal.rewrite(&[]);
                }
            }
        }
    }
}

static JOURNAL: Mutex<Option<Journal>> = Mutex::new(None);

/// A job: (function, unique).
type Key = (String, String);
/// Crash counts by job, oldest first.
type Crashes = Vec<(Key, u32)>;
/// A start line: pid, id, function, unique.
type Start = (u32, u64, String, String);

struct Journal {
    path: PathBuf,
    file: Option<File>,
    bytes: u64,
    next_id: u64,
    /// This daemon's running jobs by id.
    running: HashMap<u64, Key>,
    /// Crash counts, oldest first.
    crashes: Crashes,
}

/// What a journal's text says: crash counts and the starts without an end.
fn parse(text: &str) -> (Crashes, Vec<Start>) {
    let mut crashes: Crashes = Vec::new();
    let mut starts: Vec<Start> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["C", n, function, unique] => {
                if let Ok(n) = n.parse() {
                    add_crash(&mut crashes, (function.to_string(), unique.to_string()), n);
                }
            }
            ["S", pid, id, function, unique] => {
                if let (Ok(pid), Ok(id)) = (pid.parse(), id.parse()) {
                    starts.push((pid, id, function.to_string(), unique.to_string()));
                }
            }
            ["E", pid, id] => {
                if let (Ok(pid), Ok(id)) = (pid.parse::<u32>(), id.parse::<u64>()) {
                    starts.retain(|s| (s.0, s.1) != (pid, id));
                }
            }
            // A line torn by a crash mid-write, or garbage: ignored.
            _ => {}
        }
    }
    (crashes, starts)
}

fn add_crash(crashes: &mut Crashes, key: Key, n: u32) {
    if let Some(i) = crashes.iter().position(|(k, _)| *k == key) {
        let (k, count) = crashes.remove(i);
        crashes.push((k, count.saturating_add(n)));
    } else {
        crashes.push((key, n));
    }
    if crashes.len() > MAX_CRASHES {
        crashes.remove(0);
    }
}

/// Whether `pid` is a live turbo-hipster (another daemon sharing the journal, or `run-job`).
fn is_live_daemon(pid: u32) -> bool {
    pid == std::process::id()
        || std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim_end() == "turbo-hipster")
}

impl Journal {
    /// Reads the journal (counting the crashes it shows), rewrites it compacted, opens it.
    fn open(path: PathBuf) -> Self {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let (mut crashes, starts) = parse(&text);
        let mut live = Vec::new();
        for (pid, id, function, unique) in starts {
            if is_live_daemon(pid) {
                live.push(format!("S {pid} {id} {function} {unique}\n"));
                continue;
            }
            let key = (function, unique);
            add_crash(&mut crashes, key.clone(), 1);
            let count = crashes.iter().find(|(k, _)| *k == key).map_or(1, |c| c.1);
            tracing::warn!(
                function = %key.0,
                unique = %key.1,
                pid,
                crashes = count,
                "this job was running when the daemon ended: counted as a crash of the daemon{}",
                if count >= REFUSE_AFTER && !key.1.is_empty() {
                    "; it will be refused if it comes again"
                } else {
                    ""
                }
            );
        }
        let mut journal = Journal {
            path,
            file: None,
            bytes: 0,
            next_id: 0,
            running: HashMap::new(),
            crashes,
        };
        journal.rewrite(&live);
        journal
    }

    fn crash_count(&self, key: &Key) -> u32 {
        self.crashes
            .iter()
            .find(|(k, _)| k == key)
            .map_or(0, |(_, n)| *n)
    }

    fn append(&mut self, line: &str) {
        // Not open: said once, when it could not be opened or written.
        let Some(f) = self.file.as_mut() else {
            return;
        };
        match f.write_all(line.as_bytes()) {
            Ok(()) => self.bytes += line.len() as u64,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "cannot write the job journal: {e}");
                self.file = None;
            }
        }
    }

    /// Replaces the file with the crash counts, `extra` lines and this daemon's running jobs.
    fn rewrite(&mut self, extra: &[String]) {
        let mut text = String::new();
        for ((function, unique), n) in &self.crashes {
            text.push_str(&format!("C {n} {function} {unique}\n"));
        }
        for line in extra {
            text.push_str(line);
        }
        let pid = std::process::id();
        for (id, (function, unique)) in &self.running {
            text.push_str(&format!("S {pid} {id} {function} {unique}\n"));
        }
        let tmp = self.path.with_extension("journal.tmp");
        let replaced = std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = replaced {
            tracing::warn!(path = %self.path.display(), "cannot rewrite the job journal: {e}");
        }
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| {
                tracing::warn!(path = %self.path.display(), "cannot open the job journal: {e}");
            })
            .ok();
        self.bytes = text.len() as u64;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(f: &str, u: &str) -> (String, String) {
        (f.to_string(), u.to_string())
    }

    #[test]
    fn starts_without_an_end_remain_and_counts_add_up() {
        let text = "C 1 build:x u1\nS 7 1 build:x u1\nS 7 2 build:y u2\nE 7 2\nS 7 3 build:z u\n\
                    C 2 build:w u4\ngarbage line\nS 7 4 build:torn";
        let (crashes, starts) = parse(text);
        assert_eq!(
            crashes,
            vec![(key("build:x", "u1"), 1), (key("build:w", "u4"), 2)]
        );
        let open: Vec<u64> = starts.iter().map(|s| s.1).collect();
        assert_eq!(open, vec![1, 3]);
    }

    #[test]
    fn crash_counts_are_bounded_and_keep_the_most_recent() {
        let mut crashes = Vec::new();
        for i in 0..MAX_CRASHES + 10 {
            add_crash(&mut crashes, key("build:x", &i.to_string()), 1);
        }
        assert_eq!(crashes.len(), MAX_CRASHES);
        assert_eq!(crashes[0].0 .1, "10");
        add_crash(&mut crashes, key("build:x", "10"), 1);
        assert_eq!(crashes.last().unwrap(), &(key("build:x", "10"), 2));
    }

    #[test]
    fn a_job_costs_two_short_lines_and_the_file_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        let jobs = dir.path().join("jobs");
        std::fs::create_dir(&jobs).unwrap();
        let text = serde_json::json!({"jobs_working_dir": jobs, "worker_name": "bench"});
        std::fs::write(&file, text.to_string()).unwrap();
        let config = crate::config::load(&file).unwrap();
        let n = 20_000;
        let started = std::time::Instant::now();
        for i in 0..n {
            let unique = format!("{i:032x}");
            drop(Entry::start(&config, "build:noop", &unique).unwrap());
        }
        let per_job = started.elapsed() / n;
        println!("journal: {per_job:?} per job");
        // Generous for a debug build on a loaded machine; a release build takes a few µs.
        assert!(
            per_job < std::time::Duration::from_micros(200),
            "{per_job:?}"
        );
        let len = std::fs::metadata(path(&jobs, "bench")).unwrap().len();
        assert!(len <= COMPACT_BYTES + 200, "{len}");
    }

    #[test]
    fn dead_daemons_open_jobs_become_crashes_and_the_file_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "w/1");
        assert!(p.ends_with("running-w_1.journal"));
        // pid 0 is never a live process.
        std::fs::write(
            &p,
            "C 1 build:x u1\nS 0 1 build:x u1\nS 0 2 build:y u2\nE 0 2\n",
        )
        .unwrap();
        let j = Journal::open(p.clone());
        assert_eq!(j.crash_count(&key("build:x", "u1")), 2);
        assert_eq!(j.crash_count(&key("build:y", "u2")), 0);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "C 2 build:x u1\n");
    }
}
