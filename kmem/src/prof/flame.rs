//! A flame graph of the live heap, written as SVG directly (Brendan
//! Gregg's layout: the root at the bottom, each frame as wide as the bytes
//! allocated under it, children sorted by name), with a tooltip per frame.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::heap::HeapProfile;

const WIDTH: f64 = 1200.0;
const FRAME_H: f64 = 16.0;
const PAD_TOP: f64 = 36.0;
const PAD_BOTTOM: f64 = 8.0;
const SIDE: f64 = 10.0;
/// Frames narrower than this (pixels) are left out.
const MIN_W: f64 = 1.0;

#[derive(Default)]
struct Node {
    bytes: f64,
    children: BTreeMap<String, Node>,
}

/// Levels of the frames below `n` wide enough to be drawn.
fn depth(n: &Node, total: f64) -> usize {
    n.children
        .values()
        .filter(|c| c.bytes / total * (WIDTH - 2.0 * SIDE) >= MIN_W)
        .map(|c| 1 + depth(c, total))
        .max()
        .unwrap_or(0)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A warm colour from the name (the same name, the same colour).
fn colour(name: &str) -> (u8, u8, u8) {
    let h = name.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    });
    let r = 205 + (h % 50) as u8;
    let g = ((h >> 8) % 180) as u8 + 40;
    let b = ((h >> 16) % 55) as u8;
    (r, g, b)
}

struct Ctx {
    out: String,
    total: f64,
    height: f64,
}

fn emit(ctx: &mut Ctx, name: &str, n: &Node, x: f64, level: usize) {
    let w = n.bytes / ctx.total * (WIDTH - 2.0 * SIDE);
    if w < MIN_W {
        return;
    }
    let y = ctx.height - PAD_BOTTOM - (level as f64 + 1.0) * FRAME_H;
    let (r, g, b) = colour(name);
    let pct = 100.0 * n.bytes / ctx.total;
    let label = escape(name);
    let _ = write!(
        ctx.out,
        "<g><title>{label} ({:.0} bytes, {pct:.2}%)</title>\
         <rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"rgb({r},{g},{b})\" rx=\"2\" ry=\"2\"/>",
        n.bytes,
        x,
        w,
        FRAME_H - 1.0
    );
    // About 7 pixels per character at 12 px.
    let fit = ((w - 6.0) / 7.0).floor();
    if fit >= 3.0 {
        let chars: Vec<char> = name.chars().collect();
        let shown: String = if chars.len() as f64 <= fit {
            name.to_string()
        } else {
            let k = fit as usize - 2;
            chars[..k].iter().collect::<String>() + ".."
        };
        let _ = write!(
            ctx.out,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            x + 3.0,
            y + FRAME_H - 4.5,
            escape(&shown)
        );
    }
    ctx.out.push_str("</g>\n");
    let mut cx = x;
    for (cname, c) in &n.children {
        emit(ctx, cname, c, cx, level + 1);
        cx += c.bytes / ctx.total * (WIDTH - 2.0 * SIDE);
    }
}

/// The flame graph of `p`'s live bytes.
pub(crate) fn svg(p: &HeapProfile, title: &str) -> String {
    let mut root = Node::default();
    for s in &p.stacks {
        root.bytes += s.bytes;
        let mut n = &mut root;
        for f in s.frames.iter().rev() {
            n = n.children.entry(f.function.clone()).or_default();
            n.bytes += s.bytes;
        }
    }
    let levels = depth(&root, root.bytes.max(1.0)) + 1;
    let height = PAD_TOP + PAD_BOTTOM + levels as f64 * FRAME_H;
    let mut ctx = Ctx {
        out: String::new(),
        total: root.bytes.max(1.0),
        height,
    };
    let _ = write!(
        ctx.out,
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" \
         xmlns=\"http://www.w3.org/2000/svg\">\n\
         <style>text {{ font-family: monospace; font-size: 12px; fill: rgb(0,0,0); }}</style>\n\
         <rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{height}\" fill=\"rgb(248,248,240)\"/>\n\
         <text x=\"{:.1}\" y=\"24\" text-anchor=\"middle\" style=\"font-size:17px\">{}</text>\n",
        WIDTH / 2.0,
        escape(title)
    );
    emit(&mut ctx, "all", &root, SIDE, 0);
    ctx.out.push_str("</svg>\n");
    ctx.out
}
