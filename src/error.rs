//! The library's error type.
//!
//! One enum for the crate, with structured fields so a message can name the
//! file, line, key or tensor at fault. Each module appends its variants in its
//! own section below; `anyhow` is used only in `main`, examples and tests.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong inside `rlsd`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- shared ---------------------------------------------------------
    /// A libtorch call failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A configuration key has a bad or unknown value.
    #[error("config key `{key}`: {msg}")]
    Config {
        /// Dotted key, e.g. `algo.lambda0`.
        key: String,
        /// What is wrong with it.
        msg: String,
    },
    /// A configuration file is not valid TOML.
    #[error("{origin}: not valid TOML: {msg}")]
    ConfigSyntax {
        /// The file (or `<string>`) the text came from.
        origin: String,
        /// The parser's message, with the line and column.
        msg: String,
    },
    /// A tensor has the wrong shape.
    #[error("tensor `{name}`: expected shape {expected:?}, found {got:?}")]
    ShapeMismatch {
        /// Tensor name (a safetensors key where there is one).
        name: String,
        /// Shape the code needs.
        expected: Vec<i64>,
        /// Shape it got.
        got: Vec<i64>,
    },
    /// Input that the caller passed is inconsistent (lengths, ranges).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    // ---- model (src/model/) ---------------------------------------------
    /// A model folder or file is unusable.
    #[error("{path}: {msg}")]
    Model {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A parameter the model needs is absent from the checkpoint.
    #[error(
        "{path}: tensor `{name}` (expected shape {expected:?}) is missing from the checkpoint"
    )]
    MissingTensor {
        /// The checkpoint folder or file.
        path: PathBuf,
        /// The safetensors key the model looked for.
        name: String,
        /// Shape the model needs.
        expected: Vec<i64>,
    },
    /// An image file is missing, unreadable, undecodable or unusable
    /// (src/model/vision/).
    #[error("image {path}: {msg}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// The memory model predicts that a run cannot fit a device (src/plan.rs).
    #[error("run does not fit device {device}: {msg}")]
    DoesNotFit {
        /// The device string (`cpu`, `cuda:0`, ...).
        device: String,
        /// The prediction, the memory available, and what to change.
        msg: String,
    },

    // ---- data (src/data/) and verifiers (src/verify/) -------------------
    /// A Hugging Face Hub model id could not be resolved or downloaded.
    #[error("model {repo}: {msg}")]
    Hub {
        /// The repository id, e.g. `Qwen/Qwen2.5-1.5B-Instruct`.
        repo: String,
        /// What went wrong, naming the cache folder looked in.
        msg: String,
    },

    /// A dataset row is malformed.
    #[error("{path}:{line}: {msg}")]
    Data {
        /// The dataset file.
        path: PathBuf,
        /// 1-based line (JSONL) or row (Parquet) number.
        line: usize,
        /// What is wrong with the row.
        msg: String,
    },

    /// A prompt leaves no room for `rollout.max_new_tokens` in the model's
    /// context (src/preflight.rs).
    #[error("{source_name}: example `{id}`: the {who} prompt is {tokens} tokens; with rollout.max_new_tokens = {max_new_tokens} it exceeds the model's context of {context} tokens (max_position_embeddings); shorten or drop the row, or lower rollout.max_new_tokens")]
    PromptTooLong {
        /// The dataset (file or the built-in task).
        source_name: String,
        /// The example's id (its id column, or `file:line`).
        id: String,
        /// `student` or `teacher` (the longer of the two prompts).
        who: &'static str,
        /// Tokens of that prompt, chat template included.
        tokens: usize,
        /// `rollout.max_new_tokens`.
        max_new_tokens: usize,
        /// The model's `max_position_embeddings`.
        context: usize,
    },

    // ---- runtime (src/actors/, src/checkpoint.rs) -------------------------
    /// The actor runtime failed.
    #[error("runtime: {0}")]
    Runtime(String),

    // ---- checkpoints, metrics, drawings (src/checkpoint/, src/metrics.rs, src/plot.rs)
    /// A checkpoint file is missing, corrupt or unreadable.
    #[error("{path}: {msg}")]
    Checkpoint {
        /// The file or folder at fault.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A chart could not be drawn or encoded.
    #[error("chart: {0}")]
    Chart(String),
    /// A metrics log line could not be written or parsed.
    #[error("{path}:{line}: {msg}")]
    Metrics {
        /// The `metrics.jsonl` file.
        path: PathBuf,
        /// 1-based line number (0 when not about one line).
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// A collective, the rendezvous or a rank of a data-parallel run failed
    /// (src/distributed); the message names the rank and the operation.
    #[error("distributed: {0}")]
    Distributed(String),
    /// A CUDA stream or event call failed (`src/cuda`; the message is c10's).
    #[error("cuda: {0}")]
    Cuda(String),
    /// An environment or its worker process failed (`src/env`); the message
    /// names the program and the request.
    #[error("environment: {0}")]
    Environment(String),
    /// An environment call ran past its time limit (scored 0 and counted as a timeout).
    #[error("environment timed out: {0}")]
    EnvironmentTimeout(String),
}

impl Error {
    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A configuration error naming `key`.
    pub fn config(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            msg: msg.into(),
        }
    }

    /// This error as a configuration error of `key`: a config error keeps its
    /// message under the new key, anything else becomes the message.
    pub fn at_key(self, key: impl Into<String>) -> Self {
        match self {
            Error::Config { msg, .. } => Error::config(key, msg),
            other => Error::config(key, other.to_string()),
        }
    }
}
