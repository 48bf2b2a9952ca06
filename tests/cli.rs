//! The `hkube` binary, end to end: what a user types and what they see.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn hkube(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hkube"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hkube starts");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("stdin written");
    }
    child.wait_with_output().expect("hkube ends")
}

#[test]
fn validate_prints_the_pipeline_with_defaults() {
    let output = hkube(&["validate", "examples/numbers/numbers.yml"], None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pipeline: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(pipeline["name"], "numbers");
    assert_eq!(pipeline["priority"], 3);
    assert_eq!(pipeline["options"]["batchTolerance"], 80);
    assert_eq!(pipeline["nodes"][1]["input"][0], "#@Range");
}

#[test]
fn validate_names_the_problem_and_fails() {
    let descriptor =
        r#"{"name":"x","nodes":[{"nodeName":"A","algorithmName":"a1","input":["@B"]}]}"#;
    let output = hkube(&["validate", "-"], Some(descriptor));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(r#"node "A" is depend on node "B" which is not exists"#),
        "{stderr}"
    );
}

#[test]
fn validate_reports_a_missing_file() {
    let output = hkube(&["validate", "no/such/file.yml"], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("reading no/such/file.yml"));
}

/// Unknown fields pass HKube's schema, so they are accepted, but `validate` says which ones
/// nothing reads and what was probably meant (issue 17, item 8).
#[test]
fn validate_warns_about_unknown_fields() {
    let descriptor = r#"
name: typo
nodes:
  - nodeName: A
    algorithmName: echo
    inputs: [1]
    retyr: {limit: 2}
"#;
    let output = hkube(&["validate", "-"], Some(descriptor));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            "-: warning: unknown field `inputs` in node A; did you mean `input`?",
            "-: warning: unknown field `retyr` in node A; did you mean `retry`?",
        ]
    );
}

/// A feature hkube does not implement is refused by `validate`, as by the server.
#[test]
fn validate_refuses_an_enabled_cron_trigger() {
    let descriptor = r#"{"name":"c","triggers":{"cron":{"pattern":"0 * * * *","enabled":true}},
        "nodes":[{"nodeName":"A","algorithmName":"echo"}]}"#;
    let output = hkube(&["validate", "-"], Some(descriptor));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cron triggers are not supported by hkube yet"),
        "{stderr}"
    );
}

/// An `algorithm.yml` is validated as an algorithm, with the same warnings.
#[test]
fn validate_checks_an_algorithm_file() {
    let dir = std::env::temp_dir().join(format!("hkube-cli-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("main.py"),
        "def start(args, hkubeapi):\n    return 1\n",
    )
    .expect("code written");
    let file = dir.join("algorithm.yml");
    std::fs::write(
        &file,
        "name: one\nenv: python\nminHotWorker: 1\ncode:\n  entryPoint: main.py\n",
    )
    .expect("algorithm written");
    let output = hkube(&["validate", file.to_str().expect("utf-8 path")], None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "warning: unknown field `minHotWorker` in algorithm one; did you mean `minHotWorkers`?"
        ),
        "{stderr}"
    );
    let algorithm: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(algorithm["name"], "one");
    std::fs::remove_dir_all(&dir).ok();
}

