//! The per-thread event loop: ready queue, timers, reactor, inbox, park.
//!
//! Every thread that uses nimgo gets one dispatcher, created on first use and
//! dropped (unwinding every coroutine still on it) when the thread exits. A
//! runtime worker is a thread whose whole life is its dispatcher's loop.
//!
//! ```text
//!   Dispatcher (thread-confined)                 Shared (Arc, any thread)
//!   ┌──────────────────────────────────────┐     ┌──────────────────────┐
//!   │ slots: [Slot]  task state per index  │     │ inbox: Mutex<Vec<..>>│◄── wakes, cancels,
//!   │ ready: VecDeque<index>               │     │ state: PENDING|SLEEP │    spawns from other
//!   │ timers: BTreeMap<(deadline,seq),..>  │     │ notifier (mio Waker) │    threads
//!   │ io: [IoEntry]  readiness + waiters   │     └──────────────────────┘
//!   │ mio::Poll                            │
//!   └──────────────────────────────────────┘
//! ```
//!
//! # The park protocol
//!
//! Every blocking operation is built on one primitive. The current context
//! (a task, or the thread itself: the *root* context) takes a
//! `Waker` with `current_waker`, hands it to whoever will signal the
//! condition (a channel, a join handle, the reactor), re-checks the
//! condition, and calls `park`. Each context has an *epoch*, and a waker
//! names `(dispatcher, index, epoch)`:
//!
//! ```text
//!            park()                      wake(e) with e == epoch
//!  Running ─────────► Parked(epoch e) ───────────────────────────► Ready
//!     ▲  │                                                          │
//!     │  └─ notified? (a wake(e) came while Running) → return now   │
//!     └──────────────── resumed: epoch := e + 1 ◄───────────────────┘
//! ```
//!
//! - A wake whose epoch is not the context's current epoch is stale (the
//!   context was resumed since, or the slot holds another task now: epochs
//!   keep counting across a slot's occupants) and is ignored.
//! - A wake while Running with the current epoch sets `notified`, so a park
//!   that follows returns at once: a wake-up that races a park is never lost.
//! - A second wake of the same epoch finds the context Ready or Running at a
//!   later epoch and does nothing: a context is never resumed twice.
//! - Only the dispatcher's own thread changes a context's state. Another
//!   thread's wake is a message in the inbox (`shared.rs` explains how the
//!   sleeping dispatcher is woken for it).
//!
//! A park may also end because its deadline passed ([`Wakeup::TimedOut`]),
//! because the task was cancelled, or because an enclosing `with_timeout`
//! scope expired. The last two never return: `park` unwinds the context
//! from the park point with a private payload that is caught at the task's
//! entry (cancel) or at the scope (`with_timeout`), so destructors run.
//! Callers of `park` must therefore keep their own state consistent across
//! an unwind (drop guards that deregister their waker) and must hold no lock
//! across it. Callers must also tolerate a spurious return and re-check their
//! condition in a loop.
//!
//! A park made while the context is already unwinding from an interruption
//! (a destructor that waits, run by a cancel or an expired scope) does not
//! raise the interruption again, which would abort the process: it waits
//! normally, unbounded by the expired deadline. The count of such unwinds is
//! kept per context: raising one increments it, and dropping the payload
//! (wherever it is caught, even by user code that swallows it) decrements
//! it, on whatever thread, so the next park interrupts again (a context
//! parked meanwhile is interrupted at once).
//!
//! No interruption is raised while the thread is panicking either: a
//! destructor run by a user panic may be the one parking, and
//! `std::thread::panicking()` cannot tell whose stack unwinds (it is one
//! flag per thread, shared by its coroutines, and true while any of them
//! is suspended mid-unwind). The interruption is held back and the loop
//! raises it again as soon as no panic is in flight. So a deadline or a
//! cancel can be late while another coroutine of the thread waits inside
//! a destructor during an unwind, but nothing aborts.
//!
//! The root context parks by driving the loop until it is woken, so code
//! outside any coroutine can wait for tasks of its own thread. Code the loop
//! runs on the root's stack (a destructor of a cancelled, unstarted task)
//! may park the root again: the inner park shares the outer one's epoch,
//! and whichever returns first consumes the wake-up; the other returns
//! spuriously and its caller re-checks. A thread with
//! no dispatcher parks the OS thread on a condition variable instead.
//!
//! # Invariants kept here
//!
//! 1. A started coroutine only runs on this thread: tasks are created here,
//!    and only `Remote::Spawn` closures (`Send`, not started) cross threads.
//! 2. Wake-ups are never lost and never resume twice (the epoch rules above).
//! 7. Dropping the dispatcher (thread exit) unwinds every suspended task and
//!    cancels every unstarted one, so their destructors run; the loop keeps
//!    turning meanwhile, so destructors that wait can finish. Tasks that
//!    make no progress for a whole second are leaked, with a message.

mod shared;
mod timer;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::panic;
use std::ptr;
use std::time::{Duration, Instant};

use corosensei::Yielder;
use mio::{Events, Interest, Poll, Token};

use crate::coroutine;
use crate::coroutine::stack::GuardedStack;
use crate::loom::{Arc, Condvar, Mutex, lock};
use crate::sys::timer::TimerFd;
use crate::task::TaskRef;
pub(crate) use shared::{Notifier, Remote, Shared};
use std::os::fd::AsRawFd;
use timer::{TimerKey, TimerTarget, Timers};

/// Index of the root context (the thread itself, outside any coroutine).
pub(crate) const ROOT: u32 = u32::MAX;

/// Token of the dispatcher's own waker in its `mio::Poll`.
const WAKER_TOKEN: Token = Token(usize::MAX);

/// Token of the dispatcher's precision timer in its `mio::Poll`.
const TIMER_TOKEN: Token = Token(usize::MAX - 1);

/// How long a dispatcher's shutdown waits without any task finishing before
/// it gives up on the tasks left (see `Dispatcher::shutdown`).
const SHUTDOWN_STALL_LIMIT: Duration = Duration::from_secs(1);

/// How many ready tasks run before the loop looks at I/O and the inbox again.
const TASKS_PER_TURN: usize = 61;

type TaskCoroutine = corosensei::Coroutine<(), (), (), GuardedStack>;

/// Why a park (the dispatcher's blocking primitive) returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wakeup {
    /// Someone woke the context (or the return is spurious: re-check).
    Woken,
    /// The park's deadline passed.
    TimedOut,
}

/// Panic payload that unwinds a cancelled task from its park point.
pub(crate) struct CancelUnwind {
    owner: UnwindOwner,
}

/// Panic payload that unwinds a context to its expired `with_timeout` scope.
pub(crate) struct ElapsedUnwind {
    pub(crate) scope: u64,
    owner: UnwindOwner,
}

/// The context an interruption payload was raised in. While the payload
/// exists the unwind is in flight; dropping it (wherever it is caught:
/// `with_timeout`, the task's entry, or user code that swallows it) ends
/// the context's `unwinding` count, so the next park interrupts again.
struct UnwindOwner {
    shared: Arc<Shared>,
    index: u32,
    /// The slot's occupant (0 for the root).
    task_id: u64,
}

impl UnwindOwner {
    fn release(&self) {
        let done_here = with_current(|dispatcher| {
            if !Arc::ptr_eq(&dispatcher.shared, &self.shared) {
                return false;
            }
            let Ok(mut core) = dispatcher.core.try_borrow_mut() else {
                return false;
            };
            core.end_unwind(self.index, self.task_id);
            true
        });
        if done_here != Some(true) {
            // Dropped on another thread, or while the loop is busy: the
            // owner ends the unwind on its next turn.
            self.shared.push(Remote::UnwindEnded {
                index: self.index,
                task_id: self.task_id,
            });
        }
    }
}

impl Drop for CancelUnwind {
    fn drop(&mut self) {
        self.owner.release();
    }
}

impl Drop for ElapsedUnwind {
    fn drop(&mut self) {
        self.owner.release();
    }
}

// ---------------------------------------------------------------------------
// Wakers
// ---------------------------------------------------------------------------

/// A handle that makes one parked context runnable again, from any thread.
#[derive(Clone)]
pub(crate) enum Waker {
    /// A task or root context of a dispatcher.
    Context {
        /// The dispatcher's cross-thread half.
        shared: Arc<Shared>,
        /// Slot index (or [`ROOT`]).
        index: u32,
        /// The park this waker is for.
        epoch: u64,
    },
    /// A thread with no dispatcher, parked on a condition variable.
    Thread(Arc<ThreadParker>),
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Context { index, epoch, .. } => write!(f, "Waker({index}@{epoch})"),
            Self::Thread(_) => f.write_str("Waker(thread)"),
        }
    }
}

