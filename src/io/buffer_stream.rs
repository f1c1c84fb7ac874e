//! [`GoBufferStream`]: an in-memory byte pipe between coroutines and threads.
//!
//! # Protocol
//!
//! Both ends share one `Mutex<State>`: the buffered bytes, whether each end
//! is closed, and at most one parked reader and one parked writer (each end
//! is a single owner, so one slot each is enough).
//!
//! - A read takes bytes if there are any. Otherwise, if the writer is
//!   closed, it returns `Ok(0)` (end of stream); else it stores its
//!   [`Waker`](crate::dispatcher) in the reader slot, unlocks, and parks.
//!   Whoever changes the state (a write, a close) takes the slot under the
//!   lock and wakes it after unlocking, so a wake-up is never lost.
//! - A write fails with `BrokenPipe` once the reader is gone. With a
//!   capacity it parks while the buffer is full, symmetrically.
//! - A park that unwinds (cancel, `with_timeout`) clears its slot in a drop
//!   guard; a timed-out read returns `ErrorKind::TimedOut` and takes nothing,
//!   so no byte is lost.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use crate::dispatcher::{self, Wakeup};
use crate::loom::{Arc, Mutex, lock};

struct State {
    buffer: VecDeque<u8>,
    capacity: Option<usize>,
    writer_closed: bool,
    reader_closed: bool,
    reader_waiter: Option<dispatcher::Waker>,
    writer_waiter: Option<dispatcher::Waker>,
}

type Shared = Arc<Mutex<State>>;

/// An in-memory byte pipe: [`GoBufferStream::new`] returns its
/// `(reader, writer)` ends, in the order of `std::io::pipe`.
///
/// ```
/// use std::io::{Read, Write};
/// let (mut reader, mut writer) = nimgo::GoBufferStream::new();
/// nimgo::go(move || writer.write_all(b"hello")); // dropping closes
/// let mut text = String::new();
/// reader.read_to_string(&mut text)?;
/// assert_eq!(text, "hello");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct GoBufferStream {
    _private: (),
}

impl GoBufferStream {
    /// An unbounded stream: writes never park.
    ///
    /// ```
    /// let (reader, writer) = nimgo::GoBufferStream::new();
    /// # drop((reader, writer));
    /// ```
    #[allow(clippy::new_ret_no_self)] // the shape of `std::io::pipe`
    pub fn new() -> (GoBufferReader, GoBufferWriter) {
        Self::build(None)
    }

    /// A bounded stream: a write parks while `capacity` bytes are buffered
    /// (`capacity` 0 is taken as 1).
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// let (mut reader, mut writer) = nimgo::GoBufferStream::with_capacity(4);
    /// let producer = nimgo::go(move || writer.write_all(b"0123456789"));
    /// let mut all = Vec::new();
    /// reader.read_to_end(&mut all)?;
    /// producer.wait()?;
    /// assert_eq!(all, b"0123456789");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_capacity(capacity: usize) -> (GoBufferReader, GoBufferWriter) {
        Self::build(Some(capacity.max(1)))
    }

    fn build(capacity: Option<usize>) -> (GoBufferReader, GoBufferWriter) {
        let shared = Arc::new(Mutex::new(State {
            buffer: VecDeque::new(),
            capacity,
            writer_closed: false,
            reader_closed: false,
            reader_waiter: None,
            writer_waiter: None,
        }));
        (
            GoBufferReader {
                shared: shared.clone(),
                timeout: None,
            },
            GoBufferWriter {
                shared,
                timeout: None,
            },
        )
    }
}

/// Clears a waiter slot if the park unwinds or times out.
struct ClearSlot<'a> {
    shared: &'a Shared,
    reader: bool,
}

impl Drop for ClearSlot<'_> {
    fn drop(&mut self) {
        let mut state = lock(self.shared);
        if self.reader {
            state.reader_waiter = None;
        } else {
            state.writer_waiter = None;
        }
    }
}

fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|timeout| Instant::now().checked_add(timeout))
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("nimgo: GoBufferStream {what} timed out"),
    )
}

/// The reading end of a [`GoBufferStream`].
#[derive(Debug)]
pub struct GoBufferReader {
    shared: Shared,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("buffered", &self.buffer.len())
            .field("writer_closed", &self.writer_closed)
            .field("reader_closed", &self.reader_closed)
            .finish()
    }
}

