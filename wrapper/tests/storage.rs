//! The fs storage adapter against real directories: round trips, HKube's layout, atomic writes,
//! path checks and streaming of a large payload.
#![allow(clippy::unwrap_used)]

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use wrapper::storage::encoding::{apply_path, encode_value};
use wrapper::storage::header::{DataType, Header};
use wrapper::storage::{
    self, build, get_value, put_value, task_key, Encoding, Error, FsStorage, Storage,
    StorageConfig, StoredObject, StoredValue,
};

fn fresh() -> (tempfile::TempDir, FsStorage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::new(dir.path().join("root"));
    (dir, storage)
}

/// Every file under `dir`, relative, sorted (temporary files included: tests look for them).
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn object(header: Option<Header>, payload: &[u8]) -> StoredObject {
    StoredObject {
        header,
        payload: payload.to_vec(),
    }
}

#[tokio::test]
async fn put_get_size_delete() {
    let (_dir, storage) = fresh();
    let msgpack = Some(Header::encoded(Encoding::Msgpack));
    let cases = [
        ("local-hkube/j1/t1", object(msgpack, &[0x93, 1, 2, 3])),
        ("local-hkube/j1/t2", object(None, b"no header at all")),
        ("local-hkube/j1/empty", object(msgpack, b"")),
        ("local-hkube/j1/tiny", object(None, b"HK")),
        ("local-hkube-results/j1/result.json", object(None, b"[]")),
    ];
    for (path, object) in &cases {
        let size = storage.put(path, object.clone()).await.unwrap();
        assert_eq!(size, object.payload.len() as u64, "{path}");
    }
    for (path, object) in &cases {
        assert_eq!(&storage.get(path).await.unwrap(), object, "{path}");
        assert_eq!(
            storage.size(path).await.unwrap(),
            object.payload.len() as u64
        );
        let mut reader = storage.open(path).await.unwrap();
        assert_eq!(reader.header, object.header, "{path}");
        assert_eq!(reader.size, object.payload.len() as u64, "{path}");
        let mut streamed = Vec::new();
        reader.payload.read_to_end(&mut streamed).await.unwrap();
        assert_eq!(streamed, object.payload, "{path}");
    }
    // Overwrite replaces the whole object.
    storage
        .put("local-hkube/j1/t1", object(None, b"new"))
        .await
        .unwrap();
    assert_eq!(
        storage.get("local-hkube/j1/t1").await.unwrap(),
        object(None, b"new")
    );

    storage.delete("local-hkube/j1/t1").await.unwrap();
    let error = storage.get("local-hkube/j1/t1").await.unwrap_err();
    assert_eq!(error.to_string(), "no object at local-hkube/j1/t1");
    assert_eq!(
        storage.list("local-hkube/").await.unwrap(),
        [
            "local-hkube/j1/empty",
            "local-hkube/j1/t2",
            "local-hkube/j1/tiny"
        ]
    );
}

#[tokio::test]
async fn file_layout_is_hkubes() {
    // Case 5: the object at <cluster>-hkube/<jobId>/<taskId> is header + payload.
    let (dir, storage) = fresh();
    let path = task_key("local", "j1", "t1");
    let value = StoredValue::Value(json!({"x": [1, 2]}));
    let size = put_value(&storage, &path, &value, Encoding::Msgpack)
        .await
        .unwrap();
    let bytes = std::fs::read(dir.path().join("root/local-hkube/j1/t1")).unwrap();
    let payload = encode_value(&json!({"x": [1, 2]}), Encoding::Msgpack).unwrap();
    assert_eq!(bytes[..8], [1, 8, 2, 3, 0, 0, b'H', b'K']);
    assert_eq!(bytes[8..], payload[..]);
    assert_eq!(
        size,
        payload.len() as u64,
        "storageInfo.size excludes the header"
    );
    assert_eq!(
        get_value(&storage, &path, Encoding::Json).await.unwrap(),
        value
    );
}

