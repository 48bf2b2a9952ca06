//! Compiles hkube's language runtimes (`runtimes/`) into the library, so that a copied or
//! `cargo install`ed `hkube` runs Python, JavaScript and Java algorithms with no checkout
//! beside it (`executor::local::embedded` writes them out on first use).
//!
//! Writes `$OUT_DIR/runtimes.rs`: `DIGEST` (SHA-256 of every embedded path and its bytes) and
//! `FILES` (path relative to `runtimes/`, `include_bytes!` of the file).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What the runtimes need at run time, relative to `runtimes/`: the same files the image
/// builder copies (`builder::context::runtime_files`), plus the Java runtime's sources and
/// build script (the jar is built with javac on first use). Tests, READMEs and build outputs
/// stay out.
const EMBEDDED: &[&str] = &[
    "python/hkube_runtime",
    "javascript/bin",
    "javascript/lib",
    "javascript/index.js",
    "javascript/package.json",
    "java/build.sh",
    "java/src/main",
];

/// Never embedded: interpreter caches.
fn skipped(name: &str) -> bool {
    name == "__pycache__" || name.ends_with(".pyc") || name.starts_with('.')
}

fn main() {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let runtimes = Path::new(&manifest).join("../runtimes");
    let mut files = Vec::new();
    for entry in EMBEDDED {
        let path = runtimes.join(entry);
        // A directory here is scanned whole by cargo: a file added under it is picked up too.
        // (Python's own tests leave a __pycache__ in python/hkube_runtime: one extra run.)
        println!("cargo:rerun-if-changed={}", path.display());
        collect(&path, entry, &mut files);
    }
    files.sort();
    let mut hasher = Sha256::new();
    let mut listing = String::new();
    for (relative, path) in &files {
        let bytes = std::fs::read(path)
            .unwrap_or_else(|e| panic!("reading the runtime file {}: {e}", path.display()));
        hasher.update(relative.as_bytes());
        hasher.update([0]);
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
        let absolute = path
            .canonicalize()
            .unwrap_or_else(|e| panic!("resolving {}: {e}", path.display()));
        let _ = writeln!(
            listing,
            "    ({relative:?}, include_bytes!({:?})),",
            absolute.display().to_string()
        );
    }
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let code = format!(
        "/// SHA-256 of the embedded runtimes: the folder they are written to is named by it.\n\
         pub const DIGEST: &str = {digest:?};\n\
         /// Each runtime file: its path under `runtimes/` and its bytes.\n\
         pub const FILES: &[(&str, &[u8])] = &[\n{listing}];\n"
    );
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("runtimes.rs"), code).expect("writing runtimes.rs");
}

/// `path` (a file, or a folder walked in full) as (`relative`, path) pairs.
fn collect(path: &Path, relative: &str, files: &mut Vec<(String, PathBuf)>) {
    if path.is_file() {
        files.push((relative.to_string(), path.to_path_buf()));
        return;
    }
    let entries = std::fs::read_dir(path)
        .unwrap_or_else(|e| panic!("reading the runtimes folder {}: {e}", path.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let name = entry.file_name().to_string_lossy().into_owned();
        if skipped(&name) {
            continue;
        }
        collect(&entry.path(), &format!("{relative}/{name}"), files);
    }
}
