//! How the dataset's run goes: `upgrade_path`, the limits, `timeout`, `provisioning`, `cache`.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::dataset::check::{ref_problem, Checker};
use crate::dataset::{Cache, Provisioning, MAX_TIMEOUT_SECONDS};
use crate::engine::Engine;
use crate::limits::{LimitTable, Limits, KEY_ROWS_CHANGED, KEY_ROWS_READ, KEY_SECONDS};

/// `upgrade_path`: git refs to migrate through first, in order.
pub(super) fn upgrade_path(c: &mut Checker, value: Option<&Value>) -> Vec<String> {
    let mut upgrade_path = Vec::new();
    match value {
        None => {}
        Some(Value::Array(refs)) => {
            for (i, r) in refs.iter().enumerate() {
                let key = format!("upgrade_path[{i}]");
                let Some(s) = c.string(&key, r) else {
                    continue;
                };
                match ref_problem(s) {
                    Some(problem) => c.err(&key, format!("{problem} ({s:?})")),
                    None => upgrade_path.push(s.to_string()),
                }
            }
        }
        Some(other) => c.err(
            "upgrade_path",
            format!("must be a list of git refs, not {other}"),
        ),
    }
    upgrade_path
}

/// The original's limit tables ([`crate::limits`]).
pub(super) fn limits(c: &mut Checker, obj: &Map<String, Value>) -> Limits {
    let mut table = |key: &str| -> Option<LimitTable> {
        match LimitTable::from_json(key, obj.get(key)?) {
            Ok(t) => Some(t),
            Err(errors) => {
                c.errors_from(errors);
                None
            }
        }
    };
    Limits {
        seconds: table(KEY_SECONDS).unwrap_or_default(),
        rows_changed: table(KEY_ROWS_CHANGED),
        rows_read: table(KEY_ROWS_READ),
    }
}

/// `timeout`: seconds, over 0 and at most a week.
pub(super) fn timeout(c: &mut Checker, value: Option<&Value>) -> Option<Duration> {
    let v = value?;
    let timeout = v
        .as_f64()
        .filter(|s| *s > 0.0 && *s <= MAX_TIMEOUT_SECONDS)
        .and_then(|s| Duration::try_from_secs_f64(s).ok());
    if timeout.is_none() {
        c.err(
            "timeout",
            format!(
                "must be a number of seconds greater than 0 and at most \
                 {MAX_TIMEOUT_SECONDS} (a week), not {v}"
            ),
        );
    }
    timeout
}

/// `provisioning`: `auto` (default), `clone` (the fast path or a failed run, never a
/// reload) or `reload`. Every engine has a fast path; whether this host can take it
/// (MariaDB) is known only when a run starts.
pub(super) fn provisioning(c: &mut Checker, value: Option<&Value>) -> Provisioning {
    let Some(value) = value else {
        return Provisioning::Auto;
    };
    match value.as_str().and_then(Provisioning::parse) {
        Some(p) => p,
        None => {
            c.err(
                "provisioning",
                format!(
                    "must be one of {}, not {value}",
                    Provisioning::NAMES.join(", ")
                ),
            );
            Provisioning::Auto
        }
    }
}

/// `cache`: `cold` (default) or `warm` (MySQL/MariaDB only).
pub(super) fn cache(c: &mut Checker, value: Option<&Value>, engine: Engine) -> Cache {
    let Some(value) = value else {
        return Cache::Cold;
    };
    match value.as_str().and_then(Cache::parse) {
        Some(Cache::Warm) if !matches!(engine, Engine::MariaDb | Engine::MySql) => {
            c.err(
                "cache",
                format!(
                    "\"warm\" is only available for MySQL/MariaDB, not {}",
                    engine.name()
                ),
            );
            Cache::Cold
        }
        Some(cache) => cache,
        None => {
            c.err(
                "cache",
                format!("must be one of {}", Cache::NAMES.join(", ")),
            );
            Cache::Cold
        }
    }
}
