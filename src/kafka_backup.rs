//! `backup` into Kafka (`[destination] url = "kafka://…"`): every row of the manifest's tables
//! as an `op: "r"` change event on its table's topic, read in key order on one connection
//! inside one consistent snapshot; `--follow` then continues with the `tail` stream from the
//! snapshot's position.
//!
//! Invariants (nothing lost, nothing twice across kills):
//! - The snapshot is a backup in the state table with chunks planned as for files. Tables and
//!   their chunks are sent one after the other, in key order; a chunk is `done` only after
//!   the broker acknowledged every event of it.
//! - Every snapshot row carries the backup id and its key in read order as headers. The
//!   idempotent producer leaves each partition with a prefix of what was sent to it, so on
//!   resume the last snapshot row found in a partition says how far that partition got: the
//!   rows of the first unfinished chunk up to that key (compared by the server, in the index's
//!   own collation) whose message key falls in that partition are not sent again.
//! - Snapshot rows belong to the `tail` stream (same stream header, one seqno counter): their
//!   seqnos continue the stream's saved counter, or the highest seqno found in the topic, so
//!   they are never reused. A new snapshot moves the `tail` stream to the snapshot's position;
//!   the counter is saved after each chunk.
//! - A resumed snapshot reads the rest of the rows at a later point than the first part; the
//!   change stream still starts at the first run's position, so a consumer applying the
//!   events in order ends with the source's rows (a row may see its `r` event before older
//!   changes of it, never after newer ones are lost).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use mysql_async::prelude::*;
use mysql_async::{Conn, Value};
use tokio_util::sync::CancellationToken;

use crate::binlog::TableMap;
use crate::changelog::{self, AvroSingle, EventEncoder, EventSource, Op, StreamTable};
use crate::format::ColumnInfo;
use crate::kafka::{self, KafkaWriter, SnapshotMark};
use crate::manifest::{DestinationUrl, Envelope, Format, Plan};
use crate::progress::Progress;
use crate::snapshot::{self, BackupOptions, Interrupted, Prepared, TableSpec};
use crate::source::{self, BinlogPos, Source};
use crate::state::{BackupStatus, ChunkDone, ChunkStatus, SqliteState, StateStore, StreamPosition};
use crate::tail::{self, StreamTarget};

/// What a backup into Kafka did.
#[derive(Debug, Clone)]
pub struct KafkaBackupOutcome {
    /// Backup id.
    pub id: String,
    /// Resumed an unfinished backup.
    pub resumed: bool,
    /// Snapshot rows sent by this run.
    pub rows_this_run: u64,
    /// Rows an interrupted run had delivered, not sent again.
    pub skipped: u64,
    /// Snapshot rows of the whole backup.
    pub rows: u64,
    /// Seconds this run took.
    pub seconds: f64,
    /// The position the change stream (`--follow`, `tail`) continues from.
    pub position: BinlogPos,
    /// The next seqno of the stream.
    pub next_seqno: u64,
    /// Brokers and topic template.
    pub location: String,
}

/// Adds the primary key columns a rule leaves out to the columns read (a row's message key is
/// its primary key, as in the change stream).
fn read_primary_key(spec: &mut TableSpec) {
    for c in spec.schema.primary_key.clone() {
        let read = spec
            .columns
            .iter()
            .chain(&spec.extra_key_columns)
            .any(|x| x.eq_ignore_ascii_case(&c));
        if !read {
            spec.extra_key_columns.push(c);
        }
    }
}

