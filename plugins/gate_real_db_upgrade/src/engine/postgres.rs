//! PostgreSQL: sqlx for queries, `psql` and `pg_restore` for seeds. Server-wide work goes
//! through the admin database `postgres`.

use std::collections::BTreeMap;
use std::fs::File;
use std::process::Command;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError};
use sqlx::{ConnectOptions, Connection};
use turbo_hipster_sdk::support::process::Cancellation;

use super::client::{self, Input};
use super::{quote_ident, quote_path, Endpoint, EngineError, CONNECT_TIMEOUT};
use super::{Seed, SeedFormat};

/// The database we connect to for server-wide work.
pub(super) const ADMIN_DATABASE: &str = "postgres";

/// SQLSTATEs we tell apart.
const INSUFFICIENT_PRIVILEGE: &str = "42501";
const DUPLICATE_DATABASE: &str = "42P04";
const INVALID_CATALOG_NAME: &str = "3D000";
const UNDEFINED_TABLE: &str = "42P01";
const INVALID_SCHEMA_NAME: &str = "3F000";
const SYNTAX_ERROR: &str = "42601";

/// The worker's connections' `application_name` (`pg_stat_activity`); the run's side
/// connections add what they observe (`turbo-hipster locks`, …).
pub(super) const APPLICATION_NAME: &str = "turbo-hipster";

fn options_as(ep: &Endpoint, database: &str, application_name: &str) -> PgConnectOptions {
    // Everything explicit: nothing from ~/.pgpass, PGHOST or PGUSER.
    let mut options = PgConnectOptions::new_without_pgpass()
        .username(&ep.user)
        .port(ep.port)
        .database(database)
        .application_name(application_name);
    if !ep.password.is_empty() {
        options = options.password(&ep.password);
    }
    options = match &ep.socket {
        Some(dir) => options.socket(dir),
        None => options.host(&ep.host),
    };
    options.disable_statement_logging()
}

pub(super) fn code(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|db| db.code())
        .map(|c| c.into_owned())
}

/// A server error as `psql` shows it: `ERROR:  relation "x" does not exist (42P01)`.
fn describe(e: &sqlx::Error) -> String {
    match e
        .as_database_error()
        .and_then(|db| db.try_downcast_ref::<PgDatabaseError>())
    {
        Some(db) => {
            let severity = format!("{:?}", db.severity()).to_uppercase();
            let mut text = format!("{severity}:  {} ({})", db.message(), db.code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("; {detail}"));
            }
            text
        }
        None => e.to_string(),
    }
}

fn other(ep: &Endpoint, e: &sqlx::Error) -> EngineError {
    EngineError::Other(format!("{ep}: {}", describe(e)))
}

/// The server is gone (an I/O or protocol error rather than an answer; SQLSTATE class 08,
/// `admin_shutdown` 57P01, `crash_shutdown` 57P02, `cannot_connect_now` 57P03) or full
/// (`disk_full` 53100).
fn unavailable(ep: &Endpoint, e: &sqlx::Error) -> Option<EngineError> {
    let code = code(e);
    let lost = matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed
    ) || code
        .as_deref()
        .is_some_and(|c| c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03"));
    let full = code.as_deref() == Some("53100");
    let message = format!("{ep}: {}", describe(e));
    match super::unavailable_kind(&message) {
        Some(kind) => Some(EngineError::Unavailable(format!("{kind}: {message}"))),
        None if lost || full => Some(EngineError::Unavailable(format!(
            "{}: {message}",
            if full {
                "disk full"
            } else {
                "database server lost"
            }
        ))),
        None => None,
    }
}

pub(super) fn classify_error(ep: &Endpoint, e: &sqlx::Error) -> EngineError {
    if let Some(gone) = unavailable(ep, e) {
        return gone;
    }
    match code(e).as_deref() {
        Some(INSUFFICIENT_PRIVILEGE) => EngineError::Refused(format!("{ep}: {}", describe(e))),
        _ => other(ep, e),
    }
}

async fn connect(ep: &Endpoint, database: Option<&str>) -> Result<PgConnection, EngineError> {
    connect_named(ep, database, APPLICATION_NAME).await
}