impl Waker {
    /// Wakes the context. Safe to call from any thread, any number of times.
    pub(crate) fn wake(self) {
        self.wake_by_ref();
    }

    /// Wakes the context without consuming the waker.
    pub(crate) fn wake_by_ref(&self) {
        if self.wake_local() {
            return;
        }
        match self {
            Self::Context {
                shared,
                index,
                epoch,
            } => shared.push(Remote::Wake {
                index: *index,
                epoch: *epoch,
            }),
            Self::Thread(parker) => parker.unpark(),
        }
    }

    /// Wakes the context if it belongs to the calling thread's dispatcher,
    /// directly (no message, no lock); returns `false`, having done nothing,
    /// otherwise.
    pub(crate) fn wake_local(&self) -> bool {
        let Self::Context {
            shared,
            index,
            epoch,
        } = self
        else {
            return false;
        };
        with_current(|dispatcher| {
            if Arc::ptr_eq(&dispatcher.shared, shared)
                && let Ok(mut core) = dispatcher.core.try_borrow_mut()
            {
                core.wake(*index, *epoch, WakeReason::Woken);
                return true;
            }
            false
        })
        .unwrap_or(false)
    }

    /// Turns this waker into the calling context's waker for its next park
    /// (what [`current_waker`] would return) in place, without
    /// reference-count traffic, if it belongs to the caller's dispatcher or
    /// thread parker. Returns `false`, leaving it unchanged, otherwise (the
    /// caller then makes a new one; replacing this one here could drop the
    /// last handle on another thread's dispatcher).
    pub(crate) fn renew(&mut self) -> bool {
        match self {
            Self::Context {
                shared,
                index,
                epoch,
            } => with_current(|dispatcher| {
                if !Arc::ptr_eq(&dispatcher.shared, shared) {
                    return false;
                }
                (*index, *epoch) = dispatcher.next_park();
                true
            })
            .unwrap_or(false),
            Self::Thread(parker) => {
                with_current(|_| ()).is_none() && THREAD_PARKER.with(|own| Arc::ptr_eq(own, parker))
            }
        }
    }

    /// Whether both wakers wake the same park of the same context.
    pub(crate) fn will_wake(&self, other: &Waker) -> bool {
        match (self, other) {
            (
                Self::Context {
                    shared: a,
                    index: i,
                    epoch: e,
                },
                Self::Context {
                    shared: b,
                    index: j,
                    epoch: f,
                },
            ) => Arc::ptr_eq(a, b) && i == j && e == f,
            (Self::Thread(a), Self::Thread(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Parks a thread that has no dispatcher. A permit, like
/// `std::thread::park`: an unpark before the park makes the park return at
/// once.
#[derive(Debug, Default)]
pub(crate) struct ThreadParker {
    permit: Mutex<bool>,
    condvar: Condvar,
}

impl ThreadParker {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn unpark(&self) {
        *lock(&self.permit) = true;
        self.condvar.notify_one();
    }

    /// Blocks until unparked or `deadline`.
    pub(crate) fn park(&self, deadline: Option<Instant>) -> Wakeup {
        let mut permit = lock(&self.permit);
        loop {
            if std::mem::take(&mut *permit) {
                return Wakeup::Woken;
            }
            match deadline {
                None => {
                    permit = match self.condvar.wait(permit) {
                        Ok(guard) => guard,
                        Err(poisoned) => poisoned.into_inner(),
                    }
                }
                // Under loom a timed park cannot wait: with no permit, the
                // deadline "fires" now, which models a timeout firing at any
                // moment of the race.
                #[cfg(loom)]
                Some(_) => return Wakeup::TimedOut,
                #[cfg(not(loom))]
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Wakeup::TimedOut;
                    }
                    permit = wait_timeout(&self.condvar, permit, deadline - now);
                }
            }
        }
    }
}

#[cfg(not(loom))]
fn wait_timeout<'a>(
    condvar: &Condvar,
    guard: crate::loom::MutexGuard<'a, bool>,
    timeout: Duration,
) -> crate::loom::MutexGuard<'a, bool> {
    match condvar.wait_timeout(guard, timeout) {
        Ok((guard, _)) => guard,
        Err(poisoned) => poisoned.into_inner().0,
    }
}

// ---------------------------------------------------------------------------
// Per-context park state
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunState {
    Running,
    Parked,
    Ready,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WakeReason {
    Woken,
    TimedOut,
    Interrupted,
}

#[derive(Debug)]
struct Scope {
    id: u64,
    timer: TimerKey,
    expired: bool,
}

/// The `with_timeout` scopes a context is in, innermost last. Boxed: most
/// contexts never enter one, and every task slot carries the field.
#[derive(Debug, Default)]
struct Scopes(
    // A thin pointer instead of a `Vec`'s three words, for a list that is
    // usually absent.
    #[allow(clippy::box_collection)] Option<Box<Vec<Scope>>>,
);

impl Scopes {
    fn iter(&self) -> std::slice::Iter<'_, Scope> {
        self.0.as_deref().map_or(&[][..], Vec::as_slice).iter()
    }

    fn iter_mut(&mut self) -> std::slice::IterMut<'_, Scope> {
        self.0
            .as_deref_mut()
            .map_or(&mut [][..], Vec::as_mut_slice)
            .iter_mut()
    }

    fn push(&mut self, scope: Scope) {
        self.0.get_or_insert_default().push(scope);
    }

    /// Removes the scope `id`, if present.
    fn remove(&mut self, id: u64) -> Option<Scope> {
        let scopes = self.0.as_mut()?;
        let position = scopes.iter().position(|scope| scope.id == id)?;
        Some(scopes.remove(position))
    }

    /// Moves every scope out.
    fn take_all(&mut self) -> Vec<Scope> {
        self.0.take().map(|scopes| *scopes).unwrap_or_default()
    }
}

#[derive(Debug)]
struct ParkState {
    run: RunState,
    epoch: u64,
    notified: bool,
    reason: WakeReason,
    timer: Option<TimerKey>,
    scopes: Scopes,
    cancelled: bool,
    /// `cancelled`, or some scope expired: the next park must unwind. Kept
    /// so the hot path tests one flag.
    interrupt_pending: bool,
    /// Interruption unwinds of this context in flight (raised by a park,
    /// not yet caught by `with_timeout` or the task's entry). While one is,
    /// parks made by destructors wait normally instead of raising another
    /// (a second panic while unwinding aborts the process). Per context:
    /// the thread's own panic count is shared by every coroutine on it.
    unwinding: u32,
}

impl ParkState {
    fn new(epoch: u64) -> Self {
        Self {
            run: RunState::Running,
            epoch,
            notified: false,
            reason: WakeReason::Woken,
            timer: None,
            scopes: Scopes::default(),
            cancelled: false,
            interrupt_pending: false,
            unwinding: 0,
        }
    }

    /// Recomputes `interrupt_pending` after `cancelled` or a scope changed.
    fn refresh_interrupt(&mut self) {
        self.interrupt_pending = self.cancelled || self.scopes.iter().any(|scope| scope.expired);
    }

    /// What must interrupt this context now, if anything: cancellation, or
    /// the outermost expired scope.
    fn interruption(&self, owner: UnwindOwner) -> Option<Box<dyn Any + Send>> {
        if !self.interrupt_pending {
            return None;
        }
        if self.cancelled {
            return Some(Box::new(CancelUnwind { owner }));
        }
        self.scopes.iter().find(|scope| scope.expired).map(|scope| {
            Box::new(ElapsedUnwind {
                scope: scope.id,
                owner,
            }) as Box<dyn Any + Send>
        })
    }
}

/// What a slot holds of its task's code.
enum Body {
    /// Nothing: the slot is free, or its task is running (`run_task` holds
    /// the coroutine meanwhile).
    Empty,
    /// The task has not started (or is cancelled first): its body, and the
    /// stack `try_go` reserved (boxed: rare, and the slot stays small).
    Unstarted(TaskRef, Option<Box<GuardedStack>>),
    /// The task started and is suspended.
    Suspended(TaskCoroutine),
}

