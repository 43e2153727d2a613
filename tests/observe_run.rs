//! What a run writes for people: TensorBoard event files (parsed back here
//! record by record, CRCs checked, protobuf decoded), `completions.jsonl`
//! with hand-computed token credit, `rlsd inspect --run`, `rlsd report`,
//! `rlsd plot` on files and folders, and all of it from a real (tiny) run.

#[path = "common/timed.rs"]
mod timed;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rlsd::config::RunConfig;
use rlsd::data::Example;
use rlsd::observe::{read_completions, sample_completions, CompletionSample, Observer};
use rlsd::pipeline::{
    CreditBatch, Rollout, RolloutBatch, Score, ScoredBatch, StepPlan, TeacherBatch, TeacherScores,
};
use rlsd::policy::PromptResponse;
use rlsd::rlsd::{Algo, AlgoConfig};
use rlsd::stats::{StageTimings, StepStats};
use rlsd::train::TrainBatch;

// ---------------------------------------------------------------------------
// An independent reader of TFRecord files and of the protobuf fields used.

/// CRC-32C, bit by bit (polynomial 0x82F63B78, reflected): independent of the crate.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[allow(clippy::manual_rotate)] // spelled out as the format states it
fn masked(data: &[u8]) -> u32 {
    let c = crc32c(data);
    ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8)
}

/// Split a TFRecord file into its records, checking both CRCs of each.
fn records(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes.len() - i >= 12, "truncated header at byte {i}");
        let len_bytes = &bytes[i..i + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let len_crc = u32::from_le_bytes(bytes[i + 8..i + 12].try_into().unwrap());
        assert_eq!(
            len_crc,
            masked(len_bytes),
            "length CRC of record at byte {i}"
        );
        let data = &bytes[i + 12..i + 12 + len];
        let data_crc = u32::from_le_bytes(bytes[i + 12 + len..i + 16 + len].try_into().unwrap());
        assert_eq!(data_crc, masked(data), "data CRC of record at byte {i}");
        out.push(data.to_vec());
        i += 16 + len;
    }
    out
}

/// A decoded protobuf field value.
#[derive(Debug, Clone)]
enum Field {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(Vec<u8>),
    Fixed32([u8; 4]),
}

fn varint(b: &[u8], i: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = b[*i];
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

fn fields(b: &[u8]) -> Vec<(u64, Field)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i);
        let (num, wire) = (key >> 3, key & 7);
        let f = match wire {
            0 => Field::Varint(varint(b, &mut i)),
            1 => {
                let v = b[i..i + 8].try_into().unwrap();
                i += 8;
                Field::Fixed64(v)
            }
            2 => {
                let n = varint(b, &mut i) as usize;
                let v = b[i..i + n].to_vec();
                i += n;
                Field::Bytes(v)
            }
            5 => {
                let v = b[i..i + 4].try_into().unwrap();
                i += 4;
                Field::Fixed32(v)
            }
            w => panic!("unexpected wire type {w}"),
        };
        out.push((num, f));
    }
    out
}

fn get(fs: &[(u64, Field)], num: u64) -> Option<&Field> {
    fs.iter().find(|(n, _)| *n == num).map(|(_, f)| f)
}

fn bytes_of(f: Option<&Field>) -> &[u8] {
    match f {
        Some(Field::Bytes(b)) => b,
        other => panic!("expected bytes, got {other:?}"),
    }
}

/// A decoded `Event`.
#[derive(Debug, Default)]
struct Event {
    wall_time: f64,
    step: u64,
    file_version: Option<String>,
    scalars: Vec<(String, f32)>,
    texts: Vec<(String, String)>,
    session_start: bool,
}

fn decode_event(data: &[u8]) -> Event {
    let fs = fields(data);
    let mut e = Event::default();
    if let Some(Field::Fixed64(b)) = get(&fs, 1) {
        e.wall_time = f64::from_le_bytes(*b);
    }
    if let Some(Field::Varint(s)) = get(&fs, 2) {
        e.step = *s;
    }
    if let Some(f) = get(&fs, 3) {
        e.file_version = Some(String::from_utf8(bytes_of(Some(f)).to_vec()).unwrap());
    }
    if let Some(f) = get(&fs, 6) {
        let log = fields(bytes_of(Some(f)));
        e.session_start = matches!(get(&log, 1), Some(Field::Varint(1)));
    }
    if let Some(f) = get(&fs, 5) {
        for (n, v) in fields(bytes_of(Some(f))) {
            assert_eq!(n, 1, "Summary has only `value` fields");
            let vf = fields(bytes_of(Some(&v)));
            let tag = String::from_utf8(bytes_of(get(&vf, 1)).to_vec()).unwrap();
            match get(&vf, 2) {
                Some(Field::Fixed32(b)) => e.scalars.push((tag, f32::from_le_bytes(*b))),
                _ => {
                    let meta = fields(bytes_of(get(&vf, 9)));
                    let plugin = fields(bytes_of(get(&meta, 1)));
                    assert_eq!(bytes_of(get(&plugin, 1)), b"text");
                    let tensor = fields(bytes_of(get(&vf, 8)));
                    assert!(
                        matches!(get(&tensor, 1), Some(Field::Varint(7))),
                        "DT_STRING"
                    );
                    let text = String::from_utf8(bytes_of(get(&tensor, 8)).to_vec()).unwrap();
                    e.texts.push((tag, text));
                }
            }
        }
    }
    e
}

fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// A hand-made batch whose credit is worked out below.

/// One hand-made response: `(rollout, score, teacher log-probs, A_i)`.
fn sample(
    group: usize,
    resp: Vec<i64>,
    logp: Vec<f32>,
    teacher: Vec<f32>,
    reward: f32,
    adv: f32,
) -> (Rollout, Score, Vec<f32>, f32) {
    (
        Rollout {
            group,
            prompt_ids: vec![1, 2],
            response_ids: resp,
            response_text: format!("answer {group}"),
            sampling_logprobs: logp,
            stopped_on_eos: true,
            stopped_on_stop_string: false,
            episode: None,
        },
        Score {
            reward,
            correct: reward > 0.5,
            reason: "by hand".into(),
            timed_out: false,
        },
        teacher,
        adv,
    )
}

/// Two responses to one prompt: A = +1 and A = -0.5, lambda 0.5, eps_w 0.2.
fn hand_batch() -> (CreditBatch, TrainBatch, AlgoConfig) {
    let parts = [
        sample(
            0,
            vec![5, 6, 7],
            vec![-1.0, -2.0, -0.5],
            vec![-0.5, -2.0, -1.0],
            1.0,
            1.0,
        ),
        sample(0, vec![8, 9], vec![-1.0, -1.0], vec![-1.2, -0.9], 0.0, -0.5),
    ];
    let cfg = RunConfig {
        algo: AlgoConfig::with_algo(Algo::Rlsd),
        ..RunConfig::default()
    };
    let mut plan = StepPlan::new(
        &cfg,
        2,
        0,
        vec![Example {
            id: "ex-1".into(),
            prompt: "What is <1+1>?".into(),
            answer: "2".into(),
            privileged: "2".into(),
            context: Vec::new(),
            extra: Default::default(),
            images: Vec::new(),
        }],
        serde_json::Value::Null,
    );
    plan.lambda = 0.5;
    plan.lr = 1e-3;
    plan.needs_teacher = true;
    let rollout = RolloutBatch {
        plan,
        policy_version: 1,
        rollouts: parts.iter().map(|p| p.0.clone()).collect(),
        timings: StageTimings::default(),
    };
    let scored = ScoredBatch::new(rollout, parts.iter().map(|p| p.1.clone()).collect()).unwrap();
    let batch = CreditBatch {
        taught: TeacherBatch {
            scored,
            teacher: TeacherScores {
                version: 0,
                logprobs: Some(parts.iter().map(|p| p.2.clone()).collect()),
                neg_logprobs: None,
                support: None,
            },
        },
        advantages: parts.iter().map(|p| p.3).collect(),
    };
    let r = batch.rollouts();
    let tb = TrainBatch {
        samples: r
            .iter()
            .map(|x| PromptResponse {
                image_key: 0,
                prompt: x.prompt_ids.clone(),
                response: x.response_ids.clone(),
            })
            .collect(),
        sampling_logprobs: r.iter().map(|x| x.sampling_logprobs.clone()).collect(),
        teacher_logprobs: batch.taught.teacher.logprobs.clone(),
        teacher_neg_logprobs: None,
        ref_logprobs: None,
        teacher_support: None,
        advantages: batch.advantages.clone(),
        correct: None,
        step: 2,
        lambda: 0.5,
        lr: 1e-3,
        temperature: 1.0,
        response_mask: None,
    };
    let mut algo = AlgoConfig::with_algo(Algo::Rlsd);
    algo.eps_w = 0.2;
    (batch, tb, algo)
}

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
    }
}

