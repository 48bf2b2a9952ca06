//! Pipeline and algorithm descriptors: reading them (JSON or YAML), HKube's schema checks with
//! its error texts, and its defaults (reference §1, §1.8, §1.9 steps 1–2, §4).
//!
//! Pure: values in, values out. Nothing here touches files, clocks or the network; checks that
//! need the store (does the algorithm exist?) or the graph (cycles, unknown nodes) live in the
//! engine's submission step and in [`crate::dag`].

mod algorithm;
mod error;
mod input;
mod limits;
mod pipeline;
mod schema;
mod warnings;

pub use algorithm::{
    parse_algorithm, parse_memory_mi, Algorithm, AlgorithmOptions, AlgorithmType, CodeEnv,
    GitRepository, HKUBE_EXTENSION,
};
pub use error::Error;
pub use input::{InputExpr, Reference, Sign, Source, MAX_RANGE_ITEMS};
pub use limits::{check_node_count, MAX_DESCRIPTOR_BYTES, MAX_NAME_LENGTH, MAX_NODES};
pub use pipeline::{
    BatchOperation, ConcurrentPipelines, Cron, Edge, Level, Node, NodeKind, Options, Pipeline,
    PipelineKind, Retry, RetryPolicy, StateType, Streaming, Triggers, Webhooks,
};
pub use warnings::{algorithm_warnings, pipeline_warnings};

use serde_json::Value;

/// Checks a pipeline descriptor the way HKube's `POST /exec/raw` does before it looks at the
/// graph: the schema (first error wins, ajv's texts), type coercion (`"3"` → 3), the defaults of
/// §1.8, then the node-list rules (at least one node, at most one output node, debugOverride,
/// stream stateless counts). hkube's own limits (docs/semantics.md) come first: the size of the
/// descriptor without its flowInput, then within the schema the name lengths, and the node
/// count with the node-list rules.
pub fn parse_pipeline(value: Value) -> Result<Pipeline, Error> {
    limits::check_descriptor_size(&value)?;
    let mut value = schema::check_pipeline(value)?;
    // The flowInput can be the bulk of a descriptor (a million batch items): it is moved into
    // the typed pipeline as is, not copied through serde's buffering of flattened structs.
    let flow_input = value
        .as_object_mut()
        .and_then(|map| map.remove("flowInput"))
        .filter(|v| !v.is_null());
    let mut pipeline: Pipeline =
        serde_json::from_value(value).map_err(|e| Error::new(format!("invalid pipeline: {e}")))?;
    pipeline.flow_input = flow_input;
    schema::check_node_list(&pipeline)?;
    Ok(pipeline)
}

/// Reads a JSON or YAML document into a value. JSON is tried first, as every JSON text is also
/// YAML but JSON's errors are clearer for JSON input.
pub fn read_document(text: &str) -> Result<Value, Error> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return serde_json::from_str(text).map_err(|e| Error::new(format!("invalid JSON: {e}")));
    }
    serde_yaml_ng::from_str(text).map_err(|e| Error::new(format!("invalid YAML: {e}")))
}
