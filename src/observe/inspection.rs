//! `rlsd inspect`: where would one train step put its credit?
//!
//! Runs the stages of one step on a fresh batch, exactly as the runtime
//! does (the functions in [`crate::pipeline`]): draw the step's prompts,
//! sample `G` responses each, verify, score with the teacher (the policy shown
//! the privileged text), compute group advantages. Then the token credit
//! `Ahat_t` comes from [`crate::train::micro_batch_loss`], the train step's
//! own code, fed the current policy's detached log-probs from
//! [`crate::model::token_logprobs`]. Nothing is trained.
//!
//! [`inspect_logged`] instead reads a step that a training run logged to its
//! `completions.jsonl` (`rlsd inspect --run DIR --step N`): no model needed.
//!
//! The result renders as one HTML page (every response's tokens coloured by
//! `Ahat_t / A` with [`super::credit_view::render_credit_html`], grouped by prompt
//! with the reward and advantage) and as ANSI text for a terminal.

use super::completions::StepCompletions;
use super::credit_view::{render_credit_ansi, render_credit_html};
use crate::config::RunConfig;
use crate::data::{Example, TeacherPrompt};
use crate::error::{Error, Result};
use crate::model::{token_logprobs, LoadedModel};
use crate::pipeline::records::{credit_records, padded};
use crate::pipeline::{prepare_step, tokenizer_of, StepPlan};
use crate::plot::xml_escape;
use crate::stats::ResponseRecord;
use crate::train::{effective_algo, micro_batch_loss};
use crate::verify::Verifier;
use serde::Serialize;
use std::fmt::Write as _;

/// One step's prompts, responses and credit.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The algorithm whose credit is shown (after the train step's own fallbacks).
    pub algo: String,
    /// The step the batch stands for (sets lambda and the sampling seed).
    pub step: u64,
    /// `lambda` at that step.
    pub lambda: f64,
    /// `eps_w`, the weight clip.
    pub eps_w: f64,
    /// The step's prompts.
    pub examples: Vec<Example>,
    /// Every response, prompt-major.
    pub responses: Vec<ResponseRecord>,
}

impl Inspection {
    /// A step of the completions log, for the renderers: prompts numbered in
    /// order of first appearance.
    pub fn from_logged(logged: &StepCompletions) -> Inspection {
        let mut examples: Vec<Example> = Vec::new();
        let mut groups: Vec<usize> = Vec::new();
        let mut responses = Vec::with_capacity(logged.samples.len());
        for s in &logged.samples {
            let g = match groups.iter().position(|&g| g == s.group) {
                Some(g) => g,
                None => {
                    groups.push(s.group);
                    examples.push(Example {
                        id: s.example_id.clone(),
                        prompt: s.prompt.clone(),
                        answer: s.answer.clone(),
                        privileged: String::new(),
                        context: Vec::new(),
                        extra: Default::default(),
                        images: Vec::new(),
                    });
                    groups.len() - 1
                }
            };
            responses.push(ResponseRecord {
                group: g,
                ..s.clone()
            });
        }
        Inspection {
            algo: logged.algo.clone(),
            step: logged.step,
            lambda: logged.lambda,
            eps_w: logged.eps_w,
            examples,
            responses,
        }
    }

    /// Fraction of responses the verifier marked correct.
    pub fn accuracy(&self) -> f64 {
        let n = self.responses.len().max(1) as f64;
        self.responses.iter().filter(|r| r.correct).count() as f64 / n
    }

    /// Mean reward over the responses.
    pub fn reward_mean(&self) -> f64 {
        let n = self.responses.len().max(1) as f64;
        self.responses
            .iter()
            .map(|r| f64::from(r.reward))
            .sum::<f64>()
            / n
    }
}

