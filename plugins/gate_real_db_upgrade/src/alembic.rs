//! Alembic's revision graph, read from the scripts' text without running them, and the
//! output of `alembic heads`.
//!
//! # Which revisions end up in `alembic_version`
//! The expected final version of an alembic project is the set of rows `alembic upgrade heads`
//! leaves in `alembic_version`. Alembic's `heads` are the revisions no other revision names as
//! `down_revision`; a revision named only in another's `depends_on` is listed by `alembic
//! heads` as an "(effective head)", but applying the revision that depends on it merges it
//! away from `alembic_version` (alembic's `HeadMaintainer` merges a step's down revisions *and*
//! dependencies, `runtime/migration.py`; `script/revision.py` calls the remaining ones
//! `_real_heads`). Tried with alembic 1.20: expand `e2`, contract `c2` with `depends_on =
//! ('e2',)`: `alembic heads` prints `c2 (head)` and `e2 (effective head)`, the table holds only
//! `c2`; a later `e3` on top of `e2` makes it `{c2, e3}`. So the heads here are alembic's real
//! heads: the revisions that no script names as `down_revision` or in `depends_on` (which may
//! name a branch label: the revision that carries it), and `(effective head)` lines of `alembic
//! heads` are left out.
//!
//! # Which files are scripts
//! As alembic finds them: every `*.py` of each `version_locations` folder, and of its
//! subfolders with `recursive_version_locations` (OpenStack's `versions/2024.1/expand/…`),
//! except `__init__*`, `.#*` and what is in `__pycache__` (`.pyc` files are not scripts). The
//! checkout is the change's (and the migration tool, which ran before, could write in it): a
//! folder must stay inside the checkout, symbolic links are skipped, never followed, and the
//! walk is bounded in depth, files and bytes.
//!
//! # How a script is read
//! Its top-level assignments (outside triple-quoted strings) of `revision`, `down_revision`,
//! `branch_labels` and `depends_on`, plain (`revision = 'abc'`) or annotated (`revision: str =
//! "abc"`, `down_revision: Union[str, Sequence[str], None] = None`), each a string, `None`, or a
//! tuple or list of strings over one or several lines. A value that is not such a literal
//! (`branch_labels = (cli.EXPAND_BRANCH,)`) is skipped with a note; a file without a revision
//! is skipped with a note. The last assignment wins, as in Python.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use turbo_hipster_sdk::support::contain::read_regular_file;

/// Where an alembic project's scripts are: alembic's `version_locations` and
/// `recursive_version_locations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlembicTree {
    /// Folders of the checkout.
    pub locations: Vec<PathBuf>,
    /// Whether their subfolders are read too (the default).
    pub recursive: bool,
}

impl AlembicTree {
    /// One folder and its subfolders.
    pub fn folder(location: impl Into<PathBuf>) -> Self {
        AlembicTree {
            locations: vec![location.into()],
            recursive: true,
        }
    }
}

/// The deepest subfolder read below a version location.
pub const MAX_DEPTH: usize = 16;
/// The most scripts read in a tree.
pub const MAX_SCRIPTS: usize = 20_000;
/// The most bytes read of one script (the declarations are at its top).
pub const MAX_SCRIPT_BYTES: u64 = 1 << 20;

/// Why the scripts could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AlembicError {
    /// A folder or file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The folder or file.
        path: PathBuf,
        /// The I/O error reading it.
        #[source]
        source: std::io::Error,
    },
    /// A version location is not inside the checkout (a link leads out).
    #[error("{} is not inside the checkout", .0.display())]
    Outside(PathBuf),
    /// Too many scripts.
    #[error("more than {MAX_SCRIPTS} scripts under {}", .0.display())]
    TooMany(PathBuf),
    /// No script names a revision.
    #[error("no alembic revision found in {0}")]
    Empty(String),
}

/// What one script declares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    /// `revision`.
    pub revision: String,
    /// `down_revision`: none for a base, several for a merge.
    pub down_revisions: Vec<String>,
    /// `depends_on`: revisions or branch labels.
    pub depends_on: Vec<String>,
    /// `branch_labels`.
    pub branch_labels: Vec<String>,
    /// The declarations whose value is not a literal, as written (`branch_labels =
    /// (cli.EXPAND_BRANCH,)`).
    pub not_literal: Vec<String>,
}

