//! The dataset's files: `seed_data` with `seed_format`, and `logging_conf`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use turbo_hipster_sdk::config::{says, Checker};

use crate::dataset::check::is_inner_path;
use crate::dataset::SEED_INSIDE;
use crate::engine::{Engine, Seed, SeedFormat};

/// `seed_data` (a file in the dataset's directory) and its format (`seed_format`, else the
/// extension); a PostgreSQL custom-format dump needs PostgreSQL.
pub(super) fn seed(
    c: &mut Checker,
    obj: &Map<String, Value>,
    dir: &Path,
    engine: Engine,
) -> Option<Seed> {
    let path = seed_path(c, obj.get("seed_data"), dir);
    let format = match obj.get("seed_format") {
        None => path.as_deref().map(SeedFormat::from_path),
        Some(v) => seed_format(c, v),
    };
    if format == Some(SeedFormat::PgCustom) && engine != Engine::PostgreSql {
        let key = if obj.contains_key("seed_format") {
            "seed_format"
        } else {
            "seed_data"
        };
        c.error(
            key,
            format!(
                "a PostgreSQL custom-format dump needs engine postgresql, not {}",
                engine.name()
            ),
        );
    }
    Some(Seed {
        path: path?,
        format: format?,
    })
}

fn seed_path(c: &mut Checker, value: Option<&Value>, dir: &Path) -> Option<PathBuf> {
    let Some(v) = value else {
        c.required("seed_data", "the seed dump, relative to the dataset");
        return None;
    };
    let s = c.nonempty("seed_data", v)?;
    if is_inner_path(&s) {
        Some(dir.join(s))
    } else {
        c.error("seed_data", format!("{SEED_INSIDE}, got {s:?}"));
        None
    }
}

fn seed_format(c: &mut Checker, value: &Value) -> Option<SeedFormat> {
    let f = value.as_str().and_then(SeedFormat::from_name);
    if f.is_none() {
        let names = ["sql", "sql_gz", "pg_custom"];
        c.error("seed_format", says::one_of(&names, says::show(value)));
    }
    f
}

/// `logging_conf`: the original's logging config, resolved against the dataset's directory.
pub(super) fn logging_conf(
    c: &mut Checker,
    obj: &Map<String, Value>,
    dir: &Path,
) -> Option<PathBuf> {
    obj.get("logging_conf")
        .and_then(|v| c.nonempty("logging_conf", v))
        .map(|s| dir.join(s))
}
