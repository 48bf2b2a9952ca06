//! The Docker backend's step: the build context from the templates, and the image built by
//! the engine unless one with the same digest tag exists.

use std::path::PathBuf;

use builder::context::{Context, ImageInputs, Toolkit};
use builder::docker::{BuildEvent, DockerEngine};
use builder::env::Env;

use super::run::Progress;
use super::Inner;
use crate::spec::Algorithm;

/// What the image step works with.
pub(super) struct Step<'a> {
    pub docker: &'a DockerEngine,
    pub toolkit: &'a Toolkit,
    pub build_id: &'a str,
}

/// Makes the image; returns its tag.
pub(super) async fn build(
    inner: &Inner,
    Step {
        docker,
        toolkit,
        build_id,
    }: Step<'_>,
    algorithm: &Algorithm,
    env: Env,
    code_dir: PathBuf,
    progress: &mut Progress<'_>,
) -> Result<String, String> {
    let inputs = ImageInputs {
        algorithm: algorithm.name.clone(),
        env,
        code_dir,
        base_image: algorithm.base_image.clone(),
        dependency_install_cmd: algorithm.dependency_install_cmd.clone(),
    };
    let default_base = inner
        .options
        .base_images
        .get(env.as_str())
        .cloned()
        .unwrap_or_default();
    let context = Context::assemble(toolkit, &inputs, &default_base).map_err(|e| e.to_string())?;
    let tag = context.tag(&format!("{}/{}", inner.options.repository, algorithm.name));
    if docker
        .image_id(&tag)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        progress.line(&format!(
            "image {tag} exists: same inputs, nothing to build"
        ));
        return Ok(tag);
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
    let on_event = |progress: &mut Progress<'_>, event| match event {
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
    Ok(tag)
}