/// The heads of a tree and what was noticed reading it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// The revisions `alembic upgrade heads` leaves in `alembic_version`.
    pub heads: BTreeSet<String>,
    /// How many scripts named a revision.
    pub scripts: usize,
    /// Files skipped, values not understood, names that lead nowhere: one line each.
    pub notes: Vec<String>,
}

/// Reads the scripts of `locations` (folders of `checkout`; with `recursive`, their subfolders
/// too) and finds the heads.
///
/// # Errors
/// A folder is outside the checkout or unreadable, there are too many scripts, or none names a
/// revision.
pub fn scan(checkout: &Path, locations: &[PathBuf], recursive: bool) -> Result<Scan, AlembicError> {
    let root = checkout
        .canonicalize()
        .map_err(|source| AlembicError::Read {
            path: checkout.to_path_buf(),
            source,
        })?;
    let mut notes = Vec::new();
    let mut files = Vec::new();
    for location in locations {
        let dir = checkout.join(location);
        let Ok(real) = dir.canonicalize() else {
            notes.push(format!("{}: no such folder, skipped", location.display()));
            continue;
        };
        if !real.starts_with(&root) {
            return Err(AlembicError::Outside(location.clone()));
        }
        let depth = if recursive { MAX_DEPTH } else { 0 };
        script_files(&root, &real, depth, &mut files, &mut notes)?;
    }
    // Folders that overlap give a file once, as alembic reads it once.
    let mut seen = BTreeSet::new();
    files.retain(|f| seen.insert(f.clone()));
    let scripts = read_scripts(&root, &files, &mut notes)?;
    if scripts.is_empty() {
        let shown: Vec<String> = locations.iter().map(|l| l.display().to_string()).collect();
        return Err(AlembicError::Empty(shown.join(", ")));
    }
    let heads = heads(&scripts, &mut notes);
    Ok(Scan {
        heads,
        scripts: scripts.len(),
        notes,
    })
}

/// Each file's declarations, shown by its path in the checkout; a file without a revision is
/// noted and left out.
fn read_scripts(
    root: &Path,
    files: &[PathBuf],
    notes: &mut Vec<String>,
) -> Result<Vec<(String, Script)>, AlembicError> {
    let mut scripts = Vec::new();
    for file in files {
        let shown = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        let bytes = read_regular_file(file, MAX_SCRIPT_BYTES)
            .map_err(|source| AlembicError::Read {
                path: file.clone(),
                source,
            })?
            .unwrap_or_default();
        match parse_script(&String::from_utf8_lossy(&bytes)) {
            Some(script) => {
                for expr in &script.not_literal {
                    notes.push(format!("{shown}: `{expr}` is not a literal, ignored"));
                }
                scripts.push((shown, script));
            }
            None => notes.push(format!("{shown}: no `revision = '…'`, skipped")),
        }
    }
    Ok(scripts)
}

/// Adds the scripts of `dir` to `files`, sorted, then those of its subfolders down to `depth`
/// levels.
fn script_files(
    root: &Path,
    dir: &Path,
    depth: usize,
    files: &mut Vec<PathBuf>,
    notes: &mut Vec<String>,
) -> Result<(), AlembicError> {
    let read_error = |source| AlembicError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir)
        .map_err(read_error)?
        .collect::<Result<_, _>>()
        .map_err(read_error)?;
    entries.sort_by_key(fs::DirEntry::file_name);
    let mut subfolders = Vec::new();
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            if name.ends_with(".py") || depth > 0 {
                let path = entry.path();
                let shown = path.strip_prefix(root).unwrap_or(&path).display();
                notes.push(format!("{shown}: a symbolic link, skipped"));
            }
        } else if kind.is_dir() {
            if depth > 0 && name != "__pycache__" {
                subfolders.push(entry.path());
            }
        } else if kind.is_file() && is_script_name(&name) {
            if files.len() >= MAX_SCRIPTS {
                return Err(AlembicError::TooMany(dir.to_path_buf()));
            }
            files.push(entry.path());
        }
    }
    for sub in subfolders {
        script_files(root, &sub, depth - 1, files, notes)?;
    }
    Ok(())
}

