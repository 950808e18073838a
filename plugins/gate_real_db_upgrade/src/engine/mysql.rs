//! MySQL and MariaDB: sqlx for queries, the `mysql` client (or `mariadb`) for seeds.

use std::collections::BTreeMap;
use std::fs::File;
use std::process::Command;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlRow};
use sqlx::{ConnectOptions, Connection, Row};
use turbo_hipster_sdk::support::process::Cancellation;

use super::client::{self, Input};
use super::{quote_ident, quote_path, Endpoint, EngineError, CONNECT_TIMEOUT};
use super::{Seed, SeedFormat};

/// `ER_DB_CREATE_EXISTS`.
const DB_CREATE_EXISTS: u16 = 1007;
/// `ER_DBACCESS_DENIED_ERROR`, `ER_ACCESS_DENIED_ERROR`, `ER_TABLEACCESS_DENIED_ERROR`,
/// `ER_SPECIFIC_ACCESS_DENIED_ERROR`.
const ACCESS_DENIED: [u16; 4] = [1044, 1045, 1142, 1227];
/// `ER_BAD_DB_ERROR`: unknown database.
const BAD_DB: u16 = 1049;
/// `ER_NO_SUCH_TABLE`.
const NO_SUCH_TABLE: u16 = 1146;
/// `ER_DISK_FULL`.
const DISK_FULL: u16 = 1021;

fn options(ep: &Endpoint, database: Option<&str>) -> MySqlConnectOptions {
    let mut options = MySqlConnectOptions::new().username(&ep.user);
    if !ep.password.is_empty() {
        options = options.password(&ep.password);
    }
    options = match &ep.socket {
        Some(socket) => options.socket(socket),
        None => options.host(&ep.host).port(ep.port),
    };
    if let Some(database) = database {
        options = options.database(database);
    }
    options.disable_statement_logging()
}

/// The MySQL error number of a server error.
fn number(e: &sqlx::Error) -> Option<u16> {
    e.as_database_error()
        .and_then(|db| db.try_downcast_ref::<MySqlDatabaseError>())
        .map(MySqlDatabaseError::number)
}

/// A server error as the `mysql` client shows it: `ERROR 1045 (28000): Access denied …`.
fn describe(e: &sqlx::Error) -> String {
    match e
        .as_database_error()
        .and_then(|db| db.try_downcast_ref::<MySqlDatabaseError>())
    {
        Some(db) => match db.code() {
            Some(state) => format!("ERROR {} ({state}): {}", db.number(), db.message()),
            None => format!("ERROR {}: {}", db.number(), db.message()),
        },
        None => e.to_string(),
    }
}

fn other(ep: &Endpoint, e: &sqlx::Error) -> EngineError {
    EngineError::Other(format!("{ep}: {}", describe(e)))
}

/// The server is gone (the connection broke: an I/O or protocol error rather than an answer)
/// or full (`ER_DISK_FULL` 1021, errno 28, `ER_RECORD_FILE_FULL` 1114 on a full disk).
fn unavailable(ep: &Endpoint, e: &sqlx::Error) -> Option<EngineError> {
    let lost = matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed
    );
    let message = format!("{ep}: {}", describe(e));
    match super::unavailable_kind(&message) {
        Some(kind) => Some(EngineError::Unavailable(format!("{kind}: {message}"))),
        None if lost || number(e) == Some(DISK_FULL) => Some(EngineError::Unavailable(format!(
            "{}: {message}",
            if lost {
                "database server lost"
            } else {
                "disk full"
            }
        ))),
        None => None,
    }
}

/// Access denied → refused, server gone or full → unavailable, anything else → other.
pub(super) fn classify(ep: &Endpoint, e: &sqlx::Error) -> EngineError {
    if let Some(gone) = unavailable(ep, e) {
        return gone;
    }
    match number(e) {
        Some(n) if ACCESS_DENIED.contains(&n) => {
            EngineError::Refused(format!("{ep}: {}", describe(e)))
        }
        _ => other(ep, e),
    }
}

