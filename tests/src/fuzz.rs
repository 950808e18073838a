//! Shared parts of the fuzz targets (`tests/tests/fuzz/`, `plugins/gate_real_db_upgrade/tests/fuzz/`).
//!
//! A fuzz target here is two things run by every `cargo test`: a set of proptest properties
//! with a bounded number of cases (CI time stays small; `TH_FUZZ_CASES=N` runs more, and
//! `TH_FUZZ_SEED=N` replays one run's random choices), and the replay of a checked-in corpus,
//! `tests/corpus/<target>/`, through the same checks: past crashers, edge cases and real
//! examples, so what was once found stays tested whatever the random choices of a run. When a
//! property fails, proptest prints the smallest failing input: fix the bug and add that input
//! to the corpus. No `cargo-fuzz`/libFuzzer: stable Rust, no extra tools.
//!
//! The JSON mutator takes a valid document (a config, a dataset) and changes it where it
//! matters: a value anywhere in the tree replaced by any JSON, a key removed, a key added, a
//! string cut or given hostile text. Starting from valid documents reaches the deep checks that
//! random bytes never get past.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::Value;

/// The number of cases each property runs: `TH_FUZZ_CASES`, else `default` (sized so the
/// whole fuzz suite stays within seconds in CI).
pub fn cases(default: u32) -> u32 {
    std::env::var("TH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The proptest configuration of every fuzz property: [`cases`], no regression files (the
/// corpus is where found inputs go), a fixed seed with `TH_FUZZ_SEED`.
pub fn config(default_cases: u32) -> Config {
    let seed = std::env::var("TH_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(RngSeed::Random, RngSeed::Fixed);
    Config {
        cases: cases(default_cases),
        failure_persistence: None,
        rng_seed: seed,
        ..Config::default()
    }
}

/// `tests/corpus/<target>/`.
pub fn corpus_dir(target: &str) -> PathBuf {
    crate::root().join("tests/corpus").join(target)
}

/// Every file of `tests/corpus/<target>/` (name, bytes), sorted by name; panics if there is
/// none, so a moved corpus cannot silently test nothing. `README.md` files are skipped.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path()
        })
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (file_name(&p), bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: empty corpus", dir.display());
    files
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A file of `tests/fixtures/original/` (copied from the original turbo-hipster).
pub fn original(name: &str) -> PathBuf {
    crate::root().join("tests/fixtures/original").join(name)
}

/// Text meant to break whatever reads it: traversal, option injection, odd transports,
/// control characters, non-ASCII, very long runs, numbers at the edges of their types.
pub fn hostile_string() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "..",
        "../",
        "/",
        "//",
        "-",
        "--",
        "--upload-pack=touch /tmp/x",
        "-oProxyCommand=x",
        "fd::7",
        "ext::sh -c x",
        "file:///etc",
        "@{",
        "~",
        "^",
        ":",
        "?",
        "*",
        "[",
        "\\",
        " ",
        "\t",
        "\n",
        "\r",
        "\0",
        "\u{7f}",
        "\u{202e}",
        "é",
        "𝄞",
        "%2e%2e",
        ".",
        "a",
        "Z",
        "0",
        "9",
        "_",
        "+",
        "@",
        "refs/zuul/master/Z1",
        "openstack/nova",
        "http://h/p",
        "ssh://h/p",
        "$(id)",
        "`id`",
        ";",
        "|",
        "{work_dir}",
        "{db_url}",
        "-1",
        "1e309",
        "18446744073709551616",
        "4294967296",
        "null",
        "true",
    ]);
    prop_oneof![
        6 => prop::collection::vec(pieces, 0..8).prop_map(|v| v.concat()),
        2 => any::<String>(),
        1 => (prop::sample::select(vec!["a", "-", ".", "/"]), 0usize..20_000)
            .prop_map(|(s, n)| s.repeat(n)),
    ]
}

