//! Secrets of a job's configuration, and masking them in everything published.
//!
//! A job config's secrets are the `password` of its `connection` (always) and the values of
//! the keys its `secret_keys` list names (key paths as the checker writes them, `a.b` for a
//! key inside an object), e.g.
//!
//! ```json
//! {"name": "build:x", "plugin": "shell_script", "shell_script": "run.sh",
//!  "api_token": "t0k3n", "secret_keys": ["api_token"]}
//! ```
//!
//! A secret value may be a string, a number or a boolean, or a list or object whose leaves
//! are (each leaf is a secret). The daemon masks every form a secret may take in a published
//! file ([`Secrets::new`]) with `***` in every file of the job's results, in the result and
//! in the details it records. A secret shorter than [`MIN_LEN`] characters is not masked:
//! masking it would garble the logs and hide nothing.
//!
//! ```
//! use serde_json::json;
//! use turbo_hipster_sdk::config::secrets::{values, Secrets};
//!
//! let config = json!({"connection": {"password": "p@ss word"}, "token": "abc123",
//!                     "secret_keys": ["token"]});
//! let secrets = Secrets::new(values(config.as_object().unwrap()));
//! assert_eq!(secrets.mask("mysql://u:p%40ss%20word@h/db abc123"), "mysql://u:***@h/db ***");
//! assert_eq!(secrets.mask("p+ss"), "p+ss");
//! assert!(!format!("{secrets:?}").contains("abc123"));
//! ```

use std::fmt;

use serde_json::{Map, Value};

use super::{index, key, present, Checker};

/// The key listing a job config's secret keys.
pub const SECRET_KEYS: &str = "secret_keys";
/// The shortest secret masked.
pub const MIN_LEN: usize = 3;

/// Checks `secret_keys` of the job config `config` (whose own path is `at`, empty for a bare
/// job config): a list of strings, each naming a key the config has.
pub fn check(c: &mut Checker, at: &str, config: &Map<String, Value>) {
    let list_at = key(at, SECRET_KEYS);
    let Some(list) = present(config, SECRET_KEYS).and_then(|v| c.list(&list_at, v)) else {
        return;
    };
    for (i, item) in list.iter().enumerate() {
        let item_at = index(&list_at, i);
        let Some(path) = c.string(&item_at, item) else {
            continue;
        };
        if path == SECRET_KEYS || lookup(config, path).is_none() {
            c.error(&item_at, super::says::names_no_key(path));
        }
    }
}

/// The value at the key path `path` (`a.b.c`) of `config`.
fn lookup<'v>(config: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    let mut parts = path.split('.');
    let mut value = present(config, parts.next()?)?;
    for part in parts {
        value = present(value.as_object()?, part)?;
    }
    Some(value)
}

/// The secret values of a job config: `connection.password` and what `secret_keys` names
/// (entries that name nothing are skipped: [`check`] reports them).
pub fn values(config: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(p) = lookup(config, "connection.password") {
        leaves(p, &mut out);
    }
    if let Some(Value::Array(list)) = present(config, SECRET_KEYS) {
        for path in list.iter().filter_map(Value::as_str) {
            if let Some(v) = lookup(config, path) {
                leaves(v, &mut out);
            }
        }
    }
    out
}

fn leaves(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Bool(b) => out.push(b.to_string()),
        Value::Array(items) => items.iter().for_each(|i| leaves(i, out)),
        Value::Object(map) => map.values().for_each(|i| leaves(i, out)),
        Value::Null => {}
    }
}

/// Every form of a set of secrets that may appear in a published file, longest first.
#[derive(Clone, Default)]
pub struct Secrets {
    forms: Vec<String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} forms)", self.forms.len())
    }
}

