//! `cargo run --release`: the project's main job, the allocator benchmark
//! runner (see `bsdalloc::runner`): every workload of the suite under the
//! system allocator, kmem (Rust `GlobalAlloc`), kmem-C (kmem's C ABI,
//! `libbsdalloc.so` preloaded) and the peers found on the machine
//! (jemalloc, mimalloc, tcmalloc: installed shared libraries, or the
//! `compare` feature's children), each in its own process; comparison
//! tables, an SVG chart of the time and peak-RSS ratios, and kmem's
//! statistics. `--vmem-scaling` prints the vmem layer's report instead.

use bsdalloc::runner::{self, Mode};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match runner::parse_args(&args) {
        Ok(Mode::Help) => {
            print!("{}", runner::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Mode::VmemScaling) => {
            bsdalloc::vmem_scaling::run();
            ExitCode::SUCCESS
        }
        Ok(Mode::Suite(o)) => ExitCode::from(runner::run_suite(&o)),
        Err(msg) => {
            eprintln!("bsdalloc: {msg}\n\n{}", runner::USAGE);
            ExitCode::from(64)
        }
    }
}
