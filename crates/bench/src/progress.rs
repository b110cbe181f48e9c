//! The progress bar on stderr.
//!
//! A ten-second run with no output looks hung, and a one-million-item prefill even more so.
//! The bar shows the rate so far, which is often all an operator wants. It draws on stderr,
//! so `--json` output on stdout stays clean for scripts.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What fills the bar.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Goal {
    /// A timed phase: the bar is the time elapsed out of this.
    Time(Duration),
    /// A bounded number of requests: the bar is the requests answered out of this.
    Ops(u64),
}

/// One phase's bar; hidden when the run is quiet.
pub(crate) struct Progress {
    bar: ProgressBar,
    goal: Goal,
}

impl Progress {
    pub(crate) fn new(visible: bool, label: &'static str, goal: Goal) -> Self {
        let length = match goal {
            Goal::Time(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            Goal::Ops(n) => n,
        };
        let bar = if visible {
            ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        // The template is a constant; if indicatif ever rejected it, the default style is
        // still a usable bar.
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:>7} [{elapsed_precise}] {wide_bar} {msg}")
        {
            bar.set_style(style);
        }
        bar.set_prefix(label);
        Self { bar, goal }
    }

    pub(crate) fn update(&self, answered: u64, errors: u64, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        #[allow(clippy::cast_precision_loss)] // a display value
        let rate = if secs > 0.0 {
            answered as f64 / secs
        } else {
            0.0
        };
        let position = match self.goal {
            Goal::Time(_) => u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            Goal::Ops(_) => answered,
        };
        self.bar.set_position(position);
        let of = match self.goal {
            Goal::Time(d) => format!("{secs:.1}/{:.0} s", d.as_secs_f64()),
            Goal::Ops(n) => format!("{answered}/{n} ops"),
        };
        self.bar
            .set_message(format!("{of}  {rate:.0} ops/s  {errors} errors"));
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
