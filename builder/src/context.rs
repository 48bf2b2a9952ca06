//! The docker build context of an algorithm image: which files go where (see
//! `docs/images.md` for the layout the templates expect), the digest of everything that
//! decides the image, and the context itself streamed as a tar.
//!
//! The digest is the image's tag: the same code, template, runtime, sidecar, base image and
//! install command give the same tag, so an unchanged apply costs one image lookup and no build.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::env::Env;

/// What the build service brings to every image: templates, runtimes, the sidecar and trust.
#[derive(Debug, Clone)]
pub struct Toolkit {
    /// The repository's `templates/` folder (holds `<env>/Dockerfile`).
    pub templates_dir: PathBuf,
    /// The repository's `runtimes/` folder.
    pub runtimes_dir: PathBuf,
    /// The `hkube-wrapper` binary that becomes `/hkube/hkube-wrapper` in the image.
    pub sidecar_binary: PathBuf,
    /// Trusted while dependencies install (a TLS-intercepting proxy's CA); none: the image's own.
    pub ca_bundle: Option<PathBuf>,
}

/// The sidecar binary as images should carry it: without debug information (a release
/// build with `debug = 1` is ~140 MB, stripped ~20 MB: every image and every build context
/// would carry the difference). Kept in `cache_dir`, named by the binary's size and time, and
/// made with `objcopy --strip-debug`; where that fails the binary is used as it is.
pub fn stripped_sidecar(binary: &Path, cache_dir: &Path) -> PathBuf {
    let Ok(meta) = std::fs::metadata(binary) else {
        return binary.to_path_buf();
    };
    let stamp = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let stripped = cache_dir.join(format!("hkube-wrapper-{}-{stamp}", meta.len()));
    if stripped.is_file() {
        return stripped;
    }
    let tmp = cache_dir.join(format!(".hkube-wrapper-{}.tmp", std::process::id()));
    let made = std::fs::create_dir_all(cache_dir).is_ok()
        && crate::process::Spec::new("objcopy")
            .args([
                OsStr::new("--strip-debug"),
                binary.as_os_str(),
                tmp.as_os_str(),
            ])
            .run_blocking()
            .is_ok_and(|exit| exit.success())
        && std::fs::rename(&tmp, &stripped).is_ok();
    if made {
        stripped
    } else {
        let _ = std::fs::remove_file(&tmp);
        binary.to_path_buf()
    }
}

/// One image to build.
#[derive(Debug, Clone)]
pub struct ImageInputs {
    pub algorithm: String,
    pub env: Env,
    /// The user's code, unpacked (the folder whose files go to `/hkube/algorithm`).
    pub code_dir: PathBuf,
    /// `FROM` this instead of the env's default base.
    pub base_image: Option<String>,
    pub dependency_install_cmd: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the template for {0} is missing: {1} does not exist")]
    NoTemplate(Env, PathBuf),
}

/// Where one context entry's bytes come from.
#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Entry {
    path: String,
    mode: u32,
    source: Source,
}

/// A build context ready to digest and stream.
#[derive(Debug, Clone)]
pub struct Context {
    entries: Vec<Entry>,
    pub build_args: Vec<(String, String)>,
    /// Hex SHA-256 of every entry and build argument.
    pub digest: String,
}

