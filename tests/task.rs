//! Tasks on one thread's dispatcher: NimGo's behaviours, cancellation,
//! timeouts, panics and teardown.

mod util;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nimgo::{GoTask, JoinError};
use util::{DropCounter, SyncDropCounter, quiet_panics};

#[test]
fn go_starts_lazily_when_the_loop_runs() {
    let started = Rc::new(Cell::new(false));
    let task = nimgo::go({
        let started = started.clone();
        move || started.set(true)
    });
    assert!(!started.get(), "go must not run the task at once");
    assert!(!task.is_finished());
    task.wait();
    assert!(started.get());
}

#[test]
fn wait_outside_and_inside_a_coroutine() {
    let outer = nimgo::go(|| {
        let inner = nimgo::go(|| {
            nimgo::sleep(Duration::from_millis(2));
            20
        });
        assert!(nimgo::dispatcher::in_coroutine());
        inner.wait() + 1
    });
    assert!(!nimgo::dispatcher::in_coroutine());
    assert_eq!(outer.wait(), 21);
}

#[test]
fn wait_timeout_gives_the_task_back() {
    let (sender, receiver) = std::sync::mpsc::channel::<()>();
    let task = nimgo::go(move || {
        // Parks until the test lets it finish.
        while receiver.try_recv().is_err() {
            nimgo::sleep(Duration::from_millis(1));
        }
        "done"
    });
    let task = task
        .wait_timeout(Duration::from_millis(5))
        .expect_err("the task cannot finish before it is released");
    sender.send(()).unwrap();
    assert_eq!(task.wait_timeout(Duration::from_secs(10)).unwrap(), "done");
}

#[test]
fn wait_all_returns_values_in_order() {
    let tasks: Vec<GoTask<u64>> = (0..50u64)
        .map(|i| {
            nimgo::go(move || {
                // Finish in reverse order of spawning.
                nimgo::sleep(Duration::from_micros(50 * (50 - i)));
                i * 2
            })
        })
        .collect();
    assert_eq!(
        nimgo::wait_all(tasks),
        (0..50).map(|i| i * 2).collect::<Vec<_>>()
    );
}

#[test]
fn wait_any_returns_a_finished_task() {
    let gate = Rc::new(Cell::new(false));
    let tasks = vec![
        nimgo::go({
            let gate = gate.clone();
            move || {
                while !gate.get() {
                    nimgo::sleep(Duration::from_millis(1));
                }
                0
            }
        }),
        nimgo::go(|| 1),
    ];
    let index = nimgo::wait_any(&tasks);
    assert_eq!(index, 1);
    assert!(tasks[1].is_finished());
    gate.set(true);
    let values = nimgo::wait_all(tasks);
    assert_eq!(values, vec![0, 1]);
}

#[test]
fn a_panic_reaches_join_and_wait_and_the_loop_survives() {
    quiet_panics(|| {
        let error = nimgo::go(|| -> u8 { panic!("first") }).join().unwrap_err();
        assert!(error.is_panic());
        assert_eq!(
            error.try_into_panic().unwrap().downcast_ref::<&str>(),
            Some(&"first")
        );

        let waited = std::panic::catch_unwind(|| nimgo::go(|| -> u8 { panic!("second") }).wait());
        let payload = waited.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"second"));
    });
    // The dispatcher keeps running tasks.
    assert_eq!(nimgo::go_and_wait(|| 5), 5);
}

#[test]
fn nested_coroutines_spawn_and_wait_each_other() {
    fn tree(depth: u32) -> u64 {
        if depth == 0 {
            nimgo::yield_now();
            return 1;
        }
        let left = nimgo::go(move || tree(depth - 1));
        let right = nimgo::go(move || tree(depth - 1));
        left.wait() + right.wait()
    }
    assert_eq!(nimgo::go_and_wait(|| tree(8)), 256);
}

#[test]
fn timers_fire_in_deadline_order() {
    let order = Rc::new(RefCell::new(Vec::new()));
    let delays = [30u64, 10, 25, 5, 20, 15, 0];
    let tasks: Vec<_> = delays
        .iter()
        .map(|&delay| {
            let order = order.clone();
            nimgo::go(move || {
                nimgo::sleep(Duration::from_millis(delay));
                order.borrow_mut().push(delay);
            })
        })
        .collect();
    nimgo::wait_all(tasks);
    let mut expected = delays.to_vec();
    expected.sort_unstable();
    assert_eq!(*order.borrow(), expected);
}

