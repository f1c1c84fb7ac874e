//! [`GoChannel`]: Go's channel for coroutines and threads alike.
//!
//! One cloneable handle per channel, as in Go: every clone can send,
//! receive and close. A blocked [`send`](GoChannel::send) or
//! [`recv`](GoChannel::recv) parks only the calling coroutine (its thread's
//! other coroutines keep running); on a thread outside any coroutine it
//! drives that thread's loop, or blocks a plain thread. Coroutines of any
//! thread and plain threads can share one channel.
//!
//! ```
//! use nimgo::GoChannel;
//!
//! let channel = GoChannel::bounded(2);
//! let producer = {
//!     let channel = channel.clone();
//!     nimgo::go(move || {
//!         for i in 0..10 {
//!             channel.send(i).unwrap();
//!         }
//!         channel.close();
//!     })
//! };
//! let total: i32 = channel.iter().sum();
//! producer.wait();
//! assert_eq!(total, 45);
//! ```
//!
//! # How it works
//!
//! Each channel is one lock around a buffer and two waiter lists
//! (`queue.rs` has the states and who moves between them; `lock.rs` the
//! lock, a spin lock whose word counts releases). A plain `send` or
//! `recv` that cannot complete registers, under the same lock it tried
//! under, a *single* waiter (a waker, a `done` flag and a one-value slot) and
//! parks; the counterpart completes it under the lock, and the woken caller
//! finds its outcome without locking again. A [`Select`] registers one entry
//! per channel it waits on, all sharing one signal (`waiters.rs` has the
//! protocol that decides, exactly once, which arm happened). Either way,
//! values always move through channel memory (the waiter list, the single
//! waiter's heap-allocated slot, or the `delivered` list for a select's
//! receive arm), so no other thread writes into a parked coroutine's stack,
//! and close, timeout and unwinding are handled without losing or
//! duplicating a value. The fast path (nothing to wait for) takes the lock
//! once and does not allocate; a call allocates one waiter only when it
//! parks, and not even then when the channel kept one from an earlier
//! hand-off on the same thread.
//!
//! Before it parks, a blocking `send` or `recv` spins for up to 4 µs,
//! watching the channel, when its thread has nothing else ready to run and
//! other threads could answer (other threads have dispatchers, as the
//! workers of a runtime do, or the caller is a plain thread): a hand-off
//! between two busy cores then costs a few cache-line transfers rather than
//! a park, a cross-thread message and a wake-up. A thread alone with its
//! coroutines, or one with other work ready, parks at once; I/O events and
//! jobs queued for a runtime worker wait for the spin to end.
//!
//! Invariant 4 of the design: no message is lost or delivered twice,
//! including under timeouts, `close`, [`GoTask::cancel`](crate::GoTask::cancel)
//! and [`with_timeout`](crate::with_timeout). A receive that is unwound after
//! a value was handed to it gives the value back to the channel.

mod buffer;
pub mod errors;
mod lock;
mod queue;
mod select;
mod waiters;

use std::fmt;
use std::time::{Duration, Instant};

pub use errors::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
pub use select::Select;

use crate::loom::Arc;
use queue::Chan;
use waiters::{Operation, Registered, Signal};

/// A multi-producer, multi-consumer channel (see the [module docs](self)).
///
/// ```
/// let channel = nimgo::GoChannel::unbounded();
/// channel.send("hello").unwrap();
/// assert_eq!(channel.recv(), Ok("hello"));
/// ```
pub struct GoChannel<T> {
    chan: Arc<Chan<T>>,
}

impl<T> Clone for GoChannel<T> {
    fn clone(&self) -> Self {
        Self {
            chan: self.chan.clone(),
        }
    }
}

impl<T> fmt::Debug for GoChannel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoChannel")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("closed", &self.is_closed())
            .finish()
    }
}

fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

impl<T> GoChannel<T> {
    /// A channel that buffers up to `capacity` values; `0` makes a
    /// rendezvous channel (Go's unbuffered channel), where a send waits for
    /// a receiver.
    ///
    /// ```
    /// let channel = nimgo::GoChannel::bounded(0);
    /// let receiver = {
    ///     let channel = channel.clone();
    ///     nimgo::go(move || channel.recv().unwrap())
    /// };
    /// channel.send(3).unwrap(); // waits until the receiver takes it
    /// assert_eq!(receiver.wait(), 3);
    /// ```
    pub fn bounded(capacity: usize) -> Self {
        Self {
            chan: Arc::new(Chan::new(Some(capacity))),
        }
    }

    /// A channel whose sends never wait.
    ///
    /// ```
    /// let channel = nimgo::GoChannel::unbounded();
    /// for i in 0..1000 {
    ///     channel.send(i).unwrap();
    /// }
    /// assert_eq!(channel.len(), 1000);
    /// ```
    pub fn unbounded() -> Self {
        Self {
            chan: Arc::new(Chan::new(None)),
        }
    }

