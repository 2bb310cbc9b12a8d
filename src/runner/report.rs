//! The runner's output: comparison tables (text) and a bar chart (SVG,
//! written by hand).
//!
//! Times are the median of the runs of a (workload, allocator) pair and
//! peak RSS the maximum; ratios divide an allocator's figure by the system
//! allocator's (below 1: faster or leaner than the system malloc) and, for
//! kmem when mimalloc or jemalloc ran, by the better of those two per
//! workload (`best`: the lower time, and separately the lower RSS). The
//! `geomean` row is the geometric mean of each ratio column over the
//! workloads where both sides succeeded.

use super::Results;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// A ratio column: its label and its value per workload.
struct RatioCol {
    label: String,
    time: Vec<Option<f64>>,
    rss: Vec<Option<f64>>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The geometric mean of the values present (`None` if there are none).
pub fn geomean(xs: &[Option<f64>]) -> Option<f64> {
    let logs: Vec<f64> = xs.iter().flatten().map(|x| x.ln()).collect();
    (!logs.is_empty()).then(|| (logs.iter().sum::<f64>() / logs.len() as f64).exp())
}

fn time_of(r: &Results, w: &str, a: &str) -> Option<f64> {
    r.cell(w, a).and_then(|c| c.median_time())
}

fn rss_of(r: &Results, w: &str, a: &str) -> Option<f64> {
    r.cell(w, a).and_then(|c| c.max_rss_kib()).map(|k| k as f64)
}

fn min_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The ratio columns: every allocator vs system, then kmem vs the best of
/// mimalloc and jemalloc.
fn ratio_cols(r: &Results) -> Vec<RatioCol> {
    let mut cols = Vec::new();
    let has = |a: &str| r.allocators.contains(&a);
    if has("system") {
        for &a in r.allocators.iter().filter(|&&a| a != "system") {
            cols.push(RatioCol {
                label: format!("{a}/system"),
                time: r
                    .workloads
                    .iter()
                    .map(|w| ratio(time_of(r, w, a), time_of(r, w, "system")))
                    .collect(),
                rss: r
                    .workloads
                    .iter()
                    .map(|w| ratio(rss_of(r, w, a), rss_of(r, w, "system")))
                    .collect(),
            });
        }
    }
    if has("kmem") && (has("mimalloc") || has("jemalloc")) {
        let best = |f: fn(&Results, &str, &str) -> Option<f64>, w: &str| {
            min_of(f(r, w, "mimalloc"), f(r, w, "jemalloc"))
        };
        cols.push(RatioCol {
            label: "kmem/best".into(),
            time: r
                .workloads
                .iter()
                .map(|w| ratio(time_of(r, w, "kmem"), best(time_of, w)))
                .collect(),
            rss: r
                .workloads
                .iter()
                .map(|w| ratio(rss_of(r, w, "kmem"), best(rss_of, w)))
                .collect(),
        });
    }
    cols
}

const W0: usize = 14;
const CW: usize = 10;

fn fmt_ratio(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{x:.2}x"))
}

/// The comparison tables as text.
pub fn tables(r: &Results) -> String {
    let mut s = String::new();
    let runs = if r.passes == 1 {
        "1 run".to_string()
    } else {
        format!("median of {} runs", r.passes)
    };
    let _ = writeln!(
        s,
        "time ({runs}) and peak RSS (max), scale {}, {} threads",
        r.params.scale, r.params.threads
    );
    let _ = write!(s, "{:<W0$}", "workload");
    for a in &r.allocators {
        let _ = write!(s, " {:>w$}", a, w = 2 * CW + 1);
    }
    let _ = write!(s, "\n{:<W0$}", "");
    for _ in &r.allocators {
        let _ = write!(s, " {:>CW$} {:>CW$}", "time", "RSS");
    }
    s.push('\n');
    for (wi, w) in r.workloads.iter().enumerate() {
        let _ = write!(s, "{w:<W0$}");
        for cell in &r.cells[wi] {
            match (cell.median_time(), cell.max_rss_kib()) {
                (Some(t), Some(k)) => {
                    let _ = write!(
                        s,
                        " {:>CW$} {:>CW$}",
                        format!("{t:.3} s"),
                        format!("{:.1} MiB", k as f64 / 1024.0)
                    );
                }
                _ => {
                    let _ = write!(s, " {:>CW$} {:>CW$}", "FAILED", "-");
                }
            }
        }
        s.push('\n');
    }

    let cols = ratio_cols(r);
    if cols.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "\nratios (lower is better; best = the better of mimalloc and jemalloc per workload)"
    );
    let _ = write!(s, "{:<W0$}", "workload");
    for c in &cols {
        let _ = write!(s, " {:>w$}", c.label, w = 2 * CW + 1);
    }
    let _ = write!(s, "\n{:<W0$}", "");
    for _ in &cols {
        let _ = write!(s, " {:>CW$} {:>CW$}", "time", "RSS");
    }
    s.push('\n');
    for (wi, w) in r.workloads.iter().enumerate() {
        let _ = write!(s, "{w:<W0$}");
        for c in &cols {
            let _ = write!(
                s,
                " {:>CW$} {:>CW$}",
                fmt_ratio(c.time[wi]),
                fmt_ratio(c.rss[wi])
            );
        }
        s.push('\n');
    }
    let _ = write!(s, "{:<W0$}", "geomean");
    for c in &cols {
        let _ = write!(
            s,
            " {:>CW$} {:>CW$}",
            fmt_ratio(geomean(&c.time)),
            fmt_ratio(geomean(&c.rss))
        );
    }
    s.push('\n');
    s
}