#[test]
fn yield_now_lets_other_tasks_run() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let tasks: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let log = log.clone();
            nimgo::go(move || {
                for step in 0..3 {
                    log.borrow_mut().push(format!("{name}{step}"));
                    nimgo::yield_now();
                }
            })
        })
        .collect();
    nimgo::wait_all(tasks);
    assert_eq!(*log.borrow(), ["a0", "b0", "a1", "b1", "a2", "b2"]);
}

#[test]
fn a_task_is_waited_from_another_thread() {
    let task = nimgo::go(|| {
        nimgo::sleep(Duration::from_millis(2));
        String::from("from the owner thread")
    });
    let waiter = std::thread::spawn(move || task.wait());
    // The owner thread must run its loop for the task to finish.
    while !waiter.is_finished() {
        nimgo::dispatcher::run_once(Some(Duration::from_millis(1))).unwrap();
    }
    assert_eq!(waiter.join().unwrap(), "from the owner thread");
}

#[test]
fn a_task_is_waited_from_another_threads_coroutine() {
    let task = nimgo::go(|| 9u32);
    let waiter = std::thread::spawn(move || nimgo::go_and_wait(move || task.wait() + 1));
    while !waiter.is_finished() {
        nimgo::dispatcher::run_once(Some(Duration::from_millis(1))).unwrap();
    }
    assert_eq!(waiter.join().unwrap(), 10);
}

#[test]
fn cancel_an_unstarted_task_it_never_runs() {
    let ran = Rc::new(Cell::new(false));
    let drops = Rc::new(Cell::new(0));
    let task = nimgo::go({
        let ran = ran.clone();
        let guard = DropCounter(drops.clone());
        move || {
            let _guard = guard;
            ran.set(true);
        }
    });
    task.cancel();
    assert!(task.is_finished());
    assert!(task.join().unwrap_err().is_cancelled());
    nimgo::run_event_loop();
    assert!(!ran.get());
    assert_eq!(drops.get(), 1, "the closure's captures are dropped");
}

#[test]
fn cancel_a_parked_task_unwinds_it() {
    let drops = Rc::new(Cell::new(0));
    let after_park = Rc::new(Cell::new(false));
    let task = nimgo::go({
        let drops = drops.clone();
        let after_park = after_park.clone();
        move || {
            let _guard = DropCounter(drops);
            nimgo::sleep(Duration::from_secs(3600));
            after_park.set(true);
        }
    });
    nimgo::yield_now();
    assert_eq!(drops.get(), 0);
    task.cancel();
    match task.join() {
        Err(JoinError::Cancelled) => {}
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert_eq!(drops.get(), 1, "destructors on the task's stack ran");
    assert!(!after_park.get());
}

#[test]
fn cancel_from_another_thread() {
    let task = nimgo::go(|| nimgo::sleep(Duration::from_secs(3600)));
    nimgo::yield_now();
    let canceller = std::thread::spawn(move || {
        task.cancel();
        task
    });
    let task = canceller.join().unwrap();
    assert!(task.join().unwrap_err().is_cancelled());
}

#[test]
fn with_timeout_unwinds_the_closure() {
    let drops = Rc::new(Cell::new(0));
    let result = nimgo::go_and_wait({
        let drops = drops.clone();
        move || {
            nimgo::with_timeout(Duration::from_millis(5), move || {
                let _guard = DropCounter(drops);
                nimgo::sleep(Duration::from_secs(3600));
                "unreachable"
            })
        }
    });
    assert_eq!(result.unwrap_err().to_string(), "deadline has elapsed");
    assert_eq!(drops.get(), 1);
}

#[test]
fn with_timeout_nested_nearest_deadline_wins() {
    nimgo::go_and_wait(|| {
        // Inner deadline first: the inner scope reports, the outer goes on.
        let outer = nimgo::with_timeout(Duration::from_secs(10), || {
            let inner = nimgo::with_timeout(Duration::from_millis(5), || {
                nimgo::sleep(Duration::from_secs(3600));
            });
            assert!(inner.is_err());
            "outer finished"
        });
        assert_eq!(outer, Ok("outer finished"));

        // Outer deadline first: the unwind passes through the inner scope.
        let inner_reported = Cell::new(false);
        let outer = nimgo::with_timeout(Duration::from_millis(5), || {
            let inner = nimgo::with_timeout(Duration::from_secs(10), || {
                nimgo::sleep(Duration::from_secs(3600));
            });
            inner_reported.set(true);
            inner
        });
        assert!(outer.is_err());
        assert!(!inner_reported.get());
    });
}

#[test]
fn with_timeout_on_the_root_context_and_around_a_wait() {
    let slow = nimgo::go(|| nimgo::sleep(Duration::from_secs(3600)));
    let result = nimgo::with_timeout(Duration::from_millis(5), || slow.wait());
    assert!(result.is_err());
    // Work that finishes in time is returned.
    assert_eq!(
        nimgo::with_timeout(Duration::from_secs(5), || nimgo::go_and_wait(|| 3)),
        Ok(3)
    );
}

#[test]
fn dropping_the_dispatcher_unwinds_parked_and_unstarted_tasks() {
    let drops = Arc::new(AtomicUsize::new(0));
    let handles = std::thread::spawn({
        let drops = drops.clone();
        move || {
            for _ in 0..10 {
                let guard = SyncDropCounter(drops.clone());
                nimgo::go(move || {
                    let _guard = guard;
                    nimgo::sleep(Duration::from_secs(3600));
                });
            }
            // Let them start and park.
            nimgo::yield_now();
            let unstarted = SyncDropCounter(drops.clone());
            nimgo::go(move || drop(unstarted))
            // The thread exits here with 10 parked tasks and 1 unstarted.
        }
    });
    let unstarted = handles.join().unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 11);
    assert!(unstarted.join().unwrap_err().is_cancelled());
}

