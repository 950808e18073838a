//! How to reach a database server: a dataset's `connection` (with the original's `db_user`
//! and `db_pass`) over the job config's `connection`, field by field. Both are read by
//! [`Connection::from_json`], with the same rules and messages.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// How to reach the database server (ignored for SQLite).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connection {
    /// Host name; default 127.0.0.1 unless a socket is given.
    pub host: Option<String>,
    /// Port; default 3306 / 5432.
    pub port: Option<u16>,
    /// Unix socket path (MySQL/MariaDB socket file, or PostgreSQL socket directory).
    pub socket: Option<PathBuf>,
    /// User (the original's `db_user`).
    pub user: Option<String>,
    /// Password (the original's `db_pass`).
    pub password: Option<String>,
}

/// The fields of a `connection` object.
const FIELDS: [&str; 5] = ["host", "port", "socket", "user", "password"];

impl Connection {
    /// This connection with each missing field taken from `fallback`.
    pub fn or_fallback(&self, fallback: &Connection) -> Connection {
        Connection {
            host: self.host.clone().or_else(|| fallback.host.clone()),
            port: self.port.or(fallback.port),
            socket: self.socket.clone().or_else(|| fallback.socket.clone()),
            user: self.user.clone().or_else(|| fallback.user.clone()),
            password: self.password.clone().or_else(|| fallback.password.clone()),
        }
    }

    /// Reads a `connection` object as written in a dataset or a job config: `host` (no
    /// whitespace), `port` (1-65535), `socket` (an absolute path), `user` (not empty),
    /// `password` (any string).
    ///
    /// # Errors
    /// Every problem, one line each, as `<key path>: <what>` (`key` is the object's own path,
    /// e.g. `connection`); unknown fields are not errors but come back in the `Ok` warnings.
    pub fn from_json(key: &str, value: &Value) -> Result<(Connection, Vec<String>), Vec<String>> {
        let mut read = Reader {
            path: key,
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        let connection = read.connection(value);
        if read.errors.is_empty() {
            Ok((connection, read.warnings))
        } else {
            Err(read.errors)
        }
    }
}

/// Collects the problems of one `connection` object.
struct Reader<'a> {
    path: &'a str,
    errors: Vec<String>,
    warnings: Vec<String>,
}

impl Reader<'_> {
    fn connection(&mut self, value: &Value) -> Connection {
        let Some(obj) = value.as_object() else {
            self.errors.push(format!(
                "{}: must be an object {{host, port, socket, user, password}}, not {value}",
                self.path
            ));
            return Connection::default();
        };
        self.unknown_keys(obj);
        Connection {
            host: obj.get("host").and_then(|v| self.host(v)),
            port: obj.get("port").and_then(|v| self.port(v)),
            socket: obj.get("socket").and_then(|v| self.socket(v)),
            user: obj.get("user").and_then(|v| self.nonempty("user", v)),
            password: obj
                .get("password")
                .and_then(|v| self.string("password", v))
                .map(str::to_string),
        }
    }

    fn err(&mut self, field: &str, what: impl std::fmt::Display) {
        self.errors.push(format!("{}.{field}: {what}", self.path));
    }

    fn unknown_keys(&mut self, obj: &Map<String, Value>) {
        for key in obj.keys() {
            if !key.starts_with('_') && !FIELDS.contains(&key.as_str()) {
                let line = format!("{}.{key}: unknown key, ignored", self.path);
                self.warnings.push(line);
            }
        }
    }

    fn string<'v>(&mut self, field: &str, value: &'v Value) -> Option<&'v str> {
        let s = value.as_str();
        if s.is_none() {
            self.err(field, format!("must be a string, not {value}"));
        }
        s
    }

    fn nonempty(&mut self, field: &str, value: &Value) -> Option<String> {
        let s = self.string(field, value)?;
        if s.trim().is_empty() {
            self.err(field, "must not be empty");
            return None;
        }
        Some(s.to_string())
    }

    fn host(&mut self, value: &Value) -> Option<String> {
        let h = self.nonempty("host", value)?;
        if h.chars().any(char::is_whitespace) {
            self.err("host", format!("must not contain whitespace ({h:?})"));
            return None;
        }
        Some(h)
    }

    fn port(&mut self, value: &Value) -> Option<u16> {
        let port = value
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0);
        if port.is_none() {
            self.err(
                "port",
                format!("must be a port number 1-65535, not {value}"),
            );
        }
        port
    }

    fn socket(&mut self, value: &Value) -> Option<PathBuf> {
        let s = self.nonempty("socket", value)?;
        if !Path::new(&s).is_absolute() {
            self.err("socket", format!("must be an absolute path, not {s:?}"));
            return None;
        }
        Some(PathBuf::from(s))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn connection_fallback_field_by_field() {
        let own = Connection {
            host: Some("db1".into()),
            user: Some("nova".into()),
            ..Connection::default()
        };
        let job = Connection {
            host: Some("db0".into()),
            port: Some(3307),
            user: Some("th".into()),
            password: Some("secret".into()),
            socket: None,
        };
        assert_eq!(
            own.or_fallback(&job),
            Connection {
                host: Some("db1".into()),
                port: Some(3307),
                socket: None,
                user: Some("nova".into()),
                password: Some("secret".into()),
            }
        );
    }

    #[test]
    fn connection_from_json() {
        let (conn, warnings) = Connection::from_json(
            "connection",
            &json!({"host": "h", "port": 5432, "user": "u", "password": "", "sslmode": "x", "_note": 1}),
        )
        .unwrap();
        assert_eq!(conn.host.as_deref(), Some("h"));
        assert_eq!(conn.port, Some(5432));
        assert_eq!(conn.user.as_deref(), Some("u"));
        assert_eq!(conn.password.as_deref(), Some(""));
        assert_eq!(
            warnings,
            vec!["connection.sslmode: unknown key, ignored".to_string()]
        );
        let errs = Connection::from_json(
            "connection",
            &json!({"host": "a b", "port": 70000, "socket": "rel", "user": "", "password": 1}),
        )
        .unwrap_err();
        assert_eq!(
            errs,
            vec![
                "connection.host: must not contain whitespace (\"a b\")".to_string(),
                "connection.port: must be a port number 1-65535, not 70000".to_string(),
                "connection.socket: must be an absolute path, not \"rel\"".to_string(),
                "connection.user: must not be empty".to_string(),
                "connection.password: must be a string, not 1".to_string(),
            ]
        );
        assert_eq!(
            Connection::from_json("connection", &json!([1])).unwrap_err(),
            vec![
                "connection: must be an object {host, port, socket, user, password}, not [1]"
                    .to_string()
            ]
        );
    }
}