impl GoBufferReader {
    /// Sets how long a read may park (`None`: forever). A timed-out read
    /// returns `ErrorKind::TimedOut` and consumes nothing.
    ///
    /// ```
    /// use std::io::Read;
    /// use std::time::Duration;
    /// let (mut reader, _writer) = nimgo::GoBufferStream::new();
    /// reader.set_read_timeout(Some(Duration::from_millis(5)));
    /// let error = reader.read(&mut [0; 8]).unwrap_err();
    /// assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    /// ```
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// Reads up to `max` bytes, parking at most `timeout` for the first.
    /// An empty vector means end of stream.
    ///
    /// ```
    /// use std::io::Write;
    /// use std::time::Duration;
    /// let (mut reader, mut writer) = nimgo::GoBufferStream::new();
    /// writer.write_all(b"abc")?;
    /// assert_eq!(reader.read_chunk(2, Some(Duration::from_millis(5)))?, b"ab");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_chunk(&mut self, max: usize, timeout: Option<Duration>) -> io::Result<Vec<u8>> {
        let mut chunk = vec![0; max];
        let n = self.read_until(&mut chunk, deadline_after(timeout))?;
        chunk.truncate(n);
        Ok(chunk)
    }

    /// Bytes buffered now.
    ///
    /// ```
    /// use std::io::Write;
    /// let (reader, mut writer) = nimgo::GoBufferStream::new();
    /// writer.write_all(b"abc")?;
    /// assert_eq!(reader.buffered(), 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn buffered(&self) -> usize {
        lock(&self.shared).buffer.len()
    }

    fn read_until(&mut self, out: &mut [u8], deadline: Option<Instant>) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let (n, writer) = {
                let mut state = lock(&self.shared);
                if !state.buffer.is_empty() {
                    let n = state.buffer.len().min(out.len());
                    for (slot, byte) in out.iter_mut().zip(state.buffer.drain(..n)) {
                        *slot = byte;
                    }
                    (n, state.writer_waiter.take())
                } else if state.writer_closed {
                    return Ok(0);
                } else {
                    state.reader_waiter = Some(dispatcher::current_waker());
                    (0, None)
                }
            };
            if n > 0 {
                if let Some(waker) = writer {
                    waker.wake();
                }
                return Ok(n);
            }
            let guard = ClearSlot {
                shared: &self.shared,
                reader: true,
            };
            let wakeup = dispatcher::park(deadline);
            drop(guard);
            if wakeup == Wakeup::TimedOut {
                let state = lock(&self.shared);
                if state.buffer.is_empty() && !state.writer_closed {
                    return Err(timed_out("read"));
                }
            }
        }
    }
}

impl Read for GoBufferReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let deadline = deadline_after(self.timeout);
        self.read_until(buf, deadline)
    }
}

impl Drop for GoBufferReader {
    fn drop(&mut self) {
        let waker = {
            let mut state = lock(&self.shared);
            state.reader_closed = true;
            state.buffer.clear();
            state.writer_waiter.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The writing end of a [`GoBufferStream`]; dropping or
/// [closing](Self::close) it gives the reader end of stream after the
/// buffered bytes.
#[derive(Debug)]
pub struct GoBufferWriter {
    shared: Shared,
    timeout: Option<Duration>,
}

impl GoBufferWriter {
    /// Sets how long a write may park on a full bounded stream.
    ///
    /// ```
    /// use std::io::Write;
    /// use std::time::Duration;
    /// let (_reader, mut writer) = nimgo::GoBufferStream::with_capacity(1);
    /// writer.set_write_timeout(Some(Duration::from_millis(5)));
    /// writer.write_all(b"a")?;
    /// let error = writer.write(b"b").unwrap_err();
    /// assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// Closes the writing end: the reader gets end of stream after the
    /// buffered bytes.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// let (mut reader, mut writer) = nimgo::GoBufferStream::new();
    /// writer.write_all(b"x")?;
    /// writer.close();
    /// let mut all = Vec::new();
    /// reader.read_to_end(&mut all)?;
    /// assert_eq!(all, b"x");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn close(self) {
        drop(self);
    }
}

impl Write for GoBufferWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let deadline = deadline_after(self.timeout);
        loop {
            let reader = {
                let mut state = lock(&self.shared);
                if state.reader_closed {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "nimgo: GoBufferStream reader is gone",
                    ));
                }
                let space = match state.capacity {
                    Some(capacity) => capacity.saturating_sub(state.buffer.len()),
                    None => data.len(),
                };
                if data.is_empty() {
                    return Ok(0);
                }
                if space > 0 {
                    let n = space.min(data.len());
                    state.buffer.extend(&data[..n]);
                    Some((n, state.reader_waiter.take()))
                } else {
                    state.writer_waiter = Some(dispatcher::current_waker());
                    None
                }
            };
            if let Some((n, waker)) = reader {
                if let Some(waker) = waker {
                    waker.wake();
                }
                return Ok(n);
            }
            let guard = ClearSlot {
                shared: &self.shared,
                reader: false,
            };
            let wakeup = dispatcher::park(deadline);
            drop(guard);
            if wakeup == Wakeup::TimedOut {
                let state = lock(&self.shared);
                let full = state
                    .capacity
                    .is_some_and(|capacity| state.buffer.len() >= capacity);
                if full && !state.reader_closed {
                    return Err(timed_out("write"));
                }
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for GoBufferWriter {
    fn drop(&mut self) {
        let waker = {
            let mut state = lock(&self.shared);
            state.writer_closed = true;
            state.reader_waiter.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}
