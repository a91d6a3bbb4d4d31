//! husk: a container runtime where every container chooses its isolation, a namespaced
//! process on the host kernel or a KVM microVM with its own guest kernel.
//!
//! The binary (src/main.rs) is a thin Docker-shaped CLI over these modules.

pub mod container;
pub mod cost;
pub mod display;
pub mod image;
pub mod network;
pub mod oci;
pub mod process;
pub mod runtime;
pub mod vm;
pub mod vmm;
