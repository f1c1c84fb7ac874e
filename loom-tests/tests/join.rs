//! The join hand-off (`src/task.rs`): a task finishing while another
//! thread joins it delivers the result exactly once, and the joiner wakes.
#![cfg(loom)]

use loom::thread;
use nimgo::__loom::{LoomJob, LoomJoin, LoomShared};

#[test]
fn task_finishing_while_another_thread_joins() {
    loom::model(|| {
        let join = LoomJoin::new();
        let task = {
            let join = join.clone();
            thread::spawn(move || join.complete(42))
        };
        assert_eq!(join.join(), Some(42));
        assert!(join.is_finished());
        task.join().unwrap();
    });
}

/// The task cell (`src/task/cell.rs`): a job's body runs on one thread while
/// the task is joined on another; the join sees the result once, and
/// whichever side lets go last frees the cell.
#[test]
fn a_job_run_on_one_thread_joined_on_another() {
    loom::model(|| {
        let (job, task) = LoomJob::new(|| 42);
        let worker = thread::spawn(move || job.run());
        assert_eq!(task.join().ok(), Some(42));
        worker.join().unwrap();
    });
}

/// A job dropped unstarted on another thread (a runtime queue at shutdown)
/// cancels its task there; the joiner gets `Cancelled`.
#[test]
fn a_job_dropped_on_another_thread_cancels_its_task() {
    loom::model(|| {
        let (job, task) = LoomJob::new(|| 42);
        let worker = thread::spawn(move || drop(job));
        assert!(task.join().unwrap_err().is_cancelled());
        worker.join().unwrap();
    });
}

/// A task handle dropped (detached) while its body runs elsewhere: the
/// body's thread frees the cell, or the handle's, whichever is last.
#[test]
fn a_detached_task_runs_and_frees_its_cell() {
    loom::model(|| {
        let (job, task) = LoomJob::new(|| String::from("result dropped with the cell"));
        let worker = thread::spawn(move || job.run());
        let _ = task.is_finished();
        drop(task);
        worker.join().unwrap();
    });
}

/// Two `wait_any` callers on other threads and the task completing: both
/// wake (the completer finds `WAITING` and takes every waiter, or each
/// waiter finds `FINISHED`).
#[test]
fn two_waiters_both_wake_when_the_task_completes() {
    loom::model(|| {
        let join = LoomJoin::<u32>::new();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let join = join.clone();
                thread::spawn(move || join.wait_finished())
            })
            .collect();
        join.complete(7);
        for waiter in waiters {
            waiter.join().unwrap();
        }
        assert_eq!(join.join(), Some(7));
    });
}

/// A cancel racing a dispatcher placing the task: either the cancel finds
/// the location (and sends the cancel there), or the placement finds the
/// cancel (and cancels at once), never neither.
#[test]
fn a_cancel_racing_the_placement_is_never_lost() {
    loom::model(|| {
        let join = LoomJoin::<u32>::new();
        let shared = LoomShared::new();
        let canceller = {
            let join = join.clone();
            thread::spawn(move || join.request_cancel())
        };
        let placed = join.place(&shared);
        let found_location = canceller.join().unwrap();
        assert_eq!(placed, found_location);
    });
}
