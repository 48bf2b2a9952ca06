//! The S3 adapter against a real S3-compatible server: `s3s-fs` (crates.io's S3 service over a
//! folder, with signature checks), started per test on a free port. `.ci/run` installs it.
//! Without it the tests say so and return, unless HKUBE_REQUIRE_S3=1 (CI), where its absence
//! fails them.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncReadExt;
use wrapper::storage::header::Header;
use wrapper::storage::{
    build, get_value, put_value, Adapter, Encoding, Error, S3Settings, S3Storage, Storage,
    StorageConfig, StoredObject, StoredValue,
};

const ACCESS: &str = "hkube-test";
const SECRET: &str = "hkube-test-secret";

/// A running s3s-fs over a temporary folder; stopped when dropped.
struct Server {
    child: Child,
    endpoint: String,
    _root: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3s_fs() -> Option<String> {
    let program = std::env::var("HKUBE_S3S_FS").unwrap_or_else(|_| "s3s-fs".into());
    let found = Command::new(&program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    match found {
        true => Some(program),
        false => {
            testkit::skip(
                Some("HKUBE_REQUIRE_S3"),
                &format!(
                    "{program} is not installed (cargo install s3s-fs@0.14.1 --features binary)"
                ),
            );
            None
        }
    }
}

fn start() -> Option<Server> {
    let program = s3s_fs()?;
    let root = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(program)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS, "--secret-key", SECRET])
        .arg(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s3s-fs did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Server {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        _root: root,
    })
}

fn storage(server: &Server, secret: &str) -> S3Storage {
    S3Storage::new(&S3Settings {
        endpoint: server.endpoint.clone(),
        region: "us-east-1".into(),
        access_key: ACCESS.into(),
        secret_key: secret.into(),
    })
}

#[tokio::test]
async fn objects_round_trip_with_hkubes_layout() {
    let Some(server) = start() else { return };
    let s3 = storage(&server, SECRET);
    let header = Some(Header::encoded(Encoding::Msgpack));
    let object = StoredObject {
        header,
        payload: vec![0x93, 1, 2, 3],
    };
    assert_eq!(
        s3.put("local-hkube/j1/t1", object.clone()).await.unwrap(),
        4
    );
    assert_eq!(s3.get("local-hkube/j1/t1").await.unwrap(), object);
    assert_eq!(s3.size("local-hkube/j1/t1").await.unwrap(), 4);
    let legacy = StoredObject {
        header: None,
        payload: b"{\"a\":1}".to_vec(),
    };
    s3.put("local-hkube/j1/t2", legacy.clone()).await.unwrap();
    assert_eq!(s3.get("local-hkube/j1/t2").await.unwrap(), legacy);
    s3.put("local-hkube-results/j1/result.json", legacy.clone())
        .await
        .unwrap();
    assert_eq!(
        s3.list("local-hkube/j1/").await.unwrap(),
        vec!["local-hkube/j1/t1", "local-hkube/j1/t2"]
    );
    // A prefix without a slash spans every bucket that starts with it.
    assert_eq!(s3.list("local-hkube").await.unwrap().len(), 3);
    s3.delete("local-hkube/j1/t1").await.unwrap();
    assert!(matches!(
        s3.get("local-hkube/j1/t1").await,
        Err(Error::NotFound { path }) if path == "local-hkube/j1/t1"
    ));
    assert!(matches!(
        s3.delete("local-hkube/j1/t1").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s3.size("nobucket/x").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s3.put("local-hkube/../x", legacy).await,
        Err(Error::InvalidPath { .. })
    ));
}

#[tokio::test]
async fn a_large_stream_goes_up_in_parts_and_comes_back_whole() {
    let Some(server) = start() else { return };
    let s3 = storage(&server, SECRET);
    // 20 MiB and a bit: three parts of the multipart upload.
    let payload: Vec<u8> = (0..(20 << 20) + 12_345u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let header = Header::raw(Encoding::Msgpack);
    let mut reader = payload.as_slice();
    let size = s3
        .put_stream("local-hkube/j2/big", Some(header), &mut reader)
        .await
        .unwrap();
    assert_eq!(size, payload.len() as u64);
    assert_eq!(s3.size("local-hkube/j2/big").await.unwrap(), size);
    let mut opened = s3.open("local-hkube/j2/big").await.unwrap();
    assert_eq!(opened.header, Some(header));
    assert_eq!(opened.size, size);
    let mut back = Vec::new();
    opened.payload.read_to_end(&mut back).await.unwrap();
    assert!(back == payload, "the payload changed on the way");
}

/// A reader that fails after some bytes, as a broken upload from a client would.
struct Failing(usize);

impl tokio::io::AsyncRead for Failing {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.0 == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::other("the client went away")));
        }
        let n = self.0.min(buf.remaining()).min(1 << 20);
        buf.put_slice(&vec![1u8; n]);
        self.0 -= n;
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_failed_stream_leaves_the_old_object() {
    let Some(server) = start() else { return };
    let s3 = storage(&server, SECRET);
    let old = StoredObject {
        header: None,
        payload: b"old".to_vec(),
    };
    s3.put("local-hkube/j3/t", old.clone()).await.unwrap();
    // Fails in the second part: the multipart upload is aborted.
    let mut failing = Failing(10 << 20);
    assert!(s3
        .put_stream("local-hkube/j3/t", None, &mut failing)
        .await
        .is_err());
    assert_eq!(s3.get("local-hkube/j3/t").await.unwrap(), old);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_said() {
    let Some(server) = start() else { return };
    let s3 = storage(&server, "not-the-secret");
    let error = s3
        .put(
            "local-hkube/j4/t",
            StoredObject {
                header: None,
                payload: vec![1],
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("local-hkube/j4/t"), "{error}");
}

#[tokio::test]
async fn values_through_the_configured_adapter() {
    let Some(server) = start() else { return };
    let config = StorageConfig {
        default_storage: Adapter::S3,
        s3_endpoint_url: server.endpoint.clone(),
        aws_access_key_id: ACCESS.into(),
        aws_secret_access_key: SECRET.into(),
        ..StorageConfig::default()
    };
    let storage = build(&config).unwrap();
    assert_eq!(storage.module_name(), "@hkube/s3-adapter");
    let value = StoredValue::Value(json!({"numbers": [1, 2, 3]}));
    for encoding in [Encoding::Msgpack, Encoding::Json, Encoding::Bson] {
        put_value(storage.as_ref(), "local-hkube/j5/v", &value, encoding)
            .await
            .unwrap();
        assert_eq!(
            get_value(storage.as_ref(), "local-hkube/j5/v", encoding)
                .await
                .unwrap(),
            value
        );
    }
}
