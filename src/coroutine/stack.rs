//! Guarded coroutine stacks, carved from large slab mappings and pooled per
//! thread.
//!
//! A coroutine stack is a *slot* in a *slab*: one big `mmap` reservation
//! (`MAP_NORESERVE`, so untouched pages cost nothing) cut into equal slots.
//! Each slot's lowest page is a guard; the stack grows down from the top of
//! the slot towards it.
//!
//! ```text
//!  slab (one mapping, 16 .. 32768 slots)
//!  ┌───────┬──────────────────┬───────┬──────────────────┬─────┬───────┬──────────────────┐
//!  │ guard │   usable stack   │ guard │   usable stack   │ ... │ guard │   usable stack   │
//!  └───────┴──────────────────┴───────┴──────────────────┴─────┴───────┴──────────────────┘
//!  ▲                          ▲                                                           ▲
//!  slot 0 limit()             slot 0 base() (stack top; grows ◄── towards its guard)
//!                             = slot 1 limit()                               last base()
//!
//!  per thread, per usable size:
//!   SizeClass ── available: [slab, slab, ...]   slabs with a free slot (top = used first)
//!             ── spare: Option<slab>            the one fully-free slab kept mapped
//!   Slab      ── free: Vec<u32>                 LIFO list of released slots (warm, guarded)
//!             ── fresh: u32                     slots >= fresh never handed out, unguarded
//! ```
//!
//! Rules:
//!
//! - **Guards.** A slot's guard is installed the first time the slot is handed
//!   out (one syscall, then remembered: every slot below `fresh` is guarded).
//!   On Linux 6.13+ it is a page-table guard marker
//!   (`madvise(MADV_GUARD_INSTALL)`), which does not split the mapping, so a
//!   million guarded stacks fit in a few dozen mappings. Elsewhere, or with
//!   `NIMGO_STACK_GUARD=mprotect`, it is `mprotect(PROT_NONE)`, which costs
//!   two kernel mappings per stack against `vm.max_map_count` (65530 by
//!   default). See [`guard_mode`]. One guard page suffices because Rust emits
//!   stack probes for frames larger than a page.
//! - **Reuse is warm and free.** Releasing a stack pushes its slot on the
//!   slab's free list; taking one pops it. Neither makes a syscall or discards
//!   the memory, so a loop that takes and returns a stack costs a few
//!   nanoseconds per round.
//! - **One warm stack at hand.** The pool keeps the last released stack of
//!   the thread's default size ([`default_stack_size`], taken with
//!   [`GuardedStack::new_default`]) aside, in a
//!   one-entry cache, and hands it out first: a task that starts, finishes
//!   and gives its stack back before the next one starts (the common case)
//!   touches no slab, no size class and no free list. The cached stack is
//!   the most recently released one, so reuse stays last-in first-out
//!   across the cache and the free lists (a release into a full cache
//!   sends the older stack to its slab's free list). It is a slot like any
//!   other handed-out one: its guard stays installed, its slab counts it as
//!   live (so that slab is not unmapped while the slot is cached) and its
//!   overflow label is rewritten by whoever takes it next. A release that
//!   would leave the cached stack the only live slot of its slab, and that
//!   slab is not the size class's spare (kept mapped anyway), gives both
//!   back to the slab instead, so the cache does not keep a second free
//!   slab mapped. [`stack_stats`] does not count it as live.
//! - **Growth.** Slabs for one (thread, size) grow geometrically: 16 slots,
//!   then twice the last, up to 32768. If `mmap` fails with `ENOMEM` the slab
//!   is retried with half the slots, down to one.
//! - **Hysteresis.** A size class keeps at most one fully free slab mapped.
//!   When a second becomes fully free, the smaller of the two is unmapped.
//! - **Ownership.** The pool is thread-local and [`GuardedStack`] is `!Send`.
//!   A stack holds an `Rc` to its slab, so a slab outlives the pool if the
//!   thread's locals are destroyed first; it is unmapped when its last user
//!   goes.
//! - **Overflow report.** Every slab is entered in the process-wide registry
//!   of [`crate::sys::signal`], whose `SIGSEGV` handler recognises a fault in
//!   a guard page and prints which coroutine overflowed (invariant 6).
//! - **Errors** a user can hit (out of address space, out of kernel mappings)
//!   are `io::Error`s that name the limit and what to raise; nothing here
//!   panics on them.

// The scheduler that uses these items is written in another tree; until the
// two meet, the crate itself uses only part of this module.

use std::cell::{Cell, RefCell};
use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::rc::Rc;

use corosensei::stack::{Stack, StackPointer};

use super::default_stack_size;
use crate::sys::{memory, signal};

/// The default usable size of a coroutine stack: 512 KiB.
///
/// - Rust frames are large (inlining, by-value arrays and structs, formatting
///   machinery): `may`'s 32 KiB default overflows in ordinary code, such as
///   a `println!` under a few layers of generic calls or a TLS handshake.
/// - Recursion must have room: the smallest non-leaf frame is 32 bytes in an
///   optimised build (return address, saved register, alignment; measured),
///   so 10,000 levels take 320 KB, more than a 256 KiB stack holds. 512 KiB
///   leaves 60% headroom. Unoptimised builds use about 2.5 times larger
///   frames (80 bytes for the same function): deep recursion in debug builds
///   may need [`set_default_stack_size`](super::set_default_stack_size).
/// - Virtual space is free: slabs are mapped with `MAP_NORESERVE`, so only the
///   pages a coroutine touches cost memory (one 4 KiB page for a coroutine
///   that parks shallowly).
/// - Page tables are the real cost of a larger slot: one 4 KiB page-table
///   page maps 2 MiB, so a coroutine that touches one page of a 512 KiB slot
///   costs about 1 KiB of page tables (256 KiB: 512 bytes; 1 MiB: 2 KiB).
///   512 KiB is the largest size that keeps this under a quarter of the
///   stack page itself.
///
/// Sizes are rounded up to whole pages, with a minimum of 16 KiB usable, plus
/// one guard page per stack.
pub const DEFAULT_STACK_SIZE: usize = 512 * 1024;

