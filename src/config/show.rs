//! `rlsd config show`: the resolved configuration as TOML, followed by the
//! optional keys it leaves unset, as comments saying what unset means (TOML
//! has no null, so an unset key would otherwise not appear at all).

use super::RunConfig;

/// Every optional key of the run config and what leaving it unset means.
pub const OPTIONAL_KEYS: &[(&str, &str)] = &[
    ("model.revision", "the Hub's `main`"),
    ("data.path", "the built-in arithmetic task"),
    ("data.subset", "a Hub dataset's only subset, or `default`"),
    ("data.revision", "a Hub dataset's `main`"),
    ("data.system_prompt", "no system message"),
    ("data.columns.prompt", "`prompt`"),
    (
        "data.columns.answer",
        "`answer`, or the format's usual column",
    ),
    ("data.columns.privileged", "`privileged`, else the answer"),
    ("data.columns.id", "`id`, else file:line"),
    (
        "data.columns.images",
        "`images` (TRL: else `image`); none: a text prompt",
    ),
    ("algo.lambda0", "the algorithm's default"),
    ("algo.lambda_decay_steps", "the algorithm's default"),
    ("verifier.format", "no format reward"),
    (
        "validation.path",
        "built-in task problems held out from training",
    ),
];

/// Whether the dotted `key` has a value in `table`.
fn is_set(table: &toml::Value, key: &str) -> bool {
    key.split('.')
        .try_fold(table, |v, part| v.get(part))
        .is_some()
}

/// The resolved config as TOML, then a comment line per unset optional key.
pub fn show(cfg: &RunConfig) -> String {
    let mut out = cfg.to_toml();
    let value = toml::Value::try_from(cfg).unwrap_or(toml::Value::Table(Default::default()));
    let unset: Vec<_> = OPTIONAL_KEYS
        .iter()
        .filter(|(k, _)| !is_set(&value, k))
        .collect();
    if !unset.is_empty() {
        out.push_str("\n# Optional keys left unset (set them in the file or with --set):\n");
        for (key, meaning) in unset {
            out.push_str(&format!("# {key}: unset = {meaning}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_optional_keys_are_listed_and_set_ones_are_not() {
        let cfg = RunConfig::from_toml_str("").unwrap();
        let text = show(&cfg);
        for (key, _) in OPTIONAL_KEYS {
            assert!(text.contains(&format!("# {key}: unset")), "{key}\n{text}");
        }
        let cfg = RunConfig::from_toml_str(
            "[model]\nrevision = \"v1\"\n[data.columns]\nprompt = \"question\"\n",
        )
        .unwrap();
        let text = show(&cfg);
        assert!(!text.contains("# model.revision: unset"), "{text}");
        assert!(!text.contains("# data.columns.prompt: unset"), "{text}");
        assert!(text.contains("# data.path: unset"), "{text}");
        // The output still parses back to the same configuration.
        let back = RunConfig::from_toml_str(&text).unwrap();
        assert_eq!(back.to_toml(), cfg.to_toml());
    }
}
