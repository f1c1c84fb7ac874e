//! The task cell: one allocation per task, holding its join state and its
//! closure (tokio's task cell, for stackful tasks).
//!
//! ```text
//!                         ┌─────────────────────────────┐
//!   JoinRef<T> (GoTask, ─►│ TaskCell<F, T>   repr(C)    │
//!   blocking job): the    │   join: JoinState<T>        │
//!   join state only       │   header: refs (atomic),  ◄─┼── TaskRef (dispatcher slot,
//!                         │           vtable            │    or a runtime Job):
//!                         │   function: F               │    unique, owns F
//!                         └─────────────────────────────┘
//! ```
//!
//! The cell is reference-counted by hand (one atomic count in its header,
//! and a static table of functions that know `F` and `T`), not by `Arc`:
//! its memory then comes from, and goes back to, the per-thread cache of
//! `cache.rs` rather than straight to the global allocator, and each handle
//! is one thin pointer.
//!
//! Two kinds of handles share the cell, each holding one reference:
//!
//! - [`TaskRef`], the *body*: exactly one per cell, never cloned. It alone
//!   runs, cancels or fails the task, and so alone takes the closure out of
//!   the cell: the table's closure entries are `unsafe fn`s and `TaskRef`
//!   is their only caller. A `TaskRef` is `!Send` (the closure may be
//!   `!Send`): it stays on the dispatcher thread that holds it; a runtime
//!   [`Job`](super::Job) wraps one whose closure and result are `Send`.
//!   Dropping a `TaskRef` that did not run cancels the task, on the
//!   dropping thread: the closure never outlives its `TaskRef`.
//! - [`JoinRef<T>`], the *join view*: the cell's `JoinState<T>`, at the
//!   cell's address (so a `JoinRef<T>`, which does not know `F`, finds it
//!   and the header after it). It never touches the closure. A `GoTask<T>`
//!   is one; it is `Send` and `Sync` when `T` is `Send`, whatever the
//!   closure.
//!
//! # The reference count
//!
//! `refs` starts at the number of handles made (two: body and join view;
//! one for a blocking job's cell, which has no body). A clone adds one
//! (relaxed: the clone comes from a live handle, which keeps the count
//! above zero). A handle let go subtracts one with release ordering; the
//! one that takes the count to zero issues an acquire fence and frees the
//! cell: it drops the join state in place and hands the memory back
//! (`cache::free`). So every access any handle made to the cell, on any
//! thread, happens before the free (`Arc`'s protocol). The loom model of
//! `loom-tests/tests/join.rs` checks it: the free writes the result slot,
//! which loom reports if it races with another thread's last access.
//!
//! # Safety argument
//!
//! - The closure slot (`UnsafeCell<MaybeUninit<F>>`) is accessed only by
//!   the table's `run`, `cancel` and `fail`, called only by the cell's one
//!   `TaskRef`, which is not `Clone` and is consumed by `run`, `cancel` and
//!   `fail` (its `Drop` calls `cancel` if none of them did). So the slot is
//!   read once, on the thread holding the `TaskRef`.
//! - The closure is run or dropped on the thread holding the `TaskRef`: the
//!   thread of the dispatcher that took the task, which is where a `go`
//!   closure (maybe `!Send`) was created; a `Job` (`Send`) carries a
//!   `TaskRef` across threads only for closures that are `Send`.
//! - The `TaskRef` holds a reference to the cell until the slot is empty,
//!   so when the last `JoinRef` frees the cell, on any thread, the slot is
//!   empty, and the free drops only the join state (the slot is never
//!   dropped in place). A leaked `TaskRef` (a dispatcher giving up on a
//!   task at shutdown) leaks the cell: the closure is never dropped, on any
//!   thread.
//! - A `JoinRef<T>` shared across threads reaches only the `JoinState<T>`
//!   (a mutex and atomics, `Send + Sync` when `T: Send`) and the atomic
//!   count; the free it may run drops a `JoinState<T>` (so `T: Send`) and
//!   gives the memory to its thread's cache; hence `JoinRef<T>: Send +
//!   Sync` when `T: Send`.

