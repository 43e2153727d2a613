//! veRL and TRL datasets, in Parquet and JSONL files the tests write
//! themselves: format detection, dotted paths into nested columns, chat
//! messages as prompts, the system prompt and student template, the
//! "which columns exist" error, and a few training steps on each.

use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use rlsd::actors::Runtime;
use rlsd::config::RunConfig;
use rlsd::data::prompt::student_prompt_ids;
use rlsd::data::{DataConfig, DataFormat, Dataset, Example};
use rlsd::model::{ChatMessage, LoadedModel};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One leaf column of a Parquet file: its values with definition and
/// repetition levels (nested columns need both).
enum Leaf {
    Str(Vec<&'static str>, Vec<i16>, Vec<i16>),
    I64(Vec<i64>, Vec<i16>, Vec<i16>),
}

/// Write one row group with the leaves in schema order.
fn write_parquet(path: &Path, schema: &str, leaves: Vec<Leaf>) {
    let schema = Arc::new(parse_message_type(schema).unwrap());
    let props = Arc::new(WriterProperties::builder().build());
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut leaves = leaves.into_iter();
    while let Some(mut col) = group.next_column().unwrap() {
        match leaves.next().expect("a leaf per column") {
            Leaf::Str(v, d, r) => {
                let v: Vec<ByteArray> = v.into_iter().map(ByteArray::from).collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&v, Some(&d[..]), Some(&r[..]))
                    .unwrap();
            }
            Leaf::I64(v, d, r) => {
                col.typed::<Int64Type>()
                    .write_batch(&v, Some(&d[..]), Some(&r[..]))
                    .unwrap();
            }
        }
        col.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
}

/// veRL's schema as pyarrow writes it (every field optional, prompt a LIST
/// of structs): two rows, the first with a system message of its own.
fn write_verl_parquet(path: &Path) {
    let schema = "message schema {
        OPTIONAL BYTE_ARRAY data_source (UTF8);
        OPTIONAL group prompt (LIST) {
            REPEATED group list {
                OPTIONAL group element {
                    OPTIONAL BYTE_ARRAY content (UTF8);
                    OPTIONAL BYTE_ARRAY role (UTF8);
                }
            }
        }
        OPTIONAL BYTE_ARRAY ability (UTF8);
        OPTIONAL group reward_model {
            OPTIONAL BYTE_ARRAY ground_truth (UTF8);
            OPTIONAL BYTE_ARRAY style (UTF8);
        }
        OPTIONAL group extra_info {
            OPTIONAL INT64 index;
            OPTIONAL BYTE_ARRAY split (UTF8);
        }
    }";
    // Row 1: [system, user]; row 2: [user]. A present leaf inside
    // prompt.list.element sits at definition level 4; a new row starts at
    // repetition level 0, a further message of the same row at 1.
    let (d4, rep) = (vec![4, 4, 4], vec![0, 1, 0]);
    write_parquet(
        path,
        schema,
        vec![
            Leaf::Str(vec!["arith", "arith"], vec![1, 1], vec![0, 0]),
            Leaf::Str(
                vec!["You are terse.", "What is 2+3?", "What is 4+4?"],
                d4.clone(),
                rep.clone(),
            ),
            Leaf::Str(vec!["system", "user", "user"], d4, rep),
            Leaf::Str(vec!["math", "math"], vec![1, 1], vec![0, 0]),
            Leaf::Str(vec!["5", "8"], vec![2, 2], vec![0, 0]),
            Leaf::Str(vec!["rule", "rule"], vec![2, 2], vec![0, 0]),
            Leaf::I64(vec![10, 11], vec![2, 2], vec![0, 0]),
            Leaf::Str(vec!["train", "train"], vec![2, 2], vec![0, 0]),
        ],
    );
}

