//! The state behind one channel: a buffer and two waiter lists under one
//! lock ([`ChannelLock`]), whatever the flavour (bounded, unbounded,
//! rendezvous).
//!
//! # States
//!
//! ```text
//!   queue: Buffer<T>        values sent and not received, at most `capacity`
//!                           (a value given back by an unwinding receiver may
//!                           go over it)
//!   receivers: [waiter]     receive calls waiting for a value
//!   senders: [waiter, T]    send calls waiting, each with its value
//!   delivered: [signal, T]  values handed to a selected receive arm of a
//!                           select, which takes its own out after waking
//!   closed: bool            set once by `close`, never cleared
//!   spare: Parked?          the last single waiter completed (and woken)
//!                           on its own thread, reused by the next park on
//!                           that thread once its owner let go of it
//! ```
//!
//! The spare's waker keeps a handle on its thread's dispatcher until a
//! newer spare replaces it or the channel is dropped: if that thread has
//! exited meanwhile, its dispatcher's inbox and eventfd stay allocated that
//! long (one per channel at most).
//!
//! A waiter is one of two kinds:
//!
//! - **Single**: a plain blocking `send`/`recv` ([`Chan::send_blocking`],
//!   [`Chan::recv_blocking`]). It owns one [`Parked`]: a waker, a `done`
//!   flag and a one-value slot. A single waiter is in a list exactly while
//!   it can still be completed: the counterpart that completes it removes it
//!   from the list, moves the value (a receiver's into its slot, a sender's
//!   out of the list), sets `done`, all under the lock, then wakes it. The
//!   owner, after its park, checks `done` (no lock needed: the slot was
//!   filled before `done` was set); if unset, it takes the lock, where
//!   `done` is final: either set, or its entry is still in the list and it
//!   removes it, and no one can complete it any more. No compare-and-swap,
//!   no second lock on the hand-off path.
//! - **Select**: one arm of a [`Select`](super::Select) (an [`Entry`]:
//!   signal and arm), following the protocol in [`waiters`](super::waiters):
//!   a counterpart selects it by a compare-and-swap on the signal, a value
//!   for a selected receive arm goes to `delivered`, and entries whose
//!   signal is no longer `WAITING` are skipped and left for their owner to
//!   remove.
//!
//! A sender first looks for a waiting receiver it can complete or select; it
//! hands it the value and wakes it. Otherwise it buffers the value if there
//! is room, otherwise it waits with its value in `senders`. A receiver takes
//! the oldest buffered value and, if a sender waits, moves that sender's
//! value into the freed place; with an empty buffer (a rendezvous) it takes
//! a waiting sender's value directly. Hence: receivers wait only while the
//! buffer is empty, senders only while it is full.
//!
//! Wake-ups of waiters on other threads happen after the lock is released;
//! a waiter on the caller's own thread is woken under it (a push on the
//! dispatcher's ready queue, no message) and its [`Parked`] becomes the
//! channel's spare (the spare it replaces is let go of after the lock is
//! released). Values the channel drops (a cancelled send's) are dropped
//! outside the lock too: no user code runs under it.
//!
//! # Spinning before a park
//!
//! A call that would park first gives up the lock and watches the lock's
//! release count for a few µs, when its thread has nothing else to run and
//! a counterpart on another thread could act meanwhile
//! ([`dispatcher::spin_before_park`]). If the count moves, it retries; if
//! not, it takes the lock again and registers as above. A change made
//! between the last look and that lock shows in the count the lock is
//! taken with, and is retried too, so a spin never leaves a waiter that
//! nobody will complete. Between two busy cores a hand-off then costs a
//! few cache-line transfers instead of a park, a message and a wake-up.

use std::collections::VecDeque;
use std::time::Instant;

use super::buffer::Buffer;
use super::errors::{RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError};
use super::lock::{ChannelGuard, ChannelLock};
use super::waiters::{Registered, Signal};
use crate::dispatcher::{self, Waker, Wakeup};
use crate::loom::{Arc, AtomicBool, Ordering, UnsafeCell};

/// A waiting arm of a select: whose call, and which of its arms.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) signal: Arc<Signal>,
    pub(crate) arm: usize,
}

