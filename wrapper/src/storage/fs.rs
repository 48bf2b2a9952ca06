//! The filesystem adapter (HKube's `@hkube/fs-adapter`): object `<root>/<path>`, the 8-byte
//! header at the start of the file, the payload after it.
//!
//! Writes go to a temporary file in the object's directory, are fsynced, then renamed over the
//! object, so a reader sees the old object or the new one, never a part; a failed or cancelled
//! write removes its temporary file. Payloads move in chunks of [`CHUNK`] bytes.
//!
//! It must never touch a file outside its root: every path is checked by
//! [`validate_path`](super::validate_path) first. (A symlink placed inside the root by an
//! administrator is followed; the adapter itself creates none.)

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};

use super::header::{Header, HEADER_LEN};
use super::{
    validate_path, validate_prefix, BoxFuture, Error, ObjectReader, Result, Storage, StoredObject,
    TEMP_PREFIX,
};

/// Bytes moved per read or write when streaming a payload.
pub const CHUNK: usize = 1 << 20;

/// Objects as files under a root directory (`BASE_FS_ADAPTER_DIRECTORY`).
#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
}

impl FsStorage {
    /// An adapter rooted at `root`. Nothing is created until the first write.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsStorage { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of object `path`, after checking that `path` stays inside the root.
    pub fn file_of(&self, path: &str) -> Result<PathBuf> {
        validate_path(path)?;
        Ok(self.root.join(path))
    }

    async fn write(
        &self,
        path: &str,
        header: Option<Header>,
        payload: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<u64> {
        let target = self.file_of(path)?;
        let io_error = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&dir).await.map_err(io_error)?;

        let temp = TempFile::new(&dir);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(temp.path())
            .await
            .map_err(io_error)?;
        if let Some(header) = header {
            file.write_all(&header.to_bytes()).await.map_err(io_error)?;
        }
        let mut written = 0u64;
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let filled = fill(payload, &mut buffer).await.map_err(io_error)?;
            if filled == 0 {
                break;
            }
            file.write_all(&buffer[..filled]).await.map_err(io_error)?;
            written += filled as u64;
        }
        file.flush().await.map_err(io_error)?;
        file.sync_all().await.map_err(io_error)?;
        drop(file);
        tokio::fs::rename(temp.path(), &target)
            .await
            .map_err(io_error)?;
        temp.committed();
        // Make the rename itself durable. Some filesystems refuse to fsync a directory; the
        // object is already in place, so that is not worth failing the write for.
        if let Ok(dir) = File::open(&dir).await {
            let _ = dir.sync_all().await;
        }
        Ok(written)
    }
}

impl Storage for FsStorage {
    fn module_name(&self) -> &'static str {
        "@hkube/fs-adapter"
    }

    fn put<'a>(&'a self, path: &'a str, object: StoredObject) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let mut payload: &[u8] = &object.payload;
            self.write(path, object.header, &mut payload).await
        })
    }

    fn put_stream<'a>(
        &'a self,
        path: &'a str,
        header: Option<Header>,
        payload: &'a mut (dyn AsyncRead + Send + Unpin),
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.write(path, header, payload))
    }

    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<StoredObject>> {
        Box::pin(async move {
            let file = self.file_of(path)?;
            blocking(path, move || {
                let (mut file, len) = open_object(&file)?;
                let (header, peeked) = peek_header(&mut file)?;
                // Sized once from the file, so the payload is never reallocated (and copied).
                let payload_len = match header {
                    Some(_) => len.saturating_sub(HEADER_LEN as u64),
                    None => len,
                };
                let mut payload = Vec::with_capacity(payload_len as usize);
                payload.extend_from_slice(&peeked);
                file.read_to_end(&mut payload)?;
                Ok(StoredObject { header, payload })
            })
            .await
        })
    }

    fn open<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<ObjectReader>> {
        Box::pin(async move {
            let file = self.file_of(path)?;
            let (file, header, peeked, len) = blocking(path, move || {
                let (mut file, len) = open_object(&file)?;
                let (header, peeked) = peek_header(&mut file)?;
                Ok((file, header, peeked, len))
            })
            .await?;
            let rest = BufReader::with_capacity(CHUNK, File::from_std(file));
            Ok(match header {
                Some(header) => ObjectReader {
                    header: Some(header),
                    size: len - HEADER_LEN as u64,
                    payload: Box::pin(rest),
                },
                None => ObjectReader {
                    header: None,
                    size: len,
                    payload: Box::pin(AsyncReadExt::chain(io::Cursor::new(peeked), rest)),
                },
            })
        })
    }

    fn size<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let file = self.file_of(path)?;
            blocking(path, move || {
                let (mut file, len) = open_object(&file)?;
                let (header, _) = peek_header(&mut file)?;
                Ok(if header.is_some() {
                    len - HEADER_LEN as u64
                } else {
                    len
                })
            })
            .await
        })
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let file = self.file_of(path)?;
            blocking(path, move || {
                open_object(&file)?;
                std::fs::remove_file(&file)
            })
            .await
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            validate_prefix(prefix)?;
            let root = self.root.clone();
            let owned_prefix = prefix.to_owned();
            blocking(prefix, move || list_files(&root, &owned_prefix)).await
        })
    }
}

