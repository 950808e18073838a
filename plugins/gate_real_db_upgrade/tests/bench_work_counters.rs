//! Benchmark: what counting the work per migration costs (engine/counters.rs).
//!
//! - MariaDB: the counters come from `performance_schema`, which a run-private `mariadbd`
//!   starts with (table I/O only, counted, not timed). The cost is paid by every row the
//!   migration touches, so the same migration (insert `TH_BENCH_COUNTER_ROWS` rows, default
//!   300000, update them all, delete a tenth) runs on two private servers, one as runs get it
//!   and one as `count_work: false` starts it (no `performance_schema`), alternately, five
//!   times each; prints the median wall time and server CPU time (`/proc/<pid>/stat` of the
//!   `mariadbd`: steadier than wall time on a shared machine) of each and the overhead.
//! - PostgreSQL: the server counts rows whether anyone reads the counts or not; the cost is
//!   the reading at each migration boundary ([`Observation::cut`]): prints the median time of
//!   one cut with counters, and of one cut with everything off (nothing is read).
//!
//! `TH_BENCH_COUNTER_ROWS=1000000 cargo test --release -p gate_real_db_upgrade --test
//! bench_work_counters -- --nocapture`
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use gate_real_db_upgrade::dataset::{Connection, Engine};
use gate_real_db_upgrade::engine::{Binaries, Instance, Observation, Server};
use turbo_hipster_sdk::support::process::NeverCancelled;
use turbo_hipster_tests::db_servers::psql;

fn rows() -> u64 {
    std::env::var("TH_BENCH_COUNTER_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000)
}

/// Rounds of each setting, alternating.
const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU seconds process `pid` has used (user + system), from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (in parentheses): utime and stime are 14th and 15th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let hz: f64 = String::from_utf8(
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    ticks / hz
}

/// The migration: a fresh table of `rows()` rows, all updated, a tenth deleted; wall time.
fn migration(server: &Server, db: &str, round: usize) -> f64 {
    let table = format!("big{round}");
    let started = Instant::now();
    server
        .execute(
            db,
            &format!(
                "CREATE TABLE {table} (id INTEGER PRIMARY KEY, v INTEGER) ENGINE=InnoDB; \
                 INSERT INTO {table} SELECT seq, seq FROM seq_1_to_{rows}; \
                 UPDATE {table} SET v = v + 1; \
                 DELETE FROM {table} WHERE v % 10 = 0",
                rows = rows()
            ),
        )
        .unwrap();
    started.elapsed().as_secs_f64()
}

#[test]
fn mariadb_private_server_with_and_without_performance_schema() {
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
    let start = |name: &str, count_work| {
        let instance = Instance {
            binaries,
            dir: tmp.path().join(name),
            engine: Engine::MariaDb,
            profile: &profile,
            user: "bench".into(),
            password: "bench-pw".into(),
            via_socket: false,
            count_work,
        };
        instance.install().unwrap();
        instance.start(None, &NeverCancelled).unwrap()
    };
    let mut on = start("on", true);
    let mut off = start("off", false);
    let db = "bench_counters";
    let servers = [
        ("counted (performance_schema on)", &on),
        ("count_work: false (off)", &off),
    ];
    let mut times = vec![Vec::new(); 2];
    let mut cpu = vec![Vec::new(); 2];
    for (_, private) in &servers {
        private
            .server()
            .execute("mysql", &format!("CREATE DATABASE {db}"))
            .unwrap();
    }
    // The counters are there on one, not on the other.
    let reader = on.server().count_work(db).unwrap();
    assert_eq!(
        reader.source(),
        "performance_schema.table_io_waits_summary_by_table"
    );
    drop(reader);
    let reader = off.server().count_work(db).unwrap();
    assert_ne!(
        reader.source(),
        "performance_schema.table_io_waits_summary_by_table"
    );
    drop(reader);
    for round in 0..ROUNDS {
        for (i, (_, private)) in servers.iter().enumerate() {
            let pid = private.pid().unwrap();
            let before = cpu_seconds(pid);
            times[i].push(migration(&private.server(), db, round));
            cpu[i].push(cpu_seconds(pid) - before);
        }
    }
    let names = servers.map(|(name, _)| name);
    on.shut_down().unwrap();
    off.shut_down().unwrap();
    let base = median(times[1].clone());
    let base_cpu = median(cpu[1].clone());
    println!(
        "MariaDB private server, insert + update + delete of {} rows, median of {ROUNDS}:",
        rows()
    );
    for (i, name) in names.iter().enumerate() {
        let (t, c) = (median(times[i].clone()), median(cpu[i].clone()));
        println!(
            "  {name:>32}: wall {t:.3} s ({:+.1} %), server CPU {c:.3} s ({:+.1} %)",
            (t / base - 1.0) * 100.0,
            (c / base_cpu - 1.0) * 100.0
        );
    }
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
    let mut timings: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    counted.cut();
    for _ in 0..50 {
        for (name, o) in [("with counters", &counted), ("all off", &off)] {
            let started = Instant::now();
            let cut = o.cut();
            timings
                .entry(name)
                .or_default()
                .push(started.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(cut.counters.is_some(), name == "with counters");
        }
    }
    drop(counted);
    psql("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));
    println!("PostgreSQL, one cut at a migration boundary, median of 50:");
    for (name, t) in timings {
        println!("  {name:>14}: {:.3} ms", median(t));
    }
}
