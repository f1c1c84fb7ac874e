//! [`GoFile`]: a file descriptor whose reads and writes park only the
//! calling coroutine, and [`pipe`].
//!
//! # Two paths, chosen once at open
//!
//! When a `GoFile` is made, `fstat` and a probe decide how it does I/O, for
//! its whole life:
//!
//! - **Pool**: regular files, block devices, and any descriptor epoll
//!   refuses (`/dev/null`, `/dev/zero`: `epoll_ctl` fails with `EPERM`).
//!   Epoll would call them always ready, so a read on the loop's thread
//!   would block every coroutine there. Each read or write is a job on the
//!   blocking pool ([`crate::spawn_blocking`]); the coroutine parks until it
//!   completes. Jobs own their buffers: a read job fills its own `Vec`
//!   (at least [`READ_AHEAD`] bytes, the surplus kept for the next reads)
//!   and hands it back.
//! - **Dispatcher**: pipes, FIFOs, terminals, sockets. The descriptor is
//!   made non-blocking, a read or write that says `WouldBlock` parks the
//!   coroutine on the thread's dispatcher until epoll reports readiness.
//!
//! # Timeouts lose nothing
//!
//! On the dispatcher path, a timed-out read has read nothing. On the pool
//! path, a read job cannot be called back: a timed-out read leaves its job
//! running and keeps its handle, and the next read takes that job's bytes
//! first. A timed-out read returns `ErrorKind::TimedOut` either way. Writes
//! to pool files do not time out (the disk write completes). A pool read
//! whose coroutine is *unwound* while it waits (a cancel, an expired
//! `with_timeout` scope) drops its job's bytes with the handle: use the
//! read timeout, not an enclosing scope, when the file must stay usable.
//!
//! # Threads
//!
//! A `GoFile` is `Send`. A dispatcher registration belongs to one thread,
//! so a pollable `GoFile` registers lazily, on first use, with the current
//! thread's dispatcher, and remembers that thread. Used on another thread
//! later, it registers again there and drops the old registration (the old
//! dispatcher frees its slot on its next turn; its epoll entry goes when the
//! descriptor closes, and events until then are ignored); dropped on its
//! own thread it deregisters cleanly.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use mio::Interest;
use mio::unix::SourceFd;

use crate::blocking;
use crate::dispatcher::Registration;
use crate::sys::fd as sys;
use crate::task::GoTask;

/// Smallest read a pool job does; the surplus serves the next reads.
pub const READ_AHEAD: usize = 64 * 1024;

/// Largest chunk [`GoFile::read_chunk`] returns.
pub const CHUNK: usize = 64 * 1024;

