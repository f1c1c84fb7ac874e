//! The join hand-off (`src/task.rs`): a task finishing while another
//! thread joins it delivers the result exactly once, and the joiner wakes.
#![cfg(loom)]

use loom::thread;
use nimgo::__loom::{LoomJob, LoomJoin, LoomJoinRef, LoomShared};

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

/// The cell's hand-rolled count (`src/task/cell.rs`): three handles let go
/// on three threads (the body after running the task, two join views, one
/// of which reads the state first). Whichever is last frees the cell, once:
/// loom reports a leak of the result (a loom `Arc`) if none does, and a
/// race if the free (which writes the result slot) is not ordered after
/// the other threads' accesses.
#[test]
fn the_last_of_three_handles_frees_the_cell_once() {
    loom::model(|| {
        let (job, task) = LoomJob::new(|| loom::sync::Arc::new(7u32));
        let handle = LoomJoinRef::new(task);
        let other = handle.clone();
        let worker = thread::spawn(move || job.run());
        let viewer = thread::spawn(move || {
            let _ = other.is_finished();
            drop(other);
        });
        drop(handle);
        worker.join().unwrap();
        viewer.join().unwrap();
    });
}

/// A body dropped unrun on one thread while the join view is dropped on
/// another: the cancel completes the state, and the cell is freed once.
#[test]
fn a_cancelled_cell_is_freed_by_either_side() {
    loom::model(|| {
        let (job, task) = LoomJob::new(|| loom::sync::Arc::new(7u32));
        let worker = thread::spawn(move || drop(job));
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
