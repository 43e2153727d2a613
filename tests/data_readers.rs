//! Dataset readers on good and bad JSONL / Parquet files, stop/skip modes,
//! the empty-dataset error, and the data cursor's save/restore.

use rlsd::data::jsonl::read_jsonl;
use rlsd::data::parquet::read_parquet;
use rlsd::data::{Columns, DataConfig, DataCursor, Dataset, Example, FileType, OnBadRow};
use rlsd::Error;
use std::collections::HashSet;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data")
        .join(name)
}

fn ex(id: &str, prompt: &str, answer: &str, privileged: &str) -> Example {
    Example {
        id: id.into(),
        prompt: prompt.into(),
        answer: answer.into(),
        privileged: privileged.into(),
        context: Vec::new(),
        extra: Default::default(),
        images: Vec::new(),
    }
}

/// (line, message) of a row error.
fn data_err(e: &Error) -> (usize, String) {
    match e {
        Error::Data { line, msg, .. } => (*line, msg.clone()),
        other => panic!("expected Error::Data, got {other:?}"),
    }
}

fn config(name: &str) -> DataConfig {
    DataConfig {
        path: Some(fixture(name)),
        ..DataConfig::default()
    }
}

#[test]
fn jsonl_good_rows() {
    let rows = read_jsonl(&fixture("good.jsonl"), &Columns::default()).unwrap();
    let rows: Vec<Example> = rows.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(
        rows,
        vec![
            ex("q1", "What is 2+3?", "5", "5"),
            ex("7", "Halve 9.", "4.5", "9/2 = 4.5"),
            // no id column: file name and line (line 3 is blank but counted)
            ex(
                "good.jsonl:4",
                "Braces {x} and \\frac{1}{2}",
                "\\frac{1}{2}",
                "\\frac{1}{2}"
            ),
            // CRLF line ending stripped, Unicode kept, other columns kept
            // as JSON in `extra`
            Example {
                extra: [("extra".to_string(), serde_json::json!([1, 2]))].into(),
                ..ex("q4", "Unicode: 5 \u{2212} 2 = ?", "3", "3")
            },
        ]
    );
}

#[test]
fn jsonl_custom_columns() {
    let columns = Columns {
        prompt: "question".into(),
        answer: "solution".into(),
        privileged: "hint".into(),
        id: "uid".into(),
    };
    let rows: Vec<Example> = read_jsonl(&fixture("custom_columns.jsonl"), &columns)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        rows,
        vec![
            ex("a", "1+1?", "2", "one and one"),
            ex("b", "2+2?", "4", "4")
        ]
    );
}

#[test]
fn jsonl_bad_rows_name_their_line() {
    let rows = read_jsonl(&fixture("bad.jsonl"), &Columns::default()).unwrap();
    assert_eq!(rows.len(), 8);
    assert!(rows[0].is_ok() && rows[7].is_ok());
    let expect = [
        (2, "broken JSON"),
        (3, "column `prompt` is required but is missing"),
        (4, "column `prompt`: expected a string, found integer"),
        (5, "invalid UTF-8"),
        (6, "expected a JSON object, found array"),
        (
            7,
            "column `answer`: expected a string or a number, found boolean",
        ),
    ];
    for (row, (line, needle)) in rows[1..7].iter().zip(expect) {
        let err = row.as_ref().unwrap_err();
        let (got_line, msg) = data_err(err);
        assert_eq!(got_line, line, "{msg}");
        assert!(
            msg.contains(needle),
            "line {line}: {msg:?} lacks {needle:?}"
        );
        // The Display form is `file:line: message`.
        assert!(err.to_string().contains(&format!("bad.jsonl:{line}: ")));
    }
}

#[test]
fn stop_mode_fails_at_first_bad_row_and_skip_mode_counts() {
    let err = Dataset::from_config(&config("bad.jsonl")).unwrap_err();
    assert_eq!(data_err(&err).0, 2);

    let cfg = DataConfig {
        on_bad_row: OnBadRow::Skip,
        shuffle: false,
        ..config("bad.jsonl")
    };
    let ds = Dataset::from_config(&cfg).unwrap();
    assert_eq!(ds.skipped_rows(), 6);
    let ids: Vec<&str> = ds.examples().iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["ok1", "ok2"]);
}

