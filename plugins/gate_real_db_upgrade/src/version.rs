//! Schema versions: what the change expects the final version to be, where the database
//! records it, and how two versions are compared.
//!
//! - [`ExpectedVersion::HighestNumbered`]: the highest `NNN` of the files `NNN_*.py` in that
//!   directory of the checkout (sqlalchemy-migrate's `versions/`), as the original did.
//! - [`ExpectedVersion::AlembicHeads`]: the head revisions of the alembic scripts in those
//!   folders and their subfolders, as [`crate::alembic`] finds them: the rows `alembic upgrade
//!   heads` leaves in `alembic_version`, sorted and joined by `,`.
//! - [`ExpectedVersion::Command`]: what a command prints (`alembic heads`); run by
//!   [`crate::dataset_run`] like the migration tool, parsed by
//!   [`crate::alembic::parse_heads_output`].
//! - [`ExpectedVersion::LastSqlFile`]: the number of the last file of the SQL-files mode.
//! - [`ExpectedVersion::Fixed`], [`ExpectedVersion::Unchecked`].
//!
//! Numbers compare as numbers: `007` and `7` are the same version; lists of heads compare as
//! sets, and a mismatch says which heads each side lacks ([`mismatch`]).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::alembic::{self, AlembicError, AlembicTree};

/// Where the expected final schema version comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The highest numbered migration file (`NNN_name.py`) in this directory of the checkout
    /// (sqlalchemy-migrate's versions directory).
    HighestNumbered(PathBuf),
    /// The alembic head revisions read from the scripts of the checkout.
    AlembicHeads(AlembicTree),
    /// The heads printed by this command (argv with the tool's placeholders), run like the
    /// migration tool.
    Command(Vec<String>),
    /// The last SQL file of the SQL-files mode.
    LastSqlFile,
    /// A fixed value.
    Fixed(String),
    /// Not checked.
    Unchecked,
}

/// Why the expected version could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// The directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The directory or file.
        path: PathBuf,
        /// The I/O error reading it.
        #[source]
        source: std::io::Error,
    },
    /// Nothing in the directory gives a version.
    #[error("no migration found in {}", .0.display())]
    Empty(PathBuf),
    /// The alembic scripts could not be read.
    #[error(transparent)]
    Alembic(#[from] AlembicError),
    /// The version comes from a command, which only a dataset's run can run.
    #[error("the expected version comes from a command")]
    FromCommand,
}

/// The most notes about an alembic tree written to a dataset's log.
const MAX_NOTES: usize = 40;

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

