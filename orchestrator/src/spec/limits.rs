//! hkube's own limits on a descriptor, checked when it is submitted or stored rather than
//! when a job is already running (docs/semantics.md, "Limits"). HKube has none of these: a
//! pipeline with a 10 MB name is stored, and a 10k × 10k cartesian batch is accepted and fails
//! later. The batch-size limit needs the graph and lives in the engine's submission step.
//!
//! Pure: values in, errors out.

use std::io::Write;

use serde_json::Value;

use super::Error;

/// The longest pipeline name or node name, in characters. HKube's schema has no maximum;
/// names end up in job ids' neighbours, log paths and every status document.
pub const MAX_NAME_LENGTH: usize = 128;

/// The most nodes one pipeline may have (counted as written, and again after pipeline nodes
/// are inlined).
pub const MAX_NODES: usize = 1000;

/// The largest descriptor, in bytes of JSON, without its `flowInput` (which carries the data
/// and is bounded by the API's body limit instead).
pub const MAX_DESCRIPTOR_BYTES: usize = 16 << 20;

/// Refuses a descriptor whose JSON, without `flowInput`, is over [`MAX_DESCRIPTOR_BYTES`]. The
/// size is counted while serializing, stopping at the limit, so nothing of that size is
/// allocated.
pub fn check_descriptor_size(value: &Value) -> Result<(), Error> {
    let Some(map) = value.as_object() else {
        return Ok(());
    };
    let mut counter = Counter {
        bytes: 0,
        limit: MAX_DESCRIPTOR_BYTES,
    };
    for (key, item) in map.iter().filter(|(key, _)| *key != "flowInput") {
        counter.bytes += key.len() + 4;
        if serde_json::to_writer(&mut counter, item).is_err() || counter.bytes > counter.limit {
            return Err(Error::new(format!(
                "the pipeline descriptor is larger than {} MiB without its flowInput (the \
                 `{key}` field takes it past the limit); pass large data through flowInput",
                MAX_DESCRIPTOR_BYTES >> 20
            )));
        }
    }
    Ok(())
}

/// The node-count rule, run with the node-list rules and again after expansion.
pub fn check_node_count(count: usize) -> Result<(), Error> {
    if count > MAX_NODES {
        return Err(Error::new(format!(
            "a pipeline may have at most {MAX_NODES} nodes, this one has {count}; split it into \
             pipelines that start one another (triggers or kind \"pipeline\" nodes), or pass the \
             varying part as a batch"
        )));
    }
    Ok(())
}

/// Counts written bytes; fails once past the limit so serialization stops early.
struct Counter {
    bytes: usize,
    limit: usize,
}

impl Write for Counter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.bytes += data.len();
        if self.bytes > self.limit {
            return Err(std::io::Error::other("over the limit"));
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_large_flow_input_is_not_counted_but_a_large_descriptor_is() {
        let big = "x".repeat(MAX_DESCRIPTOR_BYTES);
        assert_eq!(
            check_descriptor_size(&json!({"name": "p", "flowInput": {"data": big}})),
            Ok(())
        );
        let refused = check_descriptor_size(&json!({"name": "p", "description": big}));
        assert_eq!(
            refused.map_err(|e| e.to_string()),
            Err(
                "the pipeline descriptor is larger than 16 MiB without its flowInput (the \
                 `description` field takes it past the limit); pass large data through flowInput"
                    .to_string()
            )
        );
    }

    #[test]
    fn node_count() {
        assert_eq!(check_node_count(MAX_NODES), Ok(()));
        assert!(check_node_count(MAX_NODES + 1).is_err_and(|e| e
            .to_string()
            .starts_with("a pipeline may have at most 1000 nodes, this one has 1001;")));
    }
}
