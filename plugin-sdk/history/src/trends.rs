//! A dataset's trends page: one self-contained HTML file (inline SVG and CSS, no script, no
//! external resource) with, per migration, its duration in every run over time and its limit
//! (the limit of its latest run, a dashed line), then the figures of [`crate::Stats`].
//!
//! Runs are placed in order along the x axis (one step per run, oldest on the left, dates
//! under the first and last); the y axis starts at 0 and reaches the largest of the durations
//! and the limit. A migration that never ended in a run is a red cross at the top.

use std::fmt::Write as _;

use crate::store::{stats_of, Sample};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 60.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 10.0;

/// The page for `dataset` from its samples (oldest first).
pub fn page(dataset: &str, samples: &[Sample]) -> String {
    let mut out = String::new();
    let title = format!("turbo-hipster: migration trends of {}", escape(dataset));
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\n\
         <style>body{{font-family:sans-serif;margin:1.5em;color:#222}}\
         table{{border-collapse:collapse}}td,th{{padding:2px 8px;text-align:right}}\
         th:first-child,td:first-child{{text-align:left}}\
         svg{{background:#fafafa;border:1px solid #ddd}}\
         .run{{fill:#1f6fb2}}.line{{stroke:#1f6fb2;fill:none}}\
         .limit{{stroke:#c33;stroke-dasharray:6 4}}.unfinished{{stroke:#c33;stroke-width:2}}\
         text{{font-size:11px;fill:#555}}</style></head><body>\n<h1>{title}</h1>\n"
    );
    let stats = stats_of(samples);
    let mut order: Vec<&str> = Vec::new();
    for s in samples {
        if !order.contains(&s.migration.as_str()) {
            order.push(&s.migration);
        }
    }
    if order.is_empty() {
        out.push_str("<p>No run of this dataset is in the history yet.</p>\n");
    } else {
        let _ = writeln!(
            out,
            "<p>{} run(s) of {} migration(s), from {} to {}.</p>",
            samples
                .iter()
                .map(|s| s.job.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            order.len(),
            escape(samples.first().map_or("", |s| s.started.as_str())),
            escape(samples.last().map_or("", |s| s.started.as_str())),
        );
    }
    for migration in order {
        let runs: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.migration == migration)
            .collect();
        let _ = writeln!(
            out,
            "<h2 id=\"m-{id}\">{name}</h2>",
            id = escape(&migration.replace("->", "-")),
            name = escape(migration)
        );
        out.push_str(&chart(&runs));
        if let Some((_, st)) = stats.iter().find(|(m, _)| m == migration) {
            let _ = writeln!(
                out,
                "<table><tr><th>samples</th><th>median ms</th><th>p95 ms</th><th>max ms</th>\
                 <th>limit s</th></tr><tr><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{:.0}</td>\
                 <td>{}</td></tr></table>",
                st.count,
                st.median_ms,
                st.p95_ms,
                st.max_ms,
                latest_limit(&runs).map_or_else(|| "-".to_string(), |l| l.to_string())
            );
        }
    }
    out.push_str("</body></html>\n");
    out
}

fn latest_limit(runs: &[&Sample]) -> Option<f64> {
    runs.iter().rev().find_map(|s| s.limit_seconds)
}

/// One migration's chart.
fn chart(runs: &[&Sample]) -> String {
    let limit_ms = latest_limit(runs).map(|l| l * 1000.0);
    let top = runs
        .iter()
        .filter_map(|s| s.duration_ms)
        .map(|ms| ms as f64)
        .chain(limit_ms)
        .fold(1.0, f64::max);
    let plot_w = WIDTH - LEFT - 10.0;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |i: usize| {
        if runs.len() <= 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i as f64 / (runs.len() - 1) as f64
        }
    };
    let y = |ms: f64| TOP + plot_h * (1.0 - ms / top);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\">\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\" stroke=\"#999\"/>\
         <line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/>\
         <text x=\"4\" y=\"{t}\">{top_label}</text><text x=\"4\" y=\"{b}\">0 ms</text>",
        b = TOP + plot_h,
        r = WIDTH - 10.0,
        t = TOP + 10.0,
        top_label = format_ms(top),
    );
    if let Some(limit) = limit_ms {
        let _ = write!(
            svg,
            "<line class=\"limit\" x1=\"{LEFT}\" y1=\"{ly:.1}\" x2=\"{r}\" y2=\"{ly:.1}\">\
             <title>limit {s} s</title></line>",
            ly = y(limit),
            r = WIDTH - 10.0,
            s = limit / 1000.0
        );
    }
    let points: Vec<String> = runs
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some(format!("{:.1},{:.1}", x(i), y(s.duration_ms? as f64))))
        .collect();
    if points.len() > 1 {
        let _ = write!(
            svg,
            "<polyline class=\"line\" points=\"{}\"/>",
            points.join(" ")
        );
    }
    for (i, s) in runs.iter().enumerate() {
        let what = format!(
            "{} {} ({}, {})",
            escape(&s.started),
            s.duration_ms
                .map_or_else(|| "did not end".to_string(), |ms| format!("{ms} ms")),
            escape(&short(&s.commit)),
            escape(&s.status)
        );
        match s.duration_ms {
            Some(ms) => {
                let _ = write!(
                    svg,
                    "<circle class=\"run\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"><title>{what}</title></circle>",
                    x(i),
                    y(ms as f64)
                );
            }
            None => {
                let (cx, cy) = (x(i), TOP + 4.0);
                let _ = write!(
                    svg,
                    "<path class=\"unfinished\" d=\"M{a:.1},{c:.1}L{b:.1},{d:.1}M{a:.1},{d:.1}L{b:.1},{c:.1}\"><title>{what}</title></path>",
                    a = cx - 4.0,
                    b = cx + 4.0,
                    c = cy - 4.0,
                    d = cy + 4.0
                );
            }
        }
    }
    if let (Some(first), Some(last)) = (runs.first(), runs.last()) {
        let _ = write!(
            svg,
            "<text x=\"{LEFT}\" y=\"{h}\">{}</text><text x=\"{r}\" y=\"{h}\" text-anchor=\"end\">{}</text>",
            escape(first.started.get(..10).unwrap_or(&first.started)),
            escape(last.started.get(..10).unwrap_or(&last.started)),
            h = HEIGHT - 6.0,
            r = WIDTH - 10.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn format_ms(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.0} s", ms / 1000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

fn short(commit: &str) -> String {
    commit.chars().take(12).collect()
}

/// `text` safe inside HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample(migration: &str, started: &str, ms: Option<i64>, limit: Option<f64>) -> Sample {
        Sample {
            dataset: "d<1>".into(),
            engine: "sqlite".into(),
            migration: migration.into(),
            phase: "change".into(),
            started: started.into(),
            duration_ms: ms,
            status: if ms.is_some() { "ok" } else { "unfinished" }.into(),
            limit_seconds: limit,
            commit: "0123456789abcdef".into(),
            job: started.into(),
            counters: Default::default(),
            locks: serde_json::json!([]),
            dataset_config: String::new(),
        }
    }

    #[test]
    fn a_page_has_a_chart_per_migration_with_its_limit() {
        let samples = vec![
            sample("1->2", "2026-01-01 00:00:00,000", Some(100), Some(60.0)),
            sample("2->3", "2026-01-01 00:00:01,000", Some(2000), None),
            sample("1->2", "2026-01-02 00:00:00,000", Some(300), Some(60.0)),
            sample("1->2", "2026-01-03 00:00:00,000", None, Some(60.0)),
        ];
        let html = page("d<1>", &samples);
        assert!(html.contains("migration trends of d&lt;1&gt;"), "{html}");
        assert_eq!(html.matches("<svg").count(), 2);
        assert_eq!(html.matches("class=\"limit\"").count(), 1);
        assert_eq!(html.matches("class=\"run\"").count(), 3);
        assert_eq!(html.matches("class=\"unfinished\"").count(), 1);
        assert!(html.contains("<title>limit 60 s</title>"), "{html}");
        // 1->2: median of 100 and 300.
        assert!(html.contains("<td>2</td><td>200</td>"), "{html}");
        assert!(!html.contains("<script"));
        assert!(!html.contains("src="), "self-contained");
        assert!(page("x", &[]).contains("No run of this dataset"));
    }
}
