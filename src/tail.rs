//! The change stream driver (`tail`, and the follow phase of `backup --follow`): reads whole
//! transactions from [`crate::binlog`], writes change events to numbered changelog files and
//! saves the stream position in the state table.
//!
//! Invariants (exactly once across kills): a changelog file holds whole transactions only; it is
//! written under a temporary name and renamed when complete; the position (with the next seqno
//! and file number) is saved only after that rename, and only at a transaction boundary. A
//! restart resumes from the saved position, deletes temporary files and any file numbered at
//! or after the saved next file (written but not recorded), and so rewrites exactly what was
//! not recorded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tokio_util::sync::CancellationToken;

use crate::binlog::{self, BinlogReader, Change, Item, StartAt, TableFilter};
use crate::changelog::{self, ChangeFile, EventEncoder, EventSource, Op, StreamTable};
use crate::kafka::KafkaWriter;
use crate::manifest::{Compression, DestinationUrl, Envelope, Format, Plan, TableRule};
use crate::sink::Sink;
use crate::source::{self, BinlogPos, Source};
use crate::state::{SqliteState, StateStore, StreamPosition};

/// Kafka: how often the position is saved (each save waits for the broker's acknowledgements).
const KAFKA_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// The sink of a file-writing stream.
fn sink_of(sink: &Option<Sink>) -> Result<&Sink> {
    sink.as_ref()
        .ok_or_else(|| anyhow!("this stream writes to Kafka, not to files"))
}

/// How a run of the stream is bounded.
#[derive(Debug, Clone, Default)]
pub struct TailOptions {
    /// `now`, `saved`, a GTID state or `file:pos`; default `saved` (falling back to `now`).
    pub from: Option<String>,
    /// Stop at the first transaction boundary at or after this position.
    pub until: Option<String>,
    /// Stop at the first transaction boundary after this many events.
    pub max_events: Option<u64>,
    /// Stop at the first transaction boundary after this long.
    pub duration: Option<Duration>,
    /// A progress log line every 5 seconds (`--no-progress` turns it off).
    pub progress: bool,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM / Ctrl-C.
    Signal,
    /// `--until` reached.
    Until,
    /// `--max-events` reached.
    MaxEvents,
    /// `--duration` elapsed.
    Duration,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TailOutcome {
    /// Change events written.
    pub events: u64,
    /// Transactions seen (including ones without events for the manifest's tables).
    pub transactions: u64,
    /// Changelog files completed.
    pub files: u64,
    /// Where the stream stopped (saved).
    pub position: BinlogPos,
    /// Wall time.
    pub seconds: f64,
    /// Why it stopped.
    pub stop: Stop,
    /// The destination directory of the files.
    pub dir: String,
}

/// A change stream: its state key and where its files go.
#[derive(Debug, Clone)]
pub struct StreamTarget {
    /// Key in the state table's `positions`.
    pub stream: String,
    /// Directory (relative to the destination) of the changelog files.
    pub dir: String,
}

impl StreamTarget {
    /// The stream of `backup --follow`: `<name>/<backup-id>/changelog/`.
    pub fn follow(name: &str, backup_id: &str) -> StreamTarget {
        StreamTarget {
            stream: format!("follow/{backup_id}"),
            dir: format!("{}/changelog", crate::layout::backup_dir(name, backup_id)),
        }
    }