/// The one-value hand-off cell of a [`Parked`] receiver.
///
/// Written at most once per use, by the counterpart that completes the
/// receive, under the channel's lock, after it removed the waiter from the
/// list and before it sets `done` (release). Read only by the owner: after
/// it saw `done` set (acquire), or under the channel's lock (an unwinding
/// owner). A completed waiter is in no list, so nobody writes to it again;
/// until it is completed its owner does not read. Hence accesses never
/// overlap.
struct Slot<T>(UnsafeCell<Option<T>>);

impl<T> Slot<T> {
    fn new() -> Self {
        Self(UnsafeCell::new(None))
    }

    /// # Safety
    ///
    /// The caller holds the channel's lock, has just removed the waiter from
    /// its list, and has not set `done` yet.
    unsafe fn put(&self, value: T) {
        // SAFETY: per the contract, this is the one counterpart completing
        // the waiter (removed under the lock, so no other can), and the owner
        // does not read until `done` is set, after this write.
        self.0.with_mut(|slot| unsafe { *slot = Some(value) });
    }

    /// Whether the slot is empty; `&mut self` proves no one else can touch
    /// it.
    fn is_empty(&mut self) -> bool {
        // SAFETY: `&mut self` is exclusive access to the cell.
        self.0.with(|slot| unsafe { (*slot).is_none() })
    }

    /// # Safety
    ///
    /// The caller is the waiter's owner and has seen `done` set (with
    /// acquire ordering).
    unsafe fn take(&self) -> Option<T> {
        // SAFETY: the write happened before `done` was set (release), which
        // the caller saw (acquire); no one writes after `done` is set, and
        // only the owner (the caller, on one thread) reads.
        self.0.with_mut(|slot| unsafe { (*slot).take() })
    }
}

/// What a plain blocking `send` or `recv` waits on (see the module docs).
pub(crate) struct Parked<T> {
    /// Set, under the channel's lock, by the counterpart that completed the
    /// call, after it filled `slot` (for a receive).
    done: AtomicBool,
    waker: Waker,
    /// The value handed to a receiver.
    slot: Slot<T>,
}

impl<T> Parked<T> {
    fn new(waker: Waker) -> Self {
        Self {
            done: AtomicBool::new(false),
            waker,
            slot: Slot::new(),
        }
    }

    /// Whether a counterpart completed the call (and filled the slot).
    fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// The owner's: the value a completed receive was handed.
    fn take_value(&self) -> Option<T> {
        if !self.is_done() {
            return None;
        }
        // SAFETY: the owner calls this (the only reader), and `done` was
        // seen set just above with acquire ordering.
        unsafe { self.slot.take() }
    }

    /// Completes the call, handing it `value` (a receive).
    ///
    /// Only under the channel's lock, right after removing the waiter from
    /// its list (so at most once per use).
    fn complete(&self, value: Option<T>) {
        if let Some(value) = value {
            // SAFETY: as this function's contract: under the lock, removed
            // from the list, `done` not set yet (only this call sets it).
            unsafe { self.slot.put(value) };
        }
        self.done.store(true, Ordering::Release);
    }

    /// A fresh waiter for the calling context. Reuses the allocation (and
    /// the waker's handle on the dispatcher) of the call's own earlier
    /// waiter, or else of the channel's `spare` (a waiter completed and
    /// woken on this thread, see [`State::wake_single`]), when no one else
    /// holds it any more: the common park then allocates nothing and
    /// touches no reference count but its own.
    fn renew(
        call_spare: &mut Option<Arc<Self>>,
        channel_spare: &mut Option<Arc<Self>>,
    ) -> Arc<Self> {
        for spare in [call_spare, channel_spare] {
            if let Some(parked) = spare
                && let Some(fresh) = Arc::get_mut(parked)
                && fresh.slot.is_empty()
                && fresh.waker.renew()
            {
                fresh.done = AtomicBool::new(false);
                return spare.take().expect("checked just above");
            }
        }
        Arc::new(Self::new(dispatcher::current_waker()))
    }
}

// SAFETY: `Parked` is shared between the owner and the counterpart that
// completes it, which moves a `T` into the slot on its thread for the owner
// to take out on its own: that needs `T: Send`. The slot's accesses never
// overlap (see `Slot`); the other fields are `Sync`.
unsafe impl<T: Send> Sync for Parked<T> {}

/// A waiter in one of the channel's lists.
pub(crate) enum Waiter<T> {
    /// A plain `send`/`recv`: in the list only while it can be completed.
    Single(Arc<Parked<T>>),
    /// An arm of a select.
    Select(Entry),
}

