//! A memory model: the peak memory each actor of a run needs, per device,
//! predicted from the model's shape and the run configuration
//! (`rlsd plan --config F`, and the check that refuses a run at start).
//!
//! With `P` parameters, weight bytes `w` (4 f32, 2 bf16/f16), `L` layers,
//! hidden `H`, query width `Q = heads x head_dim`, key/value width `K =
//! kv_heads x head_dim`, MLP width `I`, vocabulary `V`, `B` prompts of `G`
//! responses, prompt length `Lp`, response length `R` (`rollout.max_new_tokens`)
//! and sequence `S = Lp + R` (all in elements; bytes where marked):
//!
//! - **optimizer actor**: weights `P w`, gradients `P w`, AdamW moments `8 P`,
//!   a float32 master copy `4 P` when `w < 4`, one weight snapshot `P w`
//!   being published to the replicas, and one micro-batch's activations;
//!   a micro-batch holds `m = min(B G, micro_batch_size, max(1,
//!   max_tokens_per_micro_batch / S))` rows, `T = m S` positions, `N = m R`
//!   response tokens:
//!   - kept for the backward per token and layer (`A = 4H + 3Q + 2K + 4I`:
//!     the two norm inputs and outputs, rotated q and k, v, attention output
//!     and its contiguous copy, gate, silu(gate), up, their product):
//!     plain `T (L + 1) A w`; checkpointed `T (L H + 2 A) w` (one input per
//!     layer, the layer being recomputed, and its backward working set);
//!   - the output head: `6 C V 4` bytes for a chunk of `C = min(N,
//!     chunk_tokens)` tokens (float32 logits, scaled logits, log-softmax,
//!     its exponential, their product, the logits' gradient), and the picked
//!     hidden states with their gradient `3 N H w`;
//!   - the AdamW update after the backward ([`adamw_update`]: new moments
//!     `8 P`, new values `P w`, a new master `4 P` when `w < 4`, one float32
//!     temporary of the largest parameter), counted beyond the head's chunks
//!     it replaces.
//! - **sampler actor**: weights `P w` (none of its own when it shares the
//!   optimizer's host memory: its replica then uses the published snapshot's
//!   tensors, `model::snapshot_share`); the KV cache of every row
//!   `B G S L 2 K w` (with `rollout.kv_cache_bytes`, of the rows that budget
//!   holds at once); float32 logits of a decoding step `B G V 4` and the
//!   sampling work of one slice of rows, `5 b V 4` with `b =
//!   min(B G, model::sampling::sampling_rows(V))`; the prefill of the `B`
//!   distinct prompts, one layer at a time, `B Lp (2H + 3I) w`.
//! - **teacher actor**: weights `P w` (in host memory the frozen teacher
//!   weights the optimizer keeps, shared by the replica); a group is scored `g = min(G, max(1,
//!   (budget - Lp) / R))` responses at a time against one prompt: KV cache
//!   `g S L 2 K w`, one layer's work `g R (2H + 3I) w`, head chunks `3 C V 4`.
//! - **kept versions**: at `max_staleness = s >= 1`
//!   the commit board keeps `s` more published snapshots `P w` on the
//!   optimizer's device (the versions the steps in flight use, exactly), and
//!   a host teacher up to `min(s, ceil(s / teacher_sync_interval))` more
//!   frozen teachers.
//! - **per device**: a fixed runtime overhead (CUDA context and allocator
//!   slack 1 GiB; on CPU libtorch's own 0.3 GiB), once per device.
//!
//! - **LoRA** ([`with_lora`]): the optimizer's gradients, moments and
//!   snapshot cover the float32 adapters only, and the frozen base is held
//!   once per device (replicas placed with it share it).
//!
//! A vision-language model adds its vision tower and its image tokens
//! ([`vision`]).
//!
//! On one device the actors' held memory adds up; their transient work adds
//! up only where the pipeline lets them work at once ([`overlap`]: one at a
//! time at `max_staleness = 0`, the optimizer beside the larger of the
//! sampler and the teacher at 1, all three from 2). The formula is checked
//! against the measured peak RSS of train steps on CPU (docs/MODELS.md,
//! `src/bin/bench_memory.rs`, docs/benchmarks/memory.md).

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::model::chunked::chunk_tokens;
use crate::model::{parse_kind, Config};
use crate::optim::OptimConfig;
use std::fmt::Write as _;
use tch::Kind;

