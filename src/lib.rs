//! nimgo: Go-style concurrency for Rust without `async`/`await`.
//!
//! Stackful coroutines, one event loop (a *dispatcher*) per thread, and
//! blocking-looking calls that suspend the calling coroutine instead of its
//! thread. It is the Rust heir of NimGo.
//!
//! ```
//! use std::time::Duration;
//!
//! let total = nimgo::with_event_loop(|| {
//!     let tasks: Vec<_> = (1..=3u64)
//!         .map(|i| {
//!             nimgo::go(move || {
//!                 nimgo::sleep(Duration::from_millis(10 * i));
//!                 i
//!             })
//!         })
//!         .collect();
//!     nimgo::wait_all(tasks).into_iter().sum::<u64>()
//! });
//! assert_eq!(total, 6);
//! ```
//!
//! - [`go`] starts a task on the calling thread's dispatcher and returns its
//!   [`GoTask`]; [`GoTask::wait`] suspends only the waiting coroutine.
//! - [`sleep`], [`yield_now`], [`with_timeout`], [`wait_all`], [`wait_any`]
//!   work the same inside a coroutine and outside (where they run the loop).
//! - [`Runtime`] runs N worker threads, each with its own dispatcher;
//!   [`Runtime::spawn`] and [`spawn`] queue tasks that idle workers steal
//!   before they start (a started coroutine never changes thread).
//! - [`GoChannel`] passes values between coroutines on any worker and plain
//!   threads, parking only the waiting coroutine; [`Select`] waits on
//!   several channels at once.
//! - [`GoFile`], [`pipe`], [`stdin`]/[`stdout`]/[`stderr`], [`fs`] and
//!   [`GoBufferStream`] implement `std::io` traits; regular files go through
//!   a small blocking pool ([`spawn_blocking`]), pipes and terminals through
//!   the dispatcher.
//! - [`coroutine`] is the low-level layer: coroutines on guarded stacks with
//!   no dispatcher; [`dispatcher`] parks on any `mio` source.
//!
//! # Soundness rules
//!
//! A started coroutine never moves to another thread; a wake-up is never
//! lost and never resumes a coroutine twice; nothing writes into a parked
//! coroutine's stack from elsewhere; a panic in a coroutine reaches whoever
//! joins it; a stack overflow ends the process with a message that says so.
#![deny(unsafe_op_in_unsafe_fn)]
// Under `--cfg loom` only the protocols the models drive are exercised; the
// runtime's threads and the I/O paths are compiled but unused.
#![cfg_attr(loom, allow(dead_code))]

mod blocking;
pub mod channel;
pub mod coroutine;
pub mod dispatcher;
pub mod fs;
pub mod io;
pub(crate) mod loom;
#[cfg(not(loom))]
pub mod runtime;
/// Under loom only the runtime's sleep accounting is built: it is what the
/// model checks (the worker threads need mio and real threads).
#[cfg(loom)]
#[path = "runtime/idle.rs"]
mod runtime_idle;
pub(crate) mod sys;
mod task;

pub use blocking::spawn_blocking;
pub use channel::{GoChannel, Select};
pub use dispatcher::run_event_loop;
pub use io::{GoBufferStream, GoFile, pipe, stderr, stdin, stdout};
#[cfg(not(loom))]
pub use runtime::{Builder, Handle, Runtime, spawn};
pub use task::{
    Elapsed, GoTask, JoinError, go, go_and_wait, sleep, try_go, wait_all, wait_any,
    with_event_loop, with_timeout, yield_now,
};

/// Internals the loom models drive; not part of the API.
#[cfg(loom)]
#[doc(hidden)]
pub mod __loom {
    use crate::dispatcher::{Notifier, Remote, Shared};
    use crate::loom::Arc;
    pub use crate::runtime_idle::{Idle, LoomWorkerModel};
    use crate::task::JoinState;

    /// A dispatcher's cross-thread half (`Shared`): its inbox and sleep flag.
    #[derive(Clone)]
    pub struct LoomShared(Arc<Shared>);

    impl Default for LoomShared {
        fn default() -> Self {
            Self(Arc::new(Shared::new(Notifier::new())))
        }
    }

