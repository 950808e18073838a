//! Golden copies and clones against the real servers (PostgreSQL at 127.0.0.1:5432, SQLite
//! files): built once per dataset and seed checksum, by one job when two need it at once,
//! sealed (nobody connects to a PostgreSQL golden copy, an SQLite one is read-only), never
//! changed by what a run does to its clone, rebuilt (and the stale one dropped) when the seed
//! changes. Each test uses a dataset name of its own, so its golden copies are its own, and
//! drops them at the end.
#![allow(clippy::unwrap_used)]

use gate_real_db_upgrade::dataset::{load_datasets, DatasetDefaults, Engine};
use gate_real_db_upgrade::engine::GoldenState;
use gate_real_db_upgrade::provisioning::{hash_file, Provider};
use serde_json::json;
use turbo_hipster_sdk::support::process::CancelFlag;
use turbo_hipster_tests::db_servers::{psql, query, DbKind};
use turbo_hipster_tests::provisioning::{Notes, ProviderFixture};

const PG: DbKind = DbKind::PostgreSql;

/// A seed of `rows` items (generated server-side for PostgreSQL, listed for SQLite).
fn seed_sql(engine: Engine, rows: u32, tag: &str) -> String {
    let mut sql = String::from(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER);\n\
         CREATE INDEX items_name ON items (name);\n",
    );
    match engine {
        Engine::PostgreSql => sql.push_str(&format!(
            "INSERT INTO items SELECT g, 'item-{tag}-' || g, g % 97 FROM generate_series(1, {rows}) g;\n"
        )),
        _ => {
            for i in 1..=rows {
                sql.push_str(&format!(
                    "INSERT INTO items VALUES ({i}, 'item-{tag}-{i}', {});\n",
                    i % 97
                ));
            }
        }
    }
    sql
}

/// A dataset of its own on `engine` with a seed of `rows` items and `provisioning`.
fn fixture(engine: Engine, rows: u32, provisioning: &str) -> ProviderFixture {
    let f = ProviderFixture::new(
        engine,
        "prov",
        &seed_sql(engine, rows, "a"),
        json!({"provisioning": provisioning}),
    );
    f.server.ping().unwrap();
    f
}

const CONTENT: &str = "SELECT count(*) || ':' || md5(string_agg(id || ',' || name || ',' || qty, ';' ORDER BY id)) FROM items";

/// The golden copy's contents, read through a clone (nobody may connect to it).
fn golden_content(f: &ProviderFixture, golden: &str) -> String {
    let check = f.db(99);
    f.server.clone_database(golden, &check).unwrap();
    let content = psql(&check, CONTENT);
    f.server.drop_database(&check).unwrap();
    content
}

#[test]
fn postgresql_golden_copy_is_built_once_sealed_and_never_changed_by_a_run() {
    let f = fixture(Engine::PostgreSql, 2000, "auto");
    let notes = Notes::default();
    let note = |t: &str| notes.push(t);
    let first = f.provider(&note).provide(&f.db(1)).unwrap();
    assert_eq!(first.method, "clone", "{:?}", notes.all());
    let golden = first.golden.clone().unwrap();
    assert_eq!(f.server.golden_state(&golden).unwrap(), GoldenState::Ready);
    assert_eq!(notes.count("building the golden copy"), 1);
    // Nobody can connect to the golden copy, not even the superuser.
    let refused = query(PG, PG.shared_port(), Some(&golden), "SELECT 1");
    assert!(refused.is_err(), "connected to the golden copy");
    let before = golden_content(&f, &golden);
    assert!(before.starts_with("2000:"), "{before}");

    // A second run clones without building; the run's clone has the seed's contents.
    let second = f.provider(&note).provide(&f.db(2)).unwrap();
    assert_eq!(
        (second.method.as_str(), second.golden.as_deref()),
        ("clone", Some(golden.as_str()))
    );
    assert_eq!(notes.count("building the golden copy"), 1);
    assert_eq!(psql(&f.db(2), CONTENT), before);

    // What a run does to its database (a failing migration half done) stays in its clone.
    psql(
        &f.db(1),
        "DELETE FROM items WHERE id > 10; UPDATE items SET qty = -1; DROP INDEX items_name",
    );
    let _ = query(
        PG,
        PG.shared_port(),
        Some(&f.db(2)),
        "BEGIN; TRUNCATE items; SELECT no_such_function(); COMMIT;",
    );
    f.server.drop_database(&f.db(1)).unwrap();
    f.server.drop_database(&f.db(2)).unwrap();
    assert_eq!(
        golden_content(&f, &golden),
        before,
        "the golden copy changed"
    );
}

