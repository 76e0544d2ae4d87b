//! Inline SVG charts: lines (distributions, timelines), scatter with phase
//! bands, grouped bars. No scripts, no fonts or files from outside, so the
//! page renders the same offline, in any browser, years later.
//!
//! Every chart is an `<svg id=… class="chart">` with a `<title>`, so tests
//! and screen readers can find it.

use std::fmt::Write as _;

use crate::fmt::fixed;

pub const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

pub fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const W: f64 = 800.0;
const H: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 44.0;

#[derive(Debug, Clone, Copy)]
pub struct Scale {
    lo: f64,
    hi: f64,
    log: bool,
    a: f64,
    b: f64,
}

impl Scale {
    fn new(lo: f64, hi: f64, log: bool, a: f64, b: f64) -> Scale {
        let (mut lo, mut hi) = (lo, hi);
        if log {
            lo = lo.max(1e-6);
            hi = hi.max(lo * 10.0);
        } else if (hi - lo).abs() < 1e-12 {
            lo -= 1.0;
            hi += 1.0;
        }
        Scale { lo, hi, log, a, b }
    }

    pub fn at(&self, v: f64) -> f64 {
        let t = if self.log {
            (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        self.a + t.clamp(-0.05, 1.05) * (self.b - self.a)
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let mut t = Vec::new();
            let (a, b) = (
                self.lo.log10().floor() as i32,
                self.hi.log10().ceil() as i32,
            );
            let few = b - a <= 2;
            for k in a..=b {
                for m in if few {
                    &[1.0, 2.0, 5.0][..]
                } else {
                    &[1.0][..]
                } {
                    let v = m * 10f64.powi(k);
                    if v >= self.lo * 0.999 && v <= self.hi * 1.001 {
                        t.push(v);
                    }
                }
            }
            return t;
        }
        let span = self.hi - self.lo;
        let raw = span / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * mag)
            .find(|s| span / s <= 6.0)
            .unwrap_or(10.0 * mag);
        let mut v = (self.lo / step).ceil() * step;
        let mut out = Vec::new();
        while v <= self.hi + step * 1e-9 {
            out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
            v += step;
        }
        out
    }
}

fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", fixed(v / 1e6, 1))
    } else if a >= 1e4 {
        format!("{}k", fixed(v / 1e3, 1))
    } else if a >= 10.0 || a == 0.0 {
        fixed(v, 0)
    } else if a >= 1.0 {
        fixed(v, 1)
    } else {
        fixed(v, 3)
    }
}

fn open(s: &mut String, id: &str, title: &str) {
    let _ = write!(
        s,
        "<svg id=\"{id}\" class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\"><title>{}</title>",
        esc(title)
    );
    let _ = write!(
        s,
        "<text x=\"{LEFT}\" y=\"16\" font-weight=\"600\">{}</text>",
        esc(title)
    );
}

/// A light horizontal line and a label at every tick of `y`, across the plot.
fn y_grid(s: &mut String, y: &Scale) {
    let (x0, x1) = (LEFT, W - RIGHT);
    for t in y.ticks() {
        let py = y.at(t);
        let _ = write!(
            s,
            "<line x1=\"{x0}\" y1=\"{py:.1}\" x2=\"{x1}\" y2=\"{py:.1}\" stroke=\"#eee\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            x0 - 6.0,
            py + 4.0,
            tick_label(t)
        );
    }
}

fn axes(s: &mut String, x: &Scale, y: &Scale, x_label: &str, y_label: &str) {
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    y_grid(s, y);
    for t in x.ticks() {
        let px = x.at(t);
        let _ = write!(
            s,
            "<line x1=\"{px:.1}\" y1=\"{y0}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#999\"/><text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            y0 + 4.0,
            y0 + 16.0,
            tick_label(t)
        );
    }
    let _ = write!(
        s,
        "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#333\"/><line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"#333\"/>"
    );
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
        (x0 + x1) / 2.0,
        H - 8.0,
        esc(x_label)
    );
    let _ = write!(
        s,
        "<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">{}</text>",
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0,
        esc(y_label)
    );
}

