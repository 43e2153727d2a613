//! Dataset schemas: which columns veRL, TRL and plain files keep their
//! prompt, answer and id in, and telling them apart from the first row.
//!
//! - veRL (`verl/utils/dataset/rl_dataset.py` reads these): `prompt` is a list
//!   of chat messages, the gold answer is `reward_model.ground_truth`, the
//!   source is `data_source`, and `extra_info.index` numbers the rows.
//! - TRL: "standard" rows hold text (`prompt`, `completion`), "conversational"
//!   rows hold message lists in the same columns; RL recipes add the gold
//!   answer as `answer`, `solution` or `ground_truth`.
//!   A `messages` column (TRL's conversational language-modeling rows:
//!   whole conversations) with no `prompt` column is also TRL: the prompt is
//!   the conversation up to its last user turn, the answer the first of the
//!   answer columns present, else the last assistant message.
//! - plain: `prompt`, `answer`, `privileged`, `id`.

use super::config::{ColumnNames, Columns, DataFormat};
use super::images::{IMAGES, TRL_IMAGE};
use super::row::{Cell, RawRow, MESSAGES};

/// veRL's answer column.
pub const VERL_ANSWER: &str = "reward_model.ground_truth";
/// veRL's row index.
pub const VERL_ID: &str = "extra_info.index";
/// Where TRL datasets keep the gold answer, in the order they are tried.
pub const TRL_ANSWERS: [&str; 4] = ["answer", "solution", "ground_truth", "completion"];

/// The schema of a file: the configured one, or (for `auto`) the one the
/// first row looks like.
pub(crate) fn detect(format: DataFormat, first: Option<&RawRow>) -> DataFormat {
    if format != DataFormat::Auto {
        return format;
    }
    let Some(row) = first else {
        return DataFormat::Plain;
    };
    if row.has(VERL_ANSWER) {
        return DataFormat::Verl;
    }
    let chat_prompt = matches!(row.get("prompt"), Cell::List(_));
    if chat_prompt
        || is_conversation(row)
        || ["completion", "solution", "ground_truth"]
            .iter()
            .any(|c| row.has(c))
    {
        return DataFormat::Trl;
    }
    DataFormat::Plain
}

/// Whether a row is one TRL conversation: a `messages` list and no
/// `prompt` column.
fn is_conversation(row: &RawRow) -> bool {
    matches!(row.get(MESSAGES), Cell::List(_)) && !row.has("prompt")
}

/// The concrete columns for a file of `format` (not `auto`): the format's
/// defaults, then the config's overrides. TRL's answer column is the first
/// of [`TRL_ANSWERS`] the first row has (`answer` when it has none, so the
/// error names the usual one).
pub(crate) fn columns_for(
    format: DataFormat,
    names: &ColumnNames,
    first: Option<&RawRow>,
) -> Columns {
    let mut cols = Columns::default();
    match format {
        DataFormat::Verl => {
            cols.answer = VERL_ANSWER.into();
            cols.id = VERL_ID.into();
        }
        DataFormat::Trl => {
            let conversation = first.is_some_and(is_conversation);
            if conversation {
                cols.prompt = MESSAGES.into();
            }
            if let Some(found) = first.and_then(|r| TRL_ANSWERS.into_iter().find(|c| r.has(c))) {
                cols.answer = found.into();
            } else if conversation {
                cols.answer = MESSAGES.into();
            }
        }
        DataFormat::Plain | DataFormat::Auto => {}
    }
    let pick = |over: &Option<String>, default: String| over.clone().unwrap_or(default);
    Columns {
        prompt: pick(&names.prompt, cols.prompt),
        answer: pick(&names.answer, cols.answer),
        privileged: pick(&names.privileged, cols.privileged),
        id: pick(&names.id, cols.id),
    }
}

/// The images column of a file: the configured one, else `images`; TRL
/// rows that have no `images` but an `image` column use that (TRL's
/// single-image vision datasets).
pub(crate) fn images_column(
    format: DataFormat,
    names: &ColumnNames,
    first: Option<&RawRow>,
) -> String {
    if let Some(column) = &names.images {
        return column.clone();
    }
    let single =
        format == DataFormat::Trl && first.is_some_and(|r| !r.has(IMAGES) && r.has(TRL_IMAGE));
    if single { TRL_IMAGE } else { IMAGES }.to_string()
}

/// The format's name as written in configs.
pub fn format_name(format: DataFormat) -> &'static str {
    match format {
        DataFormat::Auto => "auto",
        DataFormat::Verl => "verl",
        DataFormat::Trl => "trl",
        DataFormat::Plain => "plain",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: Vec<(&str, Cell)>) -> RawRow {
        RawRow {
            line: 1,
            cells: cells.into_iter().map(|(n, c)| (n.to_string(), c)).collect(),
        }
    }

    fn s(x: &str) -> Cell {
        Cell::Str(x.into())
    }

    #[test]
    fn detects_verl_trl_and_plain() {
        let verl = row(vec![
            ("prompt", Cell::List(vec![])),
            (
                "reward_model",
                Cell::Struct(vec![("ground_truth".into(), s("4"))]),
            ),
        ]);
        assert_eq!(detect(DataFormat::Auto, Some(&verl)), DataFormat::Verl);
        let trl = row(vec![("prompt", s("q")), ("solution", s("4"))]);
        assert_eq!(detect(DataFormat::Auto, Some(&trl)), DataFormat::Trl);
        let conv = row(vec![("prompt", Cell::List(vec![])), ("answer", s("4"))]);
        assert_eq!(detect(DataFormat::Auto, Some(&conv)), DataFormat::Trl);
        let messages = row(vec![("messages", Cell::List(vec![]))]);
        assert_eq!(detect(DataFormat::Auto, Some(&messages)), DataFormat::Trl);
        let c = columns_for(DataFormat::Trl, &ColumnNames::default(), Some(&messages));
        assert_eq!(
            (c.prompt.as_str(), c.answer.as_str()),
            ("messages", "messages")
        );
        let plain = row(vec![("prompt", s("q")), ("answer", s("4"))]);
        assert_eq!(detect(DataFormat::Auto, Some(&plain)), DataFormat::Plain);
        // A configured format is kept whatever the row looks like.
        assert_eq!(detect(DataFormat::Plain, Some(&verl)), DataFormat::Plain);
    }

    #[test]
    fn columns_follow_the_format_and_the_overrides() {
        let none = ColumnNames::default();
        let c = columns_for(DataFormat::Verl, &none, None);
        assert_eq!((c.answer.as_str(), c.id.as_str()), (VERL_ANSWER, VERL_ID));
        let trl = row(vec![
            ("prompt", s("q")),
            ("completion", s("c")),
            ("solution", s("4")),
        ]);
        assert_eq!(
            columns_for(DataFormat::Trl, &none, Some(&trl)).answer,
            "solution"
        );
        let over = ColumnNames {
            answer: Some("meta.gold".into()),
            ..ColumnNames::default()
        };
        let c = columns_for(DataFormat::Verl, &over, None);
        assert_eq!(
            (c.prompt.as_str(), c.answer.as_str()),
            ("prompt", "meta.gold")
        );
    }
}
