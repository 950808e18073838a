//! Figures over a migration's samples: percentiles, the regression ratio, suggested limits.
//!
//! Percentiles interpolate linearly between the closest ranks (Hyndman and Fan's type 7, the
//! default of numpy, R and spreadsheets): for `n` sorted samples `x[0..n]` and `p` in `[0, 1]`,
//! `h = (n - 1) p` and the value is `x[⌊h⌋] + (h - ⌊h⌋) (x[⌊h⌋ + 1] - x[⌊h⌋])`. It is defined
//! for every `n ≥ 1`: one sample is every percentile; the median of two is their mean.

/// The figures of one migration's durations.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// How many samples.
    pub count: usize,
    /// The median, in milliseconds.
    pub median_ms: f64,
    /// The 95th percentile, in milliseconds.
    pub p95_ms: f64,
    /// The 99th percentile, in milliseconds.
    pub p99_ms: f64,
    /// The longest, in milliseconds.
    pub max_ms: f64,
}

impl Stats {
    /// The figures of `samples` (milliseconds, any order); `None` without samples.
    pub fn of(samples: &[i64]) -> Option<Self> {
        let mut sorted: Vec<f64> = samples.iter().map(|&ms| ms as f64).collect();
        sorted.sort_by(f64::total_cmp);
        Some(Stats {
            count: sorted.len(),
            median_ms: percentile(&sorted, 0.5)?,
            p95_ms: percentile(&sorted, 0.95)?,
            p99_ms: percentile(&sorted, 0.99)?,
            max_ms: *sorted.last()?,
        })
    }
}

/// The `p` percentile (`p` in `[0, 1]`, clamped) of `sorted` (ascending); `None` when empty.
///
/// ```
/// use th_history::stats::percentile;
/// assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
/// assert_eq!(percentile(&[100.0, 200.0], 0.5), Some(150.0));
/// assert_eq!(percentile(&[], 0.5), None);
/// ```
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let h = last as f64 * p.clamp(0.0, 1.0);
    let below = h.floor() as usize;
    let above = (below + 1).min(last);
    let fraction = h - below as f64;
    Some(sorted[below] + fraction * (sorted[above] - sorted[below]))
}

/// How limits are suggested: `p99 × factor + floor`, in whole seconds rounded up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitRule {
    /// The factor on the 99th percentile.
    pub factor: f64,
    /// Seconds added, so that a migration of a few milliseconds gets room for a slow disk.
    pub floor_seconds: f64,
    /// Migrations with fewer samples get no suggestion.
    pub min_samples: usize,
}

impl Default for LimitRule {
    fn default() -> Self {
        LimitRule {
            factor: 1.5,
            floor_seconds: 5.0,
            min_samples: 1,
        }
    }
}

impl LimitRule {
    /// The suggested limit in seconds for `stats`, `None` with too few samples.
    pub fn suggest(&self, stats: &Stats) -> Option<f64> {
        (stats.count >= self.min_samples.max(1))
            .then(|| (stats.p99_ms * self.factor / 1000.0 + self.floor_seconds).ceil())
    }
}

/// How a job's migration is compared with its history: slower than `factor` × the median of
/// at least `min_samples` earlier samples is a regression.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegressionRule {
    /// K: how many times the median is too slow.
    pub factor: f64,
    /// No judgement with fewer samples.
    pub min_samples: usize,
    /// No judgement of a run shorter than this (ms): a few milliseconds' jitter of a quick
    /// migration is many times its median and no regression anyone would deploy around.
    pub min_ms: i64,
}

