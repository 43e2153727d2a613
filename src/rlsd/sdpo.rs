//! SDPO's teacher context (RLSD-SPEC.md, `sdpo`): instead of the reference
//! answer, the teacher sees feedback from the group's own attempts, the
//! shortest correct response as the correct solution and the shortest wrong
//! one as an unsuccessful attempt ([`super::sdpo_feedback`] picks them).

use crate::error::{Error, Result};

/// Placeholders of the SDPO template.
pub const SDPO_PLACEHOLDERS: [&str; 3] = ["{question}", "{correct_solution}", "{feedback}"];

/// The reference's SDPO teacher template (iie-ycx/RLSD
/// `format_prompt/sdpo_teacher.jinja`), as text with placeholders.
pub const DEFAULT_SDPO_TEMPLATE: &str = "Problem:\n{question}\n\nCorrect solution:\n{correct_solution}\n\nThe following is feedback from your unsuccessful earlier attempt:\n{feedback}\n\nCorrectly solve the original question.";

/// Check an SDPO template: it must hold `{question}`; the two feedback slots
/// may be left out on purpose (an ablation), so only the question is required.
pub fn check_sdpo_template(template: &str) -> Result<()> {
    if !template.contains(SDPO_PLACEHOLDERS[0]) {
        return Err(Error::config(
            "algo.sdpo_template",
            "the template must contain `{question}`",
        ));
    }
    Ok(())
}

/// The SDPO teacher's user message. One pass over the template, so braces
/// inside the texts are never read as placeholders; each text is trimmed, and
/// a missing attempt leaves its slot empty (the reference's behaviour).
pub fn render_sdpo(
    template: &str,
    question: &str,
    correct_solution: Option<&str>,
    feedback: Option<&str>,
) -> String {
    let values = [
        question.trim(),
        correct_solution.unwrap_or("").trim(),
        feedback.unwrap_or("").trim(),
    ];
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|v| v.len()).sum::<usize>());
    let mut rest = template;
    'outer: while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        for (p, v) in SDPO_PLACEHOLDERS.iter().zip(values) {
            if let Some(after) = tail.strip_prefix(p) {
                out.push_str(v);
                rest = after;
                continue 'outer;
            }
        }
        out.push('{');
        rest = &tail[1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_reference_layout() {
        let t = render_sdpo(DEFAULT_SDPO_TEMPLATE, " 2+2? ", Some("4 "), None);
        assert_eq!(
            t,
            "Problem:\n2+2?\n\nCorrect solution:\n4\n\nThe following is feedback from your unsuccessful earlier attempt:\n\n\nCorrectly solve the original question."
        );
        // Braces in the texts stay as they are.
        let t = render_sdpo(
            "{question}|{feedback}",
            "{feedback}",
            None,
            Some("\\frac{1}{2}"),
        );
        assert_eq!(t, "{feedback}|\\frac{1}{2}");
        assert!(check_sdpo_template("no question").is_err());
    }
}
