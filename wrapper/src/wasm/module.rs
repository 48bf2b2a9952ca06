//! Compiling modules: one wasmtime engine per executor, its on-disk cache, and the linker that
//! gives a module WASI preview 1.
//!
//! A module is compiled once per version: wasmtime's cache keeps the machine code under
//! `<cache_dir>`, keyed by the SHA-256 of the module's bytes and wasmtime's version (and its
//! compiler settings), so a restart or a second server over the same state folder loads it
//! instead of compiling again. What a task then pays is an instantiation of an
//! [`InstancePre`]: imports resolved and types checked once, at registration.

use std::path::Path;
use std::time::Duration;

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig,
};
use wasmtime_wasi::p1::WasiP1Ctx;

use super::task::State;

/// How often the epoch ticks: a stopped or timed-out task traps within about this long.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The wasmtime engine and the WASI linker every module of an executor shares.
#[derive(Clone)]
pub struct Runtime {
    pub engine: Engine,
    linker: std::sync::Arc<Linker<State>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("wasm::Runtime")
    }
}

impl Runtime {
    /// An engine with epoch interruption (tasks can be stopped and timed out) and, with
    /// `cache_dir`, wasmtime's compilation cache there.
    pub fn new(cache_dir: Option<&Path>) -> Result<Runtime, String> {
        let engine = engine(cache_dir)?;
        let mut linker: Linker<State> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state: &mut State| -> &mut WasiP1Ctx {
            &mut state.wasi
        })
        .map_err(|e| format!("cannot link WASI preview 1: {e}"))?;
        let runtime = Runtime {
            engine,
            linker: std::sync::Arc::new(linker),
        };
        runtime.start_ticker();
        Ok(runtime)
    }

    /// Compiles (or loads from the cache) the module in `bytes` and resolves its imports.
    /// The error is wasmtime's own message, which names what is wrong with the module.
    pub fn prepare(&self, bytes: &[u8]) -> Result<InstancePre<State>, String> {
        let module = Module::new(&self.engine, bytes).map_err(|e| format!("{e:#}"))?;
        if module.get_export("_start").is_none() {
            return Err(
                "it exports no _start function: build it as a WASI command (a program with a \
                 main, e.g. cargo build --target wasm32-wasip1 of a binary crate)"
                    .into(),
            );
        }
        self.linker.instantiate_pre(&module).map_err(|e| {
            format!(
                "{e:#} (a wasm algorithm may import only WASI preview 1, wasi_snapshot_preview1)"
            )
        })
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

fn engine(cache_dir: Option<&Path>) -> Result<Engine, String> {
    let mut config = Config::new();
    config.epoch_interruption(true);
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
        .pagemap_scan(Enabled::Auto);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    if let Some(dir) = cache_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the module cache {}: {e}", dir.display()))?;
        let mut cache = wasmtime::CacheConfig::new();
        cache.with_directory(dir);
        let cache = wasmtime::Cache::new(cache)
            .map_err(|e| format!("cannot open the module cache {}: {e:#}", dir.display()))?;
        config.cache(Some(cache));
    }
    Engine::new(&config).map_err(|e| format!("cannot start wasmtime: {e:#}"))
}

/// Whether `bytes` compile as a wasm algorithm (a WASI command): `Err` holds wasmtime's
/// message. With `cache_dir`, the compiled code is kept, so the first task after an apply
/// does not compile again.
pub fn validate(bytes: &[u8], cache_dir: Option<&Path>) -> Result<(), String> {
    Runtime::new(cache_dir)?.prepare(bytes).map(|_| ())
}
