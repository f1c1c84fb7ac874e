//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::cell::Cell;
use std::process::{Command, Output};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
