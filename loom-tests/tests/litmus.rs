//! A store-buffering litmus test with `SeqCst` fences, shaped like the
//! runtime's idle handshake (`src/runtime/idle.rs`), kept to tell loom's
//! limits from real bugs.
//!
//! The outcome it asserts against is forbidden by C++20's fence rules (the
//! two fences are ordered, and whichever comes first makes the other
//! side's load see its store). loom 0.7.3 accepts it at
//! `LOOM_MAX_PREEMPTIONS=2` and 3 but reports it at 5: its model of `SeqCst`
//! fences is weaker than the standard there. The runtime's idle model,
//! which relies on the same handshake, fails at depth 5 in the same way.
//! Ignored by default; run it with `-- --ignored`.
#![cfg(loom)]
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use loom::thread;

#[test]
#[ignore = "documents a loom limitation at LOOM_MAX_PREEMPTIONS >= 5"]
fn store_buffering_after_an_earlier_claim() {
    loom::model(|| {
        let asleep = Arc::new(AtomicBool::new(false));
        let jobs = Arc::new(AtomicUsize::new(0));
        let (asleep1, jobs1) = (asleep.clone(), jobs.clone());
        let worker = thread::spawn(move || {
            // First announcement, withdrawn by the worker itself.
            asleep1.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let _ = jobs1.load(Ordering::SeqCst);
            let withdrew = asleep1.swap(false, Ordering::SeqCst);
            // Second announcement: the Dekker half that matters.
            asleep1.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            (withdrew, jobs1.load(Ordering::SeqCst))
        });
        // The pusher first claims whatever sleep it sees...
        let claimed = asleep.load(Ordering::SeqCst) && asleep.swap(false, Ordering::SeqCst);
        // ...then pushes a job and looks again.
        jobs.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let saw_sleep = asleep.load(Ordering::SeqCst);
        let (withdrew, saw_job) = worker.join().unwrap();
        if withdrew && !claimed {
            // The second announcement stands unclaimed: one side must see
            // the other.
            assert!(
                saw_job > 0 || saw_sleep,
                "store buffering across SeqCst fences"
            );
        }
    });
}
