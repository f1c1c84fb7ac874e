//! The multi-threaded runtime: N worker threads, each running one dispatcher.
//!
//! ```text
//!   Runtime::spawn / Handle::spawn ──► injector ──┐        spawn_on(w) ──► inbox of w
//!   nimgo::spawn on worker w ──► deque of w ──────┤ steal                   (Remote::Spawn)
//!                                                 ▼
//!   worker 0: dispatcher 0 + its coroutines   worker 1: dispatcher 1 + ...
//! ```
//!
//! A spawned closure waits in a queue as a *job* (not started, `Send`); the
//! worker that takes it creates the task on its own dispatcher, and from then
//! on the coroutine lives on that thread only (invariant 1): stealing moves
//! jobs, never coroutines. A job cancelled while it waits is cancelled when
//! a worker takes it (`JoinState::place` reports the cancel), and a job that
//! is dropped from a queue (shutdown) cancels its `GoTask`, so no joiner is
//! left hanging.
//!
//! Idle workers spin for a few µs on their inbox and the queues, then sleep
//! in epoll; a job push wakes one sleeping worker, once per sleep
//! (`idle.rs` has the protocol; the inbox has its own, in the dispatcher's
//! `shared.rs`).
//!
//! # The shutdown protocol
//!
//! The runtime's state only moves forward:
//!
//! ```text
//!            shutdown_timeout / Drop           deadline passed
//!  Running ─────────────────────────► Stopping ─────────────────► Unwinding
//! ```
//!
//! - **Running**: workers take jobs and run tasks.
//! - **Stopping** (set by `shutdown_timeout` or `Drop`, which then notifies
//!   every worker): workers take no more jobs; a spawn now cancels its job
//!   at once; jobs still queued are cancelled (dropped). Each worker keeps
//!   running its started tasks and leaves its loop once it has none.
//! - **Unwinding** (set by `shutdown_timeout` when the deadline passes with
//!   workers still busy, again with a notify): every worker leaves its loop
//!   at its next turn and shuts its dispatcher down, which unwinds each
//!   suspended task from its park point (destructors run) and cancels the
//!   unstarted ones.
//!
//! A worker reports its exit after its dispatcher is gone, and
//! `shutdown_timeout` joins the threads that reported. A worker stuck in a
//! task that never parks cannot be unwound: after a grace period of
//! [`UNWIND_GRACE`] past the deadline its thread is detached and named on
//! stderr, so shutdown never hangs.

mod idle;
mod worker;

use idle::Idle;

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use crossbeam_deque::{Injector, Steal, Stealer, Worker};

use crate::blocking::BlockingPool;
use crate::dispatcher::{self, Remote, Shared};
use crate::loom::{Arc, AtomicU8, Condvar, Mutex, Ordering, lock, thread};
use crate::task::{GoTask, Job};

/// How long `Drop` lets running tasks finish before unwinding them.
pub const DROP_DEADLINE: Duration = Duration::from_secs(1);

/// How long shutdown waits, after the deadline, for workers to unwind
/// their tasks before it detaches the threads that did not exit.
pub const UNWIND_GRACE: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Running = 0,
    Stopping = 1,
    Unwinding = 2,
}

/// What the workers, handles and the runtime share.
pub(crate) struct RuntimeShared {
    injector: Injector<Job>,
    stealers: Box<[Stealer<Job>]>,
    /// Each worker dispatcher's cross-thread half (inbox, notifier).
    workers: Box<[Arc<Shared>]>,
    idle: Idle,
    state: AtomicU8,
    /// Which workers have left their loop and shut their dispatcher down.
    exited: Mutex<Vec<bool>>,
    exit_condvar: Condvar,
    /// This runtime's blocking pool; its workers send their blocking jobs
    /// here.
    blocking: BlockingPool,
}

impl RuntimeShared {
    fn state(&self) -> State {
        match self.state.load(Ordering::SeqCst) {
            0 => State::Running,
            1 => State::Stopping,
            _ => State::Unwinding,
        }
    }

