//! The route table and the OpenAPI 3 document generated from it.
//!
//! [`routes`] is the only list of what the API serves: [`super::router`] registers each entry
//! and `GET /api/v1/openapi.json` describes each entry, so the document cannot drift from the
//! router.

use axum::handler::Handler;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Json;
use serde_json::{json, Map, Value};

use super::{
    auth, builds, cron, exec, jobs, logs, observe, result_cache, storage, store, ui, versions,
    webhook_records, webhooks, ApiState,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Put,
    Delete,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Put => "put",
            Verb::Delete => "delete",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// How a route's request body looks.
#[derive(Debug, Clone)]
pub enum RequestBody {
    None,
    Json(Value),
    /// Multipart form fields: name → schema.
    Multipart(Value),
}

/// One route: what the router serves and what the document says about it.
pub struct ApiRoute {
    pub verb: Verb,
    /// The full path, axum's syntax (`/api/v1/exec/status/{jobId}`).
    pub path: &'static str,
    pub summary: &'static str,
    pub request: RequestBody,
    /// The success status and the schema of its body.
    pub success: (u16, Value),
    /// Error statuses this route answers with, besides 401 when auth is on.
    pub errors: &'static [u16],
    handler: MethodRouter<ApiState>,
}

impl std::fmt::Debug for ApiRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRoute")
            .field("verb", &self.verb)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ApiRoute {
    pub(super) fn into_method_router(self) -> MethodRouter<ApiState> {
        self.handler
    }
}

fn route<H, T>(verb: Verb, path: &'static str, summary: &'static str, handler: H) -> ApiRoute
where
    H: Handler<T, ApiState>,
    T: 'static,
{
    ApiRoute {
        verb,
        path,
        summary,
        request: RequestBody::None,
        success: (200, json!({})),
        errors: &[],
        handler: on(verb.filter(), handler),
    }
}

impl ApiRoute {
    fn body(mut self, schema: Value) -> Self {
        self.request = RequestBody::Json(schema);
        self
    }
    fn multipart(mut self, fields: Value) -> Self {
        self.request = RequestBody::Multipart(fields);
        self
    }
    fn ok(mut self, status: u16, schema: Value) -> Self {
        self.success = (status, schema);
        self
    }
    fn errors(mut self, errors: &'static [u16]) -> Self {
        self.errors = errors;
        self
    }
}

fn string() -> Value {
    json!({"type": "string"})
}
/// OpenAPI 3.0 wants `required` absent rather than empty.
fn object(required: &[&str], properties: Value) -> Value {
    let mut schema = json!({"type": "object", "properties": properties});
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
}
fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}
fn array(items: Value) -> Value {
    json!({"type": "array", "items": items})
}
fn job_id() -> Value {
    object(&["jobId"], json!({"jobId": string()}))
}
fn message() -> Value {
    object(&["message"], json!({"message": string()}))
}

async fn versions() -> Json<Value> {
    Json(json!(["v1"]))
}
async fn exec_root() -> Json<Value> {
    Json(json!({"message": "v1 exec api"}))
}
async fn store_root() -> Json<Value> {
    Json(json!({"message": "v1 store api"}))
}
async fn versions_root() -> Json<Value> {
    Json(json!({"message": "v1 versions api"}))
}
async fn builds_root() -> Json<Value> {
    Json(json!({"message": "v1 builds api"}))
}
async fn pipelines_root() -> Json<Value> {
    Json(json!({"message": "v1 pipelines api"}))
}
async fn cron_root() -> Json<Value> {
    Json(json!({"message": "v1 cron api"}))
}
async fn webhooks_root() -> Json<Value> {
    Json(json!({"message": "v1 webhooks api"}))
}
fn webhook_record() -> Value {
    object(
        &["jobId", "url", "responseStatus"],
        json!({
            "jobId": string(), "url": string(), "pipelineStatus": string(), "status": string(),
            "responseStatus": {"type": "string", "enum": ["succeed", "failed"]},
            "httpResponse": object(&[], json!({"statusCode": {}, "statusMessage": string()})),
            "attempts": integer(), "timestamp": integer(),
        }),
    )
}
async fn storage_root() -> Json<Value> {
    Json(json!({"message": "v1 storage api"}))
}
/// One item or an array of them (HKube's store routes take both).
fn one_or_many(item: Value) -> Value {
    json!({"oneOf": [item.clone(), array(item)]})
}
fn storage_list() -> Value {
    object(
        &["path", "total", "keys"],
        json!({"path": string(), "total": integer(), "keys": {"type": "array"}}),
    )
}
fn bytes() -> Value {
    json!({"type": "string", "format": "binary"})
}
fn integer() -> Value {
    json!({"type": "integer"})
}
fn search_answer() -> Value {
    object(
        &["hits", "timeTook"],
        json!({
            "hits": array(reference("Job")), "cursor": string(), "timeTook": string(),
        }),
    )
}
async fn openapi_json() -> Json<Value> {
    Json(document())
}

