//! # turbo-hipster-sdk
//!
//! Everything a turbo-hipster plugin needs: the stable binary interface ([`abi`]), the types of a
//! job and its outcome, the [`Plugin`] trait, the [`export_plugin!`] macro that turns an
//! implementation into a loadable `libtask.so`, helpers for what most plugins do (run a
//! process with timestamped output, prepare a git checkout: [`support`]), and the checker the
//! daemon's config and the plugins' job configs are read with ([`config`]: every problem at
//! once, each naming its key, worded the same everywhere).
//!
//! A plugin is a `cdylib`. The daemon loads `<plugin_dir>/<name>/libtask.so`, asks it for a
//! runner per configured job, and calls [`Plugin::run`] on a blocking thread of its own for every
//! Gearman job of that function. A panic inside the plugin never reaches the daemon: the
//! export macro catches it and the job fails with the panic message.
//!
//! ## A complete plugin
//!
//! `Cargo.toml`:
//! ```toml
//! [package]
//! name = "hello"
//! version = "0.1.0"
//! edition = "2021"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! turbo-hipster-sdk = "0.1"
//! abi_stable = "0.11"   # the export macro refers to it by name
//! ```
//!
//! `src/lib.rs`:
//! ```
//! use turbo_hipster_sdk::config::{present, Checker};
//! use turbo_hipster_sdk::{export_plugin, Context, JobConfig, Outcome, Plugin, PluginError};
//!
//! /// Greets whoever the job's `WHO` parameter names.
//! pub struct Hello {
//!     greeting: String,
//! }
//!
//! impl Plugin for Hello {
//!     const NAME: &'static str = "hello";
//!     const VERSION: &'static str = "0.1.0";
//!     const DEFAULT_JOB: &'static str = "build:hello";
//!     const DESCRIPTION: &'static str = "says hello";
//!
//!     fn new(config: &JobConfig) -> Result<Self, PluginError> {
//!         // Every problem is collected; `finish_plugin` refuses the job config with all of them.
//!         let mut c = Checker::bare();
//!         let greeting = present(&config.config, "greeting")
//!             .and_then(|v| c.nonempty("greeting", v))
//!             .unwrap_or_else(|| "Hello".to_string());
//!         c.finish_plugin(Hello { greeting })
//!     }
//!
//!     fn run(&self, ctx: &Context<'_>) -> Result<Outcome, PluginError> {
//!         let who = ctx.job().parameters.get("WHO").map(String::as_str).unwrap_or("world");
//!         ctx.progress(1, 2);
//!         tracing::info!("greeting {who}"); // reaches the daemon's log, tagged "hello"
//!         std::fs::write(ctx.results_dir().join("hello.txt"), format!("{} {who}\n", self.greeting))?;
//!         ctx.progress(2, 2);
//!         if ctx.is_cancelled() {
//!             return Ok(Outcome::aborted());
//!         }
//!         Ok(Outcome::success())
//!     }
//! }
//!
//! export_plugin!(Hello);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release`, copy `target/release/libhello.so` to
//! `/usr/lib/turbo-hipster/plugins/hello/libtask.so`, add `{"name": "hello", "function":
//! "build:hello"}` to the config's `plugins` list and restart the daemon.
//!
//! ## Testing a plugin
//!
//! [`testing::TestJob`] runs a job through the plugin's exported interface the way the daemon
//! does, without the daemon or Gearman: give it the job's configuration and parameters, and
//! read the outcome, the log lines, the WORK_DATA and the progress it sent from the
//! [`testing::Report`]; cancel it with a [`testing::Canceller`].
//!
//! ```
//! # use turbo_hipster_sdk::{Context, JobConfig, Outcome, Plugin, PluginError};
//! # pub struct Hello { greeting: String }
//! # impl Plugin for Hello {
//! #     const NAME: &'static str = "hello";
//! #     const VERSION: &'static str = "0.1.0";
//! #     const DEFAULT_JOB: &'static str = "build:hello";
//! #     const DESCRIPTION: &'static str = "says hello";
//! #     fn new(config: &JobConfig) -> Result<Self, PluginError> {
//! #         let greeting = config.config.get("greeting").and_then(|v| v.as_str()).unwrap_or("Hello");
//! #         Ok(Hello { greeting: greeting.to_string() })
//! #     }
//! #     fn run(&self, ctx: &Context<'_>) -> Result<Outcome, PluginError> {
//! #         let who = ctx.job().param("WHO").unwrap_or("world");
//! #         std::fs::write(ctx.results_dir().join("hello.txt"), format!("{} {who}\n", self.greeting))?;
//! #         Ok(Outcome::success())
//! #     }
//! # }
//! // `Hello` as above.
//! use turbo_hipster_sdk::testing::TestJob;
//!
//! let job = TestJob::new("build:hello")
//!     .config("greeting", serde_json::json!("Hi"))
//!     .param("WHO", "Zuul");
//! let report = job.run::<Hello>().expect("a valid configuration");
//! assert_eq!(report.result(), "SUCCESS");
//! let greeting = std::fs::read_to_string(job.results_dir().join("hello.txt")).unwrap();
//! assert_eq!(greeting, "Hi Zuul\n");
//! ```
//!
//! ## Compatibility
//!
//! A plugin must be built against the same `0.y` series of this crate as the daemon. The daemon
//! checks the version and the full type layout of the interface when it loads a plugin and
//! refuses a mismatch with one line naming the file and the version to rebuild against.

