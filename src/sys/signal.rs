//! The stack-overflow report for coroutine stacks.
//!
//! A coroutine that overflows its stack touches the guard page at the bottom of
//! its slot and the kernel raises `SIGSEGV` (or `SIGBUS`). Rust's own handler
//! only knows the thread's stack, so without help the process would die with a
//! bare "Segmentation fault". This module turns that into a report like Rust's:
//!
//! ```text
//!  thread 'worker-0' has overflowed the stack of nimgo coroutine 17 (stack size 262144 bytes)
//!  fatal runtime error: stack overflow; raise the stack size with ...
//! ```
//!
//! How the pieces fit:
//!
//! ```text
//!   fault ──► kernel ──► handler (on the alternate signal stack)
//!                          │ si_addr in a registered slab's guard page?
//!                          ├─ yes: write the report to fd 2, abort()
//!                          └─ no:  chain to the previous action
//!                                    SA_SIGINFO handler → call it (Rust's
//!                                      "has overflowed its stack" for threads)
//!                                    SIG_DFL / SIG_IGN  → reset to SIG_DFL and
//!                                      return: the fault repeats and kills
//!
//!   REGISTRY: [Entry; 4096]   one entry per slab mapping, process-wide
//!   ┌──────┬──────┬─────┬───────────┬────────────┬────────┐
//!   │ seq  │ base │ len │ slot_size │ guard_size │ usable │   all atomics
//!   └──────┴──────┴─────┴───────────┴────────────┴────────┘
//! ```
//!
//! Rules:
//!
//! - The handler is async-signal-safe: it allocates nothing, takes no lock and
//!   touches no lazily initialised thread-local. It reads the registry (plain
//!   atomic loads under a per-entry sequence count), a `const`-initialised
//!   thread-local `Cell<u64>` (the current coroutine id), `prctl(PR_GET_NAME)`
//!   and calls `write(2)` and `abort(3)`.
//! - An entry is claimed by a compare-and-swap of `base` from 0 to 1, so two
//!   registering threads never write the same entry; only the claimant writes
//!   `seq` and the fields after that (odd `seq` = being written), so a reader
//!   that sees the same even `seq` before and after reading has a consistent
//!   entry.
//! - If all [`REGISTRY_CAPACITY`] entries are taken, slabs still work but are
//!   unregistered; a fault in one of them, on a thread running a coroutine,
//!   prints a generic note (the address, the coroutine, "may be a stack
//!   overflow") before chaining to the previous action.
//! - The signal needs an alternate stack: on an overflowed stack the kernel
//!   cannot push the handler's frame. Rust's std gives its own threads one;
//!   [`ensure_alt_stack`] gives one to any other thread that creates stacks.
//! - `SA_NODEFER` is deliberately not used: if the handler itself faulted, the
//!   signal being blocked makes the kernel kill the process with the default
//!   action instead of recursing.

use std::cell::OnceCell;
use std::ptr::{self, NonNull};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering, fence};

use super::memory;
use super::syscall;

/// How many slab mappings the registry can describe.
pub(crate) const REGISTRY_CAPACITY: usize = 4096;

/// Size of the alternate signal stack [`ensure_alt_stack`] maps.
const ALT_STACK_SIZE: usize = 64 * 1024;

/// A slab mapping, as the handler needs to see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlabInfo {
    /// Lowest address of the mapping.
    pub(crate) base: usize,
    /// Length of the mapping in bytes.
    pub(crate) len: usize,
    /// Distance between two slots; slot `i` starts at `base + i * slot_size`.
    pub(crate) slot_size: usize,
    /// Bytes of guard at the bottom of each slot.
    pub(crate) guard_size: usize,
    /// Usable stack bytes of each slot (reported to the user).
    pub(crate) usable: usize,
}

impl SlabInfo {
    /// Whether `addr` lies in the guard page of one of this slab's slots.
    fn is_guard(&self, addr: usize) -> bool {
        addr >= self.base
            && addr - self.base < self.len
            && (addr - self.base) % self.slot_size < self.guard_size
    }
}

