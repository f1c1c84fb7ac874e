//! GoChannel and Select: semantics, parking, cancellation, stress.

mod util;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nimgo::channel::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use nimgo::{GoChannel, Runtime, Select, go, with_event_loop, with_timeout, yield_now};
use util::{Random, Tally, thread_with_loop};

const SHORT: Duration = Duration::from_millis(2);

#[test]
fn buffered_is_fifo_and_bounded() {
    let channel = GoChannel::bounded(2);
    assert_eq!(channel.capacity(), Some(2));
    assert!(channel.is_empty());
    channel.send(1).unwrap();
    channel.try_send(2).unwrap();
    assert_eq!(channel.len(), 2);
    assert_eq!(channel.try_send(3), Err(TrySendError::Full(3)));
    assert_eq!(channel.recv(), Ok(1));
    channel.send(3).unwrap();
    assert_eq!(channel.try_recv(), Ok(2));
    assert_eq!(channel.recv(), Ok(3));
    assert_eq!(channel.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn unbounded_never_waits() {
    let channel = GoChannel::unbounded();
    assert_eq!(channel.capacity(), None);
    for i in 0..10_000 {
        channel.try_send(i).unwrap();
    }
    assert_eq!(channel.len(), 10_000);
    assert!((0..10_000).eq(channel.iter().take(10_000)));
}

#[test]
fn rendezvous_needs_a_receiver() {
    let channel = GoChannel::bounded(0);
    assert_eq!(channel.try_send(1), Err(TrySendError::Full(1)));
    assert_eq!(
        channel.send_timeout(2, SHORT),
        Err(SendTimeoutError::Timeout(2))
    );
    assert!(channel.is_empty());
    with_event_loop(|| {
        let sent = Rc::new(Cell::new(false));
        let sender = {
            let (channel, sent) = (channel.clone(), sent.clone());
            go(move || {
                channel.send(5).unwrap();
                sent.set(true);
            })
        };
        let receiver = {
            let (channel, sent) = (channel.clone(), sent.clone());
            go(move || {
                // The sender ran first and is parked: nothing was buffered.
                assert!(!sent.get());
                assert!(channel.is_empty());
                channel.recv().unwrap()
            })
        };
        assert_eq!(receiver.wait(), 5);
        sender.wait();
        assert!(sent.get());
    });
}

#[test]
fn two_coroutines_on_one_thread_pair_up() {
    with_event_loop(|| {
        let ping = GoChannel::bounded(0);
        let pong = GoChannel::bounded(0);
        let echo = {
            let (ping, pong) = (ping.clone(), pong.clone());
            go(move || {
                for value in &ping {
                    pong.send(value + 1).unwrap();
                }
            })
        };
        let driver = go(move || {
            for i in 0..1000 {
                ping.send(i).unwrap();
                assert_eq!(pong.recv(), Ok(i + 1));
            }
            ping.close();
        });
        driver.wait();
        echo.wait();
    });
}

#[test]
fn try_errors_and_timeouts_give_the_value_back() {
    let channel = GoChannel::bounded(1);
    channel.send(String::from("a")).unwrap();
    assert_eq!(
        channel
            .try_send(String::from("b"))
            .unwrap_err()
            .into_inner(),
        "b"
    );
    let error = channel.send_timeout(String::from("c"), SHORT).unwrap_err();
    assert!(error.is_timeout());
    assert_eq!(error.into_inner(), "c");
    assert_eq!(channel.recv().unwrap(), "a");
    assert_eq!(channel.recv_timeout(SHORT), Err(RecvTimeoutError::Timeout));
    channel.close();
    assert_eq!(
        channel.try_send(String::from("d")),
        Err(TrySendError::Closed(String::from("d")))
    );
    assert_eq!(
        channel.send_timeout(String::from("e"), SHORT),
        Err(SendTimeoutError::Closed(String::from("e")))
    );
    assert_eq!(channel.recv_timeout(SHORT), Err(RecvTimeoutError::Closed));
    assert_eq!(channel.try_recv(), Err(TryRecvError::Closed));
    // Display and Debug work without `T: Debug`.
    struct Opaque;
    let error = SendError(Opaque);
    assert_eq!(format!("{error:?}"), "SendError { .. }");
    assert!(!error.to_string().is_empty());
}

#[test]
fn close_drains_then_errs_and_wakes_every_waiter() {
    with_event_loop(|| {
        let empty = GoChannel::<u32>::bounded(1);
        let full = GoChannel::bounded(1);
        full.send(100).unwrap();
        let receivers: Vec<_> = (0..3)
            .map(|_| {
                let empty = empty.clone();
                go(move || empty.recv())
            })
            .collect();
        let senders: Vec<_> = (0..2)
            .map(|i| {
                let full = full.clone();
                go(move || full.send(i))
            })
            .collect();
        let closer = {
            let (empty, full) = (empty.clone(), full.clone());
            // Spawned last: runs after every waiter above has parked.
            go(move || {
                assert!(empty.close());
                assert!(full.close());
            })
        };
        closer.wait();
        for receiver in receivers {
            assert_eq!(receiver.wait(), Err(RecvError));
        }
        let mut returned: Vec<u32> = senders
            .into_iter()
            .map(|sender| sender.wait().unwrap_err().into_inner())
            .collect();
        returned.sort();
        assert_eq!(returned, [0, 1]);
        // What was buffered before the close is still received.
        assert_eq!(full.recv(), Ok(100));
        assert_eq!(full.recv(), Err(RecvError));
    });
}

#[test]
fn a_blocked_recv_parks_only_its_coroutine() {
    with_event_loop(|| {
        let channel = GoChannel::bounded(0);
        let progress = Rc::new(Cell::new(0));
        let receiver = {
            let (channel, progress) = (channel.clone(), progress.clone());
            go(move || {
                let value = channel.recv().unwrap();
                (value, progress.get())
            })
        };
        let worker = {
            let progress = progress.clone();
            go(move || {
                for _ in 0..10 {
                    progress.set(progress.get() + 1);
                    yield_now();
                }
                channel.send(42).unwrap();
            })
        };
        assert_eq!(receiver.wait(), (42, 10));
        worker.wait();
    });
}

/// Ping-pong between coroutines on two workers: every hand-off is a race
/// between a receiver spinning before it parks and a sender on the other
/// core, and the final close races a receiver too. A lost wake-up shows as
/// a receive that times out (a liveness bound far above any hand-off, not
/// a speed check).
#[test]
fn ping_pong_across_workers_loses_no_wake_up() {
    const ROUNDS: u64 = 20_000;
    const LOST: Duration = Duration::from_secs(20);
    let runtime = Runtime::builder().workers(2).build().unwrap();
    for capacity in [0, 1, 2] {
        let ping = GoChannel::<u64>::bounded(capacity);
        let pong = GoChannel::<u64>::bounded(capacity);
        let echo = {
            let (ping, pong) = (ping.clone(), pong.clone());
            runtime.spawn_on(1, move || {
                let mut echoed = 0;
                loop {
                    match ping.recv_timeout(LOST) {
                        Ok(value) => pong.send(value + 1).unwrap(),
                        Err(RecvTimeoutError::Closed) => return echoed,
                        Err(RecvTimeoutError::Timeout) => panic!("lost wake-up (echo)"),
                    }
                    echoed += 1;
                }
            })
        };
        let driver = runtime.spawn_on(0, move || {
            let mut value = 0;
            for _ in 0..ROUNDS {
                ping.send(value).unwrap();
                value = pong.recv_timeout(LOST).expect("lost wake-up (driver)");
            }
            ping.close();
            value
        });
        assert_eq!(driver.wait(), ROUNDS, "capacity {capacity}");
        assert_eq!(echo.wait(), ROUNDS, "capacity {capacity}");
    }
}

#[test]
fn plain_threads_and_coroutines_of_several_threads_share_a_channel() {
    const PER_PRODUCER: u64 = 500;
    let channel = GoChannel::bounded(3);
    let tally = Arc::new(Tally::new(6 * PER_PRODUCER as usize));
    let mut threads = Vec::new();
    // Two threads with a dispatcher: two producer and one consumer
    // coroutines each.
    for thread_index in 0..2u64 {
        let (channel, tally) = (channel.clone(), tally.clone());
        threads.push(thread_with_loop(move || {
            for producer in 0..2u64 {
                let channel = channel.clone();
                let first = (thread_index * 2 + producer) * PER_PRODUCER;
                let _ = go(move || {
                    for message in first..first + PER_PRODUCER {
                        channel.send(message).unwrap();
                    }
                });
            }
            let (channel, tally) = (channel.clone(), tally.clone());
            let _ = go(move || {
                for message in &channel {
                    tally.record(message);
                }
            });
        }));
    }
    // Two plain threads (no dispatcher) produce; one consumes.
    let mut producers = Vec::new();
    for producer in 4..6u64 {
        let channel = channel.clone();
        producers.push(thread::spawn(move || {
            let first = producer * PER_PRODUCER;
            for message in first..first + PER_PRODUCER {
                channel.send(message).unwrap();
            }
        }));
    }
    let consumer = {
        let (channel, tally) = (channel.clone(), tally.clone());
        thread::spawn(move || {
            for message in &channel {
                tally.record(message);
            }
        })
    };
    for producer in producers {
        producer.join().unwrap();
    }
    // Coroutine producers are done once every message has arrived.
    while tally.count() < 6 * PER_PRODUCER as usize {
        thread::yield_now();
    }
    channel.close();
    for thread in threads {
        thread.join().unwrap();
    }
    consumer.join().unwrap();
    tally.assert_exactly_once();
}

#[test]
fn cancel_of_parked_receivers_loses_nothing() {
    const MESSAGES: u64 = 2000;
    for capacity in [0, 1, 4] {
        let tally = Arc::new(Tally::new(MESSAGES as usize));
        with_event_loop(|| {
            let channel = GoChannel::bounded(capacity);
            let spawn_receiver = |channel: &GoChannel<u64>| {
                let (channel, tally) = (channel.clone(), tally.clone());
                go(move || {
                    for message in &channel {
                        tally.record(message);
                    }
                })
            };
            let mut receivers: Vec<_> = (0..4).map(|_| spawn_receiver(&channel)).collect();
            let mut random = Random::new(capacity as u64 + 1);
            for message in 0..MESSAGES {
                if random.below(3) == 0 {
                    // Cancel parked receivers, then send before they run:
                    // the send may still hand its value to one of them
                    // (cancelled, not yet unwound); that one must give the
                    // value back to the channel when it unwinds.
                    let victims = random.below(receivers.len() as u64 + 1) as usize;
                    let cancelled: Vec<_> = receivers.drain(..victims).collect();
                    for victim in &cancelled {
                        victim.cancel();
                        // Replacements first: a rendezvous send needs a
                        // live receiver.
                        receivers.push(spawn_receiver(&channel));
                    }
                    channel.send(message).unwrap();
                    for victim in cancelled {
                        let _ = victim.join();
                    }
                } else {
                    channel.send(message).unwrap();
                }
            }
            channel.close();
            for receiver in receivers {
                receiver.wait();
            }
        });
        tally.assert_exactly_once();
    }
}

#[test]
fn cancel_of_parked_senders_returns_or_delivers() {
    // A cancelled sender's value is either delivered or dropped with the
    // sender, never delivered twice; a sender that returned Ok delivered.
    with_event_loop(|| {
        let channel = GoChannel::bounded(0);
        let confirmed = Rc::new(Cell::new(0u64));
        let senders: Vec<_> = (0..20u64)
            .map(|message| {
                let (channel, confirmed) = (channel.clone(), confirmed.clone());
                go(move || {
                    channel.send(message).unwrap();
                    confirmed.set(confirmed.get() | 1 << message);
                })
            })
            .collect();
        let mut received = 0u64;
        for (index, sender) in senders.iter().enumerate() {
            if index % 2 == 0 {
                sender.cancel();
            }
            if let Ok(message) = channel.try_recv() {
                assert_eq!(received & 1 << message, 0);
                received |= 1 << message;
            }
            yield_now();
        }
        while let Ok(message) = channel.recv_timeout(SHORT) {
            assert_eq!(received & 1 << message, 0);
            received |= 1 << message;
        }
        for sender in senders {
            let _ = sender.join();
        }
        // Every confirmed send was received.
        assert_eq!(received & confirmed.get(), confirmed.get());
        // Senders never cancelled all delivered.
        for message in (1..20).step_by(2) {
            assert_ne!(received & 1 << message, 0);
        }
    });
}

#[test]
fn with_timeout_around_recv_loses_nothing() {
    const MESSAGES: u64 = 3000;
    for capacity in [0, 2] {
        let channel = GoChannel::bounded(capacity);
        let tally = Arc::new(Tally::new(MESSAGES as usize));
        let producer = {
            let channel = channel.clone();
            thread_with_loop(move || {
                for message in 0..MESSAGES {
                    channel.send(message).unwrap();
                }
                channel.close();
            })
        };
        let consumers: Vec<_> = (0..2u64)
            .map(|seed| {
                let (channel, tally) = (channel.clone(), tally.clone());
                thread_with_loop(move || {
                    let mut random = Random::new(seed + 11);
                    loop {
                        let timeout = Duration::from_micros(random.below(50));
                        // A receive unwound after a value was handed to it
                        // gives the value back to the channel.
                        match with_timeout(timeout, || channel.recv()) {
                            Ok(Ok(message)) => tally.record(message),
                            Ok(Err(RecvError)) => break,
                            Err(_) => {}
                        }
                    }
                })
            })
            .collect();
        producer.join().unwrap();
        for consumer in consumers {
            consumer.join().unwrap();
        }
        tally.assert_exactly_once();
    }
}

#[test]
fn with_timeout_around_send_never_duplicates() {
    // A send unwound by its scope either happened (delivered once) or did
    // not (its value is dropped with the call): `Err(Elapsed)` cannot say
    // which, as for any work inside a scope. A send that returned is
    // delivered exactly once.
    const MESSAGES: u64 = 3000;
    for capacity in [0, 2] {
        let channel = GoChannel::bounded(capacity);
        let tally = Arc::new(Tally::new(MESSAGES as usize));
        let producer = {
            let channel = channel.clone();
            thread_with_loop(move || {
                let mut random = Random::new(7);
                let mut confirmed = Vec::new();
                for message in 0..MESSAGES {
                    let timeout = Duration::from_micros(random.below(50));
                    if let Ok(result) = with_timeout(timeout, || channel.send(message)) {
                        result.unwrap();
                        confirmed.push(message);
                    }
                }
                channel.close();
                confirmed
            })
        };
        let consumer = {
            let (channel, tally) = (channel.clone(), tally.clone());
            thread_with_loop(move || {
                for message in &channel {
                    tally.record(message);
                }
            })
        };
        let confirmed = producer.join().unwrap();
        consumer.join().unwrap();
        for message in confirmed {
            assert!(tally.received(message), "confirmed message {message} lost");
        }
    }
}

#[test]
fn stress_mixed_producers_consumers_timeouts_close() {
    const PER_PRODUCER: u64 = 2000;
    const PRODUCERS: u64 = 8 + 2;
    for capacity in [Some(0), Some(3), None] {
        let channel = match capacity {
            Some(capacity) => GoChannel::bounded(capacity),
            None => GoChannel::unbounded(),
        };
        let tally = Arc::new(Tally::new((PER_PRODUCER * PRODUCERS) as usize));
        let producers_left = Arc::new(AtomicUsize::new(PRODUCERS as usize));
        let produce = {
            let (channel, producers_left) = (channel.clone(), producers_left.clone());
            move |producer: u64| {
                let mut random = Random::new(producer + 100);
                let first = producer * PER_PRODUCER;
                for mut message in first..first + PER_PRODUCER {
                    loop {
                        let timeout = Duration::from_micros(random.below(100));
                        match channel.send_timeout(message, timeout) {
                            Ok(()) => break,
                            Err(SendTimeoutError::Timeout(back)) => message = back,
                            Err(SendTimeoutError::Closed(_)) => panic!("closed too early"),
                        }
                    }
                }
                if producers_left.fetch_sub(1, Ordering::AcqRel) == 1 {
                    channel.close();
                }
            }
        };
        let consume = {
            let (channel, tally) = (channel.clone(), tally.clone());
            move |seed: u64| {
                let mut random = Random::new(seed);
                loop {
                    let timeout = Duration::from_micros(random.below(100));
                    if random.below(2) == 0 {
                        match channel.recv_timeout(timeout) {
                            Ok(message) => tally.record(message),
                            Err(RecvTimeoutError::Timeout) => {}
                            Err(RecvTimeoutError::Closed) => break,
                        }
                    } else {
                        match with_timeout(timeout, || channel.recv()) {
                            Ok(Ok(message)) => tally.record(message),
                            Ok(Err(RecvError)) => break,
                            Err(_) => {}
                        }
                    }
                }
            }
        };
        // Coroutines on both workers of a runtime, plus plain threads.
        let runtime = Runtime::builder().workers(2).build().unwrap();
        let mut tasks = Vec::new();
        for worker in 0..2u64 {
            for producer in 0..4 {
                let produce = produce.clone();
                tasks.push(
                    runtime.spawn_on(worker as usize, move || produce(worker * 4 + producer)),
                );
            }
            for consumer in 0..2 {
                let consume = consume.clone();
                tasks.push(
                    runtime.spawn_on(worker as usize, move || consume(worker * 2 + consumer)),
                );
            }
        }
        let mut handles = Vec::new();
        for producer in 8..10 {
            let produce = produce.clone();
            handles.push(thread::spawn(move || produce(producer)));
        }
        let consume_plain = consume.clone();
        handles.push(thread::spawn(move || consume_plain(99)));
        for handle in handles {
            handle.join().unwrap();
        }
        nimgo::wait_all(tasks);
        tally.assert_exactly_once();
    }
}

#[test]
fn select_recv_send_default_timeout() {
    let a = GoChannel::<u32>::bounded(1);
    let b = GoChannel::<&str>::bounded(1);
    // Default when nothing is ready.
    assert_eq!(
        Select::new()
            .recv(&a, |_| "a")
            .recv(&b, |_| "b")
            .default(|| "default")
            .wait(),
        "default"
    );
    // Timeout when nothing becomes ready.
    assert_eq!(
        Select::new()
            .recv(&a, |_| "a")
            .timeout(SHORT, || "timeout")
            .wait(),
        "timeout"
    );
    // A ready receive wins over the default.
    b.send("x").unwrap();
    assert_eq!(
        Select::new()
            .recv(&a, |_| String::from("a"))
            .recv(&b, |v| v.unwrap().to_owned())
            .default(|| String::from("default"))
            .wait(),
        "x"
    );
    // A send arm on a full channel is not ready; on an empty one it is.
    a.send(1).unwrap();
    let fired = Select::new()
        .send(&a, 2, |r| r.map(|()| "a"))
        .send(&b, "y", |r| {
            r.map(|()| "b").map_err(|e| SendError(e.0.len() as u32))
        })
        .wait();
    assert_eq!(fired, Ok("b"));
    assert_eq!(b.recv(), Ok("y"));
    // A closed channel makes its receive arm fire with an error.
    let closed = GoChannel::<u32>::bounded(0);
    closed.close();
    assert_eq!(
        Select::new().recv(&closed, |v| v).recv(&a, |v| v).wait(),
        Err(RecvError)
    );
}

#[test]
fn select_waits_on_several_channels_with_one_waiter() {
    const MESSAGES: u64 = 2000;
    let first = GoChannel::bounded(0);
    let second = GoChannel::bounded(1);
    let out = GoChannel::bounded(0);
    let tally = Arc::new(Tally::new(MESSAGES as usize));
    let producers: Vec<_> = [(first.clone(), 0), (second.clone(), 1)]
        .into_iter()
        .map(|(channel, parity)| {
            thread_with_loop(move || {
                for message in (parity..MESSAGES).step_by(2) {
                    channel.send(message).unwrap();
                }
            })
        })
        .collect();
    let consumer = {
        let (out, tally) = (out.clone(), tally.clone());
        thread::spawn(move || {
            for message in &out {
                tally.record(message);
            }
        })
    };
    // The selecting side runs in a coroutine: receive from either input,
    // forward with a send arm, with a timeout arm that just loops.
    with_event_loop(|| {
        let _ = go(move || {
            let mut received = 0;
            let mut pending: Option<u64> = None;
            while received < MESSAGES || pending.is_some() {
                let mut select = Select::new();
                if let Some(message) = pending {
                    select = select.send(&out, message, |r| {
                        r.unwrap();
                        (None, false)
                    });
                } else {
                    select = select
                        .recv(&first, |v| (Some(v.unwrap()), true))
                        .recv(&second, |v| (Some(v.unwrap()), true));
                }
                let (next, got) = select
                    .timeout(Duration::from_micros(200), || (pending, false))
                    .wait();
                if got {
                    received += 1;
                }
                pending = next;
            }
            out.close();
        });
    });
    for producer in producers {
        producer.join().unwrap();
    }
    consumer.join().unwrap();
    tally.assert_exactly_once();
}

/// `cargo test --release --test channel -- --ignored --nocapture pingpong`
#[test]
#[ignore = "benchmark: run in release"]
fn pingpong_local_benchmark() {
    const ROUND_TRIPS: u32 = 1_000_000;
    let elapsed = with_event_loop(|| {
        let ping = GoChannel::bounded(1);
        let pong = GoChannel::bounded(1);
        let echo = {
            let (ping, pong) = (ping.clone(), pong.clone());
            go(move || {
                for _ in 0..ROUND_TRIPS {
                    let value: u32 = ping.recv().unwrap();
                    pong.send(value).unwrap();
                }
            })
        };
        let driver = go(move || {
            let started = Instant::now();
            for i in 0..ROUND_TRIPS {
                ping.send(i).unwrap();
                assert_eq!(pong.recv(), Ok(i));
            }
            started.elapsed()
        });
        echo.wait();
        driver.wait()
    });
    println!(
        "pingpong_local: {:.1} ns per round trip",
        elapsed.as_nanos() as f64 / f64::from(ROUND_TRIPS)
    );
}
