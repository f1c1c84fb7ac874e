//! The part of a dispatcher other threads can touch: its inbox and its
//! sleep flag.
//!
//! # The inbox protocol
//!
//! Other threads never touch a dispatcher's tasks. They push a [`Remote`]
//! message (wake task *i* at epoch *e*, cancel task *t*, run this closure as a
//! new task) into the inbox, and the dispatcher's own thread applies it on its
//! next turn. The only question is whether the pusher must interrupt a
//! dispatcher that is blocked in `epoll_wait`.
//!
//! ```text
//!   dispatcher thread                      pusher thread
//!   ─────────────────                      ─────────────
//!   sleeping := true        (SeqCst)       lock; push; pending := true (SeqCst); unlock
//!   if pending  (SeqCst)                   if sleeping (SeqCst)
//!       cancel the sleep                       && swap(sleeping, false) was true
//!   else                                       → notifier.wake()
//!       epoll_wait(timeout)
//!   sleeping := false
//!   drain the inbox
//! ```
//!
//! Both sides write their flag, then read the other's, all `SeqCst`: in the
//! single total order one of the two writes comes first, so either the
//! dispatcher sees `pending` and does not sleep, or the pusher sees `sleeping`
//! and wakes it. No wake-up is lost (invariant 2 and 3). The `swap` makes the
//! wake happen at most once per sleep, and a running dispatcher (`sleeping`
//! false) is never woken. The dispatcher's sole [`mio::Waker`] lives in this
//! struct, so it lives as long as any pusher can reach it (dropping the last
//! `mio::Waker` would close its eventfd and lose wakes silently).
//!
//! States of `sleeping`: `false` (running; only the dispatcher may set it
//! `true`) and `true` (about to sleep or asleep; the dispatcher or the one
//! pusher that wins the `swap` set it back to `false`).
//!
//! `loom-tests/` checks this protocol against this very code; under
//! `--cfg loom` the notifier is a condition variable instead of an eventfd.

use crate::loom::{AtomicBool, Mutex, Ordering, fence, lock};

/// A message for a dispatcher from any thread.
pub(crate) enum Remote {
    /// Wake the task in slot `index` if it is still parked at `epoch`.
    Wake {
        /// Slot of the task, or [`ROOT`](super::ROOT) for the thread itself.
        index: u32,
        /// The park the waker was made for.
        epoch: u64,
    },
    /// Cancel the task `task_id` in slot `index` (if still there).
    Cancel {
        /// Slot of the task.
        index: u32,
        /// The task's id, so a reused slot is not hit.
        task_id: u64,
    },
    /// Start this closure as a new task on the dispatcher.
    Spawn(Box<dyn FnOnce() + Send>),
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Wake { index, epoch } => write!(f, "Wake({index}@{epoch})"),
            Self::Cancel { index, task_id } => write!(f, "Cancel({index}#{task_id})"),
            Self::Spawn(_) => f.write_str("Spawn"),
        }
    }
}

/// Wakes a dispatcher out of its blocking poll.
#[cfg(not(loom))]
pub(crate) struct Notifier(mio::Waker);

#[cfg(not(loom))]
impl Notifier {
    pub(crate) fn new(waker: mio::Waker) -> Self {
        Self(waker)
    }

    fn notify(&self) {
        // An eventfd write only fails if the counter overflows, which mio
        // handles by resetting it; any other error cannot be acted upon here
        // and the next timer tick still drains the inbox.
        let _ = self.0.wake();
    }
}

/// Under loom the "poll" is a condition variable the model thread waits on.
#[cfg(loom)]
pub(crate) struct Notifier {
    woken: Mutex<usize>,
    condvar: crate::loom::Condvar,
}

#[cfg(loom)]
impl Notifier {
    pub(crate) fn new() -> Self {
        Self {
            woken: Mutex::new(0),
            condvar: crate::loom::Condvar::new(),
        }
    }

    fn notify(&self) {
        *lock(&self.woken) += 1;
        self.condvar.notify_one();
    }

    /// Blocks until notified at least once since the last call; returns how
    /// many notifications were consumed.
    pub(crate) fn wait(&self) -> usize {
        let mut woken = lock(&self.woken);
        while *woken == 0 {
            woken = self.condvar.wait(woken).unwrap();
        }
        std::mem::take(&mut *woken)
    }

    /// Notifications not consumed yet.
    pub(crate) fn pending(&self) -> usize {
        *lock(&self.woken)
    }
}

/// Cross-thread half of a dispatcher. See the [module docs](self).
pub(crate) struct Shared {
    inbox: Mutex<Vec<Remote>>,
    pending: AtomicBool,
    sleeping: AtomicBool,
    notifier: Notifier,
}

impl Shared {
    pub(crate) fn new(notifier: Notifier) -> Self {
        Self {
            inbox: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            notifier,
        }
    }

    /// Queues `message` and wakes the dispatcher if it is asleep.
    pub(crate) fn push(&self, message: Remote) {
        {
            let mut inbox = lock(&self.inbox);
            inbox.push(message);
            self.pending.store(true, Ordering::SeqCst);
        }
        self.notify_if_sleeping();
    }

    fn notify_if_sleeping(&self) {
        // Store `pending`, fence, load `sleeping`: the fence pairs with the
        // one in `prepare_sleep` (a store-load, Dekker-style handshake; loom
        // checks it only through `fence(SeqCst)`, as it treats SeqCst
        // accesses as AcqRel).
        fence(Ordering::SeqCst);
        // The plain load keeps the common case (dispatcher running) free of a
        // read-modify-write on a shared line.
        if self.sleeping.load(Ordering::SeqCst) && self.sleeping.swap(false, Ordering::SeqCst) {
            self.notifier.notify();
        }
    }

    /// Whether messages are waiting.
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }

    /// Announces that the dispatcher is about to block. Returns `false` if a
    /// message is already waiting, in which case it must not block.
    pub(crate) fn prepare_sleep(&self) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.pending.load(Ordering::SeqCst) {
            self.sleeping.store(false, Ordering::SeqCst);
            false
        } else {
            true
        }
    }

    /// The dispatcher is running again. A pusher that raced this may still
    /// have notified: the next poll then returns at once, a single spurious
    /// turn.
    pub(crate) fn finish_sleep(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// Moves every queued message into `out`.
    pub(crate) fn drain(&self, out: &mut Vec<Remote>) {
        if !self.pending.load(Ordering::SeqCst) {
            return;
        }
        let mut inbox = lock(&self.inbox);
        self.pending.store(false, Ordering::SeqCst);
        out.append(&mut inbox);
    }

    /// The notifier, for loom models.
    #[cfg(loom)]
    pub(crate) fn notifier(&self) -> &Notifier {
        &self.notifier
    }
}
