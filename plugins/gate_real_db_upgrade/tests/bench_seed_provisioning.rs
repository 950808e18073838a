//! Benchmark: giving a run its database by reloading the seed versus by the fast path (a clone
//! of the golden copy; for MariaDB a private server on a copy of the golden datadir), through
//! the plugin's own [`Provider`], on the real servers.
//!
//! The dataset is generated: three tables with indexes and realistic rows (customers, orders,
//! order events), `TH_BENCH_SEED_MB` megabytes of dump (default 1: the CI smoke run; use
//! `TH_BENCH_SEED_MB=1024` on demand). PostgreSQL: generated server-side and dumped with
//! `pg_dump` (COPY format, as production dumps are); MariaDB: generated server-side and
//! dumped with `mariadb-dump` (extended INSERTs); SQLite: INSERT statements. Prints, per
//! engine, seconds and MB/s of the reload, the one-off golden copy build, and the clone, and
//! the reload/clone ratio. With `TH_BENCH_ASSERT=1` it fails below the targets (PostgreSQL ≥
//! 10×, MariaDB ≥ 5×); the smoke run only checks both paths give the same contents.
//!
//! `TH_BENCH_SEED_MB=1024 TH_BENCH_ASSERT=1 cargo test --release -p gate_real_db_upgrade
//! --test bench_seed_provisioning -- --nocapture`
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use gate_real_db_upgrade::dataset::{load_datasets, Connection, Dataset, DatasetDefaults, Engine};
use gate_real_db_upgrade::engine::{Server, VersionSource};
use gate_real_db_upgrade::provisioning::{Provided, Provider};
use serde_json::json;
use turbo_hipster_sdk::support::process::NeverCancelled;
use turbo_hipster_tests::db_servers::{mariadb, psql, DbKind};

/// The shared MariaDB server's port.
const SHARED: u16 = DbKind::MariaDb.shared_port();

