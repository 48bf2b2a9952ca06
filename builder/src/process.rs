//! A child started in its own process group (`Command::process_group(0)`) is ended whole:
//! installers and git spawn helpers of their own, which must not outlive a stopped build.

use rustix::process::{kill_process_group, Pid, Signal};

/// Kills the child's process group when dropped before [`GroupGuard::disarm`] (a build that
/// was stopped or timed out drops the future that waits for the child).
#[derive(Debug)]
pub(crate) struct GroupGuard(Option<Pid>);

impl GroupGuard {
    /// Guards `child`, which must have been spawned with `process_group(0)`.
    pub(crate) fn of(child: &tokio::process::Child) -> GroupGuard {
        GroupGuard(child.id().and_then(|id| Pid::from_raw(id as i32)))
    }

    pub(crate) fn signal(&self, signal: Signal) {
        if let Some(group) = self.0 {
            // ESRCH only means everyone in the group has already gone.
            let _ = kill_process_group(group, signal);
        }
    }

    /// The child ended by itself: nothing to kill.
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::KILL);
    }
}