/// Every route the API serves.
pub fn routes() -> Vec<ApiRoute> {
    use Verb::{Delete, Get, Post, Put};
    vec![
        route(Get, "/api", "API versions", versions).ok(200, array(string())),
        route(Get, "/api/v1/openapi.json", "this document", openapi_json),
        // Every path is also served with a trailing slash (`/api/v1/exec/`), as HKube's are.
        route(Get, "/api/v1/exec", "exec router", exec_root).ok(200, message()),
        route(Get, "/api/v1/versions", "versions router", versions_root).ok(200, message()),
        route(Get, "/api/v1/builds", "builds router", builds_root).ok(200, message()),
        route(Get, "/api/v1/pipelines", "pipelines router", pipelines_root).ok(200, message()),
        route(Get, "/api/v1/store", "store router", store_root).ok(200, message()),
        route(Get, "/api/v1/storage", "storage router", storage_root).ok(200, message()),
        // HKube's Keycloak login, for hkubectl: the password is the server's token.
        route(Post, "/api/v1/auth/login", "log in as hkubectl does: {password: <the server's token>} → {data: {access_token, expires_in, …}}; a server without a token gives an empty access_token to any login", auth::login)
            .body(object(&[], json!({"username": string(), "password": string()})))
            .ok(200, object(&["data"], json!({"data": object(&["access_token"], json!({"access_token": string(), "expires_in": integer()}))})))
            .errors(&[401]),
        // Execution (§5.1).
        route(Post, "/api/v1/exec/raw", "run a pipeline descriptor", exec::raw)
            .body(reference("Pipeline"))
            .ok(200, job_id())
            .errors(&[400, 404]),
        route(Post, "/api/v1/exec/stored", "run a stored pipeline; flowInput replaces, the rest deep-merges", exec::stored)
            .body(object(&["name"], json!({"name": string(), "flowInput": {"type": "object"}})))
            .ok(200, job_id())
            .errors(&[400, 404]),
        route(Post, "/api/v1/exec/algorithm", "run one algorithm as a one-node pipeline", exec::algorithm)
            .body(object(&["name"], json!({"name": string(), "input": {"type": "array"}, "debug": {"type": "boolean"}})))
            .ok(200, job_id())
            .errors(&[400, 404]),
        route(Post, "/api/v1/exec/rerun", "run a job's pipeline again", exec::rerun)
            .body(job_id())
            .ok(200, job_id())
            .errors(&[400, 404]),
        route(Post, "/api/v1/exec/caching", "run from a node, with the parents' outputs of a job", exec::caching)
            .body(object(&["jobId", "nodeName"], json!({"jobId": string(), "nodeName": string(), "debug": {"type": "boolean"}})))
            .ok(200, job_id())
            .errors(&[400]),
        route(Post, "/api/v1/exec/stop", "stop unfinished jobs", exec::stop)
            .body(object(&[], json!({
                "jobId": string(), "pipelineName": string(), "reason": string(),
                "statusToStop": {"oneOf": [string(), array(string())]},
            })))
            .ok(200, object(&["stoppedJobIds"], json!({"stoppedJobIds": array(string())})))
            .errors(&[400, 404]),
        route(Post, "/api/v1/exec/pause", "pause a job", exec::pause)
            .body(job_id())
            .ok(200, message())
            .errors(&[400, 404]),
        route(Post, "/api/v1/exec/resume", "resume a paused job", exec::resume)
            .body(job_id())
            .ok(200, message())
            .errors(&[400, 404]),
        route(Get, "/api/v1/exec/status/{jobId}", "a job's status and progress", exec::status)
            .ok(200, reference("Status"))
            .errors(&[404]),
        // Observability (hkube's own): tasks with their timing, task logs, event streams.
        route(Get, "/api/v1/exec/tasks/{jobId}", "a job's tasks in queueing order: {jobId, total, offset, tasks: [{taskId, nodeName, algorithmName, batchIndex, status, attempts, queued, placed, started, done}]} (times in ms since the epoch; ?node, offset, limit ≤ 10000, default 1000)", observe::tasks)
            .ok(200, object(&["jobId", "total", "tasks"], json!({"jobId": string(), "total": integer(), "offset": integer(), "tasks": array(json!({"type": "object"}))})))
            .errors(&[400, 404]),
        route(Get, "/api/v1/exec/logs/{jobId}", "what a job's tasks printed, as text: lines prefixed [<nodeName> <taskId>] (?node, taskId; ?follow=true streams new lines until the job ends)", logs::logs)
            .ok(200, json!({"type": "string"}))
            .errors(&[400, 404]),
        route(Get, "/api/v1/events/jobs", "server-sent events: `jobs` with the unfinished jobs [{jobId, pipeline, status, types, progress}] when they change (at most once a second)", observe::jobs_events)
            .ok(200, json!({"type": "string"})),
        route(Get, "/api/v1/events/jobs/{jobId}", "server-sent events: `status` with the job's status document (and nodeTimes) when it changes (at most every 0.4 s); ends after the job ends", observe::job_events)
            .ok(200, json!({"type": "string"}))
            .errors(&[404]),
        route(Get, "/metrics", "Prometheus metrics, text format (names prefixed hkube_)", observe::metrics)
            .ok(200, json!({"type": "string"})),
        // The web UI: pages rendered in the browser from this API.
        route(Get, "/", "the web UI: jobs, algorithms, builds", ui::index)
            .ok(200, json!({"type": "string"})),
        route(Get, "/jobs/{jobId}", "the web UI: one job (graph, timing, logs, results)", ui::job)
            .ok(200, json!({"type": "string"})),
        route(Get, "/ui/app.js", "the web UI's script", ui::script)
            .ok(200, json!({"type": "string"})),
        route(Get, "/ui/app.css", "the web UI's style", ui::style)
            .ok(200, json!({"type": "string"})),
        route(Get, "/api/v1/exec/results/{jobId}", "a finished job's results", exec::results)
            .ok(200, reference("Result"))
            .errors(&[400, 404]),
        route(Get, "/api/v1/exec/pipelines/{jobId}", "the pipeline as the job runs it", exec::pipeline)
            .ok(200, reference("Pipeline"))
            .errors(&[404]),
        route(Get, "/api/v1/exec/tree/{jobId}", "the jobs a job triggered", exec::tree)
            .ok(200, object(&["name", "children"], json!({"jobId": string(), "name": string(), "children": array(json!({"type": "object"}))})))
            .errors(&[404]),
        route(Get, "/api/v1/exec/jobs", "jobs by status (?status=a,b, default active,pending; ?raw=true: ids only)", exec::jobs)
            .ok(200, array(object(&["jobId", "status", "pipelineName"], json!({"jobId": string(), "status": string(), "pipelineName": string()}))))
            .errors(&[400]),
        route(Get, "/api/v1/exec/pipeline/list", "the pipelines of unfinished jobs", exec::pipeline_list)
            .ok(200, array(reference("Pipeline"))),
        route(Get, "/api/v1/exec/search", "search jobs (?experimentName, pipelineName (jobId or name), pipelineType, algorithmName, pipelineStatus, from, to, tags, cursor, page, sort=asc|desc, limit=0..100, fields=a:true,b:true, exists=result:true)", jobs::search_get)
            .ok(200, search_answer())
            .errors(&[400]),
        route(Post, "/api/v1/exec/search", "search jobs", jobs::search_post)
            .body(object(&[], json!({
                "query": object(&[], json!({
                    "experimentName": string(), "pipelineName": string(), "pipelineType": string(),
                    "algorithmName": string(), "pipelineStatus": string(), "tags": array(string()),
                    "datesRange": object(&[], json!({"from": string(), "to": string()})),
                })),
                "cursor": string(), "pageNum": integer(), "sort": {"enum": ["asc", "desc"]},
                "limit": {"type": "integer", "minimum": 0, "maximum": 100},
                "fields": {"type": "object"}, "exists": {"type": "object"},
            })))
            .ok(200, search_answer())
            .errors(&[400]),
        route(Get, "/api/v1/exec/auditTrail/{jobId}", "who did what to a job: {jobId, \"0\": {timestamp, user, action}, …}", jobs::audit_trail)
            .ok(200, object(&["jobId"], json!({"jobId": string()})))
            .errors(&[404]),
        route(Get, "/api/v1/exec/flowInput/{jobId}", "a job's flowInput (?download=true: as an attachment); 404 has an empty body", jobs::flow_input)
            .ok(200, json!({"type": "object"}))
            .errors(&[404]),
        // Pipeline queries (§5.2).
        route(Get, "/api/v1/pipelines/results", "a pipeline's latest results (?name, experimentName=main, sort=desc, limit=1)", jobs::pipeline_results)
            .ok(200, array(reference("Result")))
            .errors(&[400, 404]),
        route(Get, "/api/v1/pipelines/status", "a pipeline's latest statuses (?name, experimentName=main, sort=desc, limit=1)", jobs::pipeline_status)
            .ok(200, array(reference("Status")))
            .errors(&[400, 404]),
        // Stored pipelines (§5.3).
        route(Get, "/api/v1/store/pipelines", "stored pipelines", store::list_pipelines)
            .ok(200, array(reference("Pipeline"))),
        route(Post, "/api/v1/store/pipelines", "store a pipeline, or an array of them (hkubectl import; ?overwrite=true replaces existing ones): 201 and an array where a refused item is {error: {code, message, name}}", store::create_pipeline)
            .body(one_or_many(reference("Pipeline")))
            .ok(201, one_or_many(reference("Pipeline")))
            .errors(&[400, 404, 409]),
        route(Put, "/api/v1/store/pipelines", "replace a stored pipeline (name in the body)", store::replace_pipeline)
            .body(reference("Pipeline"))
            .ok(200, reference("Pipeline"))
            .errors(&[400, 404]),
        route(Get, "/api/v1/store/pipelines/{name}", "a stored pipeline", store::get_pipeline)
            .ok(200, reference("Pipeline"))
            .errors(&[404]),
        route(Put, "/api/v1/store/pipelines/{name}", "replace a stored pipeline", store::replace_named_pipeline)
            .body(reference("Pipeline"))
            .ok(200, reference("Pipeline"))
            .errors(&[400, 404]),
        route(Delete, "/api/v1/store/pipelines/{name}", "delete a stored pipeline, stopping its unfinished stored jobs", store::delete_pipeline)
            .ok(200, message())
            .errors(&[404]),
        // Stored algorithms (§5.4).
        route(Get, "/api/v1/store/algorithms", "stored algorithms", store::list_algorithms)
            .ok(200, array(reference("Algorithm"))),
        route(Post, "/api/v1/store/algorithms", "store an algorithm, or an array of them; also HKube's {payload: <JSON text of one or an array>, options: {allowOverwrite}} form (hkubectl import), answered with an array of {algorithm} or {error: {code, message, name}}", store::create_algorithm)
            .body(json!({"oneOf": [reference("Algorithm"), array(reference("Algorithm")), object(&["payload"], json!({"payload": string(), "options": string()}))]}))
            .ok(201, json!({"oneOf": [reference("Algorithm"), {"type": "array"}]}))
            .errors(&[400, 409]),
        route(Put, "/api/v1/store/algorithms", "update a stored algorithm (name in the body; merged over it)", store::replace_algorithm)
            .body(reference("Algorithm"))
            .ok(200, reference("Algorithm"))
            .errors(&[400, 404]),
        route(Post, "/api/v1/store/algorithms/apply", "create or update an algorithm (multipart: payload, options, file; or JSON with the same fields). Code (a file, or gitRepository) is built: buildId names the build (GET /builds/status/{buildId}), and its version is made when it completes", store::apply_algorithm)
            .multipart(json!({
                "payload": {"type": "string", "description": "the algorithm, as JSON"},
                "options": {"type": "string", "description": "{\"forceUpdate\": bool, \"forceBuild\": bool}, as JSON"},
                "file": {"type": "string", "format": "binary", "description": "the code: a zip or tar.gz archive, built into an image (Docker executor) or a prepared folder (local executor)"},
            }))
            .ok(200, object(&["messages", "messagesCode", "algorithm"], json!({
                "buildId": string(), "messages": array(string()),
                "messagesCode": array(json!({"type": "integer"})), "algorithm": reference("Algorithm"),
            })))
            .errors(&[400]),
        route(Get, "/api/v1/store/algorithms/{name}", "a stored algorithm", store::get_algorithm)
            .ok(200, reference("Algorithm"))
            .errors(&[404]),
        route(Put, "/api/v1/store/algorithms/{name}", "update a stored algorithm (merged over it)", store::replace_named_algorithm)
            .body(reference("Algorithm"))
            .ok(200, reference("Algorithm"))
            .errors(&[400, 404]),
        route(Delete, "/api/v1/store/algorithms/{name}", "delete a stored algorithm (?force=true also deletes the pipelines using it; ?keepOldVersions=false its versions)", store::delete_algorithm)
            .ok(200, message())
            .errors(&[400, 404]),
        // Algorithm versions (§5.5).
        route(Get, "/api/v1/versions/algorithms/{name}", "an algorithm's versions, newest first", versions::list)
            .ok(200, array(reference("Version")))
            .errors(&[400]),
        route(Get, "/api/v1/versions/algorithms/{name}/{version}", "one version of an algorithm", versions::get)
            .ok(200, reference("Version"))
            .errors(&[404]),
        route(Delete, "/api/v1/versions/algorithms/{name}/{version}", "delete a version (not the current one)", versions::delete)
            .ok(200, object(&["deleted"], json!({"deleted": integer()})))
            .errors(&[400, 404]),
        route(Post, "/api/v1/versions/algorithms/apply", "make a version the stored algorithm (refused while unfinished jobs use it, unless force); without version, image names the newest version with that algorithmImage (hkubectl algorithm version --setCurrent)", versions::apply)
            .body(object(&["name"], json!({"name": string(), "version": {"type": "string", "nullable": true}, "image": string(), "force": {"type": "boolean"}})))
            .ok(201, reference("Version"))
            .errors(&[400, 404]),
        // Builds (§5.6): records of the build service, kept whole (log included).
        route(Get, "/api/v1/builds/status/{buildId}", "a build record: status, progress, result.data (the whole log), error, algorithmImage", builds::status)
            .ok(200, json!({"type": "object"}))
            .errors(&[404]),
        route(Get, "/api/v1/builds/list/{name}", "an algorithm's builds (?sort=asc|desc, limit>=1)", builds::list)
            .ok(200, array(json!({"type": "object"})))
            .errors(&[400]),
        route(Get, "/api/v1/builds/logs/{buildId}", "a build's log as text, whole", builds::logs)
            .ok(200, string())
            .errors(&[404]),
        route(Post, "/api/v1/builds/stop", "stop a pending, creating or active build", builds::stop)
            .body(object(&["buildId"], json!({"buildId": string()})))
            .ok(200, message())
            .errors(&[400, 404]),
        route(Post, "/api/v1/builds/rerun", "run an ended build again from its upload", builds::rerun)
            .body(object(&["buildId"], json!({"buildId": string()})))
            .ok(200, message())
            .errors(&[400, 404]),
        route(Post, "/api/v1/builds/webhook/github", "a GitHub push (JSON or form-encoded; X-Hub-Signature-256 checked when the server has a webhook secret) rebuilds the algorithms following the pushed branch or tag", webhooks::github)
            .body(json!({"type": "object"}))
            .ok(200, object(&["builds"], json!({"builds": array(json!({"type": "object"}))})))
            .errors(&[400, 401, 404]),
        route(Post, "/api/v1/builds/webhook/gitlab", "a GitLab push (X-Gitlab-Token checked when the server has a webhook secret) rebuilds the algorithms following the pushed branch or tag", webhooks::gitlab)
            .body(json!({"type": "object"}))
            .ok(200, object(&["builds"], json!({"builds": array(json!({"type": "object"}))})))
            .errors(&[400, 401, 404]),
        // Cron triggers (§5.7) of stored pipelines.
        route(Get, "/api/v1/cron", "cron router", cron_root).ok(200, message()),
        route(Get, "/api/v1/cron/list", "the stored pipelines with a cron trigger: [{name, cron: {pattern, enabled}, nextRun}] (?sort=asc|desc by name, limit)", cron::list)
            .ok(200, array(object(&["name", "cron"], json!({
                "name": string(), "cron": object(&["pattern", "enabled"], json!({"pattern": string(), "enabled": {"type": "boolean"}})),
                "nextRun": integer(),
            }))))
            .errors(&[400]),
        route(Get, "/api/v1/cron/results", "the results of a pipeline's cron-started jobs (?name, experimentName=main, sort=desc, limit=1)", cron::results)
            .ok(200, array(reference("Result")))
            .errors(&[400, 404]),
        route(Get, "/api/v1/cron/status", "the statuses of a pipeline's cron-started jobs (?name, experimentName=main, sort=desc, limit=1)", cron::status)
            .ok(200, array(reference("Status")))
            .errors(&[400, 404]),
        route(Post, "/api/v1/cron/start", "enable a stored pipeline's cron: the given pattern, else the stored one, else 0 * * * *", cron::start)
            .body(object(&["name"], json!({"name": string(), "pattern": string()})))
            .ok(200, message())
            .errors(&[400, 404]),
        route(Post, "/api/v1/cron/stop", "disable a stored pipeline's cron (its pattern is kept)", cron::stop)
            .body(object(&["name"], json!({"name": string()})))
            .ok(200, message())
            .errors(&[400, 404]),
        route(Post, "/internal/v1/exec/stored/cron", "run a stored pipeline as its cron does (types stored, internal, cron); needs the token like /api", cron::exec)
            .body(object(&["name"], json!({"name": string()})))
            .ok(200, job_id())
            .errors(&[400, 404]),
        // hkube's result cache (nodes with `cache: true`).
        route(Delete, "/api/v1/cache", "empty the result cache of nodes with cache: true: {message, deleted} (retention also deletes old entries)", result_cache::clear)
            .ok(200, object(&["message", "deleted"], json!({"message": string(), "deleted": integer()}))),
        // Webhook deliveries (§5.8).
        route(Get, "/api/v1/webhooks", "webhooks router", webhooks_root).ok(200, message()),
        route(Get, "/api/v1/webhooks/status/{jobId}", "the latest progress webhook delivery of a job", webhook_records::status)
            .ok(200, webhook_record())
            .errors(&[404]),
        route(Get, "/api/v1/webhooks/results/{jobId}", "the result webhook delivery of a job", webhook_records::results)
            .ok(200, webhook_record())
            .errors(&[404]),
        route(Get, "/api/v1/webhooks/list/{jobId}", "a job's webhook deliveries: {jobId, result, progress} (the latest of each) and deliveries (all, oldest first)", webhook_records::list)
            .ok(200, object(&["jobId"], json!({"jobId": string(), "result": webhook_record(), "progress": webhook_record(), "deliveries": array(webhook_record())})))
            .errors(&[404]),
        // Storage (§5.8): the job storage, browsed and downloaded.
        route(Get, "/api/v1/storage/info", "the job storage: {type: fs|s3, moduleName, clusterName}", storage::info)
            .ok(200, object(&["type"], json!({"type": string(), "moduleName": string(), "clusterName": string()})))
            .errors(&[400]),
        route(Get, "/api/v1/storage/prefix/types", "the storage's top prefixes (<cluster>-hkube, <cluster>-hkube-results, …)", storage::types)
            .ok(200, array(string())),
        route(Get, "/api/v1/storage/prefixes", "the names under every top prefix (?order=asc|desc, from, to)", storage::all_prefixes)
            .ok(200, array(storage_list()))
            .errors(&[400]),
        route(Get, "/api/v1/storage/prefixes/{*path}", "the names directly under a path (?order, from, to)", storage::prefixes)
            .ok(200, storage_list())
            .errors(&[400, 404]),
        route(Get, "/api/v1/storage/keys", "the objects under every top prefix, with sizes (?order, from, to)", storage::all_keys)
            .ok(200, array(storage_list()))
            .errors(&[400]),
        route(Get, "/api/v1/storage/keys/{*path}", "the objects under a path: {path, total, keys: [{path, size}]} (?order, from, to)", storage::keys)
            .ok(200, storage_list())
            .errors(&[400, 404]),
        route(Get, "/api/v1/storage/values/{*path}", "an object decoded, as JSON (under 100 KiB; larger ones: stream)", storage::values)
            .ok(200, json!({}))
            .errors(&[400, 404]),
        route(Get, "/api/v1/storage/stream/custom/{*path}", "an object: an encoded value as JSON, raw bytes as they are", storage::stream_custom)
            .ok(200, bytes())
            .errors(&[400, 404]),
        route(Get, "/api/v1/storage/stream/{*path}", "an object's bytes", storage::stream)
            .ok(200, bytes())
            .errors(&[400, 404]),
        route(Get, "/api/v1/storage/download/pipeline/result/{jobId}", "a job's results as a zip: metadata.json (the entries) and each large result as a file", storage::pipeline_result)
            .ok(200, bytes())
            .errors(&[404]),
        route(Get, "/api/v1/storage/download/custom/{*path}", "as stream/custom, as an attachment (?ext= names the file's extension)", storage::download_custom)
            .ok(200, bytes())
            .errors(&[400, 404]),
        route(Get, "/api/v1/storage/download/{*path}", "an object's bytes as an attachment (?ext= names the file's extension)", storage::download)
            .ok(200, bytes())
            .errors(&[400, 404]),
    ]
}

