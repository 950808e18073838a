//! The threads that run plugin jobs.
//!
//! A job runs on a thread of its own so that a plugin that blocks (for minutes, as a database
//! migration does) never holds up the Gearman connections. Threads are kept after a job and
//! reused, the most recently idle first (its stack and caches are still warm); one idle for
//! [`KEEP_ALIVE`] ends. Handing a job over costs one wake-up of a parked thread, and nothing
//! comes back to the async runtime: the job reports and finishes from its own thread. The
//! threads are named `th-job` (as `top -H` and `ps -L` show them).
//!
//! The pool ([`JobThreads`]) belongs to whoever runs jobs (the service's
//! [`crate::pipeline::Pipeline`]), not to the process: two services in one process (as in the
//! tests) never hand each other threads. Dropping the pool closes it: idle threads end at once,
//! busy ones when their task returns. It does not wait for them: a task that must be waited
//! for says so itself (the daemon's drain waits for every job's last report).

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle job thread waits for the next job before it ends.
pub const KEEP_ALIVE: Duration = Duration::from_secs(60);

/// A job for a job thread; it may hand its thread over early with [`Release::now`].
pub type Task = Box<dyn FnOnce(&Release<'_>) + Send + 'static>;

/// An idle thread's mailbox.
struct Mailbox {
    task: Mutex<Option<Task>>,
    thread: Thread,
}

/// What the pool's threads share: the idle ones, most recently idle last.
struct Shared {
    idle: Mutex<Vec<Arc<Mailbox>>>,
    closed: AtomicBool,
}

/// A pool of job threads; closed when dropped.
pub struct JobThreads {
    shared: Arc<Shared>,
}

/// Given to a running task: lets it offer its thread for the next task before it returns.
pub struct Release<'a> {
    shared: &'a Shared,
    mailbox: &'a Arc<Mailbox>,
    listed: Cell<bool>,
}

