//! Benchmark: what observing the locks and watching for rewrites cost a migration. The same
//! rewrite (`ALTER TABLE … ADD COLUMN … DEFAULT random()` on `TH_BENCH_LOCK_ROWS` rows, default
//! 200000; the figure is a million) runs on the real PostgreSQL server, in a database
//! of `TH_BENCH_TABLES` other tables (default 200, an OpenStack project's count), alternately
//! without observation, with a lock sampler every 100 ms (the default) and every 10 ms, and
//! with the sampler and the rewrite probe (the tables read before and after the migration, as
//! at each migration boundary; its reads are counted in the migration's time), three times
//! each; prints the median wall time of each, the overhead and the time of one probe read.
//! Off, nothing is started (no sampler, no probe): the run is the same code as without
//! observation. The smoke run checks that the observed runs saw the rewrite's ACCESS
//! EXCLUSIVE hold and the probe the rewrite.
//!
//! `TH_BENCH_LOCK_ROWS=1000000 cargo test --release -p gate_real_db_upgrade --test
//! bench_lock_observation -- --nocapture`
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use std::time::{Duration, Instant};

use gate_real_db_upgrade::dataset::{Connection, Engine};
use gate_real_db_upgrade::engine::{LockObserver, Server};
use turbo_hipster_tests::db_servers::psql;

fn rows() -> u64 {
    std::env::var("TH_BENCH_LOCK_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

fn tables() -> u64 {
    std::env::var("TH_BENCH_TABLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// How a run is observed.
#[derive(Clone, Copy)]
struct Observation {
    every: Option<Duration>,
    rewrites: bool,
}

/// One rewrite of `big` observed as `how`: its wall time (with the probe's reads before and
/// after, when it runs), the longest blocking hold seen on `big`, whether the probe saw the
/// rewrite, and the probe's reads' time.
fn rewrite(server: &Server, db: &str, column: &str, how: Observation) -> (f64, f64, bool, f64) {
    let observer = how.every.map(|e| {
        let observer = server.observe_locks(db, e).unwrap();
        if how.rewrites {
            observer.with_tables(server.table_probe(db).unwrap())
        } else {
            observer
        }
    });
    let read = |o: &Option<LockObserver>| {
        let started = Instant::now();
        let snapshot = o.as_ref().and_then(|o| o.tables()).map(Result::unwrap);
        (snapshot, started.elapsed().as_secs_f64())
    };
    let started = Instant::now();
    let (before, read_before) = read(&observer);
    server
        .execute(
            db,
            &format!("ALTER TABLE big ADD COLUMN {column} FLOAT DEFAULT random()"),
        )
        .unwrap();
    let (after, read_after) = read(&observer);
    let took = started.elapsed().as_secs_f64();
    let rewritten = match (before, after) {
        (Some(b), Some(a)) => b.tables["big"].storage != a.tables["big"].storage,
        _ => false,
    };
    let held = observer
        .map(|o| o.finish().unwrap().0)
        .unwrap_or_default()
        .iter()
        .filter(|t| t.table == "big")
        .filter_map(|t| t.longest_blocking)
        .map(|h| h.seconds)
        .fold(0.0, f64::max);
    (took, held, rewritten, read_before + read_after)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn postgresql_rewrite_with_and_without_lock_observation() {
    let db = format!("thb_locks_{}", std::process::id());
    psql("postgres", &format!("CREATE DATABASE {db}"));
    let others: String = (0..tables())
        .map(|i| format!("CREATE TABLE other_{i} (id INTEGER PRIMARY KEY, name TEXT); "))
        .collect();
    psql(
        &db,
        &format!(
            "CREATE TABLE big (id INTEGER PRIMARY KEY, v INTEGER); \
             INSERT INTO big SELECT g, g FROM generate_series(1, {}) g; {others}",
            rows()
        ),
    );
    let server = Server::new(Engine::PostgreSql, Connection::default(), PathBuf::new());
    let ms = |n| Some(Duration::from_millis(n));
    let settings = [
        (
            "off",
            Observation {
                every: None,
                rewrites: false,
            },
        ),
        (
            "locks 100 ms",
            Observation {
                every: ms(100),
                rewrites: false,
            },
        ),
        (
            "locks 10 ms",
            Observation {
                every: ms(10),
                rewrites: false,
            },
        ),
        (
            "locks 100 ms + rewrites",
            Observation {
                every: ms(100),
                rewrites: true,
            },
        ),
        (
            "locks 10 ms + rewrites",
            Observation {
                every: ms(10),
                rewrites: true,
            },
        ),
    ];
    let n = settings.len();
    let (mut times, mut holds, mut seen, mut reads) = (
        vec![Vec::new(); n],
        vec![Vec::new(); n],
        vec![Vec::new(); n],
        vec![Vec::new(); n],
    );
    for round in 0..3 {
        for (i, (_, how)) in settings.iter().enumerate() {
            let (took, held, rewritten, read) =
                rewrite(&server, &db, &format!("c{round}_{i}"), *how);
            times[i].push(took);
            holds[i].push(held);
            seen[i].push(rewritten);
            reads[i].push(read / 2.0);
        }
    }
    psql("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));
    let base = median(times[0].clone());
    println!(
        "rewrite of {} rows in a database of {} other tables, median of 3:",
        rows(),
        tables()
    );
    for (i, (name, how)) in settings.iter().enumerate() {
        let t = median(times[i].clone());
        println!(
            "  observation {name:>23}: {t:.3} s ({:+.1} %), longest hold seen {:.3} s{}",
            (t / base - 1.0) * 100.0,
            median(holds[i].clone()),
            if how.rewrites {
                format!(
                    ", one probe read {:.1} ms, rewrite seen {}",
                    median(reads[i].clone()) * 1000.0,
                    seen[i].iter().all(|s| *s)
                )
            } else {
                String::new()
            }
        );
    }
    // The sampler saw the rewrite's lock whenever it lasted several sampling intervals (a
    // short one may fall between two samples); the probe saw every rewrite.
    for (i, (name, how)) in settings.iter().enumerate().skip(1) {
        let every = how.every.unwrap_or_default().as_secs_f64();
        for (took, held) in times[i].iter().zip(&holds[i]) {
            if *took > 4.0 * every {
                assert!(*held > 0.0, "{name}: no hold seen in a {took:.3} s rewrite");
            }
        }
        assert!(
            !how.rewrites || seen[i].iter().all(|s| *s),
            "{name}: a rewrite not seen"
        );
    }
}
