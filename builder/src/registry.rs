//! Where built images are pushed (`hkube server --registry HOST[:PORT][/PATH]`) and with which
//! credentials: a Docker config file's `auths` entry for the registry's host, as `docker login`
//! writes it. Parsing is pure; [`Target::credentials`] reads the file at each push, so rotated
//! credentials (a Kubernetes Secret updated in place) are picked up without a restart.

use std::path::PathBuf;

use base64::Engine as _;
use bollard::auth::DockerCredentials;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--registry {reference}: {reason}")]
    BadReference { reference: String, reason: String },
    #[error("the registry credentials file {}: {reason}", path.display())]
    AuthFile { path: PathBuf, reason: String },
}

/// A registry and the path under it that images are pushed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// `HOST[:PORT]`, as the engine and the `auths` keys name it.
    pub host: String,
    /// Slash-separated, lowercase; empty for images at the registry's top level.
    pub path: String,
}

impl Registry {
    /// Parses `HOST[:PORT][/PATH]`. The host must look like one (a dot, a port, or
    /// `localhost`): Docker reads `hkube/algorithms` as a Docker Hub namespace, not a registry,
    /// so such a reference would push somewhere else than meant.
    pub fn parse(reference: &str) -> Result<Registry, Error> {
        let bad = |reason: &str| Error::BadReference {
            reference: reference.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = reference.trim().trim_end_matches('/');
        if trimmed.contains("://") {
            return Err(bad(
                "give the registry without a scheme, as HOST[:PORT]/PATH (e.g. registry.example.com/hkube)",
            ));
        }
        let (host, path) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        if host.is_empty() {
            return Err(bad(
                "expected HOST[:PORT]/PATH, such as registry.example.com/hkube or 127.0.0.1:5000/hkube",
            ));
        }
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(bad(&format!(
                "{host} is not a registry host (Docker would read it as a Docker Hub namespace); \
                 name the host with its domain or port, e.g. {host}.example.com or {host}:5000"
            )));
        }
        let (name, port) = host.split_once(':').unwrap_or((host, ""));
        let host_chars = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
        if name.is_empty() || !name.chars().all(host_chars) {
            return Err(bad(&format!(
                "{host}: a host name has letters, digits, dots and dashes"
            )));
        }
        if host.contains(':') && port.parse::<u16>().is_err() {
            return Err(bad(&format!(
                "{host}: the port must be a number up to 65535"
            )));
        }
        for component in path.split('/').filter(|_| !path.is_empty()) {
            check_component(component).map_err(|reason| bad(&reason))?;
        }
        Ok(Registry {
            host: host.to_string(),
            path: path.to_string(),
        })
    }

    /// The repository prefix images are named under: `HOST[:PORT][/PATH]`.
    pub fn repository(&self) -> String {
        if self.path.is_empty() {
            self.host.clone()
        } else {
            format!("{}/{}", self.host, self.path)
        }
    }
}

/// A path component as the distribution spec allows it: lowercase letters and digits, joined
/// by single separators (`.`, `_`, `__`, `-`).
fn check_component(component: &str) -> Result<(), String> {
    let fix = "path components are lowercase letters and digits joined by '.', '_' or '-'";
    if component.is_empty() {
        return Err(format!("an empty path component (a double '/'); {fix}"));
    }
    let separator = |c: char| c == '.' || c == '_' || c == '-';
    let ok_chars = component
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || separator(c));
    let ends_ok = !component.starts_with(separator) && !component.ends_with(separator);
    if !ok_chars || !ends_ok {
        return Err(format!("{component}: {fix}"));
    }
    Ok(())
}

/// Where the credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSource {
    pub path: PathBuf,
    /// Named with `--registry-auth`: it must exist. The default file may be absent (a registry
    /// without authentication).
    pub explicit: bool,
}

impl AuthSource {
    /// `--registry-auth FILE`, else `$DOCKER_CONFIG/config.json`, else
    /// `$HOME/.docker/config.json` (where `docker login` writes).
    pub fn resolve(
        explicit: Option<PathBuf>,
        docker_config: Option<PathBuf>,
        home: Option<PathBuf>,
    ) -> AuthSource {
        match explicit {
            Some(path) => AuthSource {
                path,
                explicit: true,
            },
            None => AuthSource {
                path: docker_config
                    .map(|dir| dir.join("config.json"))
                    .or_else(|| home.map(|home| home.join(".docker").join("config.json")))
                    .unwrap_or_else(|| PathBuf::from(".docker/config.json")),
                explicit: false,
            },
        }
    }
}

