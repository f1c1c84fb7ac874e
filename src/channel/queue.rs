//! The state behind one channel: a buffer and two waiter lists under one
//! mutex, whatever the flavour (bounded, unbounded, rendezvous).
//!
//! # States
//!
//! ```text
//!   queue: VecDeque<T>     values sent and not received, at most `capacity`
//!                          (a value given back by an unwinding receiver may
//!                          go over it)
//!   receivers: [entry]     receive arms waiting for a value
//!   senders: [entry, T]    send arms waiting, each with its value
//!   delivered: [signal, T] values handed to a selected receiver, which takes
//!                          its own out after waking
//!   closed: bool           set once by `close`, never cleared
//! ```
//!
//! A sender first looks for a waiting receiver it can select (compare and
//! swap on the receiver's signal, see [`waiters`](super::waiters)); it puts
//! the value in `delivered` for it and wakes it. Otherwise it buffers the
//! value if there is room, otherwise it waits with its value in `senders`.
//! A receiver takes the oldest buffered value and, if a sender waits, moves
//! that sender's value into the freed place; with an empty buffer (a
//! rendezvous) it takes a waiting sender's value directly. Hence: receivers
//! wait only while the buffer is empty, senders only while it is full.
//! Entries whose signal is no longer `WAITING` are skipped and left for
//! their owner to remove.

use std::collections::VecDeque;

use super::errors::{TryRecvError, TrySendError};
use super::waiters::{Registered, Signal};
use crate::dispatcher::Waker;
use crate::loom::{Arc, Mutex, MutexGuard, lock};

/// A waiting arm: whose call, and which of its arms.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) signal: Arc<Signal>,
    pub(crate) arm: usize,
}

/// The lock-protected part of a channel.
pub(crate) struct State<T> {
    queue: VecDeque<T>,
    receivers: VecDeque<Entry>,
    senders: VecDeque<(Entry, T)>,
    delivered: Vec<(Arc<Signal>, T)>,
    closed: bool,
}

/// One channel, shared by all its handles.
pub(crate) struct Chan<T> {
    state: Mutex<State<T>>,
    /// `None`: unbounded.
    capacity: Option<usize>,
}

/// Selects the first entry whose signal is still waiting; returns its
/// position and its waker.
fn select_first<E>(entries: &VecDeque<E>, entry: impl Fn(&E) -> &Entry) -> Option<(usize, Waker)> {
    entries.iter().enumerate().find_map(|(position, item)| {
        let entry = entry(item);
        entry
            .signal
            .try_select(entry.arm)
            .then(|| (position, entry.signal.waker().clone()))
    })
}

/// Whether an entry other than `own`'s could be selected now.
fn any_waiting<E>(
    entries: &VecDeque<E>,
    own: Option<&Arc<Signal>>,
    entry: impl Fn(&E) -> &Entry,
) -> bool {
    entries.iter().any(|item| {
        let entry = entry(item);
        entry.signal.is_waiting() && own.is_none_or(|own| !Arc::ptr_eq(own, &entry.signal))
    })
}

impl<T> State<T> {
    fn has_room(&self, capacity: Option<usize>) -> bool {
        capacity.is_none_or(|capacity| self.queue.len() < capacity)
    }

    /// Sends under the lock; returns a receiver to wake after unlocking.
    fn send(
        &mut self,
        value: T,
        capacity: Option<usize>,
    ) -> Result<Option<Waker>, TrySendError<T>> {
        if self.closed {
            return Err(TrySendError::Closed(value));
        }
        if let Some((position, waker)) = select_first(&self.receivers, |entry| entry) {
            let entry = self
                .receivers
                .remove(position)
                .expect("position is in range");
            self.delivered.push((entry.signal, value));
            return Ok(Some(waker));
        }
        if self.has_room(capacity) {
            self.queue.push_back(value);
            return Ok(None);
        }
        Err(TrySendError::Full(value))
    }

    /// Receives under the lock; returns a sender to wake after unlocking.
    fn recv(&mut self) -> Result<(T, Option<Waker>), TryRecvError> {
        if let Some(value) = self.queue.pop_front() {
            let waker = select_first(&self.senders, |(entry, _)| entry).map(|(position, waker)| {
                let (_, refill) = self.senders.remove(position).expect("position is in range");
                self.queue.push_back(refill);
                waker
            });
            return Ok((value, waker));
        }
        if let Some((position, waker)) = select_first(&self.senders, |(entry, _)| entry) {
            let (_, value) = self.senders.remove(position).expect("position is in range");
            return Ok((value, Some(waker)));
        }
        if self.closed {
            Err(TryRecvError::Closed)
        } else {
            Err(TryRecvError::Empty)
        }
    }

    fn send_ready(&self, capacity: Option<usize>, own: Option<&Arc<Signal>>) -> bool {
        self.closed || self.has_room(capacity) || any_waiting(&self.receivers, own, |entry| entry)
    }

    fn recv_ready(&self, own: Option<&Arc<Signal>>) -> bool {
        self.closed || !self.queue.is_empty() || any_waiting(&self.senders, own, |(entry, _)| entry)
    }
}

