//! Stackful coroutines on guarded, pooled stacks, usable with no dispatcher.
//!
//! A [`Coroutine`] runs a closure on its own stack. [`Coroutine::resume`]
//! switches to it; inside, [`Yielder::suspend`] switches back, handing a value
//! out and receiving the next resume's input. This is the layer the
//! dispatcher builds tasks on; use it directly for generators or your own
//! schedulers.
//!
//! ```
//! use nimgo::coroutine::{Coroutine, CoroutineResult, CoroutineState};
//!
//! let mut counter = Coroutine::new(|yielder, start: u32| {
//!     let mut n = start;
//!     for _ in 0..3 {
//!         n += yielder.suspend(n);
//!     }
//!     format!("done at {n}")
//! });
//! assert_eq!(counter.state(), CoroutineState::Created);
//! assert!(matches!(counter.resume(10), CoroutineResult::Yield(10)));
//! assert_eq!(counter.state(), CoroutineState::Suspended);
//! assert!(matches!(counter.resume(1), CoroutineResult::Yield(11)));
//! assert!(matches!(counter.resume(1), CoroutineResult::Yield(12)));
//! match counter.resume(1) {
//!     CoroutineResult::Return(text) => assert_eq!(text, "done at 13"),
//!     CoroutineResult::Yield(_) => unreachable!(),
//! }
//! assert_eq!(counter.state(), CoroutineState::Finished);
//! ```
//!
//! # Stacks
//!
//! Every coroutine runs on a stack slot carved from a large slab mapping,
//! with a guard page below it: see [`stack_stats`] and
//! [`DEFAULT_STACK_SIZE`] for the layout and the choice of size. A coroutine
//! takes its stack when it is created and gives it back to the calling
//! thread's pool when it is dropped, so creating and finishing coroutines in a
//! loop reuses one warm stack and makes no system call.
//!
//! A stack overflow hits the guard page; nimgo's signal handler then prints
//! which coroutine overflowed and its stack size, and aborts the process (as
//! Rust does for thread stacks). It is never silent memory corruption.
//!
//! # Panics and dropping
//!
//! A panic inside the closure ends the coroutine and is re-raised by the
//! [`resume`](Coroutine::resume) that ran it, or returned as an `Err` by
//! [`try_resume`](Coroutine::try_resume). Dropping a suspended coroutine
//! unwinds its stack, so the destructors of everything on it run.

pub(crate) mod stack;

use std::any::Any;
use std::cell::Cell;
use std::io;
use std::panic::{self, AssertUnwindSafe};

pub use corosensei::{CoroutineResult, Yielder};
pub use stack::{DEFAULT_STACK_SIZE, GuardMode, StackStats, guard_mode, stack_stats};

use stack::GuardedStack;

thread_local! {
    /// The stack size new coroutines on this thread get, 0 = the default.
    static THREAD_STACK_SIZE: Cell<usize> = const { Cell::new(0) };
    /// Source of per-thread coroutine numbers, shown in overflow reports.
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

/// Sets the stack size (usable bytes, rounded up to whole pages) of the
/// coroutines this thread creates from now on, including the tasks its
/// dispatcher starts. A runtime sets it on each worker from
/// `Builder::stack_size`.
///
/// ```
/// nimgo::coroutine::set_default_stack_size(512 * 1024);
/// assert_eq!(nimgo::coroutine::default_stack_size(), 512 * 1024);
/// ```
pub fn set_default_stack_size(bytes: usize) {
    THREAD_STACK_SIZE.set(bytes);
}

/// The stack size new coroutines on this thread get.
///
/// ```
/// assert!(nimgo::coroutine::default_stack_size() >= 16 * 1024);
/// ```
pub fn default_stack_size() -> usize {
    match THREAD_STACK_SIZE.get() {
        0 => DEFAULT_STACK_SIZE,
        bytes => bytes,
    }
}

/// Where a coroutine is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoroutineState {
    /// Created, never resumed.
    Created,
    /// Suspended inside [`Yielder::suspend`].
    Suspended,
    /// Returned or panicked; it cannot be resumed again.
    Finished,
}

/// A closure running on its own guarded stack. See the [module docs](self).
pub struct Coroutine<Input, Yield, Return> {
    inner: corosensei::Coroutine<Input, Yield, Return, GuardedStack>,
    id: u64,
    stack_size: usize,
}