use std::alloc::Layout;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::{self, NonNull};

use super::{JoinError, JoinState, cache, drop_quietly};
use crate::dispatcher::{CancelUnwind, Shared};
use crate::loom::{Arc, AtomicUsize, Ordering, UnsafeCell, fence};

/// What both handles find in every cell, right after the join state.
struct Header {
    /// Handles holding the cell (see the module docs).
    refs: AtomicUsize,
    /// The functions of the cell's `TaskCell<F, T>`.
    vtable: &'static VTable,
}

/// The type-erased operations of a `TaskCell<F, T>`. Each takes the cell's
/// header, which must be the header of a live cell of that type (the one
/// this table was stored in).
struct VTable {
    /// [`JoinState::place`] of the cell's join state.
    place: unsafe fn(NonNull<Header>, Arc<Shared>, u32, u64) -> bool,
    /// Runs the closure to completion (on its coroutine) and completes the
    /// join state. Also: only the cell's [`TaskRef`] may call this,
    /// `cancel` or `fail`, once in all (each moves the closure out of its
    /// slot), on the thread that holds the `TaskRef`, and never for a cell
    /// made by [`new_join`].
    run: unsafe fn(NonNull<Header>),
    /// The task will never run: completes the join state as cancelled and
    /// drops the closure (catching a panic of its destructor). As `run`.
    cancel: unsafe fn(NonNull<Header>),
    /// The task cannot start (no stack): completes the join state with the
    /// message as the panic and drops the closure. As `run`.
    fail: unsafe fn(NonNull<Header>, String),
    /// Frees the cell: drops its join state and returns its memory. Also:
    /// the count has reached zero, so nothing else uses the cell.
    free: unsafe fn(NonNull<Header>),
}

/// The part of a cell that does not depend on the closure: a
/// [`JoinRef<T>`] sees the cell as this.
#[repr(C)]
struct Prefix<T> {
    join: JoinState<T>,
    header: Header,
}

/// A task's allocation: its join state, its header and, until the body
/// takes it, its closure. `repr(C)` with the prefix first, so the join
/// state is at the cell's address and the header at an offset that
/// depends on `T` only.
#[repr(C)]
struct TaskCell<F, T> {
    prefix: Prefix<T>,
    /// The closure, initialised while the cell's `TaskRef` exists and moved
    /// out exactly once, by the table function that consumes the `TaskRef`
    /// (a blocking job's cell never has one). Not an `Option`: the
    /// `TaskRef` is the flag. Never dropped in place.
    function: UnsafeCell<MaybeUninit<F>>,
}

impl<F: FnOnce() -> T, T> TaskCell<F, T> {
    const VTABLE: VTable = VTable {
        place: Self::place,
        run: Self::run,
        cancel: Self::cancel,
        fail: Self::fail,
        free: Self::free,
    };

    /// The cell whose header is `header`.
    ///
    /// # Safety
    ///
    /// `header` is the header of a `TaskCell<F, T>` (live, for the result
    /// to be used).
    unsafe fn from_header(header: NonNull<Header>) -> NonNull<Self> {
        // SAFETY: the caller's contract, which is `prefix_of`'s; the prefix
        // is at the start of the `repr(C)` cell.
        unsafe { prefix_of::<T>(header).cast::<Self>() }
    }

