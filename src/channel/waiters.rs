//! The waiter protocol of [`Select`](super::Select): one call waiting on
//! several channels.
//!
//! (A plain blocking `send` or `recv` waits on one channel only; it uses the
//! simpler *single* waiter described in [`queue`](super::queue), which needs
//! no compare-and-swap. Both kinds share the channels' waiter lists.)
//!
//! One blocking select owns one [`Signal`]: the caller's [`Waker`] and an
//! atomic *state*. The call puts one entry (signal + arm number) in the
//! waiter list of every channel it waits on, then parks. The state decides,
//! once, which arm happened:
//!
//! ```text
//!                 a counterpart (under its channel's lock) try_select(arm)
//!   WAITING ──────────────────────────────────────────────────────────► arm k
//!      │         and completes arm k: moves the value, then wakes
//!      │
//!      └──── the owner itself: abort() ──► ABORTED
//!            (woken without being selected, timed out, or unwinding)
//! ```
//!
//! - Only a compare-and-swap from `WAITING` changes the state, so exactly one
//!   side wins: either one counterpart selected arm *k* and did its half of
//!   the operation (took the sender's value out of the entry, or put a value
//!   for the receiver in the channel's `delivered` list) under that channel's
//!   lock, or the owner aborted and no counterpart will ever touch its
//!   entries again (entries of a non-`WAITING` signal are skipped).
//! - The owner then removes its entries from every channel. Taking channel
//!   *k*'s lock also makes the counterpart's half visible to it (a value for
//!   a receive arm waits in channel *k*'s `delivered` list).
//! - A selected receiver that unwinds (cancel, `with_timeout`) gives the
//!   value it was handed back to the channel: to another waiting receiver, or
//!   to the front of the buffer. A message is never lost nor duplicated.
//! - `close` wakes every entry without selecting it; the owner, finding its
//!   state still `WAITING`, aborts and retries every arm, and sees the close.
//! - No lock is held across the park, and entries never point into the
//!   owner's stack: values live in the channel's own memory.
//!
//! Registration re-checks each arm under its channel's lock: if an arm is
//! ready when it is about to be registered, the call aborts and retries
//! instead of parking (a counterpart that came before the entry existed
//! would not have found it).

use std::time::Instant;

use crate::dispatcher::{self, Waker, Wakeup};
use crate::loom::{Arc, AtomicUsize, Ordering};

const WAITING: usize = usize::MAX;
const ABORTED: usize = usize::MAX - 1;

/// What one blocking call waits for: its waker and which arm won.
#[derive(Debug)]
pub(crate) struct Signal {
    state: AtomicUsize,
    waker: Waker,
}

impl Signal {
    pub(crate) fn new(waker: Waker) -> Self {
        Self {
            state: AtomicUsize::new(WAITING),
            waker,
        }
    }