    /// The realtime stream of `tail`: `<name>/changelog/`.
    pub fn tail(name: &str) -> StreamTarget {
        StreamTarget {
            stream: "tail".into(),
            dir: format!("{name}/changelog"),
        }
    }
}

/// The server id a stream registers with: the manifest's, or one derived from the job and
/// stream names (stable across runs, unlikely to collide with real servers).
pub fn server_id(plan: &Plan, target: &StreamTarget) -> u32 {
    plan.manifest.source.server_id.unwrap_or_else(|| {
        let h = crc32fast::hash(format!("{}/{}", plan.manifest.name, target.stream).as_bytes());
        1_000_000_000 + h % 1_000_000_000
    })
}

/// The source the binlog is read from (`binlog_url`, else `url`).
///
/// # Errors
/// When the URL is invalid.
pub fn binlog_source(plan: &Plan) -> Result<Source> {
    let url = plan
        .manifest
        .source
        .binlog_url
        .as_deref()
        .unwrap_or(&plan.source_url);
    Source::new(url, plan.password.as_ref())
}

fn table_filter(rules: &[TableRule]) -> TableFilter {
    let rules = rules.to_vec();
    Arc::new(move |schema: &str, table: &str| {
        let system = source::SYSTEM_SCHEMAS
            .iter()
            .any(|s| s.eq_ignore_ascii_case(schema));
        rules
            .iter()
            .any(|r| (!system || r.schema_is_literal()) && r.matches(schema, table))
    })
}

fn rule_for<'a>(rules: &'a [TableRule], schema: &str, table: &str) -> Option<&'a TableRule> {
    rules.iter().find(|r| r.matches(schema, table))
}

/// Runs `tail`.
///
/// # Errors
/// On any failure; what was saved stays valid.
pub async fn run(
    plan: &Plan,
    opts: &TailOptions,
    cancel: CancellationToken,
) -> Result<TailOutcome> {
    let target = StreamTarget::tail(&plan.manifest.name);
    follow(plan, &target, None, opts, cancel).await
}

