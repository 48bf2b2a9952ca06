//! `/api/v1/storage/...`: the job storage, browsed and downloaded (reference §5.8).
//!
//! `GET /storage/info` is how hkubectl's `config` checks that it reaches a server;
//! `GET /storage/download/pipeline/result/{jobId}` is how a user fetches results too large to
//! be inlined in `/exec/results` (their entries carry `info.path` instead): a zip with
//! `metadata.json` (the results' entries) and one file per large result. Objects are streamed
//! out, never loaded whole, except `values`, which answers only objects under 100 KiB (HKube's
//! `STORAGE_RESULTS_THRESHOLD`), as HKube does.

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt};
use wrapper::storage::{self as objects, reference, Encoding, StoredValue};

use super::{ApiError, ApiState, JobStorage};
use crate::engine::Error as EngineError;

type Answer = Result<Json<Value>, ApiError>;

/// HKube's prefixes (`@hkube/storage-manager`'s `STORAGE_PREFIX`), after `<cluster>-`.
const PREFIXES: [&str; 6] = [
    "hkube",
    "hkube-results",
    "hkube-metadata",
    "hkube-store",
    "hkube-execution",
    "hkube-index",
];

/// Objects larger than this are not decoded into JSON (`values`): HKube's threshold.
const VALUE_LIMIT: u64 = 100 << 10;

/// At most this many keys are listed at once (HKube's `maxStorageFetchKeys` caps it too);
/// `total` still counts them all.
const MAX_KEYS: usize = 1000;

fn job_storage(state: &ApiState) -> Result<&JobStorage, ApiError> {
    state
        .storage
        .as_ref()
        .ok_or_else(|| ApiError::bad_request("this server has no job storage"))
}

/// HKube's storage errors: missing is `<kind> <path> Not Found`; a path that could leave the
/// storage root is a 400 naming why.
fn storage_error(kind: &str, path: &str, error: objects::Error) -> ApiError {
    match error {
        objects::Error::NotFound { .. } => ApiError::NotFound(format!("{kind} {path} Not Found")),
        objects::Error::InvalidPath { .. } => ApiError::bad_request(error.to_string()),
        other => ApiError::Internal(other.to_string()),
    }
}

/// `GET /storage/info`: `{type, moduleName, clusterName}`.
pub async fn info(State(state): State<ApiState>) -> Answer {
    let storage = job_storage(&state)?;
    let module = storage.backend.module_name();
    let kind = module
        .trim_start_matches("@hkube/")
        .trim_end_matches("-adapter");
    Ok(Json(json!({
        "type": kind,
        "moduleName": module,
        "clusterName": storage.cluster,
    })))
}

fn prefix_types(cluster: &str) -> Vec<String> {
    PREFIXES.iter().map(|p| format!("{cluster}-{p}")).collect()
}

/// `GET /storage/prefix/types`.
pub async fn types(State(state): State<ApiState>) -> Answer {
    Ok(Json(json!(prefix_types(&job_storage(&state)?.cluster))))
}

/// `?order=asc|desc&from=&to=`: HKube's list range (sorted by path).
fn range<T>(mut items: Vec<T>, query: &HashMap<String, String>) -> Result<Vec<T>, ApiError> {
    let number = |name: &str| -> Result<Option<usize>, ApiError> {
        query
            .get(name)
            .map(|v| {
                v.parse::<usize>().map_err(|_| {
                    ApiError::bad_request(format!("data.{name} should be integer >= 0"))
                })
            })
            .transpose()
    };
    match query.get("order").map(String::as_str) {
        None | Some("asc") => {}
        Some("desc") => items.reverse(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "data.order should be equal to one of the allowed values (asc,desc)",
            ))
        }
    }
    let from = number("from")?.unwrap_or(0).min(items.len());
    let to = number("to")?
        .unwrap_or(items.len())
        .clamp(from, items.len());
    Ok(items.drain(from..to).collect())
}

/// The objects under `path` (a folder: `a/b` lists `a/b/...`).
async fn objects_under(storage: &JobStorage, path: &str) -> Result<Vec<String>, objects::Error> {
    let prefix = if path.is_empty() || path.ends_with('/') {
        path.to_string()
    } else {
        format!("{path}/")
    };
    storage.backend.list(&prefix).await
}

/// The names directly under `path`, each once, sorted.
async fn prefixes_of(storage: &JobStorage, path: &str) -> Result<Vec<String>, ApiError> {
    let listed = objects_under(storage, path)
        .await
        .map_err(|e| storage_error("prefix", path, e))?;
    if listed.is_empty() {
        return Err(ApiError::NotFound(format!("prefix {path} Not Found")));
    }
    let base = path.trim_end_matches('/').len() + 1;
    let mut names: Vec<String> = listed
        .iter()
        .filter_map(|key| key.get(base..))
        .filter_map(|rest| rest.split('/').next())
        .map(str::to_string)
        .collect();
    names.dedup();
    Ok(names)
}

