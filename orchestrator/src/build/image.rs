//! The Docker backend's step: the build context from the templates, and the image built by
//! the engine unless one with the same digest tag exists.

use std::path::PathBuf;

use builder::context::{Context, ImageInputs, Toolkit};
use builder::docker::{BuildEvent, DockerEngine};
use builder::env::Env;

use super::{BuildOptions, Inner};
use crate::spec::Algorithm;

/// Where an image build says how it goes: a build's record ([`super::run::Progress`]), or the
/// server's log for a project folder's image ([`super::folder`]).
pub(super) trait Report: Send {
    fn line(&mut self, line: &str);
    /// The build's status and percent done (a record shows them; a log need not).
    fn set(&mut self, _status: &str, _progress: u32) {}
}

/// What the image step works with.
pub(super) struct Step<'a> {
    pub docker: &'a DockerEngine,
    pub toolkit: &'a Toolkit,
    pub build_id: &'a str,
}

/// Makes the image; returns its tag.
pub(super) async fn build(
    options: &BuildOptions,
    Step {
        docker,
        toolkit,
        build_id,
    }: Step<'_>,
    algorithm: &Algorithm,
    env: Env,
    code_dir: PathBuf,
    progress: &mut dyn Report,
) -> Result<String, String> {
    let inputs = ImageInputs {
        algorithm: algorithm.name.clone(),
        env,
        code_dir,
        base_image: algorithm.base_image.clone(),
        dependency_install_cmd: algorithm.dependency_install_cmd.clone(),
    };
    let default_base = options
        .base_images
        .get(env.as_str())
        .cloned()
        .unwrap_or_default();
    let context = Context::assemble(toolkit, &inputs, &default_base).map_err(|e| e.to_string())?;
    let tag = context.tag(&format!("{}/{}", options.repository, algorithm.name));
    if docker
        .image_id(&tag)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        progress.line(&format!(
            "image {tag} exists: same inputs, nothing to build"
        ));
        // Pushed again all the same: the registry may have lost it (a push of layers it has
        // costs one check each).
        push(options, docker, &tag, progress).await?;
        return Ok(tag);
    }
    let base = context
        .build_args
        .iter()
        .find(|(key, _)| key == "BASE_IMAGE")
        .map(|(_, image)| image.clone())
        .unwrap_or_default();
    if let Err(error) = docker.ensure_image(&base).await {
        return Err(missing_base_image(&base, env, &error));
    }
    progress.line(&format!(
        "building image {tag} ({} files in the context)",
        context.len()
    ));
    let labels = vec![
        ("io.hkube.algorithm".to_string(), algorithm.name.clone()),
        ("io.hkube.build".to_string(), build_id.to_string()),
    ];
    // The engine's output reaches the record while the build runs.
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let running = docker.build(&context, &tag, &labels, move |event| {
        let _ = tx.send(event);
    });
    let mut running = Box::pin(running);
    let on_event = |progress: &mut dyn Report, event| match event {
        BuildEvent::Line(line) => progress.line(&line),
        BuildEvent::Step { at, of } => {
            let percent = 60 + 35 * at / of.max(1);
            progress.set("active", percent.min(95));
        }
    };
    let result = loop {
        tokio::select! {
            result = &mut running => break result,
            Some(event) = events.recv() => on_event(progress, event),
        }
    };
    while let Ok(event) = events.try_recv() {
        on_event(progress, event);
    }
    drop(running);
    result.map_err(|e| e.to_string())?;
    push(options, docker, &tag, progress).await?;
    Ok(tag)
}

