//! HKube's official Python wrapper (`hkube-python-wrapper` 2.4.2 from PyPI), unmodified, runs a
//! user algorithm against our sidecar: storage v3 inputs and outputs through the fs storage,
//! BSON on the socket, an exception, raw bytes, a blocking code-API call, and `exit`.
//!
//! Needs the wrapper installed in a Python 3.8 venv by `scripts/setup-official-python-wrapper.sh`
//! (`HKUBE_COMPAT_VENV`, default `~/.cache/hkube/py38-official-wrapper`); without it the test
//! prints why and skips.

#![allow(clippy::unwrap_used)] // a test may panic on the unexpected

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::task;
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use wrapper::link::{Assignment, CodeApiReply, CodeApiRequest, FromSidecar, Outcome, ToSidecar};
use wrapper::protocol::codec::binary;
use wrapper::sidecar::{link_pair, OrchestratorEnd, Sidecar, SidecarOptions, StorageAccess};
use wrapper::storage::{self, fs::FsStorage};

/// The venv's interpreter, if the official wrapper is installed.
fn official_python() -> Option<PathBuf> {
    let venv = match std::env::var_os("HKUBE_COMPAT_VENV") {
        Some(venv) => PathBuf::from(venv),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/hkube/py38-official-wrapper"),
    };
    let python = venv.join("bin/python");
    let site = std::process::Command::new(&python)
        .args(["-c", "import hkube_python_wrapper"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    site.is_ok_and(|s| s.success()).then_some(python)
}

/// The user's algorithm, as a user writes it for HKube: module-level `start(args, hkubeApi)`.
const MAIN_PY: &str = r#"
import os

def start(args, hkubeApi):
    x = args["input"][0]
    if x == "boom":
        raise ValueError("boom!")
    if x == "call":
        child = hkubeApi.start_algorithm("double", [21, {"k": [1, 2]}])
        return {"child": child}
    if x == "call-fails":
        return {"child": hkubeApi.start_algorithm("missing", [1])}
    if isinstance(x, bytes):
        return bytes(reversed(x))
    return {"input": args["input"], "task": args["taskId"], "node": args["nodeName"], "job": args["jobId"]}

def exit(data):
    with open(os.path.join(os.environ["MARKER_DIR"], "exit-called"), "w") as f:
        f.write(str(data.get("exitCode")))
"#;

/// HKube's builder launcher (`core/algorithm-builder/environments/python/wrapper/app.py`).
const BUILDER_APP_PY: &str = "from hkube_python_wrapper import Algorunner\n\nif __name__ == '__main__':\n    Algorunner.Run()\n";

/// What a custom image does: import the user's functions and hand them over.
const CUSTOM_APP_PY: &str = "import sys\nsys.path.insert(0, 'algorithm_unique_folder')\nimport main\nfrom hkube_python_wrapper import Algorunner\n\nif __name__ == '__main__':\n    Algorunner.Run(start=main.start, exit=main.exit)\n";

/// A port `p` with `p + 1` free too: the wrapper's peer data server binds both.
fn free_port_pair() -> u16 {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("0.0.0.0", port + 1)).is_ok() {
            return port;
        }
    }
}

/// Prints the wrapper's output when the test fails, so a failure shows the Python side too.
struct ShowLogOnPanic(PathBuf);

impl Drop for ShowLogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            eprintln!("----- the official wrapper's output -----\n{log}");
        }
    }
}

