//! Runs an engine's command-line client (`mysql`, `psql`, `pg_restore`) to load a seed.
//!
//! The client runs in a process group of its own with stdout discarded; its stderr is kept
//! (the last [`STDERR_LINES`] lines) for the error message. A plain seed file is the client's
//! stdin as it is (the client reads it directly; nothing is copied); a gzipped one is
//! decompressed by a thread of ours into a pipe. On cancellation the whole group is killed.

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
            stderr_tail
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
            "{program} loaded {} with messages: {stderr_tail}",
            seed.display()
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
