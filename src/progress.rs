//! A job's progress on stderr, for `hkube run` and `hkube exec`: a bar redrawn in place on a
//! terminal, a plain line per change of details otherwise (logs stay readable).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use serde_json::Value;

#[derive(Debug)]
pub struct Progress {
    job: String,
    terminal: bool,
    start: Instant,
    last_details: String,
    drawn: bool,
}

impl Progress {
    pub fn new(job: &str) -> Progress {
        Progress {
            job: job.to_string(),
            terminal: std::io::stderr().is_terminal(),
            start: Instant::now(),
            last_details: String::new(),
            drawn: false,
        }
    }

    /// How often a caller should look: a terminal's bar moves smoothly, plain lines need not.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(if self.terminal { 100 } else { 1000 })
    }

    /// Shows a status document (`data.progress`, `data.details`).
    pub fn show(&mut self, status: &Value) {
        let details = status["data"]["details"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let progress = status["data"]["progress"].as_f64().unwrap_or(0.0);
        if self.terminal {
            let filled = ((progress / 5.0).round() as usize).min(20);
            eprint!(
                "\r\x1b[2K[{}{}] {details} ({:.1} s)",
                "#".repeat(filled),
                " ".repeat(20 - filled),
                self.start.elapsed().as_secs_f64()
            );
            self.drawn = true;
        } else if details != self.last_details
            && !details.is_empty()
            && self.start.elapsed() > Duration::from_millis(900)
        {
            eprintln!("hkube: {}: {details}", self.job);
        }
        self.last_details = details;
    }

    /// Clears the bar before the results are printed.
    pub fn finish(&mut self) {
        if self.terminal && self.drawn {
            eprint!("\r\x1b[2K");
            self.drawn = false;
        }
    }
}
