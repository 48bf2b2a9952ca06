//! Every route's success and error shapes, against the router in-process (no sockets, no
//! processes): the reference's test algorithms run in the engine's process.

#![allow(clippy::unwrap_used)] // a test may panic on the unexpected

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{router, routes, ApiState, Verb};
use crate::engine::{Catalog, Engine, InProcessExecutor};
use crate::spec;
use crate::store::{MemoryStore, Store};

struct Api {
    app: axum::Router,
}

fn api_with(auth_token: Option<&str>) -> Api {
    Api {
        app: router(state_with(auth_token)),
    }
}

fn state_with(auth_token: Option<&str>) -> ApiState {
    let executor = InProcessExecutor::with_test_algorithms();
    let store = Arc::new(MemoryStore::new());
    for name in executor.algorithm_names() {
        store
            .put_algorithm(
                spec::parse_algorithm(
                    json!({"name": name, "algorithmImage": format!("hkube/{name}")}),
                )
                .unwrap(),
            )
            .unwrap();
    }
    let catalog: Arc<dyn Catalog> = store.clone();
    // Watched as the server's executor is: the task board and logs answer for these jobs.
    let telemetry = crate::telemetry::Telemetry::new(
        std::env::temp_dir().join(format!("hkube-api-tests-{}", std::process::id())),
    );
    let observed = crate::telemetry::Observed::new(Arc::new(executor), telemetry.clone());
    let engine = Engine::spawn(Arc::new(observed), catalog);
    ApiState {
        engine,
        store,
        auth_token: auth_token.map(str::to_string),
        builds: None,
        deployer: None,
        webhook_secret: None,
        storage_module: "@hkube/fs-adapter",
        storage: None,
        allowed_hosts: Vec::new(),
        cron: None,
        telemetry,
    }
}

fn api() -> Api {
    api_with(None)
}

impl Api {
    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, body)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let builder = Request::builder().method(method).uri(path);
        let request = match body {
            Some(body) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => builder.body(Body::empty()),
        };
        self.send(request.unwrap()).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, None).await
    }

    /// Expects success with `status`; returns the body.
    async fn ok(&self, method: &str, path: &str, body: Option<Value>, status: u16) -> Value {
        let (got, answer) = self.call(method, path, body).await;
        assert_eq!(got.as_u16(), status, "{method} {path}: {answer}");
        answer
    }

    /// Expects HKube's error body with this status and message.
    async fn check_error(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        status: u16,
        message: &str,
    ) {
        let (got, answer) = self.call(method, path, body).await;
        assert_eq!(got.as_u16(), status, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], status, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["message"], message, "{method} {path}");
    }

    async fn run(&self, pipeline: Value) -> String {
        let answer = self
            .ok("POST", "/api/v1/exec/raw", Some(pipeline), 200)
            .await;
        answer["jobId"].as_str().unwrap().to_string()
    }

    /// Polls the status until the job has ended; returns the results.
    async fn results(&self, job: &str) -> Value {
        for _ in 0..500 {
            let (_, status) = self.get(&format!("/api/v1/exec/status/{job}")).await;
            if ["completed", "failed", "stopped"].contains(&status["status"].as_str().unwrap_or(""))
            {
                return self
                    .ok("GET", &format!("/api/v1/exec/results/{job}"), None, 200)
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("job {job} did not end");
    }
}

fn sleeper(name: &str) -> Value {
    json!({"name": name, "nodes": [{"nodeName": "A", "algorithmName": "sleep", "input": [600]}]})
}

fn chain() -> Value {
    json!({"name": "cc01", "nodes": [
        {"nodeName": "A", "algorithmName": "first", "input": [5]},
        {"nodeName": "B", "algorithmName": "double", "input": ["@A"]},
    ]})
}

#[tokio::test]
async fn the_roots_answer() {
    let api = api();
    assert_eq!(api.ok("GET", "/api", None, 200).await, json!(["v1"]));
    assert_eq!(
        api.ok("GET", "/api/v1/exec/", None, 200).await,
        json!({"message": "v1 exec api"})
    );
    assert_eq!(
        api.ok("GET", "/api/v1/store/", None, 200).await,
        json!({"message": "v1 store api"})
    );
}

#[tokio::test]
async fn exec_raw_status_results_pipeline_tree() {
    let api = api();
    let job = api.run(chain()).await;
    let result = api.results(&job).await;
    assert_eq!(result["status"], "completed");
    assert_eq!(
        result["data"],
        json!([{"nodeName": "B", "algorithmName": "double", "result": 10}])
    );
    assert_eq!(result["storageModule"], "@hkube/fs-adapter");
    let status = api
        .ok("GET", &format!("/api/v1/exec/status/{job}"), None, 200)
        .await;
    assert_eq!(status["data"]["details"], "100% completed, 2 succeed");
    let pipeline = api
        .ok("GET", &format!("/api/v1/exec/pipelines/{job}"), None, 200)
        .await;
    assert_eq!(pipeline["jobId"], job.as_str());
    assert_eq!(pipeline["options"]["batchTolerance"], 80);
    let tree = api
        .ok("GET", &format!("/api/v1/exec/tree/{job}"), None, 200)
        .await;
    assert_eq!(tree, json!({"jobId": job, "name": "cc01", "children": []}));

    api.check_error(
        "GET",
        "/api/v1/exec/status/nope",
        None,
        404,
        "status nope Not Found",
    )
    .await;
    api.check_error(
        "GET",
        "/api/v1/exec/results/nope",
        None,
        404,
        "status nope Not Found",
    )
    .await;
    api.check_error(
        "GET",
        "/api/v1/exec/pipelines/nope",
        None,
        404,
        "pipeline nope Not Found",
    )
    .await;
    api.check_error(
        "GET",
        "/api/v1/exec/tree/nope",
        None,
        404,
        "tree nope Not Found",
    )
    .await;
}

#[tokio::test]
async fn exec_raw_validation_errors_are_hkubes() {
    let api = api();
    let cases = [
        (
            json!({"name": "c", "nodes": [
                {"nodeName": "A", "algorithmName": "echo", "input": ["@B"]},
                {"nodeName": "B", "algorithmName": "echo", "input": ["@A"]}]}),
            400,
            "cyclic nodes are not allowed on batch pipeline",
        ),
        (
            json!({"name": "x"}),
            400,
            "pipeline must have at least one node",
        ),
        (
            json!({"nodes": [{"nodeName": "A", "algorithmName": "echo"}]}),
            400,
            "data should have required property 'name'",
        ),
        (
            json!({"name": "x", "nodes": [{"nodeName": "A", "algorithmName": "nosuch"}]}),
            404,
            "algorithm nosuch Not Found",
        ),
    ];
    for (body, status, message) in cases {
        api.check_error("POST", "/api/v1/exec/raw", Some(body), status, message)
            .await;
    }
}

#[tokio::test]
async fn malformed_json_unknown_routes_and_wrong_methods() {
    let api = api();
    let request = Request::post("/api/v1/exec/raw")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"name\": "))
        .unwrap();
    let (status, body) = api.send(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("the request body is not valid JSON"),
        "{body}"
    );
    api.check_error(
        "GET",
        "/api/v1/no/such/route",
        None,
        404,
        "Cannot GET /api/v1/no/such/route",
    )
    .await;
    api.check_error("GET", "/elsewhere", None, 404, "Cannot GET /elsewhere")
        .await;
    let response = api
        .app
        .clone()
        .oneshot(
            Request::delete("/api/v1/exec/raw")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()[header::ALLOW], "POST");
    api.check_error(
        "PATCH",
        "/api/v1/store/pipelines",
        None,
        405,
        "Method Not Allowed",
    )
    .await;
}