impl Body {
    /// Takes the body and reserved stack out if the task has not started.
    fn take_unstarted(&mut self) -> Option<(TaskRef, Option<Box<GuardedStack>>)> {
        if !matches!(self, Self::Unstarted(..)) {
            return None;
        }
        match std::mem::replace(self, Self::Empty) {
            Self::Unstarted(body, stack) => Some((body, stack)),
            _ => unreachable!(),
        }
    }
}

/// One task's state on its dispatcher. Kept small: a dispatcher keeps one
/// per live task, and spawning and finishing many tasks walks them all.
struct Slot {
    park: ParkState,
    /// The occupant's task id; 0 when the slot is free.
    task_id: u64,
    body: Body,
    /// The task's yielder, on its own stack; set when it first runs.
    yielder: *const Yielder<(), ()>,
}

#[derive(Default)]
struct IoEntry {
    generation: u32,
    in_use: bool,
    readable: bool,
    writable: bool,
    read_waiters: Vec<(u32, u64)>,
    write_waiters: Vec<(u32, u64)>,
}

struct Core {
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    ready: VecDeque<u32>,
    timers: Timers,
    io: Vec<IoEntry>,
    free_io: Vec<u32>,
    /// The running task, or `ROOT`.
    current: u32,
    root: ParkState,
    /// Tasks spawned and not finished.
    live: usize,
    next_task_id: u64,
    next_scope_id: u64,
    /// Contexts waiting in `run_event_loop` for every other task to finish.
    idle_waiters: Vec<(u32, u64)>,
    /// I/O waiters parked (for deadlock detection).
    io_waiters: usize,
    /// Contexts whose interruption was held back because the thread was
    /// panicking (slot index and occupant); the loop interrupts them again
    /// once no panic is in flight.
    deferred_interrupts: Vec<(u32, u64)>,
}

impl Core {
    fn park_state(&mut self, index: u32) -> &mut ParkState {
        if index == ROOT {
            &mut self.root
        } else {
            &mut self.slots[index as usize].park
        }
    }

    /// Whether context `index` exists: the root, or a slot holding a task.
    fn is_live(&self, index: u32) -> bool {
        index == ROOT
            || self
                .slots
                .get(index as usize)
                .is_some_and(|slot| slot.task_id != 0)
    }

    /// Whether context `index` is still the one of task `task_id` (0 for the
    /// root), not a later occupant of its slot.
    fn is_occupant(&self, index: u32, task_id: u64) -> bool {
        index == ROOT
            || self
                .slots
                .get(index as usize)
                .is_some_and(|slot| slot.task_id == task_id)
    }

    /// Applies a wake to context `index` at `epoch` (see the module docs).
    fn wake(&mut self, index: u32, epoch: u64, reason: WakeReason) {
        if !self.is_live(index) {
            return;
        }
        let park = self.park_state(index);
        if park.epoch != epoch {
            return;
        }
        match park.run {
            RunState::Running => park.notified = true,
            RunState::Ready => {}
            RunState::Parked => {
                park.run = RunState::Ready;
                park.reason = reason;
                if let Some(timer) = park.timer.take() {
                    self.timers.remove(timer);
                }
                if index != ROOT {
                    self.ready.push_back(index);
                }
            }
        }
    }

    /// Makes a parked context runnable to be interrupted (cancel or scope).
    fn interrupt(&mut self, index: u32) {
        let park = self.park_state(index);
        if park.run == RunState::Parked {
            let epoch = park.epoch;
            self.wake(index, epoch, WakeReason::Interrupted);
        }
    }

    fn fire(&mut self, target: TimerTarget) {
        match target {
            TimerTarget::Park { index, epoch } => {
                if index == ROOT || self.slots.get(index as usize).is_some() {
                    let park = self.park_state(index);
                    if park.epoch == epoch {
                        park.timer = None;
                    }
                    self.wake(index, epoch, WakeReason::TimedOut);
                }
            }
            TimerTarget::Scope { index, scope } => {
                if !self.is_live(index) {
                    return;
                }
                let park = self.park_state(index);
                if let Some(entry) = park.scopes.iter_mut().find(|entry| entry.id == scope) {
                    entry.expired = true;
                    park.interrupt_pending = true;
                    self.interrupt(index);
                }
            }
        }
    }