/// alembic's `(?!\.\#|__init__)(.*\.py)$`.
fn is_script_name(name: &str) -> bool {
    name.ends_with(".py") && !name.starts_with("__init__") && !name.starts_with(".#")
}

/// The real heads of `scripts` (`(file, script)`): the revisions no script names as
/// `down_revision` or in `depends_on`. Duplicate revisions and names that lead to no script
/// are noted.
pub fn heads(scripts: &[(String, Script)], notes: &mut Vec<String>) -> BTreeSet<String> {
    let mut revisions: BTreeMap<&str, &str> = BTreeMap::new();
    let mut labels: BTreeMap<&str, &str> = BTreeMap::new();
    for (file, s) in scripts {
        if let Some(first) = revisions.insert(&s.revision, file) {
            notes.push(format!(
                "{file}: revision {} is also in {first}",
                s.revision
            ));
        }
        for label in &s.branch_labels {
            labels.insert(label, &s.revision);
        }
    }
    let mut named = BTreeSet::new();
    for (file, s) in scripts {
        for down in &s.down_revisions {
            if !revisions.contains_key(down.as_str()) {
                notes.push(format!("{file}: down_revision {down} is in no script"));
            }
            named.insert(down.as_str());
        }
        for dep in &s.depends_on {
            if revisions.contains_key(dep.as_str()) {
                named.insert(dep.as_str());
            } else if let Some(rev) = labels.get(dep.as_str()) {
                named.insert(rev);
            } else {
                notes.push(format!(
                    "{file}: depends_on {dep} is neither a revision nor a branch label"
                ));
            }
        }
    }
    revisions
        .keys()
        .filter(|r| !named.contains(*r))
        .map(|r| (*r).to_string())
        .collect()
}

/// What one script declares, if it names a revision.
pub fn parse_script(text: &str) -> Option<Script> {
    let mut revision = None;
    let mut script = Script::default();
    for (name, value) in assignments(text) {
        let parsed = literal(value);
        let target = match (name, parsed) {
            (_, Err(expr)) => {
                script.not_literal.push(format!("{name} = {expr}"));
                continue;
            }
            ("revision", Ok(v)) => {
                // `revision = None` or a tuple is no revision.
                revision = (v.len() == 1).then(|| v.into_iter().next()).flatten();
                continue;
            }
            ("down_revision", Ok(v)) => (&mut script.down_revisions, v),
            ("depends_on", Ok(v)) => (&mut script.depends_on, v),
            ("branch_labels", Ok(v)) => (&mut script.branch_labels, v),
            (_, Ok(_)) => continue,
        };
        *target.0 = target.1;
    }
    script.revision = revision.filter(|r| !r.trim().is_empty())?;
    Some(script)
}

/// The module's top-level assignments to the four names alembic reads, in order: `(name, the
/// text after the '=')`. Lines inside triple-quoted strings are not assignments.
fn assignments(text: &str) -> Vec<(&'static str, &str)> {
    const NAMES: [&str; 4] = ["revision", "down_revision", "depends_on", "branch_labels"];
    let mut found = Vec::new();
    let mut in_triple: Option<&str> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let was_inside = in_triple.is_some();
        in_triple = triple_quotes_after(line, in_triple);
        if was_inside {
            continue;
        }
        for name in NAMES {
            if let Some(after) = assigned(line, name) {
                found.push((name, &text[start + line.len() - after.len()..]));
            }
        }
    }
    found
}