/// Run one step's stages on `examples` and compute the train step's token
/// credit without training. `teacher` is the teacher replica (at step 1 of a
/// run it equals the policy; pass the policy itself).
pub fn inspect_step(
    cfg: &RunConfig,
    policy: &LoadedModel,
    teacher: &LoadedModel,
    verifier: &dyn Verifier,
    examples: Vec<Example>,
    step: u64,
) -> Result<Inspection> {
    if examples.is_empty() {
        return Err(Error::InvalidInput(
            "inspect needs at least one prompt".into(),
        ));
    }
    let temperature = cfg.rollout.temperature;
    // As the sequential loop plans step `step`: on-policy, teacher = policy.
    let plan = StepPlan::new(cfg, step, 0, examples, serde_json::Value::Null);
    let template = TeacherPrompt::for_data(&cfg.data)?;
    let version = step.saturating_sub(1);
    let batch = prepare_step(cfg, plan, policy, version, teacher, 0, verifier, &template)?;
    let tb = batch.train_batch(&cfg.algo, temperature);
    let algo = effective_algo(&cfg.algo, &tb)?;

    // The current policy's log-probs, detached: the train step's `logp_S`.
    let prompts: Vec<Vec<i64>> = tb.samples.iter().map(|s| s.prompt.clone()).collect();
    let responses: Vec<Vec<i64>> = tb.samples.iter().map(|s| s.response.clone()).collect();
    let logp = token_logprobs(&policy.lm, &prompts, &responses, temperature)?;
    let len = responses.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let logp_new = padded(&logp, len)?;
    let entropy = logp_new.f_zeros_like()?;
    let n = tb.samples.len();
    let mbl = micro_batch_loss(
        &cfg.algo,
        algo,
        &tb,
        0..n,
        &logp_new,
        &entropy,
        tb.loss_norm(),
    )?;
    let tok = tokenizer_of(policy)?;
    let out = credit_records(&batch, &mbl, n, Some(tok))?;
    Ok(Inspection {
        algo: algo.name().to_string(),
        step,
        lambda: batch.plan().lambda,
        eps_w: cfg.algo.eps_w,
        examples: batch.plan().examples.clone(),
        responses: out,
    })
}

/// A step logged by a training run in `run_dir/completions.jsonl` (the
/// last logged step when `step` is `None`), ready for the renderers.
pub fn inspect_logged(run_dir: &std::path::Path, step: Option<u64>) -> Result<Inspection> {
    if !run_dir.is_dir() {
        return Err(Error::InvalidInput(format!(
            "{} is not a folder: --run takes a run folder written by `rlsd train`",
            run_dir.display()
        )));
    }
    Ok(Inspection::from_logged(&super::read_step(run_dir, step)?))
}

/// Split a page from [`render_credit_html`] into its `<style>` block and its
/// body without the page heading, so that several responses share one page.
fn page_parts(page: &str) -> Result<(&str, &str)> {
    let part = |start: &str, end: &str| -> Option<&str> {
        let a = page.find(start)? + start.len();
        let b = page[a..].find(end)? + a;
        Some(&page[a..b])
    };
    let style = part("<style>", "</style>");
    let body = part("<body>", "</body>");
    match (style, body) {
        (Some(style), Some(body)) => {
            let body = body
                .trim_start()
                .strip_prefix("<h2>Token credit</h2>")
                .unwrap_or(body);
            Ok((style, body))
        }
        _ => Err(Error::InvalidInput(
            "render_credit_html returned a page without <style> or <body>".into(),
        )),
    }
}

/// CSS of the step view (prompt sections, responses), on top of the token
/// view's own style.
const STEP_CSS: &str = "section.prompt{border-top:3px solid #444;margin-top:28px}\
    pre.q{background:#f4f4f4;padding:8px;white-space:pre-wrap}\
    .response{margin:10px 0 24px 12px}.response.ok h3{color:#1a7f37}.response.bad h3{color:#b42318}\
    .reason{color:#555;font-size:13px;margin:2px 0}.response~.response .legend{display:none}\
    .id{color:#888;font-size:13px;font-weight:normal}\n";