    fn allocate_slot(&mut self) -> (u32, u64) {
        self.next_task_id += 1;
        let task_id = self.next_task_id;
        let index = match self.free_slots.pop() {
            Some(index) => {
                let slot = &mut self.slots[index as usize];
                let epoch = slot.park.epoch + 1;
                slot.park = ParkState::new(epoch);
                slot.task_id = task_id;
                slot.yielder = ptr::null();
                index
            }
            None => {
                let index = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|&index| index != ROOT)
                    .expect("nimgo: more than 4 billion live tasks on one thread");
                self.slots.push(Slot {
                    park: ParkState::new(0),
                    task_id,
                    body: Body::Empty,
                    yielder: ptr::null(),
                });
                index
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.park.run = RunState::Ready;
        self.ready.push_back(index);
        self.live += 1;
        (index, task_id)
    }

    fn release_slot(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        slot.task_id = 0;
        // Callers have taken the body or the coroutine out already, so
        // nothing is dropped while the core is borrowed.
        debug_assert!(matches!(slot.body, Body::Empty));
        slot.yielder = ptr::null();
        if let Some(timer) = slot.park.timer.take() {
            self.timers.remove(timer);
        }
        for scope in slot.park.scopes.take_all() {
            self.timers.remove(scope.timer);
        }
        self.free_slots.push(index);
        self.live -= 1;
        self.check_idle();
    }

    /// An interruption payload of context `index` was dropped: its unwind is
    /// over. If an interruption is still pending and the context parked
    /// meanwhile, interrupt it now.
    fn end_unwind(&mut self, index: u32, task_id: u64) {
        if !self.is_occupant(index, task_id) {
            return;
        }
        let park = self.park_state(index);
        park.unwinding = park.unwinding.saturating_sub(1);
        if park.unwinding == 0 && park.interrupt_pending {
            self.interrupt(index);
        }
    }

    fn check_idle(&mut self) {
        if !self.idle_waiters.is_empty() && self.live <= self.idle_waiters.len() {
            for (index, epoch) in std::mem::take(&mut self.idle_waiters) {
                self.wake(index, epoch, WakeReason::Woken);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The dispatcher
// ---------------------------------------------------------------------------

/// One thread's event loop. Reached through the free functions of this
/// module, which act on the calling thread's dispatcher.
pub(crate) struct Dispatcher {
    core: RefCell<Core>,
    poll: RefCell<Poll>,
    /// Makes a blocking poll return at a sub-millisecond deadline.
    precision_timer: TimerFd,
    events: RefCell<Events>,
    shared: Arc<Shared>,
    remote_buffer: RefCell<Vec<Remote>>,
    shutting_down: Cell<bool>,
}

thread_local! {
    /// The calling thread's dispatcher. A plain pointer with no destructor,
    /// so it stays readable while the owner below unwinds coroutines during
    /// thread exit.
    static CURRENT: Cell<*const Dispatcher> = const { Cell::new(ptr::null()) };
    /// Owns the dispatcher; its destructor shuts it down at thread exit.
    static OWNER: RefCell<Option<Owner>> = const { RefCell::new(None) };
}

struct Owner(Box<Dispatcher>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.shutdown();
        CURRENT.set(ptr::null());
        #[cfg(not(loom))]
        LIVE_DISPATCHERS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How many threads have a dispatcher. With one, a counterpart of a
/// blocking channel call can only be a plain thread, and the call does not
/// spin before parking. Only that heuristic reads it, outside loom models
/// (where nothing spins), so it is a plain `std` atomic with no ordering
/// duty: a stale count only costs or saves one spin.
#[cfg(not(loom))]
static LIVE_DISPATCHERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs `f` with the calling thread's dispatcher, if it has one.
pub(crate) fn with_current<R>(f: impl FnOnce(&Dispatcher) -> R) -> Option<R> {
    let pointer = CURRENT.try_with(Cell::get).ok()?;
    if pointer.is_null() {
        return None;
    }
    // SAFETY: `CURRENT` is non-null only while the `Box<Dispatcher>` held by
    // this thread's `OWNER` is alive: it is set right after the box is
    // stored and cleared in `Owner::drop` before the box is freed. The
    // pointer never leaves this thread, and the dispatcher is only accessed
    // through shared references (its mutable parts are in `RefCell`s).
    let dispatcher = unsafe { &*pointer };
    Some(f(dispatcher))
}

/// Shuts the calling thread's dispatcher down now rather than at thread
/// exit: unstarted tasks are cancelled and suspended ones unwound (their
/// destructors run). A runtime worker calls this before it reports that it
/// has exited, so the runtime knows the unwinding is over. Does nothing on a
/// thread without a dispatcher.
#[cfg_attr(loom, allow(dead_code))] // the runtime is not built under loom
pub(crate) fn shutdown_current_thread() {
    // Take the owner out first: the shutdown runs coroutines, which may use
    // the dispatcher (through `CURRENT`) but must not find `OWNER` borrowed.
    let owner = OWNER
        .try_with(|owner| owner.borrow_mut().take())
        .ok()
        .flatten();
    drop(owner);
}

/// Runs `f` with the calling thread's dispatcher, creating it on first use.
pub(crate) fn with_or_create<R>(f: impl FnOnce(&Dispatcher) -> R) -> io::Result<R> {
    if CURRENT
        .try_with(|current| current.get().is_null())
        .unwrap_or(false)
    {
        let dispatcher = Box::new(Dispatcher::new()?);
        let pointer: *const Dispatcher = &*dispatcher;
        OWNER
            .try_with(|owner| *owner.borrow_mut() = Some(Owner(dispatcher)))
            .map_err(|_| {
                io::Error::other("nimgo: this thread is exiting and can no longer run tasks")
            })?;
        CURRENT.set(pointer);
        #[cfg(not(loom))]
        LIVE_DISPATCHERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    with_current(f).ok_or_else(|| {
        io::Error::other("nimgo: this thread is exiting and can no longer run tasks")
    })
}

impl Dispatcher {
    fn new() -> io::Result<Self> {
        let poll = Poll::new()?;
        let precision_timer = TimerFd::new()?;
        poll.registry().register(
            &mut mio::unix::SourceFd(&precision_timer.as_raw_fd()),
            TIMER_TOKEN,
            Interest::READABLE,
        )?;
        #[cfg(not(loom))]
        let notifier = Notifier::new(mio::Waker::new(poll.registry(), WAKER_TOKEN)?);
        #[cfg(loom)]
        let notifier = Notifier::new();
        Ok(Self {
            core: RefCell::new(Core {
                slots: Vec::new(),
                free_slots: Vec::new(),
                ready: VecDeque::new(),
                timers: Timers::default(),
                io: Vec::new(),
                free_io: Vec::new(),
                current: ROOT,
                root: ParkState::new(0),
                live: 0,
                next_task_id: 0,
                next_scope_id: 0,
                idle_waiters: Vec::new(),
                io_waiters: 0,
                deferred_interrupts: Vec::new(),
            }),
            poll: RefCell::new(poll),
            precision_timer,
            events: RefCell::new(Events::with_capacity(256)),
            shared: Arc::new(Shared::new(notifier)),
            remote_buffer: RefCell::new(Vec::new()),
            shutting_down: Cell::new(false),
        })
    }

    /// The cross-thread half, for wakers and remote spawns.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Queues a task; it starts when the loop reaches it. `make` gets the
    /// task's slot and id and returns its body; `stack` is a stack reserved
    /// in advance (`try_go`), or `None` to take one at start. Returns the
    /// slot and id.
    pub(crate) fn spawn_with(
        &self,
        make: impl FnOnce(u32, u64) -> TaskRef,
        stack: Option<GuardedStack>,
    ) -> (u32, u64) {
        let (index, task_id) = self.core.borrow_mut().allocate_slot();
        // Nothing runs between the reservation and this store (same thread),
        // so the loop never sees the slot empty.
        let body = make(index, task_id);
        self.core.borrow_mut().slots[index as usize].body =
            Body::Unstarted(body, stack.map(Box::new));
        (index, task_id)
    }

    /// Cancels task `task_id` in slot `index` (see `GoTask::cancel`).
    pub(crate) fn cancel(&self, index: u32, task_id: u64) {
        let body = {
            let Ok(mut core) = self.core.try_borrow_mut() else {
                self.shared.push(Remote::Cancel { index, task_id });
                return;
            };
            let Some(slot) = core.slots.get_mut(index as usize) else {
                return;
            };
            if slot.task_id != task_id {
                return;
            }
            slot.park.cancelled = true;
            slot.park.interrupt_pending = true;
            match slot.body.take_unstarted() {
                Some((body, stack)) => {
                    // Never started: drop it here, outside the borrow.
                    let ready_position = core.ready.iter().position(|&queued| queued == index);
                    if let Some(position) = ready_position {
                        core.ready.remove(position);
                    }
                    core.release_slot(index);
                    Some((body, stack))
                }
                None => {
                    core.interrupt(index);
                    None
                }
            }
        };
        if let Some((body, stack)) = body {
            drop(stack);
            self.without_interruptions(|| body.cancel());
        }
    }

    /// Whether a task is ready to run (for a runtime worker deciding to
    /// spin or sleep; a turn with a ready task never blocks).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn has_ready(&self) -> bool {
        !self.core.borrow().ready.is_empty()
    }

    /// Whether this thread has nothing to run but the caller (see
    /// [`may_spin`]): no ready task, no ready root, no interruption for the
    /// caller (its park would unwind at once) nor deferred for another, no
    /// inbox message.
    #[cfg(not(loom))]
    fn has_nothing_else(&self) -> bool {
        let mut core = self.core.borrow_mut();
        let current = core.current;
        let root_ready = current != ROOT && core.root.run == RunState::Ready;
        core.ready.is_empty()
            && !root_ready
            && !core.park_state(current).interrupt_pending
            && core.deferred_interrupts.is_empty()
            && !self.shared.has_pending()
    }

    /// Number of tasks spawned on this dispatcher and not finished.
    pub(crate) fn live_tasks(&self) -> usize {
        self.core.borrow().live
    }

    /// The waker of the running context for its next park.
    pub(crate) fn waker(&self) -> Waker {
        let (index, epoch) = self.next_park();
        Waker::Context {
            shared: self.shared.clone(),
            index,
            epoch,
        }
    }

    /// The running context and the epoch of its next park: what a waker
    /// for that park names.
    fn next_park(&self) -> (u32, u64) {
        let mut core = self.core.borrow_mut();
        let index = core.current;
        (index, core.park_state(index).epoch)
    }

    /// Whether a coroutine of this dispatcher is running (not the root).
    pub(crate) fn in_task(&self) -> bool {
        self.core.borrow().current != ROOT
    }

    /// Parks the running context until woken or `deadline`. See the module
    /// docs; unwinds on cancellation or an expired scope.
    pub(crate) fn park(&self, deadline: Option<Instant>) -> Wakeup {
        self.park_with(deadline, false)
    }

    fn park_with(&self, deadline: Option<Instant>, yield_only: bool) -> Wakeup {
        let (index, yielder, epoch) = {
            let mut core = self.core.borrow_mut();
            let index = core.current;
            let (yielder, task_id) = if index == ROOT {
                (ptr::null(), 0)
            } else {
                let slot = &core.slots[index as usize];
                (slot.yielder, slot.task_id)
            };
            if let Some(payload) = self.take_interruption(&mut core, index, task_id) {
                drop(core);
                panic::resume_unwind(payload);
            }
            let park = core.park_state(index);
            if park.notified && !yield_only {
                park.notified = false;
                park.epoch += 1;
                park.run = RunState::Running;
                return Wakeup::Woken;
            }
            if !yield_only && deadline.is_some_and(|deadline| deadline <= Instant::now()) {
                park.epoch += 1;
                park.run = RunState::Running;
                return Wakeup::TimedOut;
            }
            let epoch = park.epoch;
            if yield_only {
                park.run = RunState::Ready;
                park.reason = WakeReason::Woken;
                if index != ROOT {
                    core.ready.push_back(index);
                }
            } else {
                if index == ROOT
                    && park.run == RunState::Parked
                    && let Some(outer_timer) = park.timer.take()
                {
                    // A nested park of the root (code the loop ran on this
                    // stack): the outer park's timeout must not fire into
                    // this one. The outer park returns spuriously anyway.
                    core.timers.remove(outer_timer);
                }
                let park = core.park_state(index);
                park.run = RunState::Parked;
                if let Some(deadline) = deadline {
                    let key = core
                        .timers
                        .insert(deadline, TimerTarget::Park { index, epoch });
                    core.park_state(index).timer = Some(key);
                }
            }
            (index, yielder, epoch)
        };
        let spurious = if index == ROOT {
            !self.drive_root(epoch)
        } else {
            // SAFETY: `yielder` was stored by this task's coroutine when it
            // first ran and points at the `Yielder` on that coroutine's own
            // stack, which lives as long as the coroutine. `current == index`
            // means we are executing on that very coroutine right now, so the
            // pointee is alive and this is the only code using it.
            unsafe { &*yielder }.suspend(());
            false
        };
        let mut core = self.core.borrow_mut();
        let task_id = if index == ROOT {
            0
        } else {
            core.slots[index as usize].task_id
        };
        if let Some(payload) = self.take_interruption(&mut core, index, task_id) {
            drop(core);
            panic::resume_unwind(payload);
        }
        let park = core.park_state(index);
        if spurious {
            return Wakeup::Woken;
        }
        match park.reason {
            WakeReason::TimedOut => Wakeup::TimedOut,
            WakeReason::Woken | WakeReason::Interrupted => Wakeup::Woken,
        }
    }

    /// The root context is parked at `epoch`: run the loop until it is ready
    /// again. Returns `false` if a nested park of the root (code the loop
    /// ran on this stack, such as a destructor, parked too) consumed the
    /// wake-up: the caller's park then returns spuriously, and its caller
    /// re-checks its condition as the protocol requires.
    fn drive_root(&self, epoch: u64) -> bool {
        loop {
            {
                let mut core = self.core.borrow_mut();
                if core.root.epoch != epoch {
                    return false;
                }
                if core.root.run == RunState::Ready {
                    core.root.run = RunState::Running;
                    core.root.epoch += 1;
                    core.root.notified = false;
                    return true;
                }
            }
            self.turn(None);
        }
    }

    /// One turn of the loop: apply remote messages, fire due timers, run up
    /// to a batch of ready tasks, then poll I/O (blocking, up to `timeout` or
    /// the next timer, only if nothing is runnable). Returns whether any
    /// task ran.
    pub(crate) fn turn(&self, timeout: Option<Duration>) -> bool {
        self.apply_remote();
        self.fire_timers();
        self.retry_deferred_interrupts();
        // A timer that falls due during the batch ends it early, so a slow
        // batch does not make timers late (one clock read per task, only
        // while a timer is armed).
        let mut ran = 0;
        while ran < TASKS_PER_TURN {
            let next = self.core.borrow_mut().ready.pop_front();
            let Some(index) = next else { break };
            self.run_task(index);
            ran += 1;
            let core = self.core.borrow();
            if core.timers.len() != 0
                && core
                    .timers
                    .next_deadline()
                    .is_some_and(|deadline| Instant::now() >= deadline)
            {
                break;
            }
        }
        // Block only when this turn did nothing: the caller re-checks its
        // condition after every turn that ran a task.
        let block = ran == 0 && {
            let core = self.core.borrow();
            core.ready.is_empty() && core.root.run != RunState::Ready
        };
        let timeout = if block {
            let next_timer = self.core.borrow().timers.next_deadline();
            let until_timer =
                next_timer.map(|deadline| deadline.saturating_duration_since(Instant::now()));
            match (timeout, until_timer) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        } else {
            Some(Duration::ZERO)
        };
        self.poll_io(timeout);
        ran > 0
    }

    fn apply_remote(&self) {
        if !self.shared.has_pending() {
            return;
        }
        let mut buffer = self.remote_buffer.take();
        self.shared.drain(&mut buffer);
        self.apply_messages(&mut buffer);
        *self.remote_buffer.borrow_mut() = buffer;
    }

    /// Applies (and empties) `buffer`'s messages.
    fn apply_messages(&self, buffer: &mut Vec<Remote>) {
        for message in buffer.drain(..) {
            match message {
                Remote::Wake { index, epoch } => {
                    self.core.borrow_mut().wake(index, epoch, WakeReason::Woken);
                }
                Remote::Cancel { index, task_id } => self.cancel(index, task_id),
                Remote::Spawn(start) => start(),
                Remote::ReleaseIo(token) => self.release_io(token),
                Remote::UnwindEnded { index, task_id } => {
                    self.core.borrow_mut().end_unwind(index, task_id);
                }
            }
        }
    }

    fn fire_timers(&self) {
        let mut core = self.core.borrow_mut();
        if core.timers.len() == 0 {
            return;
        }
        let now = Instant::now();
        while let Some(target) = core.timers.pop_due(now) {
            core.fire(target);
        }
    }

    fn poll_io(&self, timeout: Option<Duration>) {
        let sleeping = timeout != Some(Duration::ZERO);
        if !sleeping {
            // A non-blocking poll with no source registered could only
            // report the inbox waker, which `apply_remote` does not need
            // (it reads `pending`): skip the syscall (~160 ns), which
            // matters to a runtime worker turning while it spins.
            let core = self.core.borrow();
            if core.io.len() == core.free_io.len() {
                return;
            }
        }
        if sleeping && !self.shared.prepare_sleep() {
            return;
        }
        if let Some(timeout) = timeout
            && timeout.subsec_nanos() % 1_000_000 != 0
        {
            // epoll_wait counts whole milliseconds and mio rounds up: without
            // the timer a 1 ms sleep could last 2. If arming fails, the
            // rounded timeout still bounds the wait.
            let _ = self.precision_timer.arm(timeout);
        }
        let mut events = self.events.borrow_mut();
        let result = self.poll.borrow_mut().poll(&mut events, timeout);
        if sleeping {
            self.shared.finish_sleep();
        }
        if let Err(error) = result
            && error.kind() != io::ErrorKind::Interrupted
        {
            // epoll_wait only fails on invalid arguments; nothing a task
            // did can cause it. Report and keep the loop alive.
            eprintln!("nimgo: epoll_wait failed: {error}");
        }
        let mut core = self.core.borrow_mut();
        for event in events.iter() {
            let token = event.token();
            if token == WAKER_TOKEN || token == TIMER_TOKEN {
                continue;
            }
            let (slot, generation) = split_token(token);
            let Some(entry) = core.io.get_mut(slot) else {
                continue;
            };
            if !entry.in_use || entry.generation != generation {
                continue;
            }
            let mut woken = Vec::new();
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                entry.readable = true;
                woken.append(&mut entry.read_waiters);
            }
            if event.is_writable() || event.is_write_closed() || event.is_error() {
                entry.writable = true;
                woken.append(&mut entry.write_waiters);
            }
            for (index, epoch) in woken {
                core.wake(index, epoch, WakeReason::Woken);
            }
        }
    }

    /// Resumes (or starts) the task in slot `index`.
    fn run_task(&self, index: u32) {
        let mut coroutine = {
            let mut core = self.core.borrow_mut();
            let slot = &mut core.slots[index as usize];
            if slot.task_id == 0 || slot.park.run != RunState::Ready {
                return;
            }
            slot.park.run = RunState::Running;
            slot.park.epoch += 1;
            slot.park.notified = false;
            let coroutine = match std::mem::replace(&mut slot.body, Body::Empty) {
                Body::Suspended(coroutine) => coroutine,
                Body::Empty => unreachable!("nimgo: a ready slot holds a task"),
                Body::Unstarted(body, stack) => {
                    let stack = match stack {
                        Some(stack) => Ok(*stack),
                        None => GuardedStack::new_default(),
                    };
                    match stack {
                        Ok(mut stack) => {
                            stack.set_label(coroutine::next_coroutine_id());
                            TaskCoroutine::with_stack(stack, move |yielder, ()| {
                                task_entry(index, yielder, body);
                            })
                        }
                        Err(error) => {
                            core.release_slot(index);
                            drop(core);
                            fail_to_start(body, error);
                            return;
                        }
                    }
                }
            };
            core.current = index;
            coroutine
        };
        // The task body catches every panic of the user's code, so a resume
        // only unwinds if nimgo itself is broken. Then the guard still puts
        // the dispatcher back in order (no `catch_unwind` on the hot path).
        let guard = ReleaseOnUnwind {
            dispatcher: self,
            index,
        };
        coroutine.resume(());
        std::mem::forget(guard);
        {
            let mut core = self.core.borrow_mut();
            core.current = ROOT;
            if coroutine.done() {
                core.release_slot(index);
            } else {
                core.slots[index as usize].body = Body::Suspended(coroutine);
                return;
            }
        }
        // The stack goes back to the pool here, outside the borrow.
        drop(coroutine);
    }

    /// Registers the yielder of the running task (called on its stack).
    fn set_yielder(&self, index: u32, yielder: &Yielder<(), ()>) {
        self.core.borrow_mut().slots[index as usize].yielder = yielder;
    }

    /// Stops the dispatcher: cancels unstarted tasks and unwinds suspended
    /// ones until none is left, so every destructor runs.
    fn shutdown(&self) {
        self.shutting_down.set(true);
        // Each round cancels everything live, runs what that made ready,
        // then turns the loop once (timers, I/O, the inbox), so destructors
        // that wait for a timer, a file or another thread can finish. Tasks
        // spawned by destructors are cancelled by the next round.
        let mut last_progress = Instant::now();
        loop {
            self.apply_remote();
            let targets: Vec<(u32, u64)> = {
                let core = self.core.borrow();
                core.slots
                    .iter()
                    .enumerate()
                    .filter(|(_, slot)| slot.task_id != 0)
                    .map(|(index, slot)| (index as u32, slot.task_id))
                    .collect()
            };
            if targets.is_empty() {
                // Nothing live: close the inbox (a job sent from now on is
                // cancelled by its sender, not lost in a queue nobody reads)
                // and handle what came meanwhile.
                let mut leftovers = self.shared.close();
                if leftovers.is_empty() {
                    return;
                }
                self.apply_messages(&mut leftovers);
                continue;
            }
            let live_before = self.core.borrow().live;
            for (index, task_id) in targets {
                self.cancel(index, task_id);
            }
            // One bounded turn (at most a batch of tasks, cut short by a due
            // timer): a task that keeps itself ready cannot starve timers,
            // I/O or the stall check.
            self.turn(Some(Duration::from_millis(1)));
            if self.core.borrow().live < live_before {
                last_progress = Instant::now();
            } else if last_progress.elapsed() > SHUTDOWN_STALL_LIMIT {
                break;
            }
        }
        // Tasks that made no progress towards their end for a whole
        // `SHUTDOWN_STALL_LIMIT` (they catch their cancellation, or their
        // destructors wait for something that never comes) cannot be
        // unwound; dropping their coroutines later, while the core itself is
        // being dropped, would run their guards against a dead dispatcher.
        // Leak them instead, loudly.
        drop(self.shared.close());
        let mut core = self.core.borrow_mut();
        let mut leaked = 0;
        for slot in core.slots.iter_mut().filter(|slot| slot.task_id != 0) {
            std::mem::forget(std::mem::replace(&mut slot.body, Body::Empty));
            leaked += 1;
        }
        eprintln!(
            "nimgo: dispatcher shut down with {leaked} task(s) that did not finish unwinding \
             within {SHUTDOWN_STALL_LIMIT:?} (a destructor that never returns, or a task that \
             catches its cancellation); their stacks are leaked"
        );
    }

    /// Registers a `with_timeout` scope on the running context.
    pub(crate) fn enter_scope(&self, deadline: Instant) -> u64 {
        let mut core = self.core.borrow_mut();
        core.next_scope_id += 1;
        let id = core.next_scope_id;
        let index = core.current;
        let timer = core
            .timers
            .insert(deadline, TimerTarget::Scope { index, scope: id });
        core.park_state(index).scopes.push(Scope {
            id,
            timer,
            expired: false,
        });
        id
    }

    /// Removes a scope entered by [`enter_scope`](Self::enter_scope).
    pub(crate) fn exit_scope(&self, id: u64) {
        let mut core = self.core.borrow_mut();
        let index = core.current;
        let park = core.park_state(index);
        if let Some(scope) = park.scopes.remove(id) {
            park.refresh_interrupt();
            core.timers.remove(scope.timer);
        }
    }

    /// The interruption the context `index` must raise now, if any (see the
    /// module docs). None while one of its own is unwinding, and none while
    /// the thread is panicking: raising then would abort the process, and
    /// the panic may be any suspended coroutine's (the count is one per
    /// thread). Such a context is remembered and interrupted again by the
    /// loop as soon as no panic is in flight.
    fn take_interruption(
        &self,
        core: &mut Core,
        index: u32,
        task_id: u64,
    ) -> Option<Box<dyn Any + Send>> {
        if !core.park_state(index).interrupt_pending || core.park_state(index).unwinding > 0 {
            return None;
        }
        if std::thread::panicking() {
            // Some stack of this thread is unwinding, maybe this one:
            // raising now could abort the process. Hold the interruption
            // back; the loop raises it again once no panic is in flight.
            if !core.deferred_interrupts.contains(&(index, task_id)) {
                core.deferred_interrupts.push((index, task_id));
            }
            return None;
        }
        let park = core.park_state(index);
        let owner = UnwindOwner {
            shared: self.shared.clone(),
            index,
            task_id,
        };
        let payload = park.interruption(owner)?;
        park.unwinding += 1;
        Some(payload)
    }

    /// Interrupts again the contexts whose interruption was held back while
    /// the thread was panicking, once no panic is in flight.
    fn retry_deferred_interrupts(&self) {
        let mut core = self.core.borrow_mut();
        if core.deferred_interrupts.is_empty() || std::thread::panicking() {
            return;
        }
        for (index, task_id) in std::mem::take(&mut core.deferred_interrupts) {
            if core.is_occupant(index, task_id) {
                core.interrupt(index);
            }
        }
    }

    /// Runs `f` (destructors of a cancelled task's closure, on the running
    /// context's stack) with interruptions of the running context held
    /// back: an expired deadline of the caller must not cut those
    /// destructors short.
    fn without_interruptions<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore<'a>(&'a Dispatcher, u32);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                if let Ok(mut core) = self.0.core.try_borrow_mut() {
                    let park = core.park_state(self.1);
                    park.unwinding = park.unwinding.saturating_sub(1);
                }
            }
        }
        let index = {
            let mut core = self.core.borrow_mut();
            let index = core.current;
            core.park_state(index).unwinding += 1;
            index
        };
        let _restore = Restore(self, index);
        f()
    }

    /// Parks until every other task of this dispatcher has finished (or is
    /// itself waiting here).
    pub(crate) fn wait_idle(&self) {
        loop {
            {
                let mut core = self.core.borrow_mut();
                let me = usize::from(core.current != ROOT);
                if core.live <= me + core.idle_waiters.len() {
                    return;
                }
                let index = core.current;
                let epoch = core.park_state(index).epoch;
                if index == ROOT {
                    drop(core);
                    if self.stuck() {
                        return;
                    }
                    self.turn(None);
                    continue;
                }
                core.idle_waiters.push((index, epoch));
            }
            let cleanup = IdleWaiterGuard(self);
            self.park(None);
            drop(cleanup);
        }
    }

    /// True when no task can ever run again: nothing is ready, no timer is
    /// armed, no I/O is awaited, no message is queued, and no waker exists
    /// outside this dispatcher. Tasks still parked are then deadlocked.
    fn stuck(&self) -> bool {
        let core = self.core.borrow();
        core.ready.is_empty()
            && core.timers.len() == 0
            && core.io_waiters == 0
            && !self.shared.has_pending()
            && Arc::strong_count(&self.shared) == 1
    }

    // ----- I/O registrations -------------------------------------------------

    fn register(
        &self,
        source: &mut dyn mio::event::Source,
        interest: Interest,
    ) -> io::Result<Token> {
        let (slot, generation) = {
            let mut core = self.core.borrow_mut();
            let slot = match core.free_io.pop() {
                Some(slot) => slot as usize,
                None => {
                    core.io.push(IoEntry::default());
                    core.io.len() - 1
                }
            };
            let entry = &mut core.io[slot];
            entry.in_use = true;
            entry.generation = entry.generation.wrapping_add(1);
            entry.readable = false;
            entry.writable = false;
            (slot, entry.generation)
        };
        let token = make_token(slot, generation);
        let registry_result = {
            let poll = self.poll.borrow();
            match poll.registry().register(source, token, interest) {
                // Still in this epoll from an earlier registration dropped on
                // another thread (its descriptor was not closed): take it over.
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    poll.registry().reregister(source, token, interest)
                }
                other => other,
            }
        };
        if let Err(error) = registry_result {
            self.release_io(token);
            return Err(error);
        }
        Ok(token)
    }