    /// Sends `value`, waiting while the channel is full. Fails, giving the
    /// value back, if the channel is closed (before or while waiting).
    ///
    /// ```
    /// let channel = nimgo::GoChannel::bounded(1);
    /// channel.send(1).unwrap();
    /// channel.close();
    /// assert_eq!(channel.send(2), Err(nimgo::channel::SendError(2)));
    /// ```
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        match self.send_until(value, None) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Closed(value) | SendTimeoutError::Timeout(value)) => {
                Err(SendError(value))
            }
        }
    }

    /// Sends `value` if that needs no waiting.
    ///
    /// ```
    /// let channel = nimgo::GoChannel::bounded(1);
    /// assert!(channel.try_send(1).is_ok());
    /// assert!(channel.try_send(2).unwrap_err().is_full());
    /// ```
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.chan.try_send(value)
    }

    /// Sends `value`, waiting at most `timeout`; gives the value back on
    /// timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// let channel = nimgo::GoChannel::bounded(1);
    /// channel.send_timeout(1, Duration::from_millis(1)).unwrap();
    /// let error = channel.send_timeout(2, Duration::from_millis(1)).unwrap_err();
    /// assert!(error.is_timeout());
    /// assert_eq!(error.into_inner(), 2);
    /// ```
    pub fn send_timeout(&self, value: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_until(value, deadline_after(timeout))
    }

    /// Sends `value`, waiting until `deadline` at the latest.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let channel = nimgo::GoChannel::bounded(0);
    /// let deadline = Instant::now() + Duration::from_millis(1);
    /// assert!(channel.send_deadline(1, deadline).unwrap_err().is_timeout());
    /// ```
    pub fn send_deadline(&self, value: T, deadline: Instant) -> Result<(), SendTimeoutError<T>> {
        self.send_until(value, Some(deadline))
    }

    fn send_until(&self, value: T, deadline: Option<Instant>) -> Result<(), SendTimeoutError<T>> {
        self.chan.send_blocking(value, deadline)
    }

    /// Receives a value, waiting while the channel is empty. Once the
    /// channel is closed, returns what is still buffered, then `Err`.
    ///
    /// ```
    /// let channel = nimgo::GoChannel::bounded(2);
    /// channel.send(1).unwrap();
    /// channel.close();
    /// assert_eq!(channel.recv(), Ok(1));
    /// assert!(channel.recv().is_err());
    /// ```
    pub fn recv(&self) -> Result<T, RecvError> {
        self.recv_until(None).map_err(|_| RecvError)
    }

    /// Receives a value if one is there.
    ///
    /// ```
    /// let channel = nimgo::GoChannel::unbounded();
    /// assert!(channel.try_recv().unwrap_err().is_empty());
    /// channel.send(4).unwrap();
    /// assert_eq!(channel.try_recv(), Ok(4));
    /// ```
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.chan.try_recv()
    }

    /// Receives a value, waiting at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let channel = nimgo::GoChannel::<u8>::bounded(1);
    /// assert!(channel.recv_timeout(Duration::from_millis(1)).unwrap_err().is_timeout());
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_until(deadline_after(timeout))
    }

    /// Receives a value, waiting until `deadline` at the latest.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let channel = nimgo::GoChannel::<u8>::bounded(1);
    /// let deadline = Instant::now() + Duration::from_millis(1);
    /// assert!(channel.recv_deadline(deadline).unwrap_err().is_timeout());
    /// ```
    pub fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        self.recv_until(Some(deadline))
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        self.chan.recv_blocking(deadline)
    }

    /// Closes the channel: sends fail from now on, receives drain the
    /// buffer then fail, and every waiting call wakes up to see it. Returns
    /// `false` if the channel was already closed.
    ///
    /// ```
    /// let channel = nimgo::GoChannel::<()>::unbounded();
    /// assert!(channel.close());
    /// assert!(!channel.close());
    /// ```
    pub fn close(&self) -> bool {
        self.chan.close()
    }

    /// Whether [`close`](Self::close) was called.
    ///
    /// ```
    /// let channel = nimgo::GoChannel::<()>::bounded(0);
    /// assert!(!channel.is_closed());
    /// channel.close();
    /// assert!(channel.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.chan.is_closed()
    }

    /// How many values are buffered.
    ///
    /// ```
    /// let channel = nimgo::GoChannel::bounded(4);
    /// channel.send(()).unwrap();
    /// assert_eq!(channel.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.chan.len()
    }

    /// Whether no value is buffered.
    ///
    /// ```
    /// let channel = nimgo::GoChannel::<u8>::bounded(4);
    /// assert!(channel.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer's capacity; `None` for an unbounded channel.
    ///
    /// ```
    /// assert_eq!(nimgo::GoChannel::<u8>::bounded(3).capacity(), Some(3));
    /// assert_eq!(nimgo::GoChannel::<u8>::unbounded().capacity(), None);
    /// ```
    pub fn capacity(&self) -> Option<usize> {
        self.chan.capacity()
    }

    /// An iterator that receives until the channel is closed and drained.
    ///
    /// ```
    /// let channel = nimgo::GoChannel::unbounded();
    /// channel.send(1).unwrap();
    /// channel.send(2).unwrap();
    /// channel.close();
    /// assert_eq!(channel.iter().collect::<Vec<_>>(), [1, 2]);
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { channel: self }
    }
}