impl<T> Waiter<T> {
    fn waker(&self) -> &Waker {
        match self {
            Self::Single(parked) => &parked.waker,
            Self::Select(entry) => entry.signal.waker(),
        }
    }

    /// Whether a counterpart could complete or select it now (other than an
    /// entry of `own`).
    fn is_waiting(&self, own: Option<&Arc<Signal>>) -> bool {
        match self {
            Self::Single(_) => true,
            Self::Select(entry) => {
                entry.signal.is_waiting() && own.is_none_or(|own| !Arc::ptr_eq(own, &entry.signal))
            }
        }
    }

    fn is_single(&self, parked: &Arc<Parked<T>>) -> bool {
        matches!(self, Self::Single(own) if Arc::ptr_eq(own, parked))
    }

    fn is_select(&self, signal: &Arc<Signal>) -> bool {
        matches!(self, Self::Select(entry) if Arc::ptr_eq(&entry.signal, signal))
    }
}

/// A waiter to wake once the lock is released.
#[must_use]
pub(crate) enum Wake<T> {
    Nobody,
    Single(Arc<Parked<T>>),
    Select(Waker),
    /// Nobody to wake, but a spare waiter to let go of outside the lock
    /// (its waker may hold the last handle on a dispatcher).
    Release(Arc<Parked<T>>),
}

impl<T> Wake<T> {
    pub(crate) fn wake(self) {
        match self {
            Self::Nobody => {}
            Self::Single(parked) => parked.waker.wake_by_ref(),
            Self::Select(waker) => waker.wake(),
            Self::Release(parked) => drop(parked),
        }
    }
}

/// The lock-protected part of a channel.
///
/// In declaration order (`repr(C)`) after the lock word, on the lock's own
/// cache line: what every send and receive writes (`queue`'s inline oldest
/// value, for a small `T`, and its ring's head and length) and `closed`.
/// The waiter lists follow; a hand-off between two threads that never wait
/// only reads them, so their lines stay shared instead of moving between
/// cores with every message.
#[repr(C)]
pub(crate) struct State<T> {
    queue: Buffer<T>,
    closed: bool,
    receivers: VecDeque<Waiter<T>>,
    senders: VecDeque<(Waiter<T>, T)>,
    delivered: Vec<(Arc<Signal>, T)>,
    /// A completed single waiter kept for the next park (see
    /// [`State::wake_single`]).
    spare: Option<Arc<Parked<T>>>,
}

/// One channel, shared by all its handles.
pub(crate) struct Chan<T> {
    state: ChannelLock<State<T>>,
    /// `None`: unbounded.
    capacity: Option<usize>,
}

/// The first waiter in `list` that can be completed now: a single waiter
/// (in a list only while completable), or a select arm this call manages to
/// select (its waker is returned). Select arms already decided are skipped.
fn first_completable<T, E>(
    list: &VecDeque<E>,
    waiter: impl Fn(&E) -> &Waiter<T>,
) -> Option<(usize, Option<Waker>)> {
    list.iter()
        .enumerate()
        .find_map(|(position, item)| match waiter(item) {
            Waiter::Single(_) => Some((position, None)),
            Waiter::Select(entry) if entry.signal.try_select(entry.arm) => {
                Some((position, Some(entry.signal.waker().clone())))
            }
            Waiter::Select(_) => None,
        })
}

impl<T> State<T> {
    fn has_room(&self, capacity: Option<usize>) -> bool {
        capacity.is_none_or(|capacity| self.queue.len() < capacity)
    }

    /// Hands `value` to the first receiver that can take it: completes a
    /// single waiter, or selects a select arm. Gives `value` back if none.
    fn deliver(&mut self, value: T) -> Result<Wake<T>, T> {
        if self.receivers.is_empty() {
            return Err(value);
        }
        if let Some(Waiter::Single(_)) = self.receivers.front()
            && let Some(Waiter::Single(parked)) = self.receivers.pop_front()
        {
            // The common case, without the general scan below.
            parked.complete(Some(value));
            return Ok(self.wake_single(parked));
        }
        let Some((position, waker)) = first_completable(&self.receivers, |waiter| waiter) else {
            return Err(value);
        };
        Ok(
            match self
                .receivers
                .remove(position)
                .expect("position is in range")
            {
                Waiter::Single(parked) => {
                    parked.complete(Some(value));
                    self.wake_single(parked)
                }
                Waiter::Select(entry) => {
                    self.delivered.push((entry.signal, value));
                    Wake::Select(waker.expect("a select entry was selected"))
                }
            },
        )
    }

