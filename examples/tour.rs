//! A tour of nimgo, after NimGo's README example: tasks and their return
//! values, closures sharing data, sleeps that print in wake order,
//! `wait_all`, a timeout, and a read of standard input under a timeout.
//!
//! Run it with `cargo run --release --example tour`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

fn main() {
    let start = Instant::now();
    nimgo::with_event_loop(|| {
        // A task returns a value; `go` starts it lazily, `wait` collects it.
        let answer = nimgo::go(|| 6 * 7);
        println!("the answer is {}", answer.wait());

        // Closures share data with the tasks they start (no Send needed:
        // tasks stay on this thread).
        let log = Rc::new(RefCell::new(Vec::new()));
        let writers: Vec<_> = ["alpha", "beta", "gamma"]
            .into_iter()
            .map(|name| {
                let log = log.clone();
                nimgo::go(move || log.borrow_mut().push(name))
            })
            .collect();
        nimgo::wait_all(writers);
        println!("shared log: {:?}", log.borrow());

        // Sleeps run concurrently and print in the order they wake.
        let sleepers: Vec<_> = [30u64, 10, 20]
            .into_iter()
            .map(|millis| {
                nimgo::go(move || {
                    nimgo::sleep(Duration::from_millis(millis));
                    println!("  woke after {millis} ms");
                    millis
                })
            })
            .collect();
        let total: u64 = nimgo::wait_all(sleepers).into_iter().sum();
        println!("three sleeps, {total} ms in all, took about 30 ms together");

        // A task that is too slow: wait_timeout gives it back, cancel ends it.
        let slow = nimgo::go(|| {
            nimgo::sleep(Duration::from_secs(60));
            "never"
        });
        match slow.wait_timeout(Duration::from_millis(20)) {
            Ok(value) => println!("slow task answered {value}"),
            Err(slow) => {
                println!("slow task still running after 20 ms: cancelling it");
                slow.cancel();
                println!("cancelled: {}", slow.join().unwrap_err());
            }
        }

        // A deadline over a whole piece of work, however deep it parks.
        let outcome = nimgo::with_timeout(Duration::from_millis(15), || {
            nimgo::go_and_wait(|| nimgo::sleep(Duration::from_millis(5)));
            nimgo::sleep(Duration::from_secs(60));
        });
        println!("with_timeout: {outcome:?}");

        // Standard input under a timeout: a terminal gets 2 s to type a
        // line; a pipe, a file or /dev/null answers at once.
        match nimgo::stdin() {
            Ok(mut stdin) => {
                println!("type something within 2 s (or pipe it in):");
                match stdin.read_chunk(Some(Duration::from_secs(2))) {
                    Ok(bytes) if bytes.is_empty() => println!("stdin: end of input"),
                    Ok(bytes) => {
                        println!("stdin: {:?}", String::from_utf8_lossy(&bytes).trim_end())
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                        println!("stdin: nothing within 2 s")
                    }
                    Err(error) => println!("stdin: {error}"),
                }
            }
            Err(error) => println!("stdin unavailable: {error}"),
        }
    });
    println!("tour finished in {:?}", start.elapsed());
}
