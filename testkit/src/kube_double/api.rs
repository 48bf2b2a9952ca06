//! The double's HTTP side: enough of the Kubernetes REST API for kube-rs (version,
//! discovery, core/v1 objects: create, get, list, watch, replace, patch, delete,
//! deletecollection), errors as the real server's `Status` objects, and every request
//! recorded for the tests.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::selector::{FieldSelector, LabelSelector};
use super::store::{Event, Key, Refused};
use super::{Cluster, Recorded};

/// The resources the double serves: plural, kind, namespaced.
pub const RESOURCES: [(&str, &str, bool); 6] = [
    ("pods", "Pod", true),
    ("services", "Service", true),
    ("configmaps", "ConfigMap", true),
    ("secrets", "Secret", true),
    ("events", "Event", true),
    ("nodes", "Node", false),
];

fn kind_of(resource: &str) -> Option<(&'static str, bool)> {
    RESOURCES
        .iter()
        .find(|(plural, _, _)| *plural == resource)
        .map(|(_, kind, namespaced)| (*kind, *namespaced))
}

/// A Kubernetes `Status` error, as the real server writes it.
fn failure(code: StatusCode, reason: &str, message: String, details: Option<Value>) -> Response {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()
    });
    if let Some(details) = details {
        body["details"] = details;
    }
    (code, axum::Json(body)).into_response()
}

fn not_found(resource: &str, name: &str) -> Response {
    failure(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{resource} \"{name}\" not found"),
        Some(json!({"name": name, "kind": resource})),
    )
}

fn bad_request(message: String) -> Response {
    failure(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

fn ok(value: Value) -> Response {
    axum::Json(value).into_response()
}

/// What a path names.
#[derive(Debug, PartialEq)]
enum Target {
    Version,
    Api,
    ApiV1,
    Apis,
    Namespace(String),
    Collection {
        resource: String,
        namespace: Option<String>,
    },
    Item {
        resource: String,
        namespace: Option<String>,
        name: String,
        sub: Option<String>,
    },
}

fn target(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let owned = |s: &&str| s.to_string();
    Some(match parts.as_slice() {
        ["version"] => Target::Version,
        ["api"] => Target::Api,
        ["api", "v1"] => Target::ApiV1,
        ["apis"] => Target::Apis,
        ["api", "v1", "namespaces", ns] => Target::Namespace(ns.to_string()),
        ["api", "v1", "namespaces", ns, resource] => Target::Collection {
            resource: owned(resource),
            namespace: Some(owned(ns)),
        },
        ["api", "v1", "namespaces", ns, resource, name, rest @ ..] if rest.len() <= 1 => {
            Target::Item {
                resource: owned(resource),
                namespace: Some(owned(ns)),
                name: owned(name),
                sub: rest.first().map(owned),
            }
        }
        ["api", "v1", resource] => Target::Collection {
            resource: owned(resource),
            namespace: None,
        },
        ["api", "v1", resource, name, rest @ ..] if rest.len() <= 1 => Target::Item {
            resource: owned(resource),
            namespace: None,
            name: owned(name),
            sub: rest.first().map(owned),
        },
        _ => return None,
    })
}

/// Every request lands here: recorded, then served.
pub async fn handle(
    State(cluster): State<Arc<Cluster>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: Vec<(String, String)> = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let parsed_body = (!body.is_empty()).then(|| {
        serde_json::from_slice::<Value>(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    });
    cluster.record(Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: query.clone(),
        body: parsed_body.clone(),
    });
    let query: HashMap<String, String> = query.into_iter().collect();
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let Some(target) = target(uri.path()) else {
        return failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "the server could not find the requested resource (the Kubernetes double serves /version, /api, /api/v1 and core/v1 objects; not {})",
                uri.path()
            ),
            None,
        );
    };
    serve(
        &cluster,
        &method,
        target,
        &query,
        parsed_body,
        &content_type,
    )
    .await
}