#[tokio::test]
async fn values_round_trip_in_every_encoding() {
    let (_dir, storage) = fresh();
    let values = [
        StoredValue::Value(json!({"a": {"b": [7]}})),
        StoredValue::Value(json!([1, "two", null, 3.5])),
        StoredValue::Value(json!("text")),
        StoredValue::Raw(vec![0, 1, 2, 0xff, b'H', b'K']),
        StoredValue::Raw(Vec::new()),
    ];
    for encoding in Encoding::ALL {
        for (i, value) in values.iter().enumerate() {
            let path = format!("local-hkube/{encoding}/{i}");
            put_value(&storage, &path, value, encoding).await.unwrap();
            // The configured encoding of the reader does not matter: the header decides.
            for configured in Encoding::ALL {
                let read = get_value(&storage, &path, configured).await.unwrap();
                assert_eq!(&read, value, "{path} read as {configured}");
            }
            let header = storage.get(&path).await.unwrap().header.unwrap();
            let expected = match value {
                StoredValue::Raw(_) => DataType::Raw,
                StoredValue::Value(_) => DataType::Encoded,
            };
            assert_eq!(header.data_type, expected, "{path}");
        }
    }
}

#[tokio::test]
async fn input_link_with_a_path() {
    // Case 8: stored {a:{b:[7]}}, link path "a.b" ⇒ [7].
    let (_dir, storage) = fresh();
    let path = "local-hkube/j0/t0";
    let stored = StoredValue::Value(json!({"a": {"b": [7]}}));
    put_value(&storage, path, &stored, Encoding::Bson)
        .await
        .unwrap();
    let StoredValue::Value(value) = get_value(&storage, path, Encoding::Msgpack).await.unwrap()
    else {
        panic!("expected a value");
    };
    assert_eq!(apply_path(&value, "a.b"), json!([7]));
}

#[tokio::test]
async fn legacy_objects_without_header() {
    // Case 37: no header ⇒ the whole file is decoded with the configured encoding.
    let (dir, storage) = fresh();
    let file = dir.path().join("root/local-hkube/j0/legacy");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        &file,
        encode_value(&json!({"old": true}), Encoding::Msgpack).unwrap(),
    )
    .unwrap();
    assert_eq!(
        get_value(&storage, "local-hkube/j0/legacy", Encoding::Msgpack)
            .await
            .unwrap(),
        StoredValue::Value(json!({"old": true}))
    );
    // A RAW header returns the bytes untouched, even if they look like msgpack.
    let raw = Header::raw(Encoding::Msgpack);
    storage
        .put("local-hkube/j0/raw", object(Some(raw), &[0x91, 0x01]))
        .await
        .unwrap();
    assert_eq!(
        get_value(&storage, "local-hkube/j0/raw", Encoding::Msgpack)
            .await
            .unwrap(),
        StoredValue::Raw(vec![0x91, 0x01])
    );
}

