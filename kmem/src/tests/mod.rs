//! In-crate tests of kmem's wiring and protocols: the seed-002 tests on a
//! small kernel built by the real wiring (`kernel::wiring::Small`), and
//! the loom models of kmem's own protocols, on the real structs (through
//! the `sync` shim).
//!
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=4 cargo test --release -p bsdalloc-kmem loom`
//! (without `LOOM_MAX_PREEMPTIONS`: no bound, every interleaving).

#[cfg(loom)]
mod loom_pressure;
#[cfg(loom)]
mod loom_seed002;
#[cfg(loom)]
mod loom_timeout;
#[cfg(not(loom))]
mod seed002;
#[cfg(loom)]
use model::{run_model, spawn};

#[cfg(loom)]
mod model {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;

    /// Threads of the models get big stacks (vmem and UMA paths nest deep
    /// under loom's instrumentation).
    const STACK: usize = 1 << 20;

    pub(super) fn spawn<F, T>(f: F) -> loom::thread::JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        loom::thread::Builder::new()
            .stack_size(STACK)
            .spawn(f)
            .expect("spawn")
    }

    /// Runs `f` under loom with the preemption bound of `LOOM_MAX_PREEMPTIONS`
    /// (none when unset) and prints how many executions it explored.
    pub(super) fn run_model(name: &str, f: impl Fn() + Sync + Send + 'static) {
        let b = loom::model::Builder::new();
        let bound = b.preemption_bound;
        let f = Arc::new(f);
        let runs = Arc::new(AtomicUsize::new(0));
        let r2 = runs.clone();
        let t = std::time::Instant::now();
        b.check(move || {
            r2.fetch_add(1, Relaxed);
            let f = f.clone();
            spawn(move || f()).join().expect("model thread");
        });
        println!(
            "loom {name}: {} executions, preemption bound {}, {:.1} s",
            runs.load(Relaxed),
            bound.map_or("none".to_string(), |b| b.to_string()),
            t.elapsed().as_secs_f64()
        );
    }
}
