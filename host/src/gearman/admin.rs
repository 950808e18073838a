//! The Gearman text admin protocol: `status`, `workers`, `version`, each bounded by a timeout.
//!
//! The admin protocol shares the job port with the binary protocol: a command is one text line,
//! multi-line answers end with a line holding a single `.`, and errors come back as `ERR CODE text`.
//! Zuul uses `status` to decide whether a function is registered (otherwise `NOT_REGISTERED`); we
//! use it for the same check and to probe a server's readiness.
//!
//! Server differences: gearmand answers `version` (`OK 1.1.20`); Zuul's own server (`gear`)
//! ignores it and never replies, so against that server `version` runs into its timeout. Both
//! answer `status` and `workers`, which is why [`wait_until_ready`] probes with `status`.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

use super::error::{Error, Result};

/// Longest admin line accepted.
const MAX_LINE: usize = 64 * 1024;
/// Most lines accepted in one answer (a safety bound, far above any real server's function list).
const MAX_LINES: usize = 1_000_000;

/// One line of `status`: a function and its queue counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionStatus {
    /// Function name as registered (e.g. `build:gate-nova-python27`).
    pub name: String,
    /// Jobs queued or running.
    pub total: u64,
    /// Jobs running.
    pub running: u64,
    /// Connected workers that registered the function.
    pub workers: u64,
}

/// One line of `workers`: a connection and the functions it registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    /// The server-side file descriptor (an opaque number).
    pub fd: String,
    /// The peer address.
    pub address: String,
    /// The client id set with `SET_CLIENT_ID` (`-` when unset).
    pub client_id: String,
    /// Functions registered on that connection.
    pub functions: Vec<String>,
}

/// A connection speaking the admin protocol. Each command is bounded by the timeout given at
/// connect time; after a timeout or a protocol error the connection is unusable and every later
/// call returns [`Error::Closed`] (make a new client).
#[derive(Debug)]
pub struct AdminClient {
    framed: Framed<TcpStream, LinesCodec>,
    timeout: Duration,
    broken: bool,
}

fn line_error(e: LinesCodecError) -> Error {
    match e {
        LinesCodecError::MaxLineLengthExceeded => {
            Error::protocol(format!("admin line longer than {MAX_LINE} bytes"))
        }
        LinesCodecError::Io(e) => Error::Io(e),
    }
}

/// Turns `ERR CODE text` into [`Error::Server`] (a `status` line has tabs, an error line none).
fn check_err(line: &str) -> Result<()> {
    if line.contains('\t') {
        return Ok(());
    }
    if let Some(rest) = line
        .strip_prefix("ERR ")
        .or(if line == "ERR" { Some("") } else { None })
    {
        let rest = rest.trim_start();
        let (code, text) = rest.split_once(' ').unwrap_or((rest, ""));
        return Err(Error::Server {
            code: code.to_string(),
            text: text.replace('+', " "),
        });
    }
    Ok(())
}

impl AdminClient {
    /// Connects to `host:port`; `timeout` bounds the connect and every later command.
    ///
    /// # Errors
    /// [`Error::Timeout`] or [`Error::Io`] when the server cannot be reached.
    pub async fn connect(host: &str, port: u16, timeout_after: Duration) -> Result<Self> {
        let stream = timeout(timeout_after, TcpStream::connect((host, port)))
            .await
            .map_err(|_| Error::Timeout(timeout_after))??;
        stream.set_nodelay(true)?;
        Ok(AdminClient {
            framed: Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE)),
            timeout: timeout_after,
            broken: false,
        })
    }

    /// Sends `command` and reads its answer: one line, or (if `multi_line`) every line up to
    /// the terminating `.` (not included).
    ///
    /// # Errors
    /// [`Error::Server`] for an `ERR` answer, [`Error::Timeout`], [`Error::Closed`] if the server
    /// hung up, [`Error::Protocol`] for an over-long answer.
    pub async fn command(&mut self, command: &str, multi_line: bool) -> Result<Vec<String>> {
        if self.broken {
            return Err(Error::Closed);
        }
        if command.contains(['\n', '\r']) {
            return Err(Error::protocol("admin command must be a single line"));
        }
        // Until the exchange completes the stream position is unknown; a dropped or failed call
        // leaves the client broken.
        self.broken = true;
        let limit = self.timeout;
        let result = timeout(limit, self.exchange(command, multi_line))
            .await
            .map_err(|_| Error::Timeout(limit))?;
        // An `ERR` line is a complete answer: the connection stays usable.
        if matches!(result, Ok(_) | Err(Error::Server { .. })) {
            self.broken = false;
        }
        result
    }

    async fn exchange(&mut self, command: &str, multi_line: bool) -> Result<Vec<String>> {
        self.framed.send(command).await.map_err(line_error)?;
        let mut lines = Vec::new();
        loop {
            let line = match self.framed.next().await {
                Some(line) => line.map_err(line_error)?,
                None => return Err(Error::Closed),
            };
            if lines.is_empty() {
                check_err(&line)?;
            }
            if !multi_line {
                return Ok(vec![line]);
            }
            if line == "." {
                return Ok(lines);
            }
            if lines.len() >= MAX_LINES {
                return Err(Error::protocol("admin answer has too many lines"));
            }
            lines.push(line);
        }
    }

    /// `status`: every function the server knows with its counters.
    ///
    /// # Errors
    /// As [`AdminClient::command`], plus [`Error::Protocol`] for a malformed line.
    pub async fn status(&mut self) -> Result<Vec<FunctionStatus>> {
        self.command("status", true)
            .await?
            .iter()
            .map(|l| parse_status_line(l))
            .collect()
    }

    /// `workers`: every connection with its client id and functions.
    ///
    /// # Errors
    /// As [`AdminClient::command`], plus [`Error::Protocol`] for a malformed line.
    pub async fn workers(&mut self) -> Result<Vec<WorkerStatus>> {
        self.command("workers", true)
            .await?
            .iter()
            .map(|l| parse_workers_line(l))
            .collect()
    }

    /// `version`: the server's version string (the text after `OK`). Zuul's `gear` server never
    /// answers this; expect [`Error::Timeout`] there.
    ///
    /// # Errors
    /// As [`AdminClient::command`].
    pub async fn version(&mut self) -> Result<String> {
        let lines = self.command("version", false).await?;
        let line = lines.into_iter().next().unwrap_or_default();
        Ok(line.strip_prefix("OK").unwrap_or(&line).trim().to_string())
    }

    /// Whether at least one connected worker registered `function` (Zuul's registration check).
    ///
    /// # Errors
    /// As [`AdminClient::status`].
    pub async fn is_registered(&mut self, function: &str) -> Result<bool> {
        Ok(self
            .status()
            .await?
            .iter()
            .any(|f| f.name == function && f.workers > 0))
    }
}