/// Whether a triple-quoted string is open after `line`, given the one open before it.
fn triple_quotes_after<'q>(line: &str, mut open: Option<&'q str>) -> Option<&'q str> {
    let mut rest = line;
    loop {
        match open {
            Some(q) => match rest.find(q) {
                Some(i) => {
                    rest = &rest[i + 3..];
                    open = None;
                }
                None => return open,
            },
            None => {
                let next = ["\"\"\"", "'''"]
                    .into_iter()
                    .filter_map(|q| rest.find(q).map(|i| (i, q)))
                    .min();
                // A comment before it ends the line's code.
                let comment = rest.find('#');
                match next {
                    Some((i, q)) if comment.is_none_or(|c| c > i) => {
                        rest = &rest[i + 3..];
                        open = Some(q);
                    }
                    _ => return None,
                }
            }
        }
    }
}

/// The text after `name = ` or `name: <annotation> = ` at the start of `line`.
fn assigned<'l>(line: &'l str, name: &str) -> Option<&'l str> {
    let rest = line.strip_prefix(name)?;
    let rest = rest.trim_start_matches([' ', '\t']);
    let rest = match rest.strip_prefix(':') {
        // An annotation has no '=' of its own.
        Some(annotated) => &annotated[annotated.find('=')?..],
        None => rest,
    };
    let value = rest.strip_prefix('=')?;
    (!value.starts_with('=')).then_some(value)
}

/// The strings of a literal at the start of `text`: `None` or `()` (none), a string (one), a
/// tuple or list of strings (over several lines, with comments and a trailing comma). `Err`:
/// the expression as written (its first line), when it is not such a literal.
pub fn literal(text: &str) -> Result<Vec<String>, String> {
    let mut p = Cursor { rest: text };
    p.skip_blanks(false);
    let first_line = || {
        let line = text.trim_start_matches([' ', '\t']);
        let line = line.split(['\n', '#']).next().unwrap_or_default().trim();
        line.to_string()
    };
    let value = if p.eat_word("None") {
        Some(Vec::new())
    } else if let Some(close) = p.open_bracket() {
        p.sequence(close)
    } else {
        p.string().map(|s| vec![s])
    };
    value.ok_or_else(first_line)
}

struct Cursor<'t> {
    rest: &'t str,
}

impl Cursor<'_> {
    /// Skips spaces (and newlines and comments inside brackets).
    fn skip_blanks(&mut self, newlines: bool) {
        loop {
            let trimmed = if newlines {
                self.rest.trim_start()
            } else {
                self.rest.trim_start_matches([' ', '\t'])
            };
            self.rest = trimmed;
            if newlines && self.rest.starts_with('#') {
                let end = self.rest.find('\n').unwrap_or(self.rest.len());
                self.rest = &self.rest[end..];
                continue;
            }
            return;
        }
    }

    fn eat_word(&mut self, word: &str) -> bool {
        match self.rest.strip_prefix(word) {
            Some(after)
                if !after.starts_with(|c: char| c.is_alphanumeric() || c == '_' || c == '.') =>
            {
                self.rest = after;
                true
            }
            _ => false,
        }
    }

    fn open_bracket(&mut self) -> Option<char> {
        let close = match self.rest.chars().next()? {
            '(' => ')',
            '[' => ']',
            _ => return None,
        };
        self.rest = &self.rest[1..];
        Some(close)
    }

    /// A string literal: an optional `u`/`r` prefix, then `'…'` or `"…"` on one line.
    fn string(&mut self) -> Option<String> {
        let body = self
            .rest
            .strip_prefix(['u', 'U', 'r', 'R'])
            .unwrap_or(self.rest);
        let quote = body.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let inner = &body[1..];
        let end = inner.find([quote, '\n'])?;
        if !inner[end..].starts_with(quote) {
            return None;
        }
        self.rest = &inner[end + 1..];
        Some(inner[..end].to_string())
    }

    /// Strings separated by commas up to `close`.
    fn sequence(&mut self, close: char) -> Option<Vec<String>> {
        let mut items = Vec::new();
        loop {
            self.skip_blanks(true);
            if let Some(after) = self.rest.strip_prefix(close) {
                self.rest = after;
                return Some(items);
            }
            items.push(self.string()?);
            self.skip_blanks(true);
            if let Some(after) = self.rest.strip_prefix(',') {
                self.rest = after;
            } else if !self.rest.starts_with(close) {
                return None;
            }
        }
    }
}

