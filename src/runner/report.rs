//! The runner's output: comparison tables (text) and a bar chart (SVG,
//! written by hand).
//!
//! Times are the median of the runs of a (workload, allocator) pair and
//! peak RSS the maximum; ratios divide an allocator's figure by the system
//! allocator's (below 1: faster or leaner than the system malloc) and, for
//! kmem and kmem-C when a peer (mimalloc, jemalloc, tcmalloc) ran, by the
//! best of the peers that ran, per workload (`best`: the lower time, and
//! separately the lower RSS). The `geomean` row is the geometric mean of
//! each ratio column over the workloads where both sides succeeded.

use super::{Results, PEERS};
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

/// The peers that ran, in column order.
fn peers_present(r: &Results) -> Vec<&'static str> {
    r.allocators
        .iter()
        .copied()
        .filter(|a| PEERS.contains(a))
        .collect()
}

/// The ratio columns: every allocator vs system, then kmem (and kmem-C)
/// vs the best of the peers that ran.
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
    let peers = peers_present(r);
    if peers.is_empty() {
        return cols;
    }
    let best = |f: fn(&Results, &str, &str) -> Option<f64>, w: &str| {
        peers.iter().map(|p| f(r, w, p)).fold(None, min_of)
    };
    for ours in ["kmem", "kmem-C"].into_iter().filter(|a| has(a)) {
        cols.push(RatioCol {
            label: format!("{ours}/best"),
            time: r
                .workloads
                .iter()
                .map(|w| ratio(time_of(r, w, ours), best(time_of, w)))
                .collect(),
            rss: r
                .workloads
                .iter()
                .map(|w| ratio(rss_of(r, w, ours), best(rss_of, w)))
                .collect(),
        });
    }
    cols
}

/// The ratio table's header: what "best" means, naming only the peers
/// that ran.
fn ratio_header(r: &Results) -> String {
    let peers = peers_present(r);
    match peers.len() {
        0 => "ratios (lower is better)".to_string(),
        1 => format!(
            "ratios (lower is better; best = {}, the only peer that ran)",
            peers[0]
        ),
        n => format!(
            "ratios (lower is better; best = the better of {} and {} per workload)",
            peers[..n - 1].join(", "),
            peers[n - 1]
        ),
    }
}

const W0: usize = 14;
const CW: usize = 9;

fn fmt_ratio(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{x:.2}x"))
}

/// "1 run" or "median of N runs".
fn runs_text(r: &Results) -> String {
    if r.passes == 1 {
        "1 run".to_string()
    } else {
        format!("median of {} runs", r.passes)
    }
}

/// One measurement table: a row per workload, a column per allocator.
fn measure_table(s: &mut String, r: &Results, cell: impl Fn(&super::Cell) -> String) {
    let _ = write!(s, "{:<W0$}", "workload");
    for a in &r.allocators {
        let _ = write!(s, " {a:>CW$}");
    }
    s.push('\n');
    for (wi, w) in r.workloads.iter().enumerate() {
        let _ = write!(s, "{w:<W0$}");
        for c in &r.cells[wi] {
            let _ = write!(s, " {:>CW$}", cell(c));
        }
        s.push('\n');
    }
}

/// One ratio table: two header rows (the numerator, then `/system` or
/// `/best`), a row per workload, the geometric mean.
fn ratio_table(s: &mut String, r: &Results, cols: &[RatioCol], f: fn(&RatioCol) -> &[Option<f64>]) {
    let _ = write!(s, "{:<W0$}", "workload");
    for c in cols {
        let (num, _) = c.label.split_once('/').unwrap_or((&c.label, ""));
        let _ = write!(s, " {num:>CW$}");
    }
    let _ = write!(s, "\n{:<W0$}", "");
    for c in cols {
        let (_, den) = c.label.split_once('/').unwrap_or(("", ""));
        let _ = write!(s, " {:>CW$}", format!("/{den}"));
    }
    s.push('\n');
    for (wi, w) in r.workloads.iter().enumerate() {
        let _ = write!(s, "{w:<W0$}");
        for c in cols {
            let _ = write!(s, " {:>CW$}", fmt_ratio(f(c)[wi]));
        }
        s.push('\n');
    }
    let _ = write!(s, "{:<W0$}", "geomean");
    for c in cols {
        let _ = write!(s, " {:>CW$}", fmt_ratio(geomean(f(c))));
    }
    s.push('\n');
}

