//! turbo-hipster: a Gearman worker for Zuul that loads its job runners as plugins.
//!
//! The binary (`main.rs`) is a thin CLI over these modules; read them top to bottom:
//! [`config`] → [`plugins`] → [`jobs`] (with [`host_context`] and [`zuul`]) → [`pipeline`]
//! (the service's jobs: a job runs on one of its [`job_threads`], in a child process,
//! [`isolation`], or in the daemon, guarded by the [`journal`], and is recorded in the
//! [`history`]) → [`gearman`] → [`service`] (its [`metrics`]) → [`daemon`].
#![forbid(unsafe_code)]

pub mod config;
pub mod config_check;
pub mod daemon;
pub mod enqueue;
pub mod gearman;
pub mod history;
pub mod host_context;
pub mod isolation;
pub mod job_dir;
pub mod job_threads;
pub mod jobs;
pub mod journal;
pub mod leftovers;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod plugins;
pub mod publish;
pub mod service;
pub mod zuul;

/// Now, as `YYYY-MM-DD HH:MM:SS,mmm` (local time), the original's log timestamp.
pub fn timestamp_now() -> String {
    use chrono::{Datelike, Timelike};
    // Field by field: several times cheaper than parsing a strftime pattern on every call.
    let t = chrono::Local::now();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02},{:03}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 1_000_000 % 1000
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn timestamp_has_the_originals_format() {
        let before = chrono::Local::now().naive_local();
        let s = super::timestamp_now();
        assert_eq!(s.len(), "2026-11-25 18:22:54,544".len(), "{s}");
        let parsed = chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S,%3f").unwrap();
        assert!((parsed - before).num_milliseconds().abs() < 5_000, "{s}");
    }
}
