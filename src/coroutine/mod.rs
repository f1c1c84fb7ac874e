//! Coroutines.
pub(crate) mod stack;
