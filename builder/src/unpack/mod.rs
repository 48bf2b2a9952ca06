//! Safe unpacking of uploaded code (tar.gz, tar or zip) into a fresh build folder.
//!
//! An upload is untrusted: every entry name is checked before anything is written (no `..`,
//! no absolute paths), links may only point inside the folder, device files and other special
//! entries are refused, and the total size, the entry count and the compression ratio are
//! capped while bytes are written (header claims are not trusted). Symbolic links are created
//! last, so no write ever goes through one. On any refusal the build folder is removed whole
//! and the error names the entry.

pub mod policy;

use std::fs::{self, File};
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

use policy::Budget;
pub use policy::Limits;

/// Why an archive could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("reading {archive}: {source}")]
    Open { archive: PathBuf, source: io::Error },
    #[error("{0} is not a tar.gz, tar or zip archive")]
    UnknownFormat(PathBuf),
    #[error("the build folder {0} exists and is not empty")]
    NotEmpty(PathBuf),
    #[error("entry `{entry}` was refused: {reason}")]
    Refused { entry: String, reason: String },
    #[error("entry `{entry}`: {source}")]
    Entry { entry: String, source: io::Error },
    #[error("the archive is damaged: {0}")]
    Damaged(String),
}

/// What an archive unpacked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: u64,
    pub bytes: u64,
}

/// Unpacks `archive` into `dest`, which must not exist or be empty. On error `dest` is removed.
pub fn unpack(archive: &Path, dest: &Path, limits: Limits) -> Result<Unpacked, UnpackError> {
    let open = |source| UnpackError::Open {
        archive: archive.to_path_buf(),
        source,
    };
    let mut file = File::open(archive).map_err(open)?;
    let size = file.metadata().map_err(open)?.len();
    let mut head = [0u8; 512];
    let read = read_up_to(&mut file, &mut head).map_err(open)?;
    file.rewind().map_err(open)?;
    let format = detect(&head[..read]).ok_or_else(|| UnpackError::UnknownFormat(archive.into()))?;

    if fs::read_dir(dest).is_ok_and(|mut d| d.next().is_some()) {
        return Err(UnpackError::NotEmpty(dest.into()));
    }
    fs::create_dir_all(dest).map_err(|source| UnpackError::Entry {
        entry: dest.display().to_string(),
        source,
    })?;
    let mut writer = Writer::new(dest, Budget::new(limits, size));
    let result = match format {
        Format::TarGz => read_tar(flate2::read::GzDecoder::new(file), &mut writer),
        Format::Tar => read_tar(file, &mut writer),
        Format::Zip => read_zip(file, &mut writer),
    }
    .and_then(|()| writer.finish());
    match result {
        Ok(unpacked) => Ok(unpacked),
        Err(error) => {
            let _ = fs::remove_dir_all(dest);
            Err(error)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    TarGz,
    Tar,
    Zip,
}

/// The format from the first bytes, never from the file name: uploads are often misnamed.
fn detect(head: &[u8]) -> Option<Format> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Format::TarGz)
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Some(Format::Zip)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Some(Format::Tar)
    } else {
        None
    }
}

fn read_up_to(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn read_tar(reader: impl Read, writer: &mut Writer) -> Result<(), UnpackError> {
    use tar::EntryType;
    let damaged = |e: io::Error| UnpackError::Damaged(e.to_string());
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        let name = utf8(&entry.path_bytes())?;
        let kind = entry.header().entry_type();
        match kind {
            EntryType::XGlobalHeader => continue,
            EntryType::Directory => writer.directory(&name)?,
            EntryType::Regular | EntryType::Continuous => {
                let executable = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
                writer.file(&name, &mut entry, executable)?;
            }
            EntryType::Symlink | EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| utf8(&t))
                    .transpose()?
                    .unwrap_or_default();
                if kind == EntryType::Symlink {
                    writer.symlink(&name, &target)?;
                } else {
                    writer.hardlink(&name, &target)?;
                }
            }
            other => {
                return Err(refused(
                    &name,
                    format!(
                    "it is a {other:?} entry (device files, fifos and the like are not accepted)"
                ),
                ))
            }
        }
    }
    Ok(())
}

fn read_zip(reader: File, writer: &mut Writer) -> Result<(), UnpackError> {
    let damaged = |e: zip::result::ZipError| UnpackError::Damaged(e.to_string());
    let mut archive = zip::ZipArchive::new(reader).map_err(damaged)?;
    for index in 0..archive.len() {
        let mut file = archive.by_index(index).map_err(damaged)?;
        let name = file.name().to_string();
        let mode = file.unix_mode().unwrap_or(0);
        if file.is_symlink() {
            let mut target = String::new();
            file.by_ref()
                .take(4096)
                .read_to_string(&mut target)
                .map_err(|source| entry_error(&name, source))?;
            writer.symlink(&name, &target)?;
        } else if file.is_dir() {
            writer.directory(&name)?;
        } else if matches!(mode & 0o170000, 0 | 0o100000) {
            writer.file(&name, &mut file, mode & 0o111 != 0)?;
        } else {
            return Err(refused(
                &name,
                format!(
                    "its file type {:o} is not a file, folder or link",
                    mode & 0o170000
                ),
            ));
        }
    }
    Ok(())
}