struct Entry {
    /// Even: stable. Odd: the claimant is writing the fields.
    seq: AtomicUsize,
    /// 0: free. 1: claimed, not yet published. Otherwise the slab's base.
    base: AtomicUsize,
    len: AtomicUsize,
    slot_size: AtomicUsize,
    guard_size: AtomicUsize,
    usable: AtomicUsize,
}

impl Entry {
    const fn new() -> Self {
        Self {
            seq: AtomicUsize::new(0),
            base: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            slot_size: AtomicUsize::new(0),
            guard_size: AtomicUsize::new(0),
            usable: AtomicUsize::new(0),
        }
    }

    /// Writes the fields; the caller has claimed the entry.
    fn publish(&self, info: &SlabInfo, base: usize) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.len.store(info.len, Ordering::Relaxed);
        self.slot_size.store(info.slot_size, Ordering::Relaxed);
        self.guard_size.store(info.guard_size, Ordering::Relaxed);
        self.usable.store(info.usable, Ordering::Relaxed);
        self.base.store(base, Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }

    /// A consistent snapshot, or `None` if the entry is free or kept changing.
    fn read(&self) -> Option<SlabInfo> {
        for _ in 0..1000 {
            let before = self.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let info = SlabInfo {
                base: self.base.load(Ordering::Relaxed),
                len: self.len.load(Ordering::Relaxed),
                slot_size: self.slot_size.load(Ordering::Relaxed),
                guard_size: self.guard_size.load(Ordering::Relaxed),
                usable: self.usable.load(Ordering::Relaxed),
            };
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == before {
                return (info.base > 1 && info.slot_size > 0).then_some(info);
            }
        }
        None
    }
}

static REGISTRY: [Entry; REGISTRY_CAPACITY] = [const { Entry::new() }; REGISTRY_CAPACITY];
/// One past the highest entry ever claimed; bounds the handler's scan.
static HIGH_WATER: AtomicUsize = AtomicUsize::new(0);
/// Set once a slab could not be registered.
static REGISTRY_OVERFLOWED: AtomicBool = AtomicBool::new(false);

/// A registered slab's place in the registry; give it back with
/// [`unregister_slab`].
#[derive(Debug)]
pub(crate) struct RegistryIndex(usize);

/// Records a slab so the handler can recognise faults in its guard pages.
/// Returns `None` when the registry is full (the slab still works; see the
/// module docs).
pub(crate) fn register_slab(info: SlabInfo) -> Option<RegistryIndex> {
    debug_assert!(info.base > 1 && info.slot_size > 0);
    for (i, entry) in REGISTRY.iter().enumerate() {
        if entry.base.load(Ordering::Relaxed) == 0
            && entry
                .base
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            HIGH_WATER.fetch_max(i + 1, Ordering::Release);
            entry.publish(&info, info.base);
            return Some(RegistryIndex(i));
        }
    }
    REGISTRY_OVERFLOWED.store(true, Ordering::Relaxed);
    None
}

/// Forgets a slab; call before unmapping it.
pub(crate) fn unregister_slab(index: RegistryIndex) {
    let entry = &REGISTRY[index.0];
    let zero = SlabInfo {
        base: 0,
        len: 0,
        slot_size: 0,
        guard_size: 0,
        usable: 0,
    };
    // Publish "claimed but empty" under the sequence count, then free it.
    entry.publish(&zero, 1);
    entry.base.store(0, Ordering::Release);
}

/// The registered slab whose guard page holds `addr`, if any.
fn lookup_guard(addr: usize) -> Option<SlabInfo> {
    let high = HIGH_WATER.load(Ordering::Acquire).min(REGISTRY_CAPACITY);
    REGISTRY[..high]
        .iter()
        .filter_map(Entry::read)
        .find(|info| info.is_guard(addr))
}

/// Whether `addr` is the guard page of a registered slab (for tests).
#[cfg(test)]
pub(crate) fn is_registered_guard(addr: usize) -> bool {
    lookup_guard(addr).is_some()
}

/// Bytes at the top of every stack slot that hold the label of the
/// coroutine using it (its number), written once when the coroutine is
/// created, so the handler can name it without the scheduler doing any
/// bookkeeping per switch. The label is the slot's highest 8 bytes; the
/// other 8 keep the stack top 16-byte aligned.
pub(crate) const LABEL_SIZE: usize = 16;

