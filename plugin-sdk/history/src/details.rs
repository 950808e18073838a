//! The samples of one job, read from its outcome's details: any plugin whose details follow
//! the gate plugin's `summary.json` (schema 1: `change.commit`, `datasets[]` with `name`,
//! `engine`, `config` and `migrations[]` with `phase`, `from`, `to`, `start`, `duration_ms`,
//! `status`, `limit_seconds`, `counters`, `locks`) is recorded; other details give none.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::store::Sample;

/// The samples in `details` of the job `job` (its Gearman unique).
pub fn samples_from_details(details: &Value, job: &str) -> Vec<Sample> {
    if details.get("schema").and_then(Value::as_u64) != Some(1) {
        return Vec::new();
    }
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    let commit = details
        .get("change")
        .map(|c| text(c, "commit"))
        .unwrap_or_default();
    let mut samples = Vec::new();
    for dataset in details
        .get("datasets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = text(dataset, "name");
        if name.is_empty() {
            continue;
        }
        for m in dataset
            .get("migrations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (from, to) = (text(m, "from"), text(m, "to"));
            if to.is_empty() {
                continue;
            }
            let counters: BTreeMap<String, i64> = m
                .get("counters")
                .and_then(Value::as_object)
                .map(|c| {
                    c.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_i64()?)))
                        .collect()
                })
                .unwrap_or_default();
            samples.push(Sample {
                dataset: name.clone(),
                engine: text(dataset, "engine"),
                migration: format!("{from}->{to}"),
                phase: text(m, "phase"),
                started: text(m, "start"),
                duration_ms: m.get("duration_ms").and_then(Value::as_i64),
                status: text(m, "status"),
                limit_seconds: m.get("limit_seconds").and_then(Value::as_f64),
                commit: commit.clone(),
                job: job.to_string(),
                counters,
                locks: m.get("locks").cloned().unwrap_or(Value::Array(Vec::new())),
                dataset_config: text(dataset, "config"),
            });
        }
    }
    samples
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_gate_summary_gives_one_sample_per_migration() {
        let details = json!({
            "schema": 1,
            "change": {"commit": "abc123", "ZUUL_PROJECT": "example/shop"},
            "datasets": [{
                "name": "small", "engine": "sqlite", "config": "/d/small/config.json",
                "migrations": [
                    {"phase": "change", "from": "1", "to": "2", "start": "2026-01-01 00:00:00,000",
                     "duration_ms": 1500, "status": "ok", "limit_seconds": 60.0,
                     "counters": {"tup_returned": 7}, "locks": []},
                    {"phase": "change", "from": "2", "to": "3", "start": "2026-01-01 00:00:01,500",
                     "duration_ms": null, "status": "unfinished", "limit_seconds": null,
                     "counters": {}, "locks": []}
                ]
            }]
        });
        let samples = samples_from_details(&details, "u1");
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].migration, "1->2");
        assert_eq!(samples[0].duration_ms, Some(1500));
        assert_eq!(samples[0].commit, "abc123");
        assert_eq!(samples[0].counters["tup_returned"], 7);
        assert_eq!(samples[0].dataset_config, "/d/small/config.json");
        assert_eq!(samples[1].duration_ms, None);
        assert_eq!(samples[1].status, "unfinished");
        // Another plugin's details give nothing.
        assert!(samples_from_details(&json!({"table": "x"}), "u").is_empty());
        assert!(samples_from_details(&Value::Null, "u").is_empty());
    }
}
