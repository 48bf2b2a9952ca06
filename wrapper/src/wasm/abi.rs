//! Which of hkube's two ABIs a module speaks, found once when it is prepared.
//!
//! - **The WASI command** (`_start`): each task is a fresh instance; the args are JSON on
//!   stdin, the result JSON on stdout. Any language that targets WASI builds one.
//! - **The function ABI** (`hkube_alloc` and `hkube_start`, result through the import
//!   `hkube.output`): an instance lives across the tasks of its worker, as a warm Python
//!   worker's process does, and each task is one call. No instantiation and no memory reset
//!   per task (docs/wasm.md, "The function ABI").
//!
//! A module that exports `hkube_start` speaks the function ABI; one that exports `_start`
//! the command ABI; one that mixes them, or gets a signature wrong, is refused with what to
//! change.

use wasmtime::{ExternType, InstancePre, Module, ModuleExport};

use super::task::State;

/// The function ABI's names.
pub const ALLOC: &str = "hkube_alloc";
pub const START: &str = "hkube_start";
/// A WASI reactor's constructor, run once per instance before its first task.
pub const INITIALIZE: &str = "_initialize";
/// The module of the host functions hkube gives the function ABI.
pub const HOST_MODULE: &str = "hkube";
pub const OUTPUT: &str = "output";

/// How a task enters a module, with its exports located once (by index, not by name, at
/// each task).
#[derive(Clone)]
pub enum Abi {
    /// `_start`, in a fresh instance per task.
    Command { start: ModuleExport },
    /// `hkube_alloc(len) -> ptr` and `hkube_start(ptr, len) -> status` in a live instance;
    /// `_initialize` first when the module has one.
    Function {
        alloc: ModuleExport,
        start: ModuleExport,
        initialize: Option<ModuleExport>,
    },
}

impl std::fmt::Debug for Abi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Abi::Command { .. } => "the WASI command ABI",
            Abi::Function { .. } => "hkube's function ABI",
        })
    }
}

/// A module ready to instantiate: its imports resolved, its ABI known, its `memory` located.
pub struct Ready {
    pub pre: InstancePre<State>,
    pub abi: Abi,
    pub memory: Option<ModuleExport>,
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("wasm::Ready")
            .field("abi", &self.abi)
            .finish_non_exhaustive()
    }
}

/// Whether `module` speaks one of the ABIs: `Err` says what it lacks.
pub fn check(module: &Module) -> Result<(), String> {
    abi_of(module).map(|_| ())
}

impl Ready {
    /// The ABI `pre`'s module speaks, or why it speaks none.
    pub fn of(pre: InstancePre<State>) -> Result<Ready, String> {
        let module = pre.module();
        let abi = abi_of(module)?;
        let memory = module.get_export_index("memory");
        Ok(Ready { pre, abi, memory })
    }
}

fn abi_of(module: &Module) -> Result<Abi, String> {
    let exports = |name: &str| module.get_export(name).is_some();
    let index = |name: &str| {
        module
            .get_export_index(name)
            .ok_or_else(|| format!("it exports no {name}"))
    };
    let imports_output = module
        .imports()
        .any(|import| import.module() == HOST_MODULE);
    if !exports(START) {
        if imports_output {
            return Err(format!(
                "it imports from \"{HOST_MODULE}\", which only a module of hkube's function \
                 ABI may (one that exports {START}): export {START} and {ALLOC}, or write the \
                 result on stdout as a WASI command"
            ));
        }
        if exports(ALLOC) {
            return Err(format!(
                "it exports {ALLOC} but no {START}: hkube's function ABI needs both"
            ));
        }
        let Some(start) = module.get_export_index("_start") else {
            return Err(format!(
                "it exports no _start function: build it as a WASI command (a program with a \
                 main, e.g. cargo build --target wasm32-wasip1 of a binary crate), or export \
                 {START} and {ALLOC} (hkube's function ABI, docs/wasm.md)"
            ));
        };
        return Ok(Abi::Command { start });
    }
    if exports("_start") {
        return Err(format!(
            "it exports both _start (a WASI command) and {START} (hkube's function ABI): build \
             it as one or the other (for the function ABI, a library: a Rust cdylib, or C with \
             -mexec-model=reactor)"
        ));
    }
    check_func(module, START, &["i32", "i32"], &["i32"])?;
    if !exports(ALLOC) {
        return Err(format!(
            "it exports {START} but no {ALLOC}: hkube's function ABI needs {ALLOC}(len: i32) -> \
             i32, which returns a buffer of len bytes for the task's args"
        ));
    }
    check_func(module, ALLOC, &["i32"], &["i32"])?;
    if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
        return Err(
            "it exports no memory named \"memory\": hkube's function ABI writes the args there"
                .into(),
        );
    }
    let initialize = match module.get_export(INITIALIZE) {
        None => None,
        Some(_) => {
            check_func(module, INITIALIZE, &[], &[])?;
            Some(index(INITIALIZE)?)
        }
    };
    Ok(Abi::Function {
        alloc: index(ALLOC)?,
        start: index(START)?,
        initialize,
    })
}

