//! Runs an engine's command-line client (`mysql`, `psql`, `pg_restore`) to load a seed.
//!
//! The client runs in a process group of its own with stdout discarded; its stderr is kept
//! (the last [`STDERR_LINES`] lines) for the error message. A plain seed file is the client's
//! stdin as it is (the client reads it directly; nothing is copied); a gzipped one is
//! decompressed by a thread of ours into a pipe. On cancellation the whole group is killed.
//!
//! # Seeds never leak
//! The clients quote the input they choke on (`near '...'`, psql's `LINE 1: ...` and `^`,
//! pg_restore's `Command was: ...`), and the error ends up in the published `<dataset>.log`:
//! a seed may be production data, or any file the daemon can read. So the stderr is never
//! shown as it is: [`summarise`] keeps only the lines a client's error format is known to
//! start with (`ERROR 1064 (42000) at line 3`, `psql:<stdin>:3: ERROR:`, `pg_restore: error:`),
//! each cut before anything quoted, and counts the rest.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use flate2::read::MultiGzDecoder;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use turbo_hipster_sdk::support::process::Cancellation;

use super::{cancelled, EngineError};

/// How many of the client's last stderr lines an error message carries.
pub(super) const STDERR_LINES: usize = 20;
/// Longer stderr lines are cut to this many bytes.
const STDERR_LINE_BYTES: usize = 1000;
/// How often the waiting thread looks at the cancellation source.
const POLL: Duration = Duration::from_millis(50);

/// Where the client's stdin comes from.
pub(super) enum Input {
    /// The seed file itself.
    Plain(File),
    /// The seed file, gunzipped on the way.
    Gzip(File),
    /// Nothing (`/dev/null`): the client opens the seed itself.
    Nothing,
}

/// Runs the first of `programs` that exists, set up by `configure` (arguments, environment),
/// with `input` as its stdin, to its end.
///
/// # Errors
/// [`EngineError::SeedLoad`] when it cannot start, fails (with its last stderr lines), or the
/// gzipped seed cannot be read to its end; [`EngineError::Other`] when cancelled.
pub(super) fn run(
    programs: &[&str],
    configure: impl Fn(&mut Command),
    input: Input,
    seed: &Path,
    cancel: &dyn Cancellation,
) -> Result<(), EngineError> {
    for program in programs {
        let mut command = Command::new(program);
        configure(&mut command);
        command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        match &input {
            Input::Plain(file) => {
                let file = file
                    .try_clone()
                    .map_err(|e| EngineError::SeedLoad(format!("cannot read seed: {e}")))?;
                command.stdin(Stdio::from(file))
            }
            Input::Gzip(_) => command.stdin(Stdio::piped()),
            Input::Nothing => command.stdin(Stdio::null()),
        };
        match command.spawn() {
            Ok(child) => return supervise(program, child, input, seed, cancel),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(EngineError::SeedLoad(format!(
                    "cannot start {program}: {e}"
                )));
            }
        }
    }
    Err(EngineError::SeedLoad(format!(
        "cannot start {}: not found in PATH",
        programs.join(" or ")
    )))
}

