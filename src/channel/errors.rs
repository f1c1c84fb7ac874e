//! The error types of [`GoChannel`](super::GoChannel), in
//! crossbeam-channel's shapes with `Closed` for its `Disconnected`.
//!
//! Every error that fails to hand a value over carries that value back, so
//! a failed send never loses it. `Debug` does not require `T: Debug`.

use std::error::Error;
use std::fmt;

/// A [`send`](super::GoChannel::send) on a closed channel; carries the value
/// back.
///
/// ```
/// let channel = nimgo::GoChannel::bounded(1);
/// channel.close();
/// assert_eq!(channel.send(5).unwrap_err().into_inner(), 5);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SendError<T>(pub T);

impl<T> SendError<T> {
    /// The value that was not sent.
    ///
    /// ```
    /// assert_eq!(nimgo::channel::SendError(3).into_inner(), 3);
    /// ```
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError { .. }")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sending on a closed channel")
    }
}

impl<T> Error for SendError<T> {}

/// A [`try_send`](super::GoChannel::try_send) that could not send at once.
///
/// ```
/// use nimgo::channel::TrySendError;
/// let channel = nimgo::GoChannel::bounded(1);
/// channel.try_send(1).unwrap();
/// assert_eq!(channel.try_send(2), Err(TrySendError::Full(2)));
/// channel.close();
/// assert_eq!(channel.try_send(3), Err(TrySendError::Closed(3)));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The buffer is full, or no receiver is waiting on a rendezvous channel.
    Full(T),
    /// The channel is closed.
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    ///
    /// ```
    /// assert_eq!(nimgo::channel::TrySendError::Full(4).into_inner(), 4);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(value) | Self::Closed(value) => value,
        }
    }

    /// Whether the send failed because the channel was full.
    ///
    /// ```
    /// assert!(nimgo::channel::TrySendError::Full(()).is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full(_))
    }

    /// Whether the send failed because the channel was closed.
    ///
    /// ```
    /// assert!(nimgo::channel::TrySendError::Closed(()).is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed(_))
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("Full(..)"),
            Self::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("sending on a full channel"),
            Self::Closed(_) => f.write_str("sending on a closed channel"),
        }
    }
}

impl<T> Error for TrySendError<T> {}

impl<T> From<SendError<T>> for TrySendError<T> {
    fn from(error: SendError<T>) -> Self {
        Self::Closed(error.0)
    }
}

/// A [`send_timeout`](super::GoChannel::send_timeout) that did not send.
///
/// ```
/// use std::time::Duration;
/// use nimgo::channel::SendTimeoutError;
/// let channel = nimgo::GoChannel::bounded(0);
/// let error = channel.send_timeout(7, Duration::from_millis(1)).unwrap_err();
/// assert_eq!(error, SendTimeoutError::Timeout(7));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SendTimeoutError<T> {
    /// The timeout passed before the value could be sent.
    Timeout(T),
    /// The channel is closed.
    Closed(T),
}

impl<T> SendTimeoutError<T> {
    /// The value that was not sent.
    ///
    /// ```
    /// assert_eq!(nimgo::channel::SendTimeoutError::Timeout(1).into_inner(), 1);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            Self::Timeout(value) | Self::Closed(value) => value,
        }
    }

    /// Whether the send timed out.
    ///
    /// ```
    /// assert!(nimgo::channel::SendTimeoutError::Timeout(()).is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }

    /// Whether the send failed because the channel was closed.
    ///
    /// ```
    /// assert!(nimgo::channel::SendTimeoutError::Closed(()).is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed(_))
    }
}

impl<T> fmt::Debug for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(_) => f.write_str("Timeout(..)"),
            Self::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(_) => f.write_str("timed out sending on a channel"),
            Self::Closed(_) => f.write_str("sending on a closed channel"),
        }
    }
}

impl<T> Error for SendTimeoutError<T> {}

impl<T> From<SendError<T>> for SendTimeoutError<T> {
    fn from(error: SendError<T>) -> Self {
        Self::Closed(error.0)
    }
}

/// A [`recv`](super::GoChannel::recv) on a closed channel with nothing left
/// in its buffer.
///
/// ```
/// let channel = nimgo::GoChannel::<u8>::unbounded();
/// channel.close();
/// assert_eq!(channel.recv(), Err(nimgo::channel::RecvError));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvError;

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("receiving on a closed and empty channel")
    }
}

impl Error for RecvError {}

/// A [`try_recv`](super::GoChannel::try_recv) that found nothing.
///
/// ```
/// use nimgo::channel::TryRecvError;
/// let channel = nimgo::GoChannel::<u8>::bounded(1);
/// assert_eq!(channel.try_recv(), Err(TryRecvError::Empty));
/// channel.close();
/// assert_eq!(channel.try_recv(), Err(TryRecvError::Closed));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing to receive now.
    Empty,
    /// The channel is closed and drained.
    Closed,
}

impl TryRecvError {
    /// Whether nothing was there to receive.
    ///
    /// ```
    /// assert!(nimgo::channel::TryRecvError::Empty.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Empty)
    }

    /// Whether the channel is closed and drained.
    ///
    /// ```
    /// assert!(nimgo::channel::TryRecvError::Closed.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed)
    }
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("receiving on an empty channel"),
            Self::Closed => f.write_str("receiving on a closed and empty channel"),
        }
    }
}

impl Error for TryRecvError {}

impl From<RecvError> for TryRecvError {
    fn from(_: RecvError) -> Self {
        Self::Closed
    }
}

/// A [`recv_timeout`](super::GoChannel::recv_timeout) that received nothing.
///
/// ```
/// use std::time::Duration;
/// use nimgo::channel::RecvTimeoutError;
/// let channel = nimgo::GoChannel::<u8>::bounded(1);
/// assert_eq!(
///     channel.recv_timeout(Duration::from_millis(1)),
///     Err(RecvTimeoutError::Timeout)
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvTimeoutError {
    /// The timeout passed with nothing to receive.
    Timeout,
    /// The channel is closed and drained.
    Closed,
}

impl RecvTimeoutError {
    /// Whether the receive timed out.
    ///
    /// ```
    /// assert!(nimgo::channel::RecvTimeoutError::Timeout.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout)
    }

    /// Whether the channel is closed and drained.
    ///
    /// ```
    /// assert!(nimgo::channel::RecvTimeoutError::Closed.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed)
    }
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out receiving on a channel"),
            Self::Closed => f.write_str("receiving on a closed and empty channel"),
        }
    }
}

impl Error for RecvTimeoutError {}

impl From<RecvError> for RecvTimeoutError {
    fn from(_: RecvError) -> Self {
        Self::Closed
    }
}
