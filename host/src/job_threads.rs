//! The threads that run plugin jobs.
//!
//! A job runs on a thread of its own so that a plugin that blocks (for minutes, as a database
//! migration does) never holds up the Gearman connections. Threads are kept after a job and
//! reused, the most recently idle first (its stack and caches are still warm); one idle for
//! [`KEEP_ALIVE`] ends. Handing a job over costs one wake-up of a parked thread, and nothing
//! comes back to the async runtime: the job reports and finishes from its own thread. The
//! threads are named `th-job` (as `top -H` and `ps -L` show them).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle job thread waits for the next job before it ends.
pub const KEEP_ALIVE: Duration = Duration::from_secs(60);

/// A job for a job thread.
pub type Task = Box<dyn FnOnce() + Send + 'static>;

/// An idle thread's mailbox.
struct Mailbox {
    task: Mutex<Option<Task>>,
    thread: Thread,
}

thread_local! {
    /// On a job thread: its mailbox, and whether it is already listed as idle.
    static CURRENT: std::cell::RefCell<Option<(Arc<Mailbox>, bool)>> =
        const { std::cell::RefCell::new(None) };
}

/// Called by a task on a job thread once what remains of it is short bookkeeping: the thread
/// may be handed its next task already (which then starts as soon as this one returns) instead
/// of a new thread being started for it. Does nothing elsewhere or when called twice.
pub fn release_early() {
    CURRENT.with(|c| {
        if let Some((mailbox, listed)) = c.borrow_mut().as_mut() {
            if !*listed {
                *listed = true;
                lock(idle()).push(mailbox.clone());
            }
        }
    });
}

fn idle() -> &'static Mutex<Vec<Arc<Mailbox>>> {
    static IDLE: OnceLock<Mutex<Vec<Arc<Mailbox>>>> = OnceLock::new();
    IDLE.get_or_init(|| Mutex::new(Vec::new()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `task` on a job thread: an idle one if there is one, else a new one.
///
/// # Errors
/// The operating system refused a new thread.
pub fn spawn(task: Task) -> std::io::Result<()> {
    let parked = lock(idle()).pop();
    if let Some(mailbox) = parked {
        *lock(&mailbox.task) = Some(task);
        mailbox.thread.unpark();
        return Ok(());
    }
    std::thread::Builder::new()
        .name("th-job".into())
        .spawn(move || job_thread(task))
        .map(drop)
}

fn job_thread(first: Task) {
    let mailbox = Arc::new(Mailbox {
        task: Mutex::new(None),
        thread: std::thread::current(),
    });
    let mut task = Some(first);
    while let Some(t) = task.take() {
        CURRENT.with(|c| *c.borrow_mut() = Some((mailbox.clone(), false)));
        // A panic escaping a job is a bug of ours (plugins' panics are caught at the plugin
        // boundary); whoever waits for the job notices through what the task dropped.
        if catch_unwind(AssertUnwindSafe(t)).is_err() {
            tracing::error!("a job's thread panicked");
        }
        release_early();
        task = wait_for_task(&mailbox);
    }
    CURRENT.with(|c| *c.borrow_mut() = None);
}

/// Parks until a task arrives; `None` after [`KEEP_ALIVE`] without one (the thread then ends).
fn wait_for_task(mailbox: &Arc<Mailbox>) -> Option<Task> {
    let deadline = Instant::now() + KEEP_ALIVE;
    loop {
        if let Some(t) = lock(&mailbox.task).take() {
            return Some(t);
        }
        let now = Instant::now();
        if now >= deadline {
            let mut idle = lock(idle());
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

    /// The pool is global: these tests take turns so that one's idle threads do not land in
    /// another's hands mid-test.
    fn serial() -> std::sync::MutexGuard<'static, ()> {
        static SERIAL: Mutex<()> = Mutex::new(());
        lock(&SERIAL)
    }

    #[test]
    fn a_thread_released_early_takes_the_next_task_after_its_current_one() {
        let _serial = serial();
        // Threads of an earlier test may still be on their way back to the idle list.
        std::thread::sleep(Duration::from_millis(50));
        let (tx, rx) = mpsc::channel();
        let (finish_tx, finish_rx) = mpsc::channel::<()>();
        let t = tx.clone();
        spawn(Box::new(move || {
            release_early();
            release_early(); // harmless twice
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
        spawn(Box::new(move || {
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
        // Elsewhere (not on a job thread) it does nothing.
        release_early();
    }

    #[test]
    fn runs_tasks_and_reuses_idle_threads() {
        let _serial = serial();
        let (tx, rx) = mpsc::channel();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..20 {
            let t = tx.clone();
            spawn(Box::new(move || {
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
            while lock(idle()).last().map(|m| m.thread.id()) != Some(id) {
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
        let _serial = serial();
        let (tx, rx) = mpsc::channel();
        let gate = Arc::new(std::sync::Barrier::new(3));
        for _ in 0..3 {
            let (tx, gate) = (tx.clone(), gate.clone());
            spawn(Box::new(move || {
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
        spawn(Box::new(|| panic!("a bug in a job"))).unwrap();
        let tx2 = tx.clone();
        std::thread::sleep(Duration::from_millis(50));
        spawn(Box::new(move || tx2.send(Some("after".into())).unwrap())).unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap().as_deref(),
            Some("after")
        );
    }
}
