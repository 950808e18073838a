//! The `turbo-hipster` command: one function per command; anyhow only here.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

use turbo_hipster::config::{self, Config};
use turbo_hipster::config_check;
use turbo_hipster::daemon::{self, PidFile};
use turbo_hipster::host_context::{channel_sink, CancelToken, JobEvent};
use turbo_hipster::jobs::{JobOutcome, JobRequest};
use turbo_hipster::pipeline::Pipeline;
use turbo_hipster::plugins::{self, Registry};
use turbo_hipster::service::{self, Shutdown};
use turbo_hipster::{enqueue, logging, zuul};

/// A Gearman worker for Zuul that tests database migrations against real datasets.
#[derive(Parser, Debug)]
#[command(name = "turbo-hipster", version, about)]
struct Cli {
    /// The configuration file [default: $TURBO_HIPSTER_CONFIG or /etc/turbo-hipster/config.json].
    /// Given without a value: print the resolved path and exit.
    #[arg(short = 'c', long = "config", num_args = 0..=1, default_missing_value = "", global = true)]
    config: Option<String>,

    /// Run in the background (detach from the terminal, log to `debug_log`).
    #[arg(short = 'b', long = "background")]
    background: bool,

    /// Hold a locked PID file while running.
    #[arg(short = 'p', long = "pidfile")]
    pidfile: Option<PathBuf>,

