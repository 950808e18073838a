//! The `connection` object of a dataset or a job config: how to reach a database server.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{says, Checker, Unknown};

/// The keys of a `connection` object.
pub const CONNECTION_KEYS: &[&str] = &["host", "port", "socket", "user", "password"];

/// How to reach the database server; every field may be left to a default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connection {
    /// Host name, without whitespace.
    pub host: Option<String>,
    /// TCP port, 1 to 65535.
    pub port: Option<u16>,
    /// Unix socket path, absolute (a MySQL/MariaDB socket file or a PostgreSQL socket
    /// directory).
    pub socket: Option<PathBuf>,
    /// User name, not empty.
    pub user: Option<String>,
    /// Password (may be empty).
    pub password: Option<String>,
}

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
}

impl Checker {
    /// A `connection` object `{host, port, socket, user, password}`; fields with a problem are
    /// left unset. `None` (and an error) when `value` is not an object.
    pub fn connection(
        &mut self,
        path: &str,
        value: &Value,
        unknown: Unknown,
    ) -> Option<Connection> {
        let obj = self.object(path, value)?;
        self.unknown_keys(path, obj, CONNECTION_KEYS, unknown);
        let mut conn = Connection::default();
        let field = |key: &str| obj.get(key).map(|v| (super::key(path, key), v));
        if let Some((key, v)) = field("host") {
            conn.host = self.nonempty(&key, v).and_then(|h| {
                if h.chars().any(char::is_whitespace) {
                    self.error(&key, says::whitespace(&h));
                    None
                } else {
                    Some(h)
                }
            });
        }
        if let Some((key, v)) = field("port") {
            conn.port = self.port(&key, v);
        }
        if let Some((key, v)) = field("socket") {
            conn.socket = self.nonempty(&key, v).and_then(|s| {
                if Path::new(&s).is_absolute() {
                    Some(PathBuf::from(s))
                } else {
                    self.error(&key, says::not_absolute(&s));
                    None
                }
            });
        }
        if let Some((key, v)) = field("user") {
            conn.user = self.nonempty(&key, v);
        }
        if let Some((key, v)) = field("password") {
            conn.password = self.string(&key, v).map(str::to_string);
        }
        Some(conn)
    }

    /// A TCP port: a whole number from 1 to 65535.
    pub fn port(&mut self, path: &str, value: &Value) -> Option<u16> {
        self.integer(path, value, 1..=u64::from(u16::MAX))
            .and_then(|p| u16::try_from(p).ok())
    }
}
