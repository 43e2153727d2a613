//! The run configuration (TOML), assembled from each module's section.
