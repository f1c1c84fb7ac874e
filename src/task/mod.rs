//! Tasks: `go`, `GoTask`, and the waiting and timing functions built on
//! the dispatcher's park (NimGo's `gotasks` and `nimgo` modules).
//!
//! # The join hand-off
//!
//! A task and its [`GoTask`] share a `JoinState`: a result slot, the task's
//! location (for cancels), and the waiters (the joiner, and any number of
//! [`wait_any`] callers), ordered by one atomic state word. The task, when
//! it ends, stores its result and sets `FINISHED`; only if a waiter was
//! ever added (`WAITING`) does it lock the waiters and wake them, after
//! unlocking. A waiter takes the result if `FINISHED`, or adds its waker
//! under the lock, sets `WAITING`, and parks unless that found `FINISHED`;
//! it removes its own entry (its waker is unique among them) when it stops
//! waiting, normally or by unwinding. Either a waiter sees `FINISHED`, or
//! the task sees `WAITING` and takes the lock after the waiter added
//! itself: the wake-up cannot be lost, whichever thread each side runs on.
//! A task spawned and joined without ever parking its joiner costs three
//! atomic read-modify-writes of the state word (and two of the task cell's
//! reference count) and no lock. `JoinState`'s docs give the
//! rules for each bit.
//!
//! The join state and the task's closure share one allocation, the task
//! cell (`cell.rs`, which also gives the safety argument of that sharing).

mod cache;
mod cell;

use std::any::Any;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::coroutine::stack::GuardedStack;
use crate::dispatcher::{self, Dispatcher, ElapsedUnwind, Remote, Shared, Waker, Wakeup};
use crate::loom::{Arc, AtomicU8, Mutex, Ordering, UnsafeCell, lock};
pub(crate) use cell::{JoinRef, TaskRef, new_join};

/// Why a task produced no value.
pub enum JoinError {
    /// The task panicked; this is the panic's payload.
    Panicked(Box<dyn Any + Send + 'static>),
    /// The task was cancelled ([`GoTask::cancel`], or its dispatcher shut
    /// down) before it finished.
    Cancelled,
}

impl JoinError {
    /// Whether the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Cancelled)
    }

    /// Whether the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, Self::Panicked(_))
    }

    /// The panic payload, or `Err(self)` if the task was cancelled.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, JoinError> {
        match self {
            Self::Panicked(payload) => Ok(payload),
            Self::Cancelled => Err(self),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "Box<dyn Any>"
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panicked(payload) => f
                .debug_tuple("Panicked")
                .field(&panic_message(payload.as_ref()))
                .finish(),
            Self::Cancelled => f.write_str("Cancelled"),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panicked(payload) => {
                write!(f, "task panicked: {}", panic_message(payload.as_ref()))
            }
            Self::Cancelled => f.write_str("task was cancelled"),
        }
    }
}

impl std::error::Error for JoinError {}

/// The error of [`with_timeout`]: the deadline passed while the closure was
/// parked, and it was unwound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for io::Error {
    fn from(_: Elapsed) -> Self {
        io::Error::new(io::ErrorKind::TimedOut, "nimgo: deadline has elapsed")
    }
}

/// The wakers waiting for one task: the joiner, or any number of
/// `wait_any` callers. One is kept inline and more are boxed, so the join
/// state stays small enough for the allocator's fast bins (the enum fits in
/// a `Waker`'s 24 bytes). A waiter is removed by comparing wakers: one
/// context parks in one place at a time, so its waker is unique among the
/// waiters.
#[derive(Default)]
enum Waiters {
    #[default]
    None,
    One(Waker),
    // Boxed on purpose: 8 bytes that fit beside a `Waker`'s tag, for a list
    // that is almost never needed.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Waker>>),
}

impl Waiters {
    fn add(&mut self, waker: Waker) {
        match self {
            Self::None => *self = Self::One(waker),
            Self::One(_) => {
                let Self::One(first) = std::mem::take(self) else {
                    unreachable!()
                };
                *self = Self::Many(Box::new(vec![first, waker]));
            }
            Self::Many(wakers) => wakers.push(waker),
        }
    }