#[test]
fn completions_carry_the_credit_worked_out_by_hand() {
    let (batch, tb, algo) = hand_batch();
    let got = sample_completions(&batch, &tb, &algo, None, 8);
    assert_eq!(got.len(), 2);
    // Response 1, A = +1: delta = teacher - sampling = [0.5, 0, -0.5];
    // w = exp(+delta) = [1.6487, 1, 0.6065], clipped to [1.2, 1, 0.8];
    // Ahat = 1 * (0.5 + 0.5 w_clip) = [1.1, 1.0, 0.9].
    close(&got[0].delta.clone().unwrap(), &[0.5, 0.0, -0.5]);
    close(
        &got[0].weights.clone().unwrap(),
        &[0.5f32.exp(), 1.0, (-0.5f32).exp()],
    );
    close(&got[0].ahat, &[1.1, 1.0, 0.9]);
    // Response 2, A = -0.5: delta = [-0.2, 0.1]; w = exp(-delta) = [1.2214, 0.9048],
    // clipped [1.2, 0.9048]; Ahat = -0.5 * (0.5 + 0.5 w_clip) = [-0.55, -0.47621].
    close(&got[1].delta.clone().unwrap(), &[-0.2, 0.1]);
    close(&got[1].ahat, &[-0.55, -0.5 * (0.5 + 0.5 * (-0.1f32).exp())]);
    assert_eq!(
        got[1].tokens,
        vec!["<8>", "<9>"],
        "ids shown without a tokenizer"
    );
    assert_eq!(got[0].prompt, "What is <1+1>?");
    assert_eq!((got[0].reward, got[0].advantage), (1.0, 1.0));
    // n is rounded up to whole groups: the two responses are one group, so
    // 1 gives both; 0 gives none.
    assert_eq!(sample_completions(&batch, &tb, &algo, None, 1).len(), 2);
    assert!(sample_completions(&batch, &tb, &algo, None, 0).is_empty());
    // GRPO: Ahat = A on every token, no weights, no delta.
    let grpo = AlgoConfig::with_algo(Algo::Grpo);
    let mut tb_g = tb.clone();
    tb_g.teacher_logprobs = None;
    let g = sample_completions(&batch, &tb_g, &grpo, None, 8);
    close(&g[1].ahat, &[-0.5, -0.5]);
    assert!(g[1].weights.is_none() && g[1].delta.is_none());
}

fn run_config(dir: &Path, extra: &[&str]) -> RunConfig {
    let mut set = vec![format!("runtime.out_dir=\"{}\"", dir.display())];
    set.extend(extra.iter().map(|s| s.to_string()));
    RunConfig::load(None, &set).unwrap()
}

fn stats_for(step: u64, completions: Vec<CompletionSample>) -> StepStats {
    StepStats {
        step,
        algo: "rlsd".into(),
        loss: 0.25 * step as f64,
        reward_mean: 0.1 * step as f64,
        accuracy: 0.5,
        lambda: 0.5,
        timings: StageTimings {
            generate_s: 1.5,
            ..StageTimings::default()
        },
        completions,
        ..StepStats::default()
    }
}

/// Three steps through an observer: the event file and completions log it writes.
fn observed_run(dir: &Path) -> PathBuf {
    let (batch, tb, algo) = hand_batch();
    let comps = sample_completions(&batch, &tb, &algo, None, 8);
    let cfg = run_config(dir, &["observe.report=false"]);
    let mut obs = Observer::open(&cfg, 0).unwrap();
    for step in 1..=3 {
        obs.on_step(&stats_for(step, comps.clone())).unwrap();
    }
    obs.on_record(3, "val", &serde_json::json!({"step": 3, "accuracy": 0.75}))
        .unwrap();
    assert!(
        obs.finish().is_empty(),
        "observe.report = false draws nothing"
    );
    obs.event_file().unwrap().to_path_buf()
}

