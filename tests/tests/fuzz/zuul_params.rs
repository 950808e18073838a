//! Zuul job parameters, as a job's data arrives from anyone who can reach gearmand: parsing and
//! validation never panic, and every value they accept is safe where it is used: in a path
//! (no `..`, not absolute, no segment starting with `-`), as a git argument (no leading `-`,
//! no `..`, no spaces), sizes bounded. The invariants are written here from what the values
//! are used for, not copied from the validator, so a change to it that lets one through fails.
//!
//! Also `fill_zuul_parameters` (what `enqueue` and `run-job` do with the user's `--param`s
//! before validating them): it never panics on any input.
//!
//! Corpus (`tests/corpus/zuul_params/`): job data bytes; `ok-*` must be accepted, `err-*`
//! refused with the parameter named in the message (the file's second `-`-separated word, or
//! `any`), and everything goes through the invariants.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use proptest::prelude::*;
use serde_json::{json, Value};
use turbo_hipster::zuul::{self, InvalidParameters, MAX_PARAMETERS, MAX_VALUE_BYTES};
use turbo_hipster_tests::fuzz;

/// Parameters used as a relative path under a working directory.
const PATHS: &[&str] = &["ZUUL_PROJECT", "LOG_PATH", "BASE_LOG_PATH"];
/// Parameters handed to git as a ref.
const REFS: &[&str] = &["ZUUL_REF", "ZUUL_BRANCH", "ZUUL_REFNAME"];
/// Parameters that are a sha.
const SHAS: &[&str] = &["ZUUL_COMMIT", "ZUUL_NEWREV", "ZUUL_OLDREV"];
/// Every parameter with a rule, and a few without.
const KEYS: &[&str] = &[
    "ZUUL_PROJECT",
    "LOG_PATH",
    "BASE_LOG_PATH",
    "ZUUL_REF",
    "ZUUL_BRANCH",
    "ZUUL_REFNAME",
    "ZUUL_COMMIT",
    "ZUUL_NEWREV",
    "ZUUL_OLDREV",
    "ZUUL_URL",
    "ZUUL_UUID",
    "ZUUL_CHANGE",
    "ZUUL_PATCHSET",
    "ZUUL_PIPELINE",
    "ZUUL_CHANGES",
    "ZUUL_VOTING",
    "BUILD_ID",
    "OTHER",
];

fn checked(data: &[u8]) -> Result<BTreeMap<String, String>, InvalidParameters> {
    let p = zuul::parse_parameters(data)?;
    zuul::validate(&p)?;
    Ok(p)
}

/// `v` joined under a base directory stays under it, by its components alone.
fn stays_under_base(v: &str) -> bool {
    Path::new(v)
        .components()
        .all(|c| matches!(c, Component::Normal(s) if !s.to_string_lossy().starts_with('-')))
}

/// The safety invariants of an accepted parameter set.
fn assert_safe(params: &BTreeMap<String, String>) {
    assert!(
        params.len() <= MAX_PARAMETERS,
        "{} parameters",
        params.len()
    );
    for (k, v) in params {
        let what = format!("accepted {k}={v:?}");
        assert!(!k.is_empty() && k.len() <= 128, "{what}");
        assert!(
            k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{what}"
        );
        assert!(v.len() <= MAX_VALUE_BYTES, "{what}");
        assert!(!v.chars().any(char::is_control), "{what}");
        if v.is_empty() {
            continue;
        }
        let k = k.as_str();
        if PATHS.contains(&k) {
            assert!(
                stays_under_base(v),
                "{what}: escapes its base or starts with '-'"
            );
            assert!(!v.contains("//") && !v.ends_with('/'), "{what}");
            assert!(v.len() <= 1024, "{what}");
        }
        if REFS.contains(&k) {
            assert!(!v.starts_with(['-', '/']), "{what}: an option or absolute");
            assert!(
                !v.contains("..") && !v.contains(char::is_whitespace),
                "{what}"
            );
            assert!(v.len() <= 1024, "{what}");
        }
        if SHAS.contains(&k) {
            assert!(
                v.len() <= 64 && v.chars().all(|c| c.is_ascii_hexdigit()),
                "{what}"
            );
        }
        match k {
            "ZUUL_URL" => {
                assert!(!v.starts_with('-'), "{what}: an option");
                assert!(
                    !v.contains("..") && !v.contains(char::is_whitespace),
                    "{what}"
                );
            }
            "ZUUL_UUID" => {
                assert!(v.len() <= 64 && !v.contains(['/', '.']), "{what}");
            }
            "ZUUL_CHANGE" | "ZUUL_PATCHSET" => {
                assert!(
                    v.len() <= 20 && v.chars().all(|c| c.is_ascii_digit()),
                    "{what}"
                );
            }
            "ZUUL_PIPELINE" => {
                assert!(stays_under_base(v) && !v.contains('/'), "{what}");
            }
            _ => {}
        }
    }
}

