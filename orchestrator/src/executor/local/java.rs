//! Java algorithms on the local executor: their sources compiled with javac against the
//! runtime's jar (built first when missing), through the process runner.

use std::path::PathBuf;
use std::time::Duration;

use builder::process;

use super::{Error, LocalAlgorithm, LocalOptions};

/// Compiles a Java algorithm's sources against the runtime jar (built first when missing).
pub(super) async fn prepare_java(
    mut algorithm: LocalAlgorithm,
    options: &LocalOptions,
) -> Result<LocalAlgorithm, Error> {
    let runtimes = &options.runtimes;
    let classes = options.work_dir.join(&algorithm.name).join("classes");
    let failed = |reason: String| Error::Prepare {
        name: algorithm.name.clone(),
        reason,
    };
    let jar = runtimes.java_jar();
    if !jar.exists() {
        let build = process::Spec::new("bash")
            .args([runtimes.dir.join("java/build.sh")])
            .inherit(process::RUNTIME_ENV);
        run_tool(build, "building the Java runtime")
            .await
            .map_err(failed)?;
    }
    let mut sources = Vec::new();
    collect_java_sources(&algorithm.code_dir, &mut sources)
        .map_err(|e| failed(format!("reading {}: {e}", algorithm.code_dir.display())))?;
    if sources.is_empty() {
        return Err(failed(format!(
            "no .java files in {}",
            algorithm.code_dir.display()
        )));
    }
    std::fs::create_dir_all(&classes)
        .map_err(|e| failed(format!("creating {}: {e}", classes.display())))?;
    let javac = process::Spec::new("javac")
        .args(["--release", "17", "-cp"])
        .args([jar.as_os_str(), "-d".as_ref(), classes.as_os_str()])
        .args(sources)
        .inherit(process::RUNTIME_ENV);
    run_tool(javac, "compiling the algorithm")
        .await
        .map_err(failed)?;
    algorithm.classpath = Some(classes);
    Ok(algorithm)
}

/// How long javac (or the Java runtime's build) may take before its group is stopped.
const TOOL_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Runs a build tool through the process runner (cleared environment, own process group,
/// [`TOOL_TIMEOUT`]); its output explains a failure.
async fn run_tool(spec: process::Spec, what: &str) -> Result<(), String> {
    let running = spec
        .timeout(Some(TOOL_TIMEOUT))
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let (exit, output) = running.output_tail(16 * 1024).await;
    match exit {
        process::Exit::Code(0) => Ok(()),
        process::Exit::Stopped { .. } => Err(format!(
            "{what} took longer than {} s and was stopped",
            TOOL_TIMEOUT.as_secs()
        )),
        other => Err(format!("{what} failed ({other}):\n{output}")),
    }
}

fn collect_java_sources(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_java_sources(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "java") {
            out.push(path);
        }
    }
    Ok(())
}
