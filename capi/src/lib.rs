//! # bsdalloc-capi: kmem as the C library's `malloc`
//!
//! Builds `libbsdalloc.so`, a drop-in replacement for the C allocator:
//!
//! ```sh
//! cargo build --release -p bsdalloc-capi
//! LD_PRELOAD=$PWD/target/release/libbsdalloc.so some-program
//! ```
//!
//! It exports `malloc`, `free`, `calloc`, `realloc`, `reallocarray`,
//! `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc` and
//! `malloc_usable_size` with glibc's semantics, over [`kmem::raw`],
//! `malloc_stats` and `malloc_trim` over kmem's statistics and reclaim,
//! C++ `operator new`/`delete` in every form (`cxx`), and glibc's other
//! names for its allocator (`__libc_malloc` and the rest), `mallinfo2`,
//! `mallinfo` and `mallopt` (`glibc`).
//!
//! Each entry point starts with kmem's shared fast path, the one
//! `kmem::Kmem` uses: a hit in the calling thread's cache of the size
//! class (`free(p)` first finds the class from the page metadata). Only a
//! miss reaches the roads below, which carry the recursion guard, the
//! bad-free policy, the bootstrap area and `errno`. The thread's caches
//! are reached through a TLS descriptor, not `__tls_get_addr` (see
//! `uma::TlsDescriptor`). `valgrind --tool=callgrind` on
//! `benches/callgrind.sh` counts the instructions of a `malloc(32)` +
//! `free` pair.
//!
//! - Every block is aligned to 16 bytes at least (glibc's
//!   `MALLOC_ALIGNMENT`), so `malloc(1..=8)` takes a 16-byte item.
//! - `malloc(0)` (and `calloc` of 0 bytes) returns a unique, freeable
//!   pointer; `free(NULL)` does nothing.
//! - `realloc(p, 0)` with `p` non-null frees `p` and returns NULL (glibc's
//!   default, `REALLOC_ZERO_BYTES_FREES`); `realloc(NULL, n)` is
//!   `malloc(n)`. A failed `realloc` leaves `p` valid.
//! - Failure is NULL with `errno = ENOMEM`, never an abort: requests that
//!   cannot be satisfied simply fail, among them any block larger than
//!   physical memory plus swap (`malloc(1 << 40)` on most machines) and any
//!   alignment above 1 GiB. `calloc` and `reallocarray` check `n * size`
//!   for overflow (`ENOMEM`).
//! - `posix_memalign` returns `EINVAL` unless the alignment is a power of
//!   two multiple of `sizeof(void *)`, `ENOMEM` on failure, and leaves
//!   `errno` alone. `aligned_alloc` needs a power of two (`EINVAL`, as C17
//!   says; this deliberately differs from glibc before 2.38, which accepts
//!   any alignment); `memalign` rounds a non-power of two up, as glibc
//!   does; `valloc` is page aligned; `pvalloc` also rounds the size up to
//!   whole pages.
//!
//! ## Statistics and trimming
//!
//! `malloc_stats()` writes kmem's statistics to standard error (the
//! `vmstat -z` zone table, the `vmstat -m` malloc types, the kernel arena,
//! the OS figures and memory pressure), and so does the exit of a process
//! run with `BSDALLOC_STATS=1` (from the library's destructor). Both write
//! through a stack buffer, without allocating. `malloc_trim(pad)` empties
//! the zone bucket caches, frees every free slab and purges every dirty
//! page and retained span (kmem's `Drain` reclaim; `pad` is ignored), and
//! returns 1 if memory went back to the OS, else 0. Memory also goes back
//! on its own: kmem's lazy timeout runs once a second from allocating
//! threads; `BSDALLOC_TIMEOUT_MS=N` sets its period (`0` turns it off).
//!
//! ## Fork
//!
//! kmem's `pthread_atfork` handlers take every allocator lock around
//! `fork`. Other handlers may allocate because kmem's are registered
//! first: the library interposes glibc's `__register_atfork` (which every
//! `pthread_atfork` calls) and builds kmem, registering its handlers,
//! before it passes a registration on. `fork` runs prepare handlers
//! last-registered first, so the others run before kmem's takes the locks,
//! and their parent and child handlers after kmem's has released them.
//!
//! ## Bad frees
//!
//! kmem checks every pointer given to `free`, `realloc` and
//! `malloc_usable_size` against its page metadata. A pointer it did not
//! hand out, or not the start of a block, is reported with its address,
//! then by default the process aborts. `BSDALLOC_BAD_FREE=warn` prints the
//! report and carries on (the bad call does nothing; `realloc` returns
//! NULL), `BSDALLOC_BAD_FREE=ignore` carries on silently. The variable is
//! read from the environment the library constructor is given, without
//! allocating (or with `getenv` if a bad pointer comes before that).
//!
//! ## Debug mode
//!
//! `BSDALLOC_DEBUG=guards,contents,audit` (or `all`), read at the first
//! allocation, turns on kmem's debug mode (libumem's `UMEM_DEBUG`):
//! redzones around every block, checked by `free`, `realloc` and
//! `malloc_usable_size` (overflows and underflows by 1 to 32 bytes); guard
//! pages around large blocks (an overrun faults at its first byte past the
//! end); new blocks filled with `0xbaddcafe`, freed ones with `0xdeadc0de`
//! and checked when handed out again (a write after free); freed large
//! blocks inaccessible for a while; double frees found by the block
//! header; with `audit`, the allocating and freeing call sites in every
//! report. Every allocation then takes the slow road (see
//! `kmem::set_debug`). Reports follow `BSDALLOC_BAD_FREE`.
//!
//! ## Bootstrap and recursion
//!
//! kmem builds itself on the first allocation without calling `malloc`,
//! but what it calls is C library code: `pthread_setspecific` allocates
//! its second-level table when the per-thread-cache key index is 32 or
//! more, for instance. Each thread therefore carries a depth flag: an
//! allocation made while the thread is already inside this allocator is
//! served from a static 256 KiB bump area instead ([`boot`]), which `free`
//! recognises and ignores (it is never reused), and `realloc` moves out of.
//!
//! ## Thread-local storage
//!
//! Once it runs, the library never calls `__tls_get_addr`: right after a
//! `dlopen` of a module with TLS, glibc's updates the calling thread's DTV,
//! which may call `realloc` (ours) or wait for the loader's lock, held by a
//! `dlopen` that calls `malloc` (a thread that made the call under one of
//! the allocator's locks deadlocked so). The depth flag and every other
//! thread-local of kmem and UMA are zeroed blocks of the library's TLS
//! reached through TLS descriptors (`uma::zeroed_thread_local!`), which
//! for a library in static TLS (preloaded) are a load; UMA's cache table
//! is reached at its offset from the thread pointer, learnt once. Thread
//! exit is seen through a pthread key destructor (UMA's), not Rust's TLS
//! destructors, which would allocate.
//!
//! `dlopen` of the library works (its TLS is then allocated by the C
//! library's own `malloc`, which is not ours), but it does not replace the
//! process's allocator: symbols are already bound to the C library's
//! `malloc`. Blocks from `dlsym(handle, "malloc")` must go back to the
//! matching `dlsym(handle, "free")`. The library is linked `-z nodelete`,
//! so `dlclose` never unloads it.
#![deny(unsafe_op_in_unsafe_fn)]

