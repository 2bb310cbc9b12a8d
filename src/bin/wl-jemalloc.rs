//! Workload child for jemalloc (the `tikv-jemallocator` crate; feature
//! `compare`). See `bsdalloc::workloads` for the protocol.

#[global_allocator]
static A: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    bsdalloc::workloads::child_main("jemalloc")
}
