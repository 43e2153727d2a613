//! A dataset in memory, its per-epoch seeded order, and the cursor that a
//! checkpoint saves so a resumed run continues with the next unseen prompt.
//!
//! The order of epoch `e` is a pure function of `(seed, e, len)`, so a
//! [`DataCursor`] of a few integers is all the state there is: restoring it
//! into a dataset built from the same file gives exactly the examples that
//! the interrupted run had not yet handed out.

use super::config::{DataConfig, FileType, OnBadRow};
use super::jsonl::jsonl_rows;
use super::parquet::parquet_rows;
use super::prompt::StudentPrompt;
use super::row::{example_from_row, RawRow};
use super::schema;
use super::task::ArithmeticTask;
use super::Example;
use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Position in the stream of examples: which epoch, and how many examples of
/// it were already handed out. Saved in checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataCursor {
    /// Seed of the per-epoch shuffle.
    pub seed: u64,
    /// Whether epochs are shuffled.
    pub shuffle: bool,
    /// Current epoch, from 0.
    pub epoch: u64,
    /// Examples of the current epoch already handed out.
    pub position: usize,
    /// Number of examples in the dataset (checked on restore).
    pub len: usize,
    /// Passes over the data; 0 repeats forever.
    pub epochs: u64,
}

impl DataCursor {
    /// Whether every epoch has been handed out.
    pub fn is_exhausted(&self) -> bool {
        self.epochs != 0 && self.epoch >= self.epochs
    }

    /// Examples handed out since the start, over all epochs.
    pub fn consumed(&self) -> u64 {
        self.epoch * self.len as u64 + self.position as u64
    }
}

/// The examples of a run with their order and a cursor.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Where the examples came from (a path, or the built-in task), for messages.
    source: String,
    /// All examples, in file order.
    examples: Vec<Example>,
    /// Where the next example comes from.
    cursor: DataCursor,
    /// `order[i]` is the index of the i-th example of `cursor.epoch`.
    order: Vec<usize>,
    /// Malformed rows skipped while loading (`on_bad_row = "skip"`).
    skipped: usize,
}

impl Dataset {
    /// Build from examples already in memory. An empty list is an error.
    pub fn from_examples(
        source: impl Into<String>,
        examples: Vec<Example>,
        seed: u64,
        shuffle: bool,
        epochs: u64,
    ) -> Result<Self> {
        let source = source.into();
        if examples.is_empty() {
            return Err(Error::InvalidInput(format!(
                "dataset {source} has no examples"
            )));
        }
        let cursor = DataCursor {
            seed,
            shuffle,
            epoch: 0,
            position: 0,
            len: examples.len(),
            epochs,
        };
        let order = epoch_order(&cursor);
        Ok(Dataset {
            source,
            examples,
            cursor,
            order,
            skipped: 0,
        })
    }

    /// Load the dataset a config names: a JSONL or Parquet file in the
    /// veRL, TRL or plain schema, or the built-in arithmetic task when `path`
    /// is unset; then apply the student template and the system prompt.
    pub fn from_config(cfg: &DataConfig) -> Result<Self> {
        let student = StudentPrompt::new(&cfg.student_template, cfg.system_prompt.clone())?;
        let Some(path) = &cfg.path else {
            let task = ArithmeticTask::new(cfg.task.clone())?;
            let mut examples = task.examples(cfg.task.num_examples, cfg.task.seed);
            examples.iter_mut().for_each(|ex| student.apply(ex));
            return Dataset::from_examples(
                "built-in arithmetic task",
                examples,
                cfg.seed,
                cfg.shuffle,
                cfg.epochs,
            );
        };
        let (source, files) = data_files(cfg, path)?;
        let mut rows: Vec<(PathBuf, Result<RawRow>)> = Vec::new();
        for (file, file_type) in files {
            let read = match file_type {
                FileType::Parquet => parquet_rows(&file)?,
                _ => jsonl_rows(&file)?,
            };
            rows.extend(read.into_iter().map(|r| (file.clone(), r)));
        }
        let first = rows.iter().find_map(|(_, r)| r.as_ref().ok());
        let format = schema::detect(cfg.format, first);
        let columns = schema::columns_for(format, &cfg.columns, first);
        let images = schema::images_column(format, &cfg.columns, first);
        tracing::debug!(
            path = %path.display(),
            format = schema::format_name(format),
            prompt = %columns.prompt,
            answer = %columns.answer,
            "dataset schema"
        );
        let examples = rows.into_iter().map(|(file, row)| {
            row.and_then(|r: RawRow| example_from_row(&columns, &images, &file, &r))
        });
        let (mut examples, skipped) = collect_rows(examples, cfg.on_bad_row)?;
        if skipped > 0 {
            tracing::warn!(
                path = %path.display(),
                skipped,
                kept = examples.len(),
                "skipped malformed dataset rows"
            );
        }
        if !student.is_identity() {
            examples.iter_mut().for_each(|ex| student.apply(ex));
        }
        let mut dataset =
            Dataset::from_examples(source, examples, cfg.seed, cfg.shuffle, cfg.epochs)?;
        dataset.skipped = skipped;
        Ok(dataset)
    }

    /// Number of examples in one epoch.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Always false: an empty dataset cannot be built.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Where the examples came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Malformed rows skipped while loading.
    pub fn skipped_rows(&self) -> usize {
        self.skipped
    }

