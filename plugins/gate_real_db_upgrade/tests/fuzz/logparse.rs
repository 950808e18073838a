//! The migration tool's output (it runs the change's code, so it can print anything) and the
//! original's log format: the parsers never panic, a migration never ends before it starts and
//! no duration is negative, whatever the lines, their order or their timestamps.
//!
//! Targets: the stream parser with each log format fed any lines (made of the pieces the
//! patterns look for, extreme counter values, and anything) at non-decreasing times; the
//! original's real log (`tests/fixtures/original/user_001.log`) with lines dropped, repeated,
//! swapped, garbled, re-timed or cut; any bytes as a log.
//!
//! Corpus (`tests/corpus/logparse/`): logs in the original's format, replayed through
//! `parse_original_log`; `ok-<N>-*` must give N migrations, `any-*` only the invariants.

use std::collections::BTreeMap;

use chrono::{NaiveDateTime, TimeDelta};
use gate_real_db_upgrade::limits;
use gate_real_db_upgrade::logparse::{parse_original_log, LogFormat, ParsedRun, StreamParser};
use proptest::prelude::*;
use turbo_hipster_tests::fuzz;

fn assert_sane(run: &ParsedRun) {
    for m in &run.migrations {
        if let Some(d) = m.duration_ms() {
            assert!(d >= 0, "negative duration {d} ms: {m:?}");
        }
        // What the result and the limit checks do with it.
        let _ = limits::rows_changed(&m.counters);
        let _ = limits::rows_read(&m.counters);
    }
}

fn formats() -> Vec<(&'static str, LogFormat)> {
    let re = |s: &str| regex::Regex::new(s).unwrap();
    vec![
        ("sqlalchemy-migrate", LogFormat::SqlalchemyMigrate),
        ("alembic", LogFormat::Alembic),
        (
            "regex with end",
            LogFormat::Regex {
                start: re(r"^migrating (?P<from>\S*) to (?P<to>\S*)(?: (?P<description>.*))?"),
                end: Some(re(r"^ok$")),
                final_version: Some(re(r"^version (?P<version>\S+)$")),
            },
        ),
        (
            "regex without end",
            LogFormat::Regex {
                start: re(r"(?P<to>\d+)"),
                end: None,
                final_version: None,
            },
        ),
    ]
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "1",
            "-1",
            "9223372036854775807",
            "-9223372036854775808",
            "99999999999999999999",
            "",
            "ON",
            "1e3",
            "0x10",
        ])
        .prop_map(str::to_string),
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

/// A line of tool output: what the patterns look for, with odd values, or anything.
fn line() -> impl Strategy<Value = String> {
    let counter = prop::sample::select(vec![
        "Innodb_rows_read",
        "Innodb_rows_inserted",
        "Innodb_rows_updated",
        "Innodb_rows_deleted",
        "tup_inserted",
        "tup_updated",
        "tup_deleted",
        "tup_fetched",
        "Innodb_have_atomic_builtins",
    ]);
    prop_oneof![
        3 => (number(), number()).prop_map(|(a, b)| format!("{a} -> {b}... ")),
        2 => Just("done".to_string()),
        1 => (number(), number()).prop_map(|(a, b)| format!("INFO {a} -> {b}... done")),
        3 => (counter, number()).prop_map(|(c, n)| format!("{c}\t{n}")),
        1 => number().prop_map(|n| format!("Final schema version is {n}")),
        2 => (fuzz::hostile_string(), fuzz::hostile_string())
            .prop_map(|(a, b)| format!("Running upgrade {a} -> {b}, {a}")),
        1 => (number(), number()).prop_map(|(a, b)| format!("migrating {a} to {b} x")),
        1 => Just("ok".to_string()),
        1 => number().prop_map(|n| format!("version {n}")),
        1 => Just("ImportError: No module named x".to_string()),
        2 => fuzz::hostile_string(),
    ]
}

/// One thing happening to the parser.
#[derive(Debug, Clone)]
enum Event {
    Line(u32, String),
    Counters(BTreeMap<String, i64>),
    ToolExited(u32),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        8 => (0u32..120_000, line()).prop_map(|(d, l)| Event::Line(d, l)),
        1 => prop::collection::btree_map(
            prop::sample::select(vec!["Innodb_rows_read", "Innodb_rows_updated", "tup_inserted"])
                .prop_map(str::to_string),
            prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX)],
            0..3,
        )
        .prop_map(Event::Counters),
        1 => (0u32..120_000).prop_map(Event::ToolExited),
    ]
}

fn start_time() -> NaiveDateTime {
    NaiveDateTime::parse_from_str("2014-01-16 06:57:33,961", "%Y-%m-%d %H:%M:%S,%3f").unwrap()
}