/// Receives from a channel until it is closed and drained; see
/// [`GoChannel::iter`].
///
/// ```
/// let channel = nimgo::GoChannel::unbounded();
/// channel.send('a').unwrap();
/// channel.close();
/// let mut iter: nimgo::channel::Iter<'_, char> = channel.iter();
/// assert_eq!(iter.next(), Some('a'));
/// assert_eq!(iter.next(), None);
/// ```
pub struct Iter<'a, T> {
    channel: &'a GoChannel<T>,
}

impl<T> fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").finish_non_exhaustive()
    }
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.channel.recv().ok()
    }
}

impl<'a, T> IntoIterator for &'a GoChannel<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

/// A send arm: the value stays here until it is in the channel.
pub(crate) struct SendOperation<'a, T> {
    chan: &'a Chan<T>,
    value: Option<T>,
    /// `Ok` sent; `Err(value)` the channel is closed.
    outcome: Option<Result<(), T>>,
}

impl<T> Operation for SendOperation<'_, T> {
    fn try_now(&mut self) -> bool {
        let value = self
            .value
            .take()
            .expect("a send is tried only once it has a value");
        match self.chan.try_send(value) {
            Ok(()) => self.outcome = Some(Ok(())),
            Err(TrySendError::Closed(value)) => self.outcome = Some(Err(value)),
            Err(TrySendError::Full(value)) => self.value = Some(value),
        }
        self.outcome.is_some()
    }

    fn register(
        &mut self,
        signal: &mut Option<Arc<Signal>>,
        arm: usize,
        first: bool,
    ) -> Registered {
        let (registered, outcome) = self.chan.register_send(&mut self.value, signal, arm, first);
        self.outcome = outcome;
        registered
    }

    fn unregister(&mut self, signal: &Arc<Signal>, selected: bool) {
        if selected {
            // A receiver took the value out of the entry.
            self.outcome = Some(Ok(()));
        } else {
            self.value = self.chan.unregister_send(signal);
        }
    }

    fn give_back(&mut self) {}
}

/// A receive arm: the received value lands here.
pub(crate) struct RecvOperation<'a, T> {
    chan: &'a Chan<T>,
    /// `Ok(value)` received; `Err(())` the channel is closed and drained.
    outcome: Option<Result<T, ()>>,
}

impl<T> Operation for RecvOperation<'_, T> {
    fn try_now(&mut self) -> bool {
        match self.chan.try_recv() {
            Ok(value) => self.outcome = Some(Ok(value)),
            Err(TryRecvError::Closed) => self.outcome = Some(Err(())),
            Err(TryRecvError::Empty) => {}
        }
        self.outcome.is_some()
    }

    fn register(
        &mut self,
        signal: &mut Option<Arc<Signal>>,
        arm: usize,
        first: bool,
    ) -> Registered {
        let (registered, outcome) = self.chan.register_recv(signal, arm, first);
        self.outcome = outcome.map(|outcome| outcome.map_err(|_| ()));
        registered
    }

    fn unregister(&mut self, signal: &Arc<Signal>, selected: bool) {
        if let Some(value) = self.chan.unregister_recv(signal, selected) {
            self.outcome = Some(Ok(value));
        }
    }

    fn give_back(&mut self) {
        if let Some(Ok(value)) = self.outcome.take() {
            self.chan.give_back(value);
        }
    }
}

impl<'a, T> SendOperation<'a, T> {
    pub(crate) fn new(channel: &'a GoChannel<T>, value: T) -> Self {
        Self {
            chan: &channel.chan,
            value: Some(value),
            outcome: None,
        }
    }

    /// The outcome of a completed send.
    pub(crate) fn into_result(self) -> Result<(), SendError<T>> {
        match self.outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(value)) => Err(SendError(value)),
            None => Err(SendError(
                self.value.expect("an incomplete send keeps its value"),
            )),
        }
    }
}

impl<'a, T> RecvOperation<'a, T> {
    pub(crate) fn new(channel: &'a GoChannel<T>) -> Self {
        Self {
            chan: &channel.chan,
            outcome: None,
        }
    }

    /// The outcome of a completed receive.
    pub(crate) fn into_result(self) -> Result<T, RecvError> {
        match self.outcome {
            Some(Ok(value)) => Ok(value),
            _ => Err(RecvError),
        }
    }
}
