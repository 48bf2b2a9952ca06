//! `builder::webhook` on push payloads shaped like GitHub's and GitLab's (trimmed to the fields
//! that matter, values as the hosts send them): signatures, both GitHub content types, branches
//! with a slash, tag pushes, deletions, and which commit a multi-commit push builds.

use builder::git::{Commit, GitSource};
use builder::webhook::{
    parse_github_push, parse_gitlab_push, verify_github, verify_gitlab, Push, PushedCommit,
    WebhookError,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const OLD: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
const MIDDLE: &str = "1481a2de7b2a7d02428ad93446ab166be7793fbb";
const HEAD: &str = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c";
const ZERO: &str = "0000000000000000000000000000000000000000";

/// A GitHub push of `git_ref` from `before` to `after`, listing `commits` oldest first as
/// GitHub does, with `head_commit` the last one (null when there are none).
fn github_push(git_ref: &str, after: &str, commits: &[(&str, &str)]) -> String {
    let commit = |(id, message): &(&str, &str)| {
        format!(
            r#"{{"id": "{id}", "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
                "distinct": true, "message": "{message}", "timestamp": "2024-05-01T12:00:00+02:00",
                "url": "https://github.com/kube-HPC/hello-algo/commit/{id}",
                "author": {{"name": "Ada", "email": "ada@example.com", "username": "ada"}},
                "added": [], "removed": [], "modified": ["main.py"]}}"#
        )
    };
    let listed: Vec<String> = commits.iter().map(commit).collect();
    let head = commits.last().map_or("null".to_owned(), commit);
    format!(
        r#"{{
  "ref": "{git_ref}",
  "before": "{OLD}",
  "after": "{after}",
  "created": false,
  "deleted": {deleted},
  "forced": false,
  "base_ref": null,
  "compare": "https://github.com/kube-HPC/hello-algo/compare/6113728f27ae...0d1a26e67d8f",
  "commits": [{listed}],
  "head_commit": {head},
  "repository": {{
    "id": 186853002,
    "node_id": "MDEwOlJlcG9zaXRvcnkxODY4NTMwMDI=",
    "name": "hello-algo",
    "full_name": "kube-HPC/hello-algo",
    "private": false,
    "owner": {{"name": "kube-HPC", "login": "kube-HPC"}},
    "html_url": "https://github.com/kube-HPC/hello-algo",
    "url": "https://github.com/kube-HPC/hello-algo",
    "git_url": "git://github.com/kube-HPC/hello-algo.git",
    "ssh_url": "git@github.com:kube-HPC/hello-algo.git",
    "clone_url": "https://github.com/kube-HPC/hello-algo.git",
    "svn_url": "https://github.com/kube-HPC/hello-algo",
    "default_branch": "master"
  }},
  "pusher": {{"name": "ada", "email": "ada@example.com"}},
  "sender": {{"login": "ada", "id": 1}}
}}"#,
        deleted = after == ZERO,
        listed = listed.join(", "),
    )
}

/// A GitLab push (or tag push) with `commits` oldest first, as GitLab lists them.
fn gitlab_push(kind: &str, git_ref: &str, after: &str, commits: &[(&str, &str)]) -> String {
    let listed: Vec<String> = commits
        .iter()
        .map(|(id, message)| {
            format!(
                r#"{{"id": "{id}", "message": "{message}", "title": "{message}",
                    "timestamp": "2024-05-01T10:00:00+00:00",
                    "url": "https://gitlab.example.com/data/algos/hello-algo/-/commit/{id}",
                    "author": {{"name": "Ada", "email": "ada@example.com"}},
                    "added": [], "modified": ["main.py"], "removed": []}}"#
            )
        })
        .collect();
    let checkout_sha = if after == ZERO {
        "null".to_owned()
    } else {
        format!("\"{after}\"")
    };
    format!(
        r#"{{
  "object_kind": "{kind}",
  "event_name": "{kind}",
  "before": "{OLD}",
  "after": "{after}",
  "ref": "{git_ref}",
  "ref_protected": true,
  "checkout_sha": {checkout_sha},
  "user_id": 4,
  "user_name": "Ada",
  "user_username": "ada",
  "project_id": 15,
  "project": {{
    "id": 15,
    "name": "hello-algo",
    "web_url": "https://gitlab.example.com/data/algos/hello-algo",
    "git_ssh_url": "git@gitlab.example.com:data/algos/hello-algo.git",
    "git_http_url": "https://gitlab.example.com/data/algos/hello-algo.git",
    "namespace": "algos",
    "path_with_namespace": "data/algos/hello-algo",
    "default_branch": "master",
    "homepage": "https://gitlab.example.com/data/algos/hello-algo",
    "url": "git@gitlab.example.com:data/algos/hello-algo.git"
  }},
  "commits": [{listed}],
  "total_commits_count": {count},
  "repository": {{
    "name": "hello-algo",
    "url": "git@gitlab.example.com:data/algos/hello-algo.git",
    "description": "",
    "homepage": "https://gitlab.example.com/data/algos/hello-algo",
    "git_http_url": "https://gitlab.example.com/data/algos/hello-algo.git",
    "git_ssh_url": "git@gitlab.example.com:data/algos/hello-algo.git",
    "visibility_level": 0
  }}
}}"#,
        listed = listed.join(", "),
        count = commits.len(),
    )
}

