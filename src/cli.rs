//! The command line: clap definitions, logging set-up, the subcommands and the mapping of
//! outcomes to exit codes (0 success, 1 verification mismatch, 2 any error).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::crypto::{self, Identities};
use crate::layout::{self, Metadata};
use crate::manifest::Plan;
use crate::progress::{self, LogWriter};
use crate::restore::{self, RestoreOptions};
use crate::sink::Sink;
use crate::snapshot::{self, BackupOptions};
use crate::source::{self, Source};
use crate::state::{ChunkStatus, SqliteState, StateStore};
use crate::verify::{self, VerifyOptions};

/// Consistent, parallel, resumable logical backups of MySQL/MariaDB tables.
#[derive(Debug, Parser)]
#[command(name = "storagetapper", version, about, long_about = None, propagate_version = true)]
#[command(after_help = "Exit codes: 0 success, 1 verification found a mismatch, 2 any error.")]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log output (-q warnings only, -qq errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,
    /// No progress bars or progress log lines.
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--threads`: 1 to 256, as `[snapshot] threads`.
fn threads_parser() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256)
}

/// Log line format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a consistent, parallel, chunked snapshot of the manifest's tables (resumes an
    /// unfinished backup of the same manifest). With a `kafka://` destination: every row as an
    /// `op: "r"` event on its table's topic, read in key order, exactly once across kills.
    Backup {
        /// The manifest (TOML).
        #[arg(short, long, value_name = "FILE")]
        manifest: PathBuf,
        /// Worker connections (default: [snapshot] threads).
        #[arg(short, long, value_name = "N", value_parser = threads_parser())]
        threads: Option<usize>,
        /// Abandon an unfinished backup of this manifest and start a new one.
        #[arg(long)]
        fresh: bool,
        /// After the snapshot, stream changes from the snapshot's position into the backup's
        /// `changelog/` (like `tail`), so snapshot + changelog give the source at any later
        /// position.
        #[arg(long)]
        follow: bool,
        /// With --follow: stop at the first transaction boundary at or after this position.
        #[arg(long, value_name = "POS", requires = "follow")]
        until: Option<String>,
        /// With --follow: stop after this many change events.
        #[arg(long, value_name = "N", requires = "follow")]
        max_events: Option<u64>,
        /// With --follow: stop after this long (`30s`, `5m`, `1h`).
        #[arg(long, value_name = "DURATION", value_parser = duration_parser, requires = "follow")]
        duration: Option<std::time::Duration>,
    },
    /// Stream the manifest's tables' row changes from the binlog into changelog files, or into
    /// Kafka topics with a `kafka://` destination (realtime only, no snapshot). Resumes from the saved position; SIGTERM/Ctrl-C stops at
    /// the next transaction boundary, saves and exits 0.
    Tail {
        /// The manifest (TOML).
        #[arg(short, long, value_name = "FILE")]
        manifest: PathBuf,
        /// Where to start: `saved` (the position saved by the last run, else `now`), `now`, a
        /// MariaDB GTID state (`0-1-977`) or `<file>:<pos>`.
        #[arg(long, value_name = "POS", default_value = "saved")]
        from: String,
        /// Stop at the first transaction boundary at or after this position (GTID state,
        /// `<file>:<pos>` or `now` = the server's position at start).
        #[arg(long, value_name = "POS")]
        until: Option<String>,
        /// Stop at the first transaction boundary after this many change events.
        #[arg(long, value_name = "N")]
        max_events: Option<u64>,
        /// Stop at the first transaction boundary after this long (`30s`, `5m`, `1h`).
        #[arg(long, value_name = "DURATION", value_parser = duration_parser)]
        duration: Option<std::time::Duration>,
    },
    /// Load a backup into a MySQL/MariaDB server (resumes an unfinished restore of the same
    /// backup into the same target). The target's password comes from
    /// STORAGETAPPER_TARGET_PASSWORD.
    Restore {
        /// The manifest (TOML) whose destination holds the backup.
        #[arg(short, long, value_name = "FILE")]
        manifest: PathBuf,
        /// Backup id, or `latest`.
        #[arg(short, long, value_name = "ID", default_value = "latest")]
        backup: String,
        /// `mysql://user@host:port[/database]`: a database in the path receives every table,
        /// otherwise each table goes back to its original schema.
        #[arg(long, value_name = "URL")]
        target: String,
        /// Only tables whose `schema.table` matches this glob.
        #[arg(long, value_name = "PATTERN")]
        table: Option<String>,
        /// Parallel connections (default: [snapshot] threads).
        #[arg(short, long, value_name = "N", value_parser = threads_parser())]
        threads: Option<usize>,
        /// Drop and recreate target tables that are not empty.
        #[arg(long)]
        replace: bool,
        /// Keep the load out of the target's binlog (SET sql_log_bin = 0).
        #[arg(long)]
        no_binlog: bool,
        /// age identity file for an encrypted backup (repeatable; default: the files in
        /// STORAGETAPPER_IDENTITY, `:`-separated).
        #[arg(short, long, value_name = "FILE")]
        identity: Vec<PathBuf>,
        /// After loading the snapshot, apply the backup's changelog (from `backup --follow`)
        /// up to this position: a MariaDB GTID state or `<file>:<pos>` (point-in-time restore).
        #[arg(long, value_name = "POS")]
        until: Option<String>,
    },
    /// Check that a backup is whole: every file exists, matches its sha256, decrypts,
    /// decompresses and decodes with the right row count. Exit 1 names each bad file.
    Verify {
        /// The manifest (TOML) whose destination holds the backup.
        #[arg(short, long, value_name = "FILE")]
        manifest: PathBuf,
        /// Backup id, or `latest`.
        #[arg(short, long, value_name = "ID", default_value = "latest")]
        backup: String,
        /// age identity file for an encrypted backup (repeatable; default: the files in
        /// STORAGETAPPER_IDENTITY, `:`-separated).
        #[arg(short, long, value_name = "FILE")]
        identity: Vec<PathBuf>,
        /// Also compare each chunk's rows with the live source (a fingerprint of the same key
        /// range now vs at the snapshot). On a live source, changed chunks are expected (rows
        /// written since), not corruption: they are reported, not counted as bad.
        #[arg(long)]
        against_source: bool,
        /// Machine-readable report.
        #[arg(long)]
        json: bool,
    },
    /// Make a new age X25519 identity (key file, mode 0600) and print its recipient.
    Keygen {
        /// Write the key file here (refuses to overwrite); default: print it to stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Dry run: resolved tables, columns, chunk keys, estimated rows and bytes, the exact
    /// SELECTs and source checks; writes nothing.
    Plan {
        /// The manifest (TOML).
        #[arg(short, long, value_name = "FILE")]
        manifest: PathBuf,
    },
    /// What the state table holds: backups, chunk progress and change-stream positions.
    Status {
        /// The manifest (TOML).
        #[arg(short, long, value_name = "FILE")]
        manifest: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Complete backups present at the destination.
    List {
        /// The manifest (TOML).
        #[arg(short, long, value_name = "FILE")]
        manifest: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_logging(cli: &Cli) {
    let level = match i16::from(cli.verbose) - i16::from(cli.quiet) {
        i16::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("STORAGETAPPER_LOG")
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{level},mysql_async=warn,opendal=error"))
        });
    // reqsign's debug lines print S3 credentials: never below warn, whatever the level asked.
    for quiet in [
        "reqsign_core=warn",
        "reqsign_aws_core=warn",
        "reqsign_aws_v4=warn",
    ] {
        if let Ok(d) = quiet.parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter)
        .with_target(false);
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let mode = progress::Mode::detect(cli.no_progress);
    match cli.command {
        Command::Backup {
            manifest,
            threads,
            fresh,
            follow,
            until,
            max_events,
            duration,
        } => {
            let plan = Plan::load(&manifest)?;
            let cancel = CancellationToken::new();
            spawn_signal_handler(cancel.clone());
            let opts = BackupOptions {
                threads,
                fresh,
                progress: mode,
            };
            // The change stream `--follow` continues: Kafka's `tail` stream (the snapshot
            // moved it to its position), or the backup's own changelog.
            let (target, start) = if matches!(
                plan.destination,
                crate::manifest::DestinationUrl::Kafka(_)
            ) {
                let out = crate::kafka_backup::run(&plan, &opts, cancel.clone()).await?;
                let rate = out.rows_this_run as f64 / out.seconds.max(0.001);
                tracing::info!(
                    backup = %out.id,
                    rows = out.rows,
                    rows_this_run = out.rows_this_run,
                    skipped = out.skipped,
                    seconds = format!("{:.2}", out.seconds),
                    rows_per_sec = rate as u64,
                    "Snapshot sent."
                );
                println!(
                    "backup {} complete: {} rows as op \"r\" events in {:.2}s ({:.0} rows/s{}) -> {}; \
                     the change stream continues from {} (seqno {})",
                    out.id,
                    out.rows,
                    out.seconds,
                    rate,
                    if out.resumed { ", resumed" } else { "" },
                    out.location,
                    out.position,
                    out.next_seqno
                );
                (crate::tail::StreamTarget::tail(&plan.manifest.name), None)
            } else {
                let out = snapshot::run(&plan, &opts, cancel.clone()).await?;
                let rate = out.rows_this_run as f64 / out.seconds.max(0.001);
                tracing::info!(
                    backup = %out.id,
                    rows = out.rows,
                    rows_this_run = out.rows_this_run,
                    bytes = out.bytes,
                    seconds = format!("{:.2}", out.seconds),
                    rows_per_sec = rate as u64,
                    lock_held_ms = out.lock_held_ms,
                    consistent = out.consistent,
                    "Backup complete."
                );
                println!(
                    "backup {} complete: {} rows, {} bytes in {:.2}s ({:.0} rows/s{}), lock held {} ms, {} -> {}",
                    out.id,
                    out.rows,
                    out.bytes,
                    out.seconds,
                    rate,
                    if out.resumed { ", resumed" } else { "" },
                    out.lock_held_ms,
                    if out.consistent {
                        "consistent at one point"
                    } else {
                        "needs the changelog between its points (see metadata.json)"
                    },
                    out.location
                );
                let start = if follow {
                    Some(out.follow_from.clone().ok_or_else(|| {
                        anyhow::anyhow!(
                            "--follow: the backup has no binlog position (is log_bin on at the source?)"
                        )
                    })?)
                } else {
                    None
                };
                (
                    crate::tail::StreamTarget::follow(&plan.manifest.name, &out.id),
                    start,
                )
            };
            if follow {
                let opts = crate::tail::TailOptions {
                    from: None,
                    until,
                    max_events,
                    duration,
                    progress: mode != progress::Mode::Hidden,
                };
                let t = crate::tail::follow(&plan, &target, start, &opts, cancel).await?;
                print_tail(&t);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail {
            manifest,
            from,
            until,
            max_events,
            duration,
        } => {
            let plan = Plan::load(&manifest)?;
            let cancel = CancellationToken::new();
            spawn_signal_handler(cancel.clone());
            let opts = crate::tail::TailOptions {
                from: Some(from),
                until,
                max_events,
                duration,
                progress: mode != progress::Mode::Hidden,
            };
            let out = crate::tail::run(&plan, &opts, cancel).await?;
            print_tail(&out);
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore {
            manifest,
            backup,
            target,
            table,
            threads,
            replace,
            no_binlog,
            identity,
            until,
        } => {
            let plan = Plan::load(&manifest)?;
            let identities = Identities::load(&identity)?;
            let cancel = CancellationToken::new();
            spawn_signal_handler(cancel.clone());
            let opts = RestoreOptions {
                backup,
                target,
                table,
                threads,
                replace,
                no_binlog,
                progress: mode,
                identities,
                until,
            };
            let out = restore::run(&plan, &opts, cancel).await?;
            let rate = out.rows_this_run as f64 / out.seconds.max(0.001);
            println!(
                "restore of backup {} complete: {} table(s), {} rows loaded in {:.2}s ({:.0} rows/s{})",
                out.backup_id,
                out.tables,
                out.rows_this_run,
                out.seconds,
                rate,
                if out.resumed { ", resumed" } else { "" }
            );
            if let Some(r) = &out.replay {
                println!(
                    "changelog applied: {} events in {} transactions, tables now at {}",
                    r.events, r.transactions, r.reached
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            manifest,
            backup,
            identity,
            against_source,
            json,
        } => {
            let plan = Plan::load(&manifest)?;
            let identities = Identities::load(&identity)?;
            let opts = VerifyOptions {
                backup,
                identities,
                against_source,
            };
            let report = verify::run(&plan, &opts).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for b in &report.bad {
                    println!("BAD {}: {}", b.file, b.problem);
                }
                if let Some(n) = report.source_chunks {
                    for f in &report.changed_chunks {
                        println!("CHANGED {f}");
                    }
                    println!(
                        "source: {} of {n} chunks changed since the backup (expected on a live \
                         source: rows written after the snapshot point; not corruption)",
                        report.changed_chunks.len()
                    );
                }
                println!(
                    "verify {}: {} files, {} rows, {} bytes checked; {}",
                    report.backup_id,
                    report.files,
                    report.rows,
                    report.bytes,
                    if report.bad.is_empty() {
                        "all good".to_string()
                    } else {
                        format!("{} bad", report.bad.len())
                    }
                );
            }
            Ok(if report.bad.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Keygen { output } => {
            let (text, recipient) = crypto::generate_identity();
            match output {
                Some(path) => {
                    write_key_file(&path, &text)?;
                    eprintln!(
                        "Identity written to {} (keep it secret). Public key:",
                        path.display()
                    );
                    println!("{recipient}");
                }
                None => {
                    eprintln!("Public key: {recipient}");
                    print!("{text}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { manifest } => {
            let plan = Plan::load(&manifest)?;
            print_plan(&plan).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { manifest, json } => {
            let plan = Plan::load(&manifest)?;
            status(&plan, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::List { manifest, json } => {
            let plan = Plan::load(&manifest)?;
            list(&plan, json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            write_completions(shell, &mut out);
            std::io::stdout().write_all(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            std::io::stdout().write_all(&man_page()?)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn write_key_file(path: &std::path::Path, text: &str) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| {
        format!(
            "cannot create {} (an existing key file is never overwritten)",
            path.display()
        )
    })?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::warn!("Stopping: discarding work in flight; the run stays resumable.");
        cancel.cancel();
    });
}

fn print_tail(out: &crate::tail::TailOutcome) {
    let why = match out.stop {
        crate::tail::Stop::Signal => "stopped by signal",
        crate::tail::Stop::Until => "reached --until",
        crate::tail::Stop::MaxEvents => "reached --max-events",
        crate::tail::Stop::Duration => "reached --duration",
    };
    tracing::info!(
        events = out.events,
        transactions = out.transactions,
        files = out.files,
        position = %out.position,
        seconds = format!("{:.2}", out.seconds),
        "Tail stopped."
    );
    println!(
        "tail {why}: {} events in {} transactions, {} files in {:.2}s ({:.0} events/s), saved at {} -> {}",
        out.events,
        out.transactions,
        out.files,
        out.seconds,
        out.events as f64 / out.seconds.max(0.001),
        out.position,
        out.dir
    );
}

fn duration_parser(s: &str) -> Result<std::time::Duration, String> {
    crate::manifest::parse_duration(s)
}

/// Writes the completion script for `shell`.
pub fn write_completions(shell: clap_complete::Shell, out: &mut Vec<u8>) {
    clap_complete::generate(shell, &mut Cli::command(), "storagetapper", out);
}

/// The man page, roff.
///
/// # Errors
/// When rendering fails.
pub fn man_page() -> Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .context("cannot render the man page")?;
    Ok(out)
}

async fn print_plan(plan: &Plan) -> Result<()> {
    let m = &plan.manifest;
    let src = Source::new(&plan.source_url, plan.password.as_ref())?;
    let mut conn = src.connect().await?;
    let info = source::server_info(&mut conn).await?;
    let mut out = String::new();
    out.push_str(&format!("manifest   {}\n", plan.file.display()));
    out.push_str(&format!("job        {}\n", m.name));
    out.push_str(&format!("source     {} ({})\n", src.display, info.version));
    out.push_str(&format!(
        "destination {} format={} compression={:?}\n",
        plan.destination,
        m.destination.format.ext(),
        m.destination.compression
    ));
    out.push_str(&format!("state      {:?}\n", plan.state));
    out.push_str(&format!(
        "encryption {}\n",
        if plan.recipients.is_empty() {
            "none".to_string()
        } else {
            format!("age, to {}", plan.recipients.strings().join(", "))
        }
    ));
    out.push_str(&format!(
        "threads    {}   chunk_rows {}   throttle rows/s={} bytes/s={}\n\nsource checks:\n",
        m.snapshot.threads,
        m.snapshot.chunk_rows,
        m.snapshot.throttle.rows_per_sec,
        m.snapshot.throttle.bytes_per_sec.0
    ));
    for c in source::checks(&mut conn, &info).await {
        out.push_str(&format!(
            "  [{}] {:<46} {}\n",
            if c.ok { " ok " } else { "WARN" },
            c.name,
            c.detail
        ));
    }
    let specs = snapshot::resolve_tables(plan, &mut conn).await?;
    let (mut rows, mut bytes) = (0u64, 0u64);
    out.push_str(&format!("\ntables ({}):\n", specs.len()));
    for (rule_index, s) in &specs {
        let rule = &plan.rules[*rule_index];
        let chunk_rows = plan.chunk_rows(rule);
        rows += s.est_rows;
        bytes += s.est_bytes;
        out.push_str(&format!(
            "\n  {}  (~{} rows, ~{} bytes; manifest tables[{}])\n",
            s.name(),
            s.est_rows,
            s.est_bytes,
            rule_index
        ));
        out.push_str(&format!("    columns: {}\n", s.columns.join(", ")));
        match &s.key {
            Some(k) => out.push_str(&format!(
                "    chunk key: ({}) on index {}{}; ~{} chunk(s) of {} rows\n",
                k.columns.join(", "),
                k.index,
                if k.unique { "" } else { " (not unique)" },
                s.est_rows / chunk_rows + 1,
                chunk_rows
            )),
            None => out.push_str(
                "    chunk key: none (no primary or NOT NULL unique key): read as ONE chunk\n",
            ),
        }
        let read = s.read();
        if let Some(k) = &s.key {
            let dummy = vec![mysql_async::Value::NULL; k.columns.len()];
            let first = read.chunk_query(None, Some(&dummy));
            out.push_str(&format!("    first chunk: {}\n", first.sql));
            let mid = read.chunk_query(Some(&dummy), Some(&dummy));
            out.push_str(&format!("    next chunks: {}\n", mid.sql));
            if let Some(b) = read.boundary_query(Some(&dummy), chunk_rows) {
                out.push_str(&format!("    boundaries:  {}\n", b.sql));
            }
        } else {
            out.push_str(&format!(
                "    one chunk:   {}\n",
                read.chunk_query(None, None).sql
            ));
        }
    }
    out.push_str(&format!(
        "\nestimated total: ~{rows} rows, ~{bytes} bytes (from information_schema; \
         key bounds are bound as parameters `?`)\n"
    ));
    print!("{out}");
    Ok(())
}

fn status(plan: &Plan, json: bool) -> Result<()> {
    let Some(state) = SqliteState::open_read_only(&plan.state)? else {
        if json {
            println!(
                "{}",
                serde_json::json!({"name": plan.manifest.name, "state": null, "backups": []})
            );
        } else {
            println!(
                "job {}: no state file yet (no backup has run)",
                plan.manifest.name
            );
        }
        return Ok(());
    };
    let mut items = Vec::new();
    for b in state.backups(&plan.manifest.name)? {
        let chunks = state.chunks(&b.id)?;
        let done: Vec<_> = chunks
            .iter()
            .filter(|c| c.status == ChunkStatus::Done)
            .collect();
        let rows: u64 = done
            .iter()
            .filter_map(|c| c.done.as_ref().map(|d| d.rows))
            .sum();
        let bytes: u64 = done
            .iter()
            .filter_map(|c| c.done.as_ref().map(|d| d.bytes))
            .sum();
        let mut tables: Vec<serde_json::Value> = Vec::new();
        for t in state.tables(&b.id)? {
            let tc: Vec<_> = chunks.iter().filter(|c| c.table == t.table).collect();
            let td = tc.iter().filter(|c| c.status == ChunkStatus::Done).count();
            tables.push(serde_json::json!({
                "table": t.table, "chunks": tc.len(), "chunks_done": td,
                "rows": tc.iter().filter_map(|c| c.done.as_ref().map(|d| d.rows)).sum::<u64>(),
            }));
        }
        items.push(serde_json::json!({
            "id": b.id, "status": b.status, "started_at": b.started_at,
            "finished_at": b.finished_at, "chunks": chunks.len(), "chunks_done": done.len(),
            "rows": rows, "bytes": bytes, "position": b.position, "tables": tables,
        }));
    }
    let streams: Vec<serde_json::Value> = state
        .streams()?
        .into_iter()
        .map(|(name, p, updated)| {
            serde_json::json!({
                "stream": name, "position": {"type": p.kind, "file": p.file, "pos": p.pos,
                "gtid": p.gtid}, "next_seqno": p.next_seqno, "files": p.next_file,
                "updated_at": updated,
            })
        })
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "name": plan.manifest.name,
                "state": state.path(),
                "backups": items,
                "streams": streams,
            }))?
        );
        return Ok(());
    }
    println!(
        "job {} (state {})",
        plan.manifest.name,
        state.path().display()
    );
    if items.is_empty() {
        println!("no backups yet");
    }
    for b in &items {
        println!(
            "{}  {:<9} chunks {}/{}  rows {}  bytes {}",
            b["id"].as_str().unwrap_or(""),
            b["status"].as_str().unwrap_or(""),
            b["chunks_done"],
            b["chunks"],
            b["rows"],
            b["bytes"]
        );
        if b["status"] == "running" {
            for t in b["tables"].as_array().into_iter().flatten() {
                println!(
                    "    {:<40} chunks {}/{}  rows {}",
                    t["table"].as_str().unwrap_or(""),
                    t["chunks_done"],
                    t["chunks"],
                    t["rows"]
                );
            }
        }
    }
    for st in &streams {
        println!(
            "stream {}  at {}:{}{}  events {}  files {}  saved {}",
            st["stream"].as_str().unwrap_or(""),
            st["position"]["file"].as_str().unwrap_or(""),
            st["position"]["pos"],
            st["position"]["gtid"]
                .as_str()
                .map(|g| format!(" gtid {g}"))
                .unwrap_or_default(),
            st["next_seqno"].as_u64().unwrap_or(1).saturating_sub(1),
            st["files"],
            st["updated_at"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

async fn list(plan: &Plan, json: bool) -> Result<()> {
    let sink = Sink::connect(&plan.destination).await?;
    let name = &plan.manifest.name;
    let mut found: Vec<Metadata> = Vec::new();
    let mut dirs = sink.list(name).await?;
    dirs.sort();
    for d in dirs.iter().filter(|d| d.ends_with('/')) {
        let meta_path = format!("{d}metadata.json");
        if !sink.exists(&meta_path).await? {
            continue;
        }
        let raw = sink.get(&meta_path).await?;
        let meta: Metadata = serde_json::from_slice(&raw)
            .with_context(|| format!("{meta_path} is not valid metadata"))?;
        found.push(meta);
    }
    if json {
        let items: Vec<serde_json::Value> = found
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.backup_id,
                    "path": format!("{}/{}", sink.display, layout::backup_dir(name, &m.backup_id)),
                    "started_at": m.started_at,
                    "finished_at": m.finished_at,
                    "tables": m.tables.len(),
                    "rows": m.tables.iter().map(|t| t.rows).sum::<u64>(),
                    "bytes": m.tables.iter().map(|t| t.bytes).sum::<u64>(),
                    "consistent": m.snapshot.consistent,
                    "position": m.snapshot.position,
                    "format": m.format,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    if found.is_empty() {
        println!("no complete backups of `{name}` at {}", sink.display);
    }
    for m in &found {
        println!(
            "{}  tables {}  rows {}  bytes {}  {}",
            m.backup_id,
            m.tables.len(),
            m.tables.iter().map(|t| t.rows).sum::<u64>(),
            m.tables.iter().map(|t| t.bytes).sum::<u64>(),
            match (&m.snapshot.consistent, &m.snapshot.position) {
                (true, Some(p)) => format!(
                    "consistent at {}:{}{}",
                    p.file,
                    p.pos,
                    p.gtid
                        .as_ref()
                        .map(|g| format!(" gtid {g}"))
                        .unwrap_or_default()
                ),
                (true, None) => "consistent (no binlog position)".to_string(),
                (false, _) => "needs changelog (resumed across points)".to_string(),
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }
}
