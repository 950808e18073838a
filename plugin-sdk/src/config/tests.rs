#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;

fn errors(c: Checker) -> Vec<String> {
    c.into_lines().0
}

/// Runs `get` on `value` at `path` in a checker for `f.json`: the result and the error lines.
fn check<T>(
    value: Value,
    get: impl FnOnce(&mut Checker, &Value) -> Option<T>,
) -> (Option<T>, Vec<String>) {
    let mut c = Checker::new("f.json");
    let got = get(&mut c, &value);
    (got, errors(c))
}

#[test]
fn string_and_nonempty() {
    assert_eq!(
        check(json!("x"), |c, v| c.string("k", v).map(str::to_string)),
        (Some("x".into()), vec![])
    );
    assert_eq!(
        check(json!(5), |c, v| c.string("k", v).map(str::to_string)),
        (
            None,
            vec!["f.json: k: expected a string, got a number".into()]
        )
    );
    assert_eq!(
        check(json!("a"), |c, v| c.nonempty("k", v)),
        (Some("a".into()), vec![])
    );
    assert_eq!(
        check(json!("  "), |c, v| c.nonempty("k", v)),
        (None, vec!["f.json: k: must not be empty".into()])
    );
    assert_eq!(
        check(json!(null), |c, v| c.nonempty("k", v)).1,
        ["f.json: k: expected a string, got null"]
    );
}

#[test]
fn boolean() {
    assert_eq!(
        check(json!(true), |c, v| c.boolean("b", v)),
        (Some(true), vec![])
    );
    assert_eq!(
        check(json!("yes"), |c, v| c.boolean("b", v)),
        (
            None,
            vec!["f.json: b: expected true or false, got a string".into()]
        )
    );
}

#[test]
fn integer_names_its_bounds() {
    let get = |v: Value| check(v, |c, v| c.integer("n", v, 1..=64));
    assert_eq!(get(json!(1)), (Some(1), vec![]));
    assert_eq!(get(json!(64)), (Some(64), vec![]));
    for (value, what) in [
        (json!(0), "must be between 1 and 64, got 0"),
        (json!(65), "must be between 1 and 64, got 65"),
        (json!(-1), "must be between 1 and 64, got -1"),
        (
            json!(18446744073709551615_u64),
            "must be between 1 and 64, got 18446744073709551615",
        ),
        (
            json!(1.5),
            "must be a whole number between 1 and 64, got 1.5",
        ),
        (json!(1e12), "must be between 1 and 64, got 1000000000000.0"),
        (json!("2"), "expected a whole number, got a string"),
    ] {
        assert_eq!(get(value), (None, vec![format!("f.json: n: {what}")]));
    }
}

#[test]
fn seconds_in_either_kind_of_range() {
    let open = SecondsRange::over(0.0, 10.0);
    let closed = SecondsRange::from_to(0.0, 10.0);
    assert_eq!(
        check(json!(1.5), |c, v| c.seconds("t", v, open)),
        (Some(Duration::from_millis(1500)), vec![])
    );
    assert_eq!(
        check(json!(0), |c, v| c.seconds("t", v, closed)),
        (Some(Duration::ZERO), vec![])
    );
    assert_eq!(
        check(json!(0), |c, v| c.seconds("t", v, open)).1,
        ["f.json: t: must be more than 0 and at most 10 seconds, got 0"]
    );
    assert_eq!(
        check(json!(11), |c, v| c.seconds("t", v, closed)).1,
        ["f.json: t: must be between 0 and 10 seconds, got 11"]
    );
    assert_eq!(
        check(json!("5"), |c, v| c.seconds("t", v, closed)).1,
        ["f.json: t: expected a number of seconds, got a string"]
    );
}

