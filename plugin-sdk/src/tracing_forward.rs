//! Routes the plugin's `tracing` events to the daemon.
//!
//! A plugin is a `cdylib` with its own copy of `tracing`, so the daemon's subscriber never sees
//! its events. The SDK installs a global subscriber inside the plugin that hands every event to
//! the host context of the job running on the current thread.

use std::cell::Cell;
use std::fmt::Write as _;
use std::marker::PhantomData;
use std::sync::Once;

use abi_stable::std_types::RStr;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::Layer;

use crate::abi::{HostRef, Host_TO};

/// The part of the host context the SDK's wrappers use; lets one borrow serve any lifetime.
pub(crate) trait HostApi: Sync {
    fn log(&self, level: u8, target: &str, message: &str);
    fn progress(&self, numerator: u64, denominator: u64);
    fn send_work_data(&self, json: &str);
    fn is_cancelled(&self) -> bool;
    fn wait_cancelled(&self, timeout_ms: u64) -> bool;
    fn working_dir(&self) -> String;
    fn results_dir(&self) -> String;
}

impl HostApi for HostRef<'_> {
    fn log(&self, level: u8, target: &str, message: &str) {
        Host_TO::log(self, level, RStr::from_str(target), RStr::from_str(message));
    }
    fn progress(&self, numerator: u64, denominator: u64) {
        Host_TO::progress(self, numerator, denominator);
    }
    fn send_work_data(&self, json: &str) {
        Host_TO::send_work_data(self, RStr::from_str(json));
    }
    fn is_cancelled(&self) -> bool {
        Host_TO::is_cancelled(self)
    }
    fn wait_cancelled(&self, timeout_ms: u64) -> bool {
        Host_TO::wait_cancelled(self, timeout_ms)
    }
    fn working_dir(&self) -> String {
        Host_TO::working_dir(self).into_string()
    }
    fn results_dir(&self) -> String {
        Host_TO::results_dir(self).into_string()
    }
}

type Erased = *const (dyn HostApi + 'static);

thread_local! {
    // The host context of the job on this thread, erased; set only while a `ForwardGuard` lives.
    static CURRENT: Cell<Option<Erased>> = const { Cell::new(None) };
}

/// Installs forwarding of this thread's `tracing` events to a host; restores the previous
/// target when dropped.
pub struct ForwardGuard<'a> {
    previous: Option<Erased>,
    _host: PhantomData<&'a ()>,
}

impl<'a> ForwardGuard<'a> {
    pub(crate) fn enter(host: &'a (dyn HostApi + 'a)) -> Self {
        install_subscriber();
        let ptr: *const (dyn HostApi + 'a) = host;
        // SAFETY: only the lifetime is erased; the pointer is dereferenced only while this
        // guard (which borrows `host` for 'a) is alive, see `with_current`.
        #[allow(unsafe_code)]
        let erased: Erased = unsafe { std::mem::transmute(ptr) };
        let previous = CURRENT.with(|c| c.replace(Some(erased)));
        ForwardGuard {
            previous,
            _host: PhantomData,
        }
    }
}

impl Drop for ForwardGuard<'_> {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

fn with_current(f: impl FnOnce(&dyn HostApi)) {
    CURRENT.with(|c| {
        if let Some(ptr) = c.get() {
            // SAFETY: the pointer is set only by `ForwardGuard::enter` from a reference that
            // outlives the guard, and cleared when the guard drops on this same thread.
            #[allow(unsafe_code)]
            let host = unsafe { &*ptr };
            f(host);
        }
    });
}

/// The level code of the ABI: 1 error … 5 trace.
pub(crate) fn level_code(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

fn install_subscriber() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(Forward);
        // Fails only if the plugin installed its own global subscriber; then that one wins.
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

struct Forward;

impl<S: Subscriber> Layer<S> for Forward {
    fn on_event(&self, event: &Event<'_>, _ctx: LayerContext<'_, S>) {
        let mut visitor = MessageVisitor::default();
        event.record(&mut visitor);
        let meta = event.metadata();
        with_current(|host| {
            host.log(level_code(meta.level()), meta.target(), &visitor.text);
        });
    }
}

#[derive(Default)]
struct MessageVisitor {
    text: String,
}

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.text.insert_str(0, value);
        } else {
            let _ = write!(self.text, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.text.insert_str(0, &format!("{value:?}"));
        } else {
            let _ = write!(self.text, " {}={:?}", field.name(), value);
        }
    }
}