    /// The wake-up of a single waiter just completed under the lock. One on
    /// this very thread is woken at once (no message, no lock) and its
    /// waiter becomes the channel's spare for the next park; any other is
    /// woken after the lock is released.
    ///
    /// No destructor runs under the lock: a spare it replaces (maybe left
    /// by a thread that has exited since, its waker holding the last handle
    /// on that thread's dispatcher) is let go of after the lock is
    /// released.
    fn wake_single(&mut self, parked: Arc<Parked<T>>) -> Wake<T> {
        if !parked.waker.wake_local() {
            return Wake::Single(parked);
        }
        match self.spare.replace(parked) {
            Some(previous) => Wake::Release(previous),
            None => Wake::Nobody,
        }
    }

    /// Takes the value of the first sender that can give it up.
    fn take_sender(&mut self) -> Option<(T, Wake<T>)> {
        if self.senders.is_empty() {
            return None;
        }
        if let Some((Waiter::Single(_), _)) = self.senders.front()
            && let Some((Waiter::Single(parked), value)) = self.senders.pop_front()
        {
            // The common case, without the general scan below.
            parked.complete(None);
            return Some((value, self.wake_single(parked)));
        }
        let (position, waker) = first_completable(&self.senders, |(waiter, _)| waiter)?;
        let (waiter, value) = self.senders.remove(position).expect("position is in range");
        let wake = match waiter {
            Waiter::Single(parked) => {
                parked.complete(None);
                self.wake_single(parked)
            }
            Waiter::Select(_) => Wake::Select(waker.expect("a select entry was selected")),
        };
        Some((value, wake))
    }

    /// Sends under the lock; returns a receiver to wake after unlocking.
    fn send(&mut self, value: T, capacity: Option<usize>) -> Result<Wake<T>, TrySendError<T>> {
        if self.closed {
            return Err(TrySendError::Closed(value));
        }
        let value = match self.deliver(value) {
            Ok(wake) => return Ok(wake),
            Err(value) => value,
        };
        if self.has_room(capacity) {
            self.queue.push_back(value);
            return Ok(Wake::Nobody);
        }
        Err(TrySendError::Full(value))
    }

    /// Receives under the lock; returns a sender to wake after unlocking.
    fn recv(&mut self) -> Result<(T, Wake<T>), TryRecvError> {
        if let Some(value) = self.queue.pop_front() {
            let wake = match self.take_sender() {
                Some((refill, wake)) => {
                    self.queue.push_back(refill);
                    wake
                }
                None => Wake::Nobody,
            };
            return Ok((value, wake));
        }
        if let Some(taken) = self.take_sender() {
            return Ok(taken);
        }
        if self.closed {
            Err(TryRecvError::Closed)
        } else {
            Err(TryRecvError::Empty)
        }
    }

    /// Puts back a value an unwinding receiver was handed: to another
    /// waiting receiver, or to the front of the buffer (even when closed:
    /// a value that was sent is still received).
    fn give_back(&mut self, value: T) -> Wake<T> {
        match self.deliver(value) {
            Ok(wake) => wake,
            Err(value) => {
                self.queue.push_front(value);
                Wake::Nobody
            }
        }
    }

    fn send_ready(&self, capacity: Option<usize>, own: Option<&Arc<Signal>>) -> bool {
        self.closed
            || self.has_room(capacity)
            || self.receivers.iter().any(|waiter| waiter.is_waiting(own))
    }

    fn recv_ready(&self, own: Option<&Arc<Signal>>) -> bool {
        self.closed
            || !self.queue.is_empty()
            || self
                .senders
                .iter()
                .any(|(waiter, _)| waiter.is_waiting(own))
    }

    /// Removes a single receiver that was not completed.
    fn remove_receiver(&mut self, parked: &Arc<Parked<T>>) {
        if let Some(position) = self.receivers.iter().position(|w| w.is_single(parked)) {
            self.receivers.remove(position);
        }
    }

    /// Removes a single sender that was not completed; returns its value.
    fn remove_sender(&mut self, parked: &Arc<Parked<T>>) -> Option<T> {
        let position = self.senders.iter().position(|(w, _)| w.is_single(parked))?;
        self.senders.remove(position).map(|(_, value)| value)
    }
}

