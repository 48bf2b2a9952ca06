//! What the whole-system tests share: starting `hkube server` and learning its address.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A started `hkube server`: the child, the address it listens on (from its first line), and
/// everything it wrote to stderr so far.
pub struct Started {
    pub child: Child,
    pub address: String,
    pub log: Arc<Mutex<String>>,
}

/// `hkube server --listen 127.0.0.1:0 ARGS…`, without the caller's HKUBE_TOKEN/HKUBE_LISTEN;
/// waits until it says where it listens (panicking with its log if it never does).
pub fn start_server(configure: impl FnOnce(&mut Command)) -> Started {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hkube"));
    command
        .args(["server", "--listen", "127.0.0.1:0"])
        .env_remove("HKUBE_TOKEN")
        .env_remove("HKUBE_LISTEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    configure(&mut command);
    let mut child = command.spawn().expect("hkube server starts");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (found, address) = std::sync::mpsc::channel();
    let kept = log.clone();
    // Reads stderr to the end, so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("hkube: listening on http://") {
                let _ = found.send(rest.split('/').next().unwrap_or_default().to_string());
            }
            kept.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    let address = address
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("the server did not start: {}", log.lock().unwrap()));
    Started {
        child,
        address,
        log,
    }
}

/// A JSON request with curl (`null` when the answer is not JSON).
pub fn http_json(method: &str, url: &str, body: &str) -> serde_json::Value {
    let output = Command::new("curl")
        .args(["-s", "-X", method, "-H", "content-type: application/json"])
        .args(["--data-binary", body, url])
        .output()
        .expect("curl runs");
    serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null)
}
