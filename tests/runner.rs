//! The main job end to end at `--quick` scale: the runner finds the `wl-*`
//! children built next to it (and libbsdalloc.so and the peers' shared
//! libraries when present), runs every workload under each, prints the
//! comparison tables, and writes the SVG chart and the JSON results.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn quick_run_prints_the_table_and_writes_the_chart() {
    let svg: PathBuf = [env!("CARGO_TARGET_TMPDIR"), "runner-quick.svg"]
        .iter()
        .collect();
    let json: PathBuf = [env!("CARGO_TARGET_TMPDIR"), "runner-quick.json"]
        .iter()
        .collect();
    let _ = std::fs::remove_file(&svg);
    let _ = std::fs::remove_file(&json);
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_bsdalloc"))
        // The peers have their own test below (one workload): here the
        // whole suite under system, kmem and kmem-C.
        .args(["--quick", "--no-build", "--no-peers", "--svg"])
        .arg(&svg)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run the bsdalloc binary");
    let took = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bsdalloc --quick failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // About 5 s in release and 20 s in debug on an idle 2-core machine;
    // the bound leaves room for a machine shared with other builds.
    assert!(
        took < Duration::from_secs(60),
        "--quick took {took:?}:\n{stdout}"
    );

    // One progress line per run, then the table with a row per workload.
    let table = stdout
        .split_once("time (1 run), scale")
        .unwrap_or_else(|| panic!("no table in:\n{stdout}"))
        .1;
    let (times, rest) = table
        .split_once("peak RSS (the largest of the runs)")
        .unwrap_or_else(|| panic!("no RSS table in:\n{stdout}"));
    for w in bsdalloc::workloads::WORKLOADS {
        assert!(
            stdout.contains(&format!("] {:<14} system", w.name)),
            "no progress line for {} under system:\n{stdout}",
            w.name
        );
        let row = |t: &str| {
            t.lines()
                .find(|l| l.starts_with(w.name))
                .unwrap_or_else(|| panic!("no table row for {}:\n{stdout}", w.name))
                .to_string()
        };
        let (t, m) = (row(times), row(rest));
        assert!(t.contains(" s"), "bad row {t:?}");
        assert!(m.contains("MiB"), "bad row {m:?}");
        assert!(!t.contains("FAILED"), "a run failed: {t:?}\n{stdout}");
    }
    if stdout.contains("allocators: system, kmem") {
        assert!(rest.contains("/system"), "no ratio table:\n{stdout}");
        assert!(rest.contains("geomean"), "no geometric mean:\n{stdout}");
    }
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("no JSON: {e}\n{stdout}")),
    )
    .expect("the JSON results parse");
    assert_eq!(
        results["workloads"].as_array().unwrap().len(),
        bsdalloc::workloads::WORKLOADS.len()
    );
    assert_eq!(results["params"]["passes"], 1);

    let chart = std::fs::read_to_string(&svg)
        .unwrap_or_else(|e| panic!("chart {} not written: {e}\n{stdout}", svg.display()));
    assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
    assert!(
        stdout.contains(&svg.display().to_string()),
        "chart path not named"
    );
}

/// With no flag the peers (jemalloc, mimalloc, tcmalloc) run when their
/// shared libraries are installed; otherwise one line says how to get
/// them, and no table names them.
#[test]
fn peers_run_when_installed_or_are_explained() {
    let out = Command::new(env!("CARGO_BIN_EXE_bsdalloc"))
        .args([
            "--quick",
            "--no-build",
            "--no-stats",
            "--only",
            "xmalloc-test",
        ])
        .arg("--svg")
        .arg(
            [env!("CARGO_TARGET_TMPDIR"), "runner-peers.svg"]
                .iter()
                .collect::<PathBuf>(),
        )
        .output()
        .expect("run the bsdalloc binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let rest = stdout
        .split_once("peak RSS (the largest of the runs)")
        .unwrap_or_else(|| panic!("no RSS table in:\n{stdout}"))
        .1;
    // Either the peers ran or one line says how to get them; the ratio
    // header names no peer that did not run.
    let allocators = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("allocators: "))
        .unwrap_or_else(|| panic!("no allocator line:\n{stdout}"));
    for peer in ["mimalloc", "jemalloc", "tcmalloc"] {
        if !allocators.contains(peer) {
            assert!(
                stdout.contains("not installed, so not compared"),
                "{peer} neither ran nor was explained:\n{stdout}"
            );
            assert!(
                !rest.contains(peer),
                "the tables name {peer}, which did not run:\n{stdout}"
            );
        }
    }
    for peer in ["mimalloc", "jemalloc", "tcmalloc"] {
        if allocators.contains(peer) {
            assert!(
                rest.contains("/best"),
                "{peer} ran, no best column:\n{stdout}"
            );
            let row = stdout
                .lines()
                .find(|l| l.contains(&format!("] xmalloc-test   {peer}")))
                .unwrap_or_else(|| panic!("no {peer} run:\n{stdout}"));
            assert!(!row.contains("FAILED"), "{row}");
        }
    }
}

#[test]
fn bad_arguments_are_reported_not_panicked_on() {
    let out = Command::new(env!("CARGO_BIN_EXE_bsdalloc"))
        .args(["--only", "no-such-workload"])
        .output()
        .expect("run the bsdalloc binary");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown workload"), "{stderr}");
    assert!(stderr.contains("larson"), "no list of workloads: {stderr}");
}
