//! The help headings of `sparkhost run --help`: the groups of the README's
//! flag table.

pub const ENDPOINT: &str = "Endpoint";
pub const LOAD: &str = "Load";
pub const WORKLOAD: &str = "Workload";
pub const PREFLIGHT: &str = "Preflight";
pub const HYGIENE: &str = "Cache hygiene";
pub const DISK_CEILING: &str = "Disk ceiling";
pub const TRANSPORT: &str = "Transport";
pub const LABELS: &str = "Labels";
pub const SIMULATOR: &str = "Simulator (--endpoint sim)";
pub const SANDBOX: &str = "Sandbox";
pub const TELEMETRY: &str = "Telemetry";
pub const VERDICT: &str = "Verdict";
pub const REPORTS: &str = "Reports";
pub const OUTPUT: &str = "Output";

/// Every heading, in the order `run --help` shows them (clap orders
/// headings by their first flag) and the README's table lists them.
pub const ALL: [&str; 14] = [
    WORKLOAD,
    ENDPOINT,
    LOAD,
    TRANSPORT,
    PREFLIGHT,
    OUTPUT,
    LABELS,
    SIMULATOR,
    HYGIENE,
    DISK_CEILING,
    SANDBOX,
    TELEMETRY,
    VERDICT,
    REPORTS,
];
