//! The observation of one run's migrations: what the side connections saw between two
//! migration boundaries — the locks ([`LockObserver`]) and the work counters
//! ([`CounterReader`]) — cut at each boundary ([`Observation::cut`]) and given to the
//! migration that was in progress. Each part is optional (off, or the server has no view);
//! with both off a cut costs nothing.
//!
//! A side connection can fail mid-run (the server restarted it, an admin killed it, a network
//! blip). Each part then reconnects — the lock sampler with a bounded backoff until it samples
//! again, the counter reader and the table probe once per boundary — and what it could not see
//! is kept in a [`GapBook`]: each cut gives its migration the [`Gap`]s that overlapped it (what
//! part, from when to when, why), and the book's [`GapEvent`]s (stopped, resumed, reconnected)
//! go to the dataset's log. A gap is the observation's fault, never the change's: the
//! migration's own results stand, only the figures of the part are partial.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use chrono::{DateTime, Local};
use turbo_hipster_sdk::support::LogFile;

use super::counters::{CounterReader, Reading};
use super::locks::{LockObserver, TableLocks};

/// The tag of the worker's own notes in a dataset's log (the observation's lines among them).
pub const NOTE_TAG: &str = "th";

/// A part of the observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// The lock sampler ([`LockObserver`]).
    Locks,
    /// The work counters ([`CounterReader`]).
    Counters,
    /// The table probe of rewrite detection ([`super::TableProbe`]).
    Rewrites,
}

impl Part {
    /// As the summaries and the log write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Locks => "locks",
            Part::Counters => "counters",
            Part::Rewrites => "rewrites",
        }
    }
}

/// A stretch of one migration's time during which one part of the observation saw nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    /// What was not observed.
    pub part: Part,
    /// From when (the failure, or the migration's start when the gap began before it).
    pub from: DateTime<Local>,
    /// Until when (the part saw again, or the migration's end when the gap went on).
    pub to: DateTime<Local>,
    /// The gap had not ended when the migration did.
    pub ongoing: bool,
    /// Why, one line (the side connection's error).
    pub why: String,
}

impl Gap {
    /// A gap at one point (a boundary's reading that failed): `from == to`.
    pub fn point(part: Part, at: DateTime<Local>, why: &str) -> Self {
        Gap {
            part,
            from: at,
            to: at,
            ongoing: false,
            why: one_line(why),
        }
    }

    /// Its length in seconds.
    pub fn seconds(&self) -> f64 {
        (self.to - self.from)
            .to_std()
            .map_or(0.0, |d| d.as_secs_f64())
    }
}

/// A line for the dataset's log: an observation stopped, resumed, reconnected.
#[derive(Debug, Clone, PartialEq)]
pub struct GapEvent {
    /// When it happened.
    pub at: DateTime<Local>,
    /// What to say.
    pub text: String,
}

/// A gap in progress.
#[derive(Debug, Clone)]
struct Open {
    /// When the part stopped seeing.
    since: DateTime<Local>,
    /// Where the current migration's share of it starts (`since`, or the last cut).
    counted_from: DateTime<Local>,
    why: String,
}

/// The gaps of one run's observation, shared by its parts (the lock sampler's thread writes
/// here too): what each part could not see, cut per migration, and the lines for the log.
#[derive(Debug, Default)]
pub struct GapBook {
    open: BTreeMap<Part, Open>,
    closed: Vec<Gap>,
    events: Vec<GapEvent>,
}

impl GapBook {
    /// `part` stopped seeing at `at` because of `why`; a part already stopped stays stopped
    /// (its first reason is kept).
    pub fn stopped(&mut self, part: Part, at: DateTime<Local>, why: &str) {
        if self.open.contains_key(&part) {
            return;
        }
        let why = one_line(why);
        self.events.push(GapEvent {
            at,
            text: format!(
                "observation: {} not observed from now: {why} (reconnecting; an observation \
                 fault, not the change's)",
                part.as_str()
            ),
        });
        self.open.insert(
            part,
            Open {
                since: at,
                counted_from: at,
                why,
            },
        );
    }

    /// `part` sees again from `at` (nothing when it had not stopped).
    pub fn resumed(&mut self, part: Part, at: DateTime<Local>) {
        let Some(open) = self.open.remove(&part) else {
            return;
        };
        let seconds = (at - open.since).to_std().map_or(0.0, |d| d.as_secs_f64());
        self.events.push(GapEvent {
            at,
            text: format!(
                "observation: {} observed again after a gap of {seconds:.1} s (reconnected)",
                part.as_str()
            ),
        });
        self.closed.push(Gap {
            part,
            from: open.counted_from,
            to: at,
            ongoing: false,
            why: open.why,
        });
    }

    /// Whether `part` is stopped now.
    pub fn is_stopped(&self, part: Part) -> bool {
        self.open.contains_key(&part)
    }