pub mod overlap;
pub mod vision;

pub use overlap::device_totals;

/// Bytes in a GiB.
pub const GIB: f64 = 1_073_741_824.0;

/// Prompt length assumed when a run is checked at start (the data's real
/// prompt lengths are not known before they are read).
pub const DEFAULT_PROMPT_TOKENS: usize = 512;

/// Parameters of a decoder of this shape (embedding, layers, final norm, an
/// untied head).
///
/// Counted in `u128` and saturated: a `config.json` with absurd sizes gives
/// `u64::MAX` (a plan that fits nothing), never an overflow.
pub fn param_count(c: &Config) -> u64 {
    let u = |x: i64| x.max(0) as u128;
    let (h, i, v) = (u(c.hidden_size), u(c.intermediate_size), u(c.vocab_size));
    let q = u(c.num_attention_heads) * u(c.head_dim);
    let k = u(c.num_key_value_heads) * u(c.head_dim);
    let mut layer = h * q + 2 * h * k + q * h + 3 * h * i + 2 * h;
    if c.qkv_bias {
        layer += q + 2 * k;
    }
    if c.o_bias {
        layer += h;
    }
    if c.mlp_bias {
        layer += 2 * i + h;
    }
    if c.qk_norm {
        layer += 2 * u(c.head_dim);
    }
    let head = if c.tie_word_embeddings { 0 } else { v * h };
    let n = v * h + u(c.num_hidden_layers) * layer + h + head;
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The published shapes of Qwen2.5-0.5B, -1.5B and -7B (Instruct alike) and
/// of Qwen3-8B's decoder, by a name or a path that contains `qwen2.5-0.5b`,
/// `qwen2.5-1.5b`, `qwen2.5-7b`, `qwen3-8b` or `qwen3-vl-8b`.
pub fn known_shape(name: &str) -> Option<Config> {
    let n = name.to_ascii_lowercase();
    let base = Config {
        rope_theta: 1_000_000.0,
        max_position_embeddings: 32_768,
        qkv_bias: true,
        eos_token_id: vec![151_645],
        ..Config::tiny()
    };
    let shape = |h, i, l, heads, kv, d, v, tied| Config {
        hidden_size: h,
        intermediate_size: i,
        num_hidden_layers: l,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        head_dim: d,
        vocab_size: v,
        tie_word_embeddings: tied,
        ..base.clone()
    };
    // A Qwen2.5-VL-7B's language model is Qwen2.5-7B's shape; its tower
    // comes from [`vision::known_vision`].
    if n.contains("qwen2.5-0.5b") {
        Some(shape(896, 4864, 24, 14, 2, 64, 151_936, true))
    } else if n.contains("qwen2.5-1.5b") {
        Some(shape(1536, 8960, 28, 12, 2, 128, 151_936, true))
    } else if n.contains("qwen2.5-7b") || n.contains("qwen2.5-vl-7b") {
        Some(shape(3584, 18_944, 28, 28, 4, 128, 152_064, false))
    } else if n.contains("qwen3-8b") || n.contains("qwen3-vl-8b") {
        // Qwen3-8B's decoder (also Qwen3-VL-8B's language model; its vision
        // tower comes from [`vision::known_vision`]).
        Some(Config {
            arch: crate::model::Arch::Qwen3,
            qkv_bias: false,
            qk_norm: true,
            ..shape(4096, 12_288, 36, 32, 8, 128, 151_936, false)
        })
    } else {
        None
    }
}

/// One line of a plan: what, and how many bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// What the memory holds.
    pub what: &'static str,
    /// Bytes.
    pub bytes: f64,
}

fn item(what: &'static str, bytes: f64) -> Item {
    Item { what, bytes }
}

/// Sum of the items' bytes.
pub fn total(items: &[Item]) -> f64 {
    items.iter().map(|i| i.bytes).sum()
}

