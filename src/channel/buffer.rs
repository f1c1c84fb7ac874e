//! A channel's buffered values: a FIFO whose oldest value is kept inline.
//!
//! ```text
//!   front: Option<T>    the oldest value, if any, stored in the channel's
//!                       state itself, on the lock's cache line
//!   rest: VecDeque<T>   the values after it, in order (empty if `front` is)
//! ```
//!
//! A hand-off through a small channel (the common `bounded(1)` of a number
//! or a pointer) then never touches a separately allocated buffer: the
//! sender writes the value on the line it just locked, and the receiver
//! reads it from the line it is about to lock. Between two cores that is
//! one cache-line transfer less per message; with capacity 1, the channel
//! allocates no buffer at all.

use std::collections::VecDeque;

/// The FIFO; see the [module docs](self). Invariant: `rest` is empty while
/// `front` is `None`.
#[repr(C)]
pub(crate) struct Buffer<T> {
    front: Option<T>,
    rest: VecDeque<T>,
}

impl<T> Buffer<T> {
    /// A buffer that will hold up to `capacity` values without growing
    /// (more are taken, growing `rest`).
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            front: None,
            rest: VecDeque::with_capacity(capacity.saturating_sub(1)),
        }
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.front.is_some()) + self.rest.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.front.is_none()
    }

    /// Appends `value` (newest).
    pub(crate) fn push_back(&mut self, value: T) {
        if self.front.is_none() {
            self.front = Some(value);
        } else {
            self.rest.push_back(value);
        }
    }

    /// Puts `value` before every other (oldest).
    pub(crate) fn push_front(&mut self, value: T) {
        if let Some(previous) = self.front.replace(value) {
            self.rest.push_front(previous);
        }
    }

    /// Takes the oldest value.
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        let value = self.front.take()?;
        self.front = self.rest.pop_front();
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::Buffer;

    #[test]
    fn keeps_fifo_order_across_the_inline_front() {
        let mut buffer = Buffer::with_capacity(2);
        assert!(buffer.is_empty());
        buffer.push_back(1);
        buffer.push_back(2);
        buffer.push_back(3);
        assert_eq!(buffer.len(), 3);
        assert_eq!(buffer.pop_front(), Some(1));
        buffer.push_front(0);
        buffer.push_back(4);
        let drained: Vec<_> = std::iter::from_fn(|| buffer.pop_front()).collect();
        assert_eq!(drained, [0, 2, 3, 4]);
        assert!(buffer.is_empty());
        assert_eq!(buffer.len(), 0);
        buffer.push_front(5);
        assert_eq!(buffer.len(), 1);
        assert_eq!(buffer.pop_front(), Some(5));
        assert_eq!(buffer.pop_front(), None);
    }

    #[test]
    fn drops_what_it_still_holds() {
        let value = std::rc::Rc::new(());
        let mut buffer = Buffer::with_capacity(1);
        buffer.push_back(value.clone());
        buffer.push_back(value.clone());
        assert_eq!(std::rc::Rc::strong_count(&value), 3);
        drop(buffer);
        assert_eq!(std::rc::Rc::strong_count(&value), 1);
    }
}
