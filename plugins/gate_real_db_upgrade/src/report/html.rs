//! The job's report page, `index.html`: one self-contained file (inline CSS, inline SVG, no
//! external asset, no request), readable offline, from a `file://` URL and without JavaScript.
//!
//! - **The verdict**: the job's result, the project, the change (the Zuul parameters recorded
//!   in the summary) and links to every file the job left.
//! - **Datasets**: one row per dataset: status (and its result lines), engine, migrations run,
//!   the slowest migration against its limit, and what was observed (counters summed over the
//!   migrations, the longest blocking lock hold, and any other per-migration field the summary
//!   carries).
//! - **Per dataset**: a timeline (an SVG bar per migration on one time scale, its limit a tick
//!   on the same scale, failing ones red and linked to their line in the log), a table of the
//!   migrations with every field of the summary (fields this module does not know are rendered
//!   generically, so new ones show without a change here), and the dataset's log in a viewer:
//!   line numbers, timestamps, tags, failing lines highlighted and listed at the top. A line's
//!   anchor is `#<dataset>-L<n>` (the dataset's name with characters other than letters,
//!   digits, `_` and `-` replaced by `_`). A filter box (the page's only script) hides the
//!   lines not containing its text (`index.html?filter=TEXT` opens the page filtered);
//!   without JavaScript it is not shown and every line is.
//!
//! Failing lines: the start line of every migration that was too long or never ended, `exit`
//! lines of a tool that did not exit 0, `timeout` lines, and output lines with a Python
//! traceback or an error (`Traceback`, `Error`, `FAILED`, `FATAL`, lines starting `ERROR`).
//!
//! A long log is cut in the page (the first [`HEAD_LINES`] and last [`TAIL_LINES`] lines, plus
//! every failing line), with a link to the whole file beside it.
//!
//! Everything written into the page goes through [`escape`]: the logs are the change's output
//! and may hold any text. The logs are already masked ([`crate::dataset_run`]); the daemon
//! masks the job config's secrets in every published file again.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;
use turbo_hipster_sdk::support::logfile::parse_line;

use crate::messages;

use super::{DatasetSummary, JobSummary, MigrationStatus, MigrationSummary};

/// The page's file name in the results directory.
pub const INDEX_HTML: &str = "index.html";
/// Lines of a log's start always in the page.
pub const HEAD_LINES: usize = 5000;
/// Lines of a log's end always in the page.
pub const TAIL_LINES: usize = 5000;

/// One log shown in the page.
#[derive(Debug, Clone)]
pub struct LogText {
    /// Its file name in the results directory (the link to the whole file).
    pub file: String,
    /// Its contents.
    pub text: String,
}

/// Escapes `text` for HTML text and double-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab and newline would make the page invalid.
            c if c.is_control() && c != '\t' && c != '\n' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The anchor prefix of a dataset's log lines: its name, characters other than ASCII
/// letters, digits, `_` and `-` replaced by `_`.
pub fn anchor(dataset: &str) -> String {
    let slug: String = dataset
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if slug.is_empty() {
        "dataset".into()
    } else {
        slug
    }
}

/// Writes `index.html` into `results_dir` from `summary` and the logs there.
///
/// # Errors
/// The page cannot be written.
pub fn write_index(
    summary: &JobSummary,
    results_dir: &Path,
    log_name: &dyn Fn(&str) -> String,
    other_files: &[&str],
) -> std::io::Result<()> {
    let logs: Vec<Option<LogText>> = summary
        .datasets
        .iter()
        .map(|d| {
            let file = log_name(&d.name);
            std::fs::read(results_dir.join(&file))
                .ok()
                .map(|bytes| LogText {
                    file,
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                })
        })
        .collect();
    let files: Vec<String> = other_files
        .iter()
        .map(|f| (*f).to_string())
        .chain(logs.iter().flatten().map(|l| l.file.clone()))
        .collect();
    let page = render(summary, &logs, &files);
    std::fs::write(results_dir.join(INDEX_HTML), page)
}

/// One line of a log, as the viewer shows it.
struct ViewLine<'a> {
    number: usize,
    time: &'a str,
    tag: &'a str,
    text: &'a str,
    failing: bool,
}

/// A dataset's log, parsed for the viewer.
struct View<'a> {
    lines: Vec<ViewLine<'a>>,
    /// Per migration (summary order), the line number of its start line, when found.
    starts: Vec<Option<usize>>,
}

fn is_error_text(text: &str) -> bool {
    text.contains("Traceback")
        || text.contains("Error")
        || text.contains("FAILED")
        || text.contains("FATAL")
        || text.trim_start().starts_with("ERROR")
}

fn view<'a>(text: &'a str, migrations: &[MigrationSummary]) -> View<'a> {
    let mut lines: Vec<ViewLine<'a>> = text
        .lines()
        .enumerate()
        .map(|(i, raw)| {
            // The timestamp and tag as written (`YYYY-MM-DD HH:MM:SS,mmm [tag] text`).
            let (time, tag, body) = match parse_line(raw) {
                Some(_) => split_line(raw),
                None => ("", "", raw),
            };
            let failing = match tag {
                "exit" => !body.starts_with("exit code 0 "),
                "timeout" => true,
                "output" | "heads" | "" => is_error_text(body),
                _ => false,
            };
            ViewLine {
                number: i + 1,
                time,
                tag,
                text: body,
                failing,
            }
        })
        .collect();
    // Each migration's start line: the first line at its start time (from where the previous
    // one was found) naming its target version, else the first at that time.
    let mut starts = Vec::with_capacity(migrations.len());
    let mut from = 0;
    for m in migrations {
        let at = |pick: &dyn Fn(&ViewLine<'_>) -> bool| {
            lines[from.min(lines.len())..]
                .iter()
                .position(pick)
                .map(|p| p + from)
        };
        let found = at(&|l| l.time == m.start && l.text.contains(m.to.as_str()))
            .or_else(|| at(&|l| l.time == m.start))
            .or_else(|| at(&|l| !l.time.is_empty() && l.time >= m.start.as_str()));
        if let Some(i) = found {
            from = i;
            if m.status != MigrationStatus::Ok {
                lines[i].failing = true;
            }
        }
        starts.push(found.map(|i| i + 1));
    }
    View { lines, starts }
}

