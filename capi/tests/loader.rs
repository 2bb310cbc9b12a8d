//! libbsdalloc.so next to the dynamic loader: TLS of `dlopen`ed modules
//! beside ours (`tlsmods.c`), no `__tls_get_addr` call from the allocator
//! once it runs (`tls_get_addr.c`), `dlopen` of the library itself
//! (`dlopen.c`), and what the library needs from the loader (its
//! `NEEDED` entries, no unwinder symbols exported).
//!
//! Every child runs under a timeout; the library is built by the test
//! itself, as in `preload.rs`.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// More modules than glibc's DTV surplus (14): the DTV grows.
const MODS: usize = 24;

/// Compiles `MODS` modules `d/libtlsN.so`, each with a 256-byte
/// `__thread` array `tlsbufN` and its getter `tlsN`.
fn tls_modules(d: &Path) {
    for i in 1..=MODS {
        let c = d.join(format!("tls{i}.c"));
        std::fs::write(
            &c,
            format!("__thread char tlsbuf{i}[256];\nvoid *tls{i}(void) {{ return tlsbuf{i}; }}\n"),
        )
        .expect("write module");
    }
    // One gcc call per module, several at once.
    let mut kids: Vec<_> = (1..=MODS)
        .map(|i| {
            Command::new("gcc")
                .args(["-shared", "-fPIC", "-O1", "-o"])
                .arg(d.join(format!("libtls{i}.so")))
                .arg(d.join(format!("tls{i}.c")))
                .spawn()
                .expect("gcc")
        })
        .collect();
    for k in &mut kids {
        assert!(
            k.wait().expect("gcc").success(),
            "gcc of a TLS module failed"
        );
    }
}

#[test]
fn c_dynamic_tls_modules_next_to_ours() {
    let d = scratch("tlsmods");
    tls_modules(&d);
    let exe = gcc("tlsmods.c", &d, &["-ldl"]);
    run_ok(Command::new(&exe).arg(&d).arg(MODS.to_string()), 60);
}

/// The allocator never calls `__tls_get_addr` once running (a call
/// under one of its locks can wait for the loader's lock, which a
/// `dlopen` holds while it calls `malloc`: a deadlock, seen 2026-12-06).
/// The program interposes `__tls_get_addr` and counts the calls made
/// from the library while threads churn blocks of every kind and the
/// main thread opens and closes modules with TLS; the library before
/// the fix made about 140,000 of them in this run. Then again with the
/// heap profiler sampling every 64 KiB and a profile written meanwhile,
/// and in debug mode: their roads too.
#[test]
fn c_no_tls_get_addr_from_the_allocator() {
    let d = scratch("tls_get_addr");
    tls_modules(&d);
    let exe = gcc("tls_get_addr.c", &d, &["-ldl", "-rdynamic"]);
    let run_with = |env: &[(&str, &str)]| {
        let mut c = Command::new(&exe);
        c.arg(&d)
            .arg(MODS.to_string())
            .arg("30")
            .envs(env.iter().copied());
        run_ok(&mut c, 120);
    };
    run_with(&[]);
    let prefix = d.join("prof").to_string_lossy().into_owned();
    run_with(&[
        ("BSDALLOC_PROF", "heap"),
        ("BSDALLOC_PROF_INTERVAL", "64K"),
        ("BSDALLOC_PROF_PREFIX", &prefix),
        ("TGA_DUMP", &prefix),
    ]);
    assert!(
        Path::new(&format!("{prefix}.collapsed")).exists(),
        "no profile written"
    );
    run_with(&[("BSDALLOC_DEBUG", "all")]);
}

#[test]
fn c_dlopen_of_the_library() {
    let d = scratch("dlopen");
    let exe = gcc("dlopen.c", &d, &["-ldl"]);
    // Not preloaded: the process runs on glibc's malloc and dlopens ours.
    let r = run(Command::new(&exe).arg(lib()), 60);
    assert!(r.ok(), "{}", r.describe());
    eprintln!("{} ({:.2}s)", r.out().trim_end(), r.secs);
}

/// Every program run under the preload maps what the library needs: keep it
/// to libc and the loader (libm came in once with the profiler's `ln`, and
/// cost small programs about 350 KiB resident; libgcc_s, for std's and the
/// profiler's unwinder, cost every process about 150 us of its start: the
/// unwinder is linked in, see build.rs).
#[test]
fn c_library_needs_only_libc_and_the_loader() {
    let Some(readelf) = which("readelf") else {
        return skip("readelf not installed");
    };
    let r = run_ok(Command::new(&readelf).arg("-d").arg(lib()), 60);
    let out = r.out();
    let needed: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(!needed.is_empty(), "no NEEDED entries read:\n{out}");
    for n in &needed {
        let ok = ["libc.so.", "ld-linux"].iter().any(|p| n.starts_with(p));
        assert!(ok, "libbsdalloc.so needs {n} (all: {needed:?})");
    }
    // The unwinder linked in stays private: a C++ program's exceptions
    // are thrown and caught by its own libgcc_s.
    let r = run_ok(
        Command::new(readelf).args(["--dyn-syms", "-W"]).arg(lib()),
        60,
    );
    let syms = r.out();
    let exported: Vec<&str> = syms
        .lines()
        .filter(|l| !l.contains(" UND ") && l.contains("_Unwind_"))
        .collect();
    assert!(
        exported.is_empty(),
        "unwinder symbols exported: {exported:?}"
    );
}
