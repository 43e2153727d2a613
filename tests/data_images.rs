//! Multimodal datasets: the `images` column in JSONL (paths relative to the
//! file), veRL's Parquet (`{bytes, path}` structs or strings, `<image>`
//! placeholders, chat-message prompts) and TRL's vision format (image content
//! parts); the placeholder count, missing and undecodable images as errors
//! naming the file and row. Fixtures (PNG, Parquet) are written here.

use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use rlsd::data::images::decode_example_images;
use rlsd::data::jsonl::read_jsonl;
use rlsd::data::parquet::read_parquet;
use rlsd::data::{Columns, DataConfig, Dataset, Example, ImageSource, OnBadRow};
use rlsd::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A small PNG whose pixels depend on `seed`.
fn png(width: u32, height: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([seed, (x * 7) as u8, (y * 13) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A folder with `a.png` (4x3), `sub/b.png` (5x2), a text file named
/// `fake.png` and a PNG cut after its header (`cut.png`).
fn image_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.png"), png(4, 3, 1)).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/b.png"), png(5, 2, 2)).unwrap();
    std::fs::write(dir.path().join("fake.png"), b"not an image at all").unwrap();
    std::fs::write(dir.path().join("cut.png"), cut_png()).unwrap();
    dir
}

/// A PNG whose header reads (8x8) but whose pixel data is cut off.
fn cut_png() -> Vec<u8> {
    let full = png(8, 8, 3);
    // Signature (8) + IHDR chunk (25) + the start of the IDAT chunk.
    full[..33 + 12].to_vec()
}

