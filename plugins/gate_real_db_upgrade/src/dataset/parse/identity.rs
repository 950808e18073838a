//! What the dataset is: its name (from the file) and `project`.

use serde_json::{Map, Value};
use turbo_hipster_sdk::config::Checker;

use crate::dataset::check::is_safe_name;

/// The dataset's name, from its directory or file: a safe name.
pub(super) fn name(c: &mut Checker, name: &str) {
    if !is_safe_name(name) {
        c.error(
            "(name)",
            format!("dataset name {name:?} is not a safe name ([A-Za-z0-9._-])"),
        );
    }
}

/// `project`: a relative path of safe names, as in `ZUUL_PROJECT`.
pub(super) fn project(c: &mut Checker, obj: &Map<String, Value>) -> Option<String> {
    let Some(v) = obj.get("project") else {
        c.required("project", "e.g. \"openstack/nova\"");
        return None;
    };
    let p = c.nonempty("project", v)?;
    // ZUUL_PROJECT never starts a segment with `-`: such a project could never match.
    if p.split('/').all(|s| is_safe_name(s) && !s.starts_with('-')) {
        Some(p)
    } else {
        c.error(
            "project",
            format!("must be a relative path of safe names like \"openstack/nova\", got {p:?}"),
        );
        None
    }
}
