//! Benchmarks of the multi-threaded runtime and GoChannel, the workloads of
//! ../shared/bench-workloads.md:
//!
//! ```text
//! cargo bench --bench runtime                   # every workload
//! cargo bench --bench runtime -- pingpong_cross # one workload
//! ```
//!
//! Each prints `bench=<name> n=<n> value=<number> unit=<unit> ...` with the
//! median of five runs and the peers' figures from the workloads page. The
//! code that spawns, joins and times runs as a task of the runtime.

use std::time::{Duration, Instant};

use nimgo::{GoChannel, Runtime};

const RUNS: usize = 5;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--bench")
        .collect();
    let only = args.first().map(String::as_str);
    let wants = |name: &str| only.is_none_or(|only| only == name);
    if wants("spawn_join") {
        spawn_join(100_000);
    }
    if wants("pingpong_local") {
        pingpong(false);
    }
    if wants("pingpong_cross") {
        pingpong(true);
    }
    if wants("mpmc_fanin") {
        mpmc_fanin();
    }
}

fn runtime(workers: usize) -> Runtime {
    Runtime::builder()
        .workers(workers)
        .build()
        .expect("start the runtime")
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Spawn N tasks returning their index, keep the handles, join in order,
/// summing.
fn spawn_join(count: u64) {
    let runtime = runtime(2);
    let samples = (0..RUNS)
        .map(|_| {
            let elapsed = runtime.block_on(move || {
                let start = Instant::now();
                let tasks: Vec<_> = (0..count).map(|i| nimgo::spawn(move || i)).collect();
                let sum: u64 = tasks.into_iter().map(nimgo::GoTask::wait).sum();
                assert_eq!(sum, count * (count - 1) / 2, "wrong sum");
                start.elapsed()
            });
            elapsed.as_nanos() as f64 / count as f64
        })
        .collect();
    println!(
        "bench=spawn_join n={count} value={:.0} unit=ns/task workers=2 target<=300 go=873 tokio=938",
        median(samples)
    );
}

/// Two tasks, two channels of capacity 1; ping times a million round trips.
fn pingpong(cross: bool) {
    const ROUNDS: u64 = 1_000_000;
    let runtime = runtime(if cross { 2 } else { 1 });
    let samples = (0..RUNS)
        .map(|_| {
            let a = GoChannel::<u64>::bounded(1);
            let b = GoChannel::<u64>::bounded(1);
            let pong = {
                let (a, b) = (a.clone(), b.clone());
                runtime.spawn_on(if cross { 1 } else { 0 }, move || {
                    while let Ok(value) = a.recv() {
                        b.send(value + 1).expect("ping is gone");
                    }
                })
            };
            let ping = runtime.spawn_on(0, move || {
                let start = Instant::now();
                let mut value = 0;
                for _ in 0..ROUNDS {
                    a.send(value).expect("pong is gone");
                    value = b.recv().expect("pong is gone");
                }
                let elapsed = start.elapsed();
                assert_eq!(value, ROUNDS, "wrong count");
                a.close();
                elapsed
            });
            let elapsed = ping.wait();
            pong.wait();
            elapsed.as_nanos() as f64 / ROUNDS as f64
        })
        .collect();
    let (name, peers) = if cross {
        ("pingpong_cross", "target<=400 go=410 tokio=677 may=732")
    } else {
        ("pingpong_local", "target<=200 tokio=409 go=460 may=558")
    };
    println!(
        "bench={name} n={ROUNDS} value={:.0} unit=ns/round_trip {peers}",
        median(samples)
    );
}

/// One channel of capacity 1024; 4 producers send 0..250,000 each, 2
/// consumers sum until the channel closes.
fn mpmc_fanin() {
    const PER_PRODUCER: u64 = 250_000;
    const PRODUCERS: u64 = 4;
    let runtime = runtime(2);
    let samples = (0..RUNS)
        .map(|_| {
            let elapsed: Duration = runtime.block_on(|| {
                let channel = GoChannel::<u64>::bounded(1024);
                let start = Instant::now();
                let consumers: Vec<_> = (0..2)
                    .map(|_| {
                        let channel = channel.clone();
                        nimgo::spawn(move || channel.iter().sum::<u64>())
                    })
                    .collect();
                let producers: Vec<_> = (0..PRODUCERS)
                    .map(|_| {
                        let channel = channel.clone();
                        nimgo::spawn(move || {
                            for value in 0..PER_PRODUCER {
                                channel.send(value).expect("channel closed early");
                            }
                        })
                    })
                    .collect();
                nimgo::wait_all(producers);
                channel.close();
                let total: u64 = nimgo::wait_all(consumers).into_iter().sum();
                let elapsed = start.elapsed();
                assert_eq!(total, PRODUCERS * PER_PRODUCER * (PER_PRODUCER - 1) / 2);
                elapsed
            });
            (PRODUCERS * PER_PRODUCER) as f64 / elapsed.as_secs_f64() / 1e6
        })
        .collect();
    println!(
        "bench=mpmc_fanin n={} value={:.1} unit=M_msg/s workers=2 target>=15 go=12.6 may=6.7 tokio=3.7",
        PRODUCERS * PER_PRODUCER,
        median(samples)
    );
}
