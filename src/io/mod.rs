//! Files, pipes, standard streams and in-memory streams that park only the
//! calling coroutine.
//!
//! - [`GoFile`]: a file descriptor; regular files go through
//!   the blocking pool, pipes and terminals through the dispatcher.
//! - [`pipe`], [`stdin`], [`stdout`],
//!   [`stderr`].
//! - [`GoBufferStream`]: an in-memory byte
//!   pipe.

pub mod buffer_stream;

pub use buffer_stream::{GoBufferReader, GoBufferStream, GoBufferWriter};
pub mod file;
pub mod stdio;

pub use file::{GoFile, pipe};
pub use stdio::{stderr, stdin, stdout};