fn write_jsonl(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

/// The file, row and message of a row error.
fn data_err(e: &Error) -> (PathBuf, usize, String) {
    match e {
        Error::Data { path, line, msg } => (path.clone(), *line, msg.clone()),
        other => panic!("expected a data error, got {other}"),
    }
}

fn read_ok(path: &Path) -> Vec<Example> {
    read_jsonl(path, &Columns::default())
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn jsonl_image_paths_resolve_against_the_dataset_folder() {
    let dir = image_folder();
    let data = write_jsonl(
        dir.path(),
        "data.jsonl",
        &[
            r#"{"prompt": "<image>What is shown?", "answer": "1", "images": ["a.png"]}"#,
            r#"{"prompt": "Compare <image> with <image>.", "answer": "2", "images": ["a.png", "sub/b.png"], "source": "x"}"#,
            r#"{"prompt": "<image> One path as a string.", "answer": "3", "images": "sub/b.png"}"#,
            r#"{"prompt": "Text only.", "answer": "4"}"#,
            r#"{"prompt": "Null images.", "answer": "5", "images": null}"#,
        ],
    );
    let abs = dir.path().join("a.png");
    let line6 = format!(
        r#"{{"prompt": "<image> absolute", "answer": "6", "images": ["file://{}"]}}"#,
        abs.display()
    );
    let mut text = std::fs::read_to_string(&data).unwrap();
    text.push('\n');
    text.push_str(&line6);
    std::fs::write(&data, text).unwrap();

    let rows = read_ok(&data);
    let a = ImageSource::Path(dir.path().join("a.png"));
    let b = ImageSource::Path(dir.path().join("sub/b.png"));
    assert_eq!(rows[0].images, vec![a.clone()]);
    assert_eq!(rows[0].prompt, "<image>What is shown?");
    assert_eq!(rows[1].images, vec![a.clone(), b.clone()]);
    assert_eq!(rows[2].images, vec![b]);
    assert!(rows[3].images.is_empty());
    assert!(rows[4].images.is_empty());
    assert_eq!(rows[5].images, vec![a]);
    // The images column is not an extra column; the others still are.
    assert!(rows[1].extra("images").is_none());
    assert_eq!(rows[1].extra("source"), Some(&serde_json::json!("x")));
    // Decoding gives the pixels the files hold.
    let decoded = decode_example_images(&rows[1]).unwrap();
    assert_eq!(
        decoded
            .iter()
            .map(|i| (i.width, i.height))
            .collect::<Vec<_>>(),
        vec![(4, 3), (5, 2)]
    );
    assert_eq!(&decoded[0].pixels[..6], &[1, 0, 0, 1, 7, 0]);
}

#[test]
fn placeholders_must_match_the_images() {
    let dir = image_folder();
    let data = write_jsonl(
        dir.path(),
        "data.jsonl",
        &[
            r#"{"prompt": "no placeholder", "answer": "1", "images": ["a.png"]}"#,
            r#"{"prompt": "<image> and <image>", "answer": "2", "images": ["a.png"]}"#,
            r#"{"prompt": "<image> without images", "answer": "3"}"#,
        ],
    );
    let rows = read_jsonl(&data, &Columns::default()).unwrap();
    let expect = [
        (1, "0 <image> placeholders but the row has 1 image"),
        (2, "2 <image> placeholders but the row has 1 image"),
        (3, "1 <image> placeholder but the row has 0 images"),
    ];
    for (row, (line, words)) in rows.iter().zip(expect) {
        let (path, got_line, msg) = data_err(row.as_ref().unwrap_err());
        assert_eq!((path.as_path(), got_line), (data.as_path(), line));
        assert!(msg.contains(words), "{msg}");
    }
    // The whole error names the file and the row.
    let shown = rows[1].as_ref().unwrap_err().to_string();
    assert!(
        shown.starts_with(&format!("{}:2: ", data.display())),
        "{shown}"
    );
}

#[test]
fn missing_and_undecodable_images_name_file_row_and_image() {
    let dir = image_folder();
    let data = write_jsonl(
        dir.path(),
        "data.jsonl",
        &[
            r#"{"prompt": "<image>", "answer": "1", "images": ["a.png"]}"#,
            r#"{"prompt": "<image>", "answer": "1", "images": ["gone.png"]}"#,
            r#"{"prompt": "<image>", "answer": "1", "images": ["fake.png"]}"#,
            r#"{"prompt": "<image>", "answer": "1", "images": [3]}"#,
            r#"{"prompt": "<image>", "answer": "1", "images": ["https://example.com/x.png"]}"#,
            r#"{"prompt": "<image>", "answer": "1", "images": ["cut.png"]}"#,
        ],
    );
    let rows = read_jsonl(&data, &Columns::default()).unwrap();
    assert!(rows[0].is_ok());
    let err = |i: usize| data_err(rows[i].as_ref().unwrap_err());
    let (path, line, msg) = err(1);
    assert_eq!((path.as_path(), line), (data.as_path(), 2));
    let gone = dir.path().join("gone.png");
    assert!(msg.contains(&format!("`{}`", gone.display())), "{msg}");
    assert!(msg.contains("file not found"), "{msg}");
    let (_, line, msg) = err(2);
    assert_eq!(line, 3);
    assert!(msg.contains("fake.png"), "{msg}");
    assert!(msg.contains("not a PNG, JPEG or WebP"), "{msg}");
    let (_, line, msg) = err(3);
    assert_eq!(line, 4);
    assert!(msg.contains("column `images`, image 0"), "{msg}");
    assert!(msg.contains("found integer"), "{msg}");
    let (_, _, msg) = err(4);
    assert!(
        msg.contains("URLs and inline data are not supported"),
        "{msg}"
    );
    // A PNG whose header reads passes the load-time check; decoding it fails
    // with an error naming the example (here file:row) and the image.
    let cut = rows[5].as_ref().unwrap();
    let e = decode_example_images(cut).unwrap_err().to_string();
    assert!(e.contains("cut.png"), "{e}");
    assert!(e.contains("example `data.jsonl:6`, image 0"), "{e}");
}

#[test]
fn dataset_from_config_reads_images_and_can_skip_bad_rows() {
    let dir = image_folder();
    let data = write_jsonl(
        dir.path(),
        "data.jsonl",
        &[
            r#"{"prompt": "<image>1?", "answer": "1", "pics": ["a.png"]}"#,
            r#"{"prompt": "<image>2?", "answer": "2", "pics": ["gone.png"]}"#,
            r#"{"prompt": "<image>3?", "answer": "3", "pics": ["sub/b.png"]}"#,
        ],
    );
    let mut cfg = DataConfig {
        path: Some(data.clone()),
        shuffle: false,
        student_template: "{prompt} Answer briefly.".into(),
        ..DataConfig::default()
    };
    cfg.columns.images = Some("pics".into());
    let err = Dataset::from_config(&cfg).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:2: ", data.display())), "{err}");
    cfg.on_bad_row = OnBadRow::Skip;
    let ds = Dataset::from_config(&cfg).unwrap();
    assert_eq!((ds.len(), ds.skipped_rows()), (2, 1));
    let ex = &ds.examples()[1];
    assert_eq!(ex.prompt, "<image>3? Answer briefly.");
    assert_eq!(
        ex.images,
        vec![ImageSource::Path(dir.path().join("sub/b.png"))]
    );
}

/// One byte-array leaf column of a Parquet file: its non-null values with
/// the definition and repetition levels of every slot.
struct Leaf(Vec<Vec<u8>>, Vec<i16>, Vec<i16>);

fn text(values: &[&str], def: &[i16], rep: &[i16]) -> Leaf {
    Leaf(
        values.iter().map(|v| v.as_bytes().to_vec()).collect(),
        def.to_vec(),
        rep.to_vec(),
    )
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
        let Leaf(values, def, rep) = leaves.next().expect("a leaf per column");
        let values: Vec<ByteArray> = values.into_iter().map(ByteArray::from).collect();
        col.typed::<ByteArrayType>()
            .write_batch(&values, Some(&def[..]), Some(&rep[..]))
            .unwrap();
        col.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
}

/// veRL's multimodal schema as pyarrow writes a Hugging Face dataset with
/// an `Image` sequence: `images` a list of `{bytes, path}` structs.
const VERL_SCHEMA: &str = "message schema {
    OPTIONAL BYTE_ARRAY data_source (UTF8);
    OPTIONAL group prompt (LIST) {
        REPEATED group list {
            OPTIONAL group element {
                OPTIONAL BYTE_ARRAY content (UTF8);
                OPTIONAL BYTE_ARRAY role (UTF8);
            }
        }
    }
    OPTIONAL group images (LIST) {
        REPEATED group list {
            OPTIONAL group element {
                OPTIONAL BYTE_ARRAY bytes;
                OPTIONAL BYTE_ARRAY path (UTF8);
            }
        }
    }
    OPTIONAL group reward_model {
        OPTIONAL BYTE_ARRAY ground_truth (UTF8);
    }
}";

/// Three veRL rows: one image as bytes (its `path` only a name), a system
/// turn and two images (a relative path, then bytes), and no image.
fn write_verl_parquet(path: &Path, first: Vec<u8>, second: Vec<u8>) {
    write_parquet(
        path,
        VERL_SCHEMA,
        vec![
            text(&["geo3k"; 3], &[1, 1, 1], &[0, 0, 0]),
            text(
                &[
                    "<image>Find x.",
                    "Be brief.",
                    "Compare <image> and <image>.",
                    "No image.",
                ],
                &[4, 4, 4, 4],
                &[0, 0, 1, 0],
            ),
            text(
                &["user", "system", "user", "user"],
                &[4, 4, 4, 4],
                &[0, 0, 1, 0],
            ),
            // bytes: row 1 [B1]; row 2 [null, B2]; row 3 [] (empty list).
            Leaf(vec![first, second], vec![4, 3, 4, 1], vec![0, 0, 1, 0]),
            // path: row 1 ["not-here.png"]; row 2 ["a.png", null]; row 3 [].
            text(&["not-here.png", "a.png"], &[4, 4, 3, 1], &[0, 0, 1, 0]),
            text(&["3", "4", "5"], &[2, 2, 2], &[0, 0, 0]),
        ],
    );
}

#[test]
fn verl_parquet_with_image_structs() {
    let dir = image_folder();
    let data = dir.path().join("train.parquet");
    let (b1, b2) = (png(6, 4, 9), png(3, 3, 8));
    write_verl_parquet(&data, b1.clone(), b2.clone());
    let cfg = DataConfig {
        path: Some(data.clone()),
        shuffle: false,
        ..DataConfig::default()
    };
    let ds = Dataset::from_config(&cfg).unwrap();
    let rows = ds.examples();
    assert_eq!(rows.len(), 3);
    // Bytes win over the struct's path (a file name the bytes came from).
    assert_eq!(rows[0].images, vec![ImageSource::Bytes(b1)]);
    assert_eq!(
        (rows[0].prompt.as_str(), rows[0].answer.as_str()),
        ("<image>Find x.", "3")
    );
    assert_eq!(
        rows[1].images,
        vec![
            ImageSource::Path(dir.path().join("a.png")),
            ImageSource::Bytes(b2)
        ]
    );
    assert_eq!(rows[1].prompt, "Compare <image> and <image>.");
    assert_eq!(rows[1].context.len(), 1);
    assert!(rows[2].images.is_empty());
    assert!(rows[1].extra("images").is_none());
    let decoded = decode_example_images(&rows[1]).unwrap();
    assert_eq!((decoded[1].width, decoded[1].height), (3, 3));
    assert_eq!(&decoded[1].pixels[..3], &[8, 0, 0]);
}

#[test]
fn verl_parquet_bad_bytes_name_file_and_row() {
    let dir = image_folder();
    let data = dir.path().join("bad.parquet");
    write_verl_parquet(&data, png(2, 2, 1), b"\xff\x00 garbage".to_vec());
    let rows = read_parquet(
        &data,
        &Columns {
            answer: "reward_model.ground_truth".into(),
            ..Columns::default()
        },
    )
    .unwrap();
    assert!(rows[0].is_ok());
    let (path, line, msg) = data_err(rows[1].as_ref().unwrap_err());
    assert_eq!((path.as_path(), line), (data.as_path(), 2));
    assert!(msg.contains("image 1 (10 bytes)"), "{msg}");
    assert!(msg.contains("not a PNG, JPEG or WebP"), "{msg}");
}

#[test]
fn parquet_images_as_path_strings() {
    let dir = image_folder();
    let data = dir.path().join("paths.parquet");
    let schema = "message schema {
        OPTIONAL BYTE_ARRAY prompt (UTF8);
        OPTIONAL BYTE_ARRAY answer (UTF8);
        OPTIONAL group images (LIST) {
            REPEATED group list {
                OPTIONAL BYTE_ARRAY element (UTF8);
            }
        }
    }";
    write_parquet(
        &data,
        schema,
        vec![
            text(
                &["<image><image> Same?", "<image> Too few"],
                &[1, 1],
                &[0, 0],
            ),
            text(&["yes", "no"], &[1, 1], &[0, 0]),
            text(&["a.png", "sub/b.png"], &[3, 3, 1], &[0, 1, 0]),
        ],
    );
    let rows = read_parquet(&data, &Columns::default()).unwrap();
    assert_eq!(
        rows[0].as_ref().unwrap().images,
        vec![
            ImageSource::Path(dir.path().join("a.png")),
            ImageSource::Path(dir.path().join("sub/b.png"))
        ]
    );
    let (_, line, msg) = data_err(rows[1].as_ref().unwrap_err());
    assert_eq!(line, 2);
    assert!(
        msg.contains("1 <image> placeholder but the row has 0 images"),
        "{msg}"
    );
}

