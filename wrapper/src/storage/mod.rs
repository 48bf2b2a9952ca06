//! Where task inputs and outputs live between tasks: HKube's object storage, shared by the
//! orchestrator and the sidecar.
//!
//! An object is an optional 8-byte [`header`] plus a payload, stored under a `/`-separated path
//! such as `local-hkube/<jobId>/<taskId>`. [`Storage`] is the one seam to a backend (`fs`,
//! `s3`); [`encoding`] turns values into payloads and back; [`key`](task_key) helpers
//! build HKube's paths.
//!
//! Architecture Invariant: a large object is never held twice in memory. Writers stream from an
//! `AsyncRead` in bounded chunks ([`Storage::put_stream`]) and readers can stream out
//! ([`Storage::open`]); only [`Storage::get`] loads a whole payload, once.
//!
//! Architecture Invariant: every path is checked by [`validate_path`] before a backend sees it,
//! so no path can reach outside the storage root (`..`, absolute paths, empty segments, NUL).
//! A reader never sees a half-written object.

pub mod config;
pub mod encoding;
pub mod fs;
pub mod header;
pub mod reference;
pub mod s3;

use std::future::Future;
use std::io;
use std::pin::Pin;

use tokio::io::AsyncRead;

pub use config::{build, Adapter, StorageConfig};
pub use encoding::{Encoding, StoredValue};
pub use fs::FsStorage;
pub use header::Header;
pub use s3::{S3Settings, S3Storage};

/// A boxed future, so that [`Storage`] is object-safe (`Arc<dyn Storage>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A boxed byte stream, e.g. a file positioned after the header.
pub type BoxReader = Pin<Box<dyn AsyncRead + Send>>;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A storage backend (`fs`, later `s3`).
///
/// Every method validates its path with [`validate_path`] and names the path in its errors.
/// Sizes are payload sizes without the header, as `storing.storageInfo.size` reports them.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// The backend's name as HKube reports it in results (`storageModule`), e.g.
    /// `@hkube/fs-adapter`.
    fn module_name(&self) -> &'static str;

    /// Stores `object` at `path` atomically, replacing any object there. Returns the payload
    /// size.
    fn put<'a>(&'a self, path: &'a str, object: StoredObject) -> BoxFuture<'a, Result<u64>>;

    /// Stores `header` (if any) followed by everything `payload` yields, reading it in bounded
    /// chunks, atomically: until the reader ends without error, the previous object (or none)
    /// stays visible; on error or cancellation nothing is left behind. Returns the payload size.
    fn put_stream<'a>(
        &'a self,
        path: &'a str,
        header: Option<Header>,
        payload: &'a mut (dyn AsyncRead + Send + Unpin),
    ) -> BoxFuture<'a, Result<u64>>;

    /// Loads the object at `path`: its header, if it has one, and its payload.
    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<StoredObject>>;

    /// Opens the object at `path` for streaming: the header is read, the payload is not.
    fn open<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<ObjectReader>>;

    /// The payload size of the object at `path` (header excluded).
    fn size<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<u64>>;

    /// Removes the object at `path`; [`Error::NotFound`] if there is none.
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>>;

    /// The paths of all objects whose path starts with `prefix` (plain string prefix, as in S3;
    /// `""` lists everything), sorted.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>>;
}

/// A whole stored object in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub header: Option<Header>,
    pub payload: Vec<u8>,
}

/// An object opened for reading: its header and a reader over the payload alone.
pub struct ObjectReader {
    pub header: Option<Header>,
    /// Payload size in bytes (header excluded).
    pub size: u64,
    pub payload: BoxReader,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("header", &self.header)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Why a storage operation failed. Every variant that concerns an object names its path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no object at {path}")]
    NotFound { path: String },
    #[error("invalid storage path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("storage I/O on {path} failed: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("object {path} has an unusable header: {source}")]
    BadHeader {
        path: String,
        #[source]
        source: encoding::Error,
    },
    #[error("object {path}: {source}")]
    Encoding {
        path: String,
        #[source]
        source: encoding::Error,
    },
    /// A setting (environment variable) has a value this build cannot use.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// Attaches `path` to a codec error.
    pub fn codec(path: &str, source: encoding::Error) -> Self {
        let path = path.to_owned();
        match source {
            encoding::Error::UnknownHeaderByte { .. } => Error::BadHeader { path, source },
            _ => Error::Encoding { path, source },
        }
    }

    /// An I/O error on `path`, with "not found" made [`Error::NotFound`].
    pub fn io(path: &str, source: io::Error) -> Self {
        let path = path.to_owned();
        if source.kind() == io::ErrorKind::NotFound {
            Error::NotFound { path }
        } else {
            Error::Io { path, source }
        }
    }
}

/// The path of a task's output: `<cluster>-hkube/<jobId>/<taskId>`.
pub fn task_key(cluster: &str, job_id: &str, task_id: &str) -> String {
    format!("{cluster}-hkube/{job_id}/{task_id}")
}

