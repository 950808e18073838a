//! Which server and database: `engine` / `type`, `connection` with `db_user` / `db_pass`,
//! `database`.

use serde_json::{Map, Value};

use crate::dataset::check::Checker;
use crate::dataset::MAX_DATABASE_PREFIX;
use crate::engine::{Connection, Engine};

/// `engine`, else `type`, else the job's engine, else MySQL; `engine` and `type` must agree.
pub(super) fn engine(c: &mut Checker, obj: &Map<String, Value>, default: Option<Engine>) -> Engine {
    let by_engine = engine_key(c, obj, "engine");
    let by_type = engine_key(c, obj, "type");
    if let (Some(a), Some(b)) = (by_engine, by_type) {
        if a != b {
            c.err(
                "engine",
                format!("{} conflicts with type {}", a.name(), b.name()),
            );
        }
    }
    by_engine.or(by_type).or(default).unwrap_or(Engine::MySql)
}

fn engine_key(c: &mut Checker, obj: &Map<String, Value>, key: &str) -> Option<Engine> {
    let s = c.nonempty(key, obj.get(key)?)?;
    let e = Engine::from_name(&s);
    if e.is_none() {
        c.err(
            key,
            format!("unknown engine {s:?} (mysql, percona, mariadb, postgresql, postgres, sqlite)"),
        );
    }
    e
}

/// `connection` (read like the job's, [`Connection::from_json`]), with the original's
/// `db_user` / `db_pass`, over the job's `connection`.
pub(super) fn connection(
    c: &mut Checker,
    obj: &Map<String, Value>,
    fallback: &Connection,
) -> Connection {
    let mut connection = match obj.get("connection") {
        Some(v) => match Connection::from_json("connection", v) {
            Ok((connection, warnings)) => {
                c.warnings_from(warnings);
                connection
            }
            Err(errors) => {
                c.errors_from(errors);
                Connection::default()
            }
        },
        None => Connection::default(),
    };
    for (key, field, slot) in [
        ("db_user", "user", &mut connection.user),
        ("db_pass", "password", &mut connection.password),
    ] {
        let Some(s) = obj.get(key).and_then(|v| c.string(key, v)) else {
            continue;
        };
        match slot {
            Some(existing) if existing != s => c.err(
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
        c.err(
            "database",
            format!("must be [A-Za-z0-9_], at most {MAX_DATABASE_PREFIX} characters, not {d:?}"),
        );
        None
    }
}
