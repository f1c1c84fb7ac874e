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
//! Both facts live in one atomic word, `state`, with two bits:
//!
//! - `PENDING`: the inbox may hold messages (set by every pusher, cleared by
//!   the dispatcher when it drains, under the inbox lock);
//! - `SLEEPING`: the dispatcher is about to block or is blocked, and nobody
//!   has notified it yet (set by the dispatcher, cleared by the dispatcher
//!   when it wakes or by the one pusher that notifies it).
//!
//! ```text
//!   dispatcher thread                         pusher thread
//!   ─────────────────                         ─────────────
//!   CAS state: no PENDING → +SLEEPING         lock; push; unlock
//!     failed (PENDING set): do not block      old := fetch_or(PENDING)
//!     succeeded: epoll_wait(timeout)          if old has SLEEPING:
//!   fetch_and(-SLEEPING)                          old := fetch_and(-SLEEPING)
//!   lock; fetch_and(-PENDING); take; unlock       if old had SLEEPING: notify
//! ```
//!
//! Every access that decides anything is a read-modify-write of the same
//! word, so they are totally ordered and each reads the latest value; the
//! proof needs no fences. If the pusher's `fetch_or` comes first, the
//! dispatcher's CAS sees `PENDING` and does not block. If the CAS comes
//! first, the pusher's `fetch_or` returns `SLEEPING`, and exactly one party
//! clears it: the pusher that then notifies, or the dispatcher that woke
//! up anyway. No wake-up is lost (invariants 2 and 3), a sleep is notified
//! at most once, and a running dispatcher is never notified (a pusher that
//! finds `SLEEPING` clear does nothing). At worst a notification sent for
//! one sleep wakes the next one early: one spurious turn.
//!
//! The dispatcher's sole [`mio::Waker`] lives in this struct, so it lives as
//! long as any pusher can reach it (dropping the last `mio::Waker` would
//! close its eventfd and lose wakes silently).
//!
//! `loom-tests/` checks this protocol against this very code; under
//! `--cfg loom` the notifier is a condition variable instead of an eventfd.

use crate::loom::{AtomicU8, Mutex, Ordering, lock};

/// `state` bit: the inbox may hold messages.
const PENDING: u8 = 1;
/// `state` bit: the dispatcher blocks (or is about to) and was not notified.
const SLEEPING: u8 = 2;

/// A message for a dispatcher from any thread.
pub enum Remote {
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
    /// Free the slot of an I/O registration dropped on another thread.
    ReleaseIo(mio::Token),
    /// An interruption payload of task `task_id` in slot `index` (or of the
    /// root) was dropped away from its loop: its unwind is over.
    UnwindEnded {
        /// Slot of the task, or `ROOT`.
        index: u32,
        /// The task's id (0 for the root).
        task_id: u64,
    },
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Wake { index, epoch } => write!(f, "Wake({index}@{epoch})"),
            Self::Cancel { index, task_id } => write!(f, "Cancel({index}#{task_id})"),
            Self::Spawn(_) => f.write_str("Spawn"),
            Self::ReleaseIo(token) => write!(f, "ReleaseIo({})", token.0),
            Self::UnwindEnded { index, task_id } => write!(f, "UnwindEnded({index}#{task_id})"),
        }
    }
}

/// Wakes a dispatcher out of its blocking poll.
#[cfg(not(loom))]
pub struct Notifier(mio::Waker);

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
pub struct Notifier {
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

/// The queued messages, and whether the dispatcher still takes any.
struct Inbox {
    messages: Vec<Remote>,
    closed: bool,
}

/// Cross-thread half of a dispatcher. See the [module docs](self).
pub struct Shared {
    inbox: Mutex<Inbox>,
    /// `PENDING | SLEEPING` bits; see the module docs.
    state: AtomicU8,
    notifier: Notifier,
}

impl Shared {
    pub(crate) fn new(notifier: Notifier) -> Self {
        Self {
            inbox: Mutex::new(Inbox {
                messages: Vec::new(),
                closed: false,
            }),
            state: AtomicU8::new(0),
            notifier,
        }
    }

    /// Queues `message` and wakes the dispatcher if it is asleep.
    pub(crate) fn push(&self, message: Remote) {
        let rejected = {
            let mut inbox = lock(&self.inbox);
            if inbox.closed && matches!(message, Remote::Spawn(_)) {
                // No task can start any more; wakes, cancels and releases
                // are still taken (the root may still be parked).
                Some(message)
            } else {
                inbox.messages.push(message);
                None
            }
        };
        match rejected {
            // The dispatcher is gone: drop the message here, outside the
            // lock (a queued job's drop cancels its task).
            Some(message) => drop(message),
            None => self.notify(),
        }
    }

    /// The dispatcher is shutting down for good: later `Spawn` messages are
    /// dropped by their pushers (their jobs are cancelled). Returns the
    /// messages still queued.
    pub(crate) fn close(&self) -> Vec<Remote> {
        let mut inbox = lock(&self.inbox);
        inbox.closed = true;
        self.state.fetch_and(!PENDING, Ordering::SeqCst);
        std::mem::take(&mut inbox.messages)
    }

    /// Wakes the dispatcher if it is asleep, for work that is not in its
    /// inbox (a runtime's job queues). Sets `PENDING` like [`push`](Self::push),
    /// so a dispatcher about to block does not: the next turn finds an empty
    /// inbox and returns to its caller, which looks at its queues.
    pub(crate) fn notify(&self) {
        let old = self.state.fetch_or(PENDING, Ordering::SeqCst);
        if old & SLEEPING != 0 {
            // Whoever clears SLEEPING owns this sleep's one notification.
            let old = self.state.fetch_and(!SLEEPING, Ordering::SeqCst);
            if old & SLEEPING != 0 {
                self.notifier.notify();
            }
        }
    }

    /// Whether messages may be waiting.
    pub(crate) fn has_pending(&self) -> bool {
        self.state.load(Ordering::SeqCst) & PENDING != 0
    }

    /// Announces that the dispatcher is about to block. Returns `false` if a
    /// message is already waiting, in which case it must not block.
    pub(crate) fn prepare_sleep(&self) -> bool {
        let mut current = self.state.load(Ordering::SeqCst);
        loop {
            if current & PENDING != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                current,
                current | SLEEPING,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// The dispatcher is running again. A pusher that raced this may still
    /// have notified: the next poll then returns at once, a single spurious
    /// turn.
    pub(crate) fn finish_sleep(&self) {
        self.state.fetch_and(!SLEEPING, Ordering::SeqCst);
    }

    /// Moves every queued message into `out`.
    pub(crate) fn drain(&self, out: &mut Vec<Remote>) {
        if !self.has_pending() {
            return;
        }
        let mut inbox = lock(&self.inbox);
        // Cleared under the lock: a push that lands after this sets it again.
        self.state.fetch_and(!PENDING, Ordering::SeqCst);
        out.append(&mut inbox.messages);
    }

    /// The notifier, for loom models.
    #[cfg(loom)]
    pub(crate) fn notifier(&self) -> &Notifier {
        &self.notifier
    }
}