    fn remove(&mut self, waker: &Waker) {
        match self {
            Self::None => {}
            Self::One(first) => {
                if first.will_wake(waker) {
                    *self = Self::None;
                }
            }
            Self::Many(wakers) => {
                if let Some(position) = wakers.iter().position(|other| other.will_wake(waker)) {
                    // One entry only: equal wakers wake the same thing, and
                    // nested parks of the root can hold two.
                    wakers.swap_remove(position);
                }
            }
        }
    }

    /// Moves every waiter out.
    fn take_all(&mut self) -> Waiters {
        std::mem::take(self)
    }

    /// Wakes every waiter (call after the lock is released).
    fn wake_all(self) {
        match self {
            Self::None => {}
            Self::One(waker) => waker.wake(),
            Self::Many(wakers) => wakers.into_iter().for_each(Waker::wake),
        }
    }
}

/// `JoinState::state` bit: the result slot belongs to one completer.
const CLAIMED: u8 = 1;
/// `JoinState::state` bit: the result is stored (published by this bit).
const FINISHED: u8 = 2;
/// `JoinState::state` bit: the result slot belongs to one taker.
const TAKEN: u8 = 4;
/// `JoinState::state` bit: a waiter was added; the completer must lock the
/// waiters and wake them.
const WAITING: u8 = 8;
/// `JoinState::state` bit: the location is stored (published by this bit).
const PLACED: u8 = 16;
/// `JoinState::state` bit: a cancel came; whoever places the task later
/// must cancel it.
const CANCEL_REQUESTED: u8 = 32;

/// The join hand-off of one task (see the module docs).
///
/// One atomic word orders everything; the waiters alone have a lock, taken
/// only by waiters and by a completer that finds `WAITING`. Bits are only
/// ever set, each by a read-modify-write (`WAITING` by every waiter, which
/// is idempotent; `PLACED` by the initialiser of a local `go`, before the
/// state is shared), so every decision reads the latest state.
///
/// - `result` is written by the one caller whose `fetch_or(CLAIMED)` found
///   the bit clear, before it sets `FINISHED` (release); it is read by the
///   one caller whose `fetch_or(TAKEN)` found `FINISHED` set and `TAKEN`
///   clear (acquire). So at most one writer, then at most one reader, in
///   that order.
/// - `location` is written before `PLACED` is set (release), at creation
///   or by the one `place` call, and only read once `PLACED` was seen
///   (acquire); it never changes after.
/// - A waiter adds its waker under the lock, then sets `WAITING`; the
///   completer sets `FINISHED`, then, if `WAITING` was set, takes the
///   waiters under the lock. Whichever read-modify-write comes second sees
///   the other's bit: either the waiter sees `FINISHED` (and does not
///   park), or the completer sees `WAITING` and its lock follows the
///   waiter's registration. No wake-up is lost, on any thread.
/// - `place` and `request_cancel` race the same way on `PLACED` and
///   `CANCEL_REQUESTED`: either the cancel finds the location, or `place`
///   finds the cancel.
pub(crate) struct JoinState<T> {
    state: AtomicU8,
    /// The job runs off any dispatcher (a `spawn_blocking` job): a cancel
    /// completes the handle at once and the job runs on, its result dropped.
    completes_on_cancel: bool,
    result: UnsafeCell<Option<Result<T, JoinError>>>,
    /// Where the task runs, once a dispatcher has taken it (a runtime task
    /// waits in a queue first; a `spawn_blocking` job never has one).
    location: UnsafeCell<Option<TaskLocation>>,
    waiters: Mutex<Waiters>,
}

