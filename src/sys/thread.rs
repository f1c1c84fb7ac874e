//! Thread scheduling calls.

use std::io;

use super::syscall;

/// Sets the nice value of the calling thread (Linux: priorities are per
/// thread, addressed by thread id).
pub(crate) fn set_current_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: gettid has no preconditions and cannot fail.
    let thread_id = unsafe { libc::gettid() };
    syscall!(setpriority(
        libc::PRIO_PROCESS,
        thread_id as libc::id_t,
        nice
    ))?;
    Ok(())
}
