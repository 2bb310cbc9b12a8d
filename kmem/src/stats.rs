//! Statistics in one place: zones (`vmstat -z`), malloc types
//! (`vmstat -m`), the kernel arena (size, in use, free by order, largest
//! free) and the OS (mapped, resident).

use core::fmt;

use crate::kernel::{boot_usage, kernel};
use crate::os::{os_stats, OsStats};
use crate::pagemeta;

/// kmem's statistics in one call ([`stats`]): the five totals a program
/// usually wants (the figures `tikv-jemalloc-ctl` reads as
/// `stats.allocated`, `active`, `resident`, `mapped`, `metadata`), and the
/// kernel arena's and OS figures they come from.
///
/// Every figure is in bytes and read from counters kmem keeps anyway:
/// nothing is counted on the allocation fast path, no zone list is walked
/// and no lock is held across zones, so the totals are exact when the
/// program is quiescent and approximate while other threads allocate.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// Bytes in blocks the program holds: every size-class block at its
    /// class size (malloc(9), `Kmem`, the C ABI alike) plus every large
    /// block's pages. Read from the 41 size-class zones' counters and the
    /// large-block counters.
    pub allocated: usize,
    /// Bytes of pages the kernel arena has handed out: slabs (with their
    /// free items and per-thread caches), large blocks, `kmem_malloc` and
    /// quantum-cached ranges, and the chunks the metadata arena imported;
    /// and those the large classes' arena has handed out (the large
    /// classes' blocks, cached or not).
    /// `active - allocated` is what caches, slab fragmentation and
    /// metadata chunks hold.
    pub active: usize,
    /// The process's resident set (`VmRSS`, one read of
    /// `/proc/self/status` into a stack buffer; 0 if unknown). It covers
    /// the whole process, not only kmem's memory.
    pub resident: usize,
    /// Bytes of address space kmem has mapped from the OS for the arena
    /// (2 MiB-aligned chunks), dirty pages and retained spans included.
    pub mapped: usize,
    /// kmem's own bookkeeping: the page metadata's mappings, the boot
    /// pages (UMA's first structures) and the metadata arena's pages in
    /// use (boundary-tag slabs, UMA's internal zones and buckets).
    pub metadata: usize,
    /// The kernel arena (the program's memory; the metadata arena's
    /// chunks are imported from it).
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

/// kmem's statistics in one call (`None` if the allocator could not
/// start): [`Stats::allocated`], [`active`](Stats::active),
/// [`resident`](Stats::resident), [`mapped`](Stats::mapped) and
/// [`metadata`](Stats::metadata) bytes. Cheap (the size-class zones'
/// counters, the large-block counters and one `/proc/self/status` read;
/// no walk of the zone list) and allocation free, so a
/// `#[global_allocator]` program may call it at any time.
///
/// ```
/// #[global_allocator]
/// static A: kmem::Kmem = kmem::Kmem;
///
/// # fn main() {
/// let v = vec![0u8; 1 << 20];
/// let s = kmem::stats().expect("kmem started");
/// assert!(s.allocated >= v.len());
/// assert!(s.active >= s.allocated && s.mapped >= s.active);
/// println!(
///     "allocated {} KiB, active {} KiB, resident {} KiB, mapped {} KiB, metadata {} KiB",
///     s.allocated >> 10, s.active >> 10, s.resident >> 10, s.mapped >> 10, s.metadata >> 10
/// );
/// # drop(v);
/// # }
/// ```
pub fn stats() -> Option<Stats> {
    let k = kernel()?;
    let (boot_used, boot_returned) = boot_usage();
    let info = k.btag.keg_info();
    let arena = k.arena.stats();
    let meta = k.meta.stats();
    let os = os_stats();
    let page_meta = pagemeta::meta_bytes();
    // Every class zone's and the large blocks' totals: the untyped part
    // plus each type's (the untyped figure is the total less the types').
    let mut allocated = crate::malloc::malloc_untyped_stats().bytes;
    crate::malloc::for_each_malloc_type(|t| allocated += t.stats().bytes);
    Some(Stats {
        allocated: allocated as usize,
        active: arena.inuse + crate::kernel::lc_arena().map_or(0, |a| a.stats().inuse),
        resident: os.resident,
        mapped: os.mapped,
        metadata: page_meta + boot_used + meta.inuse,
        arena,
        meta,
        os,
        page_meta,
        boot_used,
        boot_returned,
        btag_free: info.map_or(0, |i| i.free_items),
        btag_reserve: k.btag_reserve,
    })
}

