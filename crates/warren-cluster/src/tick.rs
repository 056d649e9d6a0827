//! The tick driver: while this node leads, proposes `Tick` when something
//! in the broker can expire, so TTLs act without a clock inside apply.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::Raft;
use tokio::task::JoinHandle;
use warren_core::{Command, Request};

use crate::clock::LeaderClock;
use crate::proposer::Proposer;
use crate::state_machine::Shared;
use crate::type_config::TypeConfig;

/// The longest the driver sleeps before looking again.
const RECHECK: Duration = Duration::from_secs(1);

pub(crate) fn spawn(
    node: u64,
    raft: Raft<TypeConfig>,
    shared: Arc<Shared>,
    proposer: Proposer,
    clock: Arc<LeaderClock>,
) -> JoinHandle<()> {
    tokio::spawn(run(node, raft, shared, proposer, clock))
}

async fn run(node: u64, raft: Raft<TypeConfig>, shared: Arc<Shared>, proposer: Proposer, clock: Arc<LeaderClock>) {
    let mut last_submitted_ms: u64 = 0;
    let mut last_submitted_at: Option<Instant> = None;
    loop {
        // Register for the apply signal before looking at the state, so an
        // apply in between is not missed.
        let applied = shared.applied.notified();
        tokio::pin!(applied);
        applied.as_mut().enable();

        let is_leader = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            metrics.current_leader == Some(node) && metrics.state.is_leader()
        };
        let mut wait = RECHECK;
        if is_leader {
            let next_expiry = shared.read().broker.next_expiry_ms();
            let now = clock.log_now_ms();
            match next_expiry {
                Some(due) if due <= now => {
                    let last_tick_applied = shared.last_tick_ms.load(Ordering::Relaxed);
                    let previous_done = last_tick_applied >= last_submitted_ms && due > last_tick_applied;
                    let previous_lost = last_submitted_at.is_none_or(|at| at.elapsed() >= RECHECK);
                    if previous_done || previous_lost {
                        let tick = Request {
                            origin: None,
                            command: Command::Tick,
                        };
                        if proposer.submit(tick).await.is_err() {
                            return;
                        }
                        last_submitted_ms = now;
                        last_submitted_at = Some(Instant::now());
                    }
                }
                Some(due) => wait = Duration::from_millis(due - now).min(RECHECK),
                None => {}
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut applied => {}
        }
    }
}