#[test]
fn event_files_parse_with_valid_crcs_and_hold_every_metric() {
    let tmp = tempfile::tempdir().unwrap();
    let file = observed_run(tmp.path());
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    let events: Vec<Event> = records(&std::fs::read(&file).unwrap())
        .iter()
        .map(|r| decode_event(r))
        .collect();
    assert_eq!(events.len(), 1 + 3 + 1);
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    assert!(
        events[0].wall_time > 1.0e9,
        "wall time in seconds since 1970"
    );
    for (i, e) in events[1..4].iter().enumerate() {
        let step = i as u64 + 1;
        assert_eq!(e.step, step);
        let value = |tag: &str| {
            e.scalars
                .iter()
                .find(|(t, _)| t == tag)
                .unwrap_or_else(|| panic!("no scalar {tag} at step {step}: {:?}", e.scalars))
                .1
        };
        assert_eq!(value("loss"), 0.25 * step as f32);
        assert_eq!(value("reward_mean"), (0.1 * step as f64) as f32);
        assert_eq!(value("timings/generate_s"), 1.5);
        assert_eq!(value("skipped"), 0.0);
        assert!(!e.scalars.iter().any(|(t, _)| t == "step" || t == "algo"));
        // Every numeric field of the stats is there.
        let n_numeric = serde_json::to_value(stats_for(1, vec![]))
            .unwrap()
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::Object(m) => m.len(),
                serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                    usize::from(k != "step")
                }
                _ => 0,
            })
            .sum::<usize>();
        assert_eq!(e.scalars.len(), n_numeric);
        assert_eq!(e.texts.len(), 1);
        let (tag, text) = &e.texts[0];
        assert_eq!(tag, "completions");
        assert!(
            text.contains("What is <1+1>?") && text.contains("answer 0"),
            "{text}"
        );
        assert!(
            text.contains("reward 1.000") && text.contains("A = +1.0000"),
            "{text}"
        );
    }
    assert_eq!(events[4].step, 3);
    assert_eq!(events[4].scalars, vec![("val/accuracy".to_string(), 0.75)]);

    // A resumed run starts a second file that opens with a session-start marker.
    let cfg = run_config(tmp.path(), &[]);
    let obs = Observer::open(&cfg, 2).unwrap();
    let second = obs.event_file().unwrap().to_path_buf();
    drop(obs);
    assert_ne!(second, file);
    assert_eq!(event_files(tmp.path()).len(), 2);
    let ev: Vec<Event> = records(&std::fs::read(&second).unwrap())
        .iter()
        .map(|r| decode_event(r))
        .collect();
    assert!(ev[1].session_start && ev[1].step == 3, "{ev:?}");
    // ... and cuts the completions log back to the resumed step.
    let steps: Vec<u64> = read_completions(&tmp.path().join("completions.jsonl"))
        .unwrap()
        .iter()
        .map(|s| s.step)
        .collect();
    assert_eq!(steps, vec![1, 2]);
}

// ---------------------------------------------------------------------------
// The binary.

fn rlsd(args: &[&str]) -> Output {
    timed::output_within(
        Command::new(env!("CARGO_BIN_EXE_rlsd"))
            .args(args)
            .env("NO_COLOR", "1"),
        std::time::Duration::from_secs(600),
    )
}

fn ok(args: &[&str]) -> String {
    let o = rlsd(args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "rlsd {args:?} failed:\n{out}\n{err}");
    out
}

fn fails_naming(args: &[&str], needles: &[&str]) {
    let o = rlsd(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "rlsd {args:?} should fail");
    for n in needles {
        assert!(err.contains(n), "rlsd {args:?}: stderr lacks {n:?}:\n{err}");
    }
}

#[test]
fn completions_log_renders_with_inspect_run_and_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    observed_run(&run);
    // metrics.jsonl as the runtime writes it.
    let lines: Vec<String> = (1..=3)
        .map(|s| serde_json::to_string(&stats_for(s, vec![])).unwrap())
        .collect();
    std::fs::write(run.join("metrics.jsonl"), lines.join("\n") + "\n").unwrap();
    let r = run.to_str().unwrap();

    let page = tmp.path().join("step2.html");
    let out = ok(&[
        "inspect",
        "--run",
        r,
        "--step",
        "2",
        "--out",
        page.to_str().unwrap(),
    ]);
    assert!(
        out.contains("step 2: 2 logged responses to 1 prompts"),
        "{out}"
    );
    assert!(out.contains("A = +1.0000"), "terminal view printed: {out}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(
        html.matches("<span class=\"tok\"").count(),
        5,
        "one span per token"
    );
    assert!(html.contains("What is &lt;1+1&gt;?"), "prompt escaped");
    assert!(
        html.contains("Ahat / A = 1.1000"),
        "credit of the first token"
    );
    // Default: the last logged step.
    let out = ok(&[
        "inspect",
        "--run",
        r,
        "--quiet",
        "--out",
        page.to_str().unwrap(),
    ]);
    assert!(out.starts_with("step 3:"), "{out}");
    fails_naming(
        &["inspect", "--run", r, "--step", "9"],
        &["completions.jsonl", "step 9"],
    );
    let missing = tmp.path().join("nowhere");
    fails_naming(
        &["inspect", "--run", missing.to_str().unwrap()],
        &["nowhere"],
    );

    // The report: charts, config, completions.
    let out = ok(&["report", r]);
    assert!(out.contains("report.html"), "{out}");
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(
        html.matches("<svg").count() >= 3,
        "reward chart and panels inline"
    );
    assert!(!html.contains("<?xml"), "no XML prolog inside HTML");
    assert!(
        html.contains("[observe]") && html.contains("completions_per_step"),
        "the resolved config"
    );
    assert!(
        html.contains("step 1 (rlsd") && html.contains("step 3 (rlsd"),
        "first and last logged steps"
    );
    assert!(html.contains("<span class=\"tok\""), "credit colouring");
    fails_naming(&["report", missing.to_str().unwrap()], &["nowhere"]);
}

