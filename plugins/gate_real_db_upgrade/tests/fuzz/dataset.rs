//! Dataset configs: the original's `user_001.config.json` and the corpus's valid configs, with
//! any value anywhere replaced, keys removed or added; and any bytes as the file. Loading never
//! panics; every error is one line `<file>: <key path>: <what>` (`<file>: <what>` for a file
//! that is not a JSON object), blamed on a key that was changed; whatever loads keeps the
//! values that reach SQL, git and the file system plain: the database prefix, the project, the
//! upgrade refs, the SQL directory, the templates, the limits.
//!
//! Corpus (`tests/corpus/dataset/`): dataset configs, each loaded as `<tmp>/<stem>/config.json`;
//! `ok-*` must load (and are the starting points of the mutations too), `err-<key>-*` must be
//! refused naming `<key>` (`file` for a whole-file error).

use std::path::{Component, Path, PathBuf};

use gate_real_db_upgrade::dataset::{load_dataset, Dataset, DatasetDefaults, Migration};
use gate_real_db_upgrade::version::ExpectedVersion;
use proptest::prelude::*;
use serde_json::Value;
use turbo_hipster_tests::fuzz;

/// The documents mutations start from: the original's config and the corpus's `ok-*` files.
fn bases() -> Vec<(String, Value)> {
    let original = std::fs::read(fuzz::original("user_001.config.json")).unwrap();
    let mut bases = vec![(
        "user_001".to_string(),
        serde_json::from_slice(&original).unwrap(),
    )];
    for (name, bytes) in fuzz::corpus("dataset") {
        if name.starts_with("ok-") {
            bases.push((name, serde_json::from_slice(&bytes).unwrap()));
        }
    }
    bases
}

/// A relative path inside its base: every component a normal name (these are joined to an
/// absolute directory before use, so a leading `-` cannot read as an option).
fn is_plain_relative(p: &Path) -> bool {
    p.components().count() > 0 && p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// What an accepted dataset must hold.
fn assert_safe(d: &Dataset, dir: &Path) {
    let what = format!("accepted dataset {d:?}");
    assert!(
        !d.database.is_empty()
            && d.database.len() <= 48
            && d.database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "database {:?}: {what}",
        d.database
    );
    // The project must be able to match a ZUUL_PROJECT: no segment starting with `-`.
    assert!(
        is_plain_relative(Path::new(&d.project))
            && !d.project.split('/').any(|s| s.starts_with('-')),
        "project: {what}"
    );
    for r in &d.upgrade_path {
        assert!(
            !r.starts_with('-') && !r.contains("..") && !r.contains(char::is_whitespace),
            "upgrade_path {r:?}: {what}"
        );
    }
    match &d.migration {
        Migration::SqlFiles {
            dir: sql,
            version_table,
        } => {
            assert!(is_plain_relative(sql), "sql_dir: {what}");
            assert!(
                !version_table.is_empty()
                    && version_table
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "version_table: {what}"
            );
        }
        Migration::Tool { templates, .. } => {
            for (template, output) in templates {
                let inner = template.strip_prefix(dir).map(Path::to_path_buf);
                assert!(
                    inner.as_deref().is_ok_and(is_plain_relative),
                    "template {template:?}: {what}"
                );
                assert!(
                    Path::new(output).components().count() == 1
                        && is_plain_relative(Path::new(output)),
                    "template output {output:?}: {what}"
                );
            }
        }
    }
    let folders = match &d.expected_version {
        ExpectedVersion::HighestNumbered(p) => std::slice::from_ref(p),
        ExpectedVersion::AlembicHeads(tree) => &tree.locations[..],
        _ => &[],
    };
    for p in folders {
        assert!(is_plain_relative(p), "expected_version {p:?}: {what}");
    }
    let limits = d.limits.rows_changed.iter().chain(&d.limits.rows_read);
    for table in std::iter::once(&d.limits.seconds).chain(limits) {
        for v in table.keyed.values().chain(&table.default) {
            assert!(v.is_finite() && *v >= 0.0, "limit {v}: {what}");
        }
    }
    if let Some(t) = d.timeout {
        assert!(!t.is_zero(), "timeout: {what}");
    }
}

/// Loads `bytes` as `<tmp>/<name>/config.json`. Errors: one line each, the file then a key.
fn load(bytes: &[u8]) -> (Result<Dataset, Vec<String>>, tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fuzzset");
    std::fs::create_dir(&dir).unwrap();
    let source = dir.join("config.json");
    std::fs::write(&source, bytes).unwrap();
    // The files the valid configs name, so that only the mutations can make them wrong.
    for f in [
        "nova_user_001.sql",
        "seed.sql",
        "seed.sql.gz",
        "logging.conf",
        "alembic.ini.in",
    ] {
        std::fs::write(dir.join(f), "-- fuzz\n").unwrap();
    }
    let got = load_dataset(&source, "fuzzset", &dir, &DatasetDefaults::default());
    let got = match got {
        Ok((d, _warnings)) => {
            assert_safe(&d, &dir);
            Ok(d)
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            let prefix = format!("{}: ", source.display());
            for e in &errors {
                assert!(!e.contains('\n'), "a multi-line error: {e:?}");
                let rest = e
                    .strip_prefix(&prefix)
                    .unwrap_or_else(|| panic!("{e}: no file"));
                // Only a file that is not a JSON object is blamed on no key (the whole file).
                let whole_file = rest.starts_with("expected a JSON object at the top, got ");
                assert!(whole_file || rest.contains(": "), "{e}: no key");
            }
            Err(errors)
        }
    };
    (got, tmp, source)
}

/// The key an error names: `<file>: <key>: …` → `key`'s first segment.
fn error_key<'e>(error: &'e str, source: &Path) -> &'e str {
    let prefix = format!("{}: ", source.display());
    let rest = error.strip_prefix(&prefix).unwrap_or(error);
    let key = rest.split(": ").next().unwrap_or(rest);
    key.split(['.', '[']).next().unwrap_or(key)
}