fn new_signal(signal: &mut Option<Arc<Signal>>) -> Arc<Signal> {
    signal
        .get_or_insert_with(|| Arc::new(Signal::new(dispatcher::current_waker())))
        .clone()
}

/// One blocking call's spinning before it parks: the end of its spin
/// window (set by its first spin, see [`dispatcher::spin_before_park`]) and
/// whether the window is spent.
#[derive(Default)]
struct SpinBudget {
    end: Option<Instant>,
    spent: bool,
}

/// Removes a plain call's waiter if its park unwinds (cancel or an expired
/// `with_timeout`); a receiver gives back a value it was handed.
struct Unregister<'a, T> {
    chan: &'a Chan<T>,
    parked: &'a Arc<Parked<T>>,
    receiver: bool,
    armed: bool,
}

impl<T> Drop for Unregister<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if self.armed {
            self.unwind();
        }
    }
}

impl<T> Unregister<'_, T> {
    #[cold]
    fn unwind(&mut self) {
        let mut state = self.chan.lock();
        if self.receiver {
            let wake = if self.parked.is_done() {
                match self.parked.take_value() {
                    Some(value) => state.give_back(value),
                    None => Wake::Nobody,
                }
            } else {
                state.remove_receiver(self.parked);
                Wake::Nobody
            };
            drop(state);
            wake.wake();
        } else {
            let value = state.remove_sender(self.parked);
            drop(state);
            drop(value);
        }
    }
}

impl<T> Chan<T> {
    pub(crate) fn new(capacity: Option<usize>) -> Self {
        Self {
            state: ChannelLock::new(State {
                queue: Buffer::with_capacity(capacity.unwrap_or(0).min(1024)),
                receivers: VecDeque::new(),
                senders: VecDeque::new(),
                delivered: Vec::new(),
                closed: false,
                spare: None,
            }),
            capacity,
        }
    }

