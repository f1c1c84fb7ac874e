//! The blocking pool: elastic OS threads for work that would stall a loop.
//!
//! Regular files are always "ready" to epoll, so reading one on a
//! dispatcher's thread would block every coroutine of that thread. Such work
//! (regular-file I/O, [`crate::fs`], [`spawn_blocking`] closures) runs here
//! instead, and the calling coroutine parks until the job is done.
//!
//! # The hand-off
//!
//! ```text
//!  caller (coroutine or thread)          pool thread
//!  ────────────────────────────          ───────────
//!  JoinState::new_detached()
//!  lock state; push job; ─────────────►  wakes (Condvar) or is started
//!    wake one idle thread, or start        pops the job, unlocks
//!    one if every thread is busy           runs it (panic caught)
//!    and fewer than max exist              JoinState::complete_if_pending
//!  GoTask::join parks  ◄───────────────    wakes the joiner's Waker
//! ```
//!
//! The job owns everything it touches (`Vec` buffers, an `Arc` of the file
//! descriptor) and hands it back through its result: nothing on the pool
//! ever writes into a parked coroutine's stack.
//!
//! # Thread states
//!
//! A pool thread is *busy* (running a job) or *idle* (waiting on the
//! condition variable). An idle thread exits after [`KEEP_ALIVE`] without
//! work, so an unused pool costs no threads.
//!
//! # Keeping the loops on time
//!
//! The pool exists so that the event loops stay responsive, so it must not
//! crowd them out of the CPUs either:
//!
//! - At most `max_threads` exist; the default ([`default_max_threads`]) is
//!   the number of CPUs, at least 2. On a 2-core machine, tokio's dozens of
//!   file helper threads made its loops' timers 40–65 ms late. A few
//!   concurrent reads already saturate the page cache or a device queue.
//! - Pool threads run at a lower priority: nice [`DEFAULT_NICE`] (19), so a
//!   loop thread woken by its timer or an event preempts a busy pool thread
//!   at once. Measured on 2 cores with 200 concurrent 1 MiB reads from the
//!   page cache and a 1 ms ticker: with 4 threads at nice 0, the ticker was
//!   2.3–7 ms late; with 2 threads at nice 0, 0.6–3.3 ms; with 2 threads at
//!   nice 19, 26–632 µs, and the reads finished as fast. The cost: when the
//!   loops keep every CPU busy, blocking jobs get little CPU until they
//!   idle. `Builder::blocking_nice(0)` gives a runtime's pool normal
//!   priority instead.
//!
//! # Shutdown
//!
//! [`BlockingPool::shutdown_timeout`] stops accepting jobs, cancels the
//! queued ones (their joiners get [`JoinError::Cancelled`]), and waits for
//! the running ones at most the given time. A job still running then is
//! detached: its thread finishes it and exits, and the report counts it. A
//! stuck job therefore never hangs a shutdown.

use std::collections::VecDeque;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::loom::{Arc, Condvar, Mutex, lock, thread};
use crate::task::{self, GoTask, JoinError, JoinRef, JoinState};

/// How long an idle pool thread waits for work before it exits.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Nice value of pool threads (see the module docs).
pub(crate) const DEFAULT_NICE: i32 = 19;

/// Default thread limit of a pool: the number of CPUs, at least 2 (see the
/// module docs for why it is small).
pub(crate) fn default_max_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |cpus| cpus.get().max(2))
}

/// A queued job: runs once, or is told it never will.
trait Job: Send {
    fn run(self: Box<Self>);
    fn cancel(self: Box<Self>);
}

struct Task<F, T> {
    function: F,
    join: JoinRef<T>,
}

impl<F, T> Job for Task<F, T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    fn run(self: Box<Self>) {
        let Task { function, join } = *self;
        if join.cancel_requested() {
            // Cancelled before it started: like an unstarted task, it never
            // runs (the cancel already completed the handle).
            return;
        }
        // A handle cancelled while the job runs needs no result, but the job still runs: it may
        // have side effects the caller relies on (a write reaching disk).
        let result = panic::catch_unwind(AssertUnwindSafe(function)).map_err(JoinError::Panicked);
        join.complete_if_pending(result);
    }

    fn cancel(self: Box<Self>) {
        self.join.complete_if_pending(Err(JoinError::Cancelled));
    }
}