#[tokio::test]
async fn exec_stored_and_store_pipelines() {
    let api = api();
    let stored = json!({"name": "S", "nodes": [{"nodeName": "A", "algorithmName": "echo", "input": ["@flowInput"]}],
        "flowInput": {"inp": [1, 2, 3]}, "options": {"batchTolerance": 45, "ttl": 85900}});
    let created = api
        .ok("POST", "/api/v1/store/pipelines", Some(stored.clone()), 201)
        .await;
    assert_eq!(created["priority"], 3);
    assert_eq!(created["options"]["batchTolerance"], 45);
    api.check_error(
        "POST",
        "/api/v1/store/pipelines",
        Some(stored.clone()),
        409,
        "pipeline S already exists",
    )
    .await;
    let list = api.ok("GET", "/api/v1/store/pipelines", None, 200).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        api.ok("GET", "/api/v1/store/pipelines/S", None, 200).await,
        created
    );
    api.check_error(
        "GET",
        "/api/v1/store/pipelines/T",
        None,
        404,
        "pipeline T Not Found",
    )
    .await;

    // CC-35: flowInput replaced, options merged.
    let job = api
        .ok(
            "POST",
            "/api/v1/exec/stored",
            Some(json!({"name": "S", "flowInput": {"inp": [[], []]}, "options": {"ttl": 255}})),
            200,
        )
        .await["jobId"]
        .as_str()
        .unwrap()
        .to_string();
    let result = api.results(&job).await;
    assert_eq!(result["data"][0]["result"], json!([{"inp": [[], []]}]));
    let pipeline = api
        .ok("GET", &format!("/api/v1/exec/pipelines/{job}"), None, 200)
        .await;
    assert_eq!(pipeline["options"]["ttl"], 255);
    assert_eq!(pipeline["options"]["batchTolerance"], 45);
    api.check_error(
        "POST",
        "/api/v1/exec/stored",
        Some(json!({"name": "not_found"})),
        404,
        "pipeline not_found Not Found",
    )
    .await;

    // CC-58: stored without the flowInput check, executed with it.
    let lacking = json!({"name": "L", "nodes": [{"nodeName": "A", "algorithmName": "echo", "input": ["#@flowInput.files.links"]}], "flowInput": {}});
    api.ok("POST", "/api/v1/store/pipelines", Some(lacking), 201)
        .await;
    api.check_error(
        "POST",
        "/api/v1/exec/stored",
        Some(json!({"name": "L"})),
        400,
        "unable to find flowInput.files.links",
    )
    .await;
    api.check_error(
        "POST",
        "/api/v1/store/pipelines",
        Some(json!({"name": "B", "nodes": [{"nodeName": "A", "algorithmName": "nosuch"}]})),
        404,
        "algorithm nosuch Not Found",
    )
    .await;

    // Replace, by path and HKube's body-only form.
    let mut changed = stored.clone();
    changed["flowInput"] = json!({"inp": [9]});
    let replaced = api
        .ok(
            "PUT",
            "/api/v1/store/pipelines/S",
            Some(changed.clone()),
            200,
        )
        .await;
    assert_eq!(replaced["flowInput"], json!({"inp": [9]}));
    api.ok("PUT", "/api/v1/store/pipelines", Some(changed.clone()), 200)
        .await;
    api.check_error(
        "PUT",
        "/api/v1/store/pipelines/Other",
        Some(changed),
        400,
        "the pipeline name in the body (\"S\") differs from the one in the path (Other)",
    )
    .await;
    api.check_error(
        "PUT",
        "/api/v1/store/pipelines/Z",
        Some(json!({"nodes": [{"nodeName": "A", "algorithmName": "echo"}]})),
        404,
        "pipeline Z Not Found",
    )
    .await;

    // Delete stops the unfinished stored jobs of the pipeline.
    api.ok(
        "POST",
        "/api/v1/store/pipelines",
        Some(sleeper("Slow")),
        201,
    )
    .await;
    let slow = api
        .ok(
            "POST",
            "/api/v1/exec/stored",
            Some(json!({"name": "Slow"})),
            200,
        )
        .await;
    let answer = api
        .ok("DELETE", "/api/v1/store/pipelines/Slow", None, 200)
        .await;
    assert_eq!(
        answer["message"],
        "pipeline Slow successfully deleted from store, stopped related running pipelines 1/1"
    );
    let result = api.results(slow["jobId"].as_str().unwrap()).await;
    assert_eq!(result["reason"], "pipeline has been deleted");
    let answer = api
        .ok("DELETE", "/api/v1/store/pipelines/S", None, 200)
        .await;
    assert_eq!(
        answer["message"],
        "pipeline S successfully deleted from store"
    );
    api.check_error(
        "DELETE",
        "/api/v1/store/pipelines/S",
        None,
        404,
        "pipeline S Not Found",
    )
    .await;
}

#[tokio::test]
async fn exec_algorithm_rerun_and_caching() {
    let api = api();
    let job = api
        .ok(
            "POST",
            "/api/v1/exec/algorithm",
            Some(json!({"name": "first", "input": [7]})),
            200,
        )
        .await["jobId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(api.results(&job).await["data"][0]["result"], 7);
    api.check_error(
        "POST",
        "/api/v1/exec/algorithm",
        Some(json!({"name": "nosuch"})),
        404,
        "algorithm nosuch Not Found",
    )
    .await;
    api.check_error(
        "POST",
        "/api/v1/exec/algorithm",
        Some(json!({"name": "first", "x": 1})),
        400,
        "data should NOT have additional properties (x)",
    )
    .await;

    // CC-36.
    let job = api
        .run(
            json!({"name": "cc36", "flowInput": {"range": 10}, "nodes": [
            {"nodeName": "one", "algorithmName": "add", "input": ["@flowInput.range", 7]},
            {"nodeName": "two", "algorithmName": "add", "input": ["@one", 12]}]}),
        )
        .await;
    assert_eq!(api.results(&job).await["data"][0]["result"], 29);
    let rerun = api
        .ok(
            "POST",
            "/api/v1/exec/rerun",
            Some(json!({"jobId": job})),
            200,
        )
        .await;
    assert_eq!(
        api.results(rerun["jobId"].as_str().unwrap()).await["data"][0]["result"],
        29
    );
    let cached = api
        .ok(
            "POST",
            "/api/v1/exec/caching",
            Some(json!({"jobId": job, "nodeName": "two"})),
            200,
        )
        .await;
    let result = api.results(cached["jobId"].as_str().unwrap()).await;
    assert_eq!(result["pipeline"], "cc36-two");
    assert_eq!(result["data"][0]["result"], 29);
    api.check_error(
        "POST",
        "/api/v1/exec/rerun",
        Some(json!({"jobId": "nope"})),
        404,
        "jobId nope Not Found",
    )
    .await;
    api.check_error(
        "POST",
        "/api/v1/exec/rerun",
        Some(json!({})),
        400,
        "data should have required property 'jobId'",
    )
    .await;
    api.check_error(
        "POST",
        "/api/v1/exec/caching",
        Some(json!({"jobId": "nope", "nodeName": "two"})),
        400,
        "unable to find pipeline nope",
    )
    .await;
}

#[tokio::test]
async fn stop_pause_resume_and_job_lists() {
    let api = api();
    let job = api.run(sleeper("slow")).await;
    // CC-32: results before completion.
    api.check_error(
        "GET",
        &format!("/api/v1/exec/results/{job}"),
        None,
        400,
        "unable to get results for pipeline slow because its in active status",
    )
    .await;
    // CC-33.
    api.check_error(
        "POST",
        "/api/v1/exec/resume",
        Some(json!({"jobId": job})),
        400,
        "unable to resume pipeline slow because its in active status",
    )
    .await;
    let ok = api
        .ok(
            "POST",
            "/api/v1/exec/pause",
            Some(json!({"jobId": job})),
            200,
        )
        .await;
    assert_eq!(ok, json!({"message": "OK"}));
    let status = api
        .ok("GET", &format!("/api/v1/exec/status/{job}"), None, 200)
        .await;
    assert_eq!(status["status"], "paused");
    assert_eq!(
        api.ok("GET", "/api/v1/exec/jobs", None, 200).await,
        json!([])
    );
    let paused = api
        .ok("GET", "/api/v1/exec/jobs?status=paused", None, 200)
        .await;
    assert_eq!(
        paused,
        json!([{"jobId": job, "status": "paused", "pipelineName": "slow"}])
    );
    api.ok(
        "POST",
        "/api/v1/exec/resume",
        Some(json!({"jobId": job})),
        200,
    )
    .await;
    assert_eq!(
        api.ok("GET", "/api/v1/exec/jobs?raw=true", None, 200).await,
        json!([job])
    );
    let list = api.ok("GET", "/api/v1/exec/pipeline/list", None, 200).await;
    assert_eq!(list[0]["jobId"], job.as_str());
    assert_eq!(list[0]["name"], "slow");
    api.check_error("GET", "/api/v1/exec/jobs?status=sleepy", None, 400,
        "data.status should be one of pending, active, completed, failed, stopped, paused (got sleepy)").await;
    api.check_error(
        "POST",
        "/api/v1/exec/pause",
        Some(json!({"jobId": "nope"})),
        404,
        "jobId nope Not Found",
    )
    .await;

    // CC-31.
    let stopped = api
        .ok(
            "POST",
            "/api/v1/exec/stop",
            Some(json!({"jobId": job})),
            200,
        )
        .await;
    assert_eq!(stopped, json!({"stoppedJobIds": [job]}));
    let result = api.results(&job).await;
    assert_eq!(result["status"], "stopped");
    assert_eq!(result["reason"], "stopped due to request");
    api.check_error(
        "POST",
        "/api/v1/exec/stop",
        Some(json!({"jobId": job})),
        404,
        &format!("No jobs found matching criteria (jobId: {job}, statuses: active,pending,paused)"),
    )
    .await;
    api.check_error(
        "POST",
        "/api/v1/exec/pause",
        Some(json!({"jobId": job})),
        400,
        "unable to pause pipeline slow because its in stopped status",
    )
    .await;
    assert_eq!(
        api.ok("GET", "/api/v1/exec/pipeline/list", None, 200).await,
        json!([])
    );

    // By pipeline name, with a status list and a reason.
    let second = api.run(sleeper("slow")).await;
    let stopped = api
        .ok("POST", "/api/v1/exec/stop", Some(json!({"pipelineName": "slow", "statusToStop": "active,pending", "reason": "enough"})), 200)
        .await;
    assert_eq!(stopped, json!({"stoppedJobIds": [second]}));
    assert_eq!(api.results(&second).await["reason"], "enough");
    api.check_error(
        "POST",
        "/api/v1/exec/stop",
        Some(json!({"statusToStop": ["done"]})),
        400,
        "data.statusToStop should be equal to one of the allowed values (active,pending,paused)",
    )
    .await;
    api.check_error(
        "POST",
        "/api/v1/exec/stop",
        Some(json!({"pipelineName": "slow"})),
        404,
        "No jobs found matching criteria (pipelineName: slow, statuses: active,pending,paused)",
    )
    .await;
}

#[tokio::test]
async fn store_algorithms() {
    let api = api();
    let algorithm = json!({"name": "my-alg", "algorithmImage": "repo/img:1"});
    let created = api
        .ok(
            "POST",
            "/api/v1/store/algorithms",
            Some(algorithm.clone()),
            201,
        )
        .await;
    assert_eq!(created["cpu"], 0.1);
    assert_eq!(created["mem"], "256Mi");
    api.check_error(
        "POST",
        "/api/v1/store/algorithms",
        Some(algorithm),
        409,
        "algorithm my-alg already exists",
    )
    .await;
    api.check_error(
        "POST",
        "/api/v1/store/algorithms",
        Some(json!({"name": "notvalid_name", "algorithmImage": "i"})),
        400,
        "algorithm name must contain only lower-case alphanumeric, dash or dot",
    )
    .await;
    assert_eq!(
        api.ok("GET", "/api/v1/store/algorithms/my-alg", None, 200)
            .await,
        created
    );
    api.check_error(
        "GET",
        "/api/v1/store/algorithms/none",
        None,
        404,
        "algorithm none Not Found",
    )
    .await;
    let all = api.ok("GET", "/api/v1/store/algorithms", None, 200).await;
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == "my-alg"));

    // PUT merges over the stored one; null removes a key.
    let updated = api
        .ok(
            "PUT",
            "/api/v1/store/algorithms/my-alg",
            Some(json!({"cpu": 2, "mem": "1Gi"})),
            200,
        )
        .await;
    assert_eq!(updated["cpu"], 2.0);
    assert_eq!(updated["algorithmImage"], "repo/img:1");
    let updated = api
        .ok(
            "PUT",
            "/api/v1/store/algorithms",
            Some(json!({"name": "my-alg", "mem": null})),
            200,
        )
        .await;
    assert_eq!(updated["mem"], "256Mi");
    // Without forceStopAndApplyVersion the stored (current) definition stays as it was.
    let current = api
        .ok("GET", "/api/v1/store/algorithms/my-alg", None, 200)
        .await;
    assert_eq!(current["cpu"], 0.1);
    assert_eq!(current["version"], created["version"]);
    let updated = api
        .ok(
            "PUT",
            "/api/v1/store/algorithms/my-alg?forceStopAndApplyVersion=true",
            Some(json!({"cpu": 2})),
            200,
        )
        .await;
    let current = api
        .ok("GET", "/api/v1/store/algorithms/my-alg", None, 200)
        .await;
    assert_eq!(current["cpu"], 2.0);
    assert_eq!(current["version"], updated["version"]);
    api.check_error(
        "POST",
        "/api/v1/store/algorithms",
        Some(json!({"name": "no-image"})),
        400,
        "cannot apply algorithm due to missing image url or build data",
    )
    .await;
    api.check_error(
        "PUT",
        "/api/v1/store/algorithms/none",
        Some(json!({"cpu": 1})),
        404,
        "algorithm none Not Found",
    )
    .await;

    // Delete is refused while a stored pipeline uses it, unless forced.
    api.ok(
        "POST",
        "/api/v1/store/pipelines",
        Some(json!({"name": "uses", "nodes": [{"nodeName": "A", "algorithmName": "my-alg"}]})),
        201,
    )
    .await;
    api.check_error("DELETE", "/api/v1/store/algorithms/my-alg", None, 400,
        "algorithm my-alg is stored in 1 pipelines (uses), 0 executions (). you must first delete all related data or use the force flag").await;
    let answer = api
        .ok(
            "DELETE",
            "/api/v1/store/algorithms/my-alg?force=true",
            None,
            200,
        )
        .await;
    assert_eq!(answer["message"], "algorithm my-alg successfully deleted from store. related data deleted: 1 pipelines, 0 executions stopped");
    api.check_error(
        "GET",
        "/api/v1/store/pipelines/uses",
        None,
        404,
        "pipeline uses Not Found",
    )
    .await;
    api.check_error(
        "DELETE",
        "/api/v1/store/algorithms/my-alg",
        None,
        404,
        "algorithm my-alg Not Found",
    )
    .await;
}

