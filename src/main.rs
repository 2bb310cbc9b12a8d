//! `cargo run --release`: the project's main job, the allocator benchmark
//! runner (see `bsdalloc::runner`): every workload of the suite under kmem,
//! the system allocator and, when built with `--features compare`,
//! mimalloc and jemalloc, each in its own process; a comparison table, an
//! SVG chart of the time ratios, and kmem's `vmstat -z` / `vmstat -m`
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
