//! The main job end to end at `--quick` scale: the runner finds the `wl-*`
//! children built next to it, runs every workload under each, and prints
//! the comparison table and writes the SVG chart.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn quick_run_prints_the_table_and_writes_the_chart() {
    let svg: PathBuf = [env!("CARGO_TARGET_TMPDIR"), "runner-quick.svg"]
        .iter()
        .collect();
    let _ = std::fs::remove_file(&svg);
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_bsdalloc"))
        .args(["--quick", "--no-build", "--svg"])
        .arg(&svg)
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
    assert!(
        took < Duration::from_secs(25),
        "--quick took {took:?}:\n{stdout}"
    );

    // One progress line per run, then the table with a row per workload.
    let table = stdout
        .split_once("time (1 run) and peak RSS")
        .unwrap_or_else(|| panic!("no table in:\n{stdout}"))
        .1;
    for w in bsdalloc::workloads::WORKLOADS {
        assert!(
            stdout.contains(&format!("] {:<14} system", w.name)),
            "no progress line for {} under system:\n{stdout}",
            w.name
        );
        let row = table
            .lines()
            .find(|l| l.starts_with(w.name))
            .unwrap_or_else(|| panic!("no table row for {}:\n{stdout}", w.name));
        assert!(
            row.contains(" s ") && row.contains("MiB"),
            "bad row {row:?}"
        );
        assert!(!row.contains("FAILED"), "a run failed: {row:?}\n{stdout}");
    }
    if stdout.contains("allocators: system, kmem") {
        assert!(table.contains("kmem/system"), "no ratio table:\n{stdout}");
        assert!(table.contains("geomean"), "no geometric mean:\n{stdout}");
    }

    let chart = std::fs::read_to_string(&svg)
        .unwrap_or_else(|e| panic!("chart {} not written: {e}\n{stdout}", svg.display()));
    assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
    assert!(
        stdout.contains(&svg.display().to_string()),
        "chart path not named"
    );
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
