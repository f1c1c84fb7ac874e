//! Thin wrappers over the memory-management system calls the stack pool uses.
//!
//! ```text
//!   reserve(len)            one private anonymous mapping, read/write,
//!                           MAP_NORESERVE: address space only, no commit charge
//!   ┌──────────┬──────────────────────┬──────────┬──────────────────────┐
//!   │  guard   │  usable (untouched   │  guard   │  usable ...          │
//!   │ install_ │  pages cost nothing) │          │                      │
//!   │ guard()  │                      │          │                      │
//!   └──────────┴──────────────────────┴──────────┴──────────────────────┘
//!   low                                                            high
//! ```
//!
//! A guard page is made one of two ways, chosen once per process by
//! [`guard_markers`]:
//!
//! - **Guard markers** (`madvise(MADV_GUARD_INSTALL)`, Linux 6.13+): the kernel
//!   writes a marker into the page-table entry. Touching the page raises
//!   `SIGSEGV`, the mapping is not split (no extra entry against
//!   `vm.max_map_count`), and the marker survives `MADV_DONTNEED`.
//! - **mprotect** (any kernel): `mprotect(PROT_NONE)` on the page. This splits
//!   the mapping, so every guarded stack costs two kernel mappings (VMAs).
//!
//! Support for guard markers is detected once, by trying one on a scratch
//! two-page mapping, and cached. Setting the environment variable
//! `NIMGO_STACK_GUARD=mprotect` before the first stack is created forces the
//! mprotect fallback (the variable is read once); any other value, or none,
//! means "use guard markers when the kernel has them". Tests use it to exercise
//! the fallback in a child process, the way mio lets a test force its fallback
//! backends.
//!
//! Rules: every function that takes an address is `unsafe`: it changes what
//! the memory holds or whether it may be touched at all, so the caller must own
//! the range and have no live references into it.

use std::io;
use std::ptr::{self, NonNull};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::syscall;

/// `MADV_GUARD_INSTALL` (Linux 6.13+). Not defined by every `libc` release.
pub(crate) const MADV_GUARD_INSTALL: libc::c_int = 102;

/// The environment variable that can force the mprotect fallback.
pub(crate) const GUARD_ENV: &str = "NIMGO_STACK_GUARD";

/// The size of a page, read once from `sysconf(_SC_PAGESIZE)`.
pub(crate) fn page_size() -> usize {
    static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);
    let cached = PAGE_SIZE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = syscall!(sysconf(libc::_SC_PAGESIZE)).map_or(4096, |s| s as usize);
    assert!(
        size.is_power_of_two(),
        "page size {size} is not a power of two"
    );
    PAGE_SIZE.store(size, Ordering::Relaxed);
    size
}

