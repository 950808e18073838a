//! The observation of one run's migrations: what the side connections saw between two
//! migration boundaries — the locks ([`LockObserver`]) and the work counters
//! ([`CounterReader`]) — cut at each boundary ([`Observation::cut`]) and given to the
//! migration that was in progress. Each part is optional (off, or the server has no view);
//! with both off a cut costs nothing.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use super::counters::{CounterReader, Reading};
use super::locks::{LockObserver, TableLocks};

/// What one migration did, as observed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cut {
    /// Its locks, per table.
    pub locks: Vec<TableLocks>,
    /// Its work counters' deltas; `None` when not counted.
    pub counters: Option<BTreeMap<String, i64>>,
}

/// The side observations of one run.
#[derive(Default)]
pub struct Observation {
    locks: Option<LockObserver>,
    counters: Option<CounterReader>,
    last: Mutex<Option<Reading>>,
}

impl Observation {
    /// Observes with these parts (either may be off).
    pub fn new(locks: Option<LockObserver>, counters: Option<CounterReader>) -> Self {
        Self {
            locks,
            counters,
            last: Mutex::new(None),
        }
    }

    /// The lock observer, when locks are observed.
    pub fn locks(&self) -> Option<&LockObserver> {
        self.locks.as_ref()
    }

    /// The state of every table now, when rewrite detection is on (see
    /// [`LockObserver::tables`]).
    pub fn tables(&self) -> Option<Result<super::rewrites::Snapshot, super::EngineError>> {
        self.locks.as_ref()?.tables()
    }

    /// The counter reader, when work is counted.
    pub fn counters(&self) -> Option<&CounterReader> {
        self.counters.as_ref()
    }

    /// Ends the current migration's observation: what was seen since the last cut (the
    /// counters: `None` at the first cut, or when the reading failed, which also makes the
    /// next cut's `None`).
    pub fn cut(&self) -> Cut {
        let locks = self
            .locks
            .as_ref()
            .map(LockObserver::cut)
            .unwrap_or_default();
        let Some(reader) = &self.counters else {
            return Cut {
                locks,
                counters: None,
            };
        };
        let now = reader
            .read()
            .map_err(|e| tracing::warn!("reading the work counters: {e}"))
            .ok();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let counters = match (last.as_ref(), now.as_ref()) {
            (Some(before), Some(after)) => Some(before.delta(after, reader.names())),
            _ => None,
        };
        *last = now;
        Cut { locks, counters }
    }

    /// Lets the tool's sessions publish what they counted before the last cut of a phase
    /// ([`CounterReader::settle`]).
    pub fn settle(&self) {
        if let Some(reader) = &self.counters {
            reader.settle();
        }
    }
}
