//! When profiles are written besides [`dump`](super::dump) calls: at exit
//! (`BSDALLOC_PROF=heap`), every `BSDALLOC_PROF_DUMP` seconds, and on
//! `BSDALLOC_PROF_SIGNAL`. Files are `<prefix>.<pid>.<n>.heap.pb.gz` (and
//! `.collapsed`, `.svg`), `n` counting from 0.
//!
//! The periodic and signalled dumps run on a thread of their own (started
//! with `pthread_create` at the first slow allocation after the build, not
//! from inside an allocation's locks); the signal handler only sets a flag
//! that the thread polls every 100 ms.

use core::cell::UnsafeCell;

use super::sync::{AtomicBool, AtomicU64, Ordering};

const PREFIX_MAX: usize = 240;

struct Prefix(UnsafeCell<([u8; PREFIX_MAX], usize)>);

// SAFETY: written once by `configure` (while kmem builds itself, before
// any dump can run: dumps start after `start`, which follows), then only
// read.
unsafe impl Sync for Prefix {}

static PREFIX: Prefix = Prefix(UnsafeCell::new(([0; PREFIX_MAX], 0)));
static SEQ: AtomicU64 = AtomicU64::new(0);
static PERIOD_S: AtomicU64 = AtomicU64::new(0);
static SIGNAL: AtomicU64 = AtomicU64::new(0);
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Records the environment's choices (no allocation).
pub(crate) fn configure(prefix: Option<&[u8]>, period_s: Option<u64>, signal: Option<u64>) {
    if let Some(p) = prefix.filter(|p| !p.is_empty() && p.len() <= PREFIX_MAX) {
        // SAFETY: see `Prefix`: nobody reads it yet.
        let cell = unsafe { &mut *PREFIX.0.get() };
        cell.0[..p.len()].copy_from_slice(p);
        cell.1 = p.len();
    }
    PERIOD_S.store(period_s.unwrap_or(0), Ordering::Relaxed);
    SIGNAL.store(signal.unwrap_or(0), Ordering::Relaxed);
}

fn prefix() -> String {
    // SAFETY: see `Prefix`: only read after `configure`.
    let cell = unsafe { &*PREFIX.0.get() };
    if cell.1 == 0 {
        "bsdalloc".to_string()
    } else {
        String::from_utf8_lossy(&cell.0[..cell.1]).into_owned()
    }
}

/// Writes the next numbered profile.
pub(crate) fn dump_numbered() -> std::io::Result<()> {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let p = super::heap::HeapProfile::collect();
    p.write_files(std::path::Path::new(&format!("{}.{pid}.{n}", prefix())))
}

extern "C" fn on_signal(_: libc::c_int) {
    REQUESTED.store(true, Ordering::Relaxed);
}

extern "C" fn dumper(_: *mut libc::c_void) -> *mut libc::c_void {
    let period_ms = PERIOD_S.load(Ordering::Relaxed).saturating_mul(1000);
    let mut waited = 0u64;
    loop {
        // SAFETY: a plain sleep.
        unsafe { libc::usleep(100_000) };
        waited += 100;
        let due = period_ms != 0 && waited >= period_ms;
        if due || REQUESTED.swap(false, Ordering::Relaxed) {
            waited = 0;
            let _ = super::sample::guarded(|| {
                if let Err(e) = dump_numbered() {
                    crate::report::warn(format_args!("kmem: heap profile: {e}"));
                }
            });
        }
    }
}

/// Starts the dumper thread and the signal handler, if asked for.
pub(crate) fn spawn() {
    let signal = SIGNAL.load(Ordering::Relaxed);
    if PERIOD_S.load(Ordering::Relaxed) == 0 && signal == 0 {
        return;
    }
    if signal != 0 && signal < 64 {
        // SAFETY: a zeroed sigaction with a handler that only stores to an
        // atomic (async-signal-safe).
        unsafe {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(signal as libc::c_int, &sa, core::ptr::null_mut());
        }
    }
    let mut t: libc::pthread_t = 0;
    // SAFETY: a detached thread running `dumper`, which takes no argument.
    unsafe {
        if libc::pthread_create(&mut t, core::ptr::null(), dumper, core::ptr::null_mut()) == 0 {
            libc::pthread_detach(t);
        }
    }
}