impl Secrets {
    /// The forms of `values` (each at least [`MIN_LEN`] characters): as written, URL-encoded
    /// (percent-encoding with upper- and lower-case hex digits, and form encoding with `+` for
    /// a space: how a password appears in a connection URL), as a JSON string's contents and
    /// HTML-escaped.
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut forms = Vec::new();
        for v in values {
            if v.chars().count() < MIN_LEN {
                continue;
            }
            let json = serde_json::to_string(&v).unwrap_or_default();
            let json = json
                .strip_prefix('"')
                .and_then(|j| j.strip_suffix('"'))
                .unwrap_or(&v)
                .to_string();
            let encoded = percent_encode(&v);
            forms.extend([
                encoded.clone(),
                lower_hex(&encoded),
                percent_encode(&v.replace(' ', "\u{0}")).replace("%00", "+"),
                html_escape(&v),
                html_escape(&json),
                json,
                v,
            ]);
        }
        forms.retain(|f| f.chars().count() >= MIN_LEN);
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        forms.dedup();
        Secrets { forms }
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// `text` with every form of every secret replaced by `***`.
    pub fn mask(&self, text: &str) -> String {
        self.forms
            .iter()
            .fold(text.to_string(), |t, f| t.replace(f.as_str(), "***"))
    }

    /// `value` with every string in it masked.
    pub fn mask_value(&self, value: Value) -> Value {
        if self.is_empty() {
            return value;
        }
        match value {
            Value::String(s) => Value::String(self.mask(&s)),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.mask_value(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (self.mask(&k), self.mask_value(v)))
                    .collect(),
            ),
            other => other,
        }
    }

    /// `bytes` with every form masked, or `None` when none occurs (any bytes: a secret is
    /// found in a binary file too).
    pub fn mask_bytes(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut current: Option<Vec<u8>> = None;
        for form in &self.forms {
            let finder = memchr::memmem::Finder::new(form.as_bytes());
            let text = current.as_deref().unwrap_or(bytes);
            let mut hits = finder.find_iter(text).peekable();
            if hits.peek().is_none() {
                continue;
            }
            let mut out = Vec::with_capacity(text.len());
            let mut from = 0;
            for at in hits {
                // Overlapping matches: the first one wins.
                if at < from {
                    continue;
                }
                out.extend_from_slice(&text[from..at]);
                out.extend_from_slice(b"***");
                from = at + form.len();
            }
            out.extend_from_slice(&text[from..]);
            current = Some(out);
        }
        current
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%2F` → `%2f`.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut after_percent = 0;
    for ch in encoded.chars() {
        if ch == '%' {
            after_percent = 2;
            out.push(ch);
        } else if after_percent > 0 {
            after_percent -= 1;
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_form_is_masked() {
        let s = Secrets::new(["p@ss/w\"o<r>d &x".to_string()]);
        for text in [
            "p@ss/w\"o<r>d &x",
            "p%40ss%2Fw%22o%3Cr%3Ed%20%26x",
            "p%40ss%2fw%22o%3cr%3ed%20%26x",
            "p%40ss%2Fw%22o%3Cr%3Ed+%26x",
            "p@ss/w\\\"o<r>d &x",
            "p@ss/w&quot;o&lt;r&gt;d &amp;x",
        ] {
            assert_eq!(s.mask(&format!("a {text} b")), "a *** b", "{text}");
            assert_eq!(
                s.mask_bytes(format!("a {text} b").as_bytes()).unwrap(),
                b"a *** b"
            );
        }
        assert_eq!(s.mask_bytes(b"nothing"), None);
        assert!(Secrets::new(["ab".to_string()]).is_empty());
    }

    #[test]
    fn secret_keys_are_checked() {
        let config = json!({"a": {"b": [1234, "xyz"]}, "connection": {"password": "pw1"},
                            "secret_keys": ["a.b", "nope", 3]});
        let config = config.as_object().unwrap();
        let mut c = Checker::bare();
        check(&mut c, "jobs[0]", config);
        let (errors, _) = c.into_lines();
        assert_eq!(
            errors,
            [
                "jobs[0].secret_keys[1]: \"nope\" names no key of this job's configuration",
                "jobs[0].secret_keys[2]: expected a string, got a number",
            ]
        );
        assert_eq!(values(config), ["pw1", "1234", "xyz"]);
    }
}
