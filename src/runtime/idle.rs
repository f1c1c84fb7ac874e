//! Sleep and wake accounting of a runtime's workers: who is asleep, and
//! which one a new job wakes.
//!
//! A worker's inbox has its own sleep protocol ([`shared`](crate::dispatcher)
//! module docs). Jobs, though, go into queues shared by every worker (the
//! injector, and each worker's deque, which the others steal from), so a push
//! there must find *some* sleeping worker to wake. The protocol, all
//! `SeqCst`:
//!
//! ```text
//!   worker going to sleep                  job pusher
//!   ─────────────────────                  ──────────
//!   sleepers += 1                          push the job into a queue
//!   asleep[w] := true                      fence
//!   fence                                  if sleepers > 0
//!   if a queue has a job                       for each w: if swap(asleep[w], false)
//!       finish_sleep(w), do not sleep              sleepers -= 1; notify w; stop
//!   else sleep in epoll (inbox protocol)
//!   finish_sleep(w): if swap(asleep[w], false) { sleepers -= 1 }
//! ```
//!
//! The two fences order each side's write before its read in one total
//! order: either the worker's queue check sees the job, or the pusher sees
//! `sleepers > 0` and `asleep[w]` (or a later value: someone else already
//! woke `w`, or `w` woke up by itself; either way `w` is running and will
//! look at the queues). No wake-up is lost. The `swap` means a sleep is
//! notified at most once, and a worker that is running (`asleep` false) is
//! never notified. The notification itself goes through the worker
//! dispatcher's [`Shared::notify`](crate::dispatcher), which sets its
//! `pending` flag first, so it also works when the worker has announced
//! itself here but has not reached `epoll_wait` yet.
//!
//! States of `asleep[w]`: `false` (running; only worker `w` sets it `true`)
//! and `true` (about to sleep or asleep; worker `w` or the one pusher that
//! wins the `swap` set it back to `false`). `sleepers` is raised before the
//! flag and lowered by whoever wins the swap, after it, so it is never
//! below the number of raised flags; a pusher reading a stale non-zero count
//! just finds no flag to swap.
//!
//! The queues themselves are not loom-aware (crossbeam-deque), so this
//! struct takes "is there a job" as a closure: `loom-tests/tests/runtime.rs`
//! runs this very code with a loom atomic standing in for the queues.

use crate::loom::{AtomicBool, AtomicUsize, Ordering, fence};

/// Which workers are asleep; the protocol is in this file's module docs.
#[derive(Debug)]
pub struct Idle {
    sleepers: AtomicUsize,
    asleep: Box<[AtomicBool]>,
}

impl Idle {
    /// Accounting for `workers` workers, all running.
    pub fn new(workers: usize) -> Self {
        Self {
            sleepers: AtomicUsize::new(0),
            asleep: (0..workers).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// Worker `worker` announces it is about to sleep, then re-checks for
    /// work with `has_work`. Returns `true` if it may sleep; on `false`
    /// (work arrived) the announcement has been withdrawn already. After a
    /// sleep, the worker must call [`finish_sleep`](Self::finish_sleep).
    pub fn prepare_sleep(&self, worker: usize, has_work: impl FnOnce() -> bool) -> bool {
        // Count first, flag second: `sleepers` never falls below the number
        // of raised flags, so a pusher reading 0 can skip the scan. (The
        // other order let a pusher claim a flag whose count was not added
        // yet, drop the count to 0 while another worker slept, and make the
        // next pusher skip it: a lost wake-up the loom model found.)
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        self.asleep[worker].store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if has_work() {
            self.finish_sleep(worker);
            false
        } else {
            true
        }
    }

    /// Worker `worker` is running again.
    pub fn finish_sleep(&self, worker: usize) {
        if self.asleep[worker].swap(false, Ordering::SeqCst) {
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Call after making a job visible in a queue. Returns the worker the
    /// caller must notify, if one was asleep; each sleep is claimed by one
    /// caller only.
    pub fn wake_one(&self) -> Option<usize> {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) == 0 {
            return None;
        }
        self.asleep.iter().enumerate().find_map(|(worker, asleep)| {
            if asleep.load(Ordering::SeqCst) && asleep.swap(false, Ordering::SeqCst) {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                Some(worker)
            } else {
                None
            }
        })
    }
}

/// The idle path of runtime workers with the queues abstracted, for the
/// loom model: this crate's [`Idle`] plus each worker dispatcher's real
/// inbox and sleep flag ([`Shared`](crate::dispatcher)), wired as
/// `runtime/worker.rs` and the dispatcher's `poll_io` wire them.
#[cfg(loom)]
pub struct LoomWorkerModel {
    idle: Idle,
    shared: Vec<crate::dispatcher::Shared>,
}

#[cfg(loom)]
impl LoomWorkerModel {
    /// `workers` workers, all running.
    pub fn new(workers: usize) -> Self {
        Self {
            idle: Idle::new(workers),
            shared: (0..workers)
                .map(|_| crate::dispatcher::Shared::new(crate::dispatcher::Notifier::new()))
                .collect(),
        }
    }

    /// Worker `worker` found nothing to do: announce, re-check with
    /// `has_work`, and block on its dispatcher's notifier unless told not
    /// to (as `poll_io` does around `epoll_wait`), then drain the inbox.
    /// Returns whether it went through a sleep.
    pub fn idle(&self, worker: usize, has_work: impl FnOnce() -> bool) -> bool {
        if !self.idle.prepare_sleep(worker, has_work) {
            return false;
        }
        let shared = &self.shared[worker];
        if shared.prepare_sleep() {
            shared.notifier().wait();
        }
        shared.finish_sleep();
        let mut messages = Vec::new();
        shared.drain(&mut messages);
        self.idle.finish_sleep(worker);
        true
    }

    /// A job was made visible: wake one sleeping worker, as
    /// `RuntimeShared::wake_one` does.
    pub fn job_pushed(&self) {
        if let Some(worker) = self.idle.wake_one() {
            self.shared[worker].notify();
        }
    }

    /// Notifications sent to `worker` and not consumed by a sleep.
    pub fn unconsumed_notifications(&self, worker: usize) -> usize {
        self.shared[worker].notifier().pending()
    }
}