/// A form field: name, file name, content.
type Field<'a> = (&'a str, Option<&'a str>, &'a str);

fn multipart(fields: &[Field]) -> Request<Body> {
    let boundary = "hkube-test-boundary";
    let mut body = String::new();
    for (name, filename, content) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\""
        ));
        if let Some(filename) = filename {
            body.push_str(&format!("; filename=\"{filename}\""));
        }
        body.push_str(&format!("\r\n\r\n{content}\r\n"));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    Request::post("/api/v1/store/algorithms/apply")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn apply_algorithms() {
    let api = api();
    let (status, body) = api
        .send(multipart(&[
            (
                "payload",
                None,
                r#"{"name":"m-alg","algorithmImage":"img","mem":"512Mi"}"#,
            ),
            ("file", Some("code.zip"), ""),
        ]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["messages"],
        json!([
            "a new version of algorithm m-alg has been created",
            "the algorithm m-alg has been successfully pushed to hkube"
        ])
    );
    assert_eq!(body["messagesCode"], json!([1024, 1023]));
    assert_eq!(body["algorithm"]["mem"], "512Mi");

    // An existing algorithm gets a new version; the current one changes only with forceUpdate.
    let (_, body) = api
        .send(multipart(&[(
            "payload",
            None,
            r#"{"name":"m-alg","cpu":3}"#,
        )]))
        .await;
    assert_eq!(body["messagesCode"], json!([1024]));
    assert_eq!(
        api.ok("GET", "/api/v1/store/algorithms/m-alg", None, 200)
            .await["cpu"],
        0.1
    );
    let (_, body) = api
        .send(multipart(&[
            ("payload", None, r#"{"name":"m-alg","cpu":3}"#),
            ("options", None, r#"{"forceUpdate":true}"#),
        ]))
        .await;
    assert_eq!(body["messagesCode"], json!([1024, 1023]));
    assert_eq!(
        api.ok("GET", "/api/v1/store/algorithms/m-alg", None, 200)
            .await["cpu"],
        3.0
    );
    // No change: no version, nothing to say.
    let (_, body) = api
        .send(multipart(&[(
            "payload",
            None,
            r#"{"name":"m-alg","cpu":3}"#,
        )]))
        .await;
    assert_eq!(body["messagesCode"], json!([]));
    let versions = api
        .ok("GET", "/api/v1/versions/algorithms/m-alg", None, 200)
        .await;
    assert_eq!(versions.as_array().unwrap().len(), 3);

    // A JSON body with the same fields works too (hkubectl sync).
    let body = api
        .ok(
            "POST",
            "/api/v1/store/algorithms/apply",
            Some(json!({"payload": "{\"name\":\"j-alg\",\"algorithmImage\":\"img\"}"})),
            200,
        )
        .await;
    assert_eq!(body["algorithm"]["name"], "j-alg");

    let errors: [(&[Field], &str); 6] = [
        (
            &[(
                "payload",
                None,
                r#"{"name":"m2","algorithmImage":"img","mem":"3900Ki"}"#,
            )],
            "memory must be at least 4 Mi",
        ),
        (
            &[(
                "payload",
                None,
                r#"{"name":"notvalid_name","algorithmImage":"img"}"#,
            )],
            "algorithm name must contain only lower-case alphanumeric, dash or dot",
        ),
        (
            &[("payload", None, r#"{"algorithmImage":"img"}"#)],
            "algorithm should have required property \"name\"",
        ),
        (
            &[("payload", None, r#"{"name":"no-image"}"#)],
            "cannot apply algorithm due to missing image url or build data",
        ),
        (
            &[
                ("payload", None, r#"{"name":"m3"}"#),
                ("file", Some("code.zip"), "PK\u{3}\u{4}"),
            ],
            "this server builds no code: start it with --executor docker (a container engine builds the image), or give algorithmImage",
        ),
        (
            &[("options", None, "{}")],
            "data should have required property 'payload'",
        ),
    ];
    for (fields, message) in errors {
        let (status, body) = api.send(multipart(fields)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["message"], message);
    }
}

#[tokio::test]
async fn auth_needs_the_bearer_token() {
    let api = api_with(Some("s3cret"));
    let (status, body) = api.get("/api").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"error": "Unauthorized"}));
    let wrong = Request::get("/api/v1/store/pipelines")
        .header(header::AUTHORIZATION, "Bearer nope")
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.send(wrong).await.0, StatusCode::UNAUTHORIZED);
    let (status, _) = api.get("/api/v1/no/such").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "unknown /api paths reveal nothing"
    );
    let right = Request::get("/api/v1/store/pipelines")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.send(right).await, (StatusCode::OK, json!([])));
}

/// Every route of the table answers something other than the unknown-route 404, and the
/// OpenAPI document lists exactly the table's routes.
#[tokio::test]
async fn every_route_in_the_table_is_served_and_documented() {
    let api = api();
    let document = api.ok("GET", "/api/v1/openapi.json", None, 200).await;
    assert_eq!(document["openapi"], "3.0.3");
    let mut documented = 0;
    for (_, operations) in document["paths"].as_object().unwrap() {
        documented += operations.as_object().unwrap().len();
    }
    let table = routes();
    assert_eq!(documented, table.len());
    for route in &table {
        let path = route
            .path
            .replace("{*path}", "nope/x")
            .replace("{jobId}", "nope")
            .replace("{name}", "nope")
            .replace("{version}", "nope")
            .replace("{buildId}", "nope");
        let body = (route.verb != Verb::Get && route.verb != Verb::Delete).then(|| json!({}));
        let method = route.verb.as_str().to_uppercase();
        if route.path == "/api/v1/events/jobs" {
            // An endless event stream: its answer begins, and is not read to an end.
            let request = Request::get(&path).body(Body::empty()).unwrap();
            let response = api.app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            continue;
        }
        let (status, answer) = api.call(&method, &path, body).await;
        let fell_through = status == StatusCode::NOT_FOUND
            && answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Cannot "));
        assert!(
            !fell_through,
            "{method} {path} is in the table but not served"
        );
        assert!(
            document["paths"][route.path.replace("{*", "{")][route.verb.as_str()].is_object(),
            "{method} {} is not documented",
            route.path
        );
    }
}

#[tokio::test]
async fn algorithm_versions_and_rollback() {
    let api = api();
    let created = api
        .ok(
            "POST",
            "/api/v1/store/algorithms",
            Some(json!({"name": "ver-alg", "algorithmImage": "repo/img:1"})),
            201,
        )
        .await;
    let first = created["version"].as_str().unwrap().to_string();
    assert_eq!(first.len(), 10);
    assert!(first
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
    let changed = api
        .ok(
            "PUT",
            "/api/v1/store/algorithms",
            Some(json!({"name": "ver-alg", "algorithmImage": "repo/img:2"})),
            200,
        )
        .await;
    let second = changed["version"].as_str().unwrap().to_string();
    assert_ne!(first, second);

    let versions = api
        .ok("GET", "/api/v1/versions/algorithms/ver-alg", None, 200)
        .await;
    let list = versions.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["version"], second.as_str(), "newest first");
    assert_eq!(list[0]["semver"], "1.0.1");
    assert_eq!(list[0]["versionAlias"], "v1.0.1");
    assert_eq!(list[1]["semver"], "1.0.0");
    assert_eq!(list[1]["name"], "ver-alg");
    assert_eq!(list[1]["createdBy"], "defaultUser");
    assert!(list[1]["created"].as_u64().unwrap() > 0);
    assert_eq!(list[0]["algorithm"]["algorithmImage"], "repo/img:2");
    assert_eq!(list[0]["algorithm"]["version"], second.as_str());
    let one = api
        .ok(
            "GET",
            &format!("/api/v1/versions/algorithms/ver-alg/{first}"),
            None,
            200,
        )
        .await;
    assert_eq!(one, list[1]);
    for (path, message) in [
        (
            "/api/v1/versions/algorithms/none/x",
            "algorithm none Not Found",
        ),
        (
            "/api/v1/versions/algorithms/ver-alg/nope",
            "version nope Not Found",
        ),
    ] {
        api.check_error("GET", path, None, 404, message).await;
    }
    api.check_error(
        "GET",
        "/api/v1/versions/algorithms/Bad_Name",
        None,
        400,
        "algorithm name must contain only lower-case alphanumeric, dash or dot",
    )
    .await;

    // Apply the second version (the current is still the first), then roll back.
    let applied = api
        .ok(
            "POST",
            "/api/v1/versions/algorithms/apply",
            Some(json!({"name": "ver-alg", "version": second})),
            201,
        )
        .await;
    assert_eq!(applied["semver"], "1.0.1");
    let current = api
        .ok("GET", "/api/v1/store/algorithms/ver-alg", None, 200)
        .await;
    assert_eq!(current["algorithmImage"], "repo/img:2");
    assert_eq!(current["version"], second.as_str());
    api.ok(
        "POST",
        "/api/v1/versions/algorithms/apply",
        Some(json!({"name": "ver-alg", "version": first})),
        201,
    )
    .await;
    let current = api
        .ok("GET", "/api/v1/store/algorithms/ver-alg", None, 200)
        .await;
    assert_eq!(current["algorithmImage"], "repo/img:1");
    api.check_error(
        "POST",
        "/api/v1/versions/algorithms/apply",
        Some(json!({"name": "ver-alg"})),
        400,
        "data should have required property 'version'",
    )
    .await;
    api.check_error(
        "POST",
        "/api/v1/versions/algorithms/apply",
        Some(json!({"name": "ver-alg", "version": "nope"})),
        404,
        "version nope Not Found",
    )
    .await;

    // Delete: never the current one.
    api.check_error(
        "DELETE",
        &format!("/api/v1/versions/algorithms/ver-alg/{first}"),
        None,
        400,
        "unable to remove the currently used version",
    )
    .await;
    let deleted = api
        .ok(
            "DELETE",
            &format!("/api/v1/versions/algorithms/ver-alg/{second}"),
            None,
            200,
        )
        .await;
    assert_eq!(deleted, json!({"deleted": 1}));
    api.check_error(
        "DELETE",
        &format!("/api/v1/versions/algorithms/ver-alg/{second}"),
        None,
        404,
        &format!("version {second} Not Found"),
    )
    .await;
    api.check_error(
        "DELETE",
        "/api/v1/versions/algorithms/none/x",
        None,
        404,
        "algorithm none Not Found",
    )
    .await;

    // Applying is refused while unfinished jobs run the algorithm, unless forced.
    let sleep_version = api
        .ok(
            "PUT",
            "/api/v1/store/algorithms",
            Some(json!({"name": "sleep", "cpu": 0.5})),
            200,
        )
        .await["version"]
        .as_str()
        .unwrap()
        .to_string();
    let apply = json!({"name": "sleep", "version": sleep_version});
    let one = api.run(sleeper("s1")).await;
    let (status, body) = api
        .call(
            "POST",
            "/api/v1/versions/algorithms/apply",
            Some(apply.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"]["message"],
        "there is a running pipeline which depends on \"sleep\" algorithm"
    );
    assert_eq!(body["error"]["details"], json!([one]));
    let two = api.run(sleeper("s2")).await;
    let (_, body) = api
        .call(
            "POST",
            "/api/v1/versions/algorithms/apply",
            Some(apply.clone()),
        )
        .await;
    assert_eq!(
        body["error"]["message"],
        "there are 2 running pipelines which depend on \"sleep\" algorithm"
    );
    assert_eq!(body["error"]["details"], json!([one, two]));
    let mut forced = apply;
    forced["force"] = json!(true);
    api.ok(
        "POST",
        "/api/v1/versions/algorithms/apply",
        Some(forced),
        201,
    )
    .await;
    api.ok(
        "POST",
        "/api/v1/exec/stop",
        Some(json!({"pipelineName": "s1"})),
        200,
    )
    .await;
    api.ok(
        "POST",
        "/api/v1/exec/stop",
        Some(json!({"pipelineName": "s2"})),
        200,
    )
    .await;
}

#[tokio::test]
async fn builds_say_that_none_exist() {
    let api = api();
    api.check_error(
        "GET",
        "/api/v1/builds/status/alg-abc123",
        None,
        404,
        "build alg-abc123 Not Found",
    )
    .await;
    assert_eq!(
        api.ok(
            "GET",
            "/api/v1/builds/list/sleep?sort=asc&limit=3",
            None,
            200
        )
        .await,
        json!([])
    );
    for (path, message) in [
        (
            "/api/v1/builds/list/sleep?sort=up",
            "data.sort should be equal to one of the allowed values (asc,desc)",
        ),
        (
            "/api/v1/builds/list/sleep?limit=0",
            "data.limit should be >= 1",
        ),
        (
            "/api/v1/builds/list/sleep?limit=x",
            "data.limit should be integer",
        ),
    ] {
        api.check_error("GET", path, None, 400, message).await;
    }
    for path in ["/api/v1/builds/stop", "/api/v1/builds/rerun"] {
        api.check_error(
            "POST",
            path,
            Some(json!({"buildId": "alg-abc123"})),
            404,
            "build alg-abc123 Not Found",
        )
        .await;
        api.check_error(
            "POST",
            path,
            Some(json!({})),
            400,
            "data should have required property 'buildId'",
        )
        .await;
    }
}

#[tokio::test]
async fn job_search_pipeline_queries_audit_trail_and_flow_input() {
    let api = api();
    let mut tagged = chain();
    tagged["tags"] = json!(["t1", "t2"]);
    tagged["flowInput"] = json!({"x": [1, 2]});
    let first = api.run(tagged).await;
    api.results(&first).await;
    let second = api.run(chain()).await;
    api.results(&second).await;
    let running = api.run(sleeper("long")).await;

    let search = api
        .ok("GET", "/api/v1/exec/search?pipelineName=cc01", None, 200)
        .await;
    let hits = search["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0]["jobId"], second.as_str(), "newest first");
    assert_eq!(hits[1]["pipeline"]["name"], "cc01");
    assert_eq!(hits[1]["pipeline"]["experimentName"], "main");
    assert_eq!(hits[1]["pipeline"]["types"], json!(["raw"]));
    assert!(hits[1]["pipeline"]["startTime"].as_u64().unwrap() > 0);
    assert!(hits[1]["pipeline"].get("flowInput").is_none());
    assert_eq!(hits[1]["status"]["status"], "completed");
    assert_eq!(hits[1]["result"]["data"][0]["result"], 10);
    assert!(search["timeTook"].as_str().unwrap().ends_with("ms"));
    let cursor = search["cursor"].as_str().unwrap();
    assert!(cursor.ends_with(&first));

    // A jobId matches too; filters combine.
    let by_id = api
        .ok(
            "GET",
            &format!("/api/v1/exec/search?pipelineName={first}"),
            None,
            200,
        )
        .await;
    assert_eq!(by_id["hits"].as_array().unwrap().len(), 1);
    let cases = [
        ("tags=t1,t2", vec![first.as_str()]),
        ("tags=t1,t3", vec![]),
        (
            "pipelineStatus=active&algorithmName=sleep",
            vec![running.as_str()],
        ),
        (
            "algorithmName=double&sort=asc",
            vec![first.as_str(), second.as_str()],
        ),
        ("pipelineType=raw&limit=1", vec![running.as_str()]),
        ("exists=result:false", vec![running.as_str()]),
        ("experimentName=other", vec![]),
        ("from=9999999999999", vec![]),
        ("to=2000-01-01T00:00:00Z", vec![]),
        ("from=2000-01-01&pipelineName=long", vec![running.as_str()]),
    ];
    for (query, expected) in cases {
        let answer = api
            .ok("GET", &format!("/api/v1/exec/search?{query}"), None, 200)
            .await;
        let ids: Vec<&str> = answer["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|hit| hit["jobId"].as_str().unwrap())
            .collect();
        assert_eq!(ids, expected, "{query}");
    }
    // Paging by cursor, and projection.
    let page = api
        .ok(
            "GET",
            "/api/v1/exec/search?pipelineName=cc01&limit=1",
            None,
            200,
        )
        .await;
    assert_eq!(page["hits"][0]["jobId"], second.as_str());
    let next = api
        .ok(
            "GET",
            &format!(
                "/api/v1/exec/search?pipelineName=cc01&limit=1&cursor={}",
                page["cursor"].as_str().unwrap()
            ),
            None,
            200,
        )
        .await;
    assert_eq!(next["hits"][0]["jobId"], first.as_str());
    let projected = api
        .ok(
            "GET",
            &format!(
                "/api/v1/exec/search?pipelineName={first}&fields=jobId:true,status.status:true"
            ),
            None,
            200,
        )
        .await;
    assert_eq!(
        projected["hits"],
        json!([{"jobId": first, "status": {"status": "completed"}}])
    );
    let posted = api
        .ok(
            "POST",
            "/api/v1/exec/search",
            Some(json!({
                "query": {"pipelineName": "cc01", "datesRange": {"from": 1}},
                "sort": "asc", "limit": 5, "fields": {"jobId": true},
            })),
            200,
        )
        .await;
    assert_eq!(posted["hits"], json!([{"jobId": first}, {"jobId": second}]));
    for (query, message) in [
        ("limit=101", "data.limit should be <= 100"),
        ("limit=-1", "data.limit should be >= 0"),
        ("limit=x", "data.limit should be integer"),
        ("cursor=not-a%20cursor", "please provide a valid cursor"),
        (
            "sort=up",
            "data.sort should be equal to one of the allowed values (asc,desc)",
        ),
    ] {
        api.check_error(
            "GET",
            &format!("/api/v1/exec/search?{query}"),
            None,
            400,
            message,
        )
        .await;
    }
    api.check_error(
        "POST",
        "/api/v1/exec/search",
        Some(json!({"limit": 500})),
        400,
        "data.limit should be <= 100",
    )
    .await;

    // /pipelines/results and /pipelines/status: newest first, one unless asked (Q13).
    let results = api
        .ok("GET", "/api/v1/pipelines/results?name=cc01", None, 200)
        .await;
    assert_eq!(results.as_array().unwrap().len(), 1);
    assert_eq!(results[0]["jobId"], second.as_str());
    assert_eq!(results[0]["data"][0]["result"], 10);
    assert_eq!(results[0]["storageModule"], "@hkube/fs-adapter");
    let results = api
        .ok(
            "GET",
            "/api/v1/pipelines/results?name=cc01&sort=asc&limit=5",
            None,
            200,
        )
        .await;
    assert_eq!(results[0]["jobId"], first.as_str());
    assert_eq!(results.as_array().unwrap().len(), 2);
    let statuses = api
        .ok("GET", "/api/v1/pipelines/status?name=long", None, 200)
        .await;
    assert_eq!(statuses[0]["jobId"], running.as_str());
    assert_eq!(statuses[0]["status"], "active");
    api.check_error(
        "GET",
        "/api/v1/pipelines/results?name=long",
        None,
        404,
        "pipeline results long Not Found",
    )
    .await;
    api.check_error(
        "GET",
        "/api/v1/pipelines/status?name=cc01&experimentName=other",
        None,
        404,
        "pipeline status cc01 Not Found",
    )
    .await;
    for (query, message) in [
        ("name=cc01&limit=0", "data.limit should be >= 1"),
        ("name=cc01&limit=x", "data.limit should be integer"),
        (
            "name=cc01&sort=up",
            "data.sort should be equal to one of the allowed values (asc,desc)",
        ),
        ("", "data should have required property 'name'"),
    ] {
        api.check_error(
            "GET",
            &format!("/api/v1/pipelines/results?{query}"),
            None,
            400,
            message,
        )
        .await;
    }

    // The audit trail, spread into the answer (Q5).
    let trail = api
        .ok(
            "GET",
            &format!("/api/v1/exec/auditTrail/{first}"),
            None,
            200,
        )
        .await;
    assert_eq!(trail["jobId"], first.as_str());
    assert_eq!(trail["0"]["action"], "run");
    assert_eq!(trail["0"]["user"], "defaultUser");
    assert_eq!(trail["0"]["timestamp"], hits[1]["pipeline"]["startTime"]);
    api.ok(
        "POST",
        "/api/v1/exec/stop",
        Some(json!({"jobId": running})),
        200,
    )
    .await;
    let trail = api
        .ok(
            "GET",
            &format!("/api/v1/exec/auditTrail/{running}"),
            None,
            200,
        )
        .await;
    assert_eq!(trail["1"]["action"], "stop");
    api.check_error(
        "GET",
        "/api/v1/exec/auditTrail/nope",
        None,
        404,
        "auditTrail nope Not Found",
    )
    .await;

    // flowInput: the job's; a download names the file; 404 has no body (Q6).
    assert_eq!(
        api.ok("GET", &format!("/api/v1/exec/flowInput/{first}"), None, 200)
            .await,
        json!({"x": [1, 2]})
    );
    let download = Request::get(format!("/api/v1/exec/flowInput/{first}?download=true"))
        .body(Body::empty())
        .unwrap();
    let response = api.app.clone().oneshot(download).await.unwrap();
    assert_eq!(
        response.headers()[header::CONTENT_DISPOSITION],
        "attachment;filename=\"flowInput.json\""
    );
    for job in [second.as_str(), "nope"] {
        let request = Request::get(format!("/api/v1/exec/flowInput/{job}"))
            .body(Body::empty())
            .unwrap();
        let response = api.app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert!(bytes.is_empty(), "{job}: {bytes:?}");
    }
}

/// Trigger cycles are refused when a pipeline is stored or replaced, naming the cycle in the
/// direction jobs would start (issue 15, item 3): before, a ping ↔ pong pair made 12,600 jobs
/// in 5 s.
#[tokio::test]
async fn storing_refuses_a_trigger_cycle_and_names_it() {
    let api = api();
    let nodes = json!([{"nodeName": "A", "algorithmName": "echo", "input": [1]}]);
    let stored = |name: &str, triggers: Value| json!({"name": name, "nodes": nodes.clone(), "triggers": {"pipelines": triggers}});
    let store = "/api/v1/store/pipelines";
    let cycle = |path: &str| {
        format!(
            "pipeline triggers form a cycle: {path}; each job would start the next without end. \
             Remove one of these pipelines from the triggers.pipelines of the next"
        )
    };
    api.ok("POST", store, Some(stored("ping", json!(["pong"]))), 201)
        .await;
    api.check_error(
        "POST",
        store,
        Some(stored("pong", json!(["ping"]))),
        400,
        &cycle("pong → ping → pong"),
    )
    .await;
    api.check_error(
        "GET",
        "/api/v1/store/pipelines/pong",
        None,
        404,
        "pipeline pong Not Found",
    )
    .await;
    api.check_error(
        "POST",
        store,
        Some(stored("self", json!(["self"]))),
        400,
        &cycle("self → self"),
    )
    .await;
    // A longer cycle: x runs after ping, and pong after x, closes pong → ping → x → pong.
    api.ok("POST", store, Some(stored("x", json!(["ping"]))), 201)
        .await;
    api.check_error(
        "POST",
        store,
        Some(stored("pong", json!(["x"]))),
        400,
        &cycle("pong → ping → x → pong"),
    )
    .await;
    // Without the cycle, the same chain is stored.
    api.ok("POST", store, Some(stored("pong", json!([]))), 201)
        .await;
}

/// A chain without a cycle is stored; a replacement that would close one is refused and the
/// stored pipeline stays as it was.
#[tokio::test]
async fn replacing_a_pipeline_cannot_close_a_trigger_cycle() {
    let api = api();
    let nodes = json!([{"nodeName": "A", "algorithmName": "echo", "input": [1]}]);
    let store = "/api/v1/store/pipelines";
    api.ok(
        "POST",
        store,
        Some(json!({"name": "a", "nodes": nodes})),
        201,
    )
    .await;
    let b = json!({"name": "b", "nodes": nodes, "triggers": {"pipelines": ["a"]}});
    api.ok("POST", store, Some(b), 201).await;
    let c = json!({"name": "c", "nodes": nodes, "triggers": {"pipelines": ["b"]}});
    api.ok("POST", store, Some(c), 201).await;
    let closing = json!({"name": "a", "nodes": nodes, "triggers": {"pipelines": ["c"]}});
    let (status, answer) = api.call("PUT", store, Some(closing.clone())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("pipeline triggers form a cycle: a → b → c → a;"),
        "{answer}"
    );
    let (status, _) = api
        .call("PUT", "/api/v1/store/pipelines/a", Some(closing))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, kept) = api.get("/api/v1/store/pipelines/a").await;
    assert!(kept.get("triggers").is_none(), "{kept}");
}

/// What HKube's schema accepts but hkube does not do is refused when stored and when run,
/// never accepted and ignored (issue 17, item 8); a cron pattern the scheduler's parser
/// refuses is refused with its reason; a disabled cron trigger may be stored.
#[tokio::test]
async fn features_hkube_does_not_implement_are_refused() {
    let api = api();
    let with = |patch: Value| {
        let mut pipeline = json!({"name": "p", "nodes": [{"nodeName": "A", "algorithmName": "echo", "input": [1]}]});
        for (key, value) in patch.as_object().unwrap() {
            pipeline[key] = value.clone();
        }
        pipeline
    };
    let cron = "triggers.cron.pattern \"61 * * * *\" is not a valid cron pattern: the minute \
                field (61): Component error: Number out of bounds. Use 5 fields (minute hour \
                day-of-month month day-of-week, as \"*/5 * * * *\") or 6 with seconds first \
                (as \"30 */5 * * * *\")";
    let tensorboard = "node \"A\": metrics.tensorboard is not supported by hkube yet (no metrics \
                       would be collected); remove metrics or set tensorboard to false";
    let cases = [
        (
            json!({"triggers": {"cron": {"pattern": "61 * * * *", "enabled": true}}}),
            cron,
        ),
        (
            json!({"nodes": [{"nodeName": "A", "algorithmName": "echo", "metrics": {"tensorboard": true}}]}),
            tensorboard,
        ),
    ];
    for (patch, message) in cases {
        for path in ["/api/v1/store/pipelines", "/api/v1/exec/raw"] {
            api.check_error("POST", path, Some(with(patch.clone())), 400, message)
                .await;
        }
    }
    let disabled = with(json!({"triggers": {"cron": {"pattern": "0 * * * *"}}}));
    let stored = api
        .ok("POST", "/api/v1/store/pipelines", Some(disabled), 201)
        .await;
    assert_eq!(stored["triggers"]["cron"]["enabled"], false);
}

/// hkube's limits are checked when a pipeline is submitted or stored, with a 400 that names
/// the limit (issue 15, item 9), not when the job already runs.
#[tokio::test]
async fn limits_are_checked_at_submission() {
    let api = api();
    let ten_thousand: Vec<u32> = (0..10_000).collect();
    let cartesian = json!({
        "name": "big",
        "flowInput": {"x": ten_thousand, "y": ten_thousand},
        "nodes": [{"nodeName": "A", "algorithmName": "echo", "batchOperation": "cartesian",
                   "input": ["#@flowInput.x", "#@flowInput.y"]}]
    });
    api.check_error(
        "POST",
        "/api/v1/exec/raw",
        Some(cartesian),
        400,
        "node \"A\" would run 100000000 tasks (the cartesian product of 10000 × 10000), more \
         than the limit of 50000000; use batchOperation \"indexed\" or smaller batch inputs",
    )
    .await;
    let name = "p".repeat(10 << 20);
    let long_name = json!({"name": name, "nodes": [{"nodeName": "A", "algorithmName": "echo"}]});
    for path in ["/api/v1/store/pipelines", "/api/v1/exec/raw"] {
        api.check_error(
            "POST",
            path,
            Some(long_name.clone()),
            400,
            "data.name should NOT be longer than 128 characters",
        )
        .await;
    }
    // A batch that fits is accepted and runs.
    let small = json!({
        "name": "small",
        "flowInput": {"x": [1, 2, 3], "y": [4, 5]},
        "nodes": [{"nodeName": "A", "algorithmName": "echo", "batchOperation": "cartesian",
                   "input": ["#@flowInput.x", "#@flowInput.y"]}]
    });
    let job = api.run(small).await;
    let results = api.results(&job).await;
    assert_eq!(results["status"], "completed", "{results}");
    assert_eq!(results["data"].as_array().map(Vec::len), Some(6));
}

// ---- hkubectl 1.1.99's requests, as its source sends them (kube-HPC/hkubectl:
// commands/exec/{raw,stored,algorithm,stop}.js, store/pipelines/get.js, utils/importUtils.js,
// store/algorithms/{applyImpl,version}.js, builders/config.js) ----

#[tokio::test]
async fn a_trailing_slash_reaches_every_route() {
    let api = api();
    // `exec raw`: POST exec/raw/, then GET exec/status/<id> and exec/results/<id>.
    let answer = api
        .ok("POST", "/api/v1/exec/raw/", Some(chain()), 200)
        .await;
    let job = answer["jobId"].as_str().unwrap().to_string();
    assert_eq!(api.results(&job).await["status"], "completed");
    let status = api
        .ok("GET", &format!("/api/v1/exec/status/{job}/"), None, 200)
        .await;
    assert_eq!(status["status"], "completed");
    // `pipeline store`, then `pipeline get` without a name: GET store/pipelines/.
    let pipeline = json!({"name": "slashed", "nodes": [{"nodeName": "A", "algorithmName": "double", "input": ["@flowInput.x"]}], "flowInput": {"x": 4}});
    api.ok("POST", "/api/v1/store/pipelines/", Some(pipeline), 201)
        .await;
    let listed = api.ok("GET", "/api/v1/store/pipelines/", None, 200).await;
    assert_eq!(listed[0]["name"], "slashed", "{listed}");
    let listed = api
        .ok("GET", "/api/v1/store/pipelines/?sort=asc", None, 200)
        .await;
    assert_eq!(listed[0]["name"], "slashed", "{listed}");
    // `exec stored <name>`: POST exec/stored/ {name, ...file}.
    let answer = api
        .ok(
            "POST",
            "/api/v1/exec/stored/",
            Some(json!({"name": "slashed"})),
            200,
        )
        .await;
    let result = api.results(answer["jobId"].as_str().unwrap()).await;
    assert_eq!(result["data"][0]["result"], 8);
    // `exec algorithm <name>`: POST exec/algorithm/ {name, input}.
    let answer = api
        .ok(
            "POST",
            "/api/v1/exec/algorithm/",
            Some(json!({"name": "double", "input": [21]})),
            200,
        )
        .await;
    let result = api.results(answer["jobId"].as_str().unwrap()).await;
    assert_eq!(result["data"][0]["result"], 42);
    // `exec stop <jobId>`: POST exec/stop/ {jobId} (reason undefined, so absent).
    let slow = api.run(sleeper("slow")).await;
    let stopped = api
        .ok(
            "POST",
            "/api/v1/exec/stop/",
            Some(json!({"jobId": slow})),
            200,
        )
        .await;
    assert_eq!(stopped["stoppedJobIds"], json!([slow]));
    // Roots and unknown paths: the slash changes nothing.
    assert_eq!(
        api.ok("GET", "/api/v1/exec/", None, 200).await,
        json!({"message": "v1 exec api"})
    );
    api.check_error("GET", "/api/v1/nope/", None, 404, "Cannot GET /api/v1/nope")
        .await;
}

#[tokio::test]
async fn json_routes_refuse_other_content_types_with_415() {
    let api = api();
    let send = |content_type: Option<&'static str>, body: String| {
        let mut request = Request::post("/api/v1/exec/raw");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        request.body(Body::from(body)).unwrap()
    };
    // What a web page can send to any site without asking it first: a form, text, no type.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let (status, body) = api.send(send(content_type, chain().to_string())).await;
        assert_eq!(status.as_u16(), 415, "{content_type:?}: {body}");
        assert_eq!(body["error"]["code"], 415, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Content-Type: application/json"),
            "{body}"
        );
    }
    let (status, body) = api
        .send(send(
            Some("Application/JSON; charset=utf-8"),
            chain().to_string(),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // No body at all is Express's `{}`: the route's own validation answers.
    api.check_error(
        "POST",
        "/api/v1/exec/pause",
        None,
        400,
        "data should have required property 'jobId'",
    )
    .await;
}

/// A request as a browser sends it: with `Host` and maybe `Origin`.
fn from_browser(path: &str, host: &str, origin: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path).header(header::HOST, host);
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    request.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn cross_site_requests_are_refused_without_a_token() {
    let api = api();
    let jobs = "/api/v1/exec/jobs";
    let refused = [
        // DNS rebinding: a page on evil.example re-resolved to 127.0.0.1.
        ("evil.example:3000", None),
        ("evil.example:3000", Some("http://evil.example:3000")),
        // A page of another site posting to the loopback server.
        ("127.0.0.1:3000", Some("https://evil.example")),
        // Another server on this machine is another site too.
        ("localhost:3000", Some("http://localhost:8080")),
        ("127.0.0.1:3000", Some("null")),
    ];
    for (host, origin) in refused {
        let (status, body) = api.send(from_browser(jobs, host, origin)).await;
        assert_eq!(status.as_u16(), 403, "{host} {origin:?}: {body}");
        assert_eq!(body["error"]["code"], 403, "{body}");
    }
    let (_, body) = api
        .send(from_browser(jobs, "evil.example:3000", None))
        .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--allowed-host evil.example"),
        "{body}"
    );
    let allowed = [
        ("localhost:3000", None),
        ("127.0.0.1:3000", Some("http://127.0.0.1:3000")),
        ("[::1]:3000", Some("http://[::1]:3000")),
        ("10.1.2.3:3000", None),
    ];
    for (host, origin) in allowed {
        let (status, body) = api.send(from_browser(jobs, host, origin)).await;
        assert_eq!(status, StatusCode::OK, "{host} {origin:?}: {body}");
    }

    // A name the user serves it under (`--allowed-host`).
    let mut state = state_with(None);
    state.allowed_hosts = vec!["hkube.lan".into()];
    let named = Api { app: router(state) };
    for (host, origin) in [
        ("hkube.lan:3000", None),
        ("HKUBE.lan", Some("http://hkube.lan:3000")),
    ] {
        let (status, body) = named.send(from_browser(jobs, host, origin)).await;
        assert_eq!(status, StatusCode::OK, "{host} {origin:?}: {body}");
    }

    // With a token, the token is the defence: the site is not asked about.
    let guarded = api_with(Some("s3cret"));
    let mut request = from_browser(jobs, "evil.example", Some("https://evil.example"));
    request.headers_mut().insert(
        header::AUTHORIZATION,
        header::HeaderValue::from_static("Bearer s3cret"),
    );
    let (status, body) = guarded.send(request).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A signed webhook comes by the server's public name: its signature is checked instead.
    let mut state = state_with(None);
    state.webhook_secret = Some("hook".into());
    let hooks = Api { app: router(state) };
    let request = Request::post("/api/v1/builds/webhook/github")
        .header(header::HOST, "hkube.example.org")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let (status, body) = hooks.send(request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn a_body_announced_too_large_is_refused_with_413() {
    let api = api();
    let request = Request::post("/api/v1/exec/raw")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, "600000000")
        .body(Body::empty())
        .unwrap();
    let (status, body) = api.send(request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], 413, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("512 MB"),
        "{body}"
    );
}

#[tokio::test]
async fn a_chunked_body_is_cut_off_at_the_limit_with_413() {
    // No Content-Length: the size is known only while reading, so the cap applies there.
    static CHUNK: [u8; 1 << 20] = [b' '; 1 << 20];
    let chunks = (0..600).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from_static(&CHUNK)));
    let request = Request::post("/api/v1/exec/raw")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    let (status, body) = api().send(request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], 413, "{body}");
}

