//! `report.html`: the Markdown report converted to HTML (so the two never
//! disagree), with the charts placed after the sections they illustrate.
//!
//! Tables carry `data-table="<section>-<n>"`, rows `data-row="<first
//! cell>"` and cells `data-col="<header>"`, so a reader's script — or a test
//! — can pick any number and match it against `summary.json`.

use std::fmt::Write as _;

use crate::data::{Run, io_mib, kv};
use crate::fmt::fixed;
use crate::md::KVBM;
use crate::svg::{self, Band, Bars, Chart, Dot, Line, color, esc};

const CSS: &str = "body{font-family:system-ui,-apple-system,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222;line-height:1.45}\
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}\
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}\
td:first-child,th:first-child{text-align:left}th{background:#f5f5f5}code{background:#f3f3f3;padding:0 3px}\
svg.chart{display:block;margin:1em 0;max-width:100%;height:auto}svg text{font-size:12px;font-family:inherit}\
.no-chart{color:#777;font-style:italic}";

fn slug(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            o.push(c.to_ascii_lowercase());
        } else if !o.ends_with('-') {
            o.push('-');
        }
    }
    o.trim_matches('-').to_owned()
}

/// `**bold**` and `` `code` `` on escaped text.
fn inline(s: &str) -> String {
    let e = esc(s);
    let mut out = String::with_capacity(e.len());
    let mut bold = false;
    let mut code = false;
    let mut chars = e.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '`' {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
        } else if c == '*' && chars.peek() == Some(&'*') && !code {
            chars.next();
            out.push_str(if bold { "</strong>" } else { "<strong>" });
            bold = !bold;
        } else {
            out.push(c);
        }
    }
    if code {
        out.push_str("</code>");
    }
    if bold {
        out.push_str("</strong>");
    }
    out
}

fn split_row(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&'|') {
            cur.push('|');
            chars.next();
        } else if c == '|' {
            cells.push(cur.trim().to_owned());
            cur.clear();
        } else {
            cur.push(c);
        }
    }
    cells.push(cur.trim().to_owned());
    cells
}

/// The subset of Markdown `md.rs` writes: headings, lists (two levels),
/// tables, paragraphs, rules, bold and code.
pub fn markdown(md: &str, mut after_section: impl FnMut(&str) -> String) -> String {
    let mut out = String::new();
    let mut section: Option<String> = None;
    let mut tables = 0usize;
    let mut para: Vec<String> = Vec::new();
    let mut list_depth = 0usize;
    let lines: Vec<&str> = md.lines().collect();
    let mut i = 0;
    let flush_para = |para: &mut Vec<String>, out: &mut String| {
        if !para.is_empty() {
            let _ = writeln!(out, "<p>{}</p>", inline(&para.join(" ")));
            para.clear();
        }
    };
    let close_lists = |depth: &mut usize, out: &mut String| {
        while *depth > 0 {
            out.push_str("</li></ul>\n");
            *depth -= 1;
        }
    };
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_end();
        if let Some(h) = trimmed.strip_prefix("## ") {
            flush_para(&mut para, &mut out);
            close_lists(&mut list_depth, &mut out);
            if let Some(prev) = section.take() {
                out.push_str(&after_section(&prev));
                out.push_str("</section>\n");
            }
            let id = slug(h);
            tables = 0;
            let _ = writeln!(out, "<section id=\"{id}\"><h2>{}</h2>", inline(h));
            section = Some(id);
        } else if let Some(h) = trimmed.strip_prefix("# ") {
            flush_para(&mut para, &mut out);
            let _ = writeln!(out, "<h1>{}</h1>", inline(h));
        } else if trimmed == "---" {
            flush_para(&mut para, &mut out);
            close_lists(&mut list_depth, &mut out);
            if let Some(prev) = section.take() {
                out.push_str(&after_section(&prev));
                out.push_str("</section>\n");
            }
            out.push_str("<hr>\n");
        } else if trimmed.starts_with('|') {
            flush_para(&mut para, &mut out);
            close_lists(&mut list_depth, &mut out);
            tables += 1;
            let header = split_row(trimmed);
            i += 1;
            if lines
                .get(i)
                .is_some_and(|l| l.trim_start().starts_with("|-"))
            {
                i += 1;
            }
            let _ = writeln!(
                out,
                "<table data-table=\"{}-{tables}\"><tr>{}</tr>",
                section.as_deref().unwrap_or("top"),
                header
                    .iter()
                    .map(|h| format!("<th>{}</th>", inline(h)))
                    .collect::<String>()
            );
            while i < lines.len() && lines[i].trim_start().starts_with('|') {
                let cells = split_row(lines[i]);
                let _ = write!(
                    out,
                    "<tr data-row=\"{}\">",
                    esc(cells.first().map(String::as_str).unwrap_or(""))
                );
                for (j, c) in cells.iter().enumerate() {
                    let _ = write!(
                        out,
                        "<td data-col=\"{}\">{}</td>",
                        esc(header.get(j).map(String::as_str).unwrap_or("")),
                        inline(c)
                    );
                }
                out.push_str("</tr>\n");
                i += 1;
            }
            out.push_str("</table>\n");
            continue;
        } else if let Some(item) = trimmed
            .strip_prefix("- ")
            .map(|x| (1, x))
            .or_else(|| trimmed.strip_prefix("  - ").map(|x| (2, x)))
            .map(|(d, x)| (d, x.to_owned()))
        {
            flush_para(&mut para, &mut out);
            let (depth, text) = item;
            if depth > list_depth {
                while list_depth < depth {
                    out.push_str("<ul><li>");
                    list_depth += 1;
                }
            } else {
                while list_depth > depth {
                    out.push_str("</li></ul>\n");
                    list_depth -= 1;
                }
                out.push_str("</li><li>");
            }
            out.push_str(&inline(&text));
        } else if trimmed.is_empty() {
            flush_para(&mut para, &mut out);
            close_lists(&mut list_depth, &mut out);
        } else {
            close_lists(&mut list_depth, &mut out);
            para.push(trimmed.to_owned());
        }
        i += 1;
    }
    flush_para(&mut para, &mut out);
    close_lists(&mut list_depth, &mut out);
    if let Some(prev) = section.take() {
        out.push_str(&after_section(&prev));
        out.push_str("</section>\n");
    }
    out
}