    /// Moves the state forward to `state` (never back) and wakes every
    /// worker so it sees it.
    fn advance(&self, state: State) {
        self.state.fetch_max(state as u8, Ordering::SeqCst);
        for worker in self.workers.iter() {
            worker.notify();
        }
    }

    fn report_exit(&self, worker: usize) {
        lock(&self.exited)[worker] = true;
        self.exit_condvar.notify_all();
    }

    /// Queues `job` on the injector and wakes a sleeping worker.
    fn inject(&self, job: Job) {
        if self.state() != State::Running {
            return; // dropping the job cancels it
        }
        self.injector.push(job);
        self.wake_one();
        // A shutdown that raced the push may have drained the injector
        // before the push landed: whoever sees the other's write cancels.
        if self.state() != State::Running {
            self.cancel_queued(false);
        }
    }

    fn wake_one(&self) {
        if let Some(worker) = self.idle.wake_one() {
            self.workers[worker].notify();
        }
    }

    /// Drops (so cancels) every job still in the injector. With
    /// `deques_too`, also those in the workers' deques (once the workers are
    /// gone or detached; an exiting worker drops its own).
    fn cancel_queued(&self, deques_too: bool) {
        drain(|| self.injector.steal());
        if deques_too {
            for stealer in self.stealers.iter() {
                drain(|| stealer.steal());
            }
        }
    }

    fn spawn<F, T>(&self, function: F) -> GoTask<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (job, task) = Job::new(function);
        self.inject(job);
        task
    }

    fn spawn_on<F, T>(self: &Arc<Self>, worker: usize, function: F) -> GoTask<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        assert!(
            worker < self.workers.len(),
            "nimgo: spawn_on({worker}) on a runtime of {} workers",
            self.workers.len()
        );
        let (job, task) = Job::new(function);
        if self.state() == State::Running {
            let runtime = self.clone();
            self.workers[worker].push(Remote::Spawn(Box::new(move || {
                if runtime.state() == State::Running {
                    let _ = dispatcher::with_current(move |dispatcher| job.start(dispatcher));
                }
                // Otherwise the job drops here: cancelled.
            })));
        }
        task
    }
}

/// Configures and starts a [`Runtime`].
///
/// ```
/// let runtime = nimgo::Runtime::builder()
///     .workers(2)
///     .thread_name("app")
///     .stack_size(256 * 1024)
///     .build()?;
/// assert_eq!(runtime.workers(), 2);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Builder {
    workers: Option<usize>,
    pin_to_cores: bool,
    stack_size: Option<usize>,
    blocking_threads: Option<usize>,
    blocking_nice: i32,
    thread_name: String,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            workers: None,
            pin_to_cores: false,
            stack_size: None,
            blocking_threads: None,
            blocking_nice: crate::blocking::DEFAULT_NICE,
            thread_name: String::from("nimgo-worker"),
        }
    }
}

