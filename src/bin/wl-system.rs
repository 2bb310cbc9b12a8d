//! Workload child for the system allocator (`std::alloc::System`, glibc's
//! malloc on Linux). See `bsdalloc::workloads` for the protocol.

#[global_allocator]
static A: std::alloc::System = std::alloc::System;

fn main() -> std::process::ExitCode {
    bsdalloc::workloads::child_main("system")
}
