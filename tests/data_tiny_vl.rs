//! `assets/tiny-arith-vl/`: the configuration of a tiny Qwen2.5-VL model for
//! the built-in vision-language task (no weights yet; docs/DATA.md says what
//! pretraining it would take). Its files resolve through the project's own
//! loaders, its tokenizer is the character tokenizer with Qwen's vision
//! tokens, and its processor keeps the task's pictures at their drawn size.
//!
//! `RLSD_WRITE_TINY_VL=1 cargo test --test data_tiny_vl` rewrites the
//! committed tokenizer files from `data::char_tokenizer_vl`.

use rlsd::data::char_tokenizer::{self, write_char_tokenizer};
use rlsd::data::char_tokenizer_vl::{
    self, write_char_tokenizer_vl, IMAGE_PAD_ID, VIDEO_PAD_ID, VISION_END_ID, VISION_START_ID,
};
use rlsd::data::task::{ArithmeticTask, TaskConfig};
use rlsd::data::task_image::IMAGE_STRIDE;
use rlsd::data::{ImageSource, TaskImage};
use rlsd::model::vision::decode::decode_rgb;
use rlsd::model::vision::{image_token_count, ImageProcessor, VlConfig};
use rlsd::model::{ChatMessage, Tokenizer};
use std::path::{Path, PathBuf};

fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tiny-arith-vl")
}

#[test]
fn committed_tokenizer_files_are_what_the_writer_writes() {
    if std::env::var_os("RLSD_WRITE_TINY_VL").is_some() {
        write_char_tokenizer_vl(&folder()).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    write_char_tokenizer_vl(dir.path()).unwrap();
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert_eq!(
            std::fs::read_to_string(dir.path().join(name)).unwrap(),
            std::fs::read_to_string(folder().join(name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn config_and_tokenizer_agree() {
    let cfg = VlConfig::from_file(&folder().join("config.json")).unwrap();
    assert_eq!(
        cfg.text.vocab_size as usize,
        char_tokenizer_vl::vocab_size()
    );
    assert_eq!(cfg.text.vocab_size, 106);
    assert_eq!(cfg.image_token_id, IMAGE_PAD_ID);
    assert_eq!(cfg.video_token_id, VIDEO_PAD_ID);
    assert_eq!(cfg.vision_start_token_id, VISION_START_ID);
    assert_eq!(cfg.vision.out_hidden_size, cfg.text.hidden_size);

    let tok = Tokenizer::from_dir(&folder(), &[], None).unwrap().unwrap();
    assert_eq!(tok.vocab_size(), 106);
    for (token, id) in [
        ("<|vision_start|>", VISION_START_ID),
        ("<|vision_end|>", VISION_END_ID),
        ("<|image_pad|>", IMAGE_PAD_ID),
        ("<|video_pad|>", VIDEO_PAD_ID),
    ] {
        assert_eq!(tok.token_to_id(token), Some(id));
    }
    // The text ids are the text tokenizer's, so a text base model's rows
    // carry over.
    let text_dir = tempfile::tempdir().unwrap();
    write_char_tokenizer(text_dir.path()).unwrap();
    let text_tok = Tokenizer::from_dir(text_dir.path(), &[], None)
        .unwrap()
        .unwrap();
    let question = "What is 12+7*3-5?\nAnswer: 28";
    assert_eq!(
        tok.encode(question, false).unwrap(),
        text_tok.encode(question, false).unwrap()
    );
    assert_eq!(char_tokenizer::vocab_size(), 102);

    // The chat template writes each <image> as Qwen's image part.
    let rendered = tok
        .apply_chat_template(&[ChatMessage::new("user", "What is <image>?")], true)
        .unwrap();
    assert_eq!(
        rendered,
        "<|user|>What is <|vision_start|><|image_pad|><|vision_end|>?<|assistant|>"
    );
    let ids = tok.encode(&rendered, false).unwrap();
    let at = ids.iter().position(|&i| i == IMAGE_PAD_ID).unwrap();
    assert_eq!(
        &ids[at - 1..=at + 1],
        &[VISION_START_ID, IMAGE_PAD_ID, VISION_END_ID]
    );
    assert_eq!(ids.iter().filter(|&&i| i == IMAGE_PAD_ID).count(), 1);
}

#[test]
fn the_processor_keeps_the_task_pictures_as_drawn() {
    let processor = ImageProcessor::load(&folder()).unwrap();
    let task = ArithmeticTask::new(TaskConfig {
        max_operands: 4,
        max_value: 99,
        operators: "+-*".into(),
        image: TaskImage::Question,
        ..TaskConfig::default()
    })
    .unwrap();
    for example in task.dataset_examples(50, 1).unwrap() {
        let ImageSource::Bytes(png) = &example.images[0] else {
            panic!("expected bytes");
        };
        let img = decode_rgb(png).unwrap();
        let processed = processor.preprocess(&img).unwrap();
        let w = img.width;
        assert_eq!(processed.grid_thw, [1, 2, w / 14], "{}", example.id);
        // One language token per 28 pixels of width.
        assert_eq!(
            image_token_count(processed.grid_thw, 2),
            w / IMAGE_STRIDE as usize
        );
    }
}