/// Lays out the image as HKube's builder does and starts the wrapper with the environment
/// HKube's task-executor gives the `algorunner` container (reference §1.2).
fn spawn_official(python: &Path, root: &Path, app_py: &str, sidecar_port: u16) -> Child {
    let package = root.join("algorithm_unique_folder");
    std::fs::create_dir_all(&package).unwrap();
    std::fs::write(package.join("__init__.py"), "").unwrap();
    std::fs::write(package.join("main.py"), MAIN_PY).unwrap();
    std::fs::write(root.join("app.py"), app_py).unwrap();
    let log = std::fs::File::create(root.join("wrapper.log")).unwrap();
    Command::new(python)
        .args(["-u", "app.py"])
        .current_dir(root)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("WORKER_SOCKET_HOST", "127.0.0.1")
        .env("WORKER_SOCKET_PORT", sidecar_port.to_string())
        .env("ALGORITHM_PATH", "algorithm_unique_folder")
        .env("ALGORITHM_ENTRY_POINT", "main.py")
        // STORAGE_PROTOCOL (v3) and WORKER_ALGORITHM_ENCODING (bson) keep the wrapper's defaults.
        .env("DEFAULT_STORAGE", "fs")
        .env("BASE_FS_ADAPTER_DIRECTORY", root.join("storage"))
        .env("CLUSTER_NAME", "local")
        .env("STORAGE_ENCODING", "msgpack")
        .env("DISCOVERY_ENABLE", "true")
        .env("POD_IP", "127.0.0.1")
        .env("DISCOVERY_PORT", free_port_pair().to_string())
        .env("MARKER_DIR", root)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("the venv's python starts")
}

