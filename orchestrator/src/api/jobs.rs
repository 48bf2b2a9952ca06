//! Queries over jobs (reference §5.1 search, audit trail and flowInput; §5.2): one view over
//! the engine's jobs and the ended jobs the store kept (a restarted server still answers for
//! those).
//!
//! A job is one document, close to HKube's DB document:
//! `{jobId, pipeline: {name, experimentName, nodes, tags?, types, startTime, rootJobId?, …},
//! status: <the status document, §3.5>, result?: <the results document, §3.4>}`. The
//! pipeline leaves out `flowInput` (HKube keeps it in storage; `GET /exec/flowInput/{jobId}`
//! returns it). `result` is there once the job has ended.
//!
//! Every query reads all documents and filters them here: fine for one node's history, and
//! the place to push filters down into the store when that stops being true.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::exec::status_of_ended;
use super::{ApiError, ApiState, JsonBody};
use crate::engine::JobStatus;
use crate::store::{EndedJob, DEFAULT_USER};

type Answer = Result<Json<Value>, ApiError>;

/// The document of a job the engine holds; `None` when it forgot the job meanwhile.
async fn engine_document(state: &ApiState, job_id: &str, status: JobStatus) -> Option<Value> {
    let mut pipeline = state.engine.pipeline(job_id).await.ok()?;
    let status_doc = state.engine.status(job_id).await.ok()?;
    if let Value::Object(map) = &mut pipeline {
        map.remove("jobId");
        map.remove("flowInput");
    }
    let mut doc = json!({"jobId": job_id, "pipeline": pipeline, "status": status_doc});
    if status.is_final() {
        if let Ok(result) = state.engine.result(job_id).await {
            doc["result"] = result;
        }
    }
    Some(doc)
}

/// The document of an ended job from the store's record.
fn stored_document(job: &EndedJob) -> Value {
    let mut pipeline = job.record.pipeline.clone();
    if let Value::Object(map) = &mut pipeline {
        map.remove("flowInput");
        map.insert("types".into(), json!(job.record.types));
        map.insert("startTime".into(), json!(job.record.start_time));
        if let Some(root) = &job.record.root_job_id {
            map.insert("rootJobId".into(), json!(root));
        }
    }
    json!({
        "jobId": job.record.job_id,
        "pipeline": pipeline,
        "status": job.status.clone().unwrap_or_else(|| status_of_ended(&job.result)),
        "result": job.result,
    })
}

/// Every job's document: the engine's first, then the ended ones only the store remembers.
async fn documents(state: &ApiState) -> Result<Vec<Value>, ApiError> {
    let mut docs = Vec::new();
    let mut seen = HashSet::new();
    for job in state.engine.jobs(None).await? {
        if let Some(doc) = engine_document(state, &job.job_id, job.status).await {
            seen.insert(job.job_id);
            docs.push(doc);
        }
    }
    for job in state.store.ended_jobs()? {
        if !seen.contains(&job.record.job_id) {
            docs.push(stored_document(&job));
        }
    }
    Ok(docs)
}

/// One job's document and its flowInput (`Null` when it has none).
async fn document(state: &ApiState, job_id: &str) -> Result<Option<(Value, Value)>, ApiError> {
    if let Ok(pipeline) = state.engine.pipeline(job_id).await {
        let flow_input = pipeline.get("flowInput").cloned().unwrap_or(Value::Null);
        let status = state
            .engine
            .jobs(None)
            .await?
            .into_iter()
            .find(|job| job.job_id == job_id)
            .map(|job| job.status);
        if let Some(doc) = match status {
            Some(status) => engine_document(state, job_id, status).await,
            None => None,
        } {
            return Ok(Some((doc, flow_input)));
        }
    }
    Ok(state.store.ended_job(job_id).map(|job| {
        let flow_input = job.record.pipeline.get("flowInput").cloned();
        (stored_document(&job), flow_input.unwrap_or(Value::Null))
    }))
}

fn start_time(doc: &Value) -> u64 {
    doc["pipeline"]["startTime"].as_u64().unwrap_or(0)
}

/// By start time; jobs started in the same millisecond keep their submission order (the
/// engine lists its jobs oldest first), reversed with the rest for `desc`.
fn sort_by_start(docs: &mut [Value], ascending: bool) {
    docs.sort_by_key(start_time);
    if !ascending {
        docs.reverse();
    }
}

fn field<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |value, key| value.get(key))
}

// ---- search ----

/// Where a page of hits ends: the last hit's start time and job id (HKube's is a database
/// id; ours is as opaque to the client).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    start_time: u64,
    job_id: String,
}