/// A file, pipe end, terminal or other descriptor whose I/O parks only the
/// calling coroutine. See the [module docs](self) for how.
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// let path = std::env::temp_dir().join("nimgo-gofile-doc.txt");
/// let mut file = nimgo::GoFile::create(&path)?;
/// file.write_all(b"first\nsecond")?;
/// file.close()?;
/// let lines: Vec<String> = BufReader::new(nimgo::GoFile::open(&path)?)
///     .lines()
///     .collect::<Result<_, _>>()?;
/// assert_eq!(lines, ["first", "second"]);
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct GoFile {
    /// Shared with in-flight pool jobs, which own a reference. `None` only
    /// inside [`close`](GoFile::close), after the file was taken out.
    file: Option<Arc<File>>,
    mode: Mode,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

#[derive(Debug)]
enum Mode {
    Pool(PoolState),
    Dispatcher(Option<ThreadRegistration>),
}

#[derive(Debug, Default)]
struct PoolState {
    /// Bytes read ahead of the caller: `buffer[position..]` are next.
    buffer: Vec<u8>,
    position: usize,
    /// A read job whose caller timed out: its bytes come next.
    pending: Option<GoTask<io::Result<Vec<u8>>>>,
}

impl PoolState {
    fn unread(&self) -> &[u8] {
        &self.buffer[self.position..]
    }
}

/// A dispatcher registration and the thread it belongs to.
#[derive(Debug)]
struct ThreadRegistration {
    thread: ThreadId,
    registration: Registration,
}

fn with_path(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

fn is_a_directory(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::IsADirectory,
        format!("{}: is a directory, not a file", path.display()),
    )
}

impl GoFile {
    /// Opens `path` for reading (`std::fs::File::open`), on the pool.
    ///
    /// A missing file, a directory, or a permission problem is an error
    /// that names the path.
    ///
    /// ```
    /// let error = nimgo::GoFile::open("/no/such/file").unwrap_err();
    /// assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    /// assert!(error.to_string().contains("/no/such/file"));
    /// ```
    pub fn open(path: impl AsRef<Path>) -> io::Result<GoFile> {
        Self::with_options(path, OpenOptions::new().read(true))
    }

    /// Creates (or truncates) `path` for writing (`std::fs::File::create`).
    ///
    /// ```
    /// let path = std::env::temp_dir().join("nimgo-create-doc.txt");
    /// nimgo::GoFile::create(&path)?.close()?;
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn create(path: impl AsRef<Path>) -> io::Result<GoFile> {
        Self::with_options(
            path,
            OpenOptions::new().write(true).create(true).truncate(true),
        )
    }

    /// Opens `path` with `options`, on the pool (opening a FIFO may wait
    /// for its other end; an NFS path may stall). A directory is refused.
    ///
    /// ```
    /// use std::fs::OpenOptions;
    /// let path = std::env::temp_dir().join("nimgo-options-doc.txt");
    /// let file = nimgo::GoFile::with_options(
    ///     &path,
    ///     OpenOptions::new().append(true).create(true),
    /// )?;
    /// # drop(file);
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_options(path: impl AsRef<Path>, options: &OpenOptions) -> io::Result<GoFile> {
        let path: PathBuf = path.as_ref().to_path_buf();
        let options = options.clone();
        let (file, path) = blocking::run_io(move || {
            let file = options
                .open(&path)
                .map_err(|error| with_path(error, &path))?;
            let is_dir = file
                .metadata()
                .map_err(|error| with_path(error, &path))?
                .is_dir();
            if is_dir {
                return Err(is_a_directory(&path));
            }
            Ok((file, path))
        })?;
        Self::from_file(file).map_err(|error| with_path(error, &path))
    }

    /// Takes ownership of `fd`. A pollable descriptor (pipe, FIFO,
    /// terminal, socket) is made non-blocking: that flag lives on the open
    /// file description, so any duplicate of `fd` sees it too.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::os::unix::net::UnixStream;
    /// let (reader, writer) = UnixStream::pair()?;
    /// let mut reader = nimgo::GoFile::from_fd(reader.into())?;
    /// let mut writer = nimgo::GoFile::from_fd(writer.into())?;
    /// writer.write_all(b"hi")?;
    /// drop(writer);
    /// let mut text = String::new();
    /// reader.read_to_string(&mut text)?;
    /// assert_eq!(text, "hi");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_fd(fd: OwnedFd) -> io::Result<GoFile> {
        Self::from_file(File::from(fd))
    }

    fn from_file(file: File) -> io::Result<GoFile> {
        let pollable = {
            let kind = file.metadata()?.file_type();
            if kind.is_file() || kind.is_dir() {
                false
            } else {
                sys::epoll_accepts(file.as_fd())?
            }
        };
        let mode = if pollable {
            sys::set_nonblocking(file.as_fd(), true)?;
            Mode::Dispatcher(None)
        } else {
            Mode::Pool(PoolState::default())
        };
        Ok(Self::with_mode(file, mode))
    }

    fn with_mode(file: File, mode: Mode) -> GoFile {
        GoFile {
            file: Some(Arc::new(file)),
            mode,
            read_timeout: None,
            write_timeout: None,
        }
    }

    /// A pollable descriptor, already non-blocking on a private open file
    /// description.
    pub(crate) fn from_nonblocking(fd: OwnedFd) -> GoFile {
        Self::with_mode(File::from(fd), Mode::Dispatcher(None))
    }

    /// A descriptor that must not be made non-blocking: every read and
    /// write runs on the pool.
    pub(crate) fn from_blocking(fd: OwnedFd) -> GoFile {
        Self::with_mode(File::from(fd), Mode::Pool(PoolState::default()))
    }

    /// Whether I/O goes through the blocking pool (regular files and
    /// unpollable descriptors) rather than the dispatcher.
    ///
    /// ```
    /// let (reader, _writer) = nimgo::pipe()?;
    /// assert!(!reader.uses_pool());
    /// assert!(nimgo::GoFile::open("/dev/null")?.uses_pool());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn uses_pool(&self) -> bool {
        matches!(self.mode, Mode::Pool(_))
    }

    /// Sets how long a read may wait (`None`: forever). A timed-out read
    /// returns `ErrorKind::TimedOut` and loses nothing. A zero duration is
    /// refused with `InvalidInput`, as on std's sockets.
    ///
    /// ```
    /// use std::io::Read;
    /// use std::time::Duration;
    /// let (mut reader, _writer) = nimgo::pipe()?;
    /// reader.set_read_timeout(Some(Duration::from_millis(5)))?;
    /// let error = reader.read(&mut [0; 8]).unwrap_err();
    /// assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.read_timeout = check_timeout(timeout)?;
        Ok(())
    }

    /// Sets how long a write may wait for room in a pipe or terminal
    /// (`None`: forever). Writes to pool files always complete.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (_reader, mut writer) = nimgo::pipe()?;
    /// writer.set_write_timeout(Some(Duration::from_millis(5)))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.write_timeout = check_timeout(timeout)?;
        Ok(())
    }

    /// Reads what is available, up to [`CHUNK`] bytes, waiting at most
    /// `timeout` (`None`: forever) for the first byte. An empty vector
    /// means end of file.
    ///
    /// ```
    /// use std::io::Write;
    /// use std::time::Duration;
    /// let (mut reader, mut writer) = nimgo::pipe()?;
    /// writer.write_all(b"abc")?;
    /// assert_eq!(reader.read_chunk(Some(Duration::from_secs(1)))?, b"abc");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_chunk(&mut self, timeout: Option<Duration>) -> io::Result<Vec<u8>> {
        let timeout = check_timeout(timeout)?;
        let mut chunk = vec![0; CHUNK];
        let n = self.read_with(&mut chunk, timeout)?;
        chunk.truncate(n);
        Ok(chunk)
    }

    /// The file's metadata (`fstat`).
    ///
    /// ```
    /// let file = nimgo::GoFile::open("/dev/null")?;
    /// assert_eq!(file.metadata()?.len(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn metadata(&self) -> io::Result<Metadata> {
        let file = self.file().clone();
        blocking::run_io(move || file.metadata())
    }

    /// Truncates or extends the file to `size` bytes.
    ///
    /// ```
    /// let path = std::env::temp_dir().join("nimgo-set-len-doc.txt");
    /// let file = nimgo::GoFile::create(&path)?;
    /// file.set_len(10)?;
    /// assert_eq!(file.metadata()?.len(), 10);
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_len(&self, size: u64) -> io::Result<()> {
        let file = self.file().clone();
        blocking::run_io(move || file.set_len(size))
    }

    /// Flushes data and metadata to the device (`fsync`).
    ///
    /// ```
    /// let path = std::env::temp_dir().join("nimgo-sync-doc.txt");
    /// nimgo::GoFile::create(&path)?.sync_all()?;
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn sync_all(&self) -> io::Result<()> {
        let file = self.file().clone();
        blocking::run_io(move || file.sync_all())
    }

    /// Drops the file's pages from the page cache (`posix_fadvise
    /// DONTNEED`), for cold-cache measurements. Only clean pages go.
    ///
    /// ```
    /// let path = std::env::temp_dir().join("nimgo-evict-doc.txt");
    /// std::fs::write(&path, b"cached")?;
    /// nimgo::GoFile::open(&path)?.evict_cache()?;
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn evict_cache(&self) -> io::Result<()> {
        sys::evict_cache(self.file().as_fd())
    }

    /// Closes the file and reports the error `close(2)` gives (a delayed
    /// write error on some file systems), which `Drop` cannot. Waits for a
    /// read job left running by a timeout.
    ///
    /// ```
    /// let (reader, writer) = nimgo::pipe()?;
    /// writer.close()?;
    /// reader.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn close(mut self) -> io::Result<()> {
        if let Mode::Pool(state) = &mut self.mode
            && let Some(pending) = state.pending.take()
            && let Ok(Ok(bytes)) = pending.join()
        {
            // A read left running by a timeout: its bytes become read-ahead,
            // which `give_back_read_ahead` returns to the shared offset.
            state.buffer = bytes;
            state.position = 0;
        }
        self.deregister();
        self.give_back_read_ahead();
        match self.file.take().map(Arc::try_unwrap) {
            Some(Ok(file)) => sys::close(OwnedFd::from(file)),
            // A cancelled pool job still holds it; it closes when done.
            Some(Err(_)) | None => Ok(()),
        }
    }

    /// The shared file (present except inside `close`).
    fn file(&self) -> &Arc<File> {
        match &self.file {
            Some(file) => file,
            None => unreachable!("GoFile used after close took its file"),
        }
    }

    /// Moves the offset back over bytes read ahead and not consumed: the
    /// offset may be shared (standard input redirected from a file, a
    /// descriptor inherited by another process), and whoever reads next
    /// must find them. `lseek` on a regular file does not block, so it runs
    /// on the caller's thread. A read still in flight (after a timeout)
    /// moves the offset later and cannot be undone.
    fn give_back_read_ahead(&mut self) {
        if let (Mode::Pool(state), Some(file)) = (&mut self.mode, &self.file)
            && state.pending.is_none()
            && let Ok(unread) = i64::try_from(state.unread().len())
            && unread > 0
        {
            let _ = (&**file).seek(SeekFrom::Current(-unread));
            state.buffer.clear();
            state.position = 0;
        }
    }

    fn deregister(&mut self) {
        // On the registration's own thread, take the descriptor out of its
        // epoll now; on another thread dropping the registration is enough
        // (its dispatcher frees the slot, and the epoll entry goes with the
        // descriptor).
        if let Mode::Dispatcher(slot) = &mut self.mode
            && let Some(local) = slot.take()
            && local.thread == std::thread::current().id()
            && let Some(file) = &self.file
        {
            let raw = file.as_raw_fd();
            let _ = local.registration.deregister(&mut SourceFd(&raw));
        }
    }

    /// The registration for the current thread, made on first use here.
    fn registration_here(&mut self) -> io::Result<&Registration> {
        let here = std::thread::current().id();
        let raw = self.file().as_raw_fd();
        let Mode::Dispatcher(slot) = &mut self.mode else {
            unreachable!("only dispatcher-mode files register");
        };
        if slot.as_ref().is_some_and(|local| local.thread != here) {
            // Moved to another thread: drop the old thread's registration
            // (its dispatcher frees the slot) and register here.
            *slot = None;
        }
        if slot.is_none() {
            let registration =
                Registration::new(&mut SourceFd(&raw), Interest::READABLE | Interest::WRITABLE)?;
            *slot = Some(ThreadRegistration {
                thread: here,
                registration,
            });
        }
        match slot {
            Some(local) => Ok(&local.registration),
            None => unreachable!("registered just above"),
        }
    }

    fn read_with(&mut self, out: &mut [u8], timeout: Option<Duration>) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        let file = self.file().clone();
        match &mut self.mode {
            Mode::Pool(state) => pool_read(&file, state, out, timeout),
            Mode::Dispatcher(_) => {
                let registration = self.registration_here()?;
                registration.io(Interest::READABLE, deadline, || (&*file).read(out))
            }
        }
    }

    fn write_with(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let deadline = self
            .write_timeout
            .and_then(|timeout| Instant::now().checked_add(timeout));
        let file = self.file().clone();
        match &mut self.mode {
            Mode::Pool(state) => {
                // Bytes read ahead belong before the write position.
                settle_read_ahead(&file, state)?;
                let owned = data.to_vec();
                blocking::run_io(move || (&*file).write(&owned))
            }
            Mode::Dispatcher(_) => {
                let registration = self.registration_here()?;
                registration.io(Interest::WRITABLE, deadline, || (&*file).write(data))
            }
        }
    }
}

