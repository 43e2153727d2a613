//! Every parameter's accumulated gradient, taken out of a model (copied,
//! then zeroed in the model so the next backward starts clean).
//! `#[path]`-included by tests/model_memory.rs and tests/train_shared_prompt.rs.

use rlsd::model::LoadedModel;
use std::collections::BTreeMap;
use tch::Tensor;

/// A copy of each parameter's gradient by name; the model's are zeroed.
pub fn take_grads(m: &LoadedModel) -> BTreeMap<String, Tensor> {
    let out =
        m.vs.variables()
            .into_iter()
            .map(|(n, v)| (n, v.grad().copy()))
            .collect();
    m.vs.variables().values().for_each(|v| {
        let mut g = v.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    });
    out
}
