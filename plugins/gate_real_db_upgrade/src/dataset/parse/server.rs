//! Which server and database: `engine` / `type`, `connection` with `db_user` / `db_pass`,
//! `database`.

use serde_json::{Map, Value};

use turbo_hipster_sdk::config::{Checker, Unknown};

use crate::dataset::MAX_DATABASE_PREFIX;
use crate::engine::{Connection, Engine};

/// `engine`, else `type`, else the job's engine, else MySQL; `engine` and `type` must agree.
pub(super) fn engine(c: &mut Checker, obj: &Map<String, Value>, default: Option<Engine>) -> Engine {
    let by_engine = obj
        .get("engine")
        .and_then(|v| Engine::check(c, "engine", v));
    let by_type = obj.get("type").and_then(|v| Engine::check(c, "type", v));
    if let (Some(a), Some(b)) = (by_engine, by_type) {
        if a != b {
            c.error(
                "engine",
                format!("{} conflicts with type {}", a.name(), b.name()),
            );
        }
    }
    by_engine.or(by_type).or(default).unwrap_or(Engine::MySql)
}

/// `connection` (read like the job's, by the SDK's [`Checker::connection`]), with the
/// original's `db_user` / `db_pass`, over the job's `connection`.
pub(super) fn connection(
    c: &mut Checker,
    obj: &Map<String, Value>,
    fallback: &Connection,
) -> Connection {
    let mut connection = obj
        .get("connection")
        .and_then(|v| c.connection("connection", v, Unknown::WarnUnlessComment))
        .unwrap_or_default();
    for (key, field, slot) in [
        ("db_user", "user", &mut connection.user),
        ("db_pass", "password", &mut connection.password),
    ] {
        let Some(s) = obj.get(key).and_then(|v| c.string(key, v)) else {
            continue;
        };
        match slot {
            Some(existing) if existing != s => c.error(
                key,
                format!("conflicts with connection.{field} (give one of them)"),
            ),
            _ => *slot = Some(s.to_string()),
        }
    }
    connection.or_fallback(fallback)
}

/// `database`: the run databases' name prefix; default: the dataset's name.
pub(super) fn database(c: &mut Checker, obj: &Map<String, Value>, name: &str) -> Option<String> {
    let Some(v) = obj.get("database") else {
        let mut d: String = name
            .chars()
            .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
            .collect();
        d.truncate(MAX_DATABASE_PREFIX);
        return Some(d);
    };
    let d = c.nonempty("database", v)?;
    if d.len() <= MAX_DATABASE_PREFIX && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Some(d)
    } else {
        c.error(
            "database",
            format!("must be [A-Za-z0-9_], at most {MAX_DATABASE_PREFIX} characters, got {d:?}"),
        );
        None
    }
}
