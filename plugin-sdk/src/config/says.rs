//! The wording of every configuration mistake, in one place: the host's config, the datasets
//! and the plugins' job configs say the same thing for the same kind of mistake. Each function
//! gives the `<what>` of a `<file>: <key path>: <what>` line.

use std::fmt::Display;

use serde_json::Value;

/// A warning: a key the reader does not know.
pub const UNKNOWN_IGNORED: &str = "unknown key, ignored";
/// A string (or list) that must hold something.
pub const EMPTY: &str = "must not be empty";

/// A value of the wrong JSON type: `expected a string, got a number`.
pub fn expected(what: &str, got: &Value) -> String {
    format!("expected {what}, got {}", kind(got))
}

/// A number outside its range (both ends included): `must be between 1 and 64, got 0`.
pub fn between(min: impl Display, max: impl Display, got: impl Display) -> String {
    format!("must be between {min} and {max}, got {got}")
}

/// A number below its lower bound (with no upper one): `must be at least 0, got -1`.
pub fn at_least(min: impl Display, got: impl Display) -> String {
    format!("must be at least {min}, got {got}")
}

/// A number with a fraction where a whole one is needed.
pub fn whole(min: impl Display, max: impl Display, got: impl Display) -> String {
    format!("must be a whole number between {min} and {max}, got {got}")
}

/// A number of seconds outside its range: above `min` (or from it, when `min_included`) and
/// at most `max`.
pub fn seconds(min: f64, min_included: bool, max: f64, got: impl Display) -> String {
    if min_included {
        format!("must be between {min} and {max} seconds, got {got}")
    } else {
        format!("must be more than {min} and at most {max} seconds, got {got}")
    }
}

/// A name that is not one of `names`: `must be one of process, in-process, got "thread"`.
pub fn one_of(names: &[&str], got: impl Display) -> String {
    format!("must be one of {}, got {got}", names.join(", "))
}

/// A missing key; `hint` says what it holds (may be empty).
pub fn required(hint: &str) -> String {
    if hint.is_empty() {
        "required".to_string()
    } else {
        format!("required: {hint}")
    }
}

/// An error for a key the reader does not know (where unknown keys are refused).
pub fn unknown_key(known: &[&str]) -> String {
    format!("unknown key (known: {})", known.join(", "))
}

/// A relative path where an absolute one is needed.
pub fn not_absolute(got: &str) -> String {
    format!("must be an absolute path, got {got:?}")
}

/// A path that must exist and does not.
pub fn missing(path: &std::path::Path) -> String {
    format!("{} does not exist", path.display())
}

/// A path that is not the kind of file it must be (`a directory`, `a regular file`).
pub fn not_a(path: &std::path::Path, what: &str) -> String {
    format!("{} is not {what}", path.display())
}

/// Whitespace where none may be.
pub fn whitespace(got: &str) -> String {
    format!("must not contain whitespace, got {got:?}")
}

/// The JSON type of `v`, with its article: `a number`, `an object`, `null`.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `v` as JSON, cut to 60 bytes (a value quoted in a message may be anything).
pub fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!("{}…", &s[..s.floor_char_boundary(60)])
    } else {
        s
    }
}

/// A key path (in `secret_keys`) naming no key of the configuration it belongs to.
pub fn names_no_key(path: &str) -> String {
    format!("\"{path}\" names no key of this job's configuration")
}
