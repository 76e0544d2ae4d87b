//! Planner tests over the fixture traces in `tests/fixtures/traces/`.

use super::*;
use sparkhost_workload::{Label, Prompt, WordTokenizer};

pub fn fixture_path(name: &str) -> String {
    format!(
        "{}/../../tests/fixtures/traces/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).unwrap()
}

/// The message of an `InvalidConfig` error, which the format readers'
/// refusals must be.
pub fn invalid_config<T: std::fmt::Debug>(r: sparkhost_workload::Result<T>) -> String {
    match r {
        Err(sparkhost_workload::WorkloadError::InvalidConfig(m)) => m,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

fn params(pairs: &[(&str, &str)]) -> Params {
    let mut all = pairs.to_vec();
    if !pairs.iter().any(|(k, _)| *k == "salt") {
        all.push(("salt", "off"));
    }
    Params::from_pairs(&declared_params(), &all).unwrap()
}

fn config(name: &str, pairs: &[(&str, &str)]) -> Result<Config> {
    Config::new(&params(pairs), std::fs::read(fixture_path(name)).unwrap())
}

fn message(r: Result<Config>) -> String {
    match r {
        Err(WorkloadError::InvalidConfig(m)) => m,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

fn text_of(r: &RequestSpec) -> &str {
    match &r.prompt {
        Prompt::Text(t) => t,
        Prompt::Chat(_) => panic!("completions by default"),
    }
}

fn get<'a>(labels: &'a [Label], key: &str) -> &'a str {
    labels
        .iter()
        .find(|l| l.key == key)
        .map(|l| l.value.as_str())
        .unwrap_or_else(|| panic!("no label {key}"))
}

fn plan(c: Config, seed: u64) -> Vec<RequestSpec> {
    let n = c.requests.len();
    let mut t = TraceReplay::new(c, seed);
    let b = t.next_requests(n + 1, &WordTokenizer);
    assert!(b.done);
    b.requests
}

/// The block-by-block check: over every pair of whole blocks of every pair
/// of requests, the tokens are equal exactly when the hash ids are; a
/// partial last block is a prefix of its id's block; the prompt has its
/// recorded length.
fn assert_hash_fidelity(c: &Config, requests: &[RequestSpec]) {
    let b = c.block_size as usize;
    let words: Vec<Vec<&str>> = requests
        .iter()
        .map(|r| text_of(r).split_whitespace().collect())
        .collect();
    let mut whole: Vec<(u64, &[&str])> = Vec::new();
    for ((p, r), w) in c.requests.iter().zip(requests).zip(&words) {
        assert_eq!(
            w.len(),
            p.record.input_length as usize,
            "{}",
            p.record.source
        );
        let ids: Vec<String> = p.block_ids.iter().map(u64::to_string).collect();
        assert_eq!(get(&r.labels, "hash_ids"), ids.join(","));
        assert_eq!(get(&r.labels, "hash_block_tokens"), b.to_string());
        for (k, &id) in p.block_ids.iter().enumerate() {
            if (k + 1) * b <= w.len() {
                whole.push((id, &w[k * b..(k + 1) * b]));
            }
        }
    }
    assert!(
        whole.len() > c.requests.len(),
        "the fixture has shared blocks"
    );
    let mut shared = 0;
    for (i, (id_a, a)) in whole.iter().enumerate() {
        for (id_b, bb) in &whole[i + 1..] {
            assert_eq!(id_a == id_b, a == bb, "blocks {id_a} and {id_b}");
            shared += usize::from(id_a == id_b);
        }
    }
    assert!(shared > 0, "some blocks are shared");
    // Partial last blocks and unhashed tails.
    for (p, w) in c.requests.iter().zip(&words) {
        let full = w.len() / b;
        if let Some(&id) = p.block_ids.get(full) {
            let rest = &w[full * b..];
            if let Some((_, block)) = whole.iter().find(|(h, _)| *h == id) {
                assert_eq!(&block[..rest.len()], rest, "{}", p.record.source);
            }
        } else {
            let tail = &w[p.block_ids.len() * b..];
            let n = tail.len().min(b);
            assert!(
                n == 0 || whole.iter().all(|(_, blk)| blk[..n] != tail[..n]),
                "an unhashed tail shares no block: {}",
                p.record.source
            );
        }
    }
}

#[test]
fn hash_fidelity_mooncake() {
    let c = config("mooncake.jsonl", &[("trace-block-size", "64")]).unwrap();
    let r = plan(c.clone(), 42);
    assert_hash_fidelity(&c, &r);
}

#[test]
fn hash_fidelity_dynamo_plain_and_gzip() {
    let c = config("dynamo.jsonl", &[]).unwrap();
    assert_eq!((c.block_size, c.trace_block_size, c.skipped), (16, 16, 2));
    let r = plan(c.clone(), 42);
    assert_hash_fidelity(&c, &r);
    let gz = config("dynamo.jsonl.gz", &[]).unwrap();
    assert_eq!(gz, c);
    assert_eq!(r[0].session_id.as_deref(), Some("session-a"));
}

#[test]
fn hash_fidelity_weka() {
    let c = config("weka.json", &[]).unwrap();
    assert_eq!(c.format, Format::Weka);
    let r = plan(c.clone(), 42);
    assert_hash_fidelity(&c, &r);
    let sub = r
        .iter()
        .find(|q| q.session_id.as_deref() == Some("agent_001"))
        .unwrap();
    assert!(get(&sub.labels, "trace_record").contains("requests[2].requests["));
    // A recorded output of 0 asks for 1 token and says what was recorded.
    let zero = r
        .iter()
        .find(|q| get(&q.labels, "output_length") == "0")
        .unwrap();
    assert_eq!(zero.generation.max_tokens, 1);
}

#[test]
fn hash_fidelity_after_re_blocking() {
    for bs in ["8", "32"] {
        let c = config("dynamo.jsonl", &[("block-size", bs), ("re-block", "true")]).unwrap();
        assert!(c.reblocked);
        let r = plan(c.clone(), 3);
        assert_hash_fidelity(&c, &r);
        assert_eq!(get(&r[0].labels, "re_blocked_from"), "16");
    }
}

#[test]
fn another_block_size_is_refused_naming_both() {
    let m = message(config("dynamo.jsonl", &[("block-size", "32")]));
    assert!(
        m.contains("`block-size`: 32")
            && m.contains("16-token blocks")
            && m.contains("re-block=true"),
        "{m}"
    );
    let m = message(config("dynamo.jsonl", &[("trace-block-size", "64")]));
    assert!(
        m.contains("64") && m.contains("records block size 16"),
        "{m}"
    );
    // Mooncake records none: the default 512 does not fit this trace's counts.
    let m = message(config("mooncake.jsonl", &[]));
    assert!(
        m.contains(
            "trace line 1: input_length 200 with 4 hash ids fits a block size from 50 to 66"
        ) && m.contains("not 512"),
        "{m}"
    );
    // Mooncake: a stated block-size is the trace's; a wrong one is named.
    assert_eq!(
        config("mooncake.jsonl", &[("block-size", "64")])
            .unwrap()
            .trace_block_size,
        64
    );
    let m = message(config("mooncake.jsonl", &[("block-size", "128")]));
    assert!(
        m.contains("not 128 (`block-size`, as the trace records none)"),
        "{m}"
    );
    let m = message(config("mooncake.jsonl", &[("format", "dynamo")]));
    assert!(m.contains("`schema`"), "{m}");
}

#[test]
fn gaps_are_kept_capped_and_scaled() {
    let offsets = |pairs: &[(&str, &str)]| -> Vec<f64> {
        config("dynamo.jsonl", pairs)
            .unwrap()
            .requests
            .iter()
            .map(|p| p.offset_ms)
            .collect()
    };
    // Sorted by arrival (the file is in end order); the 90 s idle gap is
    // cut to the 60 s default cap.
    assert_eq!(
        offsets(&[]),
        [0.0, 500.0, 800.0, 60_800.0, 61_000.0, 61_200.0]
    );
    assert_eq!(
        offsets(&[("idle-gap-cap-ms", "off"), ("time-scale", "0.5")]),
        [0.0, 250.0, 400.0, 45_400.0, 45_500.0, 45_600.0]
    );
    assert_eq!(offsets(&[("idle-gap-cap-ms", "100")])[3], 300.0);
    assert!(
        message(config("dynamo.jsonl", &[("idle-gap-cap-ms", "-1")])).contains("idle-gap-cap-ms")
    );
    assert!(message(config("dynamo.jsonl", &[("time-scale", "-1")])).contains("time-scale"));
    let c = config("dynamo.jsonl", &[("max-requests", "2")]).unwrap();
    assert_eq!(c.requests.len(), 2);
}

#[test]
fn output_lengths_are_pinned() {
    let c = config("mooncake.jsonl", &[("trace-block-size", "64")]).unwrap();
    let r = plan(c.clone(), 1);
    for (q, p) in r.iter().zip(&c.requests) {
        assert_eq!(q.generation.max_tokens, p.record.output_length);
        assert!(q.generation.ignore_eos);
        assert_eq!(q.arrival, Arrival::AtOffsetMs(p.offset_ms));
    }
    assert_eq!(get(&r[1].labels, "trace_line"), "2");
    assert_eq!(get(&r[0].labels, "trace_format"), "mooncake");
    assert_eq!(r[0].prefix_hash, r[1].prefix_hash);
    assert_ne!(r[0].prefix_hash, r[2].prefix_hash);
}

#[test]
fn salt_changes_every_block_and_off_is_byte_identical() {
    let texts = |salt: &str| -> Vec<String> {
        let p = Params::from_pairs(&declared_params(), &[("salt", salt)]).unwrap();
        let c = Config::new(&p, std::fs::read(fixture_path("dynamo.jsonl")).unwrap()).unwrap();
        plan(c, 9).iter().map(|r| text_of(r).to_string()).collect()
    };
    assert_eq!(texts("off"), texts("off"));
    assert_eq!(texts("a1"), texts("a1"));
    let (a, b) = (texts("a1"), texts("b2"));
    assert!(
        a.iter().zip(&b).all(|(x, y)| x != y),
        "every prompt differs"
    );
    let p = Params::from_pairs(&declared_params(), &[("salt", "a1")]).unwrap();
    let c = Config::new(&p, std::fs::read(fixture_path("dynamo.jsonl")).unwrap()).unwrap();
    assert_eq!(get(&plan(c, 9)[0].labels, "salt"), "a1");
    let p = Params::from_pairs(&declared_params(), &[]).unwrap();
    let m = message(Config::new(
        &p,
        std::fs::read(fixture_path("dynamo.jsonl")).unwrap(),
    ));
    assert!(m.contains("per-run"), "{m}");
}

#[test]
fn the_example_trace_is_valid() {
    let p = params(&[]);
    let c = Config::new(&p, include_bytes!("../example_trace.jsonl").to_vec()).unwrap();
    assert!((40..=60).contains(&c.requests.len()));
    let r = plan(c.clone(), 5);
    assert_hash_fidelity(&c, &r);
}

#[test]
fn a_non_utf8_trace_is_refused() {
    let m = message(Config::new(&params(&[]), vec![b'{', 0xff]));
    assert!(m.contains("not UTF-8"), "{m}");
}
