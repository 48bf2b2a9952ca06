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

/// The sidecar's link, once it dialled the orchestrator's listener and said hello as `w1`.
async fn accept_link(
    orchestrator: &TcpListener,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let mut link = link_from(orchestrator).await;
    assert_eq!(
        next_json(&mut link).await,
        json!({"linkVersion": 1, "worker": "w1"})
    );
    link
}

/// The next link a wrapper dialled, its hello not read yet.
async fn link_from(
    orchestrator: &TcpListener,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let (stream, _) = tokio::time::timeout(Duration::from_secs(20), orchestrator.accept())
        .await
        .unwrap()
        .unwrap();
    tokio_tungstenite::accept_async(stream).await.unwrap()
}

/// `hkube-wrapper` as the wasm worker `described` (HKUBE_WASM), dialling the link on
/// `link_port` (as `worker` when given).
fn wasm_worker(
    link_port: u16,
    worker: Option<&str>,
    described: &Value,
    stderr: Stdio,
) -> tokio::process::Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hkube-wrapper"));
    command.args([
        "--orchestrator",
        &format!("ws://127.0.0.1:{link_port}/link"),
    ]);
    if let Some(worker) = worker {
        command.args(["--worker", worker]);
    }
    command
        .env("HKUBE_WASM", described.to_string())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
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

    let mut link = accept_link(&orchestrator).await;

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

/// A module (text format: wasmtime reads it too) that echoes its args, traps when its input
/// is `["trap"]`, loops forever when it is `["loop"]`, and writes its args on stderr.
const ECHO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 65536))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 4) (i32.load (i32.const 8)))
    ;; {"input":["trap"]... : the byte after `{"input":["` is at 1024 + 11.
    (if (i32.eq (i32.load8_u (i32.const 1035)) (i32.const 116)) (then unreachable))
    (if (i32.eq (i32.load8_u (i32.const 1035)) (i32.const 108)) (then (loop $forever (br $forever))))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

fn run_message(task_id: &str, input: Value) -> Message {
    let run = json!({"type": "run", "tasks": [{
        "jobId": "j", "taskId": task_id, "nodeName": "A", "algorithmName": "echo",
        "pipelineName": "p", "input": input, "rootJobId": "j"}]});
    Message::text(run.to_string())
}

/// `hkube-wrapper` with `HKUBE_WASM` (an env: wasm worker on the Docker executor): no algorithm
/// connects; it dials the link, says ready once the module compiled, and runs each task in a
/// fresh store: the args on stdin, the result from stdout, stderr as the task's log, a trap as
/// the task's error, a stop ends a looping task; `exit` ends it. A module that does not compile
/// ends it with wasmtime's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_sidecar_runs_a_wasm_module() {
    let orchestrator = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let link_port = orchestrator.local_addr().unwrap().port();
    let folder = tempfile::tempdir().unwrap();
    let module = folder.path().join("echo.wat");
    std::fs::write(&module, ECHO).unwrap();
    let described = json!({"module": module, "sandbox": {"name": "echo", "mem": "16Mi",
        "memMib": 16, "timeLimit": null, "dirs": [], "env": []}});
    let mut sidecar = wasm_worker(link_port, Some("w1"), &described, Stdio::piped());
    let mut link = accept_link(&orchestrator).await;
    assert_eq!(next_json(&mut link).await, json!({"type": "ready"}));

    link.send(run_message("t1", json!([14, 3]))).await.unwrap();
    assert_eq!(
        next_json(&mut link).await,
        json!({"type": "started", "taskId": "t1"})
    );
    let args = json!({"input": [14, 3], "jobId": "j", "taskId": "t1", "nodeName": "A",
        "algorithmName": "echo", "pipelineName": "p"});
    let log = next_json(&mut link).await;
    assert_eq!(log["type"], "log", "{log}");
    assert_eq!(
        serde_json::from_str::<Value>(log["text"].as_str().unwrap()).unwrap(),
        args
    );
    assert_eq!(
        next_json(&mut link).await,
        json!({"type": "finished", "taskId": "t1", "outcome": {"kind": "output", "output": args}})
    );

    link.send(run_message("t2", json!(["trap"]))).await.unwrap();
    assert_eq!(
        next_json(&mut link).await,
        json!({"type": "started", "taskId": "t2"})
    );
    let trapped = next_json(&mut link).await;
    assert_eq!(trapped["outcome"]["kind"], "error", "{trapped}");
    let message = trapped["outcome"]["message"].as_str().unwrap();
    assert!(message.starts_with("the module failed"), "{message}");
    assert!(message.contains("unreachable"), "{message}");

    link.send(run_message("t3", json!(["loop"]))).await.unwrap();
    assert_eq!(
        next_json(&mut link).await,
        json!({"type": "started", "taskId": "t3"})
    );
    link.send(Message::text(
        json!({"type": "stop", "taskId": "t3", "force": false}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(
        next_json(&mut link).await,
        json!({"type": "finished", "taskId": "t3", "outcome": {"kind": "stopped"}})
    );

    link.send(Message::text(
        json!({"type": "exit", "exitCode": 0}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(
        next_json(&mut link).await,
        json!({"type": "gone", "reason": "the wasm worker ended"})
    );
    let status = tokio::time::timeout(Duration::from_secs(10), sidecar.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());

    // A module that does not compile: gone, with wasmtime's words.
    std::fs::write(&module, "(module (func (export \"_start\") i32.add))").unwrap();
    let mut broken = wasm_worker(link_port, None, &described, Stdio::null());
    let mut link = link_from(&orchestrator).await;
    next_json(&mut link).await;
    let gone = next_json(&mut link).await;
    assert_eq!(gone["type"], "gone", "{gone}");
    let reason = gone["reason"].as_str().unwrap();
    assert!(reason.contains("does not compile (wasmtime)"), "{reason}");
    assert!(reason.contains("type mismatch"), "{reason}");
    let _ = tokio::time::timeout(Duration::from_secs(10), broken.wait()).await;
}

/// The wasm worker is its container's PID 1: SIGTERM (`docker stop`) ends it at once, even in
/// the middle of a task that loops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_wasm_worker_at_once() {
    let orchestrator = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let link_port = orchestrator.local_addr().unwrap().port();
    let folder = tempfile::tempdir().unwrap();
    let module = folder.path().join("echo.wat");
    std::fs::write(&module, ECHO).unwrap();
    let described = json!({"module": module, "sandbox": {"name": "echo", "mem": "16Mi",
        "memMib": 16, "timeLimit": null, "dirs": [], "env": []}});
    let mut sidecar = wasm_worker(link_port, None, &described, Stdio::null());
    let mut link = link_from(&orchestrator).await;
    next_json(&mut link).await;
    assert_eq!(next_json(&mut link).await, json!({"type": "ready"}));
    link.send(run_message("t1", json!(["loop"]))).await.unwrap();
    assert_eq!(
        next_json(&mut link).await,
        json!({"type": "started", "taskId": "t1"})
    );
    let pid = sidecar.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(1), sidecar.wait())
        .await
        .expect("it ends within a second of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