/// The change-stream view of a table's snapshot rows: the SELECT's columns, its primary key.
fn stream_table(plan: &Plan, spec: &TableSpec) -> Result<StreamTable> {
    let names: Vec<String> = spec
        .columns
        .iter()
        .chain(&spec.extra_key_columns)
        .cloned()
        .collect();
    let columns: Vec<ColumnInfo> = ColumnInfo::list(&spec.schema, &names).to_vec();
    let key = spec
        .schema
        .primary_key
        .iter()
        .filter_map(|k| names.iter().position(|n| n.eq_ignore_ascii_case(k)))
        .collect();
    let map = TableMap::from_columns(&spec.schema.schema, &spec.schema.table, &columns, key);
    let rule = plan
        .rules
        .iter()
        .find(|r| r.matches(&spec.schema.schema, &spec.schema.table))
        .ok_or_else(|| anyhow!("no manifest entry for {}", spec.name()))?;
    let m = &plan.manifest;
    StreamTable::new(
        Arc::new(map),
        &rule.config,
        m.destination.format,
        m.tail.envelope,
    )
}

/// Encodes the message key and value of snapshot rows.
struct Encoder {
    json: EventEncoder,
    avro: HashMap<String, AvroSingle>,
    format: Format,
    name: String,
    envelope: Envelope,
}

impl Encoder {
    /// Avro: the single-object encoder of the table version (its schemas sent on first use).
    async fn avro<'a>(
        &'a mut self,
        k: &mut KafkaWriter,
        t: &StreamTable,
    ) -> Result<&'a mut AvroSingle> {
        tail::avro_single(
            &mut self.avro,
            k,
            &self.name,
            self.envelope,
            Some(&t.version),
        )
        .await
    }

    /// The message key of a row.
    async fn key(
        &mut self,
        k: &mut KafkaWriter,
        t: &mut StreamTable,
        row: &[Value],
    ) -> Result<Vec<u8>> {
        if self.format != Format::Avro {
            return t.key_bytes(row);
        }
        let mut key = Vec::with_capacity(32);
        self.avro(k, t).await?.key(&mut key, t, row)?;
        Ok(key)
    }

    /// The `op: "r"` event of a row into `out`.
    async fn event(
        &mut self,
        out: &mut Vec<u8>,
        k: &mut KafkaWriter,
        t: &mut StreamTable,
        seqno: u64,
        src: &EventSource<'_>,
        row: Vec<Value>,
    ) -> Result<()> {
        out.clear();
        if self.format == Format::Avro {
            self.avro(k, t)
                .await?
                .row_event(out, t, Op::Read, seqno, src, None, Some(row))
        } else {
            self.json
                .row_event(out, t, Op::Read, seqno, src, None, Some(row))?;
            if out.last() == Some(&b'\n') {
                out.pop();
            }
            Ok(())
        }
    }
}

