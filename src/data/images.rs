//! A row's images: reading the `images` column, resolving paths, matching
//! them to the prompt's `<image>` placeholders, and a cheap header check at
//! load time.
//!
//! Accepted cells (the layouts veRL, TRL and Hugging Face datasets write):
//! - one path string, or a list of path strings (JSONL; relative paths are
//!   resolved against the dataset file's folder, `file://` is stripped);
//! - a list of structs `{bytes, path}` (Hugging Face's `Image` feature as
//!   Parquet stores it): the bytes when present, else the path; veRL's
//!   `{image: path}` items too;
//! - a list of raw binary items.
//!
//! The prompt must hold exactly one [`IMAGE_PLACEHOLDER`] per image. Every
//! image is checked when the dataset loads: a path must exist, and the
//! header (format and size) must read as PNG, JPEG or WebP. Pixels are only
//! decoded later, where the model needs them ([`decode_example_images`]).

use super::row::{Cell, RawRow};
use super::{Example, ImageSource, IMAGE_PLACEHOLDER};
use crate::error::{Error, Result};
use crate::model::vision::decode::{decode_rgb, RgbImage};
use crate::model::ChatMessage;
use image::{ImageFormat, ImageReader};
use std::io::{BufRead, Cursor, Seek};
use std::path::{Path, PathBuf};

/// The default images column (veRL's `image_key`, TRL's vision datasets).
pub const IMAGES: &str = "images";

/// TRL's single-image column, used for TRL rows that have no `images`.
pub const TRL_IMAGE: &str = "image";

/// The images of a row in `column` (none when the row has no such column or
/// it is null), paths resolved against `dataset`'s folder. An item that is
/// neither a path nor bytes is an error message for the row.
pub(crate) fn row_images(
    row: &RawRow,
    column: &str,
    dataset: &Path,
) -> std::result::Result<Vec<ImageSource>, String> {
    let items: Vec<&Cell> = match row.get(column) {
        Cell::Missing | Cell::Null => return Ok(Vec::new()),
        Cell::List(items) => items.iter().collect(),
        single => vec![single],
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            image_of(item, dataset).map_err(|m| format!("column `{column}`, image {i}: {m}"))
        })
        .collect()
}

/// One image item.
fn image_of(item: &Cell, dataset: &Path) -> std::result::Result<ImageSource, String> {
    match item {
        Cell::Str(path) => path_image(path, dataset),
        Cell::Binary(bytes) => Ok(ImageSource::Bytes(bytes.clone())),
        Cell::Struct(_) => {
            match item.field("bytes") {
                Some(Cell::Binary(b)) => return Ok(ImageSource::Bytes(b.clone())),
                // Bytes that happen to be valid UTF-8 were read as text:
                // the same bytes.
                Some(Cell::Str(s)) => return Ok(ImageSource::Bytes(s.as_bytes().to_vec())),
                _ => {}
            }
            for key in ["path", "image"] {
                if let Some(Cell::Str(p)) = item.field(key) {
                    return path_image(p, dataset);
                }
            }
            Err("expected a struct with `bytes` or a `path`, both are missing or null".into())
        }
        other => Err(format!(
            "expected a path string, bytes or a {{bytes, path}} struct, found {}",
            other.type_name()
        )),
    }
}

/// A path item: `file://` stripped, relative paths joined to the dataset's
/// folder. URLs and inline data are refused by name.
fn path_image(raw: &str, dataset: &Path) -> std::result::Result<ImageSource, String> {
    let text = raw.strip_prefix("file://").unwrap_or(raw);
    if text.is_empty() {
        return Err("the image path is empty".into());
    }
    if text.starts_with("http://") || text.starts_with("https://") || text.starts_with("data:") {
        return Err(format!(
            "`{}`: URLs and inline data are not supported; download the images and give their paths",
            truncate(text)
        ));
    }
    let path = PathBuf::from(text);
    let path = if path.is_relative() {
        dataset
            .parent()
            .map_or(path.clone(), |folder| folder.join(&path))
    } else {
        path
    };
    Ok(ImageSource::Path(path))
}

/// A long string cut for a message.
fn truncate(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_string(),
    }
}

/// How many [`IMAGE_PLACEHOLDER`]s `text` holds.
pub fn count_placeholders(text: &str) -> usize {
    text.matches(IMAGE_PLACEHOLDER).count()
}

