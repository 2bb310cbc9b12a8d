//! A burst of frees and what stays resident afterwards: allocates 1 GiB in
//! blocks of SIZE bytes (default 1000), frees them all, then keeps
//! allocating and freeing a little for 8 s, printing the resident set each
//! second. With kmem's lazy timeout (on by default) the burst goes back
//! within a few seconds and no thread of kmem's own; `--no-timeout` turns
//! it off, `--system` runs the same on the system malloc.
//!
//! ```text
//! cargo run --release -p bsdalloc-kmem --example burst_return -- 1000
//! cargo run --release -p bsdalloc-kmem --example burst_return -- 1000 --system
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::time::{Duration, Instant};

fn resident_mib() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (pages * 4096) >> 20
}

fn run(a: &dyn GlobalAlloc, size: usize) {
    let l = Layout::from_size_align(size, 8).expect("size");
    let n = (1 << 30) / size;
    // The pointer table comes from the same allocator (and is freed).
    let tl = Layout::array::<*mut u8>(n).expect("table");
    let start = Instant::now();
    // SAFETY: every block is allocated and freed with its layout; blocks
    // are written within their size.
    unsafe {
        let table = a.alloc(tl).cast::<*mut u8>();
        assert!(!table.is_null());
        for i in 0..n {
            let p = a.alloc(l);
            assert!(!p.is_null());
            p.write_bytes(1, size);
            table.add(i).write(p);
        }
        print!("{size}-byte blocks: {} MiB allocated", resident_mib());
        for i in 0..n {
            a.dealloc(table.add(i).read(), l);
        }
        a.dealloc(table.cast(), tl);
    }
    print!(
        ", {} MiB after the frees ({:.1} s); then each second:",
        resident_mib(),
        start.elapsed().as_secs_f64()
    );
    let small = Layout::from_size_align(48, 8).expect("small");
    let mut v = Vec::with_capacity(2000);
    for _ in 0..8 {
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end {
            // SAFETY: as above.
            unsafe {
                v.extend((0..2000).map(|_| a.alloc(small)));
                for p in v.drain(..) {
                    a.dealloc(p, small);
                }
            }
        }
        print!(" {}", resident_mib());
    }
    println!(" MiB");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000usize)
        .max(1);
    if args.iter().any(|a| a == "--system") {
        run(&System, size);
        return;
    }
    if args.iter().any(|a| a == "--no-timeout") {
        kmem::set_timeout_period(None);
    }
    run(&kmem::Kmem, size);
    println!("kmem timeout passes: {}", kmem::timeout_passes());
}
