//! Whether the node task is alive: what `GET /healthz` and `GET /readyz`
//! answer from, and what `weft node run` watches so that it exits when the
//! task dies instead of serving on half alive.
//!
//! The node task holds a [`RunningGuard`] for as long as it runs. The guard
//! marks the task [`TaskState::Running`] when it is taken, and
//! [`TaskState::Failed`] when it is dropped, unless the task ended on a
//! requested shutdown ([`RunningGuard::stopped_on_request`]). A panic in
//! the task drops the guard too (tokio drops the task's future after it
//! catches the panic), so the state can never say "running" for a task that
//! is gone.

use tokio::sync::watch;

/// Where the node task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Spawned (the store is loaded) but not yet running.
    Starting,
    /// Running: it drives the swarm, applies updates and answers commands.
    Running,
    /// Ended after a requested shutdown.
    Stopped,
    /// Ended any other way: it panicked, or its future was dropped.
    Failed,
}

impl TaskState {
    /// Whether the task has ended, for whatever reason.
    pub fn has_ended(self) -> bool {
        matches!(self, TaskState::Stopped | TaskState::Failed)
    }
}

/// The node task's [`TaskState`], shared with the API and with whoever
/// waits for the task to end.
#[derive(Debug)]
pub struct Liveness {
    state: watch::Sender<TaskState>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            state: watch::Sender::new(TaskState::Starting),
        }
    }
}

impl Liveness {
    /// The task's state now.
    pub fn state(&self) -> TaskState {
        *self.state.borrow()
    }

    /// Marks the task running until the returned guard is dropped.
    pub(crate) fn running(&self) -> RunningGuard {
        self.state.send_replace(TaskState::Running);
        RunningGuard {
            state: self.state.clone(),
            on_request: false,
        }
    }

    /// Waits until the task has ended, and says how.
    pub async fn ended(&self) -> TaskState {
        let mut rx = self.state.subscribe();
        match rx.wait_for(|s| s.has_ended()).await {
            Ok(s) => *s,
            // Unreachable while `self` holds a sender; a task that cannot
            // be watched counts as gone.
            Err(_) => TaskState::Failed,
        }
    }
}

/// Held by the node task while it runs; see the module doc.
#[derive(Debug)]
pub(crate) struct RunningGuard {
    state: watch::Sender<TaskState>,
    on_request: bool,
}

impl RunningGuard {
    /// The task is ending because it was asked to: it is
    /// [`TaskState::Stopped`] rather than [`TaskState::Failed`].
    pub(crate) fn stopped_on_request(mut self) {
        self.on_request = true;
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.state.send_replace(if self.on_request {
            TaskState::Stopped
        } else {
            TaskState::Failed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_says_how_the_task_ended() {
        let l = Liveness::default();
        assert_eq!(l.state(), TaskState::Starting);
        let guard = l.running();
        assert_eq!(l.state(), TaskState::Running);
        guard.stopped_on_request();
        assert_eq!(l.state(), TaskState::Stopped);

        let guard = l.running();
        drop(guard);
        assert_eq!(l.state(), TaskState::Failed);

        // A panic while the guard is held marks the task failed.
        let l = std::sync::Arc::new(Liveness::default());
        let held = l.clone();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _guard = held.running();
            panic!("a bug");
        }));
        assert!(r.is_err());
        assert_eq!(l.state(), TaskState::Failed);
    }

    #[tokio::test]
    async fn ended_waits_for_the_end() {
        let l = std::sync::Arc::new(Liveness::default());
        let guard = l.running();
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.ended().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(guard);
        assert_eq!(waiter.await.unwrap(), TaskState::Failed);
    }
}
