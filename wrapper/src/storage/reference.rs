//! A value kept in storage, referred to by a small JSON object instead of carried inline:
//! `{"$$hkubeRef": {"path": "<cluster>-hkube/<jobId>/<taskId>", "size": <payload bytes>}}`.
//!
//! hkube's runtimes write large results (bytes) to storage and answer with a reference; the
//! engine keeps the reference as the task's output; a runtime that receives one reads the
//! object itself. Nothing large crosses a socket or is held twice.

use serde_json::{json, Value};

/// The only key of a reference object.
pub const REFERENCE_KEY: &str = "$$hkubeRef";

/// A reference to the object at `path`.
pub fn reference(path: &str, size: u64) -> Value {
    json!({ REFERENCE_KEY: { "path": path, "size": size } })
}

/// The path and size a reference names; `None` for any other value.
pub fn as_reference(value: &Value) -> Option<(&str, u64)> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    let inner = map.get(REFERENCE_KEY)?;
    let path = inner.get("path")?.as_str()?;
    let size = inner.get("size").and_then(Value::as_u64).unwrap_or(0);
    Some((path, size))
}

/// `1.5 GB`-style sizes, as HKube's "data too large" message shows them.
pub fn pretty_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_look_alikes() {
        let value = reference("local-hkube/j/t", 42);
        assert_eq!(as_reference(&value), Some(("local-hkube/j/t", 42)));
        assert_eq!(as_reference(&json!({"$$hkubeRef": {"path": 1}})), None);
        assert_eq!(
            as_reference(&json!({"$$hkubeRef": {"path": "p"}, "other": 1})),
            None
        );
        assert_eq!(as_reference(&json!("$$hkubeRef")), None);
        assert_eq!(pretty_size(999), "999 B");
        assert_eq!(pretty_size(268_435_456), "268.4 MB");
    }
}