/// The smallest usable stack handed out.
pub(crate) const MIN_STACK_SIZE: usize = 16 * 1024;

const FIRST_SLAB_SLOTS: usize = 16;
const MAX_SLAB_SLOTS: usize = 32768;

/// How guard pages are made, chosen once per process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuardMode {
    /// `madvise(MADV_GUARD_INSTALL)` page-table markers (Linux 6.13+): no
    /// extra kernel mapping per stack.
    GuardMarkers,
    /// `mprotect(PROT_NONE)` on the guard page: two kernel mappings per stack,
    /// counted against `vm.max_map_count`. Used on older kernels, or when the
    /// environment variable `NIMGO_STACK_GUARD=mprotect` is set at start-up.
    Mprotect,
}

/// The process-wide guard mode (detected on first use, then fixed).
pub fn guard_mode() -> GuardMode {
    if memory::guard_markers() {
        GuardMode::GuardMarkers
    } else {
        GuardMode::Mprotect
    }
}

/// Coroutine-stack usage of the calling thread, from [`stack_stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StackStats {
    /// Slab mappings this thread holds (each holds many stacks). In
    /// [`GuardMode::Mprotect`] every stack handed out since the slab was
    /// mapped adds two more kernel mappings.
    pub slabs: usize,
    /// Stacks currently in use by coroutines of this thread.
    pub live_stacks: usize,
    /// How guard pages are made in this process.
    pub guard_mode: GuardMode,
    /// Address space reserved by this thread's slabs, in bytes (not memory
    /// used: only touched pages are).
    pub reserved_bytes: usize,
}

/// Coroutine-stack usage of the calling thread.
///
/// ```
/// use nimgo::coroutine::{stack_stats, GuardMode};
///
/// let stats = stack_stats();
/// println!(
///     "{} live stacks in {} slabs, {} bytes reserved, guards: {:?}",
///     stats.live_stacks, stats.slabs, stats.reserved_bytes, stats.guard_mode,
/// );
/// assert!(matches!(stats.guard_mode, GuardMode::GuardMarkers | GuardMode::Mprotect));
/// ```
pub fn stack_stats() -> StackStats {
    let (slabs, live_stacks, reserved_bytes) = STATS
        .try_with(|s| (s.slabs.get(), s.live.get(), s.reserved.get()))
        .unwrap_or((0, 0, 0));
    StackStats {
        slabs,
        live_stacks,
        guard_mode: guard_mode(),
        reserved_bytes,
    }
}

/// Per-thread counters. No destructor, so they stay readable while the
/// thread's other locals are being destroyed.
struct ThreadStats {
    slabs: Cell<usize>,
    live: Cell<usize>,
    reserved: Cell<usize>,
}

thread_local! {
    static STATS: ThreadStats = const {
        ThreadStats { slabs: Cell::new(0), live: Cell::new(0), reserved: Cell::new(0) }
    };
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool { ready: false, cached: None, classes: Vec::new() })
    };
}

fn live_on_this_thread() -> usize {
    STATS.try_with(|s| s.live.get()).unwrap_or(0)
}

/// One slab mapping: `slots` slots of `slot_size` bytes, guard at the bottom
/// of each.
struct Slab {
    base: NonNull<u8>,
    len: usize,
    slot_size: usize,
    guard_size: usize,
    slots: u32,
    /// Slots `fresh..slots` have never been handed out and have no guard yet.
    fresh: Cell<u32>,
    /// Released slots, most recent last (taken first: its pages are warm).
    free: RefCell<Vec<u32>>,
    /// Slots handed out and not yet released.
    live: Cell<u32>,
    /// Whether the slab is in its size class's `available` list.
    in_available: Cell<bool>,
    /// Whether the slab is its size class's `spare`.
    is_spare: Cell<bool>,
    registry: Option<signal::RegistryIndex>,
}

impl Slab {
    fn new(usable: usize, slots: usize) -> io::Result<Rc<Slab>> {
        let guard_size = memory::page_size();
        let slot_size = usable + guard_size;
        let len = slot_size.checked_mul(slots).ok_or_else(too_large)?;
        let base = memory::reserve(len)?;
        let registry = signal::register_slab(signal::SlabInfo {
            base: base.as_ptr() as usize,
            len,
            slot_size,
            guard_size,
            usable,
        });
        let _ = STATS.try_with(|s| {
            s.slabs.set(s.slabs.get() + 1);
            s.reserved.set(s.reserved.get() + len);
        });
        Ok(Rc::new(Slab {
            base,
            len,
            slot_size,
            guard_size,
            slots: slots as u32,
            fresh: Cell::new(0),
            free: RefCell::new(Vec::new()),
            live: Cell::new(0),
            in_available: Cell::new(false),
            is_spare: Cell::new(false),
            registry,
        }))
    }

