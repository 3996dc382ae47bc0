//! The backup driver: resolve the manifest's tables, take one consistent point for all
//! workers, cut tables into chunks, read chunks in parallel and stream each through
//! encode → compress → file, record every finished chunk in the state table, and write
//! `metadata.json` last.
//!
//! Invariants: a chunk is `done` in the state only after its file has its final name; a resumed
//! run never reads a done chunk again and rewrites unfinished ones from scratch under the same
//! name, so every row is in exactly one file. Memory per worker is bounded by the channel sizes
//! (a few batches of rows and a few compressed buffers).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::format;
use crate::layout::{
    self, ChunkMeta, ChunkPoint, Metadata, SchemaFile, SnapshotMeta, SourceMeta, TableMeta,
};
use crate::manifest::{Compression, Format, Plan, Seg};
use crate::progress::{self, Progress};
use crate::schema::{ChunkKey, Kind, TableSchema};
use crate::sink::Sink;
use crate::source::{self, ReadSpec, ServerInfo, SnapshotPoint, Source, TableInfo};
use crate::state::{
    BackupRecord, BackupStatus, ChunkDone, ChunkRecord, ChunkStatus, SqliteState, StateStore,
    TableRecord,
};
use crate::throttle::Throttle;
use crate::value::{self, KeyValue};

/// Rows per batch handed from the reader to the encoder.
const BATCH_ROWS: usize = 1024;
/// Bytes per batch handed from the reader to the encoder.
const BATCH_BYTES: usize = 1 << 20;
/// Compressed bytes per buffer handed to the writer.
const OUT_BYTES: usize = 1 << 20;

/// The run was stopped by a signal; the state is resumable.
#[derive(Debug, thiserror::Error)]
#[error("interrupted: files in flight were discarded; run the same command again to resume")]
pub struct Interrupted;

