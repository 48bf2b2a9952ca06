//! HKube's JSON-schema checks on a raw pipeline descriptor (reference §1, §1.9 steps 1–2), with
//! the error texts its ajv v6 validator produces, so clients that match on them keep working.
//!
//! What ajv does and this module copies:
//! - the **first** error wins; the data root is named `data` and paths are JS-style
//!   (`data.nodes[0].kind`, `data.flows['my-flow']`);
//! - per value, the type is checked first (with coercion, below), then for strings
//!   `maxLength`, `minLength`, `format`; for numbers `maximum`, then `minimum`; for objects
//!   `required`, then unknown keys (where forbidden), then each known property in schema order;
//!   for arrays the items, then `uniqueItems`; `enum` comes last;
//! - `coerceTypes: true`: a value of the wrong scalar type is converted when JavaScript's rules
//!   allow it (`"3"` → 3, `"true"` → true, `3` → `"3"`, `null` → `""`/0/false), and the converted
//!   value is what the rest of the system sees;
//! - HKube's additions: the allowed values of an enum and the name of an unknown key are appended
//!   in parentheses, and name/image format errors are replaced by fixed sentences.
//!
//! The helpers are shared with [`super::algorithm`], which checks algorithm descriptors the same
//! way. This module only looks at the value it is given: it must never consult the store, the
//! clock or the graph (unknown nodes and cycles are [`crate::dag`]'s business).

use serde_json::{Map, Value};

use super::limits::{check_node_count, MAX_NAME_LENGTH};
use super::{Error, NodeKind, Pipeline, PipelineKind, StateType};

pub(super) const PIPELINE_NAME_FORMAT: &str =
    "pipeline name must contain only alphanumeric, dash, dot or underscore";
pub(super) const EXPERIMENT_NAME_FORMAT: &str =
    "experiment name must contain only alphanumeric, dash, dot or underscore";
pub(super) const ALGORITHM_NAME_FORMAT: &str =
    "algorithm name must contain only lower-case alphanumeric, dash or dot";

const PIPELINE_KINDS: &[&str] = &["batch", "stream"];
const NODE_KINDS: &[&str] = &[
    "algorithm",
    "pipeline",
    "debug",
    "dataSource",
    "gateway",
    "output",
    "hyperparamsTuner",
];
pub(super) const STATE_TYPES: &[&str] = &["stateless", "stateful"];
const RETRY_POLICIES: &[&str] = &["Never", "Always", "OnError", "OnCrash"];
const BATCH_OPERATIONS: &[&str] = &["indexed", "cartesian"];
const VERBOSITY_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "critical"];

/// Checks a raw pipeline descriptor against HKube's pipeline schema and returns it coerced, with
/// the defaults of §1.8 written in.
///
/// Key order (first error wins, so the order is part of the contract). Top level follows the
/// table of reference §1.1, HKube's own schema file not being available: `name`, `kind`,
/// `experimentName`, `description`, `nodes`, `flowInput`, `webhooks`, `options`, `priority`,
/// `triggers`, `tags`, `streaming`, `edges`, `rootJobId`. Since only `name` is required and
/// `required` runs before the properties, a missing name is always reported first. Node keys
/// follow HKube's `pipelineNode.yaml` (the order ajv really uses), then the two keys HKube's
/// schema does not name: `nodeName`, `algorithmName`, `input`, `ttl`, `includeInResult`,
/// `metrics`, `retry`, `batchOperation`, `kind`, `minStatelessCount`, `maxStatelessCount`,
/// `includeInResults`, `stateType`. Options follow §1.3 (the same as HKube's `options.yaml`).
pub(super) fn check_pipeline(mut value: Value) -> Result<Value, Error> {
    let root = object(&mut value, "data")?;
    require(root, "data", "name")?;
    property(root, "data", "name", |v, p| {
        let name = string(v, p)?;
        // HKube has no maximum (reference Q12); hkube's is documented in docs/semantics.md.
        length(name, p, Some(1), Some(MAX_NAME_LENGTH))?;
        format(is_pipeline_name(name), PIPELINE_NAME_FORMAT)
    })?;
    property(root, "data", "kind", |v, p| one_of(v, p, PIPELINE_KINDS))?;
    property(root, "data", "experimentName", |v, p| {
        let name = string(v, p)?;
        length(name, p, Some(1), Some(32))?;
        format(is_pipeline_name(name), EXPERIMENT_NAME_FORMAT)
    })?;
    property(root, "data", "description", |v, p| string(v, p).map(drop))?;
    property(root, "data", "nodes", |v, p| {
        for (i, node) in array(v, p)?.iter_mut().enumerate() {
            check_node(node, &format!("{p}[{i}]"))?;
        }
        Ok(())
    })?;
    property(root, "data", "flowInput", object_or_null)?;
    property(root, "data", "webhooks", check_webhooks)?;
    property(root, "data", "options", check_options)?;
    property(root, "data", "priority", |v, p| {
        let priority = integer(v, p)?;
        bounds(priority, p, Some(1.0), Some(5.0))
    })?;
    property(root, "data", "triggers", check_triggers)?;
    property(root, "data", "tags", |v, p| {
        for (i, tag) in array(v, p)?.iter_mut().enumerate() {
            let path = format!("{p}[{i}]");
            length(string(tag, &path)?, &path, Some(1), Some(32))?;
        }
        Ok(())
    })?;
    property(root, "data", "streaming", check_streaming)?;
    property(root, "data", "edges", |v, p| {
        for (i, edge) in array(v, p)?.iter_mut().enumerate() {
            check_edge(edge, &format!("{p}[{i}]"))?;
        }
        Ok(())
    })?;
    property(root, "data", "rootJobId", |v, p| string(v, p).map(drop))?;
    add_pipeline_defaults(root);
    Ok(value)
}

fn check_node(value: &mut Value, path: &str) -> Result<(), Error> {
    let node = object(value, path)?;
    require(node, path, "nodeName")?;
    property(node, path, "nodeName", |v, p| {
        length(string(v, p)?, p, Some(1), Some(MAX_NAME_LENGTH))
    })?;
    property(node, path, "algorithmName", check_algorithm_name)?;
    property(node, path, "input", |v, p| array(v, p).map(drop))?;
    property(node, path, "ttl", |v, p| {
        let ttl = integer(v, p)?;
        bounds(ttl, p, Some(0.0), None)
    })?;
    property(node, path, "includeInResult", |v, p| {
        boolean(v, p).map(drop)
    })?;
    property(node, path, "metrics", |v, p| {
        let metrics = object(v, p)?;
        property(metrics, p, "tensorboard", |v, p| boolean(v, p).map(drop))
    })?;
    property(node, path, "retry", |v, p| {
        let retry = object(v, p)?;
        property(retry, p, "policy", |v, p| one_of(v, p, RETRY_POLICIES))?;
        property(retry, p, "limit", |v, p| {
            let limit = integer(v, p)?;
            bounds(limit, p, Some(1.0), None)
        })
    })?;
    property(node, path, "batchOperation", |v, p| {
        one_of(v, p, BATCH_OPERATIONS)
    })?;
    property(node, path, "kind", |v, p| one_of(v, p, NODE_KINDS))?;
    for key in ["minStatelessCount", "maxStatelessCount"] {
        property(node, path, key, |v, p| {
            let count = integer(v, p)?;
            bounds(count, p, Some(0.0), None)
        })?;
    }
    // Not in HKube's node schema, but the engine reads them (Q1, §1.7); checked here so that a
    // wrong type gets an ajv-style message instead of a deserializer's.
    property(node, path, "includeInResults", |v, p| {
        boolean(v, p).map(drop)
    })?;
    // hkube's result cache (not HKube's).
    property(node, path, "cache", |v, p| boolean(v, p).map(drop))?;
    property(node, path, "stateType", |v, p| one_of(v, p, STATE_TYPES))?;
    // `spec` is kind-specific (HKube checks it with an `anyOf` of seven schemas, whose combined
    // error text is not useful); what the engine needs from it is checked in `check_node_list`
    // and in the expansion of pipeline nodes.
    Ok(())
}

