//! What a killed daemon (or `run-job`) leaves in `jobs_working_dir`: job work directories.
//! Removed when the next one starts serving, never while their owner lives.
//!
//! Every work dir gets a claim file ([`turbo_hipster_sdk::support::owner`]) when it is made,
//! naming the process that made it. A finished job removes its work dir itself (unless
//! `keep_work_dirs`) and writes `job.json` beside it; so a work dir is a leftover when its job
//! dir has no `job.json` and its claim's owner is gone (not running any more on this host).
//! Work dirs of live processes (another daemon or a `run-job` sharing the jobs dir), of
//! another host (shared storage), kept ones of finished jobs and unclaimed ones (made by an
//! older version) are left alone. Plugins clean their own leftovers (run databases) when the
//! host asks them to ([`turbo_hipster_sdk::HostSettings::clean_leftovers`]).

use std::path::Path;

use turbo_hipster_sdk::support::owner;

use crate::job_dir::{JOB_SUMMARY, WORK_DIR};

/// The claim file inside a work dir.
pub const WORK_CLAIM: &str = ".th-owner.json";
/// How deep job dirs may sit under `jobs_working_dir` (`LOG_PATH` has a few levels).
const MAX_DEPTH: usize = 12;

/// Records the current process as the owner of the work dir `dir` (which exists).
pub fn claim_work_dir(dir: &Path) {
    if let Err(e) = owner::claim(dir, WORK_CLAIM, &dir) {
        tracing::warn!(dir = %dir.display(), "cannot record the work dir's owner: {e}");
    }
}

/// Removes the work dirs under `jobs_dir` left by processes that are gone; returns how many.
pub fn remove_stale_work_dirs(jobs_dir: &Path) -> usize {
    let mut removed = 0;
    walk(jobs_dir, 0, &mut removed);
    if removed > 0 {
        tracing::info!(
            "removed {removed} work dir(s) left under {} by a killed run",
            jobs_dir.display()
        );
    }
    removed
}

fn walk(dir: &Path, depth: usize, removed: &mut usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        // Directories only, never through a symlink; hidden ones are not job dirs.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let name = entry.file_name();
        if !is_dir || name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if name == WORK_DIR {
            if is_stale(&path) {
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => {
                        tracing::info!(dir = %path.display(), "removed a work dir left by a killed run");
                        *removed += 1;
                    }
                    Err(e) => {
                        tracing::warn!(dir = %path.display(), "cannot remove a leftover work dir: {e}")
                    }
                }
            }
        } else if depth < MAX_DEPTH {
            walk(&path, depth + 1, removed);
        }
    }
}

fn is_stale(work: &Path) -> bool {
    let finished = work
        .parent()
        .is_some_and(|job_dir| job_dir.join(JOB_SUMMARY).exists());
    !finished
        && owner::load::<std::path::PathBuf>(&work.join(WORK_CLAIM))
            .is_ok_and(|c| c.owner.is_gone())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_unfinished_work_dirs_of_gone_owners_are_removed() {
        let jobs = tempfile::tempdir().unwrap();
        let mk = |rel: &str| {
            let d = jobs.path().join(rel).join(WORK_DIR);
            std::fs::create_dir_all(d.join("git")).unwrap();
            d
        };
        let mine = mk("a/b/live");
        claim_work_dir(&mine);
        let dead = mk("12/34/check/job/dead");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let claim = owner::Claim {
            owner: owner::Owner {
                pid,
                ..owner::Owner::current()
            },
            what: &dead,
        };
        std::fs::write(dead.join(WORK_CLAIM), serde_json::to_vec(&claim).unwrap()).unwrap();
        let kept = mk("kept");
        std::fs::write(kept.join(WORK_CLAIM), serde_json::to_vec(&claim).unwrap()).unwrap();
        std::fs::write(jobs.path().join("kept").join(JOB_SUMMARY), "{}").unwrap();
        let unclaimed = mk("old");
        assert_eq!(remove_stale_work_dirs(jobs.path()), 1);
        assert!(!dead.exists());
        assert!(dead.parent().unwrap().exists(), "the results stay");
        assert!(mine.exists() && kept.exists() && unclaimed.exists());
    }
}
