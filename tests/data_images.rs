//! Multimodal datasets: the `images` column in JSONL (paths relative to the
//! file), veRL's Parquet (`{bytes, path}` structs or strings, `<image>`
//! placeholders, chat-message prompts) and TRL's vision format (image content
//! parts); the placeholder count, missing and undecodable images as errors
//! naming the file and row. Fixtures (PNG, Parquet) are written here.

use rlsd::data::images::decode_example_images;
use rlsd::data::jsonl::read_jsonl;
use rlsd::data::{Columns, DataConfig, Dataset, Example, ImageSource, OnBadRow};
use rlsd::error::Error;
use std::path::{Path, PathBuf};

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
