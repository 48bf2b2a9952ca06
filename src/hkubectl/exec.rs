//! `hkube exec raw|stored|algorithm|stop|status|result|get` (hkubectl's `exec` group,
//! reference §6.2): start a job and, unless --noWait, wait for it like `hkube run` does.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use serde_json::{json, Map, Value};

use super::{cell, read_document, segment, table::table, Ctx, RemoteArgs};
use crate::progress::Progress;

/// How often a waiting command asks for the job's status.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub(super) remote: RemoteArgs,
    #[command(subcommand)]
    command: ExecCommand,
}

#[derive(Debug, clap::Args)]
struct Wait {
    /// Print the job id and return at once instead of waiting for the results.
    #[arg(long = "noWait", alias = "no-wait")]
    no_wait: bool,
}

#[derive(Debug, clap::Subcommand)]
enum ExecCommand {
    /// Run a pipeline descriptor (YAML or JSON; `-` reads standard input). Waits, showing
    /// progress on stderr, prints the results document; exits 0 when the job completed.
    Raw {
        #[arg(long, short = 'f', value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        wait: Wait,
    },
    /// Run a stored pipeline, with overrides from a file (flowInput replaces the stored one,
    /// the rest is merged), such as {"flowInput": {"N": 500}}.
    Stored {
        name: String,
        #[arg(long, short = 'f', value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Run one algorithm as a one-node pipeline.
    Algorithm {
        name: String,
        /// One input item (repeatable): JSON, or else taken as a string.
        #[arg(long = "input", value_name = "JSON")]
        input: Vec<String>,
        /// A file with the request's other fields, such as {"input": [1, 2]}.
        #[arg(long, short = 'f', value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Stop a job.
    Stop {
        job_id: String,
        /// Why (kept in the job's result).
        reason: Option<String>,
        #[arg(long = "reason", value_name = "TEXT", conflicts_with = "reason")]
        reason_flag: Option<String>,
    },
    /// A job's status: JOB STATUS PROGRESS DETAILS.
    Status { job_id: String },
    /// A finished job's results document.
    Result { job_id: String },
    /// The pipeline as the job runs it.
    Get { job_id: String },
    /// What a job's tasks printed, each line prefixed `[<node> <taskId>]` (hkube's own).
    Logs {
        job_id: String,
        /// Only this node's tasks.
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
        /// Only this task (GET /exec/tasks/<jobId> lists the ids).
        #[arg(long = "task", value_name = "TASK_ID")]
        task: Option<String>,
        /// Keep printing new lines until the job ends.
        #[arg(long, short = 'f')]
        follow: bool,
    },
}

pub(super) fn run(ctx: &Ctx, args: ExecArgs) -> anyhow::Result<u8> {
    match args.command {
        ExecCommand::Raw { file, wait } => {
            let pipeline = read_document(&file)?;
            start(ctx, "exec/raw", &pipeline, &wait)
        }
        ExecCommand::Stored { name, file, wait } => {
            let mut body = overrides(file)?;
            body.insert("name".into(), json!(name));
            start(ctx, "exec/stored", &Value::Object(body), &wait)
        }
        ExecCommand::Algorithm {
            name,
            input,
            file,
            wait,
        } => {
            let mut body = overrides(file)?;
            body.insert("name".into(), json!(name));
            if !input.is_empty() {
                body.insert("input".into(), Value::Array(input_items(&input)));
            }
            start(ctx, "exec/algorithm", &Value::Object(body), &wait)
        }
        ExecCommand::Stop {
            job_id,
            reason,
            reason_flag,
        } => {
            let mut body = json!({ "jobId": job_id });
            if let Some(reason) = reason_flag.or(reason) {
                body["reason"] = json!(reason);
            }
            let response = ctx.client.post_json("exec/stop", &body)?;
            ctx.print(&response, |value| {
                let ids: Vec<String> = value["stoppedJobIds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(cell)
                    .collect();
                format!("stopped {}", ids.join(", "))
            })?;
            Ok(0)
        }
        ExecCommand::Status { job_id } => {
            let response = ctx
                .client
                .get(&format!("exec/status/{}", segment(&job_id)))?;
            ctx.print(&response, |status| status_table(&job_id, status))?;
            Ok(0)
        }
        ExecCommand::Result { job_id } => {
            let response = ctx
                .client
                .get(&format!("exec/results/{}", segment(&job_id)))?;
            ctx.print_document(&response)?;
            Ok(0)
        }
        ExecCommand::Logs {
            job_id,
            node,
            task,
            follow,
        } => {
            let mut query = Vec::new();
            if let Some(node) = node {
                query.push(format!("node={}", segment(&node)));
            }
            if let Some(task) = task {
                query.push(format!("taskId={}", segment(&task)));
            }
            if follow {
                query.push("follow=true".to_string());
            }
            let mut path = format!("exec/logs/{}", segment(&job_id));
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            ctx.client
                .get_streamed(&path, &mut std::io::stdout().lock())?;
            Ok(0)
        }
        ExecCommand::Get { job_id } => {
            let response = ctx
                .client
                .get(&format!("exec/pipelines/{}", segment(&job_id)))?;
            ctx.print_document(&response)?;
            Ok(0)
        }
    }
}

/// The object of an overrides file, or an empty one.
fn overrides(file: Option<PathBuf>) -> anyhow::Result<Map<String, Value>> {
    match file {
        None => Ok(Map::new()),
        Some(file) => match read_document(&file)? {
            Value::Object(map) => Ok(map),
            _ => bail!("{} must hold an object", file.display()),
        },
    }
}

/// `--input` values: JSON where they parse, strings otherwise.
fn input_items(inputs: &[String]) -> Vec<Value> {
    inputs
        .iter()
        .map(|text| serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())))
        .collect()
}

fn status_table(job_id: &str, status: &Value) -> String {
    let progress = match status["data"]["progress"].as_f64() {
        Some(progress) => format!("{progress}%"),
        None => String::new(),
    };
    let details = match status["data"]["details"].as_str() {
        Some(details) => details.to_string(),
        None => cell(
            status
                .get("error")
                .or_else(|| status.get("reason"))
                .unwrap_or(&Value::Null),
        ),
    };
    let job = status["jobId"].as_str().unwrap_or(job_id).to_string();
    table(
        &["JOB", "STATUS", "PROGRESS", "DETAILS"],
        &[vec![job, cell(&status["status"]), progress, details]],
    )
}

/// Starts the job; unless --noWait, waits for it and prints its results.
fn start(ctx: &Ctx, path: &str, body: &Value, wait: &Wait) -> anyhow::Result<u8> {
    let response = ctx.client.post_json(path, body)?;
    let started = response.json()?;
    let Some(job) = started["jobId"].as_str().map(str::to_string) else {
        bail!("the server answered without a jobId: {}", response.text());
    };
    if wait.no_wait {
        ctx.print(&response, |_| job.clone())?;
        return Ok(0);
    }
    let mut progress = Progress::new(&job);
    loop {
        let status = ctx
            .client
            .get(&format!("exec/status/{}", segment(&job)))?
            .json()?;
        if matches!(
            status["status"].as_str(),
            Some("completed" | "failed" | "stopped")
        ) {
            break;
        }
        progress.show(&status);
        std::thread::sleep(POLL);
    }
    progress.finish();
    let response = ctx.client.get(&format!("exec/results/{}", segment(&job)))?;
    ctx.print_document(&response)?;
    let result = response.json()?;
    let status = result["status"].as_str().unwrap_or("unknown");
    if status == "completed" {
        return Ok(0);
    }
    let why = result
        .get("error")
        .or_else(|| result.get("reason"))
        .and_then(Value::as_str)
        .unwrap_or("no reason given");
    let node = result["nodeName"]
        .as_str()
        .map(|n| format!(" (node {n})"))
        .unwrap_or_default();
    eprintln!("hkube: job {job} {status}{node}: {why}");
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_json_or_strings() {
        let inputs: Vec<String> = ["5", "[1,2]", "hello", "\"quoted\""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            input_items(&inputs),
            vec![json!(5), json!([1, 2]), json!("hello"), json!("quoted")]
        );
    }

    #[test]
    fn status_rows() {
        let active = json!({"jobId": "j1", "status": "active",
            "data": {"progress": 33.33, "details": "33.33% completed, 1 running, 2 pending"}});
        assert_eq!(
            status_table("x", &active),
            "JOB  STATUS  PROGRESS  DETAILS\nj1   active  33.33%    33.33% completed, 1 running, 2 pending\n"
        );
        let ended = json!({"jobId": "j2", "status": "failed", "error": "boom"});
        assert_eq!(
            status_table("x", &ended),
            "JOB  STATUS  PROGRESS  DETAILS\nj2   failed            boom\n"
        );
    }
}
