//! Keys a descriptor names that neither HKube's schema nor hkube knows: a typo such as
//! `inputs:` for `input` or `retyr:` for `retry` passes HKube's schema (its pipeline top level,
//! nodes, options and algorithm descriptors allow extra keys), is stored, and then does
//! nothing, so the mistake shows up much later as an algorithm's "list index out of range".
//!
//! These checks do not refuse anything (HKube accepts the keys, and clients rely on that); they
//! return warnings that the CLI prints and the server logs: `unknown field `inputs` in node A;
//! did you mean `input`?`. Where HKube's schema forbids extra keys (`webhooks`, `triggers`,
//! `concurrentPipelines`), [`super::parse_pipeline`] already refuses them with HKube's error.
//!
//! Pure: a value in, texts out.

use serde_json::{Map, Value};

/// Top-level pipeline keys: HKube's schema (reference §1.1), what its store and job documents
/// add (`version`, `modified`, `created`, `auditTrail`, the runtime fields of §3.1), so a
/// document read back from HKube can be sent again without warnings.
const PIPELINE_KEYS: &[&str] = &[
    "name",
    "kind",
    "experimentName",
    "description",
    "nodes",
    "flowInput",
    "webhooks",
    "options",
    "priority",
    "triggers",
    "tags",
    "streaming",
    "edges",
    "rootJobId",
    "version",
    "externalId",
    "modified",
    "created",
    "auditTrail",
    "jobId",
    "startTime",
    "activeTime",
    "queueTimeSeconds",
    "lastRunResult",
    "types",
    "maxExceeded",
    "flowInputMetadata",
    // hkube's: a cron pipeline's next fire time, shown with the stored pipeline.
    "cronNextRun",
];

/// Node keys: HKube's node schema, the keys its engine reads beyond it (`includeInResults`,
/// `stateType`, `extraData`, `spec`), and `origName`, which pipeline-node expansion writes.
const NODE_KEYS: &[&str] = &[
    "nodeName",
    "algorithmName",
    "input",
    "ttl",
    "includeInResult",
    "includeInResults",
    "metrics",
    "retry",
    "batchOperation",
    "kind",
    "minStatelessCount",
    "maxStatelessCount",
    "stateType",
    "spec",
    "extraData",
    "origName",
    // hkube's result cache.
    "cache",
];

const OPTION_KEYS: &[&str] = &[
    "ttl",
    "activeTtl",
    "batchTolerance",
    "concurrentPipelines",
    "progressVerbosityLevel",
    "debugOverride",
];

const RETRY_KEYS: &[&str] = &["policy", "limit"];
const STREAMING_KEYS: &[&str] = &["defaultFlow", "flows"];
const EDGE_KEYS: &[&str] = &["source", "target", "types"];

/// Algorithm keys (reference §4.1), the server-set ones included, and `code`, the
/// `algorithm.yml` block (`path`, `entryPoint`) that hkubectl's apply file has.
const ALGORITHM_KEYS: &[&str] = &[
    "name",
    // hkube's own extension (the algorithm's own command on the local executor).
    "x-hkube",
    "env",
    "algorithmImage",
    "type",
    "cpu",
    "applyCpuLimits",
    "gpu",
    "mem",
    "reservedMemory",
    "workerCustomResources",
    "minHotWorkers",
    "maxWorkers",
    "quotaGuarantee",
    "options",
    "algorithmEnv",
    "workerEnv",
    "nodeSelector",
    "labels",
    "annotations",
    "mounts",
    "volumes",
    "volumeMounts",
    "sideCars",
    "kaiObject",
    "securityContext",
    "kind",
    "stateType",
    "entryPoint",
    "baseImage",
    "dependencyInstallCmd",
    "gitRepository",
    "downloadFileExt",
    "fileInfo",
    "version",
    "created",
    "modified",
    "auditTrail",
    "errors",
    "unscheduledReason",
    "code",
];

const ALGORITHM_OPTION_KEYS: &[&str] = &["devMode", "devFolder", "pending", "opengl", "debug"];
const CODE_KEYS: &[&str] = &["path", "entryPoint"];

