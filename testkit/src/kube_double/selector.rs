//! Kubernetes' label and field selectors (pure): what `labelSelector=` and `fieldSelector=`
//! keep in a list, a watch or a deletecollection.

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector; empty selects everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses Kubernetes' selector syntax: `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`,
    /// `a notin (x)`, joined by commas.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(requirement(part)?);
        }
        Ok(LabelSelector(requirements))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(key, value) => label(key) == Some(value.as_str()),
            Requirement::NotEquals(key, value) => label(key) != Some(value.as_str()),
            Requirement::In(key, values) => {
                label(key).is_some_and(|l| values.iter().any(|v| v == l))
            }
            Requirement::NotIn(key, values) => {
                !label(key).is_some_and(|l| values.iter().any(|v| v == l))
            }
            Requirement::Exists(key) => label(key).is_some(),
            Requirement::DoesNotExist(key) => label(key).is_none(),
        })
    }
}

/// Commas outside parentheses separate requirements.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (index, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn requirement(part: &str) -> Result<Requirement, String> {
    let invalid = || format!("unable to parse requirement {part:?} of the label selector");
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key.trim().to_string()));
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(
            key.trim().into(),
            value.trim().into(),
        ));
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::Equals(key.trim().into(), value.trim().into()));
    }
    let words: Vec<&str> = part.splitn(3, ' ').collect();
    if words.len() == 3 {
        let values = words[2]
            .trim()
            .strip_prefix('(')
            .and_then(|rest| rest.strip_suffix(')'))
            .ok_or_else(invalid)?
            .split(',')
            .map(|v| v.trim().to_string())
            .collect();
        let key = words[0].to_string();
        return match words[1] {
            "in" => Ok(Requirement::In(key, values)),
            "notin" => Ok(Requirement::NotIn(key, values)),
            _ => Err(invalid()),
        };
    }
    if part.contains(' ') || part.contains('(') {
        return Err(invalid());
    }
    Ok(Requirement::Exists(part.to_string()))
}

/// A field selector: equality (`=`, `==`) or inequality (`!=`) on the few fields the real
/// server indexes for pods and nodes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// The fields a selector may name; the real server refuses others too.
const FIELDS: [&str; 5] = [
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "status.phase",
    "spec.unschedulable",
];

impl FieldSelector {
    pub fn parse(text: &str) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid field selector term {part:?}: expected field=value"
                ));
            };
            if !FIELDS.contains(&field.trim()) {
                return Err(format!(
                    "field label not supported: {} (the double knows {})",
                    field.trim(),
                    FIELDS.join(", ")
                ));
            }
            terms.push((field.trim().to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let found = field
                .split('.')
                .try_fold(object, |at, key| at.get(key))
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_default();
            (found == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_match_as_kubernetes_does() {
        let pod = json!({"metadata": {"labels": {"app": "hkube", "tier": "worker"}}});
        let yes = [
            "",
            "app=hkube",
            "app==hkube,tier",
            "app in (x, hkube),!missing",
            "tier notin (api)",
            "app!=other",
        ];
        for text in yes {
            assert!(LabelSelector::parse(text).unwrap().matches(&pod), "{text}");
        }
        for text in [
            "app=other",
            "missing",
            "!app",
            "app notin (hkube)",
            "tier in (api)",
        ] {
            assert!(!LabelSelector::parse(text).unwrap().matches(&pod), "{text}");
        }
        assert!(LabelSelector::parse("app in x").is_err());
    }

    #[test]
    fn field_selectors_name_known_fields_only() {
        let pod = json!({"metadata": {"name": "a"}, "status": {"phase": "Running"}});
        assert!(FieldSelector::parse("metadata.name=a,status.phase!=Failed")
            .unwrap()
            .matches(&pod));
        assert!(!FieldSelector::parse("status.phase=Pending")
            .unwrap()
            .matches(&pod));
        let error = FieldSelector::parse("spec.hostname=x").unwrap_err();
        assert!(error.contains("not supported"), "{error}");
    }
}