/// Whether a zone's `vmstat -z` row is all zeros: no item used, free or
/// ever requested (FreeBSD's output is mostly such rows).
fn idle(z: &uma::ZoneStats) -> bool {
    z.used == 0 && z.free == 0 && z.requests == 0 && z.fails == 0 && z.sleeps == 0
}

/// Calls `f` on the statistics of every zone, in list order, without
/// holding the zone list while `f` runs (see [`for_each_zone_row`]).
fn for_each_zone_stats(
    uma: &uma::Uma,
    f: impl FnMut(&uma::ZoneStats) -> fmt::Result,
) -> fmt::Result {
    for_each_zone_row(uma, |z| Some(z.stats()), f)
}

/// Calls `f` on `row(z)` of every zone `z` that has one, in list order,
/// without holding the zone list while `f` runs, so `f` may write to a
/// sink that allocates (an allocation may build a zone, which takes the
/// list): the rows are copied 16 at a time under the list lock. (The list
/// is oldest first: zones built meanwhile come after the rows counted.)
pub(crate) fn for_each_zone_row<T: Copy>(
    uma: &uma::Uma,
    row: impl Fn(&uma::Zone) -> Option<T>,
    mut f: impl FnMut(&T) -> fmt::Result,
) -> fmt::Result {
    const CHUNK: usize = 16;
    let mut done = 0;
    loop {
        let mut rows: [Option<T>; CHUNK] = [None; CHUNK];
        let (mut n, mut i) = (0, 0);
        uma.for_each_zone(|z| {
            let Some(r) = row(z) else { return };
            if i >= done && n < CHUNK {
                rows[n] = Some(r);
                n += 1;
            }
            i += 1;
        });
        for r in rows.iter().flatten() {
            f(r)?;
        }
        if n < CHUNK {
            return Ok(());
        }
        done += n;
    }
}

/// Writes the `vmstat -z` table without its idle rows (zones with no
/// item used, free or ever requested), then a line saying how many were
/// left out. [`write_vmstat_z`] writes them all.
pub fn write_vmstat_z_active(w: &mut dyn fmt::Write) -> fmt::Result {
    let Some(k) = kernel() else {
        return writeln!(w, "kmem: not started");
    };
    uma::stats::write_header(w)?;
    let mut skipped = 0usize;
    for_each_zone_stats(k.uma, |z| {
        if idle(z) {
            skipped += 1;
            Ok(())
        } else {
            uma::stats::write_row(w, z)
        }
    })?;
    if skipped > 0 {
        writeln!(
            w,
            "({skipped} idle zones not shown: nothing used, free or requested; kmem::write_stats_all shows them)"
        )?;
    }
    Ok(())
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
    )?;
    match crate::kernel::lc_arena().map(|a| a.stats()) {
        Some(l) => writeln!(
            w,
            "{}: size {} KiB (spans of its own), in use {} KiB, largest free {} KiB, {} busy / {} free segments",
            l.name,
            l.size / 1024,
            l.inuse / 1024,
            l.largest_free / 1024,
            l.busy_segments,
            l.free_segments
        ),
        None => Ok(()),
    }
}

/// Writes the OS figures.
pub fn write_os_stats(w: &mut dyn fmt::Write) -> fmt::Result {
    let o = os_stats();
    writeln!(
        w,
        "os: mapped {} KiB (peak {} KiB), resident {} KiB (peak {} KiB), {} mmap / {} munmap, {} KiB unbacked so far ({} refused, zero-filled), page metadata {} KiB (address space {} KiB, {} leaves refused)",
        o.mapped / 1024,
        o.peak_mapped / 1024,
        o.resident / 1024,
        o.peak_resident / 1024,
        o.map_calls,
        o.unmap_calls,
        o.unbacked_total / 1024,
        o.unback_failures,
        pagemeta::meta_bytes() / 1024,
        o.meta_reserved / 1024,
        o.meta_refused
    )?;
    let d = crate::dirty::dirty_stats();
    writeln!(
        w,
        "dirty: {} KiB held (max {} KiB), {} KiB of free spans retained (max {} KiB); {} KiB reused, {} KiB purged, {} imports from retained spans, {} sweeps of the page words so far; {} large blocks resized in place; {} KiB of freed slabs kept dirty so far",
        d.dirty / 1024,
        crate::dirty::dirty_budget() / 1024,
        d.retained / 1024,
        crate::dirty::retain_budget() / 1024,
        d.reused_total / 1024,
        d.purged_total / 1024,
        d.span_hits,
        d.sweeps,
        crate::malloc::large_resized(),
        d.slabs_freed_total / 1024
    )?;
    #[cfg(not(loom))]
    crate::timeout::write_timeout_stats(w)?;
    Ok(())
}

