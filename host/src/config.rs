//! `config.json`: the raw JSON is checked key by key into a validated [`Config`].
//!
//! The original's keys load unchanged. Every problem is collected with its place (file and key
//! path) and reported at once; unknown top-level keys are warnings. `conf_d` snippets merge in
//! sorted file-name order: `plugins` and `jobs` lists are appended, other keys replace; the file
//! each key was last set in is remembered, so a problem is blamed on the snippet that holds it.
//!
//! The keys are read with the SDK's [`Checker`] (the plugins' job configs are too), so each
//! kind of mistake is worded as everywhere else ([`turbo_hipster_sdk::config::says`]); this
//! module adds what is the daemon's own: the merge, the blame, the entries and the Gearman names.
//! A key set to `null` counts as absent.
//!
//! Every number has a range (`max_concurrent_jobs` 1 to [`MAX_CONCURRENT_JOBS`], …): a value
//! that would pass here and then exhaust the machine (a thread and a grab per job slot) is a
//! config error, not a surprise at start. What the files cannot tell (are the directories
//! writable, is there a server) is [`crate::config_check`]'s.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use turbo_hipster_sdk::config::{
    index, key, present, read_object, says, secrets, Checker, PathNeed, Unknown,
};

/// Where the daemon looks for its config when `-c` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/turbo-hipster/config.json";
/// The environment variable that overrides [`DEFAULT_CONFIG_PATH`].
pub const CONFIG_ENV: &str = "TURBO_HIPSTER_CONFIG";
/// The default plugin directory.
pub const DEFAULT_PLUGIN_DIR: &str = "/usr/lib/turbo-hipster/plugins";
/// The default Gearman port.
pub const DEFAULT_GEARMAN_PORT: u16 = 4730;
/// The most jobs one daemon runs at once (`max_concurrent_jobs`): each holds a thread, a
/// Gearman grab and usually a database.
pub const MAX_CONCURRENT_JOBS: u64 = 1024;
/// The longest `shutdown_grace_seconds` (a day).
pub const MAX_SHUTDOWN_GRACE_SECONDS: u64 = 24 * 3600;
/// The smallest `max_packet_bytes`: room for a Zuul job's parameters.
pub const MIN_PACKET_BYTES: u64 = 1024;
/// The largest `max_packet_bytes` (256 MiB): a packet is held in memory whole.
pub const MAX_PACKET_BYTES: u64 = 256 * 1024 * 1024;
/// The default `max_packet_bytes` (16 MiB).
pub const DEFAULT_PACKET_BYTES: usize = 16 * 1024 * 1024;

const TOP_LEVEL_KEYS: &[&str] = &[
    "zuul_server",
    "debug_log",
    "jobs_working_dir",
    "git_working_dir",
    "pip_download_cache",
    "plugins",
    "jobs",
    "publish_logs",
    "conf_d",
    "plugin_dirs",
    "gearman_servers",
    "worker_name",
    "manager_name",
    "max_concurrent_jobs",
    "shutdown_grace_seconds",
    "max_packet_bytes",
    "keep_work_dirs",
    "job_isolation",
    "history_database",
    "metrics",
];

/// One problem in the configuration, with its place: `<file>: <key path>: <what>`.
pub use turbo_hipster_sdk::config::Issue as ConfigIssue;

/// Every error found in a configuration (never empty).
#[derive(Debug, thiserror::Error)]
#[error("{} error(s) in the configuration:\n{}", .issues.len(), render(.issues))]
pub struct ConfigError {
    /// The problems, in file order.
    pub issues: Vec<ConfigIssue>,
    /// Warnings found along the way.
    pub warnings: Vec<ConfigIssue>,
}

fn render(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(|i| format!("  {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A Gearman server to connect to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerAddr {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl ServerAddr {
    /// Parses `host:port` (port optional, default 4730).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty server address".into());
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
                let port = p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    format!(
                        "'{s}': port {}",
                        says::between(1, u16::MAX, format!("'{p}'"))
                    )
                })?;
                (h.trim_start_matches('[').trim_end_matches(']'), port)
            }
            _ => (s, DEFAULT_GEARMAN_PORT),
        };
        if host.is_empty() || host.starts_with('-') || host.chars().any(char::is_whitespace) {
            return Err(format!("'{s}': not a valid host name"));
        }
        Ok(ServerAddr {
            host: host.to_string(),
            port,
        })
    }
}

/// Where job logs are published.
#[derive(Debug, Clone, PartialEq)]
pub enum PublishLogs {
    /// Logs stay in the job's directory under `jobs_working_dir`.
    None,
    /// Copied to `path/<LOG_PATH>`, announced as `prepend_url + LOG_PATH`.
    Local {
        /// The directory published logs go to.
        path: PathBuf,
        /// The URL prefix that serves `path`.
        prepend_url: String,
    },
    /// Uploaded to an S3-compatible object store (`publish_logs.type` `"s3"`).
    S3(S3Publish),
}

/// The most upload retries `publish_logs.retries` allows.
pub const MAX_PUBLISH_RETRIES: u64 = 10;
/// The default `publish_logs.retries`.
pub const DEFAULT_PUBLISH_RETRIES: u32 = 3;
/// The region used when `publish_logs.region` is absent.
pub const DEFAULT_S3_REGION: &str = "us-east-1";

/// Where and how logs are uploaded to an S3-compatible store: objects
/// `<prefix>/<LOG_PATH>/<file>` in `bucket`, announced as `prepend_url/<LOG_PATH>/`.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Publish {
    /// The bucket.
    pub bucket: String,
    /// The service's base URL (`http://127.0.0.1:9000`); `None`: AWS itself. Requests are
    /// path-style (`<endpoint>/<bucket>/<key>`); `http://` is allowed only when named here.
    pub endpoint: Option<String>,
    /// The region requests are signed for.
    pub region: String,
    /// The key prefix (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// The URL prefix that serves `<prefix>/` of the bucket (default: the path-style URL).
    pub prepend_url: String,
    /// The access key id (from the config, else `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Secret,
    /// The secret access key (from the config, else `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Secret,
    /// How many times a failed upload is tried again before the job ends in an error.
    pub retries: u32,
}

/// A credential: shown as `***` by `Debug` and `Display`, so a config printed or logged never
/// carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The credential itself, for the one place that signs requests with it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl PublishLogs {
    /// The publishing target's own secrets (storage keys), masked in everything published
    /// like the job config's: none for a local directory.
    pub fn secrets(&self) -> Vec<String> {
        match self {
            PublishLogs::None | PublishLogs::Local { .. } => Vec::new(),
            PublishLogs::S3(s3) => [&s3.access_key_id, &s3.secret_access_key]
                .into_iter()
                .map(|k| k.expose().to_string())
                .filter(|k| !k.is_empty())
                .collect(),
        }
    }
}

/// The Prometheus endpoint (`metrics`): absent, none is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The address and port `GET /metrics` is served on (`metrics.listen`).
    pub listen: std::net::SocketAddr,
}