fn legend(s: &mut String, names: &[(String, &str)]) {
    for (i, (n, c)) in names.iter().enumerate() {
        let y = TOP + 6.0 + i as f64 * 16.0;
        let x = W - RIGHT + 12.0;
        let _ = write!(
            s,
            "<rect x=\"{x}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{c}\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"legend\">{}</text>",
            y - 9.0,
            x + 14.0,
            y,
            esc(n)
        );
    }
}

/// A named band on the x axis (a phase).
pub struct Band {
    pub name: String,
    pub x0: f64,
    pub x1: f64,
}

fn bands(s: &mut String, x: &Scale, bands: &[Band]) {
    for (i, b) in bands.iter().enumerate() {
        let (a, c) = (x.at(b.x0), x.at(b.x1));
        let _ = write!(
            s,
            "<rect class=\"band\" data-phase=\"{}\" x=\"{a:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\" fill-opacity=\"0.08\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#555\">{}</text>",
            esc(&b.name),
            (c - a).max(1.0),
            H - BOTTOM - TOP,
            color(i),
            a + 3.0,
            TOP + 11.0 + (i % 3) as f64 * 12.0,
            esc(&b.name)
        );
    }
}

pub struct Line {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
}

fn extent(vals: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for v in vals.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo <= hi).then_some((lo, hi))
}

/// Whether values spanning `lo..hi` read better on a log axis.
pub fn wants_log(lo: f64, hi: f64) -> bool {
    lo > 0.0 && hi / lo > 50.0
}

pub struct Chart<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub x_log: bool,
    /// Force the y axis to start at 0.
    pub y_zero: bool,
}

pub fn line_chart(c: &Chart<'_>, lines: &[Line], band_list: &[Band]) -> String {
    let mut s = String::new();
    open(&mut s, c.id, c.title);
    let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let xs = xs.chain(band_list.iter().flat_map(|b| [b.x0, b.x1]));
    let (xl, xh) = extent(xs.filter(|x| !c.x_log || *x > 0.0)).unwrap_or((0.0, 1.0));
    let (yl, yh) =
        extent(lines.iter().flat_map(|l| l.points.iter().map(|p| p.1))).unwrap_or((0.0, 1.0));
    let x = Scale::new(xl, xh, c.x_log, LEFT, W - RIGHT);
    let y = Scale::new(
        if c.y_zero { yl.min(0.0) } else { yl },
        yh,
        false,
        H - BOTTOM,
        TOP,
    );
    bands(&mut s, &x, band_list);
    axes(&mut s, &x, &y, c.x_label, c.y_label);
    for l in lines {
        if l.points.is_empty() {
            continue;
        }
        let d: Vec<String> = l
            .points
            .iter()
            .map(|(px, py)| format!("{:.1},{:.1}", x.at(*px), y.at(*py)))
            .collect();
        let _ = write!(
            s,
            "<polyline class=\"series\" data-series=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\" points=\"{}\"/>",
            esc(&l.name),
            l.color,
            d.join(" ")
        );
    }
    legend(
        &mut s,
        &lines
            .iter()
            .map(|l| (l.name.clone(), l.color))
            .collect::<Vec<_>>(),
    );
    s.push_str("</svg>");
    s
}

pub struct Dot {
    pub x: f64,
    pub y: f64,
    pub color: &'static str,
    pub hollow: bool,
}

