//! A pipeline across the runtime's workers, stages connected by GoChannels:
//!
//! ```text
//!   source ──numbers──► square × 4 ──squares──► sum ──► result
//! ```
//!
//! The source sends 1..=N; four squaring stages (spread over the workers)
//! read from one channel and write to another; the sum stage adds what
//! arrives until the channel closes. The result is checked against the
//! closed form. Run it with `cargo run --release --example pipeline`.

use std::time::Instant;

use nimgo::{GoChannel, Runtime};

const N: u64 = 200_000;
const SQUARERS: usize = 4;

fn main() -> std::io::Result<()> {
    let runtime = Runtime::new()?;
    let start = Instant::now();
    let total = runtime.block_on(|| {
        let numbers = GoChannel::<u64>::bounded(256);
        let squares = GoChannel::<u64>::bounded(256);

        let source = {
            let numbers = numbers.clone();
            nimgo::spawn(move || {
                for n in 1..=N {
                    numbers.send(n).expect("the squarers are gone");
                }
                numbers.close();
            })
        };
        let squarers: Vec<_> = (0..SQUARERS)
            .map(|_| {
                let (numbers, squares) = (numbers.clone(), squares.clone());
                nimgo::spawn(move || {
                    let mut count = 0;
                    for n in &numbers {
                        squares.send(n * n).expect("the sum stage is gone");
                        count += 1;
                    }
                    count
                })
            })
            .collect();
        let sum = {
            let squares = squares.clone();
            nimgo::spawn(move || squares.iter().sum::<u64>())
        };

        source.wait();
        let per_stage = nimgo::wait_all(squarers);
        // Every squarer saw the close: no more squares will come.
        squares.close();
        println!("numbers squared per stage: {per_stage:?}");
        sum.wait()
    });
    let expected = N * (N + 1) * (2 * N + 1) / 6;
    assert_eq!(total, expected, "the pipeline lost or duplicated a value");
    println!(
        "sum of squares of 1..={N} = {total} (checked) on {} workers in {:?}",
        runtime.workers(),
        start.elapsed()
    );
    Ok(())
}