/// Everything but idle zones: the one-call totals ([`stats`]), zones
/// (`vmstat -z` without its all-zero rows, see [`write_vmstat_z_active`]),
/// malloc types (`vmstat -m`), the kernel arena, the OS, pressure.
/// Allocation free: it may write to a stack buffer or a file descriptor
/// from inside an allocator. [`write_stats_all`] adds the idle zones,
/// [`write_stats_json`] is the machine-readable form.
pub fn write_stats(w: &mut dyn fmt::Write) -> fmt::Result {
    write_totals(w)?;
    write_vmstat_z_active(w)?;
    write_rest(w)
}

/// [`write_stats`] with every zone, idle ones included.
pub fn write_stats_all(w: &mut dyn fmt::Write) -> fmt::Result {
    write_totals(w)?;
    write_vmstat_z(w)?;
    write_rest(w)
}

fn write_totals(w: &mut dyn fmt::Write) -> fmt::Result {
    match stats() {
        Some(s) => writeln!(
            w,
            "kmem: allocated {} KiB, active {} KiB, resident {} KiB, mapped {} KiB, metadata {} KiB\n",
            s.allocated / 1024,
            s.active / 1024,
            s.resident / 1024,
            s.mapped / 1024,
            s.metadata / 1024
        ),
        None => writeln!(w, "kmem: not started"),
    }
}

fn write_rest(w: &mut dyn fmt::Write) -> fmt::Result {
    writeln!(w)?;
    crate::malloc::write_vmstat_m(w)?;
    writeln!(w)?;
    write_arena_stats(w)?;
    write_os_stats(w)?;
    crate::pressure::write_pressure_stats(w)
}

/// A `fmt::Write` helper for JSON: strings escaped, numbers as they are.
struct Json<'a> {
    w: &'a mut dyn fmt::Write,
}

impl Json<'_> {
    fn raw(&mut self, s: &str) -> fmt::Result {
        self.w.write_str(s)
    }

    fn str(&mut self, s: &str) -> fmt::Result {
        self.w.write_char('"')?;
        for c in s.chars() {
            match c {
                '"' => self.w.write_str("\\\"")?,
                '\\' => self.w.write_str("\\\\")?,
                c if (c as u32) < 0x20 => write!(self.w, "\\u{:04x}", c as u32)?,
                c => self.w.write_char(c)?,
            }
        }
        self.w.write_char('"')
    }

    /// `"key":value` pairs of numbers, comma separated, in braces.
    fn obj(&mut self, fields: &[(&str, u64)]) -> fmt::Result {
        self.raw("{")?;
        for (i, (k, v)) in fields.iter().enumerate() {
            if i > 0 {
                self.raw(",")?;
            }
            self.str(k)?;
            write!(self.w, ":{v}")?;
        }
        self.raw("}")
    }
}

fn malloc_type_json(j: &mut Json<'_>, name: &str, s: &crate::MallocTypeStats) -> fmt::Result {
    j.raw("{\"name\":")?;
    j.str(name)?;
    write!(
        j.w,
        ",\"in_use\":{},\"bytes\":{},\"requests\":{},\"sizes\":[",
        s.in_use, s.bytes, s.requests
    )?;
    let mut first = true;
    for (c, size) in crate::CLASS_SIZES.iter().enumerate() {
        if s.sizes & (1 << c) != 0 {
            write!(j.w, "{}{}", if first { "" } else { "," }, size)?;
            first = false;
        }
    }
    if s.sizes & (1 << 63) != 0 {
        j.raw(if first { "\"large\"" } else { ",\"large\"" })?;
    }
    j.raw("]}")
}