/// Where a job runs (`job_isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// In a child process of its own: a crash costs only the job.
    #[default]
    Process,
    /// On a thread of the daemon: cheapest, but a crash takes the daemon down.
    InProcess,
}

impl Isolation {
    /// Every isolation, in the order the config's wording lists them.
    pub const NAMES: [Isolation; 2] = [Self::Process, Self::InProcess];

    /// `"process"` or `"in-process"`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::NAMES.into_iter().find(|i| i.as_str() == s)
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::InProcess => "in-process",
        }
    }
}

/// One job the daemon serves: a Gearman function run by a plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// The Gearman function as registered (`build:` included); `None` for a bare plugin entry,
    /// which serves the plugin's default job.
    pub function: Option<String>,
    /// The plugin that runs it.
    pub plugin: String,
    /// The plugin keys of the entry.
    pub config: Map<String, Value>,
    /// Where it was defined (`/etc/turbo-hipster/config.json: plugins[0]`).
    pub source: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The main config file.
    pub source: PathBuf,
    /// Gearman servers: `zuul_server.gearman_host/port` first, then `gearman_servers`.
    pub gearman_servers: Vec<ServerAddr>,
    /// `zuul_server.git_origin` (or its older spellings).
    pub git_origin: Option<String>,
    /// The daemon's log file.
    pub debug_log: Option<PathBuf>,
    /// Per-job working directories.
    pub jobs_working_dir: PathBuf,
    /// Cached git mirrors.
    pub git_working_dir: PathBuf,
    /// Pip cache handed to plugins.
    pub pip_download_cache: Option<PathBuf>,
    /// Where plugins are looked for.
    pub plugin_dirs: Vec<PathBuf>,
    /// The worker name (Gearman client id).
    pub worker_name: String,
    /// The name Zuul sends `stop:` requests to.
    pub manager_name: String,
    /// How many jobs run at once, across all servers.
    pub max_concurrent_jobs: usize,
    /// How long running jobs may finish after SIGTERM before they are aborted.
    pub shutdown_grace_seconds: u64,
    /// The largest Gearman packet body accepted.
    pub max_packet_bytes: usize,
    /// Keep each job's working directory after it ends (results are always kept).
    pub keep_work_dirs: bool,
    /// Where logs go.
    pub publish_logs: PublishLogs,
    /// The per-migration history (`history_database`; default `history.db` in
    /// `jobs_working_dir`, beside `jobs.jsonl`).
    pub history_database: th_history::Location,
    /// How jobs run: in a child process each, or on the daemon's threads (a job's config entry
    /// may override it with its own `job_isolation`).
    pub job_isolation: Isolation,
    /// The Prometheus endpoint, when `metrics` is set.
    pub metrics: Option<MetricsConfig>,
    /// The jobs, in config order.
    pub jobs: Vec<JobSpec>,
    /// Warnings (unknown keys, unsupported settings).
    pub warnings: Vec<ConfigIssue>,
    /// The `conf_d` snippet each top-level key was last set in (absent: the main file).
    pub origins: BTreeMap<String, PathBuf>,
}

/// The config path to use: `-c PATH`, else `$TURBO_HIPSTER_CONFIG`, else the default.
pub fn resolve_config_path(cli: Option<&Path>) -> PathBuf {
    if let Some(p) = cli {
        return p.to_path_buf();
    }
    match std::env::var_os(CONFIG_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_CONFIG_PATH),
    }
}

/// This machine's host name (short form).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Blames each problem on the file that holds it: a key a `conf_d` snippet set on that snippet
/// (`origins`), an entry of `plugins`/`jobs` (`jobs[2]...`) on its own file, recorded while the
/// entries are checked.
fn blame(issues: &mut [ConfigIssue], origins: &BTreeMap<String, PathBuf>) {
    for issue in issues {
        let top = top_key(&issue.path);
        let entry = issue.path.contains('[') && ["plugins", "jobs"].contains(&top);
        if let Some(origin) = origins.get(top).filter(|_| !entry) {
            issue.file = origin.clone();
        }
    }
}

/// The top-level key of a key path: `zuul_server` of `zuul_server.gearman_port`.
pub(crate) fn top_key(path: &str) -> &str {
    path.split(['.', '[']).next().unwrap_or(path)
}

fn absolutise(base: &Path, s: &str) -> PathBuf {
    let p = PathBuf::from(s);
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

/// A path key of `obj` (top level: `key` is its path), relative to the config's directory.
fn path_key(c: &mut Checker, obj: &Map<String, Value>, at: &str, base: &Path) -> Option<PathBuf> {
    let name = at.rsplit('.').next().unwrap_or(at);
    present(obj, name).and_then(|v| c.path(at, v, base, PathNeed::Any))
}

/// A string key of `obj` at the key path `at` (its last segment is the key).
fn string_key(c: &mut Checker, obj: &Map<String, Value>, at: &str) -> Option<String> {
    let name = at.rsplit('.').next().unwrap_or(at);
    present(obj, name)
        .and_then(|v| c.string(at, v))
        .map(str::to_string)
}

/// A JSON file read and parsed, with syntax errors turned into issues (the SDK's
/// [`read_object`]: the datasets are read the same way).
fn read_json(file: &Path, issues: &mut Vec<ConfigIssue>) -> Option<Map<String, Value>> {
    read_object(file).map_err(|issue| issues.push(issue)).ok()
}

/// An entry of `plugins` or `jobs`, remembered with where it came from.
struct Entry {
    file: PathBuf,
    list: &'static str,
    index: usize,
    value: Value,
}

/// Loads and validates the configuration at `path`, with its `conf_d` snippets.
///
/// # Errors
/// Every problem found, each with its file and key path.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let mut issues = Vec::new();
    let Some(mut root) = read_json(path, &mut issues) else {
        return Err(ConfigError {
            issues,
            warnings: Vec::new(),
        });
    };
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));

    let mut entries = Vec::new();
    collect_entries(path, &mut root, &mut entries);
    let origins = merge_conf_d(path, &base, &mut root, &mut entries, &mut issues);
    let mut c = Checker::new(path);
    let mut config = check(&mut c, &root, &base, entries);
    let (errors, mut warnings) = c.into_issues();
    issues.extend(errors);
    blame(&mut issues, &origins);
    blame(&mut warnings, &origins);
    if issues.is_empty() {
        config.warnings = warnings;
        config.origins = origins;
        Ok(config)
    } else {
        Err(ConfigError { issues, warnings })
    }
}