#[test]
fn a_hundred_thousand_live_coroutines() {
    let live = 100_000;
    let woken = Rc::new(Cell::new(0usize));
    let started = Rc::new(Cell::new(0usize));
    let gate = Rc::new(Cell::new(false));
    let tasks: Vec<_> = (0..live)
        .map(|_| {
            let gate = gate.clone();
            let woken = woken.clone();
            let started = started.clone();
            nimgo::go(move || {
                started.set(started.get() + 1);
                while !gate.get() {
                    nimgo::sleep(Duration::from_millis(5));
                }
                woken.set(woken.get() + 1);
            })
        })
        .collect();
    while started.get() < live {
        nimgo::yield_now();
    }
    let stats = nimgo::coroutine::stack_stats();
    assert!(stats.live_stacks >= live, "{stats:?}");
    assert!(
        stats.slabs < 64,
        "stacks must come from few mappings: {stats:?}"
    );
    gate.set(true);
    nimgo::wait_all(tasks);
    assert_eq!(woken.get(), live);
}

#[test]
fn go_and_wait_many_tasks_reuse_few_stacks() {
    for i in 0..10_000u32 {
        assert_eq!(nimgo::go_and_wait(move || i), i);
    }
    assert!(nimgo::coroutine::stack_stats().live_stacks <= 2);
}

#[test]
fn a_stack_error_at_the_limit_names_the_sysctl() {
    const TEST: &str = "a_stack_error_at_the_limit_names_the_sysctl";
    if util::child_scenario().as_deref() == Some("mprotect-limit") {
        assert_eq!(
            nimgo::coroutine::guard_mode(),
            nimgo::coroutine::GuardMode::Mprotect
        );
        let mut tasks = Vec::new();
        let error = loop {
            match nimgo::try_go(|| nimgo::sleep(Duration::from_secs(3600))) {
                Ok(task) => tasks.push(task),
                Err(error) => break error,
            }
            assert!(tasks.len() < 200_000, "the fallback path never hit a limit");
        };
        println!("LIMIT-AFTER {} ERROR {error}", tasks.len());
        // `go` reports the same limit as a panic when the task starts.
        quiet_panics(|| {
            let failed = nimgo::go(|| ()).join().unwrap_err();
            println!("GO-ERROR {failed}");
        });
        for task in &tasks {
            task.cancel();
        }
        return;
    }
    if util::child_scenario().is_some() {
        return;
    }
    let output = util::run_child(TEST, "mprotect-limit", &[("NIMGO_STACK_GUARD", "mprotect")]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("LIMIT-AFTER"), "{stdout}");
    assert!(stdout.contains("vm.max_map_count"), "{stdout}");
    let go_line = stdout
        .lines()
        .find(|line| line.starts_with("GO-ERROR"))
        .unwrap();
    assert!(go_line.contains("vm.max_map_count"), "{go_line}");
}

