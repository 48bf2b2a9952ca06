//! Algorithms whose code is in git (`gitRepository`): which commit an apply or a push builds.
//!
//! HKube writes the commit it resolved into `gitRepository.commit`, the same field a user fills
//! to pin one. To tell them apart, a commit hkube resolved carries `resolvedFrom` (`branch dev`,
//! `tag v1`, `push to branch dev`): such an algorithm follows its branch or tag — every apply
//! resolves it again and a push to it rebuilds — while a user's commit stays pinned.

use builder::git::{Commit, GitKind, GitSource};
use builder::webhook::PushedCommit;
use serde_json::{json, Value};

use super::Error;
use crate::spec::GitRepository;

/// The commit field's marker for a commit hkube chose, not the user.
const RESOLVED_FROM: &str = "resolvedFrom";

/// The commit the user pinned, if any.
fn pinned_commit(repository: &GitRepository) -> Option<String> {
    let commit = repository.commit.as_ref()?;
    if commit.get(RESOLVED_FROM).is_some() {
        return None;
    }
    commit["id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_string)
}

/// What the user asked to build: the pinned commit, else the tag, else the branch.
pub fn source_of(repository: &GitRepository) -> GitSource {
    GitSource {
        url: repository.url.clone(),
        branch_name: Some(repository.branch_name.clone()),
        tag: repository.tag.clone(),
        commit: pinned_commit(repository).map(|id| Commit {
            id,
            ..Commit::default()
        }),
        token: repository.token.clone(),
        git_kind: if repository.git_kind == "gitlab" {
            GitKind::Gitlab
        } else {
            GitKind::Github
        },
        web_url: None,
        clone_url: None,
    }
}

/// The source of one resolved commit (for the checkout).
pub fn source_at(repository: &GitRepository) -> Option<(GitSource, String)> {
    let id = repository.commit.as_ref()?["id"].as_str()?.to_string();
    Some((source_of(repository), id))
}

/// Fills `commit` (and HKube's `webUrl`/`cloneUrl`) with the commit to build: the pushed head
/// when a push announced it, else the ref resolved now (`git ls-remote`), else the pinned one.
pub async fn choose_commit(
    repository: &mut GitRepository,
    pushed: Option<&PushedCommit>,
) -> Result<(), Error> {
    let source = source_of(repository);
    let commit = match pushed {
        Some(head) => json!({
            "id": head.id,
            "message": head.message,
            "timestamp": head.timestamp,
            RESOLVED_FROM: format!("push to {}", source.reference()),
        }),
        None if pinned_commit(repository).is_some() => {
            repository.commit.clone().unwrap_or(Value::Null)
        }
        None => {
            let resolved = builder::git::resolve(&source)
                .await
                .map_err(|e| Error::BadUpload(e.to_string()))?;
            json!({"id": resolved.id, RESOLVED_FROM: resolved.reference.to_string()})
        }
    };
    repository.commit = Some(commit);
    let web = repository
        .url
        .trim_end_matches('/')
        .trim_end_matches(".git");
    repository
        .extra
        .insert("webUrl".into(), Value::String(web.to_string()));
    repository
        .extra
        .insert("cloneUrl".into(), Value::String(format!("{web}.git")));
    Ok(())
}

/// A build record without secrets: tokens are replaced wherever a `gitRepository` holds one.
pub fn redacted(mut record: Value) -> Value {
    for pointer in ["/gitRepository/token", "/algorithm/gitRepository/token"] {
        if let Some(token) = record.pointer_mut(pointer) {
            *token = json!("<redacted>");
        }
    }
    record
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn repository(commit: Option<Value>) -> GitRepository {
        let mut value = json!({"url": "https://example.com/o/r.git", "branchName": "dev"});
        if let Some(commit) = commit {
            value["commit"] = commit;
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_resolved_commit_follows_the_branch_and_a_given_one_is_pinned() {
        let following = repository(Some(json!({"id": "abc", "resolvedFrom": "branch dev"})));
        assert_eq!(source_of(&following).commit, None);
        let pinned = repository(Some(json!({"id": "abc"})));
        assert_eq!(source_of(&pinned).commit.unwrap().id, "abc");
    }

    #[test]
    fn tokens_do_not_leave_in_build_records() {
        let record = json!({"gitRepository": {"token": "s3cret"}, "algorithm": {"gitRepository": {"token": "s3cret"}}});
        assert!(!redacted(record).to_string().contains("s3cret"));
    }
}