/// `(timestamp, tag, text)` of a line `parse_line` accepts.
fn split_line(raw: &str) -> (&str, &str, &str) {
    let Some(open) = raw.find(" [") else {
        return ("", "", raw);
    };
    let rest = &raw[open + 2..];
    let Some(close) = rest.find(']') else {
        return ("", "", raw);
    };
    let after = &rest[close + 1..];
    (
        &raw[..open],
        &rest[..close],
        after.strip_prefix(' ').unwrap_or(after),
    )
}

const STYLE: &str = "
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--mut:#57606a;--line:#d0d7de;--bg:#f6f8fa}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1f2328}
header,main{padding:0 24px}
header{padding-top:16px;padding-bottom:8px;border-bottom:1px solid var(--line)}
h1{font-size:20px;margin:0 0 8px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
.verdict{font:600 15px/1.4 ui-monospace,monospace;white-space:pre-wrap;padding:10px 14px;border-radius:6px;border:1px solid;margin:8px 0}
.verdict.ok{color:var(--ok);background:#dafbe1;border-color:#aceebb}
.verdict.bad{color:var(--bad);background:#ffebe9;border-color:#ffcecb}
.verdict.warn{color:var(--warn);background:#fff8c5;border-color:#eed888}
.meta{color:var(--mut);margin:4px 0}
.meta code{color:#1f2328}
table{border-collapse:collapse;margin:6px 0 12px}
th,td{border:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
th{background:var(--bg)}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.st-ok,.passed{color:var(--ok);font-weight:600}
.st-too_long,.st-unfinished,.failed{color:var(--bad);font-weight:600}
.warning{color:var(--warn);font-weight:600}
ul.fails{margin:4px 0;padding-left:20px}
dl.kv{margin:0;display:grid;grid-template-columns:auto 1fr;gap:0 8px}
dl.kv dt{color:var(--mut)}
dl.kv dd{margin:0}
svg.tl{display:block;max-width:100%;height:auto;margin:6px 0}
svg.tl text{font:11px ui-monospace,monospace;fill:#1f2328}
svg.tl .ok{fill:#4ac26b}
svg.tl .bad{fill:var(--bad)}
svg.tl .lim{stroke:#1f2328;stroke-width:2}
svg.tl .axis{stroke:var(--line)}
.log{font:12px/1.5 ui-monospace,SFMono-Regular,Menlo,monospace;background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:4px 0;overflow-x:auto}
.log .l{display:block;white-space:pre-wrap;word-break:break-all;padding:0 8px 0 0}
.log .l:target{background:#fff8c5;outline:1px solid #d4a72c}
.log .f{background:#ffebe9}
.log .f:target{background:#ffcecb}
.log a.n{display:inline-block;min-width:5.5em;padding-right:8px;text-align:right;color:var(--mut);text-decoration:none;user-select:none}
.log .t{color:var(--mut)}
.log .g{color:#0550ae}
.log .cut{color:var(--mut);font-style:italic;padding-left:6em}
.filter{margin:6px 0;font:13px system-ui,sans-serif;padding:3px 6px;width:24em}
.legend{color:var(--mut);font-size:12px}
";

/// The filter: shows only the log lines containing the box's text (case-insensitive); the
/// page's `?filter=TEXT` fills it in (a filtered view can be linked). Without the script every
/// line shows and the box stays hidden.
const SCRIPT: &str = "
(function(){
var initial=new URLSearchParams(location.search).get('filter')||'';
document.querySelectorAll('input.filter').forEach(function(box){
  box.hidden=false;
  var log=document.getElementById(box.dataset.log);
  function apply(){
    var q=box.value.toLowerCase();
    log.querySelectorAll('.l').forEach(function(l){
      l.style.display=(!q||l.textContent.toLowerCase().indexOf(q)>=0)?'':'none';
    });
  }
  box.addEventListener('input',apply);
  if(initial){box.value=initial;apply();}
});
})();
";

/// The page for `summary`; `logs[i]` is dataset `i`'s log, if there is one; `files` are the
/// files linked from the header.
pub fn render(summary: &JobSummary, logs: &[Option<LogText>], files: &[String]) -> String {
    let mut anchors: Vec<String> = Vec::new();
    for d in &summary.datasets {
        let mut a = anchor(&d.name);
        if anchors.contains(&a) {
            a = format!("{a}-{}", anchors.len());
        }
        anchors.push(a);
    }
    let views: Vec<Option<View<'_>>> = summary
        .datasets
        .iter()
        .zip(logs.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(d, log)| {
            log.and_then(Option::as_ref)
                .map(|l| view(&l.text, &d.migrations))
        })
        .collect();

    let mut out = String::with_capacity(64 * 1024);
    let title = format!("{} — {}", summary.project, first_line(&summary.result));
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&title)
    );
    header(&mut out, summary, files);
    out.push_str("<main>\n");
    datasets_table(&mut out, summary, &anchors, &views);
    for (i, d) in summary.datasets.iter().enumerate() {
        let log = logs.get(i).and_then(Option::as_ref);
        dataset_section(&mut out, d, &anchors[i], views[i].as_ref(), log);
    }
    out.push_str("</main>\n<script>");
    out.push_str(SCRIPT);
    out.push_str("</script>\n</body>\n</html>\n");
    out
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// `ok`, `warn` or `bad`: the verdict's colour.
fn verdict_class(result: &str) -> &'static str {
    if result == messages::SUCCESS {
        "ok"
    } else if !result.is_empty() && result.lines().all(messages::is_warning) {
        "warn"
    } else {
        "bad"
    }
}

fn header(out: &mut String, summary: &JobSummary, files: &[String]) {
    let _ = write!(
        out,
        "<header>\n<h1>{} <span class=\"meta\">gate-real-db-upgrade</span></h1>\n\
         <div class=\"verdict {}\" id=\"verdict\">{}</div>\n",
        escape(&summary.project),
        verdict_class(&summary.result),
        escape(&summary.result)
    );
    let shown = [
        "commit",
        "ZUUL_CHANGE",
        "ZUUL_PATCHSET",
        "ZUUL_REF",
        "ZUUL_BRANCH",
        "ZUUL_PIPELINE",
    ];
    let mut parts = Vec::new();
    for k in shown {
        if let Some(v) = summary.change.get(k) {
            parts.push(format!("{}: <code>{}</code>", escape(k), escape(v)));
        }
    }
    if !parts.is_empty() {
        let _ = writeln!(out, "<p class=\"meta\">{}</p>", parts.join(" · "));
    }
    let links: Vec<String> = files
        .iter()
        .map(|f| format!("<a href=\"{0}\">{0}</a>", escape(f)))
        .collect();
    let _ = writeln!(
        out,
        "<p class=\"meta\">files: {}</p>\n</header>",
        links.join(" · ")
    );
}

fn seconds(ms: i64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let s = ms as f64 / 1000.0;
    format!("{s:.3} s")
}

fn limit(l: Option<f64>) -> String {
    l.map_or_else(|| "no limit".into(), |l| format!("{l} s"))
}

fn migration_name(m: &MigrationSummary) -> String {
    format!("{}→{}", m.from, m.to)
}

/// The fields of a migration the fixed columns show; every other field is shown generically.
const KNOWN_FIELDS: [&str; 10] = [
    "phase",
    "from",
    "to",
    "description",
    "start",
    "end",
    "duration_ms",
    "limit_seconds",
    "status",
    "messages",
];

/// The fields of the observation, which [`observation_fields`] says in words.
const OBSERVATION_FIELDS: [&str; 4] = ["counters", "locks", "rewrites", "observation_gaps"];

/// What was observed of migration `m`, for a reviewer: the work (`read N, changed N, WAL N B`),
/// each table's strongest lock and longest blocking hold, the rewrites with their sizes, and
/// what was not observed; a figure with a gap is marked `(partial)`.
fn observation_fields(m: &MigrationSummary) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    if !m.counters.is_empty() || m.gap_in("counters") {
        out.push(("work".into(), Value::from(m.marked(m.work(), "counters"))));
    }
    if !m.locks.is_empty() {
        let lines: Vec<String> = m
            .locks
            .iter()
            .map(|l| {
                let mut line = format!("{} on {}", l.strongest, l.table);
                if let Some(h) = &l.longest_blocking {
                    if h.seconds > 0.0 {
                        let _ = write!(line, ", blocking for {:.1} s", h.seconds);
                    } else {
                        line.push_str(", blocking in one sample (under an interval)");
                    }
                    if h.mode != l.strongest {
                        let _ = write!(line, " ({} held all along)", h.mode);
                    }
                }
                if l.waited {
                    line.push_str(", a session waited for it");
                }
                line
            })
            .collect();
        let text = lines.join("\n");
        out.push(("locks".into(), Value::from(m.marked(text, "locks"))));
    }
    if !m.rewrites.is_empty() {
        let lines: Vec<String> = m
            .rewrites
            .iter()
            .map(|r| {
                format!(
                    "rewrote {}",
                    super::rewrite_text(&r.table, r.bytes, r.certain)
                )
            })
            .collect();
        out.push((
            "rewrites".into(),
            Value::from(m.marked(lines.join("\n"), "rewrites")),
        ));
    }
    if !m.observation_gaps.is_empty() {
        let lines: Vec<String> = m
            .observation_gaps
            .iter()
            .map(|g| {
                format!(
                    "{} not observed for {:.1} s{}: {}",
                    g.part,
                    g.seconds,
                    if g.ongoing { " (to its end)" } else { "" },
                    g.why
                )
            })
            .collect();
        out.push(("not observed".into(), Value::from(lines.join("\n"))));
    }
    out
}

/// A migration's fields beyond [`KNOWN_FIELDS`], those holding something.
fn extra_fields(m: &MigrationSummary) -> Vec<(String, Value)> {
    match serde_json::to_value(m) {
        Ok(Value::Object(map)) => map
            .into_iter()
            .filter(|(k, v)| !KNOWN_FIELDS.contains(&k.as_str()) && !is_empty_value(v))
            .collect(),
        _ => Vec::new(),
    }
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// A JSON value as compact text: objects `k v, k v`, arrays one item per line.
fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(value_text).collect::<Vec<_>>().join("\n"),
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                Value::Object(_) => format!("{k} ({})", value_text(v)),
                _ => format!("{k} {}", value_text(v)),
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// A definition list of `fields`.
fn fields_list(fields: &[(String, Value)]) -> String {
    if fields.is_empty() {
        return String::new();
    }
    let mut out = String::from("<dl class=\"kv\">");
    for (k, v) in fields {
        let _ = write!(
            out,
            "<dt>{}</dt><dd style=\"white-space:pre-line\">{}</dd>",
            escape(k),
            escape(&value_text(v))
        );
    }
    out.push_str("</dl>");
    out
}

/// What a dataset's migrations observed, over all of them, in words: the work summed
/// (`read N, changed N, WAL N B`), the longest blocking lock hold, every rewrite, how many
/// gaps; any other field (not known to this page) summed per key when it holds numbers, else
/// counted.
fn observed(d: &DatasetSummary) -> Vec<(String, Value)> {
    let mut work: BTreeMap<String, i64> = BTreeMap::new();
    let mut longest: Option<(f64, String)> = None;
    let mut rewrites = Vec::new();
    let mut gaps = 0;
    let mut sums: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut lists: BTreeMap<String, usize> = BTreeMap::new();
    for m in &d.migrations {
        for (k, n) in &m.counters {
            *work.entry(k.clone()).or_default() += n;
        }
        for l in &m.locks {
            let Some(h) = &l.longest_blocking else {
                continue;
            };
            if longest.as_ref().is_none_or(|(best, _)| h.seconds > *best) {
                let text = format!(
                    "{} on {} for {:.1} s ({})",
                    h.mode,
                    l.table,
                    h.seconds,
                    migration_name(m)
                );
                longest = Some((h.seconds, text));
            }
        }
        for r in &m.rewrites {
            rewrites.push(format!(
                "{}: {}",
                migration_name(m),
                super::rewrite_text(&r.table, r.bytes, r.certain)
            ));
        }
        gaps += m.observation_gaps.len();
        for (field, v) in extra_fields(m) {
            if OBSERVATION_FIELDS.contains(&field.as_str()) {
                continue;
            }
            match &v {
                Value::Object(map) if map.values().all(Value::is_number) => {
                    let sum = sums.entry(field).or_default();
                    for (k, n) in map {
                        *sum.entry(k.clone()).or_default() += n.as_f64().unwrap_or(0.0);
                    }
                }
                Value::Array(items) => *lists.entry(field).or_default() += items.len(),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    if !work.is_empty() {
        out.push((
            "work, all migrations".into(),
            Value::from(super::work_text(&work)),
        ));
    }
    if d.migrations.iter().any(|m| !m.locks.is_empty()) {
        let text = longest.map_or_else(|| "none blocking".to_string(), |(_, t)| t);
        out.push(("longest blocking lock".into(), Value::from(text)));
    }
    if !rewrites.is_empty() {
        out.push(("rewrites".into(), Value::from(rewrites.join("\n"))));
    }
    if gaps > 0 {
        out.push((
            "not observed".into(),
            Value::from(format!(
                "{gaps} gap(s): the figures marked (partial) are incomplete"
            )),
        ));
    }
    for (field, sum) in sums {
        let map: serde_json::Map<String, Value> = sum
            .into_iter()
            .map(|(k, n)| {
                let v = if n.fract() == 0.0 && n.abs() < 9.0e15 {
                    #[allow(clippy::cast_possible_truncation)]
                    Value::from(n as i64)
                } else {
                    Value::from(n)
                };
                (k, v)
            })
            .collect();
        out.push((format!("{field} (sum)"), Value::Object(map)));
    }
    for (field, n) in lists {
        out.push((field, Value::String(format!("{n} entries"))));
    }
    out
}

fn observed_cell(d: &DatasetSummary) -> String {
    let fields = observed(d);
    if fields.is_empty() {
        "<span class=\"meta\">nothing observed</span>".into()
    } else {
        fields_list(&fields)
    }
}

/// The slowest migration, against its limit.
fn slowest(d: &DatasetSummary) -> String {
    match d
        .migrations
        .iter()
        .filter_map(|m| m.duration_ms.map(|ms| (ms, m)))
        .max_by_key(|(ms, _)| *ms)
    {
        Some((ms, m)) => format!(
            "{} {} / {}",
            migration_name(m),
            seconds(ms),
            limit(m.limit_seconds)
        ),
        None => "-".into(),
    }
}

fn datasets_table(
    out: &mut String,
    summary: &JobSummary,
    anchors: &[String],
    views: &[Option<View<'_>>],
) {
    out.push_str(
        "<h2 id=\"datasets\">Datasets</h2>\n<table class=\"datasets\">\n<thead><tr>\
         <th>dataset</th><th>status</th><th>engine</th><th>migrations run</th>\
         <th>slowest against its limit</th><th>observed</th></tr></thead>\n<tbody>\n",
    );
    if summary.datasets.is_empty() {
        out.push_str("<tr><td colspan=\"6\">no dataset ran</td></tr>\n");
    }
    for (i, d) in summary.datasets.iter().enumerate() {
        let a = &anchors[i];
        let passed = d.result_lines.is_empty();
        let word = if passed {
            "passed"
        } else if d.result_lines.iter().all(|l| messages::is_warning(l)) {
            "warning"
        } else {
            "failed"
        };
        let mut status = format!("<span class=\"{word}\">{word}</span>");
        if !passed {
            status.push_str("<ul class=\"fails\">");
            for line in &d.result_lines {
                let _ = write!(status, "<li>{}</li>", escape(line));
            }
            status.push_str("</ul>");
        }
        let failing: Vec<String> = d
            .migrations
            .iter()
            .enumerate()
            .filter(|(_, m)| m.status != MigrationStatus::Ok)
            .map(|(j, m)| {
                let target = views[i]
                    .as_ref()
                    .and_then(|v| v.starts[j])
                    .map_or_else(|| format!("{a}-migrations"), |n| format!("{a}-L{n}"));
                format!(
                    "<a class=\"failing\" href=\"#{}\">{} {}</a>",
                    escape(&target),
                    escape(&migration_name(m)),
                    m.status.as_str()
                )
            })
            .collect();
        if !failing.is_empty() {
            let _ = write!(status, "<div>failing: {}</div>", failing.join(", "));
        }
        let _ = writeln!(
            out,
            "<tr id=\"row-{a}\"><td><a href=\"#{a}\">{}</a></td><td>{status}</td><td>{}</td>\
             <td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(&d.name),
            escape(&d.engine),
            d.migrations.len(),
            escape(&slowest(d)),
            observed_cell(d),
            a = escape(a),
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

fn dataset_section(
    out: &mut String,
    d: &DatasetSummary,
    a: &str,
    view: Option<&View<'_>>,
    log: Option<&LogText>,
) {
    let a = escape(a);
    let _ = writeln!(
        out,
        "<section class=\"dataset\" id=\"{a}\">\n<h2>{} <span class=\"meta\">{} · {} ms · \
         final version {} · expected {}</span></h2>",
        escape(&d.name),
        escape(&d.engine),
        d.duration_ms,
        escape(d.final_version.as_deref().unwrap_or("none")),
        escape(d.expected_version.as_deref().unwrap_or("unchecked")),
    );
    out.push_str(&fields_list(&dataset_fields(d)));
    let starts = view.map(|v| v.starts.as_slice()).unwrap_or(&[]);
    let link = |j: usize| {
        starts
            .get(j)
            .copied()
            .flatten()
            .map(|n| format!("{a}-L{n}"))
    };
    let _ = writeln!(out, "<h3>Timeline</h3>");
    timeline(out, d, &link);
    migrations_table(out, d, &a, &link);
    let _ = writeln!(out, "<h3 id=\"{a}-log\">Log</h3>");
    match (view, log) {
        (Some(v), Some(l)) => log_viewer(out, &a, v, l),
        _ => out.push_str("<p class=\"meta\">no log</p>\n"),
    }
    out.push_str("</section>\n");
}

/// A dataset's fields beyond its heading: how its database was made and where its work was
/// counted in words, the gaps when there were some, every other field (config, seed, …)
/// generically.
fn dataset_fields(d: &DatasetSummary) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    if let Some(p) = &d.provisioning {
        let how = match &p.golden {
            Some(golden) => format!("{} of the golden copy {golden}", p.method),
            None => p.method.clone(),
        };
        out.push((
            "database made by".into(),
            Value::from(format!("{how}, in {:.3} s", p.seconds)),
        ));
    }
    if let (Some(source), Some(scope)) = (&d.counters_source, &d.counters_scope) {
        out.push((
            "work counted from".into(),
            Value::from(format!("{source} (scope: {scope})")),
        ));
    }
    if d.observation_gaps > 0 {
        out.push((
            "observation gaps".into(),
            Value::from(format!(
                "{}: the figures marked (partial) are incomplete",
                d.observation_gaps
            )),
        ));
    }
    let known = [
        "name",
        "engine",
        "result_lines",
        "duration_ms",
        "final_version",
        "expected_version",
        "migrations",
        "provisioning",
        "counters_source",
        "counters_scope",
        "observation_gaps",
    ];
    if let Ok(Value::Object(map)) = serde_json::to_value(d) {
        out.extend(
            map.into_iter()
                .filter(|(k, v)| !known.contains(&k.as_str()) && !is_empty_value(v)),
        );
    }
    out
}

/// The timeline: a bar per migration on one time scale, its limit a tick; failing bars red and
/// linked to their start line.
fn timeline(out: &mut String, d: &DatasetSummary, link: &dyn Fn(usize) -> Option<String>) {
    if d.migrations.is_empty() {
        out.push_str("<p class=\"meta\">no migration ran</p>\n");
        return;
    }
    #[allow(clippy::cast_precision_loss)]
    let scale_ms = d
        .migrations
        .iter()
        .flat_map(|m| {
            [
                m.duration_ms.map(|ms| ms as f64),
                m.limit_seconds.map(|l| l * 1000.0),
            ]
        })
        .flatten()
        .fold(1.0_f64, f64::max);
    let (label_w, bar_w, row_h, text_w) = (170.0, 560.0, 18.0, 150.0);
    let width = label_w + bar_w + text_w;
    #[allow(clippy::cast_precision_loss)]
    let height = row_h * d.migrations.len() as f64 + 22.0;
    let _ = writeln!(
        out,
        "<svg class=\"tl\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" \
         height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" \
         aria-label=\"migration durations against their limits\">"
    );
    for (j, m) in d.migrations.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let y = row_h * j as f64;
        #[allow(clippy::cast_precision_loss)]
        let ms = m.duration_ms.map_or(scale_ms, |ms| ms as f64);
        let w = (ms / scale_ms * bar_w).max(1.5);
        let bad = m.status != MigrationStatus::Ok;
        let tip = format!(
            "{} {}: {} against {}{}",
            m.phase,
            migration_name(m),
            m.duration_ms.map_or_else(|| "never ended".into(), seconds),
            limit(m.limit_seconds),
            if bad {
                format!(" ({})", m.status.as_str())
            } else {
                String::new()
            }
        );
        let mut row = format!(
            "<g class=\"mig{}\" data-status=\"{}\"><title>{}</title>\
             <text x=\"0\" y=\"{:.1}\">{}</text>\
             <rect class=\"{}\" x=\"{label_w}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\"/>",
            if bad { " failing" } else { "" },
            m.status.as_str(),
            escape(&tip),
            y + 13.0,
            escape(&truncate(&migration_name(m), 22)),
            if bad { "bad" } else { "ok" },
            y + 3.0,
            row_h - 6.0,
        );
        if let Some(l) = m.limit_seconds {
            let x = label_w + l * 1000.0 / scale_ms * bar_w;
            let _ = write!(
                row,
                "<line class=\"lim\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
                y + 1.0,
                y + row_h - 1.0
            );
        }
        let _ = write!(
            row,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}{}</text></g>",
            label_w + bar_w + 6.0,
            y + 13.0,
            escape(&m.duration_ms.map_or_else(|| "never ended".into(), seconds)),
            if bad { " ✗" } else { "" }
        );
        match link(j).filter(|_| bad) {
            Some(target) => {
                let _ = writeln!(out, "<a href=\"#{}\">{row}</a>", escape(&target));
            }
            None => {
                let _ = writeln!(out, "{row}");
            }
        }
    }
    #[allow(clippy::cast_possible_truncation)]
    let scale_text = seconds(scale_ms as i64);
    #[allow(clippy::cast_precision_loss)]
    let axis_y = row_h * d.migrations.len() as f64 + 4.0;
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{label_w}\" x2=\"{:.1}\" y1=\"{axis_y:.1}\" y2=\"{axis_y:.1}\"/>\
         <text x=\"{label_w}\" y=\"{:.1}\">0</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n</svg>",
        label_w + bar_w,
        axis_y + 14.0,
        label_w + bar_w,
        axis_y + 14.0,
        escape(&scale_text),
    );
    out.push_str(
        "<p class=\"legend\">bar: the migration's duration · black tick: its limit · red: too \
         long or never ended (linked to its line in the log)</p>\n",
    );
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut t: String = text.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

fn migrations_table(
    out: &mut String,
    d: &DatasetSummary,
    a: &str,
    link: &dyn Fn(usize) -> Option<String>,
) {
    if d.migrations.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "<table class=\"migrations\" id=\"{a}-migrations\">\n<thead><tr><th>phase</th>\
         <th>migration</th><th>description</th><th>start</th><th>duration</th><th>limit</th>\
         <th>status</th><th>details</th></tr></thead>\n<tbody>"
    );
    for (j, m) in d.migrations.iter().enumerate() {
        let name = escape(&migration_name(m));
        let name = match link(j) {
            Some(t) => format!("<a href=\"#{}\">{name}</a>", escape(&t)),
            None => name,
        };
        let mut details = observation_fields(m);
        details.extend(
            extra_fields(m)
                .into_iter()
                .filter(|(k, _)| !OBSERVATION_FIELDS.contains(&k.as_str())),
        );
        if !m.messages.is_empty() {
            details.insert(0, ("messages".into(), Value::from(m.messages.clone())));
        }
        let _ = writeln!(
            out,
            "<tr data-status=\"{st}\"><td>{}</td><td>{name}</td><td>{}</td><td>{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"st-{st}\">{st}</td>\
             <td>{}</td></tr>",
            escape(&m.phase),
            escape(&m.description),
            escape(&m.start),
            m.duration_ms.map_or_else(|| "-".into(), seconds),
            escape(&limit(m.limit_seconds)),
            fields_list(&details),
            st = m.status.as_str(),
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

fn log_viewer(out: &mut String, a: &str, v: &View<'_>, log: &LogText) {
    let failing: Vec<&ViewLine<'_>> = v.lines.iter().filter(|l| l.failing).collect();
    let _ = writeln!(
        out,
        "<p class=\"meta\">{} lines · the whole file: <a href=\"{f}\">{f}</a></p>",
        v.lines.len(),
        f = escape(&log.file)
    );
    if !failing.is_empty() {
        out.push_str("<p>Failing lines:</p><ul class=\"fails\">");
        for l in failing.iter().take(50) {
            let _ = write!(
                out,
                "<li><a href=\"#{a}-L{n}\">line {n}</a>: <code>{}</code></li>",
                escape(&truncate(l.text, 160)),
                n = l.number
            );
        }
        if failing.len() > 50 {
            let _ = write!(out, "<li>… and {} more</li>", failing.len() - 50);
        }
        out.push_str("</ul>\n");
    }
    let _ = writeln!(
        out,
        "<input class=\"filter\" type=\"search\" placeholder=\"filter the log\" \
         aria-label=\"filter the log\" data-log=\"{a}-lines\" hidden>\n\
         <div class=\"log\" id=\"{a}-lines\">"
    );
    let total = v.lines.len();
    let mut skipped = 0usize;
    for l in &v.lines {
        let kept = l.number <= HEAD_LINES || l.number > total.saturating_sub(TAIL_LINES);
        if !kept && !l.failing {
            skipped += 1;
            continue;
        }
        if skipped > 0 {
            let _ = writeln!(
                out,
                "<span class=\"cut\">… {skipped} lines not shown (see {})</span>",
                escape(&log.file)
            );
            skipped = 0;
        }
        let _ = write!(
            out,
            "<span class=\"l{}\" id=\"{a}-L{n}\"><a class=\"n\" href=\"#{a}-L{n}\">{n}</a>",
            if l.failing { " f" } else { "" },
            n = l.number
        );
        if !l.time.is_empty() {
            let _ = write!(
                out,
                "<span class=\"t\">{}</span> <span class=\"g\">[{}]</span> ",
                escape(l.time),
                escape(l.tag)
            );
        }
        let _ = writeln!(out, "{}</span>", escape(l.text));
    }
    if skipped > 0 {
        let _ = writeln!(
            out,
            "<span class=\"cut\">… {skipped} lines not shown</span>"
        );
    }
    out.push_str("</div>\n");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::report::{HoldSummary, LockSummary, SCHEMA};

    fn migration(
        from: &str,
        to: &str,
        start: &str,
        ms: Option<i64>,
        limit: f64,
    ) -> MigrationSummary {
        MigrationSummary {
            phase: "change".into(),
            from: from.into(),
            to: to.into(),
            description: "<b>desc</b>".into(),
            start: start.into(),
            end: None,
            duration_ms: ms,
            limit_seconds: Some(limit),
            status: match ms {
                None => MigrationStatus::Unfinished,
                #[allow(clippy::cast_precision_loss)]
                Some(ms) if ms as f64 > limit * 1000.0 => MigrationStatus::TooLong,
                Some(_) => MigrationStatus::Ok,
            },
            messages: vec![],
            counters: BTreeMap::from([("Innodb_rows_read".to_string(), 12)]),
            locks: vec![LockSummary {
                table: "orders".into(),
                strongest: "ACCESS EXCLUSIVE".into(),
                longest_blocking: Some(HoldSummary {
                    mode: "ACCESS EXCLUSIVE".into(),
                    seconds: 2.5,
                }),
                waited: false,
            }],
            rewrites: vec![super::super::RewriteSummary {
                table: "orders".into(),
                bytes: 46_347_878,
                certain: true,
            }],
            observation_gaps: vec![],
        }
    }

    fn summary() -> JobSummary {
        JobSummary {
            schema: SCHEMA,
            project: "shop/<script>".into(),
            change: BTreeMap::from([("commit".to_string(), "abc\"def".to_string())]),
            result: "WARNING - Migration 2->3 took too long".into(),
            datasets: vec![DatasetSummary {
                name: "big one/<x>".into(),
                engine: "postgresql".into(),
                database: "db".into(),
                seed: "/s.sql".into(),
                config: "/datasets/big/config.json".into(),
                result_lines: vec!["WARNING - Migration 2->3 took too long".into()],
                duration_ms: 5000,
                final_version: Some("3".into()),
                expected_version: Some("3".into()),
                migrations: vec![
                    migration("1", "2", "2020-01-01 00:00:01,000", Some(500), 10.0),
                    migration("2", "3", "2020-01-01 00:00:01,500", Some(3000), 1.0),
                ],
                provisioning: None,
                counters_source: Some("pg_stat_user_tables".into()),
                counters_scope: Some("database".into()),
                observation_gaps: 0,
            }],
        }
    }

    /// The observation of a migration in words, a figure with a gap marked partial.
    #[test]
    fn observation_is_said_in_words() {
        let mut m = migration("1", "2", "2020-01-01 00:00:01,000", Some(500), 10.0);
        m.counters = BTreeMap::from([
            ("Innodb_rows_read".to_string(), 1000),
            ("Innodb_rows_updated".to_string(), 250),
            ("wal_bytes".to_string(), 4096),
        ]);
        m.locks.push(LockSummary {
            table: "alembic_version".into(),
            strongest: "ROW EXCLUSIVE".into(),
            longest_blocking: None,
            waited: true,
        });
        m.rewrites[0].certain = false;
        m.observation_gaps = vec![super::super::GapSummary {
            part: "locks".into(),
            from: "2020-01-01 00:00:01,100".into(),
            to: "2020-01-01 00:00:01,600".into(),
            seconds: 0.5,
            ongoing: true,
            why: "sampling pg_locks: <connection reset>".into(),
        }];
        let fields: BTreeMap<String, String> = observation_fields(&m)
            .into_iter()
            .map(|(k, v)| (k, value_text(&v)))
            .collect();
        assert_eq!(fields["work"], "read 1000, changed 250, WAL 4096 B");
        assert_eq!(
            fields["locks"],
            "ACCESS EXCLUSIVE on orders, blocking for 2.5 s\n\
             ROW EXCLUSIVE on alembic_version, a session waited for it (partial)"
        );
        assert_eq!(
            fields["rewrites"],
            "rewrote orders (44.2 MB, uncertain: several migrations could have done it, this one is \
             the likeliest)"
        );
        assert_eq!(
            fields["not observed"],
            "locks not observed for 0.5 s (to its end): sampling pg_locks: <connection reset>"
        );
        let mut job = summary();
        job.datasets[0].migrations[0] = m;
        let page = render(&job, &[None], &[]);
        assert!(page.contains("<dt>work</dt>"), "{page}");
        assert!(page.contains("&lt;connection reset&gt;"), "escaped: {page}");
        assert!(
            !page.contains("<dt>counters</dt>"),
            "said in words, not raw: {page}"
        );
        let observed: BTreeMap<String, String> = observed(&job.datasets[0])
            .into_iter()
            .map(|(k, v)| (k, value_text(&v)))
            .collect();
        assert_eq!(
            observed["work, all migrations"],
            "read 1012, changed 250, WAL 4096 B"
        );
        assert_eq!(
            observed["longest blocking lock"],
            "ACCESS EXCLUSIVE on orders for 2.5 s (1→2)"
        );
        assert!(observed["rewrites"].starts_with("1→2: orders (44.2 MB, uncertain"));
        assert!(observed["rewrites"].contains("\n2→3: orders (44.2 MB)"));
        assert!(observed["not observed"].starts_with("1 gap(s)"));
        let mut d = job.datasets[0].clone();
        d.observation_gaps = 1;
        d.provisioning = Some(crate::provisioning::Provisioned {
            method: "clone".into(),
            seconds: 0.1464,
            golden: Some("th_golden_x".into()),
            shared_seconds: 0.0,
        });
        let fields: BTreeMap<String, String> = dataset_fields(&d)
            .into_iter()
            .map(|(k, v)| (k, value_text(&v)))
            .collect();
        assert_eq!(
            fields["database made by"],
            "clone of the golden copy th_golden_x, in 0.146 s"
        );
        assert_eq!(
            fields["work counted from"],
            "pg_stat_user_tables (scope: database)"
        );
        assert!(fields["observation gaps"].starts_with("1: "));
        assert_eq!(fields["seed"], "/s.sql");
        assert!(!fields.contains_key("counters_scope"));
    }

    const LOG: &str = "2020-01-01 00:00:00,100 [command] migrate <url>\n\
        2020-01-01 00:00:01,000 [output] 1 -> 2... \n\
        2020-01-01 00:00:01,500 [output] done\n\
        2020-01-01 00:00:01,500 [output] 2 -> 3... \n\
        2020-01-01 00:00:04,500 [output] done & <ok>\n\
        2020-01-01 00:00:04,600 [exit] exit code 0 after 4.5 s\n";

    #[test]
    fn escapes_everything_from_the_summary_and_the_log() {
        let logs = vec![Some(LogText {
            file: "big one_<x>.log".into(),
            text: LOG.into(),
        })];
        let page = render(&summary(), &logs, &["summary.json".into()]);
        assert!(!page.contains("<script>shop"), "{page}");
        assert!(page.contains("shop/&lt;script&gt;"));
        assert!(page.contains("abc&quot;def"));
        assert!(page.contains("&lt;b&gt;desc&lt;/b&gt;"));
        assert!(page.contains("done &amp; &lt;ok&gt;"));
        assert!(!page.contains("<url>"));
        // One script element: the filter.
        assert_eq!(page.matches("<script").count(), 1);
        assert!(!page.contains("http://") || !page.contains("src=\"http"));
        assert!(!page.contains("<link"));
    }

    #[test]
    fn failing_migrations_are_found_in_the_log_and_linked() {
        let logs = vec![Some(LogText {
            file: "x.log".into(),
            text: LOG.into(),
        })];
        let page = render(&summary(), &logs, &[]);
        let a = anchor("big one/<x>");
        assert_eq!(a, "big_one__x_");
        // 2->3 starts on line 4 (same timestamp as line 3's `done`, but names version 3).
        assert!(page.contains(&format!("href=\"#{a}-L4\"")), "{page}");
        assert!(page.contains(&format!("<span class=\"l f\" id=\"{a}-L4\">")));
        assert!(page.contains(&format!("<span class=\"l\" id=\"{a}-L2\">")));
        // The timeline: two bars, one failing.
        assert_eq!(page.matches("<g class=\"mig").count(), 2);
        assert_eq!(page.matches("<g class=\"mig failing\"").count(), 1);
        // Counters and locks, generically.
        assert!(page.contains("<dt>work, all migrations</dt>"), "{page}");
        assert!(page.contains("read 24"), "{page}");
        assert!(
            page.contains("ACCESS EXCLUSIVE on orders for 2.5 s"),
            "{page}"
        );
        assert!(page.contains("class=\"verdict warn\""));
        // The observation in words in the migrations' table.
        assert!(page.contains("rewrote orders (44.2 MB)"), "{page}");
        assert!(page.contains("read 12"), "{page}");
    }

    #[test]
    fn a_long_log_is_cut_but_keeps_its_failing_lines() {
        let mut text = String::new();
        for i in 0..(HEAD_LINES + TAIL_LINES + 100) {
            let t = if i == HEAD_LINES + 50 {
                "Traceback (most recent call last)"
            } else {
                "fine"
            };
            text.push_str(&format!("2020-01-01 00:00:00,000 [output] {t}\n"));
        }
        let mut s = summary();
        s.datasets[0].migrations.clear();
        let page = render(
            &s,
            &[Some(LogText {
                file: "x.log".into(),
                text,
            })],
            &[],
        );
        let n = HEAD_LINES + 51;
        assert!(page.contains(&format!("id=\"big_one__x_-L{n}\"")));
        assert!(page.contains("… 50 lines not shown"), "cut marker");
        assert!(page.contains("… 49 lines not shown"), "cut marker");
        assert!(!page.contains(&format!("id=\"big_one__x_-L{}\"", HEAD_LINES + 1)));
    }
}
