//! Workload child for kmem (`kmem::Kmem`: malloc(9) over UMA and vmem as
//! the global allocator). See `bsdalloc::workloads` for the protocol.
//!
//! With `--stats` it prints, after the result line, `kmem::write_stats`:
//! the one-call totals, the zone table (`vmstat -z` without idle zones),
//! the malloc-type table (`vmstat -m`), the kernel arena, OS and pressure
//! figures.

use std::fmt;
use std::io;

#[global_allocator]
static A: kmem::Kmem = kmem::Kmem;

/// `fmt::Write` onto the (already initialised, locked) stdout: the
/// statistics writers walk kmem's zones, and writing through a growing
/// `String` would allocate from kmem while they do.
struct Out<'a>(&'a mut dyn io::Write);

impl fmt::Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_all(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

fn stats(out: &mut dyn io::Write) -> io::Result<()> {
    let w = &mut Out(out);
    let r = (|| -> fmt::Result {
        fmt::Write::write_str(w, "\n")?;
        kmem::write_stats(w)
    })();
    r.map_err(|_| io::Error::other("writing kmem's statistics failed"))
}

fn main() -> std::process::ExitCode {
    bsdalloc::workloads::child_main_with_stats("kmem", Some(&stats))
}