    /// Moves the closure out of its slot.
    ///
    /// # Safety
    ///
    /// As [`VTable::run`]: once, on behalf of the cell's `TaskRef`, on a
    /// live cell.
    unsafe fn take_function(header: NonNull<Header>) -> (NonNull<Self>, F) {
        // SAFETY: our caller's contract: a live `TaskCell<F, T>`.
        let cell = unsafe { Self::from_header(header) };
        // SAFETY: the cell is live, and only shared references to it are
        // made (its mutable parts are atomics, locks and cells).
        let slot = unsafe { &cell.as_ref().function };
        // SAFETY: per this function's contract, the caller acts for the
        // cell's only `TaskRef`, on its thread, and this is the one time the
        // slot is read: it was initialised by `new_task` (the only maker of
        // a `TaskRef`), nothing else reads or writes it, and no reference
        // into it outlives this statement.
        let function = slot.with_mut(|slot| unsafe { (*slot).assume_init_read() });
        (cell, function)
    }

    /// # Safety
    ///
    /// As [`VTable::place`].
    unsafe fn place(
        header: NonNull<Header>,
        shared: Arc<Shared>,
        index: u32,
        task_id: u64,
    ) -> bool {
        // SAFETY: a live `TaskCell<F, T>` (the contract); shared access.
        let cell = unsafe { Self::from_header(header).as_ref() };
        cell.prefix.join.place(shared, index, task_id)
    }

    /// # Safety
    ///
    /// As [`VTable::run`].
    unsafe fn run(header: NonNull<Header>) {
        // SAFETY: our caller fulfils `run`'s contract, which is
        // `take_function`'s.
        let (cell, function) = unsafe { Self::take_function(header) };
        let result = match panic::catch_unwind(AssertUnwindSafe(function)) {
            Ok(value) => Ok(value),
            Err(payload) if payload.is::<CancelUnwind>() => Err(JoinError::Cancelled),
            Err(payload) => Err(JoinError::Panicked(payload)),
        };
        // SAFETY: the `TaskRef` still holds its reference: the cell lives.
        unsafe { cell.as_ref() }.prefix.join.complete(result);
    }

    /// # Safety
    ///
    /// As [`VTable::run`].
    unsafe fn cancel(header: NonNull<Header>) {
        // SAFETY: as in `run`.
        let (cell, function) = unsafe { Self::take_function(header) };
        // SAFETY: as in `run`.
        unsafe { cell.as_ref() }
            .prefix
            .join
            .complete(Err(JoinError::Cancelled));
        drop_quietly(function);
    }

    /// # Safety
    ///
    /// As [`VTable::run`].
    unsafe fn fail(header: NonNull<Header>, message: String) {
        // SAFETY: as in `run`.
        let (cell, function) = unsafe { Self::take_function(header) };
        // SAFETY: as in `run`.
        unsafe { cell.as_ref() }
            .prefix
            .join
            .complete(Err(JoinError::Panicked(Box::new(message))));
        drop_quietly(function);
    }

    /// # Safety
    ///
    /// As [`VTable::free`].
    unsafe fn free(header: NonNull<Header>) {
        // SAFETY: the header of a `TaskCell<F, T>` (the contract).
        let cell = unsafe { Self::from_header(header) };
        {
            // SAFETY: the count reached zero: the cell is live and ours.
            let join = unsafe { &cell.as_ref().prefix.join };
            // A write to the result slot, for loom to check that every
            // other thread's access to the cell happens before its free (a
            // no-op outside loom).
            join.result.with_mut(|_| ());
        }
        /// Returns the memory even if a destructor of the join state (the
        /// result's) panics: drop glue still drops every other field while
        /// that panic unwinds, and then nothing uses the cell.
        struct FreeMemory(NonNull<u8>, Layout);
        impl Drop for FreeMemory {
            fn drop(&mut self) {
                // SAFETY: the memory came from `cache::allocate` with this
                // layout (`allocate`), and this runs after the cell was
                // dropped (or unwound out of its drop): nothing uses it.
                unsafe { cache::free(self.0, self.1) };
            }
        }
        let _memory = FreeMemory(cell.cast(), Layout::new::<Self>());
        // SAFETY: nothing else uses the cell (the contract); the closure
        // slot is `MaybeUninit` (empty by now, see the module docs) and is
        // not dropped, the rest is dropped once, here.
        unsafe { ptr::drop_in_place(cell.as_ptr()) };
    }