#[test]
fn go_and_wait_cancels_its_task_when_the_waiter_unwinds() {
    let drops = Rc::new(Cell::new(0));
    let outcome = nimgo::with_timeout(Duration::from_millis(5), {
        let drops = drops.clone();
        move || {
            nimgo::go_and_wait(move || {
                let _guard = DropCounter(drops);
                nimgo::sleep(Duration::from_secs(3600));
            })
        }
    });
    assert!(outcome.is_err());
    nimgo::run_event_loop();
    assert_eq!(
        drops.get(),
        1,
        "the inner task was unwound, not left running"
    );
}

/// Parks in its destructor, as a `BufWriter` flushing to a file does.
struct SleepOnDrop;

impl Drop for SleepOnDrop {
    fn drop(&mut self) {
        nimgo::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_destructor_may_park_while_with_timeout_unwinds() {
    let outcome = nimgo::with_timeout(Duration::from_millis(5), || {
        let _parks_when_dropped = SleepOnDrop;
        nimgo::sleep(Duration::from_secs(3600));
    });
    assert!(outcome.is_err());
}

#[test]
fn a_destructor_may_park_while_cancel_unwinds() {
    let task = nimgo::go(|| {
        let _parks_when_dropped = SleepOnDrop;
        nimgo::sleep(Duration::from_secs(3600));
    });
    nimgo::yield_now();
    task.cancel();
    assert!(task.join().unwrap_err().is_cancelled());
}

#[test]
fn wait_any_from_two_waiters_wakes_both() {
    let gate = Rc::new(Cell::new(false));
    let tasks = Rc::new(vec![nimgo::go({
        let gate = gate.clone();
        move || {
            while !gate.get() {
                nimgo::sleep(Duration::from_millis(1));
            }
        }
    })]);
    let first = nimgo::go({
        let tasks = tasks.clone();
        move || nimgo::wait_any(&tasks)
    });
    let second = nimgo::go({
        let tasks = tasks.clone();
        move || nimgo::wait_any(&tasks)
    });
    nimgo::yield_now();
    gate.set(true);
    assert_eq!(second.wait(), 0);
    // A lost wake-up would leave the first waiter parked forever.
    assert_eq!(first.wait(), 0);
}

#[test]
fn one_task_unwinding_delays_but_does_not_lose_the_others_deadlines() {
    // Task A is cancelled and its destructor parks for a while; task B's
    // deadline passes meanwhile. B is interrupted once A's unwind is over
    // (while a stack of the thread unwinds, no interruption is raised).
    struct SleepsOnDrop;
    impl Drop for SleepsOnDrop {
        fn drop(&mut self) {
            nimgo::sleep(Duration::from_millis(20));
        }
    }
    let a = nimgo::go(|| {
        let _sleeps = SleepsOnDrop;
        nimgo::sleep(Duration::from_secs(3600));
    });
    nimgo::yield_now();
    a.cancel();
    nimgo::yield_now(); // A now parks inside its destructor
    let b = nimgo::go(|| {
        nimgo::with_timeout(Duration::from_millis(2), || {
            nimgo::sleep(Duration::from_secs(3600));
        })
    });
    assert!(b.wait().is_err(), "B's deadline was not lost");
    assert!(a.join().unwrap_err().is_cancelled());
}

#[test]
fn a_panicking_capture_of_a_cancelled_task_still_completes_its_join() {
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("destructor panic");
        }
    }
    let guard = PanicsOnDrop;
    let task = nimgo::go(move || {
        let _guard = &guard;
    });
    quiet_panics(|| task.cancel());
    assert!(task.join().unwrap_err().is_cancelled());
    // The loop goes on.
    assert_eq!(nimgo::go_and_wait(|| 1), 1);
}

