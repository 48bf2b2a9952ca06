//! `builder::git` against real repositories: a bare repository in a temp dir stands for the
//! server, a work clone pushes commits, branches (one with a slash) and tags to it. Tokens are
//! checked against a fake HTTP server and a fake `git` that records what it was given.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use builder::git::{
    self, normalize_url, Commit, Git, GitError, GitKind, GitSource, Reference, ResolvedCommit,
};

/// A served repository and a work clone that pushes to it.
struct Remote {
    _dir: tempfile::TempDir,
    root: PathBuf,
    bare: PathBuf,
    work: PathBuf,
}

impl Remote {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let (bare, work) = (root.join("served.git"), root.join("work"));
        run_git(
            &root,
            &["init", "--quiet", "--bare", "-b", "master", "served.git"],
        );
        run_git(&root, &["init", "--quiet", "-b", "master", "work"]);
        run_git(
            &work,
            &["remote", "add", "origin", bare.to_str().expect("utf-8")],
        );
        Self {
            _dir: dir,
            root,
            bare,
            work,
        }
    }

    fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    fn source(&self) -> GitSource {
        GitSource::new(self.url())
    }

    /// Commits `files` with `message`, dated `date`, and returns the commit id.
    fn commit(&self, files: &[(&str, &str)], message: &str, date: &str) -> String {
        for (name, text) in files {
            let path = self.work.join(name);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(path, text).expect("write");
        }
        run_git(&self.work, &["add", "--all"]);
        let mut command = git_command(&self.work);
        command
            .args(["commit", "--quiet", "-m", message])
            .env("GIT_AUTHOR_DATE", date)
            .env("GIT_COMMITTER_DATE", date);
        check(command);
        run_git(&self.work, &["rev-parse", "HEAD"])
            .trim()
            .to_owned()
    }

    fn git(&self, args: &[&str]) -> String {
        run_git(&self.work, args)
    }

    fn push(&self, refspec: &str) {
        self.git(&["push", "--quiet", "--force", "origin", refspec]);
    }
}

/// git with a fixed identity and none of the user's configuration.
fn git_command(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com");
    command
}

fn run_git(dir: &Path, args: &[&str]) -> String {
    let mut command = git_command(dir);
    command.args(args);
    check(command)
}