#[tokio::test]
async fn list_by_prefix() {
    let (dir, storage) = fresh();
    for path in [
        "local-hkube/j1/t1",
        "local-hkube/j1/t2",
        "local-hkube/j2/t1",
        "local-hkube-results/j1/result.json",
        "other/x",
    ] {
        storage.put(path, object(None, b"x")).await.unwrap();
    }
    // A temporary file of an unfinished write is never listed.
    std::fs::write(
        dir.path().join("root/local-hkube/j1/.hkube-tmp.1.1"),
        b"half",
    )
    .unwrap();
    let cases: [(&str, &[&str]); 7] = [
        (
            "",
            &[
                "local-hkube-results/j1/result.json",
                "local-hkube/j1/t1",
                "local-hkube/j1/t2",
                "local-hkube/j2/t1",
                "other/x",
            ],
        ),
        (
            "local-hkube/",
            &[
                "local-hkube/j1/t1",
                "local-hkube/j1/t2",
                "local-hkube/j2/t1",
            ],
        ),
        (
            "local-hkube",
            &[
                "local-hkube-results/j1/result.json",
                "local-hkube/j1/t1",
                "local-hkube/j1/t2",
                "local-hkube/j2/t1",
            ],
        ),
        (
            "local-hkube/j1/",
            &["local-hkube/j1/t1", "local-hkube/j1/t2"],
        ),
        ("local-hkube/j1/t2", &["local-hkube/j1/t2"]),
        ("local-hkube/j9/", &[]),
        ("nothing", &[]),
    ];
    for (prefix, expected) in cases {
        assert_eq!(
            storage.list(prefix).await.unwrap(),
            expected,
            "prefix {prefix:?}"
        );
    }
    // An empty or missing root lists nothing.
    let empty = FsStorage::new(dir.path().join("does-not-exist"));
    assert!(empty.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn missing_objects_name_their_path() {
    let (_dir, storage) = fresh();
    storage
        .put("local-hkube/j1/t1", object(None, b"x"))
        .await
        .unwrap();
    // A missing file, a missing directory, and a directory (a prefix, not an object).
    for path in ["local-hkube/j1/nope", "local-hkube/j9/t1", "local-hkube/j1"] {
        let expected = format!("no object at {path}");
        let get = storage.get(path).await.unwrap_err();
        assert!(
            matches!(&get, Error::NotFound { path: p } if p == path),
            "{get:?}"
        );
        assert_eq!(get.to_string(), expected);
        assert_eq!(storage.open(path).await.unwrap_err().to_string(), expected);
        assert_eq!(storage.size(path).await.unwrap_err().to_string(), expected);
        assert_eq!(
            storage.delete(path).await.unwrap_err().to_string(),
            expected
        );
        let value = get_value(&storage, path, Encoding::Msgpack)
            .await
            .unwrap_err();
        assert_eq!(value.to_string(), expected);
    }
}

#[tokio::test]
async fn undecodable_objects_name_their_path() {
    let (_dir, storage) = fresh();
    let header = Header::encoded(Encoding::Json);
    storage
        .put("local-hkube/j1/bad", object(Some(header), b"{nope"))
        .await
        .unwrap();
    let error = get_value(&storage, "local-hkube/j1/bad", Encoding::Json)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("object local-hkube/j1/bad: the payload is not valid json"),
        "{error}"
    );
    storage
        .put(
            "local-hkube/j1/odd",
            object(None, &[1, 8, 2, 9, 0, 0, b'H', b'K']),
        )
        .await
        .unwrap();
    let error = get_value(&storage, "local-hkube/j1/odd", Encoding::Json)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::BadHeader { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("object local-hkube/j1/odd has an unusable header"),
        "{error}"
    );
}

#[tokio::test]
async fn paths_cannot_escape_the_root() {
    let (dir, storage) = fresh();
    let bad = ["../x", "/abs", "a//b", "a/../../x", "", "a/", "a\0b"];
    for path in bad {
        let put = storage.put(path, object(None, b"x")).await.unwrap_err();
        assert!(
            matches!(put, Error::InvalidPath { .. }),
            "{path:?}: {put:?}"
        );
        assert!(
            put.to_string()
                .starts_with(&format!("invalid storage path {path:?}")),
            "{put}"
        );
        let mut reader: &[u8] = b"x";
        let results = [
            storage.put_stream(path, None, &mut reader).await.map(drop),
            storage.get(path).await.map(drop),
            storage.open(path).await.map(drop),
            storage.size(path).await.map(drop),
            storage.delete(path).await.map(drop),
        ];
        for result in results {
            assert!(
                matches!(result, Err(Error::InvalidPath { .. })),
                "{path:?}: {result:?}"
            );
        }
    }
    for prefix in ["../", "/", "a/../"] {
        let list = storage.list(prefix).await.unwrap_err();
        assert!(
            matches!(list, Error::InvalidPath { .. }),
            "{prefix:?}: {list:?}"
        );
    }
    assert!(
        files_under(dir.path()).is_empty(),
        "{:?}",
        files_under(dir.path())
    );
}

/// Yields `good` bytes of `b'n'`, then fails or never finishes.
struct Broken {
    good: usize,
    then_hang: bool,
}

impl AsyncRead for Broken {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.good > 0 {
            let n = self.good.min(buf.remaining());
            buf.put_slice(&vec![b'n'; n]);
            self.good -= n;
            return Poll::Ready(Ok(()));
        }
        if self.then_hang {
            // Never ready and never woken: only cancellation ends the write.
            return Poll::Pending;
        }
        Poll::Ready(Err(io::Error::other("the source broke")))
    }
}

