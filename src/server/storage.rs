//! `hkube server --storage fs|s3`: where jobs' stored objects live. `fs` is the state folder's
//! `storage/`; `s3` any S3-compatible server, with HKube's variables for its credentials (never
//! options: a secret on a command line is visible to every user of the machine).

use std::sync::Arc;

use anyhow::{bail, Context};
use wrapper::sidecar::StorageAccess;
use wrapper::storage::{self, Adapter, Encoding, StorageConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageKind {
    /// The state folder's storage/ (the default).
    Fs,
    /// An S3-compatible server: --s3-endpoint, and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
    S3,
}

/// The job storage the sidecars use, and the variables the algorithms get for it; `None` for
/// the folder (the executor's default).
pub struct JobStorage {
    pub access: StorageAccess,
    pub env: Vec<(String, String)>,
}

pub async fn open(
    kind: StorageKind,
    endpoint: Option<&str>,
    region: &str,
) -> anyhow::Result<Option<JobStorage>> {
    if kind == StorageKind::Fs {
        return Ok(None);
    }
    let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default();
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default();
    if key.is_empty() || secret.is_empty() {
        bail!("--storage s3 needs the credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
    }
    let endpoint = endpoint.unwrap_or_default().to_string();
    let config = StorageConfig {
        default_storage: Adapter::S3,
        s3_endpoint_url: endpoint.clone(),
        aws_region: region.to_string(),
        aws_access_key_id: key.clone(),
        aws_secret_access_key: secret.clone(),
        ..StorageConfig::default()
    };
    let backend = storage::build(&config)?;
    // Fail now, with the reason, rather than at the first large result.
    backend
        .list(&format!("{}-hkube/", config.cluster_name))
        .await
        .with_context(|| {
            format!(
                "cannot reach the S3 storage at {}",
                if endpoint.is_empty() {
                    "AWS"
                } else {
                    &endpoint
                }
            )
        })?;
    let env = vec![
        ("DEFAULT_STORAGE".to_string(), "s3".to_string()),
        ("S3_ENDPOINT_URL".to_string(), endpoint),
        ("AWS_REGION".to_string(), region.to_string()),
        ("AWS_ACCESS_KEY_ID".to_string(), key),
        ("AWS_SECRET_ACCESS_KEY".to_string(), secret),
    ];
    Ok(Some(JobStorage {
        access: StorageAccess {
            storage: Arc::clone(&backend),
            cluster: config.cluster_name,
            encoding: Encoding::Msgpack,
            spool: None,
        },
        env,
    }))
}
