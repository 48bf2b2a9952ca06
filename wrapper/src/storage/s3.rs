//! The S3 adapter (`DEFAULT_STORAGE=s3`), through aws-sdk-s3, for any S3-compatible server.
//!
//! HKube's layout: a path's first segment is the bucket (`local-hkube`, `local-hkube-results`),
//! the rest is the key; buckets are made on first write. Objects keep the same 8-byte header as
//! on the filesystem. A streamed write of more than one part is a multipart upload, so the
//! object appears whole or not at all (an aborted upload leaves nothing) and memory stays at one
//! part whatever the object's size.

use std::collections::HashSet;
use std::sync::Mutex;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::header::HEADER_LEN;
use super::{
    validate_path, validate_prefix, BoxFuture, Error, Header, ObjectReader, Result, Storage,
    StoredObject,
};

/// Where the S3 server is and who we are to it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// `S3_ENDPOINT_URL`, e.g. `http://127.0.0.1:9000`; empty: AWS's own endpoint.
    pub endpoint: String,
    /// `AWS_REGION` (default `us-east-1`).
    pub region: String,
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_key: String,
}

/// The secret is never printed.
impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// One part of a multipart upload (S3's minimum is 5 MiB for all but the last).
const PART: usize = 8 << 20;

#[derive(Debug)]
pub struct S3Storage {
    client: Client,
    /// Buckets known to exist (made or seen), so a write asks once per bucket.
    buckets: Mutex<HashSet<String>>,
}

impl S3Storage {
    pub fn new(settings: &S3Settings) -> S3Storage {
        let mut config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(Credentials::new(
                settings.access_key.clone(),
                settings.secret_key.clone(),
                None,
                None,
                "hkube",
            ))
            // Buckets in the path: S3-compatible servers seldom have per-bucket host names.
            .force_path_style(true);
        if !settings.endpoint.is_empty() {
            config = config.endpoint_url(settings.endpoint.clone());
        }
        S3Storage {
            client: Client::from_conf(config.build()),
            buckets: Mutex::new(HashSet::new()),
        }
    }

    async fn ensure_bucket(&self, path: &str, bucket: &str) -> Result<()> {
        if self.buckets.lock().is_ok_and(|b| b.contains(bucket)) {
            return Ok(());
        }
        if let Err(error) = self.client.create_bucket().bucket(bucket).send().await {
            let service = error.as_service_error();
            let exists = service.is_some_and(|e| {
                e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()
            });
            if !exists {
                return Err(failure(path, error));
            }
        }
        if let Ok(mut buckets) = self.buckets.lock() {
            buckets.insert(bucket.to_string());
        }
        Ok(())
    }

    async fn put_bytes(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        let (bucket, key) = split(path)?;
        self.ensure_bucket(path, bucket).await?;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| failure(path, e))?;
        Ok(())
    }

    /// The header, if the object has one, and the object's whole length.
    async fn head(&self, path: &str) -> Result<(Option<Header>, u64)> {
        let (bucket, key) = split(path)?;
        let head = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error().is_some_and(|s| s.is_not_found()) {
                    Error::NotFound {
                        path: path.to_string(),
                    }
                } else {
                    failure(path, e)
                }
            })?;
        let len = head.content_length().unwrap_or(0).max(0) as u64;
        if len < HEADER_LEN as u64 {
            return Ok((None, len));
        }
        let first = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .range(format!("bytes=0-{}", HEADER_LEN - 1))
            .send()
            .await
            .map_err(|e| get_failure(path, e))?;
        let bytes = first
            .body
            .collect()
            .await
            .map_err(|e| io_failure(path, e))?
            .into_bytes();
        Ok((Header::parse(&bytes), len))
    }

    async fn upload_parts(
        &self,
        path: &str,
        first: Vec<u8>,
        payload: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<u64> {
        let (bucket, key) = split(path)?;
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| failure(path, e))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let outcome = async {
            let mut parts = Vec::new();
            let mut chunk = first;
            let mut total = 0u64;
            loop {
                let number = parts.len() as i32 + 1;
                total += chunk.len() as u64;
                let sent = self
                    .client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(ByteStream::from(std::mem::take(&mut chunk)))
                    .send()
                    .await
                    .map_err(|e| failure(path, e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(sent.e_tag().map(str::to_string))
                        .build(),
                );
                chunk = read_part(path, payload).await?;
                if chunk.is_empty() {
                    break;
                }
            }
            self.client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| failure(path, e))?;
            Ok(total)
        }
        .await;
        if outcome.is_err() {
            // Nothing half-written stays: the parts are discarded.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        outcome
    }
}

