//! What a thread that runs wasm tasks holds: the module a task runs with, and, for the
//! function ABI, the live instance it keeps between tasks.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::abi::{Abi, Ready};
use super::function::{After, Live};
use super::task::{self, Ran};
use super::Sandbox;

/// A module ready to instantiate, with what each of its instances is given.
pub struct Prepared {
    pub sandbox: Sandbox,
    pub pre: Ready,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("sandbox", &self.sandbox)
            .field("abi", &self.pre.abi)
            .finish_non_exhaustive()
    }
}

/// Runs one thread's tasks, one after another. A command-ABI task gets a fresh instance; a
/// function-ABI task runs in the instance the thread keeps for that module version, made at
/// its first task and again after one that trapped, exited or was stopped.
#[derive(Debug, Default)]
pub struct Runner {
    live: Option<Live>,
}

impl Runner {
    /// Runs a task of `prepared` with `args` (its JSON args object); `stop` set from another
    /// thread ends it at the next epoch tick.
    pub fn run(&mut self, prepared: &Arc<Prepared>, args: Vec<u8>, stop: &Arc<AtomicBool>) -> Ran {
        if let Abi::Command { .. } = prepared.pre.abi {
            return task::run(&prepared.sandbox, &prepared.pre, args, stop);
        }
        let mut live = match self.live.take() {
            Some(live) if Arc::ptr_eq(&live.prepared, prepared) => live,
            stale => {
                // Another module or version: its instance (and pool slot) goes first.
                drop(stale);
                match Live::new(Arc::clone(prepared), stop) {
                    Ok(live) => live,
                    Err(failed) => return failed,
                }
            }
        };
        let (ran, after) = live.run(&args, stop);
        if after == After::Keep {
            self.live = Some(live);
        }
        ran
    }
}
