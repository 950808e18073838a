//! Loading `libtask.so` plugins, checking their interface, and the registry of jobs → runners.
//!
//! Each plugin lives at `<plugin_dir>/<name>/libtask.so`. Libraries are never unloaded. Every
//! way a load can fail becomes one line naming the file; abi_stable's long layout report is kept
//! at debug level.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use abi_stable::library::{lib_header_from_path, LibraryError, RootModuleError};
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RStr};
use turbo_hipster_sdk::abi::{HostRef, Host_TO, RunnerBox, TaskModRef, JSON_SCHEMA, SDK_VERSION};
use turbo_hipster_sdk::{HostSettings, JobConfig, Outcome};

use crate::config::{Config, JobSpec};
use crate::host_context::InitHost;

/// The file name every plugin ships as.
pub const LIBRARY_FILE: &str = "libtask.so";

/// Why a plugin could not be loaded or set up. Each renders as one line naming the file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginLoadError {
    /// No `libtask.so` in any plugin dir.
    #[error("plugin \"{name}\": no {LIBRARY_FILE} found (looked for {})", list(.looked))]
    NotFound {
        /// The plugin's name.
        name: String,
        /// Every path tried.
        looked: Vec<PathBuf>,
    },
    /// dlopen failed.
    #[error("{}: cannot be loaded as a shared library: {reason}", .path.display())]
    NotALibrary {
        /// The `libtask.so` tried.
        path: PathBuf,
        /// The loader's reason.
        reason: String,
    },
    /// A shared library without our root module.
    #[error("{}: is not a turbo-hipster plugin (it exports no plugin root module)", .path.display())]
    NotAPlugin {
        /// The `libtask.so` tried.
        path: PathBuf,
    },
    /// Built against another SDK series.
    #[error(
        "{}: built against turbo-hipster-sdk {found}, this daemon speaks {expected}: rebuild the plugin against turbo-hipster-sdk {series}",
        .path.display()
    )]
    VersionMismatch {
        /// The `libtask.so` tried.
        path: PathBuf,
        /// The plugin's SDK version.
        found: String,
        /// This daemon's SDK version.
        expected: String,
        /// `X.Y` to rebuild against.
        series: String,
    },
    /// Same SDK series, different type layout.
    #[error(
        "{}: its plugin interface does not match this daemon's ({what}): rebuild the plugin against turbo-hipster-sdk {series}",
        .path.display()
    )]
    LayoutMismatch {
        /// The `libtask.so` tried.
        path: PathBuf,
        /// What mismatched, in short.
        what: String,
        /// `X.Y` to rebuild against.
        series: String,
    },
    /// The plugin panicked or failed while initialising.
    #[error("{}: {what} while initialising: {reason}", .path.display())]
    InitFailed {
        /// The `libtask.so` tried.
        path: PathBuf,
        /// "panicked" or "failed".
        what: &'static str,
        /// The panic's or the plugin's message.
        reason: String,
    },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `X.Y` of our SDK.
pub fn sdk_series() -> String {
    let mut parts = SDK_VERSION.split('.');
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => format!("{a}.{b}"),
        _ => SDK_VERSION.to_string(),
    }
}

/// Static facts a plugin reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The plugin's name as it reports it (`info`).
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// The SDK it was built against.
    pub sdk_version: String,
    /// The function it serves by default.
    pub default_job: String,
    /// What it does.
    pub description: String,
}

/// A loaded plugin library.
pub struct LoadedPlugin {
    /// The directory name it was found under.
    pub name: String,
    /// The library file.
    pub path: PathBuf,
    /// What it reported.
    pub info: PluginInfo,
    module: TaskModRef,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("info", &self.info)
            .finish()
    }
}

/// Finds `<dir>/<name>/libtask.so` in the first dir that has it.
pub fn find_plugin(dirs: &[PathBuf], name: &str) -> Result<PathBuf, PluginLoadError> {
    let looked: Vec<PathBuf> = dirs
        .iter()
        .map(|d| d.join(name).join(LIBRARY_FILE))
        .collect();
    looked
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or_else(|| PluginLoadError::NotFound {
            name: name.to_string(),
            looked,
        })
}