impl Storage for S3Storage {
    fn module_name(&self) -> &'static str {
        "@hkube/s3-adapter"
    }

    fn put<'a>(&'a self, path: &'a str, object: StoredObject) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            validate_path(path)?;
            let size = object.payload.len() as u64;
            let bytes = match object.header {
                Some(header) => {
                    let mut bytes = Vec::with_capacity(HEADER_LEN + object.payload.len());
                    bytes.extend_from_slice(&header.to_bytes());
                    bytes.extend_from_slice(&object.payload);
                    bytes
                }
                None => object.payload,
            };
            self.put_bytes(path, bytes).await?;
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
            validate_path(path)?;
            let (bucket, _) = split(path)?;
            self.ensure_bucket(path, bucket).await?;
            let header_len = header.map_or(0, |_| HEADER_LEN as u64);
            let mut first = Vec::with_capacity(PART);
            if let Some(header) = header {
                first.extend_from_slice(&header.to_bytes());
            }
            let rest = read_part(path, payload).await?;
            first.extend_from_slice(&rest);
            drop(rest);
            if first.len() < PART {
                // It all fits in one part: one plain PUT.
                let size = first.len() as u64 - header_len;
                self.put_bytes(path, first).await?;
                return Ok(size);
            }
            let total = self.upload_parts(path, first, payload).await?;
            Ok(total - header_len)
        })
    }

    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<StoredObject>> {
        Box::pin(async move {
            validate_path(path)?;
            let (bucket, key) = split(path)?;
            let object = self
                .client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| get_failure(path, e))?;
            let mut bytes = object
                .body
                .collect()
                .await
                .map_err(|e| io_failure(path, e))?
                .to_vec();
            Ok(match Header::parse(&bytes) {
                Some(header) => {
                    bytes.drain(..HEADER_LEN);
                    StoredObject {
                        header: Some(header),
                        payload: bytes,
                    }
                }
                None => StoredObject {
                    header: None,
                    payload: bytes,
                },
            })
        })
    }

    fn open<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<ObjectReader>> {
        Box::pin(async move {
            validate_path(path)?;
            let (header, len) = self.head(path).await?;
            let (bucket, key) = split(path)?;
            let skip = header.map_or(0, |_| HEADER_LEN);
            let mut request = self.client.get_object().bucket(bucket).key(key);
            if skip > 0 {
                request = request.range(format!("bytes={skip}-"));
            }
            let size = len - skip as u64;
            let payload: super::BoxReader = if size == 0 {
                Box::pin(tokio::io::empty())
            } else {
                let object = request.send().await.map_err(|e| get_failure(path, e))?;
                Box::pin(object.body.into_async_read())
            };
            Ok(ObjectReader {
                header,
                size,
                payload,
            })
        })
    }

    fn size<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            validate_path(path)?;
            let (header, len) = self.head(path).await?;
            Ok(len - header.map_or(0, |_| HEADER_LEN as u64))
        })
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            validate_path(path)?;
            // S3 deletes silently; the trait says which object was missing.
            self.head(path).await?;
            let (bucket, key) = split(path)?;
            self.client
                .delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| failure(path, e))?;
            Ok(())
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            validate_prefix(prefix)?;
            let (bucket_prefix, key_prefix) = match prefix.split_once('/') {
                Some((bucket, key)) => (bucket, Some(key)),
                None => (prefix, None),
            };
            // A prefix inside a bucket names it whole; a shorter one may match several.
            let buckets: Vec<String> = match key_prefix {
                Some(_) => vec![bucket_prefix.to_string()],
                None => self
                    .client
                    .list_buckets()
                    .send()
                    .await
                    .map_err(|e| failure(prefix, e))?
                    .buckets()
                    .iter()
                    .filter_map(|b| b.name())
                    .filter(|name| name.starts_with(bucket_prefix))
                    .map(str::to_string)
                    .collect(),
            };
            let mut paths = Vec::new();
            for bucket in buckets {
                let mut token: Option<String> = None;
                loop {
                    let page = self
                        .client
                        .list_objects_v2()
                        .bucket(&bucket)
                        .set_prefix(key_prefix.map(str::to_string))
                        .set_continuation_token(token.take())
                        .send()
                        .await;
                    let page = match page {
                        Ok(page) => page,
                        Err(error)
                            if error
                                .as_service_error()
                                .is_some_and(|e| e.is_no_such_bucket()) =>
                        {
                            break
                        }
                        Err(error) => return Err(failure(prefix, error)),
                    };
                    paths.extend(
                        page.contents()
                            .iter()
                            .filter_map(|o| o.key())
                            .map(|key| format!("{bucket}/{key}")),
                    );
                    match page.next_continuation_token() {
                        Some(next) if page.is_truncated().unwrap_or(false) => {
                            token = Some(next.to_string())
                        }
                        _ => break,
                    }
                }
            }
            paths.sort();
            Ok(paths)
        })
    }
}

/// `bucket/key…` → (`bucket`, `key…`). A path of one segment has no key: S3 cannot hold it.
fn split(path: &str) -> Result<(&str, &str)> {
    path.split_once('/').ok_or_else(|| Error::InvalidPath {
        path: path.to_string(),
        reason: "an S3 path needs a bucket and a key (`bucket/key`)",
    })
}

/// Reads up to one part from `payload` (fewer bytes only at its end).
async fn read_part(path: &str, payload: &mut (dyn AsyncRead + Send + Unpin)) -> Result<Vec<u8>> {
    let mut part = Vec::with_capacity(PART);
    let mut limited = payload.take(PART as u64);
    limited
        .read_to_end(&mut part)
        .await
        .map_err(|e| Error::io(path, e))?;
    Ok(part)
}

fn failure(path: &str, error: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Io {
        path: path.to_string(),
        source: std::io::Error::other(aws_sdk_s3::error::DisplayErrorContext(error).to_string()),
    }
}

fn io_failure(path: &str, error: impl std::error::Error + Send + Sync + 'static) -> Error {
    failure(path, error)
}

fn get_failure(
    path: &str,
    error: aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::get_object::GetObjectError>,
) -> Error {
    if error.as_service_error().is_some_and(|e| e.is_no_such_key()) {
        Error::NotFound {
            path: path.to_string(),
        }
    } else {
        failure(path, error)
    }
}
