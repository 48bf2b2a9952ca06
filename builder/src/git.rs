//! Algorithm sources in git: which commit a build would use (`resolve`), and that commit's files
//! in a build folder without its history (`checkout`).
//!
//! Everything goes through the `git` command line, so any host git can reach works (GitHub,
//! GitLab with subgroups, self-hosted servers, `file://` and absolute local paths), where HKube
//! asks the GitHub or GitLab API and so supports only those two. A commit is resolved with
//! `git ls-remote`: no API, no clone.
//!
//! What this module must never do:
//! - put a token where other users of the machine can read it: not in a URL, not in argv
//!   (`/proc/<pid>/cmdline` is world-readable), not in an error. The token reaches git as an
//!   `http.extraHeader` in `GIT_CONFIG_*` variables of git's own environment, and is redacted
//!   from every line of git's output that an error repeats;
//! - wait for a person: `GIT_TERMINAL_PROMPT=0`, ssh in batch mode, and a timeout after which
//!   git's whole process group gets SIGTERM, then SIGKILL;
//! - let a source pick git's transport or options: URLs are limited to http(s), ssh, git, file
//!   and absolute paths (no `ext::`), and nothing from the source can be read as an option.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::process;

/// How long one git command may run before it is stopped.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The branch HKube builds when a source names neither a tag nor a commit.
pub const DEFAULT_BRANCH: &str = "master";

/// How long git gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(2);
/// git's stdout is parsed, so it is refused rather than cut when longer than this.
const MAX_STDOUT: usize = 1 << 20;
/// Only the end of git's stderr is kept: the reason for a failure is on the last lines.
const MAX_STDERR: usize = 4 << 10;

/// Variables git may see from our environment: the ones that say where things are (PATH,
/// HOME for the user's git and ssh configuration) and how to reach the network (proxies,
/// certificates, the ssh agent; the proxies are [`process::PROXY_ENV`]). Anything else, `GIT_*` included, could change what git does.
const ENV_ALLOW: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "TMPDIR",
    "XDG_CONFIG_HOME",
    "GIT_EXEC_PATH",
    "GIT_CONFIG_GLOBAL",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "SSH_AUTH_SOCK",
];

/// HKube's `gitRepository`: where an algorithm's code lives and which revision to build.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitSource {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<Commit>,
    /// A personal or project access token for a private repository (http(s) URLs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default)]
    pub git_kind: GitKind,
    /// Added by HKube's server: the URL without `.git`. Kept so stored documents round-trip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_url: Option<String>,
    /// Added by HKube's server: the URL with `.git`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_url: Option<String>,
}

/// A commit as HKube stores it in `gitRepository.commit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The hosting flavour; it only decides the user name that goes with a token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GitKind {
    #[default]
    Github,
    Gitlab,
}

/// The revision a source asks for, in HKube's order of precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Commit(String),
    Tag(String),
    Branch(String),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Commit(id) => write!(f, "commit {id}"),
            Reference::Tag(name) => write!(f, "tag {name}"),
            Reference::Branch(name) => write!(f, "branch {name}"),
        }
    }
}

impl GitSource {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// The commit id if given, else the tag, else the branch (`master` when none). Empty
    /// strings count as absent, as a form leaves them.
    pub fn reference(&self) -> Reference {
        fn given(value: &Option<String>) -> Option<&str> {
            value.as_deref().filter(|v| !v.is_empty())
        }
        if let Some(id) = self
            .commit
            .as_ref()
            .map(|c| c.id.as_str())
            .filter(|id| !id.is_empty())
        {
            Reference::Commit(id.to_owned())
        } else if let Some(tag) = given(&self.tag) {
            Reference::Tag(tag.to_owned())
        } else {
            Reference::Branch(
                given(&self.branch_name)
                    .unwrap_or(DEFAULT_BRANCH)
                    .to_owned(),
            )
        }
    }

    fn validate(&self) -> Result<(), GitError> {
        check_url(&self.url).map_err(|why| GitError::Invalid(format!("url: {why}")))?;
        match self.reference() {
            Reference::Commit(id) => check_commit_id(&id),
            Reference::Tag(name) | Reference::Branch(name) => check_ref_name(&name),
        }
        .map_err(GitError::Invalid)
    }

