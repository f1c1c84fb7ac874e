//! The one place cross-thread synchronisation types come from.
//!
//! Every atomic, `Mutex`, `Condvar`, `Arc`, `UnsafeCell` and `thread` used by
//! code that two threads can reach is imported from here. A normal build gets
//! `std`'s types; a build with `RUSTFLAGS="--cfg loom"` gets loom's, so the
//! models in `loom-tests/` explore every interleaving of the *real* protocol
//! code (inbox, sleep/wake, channel waiters, join hand-off) rather than of a
//! copy. Code that is thread-confined (the dispatcher's core, the stack pool)
//! uses plain `Cell`/`RefCell` and needs nothing from here.
//!
//! `UnsafeCell` follows loom's API (`with`, `with_mut`), so code written
//! against it compiles in both builds.

#![allow(unused_imports, dead_code)]

#[cfg(loom)]
pub(crate) use loom::{
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence},
    },
    thread,
};

#[cfg(not(loom))]
pub(crate) use std::{
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence},
    },
    thread,
};

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `std::cell::UnsafeCell` with loom's closure-based API.
#[cfg(not(loom))]
#[derive(Debug, Default)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Locks a mutex, ignoring poisoning.
///
/// nimgo never holds one of its own locks while running user code, so a
/// poisoned lock can only come from a bug in nimgo itself that already
/// panicked; the protected data is still consistent at every unlock point.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Spin-loop hint that loom understands as a yield point.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}