    fn usable(&self) -> usize {
        self.slot_size - self.guard_size
    }

    fn has_capacity(&self) -> bool {
        self.fresh.get() < self.slots || !self.free.borrow().is_empty()
    }

    fn slot(&self, index: u32) -> NonNull<u8> {
        // SAFETY: `index < slots`, so the offset stays inside the mapping.
        unsafe { self.base.add(index as usize * self.slot_size) }
    }

    /// Hands out a slot: the most recently released one, else a fresh one
    /// (whose guard is installed now).
    fn take_slot(&self) -> io::Result<u32> {
        let index = match self.free.borrow_mut().pop() {
            Some(index) => index,
            None => {
                let index = self.fresh.get();
                debug_assert!(index < self.slots);
                self.install_guard(index)?;
                self.fresh.set(index + 1);
                index
            }
        };
        self.live.set(self.live.get() + 1);
        Ok(index)
    }

    fn install_guard(&self, index: u32) -> io::Result<()> {
        let guard = self.slot(index);
        let result = match guard_mode() {
            // SAFETY: slot `index` has never been handed out, so nothing
            // references its guard page.
            GuardMode::GuardMarkers => unsafe {
                memory::install_guard_markers(guard, self.guard_size)
            },
            // SAFETY: as above.
            GuardMode::Mprotect => unsafe { memory::protect_none(guard, self.guard_size) },
        };
        result.map_err(|e| guard_error(e, self.usable()))
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        if let Some(index) = self.registry.take() {
            signal::unregister_slab(index);
        }
        // SAFETY: every stack holds an `Rc` to its slab, so none is left: no
        // coroutine runs on this memory any more.
        let _ = unsafe { memory::unmap(self.base, self.len) };
        let _ = STATS.try_with(|s| {
            s.slabs.set(s.slabs.get() - 1);
            s.reserved.set(s.reserved.get() - self.len);
        });
    }
}

/// The slabs of one usable stack size on one thread.
struct SizeClass {
    usable: usize,
    /// Slabs with at least one free slot; the last is used first.
    available: Vec<Rc<Slab>>,
    /// The last slab that became fully free (also in `available`). It may
    /// have been taken from since: checked when another one becomes free, so
    /// the take/return fast path never touches it.
    spare: Option<Rc<Slab>>,
    /// Slots in the next slab to map.
    next_slots: usize,
}