struct State {
    queue: VecDeque<Box<dyn Job>>,
    /// Threads alive (busy or idle).
    threads: usize,
    /// Threads waiting for work.
    idle: usize,
    shutdown: bool,
}

struct Inner {
    state: Mutex<State>,
    /// Signalled when a job is queued or the pool shuts down.
    work: Condvar,
    /// Signalled when a thread exits.
    exited: Condvar,
    max_threads: usize,
    keep_alive: Duration,
    /// Name of the pool's threads.
    thread_name: String,
    /// Nice value the pool's threads set for themselves.
    nice: i32,
}

/// An elastic pool of OS threads for blocking work (see the module docs).
#[derive(Clone)]
pub(crate) struct BlockingPool {
    inner: Arc<Inner>,
}

/// What a [`BlockingPool::shutdown_timeout`] left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShutdownReport {
    /// Queued jobs that never ran (their joiners got `Cancelled`).
    pub(crate) cancelled: usize,
    /// Threads still running a job at the deadline, left to finish alone.
    pub(crate) detached: usize,
}

impl BlockingPool {
    /// A pool of at most `max_threads` threads (at least one).
    pub(crate) fn new(max_threads: usize) -> Self {
        Self::with_keep_alive(max_threads, KEEP_ALIVE)
    }

    /// A pool whose threads are called `thread_name` and run at `nice` (a
    /// runtime's own pool).
    pub(crate) fn named(max_threads: usize, thread_name: String, nice: i32) -> Self {
        Self::build(max_threads, KEEP_ALIVE, thread_name, nice)
    }

    pub(crate) fn with_keep_alive(max_threads: usize, keep_alive: Duration) -> Self {
        Self::build(
            max_threads,
            keep_alive,
            String::from("nimgo-blocking"),
            DEFAULT_NICE,
        )
    }

    fn build(max_threads: usize, keep_alive: Duration, thread_name: String, nice: i32) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    threads: 0,
                    idle: 0,
                    shutdown: false,
                }),
                work: Condvar::new(),
                exited: Condvar::new(),
                max_threads: max_threads.max(1),
                keep_alive,
                thread_name,
                nice,
            }),
        }
    }

    /// The process-wide pool, shared by every thread that is not a runtime
    /// worker.
    pub(crate) fn global() -> &'static BlockingPool {
        static GLOBAL: OnceLock<BlockingPool> = OnceLock::new();
        GLOBAL.get_or_init(|| BlockingPool::new(default_max_threads()))
    }

    /// Threads alive now (busy or idle).
    #[cfg(test)]
    pub(crate) fn threads(&self) -> usize {
        lock(&self.inner.state).threads
    }

    /// Queues `function`; its handle completes when it has run.
    pub(crate) fn spawn<F, T>(&self, function: F) -> GoTask<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let join = task::new_join(JoinState::new_detached());
        let job = Box::new(Task {
            function,
            join: join.clone(),
        });
        self.submit(job);
        GoTask::from_join(join)
    }

    fn submit(&self, job: Box<dyn Job>) {
        let mut state = lock(&self.inner.state);
        if state.shutdown {
            drop(state);
            job.cancel();
            return;
        }
        state.queue.push_back(job);
        if state.idle >= state.queue.len() {
            drop(state);
            self.inner.work.notify_one();
            return;
        }
        if state.threads < self.inner.max_threads {
            state.threads += 1;
            drop(state);
            if let Err(error) = self.start_thread() {
                let mut state = lock(&self.inner.state);
                state.threads -= 1;
                if state.threads == 0 {
                    // No thread will ever run the queue: fail its jobs.
                    let jobs: Vec<_> = state.queue.drain(..).collect();
                    drop(state);
                    for job in jobs {
                        job.cancel();
                    }
                    eprintln!("nimgo: cannot start a blocking-pool thread: {error}");
                }
            }
        } else {
            drop(state);
            // Every thread is busy; one of them takes the job when done. An
            // idle thread that has not yet re-checked the queue may also.
            self.inner.work.notify_one();
        }
    }

    fn start_thread(&self) -> io::Result<()> {
        let inner = self.inner.clone();
        thread::Builder::new()
            .name(self.inner.thread_name.clone())
            .spawn(move || worker(&inner))
            .map(drop)
    }

    /// Stops the pool: cancels queued jobs and waits at most `timeout` for
    /// running ones; those still running are detached and counted.
    pub(crate) fn shutdown_timeout(&self, timeout: Duration) -> ShutdownReport {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = lock(&self.inner.state);
        state.shutdown = true;
        let jobs: Vec<_> = state.queue.drain(..).collect();
        drop(state);
        self.inner.work.notify_all();
        let cancelled = jobs.len();
        for job in jobs {
            job.cancel();
        }
        let mut state = lock(&self.inner.state);
        while state.threads > 0 {
            let wait = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(wait) if !wait.is_zero() => wait,
                    _ => break,
                },
                None => Duration::from_secs(3600),
            };
            state = match self.inner.exited.wait_timeout(state, wait) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        ShutdownReport {
            cancelled,
            detached: state.threads,
        }
    }
}

