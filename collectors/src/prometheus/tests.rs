use super::agg::*;
use super::delta::*;
use super::*;

#[test]
fn escapes_in_labels_and_help() {
    let text = r#"# HELP x A \\ backslash\nand a newline
# TYPE x gauge
x{path="C:\\dir",quote="say \"hi\"",nl="a\nb",plain="ok",} 1
"#;
    let e = parse(text).unwrap();
    let f = e.family("x").unwrap();
    assert_eq!(f.help.as_deref(), Some("A \\ backslash\nand a newline"));
    assert_eq!(f.kind, MetricType::Gauge);
    let l = &f.samples[0].labels;
    assert_eq!(l.get("path"), Some("C:\\dir"));
    assert_eq!(l.get("quote"), Some("say \"hi\""));
    assert_eq!(l.get("nl"), Some("a\nb"));
    assert_eq!(l.get("plain"), Some("ok"));
    // Round trip through the writer keeps every label.
    let again = parse(&e.to_text()).unwrap();
    assert_eq!(again.family("x").unwrap().samples, f.samples);
}

#[test]
fn special_values_and_timestamps() {
    let text = "# TYPE v gauge\nv{k=\"nan\"} NaN\nv{k=\"p\"} +Inf\nv{k=\"m\"} -Inf 1700000000000\nv{k=\"e\"} 1.5e-3 -5\nv{k=\"om\"} 2 1700000000.5\n";
    let e = parse(text).unwrap();
    let s: Vec<&Sample> = e.series("v").collect();
    assert!(s[0].value.is_nan());
    assert_eq!(s[1].value, f64::INFINITY);
    assert_eq!(s[2].value, f64::NEG_INFINITY);
    assert_eq!(s[2].timestamp_ms, Some(1_700_000_000_000));
    assert_eq!(s[3].value, 0.0015);
    assert_eq!(s[3].timestamp_ms, Some(-5));
    assert_eq!(s[4].timestamp_ms, Some(1_700_000_000_500));
    let j = serde_json::to_value(s[1]).unwrap();
    assert_eq!(j["value"], "+Inf");
    assert!(serde_json::to_string(&e).is_ok());
}

#[test]
fn summary_with_quantiles() {
    let text = "# HELP rpc_seconds RPC latency\n# TYPE rpc_seconds summary\nrpc_seconds{svc=\"a\",quantile=\"0.5\"} 0.01\nrpc_seconds{svc=\"a\",quantile=\"0.99\"} 0.2\nrpc_seconds_sum{svc=\"a\"} 12.5\nrpc_seconds_count{svc=\"a\"} 1000\nrpc_seconds{svc=\"b\",quantile=\"0.5\"} NaN\nrpc_seconds_sum{svc=\"b\"} 0\nrpc_seconds_count{svc=\"b\"} 0\n";
    let e = parse(text).unwrap();
    assert_eq!(e.families.len(), 1);
    let s = e.summaries("rpc_seconds");
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].labels.get("svc"), Some("a"));
    assert_eq!(s[0].quantiles, vec![(0.5, 0.01), (0.99, 0.2)]);
    assert_eq!((s[0].sum, s[0].count), (Some(12.5), Some(1000.0)));
    assert!(s[1].quantiles[0].1.is_nan());
}

#[test]
fn untyped_and_untyped_without_type_line() {
    let text = "# TYPE u untyped\nu 3\nstray_metric{a=\"b\"} 4\nanother 5 123\n";
    let e = parse(text).unwrap();
    assert_eq!(e.family("u").unwrap().kind, MetricType::Untyped);
    assert_eq!(e.family("stray_metric").unwrap().kind, MetricType::Untyped);
    assert_eq!(
        e.family("another").unwrap().samples[0].timestamp_ms,
        Some(123)
    );
}

#[test]
fn histogram_with_inf_bucket_and_quantiles() {
    let text = "# TYPE lat_seconds histogram\nlat_seconds_bucket{le=\"0.1\"} 10\nlat_seconds_bucket{le=\"0.5\"} 60\nlat_seconds_bucket{le=\"1\"} 90\nlat_seconds_bucket{le=\"+Inf\"} 100\nlat_seconds_sum 40\nlat_seconds_count 100\n";
    let e = parse(text).unwrap();
    let h = &e.histograms("lat_seconds")[0];
    assert_eq!(h.buckets.last().unwrap(), &(f64::INFINITY, 100.0));
    // rank 50 lies in (0.1, 0.5]: 0.1 + 0.4 × (40/50)
    assert!((quantile(&h.buckets, 0.5).unwrap() - 0.42).abs() < 1e-12);
    // rank 5 in the first bucket interpolates from 0.
    assert!((quantile(&h.buckets, 0.05).unwrap() - 0.05).abs() < 1e-12);
    // rank 99 falls in +Inf: the highest finite bound, as histogram_quantile does.
    assert_eq!(quantile(&h.buckets, 0.99), Some(1.0));
    let d = distribution(&h.buckets, h.sum, h.count, 1000.0);
    assert_eq!(d.count, 100.0);
    assert_eq!(d.mean, Some(400.0));
    assert_eq!(d.p50, Some(420.0));
    assert_eq!(d.max_bucket_bound, Some(1000.0));
    assert_eq!(d.overflow_count, 10.0);
    assert_eq!(quantile(&[(1.0, 5.0)], 0.5), None, "no +Inf bucket");
    assert_eq!(
        quantile(&[(1.0, 0.0), (f64::INFINITY, 0.0)], 0.5),
        None,
        "empty"
    );
}

