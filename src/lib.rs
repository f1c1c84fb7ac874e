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

pub mod channel;
pub mod coroutine;
pub mod dispatcher;
pub(crate) mod loom;
pub(crate) mod sys;
mod task;

pub use channel::{GoChannel, Select};
pub use dispatcher::run_event_loop;
pub use task::{
    Elapsed, GoTask, JoinError, go, go_and_wait, sleep, try_go, wait_all, wait_any,
    with_event_loop, with_timeout, yield_now,
};

/// Internals the loom models drive; not part of the API.
#[cfg(loom)]
#[doc(hidden)]
pub mod __loom {
    pub use crate::dispatcher::{LoomNotifier, LoomRemote, LoomShared};
}