#[test]
fn thread_exit_lets_destructors_that_wait_for_timers_finish() {
    let finished = Arc::new(AtomicUsize::new(0));
    let handle = std::thread::spawn({
        let finished = finished.clone();
        move || {
            struct SleepsThenCounts(Arc<AtomicUsize>);
            impl Drop for SleepsThenCounts {
                fn drop(&mut self) {
                    nimgo::sleep(Duration::from_millis(5));
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
            let guard = SleepsThenCounts(finished);
            nimgo::go(move || {
                let _guard = guard;
                nimgo::sleep(Duration::from_secs(3600));
            })
            // The thread exits with the task parked.
        }
    });
    let task = handle.join().unwrap();
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "the destructor's sleep completed"
    );
    assert!(task.join().unwrap_err().is_cancelled());
}

#[test]
fn a_swallowed_interruption_does_not_disable_later_deadlines() {
    // User code catches the unwind of an expired scope itself...
    let swallowed = nimgo::with_timeout(Duration::from_millis(2), || {
        let _ = std::panic::catch_unwind(|| nimgo::sleep(Duration::from_secs(3600)));
        7
    });
    assert_eq!(swallowed, Ok(7));
    // ...and the next deadline on this context still fires.
    let later = nimgo::with_timeout(Duration::from_millis(2), || {
        nimgo::sleep(Duration::from_secs(3600));
    });
    assert!(later.is_err());
}

#[test]
fn a_task_that_swallows_its_cancel_is_cancelled_at_its_next_park() {
    let task = nimgo::go(|| {
        let _ = std::panic::catch_unwind(|| nimgo::sleep(Duration::from_secs(3600)));
        nimgo::sleep(Duration::from_secs(3600));
        "ran to completion"
    });
    nimgo::yield_now();
    task.cancel();
    assert!(task.join().unwrap_err().is_cancelled());
}

#[test]
fn a_user_panic_in_a_timed_out_scope_with_a_parking_destructor_does_not_abort() {
    const TEST: &str = "a_user_panic_in_a_timed_out_scope_with_a_parking_destructor_does_not_abort";
    if util::child_scenario().as_deref() == Some("panic-in-expired-scope") {
        let task = nimgo::go(|| {
            nimgo::with_timeout(Duration::from_millis(2), || {
                let _parks_when_dropped = SleepOnDrop;
                let start = std::time::Instant::now();
                while start.elapsed() < Duration::from_millis(10) {
                    std::hint::spin_loop();
                }
                panic!("user panic");
            })
        });
        let error = quiet_panics(|| task.join()).unwrap_err();
        println!("JOINED {error}");
        return;
    }
    if util::child_scenario().is_some() {
        return;
    }
    let output = util::run_child(TEST, "panic-in-expired-scope", &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the child aborted: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("JOINED task panicked: user panic"),
        "{stdout}"
    );
}

#[test]
fn shutdown_runs_timers_while_another_destructor_keeps_yielding() {
    let done = Arc::new(AtomicUsize::new(0));
    std::thread::spawn({
        let done = done.clone();
        move || {
            // Keeps itself ready for a while: must not starve the timers.
            struct YieldsForAWhile(Arc<AtomicUsize>);
            impl Drop for YieldsForAWhile {
                fn drop(&mut self) {
                    let start = std::time::Instant::now();
                    while start.elapsed() < Duration::from_millis(5) {
                        nimgo::yield_now();
                    }
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
            // Needs a timer to fire during the shutdown.
            struct SleepsThenCounts(Arc<AtomicUsize>);
            impl Drop for SleepsThenCounts {
                fn drop(&mut self) {
                    nimgo::sleep(Duration::from_millis(2));
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
            let first = YieldsForAWhile(done.clone());
            let second = SleepsThenCounts(done);
            nimgo::go(move || {
                let _first = first;
                nimgo::sleep(Duration::from_secs(3600));
            });
            nimgo::go(move || {
                let _second = second;
                nimgo::sleep(Duration::from_secs(3600));
            });
            nimgo::yield_now();
            // The thread exits with both tasks parked.
        }
    })
    .join()
    .unwrap();
    assert_eq!(done.load(Ordering::SeqCst), 2, "both destructors finished");
}

#[test]
fn an_interruption_payload_dropped_on_another_thread_ends_the_unwind() {
    nimgo::go_and_wait(|| {
        let outcome = nimgo::with_timeout(Duration::from_millis(2), || {
            let payload =
                std::panic::catch_unwind(|| nimgo::sleep(Duration::from_secs(3600))).unwrap_err();
            // The payload leaves the thread and is dropped there.
            let payload = std::sync::Mutex::new(Some(payload));
            std::thread::scope(|scope| {
                scope.spawn(|| drop(payload.lock().unwrap().take()));
            });
            // The deadline has passed: this park must still be interrupted.
            nimgo::sleep(Duration::from_secs(3600));
        });
        assert!(outcome.is_err());
        // And later deadlines of this task still fire.
        let later = nimgo::with_timeout(Duration::from_millis(2), || {
            nimgo::sleep(Duration::from_secs(3600))
        });
        assert!(later.is_err());
    });
}

#[test]
fn a_task_parked_during_another_panic_does_not_confuse_later_panics() {
    const TEST: &str = "a_task_parked_during_another_panic_does_not_confuse_later_panics";
    if util::child_scenario().as_deref() == Some("stale-panic") {
        struct SleepsOnDrop(u64);
        impl Drop for SleepsOnDrop {
            fn drop(&mut self) {
                nimgo::sleep(Duration::from_millis(self.0));
            }
        }
        quiet_panics(|| {
            // A panics; its destructor sleeps while B parks.
            let a = nimgo::go(|| {
                let _slow = SleepsOnDrop(10);
                panic!("first panic");
            });
            let b = nimgo::go(|| nimgo::sleep(Duration::from_millis(200)));
            assert!(a.join().unwrap_err().is_panic());
            // C panics inside an expired scope; its destructor parks.
            let c = nimgo::go(|| {
                nimgo::with_timeout(Duration::from_millis(1), || {
                    let _parks = SleepsOnDrop(20);
                    let start = std::time::Instant::now();
                    while start.elapsed() < Duration::from_millis(5) {
                        std::hint::spin_loop();
                    }
                    panic!("second panic");
                })
            });
            assert!(c.join().unwrap_err().is_panic());
            b.wait();
        });
        println!("SURVIVED");
        return;
    }
    if util::child_scenario().is_some() {
        return;
    }
    let output = util::run_child(TEST, "stale-panic", &[]);
    assert!(
        output.status.success(),
        "the child aborted: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("SURVIVED"));
}

#[test]
fn a_user_panic_while_a_cancel_unwinds_elsewhere_does_not_abort() {
    const TEST: &str = "a_user_panic_while_a_cancel_unwinds_elsewhere_does_not_abort";
    if util::child_scenario().as_deref() == Some("panic-beside-cancel") {
        struct SleepsOnDrop(u64);
        impl Drop for SleepsOnDrop {
            fn drop(&mut self) {
                nimgo::sleep(Duration::from_millis(self.0));
            }
        }
        quiet_panics(|| {
            let y = nimgo::go(|| {
                let _sleeps = SleepsOnDrop(50);
                nimgo::sleep(Duration::from_secs(3600));
            });
            nimgo::yield_now();
            y.cancel();
            let x = nimgo::go(|| {
                let _ = nimgo::with_timeout(Duration::from_millis(2), || {
                    let _parks = SleepsOnDrop(5);
                    let start = std::time::Instant::now();
                    while start.elapsed() < Duration::from_millis(10) {
                        std::hint::spin_loop();
                    }
                    panic!("user panic");
                });
            });
            assert!(x.join().unwrap_err().is_panic());
            assert!(y.join().unwrap_err().is_cancelled());
        });
        println!("SURVIVED");
        return;
    }
    if util::child_scenario().is_some() {
        return;
    }
    let output = util::run_child(TEST, "panic-beside-cancel", &[]);
    assert!(
        output.status.success(),
        "the child aborted: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("SURVIVED"));
}

/// Records the thread that drops it. `!Send` (an `Rc` inside), like the
/// captures `go` accepts.
struct DroppedOn {
    thread: Arc<std::sync::Mutex<Option<std::thread::ThreadId>>>,
    _not_send: Rc<()>,
}

impl Drop for DroppedOn {
    fn drop(&mut self) {
        *self.thread.lock().unwrap() = Some(std::thread::current().id());
    }
}

#[test]
fn a_task_handle_is_send_even_when_its_closure_is_not() {
    fn is_send<X: Send>(_: &X) {}
    let captured = Rc::new(5);
    let task = nimgo::go(move || *captured);
    is_send(&task);
    assert_eq!(std::thread::spawn(move || task).join().unwrap().wait(), 5);
}

#[test]
fn a_not_send_closure_cancelled_from_another_thread_is_dropped_on_its_own() {
    let dropped_on = Arc::new(std::sync::Mutex::new(None));
    let task = nimgo::go({
        let capture = DroppedOn {
            thread: dropped_on.clone(),
            _not_send: Rc::new(()),
        };
        move || drop(capture)
    });
    // Another thread cancels the unstarted task, waits for it, and drops
    // the last handle: the closure is dropped here, by this thread's loop
    // (which runs only once the cancel is sent).
    let (cancelled, cancel_sent) = std::sync::mpsc::channel();
    let other = std::thread::spawn(move || {
        task.cancel();
        cancelled.send(()).unwrap();
        task.join().unwrap_err().is_cancelled()
    });
    cancel_sent.recv().unwrap();
    while !other.is_finished() {
        nimgo::dispatcher::run_once(Some(Duration::from_millis(1))).unwrap();
    }
    assert!(other.join().unwrap());
    assert_eq!(
        *dropped_on.lock().unwrap(),
        Some(std::thread::current().id())
    );
}

#[test]
fn a_detached_handle_dropped_on_another_thread_leaves_the_closure_here() {
    let dropped_on = Arc::new(std::sync::Mutex::new(None));
    let ran = Rc::new(Cell::new(false));
    let task = nimgo::go({
        let capture = DroppedOn {
            thread: dropped_on.clone(),
            _not_send: Rc::new(()),
        };
        let ran = ran.clone();
        move || {
            let _capture = capture;
            ran.set(true);
        }
    });
    // The handle goes first, on another thread; the task then runs here.
    std::thread::spawn(move || drop(task)).join().unwrap();
    assert!(dropped_on.lock().unwrap().is_none());
    nimgo::run_event_loop();
    assert!(ran.get());
    assert_eq!(
        *dropped_on.lock().unwrap(),
        Some(std::thread::current().id())
    );
}

#[test]
fn a_handle_outliving_its_thread_gets_cancelled_and_frees_the_cell() {
    let dropped_on = Arc::new(std::sync::Mutex::new(None));
    let (task, owner) = std::thread::spawn({
        let dropped_on = dropped_on.clone();
        move || {
            let capture = DroppedOn {
                thread: dropped_on,
                _not_send: Rc::new(()),
            };
            let task = nimgo::go(move || drop(capture));
            (task, std::thread::current().id())
        }
    })
    .join()
    .unwrap();
    // The thread exited with the task unstarted: its dispatcher cancelled
    // it and dropped the closure there; the handle still works here.
    assert_eq!(*dropped_on.lock().unwrap(), Some(owner));
    assert!(task.join().unwrap_err().is_cancelled());
}

/// A value whose destructor panics (unless a panic is already unwinding).
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("a result's destructor panicked");
        }
    }
}

#[test]
fn a_detached_tasks_result_or_payload_panicking_on_drop_does_not_escape_the_loop() {
    // The handles are dropped first: the task's body frees the cell, and
    // with it the result, on the loop.
    quiet_panics(|| {
        drop(nimgo::go(|| PanicsOnDrop));
        drop(nimgo::go(|| -> u8 { std::panic::panic_any(PanicsOnDrop) }));
        assert!(std::panic::catch_unwind(nimgo::run_event_loop).is_ok());
    });
    assert_eq!(nimgo::go(|| 5).wait(), 5, "the loop still runs tasks");
}

#[test]
fn a_detached_tasks_result_panicking_on_drop_does_not_stop_a_worker() {
    let runtime = nimgo::Runtime::builder().workers(1).build().unwrap();
    let next = quiet_panics(|| {
        drop(runtime.spawn(|| PanicsOnDrop));
        // One worker: this runs after the first, if the worker is still
        // there (a liveness bound, not a speed check).
        runtime
            .spawn(|| 5)
            .wait_timeout(Duration::from_secs(20))
            .ok()
    });
    assert_eq!(next, Some(5));
}
