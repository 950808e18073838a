//! Writing suggested limits into a dataset's config (`limits --write`), keeping its other keys,
//! their order and their values as they are.
//!
//! The file is read into [`Ordered`], a JSON value whose objects keep their keys in file order
//! (serde_json's own `Map` sorts them unless its `preserve_order` feature is on, which would
//! change the order of every map in every crate linking it). Each suggested limit replaces
//! the value of its `from->to` key under `maximum_migration_times` where it stands, or is
//! appended; a file without that table gets one, with a `default` of the largest suggestion
//! (a table without `default` is refused by the plugin). The file is written again with
//! 4-space indentation (as the original's configs) through a temporary file renamed over it.

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// The key of the time limits in a dataset's config.
pub const KEY_SECONDS: &str = "maximum_migration_times";

/// A JSON value whose objects keep their key order.
#[derive(Debug, Clone, PartialEq)]
pub enum Ordered {
    /// `null`.
    Null,
    /// `true`/`false`.
    Bool(bool),
    /// A number, as read.
    Number(serde_json::Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Ordered>),
    /// An object, keys in file order.
    Object(Vec<(String, Ordered)>),
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OrderedVisitor)
    }
}

struct OrderedVisitor;

impl<'de> Visitor<'de> for OrderedVisitor {
    type Value = Ordered;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Ordered, E> {
        Ok(Ordered::Null)
    }
    fn visit_none<E>(self) -> Result<Ordered, E> {
        Ok(Ordered::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Ordered, E> {
        Ok(Ordered::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Ordered, E> {
        Ok(Ordered::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Ordered, E> {
        Ok(Ordered::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Ordered, E> {
        serde_json::Number::from_f64(v)
            .map(Ordered::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Ordered, E> {
        Ok(Ordered::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Ordered, E> {
        Ok(Ordered::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ordered, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Ordered::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
        let mut entries: Vec<(String, Ordered)> = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Ordered>()? {
            // A repeated key: the last value wins, where the first stood (as serde_json).
            match entries.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = value,
                None => entries.push((key, value)),
            }
        }
        Ok(Ordered::Object(entries))
    }
}

impl Serialize for Ordered {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Ordered::Null => s.serialize_unit(),
            Ordered::Bool(b) => s.serialize_bool(*b),
            Ordered::Number(n) => n.serialize(s),
            Ordered::String(v) => s.serialize_str(v),
            Ordered::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Ordered::Object(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// Why the limits could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a JSON object, or its table is not an object.
    #[error("{path}: {why}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
}

/// Puts `limits` (`from->to` → seconds) into the dataset config at `path`; returns how many
/// keys were replaced and how many added.
///
/// # Errors
/// The file cannot be read, parsed or written, or is not an object, or its
/// `maximum_migration_times` is not an object.
pub fn write_limits(path: &Path, limits: &[(String, f64)]) -> Result<(usize, usize), WriteError> {
    let shown = path.display().to_string();
    let io = |source| WriteError::Io {
        path: shown.clone(),
        source,
    };
    let invalid = |why: String| WriteError::Invalid {
        path: shown.clone(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let mut doc: Ordered =
        serde_json::from_str(&text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let counts = set_limits(&mut doc, limits).map_err(invalid)?;
    let mut out = Vec::with_capacity(text.len() + 256);
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    doc.serialize(&mut ser)
        .map_err(|e| invalid(format!("cannot serialise: {e}")))?;
    out.push(b'\n');
    let tmp = path.with_extension("json.th-limits.tmp");
    std::fs::write(&tmp, &out).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })?;
    Ok(counts)
}

/// [`write_limits`] on a parsed document.
///
/// # Errors
/// `doc` is not an object, or its table is not an object.
pub fn set_limits(doc: &mut Ordered, limits: &[(String, f64)]) -> Result<(usize, usize), String> {
    let Ordered::Object(top) = doc else {
        return Err("a dataset config is a JSON object".into());
    };
    let number = |v: f64| serde_json::Number::from_f64(v).map(Ordered::Number);
    if !top.iter().any(|(k, _)| k == KEY_SECONDS) {
        let default = limits.iter().map(|(_, v)| *v).fold(0.0, f64::max);
        let mut table: Vec<(String, Ordered)> = limits
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), number(*v)?)))
            .collect();
        if let Some(d) = number(default) {
            table.push(("default".into(), d));
        }
        let added = table.len() - 1;
        top.push((KEY_SECONDS.into(), Ordered::Object(table)));
        return Ok((0, added));
    }
    let Some((_, Ordered::Object(table))) = top.iter_mut().find(|(k, _)| k == KEY_SECONDS) else {
        return Err(format!("{KEY_SECONDS} is not an object"));
    };
    let (mut replaced, mut added) = (0, 0);
    for (key, seconds) in limits {
        let Some(value) = number(*seconds) else {
            continue;
        };
        match table.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => {
                entry.1 = value;
                replaced += 1;
            }
            None => {
                table.push((key.clone(), value));
                added += 1;
            }
        }
    }
    Ok((replaced, added))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_order_and_values_their_form() {
        let text = r#"{"z": 1, "a": {"y": 2.0, "b": [1, "x", null, true]}, "m": -3}"#;
        let doc: Ordered = serde_json::from_str(text).unwrap();
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"z":1,"a":{"y":2.0,"b":[1,"x",null,true]},"m":-3}"#
        );
    }

    #[test]
    fn a_missing_table_is_added_with_a_default() {
        let mut doc: Ordered = serde_json::from_str(r#"{"type": "mysql"}"#).unwrap();
        let limits = vec![("1->2".to_string(), 6.0), ("2->3".to_string(), 95.0)];
        assert_eq!(set_limits(&mut doc, &limits).unwrap(), (0, 2));
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"type":"mysql","maximum_migration_times":{"1->2":6.0,"2->3":95.0,"default":95.0}}"#
        );
        let mut bad: Ordered = serde_json::from_str(r#"{"maximum_migration_times": 3}"#).unwrap();
        assert!(set_limits(&mut bad, &limits).is_err());
    }
}
