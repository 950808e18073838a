//! `turbo-hipster enqueue`: submit a build the way Zuul v2 does and follow it to its result.
//!
//! Like Zuul: the Zuul parameters are filled in (ZUUL_UUID, LOG_PATH, …) unless given, the
//! function's registration is checked through admin `status` first (NOT_REGISTERED), the build
//! counts as started on the first WORK_DATA with `number` and `manager`, and only the final
//! `result` decides. `stop_after` aborts it the way Zuul does: `stop:<manager>` at high priority.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::ServerAddr;
use crate::gearman::admin::AdminClient;
use crate::gearman::client::{Client, JobEvent, Priority};
use crate::zuul;

/// What to submit.
#[derive(Debug, Clone)]
pub struct EnqueueOptions {
    /// The job (`build:` is added when missing).
    pub job: String,
    /// The Gearman server.
    pub server: ServerAddr,
    /// Parameters given; the rest are filled in as Zuul would.
    pub parameters: BTreeMap<String, String>,
    /// Send `stop:<manager>` this long after the build started.
    pub stop_after: Option<Duration>,
    /// Give up waiting after this long.
    pub timeout: Option<Duration>,
}

/// How the build ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnqueueOutcome {
    /// The final `result`, or `NOT_REGISTERED`, or `LOST` when the worker gave none.
    pub result: String,
    /// The build's `url`, if it sent one.
    pub url: Option<String>,
    /// The unique (ZUUL_UUID).
    pub unique: String,
    /// Whether a stop was sent.
    pub stopped: bool,
}

impl EnqueueOutcome {
    /// Only SUCCESS is a success.
    pub fn is_success(&self) -> bool {
        self.result == "SUCCESS"
    }
}

/// Why the build could not be followed.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    // The causes are part of the message and deliberately not `source`s: `{:#}` would print
    // them a second time.
    /// The server could not be reached or broke off.
    #[error("Gearman server {server}: {error}")]
    Gearman {
        /// `host:port` as given.
        server: String,
        error: crate::gearman::Error,
    },
    /// The parameters would be refused by the worker; nothing was submitted.
    #[error("invalid job parameters: {0}")]
    Parameters(zuul::InvalidParameters),
    /// No result in time.
    #[error("no result within {} s", .0.as_secs())]
    Timeout(Duration),
}

/// Submits the build and follows it, writing what happens to `out`.
///
/// # Errors
/// The server is unreachable, the parameters are invalid, or the timeout passed.
pub async fn enqueue(
    opts: EnqueueOptions,
    out: &mut (dyn Write + Send),
) -> Result<EnqueueOutcome, EnqueueError> {
    let function = if opts.job.starts_with("build:") {
        opts.job.clone()
    } else {
        format!("build:{}", opts.job)
    };
    let mut params = opts.parameters.clone();
    zuul::fill_zuul_parameters(&function, &mut params);
    zuul::validate(&params).map_err(EnqueueError::Parameters)?;
    let unique = params.get("ZUUL_UUID").cloned().unwrap_or_default();
    let server = opts.server.to_string();
    let gearman = |error| EnqueueError::Gearman {
        server: server.clone(),
        error,
    };

    let mut admin =
        AdminClient::connect(&opts.server.host, opts.server.port, Duration::from_secs(10))
            .await
            .map_err(gearman)?;
    if !admin.is_registered(&function).await.map_err(gearman)? {
        let _ = writeln!(out, "{function} is not registered on {server}");
        let _ = writeln!(out, "result: NOT_REGISTERED");
        return Ok(EnqueueOutcome {
            result: "NOT_REGISTERED".into(),
            url: None,
            unique,
            stopped: false,
        });
    }
    drop(admin);

    let client = Client::connect(&opts.server.host, opts.server.port)
        .await
        .map_err(gearman)?;
    let data = serde_json::to_string(&params).unwrap_or_else(|_| "{}".into());
    let mut job = client
        .submit(&function, &unique, data, Priority::Normal)
        .await
        .map_err(gearman)?;
    let _ = writeln!(out, "submitted {function} ({unique})");

    let deadline = opts.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut result: Option<String> = None;
    let mut url = None;
    let mut manager: Option<String> = None;
    let mut stop_at: Option<tokio::time::Instant> = None;
    let mut stopped = false;
    loop {
        let ev = tokio::select! {
            ev = job.next_event() => ev,
            _ = sleep_until_opt(stop_at.filter(|_| !stopped)) => {
                // Time to stop the build, as Zuul does.
                stopped = true;
                if let Some(m) = &manager {
                    let _ = writeln!(out, "stopping the build through stop:{m}");
                    let body =
                        json!({"name": zuul::job_name(&function), "number": unique}).to_string();
                    let stop = client
                        .submit(&format!("stop:{m}"), &zuul::random_uuid_hex(), body, Priority::High)
                        .await
                        .map_err(gearman)?;
                    tokio::spawn(async move {
                        let _ = stop.wait().await;
                    });
                }
                continue;
            }
            _ = sleep_until_opt(deadline) => {
                return Err(EnqueueError::Timeout(opts.timeout.unwrap_or_default()));
            }
        };
        // The connection closed under us: the build is lost.
        let Some(ev) = ev else { break };
        let terminal = ev.is_terminal();
        match ev {
            JobEvent::Data(d) | JobEvent::Complete(d) if !d.is_empty() => {
                match serde_json::from_slice::<Value>(&d) {
                    Ok(Value::Object(map)) => {
                        if manager.is_none() {
                            if let (Some(m), Some(_)) = (map.get("manager"), map.get("number")) {
                                manager = m.as_str().map(str::to_string);
                                let _ = writeln!(out, "started: {}", Value::Object(map.clone()));
                                if let Some(after) = opts.stop_after {
                                    stop_at = Some(tokio::time::Instant::now() + after);
                                }
                            }
                        }
                        if let Some(u) = map.get("url").and_then(Value::as_str) {
                            url = Some(u.to_string());
                        }
                        if let Some(r) = map.get("result").and_then(Value::as_str) {
                            result = Some(r.to_string());
                        } else if !map.contains_key("manager") {
                            let _ = writeln!(out, "data: {}", Value::Object(map));
                        }
                    }
                    _ => {
                        let _ = writeln!(out, "data: {}", String::from_utf8_lossy(&d));
                    }
                }
            }
            JobEvent::Status {
                numerator,
                denominator,
            } => {
                let _ = writeln!(out, "progress: {numerator}/{denominator}");
            }
            JobEvent::Warning(w) => {
                let _ = writeln!(out, "warning: {}", String::from_utf8_lossy(&w));
            }
            JobEvent::Exception(e) => {
                let _ = writeln!(out, "exception: {}", String::from_utf8_lossy(&e));
            }
            _ => {}
        }
        if terminal {
            break;
        }
    }
    let result = result.unwrap_or_else(|| "LOST".to_string());
    let _ = writeln!(out, "result: {result}");
    if let Some(u) = &url {
        let _ = writeln!(out, "url: {u}");
    }
    Ok(EnqueueOutcome {
        result,
        url,
        unique,
        stopped,
    })
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
