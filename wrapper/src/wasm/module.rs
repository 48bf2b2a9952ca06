//! Compiling modules: one wasmtime engine per executor, its on-disk cache, and the linker that
//! gives a module WASI preview 1.
//!
//! A module is compiled once per version and its machine code kept under `<cache_dir>` in a
//! file named by the SHA-256 of the module's bytes and a hash of wasmtime's version and
//! compiler settings, so a restart or a second server over the same state folder loads it
//! instead of compiling again. Loading maps that file (`Module::deserialize_file`): no copy,
//! no decompression, a fraction of a millisecond. A new version's code is written to the
//! cache by a thread of its own after it compiled, so its first task does not wait for the
//! disk. The cache is swept when a runtime opens it ([`super::cache`]: partial files of
//! killed writes, code unused for 30 days or beyond 1 GiB). What a task then pays is an instantiation of an [`InstancePre`]: imports resolved and
//! types checked once, at registration.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, Linker, Module, OptLevel,
    PoolingAllocationConfig,
};
use wasmtime_wasi::p1::WasiP1Ctx;

use super::abi::Ready;
use super::task::State;

/// How often the epoch ticks: a stopped or timed-out task traps within about this long.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The wasmtime engine and the WASI linker every module of an executor shares.
#[derive(Clone)]
pub struct Runtime {
    pub engine: Engine,
    linker: std::sync::Arc<Linker<State>>,
    /// Where compiled modules are kept; `None`: compiled at each start.
    cache_dir: Option<PathBuf>,
}

/// When a newly compiled module's code reaches the cache.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Keep {
    /// Before `prepare` returns (a validation at apply: the process may end right after).
    Now,
    /// On a thread of its own: the first task does not wait for the disk.
    Behind,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("wasm::Runtime")
    }
}

impl Runtime {
    /// An engine with epoch interruption (tasks can be stopped and timed out) and, with
    /// `cache_dir`, compiled modules kept there (swept at each open: [`super::cache`]).
    pub fn new(cache_dir: Option<&Path>) -> Result<Runtime, String> {
        if let Some(dir) = cache_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create the module cache {}: {e}", dir.display()))?;
            // Partial files of killed writes, and code unused for long, go (cache::Policy).
            super::cache::sweep(dir, &super::cache::Policy::default());
        }
        let engine = engine()?;
        let mut linker: Linker<State> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state: &mut State| -> &mut WasiP1Ctx {
            &mut state.wasi
        })
        .map_err(|e| format!("cannot link WASI preview 1: {e}"))?;
        super::stdio::add_to_linker(&mut linker)
            .map_err(|e| format!("cannot link the task's stdio: {e}"))?;
        super::function::add_to_linker(&mut linker)
            .map_err(|e| format!("cannot link hkube.output: {e}"))?;
        let runtime = Runtime {
            engine,
            linker: std::sync::Arc::new(linker),
            cache_dir: cache_dir.map(Path::to_path_buf),
        };
        runtime.start_ticker();
        Ok(runtime)
    }

    /// Compiles (or loads from the cache) the module in `bytes` and resolves its imports.
    /// The error completes a sentence whose subject is the module ("the module {path} …"):
    /// `does not compile (wasmtime): …` with wasmtime's own message, `cannot run in hkube: …`
    /// (no ABI of docs/wasm.md), or `imports what hkube does not give: …`.
    pub fn prepare(&self, bytes: &[u8]) -> Result<Ready, String> {
        self.prepare_keeping(bytes, Keep::Behind)
    }

    fn prepare_keeping(&self, bytes: &[u8], keep: Keep) -> Result<Ready, String> {
        let module = self
            .module(bytes, keep)
            .map_err(|e| format!("does not compile (wasmtime): {e}"))?;
        // Its ABI first: a module that is neither a command nor of the function ABI is told
        // what it lacks, not which import failed to resolve.
        super::abi::check(&module).map_err(|e| format!("cannot run in hkube: {e}"))?;
        let pre = self.linker.instantiate_pre(&module).map_err(|e| {
            format!(
                "imports what hkube does not give: {e:#} (a wasm algorithm may import only WASI \
                 preview 1, wasi_snapshot_preview1, and, with hkube's function ABI, hkube.output)"
            )
        })?;
        Ready::of(pre).map_err(|e| format!("cannot run in hkube: {e}"))
    }

    /// The module's code from the cache, else compiled (and then kept in the cache).
    fn module(&self, bytes: &[u8], keep: Keep) -> Result<Module, String> {
        let Some(dir) = &self.cache_dir else {
            return Module::new(&self.engine, bytes).map_err(|e| format!("{e:#}"));
        };
        let path = dir.join(cache_name(&self.engine, bytes));
        if path.is_file() {
            // SAFETY: the file is one this function wrote from `Module::serialize` (named by
            // the module's digest and this engine's settings, renamed into place once whole),
            // in hkube's own state folder, which is as trusted as hkube's binary: wasmtime's
            // own cache loads its files the same way. wasmtime still checks the header (its
            // version, the engine's settings); a file it refuses is compiled again, below.
            #[allow(unsafe_code)]
            let loaded = unsafe { Module::deserialize_file(&self.engine, &path) };
            if let Ok(module) = loaded {
                // Used now: the sweep keeps recently used code (cache::Policy).
                super::cache::touch(&path);
                return Ok(module);
            }
        }
        let module = Module::new(&self.engine, bytes).map_err(|e| format!("{e:#}"))?;
        let (kept, to) = (module.clone(), path);
        let write = move || {
            // A cache that cannot be written costs a compile at the next start, nothing more.
            if let Ok(code) = kept.serialize() {
                let _ = write_whole(&to, &code);
            }
        };
        match keep {
            Keep::Now => write(),
            Keep::Behind => {
                let _ = std::thread::Builder::new()
                    .name("hkube-wasm-cache".into())
                    .spawn(write);
            }
        }
        Ok(module)
    }

    /// One thread advances the engine's epoch while the engine lives: the running tasks'
    /// deadline callbacks run at each tick and stop the tasks that were cancelled or timed out.
    fn start_ticker(&self) {
        let weak = self.engine.weak();
        let _ = std::thread::Builder::new()
            .name("hkube-wasm-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            });
    }
}