    /// A gap of a part read at boundaries (`from` .. `to`, ended already), and its log line.
    pub fn missed(&mut self, part: Part, from: DateTime<Local>, to: DateTime<Local>, why: &str) {
        let why = one_line(why);
        self.events.push(GapEvent {
            at: to,
            text: format!(
                "observation: {} not observed for the migration that ends here: {why} (an \
                 observation fault, not the change's)",
                part.as_str()
            ),
        });
        self.closed.push(Gap {
            part,
            from,
            to,
            ongoing: false,
            why,
        });
    }

    /// A line for the log that is no gap (a reading that failed and succeeded after a
    /// reconnection).
    pub fn note(&mut self, at: DateTime<Local>, text: &str) {
        self.events.push(GapEvent {
            at,
            text: one_line(text),
        });
    }

    /// At a migration boundary `at`: the gaps of the migration that ends there — those that
    /// ended since the last cut, and those going on, up to `at` (they go on for the next
    /// migration from `at`) — in part order, then time order.
    pub fn cut(&mut self, at: DateTime<Local>) -> Vec<Gap> {
        let mut gaps = std::mem::take(&mut self.closed);
        for (part, open) in &mut self.open {
            gaps.push(Gap {
                part: *part,
                from: open.counted_from,
                to: at,
                ongoing: true,
                why: open.why.clone(),
            });
            open.counted_from = at;
        }
        gaps.sort_by_key(|g| (g.part, g.from));
        gaps
    }

    /// The log lines since the last call, in time order.
    pub fn events(&mut self) -> Vec<GapEvent> {
        let mut events = std::mem::take(&mut self.events);
        events.sort_by_key(|e| e.at);
        events
    }
}

/// `text` on one line (line breaks and runs of blanks as one space), at most 300 characters.
pub fn one_line(text: &str) -> String {
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 300 {
        line = line.chars().take(299).collect();
        line.push('…');
    }
    line
}

/// What one migration did, as observed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cut {
    /// Its locks, per table.
    pub locks: Vec<TableLocks>,
    /// Its work counters' deltas; `None` when not counted.
    pub counters: Option<BTreeMap<String, i64>>,
    /// What was not observed during it.
    pub gaps: Vec<Gap>,
}

/// The last counter reading.
#[derive(Debug, Default)]
enum Last {
    /// None yet (the first cut).
    #[default]
    Nothing,
    /// Read at that cut.
    Read(Reading, DateTime<Local>),
    /// The reading at that cut failed, for that reason.
    Failed(String, DateTime<Local>),
}

/// The side observations of one run.
#[derive(Default)]
pub struct Observation {
    locks: Option<LockObserver>,
    counters: Option<CounterReader>,
    last: Mutex<Last>,
    gaps: Arc<Mutex<GapBook>>,
}

impl Observation {
    /// Observes with these parts (either may be off).
    pub fn new(locks: Option<LockObserver>, counters: Option<CounterReader>) -> Self {
        let gaps = locks.as_ref().map(LockObserver::gaps).unwrap_or_default();
        Self {
            locks,
            counters,
            last: Mutex::new(Last::Nothing),
            gaps,
        }
    }

    /// The lock observer, when locks are observed.
    pub fn locks(&self) -> Option<&LockObserver> {
        self.locks.as_ref()
    }

