//! Where the API is and who is calling: flags, environment, `.hkuberc`, defaults.
//!
//! Precedence, for each setting: flag > environment variable > `.hkuberc` > default. The
//! file is hkubectl's (reference §6.1): a flat JSON object with `endpoint`, `pathPrefix`,
//! `rejectUnauthorized`, `username`, `password`; `token` is this CLI's addition. Resolving is
//! pure ([`Settings::resolve`]); only [`find_rc`] looks at the disk.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:3000";
pub const DEFAULT_PATH_PREFIX: &str = "/api/v1";

/// The settings a `.hkuberc` may hold.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RcFile {
    pub file: PathBuf,
    pub endpoint: Option<String>,
    pub path_prefix: Option<String>,
    pub token: Option<String>,
    pub username: Option<String>,
    pub reject_unauthorized: Option<bool>,
}

impl RcFile {
    pub fn parse(file: &Path, text: &str) -> anyhow::Result<RcFile> {
        let value: Value = serde_json::from_str(text)
            .with_context(|| format!("{}: not a JSON object", file.display()))?;
        let Value::Object(map) = value else {
            anyhow::bail!("{}: not a JSON object", file.display());
        };
        let string = |key: &str| {
            map.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let reject_unauthorized = match map.get("rejectUnauthorized") {
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) => Some(s != "false"),
            _ => None,
        };
        Ok(RcFile {
            file: file.to_path_buf(),
            endpoint: string("endpoint"),
            path_prefix: string("pathPrefix"),
            token: string("token"),
            username: string("username"),
            reject_unauthorized,
        })
    }
}

/// What the command line and the environment say (`None`: not given).
#[derive(Debug, Default, Clone)]
pub struct Given {
    pub endpoint: Option<String>,
    pub token: Option<String>,
    pub path_prefix: Option<String>,
}

/// The settings a command uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub endpoint: String,
    pub path_prefix: String,
    pub token: Option<String>,
    /// `.hkuberc` names a user: hkubectl's Keycloak login, which this server does not have.
    pub username: Option<String>,
    /// Check an https server's certificate: `.hkuberc`'s `rejectUnauthorized`, true unless
    /// it says false (a self-signed certificate).
    pub verify_tls: bool,
}

impl Settings {
    /// flag > environment > `.hkuberc` > default, setting by setting.
    pub fn resolve(flags: &Given, env: &Given, rc: Option<&RcFile>) -> Settings {
        let pick = |flag: &Option<String>, env: &Option<String>, rc: Option<&String>| {
            flag.clone()
                .filter(|s| !s.is_empty())
                .or_else(|| env.clone().filter(|s| !s.is_empty()))
                .or_else(|| rc.cloned())
        };
        Settings {
            endpoint: pick(
                &flags.endpoint,
                &env.endpoint,
                rc.and_then(|r| r.endpoint.as_ref()),
            )
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            path_prefix: pick(
                &flags.path_prefix,
                &env.path_prefix,
                rc.and_then(|r| r.path_prefix.as_ref()),
            )
            .unwrap_or_else(|| DEFAULT_PATH_PREFIX.to_string()),
            token: pick(&flags.token, &env.token, rc.and_then(|r| r.token.as_ref())),
            username: rc.and_then(|r| r.username.clone()),
            verify_tls: rc.and_then(|r| r.reject_unauthorized).unwrap_or(true),
        }
    }
}

/// The environment's part: `HKUBE_ENDPOINT`, `HKUBE_TOKEN`, `HKUBE_PATH_PREFIX`.
pub fn from_env() -> Given {
    let var = |name: &str| std::env::var(name).ok().filter(|s| !s.is_empty());
    Given {
        endpoint: var("HKUBE_ENDPOINT"),
        token: var("HKUBE_TOKEN"),
        path_prefix: var("HKUBE_PATH_PREFIX"),
    }
}

/// The `.hkuberc` hkubectl would read: `.hkuberc` or `.hkuberc.json` in the current folder or
/// any folder above it, then in `./.hkube/`, then in `$HOME/.hkube/` and `$HOME`.
pub fn find_rc() -> anyhow::Result<Option<RcFile>> {
    let cwd = std::env::current_dir().ok();
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    let Some(file) = rc_candidates(cwd.as_deref(), home.as_deref())
        .into_iter()
        .find(|file| file.is_file())
    else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    RcFile::parse(&file, &text).map(Some)
}

