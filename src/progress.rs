//! Progress reporting: indicatif bars per table and overall on a terminal, a log line every few
//! seconds otherwise, nothing with `--no-progress`. The backup core only calls [`Progress::add`].
//!
//! Log lines go through [`LogWriter`], which pauses the bars while a line is written so they do
//! not tear.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

static MULTI: OnceLock<MultiProgress> = OnceLock::new();

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bars on a terminal.
    Bars,
    /// Periodic log lines.
    Log,
    /// Nothing.
    Hidden,
}

impl Mode {
    /// Bars on a terminal, log lines otherwise, nothing when disabled.
    pub fn detect(no_progress: bool) -> Mode {
        if no_progress {
            Mode::Hidden
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Log
        }
    }
}

/// A `tracing` writer to stderr that does not tear progress bars.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match MULTI.get() {
            Some(m) => m.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

struct Item {
    name: String,
    est_rows: u64,
    rows: AtomicU64,
    bytes: AtomicU64,
    bar: Option<ProgressBar>,
}

/// Progress of one backup run.
pub struct Progress {
    mode: Mode,
    items: Vec<Item>,
    overall: Option<ProgressBar>,
    started: Instant,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Progress {
    /// Progress over `tables` (name, estimated rows).
    pub fn new(mode: Mode, tables: &[(String, u64)]) -> Arc<Progress> {
        let total: u64 = tables.iter().map(|t| t.1).sum();
        let (overall, bars) = if mode == Mode::Bars {
            let multi =
                MULTI.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
            let overall = multi.add(ProgressBar::new(total.max(1)));
            overall.set_style(style(
                "{prefix:>24.bold} [{bar:30}] {human_pos}/~{human_len} rows {msg} ETA {eta}",
            ));
            overall.set_prefix("total");
            let bars = tables
                .iter()
                .map(|(name, est)| {
                    let b = multi.add(ProgressBar::new((*est).max(1)));
                    b.set_style(style(
                        "{prefix:>24} [{bar:30}] {human_pos}/~{human_len} rows {msg}",
                    ));
                    b.set_prefix(truncate(name, 24));
                    Some(b)
                })
                .collect();
            (Some(overall), bars)
        } else {
            (None, vec![None; tables.len()])
        };
        let items = tables
            .iter()
            .zip(bars)
            .map(|((name, est), bar)| Item {
                name: name.clone(),
                est_rows: *est,
                rows: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                bar,
            })
            .collect();
        Arc::new(Progress {
            mode,
            items,
            overall,
            started: Instant::now(),
        })
    }

    /// Counts rows read (and their bytes) for table `i`.
    pub fn add(&self, i: usize, rows: u64, bytes: u64) {
        let Some(item) = self.items.get(i) else {
            return;
        };
        let done = item.rows.fetch_add(rows, Ordering::Relaxed) + rows;
        item.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(b) = &item.bar {
            if done > b.length().unwrap_or(0) {
                b.set_length(done);
            }
            b.set_position(done);
        }
        if let Some(o) = &self.overall {
            o.inc(rows);
            let (total, bytes) = self.totals();
            if total > o.length().unwrap_or(0) {
                o.set_length(total);
            }
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            o.set_message(format!(
                "{:.0} rows/s, {:.1} MiB/s read",
                total as f64 / secs,
                bytes as f64 / 1_048_576.0 / secs
            ));
        }
    }

    /// Table `i` is finished.
    pub fn table_done(&self, i: usize) {
        if let Some(b) = self.items.get(i).and_then(|it| it.bar.as_ref()) {
            let pos = b.position();
            b.set_length(pos.max(1));
            b.finish_with_message("done");
        }
    }

    /// Rows and bytes so far.
    pub fn totals(&self) -> (u64, u64) {
        self.items.iter().fold((0, 0), |(r, b), i| {
            (
                r + i.rows.load(Ordering::Relaxed),
                b + i.bytes.load(Ordering::Relaxed),
            )
        })
    }

    /// One summary line for the log.
    pub fn log_line(&self) {
        let (rows, bytes) = self.totals();
        let est: u64 = self.items.iter().map(|i| i.est_rows).sum();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let busy: Vec<String> = self
            .items
            .iter()
            .filter(|i| {
                let r = i.rows.load(Ordering::Relaxed);
                r > 0 && i.bar.as_ref().is_none_or(|b| !b.is_finished())
            })
            .map(|i| format!("{}={}", i.name, i.rows.load(Ordering::Relaxed)))
            .take(4)
            .collect();
        tracing::info!(
            rows,
            est_rows = est,
            mib = format!("{:.1}", bytes as f64 / 1048576.0),
            rows_per_sec = (rows as f64 / secs) as u64,
            tables = %busy.join(" "),
            "Progress."
        );
    }

    /// In log mode, logs a line every `every` until the returned handle is aborted.
    pub fn spawn_logger(self: &Arc<Self>, every: Duration) -> Option<tokio::task::JoinHandle<()>> {
        if self.mode != Mode::Log {
            return None;
        }
        let me = Arc::clone(self);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                me.log_line();
            }
        }))
    }

    /// Clears the bars.
    pub fn finish(&self) {
        for b in self.items.iter().filter_map(|i| i.bar.as_ref()) {
            b.finish_and_clear();
        }
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let tail: String = s
            .chars()
            .rev()
            .take(n - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    }
}