/// Waits for all workers; on failure returns the first real cause (not the cancellations it
/// triggered in the other workers).
///
/// # Errors
/// The first worker error, or a panic.
pub async fn join_workers(tasks: &mut tokio::task::JoinSet<Result<()>>) -> Result<()> {
    let mut first_err: Option<anyhow::Error> = None;
    while let Some(r) = tasks.join_next().await {
        let r = r
            .map_err(|e| anyhow!("worker panicked: {e}"))
            .and_then(|r| r);
        if let Err(e) = r
            && first_err
                .as_ref()
                .is_none_or(|f| f.is::<Interrupted>() && !e.is::<Interrupted>())
        {
            first_err = Some(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Options from the command line.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Overrides `[snapshot] threads`.
    pub threads: Option<usize>,
    /// Abandon an unfinished backup and start over.
    pub fresh: bool,
    /// Progress display.
    pub progress: progress::Mode,
}

/// What a finished backup reports.
#[derive(Debug, Clone, Serialize)]
pub struct BackupOutcome {
    /// Backup id.
    pub id: String,
    /// Resumed an unfinished backup.
    pub resumed: bool,
    /// Rows read by this run.
    pub rows_this_run: u64,
    /// Rows in the whole backup.
    pub rows: u64,
    /// Stored bytes of the whole backup.
    pub bytes: u64,
    /// Seconds this run took.
    pub seconds: f64,
    /// Lock hold time of this run, ms.
    pub lock_held_ms: u64,
    /// Consistent at one point.
    pub consistent: bool,
    /// Where the files are.
    pub location: String,
    /// Where a change stream continuing this backup starts (the snapshot point, or the
    /// earliest chunk point when the backup is not consistent at one point).
    pub follow_from: Option<source::BinlogPos>,
}

/// How one table is read, as stored in the state table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableSpec {
    /// Captured schema.
    pub schema: TableSchema,
    /// Columns written, in order.
    pub columns: Vec<String>,
    /// Key columns read but not written.
    pub extra_key_columns: Vec<String>,
    /// Chunk key.
    pub key: Option<ChunkKey>,
    /// Filter.
    pub where_: Option<String>,
    /// Estimated rows.
    pub est_rows: u64,
    /// Estimated bytes.
    pub est_bytes: u64,
}

impl TableSpec {
    /// The read spec for queries.
    pub fn read(&self) -> ReadSpec {
        ReadSpec {
            schema: self.schema.schema.clone(),
            table: self.schema.table.clone(),
            columns: self.columns.clone(),
            extra_key_columns: self.extra_key_columns.clone(),
            key: self.key.clone(),
            where_: self.where_.clone(),
        }
    }

    /// `schema.table`.
    pub fn name(&self) -> String {
        self.schema.full_name()
    }

    /// The table as the format encoders and decoders see it.
    pub fn format_table(&self) -> format::TableInfo {
        format::TableInfo {
            schema: self.schema.schema.clone(),
            table: self.schema.table.clone(),
            columns: format::ColumnInfo::list(&self.schema, &self.columns),
        }
    }

    /// Positions of the key columns in the SELECT list, and their kinds.
    pub(crate) fn key_positions(&self) -> Vec<(usize, Kind, u32)> {
        let Some(key) = &self.key else {
            return Vec::new();
        };
        let select: Vec<&String> = self.columns.iter().chain(&self.extra_key_columns).collect();
        key.columns
            .iter()
            .filter_map(|k| {
                let pos = select.iter().position(|c| c.eq_ignore_ascii_case(k))?;
                let (kind, fsp) = self
                    .schema
                    .column(k)
                    .map_or((Kind::Text, 0), |c| (c.kind, c.fsp));
                Some((pos, kind, fsp))
            })
            .collect()
    }
}

/// Resolves the manifest's table entries against the server's tables, and builds each table's
/// spec from its captured schema.
///
/// # Errors
/// A pattern that matches nothing, an unknown column or index (each naming the manifest line).
pub async fn resolve_tables(plan: &Plan, conn: &mut Conn) -> Result<Vec<(usize, TableSpec)>> {
    let all = source::list_tables(conn).await?;
    let mut picked: Vec<(usize, TableInfo)> = Vec::new();
    for rule in &plan.rules {
        let mut n = 0;
        for t in &all {
            let system = source::SYSTEM_SCHEMAS
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&t.schema));
            if system && !rule.schema_is_literal() {
                continue;
            }
            if rule.matches(&t.schema, &t.table) {
                n += 1;
                if !picked
                    .iter()
                    .any(|(_, p)| p.schema == t.schema && p.table == t.table)
                {
                    picked.push((rule.index, t.clone()));
                }
            }
        }
        if n == 0 {
            return Err(plan
                .error(
                    &[
                        Seg::Key("tables"),
                        Seg::Index(rule.index),
                        Seg::Key("table"),
                    ],
                    format!(
                        "schema `{}` table `{}` matches no table on the source",
                        rule.config.schema, rule.config.table
                    ),
                )
                .into());
        }
    }
    let mut out = Vec::new();
    for (rule_index, info) in picked {
        let rule = &plan.rules[rule_index];
        let schema = source::capture_schema(conn, &info.schema, &info.table).await?;
        let at = |key: &'static str| [Seg::Key("tables"), Seg::Index(rule_index), Seg::Key(key)];
        let idx = source::select_columns(&schema, &rule.config).map_err(|m| {
            plan.error(
                &at(if rule.config.columns.is_some() {
                    "columns"
                } else {
                    "exclude_columns"
                }),
                m,
            )
        })?;
        let key = source::choose_chunk_key(&schema, rule.config.index.as_deref())
            .map_err(|m| plan.error(&at("index"), m))?;
        let columns: Vec<String> = idx
            .iter()
            .map(|&i| schema.columns[i].name.clone())
            .collect();
        let extra_key_columns = key
            .as_ref()
            .map(|k| {
                k.columns
                    .iter()
                    .filter(|c| !columns.iter().any(|s| s.eq_ignore_ascii_case(c)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        out.push((
            rule_index,
            TableSpec {
                schema,
                columns,
                extra_key_columns,
                key,
                where_: rule.config.where_.clone(),
                est_rows: info.est_rows,
                est_bytes: info.est_bytes,
            },
        ));
    }
    Ok(out)
}

pub(crate) fn key_json(values: &[Value]) -> serde_json::Value {
    serde_json::Value::Array(
        values
            .iter()
            .map(|v| {
                serde_json::to_value(KeyValue::from_value(v)).unwrap_or(serde_json::Value::Null)
            })
            .collect(),
    )
}

/// Chunk bounds stored as typed JSON ([`KeyValue`]s) back to values to bind.
///
/// # Errors
/// When the JSON is not a list of key values.
pub fn key_values(json: &serde_json::Value) -> Result<Vec<Value>> {
    let keys: Vec<KeyValue> =
        serde_json::from_value(json.clone()).context("state table holds an invalid chunk key")?;
    keys.iter()
        .map(|k| k.to_value().map_err(|e| anyhow!("{e}")))
        .collect()
}

struct Job {
    table: usize,
    chunk_no: i64,
    lower: Option<Vec<Value>>,
    upper: Option<Vec<Value>>,
}

struct Shared {
    plan: Plan,
    backup_id: String,
    specs: Vec<TableSpec>,
    sink: Sink,
    state: Arc<dyn StateStore>,
    throttle: Throttle,
    progress: Arc<Progress>,
    cancel: CancellationToken,
    jobs: Mutex<VecDeque<Job>>,
    run: String,
    lock: source::LockMode,
    zstd_level: Option<i32>,
    encode_opts: format::EncodeOptions,
    remaining: Mutex<Vec<usize>>,
}

/// Runs (or resumes) the manifest's backup.
///
/// # Errors
/// Any failure; [`Interrupted`] when cancelled. The state stays resumable either way.
pub async fn run(
    plan: &Plan,
    opts: &BackupOptions,
    cancel: CancellationToken,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let run_started = chrono::Utc::now().to_rfc3339();
    let m = &plan.manifest;
    let state: Arc<dyn StateStore> = Arc::new(SqliteState::from_url(&plan.state)?);
    let src = Source::new(&plan.source_url, plan.password.as_ref())?;
    let mut coord = src.connect().await?;
    let info = source::server_info(&mut coord).await?;
    // SQL statements must load on a server like this one: stay well under its packet limit.
    let max_packet: u64 = coord
        .query_first("SELECT @@max_allowed_packet")
        .await
        .context("SELECT @@max_allowed_packet")?
        .unwrap_or(16 << 20);
    let max_statement_bytes =
        usize::try_from(max_packet.saturating_sub(64 << 10).clamp(64 << 10, 1 << 20))?;
    if !info.log_bin {
        tracing::warn!(
            "The binary log is off on the source: the backup will carry no binlog position."
        );
    } else if !info.binlog_format.eq_ignore_ascii_case("ROW") {
        tracing::warn!(binlog_format = %info.binlog_format, "binlog_format is not ROW: a change stream could not follow this backup.");
    }

    let Prepared {
        existing,
        abandon,
        specs,
    } = prepare(plan, state.as_ref(), &mut coord, opts.fresh).await?;
    let threads = opts.threads.unwrap_or(m.snapshot.threads).max(1);
    let resumed = existing.is_some();
    let backup_id = existing.map(|b| b.id).unwrap_or_default();
    if !resumed {
        for s in &specs {
            if s.key.is_none() {
                tracing::warn!(table = %s.name(), "No primary or unique NOT NULL key: the table is read as one chunk.");
            }
        }
    }
    drop(coord);

    // Only now, with the manifest resolved against the source, is anything written.
    let sink = Sink::connect(&plan.destination).await?;
    if let Some(b) = abandon {
        let dir = layout::backup_dir(&m.name, &b.id);
        if !sink.exists(&format!("{dir}/metadata.json")).await? {
            sink.remove_dir(&dir).await?;
        }
        state.set_status(&b.id, BackupStatus::Abandoned)?;
        tracing::info!(backup = %b.id, "Abandoned the unfinished backup (--fresh).");
    }

    let names: Vec<(String, String)> = specs
        .iter()
        .map(|s| (s.schema.schema.clone(), s.schema.table.clone()))
        .collect();
    let (point, mut workers) = source::consistent_point(&src, &info, &names, threads).await?;

    let backup_id = if resumed {
        let dir = layout::backup_dir(&m.name, &backup_id);
        let n = sink.remove_temporaries(&dir).await?;
        if n > 0 {
            tracing::info!(
                files = n,
                "Removed temporary files left by the interrupted run."
            );
        }
        let n = sink.abort_uploads(&dir).await?;
        tracing::info!(
            uploads = n,
            "Aborted the unfinished multipart uploads left by the interrupted run."
        );
        backup_id
    } else {
        create_backup(
            plan,
            Some(&sink),
            state.as_ref(),
            &specs,
            &point,
            &mut workers[0].conn,
        )
        .await?
    };
    write_schema_files(
        &sink,
        &layout::backup_dir(&m.name, &backup_id),
        &specs,
        m.destination.format,
        &plan.recipients,
    )
    .await?;

    let chunks = state.chunks(&backup_id)?;
    let mut jobs = VecDeque::new();
    let mut remaining = vec![0usize; specs.len()];
    for c in chunks.iter().filter(|c| c.status == ChunkStatus::Pending) {
        let table = specs
            .iter()
            .position(|s| s.name() == c.table)
            .ok_or_else(|| anyhow!("chunk of unknown table {} in the state table", c.table))?;
        remaining[table] += 1;
        jobs.push_back(Job {
            table,
            chunk_no: c.chunk_no,
            lower: c.lower_key.as_ref().map(key_values).transpose()?,
            upper: c.upper_key.as_ref().map(key_values).transpose()?,
        });
    }
    let pending = jobs.len();
    tracing::info!(
        backup = %backup_id,
        tables = specs.len(),
        chunks = chunks.len(),
        pending,
        threads,
        "Reading chunks."
    );

    let progress = table_progress(opts.progress, &specs, &chunks);
    for (i, n) in remaining.iter().enumerate() {
        if *n == 0 {
            progress.table_done(i);
        }
    }
    let logger = progress.spawn_logger(std::time::Duration::from_secs(5));
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        backup_id: backup_id.clone(),
        specs,
        sink: sink.clone(),
        state: Arc::clone(&state),
        throttle: Throttle::new(
            m.snapshot.throttle.rows_per_sec,
            m.snapshot.throttle.bytes_per_sec.0,
        ),
        progress: Arc::clone(&progress),
        cancel: cancel.clone(),
        jobs: Mutex::new(jobs),
        run: run_started,
        lock: point.lock,
        zstd_level: match (m.destination.format, m.destination.compression) {
            (Format::Parquet, _) | (_, Compression::None) => None,
            (_, Compression::Zstd) => Some(m.destination.compression_level.unwrap_or(3)),
        },
        encode_opts: format::EncodeOptions {
            inner_zstd: match m.destination.compression {
                Compression::Zstd => Some(m.destination.compression_level.unwrap_or(3)),
                Compression::None => None,
            },
            max_statement_bytes,
        },
        remaining: Mutex::new(remaining),
    });

    let mut tasks = tokio::task::JoinSet::new();
    for w in workers.drain(..) {
        let sh = Arc::clone(&shared);
        tasks.spawn(async move {
            let r = worker_loop(&sh, w).await;
            if r.is_err() {
                sh.cancel.cancel();
            }
            r
        });
    }
    let outcome = join_workers(&mut tasks).await;
    if let Some(l) = logger {
        l.abort();
    }
    progress.finish();
    outcome?;
    let (rows_this_run, _) = progress.totals();

    // All chunks done: write metadata.json last.
    let chunks = state.chunks(&backup_id)?;
    if let Some(c) = chunks.iter().find(|c| c.status != ChunkStatus::Done) {
        bail!(
            "chunk {} #{} is still pending after all workers finished",
            c.table,
            c.chunk_no
        );
    }
    let record = state
        .backups(&m.name)?
        .into_iter()
        .find(|b| b.id == backup_id)
        .ok_or_else(|| anyhow!("backup {backup_id} vanished from the state table"))?;
    let first_point: SnapshotPoint = serde_json::from_value(record.position.clone())
        .context("state table holds an invalid snapshot point")?;
    let mut metadata = build_metadata(&shared, &record, &first_point, &info, &src, &chunks)?;
    let dir = layout::backup_dir(&m.name, &backup_id);
    if !plan.recipients.is_empty() {
        // Keys are row data: into an encrypted file per table, out of the plain metadata.
        metadata.encryption_recipients = plan.recipients.strings();
        for t in &mut metadata.tables {
            let keys: Vec<serde_json::Value> = t
                .chunks
                .iter_mut()
                .map(|c| {
                    serde_json::json!({
                        "file": c.file,
                        "first_key": std::mem::take(&mut c.first_key),
                        "last_key": std::mem::take(&mut c.last_key),
                        "lower_bound": std::mem::take(&mut c.lower_bound),
                        "upper_bound": std::mem::take(&mut c.upper_bound),
                    })
                })
                .collect();
            let path = format!(
                "{dir}/{}/{}",
                layout::table_dir(&t.schema, &t.table),
                layout::KEYS_FILE
            );
            let plain = serde_json::to_vec(&keys)?;
            sink.put(&path, plan.recipients.encrypt_bytes(&plain)?)
                .await?;
        }
    }
    let mut text = serde_json::to_vec_pretty(&metadata)?;
    text.push(b'\n');
    sink.put(&format!("{dir}/metadata.json"), text).await?;
    state.set_status(&backup_id, BackupStatus::Complete)?;
    let rows = metadata.tables.iter().map(|t| t.rows).sum();
    let bytes = metadata.tables.iter().map(|t| t.bytes).sum();
    Ok(BackupOutcome {
        id: backup_id,
        resumed,
        rows_this_run,
        rows,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        lock_held_ms: point.lock_held_ms,
        consistent: metadata.snapshot.consistent,
        location: format!("{}/{dir}", sink.display),
        follow_from: metadata
            .snapshot
            .position
            .clone()
            .or_else(|| metadata.snapshot.changelog_from.clone()),
    })
}

/// Progress over the tables' rows not yet in done chunks.
pub(crate) fn table_progress(
    mode: progress::Mode,
    specs: &[TableSpec],
    chunks: &[ChunkRecord],
) -> Arc<Progress> {
    let tables: Vec<(String, u64)> = specs
        .iter()
        .map(|s| {
            let done_rows: u64 = chunks
                .iter()
                .filter(|c| c.table == s.name())
                .filter_map(|c| c.done.as_ref().map(|d| d.rows))
                .sum();
            (s.name(), s.est_rows.saturating_sub(done_rows))
        })
        .collect();
    Progress::new(mode, &tables)
}

/// The backup a run works on: an unfinished one to resume (with its tables as recorded), or
/// the manifest's tables resolved now for a new one.
pub(crate) struct Prepared {
    /// The unfinished backup this run resumes.
    pub existing: Option<BackupRecord>,
    /// The unfinished backup `--fresh` abandons.
    pub abandon: Option<BackupRecord>,
    /// The tables, in order.
    pub specs: Vec<TableSpec>,
}

/// Finds the manifest's unfinished backup (refusing one started from different tables, or
/// whose tables changed since) or resolves the tables for a new one.
///
/// # Errors
/// As described, naming the backup and table.
pub(crate) async fn prepare(
    plan: &Plan,
    state: &dyn StateStore,
    coord: &mut Conn,
    fresh: bool,
) -> Result<Prepared> {
    let m = &plan.manifest;
    let mut existing = state.unfinished(&m.name)?;
    let abandon = if fresh { existing.take() } else { None };
    let Some(b) = &existing else {
        let specs = resolve_tables(plan, coord).await?;
        return Ok(Prepared {
            existing,
            abandon,
            specs: specs.into_iter().map(|(_, s)| s).collect(),
        });
    };
    if b.manifest_hash != plan.content_hash {
        bail!(
            "the unfinished backup {} of `{}` was started with different tables, filters, format, \
             chunk size or destination kind; rerun with --fresh to start a new backup",
            b.id,
            m.name
        );
    }
    let specs: Vec<TableSpec> = state
        .tables(&b.id)?
        .into_iter()
        .map(|t| serde_json::from_value(t.spec).context("state table holds an invalid table spec"))
        .collect::<Result<_>>()?;
    for s in &specs {
        let now = source::capture_schema(coord, &s.schema.schema, &s.schema.table)
            .await
            .with_context(|| format!("table {} of unfinished backup {}", s.name(), b.id))?;
        if now.columns != s.schema.columns {
            bail!(
                "table {} changed since backup {} started (its columns differ); rerun with \
                 --fresh to start a new backup",
                s.name(),
                b.id
            );
        }
    }
    tracing::info!(backup = %b.id, "Resuming the unfinished backup.");
    Ok(Prepared {
        existing,
        abandon,
        specs,
    })
}

/// Records a new backup (its tables and planned chunks) in the state table; `sink` (absent
/// for Kafka) is checked for a directory of the same id.
pub(crate) async fn create_backup(
    plan: &Plan,
    sink: Option<&Sink>,
    state: &dyn StateStore,
    specs: &[TableSpec],
    point: &SnapshotPoint,
    conn: &mut Conn,
) -> Result<String> {
    let m = &plan.manifest;
    // Ids are per second: never reuse one.
    let mut id = layout::new_backup_id();
    let known = state.backups(&m.name)?;
    loop {
        let taken = known.iter().any(|b| b.id == id)
            || match sink {
                Some(s) => {
                    s.exists(&format!("{}/", layout::backup_dir(&m.name, &id)))
                        .await?
                }
                None => false,
            };
        if !taken {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        id = layout::new_backup_id();
    }
    let mut tables = Vec::new();
    let mut chunks = Vec::new();
    for (ord, spec) in specs.iter().enumerate() {
        let rule = plan
            .rules
            .iter()
            .find(|r| r.matches(&spec.schema.schema, &spec.schema.table))
            .ok_or_else(|| anyhow!("no manifest entry for {}", spec.name()))?;
        let chunk_rows = plan.chunk_rows(rule);
        // Computed inside the worker's snapshot, so they match the rows it will read.
        let bounds = source::boundaries(conn, &spec.read(), chunk_rows).await?;
        let n = bounds.len() + 1;
        for i in 0..n {
            chunks.push(ChunkRecord {
                backup_id: id.clone(),
                table: spec.name(),
                chunk_no: i64::try_from(i)?,
                lower_key: (i > 0).then(|| key_json(&bounds[i - 1])),
                upper_key: bounds.get(i).map(|b| key_json(b)),
                status: ChunkStatus::Pending,
                done: None,
            });
        }
        tracing::info!(table = %spec.name(), chunks = n, key = ?spec.key.as_ref().map(|k| &k.columns), "Chunked.");
        tables.push(TableRecord {
            table: spec.name(),
            ord: i64::try_from(ord)?,
            spec: serde_json::to_value(spec)?,
        });
    }
    let record = BackupRecord {
        id: id.clone(),
        name: m.name.clone(),
        manifest_hash: plan.content_hash.clone(),
        status: BackupStatus::Running,
        position: serde_json::to_value(point)?,
        started_at: chrono::Utc::now().to_rfc3339(),
        finished_at: None,
    };
    // The state first: a run killed after this resumes the backup; files come after.
    state.create_backup(&record, &tables, &chunks)?;
    tracing::info!(backup = %id, "Backup started.");
    Ok(id)
}

/// Writes `schema.sql` and `schema.json` of every table (again, on a resumed run: a killed run
/// may not have written them all).
async fn write_schema_files(
    sink: &Sink,
    dir: &str,
    specs: &[TableSpec],
    format: Format,
    recipients: &crate::crypto::Recipients,
) -> Result<()> {
    // Schema files can hold defaults and comments: encrypted like the data when asked.
    let put = |name: String, mut bytes: Vec<u8>| async move {
        bytes.push(b'\n');
        if recipients.is_empty() {
            sink.put(&name, bytes).await
        } else {
            sink.put(&format!("{name}.age"), recipients.encrypt_bytes(&bytes)?)
                .await
        }
    };
    for spec in specs {
        let tdir = format!(
            "{dir}/{}",
            layout::table_dir(&spec.schema.schema, &spec.schema.table)
        );
        if format == Format::Avro {
            let avsc = serde_json::to_vec_pretty(&format::avro::schema_json(&spec.format_table()))?;
            put(format!("{tdir}/schema.avsc"), avsc).await?;
        }
        let mut sql = spec.schema.create_sql.clone().into_bytes();
        sql.push(b';');
        put(format!("{tdir}/schema.sql"), sql).await?;
        let schema_file = SchemaFile {
            schema: spec.schema.clone(),
            selected_columns: spec.columns.clone(),
            chunk_key: spec.key.clone(),
        };
        put(
            format!("{tdir}/schema.json"),
            serde_json::to_vec_pretty(&schema_file)?,
        )
        .await?;
    }
    Ok(())
}

async fn worker_loop(sh: &Shared, mut w: source::Worker) -> Result<()> {
    let point = serde_json::to_value(ChunkPoint {
        run: sh.run.clone(),
        lock: sh.lock,
        position: w.point.clone(),
    })?;
    loop {
        if sh.cancel.is_cancelled() {
            return Err(Interrupted.into());
        }
        let job = {
            let mut q = sh.jobs.lock().map_err(|_| anyhow!("job queue poisoned"))?;
            q.pop_front()
        };
        let Some(job) = job else {
            break;
        };
        let spec = &sh.specs[job.table];
        let mut done = read_chunk(sh, &mut w.conn, &job)
            .await
            .with_context(|| format!("chunk {} of {}", job.chunk_no, spec.name()))?;
        done.point = point.clone();
        sh.state
            .chunk_done(&sh.backup_id, &spec.name(), job.chunk_no, &done)
            .with_context(|| {
                format!(
                    "cannot record chunk {} of {} in the state file {:?}",
                    job.chunk_no,
                    spec.name(),
                    sh.plan.state
                )
            })?;
        tracing::debug!(table = %spec.name(), chunk = job.chunk_no, rows = done.rows, bytes = done.bytes, "Chunk written.");
        let left = {
            let mut r = sh
                .remaining
                .lock()
                .map_err(|_| anyhow!("counter poisoned"))?;
            r[job.table] = r[job.table].saturating_sub(1);
            r[job.table]
        };
        if left == 0 {
            sh.progress.table_done(job.table);
        }
    }
    // End the snapshot transaction.
    w.conn.query_drop("COMMIT").await.ok();
    w.conn.disconnect().await.ok();
    Ok(())
}

struct Encoded {
    rows: u64,
    bytes: u64,
    sha256: String,
    first_key: Option<Vec<Value>>,
    last_key: Option<Vec<Value>>,
    fingerprint: u64,
}

/// Counts and hashes what it is given and hands it on in large buffers.
pub(crate) struct HashSink {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
    sha: Sha256,
    bytes: u64,
}

impl HashSink {
    /// A sink handing buffers to `tx`.
    pub(crate) fn new(tx: mpsc::Sender<Vec<u8>>) -> HashSink {
        HashSink {
            tx,
            buf: Vec::with_capacity(OUT_BYTES),
            sha: Sha256::new(),
            bytes: 0,
        }
    }

    /// Bytes written and their sha256 (hex).
    pub(crate) fn summary(self) -> (u64, String) {
        (self.bytes, hex::encode(self.sha.finalize()))
    }

    /// Hands on what is buffered.
    pub(crate) fn ship(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(OUT_BYTES));
        self.tx
            .blocking_send(full)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "file writer stopped"))
    }
}

