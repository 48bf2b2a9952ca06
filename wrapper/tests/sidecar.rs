//! The sidecar against real peers on real sockets: the Python runtime as a child process, and a
//! scripted wrapper (a websocket client in this test) for the protocol's edge cases.

#![allow(clippy::unwrap_used)] // a test may panic on the unexpected

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::task;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use wrapper::link::{CodeApiReply, CodeApiRequest, FromSidecar, Outcome, ToSidecar};
use wrapper::protocol::{self, Encoding, Frame};
use wrapper::sidecar::{link_pair, OrchestratorEnd, Sidecar, SidecarOptions, StorageAccess};
use wrapper::storage::{self, encoding::StoredValue, fs::FsStorage};

async fn start_sidecar(
    options: SidecarOptions,
) -> (u16, OrchestratorEnd, tokio::task::JoinHandle<String>) {
    let sidecar = Sidecar::bind("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let port = sidecar.local_addr().unwrap().port();
    let (link, end) = link_pair();
    let handle = tokio::spawn(sidecar.run(link));
    (port, end, handle)
}

async fn next(end: &mut OrchestratorEnd) -> FromSidecar {
    tokio::time::timeout(Duration::from_secs(20), end.from_sidecar.recv())
        .await
        .expect("the sidecar reports within 20 s")
        .expect("the link is open")
}

/// The next report that is not `Started`/`Ready`/`Progress`.
async fn next_outcome(end: &mut OrchestratorEnd) -> FromSidecar {
    loop {
        match next(end).await {
            FromSidecar::Started { .. } | FromSidecar::Ready | FromSidecar::Progress { .. } => {
                continue
            }
            other => return other,
        }
    }
}

fn finished(task_id: &str, outcome: Outcome) -> FromSidecar {
    FromSidecar::Finished {
        task_id: task_id.into(),
        outcome,
    }
}

fn output(value: Value) -> Outcome {
    Outcome::Output { output: value }
}

// ----- the Python runtime as a real process ----------------------------------------------

fn python_available() -> bool {
    std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn spawn_python(port: u16, folder: &Path, fast: bool) -> Child {
    spawn_python_with(port, None, folder, fast)
}

/// The Python runtime against the sidecar at `port`, or at the Unix socket `unix` if given.
fn spawn_python_with(port: u16, unix: Option<&Path>, folder: &Path, fast: bool) -> Child {
    let runtime = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtimes/python");
    let mut command = Command::new("python3");
    command
        .args(["-m", "hkube_runtime"])
        .env("PYTHONPATH", runtime)
        .env("WORKER_SOCKET_PORT", port.to_string())
        .env("ALGORITHM_PATH", folder)
        .env("ALGORITHM_ENTRY_POINT", "main.py")
        .env("HKUBE_FAST_PATH", if fast { "1" } else { "0" })
        .env("HKUBE_CONNECT_TIMEOUT", "5");
    if let Some(unix) = unix {
        command.env("HKUBE_WORKER_SOCKET_PATH", unix);
    }
    command
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 starts")
}

/// Asks the runtime to exit 0; it does, and the sidecar ends saying why.
async fn exit_cleanly(
    end: &OrchestratorEnd,
    child: &mut Child,
    sidecar: tokio::task::JoinHandle<String>,
) {
    end.to_sidecar
        .send(ToSidecar::Exit { exit_code: 0 })
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the runtime exits 0 on exit: {status}");
    assert_eq!(sidecar.await.unwrap(), "exit 0 was requested");
}

fn algorithm_folder(code: &str) -> tempfile::TempDir {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("main.py"), code).unwrap();
    folder
}

const ALGORITHM: &str = r#"
def start(args, api):
    x = args["input"][0]
    if x == "boom":
        raise ValueError("boom!")
    if x == "call":
        return api.start_algorithm("double", [21])
    return {"x": x, "task": args["taskId"], "node": args["nodeName"]}
"#;

async fn python_round_trip(fast: bool) {
    if !python_available() {
        testkit::skip(None, "python3 is not installed");
        return;
    }
    let folder = algorithm_folder(ALGORITHM);
    let (port, mut end, sidecar) = start_sidecar(SidecarOptions::default()).await;
    // The runtime reaches the sidecar through a recording proxy, so the test can show which
    // protocol carried the tasks: the same assertions below hold for both.
    let (proxy_port, to_runtime) = recording_proxy(port).await;
    let mut child = spawn_python(proxy_port, folder.path(), fast);
    assert_eq!(next(&mut end).await, FromSidecar::Ready);

    // Several tasks at once: the fast path batches them into one message.
    let tasks = (0..5)
        .map(|i| task(&format!("t{i}"), vec![json!(i)]))
        .collect();
    end.to_sidecar.send(ToSidecar::Run { tasks }).unwrap();
    for i in 0..5 {
        let expected = json!({"x": i, "task": format!("t{i}"), "node": "A"});
        assert_eq!(
            next_outcome(&mut end).await,
            finished(&format!("t{i}"), output(expected))
        );
    }

    // A user exception: its message, its traceback as details, its type and place.
    end.to_sidecar
        .send(ToSidecar::Run {
            tasks: vec![task("bad", vec![json!("boom")])],
        })
        .unwrap();
    match next_outcome(&mut end).await {
        FromSidecar::Finished {
            task_id,
            outcome:
                Outcome::Error {
                    message,
                    details,
                    exception,
                    location,
                },
        } => {
            assert_eq!(task_id, "bad");
            assert_eq!(message, "boom!");
            assert!(details.unwrap_or_default().contains("ValueError: boom!"));
            assert_eq!(exception.as_deref(), Some("ValueError"));
            assert_eq!(location.as_deref(), Some("main.py:5"));
        }
        other => panic!("expected an error, got {other:?}"),
    }

    // A code-API call: relayed to the orchestrator, answered, returned to the user code.
    end.to_sidecar
        .send(ToSidecar::Run {
            tasks: vec![task("api", vec![json!("call")])],
        })
        .unwrap();
    match next_outcome(&mut end).await {
        FromSidecar::CodeApi {
            task_id,
            request_id,
            request,
        } => {
            assert_eq!(task_id, "api");
            assert_eq!(
                request,
                CodeApiRequest::StartAlgorithm {
                    algorithm_name: "double".into(),
                    input: vec![json!(21)],
                    include_result: true,
                }
            );
            let reply = CodeApiReply::Done {
                response: json!(42),
            };
            end.to_sidecar
                .send(ToSidecar::CodeApiReply { request_id, reply })
                .unwrap();
        }
        other => panic!("expected a code-API request, got {other:?}"),
    }
    assert_eq!(
        next_outcome(&mut end).await,
        finished("api", output(json!(42)))
    );

    exit_cleanly(&end, &mut child, sidecar).await;

    // The sidecar's frames to the runtime are unmasked JSON text on the wire.
    let wire = String::from_utf8_lossy(&to_runtime.lock().unwrap()).into_owned();
    let (fast_commands, exchange_commands) = (
        wire.contains(r#""command":"runBatch""#),
        wire.contains(r#""command":"initialize""#) && wire.contains(r#""command":"start""#),
    );
    assert_eq!(
        (fast_commands, exchange_commands),
        (fast, !fast),
        "fast path wanted: {fast}; runBatch seen: {fast_commands}, initialize+start seen: {exchange_commands}"
    );
}

/// A TCP proxy to `port` on a port of its own; it records every byte sent back from `port`.
async fn recording_proxy(port: u16) -> (u16, Arc<std::sync::Mutex<Vec<u8>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    let recorded = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = recorded.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        let upstream = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            let _ = server_write.shutdown().await;
        });
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    record.lock().unwrap().extend_from_slice(&buffer[..n]);
                    if client_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = client_write.shutdown().await;
        let _ = upstream.await;
    });
    (proxy_port, recorded)
}