/// Streams changes into `target` from its saved position, else `start`, else `opts.from`.
///
/// # Errors
/// On any failure; what was saved stays valid.
pub async fn follow(
    plan: &Plan,
    target: &StreamTarget,
    start: Option<BinlogPos>,
    opts: &TailOptions,
    cancel: CancellationToken,
) -> Result<TailOutcome> {
    let m = &plan.manifest;
    let started = Instant::now();
    let mut encoder = EventEncoder::new(m.destination.format, m.tail.envelope)?;
    let mut until = opts
        .until
        .as_deref()
        .map(StartAt::parse)
        .transpose()
        .map_err(|e| anyhow!("--until {e}"))?;
    let state = SqliteState::from_url(&plan.state)?;
    let saved = state.stream_position(&target.stream)?;
    let source = binlog_source(plan)?;
    let server_id = server_id(plan, target);
    let mut conn = source.connect().await?;
    let settings = binlog::preflight(&mut conn, server_id).await?;
    if matches!(until, Some(StartAt::MysqlGtid(_))) {
        bail!("--until takes a MySQL server's position as <file>:<pos>, not a GTID set");
    }
    if until == Some(StartAt::Now) {
        let p = binlog::current_position(&mut conn, settings.mariadb).await?;
        until = Some(StartAt::FilePos(p.file, p.pos));
    }
    let from_text = opts.from.as_deref().unwrap_or("saved");
    let from = match (from_text, &saved, &start) {
        ("saved", Some(s), _) => BinlogPos {
            file: s.file.clone(),
            pos: s.pos,
            gtid: s.gtid.clone(),
        },
        ("saved", None, Some(p)) => p.clone(),
        ("saved" | "now", _, _) => binlog::current_position(&mut conn, settings.mariadb).await?,
        (other, _, _) => match StartAt::parse(other).map_err(|e| anyhow!("--from {e}"))? {
            StartAt::Now => binlog::current_position(&mut conn, settings.mariadb).await?,
            StartAt::Gtid(g) | StartAt::MysqlGtid(g) => BinlogPos {
                file: String::new(),
                pos: 4,
                gtid: Some(g),
            },
            StartAt::FilePos(file, pos) => {
                let gtid: Option<String> = if settings.mariadb {
                    mysql_async::prelude::Queryable::exec_first::<Option<String>, _, _>(
                        &mut conn,
                        "SELECT BINLOG_GTID_POS(?, ?)",
                        (file.as_str(), pos),
                    )
                    .await
                    .ok()
                    .flatten()
                    .flatten()
                } else {
                    None
                };
                BinlogPos {
                    file,
                    pos,
                    gtid: gtid.filter(|g| !g.is_empty()),
                }
            }
        },
    };
    let mut next_seqno = saved.as_ref().map_or(1, |s| s.next_seqno);
    let mut next_file = saved.as_ref().map_or(0, |s| s.next_file);
    let mut kafka = match &plan.destination {
        DestinationUrl::Kafka(k) => Some(KafkaWriter::connect(
            k,
            &format!("{}/{}", m.name, target.stream),
            m.destination.compression,
        )?),
        _ => None,
    };
    let sink = match kafka {
        Some(_) => None,
        None => Some(Sink::connect(&plan.destination).await?),
    };
    if let Some(sink) = &sink {
        // Files of a killed run: unfinished uploads, temporaries, and whole files written
        // after the last save.
        let aborted = sink.abort_uploads(&target.dir).await?;
        let removed = sink.remove_temporaries(&target.dir).await? + aborted;
        for p in sink.list(&target.dir).await? {
            if changelog::file_number(&p).is_some_and(|n| n >= next_file) {
                sink.remove(&p).await?;
            }
        }
        if removed > 0 {
            tracing::info!(removed, dir = %target.dir, "Deleted files of an interrupted run.");
        }
    }
    tracing::info!(
        stream = %target.stream,
        from = %from,
        server_id,
        seqno = next_seqno,
        "Streaming changes."
    );
    let mut reader = BinlogReader::open(&source, server_id, &from, table_filter(&plan.rules))
        .await
        .with_context(|| format!("stream {}", target.stream))?;

    let level = match m.destination.compression {
        Compression::Zstd => Some(m.destination.compression_level.unwrap_or(3)),
        Compression::None => None,
    };
    // Parquet compresses inside the file, like chunk files.
    let (zstd, inner_zstd) = match m.destination.format {
        Format::Parquet => (None, level),
        _ => (level, None),
    };
    let new_file = sink.as_ref().map(|sink| NewFile {
        sink,
        dir: &target.dir,
        plan,
        zstd,
        inner_zstd,
    });
    // Kafka: the position is saved (after a flush) about this often.
    let mut last_flush = Instant::now();
    let rotate_bytes = m.tail.rotate_bytes.0.max(1);
    let rotate_interval = m.tail.rotate_interval.0;
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);

    let mut tables: HashMap<(String, String), StreamTable> = HashMap::new();
    let mut file: Option<(ChangeFile, Instant)> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut in_trx = false;
    let mut trx_events = 0u64;
    let mut gtid = String::new();
    let mut events = 0u64;
    let mut transactions = 0u64;
    let mut files = 0u64;
    let mut last_report = Instant::now();
    let mut reported_events = 0u64;
    // What the last save covered: where a restart (or an Avro/Parquet start-over) resumes.
    let mut saved = Saved {
        pos: reader.position(),
        seqno: next_seqno,
        events: 0,
    };
    let filter = table_filter(&plan.rules);
    // Avro files: the table versions a new file's schema holds.
    let mut avro_known: Vec<changelog::AvroVersion> = Vec::new();
    // Kafka with Avro values: per table version (and "" for schema changes), its encoder.
    let mut avro_messages: HashMap<String, changelog::AvroSingle> = HashMap::new();
    let stop: Stop;

    // Completes the open changelog file at a transaction boundary and saves the position
    // after it: what a restart (or an Avro/Parquet start-over) resumes from.
    macro_rules! finish {
        ($pos:expr) => {{
            let pos: BinlogPos = $pos;
            finish_file(
                sink_of(&sink)?,
                &mut encoder,
                &mut file,
                &mut buf,
                &state,
                target,
                &pos,
                next_seqno,
                &mut next_file,
            )
            .await?;
            files += 1;
            Saved {
                pos,
                seqno: next_seqno,
                events,
            }
        }};
    }

    if let Some(u) = &until
        && u.reached_by(&saved.pos, reader.gtid_state())
    {
        stop = Stop::Until;
    } else {
        stop = loop {
            let item = if in_trx {
                reader.next().await?
            } else {
                let sleep = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => futures::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break Stop::Signal,
                    () = sleep => break Stop::Duration,
                    r = reader.next() => r?,
                }
            };
            let Some(item) = item else {
                bail!(
                    "the source closed the binlog stream at {}",
                    reader.position()
                );
            };
            match item {
                Item::Begin { gtid: g } => {
                    in_trx = true;
                    gtid = g;
                    trx_events = 0;
                }
                Item::Rows {
                    table,
                    changes,
                    ts,
                    pos,
                } => {
                    let changes = match rule_for(&plan.rules, &table.schema, &table.table)
                        .and_then(|r| r.config.where_.as_deref())
                    {
                        Some(cond) => apply_where(&mut conn, &source, cond, &table, changes)
                            .await
                            .with_context(|| format!("`where` of {} on a change", table.name()))?,
                        None => changes,
                    };
                    if changes.is_empty() {
                        continue;
                    }
                    let key = (table.schema.clone(), table.table.clone());
                    let stale = tables
                        .get(&key)
                        .is_none_or(|t| !Arc::ptr_eq(&t.map, &table));
                    if stale {
                        let rule = rule_for(&plan.rules, &table.schema, &table.table)
                            .ok_or_else(|| anyhow!("no rule for {}", table.name()))?;
                        let t = StreamTable::new(
                            Arc::clone(&table),
                            &rule.config,
                            m.destination.format,
                            m.tail.envelope,
                        )?;
                        tables.insert(key.clone(), t);
                    }
                    let t = tables
                        .get_mut(&key)
                        .ok_or_else(|| anyhow!("table {} vanished", table.name()))?;
                    if !avro_known.iter().any(|v| v.sig == t.version.sig) {
                        avro_known.push(t.version.clone());
                        if file.is_some()
                            && matches!(m.destination.format, Format::Avro | Format::Parquet)
                        {
                            // The open file's schema lacks this table version: discard the
                            // file and read again from the saved position with it included.
                            if let Some((f, _)) = file.take() {
                                f.abort().await;
                            }
                            buf.clear();
                            drop(reader);
                            reader = BinlogReader::reopen(
                                &source,
                                server_id,
                                &saved.pos,
                                filter.clone(),
                            )
                            .await?;
                            next_seqno = saved.seqno;
                            events = saved.events;
                            in_trx = false;
                            trx_events = 0;
                            tracing::info!(
                                table = %table.name(),
                                from = %saved.pos,
                                "A table version new to this Avro file: reading again with it in the file's schema."
                            );
                            continue;
                        }
                    }
                    let pos_file = reader.position().file;
                    let mut src = EventSource {
                        name: &m.name,
                        server_id: gtid_server(&gtid),
                        gtid: &gtid,
                        file: &pos_file,
                        pos,
                        ts_ms: u64::from(ts) * 1000,
                        snapshot: false,
                        row: 0,
                    };
                    if let Some(nf) = &new_file
                        && file.is_none()
                    {
                        let (f, e) = open_file(nf, next_file, &avro_known, &mut buf).await?;
                        file = Some((f, Instant::now()));
                        encoder = e;
                    }
                    let topic = kafka
                        .as_ref()
                        .map(|k| k.table_topic(&m.name, &table.schema, &table.table));
                    for (n, c) in changes.into_iter().enumerate() {
                        src.row = n as u64;
                        let (op, before, after) = match c {
                            Change::Insert(a) => (Op::Create, None, Some(a)),
                            Change::Update(b, a) => (Op::Update, Some(b), Some(a)),
                            Change::Delete(b) => (Op::Delete, Some(b), None),
                        };
                        if let (Some(k), Some(topic)) = (kafka.as_mut(), topic.as_deref()) {
                            let image = after.as_deref().or(before.as_deref()).unwrap_or_default();
                            let key = if m.destination.format == Format::Avro {
                                let a = avro_single(
                                    &mut avro_messages,
                                    k,
                                    &m.name,
                                    m.tail.envelope,
                                    Some(&t.version),
                                )
                                .await?;
                                let mut key = Vec::with_capacity(32);
                                a.key(&mut key, t, image)?;
                                a.row_event(&mut buf, t, op, next_seqno, &src, before, after)?;
                                key
                            } else {
                                let key = t.key_bytes(image)?;
                                buf.clear();
                                encoder
                                    .row_event(&mut buf, t, op, next_seqno, &src, before, after)?;
                                if buf.last() == Some(&b'\n') {
                                    buf.pop();
                                }
                                key
                            };
                            k.send(topic, &key, &buf, next_seqno, &gtid, None).await?;
                            buf.clear();
                        } else {
                            encoder.row_event(&mut buf, t, op, next_seqno, &src, before, after)?;
                        }
                        next_seqno += 1;
                        events += 1;
                        trx_events += 1;
                    }
                }
                Item::Ddl {
                    schema,
                    statement,
                    ts,
                } => {
                    let relevant = plan.rules.iter().any(|r| r.matches_schema(&schema));
                    if relevant {
                        reader.forget_schema(&schema);
                        tables.retain(|(s, _), _| *s != schema);
                        if let Some(nf) = &new_file
                            && file.is_none()
                        {
                            let (f, e) = open_file(nf, next_file, &avro_known, &mut buf).await?;
                            file = Some((f, Instant::now()));
                            encoder = e;
                        }
                        let p = reader.position();
                        let src = EventSource {
                            name: &m.name,
                            server_id: gtid_server(&gtid),
                            gtid: &gtid,
                            file: &p.file,
                            pos: p.pos,
                            ts_ms: u64::from(ts) * 1000,
                            snapshot: false,
                            row: 0,
                        };
                        if let Some(k) = kafka.as_mut() {
                            buf.clear();
                            if m.destination.format == Format::Avro {
                                avro_single(&mut avro_messages, k, &m.name, m.tail.envelope, None)
                                    .await?
                                    .ddl_event(&mut buf, next_seqno, &src, &schema, &statement)?;
                            } else {
                                encoder
                                    .ddl_event(&mut buf, next_seqno, &src, &schema, &statement)?;
                                if buf.last() == Some(&b'\n') {
                                    buf.pop();
                                }
                            }
                            let topic = k.ddl_topic(&m.name, &schema);
                            k.send(&topic, schema.as_bytes(), &buf, next_seqno, &gtid, None)
                                .await?;
                            buf.clear();
                        } else {
                            encoder.ddl_event(&mut buf, next_seqno, &src, &schema, &statement)?;
                        }
                        next_seqno += 1;
                        events += 1;
                        trx_events += 1;
                    }
                }
                Item::Commit { .. } => {
                    in_trx = false;
                    transactions += 1;
                    if trx_events > 0 {
                        encoder.commit(&mut buf)?;
                    }
                    let pos = reader.position();
                    let boundary_stop = if cancel.is_cancelled() {
                        Some(Stop::Signal)
                    } else if opts.max_events.is_some_and(|n| events >= n) {
                        Some(Stop::MaxEvents)
                    } else if until
                        .as_ref()
                        .is_some_and(|u| u.reached_by(&pos, reader.gtid_state()))
                    {
                        Some(Stop::Until)
                    } else if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        Some(Stop::Duration)
                    } else {
                        None
                    };
                    if let Some(s) = boundary_stop {
                        break s;
                    }
                    let rotate = file.as_ref().is_some_and(|(f, t)| {
                        f.plain_bytes + buf.len() as u64 >= rotate_bytes
                            || t.elapsed() >= rotate_interval
                    });
                    if let Some(k) = kafka.as_mut() {
                        if pos != saved.pos && last_flush.elapsed() >= KAFKA_SAVE_INTERVAL {
                            saved =
                                flush_and_save(k, &state, target, pos, next_seqno, events).await?;
                            last_flush = Instant::now();
                        }
                    } else if rotate {
                        saved = finish!(pos);
                    } else if file.is_none() && pos != saved.pos {
                        // Nothing of ours in these transactions: remember we read past them.
                        save(&state, target, &pos, next_seqno, next_file)?;
                        saved = Saved {
                            pos,
                            seqno: next_seqno,
                            events,
                        };
                    }
                }
                Item::Heartbeat => {
                    if let Some(k) = kafka.as_mut() {
                        let pos = reader.position();
                        if !in_trx && pos != saved.pos {
                            saved =
                                flush_and_save(k, &state, target, pos, next_seqno, events).await?;
                            last_flush = Instant::now();
                        }
                    }
                    let idle_rotate = !in_trx
                        && file
                            .as_ref()
                            .is_some_and(|(_, t)| t.elapsed() >= rotate_interval);
                    if idle_rotate {
                        saved = finish!(reader.position());
                    }
                }
            }
            if buf.len() >= 1 << 20
                && let Some((f, _)) = file.as_mut()
            {
                f.write(std::mem::replace(&mut buf, Vec::with_capacity(1 << 20)))
                    .await?;
            }
            if opts.progress && last_report.elapsed() >= Duration::from_secs(5) {
                let secs = last_report.elapsed().as_secs_f64();
                let behind = lag_bytes(&mut conn, &reader.position()).await;
                // Caught up: no lag, whatever the age of the last event.
                let lag = if behind == 0 {
                    0
                } else {
                    (changelog::now_ms() / 1000).saturating_sub(u64::from(reader.last_ts))
                };
                tracing::info!(
                    events,
                    events_per_sec = ((events - reported_events) as f64 / secs) as u64,
                    lag_seconds = lag,
                    lag_bytes = behind,
                    at = %reader.position(),
                    "Streaming."
                );
                last_report = Instant::now();
                reported_events = events;
            }
        };
    }
    // Stopped at a transaction boundary: make what was written durable and save.
    let pos = reader.position();
    if let Some(k) = kafka.as_mut() {
        k.flush().await?;
        if pos != saved.pos {
            save(&state, target, &pos, next_seqno, next_file)?;
        }
        if k.skipped > 0 {
            tracing::info!(
                skipped = k.skipped,
                "Events an interrupted run had delivered were not sent again."
            );
        }
    } else if file.is_some() {
        let _ = finish!(pos.clone());
    } else {
        // Transactions of other tables since the last file also count as covered (the
        // state was saved as they passed; the coverage file only here, once).
        let p = stream_position(&pos, next_seqno, next_file);
        write_covered(sink_of(&sink)?, target, &p).await?;
        if pos != saved.pos {
            state.save_stream_position(&target.stream, &p)?;
        }
    }
    drop(reader);
    Ok(TailOutcome {
        events,
        transactions,
        files,
        position: pos,
        seconds: started.elapsed().as_secs_f64(),
        stop,
        dir: match (&sink, &plan.destination) {
            (Some(sink), _) => format!("{}/{}", sink.display, target.dir),
            (None, DestinationUrl::Kafka(k)) => format!("kafka://{} topics {}", k.brokers, k.topic),
            (None, d) => d.to_string(),
        },
    })
}

