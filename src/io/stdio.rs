//! [`stdin`], [`stdout`], [`stderr`] as [`GoFile`]s that never change the
//! shared descriptors.
//!
//! Descriptors 0, 1 and 2 usually share their *open file description* with
//! other processes (the shell, the rest of a pipeline). `O_NONBLOCK` lives on
//! that description, so setting it on fd 0 would make a sibling's reads fail
//! with `EAGAIN`. nimgo never does. Instead, each call decides, from `fstat`
//! and an epoll probe, as [`GoFile`] does:
//!
//! - **Regular file, `/dev/null`, or anything epoll refuses**: a duplicate
//!   of the descriptor (`F_DUPFD_CLOEXEC`, sharing the offset, as it should)
//!   whose reads and writes run on the blocking pool.
//! - **Pipe, FIFO, terminal**: a *new* open file description of the same
//!   object, opened through `/proc/self/fd/N` with `O_NONBLOCK` set on it
//!   alone. Reads and writes park on the dispatcher. The original stays
//!   blocking.
//! - **Where that reopen fails** (a socket: `ENXIO`; a FIFO with no reader
//!   for writing; no `/proc`): the duplicate on the blocking pool.
//!
//! Each call returns a new handle; closing it closes only the private copy.
//! Bytes one handle read ahead stay in that handle, so keep one `stdin()`
//! handle for a whole read loop.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use super::file::GoFile;
use crate::sys::fd as sys;

/// The process's standard input as a [`GoFile`] (see the [module
/// docs](self) for how it stays correct for every kind of redirection).
///
/// ```no_run
/// use std::io::{BufRead, BufReader};
/// let mut line = String::new();
/// BufReader::new(nimgo::stdin()?).read_line(&mut line)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn stdin() -> io::Result<GoFile> {
    open(io::stdin().as_fd(), 0, false)
}

/// The process's standard output as a [`GoFile`]. Writes are not buffered.
///
/// ```
/// use std::io::Write;
/// nimgo::stdout()?.write_all(b"hello from nimgo\n")?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn stdout() -> io::Result<GoFile> {
    open(io::stdout().as_fd(), 1, true)
}

/// The process's standard error as a [`GoFile`]. Writes are not buffered.
///
/// ```
/// use std::io::Write;
/// nimgo::stderr()?.write_all(b"")?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn stderr() -> io::Result<GoFile> {
    open(io::stderr().as_fd(), 2, true)
}

fn open(fd: BorrowedFd<'_>, number: i32, write: bool) -> io::Result<GoFile> {
    let duplicate = std::fs::File::from(sys::duplicate(fd)?);
    let metadata = duplicate.metadata()?;
    let kind = metadata.file_type();
    if kind.is_file() || kind.is_dir() || !sys::epoll_accepts(duplicate.as_fd())? {
        return Ok(GoFile::from_blocking(duplicate.into()));
    }
    let reopened = OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{number}"));
    match reopened {
        Ok(file) => {
            let same = file
                .metadata()
                .is_ok_and(|m| m.dev() == metadata.dev() && m.ino() == metadata.ino());
            if same {
                Ok(GoFile::from_nonblocking(file.into()))
            } else {
                Ok(GoFile::from_blocking(duplicate.into()))
            }
        }
        Err(_) => Ok(GoFile::from_blocking(duplicate.into())),
    }
}
