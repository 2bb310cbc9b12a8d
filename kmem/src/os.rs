//! The operating system below the kernel arena: 2 MiB-aligned chunks of
//! address space from `mmap`, given back with `munmap`, and pages unbacked
//! with `madvise` so the resident set falls when memory is freed.
//!
//! Nothing here allocates; every call is a system call on memory we own.

use crate::sync::plain::{AtomicUsize, Ordering};

/// The host page size kmem assumes (the kernel arena's quantum).
pub const PAGE_SIZE: usize = 4096;
/// The granule of OS imports and of page metadata: 2 MiB, aligned.
pub const CHUNK_SIZE: usize = 2 << 20;

static MAPPED: AtomicUsize = AtomicUsize::new(0);
static PEAK_MAPPED: AtomicUsize = AtomicUsize::new(0);
static UNBACKED: AtomicUsize = AtomicUsize::new(0);
static UNBACK_FAILS: AtomicUsize = AtomicUsize::new(0);
static MAP_CALLS: AtomicUsize = AtomicUsize::new(0);
static UNMAP_CALLS: AtomicUsize = AtomicUsize::new(0);

uma::zeroed_thread_local! {
    /// Bytes this thread gave back to the OS (unbacked or unmapped): what
    /// one reclaim call released is the difference across it
    /// ([`released_here`]); the global figures mix every thread's. (No
    /// `__tls_get_addr`: counted under locks, see `uma::tls_block`.)
    fn released_here_cell: core::cell::Cell<usize> = "bsdalloc_kmem_released_here_v01";
}

fn note_released(bytes: usize) {
    released_here_cell(|c| c.set(c.get().wrapping_add(bytes)));
}

/// Bytes this thread has given back to the OS so far (a running count:
/// take the difference across a call).
pub(crate) fn released_here() -> usize {
    released_here_cell(|c| c.get())
}

/// Rounds `n` up to a whole number of pages (`None` on overflow).
#[inline]
pub const fn round_page(n: usize) -> Option<usize> {
    match n.checked_add(PAGE_SIZE - 1) {
        Some(v) => Some(v & !(PAGE_SIZE - 1)),
        None => None,
    }
}

/// Maps `size` bytes (a multiple of [`CHUNK_SIZE`]) aligned to
/// [`CHUNK_SIZE`], readable and writable, zero-filled. `None` if the OS
/// refuses.
pub(crate) fn map_chunks(size: usize) -> Option<usize> {
    debug_assert!(size > 0 && size % CHUNK_SIZE == 0);
    let aligned = uma::source::map_aligned(size, CHUNK_SIZE, true)?.as_ptr() as usize;
    MAP_CALLS.fetch_add(1, Ordering::Relaxed);
    let now = MAPPED.fetch_add(size, Ordering::Relaxed) + size;
    PEAK_MAPPED.fetch_max(now, Ordering::Relaxed);
    Some(aligned)
}

/// The most bytes mapped at once so far.
pub(crate) fn peak_mapped() -> usize {
    PEAK_MAPPED.load(Ordering::Relaxed)
}

/// The largest block a single request may ask for: physical memory plus
/// swap (read once with `sysinfo`; no limit if that fails). The kernel
/// arena's address space is mapped with `MAP_NORESERVE`, so without this a
/// request for a terabyte would succeed (glibc's `mmap`, under the
/// kernel's overcommit heuristic, refuses it) and then cost gigabytes of
/// page metadata to free.
pub(crate) fn max_request() -> usize {
    static MAX: AtomicUsize = AtomicUsize::new(0);
    let m = MAX.load(Ordering::Relaxed);
    if m != 0 {
        return m;
    }
    // SAFETY: an all-zero sysinfo is a valid value of the plain C struct.
    let mut si: libc::sysinfo = unsafe { core::mem::zeroed() };
    // SAFETY: `si` is a valid out pointer.
    let m = if unsafe { libc::sysinfo(&mut si) } == 0 {
        let unit = (si.mem_unit as usize).max(1);
        (si.totalram as usize)
            .saturating_add(si.totalswap as usize)
            .saturating_mul(unit)
            .max(CHUNK_SIZE)
    } else {
        usize::MAX
    };
    MAX.store(m, Ordering::Relaxed);
    m
}

/// Unmaps a range [`map_chunks`] returned.
///
/// # Safety
///
/// `[addr, addr + size)` was mapped by `map_chunks` and nothing uses it.
pub(crate) unsafe fn unmap(addr: usize, size: usize) {
    // SAFETY: by the caller's promise the range is ours and unused.
    let r = unsafe { libc::munmap(addr as *mut libc::c_void, size) };
    if r == 0 {
        UNMAP_CALLS.fetch_add(1, Ordering::Relaxed);
        MAPPED.fetch_sub(size, Ordering::Relaxed);
        note_released(size);
    }
}

