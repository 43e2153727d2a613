//! The memory model (`rlsd plan`) on vision-language models: the tower's
//! parameters against hand counts of the tiny fixtures and the published
//! sizes of Qwen2.5-VL-7B / Qwen3-VL-8B, and the image tokens and tower
//! items in a plan.

use rlsd::config::RunConfig;
use rlsd::memory::vision::{known_vision, vision_param_count};
use rlsd::memory::{model_shape, param_count, plan, MemoryPlan};
use rlsd::model::vision::VlConfig;
use std::path::PathBuf;

fn fixture(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vl")
        .join(dir)
}

fn vl(dir: &str) -> VlConfig {
    VlConfig::from_file(&fixture(dir).join("config.json")).unwrap()
}

#[test]
fn tiny_towers_match_a_hand_count() {
    // Qwen2.5-VL tiny: C 32, I 48, patch 14, T 2, merge 2 (W 128), out 32, depth 4.
    // patch embed 32*3*2*14*14 = 37632; a block: norms 2*32, qkv 3*32*32+96,
    // proj 32*32+32, gate/up 2*(32*48+48), down 48*32+32 = 9024, x4 = 36096;
    // merger: ln_q 32, fc1 128*128+128, fc2 128*32+32 = 20672. Sum 94400,
    // equal to the `visual.*` tensors of the fixture's shards.
    assert_eq!(vision_param_count(&vl("qwen2_5_vl_tiny").vision), 94_400);
    // Qwen3-VL tiny: C 32, I 48, patch 16, depth 4, 16 positions, 2 deepstack.
    // patch embed 32*3*2*16*16 + 32 = 49184; positions 16*32 = 512; a block:
    // LayerNorms 4*32, qkv 3104, proj 1056, fc1 32*48+48, fc2 48*32+32 = 7504,
    // x4 = 30016; merger: LayerNorm 64 + fc1 16512 + fc2 4128 = 20704;
    // deepstack mergers 2 x (LayerNorm 256 + 20640) = 41792. Sum 142208.
    assert_eq!(vision_param_count(&vl("qwen3_vl_tiny").vision), 142_208);
    // The language halves: the shards' other tensors.
    assert_eq!(param_count(&vl("qwen2_5_vl_tiny").text), 35_104);
    assert_eq!(param_count(&vl("qwen3_vl_tiny").text), 44_304);
    // Both layouts of Qwen2.5-VL give the same tower.
    let flat = VlConfig::from_file(&fixture("qwen2_5_vl_tiny").join("config_flat.json")).unwrap();
    assert_eq!(vision_param_count(&flat.vision), 94_400);
}

#[test]
fn published_models_have_their_published_sizes() {
    // The Hub lists Qwen2.5-VL-7B-Instruct at 8.29B parameters and
    // Qwen3-VL-8B-Instruct at 8.77B.
    for (dir, name, published) in [
        (
            "shapes/qwen2_5_vl_7b",
            "Qwen/Qwen2.5-VL-7B-Instruct",
            8.29e9,
        ),
        ("shapes/qwen3_vl_8b", "Qwen/Qwen3-VL-8B-Instruct", 8.77e9),
    ] {
        let c = vl(dir);
        let tower = vision_param_count(&c.vision);
        assert_eq!(known_vision(name).as_ref(), Some(&c.vision), "{name}");
        let all = (param_count(&c.text) + tower) as f64;
        assert!((all / published - 1.0).abs() < 0.005, "{name}: {all}");
        let known_text = rlsd::memory::known_shape(name).unwrap();
        assert_eq!(param_count(&known_text), param_count(&c.text), "{name}");
    }
}

fn run(dir: &str, extra: &str) -> (RunConfig, MemoryPlan) {
    let toml = format!(
        "[model]\npath = {:?}\ndtype = \"f32\"\n{extra}\n[rollout]\nbatch_prompts = 2\ngroup_size = 4\nmax_new_tokens = 32\n",
        fixture(dir).display().to_string()
    );
    let cfg = RunConfig::from_toml_str(&toml).unwrap();
    let p = plan(&cfg, &model_shape(&cfg).unwrap(), 16).unwrap();
    (cfg, p)
}

fn bytes(p: &MemoryPlan, actor: &str, what: &str) -> Option<f64> {
    let a = p.actors.iter().find(|a| a.actor == actor).unwrap();
    a.items.iter().find(|i| i.what == what).map(|i| i.bytes)
}

#[test]
fn a_plan_counts_the_tower_and_the_image_tokens() {
    let pv = 142_208.0 * 4.0;
    // 1024 x 1024 pixels: 4096 patches of 16 x 16, 1024 tokens after the 2x2 merge.
    let (_, p) = run("qwen3_vl_tiny", "");
    assert_eq!(p.image_tokens, 1024);
    assert_eq!(p.vision_params, 142_208);
    for actor in ["optimizer", "sampler", "teacher"] {
        assert_eq!(bytes(&p, actor, "vision tower"), Some(pv), "{actor}");
    }
    // Frozen by default: no gradients or moments for the tower.
    assert_eq!(bytes(&p, "optimizer", "vision gradients"), None);
    // The sampler's KV cache holds 8 rows of 16 + 1024 + 32 positions, 3
    // layers, keys and values of 2 heads x 8.
    let kv = 8.0 * (16.0 + 1024.0 + 32.0) * 3.0 * 2.0 * 16.0 * 4.0;
    assert_eq!(bytes(&p, "sampler", "KV cache"), Some(kv));
    // The teacher encodes one prompt's image: 4096 patches x (2 C + 3 I);
    // features of 1024 tokens at 3 levels (merger + 2 deepstack) x H 32.
    assert_eq!(
        bytes(&p, "teacher", "vision forward"),
        Some(4096.0 * (64.0 + 144.0) * 4.0)
    );
    assert_eq!(
        bytes(&p, "teacher", "image features"),
        Some(1024.0 * 3.0 * 32.0 * 4.0)
    );

    let (cfg, trained) = run("qwen3_vl_tiny", "train_vision = true");
    let m = rlsd::memory::micro_batch_rows(&cfg.optim, 8, 16 + 1024 + 32) as f64;
    assert!(m >= 1.0);
    assert_eq!(bytes(&trained, "optimizer", "vision gradients"), Some(pv));
    assert_eq!(
        bytes(&trained, "optimizer", "vision AdamW"),
        Some(8.0 * 142_208.0)
    );
    // f32 weights need no master copy.
    assert_eq!(bytes(&trained, "optimizer", "vision f32 master"), None);
    // The micro-batch's m rows: m x 4096 patches x 4 blocks x (10 C + 2 I).
    assert_eq!(
        bytes(&trained, "optimizer", "vision activations"),
        Some(m * 4096.0 * 4.0 * (320.0 + 96.0) * 4.0)
    );
    assert_eq!(bytes(&trained, "sampler", "vision gradients"), None);
    assert!(trained.devices[0].1 > p.devices[0].1);

    // Two images of 56 x 56 on Qwen2.5-VL (patch 14): 16 patches, 4 tokens each.
    let (_, two) = run(
        "qwen2_5_vl_tiny",
        "images_per_prompt = 2\nimage_pixels = 3136",
    );
    assert_eq!(two.image_tokens, 8);
    // No images: the text plan plus the tower's weights.
    let (_, none) = run("qwen2_5_vl_tiny", "images_per_prompt = 0");
    assert_eq!(none.image_tokens, 0);
    let kv = 8.0 * (16.0 + 32.0) * 2.0 * 2.0 * 16.0 * 4.0;
    assert_eq!(bytes(&none, "sampler", "KV cache"), Some(kv));
}