/// Applies a table's `where` to row changes, evaluated by the source itself on the images (so
/// the condition means exactly what it means in the snapshot's SELECT): an update whose row
/// leaves the filter becomes a delete, one that enters it an insert.
async fn apply_where(
    conn: &mut mysql_async::Conn,
    source: &Source,
    cond: &str,
    table: &binlog::TableMap,
    changes: Vec<Change>,
) -> Result<Vec<Change>> {
    let mut images: Vec<&[mysql_async::Value]> = Vec::new();
    for c in &changes {
        match c {
            Change::Insert(a) => images.push(a),
            Change::Delete(b) => images.push(b),
            Change::Update(b, a) => {
                images.push(b);
                images.push(a);
            }
        }
    }
    let mut verdicts = Vec::with_capacity(images.len());
    let ncols = table.columns.len().max(1);
    let per_query = (30_000 / (ncols + 1)).max(1);
    for batch in images.chunks(per_query) {
        let mut sql = String::from("SELECT (");
        sql.push_str(cond);
        sql.push_str(") IS TRUE FROM (");
        let mut params = Vec::with_capacity(batch.len() * (ncols + 1));
        for (i, row) in batch.iter().enumerate() {
            sql.push_str(if i == 0 {
                "SELECT ? AS `__storagetapper_i`"
            } else {
                " UNION ALL SELECT ?"
            });
            params.push(mysql_async::Value::UInt(i as u64));
            for (c, v) in table.columns.iter().zip(row.iter()) {
                sql.push_str(", ?");
                if i == 0 {
                    sql.push_str(" AS ");
                    sql.push_str(&crate::schema::quote_ident(&c.info.name));
                }
                params.push(v.clone());
            }
        }
        sql.push_str(") AS `__storagetapper_rows` ORDER BY `__storagetapper_i`");
        let rows: Vec<i64> =
            match mysql_async::prelude::Queryable::exec(conn, sql.as_str(), params.clone()).await {
                Ok(r) => r,
                Err(mysql_async::Error::Server(e)) => {
                    bail!("the source refused the condition `{cond}`: {}", e.message)
                }
                Err(_) => {
                    // The helper connection may have timed out on a quiet stream: once more.
                    *conn = source.connect().await?;
                    mysql_async::prelude::Queryable::exec(conn, sql.as_str(), params).await?
                }
            };
        if rows.len() != batch.len() {
            bail!(
                "`where` evaluation returned {} of {} rows",
                rows.len(),
                batch.len()
            );
        }
        verdicts.extend(rows.into_iter().map(|x| x != 0));
    }
    let mut v = verdicts.into_iter();
    let mut out = Vec::with_capacity(changes.len());
    for c in changes {
        match c {
            Change::Insert(a) => {
                if v.next() == Some(true) {
                    out.push(Change::Insert(a));
                }
            }
            Change::Delete(b) => {
                if v.next() == Some(true) {
                    out.push(Change::Delete(b));
                }
            }
            Change::Update(b, a) => match (v.next() == Some(true), v.next() == Some(true)) {
                (true, true) => out.push(Change::Update(b, a)),
                (true, false) => out.push(Change::Delete(b)),
                (false, true) => out.push(Change::Insert(a)),
                (false, false) => {}
            },
        }
    }
    Ok(out)
}