/// The comparison tables as text: time, peak RSS, then the ratios of
/// each.
pub fn tables(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "time ({}), scale {}, {} threads",
        runs_text(r),
        r.params.scale,
        r.params.threads
    );
    measure_table(&mut s, r, |c| {
        c.median_time()
            .map_or_else(|| "FAILED".into(), |t| format!("{t:.3} s"))
    });
    let _ = writeln!(s, "\npeak RSS (the largest of the runs)");
    measure_table(&mut s, r, |c| {
        c.max_rss_kib().map_or_else(
            || "FAILED".into(),
            |k| format!("{:.1} MiB", k as f64 / 1024.0),
        )
    });

    let cols = ratio_cols(r);
    if cols.is_empty() {
        return s;
    }
    let _ = writeln!(s, "\ntime {}", ratio_header(r));
    ratio_table(&mut s, r, &cols, |c| &c.time);
    let _ = writeln!(s, "\npeak RSS {}", ratio_header(r));
    ratio_table(&mut s, r, &cols, |c| &c.rss);
    s
}

fn colour(allocator: &str) -> &'static str {
    match allocator {
        "kmem" => "#c0392b",
        "kmem-C" => "#e67e22",
        "mimalloc" => "#2e86c1",
        "jemalloc" => "#28b463",
        "tcmalloc" => "#8e44ad",
        _ => "#7f8c8d",
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A generous estimate of a sans-serif text's width in pixels (so that
/// the chart is at least as wide as its title).
fn text_w(text: &str, font_px: f64, bold: bool) -> f64 {
    text.chars().count() as f64 * font_px * if bold { 0.64 } else { 0.58 }
}

/// One panel of the chart: per group, one bar per series, on a log2 axis
/// centred on 1 (bars grow up when above 1, down when below).
struct Panel<'a> {
    title: &'a str,
    values: &'a [Vec<Option<f64>>],
    top: f64,
    height: f64,
}

struct Layout<'a> {
    left: f64,
    right_edge: f64,
    group_w: f64,
    bar_w: f64,
    groups: &'a [String],
    series: &'a [&'a str],
}

fn draw_panel(s: &mut String, l: &Layout<'_>, p: &Panel<'_>) {
    let all: Vec<f64> = p.values.iter().flatten().flatten().copied().collect();
    let lo = all.iter().copied().fold(1.0f64, f64::min) / 1.15;
    let hi = all.iter().copied().fold(1.0f64, f64::max) * 1.15;
    let lo_e = lo.log2().floor().min(-1.0) as i32;
    let hi_e = hi.log2().ceil().max(1.0) as i32;
    let (top, h, left) = (p.top, p.height, l.left);
    let y = |v: f64| top + (f64::from(hi_e) - v.log2()) / f64::from(hi_e - lo_e) * h;
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="{:.1}" font-size="13" font-weight="bold">{}</text>"##,
        top - 10.0,
        xml_escape(p.title)
    );
    for e in lo_e..=hi_e {
        let yy = y(2f64.powi(e));
        let (stroke, sw) = if e == 0 { ("#333", 1.5) } else { ("#ddd", 1.0) };
        let label = if e >= 0 {
            format!("{}x", 1u64 << e)
        } else {
            format!("1/{}x", 1u64 << -e)
        };
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="{stroke}" stroke-width="{sw}"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#555">{label}</text>"##,
            l.right_edge,
            left - 6.0,
            yy + 4.0
        );
    }
    let y1 = y(1.0);
    for (g, name) in l.groups.iter().enumerate() {
        let gx = left + g as f64 * l.group_w + (l.group_w - l.series.len() as f64 * l.bar_w) / 2.0;
        for (si, a) in l.series.iter().enumerate() {
            let x = gx + si as f64 * l.bar_w;
            match p.values[g][si] {
                Some(v) => {
                    let yv = y(v);
                    let (ytop, bh) = (yv.min(y1), (yv - y1).abs().max(1.0));
                    let ty = if v >= 1.0 {
                        ytop - 3.0
                    } else {
                        ytop + bh + 9.0
                    };
                    let _ = write!(
                        s,
                        r##"<rect x="{:.1}" y="{ytop:.1}" width="{:.1}" height="{bh:.1}" fill="{}"><title>{} {}: {v:.3}x system</title></rect>"##,
                        x + 1.0,
                        l.bar_w - 2.0,
                        colour(a),
                        xml_escape(name),
                        xml_escape(a),
                    );
                    // Values on every bar while they fit side by side;
                    // with more than three series only on the geometric
                    // mean (the others show theirs on hover).
                    if l.series.len() <= 3 || name == "geomean" {
                        let _ = write!(
                            s,
                            r##"<text x="{:.1}" y="{ty:.1}" font-size="8" text-anchor="middle">{v:.2}</text>"##,
                            x + l.bar_w / 2.0
                        );
                    }
                    s.push('\n');
                }
                None => {
                    let _ = writeln!(
                        s,
                        r##"<text x="{:.1}" y="{:.1}" font-size="8" text-anchor="middle" fill="#c00">n/a</text>"##,
                        x + l.bar_w / 2.0,
                        y1 - 4.0
                    );
                }
            }
        }
        let cx = left + (g as f64 + 0.5) * l.group_w;
        let ly = top + h + 16.0;
        let weight = if name == "geomean" { "bold" } else { "normal" };
        let _ = writeln!(
            s,
            r##"<text x="{cx:.1}" y="{ly:.1}" font-size="11" font-weight="{weight}" text-anchor="middle">{}</text>"##,
            xml_escape(name)
        );
    }
}