/// The path of a job's results document: `<cluster>-hkube-results/<jobId>/result.json`.
pub fn result_key(cluster: &str, job_id: &str) -> String {
    format!("{cluster}-hkube-results/{job_id}/result.json")
}

/// Prefix of the temporary files a writer creates beside the object; such names are never valid
/// segments, so they cannot collide with an object and `list` can skip them.
pub(crate) const TEMP_PREFIX: &str = ".hkube-tmp.";

/// Checks that `path` is a relative `/`-separated object path that stays inside the storage
/// root: not empty, not absolute, no empty, `.` or `..` segment, no NUL, no backslash.
pub fn validate_path(path: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidPath {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return invalid("the path is empty");
    }
    if path.starts_with('/') {
        return invalid("absolute paths are not allowed; use a path relative to the storage root");
    }
    check_segments(path, false)
}

/// Checks a [`Storage::list`] prefix: like [`validate_path`], but empty is allowed (everything)
/// and so are a trailing `/` and a partial last segment.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.starts_with('/') {
        return Err(Error::InvalidPath {
            path: prefix.to_owned(),
            reason: "absolute paths are not allowed; use a path relative to the storage root",
        });
    }
    check_segments(prefix, true)
}

fn check_segments(path: &str, is_prefix: bool) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidPath {
            path: path.to_owned(),
            reason,
        })
    };
    if path.contains('\0') {
        return invalid("NUL bytes are not allowed");
    }
    if path.contains('\\') {
        return invalid("backslashes are not allowed; separate segments with `/`");
    }
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        if is_prefix && i == last {
            // A prefix may end in `/` or in part of a name; `..` still may not escape.
            if *segment == ".." {
                return invalid("`..` segments are not allowed");
            }
            continue;
        }
        match *segment {
            "" => {
                return invalid("empty segments (`//`, a leading or trailing `/`) are not allowed")
            }
            "." => return invalid("`.` segments are not allowed"),
            ".." => return invalid("`..` segments are not allowed"),
            s if s.starts_with(TEMP_PREFIX) => {
                return invalid("segments starting with `.hkube-tmp.` are reserved")
            }
            _ => {}
        }
    }
    Ok(())
}

/// Encodes `value` with `encoding` and stores it at `path`; returns the payload size (the
/// `storageInfo.size` of `storing`). Raw bytes are streamed from the caller's buffer, not copied.
pub async fn put_value(
    storage: &dyn Storage,
    path: &str,
    value: &StoredValue,
    encoding: Encoding,
) -> Result<u64> {
    let (header, payload) = encoding::encode(value, encoding).map_err(|e| Error::codec(path, e))?;
    let mut reader: &[u8] = &payload;
    storage.put_stream(path, Some(header), &mut reader).await
}

/// Loads and decodes the object at `path`; `configured` is used only when the object has no
/// header (see [`encoding::decode`]).
pub async fn get_value(
    storage: &dyn Storage,
    path: &str,
    configured: Encoding,
) -> Result<StoredValue> {
    let object = storage.get(path).await?;
    encoding::decode(object.header, object.payload, configured).map_err(|e| Error::codec(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(task_key("local", "j1", "t1"), "local-hkube/j1/t1");
        assert_eq!(
            result_key("prod", "qohsjh0in1a4"),
            "prod-hkube-results/qohsjh0in1a4/result.json"
        );
        validate_path(&task_key("local", "main:simple:ab12", "green:t1")).unwrap();
    }

    #[test]
    fn paths_that_could_escape_the_root_are_rejected() {
        fn check(path: &str, expected: Option<&str>) {
            match (validate_path(path), expected) {
                (Ok(()), None) => {}
                (Err(error), Some(reason)) => {
                    let text = error.to_string();
                    assert!(text.contains(reason), "{path:?}: {text}");
                    assert!(text.contains(&format!("{path:?}")), "{text} names no path");
                }
                (result, _) => panic!("{path:?}: unexpected {result:?}"),
            }
        }
        check("local-hkube/j1/t1", None);
        check("a", None);
        check("a/.hidden/b..c", None);
        check("../x", Some("`..` segments"));
        check("a/../../x", Some("`..` segments"));
        check("a/..", Some("`..` segments"));
        check("/abs", Some("absolute paths"));
        check("a//b", Some("empty segments"));
        check("a/", Some("empty segments"));
        check("", Some("the path is empty"));
        check("./a", Some("`.` segments"));
        check("a\0b", Some("NUL"));
        check("a\\..\\b", Some("backslashes"));
        check("a/.hkube-tmp.b.1", Some("reserved"));
    }

    #[test]
    fn prefixes() {
        for ok in ["", "local-hkube/", "local-hkube/j", "a/b/c"] {
            validate_prefix(ok).unwrap();
        }
        for bad in ["/", "/a", "..", "a/..", "../a", "a//b", "a\0"] {
            assert!(validate_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn io_not_found_becomes_not_found() {
        let error = Error::io("a/b", io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(error.to_string(), "no object at a/b");
        let error = Error::io("a/b", io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(
            error.to_string().starts_with("storage I/O on a/b failed"),
            "{error}"
        );
    }
}