// SAFETY: the two `UnsafeCell` slots are only accessed as the type's docs
// say: the result by one writer then one reader, ordered by `state`; the
// location written before `PLACED` is published and only read after. The
// result moves between threads, hence `T: Send`; everything else is atomic,
// locked, or `Send + Sync` (`TaskLocation`, `Waker`).
unsafe impl<T: Send> Sync for JoinState<T> {}
// SAFETY: the fields are `Send` when `T` is (`UnsafeCell<X>` is `Send` when
// `X` is; the loom shim's is not, hence the impl).
unsafe impl<T: Send> Send for JoinState<T> {}

impl<T> JoinState<T> {
    pub(crate) fn new() -> Self {
        Self::with_location(None)
    }

    /// A handle for a task already placed at `location` (a local `go`): no
    /// `place` is needed later.
    fn with_location(location: Option<TaskLocation>) -> Self {
        Self {
            state: AtomicU8::new(if location.is_some() { PLACED } else { 0 }),
            completes_on_cancel: false,
            result: UnsafeCell::new(None),
            location: UnsafeCell::new(location),
            waiters: Mutex::new(Waiters::default()),
        }
    }

    /// A handle for a job that never gets a placement (the blocking pool):
    /// [`GoTask::cancel`] completes it with [`JoinError::Cancelled`] at once.
    pub(crate) fn new_detached() -> Self {
        Self {
            completes_on_cancel: true,
            ..Self::new()
        }
    }

    /// Stores the task's result and wakes its waiters, unless a result was
    /// stored already (a cancel that completed a blocking job's handle).
    /// Returns whether it stored.
    pub(crate) fn complete_if_pending(&self, result: Result<T, JoinError>) -> bool {
        if self.state.fetch_or(CLAIMED, Ordering::Acquire) & CLAIMED != 0 {
            return false;
        }
        // SAFETY: our `fetch_or` set `CLAIMED`, so we are the one writer of
        // the slot, and no reader touches it before `FINISHED`, set below
        // (see the type's docs).
        self.result.with_mut(|slot| unsafe { *slot = Some(result) });
        let state = self.state.fetch_or(FINISHED, Ordering::AcqRel);
        if state & WAITING != 0 {
            let waiters = lock(&self.waiters).take_all();
            waiters.wake_all();
        }
        true
    }

    /// Stores the task's result and wakes its waiters.
    pub(crate) fn complete(&self, result: Result<T, JoinError>) {
        let stored = self.complete_if_pending(result);
        debug_assert!(stored, "a task completes once");
    }

    /// Records where the task runs. Returns `false` if it was cancelled
    /// before being placed: the caller must then cancel it at once.
    pub(crate) fn place(&self, shared: Arc<Shared>, index: u32, task_id: u64) -> bool {
        let state = self.state.load(Ordering::Acquire);
        if state & (PLACED | CANCEL_REQUESTED) != 0 {
            return state & CANCEL_REQUESTED == 0;
        }
        // SAFETY: `PLACED` is clear, so nobody reads the slot yet, and the
        // one `place` call per task (its dispatcher's `Job::start`) is the
        // only writer after creation (see the type's docs).
        self.location.with_mut(|slot| unsafe {
            *slot = Some(TaskLocation {
                shared,
                index,
                task_id,
            });
        });
        self.state.fetch_or(PLACED, Ordering::AcqRel) & CANCEL_REQUESTED == 0
    }

    /// Whether a cancel was requested (for tasks that have no location).
    pub(crate) fn cancel_requested(&self) -> bool {
        self.state.load(Ordering::Acquire) & CANCEL_REQUESTED != 0
    }

    /// Marks the task cancelled and returns where it runs, if placed.
    pub(crate) fn request_cancel(&self) -> Option<&TaskLocation> {
        if self.state.fetch_or(CANCEL_REQUESTED, Ordering::AcqRel) & PLACED == 0 {
            return None;
        }
        // SAFETY: `PLACED` was set, so the slot was written before (release,
        // and our `fetch_or` acquires) and is never written again; only
        // shared references to it are made. (The reference outlives loom's
        // tracked access in a model; no write can follow, so none is
        // missed.)
        self.location.with(|slot| unsafe { (*slot).as_ref() })
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.state.load(Ordering::Acquire) & FINISHED != 0
    }