#[test]
fn empty_datasets_are_errors() {
    for name in ["empty.jsonl", "empty.parquet"] {
        let err = Dataset::from_config(&config(name)).unwrap_err();
        assert!(err.to_string().contains("no examples"), "{name}: {err}");
    }
    // Every row bad and skipped: also empty.
    let cfg = DataConfig {
        on_bad_row: OnBadRow::Skip,
        ..config("wrong_type.parquet")
    };
    assert!(Dataset::from_config(&cfg).is_err());
    assert!(Dataset::from_examples("none", vec![], 0, true, 1).is_err());
}

#[test]
fn parquet_good_rows_across_row_groups() {
    let rows: Vec<Example> = read_parquet(&fixture("good.parquet"), &Columns::default())
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        rows,
        vec![
            ex("p1", "one", "1", "uno"),
            ex("p2", "two", "2", "2"),
            ex("good.parquet:3", "three", "3", "tres"),
            ex("p4", "four", "4", "4"),
            ex("p5", "five", "5", "cinco"),
        ]
    );
}

#[test]
fn parquet_bad_rows_name_their_row() {
    let rows = read_parquet(&fixture("bad.parquet"), &Columns::default()).unwrap();
    assert_eq!(rows.len(), 5);
    let (line, msg) = data_err(rows[1].as_ref().unwrap_err());
    assert_eq!(line, 2);
    assert!(msg.contains("`prompt` is required but is null"), "{msg}");
    let (line, msg) = data_err(rows[3].as_ref().unwrap_err());
    assert_eq!(line, 4);
    assert!(msg.contains("`answer`: invalid UTF-8"), "{msg}");
    for i in [0, 2, 4] {
        assert!(rows[i].is_ok());
    }
    assert_eq!(rows[4].as_ref().unwrap().answer, "5");

    let rows = read_parquet(&fixture("wrong_type.parquet"), &Columns::default()).unwrap();
    let (line, msg) = data_err(rows[1].as_ref().unwrap_err());
    assert_eq!(line, 2);
    assert!(msg.contains("expected a string, found integer"), "{msg}");
}

#[test]
fn parquet_invalid_utf8_in_a_string_column() {
    let rows = read_parquet(&fixture("bad_utf8.parquet"), &Columns::default()).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].as_ref().unwrap().prompt, "okay");
    let (line, msg) = data_err(rows[1].as_ref().unwrap_err());
    assert_eq!(
        (line, msg.as_str()),
        (2, "invalid UTF-8 in a string column")
    );
    // The rest of that row group cannot be decoded after the error; it is
    // reported row by row (so skip mode counts it) rather than dropped.
    let (line, msg) = data_err(rows[2].as_ref().unwrap_err());
    assert_eq!(line, 3);
    assert!(msg.contains("after the error at row 2"), "{msg}");
}

#[test]
fn format_from_extension_or_config() {
    let mut cfg = config("good.parquet");
    cfg.shuffle = false;
    assert_eq!(Dataset::from_config(&cfg).unwrap().len(), 5);
    // Forcing the wrong reader gives a row error, not a panic.
    cfg.file_type = FileType::Jsonl;
    assert!(Dataset::from_config(&cfg).is_err());
    let mut cfg = config("good.jsonl");
    cfg.path = Some(fixture("make_fixtures.py"));
    let err = Dataset::from_config(&cfg).unwrap_err();
    assert!(err.to_string().contains("data.file_type"), "{err}");
    let mut cfg = config("missing.jsonl");
    cfg.file_type = FileType::Jsonl;
    assert!(matches!(Dataset::from_config(&cfg), Err(Error::Io { .. })));
}

fn numbered(n: usize) -> Vec<Example> {
    (0..n)
        .map(|i| ex(&i.to_string(), &format!("p{i}"), "a", "a"))
        .collect()
}

fn ids(batch: &[Example]) -> Vec<usize> {
    batch.iter().map(|e| e.id.parse().unwrap()).collect()
}