/// Merges the `conf_d` snippets into `root` in sorted order (their entries into `entries`);
/// which file set each top-level key that a snippet set.
fn merge_conf_d(
    path: &Path,
    base: &Path,
    root: &mut Map<String, Value>,
    entries: &mut Vec<Entry>,
    issues: &mut Vec<ConfigIssue>,
) -> BTreeMap<String, PathBuf> {
    let mut origins = BTreeMap::new();
    let issue = |message: String| ConfigIssue {
        file: path.to_path_buf(),
        path: "conf_d".into(),
        message,
    };
    let dir = match root.get("conf_d") {
        Some(Value::String(dir)) if !dir.is_empty() => absolutise(base, dir),
        None | Some(Value::String(_)) | Some(Value::Null) => return origins,
        Some(other) => {
            issues.push(issue(says::expected("a directory path", other)));
            return origins;
        }
    };
    let files = match conf_d_files(&dir) {
        Ok(files) => files,
        // A missing conf.d is normal on a fresh install.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return origins,
        Err(e) => {
            issues.push(issue(format!(
                "cannot read directory {}: {e}",
                dir.display()
            )));
            return origins;
        }
    };
    for f in files {
        if let Some(mut snippet) = read_json(&f, issues) {
            collect_entries(&f, &mut snippet, entries);
            snippet.remove("conf_d");
            for (k, v) in snippet {
                origins.insert(k.clone(), f.clone());
                root.insert(k, v);
            }
        }
    }
    origins
}

/// The `*.json` files of a `conf_d` directory, sorted.
fn conf_d_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    Ok(files)
}

fn collect_entries(file: &Path, obj: &mut Map<String, Value>, out: &mut Vec<Entry>) {
    for list in ["plugins", "jobs"] {
        if let Some(Value::Array(items)) = obj.get(list) {
            for (index, value) in items.iter().enumerate() {
                out.push(Entry {
                    file: file.to_path_buf(),
                    list,
                    index,
                    value: value.clone(),
                });
            }
            obj.remove(list);
        }
    }
}

/// The whole configuration, checked key by key (every problem recorded in `c`, in the order
/// of the keys below).
fn check(c: &mut Checker, root: &Map<String, Value>, base: &Path, entries: Vec<Entry>) -> Config {
    check_top_level(c, root);
    let (gearman_servers, git_origin) = check_servers(c, root);
    let debug_log = path_key(c, root, "debug_log", base);
    let jobs_working_dir = path_key(c, root, "jobs_working_dir", base)
        .unwrap_or_else(|| PathBuf::from("/var/lib/turbo-hipster/jobs"));
    let git_working_dir = path_key(c, root, "git_working_dir", base)
        .unwrap_or_else(|| PathBuf::from("/var/lib/turbo-hipster/git"));
    let pip_download_cache = path_key(c, root, "pip_download_cache", base);
    let plugin_dirs = check_plugin_dirs(c, root, base);
    let (worker_name, manager_name) = check_names(c, root);
    let limits = check_limits(c, root);
    let keep_work_dirs = present(root, "keep_work_dirs")
        .and_then(|v| c.boolean("keep_work_dirs", v))
        .unwrap_or(false);
    let publish_logs = check_publish(c, root, base);
    let history_database = check_history(c, root, base, &jobs_working_dir);
    let metrics = check_metrics(c, root);
    let jobs = check_entries(c, entries);
    let job_isolation = check_isolation(c, root, &jobs);
    Config {
        source: c.file().to_path_buf(),
        gearman_servers,
        git_origin,
        debug_log,
        jobs_working_dir,
        git_working_dir,
        pip_download_cache,
        plugin_dirs,
        worker_name,
        manager_name,
        max_concurrent_jobs: limits.max_concurrent_jobs,
        shutdown_grace_seconds: limits.shutdown_grace_seconds,
        max_packet_bytes: limits.max_packet_bytes,
        keep_work_dirs,
        publish_logs,
        history_database,
        job_isolation,
        metrics,
        jobs,
        warnings: Vec::new(),
        origins: BTreeMap::new(),
    }
}

/// Unknown top-level keys (warnings) and `plugins`/`jobs` that are not lists.
fn check_top_level(c: &mut Checker, root: &Map<String, Value>) {
    c.unknown_keys("", root, TOP_LEVEL_KEYS, Unknown::Warn);
    for list in ["plugins", "jobs"] {
        if let Some(v) = present(root, list) {
            c.list(list, v);
        }
    }
}

/// The Gearman servers (`zuul_server` first, then `gearman_servers`, each once) and the git
/// origin.
fn check_servers(c: &mut Checker, root: &Map<String, Value>) -> (Vec<ServerAddr>, Option<String>) {
    let mut servers = Vec::new();
    let git_origin = present(root, "zuul_server")
        .and_then(|v| c.object("zuul_server", v))
        .and_then(|zs| check_zuul_server(c, zs, &mut servers));
    check_gearman_servers(c, root, &mut servers);
    (servers, git_origin)
}

/// The keys `zuul_server` knows.
const ZUUL_SERVER_KEYS: [&str; 6] = [
    "gearman_host",
    "gearman_port",
    "git_origin",
    "git_url",
    "zuul_site",
    "gerrit_site",
];

/// `zuul_server`: its Gearman server goes into `servers`; the git origin is returned.
fn check_zuul_server(
    c: &mut Checker,
    zs: &Map<String, Value>,
    servers: &mut Vec<ServerAddr>,
) -> Option<String> {
    let host = string_key(c, zs, "zuul_server.gearman_host");
    let port = gearman_port(c, zs);
    if let (Some(host), Some(port)) = (host, port) {
        match ServerAddr::parse(&format!("{host}:{port}")) {
            Ok(addr) => servers.push(addr),
            Err(e) => c.error("zuul_server.gearman_host", e),
        }
    }
    let mut git_origin = None;
    for key in ["git_origin", "git_url", "zuul_site", "gerrit_site"] {
        if let Some(v) = string_key(c, zs, &format!("zuul_server.{key}")) {
            if git_origin.is_none() && !v.is_empty() {
                git_origin = Some(v);
            }
        }
    }
    c.unknown_keys("zuul_server", zs, &ZUUL_SERVER_KEYS, Unknown::Warn);
    git_origin
}

/// `zuul_server.gearman_port`, 4730 when absent.
fn gearman_port(c: &mut Checker, zs: &Map<String, Value>) -> Option<u16> {
    const PATH: &str = "zuul_server.gearman_port";
    match present(zs, "gearman_port") {
        None => Some(DEFAULT_GEARMAN_PORT),
        // The original's example wrote the port as a number; strings are tolerated.
        Some(v @ Value::String(s)) => s.parse::<u16>().ok().filter(|p| *p > 0).or_else(|| {
            c.error(PATH, says::between(1, u16::MAX, says::show(v)));
            None
        }),
        Some(v) => c.port(PATH, v),
    }
}

/// `gearman_servers`: each `"host:port"` not listed yet goes into `servers`.
fn check_gearman_servers(
    c: &mut Checker,
    root: &Map<String, Value>,
    servers: &mut Vec<ServerAddr>,
) {
    let Some(list) = present(root, "gearman_servers").and_then(|v| c.list("gearman_servers", v))
    else {
        return;
    };
    for (i, v) in list.iter().enumerate() {
        let p = index("gearman_servers", i);
        match c.string(&p, v).map(ServerAddr::parse) {
            Some(Ok(a)) if !servers.contains(&a) => servers.push(a),
            Some(Ok(_)) => c.warn(&p, "listed twice, connecting once"),
            Some(Err(e)) => c.error(&p, e),
            None => {}
        }
    }
}

