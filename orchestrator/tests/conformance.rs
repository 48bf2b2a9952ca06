//! The reference's conformance cases (hkube-spec.md §8), one data file each under
//! `tests/conformance/` at the workspace root, run against the engine with the in-process test
//! algorithms. Time is tokio's paused clock: sleeps and TTLs take no real time.
//!
//! A case is a list of steps (exec, wait, status, results, stop, pause, resume, sleep, ...);
//! each step may expect a value or an error (`{code, message}`, HKube's HTTP code and text).
//! A value is compared as a subset (every expected key must be there and equal, arrays element
//! by element; an expected `null` needs the key, `"<absent>"` asserts there is none, and an
//! expected object without `error` asserts the actual has none). A step that expects an error
//! goes through the REST API's router (in process, no socket), so its HTTP code is the API
//! layer's own, not a mapping made here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request};
use http_body_util::BodyExt;
use orchestrator::api::{self, ApiState};
use orchestrator::engine::{
    submit, Catalog, Engine, Error, ExecRequest, Handle, InProcessExecutor, JobStatus, StopRequest,
};
use orchestrator::spec;
use orchestrator::store::{MemoryStore, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance")
}

/// The engine's answer as a step's outcome; its error is for the failure message only.
fn engine(outcome: Result<Value, Error>) -> Result<Value, Value> {
    outcome.map_err(|error| json!({ "engine error": format!("{error:?}") }))
}

struct Run {
    handle: Handle,
    catalog: Arc<MemoryStore>,
    api: axum::Router,
    vars: HashMap<String, String>,
    case: String,
}

