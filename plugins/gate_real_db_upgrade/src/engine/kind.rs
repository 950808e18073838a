//! Which database engine a dataset runs on, and the facts about it that the rest of the
//! plugin needs (names, default port and user).

use serde_json::Value;
use turbo_hipster_sdk::config::{says, Checker};

/// The database engine a dataset runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// MySQL (the original's `type: mysql`, also `percona`).
    MySql,
    /// MariaDB (speaks the MySQL protocol).
    MariaDb,
    /// PostgreSQL.
    PostgreSql,
    /// SQLite: a file, no server needed.
    Sqlite,
}

impl Engine {
    /// The engine for a name as written in `engine` or the original's `type` (case-insensitive):
    /// `mysql`/`percona`, `mariadb`, `postgresql`/`postgres`, `sqlite`.
    pub fn from_name(name: &str) -> Option<Engine> {
        match name.trim().to_ascii_lowercase().as_str() {
            "mysql" | "percona" => Some(Engine::MySql),
            "mariadb" => Some(Engine::MariaDb),
            "postgresql" | "postgres" => Some(Engine::PostgreSql),
            "sqlite" => Some(Engine::Sqlite),
            _ => None,
        }
    }

    /// The names [`Engine::from_name`] takes, as a configuration error lists them.
    pub const NAMES: [&'static str; 6] = [
        "mysql",
        "percona",
        "mariadb",
        "postgresql",
        "postgres",
        "sqlite",
    ];

    /// The engine `value` names at `path` (a job config's `engine`, a dataset's `engine` or
    /// `type`), else an error listing [`Engine::NAMES`].
    pub fn check(c: &mut Checker, path: &str, value: &Value) -> Option<Engine> {
        let engine = value.as_str().and_then(Engine::from_name);
        if engine.is_none() {
            c.error(path, says::one_of(&Engine::NAMES, says::show(value)));
        }
        engine
    }

    /// Its canonical name (`mysql`, `mariadb`, `postgresql`, `sqlite`).
    pub fn name(self) -> &'static str {
        match self {
            Engine::MySql => "mysql",
            Engine::MariaDb => "mariadb",
            Engine::PostgreSql => "postgresql",
            Engine::Sqlite => "sqlite",
        }
    }

    /// A human name for messages: `MySQL`, `MariaDB`, `PostgreSQL`, `SQLite`.
    pub fn label(self) -> &'static str {
        match self {
            Engine::MySql => "MySQL",
            Engine::MariaDb => "MariaDB",
            Engine::PostgreSql => "PostgreSQL",
            Engine::Sqlite => "SQLite",
        }
    }

    /// The server's default TCP port (`None` for SQLite).
    pub fn default_port(self) -> Option<u16> {
        match self {
            Engine::MySql | Engine::MariaDb => Some(3306),
            Engine::PostgreSql => Some(5432),
            Engine::Sqlite => None,
        }
    }

    /// The user used when the connection names none (`None` for SQLite).
    pub fn default_user(self) -> Option<&'static str> {
        match self {
            Engine::MySql | Engine::MariaDb => Some("root"),
            Engine::PostgreSql => Some("postgres"),
            Engine::Sqlite => None,
        }
    }

    /// Whether the engine is a server reached over the network or a socket (not SQLite).
    pub fn has_server(self) -> bool {
        self.default_port().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_to_engine_mapping() {
        for (name, engine) in [
            ("mysql", Engine::MySql),
            ("percona", Engine::MySql),
            ("MySQL", Engine::MySql),
            ("mariadb", Engine::MariaDb),
            ("postgres", Engine::PostgreSql),
            ("postgresql", Engine::PostgreSql),
            ("sqlite", Engine::Sqlite),
        ] {
            assert_eq!(Engine::from_name(name), Some(engine), "{name}");
        }
        assert_eq!(Engine::from_name("oracle"), None);
    }
}
