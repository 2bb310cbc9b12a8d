//! Zone statistics and the `vmstat -z` table.

use core::fmt;

/// One zone's statistics (FreeBSD `vmstat -z` columns plus a breakdown).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZoneStats {
    /// Zone name.
    pub name: &'static str,
    /// Item size.
    pub size: usize,
    /// Limit (0: none).
    pub limit: usize,
    /// Items allocated and not freed.
    pub used: u64,
    /// Free items: per-thread caches + bucket cache + keg.
    pub free: u64,
    /// Allocation requests served.
    pub requests: u64,
    /// Frees.
    pub frees: u64,
    /// Failed allocations.
    pub fails: u64,
    /// Sleeps on the limit.
    pub sleeps: u64,
    /// Items in per-thread caches.
    pub cached_pcpu: u64,
    /// Items in the zone bucket cache.
    pub cached_buckets: u64,
    /// Buckets in the zone bucket cache.
    pub buckets: u64,
    /// Empty buckets the zone keeps for trading (the depot's empty list).
    pub empty_buckets: u64,
    /// Free items in the keg (0 for secondary and cache-only zones).
    pub keg_free: u64,
    /// Current bucket size.
    pub bucket_size: usize,
    /// Items counted against the limit (allocated + cached).
    pub items: u64,
}

/// Writes the table header (`ITEM SIZE LIMIT USED FREE REQ FAIL SLEEP`).
pub fn write_header(w: &mut dyn fmt::Write) -> fmt::Result {
    writeln!(
        w,
        "{:<24} {:>7}  {:>8}  {:>9}  {:>9}  {:>11}  {:>6}  {:>5}",
        "ITEM", "SIZE", "LIMIT", "USED", "FREE", "REQ", "FAIL", "SLEEP"
    )
}

/// Writes one row, formatted as FreeBSD's `vmstat -z`.
pub fn write_row(w: &mut dyn fmt::Write, s: &ZoneStats) -> fmt::Result {
    let mut name = NameCol {
        buf: [b' '; 25],
        len: 0,
    };
    let _ = fmt::write(&mut name, format_args!("{}:", s.name));
    let n = name.len.max(25).min(name.buf.len());
    let name = core::str::from_utf8(&name.buf[..n]).unwrap_or("?");
    writeln!(
        w,
        "{} {:>6}, {:>8}, {:>9}, {:>9}, {:>11}, {:>6}, {:>5}",
        name, s.size, s.limit, s.used, s.free, s.requests, s.fails, s.sleeps
    )
}

struct NameCol {
    buf: [u8; 25],
    len: usize,
}

impl fmt::Write for NameCol {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len < self.buf.len() {
                self.buf[self.len] = if b.is_ascii() { b } else { b'?' };
                self.len += 1;
            }
        }
        Ok(())
    }
}