impl Context {
    /// Lists the context of `inputs` and digests it.
    pub fn assemble(
        toolkit: &Toolkit,
        inputs: &ImageInputs,
        default_base: &str,
    ) -> Result<Context, Error> {
        let env = inputs.env;
        let template = toolkit.templates_dir.join(env.as_str());
        let dockerfile = template.join("Dockerfile");
        if !dockerfile.is_file() {
            return Err(Error::NoTemplate(env, dockerfile));
        }
        let mut entries = vec![file_entry("Dockerfile", &dockerfile)?];
        // The env's own files and the ones every template shares (templates/common/).
        let common = toolkit.templates_dir.join("common");
        let shared = if common.is_dir() {
            walk(&common)?
        } else {
            Vec::new()
        };
        for (relative, path) in shared.into_iter().chain(walk(&template)?) {
            if relative != "Dockerfile" {
                entries.push(file_entry(&format!("hkube/template/{relative}"), &path)?);
            }
        }
        let ca = match &toolkit.ca_bundle {
            Some(path) => std::fs::read(path).map_err(|source| Error::Io {
                what: "reading the CA bundle",
                path: path.clone(),
                source,
            })?,
            None => Vec::new(),
        };
        entries.push(Entry {
            path: "hkube/ca.crt".into(),
            mode: 0o644,
            source: Source::Bytes(ca),
        });
        entries.push(file_entry("hkube/hkube-wrapper", &toolkit.sidecar_binary)?);
        for (relative, path) in runtime_files(&toolkit.runtimes_dir, env)? {
            entries.push(file_entry(&format!("hkube/runtime/{relative}"), &path)?);
        }
        let code = walk(&inputs.code_dir)?;
        let install_cmd = inputs
            .dependency_install_cmd
            .clone()
            .filter(|c| !c.trim().is_empty());
        for (relative, path) in &code {
            // A custom install command may need any of the code; the standard one only the
            // manifests, so that a code-only change keeps the dependency layer.
            if install_cmd.is_some() || env.manifests().contains(&relative.as_str()) {
                entries.push(file_entry(&format!("hkube/deps/{relative}"), path)?);
            }
        }
        if !entries.iter().any(|e| e.path.starts_with("hkube/deps/")) {
            // COPY of an empty folder needs the folder to exist in the context.
            entries.push(Entry {
                path: "hkube/deps/.keep".into(),
                mode: 0o644,
                source: Source::Bytes(Vec::new()),
            });
        }
        for (relative, path) in &code {
            entries.push(file_entry(&format!("algorithm/{relative}"), path)?);
        }
        if code.is_empty() {
            entries.push(Entry {
                path: "algorithm/.keep".into(),
                mode: 0o644,
                source: Source::Bytes(Vec::new()),
            });
        }
        let build_args = vec![
            (
                "BASE_IMAGE".to_string(),
                inputs
                    .base_image
                    .clone()
                    .filter(|b| !b.is_empty())
                    .unwrap_or_else(|| default_base.to_string()),
            ),
            (
                "DEPENDENCY_INSTALL_CMD".to_string(),
                install_cmd.unwrap_or_default(),
            ),
        ];
        let digest = digest(&entries, &build_args)?;
        Ok(Context {
            entries,
            build_args,
            digest,
        })
    }

    /// The tag for `repository` (`hkube/algorithms/<name>:<16 hex digits>`).
    pub fn tag(&self, repository: &str) -> String {
        format!("{repository}:{}", &self.digest[..16])
    }

    /// Writes the context as a tar to `out` (blocking: run it off the async threads).
    pub fn write_tar(&self, out: impl Write) -> Result<(), Error> {
        let mut tar = tar::Builder::new(out);
        let failed = |path: &str, source| Error::Io {
            what: "writing the build context entry",
            path: PathBuf::from(path),
            source,
        };
        for entry in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mode(entry.mode);
            // A fixed time: the same inputs give the same context bytes.
            header.set_mtime(0);
            match &entry.source {
                Source::Bytes(bytes) => {
                    header.set_size(bytes.len() as u64);
                    tar.append_data(&mut header, &entry.path, bytes.as_slice())
                        .map_err(|e| failed(&entry.path, e))?;
                }
                Source::File(path) => {
                    let file = std::fs::File::open(path).map_err(|source| Error::Io {
                        what: "reading",
                        path: path.clone(),
                        source,
                    })?;
                    let size = file.metadata().map_err(|e| failed(&entry.path, e))?.len();
                    header.set_size(size);
                    tar.append_data(&mut header, &entry.path, file)
                        .map_err(|e| failed(&entry.path, e))?;
                }
            }
        }
        tar.into_inner()
            .and_then(|mut out| out.flush())
            .map_err(|e| failed("(end)", e))
    }

    /// The number of files in the context.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn file_entry(path: &str, source: &Path) -> Result<Entry, Error> {
    let meta = std::fs::metadata(source).map_err(|e| Error::Io {
        what: "reading",
        path: source.to_path_buf(),
        source: e,
    })?;
    use std::os::unix::fs::PermissionsExt;
    let executable = meta.permissions().mode() & 0o111 != 0;
    Ok(Entry {
        path: path.to_string(),
        mode: if executable { 0o755 } else { 0o644 },
        source: Source::File(source.to_path_buf()),
    })
}

