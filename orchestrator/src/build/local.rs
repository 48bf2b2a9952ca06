//! The local backend's step: the code is kept in a folder named by its digest and its
//! dependencies are installed into the local executor's shared environments, so the local
//! executor runs uploads with no container engine. The "image" is `hkube-local/<name>:<digest>`.

use std::path::{Path, PathBuf};

use builder::context::{hex, walk};
use builder::env::Env;
use builder::local::LocalEnvs;
use sha2::{Digest, Sha256};

use super::run::Progress;
use super::Inner;
use crate::spec::Algorithm;

/// The `algorithmImage` prefix of code built for the local executor.
pub const LOCAL_IMAGE: &str = "hkube-local/";

/// The folder a local "image" names, if it is one: `<code_root>/<name>/<digest>`.
pub fn code_folder(code_root: &Path, image: &str) -> Option<PathBuf> {
    let (name, digest) = image.strip_prefix(LOCAL_IMAGE)?.split_once(':')?;
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    (plain(name) && plain(digest) && !name.starts_with('.'))
        .then(|| code_root.join(name).join(digest))
}

pub(super) async fn build(
    inner: &Inner,
    algorithm: &Algorithm,
    env: Env,
    code_dir: &Path,
    progress: &mut Progress<'_>,
) -> Result<String, String> {
    let digest = code_digest(code_dir, env, algorithm)?;
    let image = format!("{LOCAL_IMAGE}{}:{digest}", algorithm.name);
    let target = inner.options.code_root.join(&algorithm.name).join(&digest);
    if !target.is_dir() {
        copy_tree(code_dir, &target)
            .map_err(|e| format!("keeping the code in {}: {e}", target.display()))?;
    }
    progress.line(&format!("code kept in {}", target.display()));
    let envs = LocalEnvs::new(inner.options.envs_root.clone());
    let prepared = streamed(progress, |log| envs.prepare(env, &target, log)).await?;
    if let Some(command) = algorithm
        .dependency_install_cmd
        .as_deref()
        .filter(|c| !c.trim().is_empty())
    {
        streamed(progress, |log| {
            envs.run_install_cmd(command, &target, &prepared, log)
        })
        .await?;
    }
    Ok(image)
}

/// Runs an installer step whose output lines reach the build's log while it runs.
async fn streamed<'a, T, F>(
    progress: &mut Progress<'_>,
    step: impl FnOnce(Box<dyn FnMut(&str) + Send + 'a>) -> F,
) -> Result<T, String>
where
    F: std::future::Future<Output = Result<T, builder::local::Error>> + 'a,
{
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let running = step(Box::new(move |line: &str| {
        let _ = tx.send(line.to_string());
    }));
    let mut running = Box::pin(running);
    let outcome = loop {
        tokio::select! {
            outcome = &mut running => break outcome,
            Some(line) = lines.recv() => progress.line(&line),
        }
    };
    while let Ok(line) = lines.try_recv() {
        progress.line(&line);
    }
    outcome.map_err(|e| e.to_string())
}

/// 16 hex digits of the code's files and what decides how it runs.
fn code_digest(code_dir: &Path, env: Env, algorithm: &Algorithm) -> Result<String, String> {
    let mut hasher = Sha256::new();
    hasher.update(env.as_str());
    hasher.update([0]);
    hasher.update(
        algorithm
            .dependency_install_cmd
            .as_deref()
            .unwrap_or_default(),
    );
    for (relative, path) in walk(code_dir).map_err(|e| e.to_string())? {
        let bytes = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        hasher.update(relative.as_bytes());
        hasher.update([0]);
        hasher.update(Sha256::digest(&bytes));
    }
    Ok(hex(&hasher.finalize())[..16].to_string())
}

/// Copies regular files (links were resolved to files inside by the unpacker) into a fresh
/// folder, then renames it into place.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let parent = to.parent().unwrap_or(to);
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    for (relative, path) in walk(from).map_err(std::io::Error::other)? {
        let dest = tmp.join(&relative);
        if let Some(folder) = dest.parent() {
            std::fs::create_dir_all(folder)?;
        }
        std::fs::copy(&path, &dest)?;
    }
    std::fs::create_dir_all(&tmp)?;
    match std::fs::rename(&tmp, to) {
        Err(_) if to.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        other => other,
    }
}
