//! Storage settings (HKube's environment variables `DEFAULT_STORAGE`, `STORAGE_ENCODING`,
//! `CLUSTER_NAME`, `BASE_FS_ADAPTER_DIRECTORY`, and for S3 `S3_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`) and the one place that picks a backend.
//!
//! Reads the environment only in [`StorageConfig::from_env`]; callers never name a backend type,
//! they hold the `Arc<dyn Storage>` that [`build`] returns.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::s3::{S3Settings, S3Storage};
use super::{Encoding, Error, FsStorage, Result, Storage};

/// The storage backend (`DEFAULT_STORAGE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Adapter {
    #[default]
    Fs,
    S3,
}

/// Where and how objects are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StorageConfig {
    /// `DEFAULT_STORAGE`, default `fs`.
    pub default_storage: Adapter,
    /// `STORAGE_ENCODING`, default `msgpack` (the Python and Java wrappers' default; HKube's
    /// cluster configmap sets one value for every container).
    pub storage_encoding: Encoding,
    /// `CLUSTER_NAME`, default `local`: the prefix of every key (`<cluster>-hkube/...`).
    pub cluster_name: String,
    /// `BASE_FS_ADAPTER_DIRECTORY`, default `/var/tmp/fs/storage`: the fs adapter's root.
    pub base_fs_adapter_directory: PathBuf,
    /// `S3_ENDPOINT_URL` (empty: AWS).
    pub s3_endpoint_url: String,
    /// `AWS_REGION`, default `us-east-1`.
    pub aws_region: String,
    /// `AWS_ACCESS_KEY_ID`.
    pub aws_access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`; never serialized (configs are logged and sent around).
    #[serde(skip_serializing)]
    pub aws_secret_access_key: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            default_storage: Adapter::Fs,
            storage_encoding: Encoding::Msgpack,
            cluster_name: "local".to_owned(),
            base_fs_adapter_directory: PathBuf::from("/var/tmp/fs/storage"),
            s3_endpoint_url: String::new(),
            aws_region: "us-east-1".to_owned(),
            aws_access_key_id: String::new(),
            aws_secret_access_key: String::new(),
        }
    }
}

impl StorageConfig {
    /// Reads the settings from the process environment. Unset or empty variables take their
    /// defaults; a value that is not understood is an error naming the variable.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), with the variables coming from `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let mut config = StorageConfig::default();
        if let Some(value) = get("DEFAULT_STORAGE") {
            config.default_storage = match value.trim() {
                "fs" => Adapter::Fs,
                "s3" => Adapter::S3,
                other => {
                    return Err(Error::Config(format!(
                        "DEFAULT_STORAGE is `{other}`; expected fs or s3"
                    )))
                }
            };
        }
        if let Some(value) = get("STORAGE_ENCODING") {
            config.storage_encoding = value
                .trim()
                .parse()
                .map_err(|message| Error::Config(format!("STORAGE_ENCODING: {message}")))?;
        }
        if let Some(value) = get("CLUSTER_NAME") {
            config.cluster_name = value;
        }
        if let Some(value) = get("BASE_FS_ADAPTER_DIRECTORY") {
            config.base_fs_adapter_directory = PathBuf::from(value);
        }
        if let Some(value) = get("S3_ENDPOINT_URL") {
            config.s3_endpoint_url = value.trim().to_owned();
        }
        if let Some(value) = get("AWS_REGION") {
            config.aws_region = value.trim().to_owned();
        }
        if let Some(value) = get("AWS_ACCESS_KEY_ID") {
            config.aws_access_key_id = value.trim().to_owned();
        }
        if let Some(value) = get("AWS_SECRET_ACCESS_KEY") {
            config.aws_secret_access_key = value.trim().to_owned();
        }
        Ok(config)
    }
}

