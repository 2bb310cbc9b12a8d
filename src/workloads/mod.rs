//! The allocator workload suite, and the child side of the runner protocol.
//!
//! Each workload is written from the *published descriptions* of the
//! standard allocator benchmarks (the papers and benchmark-suite write-ups
//! that introduced them), not translated from their sources; parameters are
//! scaled so that one run takes about a second on a small machine. They
//! allocate through the global allocator only (via [`Block`], which calls
//! `std::alloc::{alloc, dealloc}` with a `Layout`, or through `Vec`), so the
//! binary's `#[global_allocator]` decides what is measured.
//!
//! | workload | after | what it stresses |
//! |---|---|---|
//! | `larson` | Larson & Krishnan, *Memory allocation for long-running server applications* (ISMM 1998) | server churn: each thread owns slots of random sizes (8..1000 B), frees a random slot and refills it; after each round it hands its slots to a new thread, so blocks are freed by a thread other than their allocator |
//! | `xmalloc-test` | Lever & Boreham, *malloc() performance in a multithreaded Linux environment* (USENIX 2000) | producer threads allocate batches of blocks, consumer threads verify and free them from a queue: every free is remote |
//! | `cache-scratch` | Berger et al., *Hoard* (ASPLOS 2000) | passive false sharing: one thread allocates small objects and hands one to each worker, which frees it and then repeatedly allocates, writes and frees an object of that size; an allocator that gives a worker memory that shares a cache line with another worker's makes the writes ping-pong the line |
//! | `cache-thrash` | Berger et al., *Hoard* (ASPLOS 2000) | active false sharing: each worker allocates its own small objects, writes them repeatedly, and frees them; an allocator that packs concurrently allocated objects of different threads into one cache line thrashes it |
//! | `mstress` | the `mstress` stress test of the mimalloc benchmark suite (Leijen et al. 2019) | thread churn: rounds of short-lived threads allocate many objects of widely varied sizes (mostly small, a few up to 1 MiB); some are parked in a shared transfer array and outlive their thread, to be freed by a later one |
//! | `glibc-simple` | glibc's `bench-malloc-simple` | one thread allocating batches (25, 100, 400, 1600 blocks) of small random sizes and freeing them, in a loop |
//! | `glibc-thread` | glibc's `bench-malloc-thread` | the same loop on every thread at once |
//! | `malloc-large` | the `malloc-large` test of the mimalloc benchmark suite (there 5..25 MiB) | scaled down: one thread replaces blocks of 64 KiB..8 MiB at random in a ring of 8 live ones, touching every page |
//!
//! Every block is stamped and verified before it is freed (see [`block`]),
//! so an allocator that hands out overlapping memory fails loudly: the
//! child prints `HEAP CORRUPTION` and exits with status 2.
//!
//! # The child protocol
//!
//! An allocator binary (`src/bin/wl-*.rs`) sets `#[global_allocator]` and
//! calls [`child_main`]. It runs one workload, named on its command line:
//!
//! ```text
//! wl-system <workload> [--scale F] [--threads N] [--seed N] [--stats]
//! wl-system --list
//! ```
//!
//! and prints one result line on stdout (see [`RESULT_TAG`]):
//!
//! ```text
//! bsdalloc-wl workload=larson allocator=system threads=2 scale=1 seconds=1.234567 peak_rss_kib=10240 ops=20000000
//! ```
//!
//! `seconds` is the wall-clock time of the workload alone (process start-up
//! and argument parsing excluded); `peak_rss_kib` is the process's resident
//! high-water mark (`VmHWM` of `/proc/self/status`, which is per address
//! space; `getrusage`'s `ru_maxrss` where that is missing). With `--stats`,
//! a binary that has statistics writers (`wl-kmem`) prints them after the
//! result line.

pub mod block;
mod cache;
mod glibc;
mod large;
mod larson;
mod mstress;
mod xmalloc;

pub use block::{Block, Rng};

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

/// The first word of a child's result line.
pub const RESULT_TAG: &str = "bsdalloc-wl";

/// How a workload is run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Multiplies the workload's amount of work (1.0: about a second).
    pub scale: f64,
    /// Worker threads (for the multi-threaded workloads).
    pub threads: usize,
    /// Seed of every random choice; equal seeds give equal runs.
    pub seed: u64,
}

impl Params {
    /// `base` scaled by [`Params::scale`], at least 1.
    pub fn scaled(&self, base: u64) -> u64 {
        ((base as f64 * self.scale).round() as u64).max(1)
    }
}

impl Default for Params {
    fn default() -> Params {
        Params {
            scale: 1.0,
            threads: default_threads(),
            seed: 0x6273_6461_6c6c_6f63, // "bsdalloc"
        }
    }
}

