//! loom model of the limit's accounting (`kmem/src/pressure/account.rs`,
//! the real struct, with loom's atomics through kmem's `sync` shim): a reservation being granted and
//! drawn on races ordinary allocations near the limit. In every
//! interleaving: a granted reservation's allocation succeeds, committed
//! memory never passes the limit, an ordinary charge never eats reserved
//! room, and everything balances at the end. A second model shows why the
//! two counters share one word: checked separately, a reservation and an
//! ordinary charge can both pass against the same room.
//!
//! `RUSTFLAGS="--cfg loom" cargo test --release -p bsdalloc-kmem loom`

use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;
use loom::thread;

use crate::pressure::account::Account;

const LIMIT: u64 = 4;

fn model(f: impl Fn() + Sync + Send + 'static) {
    super::run_model("pressure", f);
}

#[test]
fn loom_pressure_reservation_vs_ordinary_near_the_limit() {
    model(|| {
        let acct = Arc::new(Account::new());
        // One page committed already: room for 3.
        assert!(acct.try_charge(1, LIMIT, false, false));
        let a = acct.clone();
        let reserver = thread::spawn(move || {
            // Reserve 2 pages (at most half the limit), then draw them.
            if !a.try_reserve(2, LIMIT, LIMIT / 2) {
                return 0;
            }
            assert!(
                a.try_charge(2, LIMIT, true, false),
                "a granted reservation's allocation failed"
            );
            a.unreserve(2);
            let (c, _) = a.get();
            assert!(c <= LIMIT);
            2
        });
        let b = acct.clone();
        let ordinary = thread::spawn(move || {
            let mut got = 0;
            for _ in 0..3 {
                if b.try_charge(1, LIMIT, false, false) {
                    got += 1;
                    let (c, _) = b.get();
                    assert!(c <= LIMIT);
                }
            }
            got
        });
        let r = reserver.join().unwrap();
        let o = ordinary.join().unwrap();
        let (c, res) = acct.get();
        assert_eq!(res, 0);
        assert_eq!(c, 1 + r + o);
        assert!(c <= LIMIT);
        // Both cannot have had 2 of the 3 free pages... unless the ordinary
        // thread ran first and left room: never more than the limit.
        assert!(r + o < LIMIT);
        acct.uncharge(c);
        assert_eq!(acct.get(), (0, 0));
    });
}

#[test]
fn loom_pressure_ordinary_charges_leave_reserved_room() {
    model(|| {
        let acct = Arc::new(Account::new());
        assert!(acct.try_reserve(2, LIMIT, LIMIT / 2));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let a = acct.clone();
                thread::spawn(move || {
                    let mut got = 0;
                    while a.try_charge(1, LIMIT, false, false) {
                        got += 1;
                    }
                    got
                })
            })
            .collect();
        let got: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        // Ordinary charges stopped at limit - reserved.
        assert_eq!(got, LIMIT - 2);
        // The reservation's draws still fit.
        assert!(acct.try_charge(2, LIMIT, true, false));
        acct.unreserve(2);
        assert_eq!(acct.get(), (LIMIT, 0));
    });
}

/// The same protocol with committed and reserved in two atomics: a
/// reservation and an ordinary charge can both pass against the same
/// room. Kept as a regression guard for the one-word design.
#[test]
fn loom_pressure_two_counters_overcommit() {
    use loom::sync::atomic::Ordering::SeqCst;
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = seen.clone();
    model(move || {
        let committed = Arc::new(AtomicU64::new(2));
        let reserved = Arc::new(AtomicU64::new(0));
        let (c1, r1) = (committed.clone(), reserved.clone());
        let t = thread::spawn(move || {
            // Reserve 2: check, then add (separately).
            if c1.load(SeqCst) + r1.load(SeqCst) + 2 <= LIMIT {
                r1.fetch_add(2, SeqCst);
            }
        });
        if committed.load(SeqCst) + reserved.load(SeqCst) + 2 <= LIMIT {
            committed.fetch_add(2, SeqCst);
        }
        t.join().unwrap();
        if committed.load(SeqCst) + reserved.load(SeqCst) > LIMIT {
            s2.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    assert!(
        seen.load(std::sync::atomic::Ordering::Relaxed),
        "loom found no overcommit with two counters"
    );
}
