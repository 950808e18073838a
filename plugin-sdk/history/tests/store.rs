//! The history store on a real SQLite file and a real PostgreSQL database (a database of its
//! own, with a random name, dropped at the end): the same samples in, the same figures out;
//! an import is recorded once.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use sqlx::{Connection as _, Executor as _};
use th_history::{HistoryDb, Imported, Location, Sample};

fn sample(dataset: &str, migration: &str, started: &str, ms: Option<i64>, job: &str) -> Sample {
    Sample {
        dataset: dataset.into(),
        engine: "postgresql".into(),
        migration: migration.into(),
        phase: "change".into(),
        started: started.into(),
        duration_ms: ms,
        status: if ms.is_some() { "ok" } else { "unfinished" }.into(),
        limit_seconds: Some(60.0),
        commit: "abc".into(),
        job: job.into(),
        counters: BTreeMap::from([("tup_returned".to_string(), 42)]),
        locks: serde_json::json!([{"table": "t", "strongest": "ACCESS EXCLUSIVE"}]),
        dataset_config: "/d/config.json".into(),
    }
}

/// Records, reads back and computes on `db`; the figures are worked out by hand.
fn exercise(db: &HistoryDb) {
    // Nothing yet.
    assert!(db.stats("small").unwrap().is_empty());
    let runs = [(100, "j1"), (300, "j2"), (200, "j3")];
    for (i, (ms, job)) in runs.iter().enumerate() {
        let started = format!("2026-01-0{} 00:00:00,000", i + 1);
        let samples = vec![
            sample("small", "1->2", &started, Some(*ms), job),
            sample(
                "small",
                "2->3",
                &started,
                if i == 1 { None } else { Some(10) },
                job,
            ),
            sample("other", "1->2", &started, Some(99_999), job),
        ];
        assert_eq!(db.record(&samples).unwrap(), 3);
    }
    let all = db.samples("small").unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(
        all[0],
        sample("small", "1->2", "2026-01-01 00:00:00,000", Some(100), "j1")
    );
    assert_eq!(all[3].duration_ms, None);
    let stats = db.stats("small").unwrap();
    assert_eq!(stats.len(), 2);
    assert_eq!(stats[0].0, "1->2");
    // 100, 200, 300: median 200; p95 h = 1.9 → 290; p99 h = 1.98 → 298.
    assert_eq!(stats[0].1.count, 3);
    assert_eq!(stats[0].1.median_ms, 200.0);
    assert!((stats[0].1.p95_ms - 290.0).abs() < 1e-9);
    assert!((stats[0].1.p99_ms - 298.0).abs() < 1e-9);
    assert_eq!(stats[0].1.max_ms, 300.0);
    // The unfinished run is no duration.
    assert_eq!((stats[1].0.as_str(), stats[1].1.count), ("2->3", 2));

    // An import: recorded once, whatever the file's name the second time.
    let imported = vec![sample(
        "imp",
        "133->134",
        "2014-01-16 07:03:50,708",
        Some(171),
        "import:x",
    )];
    assert_eq!(
        db.import("cafe", Path::new("/a/user_001.log"), "now", &imported)
            .unwrap(),
        Imported::Recorded(1)
    );
    assert_eq!(
        db.import("cafe", Path::new("/b/copy.log"), "now", &imported)
            .unwrap(),
        Imported::AlreadyImported
    );
    assert_eq!(db.samples("imp").unwrap().len(), 1);
}

#[test]
fn sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/history.sqlite");
    let db = HistoryDb::new(Location::Sqlite(path.clone()));
    // Reading a history that does not exist does not make it.
    assert!(db.samples("small").unwrap().is_empty());
    assert!(!path.exists());
    exercise(&db);
    assert!(path.exists());
}

#[test]
fn sqlite_file_that_cannot_be_made_is_a_clear_error() {
    let db = HistoryDb::new(Location::Sqlite(
        "/proc/th-nonexistent/history.sqlite".into(),
    ));
    let e = db
        .record(&[sample("s", "1->2", "x", Some(1), "j")])
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot open the history database /proc/th-nonexistent/history.sqlite"),
        "{e}"
    );
}

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[test]
fn postgresql_database() {
    let suffix = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let name = format!("th_history_test_{suffix}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut admin = sqlx::PgConnection::connect(PG_ADMIN).await.unwrap();
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
    });
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let db = HistoryDb::new(Location::parse(&url, Path::new("/")).unwrap());
    // The store makes its own runtime: it works called from inside one too.
    let result = std::panic::catch_unwind(|| {
        rt.block_on(async { exercise(&db) });
    });
    rt.block_on(async {
        let mut admin = sqlx::PgConnection::connect(PG_ADMIN).await.unwrap();
        admin
            .execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
            .await
            .unwrap();
    });
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
