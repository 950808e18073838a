//! Timestamped job logs in the original turbo-hipster's format.
//!
//! Every line is `YYYY-MM-DD HH:MM:SS,mmm [<tag>] <text>` in local time, e.g.
//! `2014-01-16 06:57:33,961 [output] Triggered by: https://review.openstack.org/65615`. A line
//! may carry a tag and no text (`2014-01-16 06:58:03,955 [heartbeat]`). The migration plugin and
//! the history tools read these logs back with [`parse_line`].

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Local, NaiveDateTime};

/// The `chrono` format of a log timestamp: `2014-01-16 06:57:33,961`.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S,%3f";

/// Formats a timestamp as the logs write it (`YYYY-MM-DD HH:MM:SS,mmm`, milliseconds truncated).
///
/// ```
/// use chrono::TimeZone;
/// use turbo_hipster_sdk::support::logfile::format_timestamp;
///
/// let t = chrono::Local.with_ymd_and_hms(2014, 1, 16, 6, 57, 33).unwrap()
///     + chrono::Duration::milliseconds(961);
/// assert_eq!(format_timestamp(&t), "2014-01-16 06:57:33,961");
/// ```
pub fn format_timestamp(time: &DateTime<Local>) -> String {
    time.format(TIMESTAMP_FORMAT).to_string()
}

/// The current local time, formatted by [`format_timestamp`].
pub fn now_timestamp() -> String {
    format_timestamp(&Local::now())
}

/// Parses a log timestamp. Accepts `YYYY-MM-DD HH:MM:SS,mmm`, the same with `.` before the
/// fraction, and whole seconds (`YYYY-MM-DD HH:MM:SS`, as some of the original's logs have).
///
/// ```
/// use turbo_hipster_sdk::support::logfile::parse_timestamp;
///
/// let t = parse_timestamp("2014-01-16 06:57:33,961").unwrap();
/// assert_eq!(t.and_utc().timestamp_subsec_millis(), 961);
/// assert!(parse_timestamp("yesterday").is_none());
/// ```
pub fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    let (seconds, fraction) = match text.find([',', '.']) {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let base = NaiveDateTime::parse_from_str(seconds, "%Y-%m-%d %H:%M:%S").ok()?;
    match fraction {
        None => Some(base),
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            // "961" is 961 ms: scale the digits to nanoseconds.
            let digits: u32 = f.parse().ok()?;
            let nanos = digits * 10u32.pow(9 - u32::try_from(f.len()).ok()?);
            Some(base + chrono::Duration::nanoseconds(i64::from(nanos)))
        }
        Some(_) => None,
    }
}

/// One parsed log line: `<timestamp> [<tag>] <text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the line was written (local time, as in the file).
    pub timestamp: NaiveDateTime,
    /// The tag between the brackets (`output`, `heartbeat`, `script exit code = 0`).
    pub tag: String,
    /// The text after the tag, without the single separating space; empty when there is none.
    pub text: String,
}

/// Parses one log line (without its line ending; a trailing `\r` is ignored). Returns `None`
/// for a line that does not start with a timestamp and a bracketed tag (e.g. a continuation
/// of a multi-line message written by some other tool).
///
/// ```
/// use turbo_hipster_sdk::support::logfile::parse_line;
///
/// let line = parse_line("2014-01-16 06:58:03,652 [output]  * branch  -> FETCH_HEAD").unwrap();
/// assert_eq!(line.tag, "output");
/// assert_eq!(line.text, " * branch  -> FETCH_HEAD");
///
/// let line = parse_line("2014-01-16 06:58:04,000 [script exit code = 0]").unwrap();
/// assert_eq!(line.tag, "script exit code = 0");
/// assert_eq!(line.text, "");
/// ```
pub fn parse_line(line: &str) -> Option<LogLine> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    // "YYYY-MM-DD HH:MM:SS" is 19 characters, then an optional fraction, then " [".
    let open = line.find(" [")?;
    if open < 19 {
        return None;
    }
    let timestamp = parse_timestamp(&line[..open])?;
    let rest = &line[open + 2..];
    let close = rest.find(']')?;
    let tag = &rest[..close];
    let after = &rest[close + 1..];
    let text = after.strip_prefix(' ').unwrap_or(after);
    Some(LogLine {
        timestamp,
        tag: tag.to_string(),
        text: text.to_string(),
    })
}

/// A job log file. Each line is written whole with one `write` call, so lines from several
/// threads never interleave and the file is always complete up to the last line (nothing is
/// buffered in the process).
///
/// A log that cannot be written (a full disk) says so once, not once per line: the first
/// failure is logged (`tracing` warning), later ones are only counted, and when the file is
/// dropped one more warning gives the count (`... (repeated N times)`). Every write still
/// returns its error, and [`LogFile::failures`] tells whether lines were lost, so a job can
/// refuse to report success over an incomplete log.
///
/// ```
/// use turbo_hipster_sdk::support::logfile::{parse_line, LogFile};
///
/// let dir = tempfile::tempdir().unwrap();
/// let log = LogFile::create(dir.path().join("job.log")).unwrap();
/// log.line("output", "hello").unwrap();
/// let text = std::fs::read_to_string(log.path()).unwrap();
/// assert_eq!(parse_line(text.lines().next().unwrap()).unwrap().text, "hello");
/// ```
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Mutex<Output>,
}