#[tokio::test]
async fn failed_and_cancelled_writes_leave_the_old_object() {
    let (dir, storage) = fresh();
    let path = "local-hkube/j1/t1";
    let old = object(Some(Header::raw(Encoding::Msgpack)), b"old");
    storage.put(path, old.clone()).await.unwrap();
    let only_the_object = vec!["root/local-hkube/j1/t1".to_owned()];
    assert_eq!(
        files_under(dir.path()),
        only_the_object,
        "no temporary file after a write"
    );

    let mut failing = Broken {
        good: 3 << 20,
        then_hang: false,
    };
    let error = storage
        .put_stream(path, None, &mut failing)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "storage I/O on local-hkube/j1/t1 failed: the source broke"
    );
    assert_eq!(storage.get(path).await.unwrap(), old);
    assert_eq!(files_under(dir.path()), only_the_object);

    let mut hanging = Broken {
        good: 3 << 20,
        then_hang: true,
    };
    let cancelled = tokio::time::timeout(
        Duration::from_millis(200),
        storage.put_stream(path, None, &mut hanging),
    )
    .await;
    assert!(cancelled.is_err(), "the write cannot have finished");
    assert_eq!(storage.get(path).await.unwrap(), old);
    assert_eq!(files_under(dir.path()), only_the_object);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readers_see_old_or_new() {
    let (_dir, storage) = fresh();
    let storage = Arc::new(storage);
    let path = "local-hkube/j1/shared";
    let versions = [vec![b'a'; 256 << 10], vec![b'b'; 64 << 10]];
    storage.put(path, object(None, &versions[0])).await.unwrap();

    let writer = {
        let storage = storage.clone();
        let versions = versions.clone();
        tokio::spawn(async move {
            for round in 0..100 {
                let payload = &versions[round % 2];
                let header = Some(Header::raw(Encoding::Msgpack));
                storage.put(path, object(header, payload)).await.unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let storage = storage.clone();
            tokio::spawn(async move {
                let mut reads = 0;
                loop {
                    let read = storage.get(path).await.unwrap();
                    let expected_len = match read.payload.first() {
                        Some(b'a') => 256 << 10,
                        Some(b'b') => 64 << 10,
                        other => panic!("unexpected first byte {other:?}"),
                    };
                    assert_eq!(
                        read.payload.len(),
                        expected_len,
                        "a partial object was seen"
                    );
                    assert!(read.payload.iter().all(|&b| b == read.payload[0]));
                    reads += 1;
                    if reads >= 200 {
                        return reads;
                    }
                }
            })
        })
        .collect();
    writer.await.unwrap();
    for reader in readers {
        assert_eq!(reader.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn build_from_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        base_fs_adapter_directory: dir.path().to_path_buf(),
        ..StorageConfig::default()
    };
    let storage = build(&config).unwrap();
    let path = storage::task_key(&config.cluster_name, "j1", "t1");
    let value = StoredValue::Value(json!([1, 2, 3]));
    put_value(storage.as_ref(), &path, &value, config.storage_encoding)
        .await
        .unwrap();
    assert!(dir.path().join("local-hkube/j1/t1").is_file());
    assert_eq!(
        get_value(storage.as_ref(), &path, config.storage_encoding)
            .await
            .unwrap(),
        value
    );
}

/// Length of the repeating block of the generated payload: odd, so block edges never line up
/// with the adapter's chunks.
const BLOCK: usize = (1 << 20) + 7;

/// A deterministic byte stream: a random block repeated, each repetition stamped with its index,
/// so lost, repeated or reordered chunks change the bytes.
struct Pattern {
    block: Arc<Vec<u8>>,
}

impl Pattern {
    fn new() -> Self {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let block = (0..BLOCK)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        Pattern {
            block: Arc::new(block),
        }
    }

    /// Fills `out` with the stream's bytes from `offset`.
    fn fill(&self, offset: u64, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let at = offset + done as u64;
            let in_block = (at % BLOCK as u64) as usize;
            let n = (BLOCK - in_block).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.block[in_block..in_block + n]);
            let stamp = (at / BLOCK as u64).to_le_bytes();
            for (i, byte) in out[done..done + n].iter_mut().enumerate().take(8) {
                if in_block + i < 8 {
                    *byte ^= stamp[in_block + i];
                }
            }
            done += n;
        }
    }
}

/// An `AsyncRead` of `len` bytes of a [`Pattern`], recording the largest read asked of it.
struct Generated {
    pattern: Pattern,
    offset: u64,
    len: u64,
    largest_request: usize,
}

impl AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.largest_request = this.largest_request.max(buf.remaining());
        let n = (this.len - this.offset).min(buf.remaining() as u64) as usize;
        let out = buf.initialize_unfilled_to(n);
        this.pattern.fill(this.offset, out);
        buf.advance(n);
        this.offset += n as u64;
        Poll::Ready(Ok(()))
    }
}

