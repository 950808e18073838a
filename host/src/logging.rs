//! The daemon's own log: tracing to stderr and/or the `debug_log` file.
//!
//! Lines are formatted on the thread that logs and written by a background thread, so a busy
//! daemon never waits on a log write: the first line into an empty buffer wakes the writer,
//! which lets lines gather for a few milliseconds and writes them in one go (an idle daemon's
//! writer sleeps until the next line). [`LogGuard`] writes what is left when it drops.

use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// How long the writer lets lines gather once woken.
const GATHER: Duration = Duration::from_millis(10);
/// Lines beyond this much unwritten text are dropped (and counted) rather than using memory.
const MAX_BUFFERED: usize = 64 * 1024 * 1024;

enum Sink {
    Stderr,
    File(std::fs::File),
}

#[derive(Default)]
struct Buffer {
    text: Vec<u8>,
    dropped: u64,
}

/// The buffer shared by the loggers and the writer thread.
#[derive(Default)]
struct QueueWriter {
    buffer: Mutex<Buffer>,
    wake: Condvar,
    closed: AtomicBool,
}

impl QueueWriter {
    fn push(&self, line: &[u8]) {
        let was_empty = {
            let Ok(mut b) = self.buffer.lock() else {
                return;
            };
            if b.text.len() + line.len() > MAX_BUFFERED {
                b.dropped += 1;
                return;
            }
            let was_empty = b.text.is_empty();
            b.text.extend_from_slice(line);
            was_empty
        };
        if was_empty {
            self.wake.notify_one();
        }
    }
}

/// Writes what gathers in the buffer until the queue is closed and empty.
fn writer_thread(mut sink: Sink, q: Arc<QueueWriter>) {
    let mut out = Vec::new();
    loop {
        {
            let Ok(mut b) = q.buffer.lock() else { return };
            while b.text.is_empty() && !q.closed.load(Ordering::Acquire) {
                b = match q.wake.wait(b) {
                    Ok(b) => b,
                    Err(_) => return,
                };
            }
            if b.text.is_empty() {
                return;
            }
        }
        if !q.closed.load(Ordering::Acquire) {
            std::thread::sleep(GATHER);
        }
        {
            let Ok(mut b) = q.buffer.lock() else { return };
            std::mem::swap(&mut out, &mut b.text);
            if b.dropped > 0 {
                let note = format!(
                    "turbo-hipster: {} log line(s) dropped: the log could not keep up\n",
                    b.dropped
                );
                out.extend_from_slice(note.as_bytes());
                b.dropped = 0;
            }
        }
        let _ = match &mut sink {
            Sink::Stderr => std::io::stderr().write_all(&out),
            Sink::File(f) => f.write_all(&out),
        };
        out.clear();
    }
}

/// One event being formatted.
struct EventBuf {
    buf: Vec<u8>,
    owner: Arc<QueueWriter>,
}

impl Write for EventBuf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBuf {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.owner.push(&self.buf);
        }
    }
}

/// The handle the fmt layers hold.
#[derive(Clone)]
struct QueueMaker(Arc<QueueWriter>);

impl<'a> MakeWriter<'a> for QueueMaker {
    type Writer = EventBuf;
    fn make_writer(&'a self) -> Self::Writer {
        EventBuf {
            buf: Vec::with_capacity(256),
            owner: self.0.clone(),
        }
    }
}

fn spawn_writer(sink: Sink) -> (Arc<QueueWriter>, Option<JoinHandle<()>>) {
    let q = Arc::new(QueueWriter::default());
    let for_thread = q.clone();
    let handle = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || writer_thread(sink, for_thread))
        .ok();
    (q, handle)
}

/// Writes out what is buffered when dropped (at the end of `main`).
pub struct LogGuard {
    writers: Vec<(Arc<QueueWriter>, Option<JoinHandle<()>>)>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        for (q, handle) in self.writers.drain(..) {
            q.closed.store(true, Ordering::Release);
            q.wake.notify_one();
            if let Some(h) = handle {
                let _ = h.join();
            }
        }
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides `default_level`.
///
/// # Errors
/// The log file cannot be opened.
pub fn init(
    default_level: &str,
    to_stderr: bool,
    file: Option<&Path>,
) -> std::io::Result<LogGuard> {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let mut writers = Vec::new();
    let stderr_layer = if to_stderr {
        let (w, h) = spawn_writer(Sink::Stderr);
        writers.push((w.clone(), h));
        Some(
            fmt::layer()
                .with_writer(QueueMaker(w))
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false)
                .with_filter(filter()),
        )
    } else {
        None
    };
    let file_layer = match file {
        Some(path) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let f = OpenOptions::new().create(true).append(true).open(path)?;
            let (w, h) = spawn_writer(Sink::File(f));
            writers.push((w.clone(), h));
            Some(
                fmt::layer()
                    .with_writer(QueueMaker(w))
                    .with_ansi(false)
                    .with_filter(filter()),
            )
        }
        None => None,
    };
    // A second init (tests) is harmless.
    let _ = tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .try_init();
    Ok(LogGuard { writers })
}