impl Release<'_> {
    /// Called once what remains of the task is short bookkeeping: the thread may be handed its
    /// next task already (which then starts as soon as this one returns) instead of a new
    /// thread being started for it. Does nothing when called twice or once the pool is closed.
    pub fn now(&self) {
        if self.listed.replace(true) || self.shared.closed.load(Ordering::Acquire) {
            return;
        }
        lock(&self.shared.idle).push(self.mailbox.clone());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for JobThreads {
    fn default() -> Self {
        Self::new()
    }
}

impl JobThreads {
    /// An empty pool: threads are started as tasks come.
    pub fn new() -> Self {
        JobThreads {
            shared: Arc::new(Shared {
                idle: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Runs `task` on a job thread: an idle one if there is one, else a new one.
    ///
    /// # Errors
    /// The operating system refused a new thread.
    pub fn spawn(&self, task: Task) -> std::io::Result<()> {
        let parked = lock(&self.shared.idle).pop();
        if let Some(mailbox) = parked {
            *lock(&mailbox.task) = Some(task);
            mailbox.thread.unpark();
            return Ok(());
        }
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("th-job".into())
            .spawn(move || job_thread(&shared, task))
            .map(drop)
    }
}

impl Drop for JobThreads {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        let idle = std::mem::take(&mut *lock(&self.shared.idle));
        for mailbox in idle {
            mailbox.thread.unpark();
        }
    }
}

fn job_thread(shared: &Shared, first: Task) {
    let mailbox = Arc::new(Mailbox {
        task: Mutex::new(None),
        thread: std::thread::current(),
    });
    let mut task = Some(first);
    while let Some(t) = task.take() {
        let release = Release {
            shared,
            mailbox: &mailbox,
            listed: Cell::new(false),
        };
        // A panic escaping a job is a bug of ours (plugins' panics are caught at the plugin
        // boundary); whoever waits for the job notices through what the task dropped.
        if catch_unwind(AssertUnwindSafe(|| t(&release))).is_err() {
            tracing::error!("a job's thread panicked");
        }
        release.now();
        task = wait_for_task(shared, &mailbox);
    }
}

/// Parks until a task arrives; `None` after [`KEEP_ALIVE`] without one, or once the pool is
/// closed (the thread then ends).
fn wait_for_task(shared: &Shared, mailbox: &Arc<Mailbox>) -> Option<Task> {
    let deadline = Instant::now() + KEEP_ALIVE;
    loop {
        if let Some(t) = lock(&mailbox.task).take() {
            return Some(t);
        }
        // Nothing spawns on a closed pool, so no task can be on its way.
        if shared.closed.load(Ordering::Acquire) {
            return None;
        }
        let now = Instant::now();
        if now >= deadline {
            let mut idle = lock(&shared.idle);
            if let Some(i) = idle.iter().position(|m| Arc::ptr_eq(m, mailbox)) {
                idle.remove(i);
                return None;
            }
            // A spawner took this thread and is about to hand it a task: wait for it.
            drop(idle);
            std::thread::park();
            continue;
        }
        std::thread::park_timeout(deadline - now);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_thread_released_early_takes_the_next_task_after_its_current_one() {
        let pool = JobThreads::new();
        let (tx, rx) = mpsc::channel();
        let (finish_tx, finish_rx) = mpsc::channel::<()>();
        let t = tx.clone();
        pool.spawn(Box::new(move |release| {
            release.now();
            release.now(); // harmless twice
            t.send(("first started", std::thread::current().id()))
                .unwrap();
            finish_rx.recv().unwrap();
            t.send(("first ended", std::thread::current().id()))
                .unwrap();
        }))
        .unwrap();
        let (what, first) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(what, "first started");
        let t = tx.clone();
        pool.spawn(Box::new(move |_| {
            t.send(("second", std::thread::current().id())).unwrap();
        }))
        .unwrap();
        // The second task was handed to the busy thread: it waits for the first to end.
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        finish_tx.send(()).unwrap();
        let ended = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let second = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(ended, ("first ended", first));
        assert_eq!(second, ("second", first));
    }

    #[test]
    fn runs_tasks_and_reuses_idle_threads() {
        let pool = JobThreads::new();
        let (tx, rx) = mpsc::channel();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..20 {
            let t = tx.clone();
            pool.spawn(Box::new(move |_| {
                t.send(std::thread::current().id()).unwrap()
            }))
            .unwrap();
            let id = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_ne!(
                id,
                std::thread::current().id(),
                "ran on the caller's thread"
            );
            ids.insert(id);
            // Wait until the thread is back on the idle list, on top.
            let start = Instant::now();
            while lock(&pool.shared.idle).last().map(|m| m.thread.id()) != Some(id) {
                assert!(start.elapsed() < Duration::from_secs(5), "never idle again");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // Sequential tasks all ran on the most recently idle thread.
        assert_eq!(
            ids.len(),
            1,
            "20 sequential tasks used {} threads",
            ids.len()
        );
    }

    #[test]
    fn parallel_tasks_get_their_own_threads_and_a_panic_is_contained() {
        let pool = JobThreads::new();
        let (tx, rx) = mpsc::channel();
        let gate = Arc::new(std::sync::Barrier::new(3));
        for _ in 0..3 {
            let (tx, gate) = (tx.clone(), gate.clone());
            pool.spawn(Box::new(move |_| {
                // All three must run at once to pass the barrier.
                gate.wait();
                tx.send(std::thread::current().name().map(str::to_string))
                    .unwrap();
            }))
            .unwrap();
        }
        for _ in 0..3 {
            let name = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(name.as_deref(), Some("th-job"));
        }
        pool.spawn(Box::new(|_| panic!("a bug in a job"))).unwrap();
        let tx2 = tx.clone();
        std::thread::sleep(Duration::from_millis(50));
        pool.spawn(Box::new(move |_| tx2.send(Some("after".into())).unwrap()))
            .unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap().as_deref(),
            Some("after")
        );
    }

    /// Closing the pool ends its idle threads at once (long before [`KEEP_ALIVE`]) and a busy
    /// one when its task returns.
    #[test]
    fn a_closed_pool_ends_its_threads() {
        let alive = |tid: i32| std::path::Path::new(&format!("/proc/self/task/{tid}")).exists();
        let ends_within_5s = |tid: i32| {
            let start = Instant::now();
            while alive(tid) {
                if start.elapsed() > Duration::from_secs(5) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            true
        };
        let pool = JobThreads::new();
        let (tx, rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let t = tx.clone();
        pool.spawn(Box::new(move |_| {
            t.send(nix::unistd::gettid().as_raw()).unwrap();
            go_rx.recv().unwrap();
        }))
        .unwrap();
        let busy = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        pool.spawn(Box::new(move |_| {
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
        }))
        .unwrap();
        let idle = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_ne!(busy, idle);
        // Wait until the quick task's thread is idle.
        let start = Instant::now();
        while lock(&pool.shared.idle).is_empty() {
            assert!(start.elapsed() < Duration::from_secs(5), "never idle");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(alive(idle) && alive(busy));
        drop(pool);
        assert!(ends_within_5s(idle), "the idle thread outlived its pool");
        assert!(alive(busy), "the busy thread ended before its task");
        go_tx.send(()).unwrap();
        assert!(ends_within_5s(busy), "the busy thread outlived its task");
    }
}