/// Pushes the image to the server's registry, when it has one; the engine's progress goes to
/// the build's log. A failure fails the build with the registry's words and what to check:
/// an algorithm whose image the cluster cannot pull must not become current.
async fn push(
    options: &BuildOptions,
    docker: &DockerEngine,
    tag: &str,
    progress: &mut dyn Report,
) -> Result<(), String> {
    let Some(target) = &options.registry else {
        return Ok(());
    };
    let credentials = target.credentials().map_err(|e| e.to_string())?;
    progress.line(&format!(
        "pushing {tag} to {}{}",
        target.registry.host,
        match &credentials {
            Some(found) => format!(
                " as {}",
                found.username.as_deref().unwrap_or("(identity token)")
            ),
            None => " without credentials".to_string(),
        }
    ));
    // The engine's lines reach the record while the push runs, as the build's do.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let running = docker.push(tag, credentials, move |line| {
        let _ = tx.send(line);
    });
    let mut running = Box::pin(running);
    let result = loop {
        tokio::select! {
            result = &mut running => break result,
            Some(line) = lines.recv() => progress.line(&line),
        }
    };
    while let Ok(line) = lines.try_recv() {
        progress.line(&line);
    }
    result.map_err(|error| {
        format!(
            "pushing {tag} to {} failed: {error}; {}",
            target.registry.host,
            target.advice()
        )
    })?;
    progress.line(&format!("pushed {tag}"));
    Ok(())
}

/// The build's failure when its base image is neither in the engine nor pullable: which image,
/// and how to make hkube's own (no registry needed) or name another.
fn missing_base_image(base: &str, env: Env, error: &builder::docker::Error) -> String {
    let reason = match error {
        builder::docker::Error::MissingImage { reason, .. } => reason.clone(),
        other => other.to_string(),
    };
    format!(
        "the base image {base} is not in the Docker engine and could not be pulled ({reason}). \
         hkube's base images are made on this machine, without a registry, by \
         scripts/base-images.sh in hkube's repository: run `scripts/base-images.sh --only {only}`; \
         or set the algorithm's baseImage (or `hkube server --base-image {env}=IMAGE`) to an \
         image the engine has",
        env = env.as_str(),
        // A module's image is FROM the Debian base.
        only = if env == Env::Wasm {
            "debian"
        } else {
            env.as_str()
        }
    )
}

/// How many of an algorithm's newest versions keep their images, the current version's
/// aside: the newest and the one before it, to go back to.
const KEPT_VERSIONS: usize = 2;

/// Removes the images this server built for `name` that no longer matter: every one except
/// the current version's and the [`KEPT_VERSIONS`] newest versions', and never one a container
/// uses (a running worker). Only images whose `io.hkube.build` label is one of this server's
/// builds of the algorithm are candidates, so another server on the same engine keeps its own.
/// Returns the tags removed; a failure to list or remove leaves the images (logged).
pub(super) async fn prune(inner: &Inner, docker: &DockerEngine, name: &str) -> Vec<String> {
    let mut keep: std::collections::HashSet<String> = inner
        .store
        .algorithm_versions(name)
        .unwrap_or_default()
        .into_iter()
        .take(KEPT_VERSIONS)
        .filter_map(|version| version.algorithm.algorithm_image)
        .collect();
    if let Some(current) = inner
        .store
        .algorithm(name)
        .and_then(|algorithm| algorithm.algorithm_image)
    {
        keep.insert(current);
    }
    let ours: std::collections::HashSet<String> = inner
        .store
        .builds(name)
        .unwrap_or_default()
        .iter()
        .filter_map(|record| record["buildId"].as_str().map(str::to_string))
        .collect();
    let (images, in_use) = match (
        docker.labelled_images("io.hkube.algorithm", name).await,
        docker.images_in_use().await,
    ) {
        (Ok(images), Ok(in_use)) => (images, in_use),
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!("cannot list the images of {name} to remove old ones: {error}");
            return Vec::new();
        }
    };
    let mut removed = Vec::new();
    for image in images {
        let built_here = image
            .labels
            .get("io.hkube.build")
            .is_some_and(|build| ours.contains(build));
        let kept = image.tags.iter().any(|tag| keep.contains(tag));
        if !built_here || kept || in_use.contains(&image.id) {
            continue;
        }
        // An image without tags is removed by its id.
        let names = if image.tags.is_empty() {
            vec![image.id.clone()]
        } else {
            image.tags.clone()
        };
        for tag in &names {
            match docker.remove_tag(tag).await {
                Ok(()) => removed.push(tag.clone()),
                Err(error) => tracing::warn!("cannot remove the old image {tag}: {error}"),
            }
        }
    }
    removed
}
