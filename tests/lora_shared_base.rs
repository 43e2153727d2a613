//! One frozen base per device with LoRA: the sampler's and the teacher's
//! replicas compute with the policy's own base tensors (the same storage),
//! own only their adapters, and a sync copies the adapters alone.

use anyhow::Result;
use rlsd::actors::commit::{Frozen, ReplicaSpec};
use rlsd::actors::replica::Replica;
use rlsd::cuda::Stream;
use rlsd::model::lora::is_adapter_name;
use rlsd::model::lora_config::TARGET_MODULES;
use rlsd::model::{Config, LoadedModel, LoraConfig};
use tch::{Device, Tensor};

/// A random tiny policy with adapters on all seven projections, `B` made
/// non-zero so the adapters change the outputs.
fn lora_policy() -> LoadedModel {
    let mut m = LoadedModel::random(Config::tiny(), Device::Cpu, 3).unwrap();
    let lora = LoraConfig {
        rank: 4,
        target_modules: TARGET_MODULES.map(String::from).to_vec(),
        ..LoraConfig::default()
    };
    m.attach_lora(&lora).unwrap();
    step_adapters(&m, 0.05);
    m
}

/// Stand-in for an optimizer step: move every adapter matrix.
fn step_adapters(m: &LoadedModel, by: f64) {
    tch::no_grad(|| {
        for (n, v) in m.vs.variables() {
            if is_adapter_name(&n) {
                let _ = v.shallow_clone().g_add_scalar_(by);
            }
        }
    });
}

fn logits(m: &LoadedModel) -> Tensor {
    let x = Tensor::from_slice(&[1i64, 5, 9, 2, 7]).view([1, -1]);
    m.lm.forward_all(&x, None).unwrap()
}

/// `(name, data pointer)` of every base (true) or adapter (false) parameter.
fn pointers(m: &LoadedModel, base: bool) -> Vec<(String, usize)> {
    let mut v: Vec<(String, usize)> =
        m.vs.variables()
            .into_iter()
            .filter(|(n, _)| is_adapter_name(n) != base)
            .map(|(n, t)| (n, t.data_ptr() as usize))
            .collect();
    v.sort();
    v
}

/// Bytes of the adapter matrices of `m`.
fn adapter_bytes(m: &LoadedModel) -> usize {
    m.adapter_tensors()
        .iter()
        .map(|(_, t)| t.numel() * t.kind().elt_size_in_bytes())
        .sum()
}

#[test]
fn a_replica_computes_with_the_policys_base_and_syncs_adapters_only() -> Result<()> {
    let policy = lora_policy();
    let mut replica = policy.replicate(Device::Cpu)?;
    assert!(replica.shares_base);
    // Same storage for every base tensor, separate storage for the adapters.
    let base = pointers(&policy, true);
    assert!(base.len() > 10);
    assert_eq!(pointers(&replica, true), base);
    let (pa, ra) = (pointers(&policy, false), pointers(&replica, false));
    assert_eq!(pa.len(), ra.len());
    assert!(pa.iter().zip(&ra).all(|(a, b)| a.0 == b.0 && a.1 != b.1));
    assert!(logits(&replica).equal(&logits(&policy)));

    // A step moves the policy's adapters; the replica lags until it syncs.
    step_adapters(&policy, 0.01);
    assert!(!logits(&replica).equal(&logits(&policy)));
    let snap = policy.sync_snapshot(1)?;
    assert!(snap.is_adapter_only());
    assert_eq!(snap.tensors.len(), pa.len());
    let copied = replica.load_snapshot_counted(&snap)?;
    assert_eq!(copied.tensors, pa.len());
    assert_eq!(copied.bytes, adapter_bytes(&policy));
    assert_eq!(pointers(&replica, true), base);
    assert!(logits(&replica).equal(&logits(&policy)));

    // A full snapshot (an older checkpoint's teacher) writes the adapters
    // alone too: a shared base is never written.
    let full = policy.snapshot(1)?;
    assert!(full.tensors.len() > pa.len());
    assert_eq!(replica.load_snapshot_counted(&full)?.tensors, pa.len());
    // Merging would write the shared base: refused.
    assert!(replica.merge_lora().is_err());
    Ok(())
}

