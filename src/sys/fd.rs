//! File-descriptor calls for [`crate::io`]: flags, pipes, the epoll probe,
//! close, and cache eviction.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use super::syscall;

/// Sets or clears `O_NONBLOCK` on the open file description of `fd`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, nonblocking: bool) -> io::Result<()> {
    // SAFETY: F_GETFL takes no third argument; `fd` is a live descriptor.
    let flags = syscall!(fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
    let wanted = if nonblocking {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if wanted != flags {
        // SAFETY: F_SETFL takes an int flag set; `fd` is a live descriptor.
        syscall!(fcntl(fd.as_raw_fd(), libc::F_SETFL, wanted))?;
    }
    Ok(())
}

/// A pipe, both ends close-on-exec: `(read end, write end)`.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [RawFd; 2] = [-1, -1];
    // SAFETY: `fds` is a valid, writable array of two ints, as pipe2 needs.
    syscall!(pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC))?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by
    // nobody else.
    let ends = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok(ends)
}

/// Whether epoll accepts `fd` (it refuses regular files, `/dev/null` and
/// other devices without poll support with `EPERM`). Uses a throw-away
/// epoll instance, so the answer does not depend on any dispatcher.
pub(crate) fn epoll_accepts(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: epoll_create1 takes only flags.
    let epoll = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
    // SAFETY: epoll_create1 succeeded: `epoll` is a new descriptor we own.
    let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
    let mut event = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0,
    };
    // SAFETY: both descriptors are live and `event` is a valid epoll_event.
    match syscall!(epoll_ctl(
        epoll.as_raw_fd(),
        libc::EPOLL_CTL_ADD,
        fd.as_raw_fd(),
        &mut event
    )) {
        Ok(_) => Ok(true),
        Err(error) if error.raw_os_error() == Some(libc::EPERM) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Closes `fd` and reports the error `close(2)` returns (which `Drop` of an
/// `OwnedFd` ignores). The descriptor is gone either way.
pub(crate) fn close(fd: OwnedFd) -> io::Result<()> {
    let raw = fd.into_raw_fd();
    // SAFETY: `raw` came from an OwnedFd we consumed: nobody else closes it.
    syscall!(close(raw)).map(drop)
}

/// Duplicates `fd` (close-on-exec); the copy shares the open file
/// description (offset, flags).
pub(crate) fn duplicate(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes a minimum descriptor number.
    let raw = syscall!(fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3))?;
    // SAFETY: fcntl succeeded, so `raw` is a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Drops the page cache of `fd`'s file (for cold-cache benchmarks).
pub(crate) fn evict_cache(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is live; offset 0 and length 0 mean the whole file.
    let result = syscall!(posix_fadvise(
        fd.as_raw_fd(),
        0,
        0,
        libc::POSIX_FADV_DONTNEED
    ))?;
    // posix_fadvise returns the error number instead of setting errno.
    if result != 0 {
        return Err(io::Error::from_raw_os_error(result));
    }
    Ok(())
}
