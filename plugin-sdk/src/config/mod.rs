//! One checker for every configuration file: the daemon's `config.json` and its `conf_d`
//! snippets, the datasets' `config.json`, and the plugins' job configs.
//!
//! A [`Checker`] is made for one source file (or [`Checker::bare`] for a job config, whose
//! lines need no file) and walks the parsed JSON with typed getters. A getter never stops the
//! walk: a value with a problem records an error and comes back as `None`, so that every
//! problem of a file is found in one pass and reported at once, each as one line
//! `<file>: <key path>: <what>`. Key paths name the place inside the file: keys joined with
//! `.` ([`key`]), list items as `[i]` ([`index`]); the getters take the path of the value
//! they check, so a caller descends by building the child's path.
//!
//! Getters check values, not objects: an absent key is the caller's (its default, or
//! [`Checker::required`]); [`present`] reads a key treating `null` as absent, as the daemon's
//! config and the job configs do. The wording of each kind of mistake is in [`says`].
//!
//! ```
//! use std::path::Path;
//! use serde_json::json;
//! use turbo_hipster_sdk::config::{index, key, present, Checker, Unknown};
//!
//! let config = json!({"workers": 0, "name": "", "hosts": ["a", 3], "colour": "red"});
//! let obj = config.as_object().unwrap();
//! let mut c = Checker::new("/etc/x.json");
//! c.unknown_keys("", obj, &["workers", "name", "hosts"], Unknown::Warn);
//! let workers = present(obj, "workers").and_then(|v| c.integer("workers", v, 1..=64));
//! let name = present(obj, "name").and_then(|v| c.nonempty("name", v));
//! let hosts = present(obj, "hosts").and_then(|v| c.strings("hosts", v));
//! assert_eq!((workers, name, hosts), (None, None, None));
//! assert_eq!(key("hosts", "x"), "hosts.x");
//! assert_eq!(index("hosts", 1), "hosts[1]");
//!
//! let (errors, warnings) = c.into_lines();
//! assert_eq!(errors, [
//!     "/etc/x.json: workers: must be between 1 and 64, got 0",
//!     "/etc/x.json: name: must not be empty",
//!     "/etc/x.json: hosts[1]: expected a string, got a number",
//! ]);
//! assert_eq!(warnings, ["/etc/x.json: colour: unknown key, ignored"]);
//! ```

mod connection;
pub mod says;
pub mod secrets;
#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

pub use connection::{Connection, CONNECTION_KEYS};

use crate::support::text::one_line;
use crate::PluginError;

/// One problem, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The file the problem is in (empty for a job config).
    pub file: PathBuf,
    /// The key path inside the file (`jobs[2].plugin`), empty for the whole file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Issue {
    /// `<file>: <key path>: <what>`, the parts that are empty left out, as one line (the path
    /// and the message may quote anything the file holds).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display().to_string();
        let parts = [file.as_str(), &self.path, &self.message];
        let line = parts
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(": ");
        f.write_str(&one_line(&line))
    }
}

/// What to do with a key the reader does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// A warning ([`says::UNKNOWN_IGNORED`]).
    Warn,
    /// A warning, except for keys starting with `_`: those are comments.
    WarnUnlessComment,
    /// An error naming the known keys.
    Error,
}

/// What a path must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathNeed {
    /// Anything (relative paths are taken from the base).
    Any,
    /// Written absolute; nothing checked on disk.
    Absolute,
    /// Something that exists.
    Exists,
    /// A regular file (symlinks followed).
    File,
    /// A directory (symlinks followed).
    Dir,
}

/// The range of a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecondsRange {
    /// The lower bound.
    pub min: f64,
    /// Whether `min` itself is allowed (else only more than it).
    pub min_included: bool,
    /// The upper bound (included).
    pub max: f64,
}

impl SecondsRange {
    /// From `min` to `max`, both included.
    pub const fn from_to(min: f64, max: f64) -> Self {
        Self {
            min,
            min_included: true,
            max,
        }
    }

    /// More than `min`, at most `max`.
    pub const fn over(min: f64, max: f64) -> Self {
        Self {
            min,
            min_included: false,
            max,
        }
    }

    fn contains(&self, s: f64) -> bool {
        let low = if self.min_included {
            s >= self.min
        } else {
            s > self.min
        };
        low && s <= self.max
    }
}