fn utf8(bytes: &[u8]) -> Result<String, UnpackError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        refused(
            &String::from_utf8_lossy(bytes),
            "its name is not UTF-8".into(),
        )
    })
}

fn refused(entry: &str, reason: String) -> UnpackError {
    UnpackError::Refused {
        entry: entry.to_string(),
        reason,
    }
}

fn entry_error(entry: &str, source: io::Error) -> UnpackError {
    UnpackError::Entry {
        entry: entry.to_string(),
        source,
    }
}

/// Writes checked entries under the root. Until `finish`, the tree holds no symbolic link, so
/// a path under the root cannot lead out of it.
struct Writer {
    root: PathBuf,
    budget: Budget,
    /// (link path, target as written, entry name), created by `finish`.
    links: Vec<(PathBuf, String, String)>,
}

impl Writer {
    fn new(root: &Path, budget: Budget) -> Self {
        Self {
            root: root.to_path_buf(),
            budget,
            links: Vec::new(),
        }
    }

    fn checked(&mut self, name: &str) -> Result<PathBuf, UnpackError> {
        self.budget
            .entry()
            .map_err(|reason| refused(name, reason))?;
        policy::entry_path(name).map_err(|reason| refused(name, reason))
    }

    fn directory(&mut self, name: &str) -> Result<(), UnpackError> {
        // `tar czf code.tgz -C dir .` starts with `./`: the build folder itself.
        if name.split('/').all(|part| part.is_empty() || part == ".") && !name.is_empty() {
            return self.budget.entry().map_err(|reason| refused(name, reason));
        }
        let path = self.checked(name)?;
        fs::create_dir_all(self.root.join(path)).map_err(|e| entry_error(name, e))
    }

    fn file(
        &mut self,
        name: &str,
        data: &mut dyn Read,
        executable: bool,
    ) -> Result<(), UnpackError> {
        let path = self.checked(name)?;
        self.write(name, &path, data, executable)
    }

    /// A hard link becomes a copy of a file unpacked before it: the target must be a regular
    /// file inside the folder, and its bytes count against the limits again.
    fn hardlink(&mut self, name: &str, target: &str) -> Result<(), UnpackError> {
        let path = self.checked(name)?;
        let source = policy::entry_path(target)
            .map_err(|reason| refused(name, format!("its link target `{target}`: {reason}")))?;
        let source = self.root.join(source);
        if !fs::symlink_metadata(&source).is_ok_and(|m| m.is_file()) {
            return Err(refused(
                name,
                format!("it is a hard link to `{target}`, which is not a file unpacked before it"),
            ));
        }
        let mut input = File::open(&source).map_err(|e| entry_error(name, e))?;
        let executable = is_executable(&source);
        self.write(name, &path, &mut input, executable)
    }

    fn write(
        &mut self,
        name: &str,
        relative: &Path,
        data: &mut dyn Read,
        executable: bool,
    ) -> Result<(), UnpackError> {
        let path = self.root.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| entry_error(name, e))?;
        }
        let mut out = File::create(&path).map_err(|e| entry_error(name, e))?;
        // One byte past the room left, so crossing a limit is seen without writing much more.
        let room = self.budget.room().saturating_add(1);
        let copied = io::copy(&mut data.take(room), &mut out).map_err(|e| entry_error(name, e))?;
        self.budget
            .wrote(copied)
            .map_err(|reason| refused(name, reason))?;
        set_mode(&path, executable).map_err(|e| entry_error(name, e))
    }

    fn symlink(&mut self, name: &str, target: &str) -> Result<(), UnpackError> {
        let path = self.checked(name)?;
        policy::link_target(&path, target).map_err(|reason| refused(name, reason))?;
        self.links
            .push((path, target.to_string(), name.to_string()));
        Ok(())
    }

    fn finish(mut self) -> Result<Unpacked, UnpackError> {
        let links = std::mem::take(&mut self.links);
        for (path, target, name) in &links {
            // A link's own folder must not run through a link made just before it.
            let mut walked = self.root.clone();
            for part in path.parent().into_iter().flat_map(|p| p.iter()) {
                walked.push(part);
                if fs::symlink_metadata(&walked).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(refused(name, "its folder is itself a link".into()));
                }
            }
            let full = self.root.join(path);
            if let Some(parent) = full.parent() {
                fs::create_dir_all(parent).map_err(|e| entry_error(name, e))?;
            }
            make_symlink(target, &full).map_err(|e| entry_error(name, e))?;
        }
        // Each target was inside when read from its own folder; a chain of links can still
        // lead out (`a -> d/e/..` with `d/e -> ..`), so every link is resolved for real.
        let root = fs::canonicalize(&self.root).map_err(|e| entry_error(".", e))?;
        for (path, _, name) in &links {
            if let Ok(resolved) = fs::canonicalize(self.root.join(path)) {
                if !resolved.starts_with(&root) {
                    return Err(refused(
                        name,
                        "through other links it leads outside the build folder".into(),
                    ));
                }
            }
        }
        Ok(Unpacked {
            entries: self.budget.entries(),
            bytes: self.budget.written(),
        })
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, executable: bool) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if executable { 0o755 } else { 0o644 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _executable: bool) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(_path: &Path) -> bool {
    false
}

#[cfg(unix)]
fn make_symlink(target: &str, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn make_symlink(_target: &str, _link: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "symbolic links are only unpacked on Unix",
    ))
}