    /// A message for the inbox (only wakes: the models need no other).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum LoomRemote {
        /// Wake context `index` at `epoch`.
        Wake {
            /// Slot index.
            index: u32,
            /// Park epoch.
            epoch: u64,
        },
    }

    /// The notifier the dispatcher "polls" on under loom.
    pub struct LoomNotifier<'a>(&'a Notifier);

    impl LoomNotifier<'_> {
        /// Blocks until notified; returns how many notifications it consumed.
        pub fn wait(&self) -> usize {
            self.0.wait()
        }

        /// Notifications not consumed yet.
        pub fn pending(&self) -> usize {
            self.0.pending()
        }
    }

    impl LoomShared {
        /// A fresh inbox.
        pub fn new() -> Self {
            Self::default()
        }

        /// Queues `message` and notifies the dispatcher if it sleeps.
        pub fn push(&self, message: LoomRemote) {
            let LoomRemote::Wake { index, epoch } = message;
            self.0.push(Remote::Wake { index, epoch });
        }

        /// The dispatcher announces a sleep; `false`: a message is waiting.
        pub fn prepare_sleep(&self) -> bool {
            self.0.prepare_sleep()
        }

        /// The dispatcher is running again.
        pub fn finish_sleep(&self) {
            self.0.finish_sleep();
        }

        /// Takes every queued message; returns them.
        pub fn drain(&self) -> Vec<LoomRemote> {
            let mut out = Vec::new();
            self.0.drain(&mut out);
            out.into_iter()
                .filter_map(|message| match message {
                    Remote::Wake { index, epoch } => Some(LoomRemote::Wake { index, epoch }),
                    _ => None,
                })
                .collect()
        }

        /// The notifier.
        pub fn notifier(&self) -> LoomNotifier<'_> {
            LoomNotifier(self.0.notifier())
        }
    }

    /// A runtime job and its task cell (`Job`, `src/task/cell.rs`), for the
    /// cell model: its body runs or is dropped on whichever thread holds it.
    pub struct LoomJob(crate::task::Job);

    impl LoomJob {
        /// A job running `function`, and its task handle.
        pub fn new<F, T>(function: F) -> (Self, crate::GoTask<T>)
        where
            F: FnOnce() -> T + Send + 'static,
            T: Send + 'static,
        {
            let (job, task) = crate::task::Job::new(function);
            (Self(job), task)
        }

        /// Runs the job's closure here, as a dispatcher would, and completes
        /// its task. (Dropping the job instead cancels the task.)
        pub fn run(self) {
            self.0.run_here();
        }
    }

    /// A task cell's join view (`JoinRef`, `src/task/cell.rs`), which a
    /// `GoTask` is, but cloneable: for the model of the cell's count.
    pub struct LoomJoinRef<T>(crate::task::JoinRef<T>);

    impl<T> LoomJoinRef<T> {
        /// The join view of `task`.
        pub fn new(task: crate::GoTask<T>) -> Self {
            Self(task.into_join())
        }

        /// Whether the task finished.
        pub fn is_finished(&self) -> bool {
            self.0.is_finished()
        }
    }

    impl<T> Clone for LoomJoinRef<T> {
        fn clone(&self) -> Self {
            Self(self.0.clone())
        }
    }

    /// A task's join hand-off (`JoinState`), for the join model.
    pub struct LoomJoin<T>(Arc<JoinState<T>>);

    impl<T> Clone for LoomJoin<T> {
        fn clone(&self) -> Self {
            Self(self.0.clone())
        }
    }

    impl<T> Default for LoomJoin<T> {
        fn default() -> Self {
            Self(Arc::new(JoinState::new()))
        }
    }

    impl<T> LoomJoin<T> {
        /// A join state with no result and no joiner.
        pub fn new() -> Self {
            Self::default()
        }

        /// The task side: stores the result and wakes the joiner.
        pub fn complete(&self, value: T) {
            self.0.complete(Ok(value));
        }

        /// The joiner side: parks until the result is there.
        pub fn join(&self) -> Option<T> {
            self.0.join(None).and_then(Result::ok)
        }

        /// Whether the result is stored.
        pub fn is_finished(&self) -> bool {
            self.0.is_finished()
        }

        /// A `wait_any` caller: parks until the result is stored, without
        /// taking it.
        pub fn wait_finished(&self) {
            while !self.0.is_finished() {
                let waker = crate::dispatcher::current_waker();
                if self.0.add_waiter(&waker) {
                    crate::dispatcher::park(None);
                    self.0.remove_waiter(&waker);
                }
            }
        }

        /// A dispatcher taking the task (slot 0, task 1 of `shared`);
        /// `false`: it was cancelled first.
        pub fn place(&self, shared: &LoomShared) -> bool {
            self.0.place(shared.0.clone(), 0, 1)
        }

        /// A cancel: marks the task cancelled; returns whether it found the
        /// task placed (and so would send the cancel to its dispatcher).
        pub fn request_cancel(&self) -> bool {
            self.0.request_cancel().is_some()
        }
    }
}

/// The README's examples, compiled and run as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