/// The heads in the standard output of `alembic heads` (or of a tool printing one version a
/// line): each line `<revision>` followed only by annotations in brackets (`(expand)`,
/// `(head)`, `(effective head)`, `(current)`). `(effective head)` lines are left out (see the
/// module docs); lines of another shape are left out too. Returns the heads and a note for
/// each line left out.
pub fn parse_heads_output<'l>(
    lines: impl IntoIterator<Item = &'l str>,
) -> (BTreeSet<String>, Vec<String>) {
    let mut heads = BTreeSet::new();
    let mut notes = Vec::new();
    for line in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (revision, annotations) = line.split_once(' ').unwrap_or((line, ""));
        let annotations = annotations.trim();
        if !is_revision(revision) || !are_annotations(annotations) {
            notes.push(format!("not a head line, ignored: {line}"));
        } else if annotations.contains("(effective head)") {
            notes.push(format!(
                "{revision} is an effective head (another revision depends on it): \
                 not in alembic_version after `upgrade heads`, left out"
            ));
        } else {
            heads.insert(revision.to_string());
        }
    }
    (heads, notes)
}

/// A revision id as alembic allows them: no whitespace, brackets, commas, `@`, `-`, `+`.
fn is_revision(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "()[],@-+:'\"".contains(c))
}

