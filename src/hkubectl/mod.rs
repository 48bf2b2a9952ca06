//! hkubectl's commands (reference §6) against an HKube API: `hkube algorithm …`,
//! `hkube pipeline …`, `hkube exec …`.
//!
//! Each command is one or two HTTP calls through [`crate::client`]; this module only reads
//! files, shapes request bodies and prints answers: tables for people, the server's JSON
//! unchanged with `--json`. An error answer prints HKube's message on stderr and exits 1. It
//! must never run jobs or touch a state folder itself: everything goes through the API.

mod algorithm;
mod config;
mod exec;
mod pack;
mod pipeline;
mod table;

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::client::{self, Client, Response};

pub use algorithm::AlgorithmArgs;
pub use exec::ExecArgs;
pub use pipeline::PipelineArgs;

/// Options every hkubectl-compatible command takes, before or after the subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct RemoteArgs {
    /// The API's address; only the scheme, host and port count. [env: HKUBE_ENDPOINT]
    /// [default: .hkuberc's endpoint, else http://127.0.0.1:3000]
    #[arg(long, short = 'e', global = true, value_name = "URL")]
    endpoint: Option<String>,
    /// Sent as `Authorization: Bearer TOKEN` (the server's --token). [env: HKUBE_TOKEN]
    #[arg(long, global = true, value_name = "TOKEN")]
    token: Option<String>,
    /// The path before the API's routes: `/api/v1` for `hkube server`; hkubectl's
    /// `/hkube/api-server/` (a cluster's ingress) gets `api/v1` added. [env:
    /// HKUBE_PATH_PREFIX] [default: .hkuberc's pathPrefix, else /api/v1]
    #[arg(
        long = "path-prefix",
        visible_alias = "pathPrefix",
        global = true,
        value_name = "PATH"
    )]
    path_prefix: Option<String>,
    /// Print the server's JSON unchanged instead of tables and text.
    #[arg(long, short = 'j', global = true)]
    json: bool,
}

/// What a command needs: the client and how to print.
#[derive(Debug)]
struct Ctx {
    client: Client,
    json: bool,
    /// `.hkuberc` names a user (hkubectl's Keycloak login), for the 401 hint.
    username: Option<String>,
}

impl Ctx {
    fn new(args: &RemoteArgs) -> anyhow::Result<Ctx> {
        let rc = config::find_rc()?;
        let flags = config::Given {
            endpoint: args.endpoint.clone(),
            token: args.token.clone(),
            path_prefix: args.path_prefix.clone(),
        };
        let settings = config::Settings::resolve(&flags, &config::from_env(), rc.as_ref());
        let client = Client::new(
            &settings.endpoint,
            &settings.path_prefix,
            settings.token,
            settings.verify_tls,
        )
        .with_context(|| match &rc {
            Some(rc) if rc.endpoint.as_deref() == Some(settings.endpoint.as_str()) => {
                format!("the endpoint comes from {}", rc.file.display())
            }
            _ => "give --endpoint http[s]://HOST:PORT".to_string(),
        })?;
        Ok(Ctx {
            client,
            json: args.json,
            username: settings.username,
        })
    }

    /// The server's body as it came (`--json`), or `people` for people.
    fn print(
        &self,
        response: &Response,
        people: impl FnOnce(&Value) -> String,
    ) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        if self.json {
            let text = response.text();
            write!(stdout, "{text}")?;
            if !text.ends_with('\n') {
                writeln!(stdout)?;
            }
        } else {
            let text = people(&response.json()?);
            write!(stdout, "{text}")?;
            if !text.is_empty() && !text.ends_with('\n') {
                writeln!(stdout)?;
            }
        }
        Ok(())
    }

    /// A document: pretty JSON for people, the server's JSON with `--json`.
    fn print_document(&self, response: &Response) -> anyhow::Result<()> {
        self.print(response, |value| {
            serde_json::to_string_pretty(value).unwrap_or_default()
        })
    }

    /// Explains a failed call on stderr; returns the exit code.
    fn report(&self, error: &anyhow::Error) -> u8 {
        match error.downcast_ref::<client::Error>() {
            Some(client::Error::Api {
                status, message, ..
            }) => {
                eprintln!("hkube: {message}");
                if *status == 401 {
                    if self.client.has_token() {
                        eprintln!("hkube: the server refused the token");
                    } else {
                        eprintln!(
                            "hkube: the server needs a token: give --token or set HKUBE_TOKEN"
                        );
                    }
                    if self.username.is_some() {
                        eprintln!(
                            "hkube: .hkuberc's username/password (hkubectl's Keycloak login) is not supported; use a token"
                        );
                    }
                }
            }
            Some(client::Error::Unreachable { .. }) => {
                eprintln!("hkube: {error}");
                eprintln!(
                    "hkube: start one with `hkube server` (it listens on http://127.0.0.1:3000), or name another with --endpoint, HKUBE_ENDPOINT or .hkuberc"
                );
            }
            _ => eprintln!("hkube: {}", crate::describe(error)),
        }
        1
    }
}

/// Runs a command; errors are printed here. Returns the exit code.
fn dispatch(remote: &RemoteArgs, run: impl FnOnce(&Ctx) -> anyhow::Result<u8>) -> u8 {
    let ctx = match Ctx::new(remote) {
        Ok(ctx) => ctx,
        Err(error) => {
            eprintln!("hkube: {}", crate::describe(&error));
            return 1;
        }
    };
    match run(&ctx) {
        Ok(code) => code,
        // `hkube exec get X | head`: the reader has all it wanted.
        Err(error) if crate::is_broken_pipe(&error) => 0,
        Err(error) => ctx.report(&error),
    }
}

pub fn algorithm(args: AlgorithmArgs) -> u8 {
    let remote = args.remote.clone();
    dispatch(&remote, |ctx| algorithm::run(ctx, args))
}

pub fn pipeline(args: PipelineArgs) -> u8 {
    let remote = args.remote.clone();
    dispatch(&remote, |ctx| pipeline::run(ctx, args))
}

pub fn exec(args: ExecArgs) -> u8 {
    let remote = args.remote.clone();
    dispatch(&remote, |ctx| exec::run(ctx, args))
}

/// A JSON or YAML document from a file, or from standard input for `-`.
fn read_document(file: &Path) -> anyhow::Result<Value> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    orchestrator::spec::read_document(&text).with_context(|| format!("reading {}", file.display()))
}

/// A name or id as one URL path segment.
fn segment(text: &str) -> String {
    let mut encoded = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// A JSON value as a table cell: strings without quotes, nothing for null.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("numbers"), "numbers");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        assert_eq!(segment("main:1.0"), "main%3A1.0");
    }

    #[test]
    fn cells() {
        assert_eq!(cell(&serde_json::json!("x")), "x");
        assert_eq!(cell(&serde_json::json!(0.5)), "0.5");
        assert_eq!(cell(&Value::Null), "");
    }
}