fn check_timeout(timeout: Option<Duration>) -> io::Result<Option<Duration>> {
    if timeout == Some(Duration::ZERO) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "nimgo: a zero timeout is not allowed (use None to wait forever)",
        ));
    }
    Ok(timeout)
}

/// One pool read: serve read-ahead bytes, else collect (or start) a job.
fn pool_read(
    file: &Arc<File>,
    state: &mut PoolState,
    out: &mut [u8],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    if state.unread().is_empty() {
        let task = match state.pending.take() {
            Some(task) => task,
            None => {
                let file = file.clone();
                let size = out.len().max(READ_AHEAD);
                blocking::spawn_blocking(move || {
                    let mut buffer = vec![0; size];
                    loop {
                        match (&*file).read(&mut buffer) {
                            Ok(n) => {
                                buffer.truncate(n);
                                return Ok(buffer);
                            }
                            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                            Err(error) => return Err(error),
                        }
                    }
                })
            }
        };
        let result = match timeout {
            None => blocking::job_outcome(task.join())?,
            Some(timeout) => match task.join_timeout(timeout) {
                Ok(outcome) => blocking::job_outcome(outcome)?,
                Err(task) => {
                    state.pending = Some(task);
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "nimgo: file read timed out",
                    ));
                }
            },
        };
        state.buffer = result?;
        state.position = 0;
    }
    let unread = state.unread();
    let n = unread.len().min(out.len());
    out[..n].copy_from_slice(&unread[..n]);
    state.position += n;
    Ok(n)
}