/// The loop of one pool thread.
fn worker(inner: &Inner) {
    if inner.nice != 0
        && let Err(error) = crate::sys::thread::set_current_thread_nice(inner.nice)
    {
        // Only a negative value can fail (it needs CAP_SYS_NICE); the pool
        // still works at normal priority.
        eprintln!(
            "nimgo: blocking pool thread cannot set nice {}: {error}; running at normal priority",
            inner.nice
        );
    }
    let mut state = lock(&inner.state);
    loop {
        if let Some(job) = state.queue.pop_front() {
            drop(state);
            // The job's closure runs under its own `catch_unwind`; what can
            // still panic here is user code around it: the destructor of a
            // result nobody takes (the handle was cancelled or dropped). It
            // must not end this thread behind the pool's accounting.
            if panic::catch_unwind(AssertUnwindSafe(|| job.run())).is_err() {
                eprintln!("nimgo: a destructor of a blocking job's result panicked; ignored");
            }
            state = lock(&inner.state);
            continue;
        }
        if state.shutdown {
            break;
        }
        state.idle += 1;
        let (next, timed_out) = match inner.work.wait_timeout(state, inner.keep_alive) {
            Ok((state, result)) => (state, result.timed_out()),
            Err(poisoned) => {
                let (state, result) = poisoned.into_inner();
                (state, result.timed_out())
            }
        };
        state = next;
        state.idle -= 1;
        if timed_out && state.queue.is_empty() {
            break;
        }
    }
    state.threads -= 1;
    drop(state);
    inner.exited.notify_all();
}

/// Runs `function` on the blocking pool and returns its handle.
///
/// Waiting on the handle parks only the calling coroutine (or blocks a
/// plain thread) until the job is done; a panic in `function` reaches the
/// joiner as [`JoinError::Panicked`]. [`GoTask::cancel`] makes the waiter get
/// [`JoinError::Cancelled`] at once: a job that has not started never runs;
/// one already running cannot be stopped (it is an OS thread), so it runs on
/// to its end and its result is dropped.
///
/// ```
/// let sum = nimgo::spawn_blocking(|| (1..=10u32).sum::<u32>()).wait();
/// assert_eq!(sum, 55);
/// ```
pub fn spawn_blocking<F, T>(function: F) -> GoTask<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match current_pool() {
        Some(pool) => pool.spawn(function),
        None => BlockingPool::global().spawn(function),
    }
}

#[cfg(not(loom))]
thread_local! {
    /// The pool of the runtime this thread is a worker of, if any.
    static THREAD_POOL: std::cell::RefCell<Option<BlockingPool>> =
        const { std::cell::RefCell::new(None) };
}

/// Makes `pool` the one this thread's blocking work goes to (a runtime
/// worker's own pool).
#[cfg(not(loom))]
pub(crate) fn set_thread_pool(pool: BlockingPool) {
    THREAD_POOL.set(Some(pool));
}

/// The calling thread's runtime pool, if it is a runtime worker.
fn current_pool() -> Option<BlockingPool> {
    #[cfg(not(loom))]
    return THREAD_POOL
        .try_with(|pool| pool.borrow().clone())
        .ok()
        .flatten();
    #[cfg(loom)]
    return None;
}