#[test]
fn epochs_are_permutations_that_differ_and_end() {
    let mut ds = Dataset::from_examples("t", numbered(10), 42, true, 3).unwrap();
    let mut epochs = Vec::new();
    for _ in 0..3 {
        let batch = ids(&ds.next_batch(10));
        let set: HashSet<usize> = batch.iter().copied().collect();
        assert_eq!(set.len(), 10, "an epoch visits every example once");
        epochs.push(batch);
    }
    assert_ne!(epochs[0], epochs[1]);
    assert_ne!(epochs[0], (0..10).collect::<Vec<_>>());
    assert!(ds.is_exhausted());
    assert!(ds.next_batch(4).is_empty());

    // Same seed, same order; other seed, other order.
    let mut again = Dataset::from_examples("t", numbered(10), 42, true, 3).unwrap();
    assert_eq!(ids(&again.next_batch(10)), epochs[0]);
    let mut other = Dataset::from_examples("t", numbered(10), 43, true, 3).unwrap();
    assert_ne!(ids(&other.next_batch(10)), epochs[0]);

    // No shuffle: file order; batches cross epochs; last batch is short.
    let mut plain = Dataset::from_examples("t", numbered(4), 0, false, 2).unwrap();
    assert_eq!(ids(&plain.next_batch(3)), [0, 1, 2]);
    assert_eq!(ids(&plain.next_batch(3)), [3, 0, 1]);
    assert_eq!(ids(&plain.next_batch(3)), [2, 3]);
    assert!(plain.next_batch(3).is_empty());
}

#[test]
fn cursor_save_and_restore_continues_with_the_next_unseen_prompt() {
    // Uninterrupted run: 5 batches of 3 over 7 examples, unlimited epochs.
    let mut full = Dataset::from_examples("t", numbered(7), 9, true, 0).unwrap();
    let reference: Vec<Vec<usize>> = (0..5).map(|_| ids(&full.next_batch(3))).collect();

    // Interrupted after 2 batches; the cursor goes through JSON (as in a checkpoint).
    let mut first = Dataset::from_examples("t", numbered(7), 9, true, 0).unwrap();
    let mut got: Vec<Vec<usize>> = (0..2).map(|_| ids(&first.next_batch(3))).collect();
    let saved = serde_json::to_string(first.cursor()).unwrap();
    let cursor: DataCursor = serde_json::from_str(&saved).unwrap();
    assert_eq!(cursor.epoch, 0);
    assert_eq!(cursor.position, 6);
    assert_eq!(cursor.consumed(), 6);

    let mut resumed = Dataset::from_examples("t", numbered(7), 9, true, 0).unwrap();
    resumed.restore(cursor.clone()).unwrap();
    got.extend((0..3).map(|_| ids(&resumed.next_batch(3))));
    assert_eq!(got, reference);

    // A cursor from a dataset of another size is refused.
    let mut smaller = Dataset::from_examples("t", numbered(6), 9, true, 0).unwrap();
    assert!(smaller.restore(cursor.clone()).is_err());
    let mut bad = cursor;
    bad.position = 7;
    assert!(resumed.restore(bad).is_err());
}

#[test]
fn data_config_defaults_and_unknown_keys() {
    let cfg: DataConfig = toml::from_str("").unwrap();
    assert_eq!(cfg, DataConfig::default());
    let cfg: DataConfig = toml::from_str(
        "path = \"x.parquet\"\non_bad_row = \"skip\"\nepochs = 2\n[columns]\nprompt = \"question\"\n",
    )
    .unwrap();
    assert_eq!(cfg.on_bad_row, OnBadRow::Skip);
    assert_eq!(cfg.columns.prompt.as_deref(), Some("question"));
    assert_eq!(cfg.columns.answer, None);
    let err = toml::from_str::<DataConfig>("shufle = true").unwrap_err();
    assert!(err.to_string().contains("shufle"), "{err}");
    let err = toml::from_str::<DataConfig>("on_bad_row = \"ignore\"").unwrap_err();
    assert!(err.to_string().contains("ignore"), "{err}");
}

#[test]
fn built_in_task_is_the_default_dataset() {
    let cfg = DataConfig::default();
    let mut ds = Dataset::from_config(&cfg).unwrap();
    assert_eq!(ds.len(), cfg.task.num_examples);
    let batch = ds.next_batch(4);
    assert_eq!(batch.len(), 4);
    assert!(batch[0].prompt.starts_with("What is "));
}
