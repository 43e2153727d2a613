//! The one record of a response's per-token credit.

use serde::{Deserialize, Serialize};

/// One response with its prompt, verdict and per-token credit: the one
/// record the completions log, `rlsd inspect` and the step callback share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseRecord {
    /// Index of the prompt within the step.
    pub group: usize,
    /// The prompt's example id.
    pub example_id: String,
    /// The user prompt (before the chat template).
    pub prompt: String,
    /// The reference answer.
    pub answer: String,
    /// The response text.
    pub response: String,
    /// The response's token ids.
    pub response_ids: Vec<i64>,
    /// Each response token decoded on its own.
    pub tokens: Vec<String>,
    /// Verifier reward.
    #[serde(with = "nan_f32")]
    pub reward: f32,
    /// Verifier verdict.
    pub correct: bool,
    /// The verifier's short reason.
    pub reason: String,
    /// Group-relative advantage `A_i`.
    #[serde(with = "nan_f32")]
    pub advantage: f32,
    /// `Ahat_t` per token.
    #[serde(with = "nan_vec")]
    pub ahat: Vec<f32>,
    /// Raw token weight `w_t` per token, where the algorithm has one.
    #[serde(default, with = "nan_opt_vec")]
    pub weights: Option<Vec<f32>>,
    /// `delta_t` (teacher minus student log-prob) per token, where a teacher scored.
    #[serde(default, with = "nan_opt_vec")]
    pub delta: Option<Vec<f32>>,
    /// Per token, 1 where the model wrote it (trained) and 0 where an
    /// environment did (a tool result or observation: no loss, no credit);
    /// absent for a single-turn response, where every token is the model's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained: Option<Vec<f32>>,
}

impl ResponseRecord {
    /// The tokens for display: each run of untrained (environment) tokens
    /// wrapped in `⟦ ⟧`.
    pub fn display_tokens(&self) -> Vec<String> {
        let Some(mask) = &self.trained else {
            return self.tokens.clone();
        };
        let env = |j: usize| mask.get(j).is_some_and(|&m| m == 0.0);
        let n = self.tokens.len();
        (0..n)
            .map(|j| {
                let mut t = self.tokens[j].clone();
                if env(j) && (j == 0 || !env(j - 1)) {
                    t.insert(0, '⟦');
                }
                if env(j) && (j + 1 == n || !env(j + 1)) {
                    t.push('⟧');
                }
                t
            })
            .collect()
    }

    /// `w_t` per token, 1 where the algorithm has no weight.
    pub fn weights_or_ones(&self) -> Vec<f32> {
        self.weights
            .clone()
            .unwrap_or_else(|| vec![1.0; self.ahat.len()])
    }

    /// `delta_t` per token, 0 where the algorithm has no teacher.
    pub fn delta_or_zeros(&self) -> Vec<f32> {
        self.delta
            .clone()
            .unwrap_or_else(|| vec![0.0; self.ahat.len()])
    }
}

/// JSON has no NaN: non-finite numbers are written as `null` and read back as NaN.
mod nan_f32 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &f32, s: S) -> std::result::Result<S::Ok, S::Error> {
        v.is_finite().then_some(*v).serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<f32, D::Error> {
        Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
    }
}

/// [`nan_f32`] for vectors.
mod nan_vec {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        v: &[f32],
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let o: Vec<Option<f32>> = v.iter().map(|x| x.is_finite().then_some(*x)).collect();
        o.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Vec<f32>, D::Error> {
        let o = Vec::<Option<f32>>::deserialize(d)?;
        Ok(o.into_iter().map(|x| x.unwrap_or(f32::NAN)).collect())
    }
}

/// [`nan_f32`] for optional vectors.
mod nan_opt_vec {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        v: &Option<Vec<f32>>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let o: Option<Vec<Option<f32>>> = v
            .as_ref()
            .map(|v| v.iter().map(|x| x.is_finite().then_some(*x)).collect());
        o.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<Vec<f32>>, D::Error> {
        let o = Option::<Vec<Option<f32>>>::deserialize(d)?;
        Ok(o.map(|v| v.into_iter().map(|x| x.unwrap_or(f32::NAN)).collect()))
    }
}