#[tokio::test]
async fn python_runtime_fast_path() {
    python_round_trip(true).await;
}

#[tokio::test]
async fn python_runtime_hkube_exchange() {
    python_round_trip(false).await;
}

/// hkube's local sidecar also listens on a Unix socket in a private folder, and the Python
/// runtime connects there when told: here the port it is given has nothing behind it, so the
/// task can only come back over the socket. The folder goes with the sidecar.
#[tokio::test]
async fn the_python_runtime_connects_over_the_unix_socket() {
    use std::os::unix::fs::PermissionsExt;
    if !python_available() {
        testkit::skip(None, "python3 is not installed");
        return;
    }
    let folder = algorithm_folder(ALGORITHM);
    let sidecar = Sidecar::bind_local(SidecarOptions::default())
        .await
        .unwrap();
    let socket = sidecar.unix_path().expect("a Unix socket").to_path_buf();
    let private = socket.parent().unwrap().to_path_buf();
    let mode = std::fs::metadata(&private).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "only its user may reach the socket");
    let closed_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let (link, mut end) = link_pair();
    let handle = tokio::spawn(sidecar.run(link));
    let mut child = spawn_python_with(closed_port, Some(&socket), folder.path(), true);
    assert_eq!(next(&mut end).await, FromSidecar::Ready);
    end.to_sidecar
        .send(ToSidecar::Run {
            tasks: vec![task("t1", vec![json!(7)])],
        })
        .unwrap();
    assert_eq!(
        next_outcome(&mut end).await,
        finished("t1", output(json!({"x": 7, "task": "t1", "node": "A"})))
    );
    exit_cleanly(&end, &mut child, handle).await;
    assert!(
        !private.exists(),
        "the socket's folder is removed with the sidecar"
    );
}

