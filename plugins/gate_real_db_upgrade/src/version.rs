//! Schema versions: what the change expects the final version to be, where the database
//! records it, and how two versions are compared.
//!
//! - [`ExpectedVersion::HighestNumbered`]: the highest `NNN` of the files `NNN_*.py` in that
//!   directory of the checkout (sqlalchemy-migrate's `versions/`), as the original did.
//! - [`ExpectedVersion::AlembicHeads`]: the head revisions of the alembic scripts in that
//!   directory: every `revision` that no script names in its `down_revision` (a string, a
//!   tuple or list of strings for merges, or `None`), sorted and joined by `,`.
//! - [`ExpectedVersion::LastSqlFile`]: the number of the last file of the SQL-files mode.
//! - [`ExpectedVersion::Fixed`], [`ExpectedVersion::Unchecked`].
//!
//! Numbers compare as numbers: `007` and `7` are the same version.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::OnceLock;

use regex::Regex;

use crate::dataset::{ExpectedVersion, LogFormat, Migration};
use crate::engine::VersionSource;

/// The default version table of the SQL-files mode.
pub const DEFAULT_VERSION_TABLE: &str = "th_schema_version";

/// Why the expected version could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// The directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The directory or file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Nothing in the directory gives a version.
    #[error("no migration found in {}", .0.display())]
    Empty(std::path::PathBuf),
}

/// `v` with leading zeros removed when it is a number (`007` → `7`, `000` → `0`); other
/// versions (alembic revisions) are kept, trimmed.
pub fn normalize(v: &str) -> String {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let t = v.trim_start_matches('0');
        if t.is_empty() {
            "0".to_string()
        } else {
            t.to_string()
        }
    } else {
        v.to_string()
    }
}

/// Whether two versions are the same (numbers as numbers; comma-separated head lists as
/// sets).
pub fn same_version(a: &str, b: &str) -> bool {
    let set = |v: &str| -> BTreeSet<String> {
        v.split(',')
            .map(normalize)
            .filter(|s| !s.is_empty())
            .collect()
    };
    set(a) == set(b)
}

/// Orders two numbers given as digit strings (any length) without overflow.
pub fn cmp_numbers(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (normalize(a), normalize(b));
    a.len().cmp(&b.len()).then_with(|| a.cmp(&b))
}

/// Where the database records the version for this migration mode.
pub fn version_source(migration: &Migration, expected: &ExpectedVersion) -> VersionSource {
    match migration {
        Migration::SqlFiles { version_table, .. } => VersionSource::Table(version_table.clone()),
        Migration::Tool { log_format, .. } => match log_format {
            LogFormat::SqlalchemyMigrate => VersionSource::MigrateVersion,
            LogFormat::Alembic => VersionSource::AlembicVersion,
            LogFormat::Regex { .. } => match expected {
                ExpectedVersion::AlembicHeads(_) => VersionSource::AlembicVersion,
                _ => VersionSource::MigrateVersion,
            },
        },
    }
}

/// The expected final version for `expected`, resolved against `checkout`; `last_sql_file`
/// is the number of the last SQL file (SQL-files mode). `Ok(None)` means unchecked.
///
/// # Errors
/// The directory cannot be read or holds no migration.
pub fn expected_version(
    expected: &ExpectedVersion,
    checkout: &Path,
    last_sql_file: Option<&str>,
) -> Result<Option<String>, VersionError> {
    match expected {
        ExpectedVersion::Unchecked => Ok(None),
        ExpectedVersion::Fixed(v) => Ok(Some(v.clone())),
        ExpectedVersion::LastSqlFile => match last_sql_file {
            Some(v) => Ok(Some(normalize(v))),
            None => Err(VersionError::Empty(checkout.to_path_buf())),
        },
        ExpectedVersion::HighestNumbered(dir) => highest_numbered(&checkout.join(dir)).map(Some),
        ExpectedVersion::AlembicHeads(dir) => alembic_heads(&checkout.join(dir)).map(Some),
    }
}

/// The highest `NNN` of the files `NNN_*.py` in `dir`, without leading zeros.
///
/// # Errors
/// `dir` cannot be read or has no such file.
pub fn highest_numbered(dir: &Path) -> Result<String, VersionError> {
    let mut best: Option<String> = None;
    for name in file_names(dir)? {
        let Some(stem) = name.strip_suffix(".py") else {
            continue;
        };
        let Some((number, _)) = stem.split_once('_') else {
            continue;
        };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let number = normalize(number);
        if best
            .as_deref()
            .is_none_or(|b| cmp_numbers(&number, b).is_gt())
        {
            best = Some(number);
        }
    }
    best.ok_or_else(|| VersionError::Empty(dir.to_path_buf()))
}

