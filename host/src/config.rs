//! `config.json`: the raw JSON is checked key by key into a validated [`Config`].
//!
//! The original's keys load unchanged. Every problem is collected with its place (file and key
//! path) and reported at once; unknown top-level keys are warnings. `conf_d` snippets merge in
//! sorted file-name order: `plugins` and `jobs` lists are appended, other keys replace; the file
//! each key was last set in is remembered, so a problem is blamed on the snippet that holds it.
//!
//! Every number has a range (`max_concurrent_jobs` 1 to [`MAX_CONCURRENT_JOBS`], …): a value
//! that would pass here and then exhaust the machine (a thread and a grab per job slot) is a
//! config error, not a surprise at start. What the files cannot tell (are the directories
//! writable, is there a server) is [`crate::config_check`]'s.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

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
];

/// One problem in the configuration, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The file the problem is in.
    pub file: PathBuf,
    /// The key path inside the file (`jobs[2].plugin`), empty for the whole file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line each: the path and the message may quote anything the file holds.
        let (path, message) = (
            turbo_hipster_sdk::support::text::one_line(&self.path),
            turbo_hipster_sdk::support::text::one_line(&self.message),
        );
        if path.is_empty() {
            write!(f, "{}: {message}", self.file.display())
        } else {
            write!(f, "{}: {path}: {message}", self.file.display())
        }
    }
}

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
                let port: u16 = p
                    .parse()
                    .map_err(|_| format!("'{s}': port '{p}' is not a number from 1 to 65535"))?;
                if port == 0 {
                    return Err(format!("'{s}': port 0 is not allowed"));
                }
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
    /// `"process"` or `"in-process"`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "process" => Some(Self::Process),
            "in-process" => Some(Self::InProcess),
            _ => None,
        }
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
    /// How jobs run: in a child process each, or on the daemon's threads (a job's config entry
    /// may override it with its own `job_isolation`).
    pub job_isolation: Isolation,
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

struct Checker {
    file: PathBuf,
    /// The file each top-level key was last set in (a `conf_d` snippet overrides the main
    /// file), so that a problem is blamed on the file that holds it.
    origins: BTreeMap<String, PathBuf>,
    issues: Vec<ConfigIssue>,
    warnings: Vec<ConfigIssue>,
}

impl Checker {
    fn issue(&self, path: String, message: String) -> ConfigIssue {
        // An entry of `plugins`/`jobs` (`jobs[2]...`) is blamed on its own file, set in
        // `self.file` while the entries are checked; a whole key on the file that set it last.
        let entry = path.contains('[') && ["plugins", "jobs"].contains(&top_key(&path));
        let file = match self.origins.get(top_key(&path)) {
            Some(origin) if !entry => origin.clone(),
            _ => self.file.clone(),
        };
        ConfigIssue {
            file,
            path,
            message,
        }
    }

    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let issue = self.issue(path.into(), message.into());
        self.issues.push(issue);
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let issue = self.issue(path.into(), message.into());
        self.warnings.push(issue);
    }

    fn string(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.error(path, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    fn path(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
        base: &Path,
    ) -> Option<PathBuf> {
        let s = self.string(obj, key, path)?;
        if s.is_empty() {
            self.error(path, "must not be empty");
            return None;
        }
        Some(absolutise(base, &s))
    }

    /// A whole number in `range` (both ends included).
    fn uint(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
        range: RangeInclusive<u64>,
    ) -> Option<u64> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if range.contains(&n) => Some(n),
                _ => {
                    self.error(
                        path,
                        format!(
                            "expected a whole number from {} to {}, found {}",
                            range.start(),
                            range.end(),
                            show(v)
                        ),
                    );
                    None
                }
            },
        }
    }

    fn boolean(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<bool> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                self.error(
                    path,
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }
}

/// The top-level key of a key path: `zuul_server` of `zuul_server.gearman_port`.
fn top_key(path: &str) -> &str {
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

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!("{}…", &s[..s.floor_char_boundary(60)])
    } else {
        s
    }
}