pub(super) async fn connect(
    ep: &Endpoint,
    database: Option<&str>,
) -> Result<MySqlConnection, EngineError> {
    let options = options(ep, database);
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        // A database that is not there is not the server refusing us.
        Ok(Err(e)) if number(&e) == Some(BAD_DB) => Err(other(ep, &e)),
        Ok(Err(e)) => Err(unavailable(ep, &e)
            .unwrap_or_else(|| EngineError::Refused(format!("{ep}: {}", describe(&e))))),
        Err(_) => Err(EngineError::Unavailable(format!(
            "database server lost: {ep}: no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// Closes politely; a failure to say goodbye changes nothing.
async fn close(conn: MySqlConnection) {
    let _ = conn.close().await;
}

pub(super) async fn ping(ep: &Endpoint) -> Result<(), EngineError> {
    let mut conn = connect(ep, None).await?;
    let result = conn.ping().await.map_err(|e| classify(ep, &e));
    close(conn).await;
    result
}

pub(super) async fn create_database(ep: &Endpoint, name: &str) -> Result<(), EngineError> {
    let mut conn = connect(ep, None).await?;
    let sql = format!("CREATE DATABASE {}", quote_ident(name, '`'));
    let result = sqlx::raw_sql(&sql).execute(&mut conn).await;
    close(conn).await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if number(&e) == Some(DB_CREATE_EXISTS) => Err(EngineError::Other(format!(
            "{ep}: database {name} already exists"
        ))),
        Err(e) => Err(classify(ep, &e)),
    }
}

/// Pipes the seed into `mysql <name>` (the password in `MYSQL_PWD`).
pub(super) fn load_seed(
    ep: &Endpoint,
    name: &str,
    seed: &Seed,
    file: File,
    cancel: &dyn Cancellation,
) -> Result<(), EngineError> {
    let input = match seed.format {
        SeedFormat::Sql => Input::Plain(file),
        SeedFormat::SqlGz => Input::Gzip(file),
        SeedFormat::PgCustom => return Err(super::wrong_format(&ep.engine, seed)),
    };
    let configure = |cmd: &mut Command| {
        match &ep.socket {
            Some(socket) => {
                cmd.arg("--protocol=SOCKET").arg("--socket").arg(socket);
            }
            None => {
                cmd.arg("--protocol=TCP")
                    .args(["--host", &ep.host])
                    .arg(format!("--port={}", ep.port));
            }
        }
        cmd.args(["--user", &ep.user])
            .arg(format!("--connect-timeout={}", CONNECT_TIMEOUT.as_secs()))
            // Dumps with extended inserts can carry big statements.
            .arg("--max-allowed-packet=1073741824")
            .arg(name);
        if ep.password.is_empty() {
            cmd.env_remove("MYSQL_PWD");
        } else {
            cmd.env("MYSQL_PWD", &ep.password);
        }
    };
    client::run(&["mysql", "mariadb"], configure, input, &seed.path, cancel)
}

pub(super) async fn drop_database(ep: &Endpoint, name: &str) -> Result<(), EngineError> {
    let mut conn = connect(ep, None).await?;
    // Sessions still in the database (a migration tool left behind) would hold metadata locks
    // and keep DROP DATABASE waiting: end them. Best effort; DROP reports what matters.
    let sessions: Vec<u64> = sqlx::query_scalar(
        "SELECT CAST(ID AS UNSIGNED) FROM information_schema.PROCESSLIST \
         WHERE DB = ? AND ID <> CONNECTION_ID()",
    )
    .bind(name)
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    for id in sessions {
        let _ = sqlx::raw_sql(&format!("KILL CONNECTION {id}"))
            .execute(&mut conn)
            .await;
    }
    let sql = format!("DROP DATABASE IF EXISTS {}", quote_ident(name, '`'));
    let result = sqlx::raw_sql(&sql).execute(&mut conn).await;
    close(conn).await;
    result.map(drop).map_err(|e| classify(ep, &e))
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
        "SELECT CAST({} AS CHAR) FROM {}",
        quote_ident(column, '`'),
        quote_path(table, '`')
    );
    let result = sqlx::raw_sql(&sql).fetch_all(&mut conn).await;
    close(conn).await;
    match result {
        Ok(rows) => Ok(Some(rows.iter().filter_map(|r| text(r, 0)).collect())),
        Err(e) if number(&e) == Some(NO_SUCH_TABLE) => Ok(None),
        Err(e) => Err(classify(ep, &e)),
    }
}

/// What `Innodb_rows_*` are made of when the server has none (recent MariaDB such as 10.11
/// no longer has them): the server-wide row counters of every engine.
const FALLBACK_COUNTERS: [(&str, &str); 4] = [
    ("Innodb_rows_read", "Rows_read"),
    ("Innodb_rows_inserted", "Handler_write"),
    ("Innodb_rows_updated", "Handler_update"),
    ("Innodb_rows_deleted", "Handler_delete"),
];

/// `Innodb_rows_*` from `SHOW GLOBAL STATUS`, or their stand-ins.
pub(super) async fn counters(ep: &Endpoint) -> Result<BTreeMap<String, i64>, EngineError> {
    let mut conn = connect(ep, None).await?;
    let result = counters_on(ep, &mut conn).await;
    close(conn).await;
    result
}

/// [`counters`] through the connection `conn`.
pub(super) async fn counters_on(
    ep: &Endpoint,
    conn: &mut MySqlConnection,
) -> Result<BTreeMap<String, i64>, EngineError> {
    let rows = sqlx::raw_sql(
        "SHOW GLOBAL STATUS WHERE Variable_name LIKE 'Innodb\\_rows\\_%' \
         OR Variable_name IN ('Rows_read', 'Handler_write', 'Handler_update', 'Handler_delete')",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| classify(ep, &e))?;
    let counters: BTreeMap<String, i64> = rows
        .iter()
        .filter_map(|row| {
            let name = text(row, 0)?;
            let value = text(row, 1)?.trim().parse().ok()?;
            Some((name, value))
        })
        .collect();
    Ok(with_fallbacks(counters))
}

/// Adds each missing `Innodb_rows_*` counter from its stand-in, if the server has that.
fn with_fallbacks(mut counters: BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    for (innodb, stand_in) in FALLBACK_COUNTERS {
        if !counters.contains_key(innodb) {
            if let Some(&value) = counters.get(stand_in) {
                counters.insert(innodb.to_string(), value);
            }
        }
    }
    counters
}

pub(super) async fn execute(ep: &Endpoint, name: &str, sql: &str) -> Result<(), EngineError> {
    let mut conn = connect(ep, Some(name)).await?;
    let result = sqlx::raw_sql(sql).execute(&mut conn).await;
    close(conn).await;
    result.map(drop).map_err(|e| classify(ep, &e))
}

/// Reads every base table of database `name` once through its clustered index (`CHECKSUM
/// TABLE`: a full scan) and each secondary index (`COUNT(*)` forced through it); the number
/// of tables and indexes read.
pub(super) async fn warm(ep: &Endpoint, name: &str) -> Result<(usize, usize), EngineError> {
    let mut conn = connect(ep, Some(name)).await?;
    let result = async {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1",
        )
        .bind(name)
        .fetch_all(&mut conn)
        .await?;
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT CAST(TABLE_NAME AS CHAR), CAST(INDEX_NAME AS CHAR) \
             FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? \
             AND INDEX_NAME <> 'PRIMARY' ORDER BY 1, 2",
        )
        .bind(name)
        .fetch_all(&mut conn)
        .await?;
        for table in &tables {
            let sql = format!("CHECKSUM TABLE {}", quote_ident(table, '`'));
            sqlx::raw_sql(&sql).fetch_all(&mut conn).await?;
        }
        for (table, index) in &indexes {
            let sql = format!(
                "SELECT COUNT(*) FROM {} FORCE INDEX ({})",
                quote_ident(table, '`'),
                quote_ident(index, '`')
            );
            sqlx::raw_sql(&sql).fetch_all(&mut conn).await?;
        }
        Ok::<_, sqlx::Error>((tables.len(), indexes.len()))
    }
    .await;
    close(conn).await;
    result.map_err(|e| classify(ep, &e))
}