    fn shown_url(&self) -> String {
        without_credentials(&self.url)
    }
}

/// The token is never printed, not even in debug output.
impl fmt::Debug for GitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitSource")
            .field("url", &self.shown_url())
            .field("branch_name", &self.branch_name)
            .field("tag", &self.tag)
            .field("commit", &self.commit)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("git_kind", &self.git_kind)
            .finish_non_exhaustive()
    }
}

/// The commit a build of a source would use now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedCommit {
    /// The full commit id (for a commit source: the id as given, lowercased).
    pub id: String,
    /// What was resolved, e.g. `branch feature/x`.
    pub reference: Reference,
}

/// A commit's files, written to a build folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The full id, also when a short one was asked for.
    pub commit_id: String,
    /// The whole commit message, without its final newline.
    pub message: String,
    /// The committer date, ISO 8601 (`%cI`).
    pub timestamp: String,
}

/// Why a source could not be resolved or checked out. Messages name the URL (without any
/// credentials) and never contain the token.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("invalid git source: {0}")]
    Invalid(String),
    #[error("{reference} not found in {url}")]
    NotFound { reference: Reference, url: String },
    #[error("git {action} {url} failed: {stderr}")]
    Failed {
        action: &'static str,
        url: String,
        stderr: String,
    },
    #[error("git {action} {url} took longer than {}s and was stopped", after.as_secs_f64())]
    Timeout {
        action: &'static str,
        url: String,
        after: Duration,
    },
    #[error("could not run {}: {source}", program.display())]
    Spawn { program: PathBuf, source: io::Error },
    #[error("the checkout folder {0} exists and is not empty")]
    NotEmpty(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// How git is run. `Git::default()` runs `git` from PATH with a 5 minute timeout.
#[derive(Debug, Clone)]
pub struct Git {
    pub program: PathBuf,
    /// For each git command on its own; a checkout runs several.
    pub timeout: Duration,
}

impl Default for Git {
    fn default() -> Self {
        Self {
            program: PathBuf::from("git"),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// `Git::default().resolve(source)`.
pub async fn resolve(source: &GitSource) -> Result<ResolvedCommit, GitError> {
    Git::default().resolve(source).await
}

/// `Git::default().checkout(source, commit_id, dest)`.
pub async fn checkout(
    source: &GitSource,
    commit_id: &str,
    dest: &Path,
) -> Result<Checkout, GitError> {
    Git::default().checkout(source, commit_id, dest).await
}

impl Git {
    /// The commit a build would use: the given commit id as it is (it is checked by
    /// `checkout`, which has to fetch it anyway), else the tag's commit (annotated tags are
    /// peeled), else the head of the branch, as the server reports them now.
    pub async fn resolve(&self, source: &GitSource) -> Result<ResolvedCommit, GitError> {
        source.validate()?;
        let reference = source.reference();
        let wanted: Vec<String> = match &reference {
            Reference::Commit(id) => {
                return Ok(ResolvedCommit {
                    id: id.to_ascii_lowercase(),
                    reference,
                })
            }
            Reference::Branch(name) => vec![format!("refs/heads/{name}")],
            Reference::Tag(name) => {
                vec![
                    format!("refs/tags/{name}"),
                    format!("refs/tags/{name}^{{}}"),
                ]
            }
        };
        let mut args = vec![
            "ls-remote".into(),
            "--end-of-options".into(),
            source.url.clone().into(),
        ];
        args.extend(wanted.iter().map(OsString::from));
        let listing = self
            .run("ls-remote", source, &std::env::temp_dir(), args)
            .await?;
        // ls-remote matches patterns against the end of ref names, so keep exact names only;
        // the last one wanted (a tag's peeled commit) wins over the tag object.
        let id = wanted
            .iter()
            .rev()
            .find_map(|name| {
                listing.lines().find_map(|line| {
                    let (id, refname) = line.split_once('\t')?;
                    (refname == name).then(|| id.to_owned())
                })
            })
            .ok_or_else(|| GitError::NotFound {
                reference: reference.clone(),
                url: source.shown_url(),
            })?;
        Ok(ResolvedCommit { id, reference })
    }

    /// Writes the files of `commit_id` (full or abbreviated) from `source` into `dest`, which
    /// must be empty or absent, without `.git`. Fetches only that commit where the server
    /// allows it, else everything under branches and tags. On error `dest` is removed.
    pub async fn checkout(
        &self,
        source: &GitSource,
        commit_id: &str,
        dest: &Path,
    ) -> Result<Checkout, GitError> {
        source.validate()?;
        check_commit_id(commit_id).map_err(GitError::Invalid)?;
        let io_error = |source| GitError::Io {
            path: dest.to_path_buf(),
            source,
        };
        if std::fs::read_dir(dest).is_ok_and(|mut entries| entries.next().is_some()) {
            return Err(GitError::NotEmpty(dest.to_path_buf()));
        }
        tokio::fs::create_dir_all(dest).await.map_err(io_error)?;
        let result = self.fetch_into(source, commit_id, dest).await;
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(dest).await;
        }
        result
    }

    async fn fetch_into(
        &self,
        source: &GitSource,
        commit_id: &str,
        dest: &Path,
    ) -> Result<Checkout, GitError> {
        let url = OsString::from(&source.url);
        self.run("init", source, dest, args(["init", "--quiet"]))
            .await?;
        let mut shallow = args([
            "fetch",
            "--quiet",
            "--depth=1",
            "--no-tags",
            "--end-of-options",
        ]);
        shallow.extend([url.clone(), commit_id.into()]);
        match self.run("fetch", source, dest, shallow).await {
            Ok(_) => {}
            Err(timeout @ GitError::Timeout { .. }) => return Err(timeout),
            // Servers that refuse unadvertised commits, and abbreviated ids, need a full fetch.
            Err(_) => {
                let mut full = args(["fetch", "--quiet", "--no-tags", "--end-of-options"]);
                full.extend([
                    url,
                    "+refs/heads/*:refs/remotes/origin/*".into(),
                    "+refs/tags/*:refs/tags/*".into(),
                ]);
                self.run("fetch", source, dest, full).await?;
            }
        }
        let mut verify = args(["rev-parse", "--verify", "--quiet", "--end-of-options"]);
        verify.push(format!("{commit_id}^{{commit}}").into());
        let full_id = self
            .run("rev-parse", source, dest, verify)
            .await
            .ok()
            .map(|out| out.trim().to_owned())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| GitError::NotFound {
                reference: Reference::Commit(commit_id.to_owned()),
                url: source.shown_url(),
            })?;
        let mut switch = args([
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "--quiet",
            "--detach",
        ]);
        switch.push(full_id.clone().into());
        self.run("checkout", source, dest, switch).await?;
        let mut log = args(["log", "-1", "--format=%H%x00%cI%x00%B"]);
        log.push(full_id.into());
        let described = self.run("log", source, dest, log).await?;
        let mut fields = described.splitn(3, '\0');
        let (Some(commit_id), Some(timestamp), Some(message)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(GitError::Failed {
                action: "log",
                url: source.shown_url(),
                stderr: format!("unexpected output {described:?}"),
            });
        };
        let git_dir = dest.join(".git");
        tokio::fs::remove_dir_all(&git_dir)
            .await
            .map_err(|source| GitError::Io {
                path: git_dir,
                source,
            })?;
        Ok(Checkout {
            commit_id: commit_id.to_owned(),
            message: message.trim_end().to_owned(),
            timestamp: timestamp.to_owned(),
        })
    }

    /// Runs one git command in `cwd` and returns its stdout. The child runs in its own process
    /// group, so a timeout also stops the helpers git starts (`git-remote-https`, ssh), which
    /// would otherwise hold the output pipes open; dropping the future kills the group too.
    async fn run(
        &self,
        action: &'static str,
        source: &GitSource,
        cwd: &Path,
        args: Vec<OsString>,
    ) -> Result<String, GitError> {
        let mut spec = process::Spec::new(&self.program)
            .args(args)
            .cwd(cwd)
            .inherit(ENV_ALLOW)
            .inherit(process::PROXY_ENV)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C")
            .timeout(Some(self.timeout))
            .grace(GRACE);
        if std::env::var_os("GIT_SSH_COMMAND").is_none() && std::env::var_os("GIT_SSH").is_none() {
            // An unknown host key or a passphrase would otherwise make ssh ask.
            spec = spec.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        }
        let auth = source
            .token
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|token| {
                let user = match source.git_kind {
                    GitKind::Github => "x-access-token",
                    GitKind::Gitlab => "gitlab-ci-token",
                };
                let basic =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
                (token, basic)
            });
        if let Some((_, basic)) = &auth {
            spec = spec
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {basic}"),
                );
        }
        let mut running = spec.spawn().map_err(|error| GitError::Spawn {
            program: self.program.clone(),
            source: match error {
                process::Error::Spawn { source, .. } => source,
            },
        })?;
        let (stdout, stderr) = (running.take_stdout(), running.take_stderr());
        let (out, err, exit) = tokio::join!(read_head(stdout), read_tail(stderr), running.wait());
        if let process::Exit::Stopped { .. } = exit {
            return Err(GitError::Timeout {
                action,
                url: source.shown_url(),
                after: self.timeout,
            });
        }
        let failed = |why: String| {
            let mut why = without_credentials(why.trim());
            if let Some((token, basic)) = &auth {
                why = why
                    .replace(basic.as_str(), "<redacted>")
                    .replace(token, "<redacted>");
            }
            GitError::Failed {
                action,
                url: source.shown_url(),
                stderr: why,
            }
        };
        if !exit.success() {
            return Err(failed(String::from_utf8_lossy(&err).into_owned()));
        }
        let out = out.ok_or_else(|| failed(format!("more than {MAX_STDOUT} bytes of output")))?;
        String::from_utf8(out).map_err(|_| failed("output is not UTF-8".into()))
    }
}

