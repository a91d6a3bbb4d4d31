//! One conformance suite for both isolations: one file per feature of the runtime spec, each
//! case run under process isolation (`<feature>::process::<case>`) and under VM isolation
//! (`<feature>::vm::<case>`: under QEMU in the main suite, on husk's own monitor in the
//! nested tier, which runs the `::vm::` cases). Every case asserts the same observable result
//! in both, where Docker would; a deliberate difference (the VM's own kernel) is named in the
//! case that has it.

#[path = "../common/mod.rs"]
mod common;
mod support;

/// Every case of a feature, once per isolation: `process::case` and `vm::case`.
macro_rules! in_every_isolation {
    ($($case:ident),* $(,)?) => {
        mod process {
            $(#[test] fn $case() { super::$case("process") })*
        }
        mod vm {
            $(#[test] fn $case() { super::$case("vm") })*
        }
    };
}

mod args;
mod capabilities;
mod cp;
mod cwd;
mod env;
mod exec;
mod exit_codes;
mod hostname;
mod logs;
mod masked_paths;
mod memory;
mod no_new_privs;
mod pause;
mod pids_limit;
mod readonly_paths;
mod readonly_root;
mod refusals;
mod restart;
mod rlimits;
mod seccomp;
mod signals;
mod stdin;
mod sysctls;
mod top;
mod tty;
mod user;
mod volumes;