    /// Allocates the cell, with `refs` references; returns its header.
    fn allocate(join: JoinState<T>, function: MaybeUninit<F>, refs: usize) -> NonNull<Header> {
        let layout = Layout::new::<Self>();
        let cell = cache::allocate(layout).cast::<Self>();
        // SAFETY: `cell` is fresh memory for `layout` (`allocate` never
        // returns a block in use), so writing the cell there is valid.
        unsafe {
            cell.write(TaskCell {
                prefix: Prefix {
                    join,
                    header: Header {
                        refs: AtomicUsize::new(refs),
                        vtable: const { &Self::VTABLE },
                    },
                },
                function: UnsafeCell::new(function),
            });
        }
        // SAFETY: `cell` points to the value just written. The header
        // pointer is projected from `cell` (not made from a reference to the
        // field), so it keeps the provenance of the whole allocation:
        // `from_header` steps back from it to the cell's start.
        unsafe { NonNull::new_unchecked(&raw mut (*cell.as_ptr()).prefix.header) }
    }
}

/// The `Prefix<T>` (the start of the cell) whose header is `header`: the
/// one step back from a header, for both handles.
///
/// # Safety
///
/// `header` is the header of a `TaskCell<_, T>`, with the provenance of
/// the whole cell (projected from the cell's pointer, as `allocate` does).
unsafe fn prefix_of<T>(header: NonNull<Header>) -> NonNull<Prefix<T>> {
    // SAFETY: the header is the `header` field of the `Prefix<T>` at the
    // start of the cell (`repr(C)`), so stepping back by its offset stays in
    // the same allocation and reaches the cell's start.
    unsafe {
        header
            .byte_sub(std::mem::offset_of!(Prefix<T>, header))
            .cast()
    }
}

/// Adds a reference to the cell of `header`.
fn acquire(header: &Header) {
    // Relaxed, as `Arc::clone`: the caller's handle keeps the cell alive.
    let old = header.refs.fetch_add(1, Ordering::Relaxed);
    if old > isize::MAX as usize {
        // Billions of leaked handles: abort as `Arc` does.
        std::process::abort();
    }
}

/// Lets go of a reference to the cell of `header`; the last frees it.
///
/// # Safety
///
/// The caller holds a reference to the live cell, and gives it up.
unsafe fn release(header: NonNull<Header>) {
    // SAFETY: the caller's reference keeps the cell alive until the
    // subtraction below.
    let (refs, free) = unsafe {
        let header = header.as_ref();
        (&header.refs, header.vtable.free)
    };
    if refs.fetch_sub(1, Ordering::Release) != 1 {
        return;
    }
    // Every other handle's release (and so its accesses) happens before.
    fence(Ordering::Acquire);
    // SAFETY: the count reached zero: no handle is left, and the header is
    // the one this cell's own table was stored in.
    unsafe { free(header) };
}

/// [`release`] for the body, which runs on a dispatcher's loop (or a
/// coroutine of it): if the join view was dropped first, this frees the
/// cell and so drops the task's result (or its panic payload), user code
/// whose panic must not escape into the loop and stop a worker. It is
/// caught and reported, as for a cancelled closure's destructor.
///
/// # Safety
///
/// As [`release`].
unsafe fn release_quietly(header: NonNull<Header>) {
    // SAFETY: the caller's contract, passed on.
    let released = panic::catch_unwind(AssertUnwindSafe(|| unsafe { release(header) }));
    if released.is_err() {
        eprintln!("nimgo: a destructor of a finished task's result panicked; ignored");
    }
}