/// The file and how writing to it went.
#[derive(Debug)]
struct Output {
    file: File,
    /// Writes that failed, and the first failure's message.
    failed: u64,
    first_error: Option<String>,
}

/// Lines lost from a [`LogFile`]: how many writes failed, and the first error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFailures {
    /// Writes that failed (each one or more lines).
    pub count: u64,
    /// The first failure, e.g. `No space left on device (os error 28)`.
    pub first_error: String,
}

impl std::fmt::Display for LogFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (", self.first_error)?;
        match self.count {
            1 => write!(f, "1 write failed)"),
            n => write!(f, "{n} writes failed)"),
        }
    }
}

impl Output {
    fn new(file: File) -> Mutex<Self> {
        Mutex::new(Output {
            file,
            failed: 0,
            first_error: None,
        })
    }
}

impl LogFile {
    /// Creates (or truncates) the log file at `path`.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let file = File::create(&path)?;
        Ok(Self {
            path,
            file: Output::new(file),
        })
    }

    /// Opens the log file at `path` for appending, creating it if needed.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn append(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Self {
            path,
            file: Output::new(file),
        })
    }

    /// The path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `text` tagged `tag`, stamped now. A `text` with several lines is written as
    /// several log lines with the same timestamp.
    ///
    /// # Errors
    /// The write failed.
    pub fn line(&self, tag: &str, text: &str) -> io::Result<()> {
        self.line_at(&Local::now(), tag, text)
    }

    /// Writes `text` tagged `tag` with the given timestamp (e.g. the moment a process printed
    /// it). An empty `text` writes `<timestamp> [<tag>]`.
    ///
    /// # Errors
    /// The write failed.
    pub fn line_at(&self, time: &DateTime<Local>, tag: &str, text: &str) -> io::Result<()> {
        let stamp = format_timestamp(time);
        let mut out = String::with_capacity(stamp.len() + tag.len() + text.len() + 8);
        if text.is_empty() {
            let _ = writeln!(out, "{stamp} [{tag}]");
        } else {
            for part in text.split('\n') {
                let part = part.strip_suffix('\r').unwrap_or(part);
                let _ = writeln!(out, "{stamp} [{tag}] {part}");
            }
        }
        let mut output = self.lock();
        let written = output.file.write_all(out.as_bytes());
        if let Err(e) = &written {
            output.failed += 1;
            if output.first_error.is_none() {
                output.first_error = Some(e.to_string());
                tracing::warn!(
                    "cannot write to {}: {e} (further failures of this log are counted)",
                    self.path.display()
                );
            }
        }
        written
    }

    /// The writes that failed so far (`None` when every line was written).
    pub fn failures(&self) -> Option<LogFailures> {
        let output = self.lock();
        output.first_error.as_ref().map(|first| LogFailures {
            count: output.failed,
            first_error: first.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Output> {
        // A poisoned lock only means another thread panicked mid-write; the file is still usable.
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let output = self.lock();
        if let (Some(first), n @ 2..) = (&output.first_error, output.failed) {
            tracing::warn!(
                "cannot write to {}: {first} (repeated {n} times)",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Timelike};

    #[test]
    fn timestamps_have_milliseconds() {
        let t = Local.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap()
            + chrono::Duration::microseconds(7_999);
        assert_eq!(format_timestamp(&t), "2024-02-29 23:59:59,007");
        let now = now_timestamp();
        assert_eq!(now.len(), 23, "{now}");
        assert_eq!(&now[19..20], ",");
        assert!(now[20..].bytes().all(|b| b.is_ascii_digit()), "{now}");
    }

    #[test]
    fn timestamps_round_trip() {
        let t = Local.with_ymd_and_hms(2014, 1, 16, 6, 57, 33).unwrap()
            + chrono::Duration::milliseconds(961);
        let parsed = parse_timestamp(&format_timestamp(&t)).unwrap();
        assert_eq!(parsed, t.naive_local());
        assert_eq!(parsed.nanosecond(), 961_000_000);
        let whole = parse_timestamp("2014-01-16 06:57:33").unwrap();
        assert_eq!(whole.nanosecond(), 0);
        let dot = parse_timestamp("2014-01-16 06:57:33.5").unwrap();
        assert_eq!(dot.nanosecond(), 500_000_000);
        assert!(parse_timestamp("2014-01-16 06:57:33,").is_none());
        assert!(parse_timestamp("2014-01-16 06:57:33,12a").is_none());
        assert!(parse_timestamp("2014-13-16 06:57:33,123").is_none());
    }

    #[test]
    fn parses_original_lines() {
        let l = parse_line("2014-01-16 06:57:33,961 [output] + [[ ! -e .git ]]").unwrap();
        assert_eq!(l.tag, "output");
        assert_eq!(l.text, "+ [[ ! -e .git ]]");
        assert_eq!(l.timestamp.nanosecond(), 961_000_000);

        let l = parse_line("2014-01-16 06:58:03,955 [heartbeat]").unwrap();
        assert_eq!((l.tag.as_str(), l.text.as_str()), ("heartbeat", ""));

        let l = parse_line("2014-01-16 06:58:04,000 [script exit code = 0]\r").unwrap();
        assert_eq!(
            (l.tag.as_str(), l.text.as_str()),
            ("script exit code = 0", "")
        );

        let l = parse_line("2014-01-16 07:03:44,307 [sqlerr] 140116  7:03:44 [Note] x").unwrap();
        assert_eq!(l.tag, "sqlerr");
        assert_eq!(l.text, "140116  7:03:44 [Note] x");

        let l = parse_line("2014-01-16 06:58:03,000 [output] Innodb_rows_read\t42").unwrap();
        assert_eq!(l.text, "Innodb_rows_read\t42");

        assert!(parse_line("").is_none());
        assert!(parse_line("  continuation [output] x").is_none());
        assert!(parse_line("2014-01-16 06:58:03,000 output x").is_none());
        assert!(parse_line("2014-01-16 06:58:03,000 [output x").is_none());
    }

    #[test]
    fn parses_the_original_fixture() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/original/user_001.log");
        let text = std::fs::read_to_string(&fixture).unwrap();
        let parsed: Vec<LogLine> = text.lines().map(|l| parse_line(l).unwrap()).collect();
        assert!(parsed.iter().filter(|l| l.tag == "output").count() > 600);
        assert!(parsed
            .iter()
            .any(|l| l.tag == "heartbeat" && l.text.is_empty()));
    }

    #[test]
    fn log_file_writes_tagged_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::create(dir.path().join("a.log")).unwrap();
        let t = Local.with_ymd_and_hms(2020, 5, 6, 7, 8, 9).unwrap()
            + chrono::Duration::milliseconds(10);
        log.line_at(&t, "output", "first").unwrap();
        log.line_at(&t, "heartbeat", "").unwrap();
        log.line_at(&t, "output", "two\r\nlines").unwrap();
        log.line("git", "now").unwrap();
        let text = std::fs::read_to_string(log.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            &lines[..4],
            &[
                "2020-05-06 07:08:09,010 [output] first",
                "2020-05-06 07:08:09,010 [heartbeat]",
                "2020-05-06 07:08:09,010 [output] two",
                "2020-05-06 07:08:09,010 [output] lines",
            ]
        );
        let last = parse_line(lines[4]).unwrap();
        assert_eq!((last.tag.as_str(), last.text.as_str()), ("git", "now"));
        drop(log);

        // Appending keeps what is there; creating truncates.
        let log = LogFile::append(dir.path().join("a.log")).unwrap();
        log.line("output", "more").unwrap();
        assert_eq!(
            std::fs::read_to_string(log.path()).unwrap().lines().count(),
            6
        );
        let log = LogFile::create(dir.path().join("a.log")).unwrap();
        log.line("output", "fresh").unwrap();
        assert_eq!(
            std::fs::read_to_string(log.path()).unwrap().lines().count(),
            1
        );
    }

    #[test]
    fn a_full_device_is_reported_once_with_a_count() {
        // /dev/full takes no byte; the log says so, counts, and never panics.
        let log = LogFile::append("/dev/full").unwrap();
        assert_eq!(log.failures(), None);
        for i in 0..1000 {
            assert!(log.line("output", &format!("line {i}")).is_err());
        }
        let failures = log.failures().unwrap();
        assert_eq!(failures.count, 1000);
        assert!(failures.first_error.contains("No space left"), "{failures}");
        assert!(
            failures.to_string().ends_with("(1000 writes failed)"),
            "{failures}"
        );
    }

    #[test]
    fn concurrent_writers_do_not_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::create(dir.path().join("c.log")).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let log = &log;
                s.spawn(move || {
                    for i in 0..200 {
                        log.line(
                            "output",
                            &format!("thread {t} line {i} {}", "x".repeat(200)),
                        )
                        .unwrap();
                    }
                });
            }
        });
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert_eq!(text.lines().count(), 800);
        for line in text.lines() {
            let l = parse_line(line).unwrap();
            assert!(l.text.starts_with("thread "), "{line}");
            assert!(l.text.ends_with(&"x".repeat(200)), "{line}");
        }
    }
}