/// The position, seqno and event count at the last save.
struct Saved {
    pos: BinlogPos,
    seqno: u64,
    events: u64,
}

/// What opening a changelog file needs.
struct NewFile<'a> {
    sink: &'a Sink,
    dir: &'a str,
    plan: &'a Plan,
    zstd: Option<i32>,
    inner_zstd: Option<i32>,
}

/// Starts changelog file number `n` and its encoder (whose header goes to `buf`); an Avro or
/// Parquet file's schema holds the table versions in `versions`.
async fn open_file(
    nf: &NewFile<'_>,
    n: u64,
    versions: &[changelog::AvroVersion],
    buf: &mut Vec<u8>,
) -> Result<(ChangeFile, EventEncoder)> {
    let d = &nf.plan.manifest.destination;
    let path = format!(
        "{}/{}",
        nf.dir,
        changelog::file_name(n, d.format, d.compression, !nf.plan.recipients.is_empty())
    );
    let f = ChangeFile::create(nf.sink, &path, nf.zstd, &nf.plan.recipients).await?;
    let mut e = EventEncoder::for_file(
        d.format,
        nf.plan.manifest.tail.envelope,
        versions,
        nf.inner_zstd,
    )?;
    e.start(buf);
    Ok((f, e))
}

/// Kafka with Avro values: the single-object encoder of a table version (`None`: schema
/// changes), made on first use, when its writer schemas are sent to the schemas topic.
pub(crate) async fn avro_single<'a>(
    cache: &'a mut HashMap<String, changelog::AvroSingle>,
    k: &mut KafkaWriter,
    name: &str,
    envelope: Envelope,
    version: Option<&changelog::AvroVersion>,
) -> Result<&'a mut changelog::AvroSingle> {
    let sig = version.map_or("", |v| v.sig.as_str());
    if !cache.contains_key(sig) {
        let a = changelog::AvroSingle::new(envelope, version)?;
        let topic = k.schema_topic(name);
        k.send_schema(&topic, &a.value_schema.1, &a.value_schema.0)
            .await?;
        if let Some((schema, fp)) = &a.key_schema {
            k.send_schema(&topic, fp, schema).await?;
        }
        cache.insert(sig.to_string(), a);
    }
    cache
        .get_mut(sig)
        .ok_or_else(|| anyhow!("Avro encoder of {sig} vanished"))
}

