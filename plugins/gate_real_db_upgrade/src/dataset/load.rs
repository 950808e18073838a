//! Finding the datasets of a datasets dir and reading each file (see the module above for
//! where datasets come from).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use turbo_hipster_sdk::config::{read_object, Checker};

use super::{parse, Dataset, DatasetDefaults};

/// Loads every dataset in `dir`: each subdirectory with a `config.json`, and each `*.json`
/// file directly in `dir`.
///
/// # Errors
/// Every problem found, one line each, naming the file and key.
pub fn load_datasets(dir: &Path, defaults: &DatasetDefaults) -> Result<Vec<Dataset>, Vec<String>> {
    load_datasets_with_warnings(dir, defaults).map(|(datasets, _)| datasets)
}

/// [`load_datasets`], also giving the warnings (unknown keys, skipped directories, unknown
/// placeholders), one line each: `<file>: <key path>: <what>`.
///
/// # Errors
/// Every problem found, one line each, naming the file and key.
pub fn load_datasets_with_warnings(
    dir: &Path,
    defaults: &DatasetDefaults,
) -> Result<(Vec<Dataset>, Vec<String>), Vec<String>> {
    // Paths in the datasets come out absolute even for a relative datasets dir.
    let absolute = std::path::absolute(dir);
    let dir = absolute.as_deref().unwrap_or(dir);
    let mut scan = find_datasets(dir)?;
    let mut datasets: Vec<Dataset> = Vec::new();
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for found in std::mem::take(&mut scan.found) {
        if let Some(other) = seen.get(&found.name) {
            scan.errors.push(format!(
                "{}: dataset name {} is also used by {}",
                found.config.display(),
                found.name,
                other.display()
            ));
            continue;
        }
        seen.insert(found.name.clone(), found.config.clone());
        match load_dataset(&found.config, &found.name, &found.base, defaults) {
            Ok((dataset, w)) => {
                datasets.push(dataset);
                scan.warnings.extend(w);
            }
            Err(e) => scan.errors.extend(e),
        }
    }
    if scan.errors.is_empty() {
        datasets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((datasets, scan.warnings))
    } else {
        Err(scan.errors)
    }
}

/// A dataset's file found in the datasets dir.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Found {
    name: String,
    config: PathBuf,
    /// What its relative paths are resolved against.
    base: PathBuf,
}

/// The dataset files of a datasets dir, sorted, with what was wrong or skipped on the way.
#[derive(Debug, Default)]
struct Scan {
    found: Vec<Found>,
    errors: Vec<String>,
    warnings: Vec<String>,
}

/// Each subdirectory with a `config.json`, and each `*.json` file, of `dir`.
fn find_datasets(dir: &Path) -> Result<Scan, Vec<String>> {
    let unreadable =
        |e: std::io::Error| format!("{}: cannot read the datasets dir: {e}", dir.display());
    let entries = std::fs::read_dir(dir).map_err(|e| vec![unreadable(e)])?;
    let mut scan = Scan::default();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                scan.errors.push(unreadable(e));
                continue;
            }
        };
        let path = entry.path();
        let Some(file_name) = entry.file_name().to_str().map(str::to_string) else {
            scan.warnings
                .push(format!("{}: not a UTF-8 name, skipped", path.display()));
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        // Follow symlinks: a dataset may be linked in from elsewhere.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // a dangling link
        };
        if meta.is_dir() {
            let config = path.join("config.json");
            if config.is_file() {
                scan.found.push(Found {
                    name: file_name,
                    config,
                    base: path,
                });
            } else {
                scan.warnings
                    .push(format!("{}: no config.json, skipped", path.display()));
            }
        } else if meta.is_file() {
            if let Some(stem) = file_name.strip_suffix(".json") {
                scan.found.push(Found {
                    name: stem.to_string(),
                    config: path,
                    base: dir.to_path_buf(),
                });
            }
        }
    }
    scan.found.sort();
    Ok(scan)
}