#[test]
fn trl_parquet_image_content_parts() {
    let dir = image_folder();
    let data = dir.path().join("trl.parquet");
    // TRL's vision prompt: content parts `{type, text}` (text null for the
    // image part), an `images` column, the answer in `solution`.
    let schema = "message schema {
        OPTIONAL group prompt (LIST) {
            REPEATED group list {
                OPTIONAL group element {
                    OPTIONAL group content (LIST) {
                        REPEATED group list {
                            OPTIONAL group element {
                                OPTIONAL BYTE_ARRAY text (UTF8);
                                OPTIONAL BYTE_ARRAY type (UTF8);
                            }
                        }
                    }
                    OPTIONAL BYTE_ARRAY role (UTF8);
                }
            }
        }
        OPTIONAL group images (LIST) {
            REPEATED group list {
                OPTIONAL group element {
                    OPTIONAL BYTE_ARRAY bytes;
                    OPTIONAL BYTE_ARRAY path (UTF8);
                }
            }
        }
        OPTIONAL BYTE_ARRAY solution (UTF8);
    }";
    let b = png(4, 4, 5);
    write_parquet(
        &data,
        schema,
        vec![
            // Row 1: [image, text]; row 2: [text, image, text, image].
            text(
                &["What is drawn?", "Left ", " right "],
                &[6, 7, 7, 6, 7, 6],
                &[0, 2, 0, 2, 2, 2],
            ),
            text(
                &["image", "text", "text", "image", "text", "image"],
                &[7; 6],
                &[0, 2, 0, 2, 2, 2],
            ),
            text(&["user", "user"], &[4, 4], &[0, 0]),
            Leaf(
                vec![b.clone(), b.clone(), b.clone()],
                vec![4, 4, 4],
                vec![0, 0, 1],
            ),
            text(&[], &[3, 3, 3], &[0, 0, 1]),
            text(&["a square", "two"], &[1, 1], &[0, 0]),
        ],
    );
    let cfg = DataConfig {
        path: Some(data.clone()),
        shuffle: false,
        ..DataConfig::default()
    };
    let ds = Dataset::from_config(&cfg).unwrap();
    let rows = ds.examples();
    assert_eq!(rows[0].prompt, "<image>What is drawn?");
    assert_eq!(rows[0].answer, "a square");
    assert_eq!(rows[0].images, vec![ImageSource::Bytes(b.clone())]);
    assert_eq!(rows[1].prompt, "Left <image> right <image>");
    assert_eq!(rows[1].images.len(), 2);
}