/// `path.key`, or `key` at the top.
pub fn key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `path[i]`.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The value of `key` in `obj`, `null` counting as absent.
pub fn present<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// The JSON object in `file`. A file that cannot be read, is not JSON (its place as the key
/// path: `line 3 column 7`) or holds something else than an object is one issue on the file.
///
/// # Errors
/// That issue.
pub fn read_object(file: &Path) -> Result<Map<String, Value>, Issue> {
    let issue = |path: String, message: String| Issue {
        file: file.to_path_buf(),
        path,
        message,
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| issue(String::new(), format!("cannot read the file: {e}")))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(issue(
            String::new(),
            says::expected("a JSON object at the top", &other),
        )),
        Err(e) => Err(issue(
            format!("line {} column {}", e.line(), e.column()),
            format!("invalid JSON: {e}"),
        )),
    }
}

/// Collects every error and warning of one source; see the [module](self) documentation.
#[derive(Debug, Default)]
pub struct Checker {
    file: PathBuf,
    errors: Vec<Issue>,
    warnings: Vec<Issue>,
}

impl Checker {
    /// A checker for the file `file` (named on every line).
    pub fn new(file: impl Into<PathBuf>) -> Self {
        Self {
            file: file.into(),
            ..Self::default()
        }
    }

    /// A checker whose lines name no file (a plugin's job config: the daemon says where).
    pub fn bare() -> Self {
        Self::default()
    }

    /// The file problems are blamed on.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Blames the problems found from now on on `file` (an entry merged in from another
    /// file).
    pub fn set_file(&mut self, file: impl Into<PathBuf>) {
        self.file = file.into();
    }

    fn issue(&self, path: &str, what: impl fmt::Display) -> Issue {
        Issue {
            file: self.file.clone(),
            path: path.to_string(),
            message: what.to_string(),
        }
    }

    /// Records an error at `path`.
    pub fn error(&mut self, path: &str, what: impl fmt::Display) {
        let issue = self.issue(path, what);
        self.errors.push(issue);
    }

    /// Records a warning at `path`.
    pub fn warn(&mut self, path: &str, what: impl fmt::Display) {
        let issue = self.issue(path, what);
        self.warnings.push(issue);
    }

    /// Records that the key at `path` is missing; `hint` says what it holds.
    pub fn required(&mut self, path: &str, hint: &str) {
        self.error(path, says::required(hint));
    }

    /// Whether an error was found.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The errors and the warnings, in the order found.
    pub fn into_issues(self) -> (Vec<Issue>, Vec<Issue>) {
        (self.errors, self.warnings)
    }

    /// The errors and the warnings as lines.
    pub fn into_lines(self) -> (Vec<String>, Vec<String>) {
        let lines = |v: Vec<Issue>| v.iter().map(ToString::to_string).collect();
        (lines(self.errors), lines(self.warnings))
    }

    /// `value` with the warnings when there was no error, else the error lines.
    ///
    /// # Errors
    /// Every error, one line each.
    pub fn finish<T>(self, value: T) -> Result<(T, Vec<String>), Vec<String>> {
        let (errors, warnings) = self.into_lines();
        if errors.is_empty() {
            Ok((value, warnings))
        } else {
            Err(errors)
        }
    }

    /// For a plugin's job config: `value` when there was no error (the warnings go to the
    /// log), else [`PluginError::Config`] with every error.
    ///
    /// # Errors
    /// Every error, one line each.
    pub fn finish_plugin<T>(self, value: T) -> Result<T, PluginError> {
        let (value, warnings) = self.finish(value).map_err(PluginError::Config)?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        Ok(value)
    }

    /// Checks the keys of `obj` (at `path`) against `known`.
    pub fn unknown_keys(
        &mut self,
        path: &str,
        obj: &Map<String, Value>,
        known: &[&str],
        unknown: Unknown,
    ) {
        for k in obj.keys() {
            if known.contains(&k.as_str()) {
                continue;
            }
            match unknown {
                Unknown::WarnUnlessComment if k.starts_with('_') => {}
                Unknown::Warn | Unknown::WarnUnlessComment => {
                    self.warn(&key(path, k), says::UNKNOWN_IGNORED)
                }
                Unknown::Error => self.error(&key(path, k), says::unknown_key(known)),
            }
        }
    }

