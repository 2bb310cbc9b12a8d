//! A live heap profile: the side table's samples grouped by stack,
//! symbolized, scaled to the allocations they stand for; and what can be
//! written from it (leak report, collapsed stacks, pprof, SVG).

use super::FixedMap;
use std::fmt::{self, Write as _};
use std::path::Path;

use super::symbols::Resolver;
use super::table::{alloc_free::Buf, Sample, TABLE};

/// One frame of a stack.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StackFrame {
    /// The return address.
    pub addr: usize,
    /// The function (demangled), or `object+offset` without a symbol.
    pub function: String,
    /// The file name of the object holding it.
    pub object: String,
}

/// The live samples of one stack.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StackProfile {
    /// Leaf first; the allocator's own frames trimmed.
    pub frames: Vec<StackFrame>,
    /// Estimated live bytes (asked for) allocated from this stack.
    pub bytes: f64,
    /// Estimated live allocations.
    pub objects: f64,
    /// Live samples behind the estimates.
    pub samples: u64,
}

/// The live heap by stack (see [`profile`](super::profile)).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeapProfile {
    /// Largest first.
    pub stacks: Vec<StackProfile>,
    /// The mean sampling interval in bytes.
    pub interval: u64,
    /// Sum of the stacks' estimates.
    pub total_bytes: f64,
    /// Sum of the stacks' allocation estimates.
    pub total_objects: f64,
}

/// Whether a frame is the allocator's own (trimmed from the leaf end).
fn allocator_frame(f: &StackFrame) -> bool {
    const PREFIXES: &[&str] = &[
        "kmem::",
        "<kmem::",
        "uma::",
        "<uma::",
        "bsdalloc_capi::",
        "__rust_alloc",
        "__rust_realloc",
        "__rg_",
        "__rdl_",
        "alloc::alloc::",
        "<alloc::alloc::Global",
        "_Unwind_",
        "_Znw",
        "_Zna",
    ];
    const NAMES: &[&str] = &[
        "malloc",
        "calloc",
        "realloc",
        "reallocarray",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "valloc",
        "pvalloc",
    ];
    const INSIDE: &[&str] = &[
        "__rust_alloc",
        "__rust_realloc",
        "__rg_alloc",
        "__rg_realloc",
    ];
    f.object.starts_with("libbsdalloc")
        || INSIDE.iter().any(|p| f.function.contains(p))
        || PREFIXES.iter().any(|p| f.function.starts_with(p))
        || NAMES.contains(&f.function.as_str())
}

impl HeapProfile {
    /// The live samples now.
    pub(crate) fn collect() -> HeapProfile {
        // Sized outside the table's lock (allocating under it could
        // deadlock with a sample taken by this allocation).
        let mut v: Vec<Sample> = Vec::with_capacity(TABLE.live() + TABLE.live() / 4 + 64);
        TABLE.snapshot(&mut Buf { v: &mut v });
        let mut res = Resolver::new();
        let mut names: FixedMap<usize, StackFrame> = FixedMap::default();
        let mut by_stack: FixedMap<Vec<usize>, StackProfile> = FixedMap::default();
        for s in &v {
            let mut frames: Vec<StackFrame> = s.stack[..s.depth as usize]
                .iter()
                .map(|&a| {
                    names
                        .entry(a)
                        .or_insert_with(|| {
                            let r = res.resolve(a);
                            StackFrame {
                                addr: a,
                                function: r.function,
                                object: r.object,
                            }
                        })
                        .clone()
                })
                .collect();
            let cut = frames.iter().take_while(|f| allocator_frame(f)).count();
            if cut < frames.len() {
                frames.drain(..cut);
            }
            let key: Vec<usize> = frames.iter().map(|f| f.addr).collect();
            let e = by_stack.entry(key).or_insert_with(|| StackProfile {
                frames,
                ..StackProfile::default()
            });
            e.bytes += s.size as f64 * s.scale;
            e.objects += s.scale;
            e.samples += 1;
        }
        let mut stacks: Vec<StackProfile> = by_stack.into_values().collect();
        stacks.sort_by(|a, b| b.bytes.total_cmp(&a.bytes));
        HeapProfile {
            total_bytes: stacks.iter().map(|s| s.bytes).sum(),
            total_objects: stacks.iter().map(|s| s.objects).sum(),
            stacks,
            interval: super::interval(),
        }
    }

    /// Estimated live bytes of the stacks with a frame whose function
    /// contains `name` (each stack counted once).
    pub fn bytes_in(&self, name: &str) -> f64 {
        self.stacks
            .iter()
            .filter(|s| s.frames.iter().any(|f| f.function.contains(name)))
            .map(|s| s.bytes)
            .sum()
    }

    /// The leak report: the `top` stacks holding the most live bytes, with
    /// their frames (meant for exit, when everything live is a leak).
    pub fn write_leak_report(&self, w: &mut impl fmt::Write, top: usize) -> fmt::Result {
        writeln!(
            w,
            "bsdalloc: leak report: about {:.0} bytes in {:.0} blocks still live at exit \
             (sampled every {} bytes on average; estimates)",
            self.total_bytes, self.total_objects, self.interval
        )?;
        for (i, s) in self.stacks.iter().take(top).enumerate() {
            writeln!(
                w,
                "#{} {:.0} bytes in {:.0} blocks ({:.1}%, {} samples) allocated at:",
                i + 1,
                s.bytes,
                s.objects,
                100.0 * s.bytes / self.total_bytes.max(1.0),
                s.samples
            )?;
            for f in s.frames.iter().take(12) {
                writeln!(w, "    {:#014x} {} ({})", f.addr, f.function, f.object)?;
            }
        }
        if self.stacks.len() > top {
            writeln!(w, "... and {} more stacks", self.stacks.len() - top)?;
        }
        Ok(())
    }

    /// Collapsed stacks (`root;...;leaf bytes`, one line per stack), the
    /// input of `flamegraph.pl` and `inferno-flamegraph`.
    pub fn collapsed(&self) -> String {
        let mut out = String::new();
        for s in &self.stacks {
            // (`;` separates frames: one inside a name, as in `[u8; 4]`,
            // becomes `,`.)
            let line: Vec<String> = s
                .frames
                .iter()
                .rev()
                .map(|f| f.function.replace(';', ","))
                .collect();
            let _ = writeln!(out, "{} {:.0}", line.join(";"), s.bytes);
        }
        out
    }

    /// The profile in pprof's format (gzip-compressed protobuf).
    pub fn pprof(&self) -> Vec<u8> {
        super::pprof::encode(self)
    }

    /// A flame graph of the live bytes, as SVG.
    pub fn svg(&self, title: &str) -> String {
        super::flame::svg(self, title)
    }

    /// Writes `<prefix>.heap.pb.gz`, `<prefix>.collapsed` and
    /// `<prefix>.svg`.
    pub fn write_files(&self, prefix: &Path) -> std::io::Result<()> {
        let with = |ext: &str| {
            let mut p = prefix.as_os_str().to_owned();
            p.push(ext);
            std::path::PathBuf::from(p)
        };
        std::fs::write(with(".heap.pb.gz"), self.pprof())?;
        std::fs::write(with(".collapsed"), self.collapsed())?;
        let title = format!(
            "Live heap: {:.1} MiB estimated ({} stacks)",
            self.total_bytes / (1 << 20) as f64,
            self.stacks.len()
        );
        std::fs::write(with(".svg"), self.svg(&title))
    }
}