mod cxx;
mod glibc;
mod prof;

use core::cell::Cell;
use core::ffi::{c_char, c_int, c_void, CStr};
use core::fmt;
use core::fmt::Write as _;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

/// The alignment of every block (glibc's `MALLOC_ALIGNMENT` on 64-bit).
const MIN_ALIGN: usize = 16;
/// The page size (kmem's).
const PAGE: usize = kmem::PAGE_SIZE;

// ---------------------------------------------------------------- errno

#[inline]
fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno, always valid.
    unsafe { *libc::__errno_location() = e };
}

#[inline]
fn errno() -> c_int {
    // SAFETY: as set_errno.
    unsafe { *libc::__errno_location() }
}

// ---------------------------------------------------------------- recursion guard

uma::zeroed_thread_local! {
    /// True while this thread is inside the allocator. (No
    /// `__tls_get_addr`, which may update the thread's DTV and so call
    /// `realloc` or wait for the loader's lock: see `uma::tls_block`.)
    fn inside_flag: Cell<bool> = "bsdalloc_capi_inside_v01";
}

/// Runs `f` as this thread's outermost allocator call; `None` (without
/// running it) if the thread is already inside the allocator.
#[inline(always)]
fn outermost<R>(f: impl FnOnce() -> R) -> Option<R> {
    inside_flag(|inside| {
        if inside.get() {
            return None;
        }
        inside.set(true);
        let r = f();
        inside.set(false);
        Some(r)
    })
}