    /// Takes the result if it is there (and was not taken).
    fn try_take(&self) -> Option<Result<T, JoinError>> {
        if !self.is_finished() || self.state.fetch_or(TAKEN, Ordering::Acquire) & TAKEN != 0 {
            return None;
        }
        // SAFETY: `FINISHED` was set (so the writer is done, and our acquire
        // loads see its write) and our `fetch_or` set `TAKEN`: we are the
        // slot's one reader (see the type's docs).
        self.result.with_mut(|slot| unsafe { (*slot).take() })
    }

    /// Adds `waker` to the waiters unless the task already finished.
    pub(crate) fn add_waiter(&self, waker: &Waker) -> bool {
        let mut waiters = lock(&self.waiters);
        if self.is_finished() {
            return false;
        }
        waiters.add(waker.clone());
        if self.state.fetch_or(WAITING, Ordering::AcqRel) & FINISHED != 0 {
            // Finished meanwhile: its completer may have taken the waiters
            // already, or will find this one; either way, do not park.
            waiters.remove(waker);
            return false;
        }
        true
    }

    pub(crate) fn remove_waiter(&self, waker: &Waker) {
        lock(&self.waiters).remove(waker);
    }

    /// Waits for the result: parks the caller until the task finishes or
    /// `deadline` passes (`None` on timeout).
    pub(crate) fn join(&self, deadline: Option<Instant>) -> Option<Result<T, JoinError>> {
        loop {
            if self.is_finished() {
                return self.try_take();
            }
            let waker = dispatcher::current_waker();
            if !self.add_waiter(&waker) {
                continue;
            }
            let registered = RemoveWaiter { join: self, waker };
            let wakeup = dispatcher::park(deadline);
            drop(registered);
            if wakeup == Wakeup::TimedOut {
                return self.try_take();
            }
        }
    }
}

/// Removes a waiter's entry when it stops waiting, normally or by an unwind
/// (cancel, `with_timeout`).
struct RemoveWaiter<'a, T> {
    join: &'a JoinState<T>,
    waker: Waker,
}

impl<T> Drop for RemoveWaiter<'_, T> {
    fn drop(&mut self) {
        self.join.remove_waiter(&self.waker);
    }
}

/// Where a task lives, for cancellation.
#[derive(Clone)]
pub(crate) struct TaskLocation {
    shared: Arc<Shared>,
    index: u32,
    task_id: u64,
}

/// The handle of a task started with [`go`] (or a runtime's `spawn`).
///
/// Waiting consumes it. Dropping it detaches the task, which runs on. A
/// `GoTask<T>` is `Send` when `T` is, and can be waited from any thread or
/// any coroutine.
///
/// ```
/// let task = nimgo::go(|| 6 * 7);
/// assert!(!task.is_finished()); // tasks start when the loop runs them
/// assert_eq!(task.wait(), 42);
/// ```
///
/// The closure need not be `Send` for the handle to be, but the result must:
///
/// ```compile_fail
/// fn is_send<X: Send>(_: X) {}
/// is_send(nimgo::go(|| std::rc::Rc::new(1)));
/// ```
pub struct GoTask<T> {
    join: JoinRef<T>,
}

impl<T> fmt::Debug for GoTask<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoTask")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Drops a task's closure that will never run. Its captures' destructors
/// run on the dispatcher's own loop: a panic there must not escape into the
/// loop (it would stop a worker and drop the messages queued behind it), so
/// it is caught and reported; the join handle was completed before.
fn drop_quietly<F>(function: F) {
    if panic::catch_unwind(AssertUnwindSafe(move || drop(function))).is_err() {
        eprintln!("nimgo: a destructor of a cancelled task's closure panicked; ignored");
    }
}