impl Run {
    fn substitute(&self, value: &Value) -> Value {
        match value {
            Value::String(text) if text.contains('$') => {
                let mut text = text.clone();
                for (name, id) in &self.vars {
                    text = text.replace(&format!("${name}"), id);
                }
                Value::String(text)
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| self.substitute(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.substitute(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn job(&self, step: &Value, key: &str) -> String {
        let name = step[key]
            .as_str()
            .unwrap_or_else(|| panic!("{}: step needs \"{key}\"", self.case));
        // `=id` names a job id literally (an unknown job, for the error cases).
        if let Some(literal) = name.strip_prefix('=') {
            return literal.to_string();
        }
        self.vars
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("{}: unknown job variable {name}", self.case))
    }

    /// Checks a step's outcome against its `expect` / `error` fields.
    /// An error is `{code, message}` from the API, or the engine's error (never expected: steps
    /// that expect an error go through the API).
    fn check(&mut self, step: &Value, outcome: Result<Value, Value>) {
        let expected_error = step.get("error").map(|e| self.substitute(e));
        match (outcome, expected_error) {
            (Ok(value), None) => {
                if let Some(expect) = step.get("expect") {
                    let expect = self.substitute(expect);
                    let ordered = !step
                        .get("unordered")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    if let Err(why) = matches(&expect, &value, ordered, "") {
                        panic!(
                            "{}: step {step}\n  mismatch: {why}\n  expected: {expect}\n  actual:   {value}",
                            self.case
                        );
                    }
                }
                if let Some(var) = step.get("as").and_then(Value::as_str) {
                    let id = value
                        .get("jobId")
                        .and_then(Value::as_str)
                        .unwrap_or_else(|| panic!("{}: no jobId in {value}", self.case));
                    self.vars.insert(var.to_string(), id.to_string());
                }
            }
            (Ok(value), Some(error)) => panic!(
                "{}: step {step}\n  expected error {error}, got {value}",
                self.case
            ),
            (Err(actual), None) => {
                panic!("{}: step {step}\n  unexpected error: {actual:?}", self.case)
            }
            (Err(actual), Some(error)) => {
                assert_eq!(actual, error, "{}: step {step}", self.case);
            }
        }
    }

    /// The step as the REST API's request, when it is one: method, path and body.
    fn as_request(&self, step: &Value) -> Option<(&'static str, String, Option<Value>)> {
        let id = |key: &str| self.job(step, key);
        if let Some(kind) = step.get("exec").and_then(Value::as_str) {
            return Some(match kind {
                "rerun" => (
                    "POST",
                    "exec/rerun".into(),
                    Some(json!({"jobId": id("job")})),
                ),
                "caching" => (
                    "POST",
                    "exec/caching".into(),
                    Some(json!({"jobId": id("job"), "nodeName": step["node"]})),
                ),
                other => ("POST", format!("exec/{other}"), Some(step["body"].clone())),
            });
        }
        for (key, route) in [
            ("status", "exec/status"),
            ("results", "exec/results"),
            ("pipeline", "exec/pipelines"),
            ("tree", "exec/tree"),
        ] {
            if step.get(key).is_some() {
                return Some(("GET", format!("{route}/{}", id(key)), None));
            }
        }
        for key in ["pause", "resume"] {
            if step.get(key).is_some() {
                return Some((
                    "POST",
                    format!("exec/{key}"),
                    Some(json!({"jobId": id(key)})),
                ));
            }
        }
        if let Some(body) = step.get("stop") {
            return Some(("POST", "exec/stop".into(), Some(body.clone())));
        }
        if let Some(body) = step.get("storePipeline") {
            return Some(("POST", "store/pipelines".into(), Some(body.clone())));
        }
        if let Some(body) = step.get("applyAlgorithm") {
            return Some(("POST", "store/algorithms".into(), Some(body.clone())));
        }
        None
    }

    /// Sends a request to the API's router; an answer of 400 or more is its `{code, message}`.
    async fn call_api(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let builder = Request::builder()
            .method(method)
            .uri(format!("/api/v1/{path}"));
        let request = match body {
            Some(body) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => builder.body(Body::empty()),
        }
        .expect("a request");
        let response = self
            .api
            .clone()
            .oneshot(request)
            .await
            .expect("the router answers");
        let code = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if code < 400 {
            return Ok(value);
        }
        let message = value["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: {code} without an error message: {value}", self.case))
            .to_string();
        Err(json!({ "code": code, "message": message }))
    }

    async fn step(&mut self, step: &Value) {
        let step = &self.substitute(step);
        let handle = self.handle.clone();
        if step.get("error").is_some() {
            let (method, path, body) = self.as_request(step).unwrap_or_else(|| {
                panic!(
                    "{}: step {step} expects an error but is no API request",
                    self.case
                )
            });
            let outcome = self.call_api(method, &path, body).await;
            self.check(step, outcome);
            return;
        }
        if let Some(kind) = step.get("exec").and_then(Value::as_str) {
            let request = match kind {
                "raw" => ExecRequest::Raw(step["body"].clone()),
                "stored" => ExecRequest::Stored(step["body"].clone()),
                "algorithm" => ExecRequest::Algorithm(step["body"].clone()),
                "rerun" => ExecRequest::Rerun(self.job(step, "job")),
                "caching" => ExecRequest::RunFromNode {
                    job_id: self.job(step, "job"),
                    node_name: step["node"].as_str().unwrap_or_default().to_string(),
                },
                other => panic!("{}: unknown exec kind {other}", self.case),
            };
            let outcome = handle.exec(request).await.map(|id| json!({ "jobId": id }));
            self.check(step, engine(outcome));
        } else if step.get("wait").is_some() {
            let id = self.job(step, "wait");
            let outcome = tokio::time::timeout(Duration::from_secs(100_000), handle.wait(&id))
                .await
                .unwrap_or_else(|_| panic!("{}: job {id} did not end", self.case));
            self.check(step, engine(outcome));
        } else if step.get("status").is_some() {
            let id = self.job(step, "status");
            self.check(step, engine(handle.status(&id).await));
        } else if step.get("pipeline").is_some() {
            let id = self.job(step, "pipeline");
            self.check(step, engine(handle.pipeline(&id).await));
        } else if step.get("results").is_some() {
            let id = self.job(step, "results");
            self.check(step, engine(handle.result(&id).await));
        } else if let Some(request) = step.get("stop") {
            let statuses = request
                .get("statusToStop")
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|s| s.as_str().and_then(JobStatus::parse))
                        .collect()
                });
            let request = StopRequest {
                job_id: request
                    .get("jobId")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                pipeline_name: request
                    .get("pipelineName")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                statuses,
                reason: request
                    .get("reason")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            };
            let outcome = handle
                .stop(request)
                .await
                .map(|ids| json!({ "stoppedJobIds": ids }));
            self.check(step, engine(outcome));
        } else if step.get("pause").is_some() {
            let id = self.job(step, "pause");
            let outcome = handle.pause(&id).await.map(|()| json!({"message": "OK"}));
            self.check(step, engine(outcome));
        } else if step.get("resume").is_some() {
            let id = self.job(step, "resume");
            let outcome = handle.resume(&id).await.map(|()| json!({"message": "OK"}));
            self.check(step, engine(outcome));
        } else if let Some(seconds) = step.get("sleep").and_then(Value::as_f64) {
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        } else if step.get("triggered").is_some() {
            let id = self.job(step, "triggered");
            let mut child = None;
            for _ in 0..100 {
                let tree = handle.tree(&id).await.expect("tree");
                if let Some(first) = tree["children"].get(0) {
                    child = Some(first.clone());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let child = child.unwrap_or_else(|| panic!("{}: {id} triggered nothing", self.case));
            self.check(step, Ok(child));
        } else if step.get("tree").is_some() {
            let id = self.job(step, "tree");
            self.check(step, engine(handle.tree(&id).await));
        } else if let Some(body) = step.get("storePipeline") {
            let outcome =
                submit::validate_for_store(body.clone(), self.catalog.as_ref()).map(|pipeline| {
                    let value = serde_json::to_value(&pipeline).expect("pipeline serializes");
                    // Stored again under the same name: the new definition replaces the old.
                    let _ = self.catalog.delete_pipeline(&pipeline.name);
                    self.catalog.create_pipeline(pipeline).expect("stored");
                    value
                });
            self.check(step, engine(outcome));
        } else if let Some(body) = step.get("applyAlgorithm") {
            let outcome = spec::parse_algorithm(body.clone())
                .map_err(Error::from)
                .map(|algorithm| {
                    let value = serde_json::to_value(&algorithm).expect("algorithm serializes");
                    self.catalog.put_algorithm(algorithm).expect("stored");
                    value
                });
            self.check(step, engine(outcome));
        } else {
            panic!("{}: unknown step {step}", self.case);
        }
    }
}

/// `expected` is a subset of `actual`: objects by key, arrays by length and element (in order,
/// or as a multiset when `ordered` is false, at the top level only).
fn matches(expected: &Value, actual: &Value, ordered: bool, at: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(expected), Value::Object(actual)) => {
            for (key, value) in expected {
                let path = format!("{at}.{key}");
                match (value, actual.get(key)) {
                    // `"key": "<absent>"` asserts the key is not there.
                    (Value::String(marker), None) if marker == "<absent>" => {}
                    (Value::String(marker), Some(found)) if marker == "<absent>" => {
                        return Err(format!("{path}: expected no value, found {found}"))
                    }
                    (_, None) => return Err(format!("{path}: missing")),
                    (value, Some(found)) => matches(value, found, ordered, &path)?,
                }
            }
            // A success is asserted whole: an entry expected without `error` has none.
            match actual.get("error") {
                Some(error) if !error.is_null() && !expected.contains_key("error") => {
                    Err(format!("{at}.error: expected none, found {error}"))
                }
                _ => Ok(()),
            }
        }
        (Value::Array(expected), Value::Array(actual)) => {
            if expected.len() != actual.len() {
                return Err(format!(
                    "{at}: {} items expected, {} found",
                    expected.len(),
                    actual.len()
                ));
            }
            if ordered {
                for (index, (e, a)) in expected.iter().zip(actual).enumerate() {
                    matches(e, a, true, &format!("{at}[{index}]"))?;
                }
                return Ok(());
            }
            let mut used = vec![false; actual.len()];
            for (index, e) in expected.iter().enumerate() {
                let found = actual
                    .iter()
                    .enumerate()
                    .position(|(i, a)| !used[i] && matches(e, a, true, "").is_ok());
                match found {
                    Some(i) => used[i] = true,
                    None => return Err(format!("{at}[{index}]: {e} not found")),
                }
            }
            Ok(())
        }
        (expected, actual) if numbers_equal(expected, actual) => Ok(()),
        (expected, actual) if expected == actual => Ok(()),
        (expected, actual) => Err(format!("{at}: expected {expected}, found {actual}")),
    }
}