/// `GET /storage/prefixes`: `[{path, total, keys}]` for every prefix type; an empty prefix lists
/// no keys.
pub async fn all_prefixes(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let storage = job_storage(&state)?;
    let mut answers = Vec::new();
    for path in prefix_types(&storage.cluster) {
        let names = match prefixes_of(storage, &path).await {
            Err(ApiError::NotFound(_)) => Vec::new(),
            other => other?,
        };
        answers.push(listing(&path, names, &query)?);
    }
    Ok(Json(Value::Array(answers)))
}

/// `{path, total, keys}`: the names under `path`, `total` before the query's range is cut.
fn listing(
    path: &str,
    names: Vec<String>,
    query: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let total = names.len();
    Ok(json!({"path": path, "total": total, "keys": range(names, query)?}))
}

/// `GET /storage/prefixes/{path}`: `{path, total, keys}`, the names directly under `path`.
pub async fn prefixes(
    State(state): State<ApiState>,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let names = prefixes_of(job_storage(&state)?, &path).await?;
    Ok(Json(listing(&path, names, &query)?))
}

/// `{path, total, keys: [{path, size}]}` of the objects under `path`.
async fn keys_of(
    storage: &JobStorage,
    path: &str,
    query: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let listed = objects_under(storage, path)
        .await
        .map_err(|e| storage_error("key", path, e))?;
    let total = listed.len();
    let mut keys = Vec::new();
    for key in range(listed, query)?.into_iter().take(MAX_KEYS) {
        // An object removed since it was listed is left out.
        if let Ok(size) = storage.backend.size(&key).await {
            keys.push(json!({"path": key, "size": size}));
        }
    }
    Ok(json!({"path": path, "total": total, "keys": keys}))
}

/// `GET /storage/keys`: [`keys`] of every prefix type.
pub async fn all_keys(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let storage = job_storage(&state)?;
    let mut answers = Vec::new();
    for path in prefix_types(&storage.cluster) {
        answers.push(keys_of(storage, &path, &query).await?);
    }
    Ok(Json(Value::Array(answers)))
}

/// `GET /storage/keys/{path}`: the objects under `path`, with their sizes.
pub async fn keys(
    State(state): State<ApiState>,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let answer = keys_of(job_storage(&state)?, &path, &query).await?;
    if answer["total"] == 0 {
        return Err(ApiError::NotFound(format!("key {path} Not Found")));
    }
    Ok(Json(answer))
}

/// `GET /storage/values/{path}`: the object decoded, as JSON (binary as the value type shows
/// bytes); larger objects must be streamed.
pub async fn values(State(state): State<ApiState>, Path(path): Path<String>) -> Answer {
    let storage = job_storage(&state)?;
    let size = storage
        .backend
        .size(&path)
        .await
        .map_err(|e| storage_error("value", &path, e))?;
    if size >= VALUE_LIMIT {
        return Err(ApiError::bad_request(format!(
            "data too large ({}), use the stream api",
            reference::pretty_size(size)
        )));
    }
    let value = objects::get_value(&*storage.backend, &path, Encoding::Msgpack)
        .await
        .map_err(|e| storage_error("value", &path, e))?;
    Ok(Json(match value {
        StoredValue::Value(value) => value,
        StoredValue::Raw(bytes) => wrapper::value::binary(&bytes),
    }))
}

/// A response body read from `reader` in chunks, as the client takes them.
fn streamed(reader: impl AsyncRead + Send + Unpin + 'static) -> Body {
    let chunks = futures_util::stream::unfold(reader, |mut reader| async move {
        let mut chunk = vec![0u8; 64 << 10];
        match reader.read(&mut chunk).await {
            Ok(0) => None,
            Ok(n) => {
                chunk.truncate(n);
                Some((Ok::<_, std::io::Error>(chunk), reader))
            }
            Err(error) => Some((Err(error), reader)),
        }
    });
    Body::from_stream(chunks)
}

/// `?ext=jpg` → `attachment; filename=hkube-result.jpg`.
fn attachment(ext: Option<&String>) -> String {
    match ext.filter(|e| !e.is_empty()) {
        Some(ext) => format!(
            "attachment; filename=hkube-result.{}",
            ext.replace(|c: char| !c.is_ascii_alphanumeric(), "")
        ),
        None => "attachment; filename=hkube-result".to_string(),
    }
}

