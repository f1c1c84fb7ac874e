//! [`Select`]: wait on several channel operations at once, like Go's
//! `select`.
//!
//! The select registers **one** waiter (one signal) on every arm's channel,
//! not one coroutine per arm; the first counterpart to select it decides the
//! arm (see [`waiters`](super::waiters)). Arms are tried in the order they
//! were added; the first ready one fires. A receive arm on a closed, drained
//! channel is ready (its handler gets `Err(RecvError)`), and so is a send arm
//! on a closed channel (`Err(SendError(value))`), as in Go.

use std::fmt;
use std::time::{Duration, Instant};

use super::waiters::{self, NotDone, Operation};
use super::{GoChannel, RecvError, RecvOperation, SendError, SendOperation};

/// One arm: an operation and what to do when it fires.
trait Arm<R> {
    fn operation(&mut self) -> &mut dyn Operation;
    fn fire(self: Box<Self>) -> R;
}

struct RecvArm<'a, T, F> {
    operation: RecvOperation<'a, T>,
    handler: F,
}

impl<'a, T, F, R> Arm<R> for RecvArm<'a, T, F>
where
    F: FnOnce(Result<T, RecvError>) -> R,
{
    fn operation(&mut self) -> &mut dyn Operation {
        &mut self.operation
    }

    fn fire(self: Box<Self>) -> R {
        let Self { operation, handler } = *self;
        handler(operation.into_result())
    }
}

struct SendArm<'a, T, F> {
    operation: SendOperation<'a, T>,
    handler: F,
}

impl<'a, T, F, R> Arm<R> for SendArm<'a, T, F>
where
    F: FnOnce(Result<(), SendError<T>>) -> R,
{
    fn operation(&mut self) -> &mut dyn Operation {
        &mut self.operation
    }

    fn fire(self: Box<Self>) -> R {
        let Self { operation, handler } = *self;
        handler(operation.into_result())
    }
}

type Handler<'a, R> = Box<dyn FnOnce() -> R + 'a>;

/// A select over send and receive arms, with an optional default arm or
/// timeout. Each arm has a handler; [`wait`](Self::wait) runs the handler
/// of the arm that fired and returns what it returns.
///
/// ```
/// use std::time::Duration;
/// use nimgo::{GoChannel, Select};
///
/// let numbers = GoChannel::bounded(1);
/// let words = GoChannel::bounded(1);
/// let out = GoChannel::bounded(1);
/// words.send("hi").unwrap();
///
/// let fired = Select::new()
///     .recv(&numbers, |n: Result<i32, _>| format!("number {}", n.unwrap()))
///     .recv(&words, |w| format!("word {}", w.unwrap()))
///     .wait();
/// assert_eq!(fired, "word hi");
///
/// // A send arm, and a timeout when nothing is ready.
/// let fired = Select::new()
///     .send(&out, 5, |result| result.map(|()| "sent"))
///     .wait();
/// assert_eq!(fired, Ok("sent"));
/// let fired = Select::new()
///     .send(&out, 6, |result| result.map(|()| "sent"))
///     .timeout(Duration::from_millis(5), || Ok("timed out"))
///     .wait();
/// assert_eq!(fired, Ok("timed out"));
///
/// // A default arm fires at once when nothing is ready.
/// let fired = Select::new().recv(&numbers, |_| 1).default(|| 0).wait();
/// assert_eq!(fired, 0);
/// ```
pub struct Select<'a, R> {
    arms: Vec<Box<dyn Arm<R> + 'a>>,
    default: Option<Handler<'a, R>>,
    timeout: Option<(Instant, Handler<'a, R>)>,
}

impl<R> fmt::Debug for Select<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Select")
            .field("arms", &self.arms.len())
            .field("default", &self.default.is_some())
            .field(
                "deadline",
                &self.timeout.as_ref().map(|(deadline, _)| deadline),
            )
            .finish()
    }
}

impl<R> Default for Select<'_, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a, R> Select<'a, R> {
    /// A select with no arm yet.
    ///
    /// ```
    /// let select = nimgo::Select::<()>::new();
    /// assert_eq!(select.default(|| ()).wait(), ());
    /// ```
    pub fn new() -> Self {
        Self {
            arms: Vec::new(),
            default: None,
            timeout: None,
        }
    }