    fn release_io(&self, token: Token) {
        let mut core = self.core.borrow_mut();
        let (slot, generation) = split_token(token);
        if let Some(entry) = core.io.get_mut(slot)
            && entry.in_use
            && entry.generation == generation
        {
            entry.in_use = false;
            let waiters: Vec<_> = entry
                .read_waiters
                .drain(..)
                .chain(entry.write_waiters.drain(..))
                .collect();
            core.free_io.push(slot as u32);
            for (index, epoch) in waiters {
                core.wake(index, epoch, WakeReason::Woken);
            }
        }
    }

    fn io_ready(&self, token: Token, interest: Interest) -> bool {
        let core = self.core.borrow();
        let (slot, _) = split_token(token);
        let entry = &core.io[slot];
        (interest.is_readable() && entry.readable) || (interest.is_writable() && entry.writable)
    }

    fn clear_io(&self, token: Token, interest: Interest) {
        let mut core = self.core.borrow_mut();
        let (slot, _) = split_token(token);
        let entry = &mut core.io[slot];
        if interest.is_readable() {
            entry.readable = false;
        }
        if interest.is_writable() {
            entry.writable = false;
        }
    }

    fn add_io_waiter(&self, token: Token, interest: Interest) -> (u32, u64) {
        let mut core = self.core.borrow_mut();
        let index = core.current;
        let epoch = core.park_state(index).epoch;
        let (slot, _) = split_token(token);
        let entry = &mut core.io[slot];
        if interest.is_readable() {
            entry.read_waiters.push((index, epoch));
        }
        if interest.is_writable() {
            entry.write_waiters.push((index, epoch));
        }
        core.io_waiters += 1;
        (index, epoch)
    }

