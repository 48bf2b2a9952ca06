//! hkube's runtimes keep large values (bytes) as files in a local folder and pass references
//! (`$$hkubeRef`). When the job's storage is elsewhere (S3), the sidecar bridges the two: a
//! runtime's stored result is published to the storage under the same path, and a referenced
//! input missing from the folder (written on another machine) is fetched into it before the
//! runtime reads it. Both copies stream: an object is never held whole in memory.

use serde_json::Value;

use super::StorageAccess;
use crate::storage::{self, Storage};

/// Copies the object at `path` from one storage to the other.
async fn copy(from: &dyn Storage, to: &dyn Storage, path: &str) -> Result<(), String> {
    let mut reader = from
        .open(path)
        .await
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    to.put_stream(path, reader.header, &mut reader.payload)
        .await
        .map_err(|e| format!("cannot store {path}: {e}"))?;
    Ok(())
}

/// A runtime's output that is a reference: its object goes from the folder to the storage.
pub(super) async fn publish(access: &StorageAccess, output: &Value) -> Result<(), String> {
    let (Some(spool), Some((path, _))) = (&access.spool, storage::reference::as_reference(output))
    else {
        return Ok(());
    };
    copy(spool.as_ref(), access.storage.as_ref(), path).await
}

/// Every reference in `inputs` whose object the folder lacks is fetched from the storage.
pub(super) async fn fetch(access: &StorageAccess, inputs: &[Value]) -> Result<(), String> {
    let Some(spool) = &access.spool else {
        return Ok(());
    };
    let mut paths = Vec::new();
    for input in inputs {
        super::collect_references(input, &mut paths);
    }
    for path in paths {
        if spool.size(&path).await.is_err() {
            copy(access.storage.as_ref(), spool.as_ref(), &path).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::*;
    use crate::storage::{reference, Encoding, FsStorage, StoredObject};

    fn access(remote: &std::path::Path, spool: &std::path::Path) -> StorageAccess {
        StorageAccess {
            storage: Arc::new(FsStorage::new(remote)),
            cluster: "local".into(),
            encoding: Encoding::Msgpack,
            spool: Some(Arc::new(FsStorage::new(spool))),
        }
    }

    #[tokio::test]
    async fn results_are_published_and_missing_inputs_fetched() {
        let dir = tempfile::tempdir().unwrap();
        let (remote, spool) = (dir.path().join("remote"), dir.path().join("spool"));
        let access = access(&remote, &spool);
        let object = StoredObject {
            header: Some(crate::storage::Header::raw(Encoding::Msgpack)),
            payload: vec![7; 1000],
        };
        let local = access.spool.clone().unwrap();
        local.put("local-hkube/j/a", object.clone()).await.unwrap();
        publish(&access, &reference::reference("local-hkube/j/a", 1000))
            .await
            .unwrap();
        assert_eq!(access.storage.get("local-hkube/j/a").await.unwrap(), object);
        // Written elsewhere: only the storage has it, until an input names it.
        access
            .storage
            .put("local-hkube/j/b", object.clone())
            .await
            .unwrap();
        let input = serde_json::json!([{"nested": reference::reference("local-hkube/j/b", 1000)}]);
        fetch(&access, input.as_array().unwrap()).await.unwrap();
        assert_eq!(local.get("local-hkube/j/b").await.unwrap(), object);
        // Plain values need nothing.
        publish(&access, &serde_json::json!(42)).await.unwrap();
    }
}
