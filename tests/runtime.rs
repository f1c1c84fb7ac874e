//! The multi-threaded runtime: spawning, stealing, placement, shutdown, idle.

use std::io::ErrorKind;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use nimgo::{GoTask, Runtime};

fn runtime(workers: usize) -> Runtime {
    Runtime::builder()
        .workers(workers)
        .thread_name("test")
        .build()
        .expect("runtime")
}

fn thread_name() -> String {
    thread::current().name().unwrap_or_default().to_owned()
}

/// Runs `f` with the panic message printer silenced.
fn quietly<R>(f: impl FnOnce() -> R) -> R {
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let result = f();
    panic::set_hook(hook);
    result
}

#[test]
fn builder_rejects_bad_input() {
    let error = Runtime::builder().workers(0).build().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(error.to_string().contains("worker"), "{error}");
    let error = Runtime::builder().stack_size(0).build().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    let error = Runtime::builder().blocking_threads(0).build().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
}

#[test]
fn builder_options_apply_to_workers() {
    let runtime = Runtime::builder()
        .workers(2)
        .thread_name("opts")
        .stack_size(192 * 1024)
        .pin_to_cores(true)
        .build()
        .unwrap();
    for worker in 0..2 {
        let (name, stack) = runtime
            .spawn_on(worker, || {
                (thread_name(), nimgo::coroutine::default_stack_size())
            })
            .wait();
        assert_eq!(name, format!("opts-{worker}"));
        assert_eq!(stack, 192 * 1024);
    }
}

#[test]
fn spawn_and_join_across_workers() {
    let runtime = runtime(2);
    let tasks: Vec<GoTask<u64>> = (0..1000u64)
        .map(|i| {
            runtime.spawn(move || {
                nimgo::yield_now();
                i
            })
        })
        .collect();
    let sum: u64 = tasks.into_iter().map(GoTask::wait).sum();
    assert_eq!(sum, 999 * 1000 / 2);
}

#[test]
fn spawn_on_lands_on_the_named_worker() {
    let runtime = runtime(3);
    for round in 0..20 {
        let worker = round % 3;
        let name = runtime.spawn_on(worker, thread_name).wait();
        assert_eq!(name, format!("test-{worker}"));
    }
}

#[test]
#[should_panic(expected = "spawn_on(5)")]
fn spawn_on_a_missing_worker_panics() {
    let runtime = runtime(2);
    let _ = runtime.spawn_on(5, || ());
}

#[test]
fn nimgo_spawn_inside_a_worker_runs_on_the_runtime() {
    let runtime = runtime(2);
    let names = runtime.block_on(|| {
        let tasks: Vec<_> = (0..200).map(|_| nimgo::spawn(thread_name)).collect();
        nimgo::wait_all(tasks)
    });
    assert!(
        names.iter().all(|name| name.starts_with("test-")),
        "{names:?}"
    );
}

#[test]
fn nimgo_spawn_outside_a_runtime_is_go() {
    let task = nimgo::spawn(|| 41 + 1);
    assert_eq!(task.wait(), 42);
}

/// Worker 0 is held busy by a task that never parks; tasks it spawns onto
/// its own deque must be stolen and completed by worker 1. Each of them
/// parks many times and checks it never changes thread.
#[test]
fn idle_workers_steal_and_started_coroutines_never_migrate() {
    let runtime = runtime(2);
    let release = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicBool::new(false));
    let busy = {
        let release = release.clone();
        let running = running.clone();
        runtime.spawn_on(0, move || {
            running.store(true, Ordering::Release);
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    nimgo::spawn(|| {
                        let before = thread::current().id();
                        let name = thread_name();
                        for _ in 0..200 {
                            nimgo::yield_now();
                            nimgo::sleep(Duration::from_micros(1));
                            assert_eq!(thread::current().id(), before, "coroutine migrated");
                        }
                        name
                    })
                })
                .collect();
            // Hold worker 0 without parking until every task finished, so
            // they all must have been stolen by worker 1.
            let deadline = Instant::now() + Duration::from_secs(20);
            while !tasks.iter().all(GoTask::is_finished) {
                assert!(Instant::now() < deadline, "stolen tasks did not finish");
                std::hint::spin_loop();
            }
            while !release.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            tasks
        })
    };
    // Meanwhile worker 1 also runs plain runtime tasks that park. (Spawned
    // once worker 0 is held, else worker 0 could start some of them before
    // the busy task and never get back to them.)
    while !running.load(Ordering::Acquire) {
        thread::yield_now();
    }
    let others: Vec<_> = (0..64)
        .map(|_| {
            runtime.spawn(|| {
                let before = thread::current().id();
                for _ in 0..100 {
                    nimgo::yield_now();
                }
                assert_eq!(thread::current().id(), before);
            })
        })
        .collect();
    for task in others {
        task.wait();
    }
    release.store(true, Ordering::Release);
    let names: Vec<String> = busy.wait().into_iter().map(GoTask::wait).collect();
    assert!(names.iter().all(|name| name == "test-1"), "{names:?}");
}

