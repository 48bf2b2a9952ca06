//! Compiling modules: the wasmtime engines of an executor, the on-disk cache of compiled code,
//! and the linker that gives a module WASI preview 1 and `hkube.output`.
//!
//! Two compilers, as a browser's JavaScript engine tiers its code:
//! - **Winch** (the baseline) compiles a module in one pass, several times faster than
//!   Cranelift (13 ms against 45–60 ms for the example's 89 KB on this machine), into slower
//!   code. A new version's first tasks run on it, so they do not wait for Cranelift.
//! - **Cranelift** (the optimizing tier) compiles the same module meanwhile, on a thread of
//!   its own; its code replaces the baseline's for the tasks that start after
//!   ([`Tiered::optimized`]), and is the code the cache keeps.
//!
//! A module is compiled once per version and Cranelift's code kept under `<cache_dir>` in a
//! file named by the SHA-256 of the module's bytes and a hash of wasmtime's version and
//! compiler settings, so a restart or a second server over the same state folder loads it
//! (optimised at once) instead of compiling again. Loading maps that file
//! (`Module::deserialize_file`): no copy, no decompression, a fraction of a millisecond. The
//! cache is swept when a runtime opens it ([`super::cache`]: partial files of killed writes,
//! code unused for 30 days or beyond 1 GiB). What a task then pays is an instantiation of an
//! [`InstancePre`]: imports resolved and types checked once, at registration.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, OptLevel,
    PoolingAllocationConfig, Strategy,
};
use wasmtime_wasi::p1::WasiP1Ctx;

use super::abi::Ready;
use super::task::State;

/// How often the epoch ticks: a stopped or timed-out task traps within about this long.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The engines and the WASI linkers every module of an executor shares.
#[derive(Clone)]
pub struct Runtime {
    /// Cranelift: the code tasks run once it is ready, and the code the cache keeps.
    optimizing: Tier,
    /// Winch: the code a new version's first tasks run while Cranelift compiles.
    baseline: Tier,
    /// Where compiled modules are kept; `None`: compiled at each start.
    cache_dir: Option<PathBuf>,
}

/// One compiler's engine, and the linker of that engine.
#[derive(Clone)]
struct Tier {
    engine: Engine,
    linker: Arc<Linker<State>>,
}

/// A module prepared at once, and, when that is the baseline's code, Cranelift's on its way.
pub struct Tiered {
    pub ready: Ready,
    /// Cranelift's code for the same module, compiling on a thread of its own (kept in the
    /// cache before it arrives); `None` when `ready` is it already (a cached module, or one
    /// Winch cannot compile).
    pub optimized: Option<std::thread::JoinHandle<Result<Ready, String>>>,
}

impl std::fmt::Debug for Tiered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tiered")
            .field("ready", &self.ready)
            .field("optimizing", &self.optimized.is_some())
            .finish()
    }
}

/// Why a module file could not be prepared ([`Runtime::prepare_file`]).
#[derive(Debug)]
pub enum FileError {
    /// The file could not be read.
    Read(std::io::Error),
    /// Its content is not a module hkube runs: the message completes a sentence whose subject
    /// is the module, as [`Runtime::prepare`]'s.
    Module(String),
}