/// Keys checked together: a change to one may be reported on another.
const RELATED: &[&[&str]] = &[
    &["engine", "type"],
    &["seed_data", "seed_format"],
    &["migration", "expected_version"],
    &["connection", "db_user", "db_pass"],
];

fn related(a: &str, b: &str) -> bool {
    a == b || RELATED.iter().any(|g| g.contains(&a) && g.contains(&b))
}

proptest! {
    #![proptest_config(fuzz::config(256))]

    /// Mutations of a valid dataset config.
    #[test]
    fn mutated_dataset(base in prop::sample::select(bases()), mutations in fuzz::mutations()) {
        let (_, mut doc) = base;
        let changed = fuzz::mutate(&mut doc, &mutations);
        let (got, _tmp, source) = load(&serde_json::to_vec_pretty(&doc).unwrap());
        if let Err(errors) = got {
            if !changed.iter().any(String::is_empty) {
                for e in &errors {
                    let key = error_key(e, &source);
                    prop_assert!(
                        changed.iter().any(|c| related(c.split(['.', '[']).next().unwrap_or(c), key)),
                        "{} blamed on {:?}, changed: {:?}", e, key, changed
                    );
                }
            }
        }
    }

    /// Any bytes as the file.
    #[test]
    fn any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = load(&bytes);
    }
}

#[test]
fn the_bases_load() {
    for (name, doc) in bases() {
        let (got, _tmp, _) = load(&serde_json::to_vec(&doc).unwrap());
        assert!(got.is_ok(), "{name}: {got:?}");
    }
}

#[test]
fn corpus_replays() {
    for (name, bytes) in fuzz::corpus("dataset") {
        let (got, _tmp, source) = load(&bytes);
        let mut words = name.split('-');
        match (words.next(), words.next()) {
            (Some("ok"), _) => assert!(got.is_ok(), "{name}: {got:?}"),
            (Some("err"), Some(key)) => {
                let errors = got.err().unwrap_or_else(|| panic!("{name} was accepted"));
                assert!(
                    key == "file" || errors.iter().any(|e| error_key(e, &source) == key),
                    "{name}: {errors:?}"
                );
            }
            _ => panic!("{name}: corpus files are named ok-* or err-<key>-*"),
        }
    }
}