impl Cursor {
    fn of(doc: &Value) -> Cursor {
        Cursor {
            start_time: start_time(doc),
            job_id: doc["jobId"].as_str().unwrap_or_default().to_string(),
        }
    }

    fn parse(text: &str) -> Result<Cursor, ApiError> {
        let invalid = || ApiError::bad_request("please provide a valid cursor");
        let (time, job_id) = text.split_once('-').ok_or_else(invalid)?;
        let start_time = time.parse().map_err(|_| invalid())?;
        if job_id.is_empty()
            || !job_id
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        {
            return Err(invalid());
        }
        Ok(Cursor {
            start_time,
            job_id: job_id.to_string(),
        })
    }

    fn text(&self) -> String {
        format!("{}-{}", self.start_time, self.job_id)
    }
}

/// A search, from `GET /exec/search`'s query or `POST /exec/search`'s body.
#[derive(Debug, Default)]
struct Search {
    experiment_name: Option<String>,
    pipeline_name: Option<String>,
    pipeline_type: Option<String>,
    algorithm_name: Option<String>,
    pipeline_status: Option<String>,
    from: Option<u64>,
    to: Option<u64>,
    tags: Vec<String>,
    ascending: bool,
    /// 0: every hit (as the database reads a limit of 0).
    limit: usize,
    page: usize,
    cursor: Option<Cursor>,
    /// `path → include?`
    fields: Vec<(String, bool)>,
    /// `path → must exist?`
    exists: Vec<(String, bool)>,
}

const SEARCH_LIMIT: i64 = 100;

pub(super) fn parse_sort(sort: Option<&str>) -> Result<bool, ApiError> {
    match sort {
        None | Some("desc") => Ok(false),
        Some("asc") => Ok(true),
        Some(_) => Err(ApiError::bad_request(
            "data.sort should be equal to one of the allowed values (asc,desc)",
        )),
    }
}

/// An integer query or body value with ajv's texts.
fn parse_integer(value: &Value, name: &str, min: i64, max: i64) -> Result<i64, ApiError> {
    let number = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| ApiError::bad_request(format!("data.{name} should be integer")))?;
    if number < min {
        return Err(ApiError::bad_request(format!(
            "data.{name} should be >= {min}"
        )));
    }
    if number > max {
        return Err(ApiError::bad_request(format!(
            "data.{name} should be <= {max}"
        )));
    }
    Ok(number)
}

/// ms since the epoch, from a number, a string of digits or an ISO 8601 date (UTC unless it
/// says otherwise: `2024-05-01`, `2024-05-01T10:00:00Z`, `…T10:00:00.5+02:00`).
fn parse_date(value: &Value, name: &str) -> Result<u64, ApiError> {
    let invalid = || {
        ApiError::bad_request(format!(
            "data.{name} should be a date (ms since the epoch or ISO 8601)"
        ))
    };
    match value {
        Value::Number(n) => n.as_u64().ok_or_else(invalid),
        Value::String(text) => match text.parse::<u64>() {
            Ok(ms) => Ok(ms),
            Err(_) => iso_date_ms(text).ok_or_else(invalid),
        },
        _ => Err(invalid()),
    }
}

fn iso_date_ms(text: &str) -> Option<u64> {
    let (date, time) = text.split_once(['T', ' ']).unwrap_or((text, "00:00:00Z"));
    let mut parts = date.split('-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, offset_minutes) = if let Some(clock) = time.strip_suffix('Z') {
        (clock, 0)
    } else if let Some(at) = time.rfind(['+', '-']) {
        let (clock, zone) = time.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..].split_once(':').unwrap_or((&zone[1..], "0"));
        (
            clock,
            sign * (h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?),
        )
    } else {
        (time, 0)
    };
    let mut hms = clock.split(':');
    let hours: i64 = hms.next()?.parse().ok()?;
    let minutes: i64 = hms.next().unwrap_or("0").parse().ok()?;
    let seconds: f64 = hms.next().unwrap_or("0").parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = (days * 86_400 + hours * 3600 + (minutes - offset_minutes) * 60) * 1000
        + (seconds * 1000.0) as i64;
    u64::try_from(ms).ok()
}

