//! `expected_version`: where the expected final schema version comes from.

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::migration::argv;
use crate::alembic::AlembicTree;
use turbo_hipster_sdk::config::{index, key, says, Checker, Unknown};

use crate::dataset::check::inner_path;
use crate::version::ExpectedVersion;

/// `expected_version`; default `last_sql_file` with `migration.sql_dir` (as written, even if
/// `migration` has errors of its own), else `unchecked`.
pub(super) fn expected_version(
    c: &mut Checker,
    obj: &Map<String, Value>,
) -> Option<ExpectedVersion> {
    let sql_mode = obj
        .get("migration")
        .is_some_and(|m| m.get("sql_dir").is_some());
    match obj.get("expected_version") {
        None if sql_mode => Some(ExpectedVersion::LastSqlFile),
        None => Some(ExpectedVersion::Unchecked),
        Some(v) => expected(c, v, sql_mode),
    }
}

/// What `expected_version` may be, as its error lists them.
const CHOICES: [&str; 6] = [
    "{\"highest_numbered\": dir}",
    "{\"alembic_heads\": dir or [dirs]}",
    "{\"command\": argv}",
    "{\"fixed\": \"V\"}",
    "\"last_sql_file\"",
    "\"unchecked\"",
];
/// The keys of an `expected_version` object (it holds exactly one).
const KINDS: [&str; 4] = ["highest_numbered", "alembic_heads", "command", "fixed"];

fn expected(c: &mut Checker, value: &Value, sql_mode: bool) -> Option<ExpectedVersion> {
    const KEY: &str = "expected_version";
    match value {
        Value::String(s) if s == "unchecked" => Some(ExpectedVersion::Unchecked),
        Value::String(s) if s == "last_sql_file" && sql_mode => Some(ExpectedVersion::LastSqlFile),
        Value::String(s) if s == "last_sql_file" => {
            c.error(KEY, "last_sql_file needs migration.sql_dir");
            None
        }
        Value::Object(obj) if obj.len() == 1 => {
            let (k, v) = obj.iter().next()?;
            kind(c, &key(KEY, k), k, v, sql_mode)
        }
        other => {
            c.error(KEY, says::one_of(&CHOICES, says::show(other)));
            None
        }
    }
}

/// The one key `k` (at `at`) of an `expected_version` object, with its value.
fn kind(c: &mut Checker, at: &str, k: &str, v: &Value, sql_mode: bool) -> Option<ExpectedVersion> {
    match k {
        "highest_numbered" => inner_path(c, at, v, "the directory in the checkout")
            .map(ExpectedVersion::HighestNumbered),
        "alembic_heads" => alembic_tree(c, at, v).map(ExpectedVersion::AlembicHeads),
        "command" if sql_mode => {
            c.error(at, "only used with `migration.tool`, not with `sql_dir`");
            None
        }
        "command" => argv(c, at, v).map(ExpectedVersion::Command),
        "fixed" => {
            let s = match v {
                Value::Number(n) => Some(n.to_string()),
                other => c.nonempty(at, other),
            };
            s.map(ExpectedVersion::Fixed)
        }
        _ => {
            c.error(at, says::unknown_key(&KINDS));
            None
        }
    }
}

/// `dir`, `[dirs]`, or `{"version_locations": dir or [dirs], "recursive": bool}`.
fn alembic_tree(c: &mut Checker, at: &str, value: &Value) -> Option<AlembicTree> {
    let (locations, recursive) = match value {
        Value::Object(obj) => {
            let known = ["version_locations", "recursive"];
            c.unknown_keys(at, obj, &known, Unknown::WarnUnlessComment);
            let recursive = match obj.get("recursive") {
                None => Some(true),
                Some(v) => c.boolean(&key(at, "recursive"), v),
            };
            let at = key(at, "version_locations");
            let locations = match obj.get("version_locations") {
                None => {
                    c.required(&at, "");
                    None
                }
                Some(v) => locations(c, &at, v),
            };
            (locations, recursive)
        }
        other => (locations(c, at, other), Some(true)),
    };
    Some(AlembicTree {
        locations: locations?,
        recursive: recursive?,
    })
}

/// A folder of the checkout, or a non-empty list of them.
fn locations(c: &mut Checker, at: &str, value: &Value) -> Option<Vec<PathBuf>> {
    const WHAT: &str = "a folder of the checkout";
    match value {
        Value::Array(items) if items.is_empty() => {
            c.error(at, says::EMPTY);
            None
        }
        Value::Array(items) => {
            let all: Vec<Option<PathBuf>> = items
                .iter()
                .enumerate()
                .map(|(i, v)| inner_path(c, &index(at, i), v, WHAT))
                .collect();
            all.into_iter().collect()
        }
        other => inner_path(c, at, other, WHAT).map(|p| vec![p]),
    }
}
