//! What the worker's connections report about each server, read by the daemon's metrics: is
//! every connection to it registered, how often it reconnected, how many jobs it sent that were
//! too large to take. Plain atomics, updated by the sessions and read at any time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::settings::ConnSpec;

/// The counters of every configured server, in configuration order.
#[derive(Debug)]
pub struct WorkerStats {
    servers: Vec<ServerStats>,
}

/// One server's counters.
#[derive(Debug)]
pub(super) struct ServerStats {
    /// `host:port` as configured.
    name: String,
    /// How many connections the worker keeps to it (normal, control).
    connections: usize,
    /// How many of them are connected and registered now.
    pub(super) registered: AtomicUsize,
    /// Sessions registered again after a connection of this server had been registered once.
    pub(super) reconnects: AtomicU64,
    /// Jobs it assigned whose data exceeded the packet limit (refused without running).
    pub(super) oversized_jobs: AtomicU64,
}

/// A server's state at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    /// `host:port` as configured.
    pub server: String,
    /// Every connection to it is connected and registered.
    pub up: bool,
    /// Sessions registered again after a lost or failed connection, since the worker started.
    pub reconnects: u64,
    /// Jobs it assigned that were too large to take (`max_packet_bytes`), since the start.
    pub oversized_jobs: u64,
}

impl WorkerStats {
    /// Counters for the servers of `connections` (their [`ServerId::index`] order).
    ///
    /// [`ServerId::index`]: super::ServerId::index
    pub(super) fn new(connections: &[ConnSpec]) -> Self {
        let mut servers: Vec<ServerStats> = Vec::new();
        for spec in connections {
            let index = spec.server.index;
            while servers.len() <= index {
                servers.push(ServerStats {
                    name: String::new(),
                    connections: 0,
                    registered: AtomicUsize::new(0),
                    reconnects: AtomicU64::new(0),
                    oversized_jobs: AtomicU64::new(0),
                });
            }
            servers[index].name = spec.server.to_string();
            servers[index].connections += 1;
        }
        WorkerStats { servers }
    }

    /// The counters of the server at `index` (every connection's server is listed).
    pub(super) fn server(&self, index: usize) -> Option<&ServerStats> {
        self.servers.get(index)
    }

    /// Every configured server's state now.
    pub fn servers(&self) -> Vec<ServerState> {
        self.servers
            .iter()
            .filter(|s| s.connections > 0)
            .map(|s| ServerState {
                server: s.name.clone(),
                up: s.registered.load(Ordering::Acquire) >= s.connections,
                reconnects: s.reconnects.load(Ordering::Relaxed),
                oversized_jobs: s.oversized_jobs.load(Ordering::Relaxed),
            })
            .collect()
    }
}
