//! The task cell: one allocation per task, holding its join state and its
//! closure (tokio's task cell, for stackful tasks).
//!
//! ```text
//!             Arc<dyn TaskBody>  (one refcount, one allocation)
//!   TaskRef ──────────┐   ┌─────────────────────────────┐
//!   (dispatcher slot, └──►│ TaskCell<F, T>              │
//!    or a runtime Job)    │   join: JoinState<T>  ◄─────┼── JoinRef<T> (GoTask,
//!   unique, owns F        │   function: MaybeUninit<F>  │    blocking job):
//!                         └─────────────────────────────┘    the join state only
//! ```
//!
//! Two kinds of handles share the cell, each holding a reference of the
//! cell's `Arc`, type-erased behind the same trait object (loom's `Arc` can
//! convert to a trait object only while it is unique, so one erasure serves
//! both):
//!
//! - [`TaskRef`], the *body*: exactly one per cell, never cloned. It alone
//!   runs, cancels or fails the task, and so alone takes the closure out of
//!   the cell: `TaskBody`'s closure methods are `unsafe fn`s and `TaskRef`
//!   is their only caller. A `TaskRef` is `!Send` (the closure may be
//!   `!Send`): it stays on the dispatcher thread that holds it; a runtime
//!   [`Job`](super::Job) wraps one whose closure and result are `Send`.
//!   Dropping a `TaskRef` that did not run cancels the task, on the
//!   dropping thread: the closure never outlives its `TaskRef`.
//! - [`JoinRef<T>`], the *join view*: the cell's `JoinState<T>`, reached
//!   through a pointer into the allocation that the same `Arc` keeps alive.
//!   It never touches the closure. A `GoTask<T>` is one; it is `Send` and
//!   `Sync` when `T` is `Send`, whatever the closure.
//!
//! # Safety argument
//!
//! - The closure slot (`UnsafeCell<MaybeUninit<F>>`, initialised while the
//!   `TaskRef` exists) is accessed only inside
//!   `TaskBody::{run, cancel, fail}`, called only by the cell's one
//!   `TaskRef`, which is not `Clone` and is consumed by `run`, `cancel` and
//!   `fail`: each takes the cell out of the `TaskRef` first, and its `Drop`
//!   cancels only a cell still in it. So the closure is moved out exactly
//!   once, on the thread holding the `TaskRef`.
//! - The closure is run or dropped on the thread holding the `TaskRef`: the
//!   thread of the dispatcher that took the task, which is where a `go`
//!   closure (maybe `!Send`) was created; a `Job` (`Send`) carries a
//!   `TaskRef` across threads only for closures that are `Send`.
//! - The `TaskRef` holds a reference to the cell until the slot is empty,
//!   so when the last `JoinRef` frees the cell, on any thread, the slot is
//!   empty and dropping it runs no destructor of the closure's captures. A
//!   leaked `TaskRef` (a dispatcher giving up on a task at shutdown) leaks
//!   the cell: the closure is never dropped, on any thread.
//! - A `JoinRef<T>` shared across threads reaches only the `JoinState<T>`
//!   (a mutex and atomics, `Send + Sync` when `T: Send`) and the atomic
//!   refcount; hence `JoinRef<T>: Send + Sync` when `T: Send`.

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::panic::{self, AssertUnwindSafe};

use super::{JoinError, JoinState, drop_quietly};
use crate::dispatcher::{CancelUnwind, Shared};
use crate::loom::{Arc, UnsafeCell};

/// A task's allocation: its join state and, until the body takes it, its
/// closure. `repr(C)` with the join state first: a [`JoinRef`] finds it at
/// the cell's address, and so needs no pointer of its own.
#[repr(C)]
struct TaskCell<F, T> {
    join: JoinState<T>,
    /// The closure, initialised while the cell's `TaskRef` exists and moved
    /// out exactly once, by the `TaskBody` method that consumes the
    /// `TaskRef` (a blocking job's cell never has one). Not an `Option`:
    /// the `TaskRef` is the flag, which saves a word (the cell of a small
    /// closure then fits the allocator's fast bins). Never dropped in place.
    function: UnsafeCell<MaybeUninit<F>>,
}

/// The type-erased cell, as both handles see it.
pub(crate) trait TaskBody {
    /// [`JoinState::place`] of the cell's join state.
    fn place(&self, shared: Arc<Shared>, index: u32, task_id: u64) -> bool;