/// Instances that may live at once per engine: a task holds one while it runs, so this bounds
/// the wasm workers (and executor threads) running at the same time; a task beyond it fails
/// with wasmtime's "concurrent instance limit" message. Slots are address space reserved up
/// front (4 GiB each, never committed until used), not memory.
const INSTANCE_SLOTS: u32 = 1000;

/// A linear memory's first bytes kept mapped between the tasks that reuse its slot: only the
/// pages a task dirtied are reset (PAGEMAP_SCAN where the kernel has it, 6.7 and later), so
/// the next task neither faults them in nor zeroes fresh pages.
const KEEP_RESIDENT: usize = 4 << 20;

/// Slots given back before the pool's bookkeeping runs once for all of them: a task's store
/// is dropped at its end, and doing it one slot at a time (the default) took about 3 % of a
/// no-op task on one thread (`decommit_batch_size`). Slots waiting in a batch are not reused
/// until it runs; with INSTANCE_SLOTS slots that costs nothing.
const DECOMMIT_BATCH: usize = 32;

fn engine() -> Result<Engine, String> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    // Cranelift without its mid-end optimisations: a new module version's first task waits
    // for its compile, which this makes about a quarter shorter (docs/wasm.md). A module is
    // already optimised by the compiler that made it (LLVM for Rust, C, Go's TinyGo), so
    // Cranelift's own passes add little to its speed.
    config.cranelift_opt_level(OptLevel::None);
    // Instances come from a pool of slots reused task after task: a task pays no mmap and
    // munmap of its memory (with the TLB shootdowns across every thread that come with them)
    // and no page faults for the pages it touches again. Measured: docs/wasm.md.
    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_core_instances(INSTANCE_SLOTS)
        .total_memories(INSTANCE_SLOTS)
        .total_tables(INSTANCE_SLOTS)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto)
        .decommit_batch_size(DECOMMIT_BATCH);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    Engine::new(&config).map_err(|e| format!("cannot start wasmtime: {e:#}"))
}

/// The cache file of `bytes` compiled by `engine`: the module's SHA-256, then a hash of what
/// makes compiled code usable by an engine (wasmtime's version, target, compiler settings).
/// The second part is std's hasher, stable within one hkube build: another build at worst
/// misses the cache and compiles once.
fn cache_name(engine: &Engine, bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let mut settings = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut settings);
    let mut name = String::with_capacity(64 + 24);
    for byte in digest {
        name.push_str(&format!("{byte:02x}"));
    }
    name.push_str(&format!("-{:016x}.cwasm", settings.finish()));
    name
}