impl SizeClass {
    /// Maps a new slab, halving its slot count on `ENOMEM`.
    fn grow(&mut self) -> io::Result<Rc<Slab>> {
        let mut slots = self.next_slots;
        loop {
            match Slab::new(self.usable, slots) {
                Ok(slab) => {
                    self.next_slots = (slots * 2).min(MAX_SLAB_SLOTS);
                    slab.in_available.set(true);
                    self.available.push(Rc::clone(&slab));
                    return Ok(slab);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && slots > 1 => slots /= 2,
                Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => {
                    return Err(reserve_error(self.usable));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn take(&mut self) -> io::Result<GuardedStack> {
        let slab = match self.available.last() {
            Some(slab) => Rc::clone(slab),
            None => self.grow()?,
        };
        let index = slab.take_slot()?;
        if !slab.has_capacity() {
            let top = self.available.pop();
            debug_assert!(top.is_some_and(|top| Rc::ptr_eq(&top, &slab)));
            slab.in_available.set(false);
        }
        let _ = STATS.try_with(|s| s.live.set(s.live.get() + 1));
        let top = slab.slot(index).as_ptr() as usize + slab.slot_size;
        Ok(GuardedStack {
            slab: Some(slab),
            index,
            cacheable: false,
            top,
        })
    }

    /// Bookkeeping after a slot of `slab` was released, when the slab was full
    /// or has become fully free.
    fn released(&mut self, slab: &Rc<Slab>) {
        if !slab.in_available.get() {
            slab.in_available.set(true);
            self.available.push(Rc::clone(slab));
        }
        if slab.live.get() != 0 {
            return;
        }
        match &self.spare {
            Some(spare) if Rc::ptr_eq(spare, slab) => {}
            Some(other) if other.live.get() == 0 => {
                other.is_spare.set(false);
                let other = Rc::clone(other);
                // Two fully free slabs: keep the larger, unmap the other.
                let (keep, unmap) = if other.slots >= slab.slots {
                    (other, Rc::clone(slab))
                } else {
                    (Rc::clone(slab), other)
                };
                if let Some(pos) = self.available.iter().position(|s| Rc::ptr_eq(s, &unmap)) {
                    self.available.remove(pos);
                }
                unmap.in_available.set(false);
                keep.is_spare.set(true);
                self.spare = Some(keep);
            }
            other => {
                if let Some(other) = other {
                    other.is_spare.set(false);
                }
                slab.is_spare.set(true);
                self.spare = Some(Rc::clone(slab));
            }
        }
    }
}

/// The calling thread's stack pool.
struct Pool {
    /// Whether this thread has set up the overflow report (handler, alt
    /// stack).
    ready: bool,
    /// The last released stack of the thread's default size, handed out
    /// first (see the module docs).
    cached: Option<Idle>,
    /// One entry per usable size in use; a short list, scanned linearly.
    classes: Vec<SizeClass>,
}

/// A handed-out slot that no coroutine uses: the pool's cached stack. Its
/// slab counts it as live. Dropping it (only when the pool itself goes, at
/// thread exit) just lets go of the slab, which is unmapped with its last
/// `Rc`.
struct Idle {
    slab: Rc<Slab>,
    index: u32,
    top: usize,
    usable: usize,
}

impl Pool {
    #[inline]
    fn class(&mut self, usable: usize) -> &mut SizeClass {
        let pos = match self.classes.iter().position(|c| c.usable == usable) {
            Some(pos) => pos,
            None => {
                self.classes.push(SizeClass {
                    usable,
                    available: Vec::new(),
                    spare: None,
                    next_slots: FIRST_SLAB_SLOTS,
                });
                self.classes.len() - 1
            }
        };
        &mut self.classes[pos]
    }
}

/// A coroutine stack: one guarded slot of a slab from the calling thread's
/// pool, returned to the pool on drop.
///
/// `!Send` (it holds an `Rc` to its slab): a coroutine never leaves the
/// thread that started it, and neither does its stack.
pub(crate) struct GuardedStack {
    /// `None` only once `drop` has given the slot back.
    slab: Option<Rc<Slab>>,
    index: u32,
    /// Taken by [`new_default`](Self::new_default): cached when dropped.
    cacheable: bool,
    /// Highest address of the slot (cached: corosensei asks for the base on
    /// every resume).
    top: usize,
}

impl GuardedStack {
    /// Takes a stack with at least `usable_size` usable bytes (rounded up to
    /// whole pages, at least 16 KiB) from this thread's pool.
    ///
    /// The first call in the process installs the overflow handler; the first
    /// on each thread gives the thread an alternate signal stack if it has
    /// none.
    pub(crate) fn new(usable_size: usize) -> io::Result<GuardedStack> {
        Self::take(usable_for(usable_size)?, false)
    }

    /// [`new`](Self::new) for the thread's default size
    /// ([`default_stack_size`]): the stack goes to the pool's one-entry
    /// cache when dropped (see the module docs).
    #[inline]
    pub(crate) fn new_default() -> io::Result<GuardedStack> {
        let request = default_stack_size();
        let usable = usable_for(request)?;
        let cached = POOL
            .try_with(|pool| {
                let mut pool = pool.try_borrow_mut().ok()?;
                pool.cached.take_if(|idle| idle.usable == usable)
            })
            .ok()
            .flatten();
        match cached {
            Some(idle) => {
                let _ = STATS.try_with(|s| s.live.set(s.live.get() + 1));
                Ok(GuardedStack {
                    slab: Some(idle.slab),
                    index: idle.index,
                    cacheable: true,
                    top: idle.top,
                })
            }
            None => Self::take(usable, true),
        }
    }

    /// Takes a stack of `usable` bytes (rounded already) from the pool.
    fn take(usable: usize, cacheable: bool) -> io::Result<GuardedStack> {
        POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if !pool.ready {
                pool.ready = true;
                signal::install_overflow_handler();
                signal::ensure_alt_stack();
            }
            let mut stack = pool.class(usable).take()?;
            stack.cacheable = cacheable;
            Ok(stack)
        })
        .unwrap_or_else(|_| {
            Err(io::Error::other(
                "nimgo: cannot create a coroutine stack while this thread is exiting",
            ))
        })
    }

    /// Usable bytes between the guard page and the top of the stack.
    pub(crate) fn usable_size(&self) -> usize {
        self.slab().usable()
    }

    fn slab(&self) -> &Slab {
        self.slab
            .as_deref()
            .expect("a stack holds its slab until dropped")
    }

    /// Writes the label an overflow report names the slot's coroutine by
    /// (see [`signal::LABEL_SIZE`]).
    pub(crate) fn set_label(&mut self, label: u64) {
        let word = (self.top - 8) as *mut u64;
        // SAFETY: `top - 8 .. top` is the highest word of this slot's usable,
        // read/write memory, 8-aligned (slots are page aligned), and this
        // stack owns the slot exclusively; the label area lies above
        // `base()`, so no coroutine frame ever overlaps it.
        unsafe { word.write(label) };
    }
}

impl Drop for GuardedStack {
    fn drop(&mut self) {
        let Some(slab) = self.slab.take() else {
            return;
        };
        let _ = STATS.try_with(|s| s.live.set(s.live.get() - 1));
        let mut idle = Some(Idle {
            usable: slab.usable(),
            slab,
            index: self.index,
            top: self.top,
        });
        // A second stack to give back: the cached one, when caching this
        // one would leave it the only live slot of its slab.
        let mut flushed = None;
        if self.cacheable {
            // If the pool is gone (thread exit), this one goes to its slab.
            let _ = POOL.try_with(|pool| {
                let mut pool = pool.borrow_mut();
                let slab = &idle.as_ref().expect("set just above").slab;
                let cached_here = pool
                    .cached
                    .as_ref()
                    .is_some_and(|cached| Rc::ptr_eq(&cached.slab, slab));
                // Live slots of this slab besides this one and the cached one.
                let others = slab.live.get() - 1 - u32::from(cached_here);
                if others > 0 || slab.is_spare.get() {
                    // Cache it; the stack cached before goes back to its slab.
                    idle = std::mem::replace(&mut pool.cached, idle.take());
                } else if cached_here {
                    // Released together, the slab becomes fully free: kept
                    // as the spare or unmapped (hysteresis). Either one
                    // cached would keep it mapped, and its touched pages
                    // resident, for nothing.
                    flushed = pool.cached.take();
                }
            });
        }
        // The older first: this one, released last, is reused first.
        for idle in [flushed, idle].into_iter().flatten() {
            release(&idle.slab, idle.index);
        }
    }
}

/// The usable size of a stack asked for with `usable_size` bytes: whole
/// pages, at least [`MIN_STACK_SIZE`].
#[inline]
fn usable_for(usable_size: usize) -> io::Result<usize> {
    // Page sizes are powers of two (`memory::page_size` checks).
    let page_mask = memory::page_size() - 1;
    Ok(usable_size
        .max(MIN_STACK_SIZE)
        .checked_add(page_mask)
        .ok_or_else(too_large)?
        & !page_mask)
}

/// Gives slot `index` back to `slab`'s free list (not counted in the stats:
/// the caller did that when the stack stopped being used).
fn release(slab: &Rc<Slab>, index: u32) {
    slab.free.borrow_mut().push(index);
    slab.live.set(slab.live.get() - 1);
    if !slab.in_available.get() || (slab.live.get() == 0 && !slab.is_spare.get()) {
        // If the pool is gone (thread exit), the slab alone keeps the
        // slot, and is unmapped with its last stack.
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            pool.class(slab.usable()).released(slab);
        });
    }
}

impl std::fmt::Debug for GuardedStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStack")
            .field("limit", &format_args!("{:#x}", self.limit()))
            .field("base", &format_args!("{:#x}", self.base()))
            .field("usable_size", &self.usable_size())
            .finish()
    }
}

