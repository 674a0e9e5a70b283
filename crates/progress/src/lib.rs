//! ferrogpt-progress: the progress of long jobs, on a terminal or in a log.
//!
//! Owns [`Progress`], the one progress type every long job uses (training, data
//! preparation, tokenizer training, the scaling sweep, evals, the speedrun's
//! stages). On a terminal it is an indicatif bar or spinner. When stderr is not
//! a terminal (CI, `nohup`, a log file) indicatif draws nothing, so a job would
//! be silent for its whole length; there it prints a plain line instead, every
//! [`PERCENT_STEP`] percent and at least every [`HEARTBEAT`] (a background
//! thread keeps the heartbeat even when the job reports nothing for a while).
//!
//! Why a crate of its own: data, evals, train, scaling and the CLI all report
//! progress, and evals depends on no other ferrogpt crate; a tiny crate gives
//! them one type without making any of them depend on another's domain.
//!
//! Must not touch: anything but stderr.

use std::io::IsTerminal as _;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Without a terminal, a line is printed each time the job crosses another
/// multiple of this many percent.
pub const PERCENT_STEP: u64 = 5;
/// Without a terminal, the longest silence between two lines.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// What a bar's position counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Whole units, shown as `pos/total unit` (e.g. `"steps"`, `"docs"`).
    Count(&'static str),
    /// A quantity whose raw value means little (e.g. MFLOPs of a ladder): only the percentage is shown.
    Percent,
}

/// Progress of one long job; cheap to update from several threads.
pub struct Progress {
    mode: Mode,
}

enum Mode {
    Hidden,
    Terminal(ProgressBar),
    Lines {
        shared: Arc<Shared>,
        heartbeat: Option<JoinHandle<()>>,
    },
}

/// State of the plain-line mode, shared with its heartbeat thread.
struct Shared {
    state: Mutex<LineState>,
    wake: Condvar,
    started: Instant,
}

