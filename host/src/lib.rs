//! turbo-hipster: a Gearman worker for Zuul that loads its job runners as plugins.
//!
//! The binary (`main.rs`) is a thin CLI over these modules; read them top to bottom:
//! [`config`] → [`plugins`] → [`jobs`] (with [`host_context`] and [`zuul`]) → [`gearman`] →
//! [`daemon`].
#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod enqueue;
pub mod gearman;
pub mod host_context;
pub mod jobs;
pub mod logging;
pub mod plugins;
pub mod service;
pub mod zuul;

/// Now, as `YYYY-MM-DD HH:MM:SS,mmm` (local time), the original's log timestamp.
pub fn timestamp_now() -> String {
    chrono::Local::now()
        .format("%Y-%m-%d %H:%M:%S,%3f")
        .to_string()
}