    /// Runs the closure to completion (on its coroutine) and completes the
    /// join state.
    ///
    /// # Safety
    ///
    /// Only the cell's [`TaskRef`] may call this, `cancel` or `fail`, once
    /// in all (each moves the closure out of its slot), on the thread that
    /// holds the `TaskRef`, and never for a cell made by [`new_join`].
    unsafe fn run(&self);

    /// The task will never run: completes the join state as cancelled and
    /// drops the closure (catching a panic of its destructor).
    ///
    /// # Safety
    ///
    /// As [`run`](Self::run).
    unsafe fn cancel(&self);

    /// The task cannot start (no stack): completes the join state with
    /// `message` as the panic and drops the closure.
    ///
    /// # Safety
    ///
    /// As [`run`](Self::run).
    unsafe fn fail(&self, message: String);
}

impl<F, T> TaskCell<F, T> {
    /// Moves the closure out of its slot.
    ///
    /// # Safety
    ///
    /// As [`TaskBody::run`]: once, on behalf of the cell's `TaskRef`.
    unsafe fn take_function(&self) -> F {
        // SAFETY: per this function's contract, the caller acts for the
        // cell's only `TaskRef`, on its thread, and this is the one time the
        // slot is read: it was initialised by `new_task` (the only maker of
        // a `TaskRef`), nothing else reads or writes it, and no reference
        // into it outlives this statement.
        self.function
            .with_mut(|slot| unsafe { (*slot).assume_init_read() })
    }
}

impl<F: FnOnce() -> T, T> TaskBody for TaskCell<F, T> {
    fn place(&self, shared: Arc<Shared>, index: u32, task_id: u64) -> bool {
        self.join.place(shared, index, task_id)
    }

    unsafe fn run(&self) {
        // SAFETY: our caller fulfils `run`'s contract, which is
        // `take_function`'s.
        let function = unsafe { self.take_function() };
        let result = match panic::catch_unwind(AssertUnwindSafe(function)) {
            Ok(value) => Ok(value),
            Err(payload) if payload.is::<CancelUnwind>() => Err(JoinError::Cancelled),
            Err(payload) => Err(JoinError::Panicked(payload)),
        };
        self.join.complete(result);
    }

    unsafe fn cancel(&self) {
        // SAFETY: as in `run`.
        let function = unsafe { self.take_function() };
        self.join.complete(Err(JoinError::Cancelled));
        drop_quietly(function);
    }

    unsafe fn fail(&self, message: String) {
        // SAFETY: as in `run`.
        let function = unsafe { self.take_function() };
        self.join
            .complete(Err(JoinError::Panicked(Box::new(message))));
        drop_quietly(function);
    }
}

/// Allocates `cell` behind the erased trait object. loom's `Arc` cannot
/// coerce to a trait object; it converts a unique `std` one instead.
fn erase<C: TaskBody + 'static>(cell: C) -> Arc<dyn TaskBody> {
    #[cfg(not(loom))]
    let cell: Arc<dyn TaskBody> = Arc::new(cell);
    #[cfg(loom)]
    let cell: Arc<dyn TaskBody> =
        Arc::from_std(std::sync::Arc::new(cell) as std::sync::Arc<dyn TaskBody>);
    cell
}

/// Makes the cell of a task running `function`, completing `join`: its
/// body (for the dispatcher) and its join view (for the `GoTask`).
pub(crate) fn new_task<F, T>(function: F, join: JoinState<T>) -> (TaskRef, JoinRef<T>)
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let cell = erase(TaskCell {
        join,
        function: UnsafeCell::new(MaybeUninit::new(function)),
    });
    let join = JoinRef::new(cell.clone());
    (TaskRef { cell: Some(cell) }, join)
}

/// A join state with no closure and no body (a blocking-pool job, which
/// keeps its closure itself).
pub(crate) fn new_join<T: 'static>(join: JoinState<T>) -> JoinRef<T> {
    JoinRef::new(erase(TaskCell::<fn() -> T, T> {
        join,
        function: UnsafeCell::new(MaybeUninit::uninit()),
    }))
}

/// The body of a task: the one handle that runs, cancels or fails it (see
/// the module docs). Dropping it unused cancels the task.
pub(crate) struct TaskRef {
    /// `Some` until `run`, `cancel`, `fail` or `drop` takes it: then the
    /// closure is moved out, exactly once.
    cell: Option<Arc<dyn TaskBody>>,
}

impl TaskRef {
    /// Runs the task to completion; see [`TaskBody::run`].
    pub(crate) fn run(mut self) {
        if let Some(cell) = self.cell.take() {
            // SAFETY: `self` is the cell's only `TaskRef` (made once by
            // `new_task`, not `Clone`), used on the thread holding it, and
            // `cell` was still in it: no `TaskBody` method ran yet, and
            // none will after this one (the `TaskRef` is empty now).
            unsafe { cell.run() }
        }
    }

