//! Dot paths into JSON values (`@flowInput.files.links.1`, `@Node.data.0.x`).

use serde_json::Value;

/// The value at `path`, or `None` when a key or index is missing. Object keys are matched
/// first; a segment that is a non-negative integer also indexes an array.
pub fn lookup<'a, S: AsRef<str>>(root: &'a Value, path: &[S]) -> Option<&'a Value> {
    let mut current = root;
    for segment in path {
        let segment = segment.as_ref();
        current = match current {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

/// What a task receives for `@Node.path`: the value at the path, `null` when it is missing
/// (HKube's Python wrapper, the reference implementation, does the same).
pub fn value_at<S: AsRef<str>>(root: &Value, path: &[S]) -> Value {
    if path.is_empty() {
        return root.clone();
    }
    lookup(root, path).cloned().unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_and_indexes() {
        let root = json!({"files": {"links": ["l0", "l1"]}, "n": null, "0": "key"});
        assert_eq!(lookup(&root, &["files", "links", "1"]), Some(&json!("l1")));
        assert_eq!(lookup(&root, &["n"]), Some(&Value::Null));
        assert_eq!(lookup(&root, &["0"]), Some(&json!("key")));
        assert_eq!(lookup(&root, &["files", "links", "9"]), None);
        assert_eq!(lookup(&root, &["files", "links", "x"]), None);
        assert_eq!(lookup(&root, &["n", "deeper"]), None);
        assert_eq!(value_at(&root, &["missing"]), Value::Null);
        assert_eq!(value_at(&json!(0), &["x"]), Value::Null);
    }
}
