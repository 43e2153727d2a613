//! Datasets, prompt building and the built-in task.