#[test]
fn without_an_adapter_a_replica_is_a_deep_copy() -> Result<()> {
    let policy = LoadedModel::random(Config::tiny(), Device::Cpu, 3)?;
    let mut replica = policy.replicate(Device::Cpu)?;
    assert!(!replica.shares_base);
    let (a, b) = (pointers(&policy, true), pointers(&replica, true));
    assert!(a.iter().zip(&b).all(|(x, y)| x.0 == y.0 && x.1 != y.1));
    assert!(policy.shared_base().is_err());
    let copied = replica.load_snapshot_counted(&policy.sync_snapshot(1)?)?;
    assert_eq!(copied.tensors, a.len());
    Ok(())
}

#[test]
fn the_actors_replicas_share_one_base_and_install_adapters_only() -> Result<()> {
    let policy = lora_policy();
    let (s, t) = ReplicaSpec::pair(&policy, Device::Cpu, Device::Cpu, false)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    let base = pointers(&policy, true);
    rt.block_on(async {
        let published = Frozen::new(policy.sync_snapshot(0).unwrap());
        let mut sampler = Replica::build(s, published.clone(), Stream::none())
            .await
            .unwrap();
        let teacher = Replica::build(t, published, Stream::none()).await.unwrap();
        for r in [&sampler, &teacher] {
            let got = r.run(|m| Ok(pointers(m, true))).await.unwrap();
            assert_eq!(got, base);
        }
        step_adapters(&policy, 0.02);
        let want = logits(&policy);
        sampler
            .install(&Frozen::new(policy.sync_snapshot(1).unwrap()))
            .await
            .unwrap();
        assert_eq!(sampler.version(), 1);
        assert_eq!(sampler.last_sync().bytes, adapter_bytes(&policy));
        let got = sampler.run(|m| Ok(logits(m))).await.unwrap();
        assert!(got.equal(&want));
    });
    Ok(())
}

/// Deep copies of the base tensors, by name.
fn base_copies(m: &LoadedModel) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> =
        m.vs.variables()
            .into_iter()
            .filter(|(n, _)| !is_adapter_name(n))
            .map(|(n, t)| (n, t.copy()))
            .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Greedy ids of 8 new tokens after two prompts.
fn greedy(m: &LoadedModel) -> Vec<Vec<i64>> {
    let opts = rlsd::model::GenerateOptions {
        max_new_tokens: 8,
        greedy: true,
        ..rlsd::model::GenerateOptions::default()
    };
    let prompts = vec![vec![1i64, 5, 9], vec![4i64, 2, 7, 7]];
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    tch::no_grad(|| rlsd::model::generate(&m.lm, &prompts, &opts, &mut rng))
        .unwrap()
        .into_iter()
        .map(|g| g.tokens)
        .collect()
}

#[test]
fn merged_generation_equals_unmerged_and_remerges_at_each_sync() -> Result<()> {
    let policy = lora_policy();
    let before = base_copies(&policy);
    let (s, _) = ReplicaSpec::pair(&policy, Device::Cpu, Device::Cpu, true)?;
    assert!(s.merged);
    let mut merged = s.build(&Frozen::new(policy.sync_snapshot(0)?))?;
    // The adapted weights are the replica's own; the rest is shared.
    let (pp, mp) = (pointers(&policy, true), pointers(&merged, true));
    for ((n, a), (_, b)) in pp.iter().zip(&mp) {
        // (biases and norms stay shared)
        let adapted =
            n.starts_with("model.layers.") && n.ends_with("proj.weight") && !n.contains("norm");
        assert_eq!(a != b, adapted, "{n}");
    }
    let d = (logits(&merged) - logits(&policy))
        .abs()
        .max()
        .double_value(&[]);
    assert!(d < 1e-5, "merged logits off by {d}");
    assert_eq!(greedy(&merged), greedy(&policy));
    // A step, a sync, a re-merge: equal again, and the base is untouched.
    step_adapters(&policy, 0.03);
    merged.load_snapshot(&policy.sync_snapshot(1)?)?;
    let base = s.merge_base().unwrap();
    merged.remerge(&base)?;
    let d = (logits(&merged) - logits(&policy))
        .abs()
        .max()
        .double_value(&[]);
    assert!(d < 1e-5, "re-merged logits off by {d}");
    assert_eq!(greedy(&merged), greedy(&policy));
    for ((n, a), (_, b)) in before.iter().zip(&base_copies(&policy)) {
        assert!(a.equal(b), "the shared base tensor {n} changed");
    }
    // Merging into the shared base itself is refused.
    let mut plain = policy.replicate(Device::Cpu)?;
    assert!(plain.remerge(&base).is_err());
    Ok(())
}
