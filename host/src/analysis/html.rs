//! Just enough HTML and SVG for self-contained pages (`compare.html`): no
//! scripts, no external files, so a page opens the same anywhere, offline.

use std::fmt::Write as _;

pub fn escape(s: &str) -> String {
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

pub fn page_head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}}\
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
td:first-child,th:first-child{{text-align:left}}.verdict{{font-size:1.15em;font-weight:600}}\
.codes{{color:#a40}}svg text{{font-size:12px}}</style></head><body>\n",
        escape(title)
    )
}

pub struct ForestRow {
    pub label: String,
    pub value: f64,
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub good: bool,
    pub bad: bool,
}

/// One row per metric: a dot at the estimate, a bar for its interval, and
/// a vertical line at 0.
pub fn forest_plot(id: &str, rows: &[ForestRow], axis: &str) -> String {
    let (w, left, right, row_h, top) = (760.0, 150.0, 30.0, 26.0, 20.0);
    let h = top + row_h * rows.len() as f64 + 40.0;
    let mut lo: f64 = 0.0;
    let mut hi: f64 = 0.0;
    for r in rows {
        for v in [Some(r.value), r.low, r.high].into_iter().flatten() {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
    }
    if hi - lo < 1e-9 {
        lo -= 1.0;
        hi += 1.0;
    }
    let pad = (hi - lo) * 0.08;
    let (lo, hi) = (lo - pad, hi + pad);
    let x = |v: f64| left + (v - lo) / (hi - lo) * (w - left - right);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg id=\"{id}\" class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">"
    );
    let zero = x(0.0);
    let bottom = top + row_h * rows.len() as f64;
    let _ = write!(
        s,
        "<line x1=\"{zero:.1}\" y1=\"{top}\" x2=\"{zero:.1}\" y2=\"{bottom}\" stroke=\"#888\" stroke-dasharray=\"4 3\"/>"
    );
    for (i, r) in rows.iter().enumerate() {
        let y = top + row_h * (i as f64 + 0.5);
        let color = if r.good {
            "#1a7f37"
        } else if r.bad {
            "#c0392b"
        } else {
            "#555"
        };
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 8.0,
            y + 4.0,
            escape(&r.label)
        );
        if let (Some(l), Some(h)) = (r.low, r.high) {
            let _ = write!(
                s,
                "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" stroke-width=\"2\"/>",
                x(l),
                x(h)
            );
        }
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{color}\"><title>{}: {:.2}</title></circle>",
            x(r.value),
            escape(&r.label),
            r.value
        );
    }
    for t in [lo, (lo + hi) / 2.0, hi, 0.0] {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.1}</text>",
            x(t),
            bottom + 16.0,
            t
        );
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text></svg>",
        (left + w - right) / 2.0,
        bottom + 34.0,
        escape(axis)
    );
    s
}
