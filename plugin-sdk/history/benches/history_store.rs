//! What the history costs a job: recording one job's migrations (20 samples, one transaction,
//! a connection of its own, as the daemon does after each job) and reading a dataset's
//! history (as the gate plugin does before its datasets run, and `history` does), on a SQLite
//! file and on the local PostgreSQL (a database of its own, dropped after).
//!
//! `cargo bench -p turbo-hipster-history --bench history_store` prints, per backend, the
//! median time of one record call and of one read of 2 000 samples, and their comparison with
//! a job's wall time (a gate job takes seconds to hours).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::{Connection as _, Executor as _};
use th_history::{HistoryDb, Location, Sample};

fn sample(job: usize, m: usize) -> Sample {
    Sample {
        dataset: "bench".into(),
        engine: "postgresql".into(),
        migration: format!("{m}->{}", m + 1),
        phase: "change".into(),
        started: format!("2026-01-01 00:{:02}:{:02},000", job / 60 % 60, job % 60),
        duration_ms: Some(100 + (job * 7 + m * 13) as i64 % 50),
        status: "ok".into(),
        limit_seconds: Some(60.0),
        commit: format!("{job:040}"),
        job: format!("job-{job}"),
        counters: BTreeMap::from([("tup_returned".into(), 1000), ("tup_updated".into(), 10)]),
        locks: serde_json::json!([{"table": "t", "strongest": "ROW EXCLUSIVE"}]),
        dataset_config: "/var/lib/turbo-hipster/datasets/bench/config.json".into(),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench(name: &str, db: &HistoryDb) {
    let jobs = 100;
    let mut record = Vec::new();
    for job in 0..jobs {
        let samples: Vec<Sample> = (0..20).map(|m| sample(job, m)).collect();
        let t = Instant::now();
        db.record(&samples).expect("record");
        record.push(t.elapsed());
    }
    let mut read = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let stats = db.stats("bench").expect("stats");
        read.push(t.elapsed());
        assert_eq!(stats.len(), 20);
    }
    let (r, q) = (median(record), median(read));
    println!(
        "{name:<10} record one job (20 migrations): {:>7.2} ms   read {} samples + figures: {:>7.2} ms   \
         both: {:.3} % of a 10 s job",
        r.as_secs_f64() * 1000.0,
        jobs * 20,
        q.as_secs_f64() * 1000.0,
        (r + q).as_secs_f64() / 10.0 * 100.0
    );
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    bench(
        "SQLite",
        &HistoryDb::new(Location::Sqlite(dir.path().join("history.db"))),
    );
    let name = format!("th_history_bench_{}", std::process::id());
    let admin = "postgres://postgres@127.0.0.1:5432/postgres";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let made = rt.block_on(async {
        let mut c = sqlx::PgConnection::connect(admin).await?;
        c.execute(format!("CREATE DATABASE {name}").as_str())
            .await?;
        Ok::<_, sqlx::Error>(())
    });
    match made {
        Ok(()) => {
            let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
            bench("PostgreSQL", &HistoryDb::new(Location::Postgres(url)));
            let _ = rt.block_on(async {
                let mut c = sqlx::PgConnection::connect(admin).await?;
                c.execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
                    .await?;
                Ok::<_, sqlx::Error>(())
            });
        }
        Err(e) => println!("PostgreSQL skipped: {e}"),
    }
}