/// Queues `function` on `dispatcher`.
pub(crate) fn spawn_on_dispatcher<F, T>(
    dispatcher: &Dispatcher,
    function: F,
    stack: Option<GuardedStack>,
) -> GoTask<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let mut handle = None;
    dispatcher.spawn_with(
        |index, task_id| {
            let join = JoinState::with_location(Some(TaskLocation {
                shared: dispatcher.shared().clone(),
                index,
                task_id,
            }));
            let (body, join) = cell::new_task(function, join);
            handle = Some(GoTask::from_join(join));
            body
        },
        stack,
    );
    handle.expect("spawn_with calls make exactly once")
}

/// A not-yet-started task that may still cross threads: what a runtime's
/// queues hold. It becomes a task of whichever dispatcher starts it, and
/// never moves again after that.
///
/// Dropping a job that never started cancels its [`GoTask`] (its joiner gets
/// [`JoinError::Cancelled`]), so a job lost in a queue at shutdown never
/// leaves a joiner hanging.
#[cfg_attr(loom, allow(dead_code))] // the runtime is not built under loom
pub(crate) struct Job(TaskRef);

// SAFETY: `Job::new` is the only constructor and requires `F: Send` and
// `T: Send`: the closure may then be run or dropped (cancelled) on whichever
// thread ends up holding the job, and the result stored from there. The
// `TaskRef` it wraps is `!Send` only because closures in general may be.
unsafe impl Send for Job {}

#[cfg_attr(loom, allow(dead_code))]
impl Job {
    /// A job running `function`, and the handle of the task it becomes.
    pub(crate) fn new<F, T>(function: F) -> (Self, GoTask<T>)
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (body, join) = cell::new_task(function, JoinState::new());
        (Self(body), GoTask::from_join(join))
    }

    /// Runs the job on the calling thread, with no dispatcher (the loom
    /// model of the task cell).
    #[cfg(loom)]
    pub(crate) fn run_here(self) {
        self.0.run();
    }

    /// Makes the job a task of `dispatcher` (queued there, not run yet).
    /// A job cancelled while queued is cancelled at once instead.
    pub(crate) fn start(self, dispatcher: &Dispatcher) {
        let mut placed = true;
        let (index, task_id) = dispatcher.spawn_with(
            |index, task_id| {
                // `place` sets `PLACED` with a read-modify-write that also
                // reads `CANCEL_REQUESTED` (set the same way by a cancel):
                // whichever comes second sees the other, so a cancel from
                // now on finds the location, or this finds the cancel.
                placed = self.0.place(dispatcher.shared().clone(), index, task_id);
                self.0
            },
            None,
        );
        if !placed {
            // Cancelled while it waited in a queue: it must never run.
            dispatcher.cancel(index, task_id);
        }
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Job")
    }
}

/// Starts `function` as a coroutine on the calling thread's dispatcher
/// (NimGo's `goAsync`). Like NimGo it does not run at once: it runs when the
/// loop gets to it (when the caller parks, waits, or runs the loop).
/// `function` need not be `Send`: the task never leaves this thread.
///
/// # Panics
///
/// Panics if the thread is exiting and can no longer run tasks. A task that
/// cannot get a stack when it starts (memory or mapping limits) completes
/// with that error as its panic; use [`try_go`] to find out at spawn time.
///
/// ```
/// use std::rc::Rc;
/// let shared = Rc::new(String::from("not Send, and fine"));
/// let task = nimgo::go({
///     let shared = shared.clone();
///     move || shared.len()
/// });
/// assert_eq!(task.wait(), shared.len());
/// ```
pub fn go<F, T>(function: F) -> GoTask<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    match dispatcher::with_or_create(|dispatcher| spawn_on_dispatcher(dispatcher, function, None)) {
        Ok(task) => task,
        Err(error) => panic!("{error}"),
    }
}

/// Like [`go`], but takes the task's stack now, so that running out of
/// stacks (memory, or `vm.max_map_count` on kernels without guard markers)
/// is an `io::Error` that names the limit instead of a failed task.
///
/// ```
/// let task = nimgo::try_go(|| "started")?;
/// assert_eq!(task.wait(), "started");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn try_go<F, T>(function: F) -> io::Result<GoTask<T>>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let stack = GuardedStack::new_default()?;
    dispatcher::with_or_create(|dispatcher| spawn_on_dispatcher(dispatcher, function, Some(stack)))
}