/// `(…) (…)`: only bracketed annotations, or nothing.
fn are_annotations(s: &str) -> bool {
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(inner) = rest.strip_prefix('(') else {
            return false;
        };
        let Some(close) = inner.find(')') else {
            return false;
        };
        if inner[..close].contains('(') {
            return false;
        }
        rest = inner[close + 1..].trim_start();
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn literals() {
        assert_eq!(literal(" None\n"), Ok(vec![]));
        assert_eq!(literal(" 'a'  # a comment with 'b'\n"), Ok(strings(&["a"])));
        assert_eq!(literal(" \"a\"\n"), Ok(strings(&["a"])));
        assert_eq!(literal(" u'a'\n"), Ok(strings(&["a"])));
        assert_eq!(literal(" ('a', \"b\")\n"), Ok(strings(&["a", "b"])));
        assert_eq!(literal(" ('a',)\n"), Ok(strings(&["a"])));
        assert_eq!(literal(" ()\n"), Ok(vec![]));
        assert_eq!(literal(" ['a', 'b']\n"), Ok(strings(&["a", "b"])));
        assert_eq!(
            literal(" (\n    'a',  # first\n    # between\n    'b',\n)\nx = 1\n"),
            Ok(strings(&["a", "b"]))
        );
        assert_eq!(
            literal(" (cli.EXPAND_BRANCH,)\n"),
            Err("(cli.EXPAND_BRANCH,)".to_string())
        );
        assert_eq!(literal(" Nonesuch\n"), Err("Nonesuch".to_string()));
        assert_eq!(
            literal(" 'unterminated\n'"),
            Err("'unterminated".to_string())
        );
        assert_eq!(literal(" ('a' 'b')\n"), Err("('a' 'b')".to_string()));
    }

    #[test]
    fn classic_and_typed_scripts() {
        let classic = "\"\"\"add email\n\nRevision ID: b\nRevises: a\n\"\"\"\n\
                       revision = 'b'\ndown_revision = 'a'\nbranch_labels = None\ndepends_on = None\n";
        let s = parse_script(classic).unwrap();
        assert_eq!(
            (s.revision.as_str(), s.down_revisions),
            ("b", strings(&["a"]))
        );
        let typed = "from typing import Sequence, Union\n\n\
                     revision: str = \"c\"\n\
                     down_revision: Union[str, Sequence[str], None] = None\n\
                     branch_labels: Union[str, Sequence[str], None] = (\"expand\",)\n\
                     depends_on: Union[str, Sequence[str], None] = None\n";
        let s = parse_script(typed).unwrap();
        assert_eq!(s.revision, "c");
        assert!(s.down_revisions.is_empty());
        assert_eq!(s.branch_labels, strings(&["expand"]));
        assert!(s.not_literal.is_empty());
    }

    #[test]
    fn merges_labels_and_dependencies() {
        let merge = "revision = 'm'\ndown_revision = (\n    'x',\n    \"y\",\n)\n\
                     branch_labels = ('contract',)\ndepends_on = ('e2', 'expand')\n";
        let s = parse_script(merge).unwrap();
        assert_eq!(s.down_revisions, strings(&["x", "y"]));
        assert_eq!(s.branch_labels, strings(&["contract"]));
        assert_eq!(s.depends_on, strings(&["e2", "expand"]));
        // neutron: a label from a constant is not understood, and said.
        let neutron = "revision = '30018084ec99'\ndown_revision = 'kilo'\n\
                       branch_labels = (cli.CONTRACT_BRANCH,)\n";
        let s = parse_script(neutron).unwrap();
        assert!(s.branch_labels.is_empty());
        assert_eq!(
            s.not_literal,
            strings(&["branch_labels = (cli.CONTRACT_BRANCH,)"])
        );
    }

    #[test]
    fn what_is_not_a_declaration() {
        // In a docstring, indented, compared, or no revision at all.
        assert!(parse_script("\"\"\"\nrevision = 'doc'\n\"\"\"\n").is_none());
        assert!(parse_script("def f():\n    revision = 'inner'\n").is_none());
        assert!(parse_script("revision == 'x'\n").is_none());
        assert!(parse_script("revisions = 'x'\n").is_none());
        assert!(parse_script("import os\n").is_none());
        assert!(parse_script("revision = None\n").is_none());
        assert!(parse_script("revision = ''\n").is_none());
        // A one-line docstring, then the declaration; the last assignment wins.
        let s = parse_script("'''One line.'''\nrevision = 'a'\nrevision = 'b'\n").unwrap();
        assert_eq!(s.revision, "b");
        // A `#` before triple quotes: a comment, not a string.
        let s = parse_script("# \"\"\" not a docstring\nrevision = 'c'\n").unwrap();
        assert_eq!(s.revision, "c");
    }

    fn script(rev: &str, down: &[&str], deps: &[&str], labels: &[&str]) -> (String, Script) {
        (
            format!("{rev}.py"),
            Script {
                revision: rev.to_string(),
                down_revisions: strings(down),
                depends_on: strings(deps),
                branch_labels: strings(labels),
                not_literal: vec![],
            },
        )
    }

    #[test]
    fn heads_of_expand_and_contract() {
        let mut tree = vec![
            script("r0", &[], &[], &[]),
            script("e1", &["r0"], &[], &["expand"]),
            script("e2", &["e1"], &[], &[]),
            script("c1", &["r0"], &[], &["contract"]),
            script("c2", &["c1"], &["e2"], &[]),
        ];
        let mut notes = Vec::new();
        // e2 is only an effective head: alembic merges it into c2.
        assert_eq!(heads(&tree, &mut notes), BTreeSet::from(["c2".to_string()]));
        tree.push(script("e3", &["e2"], &[], &[]));
        assert_eq!(
            heads(&tree, &mut notes),
            BTreeSet::from(["c2".to_string(), "e3".to_string()])
        );
        // A dependency on a branch label is on the revision that carries it.
        tree.push(script("c3", &["c2"], &["expand"], &[]));
        assert_eq!(
            heads(&tree, &mut notes),
            BTreeSet::from(["c3".to_string(), "e3".to_string()])
        );
        tree.push(script("m", &["c3", "e3"], &[], &[]));
        assert_eq!(heads(&tree, &mut notes), BTreeSet::from(["m".to_string()]));
        assert!(notes.is_empty(), "{notes:?}");
        tree.push(script("x", &["gone"], &["nolabel"], &[]));
        tree.push(script("m", &["x"], &[], &[]));
        heads(&tree, &mut notes);
        assert_eq!(
            notes,
            [
                "m.py: revision m is also in m.py",
                "x.py: down_revision gone is in no script",
                "x.py: depends_on nolabel is neither a revision nor a branch label",
            ]
        );
    }

    #[test]
    fn heads_output() {
        let out = "c2 (contract) (head)\n\ne2 (expand) (effective head)\n\
                   3c4d5e6f7081 (head)\nabc\nWARNING: something odd\n";
        let (heads, notes) = parse_heads_output(out.lines());
        assert_eq!(
            heads,
            BTreeSet::from(["3c4d5e6f7081".to_string(), "abc".into(), "c2".into()])
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].starts_with("e2 is an effective head"), "{notes:?}");
        assert_eq!(notes[1], "not a head line, ignored: WARNING: something odd");
        let (heads, _) = parse_heads_output(["m (contract, expand) (head) (current)"]);
        assert_eq!(heads, BTreeSet::from(["m".to_string()]));
        let (heads, notes) = parse_heads_output(["a (head", "b ((x))", "c x"]);
        assert!(heads.is_empty());
        assert_eq!(notes.len(), 3);
    }

    #[test]
    fn scans_nested_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let checkout = tmp.path();
        let write = |rel: &str, text: &str| {
            let path = checkout.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write("db/versions/__init__.py", "");
        write(
            "db/versions/r0_initial.py",
            "revision = 'r0'\ndown_revision = None\n",
        );
        write(
            "db/versions/2024.1/expand/e1_x.py",
            "revision: str = 'e1'\ndown_revision: Union[str, None] = 'r0'\nbranch_labels = ('expand',)\n",
        );
        write(
            "db/versions/2024.1/contract/c1_x.py",
            "revision = \"c1\"\ndown_revision = \"r0\"\nbranch_labels = (\"contract\",)\ndepends_on = ('e1',)\n",
        );
        write(
            "db/versions/2024.1/contract/__pycache__/c9_x.py",
            "revision = 'c9'\n",
        );
        write("db/versions/2024.1/contract/c9_x.pyc", "revision = 'c9'\n");
        write("db/versions/2024.1/expand/helpers.py", "X = 1\n");
        write("db/versions/EXPAND_HEAD", "e1\n");
        write("db/other/o1.py", "revision = 'o1'\ndown_revision = 'c1'\n");
        let scan_of = |locations: &[&str], recursive| {
            let locations: Vec<PathBuf> = locations.iter().map(PathBuf::from).collect();
            scan(checkout, &locations, recursive)
        };
        let s = scan_of(&["db/versions"], true).unwrap();
        assert_eq!(s.heads, BTreeSet::from(["c1".to_string()]));
        assert_eq!(s.scripts, 3);
        assert_eq!(
            s.notes,
            ["db/versions/2024.1/expand/helpers.py: no `revision = '…'`, skipped"]
        );
        // Without recursion only the top folder (alembic's default).
        let s = scan_of(&["db/versions"], false).unwrap();
        assert_eq!(s.heads, BTreeSet::from(["r0".to_string()]));
        // Several folders.
        let s = scan_of(&["db/versions", "db/other", "db/missing"], true).unwrap();
        assert_eq!(s.heads, BTreeSet::from(["o1".to_string()]));
        assert_eq!(
            s.notes.last().unwrap(),
            "db/versions/2024.1/expand/helpers.py: no `revision = '…'`, skipped"
        );
        assert_eq!(s.notes[0], "db/missing: no such folder, skipped");
        assert!(matches!(
            scan_of(&["db/missing"], true),
            Err(AlembicError::Empty(_))
        ));
        // Overlapping folders: each file once.
        let s = scan_of(&["db/versions", "db/versions/2024.1"], true).unwrap();
        assert_eq!(s.scripts, 3);
        assert_eq!(s.heads, BTreeSet::from(["c1".to_string()]));
        // A link is skipped, never followed, and a folder may not lead out.
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("z.py"), "revision = 'z'\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("z.py"), checkout.join("db/other/z.py"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), checkout.join("db/out")).unwrap();
        let s = scan_of(&["db/other"], true).unwrap();
        assert_eq!(s.heads, BTreeSet::from(["o1".to_string()]));
        assert!(
            s.notes
                .iter()
                .any(|n| n.ends_with("z.py: a symbolic link, skipped")),
            "{:?}",
            s.notes
        );
        assert!(matches!(
            scan_of(&["db/out"], true),
            Err(AlembicError::Outside(_))
        ));
    }
}
