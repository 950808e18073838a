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
