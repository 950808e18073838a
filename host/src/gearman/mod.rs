//! Gearman: codec, worker, admin client.
//!
//! Layers, read top to bottom:
//! - [`packet`]: packet types, arities and constructors;
//! - [`codec`]: the `tokio_util` codec that frames them;
//! - [`admin`]: the text admin protocol (`status`, `workers`, `version`);
//! - [`client`]: a small async client (submit jobs, follow their events), for tests and tools;
//! - [`worker`]: the multi-server worker core that runs jobs through a [`worker::JobHandler`].

pub mod admin;
pub mod client;
pub mod codec;
mod error;
pub mod packet;
pub mod worker;

pub use error::{Error, Result};
