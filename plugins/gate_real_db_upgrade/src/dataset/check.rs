//! The collector of a dataset file's problems, each with its key path, and the checks of
//! names and paths that several key sections share.

use std::fmt::Display;
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use crate::template::PLACEHOLDERS;

/// Collects problems, each prefixed with the file.
pub(super) struct Checker {
    pub(super) prefix: String,
    pub(super) errors: Vec<String>,
    pub(super) warnings: Vec<String>,
}

impl Checker {
    /// Problems of the file `file`.
    pub(super) fn for_file(file: &str) -> Self {
        Checker {
            prefix: format!("{file}: "),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    #[cfg(test)]
    pub(super) fn bare() -> Self {
        Checker {
            prefix: String::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Errors found by a reader of its own, `<key path>: <what>` each.
    pub(super) fn errors_from(&mut self, lines: Vec<String>) {
        for line in lines {
            self.errors.push(format!("{}{line}", self.prefix));
        }
    }

    /// Warnings found by a reader of its own, `<key path>: <what>` each.
    pub(super) fn warnings_from(&mut self, lines: Vec<String>) {
        for line in lines {
            self.warnings.push(format!("{}{line}", self.prefix));
        }
    }

    pub(super) fn err(&mut self, key: &str, what: impl Display) {
        self.errors.push(format!("{}{key}: {what}", self.prefix));
    }

    pub(super) fn warn(&mut self, key: &str, what: impl Display) {
        self.warnings.push(format!("{}{key}: {what}", self.prefix));
    }

    /// Warns about keys of `object` not in `known` (keys starting with `_` are comments).
    pub(super) fn unknown_keys(&mut self, path: &str, object: &Map<String, Value>, known: &[&str]) {
        for key in object.keys() {
            if !key.starts_with('_') && !known.contains(&key.as_str()) {
                self.warn(&join(path, key), "unknown key, ignored");
            }
        }
    }

    /// A string value, or an error.
    pub(super) fn string<'v>(&mut self, key: &str, value: &'v Value) -> Option<&'v str> {
        match value.as_str() {
            Some(s) => Some(s),
            None => {
                self.err(key, format!("must be a string, not {value}"));
                None
            }
        }
    }

    /// A non-empty string value, or an error.
    pub(super) fn nonempty(&mut self, key: &str, value: &Value) -> Option<String> {
        let s = self.string(key, value)?;
        if s.trim().is_empty() {
            self.err(key, "must not be empty");
            return None;
        }
        Some(s.to_string())
    }

    /// A relative path inside its base (no `..`, not absolute), or an error.
    pub(super) fn inner_path(&mut self, key: &str, value: &Value, what: &str) -> Option<PathBuf> {
        let s = self.nonempty(key, value)?;
        if is_inner_path(&s) {
            Some(PathBuf::from(s))
        } else {
            self.err(
                key,
                format!("{what} must be a relative path without `..`, not {s:?}"),
            );
            None
        }
    }

    /// Warns about `{name}` placeholders that are not in [`PLACEHOLDERS`].
    pub(super) fn placeholders(&mut self, key: &str, text: &str) {
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else { break };
            let name = &after[..close];
            if !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !PLACEHOLDERS.contains(&name)
            {
                self.warn(key, format!("unknown placeholder {{{name}}}, left as is"));
            }
            rest = &after[close + 1..];
        }
    }
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `[A-Za-z0-9._-]+`, not `.` or `..`.
pub(super) fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A relative path whose components are all normal (no `..`, no root, no prefix).
pub(super) fn is_inner_path(s: &str) -> bool {
    let p = Path::new(s);
    !s.is_empty()
        && !p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && p.components().any(|c| matches!(c, Component::Normal(_)))
}

pub(super) fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A git ref of the upgrade path: no leading `-`, no `..`, no whitespace or control characters.
pub(super) fn ref_problem(r: &str) -> Option<&'static str> {
    if r.is_empty() {
        Some("must not be empty")
    } else if r.starts_with('-') {
        Some("must not start with `-`")
    } else if r.contains("..") {
        Some("must not contain `..`")
    } else if r.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain whitespace")
    } else {
        None
    }
}
