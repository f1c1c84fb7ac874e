//! The channel's lock: a spin lock whose word also counts releases, so a
//! caller about to park can first watch the word for "something changed".
//!
//! # The word
//!
//! ```text
//!   ┌──────────────────────────────────────────────┬────────┐
//!   │ version: number of releases so far (63 bits) │ LOCKED │
//!   └──────────────────────────────────────────────┴────────┘
//!    acquire: CAS  v·0 → v·1  (Acquire)       one read-modify-write
//!    release: store (v+1)·0   (Release)       a plain store
//! ```
//!
//! Only the holder changes the word while `LOCKED` is set, so the release
//! is a plain store: one atomic read-modify-write per critical section
//! instead of a futex mutex's two. No user code runs under a channel's lock
//! (values are moved, never dropped or cloned, under it), so sections are a
//! few dozen instructions and a waiter spins, with a yield to the OS
//! scheduler after a while in case the holder's thread was preempted. It
//! never sleeps: a holder preempted for a whole time slice (more runnable
//! threads than cores) costs its contenders `sched_yield` calls until it
//! runs again, where a futex mutex would put them to sleep. With sections
//! this short that is rare, and the common, uncontended hand-off saves a
//! read-modify-write on every operation.
//!
//! The version lets [`changed_since`](ChannelLock::changed_since) answer "was the lock taken
//! since I released it?" with a load of the same cache line a counterpart
//! writes when it sends: a receiver that spins on it before parking sees a
//! send about 100 ns after it happened, with no wake-up message at all.
//! Missing a change only costs a park, which is the correctness path; a
//! change that is not a state change (someone read `len`) only costs a
//! retry. The count wraps after 2⁶³ releases, harmlessly for the same
//! reason.
//!
//! Under loom a spin lock cannot be modelled (a spinning thread never lets
//! the model finish), so a loom build first takes a loom `Mutex` (the
//! *gate*) and then runs the same word protocol, whose compare-and-swap then
//! always succeeds at once: the models check everything built on the word
//! (the version a blocking call compares before it parks) with the real
//! code, and only the spinning itself is left out.

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};

#[cfg(loom)]
use crate::loom::{MutPtrAccess, Mutex, MutexGuard, lock};

use crate::loom::{AtomicUsize, MutPtr, Ordering, UnsafeCell, spin_hint};

const LOCKED: usize = 1;

/// Spins before each yield to the OS while the lock is held elsewhere.
const SPINS_BEFORE_YIELD: u32 = 64;

/// A spin lock with a release counter; see the [module docs](self).
///
/// Aligned to a cache line: the word and the start of the data share one
/// line, which holds nothing else (an `Arc`'s counts, the neighbouring
/// allocation), so a hand-off moves that one line between cores.
#[repr(C, align(64))]
pub(crate) struct ChannelLock<T> {
    word: AtomicUsize,
    data: UnsafeCell<T>,
    /// Loom builds only: serialises holders (see the module docs).
    #[cfg(loom)]
    gate: Mutex<()>,
}

/// What a holder keeps of the loom gate (nothing in a normal build).
#[cfg(loom)]
type Gate<'a> = MutexGuard<'a, ()>;
#[cfg(not(loom))]
type Gate<'a> = std::marker::PhantomData<&'a ()>;

// SAFETY: the lock hands out access to `data` to one holder at a time (the
// `LOCKED` bit, acquired with Acquire and released with Release ordering),
// like `std::sync::Mutex`, which is `Sync` for `T: Send`: the holder may be
// on any thread, so `T` must be `Send`; it is never shared by reference
// between threads at the same time.
unsafe impl<T: Send> Sync for ChannelLock<T> {}
// SAFETY: owning the lock owns the `T`; moving it moves the `T`.
unsafe impl<T: Send> Send for ChannelLock<T> {}

/// Access to the locked data; releases the lock when dropped.
pub(crate) struct ChannelGuard<'a, T> {
    lock: &'a ChannelLock<T>,
    /// The word as this holder set it (`LOCKED` set).
    held: usize,
    /// The holder's access to the data (tracked by loom), ended before the
    /// release.
    access: ManuallyDrop<MutPtr<T>>,
    /// Released after the word (fields drop after `Drop::drop` runs).
    _gate: Gate<'a>,
}

impl<T> ChannelLock<T> {
    pub(crate) fn new(data: T) -> Self {
        Self {
            word: AtomicUsize::new(0),
            data: UnsafeCell::new(data),
            #[cfg(loom)]
            gate: Mutex::new(()),
        }
    }

