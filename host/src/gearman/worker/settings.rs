//! What the worker is told ([`WorkerConfig`], checked whole) and the connections it derives
//! from it: per server, one for the normal functions and one for the priority functions, each
//! role drawing on one slot budget over all servers.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::slots::Slots;
use crate::gearman::codec::DEFAULT_MAX_BODY;
use crate::gearman::packet::MAX_FUNCTION_LEN;
use crate::gearman::{Error, Result};

/// Suffix appended to the client id of the per-server control connections.
pub const CONTROL_CLIENT_ID_SUFFIX: &str = "-control";

/// Configuration of a [`Worker`](super::Worker). Build it with struct-update syntax over
/// [`WorkerConfig::default`] and check it with [`WorkerConfig::validate`] (also done by
/// [`Worker::spawn`](super::Worker::spawn)).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Gearman servers as (host, port). One connection (plus a control connection when there
    /// are priority functions) is kept to each.
    pub servers: Vec<(String, u16)>,
    /// Sent with `SET_CLIENT_ID`; control connections use `<client_id>-control`.
    pub client_id: String,
    /// Functions registered with `CAN_DO` exactly as given (e.g. `build:gate-nova-python27`).
    pub functions: Vec<String>,
    /// Functions served even while every slot is busy (e.g. `stop:<manager>`), registered only on
    /// the control connections.
    pub priority_functions: Vec<String>,
    /// Jobs of `functions` running at once, over all servers together.
    pub max_concurrent_jobs: usize,
    /// Jobs of `priority_functions` running at once, over all servers together.
    pub max_concurrent_priority_jobs: usize,
    /// Largest packet body accepted from a server (and sent to it). A larger job is failed
    /// with [`oversized_job_result`](super::oversized_job_result) (see the module
    /// documentation); any other larger packet is a protocol error.
    pub max_packet_body: usize,
    /// First reconnect delay; doubles after every failed attempt.
    pub reconnect_initial: Duration,
    /// Cap of the reconnect delay.
    pub reconnect_max: Duration,
    /// Bound on one TCP connect attempt.
    pub connect_timeout: Duration,
    /// Idle time before TCP keepalive probes start (probes then every 10 s, 6 of them).
    pub keepalive_idle: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            servers: Vec::new(),
            client_id: "turbo-hipster".to_string(),
            functions: Vec::new(),
            priority_functions: Vec::new(),
            max_concurrent_jobs: 1,
            max_concurrent_priority_jobs: 4,
            max_packet_body: DEFAULT_MAX_BODY,
            reconnect_initial: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            keepalive_idle: Duration::from_secs(60),
        }
    }
}

fn check_name(what: &str, name: &str, max: usize, errors: &mut Vec<String>) {
    if name.is_empty() {
        errors.push(format!("{what} is empty"));
    } else if name.len() > max {
        errors.push(format!("{what} {name:?} is longer than {max} bytes"));
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        errors.push(format!(
            "{what} {name:?} contains whitespace or control characters"
        ));
    }
}

