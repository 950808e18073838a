//! The metrics endpoint of the real daemon behind a real gearmand: builds run the way Zuul
//! runs them move the counters they should, the text is the Prometheus exposition format
//! (version 0.0.4, checked by a strict parser below), and hostile clients of the endpoint
//! (oversized, slow, many, wrong path or method, not HTTP) neither crash the daemon nor hold up
//! its builds.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use turbo_hipster_tests::{
    enqueue, fixture, free_port, test_plugin_jobs, text, Daemon, Fixture, JobServer, PluginDir,
    ServerKind, Setup,
};

struct World {
    server: JobServer,
    _setup: Setup,
    daemon: Daemon,
    metrics: String,
    _plugins: PluginDir,
}

fn world(extra: Value) -> World {
    let plugins = PluginDir::new();
    plugins.add("test_plugin", &fixture(Fixture::TestPlugin));
    let server = JobServer::start(ServerKind::Gearmand);
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut config = json!({
        "gearman_servers": [server.addr()],
        "metrics": {"listen": metrics},
        "jobs": test_plugin_jobs()
    });
    if let (Some(c), Value::Object(e)) = (config.as_object_mut(), extra) {
        for (k, v) in e {
            match (c.get_mut(&k), v) {
                (Some(Value::Array(list)), Value::Array(more)) => list.extend(more),
                (_, v) => {
                    c.insert(k, v);
                }
            }
        }
    }
    let setup = Setup::new(plugins.path(), config);
    let daemon = Daemon::start(&setup);
    server.wait_registered("build:ok", Duration::from_secs(20));
    World {
        server,
        _setup: setup,
        daemon,
        metrics,
        _plugins: plugins,
    }
}

/// An HTTP response as read from the socket until the server closed it.
struct Response {
    status: u16,
    head: String,
    body: String,
}

/// Sends `request` as is on a new connection and reads the answer to its end.
fn exchange(addr: &str, request: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    read_response(&mut s)
}

fn read_response(s: &mut TcpStream) -> Response {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response: {raw:?}"));
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 status line: {head:?}"));
    let length: usize = header(head, "content-length").parse().unwrap();
    assert_eq!(length, body.len(), "{head}");
    assert_eq!(header(head, "connection"), "close", "{head}");
    Response {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn header<'a>(head: &'a str, name: &str) -> &'a str {
    head.lines()
        .skip(1)
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .unwrap_or_else(|| panic!("no {name} in {head:?}"))
}

/// `GET /metrics`, answered 200 in the text format, parsed strictly.
fn scrape(w: &World) -> Exposition {
    let r = exchange(
        &w.metrics,
        b"GET /metrics HTTP/1.1\r\nHost: test\r\nAccept: text/plain\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}\n{}", r.head, w.daemon.log_text());
    assert_eq!(
        header(&r.head, "content-type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    Exposition::parse(&r.body).unwrap_or_else(|e| panic!("{e}\nin:\n{}", r.body))
}

/// Scrapes until `ok` holds of the metrics (or panics after `within`).
fn scrape_until(
    w: &World,
    what: &str,
    within: Duration,
    ok: impl Fn(&Exposition) -> bool,
) -> Exposition {
    let start = Instant::now();
    loop {
        let m = scrape(w);
        if ok(&m) {
            return m;
        }
        assert!(
            start.elapsed() < within,
            "never {what} within {within:?}:\n{}\n{}",
            m.text,
            w.daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A parsed exposition: every series (`name{label="value",…}` with the labels sorted) and its
/// value, and each family's type.
struct Exposition {
    text: String,
    series: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    chars.next().is_some_and(ok_first)
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

fn value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if s.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.') => {
            s.parse().map_err(|_| format!("not a number: {s:?}"))
        }
        _ => Err(format!("not a number: {s:?}")),
    }
}

/// `{a="x",b="y"}` → the labels, checked: names, quoting, the three escapes, no repeats.
fn labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut out = BTreeMap::new();
    let Some(mut rest) = s.strip_prefix('{') else {
        return Ok((out, s));
    };
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((out, after));
        }
        let (name, after) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("bad label in {s:?}"))?;
        if !is_name(name, false) || name.starts_with("__") {
            return Err(format!("bad label name {name:?}"));
        }
        let mut v = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated label value in {s:?}")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => v.push('\\'),
                    Some((_, '"')) => v.push('"'),
                    Some((_, 'n')) => v.push('\n'),
                    other => return Err(format!("bad escape {other:?} in {s:?}")),
                },
                Some((_, '\n')) => return Err(format!("raw line feed in {s:?}")),
                Some((_, c)) => v.push(c),
            }
        };
        if out.insert(name.to_string(), v).is_some() {
            return Err(format!("label {name:?} twice in {s:?}"));
        }
        rest = &after[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
            if rest.starts_with('}') {
                // A trailing comma is allowed by the format; ours has none.
                return Err(format!("trailing comma in {s:?}"));
            }
        } else if !rest.starts_with('}') {
            return Err(format!("expected , or }} after a label in {s:?}"));
        }
    }
}