/// `VERSION()` and those of the global variables `names` the server has.
pub(super) async fn version_and_variables(
    ep: &Endpoint,
    names: &[&str],
) -> Result<(String, BTreeMap<String, String>), EngineError> {
    let mut conn = connect(ep, None).await?;
    let version = sqlx::raw_sql("SELECT VERSION()").fetch_one(&mut conn).await;
    let list = names
        .iter()
        .map(|n| format!("'{}'", n.replace('\'', "")))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = sqlx::raw_sql(&format!(
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN ({list})"
    ))
    .fetch_all(&mut conn)
    .await;
    close(conn).await;
    let version = version.map_err(|e| classify(ep, &e))?;
    let rows = rows.map_err(|e| classify(ep, &e))?;
    let variables = rows
        .iter()
        .filter_map(|row| Some((text(row, 0)?, text(row, 1)?)))
        .collect();
    Ok((text(&version, 0).unwrap_or_default(), variables))
}

/// `SHOW DATABASES`.
pub(super) async fn databases(ep: &Endpoint) -> Result<Vec<String>, EngineError> {
    let mut conn = connect(ep, None).await?;
    let result = sqlx::raw_sql("SHOW DATABASES").fetch_all(&mut conn).await;
    close(conn).await;
    let rows = result.map_err(|e| classify(ep, &e))?;
    Ok(rows.iter().filter_map(|r| text(r, 0)).collect())
}

/// Column `i` as text, whatever its type (SHOW results come as VARCHAR or VARBINARY depending
/// on the server); `None` for NULL.
fn text(row: &MySqlRow, i: usize) -> Option<String> {
    if let Ok(v) = row.try_get::<Option<String>, _>(i) {
        return v;
    }
    if let Ok(v) = row.try_get::<Option<Vec<u8>>, _>(i) {
        return v.map(|b| String::from_utf8_lossy(&b).into_owned());
    }
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return v.map(|n| n.to_string());
    }
    if let Ok(v) = row.try_get::<Option<u64>, _>(i) {
        return v.map(|n| n.to_string());
    }
    row.try_get_unchecked::<Option<String>, _>(i).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn innodb_counters_fall_back_to_the_server_wide_ones() {
        let raw = |pairs: &[(&str, i64)]| -> BTreeMap<String, i64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let mariadb = with_fallbacks(raw(&[
            ("Rows_read", 10),
            ("Handler_write", 2),
            ("Handler_update", 3),
            ("Handler_delete", 4),
        ]));
        assert_eq!(mariadb.get("Innodb_rows_read"), Some(&10));
        assert_eq!(mariadb.get("Innodb_rows_inserted"), Some(&2));
        assert_eq!(mariadb.get("Innodb_rows_updated"), Some(&3));
        assert_eq!(mariadb.get("Innodb_rows_deleted"), Some(&4));
        assert_eq!(mariadb.get("Rows_read"), Some(&10));
        // Real InnoDB counters win.
        let mysql = with_fallbacks(raw(&[("Innodb_rows_read", 7), ("Rows_read", 10)]));
        assert_eq!(mysql.get("Innodb_rows_read"), Some(&7));
    }
}
