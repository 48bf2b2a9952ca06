//! How a lost worker is explained in its task's error.

use crate::executor::child::Exit;

/// Explains a lost worker: how the process ended and its last output lines.
pub fn crash_report(reason: &str, exit: Option<&Exit>, last_lines: &[String]) -> String {
    let mut text = match exit {
        // The exit says it better than "disconnected".
        Some(exit) if reason.starts_with("the algorithm disconnected") => {
            format!("the algorithm's process {exit}")
        }
        Some(exit) => format!("{reason}; the algorithm's process {exit}"),
        None => reason.to_string(),
    };
    if !last_lines.is_empty() {
        text.push_str("; last output:\n");
        text.push_str(&last_lines.join("\n"));
    }
    text
}