impl Builder {
    /// A builder with the defaults: one worker per available core, no
    /// pinning, the default stack size, threads named `nimgo-worker-<i>`.
    ///
    /// ```
    /// let runtime = nimgo::runtime::Builder::new().workers(1).build()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of worker threads (at least 1).
    ///
    /// ```
    /// let error = nimgo::Runtime::builder().workers(0).build().unwrap_err();
    /// assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    /// ```
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// Pins worker `i` to the `i`-th online CPU (wrapping around), read
    /// from `/sys/devices/system/cpu/online` rather than from the calling
    /// thread's affinity mask, so a runtime built from a pinned thread still
    /// spreads over the machine. A pin that fails is reported on stderr and
    /// the worker runs unpinned.
    ///
    /// ```
    /// let runtime = nimgo::Runtime::builder().workers(1).pin_to_cores(true).build()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pin_to_cores(mut self, pin: bool) -> Self {
        self.pin_to_cores = pin;
        self
    }

    /// Stack size of the coroutines the workers start (each worker calls
    /// [`set_default_stack_size`](crate::coroutine::set_default_stack_size)).
    ///
    /// ```
    /// let runtime = nimgo::Runtime::builder().workers(1).stack_size(128 * 1024).build()?;
    /// let size = runtime.block_on(nimgo::coroutine::default_stack_size);
    /// assert_eq!(size, 128 * 1024);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Most threads the runtime's blocking pool may start (regular-file
    /// I/O, `nimgo::fs`, `spawn_blocking` from its workers); at least 1.
    /// Default: the number of CPUs, at least 2. More threads than cores
    /// crowd the event loops (tokio's dozens of file threads made its timers
    /// 40–65 ms late on 2 cores). Each runtime has its own pool; threads
    /// outside any runtime share a process-wide one.
    ///
    /// ```
    /// let runtime = nimgo::Runtime::builder().workers(1).blocking_threads(8).build()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn blocking_threads(mut self, max: usize) -> Self {
        self.blocking_threads = Some(max);
        self
    }

    /// The nice value of the blocking pool's threads, from 0 (the loops'
    /// priority) to 19 (the lowest). Default 19: a loop woken by a timer or
    /// an event then preempts a busy pool thread at once, which keeps timers
    /// on time while files are read (measured on 2 cores, 200 concurrent
    /// 1 MiB reads: a 1 ms ticker late by at most 26–632 µs instead of up to
    /// 7 ms at nice 0). Use 0 if blocking jobs are CPU-heavy and must not
    /// wait for busy loops. Values outside `0..=19` make [`build`](Self::build) fail.
    ///
    /// ```
    /// let runtime = nimgo::Runtime::builder().workers(1).blocking_nice(0).build()?;
    /// assert!(nimgo::Runtime::builder().blocking_nice(-5).build().is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn blocking_nice(mut self, nice: i32) -> Self {
        self.blocking_nice = nice;
        self
    }

    /// Worker threads are named `<prefix>-<index>`.
    ///
    /// ```
    /// let runtime = nimgo::Runtime::builder().workers(1).thread_name("db").build()?;
    /// let name = runtime.block_on(|| std::thread::current().name().map(String::from));
    /// assert_eq!(name.as_deref(), Some("db-0"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into();
        self
    }

    /// Starts the worker threads.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for zero workers, a zero stack size or zero blocking
    /// threads; the OS error if a thread or a dispatcher cannot be created.
    ///
    /// ```
    /// let runtime = nimgo::Runtime::builder().workers(2).build()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn build(self) -> io::Result<Runtime> {
        let workers = match self.workers {
            Some(workers) => workers,
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        if workers == 0 {
            return Err(invalid("a runtime needs at least one worker"));
        }
        if self.stack_size == Some(0) {
            return Err(invalid("the stack size must not be zero"));
        }
        let blocking_threads = self
            .blocking_threads
            .unwrap_or_else(crate::blocking::default_max_threads);
        if blocking_threads == 0 {
            return Err(invalid("the blocking pool needs at least one thread"));
        }
        if !(0..=19).contains(&self.blocking_nice) {
            return Err(invalid(
                "the blocking pool's nice value must be in 0..=19 (it may not outrank the loops)",
            ));
        }
        let cores = if self.pin_to_cores {
            online_cores()
        } else {
            Vec::new()
        };
        let startup = Arc::new(Startup {
            state: Mutex::new(StartupState {
                shared: vec![None; workers],
                runtime: None,
                failed: None,
            }),
            condvar: Condvar::new(),
        });
        let deques: Vec<Worker<Job>> = (0..workers).map(|_| Worker::new_fifo()).collect();
        let stealers: Box<[Stealer<Job>]> = deques.iter().map(Worker::stealer).collect();
        let mut threads = Vec::with_capacity(workers);
        for (index, deque) in deques.into_iter().enumerate() {
            let worker_startup = startup.clone();
            let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
            let stack_size = self.stack_size;
            let spawned = thread::Builder::new()
                .name(format!("{}-{index}", self.thread_name))
                .spawn(move || worker_main(worker_startup, index, deque, core, stack_size));
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(error) => {
                    startup.abort(error.kind(), format!("cannot start a worker: {error}"));
                    join_all(threads);
                    return Err(error);
                }
            }
        }
        // Wait for every dispatcher (or the first failure).
        let shared: Vec<Arc<Shared>> = {
            let mut state = lock(&startup.state);
            loop {
                if let Some((kind, message)) = state.failed.clone() {
                    drop(state);
                    startup.abort(kind, message.clone());
                    join_all(threads);
                    return Err(io::Error::new(kind, message));
                }
                if state.shared.iter().all(Option::is_some) {
                    break state.shared.iter().flatten().cloned().collect();
                }
                state = match startup.condvar.wait(state) {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
            }
        };
        let runtime = Arc::new(RuntimeShared {
            injector: Injector::new(),
            stealers,
            workers: shared.into_boxed_slice(),
            idle: Idle::new(workers),
            state: AtomicU8::new(State::Running as u8),
            exited: Mutex::new(vec![false; workers]),
            exit_condvar: Condvar::new(),
            blocking: BlockingPool::named(
                blocking_threads,
                format!("{}-blocking", self.thread_name),
                self.blocking_nice,
            ),
        });
        lock(&startup.state).runtime = Some(runtime.clone());
        startup.condvar.notify_all();
        Ok(Runtime {
            shared: runtime,
            threads,
        })
    }
}