/// `plugin_dirs`: a list of directories (or one), the default when absent.
fn check_plugin_dirs(c: &mut Checker, root: &Map<String, Value>, base: &Path) -> Vec<PathBuf> {
    let list = match present(root, "plugin_dirs") {
        None => return vec![PathBuf::from(DEFAULT_PLUGIN_DIR)],
        Some(Value::String(s)) => return vec![absolutise(base, s)],
        Some(v) => c.list("plugin_dirs", v).unwrap_or_default(),
    };
    let dirs = list
        .iter()
        .enumerate()
        .filter_map(|(i, v)| c.path(&index("plugin_dirs", i), v, base, PathNeed::Any))
        .collect();
    if list.is_empty() && present(root, "plugin_dirs").is_some_and(Value::is_array) {
        c.error("plugin_dirs", says::EMPTY);
    }
    dirs
}

/// `worker_name` (the host name by default) and `manager_name` (derived from it by default):
/// both are Gearman tokens.
fn check_names(c: &mut Checker, root: &Map<String, Value>) -> (String, String) {
    let worker_name = string_key(c, root, "worker_name")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(hostname);
    if !is_gearman_token(&worker_name) {
        c.error(
            "worker_name",
            "must be 1 to 64 printable characters without spaces",
        );
    }
    let manager_name = string_key(c, root, "manager_name")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("turbo-hipster-manager-{worker_name}"));
    if !is_gearman_token(&manager_name) {
        c.error(
            "manager_name",
            "must be 1 to 64 printable characters without spaces",
        );
    }
    (worker_name, manager_name)
}

/// The bounded numbers of the top level.
struct Limits {
    max_concurrent_jobs: usize,
    shutdown_grace_seconds: u64,
    max_packet_bytes: usize,
}

fn check_limits(c: &mut Checker, root: &Map<String, Value>) -> Limits {
    let mut number = |key: &str, range| present(root, key).and_then(|v| c.integer(key, v, range));
    let max_concurrent_jobs = number("max_concurrent_jobs", 1..=MAX_CONCURRENT_JOBS)
        .map(|n| usize::try_from(n).unwrap_or(1))
        .unwrap_or(1);
    let shutdown_grace_seconds =
        number("shutdown_grace_seconds", 0..=MAX_SHUTDOWN_GRACE_SECONDS).unwrap_or(300);
    let max_packet_bytes = number("max_packet_bytes", MIN_PACKET_BYTES..=MAX_PACKET_BYTES)
        .map(|n| usize::try_from(n).unwrap_or(DEFAULT_PACKET_BYTES))
        .unwrap_or(DEFAULT_PACKET_BYTES);
    Limits {
        max_concurrent_jobs,
        shutdown_grace_seconds,
        max_packet_bytes,
    }
}

/// `job_isolation` at the top level and in job entries (where it stays in the entry's keys:
/// plugins ignore it, the daemon reads it per job).
fn check_isolation(c: &mut Checker, root: &Map<String, Value>, jobs: &[JobSpec]) -> Isolation {
    let names = Isolation::NAMES.map(|i| (i.as_str(), i));
    let main_file = c.file().to_path_buf();
    for spec in jobs {
        if let Some(v) = spec.config.get("job_isolation") {
            // `source` is "<file>: <entry>".
            let (file, entry) = spec.source.rsplit_once(": ").unwrap_or(("", &spec.source));
            c.set_file(file);
            c.one_of(&key(entry, "job_isolation"), v, &names);
        }
    }
    c.set_file(main_file);
    present(root, "job_isolation")
        .and_then(|v| c.one_of("job_isolation", v, &names))
        .unwrap_or_default()
}

fn is_gearman_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|ch| ch.is_ascii_graphic())
}

/// `history_database`: a SQLite file (relative to the config's directory) or a `postgres://`
/// URL; default `history.db` in `jobs_working_dir`.
fn check_history(
    c: &mut Checker,
    root: &Map<String, Value>,
    base: &Path,
    jobs_working_dir: &Path,
) -> th_history::Location {
    let default = || th_history::Location::Sqlite(jobs_working_dir.join(th_history::DEFAULT_FILE));
    let Some(value) = string_key(c, root, "history_database") else {
        return default();
    };
    th_history::Location::parse(&value, base).unwrap_or_else(|why| {
        c.error("history_database", &why);
        default()
    })
}

/// `metrics`: `{"listen": "ADDRESS:PORT"}`, an IP address (IPv6 in brackets) and a port from
/// 1 to 65535 (a port of 0 would be a random one nobody can scrape).
fn check_metrics(c: &mut Checker, root: &Map<String, Value>) -> Option<MetricsConfig> {
    let obj = present(root, "metrics").and_then(|v| c.object("metrics", v))?;
    c.unknown_keys("metrics", obj, &["listen"], Unknown::Warn);
    let Some(value) = present(obj, "listen") else {
        c.required(
            "metrics.listen",
            "the address and port to serve /metrics on, e.g. \"127.0.0.1:9730\"",
        );
        return None;
    };
    let text = c.string("metrics.listen", value)?;
    match text.trim().parse::<std::net::SocketAddr>() {
        Ok(listen) if listen.port() != 0 => Some(MetricsConfig { listen }),
        Ok(_) => {
            c.error(
                "metrics.listen",
                format!("port {}", says::between(1, u16::MAX, 0)),
            );
            None
        }
        Err(_) => {
            c.error(
                "metrics.listen",
                format!(
                    "must be an IP address and a port, e.g. \"127.0.0.1:9730\" or \"[::1]:9730\", got {}",
                    says::show(value)
                ),
            );
            None
        }
    }
}

fn check_publish(c: &mut Checker, root: &Map<String, Value>, base: &Path) -> PublishLogs {
    let Some(obj) = present(root, "publish_logs").and_then(|v| c.object("publish_logs", v)) else {
        return PublishLogs::None;
    };
    let Some(type_) = present(obj, "type") else {
        c.required("publish_logs.type", "\"local\" or \"s3\"");
        return PublishLogs::None;
    };
    let refused = match type_.as_str() {
        Some("scp") => Some(
            "\"scp\" publishing is not supported: use \"local\" with a path a web server \
             serves (copy it elsewhere with your own rsync or scp), \"s3\" for object storage, \
             or leave publish_logs out to keep the logs under jobs_working_dir",
        ),
        Some("swift") => Some(
            "\"swift\" publishing is not supported: a Swift cluster with its S3 API (the \
             s3api middleware) takes \"s3\" with its endpoint; else use \"local\" with a \
             path a web server serves, or leave publish_logs out to keep the logs under \
             jobs_working_dir",
        ),
        _ => None,
    };
    if let Some(why) = refused {
        c.error("publish_logs.type", why);
        return PublishLogs::None;
    }
    let types = ["local", "s3"].map(|t| (t, t));
    match c.one_of("publish_logs.type", type_, &types) {
        Some("local") => {
            let path = path_key(c, obj, "publish_logs.path", base);
            let prepend_url = string_key(c, obj, "publish_logs.prepend_url").unwrap_or_default();
            match path {
                Some(path) => PublishLogs::Local { path, prepend_url },
                None => {
                    if present(obj, "path").is_none() {
                        c.required("publish_logs.path", "where published logs go");
                    }
                    PublishLogs::None
                }
            }
        }
        Some("s3") => check_s3(c, obj, &|name| std::env::var(name).ok()),
        Some(_) | None => PublishLogs::None,
    }
}