    /// Log level when RUST_LOG is not set.
    #[arg(long, default_value = "info", global = true)]
    log_level: String,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load every configured plugin and show what it serves.
    Plugins,
    /// Validate the configuration and every job's plugin configuration, and check what the
    /// daemon or a job would refuse later (servers, writable directories, seeds, scripts).
    CheckConfig,
    /// Build the datasets' golden copies now (what the first job needing one would do), so no
    /// job waits for it; `--rebuild` builds them again, `--prune` removes those of datasets
    /// that no longer exist.
    PrepareDatasets {
        /// Build again even golden copies that are up to date.
        #[arg(long)]
        rebuild: bool,
        /// Remove golden copies of datasets that no longer exist.
        #[arg(long)]
        prune: bool,
    },
    /// Run one job now, without Gearman, as the daemon would.
    RunJob {
        /// The job (`build:NAME` or `NAME`).
        job: String,
        /// A job parameter; repeatable.
        #[arg(long = "param", value_name = "K=V")]
        params: Vec<String>,
        /// A JSON object of parameters (given --param values win).
        #[arg(long = "params-file", value_name = "FILE")]
        params_file: Option<PathBuf>,
    },
    /// Submit a build through Gearman the way Zuul does and follow it to its result.
    Enqueue {
        /// The job (`build:NAME` or `NAME`).
        job: String,
        /// The Gearman server.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:4730")]
        server: String,
        /// A job parameter; repeatable. Missing Zuul parameters are made up as Zuul would.
        #[arg(long = "param", value_name = "K=V")]
        params: Vec<String>,
        /// A JSON object of parameters (given --param values win).
        #[arg(long = "params-file", value_name = "FILE")]
        params_file: Option<PathBuf>,
        /// Abort the build this many seconds after it started, as Zuul does (stop:<manager>).
        #[arg(long = "stop-after", value_name = "SECS")]
        stop_after: Option<f64>,
        /// Give up waiting after this many seconds.
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
    },
    /// Per migration of a dataset, from the history database: samples, median, p95, max.
    History {
        /// The dataset.
        #[arg(long)]
        dataset: String,
    },
    /// Suggest time limits for a dataset's migrations from the history (p99 × factor + floor,
    /// in whole seconds rounded up); `--write` puts them into the dataset's config.
    Limits {
        /// The dataset.
        #[arg(long)]
        dataset: String,
        /// The factor on the 99th percentile.
        #[arg(long, default_value_t = 1.5)]
        factor: f64,
        /// Seconds added to every limit.
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        floor: f64,
        /// Migrations with fewer samples get no suggestion.
        #[arg(long, default_value_t = 1)]
        min_samples: usize,
        /// Write the suggestions into the dataset's config (`maximum_migration_times`),
        /// keeping its other keys and their order.
        #[arg(long)]
        write: bool,
        /// The dataset's config file [default: the one its latest recorded run used].
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Write a dataset's trends page (each migration's duration over time, with its limit) as
    /// one self-contained HTML file.
    Trends {
        /// The dataset.
        #[arg(long)]
        dataset: String,
        /// The file to write [default: standard output].
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Import the original turbo-hipster's job logs (`<dataset>.log`, `[output]` lines) into
    /// the history; files imported before are skipped.
    ImportLogs {
        /// Log files, or directories searched for `*.log`.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// The dataset the logs belong to [default: each file's name without `.log`].
        #[arg(long)]
        dataset: Option<String>,
    },
    /// Runs one job for the daemon in a child process (`job_isolation: "process"`).
    #[command(name = "__run-job-child", hide = true)]
    RunJobChild,
}

mod history_command;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if daemon::is_background_child() {
                daemon::report_failure(&format!("{e:#}"));
            }
            eprintln!("turbo-hipster: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    // `-c` without a value: print where the config would be read from.
    if cli.config.as_deref() == Some("") {
        println!("{}", config::resolve_config_path(None).display());
        return Ok(ExitCode::SUCCESS);
    }
    let config_path = config::resolve_config_path(cli.config.as_deref().map(Path::new));
    match cli.command {
        Some(Command::RunJobChild) => Ok(turbo_hipster::isolation::child_main()),
        Some(Command::CheckConfig) => check_config(&config_path, &cli.log_level),
        Some(Command::Plugins) => list_plugins(&config_path, &cli.log_level),
        Some(Command::PrepareDatasets { rebuild, prune }) => {
            prepare_datasets(&config_path, &cli.log_level, rebuild, prune)
        }
        Some(Command::History { ref dataset }) => with_log(&cli.log_level, || {
            history_command::show(&config_path, dataset)
        }),
        Some(Command::Limits {
            ref dataset,
            factor,
            floor,
            min_samples,
            write,
            ref file,
        }) => with_log(&cli.log_level, || {
            history_command::limits(
                &config_path,
                dataset,
                th_history::LimitRule {
                    factor,
                    floor_seconds: floor,
                    min_samples,
                },
                write.then_some(file.as_deref()),
            )
        }),
        Some(Command::Trends {
            ref dataset,
            ref output,
        }) => with_log(&cli.log_level, || {
            history_command::trends(&config_path, dataset, output.as_deref())
        }),
        Some(Command::ImportLogs {
            ref paths,
            ref dataset,
        }) => import_logs(&config_path, &cli.log_level, paths, dataset.clone()),
        Some(Command::RunJob {
            ref job,
            ref params,
            ref params_file,
        }) => run_job(
            &config_path,
            &cli.log_level,
            job,
            params,
            params_file.as_deref(),
        ),
        Some(Command::Enqueue {
            ref job,
            ref server,
            ref params,
            ref params_file,
            stop_after,
            timeout,
        }) => run_enqueue(
            job,
            server,
            params,
            params_file.as_deref(),
            stop_after,
            timeout,
        ),
        None => run_daemon(&cli, &config_path),
    }
}

/// The longest `--timeout`/`--stop-after` (a week), so a typo cannot overflow a clock.
const MAX_CLI_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

fn seconds(what: &str, v: Option<f64>) -> Result<Option<std::time::Duration>> {
    match v {
        None => Ok(None),
        Some(s) if (0.0..=MAX_CLI_SECONDS).contains(&s) => {
            Ok(Some(std::time::Duration::from_secs_f64(s)))
        }
        Some(s) => bail!("{what}: {s:?} is not a number of seconds from 0 to {MAX_CLI_SECONDS}"),
    }
}

fn run_enqueue(
    job: &str,
    server: &str,
    params: &[String],
    params_file: Option<&Path>,
    stop_after: Option<f64>,
    timeout: Option<f64>,
) -> Result<ExitCode> {
    let server = config::ServerAddr::parse(server).map_err(|e| anyhow::anyhow!("--server {e}"))?;
    let opts = enqueue::EnqueueOptions {
        job: job.to_string(),
        server,
        parameters: parse_params(params, params_file)?,
        stop_after: seconds("--stop-after", stop_after)?,
        timeout: seconds("--timeout", timeout)?,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = rt.block_on(async {
        let mut out = std::io::stdout();
        enqueue::enqueue(opts, &mut out).await
    })?;
    Ok(if outcome.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn load_config(path: &Path) -> Result<Config> {
    match config::load(path) {
        Ok(c) => {
            for w in &c.warnings {
                tracing::warn!("{w}");
            }
            Ok(c)
        }
        Err(e) => {
            for w in &e.warnings {
                tracing::warn!("{w}");
            }
            Err(anyhow::Error::new(e))
        }
    }
}

fn check_config(path: &Path, level: &str) -> Result<ExitCode> {
    let _log = logging::init(level, true, None)?;
    let config = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            for w in &e.warnings {
                println!("warning: {w}");
            }
            println!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    for w in &config.warnings {
        println!("warning: {w}");
    }
    for w in config_check::environment_warnings(&config) {
        println!("warning: {w}");
    }
    let registry = plugins::check_registry(&config);
    let mut errors = 0;
    for issue in config_check::check_environment(&config) {
        println!("error: {issue}");
        errors += 1;
    }
    for (source, message) in &registry.job_errors {
        println!("error: {source}: {message}");
        errors += 1;
    }
    if config.jobs.is_empty() {
        println!("warning: {}: no jobs or plugins configured", path.display());
    }
    if errors > 0 {
        println!("{errors} error(s); {} job(s) OK", registry.jobs.len());
        return Ok(ExitCode::from(1));
    }
    println!(
        "{}: OK ({} job(s): {})",
        path.display(),
        registry.jobs.len(),
        registry.functions().join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// `prepare-datasets`: every job's plugin prepares its datasets while it loads; what failed
/// is printed and makes the exit status 1.
fn prepare_datasets(path: &Path, level: &str, rebuild: bool, prune: bool) -> Result<ExitCode> {
    let _log = logging::init(level, true, None)?;
    let config = load_config(path)?;
    let prepare = turbo_hipster_sdk::PrepareDatasets { rebuild, prune };
    let registry = plugins::prepare_registry(&config, prepare);
    for (source, message) in &registry.job_errors {
        println!("error: {source}: {message}");
    }
    if !registry.job_errors.is_empty() {
        return Ok(ExitCode::from(1));
    }
    println!("datasets prepared for {} job(s)", registry.jobs.len());
    Ok(ExitCode::SUCCESS)
}

/// A history command with the log on stderr; its error message becomes the command's error.
fn with_log(
    level: &str,
    command: impl FnOnce() -> std::result::Result<ExitCode, String>,
) -> Result<ExitCode> {
    let _log = logging::init(level, true, None)?;
    command().map_err(|e| anyhow::anyhow!(e))
}

/// `import-logs`: the first job of each plugin imports the logs while it loads (the gate
/// plugin reads the original's format); what it could not read is printed and makes the exit
/// status 1.
fn import_logs(
    path: &Path,
    level: &str,
    paths: &[PathBuf],
    dataset: Option<String>,
) -> Result<ExitCode> {
    let _log = logging::init(level, true, None)?;
    let config = load_config(path)?;
    let paths = paths
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let import = turbo_hipster_sdk::ImportLogs { paths, dataset };
    let registry = plugins::import_registry(&config, import);
    for (source, message) in &registry.job_errors {
        println!("error: {source}: {message}");
    }
    Ok(exit_code(registry.job_errors.is_empty()))
}

fn list_plugins(path: &Path, level: &str) -> Result<ExitCode> {
    let _log = logging::init(level, true, None)?;
    let config = load_config(path)?;
    let registry = plugins::build_registry(&config);
    let mut ok = true;
    for (name, plugin) in &registry.plugins {
        match plugin {
            Ok(p) => {
                let jobs: Vec<&str> = registry
                    .jobs
                    .values()
                    .filter(|j| j.plugin.name == *name)
                    .map(|j| j.function.as_str())
                    .collect();
                println!("{name}");
                println!("  path:        {}", p.path.display());
                println!("  version:     {}", p.info.version);
                println!("  sdk version: {}", p.info.sdk_version);
                println!("  about:       {}", p.info.description);
                println!(
                    "  jobs:        {}",
                    if jobs.is_empty() {
                        "(none)".to_string()
                    } else {
                        jobs.join(", ")
                    }
                );
                println!("  status:      OK");
            }
            Err(e) => {
                ok = false;
                println!("{name}");
                println!("  status:      FAILED: {e}");
            }
        }
    }
    for (source, message) in &registry.job_errors {
        if !message.starts_with("plugin not available") {
            ok = false;
            println!("job at {source}: FAILED: {message}");
        }
    }
    if registry.plugins.is_empty() {
        println!("no plugins configured in {}", path.display());
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn parse_params(params: &[String], params_file: Option<&Path>) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if let Some(f) = params_file {
        let text = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        out = zuul::parse_parameters(&text)
            .and_then(|p| zuul::validate(&p).map(|()| p))
            .map_err(|e| anyhow::anyhow!("{}: invalid job parameters: {e}", f.display()))?;
    }
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            bail!("--param {p:?}: expected K=V");
        };
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// `run-job`: the job through the same pipeline as the daemon's jobs, its progress printed.
fn run_job(
    path: &Path,
    level: &str,
    job: &str,
    params: &[String],
    params_file: Option<&Path>,
) -> Result<ExitCode> {
    let _log = logging::init(level, true, None)?;
    let config = Arc::new(load_config(path)?);
    let parameters = parse_params(params, params_file)?;
    let registry = Arc::new(plugins::build_serving_registry(&config));
    for (source, message) in &registry.job_errors {
        tracing::warn!("{source}: {message}");
    }
    let request = job_request(path, &registry, job, parameters)?;
    let pipeline = Arc::new(Pipeline::new(config, registry));
    let rt = tokio::runtime::Runtime::new()?;
    let outcome = rt.block_on(run_one(&pipeline, request));
    Ok(match outcome {
        Ok(o) => {
            println!("result: {}", o.result);
            match o.url.strip_suffix(turbo_hipster::jobs::REPORT_PAGE) {
                Some(dir) => {
                    println!("logs: {dir}");
                    println!("report: {}", o.url);
                }
                None => println!("logs: {}", o.url),
            }
            println!("duration: {} ms", o.duration.as_millis());
            exit_code(o.is_success())
        }
        Err(result) => {
            println!("result: {result}");
            exit_code(false)
        }
    })
}

fn exit_code(success: bool) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The request for `job` with the Zuul parameters a real build would have filled in.
fn job_request(
    path: &Path,
    registry: &Registry,
    job: &str,
    mut parameters: BTreeMap<String, String>,
) -> Result<JobRequest> {
    let Some(runner) = registry.find(job) else {
        bail!(
            "no job \"{job}\" in {} (jobs: {})",
            path.display(),
            if registry.jobs.is_empty() {
                "none".to_string()
            } else {
                registry.functions().join(", ")
            }
        );
    };
    let function = runner.function.clone();
    zuul::fill_zuul_parameters(&function, &mut parameters);
    let unique = parameters.get("ZUUL_UUID").cloned().unwrap_or_default();
    Ok(JobRequest {
        function,
        unique,
        parameters,
    })
}

/// Prepares and runs the job, printing its events; Ctrl-C cancels it. `Err`: the result of a
/// job that could not start.
async fn run_one(pipeline: &Arc<Pipeline>, request: JobRequest) -> Result<JobOutcome, String> {
    let (function, unique) = (request.function.clone(), request.unique.clone());
    let prepared = pipeline.prepare(request).map_err(|e| e.result())?;
    println!("job {function} ({unique}) started; logs: {}", prepared.url);
    let cancel = CancelToken::new();
    let canceller = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: stopping the job");
            canceller.cancel("interrupted");
        }
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let printer = tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            match ev {
                JobEvent::Progress(n, d) => println!("progress: {n}/{d}"),
                JobEvent::WorkData(data) => println!("work data: {data}"),
            }
        }
    });
    let outcome = pipeline.run(prepared, channel_sink(tx), cancel).await;
    let _ = printer.await;
    Ok(outcome)
}

fn run_daemon(cli: &Cli, config_path: &Path) -> Result<ExitCode> {
    let background_child = daemon::is_background_child();
    if cli.background && !background_child {
        // Validate before detaching so that mistakes show on the terminal.
        let config = config::load(config_path).map_err(anyhow::Error::new)?;
        let args: Vec<OsString> = std::env::args_os()
            .skip(1)
            .filter(|a| a != "-b" && a != "--background")
            .collect();
        let pid = daemon::spawn_background(&args)?;
        println!(
            "turbo-hipster started in the background (pid {pid}); log: {}",
            config
                .debug_log
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none (set debug_log)".into())
        );
        return Ok(ExitCode::SUCCESS);
    }
    if background_child {
        daemon::detach_session();
    }
    let config = config::load(config_path).map_err(anyhow::Error::new)?;
    let _log = logging::init(
        &cli.log_level,
        !background_child,
        config.debug_log.as_deref(),
    )
    .context("cannot open debug_log")?;
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let _pidfile = match &cli.pidfile {
        Some(p) => Some(PidFile::acquire(p)?),
        None => None,
    };
    let registry = plugins::build_serving_registry(&config);
    report_registry(&registry);
    if registry.jobs.is_empty() {
        bail!("no job could be set up; nothing to serve (see the errors above)");
    }
    let config = Arc::new(config);
    let registry = Arc::new(registry);
    // One thread serves every connection: jobs run on threads of their own and report from
    // there, so the runtime only reads packets and starts jobs (a few microseconds each), and
    // a single thread has no cross-thread wake-ups.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let shutdown = Shutdown::on_signals()?;
        // What can stop the start (the metrics port in use) does so before `-b` reports it.
        let service = service::start(config, registry).await?;
        if background_child {
            daemon::report_ready();
        }
        service.run(shutdown).await
    })?;
    tracing::info!("turbo-hipster stopped");
    Ok(ExitCode::SUCCESS)
}

fn report_registry(registry: &Registry) {
    for (name, p) in &registry.plugins {
        match p {
            Ok(p) => {
                tracing::info!(plugin = %name, version = %p.info.version, path = %p.path.display(), "plugin loaded")
            }
            Err(e) => tracing::error!("{e}"),
        }
    }
    for (source, message) in &registry.job_errors {
        tracing::error!("{source}: {message}");
    }
}
