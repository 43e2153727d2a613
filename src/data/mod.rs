//! Datasets, prompt building and the built-in task.

mod example;
pub use example::Example;
