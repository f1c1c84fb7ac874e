//! The per-thread dispatcher: parking on mio sources, timeouts, running the
//! loop by hand, and cross-thread wake-ups.

mod util;

use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::Interest;
use nimgo::dispatcher::Registration;

#[test]
fn a_coroutine_parks_until_its_pipe_is_readable_while_others_run() {
    let (mut sender, mut receiver) = mio::unix::pipe::new().unwrap();
    let registration = Registration::new(&mut receiver, Interest::READABLE).unwrap();
    let ticks = Rc::new(Cell::new(0));
    let reader = nimgo::go(move || {
        let mut buffer = [0u8; 16];
        let count = registration
            .io(Interest::READABLE, None, || receiver.read(&mut buffer))
            .unwrap();
        buffer[..count].to_vec()
    });
    let ticker = nimgo::go({
        let ticks = ticks.clone();
        move || {
            for _ in 0..3 {
                ticks.set(ticks.get() + 1);
                nimgo::yield_now();
            }
            sender.write_all(b"ready").unwrap();
        }
    });
    assert_eq!(reader.wait(), b"ready");
    ticker.wait();
    assert_eq!(
        ticks.get(),
        3,
        "the other task ran while the reader was parked"
    );
}

#[test]
fn waiting_for_io_times_out_and_loses_nothing() {
    let (mut sender, mut receiver) = mio::unix::pipe::new().unwrap();
    let registration = Registration::new(&mut receiver, Interest::READABLE).unwrap();
    let result = nimgo::go_and_wait(move || {
        let mut buffer = [0u8; 8];
        let deadline = Instant::now() + Duration::from_millis(5);
        let first = registration.io(Interest::READABLE, Some(deadline), || {
            receiver.read(&mut buffer)
        });
        let timed_out = first.unwrap_err().kind() == ErrorKind::TimedOut;
        (timed_out, registration, receiver)
    });
    let (timed_out, registration, mut receiver) = result;
    assert!(timed_out);
    sender.write_all(b"late").unwrap();
    let bytes = nimgo::go_and_wait(move || {
        let mut buffer = [0u8; 8];
        let count = registration
            .io(Interest::READABLE, None, || receiver.read(&mut buffer))
            .unwrap();
        buffer[..count].to_vec()
    });
    assert_eq!(bytes, b"late");
}

#[test]
fn the_root_context_can_park_on_io_and_drive_the_loop() {
    let (mut sender, mut receiver) = mio::unix::pipe::new().unwrap();
    let registration = Registration::new(&mut receiver, Interest::READABLE).unwrap();
    let writer = nimgo::go(move || {
        nimgo::sleep(Duration::from_millis(2));
        sender.write_all(b"x").unwrap();
    });
    let mut buffer = [0u8; 1];
    let count = registration
        .io(Interest::READABLE, None, || receiver.read(&mut buffer))
        .unwrap();
    assert_eq!(count, 1);
    writer.wait();
}

#[test]
fn run_once_runs_ready_tasks_without_blocking() {
    let done = Rc::new(Cell::new(0));
    for _ in 0..5 {
        let done = done.clone();
        nimgo::go(move || done.set(done.get() + 1));
    }
    assert!(nimgo::dispatcher::run_once(Some(Duration::ZERO)).unwrap());
    assert_eq!(done.get(), 5);
    // Nothing left: a zero-timeout turn runs nothing and returns.
    assert!(!nimgo::dispatcher::run_once(Some(Duration::ZERO)).unwrap());
}

#[test]
fn cross_thread_wakes_reach_a_sleeping_loop() {
    // Each wait below parks the root context in epoll; the task completes on
    // another thread's loop and must wake this one through its inbox.
    for round in 0..200u32 {
        let (sender, receiver) = std::sync::mpsc::channel();
        let worker = std::thread::spawn(move || {
            let task = nimgo::go(move || round * 2);
            sender.send(task).unwrap();
            nimgo::run_event_loop();
        });
        let task = receiver.recv().unwrap();
        // This thread has a dispatcher (from other tests or this call), so
        // waiting parks in its loop.
        let value = nimgo::go_and_wait(move || task.wait());
        assert_eq!(value, round * 2);
        worker.join().unwrap();
    }
}

/// Receives from a channel in its destructor.
struct ReceiveOnDrop(nimgo::GoChannel<u8>);

impl Drop for ReceiveOnDrop {
    fn drop(&mut self) {
        assert_eq!(self.0.recv(), Ok(7));
    }
}

#[test]
fn a_nested_park_of_the_root_does_not_swallow_the_outer_wake() {
    // Cancelling an unstarted task from another thread makes the root's loop
    // drop its closure, whose destructor parks the root again while the
    // root is already parked in `wait`.
    let channel = nimgo::GoChannel::<u8>::bounded(0);
    let guard = ReceiveOnDrop(channel.clone());
    let victim = nimgo::go(move || {
        let _guard = &guard;
    });
    std::thread::spawn(move || victim.cancel()).join().unwrap();
    let sender = nimgo::go(move || {
        nimgo::sleep(Duration::from_millis(5));
        channel.send(7).unwrap();
    });
    nimgo::go(|| nimgo::sleep(Duration::from_millis(15))).wait();
    sender.wait();
}