/// The label of the slot whose guard page holds `addr`.
fn slot_label(slab: &SlabInfo, addr: usize) -> u64 {
    let slot_start = slab.base + (addr - slab.base) / slab.slot_size * slab.slot_size;
    let label = (slot_start + slab.slot_size - 8) as *const u64;
    // SAFETY: `slab` came from the registry, so its mapping is live (a slab is
    // unregistered before it is unmapped, and the faulting coroutine's own
    // slab cannot be unmapped while it runs). `label` is the highest,
    // 8-aligned word of one of its slots: read/write memory above the guard,
    // never part of a guard page.
    unsafe { label.read_volatile() }
}

/// The action that was installed before ours, for chaining.
struct Previous {
    /// `sa_sigaction` (a handler address, `SIG_DFL` or `SIG_IGN`).
    action: AtomicUsize,
    flags: AtomicI32,
}

static PREV_SEGV: Previous = Previous {
    action: AtomicUsize::new(libc::SIG_DFL),
    flags: AtomicI32::new(0),
};
static PREV_BUS: Previous = Previous {
    action: AtomicUsize::new(libc::SIG_DFL),
    flags: AtomicI32::new(0),
};

/// An all-default `sigaction` with an empty mask.
fn empty_sigaction() -> libc::sigaction {
    // SAFETY: `sigaction` is a plain C struct; all zeroes is a valid value
    // (handler SIG_DFL, no flags, empty mask).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `sa_mask` is a valid, writable `sigset_t`.
    let _ = syscall!(sigemptyset(&mut action.sa_mask));
    action
}

/// Installs the `SIGSEGV` and `SIGBUS` handler, once per process, saving the
/// previous actions for chaining.
pub(crate) fn install_overflow_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (sig, prev) in [(libc::SIGSEGV, &PREV_SEGV), (libc::SIGBUS, &PREV_BUS)] {
            let mut old = empty_sigaction();
            // SAFETY: a null new action only queries; `old` is writable.
            if syscall!(sigaction(sig, ptr::null(), &mut old)).is_err() {
                continue;
            }
            prev.action.store(old.sa_sigaction, Ordering::Relaxed);
            prev.flags.store(old.sa_flags, Ordering::Release);
            let mut ours = empty_sigaction();
            ours.sa_sigaction = handler as *const () as usize;
            ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: `handler` has the three-argument signature SA_SIGINFO
            // requires and is async-signal-safe (see the module docs).
            let _ = syscall!(sigaction(sig, &ours, ptr::null_mut()));
        }
    });
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo; for SIGSEGV
    // and SIGBUS `si_addr` is the faulting address.
    let addr = unsafe { (*info).si_addr() } as usize;
    if let Some(slab) = lookup_guard(addr) {
        let mut msg = Message::new();
        msg.push(b"\nthread '");
        push_thread_name(&mut msg);
        msg.push(b"' has overflowed the stack of nimgo coroutine ");
        match slot_label(&slab, addr) {
            0 => msg.push(b"<unknown>"),
            id => msg.push_u64(id),
        }
        msg.push(b" (stack size ");
        msg.push_u64(slab.usable as u64);
        msg.push(
            b" bytes)\nfatal runtime error: stack overflow; raise the stack size with \
              nimgo::coroutine::set_default_stack_size or Builder::stack_size\n",
        );
        msg.write_stderr();
        std::process::abort();
    }
    if REGISTRY_OVERFLOWED.load(Ordering::Relaxed) {
        let mut msg = Message::new();
        msg.push(b"\nthread '");
        push_thread_name(&mut msg);
        msg.push(b"' got a memory fault at 0x");
        msg.push_hex(addr);
        msg.push(b" in a process running nimgo coroutines");
        msg.push(
            b"; it may be a stack overflow (nimgo's stack registry is full, so it \
              cannot tell)\n",
        );
        msg.write_stderr();
    }
    chain(sig, info, ctx);
}

