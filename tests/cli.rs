//! The `hkube` binary, end to end: what a user types and what they see.

mod common;

use common::copy_tree;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn hkube(args: &[&str], stdin: Option<&str>) -> Output {
    hkube_in(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
        args,
        stdin,
    )
}

/// `hkube` run from `dir`.
fn hkube_in(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hkube"))
        .args(args)
        .current_dir(dir)
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

/// A cron pattern the scheduler cannot parse is refused by `validate`, as by the server, with
/// the parser's reason.
#[test]
fn validate_refuses_a_cron_pattern_the_parser_rejects() {
    let descriptor = r#"{"name":"c","triggers":{"cron":{"pattern":"0 25 * * *","enabled":true}},
        "nodes":[{"nodeName":"A","algorithmName":"echo"}]}"#;
    let output = hkube(&["validate", "-"], Some(descriptor));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("triggers.cron.pattern \"0 25 * * *\" is not a valid cron pattern: ")
            && stderr.contains("hour"),
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

/// The README's wasm lines: `hkube run` of numbers with each wasm Multiply (the WASI command
/// and hkube's function ABI) gives 30. Each module is new to the state folder's cache, so its
/// first tasks run Winch's code; `hkube run` waits at its end for Cranelift's, which it leaves
/// in the cache for the next run.
#[test]
fn run_the_numbers_example_with_each_wasm_multiply() {
    if let Some(missing) = tools_for_numbers() {
        testkit::skip(None, &format!("{missing} is not installed"));
        return;
    }
    for (pipeline, module, build) in [
        (
            "examples/numbers/numbers-wasm.yml",
            "examples/numbers/multiply-wasm/multiply.wasm",
            "examples/numbers/multiply-wasm/build.sh",
        ),
        (
            "examples/numbers/numbers-wasm-fn.yml",
            "examples/numbers/multiply-wasm-fn/multiply-fn.wasm",
            "examples/numbers/multiply-wasm-fn/build.sh",
        ),
    ] {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        if !root.join(module).is_file() {
            testkit::skip(None, &format!("{module} is not built: run {build}"));
            return;
        }
        let state = std::env::temp_dir().join(format!(
            "hkube-cli-wasm-{}-{}",
            std::process::id(),
            module.len()
        ));
        let _ = std::fs::remove_dir_all(&state);
        let state_dir = state.to_str().unwrap();
        let output = hkube(
            &["run", "--quiet", pipeline, "--state-dir", state_dir],
            None,
        );
        assert!(
            output.status.success(),
            "{pipeline}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let result: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("JSON on stdout");
        assert_eq!(result["data"][0]["result"], 30, "{pipeline}: {result}");
        let cached = std::fs::read_dir(state.join("wasm-cache"))
            .unwrap()
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".cwasm"))
            .count();
        std::fs::remove_dir_all(&state).ok();
        assert_eq!(
            cached, 1,
            "{pipeline}: Cranelift's code is not in the cache"
        );
    }
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
        testkit::skip(None, &format!("{missing} is not installed"));
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
        testkit::skip(None, "the Java case: javac is not installed");
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// Workers run in process groups of their own, so Ctrl-C (SIGINT to `hkube run`) must end them
/// through hkube: an algorithm busy in a loop is gone when `hkube run` has exited.
#[test]
fn ctrl_c_on_run_ends_a_busy_worker() {
    if let Some(missing) = tools_for_numbers() {
        testkit::skip(None, &format!("{missing} is not installed"));
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

/// A fresh folder under the temp dir, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("hkube-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch folder");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `cd examples/numbers && hkube run numbers.yml`: a bare file name's folder is `.`.
#[test]
fn run_a_pipeline_file_named_from_its_folder() {
    if let Some(missing) = tools_for_numbers() {
        testkit::skip(None, &format!("{missing} is not installed"));
        return;
    }
    let state = Scratch::new("bare-name");
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/numbers");
    let state_dir = state.0.to_str().expect("utf-8 temp dir");
    let output = hkube_in(
        &folder,
        &["run", "--quiet", "numbers.yml", "--state-dir", state_dir],
        None,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(result["data"][0]["result"], 30);
}

/// An error about a file names the file, and says its cause once.
#[test]
fn run_names_the_file_it_cannot_read() {
    let scratch = Scratch::new("unreadable");
    // A pipeline whose folder holds an algorithm.yml that is not YAML.
    std::fs::write(
        scratch.0.join("p.yml"),
        "name: p\nnodes:\n  - nodeName: A\n    algorithmName: a\n    input: []\n",
    )
    .expect("pipeline written");
    std::fs::create_dir_all(scratch.0.join("a")).expect("algorithm folder");
    std::fs::write(scratch.0.join("a/algorithm.yml"), "name: [unclosed\n").expect("written");
    let output = hkube_in(&scratch.0, &["run", "--quiet", "p.yml"], None);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("a/algorithm.yml"), "{stderr}");

    let output = hkube_in(&scratch.0, &["run", "--quiet", "missing.yml"], None);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr,
        "hkube: missing.yml is neither a pipeline file nor a folder\n"
    );
}

/// The run ends with one line on stderr, after the results: status, time, tasks, and where
/// their logs are. Piped here (not a terminal).
#[test]
fn run_ends_with_a_summary_line() {
    if let Some(missing) = tools_for_numbers() {
        testkit::skip(None, &format!("{missing} is not installed"));
        return;
    }
    let state = Scratch::new("summary");
    let state_dir = state.0.to_str().expect("utf-8 temp dir");
    let output = hkube(&["run", "examples/numbers", "--state-dir", state_dir], None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let job = result["jobId"].as_str().expect("a job id");
    let last = stderr.lines().last().unwrap_or_default();
    // Range makes 5 numbers: 1 Range + 5 Multiply + 1 Reduce.
    let expected = format!("hkube: job {job} completed in ");
    assert!(last.starts_with(&expected), "{stderr}");
    assert!(last.contains(" s, 7 tasks (7 succeed), "), "{stderr}");
    // The numbers' algorithms print nothing: no logs folder to point at.
    assert!(last.ends_with(", no task logs"), "{stderr}");

    // A failed run whose task printed: the reason, then the summary, with the logs' folder.
    let project = state.0.join("project");
    copy_tree(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/numbers"),
        &project,
    );
    std::fs::write(
        project.join("range/main.py"),
        "def start(args, api):\n    print('range got', args['input'][0])\n    raise ValueError('no range today')\n",
    )
    .expect("range rewritten");
    let output = hkube(
        &[
            "run",
            project.join("numbers.yml").to_str().expect("utf-8"),
            "--state-dir",
            state_dir,
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let [before @ .., summary] = &lines[..] else {
        panic!("{stderr}")
    };
    // The reason comes first (its traceback may follow it), the summary last.
    let reason = before
        .iter()
        .find(|line| line.contains("failed (node Range): "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(reason.contains("no range today"), "{stderr}");
    assert!(summary.contains(" failed in "), "{stderr}");
    assert!(summary.contains(", 1 task (1 failed), "), "{stderr}");
    let logs = summary
        .split(", task logs in ")
        .nth(1)
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(logs.starts_with(&state.0.join("logs").display().to_string()));
    let printed: String = std::fs::read_dir(logs)
        .expect("the logs folder named")
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).unwrap_or_default())
        .collect();
    assert!(printed.contains("range got 5"), "{printed}");
}

/// On a terminal (a pseudo-terminal made by `script`) the bar is erased and the summary line
/// comes after the results.
#[test]
fn run_on_a_terminal_ends_with_the_summary() {
    if let Some(missing) = tools_for_numbers() {
        testkit::skip(None, &format!("{missing} is not installed"));
        return;
    }
    let has_script = Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_script {
        testkit::skip(
            None,
            "util-linux's script (to make a terminal) is not installed",
        );
        return;
    }
    let state = Scratch::new("terminal");
    let command = format!(
        "{} run examples/numbers --state-dir {}",
        env!("CARGO_BIN_EXE_hkube"),
        state.0.display()
    );
    let output = Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .expect("script runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    let end = text.rfind("\"timeTook\"").expect("the results document");
    let after = &text[end..];
    assert!(after.contains("hkube: job "), "{text}");
    assert!(after.contains(" completed in "), "{text}");
    assert!(after.trim_end().ends_with("no task logs"), "{text}");
}

/// `hkube validate … | head -c0`: the reader is gone before hkube writes; hkube ends quietly.
#[test]
fn a_closed_stdout_is_no_error() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hkube"))
        .args(["validate", "examples/numbers/numbers.yml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hkube starts");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("hkube ends");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    assert_eq!(output.status.code(), Some(0));
}

/// A copy of the binary, alone in a folder far from the checkout, run from elsewhere: the
/// language runtimes come from inside it, written into the state folder, and the Java
/// runtime is compiled there.
#[test]
fn a_copied_binary_runs_every_language() {
    if let Some(missing) = tools_for_numbers() {
        testkit::skip(None, &format!("{missing} is not installed"));
        return;
    }
    for tool in ["javac", "java"] {
        let found = Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            testkit::skip(None, &format!("{tool} is not installed"));
            return;
        }
    }
    let scratch = Scratch::new("copied");
    let bin = scratch.0.join("bin");
    std::fs::create_dir_all(&bin).expect("bin folder");
    // A hard link is a copy at another path without its few hundred MB of debug build; a copy
    // where the temp dir is another filesystem.
    std::fs::hard_link(env!("CARGO_BIN_EXE_hkube"), bin.join("hkube"))
        .or_else(|_| std::fs::copy(env!("CARGO_BIN_EXE_hkube"), bin.join("hkube")).map(|_| ()))
        .expect("binary copied");
    let project = scratch.0.join("project");
    copy_tree(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/numbers"),
        &project,
    );
    let state = scratch.0.join("state");
    let output = Command::new(bin.join("hkube"))
        .args(["run", "--quiet", "project/numbers-java.yml", "--state-dir"])
        .arg(&state)
        .current_dir(&scratch.0)
        .env_remove("HKUBE_RUNTIMES_DIR")
        .output()
        .expect("the copy starts");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(result["data"][0]["result"], 30, "{result}");
    // The runtimes it used are the ones written into the state folder.
    let runtimes: Vec<_> = std::fs::read_dir(state.join("runtimes"))
        .expect("runtimes written into the state folder")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(runtimes.len(), 1, "{runtimes:?}");
    assert!(runtimes[0].join("java/build/hkube-runtime.jar").is_file());
    assert!(runtimes[0]
        .join("python/hkube_runtime/__main__.py")
        .is_file());
}

/// `--gpus`, `--cpus` and `--memory` declare what workers may use. An algorithm asking for a
/// GPU fails at once, naming the resource, where none is declared, and runs once one is, seeing
/// the device it was granted in `CUDA_VISIBLE_DEVICES`. `--memory-limits` names its choices.
#[test]
fn run_fits_algorithms_to_the_declared_inventory() {
    if let Some(missing) = tools_for_numbers() {
        testkit::skip(None, &format!("{missing} is not installed"));
        return;
    }
    let scratch = Scratch::new("inventory");
    let project = one_python_step(
        &scratch.0.join("project"),
        "gpu-user",
        "gpu: 1\n",
        "import os\ndef start(args, api):\n    return os.environ.get('CUDA_VISIBLE_DEVICES')\n",
    );
    let state = scratch.0.join("state");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            project.to_str().expect("utf-8"),
            "--quiet",
            "--state-dir",
            state.to_str().expect("utf-8"),
        ];
        args.extend(extra);
        hkube(&args, None)
    };
    let refused = run(&["--gpus", "0"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "algorithm gpu-user requests 1 gpu; the largest node has 0 (declare GPUs with --gpus)"
        ),
        "{stderr}"
    );
    let ran = run(&["--gpus", "1", "--cpus", "1", "--memory", "2Gi"]);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(ran.status.success(), "{stderr}");
    let result: serde_json::Value = serde_json::from_slice(&ran.stdout).expect("JSON");
    assert_eq!(result["data"][0]["result"], "0", "{result}");
    let bad = run(&["--cpus", "0"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--cpus 0: give a number of cores above 0"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let bad = run(&["--memory-limits", "cgroups"]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("memory enforcement \"cgroups\" is not one of auto, cgroup, watchdog, off"),
        "{stderr}"
    );
}

/// A project folder for `hkube run`: one Python algorithm `name` (its algorithm.yml with
/// `extra` lines) with `main_py`, and a pipeline of one node running it.
fn one_python_step(
    project: &std::path::Path,
    name: &str,
    extra: &str,
    main_py: &str,
) -> std::path::PathBuf {
    let code = project.join(name);
    std::fs::create_dir_all(&code).expect("folder");
    std::fs::write(code.join("main.py"), main_py).expect("main.py");
    std::fs::write(
        code.join("algorithm.yml"),
        format!("name: {name}\nenv: python\n{extra}code:\n  path: .\n  entryPoint: main.py\n"),
    )
    .expect("algorithm.yml");
    std::fs::write(
        project.join("pipeline.yml"),
        format!(
            "name: {name}\nnodes:\n  - nodeName: A\n    algorithmName: {name}\n    input: []\n"
        ),
    )
    .expect("pipeline.yml");
    project.to_path_buf()
}

/// `--executor kubernetes` says what it lacks: the link address pods dial, then a cluster.
#[test]
fn server_on_kubernetes_names_what_it_lacks() {
    let scratch = Scratch::new("k8s-flags");
    let state = scratch.0.join("state");
    let state = state.to_str().unwrap();
    let output = hkube(
        &["server", "--executor", "kubernetes", "--state-dir", state],
        None,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--executor kubernetes needs --link-address HOST:PORT"),
        "{stderr}"
    );
    // With a link address, against no cluster (a kubeconfig that is not there): refused.
    let refused = |link: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_hkube"))
            .args(["server", "--executor", "kubernetes", "--state-dir", state])
            .args(["--link-address", link])
            .env("KUBECONFIG", scratch.0.join("no-such-kubeconfig"))
            .env("HOME", &scratch.0)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = refused("127.0.0.1:0");
    assert!(
        stderr.contains("--link-address 127.0.0.1:0: expected HOST:PORT"),
        "{stderr}"
    );
    let stderr = refused("127.0.0.1:3003");
    assert!(
        stderr.contains("cannot reach Kubernetes (in-cluster config or KUBECONFIG)"),
        "{stderr}"
    );
}

/// With pyenv, `python3` on PATH is a bash shim; a worker starts the version pyenv would
/// choose directly (its `bin` first on PATH, as `pyenv exec` does), and the shim still runs
/// when pyenv's choice is not one installed version. A fake pyenv root whose one version is
/// a link to the real interpreter shows which way the worker started.
#[test]
fn a_pyenv_shim_is_resolved_to_its_interpreter() {
    if let Some(missing) = tools_for_numbers() {
        testkit::skip(None, &format!("{missing} is not installed"));
        return;
    }
    let scratch = Scratch::new("pyenv");
    let real = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
    let root = scratch.0.join("pyenv");
    let bin = root.join("versions/fake/bin");
    std::fs::create_dir_all(&bin).expect("versions");
    std::fs::create_dir_all(root.join("shims")).expect("shims");
    std::os::unix::fs::symlink(&real, bin.join("python3")).expect("link");
    std::fs::write(root.join("version"), "fake\n").expect("version");
    // The shim as pyenv writes it, but ending in the real interpreter (no pyenv here).
    let shim = root.join("shims/python3");
    std::fs::write(
        &shim,
        format!("#!/usr/bin/env bash\n# pyenv shim\nexec {real} \"$@\"\n"),
    )
    .expect("shim");
    let mut mode = std::fs::metadata(&shim).expect("shim").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
    std::fs::set_permissions(&shim, mode).expect("mode");

    let project = one_python_step(
        &scratch.0.join("project"),
        "where",
        "",
        "import os, sys\ndef start(args, api):\n    return [sys.executable, os.environ['PATH'].split(':')[0]]\n",
    );
    let path = format!(
        "{}:{}",
        root.join("shims").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |version: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hkube"));
        command
            .args([
                "run",
                project.to_str().expect("utf-8"),
                "--quiet",
                "--state-dir",
            ])
            .arg(scratch.0.join("state"))
            .env("PATH", &path)
            .env_remove("PYENV_VERSION")
            .env_remove("PYENV_DIR")
            .env_remove("HKUBE_PYTHON");
        if let Some(version) = version {
            command.env("PYENV_VERSION", version);
        }
        let ran = command.output().expect("hkube runs");
        let stderr = String::from_utf8_lossy(&ran.stderr);
        assert!(ran.status.success(), "{stderr}");
        let result: serde_json::Value = serde_json::from_slice(&ran.stdout).expect("JSON");
        result["data"][0]["result"].clone()
    };
    let resolved = run(None);
    assert_eq!(
        resolved[0],
        bin.join("python3").display().to_string(),
        "{resolved}"
    );
    assert_eq!(resolved[1], bin.display().to_string(), "{resolved}");
    // Two versions: pyenv's shim decides, and it ran.
    let through_shim = run(Some("fake:other"));
    assert_eq!(through_shim[0], real, "{through_shim}");
}