    fn remove_io_waiter(&self, token: Token, waiter: (u32, u64)) {
        let mut core = self.core.borrow_mut();
        core.io_waiters -= 1;
        let (slot, generation) = split_token(token);
        if let Some(entry) = core.io.get_mut(slot)
            && entry.generation == generation
        {
            entry.read_waiters.retain(|&queued| queued != waiter);
            entry.write_waiters.retain(|&queued| queued != waiter);
        }
    }
}

/// Restores the dispatcher if a resume unwinds (a bug in nimgo itself: the
/// task body catches every panic of the user's code).
struct ReleaseOnUnwind<'a> {
    dispatcher: &'a Dispatcher,
    index: u32,
}

impl Drop for ReleaseOnUnwind<'_> {
    fn drop(&mut self) {
        if let Ok(mut core) = self.dispatcher.core.try_borrow_mut() {
            core.current = ROOT;
            core.release_slot(self.index);
        }
    }
}

struct IdleWaiterGuard<'a>(&'a Dispatcher);

impl Drop for IdleWaiterGuard<'_> {
    fn drop(&mut self) {
        let mut core = self.0.core.borrow_mut();
        let index = core.current;
        core.idle_waiters.retain(|&(waiter, _)| waiter != index);
    }
}

fn make_token(slot: usize, generation: u32) -> Token {
    Token((generation as usize) << 32 | slot)
}