/// The legend: a coloured square and the name of each series, in a row.
fn draw_legend(s: &mut String, left: f64, series: &[&str]) {
    let mut lx = left;
    for a in series {
        let _ = writeln!(
            s,
            r##"<rect x="{lx:.1}" y="62" width="12" height="12" fill="{}"/><text x="{:.1}" y="73" font-size="12">{}</text>"##,
            colour(a),
            lx + 17.0,
            xml_escape(a)
        );
        lx += text_w(a, 12.0, false) + 34.0;
    }
}

/// The chart: two panels, time (median) and peak RSS (max), each per
/// workload (and the geometric mean) with one bar per allocator other
/// than system, divided by system's figure, on log2 axes centred on 1.
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
    let mut groups: Vec<String> = r.workloads.iter().map(|w| w.to_string()).collect();
    let per = |f: fn(&Results, &str, &str) -> Option<f64>| {
        let mut v: Vec<Vec<Option<f64>>> = r
            .workloads
            .iter()
            .map(|w| {
                series
                    .iter()
                    .map(|a| ratio(f(r, w, a), f(r, w, "system")))
                    .collect()
            })
            .collect();
        if !series.is_empty() {
            let gm = (0..series.len())
                .map(|s| geomean(&v.iter().map(|x| x[s]).collect::<Vec<_>>()))
                .collect();
            v.push(gm);
        }
        v
    };
    let times = per(time_of);
    let rss = per(rss_of);
    if !series.is_empty() {
        groups.push("geomean".into());
    }

    let title = "bsdalloc: time and peak memory relative to the system allocator";
    let subtitle = format!(
        "lower is better; {}, scale {}, {} threads; log scale, bars from 1x (system)",
        runs_text(r),
        r.params.scale,
        r.params.threads
    );
    let (left, right) = (64.0, 24.0);
    let bar_w: f64 = if series.len() > 3 { 14.0 } else { 18.0 };
    let longest = groups
        .iter()
        .map(|g| text_w(g, 11.0, true))
        .fold(0.0, f64::max);
    let group_w = (series.len().max(1) as f64 * bar_w + 14.0).max(longest + 8.0);
    let legend_w: f64 = series.iter().map(|a| text_w(a, 12.0, false) + 34.0).sum();
    let width = (left + right + group_w * groups.len() as f64)
        .max(20.0 + text_w(title, 17.0, true) + 20.0)
        .max(20.0 + text_w(&subtitle, 12.0, false) + 20.0)
        .max(left + legend_w + right)
        .ceil();
    // Spread the groups over the whole plot width.
    let group_w = (width - left - right) / groups.len().max(1) as f64;
    let (panel_h, top1) = (230.0, 112.0);
    let top2 = top1 + panel_h + 70.0;
    let height = top2 + panel_h + 40.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">"##
    );
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" fill="white"/>
<text x="20" y="28" font-size="17" font-weight="bold">{}</text>
<text x="20" y="48" font-size="12" fill="#555">{}</text>"##,
        xml_escape(title),
        xml_escape(&subtitle)
    );
    draw_legend(&mut s, left, &series);
    if series.is_empty() {
        let _ = writeln!(
            s,
            r##"<text x="{left}" y="{}" font-size="14">Only the system allocator ran: nothing to compare.</text>"##,
            top1 + panel_h / 2.0
        );
    } else {
        let l = Layout {
            left,
            right_edge: width - right,
            group_w,
            bar_w,
            groups: &groups,
            series: &series,
        };
        draw_panel(
            &mut s,
            &l,
            &Panel {
                title: "time (median) / system",
                values: &times,
                top: top1,
                height: panel_h,
            },
        );
        draw_panel(
            &mut s,
            &l,
            &Panel {
                title: "peak RSS (max) / system",
                values: &rss,
                top: top2,
                height: panel_h,
            },
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Writes `contents` to `path` through a temporary file and a rename.
fn write_file(path: &Path, contents: &str) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// Writes [`svg`] to `path`.
pub fn write_svg(r: &Results, path: &Path) -> io::Result<()> {
    write_file(path, &svg(r))
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_num(x: Option<f64>) -> String {
    match x {
        Some(x) if x.is_finite() => format!("{x}"),
        _ => "null".into(),
    }
}

fn json_list<T>(xs: &[T], f: impl Fn(&T) -> String) -> String {
    let items: Vec<String> = xs.iter().map(f).collect();
    format!("[{}]", items.join(","))
}

/// The results as JSON: the parameters, the allocators and peers, every
/// run of every (workload, allocator) pair with its median time and
/// largest peak RSS (`null` and `failure` when a run failed), and the
/// ratio columns of the tables with their geometric means.
pub fn json(r: &Results) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "{{\"params\":{{\"scale\":{},\"threads\":{},\"passes\":{}}},\"allocators\":{},\"peers\":{},\"workloads\":[",
        json_num(Some(r.params.scale)),
        r.params.threads,
        r.passes,
        json_list(&r.allocators, |a| json_str(a)),
        json_list(&peers_present(r), |a| json_str(a)),
    );
    for (wi, w) in r.workloads.iter().enumerate() {
        if wi > 0 {
            s.push(',');
        }
        let _ = write!(s, "{{\"name\":{},\"results\":{{", json_str(w));
        for (ai, a) in r.allocators.iter().enumerate() {
            let c = &r.cells[wi][ai];
            if ai > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "{}:{{\"times_s\":{},\"peak_rss_kib\":{},\"median_s\":{},\"max_rss_kib\":{},\"failure\":{}}}",
                json_str(a),
                json_list(&c.times, |t| json_num(Some(*t))),
                json_list(&c.rss_kib, |k| k.to_string()),
                json_num(c.median_time()),
                c.max_rss_kib().map_or_else(|| "null".into(), |k| k.to_string()),
                c.failure.as_deref().map_or_else(|| "null".into(), json_str),
            );
        }
        s.push_str("}}");
    }
    s.push_str("],\"ratios\":[");
    for (i, c) in ratio_cols(r).iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            "{{\"label\":{},\"time\":{},\"rss\":{},\"time_geomean\":{},\"rss_geomean\":{}}}",
            json_str(&c.label),
            json_list(&c.time, |x| json_num(*x)),
            json_list(&c.rss, |x| json_num(*x)),
            json_num(geomean(&c.time)),
            json_num(geomean(&c.rss)),
        );
    }
    s.push_str("]}\n");
    s
}