fn numbers_equal(a: &Value, b: &Value) -> bool {
    matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y)
}

async fn run_case(path: &Path) {
    let text = std::fs::read_to_string(path).expect("case file readable");
    let case: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let executor = InProcessExecutor::with_test_algorithms();
    let catalog = Arc::new(MemoryStore::new());
    for name in executor.algorithm_names() {
        let algorithm =
            spec::parse_algorithm(json!({"name": name, "algorithmImage": format!("hkube/{name}")}))
                .expect("test algorithm descriptor");
        catalog.put_algorithm(algorithm).expect("stored");
    }
    for extra in case
        .get("algorithms")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let algorithm = spec::parse_algorithm(extra.clone()).expect("case algorithm");
        catalog.put_algorithm(algorithm).expect("stored");
    }
    let handle = Engine::spawn(Arc::new(executor), catalog.clone() as Arc<dyn Catalog>);
    let api = api::router(ApiState {
        engine: handle.clone(),
        store: catalog.clone() as Arc<dyn Store>,
        auth_token: None,
        builds: None,
        deployer: None,
        webhook_secret: None,
        storage_module: "@hkube/fs-adapter",
        storage: None,
        allowed_hosts: Vec::new(),
        cron: None,
        telemetry: orchestrator::telemetry::Telemetry::new(
            std::env::temp_dir().join("hkube-conformance-logs"),
        ),
    });
    let mut run = Run {
        handle,
        catalog,
        api,
        vars: HashMap::new(),
        case: format!(
            "{} ({})",
            case["id"].as_str().unwrap_or("?"),
            path.display()
        ),
    };
    for step in case["steps"].as_array().expect("steps") {
        run.step(step).await;
    }
    run.handle.shutdown().await;
}

