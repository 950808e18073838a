//! How the dataset's run goes: `upgrade_path`, the limits, `timeout`, `provisioning`.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::dataset::check::{ref_problem, Checker};
use crate::dataset::{lock_sample_interval, Provisioning, KEY_LOCK_SAMPLE, MAX_TIMEOUT_SECONDS};
use crate::engine::Engine;
use crate::limits::{
    LimitTable, Limits, KEY_LOCK_HOLD, KEY_ROWS_CHANGED, KEY_ROWS_READ, KEY_SECONDS,
};

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
        lock_hold: table(KEY_LOCK_HOLD),
    }
}

/// `lock_sample_interval` ([`lock_sample_interval`]); the job's when absent.
pub(super) fn lock_sample(
    c: &mut Checker,
    value: Option<&Value>,
    default: Option<Duration>,
) -> Option<Duration> {
    let Some(value) = value else {
        return default;
    };
    lock_sample_interval(value).unwrap_or_else(|what| {
        c.err(KEY_LOCK_SAMPLE, what);
        default
    })
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

/// `provisioning`: `auto` (default), `clone` (only where the engine has a fast path) or
/// `reload`.
pub(super) fn provisioning(c: &mut Checker, value: Option<&Value>, engine: Engine) -> Provisioning {
    let Some(value) = value else {
        return Provisioning::Auto;
    };
    match value.as_str().and_then(Provisioning::parse) {
        Some(Provisioning::Clone) if !Provisioning::fast_path_for(engine) => {
            c.err(
                "provisioning",
                format!(
                    "\"clone\" is not available for {} (only PostgreSQL and SQLite have \
                     golden copies); use \"auto\" or \"reload\"",
                    engine.name()
                ),
            );
            Provisioning::Auto
        }
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