/// Writes [`json`] to `path`.
pub fn write_json(r: &Results, path: &Path) -> io::Result<()> {
    write_file(path, &json(r))
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
            "/best",
            "/system",
            "geomean",
            "0.50x",
            "peak RSS",
            "best = the better of mimalloc and jemalloc per workload",
        ] {
            assert!(t.contains(needle), "{needle} missing from\n{t}");
        }
        assert!(!t.contains("tcmalloc"), "an absent peer is named:\n{t}");
        let svg = svg(&r);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for needle in [
            "larson",
            "geomean",
            "kmem",
            "mimalloc",
            "jemalloc",
            "n/a",
            "time (median) / system",
            "peak RSS (max) / system",
        ] {
            assert!(svg.contains(needle), "{needle} missing from the chart");
        }
        // The chart is at least as wide as its title.
        let width: f64 = svg
            .split_once("width=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .and_then(|(w, _)| w.parse().ok())
            .unwrap();
        assert!(
            width
                >= 20.0
                    + text_w(
                        "bsdalloc: time and peak memory relative to the system allocator",
                        17.0,
                        true
                    )
        );
    }

    #[test]
    fn the_ratio_header_names_only_the_peers_that_ran() {
        let mut r = sample();
        // Only system and kmem: no "best" at all.
        r.allocators.truncate(2);
        for row in &mut r.cells {
            row.truncate(2);
        }
        let t = tables(&r);
        assert!(!t.contains("best"), "{t}");
        assert!(!t.contains("mimalloc") && !t.contains("jemalloc"), "{t}");
        // One peer: named as such.
        let mut one = sample();
        one.allocators = vec!["system", "kmem", "tcmalloc"];
        for row in &mut one.cells {
            row.truncate(3);
        }
        let t = tables(&one);
        assert!(t.contains("best = tcmalloc, the only peer that ran"), "{t}");
        assert!(!t.contains("mimalloc"), "{t}");
        // kmem-C gets its own best column.
        let mut c = sample();
        c.allocators = vec!["system", "kmem-C", "mimalloc", "jemalloc"];
        let cols = ratio_cols(&c);
        assert_eq!(cols.last().unwrap().label, "kmem-C/best");
    }

    #[test]
    fn json_has_every_run() {
        let j = json(&sample());
        assert!(
            j.starts_with("{\"params\":{") && j.trim_end().ends_with('}'),
            "{j}"
        );
        for needle in [
            "\"allocators\":[\"system\",\"kmem\",\"mimalloc\",\"jemalloc\"]",
            "\"failure\":\"boom\"",
            "\"label\":\"kmem/best\"",
            "\"median_s\":null",
        ] {
            assert!(j.contains(needle), "{needle} missing from {j}");
        }
    }
}