/// Reserves `len` bytes (a multiple of the page size) of private, anonymous,
/// read/write memory without a commit charge (`MAP_NORESERVE`). Pages cost
/// physical memory only once touched.
pub(crate) fn reserve(len: usize) -> io::Result<NonNull<u8>> {
    debug_assert!(len > 0 && len % page_size() == 0);
    // SAFETY: an anonymous mapping at an address of the kernel's choosing
    // (null hint, no MAP_FIXED) cannot overlap or alias existing memory.
    let addr = syscall!(mmap(
        ptr::null_mut(),
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
        0,
    ))?;
    NonNull::new(addr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// Unmaps `len` bytes at `addr`.
///
/// # Safety
///
/// `addr..addr + len` must be a range this crate mapped with [`reserve`] and
/// nothing may use it afterwards.
pub(crate) unsafe fn unmap(addr: NonNull<u8>, len: usize) -> io::Result<()> {
    // SAFETY: the caller owns the range and promises it is no longer used.
    syscall!(munmap(addr.as_ptr().cast(), len)).map(drop)
}

/// Installs guard markers on `len` bytes at `addr` (`MADV_GUARD_INSTALL`).
/// Any contents of those pages are discarded; touching them afterwards raises
/// `SIGSEGV`.
///
/// # Safety
///
/// The page-aligned range must lie in a mapping from [`reserve`] and hold
/// nothing anyone will read or write again.
pub(crate) unsafe fn install_guard_markers(addr: NonNull<u8>, len: usize) -> io::Result<()> {
    // SAFETY: the caller owns the range and gives up its contents.
    syscall!(madvise(addr.as_ptr().cast(), len, MADV_GUARD_INSTALL)).map(drop)
}

/// Makes `len` bytes at `addr` inaccessible (`mprotect(PROT_NONE)`). This
/// splits the mapping around the range.
///
/// # Safety
///
/// The page-aligned range must lie in a mapping from [`reserve`] and nothing
/// may hold a reference into it.
pub(crate) unsafe fn protect_none(addr: NonNull<u8>, len: usize) -> io::Result<()> {
    // SAFETY: the caller owns the range and nothing references it.
    syscall!(mprotect(addr.as_ptr().cast(), len, libc::PROT_NONE)).map(drop)
}

/// Gives the physical pages behind `len` bytes at `addr` back to the kernel
/// (`MADV_DONTNEED`); the next touch sees zero-filled pages. Guard markers
/// survive this.
///
/// # Safety
///
/// The page-aligned range must lie in a mapping from [`reserve`] and its
/// contents must no longer be needed.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) unsafe fn discard(addr: NonNull<u8>, len: usize) -> io::Result<()> {
    // SAFETY: the caller owns the range and gives up its contents.
    syscall!(madvise(addr.as_ptr().cast(), len, libc::MADV_DONTNEED)).map(drop)
}

/// Whether guard pages are made with guard markers (`true`) or with
/// `mprotect` (`false`). Decided once per process: the `NIMGO_STACK_GUARD`
/// switch, then a probe of the running kernel.
pub(crate) fn guard_markers() -> bool {
    static MARKERS: OnceLock<bool> = OnceLock::new();
    *MARKERS.get_or_init(|| {
        let forced_off = std::env::var_os(GUARD_ENV).is_some_and(|v| v == "mprotect");
        !forced_off && probe_guard_markers()
    })
}

/// Tries `MADV_GUARD_INSTALL` on a scratch two-page mapping.
fn probe_guard_markers() -> bool {
    let page = page_size();
    let Ok(scratch) = reserve(2 * page) else {
        return false;
    };
    // SAFETY: `scratch` is a fresh mapping nobody else knows about.
    let works = unsafe { install_guard_markers(scratch, page) }.is_ok();
    // SAFETY: we mapped `scratch` above and drop it here.
    let _ = unsafe { unmap(scratch, 2 * page) };
    works
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_sane() {
        let p = page_size();
        assert!(p >= 4096 && p.is_power_of_two());
        assert_eq!(p, page_size());
    }

    #[test]
    fn reserve_touch_discard_unmap() {
        let page = page_size();
        let mem = reserve(4 * page).unwrap();
        // SAFETY: the mapping is ours, read/write, and four pages long.
        unsafe {
            mem.as_ptr().add(page).write(7);
            assert_eq!(mem.as_ptr().add(page).read(), 7);
            discard(mem, 4 * page).unwrap();
            assert_eq!(mem.as_ptr().add(page).read(), 0);
            unmap(mem, 4 * page).unwrap();
        }
    }

    #[test]
    fn guard_markers_survive_dontneed() {
        if !guard_markers() {
            eprintln!("guard markers unavailable here; skipped");
            return;
        }
        let page = page_size();
        let mem = reserve(2 * page).unwrap();
        // SAFETY: the mapping is ours; nothing references its first page.
        unsafe { install_guard_markers(mem, page).unwrap() };
        // SAFETY: as above; the contents of the whole range are not needed.
        unsafe { discard(mem, 2 * page).unwrap() };
        // The kernel cannot read a guarded page either: write(2) from it
        // fails with EFAULT, while the unguarded page next to it is fine.
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid two-element array for pipe(2) to fill.
        syscall!(pipe(fds.as_mut_ptr())).unwrap();
        // SAFETY: write(2) only reads the buffer; a bad one gives EFAULT.
        let guarded = syscall!(write(fds[1], mem.as_ptr().cast(), 1));
        assert_eq!(guarded.unwrap_err().raw_os_error(), Some(libc::EFAULT));
        // SAFETY: the second page is mapped read/write.
        let open = syscall!(write(fds[1], mem.as_ptr().wrapping_add(page).cast(), 1));
        assert_eq!(open.unwrap(), 1);
        for fd in fds {
            // SAFETY: we own both pipe ends.
            syscall!(close(fd)).unwrap();
        }
        // SAFETY: we mapped it above.
        unsafe { unmap(mem, 2 * page).unwrap() };
    }
}