/// The full dump as one JSON object (no newline inside), for programs:
/// `totals` ([`stats`]), `zones` (every zone, idle ones included, with
/// all of [`uma::ZoneStats`]), `malloc_types` (each type, then
/// `(untyped)`), `arena`, `os`, `dirty` and `pressure`. All numbers are
/// integers (bytes or counts). Allocation free, like [`write_stats`].
///
/// ```
/// let mut s = String::new();
/// kmem::write_stats_json(&mut s).unwrap();
/// assert!(s.starts_with("{\"totals\":{\"allocated\":"));
/// ```
pub fn write_stats_json(w: &mut dyn fmt::Write) -> fmt::Result {
    let mut j = Json { w };
    let (Some(k), Some(s)) = (kernel(), stats()) else {
        return j.raw("{\"started\":false}\n");
    };
    j.raw("{\"totals\":")?;
    j.obj(&[
        ("allocated", s.allocated as u64),
        ("active", s.active as u64),
        ("resident", s.resident as u64),
        ("mapped", s.mapped as u64),
        ("metadata", s.metadata as u64),
    ])?;
    j.raw(",\"zones\":[")?;
    let mut first = true;
    for_each_zone_stats(k.uma, |z| {
        if !first {
            j.raw(",")?;
        }
        first = false;
        j.raw("{\"name\":")?;
        j.str(z.name)?;
        j.raw(",\"counts\":")?;
        j.obj(&[
            ("size", z.size as u64),
            ("limit", z.limit as u64),
            ("used", z.used),
            ("free", z.free),
            ("requests", z.requests),
            ("frees", z.frees),
            ("fails", z.fails),
            ("sleeps", z.sleeps),
            ("cached_pcpu", z.cached_pcpu),
            ("cached_buckets", z.cached_buckets),
            ("buckets", z.buckets),
            ("empty_buckets", z.empty_buckets),
            ("keg_free", z.keg_free),
            ("bucket_size", z.bucket_size as u64),
            ("items", z.items),
        ])?;
        j.raw("}")
    })?;
    j.raw("],\"malloc_types\":[")?;
    let mut r = Ok(());
    crate::malloc::for_each_malloc_type(|t| {
        if r.is_ok() {
            r = malloc_type_json(&mut j, t.name(), &t.stats()).and_then(|()| j.raw(","));
        }
    });
    r?;
    malloc_type_json(&mut j, "(untyped)", &crate::malloc::malloc_untyped_stats())?;
    let a = &s.arena;
    j.raw("],\"arena\":{\"name\":")?;
    j.str(a.name.as_str())?;
    j.raw(",\"counts\":")?;
    j.obj(&[
        ("quantum", a.quantum as u64),
        ("size", a.size as u64),
        ("inuse", a.inuse as u64),
        ("busy_segments", a.busy_segments as u64),
        ("free_segments", a.free_segments as u64),
        ("largest_free", a.largest_free as u64),
        ("limit", a.limit as u64),
    ])?;
    let o = &s.os;
    j.raw("},\"os\":")?;
    j.obj(&[
        ("mapped", o.mapped as u64),
        ("peak_mapped", o.peak_mapped as u64),
        ("resident", o.resident as u64),
        ("peak_resident", o.peak_resident as u64),
        ("map_calls", o.map_calls as u64),
        ("unmap_calls", o.unmap_calls as u64),
        ("unbacked_total", o.unbacked_total as u64),
        ("unback_failures", o.unback_failures as u64),
        ("meta_reserved", o.meta_reserved as u64),
        ("meta_refused", o.meta_refused as u64),
        ("page_meta", s.page_meta as u64),
        ("boot_used", s.boot_used as u64),
        ("boot_returned", s.boot_returned as u64),
        ("btag_free", s.btag_free as u64),
        ("btag_reserve", s.btag_reserve as u64),
    ])?;
    let d = crate::dirty::dirty_stats();
    j.raw(",\"dirty\":")?;
    j.obj(&[
        ("dirty", d.dirty as u64),
        ("retained", d.retained as u64),
        ("purged_total", d.purged_total as u64),
        ("reused_total", d.reused_total as u64),
        ("span_hits", d.span_hits as u64),
        ("sweeps", d.sweeps as u64),
        ("slabs_freed_total", d.slabs_freed_total as u64),
    ])?;
    let p = crate::pressure::pressure_stats();
    j.raw(",\"pressure\":")?;
    j.obj(&[
        ("limit", p.limit as u64),
        ("committed", p.committed as u64),
        ("reserved", p.reserved as u64),
        ("reclaim_passes", p.reclaim_passes),
        ("failures", p.failures),
        ("waits", p.waits),
    ])?;
    j.raw("}\n")
}
