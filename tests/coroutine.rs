//! The low-level coroutine layer: no dispatcher, guarded stacks, panics,
//! unwinding on drop, and the stack-overflow report.

mod util;

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;

use nimgo::coroutine::{Coroutine, CoroutineResult, CoroutineState};
use util::{DropCounter, quiet_panics};

#[test]
fn resume_suspend_state_and_return_value() {
    let mut coroutine: Coroutine<i32, i32, String> = Coroutine::new(|yielder, first| {
        let second = yielder.suspend(first + 1);
        let third = yielder.suspend(second + 1);
        format!("{first} {second} {third}")
    });
    assert_eq!(coroutine.state(), CoroutineState::Created);
    assert!(matches!(coroutine.resume(1), CoroutineResult::Yield(2)));
    assert_eq!(coroutine.state(), CoroutineState::Suspended);
    assert!(matches!(coroutine.resume(10), CoroutineResult::Yield(11)));
    match coroutine.resume(100) {
        CoroutineResult::Return(text) => assert_eq!(text, "1 10 100"),
        CoroutineResult::Yield(_) => panic!("should have returned"),
    }
    assert_eq!(coroutine.state(), CoroutineState::Finished);
    assert!(coroutine.is_finished());
}

#[test]
fn a_panic_is_handed_to_the_resumer() {
    let mut coroutine: Coroutine<(), (), ()> = Coroutine::new(|yielder, ()| {
        yielder.suspend(());
        panic!("inside");
    });
    assert!(matches!(
        coroutine.try_resume(()),
        Ok(CoroutineResult::Yield(()))
    ));
    let payload = quiet_panics(|| coroutine.try_resume(())).unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"inside"));
    assert!(coroutine.is_finished());
}

#[test]
fn dropping_a_suspended_coroutine_runs_its_destructors() {
    let drops = Rc::new(Cell::new(0));
    let mut coroutine: Coroutine<(), (), ()> = Coroutine::new({
        let drops = drops.clone();
        move |yielder, ()| {
            let _first = DropCounter(drops.clone());
            yielder.suspend(());
            let _second = DropCounter(drops);
            yielder.suspend(());
        }
    });
    coroutine.resume(());
    coroutine.resume(());
    assert_eq!(drops.get(), 0);
    drop(coroutine);
    assert_eq!(drops.get(), 2);
}

#[test]
fn dropping_an_unstarted_coroutine_drops_its_closure() {
    let drops = Rc::new(Cell::new(0));
    let guard = DropCounter(drops.clone());
    let coroutine: Coroutine<(), (), ()> = Coroutine::new(move |_, ()| drop(guard));
    drop(coroutine);
    assert_eq!(drops.get(), 1);
}

#[test]
fn ten_thousand_deep_recursion_fits_the_default_stack() {
    fn depth(n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            black_box(1 + depth(black_box(n - 1)))
        }
    }
    let mut coroutine: Coroutine<u64, (), u64> = Coroutine::new(|_, n| depth(n));
    assert_eq!(coroutine.stack_size(), nimgo::coroutine::DEFAULT_STACK_SIZE);
    assert!(matches!(
        coroutine.resume(10_000),
        CoroutineResult::Return(10_000)
    ));
    // The same holds for a task on the dispatcher.
    assert_eq!(nimgo::go_and_wait(|| depth(10_000)), 10_000);
}

#[test]
fn stack_size_is_configurable_and_rounded_to_pages() {
    let coroutine: Coroutine<(), (), ()> = Coroutine::with_stack_size(100_000, |_, ()| ()).unwrap();
    assert!(coroutine.stack_size() >= 100_000);
    assert_eq!(coroutine.stack_size() % 4096, 0);
}

#[test]
fn nested_coroutines_resume_each_other() {
    let mut outer: Coroutine<(), u32, u32> = Coroutine::new(|yielder, ()| {
        let mut inner: Coroutine<(), u32, u32> = Coroutine::new(|yielder, ()| {
            yielder.suspend(1);
            2
        });
        let mut sum = 0;
        while let CoroutineResult::Yield(value) = inner.resume(()) {
            sum += value;
            yielder.suspend(value);
        }
        sum + 2
    });
    assert!(matches!(outer.resume(()), CoroutineResult::Yield(1)));
    assert!(matches!(outer.resume(()), CoroutineResult::Return(3)));
}

fn overflow_child(test_name: &str, scenario: &str, env: &[(&str, &str)]) -> String {
    let output = util::run_child(test_name, scenario, env);
    assert!(!output.status.success(), "the overflow must kill the child");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        output.status.signal(),
        Some(libc_sigabrt()),
        "an overflow aborts with a message, never a bare SIGSEGV"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn libc_sigabrt() -> i32 {
    6
}

#[allow(unconditional_recursion)] // it ends in the guard page, on purpose
fn recurse_forever(n: u64) -> u64 {
    let buffer = black_box([n; 64]);
    black_box(recurse_forever(n + 1) + buffer[3])
}

#[test]
fn stack_overflow_in_a_task_reports_and_aborts() {
    const TEST: &str = "stack_overflow_in_a_task_reports_and_aborts";
    match util::child_scenario().as_deref() {
        Some("task") => {
            nimgo::coroutine::set_default_stack_size(64 * 1024);
            nimgo::go_and_wait(|| recurse_forever(0));
            unreachable!("the overflow must abort");
        }
        Some("coroutine") => {
            let mut coroutine: Coroutine<(), (), u64> =
                Coroutine::with_stack_size(64 * 1024, |_, ()| recurse_forever(0)).unwrap();
            coroutine.resume(());
            unreachable!("the overflow must abort");
        }
        Some(_) => return,
        None => {}
    }
    for (scenario, env) in [
        ("task", &[][..]),
        ("coroutine", &[][..]),
        ("task", &[("NIMGO_STACK_GUARD", "mprotect")][..]),
    ] {
        let stderr = overflow_child(TEST, scenario, env);
        assert!(
            stderr.contains("has overflowed the stack of nimgo coroutine"),
            "{scenario} {env:?}: {stderr}"
        );
        assert!(
            stderr.contains("65536"),
            "the report names the stack size: {stderr}"
        );
    }
}