/// Drops (so cancels) every job `steal` yields.
fn drain(steal: impl Fn() -> Steal<Job>) {
    loop {
        match steal() {
            Steal::Success(job) => drop(job),
            Steal::Retry => continue,
            Steal::Empty => break,
        }
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("nimgo: {message}"))
}

fn join_all(threads: Vec<thread::JoinHandle<()>>) {
    for thread in threads {
        let _ = thread.join();
    }
}

/// The hand-shake between `build` and the new workers: each posts its
/// dispatcher's `Shared`, then waits for the runtime they all share.
struct Startup {
    state: Mutex<StartupState>,
    condvar: Condvar,
}

struct StartupState {
    shared: Vec<Option<Arc<Shared>>>,
    runtime: Option<Arc<RuntimeShared>>,
    failed: Option<(io::ErrorKind, String)>,
}

impl Startup {
    fn abort(&self, kind: io::ErrorKind, message: String) {
        let mut state = lock(&self.state);
        if state.failed.is_none() {
            state.failed = Some((kind, message));
        }
        drop(state);
        self.condvar.notify_all();
    }
}

fn worker_main(
    startup: Arc<Startup>,
    index: usize,
    deque: Worker<Job>,
    core: Option<core_affinity::CoreId>,
    stack_size: Option<usize>,
) {
    if let Some(core) = core
        && !core_affinity::set_for_current(core)
    {
        eprintln!("nimgo: could not pin worker {index} to CPU {}", core.id);
    }
    if let Some(bytes) = stack_size {
        crate::coroutine::set_default_stack_size(bytes);
    }
    let posted = dispatcher::with_or_create(|dispatcher| dispatcher.shared().clone());
    let runtime = {
        let mut state = lock(&startup.state);
        match posted {
            Ok(shared) => state.shared[index] = Some(shared),
            Err(error) => {
                if state.failed.is_none() {
                    state.failed = Some((error.kind(), format!("nimgo: worker {index}: {error}")));
                }
            }
        }
        startup.condvar.notify_all();
        loop {
            if state.failed.is_some() {
                return;
            }
            if let Some(runtime) = state.runtime.clone() {
                break runtime;
            }
            state = match startup.condvar.wait(state) {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
        }
    };
    drop(startup);
    crate::blocking::set_thread_pool(runtime.blocking.clone());
    worker::run(runtime, index, deque);
}

/// The online CPUs, from `/sys/devices/system/cpu/online` (`0-3,6,8-9`).
fn online_cores() -> Vec<core_affinity::CoreId> {
    let parsed = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|text| parse_cpu_list(text.trim()));
    match parsed {
        Some(ids) if !ids.is_empty() => ids
            .into_iter()
            .map(|id| core_affinity::CoreId { id })
            .collect(),
        _ => core_affinity::get_core_ids().unwrap_or_default(),
    }
}

