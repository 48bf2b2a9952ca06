//! `hkube`: the command line.
//!
//! `hkube run` runs a pipeline on this machine; `hkube validate` checks descriptors; `hkube
//! server` serves the HKube-compatible REST API; `hkube algorithm|pipeline|exec` are
//! hkubectl's commands against such an API.

mod client;
mod hkubectl;
mod inventory;
mod progress;
mod run;
mod server;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use orchestrator::dag::FlowInputCheck;
use orchestrator::spec;

#[derive(Debug, Parser)]
#[command(
    name = "hkube",
    version,
    about = "Run HKube-compatible pipelines of user algorithms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline on this machine (the local executor): prints the results document as
    /// JSON; exits 0 when the job completed, 1 otherwise.
    Run(run::RunArgs),
    /// Serve the HKube-compatible REST API (/api/v1) until SIGTERM or Ctrl-C.
    Server(Box<server::ServerArgs>),
    /// hkubectl's `algorithm` commands against an HKube API: apply, list, get, delete.
    Algorithm(hkubectl::AlgorithmArgs),
    /// hkubectl's `pipeline` commands against an HKube API: store, list, get, delete.
    Pipeline(hkubectl::PipelineArgs),
    /// hkubectl's `exec` commands against an HKube API: raw, stored, algorithm, stop, status,
    /// result, get.
    Exec(hkubectl::ExecArgs),
    /// Check pipeline descriptors (JSON or YAML) the way `POST /exec/raw` does: HKube's schema,
    /// defaults, node rules and graph (references, cycles, flowInput paths), hkube's limits and
    /// the features hkube does not implement. Prints the pipeline with its defaults filled in;
    /// unknown fields are warned about on stderr. A file named algorithm.yml (.yaml, .json) is
    /// checked as an algorithm, as `hkube run` reads it.
    Validate {
        /// Descriptor files; `-` reads standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Skip the flowInput check, as storing a pipeline does.
        #[arg(long)]
        stored: bool,
        /// Print nothing on success.
        #[arg(long, short)]
        quiet: bool,
    },
}

/// The engine's and executor's warnings during `hkube run`, as plain lines on stderr (no
/// time: a run is short and its output is read by people).
fn plain_warnings() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_max_level(tracing::Level::WARN)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            plain_warnings();
            match run::run(args) {
                Ok(code) => ExitCode::from(code),
                Err(error) => {
                    eprintln!("hkube: {}", describe(&error));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Server(args) => match server::server(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("hkube: {}", describe(&error));
                ExitCode::FAILURE
            }
        },
        Command::Algorithm(args) => ExitCode::from(hkubectl::algorithm(args)),
        Command::Pipeline(args) => ExitCode::from(hkubectl::pipeline(args)),
        Command::Exec(args) => ExitCode::from(hkubectl::exec(args)),
        Command::Validate {
            files,
            stored,
            quiet,
        } => {
            let mut failed = false;
            let mut stdout = std::io::stdout().lock();
            for file in &files {
                match validate(file, stored) {
                    Ok((summary, warnings)) => {
                        for warning in warnings {
                            eprintln!("{}: warning: {warning}", file.display());
                        }
                        if quiet {
                            continue;
                        }
                        if let Err(error) = writeln!(stdout, "{summary}") {
                            if error.kind() == std::io::ErrorKind::BrokenPipe {
                                return ExitCode::SUCCESS;
                            }
                            eprintln!("hkube: writing the pipeline: {error}");
                            return ExitCode::FAILURE;
                        }
                    }
                    Err(error) => {
                        eprintln!("{}: {}", file.display(), describe(&error));
                        failed = true;
                    }
                }
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

/// Whether the error is standard output's reader having gone (`hkube … | head`): the
/// command then ends quietly, as a program killed by SIGPIPE would, with no "Broken pipe".
pub(crate) fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let kind = cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| {
                cause
                    .downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind)
            });
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// An error and its causes as one line, `what: why: why`, leaving out a cause the text before
/// it already ends with (an error that both prints its source and returns it as its cause
/// would otherwise say it twice).
pub(crate) fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// The checked descriptor with its defaults, and the warnings about its unknown fields.
fn validate(file: &PathBuf, stored: bool) -> anyhow::Result<(String, Vec<String>)> {
    let is_algorithm = file
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| orchestrator::project::FILE_NAMES.contains(&name));
    if is_algorithm {
        let algorithm = orchestrator::project::read_algorithm(file)?;
        let json = serde_json::to_string_pretty(&algorithm.descriptor)?;
        return Ok((json, algorithm.warnings));
    }
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let value = spec::read_document(&text)?;
    let warnings = spec::pipeline_warnings(&value);
    let check = if stored {
        FlowInputCheck::Skipped
    } else {
        FlowInputCheck::Required
    };
    let pipeline = orchestrator::engine::submit::validate_offline(value, check)?;
    Ok((serde_json::to_string_pretty(&pipeline)?, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let error = anyhow::Error::new(std::io::Error::other(format!("cannot read x.yml: {io}")))
            .context("reading the project");
        assert_eq!(
            describe(&error),
            "reading the project: cannot read x.yml: No such file"
        );
        let error = anyhow::Error::new(io).context("cannot read x.yml: No such file");
        assert_eq!(describe(&error), "cannot read x.yml: No such file");
        let error = anyhow::anyhow!("inner").context("outer");
        assert_eq!(describe(&error), "outer: inner");
    }
}