// SAFETY: `limit()..base()` is one slot of a live mapping that the `Rc` keeps
// mapped as long as this value exists (the `Option` is `Some` until drop),
// handed out to no one else until drop (the pool's cache holds only slots
// whose stack was dropped).
// Its lowest page is a guard (installed before the slot was first handed out,
// and neither guard markers nor mprotect are undone while the slab is
// mapped), and above it are at least 16 KiB (MIN_STACK_SIZE >= corosensei's
// 4096) of read/write memory. The limit is page aligned and the base is the
// slot's page-aligned top less the 16-byte label area, so both are 16-byte
// aligned.
unsafe impl Stack for GuardedStack {
    #[inline]
    fn base(&self) -> StackPointer {
        NonZeroUsize::new(self.top - signal::LABEL_SIZE).expect("a slot's top is not null")
    }

    #[inline]
    fn limit(&self) -> StackPointer {
        NonZeroUsize::new(self.slab().slot(self.index).as_ptr() as usize)
            .expect("a mapped slot is not at address 0")
    }
}

fn too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "nimgo: the requested coroutine stack size is too large for the address space",
    )
}

/// `mmap` gave `ENOMEM` even for a one-slot slab.
fn reserve_error(usable: usize) -> io::Error {
    let bytes = usable + memory::page_size();
    io::Error::new(
        io::ErrorKind::OutOfMemory,
        format!(
            "nimgo: could not reserve {bytes} bytes of address space for a coroutine stack \
             ({live} coroutine stacks of this size class and others are live on this thread, \
             {usable} usable bytes each requested); lower the stack size \
             (nimgo::coroutine::set_default_stack_size or Builder::stack_size) or raise the \
             memory limits (`ulimit -v`, `vm.overcommit_memory`)",
            live = live_on_this_thread(),
        ),
    )
}

