//! `migration`: the project's tool (`tool`, `env`, `templates`, `log_format`) or a directory
//! of SQL files (`sql_dir`, `version_table`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use turbo_hipster_sdk::config::{index, key, says, Checker, Unknown};

use crate::dataset::check::{inner_path, is_identifier, is_safe_name, placeholders};
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
        let what = says::expected("an object with `tool` or `sql_dir`", value);
        c.error("migration", what);
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
        Unknown::WarnUnlessComment,
    );
    match (obj.get("tool"), obj.get("sql_dir")) {
        (Some(_), Some(_)) => {
            c.error("migration", "give either `tool` or `sql_dir`, not both");
            None
        }
        (None, None) => {
            c.error("migration", "needs `tool` (an argv list) or `sql_dir`");
            None
        }
        (None, Some(sql_dir)) => sql_files(c, obj, sql_dir),
        (Some(tool), None) => tool_mode(c, obj, tool, dir),
    }
}

/// `sql_dir` and `version_table`.
fn sql_files(c: &mut Checker, obj: &Map<String, Value>, sql_dir: &Value) -> Option<Migration> {
    for k in ["env", "templates", "log_format"] {
        if obj.contains_key(k) {
            c.error(
                &key("migration", k),
                "only used with `tool`, not with `sql_dir`",
            );
        }
    }
    let dir = inner_path(
        c,
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
        c.error(
            "migration.version_table",
            format!("must be a table name [A-Za-z_][A-Za-z0-9_]*, got {t:?}"),
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
        c.error(
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
        let what = "an argv list of strings (e.g. [\"alembic\", \"upgrade\", \"head\"])";
        c.error(at, says::expected(what, value));
        return None;
    };
    if items.is_empty() {
        c.error(at, says::EMPTY);
        return None;
    }
    let mut argv = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let key = index(at, i);
        match c.string(&key, item) {
            Some(s) if i == 0 && s.trim().is_empty() => {
                c.error(&key, "the program must not be empty");
                ok = false;
            }
            Some(s) => {
                placeholders(c, &key, s);
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
        c.error(
            "migration.env",
            says::expected("an object of strings", value),
        );
        return None;
    };
    let mut ok = true;
    for (name, v) in obj {
        let key = key("migration.env", name);
        if !is_identifier(name) {
            c.error(&key, "not a valid environment variable name");
            ok = false;
            continue;
        }
        match c.string(&key, v) {
            Some(s) => {
                placeholders(c, &key, s);
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
        let what = "an object {\"<output name>\": \"<template file>\"}";
        c.error("migration.templates", says::expected(what, value));
        return None;
    };
    let mut ok = true;
    for (output, template) in obj {
        let key = key("migration.templates", output);
        if !is_safe_name(output) {
            c.error(
                &key,
                "the output must be a plain file name ([A-Za-z0-9._-]) in the work dir",
            );
            ok = false;
        }
        match inner_path(c, &key, template, "the template") {
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
            c.error(key, format!("not a valid regex: {msg}"));
            None
        }
    }
}

/// What `log_format` may be, as its error lists them.
const LOG_FORMATS: [&str; 3] = ["sqlalchemy-migrate", "alembic", "{\"start\": regex, ...}"];

pub(super) fn log_format(c: &mut Checker, value: &Value) -> Option<LogFormat> {
    const KEY: &str = "migration.log_format";
    match value {
        Value::Object(obj) => regex_format(c, obj),
        Value::String(s) if s == "sqlalchemy-migrate" => Some(LogFormat::SqlalchemyMigrate),
        Value::String(s) if s == "alembic" => Some(LogFormat::Alembic),
        other => {
            c.error(KEY, says::one_of(&LOG_FORMATS, says::show(other)));
            None
        }
    }
}

/// `{"start": re, "end": re?, "final": re?}`.
fn regex_format(c: &mut Checker, obj: &Map<String, Value>) -> Option<LogFormat> {
    const KEY: &str = "migration.log_format";
    c.unknown_keys(
        KEY,
        obj,
        &["start", "end", "final"],
        Unknown::WarnUnlessComment,
    );
    let start = match obj.get("start") {
        None => {
            c.required(&key(KEY, "start"), "");
            None
        }
        Some(v) => compile(c, "migration.log_format.start", v).and_then(|r| {
            let names: BTreeSet<&str> = r.capture_names().flatten().collect();
            if names.contains("from") && names.contains("to") {
                Some(r)
            } else {
                c.error(
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
                c.error(
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
        assert!(!c.has_errors());
        let mut c = Checker::bare();
        assert!(log_format(
            &mut c,
            &json!({"start": "^Applying (\\d+)", "end": "(", "final": "no group", "x": 1})
        )
        .is_none());
        let (errors, warnings) = c.into_lines();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("migration.log_format.start: needs named groups"));
        assert!(errors[1].starts_with("migration.log_format.end: not a valid regex: "));
        assert!(!errors[1].contains('\n'));
        assert!(errors[2].starts_with("migration.log_format.final: needs a group"));
        assert_eq!(warnings, ["migration.log_format.x: unknown key, ignored"]);
    }

    #[test]
    fn a_log_format_name_is_one_of_the_known() {
        let mut c = Checker::bare();
        assert!(log_format(&mut c, &json!("flyway")).is_none());
        assert!(log_format(&mut c, &json!("{\"start\": regex, ...}")).is_none());
        assert!(matches!(
            log_format(&mut c, &json!("alembic")),
            Some(LogFormat::Alembic)
        ));
        let what = "must be one of sqlalchemy-migrate, alembic, {\"start\": regex, ...}, got";
        assert_eq!(
            c.into_lines().0,
            [
                format!("migration.log_format: {what} \"flyway\""),
                format!("migration.log_format: {what} \"{{\\\"start\\\": regex, ...}}\""),
            ]
        );
    }
}