fn args<const N: usize>(list: [&str; N]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

/// All of a stream, or None past MAX_STDOUT (still read to the end, so git never blocks).
async fn read_head(stream: Option<impl AsyncRead + Unpin>) -> Option<Vec<u8>> {
    let mut kept = Vec::new();
    let mut too_long = false;
    drain(stream, |chunk| {
        if kept.len() + chunk.len() > MAX_STDOUT {
            too_long = true;
        } else {
            kept.extend_from_slice(chunk);
        }
    })
    .await;
    (!too_long).then_some(kept)
}

/// The last MAX_STDERR bytes of a stream.
async fn read_tail(stream: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut kept = Vec::new();
    drain(stream, |chunk| {
        kept.extend_from_slice(chunk);
        let excess = kept.len().saturating_sub(MAX_STDERR);
        kept.drain(..excess);
    })
    .await;
    kept
}

async fn drain(stream: Option<impl AsyncRead + Unpin>, mut keep: impl FnMut(&[u8])) {
    let Some(mut stream) = stream else { return };
    let mut buffer = [0u8; 8192];
    while let Ok(read @ 1..) = stream.read(&mut buffer).await {
        keep(&buffer[..read]);
    }
}

/// The key that matches a pushed repository to the algorithms built from it: lowercase scheme
/// and host, no credentials, no default port, no trailing `/` or `.git`. ssh and git URLs, and
/// scp-like `git@host:owner/repo.git`, become `https://host/owner/repo`, the URL a user is most
/// likely to have registered; the path keeps its case. Local paths only lose the suffixes.
pub fn normalize_url(url: &str) -> String {
    let url = url.trim();
    let (scheme, authority, path) = match split_url(url) {
        Some(parts) => parts,
        None => match scp_like(url) {
            Some((host, path)) => ("https".to_owned(), host.to_owned(), path),
            None => return trim_repo_suffix(url).to_owned(),
        },
    };
    if scheme == "file" {
        return format!("file://{authority}/{}", trim_repo_suffix(path));
    }
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, host)| host)
        .to_ascii_lowercase();
    let (scheme, host) = match scheme.as_str() {
        "ssh" | "git" | "git+ssh" | "ssh+git" => ("https", strip_port(&host_port)),
        "https" => (
            "https",
            host_port.strip_suffix(":443").unwrap_or(&host_port),
        ),
        "http" => ("http", host_port.strip_suffix(":80").unwrap_or(&host_port)),
        other => (other, host_port.as_str()),
    };
    let path = trim_repo_suffix(path.trim_start_matches('/'));
    if path.is_empty() {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}/{path}")
    }
}

