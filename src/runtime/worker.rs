//! A worker thread: its dispatcher's loop, fed from the runtime's job queues.
//!
//! ```text
//!   loop:
//!     Unwinding? → leave          Stopping and no live task? → leave
//!     start up to a batch of jobs (own deque, injector, steal)   [Running only]
//!     one non-blocking turn of the dispatcher
//!     nothing done? spin up to SPIN_TIME watching inbox, queues, state
//!     still nothing? announce the sleep (idle.rs), re-check, turn(None) in epoll
//!   leave: unwind this dispatcher's tasks, drop the deque (cancels its jobs),
//!          report the exit
//! ```

use std::cell::RefCell;
use std::time::{Duration, Instant};

use crossbeam_deque::{Steal, Worker};

use super::{RuntimeShared, State};
use crate::dispatcher::{self, Dispatcher};
use crate::loom::Arc;
use crate::task::Job;

/// How many queued jobs a worker starts before it runs a turn.
const JOBS_PER_TURN: usize = 61;

/// How long an idle worker spins before it sleeps in epoll. Waking a
/// sleeping worker costs ~40–75 µs here, so a few tens of µs of spinning
/// catches the common quick hand-offs (a reply on a channel) without a
/// wake, and an idle runtime still sleeps almost all the time.
const SPIN_TIME: Duration = Duration::from_micros(20);

/// What the worker thread knows about itself, reachable from its tasks
/// (for `nimgo::spawn`).
pub(super) struct WorkerContext {
    pub(super) runtime: Arc<RuntimeShared>,
    pub(super) local: Worker<Job>,
}

thread_local! {
    static CONTEXT: RefCell<Option<WorkerContext>> = const { RefCell::new(None) };
}

/// Runs `f` with the calling worker's context, if the thread is a worker.
pub(super) fn with_context<R>(f: impl FnOnce(&WorkerContext) -> R) -> Option<R> {
    CONTEXT
        .try_with(|context| context.borrow().as_ref().map(f))
        .ok()
        .flatten()
}

/// The body of worker thread `index`, once the runtime is built.
pub(super) fn run(runtime: Arc<RuntimeShared>, index: usize, local: Worker<Job>) {
    CONTEXT.with(|context| {
        *context.borrow_mut() = Some(WorkerContext {
            runtime: runtime.clone(),
            local,
        })
    });
    let _ = dispatcher::with_or_create(|dispatcher| work(&runtime, index, dispatcher));
    // Unwind what is left (deadline passed) before reporting the exit, so
    // `shutdown_timeout` returns only after the destructors ran.
    dispatcher::shutdown_current_thread();
    let context = CONTEXT.with(|context| context.borrow_mut().take());
    drop(context);
    runtime.report_exit(index);
}

fn work(runtime: &RuntimeShared, index: usize, dispatcher: &Dispatcher) {
    let shared = dispatcher.shared().clone();
    loop {
        match runtime.state() {
            State::Unwinding => return,
            State::Stopping => {
                if dispatcher.live_tasks() == 0 && !shared.has_pending() {
                    return;
                }
            }
            State::Running => {}
        }
        let mut started = 0;
        if runtime.state() == State::Running {
            while started < JOBS_PER_TURN {
                let Some(job) = find_job(runtime, index) else {
                    break;
                };
                job.start(dispatcher);
                started += 1;
            }
            if started == JOBS_PER_TURN {
                // More jobs are likely queued: a push woke only one
                // sleeper, so pass the wake on for the others to help.
                runtime.wake_one();
            }
        }
        let ran = dispatcher.turn(Some(Duration::ZERO));
        if started > 0 || ran || dispatcher.has_ready() {
            continue;
        }
        if spin_for_work(runtime, index, dispatcher) {
            continue;
        }
        if runtime
            .idle
            .prepare_sleep(index, || work_visible(runtime, index, dispatcher))
        {
            // Blocks in epoll until an inbox message, a notify, I/O or a
            // timer (the inbox protocol decides whether it really blocks).
            dispatcher.turn(None);
            runtime.idle.finish_sleep(index);
        }
    }
}

/// Own deque first (spawn order), then the injector, then the others'.
fn find_job(runtime: &RuntimeShared, index: usize) -> Option<Job> {
    with_context(|context| {
        if let Some(job) = context.local.pop() {
            return Some(job);
        }
        // Emptiness checks are plain loads; a steal attempt pins an epoch
        // and fences. Skip the attempts when nothing is queued anywhere,
        // which is the common case for a worker woken by its inbox.
        if runtime.injector.is_empty()
            && runtime
                .stealers
                .iter()
                .enumerate()
                .all(|(other, stealer)| other == index || stealer.is_empty())
        {
            return None;
        }
        loop {
            match runtime.injector.steal_batch_and_pop(&context.local) {
                Steal::Success(job) => return Some(job),
                Steal::Retry => continue,
                Steal::Empty => break,
            }
        }
        let count = runtime.stealers.len();
        for offset in 1..count {
            let victim = &runtime.stealers[(index + offset) % count];
            loop {
                match victim.steal_batch_and_pop(&context.local) {
                    Steal::Success(job) => return Some(job),
                    Steal::Retry => continue,
                    Steal::Empty => break,
                }
            }
        }
        None
    })
    .flatten()
}

/// Whether anything is waiting for this worker: inbox, ready tasks, jobs
/// it could take, or a change of the runtime's state.
fn work_visible(runtime: &RuntimeShared, index: usize, dispatcher: &Dispatcher) -> bool {
    let state = runtime.state();
    if state == State::Unwinding
        || (state == State::Stopping && dispatcher.live_tasks() == 0)
        || dispatcher.shared().has_pending()
        || dispatcher.has_ready()
    {
        return true;
    }
    state == State::Running
        && (!runtime.injector.is_empty()
            || runtime
                .stealers
                .iter()
                .enumerate()
                .any(|(other, stealer)| other != index && !stealer.is_empty())
            || with_context(|context| !context.local.is_empty()).unwrap_or(false))
}

/// Spins up to [`SPIN_TIME`]; returns whether work showed up.
fn spin_for_work(runtime: &RuntimeShared, index: usize, dispatcher: &Dispatcher) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..32 {
            if work_visible(runtime, index, dispatcher) {
                return true;
            }
            // One `pause` (~40–140 cycles) per check keeps the reaction to
            // a hand-off within a few tens of ns.
            std::hint::spin_loop();
        }
        if start.elapsed() >= SPIN_TIME {
            return false;
        }
    }
}
