//! Where prompts come from: the [`PromptSource`] trait, implemented by
//! datasets, by the built-in task, and by whatever an embedding program brings.

use crate::data::Example;
use crate::error::Result;

/// A stream of training prompts with a cursor that checkpoints can store.
pub trait PromptSource: Send {
    /// The next `n` prompts. An epoch-based source wraps around (reshuffling);
    /// a source that cannot produce `n` more returns an error.
    fn next_batch(&mut self, n: usize) -> Result<Vec<Example>>;

    /// The position after the last prompt handed out, as JSON.
    fn cursor(&self) -> serde_json::Value;

    /// Continue from a cursor previously returned by [`PromptSource::cursor`].
    fn restore(&mut self, cursor: &serde_json::Value) -> Result<()>;
}

impl PromptSource for crate::data::Dataset {
    fn next_batch(&mut self, n: usize) -> Result<Vec<Example>> {
        let batch = crate::data::Dataset::next_batch(self, n);
        if batch.len() < n {
            return Err(crate::Error::InvalidInput(format!(
                "{}: the data ran out ({} of {n} prompts left for this step); raise data.epochs or lower runtime.steps",
                self.source(),
                batch.len()
            )));
        }
        Ok(batch)
    }

    fn cursor(&self) -> serde_json::Value {
        serde_json::to_value(crate::data::Dataset::cursor(self)).unwrap_or_default()
    }

    fn restore(&mut self, cursor: &serde_json::Value) -> Result<()> {
        let c: crate::data::DataCursor = serde_json::from_value(cursor.clone()).map_err(|e| {
            crate::Error::InvalidInput(format!("checkpoint data cursor is malformed: {e}"))
        })?;
        crate::data::Dataset::restore(self, c)
    }
}

/// The prompt source a config describes: `[data]`'s file, or the built-in task.
pub fn from_config(cfg: &crate::config::RunConfig) -> Result<Box<dyn PromptSource>> {
    Ok(Box::new(crate::data::Dataset::from_config(&cfg.data)?))
}