    #[inline]
    fn lock(&self) -> ChannelGuard<'_, State<T>> {
        self.state.lock()
    }

    /// Before a blocking call parks: spins (releasing the lock) while the
    /// channel is untouched, if a counterpart on another thread could act
    /// meanwhile ([`dispatcher::may_spin`] decides whether the thread may
    /// spin at all, [`dispatcher::spin_before_park`] for how long; nothing
    /// runs on this thread between the two). Returns the lock, taken
    /// again, and whether the caller should retry (something changed)
    /// rather than park.
    fn spin<'a>(
        &'a self,
        state: ChannelGuard<'a, State<T>>,
        budget: &mut SpinBudget,
        deadline: Option<Instant>,
    ) -> (ChannelGuard<'a, State<T>>, bool) {
        if budget.spent || !dispatcher::may_spin() {
            return (state, false);
        }
        let version = ChannelLock::version_after(&state);
        drop(state);
        let saw_change = dispatcher::spin_before_park(&mut budget.end, deadline, || {
            self.state.changed_since(version)
        });
        // A spin that saw nothing (its window ended, or its thread has work
        // now) is the call's last: it parks from now on without giving up
        // the lock again, so other lock holders cannot make it retry on.
        budget.spent |= !saw_change;
        // Whatever ended the spin, a change made before this lock (even
        // after the spin's last look) must be retried: the caller would
        // otherwise register a waiter that nobody is left to complete.
        let state = self.lock();
        let changed = ChannelLock::version_before(&state) != version;
        (state, changed)
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
        let wake = self.lock().send(value, self.capacity)?;
        wake.wake();
        Ok(())
    }

    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        let (value, wake) = self.lock().recv()?;
        wake.wake();
        Ok(value)
    }

    /// A plain blocking send: tries and, if the channel is full, registers
    /// under one lock; parks until a receiver completes it, the channel
    /// closes, or `deadline` passes.
    pub(crate) fn send_blocking(
        &self,
        mut value: T,
        deadline: Option<Instant>,
    ) -> Result<(), SendTimeoutError<T>> {
        let mut spare = None;
        let mut spin = SpinBudget::default();
        let mut state = self.lock();
        loop {
            match state.send(value, self.capacity) {
                Ok(wake) => {
                    drop(state);
                    wake.wake();
                    return Ok(());
                }
                Err(TrySendError::Closed(item)) => return Err(SendTimeoutError::Closed(item)),
                Err(TrySendError::Full(item)) => value = item,
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(SendTimeoutError::Timeout(value));
            }
            let retry;
            (state, retry) = self.spin(state, &mut spin, deadline);
            if retry {
                continue;
            }
            let parked = Parked::renew(&mut spare, &mut state.spare);
            state
                .senders
                .push_back((Waiter::Single(parked.clone()), value));
            drop(state);
            let wakeup = self.park(&parked, false, deadline);
            if parked.is_done() {
                return Ok(());
            }
            state = self.lock();
            if parked.is_done() {
                return Ok(());
            }
            value = state
                .remove_sender(&parked)
                .expect("a sender not completed is in the list");
            if wakeup == Wakeup::TimedOut {
                return Err(SendTimeoutError::Timeout(value));
            }
            // Woken without being completed (a close, or a spurious
            // return): retry under this lock. (Whatever `spare` held is
            // this call's earlier waiter, never completed, so its slot is
            // empty and its waker is this context's: dropping it here runs
            // no user code.)
            spare = Some(parked);
        }
    }

    /// A plain blocking receive, like [`send_blocking`](Self::send_blocking).
    pub(crate) fn recv_blocking(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        let mut spare = None;
        let mut spin = SpinBudget::default();
        let mut state = self.lock();
        loop {
            match state.recv() {
                Ok((value, wake)) => {
                    drop(state);
                    wake.wake();
                    return Ok(value);
                }
                Err(TryRecvError::Closed) => return Err(RecvTimeoutError::Closed),
                Err(TryRecvError::Empty) => {}
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(RecvTimeoutError::Timeout);
            }
            let retry;
            (state, retry) = self.spin(state, &mut spin, deadline);
            if retry {
                continue;
            }
            let parked = Parked::renew(&mut spare, &mut state.spare);
            state.receivers.push_back(Waiter::Single(parked.clone()));
            drop(state);
            let wakeup = self.park(&parked, true, deadline);
            if parked.is_done() {
                return Ok(parked
                    .take_value()
                    .expect("a completed receive has its value"));
            }
            state = self.lock();
            if parked.is_done() {
                drop(state);
                return Ok(parked
                    .take_value()
                    .expect("a completed receive has its value"));
            }
            state.remove_receiver(&parked);
            if wakeup == Wakeup::TimedOut {
                return Err(RecvTimeoutError::Timeout);
            }
            // As in `send_blocking`: nothing is dropped here.
            spare = Some(parked);
        }
    }

    /// Parks once for a registered single waiter (unless already done);
    /// deregisters it if the park unwinds.
    fn park(&self, parked: &Arc<Parked<T>>, receiver: bool, deadline: Option<Instant>) -> Wakeup {
        if parked.is_done() {
            return Wakeup::Woken;
        }
        let mut guard = Unregister {
            chan: self,
            parked,
            receiver,
            armed: true,
        };
        let wakeup = dispatcher::park(deadline);
        guard.armed = false;
        wakeup
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
                .chain(state.senders.iter().map(|(waiter, _)| waiter))
                .map(|waiter| waiter.waker().clone())
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
        let item = if first {
            match state.send(item, self.capacity) {
                Ok(wake) => {
                    drop(state);
                    wake.wake();
                    return (Registered::Done, Some(Ok(())));
                }
                Err(TrySendError::Closed(item)) => return (Registered::Done, Some(Err(item))),
                Err(TrySendError::Full(item)) => item,
            }
        } else if state.send_ready(self.capacity, signal.as_ref()) {
            *value = Some(item);
            return (Registered::Ready, None);
        } else {
            item
        };
        let signal = new_signal(signal);
        state
            .senders
            .push_back((Waiter::Select(Entry { signal, arm }), item));
        (Registered::Waiting, None)
    }

    /// Removes a send entry of `signal`; returns its value if it was still
    /// there (not taken by a receiver).
    pub(crate) fn unregister_send(&self, signal: &Arc<Signal>) -> Option<T> {
        let mut state = self.lock();
        let position = state
            .senders
            .iter()
            .position(|(waiter, _)| waiter.is_select(signal))?;
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
                Ok((value, wake)) => {
                    drop(state);
                    wake.wake();
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
        state
            .receivers
            .push_back(Waiter::Select(Entry { signal, arm }));
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
            .position(|waiter| waiter.is_select(signal))
        {
            state.receivers.remove(position);
        }
        None
    }

    /// Puts back a value an unwinding select arm was handed (see
    /// [`State::give_back`]).
    pub(crate) fn give_back(&self, value: T) {
        let wake = self.lock().give_back(value);
        wake.wake();
    }
}