/// Drops the physical pages behind `[addr, addr + size)`: the range stays
/// mapped and reads as zero afterwards (`MADV_DONTNEED` on private
/// anonymous memory). Callers label the pages clean ("reads as zero"), so
/// when the kernel refuses (`EINVAL` on memory locked by `mlockall`), the
/// range is zero-filled instead: it stays resident, but never hands old
/// data to a zero-filled allocation.
///
/// # Safety
///
/// The range is whole pages of memory we mapped, and nobody uses its
/// contents any more.
pub(crate) unsafe fn unback(addr: usize, size: usize) {
    // SAFETY: by the caller's promise the pages are ours and dead.
    let r = unsafe { libc::madvise(addr as *mut libc::c_void, size, libc::MADV_DONTNEED) };
    if r == 0 {
        UNBACKED.fetch_add(size, Ordering::Relaxed);
        note_released(size);
    } else {
        // SAFETY: as above: ours, mapped read-write, and dead.
        unsafe { core::ptr::write_bytes(addr as *mut u8, 0, size) };
        UNBACK_FAILS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Makes a range inaccessible (`kva_alloc`: address space without memory).
///
/// # Safety
///
/// The range is whole pages of memory we mapped and nobody uses.
pub(crate) unsafe fn protect_none(addr: usize, size: usize) -> bool {
    // SAFETY: the range is ours (caller's promise).
    unsafe { libc::mprotect(addr as *mut libc::c_void, size, libc::PROT_NONE) == 0 }
}

/// Makes a range readable and writable again.
///
/// # Safety
///
/// The range is whole pages of memory we mapped.
pub(crate) unsafe fn protect_rw(addr: usize, size: usize) -> bool {
    // SAFETY: the range is ours (caller's promise).
    unsafe {
        libc::mprotect(
            addr as *mut libc::c_void,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
        ) == 0
    }
}

/// OS-level memory figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OsStats {
    /// Bytes of address space kmem's arenas hold from the OS now (the page
    /// metadata's reservation is [`OsStats::meta_reserved`]).
    pub mapped: usize,
    /// The most it ever held at once.
    pub peak_mapped: usize,
    /// Bytes ever unbacked with `madvise` (freed slabs, quantum-cache
    /// ranges given back, purged dirty pages).
    pub unbacked_total: usize,
    /// `madvise` calls the kernel refused (locked memory): those ranges
    /// were zero-filled instead and stayed resident.
    pub unback_failures: usize,
    /// `mmap` imports and `munmap` releases so far.
    pub map_calls: usize,
    /// `munmap` calls so far.
    pub unmap_calls: usize,
    /// The process's resident set now (bytes; 0 if unknown).
    pub resident: usize,
    /// The process's peak resident set (bytes; 0 if unknown).
    pub peak_resident: usize,
    /// Address space reserved for the page metadata: a leaf of about 8 MiB
    /// per 4 GiB of address space the arenas have used, written (and so
    /// memory) only where chunks are. It counts against `RLIMIT_AS`.
    pub meta_reserved: usize,
    /// Leaf reservations the OS refused (under `RLIMIT_AS`): chunks the
    /// kernel placed in 4 GiB of address space without a leaf went back,
    /// as the leaf's 8 MiB did not fit. (Where ASLR puts the mappings
    /// decides whether they cross into another 4 GiB; when they do, near
    /// the limit, that much less address space serves blocks.)
    pub meta_refused: usize,
}

/// Clock `clock` (a monotonic one) in nanoseconds, from the vDSO.
pub(crate) fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; the monotonic clocks exist
    // on every Linux kmem runs on.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// The monotonic clock in nanoseconds: the clock of kmem's decay and
/// pressure timings.
pub(crate) fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// The coarse monotonic clock in nanoseconds (a few milliseconds of
/// resolution, cheaper): the lazy timeout's.
pub(crate) fn coarse_now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

/// Reads the OS figures (the resident sizes from `/proc/self/status`,
/// read into a stack buffer: no allocation).
pub fn os_stats() -> OsStats {
    let (resident, peak_resident) = read_rss();
    OsStats {
        mapped: MAPPED.load(Ordering::Relaxed),
        peak_mapped: PEAK_MAPPED.load(Ordering::Relaxed),
        unbacked_total: UNBACKED.load(Ordering::Relaxed),
        unback_failures: UNBACK_FAILS.load(Ordering::Relaxed),
        map_calls: MAP_CALLS.load(Ordering::Relaxed),
        unmap_calls: UNMAP_CALLS.load(Ordering::Relaxed),
        resident,
        peak_resident,
        meta_reserved: crate::pagemeta::reserved_bytes(),
        meta_refused: crate::pagemeta::refused_leaves(),
    }
}

fn read_rss() -> (usize, usize) {
    let mut buf = [0u8; 4096];
    // SAFETY: a NUL-terminated path; the fd is closed below.
    let fd = unsafe { libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY) };
    if fd < 0 {
        return (0, 0);
    }
    let mut len = 0;
    while len < buf.len() {
        // SAFETY: reads into the unused part of our stack buffer.
        let n = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        if n <= 0 {
            break;
        }
        len += n as usize;
    }
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    let text = &buf[..len];
    (field_kib(text, b"VmRSS:"), field_kib(text, b"VmHWM:"))
}

/// The value of a `Name:   1234 kB` line, in bytes.
fn field_kib(text: &[u8], name: &[u8]) -> usize {
    for line in text.split(|&b| b == b'\n') {
        if let Some(rest) = line.strip_prefix(name) {
            let kib = rest
                .iter()
                .skip_while(|b| b.is_ascii_whitespace())
                .take_while(|b| b.is_ascii_digit())
                .fold(0usize, |n, &d| n * 10 + usize::from(d - b'0'));
            return kib * 1024;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_aligned_and_zero() {
        let a = map_chunks(2 * CHUNK_SIZE).expect("map");
        assert_eq!(a % CHUNK_SIZE, 0);
        // SAFETY: we just mapped it.
        unsafe {
            assert_eq!(*(a as *const u64), 0);
            *((a + CHUNK_SIZE) as *mut u64) = 7;
            unback(a + CHUNK_SIZE, PAGE_SIZE);
            assert_eq!(*((a + CHUNK_SIZE) as *const u64), 0);
            unmap(a, 2 * CHUNK_SIZE);
        }
    }

    #[test]
    fn rss_is_read() {
        let s = os_stats();
        assert!(s.resident > 0 && s.peak_resident >= s.resident, "{s:?}");
        assert_eq!(field_kib(b"VmRSS:\t  12 kB\n", b"VmRSS:"), 12 * 1024);
    }
}