/// Loads the plugin library at `path` and checks its interface.
pub fn load_library(name: &str, path: &Path) -> Result<LoadedPlugin, PluginLoadError> {
    let started = std::time::Instant::now();
    let header = lib_header_from_path(path).map_err(|e| map_error(path, e))?;
    let module = header
        .init_root_module::<TaskModRef>()
        .map_err(|e| map_error(path, e))?;
    let info = match (module.info())() {
        RResult::ROk(i) => PluginInfo {
            name: i.name.into_string(),
            version: i.version.into_string(),
            sdk_version: i.sdk_version.into_string(),
            default_job: i.default_job.into_string(),
            description: i.description.into_string(),
        },
        RResult::RErr(e) => {
            return Err(PluginLoadError::InitFailed {
                path: path.to_path_buf(),
                what: if e.message.contains("panicked") {
                    "panicked"
                } else {
                    "failed"
                },
                reason: e.message.into_string(),
            })
        }
    };
    if info.name != name {
        tracing::warn!(
            plugin = name,
            path = %path.display(),
            "the library calls itself \"{}\"; using the directory name \"{name}\"",
            info.name
        );
    }
    tracing::debug!(plugin = name, path = %path.display(), elapsed_us = started.elapsed().as_micros() as u64, "plugin loaded");
    Ok(LoadedPlugin {
        name: name.to_string(),
        path: path.to_path_buf(),
        info,
        module,
    })
}

fn map_error(path: &Path, e: LibraryError) -> PluginLoadError {
    let path = path.to_path_buf();
    match e {
        LibraryError::OpenError { err, .. } => PluginLoadError::NotALibrary {
            path,
            reason: err.to_string(),
        },
        LibraryError::GetSymbolError { .. } => PluginLoadError::NotAPlugin { path },
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => PluginLoadError::VersionMismatch {
            path,
            found: actual_version.to_string(),
            expected: expected_version.to_string(),
            series: sdk_series(),
        },
        LibraryError::ParseVersionError(err) => PluginLoadError::VersionMismatch {
            path,
            found: format!("an unreadable version ({err})"),
            expected: SDK_VERSION.to_string(),
            series: sdk_series(),
        },
        LibraryError::AbiInstability(err) => {
            let full = err.to_string();
            tracing::debug!(path = %path.display(), "full interface mismatch report:\n{full}");
            PluginLoadError::LayoutMismatch {
                path,
                what: summarise_layout_error(&full),
                series: sdk_series(),
            }
        }
        LibraryError::InvalidAbiHeader(h) => PluginLoadError::LayoutMismatch {
            path,
            what: format!("built with an incompatible abi_stable (header {h:?})"),
            series: sdk_series(),
        },
        LibraryError::InvalidCAbi { expected, found } => PluginLoadError::LayoutMismatch {
            path,
            what: format!("C ABI differs: expected {expected}, found {found}"),
            series: sdk_series(),
        },
        LibraryError::RootModule { err, .. } => match err {
            RootModuleError::Unwound => PluginLoadError::InitFailed {
                path,
                what: "panicked",
                reason: "its root module loader panicked".into(),
            },
            RootModuleError::Returned(e) => PluginLoadError::InitFailed {
                path,
                what: "failed",
                reason: e.to_string(),
            },
        },
        LibraryError::Many(errors) => match errors.into_iter().next() {
            Some(first) => map_error(&path, first),
            None => PluginLoadError::LayoutMismatch {
                path,
                what: "unknown".into(),
                series: sdk_series(),
            },
        },
        #[allow(unreachable_patterns)]
        other => PluginLoadError::LayoutMismatch {
            path,
            what: other
                .to_string()
                .lines()
                .next()
                .unwrap_or("unknown")
                .to_string(),
            series: sdk_series(),
        },
    }
}

/// Picks the informative part of abi_stable's multi-thousand-line layout report: the errors
/// found in the innermost type, e.g. `AbiPluginInfo: too many fields (expected 5, found 6)`.
fn summarise_layout_error(full: &str) -> String {
    let lines: Vec<&str> = full.lines().map(str::trim).collect();
    let mut current_type = String::new();
    let mut found: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line == "Layout of expected type:" {
            if let Some(t) = lines[i + 1..]
                .iter()
                .take(4)
                .find_map(|l| l.strip_prefix("type:"))
            {
                current_type = t.to_string();
            }
        } else if let Some(kind) = line.strip_prefix("Error:") {
            let mut text = kind.trim().to_string();
            let mut expected = None;
            let mut actual = None;
            let mut j = i + 1;
            while j < lines.len() && j <= i + 6 {
                match lines[j] {
                    "Expected:" => expected = lines.get(j + 1).copied(),
                    "Found:" => actual = lines.get(j + 1).copied(),
                    _ => {}
                }
                j += 1;
            }
            if let (Some(e), Some(f)) = (expected, actual) {
                text.push_str(&format!(" (expected {e}, found {f})"));
            }
            found.push((current_type.clone(), text));
        }
        i += 1;
    }
    let Some((innermost, _)) = found.last().cloned() else {
        return "the type layouts differ".to_string();
    };
    let errors: Vec<String> = found
        .into_iter()
        .filter(|(t, _)| *t == innermost)
        .map(|(_, e)| e)
        .collect();
    let mut s = if innermost.is_empty() {
        errors.join("; ")
    } else {
        format!("{innermost}: {}", errors.join("; "))
    };
    s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > 300 {
        s.truncate(s.floor_char_boundary(300));
        s.push('…');
    }
    s
}