/// Reads until `buffer` is full or the reader ends; returns the bytes read.
async fn fill(reader: &mut (dyn AsyncRead + Send + Unpin), buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Runs blocking file work off the async threads; "not found" becomes [`Error::NotFound`].
async fn blocking<T: Send + 'static>(
    path: &str,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| Error::io(path, e)),
        Err(join) => Err(Error::Io {
            path: path.to_owned(),
            source: io::Error::other(join.to_string()),
        }),
    }
}

/// Opens an object's file; a directory (a prefix of other objects) is not an object.
fn open_object(file: &Path) -> io::Result<(std::fs::File, u64)> {
    let file = std::fs::File::open(file)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::from(io::ErrorKind::NotFound));
    }
    Ok((file, metadata.len()))
}

/// Reads up to 8 bytes; if they are a header, returns it (the file is then positioned at the
/// payload), otherwise the bytes read, which belong to the payload.
fn peek_header(file: &mut std::fs::File) -> io::Result<(Option<Header>, Vec<u8>)> {
    let mut peeked = Vec::with_capacity(HEADER_LEN);
    file.by_ref()
        .take(HEADER_LEN as u64)
        .read_to_end(&mut peeked)?;
    Ok(match Header::parse(&peeked) {
        Some(header) => (Some(header), Vec::new()),
        None => (None, peeked),
    })
}

/// All object paths under `root` starting with `prefix`, sorted. Temporary files and symlinks
/// are skipped, and so are names that are not UTF-8 (no valid path could name them).
fn list_files(root: &Path, prefix: &str) -> io::Result<Vec<String>> {
    let start = match prefix.rfind('/') {
        Some(slash) => &prefix[..=slash],
        None => "",
    };
    let mut found = Vec::new();
    let mut pending = vec![start.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(root.join(&dir)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let path = format!("{dir}{name}");
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                let as_dir = format!("{path}/");
                if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                    pending.push(as_dir);
                }
            } else if file_type.is_file() && path.starts_with(prefix) {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// A temporary file beside the object; removed on drop unless it was renamed into place.
struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    fn new(dir: &Path) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{TEMP_PREFIX}{}.{n}", std::process::id());
        TempFile {
            path: Some(dir.join(name)),
        }
    }

    fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    fn committed(mut self) {
        self.path = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            // Runs also when the write future is cancelled; the file may not exist yet.
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_unique_and_reserved() {
        let dir = Path::new("/x");
        let a = TempFile::new(dir);
        let b = TempFile::new(dir);
        assert_ne!(a.path(), b.path());
        let name = a.path().file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            validate_path(&name).is_err(),
            "{name} is a valid object path"
        );
        a.committed();
        b.committed();
    }
}
