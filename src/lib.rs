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

mod blocking;
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
    pub use crate::dispatcher::{LoomNotifier, LoomRemote, LoomShared};
    pub use crate::runtime_idle::{Idle, LoomWorkerModel};
}
