//! The checks of names and paths that several key sections of a dataset share, as helpers over
//! the SDK's [`Checker`] (which collects the problems with their key paths, in the SDK's
//! wording).

use std::path::{Component, Path, PathBuf};

use serde_json::Value;
use turbo_hipster_sdk::config::{says, Checker};

use crate::template::PLACEHOLDERS;

/// A relative path inside its base (no `..`, not absolute); `what` names it in the error.
pub(super) fn inner_path(c: &mut Checker, key: &str, value: &Value, what: &str) -> Option<PathBuf> {
    let s = c.nonempty(key, value)?;
    if is_inner_path(&s) {
        Some(PathBuf::from(s))
    } else {
        c.error(
            key,
            format!("{what} must be a relative path without `..`, got {s:?}"),
        );
        None
    }
}

/// Warns about `{name}` placeholders that are not in [`PLACEHOLDERS`].
pub(super) fn placeholders(c: &mut Checker, key: &str, text: &str) {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        let name = &after[..close];
        if !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !PLACEHOLDERS.contains(&name)
        {
            c.warn(key, format!("unknown placeholder {{{name}}}, left as is"));
        }
        rest = &after[close + 1..];
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

/// A git ref of the upgrade path: not empty, no leading `-`, no `..`, no whitespace or control
/// characters.
pub(super) fn ref_problem(r: &str) -> Option<String> {
    if r.is_empty() {
        Some(says::EMPTY.to_string())
    } else if r.starts_with('-') {
        Some(format!("must not start with `-`, got {r:?}"))
    } else if r.contains("..") {
        Some(format!("must not contain `..`, got {r:?}"))
    } else if r.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some(says::whitespace(r))
    } else {
        None
    }
}