/// A registry to push to, with where its credentials are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub registry: Registry,
    pub auth: AuthSource,
}

impl Target {
    /// The credentials for the registry's host now: `None` when the default file is absent or
    /// has no entry for the host (the push goes without credentials).
    pub fn credentials(&self) -> Result<Option<DockerCredentials>, Error> {
        let failed = |reason: String| Error::AuthFile {
            path: self.auth.path.clone(),
            reason,
        };
        let text = match std::fs::read_to_string(&self.auth.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && !self.auth.explicit => {
                return Ok(None)
            }
            Err(error) => return Err(failed(format!("cannot read it: {error}"))),
        };
        credentials(&text, &self.registry.host).map_err(failed)
    }

    /// What to check when a push fails, for the build's message.
    pub fn advice(&self) -> String {
        let host = &self.registry.host;
        format!(
            "check that the Docker engine reaches {host} (a registry on plain HTTP must be \
             localhost or listed in the engine's insecure-registries), and that the \
             credentials for {host} in {} may push to {} (`docker login {host}` writes them)",
            self.auth.path.display(),
            self.registry.repository()
        )
    }
}

/// The `auths` entry for `host` in a Docker config file's text. An entry is keyed by the host,
/// or by a URL naming it (`https://host/v1/`, as older clients wrote). Credential helpers
/// (`credsStore`, `credHelpers`) keep the secret outside the file: they are refused rather than
/// skipped, since a push without the credentials would fail with a less helpful message.
pub fn credentials(text: &str, host: &str) -> Result<Option<DockerCredentials>, String> {
    let config: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not a Docker config file (JSON): {e}"))?;
    let helper = config["credHelpers"][host]
        .as_str()
        .or_else(|| config["credsStore"].as_str());
    let entry = config["auths"]
        .as_object()
        .into_iter()
        .flatten()
        .find(|(key, _)| key_host(key) == host)
        .map(|(_, entry)| entry);
    let Some(entry) = entry else {
        return match config["credHelpers"][host].as_str() {
            Some(helper) => Err(helper_refused(host, helper)),
            None => Ok(None),
        };
    };
    let text = |key: &str| {
        entry[key]
            .as_str()
            .filter(|value| !value.is_empty())
            .map(str::to_string)
    };
    let (username, password) = match text("auth") {
        Some(auth) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| format!("auths.\"{host}\".auth is not base64: {e}"))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| format!("auths.\"{host}\".auth is not UTF-8 once decoded"))?;
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| format!("auths.\"{host}\".auth decodes to no user:password pair"))?;
            (Some(user.to_string()), Some(pass.to_string()))
        }
        None => (text("username"), text("password")),
    };
    let identity = text("identitytoken");
    if username.is_none() && identity.is_none() {
        return match helper {
            Some(helper) => Err(helper_refused(host, helper)),
            None => Err(format!(
                "auths.\"{host}\" has neither auth (base64 user:password) nor username and \
                 password"
            )),
        };
    }
    if username.is_some() && password.is_none() {
        return Err(format!(
            "auths.\"{host}\" has a username without a password"
        ));
    }
    Ok(Some(DockerCredentials {
        username,
        password,
        identitytoken: identity,
        serveraddress: Some(host.to_string()),
        ..DockerCredentials::default()
    }))
}

fn helper_refused(host: &str, helper: &str) -> String {
    format!(
        "the credentials for {host} are kept by the credential helper docker-credential-{helper}, \
         which hkube does not call; give hkube a file whose auths entry for {host} holds them \
         (--registry-auth FILE, e.g. a Kubernetes docker-registry Secret's .dockerconfigjson)"
    )
}