#[tokio::test]
async fn a_crashing_algorithm_crashes_its_task() {
    if !python_available() {
        testkit::skip(None, "python3 is not installed");
        return;
    }
    let folder = algorithm_folder("import os\ndef start(args, api):\n    os._exit(3)\n");
    let (port, mut end, sidecar) = start_sidecar(SidecarOptions::default()).await;
    let _child = spawn_python(port, folder.path(), true);
    assert_eq!(next(&mut end).await, FromSidecar::Ready);
    end.to_sidecar
        .send(ToSidecar::Run {
            tasks: vec![task("t", vec![])],
        })
        .unwrap();
    let reason = match next_outcome(&mut end).await {
        FromSidecar::Finished {
            task_id,
            outcome: Outcome::Crashed { reason },
        } if task_id == "t" => reason,
        other => panic!("expected a crash, got {other:?}"),
    };
    assert!(reason.starts_with("the algorithm disconnected"), "{reason}");
    assert_eq!(
        next_outcome(&mut end).await,
        FromSidecar::Gone {
            reason: reason.clone()
        }
    );
    assert_eq!(sidecar.await.unwrap(), reason);
}

// ----- a scripted wrapper ----------------------------------------------------------------

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(port: u16, query: &str) -> Client {
    let url = format!("ws://127.0.0.1:{port}/{query}");
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn send(client: &mut Client, encoding: Encoding, message: Value) {
    let frame = match protocol::encode(encoding, &message).unwrap() {
        Frame::Text(text) => Message::text(text),
        Frame::Binary(bytes) => Message::binary(bytes),
    };
    client.send(frame).await.unwrap();
}

async fn receive(client: &mut Client, encoding: Encoding) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let frame = match message {
            Message::Text(text) => Frame::Text(text.as_str().to_string()),
            Message::Binary(bytes) => Frame::Binary(bytes.to_vec()),
            _ => continue,
        };
        let envelope = protocol::decode_envelope(encoding, frame).unwrap();
        return serde_json::to_value(envelope).unwrap();
    }
}

