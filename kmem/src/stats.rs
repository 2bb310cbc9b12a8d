//! Statistics in one place: zones (`vmstat -z`), malloc types
//! (`vmstat -m`), the kernel arena (size, in use, free by order, largest
//! free) and the OS (mapped, resident).

use core::fmt;

use crate::kernel::{boot_usage, kernel};
use crate::os::{os_stats, OsStats};
use crate::pagemeta;

/// A snapshot of the kernel arena and the OS figures.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// The kernel arena (the program's memory).
    pub arena: vmem::ArenaStats,
    /// The metadata arena (the allocator's own slabs, in chunks of the
    /// kernel arena).
    pub meta: vmem::ArenaStats,
    /// The OS.
    pub os: OsStats,
    /// Bytes of page metadata.
    pub page_meta: usize,
    /// Boot pages used (bytes) and boot pages UMA gave back (kept).
    pub boot_used: usize,
    /// See `boot_used`.
    pub boot_returned: usize,
    /// Free items in the btag zone's keg, and its reserve.
    pub btag_free: usize,
    /// See `btag_free`.
    pub btag_reserve: usize,
}

/// Takes a snapshot (`None` if the allocator could not start).
pub fn stats() -> Option<Stats> {
    let k = kernel()?;
    let (boot_used, boot_returned) = boot_usage();
    let info = k.btag.keg_info();
    Some(Stats {
        arena: k.arena.stats(),
        meta: k.meta.stats(),
        os: os_stats(),
        page_meta: pagemeta::meta_bytes(),
        boot_used,
        boot_returned,
        btag_free: info.map_or(0, |i| i.free_items),
        btag_reserve: k.btag_reserve,
    })
}

/// Writes the `vmstat -z` table of every zone (UMA's internal zones, the
/// btag zone, the malloc classes and user zones).
pub fn write_vmstat_z(w: &mut dyn fmt::Write) -> fmt::Result {
    match kernel() {
        Some(k) => k.uma.write_vmstat(w),
        None => writeln!(w, "kmem: not started"),
    }
}

/// Writes the kernel arena's figures and its free space by order.
pub fn write_arena_stats(w: &mut dyn fmt::Write) -> fmt::Result {
    let Some(k) = kernel() else {
        return writeln!(w, "kmem: not started");
    };
    let s = k.arena.stats();
    writeln!(
        w,
        "{}: size {} KiB, in use {} KiB, free {} KiB, largest free {} KiB, {} busy / {} free segments",
        s.name,
        s.size / 1024,
        s.inuse / 1024,
        (s.size - s.inuse) / 1024,
        s.largest_free / 1024,
        s.busy_segments,
        s.free_segments
    )?;
    writeln!(
        w,
        "{:>12} {:>8} {:>12} {:>8} {:>12}",
        "order>=", "busy", "busy KiB", "free", "free KiB"
    )?;
    for o in k.arena.order_stats().iter().filter(|o| o.busy + o.free > 0) {
        writeln!(
            w,
            "{:>12} {:>8} {:>12} {:>8} {:>12}",
            o.size,
            o.busy,
            o.busy_bytes / 1024,
            o.free,
            o.free_bytes / 1024
        )?;
    }
    let m = k.meta.stats();
    writeln!(
        w,
        "{}: size {} KiB (chunks of the kernel arena and the boot chunk), in use {} KiB, largest free {} KiB, {} busy / {} free segments",
        m.name,
        m.size / 1024,
        m.inuse / 1024,
        m.largest_free / 1024,
        m.busy_segments,
        m.free_segments
    )
}

/// Writes the OS figures.
pub fn write_os_stats(w: &mut dyn fmt::Write) -> fmt::Result {
    let o = os_stats();
    writeln!(
        w,
        "os: mapped {} KiB (peak {} KiB), resident {} KiB (peak {} KiB), {} mmap / {} munmap, {} KiB unbacked so far ({} refused, zero-filled), page metadata {} KiB",
        o.mapped / 1024,
        o.peak_mapped / 1024,
        o.resident / 1024,
        o.peak_resident / 1024,
        o.map_calls,
        o.unmap_calls,
        o.unbacked_total / 1024,
        o.unback_failures,
        pagemeta::meta_bytes() / 1024
    )?;
    let d = crate::dirty::dirty_stats();
    writeln!(
        w,
        "dirty: {} KiB held (max {} KiB), {} KiB of free spans retained (max {} KiB); {} KiB reused, {} KiB purged, {} imports from retained spans, {} sweeps of the page words so far",
        d.dirty / 1024,
        crate::dirty::dirty_budget() / 1024,
        d.retained / 1024,
        crate::dirty::RETAIN_MAX / 1024,
        d.reused_total / 1024,
        d.purged_total / 1024,
        d.span_hits,
        d.sweeps
    )?;
    #[cfg(not(loom))]
    crate::timeout::write_timeout_stats(w)?;
    Ok(())
}

/// Everything: zones, malloc types, the kernel arena, the OS.
pub fn write_stats(w: &mut dyn fmt::Write) -> fmt::Result {
    write_vmstat_z(w)?;
    writeln!(w)?;
    crate::malloc::write_vmstat_m(w)?;
    writeln!(w)?;
    write_arena_stats(w)?;
    write_os_stats(w)?;
    crate::pressure::write_pressure_stats(w)
}