async fn serve(
    cluster: &Arc<Cluster>,
    method: &Method,
    target: Target,
    query: &HashMap<String, String>,
    body: Option<Value>,
    content_type: &str,
) -> Response {
    match (method.clone(), target) {
        (Method::GET, Target::Version) => ok(json!({
            "major": "1", "minor": "34", "gitVersion": "v1.34.0-hkube-double",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"
        })),
        (Method::GET, Target::Api) => ok(json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": cluster.address}]
        })),
        (Method::GET, Target::Apis) => {
            ok(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}))
        }
        (Method::GET, Target::ApiV1) => ok(resource_list()),
        (Method::GET, Target::Namespace(name)) => ok(json!({
            "kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": name}, "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}
        })),
        (
            method,
            Target::Collection {
                resource,
                namespace,
            },
        ) => {
            let Some((kind, namespaced)) = kind_of(&resource) else {
                return unknown_resource(&resource);
            };
            if !namespaced && namespace.is_some() {
                return unknown_resource(&resource);
            }
            let selection = match Selection::of(query) {
                Ok(selection) => selection,
                Err(message) => return bad_request(message),
            };
            match method {
                Method::GET if is_true(query.get("watch")) => {
                    watch(cluster, &resource, kind, namespace, query, selection)
                }
                Method::GET => list(
                    cluster,
                    &resource,
                    kind,
                    namespace.as_deref(),
                    query,
                    &selection,
                ),
                Method::POST => {
                    let Some(namespace) = namespace.or_else(|| (!namespaced).then(String::new))
                    else {
                        return failure(
                            StatusCode::METHOD_NOT_ALLOWED,
                            "MethodNotAllowed",
                            format!("create {resource} needs a namespace in the path"),
                            None,
                        );
                    };
                    create(cluster, &resource, kind, &namespace, body, query)
                }
                Method::DELETE => delete_collection(
                    cluster,
                    &resource,
                    kind,
                    namespace.as_deref(),
                    &selection,
                    body.as_ref(),
                    query,
                ),
                other => failure(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    format!("the Kubernetes double does not serve {other} on a collection"),
                    None,
                ),
            }
        }
        (
            method,
            Target::Item {
                resource,
                namespace,
                name,
                sub,
            },
        ) => {
            let Some((kind, namespaced)) = kind_of(&resource) else {
                return unknown_resource(&resource);
            };
            if namespaced != namespace.is_some() {
                return unknown_resource(&resource);
            }
            let key = Key {
                resource: resource.clone(),
                namespace: namespace.unwrap_or_default(),
                name: name.clone(),
            };
            match (method, sub.as_deref()) {
                (Method::GET, None | Some("status")) => match cluster.store.get(&key) {
                    Some(object) => ok(typed(object, kind)),
                    None => not_found(&resource, &name),
                },
                (Method::GET, Some("log")) if resource == "pods" => logs(cluster, &key, query),
                (Method::PUT, None | Some("status")) => {
                    replace(cluster, &key, kind, body, sub.is_some())
                }
                (Method::PATCH, None | Some("status")) => {
                    patch(cluster, &key, kind, body, content_type, sub.is_some())
                }
                (Method::DELETE, None) => {
                    let grace = grace_period(body.as_ref(), query);
                    match cluster.delete(&key, grace) {
                        Some(object) => ok(typed(object, kind)),
                        None => not_found(&resource, &name),
                    }
                }
                (method, sub) => failure(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    format!(
                        "the Kubernetes double does not serve {method} on {resource}{}",
                        sub.map(|s| format!("/{s}")).unwrap_or_default()
                    ),
                    None,
                ),
            }
        }
        (method, _) => failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the Kubernetes double does not serve {method} there"),
            None,
        ),
    }
}

fn unknown_resource(resource: &str) -> Response {
    let known: Vec<&str> = RESOURCES.iter().map(|(plural, _, _)| *plural).collect();
    failure(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!(
            "the server could not find the requested resource {resource:?} (the Kubernetes double serves core/v1 {})",
            known.join(", ")
        ),
        None,
    )
}

fn is_true(value: Option<&String>) -> bool {
    matches!(value.map(String::as_str), Some("true" | "1"))
}

