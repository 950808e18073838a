//! The binary interface between the host and a plugin: tiny, frozen, JSON inside.
#![allow(non_local_definitions)] // the sabi_trait expansion of abi_stable 0.11
//!
//! Only `abi_stable` R-types cross the boundary. Everything that may grow (the job, the outcome,
//! the plugin's configuration) travels as versioned JSON, so new fields never change the layout.
//! Plugin authors do not use this module directly: [`crate::export_plugin!`] builds the root
//! module from a [`crate::Plugin`] implementation.

use abi_stable::{
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RStr, RString},
    StableAbi,
};

/// The schema version of the JSON documents exchanged through this interface.
pub const JSON_SCHEMA: u32 = 1;

/// An error crossing the boundary: one human-readable message (several lines for several
/// problems).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct AbiError {
    /// What went wrong, for the operator.
    pub message: RString,
}

impl AbiError {
    /// Makes an error from any message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: RString::from(message.into()),
        }
    }
}

/// Static facts about a plugin, shown by `turbo-hipster plugins`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiPluginInfo {
    /// The plugin's name, as written in the config's `plugins` list.
    pub name: RString,
    /// The plugin's own version.
    pub version: RString,
    /// The version of `turbo-hipster-sdk` the plugin was built against.
    pub sdk_version: RString,
    /// The Gearman function it serves when named bare in the `plugins` list.
    pub default_job: RString,
    /// One line saying what it does.
    pub description: RString,
    #[cfg(th_sdk_incompatible_abi)]
    /// Only present in the deliberately incompatible build the test suite makes.
    pub incompatible_marker: u64,
}

/// The host side of one job (or of a plugin's initialisation), implemented by the daemon.
///
/// Every method is cheap and may be called from any thread the plugin starts.
#[sabi_trait]
pub trait Host: Send + Sync {
    /// The job as JSON (see [`crate::Job`]); `{}` while a runner is being created.
    fn job_json(&self) -> RString;

    /// Writes one log line into the host's tracing output, tagged with the plugin's name.
    /// `level`: 1 error, 2 warn, 3 info, 4 debug, 5 trace.
    fn log(&self, level: u8, target: RStr<'_>, message: RStr<'_>);

    /// Reports progress to Gearman (WORK_STATUS numerator/denominator).
    fn progress(&self, numerator: u64, denominator: u64);

    /// Sends a JSON object to Zuul as extra WORK_DATA.
    fn send_work_data(&self, json: RStr<'_>);

    /// Whether the job was cancelled (stop request, shutdown).
    fn is_cancelled(&self) -> bool;

    /// Blocks until the job is cancelled or `timeout_ms` passed; returns whether it was
    /// cancelled. Lets a plugin watch for cancellation without polling.
    fn wait_cancelled(&self, timeout_ms: u64) -> bool;

    /// The job's private working directory (created by the host, removed by policy).
    fn working_dir(&self) -> RString;

    /// The directory whose files are published as the job's logs.
    #[sabi(last_prefix_field)]
    fn results_dir(&self) -> RString;
}

/// A borrowed host context, as passed to a plugin.
pub type HostRef<'a> = Host_TO<'a, abi_stable::sabi_types::RRef<'a, ()>>;

/// A runner created for one configured job; runs any number of its jobs, possibly at once.
#[sabi_trait]
pub trait Runner: Send + Sync {
    /// Runs one job. Returns the outcome as JSON (see [`crate::Outcome`]).
    #[sabi(last_prefix_field)]
    fn run(&self, host: HostRef<'_>) -> RResult<RString, AbiError>;
}

/// An owned runner trait object.
pub type RunnerBox = Runner_TO<'static, RBox<()>>;

/// The root module every `libtask.so` exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = TaskModRef)))]
#[sabi(missing_field(panic))]
pub struct TaskMod {
    /// Static facts about the plugin.
    pub info: extern "C" fn() -> RResult<AbiPluginInfo, AbiError>,

    /// Validates a job's configuration (JSON, see [`crate::JobConfig`]) and creates its runner.
    #[sabi(last_prefix_field)]
    pub new_runner: extern "C" fn(RStr<'_>, HostRef<'_>) -> RResult<RunnerBox, AbiError>,
}

impl RootModule for TaskModRef {
    abi_stable::declare_root_module_statics! {TaskModRef}

    const BASE_NAME: &'static str = "task";
    const NAME: &'static str = "turbo-hipster-sdk";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The SDK version this copy of the interface was built from (`CARGO_PKG_VERSION`).
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");
