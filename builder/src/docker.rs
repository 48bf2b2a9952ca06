//! Images built by a real Docker engine through bollard: the context is streamed as a tar
//! while it is written, every output line goes to the caller as it arrives, and a failure is
//! summed up in one line (the failing step and its last output) while the log keeps the rest.
//!
//! Cancelling the future that runs [`DockerEngine::build`] closes the connection, which makes
//! the engine abandon the build; that is how a stop or a timeout ends a build.

use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    ListImagesOptionsBuilder, PushImageOptionsBuilder, RemoveImageOptionsBuilder,
};
use bollard::Docker;
use bytes::Bytes;
use futures_util::StreamExt;
use std::io::Write;
use tokio::sync::mpsc;

use crate::context::Context;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the Docker engine: {0}")]
    Connect(String),
    #[error("{0}")]
    Failed(String),
    #[error("the Docker engine answered: {0}")]
    Engine(String),
    #[error("the image {image} is not in the Docker engine, and pulling it failed: {reason}")]
    MissingImage { image: String, reason: String },
}

/// What a build reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// A line of the engine's output.
    Line(String),
    /// The engine started step `at` of `of`.
    Step { at: u32, of: u32 },
}

/// An image found by label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledImage {
    pub id: String,
    pub tags: Vec<String>,
    pub labels: std::collections::HashMap<String, String>,
}

/// A connection to the Docker engine.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    docker: Docker,
}

impl DockerEngine {
    /// Connects to the local engine (`DOCKER_HOST` or `/var/run/docker.sock`) and agrees on an
    /// API version with it (Debian's 20.10 speaks 1.41).
    pub async fn connect() -> Result<DockerEngine, Error> {
        let docker =
            Docker::connect_with_local_defaults().map_err(|e| Error::Connect(e.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| Error::Connect(e.to_string()))?;
        docker
            .ping()
            .await
            .map_err(|e| Error::Connect(e.to_string()))?;
        Ok(DockerEngine { docker })
    }

    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// The image's id, when an image with this tag exists.
    pub async fn image_id(&self, tag: &str) -> Result<Option<String>, Error> {
        match self.docker.inspect_image(tag).await {
            Ok(image) => Ok(image.id),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(error) => Err(Error::Engine(error.to_string())),
        }
    }

    /// Makes sure the engine has `image`: present, or pulled now. Checked before a build whose
    /// `FROM` it is, so that a missing base image is reported as such, not as the registry
    /// error the engine's own pull would end with half-way through the build.
    pub async fn ensure_image(&self, image: &str) -> Result<(), Error> {
        if self.image_id(image).await?.is_some() {
            return Ok(());
        }
        let missing = |reason: String| Error::MissingImage {
            image: image.to_string(),
            reason: shorten(reason.trim(), 200),
        };
        let options = CreateImageOptionsBuilder::new().from_image(image).build();
        let mut pull = self.docker.create_image(Some(options), None, None);
        while let Some(item) = pull.next().await {
            match item {
                Ok(info) => {
                    if let Some(error) = info
                        .error
                        .or_else(|| info.error_detail.and_then(|d| d.message))
                    {
                        return Err(missing(error));
                    }
                }
                Err(error) => return Err(missing(error.to_string())),
            }
        }
        match self.image_id(image).await? {
            Some(_) => Ok(()),
            None => Err(missing("the pull ended without the image".into())),
        }
    }

    /// The images carrying the label `key=value`: their ids and tags.
    pub async fn labelled_images(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<LabelledImage>, Error> {
        let filters = std::collections::HashMap::from([(
            "label".to_string(),
            vec![format!("{key}={value}")],
        )]);
        let options = ListImagesOptionsBuilder::new().filters(&filters).build();
        let images = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(|e| Error::Engine(e.to_string()))?;
        Ok(images
            .into_iter()
            .map(|image| LabelledImage {
                id: image.id,
                tags: image.repo_tags,
                labels: image.labels,
            })
            .collect())
    }

    /// The ids of the images that containers (running or stopped) were made from.
    pub async fn images_in_use(&self) -> Result<std::collections::HashSet<String>, Error> {
        let options = ListContainersOptionsBuilder::new().all(true).build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| Error::Engine(e.to_string()))?;
        Ok(containers.into_iter().filter_map(|c| c.image_id).collect())
    }

    /// Removes the tag `tag`; the image goes with its last tag. Never forced: the engine keeps
    /// an image a container uses.
    pub async fn remove_tag(&self, tag: &str) -> Result<(), Error> {
        let options = RemoveImageOptionsBuilder::new().force(false).build();
        self.docker
            .remove_image(tag, Some(options), None)
            .await
            .map(drop)
            .map_err(|e| Error::Engine(e.to_string()))
    }

    /// Pushes `reference` (`REPOSITORY:TAG`, the repository naming its registry) with
    /// `credentials`. Each layer's outcome is reported as a line (not the progress in
    /// between: a log of thousands of progress lines says nothing more); a refusal
    /// by the registry ends the push with the registry's own message.
    pub async fn push(
        &self,
        reference: &str,
        credentials: Option<bollard::auth::DockerCredentials>,
        mut report: impl FnMut(String),
    ) -> Result<(), Error> {
        let (repository, tag) = crate::registry::split_tag(reference);
        let mut options = PushImageOptionsBuilder::new();
        if let Some(tag) = tag {
            options = options.tag(tag);
        }
        let mut stream = self
            .docker
            .push_image(repository, Some(options.build()), credentials);
        // bollard's model drops the layer id, so the transient states (every layer
        // "Preparing", "Waiting", then "Pushing" once per chunk) say nothing that a log reader
        // could follow; each layer's outcome ("Pushed", "Layer already exists", "Mounted
        // from …") and the digest line are kept.
        const TRANSIENT: [&str; 3] = ["Preparing", "Waiting", "Pushing"];
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(error) = info
                        .error
                        .or_else(|| info.error_detail.and_then(|d| d.message))
                    {
                        return Err(Error::Failed(error.trim().to_string()));
                    }
                    match info.status {
                        Some(status) if !TRANSIENT.contains(&status.as_str()) => report(status),
                        _ => {}
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(Error::Failed(error.trim().to_string()))
                }
                Err(error) => return Err(Error::Engine(error.to_string())),
            }
        }
        Ok(())
    }

    /// Builds `context` as `tag`; returns the image id.
    pub async fn build(
        &self,
        context: &Context,
        tag: &str,
        labels: &[(String, String)],
        mut report: impl FnMut(BuildEvent),
    ) -> Result<String, Error> {
        let args: std::collections::HashMap<String, String> =
            context.build_args.iter().cloned().collect();
        let labels: std::collections::HashMap<String, String> = labels.iter().cloned().collect();
        let options = BuildImageOptionsBuilder::new()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .buildargs(&args)
            .labels(&labels)
            .build();
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        let writer_context = context.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let out = ChunkWriter {
                tx,
                buffer: Vec::with_capacity(CHUNK),
            };
            writer_context.write_tar(out)
        });
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        let mut stream = self
            .docker
            .build_image(options, None, Some(bollard::body_stream(body)));
        let mut summary = Summary::default();
        let mut image_id = None;
        let mut failure = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream {
                        let text = strip_ansi(&text);
                        for line in text.lines().filter(|l| !l.trim().is_empty()) {
                            if let Some((at, of)) = summary.line(line) {
                                report(BuildEvent::Step { at, of });
                            }
                            report(BuildEvent::Line(line.to_string()));
                        }
                    }
                    if let Some(aux) = info.aux.and_then(|a| a.id) {
                        image_id = Some(aux);
                    }
                    if let Some(error) = info.error {
                        report(BuildEvent::Line(error.clone()));
                        failure = Some(error);
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    report(BuildEvent::Line(error.clone()));
                    failure = Some(error);
                }
                Err(error) => {
                    failure = Some(error.to_string());
                    break;
                }
            }
        }
        // A context that could not be written explains the failure better than the engine.
        if let Ok(Err(error)) = writer.await {
            return Err(Error::Failed(format!("the build context: {error}")));
        }
        if let Some(error) = failure {
            return Err(Error::Failed(summary.explain(&error)));
        }
        match image_id {
            Some(id) => Ok(id),
            None => self
                .image_id(tag)
                .await?
                .ok_or_else(|| Error::Failed(format!("the engine built no image {tag}"))),
        }
    }
}