/// A connection to `database` (the admin database when `None`) with that `application_name`.
async fn connect_named(
    ep: &Endpoint,
    database: Option<&str>,
    application_name: &str,
) -> Result<PgConnection, EngineError> {
    let options = options_as(ep, database.unwrap_or(ADMIN_DATABASE), application_name);
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        // A run database that is not there is not the server refusing us.
        Ok(Err(e)) if database.is_some() && code(&e).as_deref() == Some(INVALID_CATALOG_NAME) => {
            Err(other(ep, &e))
        }
        Ok(Err(e)) => Err(unavailable(ep, &e)
            .unwrap_or_else(|| EngineError::Refused(format!("{ep}: {}", describe(&e))))),
        Err(_) => Err(EngineError::Unavailable(format!(
            "database server lost: {ep}: no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// A connection to the admin database, for server-wide work.
pub(super) async fn connect_admin(ep: &Endpoint) -> Result<PgConnection, EngineError> {
    connect(ep, None).await
}

/// A side connection to `database` named `application_name` in `pg_stat_activity` (`turbo-hipster
/// locks`, `turbo-hipster counters`, `turbo-hipster rewrites`), so that operators (and tests)
/// can tell the run's observers apart.
pub(super) async fn connect_as(
    ep: &Endpoint,
    database: &str,
    application_name: &str,
) -> Result<PgConnection, EngineError> {
    connect_named(ep, Some(database), application_name).await
}

async fn close(conn: PgConnection) {
    let _ = conn.close().await;
}

pub(super) async fn ping(ep: &Endpoint) -> Result<(), EngineError> {
    let mut conn = connect(ep, None).await?;
    let result = conn.ping().await.map_err(|e| classify_error(ep, &e));
    close(conn).await;
    result
}

/// `CREATE DATABASE … TEMPLATE template0`: a clean database, as dumps expect (anything an
/// admin added to `template1` would clash with the dump's own objects).
pub(super) async fn create_database(ep: &Endpoint, name: &str) -> Result<(), EngineError> {
    let mut conn = connect(ep, None).await?;
    let sql = format!(
        "CREATE DATABASE {} TEMPLATE template0",
        quote_ident(name, '"')
    );
    let result = sqlx::raw_sql(&sql).execute(&mut conn).await;
    close(conn).await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if code(&e).as_deref() == Some(DUPLICATE_DATABASE) => Err(EngineError::Other(
            format!("{ep}: database {name} already exists"),
        )),
        Err(e) => Err(classify_error(ep, &e)),
    }
}

/// `psql -v ON_ERROR_STOP=1` with the seed on stdin, or `pg_restore` for a custom-format dump.
pub(super) fn load_seed(
    ep: &Endpoint,
    name: &str,
    seed: &Seed,
    file: File,
    cancel: &dyn Cancellation,
) -> Result<(), EngineError> {
    let connection_args = |cmd: &mut Command| {
        let host = match &ep.socket {
            Some(dir) => dir.as_os_str().to_owned(),
            None => ep.host.clone().into(),
        };
        // -w: never prompt for a password (stdin is the seed, not a person).
        cmd.arg("-w").arg("-h").arg(host).args([
            "-p",
            &ep.port.to_string(),
            "-U",
            &ep.user,
            "-d",
            name,
        ]);
        if ep.password.is_empty() {
            cmd.env_remove("PGPASSWORD");
        } else {
            cmd.env("PGPASSWORD", &ep.password);
        }
        cmd.env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT.as_secs().to_string())
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS");
    };
    let psql = |cmd: &mut Command| {
        // `-f -`: stdin read as a script, so that errors carry their line (`psql:<stdin>:3:`).
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"]);
        connection_args(cmd);
    };
    match seed.format {
        SeedFormat::Sql => client::run(&["psql"], psql, Input::Plain(file), &seed.path, cancel),
        SeedFormat::SqlGz => client::run(&["psql"], psql, Input::Gzip(file), &seed.path, cancel),
        SeedFormat::PgCustom => {
            drop(file);
            let pg_restore = |cmd: &mut Command| {
                // Objects belong to the run's user, whoever owned them in production.
                cmd.args(["--no-owner", "--no-privileges", "--exit-on-error"]);
                connection_args(cmd);
                cmd.arg(&seed.path);
            };
            client::run(
                &["pg_restore"],
                pg_restore,
                Input::Nothing,
                &seed.path,
                cancel,
            )
        }
    }
}

pub(super) async fn drop_database(ep: &Endpoint, name: &str) -> Result<(), EngineError> {
    let mut conn = connect(ep, None).await?;
    // Best effort (it needs privileges over those sessions); WITH (FORCE) does it again.
    let _ = sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .execute(&mut conn)
    .await;
    let quoted = quote_ident(name, '"');
    let forced = format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)");
    let mut result = sqlx::raw_sql(&forced).execute(&mut conn).await;
    if matches!(&result, Err(e) if code(e).as_deref() == Some(SYNTAX_ERROR)) {
        // Before PostgreSQL 13: no FORCE.
        let plain = format!("DROP DATABASE IF EXISTS {quoted}");
        result = sqlx::raw_sql(&plain).execute(&mut conn).await;
    }
    close(conn).await;
    result.map(drop).map_err(|e| classify_error(ep, &e))
}

/// The non-NULL values of `column` in `table` as text; `None` when the table is missing.
pub(super) async fn column_values(
    ep: &Endpoint,
    name: &str,
    table: &[&str],
    column: &str,
) -> Result<Option<Vec<String>>, EngineError> {
    let mut conn = connect(ep, Some(name)).await?;
    let sql = format!(
        "SELECT CAST({} AS TEXT) FROM {}",
        quote_ident(column, '"'),
        quote_path(table, '"')
    );
    let result: Result<Vec<Option<String>>, _> =
        sqlx::query_scalar(&sql).fetch_all(&mut conn).await;
    close(conn).await;
    match result {
        Ok(values) => Ok(Some(values.into_iter().flatten().collect())),
        Err(e)
            if matches!(
                code(&e).as_deref(),
                Some(UNDEFINED_TABLE | INVALID_SCHEMA_NAME)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(classify_error(ep, &e)),
    }
}

/// `tup_*` of `pg_stat_database`, under their own names and the InnoDB ones.
pub(super) async fn counters(
    ep: &Endpoint,
    name: &str,
) -> Result<BTreeMap<String, i64>, EngineError> {
    let mut conn = connect(ep, None).await?;
    let result = async {
        // A fresh look, not the snapshot of an earlier query in this transaction.
        sqlx::raw_sql("SELECT pg_stat_clear_snapshot()")
            .execute(&mut conn)
            .await?;
        sqlx::query_as::<_, (i64, i64, i64, i64, i64)>(
            "SELECT tup_returned, tup_fetched, tup_inserted, tup_updated, tup_deleted \
             FROM pg_stat_database WHERE datname = $1",
        )
        .bind(name)
        .fetch_optional(&mut conn)
        .await
    }
    .await;
    close(conn).await;
    let Some((returned, fetched, inserted, updated, deleted)) =
        result.map_err(|e| classify_error(ep, &e))?
    else {
        return Err(EngineError::Other(format!(
            "{ep}: database {name} does not exist"
        )));
    };
    Ok(BTreeMap::from([
        ("pg_tup_returned".to_string(), returned),
        ("pg_tup_fetched".to_string(), fetched),
        ("pg_tup_inserted".to_string(), inserted),
        ("pg_tup_updated".to_string(), updated),
        ("pg_tup_deleted".to_string(), deleted),
        ("Innodb_rows_read".to_string(), returned),
        ("Innodb_rows_inserted".to_string(), inserted),
        ("Innodb_rows_updated".to_string(), updated),
        ("Innodb_rows_deleted".to_string(), deleted),
    ]))
}

pub(super) async fn execute(ep: &Endpoint, name: &str, sql: &str) -> Result<(), EngineError> {
    let mut conn = connect(ep, Some(name)).await?;
    let result = sqlx::raw_sql(sql).execute(&mut conn).await;
    if result.is_ok() {
        // Publish this session's table counts now (PostgreSQL 15+), before the answer comes
        // back, rather than at most once a second or when the session has gone: the work
        // counters read right after see them (engine/counters.rs).
        let _ = sqlx::raw_sql("SELECT pg_stat_force_next_flush()")
            .execute(&mut conn)
            .await;
    }
    close(conn).await;
    result.map(drop).map_err(|e| classify_error(ep, &e))
}

pub(super) async fn databases(ep: &Endpoint) -> Result<Vec<String>, EngineError> {
    let mut conn = connect(ep, None).await?;
    let result: Result<Vec<String>, _> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database")
            .fetch_all(&mut conn)
            .await;
    close(conn).await;
    result.map_err(|e| classify_error(ep, &e))
}