fn check(mut command: Command) -> String {
    let output = command.output().expect("run git");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// A repository with two commits on master, a `feature/x` branch, an annotated and a
/// lightweight tag. Returns (remote, first commit, second commit, feature commit).
fn populated() -> (Remote, String, String, String) {
    let remote = Remote::new();
    let first = remote.commit(
        &[("main.py", "print('one')\n")],
        "first",
        "2024-03-04T05:06:07+02:00",
    );
    remote.git(&["tag", "light"]);
    let second = remote.commit(
        &[("main.py", "print('two')\n"), ("lib/util.py", "X = 2\n")],
        "second\n\nwith a body",
        "2024-03-05T00:00:00-05:00",
    );
    remote.git(&["tag", "-a", "v1.0", "-m", "release 1.0"]);
    remote.git(&["switch", "--quiet", "-c", "feature/x"]);
    let feature = remote.commit(
        &[("main.py", "print('feature')\n")],
        "feature",
        "2024-03-06T00:00:00+00:00",
    );
    remote.git(&["switch", "--quiet", "master"]);
    remote.push("master");
    remote.push("feature/x");
    remote.push("--tags");
    (remote, first, second, feature)
}

fn branch(remote: &Remote, name: &str) -> GitSource {
    GitSource {
        branch_name: Some(name.into()),
        ..remote.source()
    }
}

#[tokio::test]
async fn resolves_branches_tags_and_commits() {
    let (remote, first, second, feature) = populated();
    async fn check(source: GitSource, id: &str, reference: Reference) {
        let resolved = git::resolve(&source).await.expect("resolve");
        let expected = ResolvedCommit {
            id: id.to_owned(),
            reference,
        };
        assert_eq!(resolved, expected, "{source:?}");
    }
    // No branch, tag or commit: HKube's default branch.
    check(remote.source(), &second, Reference::Branch("master".into())).await;
    check(
        branch(&remote, "feature/x"),
        &feature,
        Reference::Branch("feature/x".into()),
    )
    .await;
    // An annotated tag resolves to its commit, not to the tag object.
    let tag = |name: &str| GitSource {
        tag: Some(name.into()),
        branch_name: Some("feature/x".into()),
        ..remote.source()
    };
    check(tag("v1.0"), &second, Reference::Tag("v1.0".into())).await;
    check(tag("light"), &first, Reference::Tag("light".into())).await;
    // A commit wins over tag and branch, and is taken as given.
    let pinned = GitSource {
        commit: Some(Commit {
            id: first.to_ascii_uppercase(),
            ..Commit::default()
        }),
        ..tag("v1.0")
    };
    check(
        pinned,
        &first,
        Reference::Commit(first.to_ascii_uppercase()),
    )
    .await;
    // A plain path works as well as a file:// URL.
    let by_path = GitSource::new(remote.bare.to_str().expect("utf-8"));
    check(by_path, &second, Reference::Branch("master".into())).await;
}

#[tokio::test]
async fn a_new_commit_on_the_branch_changes_the_resolved_commit() {
    let (remote, _, second, _) = populated();
    let source = branch(&remote, "master");
    assert_eq!(git::resolve(&source).await.expect("resolve").id, second);
    let third = remote.commit(
        &[("main.py", "print(3)\n")],
        "third",
        "2024-04-01T00:00:00Z",
    );
    remote.push("master");
    assert_eq!(git::resolve(&source).await.expect("resolve").id, third);
}

#[tokio::test]
async fn unknown_refs_name_the_ref_and_the_url() {
    let (remote, _, _, _) = populated();
    let error = git::resolve(&branch(&remote, "dev"))
        .await
        .expect_err("no dev");
    assert_eq!(
        error.to_string(),
        format!("branch dev not found in {}", remote.url())
    );
    // `x` is the end of `feature/x`, which ls-remote's pattern would match.
    let error = git::resolve(&branch(&remote, "x")).await.expect_err("no x");
    assert_eq!(
        error.to_string(),
        format!("branch x not found in {}", remote.url())
    );
    let missing_tag = GitSource {
        tag: Some("v9".into()),
        ..remote.source()
    };
    let error = git::resolve(&missing_tag).await.expect_err("no v9");
    assert_eq!(
        error.to_string(),
        format!("tag v9 not found in {}", remote.url())
    );
}

#[tokio::test]
async fn an_unreachable_repository_fails_with_gits_reason() {
    let remote = Remote::new();
    let gone = GitSource::new(format!(
        "file://{}",
        remote.root.join("nowhere.git").display()
    ));
    let error = git::resolve(&gone).await.expect_err("no repository");
    let text = error.to_string();
    assert!(
        matches!(
            error,
            GitError::Failed {
                action: "ls-remote",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        text.contains("nowhere.git") && text.contains("does not appear to be a git repository"),
        "{text}"
    );
}

#[tokio::test]
async fn checkout_writes_the_commits_files_without_history() {
    let (remote, first, second, _) = populated();
    let dest = remote.root.join("builds/one");
    let checkout = git::checkout(&remote.source(), &second, &dest)
        .await
        .expect("checkout");
    assert_eq!(checkout.commit_id, second);
    assert_eq!(checkout.message, "second\n\nwith a body");
    assert_eq!(checkout.timestamp, "2024-03-05T00:00:00-05:00");
    assert_eq!(
        fs::read_to_string(dest.join("main.py")).expect("main"),
        "print('two')\n"
    );
    assert_eq!(
        fs::read_to_string(dest.join("lib/util.py")).expect("util"),
        "X = 2\n"
    );
    assert!(
        !dest.join(".git").exists(),
        "the build context carries history"
    );

    // An older commit, not the head of any branch.
    let older = remote.root.join("builds/two");
    let checkout = git::checkout(&remote.source(), &first, &older)
        .await
        .expect("checkout");
    assert_eq!(
        (checkout.message.as_str(), checkout.timestamp.as_str()),
        ("first", "2024-03-04T05:06:07+02:00")
    );
    assert_eq!(
        fs::read_to_string(older.join("main.py")).expect("main"),
        "print('one')\n"
    );
    assert!(!older.join("lib").exists());
    let mut names: Vec<_> = fs::read_dir(&older)
        .expect("dest")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(names, vec!["main.py"]);
}

#[tokio::test]
async fn checkout_of_an_abbreviated_id_falls_back_to_a_full_fetch() {
    let (remote, _, _, feature) = populated();
    let dest = remote.root.join("build");
    let checkout = git::checkout(&remote.source(), &feature[..10], &dest)
        .await
        .expect("checkout");
    assert_eq!(checkout.commit_id, feature);
    assert_eq!(
        fs::read_to_string(dest.join("main.py")).expect("main"),
        "print('feature')\n"
    );
    assert!(!dest.join(".git").exists());
}

#[tokio::test]
async fn checkout_of_an_unknown_commit_names_it_and_leaves_nothing() {
    let (remote, _, _, _) = populated();
    let dest = remote.root.join("build");
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let error = git::checkout(&remote.source(), unknown, &dest)
        .await
        .expect_err("unknown commit");
    assert_eq!(
        error.to_string(),
        format!("commit {unknown} not found in {}", remote.url())
    );
    assert!(!dest.exists(), "the failed checkout folder was left behind");
}

#[tokio::test]
async fn checkout_refuses_a_folder_with_files() {
    let (remote, _, second, _) = populated();
    let dest = remote.root.join("build");
    fs::create_dir_all(&dest).expect("mkdir");
    fs::write(dest.join("keep.txt"), "mine").expect("write");
    let error = git::checkout(&remote.source(), &second, &dest)
        .await
        .expect_err("not empty");
    assert!(matches!(error, GitError::NotEmpty(_)), "{error:?}");
    assert_eq!(
        fs::read_to_string(dest.join("keep.txt")).expect("kept"),
        "mine"
    );
}

#[tokio::test]
async fn sources_that_could_reach_git_as_options_or_helpers_are_refused() {
    let check = |source: GitSource, expected: &'static str| async move {
        let error = git::resolve(&source).await.expect_err("invalid");
        assert_eq!(error.to_string(), expected);
    };
    check(
        GitSource::new("ext::sh -c touch% /tmp/pwned"),
        "invalid git source: url: `ext::sh -c touch% /tmp/pwned` is not a URL",
    )
    .await;
    check(
        GitSource::new("ext::sh"),
        "invalid git source: url: `ext::sh` is neither an http(s), ssh, git or file URL nor an absolute path",
    )
    .await;
    check(
        GitSource::new("--upload-pack=touch /tmp/x"),
        "invalid git source: url: `--upload-pack=touch /tmp/x` is not a URL",
    )
    .await;
    check(
        GitSource {
            branch_name: Some("--upload-pack=x".into()),
            ..GitSource::new("https://example.com/o/r")
        },
        "invalid git source: `--upload-pack=x` is not a valid branch or tag name",
    )
    .await;
    let error = git::checkout(
        &GitSource::new("/srv/r.git"),
        "not-hex",
        Path::new("/nonexistent/x"),
    )
    .await
    .expect_err("bad id");
    assert_eq!(
        error.to_string(),
        "invalid git source: commit id `not-hex` is not 4 to 64 hexadecimal digits"
    );
}

/// A server that answers every request 403 and hands back the first request's head.
fn forbidding_server() -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://127.0.0.1:{}/owner/repo.git",
        listener.local_addr().expect("addr").port()
    );
    let server = std::thread::spawn(move || {
        let mut first = None;
        // A 403 is final for git: one request comes.
        for stream in listener.incoming().take(1) {
            let mut stream = stream.expect("accept");
            let mut head = String::new();
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).expect("read") == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let _ = stream.write_all(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            first.get_or_insert(head);
        }
        first.unwrap_or_default()
    });
    (url, server)
}