impl<T> GoTask<T> {
    /// A handle on `join`; the task is placed later with
    /// [`JoinState::place`] (or never, for jobs that run off-dispatcher).
    pub(crate) fn from_join(join: JoinRef<T>) -> Self {
        Self { join }
    }

    /// The handle's join view (the loom model of the cell's count).
    #[cfg(loom)]
    pub(crate) fn into_join(self) -> JoinRef<T> {
        self.join
    }

    /// Waits for the task and returns its value (NimGo's `wait`). Inside a
    /// coroutine this parks only that coroutine; outside, it runs the
    /// thread's loop (or blocks the thread, if it has none) until the task
    /// is done.
    ///
    /// # Panics
    ///
    /// Re-raises the task's panic, and panics if the task was cancelled.
    pub fn wait(self) -> T {
        unwrap_join(self.join())
    }

    /// Waits for the task; its panic or cancellation comes back as a
    /// [`JoinError`].
    ///
    /// ```
    /// # let hook = std::panic::take_hook();
    /// # std::panic::set_hook(Box::new(|_| {}));
    /// let task = nimgo::go(|| -> u8 { panic!("lost") });
    /// let error = task.join().unwrap_err();
    /// # std::panic::set_hook(hook);
    /// assert!(error.is_panic());
    /// assert_eq!(error.to_string(), "task panicked: lost");
    /// ```
    pub fn join(self) -> Result<T, JoinError> {
        match self.join.join(None) {
            Some(result) => result,
            None => unreachable!("a join without deadline cannot time out"),
        }
    }

    /// Waits at most `timeout`; gives the task back if it is not done.
    ///
    /// # Panics
    ///
    /// As [`wait`](Self::wait).
    ///
    /// ```
    /// use std::time::Duration;
    /// let slow = nimgo::go(|| { nimgo::sleep(Duration::from_millis(50)); 1 });
    /// let slow = slow.wait_timeout(Duration::from_millis(1)).unwrap_err();
    /// assert_eq!(slow.wait_timeout(Duration::from_secs(5)).unwrap(), 1);
    /// ```
    pub fn wait_timeout(self, timeout: Duration) -> Result<T, GoTask<T>> {
        let deadline = Instant::now().checked_add(timeout);
        match self.join.join(deadline) {
            Some(result) => Ok(unwrap_join(result)),
            None => Err(self),
        }
    }

    /// Like [`wait_timeout`](Self::wait_timeout), with the task's panic or
    /// cancellation as a [`JoinError`] instead of re-raised.
    pub(crate) fn join_timeout(self, timeout: Duration) -> Result<Result<T, JoinError>, GoTask<T>> {
        let deadline = Instant::now().checked_add(timeout);
        match self.join.join(deadline) {
            Some(result) => Ok(result),
            None => Err(self),
        }
    }

    /// Whether the task has finished (returned, panicked or been cancelled).
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// Cancels the task: if it has not started it never will; if it is
    /// parked it is unwound from its park point (its destructors run); if it
    /// is running it is unwound at its next park. A waiter then gets
    /// [`JoinError::Cancelled`]. Cancelling a finished task does nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// let task = nimgo::go(|| nimgo::sleep(Duration::from_secs(3600)));
    /// nimgo::yield_now(); // let it start and park
    /// task.cancel();
    /// assert!(task.join().unwrap_err().is_cancelled());
    /// ```
    pub fn cancel(&self) {
        if self.is_finished() {
            return;
        }
        let location = self.join.request_cancel();
        let Some(&TaskLocation {
            ref shared,
            index,
            task_id,
        }) = location
        else {
            // Not placed yet: whoever places it sees the flag. A job that
            // never gets a place (the blocking pool) is completed now.
            if self.join.completes_on_cancel {
                self.join.complete_if_pending(Err(JoinError::Cancelled));
            }
            return;
        };
        let local = dispatcher::with_current(|dispatcher| {
            if Arc::ptr_eq(dispatcher.shared(), shared) {
                dispatcher.cancel(index, task_id);
                true
            } else {
                false
            }
        });
        if local != Some(true) {
            shared.push(Remote::Cancel { index, task_id });
        }
    }
}