fn colour(allocator: &str) -> &'static str {
    match allocator {
        "kmem" => "#c0392b",
        "mimalloc" => "#2e86c1",
        "jemalloc" => "#28b463",
        _ => "#7f8c8d",
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chart: per workload (and the geometric mean), one bar per
/// allocator other than system, its time divided by system's, on a log2
/// axis centred on 1 (bars grow up when slower, down when faster).
pub fn svg(r: &Results) -> String {
    let series: Vec<&str> = if r.allocators.contains(&"system") {
        r.allocators
            .iter()
            .copied()
            .filter(|&a| a != "system")
            .collect()
    } else {
        Vec::new()
    };
    // values[g][s]: groups are the workloads, then the geometric mean.
    let mut groups: Vec<String> = r.workloads.iter().map(|w| w.to_string()).collect();
    let mut values: Vec<Vec<Option<f64>>> = r
        .workloads
        .iter()
        .map(|w| {
            series
                .iter()
                .map(|a| ratio(time_of(r, w, a), time_of(r, w, "system")))
                .collect()
        })
        .collect();
    if !series.is_empty() {
        groups.push("geomean".into());
        let gm = (0..series.len())
            .map(|s| geomean(&values.iter().map(|v| v[s]).collect::<Vec<_>>()))
            .collect();
        values.push(gm);
    }

    let all: Vec<f64> = values.iter().flatten().flatten().copied().collect();
    let lo = all.iter().copied().fold(1.0f64, f64::min) / 1.15;
    let hi = all.iter().copied().fold(1.0f64, f64::max) * 1.15;
    let lo_e = lo.log2().floor().min(-1.0) as i32;
    let hi_e = hi.log2().ceil().max(1.0) as i32;

    let (left, right, top, plot_h, bottom) = (70.0, 30.0, 86.0, 340.0, 96.0);
    let bar_w = 22.0;
    let group_w = series.len().max(1) as f64 * bar_w + 26.0;
    let width = (left + right + group_w * groups.len() as f64).max(640.0);
    let height = top + plot_h + bottom;
    let y = |v: f64| top + (f64::from(hi_e) - v.log2()) / f64::from(hi_e - lo_e) * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">"##
    );
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="26" font-size="17" font-weight="bold">bsdalloc: time relative to the system allocator (lower is better)</text>
<text x="{left}" y="46" font-size="12" fill="#555">{} per pair, scale {}, {} threads; log scale, bars from 1x (system)</text>"##,
        if r.passes == 1 {
            "1 run".to_string()
        } else {
            format!("median of {} runs", r.passes)
        },
        r.params.scale,
        r.params.threads
    );
    // Legend.
    for (i, a) in series.iter().enumerate() {
        let x = left + i as f64 * 110.0;
        let _ = writeln!(
            s,
            r##"<rect x="{x}" y="58" width="12" height="12" fill="{}"/><text x="{}" y="69" font-size="12">{}</text>"##,
            colour(a),
            x + 17.0,
            xml_escape(a)
        );
    }
    if series.is_empty() {
        let _ = writeln!(
            s,
            r##"<text x="{left}" y="{}" font-size="14">Only the system allocator ran: nothing to compare.</text>"##,
            top + plot_h / 2.0
        );
    }
    // Grid at the powers of two.
    for e in lo_e..=hi_e {
        let v = 2f64.powi(e);
        let yy = y(v);
        let (stroke, sw) = if e == 0 { ("#333", 1.5) } else { ("#ddd", 1.0) };
        let label = if e >= 0 {
            format!("{}x", 1u64 << e)
        } else {
            format!("1/{}x", 1u64 << -e)
        };
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="{stroke}" stroke-width="{sw}"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#555">{label}</text>"##,
            width - right,
            left - 6.0,
            yy + 4.0
        );
    }
    // Bars.
    let y1 = y(1.0);
    for (g, name) in groups.iter().enumerate() {
        let gx = left + g as f64 * group_w + 13.0;
        for (si, a) in series.iter().enumerate() {
            let x = gx + si as f64 * bar_w;
            match values[g][si] {
                Some(v) => {
                    let yv = y(v);
                    let (ytop, h) = (yv.min(y1), (yv - y1).abs().max(1.0));
                    let ty = if v >= 1.0 {
                        ytop - 4.0
                    } else {
                        ytop + h + 11.0
                    };
                    let _ = writeln!(
                        s,
                        r##"<rect x="{:.1}" y="{ytop:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{} {}: {v:.3}x system</title></rect><text x="{:.1}" y="{ty:.1}" font-size="9" text-anchor="middle">{v:.2}</text>"##,
                        x + 1.0,
                        bar_w - 2.0,
                        colour(a),
                        xml_escape(name),
                        xml_escape(a),
                        x + bar_w / 2.0
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        r##"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle" fill="#c00">n/a</text>"##,
                        x + bar_w / 2.0,
                        y1 - 4.0
                    );
                }
            }
        }
        let cx = gx + series.len() as f64 * bar_w / 2.0;
        let ly = top + plot_h + 14.0;
        let weight = if name == "geomean" { "bold" } else { "normal" };
        let _ = writeln!(
            s,
            r##"<text x="{cx:.1}" y="{ly:.1}" font-size="12" font-weight="{weight}" text-anchor="end" transform="rotate(-35 {cx:.1} {ly:.1})">{}</text>"##,
            xml_escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Writes [`svg`] to `path` (through a temporary file and a rename).
pub fn write_svg(r: &Results, path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, svg(r))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::Cell;
    use crate::workloads::Params;

    fn cell(t: f64, k: u64) -> Cell {
        Cell {
            times: vec![t],
            rss_kib: vec![k],
            failure: None,
        }
    }

    fn sample() -> Results {
        Results {
            workloads: vec!["larson", "mstress"],
            allocators: vec!["system", "kmem", "mimalloc", "jemalloc"],
            cells: vec![
                vec![cell(2.0, 100), cell(1.0, 200), cell(0.5, 50), cell(4.0, 80)],
                vec![
                    cell(1.0, 100),
                    Cell {
                        failure: Some("boom".into()),
                        ..Cell::default()
                    },
                    cell(2.0, 100),
                    cell(1.0, 300),
                ],
            ],
            params: Params::default(),
            passes: 1,
        }
    }

    #[test]
    fn ratios_and_geomean() {
        let cols = ratio_cols(&sample());
        let labels: Vec<_> = cols.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "kmem/system",
                "mimalloc/system",
                "jemalloc/system",
                "kmem/best"
            ]
        );
        assert_eq!(cols[0].time, [Some(0.5), None]);
        assert_eq!(cols[3].time, [Some(2.0), None]); // best time 0.5 (mimalloc)
        assert_eq!(cols[3].rss, [Some(4.0), None]); // best RSS 50 KiB
                                                    // mimalloc/system: 0.25 and 2.
        let gm = geomean(&cols[1].time).unwrap();
        assert!((gm - 0.5f64.sqrt()).abs() < 1e-12, "{gm}");
        assert_eq!(geomean(&[None, None]), None);
    }

    #[test]
    fn tables_and_chart_mention_everything() {
        let r = sample();
        let t = tables(&r);
        for needle in [
            "larson",
            "mstress",
            "FAILED",
            "kmem/best",
            "geomean",
            "0.50x",
        ] {
            assert!(t.contains(needle), "{needle} missing from\n{t}");
        }
        let svg = svg(&r);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for needle in ["larson", "geomean", "kmem", "mimalloc", "jemalloc", "n/a"] {
            assert!(svg.contains(needle), "{needle} missing from the chart");
        }
    }
}
