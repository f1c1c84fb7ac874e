//! A per-thread cache of task-cell memory.
//!
//! A thread that spawns many tasks and then finishes them (100,000 `go`s,
//! then their `wait`s) frees as many task cells in a burst. Through the
//! global allocator (glibc) that burst lands in the fast bins, is merged
//! back by `malloc_consolidate` at the next large free, the heap top is
//! trimmed, and the next burst faults those pages in again and carves them
//! out of the top chunk: the allocator's slow paths, on every cell. Here a
//! freed cell's memory goes on a free list of the freeing thread instead,
//! and the next cell of the same layout on that thread is popped from it.
//!
//! ```text
//!   thread-local Cache
//!     lists[k] ──► block ──► block ──► null     blocks of k·8+8 bytes, align 8,
//!                  (first word: next)           each one global allocation
//!     bytes: total size of the listed blocks    ≤ MAX_CACHED_BYTES
//! ```
//!
//! - **What is cached.** Only layouts of align exactly 8 and at most
//!   [`MAX_CACHED_SIZE`] bytes (every task cell of an ordinary closure and
//!   result); other layouts go to the global allocator both ways. A block
//!   keeps its layout for life: it is allocated by the global allocator
//!   with the layout of its list, and handed back to it with that layout.
//! - **Retained memory.** At most [`MAX_CACHED_BYTES`] (16 MiB) per thread,
//!   all of it memory that task cells freed on this thread used (the cache
//!   never allocates on its own); a free past the bound goes to the global
//!   allocator. Cells freed on a thread that never allocates any (a
//!   blocking-pool thread dropping the last handle of a job whose caller
//!   let go of it) accumulate there up to the bound. The lists are freed
//!   when the thread exits (and a free after that goes to the global
//!   allocator). Under miri the cache is active too, so a use after free
//!   of a cell could be masked by its reuse; the cell's own tests free
//!   every cell they make.
//! - **Threads.** A cell may be freed on another thread than the one that
//!   allocated it (the last `JoinRef` dropped there): the block joins the
//!   freeing thread's lists. The global allocator allows that, and the
//!   cell's refcount orders every access of the other threads before the
//!   free (`cell.rs`), so reusing the block races with nothing.
//! - Under loom the cache is bypassed: cells go to `loom::alloc`, which
//!   checks that every cell is freed exactly once.

use std::alloc::Layout;
#[cfg(not(loom))]
use std::cell::Cell;
use std::ptr::NonNull;

/// The largest cell size cached, in bytes.
pub(crate) const MAX_CACHED_SIZE: usize = 512;

/// How many bytes of free cells one thread keeps, at most.
pub(crate) const MAX_CACHED_BYTES: usize = 16 << 20;

/// Allocates memory for `layout` (not zero-sized): a cached block of that
/// layout if this thread has one, else from the global allocator. Aborts
/// (as `Box` does) if memory is exhausted.
pub(crate) fn allocate(layout: Layout) -> NonNull<u8> {
    debug_assert!(layout.size() != 0);
    #[cfg(not(loom))]
    if let Some(class) = class_of(layout) {
        if let Ok(Some(block)) = CACHE.try_with(|cache| cache.pop(class, layout.size())) {
            return block;
        }
    }
    // SAFETY: `layout` is not zero-sized (the caller's contract, checked
    // above in debug builds).
    #[cfg(not(loom))]
    let block = unsafe { std::alloc::alloc(layout) };
    // SAFETY: as above.
    #[cfg(loom)]
    let block = unsafe { loom::alloc::alloc(layout) };
    NonNull::new(block).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
}

/// Frees `block`: keeps it for this thread's next allocation of `layout`,
/// or hands it to the global allocator.
///
/// # Safety
///
/// `block` came from [`allocate`] with this `layout` (on any thread), is
/// not freed yet, and nothing uses it any more (every access to it
/// happens before this call).
pub(crate) unsafe fn free(block: NonNull<u8>, layout: Layout) {
    #[cfg(not(loom))]
    if let Some(class) = class_of(layout) {
        // SAFETY: our caller's contract: the block is ours, unused, and of
        // `layout`, which is the layout of list `class` (see `class_of`).
        let kept = CACHE.try_with(|cache| unsafe { cache.push(class, block, layout.size()) });
        if kept == Ok(true) {
            return;
        }
    }
    // SAFETY: `allocate` got the block from the global allocator with this
    // `layout` (a cached block was allocated with its list's layout, which
    // is this one), and our caller gives it up.
    #[cfg(not(loom))]
    unsafe {
        std::alloc::dealloc(block.as_ptr(), layout);
    }
    // SAFETY: as above, through loom's allocator.
    #[cfg(loom)]
    unsafe {
        loom::alloc::dealloc(block.as_ptr(), layout);
    }
}