impl RegressionRule {
    /// How many times slower than the median `duration_ms` is, when it is a regression: the
    /// history has enough samples, the run took at least `min_ms`, and
    /// `duration_ms > factor × median` (strictly). A median of
    /// 0 ms counts as 1 ms (a migration of no measurable time would otherwise make any later
    /// one a regression by an infinite factor).
    pub fn regression(&self, duration_ms: i64, history: &Stats) -> Option<f64> {
        if history.count < self.min_samples.max(1) || duration_ms < self.min_ms {
            return None;
        }
        let median = history.median_ms.max(1.0);
        let ratio = duration_ms as f64 / median;
        (ratio > self.factor).then_some(ratio)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Known values (numpy.percentile's default, linear): worked out by hand.
    #[test]
    fn percentiles_for_one_two_and_many_samples() {
        // One sample: every figure is it.
        let one = Stats::of(&[171]).unwrap();
        assert_eq!(
            one,
            Stats {
                count: 1,
                median_ms: 171.0,
                p95_ms: 171.0,
                p99_ms: 171.0,
                max_ms: 171.0
            }
        );
        // Two: h = 0.5, 0.95, 0.99 between 100 and 200.
        let two = Stats::of(&[200, 100]).unwrap();
        assert_eq!(two.median_ms, 150.0);
        assert_eq!(two.p95_ms, 195.0);
        assert_eq!(two.p99_ms, 199.0);
        assert_eq!(two.max_ms, 200.0);
        // Three: the median is the middle one; p95: h = 1.9 → 20 + 0.9 × 10.
        let three = Stats::of(&[30, 10, 20]).unwrap();
        assert_eq!(three.median_ms, 20.0);
        assert!((three.p95_ms - 29.0).abs() < 1e-9);
        // Four: the median is the mean of the middle two.
        assert_eq!(Stats::of(&[1, 2, 3, 4]).unwrap().median_ms, 2.5);
        // 1..=10: p95 h = 8.55 → 9.55; p99 h = 8.91 → 9.91.
        let ten: Vec<i64> = (1..=10).collect();
        let s = Stats::of(&ten).unwrap();
        assert!((s.p95_ms - 9.55).abs() < 1e-9, "{s:?}");
        assert!((s.p99_ms - 9.91).abs() < 1e-9, "{s:?}");
        assert_eq!(s.median_ms, 5.5);
        // 1..=101: exact ranks.
        let many: Vec<i64> = (1..=101).collect();
        let s = Stats::of(&many).unwrap();
        assert_eq!((s.median_ms, s.p95_ms, s.p99_ms), (51.0, 96.0, 100.0));
        assert_eq!(Stats::of(&[]), None);
        // Bounds are clamped.
        assert_eq!(percentile(&[1.0, 2.0], 1.5), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0], -1.0), Some(1.0));
    }

    #[test]
    fn limits_are_p99_times_factor_plus_floor_rounded_up() {
        let rule = LimitRule::default();
        // p99 of one 59 946 ms sample: 59.946 × 1.5 + 5 = 94.919 → 95.
        assert_eq!(rule.suggest(&Stats::of(&[59_946]).unwrap()), Some(95.0));
        // A tiny migration gets the floor, rounded up: 0.03 × 1.5 + 5 → 6.
        assert_eq!(rule.suggest(&Stats::of(&[30]).unwrap()), Some(6.0));
        let strict = LimitRule {
            min_samples: 3,
            ..rule
        };
        assert_eq!(strict.suggest(&Stats::of(&[1, 2]).unwrap()), None);
        assert_eq!(strict.suggest(&Stats::of(&[1, 2, 3]).unwrap()), Some(6.0));
    }

    #[test]
    fn regressions_need_enough_samples_and_a_strictly_larger_ratio() {
        let rule = RegressionRule {
            factor: 3.0,
            min_samples: 3,
            min_ms: 0,
        };
        let history = Stats::of(&[100, 110, 90]).unwrap();
        assert_eq!(rule.regression(301, &history), Some(3.01));
        assert_eq!(rule.regression(300, &history), None);
        assert_eq!(
            rule.regression(10_000, &Stats::of(&[100, 100]).unwrap()),
            None
        );
        // A zero median counts as one millisecond.
        assert_eq!(
            rule.regression(5, &Stats::of(&[0, 0, 0]).unwrap()),
            Some(5.0)
        );
        // A run shorter than min_ms is not judged, however many times its median.
        let quick = RegressionRule {
            min_ms: 1000,
            ..rule
        };
        assert_eq!(quick.regression(999, &history), None);
        assert_eq!(quick.regression(1000, &history), Some(10.0));
    }
}