/// Waits for a pending read and moves the OS offset back over the bytes
/// read ahead but not consumed, so the offset is the caller's position.
fn settle_read_ahead(file: &Arc<File>, state: &mut PoolState) -> io::Result<()> {
    if let Some(task) = state.pending.take() {
        let bytes = blocking::job_outcome(task.join())??;
        state.buffer = bytes;
        state.position = 0;
    }
    let unread = state.unread().len();
    state.buffer.clear();
    state.position = 0;
    if unread > 0 {
        let back = -i64::try_from(unread).map_err(io::Error::other)?;
        let file = file.clone();
        blocking::run_io(move || (&*file).seek(SeekFrom::Current(back)))?;
    }
    Ok(())
}

impl Read for GoFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_with(buf, self.read_timeout)
    }

    /// On the pool, reads the rest of the file in one job rather than one
    /// job per buffer.
    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let file = self.file().clone();
        let timeout = self.read_timeout;
        let Mode::Pool(state) = &mut self.mode else {
            return read_to_end_by_chunks(self, buf);
        };
        if state.pending.is_some() || timeout.is_some() {
            return read_to_end_by_chunks(self, buf);
        }
        let start = buf.len();
        buf.extend_from_slice(state.unread());
        state.buffer.clear();
        state.position = 0;
        // An empty vector goes to the job and comes back (its heap block,
        // never the coroutine's stack), so the bytes land in place. One that
        // holds bytes stays here, and the job reads into a fresh one: if the
        // wait is unwound (cancel, `with_timeout`), the caller keeps its
        // bytes.
        let lend = buf.is_empty();
        let owned = if lend {
            std::mem::take(buf)
        } else {
            Vec::new()
        };
        let (owned, result) = blocking::run(move || {
            let mut owned = owned;
            let result = (&*file).read_to_end(&mut owned);
            (owned, result)
        })?;
        if lend {
            *buf = owned;
        } else {
            buf.extend_from_slice(&owned);
        }
        result?;
        Ok(buf.len() - start)
    }
}