/// `algorithmName` inside a node; the same rules as an algorithm's own `name`.
pub(super) fn check_algorithm_name(value: &mut Value, path: &str) -> Result<(), Error> {
    let name = string(value, path)?;
    length(name, path, Some(1), Some(32))?;
    format(is_algorithm_name(name), ALGORITHM_NAME_FORMAT)
}

fn check_webhooks(value: &mut Value, path: &str) -> Result<(), Error> {
    let webhooks = object(value, path)?;
    no_other_keys(webhooks, path, &["progress", "result"])?;
    for key in ["progress", "result"] {
        property(webhooks, path, key, url)?;
    }
    Ok(())
}

fn check_options(value: &mut Value, path: &str) -> Result<(), Error> {
    let options = object(value, path)?;
    property(options, path, "ttl", |v, p| {
        let ttl = integer(v, p)?;
        bounds(ttl, p, Some(0.0), None)
    })?;
    property(options, path, "activeTtl", |v, p| {
        if let Some(ttl) = integer_or_null(v, p)? {
            bounds(ttl, p, Some(1.0), None)?;
        }
        Ok(())
    })?;
    property(options, path, "batchTolerance", |v, p| {
        let tolerance = integer(v, p)?;
        bounds(tolerance, p, Some(0.0), Some(100.0))
    })?;
    property(options, path, "concurrentPipelines", |v, p| {
        let concurrent = object(v, p)?;
        require(concurrent, p, "amount")?;
        no_other_keys(concurrent, p, &["amount", "rejectOnFailure"])?;
        property(concurrent, p, "amount", |v, p| {
            let amount = integer(v, p)?;
            bounds(amount, p, Some(1.0), Some(10000.0))
        })?;
        property(concurrent, p, "rejectOnFailure", |v, p| {
            boolean(v, p).map(drop)
        })
    })?;
    property(options, path, "progressVerbosityLevel", |v, p| {
        one_of(v, p, VERBOSITY_LEVELS)
    })?;
    property(options, path, "debugOverride", |v, p| {
        let names = array(v, p)?;
        for (i, name) in names.iter_mut().enumerate() {
            string(name, &format!("{p}[{i}]"))?;
        }
        unique_items(names, p)
    })
}

fn check_triggers(value: &mut Value, path: &str) -> Result<(), Error> {
    let triggers = object(value, path)?;
    no_other_keys(triggers, path, &["pipelines", "cron"])?;
    property(triggers, path, "pipelines", |v, p| {
        let names = array(v, p)?;
        for (i, name) in names.iter_mut().enumerate() {
            let item = format!("{p}[{i}]");
            length(string(name, &item)?, &item, Some(1), None)?;
        }
        unique_items(names, p)
    })?;
    property(triggers, path, "cron", |v, p| {
        let cron = object(v, p)?;
        // HKube's schema does not say; without a pattern there is nothing to schedule, so the
        // omission is reported here rather than as a deserializer error.
        require(cron, p, "pattern")?;
        property(cron, p, "pattern", |v, p| {
            let pattern = string(v, p)?;
            if is_cron(pattern) {
                Ok(())
            } else {
                Err(Error::new(format!("{p} should match format \"cron\"")))
            }
        })?;
        property(cron, p, "enabled", |v, p| boolean(v, p).map(drop))
    })
}

fn check_streaming(value: &mut Value, path: &str) -> Result<(), Error> {
    let streaming = object(value, path)?;
    property(streaming, path, "defaultFlow", |v, p| {
        string(v, p).map(drop)
    })?;
    property(streaming, path, "flows", |v, p| {
        for (name, flow) in object(v, p)?.iter_mut() {
            string(flow, &key_path(p, name))?;
        }
        Ok(())
    })
}

fn check_edge(value: &mut Value, path: &str) -> Result<(), Error> {
    let edge = object(value, path)?;
    require(edge, path, "source")?;
    require(edge, path, "target")?;
    property(edge, path, "source", |v, p| string(v, p).map(drop))?;
    property(edge, path, "target", |v, p| string(v, p).map(drop))?;
    property(edge, path, "types", |v, p| {
        for (i, kind) in array(v, p)?.iter_mut().enumerate() {
            string(kind, &format!("{p}[{i}]"))?;
        }
        Ok(())
    })
}

/// The defaults HKube's ajv `useDefaults` writes in (§1.8), so the returned value is what HKube
/// would store. Runs after the checks, so every container touched here is known to be an object.
fn add_pipeline_defaults(root: &mut Map<String, Value>) {
    // Not an HKube default: `nodes` is optional in its schema and a missing list is reported by
    // the node-list rules (`pipeline must have at least one node`, CC-44). Writing the empty
    // list lets the typed `Pipeline` (whose `nodes` is mandatory) reach that rule.
    default(root, "nodes", Value::Array(Vec::new()));
    default(root, "kind", Value::from("batch"));
    default(root, "priority", Value::from(3));
    default(root, "experimentName", Value::from("main"));
    if let Some(options) = root
        .entry("options")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
    {
        default(options, "ttl", Value::from(3600));
        default(options, "batchTolerance", Value::from(80));
        default(options, "progressVerbosityLevel", Value::from("info"));
        if let Some(concurrent) = options
            .get_mut("concurrentPipelines")
            .and_then(Value::as_object_mut)
        {
            default(concurrent, "rejectOnFailure", Value::from(true));
        }
    }
    if let Some(nodes) = root.get_mut("nodes").and_then(Value::as_array_mut) {
        for node in nodes.iter_mut().filter_map(Value::as_object_mut) {
            default(node, "input", Value::Array(Vec::new()));
            default(node, "kind", Value::from("algorithm"));
            default(node, "minStatelessCount", Value::from(0));
            if let Some(retry) = node.get_mut("retry").and_then(Value::as_object_mut) {
                default(retry, "policy", Value::from("OnCrash"));
                default(retry, "limit", Value::from(3));
            }
        }
    }
    if let Some(cron) = root
        .get_mut("triggers")
        .and_then(|t| t.get_mut("cron"))
        .and_then(Value::as_object_mut)
    {
        default(cron, "enabled", Value::from(false));
    }
}

pub(super) fn default(map: &mut Map<String, Value>, key: &str, value: Value) {
    map.entry(key).or_insert(value);
}