/// The number of hardware threads (at least 1).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One workload of the suite.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Its name on the command line and in reports.
    pub name: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// Whether it uses [`Params::threads`] (the others run one thread).
    pub threaded: bool,
    run: fn(&Params) -> u64,
}

impl Workload {
    /// Runs the workload; returns the number of allocator operations
    /// (allocations plus frees, or object writes for the cache tests).
    pub fn run(&self, p: &Params) -> u64 {
        (self.run)(p)
    }
}

/// The suite, in report order.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "larson",
        summary: "server churn, slots handed to a new thread every round",
        threaded: true,
        run: larson::run,
    },
    Workload {
        name: "xmalloc-test",
        summary: "producers allocate, consumers free through queues",
        threaded: true,
        run: xmalloc::run,
    },
    Workload {
        name: "cache-scratch",
        summary: "passive false sharing (objects first allocated by one thread)",
        threaded: true,
        run: cache::scratch,
    },
    Workload {
        name: "cache-thrash",
        summary: "active false sharing (each thread's own small objects)",
        threaded: true,
        run: cache::thrash,
    },
    Workload {
        name: "mstress",
        summary: "thread churn, varied sizes, objects outliving their thread",
        threaded: true,
        run: mstress::run,
    },
    Workload {
        name: "glibc-simple",
        summary: "one thread, batches of small random blocks",
        threaded: false,
        run: glibc::simple,
    },
    Workload {
        name: "glibc-thread",
        summary: "glibc-simple on every thread",
        threaded: true,
        run: glibc::thread,
    },
    Workload {
        name: "malloc-large",
        summary: "64 KiB..8 MiB blocks, 8 live, every page touched",
        threaded: false,
        run: large::run,
    },
];

/// The workload called `name`.
pub fn find(name: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.name == name)
}

/// The process's peak resident set size in KiB: `VmHWM` from
/// `/proc/self/status`, else `getrusage(RUSAGE_SELF).ru_maxrss`.
pub fn peak_rss_kib() -> u64 {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for line in status.lines() {
            if let Some(rest) = line.strip_prefix("VmHWM:") {
                if let Some(kib) = rest.split_whitespace().next().and_then(|v| v.parse().ok()) {
                    return kib;
                }
            }
        }
    }
    // SAFETY: an all-zero rusage is a valid value for getrusage to fill in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
        // Linux reports KiB; macOS reports bytes.
        let v = ru.ru_maxrss.max(0) as u64;
        return if cfg!(target_os = "macos") {
            v / 1024
        } else {
            v
        };
    }
    0
}

/// One child's measurement, as printed on its result line.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Workload name.
    pub workload: String,
    /// Allocator name.
    pub allocator: String,
    /// Worker threads.
    pub threads: usize,
    /// Scale.
    pub scale: f64,
    /// Wall-clock seconds of the workload.
    pub seconds: f64,
    /// Peak RSS of the process, KiB.
    pub peak_rss_kib: u64,
    /// Allocator operations performed.
    pub ops: u64,
}

impl Measurement {
    /// The result line (without newline).
    pub fn to_line(&self) -> String {
        format!(
            "{RESULT_TAG} workload={} allocator={} threads={} scale={} seconds={:.6} peak_rss_kib={} ops={}",
            self.workload,
            self.allocator,
            self.threads,
            self.scale,
            self.seconds,
            self.peak_rss_kib,
            self.ops
        )
    }

    /// Parses a result line; `None` if `line` is not one.
    pub fn parse(line: &str) -> Option<Measurement> {
        let mut words = line.split_whitespace();
        if words.next()? != RESULT_TAG {
            return None;
        }
        let mut m = Measurement {
            workload: String::new(),
            allocator: String::new(),
            threads: 0,
            scale: 0.0,
            seconds: f64::NAN,
            peak_rss_kib: 0,
            ops: 0,
        };
        for w in words {
            let (k, v) = w.split_once('=')?;
            match k {
                "workload" => m.workload = v.to_string(),
                "allocator" => m.allocator = v.to_string(),
                "threads" => m.threads = v.parse().ok()?,
                "scale" => m.scale = v.parse().ok()?,
                "seconds" => m.seconds = v.parse().ok()?,
                "peak_rss_kib" => m.peak_rss_kib = v.parse().ok()?,
                "ops" => m.ops = v.parse().ok()?,
                _ => {} // newer fields: ignore
            }
        }
        (!m.workload.is_empty() && m.seconds.is_finite()).then_some(m)
    }
}

/// Writes an allocator's statistics (for `--stats`).
pub type StatsWriter<'a> = &'a dyn Fn(&mut dyn Write) -> std::io::Result<()>;

/// The `main` of an allocator binary without statistics writers.
pub fn child_main(allocator: &str) -> ExitCode {
    child_main_with_stats(allocator, None)
}

