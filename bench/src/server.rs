//! Driving a release `hkube` binary: finding it, starting `hkube server`, plain HTTP requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The release CLI, or the one `HKUBE_BENCH_BIN` names (a build kept aside, to compare two
/// builds in the same minute on a loaded machine).
pub fn hkube() -> PathBuf {
    let binary = std::env::var_os("HKUBE_BENCH_BIN")
        .map_or_else(|| repo().join("target/release/hkube"), PathBuf::from);
    if !binary.exists() {
        eprintln!("build the CLI first: cargo build --release");
        std::process::exit(2);
    }
    binary
}

/// One HTTP/1.1 request over a fresh connection; the body as JSON.
pub fn request(address: &str, method: &str, path: &str, body: &str) -> Value {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return Value::Null;
    };
    let _ = stream.set_nodelay(true);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return Value::Null;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `hkube server --listen 127.0.0.1:0 EXTRA… --state-dir STATE` from the repository root;
/// returns the child and the address it listens on.
pub fn start_server(state: &Path, extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(hkube())
        .args(["server", "--listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--state-dir")
        .arg(state)
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hkube server starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let address = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(rest) = line.strip_prefix("hkube: listening on http://") {
                    break rest.split('/').next().unwrap_or_default().to_string();
                }
            }
            _ => panic!("the server did not start"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, address)
}

/// Posts a job (`path`: `/api/v1/exec/raw`, `/api/v1/exec/algorithm`…) and polls its results
/// every `poll` until it ended; the wall time and the results document. Panics on a failed job.
pub fn run_job(
    address: &str,
    path: &str,
    body: &str,
    poll: std::time::Duration,
) -> (std::time::Duration, Value) {
    let start = std::time::Instant::now();
    let started = request(address, "POST", path, body);
    let job = started["jobId"].as_str().unwrap_or_default().to_string();
    loop {
        let results = request(address, "GET", &format!("/api/v1/exec/results/{job}"), "");
        match results["status"].as_str() {
            Some("completed") => return (start.elapsed(), results),
            Some("failed") | Some("stopped") => panic!("job {job}: {results}"),
            _ => std::thread::sleep(poll),
        }
    }
}