/// Parses a kernel CPU list such as `0-3,6`.
fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut ids = Vec::new();
    for part in text.split(',').filter(|part| !part.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last): (usize, usize) = (first.parse().ok()?, last.parse().ok()?);
                ids.extend(first..=last);
            }
            None => ids.push(part.parse().ok()?),
        }
    }
    Some(ids)
}

/// A multi-threaded runtime: worker threads, each owning a dispatcher and
/// the coroutines started on it. See the [module docs](self) for how work
/// moves and how it shuts down.
///
/// ```
/// let runtime = nimgo::Runtime::builder().workers(2).build()?;
/// let tasks: Vec<_> = (0..10u64).map(|i| runtime.spawn(move || i * i)).collect();
/// let sum: u64 = tasks.into_iter().map(nimgo::GoTask::wait).sum();
/// assert_eq!(sum, 285);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Runtime {
    shared: Arc<RuntimeShared>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("workers", &self.workers())
            .finish()
    }
}

impl Runtime {
    /// A runtime with one worker per available core.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    ///
    /// ```
    /// let runtime = nimgo::Runtime::new()?;
    /// assert_eq!(runtime.block_on(|| 2 + 2), 4);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new() -> io::Result<Self> {
        Builder::new().build()
    }

    /// A [`Builder`] to configure a runtime.
    ///
    /// ```
    /// let runtime = nimgo::Runtime::builder().workers(1).build()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// Number of worker threads.
    ///
    /// ```
    /// let runtime = nimgo::Runtime::builder().workers(3).build()?;
    /// assert_eq!(runtime.workers(), 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn workers(&self) -> usize {
        self.shared.workers.len()
    }

    /// Queues `function` as a task; an idle worker starts it. Returns at
    /// once. After shutdown has begun the task is cancelled instead.
    ///
    /// ```
    /// let runtime = nimgo::Runtime::builder().workers(2).build()?;
    /// let task = runtime.spawn(|| "hello");
    /// assert_eq!(task.wait(), "hello");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn<F, T>(&self, function: F) -> GoTask<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.shared.spawn(function)
    }

    /// Starts `function` as a task on worker `worker` (through its inbox;
    /// never stolen).
    ///
    /// # Panics
    ///
    /// If `worker >= self.workers()`.
    ///
    /// ```
    /// let runtime = nimgo::Runtime::builder().workers(2).thread_name("w").build()?;
    /// let name = runtime.spawn_on(1, || std::thread::current().name().map(String::from));
    /// assert_eq!(name.wait().as_deref(), Some("w-1"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_on<F, T>(&self, worker: usize, function: F) -> GoTask<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.shared.spawn_on(worker, function)
    }

    /// Runs `function` as a task of the runtime and blocks the calling
    /// thread until it returns. A panic in `function` is raised again here.
    ///
    /// # Panics
    ///
    /// Re-raises the task's panic; panics if the task was cancelled
    /// (the runtime shut down first).
    ///
    /// ```
    /// let runtime = nimgo::Runtime::builder().workers(2).build()?;
    /// let total = runtime.block_on(|| {
    ///     let parts: Vec<_> = (1..=4u32).map(|i| nimgo::spawn(move || i)).collect();
    ///     nimgo::wait_all(parts).into_iter().sum::<u32>()
    /// });
    /// assert_eq!(total, 10);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn block_on<F, T>(&self, function: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn(function).wait()
    }

    /// A handle that spawns onto this runtime from any thread.
    ///
    /// ```
    /// let runtime = nimgo::Runtime::builder().workers(1).build()?;
    /// let handle = runtime.handle();
    /// let task = std::thread::spawn(move || handle.spawn(|| 5)).join().unwrap();
    /// assert_eq!(task.wait(), 5);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// Shuts the runtime down: no job is started any more, running tasks
    /// get until `timeout` to finish, then the rest are unwound from their
    /// park points (their destructors run) and the threads are joined.
    /// Returns within about `timeout` plus [`UNWIND_GRACE`]; a worker stuck
    /// in a task that never parks is detached and reported on stderr.
    ///
    /// ```
    /// use std::time::Duration;
    /// let runtime = nimgo::Runtime::builder().workers(2).build()?;
    /// let forever = runtime.spawn(|| nimgo::sleep(Duration::from_secs(3600)));
    /// runtime.shutdown_timeout(Duration::from_millis(10));
    /// assert!(forever.join().unwrap_err().is_cancelled());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) {
        self.shutdown(timeout);
    }

    fn shutdown(&mut self, timeout: Duration) {
        if self.threads.is_empty() {
            return;
        }
        let shared = &self.shared;
        let deadline = Instant::now() + timeout;
        shared.advance(State::Stopping);
        shared.cancel_queued(false);
        if !self.wait_exits(deadline) {
            shared.advance(State::Unwinding);
            self.wait_exits(Instant::now() + UNWIND_GRACE);
        }
        let exited = lock(&self.shared.exited).clone();
        for (thread, exited) in self.threads.drain(..).zip(exited) {
            if exited {
                let _ = thread.join();
            } else {
                let name = thread.thread().name().unwrap_or("unnamed").to_owned();
                eprintln!(
                    "nimgo: runtime worker {name} is still running a task that never parks; \
                     detaching it"
                );
            }
        }
        shared.cancel_queued(true);
        let report = shared
            .blocking
            .shutdown_timeout(deadline.saturating_duration_since(Instant::now()));
        if report.detached > 0 {
            eprintln!(
                "nimgo: runtime shut down with {} blocking job(s) still running; \
                 their threads are detached and finish alone",
                report.detached
            );
        }
    }

    /// Waits until every worker has exited or `deadline`; returns whether
    /// they all did.
    fn wait_exits(&self, deadline: Instant) -> bool {
        let mut exited = lock(&self.shared.exited);
        while !exited.iter().all(|&exited| exited) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            exited = match self
                .shared
                .exit_condvar
                .wait_timeout(exited, deadline - now)
            {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }
}

