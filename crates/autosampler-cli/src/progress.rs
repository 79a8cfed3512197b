//! The progress display: one indicatif bar, reused by every task and training epoch.
use autosampler::pipeline::{text, Observer};
use autosampler::train::stage1::{EpochLog, Progress};
use indicatif::{ProgressBar, ProgressStyle};

/// The progress display: one bar, reused by every task and training epoch; lines above it.
pub(crate) struct Bars {
    bar: ProgressBar,
}

impl Bars {
    pub(crate) fn new() -> Bars {
        Bars {
            bar: ProgressBar::hidden(),
        }
    }

    fn style(&self, template: &str) {
        self.bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> "),
        );
    }

    /// A line above the bar (on stderr when the bar is hidden, e.g. not a terminal).
    fn line(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// Starts the bar afresh (visible on a terminal).
    fn start(&self, len: u64, msg: String) {
        self.bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        self.bar.reset();
        self.bar.set_length(len);
        self.bar.set_prefix("");
        self.bar.set_message(msg);
    }
}

impl Progress for Bars {
    fn epoch_start(&self, epoch: usize, epochs: usize, batches: usize) {
        self.style("{msg:>13} [{bar:30}] {pos}/{len} {prefix} {per_sec} ETA {eta}");
        self.start(batches as u64, format!("epoch {}/{epochs}", epoch + 1));
    }
    fn batch(&self, loss: f64) {
        self.bar.set_prefix(format!("loss {loss:.3}"));
        self.bar.inc(1);
    }
    fn epoch_end(&self, l: &EpochLog) {
        self.line(&text::epoch_line(l));
    }
}

impl Observer for Bars {
    fn note(&self, line: &str) {
        self.line(line);
    }
    fn task(&self, what: &'static str, total: u64) {
        self.style("{msg:>10} [{bar:36}] {human_pos}/{human_len} {prefix} {per_sec} ETA {eta}");
        self.start(total, what.to_string());
    }
    fn advance(&self, n: u64, info: &str) {
        if !info.is_empty() {
            self.bar.set_prefix(info.to_string());
        }
        self.bar.inc(n);
    }
    fn task_done(&self) {
        self.bar.finish_and_clear();
    }
    fn show(&self, text: &str) {
        print!("{text}");
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