/// The backend `config` asks for.
pub fn build(config: &StorageConfig) -> Result<Arc<dyn Storage>> {
    match config.default_storage {
        Adapter::Fs => Ok(Arc::new(FsStorage::new(
            config.base_fs_adapter_directory.clone(),
        ))),
        Adapter::S3 => {
            if config.aws_access_key_id.is_empty() || config.aws_secret_access_key.is_empty() {
                return Err(Error::Config(
                    "DEFAULT_STORAGE is s3 but AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY is not set"
                        .to_owned(),
                ));
            }
            Ok(Arc::new(S3Storage::new(&S3Settings {
                endpoint: config.s3_endpoint_url.clone(),
                region: config.aws_region.clone(),
                access_key: config.aws_access_key_id.clone(),
                secret_key: config.aws_secret_access_key.clone(),
            })))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(vars: &[(&str, &str)], expected: std::result::Result<StorageConfig, &str>) {
        let lookup = |name: &str| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        };
        match (StorageConfig::from_lookup(lookup), expected) {
            (Ok(config), Ok(expected)) => assert_eq!(config, expected, "{vars:?}"),
            (Err(error), Err(expected)) => assert_eq!(error.to_string(), expected, "{vars:?}"),
            (got, expected) => panic!("{vars:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn from_environment_variables() {
        check(&[], Ok(StorageConfig::default()));
        check(
            &[("STORAGE_ENCODING", ""), ("CLUSTER_NAME", " ")],
            Ok(StorageConfig::default()),
        );
        check(
            &[
                ("DEFAULT_STORAGE", "s3"),
                ("STORAGE_ENCODING", "bson"),
                ("CLUSTER_NAME", "prod"),
                ("BASE_FS_ADAPTER_DIRECTORY", "/data/storage"),
                ("S3_ENDPOINT_URL", "http://s3.local:9000"),
                ("AWS_ACCESS_KEY_ID", "ak"),
                ("AWS_SECRET_ACCESS_KEY", "sk"),
            ],
            Ok(StorageConfig {
                default_storage: Adapter::S3,
                storage_encoding: Encoding::Bson,
                cluster_name: "prod".into(),
                base_fs_adapter_directory: "/data/storage".into(),
                s3_endpoint_url: "http://s3.local:9000".into(),
                aws_region: "us-east-1".into(),
                aws_access_key_id: "ak".into(),
                aws_secret_access_key: "sk".into(),
            }),
        );
        check(
            &[("STORAGE_ENCODING", "xml")],
            Err("STORAGE_ENCODING: unknown encoding `xml`; expected bson, json or msgpack"),
        );
        check(
            &[("DEFAULT_STORAGE", "gcs")],
            Err("DEFAULT_STORAGE is `gcs`; expected fs or s3"),
        );
    }

    #[test]
    fn serde_uses_camel_case() {
        let config: StorageConfig =
            serde_json::from_str(r#"{"storageEncoding":"json","clusterName":"c"}"#).unwrap();
        assert_eq!(config.storage_encoding, Encoding::Json);
        assert_eq!(config.cluster_name, "c");
        assert_eq!(config.default_storage, Adapter::Fs);
        let text = serde_json::to_string(&StorageConfig::default()).unwrap();
        assert_eq!(
            text,
            r#"{"defaultStorage":"fs","storageEncoding":"msgpack","clusterName":"local","baseFsAdapterDirectory":"/var/tmp/fs/storage","s3EndpointUrl":"","awsRegion":"us-east-1","awsAccessKeyId":""}"#
        );
    }

    #[test]
    fn build_picks_the_adapter() {
        let storage = build(&StorageConfig::default()).unwrap();
        assert_eq!(storage.module_name(), "@hkube/fs-adapter");
        let s3 = StorageConfig {
            default_storage: Adapter::S3,
            ..StorageConfig::default()
        };
        assert_eq!(
            build(&s3).unwrap_err().to_string(),
            "DEFAULT_STORAGE is s3 but AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY is not set"
        );
        let s3 = StorageConfig {
            aws_access_key_id: "ak".into(),
            aws_secret_access_key: "sk".into(),
            ..s3
        };
        assert_eq!(build(&s3).unwrap().module_name(), "@hkube/s3-adapter");
    }
}
