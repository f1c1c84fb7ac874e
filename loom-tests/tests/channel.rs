//! GoChannel's waiter protocol (`src/channel/waiters.rs`) across threads:
//! every message is delivered exactly once, whatever the interleaving.
//!
//! Under loom every caller is a plain thread parked on its thread parker;
//! a park with a deadline returns `TimedOut` at once unless a wake-up is
//! already there, which models the timeout firing at any moment.
#![cfg(loom)]

use std::time::Duration;

use loom::thread;
use nimgo::GoChannel;
use nimgo::channel::{RecvTimeoutError, SendTimeoutError, TrySendError};

const LONG: Duration = Duration::from_secs(3600);

#[test]
fn send_to_a_parked_receiver() {
    loom::model(|| {
        let channel = GoChannel::bounded(1);
        let receiver = {
            let channel = channel.clone();
            thread::spawn(move || (channel.recv().unwrap(), channel.recv().unwrap()))
        };
        channel.send(1).unwrap();
        channel.send(2).unwrap();
        assert_eq!(receiver.join().unwrap(), (1, 2));
        assert!(channel.is_empty());
    });
}

#[test]
fn rendezvous_hand_off() {
    loom::model(|| {
        let channel = GoChannel::bounded(0);
        let sender = {
            let channel = channel.clone();
            thread::spawn(move || channel.send(7).unwrap())
        };
        assert_eq!(channel.recv(), Ok(7));
        sender.join().unwrap();
        assert!(channel.is_empty());
    });
}

#[test]
fn timeouts_racing_a_rendezvous() {
    loom::model(|| {
        let channel = GoChannel::bounded(0);
        let sender = {
            let channel = channel.clone();
            thread::spawn(move || channel.send_timeout(5, LONG))
        };
        let received = channel.recv_timeout(LONG);
        let sent = sender.join().unwrap();
        match (sent, received) {
            (Ok(()), Ok(5)) => {}
            (Err(SendTimeoutError::Timeout(5)), Err(RecvTimeoutError::Timeout)) => {}
            other => panic!("lost or duplicated: {other:?}"),
        }
        assert!(channel.is_empty());
    });
}

#[test]
fn receive_timeout_racing_a_buffered_send() {
    loom::model(|| {
        let channel = GoChannel::bounded(1);
        let sender = {
            let channel = channel.clone();
            thread::spawn(move || channel.send(9).unwrap())
        };
        let received = channel.recv_timeout(LONG).ok();
        sender.join().unwrap();
        // A timed-out receive leaves the value in the channel (given back
        // if it had been handed over).
        let left = channel.try_recv().ok();
        assert_eq!(
            received.into_iter().chain(left).collect::<Vec<_>>(),
            [9],
            "exactly once"
        );
    });
}

#[test]
fn close_racing_a_receive() {
    loom::model(|| {
        let channel = GoChannel::bounded(1);
        let sender = {
            let channel = channel.clone();
            thread::spawn(move || {
                let returned = match channel.try_send(1) {
                    Ok(()) => None,
                    Err(TrySendError::Closed(value)) => Some(value),
                    Err(TrySendError::Full(_)) => unreachable!("capacity 1, one send"),
                };
                channel.close();
                returned
            })
        };
        let closer = {
            let channel = channel.clone();
            thread::spawn(move || channel.close())
        };
        let received: Vec<i32> = channel.iter().collect();
        let returned = sender.join().unwrap();
        closer.join().unwrap();
        assert_eq!(received.len() + usize::from(returned.is_some()), 1);
    });
}

#[test]
fn select_registers_one_waiter_on_two_channels() {
    loom::model(|| {
        let first = GoChannel::bounded(0);
        let second = GoChannel::bounded(0);
        let senders: Vec<_> = [(first.clone(), 1), (second.clone(), 2)]
            .into_iter()
            .map(|(channel, value)| {
                thread::spawn(move || {
                    channel
                        .send_timeout(value, LONG)
                        .err()
                        .map(|e| e.into_inner())
                })
            })
            .collect();
        let fired = nimgo::Select::new()
            .recv(&first, |value| value.ok())
            .recv(&second, |value| value.ok())
            .timeout(LONG, || None)
            .wait();
        let returned: Vec<i32> = senders
            .into_iter()
            .filter_map(|sender| sender.join().unwrap())
            .collect();
        // Each value was received by the select or returned to its sender,
        // never both, never neither.
        let mut all: Vec<i32> = fired.into_iter().chain(returned).collect();
        all.sort();
        assert_eq!(all, [1, 2]);
    });
}

#[test]
fn plain_and_select_receivers_share_a_channel() {
    loom::model(|| {
        let channel = GoChannel::bounded(0);
        let plain = {
            let channel = channel.clone();
            thread::spawn(move || channel.recv().ok())
        };
        let sender = {
            let channel = channel.clone();
            thread::spawn(move || {
                let returned = channel.send_timeout(4, LONG).err().map(|e| e.into_inner());
                channel.close();
                returned
            })
        };
        let selected = nimgo::Select::new()
            .recv(&channel, |value| value.ok())
            .timeout(LONG, || None)
            .wait();
        let returned = sender.join().unwrap();
        let received = plain.join().unwrap();
        let all: Vec<i32> = [selected, received, returned]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(all, [4], "exactly once");
    });
}
