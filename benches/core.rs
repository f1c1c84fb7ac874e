//! Benchmarks of the single-thread core (see ../shared/bench-workloads.md).
//!
//! ```text
//! cargo bench --bench core                 # every workload
//! cargo bench --bench core -- switch       # one workload
//! cargo bench --bench core -- sleepers 1000000
//! ```
//!
//! Each workload prints `bench=<name> n=<n> value=<number> unit=<unit> ...`.
//! Memory workloads run in a child process of this binary so that `VmHWM`
//! measures them alone.

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use nimgo::coroutine::{Coroutine, CoroutineResult};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("switch") => switch(),
        Some("go_wait") => go_wait(100_000),
        Some("sleepers") => {
            let count = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(100_000);
            sleepers(count);
        }
        Some("sleepers-child") => {
            let count = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(100_000);
            sleepers_child(count);
        }
        Some(other) => {
            eprintln!("unknown workload {other}: use switch, go_wait or sleepers [C]");
            std::process::exit(2);
        }
        None => {
            switch();
            go_wait(100_000);
            for count in [10_000, 100_000, 1_000_000] {
                sleepers(count);
            }
        }
    }
}

/// Median of `runs` timings of `f`, in nanoseconds per iteration.
fn median_ns(runs: usize, iterations: u64, mut f: impl FnMut(u64)) -> f64 {
    let mut samples: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f(iterations);
            start.elapsed().as_nanos() as f64 / iterations as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[runs / 2]
}

/// Resume + suspend of a nimgo coroutine against raw corosensei on its
/// default (mmap) stack, interleaved in the same run.
fn switch() {
    const ITERATIONS: u64 = 10_000_000;
    let mut ours: Coroutine<u64, u64, ()> = Coroutine::new(|yielder, mut value| {
        loop {
            value = yielder.suspend(value + 1);
        }
    });
    let mut raw: corosensei::Coroutine<u64, u64, ()> =
        corosensei::Coroutine::new(|yielder, mut value| {
            loop {
                value = yielder.suspend(value + 1);
            }
        });
    let mut nimgo_ns = Vec::new();
    let mut raw_ns = Vec::new();
    for _ in 0..5 {
        nimgo_ns.push(median_ns(1, ITERATIONS, |n| {
            for i in 0..n {
                match ours.resume(black_box(i)) {
                    CoroutineResult::Yield(value) => assert_eq!(value, i + 1),
                    CoroutineResult::Return(()) => unreachable!(),
                }
            }
        }));
        raw_ns.push(median_ns(1, ITERATIONS, |n| {
            for i in 0..n {
                match raw.resume(black_box(i)) {
                    corosensei::CoroutineResult::Yield(value) => assert_eq!(value, i + 1),
                    corosensei::CoroutineResult::Return(()) => unreachable!(),
                }
            }
        }));
    }
    nimgo_ns.sort_by(f64::total_cmp);
    raw_ns.sort_by(f64::total_cmp);
    let (ours, raw) = (nimgo_ns[2], raw_ns[2]);
    println!(
        "bench=switch n={ITERATIONS} value={ours:.2} unit=ns/switch raw_corosensei={raw:.2} ratio={:.2} target_ratio<=1.5",
        ours / raw
    );
}

/// `go` + `wait` of `count` tasks on one thread: spawn all (keeping the
/// handles), then wait them in order, summing; the spawning code runs as a
/// task itself.
fn go_wait(count: u64) {
    let mut samples = Vec::new();
    let mut stacks = 0;
    for _ in 0..5 {
        let (elapsed, live_stacks) = nimgo::go_and_wait(move || {
            let start = Instant::now();
            let tasks: Vec<_> = (0..count).map(|i| nimgo::go(move || i)).collect();
            let sum: u64 = tasks.into_iter().map(nimgo::GoTask::wait).sum();
            let elapsed = start.elapsed();
            assert_eq!(sum, count * (count - 1) / 2, "wrong sum");
            (elapsed, nimgo::coroutine::stack_stats().live_stacks)
        });
        stacks = stacks.max(live_stacks);
        samples.push(elapsed.as_nanos() as f64 / count as f64);
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "bench=go_wait n={count} value={:.1} unit=ns/task live_stacks_after={stacks} target<=150 go=873 tokio=938",
        samples[2]
    );
}

/// Runs the sleepers workload in a child process and reports its figures.
fn sleepers(count: usize) {
    let exe = std::env::current_exe().expect("bench binary path");
    let output = Command::new(exe)
        .args(["sleepers-child", &count.to_string()])
        .output()
        .expect("run the sleepers child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() {
        print!("{stdout}");
    } else {
        println!(
            "bench=sleepers n={count} value=failed unit=bytes/task status={} stderr={:?}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
}

fn status_kib(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mapping_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|maps| maps.lines().count())
        .unwrap_or(0)
}

fn sleepers_child(count: usize) {
    let baseline_kib = status_kib("VmRSS:");
    let (wall, stats) = nimgo::go_and_wait(move || {
        let start = Instant::now();
        let tasks: Vec<_> = (0..count)
            .map(|_| nimgo::go(|| nimgo::sleep(Duration::from_secs(1))))
            .collect();
        // All are parked once the spawner's own one-second sleep is under way.
        let stats_task = nimgo::go(|| {
            nimgo::sleep(Duration::from_millis(500));
            (nimgo::coroutine::stack_stats(), mapping_count())
        });
        nimgo::wait_all(tasks);
        let stats = stats_task.wait();
        (start.elapsed(), stats)
    });
    let peak_kib = status_kib("VmHWM:");
    let page_tables_kib = status_kib("VmPTE:");
    let per_task = peak_kib as f64 * 1024.0 / count as f64;
    let per_task_above_baseline = (peak_kib - baseline_kib) as f64 * 1024.0 / count as f64;
    println!(
        "bench=sleepers n={count} value={per_task:.0} unit=bytes/task above_baseline={per_task_above_baseline:.0} wall_ms={} peak_rss_kib={peak_kib} page_tables_kib={page_tables_kib} live_stacks={} slabs={} mappings={} target<=4608 go=2755 may=8824",
        wall.as_millis(),
        stats.0.live_stacks,
        stats.0.slabs,
        stats.1,
    );
}
