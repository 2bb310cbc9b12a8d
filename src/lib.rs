//! `bsdalloc`: FreeBSD's kernel memory allocators in userspace Rust.
//!
//! This facade re-exports the workspace's three crates:
//!
//! - [`vmem`]: the vmem resource allocator (arenas of integer ranges with
//!   boundary tags, FreeBSD `sys/kern/subr_vmem.c`);
//! - [`uma`]: the UMA zone/keg slab allocator (FreeBSD `sys/vm/uma_core.c`);
//! - [`kmem`]: the kernel-memory layer that wires them together.
//!
//! and holds the allocator benchmark suite: [`workloads`] (the workloads
//! and the `wl-*` child protocol), [`runner`] (the main job that runs them
//! per allocator and reports), and [`vmem_scaling`] (the vmem layer's own
//! report, `--vmem-scaling`), and [`patterns`] (Rust allocation patterns,
//! timed whole by `benches/patterns.sh`).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod patterns;
pub mod runner;
pub mod vmem_scaling;
pub mod workloads;

/// The README's Rust snippets, compiled and run as doctests of this crate
/// (`cargo test --doc -p bsdalloc`); not part of the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use kmem;
pub use uma;
pub use vmem;