/// Hands the signal to whatever was installed before us.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = if sig == libc::SIGBUS {
        &PREV_BUS
    } else {
        &PREV_SEGV
    };
    let flags = prev.flags.load(Ordering::Acquire);
    let action = prev.action.load(Ordering::Relaxed);
    if action == libc::SIG_DFL || action == libc::SIG_IGN {
        // Returning re-executes the faulting access, which now kills the
        // process with the default action (and a core dump if enabled).
        let default = empty_sigaction();
        // SAFETY: installing SIG_DFL has no handler contract to meet.
        let _ = syscall!(sigaction(sig, &default, ptr::null_mut()));
    } else if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous action was installed with SA_SIGINFO, so its
        // address is a three-argument handler; we pass the kernel's own
        // arguments through.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(action) };
        f(sig, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO the previous action is a one-argument
        // handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(action) };
        f(sig);
    }
}

/// The calling thread's name as the kernel knows it ("main" for the main
/// thread, as Rust reports it).
fn push_thread_name(msg: &mut Message) {
    // SAFETY: getpid and gettid have no preconditions.
    let (pid, tid) = (syscall!(getpid()), syscall!(gettid()));
    if matches!((pid, tid), (Ok(p), Ok(t)) if p == t) {
        msg.push(b"main");
        return;
    }
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included, to `name`.
    match syscall!(prctl(libc::PR_GET_NAME, name.as_mut_ptr(), 0, 0, 0)) {
        Ok(_) => {
            let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            msg.push(&name[..len]);
        }
        Err(_) => msg.push(b"<unnamed>"),
    }
}

/// A fixed buffer to format a message in without allocating.
struct Message {
    buf: [u8; 512],
    len: usize,
}