impl Write for HashSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.sha.update(data);
        self.bytes += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= OUT_BYTES {
            self.ship()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The tail of the pipeline: [zstd →] [age →] hashing sink.
pub(crate) enum Out {
    Zstd(zstd::stream::write::Encoder<'static, HashSink>),
    ZstdAge(zstd::stream::write::Encoder<'static, age::stream::StreamWriter<HashSink>>),
    Age(age::stream::StreamWriter<HashSink>),
    Plain(HashSink),
}

impl Out {
    /// The chain for a compression level (None = no compression) and recipients.
    pub(crate) fn new(
        sink: HashSink,
        zstd_level: Option<i32>,
        recipients: &crate::crypto::Recipients,
    ) -> Result<Out> {
        Ok(match (zstd_level, recipients.is_empty()) {
            (Some(level), true) => Out::Zstd(zstd::stream::write::Encoder::new(sink, level)?),
            (Some(level), false) => Out::ZstdAge(zstd::stream::write::Encoder::new(
                recipients.encrypt(sink)?,
                level,
            )?),
            (None, false) => Out::Age(recipients.encrypt(sink)?),
            (None, true) => Out::Plain(sink),
        })
    }
    /// Where plain bytes go.
    pub(crate) fn writer(&mut self) -> &mut dyn Write {
        match self {
            Out::Zstd(e) => e,
            Out::ZstdAge(e) => e,
            Out::Age(a) => a,
            Out::Plain(p) => p,
        }
    }
    /// Ends every layer; the sink has everything but its last buffer shipped.
    pub(crate) fn finish(self) -> std::io::Result<HashSink> {
        match self {
            Out::Zstd(e) => e.finish(),
            Out::ZstdAge(e) => e.finish()?.finish(),
            Out::Age(a) => a.finish(),
            Out::Plain(p) => Ok(p),
        }
    }
}

/// Encodes batches of rows in the manifest's format through zstd; runs on a blocking thread.
fn encode_chunk(
    mut rx: mpsc::Receiver<Vec<Vec<Value>>>,
    tx: mpsc::Sender<Vec<u8>>,
    mut encoder: Box<dyn format::RowEncoder>,
    key_pos: Vec<(usize, Kind, u32)>,
    zstd_level: Option<i32>,
    recipients: crate::crypto::Recipients,
) -> Result<Encoded> {
    let sink = HashSink {
        tx,
        buf: Vec::with_capacity(OUT_BYTES),
        sha: Sha256::new(),
        bytes: 0,
    };
    let mut out = Out::new(sink, zstd_level, &recipients)?;
    let mut rows = 0u64;
    let mut fingerprint = 0u64;
    let mut first_key = None;
    let mut last_key = None;
    let mut buf = Vec::with_capacity(BATCH_BYTES + 4096);
    let mut scratch = Vec::new();
    let take_key = |row: &[Value]| -> Vec<Value> {
        key_pos
            .iter()
            .map(|(p, _, _)| row.get(*p).cloned().unwrap_or(Value::NULL))
            .collect()
    };
    while let Some(batch) = rx.blocking_recv() {
        buf.clear();
        encoder.rows(&batch, &mut buf)?;
        if first_key.is_none()
            && let Some(r) = batch.first()
        {
            first_key = Some(take_key(r));
        }
        if let Some(r) = batch.last() {
            last_key = Some(take_key(r));
        }
        rows += batch.len() as u64;
        for r in &batch {
            fingerprint =
                fingerprint.wrapping_add(u64::from(value::row_fingerprint(r, &mut scratch)));
        }
        out.writer().write_all(&buf)?;
    }
    buf.clear();
    encoder.finish(&mut buf)?;
    out.writer().write_all(&buf)?;
    let mut sink = out.finish()?;
    sink.ship()?;
    Ok(Encoded {
        rows,
        bytes: sink.bytes,
        sha256: hex::encode(sink.sha.finalize()),
        first_key,
        last_key,
        fingerprint,
    })
}

fn row_bytes(row: &Row) -> usize {
    (0..row.len())
        .map(|i| match row.as_ref(i) {
            Some(Value::Bytes(b)) => b.len(),
            _ => 8,
        })
        .sum()
}

async fn read_chunk(sh: &Shared, conn: &mut Conn, job: &Job) -> Result<ChunkDone> {
    let spec = &sh.specs[job.table];
    let m = &sh.plan.manifest;
    let rel = format!(
        "{}/{}",
        layout::table_dir(&spec.schema.schema, &spec.schema.table),
        layout::chunk_file(
            job.chunk_no,
            m.destination.format,
            m.destination.compression,
            !sh.plan.recipients.is_empty()
        )
    );
    let path = format!("{}/{rel}", layout::backup_dir(&m.name, &sh.backup_id));
    let q = spec
        .read()
        .chunk_query(job.lower.as_deref(), job.upper.as_deref());
    let mut file = sh.sink.create(&path).await?;

    let (row_tx, row_rx) = mpsc::channel::<Vec<Vec<Value>>>(2);
    let (buf_tx, mut buf_rx) = mpsc::channel::<Vec<u8>>(4);
    let row_encoder = format::encoder(m.destination.format, &spec.format_table(), sh.encode_opts)?;
    let key_pos = spec.key_positions();
    let level = sh.zstd_level;
    let recipients = sh.plan.recipients.clone();
    let encoder = tokio::task::spawn_blocking(move || {
        encode_chunk(row_rx, buf_tx, row_encoder, key_pos, level, recipients)
    });

    let reader = async {
        let mut result = conn
            .exec_iter(q.sql.as_str(), q.params.clone())
            .await
            .with_context(|| format!("query failed: {}", q.sql))?;
        // With a throttle, hand over smaller batches so the pace is smooth (~20 steps/s).
        let batch_rows = match sh.plan.manifest.snapshot.throttle.rows_per_sec {
            0 => BATCH_ROWS,
            r => usize::try_from(r / 20)
                .unwrap_or(BATCH_ROWS)
                .clamp(1, BATCH_ROWS),
        };
        let mut batch = Vec::with_capacity(batch_rows);
        let mut batch_bytes = 0usize;
        let mut last = false;
        while !last {
            let next = tokio::select! {
                biased;
                () = sh.cancel.cancelled() => return Err(anyhow::Error::new(Interrupted)),
                r = result.next() => r.with_context(|| format!("reading {}", spec.name()))?,
            };
            match next {
                Some(row) => {
                    batch_bytes += row_bytes(&row);
                    batch.push(row.unwrap());
                    if batch.len() < batch_rows && batch_bytes < BATCH_BYTES {
                        continue;
                    }
                }
                None => last = true,
            }
            if batch.is_empty() {
                continue;
            }
            let n = batch.len() as u64;
            let bytes = batch_bytes as u64;
            sh.progress.add(job.table, n, bytes);
            let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_rows));
            batch_bytes = 0;
            if row_tx.send(full).await.is_err() {
                // The encoder stopped; its error says why.
                return Ok(());
            }
            tokio::select! {
                biased;
                () = sh.cancel.cancelled() => return Err(anyhow::Error::new(Interrupted)),
                () = sh.throttle.consume(n, bytes) => {}
            }
        }
        drop(row_tx);
        Ok::<(), anyhow::Error>(())
    };
    let writer = async {
        while let Some(b) = buf_rx.recv().await {
            file.write(b).await?;
        }
        Ok::<(), anyhow::Error>(())
    };
    let (read_result, write_result) = tokio::join!(reader, writer);
    let encoded = encoder.await.map_err(|e| anyhow!("encoder panicked: {e}"));
    let outcome = read_result.and(write_result).and(encoded).and_then(|e| e);
    let encoded = match outcome {
        Ok(e) => e,
        Err(e) => {
            file.abort().await;
            return Err(e);
        }
    };
    if sh.cancel.is_cancelled() {
        file.abort().await;
        return Err(Interrupted.into());
    }
    file.commit().await?;
    let kinds: Vec<(Kind, u32)> = spec
        .key_positions()
        .iter()
        .map(|(_, k, f)| (*k, *f))
        .collect();
    Ok(ChunkDone {
        rows: encoded.rows,
        bytes: encoded.bytes,
        sha256: encoded.sha256,
        file: rel,
        first_key: encoded
            .first_key
            .map_or(serde_json::Value::Null, |k| value::human_key(&kinds, &k)),
        last_key: encoded
            .last_key
            .map_or(serde_json::Value::Null, |k| value::human_key(&kinds, &k)),
        point: serde_json::Value::Null,
        fingerprint: Some(encoded.fingerprint),
    })
}

fn build_metadata(
    sh: &Shared,
    record: &BackupRecord,
    first: &SnapshotPoint,
    info: &ServerInfo,
    src: &Source,
    chunks: &[ChunkRecord],
) -> Result<Metadata> {
    let m = &sh.plan.manifest;
    let mut points = Vec::new();
    let mut tables = Vec::new();
    for spec in &sh.specs {
        let mut t = TableMeta {
            schema: spec.schema.schema.clone(),
            table: spec.schema.table.clone(),
            columns: spec.columns.clone(),
            chunk_key: spec.key.clone(),
            where_: spec.where_.clone(),
            rows: 0,
            bytes: 0,
            chunks: Vec::new(),
        };
        for c in chunks.iter().filter(|c| c.table == spec.name()) {
            let d = c
                .done
                .as_ref()
                .ok_or_else(|| anyhow!("chunk {} #{} not done", c.table, c.chunk_no))?;
            let point: ChunkPoint = serde_json::from_value(d.point.clone())
                .context("state table holds an invalid chunk point")?;
            points.push(point.clone());
            t.rows += d.rows;
            t.bytes += d.bytes;
            t.chunks.push(ChunkMeta {
                file: d.file.clone(),
                rows: d.rows,
                bytes: d.bytes,
                sha256: d.sha256.clone(),
                first_key: d.first_key.clone(),
                last_key: d.last_key.clone(),
                lower_bound: c.lower_key.clone().unwrap_or(serde_json::Value::Null),
                upper_bound: c.upper_key.clone().unwrap_or(serde_json::Value::Null),
                source_fingerprint: d.fingerprint,
                point,
            });
        }
        tables.push(t);
    }
    Ok(Metadata {
        format_version: layout::FORMAT_VERSION,
        tool: "storagetapper".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        name: m.name.clone(),
        backup_id: record.id.clone(),
        started_at: record.started_at.clone(),
        finished_at: chrono::Utc::now().to_rfc3339(),
        source: SourceMeta {
            host: src.display.clone(),
            hostname: info.hostname.clone(),
            version: info.version.clone(),
            server_id: info.server_id,
            server_uuid: info.server_uuid.clone(),
        },
        snapshot: SnapshotMeta::from_points(&points, first.lock, first.lock_held_ms),
        format: m.destination.format,
        compression: m.destination.compression,
        compression_level: sh.zstd_level,
        encryption_recipients: Vec::new(),
        tables,
    })
}
