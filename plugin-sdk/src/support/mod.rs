//! Helpers for what most plugins do. Nothing here crosses the binary interface.
//!
//! - [`logfile`]: job logs in the original's `YYYY-MM-DD HH:MM:SS,mmm [tag] text` format, and
//!   a parser for them.
//! - [`process`]: run a command in its own process group with timestamped output capture,
//!   cancellation and a timeout.
//! - [`git`]: prepare a checkout of a Zuul change from a cached mirror.
//! - [`owner`]: claim files naming the process that made a thing, so that a later start can
//!   remove what a killed process left.
//! - [`env`](mod@env): which build parameters may reach a process's environment.
//! - [`contain`]: run the change's code as an unprivileged user, with limits, optionally in a
//!   network namespace of its own.
//! - [`procfs`]: a process's state, group, session and start time from `/proc`.
//! - [`text`]: text from outside made safe to print as one line.

pub mod contain;
pub mod env;
pub mod git;
pub mod logfile;
pub mod owner;
pub mod process;
pub mod procfs;
pub mod text;

pub use logfile::LogFile;
pub use process::{CancelFlag, Cancellation, ProcessOutcome, ProcessRunner, Termination};