/// The `main` of an allocator binary; `stats`, if given, is called after
/// the result line when `--stats` is passed.
pub fn child_main_with_stats(allocator: &str, stats: Option<StatsWriter<'_>>) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_child_args(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            for w in WORKLOADS {
                println!("{:<14} {}", w.name, w.summary);
            }
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("wl-{allocator}: {msg}");
            eprintln!(
                "usage: wl-{allocator} <workload> [--scale F] [--threads N] [--seed N] [--stats] | --list"
            );
            return ExitCode::from(64);
        }
    };
    let start = Instant::now();
    let ops = opts.workload.run(&opts.params);
    let seconds = start.elapsed().as_secs_f64();
    let m = Measurement {
        workload: opts.workload.name.to_string(),
        allocator: allocator.to_string(),
        threads: if opts.workload.threaded {
            opts.params.threads
        } else {
            1
        },
        scale: opts.params.scale,
        seconds,
        peak_rss_kib: peak_rss_kib(),
        ops,
    };
    let mut out = std::io::stdout().lock();
    let mut ok = writeln!(out, "{}", m.to_line()).is_ok();
    if opts.stats {
        ok &= match stats {
            Some(write) => write(&mut out).is_ok(),
            None => writeln!(out, "(wl-{allocator} has no statistics to print)").is_ok(),
        };
    }
    ok &= out.flush().is_ok();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

struct ChildOpts {
    workload: &'static Workload,
    params: Params,
    stats: bool,
}

/// The value of `--scale`: a positive, finite work multiplier.
pub fn parse_scale(v: &str) -> Result<f64, String> {
    v.parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s > 0.0)
        .ok_or_else(|| format!("--scale {v:?}: expected a positive number"))
}

/// The value of `--threads`: a positive thread count.
pub fn parse_threads(v: &str) -> Result<usize, String> {
    v.parse()
        .ok()
        .filter(|&t: &usize| t > 0)
        .ok_or_else(|| format!("--threads {v:?}: expected a positive integer"))
}

/// `Ok(None)` means `--list`.
fn parse_child_args(args: &[String]) -> Result<Option<ChildOpts>, String> {
    let mut params = Params::default();
    let mut workload = None;
    let mut stats = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value"))
                .cloned()
        };
        match a.as_str() {
            "--list" => return Ok(None),
            "--stats" => stats = true,
            "--scale" => {
                let v = value("--scale")?;
                params.scale = parse_scale(&v)?;
            }
            "--threads" => {
                let v = value("--threads")?;
                params.threads = parse_threads(&v)?;
            }
            "--seed" => {
                let v = value("--seed")?;
                params.seed = v
                    .parse()
                    .map_err(|_| format!("--seed {v:?}: expected an integer"))?;
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s:?}")),
            s => {
                if workload.is_some() {
                    return Err(format!("more than one workload named ({s:?})"));
                }
                workload = Some(find(s).ok_or_else(|| {
                    let names: Vec<_> = WORKLOADS.iter().map(|w| w.name).collect();
                    format!("unknown workload {s:?} (one of: {})", names.join(", "))
                })?);
            }
        }
    }
    let workload = workload.ok_or("no workload named")?;
    Ok(Some(ChildOpts {
        workload,
        params,
        stats,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_runs_at_a_tiny_scale() {
        let p = Params {
            scale: 0.002,
            threads: 2,
            ..Params::default()
        };
        for w in WORKLOADS {
            assert!(w.run(&p) > 0, "{} did nothing", w.name);
        }
    }

    #[test]
    fn result_lines_round_trip() {
        let m = Measurement {
            workload: "larson".into(),
            allocator: "kmem".into(),
            threads: 2,
            scale: 0.5,
            seconds: 1.25,
            peak_rss_kib: 4096,
            ops: 99,
        };
        assert_eq!(Measurement::parse(&m.to_line()), Some(m));
        assert_eq!(Measurement::parse("something else"), None);
    }

    #[test]
    fn blocks_of_every_small_size_verify() {
        for size in 1..=64 {
            let b = Block::new(size, 0x0123_4567_89ab_cdef ^ size as u64);
            b.check();
        }
        drop(Block::new(3 * 4096 + 5, 7));
    }

    #[test]
    fn child_args() {
        let a = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let o = parse_child_args(&a("larson --scale 0.5 --threads 3 --stats"))
            .unwrap()
            .unwrap();
        assert_eq!(o.workload.name, "larson");
        assert_eq!((o.params.scale, o.params.threads, o.stats), (0.5, 3, true));
        assert!(parse_child_args(&a("--list")).unwrap().is_none());
        assert!(parse_child_args(&a("nope")).is_err());
        assert!(parse_child_args(&a("larson --scale -1")).is_err());
        assert!(parse_child_args(&a("larson --threads")).is_err());
        assert!(parse_child_args(&a("")).is_err());
    }
}