/// Rows of one train micro-batch of sequences `seq` long out of `rows`.
pub fn micro_batch_rows(optim: &OptimConfig, rows: usize, seq: usize) -> usize {
    let mut m = rows.max(1);
    if optim.micro_batch_size > 0 {
        m = m.min(optim.micro_batch_size);
    }
    if optim.max_tokens_per_micro_batch > 0 {
        m = m.min((optim.max_tokens_per_micro_batch / seq.max(1)).max(1));
    }
    m
}

/// Elements kept per token and layer for the backward (`A` in the module docs).
fn layer_activations(c: &Config) -> f64 {
    let (h, i) = (c.hidden_size as f64, c.intermediate_size as f64);
    let q = c.num_attention_heads as f64 * c.head_dim as f64;
    let k = c.num_key_value_heads as f64 * c.head_dim as f64;
    4.0 * h + 3.0 * q + 2.0 * k + 4.0 * i
}

/// Bytes per element of `kind`.
fn width(kind: Kind) -> f64 {
    kind.elt_size_in_bytes() as f64
}

/// The optimizer actor: state and one train micro-batch of `rows` samples of
/// `prompt + response` tokens, parameters (and activations) in `kind`.
pub fn optimizer_items(
    c: &Config,
    kind: Kind,
    optim: &OptimConfig,
    rows: usize,
    prompt: usize,
    response: usize,
) -> Vec<Item> {
    let p = param_count(c) as f64;
    let w = width(kind);
    let seq = prompt.saturating_add(response);
    let m = micro_batch_rows(optim, rows, seq) as f64;
    let (t, n) = (m * seq as f64, m * response as f64);
    let (l, h, v) = (
        c.num_hidden_layers as f64,
        c.hidden_size as f64,
        c.vocab_size as f64,
    );
    let a = layer_activations(c);
    let kept = if optim.activation_checkpointing {
        t * (l * h + 2.0 * a) * w
    } else {
        t * (l + 1.0) * a * w
    };
    let chunk = (chunk_tokens(c.vocab_size, optim.logit_chunk_tokens) as f64).min(n);
    let mut items = vec![
        item("weights", p * w),
        item("gradients", p * w),
        item("AdamW moments", 8.0 * p),
    ];
    if w < 4.0 {
        items.push(item("f32 master copy", 4.0 * p));
    }
    items.push(item("weight snapshot", p * w));
    items.push(item("activations", kept));
    let head = 6.0 * chunk * v * 4.0 + 3.0 * n * h * w;
    items.push(item("output head", head));
    items.push(item("AdamW update", (adamw_update(c, w) - head).max(0.0)));
    items
}

/// Bytes the AdamW step holds at once (`optim::AdamW::step` is atomic: it
/// computes every new value before installing any): new moments `8 P`, new
/// values `P w`, a new float32 master copy `4 P` when `w < 4`, and one float32
/// temporary of the largest parameter. It runs after the backward, when the
/// output head's chunks are gone but the activations' memory is still held
/// (host memory freed into the heap, device memory in the caching
/// allocator); the plan counts its excess over the head (the "AdamW update"
/// item). At a 151,936-token vocabulary (hidden 256) the update, 0.60 GiB,
/// is larger than the head's chunks, 0.40 GiB.
pub fn adamw_update(c: &Config, w: f64) -> f64 {
    let p = param_count(c) as f64;
    let (_, h, i, v, _) = dims(c);
    let q = c.num_attention_heads as f64 * c.head_dim as f64;
    let largest = (v * h).max(i * h).max(q * h);
    let master = if w < 4.0 { 4.0 * p } else { 0.0 };
    8.0 * p + p * w + master + 4.0 * largest
}

/// Layers, hidden size, MLP width, vocabulary and KV width (heads x head
/// dim) of `c`, as the plan's arithmetic uses them.
fn dims(c: &Config) -> (f64, f64, f64, f64, f64) {
    (
        c.num_hidden_layers as f64,
        c.hidden_size as f64,
        c.intermediate_size as f64,
        c.vocab_size as f64,
        c.num_key_value_heads as f64 * c.head_dim as f64,
    )
}