impl Progress {
    /// A bar over `total` units. `show = false` (e.g. `--quiet`) hides it.
    pub fn bar(show: bool, label: &str, total: u64, counter: Counter) -> Progress {
        if !show {
            return Progress::hidden();
        }
        if !std::io::stderr().is_terminal() {
            return Progress::lines(LineState::new(label, Some(total), counter));
        }
        let template = match counter {
            Counter::Count(unit) => format!("{label} {{bar:30.cyan/blue}} {{pos}}/{{len}} {unit} | {{msg}} | {{elapsed}} (ETA {{eta}})"),
            Counter::Percent => format!("{label} {{bar:30.cyan/blue}} {{percent:>3}}% | {{msg}} | {{elapsed}} (ETA {{eta}})"),
        };
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(500));
        Progress { mode: Mode::Terminal(bar) }
    }

    /// A job of unknown length: a spinner on a terminal, a line every [`HEARTBEAT`] otherwise.
    pub fn spinner(show: bool, label: &str) -> Progress {
        if !show {
            return Progress::hidden();
        }
        if !std::io::stderr().is_terminal() {
            return Progress::lines(LineState::new(label, None, Counter::Percent));
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template(&format!("{{spinner}} {label}: {{msg}} {{elapsed}}"))
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { mode: Mode::Terminal(bar) }
    }

    pub fn hidden() -> Progress {
        Progress { mode: Mode::Hidden }
    }

    fn lines(state: LineState) -> Progress {
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            wake: Condvar::new(),
            started: Instant::now(),
        });
        eprintln!("{}", lock(&shared.state).start_line());
        let for_thread = Arc::clone(&shared);
        let heartbeat = std::thread::Builder::new()
            .name("progress-heartbeat".into())
            .spawn(move || heartbeat_loop(&for_thread))
            .ok();
        Progress {
            mode: Mode::Lines { shared, heartbeat },
        }
    }

    pub fn set_position(&self, pos: u64) {
        match &self.mode {
            Mode::Hidden => {}
            Mode::Terminal(bar) => bar.set_position(pos),
            Mode::Lines { shared, .. } => shared.update(|s, now| s.set_position(pos, now)),
        }
    }

    pub fn inc(&self, delta: u64) {
        match &self.mode {
            Mode::Hidden => {}
            Mode::Terminal(bar) => bar.inc(delta),
            Mode::Lines { shared, .. } => shared.update(|s, now| {
                let pos = s.pos.saturating_add(delta);
                s.set_position(pos, now)
            }),
        }
    }

    /// The job's current detail (e.g. the loss), shown after the bar or at the end of the next line.
    pub fn set_message(&self, message: impl Into<String>) {
        match &self.mode {
            Mode::Hidden => {}
            Mode::Terminal(bar) => bar.set_message(message.into()),
            Mode::Lines { shared, .. } => lock(&shared.state).message = message.into(),
        }
    }

    /// A line of output above the bar; printed to stderr even when the bar is hidden, so
    /// results (e.g. each finished run of a ladder) always reach the log.
    pub fn println(&self, line: &str) {
        match &self.mode {
            Mode::Terminal(bar) => bar.println(line),
            Mode::Hidden | Mode::Lines { .. } => eprintln!("{line}"),
        }
    }

    /// Ends the job: clears the bar, or prints the closing line. Later calls do nothing.
    pub fn finish(&self) {
        match &self.mode {
            Mode::Hidden => {}
            Mode::Terminal(bar) => bar.finish_and_clear(),
            Mode::Lines { shared, .. } => {
                shared.update(LineState::finish);
                shared.wake.notify_all();
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Mode::Lines { shared, heartbeat } = &mut self.mode {
            lock(&shared.state).finished = true;
            shared.wake.notify_all();
            if let Some(handle) = heartbeat.take() {
                // The thread only prints; a panic there has nothing to hand back.
                let _ = handle.join();
            }
        }
    }
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut LineState, Duration) -> Option<String>) {
        let now = self.started.elapsed();
        let line = f(&mut lock(&self.state), now);
        if let Some(line) = line {
            eprintln!("{line}");
        }
    }
}

/// A poisoned lock only means another thread panicked while printing; the state is still usable.
fn lock(state: &Mutex<LineState>) -> MutexGuard<'_, LineState> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn heartbeat_loop(shared: &Shared) {
    let mut state = lock(&shared.state);
    loop {
        if state.finished {
            return;
        }
        let now = shared.started.elapsed();
        if let Some(line) = state.heartbeat(now) {
            eprintln!("{line}");
        }
        let wait = (state.last_line_at + HEARTBEAT).saturating_sub(shared.started.elapsed());
        state = match shared.wake.wait_timeout(state, wait.max(Duration::from_millis(100))) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}

/// The plain-line mode's bookkeeping, separate from the clock so its lines can be tested
/// with any sequence of times.
#[derive(Debug)]
struct LineState {
    label: String,
    /// `None`: a spinner.
    total: Option<u64>,
    counter: Counter,
    pos: u64,
    message: String,
    /// The first position reported and when: the rate behind the ETA is measured from
    /// there, so a resumed job's head start does not shorten it.
    origin: Option<(u64, Duration)>,
    last_line_at: Duration,
    /// Multiples of [`PERCENT_STEP`] already reported.
    steps_reported: u64,
    finished: bool,
}

impl LineState {
    fn new(label: &str, total: Option<u64>, counter: Counter) -> LineState {
        LineState {
            label: label.to_string(),
            total,
            counter,
            pos: 0,
            message: String::new(),
            origin: None,
            last_line_at: Duration::ZERO,
            steps_reported: 0,
            finished: false,
        }
    }

    fn start_line(&self) -> String {
        match (self.total, self.counter) {
            (Some(total), Counter::Count(unit)) => format!("{}: started ({total} {unit})", self.label),
            _ => format!("{}: started", self.label),
        }
    }