/// Kafka: waits for the broker to acknowledge everything sent, then saves `pos` (a Kafka
/// stream writes no files: its next file number stays 0).
async fn flush_and_save(
    k: &mut KafkaWriter,
    state: &SqliteState,
    target: &StreamTarget,
    pos: BinlogPos,
    next_seqno: u64,
    events: u64,
) -> Result<Saved> {
    k.flush().await?;
    save(state, target, &pos, next_seqno, 0)?;
    Ok(Saved {
        pos,
        seqno: next_seqno,
        events,
    })
}

fn gtid_server(gtid: &str) -> u32 {
    gtid.split('-')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn stream_position(pos: &BinlogPos, next_seqno: u64, next_file: u64) -> StreamPosition {
    StreamPosition {
        kind: "binlog".into(),
        file: pos.file.clone(),
        pos: pos.pos,
        gtid: pos.gtid.clone(),
        next_seqno,
        next_file,
    }
}

fn save(
    state: &SqliteState,
    target: &StreamTarget,
    pos: &BinlogPos,
    next_seqno: u64,
    next_file: u64,
) -> Result<()> {
    state.save_stream_position(&target.stream, &stream_position(pos, next_seqno, next_file))
}

/// `changelog/position.json`: how far the files of the directory cover the binlog (so a
/// point-in-time restore knows a position with no events after the last one is covered).
async fn write_covered(sink: &Sink, target: &StreamTarget, p: &StreamPosition) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(p)?;
    text.push(b'\n');
    sink.put(&format!("{}/{COVERED_FILE}", target.dir), text)
        .await
}

