//! The database side against real servers: MariaDB at 127.0.0.1:3306 (and its socket),
//! PostgreSQL at 127.0.0.1:5432 (and /var/run/postgresql), SQLite files in a temp dir.
//!
//! The CI set-up (`scripts/setup-test-env.sh`) guarantees both servers, so a server that
//! cannot be reached fails the test with a clear message instead of skipping it. Every test
//! uses databases named `th_test_<random hex>` and drops them even when it fails.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use gate_real_db_upgrade::engine::{
    check_database_name, Connection, Engine, EngineError, Seed, SeedFormat, Server, VersionSource,
};
use tempfile::TempDir;
use turbo_hipster_sdk::support::process::CancelFlag;
use turbo_hipster_tests::test_python;

// --- helpers ---------------------------------------------------------------------------

const MARIADB_SOCKET: &str = "/run/mysqld/mysqld.sock";
const PG_SOCKET_DIR: &str = "/var/run/postgresql";

/// `th_test_` + 16 random hex digits.
fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    let name = format!("th_test_{:016x}", hasher.finish());
    check_database_name(&name).unwrap();
    name
}

fn tcp(host: &str, port: u16) -> Connection {
    Connection {
        host: Some(host.to_string()),
        port: Some(port),
        ..Connection::default()
    }
}

fn socket(path: &str) -> Connection {
    Connection {
        socket: Some(PathBuf::from(path)),
        ..Connection::default()
    }
}

/// A server, checked to answer: the test fails (never skips) when it does not.
fn server(engine: Engine, connection: Connection, dir: &Path) -> Server {
    let server = Server::new(engine, connection, dir.to_path_buf());
    if let Err(e) = server.ping() {
        panic!(
            "{} is not reachable ({:?}): {e}\nThese tests need the real servers that \
             scripts/setup-test-env.sh sets up (MariaDB at 127.0.0.1:3306 and {MARIADB_SOCKET}, \
             root without password; PostgreSQL at 127.0.0.1:5432 and {PG_SOCKET_DIR}, trust \
             auth); they do not skip.",
            engine.label(),
            server.endpoint()
        );
    }
    server
}

fn mariadb(dir: &Path) -> Server {
    server(Engine::MariaDb, tcp("127.0.0.1", 3306), dir)
}

fn postgres(dir: &Path) -> Server {
    server(Engine::PostgreSql, tcp("127.0.0.1", 5432), dir)
}

fn sqlite(dir: &Path) -> Server {
    Server::new(Engine::Sqlite, Connection::default(), dir.join("dbs"))
}

/// Drops the database when the test ends, passed or failed.
struct DbGuard<'a> {
    server: &'a Server,
    name: String,
}

impl<'a> DbGuard<'a> {
    fn new(server: &'a Server) -> Self {
        Self {
            server,
            name: unique_name(),
        }
    }
}

impl Drop for DbGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.server.drop_database(&self.name) {
            eprintln!("cleanup: dropping {} failed: {e}", self.name);
        }
    }
}

/// Runs SQL as an admin when the test ends (dropping users and roles).
struct SqlGuard<'a> {
    server: &'a Server,
    database: &'static str,
    sql: String,
}

impl Drop for SqlGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.server.execute(self.database, &self.sql) {
            eprintln!("cleanup: {} failed: {e}", self.sql);
        }
    }
}

fn write_seed(dir: &Path, file: &str, text: &str) -> Seed {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    Seed {
        path,
        format: SeedFormat::Sql,
    }
}

fn write_gz_seed(dir: &Path, file: &str, text: &str) -> Seed {
    let path = dir.join(file);
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap();
    Seed {
        path,
        format: SeedFormat::SqlGz,
    }
}

/// The seed's bytes and modification time, to prove a load left it alone.
fn fingerprint(seed: &Seed) -> (Vec<u8>, SystemTime) {
    let bytes = std::fs::read(&seed.path).unwrap();
    let modified = std::fs::metadata(&seed.path).unwrap().modified().unwrap();
    (bytes, modified)
}

fn version(server: &Server, name: &str, source: VersionSource) -> Option<String> {
    server.schema_version(name, &source).unwrap()
}

fn assert_versions(server: &Server, name: &str) {
    assert_eq!(
        version(server, name, VersionSource::MigrateVersion).as_deref(),
        Some("215")
    );
    assert_eq!(
        version(server, name, VersionSource::AlembicVersion).as_deref(),
        Some("a1b2c3,ffee01")
    );
    assert_eq!(
        version(
            server,
            name,
            VersionSource::Table("th_schema_version".into())
        )
        .as_deref(),
        Some("10"),
        "the latest of 9, 10, 2 by number"
    );
    assert_eq!(
        version(server, name, VersionSource::Table("no_such_table".into())),
        None
    );
    assert_eq!(
        version(server, name, VersionSource::Table("empty_versions".into())),
        None
    );
}