    fn percent_steps(&self) -> u64 {
        match self.total {
            Some(total) if total > 0 => (self.pos.min(total) as u128 * 100 / total as u128) as u64 / PERCENT_STEP,
            _ => 0,
        }
    }

    /// A new position; a line when it crosses another [`PERCENT_STEP`] or the heartbeat is due.
    fn set_position(&mut self, pos: u64, now: Duration) -> Option<String> {
        if self.finished {
            return None;
        }
        self.pos = pos;
        if self.origin.is_none() {
            self.origin = Some((pos, now));
            // The first report only sets where the job starts (e.g. a resumed run's step).
            self.steps_reported = self.percent_steps();
            return None;
        }
        let steps = self.percent_steps();
        if steps > self.steps_reported || now.saturating_sub(self.last_line_at) >= HEARTBEAT {
            self.steps_reported = steps.max(self.steps_reported);
            return Some(self.emit(now));
        }
        None
    }

    fn heartbeat(&mut self, now: Duration) -> Option<String> {
        (!self.finished && now.saturating_sub(self.last_line_at) >= HEARTBEAT).then(|| self.emit(now))
    }

    fn finish(&mut self, now: Duration) -> Option<String> {
        if self.finished {
            return None;
        }
        self.finished = true;
        let took = fmt_duration(now);
        Some(match (self.total, self.counter) {
            (Some(total), Counter::Count(unit)) => format!("{}: done, {}/{total} {unit} in {took}", self.label, self.pos),
            _ => format!("{}: done in {took}", self.label),
        })
    }

    fn emit(&mut self, now: Duration) -> String {
        self.last_line_at = now;
        let mut line = format!("{}: ", self.label);
        if let Some(total) = self.total {
            let percent = if total == 0 {
                100
            } else {
                self.pos.min(total) as u128 * 100 / total as u128
            };
            line.push_str(&format!("{percent}%"));
            if let Counter::Count(unit) = self.counter {
                line.push_str(&format!(" ({}/{total} {unit})", self.pos));
            }
            line.push_str(", ");
        }
        line.push_str(&format!("{} elapsed", fmt_duration(now)));
        if let Some(eta) = self.eta(now) {
            line.push_str(&format!(", ETA {}", fmt_duration(eta)));
        }
        if !self.message.is_empty() {
            line.push_str(" | ");
            line.push_str(&self.message);
        }
        line
    }

    fn eta(&self, now: Duration) -> Option<Duration> {
        let total = self.total?;
        let (pos0, t0) = self.origin?;
        let done = self.pos.checked_sub(pos0).filter(|&d| d > 0)?;
        let left = total.saturating_sub(self.pos);
        let per_unit = now.saturating_sub(t0).as_secs_f64() / done as f64;
        Some(Duration::from_secs_f64((per_unit * left as f64).min(u32::MAX as f64)))
    }
}