#[tokio::test]
async fn a_token_travels_as_a_basic_header_and_never_in_errors() {
    for (kind, user) in [
        (GitKind::Github, "x-access-token"),
        (GitKind::Gitlab, "gitlab-ci-token"),
    ] {
        let (url, server) = forbidding_server();
        let source = GitSource {
            token: Some("s3cr3t-t0ken".into()),
            git_kind: kind,
            ..GitSource::new(url.clone())
        };
        let error = git::resolve(&source).await.expect_err("403");
        let head = server.join().expect("server");
        let expected =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:s3cr3t-t0ken"));
        assert!(
            head.lines()
                .any(|l| l.eq_ignore_ascii_case(&format!("authorization: Basic {expected}"))),
            "{head}"
        );
        let text = format!("{error} {error:?} {source:?}");
        assert!(text.contains("403"), "{text}");
        assert!(
            !text.contains("s3cr3t") && !text.contains(&expected),
            "{text}"
        );
    }
}

#[tokio::test]
async fn git_never_sees_the_token_in_argv_and_never_prompts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("record");
    let program = dir.path().join("fake-git");
    fs::write(
        &program,
        format!(
            "#!/bin/sh\n{{ printf 'ARGS %s\\n' \"$*\"; env; }} > {}\necho 'fatal: Authorization: Basic eC1hY2Nlc3MtdG9rZW46czNjcjN0 s3cr3t' >&2\nexit 128\n",
            record.display()
        ),
    )
    .expect("script");
    Command::new("chmod")
        .arg("+x")
        .arg(&program)
        .status()
        .expect("chmod");
    let source = GitSource {
        token: Some("s3cr3t".into()),
        branch_name: Some("main".into()),
        ..GitSource::new("https://user:pw@example.com/o/r.git")
    };
    let fake = Git {
        program,
        ..Git::default()
    };
    let error = fake.resolve(&source).await.expect_err("fake git fails");
    assert_eq!(
        error.to_string(),
        "git ls-remote https://example.com/o/r.git failed: fatal: Authorization: Basic <redacted> <redacted>"
    );
    let recorded = fs::read_to_string(&record).expect("record");
    let args = recorded.lines().next().expect("args line");
    assert_eq!(
        args,
        "ARGS ls-remote --end-of-options https://user:pw@example.com/o/r.git refs/heads/main"
    );
    let env: Vec<&str> = recorded.lines().skip(1).collect();
    assert!(env.contains(&"GIT_TERMINAL_PROMPT=0"), "{env:?}");
    assert!(
        env.contains(&"GIT_CONFIG_KEY_0=http.extraHeader"),
        "{env:?}"
    );
    assert!(
        !env.iter().any(|v| v.starts_with("CARGO")),
        "the environment was not cleared: {env:?}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_given_up_on() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accept, then say nothing: git waits for the reply until it is stopped.
    let _held = std::thread::spawn(move || {
        let streams: Vec<_> = listener.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(30));
        drop(streams);
    });
    let impatient = Git {
        timeout: Duration::from_secs(1),
        ..Git::default()
    };
    let source = GitSource::new(format!("http://127.0.0.1:{port}/o/r.git"));
    let started = Instant::now();
    let error = impatient.resolve(&source).await.expect_err("timeout");
    assert_eq!(
        error.to_string(),
        format!(
            "git ls-remote http://127.0.0.1:{port}/o/r.git took longer than 1s and was stopped"
        )
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn urls_normalize_to_one_key_per_repository() {
    let check = |url: &str, expected: &str| assert_eq!(normalize_url(url), expected, "{url}");
    check(
        "https://github.com/kube-HPC/hkube",
        "https://github.com/kube-HPC/hkube",
    );
    check(
        "https://github.com/kube-HPC/hkube.git",
        "https://github.com/kube-HPC/hkube",
    );
    check(
        "https://github.com/kube-HPC/hkube/",
        "https://github.com/kube-HPC/hkube",
    );
    check(
        "HTTPS://GitHub.COM/kube-HPC/hkube.git/",
        "https://github.com/kube-HPC/hkube",
    );
    check(
        "https://user:tok@github.com:443/o/r.git",
        "https://github.com/o/r",
    );
    check("http://host:80/o/r", "http://host/o/r");
    check("http://host:8080/o/r", "http://host:8080/o/r");
    check(
        "git@github.com:kube-HPC/hkube.git",
        "https://github.com/kube-HPC/hkube",
    );
    check(
        "git@gitlab.example.com:group/sub/repo.git",
        "https://gitlab.example.com/group/sub/repo",
    );
    check(
        "ssh://git@GitLab.example.com:2222/group/repo.git",
        "https://gitlab.example.com/group/repo",
    );
    check("git://github.com/o/r.git", "https://github.com/o/r");
    check("  https://github.com/o/r.git\n", "https://github.com/o/r");
    check("file:///srv/repos/r.git/", "file:///srv/repos/r");
    check("/srv/repos/r.git", "/srv/repos/r");
}

#[test]
fn sources_read_hkubes_git_repository_documents() {
    let source: GitSource = serde_json::from_str(
        r#"{"url": "https://gitlab.com/g/r", "branchName": "dev", "gitKind": "gitlab",
            "token": "t0k", "commit": {"id": "abc123", "message": "m"},
            "webUrl": "https://gitlab.com/g/r", "cloneUrl": "https://gitlab.com/g/r.git"}"#,
    )
    .expect("parse");
    assert_eq!(source.git_kind, GitKind::Gitlab);
    assert_eq!(source.branch_name.as_deref(), Some("dev"));
    assert_eq!(source.reference(), Reference::Commit("abc123".into()));
    let json = serde_json::to_value(&source).expect("serialize");
    assert_eq!(json["cloneUrl"], "https://gitlab.com/g/r.git");
    assert_eq!(json["commit"]["message"], "m");
    assert!(
        !format!("{source:?}").contains("t0k"),
        "Debug shows the token"
    );

    let minimal: GitSource =
        serde_json::from_str(r#"{"url": "https://github.com/o/r", "branchName": ""}"#)
            .expect("parse");
    assert_eq!(minimal.git_kind, GitKind::Github);
    assert_eq!(minimal.reference(), Reference::Branch("master".into()));
}