#[test]
fn plot_takes_run_folders_and_metrics_files_and_names_bad_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    std::fs::create_dir_all(&results).unwrap();
    let file = results.join("grpo-metrics.jsonl");
    let lines: Vec<String> = (1..=5)
        .map(|s| {
            format!(
                r#"{{"step":{s},"algo":"grpo","reward_mean":{},"lambda":0.5}}"#,
                0.1 * s as f64
            )
        })
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    // A folder of metrics files (not a run folder): the error lists them.
    fails_naming(
        &["plot", results.to_str().unwrap()],
        &["metrics.jsonl", "grpo-metrics.jsonl"],
    );
    // The file itself works; charts go next to it, named after it.
    let out = ok(&["plot", file.to_str().unwrap(), "--format", "png"]);
    assert!(out.contains("grpo-metrics-reward.png"), "{out}");
    let png = std::fs::read(results.join("grpo-metrics-reward.png")).unwrap();
    assert_eq!(&png[..8], &rlsd::plot::PNG_SIGNATURE);
    ok(&["plot", file.to_str().unwrap()]);
    let svg = std::fs::read_to_string(results.join("grpo-metrics-reward.svg")).unwrap();
    assert!(
        svg.contains("reward_mean") && !svg.contains("lambda"),
        "no lambda for grpo"
    );
    // Compare a file and a folder.
    let run = tmp.path().join("rlsd-run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(
        run.join("metrics.jsonl"),
        r#"{"step":1,"reward_mean":0.3}"#.to_string() + "\n",
    )
    .unwrap();
    let cmp = tmp.path().join("cmp.png");
    ok(&[
        "plot",
        file.to_str().unwrap(),
        run.to_str().unwrap(),
        "--out",
        cmp.to_str().unwrap(),
    ]);
    assert_eq!(
        &std::fs::read(&cmp).unwrap()[..8],
        &rlsd::plot::PNG_SIGNATURE
    );
    fails_naming(
        &[
            "plot",
            file.to_str().unwrap(),
            "--out",
            tmp.path().join("c.jpg").to_str().unwrap(),
        ],
        &["c.jpg", ".svg or .png"],
    );
    let missing = results.join("nope.jsonl");
    fails_naming(
        &["plot", missing.to_str().unwrap()],
        &["nope.jsonl", "does not exist"],
    );
}

#[test]
fn a_real_run_writes_events_completions_charts_and_report() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = run_config(
        tmp.path(),
        &[
            "runtime.steps=2",
            "runtime.sampler_device=\"cpu\"",
            "runtime.teacher_device=\"cpu\"",
            "runtime.optimizer_device=\"cpu\"",
            "rollout.batch_prompts=2",
            "rollout.group_size=2",
            "rollout.max_new_tokens=12",
            "observe.completions_per_step=3",
        ],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt
        .block_on(rlsd::actors::Runtime::builder(cfg).run())
        .unwrap();
    assert!(!report.failed, "{}", report.reason);
    let dir = tmp.path();
    let logged = read_completions(&dir.join("completions.jsonl")).unwrap();
    assert_eq!(
        logged.iter().map(|s| s.step).collect::<Vec<_>>(),
        vec![1, 2]
    );
    for s in &logged {
        // 3 asked for, rounded up to whole groups of 2.
        assert_eq!(s.samples.len(), 4);
        for c in &s.samples {
            assert_eq!(c.tokens.len(), c.response_ids.len());
            assert_eq!(c.ahat.len(), c.response_ids.len());
            assert_eq!(
                c.tokens.concat(),
                c.response.clone() + "",
                "tokens decode to the text"
            );
        }
    }
    let files = event_files(dir);
    assert_eq!(files.len(), 1);
    let events: Vec<Event> = records(&std::fs::read(&files[0]).unwrap())
        .iter()
        .map(|r| decode_event(r))
        .collect();
    let steps: Vec<u64> = events
        .iter()
        .filter(|e| !e.scalars.is_empty())
        .map(|e| e.step)
        .collect();
    assert_eq!(steps, vec![1, 2]);
    for f in [
        "reward.svg",
        "reward.png",
        "panels.svg",
        "panels.png",
        "report.html",
        "config.toml",
    ] {
        let len = std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{f} written at the end of the run");
    }
}