    /// An object.
    pub fn object<'v>(&mut self, path: &str, value: &'v Value) -> Option<&'v Map<String, Value>> {
        let obj = value.as_object();
        if obj.is_none() {
            self.error(path, says::expected("an object", value));
        }
        obj
    }

    /// A list.
    pub fn list<'v>(&mut self, path: &str, value: &'v Value) -> Option<&'v [Value]> {
        let list = value.as_array().map(Vec::as_slice);
        if list.is_none() {
            self.error(path, says::expected("a list", value));
        }
        list
    }

    /// A string.
    pub fn string<'v>(&mut self, path: &str, value: &'v Value) -> Option<&'v str> {
        let s = value.as_str();
        if s.is_none() {
            self.error(path, says::expected("a string", value));
        }
        s
    }

    /// A string with something besides whitespace in it.
    pub fn nonempty(&mut self, path: &str, value: &Value) -> Option<String> {
        let s = self.string(path, value)?;
        if s.trim().is_empty() {
            self.error(path, says::EMPTY);
            return None;
        }
        Some(s.to_string())
    }

    /// `true` or `false`.
    pub fn boolean(&mut self, path: &str, value: &Value) -> Option<bool> {
        let b = value.as_bool();
        if b.is_none() {
            self.error(path, says::expected("true or false", value));
        }
        b
    }

    /// A whole number in `range` (both ends included).
    pub fn integer(
        &mut self,
        path: &str,
        value: &Value,
        range: RangeInclusive<u64>,
    ) -> Option<u64> {
        let (min, max) = (range.start(), range.end());
        let Value::Number(n) = value else {
            self.error(path, says::expected("a whole number", value));
            return None;
        };
        match n.as_u64() {
            Some(n) if range.contains(&n) => Some(n),
            _ if n.as_f64().is_some_and(|f| f.fract() != 0.0) => {
                self.error(path, says::whole(min, max, says::show(value)));
                None
            }
            _ => {
                self.error(path, says::between(min, max, says::show(value)));
                None
            }
        }
    }

    /// A finite number, at least `min` (a fraction allowed).
    pub fn number(&mut self, path: &str, value: &Value, min: f64) -> Option<f64> {
        let Some(n) = value.as_f64() else {
            self.error(path, says::expected("a number", value));
            return None;
        };
        if n.is_finite() && n >= min {
            Some(n)
        } else {
            self.error(path, says::at_least(min, says::show(value)));
            None
        }
    }

    /// A number of seconds in `range`.
    pub fn seconds(&mut self, path: &str, value: &Value, range: SecondsRange) -> Option<Duration> {
        let Some(s) = value.as_f64() else {
            self.error(path, says::expected("a number of seconds", value));
            return None;
        };
        let d = Some(s)
            .filter(|s| range.contains(*s))
            .and_then(|s| Duration::try_from_secs_f64(s).ok());
        if d.is_none() {
            let got = says::show(value);
            self.error(
                path,
                says::seconds(range.min, range.min_included, range.max, got),
            );
        }
        d
    }

    /// A path (not empty), taken from `base` when relative, that must be what `need` says.
    pub fn path(
        &mut self,
        path: &str,
        value: &Value,
        base: &Path,
        need: PathNeed,
    ) -> Option<PathBuf> {
        let s = self.nonempty(path, value)?;
        let p = Path::new(&s);
        if need == PathNeed::Absolute && !p.is_absolute() {
            self.error(path, says::not_absolute(&s));
            return None;
        }
        let p = base.join(p);
        let problem = match need {
            PathNeed::Any | PathNeed::Absolute => None,
            _ => match std::fs::metadata(&p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(says::missing(&p)),
                Err(e) => Some(format!("cannot read {}: {e}", p.display())),
                Ok(m) if need == PathNeed::File && !m.is_file() => {
                    Some(says::not_a(&p, "a regular file"))
                }
                Ok(m) if need == PathNeed::Dir && !m.is_dir() => {
                    Some(says::not_a(&p, "a directory"))
                }
                Ok(_) => None,
            },
        };
        match problem {
            Some(why) => {
                self.error(path, why);
                None
            }
            None => Some(p),
        }
    }

    /// A list of strings; every item that is not one is an error of its own (`path[i]`).
    pub fn strings(&mut self, path: &str, value: &Value) -> Option<Vec<String>> {
        let list = self.list(path, value)?;
        let mut out = Vec::with_capacity(list.len());
        let mut ok = true;
        for (i, item) in list.iter().enumerate() {
            match self.string(&index(path, i), item) {
                Some(s) => out.push(s.to_string()),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// One of the names in `names` (exactly as written), mapped to its value.
    pub fn one_of<T: Copy>(&mut self, path: &str, value: &Value, names: &[(&str, T)]) -> Option<T> {
        let found = value
            .as_str()
            .and_then(|s| names.iter().find(|(n, _)| *n == s))
            .map(|(_, t)| *t);
        if found.is_none() {
            let names: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
            self.error(path, says::one_of(&names, says::show(value)));
        }
        found
    }
}