/// Parses `FUNC\tTOTAL\tRUNNING\tWORKERS`.
///
/// # Errors
/// [`Error::Protocol`] when the line does not have that shape.
pub fn parse_status_line(line: &str) -> Result<FunctionStatus> {
    let bad = || Error::protocol(format!("malformed status line {line:?}"));
    let mut it = line.split('\t');
    let name = it.next().ok_or_else(bad)?;
    let mut num = || -> Result<u64> {
        it.next()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(bad)
    };
    let status = FunctionStatus {
        name: name.to_string(),
        total: num()?,
        running: num()?,
        workers: num()?,
    };
    Ok(status)
}

/// Parses `FD ADDRESS CLIENT_ID : FUNC FUNC ...`.
///
/// # Errors
/// [`Error::Protocol`] when the line does not have that shape.
pub fn parse_workers_line(line: &str) -> Result<WorkerStatus> {
    let bad = || Error::protocol(format!("malformed workers line {line:?}"));
    let mut parts = line.splitn(3, ' ');
    let fd = parts.next().ok_or_else(bad)?;
    let address = parts.next().ok_or_else(bad)?;
    // The address may be IPv6 (even "::1"), so only split the rest: "CLIENT_ID : FUNC ...".
    let rest = parts.next().ok_or_else(bad)?;
    let (client_id, functions) = rest.split_once(" :").ok_or_else(bad)?;
    Ok(WorkerStatus {
        fd: fd.to_string(),
        address: address.to_string(),
        client_id: client_id.to_string(),
        functions: functions.split_whitespace().map(str::to_string).collect(),
    })
}

/// Waits until the server at `host:port` answers an admin `status` (both gearmand and Zuul's
/// server do), retrying every 20 ms for up to `within`.
///
/// # Errors
/// The last error seen, or [`Error::Timeout`], when the server is not ready in time.
pub async fn wait_until_ready(host: &str, port: u16, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = async {
            let mut admin =
                AdminClient::connect(host, port, left.max(Duration::from_millis(1))).await?;
            admin.status().await.map(|_| ())
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        let s = parse_status_line("build:gate-nova\t3\t1\t2").unwrap();
        assert_eq!(
            s,
            FunctionStatus {
                name: "build:gate-nova".into(),
                total: 3,
                running: 1,
                workers: 2
            }
        );
        assert!(parse_status_line("build:x\t1\t2").is_err());
        assert!(parse_status_line("build:x\ta\t1\t2").is_err());
    }

    #[test]
    fn parses_workers_lines() {
        let w = parse_workers_line("33 127.0.0.1 th-1 : build:a stop:th-1").unwrap();
        assert_eq!(w.fd, "33");
        assert_eq!(w.address, "127.0.0.1");
        assert_eq!(w.client_id, "th-1");
        assert_eq!(w.functions, vec!["build:a", "stop:th-1"]);
        let w = parse_workers_line("20 ::1 - :").unwrap();
        assert_eq!(w.address, "::1");
        assert_eq!(w.client_id, "-");
        assert!(w.functions.is_empty());
        assert!(parse_workers_line("garbage").is_err());
    }

    #[test]
    fn err_lines_become_server_errors() {
        match check_err("ERR UNKNOWN_COMMAND unknown+command") {
            Err(Error::Server { code, text }) => {
                assert_eq!(code, "UNKNOWN_COMMAND");
                assert_eq!(text, "unknown command");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(check_err("OK 1.1.20").is_ok());
    }
}
