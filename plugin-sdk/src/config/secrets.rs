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
use std::io::{Read, Write};
use std::path::Path;

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

/// Files up to this size are masked in memory; a larger one is read in blocks of this size.
const MASK_IN_MEMORY_MAX: u64 = 16 * 1024 * 1024;

impl Secrets {
    /// Masks every form in the file at `path`, in place, as [`Secrets::mask_bytes`] would:
    /// `true` if it changed. A file above 16 MiB is never read whole: it is scanned in
    /// blocks (one read when no secret occurs, the common case), and each form that occurs is
    /// replaced by a pass that writes a copy beside it (`.<name>.masking`, renamed over it).
    ///
    /// # Errors
    /// Reading or writing the file; the copy is removed then.
    pub fn mask_file(&self, path: &Path) -> std::io::Result<bool> {
        if self.is_empty() {
            return Ok(false);
        }
        if std::fs::metadata(path)?.len() <= MASK_IN_MEMORY_MAX {
            let bytes = std::fs::read(path)?;
            return match self.mask_bytes(&bytes) {
                Some(masked) => std::fs::write(path, masked).map(|()| true),
                None => Ok(false),
            };
        }
        self.mask_file_in_blocks(path, MASK_IN_MEMORY_MAX)
    }

    fn mask_file_in_blocks(&self, path: &Path, block: u64) -> std::io::Result<bool> {
        let forms: Vec<&[u8]> = self.forms.iter().map(|f| f.as_bytes()).collect();
        if !occurs(path, &forms, block)? {
            return Ok(false);
        }
        let mut changed = false;
        for form in forms {
            if occurs(path, &[form], block)? {
                changed |= replace_in_file(path, form, block)?;
            }
        }
        Ok(changed)
    }
}

/// Whether any of `forms` occurs in the file, read a block at a time (each block with the
/// end of the one before, so that a form across two blocks is found).
fn occurs(path: &Path, forms: &[&[u8]], block: u64) -> std::io::Result<bool> {
    let keep = forms.iter().map(|f| f.len()).max().unwrap_or(1) - 1;
    let finders: Vec<_> = forms.iter().map(memchr::memmem::Finder::new).collect();
    let mut file = std::fs::File::open(path)?;
    let mut window: Vec<u8> = Vec::new();
    loop {
        let tail = window.len().saturating_sub(keep);
        window.drain(..tail);
        let read = (&mut file).take(block).read_to_end(&mut window)?;
        if finders.iter().any(|f| f.find(&window).is_some()) {
            return Ok(true);
        }
        if read == 0 {
            return Ok(false);
        }
    }
}

/// Replaces every `form` in the file by `***` (overlapping matches: the first wins), through
/// a copy beside it renamed over it; `false` (and no copy left) when `form` is not there.
fn replace_in_file(path: &Path, form: &[u8], block: u64) -> std::io::Result<bool> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let copy = path.with_file_name(format!(".{}.masking", name.unwrap_or_default()));
    let result = replace_into(path, &copy, form, block);
    match result {
        Ok(true) => std::fs::rename(&copy, path).map(|()| true),
        other => {
            let _ = std::fs::remove_file(&copy);
            other
        }
    }
}

fn replace_into(path: &Path, copy: &Path, form: &[u8], block: u64) -> std::io::Result<bool> {
    let finder = memchr::memmem::Finder::new(form);
    let mut file = std::fs::File::open(path)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(copy)?);
    let mut window: Vec<u8> = Vec::new();
    let mut found = false;
    loop {
        let read = (&mut file).take(block).read_to_end(&mut window)?;
        // Without more to read, all of the window is final; else its last bytes may start a
        // form the next block ends.
        let end = if read == 0 {
            window.len()
        } else {
            window.len().saturating_sub(form.len() - 1)
        };
        let mut from = 0;
        for at in finder.find_iter(&window) {
            if at < from {
                continue;
            }
            if at >= end {
                break;
            }
            out.write_all(&window[from..at])?;
            out.write_all(b"***")?;
            from = at + form.len();
            found = true;
        }
        let cut = end.max(from);
        out.write_all(&window[from..cut])?;
        window.drain(..cut);
        if read == 0 {
            break;
        }
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(found)
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
    fn a_file_masked_in_blocks_is_masked_as_in_memory() {
        // Two secrets (one a prefix of another's form), overlapping hits, hits across every
        // block boundary, at the start and the end; blocks from 1 byte to more than the file.
        let s = Secrets::new(["abcab".to_string(), "x y/z".to_string()]);
        let mut text = b"abcabcab|x%20y%2Fz|x y/zx y/z.".to_vec();
        text.extend_from_slice(&[0, 255, 10]);
        text.extend_from_slice(b"abcababcab+x+y%2fz.x y/z");
        let expected = s.mask_bytes(&text).unwrap();
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f.log");
        for block in 1..=(text.len() as u64 + 2) {
            std::fs::write(&path, &text).unwrap();
            assert!(s.mask_file_in_blocks(&path, block).unwrap(), "{block}");
            let masked = std::fs::read(&path).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&masked),
                String::from_utf8_lossy(&expected),
                "block of {block} bytes"
            );
            // Nothing is left beside it; a clean file is not rewritten.
            assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
            let before = std::fs::metadata(&path).unwrap().modified().unwrap();
            assert!(!s.mask_file_in_blocks(&path, block).unwrap());
            assert_eq!(
                std::fs::metadata(&path).unwrap().modified().unwrap(),
                before
            );
        }
        std::fs::write(&path, &text).unwrap();
        assert!(s.mask_file(&path).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), expected);
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