/// The node-list rules HKube applies once the schema passed (§1.9 step 2), in HKube's order:
/// at least one node, at most one output node, hyperparameter-tuner specs, `debugOverride`
/// names, then (stream pipelines only) the stateless-count rules.
pub(super) fn check_node_list(pipeline: &Pipeline) -> Result<(), Error> {
    if pipeline.nodes.is_empty() {
        return Err(Error::new("pipeline must have at least one node"));
    }
    check_node_count(pipeline.nodes.len())?;
    let outputs = pipeline
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Output)
        .count();
    if outputs > 1 {
        return Err(Error::new("pipeline can not have more than one output"));
    }
    for node in pipeline
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::HyperparamsTuner)
    {
        check_tuner_spec(&node.node_name, node.spec.as_ref())?;
    }
    for name in &pipeline.options.debug_override {
        if !pipeline.nodes.iter().any(|n| &n.node_name == name) {
            return Err(Error::new("debugOverride node not in nodes list"));
        }
    }
    if pipeline.kind == PipelineKind::Stream {
        // HKube's test is `minStatelessCount !== 0 || maxStatelessCount`: a max of 0 is allowed.
        let stateless = |n: &&super::Node| n.state_type == Some(StateType::Stateless);
        if pipeline.nodes.iter().any(|n| {
            !stateless(&n)
                && (n.min_stateless_count != 0 || n.max_stateless_count.unwrap_or(0) != 0)
        }) {
            return Err(Error::new(
                "Nodes which are not stateType=stateless cant have minStatelessCount or maxStatelessCount",
            ));
        }
        if pipeline.nodes.iter().filter(stateless).any(|n| {
            n.max_stateless_count
                .is_some_and(|max| n.min_stateless_count > max)
        }) {
            return Err(Error::new(
                "maxStatelessCount must be greater or equal to minStatelessCount",
            ));
        }
    }
    Ok(())
}

/// A hyperparameter-tuner node runs `numberOfTrials` executions of `objectivePipeline`; without
/// both there is nothing to run. HKube reports these through a second ajv pass over `spec`
/// (texts rooted at `data`, naming no node); the texts here say which node and what to add.
fn check_tuner_spec(node: &str, spec: Option<&Value>) -> Result<(), Error> {
    let example =
        "\"spec\": {\"numberOfTrials\": 10, \"objectivePipeline\": \"<stored pipeline>\"}";
    let Some(spec) = spec.and_then(Value::as_object) else {
        return Err(Error::new(format!(
            "node \"{node}\" of kind hyperparamsTuner must have a spec object, for example {example}"
        )));
    };
    match spec.get("numberOfTrials") {
        None => {
            return Err(Error::new(format!(
                "node \"{node}\" of kind hyperparamsTuner must have spec.numberOfTrials, for example {example}"
            )))
        }
        Some(trials) if !trials.as_f64().is_some_and(|t| t >= 1.0 && t.fract() == 0.0) => {
            return Err(Error::new(format!(
                "node \"{node}\": spec.numberOfTrials must be a whole number of at least 1, got {trials}"
            )))
        }
        Some(_) => {}
    }
    match spec.get("objectivePipeline") {
        None => Err(Error::new(format!(
            "node \"{node}\" of kind hyperparamsTuner must have spec.objectivePipeline, for example {example}"
        ))),
        Some(Value::String(name)) if !name.is_empty() => Ok(()),
        Some(other) => Err(Error::new(format!(
            "node \"{node}\": spec.objectivePipeline must be the name of a stored pipeline, got {other}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// ajv building blocks. Each takes the value and its JS path, coerces in place where ajv would,
// and returns ajv's message on failure.

/// Runs `check` on `map[key]` when present (absent keys are ajv-valid unless `required`).
pub(super) fn property(
    map: &mut Map<String, Value>,
    path: &str,
    key: &str,
    check: impl FnOnce(&mut Value, &str) -> Result<(), Error>,
) -> Result<(), Error> {
    match map.get_mut(key) {
        Some(value) => check(value, &key_path(path, key)),
        None => Ok(()),
    }
}

/// ajv's path for a property: `.key` for identifiers, `['key']` otherwise.
pub(super) fn key_path(path: &str, key: &str) -> String {
    let mut chars = key.chars();
    let identifier = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if identifier {
        format!("{path}.{key}")
    } else {
        let escaped = key.replace('\\', "\\\\").replace('\'', "\\'");
        format!("{path}['{escaped}']")
    }
}

pub(super) fn type_error(path: &str, types: &str) -> Error {
    Error::new(format!("{path} should be {types}"))
}

pub(super) fn require(map: &Map<String, Value>, path: &str, key: &str) -> Result<(), Error> {
    if map.contains_key(key) {
        Ok(())
    } else {
        Err(Error::new(format!(
            "{path} should have required property '{key}'"
        )))
    }
}

pub(super) fn no_other_keys(
    map: &Map<String, Value>,
    path: &str,
    allowed: &[&str],
) -> Result<(), Error> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(Error::new(format!(
            "{path} should NOT have additional properties ({key})"
        ))),
        None => Ok(()),
    }
}

pub(super) fn object<'a>(
    value: &'a mut Value,
    path: &str,
) -> Result<&'a mut Map<String, Value>, Error> {
    value
        .as_object_mut()
        .ok_or_else(|| type_error(path, "object"))
}

/// `type: object, nullable: true`. ajv coerces `""`, `0` and `false` to null here.
fn object_or_null(value: &mut Value, path: &str) -> Result<(), Error> {
    match value {
        Value::Object(_) | Value::Null => Ok(()),
        _ if coerces_to_null(value) => {
            *value = Value::Null;
            Ok(())
        }
        _ => Err(type_error(path, "object,null")),
    }
}

pub(super) fn array<'a>(value: &'a mut Value, path: &str) -> Result<&'a mut Vec<Value>, Error> {
    value
        .as_array_mut()
        .ok_or_else(|| type_error(path, "array"))
}

/// `type: string`: numbers and booleans become their JS text, null becomes `""`.
pub(super) fn string<'a>(value: &'a mut Value, path: &str) -> Result<&'a str, Error> {
    let coerced = match value {
        Value::String(_) => None,
        Value::Number(n) => Some(js_number_text(n)),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        Value::Array(_) | Value::Object(_) => return Err(type_error(path, "string")),
    };
    if let Some(text) = coerced {
        *value = Value::String(text);
    }
    value.as_str().ok_or_else(|| type_error(path, "string"))
}

/// `type: [string, null]`: null stays null; other values as for [`string`].
pub(super) fn string_or_null<'a>(
    value: &'a mut Value,
    path: &str,
) -> Result<Option<&'a str>, Error> {
    match value {
        Value::Null => Ok(None),
        Value::Array(_) | Value::Object(_) => Err(type_error(path, "string,null")),
        _ => string(value, path).map(Some),
    }
}

/// `minLength`/`maxLength`, counted in characters (ajv counts code points). ajv checks the
/// maximum first.
pub(super) fn length(
    text: &str,
    path: &str,
    min: Option<usize>,
    max: Option<usize>,
) -> Result<(), Error> {
    let count = text.chars().count();
    if let Some(max) = max.filter(|&max| count > max) {
        return Err(Error::new(format!(
            "{path} should NOT be longer than {max} characters"
        )));
    }
    if let Some(min) = min.filter(|&min| count < min) {
        return Err(Error::new(format!(
            "{path} should NOT be shorter than {min} characters"
        )));
    }
    Ok(())
}