    fn book(&self) -> std::sync::MutexGuard<'_, GapBook> {
        self.gaps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state of every table now, when rewrite detection is on (see
    /// [`LockObserver::tables`]); a read that failed and succeeded after a reconnection is
    /// said in the log ([`Observation::events`]). A read that failed is the caller's to give to
    /// the migration it concerns ([`Gap::point`] with [`Part::Rewrites`]).
    pub fn tables(&self) -> Option<Result<super::rewrites::Snapshot, super::EngineError>> {
        let read = self.locks.as_ref()?.tables_retrying()?;
        Some(read.map(|(snapshot, recovered)| {
            if let Some(e) = recovered {
                self.book().note(
                    Local::now(),
                    &format!(
                        "observation: reading the tables failed ({e}); read again after \
                         reconnecting"
                    ),
                );
            }
            snapshot
        }))
    }

    /// The counter reader, when work is counted.
    pub fn counters(&self) -> Option<&CounterReader> {
        self.counters.as_ref()
    }

    /// Ends the current migration's observation: what was seen since the last cut (the
    /// counters: `None` at the first cut, or when the reading failed — even after reconnecting
    /// once —, which also makes the next cut's `None`; both such migrations get a counters
    /// [`Gap`]) and what was not.
    pub fn cut(&self) -> Cut {
        self.cut_at(Instant::now())
    }

    /// [`Observation::cut`] at a boundary whose line arrived at `line`: the locks sampled
    /// after that instant are the next migration's ([`LockObserver::cut_at`]); the counters
    /// and gaps are read now.
    pub fn cut_at(&self, line: Instant) -> Cut {
        let locks = self
            .locks
            .as_ref()
            .map(|l| l.cut_at(line))
            .unwrap_or_default();
        let at = Local::now();
        let counters = self
            .counters
            .as_ref()
            .and_then(|reader| self.count(reader, at));
        let gaps = self.book().cut(at);
        Cut {
            locks,
            counters,
            gaps,
        }
    }

    /// The counters since the last cut, the gaps of a failed reading into the book.
    fn count(&self, reader: &CounterReader, at: DateTime<Local>) -> Option<BTreeMap<String, i64>> {
        let now = reader.read_retrying();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let mut book = self.book();
        let (counters, next) = match (std::mem::take(&mut *last), now) {
            (Last::Read(before, _), Ok((after, recovered))) => {
                if let Some(e) = recovered {
                    book.note(
                        at,
                        &format!(
                            "observation: reading the work counters failed ({e}); read again \
                             after reconnecting"
                        ),
                    );
                }
                let delta = before.delta(&after, reader.names());
                (Some(delta), Last::Read(after, at))
            }
            (Last::Failed(why, since), Ok((after, _))) => {
                book.missed(
                    Part::Counters,
                    since,
                    at,
                    &format!("no reading at its start: {why}"),
                );
                (None, Last::Read(after, at))
            }
            (Last::Nothing, Ok((after, _))) => (None, Last::Read(after, at)),
            (previous, Err(e)) => {
                let why = one_line(&e.to_string());
                tracing::warn!("reading the work counters: {why}");
                match previous {
                    Last::Read(_, since) | Last::Failed(_, since) => {
                        book.missed(Part::Counters, since, at, &why);
                    }
                    Last::Nothing => book.note(
                        at,
                        &format!("observation: reading the work counters failed: {why}"),
                    ),
                }
                (None, Last::Failed(why, at))
            }
        };
        *last = next;
        counters
    }

    /// The log lines about the observation's gaps since the last call, in time order.
    pub fn events(&self) -> Vec<GapEvent> {
        self.book().events()
    }

    /// Writes the observation's news since the last call (a part stopped, resumed,
    /// reconnected) into the dataset's `log` under `tag`, each line at the time it happened,
    /// through `mask`.
    pub fn log_events(&self, log: &LogFile, tag: &str, mask: &dyn Fn(&str) -> String) {
        for event in self.events() {
            let _ = log.line_at(&event.at, tag, &mask(&event.text));
        }
    }

    /// Lets the tool's sessions publish what they counted before the last cut of a phase
    /// ([`CounterReader::settle`]).
    pub fn settle(&self) {
        if let Some(reader) = &self.counters {
            reader.settle();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::test_psql::run;
    use chrono::TimeZone;

    /// `sql`'s output in database `db` of the shared PostgreSQL server (one value).
    fn psql_value(db: &str, sql: &str) -> String {
        let out = std::process::Command::new("psql")
            .args([
                "-X",
                "-At",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sql}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// On the real server: the three side connections (named in `pg_stat_activity`) are
    /// killed between two boundaries. The lock sampler records a gap and samples again (a lock
    /// held after the kill is seen); the counter reader and the table probe fail their next
    /// read, reconnect once and read: the counters are there, no gap for them, a log line
    /// each.
    #[test]
    fn postgresql_side_connections_killed_reconnect_with_a_gap_for_the_locks_only() {
        let db = format!("th_gaps_{}", std::process::id());
        run("postgres", &format!("DROP DATABASE IF EXISTS {db}"));
        run("postgres", &format!("CREATE DATABASE {db}"));
        run(&db, "CREATE TABLE orders (id int)");
        let server = super::super::Server::new(
            super::super::Engine::PostgreSql,
            super::super::Connection::default(),
            std::path::PathBuf::new(),
        );
        let locks = server
            .observe_locks(&db, std::time::Duration::from_millis(20))
            .unwrap()
            .with_tables(server.table_probe(&db).unwrap());
        let observation = Observation::new(Some(locks), Some(server.count_work(&db).unwrap()));
        observation.cut();
        assert!(observation.tables().unwrap().is_ok());
        let names = psql_value(
            &db,
            "SELECT string_agg(application_name, ',' ORDER BY application_name) \
             FROM pg_stat_activity WHERE datname = current_database() \
               AND application_name LIKE 'turbo-hipster %'",
        );
        assert_eq!(
            names,
            "turbo-hipster counters,turbo-hipster locks,turbo-hipster rewrites"
        );
        let killed = psql_value(
            &db,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name LIKE 'turbo-hipster %'",
        );
        assert_eq!(killed, "3");
        std::thread::sleep(std::time::Duration::from_millis(700));
        run(
            &db,
            "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(0.4); \
             INSERT INTO orders VALUES (1); COMMIT",
        );
        let cut = observation.cut();
        let tables = observation.tables().unwrap();
        let events = observation.events();
        let second = observation.cut();
        drop(observation);
        run("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));

        let parts: Vec<Part> = cut.gaps.iter().map(|g| g.part).collect();
        assert_eq!(parts, [Part::Locks], "{cut:?}");
        let gap = &cut.gaps[0];
        assert!(!gap.ongoing && gap.seconds() < 1.0, "{gap:?}");
        assert!(gap.why.contains("sampling pg_locks"), "{gap:?}");
        let orders = cut.locks.iter().find(|l| l.table == "orders");
        assert!(
            orders.is_some_and(|o| o.longest_blocking.is_some()),
            "the lock taken after the kill is seen: {cut:?}"
        );
        // Read again after reconnecting (the figures' exactness is the counters' tests').
        assert!(cut.counters.is_some(), "{cut:?}");
        assert!(tables.is_ok(), "{tables:?}");
        let texts: Vec<&str> = events.iter().map(|e| e.text.as_str()).collect();
        let has = |what: &str| texts.iter().any(|t| t.contains(what));
        assert!(has("locks not observed from now"), "{texts:?}");
        assert!(has("locks observed again after a gap"), "{texts:?}");
        assert!(
            has("reading the work counters failed") && has("reading the tables failed"),
            "{texts:?}"
        );
        assert!(second.gaps.is_empty(), "{second:?}");
    }

    fn t(ms: i64) -> DateTime<Local> {
        Local.timestamp_millis_opt(1_700_000_000_000 + ms).unwrap()
    }

    #[test]
    fn a_gap_within_a_migration_is_its_own_and_logged_twice() {
        let mut book = GapBook::default();
        book.stopped(Part::Locks, t(100), "connection\n  reset");
        // A second failure while stopped changes nothing.
        book.stopped(Part::Locks, t(200), "other");
        assert!(book.is_stopped(Part::Locks));
        book.resumed(Part::Locks, t(1_400));
        assert!(!book.is_stopped(Part::Locks));
        let gaps = book.cut(t(2_000));
        assert_eq!(
            gaps,
            [Gap {
                part: Part::Locks,
                from: t(100),
                to: t(1_400),
                ongoing: false,
                why: "connection reset".into(),
            }]
        );
        assert!((gaps[0].seconds() - 1.3).abs() < 1e-9);
        let events = book.events();
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(events[0]
            .text
            .contains("locks not observed from now: connection reset"));
        assert!(events[1]
            .text
            .contains("locks observed again after a gap of 1.3 s"));
        // Nothing left for the next migration.
        assert!(book.cut(t(3_000)).is_empty());
        assert!(book.events().is_empty());
    }

    #[test]
    fn a_gap_across_boundaries_is_split_per_migration() {
        let mut book = GapBook::default();
        book.stopped(Part::Locks, t(500), "killed");
        let first = book.cut(t(1_000));
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].from, first[0].to), (t(500), t(1_000)));
        assert!(first[0].ongoing);
        // A migration entirely inside the gap.
        let second = book.cut(t(2_000));
        assert_eq!((second[0].from, second[0].to), (t(1_000), t(2_000)));
        assert!(second[0].ongoing);
        book.resumed(Part::Locks, t(2_500));
        let third = book.cut(t(3_000));
        assert_eq!((third[0].from, third[0].to), (t(2_000), t(2_500)));
        assert!(!third[0].ongoing);
        // The log's resumption counts the whole gap.
        let events = book.events();
        assert!(
            events[1].text.contains("after a gap of 2.0 s"),
            "{events:?}"
        );
    }

    #[test]
    fn boundary_gaps_and_parts_are_kept_apart_in_order() {
        let mut book = GapBook::default();
        book.stopped(Part::Locks, t(300), "sampler");
        book.missed(Part::Counters, t(0), t(1_000), "reader");
        book.note(t(50), "a reconnection that worked");
        let gaps = book.cut(t(1_000));
        let parts: Vec<Part> = gaps.iter().map(|g| g.part).collect();
        assert_eq!(parts, [Part::Locks, Part::Counters]);
        assert_eq!(gaps[1].from, t(0));
        let events = book.events();
        assert_eq!(events[0].at, t(50), "in time order: {events:?}");
        assert_eq!(events.len(), 3);
        let point = Gap::point(Part::Rewrites, t(7), "probe");
        assert_eq!((point.from, point.to, point.seconds()), (t(7), t(7), 0.0));
    }

    #[test]
    fn one_line_joins_and_bounds() {
        assert_eq!(one_line("a\n\tb  c\r\n"), "a b c");
        let long = "x".repeat(400);
        assert_eq!(one_line(&long).chars().count(), 300);
    }
}
