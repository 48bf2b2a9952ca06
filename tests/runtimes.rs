//! The language runtimes' own test suites, run from `cargo test` so one command tests
//! everything. A runtime whose interpreter is missing is skipped with a printed reason.

use std::path::Path;
use std::process::Command;

fn interpreter_available(program: &str) -> bool {
    // `-version` works for javac (and for python3 and node as well as `--version`).
    let flag = if program == "javac" {
        "-version"
    } else {
        "--version"
    };
    Command::new(program)
        .arg(flag)
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Runs one runtime's suite in its folder; `passed` is a line its runner prints on success.
fn run_suite(interpreter: &str, program: &str, args: &[&str], folder: &str, passed: &str) {
    if !interpreter_available(interpreter) {
        testkit::skip(None, &format!("{interpreter} is not installed"));
        return;
    }
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let output = Command::new(program)
        .args(args)
        .current_dir(&folder)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    assert!(
        output.status.success(),
        "the suite in {} failed:\n{report}",
        folder.display()
    );
    assert!(report.contains(passed), "{report}");
}

#[test]
fn python_runtime_unit_tests() {
    run_suite(
        "python3",
        "python3",
        &["-m", "unittest", "discover", "-s", "tests"],
        "runtimes/python",
        "\nOK",
    );
}

#[test]
fn java_runtime_tests() {
    run_suite("javac", "bash", &["test.sh"], "runtimes/java", " 0 failed");
}

#[test]
fn javascript_runtime_tests() {
    run_suite(
        "node",
        "node",
        &["--test", "test/"],
        "runtimes/javascript",
        "# fail 0",
    );
}