    /// Cancels the unstarted task; see [`TaskBody::cancel`].
    pub(crate) fn cancel(mut self) {
        if let Some(cell) = self.cell.take() {
            // SAFETY: as in `run`.
            unsafe { cell.cancel() }
        }
    }

    /// Fails the unstarted task with `message`; see [`TaskBody::fail`].
    pub(crate) fn fail(mut self, message: String) {
        if let Some(cell) = self.cell.take() {
            // SAFETY: as in `run`.
            unsafe { cell.fail(message) }
        }
    }

    /// Records where the task runs; see [`JoinState::place`].
    pub(crate) fn place(&self, shared: Arc<Shared>, index: u32, task_id: u64) -> bool {
        self.cell
            .as_ref()
            .is_none_or(|cell| cell.place(shared, index, task_id))
    }
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        if let Some(cell) = self.cell.take() {
            // SAFETY: as in `run`. The task never ran: it is cancelled here,
            // on the thread that holds its body.
            unsafe { cell.cancel() }
        }
    }
}

/// The join view of a task cell: its `JoinState<T>` (see the module docs).
/// One fat pointer (a `GoTask` is two words): the join state is found at
/// the cell's address.
pub(crate) struct JoinRef<T> {
    /// Keeps the cell alive; always a `TaskCell<_, T>`.
    cell: Arc<dyn TaskBody>,
    /// The last reference drops the cell, and so a result `T`.
    _result: PhantomData<T>,
}

impl<T> JoinRef<T> {
    /// The join view of `cell`, which must be a `TaskCell<_, T>` (`new_task`
    /// and `new_join` are the only callers, with the cell they just made).
    fn new(cell: Arc<dyn TaskBody>) -> Self {
        Self {
            cell,
            _result: PhantomData,
        }
    }
}

impl<T> Clone for JoinRef<T> {
    fn clone(&self) -> Self {
        Self::new(self.cell.clone())
    }
}

impl<T> std::ops::Deref for JoinRef<T> {
    type Target = JoinState<T>;

    fn deref(&self) -> &JoinState<T> {
        let join = Arc::as_ptr(&self.cell).cast::<JoinState<T>>();
        // SAFETY: `cell` is a `TaskCell<_, T>` (see `new`), which is
        // `repr(C)` with its `JoinState<T>` first, so the join state is at
        // the cell's address; the allocation lives as long as `cell`, and
        // only shared references to the join state are ever made.
        unsafe { &*join }
    }
}

// SAFETY: a `JoinRef<T>` reaches only the cell's `JoinState<T>`, which is
// `Send + Sync` when `T: Send` (checked below), and the `Arc`'s atomic
// refcount. It never touches the closure slot; when it frees the cell, the
// slot is already empty (see the module docs), so no destructor of a
// (maybe `!Send`) closure runs on its thread.
unsafe impl<T: Send> Send for JoinRef<T> {}
// SAFETY: as for `Send`: shared, it reaches the same things.
unsafe impl<T: Send> Sync for JoinRef<T> {}

/// The `Send`/`Sync` impls above rely on this.
#[allow(dead_code)]
fn join_state_is_send_and_sync<T: Send>() {
    fn check<X: Send + Sync>() {}
    check::<JoinState<T>>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_task_fits_the_allocators_fast_bins() {
        // glibc serves requests up to 120 bytes from its fast bins; the
        // `Arc` adds two counts (16 bytes) to the cell.
        let closure = {
            let value = 7u64;
            move || value
        };
        assert!(size_of_val(&closure) == 8);
        let cell = TaskCell {
            join: JoinState::<u64>::new(),
            function: UnsafeCell::new(MaybeUninit::new(closure)),
        };
        assert!(16 + size_of_val(&cell) <= 120, "{}", size_of_val(&cell));
    }

    #[test]
    fn a_join_handle_is_two_words() {
        assert_eq!(size_of::<super::super::GoTask<u64>>(), 16);
    }

    #[test]
    fn the_join_state_is_at_the_cells_address() {
        let (body, join) = new_task(|| 5u8, JoinState::new());
        let cell = Arc::as_ptr(&join.cell).cast::<u8>();
        let state = std::ptr::from_ref::<JoinState<u8>>(&join).cast::<u8>();
        assert_eq!(cell, state);
        body.run();
        assert_eq!(join.try_take().map(Result::ok), Some(Some(5)));
    }
}
