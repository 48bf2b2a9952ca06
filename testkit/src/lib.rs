//! What the workspace's test suites share: how a test reacts to a missing prerequisite
//! (python3, node, javac, Python 3.8 with HKube's official wrapper, dockerd, s3s-fs, the
//! reference in `../shared`).
//!
//! A skip is never silent and never counted as a pass where the prerequisite is promised:
//! - with `HKUBE_REQUIRE_ALL=1` (CI sets it) or the prerequisite's own flag
//!   (`HKUBE_REQUIRE_DOCKER=1`, `HKUBE_REQUIRE_S3=1`, …) a missing prerequisite fails the test;
//! - otherwise the test says `SKIPPED: <reason>` on stderr (cargo shows it with
//!   `--nocapture`) and appends the line to the file named by `HKUBE_SKIP_LOG`, so a run can
//!   count its skips.
//!
//! This crate must never decide whether a prerequisite is present: each suite checks that
//! itself, the way it will use the thing.

use std::io::Write;

pub mod kube_double;
pub mod wasm;

/// The flag that makes every prerequisite required.
pub const REQUIRE_ALL: &str = "HKUBE_REQUIRE_ALL";

/// True when `flag` (or `HKUBE_REQUIRE_ALL`) is set to `1`.
pub fn required(flag: Option<&str>) -> bool {
    let set = |name: &str| std::env::var(name).as_deref() == Ok("1");
    set(REQUIRE_ALL) || flag.is_some_and(set)
}

/// A prerequisite is missing: panics when it is required, else records the skip. The caller
/// returns right after.
///
/// `flag` is the prerequisite's own require flag, if it has one.
#[track_caller]
pub fn skip(flag: Option<&str>, reason: &str) {
    if required(flag) {
        let by = flag.map_or(REQUIRE_ALL.to_string(), |f| format!("{REQUIRE_ALL} or {f}"));
        panic!("a required prerequisite is missing ({by} is set): {reason}");
    }
    let location = std::panic::Location::caller();
    let line = format!(
        "SKIPPED: {reason} ({}:{})",
        location.file(),
        location.line()
    );
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("HKUBE_SKIP_LOG") {
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| writeln!(file, "{line}"));
        if let Err(error) = written {
            eprintln!(
                "could not record the skip in {}: {error}",
                path.to_string_lossy()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test touches the process environment, so the cases cannot race each other.
    #[test]
    fn a_skip_is_recorded_unless_required() {
        let dir = std::env::temp_dir().join(format!("testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("skips.txt");
        std::env::set_var("HKUBE_SKIP_LOG", &log);
        std::env::remove_var(REQUIRE_ALL);
        std::env::remove_var("HKUBE_REQUIRE_TESTKIT");

        skip(Some("HKUBE_REQUIRE_TESTKIT"), "a tool is not installed");
        let recorded = std::fs::read_to_string(&log).unwrap();
        assert!(
            recorded.starts_with("SKIPPED: a tool is not installed ("),
            "{recorded}"
        );

        std::env::set_var("HKUBE_REQUIRE_TESTKIT", "1");
        let own_flag = std::panic::catch_unwind(|| skip(Some("HKUBE_REQUIRE_TESTKIT"), "x"));
        assert!(
            own_flag.is_err(),
            "the prerequisite's own flag makes it required"
        );
        std::env::remove_var("HKUBE_REQUIRE_TESTKIT");

        std::env::set_var(REQUIRE_ALL, "1");
        let all = std::panic::catch_unwind(|| skip(None, "y"));
        assert!(
            all.is_err(),
            "HKUBE_REQUIRE_ALL makes every prerequisite required"
        );
        std::env::remove_var(REQUIRE_ALL);

        assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