/// TRL conversational prompt with a `solution` column, as Parquet.
fn write_trl_parquet(path: &Path) {
    let schema = "message schema {
        OPTIONAL group prompt (LIST) {
            REPEATED group list {
                OPTIONAL group element {
                    OPTIONAL BYTE_ARRAY role (UTF8);
                    OPTIONAL BYTE_ARRAY content (UTF8);
                }
            }
        }
        OPTIONAL BYTE_ARRAY solution (UTF8);
    }";
    write_parquet(
        path,
        schema,
        vec![
            Leaf::Str(vec!["user", "user"], vec![4, 4], vec![0, 0]),
            Leaf::Str(vec!["What is 1+6?", "What is 9-2?"], vec![4, 4], vec![0, 0]),
            Leaf::Str(vec!["7", "7"], vec![1, 1], vec![0, 0]),
        ],
    );
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn load(path: &Path, edit: impl FnOnce(&mut DataConfig)) -> rlsd::Result<Vec<Example>> {
    let mut cfg = DataConfig {
        path: Some(path.to_path_buf()),
        shuffle: false,
        ..DataConfig::default()
    };
    edit(&mut cfg);
    Ok(Dataset::from_config(&cfg)?.examples().to_vec())
}

fn ex(id: &str, prompt: &str, answer: &str, context: Vec<ChatMessage>) -> Example {
    Example {
        context,
        ..Example::new(id, prompt, answer, answer)
    }
}

#[test]
fn verl_parquet_is_detected_and_read_through_nested_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("train.parquet");
    write_verl_parquet(&path);
    let got = load(&path, |_| {}).unwrap();
    // The other columns travel with each example (`Example::extra`), nested
    // ones whole, for verifiers and environments.
    let extra = |answer: &str, index: i64| {
        serde_json::from_value(serde_json::json!({
            "data_source": "arith",
            "ability": "math",
            "reward_model": {"ground_truth": answer, "style": "rule"},
            "extra_info": {"index": index, "split": "train"},
        }))
        .unwrap()
    };
    assert_eq!(
        got,
        vec![
            Example {
                extra: extra("5", 10),
                ..ex(
                    "10",
                    "What is 2+3?",
                    "5",
                    vec![ChatMessage::new("system", "You are terse.")]
                )
            },
            Example {
                extra: extra("8", 11),
                ..ex("11", "What is 4+4?", "8", vec![])
            },
        ]
    );
    // Saying `verl` gives the same; saying `plain` looks for `answer` and
    // the error lists the columns the file has.
    assert_eq!(load(&path, |c| c.format = DataFormat::Verl).unwrap(), got);
    let err = load(&path, |c| c.format = DataFormat::Plain)
        .unwrap_err()
        .to_string();
    for needle in [
        "train.parquet:1",
        "column `answer` is required but is missing",
        "reward_model.ground_truth",
        "extra_info.index",
        "data_source",
    ] {
        assert!(err.contains(needle), "{err} lacks {needle}");
    }
}

#[test]
fn trl_standard_and_conversational_jsonl_and_parquet() {
    let tmp = tempfile::tempdir().unwrap();
    let standard = write(
        &tmp.path().join("std.jsonl"),
        "{\"prompt\": \"What is 2+2?\", \"completion\": \"4\"}\n",
    );
    assert_eq!(
        load(&standard, |_| {}).unwrap(),
        vec![ex("std.jsonl:1", "What is 2+2?", "4", vec![])]
    );
    // Conversational: the answer is the last message of `completion`
    // unless a `solution` column is there, which comes first.
    let conv = write(
        &tmp.path().join("conv.jsonl"),
        concat!(
            "{\"prompt\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"What is 3+3?\"}], ",
            "\"completion\": [{\"role\": \"assistant\", \"content\": \"6\"}]}\n",
            "{\"prompt\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"What is \"}, {\"type\": \"text\", \"text\": \"1+1?\"}]}], ",
            "\"completion\": [{\"role\": \"assistant\", \"content\": \"two\"}], \"solution\": \"2\"}\n",
        ),
    );
    let got = load(&conv, |_| {}).unwrap();
    assert_eq!(got[0].prompt, "What is 3+3?");
    assert_eq!(
        got[0].context,
        vec![ChatMessage::new("system", "Be brief.")]
    );
    // The answer column is chosen once per file, from its first row.
    assert_eq!(got[0].answer, "6");
    assert_eq!(got[1].prompt, "What is 1+1?");
    assert_eq!(got[1].answer, "two");
    let with_solution = load(&conv, |c| c.columns.answer = Some("solution".into()));
    let err = with_solution.unwrap_err().to_string();
    assert!(
        err.contains("conv.jsonl:1") && err.contains("`solution`") && err.contains("completion"),
        "{err}"
    );

    let parquet = tmp.path().join("trl.parquet");
    write_trl_parquet(&parquet);
    assert_eq!(
        load(&parquet, |_| {}).unwrap(),
        vec![
            ex("trl.parquet:1", "What is 1+6?", "7", vec![]),
            ex("trl.parquet:2", "What is 9-2?", "7", vec![]),
        ]
    );

    // A prompt list that does not end with the user's turn is refused.
    let bad = write(
        &tmp.path().join("bad.jsonl"),
        "{\"prompt\": [{\"role\": \"assistant\", \"content\": \"hi\"}], \"answer\": \"1\"}\n",
    );
    let err = load(&bad, |_| {}).unwrap_err().to_string();
    assert!(
        err.contains("bad.jsonl:1") && err.contains("user's turn"),
        "{err}"
    );
}

