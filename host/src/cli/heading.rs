//! The help headings of `sparkhost run --help`: the groups of the README's
//! flag table, in its order.

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

/// Every heading, in the README's order.
pub const ALL: [&str; 14] = [
    ENDPOINT,
    LOAD,
    WORKLOAD,
    PREFLIGHT,
    HYGIENE,
    DISK_CEILING,
    TRANSPORT,
    LABELS,
    SIMULATOR,
    SANDBOX,
    TELEMETRY,
    VERDICT,
    REPORTS,
    OUTPUT,
];