/// `a:true,b:false` (GET) or `{a: true, b: 0}` (POST).
fn parse_flags(value: &Value, name: &str) -> Result<Vec<(String, bool)>, ApiError> {
    let truthy = |v: &Value| match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|n| n != 0.0),
        Value::String(s) => Some(s != "false" && s != "0"),
        _ => None,
    };
    match value {
        Value::Null => Ok(Vec::new()),
        Value::String(text) => Ok(text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| match item.split_once(':') {
                Some((path, flag)) => (
                    path.trim().to_string(),
                    flag.trim() != "false" && flag.trim() != "0",
                ),
                None => (item.to_string(), true),
            })
            .collect()),
        Value::Object(map) => map
            .iter()
            .map(|(path, flag)| {
                truthy(flag)
                    .map(|flag| (path.clone(), flag))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("data.{name}.{path} should be boolean"))
                    })
            })
            .collect(),
        _ => Err(ApiError::bad_request(format!(
            "data.{name} should be object"
        ))),
    }
}

fn text_of(value: Option<&Value>, name: &str) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ApiError::bad_request(format!(
            "data.{name} should be string"
        ))),
    }
}

fn tags_of(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(text
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_request("data.tags should be string"))
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request("data.tags should be array")),
    }
}

impl Search {
    /// The shared part: paging, sort, projection. `query` holds the filters.
    fn new(
        body: &Value,
        query: &Value,
        from: Option<&Value>,
        to: Option<&Value>,
    ) -> Result<Search, ApiError> {
        let limit = match body.get("limit") {
            None | Some(Value::Null) => SEARCH_LIMIT,
            Some(value) => parse_integer(value, "limit", 0, SEARCH_LIMIT)?,
        };
        let page = match body.get("pageNum").or_else(|| body.get("page")) {
            None | Some(Value::Null) => 1,
            Some(value) => parse_integer(value, "pageNum", 1, i64::MAX)?,
        };
        let cursor = match text_of(body.get("cursor"), "cursor")? {
            Some(text) => Some(Cursor::parse(&text)?),
            None => None,
        };
        Ok(Search {
            experiment_name: text_of(query.get("experimentName"), "experimentName")?,
            pipeline_name: text_of(query.get("pipelineName"), "pipelineName")?,
            pipeline_type: text_of(query.get("pipelineType"), "pipelineType")?,
            algorithm_name: text_of(query.get("algorithmName"), "algorithmName")?,
            pipeline_status: text_of(query.get("pipelineStatus"), "pipelineStatus")?,
            from: from
                .filter(|v| !v.is_null())
                .map(|v| parse_date(v, "from"))
                .transpose()?,
            to: to
                .filter(|v| !v.is_null())
                .map(|v| parse_date(v, "to"))
                .transpose()?,
            tags: tags_of(query.get("tags"))?,
            ascending: parse_sort(body.get("sort").and_then(Value::as_str))?,
            limit: usize::try_from(limit).unwrap_or(0),
            page: usize::try_from(page).unwrap_or(1),
            cursor,
            fields: parse_flags(body.get("fields").unwrap_or(&Value::Null), "fields")?,
            exists: parse_flags(body.get("exists").unwrap_or(&Value::Null), "exists")?,
        })
    }

    fn matches(&self, doc: &Value) -> bool {
        let pipeline = &doc["pipeline"];
        let is = |value: &Value, wanted: &Option<String>| {
            wanted.as_deref().is_none_or(|w| value.as_str() == Some(w))
        };
        let started = start_time(doc);
        is(&pipeline["experimentName"], &self.experiment_name)
            && self.pipeline_name.as_deref().is_none_or(|name| {
                doc["jobId"].as_str() == Some(name)
                    || pipeline["externalId"].as_str() == Some(name)
                    || pipeline["name"].as_str() == Some(name)
            })
            && self.pipeline_type.as_deref().is_none_or(|t| {
                pipeline["types"]
                    .as_array()
                    .is_some_and(|types| types.iter().any(|x| x.as_str() == Some(t)))
            })
            && self.algorithm_name.as_deref().is_none_or(|a| {
                pipeline["nodes"].as_array().is_some_and(|nodes| {
                    nodes.iter().any(|n| n["algorithmName"].as_str() == Some(a))
                })
            })
            && is(&doc["status"]["status"], &self.pipeline_status)
            && self.from.is_none_or(|from| started >= from)
            && self.to.is_none_or(|to| started <= to)
            && self.tags.iter().all(|tag| {
                pipeline["tags"]
                    .as_array()
                    .is_some_and(|tags| tags.iter().any(|x| x.as_str() == Some(tag)))
            })
            && self
                .exists
                .iter()
                .all(|(path, wanted)| field(doc, path).is_some_and(|v| !v.is_null()) == *wanted)
    }