/// One job the daemon serves, ready to run.
pub struct JobRunner {
    /// The Gearman function.
    pub function: String,
    /// The plugin running it.
    pub plugin: Arc<LoadedPlugin>,
    /// The job's configuration as handed to the plugin.
    pub config: JobConfig,
    /// The plugin's runner.
    pub runner: RunnerBox,
}

/// Every configured job, its runner, and every problem found while setting them up.
pub struct Registry {
    /// Loaded plugins (or why they failed), by name.
    pub plugins: BTreeMap<String, Result<Arc<LoadedPlugin>, PluginLoadError>>,
    /// Ready jobs by function.
    pub jobs: BTreeMap<String, Arc<JobRunner>>,
    /// Jobs that could not be set up: (source, message).
    pub job_errors: Vec<(String, String)>,
}

impl Registry {
    /// Whether every plugin loaded and every job got its runner.
    pub fn is_complete(&self) -> bool {
        self.job_errors.is_empty() && self.plugins.values().all(Result::is_ok)
    }

    /// The functions served, sorted.
    pub fn functions(&self) -> Vec<String> {
        self.jobs.keys().cloned().collect()
    }

    /// Finds a job by function, accepting the name without `build:`.
    pub fn find(&self, job: &str) -> Option<&Arc<JobRunner>> {
        self.jobs
            .get(job)
            .or_else(|| self.jobs.get(&format!("build:{job}")))
    }
}

/// The host-wide settings handed to plugins.
pub fn host_settings(config: &Config) -> HostSettings {
    HostSettings {
        worker_name: config.worker_name.clone(),
        jobs_working_dir: config.jobs_working_dir.clone(),
        git_working_dir: config.git_working_dir.clone(),
        pip_download_cache: config.pip_download_cache.clone(),
        git_origin: config.git_origin.clone(),
        check_only: false,
        clean_leftovers: false,
        prepare_datasets: None,
        history_database: Some(config.history_database.to_setting()),
        import_logs: None,
    }
}

/// [`build_registry`] for `import-logs`: the first job of each plugin imports the logs while
/// it loads ([`HostSettings::import_logs`]; the other jobs of the plugin would find them
/// imported already); a file it could not read is one of the registry's job errors.
pub fn import_registry(config: &Config, import: turbo_hipster_sdk::ImportLogs) -> Registry {
    let plain = host_settings(config);
    let importing = HostSettings {
        import_logs: Some(import),
        ..plain.clone()
    };
    let mut asked = std::collections::BTreeSet::new();
    build_registry_each(config, |spec| {
        if asked.insert(spec.plugin.clone()) {
            importing.clone()
        } else {
            plain.clone()
        }
    })
}

/// [`build_registry`] for `prepare-datasets`: plugins prepare their data while they load
/// ([`HostSettings::prepare_datasets`]); a failure is one of the registry's job errors.
pub fn prepare_registry(config: &Config, prepare: turbo_hipster_sdk::PrepareDatasets) -> Registry {
    let settings = HostSettings {
        prepare_datasets: Some(prepare),
        ..host_settings(config)
    };
    build_registry_with(config, &settings)
}

/// Loads every plugin the config names and creates a runner for every job.
pub fn build_registry(config: &Config) -> Registry {
    build_registry_with(config, &host_settings(config))
}

/// [`build_registry`] for `check-config`: plugins also report, as errors, what their jobs
/// would refuse later ([`HostSettings::check_only`]).
pub fn check_registry(config: &Config) -> Registry {
    let settings = HostSettings {
        check_only: true,
        ..host_settings(config)
    };
    build_registry_with(config, &settings)
}

/// [`build_registry`] for a process about to serve jobs (the daemon, `run-job`): first removes
/// the work dirs killed runs left ([`crate::leftovers`]), and lets each plugin's runner remove
/// its own leftovers (`clean_leftovers`).
pub fn build_serving_registry(config: &Config) -> Registry {
    crate::leftovers::remove_stale_work_dirs(&config.jobs_working_dir);
    let settings = HostSettings {
        clean_leftovers: true,
        ..host_settings(config)
    };
    build_registry_with(config, &settings)
}

fn build_registry_with(config: &Config, settings: &HostSettings) -> Registry {
    build_registry_each(config, |_| settings.clone())
}