#[tokio::test]
async fn every_encoding_through_hkube_exchange() {
    for (encoding, name) in [
        (Encoding::Json, "json"),
        (Encoding::Bson, "bson"),
        (Encoding::Msgpack, "msgpack"),
    ] {
        let (port, mut end, _sidecar) = start_sidecar(SidecarOptions::default()).await;
        let mut client = connect(port, &format!("?storage=v1&encoding={name}")).await;
        assert_eq!(next(&mut end).await, FromSidecar::Ready);
        end.to_sidecar
            .send(ToSidecar::Run {
                tasks: vec![task("t1", vec![json!({"k": [1, 2]})])],
            })
            .unwrap();
        let initialize = receive(&mut client, encoding).await;
        assert_eq!(initialize["command"], "initialize", "{name}");
        assert_eq!(
            initialize["data"]["input"],
            json!([{"k": [1, 2]}]),
            "{name}"
        );
        assert_eq!(initialize["data"]["taskId"], "t1");
        send(&mut client, encoding, json!({"command": "initialized"})).await;
        assert_eq!(receive(&mut client, encoding).await["command"], "start");
        send(&mut client, encoding, json!({"command": "started"})).await;
        assert_eq!(
            next(&mut end).await,
            FromSidecar::Started {
                task_id: "t1".into()
            }
        );
        send(
            &mut client,
            encoding,
            json!({"command": "done", "data": {"sum": 3}}),
        )
        .await;
        assert_eq!(
            next(&mut end).await,
            finished("t1", output(json!({"sum": 3}))),
            "{name}"
        );
    }
}

#[tokio::test]
async fn storage_v3_inputs_and_outputs_go_through_storage() {
    let root = tempfile::tempdir().unwrap();
    let store: Arc<dyn storage::Storage> = Arc::new(FsStorage::new(root.path()));
    let access = StorageAccess {
        storage: store.clone(),
        cluster: "local".into(),
        encoding: storage::encoding::Encoding::Msgpack,
        spool: None,
    };
    let options = SidecarOptions {
        storage: Some(access),
        ..SidecarOptions::default()
    };
    let (port, mut end, _sidecar) = start_sidecar(options).await;
    let mut client = connect(port, "?storage=v3&encoding=bson").await;
    assert_eq!(next(&mut end).await, FromSidecar::Ready);
    end.to_sidecar
        .send(ToSidecar::Run {
            tasks: vec![task("t1", vec![json!([7, 8]), json!("s")])],
        })
        .unwrap();
    let initialize = receive(&mut client, Encoding::Bson).await;
    let data = &initialize["data"];
    // Inputs are storage references the wrapper resolves itself.
    let reference = data["input"][0].as_str().unwrap();
    assert!(reference.starts_with("$$"), "{data}");
    assert_eq!(data["flatInput"]["0"], reference);
    let key = &reference[2..];
    let path = data["storage"][key]["storageInfo"]["path"]
        .as_str()
        .unwrap();
    assert_eq!(path, format!("local-hkube/job1/{key}"));
    let stored = storage::get_value(store.as_ref(), path, storage::encoding::Encoding::Msgpack)
        .await
        .unwrap();
    assert_eq!(stored, StoredValue::Value(json!([7, 8])));
    // The wrapper writes its output with the header, says where, and is done.
    let out = storage::task_key("local", "job1", "t1");
    let value = StoredValue::Value(json!({"total": 15}));
    storage::put_value(
        store.as_ref(),
        &out,
        &value,
        storage::encoding::Encoding::Msgpack,
    )
    .await
    .unwrap();
    send(
        &mut client,
        Encoding::Bson,
        json!({"command": "initialized"}),
    )
    .await;
    assert_eq!(
        receive(&mut client, Encoding::Bson).await["command"],
        "start"
    );
    send(&mut client, Encoding::Bson, json!({"command": "storing", "data": {"storageInfo": {"path": out, "size": 9}, "metadata": {}}})).await;
    send(&mut client, Encoding::Bson, json!({"command": "done"})).await;
    assert_eq!(
        next_outcome(&mut end).await,
        finished("t1", output(json!({"total": 15})))
    );
}

