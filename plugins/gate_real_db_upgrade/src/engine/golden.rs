//! The server side of golden copies ([`crate::provisioning`]): whether a golden copy is ready,
//! sealing a freshly loaded database as one, and cloning it for a run.
//!
//! PostgreSQL only: a golden copy is an ordinary database with `datallowconn = false`, which is
//! both the "complete" mark (it is set only after the seed loaded, just before the atomic
//! rename to the golden name) and the guard that nobody (no run, no tool, no superuser) can
//! connect to it and write it. `CREATE DATABASE … TEMPLATE` needs a template without sessions,
//! which the same flag guarantees.

use sqlx::Connection as _;

use super::postgres::{self, classify_error, connect_admin};
use super::{check_database_name, quote_ident, Backend, EngineError, Server};

/// The first PostgreSQL version with `CREATE DATABASE … STRATEGY`.
const STRATEGY_MIN_VERSION: i32 = 150_000;

/// From this size on a clone copies files (`FILE_COPY`: a checkpoint, then a plain copy of
/// the directory); below it, through the WAL (`WAL_LOG`: no checkpoint). Measured here on
/// PostgreSQL 15 with other work on the server: a 1 MB database takes 2–3 s by FILE_COPY
/// (the checkpoint flushes everyone's dirty buffers) and 0.4 s by WAL_LOG; a 917 MB one
/// 4.2 s by FILE_COPY and 5.0 s by WAL_LOG (which writes it all twice, WAL and files).
pub const FILE_COPY_FROM_BYTES: i64 = 256 << 20;

/// SQLSTATE `object_in_use`: someone is still connected to the database.
const OBJECT_IN_USE: &str = "55006";

/// What a golden copy of that name is on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoldenState {
    /// No database of that name.
    Missing,
    /// It exists and accepts no connections: complete and sealed.
    Ready,
    /// It exists but accepts connections: not made by us as a golden copy.
    Open,
}

impl Server {
    /// Whether this server can hold golden copies and clone them (PostgreSQL).
    pub fn can_clone(&self) -> bool {
        matches!(self.backend(), Backend::Postgres(_))
    }

    /// The state of database `name` as a golden copy.
    ///
    /// # Errors
    /// The server cannot be read, or it is not PostgreSQL.
    pub fn golden_state(&self, name: &str) -> Result<GoldenState, EngineError> {
        check_database_name(name)?;
        let ep = self.postgres_endpoint()?;
        self.block_on(|| async {
            let mut conn = connect_admin(&ep).await?;
            let row: Result<Option<bool>, _> =
                sqlx::query_scalar("SELECT datallowconn FROM pg_database WHERE datname = $1")
                    .bind(name)
                    .fetch_optional(&mut conn)
                    .await;
            let _ = conn.close().await;
            Ok(match row.map_err(|e| classify_error(&ep, &e))? {
                None => GoldenState::Missing,
                Some(false) => GoldenState::Ready,
                Some(true) => GoldenState::Open,
            })
        })
    }

    /// Seals database `loaded` (just loaded from the seed, nobody connected) as the golden
    /// copy `golden`: connections forbidden, then renamed. A session still ending after the
    /// loading client exited is waited for (the rename needs none).
    ///
    /// # Errors
    /// The server refused (`golden` exists already: another worker sharing the server won).
    pub fn seal_golden(&self, loaded: &str, golden: &str) -> Result<(), EngineError> {
        check_database_name(loaded)?;
        check_database_name(golden)?;
        let ep = self.postgres_endpoint()?;
        let forbid = format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false",
            quote_ident(loaded, '"')
        );
        let rename = format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote_ident(loaded, '"'),
            quote_ident(golden, '"')
        );
        self.block_on(|| async {
            let mut conn = connect_admin(&ep).await?;
            let result = async {
                sqlx::raw_sql(&forbid).execute(&mut conn).await?;
                let mut attempt = 0;
                loop {
                    match sqlx::raw_sql(&rename).execute(&mut conn).await {
                        Err(e) if postgres::code(&e).as_deref() == Some(OBJECT_IN_USE) => {
                            attempt += 1;
                            if attempt > 50 {
                                return Err(e);
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                        other => return other.map(drop),
                    }
                }
            }
            .await;
            let _ = conn.close().await;
            result.map_err(|e| classify_error(&ep, &e))
        })
    }

    /// Creates database `name` as a copy of the golden copy `golden`
    /// (`CREATE DATABASE … TEMPLATE … STRATEGY FILE_COPY` from PostgreSQL 15 on for golden
    /// copies of [`FILE_COPY_FROM_BYTES`] or more, `WAL_LOG` for smaller ones; before 15, the
    /// only strategy there was, the file copy).
    ///
    /// # Errors
    /// The server refused (no `CREATEDB`, not the golden copy's owner, disk full, …).
    pub fn clone_database(&self, golden: &str, name: &str) -> Result<(), EngineError> {
        check_database_name(golden)?;
        check_database_name(name)?;
        let ep = self.postgres_endpoint()?;
        self.block_on(|| async {
            let mut conn = connect_admin(&ep).await?;
            let result = async {
                let (version, size): (i32, i64) = sqlx::query_as(
                    "SELECT current_setting('server_version_num')::int, pg_database_size($1)",
                )
                .bind(golden)
                .fetch_one(&mut conn)
                .await?;
                let mut sql = format!(
                    "CREATE DATABASE {} TEMPLATE {}",
                    quote_ident(name, '"'),
                    quote_ident(golden, '"')
                );
                if version >= STRATEGY_MIN_VERSION {
                    sql.push_str(if size >= FILE_COPY_FROM_BYTES {
                        " STRATEGY FILE_COPY"
                    } else {
                        " STRATEGY WAL_LOG"
                    });
                }
                sqlx::raw_sql(&sql).execute(&mut conn).await.map(drop)
            }
            .await;
            let _ = conn.close().await;
            result.map_err(|e| classify_error(&ep, &e))
        })
    }

    fn postgres_endpoint(&self) -> Result<super::Endpoint, EngineError> {
        match self.backend() {
            Backend::Postgres(ep) => Ok(ep),
            _ => Err(EngineError::Other(format!(
                "{} has no golden copies",
                self.engine.label()
            ))),
        }
    }
}