/// The list holding blocks of `layout`: one per size in 8-byte steps,
/// align 8 only, so that a list's blocks all have the same layout,
/// [`class_layout`].
#[cfg(not(loom))]
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size();
    (layout.align() == 8 && size != 0 && size % 8 == 0 && size <= MAX_CACHED_SIZE)
        .then(|| size / 8 - 1)
}

/// The layout of list `class`'s blocks.
#[cfg(not(loom))]
fn class_layout(class: usize) -> Layout {
    Layout::from_size_align((class + 1) * 8, 8).expect("a small layout")
}

#[cfg(not(loom))]
const CLASSES: usize = MAX_CACHED_SIZE / 8;

/// One thread's lists.
#[cfg(not(loom))]
struct Cache {
    /// The first block of each list; a block's first word links the next.
    lists: [Cell<*mut u8>; CLASSES],
    /// Total size of the listed blocks.
    bytes: Cell<usize>,
}

#[cfg(not(loom))]
thread_local! {
    static CACHE: Cache = const {
        Cache {
            lists: [const { Cell::new(std::ptr::null_mut()) }; CLASSES],
            bytes: Cell::new(0),
        }
    };
}

#[cfg(not(loom))]
impl Cache {
    /// Takes a block of list `class` (whose blocks are `size` bytes).
    #[inline]
    fn pop(&self, class: usize, size: usize) -> Option<NonNull<u8>> {
        let list = &self.lists[class];
        let block = NonNull::new(list.get())?;
        // SAFETY: a listed block is one the list owns: live memory of at
        // least 8 bytes, 8-aligned, whose first word `push` wrote.
        let next = unsafe { block.cast::<*mut u8>().read() };
        list.set(next);
        self.bytes.set(self.bytes.get() - size);
        Some(block)
    }

    /// Lists `block` in list `class`, unless that would exceed the bound.
    ///
    /// # Safety
    ///
    /// `block` is owned by the caller, unused, allocated by the global
    /// allocator with `class_layout(class)`, whose size is `size`.
    #[inline]
    unsafe fn push(&self, class: usize, block: NonNull<u8>, size: usize) -> bool {
        let bytes = self.bytes.get() + size;
        if bytes > MAX_CACHED_BYTES {
            return false;
        }
        let list = &self.lists[class];
        // SAFETY: the block is ours and unused (the contract), at least 8
        // bytes and 8-aligned (its layout's align is 8).
        unsafe { block.cast::<*mut u8>().write(list.get()) };
        list.set(block.as_ptr());
        self.bytes.set(bytes);
        true
    }
}

#[cfg(not(loom))]
impl Drop for Cache {
    fn drop(&mut self) {
        for (class, list) in self.lists.iter().enumerate() {
            while let Some(block) = self.pop(class, class_layout(class).size()) {
                // SAFETY: a listed block was allocated by the global
                // allocator with its list's layout, and popping it made it
                // ours alone.
                unsafe { std::alloc::dealloc(block.as_ptr(), class_layout(class)) };
            }
            debug_assert!(list.get().is_null());
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_freed_block_is_reused_by_the_next_allocation_of_its_layout() {
        std::thread::spawn(|| {
            let layout = Layout::from_size_align(120, 8).unwrap();
            let first = allocate(layout);
            // SAFETY: from `allocate` with `layout`, unused.
            unsafe { free(first, layout) };
            assert_eq!(CACHE.with(|cache| cache.bytes.get()), 120);
            // Another size does not take it.
            let other = Layout::from_size_align(64, 8).unwrap();
            let second = allocate(other);
            assert_ne!(second, first);
            assert_eq!(allocate(layout), first);
            assert_eq!(CACHE.with(|cache| cache.bytes.get()), 0);
            // SAFETY: from `allocate` with these layouts, unused.
            unsafe {
                free(second, other);
                free(first, layout);
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_cache_is_bounded() {
        std::thread::spawn(|| {
            let layout = Layout::from_size_align(MAX_CACHED_SIZE, 8).unwrap();
            let count = MAX_CACHED_BYTES / MAX_CACHED_SIZE + 10;
            let blocks: Vec<_> = (0..count).map(|_| allocate(layout)).collect();
            for block in blocks {
                // SAFETY: from `allocate` with `layout`, unused.
                unsafe { free(block, layout) };
            }
            assert_eq!(CACHE.with(|cache| cache.bytes.get()), MAX_CACHED_BYTES);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn other_layouts_are_not_cached() {
        assert_eq!(class_of(Layout::from_size_align(32, 16).unwrap()), None);
        assert_eq!(
            class_of(Layout::from_size_align(MAX_CACHED_SIZE + 8, 8).unwrap()),
            None
        );
        assert_eq!(class_of(Layout::from_size_align(12, 8).unwrap()), None);
        assert_eq!(class_of(Layout::from_size_align(8, 8).unwrap()), Some(0));
        assert_eq!(class_of(Layout::from_size_align(16, 8).unwrap()), Some(1));
    }
}
