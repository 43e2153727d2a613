//! Which actors' transient work can coincide on one device, and so each
//! device's predicted peak ([`device_totals`]).
//!
//! Every actor's memory is split into what it holds for the whole run
//! (weights, gradients, AdamW moments, snapshots, kept versions) and what
//! exists only while it works ([`is_transient`]: a train step's activations,
//! output-head chunks and AdamW update; a generation's KV cache, logits and
//! prefill; a teacher pass's KV cache, layer work and head chunks). The held
//! parts always add up. The transient parts add up only where the pipeline
//! lets the actors work at once, which `runtime.max_staleness = s` decides
//! (step `k` is sampled with a version at least `k - 1 - s`, the teacher
//! scores a step's whole batch after its generation, and the optimizer trains
//! step `k` after the teacher scored it):
//!
//! - `s = 0`: one actor works at a time (step `k + 1` needs step `k`'s
//!   commit), so the peak is the largest transient, `max(o, g, t)`;
//! - `s = 1`: while the optimizer trains step `k`, the sampler generates step
//!   `k + 1` and then the teacher scores it, one after the other; the sampler
//!   may start step `k + 2` only after step `k`'s commit, when the optimizer
//!   waits for the teacher. The peak is `max(o + max(g, t), g + t)`;
//! - `s >= 2`: all three may work at once, `o + g + t`.
//!
//! `o`, `g` and `t` are the optimizer's, sampler's and teacher's transient
//! bytes on the device (0 for an actor placed elsewhere). The sequential
//! loops (data-parallel ranks, the vision-language loop, `rlsd compare`)
//! are the `s = 0` case.
//!
//! Checked against the measured peak of an 8 x 8 run at the real vocabulary
//! (docs/benchmarks/memory.md): adding all three transients as if they
//! peaked together overestimated it by 6-8%.

use super::{overhead, total, ActorPlan};

/// Items that exist only while their actor works on a batch.
pub const TRANSIENT: [&str; 10] = [
    "activations",
    "output head",
    "AdamW update",
    "KV cache",
    "logits",
    "prefill",
    "layer work",
    "vision activations",
    "vision forward",
    "image features",
];

/// Whether the item named `what` exists only while its actor works.
pub fn is_transient(what: &str) -> bool {
    TRANSIENT.contains(&what)
}

/// The transient bytes that can be live at once on a device whose
/// optimizer, sampler and teacher need `o`, `g` and `t` (module docs).
pub fn concurrent_transient(max_staleness: u64, o: f64, g: f64, t: f64) -> f64 {
    match max_staleness {
        0 => o.max(g).max(t),
        1 => (o + g.max(t)).max(g + t),
        _ => o + g + t,
    }
}

/// Each device's predicted peak: its runtime overhead, every held item of
/// its actors, and the transient work that can coincide there.
pub fn device_totals(actors: &[ActorPlan], max_staleness: u64) -> Vec<(String, f64)> {
    let mut devices: Vec<String> = Vec::new();
    for a in actors {
        if !devices.contains(&a.device) {
            devices.push(a.device.clone());
        }
    }
    devices
        .into_iter()
        .map(|d| {
            let here: Vec<&ActorPlan> = actors.iter().filter(|a| a.device == d).collect();
            let held: f64 = here
                .iter()
                .flat_map(|a| &a.items)
                .filter(|i| !is_transient(i.what))
                .map(|i| i.bytes)
                .sum();
            let work = |actor: &str| -> f64 {
                here.iter()
                    .filter(|a| a.actor == actor)
                    .map(|a| total(&a.items) - held_of(a))
                    .sum()
            };
            let busy = concurrent_transient(
                max_staleness,
                work("optimizer"),
                work("sampler"),
                work("teacher"),
            );
            let peak = overhead(&d) + held + busy;
            (d, peak)
        })
        .collect()
}

fn held_of(a: &ActorPlan) -> f64 {
    a.items
        .iter()
        .filter(|i| !is_transient(i.what))
        .map(|i| i.bytes)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Item;

    fn actor(name: &'static str, device: &str, held: f64, work: f64) -> ActorPlan {
        ActorPlan {
            actor: name,
            device: device.into(),
            items: vec![
                Item {
                    what: "weights",
                    bytes: held,
                },
                Item {
                    what: "KV cache",
                    bytes: work,
                },
            ],
        }
    }

    #[test]
    fn staleness_decides_which_transients_add_up() {
        // o = 5, g = 2, t = 3 (hand-computed from the module docs' rules).
        assert_eq!(concurrent_transient(0, 5.0, 2.0, 3.0), 5.0);
        assert_eq!(concurrent_transient(1, 5.0, 2.0, 3.0), 8.0);
        assert_eq!(concurrent_transient(1, 1.0, 2.0, 3.0), 5.0);
        assert_eq!(concurrent_transient(2, 5.0, 2.0, 3.0), 10.0);
        assert_eq!(concurrent_transient(7, 5.0, 2.0, 3.0), 10.0);
    }

    #[test]
    fn held_items_always_add_and_devices_are_apart() {
        let actors = vec![
            actor("optimizer", "cpu", 10.0, 5.0),
            actor("sampler", "cpu", 1.0, 2.0),
            actor("teacher", "cuda:0", 4.0, 3.0),
        ];
        let cpu = overhead("cpu");
        let gpu = overhead("cuda:0");
        // On the CPU: held 11, transient max(5 + 2, 2) = 7 at staleness 1.
        assert_eq!(
            device_totals(&actors, 1),
            vec![
                ("cpu".to_string(), cpu + 18.0),
                ("cuda:0".to_string(), gpu + 7.0)
            ]
        );
        // Staleness 0: only the larger transient, 5.
        assert_eq!(device_totals(&actors, 0)[0].1, cpu + 16.0);
    }
}