/// How long a module file must have been left unchanged before the cache knows it by its
/// identity on disk ([`identity_name`]). File times come from a coarse clock (a few
/// milliseconds): a file written again within the same tick could keep its times and its
/// size. Two seconds after its last change, any later change shows in its times. Git's index
/// trusts file times on the same condition.
const SETTLED: Duration = Duration::from_secs(2);

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
    /// The engines, with epoch interruption (tasks can be stopped and timed out) and, with
    /// `cache_dir`, compiled modules kept there (swept at each open: [`super::cache`]).
    pub fn new(cache_dir: Option<&Path>) -> Result<Runtime, String> {
        if let Some(dir) = cache_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create the module cache {}: {e}", dir.display()))?;
            // Partial files of killed writes, and code unused for long, go (cache::Policy).
            super::cache::sweep(dir, &super::cache::Policy::default());
        }
        let runtime = Runtime {
            optimizing: Tier::new(Strategy::Cranelift)?,
            baseline: Tier::new(Strategy::Winch)?,
            cache_dir: cache_dir.map(Path::to_path_buf),
        };
        runtime.start_ticker();
        Ok(runtime)
    }

    /// Cranelift's code for the module in `bytes` (from the cache, else compiled, then kept
    /// there), its imports resolved. The error completes a sentence whose subject is the
    /// module ("the module {path} …"): `does not compile (wasmtime): …` with wasmtime's own
    /// message, `cannot run in hkube: …` (no ABI of docs/wasm.md), or `imports what hkube
    /// does not give: …`.
    pub fn prepare(&self, bytes: &[u8]) -> Result<Ready, String> {
        self.prepare_keeping(bytes, Keep::Behind)
    }

    /// The module in `bytes` ready at once: Cranelift's code from the cache, else Winch's,
    /// with Cranelift's compiling behind it ([`Tiered::optimized`]). Errors as [`prepare`]'s.
    ///
    /// [`prepare`]: Runtime::prepare
    pub fn prepare_tiered(&self, bytes: &[u8]) -> Result<Tiered, String> {
        if let Some(module) = self.cached(bytes) {
            let ready = self.optimizing.ready(&module)?;
            return Ok(Tiered {
                ready,
                optimized: None,
            });
        }
        let Ok(module) = Module::new(&self.baseline.engine, bytes) else {
            // What Winch does not compile (a proposal it lacks), Cranelift may: its message
            // is the one that counts.
            return Ok(Tiered {
                ready: self.prepare_keeping(bytes, Keep::Behind)?,
                optimized: None,
            });
        };
        let ready = self.baseline.ready(&module)?;
        let (runtime, bytes) = (self.clone(), bytes.to_vec());
        let optimized = std::thread::Builder::new()
            .name("hkube-wasm-optimize".into())
            .spawn(move || {
                // Tasks come first: Winch's code already runs them.
                lower_priority();
                runtime.prepare_keeping(&bytes, Keep::Now)
            })
            .map_err(|e| format!("cannot start a compile thread: {e}"))?;
        Ok(Tiered {
            ready,
            optimized: Some(optimized),
        })
    }

    /// The module in the file at `path`, ready at once, as [`Runtime::prepare_tiered`]. With a
    /// cache, a file it has seen before (the same path, device, inode, size, and modification
    /// and change times) is found by that identity: its code loads without the file being
    /// read or hashed, which took a third of a cached module's load. The identity is a
    /// symbolic link in the cache (`<sha256 of the identity>-<settings>.link`) to the code's
    /// file, made once the module file has been left unchanged for [`SETTLED`]; a module
    /// written again gets a new change time, hence a new identity, and is read and hashed.
    pub fn prepare_file(&self, path: &Path) -> Result<Tiered, FileError> {
        let link = self.cache_dir.as_ref().and_then(|dir| {
            let metadata = std::fs::metadata(path).ok()?;
            Some(dir.join(identity_name(&self.optimizing.engine, path, &metadata)?))
        });
        if let Some(module) = link.as_deref().and_then(|link| self.load(link)) {
            let ready = self.optimizing.ready(&module).map_err(FileError::Module)?;
            return Ok(Tiered {
                ready,
                optimized: None,
            });
        }
        // The identity and the content of one open file: a file replaced meanwhile is either
        // both or neither.
        let mut file = std::fs::File::open(path).map_err(FileError::Read)?;
        let metadata = file.metadata().map_err(FileError::Read)?;
        let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
        std::io::Read::read_to_end(&mut file, &mut bytes).map_err(FileError::Read)?;
        let tiered = self.prepare_tiered(&bytes).map_err(FileError::Module)?;
        if let Some(dir) = &self.cache_dir {
            if settled(&metadata) {
                let engine = &self.optimizing.engine;
                if let Some(link) = identity_name(engine, path, &metadata) {
                    // Relative: the cache folder may move. A new module's code is written
                    // behind (Cranelift's compile): until then the link leads nowhere and a
                    // load by it fails, as with no link. An existing link stays.
                    #[cfg(unix)]
                    let _ = std::os::unix::fs::symlink(cache_name(engine, &bytes), dir.join(link));
                }
            }
        }
        Ok(tiered)
    }

    /// Whether `ready` is Cranelift's code (else Winch's).
    pub fn is_optimized(&self, ready: &Ready) -> bool {
        Engine::same(ready.pre.module().engine(), &self.optimizing.engine)
    }

    fn prepare_keeping(&self, bytes: &[u8], keep: Keep) -> Result<Ready, String> {
        let module = self
            .module(bytes, keep)
            .map_err(|e| format!("does not compile (wasmtime): {e}"))?;
        self.optimizing.ready(&module)
    }

    /// Cranelift's code of `bytes` from the cache, if it is there and wasmtime takes it.
    fn cached(&self, bytes: &[u8]) -> Option<Module> {
        let path = self
            .cache_dir
            .as_ref()?
            .join(cache_name(&self.optimizing.engine, bytes));
        if !path.is_file() {
            return None;
        }
        self.load(&path)
    }

    /// The cached code at `path` (a code file, or a link to one), if wasmtime takes it.
    fn load(&self, path: &Path) -> Option<Module> {
        // SAFETY: the file is one this module wrote from `Module::serialize` (named by the
        // module's digest and this engine's settings, renamed into place once whole), in
        // hkube's own state folder, which is as trusted as hkube's binary: wasmtime's own
        // cache loads its files the same way. wasmtime still checks the header (its version,
        // the engine's settings); a file it refuses is compiled again.
        #[allow(unsafe_code)]
        let loaded = unsafe { Module::deserialize_file(&self.optimizing.engine, path) };
        let module = loaded.ok()?;
        // Used now: the sweep keeps recently used code (cache::Policy).
        super::cache::touch(path);
        Some(module)
    }

    /// Cranelift's code of `bytes`: from the cache, else compiled (and then kept there).
    fn module(&self, bytes: &[u8], keep: Keep) -> Result<Module, String> {
        if let Some(module) = self.cached(bytes) {
            return Ok(module);
        }
        let engine = &self.optimizing.engine;
        let module = Module::new(engine, bytes).map_err(|e| format!("{e:#}"))?;
        let Some(dir) = &self.cache_dir else {
            return Ok(module);
        };
        let (kept, to) = (module.clone(), dir.join(cache_name(engine, bytes)));
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

    /// One thread advances the engines' epochs while they live: the running tasks' deadline
    /// callbacks run at each tick and stop the tasks that were cancelled or timed out.
    fn start_ticker(&self) {
        let weak = [self.optimizing.engine.weak(), self.baseline.engine.weak()];
        let _ = std::thread::Builder::new()
            .name("hkube-wasm-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                let mut alive = false;
                for engine in weak.iter().filter_map(|weak| weak.upgrade()) {
                    engine.increment_epoch();
                    alive = true;
                }
                if !alive {
                    return;
                }
            });
    }
}