/// `45s`, `2m05s`, `1h02m`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_line_every_few_percent_with_counts_eta_and_message() {
        let mut s = LineState::new("train", Some(1000), Counter::Count("steps"));
        assert_eq!(s.start_line(), "train: started (1000 steps)");
        assert_eq!(s.set_position(0, secs(0)), None);
        // Under 5%: nothing.
        assert_eq!(s.set_position(49, secs(4)), None);
        s.message = "loss 2.3412".into();
        assert_eq!(
            s.set_position(50, secs(5)).as_deref(),
            Some("train: 5% (50/1000 steps), 5s elapsed, ETA 1m35s | loss 2.3412")
        );
        // The next line waits for 10%.
        assert_eq!(s.set_position(99, secs(10)), None);
        assert_eq!(
            s.set_position(100, secs(10)).as_deref(),
            Some("train: 10% (100/1000 steps), 10s elapsed, ETA 1m30s | loss 2.3412")
        );
        // A jump over several steps prints once.
        assert!(s
            .set_position(260, secs(26))
            .is_some_and(|l| l.starts_with("train: 26% (260/1000 steps)")));
        assert_eq!(s.set_position(299, secs(29)), None);
        assert_eq!(s.finish(secs(100)).as_deref(), Some("train: done, 299/1000 steps in 1m40s"));
        assert_eq!(s.finish(secs(101)), None);
        assert_eq!(s.set_position(1000, secs(102)), None);
    }

    #[test]
    fn slow_jobs_get_a_line_at_least_every_heartbeat() {
        let mut s = LineState::new("ladder", Some(1_000_000), Counter::Percent);
        s.set_position(0, secs(0));
        assert_eq!(s.heartbeat(secs(29)), None);
        s.message = "d8-l2 seed 1".into();
        assert_eq!(s.heartbeat(secs(30)).as_deref(), Some("ladder: 0%, 30s elapsed | d8-l2 seed 1"));
        assert_eq!(s.heartbeat(secs(45)), None);
        // An update inside the step also prints once the heartbeat is due.
        assert_eq!(s.set_position(1000, secs(59)), None);
        assert_eq!(
            s.set_position(2000, secs(60)).as_deref(),
            Some("ladder: 0%, 1m00s elapsed, ETA 8h19m | d8-l2 seed 1")
        );
        assert_eq!(s.finish(secs(3725)).as_deref(), Some("ladder: done in 1h02m"));
        assert_eq!(s.heartbeat(secs(4000)), None);
    }

    #[test]
    fn spinners_print_elapsed_time_and_message() {
        let mut s = LineState::new("tokenizer", None, Counter::Percent);
        assert_eq!(s.start_line(), "tokenizer: started");
        s.message = "learning 4096 merges".into();
        assert_eq!(
            s.heartbeat(secs(31)).as_deref(),
            Some("tokenizer: 31s elapsed | learning 4096 merges")
        );
        assert_eq!(s.finish(secs(75)).as_deref(), Some("tokenizer: done in 1m15s"));
    }

    #[test]
    fn a_resumed_job_reports_from_its_start_and_measures_its_own_rate() {
        let mut s = LineState::new("train", Some(100), Counter::Count("steps"));
        // Resumed at step 60: no line for the head start.
        assert_eq!(s.set_position(60, secs(0)), None);
        assert_eq!(s.set_position(64, secs(4)), None);
        // 5 steps in 5 s: 35 left take 35 s.
        assert_eq!(
            s.set_position(65, secs(5)).as_deref(),
            Some("train: 65% (65/100 steps), 5s elapsed, ETA 35s")
        );
    }

    #[test]
    fn empty_and_overfull_totals_stay_in_range() {
        let mut s = LineState::new("docs", Some(0), Counter::Count("docs"));
        s.set_position(0, secs(0));
        assert_eq!(s.heartbeat(secs(30)).as_deref(), Some("docs: 100% (0/0 docs), 30s elapsed"));
        let mut s = LineState::new("docs", Some(10), Counter::Count("docs"));
        s.set_position(0, secs(0));
        assert!(s
            .set_position(25, secs(1))
            .is_some_and(|l| l.starts_with("docs: 100% (25/10 docs)")));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(fmt_duration(secs(0)), "0s");
        assert_eq!(fmt_duration(secs(59)), "59s");
        assert_eq!(fmt_duration(secs(61)), "1m01s");
        assert_eq!(fmt_duration(secs(3599)), "59m59s");
        assert_eq!(fmt_duration(secs(7380)), "2h03m");
    }

    #[test]
    fn hidden_progress_accepts_every_call() {
        let p = Progress::hidden();
        p.set_position(3);
        p.inc(2);
        p.set_message("x");
        p.finish();
        assert!(matches!(p.mode, Mode::Hidden));
        assert!(matches!(Progress::bar(false, "x", 10, Counter::Percent).mode, Mode::Hidden));
    }
}
