//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::cell::Cell;
use std::process::{Command, Output};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};

/// Environment variable telling a re-run test binary which child scenario to
/// play.
pub const CHILD_ENV: &str = "NIMGO_TEST_CHILD";

/// Re-runs the current test binary with only `test_name`, with
/// `NIMGO_TEST_CHILD=scenario` and the extra environment, and returns its
/// output. The test itself checks the variable and plays the scenario.
pub fn run_child(test_name: &str, scenario: &str, env: &[(&str, &str)]) -> Output {
    let exe = std::env::current_exe().expect("current test binary");
    let mut command = Command::new(exe);
    command
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, scenario)
        .env("RUST_BACKTRACE", "0");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("spawn child test process")
}

/// The scenario this process was started for, if it is a child.
pub fn child_scenario() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// Counts its drops in a shared counter (thread-confined version).
pub struct DropCounter(pub Rc<Cell<usize>>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// Counts its drops in a shared atomic counter.
pub struct SyncDropCounter(pub Arc<AtomicUsize>);

impl Drop for SyncDropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs `f` with the panic hook silenced (for tests that panic on purpose).
pub fn quiet_panics<R>(f: impl FnOnce() -> R) -> R {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = f();
    std::panic::set_hook(hook);
    result
}

/// A small deterministic pseudo-random generator (xorshift64*), so tests
/// need no dependency and replay the same sequence.
#[derive(Debug, Clone)]
pub struct Random(u64);

impl Random {
    /// A generator seeded with `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// Records received messages and checks that each of `0..expected` arrives
/// exactly once.
#[derive(Debug)]
pub struct Tally {
    seen: Mutex<Vec<u32>>,
}

impl Tally {
    /// A tally for messages `0..expected`.
    pub fn new(expected: usize) -> Self {
        Self {
            seen: Mutex::new(vec![0; expected]),
        }
    }

    /// Records one received message.
    pub fn record(&self, message: u64) {
        let mut seen = self.seen.lock().unwrap();
        let slot = &mut seen[message as usize];
        *slot += 1;
        assert_eq!(*slot, 1, "message {message} delivered twice");
    }

    /// Asserts that every message arrived exactly once: count and checksum.
    pub fn assert_exactly_once(&self) {
        let seen = self.seen.lock().unwrap();
        let count: usize = seen.iter().map(|&n| n as usize).sum();
        let checksum: u64 = seen
            .iter()
            .enumerate()
            .map(|(message, &n)| message as u64 * u64::from(n))
            .sum();
        let expected = seen.len() as u64;
        let missing: Vec<usize> = seen
            .iter()
            .enumerate()
            .filter(|(_, n)| **n == 0)
            .map(|(message, _)| message)
            .take(10)
            .collect();
        assert_eq!(count, seen.len(), "messages lost, for example {missing:?}");
        assert_eq!(checksum, expected * (expected.saturating_sub(1)) / 2);
    }

    /// Whether `message` arrived.
    pub fn received(&self, message: u64) -> bool {
        self.seen.lock().unwrap()[message as usize] > 0
    }

    /// How many messages arrived so far.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().iter().map(|&n| n as usize).sum()
    }
}

/// Runs `f` on a new thread that has its own dispatcher: `f` may `go`
/// tasks, and the thread runs its loop until every one of them is done.
pub fn thread_with_loop<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> JoinHandle<R> {
    thread::spawn(move || nimgo::with_event_loop(f))
}