/// The OpenAPI 3 document of [`routes`].
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in routes() {
        let success_type = if route.success.1["format"] == "binary" {
            "application/octet-stream"
        } else {
            "application/json"
        };
        let mut operation = json!({
            "summary": route.summary,
            "responses": {
                route.success.0.to_string(): {
                    "description": "success",
                    "content": {success_type: {"schema": route.success.1}},
                },
                "401": {
                    "description": "a token is configured and the request lacks it",
                    "content": {"application/json": {"schema": object(&["error"], json!({"error": {"type": "string", "enum": ["Unauthorized"]}}))}},
                },
            },
        });
        for status in route.errors {
            operation["responses"][status.to_string()] = json!({
                "description": "error",
                "content": {"application/json": {"schema": reference("Error")}},
            });
        }
        // axum's catch-all `{*path}` is OpenAPI's `{path}` (a value that may hold slashes).
        let path = route.path.replace("{*", "{");
        let parameters: Vec<Value> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": string()}))
            .collect();
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        match &route.request {
            RequestBody::None => {}
            RequestBody::Json(schema) => {
                operation["requestBody"] =
                    json!({"required": true, "content": {"application/json": {"schema": schema}}});
            }
            RequestBody::Multipart(fields) => {
                operation["requestBody"] = json!({"required": true, "content": {
                    "multipart/form-data": {"schema": {"type": "object", "required": ["payload"], "properties": fields}},
                }});
            }
        }
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[route.verb.as_str()] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "hkube API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "HKube-compatible REST API (the subset hkube serves today)",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": object(&["error"], json!({"error": object(&["code", "message"], json!({
                    "code": {"type": "integer"}, "message": string(), "details": {},
                }))})),
                "Pipeline": object(&["name"], json!({
                    "name": string(), "nodes": array(object(&["nodeName"], json!({
                        "nodeName": string(), "algorithmName": string(), "input": {"type": "array"},
                    }))),
                    "flowInput": {"type": "object"}, "options": {"type": "object"},
                    "priority": {"type": "integer", "minimum": 1, "maximum": 5},
                })),
                "Algorithm": object(&["name"], json!({
                    "name": string(), "algorithmImage": string(), "env": string(),
                    "cpu": {"type": "number"}, "mem": string(), "minHotWorkers": {"type": "integer"},
                })),
                "Version": object(&["version", "semver", "versionAlias", "name", "created", "createdBy", "algorithm"], json!({
                    "version": string(), "semver": string(), "versionAlias": string(), "name": string(),
                    "created": integer(), "createdBy": string(), "algorithm": reference("Algorithm"),
                })),
                "Job": object(&["jobId", "pipeline", "status"], json!({
                    "jobId": string(),
                    "pipeline": object(&["name"], json!({
                        "name": string(), "experimentName": string(), "types": array(string()),
                        "tags": array(string()), "startTime": integer(), "nodes": {"type": "array"},
                    })),
                    "status": reference("Status"), "result": reference("Result"),
                })),
                "Status": object(&["jobId", "status"], json!({
                    "jobId": string(), "pipeline": string(), "status": string(), "level": string(),
                    "timestamp": {"type": "integer"}, "data": object(&[], json!({
                        "progress": {"type": "number"}, "states": {"type": "object"}, "details": string(),
                    })),
                })),
                "Result": object(&["jobId", "status"], json!({
                    "jobId": string(), "pipeline": string(), "status": string(),
                    "data": array(object(&["nodeName", "algorithmName"], json!({
                        "nodeName": string(), "algorithmName": string(), "batchIndex": {"type": "integer"},
                        "result": {}, "error": string(), "info": {"type": "object"},
                    }))),
                    "error": string(), "nodeName": string(), "reason": string(),
                    "timestamp": {"type": "integer"}, "timeTook": {"type": "number"},
                    "storageModule": string(),
                })),
            },
        },
    })
}
