//! The built-in vision-language base (`src/pretrain/vision.rs`,
//! `configs/pretrain-vl.toml`): a short run saves a folder that loads as a
//! VL model, the language half can start from the text base, and the
//! committed `assets/tiny-arith-vl` base reads held-out pictured problems
//! (greedy accuracy above 0).

use rlsd::data::task::{ArithmeticTask, TaskConfig};
use rlsd::model::vision::LoadedVlModel;
use rlsd::pretrain::vision::{
    init_language_from_text, random_vl_model, vl_heldout_accuracy, VisionPretrain,
};
use rlsd::pretrain::{held_out_problems, pretrain, PretrainConfig};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn asset(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(name)
}

fn load(dir: &Path) -> LoadedVlModel {
    LoadedVlModel::load(dir, Device::Cpu, Kind::Float).unwrap()
}

#[test]
fn short_vl_pretrain_saves_a_loadable_folder_and_lowers_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vl");
    let cfg = PretrainConfig {
        out_dir: out.clone(),
        task: TaskConfig {
            max_operands: 2,
            max_value: 9,
            ..TaskConfig::default()
        },
        max_steps: 30,
        batch_size: 8,
        warmup_steps: 5,
        lr: 1e-2,
        eval_problems: 4,
        eval_max_new_tokens: 16,
        log_every: 0,
        vision: VisionPretrain {
            config_dir: asset("tiny-arith-vl"),
            ..VisionPretrain::default()
        },
        ..PretrainConfig::default()
    };
    let report = pretrain(&cfg).unwrap();
    assert_eq!(report.steps, 30);
    assert_eq!(report.parameters, 189_280); // transformers' count (docs/DATA.md)
    assert_eq!(report.heldout_problems, 4);
    assert!((0.0..=1.0).contains(&report.heldout_accuracy));
    assert!((0.0..=1.0).contains(&report.heldout_sampled_accuracy));
    // Uniform over the 106 ids would be ln(106) = 4.66 nats per token; a
    // random init predicting solution characters after 30 steps is below.
    assert!(report.final_loss < 3.5, "loss {}", report.final_loss);
    for f in [
        "config.json",
        "tokenizer.json",
        "preprocessor_config.json",
        "model.safetensors",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let model = load(&out);
    assert!(model.tokenizer.is_some() && model.processor.is_some());
}

#[test]
fn bad_vision_shares_are_refused_naming_the_key() {
    let cfg = PretrainConfig {
        vision: VisionPretrain {
            config_dir: asset("tiny-arith-vl"),
            question_fraction: 0.8,
            half_fraction: 0.5,
            ..VisionPretrain::default()
        },
        ..PretrainConfig::default()
    };
    let err = pretrain(&cfg).unwrap_err().to_string();
    assert!(err.contains("pretrain.vision.question_fraction"), "{err}");
}

#[test]
fn the_language_half_starts_from_the_text_base_by_name_and_id() {
    let model = random_vl_model(&asset("tiny-arith-vl"), 0).unwrap();
    let copied = init_language_from_text(&model, &asset("tiny-arith")).unwrap();
    let text = Tensor::read_safetensors(asset("tiny-arith").join("model.safetensors")).unwrap();
    assert_eq!(copied, text.len());
    let vars = model.vs.variables();
    for (name, t) in &text {
        let v = &vars[name];
        let rows = t.size()[0];
        assert!(v.narrow(0, 0, rows).equal(t), "{name} differs");
    }
    // The 4 vision-token rows keep their random init.
    let embed = &vars["model.embed_tokens.weight"];
    assert_eq!(embed.size(), vec![106, 64]);
    assert!(
        embed
            .narrow(0, 102, 4)
            .abs()
            .sum(Kind::Float)
            .double_value(&[])
            > 0.0
    );
}

#[test]
fn committed_vl_base_reads_some_heldout_pictures() {
    let model = load(&asset("tiny-arith-vl"));
    let task = ArithmeticTask::new(TaskConfig::default()).unwrap();
    // The held-out problems of the committed run (seed 0): never trained on.
    let problems = held_out_problems(&task, 48, 0);
    let acc = vl_heldout_accuracy(&model, &problems, 64, None).unwrap();
    assert!(acc > 0.0, "greedy accuracy {acc} on 48 held-out pictures");
    assert!(
        acc < 1.0,
        "greedy accuracy {acc}: the base should leave room for RL"
    );
}