/// A JSON file read and parsed, with syntax errors turned into issues.
fn read_json(file: &Path, issues: &mut Vec<ConfigIssue>) -> Option<Map<String, Value>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            issues.push(ConfigIssue {
                file: file.to_path_buf(),
                path: String::new(),
                message: format!("cannot read the file: {e}"),
            });
            return None;
        }
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Some(map),
        Ok(other) => {
            issues.push(ConfigIssue {
                file: file.to_path_buf(),
                path: String::new(),
                message: format!("expected a JSON object at the top, found {}", kind(&other)),
            });
            None
        }
        Err(e) => {
            issues.push(ConfigIssue {
                file: file.to_path_buf(),
                path: format!("line {} column {}", e.line(), e.column()),
                message: format!("invalid JSON: {e}"),
            });
            None
        }
    }
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
    let mut c = Checker {
        file: path.to_path_buf(),
        origins,
        issues,
        warnings: Vec::new(),
    };
    let config = check(&mut c, &root, &base, entries);
    if c.issues.is_empty() {
        let mut config = config;
        config.warnings = c.warnings;
        config.origins = c.origins;
        Ok(config)
    } else {
        Err(ConfigError {
            issues: c.issues,
            warnings: c.warnings,
        })
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
            issues.push(issue(format!(
                "expected a directory path, found {}",
                kind(other)
            )));
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
    let debug_log = c.path(root, "debug_log", "debug_log", base);
    let jobs_working_dir = c
        .path(root, "jobs_working_dir", "jobs_working_dir", base)
        .unwrap_or_else(|| PathBuf::from("/var/lib/turbo-hipster/jobs"));
    let git_working_dir = c
        .path(root, "git_working_dir", "git_working_dir", base)
        .unwrap_or_else(|| PathBuf::from("/var/lib/turbo-hipster/git"));
    let pip_download_cache = c.path(root, "pip_download_cache", "pip_download_cache", base);
    let plugin_dirs = check_plugin_dirs(c, root, base);
    let (worker_name, manager_name) = check_names(c, root);
    let limits = check_limits(c, root);
    let keep_work_dirs = c
        .boolean(root, "keep_work_dirs", "keep_work_dirs")
        .unwrap_or(false);
    let publish_logs = check_publish(c, root, base);
    let jobs = check_entries(c, entries);
    let job_isolation = check_isolation(c, root, &jobs);
    Config {
        source: c.file.clone(),
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
        job_isolation,
        jobs,
        warnings: Vec::new(),
        origins: BTreeMap::new(),
    }
}

/// Unknown top-level keys (warnings) and `plugins`/`jobs` that are not lists.
fn check_top_level(c: &mut Checker, root: &Map<String, Value>) {
    for key in root.keys() {
        if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
            c.warn(key.clone(), "unknown key, ignored");
        }
    }
    for list in ["plugins", "jobs"] {
        if let Some(v) = root.get(list) {
            if !v.is_array() && !v.is_null() {
                c.error(list, format!("expected a list, found {}", kind(v)));
            }
        }
    }
}

/// The Gearman servers (`zuul_server` first, then `gearman_servers`, each once) and the git
/// origin.
fn check_servers(c: &mut Checker, root: &Map<String, Value>) -> (Vec<ServerAddr>, Option<String>) {
    let mut servers = Vec::new();
    let git_origin = match root.get("zuul_server") {
        None | Some(Value::Null) => None,
        Some(Value::Object(zs)) => check_zuul_server(c, zs, &mut servers),
        Some(other) => {
            c.error(
                "zuul_server",
                format!("expected an object, found {}", kind(other)),
            );
            None
        }
    };
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
    let host = c.string(zs, "gearman_host", "zuul_server.gearman_host");
    let port = gearman_port(c, zs);
    if let (Some(host), Some(port)) = (host, port) {
        match ServerAddr::parse(&format!("{host}:{port}")) {
            Ok(addr) => servers.push(addr),
            Err(e) => c.error("zuul_server.gearman_host", e),
        }
    }
    let mut git_origin = None;
    for key in ["git_origin", "git_url", "zuul_site", "gerrit_site"] {
        if let Some(v) = c.string(zs, key, &format!("zuul_server.{key}")) {
            if git_origin.is_none() && !v.is_empty() {
                git_origin = Some(v);
            }
        }
    }
    for key in zs.keys() {
        if !ZUUL_SERVER_KEYS.contains(&key.as_str()) {
            c.warn(format!("zuul_server.{key}"), "unknown key, ignored");
        }
    }
    git_origin
}