/// The file holding the position a changelog directory covers.
pub const COVERED_FILE: &str = "position.json";

#[allow(clippy::too_many_arguments)]
async fn finish_file(
    sink: &Sink,
    encoder: &mut EventEncoder,
    file: &mut Option<(ChangeFile, Instant)>,
    buf: &mut Vec<u8>,
    state: &SqliteState,
    target: &StreamTarget,
    pos: &BinlogPos,
    next_seqno: u64,
    next_file: &mut u64,
) -> Result<()> {
    let Some((mut f, _)) = file.take() else {
        return Ok(());
    };
    encoder.finish(buf)?;
    f.write(std::mem::take(buf)).await?;
    let path = f.path.clone();
    let (bytes, _sha) = f.commit().await?;
    *next_file += 1;
    let p = stream_position(pos, next_seqno, *next_file);
    write_covered(sink, target, &p).await?;
    state.save_stream_position(&target.stream, &p)?;
    tracing::debug!(file = %path, bytes, position = %pos, "Changelog file complete.");
    Ok(())
}

async fn lag_bytes(conn: &mut mysql_async::Conn, at: &BinlogPos) -> u64 {
    let Ok(logs) = binlog::binary_logs(conn).await else {
        return 0;
    };
    let mut behind = 0u64;
    let mut counting = false;
    for (f, size) in logs {
        if f == at.file {
            counting = true;
            behind += size.saturating_sub(at.pos);
        } else if counting {
            behind += size;
        }
    }
    behind
}