fn assert_no_database(server: &Server, name: &str) {
    assert_eq!(
        server.databases_with_prefix(name).unwrap(),
        Vec::<String>::new(),
        "database {name} must not exist"
    );
}

fn counter(counters: &BTreeMap<String, i64>, name: &str) -> i64 {
    *counters
        .get(name)
        .unwrap_or_else(|| panic!("no counter {name} in {counters:?}"))
}

/// A mysqldump-style dump (version comments, LOCK TABLES, extended inserts).
const MYSQL_DUMP: &str = r#"-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB, for debian-linux-gnu (x86_64)
--
-- Host: localhost    Database: nova
-- ------------------------------------------------------
-- Server version	10.11.6-MariaDB-0+deb12u1

/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET @OLD_CHARACTER_SET_RESULTS=@@CHARACTER_SET_RESULTS */;
/*!40101 SET @OLD_COLLATION_CONNECTION=@@COLLATION_CONNECTION */;
/*!40101 SET NAMES utf8mb4 */;
/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;
/*!40103 SET TIME_ZONE='+00:00' */;
/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;
/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;
/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;

--
-- Table structure for table `instances`
--

DROP TABLE IF EXISTS `instances`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8 */;
CREATE TABLE `instances` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `hostname` varchar(255) DEFAULT NULL,
  `vm_state` varchar(255) DEFAULT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB AUTO_INCREMENT=4 DEFAULT CHARSET=utf8mb3 COLLATE=utf8mb3_general_ci;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `instances`
--

LOCK TABLES `instances` WRITE;
/*!40000 ALTER TABLE `instances` DISABLE KEYS */;
INSERT INTO `instances` VALUES (1,'host-1','active'),(2,'hôst-2','stopped'),(3,'host;3\n-- not a comment','active');
/*!40000 ALTER TABLE `instances` ENABLE KEYS */;
UNLOCK TABLES;