impl Tier {
    fn new(strategy: Strategy) -> Result<Tier, String> {
        let engine = engine(strategy)?;
        let mut linker: Linker<State> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state: &mut State| -> &mut WasiP1Ctx {
            &mut state.wasi
        })
        .map_err(|e| format!("cannot link WASI preview 1: {e}"))?;
        super::stdio::add_to_linker(&mut linker)
            .map_err(|e| format!("cannot link the task's stdio: {e}"))?;
        super::function::add_to_linker(&mut linker)
            .map_err(|e| format!("cannot link hkube.output: {e}"))?;
        Ok(Tier {
            engine,
            linker: Arc::new(linker),
        })
    }

    /// `module` (this tier's code) with its ABI found and its imports resolved.
    fn ready(&self, module: &Module) -> Result<Ready, String> {
        // Its ABI first: a module that is neither a command nor of the function ABI is told
        // what it lacks, not which import failed to resolve.
        super::abi::check(module).map_err(|e| format!("cannot run in hkube: {e}"))?;
        let pre: InstancePre<State> = self.linker.instantiate_pre(module).map_err(|e| {
            format!(
                "imports what hkube does not give: {e:#} (a wasm algorithm may import only WASI \
                 preview 1, wasi_snapshot_preview1, and, with hkube's function ABI, hkube.output)"
            )
        })?;
        Ready::of(pre).map_err(|e| format!("cannot run in hkube: {e}"))
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

/// The calling thread at a lower priority (nice 10): it takes the cores only when the tasks
/// leave them idle. Linux only; elsewhere it runs as any thread.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority and gettid take plain integers and touch no memory of ours; on
    // Linux, PRIO_PROCESS with a thread id applies to that thread alone.
    #[allow(unsafe_code)]
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
}