/// Writes `bytes` to `path` whole or not at all: a reader never maps a half-written file.
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // Unique to this write: two executors of one process may keep the same module at once.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nth = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let partial = super::cache::partial_name(path, std::process::id(), nth);
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })
}

/// Whether `bytes` compile as a wasm algorithm (a WASI command): `Err` holds wasmtime's
/// message. With `cache_dir`, the compiled code is kept, so the first task after an apply
/// does not compile again.
pub fn validate(bytes: &[u8], cache_dir: Option<&Path>) -> Result<(), String> {
    Runtime::new(cache_dir)?
        .prepare_keeping(bytes, Keep::Now)
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest WASI command: an exported `_start` that returns (as text: wasmtime's
    /// `wat` feature reads it).
    const COMMAND: &str = r#"(module (func (export "_start")) (memory (export "memory") 1))"#;

    fn cached(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        files
    }

    #[test]
    fn a_module_is_compiled_once_and_then_loaded_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = COMMAND.as_bytes().to_vec();
        validate(&bytes, Some(dir.path())).unwrap();
        let files = cached(dir.path());
        assert_eq!(files.len(), 1, "{files:?}");
        let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.ends_with(".cwasm") && name.len() == 64 + 1 + 16 + 6,
            "{name}"
        );
        use std::os::unix::fs::MetadataExt;
        let written = std::fs::metadata(&files[0]).unwrap();
        // Made to look unused for a day: a load marks it used.
        let day_ago = std::time::SystemTime::now() - Duration::from_secs(24 * 3600);
        std::fs::File::options()
            .append(true)
            .open(&files[0])
            .unwrap()
            .set_modified(day_ago)
            .unwrap();

        // A second runtime (a restart) loads the file rather than compiling and writing it
        // (a write renames a new file into place: another inode).
        let runtime = Runtime::new(Some(dir.path())).unwrap();
        runtime.prepare_keeping(&bytes, Keep::Now).unwrap();
        assert_eq!(cached(dir.path()), files);
        let now = std::fs::metadata(&files[0]).unwrap();
        assert_eq!(
            now.ino(),
            written.ino(),
            "the cached code was written again"
        );
        assert!(
            now.modified().unwrap() > day_ago,
            "the load did not mark it used"
        );

        // Another version of the module is another file.
        let other = COMMAND.replace("memory\") 1", "memory\") 2").into_bytes();
        runtime.prepare_keeping(&other, Keep::Now).unwrap();
        assert_eq!(cached(dir.path()).len(), 2);
    }

    #[test]
    fn opening_the_cache_removes_partial_files_of_killed_writes_and_long_unused_code() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = COMMAND.as_bytes().to_vec();
        validate(&bytes, Some(dir.path())).unwrap();
        let code = cached(dir.path()).remove(0);
        // A write killed midway (its process is gone), and another version's code unused
        // for 60 days.
        let killed = super::super::cache::partial_name(&code, u32::MAX, 0);
        std::fs::write(&killed, b"half a module").unwrap();
        let unused = dir.path().join(format!("{}.cwasm", "0".repeat(64)));
        std::fs::write(&unused, b"old code").unwrap();
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(60 * 24 * 3600);
        std::fs::File::options()
            .append(true)
            .open(&unused)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        Runtime::new(Some(dir.path())).unwrap();
        assert_eq!(cached(dir.path()), vec![code]);
    }

    #[test]
    fn a_damaged_cache_file_is_compiled_again_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = COMMAND.as_bytes().to_vec();
        validate(&bytes, Some(dir.path())).unwrap();
        let file = cached(dir.path()).remove(0);
        std::fs::write(&file, b"not wasmtime's code").unwrap();
        let runtime = Runtime::new(Some(dir.path())).unwrap();
        runtime.prepare_keeping(&bytes, Keep::Now).unwrap();
        let code = std::fs::read(&file).unwrap();
        assert!(code.len() > 100, "the damaged file was not replaced");
        // And the replacement loads.
        Runtime::new(Some(dir.path()))
            .unwrap()
            .prepare_keeping(&bytes, Keep::Now)
            .unwrap();
    }

    #[test]
    fn a_module_that_is_not_a_command_is_refused() {
        let bytes = b"(module)".to_vec();
        let error = validate(&bytes, None).unwrap_err();
        assert!(error.contains("exports no _start"), "{error}");
    }
}