fn resource_list() -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .flat_map(|(plural, kind, namespaced)| {
            let verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
            let mut entries = vec![json!({
                "name": plural, "singularName": kind.to_lowercase(), "namespaced": namespaced,
                "kind": kind, "verbs": verbs
            })];
            if *plural == "pods" || *plural == "nodes" || *plural == "services" {
                entries.push(json!({
                    "name": format!("{plural}/status"), "singularName": "", "namespaced": namespaced,
                    "kind": kind, "verbs": ["get", "patch", "update"]
                }));
            }
            entries
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": resources})
}

/// Items always carry their kind and apiVersion (k8s-openapi's types check them).
fn typed(mut object: Value, kind: &str) -> Value {
    object["kind"] = json!(kind);
    object["apiVersion"] = json!("v1");
    object
}

struct Selection {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selection {
    fn of(query: &HashMap<String, String>) -> Result<Selection, String> {
        let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?;
        let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))?;
        Ok(Selection { labels, fields })
    }

    fn keeps(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }

    /// What a watch with this selection says of an event, as the real server: a change that
    /// takes an object out of the selection is its DELETED, one that brings it in its ADDED.
    fn seen_as(&self, event: &Event) -> Option<&'static str> {
        let now = self.keeps(&event.object);
        let before = event.previous.as_ref().map(|p| self.keeps(p));
        match (event.kind, before, now) {
            ("MODIFIED", Some(true), false) => Some("DELETED"),
            ("MODIFIED", Some(false), true) => Some("ADDED"),
            (kind, _, true) => Some(kind),
            _ => None,
        }
    }
}

fn list(
    cluster: &Cluster,
    resource: &str,
    kind: &str,
    namespace: Option<&str>,
    query: &HashMap<String, String>,
    selection: &Selection,
) -> Response {
    let (items, revision) = cluster.store.list(resource, namespace);
    let mut items: Vec<Value> = items
        .into_iter()
        .filter(|object| selection.keeps(object))
        .map(|object| typed(object, kind))
        .collect();
    // Pages: `continue` is the offset of the next item (the double's lists are small and
    // always current, so a later page may see later changes, as the real server's may not).
    let offset: usize = query
        .get("continue")
        .and_then(|token| token.parse().ok())
        .unwrap_or(0);
    let limit: Option<usize> = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0);
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    items = items.into_iter().skip(offset).collect();
    if let Some(limit) = limit {
        if items.len() > limit {
            items.truncate(limit);
            metadata["continue"] = json!((offset + limit).to_string());
        }
    }
    ok(
        json!({"kind": format!("{kind}List"), "apiVersion": "v1", "metadata": metadata, "items": items}),
    )
}

fn create(
    cluster: &Arc<Cluster>,
    resource: &str,
    kind: &str,
    namespace: &str,
    body: Option<Value>,
    query: &HashMap<String, String>,
) -> Response {
    if query.contains_key("dryRun") {
        return bad_request("the Kubernetes double does not support dryRun".into());
    }
    let Some(object) = body.filter(Value::is_object) else {
        return bad_request(format!("the body of a {kind} create must be a JSON object"));
    };
    if let Some(given) = object["kind"].as_str() {
        if given != kind {
            return bad_request(format!(
                "the object's kind {given:?} is not {kind:?}, which {resource} holds"
            ));
        }
    }
    if let Some(given) = object["metadata"]["namespace"].as_str() {
        if !given.is_empty() && given != namespace {
            return bad_request(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            );
        }
    }
    match cluster.create(resource, namespace, typed(object, kind)) {
        Ok(object) => (StatusCode::CREATED, axum::Json(object)).into_response(),
        Err((Refused::AlreadyExists, name)) => failure(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
            Some(json!({"name": name, "kind": resource})),
        ),
        Err((Refused::Invalid(why), _)) => failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{kind} is invalid: {why}"),
            None,
        ),
        Err((refused, name)) => bad_request(format!("{resource} \"{name}\": {refused:?}")),
    }
}