DROP TABLE IF EXISTS `migrate_version`;
CREATE TABLE `migrate_version` (
  `repository_id` varchar(250) NOT NULL,
  `repository_path` text DEFAULT NULL,
  `version` int(11) DEFAULT NULL,
  PRIMARY KEY (`repository_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb3 COLLATE=utf8mb3_general_ci;

LOCK TABLES `migrate_version` WRITE;
/*!40000 ALTER TABLE `migrate_version` DISABLE KEYS */;
INSERT INTO `migrate_version` VALUES ('nova','/opt/stack/nova/nova/db/sqlalchemy/migrate_repo',215);
/*!40000 ALTER TABLE `migrate_version` ENABLE KEYS */;
UNLOCK TABLES;

CREATE TABLE `alembic_version` (`version_num` varchar(32) NOT NULL, PRIMARY KEY (`version_num`)) ENGINE=InnoDB;
LOCK TABLES `alembic_version` WRITE;
INSERT INTO `alembic_version` VALUES ('ffee01'),('a1b2c3');
UNLOCK TABLES;

CREATE TABLE `th_schema_version` (`version` varchar(64) NOT NULL) ENGINE=InnoDB;
INSERT INTO `th_schema_version` VALUES ('9'),('10'),('2');
CREATE TABLE `empty_versions` (`version` int) ENGINE=InnoDB;

/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;
/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;
/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;
/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;
/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;
/*!40101 SET CHARACTER_SET_RESULTS=@OLD_CHARACTER_SET_RESULTS */;
/*!40101 SET COLLATION_CONNECTION=@OLD_COLLATION_CONNECTION */;
/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;

-- Dump completed on 2014-01-16  6:57:33
"#;

/// A pg_dump-style plain dump (settings, COPY … FROM stdin).
const PG_DUMP: &str = "--
-- PostgreSQL database dump
--

SET statement_timeout = 0;
SET lock_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET client_min_messages = warning;
SET row_security = off;
SET default_tablespace = '';

CREATE TABLE public.instances (
    id integer NOT NULL,
    hostname character varying(255),
    vm_state character varying(255)
);

COPY public.instances (id, hostname, vm_state) FROM stdin;
1\thost-1\tactive
2\thôst-2\tstopped
3\thost;3\tactive
\\.

ALTER TABLE ONLY public.instances ADD CONSTRAINT instances_pkey PRIMARY KEY (id);

CREATE TABLE public.migrate_version (
    repository_id character varying(250) NOT NULL,
    repository_path text,
    version integer
);
INSERT INTO public.migrate_version VALUES ('nova', '/opt/stack/nova', 215);

CREATE TABLE public.alembic_version (version_num character varying(32) NOT NULL);
INSERT INTO public.alembic_version VALUES ('ffee01'), ('a1b2c3');

CREATE TABLE public.th_schema_version (version text NOT NULL);
INSERT INTO public.th_schema_version VALUES ('9'), ('10'), ('2');
CREATE TABLE public.empty_versions (version integer);

--
-- PostgreSQL database dump complete
--
";

/// Plain SQL both SQLite and the others understand.
const SQLITE_DUMP: &str = "PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE instances (id INTEGER PRIMARY KEY, hostname TEXT, vm_state TEXT);
INSERT INTO instances VALUES(1,'host-1','active');
INSERT INTO instances VALUES(2,'hôst-2','stopped');
INSERT INTO instances VALUES(3,'host;3','active');
CREATE TABLE migrate_version (repository_id VARCHAR(250) PRIMARY KEY, repository_path TEXT, version INTEGER);
INSERT INTO migrate_version VALUES('nova','/opt/stack/nova',215);
CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL);
INSERT INTO alembic_version VALUES('ffee01');
INSERT INTO alembic_version VALUES('a1b2c3');
CREATE TABLE th_schema_version (version TEXT NOT NULL);
INSERT INTO th_schema_version VALUES('9');
INSERT INTO th_schema_version VALUES('10');
INSERT INTO th_schema_version VALUES('2');
CREATE TABLE empty_versions (version INTEGER);
COMMIT;
";

const BROKEN_SEED: &str = "CREATE TABLE instances (id integer);
INSERT INTO instances VALUES (1);
THIS IS NOT SQL AT ALL;
INSERT INTO instances VALUES (2);
";

/// Loads `dump` into a new database of `server`: the seed is left as it was, the versions are
/// read, the database is listed, loading it again is refused and leaves it; `more` checks
/// what else the engine does with it; then it is dropped (twice: dropping what is not there
/// is fine).
fn loads_a_seed_and_reads_versions(server: &Server, seed: &Seed, more: impl FnOnce(&Server, &str)) {
    let before = fingerprint(seed);
    let db = DbGuard::new(server);

    server.create_from_seed(&db.name, seed).unwrap();

    assert_eq!(fingerprint(seed), before, "the seed must not change");
    assert_versions(server, &db.name);
    assert_eq!(
        server.databases_with_prefix(&db.name).unwrap(),
        vec![db.name.clone()]
    );
    // Creating it again fails and leaves the existing database alone.
    let again = server.create_from_seed(&db.name, seed).unwrap_err();
    assert!(
        matches!(&again, EngineError::Other(m) if m.contains("already exists")),
        "{again:?}"
    );
    more(server, &db.name);

    server.drop_database(&db.name).unwrap();
    assert_no_database(server, &db.name);
    server.drop_database(&db.name).unwrap();
}

/// Loads the gzipped `dump` over `server`'s socket; the tool's URL is `url` with `{}` the
/// database's name.
fn loads_a_gzipped_seed_over_the_socket(server: &Server, dir: &Path, dump: &str, url: &str) {
    let seed = write_gz_seed(dir, "nova.sql.gz", dump);
    let before = fingerprint(&seed);
    let db = DbGuard::new(server);

    server.create_from_seed(&db.name, &seed).unwrap();

    assert_eq!(fingerprint(&seed), before, "the seed must not change");
    assert_versions(server, &db.name);
    assert_eq!(server.sqlalchemy_url(&db.name), url.replace("{}", &db.name));
}

/// A seed that does not load is a seed load error saying `says`, leaves no database, and is
/// left as it was.
fn broken_seed_is_a_seed_load_error(server: &Server, seed: &Seed, says: &[&str]) {
    let before = fingerprint(seed);
    let db = DbGuard::new(server);

    let err = server.create_from_seed(&db.name, seed).unwrap_err();

    assert!(
        matches!(&err, EngineError::SeedLoad(m) if says.iter().all(|s| m.contains(s))),
        "{err}"
    );
    assert_no_database(server, &db.name);
    assert_eq!(fingerprint(seed), before);
}

/// `change` (3 rows updated, 1 deleted, 2 inserted) moves the counters of the database
/// loaded from `dump` by at least that much; the counters after it.
fn counters_move_after(
    server: &Server,
    dir: &Path,
    dump: &str,
    change: &str,
) -> BTreeMap<String, i64> {
    let seed = write_seed(dir, "nova.sql", dump);
    let db = DbGuard::new(server);
    server.create_from_seed(&db.name, &seed).unwrap();

    let before = server.counters(&db.name).unwrap();
    server.execute(&db.name, change).unwrap();
    // PostgreSQL: the session publishes its counts as it exits, a moment after we closed it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let after = server.counters(&db.name).unwrap();
        if counter(&after, "Innodb_rows_updated") - counter(&before, "Innodb_rows_updated") >= 3
            || Instant::now() > deadline
        {
            break after;
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    for (name, at_least) in [
        ("Innodb_rows_updated", 3),
        ("Innodb_rows_deleted", 1),
        ("Innodb_rows_inserted", 2),
        ("Innodb_rows_read", 1),
    ] {
        let delta = counter(&after, name) - counter(&before, name);
        assert!(
            delta >= at_least,
            "{name} moved by {delta}, expected ≥ {at_least}"
        );
    }
    after
}

// --- MariaDB ---------------------------------------------------------------------------

#[test]
fn mariadb_loads_a_mysqldump_seed_and_reads_versions() {
    let tmp = TempDir::new().unwrap();
    let seed = write_seed(tmp.path(), "nova.sql", MYSQL_DUMP);
    loads_a_seed_and_reads_versions(&mariadb(tmp.path()), &seed, |server, db| {
        assert_eq!(
            version(server, db, VersionSource::MigrateVersion).as_deref(),
            Some("215")
        );
    });
}

#[test]
fn mariadb_loads_a_gzipped_seed_over_the_socket() {
    let tmp = TempDir::new().unwrap();
    loads_a_gzipped_seed_over_the_socket(
        &server(Engine::MariaDb, socket(MARIADB_SOCKET), tmp.path()),
        tmp.path(),
        MYSQL_DUMP,
        &format!("mysql+pymysql://root@localhost/{{}}?unix_socket={MARIADB_SOCKET}"),
    );
}

#[test]
fn mariadb_counters_move_after_an_update() {
    let tmp = TempDir::new().unwrap();
    counters_move_after(
        &mariadb(tmp.path()),
        tmp.path(),
        MYSQL_DUMP,
        "UPDATE instances SET vm_state = 'deleted'; DELETE FROM instances WHERE id = 1; \
         INSERT INTO instances (hostname) VALUES ('new-1'), ('new-2');",
    );
}

#[test]
fn mariadb_execute_reports_the_servers_error() {
    let tmp = TempDir::new().unwrap();
    let server = mariadb(tmp.path());
    let seed = write_seed(tmp.path(), "nova.sql", MYSQL_DUMP);
    let db = DbGuard::new(&server);
    server.create_from_seed(&db.name, &seed).unwrap();

    // The error of a later statement counts too.
    let err = server
        .execute(&db.name, "SELECT 1; SELECT * FROM no_such_table;")
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Other(m) if m.contains("1146") && m.contains("doesn't exist")),
        "{err}"
    );
    // A database that is not there is an error, not a refusal.
    let missing = unique_name();
    let err = server
        .schema_version(&missing, &VersionSource::MigrateVersion)
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Other(m) if m.contains("1049")),
        "{err}"
    );
    // Bad names never reach the server.
    let err = server
        .drop_database("x`; DROP DATABASE mysql; --")
        .unwrap_err();
    assert!(matches!(err, EngineError::Other(_)), "{err}");
}

#[test]
fn mariadb_broken_seed_is_a_seed_load_error_and_leaves_nothing() {
    let tmp = TempDir::new().unwrap();
    let seed = write_seed(tmp.path(), "broken.sql", BROKEN_SEED);
    broken_seed_is_a_seed_load_error(&mariadb(tmp.path()), &seed, &["ERROR 1064", "at line 3"]);
}

#[test]
fn mariadb_truncated_gzip_seed_is_a_seed_load_error() {
    let tmp = TempDir::new().unwrap();
    let server = mariadb(tmp.path());
    let seed = write_gz_seed(tmp.path(), "cut.sql.gz", &MYSQL_DUMP.repeat(20));
    let bytes = std::fs::read(&seed.path).unwrap();
    std::fs::write(&seed.path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let db = DbGuard::new(&server);

    let err = server.create_from_seed(&db.name, &seed).unwrap_err();

    assert!(matches!(err, EngineError::SeedLoad(_)), "{err}");
    assert_no_database(&server, &db.name);
}

#[test]
fn mariadb_gzip_seed_with_trailing_garbage_is_a_seed_load_error() {
    // The client gets every statement and succeeds; the seed is still broken.
    let tmp = TempDir::new().unwrap();
    let server = mariadb(tmp.path());
    let seed = write_gz_seed(tmp.path(), "trailing.sql.gz", MYSQL_DUMP);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seed.path)
        .unwrap()
        .write_all(b"not gzip at all")
        .unwrap();
    let db = DbGuard::new(&server);

    let err = server.create_from_seed(&db.name, &seed).unwrap_err();

    assert!(
        matches!(&err, EngineError::SeedLoad(m) if m.contains("reading") && m.contains("trailing.sql.gz")),
        "{err}"
    );
    assert_no_database(&server, &db.name);
}

#[test]
fn mariadb_user_with_password_loads_and_wrong_password_is_refused() {
    let tmp = TempDir::new().unwrap();
    let root = mariadb(tmp.path());
    let user = unique_name();
    let password = "p@ss:w/rd%;'\"$x";
    let sql_password = password.replace('\\', "\\\\").replace('\'', "\\'");
    root.execute(
        "mysql",
        &format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{sql_password}'; \
             CREATE USER '{user}'@'localhost' IDENTIFIED BY '{sql_password}'; \
             GRANT ALL PRIVILEGES ON `th\\_test\\_%`.* TO '{user}'@'%'; \
             GRANT ALL PRIVILEGES ON `th\\_test\\_%`.* TO '{user}'@'localhost';"
        ),
    )
    .unwrap();
    let _drop_user = SqlGuard {
        server: &root,
        database: "mysql",
        sql: format!("DROP USER IF EXISTS '{user}'@'%', '{user}'@'localhost'"),
    };
    let seed = write_seed(tmp.path(), "nova.sql", MYSQL_DUMP);

    // The right password: the seed loads through `mysql` (password via MYSQL_PWD).
    let good = Server::new(
        Engine::MariaDb,
        Connection {
            user: Some(user.clone()),
            password: Some(password.to_string()),
            ..tcp("127.0.0.1", 3306)
        },
        tmp.path().to_path_buf(),
    );
    let db = DbGuard::new(&good);
    good.create_from_seed(&db.name, &seed).unwrap();
    assert_versions(&good, &db.name);

    // A wrong one: refused, with the server's message, before anything is created.
    let bad = Server::new(
        Engine::MariaDb,
        Connection {
            user: Some(user.clone()),
            password: Some("wrong".into()),
            ..tcp("127.0.0.1", 3306)
        },
        tmp.path().to_path_buf(),
    );
    let other = unique_name();
    let err = bad.create_from_seed(&other, &seed).unwrap_err();
    assert!(
        matches!(&err, EngineError::Refused(m) if m.contains("1045") && m.contains("Access denied")),
        "{err}"
    );
    assert!(
        !err.to_string().contains("wrong"),
        "no password in messages: {err}"
    );
    assert!(matches!(bad.ping(), Err(EngineError::Refused(_))));
    assert_no_database(&root, &other);
}

