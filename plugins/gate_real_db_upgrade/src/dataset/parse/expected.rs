//! `expected_version`: where the expected final schema version comes from.

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::migration::argv;
use crate::alembic::AlembicTree;
use crate::dataset::check::{join, Checker};
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

fn expected(c: &mut Checker, value: &Value, sql_mode: bool) -> Option<ExpectedVersion> {
    const KEY: &str = "expected_version";
    const CHOICES: &str = "{\"highest_numbered\": dir}, {\"alembic_heads\": dir or [dirs]}, {\"command\": argv}, {\"fixed\": \"V\"}, \"last_sql_file\" or \"unchecked\"";
    match value {
        Value::String(s) => match s.as_str() {
            "unchecked" => Some(ExpectedVersion::Unchecked),
            "last_sql_file" if sql_mode => Some(ExpectedVersion::LastSqlFile),
            "last_sql_file" => {
                c.err(KEY, "last_sql_file needs migration.sql_dir");
                None
            }
            other => {
                c.err(KEY, format!("unknown value {other:?} ({CHOICES})"));
                None
            }
        },
        Value::Object(obj) if obj.len() == 1 => {
            let (k, v) = obj.iter().next()?;
            let key = join(KEY, k);
            match k.as_str() {
                "highest_numbered" => c
                    .inner_path(&key, v, "the directory in the checkout")
                    .map(ExpectedVersion::HighestNumbered),
                "alembic_heads" => alembic_tree(c, &key, v).map(ExpectedVersion::AlembicHeads),
                "command" if sql_mode => {
                    c.err(&key, "only used with `migration.tool`, not with `sql_dir`");
                    None
                }
                "command" => argv(c, &key, v).map(ExpectedVersion::Command),
                "fixed" => {
                    let s = match v {
                        Value::Number(n) => Some(n.to_string()),
                        other => c.nonempty(&key, other),
                    };
                    s.map(ExpectedVersion::Fixed)
                }
                other => {
                    c.err(&key, format!("unknown kind {other:?} ({CHOICES})"));
                    None
                }
            }
        }
        other => {
            c.err(KEY, format!("must be one of {CHOICES}, not {other}"));
            None
        }
    }
}

/// `dir`, `[dirs]`, or `{"version_locations": dir or [dirs], "recursive": bool}`.
fn alembic_tree(c: &mut Checker, key: &str, value: &Value) -> Option<AlembicTree> {
    let (locations, recursive) = match value {
        Value::Object(obj) => {
            c.unknown_keys(key, obj, &["version_locations", "recursive"]);
            let recursive = match obj.get("recursive") {
                None => Some(true),
                Some(Value::Bool(b)) => Some(*b),
                Some(other) => {
                    c.err(
                        &join(key, "recursive"),
                        format!("must be true or false, not {other}"),
                    );
                    None
                }
            };
            let at = join(key, "version_locations");
            let locations = match obj.get("version_locations") {
                None => {
                    c.err(&at, "required");
                    None
                }
                Some(v) => locations(c, &at, v),
            };
            (locations, recursive)
        }
        other => (locations(c, key, other), Some(true)),
    };
    Some(AlembicTree {
        locations: locations?,
        recursive: recursive?,
    })
}

/// A folder of the checkout, or a non-empty list of them.
fn locations(c: &mut Checker, key: &str, value: &Value) -> Option<Vec<PathBuf>> {
    const WHAT: &str = "a folder of the checkout";
    match value {
        Value::Array(items) if items.is_empty() => {
            c.err(key, "must name at least one folder");
            None
        }
        Value::Array(items) => {
            let all: Vec<Option<PathBuf>> = items
                .iter()
                .enumerate()
                .map(|(i, v)| c.inner_path(&format!("{key}[{i}]"), v, WHAT))
                .collect();
            all.into_iter().collect()
        }
        other => c.inner_path(key, other, WHAT).map(|p| vec![p]),
    }
}
