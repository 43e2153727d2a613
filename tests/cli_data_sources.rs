//! Dataset sources through the real binary (`rlsd eval`, whose JSON report
//! names every prompt and gold answer it read): a TRL `messages` column is
//! read as a conversation, and a Hugging Face dataset id as `data.path`
//! resolves its Parquet files through a Hub cache folder laid out as
//! `huggingface_hub` writes it (offline), with clear errors naming the id.

mod common;
#[path = "common/timed.rs"]
mod timed;

use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// `rlsd eval` of up to 10 prompts of `data.path = data` (plus `sets`) with
/// the tiny model, under the environment `env`.
fn eval(model: &Path, out: &Path, data: &str, sets: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlsd"));
    cmd.args(["eval", "--model", model.to_str().unwrap()])
        .args(["--n", "10", "--max-new-tokens", "2"])
        .args(["--out", out.to_str().unwrap()])
        .args(["--set", &format!("data.path={data}")])
        .env("NO_COLOR", "1")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_ENDPOINT");
    for s in sets {
        cmd.args(["--set", s]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    timed::output_within(&mut cmd, Duration::from_secs(300))
}

/// The (prompt, answer) pairs of a successful eval's report.
fn read_pairs(o: &Output, report: &Path) -> Vec<(String, String)> {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["prompt"].as_str().unwrap().to_string(),
                r["answer"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A failed run's stderr.
fn failure(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "should fail:\n{err}");
    err
}

/// A Parquet file with string columns `prompt` and `answer`.
fn write_parquet(path: &Path, rows: &[(&str, &str)]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let schema = "message schema {
        REQUIRED BYTE_ARRAY prompt (UTF8);
        REQUIRED BYTE_ARRAY answer (UTF8);
    }";
    let schema = Arc::new(parse_message_type(schema).unwrap());
    let props = Arc::new(WriterProperties::builder().build());
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut column = 0;
    while let Some(mut col) = group.next_column().unwrap() {
        let values: Vec<ByteArray> = rows
            .iter()
            .map(|r| ByteArray::from(if column == 0 { r.0 } else { r.1 }))
            .collect();
        col.typed::<ByteArrayType>()
            .write_batch(&values, None, None)
            .unwrap();
        col.close().unwrap();
        column += 1;
    }
    group.close().unwrap();
    writer.close().unwrap();
}

#[test]
fn a_trl_messages_column_is_a_conversation() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    common::pretrain_tiny(&model);
    let report = tmp.path().join("eval.json");
    let msg =
        |role: &str, content: &str| format!("{{\"role\": \"{role}\", \"content\": \"{content}\"}}");
    // The prompt ends at the last user turn; the answer is the last
    // assistant message after it.
    let conv = tmp.path().join("conv.jsonl");
    std::fs::write(
        &conv,
        format!(
            "{{\"messages\": [{}, {}, {}]}}\n{{\"messages\": [{}, {}, {}, {}]}}\n",
            msg("system", "Be brief."),
            msg("user", "1+1"),
            msg("assistant", "Answer: 2"),
            msg("user", "2+2"),
            msg("assistant", "Answer: 4"),
            msg("user", "4+4"),
            msg("assistant", "Answer: 8"),
        ),
    )
    .unwrap();
    let o = eval(&model, &report, conv.to_str().unwrap(), &[], &[]);
    assert_eq!(
        read_pairs(&o, &report),
        [
            ("1+1".into(), "Answer: 2".into()),
            ("4+4".into(), "Answer: 8".into())
        ]
    );
    // An answer column, when the file has one, is the answer.
    let with_answer = tmp.path().join("answer.jsonl");
    std::fs::write(
        &with_answer,
        format!(
            "{{\"messages\": [{}, {}], \"answer\": \"2\"}}\n",
            msg("user", "1+1"),
            msg("assistant", "two")
        ),
    )
    .unwrap();
    let o = eval(&model, &report, with_answer.to_str().unwrap(), &[], &[]);
    assert_eq!(read_pairs(&o, &report), [("1+1".into(), "2".into())]);
    // A conversation with no assistant turn after its last user turn has
    // no answer: an error naming the file and line.
    let open = tmp.path().join("open.jsonl");
    std::fs::write(
        &open,
        format!(
            "{{\"messages\": [{}, {}]}}\n{{\"messages\": [{}]}}\n",
            msg("user", "1+1"),
            msg("assistant", "2"),
            msg("user", "3+3")
        ),
    )
    .unwrap();
    let err = failure(&eval(&model, &report, open.to_str().unwrap(), &[], &[]));
    assert!(
        err.contains("open.jsonl:2") && err.contains("no assistant message"),
        "{err}"
    );
}

#[test]
fn a_hub_dataset_id_reads_its_parquet_files_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    common::pretrain_tiny(&model);
    let report = tmp.path().join("eval.json");
    let cache = tmp.path().join("hub");
    let repo = cache.join("datasets--Org--Tiny-Math");
    let snap = repo.join("snapshots").join(COMMIT);
    write_parquet(
        &snap.join("main/train-00000-of-00002.parquet"),
        &[("1+1", "2"), ("2+3", "5")],
    );
    write_parquet(
        &snap.join("main/train-00001-of-00002.parquet"),
        &[("4+4", "8")],
    );
    write_parquet(
        &snap.join("main/test-00000-of-00001.parquet"),
        &[("9-1", "8")],
    );
    write_parquet(
        &snap.join("other/train-00000-of-00001.parquet"),
        &[("7+0", "7")],
    );
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), format!("{COMMIT}\n")).unwrap();
    let cache_s = cache.to_str().unwrap();
    let offline = [("HF_HUB_CACHE", cache_s), ("HF_HUB_OFFLINE", "1")];

    // Subset and split pick the files; shards are read in order.
    let o = eval(
        &model,
        &report,
        "Org/Tiny-Math",
        &["data.subset=main"],
        &offline,
    );
    assert_eq!(
        read_pairs(&o, &report),
        [
            ("1+1".into(), "2".into()),
            ("2+3".into(), "5".into()),
            ("4+4".into(), "8".into())
        ]
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("Org/Tiny-Math"), "{stdout}");
    let sets = ["data.subset=main", "data.split=test"];
    let o = eval(&model, &report, "Org/Tiny-Math", &sets, &offline);
    assert_eq!(read_pairs(&o, &report), [("9-1".into(), "8".into())]);
    let o = eval(
        &model,
        &report,
        "Org/Tiny-Math",
        &["data.subset=other"],
        &offline,
    );
    assert_eq!(read_pairs(&o, &report), [("7+0".into(), "7".into())]);
    // A commit hash as the revision names the snapshot itself.
    let rev = format!("data.revision={COMMIT}");
    let sets = ["data.subset=other", rev.as_str()];
    let o = eval(&model, &report, "Org/Tiny-Math", &sets, &offline);
    assert_eq!(read_pairs(&o, &report).len(), 1);

    // Errors name the id: two subsets and none chosen, a missing split,
    // an id not in the cache (offline), and one the network cannot reach.
    let err = failure(&eval(&model, &report, "Org/Tiny-Math", &[], &offline));
    assert!(
        err.contains("Org/Tiny-Math") && err.contains("main, other") && err.contains("data.subset"),
        "{err}"
    );
    let sets = ["data.subset=main", "data.split=validation"];
    let err = failure(&eval(&model, &report, "Org/Tiny-Math", &sets, &offline));
    assert!(
        err.contains("Org/Tiny-Math") && err.contains("`validation`"),
        "{err}"
    );
    let err = failure(&eval(&model, &report, "Org/Missing", &[], &offline));
    assert!(
        err.contains("Org/Missing")
            && err.contains("datasets--Org--Missing")
            && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    let unreachable = [
        ("HF_HUB_CACHE", cache_s),
        ("HF_ENDPOINT", "http://127.0.0.1:9"),
    ];
    let err = failure(&eval(&model, &report, "Org/Missing", &[], &unreachable));
    assert!(
        err.contains("Org/Missing") && err.contains("network"),
        "{err}"
    );
}
