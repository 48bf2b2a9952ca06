//! `hkube-wrapper` as a program: it dials a (scripted) orchestrator, serves the Python runtime,
//! and carries tasks and outcomes over the network link.

#![allow(clippy::unwrap_used)] // a test may panic on the unexpected

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn next_json(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a link message within 20 s")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

#[tokio::test]
async fn the_standalone_sidecar_over_a_network_link() {
    let python = std::process::Command::new("python3")
        .arg("--version")
        .output();
    if !python.is_ok_and(|o| o.status.success()) {
        testkit::skip(None, "python3 is not installed");
        return;
    }
    let orchestrator = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let link_port = orchestrator.local_addr().unwrap().port();
    let sidecar_port = free_port();
    let storage = tempfile::tempdir().unwrap();
    let mut sidecar = Command::new(env!("CARGO_BIN_EXE_hkube-wrapper"))
        .args(["--listen", &format!("127.0.0.1:{sidecar_port}")])
        .args([
            "--orchestrator",
            &format!("ws://127.0.0.1:{link_port}/link"),
        ])
        .args(["--worker", "w1"])
        .env("BASE_FS_ADAPTER_DIRECTORY", storage.path())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let (stream, _) = tokio::time::timeout(Duration::from_secs(20), orchestrator.accept())
        .await
        .unwrap()
        .unwrap();
    let mut link = tokio_tungstenite::accept_async(stream).await.unwrap();
    assert_eq!(
        next_json(&mut link).await,
        json!({"linkVersion": 1, "worker": "w1"})
    );

    let folder = tempfile::tempdir().unwrap();
    std::fs::write(
        folder.path().join("main.py"),
        "def start(args, api):\n    return args['input'][0] * 3\n",
    )
    .unwrap();
    let runtime = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtimes/python");
    let mut algorithm = Command::new("python3")
        .args(["-m", "hkube_runtime"])
        .env("PYTHONPATH", runtime)
        .env("WORKER_SOCKET_PORT", sidecar_port.to_string())
        .env("ALGORITHM_PATH", folder.path())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert_eq!(next_json(&mut link).await, json!({"type": "ready"}));

    let run = json!({"type": "run", "tasks": [{
        "jobId": "j", "taskId": "t1", "nodeName": "A", "algorithmName": "alg",
        "pipelineName": "p", "input": [14], "rootJobId": "j"}]});
    link.send(Message::text(run.to_string())).await.unwrap();
    assert_eq!(
        next_json(&mut link).await,
        json!({"type": "started", "taskId": "t1"})
    );
    assert_eq!(
        next_json(&mut link).await,
        json!({"type": "finished", "taskId": "t1", "outcome": {"kind": "output", "output": 42}})
    );

    link.send(Message::text(
        json!({"type": "exit", "exitCode": 0}).to_string(),
    ))
    .await
    .unwrap();
    let gone = next_json(&mut link).await;
    assert_eq!(
        gone,
        json!({"type": "gone", "reason": "exit 0 was requested"})
    );
    let status = tokio::time::timeout(Duration::from_secs(10), algorithm.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let status = tokio::time::timeout(Duration::from_secs(10), sidecar.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn an_unreachable_orchestrator_is_a_clear_error() {
    let port = free_port();
    let output = Command::new(env!("CARGO_BIN_EXE_hkube-wrapper"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--orchestrator",
            &format!("ws://127.0.0.1:{port}/link"),
        ])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach the orchestrator at ws://127.0.0.1:"),
        "{stderr}"
    );
}
