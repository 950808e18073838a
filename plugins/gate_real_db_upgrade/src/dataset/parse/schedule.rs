//! How the dataset's run goes: `upgrade_path`, the limits, `timeout`, `provisioning`.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::dataset::check::{ref_problem, Checker};
use crate::dataset::{Provisioning, MAX_TIMEOUT_SECONDS};
use crate::engine::Engine;
use crate::limits::{
    LimitTable, Limits, KEY_LOCK_HOLD, KEY_ROWS_CHANGED, KEY_ROWS_READ, KEY_SECONDS,
};

/// The dataset key of the lock sampling interval.
pub(super) const KEY_LOCK_SAMPLE: &str = "lock_sample_interval";
/// Its default: 100 ms.
const DEFAULT_LOCK_SAMPLE: Duration = Duration::from_millis(100);
/// Its largest value, in milliseconds (a minute).
const MAX_LOCK_SAMPLE_MS: u64 = 60_000;

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

/// `lock_sample_interval`: milliseconds between two samples of the run database's locks
/// (whole, at most a minute); `0` or `false` turn the observation off; 100 ms when absent.
pub(super) fn lock_sample(c: &mut Checker, value: Option<&Value>) -> Option<Duration> {
    let Some(value) = value else {
        return Some(DEFAULT_LOCK_SAMPLE);
    };
    match value {
        Value::Bool(false) => None,
        Value::Bool(true) => Some(DEFAULT_LOCK_SAMPLE),
        v => match v.as_u64().filter(|ms| *ms <= MAX_LOCK_SAMPLE_MS) {
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
            None => {
                c.err(
                    KEY_LOCK_SAMPLE,
                    format!(
                        "must be whole milliseconds from 0 (off) to {MAX_LOCK_SAMPLE_MS}, \
                         or false (off), not {v}"
                    ),
                );
                Some(DEFAULT_LOCK_SAMPLE)
            }
        },
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