#[tokio::test]
async fn hkubectl_import_stores_arrays() {
    let api = api();
    let pipeline = |name: &str, factor: u32| json!({"name": name, "nodes": [{"nodeName": "A", "algorithmName": "double", "input": [factor]}]});
    api.ok(
        "POST",
        "/api/v1/store/pipelines",
        Some(pipeline("old", 1)),
        201,
    )
    .await;
    // importPipelines: POST store/pipelines?overwrite=<bool> with the array.
    let answer = api
        .ok(
            "POST",
            "/api/v1/store/pipelines?overwrite=false",
            Some(json!([pipeline("p1", 1), {"name": "p2"}, pipeline("old", 2)])),
            201,
        )
        .await;
    assert_eq!(answer[0]["name"], "p1", "{answer}");
    assert_eq!(
        answer[1],
        json!({"error": {"code": 400, "message": "pipeline must have at least one node", "name": "p2"}})
    );
    assert_eq!(
        answer[2],
        json!({"error": {"code": 409, "message": "pipeline old already exists", "name": "old"}})
    );
    let answer = api
        .ok(
            "POST",
            "/api/v1/store/pipelines?overwrite=true",
            Some(json!([pipeline("old", 2)])),
            201,
        )
        .await;
    assert_eq!(answer[0]["name"], "old", "{answer}");
    let stored = api
        .ok("GET", "/api/v1/store/pipelines/old", None, 200)
        .await;
    assert_eq!(stored["nodes"][0]["input"], json!([2]));

    // importAlgorithms: POST store/algorithms {payload: JSON text of the array, options}.
    let algorithms = json!([
        {"name": "imported-a", "algorithmImage": "repo/a:1"},
        {"name": "imported-b", "env": "python"},
        {"name": "double", "algorithmImage": "hkube/double:2"},
    ]);
    let body = json!({
        "payload": algorithms.to_string(),
        "options": json!({"allowOverwrite": false}).to_string(),
    });
    let answer = api
        .ok("POST", "/api/v1/store/algorithms", Some(body), 201)
        .await;
    assert_eq!(answer[0]["algorithm"]["name"], "imported-a", "{answer}");
    assert_eq!(
        answer[1]["error"]["message"],
        "cannot apply algorithm due to missing image url or build data"
    );
    assert_eq!(
        answer[2]["error"]["message"],
        "algorithm double already exists"
    );
    let stored = api
        .ok("GET", "/api/v1/store/algorithms/imported-a", None, 200)
        .await;
    assert_eq!(stored["algorithmImage"], "repo/a:1");
    // allowOverwrite makes the import the current definition.
    let body = json!({
        "payload": json!([{"name": "imported-a", "algorithmImage": "repo/a:2"}]).to_string(),
        "options": json!({"allowOverwrite": true}).to_string(),
    });
    let answer = api
        .ok("POST", "/api/v1/store/algorithms", Some(body), 201)
        .await;
    assert_eq!(answer[0]["algorithm"]["algorithmImage"], "repo/a:2");
    let stored = api
        .ok("GET", "/api/v1/store/algorithms/imported-a", None, 200)
        .await;
    assert_eq!(stored["algorithmImage"], "repo/a:2");
    // A plain array of algorithms is answered with the stored ones.
    let answer = api
        .ok(
            "POST",
            "/api/v1/store/algorithms",
            Some(json!([{"name": "imported-c", "algorithmImage": "repo/c:1"}])),
            201,
        )
        .await;
    assert_eq!(answer[0]["name"], "imported-c", "{answer}");
}