/// Makes the cell of a task running `function`, completing `join`: its
/// body (for the dispatcher) and its join view (for the `GoTask`).
pub(crate) fn new_task<F, T>(function: F, join: JoinState<T>) -> (TaskRef, JoinRef<T>)
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let header = TaskCell::<F, T>::allocate(join, MaybeUninit::new(function), 2);
    // SAFETY: a `TaskCell<F, T>`'s header, with one reference for each.
    unsafe { (TaskRef::new(header), JoinRef::from_header(header)) }
}

/// A join state with no closure and no body (a blocking-pool job, which
/// keeps its closure itself).
pub(crate) fn new_join<T: 'static>(join: JoinState<T>) -> JoinRef<T> {
    let header = TaskCell::<fn() -> T, T>::allocate(join, MaybeUninit::uninit(), 1);
    // SAFETY: a `TaskCell<_, T>`'s header, with one reference for it.
    unsafe { JoinRef::from_header(header) }
}

/// The body of a task: the one handle that runs, cancels or fails it (see
/// the module docs). Dropping it unused cancels the task.
pub(crate) struct TaskRef {
    /// `Some` until `run`, `cancel`, `fail` or `drop` takes it: then the
    /// closure is moved out, exactly once. Holds one reference.
    header: Option<NonNull<Header>>,
}

impl TaskRef {
    /// # Safety
    ///
    /// `header` is a live cell's, made by `new_task`, with a reference for
    /// this handle; called once per cell.
    unsafe fn new(header: NonNull<Header>) -> Self {
        Self {
            header: Some(header),
        }
    }

    /// Runs the task to completion; see [`VTable::run`].
    pub(crate) fn run(mut self) {
        if let Some(header) = self.header.take() {
            // SAFETY: `self` is the cell's only `TaskRef` (made once by
            // `new_task`, not `Clone`), used on the thread holding it, and
            // `header` was still in it: no closure entry ran yet, and none
            // will after this one (the `TaskRef` is empty now). Its
            // reference keeps the cell alive until the release, which
            // gives that reference up.
            unsafe {
                (header.as_ref().vtable.run)(header);
                release_quietly(header);
            }
        }
    }

    /// Cancels the unstarted task; see [`VTable::cancel`].
    pub(crate) fn cancel(mut self) {
        if let Some(header) = self.header.take() {
            // SAFETY: as in `run`.
            unsafe {
                (header.as_ref().vtable.cancel)(header);
                release_quietly(header);
            }
        }
    }

    /// Fails the unstarted task with `message`; see [`VTable::fail`].
    pub(crate) fn fail(mut self, message: String) {
        if let Some(header) = self.header.take() {
            // SAFETY: as in `run`.
            unsafe {
                (header.as_ref().vtable.fail)(header, message);
                release_quietly(header);
            }
        }
    }

    /// Records where the task runs; see [`JoinState::place`].
    pub(crate) fn place(&self, shared: Arc<Shared>, index: u32, task_id: u64) -> bool {
        self.header.is_none_or(|header| {
            // SAFETY: the `TaskRef`'s reference keeps the cell alive, and
            // the table is the cell's own.
            unsafe { (header.as_ref().vtable.place)(header, shared, index, task_id) }
        })
    }
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        if let Some(header) = self.header.take() {
            // SAFETY: as in `run`. The task never ran: it is cancelled here,
            // on the thread that holds its body.
            unsafe {
                (header.as_ref().vtable.cancel)(header);
                release_quietly(header);
            }
        }
    }
}

/// The join view of a task cell: its `JoinState<T>` (see the module docs).
/// One thin pointer (a `GoTask` is one word).
pub(crate) struct JoinRef<T> {
    /// The cell, seen as its prefix (it is a `TaskCell<_, T>`). Holds one
    /// reference.
    cell: NonNull<Prefix<T>>,
    /// The last reference drops the cell, and so a result `T`.
    _result: PhantomData<T>,
}

impl<T> JoinRef<T> {
    /// # Safety
    ///
    /// `header` is the header of a live `TaskCell<_, T>`, and the caller
    /// gives this handle one of its references.
    unsafe fn from_header(header: NonNull<Header>) -> Self {
        Self {
            // SAFETY: the header of a `TaskCell<_, T>` (our contract).
            cell: unsafe { prefix_of::<T>(header) },
            _result: PhantomData,
        }
    }

