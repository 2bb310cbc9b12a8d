//! Prints the comparison table of the crate docs (issue 19): ns per
//! alloc+free pair in a steady state of N live segments, the allocators
//! interleaved in one process (each repetition runs every allocator once,
//! in turn; medians of the repetitions), then the fill at the first failure.
//!
//! `cargo run --release -p bsdalloc-vmem --example compare [quick]`; `compare fill`
//! prints the fill table alone.

#[path = "../benches/common/peers.rs"]
mod peers;
use peers::Kind;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Steps per timed repetition: fewer for the allocators whose step is slow.
fn steps(kind: Kind, live: usize, quick: bool) -> usize {
    let base = if quick { 20_000 } else { 200_000 };
    match kind {
        Kind::Vmem1Instant | Kind::Vmem1Best | Kind::Vmem1Next | Kind::Range if live >= 10_000 => {
            base / 100
        }
        _ => base,
    }
}

fn table(
    title: &str,
    ids: bool,
    lives: &[usize],
    kinds: &[Kind],
    max_live: &dyn Fn(Kind) -> usize,
    quick: bool,
) {
    let reps = if quick { 3 } else { 7 };
    println!("\n{title} (ns per alloc+free pair, median of {reps} interleaved runs)\n");
    print!("| allocator |");
    for l in lives {
        print!(" {} live |", fmt_live(*l));
    }
    println!();
    print!("|---|");
    for _ in lives {
        print!("---|");
    }
    println!();
    let mut cols: Vec<Vec<Option<(f64, usize)>>> = Vec::new();
    for &live in lives {
        let mut run: Vec<(Kind, Box<dyn peers::Stepper>)> = kinds
            .iter()
            .filter(|k| live <= max_live(**k))
            .map(|&k| (k, peers::steady(k, live, ids, 42)))
            .collect();
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); run.len()];
        for _ in 0..reps {
            for (i, (k, s)) in run.iter_mut().enumerate() {
                times[i].push(s.time(steps(*k, live, quick)));
            }
        }
        cols.push(
            kinds
                .iter()
                .map(|k| {
                    run.iter()
                        .position(|(rk, _)| rk == k)
                        .map(|i| (median(times[i].clone()), run[i].1.failures()))
                })
                .collect(),
        );
    }
    for (ki, k) in kinds.iter().enumerate() {
        print!("| {} |", k.label());
        for col in &cols {
            match col[ki] {
                Some((t, 0)) => print!(" {t:.0} ns |"),
                Some((t, f)) => print!(" {t:.0} ns ({f} failed) |"),
                None => print!(" - |"),
            }
        }
        println!();
    }
}

fn fmt_live(l: usize) -> String {
    format!("10^{}", (l as f64).log10().round() as u32)
}

fn main() {
    use Kind::*;
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("one") {
        // `compare one KIND LIVE STEPS [ids]`: one allocator alone, for a
        // profiler (callgrind --toggle-collect='*Steady*time*').
        let kind = [
            OursInstant,
            OursBest,
            OursNext,
            OursInstantHandle,
            OursBestHandle,
            OursLocalHandle,
            Offset,
            Vmem1Instant,
            Vmem1Best,
            Vmem1Next,
            Range,
        ]
        .into_iter()
        .find(|k| k.short() == args[2])
        .expect("a kind's short name");
        let live: usize = args[3].parse().unwrap();
        let steps: usize = args[4].parse().unwrap();
        let ids = args.get(5).map(String::as_str) == Some("ids");
        let mut s = peers::steady(kind, live, ids, 42);
        println!("{} {live}: {:.0} ns per pair", kind.label(), s.time(steps));
        return;
    }
    let quick = args.iter().any(|a| a == "quick");
    let fill_only = args.get(1).map(String::as_str) == Some("fill");
    let random = [
        OursInstant,
        OursInstantHandle,
        OursLocalHandle,
        OursBest,
        OursBestHandle,
        Offset,
        Vmem1Instant,
        Range,
    ];
    if !fill_only {
        tables(&random, quick);
    }
    fill_table(quick);
}

/// The two timing tables.
fn tables(random: &[Kind], quick: bool) {
    use Kind::*;
    table(
        "Random sizes 1..=1024 units, log-uniform",
        false,
        &[100, 10_000, 100_000, 1_000_000],
        random,
        &|k| match k {
            Vmem1Instant => 100_000,
            Range => 10_000,
            _ => usize::MAX,
        },
        quick,
    );
    table(
        "IDs (size 1; next fit for the vmems)",
        true,
        &[100, 10_000, 1_000_000],
        &[
            OursNext,
            OursInstant,
            OursInstantHandle,
            OursLocalHandle,
            Offset,
            Vmem1Next,
            Range,
        ],
        &|k| match k {
            Vmem1Next | Range => 10_000,
            _ => usize::MAX,
        },
        quick,
    );
}

/// The fill at the first failure, for every allocator.
fn fill_table(quick: bool) {
    use Kind::*;
    let space = 1 << 22;
    let seeds = if quick { 1 } else { 3 };
    println!("\nFill at the first failure ({space}-unit space, random sizes, a random free every other step; mean of {seeds} seeds)\n");
    println!("| allocator | fill |");
    println!("|---|---|");
    for k in [
        OursInstant,
        OursInstantHandle,
        OursLocalHandle,
        OursBest,
        OursBestHandle,
        OursNext,
        Offset,
        Vmem1Instant,
        Vmem1Best,
        Range,
    ] {
        let f: f64 = (0..seeds)
            .map(|s| peers::fill(k, space, 7 + s))
            .sum::<f64>()
            / seeds as f64;
        println!("| {} | {f:.3} |", k.label());
    }
}
