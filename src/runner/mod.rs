//! The benchmark runner: the main job (`cargo run --release`).
//!
//! It runs every workload of [`crate::workloads`] under every allocator
//! it can find, one process per run, so that each allocator starts from a
//! fresh address space and its peak RSS is its own ([`discover`]):
//!
//! - `system` and `kmem`: the `wl-system` and `wl-kmem` children next to
//!   the running executable (`kmem` is `kmem::Kmem` as the Rust global
//!   allocator);
//! - `kmem-C`: `wl-system` under `LD_PRELOAD=<that dir>/libbsdalloc.so`,
//!   kmem through its C ABI (`malloc`/`free`), as C programs get it;
//! - the peers `mimalloc`, `jemalloc`, `tcmalloc`: the `compare` feature's
//!   `wl-mimalloc`/`wl-jemalloc` children when built, otherwise
//!   `wl-system` under `LD_PRELOAD` of the installed shared library
//!   (`libmimalloc.so.2`, `libjemalloc.so.2`, `libtcmalloc_minimal.so.4`:
//!   Debian's `libmimalloc2.0`, `libjemalloc2`, `libtcmalloc-minimal4`).
//!   Those not found are named on one line, with how to get them.
//!
//! Runs are done in passes (every workload under every allocator, once);
//! by default it makes up to three passes as long as the next one is
//! expected to end within the time budget (and warns when that is fewer
//! than three), and reports the median time and the maximum peak RSS of
//! each (workload, allocator). Then it prints the comparison tables,
//! writes an SVG chart of the time and peak-RSS ratios (see [`report`]) and,
//! with `--json`, the results as JSON, and, when `wl-kmem` is present,
//! prints kmem's statistics (`kmem::write_stats`) after one more kmem run.
//!
//! ```text
//! bsdalloc [--quick] [--scale F] [--only W[,W..]] [--threads N] [--reps N]
//!          [--budget SECS] [--svg PATH] [--json PATH] [--no-stats]
//!          [--no-peers] [--bin-dir DIR] [--no-build]
//! bsdalloc --vmem-scaling
//! ```
//!
//! `cargo run` builds only the runner itself, so when it was started by
//! `cargo run` the runner first runs `cargo build --bins` for its own
//! profile and features ([`build_children`]): the children it measures are
//! never stale, and a fresh checkout needs nothing but `cargo run --release`.

pub mod report;

use crate::workloads::{self, Measurement, Params, WORKLOADS};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The allocators the runner knows, in report order; `system` is the
/// baseline of every ratio.
pub const ALLOCATORS: &[&str] = &[
    "system", "kmem", "kmem-C", "mimalloc", "jemalloc", "tcmalloc",
];

/// The peers: the other allocators kmem is compared with ("best" in the
/// ratios is the better of those that ran).
pub const PEERS: &[&str] = &["mimalloc", "jemalloc", "tcmalloc"];

/// Shared libraries of the peers, run under `LD_PRELOAD` (file name, and
/// the Debian/Ubuntu package that installs it).
pub const PEER_LIBS: &[(&str, &str, &str)] = &[
    ("mimalloc", "libmimalloc.so.2", "libmimalloc2.0"),
    ("jemalloc", "libjemalloc.so.2", "libjemalloc2"),
    (
        "tcmalloc",
        "libtcmalloc_minimal.so.4",
        "libtcmalloc-minimal4",
    ),
];

/// Where [`find_lib`] looks for the peers' shared libraries.
pub const LIB_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/local/lib",
    "/usr/lib",
];

/// The scale of `--quick`: a smoke test of the whole pipeline.
pub const QUICK_SCALE: f64 = 0.004;

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Print the usage.
    Help,
    /// The vmem scaling report (the main job before the suite existed).
    VmemScaling,
    /// The allocator suite.
    Suite(Options),
}