fn size_mb() -> u64 {
    std::env::var("TH_BENCH_SEED_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Rows per table for about `mb` MB of dump (three tables, ~110 bytes a row each).
fn rows_for(mb: u64) -> u64 {
    mb * 3000
}

const PG_SCHEMA: &str = "
CREATE TABLE customers (id BIGINT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL REFERENCES customers(id),
  amount NUMERIC(12,2) NOT NULL, status TEXT NOT NULL, note TEXT);
CREATE TABLE order_events (id BIGINT PRIMARY KEY, order_id BIGINT NOT NULL REFERENCES orders(id),
  kind TEXT NOT NULL, at TIMESTAMPTZ NOT NULL, payload TEXT);
CREATE INDEX customers_email ON customers (email);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE INDEX orders_status ON orders (status);
CREATE INDEX events_order ON order_events (order_id);
";

fn pg_generate(db: &str, rows: u64) {
    psql(db, PG_SCHEMA);
    psql(
        db,
        &format!(
            "INSERT INTO customers SELECT g, 'Customer ' || g || ' ' || md5(g::text), \
         'user' || g || '@example.' || (ARRAY['com','org','net'])[1 + g % 3], \
         TIMESTAMPTZ '2020-01-01' + g * INTERVAL '17 seconds' FROM generate_series(1::bigint, {rows}) g;
         INSERT INTO orders SELECT g, 1 + (g * 7919) % {rows}, (g % 10000) / 7.0, \
         (ARRAY['new','paid','shipped','returned'])[1 + g % 4], 'note ' || md5((g*3)::text) \
         FROM generate_series(1::bigint, {rows}) g;
         INSERT INTO order_events SELECT g, 1 + (g * 104729) % {rows}, \
         (ARRAY['created','paid','packed','shipped','delivered'])[1 + g % 5], \
         TIMESTAMPTZ '2021-01-01' + g * INTERVAL '5 seconds', md5((g*11)::text) || md5(g::text) \
         FROM generate_series(1::bigint, {rows}) g;"
        ),
    );
}

/// Runs `dump` (a dump tool given the output file's option last) writing database `db` to
/// `seed`; the seed's size in MB.
fn dump(mut dump: Command, db: &str, seed: &Path) -> f64 {
    let status = dump.arg(seed).arg(db).status().unwrap();
    assert!(status.success(), "{dump:?}");
    std::fs::metadata(seed).unwrap().len() as f64 / 1e6
}

/// A PostgreSQL seed at `seed` (`pg_dump`): the generated rows, then `extra`, in scratch
/// database `scratch` (dropped after); its size in MB.
fn pg_seed(server: &Server, scratch: &str, extra: Option<&str>, seed: &Path) -> f64 {
    let _ = server.drop_database(scratch);
    server
        .execute("postgres", &format!("CREATE DATABASE {scratch}"))
        .unwrap();
    pg_generate(scratch, rows_for(size_mb()));
    if let Some(sql) = extra {
        psql(scratch, sql);
    }
    let mut pg_dump = Command::new("pg_dump");
    pg_dump.args(["-h", "127.0.0.1", "-U", "postgres", "--no-owner", "-f"]);
    let mb = dump(pg_dump, scratch, seed);
    server.drop_database(scratch).unwrap();
    mb
}

fn sqlite_seed(rows: u64) -> String {
    let mut sql = String::from("BEGIN;\n");
    sql.push_str(
        &PG_SCHEMA
            .replace("TIMESTAMPTZ", "TEXT")
            .replace("BIGINT", "INTEGER"),
    );
    for g in 1..=rows {
        let _ = writeln!(
            sql,
            "INSERT INTO customers VALUES ({g}, 'Customer {g} {g:032x}', 'user{g}@example.com', '2020-01-01 00:00:{:02}');",
            g % 60
        );
    }
    for g in 1..=rows {
        let _ = writeln!(
            sql,
            "INSERT INTO orders VALUES ({g}, {}, {}.{:02}, 'paid', 'note {:032x}');",
            1 + (g * 7919) % rows,
            g % 10000,
            g % 100,
            g * 3
        );
    }
    for g in 1..=rows {
        let _ = writeln!(
            sql,
            "INSERT INTO order_events VALUES ({g}, {}, 'shipped', '2021-01-01', '{:064x}');",
            1 + (g * 104_729) % rows,
            g * 11
        );
    }
    sql.push_str("COMMIT;\n");
    sql
}

/// Where the dataset `name` under `dir` (`dir/datasets/name`, made) keeps its seed (`seed.sql`).
fn seed_path(dir: &Path, name: &str) -> std::path::PathBuf {
    let ds = dir.join("datasets").join(name);
    std::fs::create_dir_all(&ds).unwrap();
    ds.join("seed.sql")
}

fn dataset(dir: &Path, engine: Engine, name: &str) -> Dataset {
    let ds = dir.join("datasets").join(name);
    let config = json!({"project": "bench/app", "engine": engine.name(), "seed_data": "seed.sql"});
    std::fs::write(ds.join("config.json"), config.to_string()).unwrap();
    load_datasets(&dir.join("datasets"), &DatasetDefaults::default())
        .unwrap()
        .remove(0)
}

struct Timed {
    reload: Provided,
    build: f64,
    /// The first clone after the build: PostgreSQL's FILE_COPY checkpoints first, which
    /// writes the freshly loaded golden copy out (part of the build's cost, really).
    first: Provided,
    /// A clone in the steady state: what every later run pays.
    clone: Provided,
}

fn provider<'a>(
    server: &'a Server,
    dataset: &'a Dataset,
    state: &'a Path,
    note: &'a (dyn Fn(&str) + Sync),
) -> Provider<'a> {
    Provider {
        server,
        dataset,
        state: Some(state),
        claims: None,
        cancel: &NeverCancelled,
        note,
    }
}

fn measure(server: &Server, dataset: &Dataset, state: &Path, db: &str) -> Timed {
    let note = |_: &str| {};
    let reload_ds = Dataset {
        provisioning: gate_real_db_upgrade::provisioning::Provisioning::Reload,
        ..dataset.clone()
    };
    let reload = provider(server, &reload_ds, state, &note)
        .provide(&format!("{db}_r"))
        .unwrap();
    let building = Instant::now();
    provider(server, dataset, state, &note)
        .prepare(true)
        .unwrap();
    let build = building.elapsed().as_secs_f64();
    let first = provider(server, dataset, state, &note)
        .provide(&format!("{db}_f"))
        .unwrap();
    let clone = provider(server, dataset, state, &note)
        .provide(&format!("{db}_c"))
        .unwrap();
    Timed {
        reload,
        build,
        first,
        clone,
    }
}

