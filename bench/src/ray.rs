//! Ray in the same run: the python of the venv that `bench/ray/setup.sh` makes, and the work of
//! `bench/ray/workloads.py`. A benchmark that cannot measure Ray says so in its table, with
//! why; it never prints a remembered figure in the place of a measurement.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::repo;

/// What a table shows where Ray is not installed.
pub const NOT_INSTALLED: &str = "not measured (install with bench/ray/setup.sh)";

/// The python with ray to use: `--ray PYTHON`, else the venv's (`HKUBE_RAY_VENV`, default
/// `~/.cache/hkube/ray-venv`) when it exists; `None` when neither.
pub fn python() -> Option<PathBuf> {
    if let Some(named) = crate::arg_text("--ray") {
        return Some(PathBuf::from(named));
    }
    let venv = std::env::var_os("HKUBE_RAY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/hkube/ray-venv")
        });
    let python = venv.join("bin/python");
    python.exists().then_some(python)
}

/// Runs `python ARGS…` with no usage-stats upload, for at most `limit`; its stdout, or what a
/// table should say instead ("not measured (…)").
pub fn run_python(python: &Path, args: &[String], limit: Duration) -> Result<String, String> {
    // Files rather than pipes: Ray writes a lot to stderr, and a full pipe would stall it.
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let scratch = std::env::temp_dir().join(format!(
        "hkube-bench-ray-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&scratch).map_err(|e| format!("not measured ({e})"))?;
    let result = run_in(&scratch, python, args, limit);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn run_in(
    scratch: &Path,
    python: &Path,
    args: &[String],
    limit: Duration,
) -> Result<String, String> {
    let not = |why: String| format!("not measured ({why})");
    let open =
        |name: &str| std::fs::File::create(scratch.join(name)).map_err(|e| not(e.to_string()));
    let mut child = Command::new(python)
        .args(args)
        .env("RAY_USAGE_STATS_ENABLED", "0")
        .stdin(Stdio::null())
        .stdout(open("stdout")?)
        .stderr(open("stderr")?)
        .spawn()
        .map_err(|e| not(format!("{} did not start: {e}", python.display())))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(not(format!("ran past {} s", limit.as_secs())));
            }
            Err(error) => return Err(not(error.to_string())),
        }
    };
    let read = |name: &str| std::fs::read_to_string(scratch.join(name)).unwrap_or_default();
    if !status.success() {
        let stderr = read("stderr");
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        return Err(not(format!(
            "{} failed ({status}): {}",
            python.display(),
            last.unwrap_or("no output")
        )));
    }
    Ok(read("stdout"))
}

/// `bench/ray/workloads.py ARGS…` with the venv's python: its figures (the JSON object on its
/// last line), or what the table should say instead.
pub fn workloads(args: &[String], limit: Duration) -> Result<Value, String> {
    let Some(python) = python() else {
        return Err(NOT_INSTALLED.to_string());
    };
    let mut all = vec![repo().join("bench/ray/workloads.py").display().to_string()];
    all.extend(args.iter().cloned());
    let stdout = run_python(&python, &all, limit)?;
    let figures = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str::<Value>(line).ok())
        .ok_or_else(|| "not measured (workloads.py printed no figures)".to_string())?;
    if let Some(why) = figures["skipped"].as_str() {
        return Err(format!("not measured ({why})"));
    }
    Ok(figures)
}

/// Ray's start as a user pays it: `python -c "import ray; ray.init(num_cpus=2); ray.shutdown()"`
/// as a whole process, `runs` times: Ray's version and the times in seconds, or what the table
/// should say.
pub fn start_times(runs: usize) -> Result<(String, Vec<f64>), String> {
    let Some(python) = python() else {
        return Err(NOT_INSTALLED.to_string());
    };
    let script = "import logging, ray\n\
                  ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)\n\
                  ray.shutdown()\n\
                  print(ray.__version__)\n";
    let mut times = Vec::new();
    let mut version = String::new();
    for _ in 0..runs {
        let start = Instant::now();
        version = run_python(
            &python,
            &["-c".to_string(), script.to_string()],
            Duration::from_secs(300),
        )?
        .trim()
        .to_string();
        times.push(start.elapsed().as_secs_f64());
    }
    Ok((version, times))
}
