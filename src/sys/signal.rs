//! TEMP stub
use std::cell::Cell;
thread_local! { static ID: Cell<u64> = const { Cell::new(0) }; }
pub(crate) fn set_current_coroutine_id(id: u64) { ID.set(id) }
pub(crate) fn current_coroutine_id() -> u64 { ID.get() }
