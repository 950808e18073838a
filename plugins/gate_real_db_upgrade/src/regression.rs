//! The regression warning: a migration slower than K times its median in the history of the
//! same dataset gets `WARNING - Migration <from>-><to> took N× longer than usual (M ms vs
//! median T ms)` ([`crate::messages::took_longer_than_usual`]).
//!
//! The history is the daemon's per-migration database (`HostSettings::history_database`,
//! [`th_history`]); the daemon records a job's migrations after the job, so a run is compared
//! with the runs before it only. K (`regression_factor`, default 3) and the least number of
//! earlier runs (`regression_min_samples`, default 10) and the shortest run judged
//! (`regression_min_ms`, default 1000) are the job's settings
//! ([`crate::settings`]): with fewer samples of a migration there is no judgement, so a new
//! dataset or migration starts without warnings. The comparison is strict (`M > K × T`); a
//! median of 0 ms counts as 1 ms. Migrations that never ended give their own FAILURE and are
//! not compared. The history is read once per job, before the datasets run; a history that
//! cannot be read is logged and the job runs without the warning.
//!
//! The same read gives each dataset's trends page (`trends-<dataset>.html` in the job's
//! results, [`trends_page`]): the history's runs and this one, each migration's duration over
//! time with its limit ([`th_history::trends`]), self-contained, published with the logs.

use std::collections::BTreeMap;

use th_history::{HistoryDb, Location, RegressionRule, Sample, Stats};

use crate::logparse::MigrationRecord;
use crate::messages;

/// The history of the job's datasets: per dataset, per migration (`from->to`), its figures.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    rule: Option<RegressionRule>,
    by_dataset: BTreeMap<String, BTreeMap<String, Stats>>,
    samples: BTreeMap<String, Vec<Sample>>,
}

impl Baseline {
    /// Reads the runs of `datasets` from the history at `location` (the host's setting); an
    /// empty baseline (no warning, no trends) when there is no history or it cannot be read
    /// (logged). With `rule` `None` it gives no warning.
    pub fn load(rule: Option<RegressionRule>, location: Option<&str>, datasets: &[&str]) -> Self {
        let Some(location) = location else {
            return Baseline::default();
        };
        let location = match Location::parse(location, std::path::Path::new("/")) {
            Ok(l) => l,
            Err(why) => {
                tracing::warn!("history_database {location:?} {why}: no regression warning");
                return Baseline::default();
            }
        };
        let db = HistoryDb::new(location);
        let mut by_dataset = BTreeMap::new();
        let mut samples = BTreeMap::new();
        for name in datasets {
            match db.samples(name) {
                Ok(runs) => {
                    let stats = th_history::store::stats_of(&runs);
                    by_dataset.insert(name.to_string(), stats.into_iter().collect());
                    samples.insert(name.to_string(), runs);
                }
                Err(e) => {
                    tracing::warn!("dataset {name}: no regression warning: {e}");
                }
            }
        }
        Baseline {
            rule,
            by_dataset,
            samples,
        }
    }

    /// The trends page of `dataset`: its runs in the history and `current` (this job's), or
    /// `None` when the history was not read.
    pub fn trends_page(&self, dataset: &str, current: &[Sample]) -> Option<String> {
        let mut runs = self.samples.get(dataset)?.clone();
        runs.extend(current.iter().filter(|s| s.dataset == dataset).cloned());
        Some(th_history::trends::page(dataset, &runs))
    }

    /// A baseline from figures already known (tests, tools).
    pub fn from_stats(
        rule: RegressionRule,
        by_dataset: BTreeMap<String, BTreeMap<String, Stats>>,
    ) -> Self {
        Baseline {
            rule: Some(rule),
            by_dataset,
            samples: BTreeMap::new(),
        }
    }

    /// The warning about `record` of `dataset`, if it is a regression.
    pub fn check(&self, dataset: &str, record: &MigrationRecord) -> Option<String> {
        let rule = self.rule?;
        let ms = record.duration_ms()?;
        let migration = format!("{}->{}", record.from, record.to);
        let history = self.by_dataset.get(dataset)?.get(&migration)?;
        let ratio = rule.regression(ms, history)?;
        Some(messages::took_longer_than_usual(
            &migration,
            ratio,
            ms,
            history.median_ms,
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use turbo_hipster_sdk::support::logfile::parse_timestamp;

    fn record(ms: i64) -> MigrationRecord {
        let start = parse_timestamp("2026-01-01 00:00:00,000").unwrap();
        MigrationRecord {
            from: "1".into(),
            to: "2".into(),
            description: String::new(),
            start,
            end: Some(start + chrono::Duration::milliseconds(ms)),
            counters: BTreeMap::new(),
            locks: Vec::new(),
            rewrites: Vec::new(),
            observation_gaps: Vec::new(),
        }
    }

    #[test]
    fn slower_than_k_times_the_median_warns() {
        let stats = Stats::of(&[100, 120, 80]).unwrap();
        let rule = RegressionRule {
            factor: 3.0,
            min_samples: 3,
            min_ms: 0,
        };
        let baseline = Baseline::from_stats(
            rule,
            BTreeMap::from([(
                "d".to_string(),
                BTreeMap::from([("1->2".to_string(), stats)]),
            )]),
        );
        assert_eq!(
            baseline.check("d", &record(450)).unwrap(),
            "WARNING - Migration 1->2 took 4.5× longer than usual (450 ms vs median 100 ms)"
        );
        assert_eq!(baseline.check("d", &record(300)), None);
        assert_eq!(baseline.check("other", &record(450)), None);
        assert_eq!(Baseline::default().check("d", &record(450)), None);
        // Off, or no history: no baseline.
        assert!(Baseline::load(None, Some("/x.sqlite"), &["d"])
            .check("d", &record(1))
            .is_none());
    }
}