impl Drop for Runtime {
    /// As [`shutdown_timeout`](Runtime::shutdown_timeout) with
    /// [`DROP_DEADLINE`].
    fn drop(&mut self) {
        self.shutdown(DROP_DEADLINE);
    }
}

/// Spawns onto a [`Runtime`] from any thread; cheap to clone. Spawning after
/// the runtime has shut down gives a cancelled task.
///
/// ```
/// let runtime = nimgo::Runtime::builder().workers(2).build()?;
/// let handle = runtime.handle();
/// let task = runtime.spawn(move || handle.spawn(|| 1).wait() + 1);
/// assert_eq!(task.wait(), 2);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Handle {
    shared: Arc<RuntimeShared>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("workers", &self.shared.workers.len())
            .finish()
    }
}

impl Handle {
    /// As [`Runtime::spawn`].
    ///
    /// ```
    /// let runtime = nimgo::Runtime::builder().workers(1).build()?;
    /// assert_eq!(runtime.handle().spawn(|| 3).wait(), 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn<F, T>(&self, function: F) -> GoTask<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.shared.spawn(function)
    }

    /// As [`Runtime::spawn_on`].
    ///
    /// # Panics
    ///
    /// If `worker` is not a worker index of the runtime.
    ///
    /// ```
    /// let runtime = nimgo::Runtime::builder().workers(2).build()?;
    /// assert_eq!(runtime.handle().spawn_on(0, || 3).wait(), 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_on<F, T>(&self, worker: usize, function: F) -> GoTask<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.shared.spawn_on(worker, function)
    }

    /// As [`Runtime::block_on`].
    ///
    /// # Panics
    ///
    /// As [`Runtime::block_on`].
    ///
    /// ```
    /// let runtime = nimgo::Runtime::builder().workers(1).build()?;
    /// assert_eq!(runtime.handle().block_on(|| 3), 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn block_on<F, T>(&self, function: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn(function).wait()
    }

    /// Number of worker threads.
    ///
    /// ```
    /// let runtime = nimgo::Runtime::builder().workers(2).build()?;
    /// assert_eq!(runtime.handle().workers(), 2);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn workers(&self) -> usize {
        self.shared.workers.len()
    }

    /// The handle of the runtime whose worker calls this, if any.
    ///
    /// ```
    /// assert!(nimgo::runtime::Handle::try_current().is_none());
    /// let runtime = nimgo::Runtime::builder().workers(1).build()?;
    /// assert!(runtime.block_on(|| nimgo::runtime::Handle::try_current().is_some()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_current() -> Option<Handle> {
        worker::with_context(|context| Handle {
            shared: context.runtime.clone(),
        })
    }
}

