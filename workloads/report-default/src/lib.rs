//! The default sparkhost report generator (`sparkhost:report@0.1.0`).
//!
//! Reads one run directory (mounted read-only at `/run`) and returns
//! `report.md` (the seed harness's sections plus timing-error budget and
//! verdict) and `report.html` (the same, with inline SVG charts: TTFT and ITL
//! distributions per phase, latency over time with phase bands, KVBM deltas
//! and disk I/O per phase, GPU timeline). Sections whose data the run lacks
//! say so instead of failing. Output depends only on the run directory.
//!
//! # Layout
//!
//! - [`data`]: reading the run directory into [`data::Run`] (streaming the
//!   large JSONL files, bounded memory).
//! - [`fmt`]: number formatting shared by both outputs.
//! - [`md`]: writes `report.md`.
//! - [`html`]: writes `report.html`.
//! - [`svg`]: the charts.

pub mod data;
pub mod fmt;
pub mod html;
pub mod md;
pub mod svg;

mod bindings {
    // The generated ABI glue (exported symbols, raw pointers) is unsafe by
    // nature; everything written by hand in this crate stays safe.
    #![allow(unsafe_code)]
    wit_bindgen::generate!({
        world: "report-generator",
        path: "../../wit/report@0.1.0",
    });
}

use bindings::exports::sparkhost::report::generator::Guest;
use bindings::sparkhost::report::types::{
    Content, GeneratorInfo, OutputFile, ParamInfo, ReportError, ReportRequest,
};

pub const NAME: &str = "report-default";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Options a user may pass with `sparkhost report --param`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Most points drawn in the latency-over-time chart.
    pub max_points: usize,
    /// Which outputs to write.
    pub formats: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_points: 4000,
            formats: vec!["md".into(), "html".into()],
        }
    }
}

impl Options {
    pub fn parse(params: &[(String, String)]) -> Result<Options, String> {
        let mut o = Options::default();
        for (k, v) in params {
            match k.as_str() {
                "max-points" => {
                    o.max_points = v
                        .parse()
                        .ok()
                        .filter(|n| *n >= 10)
                        .ok_or_else(|| format!("max-points={v:?} is not a number >= 10"))?
                }
                "formats" => {
                    let f: Vec<String> = v.split(',').map(|s| s.trim().to_owned()).collect();
                    if f.is_empty() || f.iter().any(|x| x != "md" && x != "html") {
                        return Err(format!("formats={v:?}: use md, html or md,html"));
                    }
                    o.formats = f;
                }
                other => return Err(format!("unknown param {other:?}")),
            }
        }
        Ok(o)
    }
}

/// Builds every output for the run at `dir`; native tests call this directly.
pub fn render(
    dir: &std::path::Path,
    run_id: &str,
    files: &[String],
    opts: &Options,
) -> Result<Vec<(String, String)>, String> {
    let run = data::Run::load(dir, run_id, files, opts)?;
    let mut out = Vec::new();
    if opts.formats.iter().any(|f| f == "md") {
        out.push(("report.md".to_owned(), md::render(&run)));
    }
    if opts.formats.iter().any(|f| f == "html") {
        out.push(("report.html".to_owned(), html::render(&run)));
    }
    Ok(out)
}

struct Generator;

impl Guest for Generator {
    fn describe() -> GeneratorInfo {
        GeneratorInfo {
            name: NAME.into(),
            version: VERSION.into(),
            description: "report.md (status, fingerprint, KV configuration, results, KVBM signal, request identity, timing-error budget, verdict, anomalies) and a self-contained report.html with SVG charts".into(),
            params: vec![
                ParamInfo {
                    name: "max-points".into(),
                    description: "most requests drawn in the latency-over-time chart (evenly thinned)".into(),
                    default_value: "4000".into(),
                },
                ParamInfo {
                    name: "formats".into(),
                    description: "outputs to write: md, html or md,html".into(),
                    default_value: "md,html".into(),
                },
            ],
        }
    }

    fn generate(request: ReportRequest) -> Result<Vec<OutputFile>, ReportError> {
        let params: Vec<(String, String)> = request
            .params
            .into_iter()
            .map(|p| (p.name, p.value))
            .collect();
        let opts = Options::parse(&params).map_err(ReportError::InvalidParam)?;
        let dir = std::path::Path::new(&request.run_dir);
        let files = render(dir, &request.run_id, &request.files, &opts)
            .map_err(ReportError::MissingInput)?;
        Ok(files
            .into_iter()
            .map(|(name, text)| OutputFile {
                name,
                content: Content::Text(text),
            })
            .collect())
    }
}

// Same reason as in `bindings`: the export glue is generated unsafe code.
#[allow(unsafe_code)]
mod export {
    use super::Generator;
    crate::bindings::export!(Generator with_types_in crate::bindings);
}
