//! Builds the root module from a [`Plugin`] and guards every entry point against panics.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RStr, RString};

use crate::abi::{
    AbiError, AbiPluginInfo, HostRef, Runner, RunnerBox, Runner_TO, TaskMod, TaskModRef,
};
use crate::context::Context;
use crate::job::{Job, JobConfig};
use crate::tracing_forward::ForwardGuard;
use crate::{Plugin, SDK_VERSION};

/// Exports a [`Plugin`] implementation as the plugin's root module. Use once, at the root of
/// the plugin crate (which must also depend on `abi_stable`, that the expansion names).
///
/// The root module's loader symbol has one fixed name in every plugin, so it is left out of
/// the plugin's own unit-test build: that binary may link other plugins' libraries (the shared
/// test support links the gate plugin), and two loader symbols would clash. Tests run the
/// plugin through [`crate::testing`], which does not need it.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        /// The root module of this turbo-hipster plugin.
        #[cfg(not(test))]
        #[::abi_stable::export_root_module]
        pub fn turbo_hipster_root_module() -> $crate::abi::TaskModRef {
            $crate::__private::root_module::<$plugin>()
        }
    };
}

/// The root module for plugin `P`.
pub fn root_module<P: Plugin>() -> TaskModRef {
    TaskMod {
        info: info::<P>,
        new_runner: new_runner::<P>,
    }
    .leak_into_prefix()
}

/// Turns a panic payload into its message.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, AbiError>) -> RResult<T, AbiError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(e),
        Err(payload) => RResult::RErr(AbiError::new(format!(
            "plugin panicked in {what}: {}",
            panic_message(payload.as_ref())
        ))),
    }
}

extern "C" fn info<P: Plugin>() -> RResult<AbiPluginInfo, AbiError> {
    guarded("info", || {
        Ok(AbiPluginInfo {
            name: P::NAME.into(),
            version: P::VERSION.into(),
            sdk_version: SDK_VERSION.into(),
            default_job: P::DEFAULT_JOB.into(),
            description: P::DESCRIPTION.into(),
            #[cfg(th_sdk_incompatible_abi)]
            incompatible_marker: 0,
        })
    })
}

extern "C" fn new_runner<P: Plugin>(
    config: RStr<'_>,
    host: HostRef<'_>,
) -> RResult<RunnerBox, AbiError> {
    guarded("initialisation", || {
        let _forward = ForwardGuard::enter(&host);
        let config: JobConfig = serde_json::from_str(config.as_str())
            .map_err(|e| AbiError::new(format!("invalid job configuration document: {e}")))?;
        let plugin = P::new(&config).map_err(|e| AbiError::new(e.to_string()))?;
        Ok(Runner_TO::from_value(Adapter(plugin), TD_Opaque))
    })
}

struct Adapter<P>(P);

impl<P: Plugin> Runner for Adapter<P> {
    fn run(&self, host: HostRef<'_>) -> RResult<RString, AbiError> {
        guarded("run", || {
            let _forward = ForwardGuard::enter(&host);
            let job: Job = serde_json::from_str(host.job_json().as_str())
                .map_err(|e| AbiError::new(format!("invalid job document: {e}")))?;
            let ctx = Context::new(&host, job);
            let outcome = self.0.run(&ctx).map_err(|e| AbiError::new(e.to_string()))?;
            serde_json::to_string(&outcome)
                .map(RString::from)
                .map_err(|e| AbiError::new(format!("cannot encode the outcome: {e}")))
        })
    }
}