/// Mutations of a log's lines.
#[derive(Debug, Clone)]
enum LineEdit {
    Drop(usize),
    Repeat(usize),
    Swap(usize),
    Garble(usize, String),
    /// Moves the line's timestamp by this many seconds (backwards too).
    Retime(usize, i32),
}

fn line_edit() -> impl Strategy<Value = LineEdit> {
    prop_oneof![
        (any::<usize>()).prop_map(LineEdit::Drop),
        (any::<usize>()).prop_map(LineEdit::Repeat),
        (any::<usize>()).prop_map(LineEdit::Swap),
        (any::<usize>(), line()).prop_map(|(i, l)| LineEdit::Garble(i, l)),
        (any::<usize>(), -100_000i32..100_000).prop_map(|(i, s)| LineEdit::Retime(i, s)),
    ]
}

fn edit_log(lines: &mut Vec<String>, edit: &LineEdit) {
    if lines.is_empty() {
        return;
    }
    let n = lines.len();
    match edit {
        LineEdit::Drop(i) => {
            lines.remove(i % n);
        }
        LineEdit::Repeat(i) => lines.insert(i % n, lines[i % n].clone()),
        LineEdit::Swap(i) => lines.swap(i % n, (i % n + 1) % n),
        LineEdit::Garble(i, text) => {
            let l = &mut lines[i % n];
            // Keep the timestamp and tag, replace the text.
            let head: String = l.chars().take(33).collect();
            *l = format!("{head}{text}");
        }
        LineEdit::Retime(i, secs) => {
            let l = &mut lines[i % n];
            let stamp: String = l.chars().take(23).collect();
            if let Ok(t) = NaiveDateTime::parse_from_str(&stamp, "%Y-%m-%d %H:%M:%S,%3f") {
                let t = t + TimeDelta::seconds(i64::from(*secs));
                let rest: String = l.chars().skip(23).collect();
                *l = format!("{}{rest}", t.format("%Y-%m-%d %H:%M:%S,%3f"));
            }
        }
    }
}

fn original_lines() -> Vec<String> {
    std::fs::read_to_string(fuzz::original("user_001.log"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

proptest! {
    #![proptest_config(fuzz::config(128))]

    /// Any output, in every format, at non-decreasing times.
    #[test]
    fn stream_parser_any_output(format in 0usize..4, events in prop::collection::vec(event(), 0..40)) {
        let mut all = formats();
        let (_, format) = all.swap_remove(format);
        let mut parser = StreamParser::new(format);
        let mut t = start_time();
        for e in &events {
            match e {
                Event::Line(d, text) => {
                    t += TimeDelta::milliseconds(i64::from(*d));
                    parser.feed(t, text);
                }
                Event::Counters(c) => parser.feed_counters(c),
                Event::ToolExited(d) => {
                    t += TimeDelta::milliseconds(i64::from(*d));
                    parser.tool_exited(t);
                }
            }
        }
        let run = parser.finish(t);
        assert_sane(&run);
        for m in &run.migrations {
            prop_assert!(m.start >= start_time() && m.end.is_none_or(|e| e <= t), "{:?}", m);
        }
    }

}

proptest! {
    // A 52 kB log per case: fewer cases.
    #![proptest_config(fuzz::config(64))]

    /// The original's log, edited.
    #[test]
    fn original_log_edited(edits in prop::collection::vec(line_edit(), 1..12), cut in any::<usize>()) {
        let mut lines = original_lines();
        for e in &edits {
            edit_log(&mut lines, e);
        }
        let mut text = lines.join("\n");
        // Cut anywhere (at a character boundary), as a log being written is.
        let at = cut % (text.len() + 1);
        let at = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        if cut % 4 == 0 {
            text.truncate(at);
        }
        assert_sane(&parse_original_log(&text));
    }

}

proptest! {
    #![proptest_config(fuzz::config(256))]

    /// Any bytes as a log.
    #[test]
    fn any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        assert_sane(&parse_original_log(&String::from_utf8_lossy(&bytes)));
    }
}

#[test]
fn corpus_replays() {
    for (name, bytes) in fuzz::corpus("logparse") {
        let run = parse_original_log(&String::from_utf8_lossy(&bytes));
        assert_sane(&run);
        let mut words = name.split('-');
        match (words.next(), words.next()) {
            (Some("ok"), Some(n)) => {
                assert_eq!(run.migrations.len().to_string(), n, "{name}: {run:?}");
            }
            (Some("any"), _) => {}
            _ => panic!("{name}: corpus files are named ok-<migrations>-* or any-*"),
        }
    }
}

#[test]
fn the_original_log_is_sane() {
    let run = parse_original_log(&original_lines().join("\n"));
    assert_eq!(run.migrations.len(), 5);
    assert_sane(&run);
}