/// Runs `function` on the pool and waits for it; re-raises its panic. A job
/// the pool did not run (it is shutting down, or no thread could be
/// started) is an `io::Error`, so file operations report it instead of
/// panicking.
pub(crate) fn run<F, T>(function: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    job_outcome(spawn_blocking(function).join())
}

/// A pool job's outcome as an `io::Result`: its value, a re-raised panic,
/// or an error if the pool did not run it.
pub(crate) fn job_outcome<T>(outcome: Result<T, JoinError>) -> io::Result<T> {
    match outcome {
        Ok(value) => Ok(value),
        Err(JoinError::Panicked(payload)) => panic::resume_unwind(payload),
        Err(JoinError::Cancelled) => Err(io::Error::other(
            "nimgo: the blocking pool did not run this operation (it is shutting down, or no \
             thread could be started)",
        )),
    }
}

/// [`run`] for an operation that itself returns an `io::Result`.
pub(crate) fn run_io<F, T>(function: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    run(function).and_then(|result| result)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn runs_jobs_and_returns_values() {
        let pool = BlockingPool::new(2);
        let tasks: Vec<_> = (0..10).map(|i| pool.spawn(move || i * 2)).collect();
        let values: Vec<i32> = tasks.into_iter().map(GoTask::wait).collect();
        assert_eq!(values, (0..10).map(|i| i * 2).collect::<Vec<_>>());
        assert!(pool.threads() <= 2);
    }

    #[test]
    fn idle_threads_exit_after_keep_alive() {
        let pool = BlockingPool::with_keep_alive(3, Duration::from_millis(20));
        let tasks: Vec<_> = (0..3).map(|_| pool.spawn(|| 1)).collect();
        crate::wait_all(tasks);
        let start = Instant::now();
        while pool.threads() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "threads never exited"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn shutdown_detaches_a_stuck_job() {
        let pool = BlockingPool::new(1);
        let (release, stuck) = mpsc::channel::<()>();
        let running = pool.spawn(move || stuck.recv().is_ok());
        let queued = pool.spawn(|| 5);
        // Wait until the stuck job runs (the queued one waits behind it).
        while lock(&pool.inner.state).queue.len() > 1 {
            std::thread::yield_now();
        }
        let report = pool.shutdown_timeout(Duration::from_millis(20));
        assert_eq!(report.detached, 1);
        assert_eq!(report.cancelled, 1);
        assert!(queued.join().unwrap_err().is_cancelled());
        release.send(()).unwrap();
        assert!(running.wait());
        // A job submitted after shutdown is cancelled, not lost.
        assert!(pool.spawn(|| 1).join().unwrap_err().is_cancelled());
    }

    #[test]
    fn cancel_returns_promptly_while_the_job_runs_on() {
        let (started_tx, started) = mpsc::channel::<()>();
        let (release, stuck) = mpsc::channel::<()>();
        let (done_tx, done) = mpsc::channel::<()>();
        let task = spawn_blocking(move || {
            started_tx.send(()).unwrap();
            stuck.recv().unwrap();
            done_tx.send(()).unwrap();
        });
        started.recv().unwrap();
        task.cancel();
        assert!(task.join().unwrap_err().is_cancelled());
        release.send(()).unwrap();
        done.recv().unwrap();
    }

    #[test]
    fn cancelled_before_start_never_runs() {
        let pool = BlockingPool::new(1);
        let (release, stuck) = mpsc::channel::<()>();
        let blocker = pool.spawn(move || stuck.recv().is_ok());
        let (ran_tx, ran) = mpsc::channel::<()>();
        let queued = pool.spawn(move || ran_tx.send(()).unwrap());
        queued.cancel();
        assert!(queued.join().unwrap_err().is_cancelled());
        release.send(()).unwrap();
        assert!(blocker.wait());
        // The job was dropped without running: its sender is gone.
        assert!(ran.recv().is_err());
    }

    #[test]
    fn panic_reaches_the_joiner() {
        let task = spawn_blocking(|| -> u8 { panic!("pool job failed") });
        let error = task.join().unwrap_err();
        assert_eq!(error.to_string(), "task panicked: pool job failed");
    }
}
