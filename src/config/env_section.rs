//! `[env]`: the environment a rollout plays against. With `kind = "none"`
//! (the default) a rollout is one model turn scored by the verifier; any
//! other kind makes each rollout a multi-turn episode
//! (`pipeline::multi_turn`): the model's turn ends on EOS, a stop string or a
//! complete tool call, the environment answers, and the episode's reward
//! comes from the environment (docs/AGENTS.md).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The most model turns one episode may take (`env.max_turns`).
pub(crate) const MAX_TURNS: usize = 1024;

/// Which environment serves the episodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnvKind {
    /// No environment: single-turn rollouts scored by `[verifier]`.
    #[default]
    None,
    /// A long-lived worker process speaking the JSON-lines protocol
    /// (`env.program`, `env.args`; `env::CommandEnvironment`).
    Command,
    /// The built-in arithmetic task with a calculator tool.
    BuiltinCalculator,
}

/// The tool-call convention the model writes (`env::ToolFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvToolFormat {
    /// `<tool_call>{json}</tool_call>` (Qwen2.5 / Qwen3 / Hermes).
    #[default]
    Hermes,
    /// A bare JSON object (Llama 3.1 JSON tool calling).
    Llama3Json,
}

/// `[env]`: the environment of multi-turn episodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvConfig {
    /// `none`, `command` or `builtin-calculator`.
    pub kind: EnvKind,
    /// The environment program (`kind = "command"`), found on `PATH` or a path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Its arguments.
    pub args: Vec<String>,
    /// Most model turns per episode; past it the environment's `finish` scores it.
    pub max_turns: usize,
    /// Limit on each environment call (start, step, finish), in seconds: a
    /// call past it ends its episode with reward 0 and is counted.
    pub turn_timeout_s: f64,
    /// Extra stop strings that end a model turn (the tool format's own,
    /// `</tool_call>` for Hermes, are always added).
    pub stop: Vec<String>,
    /// How the model writes tool calls.
    pub tool_format: EnvToolFormat,
}

impl Default for EnvConfig {
    fn default() -> Self {
        EnvConfig {
            kind: EnvKind::None,
            program: None,
            args: Vec::new(),
            max_turns: 4,
            turn_timeout_s: 30.0,
            stop: Vec::new(),
            tool_format: EnvToolFormat::Hermes,
        }
    }
}

impl EnvConfig {
    /// Whether rollouts are multi-turn episodes.
    pub fn enabled(&self) -> bool {
        self.kind != EnvKind::None
    }

    /// [`EnvConfig::turn_timeout_s`] as a duration (after [`EnvConfig::validate`]).
    pub fn turn_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.turn_timeout_s)
    }

    /// Check the values; the error names the key (`env.<field>`).
    pub fn validate(&self) -> Result<()> {
        if self.max_turns == 0 || self.max_turns > MAX_TURNS {
            return Err(Error::config(
                "env.max_turns",
                format!("must be in 1..={MAX_TURNS}, found {}", self.max_turns),
            ));
        }
        let t = self.turn_timeout_s;
        if !(t.is_finite() && t > 0.0 && t <= super::checks::MAX_SECONDS) {
            return Err(Error::config(
                "env.turn_timeout_s",
                format!(
                    "must be a positive number of seconds up to {:e}, found {t}",
                    super::checks::MAX_SECONDS
                ),
            ));
        }
        if let Some(i) = self.stop.iter().position(String::is_empty) {
            return Err(Error::config(
                "env.stop",
                format!("stop string {i} is empty"),
            ));
        }
        match (self.kind, self.program.as_deref()) {
            (EnvKind::Command, None) => Err(Error::config(
                "env.program",
                "is required with env.kind = \"command\" (the environment program to start)",
            )),
            (EnvKind::Command, Some(p)) if p.trim().is_empty() => {
                Err(Error::config("env.program", "is empty"))
            }
            (EnvKind::None | EnvKind::BuiltinCalculator, Some(_)) => Err(Error::config(
                "env.program",
                "is only read with env.kind = \"command\"",
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;

    fn err(toml: &str) -> String {
        RunConfig::from_toml_str(toml).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_single_turn_and_valid() {
        let c = EnvConfig::default();
        assert!(!c.enabled());
        c.validate().unwrap();
        assert_eq!(c.turn_timeout(), Duration::from_secs(30));
    }

    #[test]
    fn a_command_environment_reads_its_program() {
        let c = RunConfig::from_toml_str(
            "[env]\nkind = \"command\"\nprogram = \"python3\"\nargs = [\"env.py\"]\n\
             max_turns = 3\nturn_timeout_s = 2.5\ntool_format = \"llama3_json\"\n",
        )
        .unwrap();
        assert_eq!(c.env.kind, EnvKind::Command);
        assert_eq!(c.env.program.as_deref(), Some("python3"));
        assert_eq!(c.env.args, ["env.py"]);
        assert_eq!(c.env.max_turns, 3);
        assert_eq!(c.env.turn_timeout(), Duration::from_millis(2500));
        assert_eq!(c.env.tool_format, EnvToolFormat::Llama3Json);
        let c = RunConfig::from_toml_str("[env]\nkind = \"builtin-calculator\"\n").unwrap();
        assert!(c.env.enabled());
    }

    #[test]
    fn bad_values_name_their_key() {
        for (toml, key) in [
            ("[env]\nkind = \"command\"\n", "env.program"),
            (
                "[env]\nkind = \"command\"\nprogram = \" \"\n",
                "env.program",
            ),
            ("[env]\nprogram = \"x\"\n", "env.program"),
            ("[env]\nmax_turns = 0\n", "env.max_turns"),
            ("[env]\nmax_turns = 100000\n", "env.max_turns"),
            ("[env]\nturn_timeout_s = 0\n", "env.turn_timeout_s"),
            ("[env]\nturn_timeout_s = nan\n", "env.turn_timeout_s"),
            ("[env]\nturn_timeout_s = 1e300\n", "env.turn_timeout_s"),
            ("[env]\nstop = [\"\"]\n", "env.stop"),
            ("[env]\nkind = \"game\"\n", "env.kind"),
            ("[env]\ntool_format = \"xml\"\n", "env.tool_format"),
        ] {
            let e = err(toml);
            assert!(e.contains(key), "{toml}: {e}");
        }
    }
}
