//! The names the daemon gives to what it keeps in `jobs_working_dir`: each job's directory
//! (`<LOG_PATH or unique>/`, its results, with the work dir inside) and the files beside them.
//! The job pipeline writes them, and the start-up cleanup ([`crate::leftovers`]) reads them to
//! tell a finished job's directory from a killed one's, so they live here, below both.

/// The job's scratch directory inside its job dir; made when the plugin first asks for it,
/// removed after the job (unless `keep_work_dirs`), never published.
pub const WORK_DIR: &str = "work";
/// The daemon's record of a job, in its results.
pub const JOB_SUMMARY: &str = "job.json";
/// Every job's summary, one JSON line each, in `jobs_working_dir`.
pub const HISTORY_FILE: &str = "jobs.jsonl";
/// Plugin log lines of the job, in its results.
pub const TASK_LOG: &str = "task_output.log";