/// `hkube run` prints the same warnings before it runs, so a typo is named even when the
/// pipeline then fails.
#[test]
fn run_warns_about_unknown_fields_before_running() {
    let dir = std::env::temp_dir().join(format!("hkube-cli-run-warn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("pipeline.yml");
    std::fs::write(
        &file,
        "name: typo\nnodes:\n  - nodeName: A\n    algorithm: missing\n    input: [1]\n",
    )
    .expect("pipeline written");
    let state = dir.join("state");
    let output = hkube(
        &[
            "run",
            file.to_str().expect("utf-8 path"),
            "--quiet",
            "--state-dir",
            state.to_str().expect("utf-8 path"),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "warning: unknown field `algorithm` in node A; did you mean `algorithmName`?"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("please provide algorithm name"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

fn tools_for_numbers() -> Option<&'static str> {
    for (program, flag) in [("python3", "--version"), ("node", "--version")] {
        let found = Command::new(program)
            .arg(flag)
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(program);
        }
    }
    None
}

#[test]
fn run_the_numbers_example() {
    if let Some(missing) = tools_for_numbers() {
        testkit::skip(None, &format!("{missing} is not installed"));
        return;
    }
    let output = hkube(&["run", "--quiet", "examples/numbers"], None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(result["status"], "completed");
    assert_eq!(result["data"][0]["result"], 30);

    let output = hkube(
        &[
            "run",
            "--quiet",
            "examples/numbers/numbers.yml",
            "--flow-input",
            r#"{"N": 500, "k": 200}"#,
        ],
        None,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(result["data"][0]["result"], 25_050_000);
}

#[test]
fn run_reports_a_failed_job_and_exits_1() {
    if let Some(missing) = tools_for_numbers() {
        testkit::skip(None, &format!("{missing} is not installed"));
        return;
    }
    // Range fails: it gets "x" instead of a number.
    let output = hkube(
        &[
            "run",
            "--quiet",
            "examples/numbers",
            "--flow-input",
            r#"{"N": "x"}"#,
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("failed (node Range)"), "{stderr}");
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(result["status"], "failed");
}

#[test]
fn run_explains_a_folder_without_a_pipeline() {
    let output = hkube(&["run", "runtimes"], None);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("holds no pipeline file"), "{stderr}");
}

/// A copy of the numbers example whose Range imports a PyPI package and whose Reduce requires
/// an npm package: `hkube run` installs them into cached environments, with no container
/// engine, and a second run reuses them.
#[test]
fn run_installs_declared_dependencies_once() {
    if let Some(missing) = tools_for_numbers() {
        testkit::skip(None, &format!("{missing} is not installed"));
        return;
    }
    let root = std::env::temp_dir().join(format!("hkube-cli-deps-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/numbers");
    for name in ["range", "multiply", "reduce"] {
        let to = root.join("project").join(name);
        std::fs::create_dir_all(&to).unwrap();
        for file in ["algorithm.yml", "main.py", "index.js"] {
            if example.join(name).join(file).is_file() {
                std::fs::copy(example.join(name).join(file), to.join(file)).unwrap();
            }
        }
    }
    let project = root.join("project");
    std::fs::copy(example.join("numbers.yml"), project.join("numbers.yml")).unwrap();
    std::fs::write(project.join("range/requirements.txt"), "six==1.16.0\n").unwrap();
    let main = std::fs::read_to_string(project.join("range/main.py")).unwrap();
    std::fs::write(project.join("range/main.py"), format!("import six\n{main}")).unwrap();
    std::fs::write(
        project.join("reduce/package.json"),
        r#"{"name": "reduce", "version": "1.0.0", "dependencies": {"is-number": "7.0.0"}}"#,
    )
    .unwrap();
    let index = std::fs::read_to_string(project.join("reduce/index.js")).unwrap();
    std::fs::write(
        project.join("reduce/index.js"),
        format!("const isNumber = require('is-number');\n{index}"),
    )
    .unwrap();
    let state = root.join("state");
    let run = || {
        hkube(
            &[
                "run",
                project.to_str().unwrap(),
                "--state-dir",
                state.to_str().unwrap(),
            ],
            None,
        )
    };
    let first = run();
    let stderr = String::from_utf8_lossy(&first.stderr).into_owned();
    assert!(first.status.success(), "{stderr}");
    assert!(
        stderr.contains("range: making a Python environment"),
        "{stderr}"
    );
    let result: serde_json::Value = serde_json::from_slice(&first.stdout).expect("JSON on stdout");
    assert_eq!(result["data"][0]["result"], 30);
    let second = run();
    let stderr = String::from_utf8_lossy(&second.stderr).into_owned();
    assert!(second.status.success(), "{stderr}");
    assert!(
        stderr.contains("range: reusing the Python environment"),
        "{stderr}"
    );
    assert!(
        stderr.contains("reduce: reusing the node_modules"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// A failed task names its cause: the exception's type, its message and the user's file and
/// line, in `hkube run`'s stderr, the job's error (stdout) and the task's log. Python: a
/// `KeyError` (HKube's wrapper would say only `'missing-key'`); JavaScript: a syntax error
/// names the file and line; Java: the exception's class and message.
#[test]
fn run_shows_an_errors_type_message_and_place() {
    if let Some(missing) = tools_for_numbers() {
        println!("skipped: {missing} is not installed");
        return;
    }
    let root = std::env::temp_dir().join(format!("hkube-cli-errors-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let write = |path: &str, text: &str| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    let algorithm = |name: &str, env: &str, entry: &str| {
        format!("name: {name}\nenv: {env}\ncode:\n  path: .\n  entryPoint: {entry}\n")
    };
    let pipeline = |name: &str| {
        format!("name: {name}\nnodes:\n  - nodeName: A\n    algorithmName: {name}\n    input: []\n")
    };
    write(
        "py/algorithm.yml",
        &algorithm("py-fails", "python", "main.py"),
    );
    write(
        "py/main.py",
        "def lookup(d):\n    return d['missing-key']\n\ndef start(args):\n    return lookup({})\n",
    );
    write("py-fails.yml", &pipeline("py-fails"));
    write(
        "js/algorithm.yml",
        &algorithm("js-fails", "nodejs", "index.js"),
    );
    write(
        "js/index.js",
        "const x = 1;\nmodule.exports.start = () => {\n  return x +;\n};\n",
    );
    write("js-fails.yml", &pipeline("js-fails"));
    write(
        "java/algorithm.yml",
        &algorithm("java-fails", "java", "example.Fails"),
    );
    write(
        "java/example/Fails.java",
        "package example;\n\nimport io.hkube.rs.Algorithm;\nimport io.hkube.rs.Api;\nimport java.util.Map;\n\npublic class Fails implements Algorithm {\n    @Override\n    public Object start(Map<String, Object> args, Api api) {\n        throw new IllegalStateException(\"no input\");\n    }\n}\n",
    );
    write("java-fails.yml", &pipeline("java-fails"));
    let state = root.join("state");
    let run = |pipeline: &str| {
        let output = hkube(
            &[
                "run",
                "--quiet",
                root.join(pipeline).to_str().unwrap(),
                "--state-dir",
                state.to_str().unwrap(),
            ],
            None,
        );
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        let result: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("JSON on stdout");
        let error = result["error"].as_str().unwrap_or_default().to_string();
        (
            stderr,
            error,
            result["jobId"].as_str().unwrap_or_default().to_string(),
        )
    };

    let (stderr, error, job) = run("py-fails.yml");
    let first = "KeyError: 'missing-key' (at main.py:2)";
    assert!(stderr.contains(first), "{stderr}");
    assert!(error.starts_with(first), "{error}");
    assert!(error.contains("line 5, in start"), "the traceback: {error}");
    let log_dir = state.join("logs").join(&job);
    let logs: String = std::fs::read_dir(&log_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", log_dir.display()))
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    assert!(logs.contains(first), "the task log: {logs}");

    let (stderr, error, _) = run("js-fails.yml");
    assert!(stderr.contains("SyntaxError: "), "{stderr}");
    assert!(error.contains("(at index.js:3)"), "{error}");

    let has_javac = Command::new("javac")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if has_javac {
        let (stderr, error, _) = run("java-fails.yml");
        let first = "java.lang.IllegalStateException: no input (at Fails.java:10)";
        assert!(stderr.contains(first), "{stderr}");
        assert!(error.starts_with(first), "{error}");
    } else {
        println!("the Java case skipped: javac is not installed");
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// Workers run in process groups of their own, so Ctrl-C (SIGINT to `hkube run`) must end them
/// through hkube: an algorithm busy in a loop is gone when `hkube run` has exited.
#[test]
fn ctrl_c_on_run_ends_a_busy_worker() {
    if let Some(missing) = tools_for_numbers() {
        println!("skipped: {missing} is not installed");
        return;
    }
    let root = std::env::temp_dir().join(format!("hkube-cli-ctrl-c-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("busy")).unwrap();
    let pid_file = root.join("worker.pid");
    std::fs::write(
        root.join("busy/algorithm.yml"),
        "name: busy\nenv: python\ncode:\n  path: .\n  entryPoint: main.py\n",
    )
    .unwrap();
    std::fs::write(
        root.join("busy/main.py"),
        format!(
            "import os\n\ndef start(args):\n    with open({:?}, 'w') as f:\n        f.write(str(os.getpid()))\n    while True:\n        pass\n",
            pid_file.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("busy.yml"),
        "name: busy\nnodes:\n  - nodeName: A\n    algorithmName: busy\n    input: []\n",
    )
    .unwrap();
    let mut run = Command::new(env!("CARGO_BIN_EXE_hkube"))
        .args(["run", "--quiet"])
        .arg(root.join("busy.yml"))
        .arg("--state-dir")
        .arg(root.join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hkube starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
        {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    Command::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status()
        .unwrap();
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{status:?}");
    let gone = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .map(|(_, rest)| !rest.starts_with('Z'))
            })
            .unwrap_or(false)
    };
    while alive(pid) && std::time::Instant::now() < gone {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let still = alive(pid);
    if still {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let _ = std::fs::remove_dir_all(&root);
    assert!(!still, "the busy worker outlived hkube run");
}
