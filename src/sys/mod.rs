//! All operating-system calls live under this module.
//!
//! Every call into `libc` goes through the [`syscall!`] macro, which turns the
//! C convention (`-1` and `errno`, or `MAP_FAILED` for `mmap`) into an
//! [`std::io::Result`]. The macro wraps the call in an `unsafe` block, so each
//! call site carries its own `// SAFETY:` comment stating why the arguments
//! satisfy the function's contract.
//!
//! - [`memory`]: page size, reserving and releasing address space, guard pages.
//! - [`signal`]: the stack-overflow report for coroutine stacks (the `SIGSEGV`
//!   / `SIGBUS` handler, the alternate signal stack, the slab registry it
//!   consults).
//! - [`fd`]: descriptor flags, pipes, the epoll probe, cache eviction.
//! - [`thread`]: per-thread scheduling priority.
//! - [`timer`]: the `timerfd` that gives the dispatcher sub-millisecond
//!   timer precision.

pub(crate) mod fd;
pub(crate) mod memory;
pub(crate) mod signal;
pub(crate) mod thread;
pub(crate) mod timer;

/// Calls `libc::$fn($args)` and maps the C error convention to `io::Result`.
///
/// `mmap` is special-cased: it fails with `MAP_FAILED`, not `-1`. All other
/// calls fail with `-1` and set `errno`. Reading `errno` through
/// [`std::io::Error::last_os_error`] allocates nothing, so the macro is usable
/// from a signal handler.
///
/// The caller must uphold the called function's safety contract and say how in
/// a `// SAFETY:` comment at the call site.
macro_rules! syscall {
    (mmap($($arg:expr),* $(,)?)) => {{
        // SAFETY: the call site states why the arguments satisfy mmap(2).
        let res = unsafe { libc::mmap($($arg),*) };
        if res == libc::MAP_FAILED {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
    ($fn:ident($($arg:expr),* $(,)?)) => {{
        // SAFETY: the call site states why the arguments satisfy the
        // function's contract.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;