#[test]
fn openmetrics_counter_total_and_exemplar() {
    let text = "# TYPE req counter\nreq_total{code=\"200\"} 7 # {trace_id=\"abc\"} 1 1700000000.1\nreq_created{code=\"200\"} 1700000000\n# EOF\n";
    let e = parse(text).unwrap();
    let f = e.family("req").unwrap();
    assert_eq!(f.kind, MetricType::Counter);
    assert_eq!(f.samples.len(), 2);
    assert_eq!(sum_by_name(&e, "req_total"), Some(7.0));
}

#[test]
fn quoted_utf8_metric_name() {
    let e = parse("{\"my.metric\", code=\"1\"} 2\n").unwrap();
    let s = e.series("my.metric").next().unwrap();
    assert_eq!(s.labels.get("code"), Some("1"));
}

#[test]
fn malformed_lines_are_reported_strictly_and_skipped_leniently() {
    let text =
        "ok 1\nbad{a=\"x} 2\nnovalue\nbad2{a=b} 3\nbad3 notanumber\nx{a=\"1\",a=\"2\"} 1\nfine 2\n";
    assert!(parse(text).is_err());
    let (e, errors) = parse_lenient(text);
    assert_eq!(
        errors.iter().map(|e| e.line).collect::<Vec<_>>(),
        vec![2, 3, 4, 5, 6]
    );
    assert_eq!(e.len(), 2);
}

#[test]
fn crlf_and_blank_lines() {
    let e = parse("# TYPE a counter\r\n\r\na 1\r\n   \n").unwrap();
    assert_eq!(sum_by_name(&e, "a"), Some(1.0));
}

