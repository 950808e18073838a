//! gate_real_db_upgrade: test a proposed change's database migrations against real datasets.
//!
//! Not implemented yet: every job fails with a clear result, so the plugin can already be
//! installed, configured and listed.

pub mod dataset;
pub mod engine;
pub mod limits;
pub mod logparse;

use turbo_hipster_sdk::{export_plugin, Context, JobConfig, Outcome, Plugin, PluginError};

/// The migration tester.
pub struct GateRealDbUpgrade;

impl Plugin for GateRealDbUpgrade {
    const NAME: &'static str = "gate_real_db_upgrade";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DEFAULT_JOB: &'static str = "build:gate-real-db-upgrade";
    const DESCRIPTION: &'static str =
        "tests a change's database migrations against real datasets (not implemented yet)";

    fn new(_config: &JobConfig) -> Result<Self, PluginError> {
        Ok(GateRealDbUpgrade)
    }

    fn run(&self, _ctx: &Context<'_>) -> Result<Outcome, PluginError> {
        Ok(Outcome::failure(
            "FAILURE - gate_real_db_upgrade is not implemented yet",
        ))
    }
}

export_plugin!(GateRealDbUpgrade);