fn engine(strategy: Strategy) -> Result<Engine, String> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.strategy(strategy);
    // Winch's compile is on a new version's path: all cores. Cranelift's runs behind it, on
    // its own thread only: in wasmtime's shared pool of compile threads it would hold up a
    // Winch compile that came after it (another module registered meanwhile).
    config.parallel_compilation(strategy == Strategy::Winch);
    // Cranelift's full optimisations: its compile is off a new version's path (Winch's code
    // runs meanwhile), so it may take the time that makes the module's own work fastest.
    config.cranelift_opt_level(OptLevel::Speed);
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
    let mut name = hex(&sha2::Sha256::digest(bytes));
    name.push_str(&format!("-{:016x}.cwasm", settings_hash(engine)));
    name
}

/// What makes compiled code usable by `engine`, hashed (std's hasher: stable within a build).
fn settings_hash(engine: &Engine) -> u64 {
    let mut settings = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut settings);
    settings.finish()
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2 + 24);
    for byte in bytes {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// The cache's name for the module file at `path` as it is now (`None` where file identities
/// are not known: not Unix): a SHA-256 of its path, device, inode, size, and modification and
/// change times, then the engine's settings as in [`cache_name`].
fn identity_name(engine: &Engine, path: &Path, metadata: &std::fs::Metadata) -> Option<String> {
    #[cfg(unix)]
    {
        use sha2::Digest;
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::MetadataExt;
        let mut identity = sha2::Sha256::new();
        identity.update(path.as_os_str().as_bytes());
        identity.update([0]);
        for number in [
            metadata.dev(),
            metadata.ino(),
            metadata.size(),
            metadata.mtime() as u64,
            metadata.mtime_nsec() as u64,
            metadata.ctime() as u64,
            metadata.ctime_nsec() as u64,
        ] {
            identity.update(number.to_le_bytes());
        }
        let mut name = hex(&identity.finalize());
        name.push_str(&format!("-{:016x}.link", settings_hash(engine)));
        Some(name)
    }
    #[cfg(not(unix))]
    {
        let _ = (engine, path, metadata);
        None
    }
}

/// Whether the file was last changed (content or metadata) at least [`SETTLED`] ago.
fn settled(metadata: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64());
        let changed = |seconds: i64, nanos: i64| seconds as f64 + nanos as f64 / 1e9;
        let last = changed(metadata.mtime(), metadata.mtime_nsec())
            .max(changed(metadata.ctime(), metadata.ctime_nsec()));
        now - last >= SETTLED.as_secs_f64()
    }
    #[cfg(not(unix))]
    {
        let _ = metadata;
        false
    }
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
    fn a_new_module_runs_winch_s_code_until_cranelift_s_is_ready_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(Some(dir.path())).unwrap();
        let bytes = COMMAND.as_bytes();
        let tiered = runtime.prepare_tiered(bytes).unwrap();
        assert!(!runtime.is_optimized(&tiered.ready));
        let optimized = tiered.optimized.expect("Cranelift compiles behind").join();
        let optimized = optimized.unwrap().unwrap();
        assert!(runtime.is_optimized(&optimized));
        // Kept before it arrived: a restart starts with Cranelift's code, nothing behind.
        assert_eq!(cached(dir.path()).len(), 1);
        let again = Runtime::new(Some(dir.path())).unwrap();
        let tiered = again.prepare_tiered(bytes).unwrap();
        assert!(again.is_optimized(&tiered.ready));
        assert!(tiered.optimized.is_none());
        // A module that cannot run is refused at once, by either tier.
        let error = runtime.prepare_tiered(b"(module)").unwrap_err();
        assert!(error.starts_with("cannot run in hkube: "), "{error}");
    }

    /// The module's first memory's minimum, in pages: tells the two versions below apart.
    fn pages(ready: &Ready) -> u64 {
        ready
            .pre
            .module()
            .exports()
            .find_map(|export| export.ty().memory().map(|memory| memory.minimum()))
            .unwrap()
    }

    fn links(dir: &Path) -> Vec<PathBuf> {
        cached(dir)
            .into_iter()
            .filter(|path| path.extension().is_some_and(|e| e == "link"))
            .collect()
    }

    #[test]
    fn a_settled_module_file_is_known_by_its_identity_and_a_rewritten_one_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let module = dir.path().join("multiply.wasm");
        std::fs::write(&module, COMMAND).unwrap();

        // Just written: read and hashed, compiled, and not linked (its times could still be
        // those of a next write).
        let runtime = Runtime::new(Some(&cache)).unwrap();
        let tiered = runtime.prepare_file(&module).unwrap();
        tiered.optimized.expect("compiled").join().unwrap().unwrap();
        assert!(links(&cache).is_empty(), "{:?}", cached(&cache));

        // Settled: the next load links its identity to its code.
        std::thread::sleep(SETTLED + Duration::from_millis(100));
        let tiered = Runtime::new(Some(&cache))
            .unwrap()
            .prepare_file(&module)
            .unwrap();
        assert!(tiered.optimized.is_none(), "the code was in the cache");
        let linked = links(&cache);
        assert_eq!(linked.len(), 1, "{:?}", cached(&cache));
        let code = std::fs::read_link(&linked[0]).unwrap();
        assert!(
            code.to_string_lossy().ends_with(".cwasm") && code.is_relative(),
            "{code:?}"
        );

        // The link is named by the file as it is now, so the next load opens it (and not the
        // module file), and gets Cranelift's code of this version.
        let again = Runtime::new(Some(&cache)).unwrap();
        let metadata = std::fs::metadata(&module).unwrap();
        let name = identity_name(&again.optimizing.engine, &module, &metadata).unwrap();
        assert_eq!(linked[0], cache.join(name));
        let tiered = again.prepare_file(&module).unwrap();
        assert!(again.is_optimized(&tiered.ready) && tiered.optimized.is_none());
        assert_eq!(pages(&tiered.ready), 1);

        // Written again with the same size, its modification time set back to the old one:
        // the change time still differs, so it is read, and the new content is what runs.
        let before = std::fs::metadata(&module).unwrap().modified().unwrap();
        let other = COMMAND.replace("memory\") 1", "memory\") 2");
        assert_eq!(other.len(), COMMAND.len());
        std::fs::write(&module, &other).unwrap();
        std::fs::File::options()
            .append(true)
            .open(&module)
            .unwrap()
            .set_modified(before)
            .unwrap();
        let runtime = Runtime::new(Some(&cache)).unwrap();
        let tiered = runtime.prepare_file(&module).unwrap();
        assert_eq!(pages(&tiered.ready), 2, "the old version's code was loaded");
        if let Some(optimized) = tiered.optimized {
            optimized.join().unwrap().unwrap();
        }

        // A link whose code is gone is no harm: the file is read, compiled, and runs.
        for code in cached(&cache)
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        {
            std::fs::remove_file(code).unwrap();
        }
        std::fs::write(&module, COMMAND).unwrap();
        let runtime = Runtime::new(Some(&cache)).unwrap();
        let tiered = runtime.prepare_file(&module).unwrap();
        assert_eq!(pages(&tiered.ready), 1);
        assert!(tiered.optimized.is_some(), "compiled again");

        // A file that cannot be read says so.
        let missing = runtime.prepare_file(&dir.path().join("missing.wasm"));
        assert!(matches!(missing, Err(FileError::Read(_))), "{missing:?}");
    }

    #[test]
    fn a_module_that_is_not_a_command_is_refused() {
        let bytes = b"(module)".to_vec();
        let error = validate(&bytes, None).unwrap_err();
        assert!(error.contains("exports no _start"), "{error}");
    }
}
