//! loom models of the lazy timeout's single flight (`timeout.rs`,
//! [`Timeout`], the real struct through kmem's `sync` shim): allocating
//! threads race to claim a due period, and a pass may outlast the period.
//! In every interleaving: one pass per claimed period at most, passes
//! never overlap (the next one's working-set estimate would cover a nearly
//! empty interval), the single-flight flag is never left set, and the
//! count of passes is the count of passes run.

use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::sync::Arc;

use super::{run_model, spawn};
use crate::timeout::Timeout;

const PERIOD: u64 = 10;

/// A pass that checks it runs alone: `inside` counts passes in progress.
fn pass(inside: &AtomicUsize, ran: &AtomicUsize) -> bool {
    assert_eq!(inside.fetch_add(1, SeqCst), 0, "two timeout passes overlap");
    ran.fetch_add(1, SeqCst);
    loom::thread::yield_now();
    inside.fetch_sub(1, SeqCst);
    true
}

struct Shared {
    t: Timeout,
    inside: AtomicUsize,
    ran: AtomicUsize,
}

fn shared() -> Arc<Shared> {
    let s = Shared {
        t: Timeout::new(PERIOD),
        inside: AtomicUsize::new(0),
        ran: AtomicUsize::new(0),
    };
    // The first pass is due at PERIOD.
    s.t.set_period(0, PERIOD);
    Arc::new(s)
}

fn tick(s: &Shared, now: u64) -> bool {
    s.t.tick(now, || false, |_| pass(&s.inside, &s.ran))
}

/// A spawned thread ticks at `there` while this one ticks at `here`:
/// exactly one of them runs a pass (`what` names the period in the
/// message), and it ran once.
fn one_of_two_ticks(s: &Arc<Shared>, there: u64, here: u64, what: &str) {
    let s2 = s.clone();
    let h = spawn(move || tick(&s2, there));
    let a = tick(s, here);
    let b = h.join().unwrap();
    assert!(a ^ b, "{what} ran {} passes", a as u8 + b as u8);
    assert_eq!(s.ran.load(SeqCst), 1);
    assert_eq!(s.t.passes(), 1);
}

/// Two threads find the same period due: exactly one runs the pass.
#[test]
fn loom_timeout_two_ticks_one_period() {
    run_model("timeout one period", || {
        one_of_two_ticks(&shared(), PERIOD + 1, PERIOD + 1, "a due period");
    });
}

/// Two periods claimed by two threads while the first pass still runs:
/// the second is skipped, never run beside the first; whichever order,
/// the flag is clear at the end and a later tick runs.
#[test]
fn loom_timeout_pass_outlasting_its_period() {
    run_model("timeout long pass", || {
        let s = shared();
        let s2 = s.clone();
        let s3 = s.clone();
        let h1 = spawn(move || tick(&s2, PERIOD + 1));
        let h2 = spawn(move || tick(&s3, 3 * PERIOD));
        let a = h1.join().unwrap();
        let b = h2.join().unwrap();
        let ran = s.ran.load(SeqCst);
        assert!(ran >= 1, "no pass ran for two due periods");
        assert_eq!(ran, a as usize + b as usize);
        assert_eq!(s.t.passes() as usize, ran);
        // Not stuck: the next due period runs.
        assert!(tick(&s, 10 * PERIOD), "single flight left set");
    });
}

/// A tick racing the period being turned off either runs before (one
/// pass) or sees it off (none); after that, nothing runs.
#[test]
fn loom_timeout_turned_off_while_ticking() {
    run_model("timeout off", || {
        let s = shared();
        let s2 = s.clone();
        let h = spawn(move || tick(&s2, PERIOD + 1));
        let old = s.t.set_period(PERIOD + 1, 0);
        assert_eq!(old, PERIOD);
        let a = h.join().unwrap();
        assert_eq!(s.ran.load(SeqCst), a as usize);
        assert!(!tick(&s, 100 * PERIOD), "a pass ran with the timeout off");
    });
}

/// [`shared`], with a period's worth of growth counted already.
fn grown() -> Arc<Shared> {
    let s = shared();
    s.t.grew(crate::timeout::GROWTH_PASS_BYTES);
    s
}

/// Growth ends a period early: two threads that find it before the
/// deadline run one pass between them, and the growth is used up (the
/// next early tick runs nothing).
#[test]
fn loom_timeout_growth_runs_one_early_pass() {
    run_model("timeout growth", || {
        let s = grown();
        one_of_two_ticks(&s, 1, 1, "growth");
        assert!(!tick(&s, 2), "the same growth ran a second pass");
    });
}

/// Growth counted while a thread ticks early: the growth is never lost
/// and never runs two passes. Either the tick saw it (one pass), or a
/// later early tick does.
#[test]
fn loom_timeout_growth_racing_a_tick() {
    run_model("timeout growth race", || {
        let s = shared();
        let s2 = s.clone();
        let h = spawn(move || s2.t.grew(crate::timeout::GROWTH_PASS_BYTES));
        let a = tick(&s, 1);
        h.join().unwrap();
        let b = tick(&s, 2);
        assert!(a ^ b, "one growth ran {} passes", a as u8 + b as u8);
        assert_eq!(s.ran.load(SeqCst), 1);
    });
}

/// A period due by time and by growth at once, claimed by two threads
/// (one past the deadline, one early with the growth): one pass.
#[test]
fn loom_timeout_due_by_time_and_growth() {
    run_model("timeout time and growth", || {
        one_of_two_ticks(&grown(), 1, PERIOD + 1, "a period due twice");
    });
}