/// The sampler actor generating `rows` responses of `response` tokens after
/// `prompts` distinct prompts of `prompt` tokens.
pub fn sampler_items(
    c: &Config,
    kind: Kind,
    prompts: usize,
    rows: usize,
    prompt: usize,
    response: usize,
) -> Vec<Item> {
    let w = width(kind);
    let (l, h, i, v, k) = dims(c);
    let seq = prompt as f64 + response as f64;
    let slice = rows.min(crate::model::sampling::sampling_rows(c.vocab_size)) as f64;
    vec![
        item("weights", param_count(c) as f64 * w),
        item("KV cache", rows as f64 * seq * l * 2.0 * k * w),
        item("logits", rows as f64 * v * 4.0 + 5.0 * slice * v * 4.0),
        item(
            "prefill",
            prompts as f64 * prompt as f64 * (2.0 * h + 3.0 * i) * w,
        ),
    ]
}

/// The teacher actor scoring groups of `group` responses of `response`
/// tokens after one prompt of `prompt` tokens.
pub fn teacher_items(
    c: &Config,
    kind: Kind,
    optim: &OptimConfig,
    group: usize,
    prompt: usize,
    response: usize,
) -> Vec<Item> {
    let w = width(kind);
    let (l, h, i, v, k) = dims(c);
    let budget = optim.max_tokens_per_micro_batch;
    let g = if budget == 0 {
        group
    } else {
        group.min((budget.saturating_sub(prompt) / response.max(1)).max(1))
    } as f64;
    let chunk = (chunk_tokens(c.vocab_size, 0) as f64).min(g * response as f64);
    let seq = prompt as f64 + response as f64;
    vec![
        item("weights", param_count(c) as f64 * w),
        item("KV cache", g * seq * l * 2.0 * k * w),
        item("layer work", g * response as f64 * (2.0 * h + 3.0 * i) * w),
        item("output head", 3.0 * chunk * v * 4.0),
    ]
}

/// The predicted memory of one actor.
#[derive(Debug, Clone)]
pub struct ActorPlan {
    /// `optimizer`, `sampler` or `teacher`.
    pub actor: &'static str,
    /// The device string from `runtime.*_device`.
    pub device: String,
    /// What it holds.
    pub items: Vec<Item>,
}

/// The predicted memory of every actor of a run, and per device.
#[derive(Debug, Clone)]
pub struct MemoryPlan {
    /// The model's shape.
    pub model: Config,
    /// Its parameter count (the language model's).
    pub params: u64,
    /// A vision-language model's tower parameters (0 for a text model).
    pub vision_params: u64,
    /// `<|image_pad|>` tokens per prompt the plan assumes (0 for a text model).
    pub image_tokens: usize,
    /// The actors.
    pub actors: Vec<ActorPlan>,
    /// `(device, predicted peak bytes including the runtime overhead)`.
    pub devices: Vec<(String, f64)>,
}

/// Runtime overhead per device: CUDA context and allocator slack, or libtorch on CPU.
fn overhead(device: &str) -> f64 {
    if device == "cpu" {
        0.3 * GIB
    } else {
        GIB
    }
}