    fn run(&self, mut docs: Vec<Value>) -> (Vec<Value>, Option<String>) {
        docs.retain(|doc| self.matches(doc));
        sort_by_start(&mut docs, self.ascending);
        if let Some(cursor) = &self.cursor {
            match docs
                .iter()
                .position(|doc| doc["jobId"] == cursor.job_id.as_str())
            {
                Some(at) => {
                    docs.drain(..=at);
                }
                // The cursor's job is gone (or filtered out): continue by start time.
                None => docs.retain(|doc| {
                    let started = start_time(doc);
                    if self.ascending {
                        started > cursor.start_time
                    } else {
                        started < cursor.start_time
                    }
                }),
            }
        }
        let hits: Vec<Value> = match self.limit {
            0 => docs,
            limit => docs
                .into_iter()
                .skip((self.page - 1).saturating_mul(limit))
                .take(limit)
                .collect(),
        };
        let cursor = hits.last().map(|doc| Cursor::of(doc).text());
        let hits = hits.into_iter().map(|doc| self.project(doc)).collect();
        (hits, cursor)
    }

    /// Only the `true` fields when any is given, else all but the `false` ones.
    fn project(&self, doc: Value) -> Value {
        if self.fields.is_empty() {
            return doc;
        }
        if self.fields.iter().any(|(_, include)| *include) {
            let mut out = Value::Object(Map::new());
            for (path, _) in self.fields.iter().filter(|(_, include)| *include) {
                if let Some(value) = field(&doc, path) {
                    let mut slot = &mut out;
                    for key in path.split('.') {
                        slot = &mut slot[key];
                    }
                    *slot = value.clone();
                }
            }
            return out;
        }
        let mut doc = doc;
        for (path, _) in &self.fields {
            let (parent, key) = match path.rsplit_once('.') {
                Some((parent, key)) => (Some(parent), key),
                None => (None, path.as_str()),
            };
            let target = match parent {
                None => Some(&mut doc),
                Some(parent) => parent
                    .split('.')
                    .try_fold(&mut doc, |value, k| value.get_mut(k)),
            };
            if let Some(Value::Object(map)) = target {
                map.remove(key);
            }
        }
        doc
    }
}

async fn answer(state: &ApiState, search: Search) -> Answer {
    let began = Instant::now();
    let (hits, cursor) = search.run(documents(state).await?);
    let mut body = json!({
        "hits": hits,
        "timeTook": format!("{}ms", began.elapsed().as_millis()),
    });
    if let Some(cursor) = cursor {
        body["cursor"] = json!(cursor);
    }
    Ok(Json(body))
}

/// `GET /exec/search?experimentName&pipelineName&pipelineType&algorithmName&pipelineStatus
/// &from&to&tags&cursor&page&sort&limit&fields&exists`.
pub async fn search_get(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let query = Value::Object(
        query
            .into_iter()
            .map(|(key, value)| (key, Value::String(value)))
            .collect(),
    );
    let search = Search::new(&query, &query, query.get("from"), query.get("to"))?;
    answer(&state, search).await
}

/// `POST /exec/search {query: {…, datesRange: {from, to}}, cursor, pageNum, sort, limit,
/// fields, exists}`.
pub async fn search_post(State(state): State<ApiState>, JsonBody(body): JsonBody) -> Answer {
    if !body.is_object() {
        return Err(ApiError::bad_request("data should be object"));
    }
    let query = body.get("query").cloned().unwrap_or(json!({}));
    if !query.is_object() {
        return Err(ApiError::bad_request("data.query should be object"));
    }
    let range = &query["datesRange"];
    let search = Search::new(&body, &query, range.get("from"), range.get("to"))?;
    answer(&state, search).await
}

// ---- /pipelines/results and /pipelines/status ----

/// The query of `/pipelines/results` and `/pipelines/status`: its jobs, newest first by
/// default, one unless `limit` says more (reference Q13).
async fn pipeline_jobs(
    state: &ApiState,
    query: &HashMap<String, String>,
    ended_only: bool,
    only_type: Option<&str>,
) -> Result<(String, Vec<Value>), ApiError> {
    let name = query
        .get("name")
        .filter(|name| !name.is_empty())
        .cloned()
        .ok_or_else(|| ApiError::bad_request("data should have required property 'name'"))?;
    let experiment = query
        .get("experimentName")
        .map_or("main", String::as_str)
        .to_string();
    let ascending = parse_sort(query.get("sort").map(String::as_str))?;
    let limit = match query.get("limit") {
        None => 1,
        Some(limit) => parse_integer(&json!(limit), "limit", 1, 100_000)?,
    };
    let mut docs: Vec<Value> = documents(state)
        .await?
        .into_iter()
        .filter(|doc| {
            doc["pipeline"]["name"].as_str() == Some(name.as_str())
                && doc["pipeline"]["experimentName"].as_str().unwrap_or("main") == experiment
                && (!ended_only || doc.get("result").is_some())
                && only_type.is_none_or(|wanted| {
                    doc["pipeline"]["types"]
                        .as_array()
                        .is_some_and(|types| types.iter().any(|t| t == wanted))
                })
        })
        .collect();
    sort_by_start(&mut docs, ascending);
    docs.truncate(usize::try_from(limit).unwrap_or(1));
    Ok((name, docs))
}

