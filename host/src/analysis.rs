//! Reading finished runs back and reasoning across them: the library behind
//! `summarize`, `compare`, `matrix` and `search`, and the SLO/goodput
//! arithmetic `run --slo` uses.
//!
//! Layout:
//! - [`rundoc`]: discovering run directories and reading their numbers.
//! - [`stats`]: percentiles and seeded bootstrap intervals.
//! - [`slo`]: SLO parsing and goodput (pure functions over request rows).
//! - [`summarize`]: one row per run, as a table and `summary.csv`.
//! - [`compare`]: paired differences with intervals and an order-effect check.
//! - [`reuse`]: prompts resent across runs without a KV reset (compare, matrix).
//! - [`matrix`]: `matrix.toml`, its cells and `matrix_index.json`.
//! - [`search`]: bracketing + bisection over concurrency or rate.
//! - [`launch`]: `sparkhost run` as a child process.
//! - [`html`]: escaping and small SVG charts for self-contained pages.

pub mod compare;
pub mod html;
pub mod launch;
pub mod matrix;
pub mod reuse;
pub mod rundoc;
pub mod search;
pub mod slo;
pub mod stats;
pub mod summarize;