#![warn(missing_docs)]

pub mod abi;
pub mod config;
mod context;
mod export;
mod job;
pub mod support;
pub mod testing;
mod tracing_forward;

pub use abi_stable;
pub use context::Context;
pub use job::{HostSettings, ImportLogs, Job, JobConfig, Outcome, PrepareDatasets};

/// The version of this SDK, as plugins report it.
pub const SDK_VERSION: &str = abi::SDK_VERSION;

/// The job result strings Zuul understands.
pub mod results {
    /// The job passed.
    pub const SUCCESS: &str = "SUCCESS";
    /// The job was stopped (Zuul stop request, daemon shutdown).
    pub const ABORTED: &str = "ABORTED";
    /// The generic failure.
    pub const FAILURE: &str = "FAILURE";

    /// What failed when a job's results (logs, its record) could not be written, e.g. on a
    /// full disk: the worker's fault, never the change's, and never `SUCCESS`. Built here only;
    /// the job's result is then [`infrastructure`] of it (Zuul gets no verdict and retries).
    ///
    /// ```
    /// use turbo_hipster_sdk::results::{cannot_write_results, infrastructure};
    /// let what = cannot_write_results("disk full");
    /// assert_eq!(what, "cannot write the job's results: disk full");
    /// assert_eq!(infrastructure(&what), "ERROR - infrastructure: cannot write the job's results: disk full");
    /// ```
    pub fn cannot_write_results(error: impl std::fmt::Display) -> String {
        format!("cannot write the job's results: {error}")
    }

    /// How the result of a build that failed for reasons outside the change starts (see
    /// [`crate::Outcome::infrastructure`]).
    pub const INFRASTRUCTURE_PREFIX: &str = "ERROR - infrastructure: ";

    /// `ERROR - infrastructure: <what>`.
    pub fn infrastructure(what: &str) -> String {
        format!("{INFRASTRUCTURE_PREFIX}{what}")
    }

    /// What failed, when `result` is an infrastructure failure's (its first line).
    ///
    /// ```
    /// use turbo_hipster_sdk::results::infrastructure_failure;
    /// assert_eq!(infrastructure_failure("ERROR - infrastructure: disk full\nmore"), Some("disk full"));
    /// assert_eq!(infrastructure_failure("FAILURE - x"), None);
    /// ```
    pub fn infrastructure_failure(result: &str) -> Option<&str> {
        result
            .strip_prefix(INFRASTRUCTURE_PREFIX)
            .map(|rest| rest.lines().next().unwrap_or(""))
    }
}

/// Why a plugin could not be set up or could not run a job.
///
/// A plugin returns this for problems of its own (bad configuration, a missing tool); a job
/// whose code under test fails is not an error but an [`Outcome`] with a failure result.
///
/// ```
/// use turbo_hipster_sdk::PluginError;
///
/// // Every configuration problem at once, one line each, naming the key.
/// let e = PluginError::Config(vec!["timeout: expected seconds".into(), "script: required".into()]);
/// assert_eq!(e.to_string(), "timeout: expected seconds\nscript: required");
/// let e = PluginError::io("reading the seed", std::io::Error::other("gone"));
/// assert_eq!(e.to_string(), "reading the seed: gone");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The job configuration is invalid; one entry per problem.
    #[error("{}", .0.join("\n"))]
    Config(Vec<String>),
    /// Anything else, as a message.
    #[error("{0}")]
    Message(String),
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What the plugin was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl PluginError {
    /// One configuration problem.
    pub fn config(message: impl Into<String>) -> Self {
        PluginError::Config(vec![message.into()])
    }

    /// A free-form error.
    pub fn msg(message: impl Into<String>) -> Self {
        PluginError::Message(message.into())
    }

    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        PluginError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<std::io::Error> for PluginError {
    fn from(source: std::io::Error) -> Self {
        PluginError::Io {
            context: "I/O error".into(),
            source,
        }
    }
}

/// What a plugin implements. One value is created per configured job (through [`Plugin::new`])
/// and then runs every Gearman job of that function, possibly several at once.
pub trait Plugin: Sized + Send + Sync + 'static {
    /// The plugin's name, as written in the config's `plugins` list and as its directory under
    /// the plugin dir.
    const NAME: &'static str;
    /// The plugin's own version (usually `env!("CARGO_PKG_VERSION")`).
    const VERSION: &'static str;
    /// The Gearman function served when the plugin is named bare in the `plugins` list.
    const DEFAULT_JOB: &'static str;
    /// One line saying what the plugin does.
    const DESCRIPTION: &'static str;

    /// Validates one job's configuration and prepares to run it. Called at start-up and by
    /// `turbo-hipster check-config`; report every problem at once with [`PluginError::Config`].
    ///
    /// # Errors
    /// Any problem with the configuration; the daemon does not serve the job then.
    fn new(config: &JobConfig) -> Result<Self, PluginError>;

    /// Runs one job. Long-running work should watch [`Context::is_cancelled`] (or block on
    /// [`Context::wait_cancelled`]) and stop promptly, cleaning up what it made.
    ///
    /// # Errors
    /// A problem of the plugin's own; the job then fails with the error's message.
    ///
    /// # Panics
    /// A panic is caught at the boundary and fails the job with the panic's message.
    fn run(&self, ctx: &Context<'_>) -> Result<Outcome, PluginError>;
}

#[doc(hidden)]
pub mod __private {
    pub use crate::export::root_module;
}
