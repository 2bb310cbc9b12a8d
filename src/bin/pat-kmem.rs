//! Rust allocation patterns under `kmem::Kmem` (see `bsdalloc::patterns`).

#[global_allocator]
static A: kmem::Kmem = kmem::Kmem;

fn main() -> std::process::ExitCode {
    bsdalloc::patterns::main_with(std::env::args())
}