fn supervise(
    program: &str,
    mut child: Child,
    input: Input,
    seed: &Path,
    cancel: &dyn Cancellation,
) -> Result<(), EngineError> {
    let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let kill = |child: &mut Child| {
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = child.wait();
    };
    let thread_failed = |e: io::Error| EngineError::SeedLoad(format!("cannot start a thread: {e}"));

    let stderr = match child.stderr.take().map(spawn_tail) {
        Some(Ok(reader)) => Some(reader),
        Some(Err(e)) => {
            kill(&mut child);
            return Err(thread_failed(e));
        }
        None => None,
    };
    let writer = match (input, child.stdin.take()) {
        (Input::Gzip(file), Some(stdin)) => match spawn_gunzip(file, stdin) {
            Ok(writer) => Some(writer),
            Err(e) => {
                kill(&mut child);
                return Err(thread_failed(e));
            }
        },
        _ => None,
    };

    let mut was_cancelled = false;
    let status: io::Result<ExitStatus> = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => {
                kill(&mut child);
                break Err(e);
            }
        }
        if cancel.wait_cancelled(POLL) {
            was_cancelled = true;
            let _ = killpg(pgid, Signal::SIGKILL);
            break child.wait();
        }
    };

    // The child is gone, so its end of the pipes is closed: both threads finish.
    let written = writer.map(|w| w.join().unwrap_or_else(|_| Err(panicked())));
    let stderr_tail = stderr
        .map(|r| r.join().unwrap_or_default())
        .unwrap_or_default();

    if was_cancelled {
        return Err(cancelled());
    }
    let status =
        status.map_err(|e| EngineError::SeedLoad(format!("waiting for {program} failed: {e}")))?;
    if !status.success() {
        let how = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => status.to_string(),
        };
        let detail = if stderr_tail.is_empty() {
            String::from("(no error output)")
        } else {
            summarise(&stderr_tail)
        };
        // The client says the server went away or is full: not the seed's fault.
        return Err(super::unavailable_or(
            format!(
                "{program} failed ({how}) loading {}: {detail}",
                seed.display()
            ),
            EngineError::SeedLoad,
        ));
    }
    if let Some(Err(e)) = written {
        // The client saw a clean end of input, but the seed was cut short.
        return Err(EngineError::SeedLoad(format!(
            "reading {} failed: {e}",
            seed.display()
        )));
    }
    if !stderr_tail.is_empty() {
        tracing::debug!(
            "{program} loaded {} with messages: {}",
            seed.display(),
            summarise(&stderr_tail)
        );
    }
    Ok(())
}

fn panicked() -> io::Error {
    io::Error::other("the decompressing thread panicked")
}

