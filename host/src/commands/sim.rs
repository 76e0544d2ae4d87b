//! `sparkhost sim`: a long-running SIMULATED endpoint with KV tiers and a
//! KVBM metrics port, until Ctrl-C or SIGTERM.

use anyhow::Context;
use sparkhost_kvbm::{SimConfig, TierMode};

use super::Exit;
use crate::cli::SimArgs;
use crate::simulate::{self, SimPlan, SimRun};

pub async fn sim(args: SimArgs) -> anyhow::Result<Exit> {
    // A measured device profile's disk bandwidths first; an explicit --set wins.
    let mut sets = match &args.device_profile {
        Some(p) => crate::devprofile::DeviceProfile::load(p)
            .context("--device-profile")?
            .sim_sets()
            .into_iter()
            .filter(|(k, _)| !args.sets.iter().any(|(s, _)| s == k))
            .collect(),
        None => Vec::new(),
    };
    sets.extend(args.sets.iter().cloned());
    let profile = simulate::profile(&args.profile, &sets, "--profile", "--set")?;
    let tier = simulate::tier_mode(&args.tier_mode, "--tier-mode")?;
    let listen = simulate::listen_addr(&args.listen, "--listen")?;
    let metrics_listen = match args.metrics_listen.trim() {
        "none" | "" => None,
        m => Some(simulate::listen_addr(m, "--metrics-listen")?),
    };
    if let Some(t) = &args.tokenizer
        && !t.is_file()
    {
        anyhow::bail!("--tokenizer {} is not a file", t.display());
    }
    if tier == TierMode::B2 && args.cache_dir.exists() && !args.cache_dir.is_dir() {
        anyhow::bail!(
            "--cache-dir {} is not a directory",
            args.cache_dir.display()
        );
    }
    for a in std::iter::once(listen).chain(metrics_listen) {
        if !a.ip().is_loopback() {
            eprintln!(
                "warning: the simulator listens on {a}, beyond this machine; it has no authentication"
            );
        }
    }
    let mut config = SimConfig::new(profile, tier);
    config.listen = listen;
    config.metrics_listen = metrics_listen;
    config.naming = simulate::naming(args.kvbm_naming);
    config.lies = simulate::lies(&args.lies);
    config.disk_timing = simulate::disk_timing(args.disk_timing);
    config.gds = args.gds;
    config.allow_buffered_disk = args.allow_buffered_disk;
    config.tokenizer = args.tokenizer.clone();
    let plan = SimPlan {
        config,
        cache_dir: Some(args.cache_dir.clone()),
    };
    // SIGTERM is registered before the listeners exist, so a supervisor that
    // stops us right after the banner still gets a clean exit.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let run = SimRun::start(&plan, &args.cache_dir).await?;
    let info = run.info();
    let mut banner = format!(
        "sparkhost sim: SIMULATED engine — no model runs here; every latency comes from the {} profile's formulas (kvbm/README.md)\n\
         \x20 tier mode  {:?} (GPU {} blocks, host {} blocks, disk {} blocks of {} B, {} tokens each)\n\
         \x20 endpoint   {}  (/v1/models, /v1/completions, /v1/chat/completions, /health, /metrics, POST /reset, /sim/info)\n",
        info.profile.name,
        info.tier_mode,
        info.gpu_blocks,
        info.host_blocks,
        info.disk_blocks,
        info.block_bytes,
        info.profile.block_size,
        run.base_url(),
    );
    match run.kvbm_metrics_url() {
        Some(u) => banner.push_str(&format!(
            "  kvbm       {u}  (KVBM {:?} names)\n",
            info.naming
        )),
        None => banner.push_str("  kvbm       not served (--metrics-listen none)\n"),
    }
    if let Some(f) = &info.disk_cache_file {
        banner.push_str(&format!(
            "  disk tier  {} ({} I/O, byte scale {})\n",
            f.display(),
            match info.disk_io {
                Some(sparkhost_kvbm::IoMode::Direct) => "O_DIRECT",
                Some(sparkhost_kvbm::IoMode::Buffered) => "buffered",
                None => "no",
            },
            info.disk_byte_scale
        ));
    }
    let l = info.lies;
    if l.any() {
        banner.push_str(&format!("  LYING ON PURPOSE: {l:?}\n"));
    }
    banner.push_str("Ctrl-C or SIGTERM stops it and removes the cache file.");
    println!("{banner}");
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    run.shutdown().await;
    eprintln!("sparkhost sim: stopped");
    Ok(Exit::Ok)
}
