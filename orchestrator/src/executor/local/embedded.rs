//! hkube's language runtimes as compiled into the binary (see `orchestrator/build.rs`), written
//! out on first use so the interpreters can load them: `<state dir>/runtimes/<digest>/`.
//!
//! The folder is named by the runtimes' digest, so an upgraded `hkube` writes its own copy
//! and never runs an older one's files. It is written under a temporary name and renamed into
//! place, so a reader sees all of it or none of it, and two processes unpacking at once both
//! end up with one complete folder. This module must never hand out a folder that lacks a
//! file: one that does (a partial cleanup) is written again.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

mod generated {
    include!(concat!(env!("OUT_DIR"), "/runtimes.rs"));
}

pub use generated::{DIGEST, FILES};

/// The folder holding the runtimes for `state_dir`, written there first when missing.
pub fn unpack(state_dir: &Path) -> Result<PathBuf, String> {
    let parent = state_dir.join("runtimes");
    let dir = parent.join(&DIGEST[..16]);
    if complete(&dir) {
        return Ok(dir);
    }
    std::fs::create_dir_all(&parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let temporary = parent.join(format!(".unpacking-{}-{nanos}", std::process::id()));
    let placed = write_all(&temporary).and_then(|()| {
        if complete(&dir) {
            // Another process finished first: its folder is used, this one dropped.
            return Ok(());
        }
        if dir.exists() {
            // Incomplete: replaced whole rather than patched.
            std::fs::remove_dir_all(&dir)
                .map_err(|e| format!("removing {}: {e}", dir.display()))?;
        }
        std::fs::rename(&temporary, &dir)
            .map_err(|e| format!("moving {} to {}: {e}", temporary.display(), dir.display()))
    });
    // Gone after a successful rename; otherwise a leftover.
    let _ = std::fs::remove_dir_all(&temporary);
    match placed {
        Ok(()) => Ok(dir),
        // Another process may have won the rename in between.
        Err(_) if complete(&dir) => Ok(dir),
        Err(error) => Err(error),
    }
}

fn write_all(root: &Path) -> Result<(), String> {
    for (relative, bytes) in FILES {
        let path = root.join(relative);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)
                .map_err(|e| format!("creating {}: {e}", folder.display()))?;
        }
        std::fs::write(&path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Every embedded file is there with its size (a few dozen `stat`s).
fn complete(dir: &Path) -> bool {
    FILES.iter().all(|(relative, bytes)| {
        std::fs::metadata(dir.join(relative)).is_ok_and(|m| m.len() == bytes.len() as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_runtime_once_and_repairs_a_partial_copy() {
        let state = tempfile::tempdir().unwrap();
        let dir = unpack(state.path()).unwrap();
        assert_eq!(dir, state.path().join("runtimes").join(&DIGEST[..16]));
        for needed in [
            "python/hkube_runtime/__main__.py",
            "javascript/bin/hkube-runtime-node.js",
            "java/build.sh",
            "java/src/main/java/io/hkube/rs/Main.java",
        ] {
            assert!(dir.join(needed).is_file(), "{needed} is missing");
        }
        assert!(!FILES.iter().any(|(path, _)| path.contains("__pycache__")));
        let main = std::fs::read(dir.join("python/hkube_runtime/__main__.py")).unwrap();
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../runtimes/python/hkube_runtime/__main__.py");
        assert_eq!(main, std::fs::read(checkout).unwrap());

        // Kept as it is when complete (a marker file survives)...
        std::fs::write(dir.join("marker"), "x").unwrap();
        assert_eq!(unpack(state.path()).unwrap(), dir);
        assert!(dir.join("marker").is_file());
        // ...written again when a file is gone, and no temporary folder is left behind.
        std::fs::remove_file(dir.join("javascript/lib/ws.js")).unwrap();
        assert_eq!(unpack(state.path()).unwrap(), dir);
        assert!(dir.join("javascript/lib/ws.js").is_file());
        assert!(!dir.join("marker").exists());
        let names: Vec<_> = std::fs::read_dir(state.path().join("runtimes"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from(&DIGEST[..16])]);
    }

    #[test]
    fn concurrent_unpacks_agree() {
        let state = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let state = state.path().to_path_buf();
                std::thread::spawn(move || unpack(&state))
            })
            .collect();
        for thread in threads {
            let dir = thread.join().unwrap().unwrap();
            assert!(complete(&dir));
        }
    }
}
