//! Benchmark: what counting the work per migration costs (engine/counters.rs).
//!
//! - MariaDB: a run-private `mariadbd` holds the run's database only, so its own status
//!   counters (`SHOW GLOBAL STATUS`: `Rows_read`, `Handler_write`, …), which MariaDB keeps
//!   whether anyone reads them or not, are the run's work. The cost is the reading at each
//!   migration boundary ([`Observation::cut`]): a migration (insert `TH_BENCH_COUNTER_ROWS`
//!   rows, default 300000, update them all, delete a tenth) is counted to check the figures,
//!   then the median time of one cut with counters and of one with everything off (nothing
//!   is read) is printed.
//! - PostgreSQL: the server counts rows whether anyone reads the counts or not; the cost is
//!   the reading at each migration boundary: the same two medians.
//!
//! The whole observation's cost on real jobs, on and off: `bench_observation.rs`.
//!
//! `TH_BENCH_COUNTER_ROWS=1000000 cargo test -p gate_real_db_upgrade --test
//! bench_work_counters -- --nocapture`
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use gate_real_db_upgrade::dataset::{Connection, Engine};
use gate_real_db_upgrade::engine::{Binaries, Instance, Observation, Server};
use turbo_hipster_sdk::support::process::NeverCancelled;
use turbo_hipster_tests::db_servers::psql;

fn rows() -> i64 {
    std::env::var("TH_BENCH_COUNTER_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median time in ms of one cut of each observation, alternately, 50 times each.
fn time_cuts(observations: &[(&'static str, &Observation)]) -> BTreeMap<&'static str, f64> {
    let mut timings: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _ in 0..50 {
        for (name, o) in observations {
            let started = Instant::now();
            let cut = o.cut();
            timings
                .entry(name)
                .or_default()
                .push(started.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(cut.counters.is_some(), *name == "with counters");
        }
    }
    timings.into_iter().map(|(k, v)| (k, median(v))).collect()
}

fn print_cuts(what: &str, cuts: &BTreeMap<&str, f64>) {
    println!("{what}, one cut at a migration boundary, median of 50:");
    for (name, ms) in cuts {
        println!("  {name:>14}: {ms:.3} ms");
    }
}

#[test]
fn mariadb_private_server_cut_with_and_without_counters() {
    let shared = Server::new(Engine::MariaDb, Connection::default(), PathBuf::new());
    shared.ping().unwrap();
    let binaries = match Binaries::find() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("skipped: no mariadbd here ({why})");
            return;
        }
    };
    let profile = shared.profile().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let instance = Instance {
        binaries,
        dir: tmp.path().join("private"),
        engine: Engine::MariaDb,
        profile: &profile,
        user: "bench".into(),
        password: "bench-pw".into(),
        via_socket: false,
    };
    instance.install().unwrap();
    let mut private = instance.start(None, &NeverCancelled).unwrap();
    let server = private.server();
    let db = "bench_counters";
    server
        .execute("mysql", &format!("CREATE DATABASE {db}"))
        .unwrap();
    let counted = Observation::new(None, Some(server.count_work(db).unwrap()));
    let n = rows();
    // The counters are the migration's rows: the sequence's rows read and inserted, then
    // every row read by the update and by the delete.
    counted.cut();
    let started = Instant::now();
    server
        .execute(
            db,
            &format!(
                "CREATE TABLE big (id INTEGER PRIMARY KEY, v INTEGER) ENGINE=InnoDB; \
                 INSERT INTO big SELECT seq, seq FROM seq_1_to_{n}; \
                 UPDATE big SET v = v + 1; \
                 DELETE FROM big WHERE v % 10 = 0"
            ),
        )
        .unwrap();
    let took = started.elapsed().as_secs_f64();
    let work = counted.cut().counters.unwrap();
    assert_eq!(work["Innodb_rows_read"], 3 * n, "{work:?}");
    assert_eq!(work["Innodb_rows_inserted"], n, "{work:?}");
    assert_eq!(work["Innodb_rows_updated"], n, "{work:?}");
    assert_eq!(work["Innodb_rows_deleted"], n / 10, "{work:?}");
    let off = Observation::default();
    let cuts = time_cuts(&[("with counters", &counted), ("all off", &off)]);
    drop(counted);
    private.shut_down().unwrap();
    println!("MariaDB run-private server: insert + update + delete of {n} rows took {took:.3} s");
    print_cuts("MariaDB run-private server", &cuts);
    let per_boundary = cuts["with counters"] / 1000.0;
    println!(
        "  two boundaries of that migration: {:.3} % of its time",
        2.0 * per_boundary / took * 100.0
    );
}

#[test]
fn postgresql_cut_with_and_without_counters() {
    let db = format!("thb_counters_{}", std::process::id());
    psql("postgres", &format!("CREATE DATABASE {db}"));
    psql(
        &db,
        "CREATE TABLE a (id int); CREATE TABLE b (id int); INSERT INTO a SELECT generate_series(1, 1000)",
    );
    let server = Server::new(Engine::PostgreSql, Connection::default(), PathBuf::new());
    let counted = Observation::new(None, Some(server.count_work(&db).unwrap()));
    let off = Observation::default();
    counted.cut();
    let cuts = time_cuts(&[("with counters", &counted), ("all off", &off)]);
    drop(counted);
    psql("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));
    print_cuts("PostgreSQL", &cuts);
}