pub mod boot {
    //! The bootstrap bump area: a static 256 KiB region that serves
    //! allocations made while a thread is already inside the allocator
    //! (recursion through the C library). Blocks carry their size in a
    //! 16-byte header; they are never reused, and `free` ignores them.

    use core::cell::UnsafeCell;
    use core::ptr;
    use core::sync::atomic::{AtomicUsize, Ordering};

    /// Bytes of the area.
    pub const BYTES: usize = 256 << 10;
    const HEADER: usize = 16;

    #[repr(C, align(4096))]
    struct Area(UnsafeCell<[u8; BYTES]>);
    // SAFETY: bytes are handed out at most once each (the atomic bump), so
    // no two callers ever share one.
    unsafe impl Sync for Area {}

    static AREA: Area = Area(UnsafeCell::new([0; BYTES]));
    static NEXT: AtomicUsize = AtomicUsize::new(0);

    fn base() -> usize {
        AREA.0.get() as usize
    }

    /// Whether `p` points into the area.
    #[inline(always)]
    pub fn contains(p: *const u8) -> bool {
        (p as usize).wrapping_sub(base()) < BYTES
    }

    /// `size` zeroed bytes aligned to `align` (a power of two, at least 16),
    /// or null when the area is used up.
    pub fn alloc(size: usize, align: usize) -> *mut u8 {
        let base = base();
        let mut cur = NEXT.load(Ordering::Relaxed);
        loop {
            let Some(start) = (base + cur + HEADER)
                .checked_next_multiple_of(align)
                .map(|a| a - base)
            else {
                return ptr::null_mut();
            };
            let Some(end) = start.checked_add(size.max(1)) else {
                return ptr::null_mut();
            };
            if end > BYTES {
                return ptr::null_mut();
            }
            match NEXT.compare_exchange_weak(cur, end, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    let p = (base + start) as *mut u8;
                    // SAFETY: [start - HEADER, end) is ours alone (the CAS);
                    // the header slot lies inside the area and is aligned
                    // to 16 (start is aligned to align >= 16).
                    unsafe { p.sub(HEADER).cast::<usize>().write(size) };
                    return p;
                }
                Err(c) => cur = c,
            }
        }
    }

    /// The size asked for when `p` (a block of this area) was allocated.
    ///
    /// # Safety
    ///
    /// `p` is a block returned by [`alloc`].
    pub unsafe fn size(p: *const u8) -> usize {
        // SAFETY: the header written by alloc.
        unsafe { p.sub(HEADER).cast::<usize>().read() }
    }

    /// Bytes handed out so far (headers and padding included).
    pub fn used() -> usize {
        NEXT.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------- bad-free policy

const POLICY_UNSET: u8 = 0;
const POLICY_ABORT: u8 = 1;
const POLICY_WARN: u8 = 2;
const POLICY_IGNORE: u8 = 3;
static POLICY: AtomicU8 = AtomicU8::new(POLICY_UNSET);

fn parse_policy(v: &[u8]) -> u8 {
    match v {
        b"warn" => POLICY_WARN,
        b"ignore" => POLICY_IGNORE,
        _ => POLICY_ABORT,
    }
}

/// Makes sure the report hook is installed and the policy read. A relaxed
/// load when done; the first call reads `BSDALLOC_BAD_FREE` with `getenv`
/// (which does not allocate; the library constructor reads it again from
/// the environment it is given).
#[inline(always)]
fn ensure_policy() {
    if POLICY.load(Ordering::Relaxed) == POLICY_UNSET {
        policy_from_getenv();
    }
}

#[cold]
#[inline(never)]
fn policy_from_getenv() {
    // SAFETY: a NUL-terminated name; getenv copes with an unset environment
    // and returns null or a NUL-terminated string.
    let v = unsafe { libc::getenv(c"BSDALLOC_BAD_FREE".as_ptr()) };
    let p = if v.is_null() {
        POLICY_ABORT
    } else {
        // SAFETY: getenv's result is a NUL-terminated string.
        parse_policy(unsafe { CStr::from_ptr(v) }.to_bytes())
    };
    install(p);
}

fn install(policy: u8) {
    kmem::set_report_hook(Some(on_report));
    POLICY.store(policy, Ordering::Relaxed);
}

/// A line buffer on the stack (reports must not allocate).
struct Line {
    buf: [u8; 2048],
    len: usize,
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

pub(crate) fn write_stderr(args: fmt::Arguments<'_>) {
    let mut l = Line {
        buf: [0; 2048],
        len: 0,
    };
    let _ = fmt::write(&mut l, args);
    // SAFETY: writes our own stack buffer to fd 2.
    let _ = unsafe { libc::write(2, l.buf.as_ptr().cast(), l.len) };
}

/// kmem's report hook: the bad-free policy.
fn on_report(r: &kmem::Report) {
    match POLICY.load(Ordering::Relaxed) {
        POLICY_IGNORE => {}
        POLICY_WARN => write_stderr(format_args!(
            "bsdalloc: {r} (ignored: BSDALLOC_BAD_FREE=warn)\n"
        )),
        _ => {
            write_stderr(format_args!(
                "bsdalloc: {r}\nbsdalloc: aborting (BSDALLOC_BAD_FREE=warn or =ignore to continue)\n"
            ));
            // SAFETY: abort has no preconditions.
            unsafe { libc::abort() };
        }
    }
}

/// The library constructor (glibc passes `argc, argv, envp` to
/// `.init_array` functions): reads the policy, the statistics switch and
/// the timeout period from `envp`, then builds the allocator unless a
/// `malloc` or a `pthread_atfork` (see [`__register_atfork`]) already has,
/// so that its fork handlers are registered before the program's.
extern "C" fn constructor(_argc: c_int, _argv: *const *const c_char, envp: *const *const c_char) {
    let mut policy = POLICY_ABORT;
    let mut timeout_ms = None;
    if !envp.is_null() {
        let mut e = envp;
        // SAFETY: envp is the NULL-terminated array of NUL-terminated
        // strings the dynamic loader passes to constructors.
        unsafe {
            while !(*e).is_null() {
                let s = CStr::from_ptr(*e).to_bytes();
                if let Some(v) = s.strip_prefix(b"BSDALLOC_BAD_FREE=") {
                    policy = parse_policy(v);
                }
                if let Some(v) = s.strip_prefix(b"BSDALLOC_STATS=") {
                    STATS_AT_EXIT.store(!v.is_empty() && v != b"0", Ordering::Relaxed);
                }
                if let Some(v) = s.strip_prefix(b"BSDALLOC_TIMEOUT_MS=") {
                    timeout_ms = parse_ms(v);
                }
                e = e.add(1);
            }
        }
    }
    install(policy);
    if let Some(ms) = timeout_ms {
        // 0 turns the lazy timeout off.
        kmem::set_timeout_period(Some(std::time::Duration::from_millis(ms)));
    }
    // As the first allocation would (inside the recursion guard: building
    // calls into the C library, which may call malloc). A failed build is
    // not an error here: every allocation then fails with ENOMEM, as it
    // would have at the first malloc.
    let _ = outermost(kmem::start);
}

#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = constructor;

/// A decimal number of milliseconds (`BSDALLOC_TIMEOUT_MS`); `None` if it
/// is not one (the variable is then ignored).
fn parse_ms(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 12 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Whether the destructor prints the statistics (`BSDALLOC_STATS=1`).
static STATS_AT_EXIT: AtomicBool = AtomicBool::new(false);

/// The library destructor (run by `exit`, after the program's `atexit`
/// handlers): prints the statistics if asked to.
extern "C" fn destructor() {
    if STATS_AT_EXIT.load(Ordering::Relaxed) {
        print_stats();
    }
}

#[used]
#[link_section = ".fini_array"]
static DESTRUCTOR: extern "C" fn() = destructor;

// ---------------------------------------------------------------- fork handlers

/// glibc's `__register_atfork(prepare, parent, child, dso_handle)`, which
/// `pthread_atfork` (a static stub in every object that calls it) calls.
type RegisterAtfork = unsafe extern "C" fn(
    Option<unsafe extern "C" fn()>,
    Option<unsafe extern "C" fn()>,
    Option<unsafe extern "C" fn()>,
    *mut c_void,
) -> c_int;

/// The C library's `__register_atfork` (0 until looked up).
static REAL_REGISTER_ATFORK: AtomicUsize = AtomicUsize::new(0);

fn real_register_atfork() -> Option<RegisterAtfork> {
    let mut p = REAL_REGISTER_ATFORK.load(Ordering::Acquire);
    if p == 0 {
        // SAFETY: a NUL-terminated name; RTLD_NEXT finds the definition
        // after this library's (the C library's).
        p = unsafe { libc::dlsym(libc::RTLD_NEXT, c"__register_atfork".as_ptr()) } as usize;
        REAL_REGISTER_ATFORK.store(p, Ordering::Release);
    }
    // SAFETY: a non-null result is glibc's `__register_atfork`, whose
    // signature is `RegisterAtfork` (GLIBC_2.3.2).
    (p != 0).then(|| unsafe { core::mem::transmute::<usize, RegisterAtfork>(p) })
}

/// Interposes glibc's `__register_atfork`, through which every
/// `pthread_atfork` registers: builds kmem first (which registers its own
/// handlers), then registers the caller's. So kmem's handlers are the
/// first registered whoever registers first, and `fork`, which runs
/// prepare handlers last-registered first and parent and child handlers
/// first-registered first, runs every other handler while kmem's locks
/// are free: they may allocate. Without this, a library the program links
/// (initialized before this one: preloaded libraries come last) that
/// registers allocating handlers in its constructor would deadlock the
/// fork. Inside kmem's own build this is re-entered (kmem registers its
/// handlers through `pthread_atfork`), and then only forwards.
///
/// # Safety
///
/// As glibc's: the handlers are valid functions (or null) and `dso` is the
/// caller's `__dso_handle`.
#[no_mangle]
pub unsafe extern "C" fn __register_atfork(
    prepare: Option<unsafe extern "C" fn()>,
    parent: Option<unsafe extern "C" fn()>,
    child: Option<unsafe extern "C" fn()>,
    dso: *mut c_void,
) -> c_int {
    // As the first allocation would (a no-op once built, and while this
    // thread is inside the allocator, kmem's own build included).
    let _ = outermost(kmem::start);
    match real_register_atfork() {
        // SAFETY: the caller's promise, passed on unchanged.
        Some(f) => unsafe { f(prepare, parent, child, dso) },
        None => {
            no_real_register_atfork();
            libc::ENOMEM
        }
    }
}

/// The C library has no `__register_atfork` after this library (not
/// glibc, or this library is not ahead of it): every `pthread_atfork` of
/// the process fails with ENOMEM. Says so once, without allocating.
#[cold]
fn no_real_register_atfork() {
    static SAID: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        let msg = b"bsdalloc: the C library's __register_atfork was not found; pthread_atfork fails with ENOMEM\n";
        // SAFETY: a valid buffer of that length; fd 2 may be closed, then
        // nothing happens.
        let _ = unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    }
}

// ---------------------------------------------------------------- statistics

/// Writes kmem's statistics to standard error, keeping `errno`.
fn print_stats() {
    let saved = errno();
    let mut w = kmem::StderrWriter::new();
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let _ = writeln!(w, "== bsdalloc (kmem) statistics, pid {pid} ==");
    let _ = kmem::write_stats(&mut w);
    w.flush();
    set_errno(saved);
}

/// glibc's `malloc_stats`: kmem's statistics on standard error (zones,
/// malloc types, the kernel arena, the OS, memory pressure).
#[no_mangle]
pub extern "C" fn malloc_stats() {
    print_stats();
}

/// glibc's `malloc_trim`: gives back every cached and free page kmem can
/// (a `Drain` reclaim: zone bucket caches, free slabs, dirty pages and
/// retained spans; other threads' per-thread caches stay). `pad` is
/// ignored. Returns 1 if this call gave memory back to the OS, else 0.
#[no_mangle]
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    let saved = errno();
    let released = kmem::reclaim(uma::Reclaim::Drain);
    set_errno(saved);
    c_int::from(released > 0)
}

// ---------------------------------------------------------------- core
//
// Every entry point is kmem's shared fast path first (`kmem::raw::*_fast`:
// a hit in the calling thread's cache, the same few instructions as
// `kmem::Kmem`), and on a miss one of the cold roads below, which carry
// what a hit never needs: the recursion guard, the bad-free policy, the
// bootstrap area, errno. A hit calls no C library function, so it needs
// no guard: a thread inside the allocator (recursion through the C
// library) may hit the cache of another zone, never one it is working on.

/// Allocates; a hit of the fast path, else [`alloc_miss`].
#[inline(always)]
fn alloc(size: usize, align: usize) -> *mut c_void {
    match kmem::raw::alloc_fast(size, align) {
        Some(p) => p.as_ptr().cast(),
        None => alloc_miss(size, align),
    }
}

/// [`alloc`] for `MIN_ALIGN` (`malloc`, `operator new`): the same, with the
/// fast path's shorter lookup.
#[inline(always)]
fn alloc16(size: usize) -> *mut c_void {
    match kmem::raw::alloc_fast_align16(size) {
        Some(p) => p.as_ptr().cast(),
        None => alloc_miss(size, MIN_ALIGN),
    }
}

/// A miss of the small fast path: the fast path of 1-32 KiB blocks, then
/// the swap road (the thread's free bucket swapped in), else
/// [`alloc_slow`]. (`extern "C"`, as the other roads off the fast path:
/// such a function cannot unwind, so the entry points need no landing pad
/// around the call and make it a tail call.)
#[inline(never)]
extern "C" fn alloc_miss(size: usize, align: usize) -> *mut c_void {
    match kmem::raw::alloc_mid_fast(size, align)
        .or_else(|| kmem::raw::alloc_swap(size, align))
        .or_else(|| kmem::raw::alloc_large_fast(size, align))
    {
        Some(p) => p.as_ptr().cast(),
        None => alloc_slow(size, align, false),
    }
}

/// [`alloc_miss`] for `calloc`: the block zero-filled.
#[cold]
#[inline(never)]
extern "C" fn calloc_miss(bytes: usize) -> *mut c_void {
    match kmem::raw::alloc_mid_fast(bytes, MIN_ALIGN)
        .or_else(|| kmem::raw::alloc_swap(bytes, MIN_ALIGN))
    {
        Some(p) => {
            // SAFETY: a fresh item of at least `bytes` bytes, ours.
            unsafe { ptr::write_bytes(p.as_ptr(), 0, bytes) };
            p.as_ptr().cast()
        }
        None => alloc_slow(bytes, MIN_ALIGN, true),
    }
}

/// Allocates off the fast path; null with `errno = ENOMEM` on failure.
#[cold]
#[inline(never)]
extern "C" fn alloc_slow(size: usize, align: usize, zero: bool) -> *mut c_void {
    // Every free here finds sampled blocks by their page (before kmem's
    // profiler can start, which is on this road).
    kmem::prof::unsized_frees_only();
    if let Some(p) = kmem::raw::alloc_gated(size, align) {
        if zero {
            // SAFETY: a fresh block of at least `size` bytes, ours.
            unsafe { ptr::write_bytes(p.as_ptr(), 0, size) };
        }
        return p.as_ptr().cast();
    }
    // The fast path and the gate missed already: not again.
    let p = match outermost(|| kmem::raw::alloc_missed(size, align, zero)) {
        Some(p) => p,
        None => boot::alloc(size, align),
    };
    if p.is_null() {
        set_errno(libc::ENOMEM);
    }
    p.cast()
}

/// Frees; a hit of the fast path, else [`free_slow`].
///
/// # Safety
///
/// As `free(3)`.
#[inline(always)]
unsafe fn free_impl(p: *mut u8) {
    // SAFETY: the caller's promise; the fast path validates the pointer
    // through the page metadata and misses on anything it cannot prove.
    if !unsafe { kmem::raw::free_fast(p) } {
        // SAFETY: as above.
        unsafe { free_slow(p) }
    }
}

/// Frees off the fast path (null and bootstrap blocks are no-ops).
///
/// # Safety
///
/// As `free(3)`.
#[cold]
#[inline(never)]
unsafe extern "C" fn free_slow(p: *mut u8) {
    if p.is_null() || boot::contains(p) {
        return;
    }
    // SAFETY: the caller's promise.
    if unsafe {
        kmem::raw::free_swap(p) || kmem::raw::free_large_fast(p) || kmem::raw::free_gated(p)
    } {
        return;
    }
    ensure_policy();
    // SAFETY: the caller's promise; kmem validates the pointer. (The fast
    // path missed already: not again.)
    let done = outermost(|| unsafe { kmem::raw::free_missed(p) });
    if done.is_none() {
        // Already inside the allocator: free without the guard (anything
        // the free allocates comes from the bump area all the same).
        // SAFETY: as above.
        unsafe { kmem::raw::free_missed(p) };
    }
}

/// Usable size of a block (0 for null).
#[inline]
fn usable(p: *const u8) -> usize {
    match kmem::raw::class_of_block(p) {
        Some(c) => kmem::CLASS_SIZES[c],
        None => usable_slow(p),
    }
}

#[cold]
#[inline(never)]
extern "C" fn usable_slow(p: *const u8) -> usize {
    if p.is_null() {
        return 0;
    }
    if boot::contains(p) {
        // SAFETY: a block of the bump area (the allocator's own pointers
        // are the only ones there).
        return unsafe { boot::size(p) };
    }
    ensure_policy();
    kmem::raw::usable_size(p)
}

/// Resizes with glibc's rules: a small block whose class does not change
/// stays; one that moves takes the fast paths of `malloc` and `free`.
///
/// # Safety
///
/// As `realloc(3)`.
#[inline]
unsafe fn realloc_impl(p: *mut u8, size: usize) -> *mut c_void {
    if size != 0 {
        if let Some(c) = kmem::raw::class_of_block(p) {
            if kmem::class_of(size, MIN_ALIGN) == Some(c) {
                return p.cast();
            }
            let n = alloc(size, MIN_ALIGN);
            if !n.is_null() {
                // SAFETY: p is a live item of class c (CLASS_SIZES[c]
                // bytes), n a fresh block of `size`; distinct. Then p goes
                // as free(p) would (the caller's promise).
                unsafe {
                    ptr::copy_nonoverlapping(p, n.cast::<u8>(), kmem::CLASS_SIZES[c].min(size));
                    free_impl(p);
                }
            }
            return n;
        }
        // A large block that stays as it is (a buffer grown a few bytes at
        // a time into its pages or its room): none of the slow road.
        if kmem::raw::realloc_keeps_large(p, size, MIN_ALIGN) {
            return p.cast();
        }
    }
    // SAFETY: the caller's promise.
    unsafe { realloc_slow(p, size) }
}

/// [`realloc_impl`] for everything but a small block of kmem.
///
/// # Safety
///
/// As `realloc(3)`.
#[cold]
#[inline(never)]
unsafe extern "C" fn realloc_slow(p: *mut u8, size: usize) -> *mut c_void {
    if p.is_null() {
        return alloc(size, MIN_ALIGN);
    }
    if size == 0 {
        // glibc (REALLOC_ZERO_BYTES_FREES): free, return NULL.
        // SAFETY: the caller's promise.
        unsafe { free_impl(p) };
        return ptr::null_mut();
    }
    if boot::contains(p) {
        // Move out of the bump area (its blocks never grow in place).
        let n = alloc(size, MIN_ALIGN);
        if !n.is_null() {
            // SAFETY: p is a bootstrap block of boot::size(p) bytes, n a
            // fresh block of `size`; distinct.
            unsafe { ptr::copy_nonoverlapping(p, n.cast::<u8>(), boot::size(p).min(size)) };
        }
        return n;
    }
    ensure_policy();
    // SAFETY: the caller's promise; kmem validates the pointer.
    let r = match outermost(|| unsafe { kmem::raw::realloc(p, size, MIN_ALIGN) }) {
        Some(r) => r,
        None => {
            // Inside the allocator: a fresh block from the bump area.
            let n = boot::alloc(size, MIN_ALIGN);
            if !n.is_null() {
                let old = kmem::raw::usable_size(p);
                // SAFETY: p is live with `old` usable bytes, n is fresh.
                unsafe { ptr::copy_nonoverlapping(p, n, old.min(size)) };
                // SAFETY: the caller's promise: p is not used again.
                unsafe { kmem::raw::free(p) };
            }
            n
        }
    };
    if r.is_null() {
        set_errno(libc::ENOMEM);
    }
    r.cast()
}

/// Aligned allocation after the alignment was checked (a power of two).
#[inline]
fn aligned(align: usize, size: usize) -> *mut c_void {
    alloc(size, align.max(MIN_ALIGN))
}

// ---------------------------------------------------------------- the C ABI

/// `malloc(3)`: `size` bytes aligned to 16, uninitialized; `malloc(0)`
/// returns a unique pointer; NULL with `errno = ENOMEM` on failure.
#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    alloc16(size)
}