/// Runs (or resumes) the manifest's snapshot into Kafka.
///
/// # Errors
/// Any failure; [`Interrupted`] when cancelled. The state stays resumable either way.
pub async fn run(
    plan: &Plan,
    opts: &BackupOptions,
    cancel: CancellationToken,
) -> Result<KafkaBackupOutcome> {
    let started = Instant::now();
    let m = &plan.manifest;
    let DestinationUrl::Kafka(target) = &plan.destination else {
        bail!("not a kafka:// destination");
    };
    let state = SqliteState::from_url(&plan.state)?;
    let src = Source::new(&plan.source_url, plan.password.as_ref())?;
    let mut coord = src.connect().await?;
    let info = source::server_info(&mut coord).await?;
    if !info.log_bin {
        bail!(
            "a backup into Kafka needs the source's binary log (log_bin is off): the change \
             stream continues from the snapshot's binlog position"
        );
    }
    let Prepared {
        existing,
        abandon,
        mut specs,
    } = snapshot::prepare(plan, &state, &mut coord, opts.fresh).await?;
    drop(coord);
    let resumed = existing.is_some();
    if !resumed {
        if let Some(s) = specs.iter().find(|s| s.key.is_none()) {
            bail!(
                "table {} has no primary or unique NOT NULL key: a snapshot into Kafka reads \
                 in key order to resume without repeating rows (stream it with `tail` instead)",
                s.name()
            );
        }
        specs.iter_mut().for_each(read_primary_key);
    }
    // Reachable brokers before anything is recorded.
    let stream = StreamTarget::tail(&m.name);
    let mut k = KafkaWriter::connect(
        target,
        &format!("{}/{}", m.name, stream.stream),
        m.destination.compression,
    )?;
    if let Some(b) = abandon {
        state.set_status(&b.id, BackupStatus::Abandoned)?;
        tracing::info!(backup = %b.id, "Abandoned the unfinished backup (--fresh).");
    }
    if opts.threads.is_some_and(|n| n > 1) {
        tracing::info!(
            "A snapshot into Kafka reads one table at a time on one connection (the producer, \
             not the read, is the bottleneck): --threads does not apply."
        );
    }

    let names: Vec<(String, String)> = specs
        .iter()
        .map(|s| (s.schema.schema.clone(), s.schema.table.clone()))
        .collect();
    let (point, mut workers) = source::consistent_point(&src, &info, &names, 1).await?;
    let mut w = workers
        .pop()
        .ok_or_else(|| anyhow!("no snapshot connection"))?;
    let here = point
        .position
        .clone()
        .or_else(|| w.point.clone())
        .ok_or_else(|| anyhow!("the source reports no binlog position (SHOW MASTER STATUS)"))?;
    let saved = state.stream_position(&stream.stream)?;
    let backup_id = match &existing {
        Some(b) => b.id.clone(),
        None => {
            let id =
                snapshot::create_backup(plan, None, &state, &specs, &point, &mut w.conn).await?;
            // The change stream continues from this snapshot (its older position, if any,
            // is covered by the snapshot's rows).
            if let Some(old) = &saved {
                tracing::info!(
                    from = %BinlogPos { file: old.file.clone(), pos: old.pos, gtid: old.gtid.clone() },
                    to = %here,
                    "The tail stream now continues from this snapshot's position."
                );
            }
            let p = StreamPosition {
                kind: "binlog".into(),
                file: here.file.clone(),
                pos: here.pos,
                gtid: here.gtid.clone(),
                next_seqno: saved.as_ref().map_or(1, |s| s.next_seqno),
                next_file: saved.as_ref().map_or(0, |s| s.next_file),
            };
            state.save_stream_position(&stream.stream, &p)?;
            id
        }
    };
    let mut enc = Encoder {
        json: EventEncoder::new(m.destination.format, m.tail.envelope)?,
        avro: HashMap::new(),
        format: m.destination.format,
        name: m.name.clone(),
        envelope: m.tail.envelope,
    };
    let chunks = state.chunks(&backup_id)?;
    let progress = snapshot::table_progress(opts.progress, &specs, &chunks);
    let logger = progress.spawn_logger(std::time::Duration::from_secs(5));
    tracing::info!(backup = %backup_id, at = %here, topics = %target.topic, "Sending the snapshot to Kafka.");
    let mut run = Run {
        plan,
        state: &state,
        stream: &stream,
        backup_id: &backup_id,
        here: &here,
        server_id: u32::try_from(info.server_id).unwrap_or(0),
        cancel: &cancel,
        progress: &progress,
        rows: 0,
        skipped: 0,
        next_seqno: 1,
        buf: Vec::with_capacity(1 << 16),
        throttle: crate::throttle::Throttle::new(
            m.snapshot.throttle.rows_per_sec,
            m.snapshot.throttle.bytes_per_sec.0,
        ),
    };
    let result = async {
        for (i, spec) in specs.iter().enumerate() {
            run.table(&mut k, &mut enc, &mut w.conn, i, spec, &chunks)
                .await
                .with_context(|| format!("table {}", spec.name()))?;
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    if let Some(l) = logger {
        l.abort();
    }
    progress.finish();
    w.conn.query_drop("COMMIT").await.ok();
    w.conn.disconnect().await.ok();
    if result.is_err() {
        // Whatever was acknowledged stays; a rerun skips it. Wait for it briefly.
        k.flush().await.ok();
    }
    result?;
    state.set_status(&backup_id, BackupStatus::Complete)?;
    let chunks = state.chunks(&backup_id)?;
    let rows = chunks
        .iter()
        .filter_map(|c| c.done.as_ref().map(|d| d.rows))
        .sum();
    let saved = state
        .stream_position(&stream.stream)?
        .ok_or_else(|| anyhow!("the tail stream's position vanished from the state table"))?;
    let (rows_this_run, skipped) = (run.rows, run.skipped);
    if skipped > 0 {
        tracing::info!(
            skipped,
            "Snapshot rows an interrupted run had delivered were not sent again."
        );
    }
    Ok(KafkaBackupOutcome {
        id: backup_id,
        resumed,
        rows_this_run,
        skipped,
        rows,
        seconds: started.elapsed().as_secs_f64(),
        position: BinlogPos {
            file: saved.file,
            pos: saved.pos,
            gtid: saved.gtid,
        },
        next_seqno: saved.next_seqno,
        location: format!("kafka://{} topics {}", target.brokers, target.topic),
    })
}

/// One run's shared context.
struct Run<'a> {
    plan: &'a Plan,
    state: &'a SqliteState,
    stream: &'a StreamTarget,
    backup_id: &'a str,
    here: &'a BinlogPos,
    server_id: u32,
    cancel: &'a CancellationToken,
    progress: &'a Arc<Progress>,
    rows: u64,
    skipped: u64,
    next_seqno: u64,
    buf: Vec<u8>,
    throttle: crate::throttle::Throttle,
}

impl Run<'_> {
    /// Sends the unfinished chunks of one table.
    async fn table(
        &mut self,
        k: &mut KafkaWriter,
        enc: &mut Encoder,
        conn: &mut Conn,
        index: usize,
        spec: &TableSpec,
        chunks: &[crate::state::ChunkRecord],
    ) -> Result<()> {
        let m = &self.plan.manifest;
        let name = spec.name();
        let pending: Vec<_> = chunks
            .iter()
            .filter(|c| c.table == name && c.status == ChunkStatus::Pending)
            .collect();
        let Some(first) = pending.first() else {
            self.progress.table_done(index);
            return Ok(());
        };
        let topic = k.table_topic(&m.name, &spec.schema.schema, &spec.schema.table);
        let topic_state = tokio::task::block_in_place(|| k.topic_state(&topic))?;
        let saved = self
            .state
            .stream_position(&self.stream.stream)?
            .ok_or_else(|| anyhow!("the tail stream's position vanished from the state table"))?;
        // Never reuse a seqno: past the saved counter and anything already in the topic.
        self.next_seqno = saved
            .next_seqno
            .max(topic_state.floor.iter().max().map_or(0, |f| f + 1));
        let mut t = stream_table(self.plan, spec)?;
        let key_pos: Vec<usize> = spec.key_positions().iter().map(|p| p.0).collect();
        let lower = first
            .lower_key
            .as_ref()
            .map(snapshot::key_values)
            .transpose()?;
        // Rows an interrupted run delivered: per partition, those up to its last snapshot row.
        let mut skip: HashSet<Vec<u8>> = HashSet::new();
        for (p, mark) in topic_state.marks.iter().enumerate() {
            let Some(mark) = mark.as_ref().filter(|m| m.backup == self.backup_id) else {
                continue;
            };
            let upper = snapshot::key_values(
                &serde_json::from_str(&mark.after)
                    .with_context(|| format!("partition {p}: header {}", kafka::AFTER_HEADER))?,
            )?;
            let q = spec.read().chunk_query(lower.as_deref(), Some(&upper));
            let mut rows = conn
                .exec_iter(q.sql.as_str(), q.params)
                .await
                .with_context(|| format!("query failed: {}", q.sql))?;
            while let Some(row) = rows
                .next()
                .await
                .with_context(|| format!("reading {name}"))?
            {
                let row = row.unwrap();
                let key = enc.key(k, &mut t, &row).await?;
                if usize::try_from(kafka::partition_of(&key, topic_state.partitions)) == Ok(p) {
                    skip.insert(key);
                }
            }
        }
        if !skip.is_empty() {
            tracing::info!(
                table = %name,
                rows = skip.len(),
                "Rows an interrupted run delivered: not sending them again."
            );
        }
        let gtid = self.here.gtid.clone().unwrap_or_default();
        let mut row_no = 0u64;
        for c in pending {
            let lower = c.lower_key.as_ref().map(snapshot::key_values).transpose()?;
            let upper = c.upper_key.as_ref().map(snapshot::key_values).transpose()?;
            let q = spec.read().chunk_query(lower.as_deref(), upper.as_deref());
            let mut result = conn
                .exec_iter(q.sql.as_str(), q.params)
                .await
                .with_context(|| format!("query failed: {}", q.sql))?;
            let (mut rows, mut bytes, mut skipped, mut paced_bytes) = (0u64, 0u64, 0u64, 0u64);
            let (mut first_key, mut last_key) = (None, None);
            let mut buf = std::mem::take(&mut self.buf);
            loop {
                let next = tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => None,
                    r = result.next() => Some(r.with_context(|| format!("reading {name}"))?),
                };
                let Some(next) = next else {
                    return Err(Interrupted.into());
                };
                let Some(row) = next else {
                    break;
                };
                let row = row.unwrap();
                let read_key: Vec<Value> = key_pos
                    .iter()
                    .map(|&p| row.get(p).cloned().unwrap_or(Value::NULL))
                    .collect();
                let key = enc.key(k, &mut t, &row).await?;
                if !skip.is_empty() && skip.remove(&key) {
                    skipped += 1;
                    continue;
                }
                let src = EventSource {
                    name: &m.name,
                    server_id: self.server_id,
                    gtid: &gtid,
                    file: &self.here.file,
                    pos: self.here.pos,
                    ts_ms: changelog::now_ms(),
                    snapshot: true,
                    row: row_no,
                };
                enc.event(&mut buf, k, &mut t, self.next_seqno, &src, row)
                    .await?;
                let mark = SnapshotMark {
                    backup: self.backup_id.to_string(),
                    after: snapshot::key_json(&read_key).to_string(),
                };
                k.send(&topic, &key, &buf, self.next_seqno, &gtid, Some(&mark))
                    .await?;
                self.next_seqno += 1;
                row_no += 1;
                rows += 1;
                bytes += buf.len() as u64;
                if first_key.is_none() {
                    first_key = Some(read_key.clone());
                }
                last_key = Some(read_key);
                if rows % 64 == 0 {
                    let b = bytes - paced_bytes;
                    paced_bytes = bytes;
                    self.progress.add(index, 64, b);
                    tokio::select! {
                        biased;
                        () = self.cancel.cancelled() => return Err(Interrupted.into()),
                        () = self.throttle.consume(64, b) => {}
                    }
                }
            }
            self.progress.add(index, rows % 64, bytes - paced_bytes);
            self.buf = buf;
            // The chunk is done once the broker has all of it; then the counter is saved.
            k.flush().await?;
            let kinds: Vec<(crate::schema::Kind, u32)> =
                spec.key_positions().iter().map(|p| (p.1, p.2)).collect();
            let human = |k: Option<Vec<Value>>| {
                k.map_or(serde_json::Value::Null, |k| {
                    crate::value::human_key(&kinds, &k)
                })
            };
            let done = ChunkDone {
                rows: rows + skipped,
                bytes,
                sha256: String::new(),
                file: topic.clone(),
                first_key: human(first_key),
                last_key: human(last_key),
                point: serde_json::to_value(self.here)?,
                fingerprint: None,
            };
            self.state
                .chunk_done(self.backup_id, &name, c.chunk_no, &done)
                .with_context(|| format!("cannot record chunk {} of {name}", c.chunk_no))?;
            let mut p = self
                .state
                .stream_position(&self.stream.stream)?
                .ok_or_else(|| anyhow!("the tail stream's position vanished"))?;
            p.next_seqno = p.next_seqno.max(self.next_seqno);
            self.state.save_stream_position(&self.stream.stream, &p)?;
            self.rows += rows;
            self.skipped += skipped;
            skip.clear();
        }
        self.progress.table_done(index);
        Ok(())
    }
}