impl<Input, Yield, Return> Coroutine<Input, Yield, Return>
where
    Input: 'static,
    Yield: 'static,
    Return: 'static,
{
    /// Creates a coroutine with this thread's default stack size.
    ///
    /// # Panics
    ///
    /// Panics with the message of [`Coroutine::try_new`]'s error when no
    /// stack can be had (memory or mapping limits).
    pub fn new<F>(f: F) -> Self
    where
        F: FnOnce(&Yielder<Input, Yield>, Input) -> Return + 'static,
    {
        match Self::try_new(f) {
            Ok(coroutine) => coroutine,
            Err(error) => panic!("nimgo: cannot create a coroutine: {error}"),
        }
    }

    /// Creates a coroutine with this thread's default stack size, or returns
    /// the error that names the exhausted limit and how to raise it.
    ///
    /// ```
    /// use nimgo::coroutine::{Coroutine, CoroutineResult};
    ///
    /// let mut coroutine: Coroutine<i32, (), i32> = Coroutine::try_new(|_, x: i32| x * 2)?;
    /// assert!(matches!(coroutine.resume(21), CoroutineResult::Return(42)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_new<F>(f: F) -> io::Result<Self>
    where
        F: FnOnce(&Yielder<Input, Yield>, Input) -> Return + 'static,
    {
        Self::with_stack_size(default_stack_size(), f)
    }

    /// Creates a coroutine with a stack of at least `bytes` usable bytes.
    ///
    /// ```
    /// use nimgo::coroutine::{Coroutine, CoroutineResult};
    ///
    /// let mut coroutine: Coroutine<(), (), &str> =
    ///     Coroutine::with_stack_size(64 * 1024, |_, ()| "small")?;
    /// assert!(matches!(coroutine.resume(()), CoroutineResult::Return("small")));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_stack_size<F>(bytes: usize, f: F) -> io::Result<Self>
    where
        F: FnOnce(&Yielder<Input, Yield>, Input) -> Return + 'static,
    {
        let mut stack = GuardedStack::new(bytes)?;
        let stack_size = stack.usable_size();
        let id = next_coroutine_id();
        stack.set_label(id);
        Ok(Self {
            inner: corosensei::Coroutine::with_stack(stack, f),
            id,
            stack_size,
        })
    }
}

impl<Input, Yield, Return> Coroutine<Input, Yield, Return> {
    /// Switches to the coroutine until it suspends or returns.
    ///
    /// # Panics
    ///
    /// Re-raises a panic of the coroutine's closure (the coroutine is then
    /// finished), and panics if the coroutine has already finished.
    #[inline]
    pub fn resume(&mut self, input: Input) -> CoroutineResult<Yield, Return> {
        self.inner.resume(input)
    }

    /// Like [`resume`](Self::resume), but hands a panic of the coroutine back
    /// as `Err(payload)` instead of re-raising it.
    ///
    /// ```
    /// use nimgo::coroutine::Coroutine;
    ///
    /// let mut coroutine: Coroutine<(), (), ()> = Coroutine::new(|_, ()| panic!("boom"));
    /// # let hook = std::panic::take_hook();
    /// # std::panic::set_hook(Box::new(|_| {}));
    /// let payload = coroutine.try_resume(()).unwrap_err();
    /// # std::panic::set_hook(hook);
    /// assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
    /// assert!(coroutine.is_finished());
    /// ```
    pub fn try_resume(
        &mut self,
        input: Input,
    ) -> Result<CoroutineResult<Yield, Return>, Box<dyn Any + Send>> {
        panic::catch_unwind(AssertUnwindSafe(|| self.resume(input)))
    }

    /// Where the coroutine is in its life.
    pub fn state(&self) -> CoroutineState {
        if self.inner.done() {
            CoroutineState::Finished
        } else if self.inner.started() {
            CoroutineState::Suspended
        } else {
            CoroutineState::Created
        }
    }

    /// Whether the coroutine returned or panicked.
    pub fn is_finished(&self) -> bool {
        self.inner.done()
    }

    /// This coroutine's number, unique on the thread that created it; stack
    /// overflow reports name it.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Usable bytes of this coroutine's stack.
    pub fn stack_size(&self) -> usize {
        self.stack_size
    }
}

impl<Input, Yield, Return> std::fmt::Debug for Coroutine<Input, Yield, Return> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coroutine")
            .field("id", &self.id)
            .field("state", &self.state())
            .finish()
    }
}

/// A number for a new coroutine, unique on this thread.
pub(crate) fn next_coroutine_id() -> u64 {
    let id = NEXT_ID.get();
    NEXT_ID.set(id + 1);
    id
}