/// The head revisions of the alembic scripts (`*.py`) in `dir`, sorted, joined by `,`.
///
/// # Errors
/// `dir` or a script cannot be read, or no script names a revision.
pub fn alembic_heads(dir: &Path) -> Result<String, VersionError> {
    let mut revisions = BTreeSet::new();
    let mut pointed_to = BTreeSet::new();
    for name in file_names(dir)? {
        if !name.ends_with(".py") {
            continue;
        }
        let path = dir.join(&name);
        let text = fs::read_to_string(&path).map_err(|source| VersionError::Read {
            path: path.clone(),
            source,
        })?;
        let Some((revision, down)) = parse_alembic_script(&text) else {
            continue;
        };
        revisions.insert(revision);
        pointed_to.extend(down);
    }
    if revisions.is_empty() {
        return Err(VersionError::Empty(dir.to_path_buf()));
    }
    let heads: Vec<String> = revisions
        .into_iter()
        .filter(|r| !pointed_to.contains(r))
        .collect();
    Ok(heads.join(","))
}

/// `(revision, down_revisions)` of one alembic script, if it names a revision.
///
/// Accepts the classic `revision = 'abc'` and the typed form of newer templates
/// (`revision: str = "abc"`, `down_revision: Union[str, None] = ('a', 'b')`).
pub fn parse_alembic_script(text: &str) -> Option<(String, Vec<String>)> {
    static REVISION: OnceLock<Option<Regex>> = OnceLock::new();
    static DOWN: OnceLock<Option<Regex>> = OnceLock::new();
    static QUOTED: OnceLock<Option<Regex>> = OnceLock::new();
    let revision_re = REVISION
        .get_or_init(|| Regex::new(r#"(?m)^revision\s*(?::[^=\n]*)?=\s*['"]([^'"]+)['"]"#).ok())
        .as_ref()?;
    let down_re = DOWN
        .get_or_init(|| Regex::new(r"(?m)^down_revision\s*(?::[^=\n]*)?=\s*(.*)$").ok())
        .as_ref()?;
    let quoted_re = QUOTED
        .get_or_init(|| Regex::new(r#"['"]([^'"]+)['"]"#).ok())
        .as_ref()?;
    let revision = revision_re.captures(text)?.get(1)?.as_str().to_string();
    let down = match down_re.captures(text).and_then(|c| c.get(1)) {
        None => Vec::new(),
        Some(value) => {
            // A tuple may continue over several lines: take up to the closing bracket.
            let start = value.start();
            let rest = &text[start..];
            let value = if rest.starts_with(['(', '[']) {
                let close = rest.find([')', ']']).map_or(rest.len(), |i| i + 1);
                &rest[..close]
            } else {
                value.as_str()
            };
            quoted_re
                .captures_iter(value)
                .filter_map(|c| c.get(1).map(|m| m.as_str().to_string()))
                .collect()
        }
    };
    Some((revision, down))
}

fn file_names(dir: &Path) -> Result<Vec<String>, VersionError> {
    let entries = fs::read_dir(dir).map_err(|source| VersionError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut names = Vec::new();
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(names)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_compares() {
        assert_eq!(normalize("007"), "7");
        assert_eq!(normalize("000"), "0");
        assert_eq!(normalize(" abc1 "), "abc1");
        assert!(same_version("216", "0216"));
        assert!(same_version("b,a", "a,b"));
        assert!(!same_version("1", "2"));
        assert!(!same_version("", "1"));
        assert!(cmp_numbers("10", "9").is_gt());
        assert!(cmp_numbers("0010", "9").is_gt());
        assert!(cmp_numbers("99999999999999999999999", "1").is_gt());
    }

    #[test]
    fn finds_the_highest_numbered_file() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "001_a.py",
            "010_b.py",
            "9_c.py",
            "__init__.py",
            "011_x.pyc",
            "README",
        ] {
            fs::write(dir.path().join(f), "").unwrap();
        }
        assert_eq!(highest_numbered(dir.path()).unwrap(), "10");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            highest_numbered(empty.path()),
            Err(VersionError::Empty(_))
        ));
        assert!(matches!(
            highest_numbered(&dir.path().join("missing")),
            Err(VersionError::Read { .. })
        ));
    }

    #[test]
    fn parses_alembic_scripts() {
        let classic = "\"\"\"x\n\nRevision ID: b\n\"\"\"\nrevision = 'b'\ndown_revision = 'a'\n";
        assert_eq!(
            parse_alembic_script(classic).unwrap(),
            ("b".to_string(), vec!["a".to_string()])
        );
        let typed = "revision: str = \"c\"\ndown_revision: Union[str, None] = None\n";
        assert_eq!(
            parse_alembic_script(typed).unwrap(),
            ("c".to_string(), vec![])
        );
        let merge =
            "revision = 'm'\ndown_revision = (\n    'x',\n    'y',\n)\nbranch_labels = None\n";
        assert_eq!(
            parse_alembic_script(merge).unwrap().1,
            vec!["x".to_string(), "y".to_string()]
        );
        assert!(parse_alembic_script("import os\n").is_none());
    }

    #[test]
    fn finds_alembic_heads() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| fs::write(dir.path().join(name), text).unwrap();
        write("1_a.py", "revision = 'a'\ndown_revision = None\n");
        write("2_b.py", "revision = 'b'\ndown_revision = 'a'\n");
        write("3_c.py", "revision = 'c'\ndown_revision = 'a'\n");
        write("__init__.py", "");
        assert_eq!(alembic_heads(dir.path()).unwrap(), "b,c");
        write("4_m.py", "revision = 'm'\ndown_revision = ('b', 'c')\n");
        assert_eq!(alembic_heads(dir.path()).unwrap(), "m");
    }
}
