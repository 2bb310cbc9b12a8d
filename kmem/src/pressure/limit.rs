//! The limit (FreeBSD `vm_kmem_size`): setting it, reading it from the
//! environment, the soft threshold.

use super::*;

/// Sets the limit on committed memory in bytes (rounded up to pages; 0
/// removes it) and caps the kernel arena accordingly. Returns the old
/// limit. Memory already committed above a new, lower limit stays; new
/// allocations wait or fail until enough of it is freed.
pub fn set_limit(bytes: usize) -> usize {
    let old = limit();
    LIMIT_PAGES.store(pages(bytes), Ordering::SeqCst);
    if let Some(k) = kernel() {
        k.arena.set_limit(arena_limit(bytes));
    }
    wake_waiters();
    old
}

/// The limit on committed memory in bytes (0: none).
pub fn limit() -> usize {
    LIMIT_PAGES.load(Ordering::Relaxed) as usize * PAGE_SIZE
}

/// The kernel arena's cap for a limit: twice the limit rounded up to the
/// import quantum (room to fragment: see the module doc), plus one import
/// quantum of slack (the metadata arena's chunks, the quantum cache).
pub(crate) fn arena_limit(bytes: usize) -> usize {
    if bytes == 0 {
        return 0;
    }
    bytes
        .checked_next_multiple_of(IMPORT_QUANTUM)
        .and_then(|b| b.checked_mul(2))
        .and_then(|b| b.checked_add(IMPORT_QUANTUM))
        .unwrap_or(0)
}

/// Sets the soft threshold (per cent of the limit, 1..=100) above which a
/// rate-limited trim runs.
pub fn set_soft_threshold_pct(pct: usize) {
    SOFT_PCT.store(pct.clamp(1, 100), Ordering::Relaxed);
}

/// Parses `512M`, `1G`, `65536`, `64k`, `2GiB`... into bytes.
pub(super) fn parse_size(s: &[u8]) -> Option<usize> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n: usize = 0;
    for &b in &s[..digits] {
        n = n.checked_mul(10)?.checked_add((b - b'0') as usize)?;
    }
    let rest = &s[digits..];
    let shift = match rest.first().map(u8::to_ascii_uppercase) {
        None => 0,
        Some(b'K') => 10,
        Some(b'M') => 20,
        Some(b'G') => 30,
        Some(b'T') => 40,
        Some(b'B') if rest.len() == 1 => 0,
        _ => return None,
    };
    let tail = if shift == 0 { rest } else { &rest[1..] };
    if !(tail.is_empty() || tail.eq_ignore_ascii_case(b"B") || tail.eq_ignore_ascii_case(b"iB")) {
        return None;
    }
    n.checked_mul(1usize << shift)
}

/// Bootstrap: reads `BSDALLOC_LIMIT` (no allocation) and caps `arena`.
pub(crate) fn init_from_env(arena: &vmem::Arena<'_>) {
    // SAFETY: the name is a NUL-terminated literal; getenv returns null or
    // a NUL-terminated string we only read, before any setenv of ours.
    let v = unsafe { libc::getenv(c"BSDALLOC_LIMIT".as_ptr()) };
    if v.is_null() {
        return;
    }
    // SAFETY: non-null, NUL-terminated (getenv).
    let s = unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes();
    if let Some(bytes) = parse_size(s) {
        LIMIT_PAGES.store(pages(bytes), Ordering::SeqCst);
        arena.set_limit(arena_limit(bytes));
    }
}