#[test]
fn postgresql_a_changed_seed_rebuilds_and_drops_the_stale_copy() {
    let f = fixture(Engine::PostgreSql, 100, "clone");
    let notes = Notes::default();
    let note = |t: &str| notes.push(t);
    let old = f
        .provider(&note)
        .provide(&f.db(1))
        .unwrap()
        .golden
        .clone()
        .unwrap();
    f.server.drop_database(&f.db(1)).unwrap();
    std::fs::write(&f.dataset.seed.path, seed_sql(Engine::PostgreSql, 150, "b")).unwrap();
    let new = f
        .provider(&note)
        .provide(&f.db(2))
        .unwrap()
        .golden
        .clone()
        .unwrap();
    assert_ne!(old, new);
    assert_eq!(
        f.goldens(),
        vec![new.clone()],
        "the stale golden copy is dropped"
    );
    assert!(psql(&f.db(2), CONTENT).starts_with("150:"));
    // prepare --rebuild makes it again from the seed, same name.
    let prepared = f.provider(&note).prepare(true).unwrap();
    assert_eq!(prepared, new);
    assert_eq!(notes.count("building the golden copy"), 3);
    assert!(golden_content(&f, &new).starts_with("150:"));
}

#[test]
fn postgresql_two_jobs_at_once_build_the_golden_copy_once() {
    let f = fixture(Engine::PostgreSql, 300_000, "auto");
    let notes = Notes::default();
    let note = |t: &str| notes.push(t);
    let results: Vec<_> = std::thread::scope(|s| {
        let a = s.spawn(|| f.provider(&note).provide(&f.db(1)));
        let b = s.spawn(|| f.provider(&note).provide(&f.db(2)));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    for r in &results {
        assert_eq!(r.as_ref().unwrap().method, "clone", "{:?}", notes.all());
    }
    assert_eq!(
        notes.count("building the golden copy"),
        1,
        "{:?}",
        notes.all()
    );
    assert!(
        notes.count("waiting for the golden copy") >= 1,
        "{:?}",
        notes.all()
    );
    assert_eq!(psql(&f.db(1), CONTENT), psql(&f.db(2), CONTENT));
}

/// Two workers with their own jobs directories (so their own locks) share one server and
/// both build the same golden copy at once: neither drops the other's build in progress
/// (it did: the first to finish took the other's `…_b<n>` for a stale copy and killed its
/// load, an infrastructure error for a good change), and both runs get a clone.
#[test]
fn postgresql_two_workers_sharing_a_server_build_at_once_without_harm() {
    let f = fixture(Engine::PostgreSql, 300_000, "auto");
    let other_jobs = tempfile::tempdir().unwrap();
    let other_state = other_jobs.path().join(".gate_real_db_upgrade-golden");
    let other_claims = other_jobs.path().join(".gate_real_db_upgrade");
    let notes = Notes::default();
    let note = |t: &str| notes.push(t);
    let results: Vec<_> = std::thread::scope(|s| {
        let a = s.spawn(|| f.provider(&note).provide(&f.db(1)));
        let b = s.spawn(|| {
            Provider {
                state: Some(&other_state),
                claims: Some(&other_claims),
                ..f.provider(&note)
            }
            .provide(&f.db(2))
        });
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    for r in &results {
        assert_eq!(r.as_ref().unwrap().method, "clone", "{:?}", notes.all());
    }
    assert_eq!(notes.count("fast path failed"), 0, "{:?}", notes.all());
    assert_eq!(notes.count("stale"), 0, "{:?}", notes.all());
    let golden = results[0].as_ref().unwrap().golden.clone().unwrap();
    assert_eq!(f.goldens(), vec![golden], "one golden copy, no build left");
    assert_eq!(psql(&f.db(1), CONTENT), psql(&f.db(2), CONTENT));
    assert!(psql(&f.db(1), CONTENT).starts_with("300000:"));
}

#[test]
fn postgresql_a_cancelled_build_leaves_no_database_and_no_claim() {
    let f = fixture(Engine::PostgreSql, 3_000_000, "clone");
    let flag = CancelFlag::new();
    let note = |_: &str| {};
    let provider = Provider {
        cancel: &flag,
        ..f.provider(&note)
    };
    let result = std::thread::scope(|s| {
        let run = s.spawn(|| provider.provide(&f.db(1)));
        std::thread::sleep(std::time::Duration::from_millis(700));
        flag.cancel();
        run.join().unwrap()
    });
    assert!(result.is_err());
    assert!(f.goldens().is_empty(), "{:?}", f.goldens());
    assert!(f
        .server
        .databases_with_prefix(&f.dataset.name)
        .unwrap()
        .is_empty());
    let claims = std::fs::read_dir(&f.claims).map(|d| d.count()).unwrap_or(0);
    assert_eq!(claims, 0, "the build's claim is released");
}

#[test]
fn sqlite_golden_file_is_copied_and_stays_read_only_and_unchanged() {
    let f = fixture(Engine::Sqlite, 500, "auto");
    let notes = Notes::default();
    let note = |t: &str| notes.push(t);
    let first = f.provider(&note).provide(&f.db(1)).unwrap();
    assert!(
        ["reflink", "copy"].contains(&first.method.as_str()),
        "{first:?}"
    );
    let golden = first.golden.clone().unwrap();
    let golden_path = f.state.join("sqlite").join(format!("{golden}.sqlite"));
    let before = hash_file(&golden_path).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&golden_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o222,
        0
    );
    f.server
        .execute(&f.db(1), "DELETE FROM items; DROP TABLE items;")
        .unwrap();
    let second = f.provider(&note).provide(&f.db(2)).unwrap();
    assert_eq!(notes.count("building the golden copy"), 1);
    assert_eq!(second.golden.as_deref(), Some(golden.as_str()));
    f.server
        .execute(&f.db(2), "UPDATE items SET qty = 0")
        .unwrap();
    assert_eq!(
        hash_file(&golden_path).unwrap(),
        before,
        "the golden file changed"
    );
    // A new seed: rebuilt, the stale file removed.
    std::fs::write(&f.dataset.seed.path, seed_sql(Engine::Sqlite, 5, "b")).unwrap();
    let third = f.provider(&note).provide(&f.db(3)).unwrap();
    assert_eq!(f.goldens(), vec![third.golden.clone().unwrap()]);
    assert!(!golden_path.exists());
}

#[test]
fn reload_when_asked_or_when_there_is_no_fast_path() {
    let f = fixture(Engine::PostgreSql, 10, "reload");
    let note = |_: &str| {};
    let done = f.provider(&note).provide(&f.db(1)).unwrap();
    assert_eq!(
        (done.method.as_str(), done.golden.clone()),
        ("reload", None)
    );
    assert!(f.goldens().is_empty());
    // auto without a state dir reloads too.
    let f = fixture(Engine::PostgreSql, 10, "auto");
    let provider = Provider {
        state: None,
        ..f.provider(&note)
    };
    assert_eq!(provider.provide(&f.db(1)).unwrap().method, "reload");
    assert!(f.goldens().is_empty());
}

#[test]
fn provisioning_values_are_checked_and_clone_is_accepted_for_every_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = tmp.path().join("m");
    std::fs::create_dir_all(&ds).unwrap();
    std::fs::write(ds.join("seed.sql"), "").unwrap();
    for engine in ["mariadb", "mysql", "postgresql", "sqlite"] {
        std::fs::write(
            ds.join("config.json"),
            json!({"project": "a/b", "engine": engine, "seed_data": "seed.sql", "provisioning": "clone"}).to_string(),
        )
        .unwrap();
        let loaded = load_datasets(tmp.path(), &DatasetDefaults::default()).unwrap();
        assert_eq!(
            loaded[0].provisioning,
            gate_real_db_upgrade::provisioning::Provisioning::Clone
        );
    }
    std::fs::write(
        ds.join("config.json"),
        json!({"project": "a/b", "engine": "mariadb", "seed_data": "seed.sql", "provisioning": "fast"}).to_string(),
    )
    .unwrap();
    let errors = load_datasets(tmp.path(), &DatasetDefaults::default()).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("provisioning: must be one of auto, clone, reload")),
        "{errors:?}"
    );
}
