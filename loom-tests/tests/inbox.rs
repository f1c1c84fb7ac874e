//! The inbox protocol (`src/dispatcher/shared.rs`): a push racing the
//! dispatcher going to sleep is never lost, and a sleep is notified at
//! most once.
#![cfg(loom)]

use loom::thread;
use nimgo::__loom::{LoomRemote, LoomShared};

/// The dispatcher side: drain, else announce a sleep and "poll" (wait on
/// the notifier), until `expected` messages arrived. Returns how many
/// sleeps it announced and how many notifications it consumed.
fn run_dispatcher(shared: &LoomShared, expected: usize) -> (usize, usize) {
    let mut received = 0;
    let mut announced = 0;
    let mut consumed = 0;
    loop {
        received += shared.drain().len();
        if received == expected {
            return (announced, consumed);
        }
        announced += 1;
        if shared.prepare_sleep() {
            // If the wake-up were lost, this would block forever and loom
            // would report a deadlock.
            consumed += shared.notifier().wait();
            shared.finish_sleep();
        }
    }
}

#[test]
fn push_racing_sleep_is_never_lost() {
    loom::model(|| {
        let shared = LoomShared::new();
        let pusher = {
            let shared = shared.clone();
            thread::spawn(move || shared.push(LoomRemote::Wake { index: 1, epoch: 1 }))
        };
        let (announced, consumed) = run_dispatcher(&shared, 1);
        pusher.join().unwrap();
        // At most one notification per announced sleep, and none for a
        // dispatcher that never announced one (no needless wake).
        assert!(consumed + shared.notifier().pending() <= announced);
    });
}

#[test]
fn two_pushers_notify_one_sleep_once() {
    loom::model(|| {
        let shared = LoomShared::new();
        let pushers: Vec<_> = (0..2)
            .map(|index| {
                let shared = shared.clone();
                thread::spawn(move || shared.push(LoomRemote::Wake { index, epoch: 1 }))
            })
            .collect();
        let (announced, consumed) = run_dispatcher(&shared, 2);
        for pusher in pushers {
            pusher.join().unwrap();
        }
        // Two pushes, but never more notifications than sleeps.
        assert!(consumed + shared.notifier().pending() <= announced);
    });
}
