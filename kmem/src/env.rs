//! The `BSDALLOC_*` environment options, read once when kmem starts, for
//! every program kmem runs in: a Rust program using [`Kmem`](crate::Kmem)
//! as its global allocator as much as a C program under `LD_PRELOAD`
//! (whose library reads them too, from its constructor).
//!
//! | variable | effect |
//! |---|---|
//! | `BSDALLOC_STATS=1` | [`write_stats`](crate::write_stats) on stderr when the process exits |
//! | `BSDALLOC_TIMEOUT_MS=N` | the lazy timeout's period ([`set_timeout_period`](crate::set_timeout_period); `0` off) |
//! | `BSDALLOC_BAD_FREE=abort\|warn\|ignore` | what a bad free does (default `abort`): `warn` prints the report and drops the operation, `ignore` drops it silently; a hook set with [`set_report_hook`](crate::set_report_hook) wins |
//! | `BSDALLOC_LIMIT=512M` | the memory limit ([`set_limit`](crate::set_limit); read by the pressure module) |
//! | `BSDALLOC_PROF=heap,leaks` and `BSDALLOC_PROF_*` | sampled heap profiles ([`prof`](crate::prof)) |
//!
//! Read with `getenv` (no allocation) by the thread that builds the
//! allocator, before anything else is built; the page size is checked
//! there too (kmem assumes 4 KiB pages: [`PAGE_SIZE`](crate::PAGE_SIZE)).
//! The statistics are written at exit by a `.fini_array` entry (run by
//! `exit` after the `atexit` handlers) through a stack buffer; under the C
//! ABI the library's own destructor writes them instead (this one sees
//! that `malloc` is kmem's and stays quiet), so they are written once.

// Under loom the exit hook and the timeout are compiled out.
#![cfg_attr(loom, allow(dead_code))]

use crate::sync::plain::{AtomicBool, Ordering};
use core::fmt;

use crate::os::PAGE_SIZE;

/// `BSDALLOC_STATS` asked for the statistics at exit.
static STATS_AT_EXIT: AtomicBool = AtomicBool::new(false);

/// The value of environment variable `name`, without allocating.
fn var(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: a NUL-terminated name; getenv returns null or a
    // NUL-terminated string that lives as long as the environment entry
    // (kmem reads it at once and never keeps it past `init`'s callers).
    let v = unsafe { libc::getenv(name.as_ptr()) };
    // SAFETY: non-null getenv results are NUL-terminated strings.
    (!v.is_null()).then(|| unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes())
}

/// A decimal number (at most 12 digits); `None` if it is not one.
pub(crate) fn parse_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 12 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Whether a `BSDALLOC_STATS` value turns the statistics on.
pub(crate) fn truthy(v: &[u8]) -> bool {
    !v.is_empty() && v != b"0"
}

/// Called first thing when kmem builds itself: checks the page size
/// (aborting with a clear message if it is not 4 KiB: nothing would work)
/// and reads the options.
pub(crate) fn init() {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page != PAGE_SIZE as libc::c_long {
        crate::report::fatal(format_args!(
            "bsdalloc: kmem needs {PAGE_SIZE}-byte pages and this system's are {page} bytes \
             (only Linux with 4 KiB pages is supported): aborting"
        ));
    }
    if let Some(v) = var(c"BSDALLOC_STATS") {
        STATS_AT_EXIT.store(truthy(v), Ordering::Relaxed);
    }
    #[cfg(not(loom))]
    if let Some(ms) = var(c"BSDALLOC_TIMEOUT_MS").and_then(parse_u64) {
        crate::timeout::set_timeout_period(Some(core::time::Duration::from_millis(ms)));
    }
    crate::prof::init_from_env(var);
    match var(c"BSDALLOC_BAD_FREE") {
        Some(b"warn") if !crate::report::hook_installed() => {
            crate::report::set_report_hook(Some(warn_report));
        }
        Some(b"ignore") if !crate::report::hook_installed() => {
            crate::report::set_report_hook(Some(ignore_report));
        }
        _ => {}
    }
}

fn warn_report(r: &crate::Report) {
    crate::report::warn(format_args!(
        "bsdalloc: {r} (ignored: BSDALLOC_BAD_FREE=warn)"
    ));
}

fn ignore_report(_: &crate::Report) {}

/// Whether `BSDALLOC_STATS` asked for the statistics at exit.
pub(crate) fn stats_at_exit() -> bool {
    STATS_AT_EXIT.load(Ordering::Relaxed)
}

/// A `fmt::Write` to standard error through a 4 KiB buffer of its own:
/// formatting that never allocates, for code that runs inside the
/// allocator (report hooks, exit handlers, `malloc_stats`). Output goes out
/// when the buffer fills and on [`flush`](StderrWriter::flush) or drop;
/// an interrupted write is retried, a closed stderr drops the rest.
pub struct StderrWriter {
    buf: [u8; 4096],
    len: usize,
}

impl StderrWriter {
    /// An empty writer (lives on the stack: 4 KiB).
    pub const fn new() -> StderrWriter {
        StderrWriter {
            buf: [0; 4096],
            len: 0,
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) {
        let mut off = 0;
        while off < self.len {
            // SAFETY: writes the filled part of our own buffer to fd 2.
            let n = unsafe { libc::write(2, self.buf[off..].as_ptr().cast(), self.len - off) };
            if n > 0 {
                off += n as usize;
            } else if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            } else {
                break; // stderr closed or broken: drop the rest
            }
        }
        self.len = 0;
    }
}

impl fmt::Debug for StderrWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StderrWriter")
            .field("buffered", &self.len)
            .finish()
    }
}

impl Default for StderrWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StderrWriter {
    fn drop(&mut self) {
        self.flush();
    }
}

impl fmt::Write for StderrWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(self.buf.len()) {
            if self.len + chunk.len() > self.buf.len() {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        Ok(())
    }
}

/// Writes [`write_stats`](crate::write_stats) to stderr without allocating.
pub(crate) fn print_stats() {
    let mut w = StderrWriter::new();
    let _ = fmt::Write::write_str(
        &mut w,
        "bsdalloc: kmem statistics at exit (BSDALLOC_STATS)\n",
    );
    let _ = crate::write_stats(&mut w);
    w.flush();
}

/// The exit hook: prints the statistics if `BSDALLOC_STATS` asked for
/// them, unless `malloc` is kmem's (the C ABI's destructor prints them).
extern "C" fn at_exit() {
    if !stats_at_exit() {
        return;
    }
    // SAFETY: malloc/free of one byte; a null result is handled.
    let under_capi = unsafe {
        let p = libc::malloc(1);
        let ours = !p.is_null() && crate::owns(p.cast());
        libc::free(p);
        ours
    };
    if !under_capi {
        print_stats();
    }
}

#[cfg(not(loom))]
#[used]
#[link_section = ".fini_array"]
static AT_EXIT: extern "C" fn() = at_exit;
