//! GitHub and GitLab push webhooks: is the request really from the host (`verify_*`), and which
//! repository, ref and commit did it push (`parse_*_push`). Pure functions: no IO, no clock.
//!
//! Where HKube differs, on purpose:
//! - HKube checks no signature; here GitHub's `X-Hub-Signature-256` HMAC and GitLab's
//!   `X-Gitlab-Token` are verified, in constant time, and an empty secret verifies nothing.
//! - HKube reads only GitHub's form-encoded payload; both content types are read here.
//! - HKube takes the branch as `ref.split('/')[2]`, cutting `feature/x` to `feature`, and the
//!   commit as `commits[0]`, the oldest of a multi-commit push; here the branch is all of the
//!   ref after `refs/heads/` and the commit is the pushed head.
//!
//! The caller decides what an error becomes: a verification error means 401, a parse error 400.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::git::{self, GitSource, Reference};

/// What a push event says, in the terms algorithms are matched on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Every URL the payload gives for the repository, through `git::normalize_url`, without
    /// duplicates, in payload order.
    pub repository_urls: Vec<String>,
    /// The whole branch name for a `refs/heads/...` push.
    pub branch: Option<String>,
    /// The tag name for a `refs/tags/...` push.
    pub tag: Option<String>,
    /// The commit the ref points to after the push; None for a deletion.
    pub head_commit: Option<PushedCommit>,
    /// The push deleted the branch or tag (`after` is all zeros).
    pub deleted: bool,
}

/// The pushed head. Message and timestamp are absent when the payload does not describe the
/// commit (GitHub without `head_commit`, GitLab beyond its 20 listed commits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedCommit {
    pub id: String,
    pub message: Option<String>,
    pub timestamp: Option<String>,
}

/// Why a webhook request was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no webhook secret is configured, so no request can be verified")]
    NoSecret,
    #[error("the request has no {0} header")]
    MissingSignature(&'static str),
    #[error("the {header} header is malformed: {reason}")]
    MalformedSignature {
        header: &'static str,
        reason: &'static str,
    },
    #[error("the {0} header does not match the webhook secret")]
    BadSignature(&'static str),
    #[error("content type `{0}` is not supported (use application/json or application/x-www-form-urlencoded)")]
    UnsupportedContentType(String),
    #[error("the form-encoded body has no `payload` field")]
    MissingPayload,
    #[error("the payload is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("not a push event: {0}")]
    NotPush(String),
}

const GITHUB_HEADER: &str = "X-Hub-Signature-256";
const GITLAB_HEADER: &str = "X-Gitlab-Token";

/// Checks GitHub's `X-Hub-Signature-256: sha256=<hex>`, the HMAC-SHA256 of the raw body keyed
/// with the webhook secret.
pub fn verify_github(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::NoSecret);
    }
    let header = header.ok_or(WebhookError::MissingSignature(GITHUB_HEADER))?;
    let malformed = |reason| WebhookError::MalformedSignature {
        header: GITHUB_HEADER,
        reason,
    };
    let hex_digest = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or_else(|| malformed("it does not start with `sha256=`"))?;
    let digest = hex::decode(hex_digest).map_err(|_| malformed("the digest is not hexadecimal"))?;
    if digest.len() != 32 {
        return Err(malformed("the digest is not 32 bytes"));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| WebhookError::NoSecret)?;
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&digest)
        .map_err(|_| WebhookError::BadSignature(GITHUB_HEADER))
}

/// Checks GitLab's `X-Gitlab-Token`, which carries the secret itself.
pub fn verify_gitlab(secret: &[u8], header: Option<&str>) -> Result<(), WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::NoSecret);
    }
    let token = header.ok_or(WebhookError::MissingSignature(GITLAB_HEADER))?;
    if bool::from(token.as_bytes().ct_eq(secret)) {
        Ok(())
    } else {
        Err(WebhookError::BadSignature(GITLAB_HEADER))
    }
}