fn unwrap_join<T>(result: Result<T, JoinError>) -> T {
    match result {
        Ok(value) => value,
        Err(JoinError::Panicked(payload)) => panic::resume_unwind(payload),
        Err(JoinError::Cancelled) => panic!("nimgo: waited for a task that was cancelled"),
    }
}

/// Starts `function` and waits for it (NimGo's `goAndWait`).
///
/// The task belongs to the wait: if the caller is unwound while waiting
/// (its own task is cancelled, or a [`with_timeout`] around the call
/// expires), the task is cancelled too rather than left running.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(nimgo::go_and_wait(|| 2 + 2), 4);
///
/// // The inner task does not outlive the deadline.
/// let outcome = nimgo::with_timeout(Duration::from_millis(5), || {
///     nimgo::go_and_wait(|| nimgo::sleep(Duration::from_secs(3600)))
/// });
/// assert!(outcome.is_err());
/// nimgo::run_event_loop(); // returns at once: nothing is left running
/// ```
pub fn go_and_wait<F, T>(function: F) -> T
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let task = go(function);
    let cancel_on_unwind = CancelUnlessFinished(&task);
    let result = task.join.join(None);
    drop(cancel_on_unwind);
    unwrap_join(result.expect("a join without deadline cannot time out"))
}

/// Cancels the task when dropped before it finished (the waiter unwound).
struct CancelUnlessFinished<'a, T>(&'a GoTask<T>);

impl<T> Drop for CancelUnlessFinished<'_, T> {
    fn drop(&mut self) {
        if !self.0.is_finished() {
            self.0.cancel();
        }
    }
}

/// Waits for every task, in order, and returns their values (NimGo's
/// `waitAll`).
///
/// # Panics
///
/// Re-raises the first panic met, as [`GoTask::wait`].
///
/// ```
/// let tasks: Vec<_> = (0..4).map(|i| nimgo::go(move || i * i)).collect();
/// assert_eq!(nimgo::wait_all(tasks), vec![0, 1, 4, 9]);
/// ```
pub fn wait_all<T>(tasks: impl IntoIterator<Item = GoTask<T>>) -> Vec<T> {
    tasks.into_iter().map(GoTask::wait).collect()
}

/// Waits until one of `tasks` has finished and returns its index (NimGo's
/// `waitAny`). The tasks stay in the slice; wait the finished one to get
/// its value.
///
/// # Panics
///
/// Panics if `tasks` is empty: there would be nothing to wait for.
///
/// ```
/// use std::time::Duration;
/// let tasks = vec![
///     nimgo::go(|| { nimgo::sleep(Duration::from_millis(200)); "slow" }),
///     nimgo::go(|| { nimgo::sleep(Duration::from_millis(1)); "fast" }),
/// ];
/// assert_eq!(nimgo::wait_any(&tasks), 1);
/// ```
pub fn wait_any<T>(tasks: &[GoTask<T>]) -> usize {
    assert!(!tasks.is_empty(), "nimgo::wait_any: no task to wait for");
    loop {
        if let Some(index) = tasks.iter().position(GoTask::is_finished) {
            return index;
        }
        let mut registered = RemoveWaiters {
            tasks,
            waker: dispatcher::current_waker(),
            count: 0,
        };
        let mut all_waiting = true;
        for task in tasks {
            if task.join.add_waiter(&registered.waker) {
                registered.count += 1;
            } else {
                all_waiting = false;
                break;
            }
        }
        if all_waiting {
            dispatcher::park(None);
        }
        drop(registered);
    }
}

/// Removes the entries a `wait_any` added, however it stops waiting.
struct RemoveWaiters<'a, T> {
    tasks: &'a [GoTask<T>],
    waker: Waker,
    /// How many of `tasks` (from the first) hold the waker.
    count: usize,
}

