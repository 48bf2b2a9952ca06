//! Local environments: a failed install leaves nothing a later run would trust, and names the
//! failing requirement. (The successful path is tested end to end by `hkube run` in tests/cli.rs.)

#![allow(clippy::unwrap_used)]

use builder::env::Env;
use builder::local::{LocalEnvs, Prepared};

#[tokio::test]
async fn a_failed_install_leaves_no_environment() {
    let root = tempfile::tempdir().unwrap();
    let code = root.path().join("code");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(
        code.join("requirements.txt"),
        "hkube-no-such-package-xyz==1.0\n",
    )
    .unwrap();
    let envs = LocalEnvs::new(root.path().join("envs"));
    let mut lines = Vec::new();
    let error = envs
        .prepare(Env::Python, &code, |line| lines.push(line.to_string()))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("hkube-no-such-package-xyz"), "{error}");
    let left: Vec<_> = std::fs::read_dir(root.path().join("envs"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(!lines.is_empty(), "the installer's output reaches the log");
}

#[tokio::test]
async fn code_without_manifests_needs_nothing() {
    let root = tempfile::tempdir().unwrap();
    let envs = LocalEnvs::new(root.path().join("envs"));
    for env in [Env::Python, Env::Nodejs, Env::Java] {
        assert_eq!(
            envs.prepare(env, root.path(), |_| {}).await.unwrap(),
            Prepared::default()
        );
    }
}