/// Spawns `function` as a task of the calling worker's runtime: on a
/// runtime worker it goes to that worker's own deque (idle workers may
/// steal it before it starts; once started it stays where it started).
///
/// Outside a runtime it behaves like [`go`](crate::go): the task runs on
/// the calling thread's dispatcher when that thread's loop runs (when it
/// waits, or calls [`run_event_loop`](crate::run_event_loop)).
///
/// ```
/// let runtime = nimgo::Runtime::builder().workers(2).build()?;
/// let sum = runtime.block_on(|| {
///     let tasks: Vec<_> = (0..100u64).map(|i| nimgo::spawn(move || i)).collect();
///     tasks.into_iter().map(nimgo::GoTask::wait).sum::<u64>()
/// });
/// assert_eq!(sum, 4950);
///
/// // Outside a runtime: like `go`.
/// assert_eq!(nimgo::spawn(|| 7).wait(), 7);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn spawn<F, T>(function: F) -> GoTask<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (job, task) = Job::new(function);
    // On a worker: its own deque (or, once shutdown began, dropped, which
    // cancels it). Elsewhere the job comes back and starts here, as `go`.
    let mut job = Some(job);
    worker::with_context(|context| {
        if let Some(job) = job.take()
            && context.runtime.state() == State::Running
        {
            // The owner always runs its own deque, so waking another worker
            // is only for parallelism, never for liveness: wake one for the
            // first job of a burst; the woken worker passes the wake on when
            // it finds a full batch (see `worker.rs`). This keeps the
            // handshake's fence off the hot path of a spawn loop.
            let was_empty = context.local.is_empty();
            context.local.push(job);
            if was_empty {
                context.runtime.wake_one();
            }
        }
    });
    let Some(job) = job else {
        return task;
    };
    match dispatcher::with_or_create(|dispatcher| job.start(dispatcher)) {
        Ok(()) => task,
        Err(error) => panic!("{error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{Idle, parse_cpu_list};

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0,2-4,7"), Some(vec![0, 2, 3, 4, 7]));
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn a_job_push_claims_each_sleep_once() {
        let idle = Idle::new(2);
        assert_eq!(idle.wake_one(), None);
        assert!(idle.prepare_sleep(1, || false));
        assert_eq!(idle.wake_one(), Some(1));
        assert_eq!(idle.wake_one(), None, "one notification per sleep");
        idle.finish_sleep(1);
        assert!(!idle.prepare_sleep(0, || true), "work seen: no sleep");
        assert_eq!(idle.wake_one(), None);
    }
}