/// `GET /pipelines/results?name&experimentName=main&sort=desc&limit=1`.
pub async fn pipeline_results(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    results_of(&state, &query, None, "pipeline results").await
}

/// The results of a pipeline's latest jobs, of one type when `only_type` is given; 404
/// `<what> <name> Not Found` when there are none.
pub(super) async fn results_of(
    state: &ApiState,
    query: &HashMap<String, String>,
    only_type: Option<&str>,
    what: &str,
) -> Answer {
    let (name, docs) = pipeline_jobs(state, query, true, only_type).await?;
    if docs.is_empty() {
        return Err(ApiError::NotFound(format!("{what} {name} Not Found")));
    }
    let results = docs
        .into_iter()
        .map(|mut doc| {
            let mut result = doc["result"].take();
            if let Value::Object(map) = &mut result {
                map.insert("storageModule".into(), json!(state.storage_module));
            }
            result
        })
        .collect();
    Ok(Json(Value::Array(results)))
}

/// `GET /pipelines/status?name&experimentName=main&sort=desc&limit=1`.
pub async fn pipeline_status(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    statuses_of(&state, &query, None, "pipeline status").await
}

/// The statuses of a pipeline's latest jobs, as [`results_of`].
pub(super) async fn statuses_of(
    state: &ApiState,
    query: &HashMap<String, String>,
    only_type: Option<&str>,
    what: &str,
) -> Answer {
    let (name, docs) = pipeline_jobs(state, query, false, only_type).await?;
    if docs.is_empty() {
        return Err(ApiError::NotFound(format!("{what} {name} Not Found")));
    }
    let statuses = docs
        .into_iter()
        .map(|mut doc| {
            let job_id = doc["jobId"].take();
            let mut status = doc["status"].take();
            if let Value::Object(map) = &mut status {
                map.insert("jobId".into(), job_id);
            }
            status
        })
        .collect();
    Ok(Json(Value::Array(statuses)))
}

// ---- one job ----

/// `GET /exec/auditTrail/{jobId}`: HKube spreads the trail's array into the answer
/// (`{jobId, "0": {timestamp, user, action}, …}`, reference Q5). The trail holds the run
/// and, for a stopped job, the stop; pauses and resumes are not recorded yet.
pub async fn audit_trail(State(state): State<ApiState>, Path(job_id): Path<String>) -> Answer {
    let Some((doc, _)) = document(&state, &job_id).await? else {
        return Err(ApiError::NotFound(format!("auditTrail {job_id} Not Found")));
    };
    let mut trail = vec![json!({
        "timestamp": start_time(&doc),
        "user": DEFAULT_USER,
        "action": "run",
    })];
    if doc["status"]["status"] == "stopped" {
        trail.push(json!({
            "timestamp": doc["status"]["timestamp"],
            "user": DEFAULT_USER,
            "action": "stop",
        }));
    }
    let mut answer = Map::new();
    answer.insert("jobId".into(), json!(job_id));
    for (index, entry) in trail.into_iter().enumerate() {
        answer.insert(index.to_string(), entry);
    }
    Ok(Json(Value::Object(answer)))
}

/// `GET /exec/flowInput/{jobId}?download=true`: the job's flowInput; 404 with an empty body
/// when there is none (reference Q6).
pub async fn flow_input(
    State(state): State<ApiState>,
    Path(job_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let flow_input = match document(&state, &job_id).await? {
        Some((_, flow_input)) if !flow_input.is_null() => flow_input,
        _ => return Err(ApiError::NotFoundEmpty),
    };
    let mut response = Json(flow_input).into_response();
    if query.get("download").is_some_and(|d| d == "true") {
        response.headers_mut().insert(
            header::CONTENT_DISPOSITION,
            header::HeaderValue::from_static("attachment;filename=\"flowInput.json\""),
        );
    }
    Ok(response)
}