/// The runtime's files for `env`, relative to where the template expects them.
fn runtime_files(runtimes: &Path, env: Env) -> Result<Vec<(String, PathBuf)>, Error> {
    Ok(match env {
        Env::Python => walk(&runtimes.join("python/hkube_runtime"))?
            .into_iter()
            .map(|(relative, path)| (format!("hkube_runtime/{relative}"), path))
            .collect(),
        Env::Nodejs => {
            let dir = runtimes.join("javascript");
            let mut files = Vec::new();
            for top in ["bin", "lib"] {
                for (relative, path) in walk(&dir.join(top))? {
                    files.push((format!("{top}/{relative}"), path));
                }
            }
            for top in ["index.js", "package.json"] {
                files.push((top.to_string(), dir.join(top)));
            }
            files
        }
        Env::Java => vec![(
            "hkube-runtime.jar".to_string(),
            runtimes.join("java/build/hkube-runtime.jar"),
        )],
        // A module needs no runtime: the image's sidecar runs it with wasmtime.
        Env::Wasm => Vec::new(),
    })
}

/// Folders never shipped: version control and interpreter caches.
const SKIPPED: &[&str] = &[".git", "__pycache__", ".hkubeignore"];

/// Every regular file under `dir`, as (`a/b.py`, path), sorted so the digest is stable.
/// Symbolic links are followed only when they stay inside `dir` (unpacking made sure).
pub fn walk(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), dir.to_path_buf())];
    while let Some((prefix, folder)) = stack.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|source| Error::Io {
            what: "listing",
            path: folder.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                what: "listing",
                path: folder.clone(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if SKIPPED.contains(&name.as_str()) {
                continue;
            }
            let path = entry.path();
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let meta = std::fs::metadata(&path).map_err(|source| Error::Io {
                what: "reading",
                path: path.clone(),
                source,
            })?;
            if meta.is_dir() {
                stack.push((relative, path));
            } else if meta.is_file() {
                out.push((relative, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn digest(entries: &[Entry], build_args: &[(String, String)]) -> Result<String, Error> {
    let mut hasher = Sha256::new();
    for entry in entries {
        hasher.update(entry.path.as_bytes());
        hasher.update([0]);
        hasher.update(entry.mode.to_le_bytes());
        let content = match &entry.source {
            Source::Bytes(bytes) => Sha256::digest(bytes).into(),
            Source::File(path) => file_digest(path)?,
        };
        hasher.update(content);
    }
    for (key, value) in build_args {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    Ok(hex(&hasher.finalize()))
}

type DigestCache = Mutex<HashMap<(PathBuf, u64, SystemTime), [u8; 32]>>;

/// A file's SHA-256, remembered by path, size and modification time: the sidecar binary and
/// the runtimes are in every context and should be read once per process, not per apply.
fn file_digest(path: &Path) -> Result<[u8; 32], Error> {
    static CACHE: OnceLock<DigestCache> = OnceLock::new();
    let failed = |source| Error::Io {
        what: "reading",
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(failed)?;
    let key = (
        path.to_path_buf(),
        meta.len(),
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    );
    let cache = CACHE.get_or_init(Default::default);
    if let Some(known) = cache.lock().ok().and_then(|c| c.get(&key).copied()) {
        return Ok(known);
    }
    let mut file = std::fs::File::open(path).map_err(failed)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = file.read(&mut buffer).map_err(failed)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    let digest: [u8; 32] = hasher.finalize().into();
    if let Ok(mut cache) = cache.lock() {
        cache.insert(key, digest);
    }
    Ok(digest)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_sidecar_is_stripped_once_or_used_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("hkube-wrapper");
        std::fs::copy(std::env::current_exe().unwrap(), &binary).unwrap();
        let cache = dir.path().join("cache");
        let stripped = stripped_sidecar(&binary, &cache);
        assert_ne!(stripped, binary, "objcopy made a stripped copy");
        assert!(
            std::fs::metadata(&stripped).unwrap().len()
                <= std::fs::metadata(&binary).unwrap().len()
        );
        assert_eq!(stripped_sidecar(&binary, &cache), stripped, "made once");
        // Not an executable objcopy can read: used as it is.
        let text = dir.path().join("not-elf");
        std::fs::write(&text, "#!/bin/sh\n").unwrap();
        assert_eq!(stripped_sidecar(&text, &cache), text);
    }
}