/// Each case runs on its own runtime with a paused clock; every failure is reported, not just
/// the first.
#[test]
fn every_conformance_case() {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/conformance exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 40,
        "expected the whole §8 table, found {} cases",
        paths.len()
    );
    let mut failed = Vec::new();
    for path in &paths {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a tokio runtime");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(run_case(path))
        }));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        match outcome {
            Ok(()) => println!("ok   {name}"),
            Err(_) => {
                println!("FAIL {name}");
                failed.push(name);
            }
        }
    }
    println!(
        "conformance: {} passed, {} failed",
        paths.len() - failed.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "failed cases: {failed:?}");
}

/// Every `CC-NN` the reference names has a case file. The reference sits in `../shared` beside
/// the repository (as in CI, where its absence fails the check); elsewhere it is skipped, saying so.
#[test]
fn every_reference_case_has_a_file() {
    let reference =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/hkube-spec.md");
    let Ok(text) = std::fs::read_to_string(&reference) else {
        testkit::skip(None, &format!("{} not found", reference.display()));
        return;
    };
    let mut ids: Vec<String> = text
        .match_indices("CC-")
        .filter_map(|(at, _)| {
            let digits: String = text[at + 3..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            (!digits.is_empty()).then(|| format!("cc{digits}"))
        })
        .collect();
    ids.sort();
    ids.dedup();
    let files: Vec<String> = std::fs::read_dir(cases_dir())
        .expect("tests/conformance exists")
        .filter_map(|entry| {
            entry
                .ok()
                .map(|e| e.file_name().to_string_lossy().to_string())
        })
        .collect();
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !files.iter().any(|f| f.starts_with(&format!("{id}-"))))
        .collect();
    assert!(
        missing.is_empty(),
        "reference cases without a file: {missing:?}"
    );
    println!("{} reference cases, each with a file", ids.len());
}
