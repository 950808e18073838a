//! One dataset file's keys, read section by section. Each section reports its own problems to
//! the [`Checker`] and gives `None` when its value is unusable; the dataset is made only when
//! every section gave one (so every problem of the file is reported at once).

mod expected;
mod identity;
mod migration;
mod schedule;
mod seed;
mod server;

use std::path::Path;

use serde_json::{Map, Value};
use turbo_hipster_sdk::config::{Checker, Unknown};

use super::{Dataset, DatasetDefaults};
use crate::limits::{
    KEY_LOCK_HOLD, KEY_REWRITE_BYTES, KEY_ROWS_CHANGED, KEY_ROWS_READ, KEY_SECONDS, KEY_WAL_BYTES,
};

const TOP_KEYS: &[&str] = &[
    "project",
    "engine",
    "type",
    "connection",
    "db_user",
    "db_pass",
    "database",
    "seed_data",
    "seed_format",
    "logging_conf",
    "migration",
    "expected_version",
    "upgrade_path",
    KEY_SECONDS,
    KEY_ROWS_CHANGED,
    KEY_ROWS_READ,
    KEY_LOCK_HOLD,
    KEY_REWRITE_BYTES,
    KEY_WAL_BYTES,
    super::KEY_LOCK_SAMPLE,
    super::KEY_COUNT_WORK,
    "timeout",
    "provisioning",
    "cache",
];

/// The dataset `name` of the file `source` (its JSON object `obj`), relative paths resolved
/// against `dir`.
pub(super) fn dataset(
    c: &mut Checker,
    obj: &Map<String, Value>,
    source: &Path,
    name: &str,
    dir: &Path,
    defaults: &DatasetDefaults,
) -> Option<Dataset> {
    c.unknown_keys("", obj, TOP_KEYS, Unknown::WarnUnlessComment);
    identity::name(c, name);
    let project = identity::project(c, obj);
    let engine = server::engine(c, obj, defaults.engine);
    let connection = server::connection(c, obj, &defaults.connection);
    let database = server::database(c, obj, name);
    let seed = seed::seed(c, obj, dir, engine);
    let logging_conf = seed::logging_conf(c, obj, dir);
    let migration = migration::migration(c, obj.get("migration"), dir);
    let expected_version = expected::expected_version(c, obj);
    let upgrade_path = schedule::upgrade_path(c, obj.get("upgrade_path"));
    let limits = schedule::limits(c, obj);
    let timeout = schedule::timeout(c, obj.get("timeout"));
    let provisioning = schedule::provisioning(c, obj.get("provisioning"));
    let cache = schedule::cache(c, obj.get("cache"), engine);
    let lock_sample =
        schedule::lock_sample(c, obj.get(super::KEY_LOCK_SAMPLE), defaults.lock_sample);
    let count_work = obj
        .get(super::KEY_COUNT_WORK)
        .map_or(Some(true), |v| c.boolean(super::KEY_COUNT_WORK, v))
        .unwrap_or(true);
    Some(Dataset {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        source: source.to_path_buf(),
        project: project?,
        engine,
        connection,
        database: database?,
        seed: seed?,
        logging_conf,
        migration: migration?,
        expected_version: expected_version?,
        upgrade_path,
        limits,
        timeout,
        provisioning,
        cache,
        lock_sample,
        count_work,
    })
}