/// The plan of a run configuration for a model of shape `model`, assuming
/// prompts of `prompt_tokens`.
pub fn plan(cfg: &RunConfig, model: &Config, prompt_tokens: usize) -> Result<MemoryPlan> {
    let kind = parse_kind(&cfg.model.dtype)?;
    let tower = vision::vision_shape(cfg)?;
    let load = vision::ImageLoad::of(cfg);
    let image_tokens = tower
        .as_ref()
        .map_or(0, |v| load.image_tokens_per_prompt(v));
    let prompt_tokens = prompt_tokens.saturating_add(image_tokens);
    let r = &cfg.rollout;
    let rows = r.batch_prompts.checked_mul(r.group_size).ok_or_else(|| {
        Error::config(
            "rollout.group_size",
            format!(
                "batch_prompts x group_size ({} x {}) overflows",
                r.batch_prompts, r.group_size
            ),
        )
    })?;
    // With `rollout.kv_cache_bytes`, generation runs at most as many rows at
    // once as that budget holds (continuous batching; see `model::generate`).
    // Counted in u128: sizes from a file can be absurd.
    let u = |x: i64| x.max(0) as u128;
    let kv_row = (prompt_tokens as u128 + r.max_new_tokens as u128)
        * 2
        * u(model.num_hidden_layers)
        * u(model.num_key_value_heads)
        * u(model.head_dim)
        * kind.elt_size_in_bytes() as u128;
    let gen_rows = match r.kv_cache_bytes {
        0 => rows,
        b => rows.min((b as u128 / kv_row.max(1)).max(1) as usize),
    };
    let rt = &cfg.runtime;
    let actors = vec![
        ActorPlan {
            actor: "optimizer",
            device: rt.optimizer_device.clone(),
            items: optimizer_items(
                model,
                kind,
                &cfg.optim,
                rows,
                prompt_tokens,
                r.max_new_tokens,
            ),
        },
        ActorPlan {
            actor: "sampler",
            device: rt.sampler_device.clone(),
            items: sampler_items(
                model,
                kind,
                r.batch_prompts.min(gen_rows),
                gen_rows,
                prompt_tokens,
                r.max_new_tokens,
            ),
        },
        ActorPlan {
            actor: "teacher",
            device: rt.teacher_device.clone(),
            items: teacher_items(
                model,
                kind,
                &cfg.optim,
                r.group_size,
                prompt_tokens,
                r.max_new_tokens,
            ),
        },
    ];
    let mut actors = actors;
    if rt.sampler_device == "cpu" && rt.optimizer_device == "cpu" {
        share_published_weights(&mut actors);
    }
    if let Some(lora) = adapter_of(cfg) {
        with_lora(&mut actors, model, &lora);
    }
    if let Some(v) = &tower {
        let seq = prompt_tokens.saturating_add(r.max_new_tokens);
        let encoded = vision::Encoded {
            optimizer: micro_batch_rows(&cfg.optim, rows, seq),
            sampler: r.batch_prompts.min(gen_rows),
            teacher: 1,
        };
        let (w, train) = (width(kind), cfg.model.train_vision);
        vision::with_vision(&mut actors, model, v, w, train, load, encoded);
    }
    // The vision-language loop is sequential (no commit board, one stage at
    // a time) whatever `runtime.max_staleness` says.
    let staleness = if tower.is_some() { 0 } else { rt.max_staleness };
    let sync = cfg.algo.teacher_sync_interval(rt.teacher_sync_interval);
    with_kept_versions(&mut actors, staleness, sync);
    Ok(MemoryPlan {
        params: param_count(model),
        vision_params: tower.as_ref().map_or(0, vision::vision_param_count),
        image_tokens,
        model: model.clone(),
        devices: device_totals(&actors, staleness),
        actors,
    })
}

/// The commits the commit board keeps before the latest at
/// `runtime.max_staleness = s` (`actors::commit::CommitBoard`: the versions
/// the steps in flight are sampled and scored with, exactly): `s` more
/// published policy snapshots on the optimizer's device, and, with the
/// teacher in host memory, the frozen teachers among them that differ from
/// the latest (at most `min(s, ceil(s / teacher_sync_interval))`; one at
/// staleness 1, held from a sync step until the next commit). Each is the
/// size of the optimizer's "weight snapshot" item (the adapters with LoRA).
fn with_kept_versions(actors: &mut [ActorPlan], max_staleness: u64, sync_interval: u64) {
    if max_staleness == 0 {
        return;
    }
    let snapshot: f64 = actors
        .iter()
        .filter(|a| a.actor == "optimizer")
        .flat_map(|a| &a.items)
        .filter(|i| i.what == "weight snapshot")
        .map(|i| i.bytes)
        .sum();
    let s = max_staleness as f64;
    let teachers = s.min((s / sync_interval.max(1) as f64).ceil());
    for a in actors.iter_mut() {
        match a.actor {
            "optimizer" => a.items.push(item("kept versions", s * snapshot)),
            "teacher" if a.device == "cpu" => {
                a.items.push(item("kept teachers", teachers * snapshot))
            }
            _ => {}
        }
    }
}

