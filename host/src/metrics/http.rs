//! The metrics endpoint: a small HTTP/1.x server on the daemon's runtime that answers
//! `GET /metrics` and nothing else.
//!
//! It is built for hostile clients, since anyone who can reach the port can talk to it:
//! - one request per connection, answered with `Connection: close`;
//! - the request head (request line and headers) must arrive within [`HEADER_TIMEOUT`] and fit
//!   in [`MAX_REQUEST_BYTES`] (else `408` or `431`, and the connection is closed); a body is
//!   never read;
//! - at most [`MAX_CONNECTIONS`] connections at once; one more is answered `503` without
//!   being read and closed;
//! - the answer must be taken within [`WRITE_TIMEOUT`]; then at most 64 KiB more of what the
//!   client sends is read and dropped for at most a second (so that it reads the answer before
//!   the connection is reset);
//! - `GET /metrics` (a query string is ignored) gets the metrics, another path `404`, another
//!   method on `/metrics` `405`, anything that is not HTTP/1.x `400`.
//!
//! Each connection is a task of its own on the runtime; the metrics are rendered on the
//! runtime's blocking pool (they only read atomics, but 200 jobs make 6,000 lines: tens of
//! milliseconds in a debug build, `metrics::tests::rendering_200_jobs_is_cheap`), so the Gearman sessions
//! sharing the runtime thread never wait for a scrape, and the job threads never touch this
//! server at all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::Metrics;

/// The largest request head accepted (request line and headers).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to read the answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// After answering, how long and how much of what the client still sends is read and dropped.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;
/// The most headers a request may have.
const MAX_HEADERS: usize = 64;
/// The media type of the text format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The running endpoint; stopped when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on `listen` (`SO_REUSEADDR`, as tokio sets it).
///
/// # Errors
/// The address cannot be listened on: in use, not an address of this machine, a privileged
/// port.
pub async fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen).await
}

/// Serves `metrics` on `listener` until the returned server is dropped.
pub fn spawn(listener: TcpListener, metrics: Arc<Metrics>) -> std::io::Result<MetricsServer> {
    let addr = listener.local_addr()?;
    let task = tokio::spawn(accept_loop(listener, metrics));
    Ok(MetricsServer { addr, task })
}

async fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut last_warned: Option<Instant> = None;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin, and say so
                // once a minute at most.
                if last_warned.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!("metrics endpoint: cannot accept a connection: {e}");
                    last_warned = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    serve_connection(stream, metrics).await;
                    drop(permit);
                });
            }
            Err(_) => {
                // Best effort, without waiting: the socket's buffer takes this at once.
                let _ = stream.try_write(&response(Status::Unavailable, ""));
            }
        }
    }
}

/// The answers this server gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    Timeout,
    TooLarge,
    Internal,
    Unavailable,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::Timeout => "408 Request Timeout",
            Status::TooLarge => "431 Request Header Fields Too Large",
            Status::Internal => "500 Internal Server Error",
            Status::Unavailable => "503 Service Unavailable",
        }
    }
}

/// A whole response: `body` is the metrics for 200, else a line saying what went wrong.
fn response(status: Status, body: &str) -> Vec<u8> {
    let (content_type, body) = match status {
        Status::Ok => (CONTENT_TYPE, body.to_string()),
        other => ("text/plain; charset=utf-8", format!("{}\n", other.line())),
    };
    let allow = if status == Status::MethodNotAllowed {
        "Allow: GET\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        status.line(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Why no request could be read.
enum ReadError {
    /// The head is larger than [`MAX_REQUEST_BYTES`] or has too many headers.
    TooLarge,
    /// Not HTTP/1.x.
    Malformed,
    /// The client went away.
    Closed,
}

/// A request's method and path (query string cut off).
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
}

async fn serve_connection(mut stream: TcpStream, metrics: Arc<Metrics>) {
    let mut status = match tokio::time::timeout(HEADER_TIMEOUT, read_request(&mut stream)).await {
        Err(_) => Status::Timeout,
        Ok(Err(ReadError::Closed)) => return,
        Ok(Err(ReadError::TooLarge)) => Status::TooLarge,
        Ok(Err(ReadError::Malformed)) => Status::BadRequest,
        Ok(Ok(request)) => route(&request),
    };
    let mut body = String::new();
    if status == Status::Ok {
        // Off the runtime thread (at most MAX_CONNECTIONS at once).
        match tokio::task::spawn_blocking(move || metrics.render()).await {
            Ok(text) => body = text,
            Err(e) => {
                tracing::error!("metrics endpoint: rendering failed: {e}");
                status = Status::Internal;
            }
        }
    }
    let answer = response(status, &body);
    let write = async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    };
    // A client that does not read its answer is dropped with it.
    if let Ok(Ok(())) = tokio::time::timeout(WRITE_TIMEOUT, write).await {
        linger(&mut stream).await;
    }
}

