//! Where MariaDB's lock view comes from, on a private server of its own (the shared one may
//! already have the plugin): the `metadata_lock_info` plugin is installed by the sampler when
//! the account may (root), once; an account that may not install it and has no other view
//! gets an error naming what is missing (the run then notes `lock observation off` and goes
//! on without locks).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use gate_real_db_upgrade::dataset::Engine;
use gate_real_db_upgrade::engine::{Connection, Server};
use turbo_hipster_tests::db_servers::{DbKind, PrivateDb};

fn server(db: &PrivateDb, user: &str, password: Option<&str>) -> Server {
    let connection = Connection {
        host: Some("127.0.0.1".into()),
        port: Some(db.port),
        user: Some(user.into()),
        password: password.map(String::from),
        ..Connection::default()
    };
    Server::new(Engine::MariaDb, connection, PathBuf::new())
}

fn plugin_active(db: &PrivateDb) -> String {
    db.query(
        "SELECT COUNT(*) FROM information_schema.PLUGINS \
         WHERE PLUGIN_NAME = 'METADATA_LOCK_INFO' AND PLUGIN_STATUS = 'ACTIVE'",
    )
    .unwrap()
    .trim()
    .to_string()
}

#[test]
fn mariadb_lock_view_is_installed_when_allowed_and_missing_otherwise() {
    let db = PrivateDb::start(DbKind::MariaDb);
    db.query(
        "CREATE DATABASE th_lk; CREATE USER th_limited@'%' IDENTIFIED BY 'th-limited'; \
         GRANT ALL ON th_lk.* TO th_limited@'%'",
    )
    .unwrap();
    let every = Duration::from_millis(50);
    assert_eq!(plugin_active(&db), "0", "a fresh server has no lock view");

    let limited = server(&db, "th_limited", Some("th-limited"));
    let Err(e) = limited.observe_locks("th_lk", every) else {
        panic!("an account that cannot install the plugin got a lock view")
    };
    assert!(e.to_string().contains("no metadata lock view"), "{e}");
    assert_eq!(plugin_active(&db), "0");

    let root = server(&db, "root", None);
    let observer = root.observe_locks("th_lk", every).unwrap();
    assert_eq!(observer.source(), "information_schema.METADATA_LOCK_INFO");
    observer.finish().unwrap();
    assert_eq!(plugin_active(&db), "1", "root installed it");
    // Installed once: the next observer (any account) finds it.
    let again = limited.observe_locks("th_lk", every).unwrap();
    assert_eq!(again.source(), "information_schema.METADATA_LOCK_INFO");
    again.finish().unwrap();
}
