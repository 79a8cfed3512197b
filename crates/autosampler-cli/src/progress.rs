//! The progress display: one indicatif bar, reused by every task and training epoch. Without a
//! terminal (a log file, a scheduler's output) the bar is not drawn; a line with the step, the
//! rate and the time left is written instead at a steady interval (30 s, or
//! `AUTOSAMPLER_PROGRESS_SECONDS`).
use autosampler::pipeline::{text, Observer};
use autosampler::train::stage1::{EpochLog, Progress};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The progress display: one bar, reused by every task and training epoch; lines above it.
pub(crate) struct Bars {
    bar: ProgressBar,
    /// Off a terminal: how often a progress line is written, and when the last one was.
    every: Option<Duration>,
    last: Mutex<Instant>,
}

impl Bars {
    pub(crate) fn new() -> Bars {
        let every = (!std::io::stderr().is_terminal()).then(|| {
            let s = std::env::var("AUTOSAMPLER_PROGRESS_SECONDS")
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .unwrap_or(30.0);
            Duration::from_secs_f64(s)
        });
        Bars {
            bar: ProgressBar::hidden(),
            every,
            last: Mutex::new(Instant::now()),
        }
    }

    /// Off a terminal, a line for the work in progress once the interval has passed since the
    /// last one: `epoch 3/200: step 120/97 (…%), 412.3/s, ETA 2m 10s`.
    fn tick(&self) {
        let Some(every) = self.every else { return };
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() < every {
            return;
        }
        *last = Instant::now();
        let (pos, len) = (self.bar.position(), self.bar.length().unwrap_or(0));
        let pct = if len > 0 {
            100.0 * pos as f64 / len as f64
        } else {
            0.0
        };
        let prefix = self.bar.prefix();
        eprintln!(
            "{}: {pos}/{len} ({pct:.0}%){}{}, {:.1}/s, ETA {}",
            self.bar.message(),
            if prefix.is_empty() { "" } else { " " },
            prefix,
            self.bar.per_sec(),
            indicatif::HumanDuration(self.bar.eta())
        );
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
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
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
        self.tick();
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
        self.tick();
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
