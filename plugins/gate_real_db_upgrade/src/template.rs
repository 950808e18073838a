//! Placeholders in the migration tool's argv, environment and config templates.
//!
//! A placeholder is a name in braces, `{db_url}`. Values are substituted in one pass, so a
//! value that itself contains braces (a password such as `p{db_name}`) is never expanded
//! again. Unknown names are left as they are (an INI file may use braces of its own).
//!
//! | placeholder | value |
//! |---|---|
//! | `{db_url}` | the run database's URL in SQLAlchemy form ([`crate::engine::Server::sqlalchemy_url`]) |
//! | `{db_name}` | the run database's name |
//! | `{db_user}`, `{db_pass}` | the credentials (empty when not set) |
//! | `{db_host}`, `{db_port}` | the server (empty for SQLite) |
//! | `{checkout}` | the checkout the tool runs in |
//! | `{work_dir}` | the dataset run's own work directory (rendered templates go there) |
//! | `{dataset_dir}` | the dataset's directory |
//! | `{logging_conf}` | the dataset's `logging_conf`, absolute (empty when not set) |
//! | `{pip_cache}` | the daemon's `pip_download_cache` (empty when not set) |

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Every placeholder name, in the order of the table above.
pub const PLACEHOLDERS: [&str; 11] = [
    "db_url",
    "db_name",
    "db_user",
    "db_pass",
    "db_host",
    "db_port",
    "checkout",
    "work_dir",
    "dataset_dir",
    "logging_conf",
    "pip_cache",
];

/// Why a template could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template could not be read.
    #[error("cannot read the template {}: {source}", path.display())]
    Read {
        /// The template file in the dataset's directory.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The output name is not a plain file name.
    #[error("the template output name {0:?} must be a plain file name")]
    OutputName(String),
    /// The rendered file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The rendered file in the run's work directory.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Values for the placeholders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placeholders {
    values: BTreeMap<String, String>,
}

impl Placeholders {
    /// No values yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` (without braces) to `value`.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.values.insert(name.to_string(), value.into());
        self
    }

    /// Sets `name` to a path.
    pub fn set_path(&mut self, name: &str, value: &Path) -> &mut Self {
        self.set(name, value.display().to_string())
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// `text` with every known `{name}` replaced by its value, in one pass.
    ///
    /// ```
    /// use gate_real_db_upgrade::template::Placeholders;
    ///
    /// let mut p = Placeholders::new();
    /// p.set("db_name", "nova_1").set("db_pass", "{db_name}");
    /// assert_eq!(p.render("{db_name}:{db_pass} {other}"), "nova_1:{db_name} {other}");
    /// ```
    pub fn render(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let name_end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            match name_end {
                Some(end) if after[end..].starts_with('}') => {
                    let name = &after[..end];
                    match self.values.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push('{');
                            out.push_str(name);
                            out.push('}');
                        }
                    }
                    rest = &after[end + 1..];
                }
                _ => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// Renders the template file `template` into `out_dir/out_name`.
    ///
    /// # Errors
    /// The template cannot be read, the output name is not a plain file name, or the output
    /// cannot be written.
    pub fn render_file(
        &self,
        template: &Path,
        out_dir: &Path,
        out_name: &str,
    ) -> Result<PathBuf, TemplateError> {
        let plain = !out_name.is_empty()
            && out_name != "."
            && out_name != ".."
            && !out_name.contains(['/', '\0']);
        if !plain {
            return Err(TemplateError::OutputName(out_name.to_string()));
        }
        let text = fs::read_to_string(template).map_err(|source| TemplateError::Read {
            path: template.to_path_buf(),
            source,
        })?;
        let path = out_dir.join(out_name);
        write_private(&path, self.render(&text).as_bytes()).map_err(|source| {
            TemplateError::Write {
                path: path.clone(),
                source,
            }
        })?;
        Ok(path)
    }
}

/// Writes a new file readable by its owner only (it may hold a database password; the
/// contained tool's user gets it by a change of owner). Whatever was at `path` is removed
/// first, and the file is created exclusively: a link the tool left there from an earlier
/// phase is never followed.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_known_names_once_and_keeps_the_rest() {
        let mut p = Placeholders::new();
        p.set("db_url", "mysql+pymysql://u:p@h:3306/db")
            .set("work_dir", "/w")
            .set("empty", "");
        assert_eq!(
            p.render("sqlalchemy.url = {db_url}\nscript = {work_dir}/x{empty}"),
            "sqlalchemy.url = mysql+pymysql://u:p@h:3306/db\nscript = /w/x"
        );
        assert_eq!(
            p.render("{unknown} {} { db_url} {db_url"),
            "{unknown} {} { db_url} {db_url"
        );
        assert_eq!(p.render("{{work_dir}}"), "{/w}");
        assert_eq!(p.render("ünïcode {work_dir}é"), "ünïcode /wé");
        assert_eq!(p.render(""), "");
    }

    #[test]
    fn renders_files_into_the_work_dir() {
        let dir = tempfile::tempdir().unwrap();
        let tmpl = dir.path().join("alembic.ini.tmpl");
        fs::write(&tmpl, "[alembic]\nsqlalchemy.url = {db_url}\n").unwrap();
        let mut p = Placeholders::new();
        p.set("db_url", "sqlite:////x.db");
        let out = p.render_file(&tmpl, dir.path(), "alembic.ini").unwrap();
        assert_eq!(
            fs::read_to_string(out).unwrap(),
            "[alembic]\nsqlalchemy.url = sqlite:////x.db\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let out = dir.path().join("alembic.ini");
        assert_eq!(
            fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // A link left where the output goes is replaced, not followed.
        let victim = dir.path().join("victim");
        fs::write(&victim, "untouched").unwrap();
        fs::remove_file(&out).unwrap();
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        p.render_file(&tmpl, dir.path(), "alembic.ini").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(fs::symlink_metadata(&out).unwrap().is_file());
        assert!(matches!(
            p.render_file(&tmpl, dir.path(), "../x"),
            Err(TemplateError::OutputName(_))
        ));
        assert!(matches!(
            p.render_file(&dir.path().join("missing"), dir.path(), "x"),
            Err(TemplateError::Read { .. })
        ));
    }
}
