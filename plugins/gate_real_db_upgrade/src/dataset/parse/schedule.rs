//! How the dataset's run goes: `upgrade_path`, the limits, `timeout`, `provisioning`, `cache`.

use std::time::Duration;

use serde_json::{Map, Value};

use turbo_hipster_sdk::config::{index, Checker};

use crate::dataset::check::ref_problem;
use crate::dataset::{lock_sample_interval, Cache, Provisioning, KEY_LOCK_SAMPLE, TIMEOUT_RANGE};
use crate::engine::Engine;
use crate::limits::{
    LimitTable, Limits, KEY_LOCK_HOLD, KEY_REWRITE_BYTES, KEY_ROWS_CHANGED, KEY_ROWS_READ,
    KEY_SECONDS, KEY_WAL_BYTES,
};

/// `upgrade_path`: git refs to migrate through first, in order.
pub(super) fn upgrade_path(c: &mut Checker, value: Option<&Value>) -> Vec<String> {
    let mut upgrade_path = Vec::new();
    let Some(refs) = value.and_then(|v| c.list("upgrade_path", v)) else {
        return upgrade_path;
    };
    for (i, r) in refs.iter().enumerate() {
        let key = index("upgrade_path", i);
        let Some(s) = c.string(&key, r) else {
            continue;
        };
        match ref_problem(s) {
            Some(problem) => c.error(&key, problem),
            None => upgrade_path.push(s.to_string()),
        }
    }
    upgrade_path
}

/// The limit tables ([`crate::limits`]): one line per table.
pub(super) fn limits(c: &mut Checker, obj: &Map<String, Value>) -> Limits {
    let mut table = |key: &str| LimitTable::from_json(c, key, obj.get(key)?);
    Limits {
        seconds: table(KEY_SECONDS).unwrap_or_default(),
        rows_changed: table(KEY_ROWS_CHANGED),
        rows_read: table(KEY_ROWS_READ),
        lock_hold: table(KEY_LOCK_HOLD),
        rewrite_bytes: table(KEY_REWRITE_BYTES),
        wal_bytes: table(KEY_WAL_BYTES),
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
        c.error(KEY_LOCK_SAMPLE, what);
        default
    })
}

/// `timeout`: seconds, over 0 and at most a week (as the job's).
pub(super) fn timeout(c: &mut Checker, value: Option<&Value>) -> Option<Duration> {
    c.seconds("timeout", value?, TIMEOUT_RANGE)
}

/// `provisioning`: `auto` (default), `clone` (the fast path or a failed run, never a
/// reload) or `reload`. Every engine has a fast path; whether this host can take it
/// (MariaDB) is known only when a run starts.
pub(super) fn provisioning(c: &mut Checker, value: Option<&Value>) -> Provisioning {
    let Some(value) = value else {
        return Provisioning::Auto;
    };
    match c.one_of("provisioning", value, &Provisioning::CHOICES) {
        Some(p) => p,
        None => Provisioning::Auto,
    }
}

/// `cache`: `cold` (default) or `warm` (MySQL/MariaDB only).
pub(super) fn cache(c: &mut Checker, value: Option<&Value>, engine: Engine) -> Cache {
    let Some(value) = value else {
        return Cache::Cold;
    };
    match c.one_of("cache", value, &Cache::CHOICES) {
        Some(Cache::Warm) if !matches!(engine, Engine::MariaDb | Engine::MySql) => {
            c.error(
                "cache",
                format!(
                    "\"warm\" is only available for MySQL/MariaDB, not {}",
                    engine.name()
                ),
            );
            Cache::Cold
        }
        Some(cache) => cache,
        None => Cache::Cold,
    }
}