/// `Read::read_to_end` by repeated reads (std's default is not callable).
fn read_to_end_by_chunks(file: &mut GoFile, buf: &mut Vec<u8>) -> io::Result<usize> {
    let start = buf.len();
    let mut chunk = vec![0; CHUNK];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => return Ok(buf.len() - start),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

impl Write for GoFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_with(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for GoFile {
    /// Seeks a pool file (pipes and terminals say `ESPIPE`, as with std).
    fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
        let file = self.file().clone();
        if let Mode::Pool(state) = &mut self.mode {
            settle_read_ahead(&file, state)?;
            return blocking::run_io(move || (&*file).seek(position));
        }
        (&*file).seek(position)
    }
}

impl AsFd for GoFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file().as_fd()
    }
}

impl AsRawFd for GoFile {
    fn as_raw_fd(&self) -> RawFd {
        self.file().as_raw_fd()
    }
}

impl Drop for GoFile {
    fn drop(&mut self) {
        self.deregister();
        self.give_back_read_ahead();
    }
}

/// A pipe whose ends park only the calling coroutine: `(reader, writer)`,
/// as `std::io::pipe` returns them. Both ends are non-blocking and go
/// through the dispatcher; dropping (or closing) the writer gives the
/// reader end of file.
///
/// ```
/// use std::io::{Read, Write};
/// let (mut reader, mut writer) = nimgo::pipe()?;
/// nimgo::go(move || writer.write_all(b"through the pipe"));
/// let mut text = String::new();
/// reader.read_to_string(&mut text)?;
/// assert_eq!(text, "through the pipe");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn pipe() -> io::Result<(GoFile, GoFile)> {
    let (reader, writer) = sys::pipe()?;
    sys::set_nonblocking(reader.as_fd(), true)?;
    sys::set_nonblocking(writer.as_fd(), true)?;
    Ok((
        GoFile::from_nonblocking(reader),
        GoFile::from_nonblocking(writer),
    ))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A pool read that times out keeps its job: the bytes that arrive
    /// later come out of the next read, none lost.
    #[test]
    fn pool_read_timeout_keeps_the_in_flight_bytes() {
        let (reader, writer) = sys::pipe().unwrap();
        let mut reader = GoFile::from_blocking(reader);
        let mut writer = File::from(writer);
        reader
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let mut buf = [0; 16];
        let error = reader.read(&mut buf).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        writer.write_all(b"late bytes").unwrap();
        reader.set_read_timeout(None).unwrap();
        let n = reader.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"late bytes");
        drop(writer);
        assert_eq!(reader.read(&mut buf).unwrap(), 0);
        reader.close().unwrap();
    }
}