async fn start_sidecar(storage_root: &Path) -> (u16, OrchestratorEnd) {
    let access = StorageAccess {
        storage: Arc::new(FsStorage::new(storage_root)),
        cluster: "local".into(),
        encoding: storage::encoding::Encoding::Msgpack,
        spool: None,
    };
    let options = SidecarOptions {
        storage: Some(access),
        ..SidecarOptions::default()
    };
    let sidecar = Sidecar::bind("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let port = sidecar.local_addr().unwrap().port();
    let (link, end) = link_pair();
    tokio::spawn(sidecar.run(link));
    (port, end)
}

/// The next report that is not `Started`/`Progress`.
async fn next_outcome(end: &mut OrchestratorEnd) -> FromSidecar {
    loop {
        let report = tokio::time::timeout(Duration::from_secs(30), end.from_sidecar.recv())
            .await
            .expect("the sidecar reports within 30 s")
            .expect("the link is open");
        match report {
            FromSidecar::Started { .. } | FromSidecar::Progress { .. } => continue,
            other => return other,
        }
    }
}

fn finished(task_id: &str, output: Value) -> FromSidecar {
    FromSidecar::Finished {
        task_id: task_id.into(),
        outcome: Outcome::Output { output },
    }
}

async fn run(end: &mut OrchestratorEnd, assignment: std::sync::Arc<Assignment>) {
    end.to_sidecar
        .send(ToSidecar::Run {
            tasks: vec![assignment],
        })
        .unwrap();
}

/// Answers the next report, which must be this code-API request, with `reply`.
async fn answer_code_api(end: &mut OrchestratorEnd, expected: CodeApiRequest, reply: CodeApiReply) {
    match next_outcome(end).await {
        FromSidecar::CodeApi {
            task_id,
            request_id,
            request,
        } => {
            assert_eq!(task_id, "api");
            assert_eq!(request, expected);
            end.to_sidecar
                .send(ToSidecar::CodeApiReply { request_id, reply })
                .unwrap();
        }
        other => panic!("expected a code-API request, got {other:?}"),
    }
}

async fn exits(end: &mut OrchestratorEnd, child: &mut Child, root: &Path) {
    end.to_sidecar
        .send(ToSidecar::Exit { exit_code: 0 })
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the official wrapper ends within 15 s of exit")
        .unwrap();
    assert!(status.success(), "the wrapper exits 0: {status}");
    let marker = std::fs::read_to_string(root.join("exit-called")).unwrap();
    assert_eq!(marker, "0", "the user's exit(data) got exitCode 0");
}

#[tokio::test]
async fn the_official_python_wrapper_runs_a_user_algorithm() {
    let Some(python) = official_python() else {
        testkit::skip(
            None,
            "the official wrapper is not installed (run scripts/setup-official-python-wrapper.sh)",
        );
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let _log = ShowLogOnPanic(root.path().join("wrapper.log"));
    let (port, mut end) = start_sidecar(&root.path().join("storage")).await;
    let mut child = spawn_official(&python, root.path(), BUILDER_APP_PY, port);
    assert_eq!(next_outcome(&mut end).await, FromSidecar::Ready);

    // Inputs of every shape reach `args["input"]` through storage; the output comes back.
    let input = vec![
        json!([1, 2, 3]),
        json!({"a": {"b": "c"}}),
        json!(7.5),
        json!(null),
    ];
    run(&mut end, task("t1", input.clone())).await;
    let expected = json!({"input": input, "task": "t1", "node": "A", "job": "job1"});
    assert_eq!(next_outcome(&mut end).await, finished("t1", expected));

    // The same connection takes the next task (a hot worker).
    run(&mut end, task("t2", vec![json!("x")])).await;
    let expected = json!({"input": ["x"], "task": "t2", "node": "A", "job": "job1"});
    assert_eq!(next_outcome(&mut end).await, finished("t2", expected));

    // A user exception becomes the task's error, with its message.
    run(&mut end, task("bad", vec![json!("boom")])).await;
    match next_outcome(&mut end).await {
        FromSidecar::Finished {
            task_id,
            outcome: Outcome::Error { message, .. },
        } => {
            assert_eq!(task_id, "bad");
            assert_eq!(message, "boom!");
        }
        other => panic!("expected an error, got {other:?}"),
    }

    // Bytes in are Python `bytes`; bytes out are stored raw and come back as bytes.
    run(&mut end, task("raw", vec![binary(b"\x00\x01hk\xff")])).await;
    assert_eq!(
        next_outcome(&mut end).await,
        finished("raw", binary(b"\xffkh\x01\x00"))
    );

    // A blocking code-API call: its v3 inputs are read back from storage for the orchestrator,
    // and the reply reaches the user code through storage.
    run(&mut end, task("api", vec![json!("call")])).await;
    let expected = CodeApiRequest::StartAlgorithm {
        algorithm_name: "double".into(),
        input: vec![json!(21), json!({"k": [1, 2]})],
        include_result: true,
    };
    let reply = CodeApiReply::Done {
        response: json!({"doubled": 42}),
    };
    answer_code_api(&mut end, expected, reply).await;
    assert_eq!(
        next_outcome(&mut end).await,
        finished("api", json!({"child": {"doubled": 42}}))
    );

    // The result went to the wrapper as a storage link, as HKube's worker sends it.
    let store = FsStorage::new(root.path().join("storage"));
    let objects = storage::Storage::list(&store, "local-hkube/job1/")
        .await
        .unwrap();
    assert!(
        objects
            .iter()
            .any(|p| p.starts_with("local-hkube/job1/api-code-api-")),
        "{objects:?}"
    );

    // A failed child: 2.4.2 returns the error text to the user code rather than raising. The
    // task id comes back on purpose (as on a retry): the wrapper caches inputs by storage path,
    // so it must not see the previous task's input.
    run(&mut end, task("api", vec![json!("call-fails")])).await;
    let expected = CodeApiRequest::StartAlgorithm {
        algorithm_name: "missing".into(),
        input: vec![json!(1)],
        include_result: true,
    };
    let reply = CodeApiReply::Error {
        error: "algorithm missing is not defined".into(),
    };
    answer_code_api(&mut end, expected, reply).await;
    assert_eq!(
        next_outcome(&mut end).await,
        finished("api", json!({"child": "algorithm missing is not defined"}))
    );

    exits(&mut end, &mut child, root.path()).await;
}

#[tokio::test]
async fn a_custom_image_that_passes_its_own_start() {
    let Some(python) = official_python() else {
        testkit::skip(
            None,
            "the official wrapper is not installed (run scripts/setup-official-python-wrapper.sh)",
        );
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let _log = ShowLogOnPanic(root.path().join("wrapper.log"));
    let (port, mut end) = start_sidecar(&root.path().join("storage")).await;
    let mut child = spawn_official(&python, root.path(), CUSTOM_APP_PY, port);
    assert_eq!(next_outcome(&mut end).await, FromSidecar::Ready);
    run(&mut end, task("t1", vec![json!({"n": 1})])).await;
    let expected = json!({"input": [{"n": 1}], "task": "t1", "node": "A", "job": "job1"});
    assert_eq!(next_outcome(&mut end).await, finished("t1", expected));
    exits(&mut end, &mut child, root.path()).await;
}
