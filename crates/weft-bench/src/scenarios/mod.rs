//! The scenarios. Each runs against one backend and returns its row.

pub mod delayed;
pub mod flows;
pub mod idle;
pub mod suspend;
pub mod throughput;

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar for `len` items, labelled `what`.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{prefix:>34} [{bar:30}] {pos}/{len} {per_sec} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what.to_owned());
    bar
}

/// Milliseconds since `start`, as a float.
pub fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}
