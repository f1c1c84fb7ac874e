//! nimgo: Go-style concurrency for Rust without `async`/`await`.
#![deny(unsafe_op_in_unsafe_fn)]

pub(crate) mod loom;
pub(crate) mod sys;
pub mod coroutine;