#[test]
fn block_on_returns_and_reraises_panics() {
    let runtime = runtime(2);
    assert_eq!(runtime.block_on(|| 6 * 7), 42);
    let outcome = quietly(|| {
        panic::catch_unwind(AssertUnwindSafe(|| {
            runtime.block_on(|| -> u32 { panic!("boom in block_on") })
        }))
    });
    let payload = outcome.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom in block_on"));
}

#[test]
fn a_panicking_task_does_not_kill_its_worker() {
    let runtime = runtime(1);
    let failed = quietly(|| {
        runtime
            .spawn_on(0, || -> u8 { panic!("task panic") })
            .join()
    });
    assert!(failed.unwrap_err().is_panic());
    for i in 0..10 {
        assert_eq!(runtime.spawn_on(0, move || i).wait(), i);
        assert_eq!(runtime.spawn(move || i).wait(), i);
    }
}

#[test]
fn handle_spawns_from_other_threads() {
    let runtime = runtime(2);
    let handle = runtime.handle();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let handle = handle.clone();
            thread::spawn(move || {
                let tasks: Vec<_> = (0..100u64)
                    .map(|i| handle.spawn(move || t * 100 + i))
                    .collect();
                tasks.into_iter().map(GoTask::wait).sum::<u64>()
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, (0..400u64).sum());
    assert_eq!(handle.spawn_on(1, thread_name).wait(), "test-1");
    assert_eq!(handle.block_on(|| 1), 1);
}

struct SetOnDrop(Arc<AtomicUsize>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn shutdown_timeout_unwinds_parked_tasks() {
    let runtime = runtime(2);
    let dropped = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let parked: Vec<_> = (0..4)
        .map(|i| {
            let guard = SetOnDrop(dropped.clone());
            let started = started.clone();
            runtime.spawn_on(i % 2, move || {
                let _guard = guard;
                started.fetch_add(1, Ordering::SeqCst);
                nimgo::sleep(Duration::from_secs(3600));
            })
        })
        .collect();
    // A task that finishes within the deadline completes normally.
    let quick = runtime.spawn(|| {
        nimgo::sleep(Duration::from_millis(5));
        7
    });
    while started.load(Ordering::SeqCst) < 4 {
        thread::yield_now();
    }
    let begin = Instant::now();
    runtime.shutdown_timeout(Duration::from_millis(200));
    assert!(begin.elapsed() < Duration::from_secs(5));
    assert_eq!(dropped.load(Ordering::SeqCst), 4);
    for task in parked {
        assert!(task.join().unwrap_err().is_cancelled());
    }
    assert_eq!(quick.wait(), 7);
}

#[test]
fn spawning_after_shutdown_gives_a_cancelled_task() {
    let runtime = runtime(1);
    let handle = runtime.handle();
    runtime.shutdown_timeout(Duration::from_millis(50));
    assert!(handle.spawn(|| 1).join().unwrap_err().is_cancelled());
    assert!(handle.spawn_on(0, || 1).join().unwrap_err().is_cancelled());
}

#[test]
fn drop_never_hangs_even_with_a_stuck_worker() {
    let runtime = runtime(2);
    let stop = Arc::new(AtomicBool::new(false));
    let entered = Arc::new(Barrier::new(2));
    {
        let stop = stop.clone();
        let entered = entered.clone();
        // Never parks: cannot be unwound, must be detached.
        let _stuck = runtime.spawn_on(0, move || {
            entered.wait();
            while !stop.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
        });
    }
    let _parked = runtime.spawn_on(1, || nimgo::sleep(Duration::from_secs(3600)));
    entered.wait();
    let begin = Instant::now();
    drop(runtime);
    assert!(begin.elapsed() < Duration::from_secs(10));
    stop.store(true, Ordering::Release);
}

/// CPU time a thread has used, from the scheduler's statistics.
fn thread_cpu_time(tid: i32) -> Duration {
    let text =
        std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).expect("schedstat");
    let nanos: u64 = text.split_whitespace().next().unwrap().parse().unwrap();
    Duration::from_nanos(nanos)
}

#[test]
fn an_idle_runtime_uses_about_no_cpu() {
    let runtime = runtime(2);
    // Warm up, and learn the worker threads' ids.
    let tids: Vec<i32> = (0..2)
        .map(|worker| runtime.spawn_on(worker, current_thread_tid).wait())
        .collect();
    let before: Duration = tids.iter().map(|&tid| thread_cpu_time(tid)).sum();
    thread::sleep(Duration::from_secs(1));
    let used: Duration = tids
        .iter()
        .map(|&tid| thread_cpu_time(tid))
        .sum::<Duration>()
        - before;
    assert!(
        used < Duration::from_millis(20),
        "two idle workers used {used:?} of CPU in one second"
    );
}

fn current_thread_tid() -> i32 {
    // /proc/thread-self names the calling thread's task directory.
    let link = std::fs::read_link("/proc/thread-self").expect("thread-self");
    link.file_name().unwrap().to_str().unwrap().parse().unwrap()
}

/// spawn_join from bench-workloads.md: run with
/// `cargo test --release --test runtime -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_spawn_join() {
    const N: u64 = 100_000;
    let workers = std::env::var("NIMGO_WORKERS").map_or(2, |text| text.parse().unwrap());
    let runtime = runtime(workers);
    for _ in 0..3 {
        let nanos = runtime.block_on(|| {
            let start = Instant::now();
            let tasks: Vec<_> = (0..N).map(|i| nimgo::spawn(move || i)).collect();
            let sum: u64 = tasks.into_iter().map(GoTask::wait).sum();
            let elapsed = start.elapsed();
            assert_eq!(sum, N * (N - 1) / 2);
            elapsed.as_nanos() as f64 / N as f64
        });
        println!("bench=spawn_join n={N} value={nanos:.0} unit=ns/task");
    }
}