/// The sampler and the optimizer in the same host memory: the sampler's
/// replica uses the optimizer's published snapshot (the optimizer's "weight
/// snapshot" item) instead of a copy of its own (`model::snapshot_share`).
fn share_published_weights(actors: &mut [ActorPlan]) {
    for a in actors.iter_mut().filter(|a| a.actor == "sampler") {
        for i in a.items.iter_mut().filter(|i| i.what == "weights") {
            i.what = "weights (shared)";
            i.bytes = 0.0;
        }
    }
}

/// The run's LoRA settings: `[model.lora]`, or those of `model.adapter`.
fn adapter_of(cfg: &RunConfig) -> Option<crate::model::LoraConfig> {
    match (&cfg.model.lora, &cfg.model.adapter) {
        (Some(l), _) => Some(l.clone()),
        (None, Some(dir)) => {
            let path = dir.join(crate::model::lora::ADAPTER_CONFIG);
            crate::model::LoraConfig::from_peft_file(&path).ok()
        }
        (None, None) => None,
    }
}

/// LoRA's memory: the base keeps its weights but has no gradients, moments
/// or master copy; the float32 adapters (`Pa` parameters) have weights,
/// gradients and moments `4 + 4 + 8` bytes each, and every replica holds
/// them too. The published snapshot is the adapters alone. The frozen base
/// is held once per device: a replica placed with the optimizer, or with a
/// replica that already holds a copy, computes with that base
/// (`crate::model::shared_base`).
pub fn with_lora(actors: &mut [ActorPlan], c: &Config, lora: &crate::model::LoraConfig) {
    let pa = lora.param_count(c) as f64;
    let mut holding: Vec<String> = Vec::new();
    for a in actors.iter_mut() {
        if a.actor == "optimizer" {
            a.items.retain(|i| i.what != "f32 master copy");
            // Only the float32 adapters are updated: new moments and values
            // `12 Pa` (and a temporary no larger), beyond the head's chunks.
            let head = total(
                &a.items
                    .iter()
                    .filter(|i| i.what == "output head")
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            let update = (16.0 * pa - head).max(0.0);
            for i in a.items.iter_mut() {
                match i.what {
                    "gradients" => i.bytes = 4.0 * pa,
                    "AdamW moments" => i.bytes = 8.0 * pa,
                    "weight snapshot" => i.bytes = 4.0 * pa,
                    "AdamW update" => i.bytes = update,
                    _ => {}
                }
            }
        }
        if holding.contains(&a.device) {
            for i in a.items.iter_mut().filter(|i| i.what == "weights") {
                *i = item(SHARED_BASE, 0.0);
            }
        } else {
            holding.push(a.device.clone());
        }
        a.items.insert(1, item("LoRA adapters", 4.0 * pa));
    }
}

/// The plan's line for a replica that computes with the base already on
/// its device (LoRA).
pub const SHARED_BASE: &str = "weights (shared)";

/// The model shape of a run: `config.json` in the model folder, else the
/// published shape its path names ([`known_shape`]).
pub fn model_shape(cfg: &RunConfig) -> Result<Config> {
    let dir = cfg.model.resolved_path();
    let file = dir.join("config.json");
    if file.exists() {
        if crate::model::vision::VlConfig::is_vl_file(&file) {
            return Ok(crate::model::vision::VlConfig::from_file(&file)?.text);
        }
        return Config::from_file(&file);
    }
    known_shape(&cfg.model.path).ok_or_else(|| {
        Error::config(
            "model.path",
            format!(
                "{} has no config.json and names no known shape (qwen2.5-0.5b, -1.5b, -7b, qwen3-8b, qwen2.5-vl-7b, qwen3-vl-8b)",
                dir.display()
            ),
        )
    })
}

/// A human-readable table of the plan.
pub fn render(p: &MemoryPlan) -> String {
    let gib = |b: f64| b / GIB;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model: {} parameters (hidden {}, {} layers, vocab {})",
        p.params, p.model.hidden_size, p.model.num_hidden_layers, p.model.vocab_size
    );
    if p.vision_params > 0 {
        let _ = writeln!(
            s,
            "vision tower: {} parameters; {} image tokens per prompt (model.images_per_prompt x model.image_pixels)",
            p.vision_params, p.image_tokens
        );
    }
    for a in &p.actors {
        let _ = writeln!(
            s,
            "{} on {}: {:.2} GiB",
            a.actor,
            a.device,
            gib(total(&a.items))
        );
        for i in &a.items {
            let _ = writeln!(s, "  {:<18} {:>9.3} GiB", i.what, gib(i.bytes));
        }
    }
    for (d, b) in &p.devices {
        let _ = writeln!(
            s,
            "device {d}: {:.2} GiB predicted peak (with {:.1} GiB runtime overhead)",
            gib(*b),
            gib(overhead(d))
        );
    }
    s
}