/// Where `.hkuberc` is looked for, in order.
fn rc_candidates(cwd: Option<&Path>, home: Option<&Path>) -> Vec<PathBuf> {
    const NAMES: [&str; 2] = [".hkuberc", ".hkuberc.json"];
    let mut folders: Vec<PathBuf> = Vec::new();
    if let Some(cwd) = cwd {
        folders.extend(cwd.ancestors().map(Path::to_path_buf));
        folders.push(cwd.join(".hkube"));
    }
    if let Some(home) = home {
        folders.push(home.join(".hkube"));
        folders.push(home.to_path_buf());
    }
    folders
        .iter()
        .flat_map(|folder| NAMES.iter().map(move |name| folder.join(name)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(endpoint: Option<&str>, token: Option<&str>, prefix: Option<&str>) -> Given {
        Given {
            endpoint: endpoint.map(str::to_string),
            token: token.map(str::to_string),
            path_prefix: prefix.map(str::to_string),
        }
    }

    fn rc(text: &str) -> RcFile {
        RcFile::parse(Path::new(".hkuberc"), text).unwrap()
    }

    #[test]
    fn flag_beats_env_beats_rc_beats_default() {
        let check =
            |flags: Given, env: Given, rc: Option<RcFile>, expected: (&str, &str, Option<&str>)| {
                let settings = Settings::resolve(&flags, &env, rc.as_ref());
                assert_eq!(
                    (
                        settings.endpoint.as_str(),
                        settings.path_prefix.as_str(),
                        settings.token.as_deref()
                    ),
                    expected
                );
            };
        let file = || {
            Some(rc(
                r#"{"endpoint":"http://rc:1","pathPrefix":"/hkube/api-server/","token":"rc-token","rejectUnauthorized":false}"#,
            ))
        };
        check(
            Given::default(),
            Given::default(),
            None,
            ("http://127.0.0.1:3000", "/api/v1", None),
        );
        check(
            Given::default(),
            Given::default(),
            file(),
            ("http://rc:1", "/hkube/api-server/", Some("rc-token")),
        );
        check(
            Given::default(),
            given(Some("http://env:2"), Some("env-token"), None),
            file(),
            ("http://env:2", "/hkube/api-server/", Some("env-token")),
        );
        check(
            given(Some("http://flag:3"), Some("flag-token"), Some("/api/v1")),
            given(Some("http://env:2"), Some("env-token"), Some("/x")),
            file(),
            ("http://flag:3", "/api/v1", Some("flag-token")),
        );
        // An empty value counts as not given.
        check(
            given(Some(""), None, None),
            given(None, Some(""), None),
            None,
            ("http://127.0.0.1:3000", "/api/v1", None),
        );
    }

    #[test]
    fn rc_files_as_hkubectl_writes_them() {
        let file = rc(
            r#"{"endpoint":"https://my.cluster","rejectUnauthorized":"false","username":"u","password":"p"}"#,
        );
        assert_eq!(file.endpoint.as_deref(), Some("https://my.cluster"));
        assert_eq!(file.reject_unauthorized, Some(false));
        assert_eq!(file.username.as_deref(), Some("u"));
        assert_eq!(file.path_prefix, None);
        assert!(RcFile::parse(Path::new("x"), "[1]").is_err());
        assert!(RcFile::parse(Path::new("x"), "endpoint: y").is_err());
    }

    #[test]
    fn rc_is_looked_for_from_here_upwards_then_home() {
        let found = rc_candidates(Some(Path::new("/a/b")), Some(Path::new("/home/u")));
        let found: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            found,
            [
                "/a/b/.hkuberc",
                "/a/b/.hkuberc.json",
                "/a/.hkuberc",
                "/a/.hkuberc.json",
                "/.hkuberc",
                "/.hkuberc.json",
                "/a/b/.hkube/.hkuberc",
                "/a/b/.hkube/.hkuberc.json",
                "/home/u/.hkube/.hkuberc",
                "/home/u/.hkube/.hkuberc.json",
                "/home/u/.hkuberc",
                "/home/u/.hkuberc.json",
            ]
        );
    }
}