fn missing(id: &str, what: &str) -> String {
    format!(
        "<p class=\"no-chart\" id=\"{id}-missing\">{}</p>\n",
        esc(what)
    )
}

fn cdf_chart(
    run: &Run,
    id: &str,
    title: &str,
    pick: impl Fn(&crate::data::PhaseData) -> &crate::data::LogHist,
) -> String {
    let mut lines = Vec::new();
    let mut lo = f64::INFINITY;
    let mut hi = 0.0f64;
    for (i, p) in run.phases.iter().enumerate() {
        let h = pick(p);
        if h.count == 0 {
            continue;
        }
        let pts: Vec<(f64, f64)> = (0..=200)
            .filter_map(|k| {
                let q = f64::from(k) / 200.0;
                h.quantile(q).map(|v| (v, q * 100.0))
            })
            .collect();
        for (v, _) in &pts {
            if *v > 0.0 {
                lo = lo.min(*v);
            }
            hi = hi.max(*v);
        }
        lines.push(Line {
            name: format!("{} (n={})", p.name, h.count),
            color: color(i),
            points: pts,
        });
    }
    if lines.is_empty() {
        return missing(
            id,
            &format!("{title}: no samples (no successful streamed requests)."),
        );
    }
    let log = svg::wants_log(lo, hi);
    let c = Chart {
        id,
        title,
        x_label: if log {
            "milliseconds (log scale)"
        } else {
            "milliseconds"
        },
        y_label: "% of samples at or below",
        x_log: log,
        y_zero: true,
    };
    svg::line_chart(&c, &lines, &[]) + "\n"
}

fn phase_bands(run: &Run) -> Vec<Band> {
    run.phases
        .iter()
        .filter_map(|p| {
            p.span_s.map(|(a, b)| Band {
                name: p.name.clone(),
                x0: a,
                x1: b,
            })
        })
        .collect()
}

