//! `hkube pipeline store|list|get|delete` (hkubectl's `pipeline` group, reference §6.2).

use std::path::PathBuf;

use serde_json::Value;

use super::{cell, read_document, segment, table::table, Ctx, RemoteArgs};

#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    #[command(flatten)]
    pub(super) remote: RemoteArgs,
    #[command(subcommand)]
    command: PipelineCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PipelineCommand {
    /// Store a pipeline descriptor (YAML or JSON; `-` reads standard input).
    Store {
        #[arg(long, short = 'f', value_name = "FILE")]
        file: PathBuf,
    },
    /// The stored pipelines: NAME NODES.
    List,
    /// One stored pipeline (without a name: all of them, as hkubectl does).
    Get { name: Option<String> },
    /// Delete a stored pipeline; its unfinished jobs are stopped.
    Delete { name: String },
}

pub(super) fn run(ctx: &Ctx, args: PipelineArgs) -> anyhow::Result<u8> {
    match args.command {
        PipelineCommand::Store { file } => {
            let pipeline = read_document(&file)?;
            let response = ctx.client.post_json("store/pipelines", &pipeline)?;
            ctx.print(&response, |stored| {
                format!(
                    "stored pipeline {} ({} nodes)",
                    cell(&stored["name"]),
                    stored["nodes"].as_array().map(Vec::len).unwrap_or(0)
                )
            })?;
            Ok(0)
        }
        PipelineCommand::List | PipelineCommand::Get { name: None } => {
            let response = ctx.client.get("store/pipelines")?;
            ctx.print(&response, pipeline_table)?;
            Ok(0)
        }
        PipelineCommand::Get { name: Some(name) } => {
            let response = ctx
                .client
                .get(&format!("store/pipelines/{}", segment(&name)))?;
            ctx.print_document(&response)?;
            Ok(0)
        }
        PipelineCommand::Delete { name } => {
            let response = ctx
                .client
                .delete(&format!("store/pipelines/{}", segment(&name)))?;
            ctx.print(&response, |value| cell(&value["message"]))?;
            Ok(0)
        }
    }
}

fn pipeline_table(pipelines: &Value) -> String {
    let rows: Vec<Vec<String>> = pipelines
        .as_array()
        .into_iter()
        .flatten()
        .map(|pipeline| {
            let nodes: Vec<String> = pipeline["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|node| cell(&node["nodeName"]))
                .collect();
            vec![cell(&pipeline["name"]), nodes.join(",")]
        })
        .collect();
    table(&["NAME", "NODES"], &rows)
}