/// The keys `publish_logs` of type `s3` knows.
const S3_KEYS: [&str; 9] = [
    "type",
    "bucket",
    "endpoint",
    "region",
    "prefix",
    "prepend_url",
    "access_key_id",
    "secret_access_key",
    "retries",
];

/// `publish_logs` of type `s3`; `env` reads the credentials' environment variables when the
/// config has none.
fn check_s3(
    c: &mut Checker,
    obj: &Map<String, Value>,
    env: &dyn Fn(&str) -> Option<String>,
) -> PublishLogs {
    c.unknown_keys("publish_logs", obj, &S3_KEYS, Unknown::Warn);
    let bucket = match present(obj, "bucket") {
        Some(v) => c.string("publish_logs.bucket", v).and_then(|b| {
            let ok = (3..=63).contains(&b.len())
                && b.chars().all(|ch| {
                    ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '.'
                })
                && !b.starts_with(['-', '.'])
                && !b.ends_with(['-', '.']);
            if !ok {
                c.error(
                    "publish_logs.bucket",
                    format!("must be a bucket name (3 to 63 of a-z, 0-9, '.', '-'), got {b:?}"),
                );
            }
            ok.then(|| b.to_string())
        }),
        None => {
            c.required("publish_logs.bucket", "the bucket logs are uploaded to");
            None
        }
    };
    let endpoint = string_key(c, obj, "publish_logs.endpoint")
        .filter(|e| !e.is_empty())
        .and_then(|e| {
            let e = e.trim_end_matches('/').to_string();
            let rest = e
                .strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"));
            match rest {
                Some(host) if !host.is_empty() && !host.contains(['/', ' ', '?', '#', '@']) => {
                    Some(e)
                }
                _ => {
                    c.error(
                        "publish_logs.endpoint",
                        format!("must be http://HOST[:PORT] or https://HOST[:PORT], got {e:?}"),
                    );
                    None
                }
            }
        });
    let region = string_key(c, obj, "publish_logs.region")
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| DEFAULT_S3_REGION.to_string());
    if region
        .chars()
        .any(|ch| !(ch.is_ascii_alphanumeric() || ch == '-'))
    {
        c.error(
            "publish_logs.region",
            format!("must be a region name (a-z, 0-9, '-'), got {region:?}"),
        );
    }
    let prefix = string_key(c, obj, "publish_logs.prefix")
        .map(|p| p.trim_matches('/').to_string())
        .unwrap_or_default();
    if prefix.split('/').any(|seg| seg == ".." || seg == ".") || prefix.contains("//") {
        c.error(
            "publish_logs.prefix",
            format!("must be a plain key prefix (no \".\", \"..\" or empty parts), got {prefix:?}"),
        );
    }
    let prepend_url = string_key(c, obj, "publish_logs.prepend_url").filter(|u| !u.is_empty());
    let access_key_id = secret_key(c, obj, "access_key_id", "AWS_ACCESS_KEY_ID", env);
    let secret_access_key = secret_key(c, obj, "secret_access_key", "AWS_SECRET_ACCESS_KEY", env);
    let retries = present(obj, "retries")
        .and_then(|v| c.integer("publish_logs.retries", v, 0..=MAX_PUBLISH_RETRIES))
        .map(|n| u32::try_from(n).unwrap_or(DEFAULT_PUBLISH_RETRIES))
        .unwrap_or(DEFAULT_PUBLISH_RETRIES);
    let (Some(bucket), Some(access_key_id), Some(secret_access_key)) =
        (bucket, access_key_id, secret_access_key)
    else {
        return PublishLogs::None;
    };
    let prepend_url = prepend_url.unwrap_or_else(|| {
        let base = match &endpoint {
            Some(e) => format!("{e}/{bucket}"),
            None => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        };
        if prefix.is_empty() {
            base
        } else {
            format!("{base}/{prefix}")
        }
    });
    PublishLogs::S3(S3Publish {
        bucket,
        endpoint,
        region,
        prefix,
        prepend_url,
        access_key_id,
        secret_access_key,
        retries,
    })
}

/// A credential of `publish_logs`: the key, else the environment variable `var`. Its value is
/// never quoted in a message.
fn secret_key(
    c: &mut Checker,
    obj: &Map<String, Value>,
    name: &str,
    var: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Secret> {
    let at = format!("publish_logs.{name}");
    let value = match present(obj, name) {
        Some(v) => c.string(&at, v).map(str::to_string),
        None => match env(var).filter(|v| !v.is_empty()) {
            Some(v) => Some(v),
            None => {
                c.required(&at, &format!("or {var} in the daemon's environment"));
                return None;
            }
        },
    }?;
    if value.trim().is_empty() || value.chars().any(char::is_whitespace) {
        c.error(
            &at,
            "must be a key without whitespace (its value is not shown)",
        );
        return None;
    }
    Some(Secret::new(value))
}

/// Plugin names that were renamed; the old name still works.
fn canonical_plugin(name: &str) -> &str {
    match name {
        "real_db_upgrade" => "gate_real_db_upgrade",
        other => other,
    }
}

fn is_plugin_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with(['-', '.'])
        && s.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-' || ch == '.')
}

fn check_entries(c: &mut Checker, entries: Vec<Entry>) -> Vec<JobSpec> {
    let mut jobs = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let main_file = c.file().to_path_buf();
    for e in entries {
        let path = index(e.list, e.index);
        c.set_file(&e.file);
        let Some(spec) = check_entry(c, &e, &path) else {
            continue;
        };
        if let Some(f) = &spec.function {
            if !seen.insert(f.clone()) {
                c.error(&path, format!("the function \"{f}\" is defined twice"));
                continue;
            }
        }
        jobs.push(spec);
    }
    c.set_file(main_file);
    jobs
}

/// One entry of `plugins` or `jobs` (at `path`), `None` when it has an error.
fn check_entry(c: &mut Checker, e: &Entry, path: &str) -> Option<JobSpec> {
    let source = format!("{}: {}", e.file.display(), path);
    let (plugin, function, config) = match (&e.value, e.list) {
        // The original quick start: a bare plugin name serves its default job.
        (Value::String(name), "plugins") => {
            if !is_plugin_name(name) {
                c.error(path, format!("\"{name}\" is not a valid plugin name"));
                return None;
            }
            (name.clone(), None, Map::new())
        }
        (Value::Object(obj), "plugins") => plugins_entry(c, obj, path)?,
        (Value::Object(obj), _) => jobs_entry(c, obj, path)?,
        (other, _) => {
            c.error(path, says::expected("an object (or a plugin name)", other));
            return None;
        }
    };
    secrets::check(c, path, &config);
    let canonical = canonical_plugin(&plugin);
    if plugin != canonical {
        c.warn(
            path,
            format!("plugin \"{plugin}\" is now called \"{canonical}\""),
        );
    }
    Some(JobSpec {
        function,
        plugin: canonical.to_string(),
        config,
        source,
    })
}

