//! Algorithm versions (reference §4.2, §5.5): a snapshot of an algorithm for every effective
//! change made through the API, numbered by HKube's semver rule.
//!
//! The store assigns `semver` (and `versionAlias`) when it adds a version, under the same lock
//! or transaction that reads the latest one, so two concurrent changes never share a number.

use serde::{Deserialize, Serialize};

use crate::spec::Algorithm;

/// Who created a version while there are no user accounts (HKube's name with auth off).
pub const DEFAULT_USER: &str = "defaultUser";

/// One version of an algorithm, as HKube's `GET /versions/algorithms/{name}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlgorithmVersion {
    /// 10 characters of `[0-9a-z]`; the stored algorithm's `version` names its current one.
    pub version: String,
    /// `1.0.0`, then [`next_semver`] of the newest version.
    pub semver: String,
    /// `v<semver>`.
    pub version_alias: String,
    pub name: String,
    /// ms since the epoch.
    pub created: u64,
    pub created_by: String,
    /// The algorithm as it was, with `version` set to this version.
    pub algorithm: Algorithm,
}

impl AlgorithmVersion {
    /// A version of `algorithm` (whose `version` becomes `id`); the store numbers it.
    pub fn new(id: String, mut algorithm: Algorithm, created: u64) -> AlgorithmVersion {
        algorithm
            .extra
            .insert("version".into(), serde_json::Value::String(id.clone()));
        AlgorithmVersion {
            version: id,
            semver: String::new(),
            version_alias: String::new(),
            name: algorithm.name.clone(),
            created,
            created_by: DEFAULT_USER.to_string(),
            algorithm,
        }
    }

    /// Sets `semver` and `versionAlias` to follow `latest` (the newest version's semver).
    pub fn numbered_after(mut self, latest: Option<&str>) -> AlgorithmVersion {
        self.semver = next_semver(latest);
        self.version_alias = format!("v{}", self.semver);
        self
    }
}

/// Largest patch and minor before the next part is increased (HKube's `MAX_PATCH`, `MAX_MINOR`).
const MAX_PART: u64 = 500;

/// HKube's `incSemver`: `1.0.0` first; then patch + 1, rolling to minor + 1 (patch 0) once
/// the patch is 500, and to major + 1 (minor and patch 0) once the minor is 500. A latest
/// semver that is not `x.y.z` is kept as it is, as HKube does.
pub fn next_semver(latest: Option<&str>) -> String {
    let Some(latest) = latest else {
        return "1.0.0".to_string();
    };
    let parts: Vec<u64> = latest
        .split('.')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    let [major, minor, patch] = parts[..] else {
        return latest.to_string();
    };
    if patch < MAX_PART {
        format!("{major}.{minor}.{}", patch + 1)
    } else if minor < MAX_PART {
        format!("{major}.{}.0", minor + 1)
    } else {
        format!("{}.0.0", major + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_follows_hkubes_rule() {
        let cases = [
            (None, "1.0.0"),
            (Some("1.0.0"), "1.0.1"),
            (Some("1.0.499"), "1.0.500"),
            (Some("1.0.500"), "1.1.0"),
            (Some("1.500.500"), "2.0.0"),
            (Some("not-semver"), "not-semver"),
        ];
        for (latest, expected) in cases {
            assert_eq!(next_semver(latest), expected, "after {latest:?}");
        }
    }
}