fn fixture(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn real_dynamo_frontend_fixture() {
    let text = fixture("dynamo/frontend_metrics.prom");
    let e = parse(&text).expect("the live frontend's exposition parses strictly");
    let declared = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    assert_eq!(
        e.families.len(),
        declared,
        "every sample belongs to a declared family"
    );
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    assert_eq!(e.len(), samples);
    assert_eq!(
        sum_by_label(&e, "dynamo_frontend_requests_total", "status"),
        [("error".to_string(), 1.0), ("success".to_string(), 8.0)].into()
    );
    let ttft = e.histograms("dynamo_frontend_time_to_first_token_seconds");
    assert_eq!(ttft.len(), 1);
    assert_eq!(ttft[0].labels.get("model"), Some("tiny-llama"));
    assert_eq!(ttft[0].count, Some(8.0));
    assert_eq!(ttft[0].buckets.last().unwrap().0, f64::INFINITY);
    let d = distribution(&ttft[0].buckets, ttft[0].sum, ttft[0].count, 1000.0);
    assert_eq!(d.count, 8.0);
    assert!(d.p50.unwrap() > 0.0 && d.p50 <= d.p99);
    let itl = e.histograms("dynamo_frontend_inter_token_latency_seconds");
    assert_eq!(itl[0].count, Some(112.0));
    // Two label sets for request duration: tiny-llama and unknown_model.
    let dur = e.histograms("dynamo_frontend_request_duration_seconds");
    assert_eq!(dur.len(), 2);
    let merged = merge_histograms(&dur).unwrap().unwrap();
    assert_eq!(merged.count, Some(9.0));
}

#[test]
fn real_dynamo_worker_fixture_with_colon_names() {
    let text = fixture("dynamo/worker_metrics.prom");
    let e = parse(&text).unwrap();
    let declared = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    assert_eq!(e.families.len(), declared);
    let f = e.family("vllm:time_to_first_token_seconds").unwrap();
    assert_eq!(f.kind, MetricType::Histogram);
    assert_eq!(
        e.histograms("vllm:time_to_first_token_seconds")[0].count,
        Some(8.0)
    );
    assert_eq!(
        select(
            &e,
            "dynamo_component_requests_total",
            &[("dynamo_endpoint", "generate")]
        )[0]
        .value,
        8.0
    );
    assert_eq!(
        sum_by_name(&e, "dynamo_component_requests_total"),
        Some(8.0)
    );
    assert_eq!(sum_by_name(&e, "no_such_metric"), None);
}

#[test]
fn counter_and_histogram_deltas_between_real_scrapes() {
    // Another capture of the frontend: whatever it is relative to the first
    // (later, or after a restart), no delta may come out negative.
    let before = parse(&fixture("dynamo/frontend_metrics.prom")).unwrap();
    let after = parse(&fixture("dynamo/frontend_metrics_overlong.prom")).unwrap();
    let deltas = counter_deltas(&before, &after);
    assert!(!deltas.is_empty());
    for d in &deltas {
        assert!(d.delta >= 0.0 || d.delta.is_nan(), "{d:?}");
    }
    let self_deltas = counter_deltas(&before, &before);
    assert!(self_deltas.iter().all(|d| d.delta == 0.0 && !d.reset));
    let h = histogram_family_delta(
        &before,
        &before,
        "dynamo_frontend_time_to_first_token_seconds",
    );
    assert_eq!(h[0].count, Some(0.0));
    assert_eq!(h[0].distribution(1000.0).p50, None);
}

#[test]
fn counter_reset_and_new_series() {
    let a = parse("# TYPE c counter\nc{w=\"1\"} 100\nc{w=\"2\"} 5\n").unwrap();
    let b = parse("# TYPE c counter\nc{w=\"1\"} 30\nc{w=\"2\"} 9\nc{w=\"3\"} 4\n").unwrap();
    let d = counter_deltas(&a, &b);
    assert_eq!((d[0].delta, d[0].reset), (30.0, true));
    assert_eq!((d[1].delta, d[1].reset), (4.0, false));
    assert_eq!((d[2].before, d[2].delta), (None, 4.0));
}

#[test]
fn histogram_delta_distribution_and_reset() {
    let a = parse("# TYPE h histogram\nh_bucket{le=\"1\"} 10\nh_bucket{le=\"2\"} 10\nh_bucket{le=\"+Inf\"} 10\nh_sum 5\nh_count 10\n").unwrap();
    let b = parse("# TYPE h histogram\nh_bucket{le=\"1\"} 10\nh_bucket{le=\"2\"} 20\nh_bucket{le=\"+Inf\"} 20\nh_sum 20\nh_count 20\n").unwrap();
    let d = &histogram_family_delta(&a, &b, "h")[0];
    assert_eq!(
        d.buckets,
        vec![(1.0, 0.0), (2.0, 10.0), (f64::INFINITY, 10.0)]
    );
    assert_eq!((d.sum, d.count, d.reset), (Some(15.0), Some(10.0), false));
    let dist = d.distribution(1.0);
    // Everything new landed in (1, 2]: the phase's median is 1.5, not the run's.
    assert_eq!(dist.p50, Some(1.5));
    assert_eq!(dist.mean, Some(1.5));
    let r = &histogram_family_delta(&b, &a, "h")[0];
    assert!(r.reset);
    assert_eq!(r.count, Some(10.0));
}

mod props {
    //! Property tests (FUZZING.md): the text parser on any input, and the
    //! writer's output read back.
    use super::*;
    use proptest::prelude::*;

    fn exposition_ish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("# TYPE ".to_owned()),
            Just("# HELP ".to_owned()),
            Just("counter".to_owned()),
            Just("histogram".to_owned()),
            Just("summary".to_owned()),
            Just("gauge".to_owned()),
            Just("kvbm_x".to_owned()),
            Just("_bucket".to_owned()),
            Just("_sum".to_owned()),
            Just("_count".to_owned()),
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just("le=\"+Inf\"".to_owned()),
            Just("a=\"b\\\"c\"".to_owned()),
            Just(",".to_owned()),
            Just(" ".to_owned()),
            Just("\n".to_owned()),
            Just("NaN".to_owned()),
            Just("-Inf".to_owned()),
            Just("1e308".to_owned()),
            Just("17".to_owned()),
            Just("\\".to_owned()),
            "[ -~]{1,6}",
            any::<char>().prop_map(String::from),
        ];
        proptest::collection::vec(piece, 0..64).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn any_text_parses_or_fails_cleanly(text in exposition_ish()) {
            if let Ok(e) = parse(&text) {
                // Everything derived from a parse is safe too.
                for f in &e.families {
                    let _ = e.histograms(&f.name);
                    let _ = e.summaries(&f.name);
                }
                let _ = counter_deltas(&e, &e);
                // What the writer writes, the parser reads, sample for sample.
                let again = parse(&e.to_text());
                prop_assert!(again.is_ok(), "{:?} from {:?}", again, e.to_text());
                prop_assert_eq!(again.unwrap().len(), e.len());
            }
        }
    }
}