/// Warnings for the unknown keys of a raw pipeline descriptor, in document order: top level,
/// then `options`, `streaming`, each node (with its `retry`), each edge. A value of the wrong
/// shape gets no warning here; the schema check reports it.
pub fn pipeline_warnings(value: &Value) -> Vec<String> {
    let mut warnings = Vec::new();
    let Some(root) = value.as_object() else {
        return warnings;
    };
    unknown_keys(root, PIPELINE_KEYS, "the pipeline", &mut warnings);
    if let Some(options) = root.get("options").and_then(Value::as_object) {
        unknown_keys(options, OPTION_KEYS, "options", &mut warnings);
    }
    if let Some(streaming) = root.get("streaming").and_then(Value::as_object) {
        unknown_keys(streaming, STREAMING_KEYS, "streaming", &mut warnings);
    }
    for (index, node) in items(root, "nodes").enumerate() {
        let Some(node) = node.as_object() else {
            continue;
        };
        let name = match node.get("nodeName") {
            Some(Value::String(name)) => format!("node {name}"),
            _ => format!("nodes[{index}]"),
        };
        unknown_keys(node, NODE_KEYS, &name, &mut warnings);
        if let Some(retry) = node.get("retry").and_then(Value::as_object) {
            unknown_keys(
                retry,
                RETRY_KEYS,
                &format!("the retry of {name}"),
                &mut warnings,
            );
        }
    }
    for (index, edge) in items(root, "edges").enumerate() {
        if let Some(edge) = edge.as_object() {
            unknown_keys(edge, EDGE_KEYS, &format!("edges[{index}]"), &mut warnings);
        }
    }
    warnings
}

/// Warnings for the unknown keys of an algorithm descriptor or an `algorithm.yml`.
pub fn algorithm_warnings(value: &Value) -> Vec<String> {
    let mut warnings = Vec::new();
    let Some(root) = value.as_object() else {
        return warnings;
    };
    let name = match root.get("name") {
        Some(Value::String(name)) => format!("algorithm {name}"),
        _ => "the algorithm".to_string(),
    };
    unknown_keys(root, ALGORITHM_KEYS, &name, &mut warnings);
    if let Some(options) = root.get("options").and_then(Value::as_object) {
        unknown_keys(
            options,
            ALGORITHM_OPTION_KEYS,
            &format!("the options of {name}"),
            &mut warnings,
        );
    }
    if let Some(code) = root.get("code").and_then(Value::as_object) {
        unknown_keys(
            code,
            CODE_KEYS,
            &format!("the code of {name}"),
            &mut warnings,
        );
    }
    warnings
}

fn items<'a>(root: &'a Map<String, Value>, key: &str) -> impl Iterator<Item = &'a Value> {
    root.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn unknown_keys(map: &Map<String, Value>, known: &[&str], place: &str, out: &mut Vec<String>) {
    for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
        let shown = shorten(key);
        out.push(match suggestion(key, known) {
            Some(near) => format!("unknown field `{shown}` in {place}; did you mean `{near}`?"),
            None => format!(
                "unknown field `{shown}` in {place}: it is kept but nothing reads it (known fields: {})",
                known.join(", ")
            ),
        });
    }
}