/// `scheme://authority/path` → (lowercase scheme, authority, path without its leading `/`).
fn split_url(url: &str) -> Option<(String, String, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let valid = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid {
        return None;
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    Some((scheme.to_ascii_lowercase(), authority.to_owned(), path))
}

/// git's scp-like syntax `[user@]host:path`: a colon before any slash.
fn scp_like(url: &str) -> Option<(&str, &str)> {
    let (head, path) = url.split_once(':')?;
    if head.is_empty() || head.contains('/') || path.starts_with("//") {
        return None;
    }
    let host = head.rsplit_once('@').map_or(head, |(_, host)| host);
    Some((host, path))
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        // A colon inside brackets is part of an IPv6 address, not a port.
        Some((name, port)) if !port.contains(']') && port.chars().all(|c| c.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

fn trim_repo_suffix(path: &str) -> &str {
    let path = path.trim_end_matches('/');
    path.strip_suffix(".git")
        .unwrap_or(path)
        .trim_end_matches('/')
}

/// The URL as errors and logs may show it: any `user:password@` removed.
fn without_credentials(text: &str) -> String {
    // Applied to free text too (git's stderr), so every `scheme://user@` is handled.
    let mut shown = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        shown.push_str(before);
        let authority_end = after
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(after.len());
        match after[..authority_end].rfind('@') {
            Some(at) => rest = &after[at + 1..],
            None => rest = after,
        }
    }
    shown.push_str(rest);
    shown
}

fn check_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Err("it is empty".into());
    }
    if url.starts_with('-') || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("`{}` is not a URL", without_credentials(url)));
    }
    if let Some((scheme, _, _)) = split_url(url) {
        return match scheme.as_str() {
            "http" | "https" | "ssh" | "git" | "git+ssh" | "ssh+git" | "file" => Ok(()),
            other => Err(format!("the {other}:// scheme is not supported")),
        };
    }
    // `transport::address` would select one of git's remote helpers (e.g. `ext::`).
    if url.starts_with('/') || (scp_like(url).is_some() && !url.contains("::")) {
        return Ok(());
    }
    Err(format!(
        "`{}` is neither an http(s), ssh, git or file URL nor an absolute path",
        without_credentials(url)
    ))
}