fn report(engine: &str, mb: f64, t: &Timed) -> f64 {
    let ratio = t.reload.seconds / t.clone.seconds;
    println!(
        "{engine}: seed {mb:.1} MB | reload {:.2} s ({:.1} MB/s) | golden build (once) {:.2} s | \
         first clone {:.3} s | {} {:.3} s ({:.1} MB/s) | ratio {ratio:.1}x",
        t.reload.seconds,
        mb / t.reload.seconds,
        t.build,
        t.first.seconds,
        t.clone.method,
        t.clone.seconds,
        mb / t.clone.seconds,
    );
    ratio
}

/// Drops the benchmark's PostgreSQL databases (scratch, runs, golden copy), even on a panic.
struct DropDatabases(Vec<String>);

impl Drop for DropDatabases {
    fn drop(&mut self) {
        let server = Server::new(Engine::PostgreSql, Connection::default(), "/".into());
        for prefix in &self.0 {
            for name in server.databases_with_prefix(prefix).unwrap_or_default() {
                let _ = server.drop_database(&name);
            }
        }
    }
}

fn assert_targets() -> bool {
    std::env::var("TH_BENCH_ASSERT").is_ok_and(|v| v == "1")
}

#[test]
fn postgresql_reload_versus_clone() {
    let tmp = tempfile::tempdir().unwrap();
    let tag = format!("thb{:x}", std::process::id());
    let server = Server::new(Engine::PostgreSql, Connection::default(), tmp.path().into());
    server.ping().unwrap();
    let _cleanup = DropDatabases(vec![tag.clone(), format!("th_golden_{tag}_")]);
    let seed = seed_path(tmp.path(), &tag);
    let mb = pg_seed(&server, &format!("{tag}_gen"), None, &seed);
    let ds = dataset(tmp.path(), Engine::PostgreSql, &tag);
    let state = tmp.path().join("state");
    let timed = measure(&server, &ds, &state, &tag);
    let content =
        "SELECT count(*) || md5(string_agg(id::text || email, ',' ORDER BY id)) FROM customers";
    let same = psql(&format!("{tag}_r"), content) == psql(&format!("{tag}_c"), content);
    assert!(same, "reload and clone differ");
    let ratio = report("PostgreSQL", mb, &timed);
    assert_eq!(timed.clone.method, "clone");
    if assert_targets() {
        assert!(
            ratio >= 10.0,
            "PostgreSQL clone only {ratio:.1}x faster than reload"
        );
    }
}

#[test]
fn sqlite_reload_versus_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = seed_path(tmp.path(), "benchsqlite");
    std::fs::write(&seed, sqlite_seed(rows_for(size_mb()))).unwrap();
    let mb = std::fs::metadata(&seed).unwrap().len() as f64 / 1e6;
    let ds = dataset(tmp.path(), Engine::Sqlite, "benchsqlite");
    let dbs = tmp.path().join("databases");
    std::fs::create_dir_all(&dbs).unwrap();
    let server = Server::new(Engine::Sqlite, Connection::default(), dbs);
    let timed = measure(&server, &ds, &tmp.path().join("state"), "bench");
    // Row counts and a sum over the rows, read back through the version-table reader.
    let digest = |db: &str| {
        server
            .execute(
                db,
                "CREATE TABLE th_check AS SELECT (SELECT count(*) || ':' || sum(length(email) * id) \
                 FROM customers) || '/' || (SELECT count(*) FROM order_events) AS version",
            )
            .unwrap();
        server
            .schema_version(db, &VersionSource::Table("th_check".into()))
            .unwrap()
            .unwrap()
    };
    let (reloaded, copied) = (digest("bench_r"), digest("bench_c"));
    assert_eq!(reloaded, copied, "reload and copy differ");
    assert!(
        reloaded.starts_with(&format!("{}:", rows_for(size_mb()))),
        "{reloaded}"
    );
    let ratio = report("SQLite", mb, &timed);
    assert!(["reflink", "copy"].contains(&timed.clone.method.as_str()));
    if assert_targets() {
        assert!(
            ratio >= 5.0,
            "SQLite copy only {ratio:.1}x faster than reload"
        );
    }
}

