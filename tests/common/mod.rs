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

/// A new empty folder under the system's temp folder, named `PREFIX-PID-N` (unique within this
/// test binary's run).
pub fn scratch_dir(prefix: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// True (after saying the test is skipped) when there is no `python3` to run algorithms with.
pub fn python_missing() -> bool {
    let found = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        testkit::skip(None, "python3 is not installed");
    }
    !found
}

/// The body of an HTTP/1.1 chunked response, its chunk sizes removed.
pub fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        body.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    body
}

/// Copies the folder `from` into `to`, leaving out Python's `__pycache__` folders.
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        if path.is_dir() && name != "__pycache__" {
            copy_tree(&path, &to.join(name));
        } else if path.is_file() {
            std::fs::copy(&path, to.join(name)).unwrap();
        }
    }
}

/// True when a Docker engine answers and has every one of `base_images` (made by
/// scripts/base-images.sh); otherwise says why and returns false, or fails the test where
/// HKUBE_REQUIRE_DOCKER=1 (CI) asks for them.
/// The numbers example's wasm Multiply, when Docker and the images of the numbers pipeline
/// with a wasm worker (`hkube/debian` for the sidecar's image) are there and the module is
/// built; else the test is skipped (a failure under `HKUBE_REQUIRE_DOCKER`).
pub fn wasm_numbers_or_skip() -> Option<std::path::PathBuf> {
    if !docker_or_skip(&[
        "hkube/debian:bookworm",
        "hkube/python:bookworm",
        "hkube/nodejs:bookworm",
    ]) {
        return None;
    }
    let module = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/numbers/multiply-wasm/multiply.wasm");
    if !module.is_file() {
        testkit::skip(
            Some("HKUBE_REQUIRE_DOCKER"),
            "examples/numbers/multiply-wasm/multiply.wasm is not built: run examples/numbers/multiply-wasm/build.sh",
        );
        return None;
    }
    Some(module)
}

pub fn docker_or_skip(base_images: &[&str]) -> bool {
    let ready = || -> Result<(), String> {
        let info = Command::new("docker").arg("info").output();
        if !info.is_ok_and(|o| o.status.success()) {
            return Err("no Docker engine answers `docker info`".into());
        }
        for image in base_images {
            let found = Command::new("docker")
                .args(["image", "inspect", image])
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                return Err(format!(
                    "the base image {image} is missing (make it with scripts/base-images.sh)"
                ));
            }
        }
        Ok(())
    };
    match ready() {
        Ok(()) => true,
        Err(reason) => {
            testkit::skip(Some("HKUBE_REQUIRE_DOCKER"), &reason);
            false
        }
    }
}

/// `hkube ARGS… --endpoint ENDPOINT` run in `dir`, without the caller's HKUBE_TOKEN: its exit
/// code, stdout and stderr.
pub fn hkube_at(endpoint: &str, dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hkube"))
        .args(args)
        .args(["--endpoint", endpoint])
        .current_dir(dir)
        .env_remove("HKUBE_TOKEN")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `examples/numbers/<file>` through `hkube exec raw -f FILE --json` against
/// `endpoint` and returns the results document (`log`: the server's output so far, shown on
/// failure).
pub fn exec_numbers(
    endpoint: &str,
    dir: &std::path::Path,
    file: &str,
    log: &dyn Fn() -> String,
) -> serde_json::Value {
    let pipeline = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/numbers")
        .join(file);
    let (status, stdout, stderr) = hkube_at(
        endpoint,
        dir,
        &["exec", "raw", "-f", pipeline.to_str().unwrap(), "--json"],
    );
    assert_eq!(status, 0, "{stdout}{stderr}\n{}", log());
    serde_json::from_str(&stdout).unwrap()
}

/// A child process ended when the test ends, also half-way: SIGTERM first (a server then
/// removes its containers or pods), SIGKILL if it has not ended after 30 s.
pub struct Killed(pub Child);

impl Killed {
    /// Ends the process now (a no-op once it has ended).
    pub fn stop(&mut self) {
        if self.0.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.stop();
    }
}