/// The step view as parts to embed in a page: its CSS, and per prompt a
/// section with the prompt, the reference answer and each response's
/// verdict and coloured tokens (used by [`render_page`] and the run report).
pub fn render_sections(ins: &Inspection) -> Result<(String, String)> {
    let mut style = String::new();
    let mut sections = String::new();
    for (g, ex) in ins.examples.iter().enumerate() {
        let _ = writeln!(
            sections,
            "<section class=\"prompt\"><h2>Prompt {} <span class=\"id\">{}</span></h2>\
             <pre class=\"q\">{}</pre><p>reference answer: <code>{}</code></p>",
            g + 1,
            xml_escape(&ex.id),
            xml_escape(&ex.prompt),
            xml_escape(&ex.answer)
        );
        for (j, r) in ins.responses.iter().filter(|r| r.group == g).enumerate() {
            let page = render_credit_html(
                &r.display_tokens(),
                &r.ahat,
                &r.weights_or_ones(),
                &r.delta_or_zeros(),
                r.advantage,
            )?;
            let (st, body) = page_parts(&page)?;
            if style.is_empty() {
                style = st.to_string();
            }
            let _ = write!(
                sections,
                "<div class=\"response {}\"><h3>Response {}.{}: reward {:.3} ({}), A = {:+.4}</h3>\
                 <p class=\"reason\">verifier: {}</p>\n{}</div>\n",
                if r.correct { "ok" } else { "bad" },
                g + 1,
                j + 1,
                r.reward,
                if r.correct { "correct" } else { "wrong" },
                r.advantage,
                xml_escape(&r.reason),
                body
            );
        }
        sections.push_str("</section>\n");
    }
    style.push('\n');
    style.push_str(STEP_CSS);
    Ok((style, sections))
}

/// One HTML page for the whole step: a summary, then per prompt its text and
/// reference answer, then each response's verdict and coloured tokens.
pub fn render_page(ins: &Inspection, title: &str) -> Result<String> {
    let (style, sections) = render_sections(ins)?;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n{}\n\
         </style></head><body>\n<h1>{}</h1>\n",
        xml_escape(title),
        style,
        xml_escape(title)
    );
    let _ = writeln!(
        h,
        "<table><tr><td>algorithm</td><td><b>{}</b></td></tr><tr><td>step</td><td>{}</td></tr>\
         <tr><td>lambda</td><td>{:.4}</td></tr><tr><td>eps_w</td><td>{}</td></tr>\
         <tr><td>prompts x responses</td><td>{} x {}</td></tr>\
         <tr><td>accuracy</td><td>{:.3}</td></tr><tr><td>mean reward</td><td>{:.3}</td></tr></table>",
        xml_escape(&ins.algo),
        ins.step,
        ins.lambda,
        ins.eps_w,
        ins.examples.len(),
        ins.responses.len() / ins.examples.len().max(1),
        ins.accuracy(),
        ins.reward_mean()
    );
    h.push_str(&sections);
    h.push_str("</body></html>\n");
    Ok(h)
}

/// The terminal view: per response a header line and
/// [`render_credit_ansi`]'s coloured tokens.
pub fn render_terminal(ins: &Inspection) -> Result<String> {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} credit at step {} (lambda {:.4}, eps_w {}): accuracy {:.3}, mean reward {:.3}",
        ins.algo,
        ins.step,
        ins.lambda,
        ins.eps_w,
        ins.accuracy(),
        ins.reward_mean()
    );
    for (g, ex) in ins.examples.iter().enumerate() {
        let _ = writeln!(
            s,
            "\n=== prompt {} [{}] (answer {}):\n{}",
            g + 1,
            ex.id.escape_debug(),
            ex.answer.escape_debug(),
            ex.prompt.escape_debug()
        );
        for (j, r) in ins.responses.iter().filter(|r| r.group == g).enumerate() {
            let _ = writeln!(
                s,
                "--- response {}.{}: reward {:.3} ({}; {})",
                g + 1,
                j + 1,
                r.reward,
                if r.correct { "correct" } else { "wrong" },
                r.reason.escape_debug()
            );
            s.push_str(&render_credit_ansi(
                &r.display_tokens(),
                &r.ahat,
                &r.weights_or_ones(),
                &r.delta_or_zeros(),
                r.advantage,
            )?);
        }
    }
    Ok(s)
}