    fn prefix(&self) -> &Prefix<T> {
        // SAFETY: the cell is a `TaskCell<_, T>` (see `from_header`), which
        // is `repr(C)` with its `Prefix<T>` first; our reference keeps it
        // alive as long as `self`, and only shared references to it are
        // ever made.
        unsafe { self.cell.as_ref() }
    }
}

impl<T> Clone for JoinRef<T> {
    fn clone(&self) -> Self {
        acquire(&self.prefix().header);
        Self {
            cell: self.cell,
            _result: PhantomData,
        }
    }
}

impl<T> Drop for JoinRef<T> {
    fn drop(&mut self) {
        // SAFETY: `self.cell` points to the live cell (our reference keeps
        // it); the header pointer is projected from it, keeping the whole
        // allocation's provenance, which `release` needs to free the cell.
        let header = unsafe { NonNull::new_unchecked(&raw mut (*self.cell.as_ptr()).header) };
        // SAFETY: `self` holds a reference to the live cell and gives it up
        // (it is not used after).
        unsafe { release(header) };
    }
}

impl<T> std::ops::Deref for JoinRef<T> {
    type Target = JoinState<T>;

    fn deref(&self) -> &JoinState<T> {
        &self.prefix().join
    }
}

// SAFETY: a `JoinRef<T>` reaches only the cell's `JoinState<T>`, which is
// `Send + Sync` when `T: Send` (checked below), and the header's atomic
// count and static table. It never touches the closure slot; when it frees
// the cell, the slot is already empty (see the module docs), so no
// destructor of a (maybe `!Send`) closure runs on its thread, and the
// memory goes to that thread's cache, which any thread may free to.
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
    use std::cell::RefCell;

    #[test]
    fn a_small_task_fits_the_allocators_fast_bins() {
        // glibc serves requests up to 120 bytes from its fast bins (when a
        // cell is not cached); the header (count and table) is in the cell.
        fn layout_of<F: FnOnce() -> T, T>(_: &F) -> Layout {
            Layout::new::<TaskCell<F, T>>()
        }
        let closure = {
            let value = 7u64;
            move || value
        };
        assert!(size_of_val(&closure) == 8);
        let layout = layout_of(&closure);
        assert!(layout.size() <= 120, "{}", layout.size());
        assert!(layout.size() <= cache::MAX_CACHED_SIZE && layout.align() == 8);
    }

    #[test]
    fn a_join_handle_is_one_word() {
        assert_eq!(size_of::<super::super::GoTask<u64>>(), 8);
        assert_eq!(size_of::<Option<super::super::GoTask<u64>>>(), 8);
        assert_eq!(size_of::<TaskRef>(), 8);
    }

    #[test]
    fn the_join_state_is_at_the_cells_address() {
        let (body, join) = new_task(|| 5u8, JoinState::new());
        let cell = join.cell.as_ptr().cast_const().cast::<u8>();
        let state = std::ptr::from_ref::<JoinState<u8>>(&join).cast::<u8>();
        assert_eq!(cell, state);
        body.run();
        assert_eq!(join.try_take().map(Result::ok), Some(Some(5)));
    }

    #[test]
    fn the_last_handle_frees_the_cell_and_drops_the_result_once() {
        use std::rc::Rc;
        let result = Rc::new(());
        let (body, join) = new_task(
            {
                let result = result.clone();
                move || result
            },
            JoinState::new(),
        );
        let second = join.clone();
        body.run();
        assert_eq!(Rc::strong_count(&result), 2);
        drop(join);
        assert_eq!(Rc::strong_count(&result), 2);
        drop(second);
        assert_eq!(Rc::strong_count(&result), 1);
    }

    #[test]
    fn a_body_dropped_unrun_cancels_and_drops_the_closure() {
        use std::rc::Rc;
        let captured = Rc::new(());
        let (body, join) = new_task(
            {
                let captured = captured.clone();
                move || drop(captured)
            },
            JoinState::new(),
        );
        drop(body);
        assert_eq!(Rc::strong_count(&captured), 1);
        assert!(matches!(join.try_take(), Some(Err(JoinError::Cancelled))));
    }

    #[test]
    fn a_cell_with_a_large_alignment_is_not_cached_but_works() {
        #[repr(align(64))]
        struct Aligned(u8);
        let (body, join) = new_task(|| Aligned(3), JoinState::new());
        body.run();
        assert!(matches!(join.try_take(), Some(Ok(Aligned(3)))));
    }

    // Cross-thread and thread-exit cases, run under miri by CI (its race
    // and leak checks).

    /// Miri: the body runs on this thread while the join view is waited
    /// for (parking, so `WAITING` and the waiters' lock are used) and let go
    /// on another. Checks the cross-thread orderings of the state word and
    /// the count with miri's race detector.
    #[test]
    fn join_on_another_thread_while_the_body_runs_here() {
        for _ in 0..3 {
            let (body, join) = new_task(|| String::from("result"), JoinState::new());
            let joiner = std::thread::spawn(move || {
                let result = join.join(None).expect("no deadline");
                assert_eq!(result.ok().as_deref(), Some("result"));
                drop(join);
            });
            std::thread::yield_now();
            body.run();
            joiner.join().unwrap();
        }
    }

    /// Miri: a detached handle let go on another thread; the body's
    /// release may be the last one (free on this thread), or not.
    #[test]
    fn detached_join_view_dropped_on_another_thread() {
        for _ in 0..3 {
            let (body, join) = new_task(|| vec![1u8; 3], JoinState::new());
            let other = std::thread::spawn(move || {
                let _ = join.is_finished();
                drop(join);
            });
            body.run();
            other.join().unwrap();
        }
    }

    struct Holder(RefCell<Option<JoinRef<String>>>);
    impl Drop for Holder {
        fn drop(&mut self) {
            drop(self.0.borrow_mut().take());
        }
    }
    thread_local! {
        static HOLD: Holder = const { Holder(RefCell::new(None)) };
    }

    /// Miri (leak check): a cell freed by a TLS destructor that runs after
    /// the cache's (the holder registered first, so destroyed last) goes to
    /// the global allocator.
    #[test]
    fn cell_freed_after_the_cache_is_gone() {
        std::thread::spawn(|| {
            HOLD.with(|_| ()); // registers the holder's destructor first
            let (body, join) = new_task(|| String::from("kept"), JoinState::new());
            body.run();
            HOLD.with(|hold| *hold.0.borrow_mut() = Some(join));
        })
        .join()
        .unwrap();
    }

    /// Miri (leak check): a cell freed by a TLS destructor on a thread
    /// that never touched the cache: the cache is first used (and its
    /// destructor registered) during thread-local destruction.
    #[test]
    fn cell_freed_by_a_tls_destructor_on_a_thread_without_a_cache() {
        let (body, join) = new_task(|| String::from("late"), JoinState::new());
        body.run();
        std::thread::spawn(move || {
            HOLD.with(|hold| *hold.0.borrow_mut() = Some(join));
        })
        .join()
        .unwrap();
    }

    /// Miri: a blocking-pool-shaped cell (no body, cloned view) completed
    /// on one thread, cancelled on another.
    #[test]
    fn detached_cell_cancel_races_completion() {
        let join = new_join(JoinState::<String>::new_detached());
        let job = join.clone();
        let worker = std::thread::spawn(move || {
            job.complete_if_pending(Ok(String::from("done")));
        });
        join.complete_if_pending(Err(JoinError::Cancelled));
        worker.join().unwrap();
        assert!(join.try_take().is_some());
    }
}