/// `zuul_server.gearman_port`, 4730 when absent.
fn gearman_port(c: &mut Checker, zs: &Map<String, Value>) -> Option<u16> {
    const PATH: &str = "zuul_server.gearman_port";
    match zs.get("gearman_port") {
        None | Some(Value::Null) => Some(DEFAULT_GEARMAN_PORT),
        // The original's example wrote the port as a number; strings are tolerated.
        Some(Value::String(s)) => s.parse::<u16>().ok().filter(|p| *p > 0).or_else(|| {
            c.error(PATH, format!("'{s}' is not a port number from 1 to 65535"));
            None
        }),
        Some(v) => v
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|p| *p > 0)
            .or_else(|| {
                c.error(
                    PATH,
                    format!("{} is not a port number from 1 to 65535", show(v)),
                );
                None
            }),
    }
}

/// `gearman_servers`: each `"host:port"` not listed yet goes into `servers`.
fn check_gearman_servers(
    c: &mut Checker,
    root: &Map<String, Value>,
    servers: &mut Vec<ServerAddr>,
) {
    let list = match root.get("gearman_servers") {
        None | Some(Value::Null) => return,
        Some(Value::Array(list)) => list,
        Some(other) => {
            return c.error(
                "gearman_servers",
                format!("expected a list of \"host:port\", found {}", kind(other)),
            )
        }
    };
    for (i, v) in list.iter().enumerate() {
        let p = format!("gearman_servers[{i}]");
        match v {
            Value::String(s) => match ServerAddr::parse(s) {
                Ok(a) if !servers.contains(&a) => servers.push(a),
                Ok(_) => c.warn(p, "listed twice, connecting once"),
                Err(e) => c.error(p, e),
            },
            other => c.error(p, format!("expected \"host:port\", found {}", kind(other))),
        }
    }
}

/// `plugin_dirs`: a list of directories (or one), the default when absent.
fn check_plugin_dirs(c: &mut Checker, root: &Map<String, Value>, base: &Path) -> Vec<PathBuf> {
    let list = match root.get("plugin_dirs") {
        None | Some(Value::Null) => return vec![PathBuf::from(DEFAULT_PLUGIN_DIR)],
        Some(Value::Array(list)) => list,
        Some(Value::String(s)) => return vec![absolutise(base, s)],
        Some(other) => {
            c.error(
                "plugin_dirs",
                format!("expected a list of directories, found {}", kind(other)),
            );
            return Vec::new();
        }
    };
    let mut dirs = Vec::new();
    for (i, v) in list.iter().enumerate() {
        match v.as_str() {
            Some(s) if !s.is_empty() => dirs.push(absolutise(base, s)),
            _ => c.error(
                format!("plugin_dirs[{i}]"),
                format!("expected a directory path, found {}", show(v)),
            ),
        }
    }
    if list.is_empty() {
        c.error("plugin_dirs", "must name at least one directory");
    }
    dirs
}

/// `worker_name` (the host name by default) and `manager_name` (derived from it by default):
/// both are Gearman tokens.
fn check_names(c: &mut Checker, root: &Map<String, Value>) -> (String, String) {
    let worker_name = c
        .string(root, "worker_name", "worker_name")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(hostname);
    if !is_gearman_token(&worker_name) {
        c.error(
            "worker_name",
            "must be 1 to 64 printable characters without spaces",
        );
    }
    let manager_name = c
        .string(root, "manager_name", "manager_name")
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
    let max_concurrent_jobs = c
        .uint(
            root,
            "max_concurrent_jobs",
            "max_concurrent_jobs",
            1..=MAX_CONCURRENT_JOBS,
        )
        .map(|n| usize::try_from(n).unwrap_or(1))
        .unwrap_or(1);
    let shutdown_grace_seconds = c
        .uint(
            root,
            "shutdown_grace_seconds",
            "shutdown_grace_seconds",
            0..=MAX_SHUTDOWN_GRACE_SECONDS,
        )
        .unwrap_or(300);
    let max_packet_bytes = c
        .uint(
            root,
            "max_packet_bytes",
            "max_packet_bytes",
            MIN_PACKET_BYTES..=MAX_PACKET_BYTES,
        )
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
    let mut parse = |v: &Value, file: PathBuf, path: String| match v.as_str().map(Isolation::parse)
    {
        Some(Some(i)) => Some(i),
        _ => {
            c.issues.push(ConfigIssue {
                file,
                path,
                message: format!("expected \"process\" or \"in-process\", found {}", show(v)),
            });
            None
        }
    };
    for spec in jobs {
        if let Some(v) = spec.config.get("job_isolation") {
            // `source` is "<file>: <entry>".
            let (file, entry) = spec.source.rsplit_once(": ").unwrap_or(("", &spec.source));
            parse(v, PathBuf::from(file), format!("{entry}.job_isolation"));
        }
    }
    match root.get("job_isolation") {
        None | Some(Value::Null) => Isolation::default(),
        Some(v) => parse(v, c.file.clone(), "job_isolation".into()).unwrap_or_default(),
    }
}