#[test]
fn paths_are_taken_from_the_base_and_checked_on_disk() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("file"), "").unwrap();
    let base = d.path();
    let get = |v: Value, need| check(v, |c, v| c.path("p", v, base, need));
    assert_eq!(
        get(json!("x"), PathNeed::Any),
        (Some(base.join("x")), vec![])
    );
    assert_eq!(
        get(json!("/abs"), PathNeed::Any),
        (Some("/abs".into()), vec![])
    );
    assert_eq!(
        get(json!("file"), PathNeed::File),
        (Some(base.join("file")), vec![])
    );
    assert_eq!(get(json!("."), PathNeed::Dir).1, Vec::<String>::new());
    let b = base.display();
    for (value, need, what) in [
        (
            json!("x"),
            PathNeed::Absolute,
            "must be an absolute path, got \"x\"".to_string(),
        ),
        (
            json!("x"),
            PathNeed::Exists,
            format!("{b}/x does not exist"),
        ),
        (
            json!("file"),
            PathNeed::Dir,
            format!("{b}/file is not a directory"),
        ),
        (
            json!("."),
            PathNeed::File,
            format!("{b}/. is not a regular file"),
        ),
        (json!(""), PathNeed::Any, "must not be empty".to_string()),
        (
            json!([]),
            PathNeed::Any,
            "expected a string, got a list".to_string(),
        ),
    ] {
        assert_eq!(get(value, need), (None, vec![format!("f.json: p: {what}")]));
    }
}

#[test]
fn strings_name_the_bad_item() {
    assert_eq!(
        check(json!(["a", "b"]), |c, v| c.strings("l", v)),
        (Some(vec!["a".into(), "b".into()]), vec![])
    );
    assert_eq!(
        check(json!(["a", 1, {}]), |c, v| c.strings("l", v)).1,
        [
            "f.json: l[1]: expected a string, got a number",
            "f.json: l[2]: expected a string, got an object"
        ]
    );
    assert_eq!(
        check(json!("a"), |c, v| c.strings("l", v)).1,
        ["f.json: l: expected a list, got a string"]
    );
}

#[test]
fn one_of_lists_the_names() {
    let names = [("process", 1), ("in-process", 2)];
    assert_eq!(
        check(json!("in-process"), |c, v| c.one_of("i", v, &names)),
        (Some(2), vec![])
    );
    assert_eq!(
        check(json!("thread"), |c, v| c.one_of("i", v, &names)).1,
        ["f.json: i: must be one of process, in-process, got \"thread\""]
    );
    assert_eq!(
        check(json!(1), |c, v| c.one_of("i", v, &names)).1,
        ["f.json: i: must be one of process, in-process, got 1"]
    );
}

#[test]
fn connection_follows_the_dataset_rules() {
    let full =
        json!({"host": "db", "port": 5433, "socket": "/run/pg", "user": "u", "password": ""});
    let (conn, errs) = check(full, |c, v| c.connection("connection", v, Unknown::Warn));
    assert_eq!(errs, Vec::<String>::new());
    assert_eq!(
        conn.unwrap(),
        Connection {
            host: Some("db".into()),
            port: Some(5433),
            socket: Some("/run/pg".into()),
            user: Some("u".into()),
            password: Some(String::new()),
        }
    );
    let bad = json!({"host": "a b", "port": 0, "socket": "run/pg", "user": "", "password": 1});
    let (conn, errs) = check(bad, |c, v| c.connection("connection", v, Unknown::Warn));
    assert_eq!(conn, Some(Connection::default()));
    assert_eq!(
        errs,
        [
            "f.json: connection.host: must not contain whitespace, got \"a b\"",
            "f.json: connection.port: must be between 1 and 65535, got 0",
            "f.json: connection.socket: must be an absolute path, got \"run/pg\"",
            "f.json: connection.user: must not be empty",
            "f.json: connection.password: expected a string, got a number",
        ]
    );
    assert_eq!(
        check(json!("db"), |c, v| c.connection(
            "connection",
            v,
            Unknown::Warn
        )),
        (
            None,
            vec!["f.json: connection: expected an object, got a string".into()]
        )
    );
    let fallback = Connection {
        port: Some(1),
        user: Some("f".into()),
        ..Connection::default()
    };
    let own = Connection {
        user: Some("o".into()),
        ..Connection::default()
    };
    assert_eq!(
        own.or_fallback(&fallback),
        Connection {
            port: Some(1),
            user: Some("o".into()),
            ..Connection::default()
        }
    );
}