/// Check every device of `p` against its memory (`memory(device)` in bytes,
/// `None` = unknown, not checked); the error gives the numbers and what to change.
pub fn check_fits(p: &MemoryPlan, memory: impl Fn(&str) -> Option<f64>) -> Result<()> {
    for (device, need) in &p.devices {
        let Some(have) = memory(device) else {
            tracing::warn!(%device, "device memory unknown; memory plan not checked");
            continue;
        };
        if *need > have {
            let parts: Vec<String> = p
                .actors
                .iter()
                .filter(|a| a.device == *device)
                .map(|a| {
                    let items: Vec<String> = a
                        .items
                        .iter()
                        .map(|i| format!("{} {:.2}", i.what, i.bytes / GIB))
                        .collect();
                    format!(
                        "{} {:.2} GiB ({})",
                        a.actor,
                        total(&a.items) / GIB,
                        items.join(", ")
                    )
                })
                .collect();
            return Err(Error::DoesNotFit {
                device: device.clone(),
                msg: format!(
                    "predicted peak {:.2} GiB > {:.2} GiB available: {}; lower \
                     optim.max_tokens_per_micro_batch, set optim.activation_checkpointing = true, \
                     lower rollout.batch_prompts x group_size or max_new_tokens, use bf16, or put \
                     actors on other devices (see `rlsd plan`)",
                    need / GIB,
                    have / GIB,
                    parts.join(" + ")
                ),
            });
        }
    }
    Ok(())
}

/// Memory of `device`: `runtime.device_memory_gib` when set, else the
/// machine's RAM for `cpu` (`/proc/meminfo`), else what `nvidia-smi` reports
/// for `cuda:N` / `auto`, else unknown.
pub fn device_memory(device: &str, configured_gib: f64) -> Option<f64> {
    if configured_gib > 0.0 {
        return Some(configured_gib * GIB);
    }
    let resolved = crate::device::parse_device(device).ok()?;
    if resolved == tch::Device::Cpu {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        return Some(kb * 1024.0);
    }
    let index = match resolved {
        tch::Device::Cuda(i) => i.to_string(),
        _ => return None,
    };
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=memory.total",
            "--format=csv,noheader,nounits",
            "-i",
            &index,
        ])
        .output()
        .ok()?;
    let mib: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some(mib * 1024.0 * 1024.0)
}

/// The start-up check of a run: refuse, with the numbers, a configuration
/// the memory model says cannot fit a device. A model whose shape cannot be
/// read is left to the loader to report.
pub fn refuse_if_too_big(cfg: &RunConfig) -> Result<()> {
    let Ok(shape) = model_shape(cfg) else {
        return Ok(());
    };
    let p = plan(cfg, &shape, DEFAULT_PROMPT_TOKENS)?;
    check_fits(&p, |d| device_memory(d, cfg.runtime.device_memory_gib))
}

