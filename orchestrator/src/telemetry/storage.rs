//! A job storage that counts the bytes going through it (`hkube_storage_bytes_total`).
//!
//! It wraps the storage the server itself reads and writes: the API's `/storage` routes and
//! the sidecars' reads and writes of results. Bytes a runtime writes straight into the
//! storage folder (the fs storage's fast path) do not go through the server and are not
//! counted.

use std::sync::Arc;

use tokio::io::AsyncRead;
use wrapper::storage::{BoxFuture, Header, ObjectReader, Result, Storage, StoredObject};

use super::metrics;

/// A storage whose reads and writes are counted.
#[derive(Debug)]
pub struct Counted(pub Arc<dyn Storage>);

impl Counted {
    pub fn wrap(storage: Arc<dyn Storage>) -> Arc<dyn Storage> {
        Arc::new(Counted(storage))
    }
}

impl Storage for Counted {
    fn module_name(&self) -> &'static str {
        self.0.module_name()
    }

    fn put<'a>(&'a self, path: &'a str, object: StoredObject) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let size = self.0.put(path, object).await?;
            metrics::storage_bytes("write", size);
            Ok(size)
        })
    }

    fn put_stream<'a>(
        &'a self,
        path: &'a str,
        header: Option<Header>,
        payload: &'a mut (dyn AsyncRead + Send + Unpin),
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let size = self.0.put_stream(path, header, payload).await?;
            metrics::storage_bytes("write", size);
            Ok(size)
        })
    }

    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<StoredObject>> {
        Box::pin(async move {
            let object = self.0.get(path).await?;
            metrics::storage_bytes("read", object.payload.len() as u64);
            Ok(object)
        })
    }

    /// Counted when opened: a reader is almost always read to its end.
    fn open<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<ObjectReader>> {
        Box::pin(async move {
            let reader = self.0.open(path).await?;
            metrics::storage_bytes("read", reader.size);
            Ok(reader)
        })
    }

    fn size<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<u64>> {
        self.0.size(path)
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>> {
        self.0.delete(path)
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        self.0.list(prefix)
    }
}
