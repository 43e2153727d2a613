//! `pretrain` on a very short budget produces a model that loads back in the
//! Hugging Face layout, with the character tokenizer and its chat template.

use rlsd::data::char_tokenizer::{vocab_size, EOS_ID, PAD_ID};
use rlsd::data::task::TaskConfig;
use rlsd::policy::{Policy, PromptResponse};
use rlsd::pretrain::{encode_prompt, load_base_model, pretrain, ModelShape, PretrainConfig};

#[test]
fn short_pretrain_saves_a_loadable_model_and_lowers_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = PretrainConfig {
        out_dir: dir.path().join("base"),
        model: ModelShape {
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_key_value_heads: 1,
        },
        task: TaskConfig {
            max_operands: 2,
            max_value: 9,
            ..TaskConfig::default()
        },
        max_steps: 40,
        batch_size: 8,
        warmup_steps: 5,
        lr: 1e-2,
        eval_problems: 8,
        eval_max_new_tokens: 16,
        log_every: 0,
        ..PretrainConfig::default()
    };
    let report = pretrain(&cfg).unwrap();
    assert_eq!(report.steps, 40);
    assert_eq!(report.examples_seen, 320);
    assert_eq!(report.heldout_problems, 8);
    assert!((0.0..=1.0).contains(&report.heldout_accuracy));
    // Uniform over the vocabulary would be ln(102) = 4.62 nats per token.
    assert!(
        report.final_loss < 3.0,
        "loss {} did not drop below 3.0",
        report.final_loss
    );

    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(cfg.out_dir.join(name).exists(), "{name} missing");
    }
    let leftovers: Vec<String> = std::fs::read_dir(&cfg.out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "scratch folders left: {leftovers:?}");
    let model = load_base_model(&cfg.out_dir).unwrap();
    assert_eq!(model.config.vocab_size, vocab_size() as i64);
    assert_eq!(model.config.hidden_size, 32);
    assert_eq!(model.eos_ids(), vec![EOS_ID]);
    assert_eq!(model.pad_id(), PAD_ID);
    let tok = model
        .tokenizer
        .as_ref()
        .expect("tokenizer saved with the model");
    let prompt = encode_prompt(tok, "What is 1+2?").unwrap();
    assert_eq!(
        tok.decode(&prompt, false).unwrap(),
        "<|user|>What is 1+2?<|assistant|>"
    );

    // The loaded weights score a solution like the trained ones did: finite
    // log-probs, and better than uniform on average.
    let response = tok.encode("1+2=3\nAnswer: 3", false).unwrap();
    let scores = tch::no_grad(|| {
        model.response_scores(
            &[PromptResponse {
                prompt,
                response,
                image_key: 0,
            }],
            1.0,
        )
    })
    .unwrap();
    let mean = scores.logprobs.mean(tch::Kind::Float).double_value(&[]);
    assert!(
        mean.is_finite() && mean > -(vocab_size() as f64).ln(),
        "{mean}"
    );
}

#[test]
fn bad_pretrain_configs_name_the_key() {
    for (cfg, key) in [
        (
            PretrainConfig {
                batch_size: 0,
                ..PretrainConfig::default()
            },
            "pretrain.batch_size",
        ),
        (
            PretrainConfig {
                lr: -1.0,
                ..PretrainConfig::default()
            },
            "pretrain.lr",
        ),
        (
            PretrainConfig {
                flawed_fraction: 1.5,
                ..PretrainConfig::default()
            },
            "pretrain.flawed_fraction",
        ),
    ] {
        let err = pretrain(&cfg).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }
    let err = toml::from_str::<PretrainConfig>("stepz = 3").unwrap_err();
    assert!(err.to_string().contains("stepz"));
}

#[test]
fn learning_rate_schedule() {
    let cfg = PretrainConfig {
        lr: 1.0,
        warmup_steps: 4,
        max_steps: 14,
        min_lr_ratio: 0.1,
        ..PretrainConfig::default()
    };
    // Warm-up: (step + 1) / 4.
    assert_eq!(cfg.lr_at(0), 0.25);
    assert_eq!(cfg.lr_at(3), 1.0);
    // Cosine from 1.0 at step 4 to 0.1 at step 14; halfway (step 9) is 0.55.
    assert!((cfg.lr_at(4) - 1.0).abs() < 1e-12);
    assert!((cfg.lr_at(9) - 0.55).abs() < 1e-12);
    assert!((cfg.lr_at(14) - 0.1).abs() < 1e-12);
    assert!((cfg.lr_at(100) - 0.1).abs() < 1e-12);
}

#[test]
fn student_and_teacher_prompt_ids_go_through_the_chat_template() {
    use rlsd::data::prompt::{chat_prompt_ids, student_prompt_ids};
    use rlsd::data::{Example, TeacherPrompt};
    let dir = tempfile::tempdir().unwrap();
    rlsd::data::char_tokenizer::write_char_tokenizer(dir.path()).unwrap();
    let tok = rlsd::model::Tokenizer::from_dir(dir.path(), &[EOS_ID], Some(PAD_ID))
        .unwrap()
        .unwrap();
    let example = Example {
        id: "x".into(),
        prompt: "What is 1+2?".into(),
        answer: "3".into(),
        privileged: "3".into(),
        context: Vec::new(),
        extra: Default::default(),
        images: Vec::new(),
    };
    let student = student_prompt_ids(&tok, &example).unwrap();
    assert_eq!(
        tok.decode(&student, false).unwrap(),
        "<|user|>What is 1+2?<|assistant|>"
    );
    let teacher = TeacherPrompt::new("{question} Reference: {answer}").unwrap();
    let ids = teacher.ids(&tok, &example).unwrap();
    assert_eq!(
        tok.decode(&ids, false).unwrap(),
        "<|user|>What is 1+2? Reference: 3<|assistant|>"
    );
    // Both end with the assistant marker, so a response scores the same way.
    assert_eq!(student.last(), ids.last());
    assert_eq!(chat_prompt_ids(&tok, "What is 1+2?").unwrap(), student);

    // Without a chat template (a base model) the plain text is encoded.
    let plain = rlsd::model::Tokenizer::from_tokenizers(tok.inner().clone(), vec![EOS_ID], None);
    let ids = chat_prompt_ids(&plain, "What is 1+2?").unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), "What is 1+2?");
}
