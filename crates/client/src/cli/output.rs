//! What `ferry upload` and `ferry download` print, from the library's events.
//!
//! - On a terminal: one progress bar per file (plus a total for several files) with rate
//!   and time left, on stderr; each result on stdout.
//! - With `--json`, or when stdout is not a terminal: one JSON object per line on stdout —
//!   `start`, `hashing`, `progress` (at most 5 a second per file, and the last one),
//!   `retry`, `note`, and one `result` per file:
//!   `{"event":"result","file":…,"status":"ok","url":…}` or
//!   `{"event":"result","file":…,"status":"failed","error":…,"hint":…}`.
//! - `--quiet` (without `--json`): no progress; only the results, bare URLs or paths one per
//!   line on stdout (also when stdout is a pipe), and errors on stderr.
//!
//! Whatever the mode, failures end with a summary on stderr: each failed file, the error
//! (with the server's own message) and the next step.

use ferry_client::event::{Event, EventSink};
use indicatif::{
    BinaryBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle,
};
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Least time between two JSON progress lines of one file.
const JSON_PROGRESS_EVERY: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Upload,
    Download,
}

pub struct Output {
    json: bool,
    quiet: bool,
    kind: Kind,
    bars: Option<MultiProgress>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    files: HashMap<String, FileState>,
    total: Option<ProgressBar>,
    /// Bytes the server held before this run, over all files (the total bar's rate base).
    total_base: Arc<AtomicU64>,
    failures: Vec<(String, String, Option<String>)>,
    succeeded: usize,
}

#[derive(Default)]
struct FileState {
    bar: Option<ProgressBar>,
    /// Bytes the server held before this run: not counted in the rate.
    base: Arc<AtomicU64>,
    bytes: u64,
    total: u64,
    last_json: Option<Instant>,
    retrying: bool,
    /// The last retry reason printed in full, so a reason repeated on every attempt is
    /// printed once.
    last_reason: Option<String>,
}

/// The bar's style. The rate counts only bytes moved by this run (position minus `base`,
/// over the time since the transfer started), so resuming a nearly finished file or an
/// instant upload does not show hundreds of GiB/s; nothing is shown until bytes move.
fn style(total: bool, base: Arc<AtomicU64>) -> ProgressStyle {
    let bar = if total {
        "{bar:28.green}"
    } else {
        "{bar:28.cyan/blue}"
    };
    ProgressStyle::with_template(&format!(
        "{{prefix:24!}} {bar} {{binary_bytes:>10}}/{{binary_total_bytes:<10}} {{rate:>12}} {{eta:>4}} {{msg}}"
    ))
    .expect("valid template")
    .with_key(
        "rate",
        move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let moved = s.pos().saturating_sub(base.load(Ordering::Relaxed));
            let secs = s.elapsed().as_secs_f64();
            if moved > 0 && secs >= 0.2 {
                let _ = write!(w, "{}/s", BinaryBytes((moved as f64 / secs) as u64));
            }
        },
    )
    .progress_chars("=> ")
}

/// A short label for a bar: the file name, not its whole path.
fn short(file: &str) -> String {
    std::path::Path::new(file)
        .file_name()
        .map_or_else(|| file.to_owned(), |n| n.to_string_lossy().into_owned())
}

fn one_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.chars().count() <= max {
        line.to_owned()
    } else {
        let mut out: String = line.chars().take(max).collect();
        out.push('…');
        out
    }
}

