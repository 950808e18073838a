//! What `/proc/<pid>/stat` says of a process: its state, process group, session and start
//! time. One parser for the places that look for processes (a command's leftover group
//! members, a job's leftover session, a claim's owner).

/// The fields of `/proc/<pid>/stat` that turbo-hipster uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The process id.
    pub pid: i32,
    /// The state letter (`R`, `S`, `Z` for a zombie, `X` dead, …).
    pub state: char,
    /// Its process group.
    pub pgrp: i32,
    /// Its session.
    pub session: i32,
    /// Its start time in clock ticks since boot (field 22).
    pub start_ticks: u64,
}

/// Process `pid`'s stat, or `None` when it is gone (or `/proc` cannot be read).
///
/// ```
/// let me = turbo_hipster_sdk::support::procfs::stat(std::process::id() as i32).unwrap();
/// assert_eq!(me.state, 'R');
/// assert!(me.start_ticks > 0);
/// ```
pub fn stat(pid: i32) -> Option<ProcStat> {
    parse(
        pid,
        &std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
    )
}

/// Every process's stat (those that exit while being read are left out).
pub fn processes() -> impl Iterator<Item = ProcStat> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
}

fn parse(pid: i32, stat: &str) -> Option<ProcStat> {
    // `pid (comm) state ppid pgrp session …`: comm may hold spaces and parentheses, so the
    // fields are counted after its last `)`: state is field 3, the start time field 22.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    let start_ticks = fields.nth(15)?.parse().ok()?;
    Some(ProcStat {
        pid,
        state,
        pgrp,
        session,
        start_ticks,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_spaces_and_parentheses_is_skipped() {
        let line = "42 (a) b (c)) S 1 40 41 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 987654 1 2";
        let s = parse(42, line).unwrap();
        assert_eq!(
            (s.state, s.pgrp, s.session, s.start_ticks),
            ('S', 40, 41, 987654)
        );
    }

    #[test]
    fn this_process_is_listed() {
        let me = std::process::id() as i32;
        let mine = processes().find(|p| p.pid == me).unwrap();
        assert_eq!(Some(mine.session), stat(me).map(|s| s.session));
    }
}