/// The MariaDB dataset, generated server-side (the sequence engine's `seq_1_to_<n>`).
fn mariadb_generate(db: &str, rows: u64) -> String {
    format!(
        "CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(80) NOT NULL,
           email VARCHAR(80) NOT NULL, created_at DATETIME NOT NULL,
           KEY customers_email (email)) ENGINE=InnoDB;
         CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL,
           amount DECIMAL(12,2) NOT NULL, status VARCHAR(16) NOT NULL, note VARCHAR(80),
           KEY orders_customer (customer_id), KEY orders_status (status)) ENGINE=InnoDB;
         CREATE TABLE order_events (id BIGINT PRIMARY KEY, order_id BIGINT NOT NULL,
           kind VARCHAR(16) NOT NULL, at DATETIME NOT NULL, payload VARCHAR(80),
           KEY events_order (order_id)) ENGINE=InnoDB;
         INSERT INTO `{db}`.customers SELECT seq, CONCAT('Customer ', seq, ' ', MD5(seq)),
           CONCAT('user', seq, '@example.', ELT(1 + seq % 3, 'com', 'org', 'net')),
           '2020-01-01' + INTERVAL seq * 17 SECOND FROM seq_1_to_{rows};
         INSERT INTO `{db}`.orders SELECT seq, 1 + (seq * 7919) % {rows}, (seq % 10000) / 7,
           ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'returned'), CONCAT('note ', MD5(seq * 3))
           FROM seq_1_to_{rows};
         INSERT INTO `{db}`.order_events SELECT seq, 1 + (seq * 104729) % {rows},
           ELT(1 + seq % 5, 'created', 'paid', 'packed', 'shipped', 'delivered'),
           '2021-01-01' + INTERVAL seq * 5 SECOND, CONCAT(MD5(seq * 11), MD5(seq))
           FROM seq_1_to_{rows};"
    )
}

/// A MariaDB seed at `seed` (`mariadb-dump`): the generated rows, then `extra`, in scratch
/// database `scratch` (dropped after; the caller drops it too should this fail); its size in
/// MB.
fn mariadb_seed(server: &Server, scratch: &str, extra: &str, seed: &Path) -> f64 {
    mariadb(SHARED, None, &format!("CREATE DATABASE `{scratch}`"));
    mariadb(
        SHARED,
        Some(scratch),
        &format!("{}{extra}", mariadb_generate(scratch, rows_for(size_mb()))),
    );
    let mut mariadb_dump = Command::new("mariadb-dump");
    mariadb_dump.args([
        "-h127.0.0.1",
        "-uroot",
        "--single-transaction",
        "--result-file",
    ]);
    let mb = dump(mariadb_dump, scratch, seed);
    server.drop_database(scratch).unwrap();
    mb
}

/// Drops the benchmark's MariaDB databases, even on a panic.
struct DropMariaDb(Vec<String>);

impl Drop for DropMariaDb {
    fn drop(&mut self) {
        let server = Server::new(Engine::MariaDb, Connection::default(), "/".into());
        for name in &self.0 {
            let _ = server.drop_database(name);
        }
    }
}

#[test]
fn mariadb_reload_versus_private_server() {
    let tmp = tempfile::tempdir().unwrap();
    let tag = format!("thbm{:x}", std::process::id());
    let server = Server::new(Engine::MariaDb, Connection::default(), tmp.path().into());
    server.ping().unwrap();
    if let Err(why) = gate_real_db_upgrade::provisioning::mariadb::probe(&server) {
        eprintln!("skipped: no private server here ({why})");
        return;
    }
    let scratch = format!("{tag}_gen");
    let _cleanup = DropMariaDb(vec![scratch.clone(), format!("{tag}_r")]);
    let seed = seed_path(tmp.path(), &tag);
    let mb = mariadb_seed(&server, &scratch, "", &seed);
    let ds = dataset(tmp.path(), Engine::MariaDb, &tag);
    let timed = measure(&server, &ds, &tmp.path().join("state"), &tag);
    let content = "SELECT CONCAT(COUNT(*), ':', SUM(CRC32(CONCAT(id, email)))) FROM customers";
    let private = timed.clone.private.as_ref().expect("a private server");
    let port = private.server.port();
    let reloaded = mariadb(SHARED, Some(&format!("{tag}_r")), content);
    let copied = mariadb(port, Some(&private.database), content);
    assert_eq!(reloaded, copied, "reload and private server differ");
    assert!(
        reloaded.starts_with(&format!("{}:", rows_for(size_mb()))),
        "{reloaded}"
    );
    let ratio = report("MariaDB", mb, &timed);
    assert_eq!(timed.clone.method, "private");
    if assert_targets() {
        assert!(
            ratio >= 5.0,
            "MariaDB private server only {ratio:.1}x faster than reload"
        );
    }
}

