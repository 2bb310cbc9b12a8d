//! Helpers of the tests that run C programs under the library: build
//! the library, compile a program, run it under a timeout, compare runs.
#![allow(dead_code)] // each test file uses some of them

use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The library under test: built here with the same cargo, profile and
/// target directory as this test (cargo does not build a cdylib for an
/// integration test, and a library left over from an earlier build could
/// be stale). Built once per test process.
pub fn lib() -> PathBuf {
    static LIB: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    LIB.get_or_init(build_lib)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

pub fn build_lib() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // <target>/<profile>/deps/preload-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("no profile directory")?;
    let target = profile_dir.parent().ok_or("no target directory")?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("profile name")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["build", "-p", "bsdalloc-capi", "--lib", "--target-dir"])
        .arg(target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile {
        "debug" => {}
        "release" => {
            c.arg("--release");
        }
        other => {
            c.args(["--profile", other]);
        }
    }
    let r = run(&mut c, 600);
    if !r.ok() {
        return Err(format!("building libbsdalloc.so failed:\n{}", r.describe()));
    }
    let lib = profile_dir.join("libbsdalloc.so");
    if !lib.exists() {
        return Err(format!("{} missing after the build", lib.display()));
    }
    Ok(lib)
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("capi")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

pub fn src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("c")
        .join(name)
}

/// Compiles `tests/c/<name>` into `dir`; returns the executable.
pub fn gcc(name: &str, dir: &Path, extra: &[&str]) -> PathBuf {
    let out = dir.join(name.trim_end_matches(".c"));
    let r = run(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-pthread", "-o"])
            .arg(&out)
            .arg(src(name))
            .args(extra),
        60,
    );
    assert!(r.ok(), "gcc {name} failed:\n{}", r.describe());
    out
}

pub struct Ran {
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub secs: f64,
    pub what: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    pub fn describe(&self) -> String {
        let status = match self.status {
            None => "timed out (killed)".to_string(),
            Some(s) => match s.signal() {
                Some(sig) => format!("killed by signal {sig}"),
                None => format!("exit {}", s.code().unwrap_or(-1)),
            },
        };
        let tail = |b: &[u8]| {
            let s = String::from_utf8_lossy(b);
            let skip = s.len().saturating_sub(3000);
            let mut start = skip;
            while !s.is_char_boundary(start) {
                start += 1;
            }
            s[start..].to_string()
        };
        format!(
            "{}: {} after {:.2}s\n--- stdout (tail)\n{}\n--- stderr (tail)\n{}",
            self.what,
            status,
            self.secs,
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }
}

/// Runs `cmd` to completion or until `timeout_s`, capturing its output,
/// with core dumps off.
pub fn run(cmd: &mut Command, timeout_s: u64) -> Ran {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the
    // parent; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &zero);
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = start + Duration::from_secs(timeout_s);
    let status = loop {
        match child.try_wait().expect("wait") {
            Some(s) => break Some(s),
            None if Instant::now() >= deadline => {
                // Kill the whole process group would be nicer; the child
                // itself is enough for our programs (their children exit
                // on EOF or are reaped with the pipes closed).
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    Ran {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
        secs: start.elapsed().as_secs_f64(),
        what,
    }
}

/// `cmd` with the library preloaded.
pub fn preload(cmd: &mut Command) -> &mut Command {
    cmd.env("LD_PRELOAD", lib())
}

/// Runs a test program under LD_PRELOAD and requires success.
pub fn run_ok(cmd: &mut Command, timeout_s: u64) -> Ran {
    let r = run(preload(cmd), timeout_s);
    assert!(r.ok(), "{}", r.describe());
    assert!(
        !r.err().contains("bsdalloc:"),
        "allocator report:\n{}",
        r.describe()
    );
    eprintln!("{} ({:.2}s)", r.out().trim_end(), r.secs);
    r
}

/// The path of `prog` on PATH, if installed.
pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// Runs the command `make()` builds twice, without and with the library
/// preloaded, and requires the same successful exit and the same stdout.
pub fn same_with_and_without(name: &str, timeout_s: u64, make: impl Fn() -> Command) {
    let plain = run(&mut make(), timeout_s);
    assert!(
        plain.ok(),
        "{name} without LD_PRELOAD:\n{}",
        plain.describe()
    );
    let pre = run(preload(&mut make()), timeout_s);
    assert!(pre.ok(), "{name} under LD_PRELOAD:\n{}", pre.describe());
    let err = pre.err();
    assert!(
        !err.contains("bsdalloc:") && !err.contains("LD_PRELOAD"),
        "{name} under LD_PRELOAD reported:\n{}",
        pre.describe()
    );
    if plain.stdout != pre.stdout {
        let a = plain.out();
        let b = pre.out();
        let mut msg = format!(
            "{name}: output differs under LD_PRELOAD ({} vs {} bytes)\n",
            a.len(),
            b.len()
        );
        for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
            if x != y {
                let _ = write!(msg, "first difference, line {}:\n  -{x}\n  +{y}\n", i + 1);
                break;
            }
        }
        panic!("{msg}");
    }
    eprintln!(
        "{name}: {} bytes of identical output ({:.2}s plain, {:.2}s preloaded)",
        plain.stdout.len(),
        plain.secs,
        pre.secs
    );
}

/// A deterministic text file: `lines` lines of `key<k> <n> <words...>`.
pub fn text_input(path: &Path, lines: usize) {
    const WORDS: [&str; 16] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    ];
    let mut s: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut out = String::with_capacity(lines * 48);
    for _ in 0..lines {
        let r = next();
        let _ = write!(out, "key{} {}", r % 5000, (r >> 16) % 1_000_000);
        for _ in 0..(r >> 40) % 6 + 1 {
            out.push(' ');
            out.push_str(WORDS[(next() % 16) as usize]);
        }
        out.push('\n');
    }
    std::fs::write(path, out).expect("write input");
}

pub fn sh(script: &str, dir: &Path) -> Command {
    let mut c = Command::new("bash");
    c.arg("-c").arg(script).current_dir(dir).env("LC_ALL", "C");
    c
}

pub fn skip(what: &str) {
    eprintln!("skipped: {what} is not installed");
}