/// After the answer: reads (and drops) what the client still sends, a little of it for a
/// little while, so that closing a socket with unread data (a refused large request) does not
/// reset the connection before the client read the answer.
async fn linger(stream: &mut TcpStream) {
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

fn route(request: &Request) -> Status {
    if request.path != "/metrics" {
        Status::NotFound
    } else if request.method != "GET" {
        Status::MethodNotAllowed
    } else {
        Status::Ok
    }
}

/// Reads until the request head is complete; never more than [`MAX_REQUEST_BYTES`].
async fn read_request(stream: &mut TcpStream) -> Result<Request, ReadError> {
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut len = 0;
    loop {
        let n = stream
            .read(&mut buf[len..])
            .await
            .map_err(|_| ReadError::Closed)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        len += n;
        if let Some(request) = parse(&buf[..len])? {
            return Ok(request);
        }
        if len == buf.len() {
            return Err(ReadError::TooLarge);
        }
    }
}

/// The request in `head`, `None` while it is incomplete.
fn parse(head: &[u8]) -> Result<Option<Request>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(_)) => {
            let (Some(method), Some(target)) = (req.method, req.path) else {
                return Err(ReadError::Malformed);
            };
            let path = target.split(['?', '#']).next().unwrap_or("");
            Ok(Some(Request {
                method: method.to_string(),
                path: path.to_string(),
            }))
        }
        Err(httparse::Error::TooManyHeaders) => Err(ReadError::TooLarge),
        Err(_) => Err(ReadError::Malformed),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parsed(head: &str) -> Option<Request> {
        match parse(head.as_bytes()) {
            Ok(r) => r,
            Err(ReadError::TooLarge) => panic!("too large: {head:?}"),
            Err(ReadError::Malformed) => panic!("malformed: {head:?}"),
            Err(ReadError::Closed) => panic!("closed"),
        }
    }

    #[test]
    fn requests_are_routed_by_path_then_method() {
        let r = parsed("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(route(&r), Status::Ok);
        let r = parsed("GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(route(&r), Status::Ok);
        let r = parsed("POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!(route(&r), Status::MethodNotAllowed);
        let r = parsed("HEAD /metrics HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(route(&r), Status::MethodNotAllowed);
        let r = parsed("GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(route(&r), Status::NotFound);
        let r = parsed("GET /metrics/../x HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(route(&r), Status::NotFound);
        assert!(parsed("GET /metrics HTTP/1.1\r\nHost:").is_none());
        assert!(matches!(
            parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Err(ReadError::Malformed)
        ));
        assert!(matches!(
            parse(b"\x16\x03\x01\x02\x00"),
            Err(ReadError::Malformed)
        ));
        let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
        assert!(matches!(
            parse(format!("GET /metrics HTTP/1.1\r\n{many}\r\n").as_bytes()),
            Err(ReadError::TooLarge)
        ));
    }

    #[test]
    fn answers_say_their_length_and_close() {
        let r = String::from_utf8(response(Status::Ok, "a 1\n")).unwrap();
        assert_eq!(
            r,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: 4\r\nConnection: close\r\n\r\na 1\n"
        );
        let r = String::from_utf8(response(Status::MethodNotAllowed, "ignored")).unwrap();
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
        assert!(r.contains("\r\nAllow: GET\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n405 Method Not Allowed\n"), "{r}");
    }
}