/// A version as a set: its comma-separated heads, normalized.
fn version_set(v: &str) -> BTreeSet<String> {
    v.split(',')
        .map(normalize)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether two versions are the same (numbers as numbers; comma-separated head lists as
/// sets).
pub fn same_version(a: &str, b: &str) -> bool {
    version_set(a) == version_set(b)
}

/// What differs between the database's version and the expected one, for the dataset's log:
/// both sets, and the heads each lacks.
pub fn mismatch(database: Option<&str>, expected: &str) -> String {
    let db = version_set(database.unwrap_or_default());
    let want = version_set(expected);
    let show = |set: &BTreeSet<String>| {
        if set.is_empty() {
            "{}".to_string()
        } else {
            let items: Vec<&str> = set.iter().map(String::as_str).collect();
            format!("{{{}}}", items.join(", "))
        }
    };
    let missing: BTreeSet<String> = want.difference(&db).cloned().collect();
    let extra: BTreeSet<String> = db.difference(&want).cloned().collect();
    format!(
        "schema version mismatch: the database has {}, expected {}; expected but not in the \
         database: {}; in the database but not expected: {}",
        show(&db),
        show(&want),
        show(&missing),
        show(&extra)
    )
}

/// Orders two numbers given as digit strings (any length) without overflow.
pub fn cmp_numbers(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (normalize(a), normalize(b));
    a.len().cmp(&b.len()).then_with(|| a.cmp(&b))
}

/// The expected final version for `expected`, resolved against `checkout`; `last_sql_file`
/// is the number of the last SQL file (SQL-files mode). `Ok(None)` means unchecked. What is
/// worth telling (scripts skipped, heads found) goes to `note`.
///
/// # Errors
/// The directory cannot be read or holds no migration; a command is not run here
/// ([`VersionError::FromCommand`]).
pub fn expected_version(
    expected: &ExpectedVersion,
    checkout: &Path,
    last_sql_file: Option<&str>,
    note: &mut dyn FnMut(&str),
) -> Result<Option<String>, VersionError> {
    match expected {
        ExpectedVersion::Unchecked => Ok(None),
        ExpectedVersion::Fixed(v) => Ok(Some(v.clone())),
        ExpectedVersion::LastSqlFile => match last_sql_file {
            Some(v) => Ok(Some(normalize(v))),
            None => Err(VersionError::Empty(checkout.to_path_buf())),
        },
        ExpectedVersion::HighestNumbered(dir) => highest_numbered(&checkout.join(dir)).map(Some),
        ExpectedVersion::AlembicHeads(tree) => alembic_heads(checkout, tree, note).map(Some),
        ExpectedVersion::Command(_) => Err(VersionError::FromCommand),
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

/// The heads of the alembic scripts of `tree` in `checkout`, sorted, joined by `,`; the
/// count, the heads and what was skipped go to `note`.
///
/// # Errors
/// A folder or script cannot be read, or no script names a revision.
pub fn alembic_heads(
    checkout: &Path,
    tree: &AlembicTree,
    note: &mut dyn FnMut(&str),
) -> Result<String, VersionError> {
    let scan = alembic::scan(checkout, &tree.locations, tree.recursive)?;
    let locations: Vec<String> = tree
        .locations
        .iter()
        .map(|l| l.display().to_string())
        .collect();
    for line in scan.notes.iter().take(MAX_NOTES) {
        note(&format!("alembic scripts: {line}"));
    }
    if scan.notes.len() > MAX_NOTES {
        note(&format!(
            "alembic scripts: {} more notes not shown",
            scan.notes.len() - MAX_NOTES
        ));
    }
    let heads: Vec<String> = scan.heads.into_iter().collect();
    note(&format!(
        "alembic scripts: {} revision{} in {}{}; heads: {}",
        scan.scripts,
        if scan.scripts == 1 { "" } else { "s" },
        locations.join(", "),
        if tree.recursive {
            " and subfolders"
        } else {
            ""
        },
        heads.join(", ")
    ));
    Ok(heads.join(","))
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
        assert_eq!(
            mismatch(Some("c2"), "e3,c2"),
            "schema version mismatch: the database has {c2}, expected {c2, e3}; expected but \
             not in the database: {e3}; in the database but not expected: {}"
        );
        assert!(mismatch(None, "1").starts_with("schema version mismatch: the database has {},"));
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
    fn finds_alembic_heads() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| fs::write(dir.path().join(name), text).unwrap();
        write("1_a.py", "revision = 'a'\ndown_revision = None\n");
        write("2_b.py", "revision = 'b'\ndown_revision = 'a'\n");
        write("3_c.py", "revision = 'c'\ndown_revision = 'a'\n");
        write("__init__.py", "");
        let tree = AlembicTree::folder(".");
        let mut notes = Vec::new();
        let mut note = |n: &str| notes.push(n.to_string());
        assert_eq!(alembic_heads(dir.path(), &tree, &mut note).unwrap(), "b,c");
        write("4_m.py", "revision = 'm'\ndown_revision = ('b', 'c')\n");
        assert_eq!(alembic_heads(dir.path(), &tree, &mut note).unwrap(), "m");
        assert_eq!(
            notes.last().unwrap(),
            "alembic scripts: 4 revisions in . and subfolders; heads: m"
        );
    }
}