/// HKube replaces the text of its own formats (names, images) with a fixed sentence.
pub(super) fn format(valid: bool, message: &str) -> Result<(), Error> {
    if valid {
        Ok(())
    } else {
        Err(Error::new(message))
    }
}

/// A string in HKube's `url` format (`^(f|ht)tps?://`).
pub(super) fn url(value: &mut Value, path: &str) -> Result<(), Error> {
    let text = string(value, path)?;
    if ["http://", "https://", "ftp://", "ftps://"]
        .iter()
        .any(|scheme| text.starts_with(scheme))
    {
        Ok(())
    } else {
        Err(Error::new(format!("{path} should match format \"url\"")))
    }
}

/// `type: string` + `enum`; HKube appends the allowed values.
pub(super) fn one_of(value: &mut Value, path: &str, allowed: &[&str]) -> Result<(), Error> {
    let text = string(value, path)?;
    if allowed.contains(&text) {
        Ok(())
    } else {
        Err(Error::new(format!(
            "{path} should be equal to one of the allowed values ({})",
            allowed.join(",")
        )))
    }
}

/// `type: integer`. Returns the value as f64 for the bound checks (JS numbers are doubles).
pub(super) fn integer(value: &mut Value, path: &str) -> Result<f64, Error> {
    let number = match value {
        Value::Number(n) => n.as_f64().filter(|f| f.fract() == 0.0),
        Value::String(s) => js_to_number(s).filter(|f| f.fract() == 0.0),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Null => Some(0.0),
        Value::Array(_) | Value::Object(_) => None,
    };
    let number = number.ok_or_else(|| type_error(path, "integer"))?;
    // Also turns 3.0 into 3, which JS does not tell apart but serde's integer fields do.
    if !value.is_i64() && !value.is_u64() {
        *value = number_value(number);
    }
    Ok(number)
}

/// `type: [integer, null]`: ajv tries integer coercion first, then `""`/`false` → null.
pub(super) fn integer_or_null(value: &mut Value, path: &str) -> Result<Option<f64>, Error> {
    if value.is_null() {
        return Ok(None);
    }
    match integer(value, path) {
        Ok(number) => Ok(Some(number)),
        Err(_) if coerces_to_null(value) => {
            *value = Value::Null;
            Ok(None)
        }
        Err(_) => Err(type_error(path, "integer,null")),
    }
}

/// `type: number`.
pub(super) fn number(value: &mut Value, path: &str) -> Result<f64, Error> {
    let number = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => js_to_number(s),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Null => Some(0.0),
        Value::Array(_) | Value::Object(_) => None,
    };
    let number = number.ok_or_else(|| type_error(path, "number"))?;
    if !matches!(value, Value::Number(_)) {
        *value = number_value(number);
    }
    Ok(number)
}

/// `type: boolean`: `"true"`/`1` → true, `"false"`/`0`/null → false.
pub(super) fn boolean(value: &mut Value, path: &str) -> Result<bool, Error> {
    let flag = match value {
        Value::Bool(b) => *b,
        Value::String(s) if s == "true" => true,
        Value::String(s) if s == "false" => false,
        Value::Number(n) if n.as_f64() == Some(1.0) => true,
        Value::Number(n) if n.as_f64() == Some(0.0) => false,
        Value::Null => false,
        _ => return Err(type_error(path, "boolean")),
    };
    *value = Value::Bool(flag);
    Ok(flag)
}

/// `maximum` then `minimum`, as ajv orders them.
pub(super) fn bounds(
    number: f64,
    path: &str,
    min: Option<f64>,
    max: Option<f64>,
) -> Result<(), Error> {
    if let Some(max) = max.filter(|&max| number > max) {
        return Err(Error::new(format!(
            "{path} should be <= {}",
            js_float_text(max)
        )));
    }
    if let Some(min) = min.filter(|&min| number < min) {
        return Err(Error::new(format!(
            "{path} should be >= {}",
            js_float_text(min)
        )));
    }
    Ok(())
}

/// ajv's `uniqueItems` for string arrays: it walks from the end, so the pair it reports is
/// (later index, earlier index) of the first duplicate met that way.
fn unique_items(items: &[Value], path: &str) -> Result<(), Error> {
    let mut seen: Vec<(&Value, usize)> = Vec::new();
    for (i, item) in items.iter().enumerate().rev() {
        if let Some((_, j)) = seen.iter().find(|(other, _)| *other == item) {
            return Err(Error::new(format!(
                "{path} should NOT have duplicate items (items ## {j} and {i} are identical)"
            )));
        }
        seen.push((item, i));
    }
    Ok(())
}

fn coerces_to_null(value: &Value) -> bool {
    match value {
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Bool(b) => !b,
        _ => false,
    }
}

/// JavaScript's `+text` for the strings ajv coerces (`text == +text`): surrounding whitespace
/// is ignored, whitespace alone is 0, hex/octal/binary literals are read. Infinity and NaN are
/// refused: a JSON value cannot hold them.
fn js_to_number(text: &str) -> Option<f64> {
    if text.is_empty() {
        return None; // ajv's `data && ...` guard: the empty string is not coerced.
    }
    let trimmed = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if trimmed.is_empty() {
        return Some(0.0);
    }
    for (prefix, radix) in [
        ("0x", 16),
        ("0X", 16),
        ("0o", 8),
        ("0O", 8),
        ("0b", 2),
        ("0B", 2),
    ] {
        if let Some(digits) = trimmed.strip_prefix(prefix) {
            return u64::from_str_radix(digits, radix).ok().map(|n| n as f64);
        }
    }
    // Rust's float parser also takes "inf" and "NaN"; JS spells those differently and they
    // cannot be stored anyway, so only plain decimal notation is let through.
    let decimal = trimmed
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    if !decimal {
        return None;
    }
    trimmed.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// A finite double as a JSON number, integral values as integers so serde's integer fields
/// accept them.
fn number_value(number: f64) -> Value {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if number.fract() == 0.0 && (-TWO_63..TWO_63).contains(&number) {
        Value::from(number as i64)
    } else if number.fract() == 0.0 && (0.0..2.0 * TWO_63).contains(&number) {
        Value::from(number as u64)
    } else {
        serde_json::Number::from_f64(number).map_or(Value::Null, Value::Number)
    }
}

/// JavaScript's `'' + number`.
fn js_number_text(number: &serde_json::Number) -> String {
    if number.is_i64() || number.is_u64() {
        return number.to_string();
    }
    number
        .as_f64()
        .map_or_else(|| number.to_string(), js_float_text)
}

fn js_float_text(number: f64) -> String {
    if number == 0.0 {
        return "0".to_string();
    }
    let magnitude = number.abs();
    if (1e-6..1e21).contains(&magnitude) {
        return if number.fract() == 0.0 {
            format!("{number:.0}")
        } else {
            number.to_string()
        };
    }
    // JS switches to exponent notation outside [1e-6, 1e21) and always signs the exponent.
    let text = format!("{number:e}");
    match text.split_once('e') {
        Some((mantissa, exponent)) if !exponent.starts_with('-') => {
            format!("{mantissa}e+{exponent}")
        }
        _ => text,
    }
}

/// `^[:\-_.A-Za-z0-9]+$`, HKube's pipeline and experiment name charset.
fn is_pipeline_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.'))
}