fn split_token(token: Token) -> (usize, u32) {
    (token.0 & 0xffff_ffff, (token.0 >> 32) as u32)
}

/// First code on a task's stack.
fn task_entry(index: u32, yielder: &Yielder<(), ()>, body: TaskRef) {
    with_current(|dispatcher| dispatcher.set_yielder(index, yielder));
    // `TaskRef::run` catches the user's panics and hands them to the joiner.
    body.run();
}

/// A task that could not get a stack completes with the stack error as its
/// panic, so `wait` re-raises it and `join` reports it.
fn fail_to_start(body: TaskRef, error: io::Error) {
    body.fail(format!("nimgo: cannot start a task: {error}"));
}

// ---------------------------------------------------------------------------
// The free functions: the calling thread's dispatcher
// ---------------------------------------------------------------------------

/// The waker of the calling context (task, root, or plain thread).
pub(crate) fn current_waker() -> Waker {
    #[cfg(not(loom))]
    if let Some(waker) = with_current(Dispatcher::waker) {
        return waker;
    }
    THREAD_PARKER.with(|parker| Waker::Thread(parker.clone()))
}

#[cfg(not(loom))]
thread_local! {
    static THREAD_PARKER: Arc<ThreadParker> = Arc::new(ThreadParker::new());
}

#[cfg(loom)]
loom::thread_local! {
    static THREAD_PARKER: Arc<ThreadParker> = Arc::new(ThreadParker::new());
}

/// Parks the calling context until its waker is woken or `deadline` passes.
/// May return spuriously; unwinds on cancellation or an expired scope.
pub(crate) fn park(deadline: Option<Instant>) -> Wakeup {
    #[cfg(not(loom))]
    if let Some(wakeup) = with_current(|dispatcher| dispatcher.park(deadline)) {
        return wakeup;
    }
    THREAD_PARKER.with(|parker| parker.clone()).park(deadline)
}

/// How long a blocking channel call may spin before it parks, when its
/// thread has nothing else to run. A counterpart on another core answers a
/// hand-off in a few hundred ns; a park and its cross-thread wake-up cost
/// about 1 µs more (an inbox message, the loop's turn, two switches) even
/// when the other worker is awake. Spinning longer than a few µs would burn
/// what it saves.
#[cfg(not(loom))]
const SPIN_BEFORE_PARK: Duration = Duration::from_micros(4);

/// Whether a blocking call of the calling thread may spin before it parks
/// ([`spin_before_park`]): only if its thread has nothing else to do. Cheap
/// (no clock read): callers ask before giving up their lock to spin.
///
/// "Nothing else to do": no ready task, no root context ready to run, no
/// inbox message (checked on every spin, so a wake-up or cancel from
/// another thread ends the spin at once), no interruption pending for the
/// caller or waiting for a turn, and no timer due before the spin would
/// end. I/O readiness and a
/// runtime's job queues are not looked at: new I/O events and jobs wait at
/// most [`SPIN_BEFORE_PARK`]. A thread without a
/// dispatcher (a plain thread blocking on a channel) spins the same way; a
/// dispatcher's thread spins only if other threads have dispatchers too
/// (otherwise a counterpart that could act meanwhile is a rare plain
/// thread, and the spin would mostly delay this thread's timers and I/O).
/// The count is process-wide: a one-worker runtime beside a main thread
/// that used `go` counts two.
pub(crate) fn may_spin() -> bool {
    #[cfg(loom)]
    {
        // The models take the spin path with a spin of zero length: the
        // caller gives up its lock and takes it again, and must notice a
        // change made in between (see `Chan::spin`).
        true
    }
    #[cfg(not(loom))]
    {
        with_current(|dispatcher| {
            LIVE_DISPATCHERS.load(std::sync::atomic::Ordering::Relaxed) > 1
                && dispatcher.has_nothing_else()
        })
        .unwrap_or(true)
    }
}

/// Spins while `done()` is false, up to a spin deadline shared by all the
/// spins of one blocking call (`spin_end`, set by the first), the call's
/// own `deadline` or the thread's next timer, and until an inbox message
/// arrives. Returns whether `done()` turned true; `false` means "park now".
///
/// The caller has just found [`may_spin`] true, and nothing ran on this
/// thread since: the thread has nothing else to do, and nothing of its own
/// can change that while it spins (only the inbox, which is watched).
pub(crate) fn spin_before_park(
    spin_end: &mut Option<Instant>,
    deadline: Option<Instant>,
    mut done: impl FnMut() -> bool,
) -> bool {
    #[cfg(loom)]
    {
        // No spinning in the models (it could not end): a spin that saw
        // nothing, the case that must still not lose a wake-up.
        let _ = (spin_end, deadline, &mut done);
        false
    }
    #[cfg(not(loom))]
    {
        let now = Instant::now();
        let end = *spin_end.get_or_insert_with(|| {
            let end = now + SPIN_BEFORE_PARK;
            deadline.map_or(end, |deadline| deadline.min(end))
        });
        if now >= end {
            return false;
        }
        let spun = with_current(|dispatcher| {
            let end = match dispatcher.core.borrow().timers.next_deadline() {
                Some(timer) => timer.min(end),
                None => end,
            };
            spin_until(end, &mut done, || dispatcher.shared.has_pending())
        });
        match spun {
            Some(spun) => spun,
            None => spin_until(end, &mut done, || false),
        }
    }
}