/// The host an `auths` key names: `host:port`, `https://host:port/v1/` or `http://host`.
fn key_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// Splits `REPOSITORY:TAG` at the tag's colon (not a port's).
pub fn split_tag(reference: &str) -> (&str, Option<&str>) {
    let name_start = reference.rfind('/').map(|i| i + 1).unwrap_or(0);
    match reference[name_start..].rfind(':') {
        Some(at) => (
            &reference[..name_start + at],
            Some(&reference[name_start + at + 1..]),
        ),
        None => (reference, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_reference_is_a_host_and_a_path() {
        let registry = Registry::parse("127.0.0.1:5000/hkube/algos").unwrap();
        assert_eq!(registry.host, "127.0.0.1:5000");
        assert_eq!(registry.path, "hkube/algos");
        assert_eq!(registry.repository(), "127.0.0.1:5000/hkube/algos");
        let top = Registry::parse("registry.example.com/").unwrap();
        assert_eq!(top.repository(), "registry.example.com");
        assert!(Registry::parse("localhost/x").is_ok());
    }

    #[test]
    fn bad_registry_references_say_why() {
        let message = |text: &str| Registry::parse(text).unwrap_err().to_string();
        assert!(message("hkube/algorithms").contains("Docker Hub namespace"));
        assert!(message("https://r.example.com/x").contains("without a scheme"));
        assert!(message("r.example.com/Upper").contains("lowercase"));
        assert!(message("r.example.com//x").contains("empty path component"));
        assert!(message("r.example.com:http/x").contains("port"));
        assert!(message("").contains("expected HOST"));
    }

    #[test]
    fn credentials_come_from_auth_or_username_and_password() {
        // "user:pa:ss" in base64: a password may hold colons.
        let file = r#"{"auths": {
            "https://127.0.0.1:5000/v1/": {"auth": "dXNlcjpwYTpzcw=="},
            "r.example.com": {"username": "u", "password": "p"}
        }}"#;
        let found = credentials(file, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(found.username.as_deref(), Some("user"));
        assert_eq!(found.password.as_deref(), Some("pa:ss"));
        assert_eq!(found.serveraddress.as_deref(), Some("127.0.0.1:5000"));
        let found = credentials(file, "r.example.com").unwrap().unwrap();
        assert_eq!(
            (found.username.as_deref(), found.password.as_deref()),
            (Some("u"), Some("p"))
        );
        assert!(credentials(file, "other.example.com").unwrap().is_none());
    }

    #[test]
    fn helpers_and_broken_entries_are_refused() {
        let helper = r#"{"auths": {"r.example.com": {}}, "credsStore": "desktop"}"#;
        let error = credentials(helper, "r.example.com").unwrap_err();
        assert!(error.contains("docker-credential-desktop"), "{error}");
        let per_host = r#"{"credHelpers": {"r.example.com": "ecr-login"}}"#;
        let error = credentials(per_host, "r.example.com").unwrap_err();
        assert!(error.contains("docker-credential-ecr-login"), "{error}");
        let error = credentials(r#"{"auths": {"h.io": {"auth": "%%"}}}"#, "h.io").unwrap_err();
        assert!(error.contains("not base64"), "{error}");
        let error = credentials("nope", "h.io").unwrap_err();
        assert!(error.contains("JSON"), "{error}");
    }

    #[test]
    fn the_default_file_may_be_absent_but_a_named_one_may_not() {
        let registry = Registry::parse("127.0.0.1:5000/hkube").unwrap();
        let missing = PathBuf::from("/nonexistent/hkube-test/config.json");
        let default = Target {
            registry: registry.clone(),
            auth: AuthSource {
                path: missing.clone(),
                explicit: false,
            },
        };
        assert!(default.credentials().unwrap().is_none());
        let named = Target {
            registry,
            auth: AuthSource {
                path: missing,
                explicit: true,
            },
        };
        let error = named.credentials().unwrap_err().to_string();
        assert!(error.contains("cannot read it"), "{error}");
    }

    #[test]
    fn the_auth_file_defaults_to_docker_config_then_home() {
        let resolve = AuthSource::resolve;
        assert_eq!(
            resolve(None, Some("/d".into()), Some("/h".into())).path,
            PathBuf::from("/d/config.json")
        );
        assert_eq!(
            resolve(None, None, Some("/h".into())).path,
            PathBuf::from("/h/.docker/config.json")
        );
        let named = resolve(Some("/x.json".into()), Some("/d".into()), None);
        assert!(named.explicit);
        assert_eq!(named.path, PathBuf::from("/x.json"));
    }

    #[test]
    fn a_tag_is_split_from_its_repository_not_at_a_port() {
        assert_eq!(
            split_tag("127.0.0.1:5000/hkube/range:abc"),
            ("127.0.0.1:5000/hkube/range", Some("abc"))
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/hkube/range"),
            ("127.0.0.1:5000/hkube/range", None)
        );
    }
}