#[test]
fn trl_jsonl_conversations_and_the_single_image_column() {
    let dir = image_folder();
    let data = write_jsonl(
        dir.path(),
        "trl.jsonl",
        &[
            r#"{"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Count the dots."}]}], "image": "a.png", "solution": "7"}"#,
            r#"{"prompt": [{"role": "user", "content": [{"type": "text", "text": "No picture."}]}], "image": null, "solution": "1"}"#,
        ],
    );
    let cfg = DataConfig {
        path: Some(data),
        shuffle: false,
        ..DataConfig::default()
    };
    let ds = Dataset::from_config(&cfg).unwrap();
    let rows = ds.examples();
    assert_eq!(rows[0].prompt, "<image>Count the dots.");
    assert_eq!(
        rows[0].images,
        vec![ImageSource::Path(dir.path().join("a.png"))]
    );
    assert!(rows[1].images.is_empty());

    // A whole conversation (`messages`): the prompt up to the last user
    // turn, the answer from the assistant's text part.
    let conv = write_jsonl(
        dir.path(),
        "conv.jsonl",
        &[
            r#"{"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}, {"role": "assistant", "content": [{"type": "text", "text": "4"}]}], "images": ["sub/b.png"]}"#,
            r#"{"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Earlier"}]}, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "Now?"}, {"role": "assistant", "content": "5"}], "images": ["a.png"]}"#,
            r#"{"messages": [{"role": "user", "content": [{"type": "video"}]}, {"role": "assistant", "content": "x"}]}"#,
        ],
    );
    let rows = read_jsonl(
        &conv,
        &Columns {
            prompt: "messages".into(),
            answer: "messages".into(),
            ..Columns::default()
        },
    )
    .unwrap();
    let first = rows[0].as_ref().unwrap();
    assert_eq!(
        (first.prompt.as_str(), first.answer.as_str()),
        ("<image>Q?", "4")
    );
    // An image in an earlier turn is refused by name.
    let (_, line, msg) = data_err(rows[1].as_ref().unwrap_err());
    assert_eq!(line, 2);
    assert!(
        msg.contains("chat turn 0 (role `user`) holds an image"),
        "{msg}"
    );
    let (_, _, msg) = data_err(rows[2].as_ref().unwrap_err());
    assert!(
        msg.contains("video content parts are not supported"),
        "{msg}"
    );
}