fn form(json: &str) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", json)
        .finish()
        .into_bytes()
}

fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn github_urls() -> Vec<String> {
    // html_url, url, clone_url, ssh_url and git_url all name one repository.
    vec!["https://github.com/kube-HPC/hello-algo".to_owned()]
}

fn gitlab_urls() -> Vec<String> {
    vec!["https://gitlab.example.com/data/algos/hello-algo".to_owned()]
}

fn described(id: &str, message: &str, timestamp: &str) -> Option<PushedCommit> {
    Some(PushedCommit {
        id: id.into(),
        message: Some(message.into()),
        timestamp: Some(timestamp.into()),
    })
}

#[test]
fn github_signatures() {
    let secret = b"It's a Secret to Everybody";
    let body = br#"{"ref": "refs/heads/master"}"#;
    let good = signature(secret, body);
    assert!(verify_github(secret, body, Some(&good)).is_ok());
    // GitHub's documented example: this secret, this body, this digest.
    assert!(verify_github(
        secret,
        b"Hello, World!",
        Some("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
    )
    .is_ok());

    let check = |header: Option<&str>, body: &[u8], expected: &str| {
        let error = verify_github(secret, body, header).expect_err("refused");
        assert_eq!(error.to_string(), expected, "{header:?}");
    };
    check(None, body, "the request has no X-Hub-Signature-256 header");
    check(
        Some(&good),
        br#"{"ref": "refs/heads/evil"}"#,
        "the X-Hub-Signature-256 header does not match the webhook secret",
    );
    check(
        Some(&signature(b"another secret", body)),
        body,
        "the X-Hub-Signature-256 header does not match the webhook secret",
    );
    check(
        Some(&good.replace("sha256=", "sha1=")),
        body,
        "the X-Hub-Signature-256 header is malformed: it does not start with `sha256=`",
    );
    check(
        Some("sha256=not-hex"),
        body,
        "the X-Hub-Signature-256 header is malformed: the digest is not hexadecimal",
    );
    check(
        Some(&good[..good.len() - 2]),
        body,
        "the X-Hub-Signature-256 header is malformed: the digest is not 32 bytes",
    );
    let unset = verify_github(b"", body, Some(&signature(b"", body))).expect_err("no secret");
    assert!(matches!(unset, WebhookError::NoSecret), "{unset:?}");
}

#[test]
fn gitlab_tokens() {
    assert!(verify_gitlab(b"t0ken", Some("t0ken")).is_ok());
    let check = |secret: &[u8], header: Option<&str>, expected: &str| {
        let error = verify_gitlab(secret, header).expect_err("refused");
        assert_eq!(error.to_string(), expected, "{header:?}");
    };
    check(b"t0ken", None, "the request has no X-Gitlab-Token header");
    check(
        b"t0ken",
        Some("t0ke"),
        "the X-Gitlab-Token header does not match the webhook secret",
    );
    check(
        b"t0ken",
        Some("t0ken "),
        "the X-Gitlab-Token header does not match the webhook secret",
    );
    check(
        b"",
        Some(""),
        "no webhook secret is configured, so no request can be verified",
    );
}

#[test]
fn github_push_reads_as_json_and_as_a_form() {
    let json = github_push("refs/heads/master", HEAD, &[(HEAD, "Fix the reader")]);
    let expected = Push {
        repository_urls: github_urls(),
        branch: Some("master".into()),
        tag: None,
        head_commit: described(HEAD, "Fix the reader", "2024-05-01T12:00:00+02:00"),
        deleted: false,
    };
    for (content_type, body) in [
        (Some("application/json"), json.clone().into_bytes()),
        (
            Some("application/json; charset=utf-8"),
            json.clone().into_bytes(),
        ),
        (Some("application/x-www-form-urlencoded"), form(&json)),
        (None, json.clone().into_bytes()),
        (None, form(&json)),
    ] {
        let push = parse_github_push(content_type, &body).expect("push");
        assert_eq!(push, expected, "{content_type:?}");
    }
}

#[test]
fn github_push_of_several_commits_builds_the_head_not_the_first() {
    let json = github_push(
        "refs/heads/master",
        HEAD,
        &[(OLD, "one"), (MIDDLE, "two"), (HEAD, "three")],
    );
    let push = parse_github_push(Some("application/json"), json.as_bytes()).expect("push");
    assert_eq!(
        push.head_commit,
        described(HEAD, "three", "2024-05-01T12:00:00+02:00")
    );
}

#[test]
fn github_branch_names_keep_their_slashes() {
    let json = github_push("refs/heads/feature/new-reader", HEAD, &[(HEAD, "wip")]);
    let push = parse_github_push(Some("application/json"), json.as_bytes()).expect("push");
    assert_eq!(push.branch.as_deref(), Some("feature/new-reader"));
    assert_eq!(push.tag, None);
}

#[test]
fn github_tag_push() {
    let json = github_push("refs/tags/v1.2.0", HEAD, &[]);
    // A tag on an existing commit lists no commits; GitHub still sends head_commit then.
    let json = json.replace(
        r#""head_commit": null"#,
        &format!(r#""head_commit": {{"id": "{HEAD}", "message": "release", "timestamp": "2024-05-02T00:00:00Z"}}"#),
    );
    let push = parse_github_push(Some("application/json"), json.as_bytes()).expect("push");
    assert_eq!(
        push,
        Push {
            repository_urls: github_urls(),
            branch: None,
            tag: Some("v1.2.0".into()),
            head_commit: described(HEAD, "release", "2024-05-02T00:00:00Z"),
            deleted: false,
        }
    );
}

#[test]
fn github_push_without_head_commit_falls_back_to_after() {
    let json = github_push("refs/heads/master", HEAD, &[]);
    let push = parse_github_push(Some("application/json"), json.as_bytes()).expect("push");
    let bare = PushedCommit {
        id: HEAD.into(),
        message: None,
        timestamp: None,
    };
    assert_eq!(push.head_commit, Some(bare));
}

#[test]
fn github_branch_deletion() {
    let json = github_push("refs/heads/feature/x", ZERO, &[]);
    let push = parse_github_push(Some("application/json"), json.as_bytes()).expect("push");
    assert!(push.deleted);
    assert_eq!(push.head_commit, None);
    assert_eq!(push.branch.as_deref(), Some("feature/x"));
}

#[test]
fn gitlab_push_builds_the_checked_out_commit() {
    let json = gitlab_push(
        "push",
        "refs/heads/feature/x",
        HEAD,
        &[(OLD, "one"), (HEAD, "three"), (MIDDLE, "two")],
    );
    let push = parse_gitlab_push(json.as_bytes()).expect("push");
    assert_eq!(
        push,
        Push {
            repository_urls: gitlab_urls(),
            branch: Some("feature/x".into()),
            tag: None,
            head_commit: described(HEAD, "three", "2024-05-01T10:00:00+00:00"),
            deleted: false,
        }
    );
}

#[test]
fn gitlab_tag_push_and_deletion() {
    let json = gitlab_push("tag_push", "refs/tags/v2", HEAD, &[(HEAD, "release 2")]);
    let push = parse_gitlab_push(json.as_bytes()).expect("tag push");
    assert_eq!((push.branch, push.tag.as_deref()), (None, Some("v2")));
    assert_eq!(push.head_commit.map(|c| c.id), Some(HEAD.to_owned()));

    let json = gitlab_push("push", "refs/heads/old", ZERO, &[]);
    let push = parse_gitlab_push(json.as_bytes()).expect("deletion");
    assert!(push.deleted);
    assert_eq!(push.head_commit, None);
}

#[test]
fn a_head_beyond_gitlabs_listed_commits_is_still_the_head() {
    // GitLab lists at most 20 commits; the head may be missing from the list.
    let json = gitlab_push("push", "refs/heads/master", HEAD, &[(OLD, "one")]);
    let push = parse_gitlab_push(json.as_bytes()).expect("push");
    let bare = PushedCommit {
        id: HEAD.into(),
        message: None,
        timestamp: None,
    };
    assert_eq!(push.head_commit, Some(bare));
}

#[test]
fn bodies_that_are_not_push_events_say_why() {
    let check = |result: Result<Push, WebhookError>, expected: &str| {
        assert_eq!(result.expect_err("refused").to_string(), expected);
    };
    let ping =
        r#"{"zen": "Design for failure.", "hook_id": 109948940, "hook": {"type": "Repository"}}"#;
    check(
        parse_github_push(Some("application/json"), ping.as_bytes()),
        "not a push event: this is GitHub's ping event",
    );
    let no_ref = github_push("refs/heads/master", HEAD, &[]).replace(r#""ref":"#, r#""reff":"#);
    check(
        parse_github_push(Some("application/json"), no_ref.as_bytes()),
        "not a push event: field `ref` is missing",
    );
    let no_repository = r#"{"ref": "refs/heads/master", "after": "abc"}"#;
    check(
        parse_github_push(None, no_repository.as_bytes()),
        "not a push event: field `repository` is missing",
    );
    check(
        parse_github_push(Some("text/plain"), b"{}"),
        "content type `text/plain` is not supported (use application/json or application/x-www-form-urlencoded)",
    );
    check(
        parse_github_push(Some("application/x-www-form-urlencoded"), b"other=1"),
        "the form-encoded body has no `payload` field",
    );
    let error = parse_github_push(Some("application/json"), b"payload=%7B").expect_err("not json");
    assert!(
        error.to_string().starts_with("the payload is not JSON: "),
        "{error}"
    );
    check(
        parse_gitlab_push(br#"{"object_kind": "merge_request", "ref": "x", "after": "y"}"#),
        "not a push event: object_kind is `merge_request`",
    );
    check(
        parse_gitlab_push(br#"{"object_kind": "push", "ref": "refs/heads/a"}"#),
        "not a push event: field `after` is missing",
    );
    check(
        parse_gitlab_push(br#"{"object_kind": "push", "ref": "refs/heads/a", "after": "abc"}"#),
        "not a push event: the payload names no repository URL",
    );
    check(
        parse_gitlab_push(b"[1, 2]"),
        "not a push event: the payload is not a JSON object",
    );
}

#[test]
fn pushes_match_the_algorithms_that_follow_them() {
    let json = github_push("refs/heads/feature/x", HEAD, &[(HEAD, "wip")]);
    let push = parse_github_push(Some("application/json"), json.as_bytes()).expect("push");
    let source = |url: &str, branch: Option<&str>| GitSource {
        branch_name: branch.map(str::to_owned),
        ..GitSource::new(url)
    };
    let check = |source: GitSource, expected: bool| {
        assert_eq!(push.matches(&source), expected, "{source:?}");
    };
    check(
        source(
            "https://github.com/kube-HPC/hello-algo.git",
            Some("feature/x"),
        ),
        true,
    );
    check(
        source("git@github.com:kube-HPC/hello-algo.git", Some("feature/x")),
        true,
    );
    check(
        source("https://GITHUB.com/kube-HPC/hello-algo/", Some("feature/x")),
        true,
    );
    // HKube would have matched `feature` here.
    check(
        source("https://github.com/kube-HPC/hello-algo", Some("feature")),
        false,
    );
    check(
        source("https://github.com/kube-HPC/hello-algo", None),
        false,
    );
    check(
        source("https://github.com/kube-HPC/other-algo", Some("feature/x")),
        false,
    );
    let pinned = GitSource {
        commit: Some(Commit {
            id: OLD.into(),
            ..Commit::default()
        }),
        ..source("https://github.com/kube-HPC/hello-algo", Some("feature/x"))
    };
    check(pinned, false);

    let json = github_push("refs/heads/feature/x", ZERO, &[]);
    let deletion = parse_github_push(Some("application/json"), json.as_bytes()).expect("push");
    assert!(!deletion.matches(&source(
        "https://github.com/kube-HPC/hello-algo",
        Some("feature/x")
    )));

    let json = gitlab_push("tag_push", "refs/tags/v2", HEAD, &[(HEAD, "release 2")]);
    let tag_push = parse_gitlab_push(json.as_bytes()).expect("push");
    let follows_tag = |tag: &str| GitSource {
        tag: Some(tag.into()),
        ..GitSource::new("https://gitlab.example.com/data/algos/hello-algo.git")
    };
    assert!(tag_push.matches(&follows_tag("v2")));
    assert!(!tag_push.matches(&follows_tag("v1")));
}