/// The same workload with the single-thread `go`, for comparison with
/// `measure_spawn_join` (the runtime's job path adds a queue, placement and
/// stealing on top).
#[test]
#[ignore]
fn measure_spawn_join_with_go() {
    const N: u64 = 100_000;
    for _ in 0..3 {
        let nanos = nimgo::go_and_wait(|| {
            let start = Instant::now();
            let tasks: Vec<_> = (0..N).map(|i| nimgo::go(move || i)).collect();
            let sum: u64 = tasks.into_iter().map(GoTask::wait).sum();
            assert_eq!(sum, N * (N - 1) / 2);
            start.elapsed().as_nanos() as f64 / N as f64
        });
        println!("bench=spawn_join_go n={N} value={nanos:.0} unit=ns/task");
    }
}

/// A proxy for pingpong_cross until channels land: a task on worker 0
/// repeatedly starts a task on worker 1 and waits for it, so each round
/// is one cross-thread inbox hand-off each way (plus a task start).
#[test]
#[ignore]
fn measure_cross_worker_round_trip() {
    const ROUNDS: u64 = 100_000;
    let runtime = runtime(2);
    let handle = runtime.handle();
    for _ in 0..3 {
        let handle = handle.clone();
        let nanos = runtime
            .spawn_on(0, move || {
                let start = Instant::now();
                let mut value = 0u64;
                for _ in 0..ROUNDS {
                    value = handle.spawn_on(1, move || value + 1).wait();
                }
                assert_eq!(value, ROUNDS);
                start.elapsed().as_nanos() as f64 / ROUNDS as f64
            })
            .wait();
        println!("bench=cross_worker_round_trip n={ROUNDS} value={nanos:.0} unit=ns/round_trip");
    }
}

#[test]
fn blocking_work_of_a_runtime_runs_on_its_own_pool() {
    let runtime = Runtime::builder()
        .workers(1)
        .blocking_threads(1)
        .thread_name("pooled")
        .build()
        .unwrap();
    let inside = runtime
        .spawn(|| nimgo::spawn_blocking(thread_name).wait())
        .wait();
    assert_eq!(inside, "pooled-blocking");
    // A thread outside any runtime uses the process-wide pool.
    let outside = nimgo::spawn_blocking(thread_name).wait();
    assert_eq!(outside, "nimgo-blocking");
}

/// The nice value of the calling thread, from `/proc/thread-self/stat`.
fn current_nice() -> i32 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the parenthesised command name; nice is field 19.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    after_name.split(' ').nth(16).unwrap().parse().unwrap()
}

#[test]
fn blocking_pool_threads_yield_to_the_loops_unless_told_otherwise() {
    let default = Runtime::builder().workers(1).build().unwrap();
    assert_eq!(
        default
            .spawn(|| nimgo::spawn_blocking(current_nice).wait())
            .wait(),
        19
    );
    let normal = Runtime::builder()
        .workers(1)
        .blocking_nice(0)
        .build()
        .unwrap();
    assert_eq!(
        normal
            .spawn(|| nimgo::spawn_blocking(current_nice).wait())
            .wait(),
        0
    );
    let error = Runtime::builder().blocking_nice(20).build().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
}
