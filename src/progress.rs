//! The one progress display of a run, on stderr.
//!
//! Owns the look (one bar for the whole run: phase, overall count, percent,
//! elapsed, ETA, live failures and 429s) and the rule that it is drawn only
//! on a terminal and never with `--quiet` (a disabled display is a hidden bar,
//! so callers never branch). It must not decide what counts as work: the
//! single consumer of each verb says how much there is (`add_work`) and what
//! finished (`inc`, `failed`). One bar for the whole run, rather than one per
//! phase, keeps elapsed time and the ETA meaningful across phases.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress display; cheap to clone (clones draw the same bar).
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar counting `unit`s, drawn on stderr when `enabled`.
    pub fn new(enabled: bool, unit: &str) -> Progress {
        if !enabled {
            return Progress { bar: ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden()) };
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let template = format!(
            "{{spinner}} {{prefix:<14}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{percent}}%) {{elapsed}}, eta {{eta}}{{msg}}"
        );
        bar.set_style(ProgressStyle::with_template(&template).expect("valid progress template").progress_chars("=> "));
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar }
    }

    /// Name the phase the run is in (the count and clock go on).
    pub fn phase(&self, name: &str) {
        self.bar.set_prefix(name.to_string());
    }

    /// More work became known.
    pub fn add_work(&self, n: u64) {
        self.bar.inc_length(n);
    }

    /// Work finished.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Show the run's failures and 429s so far (nothing while both are 0).
    pub fn counts(&self, failed: u64, rate_limited: u64) {
        let mut msg = String::new();
        if failed > 0 {
            msg.push_str(&format!(" · {failed} failed"));
        }
        if rate_limited > 0 {
            msg.push_str(&format!(" · {rate_limited}×429"));
        }
        self.bar.set_message(msg);
    }

    /// Remove the bar (the summary follows).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Position and length, for tests.
    pub fn position(&self) -> (u64, Option<u64>) {
        (self.bar.position(), self.bar.length())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_count_runs_across_phases() {
        let p = Progress::new(false, "rows");
        p.phase("reading site");
        p.add_work(3);
        p.inc(3);
        p.phase("changes");
        p.add_work(10);
        p.inc(4);
        assert_eq!(p.position(), (7, Some(13)));
        p.counts(2, 1);
        p.finish();
    }
}