impl Output {
    pub fn new(json: bool, quiet: bool, kind: Kind) -> Arc<Output> {
        let bars = (!json && !quiet)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)));
        Arc::new(Output {
            json,
            quiet,
            kind,
            bars,
            state: Mutex::default(),
        })
    }

    pub fn sink(self: &Arc<Self>) -> EventSink {
        let me = self.clone();
        Arc::new(move |e| me.on_event(e))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn line(&self, v: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    }

    /// Prints on stdout without tearing the bars.
    fn print(&self, text: &str) {
        match &self.bars {
            Some(mp) => mp.suspend(|| println!("{text}")),
            None => println!("{text}"),
        }
    }

    pub fn warn(&self, text: &str) {
        match &self.bars {
            Some(mp) => mp.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    fn bar_for(&self, st: &mut State, file: &str, total: u64) -> Option<ProgressBar> {
        let mp = self.bars.as_ref()?;
        let f = st.files.entry(file.to_owned()).or_default();
        if f.bar.is_none() {
            let bar = ProgressBar::new(total)
                .with_style(style(false, f.base.clone()))
                .with_prefix(short(file));
            let bar = match &st.total {
                Some(t) => mp.insert_before(t, bar),
                None => mp.add(bar),
            };
            f.bar = Some(bar);
        }
        let bar = f.bar.clone();
        // A total bar once a second file shows up.
        if self.kind == Kind::Upload && st.total.is_none() && st.files.len() > 1 {
            let t = mp.add(
                ProgressBar::new(0)
                    .with_style(style(true, st.total_base.clone()))
                    .with_prefix("total"),
            );
            st.total = Some(t);
        }
        bar
    }

    fn update_total(&self, st: &State) {
        if let Some(t) = &st.total {
            let (bytes, total) = st
                .files
                .values()
                .fold((0, 0), |(b, t), f| (b + f.bytes, t + f.total));
            t.set_length(total);
            t.set_position(bytes);
        }
    }

    fn on_event(&self, e: Event) {
        if self.json {
            self.on_json(e);
        } else {
            self.on_human(e);
        }
    }

    fn on_json(&self, e: Event) {
        let mut st = self.state();
        let quiet = self.quiet;
        match e {
            Event::Hashing { file, bytes, total } => {
                if !quiet {
                    self.json_progress(st, "hashing", file, bytes, total);
                }
            }
            Event::Progress { file, bytes, total } => {
                if !quiet {
                    self.json_progress(st, "progress", file, bytes, total);
                }
            }
            Event::Started {
                file,
                total,
                resumed_from,
            } => {
                if !quiet {
                    drop(st);
                    self.line(json!({"event": "start", "file": file, "total": total, "resumed_from": resumed_from}));
                }
            }
            Event::Retrying {
                file,
                attempt,
                delay,
                error,
            } => {
                if !quiet {
                    drop(st);
                    self.line(json!({"event": "retry", "file": file, "attempt": attempt, "delay_ms": delay.as_millis() as u64, "error": error}));
                }
            }
            Event::Note { file, message } => {
                if !quiet {
                    drop(st);
                    self.line(json!({"event": "note", "file": file, "message": message}));
                }
            }
            Event::Finished { file, url, path } => {
                st.succeeded += 1;
                drop(st);
                let mut v = json!({"event": "result", "file": file, "status": "ok", "url": url});
                if let Some(p) = path {
                    v["path"] = json!(p);
                }
                self.line(v);
            }
            Event::Failed { file, error, hint } => {
                st.failures
                    .push((file.clone(), error.clone(), hint.clone()));
                drop(st);
                self.line(json!({"event": "result", "file": file, "status": "failed", "error": error, "hint": hint}));
            }
        }
    }

    /// A progress line, unless one for this file went out less than
    /// [`JSON_PROGRESS_EVERY`] ago (the last one always goes out).
    fn json_progress(
        &self,
        mut st: std::sync::MutexGuard<'_, State>,
        event: &str,
        file: String,
        bytes: u64,
        total: u64,
    ) {
        let f = st.files.entry(format!("{event}:{file}")).or_default();
        let now = Instant::now();
        if bytes >= total
            || f.last_json
                .is_none_or(|t| now.duration_since(t) >= JSON_PROGRESS_EVERY)
        {
            f.last_json = Some(now);
            drop(st);
            self.line(json!({"event": event, "file": file, "bytes": bytes, "total": total}));
        }
    }

    fn on_human(&self, e: Event) {
        let mut st = self.state();
        match e {
            Event::Hashing { file, bytes, total } => {
                if let Some(bar) = self.bar_for(&mut st, &file, total) {
                    bar.set_message("hashing");
                    bar.set_length(total);
                    bar.set_position(bytes);
                }
            }
            Event::Started {
                file,
                total,
                resumed_from,
            } => {
                let bar = self.bar_for(&mut st, &file, total);
                st.total_base.fetch_add(resumed_from, Ordering::Relaxed);
                let f = st.files.entry(file).or_default();
                f.base.store(resumed_from, Ordering::Relaxed);
                if let Some(bar) = bar {
                    bar.set_length(total);
                    bar.set_position(resumed_from);
                    bar.set_message(if resumed_from > 0 { "resumed" } else { "" });
                    bar.reset_eta();
                    bar.reset_elapsed();
                }
                f.total = total;
                f.bytes = resumed_from;
                self.update_total(&st);
            }
            Event::Progress { file, bytes, total } => {
                let f = st.files.entry(file).or_default();
                f.bytes = bytes;
                f.total = total;
                if let Some(bar) = &f.bar {
                    bar.set_position(bytes);
                    if f.retrying {
                        bar.set_message("");
                    }
                }
                f.retrying = false;
                self.update_total(&st);
            }
            Event::Retrying {
                file,
                attempt,
                delay,
                error,
            } => {
                let f = st.files.entry(file.clone()).or_default();
                f.retrying = true;
                let msg = format!(
                    "retry {attempt} in {}: {}",
                    ferry_client::retry::human_duration(delay),
                    one_line(&error, 60)
                );
                match &f.bar {
                    Some(bar) => {
                        bar.set_message(msg);
                        // The bar's line is cut to the terminal's width; the whole reason
                        // goes above the bars, once per distinct reason.
                        if f.last_reason.as_deref() != Some(error.as_str()) && !self.quiet {
                            f.last_reason = Some(error.clone());
                            drop(st);
                            self.warn(&format!("{}: retrying: {error}", short(&file)));
                        }
                    }
                    None if !self.quiet => {
                        drop(st);
                        self.warn(&format!("{file}: {msg}"));
                    }
                    None => {}
                }
            }
            Event::Note { file, message } => {
                drop(st);
                if !self.quiet {
                    self.warn(&format!("{}: {message}", short(&file)));
                }
            }
            Event::Finished { file, url, path } => {
                st.succeeded += 1;
                let f = st.files.entry(file.clone()).or_default();
                if let Some(bar) = &f.bar {
                    bar.finish_with_message("done");
                }
                drop(st);
                let (bare, line) = match (self.kind, path) {
                    (Kind::Download, Some(p)) => (p.clone(), format!("✓ saved {p}")),
                    _ => (url.clone(), format!("✓ {file}  {url}")),
                };
                self.print(if self.quiet { &bare } else { &line });
            }
            Event::Failed { file, error, hint } => {
                let f = st.files.entry(file.clone()).or_default();
                if let Some(bar) = &f.bar {
                    bar.abandon_with_message("failed");
                }
                st.failures.push((file, error, hint));
            }
        }
    }

    /// After the work: finishes the bars, prints the per-file summary of failures, and
    /// returns the exit code (0 when every file succeeded).
    pub fn finish<'a>(
        &self,
        results: impl IntoIterator<Item = (&'a str, Option<&'a ferry_client::Error>)>,
    ) -> ExitCode {
        let results: Vec<_> = results.into_iter().collect();
        let failed = results.iter().filter(|(_, e)| e.is_some()).count();
        let st = self.state();
        if let Some(t) = &st.total {
            t.finish();
        }
        if failed == 0 {
            return ExitCode::SUCCESS;
        }
        // The summary is for a person, so it goes to stderr also in JSON mode, where stdout
        // carries the result lines for programs.
        {
            let mut lines = Vec::new();
            for (file, error, hint) in &st.failures {
                lines.push(format!("✗ {file}: {error}"));
                if let Some(h) = hint {
                    lines.push(format!("  next: {h}"));
                }
            }
            if results.len() > 1 {
                lines.push(format!(
                    "{failed} of {} files failed, {} succeeded.",
                    results.len(),
                    results.len() - failed
                ));
            }
            drop(st);
            self.warn(&lines.join("\n"));
        }
        ExitCode::FAILURE
    }

    pub fn interrupted(&self) {
        if let Some(mp) = &self.bars {
            let _ = mp.clear();
        }
        let what = match self.kind {
            Kind::Upload => "the server keeps what it acknowledged",
            Kind::Download => "the .part file keeps what arrived",
        };
        eprintln!("interrupted: {what}; run the same command again to resume");
    }
}