/// Options of the allocator suite.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Work multiplier passed to every child.
    pub scale: f64,
    /// Worker threads passed to every child.
    pub threads: usize,
    /// The workloads to run (all by default).
    pub only: Vec<&'static str>,
    /// Exactly this many passes; `None`: up to 3 within [`Options::budget`].
    pub reps: Option<usize>,
    /// Time budget of the measured passes when `reps` is `None`.
    pub budget: Duration,
    /// Where to write the SVG chart (`None`: next to the target directory).
    pub svg: Option<PathBuf>,
    /// Where to write the results as JSON (`None`: nowhere).
    pub json: Option<PathBuf>,
    /// Run the peers (mimalloc, jemalloc, tcmalloc) when found.
    pub peers: bool,
    /// Print kmem's statistics after the tables.
    pub stats: bool,
    /// Where the `wl-*` children are (`None`: next to this executable).
    pub bin_dir: Option<PathBuf>,
    /// Bring the children up to date with `cargo build` first when this
    /// binary was started by `cargo run` (see [`build_children`]).
    pub build: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            scale: 1.0,
            threads: workloads::default_threads(),
            only: WORKLOADS.iter().map(|w| w.name).collect(),
            reps: None,
            // Three passes of the six columns (system, kmem, kmem-C and
            // the three peers, about 55 s a pass on an idle 2-core
            // machine) fit; a slower machine makes fewer and says so.
            budget: Duration::from_secs(180),
            svg: None,
            json: None,
            peers: true,
            stats: true,
            bin_dir: None,
            build: true,
        }
    }
}

/// The usage text.
pub const USAGE: &str = "\
usage: bsdalloc [options]        run the allocator workload suite
       bsdalloc --vmem-scaling   the vmem instant-fit scaling report

options:
  --quick          tiny scale, one pass (a smoke test of the pipeline)
  --scale F        work multiplier (default 1: about a second per run)
  --only W[,W..]   run only these workloads
  --threads N      worker threads (default: the number of CPUs)
  --reps N         exactly N passes (default: up to 3 within the budget)
  --budget SECS    time budget for the passes (default 180)
  --svg PATH       where to write the chart (default: <target>/bsdalloc-report.svg)
  --json PATH      also write the results (every run, medians, ratios) as JSON
  --no-peers       leave out mimalloc, jemalloc and tcmalloc even when installed
  --bin-dir DIR    where the wl-* children and libbsdalloc.so are (default: next to this binary)
  --no-build       under `cargo run`, do not bring the wl-* children up to date
  --no-stats       skip kmem's vmstat -z / -m statistics
";

/// Parses the runner's arguments (without the program name).
pub fn parse_args(args: &[String]) -> Result<Mode, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match a.as_str() {
            "-h" | "--help" => return Ok(Mode::Help),
            "--vmem-scaling" => return Ok(Mode::VmemScaling),
            "--quick" => {
                o.scale = QUICK_SCALE;
                o.reps = Some(1);
            }
            "--no-stats" => o.stats = false,
            "--scale" => {
                let v = value("--scale")?;
                o.scale = workloads::parse_scale(&v)?;
            }
            "--threads" => {
                let v = value("--threads")?;
                o.threads = workloads::parse_threads(&v)?;
            }
            "--reps" => {
                let v = value("--reps")?;
                o.reps = Some(
                    v.parse()
                        .ok()
                        .filter(|&r: &usize| r > 0)
                        .ok_or_else(|| format!("--reps {v:?}: expected a positive integer"))?,
                );
            }
            "--budget" => {
                let v = value("--budget")?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| format!("--budget {v:?}: expected seconds"))?;
                o.budget = Duration::from_secs_f64(secs);
            }
            "--only" => {
                let v = value("--only")?;
                let mut only = Vec::new();
                for name in v.split(',').filter(|n| !n.is_empty()) {
                    let w = workloads::find(name).ok_or_else(|| {
                        format!(
                            "--only: unknown workload {name:?} (one of: {})",
                            workload_names()
                        )
                    })?;
                    if !only.contains(&w.name) {
                        only.push(w.name);
                    }
                }
                if only.is_empty() {
                    return Err("--only needs at least one workload".into());
                }
                o.only = only;
            }
            "--svg" => o.svg = Some(PathBuf::from(value("--svg")?)),
            "--json" => o.json = Some(PathBuf::from(value("--json")?)),
            "--no-peers" => o.peers = false,
            "--bin-dir" => o.bin_dir = Some(PathBuf::from(value("--bin-dir")?)),
            "--no-build" => o.build = false,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Mode::Suite(o))
}