/// Reads a GitHub push event sent as `application/json` or as a form whose `payload` field
/// holds the JSON. Without a content type the body's first character decides.
pub fn parse_github_push(content_type: Option<&str>, body: &[u8]) -> Result<Push, WebhookError> {
    let media_type = content_type.map(|value| {
        value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    let json_body = match media_type.as_deref() {
        Some("application/json") => true,
        Some("application/x-www-form-urlencoded") => false,
        Some(other) => return Err(WebhookError::UnsupportedContentType(other.to_owned())),
        None => body.trim_ascii_start().starts_with(b"{"),
    };
    let event: Value = if json_body {
        serde_json::from_slice(body)?
    } else {
        let payload = form_urlencoded::parse(body)
            .find(|(key, _)| key == "payload")
            .ok_or(WebhookError::MissingPayload)?
            .1;
        serde_json::from_str(&payload)?
    };
    if event.get("zen").is_some() {
        return Err(WebhookError::NotPush("this is GitHub's ping event".into()));
    }
    let (reference, after) = ref_and_after(&event)?;
    let repository = event
        .get("repository")
        .ok_or_else(|| missing("repository"))?;
    let urls = urls(
        repository,
        &["html_url", "clone_url", "git_url", "ssh_url", "url"],
    );
    let deleted = event.get("deleted").and_then(Value::as_bool) == Some(true) || is_zero(after);
    let head = event.get("head_commit").filter(|c| c.is_object());
    let head_commit = match head {
        Some(commit) => Some(described(commit).ok_or_else(|| missing("head_commit.id"))?),
        None if deleted => None,
        None => Some(bare(after)),
    };
    push(urls, reference, head_commit, deleted)
}

/// Reads a GitLab push or tag push event (JSON).
pub fn parse_gitlab_push(body: &[u8]) -> Result<Push, WebhookError> {
    let event: Value = serde_json::from_slice(body)?;
    match event.get("object_kind").and_then(Value::as_str) {
        None | Some("push" | "tag_push") => {}
        Some(other) => return Err(WebhookError::NotPush(format!("object_kind is `{other}`"))),
    }
    let (reference, after) = ref_and_after(&event)?;
    let project = event.get("project").cloned().unwrap_or_default();
    let repository = event.get("repository").cloned().unwrap_or_default();
    let mut found = urls(&project, &["web_url", "git_http_url", "git_ssh_url"]);
    found.extend(urls(
        &repository,
        &["homepage", "git_http_url", "git_ssh_url", "url"],
    ));
    let deleted = is_zero(after);
    // checkout_sha is the commit the ref points to after the push (null for a deletion);
    // older payloads lack it, and then `after` is the best there is.
    let head_id = event
        .get("checkout_sha")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .unwrap_or(after);
    let head_commit = (!deleted).then(|| {
        event
            .get("commits")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|commit| commit.get("id").and_then(Value::as_str) == Some(head_id))
            .and_then(described)
            .unwrap_or_else(|| bare(head_id))
    });
    push(found, reference, head_commit, deleted)
}

impl Push {
    /// Whether this push changes what `source` builds: same repository, not a deletion, and the
    /// source follows the pushed branch, or names the pushed tag (a moved or recreated tag).
    /// A source pinned to a commit never matches.
    pub fn matches(&self, source: &GitSource) -> bool {
        if self.deleted
            || !self
                .repository_urls
                .contains(&git::normalize_url(&source.url))
        {
            return false;
        }
        match source.reference() {
            Reference::Commit(_) => false,
            Reference::Tag(tag) => self.tag.as_deref() == Some(tag.as_str()),
            Reference::Branch(branch) => self.branch.as_deref() == Some(branch.as_str()),
        }
    }
}

fn push(
    repository_urls: Vec<String>,
    reference: &str,
    head_commit: Option<PushedCommit>,
    deleted: bool,
) -> Result<Push, WebhookError> {
    let mut unique: Vec<String> = Vec::with_capacity(repository_urls.len());
    for url in repository_urls.iter().map(|url| git::normalize_url(url)) {
        if !unique.contains(&url) {
            unique.push(url);
        }
    }
    if unique.is_empty() {
        return Err(WebhookError::NotPush(
            "the payload names no repository URL".into(),
        ));
    }
    let nonempty = |name: &str| (!name.is_empty()).then(|| name.to_owned());
    Ok(Push {
        repository_urls: unique,
        branch: reference.strip_prefix("refs/heads/").and_then(nonempty),
        tag: reference.strip_prefix("refs/tags/").and_then(nonempty),
        head_commit,
        deleted,
    })
}

fn ref_and_after(event: &Value) -> Result<(&str, &str), WebhookError> {
    if !event.is_object() {
        return Err(WebhookError::NotPush(
            "the payload is not a JSON object".into(),
        ));
    }
    let field = |name: &'static str| {
        event
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| missing(name))
    };
    Ok((field("ref")?, field("after")?))
}

fn urls(object: &Value, fields: &[&str]) -> Vec<String> {
    fields
        .iter()
        .filter_map(|field| object.get(field)?.as_str())
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A commit object of either host: `{id, message, timestamp, ...}`.
fn described(commit: &Value) -> Option<PushedCommit> {
    let text = |name| commit.get(name).and_then(Value::as_str).map(str::to_owned);
    Some(PushedCommit {
        id: text("id")?,
        message: text("message"),
        timestamp: text("timestamp"),
    })
}

fn bare(id: &str) -> PushedCommit {
    PushedCommit {
        id: id.to_owned(),
        message: None,
        timestamp: None,
    }
}

fn is_zero(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b == b'0')
}

fn missing(field: &str) -> WebhookError {
    WebhookError::NotPush(format!("field `{field}` is missing"))
}