/// A seed load that sleeps on the server is cancelled after 1.5 s: it ends well before the
/// sleep would (the session left sleeping on the server is killed so that the drop can go
/// through), says it was cancelled, and leaves no database.
fn cancelled_load_stops_and_drops_the_database(server: &Server, dir: &Path, slow_sql: &str) {
    let seed = write_seed(dir, "slow.sql", slow_sql);
    let db = DbGuard::new(server);
    let flag = CancelFlag::new();
    let canceller = {
        let flag = flag.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            flag.cancel();
        })
    };

    let start = Instant::now();
    let err = server
        .create_from_seed_cancellable(&db.name, &seed, &flag)
        .unwrap_err();
    canceller.join().unwrap();

    assert!(
        matches!(&err, EngineError::Other(m) if m.contains("cancelled")),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert_no_database(server, &db.name);
}

#[test]
fn mariadb_cancelled_load_stops_and_drops_the_database() {
    let tmp = TempDir::new().unwrap();
    let server = mariadb(tmp.path());
    cancelled_load_stops_and_drops_the_database(
        &server,
        tmp.path(),
        "CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\nSELECT SLEEP(30);\n",
    );
}

#[test]
fn mariadb_server_is_shared_by_threads_and_works_inside_a_runtime() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Server>();

    let tmp = TempDir::new().unwrap();
    let server = mariadb(tmp.path());
    let seed = write_gz_seed(tmp.path(), "nova.sql.gz", MYSQL_DUMP);
    let guards: Vec<DbGuard<'_>> = (0..3).map(|_| DbGuard::new(&server)).collect();

    std::thread::scope(|scope| {
        for guard in &guards {
            let (server, seed) = (&server, &seed);
            scope.spawn(move || {
                server.create_from_seed(&guard.name, seed).unwrap();
                assert_eq!(
                    version(server, &guard.name, VersionSource::MigrateVersion).as_deref(),
                    Some("215")
                );
            });
        }
    });

    // Called from inside someone's tokio runtime, the blocking API still works.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let found = runtime.block_on(async { server.databases_with_prefix("th_test_").unwrap() });
    for guard in &guards {
        assert!(
            found.contains(&guard.name),
            "{} not in {found:?}",
            guard.name
        );
    }
}