fn new_signal(signal: &mut Option<Arc<Signal>>) -> Arc<Signal> {
    signal
        .get_or_insert_with(|| Arc::new(Signal::new(crate::dispatcher::current_waker())))
        .clone()
}

impl<T> Chan<T> {
    pub(crate) fn new(capacity: Option<usize>) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(capacity.unwrap_or(0).min(1024)),
                receivers: VecDeque::new(),
                senders: VecDeque::new(),
                delivered: Vec::new(),
                closed: false,
            }),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        lock(&self.state)
    }

    pub(crate) fn capacity(&self) -> Option<usize> {
        self.capacity
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub(crate) fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let waker = self.lock().send(value, self.capacity)?;
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        let (value, waker) = self.lock().recv()?;
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(value)
    }

    /// Closes the channel and wakes every waiter; `false` if already closed.
    pub(crate) fn close(&self) -> bool {
        let wakers: Vec<Waker> = {
            let mut state = self.lock();
            if state.closed {
                return false;
            }
            state.closed = true;
            state
                .receivers
                .iter()
                .chain(state.senders.iter().map(|(entry, _)| entry))
                .map(|entry| entry.signal.waker().clone())
                .collect()
        };
        for waker in wakers {
            waker.wake();
        }
        true
    }

    /// [`Operation::register`](super::waiters::Operation::register) for a
    /// send of `*value`. On `Waiting` the value is in the channel; on `Done`
    /// it was sent (`Ok`) or refused (`Err`, the channel is closed).
    pub(crate) fn register_send(
        &self,
        value: &mut Option<T>,
        signal: &mut Option<Arc<Signal>>,
        arm: usize,
        first: bool,
    ) -> (Registered, Option<Result<(), T>>) {
        let mut state = self.lock();
        let item = value
            .take()
            .expect("a send arm has its value until it completes");
        if first {
            match state.send(item, self.capacity) {
                Ok(waker) => {
                    drop(state);
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                    return (Registered::Done, Some(Ok(())));
                }
                Err(TrySendError::Closed(item)) => return (Registered::Done, Some(Err(item))),
                Err(TrySendError::Full(item)) => {
                    let signal = new_signal(signal);
                    state.senders.push_back((Entry { signal, arm }, item));
                    return (Registered::Waiting, None);
                }
            }
        }
        if state.send_ready(self.capacity, signal.as_ref()) {
            *value = Some(item);
            return (Registered::Ready, None);
        }
        let signal = new_signal(signal);
        state.senders.push_back((Entry { signal, arm }, item));
        (Registered::Waiting, None)
    }

    /// Removes a send entry of `signal`; returns its value if it was still
    /// there (not taken by a receiver).
    pub(crate) fn unregister_send(&self, signal: &Arc<Signal>) -> Option<T> {
        let mut state = self.lock();
        let position = state
            .senders
            .iter()
            .position(|(entry, _)| Arc::ptr_eq(&entry.signal, signal))?;
        state.senders.remove(position).map(|(_, value)| value)
    }

    /// Like [`register_send`](Self::register_send), for a receive.
    pub(crate) fn register_recv(
        &self,
        signal: &mut Option<Arc<Signal>>,
        arm: usize,
        first: bool,
    ) -> (Registered, Option<Result<T, TryRecvError>>) {
        let mut state = self.lock();
        if first {
            match state.recv() {
                Ok((value, waker)) => {
                    drop(state);
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                    return (Registered::Done, Some(Ok(value)));
                }
                Err(TryRecvError::Closed) => {
                    return (Registered::Done, Some(Err(TryRecvError::Closed)));
                }
                Err(TryRecvError::Empty) => {}
            }
        } else if state.recv_ready(signal.as_ref()) {
            return (Registered::Ready, None);
        }
        let signal = new_signal(signal);
        state.receivers.push_back(Entry { signal, arm });
        (Registered::Waiting, None)
    }

    /// Removes a receive entry of `signal`; if `selected`, returns the value
    /// a sender delivered to it.
    pub(crate) fn unregister_recv(&self, signal: &Arc<Signal>, selected: bool) -> Option<T> {
        let mut state = self.lock();
        if selected {
            let position = state
                .delivered
                .iter()
                .position(|(owner, _)| Arc::ptr_eq(owner, signal))?;
            return Some(state.delivered.swap_remove(position).1);
        }
        if let Some(position) = state
            .receivers
            .iter()
            .position(|entry| Arc::ptr_eq(&entry.signal, signal))
        {
            state.receivers.remove(position);
        }
        None
    }

    /// Puts back a value an unwinding receiver was handed: to another
    /// waiting receiver, or to the front of the buffer (even when closed:
    /// a value that was sent is still received).
    pub(crate) fn give_back(&self, value: T) {
        let waker = {
            let mut state = self.lock();
            match select_first(&state.receivers, |entry| entry) {
                Some((position, waker)) => {
                    let entry = state
                        .receivers
                        .remove(position)
                        .expect("position is in range");
                    state.delivered.push((entry.signal, value));
                    Some(waker)
                }
                None => {
                    state.queue.push_front(value);
                    None
                }
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}
