//! Progress bars for long work, with rate and ETA; hidden when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` items labelled `prefix`.
pub fn bar(len: usize, prefix: impl Into<String>) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{prefix:>12} [{bar:30}] {pos}/{len} {per_sec:>12} ETA {eta:>4} {msg}",
    )
    .expect("the template is valid")
    .progress_chars("=> ");
    ProgressBar::new(len as u64)
        .with_style(style)
        .with_prefix(prefix.into())
}