/// A server that is not there is the infrastructure's fault, not the seed's or the change's.
#[test]
fn unavailable_when_the_server_is_not_there() {
    let tmp = TempDir::new().unwrap();
    let seed = write_seed(tmp.path(), "nova.sql", MYSQL_DUMP);
    for engine in [Engine::MariaDb, Engine::PostgreSql] {
        // Port 1 on localhost: nothing listens there.
        let server = Server::new(engine, tcp("127.0.0.1", 1), tmp.path().to_path_buf());
        let err = server.create_from_seed(&unique_name(), &seed).unwrap_err();
        assert!(
            matches!(&err, EngineError::Unavailable(m)
                if m.starts_with("database server lost: ") && m.contains("127.0.0.1:1")),
            "{}: {err}",
            engine.label()
        );
        assert!(err.infrastructure().is_some());
        assert!(server.ping().unwrap_err().infrastructure().is_some());
    }
}

#[test]
fn missing_seed_is_reported_before_connecting() {
    let tmp = TempDir::new().unwrap();
    let missing = tmp.path().join("no-such-seed.sql.gz");
    for engine in [
        Engine::MySql,
        Engine::MariaDb,
        Engine::PostgreSql,
        Engine::Sqlite,
    ] {
        // An unreachable server: the seed check must come first.
        let server = Server::new(engine, tcp("127.0.0.1", 1), tmp.path().to_path_buf());
        let seed = Seed {
            path: missing.clone(),
            format: SeedFormat::SqlGz,
        };
        let err = server.create_from_seed(&unique_name(), &seed).unwrap_err();
        assert!(
            matches!(&err, EngineError::SeedMissing(p) if p == &missing),
            "{}: {err}",
            engine.label()
        );
    }
}

