//! A PID allocator with next fit, as FreeBSD could allocate process IDs:
//! IDs cycle upward through the space and are not reused until it wraps.
//!
//! `cargo run -p bsdalloc-vmem --example pid`

use vmem::{Arena, Flags};

const PID_MIN: usize = 100;
const PID_MAX: usize = 99_999;

fn main() -> Result<(), vmem::Error> {
    let pids = Arena::builder("pids")
        .span(PID_MIN, PID_MAX - PID_MIN + 1)
        .build()?;
    let next = || pids.alloc(1, Flags::NOWAIT | Flags::NEXTFIT);

    let first: Vec<usize> = (0..5).map(|_| next()).collect::<Result<_, _>>()?;
    println!("first five PIDs:          {first:?}");
    for &p in &first[..3] {
        pids.free(p, 1)?; // those processes exit
    }
    let more: Vec<usize> = (0..3).map(|_| next()).collect::<Result<_, _>>()?;
    println!("after three exit, next:   {more:?} (exited IDs are not reused yet)");

    // Fill the space, then free one ID: next fit wraps around to find it.
    let mut live = 5;
    while next().is_ok() {
        live += 1;
    }
    println!("space full at {live} live PIDs");
    pids.free(4242, 1)?;
    println!("after PID 4242 exits:     {}", next()?);
    pids.check_invariants().expect("arena invariants");
    println!("{pids:?}");
    for pid in PID_MIN..=PID_MAX {
        pids.free(pid, 1)?;
    }
    Ok(())
}