#[tokio::test]
async fn hkubectl_apply_version_and_set_current() {
    let state = state_with(None);
    let store = state.store.clone();
    let api = Api { app: router(state) };
    api.ok(
        "POST",
        "/api/v1/store/algorithms",
        Some(json!({"name": "versioned", "algorithmImage": "repo/v:1"})),
        201,
    )
    .await;
    // A completed build's version names its build in the algorithm snapshot.
    let built = spec::parse_algorithm(
        json!({"name": "versioned", "algorithmImage": "repo/v:2", "buildId": "versioned-b1"}),
    )
    .unwrap();
    let version = store
        .add_algorithm_version(crate::store::AlgorithmVersion::new(
            "vbuilt0001".into(),
            built,
            crate::engine::now_ms(),
        ))
        .unwrap();
    // `algorithm apply`: no version in the build record, so it finds the one with its buildId.
    let versions = api
        .ok("GET", "/api/v1/versions/algorithms/versioned", None, 200)
        .await;
    let found = versions
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["buildId"] == "versioned-b1")
        .unwrap_or_else(|| panic!("no version has buildId at the top: {versions}"));
    assert_eq!(found["semver"], version.semver.as_str());
    assert_eq!(found["version"], "vbuilt0001");
    // `algorithm version <name>` lists the images at the top of each version.
    let images: Vec<&str> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["algorithmImage"].as_str().unwrap())
        .collect();
    assert_eq!(images, ["repo/v:2", "repo/v:1"]);
    // `algorithm apply --setCurrent`: {name, image, version, force: true}.
    let applied = api
        .ok(
            "POST",
            "/api/v1/versions/algorithms/apply",
            Some(json!({"name": "versioned", "image": "repo/v:2", "version": "vbuilt0001", "force": true})),
            201,
        )
        .await;
    assert_eq!(applied["algorithmImage"], "repo/v:2");
    // `algorithm version <name> --setCurrent <image>`: {name, image, force}, no version.
    let applied = api
        .ok(
            "POST",
            "/api/v1/versions/algorithms/apply",
            Some(json!({"name": "versioned", "image": "repo/v:1", "force": false})),
            201,
        )
        .await;
    assert_eq!(applied["algorithmImage"], "repo/v:1");
    let current = api
        .ok("GET", "/api/v1/store/algorithms/versioned", None, 200)
        .await;
    assert_eq!(current["algorithmImage"], "repo/v:1");
    // --setCurrent with version null (a build record that had one) still finds it by image.
    let applied = api
        .ok(
            "POST",
            "/api/v1/versions/algorithms/apply",
            Some(json!({"name": "versioned", "image": "repo/v:2", "version": null, "force": true})),
            201,
        )
        .await;
    assert_eq!(applied["version"], "vbuilt0001");
    api.check_error(
        "POST",
        "/api/v1/versions/algorithms/apply",
        Some(json!({"name": "versioned", "image": "repo/v:9", "force": true})),
        404,
        "no version of algorithm versioned has the image repo/v:9",
    )
    .await;
}