/// Whether the export `name` is a function of exactly these parameter and result types
/// (`i32`, `i64`: wasm's own names).
fn check_func(
    module: &Module,
    name: &str,
    params: &[&str],
    results: &[&str],
) -> Result<(), String> {
    let Some(ExternType::Func(ty)) = module.get_export(name) else {
        return Err(format!("its export {name} is not a function"));
    };
    let shown = |types: Vec<String>| format!("({})", types.join(", "));
    let got_params: Vec<String> = ty.params().map(|t| t.to_string()).collect();
    let got_results: Vec<String> = ty.results().map(|t| t.to_string()).collect();
    if got_params != params || got_results != results {
        return Err(format!(
            "its {name} takes {} and returns {}; hkube's function ABI needs {name}{} -> {}",
            shown(got_params),
            shown(got_results),
            shown(params.iter().map(|s| s.to_string()).collect()),
            shown(results.iter().map(|s| s.to_string()).collect()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::module::Runtime;

    fn prepare(text: &str) -> Result<String, String> {
        Runtime::new(None)
            .unwrap()
            .prepare(text.as_bytes())
            .map(|ready| format!("{:?}", ready.abi))
    }

    const FUNCTION: &str = r#"(module
      (import "hkube" "output" (func (param i32 i32)))
      (memory (export "memory") 1)
      (func (export "hkube_alloc") (param i32) (result i32) (i32.const 0))
      (func (export "hkube_start") (param i32 i32) (result i32) (i32.const 0)))"#;

    #[test]
    fn a_module_speaks_the_abi_its_exports_name() {
        let command = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;
        assert_eq!(prepare(command).unwrap(), "the WASI command ABI");
        assert_eq!(prepare(FUNCTION).unwrap(), "hkube's function ABI");
        // _initialize is optional, and hkube.output too (a module that answers null).
        let reactor = FUNCTION
            .replace(r#"(import "hkube" "output" (func (param i32 i32)))"#, "")
            .replace("(memory", r#"(func (export "_initialize")) (memory"#);
        assert_eq!(prepare(&reactor).unwrap(), "hkube's function ABI");
    }

    #[test]
    fn a_module_that_mixes_the_abis_or_gets_a_signature_wrong_is_told_what_to_change() {
        let both = FUNCTION.replace("(memory", r#"(func (export "_start")) (memory"#);
        let error = prepare(&both).unwrap_err();
        assert!(error.contains("exports both _start"), "{error}");

        let no_alloc = FUNCTION.replace("hkube_alloc", "my_alloc");
        let error = prepare(&no_alloc).unwrap_err();
        assert!(
            error.contains("exports hkube_start but no hkube_alloc"),
            "{error}"
        );

        let wrong = FUNCTION.replace(
            r#"(export "hkube_start") (param i32 i32) (result i32) (i32.const 0)"#,
            r#"(export "hkube_start") (param i32) (result i64) (i64.const 0)"#,
        );
        let error = prepare(&wrong).unwrap_err();
        assert_eq!(
            error,
            "cannot run in hkube: its hkube_start takes (i32) and returns (i64); hkube's \
             function ABI needs hkube_start(i32, i32) -> (i32)"
        );

        let command_with_output = r#"(module
          (import "hkube" "output" (func (param i32 i32)))
          (memory (export "memory") 1) (func (export "_start")))"#;
        let error = prepare(command_with_output).unwrap_err();
        assert!(
            error.contains("only a module of hkube's function ABI"),
            "{error}"
        );

        let neither = r#"(module (memory (export "memory") 1))"#;
        let error = prepare(neither).unwrap_err();
        assert!(error.contains("exports no _start function"), "{error}");
        assert!(
            error.contains("or export hkube_start and hkube_alloc"),
            "{error}"
        );

        let other_import = FUNCTION.replace(r#""hkube" "output""#, r#""hkube" "input""#);
        let error = prepare(&other_import).unwrap_err();
        assert!(error.contains("hkube.output"), "{error}");
    }
}