/// `^[a-z0-9][-a-z0-9.]*[a-z0-9]$`. HKube's regex literal also lets `\` through inside; that
/// is treated as invalid here (Q12): no image or Kubernetes name can contain it.
pub(super) fn is_algorithm_name(name: &str) -> bool {
    let edge = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let chars: Vec<char> = name.chars().collect();
    match chars.as_slice() {
        [first, middle @ .., last] => {
            edge(*first) && edge(*last) && middle.iter().all(|&c| edge(c) || c == '-' || c == '.')
        }
        _ => false,
    }
}

/// A light syntax check standing in for the `cron` package HKube uses: 5 or 6 whitespace-
/// separated fields, each a comma list of `*`, values or `a-b` ranges with an optional `/step`,
/// where values are numbers or month/day names. Value ranges per field are not checked here:
/// the scheduler's parser (`triggers::cron`) checks them when a pipeline is stored or run.
fn is_cron(pattern: &str) -> bool {
    let fields: Vec<&str> = pattern.split_whitespace().collect();
    (5..=6).contains(&fields.len()) && fields.iter().all(|f| f.split(',').all(is_cron_item))
}

fn is_cron_item(item: &str) -> bool {
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => (base, Some(step)),
        None => (item, None),
    };
    if step.is_some_and(|s| s.is_empty() || !s.chars().all(|c| c.is_ascii_digit())) {
        return false;
    }
    if base == "*" {
        return true;
    }
    match base.split_once('-') {
        Some((from, to)) => is_cron_value(from) && is_cron_value(to),
        None => is_cron_value(base),
    }
}