#[test]
fn unknown_keys_warn_or_refuse() {
    let obj = json!({"a": 1, "b": 2, "_note": "x"});
    let obj = obj.as_object().unwrap();
    let mut c = Checker::new("f.json");
    c.unknown_keys("top", obj, &["a"], Unknown::Warn);
    c.unknown_keys("top", obj, &["a"], Unknown::WarnUnlessComment);
    c.unknown_keys("", obj, &["a", "_note"], Unknown::Error);
    let (errs, warnings) = c.into_lines();
    assert_eq!(errs, ["f.json: b: unknown key (known: a, _note)"]);
    assert_eq!(
        warnings,
        [
            "f.json: top._note: unknown key, ignored",
            "f.json: top.b: unknown key, ignored",
            "f.json: top.b: unknown key, ignored",
        ]
    );
}

#[test]
fn nested_paths_and_files() {
    let v = json!({"outer": {"list": [{"n": "x"}]}});
    let mut c = Checker::new("main.json");
    let outer = c.object("outer", &v["outer"]).unwrap();
    let path = index(&key("outer", "list"), 0);
    let item = c.object(&path, &outer["list"][0]).unwrap();
    c.integer(&key(&path, "n"), &item["n"], 0..=1);
    c.set_file("snippet.json");
    c.required("jobs", "");
    c.required(&key("jobs", "name"), "the job's name");
    assert_eq!(c.file(), Path::new("snippet.json"));
    assert!(c.has_errors());
    assert_eq!(
        errors(c),
        [
            "main.json: outer.list[0].n: expected a whole number, got a string",
            "snippet.json: jobs: required",
            "snippet.json: jobs.name: required: the job's name",
        ]
    );
}

#[test]
fn lines_are_one_line_and_bare_lines_name_no_file() {
    let mut c = Checker::bare();
    c.error("a\nb", "bad\u{1b}[31m");
    c.warn("", "whole file");
    assert_eq!(
        c.into_lines(),
        (
            vec!["a\\nb: bad\\u{1b}[31m".to_string()],
            vec!["whole file".to_string()]
        )
    );

    let mut c = Checker::bare();
    c.warn("w", says::UNKNOWN_IGNORED);
    assert_eq!(
        c.finish(7),
        Ok((7, vec!["w: unknown key, ignored".to_string()]))
    );
    let mut c = Checker::bare();
    c.error("e", says::EMPTY);
    let Err(crate::PluginError::Config(lines)) = c.finish_plugin(()) else {
        panic!("no error")
    };
    assert_eq!(lines, ["e: must not be empty"]);
    assert!(present(json!({"k": null}).as_object().unwrap(), "k").is_none());
}

#[test]
fn number_has_a_lower_bound_and_takes_fractions() {
    let get = |v: Value| check(v, |c, v| c.number("n", v, 0.0));
    assert_eq!(get(json!(0)), (Some(0.0), vec![]));
    assert_eq!(get(json!(1.5)), (Some(1.5), vec![]));
    assert_eq!(
        get(json!(-1)),
        (None, vec!["f.json: n: must be at least 0, got -1".into()])
    );
    assert_eq!(
        get(json!("60")),
        (
            None,
            vec!["f.json: n: expected a number, got a string".into()]
        )
    );
}

#[test]
fn read_object_names_what_is_wrong_with_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("c.json");
    let read = |text: &str| {
        std::fs::write(&file, text).unwrap();
        read_object(&file).map_err(|issue| issue.to_string())
    };
    let shown = file.display();
    assert_eq!(read("{\"a\": 1}").unwrap()["a"], 1);
    assert_eq!(
        read("[1]").unwrap_err(),
        format!("{shown}: expected a JSON object at the top, got a list")
    );
    assert!(read("{\"a\": ")
        .unwrap_err()
        .starts_with(&format!("{shown}: line 1 column 6: invalid JSON: ")));
    let missing = tmp.path().join("nope.json");
    assert!(read_object(&missing)
        .unwrap_err()
        .to_string()
        .starts_with(&format!("{}: cannot read the file: ", missing.display())));
}