const CHUNK: usize = 256 << 10;

/// A `Write` that hands the tar to the request body in chunks as it is made.
struct ChunkWriter {
    tx: mpsc::Sender<Bytes>,
    buffer: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the build ended"))
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Follows the output to say which step failed and what it printed last.
#[derive(Debug, Default)]
struct Summary {
    step: Option<String>,
    last: Vec<String>,
}

const LAST_LINES: usize = 3;

impl Summary {
    /// Records a line; returns the step numbers when the line starts a step.
    fn line(&mut self, line: &str) -> Option<(u32, u32)> {
        if let Some(rest) = line.strip_prefix("Step ") {
            let (numbers, command) = rest.split_once(" : ").unwrap_or((rest, ""));
            let (at, of) = numbers.split_once('/')?;
            self.step = Some(format!("step {numbers} ({})", shorten(command, 80)));
            self.last.clear();
            return Some((at.trim().parse().ok()?, of.trim().parse().ok()?));
        }
        if line.starts_with(" ---> ") || line.starts_with("Removing intermediate") {
            return None;
        }
        self.last.push(line.trim().to_string());
        if self.last.len() > LAST_LINES {
            self.last.remove(0);
        }
        None
    }

    fn explain(&self, error: &str) -> String {
        let error = error.trim();
        let mut text = match &self.step {
            Some(step) => format!("{step} failed: {error}"),
            None => error.to_string(),
        };
        let last: Vec<&String> = self.last.iter().filter(|l| l.as_str() != error).collect();
        if !last.is_empty() {
            text.push_str("; last output: ");
            text.push_str(
                &last
                    .iter()
                    .map(|l| l.as_str())
                    .collect::<Vec<_>>()
                    .join(" | "),
            );
        }
        text
    }
}

/// Removes terminal colour codes (the engine wraps a step's stderr in them).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            // Parameters and intermediates, then one final byte in @..~.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_are_removed() {
        assert_eq!(strip_ansi("\u{1b}[91mERROR: x\u{1b}[0m"), "ERROR: x");
    }

    #[test]
    fn a_failure_names_its_step_and_last_output() {
        let mut summary = Summary::default();
        assert_eq!(
            summary.line("Step 1/3 : FROM hkube/python:bookworm"),
            Some((1, 3))
        );
        assert_eq!(
            summary.line("Step 2/3 : RUN pip install -r requirements.txt"),
            Some((2, 3))
        );
        summary.line("Collecting nope");
        summary.line("ERROR: No matching distribution found for nope");
        let text = summary.explain(
            "The command '/bin/sh -c pip install -r requirements.txt' returned a non-zero code: 1",
        );
        assert_eq!(
            text,
            "step 2/3 (RUN pip install -r requirements.txt) failed: The command '/bin/sh -c pip install -r requirements.txt' returned a non-zero code: 1; last output: Collecting nope | ERROR: No matching distribution found for nope"
        );
    }
}
