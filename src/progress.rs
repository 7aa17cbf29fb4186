//! Progress bars for long work, with rate and ETA. On a terminal they redraw in place; when
//! stderr is a log file or a pipe (a scheduled job, CI) a bar writes its line as plain text
//! instead, first after [`LOG_INTERVAL`] and then at most once per interval, so that long work
//! shows in the log without a line per photo and short work adds nothing.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle, TermLike};

/// How often a bar writes a line where stderr is not a terminal.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A bar over `len` items labelled `prefix`.
pub fn bar(len: usize, prefix: impl Into<String>) -> ProgressBar {
    let bar = ProgressBar::new(len as u64)
        .with_style(style())
        .with_prefix(prefix.into());
    if !std::io::stderr().is_terminal() {
        let lines = LogLines::new(Box::new(std::io::stderr()), LOG_INTERVAL);
        bar.set_draw_target(ProgressDrawTarget::term_like_with_hz(Box::new(lines), 1));
    }
    bar
}

/// Prefix, bar, count, rate (one decimal: indicatif's own `per_sec` prints a dozen digits) and
/// time left.
fn style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>12} [{bar:30}] {pos}/{len} {rate:>10} ETA {eta:>4} {msg}",
    )
    .expect("the template is valid")
    .with_key(
        "rate",
        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            // A failed write only loses this draw's rate.
            let _ = write!(w, "{:.1}/s", state.per_sec());
        },
    )
    .progress_chars("=> ")
}

/// A bar's drawing as lines of a log: what a draw writes is collected, and written out as one
/// line when the interval has passed since the bar began or since its last line.
struct LogLines {
    interval: Duration,
    state: Mutex<LogState>,
}

struct LogState {
    out: Box<dyn Write + Send>,
    /// The text of the draw under way.
    text: String,
    /// When the next line is due.
    due: Instant,
}

impl LogLines {
    fn new(out: Box<dyn Write + Send>, interval: Duration) -> Self {
        LogLines {
            interval,
            state: Mutex::new(LogState {
                out,
                text: String::new(),
                due: Instant::now() + interval,
            }),
        }
    }

    /// A poisoned lock still holds usable text: progress never stops the work.
    fn state(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for LogLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLines")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl TermLike for LogLines {
    fn width(&self) -> u16 {
        100
    }

    // A log has no cursor to move.
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        let text = &mut self.state().text;
        text.push_str(s);
        text.push(' ');
        Ok(())
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.state().text.push_str(s);
        Ok(())
    }

    fn clear_line(&self) -> std::io::Result<()> {
        self.state().text.clear();
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        let mut state = self.state();
        let text = std::mem::take(&mut state.text);
        let line = text.replace('\r', "");
        let line = line.trim();
        let now = Instant::now();
        if line.is_empty() || now < state.due {
            return Ok(());
        }
        state.due = now + self.interval;
        writeln!(state.out, "{line}")?;
        state.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A writer whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn drawn(interval: Duration, steps: u64, style: ProgressStyle) -> String {
        let out = Shared::default();
        let lines = LogLines::new(Box::new(out.clone()), interval);
        let bar = ProgressBar::with_draw_target(
            Some(steps),
            ProgressDrawTarget::term_like_with_hz(Box::new(lines), 20),
        )
        .with_prefix("decoding");
        bar.set_style(style);
        for _ in 0..steps {
            bar.inc(1);
            std::thread::sleep(Duration::from_millis(60));
        }
        bar.finish_and_clear();
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_bar_off_the_terminal_writes_plain_lines_only_once_its_interval_has_passed() {
        // Short work writes nothing.
        let plain = || ProgressStyle::with_template("{prefix} {pos}/{len}").unwrap();
        assert_eq!(drawn(Duration::from_secs(3600), 5, plain()), "");
        // Long work writes whole lines, without escape codes or carriage returns, that end
        // with the count reached.
        let log = drawn(Duration::from_millis(100), 8, plain());
        let lines: Vec<&str> = log.lines().collect();
        assert!(lines.len() >= 2 && lines.len() <= 9, "{log:?}");
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with("decoding ") && l.ends_with("/8")),
            "{log:?}"
        );
        assert!(!log.contains('\r') && !log.contains('\u{1b}'), "{log:?}");
    }

    #[test]
    fn the_rate_has_one_decimal() {
        let log = drawn(Duration::from_millis(100), 8, style());
        let rates: Vec<&str> = log
            .split_whitespace()
            .filter(|w| w.ends_with("/s"))
            .collect();
        assert!(!rates.is_empty(), "{log:?}");
        for rate in rates {
            let number = rate.trim_end_matches("/s");
            let (_, decimals) = number.split_once('.').expect("a decimal point");
            assert_eq!(decimals.len(), 1, "{rate} in {log:?}");
            assert!(number.parse::<f64>().is_ok_and(|r| r > 0.0), "{rate}");
        }
    }
}