    /// All examples in file order.
    pub fn examples(&self) -> &[Example] {
        &self.examples
    }

    /// The current cursor (save it to resume later).
    pub fn cursor(&self) -> &DataCursor {
        &self.cursor
    }

    /// Whether every epoch has been handed out.
    pub fn is_exhausted(&self) -> bool {
        self.cursor.is_exhausted()
    }

    /// Continue from a saved cursor. It must come from a dataset of the same
    /// size, and its position must lie inside the epoch.
    pub fn restore(&mut self, cursor: DataCursor) -> Result<()> {
        if cursor.len != self.examples.len() {
            return Err(Error::InvalidInput(format!(
                "data cursor was saved for {} examples but {} has {}",
                cursor.len,
                self.source,
                self.examples.len()
            )));
        }
        if cursor.position >= cursor.len {
            return Err(Error::InvalidInput(format!(
                "data cursor position {} is outside an epoch of {} examples",
                cursor.position, cursor.len
            )));
        }
        self.order = epoch_order(&cursor);
        self.cursor = cursor;
        Ok(())
    }

    /// The next example, or `None` once every epoch has been handed out.
    pub fn next_example(&mut self) -> Option<Example> {
        if self.cursor.is_exhausted() {
            return None;
        }
        let example = self.examples[self.order[self.cursor.position]].clone();
        self.cursor.position += 1;
        if self.cursor.position == self.cursor.len {
            self.cursor.epoch += 1;
            self.cursor.position = 0;
            if !self.cursor.is_exhausted() {
                self.order = epoch_order(&self.cursor);
            }
        }
        Some(example)
    }

    /// Up to `n` next examples (crossing epoch boundaries); fewer only when
    /// the last epoch ends, empty once the data is exhausted.
    pub fn next_batch(&mut self, n: usize) -> Vec<Example> {
        let mut batch = Vec::with_capacity(n);
        while batch.len() < n {
            match self.next_example() {
                Some(example) => batch.push(example),
                None => break,
            }
        }
        batch
    }
}

/// The order of the examples in the cursor's epoch: the identity without
/// shuffling, otherwise a Fisher-Yates permutation seeded by `(seed, epoch)`.
pub fn epoch_order(cursor: &DataCursor) -> Vec<usize> {
    let mut order: Vec<usize> = (0..cursor.len).collect();
    if cursor.shuffle {
        // Mix epoch into the seed (splitmix64 step) so epochs differ.
        let mut z = cursor.seed.wrapping_add(
            cursor
                .epoch
                .wrapping_add(1)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let mut rng = StdRng::seed_from_u64(z ^ (z >> 31));
        for i in (1..order.len()).rev() {
            let j = rng.random_range(0..=i);
            order.swap(i, j);
        }
    }
    order
}

/// Pick the reader from the config, or from the extension when `auto`.
/// The files `data.path` names, each with its type, and how to name them
/// in messages: the file itself, or a Hub dataset id's Parquet files of
/// `data.subset` / `data.split` ([`super::hub`]).
fn data_files(cfg: &DataConfig, path: &Path) -> Result<(String, Vec<(PathBuf, FileType)>)> {
    if !super::hub::is_dataset_id(path) {
        let file_type = resolve_file_type(path, cfg.file_type)?;
        return Ok((
            path.display().to_string(),
            vec![(path.to_path_buf(), file_type)],
        ));
    }
    let id = path.to_string_lossy();
    let r = super::hub::DatasetRef {
        id: &id,
        subset: cfg.subset.as_deref(),
        split: &cfg.split,
        revision: cfg.revision.as_deref(),
    };
    let files = super::hub::resolve_dataset(&r, &crate::hub::HubEnv::from_env())?;
    let source = format!(
        "{id} ({}split {}, {} Parquet file{})",
        cfg.subset
            .as_deref()
            .map_or(String::new(), |s| format!("subset {s}, ")),
        cfg.split,
        files.len(),
        if files.len() == 1 { "" } else { "s" }
    );
    Ok((
        source,
        files.into_iter().map(|f| (f, FileType::Parquet)).collect(),
    ))
}

fn resolve_file_type(path: &Path, file_type: FileType) -> Result<FileType> {
    if file_type != FileType::Auto {
        return Ok(file_type);
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "jsonl" | "json" | "ndjson" => Ok(FileType::Jsonl),
        "parquet" | "pq" => Ok(FileType::Parquet),
        _ => Err(Error::config(
            "data.file_type",
            format!(
                "cannot tell the format of {} from its extension; set `jsonl` or `parquet`",
                PathBuf::from(path).display()
            ),
        )),
    }
}

/// Keep the good rows; on a bad row stop with its error or skip and count it.
fn collect_rows(
    rows: impl ExactSizeIterator<Item = Result<Example>>,
    on_bad_row: OnBadRow,
) -> Result<(Vec<Example>, usize)> {
    let mut examples = Vec::with_capacity(rows.len());
    let mut skipped = 0;
    for row in rows {
        match row {
            Ok(example) => examples.push(example),
            Err(e) if on_bad_row == OnBadRow::Skip => {
                tracing::warn!("skipping dataset row: {e}");
                skipped += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok((examples, skipped))
}
