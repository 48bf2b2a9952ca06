//! Whether an apply builds (pure): HKube's trigger set — the upload's checksum, `env`, the git
//! commit, `baseImage` and `dependencyInstallCmd` — compared with the stored algorithm, plus
//! `forceBuild`. Nothing else (cpu, mem, entry point…) ever rebuilds an image.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::spec::Algorithm;

/// The trigger fields, by HKube's names.
const TRIGGERS: [&str; 5] = [
    "checksum",
    "env",
    "commit",
    "baseImage",
    "dependencyInstallCmd",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// 1020.
    Forced,
    /// 1021.
    First,
    /// 1022, with the changed fields.
    Changed(Vec<&'static str>),
    /// 1025: an upload, but nothing in the trigger set changed.
    NoTrigger,
}

impl Decision {
    pub fn builds(&self) -> bool {
        !matches!(self, Decision::NoTrigger)
    }

    pub fn code(&self) -> u16 {
        match self {
            Decision::Forced => 1020,
            Decision::First => 1021,
            Decision::Changed(_) => 1022,
            Decision::NoTrigger => 1025,
        }
    }

    pub fn message(&self, name: &str) -> String {
        match self {
            Decision::Forced => {
                format!("a build for algorithm {name} was triggered due to forceBuild")
            }
            Decision::First => format!("a build for algorithm {name} was triggered: first build"),
            Decision::Changed(fields) => format!(
                "a build was triggered due to change in {}",
                fields.join(",")
            ),
            Decision::NoTrigger => format!(
                "there was no trigger for build, no change in {}",
                TRIGGERS.join(",")
            ),
        }
    }
}

/// The first bytes of a binary WebAssembly module.
pub const WASM_MAGIC: &[u8] = b"\0asm";

/// HKube's `fileInfo` for an upload: its kind from its first bytes (not its name), SHA-256,
/// and size. Only archives the unpacker reads, and bare WebAssembly modules, are accepted.
pub fn file_info(bytes: &[u8]) -> Result<Value, String> {
    let ext = sniff_extension(bytes).ok_or_else(|| {
        "the uploaded file is not a tar.gz, tar or zip archive, nor a WebAssembly module (file types allowed: gz, tar, zip, wasm)"
            .to_string()
    })?;
    let checksum = builder::context::hex(&Sha256::digest(bytes));
    Ok(json!({"fileExt": ext, "checksum": checksum, "fileSize": bytes.len()}))
}

/// `gz`, `zip`, `tar` or `wasm` from the magic numbers.
pub fn sniff_extension(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(WASM_MAGIC) {
        Some("wasm")
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        Some("gz")
    } else if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        Some("zip")
    } else if bytes.len() > 262 && &bytes[257..262] == b"ustar" {
        Some("tar")
    } else {
        None
    }
}

fn trigger_values(algorithm: &Algorithm) -> [Value; 5] {
    let extra = |key: &str| algorithm.extra.get(key).cloned().unwrap_or(Value::Null);
    [
        extra("fileInfo")
            .get("checksum")
            .cloned()
            .unwrap_or(Value::Null),
        json!(algorithm.env.map(|env| env.as_str())),
        algorithm
            .git_repository
            .as_ref()
            .and_then(|g| serde_json::to_value(g).ok())
            .and_then(|g| g.pointer("/commit/id").cloned())
            .unwrap_or(Value::Null),
        json!(algorithm.base_image),
        json!(algorithm.dependency_install_cmd),
    ]
}

pub fn decide(stored: Option<&Algorithm>, candidate: &Algorithm, force: bool) -> Decision {
    if force {
        return Decision::Forced;
    }
    // An algorithm that never got an image (its first build failed) builds as a first one.
    let Some(stored) = stored.filter(|s| s.algorithm_image.is_some()) else {
        return Decision::First;
    };
    let before = trigger_values(stored);
    let after = trigger_values(candidate);
    let changed: Vec<&'static str> = TRIGGERS
        .iter()
        .zip(before.iter().zip(after.iter()))
        .filter(|(_, (b, a))| b != a)
        .map(|(name, _)| *name)
        .collect();
    if changed.is_empty() {
        Decision::NoTrigger
    } else {
        Decision::Changed(changed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn algorithm(value: Value) -> Algorithm {
        crate::spec::parse_algorithm(value).unwrap()
    }

    #[test]
    fn only_the_trigger_set_rebuilds() {
        let mut stored = algorithm(
            json!({"name": "alg", "env": "python", "algorithmImage": "x:1",
            "fileInfo": {"checksum": "c1"}}),
        );
        let same = stored.clone();
        assert_eq!(decide(Some(&stored), &same, false), Decision::NoTrigger);
        assert_eq!(decide(Some(&stored), &same, true), Decision::Forced);
        assert_eq!(decide(None, &same, false), Decision::First);
        let mut changed = stored.clone();
        changed.cpu = 4.0;
        assert_eq!(decide(Some(&stored), &changed, false), Decision::NoTrigger);
        changed
            .extra
            .insert("fileInfo".into(), json!({"checksum": "c2"}));
        changed.base_image = Some("python:3.12".into());
        assert_eq!(
            decide(Some(&stored), &changed, false),
            Decision::Changed(vec!["checksum", "baseImage"])
        );
        stored.algorithm_image = None;
        assert_eq!(decide(Some(&stored), &same, false), Decision::First);
    }

    #[test]
    fn uploads_are_recognised_by_their_bytes() {
        assert_eq!(sniff_extension(&[0x1f, 0x8b, 8, 0]), Some("gz"));
        assert_eq!(sniff_extension(b"PK\x03\x04rest"), Some("zip"));
        assert_eq!(sniff_extension(b"Rar!\x1a\x07"), None);
        assert!(file_info(b"hello").is_err());
    }
}
