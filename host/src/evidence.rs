//! Whether a run can be trusted, and why not.
//!
//! Reasons keep the seed harness's names where it had them; a run gets the
//! first reason found, and every detail is kept.

use serde::{Deserialize, Serialize};
use sparkhost_collectors::verdict::ReasonCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvalidReason {
    /// Prompts that cannot fit the engine were planned; nothing was sent.
    PromptPreflightFailed,
    /// The endpoint never listed the model.
    ModelUnavailable,
    /// The model disappeared mid-run (a 404/5xx, then `/v1/models` no longer listed it).
    ModelDropped,
    /// The server refused a prompt as longer than its engine allows.
    EnginePromptLimitExceeded,
    /// The workload failed (trap, deadline, memory cap, invalid output).
    WorkloadFailed,
    /// The user interrupted the run.
    Interrupted,
    /// Results could not be written completely.
    ResultsWriteFailed,
    /// Nothing was sent.
    NoRequests,
    /// Requests were sent and every one failed: there is no latency to report.
    NoSuccessfulRequests,
    /// More requests failed than `--max-error-rate` allows.
    ErrorRateAboveThreshold,
    /// A KV tier is on but no KVBM metrics could be read (seed reason).
    KvbmMetricsUnavailable,
    /// `--kv-reset-*` was asked for and the reset failed: the cache may
    /// hold an earlier run's KV, so nothing was sent.
    KvResetFailed,
    /// The server did what another tier mode does (KVBM activity in B0,
    /// disk offload in B1): the run is mislabelled.
    TierModeMismatch,
}

impl InvalidReason {
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::PromptPreflightFailed => "prompt_preflight_failed",
            InvalidReason::ModelUnavailable => "model_unavailable",
            InvalidReason::ModelDropped => "model_dropped",
            InvalidReason::EnginePromptLimitExceeded => "engine_prompt_limit_exceeded",
            InvalidReason::WorkloadFailed => "workload_failed",
            InvalidReason::Interrupted => "interrupted",
            InvalidReason::ResultsWriteFailed => "results_write_failed",
            InvalidReason::NoRequests => "no_requests",
            InvalidReason::NoSuccessfulRequests => "no_successful_requests",
            InvalidReason::ErrorRateAboveThreshold => "error_rate_above_threshold",
            InvalidReason::KvbmMetricsUnavailable => "kvbm_metrics_unavailable",
            InvalidReason::KvResetFailed => "kv_reset_failed",
            InvalidReason::TierModeMismatch => "tier_mode_mismatch",
        }
    }
}

impl InvalidReason {
    /// The host's reason (and its detail) for a verdict's hard failure;
    /// `None` for codes that are the host's own reasons reflected back.
    pub fn from_verdict(code: ReasonCode, details: &[String]) -> Option<(Self, String)> {
        match code {
            ReasonCode::ErrorRateAboveThreshold => Some((
                InvalidReason::ErrorRateAboveThreshold,
                details.first().cloned().unwrap_or_default(),
            )),
            ReasonCode::KvbmMetricsMissing => Some((
                InvalidReason::KvbmMetricsUnavailable,
                "a KV tier is configured but no KVBM metrics could be read (use --kv-mode off for runs without KVBM, or --allow-missing-kvbm-metrics)".into(),
            )),
            ReasonCode::TierModeMismatch => Some((
                InvalidReason::TierModeMismatch,
                details
                    .iter()
                    .find(|d| d.starts_with("tier_mode_mismatch"))
                    .cloned()
                    .unwrap_or_default(),
            )),
            _ => None,
        }
    }
}

/// Accumulates reasons as the run goes.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Validity {
    pub invalid_reason: Option<InvalidReason>,
    pub invalid_details: Vec<String>,
}

impl Validity {
    pub fn invalidate(&mut self, reason: InvalidReason, detail: impl Into<String>) {
        self.invalid_reason.get_or_insert(reason);
        self.invalid_details.push(detail.into());
    }

    pub fn is_valid(&self) -> bool {
        self.invalid_reason.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A verdict's hard failure becomes the host reason of the seed's name,
    /// and every code with a seed name has one.
    #[test]
    fn verdict_codes_map_to_reasons_of_their_seed_name() {
        for code in ReasonCode::ALL {
            let host = InvalidReason::from_verdict(code, &["d".into()]).map(|(r, _)| r.as_str());
            assert_eq!(host, code.seed_name(), "{code:?}");
        }
    }

    #[test]
    fn first_reason_wins_and_details_accumulate() {
        let mut v = Validity::default();
        assert!(v.is_valid());
        v.invalidate(InvalidReason::ModelDropped, "a");
        v.invalidate(InvalidReason::Interrupted, "b");
        assert_eq!(v.invalid_reason, Some(InvalidReason::ModelDropped));
        assert_eq!(v.invalid_details, vec!["a", "b"]);
        assert_eq!(
            serde_json::to_value(InvalidReason::EnginePromptLimitExceeded).unwrap(),
            InvalidReason::EnginePromptLimitExceeded.as_str()
        );
    }
}