/// A sample: its name, labels and value.
type Sample = (String, BTreeMap<String, String>, f64);
/// A histogram's label set: its buckets (bound, count), `_sum` and `_count`.
type HistogramParts = (Vec<(f64, f64)>, Option<f64>, Option<f64>);

fn key(name: &str, labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

impl Exposition {
    /// Parses the text format strictly: `# HELP` and `# TYPE` at most once per family and
    /// before its samples, every sample in a declared family, a family's samples together,
    /// no series twice, counters not negative, histograms whole and cumulative.
    fn parse(text: &str) -> Result<Self, String> {
        if !text.ends_with('\n') {
            return Err("the text does not end with a line feed".into());
        }
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut helps = BTreeSet::new();
        let mut series = BTreeMap::new();
        let mut done: BTreeSet<String> = BTreeSet::new();
        let mut current: Option<String> = None;
        let mut samples_of: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix('#') {
                let mut parts = comment.trim_start().splitn(3, ' ');
                let (kw, name, rest) = (parts.next(), parts.next(), parts.next());
                match (kw, name) {
                    (Some("HELP"), Some(name)) => {
                        if !is_name(name, true) || !helps.insert(name.to_string()) {
                            return Err(format!("bad or repeated HELP: {line}"));
                        }
                        if rest.is_none_or(str::is_empty) {
                            return Err(format!("empty HELP: {line}"));
                        }
                    }
                    (Some("TYPE"), Some(name)) => {
                        let t = rest.unwrap_or("");
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                            return Err(format!("bad type: {line}"));
                        }
                        if types.insert(name.to_string(), t.to_string()).is_some()
                            || samples_of.contains_key(name)
                        {
                            return Err(format!("TYPE repeated or after samples: {line}"));
                        }
                    }
                    _ => {}
                }
                continue;
            }
            if line.is_empty() {
                return Err("empty line".into());
            }
            let name_end = line.find(['{', ' ']).ok_or(format!("no value: {line}"))?;
            let name = &line[..name_end];
            if !is_name(name, true) {
                return Err(format!("bad metric name: {line}"));
            }
            let (labels, rest) = labels(&line[name_end..])?;
            let rest = rest
                .strip_prefix(' ')
                .ok_or(format!("no space before the value: {line}"))?;
            let mut fields = rest.split(' ');
            let v = value(fields.next().unwrap_or(""))?;
            if let Some(ts) = fields.next() {
                ts.parse::<i64>()
                    .map_err(|_| format!("bad timestamp: {line}"))?;
            }
            if fields.next().is_some() {
                return Err(format!("trailing fields: {line}"));
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    let base = name.strip_suffix(s)?;
                    (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
                })
                .unwrap_or(name)
                .to_string();
            let Some(kind) = types.get(&family) else {
                return Err(format!("sample of an undeclared family: {line}"));
            };
            if kind == "counter" && (v.is_nan() || v < 0.0) {
                return Err(format!("a counter below 0: {line}"));
            }
            if current.as_deref() != Some(family.as_str()) {
                if let Some(c) = current.take() {
                    done.insert(c);
                }
                if done.contains(&family) {
                    return Err(format!("samples of {family} are not together: {line}"));
                }
                current = Some(family.clone());
            }
            if series.insert(key(name, &labels), v).is_some() {
                return Err(format!("series twice: {line}"));
            }
            samples_of
                .entry(family)
                .or_default()
                .push((name.to_string(), labels, v));
        }
        for (family, kind) in &types {
            if kind == "histogram" {
                check_histogram(
                    family,
                    samples_of.get(family).map_or(&[][..], Vec::as_slice),
                )?;
            }
        }
        Ok(Exposition {
            text: text.to_string(),
            series,
            types,
        })
    }

    /// The value of `name{labels}`, which must exist.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let k = key(name, &labels);
        *self
            .series
            .get(&k)
            .unwrap_or_else(|| panic!("no series {k} in:\n{}", self.text))
    }

    /// Every series of `name`, as (labels, value).
    fn all(&self, name: &str) -> Vec<(String, f64)> {
        let prefix = format!("{name}{{");
        self.series
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// Per label set: buckets with increasing `le` and non-decreasing counts, a `+Inf` bucket equal
/// to `_count`, and a `_sum`.
fn check_histogram(family: &str, samples: &[Sample]) -> Result<(), String> {
    let mut groups: BTreeMap<String, HistogramParts> = BTreeMap::new();
    for (name, labels, v) in samples {
        let mut rest = labels.clone();
        let le = rest.remove("le");
        let g = groups.entry(key(family, &rest)).or_default();
        match (name.strip_prefix(family), le) {
            (Some("_bucket"), Some(le)) => g.0.push((value(&le)?, *v)),
            (Some("_sum"), None) => g.1 = Some(*v),
            (Some("_count"), None) => g.2 = Some(*v),
            _ => {
                return Err(format!(
                    "stray sample {name} {labels:?} of histogram {family}"
                ))
            }
        }
    }
    for (k, (buckets, sum, count)) in groups {
        let (Some(_), Some(count)) = (sum, count) else {
            return Err(format!("{k}: no _sum or _count"));
        };
        for pair in buckets.windows(2) {
            if pair[1].0 <= pair[0].0 || pair[1].1 < pair[0].1 {
                return Err(format!("{k}: buckets not increasing: {buckets:?}"));
            }
        }
        match buckets.last() {
            Some((le, n)) if le.is_infinite() && *n == count => {}
            _ => {
                return Err(format!(
                    "{k}: no +Inf bucket equal to _count {count}: {buckets:?}"
                ))
            }
        }
    }
    Ok(())
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Submits `data` to `function` with the real client, as a (hostile) Zuul might; the events.
fn submit_raw(
    port: u16,
    function: &str,
    data: Vec<u8>,
) -> Vec<turbo_hipster::gearman::client::JobEvent> {
    use turbo_hipster::gearman::client::{Client, Priority};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::connect("127.0.0.1", port).await.unwrap();
        let job = client
            .submit(
                function,
                &turbo_hipster::zuul::random_uuid_hex(),
                data,
                Priority::Normal,
            )
            .await
            .unwrap();
        job.wait().await.unwrap()
    })
}