/// Loads every plugin the config names and creates a runner for every job, with the host
/// settings `settings_of` gives for it.
fn build_registry_each(
    config: &Config,
    mut settings_of: impl FnMut(&JobSpec) -> HostSettings,
) -> Registry {
    let mut plugins: BTreeMap<String, Result<Arc<LoadedPlugin>, PluginLoadError>> = BTreeMap::new();
    let mut jobs = BTreeMap::new();
    let mut job_errors = Vec::new();
    for spec in &config.jobs {
        let plugin = plugins
            .entry(spec.plugin.clone())
            .or_insert_with(|| {
                find_plugin(&config.plugin_dirs, &spec.plugin)
                    .and_then(|path| load_library(&spec.plugin, &path))
                    .map(Arc::new)
            })
            .clone();
        let plugin = match plugin {
            Ok(p) => p,
            Err(e) => {
                job_errors.push((spec.source.clone(), format!("plugin not available: {e}")));
                continue;
            }
        };
        match create_runner(&plugin, spec, &settings_of(spec)) {
            Ok(runner) => {
                if jobs.contains_key(&runner.function) {
                    job_errors.push((
                        spec.source.clone(),
                        format!("the function \"{}\" is defined twice", runner.function),
                    ));
                } else {
                    jobs.insert(runner.function.clone(), Arc::new(runner));
                }
            }
            Err(message) => job_errors.push((spec.source.clone(), message)),
        }
    }
    Registry {
        plugins,
        jobs,
        job_errors,
    }
}

/// Asks the plugin for a runner for one job (this is also its configuration check).
pub fn create_runner(
    plugin: &Arc<LoadedPlugin>,
    spec: &JobSpec,
    settings: &HostSettings,
) -> Result<JobRunner, String> {
    let function = match &spec.function {
        Some(f) => f.clone(),
        None => plugin.info.default_job.clone(),
    };
    crate::config::check_function_name(&function)
        .map_err(|e| format!("plugin {}: default job: {e}", plugin.name))?;
    let config = JobConfig {
        schema: JSON_SCHEMA,
        plugin: plugin.name.clone(),
        function: function.clone(),
        config: spec.config.clone(),
        source: spec.source.clone(),
        host: settings.clone(),
    };
    new_runner(plugin, config)
}

/// Asks the plugin for a runner for the job `config` describes (the daemon at start; a job's
/// child process, [`crate::isolation`], once per job).
pub fn new_runner(plugin: &Arc<LoadedPlugin>, config: JobConfig) -> Result<JobRunner, String> {
    let function = config.function.clone();
    let json =
        serde_json::to_string(&config).map_err(|e| format!("cannot encode the job config: {e}"))?;
    let host = InitHost::new(&plugin.name);
    let host_ref = Host_TO::from_ptr(&host, TD_Opaque);
    match (plugin.module.new_runner())(RStr::from_str(&json), host_ref) {
        RResult::ROk(runner) => Ok(JobRunner {
            function,
            plugin: plugin.clone(),
            config,
            runner,
        }),
        RResult::RErr(e) => Err(format!(
            "plugin {} rejected the job \"{function}\":\n{}",
            plugin.name,
            e.message
                .lines()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )),
    }
}

/// Runs the plugin's runner with `host`; its outcome, or why there is none.
pub fn run_plugin(runner: &JobRunner, host: HostRef<'_>) -> Result<Outcome, String> {
    let plugin_name = &runner.plugin.name;
    match runner.runner.run(host) {
        RResult::ROk(json) => serde_json::from_str::<Outcome>(json.as_str())
            .map_err(|e| format!("plugin {plugin_name} returned an unreadable outcome: {e}")),
        RResult::RErr(e) => Err(format!("plugin {plugin_name}: {}", e.message)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_lists_where_it_looked() {
        let e = find_plugin(&[PathBuf::from("/a"), PathBuf::from("/b")], "x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "plugin \"x\": no libtask.so found (looked for /a/x/libtask.so, /b/x/libtask.so)"
        );
    }

    #[test]
    fn garbage_file_is_not_a_library() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("libtask.so");
        std::fs::write(&p, b"this is not ELF").unwrap();
        let e = load_library("x", &p).unwrap_err();
        assert!(matches!(e, PluginLoadError::NotALibrary { .. }), "{e}");
        assert!(e
            .to_string()
            .starts_with(&format!("{}: cannot be loaded", p.display())));
    }

    #[test]
    fn layout_summary_is_one_short_line() {
        let full = "Layout of expected type:\n --- Type Layout ---\n type:TaskMod\n\
            Error:incompatible type size\nExpected:\n 168\nFound:\n 176\n\
            Layout of expected type:\n --- Type Layout ---\n type:AbiPluginInfo\n\
            Error:incompatible type size\nExpected:\n    160\nFound:\n    168\n\n\
            Error:too many fields\nExpected:\n    5\nFound:\n    6\n";
        let s = summarise_layout_error(full);
        assert_eq!(
            s,
            "AbiPluginInfo: incompatible type size (expected 160, found 168); too many fields (expected 5, found 6)"
        );
    }
}