#[test]
fn system_prompt_and_student_template_reach_the_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("train.parquet");
    write_verl_parquet(&path);
    let got = load(&path, |c| {
        c.system_prompt = Some("Add.".into());
        c.student_template = "{prompt}\nAnswer with a number.".into();
    })
    .unwrap();
    // Row 1 keeps its own system message; row 2 gets the configured one.
    assert_eq!(
        got[0].context,
        vec![ChatMessage::new("system", "You are terse.")]
    );
    assert_eq!(got[1].context, vec![ChatMessage::new("system", "Add.")]);
    assert_eq!(got[1].prompt, "What is 4+4?\nAnswer with a number.");

    let model = LoadedModel::load(
        &rlsd::config::builtin_model_dir(),
        tch::Device::Cpu,
        tch::Kind::Float,
    )
    .unwrap();
    let tok = model.tokenizer.as_ref().unwrap();
    let ids = student_prompt_ids(tok, &got[1]).unwrap();
    assert_eq!(
        tok.decode(&ids, false).unwrap(),
        "<|system|>Add.<|user|>What is 4+4?\nAnswer with a number.<|assistant|>"
    );
    let err = load(&path, |c| c.student_template = "no placeholder".into()).unwrap_err();
    assert!(err.to_string().contains("data.student_template"), "{err}");
}

/// Train `steps` steps of GRPO/RLSD on the built-in model over `data`.
fn train_on(data: &Path, algo: &str, extra: &[&str]) -> rlsd::actors::RunReport {
    let out = tempfile::tempdir().unwrap();
    let mut set: Vec<String> = vec![
        format!("algo.algo=\"{algo}\""),
        "runtime.steps=2".into(),
        "runtime.sampler_device=\"cpu\"".into(),
        "runtime.teacher_device=\"cpu\"".into(),
        "runtime.optimizer_device=\"cpu\"".into(),
        format!("runtime.out_dir=\"{}\"", out.path().display()),
        format!("data.path=\"{}\"", data.display()),
        "rollout.batch_prompts=2".into(),
        "rollout.group_size=4".into(),
        "rollout.max_new_tokens=8".into(),
    ];
    set.extend(extra.iter().map(|s| s.to_string()));
    let cfg = RunConfig::load(None, &set).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(Runtime::builder(cfg).run()).unwrap()
}

#[test]
fn verl_and_trl_files_train_a_few_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let verl = tmp.path().join("verl.parquet");
    write_verl_parquet(&verl);
    let report = train_on(
        &verl,
        "rlsd",
        &[
            "data.system_prompt=\"Add.\"",
            "data.student_template=\"{prompt}\\nAnswer with a number.\"",
        ],
    );
    assert!(!report.failed, "{}", report.reason);
    assert_eq!(report.steps.len(), 2);
    let trained: Vec<String> = report
        .trained
        .iter()
        .flat_map(|(_, ids)| ids.clone())
        .collect();
    assert!(
        trained.iter().all(|id| id == "10" || id == "11"),
        "{trained:?}"
    );

    let trl = write(
        &tmp.path().join("trl.jsonl"),
        concat!(
            "{\"prompt\": [{\"role\": \"user\", \"content\": \"What is 2+5?\"}], \"solution\": \"7\"}\n",
            "{\"prompt\": [{\"role\": \"user\", \"content\": \"What is 3+1?\"}], \"solution\": \"4\"}\n",
        ),
    );
    let report = train_on(&trl, "grpo", &[]);
    assert!(!report.failed, "{}", report.reason);
    assert_eq!(report.steps.len(), 2);
    assert!(report.steps.iter().all(|s| s.grad_norm.is_finite()));
}