/// Peak resident memory of this process in bytes (Linux), if known.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[tokio::test]
async fn a_large_payload_streams_in_chunks() {
    const LEN: u64 = 256 << 20;
    const SLACK: u64 = 64 << 20;
    let (_dir, storage) = fresh();
    let path = "local-hkube/big/t1";
    let peak_before = peak_rss();

    let mut source = Generated {
        pattern: Pattern::new(),
        offset: 0,
        len: LEN,
        largest_request: 0,
    };
    let started = Instant::now();
    let header = Some(Header::raw(Encoding::Msgpack));
    let size = storage.put_stream(path, header, &mut source).await.unwrap();
    let write_time = started.elapsed();
    assert_eq!(size, LEN);
    assert!(
        source.largest_request <= storage::fs::CHUNK,
        "the writer asked for {} bytes at once",
        source.largest_request
    );
    assert_eq!(storage.size(path).await.unwrap(), LEN);

    let started = Instant::now();
    let mut reader = storage.open(path).await.unwrap();
    assert_eq!(reader.header, header);
    assert_eq!(reader.size, LEN);
    let pattern = Pattern::new();
    let mut got = vec![0u8; 256 << 10];
    let mut expected = vec![0u8; 256 << 10];
    let mut offset = 0u64;
    loop {
        let n = reader.payload.read(&mut got).await.unwrap();
        if n == 0 {
            break;
        }
        pattern.fill(offset, &mut expected[..n]);
        assert!(
            got[..n] == expected[..n],
            "bytes differ near offset {offset}"
        );
        offset += n as u64;
    }
    let read_time = started.elapsed();
    assert_eq!(offset, LEN);

    let mib = (LEN >> 20) as f64;
    println!(
        "fs storage, {mib} MiB: write {:.0} MiB/s ({write_time:.2?}), read+verify {:.0} MiB/s ({read_time:.2?})",
        mib / write_time.as_secs_f64(),
        mib / read_time.as_secs_f64(),
    );
    match (peak_before, peak_rss()) {
        (Some(before), Some(after)) => {
            println!(
                "peak RSS grew by {} MiB",
                after.saturating_sub(before) >> 20
            );
            assert!(
                after.saturating_sub(before) < SLACK,
                "peak memory grew by {} MiB for a {mib} MiB payload",
                (after - before) >> 20
            );
        }
        _ => println!("peak memory not checked: /proc/self/status is not available"),
    }
}
