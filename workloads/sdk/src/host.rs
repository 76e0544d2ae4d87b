//! Services the host gives every workload.
//!
//! These call host imports, so they only work inside a component run by
//! sparkhost. Native unit tests must not reach them: keep them at the edges
//! (in `Workload` methods), and keep the logic they feed pure.

use crate::wit::sparkhost::workload::host as imports;

pub use imports::Level;

/// Writes `message` to the host's log, prefixed with the workload name.
pub fn log(level: Level, message: &str) {
    imports::log(level, message);
}

/// [`log`] at [`Level::Trace`].
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// [`log`] at [`Level::Debug`].
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// [`log`] at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// [`log`] at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// [`log`] at [`Level::Error`].
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Number of tokens `text` has under the run's tokenizer, without special
/// tokens added. See [`tokenizer_id`] for which tokenizer that is.
pub fn count_tokens(text: &str) -> u32 {
    imports::count_tokens(text)
}

/// `text` cut or extended to exactly `target` tokens where the tokenizer
/// allows it: extended by repeating `filler`, cut at a token boundary.
///
/// Deterministic for a given tokenizer, which is why workloads size prompts
/// through the host instead of estimating tokens themselves.
pub fn fit_to_tokens(text: &str, target: u32, filler: &str) -> String {
    imports::fit_to_tokens(text, target, filler)
}

/// `heuristic:v1`, or `sha256:<hex>` of the tokenizer file. Prompts sized
/// with [`fit_to_tokens`] are reproducible only under the same id.
pub fn tokenizer_id() -> String {
    imports::tokenizer_id()
}