/// The plugin, the function and the plugin keys of an entry.
type EntryParts = (String, Option<String>, Map<String, Value>);

/// A `plugins` entry: `name` is the plugin, `function` (or the oldest form, `job` without
/// `build:`) the Gearman function.
fn plugins_entry(c: &mut Checker, obj: &Map<String, Value>, path: &str) -> Option<EntryParts> {
    let name_at = key(path, "name");
    let plugin = match present(obj, "name") {
        None => {
            c.required(&name_at, "the plugin's name");
            None
        }
        Some(v) => c.string(&name_at, v).map(str::to_string),
    };
    let function = string_key(c, obj, &key(path, "function"))
        .or_else(|| string_key(c, obj, &key(path, "job")).map(|j| format!("build:{j}")));
    let mut config = obj.clone();
    for k in ["name", "function", "job"] {
        config.remove(k);
    }
    entry_parts(c, path, (plugin?, function, config), &name_at)
}

/// A `jobs` entry: `name` is the Gearman function, `plugin` (default `shell_script`) runs it.
fn jobs_entry(c: &mut Checker, obj: &Map<String, Value>, path: &str) -> Option<EntryParts> {
    let name_at = key(path, "name");
    let function = match present(obj, "name") {
        None => {
            c.required(&name_at, "the Gearman function, e.g. \"build:my-job\"");
            None
        }
        Some(v) => c.string(&name_at, v).map(str::to_string),
    };
    let plugin_at = key(path, "plugin");
    let plugin = string_key(c, obj, &plugin_at).unwrap_or_else(|| "shell_script".to_string());
    let mut config = obj.clone();
    for k in ["name", "plugin"] {
        config.remove(k);
    }
    entry_parts(c, path, (plugin, function, config), &plugin_at)
}

/// Checks the plugin name (at `plugin_at`) and the function of an entry.
fn entry_parts(
    c: &mut Checker,
    path: &str,
    parts: EntryParts,
    plugin_at: &str,
) -> Option<EntryParts> {
    if !is_plugin_name(&parts.0) {
        let what = format!(
            "\"{}\" is not a valid plugin name (letters, digits, _ - .)",
            parts.0
        );
        c.error(plugin_at, what);
        return None;
    }
    if let Some(f) = &parts.1 {
        if let Err(why) = check_function_name(f) {
            c.error(&key(path, "function"), why);
            return None;
        }
    }
    Some(parts)
}