    /// Takes the lock, spinning (then yielding) while another holds it.
    #[inline]
    pub(crate) fn lock(&self) -> ChannelGuard<'_, T> {
        #[cfg(loom)]
        let gate = lock(&self.gate);
        #[cfg(not(loom))]
        let gate = std::marker::PhantomData;
        match self.try_acquire() {
            Some(held) => self.guard(held, gate),
            None => self.lock_contended(gate),
        }
    }

    #[cold]
    fn lock_contended<'a>(&'a self, gate: Gate<'a>) -> ChannelGuard<'a, T> {
        let mut spins = 0;
        loop {
            if let Some(held) = self.try_acquire() {
                return self.guard(held, gate);
            }
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                spin_hint();
            } else {
                // The holder's thread may have been preempted: let it run.
                crate::loom::thread::yield_now();
            }
        }
    }

    /// One attempt to set `LOCKED`; returns the word as set.
    #[inline]
    fn try_acquire(&self) -> Option<usize> {
        let current = self.word.load(Ordering::Relaxed);
        if current & LOCKED != 0 {
            return None;
        }
        self.word
            .compare_exchange(
                current,
                current | LOCKED,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .ok()
            .map(|previous| previous | LOCKED)
    }

    /// The guard of the holder that just set the word to `held`.
    #[inline]
    fn guard<'a>(&'a self, held: usize, gate: Gate<'a>) -> ChannelGuard<'a, T> {
        ChannelGuard {
            lock: self,
            held,
            access: ManuallyDrop::new(self.data.get_mut()),
            _gate: gate,
        }
    }

    /// The version the lock had when `guard` releases it: pass it to
    /// [`changed_since`](Self::changed_since).
    pub(crate) fn version_after(guard: &ChannelGuard<'_, T>) -> usize {
        guard.held.wrapping_add(LOCKED)
    }

    /// The version the lock had when `guard` took it: equal to a
    /// [`version_after`](Self::version_after) value exactly when no one
    /// held the lock in between.
    pub(crate) fn version_before(guard: &ChannelGuard<'_, T>) -> usize {
        guard.held & !LOCKED
    }

    /// Whether the lock was taken, and released again, since the release
    /// that left `version` (a watcher that stops on a held lock would only
    /// wait for it in [`lock`](Self::lock)).
    #[inline]
    pub(crate) fn changed_since(&self, version: usize) -> bool {
        let current = self.word.load(Ordering::Relaxed);
        current != version && current & LOCKED == 0
    }
}

impl<T> Deref for ChannelGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: this guard holds the lock (its `LOCKED` bit), so no other
        // access to the data exists until it is dropped; the Acquire of the
        // lock ordered this access after the previous holder's release. The
        // reference borrows the guard, so it ends before the release. It is
        // a shared reference (a `&mut` here would invalidate other shared
        // borrows of the same guard).
        unsafe { self.access.as_ref() }
    }
}

impl<T> DerefMut for ChannelGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference
        // through the guard.
        unsafe { self.access.as_mut() }
    }
}

impl<T> Drop for ChannelGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: dropped once, here; the guard is going away and no
        // reference derived from `access` outlives the `&mut self` borrow.
        unsafe { ManuallyDrop::drop(&mut self.access) };
        // Only the holder writes the word while LOCKED is set: a plain store
        // releases it and counts the release.
        self.lock
            .word
            .store(self.held.wrapping_add(LOCKED), Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::ChannelLock;
    use std::sync::Arc;

    #[test]
    fn holders_exclude_each_other_and_every_release_counts() {
        let lock = Arc::new(ChannelLock::new(0u64));
        let rounds = if cfg!(miri) { 50 } else { 20_000 };
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..rounds {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let guard = lock.lock();
        assert_eq!(*guard, 2 * rounds);
        // Every earlier section released the lock once: the version counts
        // them all.
        assert_eq!(ChannelLock::version_before(&guard), 2 * 2 * rounds as usize);
    }

    #[test]
    fn two_shared_borrows_of_one_guard_coexist() {
        // Under miri: a `&mut` made by `deref` would invalidate `first`.
        let lock = ChannelLock::new((1u32, 2u32));
        let state = lock.lock();
        let first = &state.0;
        let second = &state.1;
        assert_eq!(*first + *second, 3);
    }

    #[test]
    fn a_watcher_sees_a_change_only_once_the_lock_is_released() {
        let lock = ChannelLock::new(());
        let version = ChannelLock::version_after(&lock.lock());
        assert!(!lock.changed_since(version));
        let guard = lock.lock();
        assert_eq!(ChannelLock::version_before(&guard), version);
        // Held: not reported yet (the watcher would only wait for it).
        assert!(!lock.changed_since(version));
        drop(guard);
        assert!(lock.changed_since(version));
    }
}