// --- PostgreSQL ------------------------------------------------------------------------

#[test]
fn postgres_loads_a_plain_seed_and_reads_versions() {
    let tmp = TempDir::new().unwrap();
    let seed = write_seed(tmp.path(), "nova.sql", PG_DUMP);
    loads_a_seed_and_reads_versions(&postgres(tmp.path()), &seed, |server, db| {
        let err = server
            .execute(db, "SELECT 1; SELECT * FROM no_such_table;")
            .unwrap_err();
        assert!(
            matches!(&err, EngineError::Other(m) if m.contains("does not exist") && m.contains("42P01")),
            "{err}"
        );
    });
}

#[test]
fn postgres_loads_a_gzipped_seed_over_the_socket() {
    let tmp = TempDir::new().unwrap();
    loads_a_gzipped_seed_over_the_socket(
        &server(Engine::PostgreSql, socket(PG_SOCKET_DIR), tmp.path()),
        tmp.path(),
        PG_DUMP,
        &format!("postgresql+psycopg2://postgres@/{{}}?host={PG_SOCKET_DIR}"),
    );
}

#[test]
fn postgres_restores_a_custom_format_dump() {
    let tmp = TempDir::new().unwrap();
    let server = postgres(tmp.path());
    let plain = write_seed(tmp.path(), "nova.sql", PG_DUMP);
    let source = DbGuard::new(&server);
    server.create_from_seed(&source.name, &plain).unwrap();
    let dump = tmp.path().join("nova.dump");
    let out = Command::new("pg_dump")
        .args([
            "-Fc",
            "-w",
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
        ])
        .arg("-f")
        .arg(&dump)
        .arg(&source.name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seed = Seed {
        path: dump,
        format: SeedFormat::PgCustom,
    };
    let before = fingerprint(&seed);
    let db = DbGuard::new(&server);

    server.create_from_seed(&db.name, &seed).unwrap();

    assert_eq!(fingerprint(&seed), before, "the seed must not change");
    assert_versions(&server, &db.name);
    server
        .execute(&db.name, "INSERT INTO instances VALUES (4, 'h', 's')")
        .unwrap();

    // A custom dump is not something MariaDB or SQLite can load.
    for other in [mariadb(tmp.path()), sqlite(tmp.path())] {
        let name = unique_name();
        let err = other.create_from_seed(&name, &seed).unwrap_err();
        assert!(matches!(err, EngineError::SeedLoad(_)), "{err}");
        assert_no_database(&other, &name);
    }
}

#[test]
fn postgres_counters_move_after_an_update() {
    let tmp = TempDir::new().unwrap();
    let server = postgres(tmp.path());
    let after = counters_move_after(
        &server,
        tmp.path(),
        PG_DUMP,
        "UPDATE instances SET vm_state = 'deleted'; DELETE FROM instances WHERE id = 1; \
         INSERT INTO instances VALUES (10, 'new-1', 'a'), (11, 'new-2', 'a');",
    );
    assert_eq!(
        counter(&after, "Innodb_rows_read"),
        counter(&after, "pg_tup_returned")
    );
    assert_eq!(
        counter(&after, "Innodb_rows_updated"),
        counter(&after, "pg_tup_updated")
    );
    assert!(after.contains_key("pg_tup_fetched"));
    let err = server.counters(&unique_name()).unwrap_err();
    assert!(matches!(err, EngineError::Other(_)), "{err}");
}

#[test]
fn postgres_broken_seed_is_a_seed_load_error_and_leaves_nothing() {
    let tmp = TempDir::new().unwrap();
    let seed = write_gz_seed(tmp.path(), "broken.sql.gz", BROKEN_SEED);
    broken_seed_is_a_seed_load_error(&postgres(tmp.path()), &seed, &["syntax error"]);
}

#[test]
fn postgres_unknown_role_is_refused() {
    let tmp = TempDir::new().unwrap();
    let _check = postgres(tmp.path());
    let role = unique_name();
    let server = Server::new(
        Engine::PostgreSql,
        Connection {
            user: Some(role.clone()),
            ..tcp("127.0.0.1", 5432)
        },
        tmp.path().to_path_buf(),
    );
    let seed = write_seed(tmp.path(), "nova.sql", PG_DUMP);
    let err = server.create_from_seed(&unique_name(), &seed).unwrap_err();
    assert!(
        matches!(&err, EngineError::Refused(m) if m.contains(&role) && m.contains("does not exist")),
        "{err}"
    );
}

#[test]
fn postgres_cancelled_load_stops_and_drops_the_database() {
    let tmp = TempDir::new().unwrap();
    let server = postgres(tmp.path());
    cancelled_load_stops_and_drops_the_database(
        &server,
        tmp.path(),
        "CREATE TABLE t (id int);\nSELECT pg_sleep(30);\n",
    );
}

// --- SQLite ----------------------------------------------------------------------------

#[test]
fn sqlite_loads_plain_and_gzipped_seeds() {
    let tmp = TempDir::new().unwrap();
    let server = sqlite(tmp.path());
    for seed in [
        write_seed(tmp.path(), "nova.sql", SQLITE_DUMP),
        write_gz_seed(tmp.path(), "nova.sql.gz", SQLITE_DUMP),
    ] {
        let before = fingerprint(&seed);
        let db = DbGuard::new(&server);

        server.create_from_seed(&db.name, &seed).unwrap();

        assert_eq!(fingerprint(&seed), before, "the seed must not change");
        let path = server.sqlite_path(&db.name);
        assert!(path.is_file(), "{}", path.display());
        assert_eq!(
            path,
            tmp.path().join("dbs").join(format!("{}.sqlite", db.name))
        );
        assert_versions(&server, &db.name);
        assert_eq!(
            server.sqlalchemy_url(&db.name),
            format!("sqlite:///{}", path.display())
        );
        assert!(server.sqlalchemy_url(&db.name).starts_with("sqlite:////"));
        assert_eq!(server.counters(&db.name).unwrap(), BTreeMap::new());
        server
            .execute(
                &db.name,
                "UPDATE instances SET vm_state = 'x'; DELETE FROM instances;",
            )
            .unwrap();
        let err = server.execute(&db.name, "SELECT * FROM nope").unwrap_err();
        assert!(
            matches!(&err, EngineError::Other(m) if m.contains("no such table")),
            "{err}"
        );
        assert_eq!(
            server.databases_with_prefix(&db.name).unwrap(),
            vec![db.name.clone()]
        );
        let again = server.create_from_seed(&db.name, &seed).unwrap_err();
        assert!(matches!(again, EngineError::Other(_)), "{again}");

        server.drop_database(&db.name).unwrap();
        assert!(!path.exists());
        assert_no_database(&server, &db.name);
        assert!(server
            .schema_version(&db.name, &VersionSource::MigrateVersion)
            .is_err());
    }
}

#[test]
fn sqlite_broken_seed_is_a_seed_load_error_and_leaves_no_file() {
    let tmp = TempDir::new().unwrap();
    let server = sqlite(tmp.path());
    let seed = write_seed(tmp.path(), "broken.sql", BROKEN_SEED);
    let db = DbGuard::new(&server);

    let err = server.create_from_seed(&db.name, &seed).unwrap_err();

    assert!(
        matches!(&err, EngineError::SeedLoad(m) if m.contains("syntax error")),
        "{err}"
    );
    assert!(!server.sqlite_path(&db.name).exists());
    assert_no_database(&server, &db.name);
}

// --- URLs ------------------------------------------------------------------------------

#[test]
fn sqlalchemy_urls_have_the_documented_shapes() {
    let dir = PathBuf::from("/tmp/th");
    let url =
        |engine, connection| Server::new(engine, connection, dir.clone()).sqlalchemy_url("db1");
    assert_eq!(
        url(Engine::MySql, Connection::default()),
        "mysql+pymysql://root@127.0.0.1:3306/db1"
    );
    assert_eq!(
        url(
            Engine::MariaDb,
            Connection {
                user: Some("nova user".into()),
                password: Some("p@ss:w/rd%".into()),
                ..tcp("db.example.org", 3307)
            }
        ),
        "mysql+pymysql://nova%20user:p%40ss%3Aw%2Frd%25@db.example.org:3307/db1"
    );
    assert_eq!(
        url(
            Engine::MySql,
            Connection {
                password: Some("secret".into()),
                ..socket("/run/mysqld/mysqld.sock")
            }
        ),
        "mysql+pymysql://root:secret@localhost/db1?unix_socket=/run/mysqld/mysqld.sock"
    );
    assert_eq!(
        url(Engine::PostgreSql, Connection::default()),
        "postgresql+psycopg2://postgres@127.0.0.1:5432/db1"
    );
    assert_eq!(
        url(
            Engine::PostgreSql,
            Connection {
                user: Some("u".into()),
                password: Some("a b".into()),
                ..tcp("::1", 5433)
            }
        ),
        "postgresql+psycopg2://u:a%20b@[::1]:5433/db1"
    );
    assert_eq!(
        url(Engine::PostgreSql, socket("/var/run/postgresql")),
        "postgresql+psycopg2://postgres@/db1?host=/var/run/postgresql"
    );
    assert_eq!(
        url(Engine::Sqlite, Connection::default()),
        "sqlite:////tmp/th/db1.sqlite"
    );
}

/// Counts `instances` through SQLAlchemy with the URL we hand to migration tools.
fn count_through_sqlalchemy(url: &str) -> String {
    let script = "import sys, sqlalchemy\n\
                  engine = sqlalchemy.create_engine(sys.argv[1])\n\
                  with engine.connect() as c:\n    \
                  print(c.execute(sqlalchemy.text('SELECT count(*) FROM instances')).scalar())\n";
    let out = Command::new(test_python())
        .args(["-c", script, url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "SQLAlchemy could not use {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn sqlalchemy_urls_work_with_the_python_drivers() {
    let tmp = TempDir::new().unwrap();
    let root = mariadb(tmp.path());
    let user = unique_name();
    let password = "p@ss:w/rd% #?&=";
    root.execute(
        "mysql",
        &format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'; \
             CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}'; \
             GRANT ALL PRIVILEGES ON `th\\_test\\_%`.* TO '{user}'@'%'; \
             GRANT ALL PRIVILEGES ON `th\\_test\\_%`.* TO '{user}'@'localhost';"
        ),
    )
    .unwrap();
    let _drop_user = SqlGuard {
        server: &root,
        database: "mysql",
        sql: format!("DROP USER IF EXISTS '{user}'@'%', '{user}'@'localhost'"),
    };
    let credentials = |c: Connection| Connection {
        user: Some(user.clone()),
        password: Some(password.to_string()),
        ..c
    };
    let servers = [
        Server::new(
            Engine::MariaDb,
            credentials(tcp("127.0.0.1", 3306)),
            tmp.path().into(),
        ),
        Server::new(
            Engine::MariaDb,
            credentials(socket(MARIADB_SOCKET)),
            tmp.path().into(),
        ),
        postgres(tmp.path()),
        server(Engine::PostgreSql, socket(PG_SOCKET_DIR), tmp.path()),
        sqlite(tmp.path()),
    ];
    let mysql_seed = write_seed(tmp.path(), "mysql.sql", MYSQL_DUMP);
    let pg_seed = write_seed(tmp.path(), "pg.sql", PG_DUMP);
    let sqlite_seed = write_seed(tmp.path(), "sqlite.sql", SQLITE_DUMP);
    for server in &servers {
        let seed = match server.engine() {
            Engine::PostgreSql => &pg_seed,
            Engine::Sqlite => &sqlite_seed,
            _ => &mysql_seed,
        };
        let db = DbGuard::new(server);
        server.create_from_seed(&db.name, seed).unwrap();
        assert_eq!(
            count_through_sqlalchemy(&server.sqlalchemy_url(&db.name)),
            "3",
            "{:?}",
            server
        );
    }
}
