//! Flags of the commands that share components: `push`, `pull`.

use std::path::PathBuf;

use clap::Args;

fn parse_annotation(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    crate::share::artifact::check_annotation(k, v)?;
    Ok((k.to_owned(), v.to_owned()))
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The component (.wasm): a workload or a report generator.
    pub file: PathBuf,
    /// Where to: oci://HOST[:PORT]/REPO:TAG.
    pub reference: String,
    /// An extra manifest annotation KEY=VALUE (repeatable; wins over the component's own).
    #[arg(long = "annotation", value_parser = parse_annotation)]
    pub annotations: Vec<(String, String)>,
    /// Where the component's source lives (org.opencontainers.image.source).
    #[arg(long)]
    pub source: Option<String>,
    /// The source revision it was built from (org.opencontainers.image.revision).
    #[arg(long, requires = "source")]
    pub revision: Option<String>,
    /// Speak plain HTTP (loopback registries only: 127.0.0.1, ::1, localhost).
    #[arg(long)]
    pub plain_http: bool,
    /// Cache for compiled components (describing the component compiles it).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// oci://HOST[:PORT]/REPO[:TAG|@sha256:HEX].
    pub reference: String,
    /// Also copy the verified component to this file.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Speak plain HTTP (loopback registries only: 127.0.0.1, ::1, localhost).
    #[arg(long)]
    pub plain_http: bool,
    /// Cache root for pulled components (as for `run`; they go under `oci/`).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}
