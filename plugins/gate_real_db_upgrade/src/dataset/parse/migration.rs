//! `migration`: the project's tool (`tool`, `env`, `templates`, `log_format`) or a directory
//! of SQL files (`sql_dir`, `version_table`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::dataset::check::{is_identifier, is_safe_name, join, Checker};
use crate::dataset::{Migration, DEFAULT_VERSION_TABLE};
use crate::logparse::LogFormat;

/// `migration`; a dataset without it (the original's format) gets an empty tool argv, which
/// [`crate::dataset::Dataset::runnable`] refuses.
pub(super) fn migration(c: &mut Checker, value: Option<&Value>, dir: &Path) -> Option<Migration> {
    match value {
        None => Some(Migration::Tool {
            argv: Vec::new(),
            env: BTreeMap::new(),
            templates: Vec::new(),
            log_format: LogFormat::SqlalchemyMigrate,
        }),
        Some(v) => migration_obj(c, v, dir),
    }
}

fn migration_obj(c: &mut Checker, value: &Value, dir: &Path) -> Option<Migration> {
    let Some(obj) = value.as_object() else {
        c.err(
            "migration",
            format!("must be an object with `tool` or `sql_dir`, not {value}"),
        );
        return None;
    };
    c.unknown_keys(
        "migration",
        obj,
        &[
            "tool",
            "env",
            "templates",
            "log_format",
            "sql_dir",
            "version_table",
        ],
    );
    match (obj.get("tool"), obj.get("sql_dir")) {
        (Some(_), Some(_)) => {
            c.err("migration", "give either `tool` or `sql_dir`, not both");
            None
        }
        (None, None) => {
            c.err("migration", "needs `tool` (an argv list) or `sql_dir`");
            None
        }
        (None, Some(sql_dir)) => sql_files(c, obj, sql_dir),
        (Some(tool), None) => tool_mode(c, obj, tool, dir),
    }
}

/// `sql_dir` and `version_table`.
fn sql_files(c: &mut Checker, obj: &Map<String, Value>, sql_dir: &Value) -> Option<Migration> {
    for key in ["env", "templates", "log_format"] {
        if obj.contains_key(key) {
            c.err(
                &join("migration", key),
                "only used with `tool`, not with `sql_dir`",
            );
        }
    }
    let dir = c.inner_path(
        "migration.sql_dir",
        sql_dir,
        "the SQL directory in the checkout",
    );
    let version_table = match obj.get("version_table") {
        None => Some(DEFAULT_VERSION_TABLE.to_string()),
        Some(v) => version_table(c, v),
    };
    Some(Migration::SqlFiles {
        dir: dir?,
        version_table: version_table?,
    })
}

fn version_table(c: &mut Checker, value: &Value) -> Option<String> {
    let t = c.nonempty("migration.version_table", value)?;
    if is_identifier(&t) && t.len() <= 63 {
        Some(t)
    } else {
        c.err(
            "migration.version_table",
            format!("must be a table name [A-Za-z_][A-Za-z0-9_]*, not {t:?}"),
        );
        None
    }
}

/// `tool`, `env`, `templates` and `log_format`.
fn tool_mode(
    c: &mut Checker,
    obj: &Map<String, Value>,
    tool: &Value,
    dir: &Path,
) -> Option<Migration> {
    if obj.contains_key("version_table") {
        c.err(
            "migration.version_table",
            "only used with `sql_dir`, not with `tool`",
        );
    }
    let argv = argv(c, "migration.tool", tool);
    let env = env(c, obj.get("env"));
    let templates = templates(c, obj.get("templates"), dir);
    let log_format = match obj.get("log_format") {
        None => Some(LogFormat::SqlalchemyMigrate),
        Some(v) => log_format(c, v),
    };
    Some(Migration::Tool {
        argv: argv?,
        env: env?,
        templates: templates?,
        log_format: log_format?,
    })
}

pub(super) fn argv(c: &mut Checker, at: &str, value: &Value) -> Option<Vec<String>> {
    let Some(items) = value.as_array() else {
        c.err(
            at,
            format!("must be an argv list of strings, e.g. [\"alembic\", \"upgrade\", \"head\"], not {value}"),
        );
        return None;
    };
    if items.is_empty() {
        c.err(at, "must not be empty");
        return None;
    }
    let mut argv = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let key = format!("{at}[{i}]");
        match c.string(&key, item) {
            Some(s) if i == 0 && s.trim().is_empty() => {
                c.err(&key, "the program must not be empty");
                ok = false;
            }
            Some(s) => {
                c.placeholders(&key, s);
                argv.push(s.to_string());
            }
            None => ok = false,
        }
    }
    ok.then_some(argv)
}

