//! Seed 000 through `LD_PRELOAD` (the reproduction): a C program
//! (`tests/c/fragment.c`) fills the heap with small blocks, frees them,
//! calls `malloc_trim(0)` and asks for 1 MiB blocks again, under an
//! address-space limit (`setrlimit(RLIMIT_AS)`, what `ulimit -v` sets) and
//! under `BSDALLOC_LIMIT`. Every 1 MiB block it got before the fill it
//! must get again, and `malloc_trim` must say 1 only when it released
//! memory.
//!
//! The library is built here as `preload.rs` builds it (same cargo,
//! profile and target directory).

mod common;

use common::lib;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn program() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("capi-fragment");
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let out = dir.join("fragment");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/fragment.c");
        let r = Command::new("gcc")
            .args(["-O2", "-Wall", "-o"])
            .arg(&out)
            .arg(&src)
            .output()
            .expect("run gcc");
        assert!(
            r.status.success(),
            "gcc fragment.c failed:\n{}",
            String::from_utf8_lossy(&r.stderr)
        );
        out
    })
    .clone()
}

/// The figures one run printed.
#[derive(Debug)]
struct Figures {
    before: i64,
    filled: i64,
    after: i64,
    trim: (i64, i64),
    /// MiB of the limit the page metadata took after the first probe:
    /// leaves it reserved (the "address space N KiB" of `malloc_stats`)
    /// and 8 for each leaf the OS refused ("N leaves refused").
    meta_mib: i64,
}

/// The figure just before `what` in the `malloc_stats` output that follows
/// the line `mark` in `stderr`.
fn stat(stderr: &str, mark: &str, what: &str) -> i64 {
    let at = stderr
        .find(mark)
        .unwrap_or_else(|| panic!("no {mark:?} in stderr:\n{stderr}"));
    let rest = &stderr[at..];
    let end = rest
        .find(what)
        .unwrap_or_else(|| panic!("no {what:?} after {mark:?}:\n{rest}"));
    rest[..end]
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable {what:?} after {mark:?}:\n{rest}"))
}

/// MiB of the limit the page metadata took between the `malloc_stats`
/// outputs after `from` and after `to`.
fn meta_mib(stderr: &str, from: &str, to: &str) -> i64 {
    let reserved = stat(stderr, to, " KiB, ") - stat(stderr, from, " KiB, ");
    let refused = stat(stderr, to, " leaves refused") - stat(stderr, from, " leaves refused");
    (reserved + 1023) / 1024 + 8 * refused
}

fn run(size: usize, n: usize, limit_mib: usize, mode: &str) -> Figures {
    let mut c = Command::new(program());
    c.args([
        size.to_string(),
        n.to_string(),
        limit_mib.to_string(),
        mode.to_string(),
    ])
    .env("LD_PRELOAD", lib())
    .env("BSDALLOC_TIMEOUT_MS", "0");
    if mode == "env" {
        c.env("BSDALLOC_LIMIT", format!("{limit_mib}M"));
    }
    let out = c.output().expect("run fragment");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && !stderr.contains("bsdalloc:"),
        "fragment {size} {n} {limit_mib} {mode}: {}\n{stdout}\n{stderr}",
        out.status
    );
    let w: Vec<i64> = stdout
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    assert_eq!(w.len(), 5, "unexpected output: {stdout}");
    let f = Figures {
        before: w[0],
        filled: w[1],
        after: w[2],
        trim: (w[3], w[4]),
        meta_mib: meta_mib(&stderr, "== fill", "== end"),
    };
    eprintln!("fragment.c size {size} n {n} limit {limit_mib} MiB {mode}: {f:?}");
    f
}

fn check(size: usize, limit_mib: usize, mode: &str) {
    // A quarter of the limit, and past it (the fill stops at NULL).
    for n in [(limit_mib << 20) / 4 / size, 4 * (limit_mib << 20) / size] {
        let f = run(size, n, limit_mib, mode);
        assert!(f.before > 0 && f.filled > 0, "{f:?}");
        // Page metadata reserved (or refused) after the first probe took
        // its share of the limit: that is where ASLR put the chunks, not
        // fragmentation.
        assert!(
            f.after + 2 + f.meta_mib >= f.before,
            "only {} of {} 1 MiB blocks after filling with {} blocks of {size} B: {f:?}",
            f.after,
            f.before,
            f.filled
        );
        assert_eq!(
            f.trim.0, 1,
            "malloc_trim released nothing after the frees: {f:?}"
        );
        assert_eq!(
            f.trim.1, 0,
            "a second malloc_trim reported a release: {f:?}"
        );
    }
}

#[test]
fn fragment_c_64_bytes_under_ulimit_v() {
    check(64, 64, "rlimit");
}

#[test]
fn fragment_c_3000_bytes_under_ulimit_v() {
    check(3000, 64, "rlimit");
}

#[test]
fn fragment_c_64_bytes_under_bsdalloc_limit() {
    check(64, 64, "env");
}

#[test]
fn fragment_c_3000_bytes_under_bsdalloc_limit() {
    check(3000, 64, "env");
}
