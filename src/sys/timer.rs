//! A `timerfd`: wakes an `epoll_wait` at a nanosecond deadline.
//!
//! `epoll_wait` takes its timeout in whole milliseconds (mio rounds up), so
//! a loop that sleeps until its next timer would wake up to a millisecond
//! late. The dispatcher arms this timer for the exact timeout before it
//! blocks; its expiry makes the poll return on time.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::syscall;

/// A monotonic, non-blocking timer file descriptor.
#[derive(Debug)]
pub(crate) struct TimerFd(OwnedFd);

impl TimerFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: timerfd_create takes a clock id and flags, no pointers.
        let fd = syscall!(timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC
        ))?;
        // SAFETY: timerfd_create returned a new descriptor that nothing else
        // owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Arms the timer to expire once, `after` from now (at least 1 ns: a
    /// zero value would disarm it).
    pub(crate) fn arm(&self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_nanos(1));
        let value = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: libc::time_t::try_from(after.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(after.subsec_nanos() as i32),
            },
        };
        // SAFETY: the descriptor is a live timerfd owned by `self`; `value`
        // is a valid itimerspec; a null old-value pointer is allowed.
        syscall!(timerfd_settime(
            self.0.as_raw_fd(),
            0,
            &value,
            std::ptr::null_mut()
        ))?;
        Ok(())
    }
}

impl AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
