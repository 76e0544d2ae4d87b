//! The feed, the scheduler and the recorder together, driven by a scripted
//! [`Planner`] against the ground-truth server on 127.0.0.1: the whole
//! native path of a run, without wasm.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::*;
use crate::dispatch::client::Client;
use crate::dispatch::runner::{DispatchEnd, Event, PhaseRun, Runner};
use crate::dispatch::timer::PreciseTimer;
use crate::plan::{Generation, LoadModel, PlanBatch, PlanError};
use crate::results::recorder::Recorder;
use crate::results::rundir::RunDir;
use crate::sandbox::SandboxError;
use crate::truth::{TruthConfig, TruthServer};

/// One call's answer in a [`ScriptedPlanner`]'s script.
enum Step {
    /// A batch of requests, more to follow.
    Plan(Vec<RequestPlan>),
    /// An empty batch: the feed waits for one response before asking again.
    AwaitResponse,
    /// The workload traps.
    Trap,
}

/// The test double the [`Planner`] trait promises: it plays a script, one
/// step per `next_batch`, then says it is done.
struct ScriptedPlanner {
    phases: Vec<PhasePlan>,
    script: VecDeque<Step>,
    /// Requests handed to the feed so far, read by the test while it runs.
    planned: Arc<AtomicU64>,
    responses: Arc<Mutex<Vec<ResponseSummary>>>,
}

impl Planner for ScriptedPlanner {
    fn phases(&mut self) -> Result<Vec<PhasePlan>, PlanError> {
        Ok(self.phases.clone())
    }

    fn next_batch(&mut self, _max: u32) -> Result<PlanBatch, PlanError> {
        let requests = match self.script.pop_front() {
            None => {
                return Ok(PlanBatch {
                    requests: vec![],
                    done: true,
                });
            }
            Some(Step::Plan(r)) => r,
            Some(Step::AwaitResponse) => vec![],
            Some(Step::Trap) => {
                return Err(SandboxError::Trap {
                    workload: "scripted".into(),
                    call: "next-batch",
                    message: "unreachable".into(),
                    stderr: String::new(),
                }
                .into());
            }
        };
        self.planned
            .fetch_add(requests.len() as u64, Ordering::SeqCst);
        Ok(PlanBatch {
            requests,
            done: false,
        })
    }

    fn on_response(&mut self, summary: ResponseSummary) -> Result<(), PlanError> {
        self.responses.lock().unwrap().push(summary);
        Ok(())
    }
}

fn req(id: &str, phase: &str, arrival: Arrival, session: Option<&str>) -> RequestPlan {
    RequestPlan {
        id: id.into(),
        phase: phase.into(),
        session_id: session.map(Into::into),
        prefix_hash: None,
        prompt: Prompt::Text(format!("prompt of {id}")),
        generation: Generation {
            max_tokens: 3,
            temperature: None,
            top_p: None,
            stop: vec![],
            seed: None,
            ignore_eos: false,
        },
        arrival,
        labels: vec![],
    }
}

fn asap(id: &str) -> RequestPlan {
    req(id, "main", Arrival::Asap, None)
}

/// What the scheduler told the recorder about one request.
#[derive(Debug, Clone)]
struct Sent {
    id: String,
    intended: Instant,
    sent: Instant,
    end: Instant,
    /// Requests the planner had planned when this one was recorded.
    planned_by_then: u64,
}

struct Outcome {
    phase_starts: Vec<Instant>,
    /// In the order they finished.
    sent: Vec<Sent>,
    end: DispatchEnd,
    report: FeedReport,
    rows: Vec<serde_json::Value>,
    manifest: Vec<serde_json::Value>,
    responses: Vec<ResponseSummary>,
}

impl Outcome {
    fn get(&self, id: &str) -> &Sent {
        self.sent
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("{id} was not sent: {:?}", self.sent))
    }
}

fn read_jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const MAIN: &str = "main";