/// Any JSON value, small and nested a few levels, with hostile strings and edge numbers.
pub fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        prop::sample::select(vec![
            0i64,
            1,
            -1,
            1024,
            1025,
            65535,
            65536,
            i64::MAX,
            i64::MIN
        ])
        .prop_map(Value::from),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(hostile_string(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One change to a JSON document: which node (an index taken modulo the number of nodes), what
/// to do there, and the value or key it may use.
#[derive(Debug, Clone)]
pub struct Mutation {
    node: usize,
    action: u8,
    value: Value,
    key: String,
}

/// A few mutations, applied in order by [`mutate`].
pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(
        (any::<usize>(), 0u8..6, arb_json(), hostile_string()).prop_map(
            |(node, action, value, key)| Mutation {
                node,
                action,
                value,
                key,
            },
        ),
        1..4,
    )
}

/// Applies `mutations` to `doc`; returns the key path of each node changed
/// (`maximum_migration_times.default`, `jobs[0].plugin`; empty for the root).
pub fn mutate(doc: &mut Value, mutations: &[Mutation]) -> Vec<String> {
    let mut changed = Vec::new();
    for m in mutations {
        let mut paths = Vec::new();
        node_paths(doc, String::new(), &mut paths);
        let (path, index) = paths.swap_remove(m.node % paths.len());
        let Some(node) = node_at(doc, &index) else {
            continue;
        };
        match (m.action, node) {
            (0 | 1, node) => *node = m.value.clone(),
            (2, Value::Object(map)) if !map.is_empty() => {
                let k = map
                    .keys()
                    .nth(m.node % map.len())
                    .cloned()
                    .unwrap_or_default();
                map.remove(&k);
            }
            (3, Value::Object(map)) => {
                map.insert(m.key.clone(), m.value.clone());
            }
            (4, Value::String(s)) => {
                let cut = s.char_indices().map(|(i, _)| i).nth(m.node % (s.len() + 1));
                s.truncate(cut.unwrap_or(s.len()));
                s.push_str(&m.key);
            }
            (_, node) => *node = Value::String(m.key.clone()),
        }
        changed.push(path);
    }
    changed
}

/// Every node of `v` with its key path and its index path.
fn node_paths(v: &Value, path: String, out: &mut Vec<(String, Vec<PathStep>)>) {
    fn walk(v: &Value, path: &str, index: &[PathStep], out: &mut Vec<(String, Vec<PathStep>)>) {
        out.push((path.to_string(), index.to_vec()));
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    let mut i = index.to_vec();
                    i.push(PathStep::Key(k.clone()));
                    walk(child, &p, &i, out);
                }
            }
            Value::Array(items) => {
                for (n, child) in items.iter().enumerate() {
                    let mut i = index.to_vec();
                    i.push(PathStep::Index(n));
                    walk(child, &format!("{path}[{n}]"), &i, out);
                }
            }
            _ => {}
        }
    }
    walk(v, &path, &[], out);
}

#[derive(Debug, Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn node_at<'a>(mut v: &'a mut Value, index: &[PathStep]) -> Option<&'a mut Value> {
    for step in index {
        v = match (step, v) {
            (PathStep::Key(k), Value::Object(map)) => map.get_mut(k)?,
            (PathStep::Index(n), Value::Array(items)) => items.get_mut(*n)?,
            _ => return None,
        };
    }
    Some(v)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mutate_reports_the_key_path_it_changed() {
        let mut doc = serde_json::json!({"a": {"b": [1, 2]}});
        let m = Mutation {
            node: 0,
            action: 0,
            value: Value::Null,
            key: String::new(),
        };
        // Node order: "", "a", "a.b", "a.b[0]", "a.b[1]"; swap_remove takes index 3 % 5.
        let changed = mutate(&mut doc, &[Mutation { node: 3, ..m }]);
        assert_eq!(changed, vec!["a.b[0]".to_string()]);
        assert_eq!(doc, serde_json::json!({"a": {"b": [null, 2]}}));
    }
}