/// Reads `stderr` to its end; returns its last lines joined by newlines.
fn spawn_tail(stderr: impl Read + Send + 'static) -> io::Result<JoinHandle<String>> {
    thread::Builder::new()
        .name("th-seed-stderr".into())
        .spawn(move || {
            let mut lines: VecDeque<String> = VecDeque::with_capacity(STDERR_LINES);
            for line in BufReader::new(stderr).split(b'\n') {
                let Ok(mut line) = line else { break };
                line.truncate(STDERR_LINE_BYTES);
                let line = String::from_utf8_lossy(&line).trim_end().to_string();
                if line.is_empty() {
                    continue;
                }
                if lines.len() == STDERR_LINES {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
            Vec::from(lines).join("\n")
        })
}

/// Gunzips `file` into `stdin` (closing it at the end); the result says whether the whole
/// seed got through.
fn spawn_gunzip(file: File, mut stdin: ChildStdin) -> io::Result<JoinHandle<io::Result<u64>>> {
    thread::Builder::new()
        .name("th-seed-gunzip".into())
        .spawn(move || {
            let mut decoder = MultiGzDecoder::new(BufReader::with_capacity(1 << 16, file));
            io::copy(&mut decoder, &mut stdin)
        })
}

/// psql's messages (after `psql:<file>:<line>: `) for a server that went away mid-load.
const CONNECTION_LOST: &[&str] = &[
    "server closed the connection unexpectedly",
    "error: connection to server was lost",
    "connection to server was lost",
    "FATAL:  terminating connection due to administrator command",
];

/// The longest summary of one error line.
const SUMMARY_LINE_CHARS: usize = 200;

/// A loader's stderr told without anything it may have quoted from the seed: the lines in a
/// known error format, each as its code, line number and the words before the first quote;
/// the other lines only counted.
pub(crate) fn summarise(stderr: &str) -> String {
    let mut kept: Vec<String> = Vec::new();
    let mut hidden = 0usize;
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        match summarise_line(line) {
            Some(s) if !kept.contains(&s) => kept.push(s),
            Some(_) => {}
            None => hidden += 1,
        }
    }
    if hidden > 0 {
        kept.push(format!(
            "({hidden} other line(s) of error output not shown: they may quote the seed)"
        ));
    }
    kept.join("; ")
}

/// One error line of `mysql`, `psql` or `pg_restore`, summarised; `None` for any other line.
fn summarise_line(line: &str) -> Option<String> {
    let line = line.trim();
    // mysql / mariadb: `ERROR 1064 (42000) at line 3: You have an error ... near '...'`.
    if let Some(rest) = line.strip_prefix("ERROR ") {
        let (head, message) = rest.split_once(": ").unwrap_or((rest, ""));
        let mut words = head.split(' ');
        let code = words.next().filter(|c| is_digits(c))?;
        let state = words
            .next()
            .filter(|s| s.len() == 7 && s.starts_with('(') && s.ends_with(')'))?;
        let at_line = match (words.next(), words.next(), words.next(), words.next()) {
            (None, ..) => String::new(),
            (Some("at"), Some("line"), Some(n), None) if is_digits(n) => format!(" at line {n}"),
            _ => return None,
        };
        let what = if code == "1064" {
            "syntax error".to_string()
        } else {
            unquoted(message)
        };
        return Some(cut(format!("ERROR {code} {state}{at_line}: {what}")));
    }
    // psql without a location: `psql: error: connection to server at "h", port 5432 failed`.
    if let Some(message) = line.strip_prefix("psql: error: ") {
        return Some(cut(format!("psql: error: {}", unquoted(message))));
    }
    // psql: `psql:<stdin>:3: ERROR:  syntax error at or near "..."`.
    if let Some(rest) = line.strip_prefix("psql:") {
        let (_file, rest) = rest.split_once(':')?;
        let (n, rest) = rest.split_once(": ")?;
        if !is_digits(n) {
            return None;
        }
        // The server went away: psql's own words, kept (no seed text in them).
        if let Some(lost) = CONNECTION_LOST.iter().find(|m| rest.starts_with(*m)) {
            return Some(format!("at line {n}: {lost}"));
        }
        let (level, message) = rest.split_once(':')?;
        if !["ERROR", "FATAL", "PANIC"].contains(&level) {
            return None;
        }
        return Some(cut(format!("{level} at line {n}: {}", unquoted(message))));
    }
    // pg_restore: `pg_restore: error: could not execute query: ERROR:  ...`.
    if let Some(rest) = line.strip_prefix("pg_restore: ") {
        let (level, message) = rest.split_once(": ")?;
        if !["error", "fatal", "warning"].contains(&level) {
            return None;
        }
        return Some(cut(format!("pg_restore: {level}: {}", unquoted(message))));
    }
    // psql's or the server's own line without a location: `ERROR:  ...`, `FATAL:  ...`.
    for level in ["ERROR", "FATAL"] {
        if let Some(message) = line.strip_prefix(level).and_then(|r| r.strip_prefix(':')) {
            return Some(cut(format!("{level}: {}", unquoted(message))));
        }
    }
    None
}

/// SQLite's error message for a seed that did not load (`near "...": syntax error`), without
/// what it quotes; SQLite gives no line number.
pub(crate) fn summarise_sqlite(message: &str) -> String {
    let message = message.trim();
    let message = match message.strip_prefix("near \"") {
        Some(rest) => rest.rsplit_once("\": ").map_or("", |(_, what)| what),
        // `no such table: x`: the subject, from the seed, comes after the colon.
        None => message.split(": ").next().unwrap_or(message),
    };
    cut(unquoted(message))
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The words of `message` before anything that may quote the input: a quote, `near`.
fn unquoted(message: &str) -> String {
    let message = message.trim();
    let end = [
        " near ",
        " at or near",
        "'",
        "\"",
        "`",
        "LINE ",
        "Command was",
    ]
    .iter()
    .filter_map(|m| message.find(m))
    .min()
    .unwrap_or(message.len());
    let text = message[..end].trim_end_matches([' ', ':', ',', ';']);
    if text.is_empty() {
        "(message not shown: it quotes the seed)".to_string()
    } else {
        text.to_string()
    }
}

/// At most [`SUMMARY_LINE_CHARS`] printable characters.
fn cut(s: String) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(SUMMARY_LINE_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "TH-SECRET-MARKER";

    #[test]
    fn mysql_errors_keep_code_and_line_and_lose_the_quote() {
        let stderr = format!(
            "ERROR 1064 (42000) at line 3: You have an error in your SQL syntax; check the \
             manual that corresponds to your MariaDB server version for the right syntax to use \
             near '{SECRET} garbage' at line 1"
        );
        assert_eq!(
            summarise(&stderr),
            "ERROR 1064 (42000) at line 3: syntax error"
        );
        let s = summarise(&format!(
            "ERROR 1146 (42S02) at line 7: Table 'db.{SECRET}' doesn't exist"
        ));
        assert_eq!(s, "ERROR 1146 (42S02) at line 7: Table");
        let s = summarise("ERROR 1045 (28000): Access denied for user 'x'@'localhost'");
        assert_eq!(s, "ERROR 1045 (28000): Access denied for user");
    }

    #[test]
    fn psql_errors_lose_the_echoed_line_and_caret() {
        let stderr = format!(
            "psql:<stdin>:3: ERROR:  syntax error at or near \"{SECRET}\"\n\
             LINE 1: {SECRET} this is not sql;\n        ^"
        );
        assert_eq!(
            summarise(&stderr),
            "ERROR at line 3: syntax error; (2 other line(s) of error output not shown: they \
             may quote the seed)"
        );
        let stderr = format!(
            "pg_restore: error: could not execute query: ERROR:  relation \"{SECRET}\" does not exist\n\
             Command was: CREATE TABLE {SECRET} (id int);"
        );
        let s = summarise(&stderr);
        assert!(
            s.starts_with("pg_restore: error: could not execute query: ERROR:  relation;"),
            "{s}"
        );
    }

    #[test]
    fn a_lost_server_is_still_said() {
        let stderr = "psql:<stdin>:5: server closed the connection unexpectedly\n\
                      \tThis probably means the server terminated abnormally\n\
                      psql:<stdin>:5: error: connection to server was lost";
        assert_eq!(
            summarise(stderr),
            "at line 5: server closed the connection unexpectedly; at line 5: error: connection \
             to server was lost; (1 other line(s) of error output not shown: they may quote the \
             seed)"
        );
        let s = summarise("ERROR 2013 (HY000) at line 9: Lost connection to server during query");
        assert_eq!(
            s,
            "ERROR 2013 (HY000) at line 9: Lost connection to server during query"
        );
        let s = summarise(
            "psql: error: connection to server at \"127.0.0.1\", port 1 failed: Connection refused",
        );
        assert_eq!(s, "psql: error: connection to server at");
        let s = summarise(&format!("psql:<stdin>:3: invalid command \\{SECRET}"));
        assert!(!s.contains(SECRET), "{s}");
    }

    #[test]
    fn sqlite_errors_lose_the_quote() {
        let s = summarise_sqlite(&format!("near \"{SECRET}\": syntax error"));
        assert_eq!(s, "syntax error");
        let s = summarise_sqlite(&format!("no such table: {SECRET}"));
        assert_eq!(s, "no such table");
    }

    #[test]
    fn nothing_of_a_hostile_seed_comes_through() {
        // Lines crafted to look like a known format with the marker where a location would be.
        for line in [
            format!("ERROR {SECRET} (42000): x"),
            format!("ERROR 1 (42000) at line {SECRET}: x"),
            format!("psql:<stdin>:{SECRET}: ERROR: x"),
            format!("psql:<stdin>:1: {SECRET}: x"),
            format!("pg_restore: {SECRET}: x"),
            format!("root:{SECRET}:19000:0:99999:7:::"),
            format!("ERROR:  syntax error at or near \"a:9: ERROR: {SECRET}\""),
            format!("psql:<stdin>:1: ERROR:  x near {SECRET}"),
        ] {
            let s = summarise(&line);
            assert!(!s.contains(SECRET), "{line} -> {s}");
        }
    }
}
