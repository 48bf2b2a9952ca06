//! What the benchmarks share.

pub mod ray;
pub mod server;

/// The value after `name` on the command line, or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    arg_text(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The number after `name` on the command line, or `default`.
pub fn arg_f64(name: &str, default: f64) -> f64 {
    arg_text(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The text after `name` on the command line, if `name` is there.
pub fn arg_text(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The first lines of every benchmark's table.
pub fn print_table_head(title: &str) {
    println!("{title}");
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("| scenario | measured | target | anchor |");
    println!("|---|---|---|---|");
}

/// Repeated measurements of one thing: the median, and the range it came from, so that a
/// table never shows one lucky run as the figure.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Spread {
    /// Of `values` (at least one; NaNs sort last). With an even count the median is the
    /// upper middle value, a figure that was measured rather than an average of two.
    pub fn of(values: &[f64]) -> Spread {
        assert!(!values.is_empty(), "a spread of no measurements");
        let mut sorted = values.to_vec();
        sorted.sort_by(|a, b| a.total_cmp(b));
        Spread {
            median: sorted[sorted.len() / 2],
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            runs: sorted.len(),
        }
    }

    /// `values` mapped through `f` (a rate from a time, say); min and max follow the mapping.
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Spread {
        let (a, b) = (f(self.min), f(self.max));
        Spread {
            median: f(self.median),
            min: a.min(b),
            max: a.max(b),
            runs: self.runs,
        }
    }

    /// "1.23 s (1.20–1.31)": the median and its range, each with `decimals` decimals, for a
    /// figure beside one that says how many runs there were.
    pub fn brief(&self, decimals: usize, unit: &str) -> String {
        format!(
            "{:.d$} {unit} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }

    /// "1.23 s (1.20–1.31, median of 5)", each figure with `decimals` decimals and `unit`.
    pub fn show(&self, decimals: usize, unit: &str) -> String {
        format!(
            "{:.d$} {unit} ({:.d$}–{:.d$}, median of {})",
            self.median,
            self.min,
            self.max,
            self.runs,
            d = decimals
        )
    }
}
