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
pub(crate) use loom::cell::{MutPtr, UnsafeCell};

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

    /// A pointer for access that outlives one closure (a lock guard's);
    /// loom tracks that access until the pointer is dropped.
    pub(crate) fn get_mut(&self) -> MutPtr<T> {
        MutPtr(self.0.get())
    }
}

/// loom's `MutPtr`: a raw pointer whose access loom tracks while it lives.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct MutPtr<T>(*mut T);

#[cfg(not(loom))]
impl<T> MutPtr<T> {
    /// # Safety
    ///
    /// No one writes the cell's value while the returned reference lives.
    pub(crate) unsafe fn as_ref(&self) -> &T {
        // SAFETY: the caller's contract; the pointer comes from a live
        // `UnsafeCell` the caller borrows.
        unsafe { &*self.0 }
    }

    /// # Safety
    ///
    /// The caller has exclusive access to the cell's value for as long as
    /// the returned reference lives (as with `&mut *UnsafeCell::get()`).
    #[allow(clippy::mut_from_ref)] // the exclusivity is the `unsafe` contract
    pub(crate) unsafe fn as_mut(&self) -> &mut T {
        // SAFETY: exclusivity is the caller's contract, and the pointer
        // comes from a live `UnsafeCell` the caller borrows.
        unsafe { &mut *self.0 }
    }
}

/// The same two accessors on loom's `MutPtr`, whose only accessor is
/// `deref` (a `&mut`, which loom's own checks are fine with).
#[cfg(loom)]
pub(crate) trait MutPtrAccess<T> {
    /// As the std build's `MutPtr::as_ref`.
    unsafe fn as_ref(&self) -> &T;
    /// As the std build's `MutPtr::as_mut`.
    #[allow(clippy::mut_from_ref)]
    unsafe fn as_mut(&self) -> &mut T;
}

#[cfg(loom)]
impl<T> MutPtrAccess<T> for MutPtr<T> {
    unsafe fn as_ref(&self) -> &T {
        // SAFETY: passed on to the caller.
        unsafe { &*self.deref() }
    }

    unsafe fn as_mut(&self) -> &mut T {
        // SAFETY: passed on to the caller.
        unsafe { self.deref() }
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