#[test]
fn builds_move_the_counters_and_the_text_is_the_exposition_format() {
    let mut w = world(json!({
        "max_packet_bytes": 4096,
        "plugins": ["no_such_plugin"],
        "jobs": [{"name": "build:broken", "plugin": "test_plugin", "mode": "bad_config"}]
    }));
    let server = w.server.addr();
    let before = now();

    // At the start: what the daemon serves, its server up, nothing counted.
    let m = scrape(&w);
    assert_eq!(
        m.get(
            "turbo_hipster_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("sdk_version", turbo_hipster_sdk::SDK_VERSION)
            ]
        ),
        1.0
    );
    assert_eq!(
        m.get("turbo_hipster_plugin_loaded", &[("plugin", "test_plugin")]),
        1.0
    );
    assert_eq!(
        m.get(
            "turbo_hipster_plugin_loaded",
            &[("plugin", "no_such_plugin")]
        ),
        0.0
    );
    let jobs = ["build:fail", "build:ok", "build:short", "build:wait"];
    let registered: Vec<String> = m
        .all("turbo_hipster_job_registered")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let expected: Vec<String> = jobs
        .iter()
        .map(|j| format!("turbo_hipster_job_registered{{job={j:?},plugin=\"test_plugin\"}}"))
        .collect();
    assert_eq!(registered, expected);
    assert_eq!(
        m.get("turbo_hipster_job_setup_errors", &[]),
        2.0,
        "{}",
        m.text
    );
    assert_eq!(m.get("turbo_hipster_max_concurrent_jobs", &[]), 1.0);
    let started = m.get("turbo_hipster_start_time_seconds", &[]);
    assert!(
        started <= before + 1.0 && started > before - 120.0,
        "{started} vs {before}"
    );
    assert_eq!(
        m.get("turbo_hipster_gearman_server_up", &[("server", &server)]),
        1.0
    );
    assert_eq!(
        m.get(
            "turbo_hipster_gearman_reconnects_total",
            &[("server", &server)]
        ),
        0.0
    );
    assert!(m
        .all("turbo_hipster_builds_total")
        .iter()
        .all(|(_, v)| *v == 0.0));
    assert_eq!(
        m.all("turbo_hipster_builds_total").len(),
        4 * 5,
        "{}",
        m.text
    );
    assert!(m
        .all("turbo_hipster_build_last_finish_timestamp_seconds")
        .is_empty());
    for (family, kind) in [
        ("turbo_hipster_builds_total", "counter"),
        ("turbo_hipster_builds_running", "gauge"),
        ("turbo_hipster_build_duration_seconds", "histogram"),
    ] {
        assert_eq!(m.types.get(family).map(String::as_str), Some(kind));
    }

    // One build of each outcome, the way Zuul sends them.
    let o = enqueue(&server, "ok", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = enqueue(&server, "fail", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = enqueue(&server, "short", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let addr = server.clone();
    let stopped = std::thread::spawn(move || enqueue(&addr, "wait", &["--stop-after", "3"]));
    // While it runs, it is counted as running.
    scrape_until(&w, "build:wait running", Duration::from_secs(10), |m| {
        m.get("turbo_hipster_builds_running", &[("job", "build:wait")]) == 1.0
    });
    let o = stopped.join().unwrap();
    assert!(text(&o).contains("result: ABORTED"), "{}", text(&o));
    // Refused before running: parameters that are not an object, unsafe ones.
    for data in [
        b"[1, 2]".to_vec(),
        json!({"ZUUL_PROJECT": "../../etc"})
            .to_string()
            .into_bytes(),
    ] {
        let events = submit_raw(w.server.port, "build:ok", data);
        assert_eq!(
            events.last(),
            Some(&turbo_hipster::gearman::client::JobEvent::Fail)
        );
    }
    // Too large for max_packet_bytes: refused by the worker itself.
    let events = submit_raw(w.server.port, "build:ok", vec![b' '; 8192]);
    assert_eq!(
        events.last(),
        Some(&turbo_hipster::gearman::client::JobEvent::Fail)
    );

    let m = scrape_until(&w, "every build over", Duration::from_secs(10), |m| {
        m.all("turbo_hipster_builds_running")
            .iter()
            .all(|(_, v)| *v == 0.0)
    });
    let after = now();
    let count = |job: &str, result: &str| {
        m.get(
            "turbo_hipster_builds_total",
            &[("job", job), ("result", result)],
        )
    };
    assert_eq!(count("build:ok", "SUCCESS"), 1.0);
    assert_eq!(count("build:fail", "FAILURE"), 1.0);
    assert_eq!(count("build:short", "SUCCESS"), 1.0);
    assert_eq!(count("build:wait", "ABORTED"), 1.0);
    let total: f64 = m
        .all("turbo_hipster_builds_total")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, 4.0, "{}", m.text);
    let aborted = m.all("turbo_hipster_builds_aborted_total");
    assert_eq!(
        aborted.iter().filter(|(_, v)| *v > 0.0).collect::<Vec<_>>(),
        [&(
            "turbo_hipster_builds_aborted_total{job=\"build:wait\",reason=\"stop\"}".to_string(),
            1.0
        )]
    );
    let refused = m.all("turbo_hipster_builds_refused_total");
    assert_eq!(
        refused.iter().filter(|(_, v)| *v > 0.0).collect::<Vec<_>>(),
        [&(
            "turbo_hipster_builds_refused_total{job=\"build:ok\",reason=\"invalid_parameters\"}"
                .to_string(),
            2.0
        )]
    );
    assert_eq!(
        m.get(
            "turbo_hipster_gearman_oversized_jobs_total",
            &[("server", &server)]
        ),
        1.0
    );
    // Durations: the 1.5 s build in the 5 s bucket, not the 1 s one; one build per job.
    let bucket = |job: &str, le: &str| {
        m.get(
            "turbo_hipster_build_duration_seconds_bucket",
            &[("job", job), ("le", le)],
        )
    };
    assert_eq!(bucket("build:short", "1"), 0.0);
    assert_eq!(bucket("build:short", "5"), 1.0);
    assert_eq!(bucket("build:short", "+Inf"), 1.0);
    assert_eq!(bucket("build:wait", "1"), 0.0, "stopped after 3 s");
    let short_sum = m.get(
        "turbo_hipster_build_duration_seconds_sum",
        &[("job", "build:short")],
    );
    assert!((1.5..5.0).contains(&short_sum), "{short_sum}");
    for job in jobs {
        assert_eq!(
            m.get(
                "turbo_hipster_build_duration_seconds_count",
                &[("job", job)]
            ),
            1.0,
            "{job}"
        );
        let last = m.get(
            "turbo_hipster_build_last_finish_timestamp_seconds",
            &[("job", job)],
        );
        assert!(
            last >= before - 1.0 && last <= after + 1.0,
            "{job}: {last} not in {before}..{after}"
        );
    }
    assert!(!m.text.contains("(unregistered)"), "{}", m.text);

    // The server goes away: down; back: up, each of its two connections (jobs, control)
    // registered again.
    w.server.stop();
    scrape_until(&w, "the server down", Duration::from_secs(10), |m| {
        m.get("turbo_hipster_gearman_server_up", &[("server", &server)]) == 0.0
    });
    w.server.restart();
    let m = scrape_until(&w, "the server up again", Duration::from_secs(20), |m| {
        m.get("turbo_hipster_gearman_server_up", &[("server", &server)]) == 1.0
    });
    assert_eq!(
        m.get(
            "turbo_hipster_gearman_reconnects_total",
            &[("server", &server)]
        ),
        2.0
    );
    let o = enqueue(&server, "ok", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let m = scrape(&w);
    assert_eq!(
        m.get(
            "turbo_hipster_builds_total",
            &[("job", "build:ok"), ("result", "SUCCESS")]
        ),
        2.0
    );
}

#[test]
fn hostile_clients_neither_crash_the_daemon_nor_hold_up_its_builds() {
    let mut w = world(json!({}));
    let addr = w.metrics.clone();

    // Wrong paths, wrong methods, not HTTP at all.
    for (request, status) in [
        (&b"GET / HTTP/1.1\r\n\r\n"[..], 404),
        (b"GET /metricsx HTTP/1.1\r\n\r\n", 404),
        (b"GET /metrics/ HTTP/1.0\r\n\r\n", 404),
        (b"DELETE /x HTTP/1.1\r\n\r\n", 404),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            405,
        ),
        (b"HEAD /metrics HTTP/1.1\r\n\r\n", 405),
        (b"GET /metrics HTTP/2.0\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n", 400),
    ] {
        let r = exchange(&addr, request);
        assert_eq!(
            r.status,
            status,
            "{:?}: {}",
            String::from_utf8_lossy(request),
            r.head
        );
        if status == 405 {
            assert_eq!(header(&r.head, "allow"), "GET");
        }
        assert!(!r.body.contains("turbo_hipster_"), "{}", r.body);
    }
    // A connection closed at once, and one that sends half a request and goes.
    drop(TcpStream::connect(&addr).unwrap());
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /met").unwrap();
    drop(s);

    // Oversized: a request head over 8 KiB, and too many headers.
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    big.resize(9000, b'a');
    assert_eq!(exchange(&addr, &big).status, 431);
    let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    assert_eq!(
        exchange(
            &addr,
            format!("GET /metrics HTTP/1.1\r\n{many}\r\n").as_bytes()
        )
        .status,
        431
    );
    // 16 MiB of it: refused after the first 8 KiB, without reading the rest.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut writer = s.try_clone().unwrap();
    let flood = std::thread::spawn(move || {
        let mut huge = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
        huge.resize(16 << 20, b'a');
        // The server stops reading: this fails once it has closed.
        writer.write_all(&huge).is_ok()
    });
    let mut answer = [0u8; 64];
    let n = s.read(&mut answer).unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 431 "),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );
    assert!(
        !flood.join().unwrap(),
        "the server read 16 MiB of request head"
    );

    // Slow: a byte every 300 ms never makes a request; the server gives up after its 5 s.
    // It must hold one of the endpoint's slots before the idle flood below takes the rest
    // (else it is told 503): it says when it has connected and sent its first bytes, and
    // the flood waits a moment more for the server to have taken it.
    let (connected_tx, connected) = std::sync::mpsc::channel();
    let slow = std::thread::spawn({
        let addr = addr.clone();
        move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let started = Instant::now();
            s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
            let _ = connected_tx.send(());
            let mut got = Vec::new();
            loop {
                let mut buf = [0u8; 512];
                match s.read(&mut buf) {
                    Ok(0) => return (started.elapsed(), String::from_utf8_lossy(&got).to_string()),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
                assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "the slow client was never cut off"
                );
                let _ = s.write_all(b"X");
            }
        }
    });

    // Many: far more idle connections than the endpoint serves at once. The ones over its
    // limit are told 503 at once; the rest hold their slots until the head timeout.
    connected.recv_timeout(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let mut last = TcpStream::connect(&addr).unwrap();
    last.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = read_response(&mut last);
    assert_eq!(r.status, 503, "{}", r.head);

    // Meanwhile builds run as ever.
    let started = Instant::now();
    // (A build stuck behind the idle connections would take 5 s or never end: --timeout.)
    let o = enqueue(&w.server.addr(), "ok", &["--timeout", "60"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a build took {:?}",
        started.elapsed()
    );

    let (cut_after, got) = slow.join().unwrap();
    assert!(got.starts_with("HTTP/1.1 408 "), "{got:?}");
    assert!(
        cut_after >= Duration::from_millis(4500) && cut_after < Duration::from_secs(9),
        "cut off after {cut_after:?}"
    );
    drop(idle);

    // Once the idle ones are gone, scrapes work again and the build is counted.
    let m = scrape_until(&w, "scrapes served again", Duration::from_secs(10), |_| {
        true
    });
    assert_eq!(
        m.get(
            "turbo_hipster_builds_total",
            &[("job", "build:ok"), ("result", "SUCCESS")]
        ),
        1.0
    );
    assert!(
        w.daemon.child.try_wait().unwrap().is_none(),
        "the daemon died:\n{}",
        w.daemon.log_text()
    );
    let log = w.daemon.log_text();
    assert!(!log.contains("panicked"), "{log}");
    let status = w.daemon.terminate(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{status:?}\n{log}");
}

#[test]
fn a_metrics_port_in_use_stops_the_start_with_its_key() {
    let plugins = PluginDir::new();
    plugins.add("test_plugin", &fixture(Fixture::TestPlugin));
    let server = JobServer::start(ServerKind::Gearmand);
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap().to_string();
    let setup = Setup::new(
        plugins.path(),
        json!({
            "plugins": ["test_plugin"],
            "gearman_servers": [server.addr()],
            "metrics": {"listen": listen},
        }),
    );
    let expected =
        format!("metrics.listen: cannot serve metrics on {listen}: Address already in use");
    // In the foreground and with -b (the parent hears why its child did not start).
    for args in [&[][..], &["-b"][..]] {
        let started = Instant::now();
        let out = setup.run(args);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {t}");
        assert!(t.contains(&expected), "{args:?}: {t}");
        assert!(started.elapsed() < Duration::from_secs(20), "{args:?}");
    }
    // Nothing registered with the server.
    assert!(
        server
            .status()
            .iter()
            .all(|(_, _, _, workers)| *workers == 0),
        "{:?}",
        server.status()
    );
    // check-config: a warning (it may be the running daemon's port), not an error.
    let out = setup.run(&["check-config"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "warning: {}: metrics.listen: cannot listen on {listen}: Address already in use",
            setup.config.display()
        )),
        "{t}"
    );
    drop(held);
    let out = setup.run(&["check-config"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("metrics.listen"), "{}", text(&out));
}

/// The parser above is what makes the other tests' format check worth anything: it refuses
/// what the format does not allow.
#[test]
fn the_exposition_parser_refuses_what_the_format_does_not_allow() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n\
                # HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n\
                h_sum 3.5\nh_count 2\n";
    let m = Exposition::parse(good).unwrap();
    assert_eq!(m.get("a_total", &[("x", "1")]), 2.0);
    assert_eq!(m.get("h_count", &[]), 2.0);
    for bad in [
        "a 1",                                                      // no final line feed
        "a 1\n",                                                    // no TYPE
        "# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n",             // a series twice
        "# TYPE a gauge\na{x=1} 1\n",                               // unquoted value
        "# TYPE a gauge\na{x=\"\\t\"} 1\n",                         // bad escape
        "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n",                   // a label twice
        "# TYPE a gauge\na one\n",                                  // not a number
        "# TYPE a gauge\na 1 2 3\n",                                // trailing fields
        "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na{x=\"2\"} 1\n", // a family split
        "# TYPE a gauge\na 1\n# TYPE a gauge\n",                    // TYPE twice
        "# TYPE a_total counter\na_total -1\n",                     // a negative counter
        "# TYPE a gauge\n\na 1\n",                                  // an empty line
        "# TYPE 1a gauge\n1a 1\n",                                  // a bad name
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", // no +Inf
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n", // +Inf ≠ count
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",       // no _sum
    ] {
        assert!(Exposition::parse(bad).is_err(), "accepted: {bad:?}");
    }
}