impl Message {
    fn new() -> Self {
        Self {
            buf: [0; 512],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_u64(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    fn push_hex(&mut self, mut n: usize) {
        let mut digits = [0u8; 16];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[n % 16];
            n /= 16;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn write_stderr(&self) {
        let mut rest = self.as_bytes();
        while !rest.is_empty() {
            // SAFETY: `rest` is a valid, initialised byte slice.
            match syscall!(write(libc::STDERR_FILENO, rest.as_ptr().cast(), rest.len())) {
                Ok(n) if n > 0 => rest = &rest[n as usize..],
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                _ => break,
            }
        }
    }
}

/// An alternate signal stack this module mapped for the thread.
struct AltStack {
    /// The mapping (guard page included), or `None` if the thread already
    /// had an alternate stack that is not ours to manage.
    mem: Option<NonNull<u8>>,
    len: usize,
}

impl Drop for AltStack {
    fn drop(&mut self) {
        let Some(mem) = self.mem else { return };
        let page = memory::page_size();
        let mut current = libc::stack_t {
            ss_sp: ptr::null_mut(),
            ss_flags: 0,
            ss_size: 0,
        };
        // SAFETY: a null new stack only queries; `current` is writable.
        let queried = syscall!(sigaltstack(ptr::null(), &mut current));
        if queried.is_ok() && current.ss_sp == mem.as_ptr().wrapping_add(page).cast() {
            let disable = libc::stack_t {
                ss_sp: ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            // SAFETY: disabling the alternate stack has no preconditions;
            // we are not running on it (thread-local destructors are not
            // signal handlers).
            if syscall!(sigaltstack(&disable, ptr::null_mut())).is_err() {
                return; // still installed: leak it rather than unmap it
            }
        }
        // SAFETY: we mapped it in `ensure_alt_stack` and the kernel no longer
        // uses it as this thread's alternate stack.
        let _ = unsafe { memory::unmap(mem, self.len) };
    }
}

thread_local! {
    static ALT_STACK: OnceCell<AltStack> = const { OnceCell::new() };
}

/// Gives the calling thread an alternate signal stack if it has none, so the
/// overflow handler can run when the thread's current stack is exhausted.
/// Best effort: if the stack cannot be mapped, an overflow still kills the
/// process, only without the report.
pub(crate) fn ensure_alt_stack() {
    let _ = ALT_STACK.try_with(|cell| {
        cell.get_or_init(new_alt_stack);
    });
}

fn new_alt_stack() -> AltStack {
    let none = AltStack { mem: None, len: 0 };
    let mut current = libc::stack_t {
        ss_sp: ptr::null_mut(),
        ss_flags: 0,
        ss_size: 0,
    };
    // SAFETY: a null new stack only queries; `current` is writable.
    if syscall!(sigaltstack(ptr::null(), &mut current)).is_err()
        || current.ss_flags & libc::SS_DISABLE == 0
    {
        return none;
    }
    let page = memory::page_size();
    let len = ALT_STACK_SIZE.next_multiple_of(page) + page;
    let Ok(mem) = memory::reserve(len) else {
        return none;
    };
    let owned = AltStack {
        mem: Some(mem),
        len,
    };
    // SAFETY: the mapping is fresh; its lowest page becomes the guard.
    let guarded = unsafe {
        if memory::guard_markers() {
            memory::install_guard_markers(mem, page)
        } else {
            memory::protect_none(mem, page)
        }
    };
    if guarded.is_err() {
        return owned; // dropping unmaps; not installed
    }
    let stack = libc::stack_t {
        ss_sp: mem.as_ptr().wrapping_add(page).cast(),
        ss_flags: 0,
        ss_size: len - page,
    };
    // SAFETY: `stack` describes memory we own for the life of the thread
    // (the thread-local owner disables it before unmapping).
    let _ = syscall!(sigaltstack(&stack, ptr::null_mut()));
    owned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_integers() {
        let mut m = Message::new();
        m.push_u64(0);
        m.push(b" ");
        m.push_u64(262_144);
        m.push(b" ");
        m.push_u64(u64::MAX);
        m.push(b" ");
        m.push_hex(0xdead_beef);
        assert_eq!(
            m.as_bytes(),
            b"0 262144 18446744073709551615 deadbeef".as_slice()
        );
    }

    #[test]
    fn message_truncates_instead_of_overflowing() {
        let mut m = Message::new();
        for _ in 0..100 {
            m.push(b"0123456789");
        }
        assert_eq!(m.as_bytes().len(), 512);
    }

    #[test]
    fn registry_round_trip() {
        let info = SlabInfo {
            base: 0x1000_0000,
            len: 4 * 0x5000,
            slot_size: 0x5000,
            guard_size: 0x1000,
            usable: 0x4000,
        };
        let index = register_slab(info).unwrap();
        assert!(lookup_guard(0x1000_0000).is_some());
        assert!(lookup_guard(0x1000_0fff).is_some());
        assert!(lookup_guard(0x1000_1000).is_none());
        assert_eq!(lookup_guard(0x1000_5008), Some(info));
        assert!(lookup_guard(0x1001_4000).is_none()); // one past the end
        unregister_slab(index);
        assert!(lookup_guard(0x1000_0000).is_none());
    }

    #[test]
    fn alt_stack_is_installed_on_a_foreign_thread() {
        extern "C" fn body(_: *mut libc::c_void) -> *mut libc::c_void {
            let mut before = libc::stack_t {
                ss_sp: ptr::null_mut(),
                ss_flags: 0,
                ss_size: 0,
            };
            // SAFETY: query only; `before` is writable.
            syscall!(sigaltstack(ptr::null(), &mut before)).unwrap();
            assert_ne!(before.ss_flags & libc::SS_DISABLE, 0);
            ensure_alt_stack();
            let mut after = before;
            // SAFETY: as above.
            syscall!(sigaltstack(ptr::null(), &mut after)).unwrap();
            assert_eq!(after.ss_flags & libc::SS_DISABLE, 0);
            assert!(after.ss_size >= ALT_STACK_SIZE);
            ptr::null_mut()
        }
        // A thread std did not create, so it starts without an alt stack.
        let mut thread: libc::pthread_t = 0;
        // SAFETY: `thread` is writable, `body` has the pthread signature.
        let rc = unsafe { libc::pthread_create(&mut thread, ptr::null(), body, ptr::null_mut()) };
        assert_eq!(rc, 0);
        // SAFETY: `thread` was created above and is joined once.
        let rc = unsafe { libc::pthread_join(thread, ptr::null_mut()) };
        assert_eq!(rc, 0);
    }
}