    /// Claims the call for `arm`. Only one claim (or the abort) succeeds.
    pub(crate) fn try_select(&self, arm: usize) -> bool {
        self.state
            .compare_exchange(WAITING, arm, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether the call can still be selected.
    pub(crate) fn is_waiting(&self) -> bool {
        self.state.load(Ordering::Acquire) == WAITING
    }

    /// The arm selected, if any.
    fn selected(&self) -> Option<usize> {
        match self.state.load(Ordering::Acquire) {
            WAITING | ABORTED => None,
            arm => Some(arm),
        }
    }

    /// Stops the call being selected; returns the arm if one won first.
    fn abort(&self) -> Option<usize> {
        self.state
            .compare_exchange(WAITING, ABORTED, Ordering::AcqRel, Ordering::Acquire)
            .err()
    }

    /// The waker to wake once the selected arm is complete.
    pub(crate) fn waker(&self) -> &Waker {
        &self.waker
    }
}

/// How registering one arm went.
pub(crate) enum Registered {
    /// The entry is in the channel's waiter list.
    Waiting,
    /// The operation completed at once (only when `first`).
    Done,
    /// The arm is ready: abort and retry instead of parking.
    Ready,
}

/// One arm of a blocking call: a send or a receive on one channel.
pub(crate) trait Operation {
    /// Completes the operation now if it is ready (a value moved, or the
    /// channel is closed); the outcome stays in the operation.
    fn try_now(&mut self) -> bool;
    /// Under the channel's lock: if `first` (no other entry of this call
    /// exists), completes the operation if it is ready; otherwise reports a
    /// ready arm; else registers an entry for `signal`, creating the signal
    /// on first use.
    fn register(&mut self, signal: &mut Option<Arc<Signal>>, arm: usize, first: bool)
    -> Registered;
    /// Removes this arm's entry; if `selected`, collects the outcome the
    /// counterpart left (a received value, or a sent one).
    fn unregister(&mut self, signal: &Arc<Signal>, selected: bool);
    /// During an unwind, after `unregister(.., true)`: gives a received value
    /// back to the channel so that it is not lost.
    fn give_back(&mut self);
}

/// How a blocking call ended without any arm completing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotDone {
    /// Nothing was ready and the call must not block.
    WouldBlock,
    /// The deadline passed.
    TimedOut,
}

/// Waits until one of `operations` completes; returns its index.
///
/// Every pass tries every arm before registering any. A call that is not
/// `blocking` (a select with a default arm) only makes the try pass.
pub(crate) fn wait(
    operations: &mut [&mut dyn Operation],
    deadline: Option<Instant>,
    blocking: bool,
) -> Result<usize, NotDone> {
    loop {
        for (index, operation) in operations.iter_mut().enumerate() {
            if operation.try_now() {
                return Ok(index);
            }
        }
        if !blocking {
            return Err(NotDone::WouldBlock);
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Err(NotDone::TimedOut);
        }
        let mut signal = None;
        let mut registered = 0;
        let mut ready = false;
        for (index, operation) in operations.iter_mut().enumerate() {
            match operation.register(&mut signal, index, index == 0) {
                Registered::Waiting => registered += 1,
                Registered::Done => return Ok(index),
                Registered::Ready => {
                    ready = true;
                    break;
                }
            }
        }
        let signal = signal.unwrap_or_else(|| Arc::new(Signal::new(dispatcher::current_waker())));
        let mut guard = Registration {
            operations: &mut *operations,
            signal: &signal,
            registered,
            finished: false,
        };
        if ready {
            match signal.abort() {
                None => {
                    guard.unregister_all(None);
                    continue;
                }
                Some(arm) => return Ok(guard.finish(arm)),
            }
        }
        loop {
            if let Some(arm) = signal.selected() {
                return Ok(guard.finish(arm));
            }
            let wakeup = dispatcher::park(deadline);
            if signal.selected().is_none() {
                match signal.abort() {
                    None => {
                        guard.unregister_all(None);
                        if wakeup == Wakeup::TimedOut {
                            return Err(NotDone::TimedOut);
                        }
                        // Woken without being selected (a close, or a
                        // spurious return): retry every arm.
                        break;
                    }
                    Some(arm) => return Ok(guard.finish(arm)),
                }
            }
        }
    }
}

/// The entries of one blocking call; removes them if the park unwinds.
struct Registration<'a, 'b> {
    operations: &'a mut [&'b mut dyn Operation],
    signal: &'a Arc<Signal>,
    registered: usize,
    finished: bool,
}

impl Registration<'_, '_> {
    fn unregister_all(&mut self, selected: Option<usize>) {
        for (index, operation) in self.operations[..self.registered].iter_mut().enumerate() {
            operation.unregister(self.signal, selected == Some(index));
        }
        self.finished = true;
    }

    fn finish(&mut self, arm: usize) -> usize {
        self.unregister_all(Some(arm));
        arm
    }
}

impl Drop for Registration<'_, '_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Unwinding out of the park (cancel or an expired `with_timeout`).
        match self.signal.abort() {
            None => self.unregister_all(None),
            Some(arm) => {
                self.unregister_all(Some(arm));
                self.operations[arm].give_back();
            }
        }
    }
}