fn replace(
    cluster: &Cluster,
    key: &Key,
    kind: &str,
    body: Option<Value>,
    status_only: bool,
) -> Response {
    let Some(mut object) = body.filter(Value::is_object) else {
        return bad_request(format!(
            "the body of a {kind} replace must be a JSON object"
        ));
    };
    if object["metadata"]["name"]
        .as_str()
        .is_some_and(|name| name != key.name)
    {
        return bad_request("the name of the object does not match the name on the URL".into());
    }
    if let Some(stored) = cluster.store.get(key) {
        // /status changes the status only; the object itself keeps its status.
        if status_only {
            let status = object["status"].clone();
            let version = object["metadata"]["resourceVersion"].clone();
            object = stored;
            object["status"] = status;
            object["metadata"]["resourceVersion"] = version;
        } else {
            object["status"] = stored["status"].clone();
        }
    }
    match cluster.store.replace(key, typed(object, kind)) {
        Ok(object) => ok(object),
        Err(Refused::NotFound) => not_found(&key.resource, &key.name),
        Err(_) => failure(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                key.resource, key.name
            ),
            Some(json!({"name": key.name, "kind": key.resource})),
        ),
    }
}

fn patch(
    cluster: &Cluster,
    key: &Key,
    kind: &str,
    body: Option<Value>,
    content_type: &str,
    status_only: bool,
) -> Response {
    let Some(body) = body else {
        return bad_request("a patch needs a body".into());
    };
    let mut failed = None;
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let updated = cluster.store.update(key, |object| {
        let before = object.clone();
        let applied = match media.as_str() {
            "application/merge-patch+json" => {
                json_patch::merge(object, &body);
                Ok(())
            }
            "application/json-patch+json" => serde_json::from_value::<json_patch::Patch>(body.clone())
                .map_err(|e| e.to_string())
                .and_then(|p| json_patch::patch(object, &p).map_err(|e| e.to_string())),
            other => Err(format!(
                "the Kubernetes double applies merge and JSON patches only, not {other:?} (strategic merge and server-side apply are not implemented)"
            )),
        };
        // /status changes the status only; the object itself keeps its status.
        if applied.is_ok() {
            let status = object.get("status").cloned();
            let (mut result, status) = if status_only {
                (before.clone(), status)
            } else {
                (object.clone(), before.get("status").cloned())
            };
            match (result.as_object_mut(), status) {
                (Some(map), Some(status)) => {
                    map.insert("status".into(), status);
                }
                (Some(map), None) => {
                    map.remove("status");
                }
                _ => {}
            }
            *object = result;
        }
        match applied {
            Ok(()) => true,
            Err(error) => {
                failed = Some(error);
                false
            }
        }
    });
    match (updated, failed) {
        (_, Some(error)) if error.contains("applies merge") => failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            error,
            None,
        ),
        (_, Some(error)) => failure(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", error, None),
        (Some(object), None) => ok(typed(object, kind)),
        (None, None) => not_found(&key.resource, &key.name),
    }
}

