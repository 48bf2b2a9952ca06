//! The container launcher (the Docker executor's): a worker is a pair of containers, the
//! sidecar and the algorithm, started from the algorithm's image (see `executor::docker`).

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Error, Launch, Launched, Launcher};
use crate::executor::algorithm::WorkerAlgorithm;
use crate::executor::docker::DockerLauncher;

/// Starts workers of algorithms that have an image, as container pairs.
#[derive(Debug, Clone)]
pub struct ContainerLauncher {
    pub docker: DockerLauncher,
    /// Output bytes kept per worker, for crash reports.
    pub log_limit: usize,
}

impl Launcher for ContainerLauncher {
    fn runs(&self, algorithm: &WorkerAlgorithm) -> bool {
        algorithm.container.is_some()
    }

    fn launch(&self, launch: Launch) -> BoxFuture<'static, Result<Launched, Error>> {
        let (docker, log_limit) = (self.docker.clone(), self.log_limit);
        Box::pin(async move {
            let algorithm = &launch.algorithm;
            let Some(spec) = &algorithm.container else {
                return Err(Error::Start(format!(
                    "algorithm {} has no image to run in a container",
                    algorithm.name
                )));
            };
            // The container's memory cap and GPU devices come from `launch.limits`.
            let connect_timeout: Duration = launch.sidecar.connect_timeout;
            let (ends, worker) = docker
                .start_worker(
                    &algorithm.name,
                    &algorithm.entry_point,
                    spec,
                    &launch.limits,
                    connect_timeout,
                    log_limit,
                )
                .await
                .map_err(Error::Start)?;
            Ok(Launched {
                to_sidecar: ends.to_sidecar,
                from_sidecar: ends.from_sidecar,
                worker,
            })
        })
    }
}