fn env(c: &mut Checker, value: Option<&Value>) -> Option<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    let Some(value) = value else {
        return Some(env);
    };
    let Some(obj) = value.as_object() else {
        c.err(
            "migration.env",
            format!("must be an object of strings, not {value}"),
        );
        return None;
    };
    let mut ok = true;
    for (name, v) in obj {
        let key = format!("migration.env.{name}");
        if !is_identifier(name) {
            c.err(&key, "not a valid environment variable name");
            ok = false;
            continue;
        }
        match c.string(&key, v) {
            Some(s) => {
                c.placeholders(&key, s);
                env.insert(name.clone(), s.to_string());
            }
            None => ok = false,
        }
    }
    ok.then_some(env)
}

fn templates(c: &mut Checker, value: Option<&Value>, dir: &Path) -> Option<Vec<(PathBuf, String)>> {
    let mut templates = Vec::new();
    let Some(value) = value else {
        return Some(templates);
    };
    let Some(obj) = value.as_object() else {
        c.err(
            "migration.templates",
            format!("must be an object {{\"<output name>\": \"<template file>\"}}, not {value}"),
        );
        return None;
    };
    let mut ok = true;
    for (output, template) in obj {
        let key = format!("migration.templates.{output}");
        if !is_safe_name(output) {
            c.err(
                &key,
                "the output must be a plain file name ([A-Za-z0-9._-]) in the work dir",
            );
            ok = false;
        }
        match c.inner_path(&key, template, "the template") {
            Some(t) => templates.push((dir.join(t), output.clone())),
            None => ok = false,
        }
    }
    ok.then_some(templates)
}

fn compile(c: &mut Checker, key: &str, value: &Value) -> Option<regex::Regex> {
    let s = c.nonempty(key, value)?;
    match regex::Regex::new(&s) {
        Ok(r) => Some(r),
        Err(e) => {
            // The regex crate's message spans several lines: keep one.
            let msg = e.to_string().replace('\n', " ");
            c.err(key, format!("not a valid regex: {msg}"));
            None
        }
    }
}

pub(super) fn log_format(c: &mut Checker, value: &Value) -> Option<LogFormat> {
    const KEY: &str = "migration.log_format";
    match value {
        Value::String(s) => match s.as_str() {
            "sqlalchemy-migrate" => Some(LogFormat::SqlalchemyMigrate),
            "alembic" => Some(LogFormat::Alembic),
            other => {
                c.err(
                    KEY,
                    format!("unknown format {other:?} (\"sqlalchemy-migrate\", \"alembic\" or {{\"start\": regex, ...}})"),
                );
                None
            }
        },
        Value::Object(obj) => regex_format(c, obj),
        other => {
            c.err(
                KEY,
                format!("must be a format name or an object of regexes, not {other}"),
            );
            None
        }
    }
}

/// `{"start": re, "end": re?, "final": re?}`.
fn regex_format(c: &mut Checker, obj: &Map<String, Value>) -> Option<LogFormat> {
    const KEY: &str = "migration.log_format";
    c.unknown_keys(KEY, obj, &["start", "end", "final"]);
    let start = match obj.get("start") {
        None => {
            c.err(&join(KEY, "start"), "required");
            None
        }
        Some(v) => compile(c, "migration.log_format.start", v).and_then(|r| {
            let names: BTreeSet<&str> = r.capture_names().flatten().collect();
            if names.contains("from") && names.contains("to") {
                Some(r)
            } else {
                c.err(
                    "migration.log_format.start",
                    "needs named groups (?P<from>...) and (?P<to>...)",
                );
                None
            }
        }),
    };
    let end = match obj.get("end") {
        None => Some(None),
        Some(v) => compile(c, "migration.log_format.end", v).map(Some),
    };
    let final_version = match obj.get("final") {
        None => Some(None),
        Some(v) => compile(c, "migration.log_format.final", v).and_then(|r| {
            if r.captures_len() > 1 {
                Some(Some(r))
            } else {
                c.err(
                    "migration.log_format.final",
                    "needs a group for the version ((?P<version>...))",
                );
                None
            }
        }),
    };
    Some(LogFormat::Regex {
        start: start?,
        end: end?,
        final_version: final_version?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn regex_log_format_validation() {
        let mut c = Checker::bare();
        assert!(log_format(
            &mut c,
            &json!({"start": "^Applying (?P<from>\\d*) (?P<to>\\d+)", "end": "OK$", "final": "at (?P<version>\\d+)"})
        )
        .is_some());
        assert!(c.errors.is_empty());
        let mut c = Checker::bare();
        assert!(log_format(
            &mut c,
            &json!({"start": "^Applying (\\d+)", "end": "(", "final": "no group", "x": 1})
        )
        .is_none());
        assert_eq!(c.errors.len(), 3, "{:?}", c.errors);
        assert!(c.errors[0].starts_with("migration.log_format.start: needs named groups"));
        assert!(c.errors[1].starts_with("migration.log_format.end: not a valid regex: "));
        assert!(!c.errors[1].contains('\n'));
        assert!(c.errors[2].starts_with("migration.log_format.final: needs a group"));
        assert_eq!(
            c.warnings,
            vec!["migration.log_format.x: unknown key, ignored".to_string()]
        );
    }
}
