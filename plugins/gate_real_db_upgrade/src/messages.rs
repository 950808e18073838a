//! The result lines a job reports to Zuul, word for word the original's where it had one
//! (Zuul users match on them; docs/troubleshooting.md lists them). One line per problem;
//! `SUCCESS` when there is none. Every line a job can give is built here, and only here: the
//! rest of the plugin decides which one applies.

use std::fmt::Display;

/// No problem at all (the SDK's success result).
pub const SUCCESS: &str = "SUCCESS";

/// The job was cancelled (the SDK's aborted result).
pub fn aborted() -> String {
    turbo_hipster_sdk::Outcome::aborted().result
}

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

/// A migration took longer than its `maximum_migration_times` limit ([`crate::limits`]).
pub fn took_too_long(migration: &str) -> String {
    format!("WARNING - Migration {migration} took too long")
}

/// A migration took more than K times its historical median on this dataset
/// ([`crate::regression`]): `ratio` times, `ms` against the median `median_ms`.
pub fn took_longer_than_usual(migration: &str, ratio: f64, ms: i64, median_ms: f64) -> String {
    format!(
        "WARNING - Migration {migration} took {ratio:.1}× longer than usual ({ms} ms vs median {median_ms:.0} ms)"
    )
}

/// A migration changed more rows than its `XInnodb_rows_changed` limit.
pub fn changed_too_many_rows(migration: &str, rows: i64) -> String {
    format!("WARNING - Migration {migration} changed too many rows ({rows})")
}

/// A migration read more rows than its `Innodb_rows_read` limit.
pub fn read_too_many_rows(migration: &str, rows: i64) -> String {
    format!("WARNING - Migration {migration} read too many rows ({rows})")
}

/// A migration wrote more WAL than its `maximum_wal_bytes` limit (PostgreSQL).
pub fn wrote_too_much_wal(migration: &str, bytes: i64) -> String {
    format!("WARNING - Migration {migration} wrote too much WAL ({bytes} bytes)")
}

/// A migration held a lock blocking reads or writes of `table` longer than its
/// `maximum_lock_hold` limit.
pub fn held_lock_too_long(migration: &str, mode: &str, table: &str, seconds: f64) -> String {
    format!("WARNING - Migration {migration} held {mode} lock on {table} for {seconds:.1} s")
}

/// A migration rewrote `table` (`bytes` before the rewrite) over its `maximum_rewrite_bytes`
/// limit; `certain: false` when the rewrite could be this migration's or another's (see
/// [`crate::engine::rewrites`]).
pub fn rewrote_table(migration: &str, table: &str, bytes: i64, certain: bool) -> String {
    let verb = if certain {
        "rewrote"
    } else {
        "may have rewritten"
    };
    format!(
        "WARNING - Migration {migration} {verb} {table} ({})",
        human_bytes(bytes)
    )
}

/// What a limit's warning adds when the figure it checked is partial: `part` (`locks`, …) was
/// not observed for `seconds` of the migration (a side connection failed): the figure is what
/// was seen, the truth may be more.
pub fn partial_observation(part: &str, seconds: f64) -> String {
    format!(" (partial: {part} not observed for {seconds:.1} s of it, an observation fault)")
}

/// A size as people read it: `812 B`, `45.2 MB`, `1.3 GB` (powers of 1024, one decimal).
pub fn human_bytes(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    #[allow(clippy::cast_precision_loss)]
    let mut size = bytes as f64 / 1024.0;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.1} {}", UNITS[unit])
}

/// The time limit passed between migrations (`after`: the limit, e.g. `90 s`).
pub fn timed_out(after: &str) -> String {
    format!("FAILURE - Migrations timed out after {after}")
}

/// The tool was killed by a signal outside any migration.
pub fn killed_by_signal(signal: &str) -> String {
    format!("FAILURE - The migration tool was killed by signal {signal}")
}

/// A config template of the dataset could not be rendered.
pub fn template_failed(why: impl Display) -> String {
    format!("FAILURE - could not render a config template: {why}")
}

/// The dataset's tool argv is empty.
pub const EMPTY_ARGV: &str = "FAILURE - the dataset's migration tool has an empty argv";

/// The migration tool exists but could not be started.
pub fn tool_not_started(program: &str, why: impl Display) -> String {
    format!("FAILURE - could not start the migration tool {program}: {why}")
}

/// The migration tool could not be run (waited for, read).
pub fn tool_not_run(why: impl Display) -> String {
    format!("FAILURE - could not run the migration tool: {why}")
}

/// Any other failure of the dataset's run, in the plugin's words (a directory that cannot be
/// made, a dataset that cannot run, an SQL file that cannot be read).
pub fn failure(what: impl Display) -> String {
    format!("FAILURE - {what}")
}

/// Whether `line` is a failure (rather than a warning or a note).
pub fn is_failure(line: &str) -> bool {
    line.starts_with("FAILURE")
}

/// Whether `line` is a warning (its dataset's `<name>: ` prefix allowed): the change is not
/// blocked by it.
pub fn is_warning(line: &str) -> bool {
    line.starts_with("WARNING - ") || line.contains(": WARNING - ")
}

/// The datasets directory holds datasets that do not load.
pub fn invalid_datasets(problems: &[String]) -> String {
    format!("FAILURE - invalid datasets: {}", problems.join("; "))
}

/// The plugin failed (a panic in a dataset's run, a dataset never run).
pub fn internal_error(why: &str) -> String {
    format!("FAILURE - internal error: {why}")
}

/// A line of one dataset among several: `<dataset>: <line>`.
pub fn of_dataset(dataset: &str, line: &str) -> String {
    format!("{dataset}: {line}")
}

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
    fn success_is_the_sdk_s() {
        assert_eq!(SUCCESS, turbo_hipster_sdk::Outcome::success().result);
        assert_eq!(aborted(), "ABORTED");
    }

    #[test]
    fn rewrite_lines_and_sizes() {
        assert_eq!(human_bytes(812), "812 B");
        assert_eq!(human_bytes(46_347_878), "44.2 MB");
        assert_eq!(human_bytes(1 << 30), "1.0 GB");
        assert_eq!(
            rewrote_table("1->2", "orders", 46_347_878, true),
            "WARNING - Migration 1->2 rewrote orders (44.2 MB)"
        );
        assert_eq!(
            rewrote_table("a->b", "orders", 2048, false),
            "WARNING - Migration a->b may have rewritten orders (2.0 kB)"
        );
    }

    #[test]
    fn no_project_is_said_not_left_blank() {
        assert_eq!(
            no_dataset("a/b"),
            "FAILURE - No dataset found for project a/b"
        );
        assert!(no_dataset("").contains("no ZUUL_PROJECT parameter"));
    }
}