/// The row-level checks: the prompt's placeholders match the images one for
/// one, earlier chat turns hold none, and every image exists and has a
/// readable header. The message names the counts or the image.
pub(crate) fn check_images(
    prompt: &str,
    context: &[ChatMessage],
    images: &[ImageSource],
) -> std::result::Result<(), String> {
    if let Some(turn) = context
        .iter()
        .position(|m| count_placeholders(&m.content) > 0)
    {
        return Err(format!(
            "chat turn {turn} (role `{}`) holds an image; images are supported in the last user turn only",
            context[turn].role
        ));
    }
    let placeholders = count_placeholders(prompt);
    if placeholders != images.len() {
        return Err(format!(
            "the prompt has {placeholders} {IMAGE_PLACEHOLDER} placeholder{} but the row has {} image{}; each image needs one placeholder where it goes, in order",
            if placeholders == 1 { "" } else { "s" },
            images.len(),
            if images.len() == 1 { "" } else { "s" },
        ));
    }
    for (i, image) in images.iter().enumerate() {
        check_header(image).map_err(|m| format!("image {i} ({}): {m}", describe(image)))?;
    }
    Ok(())
}

/// An image for messages: its path, or its size in bytes.
pub fn describe(image: &ImageSource) -> String {
    match image {
        ImageSource::Path(p) => format!("`{}`", p.display()),
        ImageSource::Bytes(b) => format!("{} bytes", b.len()),
    }
}

/// Width and height from the image's header, without decoding its pixels.
/// A missing file, an unknown format or a broken header is the message.
pub fn check_header(image: &ImageSource) -> std::result::Result<(u32, u32), String> {
    match image {
        ImageSource::Path(path) => {
            // Opened as a plain reader so the format comes from the bytes,
            // as `model::vision::decode` guesses it, never the extension.
            let file = std::fs::File::open(path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => "file not found".to_string(),
                _ => format!("cannot open the file: {e}"),
            })?;
            header_dimensions(ImageReader::new(std::io::BufReader::new(file)))
        }
        ImageSource::Bytes(bytes) => header_dimensions(ImageReader::new(Cursor::new(bytes))),
    }
}

/// The format must be one `model::vision::decode` decodes; the size comes
/// from the header alone.
fn header_dimensions<R: BufRead + Seek>(
    reader: ImageReader<R>,
) -> std::result::Result<(u32, u32), String> {
    let reader = reader
        .with_guessed_format()
        .map_err(|e| format!("cannot read the image: {e}"))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP) => {}
        Some(other) => {
            return Err(format!(
                "image format {other:?} is not supported (PNG, JPEG and WebP are)"
            ))
        }
        None => return Err("not a PNG, JPEG or WebP image (unrecognised header)".into()),
    }
    reader
        .into_dimensions()
        .map_err(|e| format!("unreadable image header: {e}"))
}

/// Decode one image into RGB pixels. A path that cannot be read or decoded
/// is an [`Error::Image`] naming it; undecodable bytes are named by size.
pub fn decode_image(image: &ImageSource) -> Result<RgbImage> {
    match image {
        ImageSource::Path(path) => crate::model::vision::decode::load_rgb(path),
        ImageSource::Bytes(bytes) => decode_rgb(bytes).map_err(|msg| Error::Image {
            path: PathBuf::from(format!("<{} bytes>", bytes.len())),
            msg,
        }),
    }
}

/// Decode every image of an example, in placeholder order. An image that
/// fails is an [`Error::Image`] naming the example's id (the dataset's id,
/// or `file:row` for a dataset without ids), the image's index and its
/// path or size.
pub fn decode_example_images(example: &Example) -> Result<Vec<RgbImage>> {
    example
        .images
        .iter()
        .enumerate()
        .map(|(i, image)| {
            decode_image(image).map_err(|e| {
                let msg = match e {
                    Error::Image { msg, .. } => msg,
                    other => other.to_string(),
                };
                Error::Image {
                    path: match image {
                        ImageSource::Path(p) => p.clone(),
                        ImageSource::Bytes(b) => PathBuf::from(format!("<{} bytes>", b.len())),
                    },
                    msg: format!("example `{}`, image {i}: {msg}", example.id),
                }
            })
        })
        .collect()
}