fn latency_time(run: &Run) -> String {
    if run.points.is_empty() {
        return missing(
            "chart-latency-time",
            "Latency over time: no requests were recorded.",
        );
    }
    let stride = run.points.len().div_ceil(run.opts.max_points.max(1));
    let dots: Vec<Dot> = run
        .points
        .iter()
        .step_by(stride.max(1))
        .map(|p| Dot {
            x: p.t_s,
            y: p.latency_ms,
            color: if p.ok { color(p.phase) } else { "#d00000" },
            hollow: !p.ok,
        })
        .collect();
    let mut legend: Vec<(String, &'static str)> = run
        .phases
        .iter()
        .enumerate()
        .filter(|(_, p)| p.span_s.is_some())
        .map(|(i, p)| (p.name.clone(), color(i)))
        .collect();
    if run.points.iter().any(|p| !p.ok) {
        legend.push(("failed".into(), "#d00000"));
    }
    let title = if stride > 1 {
        format!("End-to-end latency over time (every {stride}th request)")
    } else {
        "End-to-end latency over time".to_owned()
    };
    let c = Chart {
        id: "chart-latency-time",
        title: &title,
        x_label: "seconds since the run started (send time)",
        y_label: "e2e latency (ms)",
        x_log: false,
        y_zero: true,
    };
    svg::scatter(&c, &dots, &phase_bands(run), &legend) + "\n"
}

fn kvbm_charts(run: &Run) -> String {
    if !run.kvbm_collected {
        return missing("chart-kvbm", "KVBM deltas per phase: not collected.");
    }
    let phases: Vec<&crate::data::PhaseData> =
        run.phases.iter().filter(|p| p.kvbm.is_some()).collect();
    let cats: Vec<String> = phases.iter().map(|p| p.name.clone()).collect();
    let blocks: Vec<Bars> = KVBM
        .iter()
        .filter(|(k, _)| *k != "matched_tokens")
        .enumerate()
        .map(|(i, (k, label))| Bars {
            name: (*label).to_owned(),
            color: color(i),
            values: phases
                .iter()
                .map(|p| p.kvbm.as_ref().and_then(|d| kv(d, k)))
                .collect(),
        })
        .collect();
    let matched = vec![Bars {
        name: "matched tokens".into(),
        color: color(5),
        values: phases
            .iter()
            .map(|p| p.kvbm.as_ref().and_then(|d| kv(d, "matched_tokens")))
            .collect(),
    }];
    svg::bar_chart(
        "chart-kvbm",
        "KVBM block transfers per phase",
        "blocks",
        &cats,
        &blocks,
    ) + "\n"
        + &svg::bar_chart(
            "chart-kvbm-matched",
            "KVBM matched tokens per phase",
            "tokens",
            &cats,
            &matched,
        )
        + "\n"
}

fn io_chart(run: &Run) -> String {
    if !run.io_collected {
        return missing("chart-disk-io", "Disk I/O per phase: not collected.");
    }
    let phases: Vec<&crate::data::PhaseData> =
        run.phases.iter().filter(|p| p.io.is_some()).collect();
    let cats: Vec<String> = phases.iter().map(|p| p.name.clone()).collect();
    let names = ["disk read", "disk write", "process read", "process write"];
    let series: Vec<Bars> = names
        .iter()
        .enumerate()
        .map(|(i, n)| Bars {
            name: (*n).to_owned(),
            color: color(i),
            values: phases
                .iter()
                .map(|p| p.io.as_ref().map(io_mib).and_then(|v| v[i]))
                .collect(),
        })
        .collect();
    svg::bar_chart(
        "chart-disk-io",
        "Disk and process I/O per phase",
        "MiB",
        &cats,
        &series,
    ) + "\n"
}

fn gpu_charts(run: &Run) -> String {
    let Some(g) = &run.gpu else {
        return missing("chart-gpu", "GPU timeline: not collected.");
    };
    let bands = if g.aligned {
        phase_bands(run)
    } else {
        Vec::new()
    };
    let mut out = String::new();
    for (group, series) in &g.groups {
        let lines: Vec<Line> = series
            .iter()
            .enumerate()
            .map(|(i, s)| Line {
                name: s.name.clone(),
                color: color(i),
                points: s.points.clone(),
            })
            .collect();
        let id = format!("chart-gpu-{}", slug(group));
        let title = format!("GPU {group}");
        let c = Chart {
            id: &id,
            title: &title,
            x_label: if g.aligned {
                "seconds since the run started"
            } else {
                "seconds since the first sample"
            },
            y_label: group,
            x_log: false,
            y_zero: true,
        };
        out.push_str(&svg::line_chart(&c, &lines, &bands));
        out.push('\n');
    }
    out
}

pub fn render(run: &Run) -> String {
    let md = crate::md::render(run);
    let body = markdown(&md, |section| match section {
        "phase-results" => {
            cdf_chart(run, "chart-ttft-cdf", "TTFT distribution per phase", |p| {
                &p.ttft
            }) + &cdf_chart(
                run,
                "chart-itl-cdf",
                "ITL distribution per phase (per token)",
                |p| &p.itl,
            ) + &latency_time(run)
        }
        "kvbm-metrics-signal" => kvbm_charts(run) + &io_chart(run),
        "gpu-telemetry" => gpu_charts(run),
        _ => String::new(),
    });
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"generator\" content=\"{} {}\"><title>Benchmark Report: {}</title><style>{CSS}</style></head><body>\n",
        crate::NAME,
        crate::VERSION,
        esc(&run.run_id)
    );
    s.push_str(&body);
    let _ = write!(
        s,
        "<p class=\"no-chart\">Chart data: {} requests from requests.jsonl; distributions are log-binned (0.6 % resolution); tables quote summary.json. Duration {} s.</p>\n</body></html>\n",
        run.rows,
        fixed(
            run.phases
                .iter()
                .filter_map(|p| p.span_s.map(|(_, b)| b))
                .fold(0.0, f64::max),
            3
        )
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_subset_converts() {
        let md = "# T\n\n## Run Status\n\n- a **b**\n  - c `d`\n- e\n\ntext\nmore\n\n| x | y |\n|---|---:|\n| r1 | 1\\|2 |\n\n## Next\n\n---\nend\n";
        let h = markdown(md, |s| format!("<!--after {s}-->"));
        assert!(h.contains("<h1>T</h1>"));
        assert!(h.contains("<section id=\"run-status\"><h2>Run Status</h2>"));
        assert!(h.contains("<ul><li>a <strong>b</strong><ul><li>c <code>d</code></li></ul>\n</li><li>e</li></ul>"), "{h}");
        assert!(h.contains("<p>text more</p>"));
        assert!(h.contains("<table data-table=\"run-status-1\">"));
        assert!(h.contains(
            "<tr data-row=\"r1\"><td data-col=\"x\">r1</td><td data-col=\"y\">1|2</td></tr>"
        ));
        assert!(h.contains("<!--after run-status--></section>"));
        assert!(h.contains("<!--after next--></section>\n<hr>"));
    }
}
