//! The result lines a job reports to Zuul, word for word the original's where it had one
//! (Zuul users match on them). One line per problem; `SUCCESS` when there is none. The
//! limits' warnings (`WARNING - Migration %s took too long`, …) come from [`crate::limits`].

/// A migration started and its end was never seen: the tool exited, crashed or was stopped
/// (timeout) inside it, or an SQL file failed.
pub const DID_NOT_FIND_END: &str = "FAILURE - Did not find the end of a migration after a start";
/// The database's (or the tool's printed) final version is not the one the change expects.
pub const VERSION_MISMATCH: &str = "FAILURE - Final schema version does not match expectation";
/// The seed could not be loaded, or the server refused us.
pub const SEED_SETUP: &str = "FAILURE - Could not setup seed database.";
/// The seed file is missing.
pub const SEED_MISSING: &str = "FAILURE - Could not find seed database.";
/// The tool could not import what it needs, or could not be found.
pub const IMPORT_ERROR: &str = "FAILURE - Could not import required module.";

/// The tool exited with a non-zero code that nothing else explains.
pub fn return_code(code: i32) -> String {
    format!("Return code from test script was non-zero ({code})")
}

/// No dataset of the datasets directory tests this project; a job without `ZUUL_PROJECT`
/// says so rather than naming a blank project.
pub fn no_dataset(project: &str) -> String {
    if project.is_empty() {
        NO_PROJECT.to_string()
    } else {
        format!("FAILURE - No dataset found for project {project}")
    }
}

/// The job has no `ZUUL_PROJECT`: no dataset can be chosen.
pub const NO_PROJECT: &str =
    "FAILURE - No dataset found: the job has no ZUUL_PROJECT parameter (the project to test)";

/// The change could not be checked out (as the shell_script plugin says it).
pub fn git_failure(why: &str) -> String {
    format!("FAILURE - could not prepare the git checkout: {why}")
}

/// Not the change's fault: a database server lost, a full disk, an unreachable git server.
/// The job's outcome becomes [`turbo_hipster_sdk::Outcome::infrastructure`], which the daemon
/// reports to Zuul without a verdict (Zuul runs the build again).
pub fn infrastructure(what: &str) -> String {
    turbo_hipster_sdk::results::infrastructure(what)
}

/// What failed, when `line` is an [`infrastructure`] line (possibly after `<dataset>: `).
pub fn infrastructure_of(line: &str) -> Option<&str> {
    turbo_hipster_sdk::results::infrastructure_failure(line)
}

/// Whether a git failure is the network's or the file system's rather than the change's (a
/// bad ref, a bad project): `Some("disk full")`, `Some("git server unreachable")` (git could
/// not reach the server, the connection broke or stalled), else `None`. Judged on git's own
/// error text, which names the cause.
///
/// ```
/// use gate_real_db_upgrade::messages::git_infrastructure;
/// let unreachable = Some("git server unreachable");
/// assert_eq!(git_infrastructure("fatal: unable to access 'http://127.0.0.1:9/x/': Failed to connect to 127.0.0.1 port 9 after 0 ms: Couldn't connect to server"), unreachable);
/// assert_eq!(git_infrastructure("fatal: unable to connect to 127.0.0.1:\n127.0.0.1[0: 127.0.0.1]: errno=Connection refused"), unreachable);
/// assert_eq!(git_infrastructure("error: unable to write file x: No space left on device"), Some("disk full"));
/// assert_eq!(git_infrastructure("fatal: couldn't find remote ref refs/zuul/master/Zdead"), None);
/// assert_eq!(git_infrastructure("fatal: '/nonexistent/p' does not appear to be a git repository"), None);
/// ```
pub fn git_infrastructure(message: &str) -> Option<&'static str> {
    if crate::engine::unavailable_kind(message) == Some("disk full") {
        return Some("disk full");
    }
    const NETWORK: [&str; 13] = [
        "could not resolve host",
        "couldn't connect to server",
        "failed to connect",
        "unable to connect",
        "connection refused",
        "connection reset",
        "timed out",
        "no progress",
        "network is unreachable",
        "no route to host",
        "the remote end hung up unexpectedly",
        "early eof",
        "temporary failure in name resolution",
    ];
    let message = message.to_ascii_lowercase();
    NETWORK
        .iter()
        .any(|p| message.contains(p))
        .then_some("git server unreachable")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_project_is_said_not_left_blank() {
        assert_eq!(
            no_dataset("a/b"),
            "FAILURE - No dataset found for project a/b"
        );
        assert!(no_dataset("").contains("no ZUUL_PROJECT parameter"));
    }
}
