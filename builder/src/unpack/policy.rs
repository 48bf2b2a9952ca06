//! Pure rules for what an archive may contain: entry names, link targets and the size budget.
//! Nothing here touches the disk, so every rule is tested on its own.

use std::path::{Component, Path, PathBuf};

/// Caps on what one archive may unpack to. The defaults fit any reasonable algorithm's source
/// and stop a zip bomb long before it fills a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes written, all files together.
    pub max_bytes: u64,
    /// Entries of any kind (files, folders, links).
    pub max_entries: u64,
    /// Bytes written per byte of archive; only checked past `ratio_floor` bytes, so a tiny
    /// archive of a few highly compressible files is not refused.
    pub max_ratio: u64,
    pub ratio_floor: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 30,
            max_entries: 100_000,
            max_ratio: 100,
            ratio_floor: 16 << 20,
        }
    }
}

/// Why an entry name or link target is refused, in words for the user.
pub type Refusal = String;

/// The relative path an entry name stands for, or why it may not be written. `./` prefixes
/// and trailing slashes are accepted; absolute paths, `..`, drive letters and NUL are not.
pub fn entry_path(name: &str) -> Result<PathBuf, Refusal> {
    if name.contains('\0') {
        return Err("its name contains a NUL byte".into());
    }
    if name.contains('\\') {
        return Err("its name contains a backslash (a Windows path?)".into());
    }
    let mut path = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err("its name contains `..`, which would leave the build folder".into())
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("its name is an absolute path".into())
            }
        }
    }
    if path.as_os_str().is_empty() {
        return Err("its name is empty".into());
    }
    Ok(path)
}

/// Checks a symbolic link at `link` (relative to the build folder) pointing at `target`: the
/// target must be relative and, read from the link's folder, stay inside the build folder.
/// Returns the target's path relative to the build folder.
pub fn link_target(link: &Path, target: &str) -> Result<PathBuf, Refusal> {
    if target.is_empty() || target.contains('\0') {
        return Err("its link target is empty or contains a NUL byte".into());
    }
    let mut resolved: Vec<&std::ffi::OsStr> = link
        .parent()
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    for component in Path::new(target).components() {
        match component {
            Component::Normal(part) => resolved.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if resolved.pop().is_none() {
                    return Err(format!("it links to `{target}`, outside the build folder"));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("it links to the absolute path `{target}`"))
            }
        }
    }
    Ok(resolved.iter().collect())
}

/// Counts what has been unpacked so far against the limits.
#[derive(Debug)]
pub struct Budget {
    limits: Limits,
    archive_bytes: u64,
    written: u64,
    entries: u64,
}

impl Budget {
    pub fn new(limits: Limits, archive_bytes: u64) -> Self {
        Self {
            limits,
            archive_bytes: archive_bytes.max(1),
            written: 0,
            entries: 0,
        }
    }

    pub fn entry(&mut self) -> Result<(), Refusal> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(format!(
                "the archive holds more than {} entries",
                self.limits.max_entries
            ));
        }
        Ok(())
    }

    /// How many more bytes may be written before a limit is crossed.
    pub fn room(&self) -> u64 {
        let by_size = self.limits.max_bytes.saturating_sub(self.written);
        let by_ratio = self
            .limits
            .ratio_floor
            .max(self.archive_bytes.saturating_mul(self.limits.max_ratio))
            .saturating_sub(self.written);
        by_size.min(by_ratio)
    }

    /// Records `bytes` written; refuses once a limit is crossed.
    pub fn wrote(&mut self, bytes: u64) -> Result<(), Refusal> {
        self.written += bytes;
        if self.written > self.limits.max_bytes {
            return Err(format!(
                "unpacking it would write more than {} bytes in all",
                self.limits.max_bytes
            ));
        }
        if self.written > self.limits.ratio_floor
            && self.written > self.archive_bytes.saturating_mul(self.limits.max_ratio)
        {
            return Err(format!(
                "it expands more than {}-fold (a compression bomb?)",
                self.limits.max_ratio
            ));
        }
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        assert_eq!(entry_path("a/b.py").unwrap(), PathBuf::from("a/b.py"));
        assert_eq!(entry_path("./a/./b/").unwrap(), PathBuf::from("a/b"));
        for bad in [
            "../x",
            "a/../../x",
            "a/..",
            "/etc/passwd",
            "",
            ".",
            "a\\..\\b",
            "a\0b",
        ] {
            assert!(entry_path(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn link_targets() {
        let link = Path::new("a/b/link");
        assert_eq!(link_target(link, "../c").unwrap(), PathBuf::from("a/c"));
        assert_eq!(link_target(link, "../../c").unwrap(), PathBuf::from("c"));
        assert!(link_target(link, "../../../c").is_err());
        assert!(link_target(link, "/etc/passwd").is_err());
        assert!(link_target(Path::new("top"), "..").is_err());
        assert_eq!(link_target(Path::new("top"), ".").unwrap(), PathBuf::new());
    }

    #[test]
    fn budget() {
        let limits = Limits {
            max_bytes: 1000,
            max_entries: 2,
            max_ratio: 10,
            ratio_floor: 100,
        };
        let mut budget = Budget::new(limits, 20);
        assert!(budget.entry().is_ok() && budget.entry().is_ok());
        assert!(budget.entry().is_err());
        // 20 archive bytes × 10 = 200 allowed.
        assert_eq!(budget.room(), 200);
        assert!(budget.wrote(200).is_ok());
        assert!(budget.wrote(1).unwrap_err().contains("10-fold"));
        let mut budget = Budget::new(limits, 1_000_000);
        assert!(budget.wrote(1001).unwrap_err().contains("1000 bytes"));
    }
}
