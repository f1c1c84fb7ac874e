//! Loom model of the runtime's idle protocol: a job pushed into a shared
//! queue racing idle workers going to sleep (`src/runtime/idle.rs`, through
//! each worker dispatcher's real inbox/sleep code). The queue is a loom
//! atomic counter of jobs (crossbeam-deque is not loom-aware).
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --test runtime`
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use nimgo::__loom::LoomWorkerModel;

/// Takes one job if there is one.
fn take(jobs: &AtomicUsize) -> bool {
    let mut current = jobs.load(Ordering::SeqCst);
    while current > 0 {
        match jobs.compare_exchange(current, current - 1, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return true,
            Err(actual) => current = actual,
        }
    }
    false
}

/// A worker's loop: take a job or go idle; a lost wake-up leaves it blocked
/// on its notifier forever, which loom reports as a deadlock.
fn worker(model: &LoomWorkerModel, jobs: &AtomicUsize, index: usize) {
    loop {
        if take(jobs) {
            return;
        }
        model.idle(index, || jobs.load(Ordering::SeqCst) > 0);
    }
}

#[test]
fn injector_push_racing_a_worker_going_to_sleep() {
    loom::model(|| {
        let model = Arc::new(LoomWorkerModel::new(1));
        let jobs = Arc::new(AtomicUsize::new(0));
        let sleeper = {
            let (model, jobs) = (model.clone(), jobs.clone());
            thread::spawn(move || worker(&model, &jobs, 0))
        };
        jobs.fetch_add(1, Ordering::SeqCst);
        model.job_pushed();
        sleeper.join().unwrap();
        assert_eq!(jobs.load(Ordering::SeqCst), 0);
        // At most one notification per sleep: none is left over unless the
        // worker withdrew from a sleep the pusher had already claimed.
        assert!(model.unconsumed_notifications(0) <= 1);
    });
}

#[test]
fn two_jobs_two_idle_workers() {
    loom::model(|| {
        let model = Arc::new(LoomWorkerModel::new(2));
        let jobs = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..2)
            .map(|index| {
                let (model, jobs) = (model.clone(), jobs.clone());
                thread::spawn(move || worker(&model, &jobs, index))
            })
            .collect();
        for _ in 0..2 {
            jobs.fetch_add(1, Ordering::SeqCst);
            model.job_pushed();
        }
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(jobs.load(Ordering::SeqCst), 0);
    });
}
