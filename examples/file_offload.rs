//! Benchmarks for the file path (`cargo run --release --example
//! file_offload`), in the line format of `bench-workloads.md`:
//!
//! - `file_offload`: 200 files of 1 MiB read whole by 200 tasks at once
//!   while a ticker task loops `sleep(1 ms)` and records how late each wake
//!   was; warm page cache, then cold (`posix_fadvise(DONTNEED)` first). For
//!   now on one thread's dispatcher (the runtime comes with issue 3).
//! - `pipe_throughput`: 1 GiB in 64 KiB writes through `nimgo::pipe`
//!   between two coroutines, against a std pipe between two plain threads.

use std::cell::Cell;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

const FILES: usize = 200;
const FILE_SIZE: usize = 1 << 20;
const PIPE_TOTAL: usize = 1 << 30;
const PIPE_WRITE: usize = 64 * 1024;

fn make_files(dir: &std::path::Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("create the benchmark directory");
    (0..FILES)
        .map(|i| {
            let path = dir.join(format!("f{i}.bin"));
            let needs = std::fs::metadata(&path).map_or(true, |m| m.len() != FILE_SIZE as u64);
            if needs {
                std::fs::write(&path, vec![i as u8; FILE_SIZE]).expect("write a benchmark file");
            }
            path
        })
        .collect()
}

/// Returns (wall, worst tick lateness).
fn file_offload(paths: &[PathBuf]) -> (Duration, Duration) {
    nimgo::with_event_loop(|| {
        let done = Rc::new(Cell::new(false));
        let worst = Rc::new(Cell::new(Duration::ZERO));
        let ticker = {
            let (done, worst) = (done.clone(), worst.clone());
            nimgo::go(move || {
                while !done.get() {
                    let start = Instant::now();
                    nimgo::sleep(Duration::from_millis(1));
                    let late = start.elapsed().saturating_sub(Duration::from_millis(1));
                    worst.set(worst.get().max(late));
                }
            })
        };
        nimgo::yield_now();
        let start = Instant::now();
        let readers: Vec<_> = paths
            .iter()
            .cloned()
            .map(|path| {
                nimgo::go(move || {
                    let mut bytes = Vec::new();
                    let mut file = nimgo::GoFile::open(&path).expect("open");
                    file.read_to_end(&mut bytes).expect("read");
                    // Check one byte per page here (a full sum of 200 MiB on
                    // the loop's thread would itself delay the ticker) and
                    // let the buffer go, as a consumer would.
                    let sampled = bytes
                        .iter()
                        .step_by(4096)
                        .map(|&b| u64::from(b))
                        .sum::<u64>();
                    (bytes.len(), sampled)
                })
            })
            .collect();
        for (i, (len, sum)) in nimgo::wait_all(readers).into_iter().enumerate() {
            assert_eq!(len, FILE_SIZE, "file {i} length");
            let pages = (FILE_SIZE / 4096) as u64;
            assert_eq!(sum, (i % 256) as u64 * pages, "file {i} contents");
        }
        let wall = start.elapsed();
        done.set(true);
        ticker.wait();
        (wall, worst.get())
    })
}

fn pipe_nimgo() -> Duration {
    nimgo::with_event_loop(|| {
        let (mut reader, mut writer) = nimgo::pipe().expect("pipe");
        let start = Instant::now();
        let producer = nimgo::go(move || {
            let block = vec![7u8; PIPE_WRITE];
            for _ in 0..PIPE_TOTAL / PIPE_WRITE {
                writer.write_all(&block).expect("write");
            }
        });
        let consumer = nimgo::go(move || {
            let mut buf = vec![0u8; PIPE_WRITE];
            let mut total = 0;
            loop {
                let n = reader.read(&mut buf).expect("read");
                if n == 0 {
                    return total;
                }
                total += n;
            }
        });
        producer.wait();
        assert_eq!(consumer.wait(), PIPE_TOTAL);
        start.elapsed()
    })
}

fn pipe_std() -> Duration {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a writable array of two ints, as pipe2 needs.
    let result = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(result, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 succeeded: both descriptors are open and owned by nobody.
    let (mut reader, mut writer) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    let start = Instant::now();
    let producer = std::thread::spawn(move || {
        let block = vec![7u8; PIPE_WRITE];
        for _ in 0..PIPE_TOTAL / PIPE_WRITE {
            writer.write_all(&block).expect("write");
        }
    });
    let mut buf = vec![0u8; PIPE_WRITE];
    let mut total = 0;
    loop {
        let n = reader.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        total += n;
    }
    producer.join().expect("producer");
    assert_eq!(total, PIPE_TOTAL);
    start.elapsed()
}

fn main() {
    let dir = std::env::temp_dir().join("nimgo-file-offload");
    let paths = make_files(&dir);
    // Warm the cache once, then measure warm runs.
    file_offload(&paths);
    for run in 0..3 {
        let (wall, worst) = file_offload(&paths);
        println!(
            "bench=file_offload n={FILES} value={:.1} unit=ms cache=warm run={run} worst_tick_us={}",
            wall.as_secs_f64() * 1e3,
            worst.as_micros()
        );
    }
    for run in 0..3 {
        for path in &paths {
            nimgo::GoFile::open(path)
                .and_then(|file| file.evict_cache())
                .expect("evict");
        }
        let (wall, worst) = file_offload(&paths);
        println!(
            "bench=file_offload n={FILES} value={:.1} unit=ms cache=cold run={run} worst_tick_us={}",
            wall.as_secs_f64() * 1e3,
            worst.as_micros()
        );
    }
    for run in 0..3 {
        let ours = pipe_nimgo();
        let theirs = pipe_std();
        let gib = |d: Duration| PIPE_TOTAL as f64 / d.as_secs_f64() / f64::from(1u32 << 30);
        println!(
            "bench=pipe_throughput n={} value={:.2} unit=GiB/s run={run} std_threads={:.2} ratio={:.2}",
            PIPE_TOTAL / PIPE_WRITE,
            gib(ours),
            gib(theirs),
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    }
}