impl WorkerConfig {
    /// Checks every field and reports all problems at once.
    ///
    /// # Errors
    /// [`Error::Config`] listing every problem found.
    pub fn validate(&self) -> Result<()> {
        let mut errors = Vec::new();
        self.check_servers(&mut errors);
        self.check_names(&mut errors);
        self.check_limits(&mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(errors.join("; ")))
        }
    }

    fn check_servers(&self, errors: &mut Vec<String>) {
        if self.servers.is_empty() {
            errors.push("no Gearman servers configured".to_string());
        }
        for (host, port) in &self.servers {
            if host.is_empty() {
                errors.push("a Gearman server has an empty host".to_string());
            }
            if *port == 0 {
                errors.push(format!("Gearman server {host:?} has port 0"));
            }
        }
    }

    fn check_names(&self, errors: &mut Vec<String>) {
        check_name("client id", &self.client_id, 200, errors);
        if self.functions.is_empty() && self.priority_functions.is_empty() {
            errors.push("no functions to register".to_string());
        }
        let mut seen = std::collections::HashSet::new();
        for f in self.functions.iter().chain(&self.priority_functions) {
            check_name("function name", f, MAX_FUNCTION_LEN, errors);
            if !seen.insert(f.as_str()) {
                errors.push(format!("function {f:?} is listed twice"));
            }
        }
    }

    fn check_limits(&self, errors: &mut Vec<String>) {
        if self.max_concurrent_jobs == 0 {
            errors.push("max_concurrent_jobs must be at least 1".to_string());
        }
        if !self.priority_functions.is_empty() && self.max_concurrent_priority_jobs == 0 {
            errors.push("max_concurrent_priority_jobs must be at least 1".to_string());
        }
        if self.max_packet_body < 1024 {
            errors.push("max_packet_body must be at least 1024 bytes".to_string());
        }
        if self.reconnect_initial.is_zero() || self.reconnect_max < self.reconnect_initial {
            errors.push(
                "reconnect delays must be positive with reconnect_max >= reconnect_initial"
                    .to_string(),
            );
        }
        if self.connect_timeout.is_zero() || self.keepalive_idle < Duration::from_secs(1) {
            errors.push("connect_timeout and keepalive_idle (>= 1 s) must be positive".to_string());
        }
    }

    /// The connections to keep, per server in order: the normal one (when there are
    /// functions), then the control one (when there are priority functions).
    pub(super) fn connections(&self) -> Vec<ConnSpec> {
        let normal_slots = Slots::new(self.max_concurrent_jobs);
        let control_slots = Slots::new(self.max_concurrent_priority_jobs);
        let mut specs = Vec::new();
        for (index, (host, port)) in self.servers.iter().enumerate() {
            let server = ServerId {
                index,
                host: Arc::from(host.as_str()),
                port: *port,
            };
            if !self.functions.is_empty() {
                specs.push(ConnSpec {
                    server: server.clone(),
                    role: Role::Normal,
                    client_id: Bytes::from(self.client_id.clone()),
                    functions: to_bytes(&self.functions),
                    slots: normal_slots.clone(),
                    max_grabs: self.max_concurrent_jobs.max(1),
                });
            }
            if !self.priority_functions.is_empty() {
                specs.push(ConnSpec {
                    server,
                    role: Role::Control,
                    client_id: Bytes::from(format!("{}{CONTROL_CLIENT_ID_SUFFIX}", self.client_id)),
                    functions: to_bytes(&self.priority_functions),
                    slots: control_slots.clone(),
                    max_grabs: self.max_concurrent_priority_jobs.max(1),
                });
            }
        }
        specs
    }
}

fn to_bytes(functions: &[String]) -> Vec<Bytes> {
    functions.iter().map(|f| Bytes::from(f.clone())).collect()
}

/// Which configured server something belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerId {
    /// Position in [`WorkerConfig::servers`].
    pub index: usize,
    /// Host as configured.
    pub host: Arc<str>,
    /// TCP port as configured.
    pub port: u16,
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A connection's role: normal functions, or the priority functions on a control connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Normal,
    Control,
}

impl Role {
    /// The role in logs.
    pub(super) fn name(self) -> &'static str {
        match self {
            Role::Normal => "normal",
            Role::Control => "control",
        }
    }
}

/// One connection to keep.
pub(super) struct ConnSpec {
    pub(super) server: ServerId,
    pub(super) role: Role,
    pub(super) client_id: Bytes,
    pub(super) functions: Vec<Bytes>,
    pub(super) slots: Arc<Slots>,
    /// How many grabs may be outstanding at once on this connection (its role's slot count).
    pub(super) max_grabs: usize,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn validate_reports_every_problem() {
        let cfg = WorkerConfig {
            servers: vec![(String::new(), 0)],
            client_id: "a b".into(),
            functions: vec!["build:x".into(), "build:x".into(), String::new()],
            max_concurrent_jobs: 0,
            ..WorkerConfig::default()
        };
        let Err(Error::Config(msg)) = cfg.validate() else {
            panic!("expected a config error")
        };
        for needle in [
            "empty host",
            "port 0",
            "client id",
            "listed twice",
            "function name is empty",
            "max_concurrent_jobs",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing from {msg}");
        }
        let ok = WorkerConfig {
            servers: vec![("127.0.0.1".into(), 4730)],
            functions: vec!["build:x".into()],
            priority_functions: vec!["stop:th".into()],
            ..WorkerConfig::default()
        };
        ok.validate().unwrap();
    }

    #[test]
    fn server_id_display() {
        let s = ServerId {
            index: 0,
            host: Arc::from("::1"),
            port: 4730,
        };
        assert_eq!(s.to_string(), "[::1]:4730");
    }
}