fn is_cron_value(value: &str) -> bool {
    const NAMES: &[&str] = &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec", "sun",
        "mon", "tue", "wed", "thu", "fri", "sat",
    ];
    (!value.is_empty() && value.chars().all(|c| c.is_ascii_digit()))
        || NAMES.contains(&value.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_pipeline;
    use serde_json::json;

    /// A minimal valid pipeline with `patch` merged over it at the top level.
    fn pipeline(patch: Value) -> Value {
        let mut base = json!({
            "name": "p",
            "nodes": [{"nodeName": "A", "algorithmName": "echo", "input": []}]
        });
        if let (Some(base), Some(patch)) = (base.as_object_mut(), patch.as_object()) {
            for (k, v) in patch {
                base.insert(k.clone(), v.clone());
            }
        }
        base
    }

    /// `node` merged over the one node of the minimal pipeline.
    fn with_node(node: Value) -> Value {
        let mut merged = json!({"nodeName": "A", "algorithmName": "echo"});
        if let (Some(merged), Some(node)) = (merged.as_object_mut(), node.as_object()) {
            for (k, v) in node {
                merged.insert(k.clone(), v.clone());
            }
        }
        pipeline(json!({ "nodes": [merged] }))
    }

    /// Runs the whole of `parse_pipeline` (schema, deserialization, node-list rules) and
    /// compares the outcome: `"ok"` or the exact error text.
    fn check(input: Value, expected: &str) {
        let outcome = match parse_pipeline(input.clone()) {
            Ok(_) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        assert_eq!(outcome, expected, "input: {input}");
    }

    /// Checks that the schema step turns `input` into a value whose `pointer` is `expected`.
    fn check_coerced(input: Value, pointer: &str, expected: Value) {
        let coerced = match check_pipeline(input.clone()) {
            Ok(value) => value,
            Err(e) => panic!("input {input} rejected: {e}"),
        };
        assert_eq!(coerced.pointer(pointer), Some(&expected), "input: {input}");
    }

    #[test]
    fn top_level_fields() {
        let cases = [
            (json!([]), "data should be object"),
            (json!("p"), "data should be object"),
            // CC-45
            (
                json!({"nodes": []}),
                "data should have required property 'name'",
            ),
            (pipeline(json!({"name": {}})), "data.name should be string"),
            (
                pipeline(json!({"name": ""})),
                "data.name should NOT be shorter than 1 characters",
            ),
            (
                pipeline(json!({"name": null})),
                "data.name should NOT be shorter than 1 characters",
            ),
            // CC-46
            (pipeline(json!({"name": "exec/raw"})), PIPELINE_NAME_FORMAT),
            (pipeline(json!({"name": "a b"})), PIPELINE_NAME_FORMAT),
            (pipeline(json!({"name": "ok:name-1_2.3"})), "ok"),
            // HKube has no maximum (Q12); hkube's is 128 (docs/semantics.md, Limits).
            (pipeline(json!({"name": "x".repeat(128)})), "ok"),
            (
                pipeline(json!({"kind": "nope"})),
                "data.kind should be equal to one of the allowed values (batch,stream)",
            ),
            (
                pipeline(json!({"experimentName": ""})),
                "data.experimentName should NOT be shorter than 1 characters",
            ),
            (
                pipeline(json!({"experimentName": "e".repeat(33)})),
                "data.experimentName should NOT be longer than 32 characters",
            ),
            (
                pipeline(json!({"experimentName": "my exp"})),
                EXPERIMENT_NAME_FORMAT,
            ),
            (
                pipeline(json!({"description": []})),
                "data.description should be string",
            ),
            (pipeline(json!({"nodes": {}})), "data.nodes should be array"),
            (
                pipeline(json!({"flowInput": [1]})),
                "data.flowInput should be object,null",
            ),
            (pipeline(json!({"flowInput": null})), "ok"),
            // CC-47
            (
                pipeline(json!({"priority": 8})),
                "data.priority should be <= 5",
            ),
            (
                pipeline(json!({"priority": 0})),
                "data.priority should be >= 1",
            ),
            (
                pipeline(json!({"priority": 2.5})),
                "data.priority should be integer",
            ),
            (
                pipeline(json!({"priority": "high"})),
                "data.priority should be integer",
            ),
            (
                pipeline(json!({"tags": ["a", ""]})),
                "data.tags[1] should NOT be shorter than 1 characters",
            ),
            (
                pipeline(json!({"tags": ["t".repeat(33)]})),
                "data.tags[0] should NOT be longer than 32 characters",
            ),
            (pipeline(json!({"tags": "a"})), "data.tags should be array"),
            (
                pipeline(json!({"streaming": []})),
                "data.streaming should be object",
            ),
            (
                pipeline(json!({"streaming": {"flows": {"my-flow": {}}}})),
                "data.streaming.flows['my-flow'] should be string",
            ),
            (
                pipeline(json!({"edges": [{"source": "A"}]})),
                "data.edges[0] should have required property 'target'",
            ),
            (
                pipeline(json!({"edges": [{"source": "A", "target": []}]})),
                "data.edges[0].target should be string",
            ),
            (
                pipeline(json!({"rootJobId": {}})),
                "data.rootJobId should be string",
            ),
            // Unknown top-level keys are accepted (api-server test).
            (pipeline(json!({"stam": 1, "externalId": "x"})), "ok"),
            // `required` runs before the properties.
            (
                json!({"priority": 9}),
                "data should have required property 'name'",
            ),
            // Properties in order: name before nodes before priority.
            (
                json!({"name": "a b", "nodes": 1, "priority": 9}),
                PIPELINE_NAME_FORMAT,
            ),
            (
                json!({"name": "p", "nodes": 1, "priority": 9}),
                "data.nodes should be array",
            ),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    #[test]
    fn node_fields() {
        let kinds = "data.nodes[0].kind should be equal to one of the allowed values \
                     (algorithm,pipeline,debug,dataSource,gateway,output,hyperparamsTuner)";
        let cases = [
            (pipeline(json!({"nodes": [1]})), "data.nodes[0] should be object"),
            (pipeline(json!({"nodes": [{"algorithmName": "echo"}]})), "data.nodes[0] should have required property 'nodeName'"),
            (with_node(json!({"nodeName": ""})), "data.nodes[0].nodeName should NOT be shorter than 1 characters"),
            (with_node(json!({"nodeName": []})), "data.nodes[0].nodeName should be string"),
            (with_node(json!({"algorithmName": "Echo"})), ALGORITHM_NAME_FORMAT),
            (with_node(json!({"algorithmName": "a"})), ALGORITHM_NAME_FORMAT),
            (with_node(json!({"algorithmName": "a\\b"})), ALGORITHM_NAME_FORMAT),
            (with_node(json!({"algorithmName": "-ab"})), ALGORITHM_NAME_FORMAT),
            (with_node(json!({"algorithmName": ""})), "data.nodes[0].algorithmName should NOT be shorter than 1 characters"),
            (with_node(json!({"algorithmName": "a".repeat(33)})), "data.nodes[0].algorithmName should NOT be longer than 32 characters"),
            (with_node(json!({"algorithmName": "my-alg.v2"})), "ok"),
            // CC-55
            (with_node(json!({"input": null})), "data.nodes[0].input should be array"),
            (with_node(json!({"input": "x"})), "data.nodes[0].input should be array"),
            (with_node(json!({"kind": "nope"})), kinds),
            (with_node(json!({"kind": 3})), kinds),
            (with_node(json!({"ttl": -1})), "data.nodes[0].ttl should be >= 0"),
            (with_node(json!({"ttl": 1.5})), "data.nodes[0].ttl should be integer"),
            (with_node(json!({"retry": 1})), "data.nodes[0].retry should be object"),
            (with_node(json!({"retry": {"policy": "Sometimes"}})), "data.nodes[0].retry.policy should be equal to one of the allowed values (Never,Always,OnError,OnCrash)"),
            (with_node(json!({"retry": {"limit": 0}})), "data.nodes[0].retry.limit should be >= 1"),
            (with_node(json!({"batchOperation": "zip"})), "data.nodes[0].batchOperation should be equal to one of the allowed values (indexed,cartesian)"),
            (with_node(json!({"includeInResult": "yes"})), "data.nodes[0].includeInResult should be boolean"),
            (with_node(json!({"includeInResults": []})), "data.nodes[0].includeInResults should be boolean"),
            (with_node(json!({"cache": "yes"})), "data.nodes[0].cache should be boolean"),
            (with_node(json!({"cache": true})), "ok"),
            (with_node(json!({"metrics": {"tensorboard": "x"}})), "data.nodes[0].metrics.tensorboard should be boolean"),
            (with_node(json!({"minStatelessCount": -2})), "data.nodes[0].minStatelessCount should be >= 0"),
            (with_node(json!({"maxStatelessCount": "many"})), "data.nodes[0].maxStatelessCount should be integer"),
            (with_node(json!({"stateType": "solid"})), "data.nodes[0].stateType should be equal to one of the allowed values (stateless,stateful)"),
            (with_node(json!({"extraData": {"any": [1]}, "spec": 5})), "ok"),
            // The second node's path is indexed.
            (pipeline(json!({"nodes": [{"nodeName": "A", "algorithmName": "echo"}, {"nodeName": "B", "algorithmName": "echo", "kind": "x"}]})),
             "data.nodes[1].kind should be equal to one of the allowed values (algorithm,pipeline,debug,dataSource,gateway,output,hyperparamsTuner)"),
            // Within a node, HKube's schema order: input before kind, ttl before retry.
            (with_node(json!({"kind": "x", "input": 1})), "data.nodes[0].input should be array"),
            (with_node(json!({"retry": 1, "ttl": -1})), "data.nodes[0].ttl should be >= 0"),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    #[test]
    fn options_webhooks_triggers() {
        let cases = [
            (pipeline(json!({"options": 1})), "data.options should be object"),
            (pipeline(json!({"options": {"ttl": -5}})), "data.options.ttl should be >= 0"),
            (pipeline(json!({"options": {"activeTtl": 0}})), "data.options.activeTtl should be >= 1"),
            (pipeline(json!({"options": {"activeTtl": "soon"}})), "data.options.activeTtl should be integer,null"),
            (pipeline(json!({"options": {"activeTtl": null}})), "ok"),
            (pipeline(json!({"options": {"batchTolerance": -1}})), "data.options.batchTolerance should be >= 0"),
            (pipeline(json!({"options": {"batchTolerance": 101}})), "data.options.batchTolerance should be <= 100"),
            (pipeline(json!({"options": {"batchTolerance": 20.6}})), "data.options.batchTolerance should be integer"),
            (pipeline(json!({"options": {"batchTolerance": "twenty"}})), "data.options.batchTolerance should be integer"),
            (pipeline(json!({"options": {"batchTolerance": "20"}})), "ok"),
            (pipeline(json!({"options": {"concurrentPipelines": 3}})), "data.options.concurrentPipelines should be object"),
            (pipeline(json!({"options": {"concurrentPipelines": {}}})), "data.options.concurrentPipelines should have required property 'amount'"),
            (pipeline(json!({"options": {"concurrentPipelines": {"amount": 1, "max": 2}}})), "data.options.concurrentPipelines should NOT have additional properties (max)"),
            (pipeline(json!({"options": {"concurrentPipelines": {"amount": 0}}})), "data.options.concurrentPipelines.amount should be >= 1"),
            (pipeline(json!({"options": {"concurrentPipelines": {"amount": 10001}}})), "data.options.concurrentPipelines.amount should be <= 10000"),
            (pipeline(json!({"options": {"concurrentPipelines": {"amount": 2, "rejectOnFailure": "no"}}})), "data.options.concurrentPipelines.rejectOnFailure should be boolean"),
            (pipeline(json!({"options": {"progressVerbosityLevel": "loud"}})), "data.options.progressVerbosityLevel should be equal to one of the allowed values (trace,debug,info,warn,error,critical)"),
            (pipeline(json!({"options": {"debugOverride": "A"}})), "data.options.debugOverride should be array"),
            (pipeline(json!({"options": {"debugOverride": [{}]}})), "data.options.debugOverride[0] should be string"),
            (pipeline(json!({"options": {"debugOverride": ["A", "A"]}})), "data.options.debugOverride should NOT have duplicate items (items ## 1 and 0 are identical)"),
            (pipeline(json!({"options": {"debugOverride": ["A", "B", "A"]}})), "data.options.debugOverride should NOT have duplicate items (items ## 2 and 0 are identical)"),
            (pipeline(json!({"options": {"someFlag": true}})), "ok"),
            // CC-51
            (pipeline(json!({"webhooks": {"progress": "http://x", "no_such_prop": "y"}})), "data.webhooks should NOT have additional properties (no_such_prop)"),
            (pipeline(json!({"webhooks": {"result": "localhost:3000"}})), "data.webhooks.result should match format \"url\""),
            (pipeline(json!({"webhooks": {"progress": "ftp://files"}})), "ok"),
            (pipeline(json!({"webhooks": {"progress": "https://a/b", "result": "http://c"}})), "ok"),
            (pipeline(json!({"webhooks": []})), "data.webhooks should be object"),
            (pipeline(json!({"triggers": {"other": 1}})), "data.triggers should NOT have additional properties (other)"),
            (pipeline(json!({"triggers": {"pipelines": ["a", ""]}})), "data.triggers.pipelines[1] should NOT be shorter than 1 characters"),
            (pipeline(json!({"triggers": {"pipelines": ["a", "a"]}})), "data.triggers.pipelines should NOT have duplicate items (items ## 1 and 0 are identical)"),
            (pipeline(json!({"triggers": {"cron": {"enabled": true}}})), "data.triggers.cron should have required property 'pattern'"),
            (pipeline(json!({"triggers": {"cron": {"pattern": "every day"}}})), "data.triggers.cron.pattern should match format \"cron\""),
            (pipeline(json!({"triggers": {"cron": {"pattern": "* * * *"}}})), "data.triggers.cron.pattern should match format \"cron\""),
            (pipeline(json!({"triggers": {"cron": {"pattern": "1-5/ * * * *"}}})), "data.triggers.cron.pattern should match format \"cron\""),
            (pipeline(json!({"triggers": {"cron": {"pattern": "0 * * * *"}}})), "ok"),
            (pipeline(json!({"triggers": {"cron": {"pattern": "*/5 0 1-3,7 JAN-mar mon-fri"}}})), "ok"),
            (pipeline(json!({"triggers": {"cron": {"pattern": "30 */2 * * * *", "enabled": "true"}}})), "ok"),
            (pipeline(json!({"triggers": {"cron": {"pattern": "0 * * * *", "enabled": "sometimes"}}})), "data.triggers.cron.enabled should be boolean"),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    #[test]
    fn hkube_limits_on_names_and_node_count() {
        let at_limit = "a".repeat(128);
        let over = "a".repeat(129);
        let ten_megabytes = "a".repeat(10 << 20);
        let nodes = |count: usize| {
            (0..count)
                .map(|i| json!({"nodeName": format!("n{i}"), "algorithmName": "echo"}))
                .collect::<Vec<_>>()
        };
        let cases = [
            (pipeline(json!({ "name": at_limit })), "ok".to_string()),
            (
                pipeline(json!({ "name": over })),
                "data.name should NOT be longer than 128 characters".to_string(),
            ),
            (
                pipeline(json!({ "name": ten_megabytes })),
                "data.name should NOT be longer than 128 characters".to_string(),
            ),
            (with_node(json!({ "nodeName": at_limit })), "ok".to_string()),
            (
                with_node(json!({ "nodeName": over })),
                "data.nodes[0].nodeName should NOT be longer than 128 characters".to_string(),
            ),
            (pipeline(json!({ "nodes": nodes(1000) })), "ok".to_string()),
            (
                pipeline(json!({ "nodes": nodes(1001) })),
                "a pipeline may have at most 1000 nodes, this one has 1001; split it into \
                 pipelines that start one another (triggers or kind \"pipeline\" nodes), or \
                 pass the varying part as a batch"
                    .to_string(),
            ),
        ];
        for (input, expected) in cases {
            check(input, &expected);
        }
    }

    #[test]
    fn node_list_rules() {
        let tuner = |spec: Value| with_node(json!({"kind": "hyperparamsTuner", "spec": spec}));
        let stream = |nodes: Value| pipeline(json!({"kind": "stream", "nodes": nodes}));
        let cases = [
            // CC-44
            (json!({"name": "x"}), "pipeline must have at least one node"),
            (pipeline(json!({"nodes": []})), "pipeline must have at least one node"),
            // CC-52
            (pipeline(json!({"nodes": [
                {"nodeName": "A", "algorithmName": "echo"},
                {"nodeName": "o1", "kind": "output"},
                {"nodeName": "o2", "kind": "output"}
            ]})), "pipeline can not have more than one output"),
            (tuner(json!({"numberOfTrials": 5, "objectivePipeline": "obj"})), "ok"),
            (with_node(json!({"kind": "hyperparamsTuner"})),
             "node \"A\" of kind hyperparamsTuner must have a spec object, for example \"spec\": {\"numberOfTrials\": 10, \"objectivePipeline\": \"<stored pipeline>\"}"),
            (tuner(json!({"objectivePipeline": "obj"})),
             "node \"A\" of kind hyperparamsTuner must have spec.numberOfTrials, for example \"spec\": {\"numberOfTrials\": 10, \"objectivePipeline\": \"<stored pipeline>\"}"),
            (tuner(json!({"numberOfTrials": 0, "objectivePipeline": "obj"})),
             "node \"A\": spec.numberOfTrials must be a whole number of at least 1, got 0"),
            (tuner(json!({"numberOfTrials": 3})),
             "node \"A\" of kind hyperparamsTuner must have spec.objectivePipeline, for example \"spec\": {\"numberOfTrials\": 10, \"objectivePipeline\": \"<stored pipeline>\"}"),
            (tuner(json!({"numberOfTrials": 3, "objectivePipeline": ""})),
             "node \"A\": spec.objectivePipeline must be the name of a stored pipeline, got \"\""),
            (pipeline(json!({"options": {"debugOverride": ["A"]}})), "ok"),
            (pipeline(json!({"options": {"debugOverride": ["B"]}})), "debugOverride node not in nodes list"),
            (stream(json!([{"nodeName": "A", "algorithmName": "echo", "stateType": "stateful", "minStatelessCount": 1}])),
             "Nodes which are not stateType=stateless cant have minStatelessCount or maxStatelessCount"),
            (stream(json!([{"nodeName": "A", "algorithmName": "echo", "maxStatelessCount": 2}])),
             "Nodes which are not stateType=stateless cant have minStatelessCount or maxStatelessCount"),
            (stream(json!([{"nodeName": "A", "algorithmName": "echo", "stateType": "stateful", "maxStatelessCount": 0}])), "ok"),
            (stream(json!([{"nodeName": "A", "algorithmName": "echo", "stateType": "stateless", "minStatelessCount": 3, "maxStatelessCount": 2}])),
             "maxStatelessCount must be greater or equal to minStatelessCount"),
            (stream(json!([{"nodeName": "A", "algorithmName": "echo", "stateType": "stateless", "minStatelessCount": 2, "maxStatelessCount": 2}])), "ok"),
            // Batch pipelines skip the stateless-count rules.
            (with_node(json!({"stateType": "stateful", "minStatelessCount": 1})), "ok"),
            // The non-stateless rule is checked over all nodes before the min/max rule.
            (stream(json!([
                {"nodeName": "A", "algorithmName": "echo", "stateType": "stateless", "minStatelessCount": 3, "maxStatelessCount": 2},
                {"nodeName": "B", "algorithmName": "echo", "stateType": "stateful", "minStatelessCount": 1}
            ])), "Nodes which are not stateType=stateless cant have minStatelessCount or maxStatelessCount"),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
    }

    #[test]
    fn scalars_are_coerced_like_ajv() {
        let cases = [
            (pipeline(json!({"priority": "3"})), "/priority", json!(3)),
            (pipeline(json!({"priority": " 4 "})), "/priority", json!(4)),
            (pipeline(json!({"priority": 2.0})), "/priority", json!(2)),
            (pipeline(json!({"priority": true})), "/priority", json!(1)),
            (pipeline(json!({"name": 42})), "/name", json!("42")),
            (pipeline(json!({"name": 1.5})), "/name", json!("1.5")),
            (pipeline(json!({"name": true})), "/name", json!("true")),
            (
                pipeline(json!({"options": {"batchTolerance": "20"}})),
                "/options/batchTolerance",
                json!(20),
            ),
            (
                pipeline(json!({"options": {"ttl": "1e3"}})),
                "/options/ttl",
                json!(1000),
            ),
            (
                pipeline(json!({"options": {"activeTtl": ""}})),
                "/options/activeTtl",
                json!(null),
            ),
            (
                pipeline(json!({"options": {"activeTtl": "60"}})),
                "/options/activeTtl",
                json!(60),
            ),
            (
                pipeline(
                    json!({"options": {"concurrentPipelines": {"amount": "2", "rejectOnFailure": "false"}}}),
                ),
                "/options/concurrentPipelines",
                json!({"amount": 2, "rejectOnFailure": false}),
            ),
            (
                pipeline(json!({"options": {"debugOverride": [1]}})),
                "/options/debugOverride/0",
                json!("1"),
            ),
            (
                pipeline(json!({"flowInput": false})),
                "/flowInput",
                json!(null),
            ),
            (
                with_node(json!({"includeInResult": "true"})),
                "/nodes/0/includeInResult",
                json!(true),
            ),
            (
                with_node(json!({"includeInResults": 0})),
                "/nodes/0/includeInResults",
                json!(false),
            ),
            (with_node(json!({"ttl": "0x10"})), "/nodes/0/ttl", json!(16)),
            (
                with_node(json!({"retry": {"limit": "5"}})),
                "/nodes/0/retry",
                json!({"limit": 5, "policy": "OnCrash"}),
            ),
            (
                with_node(json!({"kind": "output", "nodeName": 7})),
                "/nodes/0/nodeName",
                json!("7"),
            ),
            (pipeline(json!({"tags": [1e21]})), "/tags/0", json!("1e+21")),
        ];
        for (input, pointer, expected) in cases {
            check_coerced(input, pointer, expected);
        }
    }

    #[test]
    fn defaults_of_section_1_8_are_written_in() {
        let coerced = check_pipeline(pipeline(json!({
            "options": {"concurrentPipelines": {"amount": 1}},
            "triggers": {"cron": {"pattern": "0 * * * *"}},
            "nodes": [{"nodeName": "A", "algorithmName": "echo", "retry": {}}]
        })));
        let expected = json!({
            "name": "p",
            "nodes": [{
                "nodeName": "A", "algorithmName": "echo",
                "retry": {"policy": "OnCrash", "limit": 3},
                "input": [], "kind": "algorithm", "minStatelessCount": 0
            }],
            "options": {
                "concurrentPipelines": {"amount": 1, "rejectOnFailure": true},
                "ttl": 3600, "batchTolerance": 80, "progressVerbosityLevel": "info"
            },
            "triggers": {"cron": {"pattern": "0 * * * *", "enabled": false}},
            "kind": "batch", "priority": 3, "experimentName": "main"
        });
        assert_eq!(coerced, Ok(expected));
        // Given values are kept.
        let kept = check_pipeline(pipeline(json!({"priority": 1, "options": {"ttl": 5}})));
        assert_eq!(
            kept.as_ref()
                .map(|v| (v["priority"].clone(), v["options"]["ttl"].clone())),
            Ok((json!(1), json!(5)))
        );
    }

    #[test]
    fn parsed_pipeline_carries_coerced_and_default_values() {
        let parsed = parse_pipeline(pipeline(json!({
            "priority": "2",
            "options": {"batchTolerance": "45"},
            "nodes": [{"nodeName": "A", "algorithmName": "echo", "retry": {"policy": "Always"}}]
        })));
        let Ok(parsed) = parsed else {
            panic!("rejected: {parsed:?}");
        };
        assert_eq!(parsed.priority, 2);
        assert_eq!(parsed.options.batch_tolerance, 45);
        assert_eq!(parsed.options.ttl, 3600);
        assert_eq!(
            parsed.nodes.first().and_then(|n| n.retry),
            Some(crate::spec::Retry {
                policy: crate::spec::RetryPolicy::Always,
                limit: 3
            })
        );
    }

    #[test]
    fn js_number_reading() {
        assert_eq!(js_to_number("3"), Some(3.0));
        assert_eq!(js_to_number(" 3\n"), Some(3.0));
        assert_eq!(js_to_number("   "), Some(0.0));
        assert_eq!(js_to_number(""), None);
        assert_eq!(js_to_number("-1.5e2"), Some(-150.0));
        assert_eq!(js_to_number(".5"), Some(0.5));
        assert_eq!(js_to_number("0b101"), Some(5.0));
        assert_eq!(js_to_number("inf"), None);
        assert_eq!(js_to_number("Infinity"), None);
        assert_eq!(js_to_number("NaN"), None);
        assert_eq!(js_to_number("1e999"), None);
        assert_eq!(js_to_number("3px"), None);
        assert_eq!(js_float_text(0.1), "0.1");
        assert_eq!(js_float_text(-0.0), "0");
        assert_eq!(js_float_text(1e-7), "1e-7");
        assert_eq!(js_float_text(2.5e22), "2.5e+22");
    }

    #[test]
    fn odd_values_never_panic() {
        let odd = [
            json!(null),
            json!(1),
            json!({"name": "p", "nodes": [null, [], {"nodeName": null}]}),
            json!({"name": "p", "nodes": [{"nodeName": "A", "ttl": 1e300}]}),
            json!({"name": "p", "nodes": [{"nodeName": "A", "ttl": -1e300}]}),
            json!({"name": "p", "nodes": [{"nodeName": "A", "ttl": u64::MAX}]}),
            json!({"name": "p", "nodes": [{"nodeName": "A", "ttl": "99999999999999999999999"}]}),
            json!({"name": "p", "nodes": [{"nodeName": "A", "minStatelessCount": "0x"}]}),
            json!({"name": "p", "nodes": [{"nodeName": "\u{1F600}", "algorithmName": "\u{e9}\u{e9}"}]}),
            json!({"name": "p", "options": {"activeTtl": false}, "nodes": [{"nodeName": "A"}]}),
            json!({"name": "p", "triggers": {"cron": {"pattern": "/ - , */"}}, "nodes": []}),
            json!({"name": "p", "options": {"batchTolerance": -0.0}, "nodes": [{"nodeName": "A"}]}),
        ];
        for value in odd {
            // The outcome does not matter here; not panicking does.
            let _ = parse_pipeline(value);
        }
    }
}