#[tokio::test]
async fn protocol_faults_fail_the_task_not_the_sidecar() {
    let (port, mut end, _sidecar) = start_sidecar(SidecarOptions::default()).await;
    let mut client = connect(port, "?storage=v1&encoding=json").await;
    assert_eq!(next(&mut end).await, FromSidecar::Ready);

    // A malformed frame.
    end.to_sidecar
        .send(ToSidecar::Run {
            tasks: vec![task("t1", vec![])],
        })
        .unwrap();
    receive(&mut client, Encoding::Json).await;
    client.send(Message::text("{not json")).await.unwrap();
    match next_outcome(&mut end).await {
        FromSidecar::Finished {
            outcome: Outcome::Error { message, .. },
            ..
        } => assert!(
            message.starts_with("the algorithm sent a message the sidecar cannot read"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }

    // A message out of order: `started` before `initialized`.
    end.to_sidecar
        .send(ToSidecar::Run {
            tasks: vec![task("t2", vec![])],
        })
        .unwrap();
    assert_eq!(
        receive(&mut client, Encoding::Json).await["command"],
        "initialize"
    );
    send(&mut client, Encoding::Json, json!({"command": "started"})).await;
    match next_outcome(&mut end).await {
        FromSidecar::Finished {
            task_id,
            outcome: Outcome::Error { message, .. },
        } => {
            assert_eq!(task_id, "t2");
            assert!(
                message.contains("out of order") && message.contains("started"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }

    // A second connection is refused and fails the task in hand.
    end.to_sidecar
        .send(ToSidecar::Run {
            tasks: vec![task("t3", vec![])],
        })
        .unwrap();
    assert_eq!(
        receive(&mut client, Encoding::Json).await["command"],
        "initialize"
    );
    let mut second = connect(port, "?encoding=json").await;
    match tokio::time::timeout(Duration::from_secs(5), second.next())
        .await
        .unwrap()
    {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert!(frame.reason.contains("second algorithm connection"))
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    match next_outcome(&mut end).await {
        FromSidecar::Finished {
            task_id,
            outcome: Outcome::Error { message, .. },
        } => {
            assert_eq!(task_id, "t3");
            assert!(
                message.starts_with("a second algorithm connection"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }

    // Unknown commands are ignored; the first connection still works.
    send(&mut client, Encoding::Json, json!({"command": "fooBar"})).await;
    end.to_sidecar
        .send(ToSidecar::Run {
            tasks: vec![task("t4", vec![json!(1)])],
        })
        .unwrap();
    assert_eq!(
        receive(&mut client, Encoding::Json).await["command"],
        "initialize"
    );
    send(
        &mut client,
        Encoding::Json,
        json!({"command": "initialized"}),
    )
    .await;
    receive(&mut client, Encoding::Json).await;
    send(
        &mut client,
        Encoding::Json,
        json!({"command": "done", "data": "fine"}),
    )
    .await;
    assert_eq!(
        next_outcome(&mut end).await,
        finished("t4", output(json!("fine")))
    );
}

#[tokio::test]
async fn an_algorithm_that_never_connects() {
    let options = SidecarOptions {
        connect_timeout: Duration::from_millis(200),
        ..SidecarOptions::default()
    };
    let (_port, mut end, sidecar) = start_sidecar(options).await;
    let reason = "the algorithm did not connect within 0.2 s".to_string();
    assert_eq!(
        next(&mut end).await,
        FromSidecar::Gone {
            reason: reason.clone()
        }
    );
    assert_eq!(sidecar.await.unwrap(), reason);
}

#[tokio::test]
async fn stop_and_a_stop_that_times_out() {
    let options = SidecarOptions {
        stop_timeout: Duration::from_millis(300),
        ..SidecarOptions::default()
    };
    let (port, mut end, sidecar) = start_sidecar(options).await;
    let mut client = connect(port, "?storage=v1&encoding=json").await;
    assert_eq!(next(&mut end).await, FromSidecar::Ready);
    // A queued task stops at once.
    let tasks = vec![task("t1", vec![]), task("t2", vec![])];
    end.to_sidecar.send(ToSidecar::Run { tasks }).unwrap();
    end.to_sidecar
        .send(ToSidecar::Stop {
            task_id: "t2".into(),
            force: true,
        })
        .unwrap();
    assert_eq!(
        next_outcome(&mut end).await,
        finished("t2", Outcome::Stopped)
    );
    // A running task is asked to stop and answers.
    receive(&mut client, Encoding::Json).await;
    send(
        &mut client,
        Encoding::Json,
        json!({"command": "initialized"}),
    )
    .await;
    receive(&mut client, Encoding::Json).await;
    end.to_sidecar
        .send(ToSidecar::Stop {
            task_id: "t1".into(),
            force: true,
        })
        .unwrap();
    assert_eq!(
        receive(&mut client, Encoding::Json).await,
        json!({"command": "stop", "data": {"forceStop": true}})
    );
    // A `done` that raced the stop is no outcome; only `stopped` ends the stop.
    send(
        &mut client,
        Encoding::Json,
        json!({"command": "done", "data": 1}),
    )
    .await;
    send(&mut client, Encoding::Json, json!({"command": "stopped"})).await;
    assert_eq!(
        next_outcome(&mut end).await,
        finished("t1", Outcome::Stopped)
    );
    // HKube's exchange cannot tell a late `done` from the next task's: the wrapper is replaced.
    assert_eq!(
        receive(&mut client, Encoding::Json).await,
        json!({"command": "exit", "data": {"exitCode": 0}})
    );
    assert_eq!(
        next_outcome(&mut end).await,
        FromSidecar::Gone {
            reason: wrapper::sidecar::REPLACED_AFTER_STOP.to_string()
        }
    );
    assert_eq!(
        sidecar.await.unwrap(),
        wrapper::sidecar::REPLACED_AFTER_STOP
    );

    // One that never answers: stopped after the timeout, and the sidecar gives up the worker.
    let options = SidecarOptions {
        stop_timeout: Duration::from_millis(300),
        ..SidecarOptions::default()
    };
    let (port, mut end, sidecar) = start_sidecar(options).await;
    let mut client = connect(port, "?storage=v1&encoding=json").await;
    assert_eq!(next(&mut end).await, FromSidecar::Ready);
    end.to_sidecar
        .send(ToSidecar::Run {
            tasks: vec![task("t3", vec![])],
        })
        .unwrap();
    receive(&mut client, Encoding::Json).await;
    send(
        &mut client,
        Encoding::Json,
        json!({"command": "initialized"}),
    )
    .await;
    receive(&mut client, Encoding::Json).await;
    end.to_sidecar
        .send(ToSidecar::Stop {
            task_id: "t3".into(),
            force: true,
        })
        .unwrap();
    assert_eq!(
        receive(&mut client, Encoding::Json).await["command"],
        "stop"
    );
    assert_eq!(
        next_outcome(&mut end).await,
        finished("t3", Outcome::Stopped)
    );
    let reason = "the algorithm did not stop within 0.3 s".to_string();
    assert_eq!(
        next_outcome(&mut end).await,
        FromSidecar::Gone {
            reason: reason.clone()
        }
    );
    assert!(wrapper::sidecar::process_is_stuck(&reason));
    assert_eq!(sidecar.await.unwrap(), reason);
}

/// Issue 15.1: a fast-path batch is stopped while the runtime still answers for it. Its late
/// `results` change nothing; `stopped` reports the whole batch stopped; the next task is
/// answered by its own result even when a stale one comes first.
#[tokio::test]
async fn a_stopped_fast_batch_cannot_poison_the_next_task() {
    let (port, mut end, _sidecar) = start_sidecar(SidecarOptions::default()).await;
    let mut client = connect(port, "?storage=v1&encoding=json&fast=1").await;
    assert_eq!(next(&mut end).await, FromSidecar::Ready);
    let tasks = vec![task("a", vec![]), task("b", vec![]), task("c", vec![])];
    end.to_sidecar.send(ToSidecar::Run { tasks }).unwrap();
    assert_eq!(
        receive(&mut client, Encoding::Json).await["command"],
        "runBatch"
    );
    end.to_sidecar
        .send(ToSidecar::Stop {
            task_id: "b".into(),
            force: true,
        })
        .unwrap();
    assert_eq!(
        receive(&mut client, Encoding::Json).await,
        json!({"command": "stop", "data": {"forceStop": true}})
    );
    // Late answers of the stopped batch: no outcome, and the session stays stopping.
    let late = json!({"command": "results", "data": {"results": [{"taskId": "a", "output": 1}]}});
    send(&mut client, Encoding::Json, late).await;
    send(
        &mut client,
        Encoding::Json,
        json!({"command": "errorMessage", "error": {"code": "Failed", "message": "late"}, "data": {"taskId": "b"}}),
    )
    .await;
    send(&mut client, Encoding::Json, json!({"command": "stopped"})).await;
    for id in ["a", "b", "c"] {
        assert_eq!(next_outcome(&mut end).await, finished(id, Outcome::Stopped));
    }
    // The same connection takes the next task; a stale `result` for `c` does not end it.
    end.to_sidecar
        .send(ToSidecar::Run {
            tasks: vec![task("next", vec![])],
        })
        .unwrap();
    assert_eq!(receive(&mut client, Encoding::Json).await["command"], "run");
    let stale = json!({"command": "result", "data": {"taskId": "c", "output": "stale"}});
    send(&mut client, Encoding::Json, stale).await;
    let own = json!({"command": "result", "data": {"taskId": "next", "output": "mine"}});
    send(&mut client, Encoding::Json, own).await;
    assert_eq!(
        next_outcome(&mut end).await,
        finished("next", output(json!("mine")))
    );
}

#[tokio::test]
async fn stored_inputs_are_loaded_for_hkube_wrappers() {
    let root = tempfile::tempdir().unwrap();
    let store: Arc<dyn storage::Storage> = Arc::new(FsStorage::new(root.path()));
    let path = storage::task_key("local", "job1", "big");
    let raw = StoredValue::Raw(b"\x00\x01\x02".to_vec());
    storage::put_value(
        store.as_ref(),
        &path,
        &raw,
        storage::encoding::Encoding::Msgpack,
    )
    .await
    .unwrap();
    let reference = storage::reference::reference(&path, 3);
    let options = SidecarOptions {
        storage: Some(StorageAccess {
            storage: store.clone(),
            cluster: "local".into(),
            encoding: storage::encoding::Encoding::Msgpack,
            spool: None,
        }),
        ..SidecarOptions::default()
    };

    // Storage v1: the wrapper gets the bytes themselves, nested or not.
    let (port, mut end, _sidecar) = start_sidecar(options.clone()).await;
    let mut client = connect(port, "?storage=v1&encoding=json").await;
    assert_eq!(next(&mut end).await, FromSidecar::Ready);
    let input = vec![reference.clone(), json!({"inner": [reference.clone()]})];
    end.to_sidecar
        .send(ToSidecar::Run {
            tasks: vec![task("t1", input)],
        })
        .unwrap();
    let initialize = receive(&mut client, Encoding::Json).await;
    let bytes = protocol::codec::binary(b"\x00\x01\x02");
    assert_eq!(
        initialize["data"]["input"],
        json!([bytes.clone(), {"inner": [bytes]}])
    );

    // Storage v3: a top-level reference is linked to where the object already is.
    let (port, mut end, _sidecar) = start_sidecar(options).await;
    let mut client = connect(port, "?storage=v3&encoding=json").await;
    assert_eq!(next(&mut end).await, FromSidecar::Ready);
    end.to_sidecar
        .send(ToSidecar::Run {
            tasks: vec![task("t2", vec![reference])],
        })
        .unwrap();
    let data = receive(&mut client, Encoding::Json).await["data"].clone();
    let key = data["input"][0]
        .as_str()
        .unwrap()
        .trim_start_matches("$$")
        .to_string();
    assert_eq!(data["storage"][&key]["storageInfo"]["path"], path);
}

#[tokio::test]
async fn task_logs_arrive_before_the_outcome() {
    let (port, mut end, _sidecar) = start_sidecar(SidecarOptions::default()).await;
    let mut client = connect(port, "?storage=v1&encoding=json&fast=1").await;
    assert_eq!(next(&mut end).await, FromSidecar::Ready);
    end.to_sidecar
        .send(ToSidecar::Run {
            tasks: vec![task("t1", vec![]), task("t2", vec![])],
        })
        .unwrap();
    assert_eq!(
        receive(&mut client, Encoding::Json).await["command"],
        "runBatch"
    );
    let results = json!({"command": "results", "data": {"results": [
        {"taskId": "t1", "output": 1, "log": "hello\n"},
        {"taskId": "t2", "error": {"code": "Failed", "message": "no"}, "log": "oops\n"},
    ]}});
    send(&mut client, Encoding::Json, results).await;
    let log = |task: &str, text: &str| FromSidecar::Log {
        task_id: task.into(),
        text: text.into(),
    };
    assert_eq!(next_outcome(&mut end).await, log("t1", "hello\n"));
    assert_eq!(
        next_outcome(&mut end).await,
        finished("t1", output(json!(1)))
    );
    assert_eq!(next_outcome(&mut end).await, log("t2", "oops\n"));
    match next_outcome(&mut end).await {
        FromSidecar::Finished {
            task_id,
            outcome: Outcome::Error { message, .. },
        } => {
            assert_eq!((task_id.as_str(), message.as_str()), ("t2", "no"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_wrapper_that_stops_sending_alive_is_stuck() {
    let options = SidecarOptions {
        alive_timeout: Duration::from_millis(300),
        ..SidecarOptions::default()
    };
    let (port, mut end, sidecar) = start_sidecar(options).await;
    let mut client = connect(port, "?storage=v1&encoding=json").await;
    assert_eq!(next(&mut end).await, FromSidecar::Ready);
    end.to_sidecar
        .send(ToSidecar::Run {
            tasks: vec![task("t1", vec![])],
        })
        .unwrap();
    receive(&mut client, Encoding::Json).await;
    send(
        &mut client,
        Encoding::Json,
        json!({"command": "initialized"}),
    )
    .await;
    receive(&mut client, Encoding::Json).await;
    send(&mut client, Encoding::Json, json!({"command": "started"})).await;
    send(&mut client, Encoding::Json, json!({"command": "alive"})).await;
    let reason =
        "no response from the algorithm's wrapper for 0.3 s (it stopped sending alive)".to_string();
    assert_eq!(
        next_outcome(&mut end).await,
        finished(
            "t1",
            Outcome::Crashed {
                reason: reason.clone()
            }
        )
    );
    assert_eq!(
        next_outcome(&mut end).await,
        FromSidecar::Gone {
            reason: reason.clone()
        }
    );
    assert_eq!(sidecar.await.unwrap(), reason);
}

#[tokio::test]
async fn code_api_stops_are_relayed() {
    let (port, mut end, _sidecar) = start_sidecar(SidecarOptions::default()).await;
    let mut client = connect(port, "?storage=v1&encoding=json").await;
    assert_eq!(next(&mut end).await, FromSidecar::Ready);
    end.to_sidecar
        .send(ToSidecar::Run {
            tasks: vec![task("t1", vec![])],
        })
        .unwrap();
    receive(&mut client, Encoding::Json).await;
    send(
        &mut client,
        Encoding::Json,
        json!({"command": "initialized"}),
    )
    .await;
    receive(&mut client, Encoding::Json).await;
    let start = json!({"command": "startStoredSubPipeline", "data": {"subPipelineId": "1", "includeResult": true,
                        "subPipeline": {"name": "slow", "flowInput": {}}}});
    send(&mut client, Encoding::Json, start).await;
    let request_id = match next_outcome(&mut end).await {
        FromSidecar::CodeApi {
            request_id,
            request: CodeApiRequest::StartStoredSubPipeline { name, .. },
            ..
        } => {
            assert_eq!(name, "slow");
            request_id
        }
        other => panic!("{other:?}"),
    };
    send(
        &mut client,
        Encoding::Json,
        json!({"command": "stopSubPipeline", "data": {"subPipelineId": "1", "reason": "enough"}}),
    )
    .await;
    match next_outcome(&mut end).await {
        FromSidecar::CodeApi {
            task_id,
            request: CodeApiRequest::Stop { reason },
            ..
        } => {
            assert_eq!((task_id.as_str(), reason.as_str()), ("t1", "enough"));
        }
        other => panic!("{other:?}"),
    }
    // The stopped request is answered as stopped, as HKube's worker does.
    let reply = CodeApiReply::Stopped {
        reason: "enough".into(),
    };
    end.to_sidecar
        .send(ToSidecar::CodeApiReply { request_id, reply })
        .unwrap();
    assert_eq!(
        receive(&mut client, Encoding::Json).await,
        json!({"command": "subPipelineStopped", "data": {"subPipelineId": "1", "reason": "enough"}})
    );
}