    /// Adds an arm that receives from `channel`; `handler` gets the value,
    /// or `Err` if the channel is closed and drained.
    ///
    /// ```
    /// let channel = nimgo::GoChannel::unbounded();
    /// channel.send(2).unwrap();
    /// let doubled = nimgo::Select::new().recv(&channel, |v| v.unwrap() * 2).wait();
    /// assert_eq!(doubled, 4);
    /// ```
    pub fn recv<T: 'a>(
        mut self,
        channel: &'a GoChannel<T>,
        handler: impl FnOnce(Result<T, RecvError>) -> R + 'a,
    ) -> Self {
        self.arms.push(Box::new(RecvArm {
            operation: RecvOperation::new(channel),
            handler,
        }));
        self
    }

    /// Adds an arm that sends `value` on `channel`; `handler` gets `Ok`, or
    /// the value back if the channel is closed. If another arm fires, the
    /// value is dropped.
    ///
    /// ```
    /// let channel = nimgo::GoChannel::bounded(1);
    /// let sent = nimgo::Select::new().send(&channel, 'x', |r| r.is_ok()).wait();
    /// assert!(sent);
    /// assert_eq!(channel.recv(), Ok('x'));
    /// ```
    pub fn send<T: 'a>(
        mut self,
        channel: &'a GoChannel<T>,
        value: T,
        handler: impl FnOnce(Result<(), SendError<T>>) -> R + 'a,
    ) -> Self {
        self.arms.push(Box::new(SendArm {
            operation: SendOperation::new(channel, value),
            handler,
        }));
        self
    }

    /// Adds a default arm: if no other arm is ready at once, `handler` runs
    /// instead of waiting.
    ///
    /// ```
    /// let channel = nimgo::GoChannel::<u8>::bounded(1);
    /// let got = nimgo::Select::new().recv(&channel, |v| v.ok()).default(|| None).wait();
    /// assert_eq!(got, None);
    /// ```
    pub fn default(mut self, handler: impl FnOnce() -> R + 'a) -> Self {
        self.default = Some(Box::new(handler));
        self
    }

    /// Adds a timeout arm: `handler` runs if no other arm fires within
    /// `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let channel = nimgo::GoChannel::<u8>::bounded(0);
    /// let got = nimgo::Select::new()
    ///     .recv(&channel, |v| v.ok())
    ///     .timeout(Duration::from_millis(2), || None)
    ///     .wait();
    /// assert_eq!(got, None);
    /// ```
    pub fn timeout(self, timeout: Duration, handler: impl FnOnce() -> R + 'a) -> Self {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.deadline(deadline, handler),
            None => self,
        }
    }

    /// Adds a deadline arm: `handler` runs if no other arm fires by
    /// `deadline`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let channel = nimgo::GoChannel::<u8>::bounded(0);
    /// let got = nimgo::Select::new()
    ///     .recv(&channel, |v| v.ok())
    ///     .deadline(Instant::now() + Duration::from_millis(2), || None)
    ///     .wait();
    /// assert_eq!(got, None);
    /// ```
    pub fn deadline(mut self, deadline: Instant, handler: impl FnOnce() -> R + 'a) -> Self {
        self.timeout = Some((deadline, Box::new(handler)));
        self
    }

    /// Waits until an arm fires and returns what its handler returns. With
    /// no arm at all and no timeout or default, waits forever (as Go's empty
    /// `select {}`).
    ///
    /// ```
    /// let a = nimgo::GoChannel::bounded(0);
    /// let b = nimgo::GoChannel::bounded(0);
    /// let sender = {
    ///     let b = b.clone();
    ///     nimgo::go(move || b.send(9).unwrap())
    /// };
    /// let got = nimgo::Select::new()
    ///     .recv(&a, |v: Result<i32, _>| ('a', v.unwrap()))
    ///     .recv(&b, |v| ('b', v.unwrap()))
    ///     .wait();
    /// assert_eq!(got, ('b', 9));
    /// sender.wait();
    /// ```
    pub fn wait(mut self) -> R {
        let deadline = self.timeout.as_ref().map(|(deadline, _)| *deadline);
        let blocking = self.default.is_none();
        let outcome = {
            let mut operations: Vec<&mut dyn Operation> =
                self.arms.iter_mut().map(|arm| arm.operation()).collect();
            waiters::wait(&mut operations, deadline, blocking)
        };
        match outcome {
            Ok(index) => self.arms.swap_remove(index).fire(),
            Err(NotDone::WouldBlock) => match self.default.take() {
                Some(handler) => handler(),
                None => unreachable!("only a select with a default arm does not block"),
            },
            Err(NotDone::TimedOut) => match self.timeout.take() {
                Some((_, handler)) => handler(),
                None => unreachable!("only a select with a deadline times out"),
            },
        }
    }
}
