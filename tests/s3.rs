//! `hkube server --storage s3` against a real S3-compatible server (s3s-fs, with signature
//! checks): a large bytes result passes between two Python steps, and the final one is in the
//! S3 bucket under HKube's key. Wrong credentials stop the server at start with the reason.
//! Skipped with a message without s3s-fs, unless HKUBE_REQUIRE_S3=1 (CI).

#![allow(clippy::unwrap_used)]

mod common;
use common::Killed;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const ACCESS: &str = "hkube-e2e";
const SECRET: &str = "hkube-e2e-secret";

/// s3s-fs on a free port over `root`; its URL.
fn s3_server(root: &Path) -> Option<(Killed, String)> {
    let program = std::env::var("HKUBE_S3S_FS").unwrap_or_else(|_| "s3s-fs".into());
    let found = Command::new(&program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        testkit::skip(
            Some("HKUBE_REQUIRE_S3"),
            &format!("{program} is not installed (cargo install s3s-fs@0.14.1 --features binary)"),
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(program)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS, "--secret-key", SECRET])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s3s-fs did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((Killed(child), format!("http://127.0.0.1:{port}")))
}

#[test]
fn large_results_go_through_s3() {
    let root = std::env::temp_dir().join(format!("hkube-s3-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let buckets = root.join("s3");
    std::fs::create_dir_all(&buckets).unwrap();
    let Some((_s3, endpoint)) = s3_server(&buckets) else {
        return;
    };
    // Two Python algorithms: one makes 3 MB of bytes, the other hands its input back.
    let algorithms = root.join("algorithms");
    for (name, code) in [
        (
            "produce",
            "def start(args, api):\n    return bytes(range(256)) * 12000\n",
        ),
        (
            "echo",
            "def start(args, api):\n    return bytes(args['input'][0])\n",
        ),
    ] {
        let dir = algorithms.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("main.py"), code).unwrap();
        std::fs::write(
            dir.join("algorithm.yml"),
            format!("name: {name}\nenv: python\ncode:\n  path: .\n  entryPoint: main.py\n"),
        )
        .unwrap();
    }
    let s3_options = |command: &mut Command, secret: &str| {
        command
            .args(["--storage", "s3", "--s3-endpoint", &endpoint, "--state-dir"])
            .arg(root.join("state"))
            .arg("--algorithms")
            .arg(&algorithms)
            .env("AWS_ACCESS_KEY_ID", ACCESS)
            .env("AWS_SECRET_ACCESS_KEY", secret);
    };

    // Wrong credentials: the server says why and does not start.
    let mut refused = Command::new(env!("CARGO_BIN_EXE_hkube"));
    refused.args(["server", "--listen", "127.0.0.1:0"]);
    s3_options(&mut refused, "wrong");
    let refused = refused.output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("cannot reach the S3 storage at http://127.0.0.1:"),
        "{stderr}"
    );

    let server = common::start_server(|command| s3_options(command, SECRET));
    let _server = Killed(server.child);
    let api = format!("http://{}/api/v1", server.address);
    let pipeline = json!({
        "name": "bytes-through-s3",
        "nodes": [
            {"nodeName": "Produce", "algorithmName": "produce", "input": []},
            {"nodeName": "Echo", "algorithmName": "echo", "input": ["@Produce"]}
        ]
    });
    let started = common::http_json("POST", &format!("{api}/exec/raw"), &pipeline.to_string());
    let job_id = started["jobId"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let results = loop {
        let results = common::http_json("GET", &format!("{api}/exec/results/{job_id}"), "");
        if results["status"] == "completed" || results["status"] == "failed" {
            break results;
        }
        assert!(Instant::now() < deadline, "the job did not end");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(results["status"], "completed", "{results}");
    assert_eq!(results["storageModule"], "@hkube/s3-adapter", "{results}");
    let info = &results["data"][0]["info"];
    assert_eq!(info["size"], 256 * 12000, "{results}");
    // The kept result is in the bucket, header included, under HKube's key.
    let key = info["path"].as_str().unwrap();
    assert!(key.starts_with(&format!("local-hkube/{job_id}/")), "{key}");
    let object = buckets.join(key);
    let stored = std::fs::metadata(&object)
        .unwrap_or_else(|e| panic!("{} is not in the S3 server: {e}", object.display()));
    assert_eq!(stored.len(), 256 * 12000 + 8);
    // Produce's object was published too, and is collected with the job: only the kept
    // result stays in the bucket.
    let job_folder = buckets.join(format!("local-hkube/{job_id}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = std::fs::read_dir(&job_folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .collect();
        if left.len() == 1 {
            assert!(key.ends_with(&left[0]), "{left:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job's other objects stayed: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&root);
}