/// A Gearman function name we can register: printable, no spaces, at most 512 bytes.
pub fn check_function_name(f: &str) -> Result<(), String> {
    if f.is_empty() {
        return Err("the function name is empty".into());
    }
    if f.len() > 512 {
        return Err("the function name is longer than 512 bytes".into());
    }
    if !f.chars().all(|ch| ch.is_ascii_graphic()) {
        return Err(format!(
            "\"{f}\" contains spaces or non-printable characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn original_keys_load_unchanged() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "config.json",
            r#"{
            "zuul_server": {"git_url": "/home/josh/var/lib/zuul/git/", "gearman_host": "localhost", "gearman_port": 4730},
            "debug_log": "/var/log/turbo-hipster/debug.log",
            "jobs_working_dir": "/var/lib/turbo-hipster/jobs",
            "git_working_dir": "/var/lib/turbo-hipster/git",
            "pip_download_cache": "/var/cache/pip",
            "plugins": [
                {"name": "real_db_upgrade", "datasets_dir": "/var/lib/turbo-hipster/datasets_devstack_131007", "function": "build:gate-real-db-upgrade_nova_mysql_devstack_131007"},
                {"name": "gate_real_db_upgrade", "job": "gate-real-db-upgrade_nova_mysql_user_001", "datasets_dir": "/d"},
                "gate_real_db_upgrade"
            ],
            "jobs": [{"name": "build:do_something_shelly", "shell_script": "ls -lah && echo"}],
            "publish_logs": {"type": "local", "path": "/var/www/results/", "prepend_url": "http://localhost/results/"},
            "conf_d": "/etc/turbo-hipster/conf.d"
        }"#,
        );
        let c = load(&p).unwrap();
        assert_eq!(
            c.gearman_servers,
            vec![ServerAddr {
                host: "localhost".into(),
                port: 4730
            }]
        );
        assert_eq!(
            c.git_origin.as_deref(),
            Some("/home/josh/var/lib/zuul/git/")
        );
        assert_eq!(c.jobs.len(), 4);
        assert_eq!(c.jobs[0].plugin, "gate_real_db_upgrade");
        assert_eq!(
            c.jobs[0].function.as_deref(),
            Some("build:gate-real-db-upgrade_nova_mysql_devstack_131007")
        );
        assert_eq!(
            c.jobs[0].config.get("datasets_dir").and_then(Value::as_str),
            Some("/var/lib/turbo-hipster/datasets_devstack_131007")
        );
        assert!(!c.jobs[0].config.contains_key("function"));
        assert_eq!(
            c.jobs[1].function.as_deref(),
            Some("build:gate-real-db-upgrade_nova_mysql_user_001")
        );
        assert_eq!(c.jobs[2].function, None);
        assert_eq!(c.jobs[3].plugin, "shell_script");
        assert_eq!(
            c.jobs[3].function.as_deref(),
            Some("build:do_something_shelly")
        );
        assert_eq!(c.max_concurrent_jobs, 1);
        assert_eq!(c.plugin_dirs, vec![PathBuf::from(DEFAULT_PLUGIN_DIR)]);
        assert_eq!(
            c.manager_name,
            format!("turbo-hipster-manager-{}", hostname())
        );
        assert!(matches!(c.publish_logs, PublishLogs::Local { .. }));
        // The renamed plugin is a warning, not an error.
        assert!(c.warnings.iter().any(|w| w.message.contains("now called")));
    }

    #[test]
    fn every_error_is_reported_with_its_place() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "config.json",
            r#"{
            "zuul_server": {"gearman_host": "localhost", "gearman_port": 99999},
            "max_concurrent_jobs": 0,
            "plugin_dirs": [7],
            "jobs": [{"plugin": "shell_script"}, {"name": "build:a b"}, 5],
            "plugins": [{"name": "x/y", "function": "build:z"}],
            "publish_logs": {"type": "ftp"},
            "colour": "blue"
        }"#,
        );
        let err = load(&p).unwrap_err();
        let text = err.to_string();
        for needle in [
            "zuul_server.gearman_port: must be between 1 and 65535, got 99999",
            "max_concurrent_jobs: must be between 1 and 1024, got 0",
            "plugin_dirs[0]: expected a string, got a number",
            "jobs[0].name: required",
            "jobs[1].function: \"build:a b\" contains spaces",
            "jobs[2]: expected an object",
            "plugins[0].name: \"x/y\" is not a valid plugin name",
            "publish_logs.type: must be one of local, s3, got \"ftp\"",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert_eq!(err.issues.len(), 8, "{text}");
        assert!(err.warnings.iter().any(|w| w.path == "colour"));
        assert!(text.contains(&p.display().to_string()));
    }

    #[test]
    fn scp_and_swift_publishing_and_bad_secret_keys_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "config.json",
            r#"{
            "publish_logs": {"type": "scp", "path": "/x"},
            "jobs": [{"name": "build:a", "shell_script": "true", "token": "t0k3n",
                      "secret_keys": ["token", "tokn"]}]
        }"#,
        );
        let err = load(&p).unwrap_err();
        let text = err.to_string();
        for needle in [
            "publish_logs.type: \"scp\" publishing is not supported: use \"local\"",
            "jobs[0].secret_keys[1]: \"tokn\" names no key of this job's configuration",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert_eq!(err.issues.len(), 2, "{text}");
        // The original's swift: refused too (it used to be accepted and ignored), naming s3.
        let p = write(
            d.path(),
            "swift.json",
            r#"{"publish_logs": {"type": "swift", "container": "logs"}}"#,
        );
        let text = load(&p).unwrap_err().to_string();
        assert!(
            text.contains(
                "publish_logs.type: \"swift\" publishing is not supported: a Swift cluster \
                 with its S3 API (the s3api middleware) takes \"s3\""
            ),
            "{text}"
        );
    }

    #[test]
    fn numbers_are_bounded_both_ways() {
        let d = tempfile::tempdir().unwrap();
        for (key, value, what) in [
            (
                "max_concurrent_jobs",
                "18446744073709551615",
                "must be between 1 and 1024",
            ),
            (
                "max_concurrent_jobs",
                "10000000",
                "must be between 1 and 1024",
            ),
            ("max_concurrent_jobs", "-1", "must be between 1 and 1024"),
            (
                "max_concurrent_jobs",
                "1.5",
                "must be a whole number between 1 and 1024",
            ),
            (
                "max_packet_bytes",
                "1023",
                "must be between 1024 and 268435456",
            ),
            (
                "max_packet_bytes",
                "268435457",
                "must be between 1024 and 268435456",
            ),
            (
                "shutdown_grace_seconds",
                "86401",
                "must be between 0 and 86400",
            ),
        ] {
            let p = write(d.path(), "config.json", &format!("{{\"{key}\": {value}}}"));
            let err = load(&p).unwrap_err();
            assert_eq!(err.issues.len(), 1, "{err}");
            assert_eq!(
                err.issues[0].to_string(),
                format!("{}: {key}: {what}, got {value}", p.display())
            );
        }
        let p = write(
            d.path(),
            "config.json",
            r#"{"max_concurrent_jobs": 1024, "max_packet_bytes": 1024, "shutdown_grace_seconds": 0}"#,
        );
        let c = load(&p).unwrap();
        assert_eq!(
            (
                c.max_concurrent_jobs,
                c.max_packet_bytes,
                c.shutdown_grace_seconds
            ),
            (1024, 1024, 0)
        );
    }

    #[test]
    fn the_metrics_endpoint_is_off_unless_set_and_checked_when_set() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "config.json", "{}");
        assert_eq!(load(&p).unwrap().metrics, None);
        let p = write(d.path(), "config.json", r#"{"metrics": null}"#);
        assert_eq!(load(&p).unwrap().metrics, None);
        let p = write(
            d.path(),
            "config.json",
            r#"{"metrics": {"listen": "[::1]:9730", "path": "/m"}}"#,
        );
        let c = load(&p).unwrap();
        assert_eq!(
            c.metrics.map(|m| m.listen.to_string()).as_deref(),
            Some("[::1]:9730")
        );
        assert!(
            c.warnings
                .iter()
                .any(|w| w.path == "metrics.path" && w.message == says::UNKNOWN_IGNORED),
            "{:?}",
            c.warnings
        );
        let m = p.display();
        for (value, what) in [
            (r#""127.0.0.1:9730""#, "expected an object, got a string"),
            (
                "{}",
                "listen: required: the address and port to serve /metrics on, e.g. \"127.0.0.1:9730\"",
            ),
            (r#"{"listen": 9730}"#, "listen: expected a string, got a number"),
            (
                r#"{"listen": "localhost:9730"}"#,
                "listen: must be an IP address and a port, e.g. \"127.0.0.1:9730\" or \"[::1]:9730\", got \"localhost:9730\"",
            ),
            (
                r#"{"listen": "127.0.0.1"}"#,
                "listen: must be an IP address and a port, e.g. \"127.0.0.1:9730\" or \"[::1]:9730\", got \"127.0.0.1\"",
            ),
            (
                r#"{"listen": "127.0.0.1:0"}"#,
                "listen: port must be between 1 and 65535, got 0",
            ),
            (
                r#"{"listen": "127.0.0.1:65536"}"#,
                "listen: must be an IP address and a port, e.g. \"127.0.0.1:9730\" or \"[::1]:9730\", got \"127.0.0.1:65536\"",
            ),
        ] {
            let p = write(d.path(), "config.json", &format!("{{\"metrics\": {value}}}"));
            let err = load(&p).unwrap_err();
            let text: Vec<String> = err.issues.iter().map(ToString::to_string).collect();
            let sep = if what.starts_with("listen") { "." } else { ": " };
            assert_eq!(text, [format!("{m}: metrics{sep}{what}")], "{value}");
        }
    }

    #[test]
    fn a_key_set_in_a_conf_d_snippet_is_blamed_on_the_snippet() {
        let d = tempfile::tempdir().unwrap();
        let confd = d.path().join("conf.d");
        std::fs::create_dir(&confd).unwrap();
        let snippet = write(
            &confd,
            "50-limits.json",
            r#"{"max_concurrent_jobs": 10000000, "zuul_server": {"gearman_port": 0}, "jobs": 5}"#,
        );
        let p = write(
            d.path(),
            "config.json",
            r#"{"conf_d": "conf.d", "max_packet_bytes": 1, "jobs": [{"name": "build:x", "shell_script": "/x"}]}"#,
        );
        let err = load(&p).unwrap_err();
        let text: Vec<String> = err.issues.iter().map(ToString::to_string).collect();
        let s = snippet.display();
        let m = p.display();
        for needle in [
            format!("{s}: max_concurrent_jobs: must be between 1 and 1024, got 10000000"),
            format!("{s}: zuul_server.gearman_port: must be between 1 and 65535, got 0"),
            format!("{s}: jobs: expected a list, got a number"),
            format!("{m}: max_packet_bytes: must be between 1024 and 268435456, got 1"),
        ] {
            assert!(
                text.iter().any(|t| t.starts_with(&needle)),
                "{needle}\n{text:#?}"
            );
        }
        assert_eq!(text.len(), 4, "{text:#?}");
    }

    #[test]
    fn a_null_key_counts_as_absent() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "config.json",
            r#"{"max_concurrent_jobs": null, "plugins": [{"name": null}],
                "jobs": [{"name": null, "shell_script": "/x"}]}"#,
        );
        let err = load(&p).unwrap_err();
        let text: Vec<String> = err.issues.iter().map(|i| i.to_string()).collect();
        let m = p.display();
        assert_eq!(
            text,
            [
                format!("{m}: plugins[0].name: required: the plugin's name"),
                format!("{m}: jobs[0].name: required: the Gearman function, e.g. \"build:my-job\""),
            ]
        );
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "config.json",
            "{\n  \"debug_log\": \"x\",\n  oops\n}",
        );
        let err = load(&p).unwrap_err();
        assert_eq!(err.issues.len(), 1);
        assert!(err.issues[0].path.starts_with("line 3 column"), "{err}");
    }

    #[test]
    fn conf_d_merges_in_sorted_order() {
        let d = tempfile::tempdir().unwrap();
        let confd = d.path().join("conf.d");
        std::fs::create_dir(&confd).unwrap();
        write(
            &confd,
            "20-b.json",
            r#"{"worker_name": "second", "jobs": [{"name": "build:b", "shell_script": "/b"}]}"#,
        );
        write(
            &confd,
            "10-a.json",
            r#"{"worker_name": "first", "jobs": [{"name": "build:a", "shell_script": "/a"}]}"#,
        );
        write(&confd, "ignored.txt", "not json");
        let p = write(
            d.path(),
            "config.json",
            r#"{"conf_d": "conf.d", "jobs": [{"name": "build:main", "shell_script": "/m"}]}"#,
        );
        let c = load(&p).unwrap();
        assert_eq!(c.worker_name, "second");
        let fns: Vec<_> = c.jobs.iter().filter_map(|j| j.function.clone()).collect();
        assert_eq!(fns, ["build:main", "build:a", "build:b"]);
        assert!(c.jobs[2].source.contains("20-b.json"));
    }

    #[test]
    fn conf_d_errors_name_the_snippet() {
        let d = tempfile::tempdir().unwrap();
        let confd = d.path().join("conf.d");
        std::fs::create_dir(&confd).unwrap();
        write(
            &confd,
            "a.json",
            r#"{"jobs": [{"name": "build:x"}, {"name": "build:x"}]}"#,
        );
        let p = write(d.path(), "config.json", r#"{"conf_d": "conf.d"}"#);
        let err = load(&p).unwrap_err();
        assert!(
            err.to_string()
                .contains("a.json: jobs[1]: the function \"build:x\" is defined twice"),
            "{err}"
        );
    }

    #[test]
    fn servers_merge_and_parse() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "config.json",
            r#"{"zuul_server": {"gearman_host": "zuul", "gearman_port": "4730"},
                "gearman_servers": ["zuul:4730", "127.0.0.1:4731", "other"]}"#,
        );
        let c = load(&p).unwrap();
        let s: Vec<String> = c.gearman_servers.iter().map(ToString::to_string).collect();
        assert_eq!(s, ["zuul:4730", "127.0.0.1:4731", "other:4730"]);
        assert!(ServerAddr::parse("h:0").is_err());
        assert!(ServerAddr::parse("-h:1").is_err());
    }

    #[test]
    fn resolve_prefers_cli_then_env() {
        assert_eq!(
            resolve_config_path(Some(Path::new("/x.json"))),
            PathBuf::from("/x.json")
        );
    }

    fn s3(keys: &str, env: &[(&str, &str)]) -> (PublishLogs, Vec<String>, Vec<String>) {
        let obj: Map<String, Value> = serde_json::from_str(keys).unwrap();
        let mut c = Checker::new("config.json");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let read = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let p = check_s3(&mut c, &obj, &read);
        let (errors, warnings) = c.into_lines();
        (p, errors, warnings)
    }

    #[test]
    fn s3_publishing_takes_its_keys_from_the_config_or_the_environment() {
        let (p, errors, _) = s3(
            r#"{"type": "s3", "bucket": "logs", "endpoint": "http://127.0.0.1:9000/",
                "prefix": "/ci/", "access_key_id": "AK", "secret_access_key": "SK", "retries": 0}"#,
            &[],
        );
        assert!(errors.is_empty(), "{errors:?}");
        let PublishLogs::S3(t) = p else {
            panic!("{p:?}")
        };
        assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(t.prefix, "ci");
        assert_eq!(t.region, DEFAULT_S3_REGION);
        assert_eq!(t.prepend_url, "http://127.0.0.1:9000/logs/ci");
        assert_eq!(t.retries, 0);
        assert_eq!(t.secret_access_key.expose(), "SK");
        // Printed, the config never shows a key.
        let shown = format!("{t:?}");
        assert!(
            !shown.contains("\"SK\"") && !shown.contains("\"AK\""),
            "{shown}"
        );

        let env = [
            ("AWS_ACCESS_KEY_ID", "ENVAK"),
            ("AWS_SECRET_ACCESS_KEY", "ENVSK"),
        ];
        let (p, errors, _) = s3(
            r#"{"type": "s3", "bucket": "logs", "region": "eu-west-1"}"#,
            &env,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let PublishLogs::S3(t) = p else {
            panic!("{p:?}")
        };
        assert_eq!(t.access_key_id.expose(), "ENVAK");
        assert_eq!(t.prepend_url, "https://logs.s3.eu-west-1.amazonaws.com");
        assert_eq!(t.retries, DEFAULT_PUBLISH_RETRIES);
    }

    #[test]
    fn s3_publishing_names_each_bad_value_and_never_shows_a_key() {
        let (p, errors, warnings) = s3(
            r#"{"type": "s3", "bucket": "Bad_Bucket", "endpoint": "ftp://x", "region": "eu west",
                "prefix": "a/../b", "access_key_id": 12, "secret_access_key": "has space secret",
                "retries": 11, "colour": 1}"#,
            &[],
        );
        assert_eq!(p, PublishLogs::None);
        let text = errors.join("\n");
        for needle in [
            "config.json: publish_logs.bucket: must be a bucket name (3 to 63 of a-z, 0-9, '.', '-'), got \"Bad_Bucket\"",
            "config.json: publish_logs.endpoint: must be http://HOST[:PORT] or https://HOST[:PORT], got \"ftp://x\"",
            "config.json: publish_logs.region: must be a region name (a-z, 0-9, '-'), got \"eu west\"",
            "config.json: publish_logs.prefix: must be a plain key prefix",
            "config.json: publish_logs.access_key_id: expected a string, got a number",
            "config.json: publish_logs.secret_access_key: must be a key without whitespace (its value is not shown)",
            "config.json: publish_logs.retries: must be between 0 and 10, got 11",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert_eq!(errors.len(), 7, "{text}");
        assert!(!text.contains("space secret"), "{text}");
        assert!(
            warnings.iter().any(|w| w.contains("publish_logs.colour")),
            "{warnings:?}"
        );

        let (_, errors, _) = s3(r#"{"type": "s3"}"#, &[]);
        let text = errors.join("\n");
        assert!(text.contains("publish_logs.bucket: required"), "{text}");
        assert!(
            text.contains("publish_logs.secret_access_key: required: or AWS_SECRET_ACCESS_KEY in the daemon's environment"),
            "{text}"
        );
    }
}