/// An API whose job storage is a folder, and the folder.
fn api_with_storage() -> (Api, tempfile::TempDir, ApiState) {
    let dir = tempfile::tempdir().unwrap();
    let mut state = state_with(None);
    state.storage = Some(super::JobStorage {
        backend: Arc::new(wrapper::storage::FsStorage::new(dir.path())),
        cluster: "local".into(),
    });
    (
        Api {
            app: router(state.clone()),
        },
        dir,
        state,
    )
}

async fn body_bytes(api: &Api, path: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = api
        .app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, bytes.to_vec())
}

#[tokio::test]
async fn storage_info_browsing_and_downloads() {
    use wrapper::storage::{put_value, Encoding, StoredValue};
    let (api, _dir, state) = api_with_storage();
    let storage = &*state.storage.as_ref().unwrap().backend;
    // `hkubectl config` checks the connection with GET storage/info.
    let info = api.ok("GET", "/api/v1/storage/info", None, 200).await;
    assert_eq!(
        info,
        json!({"type": "fs", "moduleName": "@hkube/fs-adapter", "clusterName": "local"})
    );
    let types = api
        .ok("GET", "/api/v1/storage/prefix/types", None, 200)
        .await;
    assert_eq!(types[0], "local-hkube");
    assert_eq!(types[1], "local-hkube-results");

    put_value(
        storage,
        "local-hkube/job1/task1",
        &StoredValue::Value(json!({"a": 1})),
        Encoding::Msgpack,
    )
    .await
    .unwrap();
    put_value(
        storage,
        "local-hkube/job1/task2",
        &StoredValue::Raw(b"raw bytes".to_vec()),
        Encoding::Msgpack,
    )
    .await
    .unwrap();
    let prefixes = api
        .ok("GET", "/api/v1/storage/prefixes/local-hkube", None, 200)
        .await;
    assert_eq!(
        prefixes,
        json!({"path": "local-hkube", "total": 1, "keys": ["job1"]})
    );
    let keys = api
        .ok(
            "GET",
            "/api/v1/storage/keys/local-hkube/job1?order=desc&from=0&to=1",
            None,
            200,
        )
        .await;
    assert_eq!(keys["total"], 2);
    assert_eq!(
        keys["keys"],
        json!([{"path": "local-hkube/job1/task2", "size": 9}])
    );
    let all = api.ok("GET", "/api/v1/storage/keys", None, 200).await;
    assert_eq!(all[0]["total"], 2, "{all}");
    assert_eq!(
        api.ok(
            "GET",
            "/api/v1/storage/values/local-hkube/job1/task1",
            None,
            200
        )
        .await,
        json!({"a": 1})
    );
    let (status, headers, bytes) = body_bytes(
        &api,
        "/api/v1/storage/download/local-hkube/job1/task2?ext=bin",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, b"raw bytes");
    assert_eq!(
        headers[header::CONTENT_DISPOSITION],
        "attachment; filename=hkube-result.bin"
    );
    let (_, _, bytes) =
        body_bytes(&api, "/api/v1/storage/stream/custom/local-hkube/job1/task1").await;
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap(),
        json!({"a": 1})
    );

    api.check_error(
        "GET",
        "/api/v1/storage/stream/local-hkube/none",
        None,
        404,
        "stream local-hkube/none Not Found",
    )
    .await;
    api.check_error(
        "GET",
        "/api/v1/storage/prefixes/nothing-here",
        None,
        404,
        "prefix nothing-here Not Found",
    )
    .await;
    let (status, body) = api
        .get("/api/v1/storage/download/local-hkube/../../etc/passwd")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn a_large_result_downloads_as_a_zip() {
    use std::io::Read;
    use wrapper::storage::{put_value, Encoding, StoredValue};
    let (api, _dir, state) = api_with_storage();
    let storage = &*state.storage.as_ref().unwrap().backend;
    let big = vec![7u8; 300 << 10];
    let size = put_value(
        storage,
        "local-hkube/big/out",
        &StoredValue::Raw(big.clone()),
        Encoding::Msgpack,
    )
    .await
    .unwrap();
    // A task whose output is a reference to a stored object: its result entry has `info`.
    let reference = wrapper::storage::reference::reference("local-hkube/big/out", size);
    let job = api
        .run(json!({"name": "big", "nodes": [
            {"nodeName": "A", "algorithmName": "first", "input": ["@flowInput.ref"]},
            {"nodeName": "B", "algorithmName": "double", "input": [2]},
        ], "flowInput": {"ref": reference}}))
        .await;
    let result = api.results(&job).await;
    assert_eq!(result["data"][0]["info"]["isBigData"], true, "{result}");
    let (status, headers, bytes) = body_bytes(
        &api,
        &format!("/api/v1/storage/download/pipeline/result/{job}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_DISPOSITION],
        "attachment; filename=hkube-result.zip"
    );
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut metadata = String::new();
    zip.by_name("metadata.json")
        .unwrap()
        .read_to_string(&mut metadata)
        .unwrap();
    let metadata: Value = serde_json::from_str(&metadata).unwrap();
    let file_name = metadata[0]["info"]["fileName"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(metadata[0]["info"]["size"], size);
    assert_eq!(metadata[1]["result"], 4);
    let mut content = Vec::new();
    zip.by_name(&file_name)
        .unwrap()
        .read_to_end(&mut content)
        .unwrap();
    assert_eq!(content, big);
    api.check_error(
        "GET",
        "/api/v1/storage/download/pipeline/result/nope",
        None,
        404,
        "status nope Not Found",
    )
    .await;
}

#[tokio::test]
async fn hkubectl_logs_in_before_its_commands() {
    // `algorithm version`, `exec raw`, `pipeline get`: POST /auth/login {username, password}
    // (both undefined without a Keycloak), then `res.result.token` and, in `config`,
    // `res.result.data.access_token`: an answer without `data` makes hkubectl throw.
    let open = api();
    let answer = open
        .ok("POST", "/api/v1/auth/login", Some(json!({})), 200)
        .await;
    assert_eq!(answer["data"]["access_token"], "");
    // With a token, the password is the token; no bearer is needed to log in.
    let guarded = api_with(Some("s3cret"));
    let answer = guarded
        .ok(
            "POST",
            "/api/v1/auth/login",
            Some(json!({"username": "me", "password": "s3cret"})),
            200,
        )
        .await;
    assert_eq!(answer["data"]["access_token"], "s3cret");
    assert!(answer["data"]["expires_in"].as_u64().unwrap() > 60);
    let (status, body) = guarded
        .call(
            "POST",
            "/api/v1/auth/login",
            Some(json!({"username": "me", "password": "guess"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"error": "Unauthorized"}));
}

#[test]
fn the_document_uses_only_openapi_3_0_schema_keywords() {
    // openapi-spec-validator (in .ci/run) checks the whole document; these are the mistakes
    // it once found: JSON Schema's `const` and an empty `required` are not OpenAPI 3.0.
    fn walk(value: &Value, at: &str) {
        match value {
            Value::Object(map) => {
                assert!(!map.contains_key("const"), "`const` at {at}");
                if let Some(required) = map.get("required").and_then(Value::as_array) {
                    assert!(!required.is_empty(), "an empty `required` at {at}");
                }
                for (key, inner) in map {
                    walk(inner, &format!("{at}/{key}"));
                }
            }
            Value::Array(items) => {
                for (index, inner) in items.iter().enumerate() {
                    walk(inner, &format!("{at}/{index}"));
                }
            }
            _ => {}
        }
    }
    let document = super::openapi::document();
    walk(&document, "");
    for path in document["paths"].as_object().unwrap().keys() {
        assert!(!path.contains('*'), "{path}: axum's catch-all syntax");
        assert!(
            path == "/api" || path == "/" || !path.ends_with('/'),
            "{path}: listed with a trailing slash"
        );
    }
}

// ---- observability: tasks, timing, logs, metrics, event streams, the UI ----

#[tokio::test]
async fn tasks_are_named_with_their_timing() {
    let api = api();
    let job = api.run(chain()).await;
    api.results(&job).await;
    let listed = api
        .ok("GET", &format!("/api/v1/exec/tasks/{job}"), None, 200)
        .await;
    assert_eq!(listed["total"], 2, "{listed}");
    let tasks = listed["tasks"].as_array().unwrap();
    assert_eq!(tasks[0]["nodeName"], "A");
    assert_eq!(tasks[1]["nodeName"], "B");
    for task in tasks {
        assert_eq!(task["taskId"].as_str().unwrap().len(), 8, "{task}");
        assert_eq!(task["status"], "succeeded", "{task}");
        let (queued, started, done) = (
            task["queued"].as_u64().unwrap(),
            task["started"].as_u64().unwrap(),
            task["done"].as_u64().unwrap(),
        );
        assert!(queued <= started && started <= done, "{task}");
    }
    let only_b = api
        .ok(
            "GET",
            &format!("/api/v1/exec/tasks/{job}?node=B"),
            None,
            200,
        )
        .await;
    assert_eq!(only_b["total"], 1);
    assert_eq!(only_b["tasks"][0]["taskId"], tasks[1]["taskId"]);
    // The status names each node's tasks and where their time went.
    let status = api
        .ok("GET", &format!("/api/v1/exec/status/{job}"), None, 200)
        .await;
    let times = status["nodeTimes"].as_array().unwrap();
    assert_eq!(times[0]["nodeName"], "A", "{status}");
    assert_eq!(times[0]["states"], json!({"succeeded": 1}));
    assert_eq!(times[1]["running"]["count"], 1);
    api.check_error(
        "GET",
        &format!("/api/v1/exec/tasks/{job}?limit=20000"),
        None,
        400,
        "limit must be a whole number from 0 to 10000, not \"20000\"",
    )
    .await;
    api.check_error(
        "GET",
        "/api/v1/exec/tasks/nosuchjob",
        None,
        404,
        "jobId nosuchjob Not Found",
    )
    .await;
}

#[tokio::test]
async fn the_logs_route_refuses_what_it_cannot_answer() {
    let api = api();
    let job = api.run(chain()).await;
    api.results(&job).await;
    // The test algorithms print nothing: an empty text, not an error.
    let (status, text) = api.get(&format!("/api/v1/exec/logs/{job}?node=A")).await;
    assert_eq!((status, text), (StatusCode::OK, Value::Null));
    api.check_error(
        "GET",
        &format!("/api/v1/exec/logs/{job}?taskId=NOT-AN-ID"),
        None,
        400,
        &format!("taskId \"NOT-AN-ID\" is not a task id (8 characters of 0-9 and a-z; GET /api/v1/exec/tasks/{job} lists them)"),
    )
    .await;
    api.check_error(
        "GET",
        &format!("/api/v1/exec/logs/{job}?follow=maybe"),
        None,
        400,
        "follow must be true or false, not \"maybe\"",
    )
    .await;
    api.check_error(
        "GET",
        "/api/v1/exec/logs/nosuchjob",
        None,
        404,
        "jobId nosuchjob Not Found",
    )
    .await;
}

#[tokio::test]
async fn a_job_stream_sends_its_last_status_then_ends() {
    let api = api();
    let job = api.run(chain()).await;
    api.results(&job).await;
    let (status, body) = api.get(&format!("/api/v1/events/jobs/{job}")).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    let data = text
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .unwrap();
    assert!(text.starts_with("event: status\n"), "{text}");
    let sent: Value = serde_json::from_str(data).unwrap();
    assert_eq!(sent["status"], "completed");
    assert_eq!(sent["nodeTimes"][1]["nodeName"], "B");
    api.check_error(
        "GET",
        "/api/v1/events/jobs/nosuchjob",
        None,
        404,
        "status nosuchjob Not Found",
    )
    .await;
}

#[tokio::test]
async fn the_jobs_stream_lists_running_jobs() {
    let api = api();
    let job = api.run(sleeper("stream-me")).await;
    let request = Request::get("/api/v1/events/jobs")
        .body(Body::empty())
        .unwrap();
    let response = api.app.clone().oneshot(request).await.unwrap();
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(text.starts_with("event: jobs\n"), "{text}");
    assert!(text.contains(&format!("\"jobId\":\"{job}\"")), "{text}");
    assert!(text.contains("\"pipeline\":\"stream-me\""), "{text}");
    api.ok(
        "POST",
        "/api/v1/exec/stop",
        Some(json!({"jobId": job})),
        200,
    )
    .await;
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let api = api();
    let job = api.run(chain()).await;
    api.results(&job).await;
    let request = Request::get("/metrics").body(Body::empty()).unwrap();
    let response = api.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    // Counters are process-wide: other tests' jobs count too.
    let completed: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("hkube_jobs_total{status=\"completed\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(completed >= 1.0, "{text}");
    assert!(
        text.contains("hkube_tasks_ended_total{algorithm=\"double\",state=\"succeeded\"}"),
        "{text}"
    );
    assert!(text.contains("hkube_task_duration_seconds_count{algorithm=\"double\"}"));
    assert!(text.contains("hkube_tasks{state=\"succeeded\"}"));
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("hkube_"), "{line}");
    }
}

#[tokio::test]
async fn the_ui_is_served_and_its_data_needs_the_token() {
    let api = api_with(Some("s3cret"));
    let request = Request::get("/").body(Body::empty()).unwrap();
    let (status, page) = api.send(request).await;
    assert_eq!(status, StatusCode::OK);
    let page = page.as_str().unwrap();
    assert!(page.contains("<script src=\"/ui/app.js\">"), "{page}");
    assert!(page.contains("data-job=\"\""), "{page}");
    let (status, page) = api.get("/jobs/a%22b").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.as_str().unwrap().contains("data-job=\"a&quot;b\""));
    let (status, script) = api.get("/ui/app.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(script.as_str().unwrap().contains("sessionStorage"));
    // The token never travels in a URL: the script sends it as a header only.
    assert!(!script.as_str().unwrap().contains("?token"));
    let (status, _) = api.get("/metrics").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = api.get("/api/v1/events/jobs/x").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