fn workload_names() -> String {
    WORKLOADS
        .iter()
        .map(|w| w.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// An allocator to run: a child binary, maybe under `LD_PRELOAD`.
#[derive(Debug, Clone)]
pub struct Child {
    /// Allocator name (`system`, `kmem`, `kmem-C`, ...).
    pub name: &'static str,
    /// Path of the `wl-*` binary it runs.
    pub exe: PathBuf,
    /// The shared library preloaded into it (`kmem-C` and the peers
    /// without a `compare` child), `None` for a plain child.
    pub preload: Option<PathBuf>,
}

/// What [`discover`] found: the allocators to run, in [`ALLOCATORS`]
/// order, and one line per group of missing ones saying how to get them.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// The allocators to run.
    pub children: Vec<Child>,
    /// Notes on what is missing (one line each).
    pub notes: Vec<String>,
}

/// The first of `LIB_DIRS` holding `file`.
pub fn find_lib(file: &str) -> Option<PathBuf> {
    LIB_DIRS
        .iter()
        .map(|d| Path::new(d).join(file))
        .find(|p| p.is_file())
}

/// The allocators available with the children in `dir` (and the peers'
/// shared libraries installed on this machine when `peers`).
pub fn discover(dir: &Path, peers: bool) -> Discovery {
    discover_with(dir, peers, find_lib)
}

/// [`discover`] with the shared-library lookup given (tests).
pub fn discover_with(dir: &Path, peers: bool, find: impl Fn(&str) -> Option<PathBuf>) -> Discovery {
    let exe = |name: &str| {
        let p = dir.join(format!("wl-{name}{}", std::env::consts::EXE_SUFFIX));
        p.is_file().then_some(p)
    };
    let mut d = Discovery::default();
    let system = exe("system");
    let mut missing_peers = Vec::new();
    for &name in ALLOCATORS {
        let child = match name {
            "system" | "kmem" => exe(name).map(|e| Child {
                name,
                exe: e,
                preload: None,
            }),
            "kmem-C" => {
                let so = dir.join("libbsdalloc.so");
                match (&system, so.is_file()) {
                    (Some(sys), true) => Some(Child {
                        name,
                        exe: sys.clone(),
                        preload: Some(so),
                    }),
                    (Some(_), false) => {
                        d.notes.push(format!(
                            "kmem-C (kmem through its C ABI) left out: no {}; build it with `cargo build --release -p bsdalloc-capi`",
                            so.display()
                        ));
                        None
                    }
                    (None, _) => None,
                }
            }
            _ if !peers => None,
            _ => {
                let lib = PEER_LIBS.iter().find(|l| l.0 == name);
                let preloaded = || {
                    let (_, file, _) = lib?;
                    Some(Child {
                        name,
                        exe: system.clone()?,
                        preload: Some(find(file)?),
                    })
                };
                let c = exe(name)
                    .map(|e| Child {
                        name,
                        exe: e,
                        preload: None,
                    })
                    .or_else(preloaded);
                if c.is_none() {
                    missing_peers.push(name);
                }
                c
            }
        };
        if let Some(c) = child {
            d.children.push(c);
        }
    }
    if !missing_peers.is_empty() {
        let pkgs: Vec<&str> = PEER_LIBS
            .iter()
            .filter(|l| missing_peers.contains(&l.0))
            .map(|l| l.2)
            .collect();
        d.notes.push(format!(
            "{} not installed, so not compared: `sudo apt-get install {}` (Debian/Ubuntu; the runner preloads their shared libraries), or `cargo run --release --features compare` for mimalloc and jemalloc",
            missing_peers.join(", "),
            pkgs.join(" ")
        ));
    }
    d
}

/// Why a child run produced no measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct RunError(pub String);

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The full output of one child run.
#[derive(Debug)]
pub struct ChildOutput {
    /// Its result line, parsed.
    pub measurement: Measurement,
    /// Everything it printed on stdout after the result line.
    pub rest: String,
}

/// Runs `child` on `workload` and waits at most `timeout`.
pub fn run_child(
    child: &Child,
    workload: &str,
    p: &Params,
    stats: bool,
    timeout: Duration,
) -> Result<ChildOutput, RunError> {
    let mut cmd = Command::new(&child.exe);
    if let Some(so) = &child.preload {
        cmd.env("LD_PRELOAD", so);
    }
    cmd.arg(workload)
        .args(["--scale", &p.scale.to_string()])
        .args(["--threads", &p.threads.to_string()])
        .args(["--seed", &p.seed.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if stats {
        cmd.arg("--stats");
    }
    let mut proc = cmd
        .spawn()
        .map_err(|e| RunError(format!("cannot start {}: {e}", child.exe.display())))?;
    // Drain both pipes on their own threads so that a chatty child never
    // blocks on a full pipe while we wait for it.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(proc.stdout.take().map(|s| Box::new(s) as _));
    let err = drain(proc.stderr.take().map(|s| Box::new(s) as _));
    let start = Instant::now();
    let status = loop {
        match proc.try_wait() {
            Ok(Some(st)) => break Ok(st),
            Ok(None) if start.elapsed() > timeout => {
                let _ = proc.kill();
                let _ = proc.wait();
                break Err(format!(
                    "timed out after {:.0} s (killed)",
                    timeout.as_secs_f64()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => break Err(format!("wait failed: {e}")),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let tail = || {
        let lines: Vec<&str> = stderr.lines().collect();
        let from = lines.len().saturating_sub(6);
        if lines.is_empty() {
            String::new()
        } else {
            format!(": {}", lines[from..].join(" | "))
        }
    };
    let status = status.map_err(|e| RunError(format!("{e}{}", tail())))?;
    if child.preload.is_some() && stderr.contains("ld.so: object") {
        // The loader could not preload it and ran the system allocator.
        return Err(RunError(format!("LD_PRELOAD failed{}", tail())));
    }
    if !status.success() {
        return Err(RunError(format!("{status}{}", tail())));
    }
    let mut lines = stdout.split_inclusive('\n');
    for line in lines.by_ref() {
        if let Some(m) = Measurement::parse(line) {
            return Ok(ChildOutput {
                measurement: m,
                rest: lines.collect(),
            });
        }
    }
    Err(RunError(format!("no result line in its output{}", tail())))
}

/// The measurements of one (workload, allocator) pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cell {
    /// Seconds of each successful run.
    pub times: Vec<f64>,
    /// Peak RSS of each successful run, KiB.
    pub rss_kib: Vec<u64>,
    /// The first failure, if any run failed.
    pub failure: Option<String>,
}

impl Cell {
    /// Median time (mean of the middle two for an even count).
    pub fn median_time(&self) -> Option<f64> {
        if self.failure.is_some() || self.times.is_empty() {
            return None;
        }
        let mut t = self.times.clone();
        t.sort_by(f64::total_cmp);
        let n = t.len();
        Some(if n % 2 == 1 {
            t[n / 2]
        } else {
            (t[n / 2 - 1] + t[n / 2]) / 2.0
        })
    }

    /// Maximum peak RSS, KiB.
    pub fn max_rss_kib(&self) -> Option<u64> {
        if self.failure.is_some() {
            return None;
        }
        self.rss_kib.iter().copied().max()
    }
}

/// Everything the report needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Results {
    /// Workload names (rows).
    pub workloads: Vec<&'static str>,
    /// Allocator names (columns); `system` first when present.
    pub allocators: Vec<&'static str>,
    /// `cells[w][a]`.
    pub cells: Vec<Vec<Cell>>,
    /// The parameters of every run.
    pub params: Params,
    /// Passes made.
    pub passes: usize,
}

impl Results {
    /// The cell of `workload` under `allocator`.
    pub fn cell(&self, workload: &str, allocator: &str) -> Option<&Cell> {
        let w = self.workloads.iter().position(|&n| n == workload)?;
        let a = self.allocators.iter().position(|&n| n == allocator)?;
        Some(&self.cells[w][a])
    }

    /// Whether any run failed.
    pub fn any_failure(&self) -> bool {
        self.cells.iter().flatten().any(|c| c.failure.is_some())
    }
}

fn fmt_kib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// How long one run may take before it is killed as hung: a broken
/// allocator can deadlock, so allow a generous multiple of the second or
/// so a run takes at `scale` (slow allocators, false sharing, debug
/// builds), and no less than 30 s.
pub fn run_timeout(scale: f64) -> Duration {
    Duration::from_secs_f64((60.0 * scale).max(30.0))
}

/// Runs the suite and prints progress (one line per run) on stdout.
pub fn measure(children: &[Child], o: &Options) -> Results {
    let params = Params {
        scale: o.scale,
        threads: o.threads,
        ..Params::default()
    };
    let timeout = run_timeout(o.scale);
    let mut r = Results {
        workloads: o.only.clone(),
        allocators: children.iter().map(|c| c.name).collect(),
        cells: vec![vec![Cell::default(); children.len()]; o.only.len()],
        params,
        passes: 0,
    };
    let max_passes = o.reps.unwrap_or(3);
    let per_pass = o.only.len() * children.len();
    let start = Instant::now();
    while r.passes < max_passes {
        if o.reps.is_none() && r.passes > 0 {
            let pass_time = start.elapsed() / r.passes as u32;
            if start.elapsed() + pass_time > o.budget {
                println!(
                    "(stopping after {} pass{}: another would exceed the {:.0} s budget)",
                    r.passes,
                    if r.passes == 1 { "" } else { "es" },
                    o.budget.as_secs_f64()
                );
                break;
            }
        }
        let pass = r.passes + 1;
        let mut k = 0;
        for (wi, &w) in o.only.iter().enumerate() {
            for (ai, c) in children.iter().enumerate() {
                k += 1;
                let cell = &mut r.cells[wi][ai];
                if cell.failure.is_some() {
                    continue; // it failed once: do not wait on it again
                }
                let head = format!(
                    "[pass {pass}/{max_passes} {k:>2}/{per_pass}] {w:<14} {:<9}",
                    c.name
                );
                match run_child(c, w, &params, false, timeout) {
                    Ok(out) => {
                        let m = out.measurement;
                        println!(
                            "{head} {:>8.3} s {:>11}",
                            m.seconds,
                            fmt_kib(m.peak_rss_kib)
                        );
                        cell.times.push(m.seconds);
                        cell.rss_kib.push(m.peak_rss_kib);
                    }
                    Err(e) => {
                        println!("{head}   FAILED: {e}");
                        cell.failure = Some(e.0);
                    }
                }
            }
        }
        r.passes += 1;
    }
    r
}

/// Where the chart goes by default: `<target dir>/bsdalloc-report.svg`
/// when this binary runs from `<target dir>/<profile>/`, else the current
/// directory.
pub fn default_svg_path(exe_dir: &Path) -> PathBuf {
    let name = "bsdalloc-report.svg";
    let profile_dir = exe_dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| matches!(n, "release" | "debug") || exe_dir.join("build").is_dir());
    match exe_dir.parent() {
        Some(target) if profile_dir => target.join(name),
        _ => PathBuf::from(name),
    }
}

/// When this binary was started by `cargo run` (cargo's `CARGO` and
/// `CARGO_MANIFEST_DIR` are in the environment) from a cargo target
/// directory (`exe_dir` is `<target>/<profile>`, `<target>` holds cargo's
/// `CACHEDIR.TAG`), builds every binary of the package and
/// `libbsdalloc.so` (package `bsdalloc-capi`) for the same profile,
/// target directory and features, so that the `wl-*` children and the
/// C library exist and match the sources. A failed build is reported and the suite
/// goes on with the children that exist.
pub fn build_children(exe_dir: &Path) {
    let (Some(cargo), Some(manifest_dir)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return;
    };
    let Some(profile) = exe_dir.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let Some(target_dir) = exe_dir.parent() else {
        return;
    };
    if !target_dir.join("CACHEDIR.TAG").is_file() {
        return;
    }
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(Path::new(&manifest_dir).join("Cargo.toml"))
        .args(["--package", env!("CARGO_PKG_NAME"), "--bins"])
        // libbsdalloc.so, for the kmem-C column (capi's only target).
        .args(["--package", "bsdalloc-capi", "--lib"])
        .arg("--target-dir")
        .arg(target_dir)
        .stdin(Stdio::null());
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    if cfg!(feature = "compare") {
        cmd.args(["--features", "compare"]);
    }
    println!(
        "bringing the wl-* children and libbsdalloc.so up to date (cargo build, {profile} profile)"
    );
    match cmd.status() {
        Ok(st) if st.success() => {}
        Ok(st) => println!("  note: cargo build {st}; running the children that exist"),
        Err(e) => println!("  note: cannot run cargo ({e}); running the children that exist"),
    }
}

/// Warns about children older than this runner: built from older
/// workloads (typically `wl-mimalloc`/`wl-jemalloc` left from an earlier
/// `--features compare` build), they may not measure the same work.
fn note_stale(children: &[Child]) {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(me) = std::env::current_exe().ok().and_then(|e| mtime(&e)) else {
        return;
    };
    let mut seen = Vec::new();
    for c in children {
        if seen.contains(&&c.exe) {
            continue;
        }
        seen.push(&c.exe);
        if mtime(&c.exe).is_some_and(|t| t < me) {
            let how = match c.name {
                "mimalloc" | "jemalloc" => "cargo build --release --bins --features compare",
                _ => "cargo build --release --bins",
            };
            println!(
                "  note: {} is older than this runner and may be stale (rebuild: {how})",
                c.exe.display()
            );
        }
    }
}

/// The whole main job for `o`; returns the process's exit status
/// (0 when every run succeeded).
pub fn run_suite(o: &Options) -> u8 {
    let exe_dir = match &o.bin_dir {
        Some(d) => d.clone(),
        None => match std::env::current_exe() {
            Ok(exe) => exe.parent().map(Path::to_path_buf).unwrap_or_default(),
            Err(e) => {
                eprintln!("bsdalloc: cannot locate this executable ({e}); pass --bin-dir");
                return 1;
            }
        },
    };
    if o.build && o.bin_dir.is_none() {
        build_children(&exe_dir);
    }
    let Discovery { children, notes } = discover(&exe_dir, o.peers);
    println!(
        "bsdalloc allocator suite: {} workload{}, scale {}, {} thread{}, children from {}",
        o.only.len(),
        if o.only.len() == 1 { "" } else { "s" },
        o.scale,
        o.threads,
        if o.threads == 1 { "" } else { "s" },
        exe_dir.display()
    );
    if children.is_empty() {
        eprintln!(
            "bsdalloc: no wl-* workload binaries in {}; build them with `cargo build --release --bins`",
            exe_dir.display()
        );
        return 1;
    }
    for name in ["system", "kmem"] {
        if !children.iter().any(|c| c.name == name) {
            println!(
                "  note: wl-{name} not found: build with `cargo build --release --bins`; running without {name}"
            );
        }
    }
    for n in &notes {
        println!("  note: {n}");
    }
    println!(
        "  allocators: {}",
        children
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let preloaded: Vec<String> = children
        .iter()
        .filter_map(|c| {
            let so = c.preload.as_ref()?;
            Some(format!("{} = {}", c.name, so.display()))
        })
        .collect();
    if !preloaded.is_empty() {
        println!("  wl-system under LD_PRELOAD: {}", preloaded.join(", "));
    }
    note_stale(&children);
    let start = Instant::now();
    let results = measure(&children, o);
    println!(
        "measured in {:.1} s ({} pass{})\n",
        start.elapsed().as_secs_f64(),
        results.passes,
        if results.passes == 1 { "" } else { "es" }
    );
    if o.reps.is_none() && results.passes < 3 {
        println!(
            "warning: {} per (workload, allocator) pair, not 3: the {:.0} s budget allowed no more on this machine; single runs swing by 10-15% here, so read small differences with care (--reps 3, or --budget SECS)\n",
            if results.passes == 1 {
                "one run".to_string()
            } else {
                format!("{} runs", results.passes)
            },
            o.budget.as_secs_f64()
        );
    }
    print!("{}", report::tables(&results));

    if let Some(path) = &o.json {
        match report::write_json(&results, path) {
            Ok(()) => println!("\nresults as JSON: {}", path.display()),
            Err(e) => {
                eprintln!("bsdalloc: cannot write {}: {e}", path.display());
                return 1;
            }
        }
    }

    let svg_path = o.svg.clone().unwrap_or_else(|| default_svg_path(&exe_dir));
    match report::write_svg(&results, &svg_path) {
        Ok(()) => println!(
            "\nchart (time and peak memory, relative to the system allocator): {}",
            svg_path.display()
        ),
        Err(e) => {
            eprintln!(
                "bsdalloc: cannot write the chart to {}: {e}",
                svg_path.display()
            );
            return 1;
        }
    }

    let mut status = u8::from(results.any_failure());
    if o.stats {
        if let Some(kmem) = children.iter().find(|c| c.name == "kmem") {
            status |= print_kmem_stats(kmem, &results.params);
        }
    }
    status
}

/// One more kmem run, of `mstress` (the widest spread of sizes and
/// threads), with `--stats`: prints what wl-kmem prints after its result
/// line, its zone (`vmstat -z`) and malloc-type (`vmstat -m`) statistics.
fn print_kmem_stats(kmem: &Child, p: &Params) -> u8 {
    const W: &str = "mstress";
    println!("\nkmem statistics after one `{W}` run (wl-kmem {W} --stats):");
    let timeout = run_timeout(p.scale);
    match run_child(kmem, W, p, true, timeout) {
        Ok(out) => {
            print!("{}", out.rest);
            0
        }
        Err(e) => {
            println!("  FAILED: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_options() {
        let Mode::Suite(o) =
            parse_args(&args("--only larson,mstress --scale 0.5 --reps 2")).unwrap()
        else {
            panic!("not a suite")
        };
        assert_eq!(o.only, ["larson", "mstress"]);
        assert_eq!((o.scale, o.reps), (0.5, Some(2)));
        let Mode::Suite(q) = parse_args(&args("--quick")).unwrap() else {
            panic!("not a suite")
        };
        assert_eq!((q.scale, q.reps), (QUICK_SCALE, Some(1)));
        assert_eq!(parse_args(&args("--vmem-scaling")), Ok(Mode::VmemScaling));
        let Mode::Suite(n) =
            parse_args(&args("--no-build --no-stats --no-peers --json r.json")).unwrap()
        else {
            panic!("not a suite")
        };
        assert!(!n.build && !n.stats && !n.peers);
        assert_eq!(n.json, Some(PathBuf::from("r.json")));
        for bad in [
            "--only nope",
            "--only ,",
            "--scale",
            "--scale 0",
            "--threads x",
            "--reps 0",
            "--json",
            "--frobnicate",
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn medians_and_maxima() {
        let c = Cell {
            times: vec![3.0, 1.0, 2.0, 10.0],
            rss_kib: vec![5, 9, 7, 1],
            failure: None,
        };
        assert_eq!(c.median_time(), Some(2.5));
        assert_eq!(c.max_rss_kib(), Some(9));
        let f = Cell {
            failure: Some("boom".into()),
            ..c
        };
        assert_eq!(f.median_time(), None);
    }

    #[test]
    fn discovers_preloaded_columns_and_says_what_is_missing() {
        let dir = std::env::temp_dir().join(format!("bsdalloc-discover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["wl-system", "wl-kmem", "libbsdalloc.so"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let fake =
            |file: &str| (file == "libjemalloc.so.2").then(|| PathBuf::from("/x/libjemalloc.so.2"));
        let d = discover_with(&dir, true, fake);
        let names: Vec<_> = d.children.iter().map(|c| c.name).collect();
        assert_eq!(names, ["system", "kmem", "kmem-C", "jemalloc"]);
        assert_eq!(d.children[2].exe, dir.join("wl-system"));
        assert_eq!(d.children[2].preload, Some(dir.join("libbsdalloc.so")));
        assert_eq!(
            d.children[3].preload,
            Some(PathBuf::from("/x/libjemalloc.so.2"))
        );
        assert_eq!(d.notes.len(), 1, "{:?}", d.notes);
        assert!(
            d.notes[0].starts_with("mimalloc, tcmalloc not installed"),
            "{:?}",
            d.notes
        );
        assert!(
            d.notes[0].contains("libmimalloc2.0 libtcmalloc-minimal4"),
            "{:?}",
            d.notes
        );
        // --no-peers: none, and no note about them.
        let d = discover_with(&dir, false, fake);
        assert_eq!(d.children.len(), 3);
        assert!(d.notes.is_empty());
        // No libbsdalloc.so: one line saying how to build it.
        std::fs::remove_file(dir.join("libbsdalloc.so")).unwrap();
        let d = discover_with(&dir, false, fake);
        assert!(
            d.notes[0].contains("cargo build --release -p bsdalloc-capi"),
            "{:?}",
            d.notes
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn svg_next_to_the_target_dir() {
        assert_eq!(
            default_svg_path(Path::new("/x/target/release")),
            Path::new("/x/target/bsdalloc-report.svg")
        );
        assert_eq!(
            default_svg_path(Path::new("/usr/local/bin")),
            Path::new("bsdalloc-report.svg")
        );
    }
}
