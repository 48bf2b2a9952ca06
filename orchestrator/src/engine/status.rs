//! Job and task states (reference §3.1–3.2) and the progress text of §3.5.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobStatus {
    Pending,
    Active,
    Completed,
    Failed,
    Stopped,
    Paused,
    Resumed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Active => "active",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Stopped => "stopped",
            JobStatus::Paused => "paused",
            JobStatus::Resumed => "resumed",
        }
    }

    /// `completed`, `failed` and `stopped` are final: the job has its result.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Stopped
        )
    }

    pub fn parse(text: &str) -> Option<JobStatus> {
        serde_json::from_value(serde_json::Value::String(text.to_string())).ok()
    }
}

/// A task's state. The order of the variants is the order of the progress text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[repr(u8)]
pub enum TaskStatus {
    Succeed,
    Failed,
    Skipped,
    Stopped,
    Active,
    Storing,
    Pending,
    Creating,
    Preschedule,
    Warning,
    Stalled,
    Crashed,
    FailedScheduling,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 13] = [
        TaskStatus::Succeed,
        TaskStatus::Failed,
        TaskStatus::Skipped,
        TaskStatus::Stopped,
        TaskStatus::Active,
        TaskStatus::Storing,
        TaskStatus::Pending,
        TaskStatus::Creating,
        TaskStatus::Preschedule,
        TaskStatus::Warning,
        TaskStatus::Stalled,
        TaskStatus::Crashed,
        TaskStatus::FailedScheduling,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Succeed => "succeed",
            TaskStatus::Failed => "failed",
            TaskStatus::Skipped => "skipped",
            TaskStatus::Stopped => "stopped",
            TaskStatus::Active => "active",
            TaskStatus::Storing => "storing",
            TaskStatus::Pending => "pending",
            TaskStatus::Creating => "creating",
            TaskStatus::Preschedule => "preschedule",
            TaskStatus::Warning => "warning",
            TaskStatus::Stalled => "stalled",
            TaskStatus::Crashed => "crashed",
            TaskStatus::FailedScheduling => "failedScheduling",
        }
    }

    /// No more changes will come: the task has its outcome.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeed
                | TaskStatus::Failed
                | TaskStatus::Skipped
                | TaskStatus::Stopped
                | TaskStatus::Crashed
        )
    }

    /// Counts as "completed" in the progress (reference §3.5).
    pub fn counts_as_done(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeed | TaskStatus::Failed | TaskStatus::Skipped
        )
    }
}

/// Task counts per status, kept up to date on every transition so that progress is O(1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateCounts {
    counts: [u64; TaskStatus::ALL.len()],
}

impl StateCounts {
    pub fn add(&mut self, status: TaskStatus) {
        self.counts[status as usize] += 1;
    }

    pub fn remove(&mut self, status: TaskStatus) {
        let slot = &mut self.counts[status as usize];
        *slot = slot.saturating_sub(1);
    }

    pub fn get(&self, status: TaskStatus) -> u64 {
        self.counts[status as usize]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Non-zero counts, in the order of [`TaskStatus::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = (TaskStatus, u64)> + '_ {
        TaskStatus::ALL
            .iter()
            .map(|&status| (status, self.get(status)))
            .filter(|&(_, count)| count > 0)
    }
}

/// `100 × done / total`, rounded to 2 decimals; `unexpanded` nodes count as one task each.
pub fn progress(counts: &StateCounts, unexpanded: u64) -> f64 {
    let total = counts.total() + unexpanded;
    if total == 0 {
        return 0.0;
    }
    let done = counts.get(TaskStatus::Succeed)
        + counts.get(TaskStatus::Failed)
        + counts.get(TaskStatus::Skipped);
    (done as f64 * 10_000.0 / total as f64).round() / 100.0
}

/// `"66.67% completed, 2 succeed, 1 active"`: the number as JavaScript prints it (no trailing
/// zeros), then each non-zero count.
pub fn details(progress: f64, counts: &StateCounts) -> String {
    let mut text = format!("{}% completed", format_number(progress));
    for (status, count) in counts.iter() {
        text.push_str(&format!(", {count} {}", status.as_str()));
    }
    text
}

/// A float printed as JavaScript does for values with at most 2 decimals: `100`, `66.67`, `12.5`.
pub fn format_number(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Round half up on the f64 value, like JavaScript's `toFixed(0)` on a percentage (Q16).
pub fn percent(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        return 0;
    }
    (part as f64 * 100.0 / whole as f64 + 0.5).floor() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_text() {
        let mut counts = StateCounts::default();
        counts.add(TaskStatus::Succeed);
        counts.add(TaskStatus::Succeed);
        counts.add(TaskStatus::Active);
        let p = progress(&counts, 0);
        assert_eq!(details(p, &counts), "66.67% completed, 2 succeed, 1 active");
        counts.remove(TaskStatus::Active);
        counts.add(TaskStatus::Succeed);
        assert_eq!(
            details(progress(&counts, 0), &counts),
            "100% completed, 3 succeed"
        );
        assert_eq!(format_number(12.5), "12.5");
        assert_eq!(format_number(0.0), "0");
    }

    #[test]
    fn percent_rounds_half_up() {
        assert_eq!(percent(1, 8), 13);
        assert_eq!(percent(1, 5), 20);
        assert_eq!(percent(4, 5), 80);
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(2, 3), 67);
    }
}