/// The whole journey of a job's data: never panics; accepted means safe.
fn check_data(data: &[u8]) -> Result<BTreeMap<String, String>, InvalidParameters> {
    if let Ok(parsed) = zuul::parse_parameters(data) {
        // What enqueue/run-job do with the user's parameters, before validating them.
        fill_and_check(parsed);
    }
    let got = checked(data);
    if let Ok(p) = &got {
        assert_safe(p);
    }
    got
}

/// `fill_zuul_parameters` never panics; if the filled set validates, it is safe.
fn fill_and_check(mut params: BTreeMap<String, String>) {
    zuul::fill_zuul_parameters("build:fuzz-job:node", &mut params);
    if zuul::validate(&params).is_ok() {
        assert_safe(&params);
    }
}

/// What Zuul sends for a real change.
fn real_params() -> BTreeMap<String, Value> {
    serde_json::from_value(json!({
        "ZUUL_UUID": "bc1198bacf884c0295037e8e32c0ec17",
        "ZUUL_PROJECT": "openstack/nova",
        "ZUUL_PIPELINE": "check",
        "ZUUL_URL": "http://zuul.example.org/p",
        "ZUUL_REF": "refs/zuul/master/Zfa8228d022314ccd967a79ca3f853198",
        "ZUUL_COMMIT": "b1856cf0000000000000000000000000000000aa",
        "ZUUL_BRANCH": "master",
        "ZUUL_CHANGE": "65615",
        "ZUUL_PATCHSET": "7",
        "ZUUL_CHANGES": "openstack/nova:master:refs/changes/15/65615/7",
        "LOG_PATH": "15/65615/7/check/gate-real-db-upgrade_nova_mysql/bc1198b",
        "BASE_LOG_PATH": "15/65615/7",
        "ZUUL_VOTING": "1",
    }))
    .unwrap()
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => fuzz::hostile_string(),
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => fuzz::hostile_string().prop_map(Value::String),
        1 => fuzz::arb_json(),
    ]
}

proptest! {
    #![proptest_config(fuzz::config(512))]

    /// Any bytes as a job's data.
    #[test]
    fn any_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = check_data(&data);
    }

    /// Any object of the known names (and others) with hostile values.
    #[test]
    fn any_object(params in prop::collection::btree_map(arb_key(), arb_value(), 0..12)) {
        let _ = check_data(json!(params).to_string().as_bytes());
    }

    /// A real job's data with one parameter made hostile: either accepted (and safe) or
    /// refused naming that parameter.
    #[test]
    fn one_hostile_parameter_is_named(key in prop::sample::select(KEYS), value in fuzz::hostile_string()) {
        let mut params = real_params();
        params.insert(key.to_string(), Value::String(value.clone()));
        if let Err(e) = check_data(json!(params).to_string().as_bytes()) {
            prop_assert!(e.0.contains(key), "{key}={value:?} refused without naming it: {e}");
            prop_assert!(e.result().starts_with("FAILURE - invalid job parameters: "));
        }
    }

    /// `fill_zuul_parameters` on whatever the user typed (it runs before validation).
    #[test]
    fn fill_never_panics(params in prop::collection::btree_map(
        prop::sample::select(KEYS).prop_map(str::to_string), fuzz::hostile_string(), 0..8)) {
        fill_and_check(params);
    }
}

#[test]
fn corpus_replays() {
    for (name, bytes) in fuzz::corpus("zuul_params") {
        let got = check_data(&bytes);
        let mut words = name.split('-');
        match (words.next(), words.next()) {
            (Some("ok"), _) => assert!(got.is_ok(), "{name}: {got:?}"),
            (Some("err"), Some(key)) => {
                let e = got.expect_err(&name);
                assert!(key == "any" || e.0.contains(key), "{name}: {e}");
            }
            _ => panic!("{name}: corpus files are named ok-* or err-<PARAMETER>-*"),
        }
    }
}
