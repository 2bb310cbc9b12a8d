//! The statistics a program reads: `kmem::stats()` totals, `write_stats`
//! without idle zones, the JSON dump (parsed here), and `BSDALLOC_STATS=1`
//! printing at exit for a `Kmem` program (this test binary, re-run).
#![cfg(not(loom))]

use std::process::Command;

#[global_allocator]
static A: kmem::Kmem = kmem::Kmem;

#[test]
fn totals_follow_allocations() {
    let before = kmem::stats().expect("kmem starts");
    let blocks: Vec<Vec<u8>> = (0..256).map(|_| vec![1u8; 4000]).collect();
    let big = vec![2u8; 8 << 20];
    let after = kmem::stats().unwrap();
    let grew = after.allocated.saturating_sub(before.allocated);
    assert!(
        grew >= 8 << 20,
        "allocated grew by {grew} bytes for 9 MiB of blocks"
    );
    assert!(after.active >= after.allocated, "{after:?}");
    assert!(after.mapped >= after.active, "{after:?}");
    assert!(after.resident > 0 && after.metadata > 0, "{after:?}");
    drop((blocks, big));
    let freed = kmem::stats().unwrap();
    assert!(freed.allocated < after.allocated, "{freed:?}");
}

#[test]
fn write_stats_leaves_idle_zones_out() {
    // A zone nothing has used (kmem builds its own zones on first use, so
    // the process may have no idle one of its own).
    let idle = kmem::uma()
        .unwrap()
        .create_zone(&uma::ZoneArgs::new("stats-idle", 24))
        .unwrap();
    let mut short = String::new();
    let mut all = String::new();
    kmem::write_stats(&mut short).unwrap();
    kmem::write_stats_all(&mut all).unwrap();
    assert!(short.starts_with("kmem: allocated "), "{short}");
    assert!(short.contains("idle zones not shown"), "{short}");
    assert!(
        !short.contains("stats-idle:") && all.contains("stats-idle:"),
        "{short}\n----\n{all}"
    );
    let _ = idle;
    // Every size class zone with blocks in use is still there.
    let _keep = std::hint::black_box(vec![0u8; 100]);
    let mut again = String::new();
    kmem::write_stats(&mut again).unwrap();
    assert!(
        again.contains("malloc-112") || again.contains("malloc-"),
        "{again}"
    );
}

#[test]
fn json_dump_parses() {
    let _keep: Vec<Box<[u8; 48]>> = (0..100).map(|_| Box::new([0u8; 48])).collect();
    let mut s = String::new();
    kmem::write_stats_json(&mut s).unwrap();
    let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}"));
    let totals = &v["totals"];
    for k in ["allocated", "active", "resident", "mapped", "metadata"] {
        assert!(totals[k].as_u64().is_some(), "totals.{k} missing: {s}");
    }
    assert!(totals["allocated"].as_u64().unwrap() >= 4800);
    let zones = v["zones"].as_array().expect("zones");
    assert!(zones.len() > 40, "{} zones", zones.len());
    assert!(zones
        .iter()
        .all(|z| z["name"].is_string() && z["counts"]["size"].as_u64().is_some()));
    let used: u64 = zones
        .iter()
        .map(|z| z["counts"]["used"].as_u64().unwrap())
        .sum();
    assert!(used >= 100);
    let types = v["malloc_types"].as_array().expect("malloc_types");
    assert_eq!(types.last().unwrap()["name"], "(untyped)");
    for k in ["arena", "os", "dirty", "pressure"] {
        assert!(v[k].is_object(), "{k} missing: {s}");
    }
    assert!(v["os"]["mapped"].as_u64().unwrap() > 0);
}

/// Run only as the child of `bsdalloc_stats_prints_at_exit`.
#[test]
fn child_allocates_and_exits() {
    if std::env::var_os("KMEM_STATS_CHILD").is_none() {
        return;
    }
    let v: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    assert_eq!(v.len(), 1000);
}

#[test]
fn bsdalloc_stats_prints_at_exit() {
    let exe = std::env::current_exe().unwrap();
    let run = |stats: &str| {
        Command::new(&exe)
            .args([
                "--exact",
                "child_allocates_and_exits",
                "--test-threads",
                "1",
            ])
            .env("KMEM_STATS_CHILD", "1")
            .env("BSDALLOC_STATS", stats)
            .output()
            .expect("re-run this test binary")
    };
    let on = run("1");
    let err = String::from_utf8_lossy(&on.stderr);
    assert!(on.status.success(), "{err}");
    assert!(
        err.contains("kmem statistics at exit"),
        "no statistics: {err}"
    );
    assert!(
        err.contains("ITEM") && err.contains("kmem: allocated"),
        "{err}"
    );
    let off = run("0");
    let err = String::from_utf8_lossy(&off.stderr);
    assert!(!err.contains("kmem statistics at exit"), "{err}");
}
