//! TensorBoard event files written by hand: no TensorFlow, no protobuf crate.
//!
//! An event file (`events.out.tfevents.<seconds>.<host>`) is a sequence of
//! TFRecords. Each record is
//!
//! ```text
//! u64 length (little-endian) | u32 masked_crc32c(length bytes) | data | u32 masked_crc32c(data)
//! ```
//!
//! with `masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8` (wrapping), and each
//! `data` is one serialized `tensorflow.Event` protobuf. The first event
//! carries `file_version = "brain.Event:2"`; later ones carry a `Summary` of
//! scalar values (`simple_value`) or a text tensor (the "text" plugin).
//!
//! The protobuf subset needed is small enough to encode directly; the field
//! numbers come from `tensorflow/core/util/event.proto`,
//! `tensorflow/core/framework/summary.proto` and `tensor.proto`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Error, Result};

/// The `file_version` string of the first event of every file.
pub const FILE_VERSION: &str = "brain.Event:2";

/// The CRC mask constant of the TFRecord format.
const MASK_DELTA: u32 = 0xa282_ead8;

/// `tensorflow.DataType.DT_STRING`.
const DT_STRING: u64 = 7;

/// `tensorflow.SessionLog.SessionStatus.START`.
const SESSION_START: u64 = 1;

/// The masked CRC32C (Castagnoli) of `data`, as TFRecord stores it.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    // ((c >> 15) | (c << 17)) + MASK_DELTA, as the format states it.
    crc32c::crc32c(data)
        .rotate_right(15)
        .wrapping_add(MASK_DELTA)
}

/// Frame one record: length, its masked CRC, the data, the data's masked CRC.
pub fn frame_record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// A protobuf message under construction (wire types 0, 1, 2 and 5 only).
#[derive(Debug, Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    fn uint(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, 0);
        self.varint(v);
        self
    }

    fn double(&mut self, field: u32, v: f64) -> &mut Self {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        self.key(field, 2);
        self.varint(v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }

    fn message(&mut self, field: u32, m: &Msg) -> &mut Self {
        self.bytes(field, &m.0)
    }
}

/// One value of a summary: a scalar or a text.
#[derive(Debug, Clone, PartialEq)]
pub enum SummaryValue {
    /// A scalar, shown in TensorBoard's Scalars tab.
    Scalar {
        /// The chart name, `/`-separated groups (`timings/generate_s`).
        tag: String,
        /// The value (stored as a 32-bit float, as TensorBoard does).
        value: f32,
    },
    /// Markdown text, shown in the Text tab.
    Text {
        /// The text's name.
        tag: String,
        /// The text (Markdown).
        text: String,
    },
}

/// `tensorflow.Summary.Value` for one [`SummaryValue`].
fn encode_value(v: &SummaryValue) -> Msg {
    let mut m = Msg::default();
    match v {
        SummaryValue::Scalar { tag, value } => {
            m.bytes(1, tag.as_bytes()).float(2, *value);
        }
        SummaryValue::Text { tag, text } => {
            // SummaryMetadata { plugin_data: PluginData { plugin_name: "text" } }
            let mut plugin = Msg::default();
            plugin.bytes(1, b"text");
            let mut meta = Msg::default();
            meta.message(1, &plugin);
            // TensorProto { dtype: DT_STRING, tensor_shape: {} (a scalar), string_val: [text] }
            let mut tensor = Msg::default();
            tensor
                .uint(1, DT_STRING)
                .message(2, &Msg::default())
                .bytes(8, text.as_bytes());
            m.bytes(1, tag.as_bytes())
                .message(9, &meta)
                .message(8, &tensor);
        }
    }
    m
}

/// What one event carries besides its time and step.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody<'a> {
    /// `file_version` (the first event of a file).
    FileVersion(&'a str),
    /// `summary`: values logged at the event's step.
    Summary(&'a [SummaryValue]),
    /// `session_log { status: START }`: TensorBoard drops the events of earlier
    /// files whose step is at or after this event's step (a resumed run).
    SessionStart,
}

/// Serialize one `tensorflow.Event`.
pub fn encode_event(wall_time: f64, step: i64, body: &EventBody<'_>) -> Vec<u8> {
    let mut e = Msg::default();
    e.double(1, wall_time);
    if step != 0 {
        // int64 in protobuf: negative values are ten-byte varints of the two's complement.
        e.uint(2, step as u64);
    }
    match body {
        EventBody::FileVersion(v) => {
            e.bytes(3, v.as_bytes());
        }
        EventBody::Summary(values) => {
            let mut s = Msg::default();
            for v in values.iter() {
                s.message(1, &encode_value(v));
            }
            e.message(5, &s);
        }
        EventBody::SessionStart => {
            let mut log = Msg::default();
            log.uint(1, SESSION_START);
            e.message(6, &log);
        }
    }
    e.0
}

/// Seconds since the Unix epoch.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's host name (`localhost` when it cannot be read), reduced to
/// characters safe in a file name.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes; gethostname writes at most that many.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .collect();
    if safe.is_empty() {
        "localhost".into()
    } else {
        safe
    }
}

/// Appends events to a new `events.out.tfevents.<time>.<host>` file, flushed
/// after every event so TensorBoard sees each step as it is written.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Create a new event file in `dir` (created if missing) and write the
    /// `file_version` event.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let t = now();
        let mut name = format!("events.out.tfevents.{}.{}", t as u64, host_name());
        // Two writers in the same second (a quick restart) get distinct files.
        let mut n = 1;
        while dir.join(&name).exists() {
            name = format!("events.out.tfevents.{}.{}.{n}", t as u64, host_name());
            n += 1;
        }
        let path = dir.join(name);
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = Self {
            path,
            out: BufWriter::new(file),
        };
        w.write(t, 0, &EventBody::FileVersion(FILE_VERSION))?;
        Ok(w)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write one event stamped now.
    pub fn event(&mut self, step: u64, body: &EventBody<'_>) -> Result<()> {
        self.write(now(), step as i64, body)
    }

    /// Write the values of `step` (nothing when `values` is empty).
    pub fn summary(&mut self, step: u64, values: &[SummaryValue]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.event(step, &EventBody::Summary(values))
    }

    fn write(&mut self, wall_time: f64, step: i64, body: &EventBody<'_>) -> Result<()> {
        let record = frame_record(&encode_event(wall_time, step, body));
        let io = |e| Error::io(&self.path, e);
        self.out.write_all(&record).map_err(io)?;
        self.out.flush().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::manual_rotate)] // the mask spelled out as the format states it
    fn crc32c_and_mask_match_known_values() {
        // CRC-32C check value of "123456789" (RFC 3720, appendix B.4).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let c: u32 = 0xe306_9283;
        let masked = ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8);
        assert_eq!(masked_crc32c(b"123456789"), masked);
    }

    #[test]
    fn varints_and_scalar_value_bytes_by_hand() {
        let mut m = Msg::default();
        m.uint(2, 300);
        // key (2 << 3 | 0) = 0x10, 300 = 0b1_0010_1100 -> 0xac 0x02.
        assert_eq!(m.0, vec![0x10, 0xac, 0x02]);
        let v = encode_value(&SummaryValue::Scalar {
            tag: "a".into(),
            value: 1.0,
        });
        // tag: 0x0a 0x01 'a'; simple_value: key 0x15, 1.0f32 LE = 00 00 80 3f.
        assert_eq!(v.0, vec![0x0a, 0x01, b'a', 0x15, 0, 0, 0x80, 0x3f]);
    }
}