/// `free(3)`: NULL is a no-op; a pointer this allocator did not hand out
/// is reported (see the crate doc for `BSDALLOC_BAD_FREE`).
///
/// # Safety
///
/// `p` is NULL or a live block of this allocator, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: the caller's promise.
    unsafe { free_impl(p.cast()) }
}

/// `calloc(3)`: `n * size` zeroed bytes; NULL with `ENOMEM` if the product
/// overflows or memory cannot be had.
#[no_mangle]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        Some(bytes) => match kmem::raw::alloc_fast_align16(bytes) {
            Some(p) => {
                // SAFETY: a fresh item of at least `bytes` bytes, ours.
                unsafe { ptr::write_bytes(p.as_ptr(), 0, bytes) };
                p.as_ptr().cast()
            }
            None => calloc_miss(bytes),
        },
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `realloc(3)`, glibc's rules: NULL `p` allocates; size 0 frees `p` and
/// returns NULL; on failure NULL with `ENOMEM` and `p` still valid.
///
/// # Safety
///
/// `p` is NULL or a live block of this allocator; after a non-NULL return
/// (or a size of 0) only the returned pointer may be used.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the caller's promise.
    unsafe { realloc_impl(p.cast(), size) }
}

/// `reallocarray(3)`: `realloc(p, n * size)` with an overflow check
/// (`ENOMEM`, `p` untouched).
///
/// # Safety
///
/// As [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: the caller's promise.
        Some(bytes) => unsafe { realloc_impl(p.cast(), bytes) },
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `posix_memalign(3)`: `EINVAL` unless `align` is a power of two multiple
/// of `sizeof(void *)`; `ENOMEM` on failure (`*out` untouched); 0 and the
/// block in `*out` on success. `errno` is left as it was.
///
/// # Safety
///
/// `out` is valid for a pointer-sized write.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || align % core::mem::size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    let saved = errno();
    let p = aligned(align, size);
    set_errno(saved);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller's promise.
    unsafe { out.write(p) };
    0
}

/// `aligned_alloc(3)` (C11): NULL with `EINVAL` unless `align` is a power
/// of two; any size is accepted (as glibc).
#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    aligned(align, size)
}

/// `memalign(3)`, glibc's rules: an alignment that is not a power of two
/// is rounded up to one; above `SIZE_MAX / 2 + 1` it is `EINVAL`.
#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    if align > usize::MAX / 2 + 1 {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    let align = align.max(1).next_power_of_two();
    aligned(align, size)
}

/// `valloc(3)`: page aligned.
#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    aligned(PAGE, size)
}

/// `pvalloc(3)`: page aligned, the size rounded up to whole pages
/// (`pvalloc(0)` is one page).
#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    match size.checked_next_multiple_of(PAGE) {
        Some(bytes) => aligned(PAGE, bytes.max(PAGE)),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `malloc_usable_size(3)`: the bytes usable in the block at `p` (at least
/// what was asked for); 0 for NULL. A pointer this allocator did not hand
/// out is reported, as for `free`.
///
/// # Safety
///
/// `p` is NULL or a live block of this allocator.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    usable(p.cast())
}