/// A whole job's figures: the first job (which builds the golden copy) and the one after.
struct WholeJob {
    first: f64,
    took: f64,
    /// Of `took`: the run's database made, and the migrations.
    provisioning: f64,
    migrations: f64,
}

impl WholeJob {
    /// Prints `head` (with `{took}` and `{first}` filled in), what the job adds over `alone`
    /// and where its time goes; with `TH_BENCH_ASSERT=1` fails when it adds more than 2 s.
    fn report(&self, head: &str, made_by: &str, end: &str, alone: f64) {
        let adds = self.took - alone;
        let head = head
            .replace("{took}", &format!("{:.2} s", self.took))
            .replace("{first}", &format!("{:.2} s", self.first));
        println!("{head} | the job adds {adds:.2} s");
        println!(
            "  where the job's time goes: database by {made_by} {:.2} s, migrations {:.2} s, \
             the rest {:.2} s (start, plugin load, git fetch and checkout, logs, version \
             check, {end}, summary)",
            self.provisioning,
            self.migrations,
            self.took - self.provisioning - self.migrations
        );
        if assert_targets() {
            assert!(
                adds <= 2.0,
                "the job adds {adds:.2} s over {made_by} + migration"
            );
        }
    }
}

/// The job half of a whole-job benchmark: dataset `tag` (its `seed.sql` already in place,
/// SQL-files mode), a change adding `migration`, a first job (it builds the golden copy) and
/// a second, whose database must be made by `method`; its figures and its dataset summary.
fn two_jobs(
    world: &mut turbo_hipster_tests::gate::World,
    tag: &str,
    migration: &str,
    method: &str,
) -> (WholeJob, serde_json::Value) {
    world.dataset(
        tag,
        json!({
            "project": "bench/app", "database": tag, "seed_data": "seed.sql",
            "migration": {"sql_dir": "sql", "version_table": "th_schema_version"},
            "expected_version": "last_sql_file", "timeout": 3600,
        }),
        &[],
    );
    world.project("bench/app", &[("sql/001_base.sql", "SELECT 1;\n")]);
    let change = world.propose("bench/app", &[("sql/002_change.sql", migration)]);
    let first = world.run("bench/app", &change);
    assert_eq!(first.result, "SUCCESS", "{}", first.describe());
    let job = world.run("bench/app", &change);
    assert_eq!(job.result, "SUCCESS", "{}", job.describe());
    let ds = job.summary["datasets"][0].clone();
    assert_eq!(ds["provisioning"]["method"], method, "{}", job.describe());
    let migrations = ds["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["duration_ms"].as_f64())
        .sum::<f64>()
        / 1000.0;
    let figures = WholeJob {
        first: first.took.as_secs_f64(),
        took: job.took.as_secs_f64(),
        provisioning: ds["provisioning"]["seconds"].as_f64().unwrap(),
        migrations,
    };
    (figures, ds)
}

/// A whole job on the benchmark's PostgreSQL dataset with one small migration (SQL-files mode,
/// through `run-job`, the golden copy built by an earlier job) against what it cannot do
/// without: cloning the golden copy and applying the same migration, measured alone. Prints
/// both, what the job adds, and where the job's time goes. Target: the job adds at most 2 s
/// (`TH_BENCH_ASSERT=1`).
#[test]
fn postgresql_whole_job_against_clone_and_migration_alone() {
    let mut world = turbo_hipster_tests::gate::World::new(json!({"engine": "postgresql"}));
    let tag = format!("thj{:x}", std::process::id());
    let server = Server::new(
        Engine::PostgreSql,
        Connection::default(),
        world.root.clone(),
    );
    server.ping().unwrap();
    let _cleanup = DropDatabases(vec![tag.clone(), format!("th_golden_{tag}_")]);
    let seed = seed_path(&world.root, &tag);
    let mb = pg_seed(
        &server,
        &format!("{tag}_gen"),
        Some(
            "CREATE TABLE th_schema_version (version VARCHAR(64) NOT NULL); \
             INSERT INTO th_schema_version VALUES ('1')",
        ),
        &seed,
    );
    let migration = "ALTER TABLE customers ADD COLUMN nickname TEXT;\n\
                     CREATE INDEX bench_orders_amount ON orders (amount);\n";
    let (job, ds) = two_jobs(&mut world, &tag, migration, "clone");
    let golden = ds["provisioning"]["golden"].as_str().unwrap().to_string();

    // Alone: the clone and the same migration, then the drop.
    let alone_db = format!("{tag}_alone");
    let started = Instant::now();
    server.clone_database(&golden, &alone_db).unwrap();
    let cloned = started.elapsed().as_secs_f64();
    psql(&alone_db, migration);
    let migrated = started.elapsed().as_secs_f64() - cloned;
    server.drop_database(&alone_db).unwrap();
    let alone = started.elapsed().as_secs_f64();

    job.report(
        &format!(
            "PostgreSQL whole job: seed {mb:.1} MB | job {{took}} (first, building the golden \
             copy: {{first}}) | clone + migration + drop alone {alone:.2} s (clone {cloned:.2} \
             s, migration {migrated:.2} s)"
        ),
        "clone",
        "drop",
        alone,
    );
}

/// The same for MariaDB: a whole job (its database a private server on a copy of the golden
/// datadir) against providing that private server, applying the migration and stopping it,
/// measured alone through the plugin's own [`Provider`].
#[test]
fn mariadb_whole_job_against_private_server_and_migration_alone() {
    let mut world = turbo_hipster_tests::gate::World::new(json!({"engine": "mariadb"}));
    let tag = format!("thjm{:x}", std::process::id());
    let server = Server::new(Engine::MariaDb, Connection::default(), world.root.clone());
    server.ping().unwrap();
    if let Err(why) = gate_real_db_upgrade::provisioning::mariadb::probe(&server) {
        eprintln!("skipped: no private server here ({why})");
        return;
    }
    let scratch = format!("{tag}_gen");
    let _cleanup = DropMariaDb(vec![scratch.clone()]);
    let seed = seed_path(&world.root, &tag);
    let mb = mariadb_seed(
        &server,
        &scratch,
        " CREATE TABLE th_schema_version (version VARCHAR(64) NOT NULL); \
         INSERT INTO th_schema_version VALUES ('1');",
        &seed,
    );
    let migration = "ALTER TABLE customers ADD COLUMN nickname VARCHAR(40);\n\
                     CREATE INDEX bench_orders_amount ON orders (amount);\n";
    let (job, _) = two_jobs(&mut world, &tag, migration, "private");

    // Alone: a private server from the same golden copy, the migration, the stop.
    let dataset = load_datasets(&world.datasets, &DatasetDefaults::default())
        .unwrap()
        .into_iter()
        .find(|d| d.name == tag)
        .unwrap();
    let state = world.root.join("jobs/.gate_real_db_upgrade-golden");
    let note = |_: &str| {};
    let started = Instant::now();
    let provided = provider(&server, &dataset, &state, &note)
        .provide(&format!("{tag}_alone"))
        .unwrap();
    let made = started.elapsed().as_secs_f64();
    let private = provided.private.as_ref().expect("a private server");
    let port = private.server.port();
    mariadb(port, Some(&private.database), migration);
    let migrated = started.elapsed().as_secs_f64() - made;
    drop(provided);
    let alone = started.elapsed().as_secs_f64();

    job.report(
        &format!(
            "MariaDB whole job: seed {mb:.1} MB | job {{took}} (first, building the golden \
             datadir: {{first}}) | private server + migration + stop alone {alone:.2} s \
             (server {made:.2} s, migration {migrated:.2} s)"
        ),
        "private server",
        "server stop",
        alone,
    );
}
