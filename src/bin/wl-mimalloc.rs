//! Workload child for mimalloc (the `mimalloc` crate; feature `compare`).
//! See `bsdalloc::workloads` for the protocol.

#[global_allocator]
static A: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    bsdalloc::workloads::child_main("mimalloc")
}
