//! The daemon's own log: tracing to stderr and/or the `debug_log` file.
//!
//! Lines are formatted on the thread that logs and written by a background thread, so a busy
//! daemon never waits on a log write; [`LogGuard`] flushes what is queued when it drops.

use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::thread::JoinHandle;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// How many formatted lines may wait for the writer thread before loggers wait.
const QUEUE: usize = 16 * 1024;

enum Sink {
    Stderr,
    File(std::fs::File),
}

/// Writes queued lines to one sink, batching whatever is waiting into one write.
fn writer_thread(mut sink: Sink, rx: Receiver<Vec<u8>>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Ok(line) = rx.recv() {
        buf.extend_from_slice(&line);
        while buf.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        let _ = match &mut sink {
            Sink::Stderr => std::io::stderr().write_all(&buf),
            Sink::File(f) => f.write_all(&buf),
        };
        buf.clear();
    }
}

/// A `MakeWriter` whose writers queue each formatted event for the writer thread.
struct QueueWriter {
    tx: Mutex<Option<SyncSender<Vec<u8>>>>,
}

/// One event being formatted.
struct EventBuf {
    buf: Vec<u8>,
    owner: &'static QueueWriter,
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
        if self.buf.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.buf);
        if let Ok(guard) = self.owner.tx.lock() {
            if let Some(tx) = guard.as_ref() {
                let _ = tx.send(line);
            }
        }
    }
}

/// The handle the fmt layers hold.
#[derive(Clone, Copy)]
struct QueueMaker(&'static QueueWriter);

impl<'a> MakeWriter<'a> for QueueMaker {
    type Writer = EventBuf;
    fn make_writer(&'a self) -> Self::Writer {
        EventBuf {
            buf: Vec::with_capacity(256),
            owner: self.0,
        }
    }
}

fn spawn_writer(sink: Sink) -> (&'static QueueWriter, JoinHandle<()>) {
    let (tx, rx) = sync_channel(QUEUE);
    let handle = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || writer_thread(sink, rx))
        .unwrap_or_else(|_| std::thread::spawn(|| {}));
    // The subscriber is global and lives as long as the process.
    let writer: &'static QueueWriter = Box::leak(Box::new(QueueWriter {
        tx: Mutex::new(Some(tx)),
    }));
    (writer, handle)
}

/// Flushes the log when dropped (at the end of `main`).
pub struct LogGuard {
    writers: Vec<(&'static QueueWriter, JoinHandle<()>)>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        for (w, handle) in self.writers.drain(..) {
            if let Ok(mut tx) = w.tx.lock() {
                tx.take();
            }
            let _ = handle.join();
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
        writers.push((w, h));
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
            writers.push((w, h));
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
