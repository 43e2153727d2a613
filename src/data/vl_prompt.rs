//! Vision-language prompts: an example's prompt marks each image with
//! `<image>`; each becomes [`IMAGE_PART`] (what the Qwen-VL chat templates
//! write for an image part) before the chat template, and each image pad is
//! then expanded to the image's token count. The teacher's prompt is the
//! example's teacher template (question plus privileged context) built the
//! same way around the same images. Used by the RL stages
//! (`pipeline::vision`), their validation and `rlsd pretrain`.

use super::images::decode_example_images;
use super::prompt::{student_prompt_ids, TeacherPrompt};
use super::{Example, IMAGE_PLACEHOLDER};
use crate::error::{Error, Result};
use crate::model::vision::{
    expand_image_pad_ids, image_token_count, LoadedVlModel, ProcessedImage, IMAGE_PAD,
};
use crate::model::Tokenizer;
use std::sync::Arc;

/// What a chat template writes for one image part.
pub const IMAGE_PART: &str = "<|vision_start|><|image_pad|><|vision_end|>";

/// A prompt's token ids (image pads expanded) and its images, in order.
#[derive(Debug, Clone)]
pub struct VlPrompt {
    /// Token ids, each image's pad run expanded to its token count.
    pub ids: Vec<i64>,
    /// The processed images, in the order of their pad runs.
    pub images: Arc<[ProcessedImage]>,
}

/// The model folder's tokenizer (an error when it has none).
pub fn tokenizer(model: &LoadedVlModel) -> Result<&Tokenizer> {
    model.tokenizer.as_ref().ok_or_else(|| {
        Error::InvalidInput("the vision-language model has no tokenizer.json".into())
    })
}

/// Decode (`data::images`) and preprocess the images of `ex`, checking
/// that its prompt has one `<image>` per image; errors name the example
/// and the image.
pub fn example_images(model: &LoadedVlModel, ex: &Example) -> Result<Vec<ProcessedImage>> {
    let marks = ex.prompt.matches(IMAGE_PLACEHOLDER).count();
    if marks != ex.images.len() {
        return Err(Error::InvalidInput(format!(
            "example {:?}: the prompt has {marks} {IMAGE_PLACEHOLDER} placeholder(s) but {} image(s)",
            ex.id,
            ex.images.len()
        )));
    }
    if ex.images.is_empty() {
        return Ok(Vec::new());
    }
    let processor = model.processor.as_ref().ok_or_else(|| {
        Error::InvalidInput(
            "the vision-language model folder has no preprocessor_config.json".into(),
        )
    })?;
    decode_example_images(ex)?
        .iter()
        .map(|rgb| processor.preprocess(rgb))
        .collect()
}

/// `ex` with every `<image>` replaced by the chat template's image part.
fn with_image_parts(ex: &Example) -> Example {
    Example {
        prompt: ex.prompt.replace(IMAGE_PLACEHOLDER, IMAGE_PART),
        ..ex.clone()
    }
}

/// Expand the image pads of templated `ids` to `images`' token counts.
fn expand(model: &LoadedVlModel, ids: &[i64], images: &[ProcessedImage]) -> Result<Vec<i64>> {
    let tok = tokenizer(model)?;
    let pad = tok
        .token_to_id(IMAGE_PAD)
        .ok_or_else(|| Error::InvalidInput(format!("the tokenizer has no {IMAGE_PAD} token")))?;
    let merge = model.model.config.vision.spatial_merge_size.max(1) as usize;
    let counts: Vec<usize> = images
        .iter()
        .map(|i| image_token_count(i.grid_thw, merge))
        .collect();
    expand_image_pad_ids(ids, pad, &counts)
}

/// The student's prompt of `ex` with its images.
pub fn student_prompt(model: &LoadedVlModel, ex: &Example) -> Result<VlPrompt> {
    let images = example_images(model, ex)?;
    let ids = student_prompt_ids(tokenizer(model)?, &with_image_parts(ex))?;
    Ok(VlPrompt {
        ids: expand(model, &ids, &images)?,
        images: Arc::from(images),
    })
}

/// The teacher's prompt of `ex` (its template, privileged context included)
/// around the same `images` as the student's.
pub fn teacher_prompt(
    model: &LoadedVlModel,
    template: &TeacherPrompt,
    ex: &Example,
    images: Arc<[ProcessedImage]>,
) -> Result<VlPrompt> {
    let ids = template.ids(tokenizer(model)?, &with_image_parts(ex))?;
    Ok(VlPrompt {
        ids: expand(model, &ids, &images)?,
        images,
    })
}
