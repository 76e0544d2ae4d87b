//! `sparkhost calibrate-disk`: measure a disk, write its device profile.

use anyhow::Context;

use super::Exit;
use crate::cli::CalibrateDiskArgs;
use crate::devprofile::{CalibrateSpec, calibrate};

pub async fn calibrate_disk(args: CalibrateDiskArgs) -> anyhow::Result<Exit> {
    let spec = CalibrateSpec {
        dir: args.dir.clone(),
        file_bytes: args.size,
        block_bytes: args.block_size,
        seq_block_bytes: args.seq_block_size,
        queue_depth: args.queue_depth,
        max_test_time: args.max_test_time,
        seed: args.seed,
    };
    spec.validate()?;
    eprintln!(
        "calibrate-disk: {} MiB test file in {}, O_DIRECT, queue depth {} …",
        spec.file_bytes >> 20,
        spec.dir.display(),
        spec.queue_depth
    );
    let doc = tokio::task::spawn_blocking(move || calibrate(&spec))
        .await
        .context("the calibration thread failed")??;
    let mut bytes = serde_json::to_vec_pretty(&doc)?;
    bytes.push(b'\n');
    crate::results::rundir::write_atomic(&args.output, &bytes)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "{:<11} {:>10} {:>6} {:>10} {:>10} {:>9}",
        "test", "io size", "qd", "GB/s", "IOPS", "seconds"
    );
    for t in &doc.tests {
        println!(
            "{:<11} {:>9}K {:>6} {:>10.3} {:>10.0} {:>9.2}{}",
            t.name,
            t.block_size_bytes / 1024,
            t.queue_depth,
            t.gbps,
            t.iops,
            t.elapsed_s,
            if t.stopped_early {
                " (stopped at --max-test-time)"
            } else {
                ""
            }
        );
    }
    println!(
        "device {} ({}); wrote {} (sha256 {})",
        doc.block_device.as_deref().unwrap_or("unknown"),
        doc.block_device_error.as_deref().unwrap_or("O_DIRECT"),
        args.output.display(),
        crate::digest::sha256_hex(&bytes)
    );
    Ok(Exit::Ok)
}