impl<T> Drop for RemoveWaiters<'_, T> {
    fn drop(&mut self) {
        for task in &self.tasks[..self.count] {
            task.join.remove_waiter(&self.waker);
        }
    }
}

/// Runs `function`, then the thread's loop until every task is done
/// (NimGo's `withEventLoop`).
///
/// ```
/// let value = nimgo::with_event_loop(|| {
///     nimgo::go(|| println!("runs before with_event_loop returns"));
///     5
/// });
/// assert_eq!(value, 5);
/// ```
pub fn with_event_loop<R>(function: impl FnOnce() -> R) -> R {
    let result = function();
    dispatcher::run_event_loop();
    result
}

/// Suspends the caller for `duration`: parks the coroutine, or, outside one,
/// runs the thread's loop (other tasks run meanwhile) or sleeps the thread.
///
/// ```
/// use std::time::{Duration, Instant};
/// let start = Instant::now();
/// nimgo::sleep(Duration::from_millis(5));
/// assert!(start.elapsed() >= Duration::from_millis(5));
/// ```
pub fn sleep(duration: Duration) {
    let Some(deadline) = Instant::now().checked_add(duration) else {
        // Practically forever: park until cancelled.
        loop {
            dispatcher::park(None);
        }
    };
    while Instant::now() < deadline {
        dispatcher::park(Some(deadline));
    }
}

/// Lets the other ready tasks of this thread run before the caller goes on.
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// let order = Rc::new(Cell::new(0));
/// let other = nimgo::go({
///     let order = order.clone();
///     move || order.set(order.get() * 10 + 2)
/// });
/// nimgo::go_and_wait({
///     let order = order.clone();
///     move || {
///         order.set(order.get() * 10 + 1);
///         nimgo::yield_now();
///         order.set(order.get() * 10 + 3);
///     }
/// });
/// other.wait();
/// assert_eq!(order.get(), 213);
/// ```
pub fn yield_now() {
    if !dispatcher::yield_current() {
        std::thread::yield_now();
    }
}

/// Runs `function` with a deadline for everything it does, however deep
/// (tokio's `timeout`, for stackful code). If the deadline passes while
/// `function` is parked (a sleep, a channel, I/O, a wait), `function` is
/// unwound from that park point, its destructors run, and `Err(Elapsed)` is
/// returned. Work that never parks is not interrupted. Scopes nest: the
/// nearest deadline wins.
///
/// ```
/// use std::time::Duration;
/// let result = nimgo::with_timeout(Duration::from_millis(10), || {
///     nimgo::sleep(Duration::from_secs(3600));
/// });
/// assert!(result.is_err());
/// assert_eq!(nimgo::with_timeout(Duration::from_secs(1), || 3), Ok(3));
/// ```
pub fn with_timeout<R>(timeout: Duration, function: impl FnOnce() -> R) -> Result<R, Elapsed> {
    let Some(deadline) = Instant::now().checked_add(timeout) else {
        return Ok(function());
    };
    let scope = match dispatcher::with_or_create(|dispatcher| dispatcher.enter_scope(deadline)) {
        Ok(scope) => scope,
        // A thread that is exiting cannot time anything: run unbounded.
        Err(_) => return Ok(function()),
    };
    let exit = ExitScope(scope);
    let outcome = panic::catch_unwind(AssertUnwindSafe(function));
    drop(exit);
    match outcome {
        Ok(value) => Ok(value),
        Err(payload) => match payload.downcast::<ElapsedUnwind>() {
            Ok(elapsed) if elapsed.scope == scope => Err(Elapsed(())),
            Ok(elapsed) => panic::resume_unwind(elapsed),
            Err(payload) => panic::resume_unwind(payload),
        },
    }
}

struct ExitScope(u64);

impl Drop for ExitScope {
    fn drop(&mut self) {
        dispatcher::with_current(|dispatcher| dispatcher.exit_scope(self.0));
    }
}