/// The known key nearest to `key`, when one is near enough to be the intended one: the same
/// letters in another case, a prefix of at least 4 letters either way (`algorithm` for
/// `algorithmName`), or a small edit distance with transpositions counted once (`retyr`).
fn suggestion<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = key.to_lowercase();
    let length = lower.chars().count();
    let limit = (length / 3).clamp(1, 3);
    let mut best: Option<(usize, &str)> = None;
    for &candidate in known {
        let candidate_lower = candidate.to_lowercase();
        let prefix = lower.len().min(candidate_lower.len()) >= 4
            && (candidate_lower.starts_with(&lower) || lower.starts_with(&candidate_lower));
        // The distance is at least the difference in length; a key of megabytes must not
        // cost a distance matrix of its size.
        let distance = if length.abs_diff(candidate_lower.chars().count()) <= limit {
            strsim::damerau_levenshtein(&lower, &candidate_lower)
        } else {
            usize::MAX
        };
        if distance <= limit || prefix {
            let score = if prefix {
                distance.min(limit)
            } else {
                distance
            };
            if best.is_none_or(|(best_score, _)| score < best_score) {
                best = Some((score, candidate));
            }
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// A key is user input of any length: a warning shows at most 64 characters of it.
fn shorten(key: &str) -> String {
    if key.chars().count() <= 64 {
        key.to_string()
    } else {
        format!("{}…", key.chars().take(64).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typos_get_the_near_key() {
        let pipeline = json!({
            "name": "p",
            "nodes": [
                {"nodeName": "A", "algorithmName": "echo", "inputs": [1], "retyr": {"limit": 2}},
                {"nodeName": "B", "algorithm": "echo", "retry": {"limt": 2}, "NodeName": "x"}
            ],
            "option": {"ttl": 3},
            "options": {"tll": 3, "batchTolerence": 10},
            "flowinput": {},
            "edges": [{"source": "A", "taget": "B"}]
        });
        assert_eq!(
            pipeline_warnings(&pipeline),
            vec![
                "unknown field `option` in the pipeline; did you mean `options`?",
                "unknown field `flowinput` in the pipeline; did you mean `flowInput`?",
                "unknown field `tll` in options; did you mean `ttl`?",
                "unknown field `batchTolerence` in options; did you mean `batchTolerance`?",
                "unknown field `inputs` in node A; did you mean `input`?",
                "unknown field `retyr` in node A; did you mean `retry`?",
                "unknown field `algorithm` in node B; did you mean `algorithmName`?",
                "unknown field `NodeName` in node B; did you mean `nodeName`?",
                "unknown field `limt` in the retry of node B; did you mean `limit`?",
                "unknown field `taget` in edges[0]; did you mean `target`?",
            ]
        );
    }

    #[test]
    fn a_key_near_nothing_lists_the_known_ones() {
        let warnings = pipeline_warnings(&json!({
            "name": "p", "nodes": [{"nodeName": "A", "zzz": 1}]
        }));
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with(
                "unknown field `zzz` in node A: it is kept but nothing reads it (known fields: nodeName, algorithmName, input,"
            ),
            "{warnings:?}"
        );
    }

    #[test]
    fn known_keys_and_documents_read_back_give_none() {
        let pipeline = json!({
            "name": "p", "kind": "batch", "experimentName": "main", "priority": 3,
            "nodes": [{"nodeName": "A", "algorithmName": "echo", "input": [], "kind": "algorithm",
                       "minStatelessCount": 0, "retry": {"policy": "OnCrash", "limit": 3},
                       "includeInResults": true, "extraData": {"x": 1}}],
            "options": {"ttl": 3600, "batchTolerance": 80, "progressVerbosityLevel": "info"},
            "version": "abc", "modified": 1, "auditTrail": [], "flowInput": {"x": {"inputs": 1}}
        });
        assert_eq!(pipeline_warnings(&pipeline), Vec::<String>::new());
        // Not objects: the schema reports those, not this module.
        assert!(pipeline_warnings(&json!([1])).is_empty());
        assert!(pipeline_warnings(&json!({"nodes": [1, null], "options": 3})).is_empty());
    }

    #[test]
    fn a_node_without_a_name_is_named_by_its_index() {
        assert_eq!(
            pipeline_warnings(&json!({"nodes": [{"inputs": []}]})),
            vec!["unknown field `inputs` in nodes[0]; did you mean `input`?"]
        );
    }

    #[test]
    fn algorithm_files_are_checked_too() {
        let algorithm = json!({
            "name": "sum", "env": "python", "mem": "256Mi", "minHotWorker": 1,
            "code": {"path": ".", "entrypoint": "main.py"},
            "options": {"devmode": true}
        });
        assert_eq!(
            algorithm_warnings(&algorithm),
            vec![
                "unknown field `minHotWorker` in algorithm sum; did you mean `minHotWorkers`?",
                "unknown field `devmode` in the options of algorithm sum; did you mean `devMode`?",
                "unknown field `entrypoint` in the code of algorithm sum; did you mean `entryPoint`?",
            ]
        );
    }

    #[test]
    fn a_huge_key_is_shortened() {
        let key = "k".repeat(10_000);
        let warnings = pipeline_warnings(&json!({ key: 1 }));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].len() < 600, "{}", warnings[0].len());
    }
}