/// Spins until `done()` (`true`), `interrupted()` or `end` (`false`).
#[cfg(not(loom))]
fn spin_until(
    end: Instant,
    mut done: impl FnMut() -> bool,
    interrupted: impl Fn() -> bool,
) -> bool {
    loop {
        for _ in 0..16 {
            if done() {
                return true;
            }
            if interrupted() {
                return false;
            }
            std::hint::spin_loop();
        }
        if Instant::now() >= end {
            return false;
        }
    }
}

/// Whether the caller runs inside a nimgo coroutine (a task).
///
/// ```
/// assert!(!nimgo::dispatcher::in_coroutine());
/// nimgo::go_and_wait(|| assert!(nimgo::dispatcher::in_coroutine()));
/// ```
pub fn in_coroutine() -> bool {
    with_current(Dispatcher::in_task).unwrap_or(false)
}

/// Lets the other ready tasks of this thread run: a coroutine goes to the
/// back of the ready queue; the root context runs one non-blocking turn.
/// Returns `false` if the thread has no dispatcher.
pub(crate) fn yield_current() -> bool {
    with_current(|dispatcher| {
        if dispatcher.in_task() {
            dispatcher.park_with(None, true);
        } else {
            dispatcher.turn(Some(Duration::ZERO));
        }
    })
    .is_some()
}

/// Runs one turn of the calling thread's loop: remote wake-ups, due timers,
/// a batch of ready tasks, then I/O, waiting at most `timeout` for I/O or a
/// timer when nothing is runnable (`None`: until something happens).
/// Returns whether any task ran.
///
/// Inside a coroutine this cannot drive the loop (it is already being
/// driven); it yields to the other tasks instead and returns `true`.
///
/// ```
/// use std::time::Duration;
/// let task = nimgo::go(|| 7);
/// assert!(nimgo::dispatcher::run_once(Some(Duration::ZERO))?);
/// assert!(task.is_finished());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn run_once(timeout: Option<Duration>) -> io::Result<bool> {
    with_or_create(|dispatcher| {
        if dispatcher.in_task() {
            dispatcher.park_with(None, true);
            true
        } else {
            dispatcher.turn(timeout)
        }
    })
}

/// Runs the calling thread's loop until no task is left (NimGo's
/// `runEventLoop`). Inside a coroutine, parks until every other task of the
/// thread has finished.
///
/// It also returns when the tasks left can never be woken (every one parked,
/// no timer, no awaited I/O, no waker held anywhere): a deadlock that would
/// otherwise hang; those tasks are unwound when the thread exits.
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// let count = Rc::new(Cell::new(0));
/// for _ in 0..3 {
///     let count = count.clone();
///     nimgo::go(move || count.set(count.get() + 1));
/// }
/// nimgo::run_event_loop();
/// assert_eq!(count.get(), 3);
/// ```
pub fn run_event_loop() {
    // A thread that cannot get a dispatcher has no tasks to run.
    let _ = with_or_create(Dispatcher::wait_idle);
}

/// A `mio` source registered with the calling thread's dispatcher, so a
/// coroutine can park until it is readable or writable.
///
/// Waiting works on the thread that made the registration (where the
/// coroutines that use it run); elsewhere [`wait`](Self::wait) returns an
/// error. The value may be moved and dropped on any thread: the owner then
/// frees its slot on its next turn. Drop it or call
/// [`deregister`](Self::deregister) before closing the source.
///
/// ```
/// use std::io::{Read, Write};
/// use std::time::Duration;
/// use mio::Interest;
/// use nimgo::dispatcher::Registration;
///
/// let (mut sender, mut receiver) = mio::unix::pipe::new()?;
/// let registration = Registration::new(&mut receiver, Interest::READABLE)?;
/// let reader = nimgo::go(move || {
///     let mut buf = [0u8; 5];
///     let n = registration
///         .io(Interest::READABLE, None, || receiver.read(&mut buf))
///         .unwrap();
///     buf[..n].to_vec()
/// });
/// nimgo::go(move || {
///     nimgo::sleep(Duration::from_millis(5));
///     sender.write_all(b"hello").unwrap();
/// });
/// assert_eq!(reader.wait(), b"hello");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Registration {
    token: Token,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("token", &self.token)
            .finish()
    }
}

impl Registration {
    /// Registers `source` for `interest` with the calling thread's
    /// dispatcher (creating it if needed).
    pub fn new<S: mio::event::Source + ?Sized>(
        source: &mut S,
        interest: Interest,
    ) -> io::Result<Self> {
        let mut source = SourceRef(source);
        with_or_create(|dispatcher| {
            let token = dispatcher.register(&mut source, interest)?;
            Ok(Self {
                token,
                shared: dispatcher.shared.clone(),
            })
        })?
    }

    fn dispatcher<R>(&self, f: impl FnOnce(&Dispatcher) -> R) -> io::Result<R> {
        with_current(|dispatcher| {
            if Arc::ptr_eq(&dispatcher.shared, &self.shared) {
                Some(f(dispatcher))
            } else {
                None
            }
        })
        .flatten()
        .ok_or_else(|| io::Error::other("nimgo: I/O registration used off the thread that made it"))
    }

    /// Parks until the source reports `interest` (readable or writable, or
    /// closed or in error, which an I/O call will then report), or until
    /// `deadline` (`ErrorKind::TimedOut`).
    pub fn wait(&self, interest: Interest, deadline: Option<Instant>) -> io::Result<()> {
        self.dispatcher(|dispatcher| {
            loop {
                if dispatcher.io_ready(self.token, interest) {
                    return Ok(());
                }
                let waiter = dispatcher.add_io_waiter(self.token, interest);
                let guard = IoWaiterGuard {
                    dispatcher,
                    token: self.token,
                    waiter,
                };
                let wakeup = dispatcher.park(deadline);
                drop(guard);
                if wakeup == Wakeup::TimedOut && !dispatcher.io_ready(self.token, interest) {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "nimgo: I/O timed out",
                    ));
                }
            }
        })?
    }

    /// Forgets the cached readiness for `interest`, after the source said
    /// `WouldBlock`.
    pub fn clear(&self, interest: Interest) {
        let _ = self.dispatcher(|dispatcher| dispatcher.clear_io(self.token, interest));
    }

    /// Runs `operation` until it does not return `WouldBlock`, parking for
    /// `interest` in between; gives up with `ErrorKind::TimedOut` at
    /// `deadline`.
    pub fn io<R>(
        &self,
        interest: Interest,
        deadline: Option<Instant>,
        mut operation: impl FnMut() -> io::Result<R>,
    ) -> io::Result<R> {
        loop {
            match operation() {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.clear(interest);
                    self.wait(interest, deadline)?;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }

    /// Removes the source from the dispatcher.
    pub fn deregister<S: mio::event::Source + ?Sized>(self, source: &mut S) -> io::Result<()> {
        let result = self.dispatcher(|dispatcher| {
            dispatcher
                .poll
                .borrow()
                .registry()
                .deregister(&mut SourceRef(source))
        });
        // Drop releases the slot.
        drop(self);
        result?
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self
            .dispatcher(|dispatcher| dispatcher.release_io(self.token))
            .is_err()
        {
            // Dropped on another thread: the owner frees the slot on its
            // next turn. (Its epoll forgets the source when the descriptor
            // is closed; events until then meet a freed slot and are
            // ignored.)
            self.shared.push(Remote::ReleaseIo(self.token));
        }
    }
}

struct IoWaiterGuard<'a> {
    dispatcher: &'a Dispatcher,
    token: Token,
    waiter: (u32, u64),
}

impl Drop for IoWaiterGuard<'_> {
    fn drop(&mut self) {
        self.dispatcher.remove_io_waiter(self.token, self.waiter);
    }
}

/// Adapts `&mut S` (possibly unsized) to `mio::event::Source`.
struct SourceRef<'a, S: mio::event::Source + ?Sized>(&'a mut S);

impl<S: mio::event::Source + ?Sized> mio::event::Source for SourceRef<'_, S> {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.0.register(registry, token, interests)
    }
    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.0.reregister(registry, token, interests)
    }
    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.0.deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_slot_stays_small() {
        // One slot per live task: spawning and finishing 100,000 tasks walks
        // 100,000 of them, so every byte here shows in `go` + `wait`.
        assert_eq!(size_of::<Option<TimerKey>>(), 16);
        assert_eq!(size_of::<Scopes>(), 8);
        assert!(size_of::<ParkState>() <= 48, "{}", size_of::<ParkState>());
        assert!(size_of::<Slot>() <= 120, "{}", size_of::<Slot>());
    }
}
