//! The dispatcher's timers: an ordered map from (deadline, sequence) to what
//! fires.
//!
//! Timers fire in deadline order; equal deadlines fire in the order they were
//! set (the sequence number). A timer that is no longer wanted (the task was
//! woken before its timeout, a `with_timeout` scope ended) is removed at once
//! by its key, so a loop of short timed waits does not pile up dead entries.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

/// Identifies one armed timer. Two words (an `Option<TimerKey>` too), where
/// an `Instant` alone takes two: every task slot holds one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimerKey {
    /// The deadline, in nanoseconds from the timers' origin (negative
    /// before it); saturates ~292 years away, which keeps the order of any
    /// deadline a program can wait for.
    at: i64,
    sequence: NonZeroU64,
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
#[derive(Debug)]
pub(crate) struct Timers {
    map: BTreeMap<TimerKey, TimerTarget>,
    /// The instant deadlines are counted from.
    origin: Instant,
    next_sequence: NonZeroU64,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            map: BTreeMap::new(),
            origin: Instant::now(),
            next_sequence: NonZeroU64::MIN,
        }
    }
}

impl Timers {
    /// Arms a timer.
    pub(crate) fn insert(&mut self, deadline: Instant, target: TimerTarget) -> TimerKey {
        let key = TimerKey {
            at: self.offset(deadline),
            sequence: self.next_sequence,
        };
        self.next_sequence = self
            .next_sequence
            .checked_add(1)
            .expect("nimgo: timer sequence overflow");
        self.map.insert(key, target);
        key
    }

    /// `instant` in nanoseconds from the origin, saturating.
    fn offset(&self, instant: Instant) -> i64 {
        let nanos = |duration: Duration| i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX);
        match instant.checked_duration_since(self.origin) {
            Some(after) => nanos(after),
            None => -nanos(self.origin.duration_since(instant)),
        }
    }

    /// The instant `at` nanoseconds from the origin.
    fn instant(&self, at: i64) -> Instant {
        let distance = Duration::from_nanos(at.unsigned_abs());
        let instant = if at >= 0 {
            self.origin.checked_add(distance)
        } else {
            self.origin.checked_sub(distance)
        };
        instant.unwrap_or(self.origin)
    }

    /// Disarms a timer (no-op if it already fired).
    pub(crate) fn remove(&mut self, key: TimerKey) {
        self.map.remove(&key);
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.map.keys().next().map(|key| self.instant(key.at))
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<TimerTarget> {
        let now = self.offset(now);
        let entry = self.map.first_entry()?;
        if entry.key().at <= now {
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

    #[test]
    fn deadlines_before_the_origin_keep_their_order() {
        let mut timers = Timers::default();
        let origin = timers.origin;
        let (Some(early), Some(earlier)) = (
            origin.checked_sub(Duration::from_millis(1)),
            origin.checked_sub(Duration::from_millis(2)),
        ) else {
            return; // the clock started less than 2 ms ago
        };
        timers.insert(early, TimerTarget::Park { index: 1, epoch: 0 });
        timers.insert(earlier, TimerTarget::Park { index: 2, epoch: 0 });
        assert_eq!(timers.next_deadline(), Some(earlier));
        assert_eq!(
            timers.pop_due(early),
            Some(TimerTarget::Park { index: 2, epoch: 0 })
        );
        assert_eq!(
            timers.pop_due(early),
            Some(TimerTarget::Park { index: 1, epoch: 0 })
        );
    }
}
