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

#[test]
fn python_runtime_unit_tests() {
    if !interpreter_available("python3") {
        println!("skipped: python3 is not installed");
        return;
    }
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtimes/python");
    let output = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "tests"])
        .current_dir(&folder)
        .output()
        .expect("python3 runs");
    let report = String::from_utf8_lossy(&output.stderr);
    println!("{report}");
    assert!(
        output.status.success(),
        "the Python runtime's tests failed:\n{report}"
    );
    assert!(report.contains("OK"), "{report}");
}

#[test]
fn java_runtime_tests() {
    if !interpreter_available("javac") {
        println!("skipped: javac is not installed");
        return;
    }
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtimes/java");
    let output = Command::new("bash")
        .arg("test.sh")
        .current_dir(&folder)
        .output()
        .expect("bash runs");
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the Java runtime's tests failed:\n{report}"
    );
    assert!(report.contains(" 0 failed"), "{report}");
}

#[test]
fn javascript_runtime_tests() {
    if !interpreter_available("node") {
        println!("skipped: node is not installed");
        return;
    }
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtimes/javascript");
    let output = Command::new("node")
        .args(["--test", "test/"])
        .current_dir(&folder)
        .output()
        .expect("node runs");
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the JavaScript runtime's tests failed:\n{report}"
    );
    assert!(report.contains("# fail 0"), "{report}");
}
