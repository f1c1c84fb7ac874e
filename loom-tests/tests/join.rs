//! The join hand-off (`src/task.rs`): a task finishing while another
//! thread joins it delivers the result exactly once, and the joiner wakes.
#![cfg(loom)]

use loom::thread;
use nimgo::__loom::LoomJoin;

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
