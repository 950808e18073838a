//! Benchmark: what observing the locks costs a migration. The same rewrite (`ALTER TABLE …
//! ADD COLUMN … DEFAULT random()` on `TH_BENCH_LOCK_ROWS` rows, default 200000; the issue's
//! figure is a million) runs on the real PostgreSQL server alternately without observation
//! and with a sampler every 100 ms (the default) and every 10 ms, three times each; prints the
//! median wall time of each and the overhead. The smoke run only checks that the observed runs
//! saw the rewrite's ACCESS EXCLUSIVE hold.
//!
//! `TH_BENCH_LOCK_ROWS=1000000 cargo test --release -p gate_real_db_upgrade --test
//! bench_lock_observation -- --nocapture`
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use std::time::{Duration, Instant};

use gate_real_db_upgrade::dataset::{Connection, Engine};
use gate_real_db_upgrade::engine::Server;
use turbo_hipster_tests::db_servers::psql;

fn rows() -> u64 {
    std::env::var("TH_BENCH_LOCK_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

/// One rewrite of `big`, observed every `every` (`None`: not observed): its wall time and
/// the longest blocking hold seen on `big`.
fn rewrite(server: &Server, db: &str, column: &str, every: Option<Duration>) -> (f64, f64) {
    let observer = every.map(|e| server.observe_locks(db, e).unwrap());
    let started = Instant::now();
    server
        .execute(
            db,
            &format!("ALTER TABLE big ADD COLUMN {column} FLOAT DEFAULT random()"),
        )
        .unwrap();
    let took = started.elapsed().as_secs_f64();
    let held = observer
        .map(|o| o.finish().unwrap().0)
        .unwrap_or_default()
        .iter()
        .filter(|t| t.table == "big")
        .filter_map(|t| t.longest_blocking)
        .map(|h| h.seconds)
        .fold(0.0, f64::max);
    (took, held)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn postgresql_rewrite_with_and_without_lock_observation() {
    let db = format!("thb_locks_{}", std::process::id());
    psql("postgres", &format!("CREATE DATABASE {db}"));
    psql(
        &db,
        &format!(
            "CREATE TABLE big (id INTEGER PRIMARY KEY, v INTEGER); \
             INSERT INTO big SELECT g, g FROM generate_series(1, {}) g",
            rows()
        ),
    );
    let server = Server::new(Engine::PostgreSql, Connection::default(), PathBuf::new());
    let settings = [
        ("off", None),
        ("100 ms", Some(Duration::from_millis(100))),
        ("10 ms", Some(Duration::from_millis(10))),
    ];
    let mut times = vec![Vec::new(); settings.len()];
    let mut holds = vec![Vec::new(); settings.len()];
    for round in 0..3 {
        for (i, (_, every)) in settings.iter().enumerate() {
            let (took, held) = rewrite(&server, &db, &format!("c{round}_{i}"), *every);
            times[i].push(took);
            holds[i].push(held);
        }
    }
    psql("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));
    let base = median(times[0].clone());
    println!("rewrite of {} rows, median of 3:", rows());
    for (i, (name, _)) in settings.iter().enumerate() {
        let t = median(times[i].clone());
        println!(
            "  observation {name:>6}: {t:.3} s ({:+.1} %), longest hold seen {:.3} s",
            (t / base - 1.0) * 100.0,
            median(holds[i].clone())
        );
    }
    // The sampler saw the rewrite's lock whenever it lasted several sampling intervals (a
    // short one may fall between two samples).
    for (i, (name, every)) in settings.iter().enumerate().skip(1) {
        let every = every.unwrap_or_default().as_secs_f64();
        for (took, held) in times[i].iter().zip(&holds[i]) {
            if *took > 4.0 * every {
                assert!(*held > 0.0, "{name}: no hold seen in a {took:.3} s rewrite");
            }
        }
    }
}