/// Runs `script` over `phases` the way `sparkhost run` wires a run.
async fn drive(phases: &[(&str, LoadModel)], script: Vec<Step>, lookahead: usize) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = TruthServer::new(TruthConfig {
        ttft: Duration::from_millis(5),
        itl: Duration::from_millis(1),
    });
    let serving = tokio::spawn(server.serve(listener));

    let root = tempfile::tempdir().unwrap();
    let rd = RunDir::create(root.path(), "run").unwrap();
    let tokens = Arc::new(TokenCounter::Heuristic);
    let planned = Arc::new(AtomicU64::new(0));
    let responses = Arc::new(Mutex::new(Vec::new()));
    let mut planner = ScriptedPlanner {
        phases: phases
            .iter()
            .map(|&(name, load)| PhasePlan {
                name: name.into(),
                include_in_summary: true,
                load: Some(load),
            })
            .collect(),
        script: script.into(),
        planned: planned.clone(),
        responses: responses.clone(),
    };
    let plans = planner.phases().unwrap();
    let mut feed = spawn(
        Box::new(planner),
        plans.clone(),
        FeedConfig {
            model: "truth".into(),
            stream: true,
            stream_usage: true,
            batch_max: 1,
            lookahead,
            preflight: None,
            refuse: false,
        },
        tokens.clone(),
        rd.jsonl("request_manifest.jsonl").unwrap(),
        rd.jsonl("prompts_manifest.jsonl").unwrap(),
    );
    (&mut feed.initial).await.unwrap();

    let base = Instant::now();
    let (rec_tx, rec_rx) = mpsc::unbounded_channel();
    let recorder = Recorder::new(
        rd.jsonl("requests.jsonl").unwrap(),
        base,
        chrono::Utc::now(),
        tokens,
        plans.iter().map(|p| (p.name.clone(), true)).collect(),
        Some(feed.responses),
        None,
    );
    let recording = std::thread::spawn(move || recorder.run_blocking(rec_rx));
    // Between the scheduler and the recorder: notes the exact instants.
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let tee = tokio::spawn(async move {
        let (mut starts, mut sent) = (Vec::new(), Vec::new());
        while let Some(ev) = ev_rx.recv().await {
            match &ev {
                Event::PhaseStart { at, .. } => starts.push(*at),
                Event::Finished(f) => sent.push(Sent {
                    id: f.request.meta.id.clone(),
                    intended: f.outcome.intended,
                    sent: f.outcome.sent,
                    end: f.outcome.end,
                    planned_by_then: planned.load(Ordering::SeqCst),
                }),
                Event::PhaseEnd { .. } => {}
            }
            let _ = rec_tx.send(ev);
        }
        (starts, sent)
    });

    let runner = Runner {
        client: Client::new(&endpoint, Duration::from_secs(10)).unwrap(),
        timer: PreciseTimer::new(),
        boundaries: None,
        lookahead,
        max_in_flight: 100,
        duration: None,
    };
    let runs: Vec<PhaseRun> = phases
        .iter()
        .map(|&(name, load)| PhaseRun {
            name: name.into(),
            load,
            seed: 1,
        })
        .collect();
    let (_stop_tx, stop_rx) = watch::channel(None);
    let mut requests = feed.requests;
    let end = runner.run(&runs, &mut requests, &ev_tx, stop_rx).await;
    drop((ev_tx, requests));
    let (phase_starts, sent) = tee.await.unwrap();
    let recorder = tokio::task::spawn_blocking(move || recording.join().unwrap())
        .await
        .unwrap();
    assert_eq!(recorder.write_error, None);
    let report = tokio::task::spawn_blocking(move || feed.thread.join().unwrap())
        .await
        .unwrap();
    serving.abort();
    let responses = responses.lock().unwrap().clone();
    Outcome {
        phase_starts,
        sent,
        end,
        report,
        rows: read_jsonl(&rd.path().join("requests.jsonl")),
        manifest: read_jsonl(&rd.path().join("request_manifest.jsonl")),
        responses,
    }
}

