//! Each in-process node runs on a runtime of its own: one thread, a
//! current-thread tokio runtime. That is what lets a test *pause* a node
//! the way SIGSTOP pauses a process — every task of the node, its Raft
//! core, timers and proposer, stops where it is, while the rest of the
//! cluster and the test go on — and lets a crash end every task of the
//! node at once, so nothing of a killed node runs on into its restart.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::error::TestkitError;

/// A node's thread and runtime.
pub(crate) struct NodeRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    gate: Arc<Gate>,
}

/// Held shut while the node is paused; its runtime's thread waits on it.
#[derive(Default)]
struct Gate {
    paused: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait_while_paused(&self) {
        let mut paused = self.paused.lock().unwrap_or_else(PoisonError::into_inner);
        while *paused {
            paused = self.opened.wait(paused).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn set(&self, paused: bool) -> bool {
        let mut state = self.paused.lock().unwrap_or_else(PoisonError::into_inner);
        let was = std::mem::replace(&mut *state, paused);
        if !paused {
            self.opened.notify_all();
        }
        was
    }
}

impl NodeRuntime {
    /// Starts the thread and its runtime.
    pub(crate) fn start(node_id: u64) -> Result<Self, TestkitError> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("node-{node_id}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                // Every task of the node ends here, wherever it was.
                runtime.shutdown_timeout(std::time::Duration::from_secs(5));
            })
            .map_err(|e| TestkitError::new(format!("node {node_id}: no thread: {e}")))?;
        let handle = handle_rx
            .recv()
            .map_err(|e| TestkitError::new(format!("node {node_id}: runtime thread ended: {e}")))?
            .map_err(|e| TestkitError::new(format!("node {node_id}: no runtime: {e}")))?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
            gate: Arc::default(),
        })
    }

    /// Runs `future` on the node's runtime (what it spawns is the node's)
    /// and awaits its output from the caller's.
    pub(crate) async fn run<F>(&self, future: F) -> Result<F::Output, TestkitError>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle
            .spawn(future)
            .await
            .map_err(|e| TestkitError::new(format!("a task on a node's runtime failed: {e}")))
    }

    /// Freezes every task of the node until [`NodeRuntime::resume`]: its
    /// thread blocks at the next point where the runtime polls. A message
    /// sent to it waits unanswered (or times out at the sender); its
    /// timers fire late, all at once, when it resumes.
    pub(crate) fn pause(&self) {
        if self.gate.set(true) {
            return;
        }
        let gate = self.gate.clone();
        // Blocking the runtime's only thread is the point.
        drop(self.handle.spawn(async move { gate.wait_while_paused() }));
    }

    /// Lets a paused node go on.
    pub(crate) fn resume(&self) {
        self.gate.set(false);
    }

    /// Whether the node is paused.
    pub(crate) fn is_paused(&self) -> bool {
        *self.gate.paused.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for NodeRuntime {
    /// Ends the runtime and every task on it (a paused one resumes first,
    /// as a killed stopped process ends). Does not wait for the thread.
    fn drop(&mut self) {
        self.resume();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Detached: its runtime's shutdown waits at most 5 s for
            // blocking store calls in flight.
            drop(thread);
        }
    }
}