/// `rlsd plan`: print the plan of `cfg` (prompts of `prompt_tokens`) and
/// fail when it does not fit (`device_memory_gib` overrides the detected memory).
pub fn plan_command(
    cfg: &RunConfig,
    prompt_tokens: usize,
    device_memory_gib: Option<f64>,
) -> Result<()> {
    let shape = model_shape(cfg)?;
    let p = plan(cfg, &shape, prompt_tokens)?;
    print!("{}", render(&p));
    let gib = device_memory_gib.unwrap_or(cfg.runtime.device_memory_gib);
    check_fits(&p, |d| device_memory(d, gib))?;
    println!("fits");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::random::qwen2_shaped;

    fn sampler(p: &MemoryPlan) -> &ActorPlan {
        p.actors.iter().find(|a| a.actor == "sampler").unwrap()
    }

    fn bytes(a: &ActorPlan, what: &str) -> f64 {
        a.items.iter().find(|i| i.what == what).unwrap().bytes
    }

    #[test]
    fn a_host_sampler_shares_the_published_snapshot() {
        // Qwen2-shaped, vocabulary 151,936, hidden 256, 2 layers: 40,864,000
        // float32 parameters.
        let model = qwen2_shaped(151_936, 256, 2);
        let mut cfg = RunConfig::default();
        cfg.rollout.batch_prompts = 8;
        cfg.rollout.group_size = 8;
        cfg.rollout.max_new_tokens = 512;
        for d in [
            &mut cfg.runtime.sampler_device,
            &mut cfg.runtime.teacher_device,
            &mut cfg.runtime.optimizer_device,
        ] {
            *d = "cpu".into();
        }
        let p = plan(&cfg, &model, 32).unwrap();
        let s = sampler(&p);
        assert_eq!(bytes(s, "weights (shared)"), 0.0);
        // Logits of one decoding step, 64 x 151,936 x 4 bytes, and five
        // float32 temporaries of one 13-row sampling slice.
        let v = 151_936.0 * 4.0;
        assert_eq!(bytes(s, "logits"), 64.0 * v + 5.0 * 13.0 * v);
        // The AdamW update: 8 P + 4 P + 4 x the 151,936 x 256 embedding,
        // beyond the head's 6 chunks of 110 tokens and 3 N H 4 for the
        // N = 15 x 512 response tokens of a micro-batch (8,192 / 544 = 15 rows).
        let o = p.actors.iter().find(|a| a.actor == "optimizer").unwrap();
        let params = 40_864_000.0;
        let head = 6.0 * 110.0 * v + 3.0 * 15.0 * 512.0 * 256.0 * 4.0;
        assert_eq!(bytes(o, "output head"), head);
        let update = 12.0 * params + 4.0 * 151_936.0 * 256.0;
        assert_eq!(bytes(o, "AdamW update"), update - head);
        // On a GPU the replica is a copy of its own.
        cfg.runtime.sampler_device = "cuda:0".into();
        let g = plan(&cfg, &model, 32).unwrap();
        assert_eq!(bytes(sampler(&g), "weights"), 40_864_000.0 * 4.0);
    }

    #[test]
    fn the_kept_versions_of_an_asynchronous_run_are_planned() {
        let model = qwen2_shaped(151_936, 256, 2);
        let snapshot = 40_864_000.0 * 4.0;
        let mut cfg = RunConfig::default();
        for d in [
            &mut cfg.runtime.sampler_device,
            &mut cfg.runtime.teacher_device,
            &mut cfg.runtime.optimizer_device,
        ] {
            *d = "cpu".into();
        }
        let kept = |cfg: &RunConfig| {
            let p = plan(cfg, &model, 32).unwrap();
            let of = |actor: &str, what: &str| {
                let a = p.actors.iter().find(|a| a.actor == actor).unwrap();
                let i = a.items.iter().find(|i| i.what == what);
                i.map_or(0.0, |i| i.bytes)
            };
            (
                of("optimizer", "kept versions") / snapshot,
                of("teacher", "kept teachers") / snapshot,
            )
        };
        // (max_staleness, teacher_sync_interval) -> (policy, teacher) copies.
        for (s, sync, want) in [
            (0, 10, (0.0, 0.0)),
            (1, 10, (1.0, 1.0)),
            (3, 10, (3.0, 1.0)),
            (2, 1, (2.0, 2.0)),
            (4, 3, (4.0, 2.0)),
        ] {
            cfg.runtime.max_staleness = s;
            cfg.runtime.teacher_sync_interval = sync;
            assert_eq!(kept(&cfg), want, "staleness {s}, sync {sync}");
        }
        // A GPU teacher's frozen copies are host memory the plan leaves out.
        cfg.runtime.teacher_device = "cuda:0".into();
        assert_eq!(kept(&cfg).1, 0.0);
    }
}