pub fn scatter(
    c: &Chart<'_>,
    dots: &[Dot],
    band_list: &[Band],
    legend_items: &[(String, &'static str)],
) -> String {
    let mut s = String::new();
    open(&mut s, c.id, c.title);
    let xs = dots
        .iter()
        .map(|d| d.x)
        .chain(band_list.iter().flat_map(|b| [b.x0, b.x1]));
    let (xl, xh) = extent(xs).unwrap_or((0.0, 1.0));
    let (_, yh) = extent(dots.iter().map(|d| d.y)).unwrap_or((0.0, 1.0));
    let x = Scale::new(xl.min(0.0), xh, false, LEFT, W - RIGHT);
    let y = Scale::new(0.0, yh * 1.05, false, H - BOTTOM, TOP);
    bands(&mut s, &x, band_list);
    axes(&mut s, &x, &y, c.x_label, c.y_label);
    s.push_str("<g class=\"dots\">");
    for d in dots {
        let paint = if d.hollow {
            format!("fill=\"none\" stroke=\"{}\"", d.color)
        } else {
            format!("fill=\"{}\"", d.color)
        };
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" {paint}/>",
            x.at(d.x),
            y.at(d.y)
        );
    }
    s.push_str("</g>");
    legend(&mut s, legend_items);
    s.push_str("</svg>");
    s
}

pub struct Bars {
    pub name: String,
    pub color: &'static str,
    pub values: Vec<Option<f64>>,
}

/// Grouped bars: one group per category (phase), one bar per series.
pub fn bar_chart(
    id: &str,
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[Bars],
) -> String {
    let mut s = String::new();
    open(&mut s, id, title);
    let (_, yh) = extent(
        series
            .iter()
            .flat_map(|b| b.values.iter().flatten().copied()),
    )
    .unwrap_or((0.0, 1.0));
    let y = Scale::new(
        0.0,
        if yh > 0.0 { yh * 1.08 } else { 1.0 },
        false,
        H - BOTTOM,
        TOP,
    );
    let x0 = LEFT;
    let x1 = W - RIGHT;
    y_grid(&mut s, &y);
    let n = categories.len().max(1) as f64;
    let gw = (x1 - x0) / n;
    let bw = (gw * 0.8) / series.len().max(1) as f64;
    for (ci, cat) in categories.iter().enumerate() {
        let gx = x0 + gw * ci as f64 + gw * 0.1;
        for (si, b) in series.iter().enumerate() {
            let Some(v) = b.values.get(ci).copied().flatten() else {
                continue;
            };
            let top = y.at(v);
            let _ = write!(
                s,
                "<rect class=\"bar\" data-phase=\"{}\" data-series=\"{}\" data-value=\"{}\" x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {}: {}</title></rect>",
                esc(cat),
                esc(&b.name),
                fixed(v, 3),
                gx + bw * si as f64,
                (bw - 1.0).max(1.0),
                (H - BOTTOM - top).max(0.0),
                b.color,
                esc(cat),
                esc(&b.name),
                fixed(v, 3)
            );
        }
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            gx + gw * 0.4,
            H - BOTTOM + 16.0,
            esc(cat)
        );
    }
    let _ = write!(
        s,
        "<line x1=\"{x0}\" y1=\"{}\" x2=\"{x1}\" y2=\"{}\" stroke=\"#333\"/>",
        H - BOTTOM,
        H - BOTTOM
    );
    let _ = write!(
        s,
        "<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">{}</text>",
        H / 2.0,
        H / 2.0,
        esc(y_label)
    );
    legend(
        &mut s,
        &series
            .iter()
            .map(|b| (b.name.clone(), b.color))
            .collect::<Vec<_>>(),
    );
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        let s = Scale::new(0.0, 93.0, false, 0.0, 100.0);
        assert_eq!(s.ticks(), vec![0.0, 20.0, 40.0, 60.0, 80.0]);
        let l = Scale::new(0.5, 2000.0, true, 0.0, 100.0);
        assert_eq!(l.ticks(), vec![1.0, 10.0, 100.0, 1000.0]);
    }

    #[test]
    fn charts_are_tagged() {
        let c = Chart {
            id: "x",
            title: "T <1>",
            x_label: "ms",
            y_label: "share",
            x_log: false,
            y_zero: true,
        };
        let svg = line_chart(
            &c,
            &[Line {
                name: "main".into(),
                color: color(0),
                points: vec![(1.0, 0.0), (2.0, 1.0)],
            }],
            &[],
        );
        assert!(svg.starts_with("<svg id=\"x\" class=\"chart\""));
        assert!(svg.contains("<title>T &lt;1&gt;</title>"));
        assert!(svg.contains("data-series=\"main\""));
        let b = bar_chart(
            "b",
            "B",
            "MiB",
            &["p".into()],
            &[Bars {
                name: "read".into(),
                color: color(1),
                values: vec![Some(2.5)],
            }],
        );
        assert!(b.contains("data-value=\"2.5\""));
    }
}