fn is_gearman_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|ch| ch.is_ascii_graphic())
}

fn check_publish(c: &mut Checker, root: &Map<String, Value>, base: &Path) -> PublishLogs {
    let obj = match root.get("publish_logs") {
        None | Some(Value::Null) => return PublishLogs::None,
        Some(Value::Object(o)) => o,
        Some(other) => {
            c.error(
                "publish_logs",
                format!("expected an object, found {}", kind(other)),
            );
            return PublishLogs::None;
        }
    };
    let kind_ = c.string(obj, "type", "publish_logs.type");
    match kind_.as_deref() {
        Some("local") => {
            let path = c.path(obj, "path", "publish_logs.path", base);
            let prepend_url = c
                .string(obj, "prepend_url", "publish_logs.prepend_url")
                .unwrap_or_default();
            match path {
                Some(path) => PublishLogs::Local { path, prepend_url },
                None => {
                    if !obj.contains_key("path") {
                        c.error("publish_logs.path", "required when type is \"local\"");
                    }
                    PublishLogs::None
                }
            }
        }
        Some(t @ ("swift" | "scp")) => {
            c.warn(
                "publish_logs.type",
                format!(
                    "\"{t}\" publishing is not supported by this version; logs stay under jobs_working_dir"
                ),
            );
            PublishLogs::None
        }
        Some(other) => {
            c.error(
                "publish_logs.type",
                format!("unknown type \"{other}\" (supported: \"local\")"),
            );
            PublishLogs::None
        }
        None => {
            c.error("publish_logs.type", "required (\"local\")");
            PublishLogs::None
        }
    }
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
    let main_file = c.file.clone();
    for e in entries {
        let path = format!("{}[{}]", e.list, e.index);
        let source = format!("{}: {}", e.file.display(), path);
        c.file = e.file.clone();
        let spec = match (&e.value, e.list) {
            // The original quick start: a bare plugin name serves its default job.
            (Value::String(name), "plugins") => {
                if !is_plugin_name(name) {
                    c.error(&path, format!("\"{name}\" is not a valid plugin name"));
                    continue;
                }
                if name != canonical_plugin(name) {
                    c.warn(
                        &path,
                        format!(
                            "plugin \"{name}\" is now called \"{}\"",
                            canonical_plugin(name)
                        ),
                    );
                }
                Some(JobSpec {
                    function: None,
                    plugin: canonical_plugin(name).to_string(),
                    config: Map::new(),
                    source,
                })
            }
            (Value::Object(obj), list) => {
                let mut config = obj.clone();
                let (plugin, function) = if list == "plugins" {
                    let plugin = c.string(obj, "name", &format!("{path}.name"));
                    if plugin.is_none() && !obj.contains_key("name") {
                        c.error(format!("{path}.name"), "required: the plugin's name");
                    }
                    let function = match c.string(obj, "function", &format!("{path}.function")) {
                        Some(f) => Some(f),
                        // The oldest form: `job` without `build:`.
                        None => c
                            .string(obj, "job", &format!("{path}.job"))
                            .map(|j| format!("build:{j}")),
                    };
                    config.remove("name");
                    config.remove("function");
                    config.remove("job");
                    (plugin, function)
                } else {
                    let function = c.string(obj, "name", &format!("{path}.name"));
                    if function.is_none() && !obj.contains_key("name") {
                        c.error(
                            format!("{path}.name"),
                            "required: the Gearman function, e.g. \"build:my-job\"",
                        );
                    }
                    let plugin = c
                        .string(obj, "plugin", &format!("{path}.plugin"))
                        .or_else(|| Some("shell_script".to_string()));
                    config.remove("name");
                    config.remove("plugin");
                    (plugin, function)
                };
                let Some(plugin) = plugin else { continue };
                if !is_plugin_name(&plugin) {
                    c.error(
                        format!(
                            "{path}.{}",
                            if list == "plugins" { "name" } else { "plugin" }
                        ),
                        format!("\"{plugin}\" is not a valid plugin name (letters, digits, _ - .)"),
                    );
                    continue;
                }
                if plugin != canonical_plugin(&plugin) {
                    c.warn(
                        &path,
                        format!(
                            "plugin \"{plugin}\" is now called \"{}\"",
                            canonical_plugin(&plugin)
                        ),
                    );
                }
                let plugin = canonical_plugin(&plugin).to_string();
                if let Some(f) = &function {
                    if let Err(why) = check_function_name(f) {
                        c.error(format!("{path}.function"), why);
                        continue;
                    }
                }
                Some(JobSpec {
                    function,
                    plugin,
                    config,
                    source,
                })
            }
            (other, _) => {
                c.error(
                    &path,
                    format!(
                        "expected an object (or a plugin name), found {}",
                        kind(other)
                    ),
                );
                None
            }
        };
        if let Some(spec) = spec {
            if let Some(f) = &spec.function {
                if !seen.insert(f.clone()) {
                    c.error(&path, format!("the function \"{f}\" is defined twice"));
                    continue;
                }
            }
            jobs.push(spec);
        }
    }
    c.file = main_file;
    jobs
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
            "zuul_server.gearman_port: 99999 is not a port number",
            "max_concurrent_jobs: expected a whole number from 1 to 1024, found 0",
            "plugin_dirs[0]: expected a directory path",
            "jobs[0].name: required",
            "jobs[1].function: \"build:a b\" contains spaces",
            "jobs[2]: expected an object",
            "plugins[0].name: \"x/y\" is not a valid plugin name",
            "publish_logs.type: unknown type \"ftp\"",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert_eq!(err.issues.len(), 8, "{text}");
        assert!(err.warnings.iter().any(|w| w.path == "colour"));
        assert!(text.contains(&p.display().to_string()));
    }

    #[test]
    fn numbers_are_bounded_both_ways() {
        let d = tempfile::tempdir().unwrap();
        for (key, value, range) in [
            (
                "max_concurrent_jobs",
                "18446744073709551615",
                "from 1 to 1024",
            ),
            ("max_concurrent_jobs", "10000000", "from 1 to 1024"),
            ("max_concurrent_jobs", "-1", "from 1 to 1024"),
            ("max_concurrent_jobs", "1.5", "from 1 to 1024"),
            ("max_packet_bytes", "1023", "from 1024 to 268435456"),
            ("max_packet_bytes", "268435457", "from 1024 to 268435456"),
            ("shutdown_grace_seconds", "86401", "from 0 to 86400"),
        ] {
            let p = write(d.path(), "config.json", &format!("{{\"{key}\": {value}}}"));
            let err = load(&p).unwrap_err();
            assert_eq!(err.issues.len(), 1, "{err}");
            assert_eq!(
                err.issues[0].to_string(),
                format!(
                    "{}: {key}: expected a whole number {range}, found {value}",
                    p.display()
                )
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
            format!("{s}: max_concurrent_jobs: expected a whole number from 1 to 1024"),
            format!("{s}: zuul_server.gearman_port: 0 is not a port number"),
            format!("{s}: jobs: expected a list"),
            format!("{m}: max_packet_bytes: expected a whole number"),
        ] {
            assert!(
                text.iter().any(|t| t.starts_with(&needle)),
                "{needle}\n{text:#?}"
            );
        }
        assert_eq!(text.len(), 4, "{text:#?}");
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
}
