//! The seed a run's database is created from: its file and format.

use std::path::{Path, PathBuf};

/// The format of a seed dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedFormat {
    /// Plain SQL.
    Sql,
    /// Gzipped SQL (`.sql.gz`).
    SqlGz,
    /// A PostgreSQL custom-format dump (`pg_dump -Fc`), restored with `pg_restore`.
    PgCustom,
}

impl SeedFormat {
    /// The format named by `seed_format`: `sql`, `sql_gz` / `sql.gz`, `pg_custom`.
    pub fn from_name(name: &str) -> Option<SeedFormat> {
        match name {
            "sql" => Some(SeedFormat::Sql),
            "sql_gz" | "sql.gz" => Some(SeedFormat::SqlGz),
            "pg_custom" => Some(SeedFormat::PgCustom),
            _ => None,
        }
    }

    /// The format given by a file name: `*.gz` gzipped SQL, `*.dump`/`*.pgdump` PostgreSQL
    /// custom format, anything else plain SQL (the original fed any seed to `mysql`).
    pub fn from_path(path: &Path) -> SeedFormat {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if name.ends_with(".gz") {
            SeedFormat::SqlGz
        } else if name.ends_with(".dump") || name.ends_with(".pgdump") {
            SeedFormat::PgCustom
        } else {
            SeedFormat::Sql
        }
    }
}

/// The seed data a run's database is created from. Never modified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// Absolute path of the dump.
    pub path: PathBuf,
    /// Its format (from the extension, or the `seed_format` key).
    pub format: SeedFormat,
}

impl Seed {
    /// What a job would find wrong with the seed file: it must exist, be a regular file
    /// (symlinks followed) and be readable. `check-config` reports this; a job whose seed is
    /// missing reports `FAILURE - Could not find seed database.` instead.
    ///
    /// # Errors
    /// Why not, as one line starting with the key (`seed_data: ...`).
    pub fn check_file(&self) -> Result<(), String> {
        let path = self.path.display();
        let meta = std::fs::metadata(&self.path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("seed_data: {path} does not exist"),
            _ => format!("seed_data: cannot read {path}: {e}"),
        })?;
        if !meta.is_file() {
            return Err(format!("seed_data: {path} is not a regular file"));
        }
        std::fs::File::open(&self.path)
            .map(drop)
            .map_err(|e| format!("seed_data: cannot read {path}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_formats() {
        assert_eq!(SeedFormat::from_path(Path::new("a/x.sql")), SeedFormat::Sql);
        assert_eq!(
            SeedFormat::from_path(Path::new("x.SQL.GZ")),
            SeedFormat::SqlGz
        );
        assert_eq!(
            SeedFormat::from_path(Path::new("x.dump")),
            SeedFormat::PgCustom
        );
        assert_eq!(
            SeedFormat::from_path(Path::new("x.pgdump")),
            SeedFormat::PgCustom
        );
        assert_eq!(SeedFormat::from_path(Path::new("x.txt")), SeedFormat::Sql);
    }
}
