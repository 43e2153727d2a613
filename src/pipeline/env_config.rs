//! The environment an `[env]` section names.

use crate::config::{EnvConfig, EnvKind, EnvToolFormat};
use crate::env::calculator::CalculatorEnvironment;
use crate::env::{CommandEnvironment, Environment, ToolFormat};
use crate::error::{Error, Result};
use crate::worker::WorkerConfig;
use std::sync::Arc;

/// The environment of `cfg` (`None` for `kind = "none"`: single-turn
/// rollouts). A `command` environment's process starts with its first episode.
pub fn build_environment(cfg: &EnvConfig) -> Result<Option<Arc<dyn Environment>>> {
    match cfg.kind {
        EnvKind::None => Ok(None),
        EnvKind::Command => {
            let program = cfg.program.clone().ok_or_else(|| {
                Error::config("env.program", "is required with env.kind = \"command\"")
            })?;
            let worker = WorkerConfig {
                program,
                args: cfg.args.clone(),
                timeout_ms: (cfg.turn_timeout_s * 1000.0).ceil().max(1.0) as u64,
            };
            Ok(Some(Arc::new(CommandEnvironment::new(worker, "env")?)))
        }
        EnvKind::BuiltinCalculator => Ok(Some(Arc::new(CalculatorEnvironment {
            format: tool_format(cfg.tool_format),
            ..CalculatorEnvironment::default()
        }))),
    }
}

/// The tool-call convention of `format`.
pub fn tool_format(format: EnvToolFormat) -> ToolFormat {
    match format {
        EnvToolFormat::Hermes => ToolFormat::Hermes,
        EnvToolFormat::Llama3Json => ToolFormat::Llama3Json,
    }
}

/// The stop strings that end a model turn: `extra` (e.g. `rollout.stop`),
/// then `env.stop`, then the tool format's own (`</tool_call>`), each once.
pub fn turn_stop_strings(cfg: &EnvConfig, extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let own = tool_format(cfg.tool_format).stop_strings();
    for s in extra.iter().chain(&cfg.stop).chain(&own) {
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_add_the_tool_formats_own_once() {
        let cfg = EnvConfig {
            stop: vec!["</tool_call>".into(), "\nUser:".into()],
            ..EnvConfig::default()
        };
        assert_eq!(
            turn_stop_strings(&cfg, &["\n\n".into()]),
            ["\n\n", "</tool_call>", "\nUser:"]
        );
        let cfg = EnvConfig {
            tool_format: EnvToolFormat::Llama3Json,
            ..EnvConfig::default()
        };
        assert!(turn_stop_strings(&cfg, &[]).is_empty());
    }

    #[test]
    fn kinds_build_or_say_why_not() {
        assert!(build_environment(&EnvConfig::default()).unwrap().is_none());
        let cmd = EnvConfig {
            kind: EnvKind::Command,
            program: Some("python3".into()),
            ..EnvConfig::default()
        };
        assert!(build_environment(&cmd).unwrap().is_some());
        let calc = EnvConfig {
            kind: EnvKind::BuiltinCalculator,
            ..EnvConfig::default()
        };
        assert!(build_environment(&calc).unwrap().is_some());
    }
}
