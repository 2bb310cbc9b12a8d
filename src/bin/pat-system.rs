//! Rust allocation patterns under the system allocator (glibc's malloc, or
//! whatever `LD_PRELOAD` puts in its place; see `bsdalloc::patterns`).

#[global_allocator]
static A: std::alloc::System = std::alloc::System;

fn main() -> std::process::ExitCode {
    bsdalloc::patterns::main_with(std::env::args())
}