/// `pods/NAME/log`: a container's output, from the engine the kubelet runs it on.
fn logs(cluster: &Cluster, key: &Key, query: &HashMap<String, String>) -> Response {
    let Some(pod) = cluster.store.get(key) else {
        return not_found("pods", &key.name);
    };
    let statuses = pod["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match query.get("container") {
        Some(name) => name.clone(),
        None if names.len() == 1 => names[0].to_string(),
        None => {
            return bad_request(format!(
                "a container name must be specified for pod {}, choose one of: [{}]",
                key.name,
                names.join(" ")
            ))
        }
    };
    let status = statuses.iter().find(|s| s["name"] == container.as_str());
    let id = status
        .and_then(|s| s["containerID"].as_str())
        .map(|id| id.trim_start_matches("docker://").to_string());
    let (Some(kubelet), Some(id)) = (&cluster.kubelet, id) else {
        let reason = status
            .and_then(|s| s["state"]["waiting"]["reason"].as_str())
            .unwrap_or("ContainerCreating");
        return bad_request(format!(
            "container \"{container}\" in pod \"{}\" is waiting to start: {reason}",
            key.name
        ));
    };
    if is_true(query.get("previous"))
        || query.contains_key("sinceSeconds")
        || query.contains_key("sinceTime")
    {
        return bad_request("the Kubernetes double serves a container's current log only (no previous, sinceSeconds, sinceTime)".into());
    }
    let stream = kubelet.logs(
        &id,
        is_true(query.get("follow")),
        query.get("tailLines").cloned(),
    );
    Response::builder()
        .header("content-type", "text/plain")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// gracePeriodSeconds from the DeleteOptions body or the query.
fn grace_period(body: Option<&Value>, query: &HashMap<String, String>) -> Option<i64> {
    body.and_then(|b| b["gracePeriodSeconds"].as_i64())
        .or_else(|| query.get("gracePeriodSeconds").and_then(|g| g.parse().ok()))
}

fn delete_collection(
    cluster: &Arc<Cluster>,
    resource: &str,
    kind: &str,
    namespace: Option<&str>,
    selection: &Selection,
    body: Option<&Value>,
    query: &HashMap<String, String>,
) -> Response {
    let grace = grace_period(body, query);
    let (items, _) = cluster.store.list(resource, namespace);
    let mut deleted = Vec::new();
    for object in items.iter().filter(|object| selection.keeps(object)) {
        let key = Key {
            resource: resource.to_string(),
            namespace: object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            name: object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        };
        if let Some(object) = cluster.delete(&key, grace) {
            deleted.push(typed(object, kind));
        }
    }
    let revision = cluster.store.revision();
    ok(json!({"kind": format!("{kind}List"), "apiVersion": "v1",
              "metadata": {"resourceVersion": revision.to_string()}, "items": deleted}))
}

/// A watch: JSON lines, one event each, sent as the changes happen.
fn watch(
    cluster: &Cluster,
    resource: &str,
    kind: &str,
    namespace: Option<String>,
    query: &HashMap<String, String>,
    selection: Selection,
) -> Response {
    let since = match query.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => None,
        Some(text) => match text.parse::<u64>() {
            Ok(version) => Some(version),
            Err(_) => return bad_request(format!("invalid resourceVersion {text:?}")),
        },
    };
    let initial_events = is_true(query.get("sendInitialEvents"));
    let bookmarks = is_true(query.get("allowWatchBookmarks"));
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let (first, receiver, revision) = cluster.store.watch(resource, namespace.as_deref(), since);
    let kind = kind.to_string();
    let line = {
        let kind = kind.clone();
        move |event_type: &str, object: Value| -> Bytes {
            let mut text = json!({"type": event_type, "object": typed(object, &kind)}).to_string();
            text.push('\n');
            Bytes::from(text)
        }
    };
    let mut queue: VecDeque<Bytes> = first
        .into_iter()
        .filter_map(|event| {
            let kind = selection.seen_as(&event)?;
            Some(line(kind, event.object))
        })
        .collect();
    if bookmarks || initial_events {
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if initial_events {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        queue.push_back(line("BOOKMARK", json!({"metadata": metadata})));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let state = (queue, receiver, selection, line);
    let stream = futures_util::stream::unfold(state, move |mut state| async move {
        loop {
            if let Some(next) = state.0.pop_front() {
                return Some((Ok::<Bytes, Infallible>(next), state));
            }
            let event: Option<Event> = tokio::select! {
                event = state.1.recv() => event,
                () = tokio::time::sleep_until(deadline) => None,
            };
            let event = event?;
            if let Some(kind) = state.2.seen_as(&event) {
                let bytes = (state.3)(kind, event.object);
                state.0.push_back(bytes);
            }
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_targets() {
        assert_eq!(target("/version"), Some(Target::Version));
        assert_eq!(
            target("/api/v1/namespaces/ns/pods/p/status"),
            Some(Target::Item {
                resource: "pods".into(),
                namespace: Some("ns".into()),
                name: "p".into(),
                sub: Some("status".into())
            })
        );
        assert_eq!(
            target("/api/v1/nodes"),
            Some(Target::Collection {
                resource: "nodes".into(),
                namespace: None
            })
        );
        assert_eq!(target("/apis/batch/v1/jobs"), None);
    }
}