fn check_commit_id(id: &str) -> Result<(), String> {
    if (4..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "commit id `{id}` is not 4 to 64 hexadecimal digits"
        ))
    }
}

/// The subset of git's ref-name rules that keeps a name from being read as an option or a
/// pattern; git itself refuses the rest.
fn check_ref_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.starts_with(['-', '/'])
        || name.ends_with(['/', '.'])
        || name.contains("..")
        || name.contains("//")
        || name.contains("@{")
        || name.ends_with(".lock")
        || name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c));
    if bad {
        Err(format!("`{name}` is not a valid branch or tag name"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_removed_from_free_text() {
        let check = |text: &str, expected: &str| assert_eq!(without_credentials(text), expected);
        check(
            "fatal: unable to access 'https://me:s3cret@host/o/r.git/': 403",
            "fatal: unable to access 'https://host/o/r.git/': 403",
        );
        check(
            "https://tok@host/a and http://u:p@h2:8080/b",
            "https://host/a and http://h2:8080/b",
        );
        check("no url here", "no url here");
        check("git@host:o/r.git", "git@host:o/r.git");
    }

    #[test]
    fn ref_names() {
        for good in ["master", "feature/x", "v1.2.3", "release-2024_01"] {
            assert_eq!(check_ref_name(good), Ok(()), "{good}");
        }
        for bad in [
            "", "-x", "a..b", "a b", "x^{}", "a:b", "refs*", "x.lock", "/x", "x/",
        ] {
            assert!(check_ref_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls() {
        for good in [
            "https://github.com/o/r",
            "file:///tmp/r.git",
            "/srv/r.git",
            "git@github.com:o/r.git",
            "ssh://git@host:2222/o/r",
        ] {
            assert_eq!(check_url(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-uhttps://x",
            "ext::sh -c x",
            "ext::sh",
            "relative/path",
            "ftp://h/r",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