fn ok_rows(run: &Outcome) -> usize {
    run.rows
        .iter()
        .filter(|r| r["ok"] == true && r["error_kind"].is_null())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_slots_send_each_request_when_a_slot_frees() {
    let script = vec![Step::Plan((0..6).map(|i| asap(&format!("r{i}"))).collect())];
    let run = drive(&[(MAIN, LoadModel::Closed { concurrency: 2 })], script, 16).await;
    assert_eq!(ok_rows(&run), 6, "{:#?}", run.rows);
    let start = run.phase_starts[0];
    for s in &run.sent {
        if s.id == "r0" || s.id == "r1" {
            assert_eq!(s.intended, start, "{s:?}");
        } else {
            // Intended exactly when an earlier request's slot freed.
            assert!(
                run.sent.iter().any(|e| e.end == s.intended && e.id != s.id),
                "{s:?} did not start on a freed slot: {:#?}",
                run.sent
            );
        }
        assert!(s.sent >= s.intended);
    }
    assert!(run.end.workload_error.is_none() && run.report.error.is_none());
    assert_eq!(run.end.phases_completed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_arrivals_go_out_at_their_offsets_in_time_order() {
    let at = |id: &str, ms| req(id, MAIN, Arrival::AtOffsetMs(ms), None);
    let script = vec![Step::Plan(vec![
        at("late", 60.0),
        at("early", 20.0),
        at("mid", 40.0),
    ])];
    let run = drive(&[(MAIN, LoadModel::Constant { rate: 1000.0 })], script, 16).await;
    assert_eq!(ok_rows(&run), 3);
    let start = run.phase_starts[0];
    for (id, ms) in [("early", 20), ("mid", 40), ("late", 60)] {
        let s = run.get(id);
        assert_eq!(s.intended, start + Duration::from_millis(ms), "{s:?}");
        assert!(s.sent >= s.intended, "{s:?}");
    }
    assert!(run.get("early").sent < run.get("mid").sent);
    assert!(run.get("mid").sent < run.get("late").sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_turns_wait_for_the_previous_turn_plus_think_time() {
    let turn = |id: &str, arrival| req(id, MAIN, arrival, Some("s"));
    let script = vec![
        Step::Plan(vec![
            turn("t0", Arrival::Asap),
            turn("t1", Arrival::AfterPreviousTurn(30.0)),
        ]),
        // A follow-up planned only once the first answer is back.
        Step::AwaitResponse,
        Step::Plan(vec![turn("t2", Arrival::AfterPreviousTurn(10.0))]),
    ];
    let run = drive(&[(MAIN, LoadModel::Closed { concurrency: 4 })], script, 16).await;
    assert_eq!(ok_rows(&run), 3);
    let (t0, t1, t2) = (run.get("t0"), run.get("t1"), run.get("t2"));
    assert_eq!(t1.intended, t0.end + Duration::from_millis(30));
    assert_eq!(t2.intended, t1.end + Duration::from_millis(10));
    let late = |id: &str| {
        run.manifest
            .iter()
            .find(|m| m["prompt_id"] == id)
            .map(|m| m["planned_after_start"] == true)
    };
    assert_eq!((late("t1"), late("t2")), (Some(false), Some(true)));
    let heard = &run.responses[0];
    assert_eq!(heard.id, "t0", "the follow-up waited for this answer");
    assert!(heard.ok && heard.error_kind.is_none(), "{heard:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_look_ahead_bounds_what_is_planned_before_it_is_sent() {
    let lookahead = 4;
    let script = (0..40)
        .map(|i| Step::Plan(vec![asap(&format!("r{i}"))]))
        .collect();
    let run = drive(
        &[(MAIN, LoadModel::Closed { concurrency: 1 })],
        script,
        lookahead,
    )
    .await;
    assert_eq!(ok_rows(&run), 40);
    let ahead = run
        .sent
        .iter()
        .enumerate()
        .map(|(earlier, s)| s.planned_by_then - (earlier as u64 + 1))
        .max()
        .unwrap();
    // Planned and not finished: the scheduler's window and the feed's
    // channel, plus the request in the feed's hand and the one in flight
    // (see `--lookahead`).
    assert!(ahead <= 2 * lookahead as u64 + 2, "planned {ahead} ahead");
    assert!(ahead > lookahead as u64, "planned only {ahead} ahead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_failure_mid_run_keeps_the_requests_already_planned() {
    let script = vec![
        Step::Plan(vec![asap("a"), asap("b")]),
        Step::Plan(vec![req("c", "next", Arrival::Asap, None)]),
        Step::Trap,
    ];
    let phases = [
        (MAIN, LoadModel::Closed { concurrency: 1 }),
        ("next", LoadModel::Closed { concurrency: 1 }),
    ];
    let run = drive(&phases, script, 16).await;
    assert_eq!(ok_rows(&run), 3, "{:#?}", run.rows);
    assert_eq!(run.manifest.len(), 3);
    assert_eq!(run.end.phases_completed, 2);
    let error = run.end.workload_error.expect("the dispatcher heard of it");
    assert!(
        matches!(
            &*error,
            PlanError::Sandbox(SandboxError::Trap {
                call: "next-batch",
                ..
            })
        ),
        "{error:?}"
    );
    assert!(Arc::ptr_eq(&error, run.report.error.as_ref().unwrap()));
    assert_eq!(run.report.planned, 3);
}

fn scripted(script: Vec<Step>) -> ScriptedPlanner {
    ScriptedPlanner {
        phases: vec![],
        script: script.into(),
        planned: Arc::new(AtomicU64::new(0)),
        responses: Arc::new(Mutex::new(Vec::new())),
    }
}

const PF: Preflight = Preflight {
    engine_max_input_tokens: 64,
    input_token_safety_margin: 8,
};

/// Request 35 of 40 is too long: the dry run finds it although a
/// look-ahead window of 8 would have sent 34 requests first.
#[test]
fn the_whole_plan_check_finds_a_late_offender() {
    let mut steps = Vec::new();
    for b in 0..5 {
        steps.push(Step::Plan(
            (0..8)
                .map(|i| {
                    let n = b * 8 + i + 1;
                    let mut r = asap(&format!("r{n}"));
                    if n == 35 {
                        r.prompt = Prompt::Text("word ".repeat(60));
                    }
                    r
                })
                .collect(),
        ));
    }
    let mut report = PreflightReport::default();
    let w = check_whole_plan(
        &mut scripted(steps),
        PF,
        &TokenCounter::Heuristic,
        8,
        1000,
        &mut report,
    );
    assert!(w.complete && w.stopped.is_none(), "{w:?}");
    assert_eq!((w.checked, w.failure_count), (40, 1));
    assert!(report.failed);
    assert_eq!(report.errors.len(), 1);
    assert!(
        report.errors[0].starts_with("r35: 60 prompt tokens > ceiling 53"),
        "{:?}",
        report.errors
    );
    assert!(
        w.guarantee.contains("every one of the 40"),
        "{}",
        w.guarantee
    );
    assert_eq!(report.whole_plan.as_ref(), Some(&w));
}

/// A workload that waits for answers cannot be planned ahead: the check
/// says how far it got and what the run guarantees beyond that.
#[test]
fn the_whole_plan_check_says_where_it_stopped() {
    let steps = vec![
        Step::Plan(vec![asap("a"), asap("b")]),
        Step::AwaitResponse,
        Step::Plan(vec![asap("c")]),
    ];
    let mut report = PreflightReport::default();
    let w = check_whole_plan(
        &mut scripted(steps),
        PF,
        &TokenCounter::Heuristic,
        8,
        1000,
        &mut report,
    );
    assert!(!w.complete);
    assert_eq!(w.checked, 2);
    assert!(
        w.stopped
            .as_deref()
            .unwrap()
            .contains("waits for responses")
    );
    assert!(
        w.guarantee.contains("first 2 planned requests") && w.guarantee.contains("stops the run"),
        "{}",
        w.guarantee
    );
    assert!(!report.failed);

    // The cap bounds a plan without end.
    let steps = (0..10)
        .map(|i| Step::Plan(vec![asap(&format!("x{i}"))]))
        .collect();
    let w = check_whole_plan(
        &mut scripted(steps),
        PF,
        &TokenCounter::Heuristic,
        8,
        3,
        &mut PreflightReport::default(),
    );
    assert_eq!(w.checked, 3);
    assert!(w.stopped.unwrap().contains("cap of 3"));
}
