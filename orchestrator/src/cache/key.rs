//! The result cache's key, pure: a content digest of what decides a task's output, the
//! algorithm version and the resolved input.

use serde_json::Value;
use sha2::{Digest, Sha256};
use wrapper::storage::reference;

/// Changes when the key's recipe changes, so old entries are never read with a new meaning.
const RECIPE: &str = "hkube-result-cache-v1";

/// The digest of an algorithm version: its stored descriptor (which names its image, or for
/// built code the image-like name made of the code's digest, and its version) and, for code
/// registered from a folder, the digest of the folder's files.
pub fn algorithm_digest(descriptor: &Value, code_digest: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(RECIPE.as_bytes());
    hasher.update([0]);
    hasher.update(canonical(descriptor).as_bytes());
    hasher.update([0]);
    hasher.update(code_digest.unwrap_or("").as_bytes());
    hex(&hasher.finalize())
}

/// The key of a task: its algorithm version's digest and its resolved input, by value. An
/// input that refers to a stored object counts by the object's path.
pub fn task_key(algorithm_digest: &str, input: &[Value]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(RECIPE.as_bytes());
    hasher.update([0]);
    hasher.update(algorithm_digest.as_bytes());
    hasher.update([0]);
    for item in input {
        hasher.update(canonical(item).as_bytes());
        hasher.update([0]);
    }
    hex(&hasher.finalize())
}

/// JSON text with every object's keys in order: the same value gives the same bytes, however
/// its maps were built (serde_json keeps insertion order in this workspace).
fn canonical(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    write(&map[key], out);
                }
                out.push('}');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// Whether an output can be kept: a reference to a stored object is not, as the object goes
/// with its job (the engine deletes a job's objects when it ends).
pub fn keepable(output: &Value) -> bool {
    // A reference may also sit inside a larger value.
    reference::as_reference(output).is_none()
        && !output.to_string().contains(reference::REFERENCE_KEY)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_key_follows_the_algorithm_version_and_the_input() {
        let v1 = algorithm_digest(&json!({"name": "a", "algorithmImage": "x:1"}), None);
        let v2 = algorithm_digest(&json!({"name": "a", "algorithmImage": "x:2"}), None);
        let edited = algorithm_digest(&json!({"name": "a", "algorithmImage": "x:1"}), Some("f00"));
        assert_ne!(v1, v2);
        assert_ne!(v1, edited);
        assert_eq!(
            v1,
            algorithm_digest(&json!({"algorithmImage": "x:1", "name": "a"}), None),
            "key order does not matter"
        );
        let key = task_key(&v1, &[json!(1), json!({"b": 2, "a": 1})]);
        assert_eq!(key, task_key(&v1, &[json!(1), json!({"a": 1, "b": 2})]));
        assert_ne!(key, task_key(&v1, &[json!(2), json!({"a": 1, "b": 2})]));
        assert_ne!(key, task_key(&v2, &[json!(1), json!({"a": 1, "b": 2})]));
        assert_eq!(key.len(), 64);
    }

    #[test]
    fn stored_objects_are_not_kept() {
        assert!(keepable(&json!([1, 2, 3])));
        let stored = reference::reference("local-hkube/j/t", 200_000);
        assert!(!keepable(&stored));
        assert!(!keepable(&json!({"inner": [stored]})));
    }
}