/// The object's bytes (without the storage header) or, with `decode`, an encoded value as JSON
/// and raw bytes as they are (HKube's `custom` routes).
async fn object_body(state: &ApiState, path: &str, decode: bool) -> Result<Response, ApiError> {
    let storage = job_storage(state)?;
    let object = storage
        .backend
        .open(path)
        .await
        .map_err(|e| storage_error("stream", path, e))?;
    let encoded = object
        .header
        .is_some_and(|h| h.data_type == objects::header::DataType::Encoded);
    if decode && encoded {
        let value = objects::get_value(&*storage.backend, path, Encoding::Msgpack)
            .await
            .map_err(|e| storage_error("stream", path, e))?;
        if let StoredValue::Value(value) = value {
            return Ok(Json(value).into_response());
        }
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, object.size.to_string()),
        ],
        streamed(object.payload),
    )
        .into_response())
}

/// `GET /storage/stream/{path}`: the object's bytes.
pub async fn stream(State(state): State<ApiState>, Path(path): Path<String>) -> Response {
    object_body(&state, &path, false)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /storage/stream/custom/{path}`: an encoded value as JSON, raw bytes as they are.
pub async fn stream_custom(State(state): State<ApiState>, Path(path): Path<String>) -> Response {
    object_body(&state, &path, true)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /storage/download/{path}?ext=`: the object's bytes as an attachment.
pub async fn download(
    State(state): State<ApiState>,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let mut response = object_body(&state, &path, false).await?;
    set_attachment(&mut response, attachment(query.get("ext")));
    Ok(response)
}

/// `GET /storage/download/custom/{path}?ext=`: as `stream/custom`, as an attachment.
pub async fn download_custom(
    State(state): State<ApiState>,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let mut response = object_body(&state, &path, true).await?;
    set_attachment(&mut response, attachment(query.get("ext")));
    Ok(response)
}

fn set_attachment(response: &mut Response, disposition: String) {
    if let Ok(value) = header::HeaderValue::from_str(&disposition) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
}

/// `GET /storage/download/pipeline/result/{jobId}`: a zip of `metadata.json` (the results'
/// entries; a large one's `info` becomes `{size, fileName}`) and each large result as
/// `<name>.<ext>` (`ext`: the algorithm's `downloadFileExt`, else `hkube`).
pub async fn pipeline_result(
    State(state): State<ApiState>,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let result = match state.engine.result(&job_id).await {
        Err(EngineError::NotFound(message)) => state
            .store
            .job_result(&job_id)
            .ok_or(EngineError::NotFound(message))?,
        other => other?,
    };
    let Some(entries) = result["data"].as_array().filter(|d| !d.is_empty()) else {
        return Err(ApiError::NotFound(format!("results {job_id} Not Found")));
    };
    let mut metadata = Vec::new();
    let mut files = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let mut entry = entry.clone();
        if let Some(path) = entry["info"]["path"].as_str().map(str::to_string) {
            let ext = entry["algorithmName"]
                .as_str()
                .and_then(|name| state.store.algorithm(name))
                .and_then(|a| {
                    a.extra
                        .get("downloadFileExt")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "hkube".to_string());
            let node = entry["nodeName"].as_str().unwrap_or("result");
            let file_name = format!("{index}-{node}.{ext}");
            entry["info"] = json!({"size": entry["info"]["size"], "fileName": file_name});
            files.push((file_name, path));
        }
        metadata.push(entry);
    }
    let storage = job_storage(&state)?.clone();
    let metadata = serde_json::to_vec(&metadata).map_err(|e| ApiError::Internal(e.to_string()))?;
    let runtime = tokio::runtime::Handle::current();
    // The zip is written to an unnamed temporary file (large results need not fit in memory),
    // then streamed out; the file goes away with its handle.
    let file = tokio::task::spawn_blocking(move || -> Result<std::fs::File, ApiError> {
        let internal = |e: &dyn std::fmt::Display| ApiError::Internal(format!("zip: {e}"));
        let mut zip = zip::ZipWriter::new(tempfile::tempfile().map_err(|e| internal(&e))?);
        let options = zip::write::SimpleFileOptions::default().large_file(true);
        zip.start_file("metadata.json", options)
            .map_err(|e| internal(&e))?;
        zip.write_all(&metadata).map_err(|e| internal(&e))?;
        for (file_name, path) in files {
            let mut object = runtime
                .block_on(storage.backend.open(&path))
                .map_err(|e| storage_error("stream", &path, e))?;
            zip.start_file(file_name, options)
                .map_err(|e| internal(&e))?;
            let mut chunk = vec![0u8; 64 << 10];
            loop {
                let n = runtime
                    .block_on(object.payload.read(&mut chunk))
                    .map_err(|e| internal(&e))?;
                if n == 0 {
                    break;
                }
                zip.write_all(&chunk[..n]).map_err(|e| internal(&e))?;
            }
        }
        let mut file = zip.finish().map_err(|e| internal(&e))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| internal(&e))?;
        Ok(file)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let mut response = (
        [(header::CONTENT_TYPE, "application/zip")],
        streamed(tokio::fs::File::from_std(file)),
    )
        .into_response();
    set_attachment(
        &mut response,
        "attachment; filename=hkube-result.zip".to_string(),
    );
    Ok(response)
}
