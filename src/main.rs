//! `hkube`: the command line.
//!
//! Today it checks descriptors (`hkube validate`); running pipelines (`hkube run`, `hkube
//! server` and hkubectl's commands) arrives with the worker tier and the front door.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use orchestrator::dag::{FlowInputCheck, Graph};
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
    /// Check pipeline descriptors (JSON or YAML) the way `POST /exec/raw` does: HKube's schema,
    /// defaults, node rules and graph (references, cycles, flowInput paths). Prints the
    /// pipeline with its defaults filled in.
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate {
            files,
            stored,
            quiet,
        } => {
            let mut failed = false;
            for file in &files {
                match validate(file, stored) {
                    Ok(summary) => {
                        if !quiet {
                            println!("{summary}");
                        }
                    }
                    Err(error) => {
                        eprintln!("{}: {error:#}", file.display());
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

fn validate(file: &PathBuf, stored: bool) -> anyhow::Result<String> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let value = spec::read_document(&text)?;
    let pipeline = spec::parse_pipeline(value)?;
    let check = if stored {
        FlowInputCheck::Skipped
    } else {
        FlowInputCheck::Required
    };
    Graph::build(&pipeline, check)?;
    Ok(serde_json::to_string_pretty(&pipeline)?)
}