/// Installing a guard failed.
fn guard_error(err: io::Error, usable: usize) -> io::Error {
    if err.raw_os_error() != Some(libc::ENOMEM) {
        return err;
    }
    let live = live_on_this_thread();
    match guard_mode() {
        GuardMode::Mprotect => {
            let limit = std::fs::read_to_string("/proc/sys/vm/max_map_count")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".to_owned());
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "nimgo: the process reached the kernel's vm.max_map_count limit (currently \
                     {limit}) while guarding a coroutine stack ({live} coroutine stacks are live \
                     on this thread; each guarded stack costs two kernel mappings on this \
                     kernel); raise it with `sysctl -w vm.max_map_count=N` or run Linux 6.13+ \
                     where guards need no extra mappings"
                ),
            )
        }
        GuardMode::GuardMarkers => io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!(
                "nimgo: the kernel ran out of memory installing the guard page of a \
                 {usable}-byte coroutine stack ({live} coroutine stacks are live on this \
                 thread); lower the stack size or the number of coroutines, or free memory"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hint::black_box;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Output};
    use std::time::Instant;

    /// Runs `f` on a fresh thread, so it sees an empty pool and zero stats.
    fn on_fresh_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
        std::thread::spawn(f).join().unwrap()
    }

    fn page() -> usize {
        memory::page_size()
    }

    fn maps_count() -> usize {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .count()
    }

    #[test]
    fn sizes_are_rounded_and_aligned() {
        on_fresh_thread(|| {
            let tiny = GuardedStack::new(1).unwrap();
            assert_eq!(tiny.usable_size(), MIN_STACK_SIZE);
            let odd = GuardedStack::new(MIN_STACK_SIZE + 1).unwrap();
            assert_eq!(odd.usable_size(), MIN_STACK_SIZE + page());
            let default = GuardedStack::new(DEFAULT_STACK_SIZE).unwrap();
            assert_eq!(default.usable_size(), DEFAULT_STACK_SIZE);
            for s in [&tiny, &odd, &default] {
                let (base, limit) = (s.base().get(), s.limit().get());
                assert_eq!(
                    (base + signal::LABEL_SIZE) % page(),
                    0,
                    "the slot top is page aligned"
                );
                assert_eq!(base % corosensei::stack::STACK_ALIGNMENT, 0);
                assert_eq!(limit % page(), 0);
                assert_eq!(
                    base + signal::LABEL_SIZE - limit,
                    s.usable_size() + page(),
                    "limit includes the guard, base leaves room for the label"
                );
                assert!(signal::is_registered_guard(limit));
                assert!(signal::is_registered_guard(limit + page() - 1));
                assert!(!signal::is_registered_guard(limit + page()));
                assert!(!signal::is_registered_guard(base - 1));
            }
            assert!(GuardedStack::new(usize::MAX).is_err());
        });
    }

    #[test]
    fn the_cached_stack_never_keeps_a_second_free_slab_mapped() {
        on_fresh_thread(|| {
            // Slabs of 16 and 32 slots.
            let mut stacks: Vec<_> = (0..48)
                .map(|_| GuardedStack::new_default().unwrap())
                .collect();
            let first_slab: Vec<_> = stacks.drain(..16).collect();
            // The 32-slot slab becomes fully free: the spare.
            drop(stacks);
            // The last of these would be cached, pinning the 16-slot slab.
            drop(first_slab);
            assert_eq!(stack_stats().live_stacks, 0);
            assert_eq!(stack_stats().slabs, 1);
            // The spare's stacks are still cached and reused.
            let again = GuardedStack::new_default().unwrap();
            drop(again);
            assert_eq!(stack_stats().slabs, 1);
        });
    }

    #[test]
    fn reuse_is_lifo_and_warm() {
        on_fresh_thread(|| {
            let a = GuardedStack::new(DEFAULT_STACK_SIZE).unwrap();
            let b = GuardedStack::new(DEFAULT_STACK_SIZE).unwrap();
            let c = GuardedStack::new(DEFAULT_STACK_SIZE).unwrap();
            let (b_limit, c_limit) = (b.limit(), c.limit());
            let mark = (b.base().get() - 8) as *mut u64;
            // SAFETY: the top word of `b`'s usable stack is mapped read/write
            // and nothing else uses `b`.
            unsafe { mark.write(0xfeed) };
            drop(b);
            drop(c);
            // Last released, first reused.
            let c2 = GuardedStack::new(DEFAULT_STACK_SIZE).unwrap();
            assert_eq!(c2.limit(), c_limit);
            let b2 = GuardedStack::new(DEFAULT_STACK_SIZE).unwrap();
            assert_eq!(b2.limit(), b_limit);
            // Warm: nothing was discarded on release.
            // SAFETY: `b2` is the same slot, still mapped read/write.
            assert_eq!(unsafe { mark.read() }, 0xfeed);
            assert_eq!(stack_stats().slabs, 1);
            drop((a, b2, c2));
        });
    }

    #[test]
    fn the_last_default_stack_is_cached_and_reuse_stays_lifo() {
        on_fresh_thread(|| {
            let a = GuardedStack::new_default().unwrap();
            let b = GuardedStack::new_default().unwrap();
            let (a_limit, b_limit) = (a.limit(), b.limit());
            assert_eq!(stack_stats().live_stacks, 2);
            drop(a);
            // Cached: not counted as live, and nothing is unmapped.
            assert_eq!(stack_stats().live_stacks, 1);
            drop(b);
            // `b` replaced `a` in the cache; `a` went back to its slab.
            assert_eq!(stack_stats().live_stacks, 0);
            assert_eq!(stack_stats().slabs, 1);
            // A stack of another size is not taken from the cache.
            let other = GuardedStack::new(MIN_STACK_SIZE).unwrap();
            assert_ne!(other.limit(), b_limit);
            // Last released, first reused: the cache, then the free list.
            let b2 = GuardedStack::new_default().unwrap();
            assert_eq!(b2.limit(), b_limit);
            let a2 = GuardedStack::new_default().unwrap();
            assert_eq!(a2.limit(), a_limit);
            assert_eq!(b2.usable_size(), DEFAULT_STACK_SIZE);
            assert_eq!(stack_stats().live_stacks, 3);
            drop((other, a2, b2));
            assert_eq!(stack_stats().live_stacks, 0);
            // A take-and-return loop reuses the one cached stack.
            for _ in 0..1000 {
                let stack = black_box(GuardedStack::new_default().unwrap());
                assert_eq!(stack.limit(), b_limit);
            }
        });
    }

    #[test]
    fn a_new_default_size_is_not_served_from_the_cache() {
        on_fresh_thread(|| {
            drop(GuardedStack::new_default().unwrap());
            super::super::set_default_stack_size(64 * 1024);
            let small = GuardedStack::new_default().unwrap();
            assert_eq!(small.usable_size(), 64 * 1024);
            drop(small);
            let again = GuardedStack::new_default().unwrap();
            assert_eq!(again.usable_size(), 64 * 1024);
        });
    }

    #[test]
    fn stats_are_right() {
        on_fresh_thread(|| {
            let usable = 32 * 1024;
            let slot = usable + page();
            assert_eq!(stack_stats().live_stacks, 0);
            assert_eq!(stack_stats().slabs, 0);
            let mut stacks: Vec<_> = (0..16)
                .map(|_| GuardedStack::new(usable).unwrap())
                .collect();
            let s = stack_stats();
            assert_eq!(
                (s.live_stacks, s.slabs, s.reserved_bytes),
                (16, 1, 16 * slot)
            );
            assert_eq!(s.guard_mode, guard_mode());
            stacks.push(GuardedStack::new(usable).unwrap());
            let s = stack_stats();
            assert_eq!(
                (s.live_stacks, s.slabs, s.reserved_bytes),
                (17, 2, 48 * slot)
            );
            // Another size gets its own slabs.
            let other = GuardedStack::new(usable * 2).unwrap();
            assert_eq!(stack_stats().slabs, 3);
            drop(other);
            drop(stacks);
            let s = stack_stats();
            assert_eq!(s.live_stacks, 0);
            // Per size one spare stays: the 32-slot slab, and the other size's.
            assert_eq!(
                (s.slabs, s.reserved_bytes),
                (2, 32 * slot + 16 * (2 * usable + page()))
            );
        });
    }

    #[test]
    fn fully_free_slab_past_the_spare_is_unmapped() {
        on_fresh_thread(|| {
            let usable = MIN_STACK_SIZE;
            // Fill slabs of 16, 32 and 64 slots.
            let mut stacks: Vec<_> = (0..16 + 32 + 1)
                .map(|_| GuardedStack::new(usable).unwrap())
                .collect();
            assert_eq!(stack_stats().slabs, 3);
            let first_slab_guard = stacks[0].limit().get();
            // Free the 16-slot slab: it becomes the spare, still mapped.
            let rest = stacks.split_off(16);
            drop(stacks);
            assert_eq!(stack_stats().slabs, 3);
            // Free the 32-slot slab: two spares, the smaller goes.
            let mut rest = rest;
            let last = rest.split_off(32);
            drop(rest);
            assert_eq!(stack_stats().slabs, 2);
            // The 16-slot slab was the one unmapped (and unregistered).
            assert!(!signal::is_registered_guard(first_slab_guard));
            // Free the 64-slot slab: it is kept and the 32-slot one goes.
            drop(last);
            let s = stack_stats();
            assert_eq!((s.slabs, s.reserved_bytes), (1, 64 * (usable + page())));
            // Taking and returning one stack now maps and unmaps nothing.
            for _ in 0..1000 {
                drop(black_box(GuardedStack::new(usable).unwrap()));
                assert_eq!(stack_stats().slabs, 1);
            }
        });
    }

    #[test]
    fn many_live_stacks_take_few_mappings() {
        if guard_mode() == GuardMode::Mprotect {
            eprintln!("mprotect guards: two mappings per stack; skipped");
            return;
        }
        on_fresh_thread(|| {
            let before = maps_count();
            let stacks: Vec<_> = (0..100_000)
                .map(|_| GuardedStack::new(MIN_STACK_SIZE).unwrap())
                .collect();
            let after = maps_count();
            let s = stack_stats();
            eprintln!(
                "100k live stacks: {} slabs, {} extra mappings, {} MiB reserved",
                s.slabs,
                after.saturating_sub(before),
                s.reserved_bytes >> 20
            );
            assert_eq!(s.live_stacks, 100_000);
            assert!(s.slabs < 20, "{} slabs", s.slabs);
            assert!(after < before + 100, "{before} -> {after} mappings");
            drop(stacks);
            assert_eq!(stack_stats().slabs, 1);
        });
    }

    #[test]
    fn stacks_run_coroutines() {
        on_fresh_thread(|| {
            let stack = GuardedStack::new(DEFAULT_STACK_SIZE).unwrap();
            let mut co = corosensei::Coroutine::with_stack(stack, |y, n: u64| {
                let big = black_box([1u8; 64 * 1024]);
                let n = y.suspend(n + u64::from(big[100]));
                n * 2
            });
            assert!(matches!(
                co.resume(41),
                corosensei::CoroutineResult::Yield(42)
            ));
            assert!(matches!(
                co.resume(5),
                corosensei::CoroutineResult::Return(10)
            ));
            let stack = co.into_stack();
            assert_eq!(stack_stats().live_stacks, 1);
            drop(stack);
            assert_eq!(stack_stats().live_stacks, 0);
        });
    }

    // --- The guard, proven in a child process -------------------------------

    /// Set in the child: which overflow to commit.
    const CHILD_ENV: &str = "NIMGO_STACK_TEST_CHILD";

    fn recurse(depth: u64) -> u64 {
        let frame = black_box([depth as u8; 512]);
        if black_box(depth) == u64::MAX {
            return 0;
        }
        recurse(depth + 1) + u64::from(frame[(depth % 512) as usize])
    }

    /// Reruns the test `name` in a child process with `CHILD_ENV` set.
    fn run_child(name: &str, env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", name, "--nocapture", "--test-threads=1"]);
        cmd.env(CHILD_ENV, "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        eprintln!(
            "child {name}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn overflow_a_coroutine(expect: GuardMode) -> ! {
        assert_eq!(guard_mode(), expect);
        let mut stack = GuardedStack::new(64 * 1024).unwrap();
        stack.set_label(4242);
        let mut co =
            corosensei::Coroutine::with_stack(stack, |_: &corosensei::Yielder<(), ()>, ()| {
                recurse(0)
            });
        co.resume(());
        unreachable!("the coroutine overflowed without a fault");
    }

    fn assert_coroutine_overflow_report(out: &Output) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{stderr}");
        assert!(stderr.contains("has overflowed the stack of nimgo coroutine 4242"));
        assert!(stderr.contains("(stack size 65536 bytes)"));
        assert!(stderr.contains("fatal runtime error: stack overflow"));
    }

    #[test]
    fn coroutine_overflow_is_reported() {
        if std::env::var_os(CHILD_ENV).is_some() {
            overflow_a_coroutine(memory_default_mode());
        }
        let out = run_child(
            "coroutine::stack::tests::coroutine_overflow_is_reported",
            &[],
        );
        assert_coroutine_overflow_report(&out);
    }

    /// The mode a child gets without the switch (the parent's, unless the
    /// parent itself was forced).
    fn memory_default_mode() -> GuardMode {
        guard_mode()
    }

    #[test]
    fn coroutine_overflow_is_reported_with_mprotect_guards() {
        if std::env::var_os(CHILD_ENV).is_some() {
            overflow_a_coroutine(GuardMode::Mprotect);
        }
        let out = run_child(
            "coroutine::stack::tests::coroutine_overflow_is_reported_with_mprotect_guards",
            &[(memory::GUARD_ENV, "mprotect")],
        );
        assert_coroutine_overflow_report(&out);
    }

    #[test]
    fn thread_overflow_still_gets_rusts_report() {
        if std::env::var_os(CHILD_ENV).is_some() {
            // Install our handler first, so the thread's fault goes through
            // it and must be chained to std's.
            drop(GuardedStack::new(MIN_STACK_SIZE).unwrap());
            std::thread::Builder::new()
                .name("deep-thread".into())
                .stack_size(256 * 1024)
                .spawn(|| recurse(0))
                .unwrap()
                .join()
                .unwrap();
            unreachable!("the thread overflowed without a fault");
        }
        let out = run_child(
            "coroutine::stack::tests::thread_overflow_still_gets_rusts_report",
            &[],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{stderr}");
        assert!(stderr.contains("thread 'deep-thread'"), "{stderr}");
        assert!(stderr.contains("has overflowed its stack"), "{stderr}");
        assert!(!stderr.contains("nimgo coroutine"));
    }

    #[test]
    fn mprotect_guards_report_the_map_count_limit() {
        if std::env::var_os(CHILD_ENV).is_some() {
            assert_eq!(guard_mode(), GuardMode::Mprotect);
            let mut stacks = Vec::new();
            let err = loop {
                match GuardedStack::new(MIN_STACK_SIZE) {
                    Ok(stack) => stacks.push(stack),
                    Err(err) => break err,
                }
                assert!(stacks.len() < 1_000_000, "no limit reached");
            };
            println!("CHILD-ERROR: {err}");
            assert_eq!(err.kind(), io::ErrorKind::OutOfMemory);
            drop(stacks);
            // Still usable once stacks are returned.
            drop(GuardedStack::new(MIN_STACK_SIZE).unwrap());
            return;
        }
        let out = run_child(
            "coroutine::stack::tests::mprotect_guards_report_the_map_count_limit",
            &[(memory::GUARD_ENV, "mprotect")],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        let limit = std::fs::read_to_string("/proc/sys/vm/max_map_count").unwrap();
        let line = stdout
            .lines()
            .find(|l| l.contains("CHILD-ERROR"))
            .expect("the child printed its error");
        assert!(line.contains(&format!(
            "vm.max_map_count limit (currently {})",
            limit.trim()
        )));
        assert!(line.contains("coroutine stacks are live on this thread"));
        assert!(line.contains("sysctl -w vm.max_map_count=N"));
    }

    /// `cargo test --release -- --ignored --nocapture stack_costs`
    #[test]
    #[ignore = "measurement, prints figures"]
    fn stack_costs() {
        on_fresh_thread(|| {
            const ROUNDS: u32 = 2_000_000;
            drop(GuardedStack::new(DEFAULT_STACK_SIZE).unwrap());
            let t = Instant::now();
            for _ in 0..ROUNDS {
                drop(black_box(GuardedStack::new(DEFAULT_STACK_SIZE).unwrap()));
            }
            let pooled = t.elapsed() / ROUNDS;

            // mprotect guards cost two mappings per stack: stay under
            // the default vm.max_map_count.
            const FRESH: usize = 20_000;
            let t = Instant::now();
            let stacks: Vec<_> = (0..FRESH)
                .map(|_| GuardedStack::new(DEFAULT_STACK_SIZE).unwrap())
                .collect();
            let fresh = t.elapsed() / FRESH as u32;
            let t = Instant::now();
            drop(stacks);
            let release = t.elapsed() / FRESH as u32;
            let t = Instant::now();
            let stacks: Vec<_> = (0..FRESH)
                .map(|_| GuardedStack::new(DEFAULT_STACK_SIZE).unwrap())
                .collect();
            let rewarm = t.elapsed() / FRESH as u32;
            drop(stacks);
            let co = Instant::now();
            for _ in 0..100_000 {
                let stack = GuardedStack::new(DEFAULT_STACK_SIZE).unwrap();
                let mut c = corosensei::Coroutine::with_stack(
                    stack,
                    |_: &corosensei::Yielder<(), ()>, ()| black_box(1),
                );
                black_box(c.resume(()));
            }
            let coroutine = co.elapsed() / 100_000;
            eprintln!(
                "guard mode {:?}: pooled take+return {pooled:?}; fresh slot {fresh:?}; \
                 release {release:?}; retake {rewarm:?}; \
                 create+run+drop a coroutine on a pooled stack {coroutine:?}",
                guard_mode()
            );
        });
    }
}