/// Loads one dataset from the config file `source`, naming it `name`, with relative paths
/// resolved against `dir` (both made absolute first, without resolving symlinks).
///
/// # Errors
/// Every problem found, one line each: `<file>: <key path>: <what>`. On success, the warnings.
pub fn load_dataset(
    source: &Path,
    name: &str,
    dir: &Path,
    defaults: &DatasetDefaults,
) -> Result<(Dataset, Vec<String>), Vec<String>> {
    let absolute_source = std::path::absolute(source);
    let source = absolute_source.as_deref().unwrap_or(source);
    let absolute_dir = std::path::absolute(dir);
    let dir = absolute_dir.as_deref().unwrap_or(dir);
    let obj = read_object(source).map_err(|issue| vec![issue.to_string()])?;
    let mut c = Checker::new(source);
    let dataset = parse::dataset(&mut c, &obj, source, name, dir, defaults);
    let (errors, warnings) = c.into_lines();
    match dataset {
        Some(d) if errors.is_empty() => Ok((d, warnings)),
        _ => Err(errors),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::dataset::{
        AlembicTree, Connection, Engine, ExpectedVersion, LogFormat, Migration, SeedFormat,
        DEFAULT_VERSION_TABLE,
    };

    fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn tool_dataset_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let config = write(
            tmp.path(),
            "pg/config.json",
            &json!({
                "project": "acme/app",
                "engine": "postgres",
                "seed_data": "seed.dump",
                "connection": {"user": "app"},
                "migration": {
                    "tool": ["alembic", "-c", "{work_dir}/alembic.ini", "upgrade", "head"],
                    "env": {"DB_URL": "{db_url}", "X": "{nope}"},
                    "templates": {"alembic.ini": "tpl/alembic.ini.in"},
                    "log_format": "alembic"
                },
                "expected_version": {"alembic_heads": "app/migrations/versions"},
                "upgrade_path": ["stable/1.0", "v2.0"],
                "timeout": 90.5
            })
            .to_string(),
        );
        let defaults = DatasetDefaults {
            connection: Connection {
                password: Some("pw".into()),
                user: Some("ignored".into()),
                ..Connection::default()
            },
            engine: Some(Engine::MySql),
            ..DatasetDefaults::default()
        };
        let (d, warnings) = load_dataset(&config, "pg", &tmp.path().join("pg"), &defaults).unwrap();
        assert_eq!(d.engine, Engine::PostgreSql);
        assert_eq!(d.database, "pg");
        assert_eq!(d.seed.format, SeedFormat::PgCustom);
        assert_eq!(d.seed.path, tmp.path().join("pg/seed.dump"));
        assert_eq!(d.connection.user.as_deref(), Some("app"));
        assert_eq!(d.connection.password.as_deref(), Some("pw"));
        assert_eq!(
            d.expected_version,
            ExpectedVersion::AlembicHeads(AlembicTree::folder("app/migrations/versions"))
        );
        assert_eq!(d.upgrade_path, vec!["stable/1.0", "v2.0"]);
        assert_eq!(d.timeout, Some(Duration::from_millis(90_500)));
        match &d.migration {
            Migration::Tool {
                argv,
                env,
                templates,
                log_format,
            } => {
                assert_eq!(argv[0], "alembic");
                assert_eq!(env["DB_URL"], "{db_url}");
                assert_eq!(
                    templates,
                    &vec![(
                        tmp.path().join("pg/tpl/alembic.ini.in"),
                        "alembic.ini".to_string()
                    )]
                );
                assert!(matches!(log_format, LogFormat::Alembic));
            }
            other => panic!("{other:?}"),
        }
        assert!(d.runnable().is_ok());
        assert_eq!(
            warnings,
            vec![format!(
                "{}: migration.env.X: unknown placeholder {{nope}}, left as is",
                config.display()
            )]
        );
    }

    #[test]
    fn sql_dir_dataset_defaults_to_last_sql_file() {
        let tmp = tempfile::tempdir().unwrap();
        let config = write(
            tmp.path(),
            "s.json",
            &json!({
                "project": "acme/app",
                "engine": "sqlite",
                "seed_data": "s.sql",
                "migration": {"sql_dir": "db/migrations"}
            })
            .to_string(),
        );
        let (d, w) = load_dataset(&config, "s", tmp.path(), &DatasetDefaults::default()).unwrap();
        assert!(w.is_empty());
        assert_eq!(d.expected_version, ExpectedVersion::LastSqlFile);
        match d.migration {
            Migration::SqlFiles { dir, version_table } => {
                assert_eq!(dir, PathBuf::from("db/migrations"));
                assert_eq!(version_table, DEFAULT_VERSION_TABLE);
            }
            other => panic!("{other:?}"),
        }
    }
}
