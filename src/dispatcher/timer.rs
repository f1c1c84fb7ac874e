//! The dispatcher's timers: an ordered map from (deadline, sequence) to what
//! fires.
//!
//! Timers fire in deadline order; equal deadlines fire in the order they were
//! set (the sequence number). A timer that is no longer wanted (the task was
//! woken before its timeout, a `with_timeout` scope ended) is removed at once
//! by its key, so a loop of short timed waits does not pile up dead entries.

use std::collections::BTreeMap;
use std::time::Instant;

/// Identifies one armed timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimerKey {
    deadline: Instant,
    sequence: u64,
}

/// What a timer does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimerTarget {
    /// The timeout of a park: wake task `index` with "timed out" if it is
    /// still parked at `epoch`.
    Park {
        /// Task slot (or `ROOT`).
        index: u32,
        /// The park the timeout belongs to.
        epoch: u64,
    },
    /// The deadline of the `with_timeout` scope `scope` of task `index`.
    Scope {
        /// Task slot (or `ROOT`).
        index: u32,
        /// Scope id.
        scope: u64,
    },
}

/// Armed timers of one dispatcher.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    map: BTreeMap<TimerKey, TimerTarget>,
    next_sequence: u64,
}

impl Timers {
    /// Arms a timer.
    pub(crate) fn insert(&mut self, deadline: Instant, target: TimerTarget) -> TimerKey {
        let key = TimerKey {
            deadline,
            sequence: self.next_sequence,
        };
        self.next_sequence += 1;
        self.map.insert(key, target);
        key
    }

    /// Disarms a timer (no-op if it already fired).
    pub(crate) fn remove(&mut self, key: TimerKey) {
        self.map.remove(&key);
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.map.keys().next().map(|key| key.deadline)
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<TimerTarget> {
        let entry = self.map.first_entry()?;
        if entry.key().deadline <= now {
            Some(entry.remove())
        } else {
            None
        }
    }

    /// Number of armed timers.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_in_deadline_then_insertion_order() {
        let mut timers = Timers::default();
        let now = Instant::now();
        let late = timers.insert(
            now + Duration::from_millis(5),
            TimerTarget::Park { index: 1, epoch: 0 },
        );
        timers.insert(now, TimerTarget::Park { index: 2, epoch: 0 });
        timers.insert(now, TimerTarget::Park { index: 3, epoch: 0 });
        assert_eq!(timers.next_deadline(), Some(now));
        assert_eq!(
            timers.pop_due(now),
            Some(TimerTarget::Park { index: 2, epoch: 0 })
        );
        assert_eq!(
            timers.pop_due(now),
            Some(TimerTarget::Park { index: 3, epoch: 0 })
        );
        assert_eq!(timers.pop_due(now), None);
        timers.remove(late);
        assert_eq!(timers.len(), 0);
    }
}
