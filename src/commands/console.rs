//! What `rlsd inspect`, `eval`, `generate` and `info` print: each loads what
//! it needs, calls the library function of its command and writes the
//! summary lines (and the files asked for with `--out` / `--json`).

use super::generate::{generate_tokens, GenerateRequest, Generated};
use super::{load_model, write_text, ModelChoice};
use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::observe::inspection::{
    inspect_logged, inspect_step, render_page, render_terminal, Inspection,
};
use crate::run::evaluate::{evaluate, progress_bar, EvalOptions};
use std::path::Path;

/// Where `rlsd inspect` writes, and whether it also prints the page as text.
#[derive(Debug, Clone, Copy)]
pub struct InspectOutput<'a> {
    /// The HTML page.
    pub page: &'a Path,
    /// The inspection as JSON, when asked for.
    pub json: Option<&'a Path>,
    /// Skip the ANSI rendering on stdout.
    pub quiet: bool,
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value)
        .map_err(|e| Error::Runtime(format!("serialising JSON: {e}")))
}

/// Print (unless quiet) and write an inspection; `source` names where its
/// rollouts came from in the page title.
fn show_inspection(ins: &Inspection, source: &Path, out: InspectOutput<'_>) -> Result<()> {
    if !out.quiet {
        let text = render_terminal(ins)?;
        // Colour codes only on a terminal without NO_COLOR; piped: plain text.
        if crate::logging::use_colour(std::io::IsTerminal::is_terminal(&std::io::stdout())) {
            print!("{text}");
        } else {
            print!("{}", crate::observe::credit_view::strip_ansi(&text));
        }
    }
    let title = format!(
        "RLSD token credit: {} at step {} ({})",
        ins.algo,
        ins.step,
        source.display()
    );
    write_text(out.page, &render_page(ins, &title)?)?;
    if let Some(path) = out.json {
        write_text(path, &to_json(ins)?)?;
    }
    Ok(())
}

/// The line after an inspection: how many responses, accuracy, reward, page.
fn print_summary(ins: &Inspection, prefix: &str, kind: &str, out: InspectOutput<'_>) {
    println!(
        "{prefix}{} {kind}responses to {} prompts: accuracy {:.3}, mean reward {:.3}; page: {}",
        ins.responses.len(),
        ins.examples.len(),
        ins.accuracy(),
        ins.reward_mean(),
        out.page.display()
    );
}

/// `rlsd inspect`: roll out `prompts` prompts with the chosen model and
/// show the credit the train step at `step` would give their tokens.
pub fn inspect(
    cfg: &RunConfig,
    choice: &ModelChoice,
    prompts: Option<u64>,
    step: u64,
    out: InspectOutput<'_>,
) -> Result<()> {
    let model = load_model(cfg, choice, &cfg.runtime.sampler_device)?;
    let verifier = crate::verify::build_verifier(&cfg.verifier)?;
    let mut source = crate::run::source::from_config(cfg)?;
    let n = prompts.map_or(cfg.rollout.batch_prompts.min(2), |p| p as usize);
    let examples = source.next_batch(n)?;
    let ins = inspect_step(cfg, &model, &model, verifier.as_ref(), examples, step)?;
    show_inspection(&ins, &choice.model_dir(cfg)?, out)?;
    print_summary(&ins, "", "", out);
    Ok(())
}

/// `rlsd inspect --run DIR`: render a step logged in DIR/completions.jsonl.
pub fn inspect_run(dir: &Path, step: Option<u64>, out: InspectOutput<'_>) -> Result<()> {
    let ins = inspect_logged(dir, step)?;
    show_inspection(&ins, dir, out)?;
    print_summary(&ins, &format!("step {}: ", ins.step), "logged ", out);
    Ok(())
}

/// `rlsd eval`: accuracy (pass@k and maj@k with several samples) on the
/// first `n` examples of the configured data; the report as JSON to `out`.
pub fn eval(
    cfg: &RunConfig,
    choice: &ModelChoice,
    n: usize,
    opts: &EvalOptions,
    out: Option<&Path>,
) -> Result<()> {
    let model = load_model(cfg, choice, &cfg.runtime.sampler_device)?;
    let verifier = crate::verify::build_verifier(&cfg.verifier)?;
    let data = crate::data::Dataset::from_config(&cfg.data)?;
    let take = n.min(data.len());
    if take < n {
        eprintln!(
            "note: {} has {} examples; evaluating all of them",
            data.source(),
            data.len()
        );
    }
    let examples = &data.examples()[..take];
    let bar = progress_bar(take);
    let mut report = evaluate(&model, examples, verifier.as_ref(), opts, Some(&bar))?;
    bar.finish_and_clear();
    report.model = choice.model_dir(cfg)?.display().to_string();
    report.data = data.source().to_string();
    println!(
        "eval: {} prompts of {} with {} ({}): accuracy {:.4}, mean reward {:.4}, mean length {:.1} tokens, {:.0}% stopped on EOS, {:.1}s",
        report.n,
        report.data,
        report.model,
        if opts.temperature == 0.0 {
            "greedy".to_string()
        } else {
            format!("sampled at T={}, seed {}", opts.temperature, opts.seed)
        },
        report.accuracy,
        report.reward_mean,
        report.response_len_mean,
        100.0 * report.stopped_on_eos_frac,
        report.wall_s
    );
    if report.samples > 1 {
        let pass: Vec<String> = report
            .pass_at_k
            .iter()
            .map(|(k, p)| format!("pass@{k} {p:.4}"))
            .collect();
        println!(
            "eval: {} samples per prompt: {}, maj@{} {:.4}",
            report.samples,
            pass.join(", "),
            report.samples,
            report.maj_at_k
        );
    }
    if let Some(path) = out {
        write_text(path, &to_json(&report)?)?;
        println!("report: {}", path.display());
    }
    Ok(())
}

/// `rlsd generate`: sample responses to one prompt and print them.
/// With `json`, one JSON object: the prompt's token ids and each response's
/// text, token ids and per-token log-probs.
pub fn generate(
    cfg: &RunConfig,
    choice: &ModelChoice,
    req: &GenerateRequest,
    json: bool,
) -> Result<()> {
    let model = load_model(cfg, choice, &cfg.runtime.sampler_device)?;
    print_generated(&generate_tokens(&model, req)?, json)
}

/// Print `rlsd generate`'s responses (text and vision-language models alike):
/// a header line and the text of each, or with `json` one JSON object.
pub fn print_generated(out: &Generated, json: bool) -> Result<()> {
    if json {
        println!("{}", to_json(out)?);
        return Ok(());
    }
    for (i, g) in out.responses.iter().enumerate() {
        println!(
            "--- response {} ({} tokens, {}, logprob {:.3})",
            i + 1,
            g.tokens,
            if g.stopped_on_eos {
                "eos"
            } else {
                "max tokens"
            },
            g.logprob
        );
        println!("{}", g.text);
    }
    Ok(())
}

/// `rlsd info`: version, devices, and a one-line libtorch self-check.
pub fn info() -> Result<()> {
    println!("rlsd {}", env!("CARGO_PKG_VERSION"));
    println!("{}", crate::device::describe());
    let x = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    let y = (&x * &x).sum(tch::Kind::Float);
    println!("self-check: sum([1,2,3]^2) = {}", y.double_value(&[]));
    Ok(())
}
