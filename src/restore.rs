//! `restore`: load a backup (any format) into a MySQL/MariaDB server.
//!
//! Tables are created from `schema.sql` (into the URL's database, or each table's original
//! schema), then chunks are loaded in parallel: each chunk file is streamed, decompressed and
//! decoded on a blocking thread and loaded in one transaction per chunk: streamed as
//! `LOAD DATA LOCAL INFILE` text when the target allows it and the table has no BIT or spatial
//! column, else as multi-row INSERTs (no more than the server's `max_allowed_packet`).
//!
//! Invariant (exactly once across kills): a chunk is recorded as loaded in the state only after
//! its transaction committed; a resumed restore first deletes the key range of every chunk not
//! recorded (it may have committed just before the kill), then loads it again.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use globset::Glob;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder, Value};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::crypto::{self, Identities};
use crate::format::{self, ColumnInfo, EncodeOptions, sql::SqlEncoder};
use crate::layout::{self, Metadata, SchemaFile, TableMeta};
use crate::manifest::Plan;
use crate::progress::{self, Progress};
use crate::schema::{Kind, quote_ident, quote_table};
use crate::sink::Sink;
use crate::snapshot::{self, Interrupted};
use crate::source;
use crate::state::{SqliteState, StateStore};
use crate::value;

/// Environment variable holding the target's password.
pub const TARGET_PASSWORD_ENV: &str = "STORAGETAPPER_TARGET_PASSWORD";

/// Options from the command line.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Backup id or `latest`.
    pub backup: String,
    /// `mysql://user@host:port[/database]`.
    pub target: String,
    /// Only tables matching this glob (`schema.table`).
    pub table: Option<String>,
    /// Parallel connections.
    pub threads: Option<usize>,
    /// Drop and recreate non-empty target tables.
    pub replace: bool,
    /// Do not write the restore to the target's binlog.
    pub no_binlog: bool,
    /// Progress display.
    pub progress: progress::Mode,
    /// age identities for encrypted backups.
    pub identities: Identities,
    /// Then apply the backup's changelog up to this position (GTID or `file:pos`).
    pub until: Option<String>,
}

/// What a restore reports.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreOutcome {
    /// The backup restored.
    pub backup_id: String,
    /// Tables restored.
    pub tables: usize,
    /// Rows loaded by this run.
    pub rows_this_run: u64,
    /// Seconds.
    pub seconds: f64,
    /// The changelog phase, with `--until`.
    pub replay: Option<crate::replay::ReplayOutcome>,
    /// Resumed an unfinished restore.
    pub resumed: bool,
}

struct Target {
    opts: Opts,
    database: Option<String>,
    display: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target> {
        let rest = url
            .strip_prefix("mysql://")
            .ok_or_else(|| anyhow!("--target `{url}` is not a mysql:// URL"))?;
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if authority
            .rsplit_once('@')
            .is_some_and(|(u, _)| u.contains(':'))
        {
            bail!("--target holds a password: remove it and set {TARGET_PASSWORD_ENV}");
        }
        let opts = Opts::from_url(url).map_err(|e| anyhow!("invalid --target URL: {e}"))?;
        let database = opts.db_name().map(str::to_string).filter(|d| !d.is_empty());
        let display = format!(
            "{}@{}:{}/{}",
            opts.user().unwrap_or(""),
            opts.ip_or_hostname(),
            opts.tcp_port(),
            database.as_deref().unwrap_or("")
        );
        let password = std::env::var(TARGET_PASSWORD_ENV).ok();
        let opts = OptsBuilder::from_opts(opts)
            .db_name(None::<String>)
            .pass(password)
            .tcp_nodelay(true)
            .into();
        Ok(Target {
            opts,
            database,
            display,
        })
    }

    async fn connect(&self) -> Result<Conn> {
        Conn::new(self.opts.clone())
            .await
            .with_context(|| format!("cannot connect to the target {}", self.display))
    }
}

/// Finds `id` (or the newest complete backup for `latest`) at the destination.
///
/// # Errors
/// When there is no such complete backup.
pub async fn resolve_backup(sink: &Sink, name: &str, wanted: &str) -> Result<(String, Metadata)> {
    let id = if wanted == "latest" {
        let mut dirs = sink.list(name).await?;
        dirs.sort();
        let mut found = None;
        for d in dirs.iter().rev().filter(|d| d.ends_with('/')) {
            if sink.exists(&format!("{d}metadata.json")).await? {
                found = d
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .map(str::to_string);
                break;
            }
        }
        found.ok_or_else(|| anyhow!("no complete backup of `{name}` at {}", sink.display))?
    } else {
        wanted.to_string()
    };
    let path = format!("{}/metadata.json", layout::backup_dir(name, &id));
    if !sink.exists(&path).await? {
        bail!(
            "backup {id} of `{name}` is not complete at {} (no metadata.json)",
            sink.display
        );
    }
    let meta: Metadata = serde_json::from_slice(&sink.get(&path).await?)
        .with_context(|| format!("{path} is not valid metadata"))?;
    Ok((id, meta))
}

/// Reads a small file of a backup whole, decrypting `<path>.age` when the backup is encrypted.
///
/// # Errors
/// When it is missing or cannot be decrypted.
pub async fn read_small(
    sink: &Sink,
    path: &str,
    meta: &Metadata,
    ids: &Identities,
) -> Result<Vec<u8>> {
    if meta.encryption_recipients.is_empty() {
        return sink.get(path).await;
    }
    let name = format!("{path}.age");
    let sealed = sink.get(&name).await?;
    let mut plain = Vec::new();
    ids.decrypt(&sealed[..], &name)?
        .read_to_end(&mut plain)
        .with_context(|| format!("cannot decrypt {name}"))?;
    Ok(plain)
}

/// A table of a backup: its `schema.json` (decrypted when needed) and its metadata entry with
/// the chunk keys restored from `keys.json.age` when the backup is encrypted.
///
/// # Errors
/// When a file is missing, damaged or cannot be decrypted.
pub async fn load_table(
    sink: &Sink,
    dir: &str,
    meta: &Metadata,
    t: &TableMeta,
    ids: &Identities,
) -> Result<(TableMeta, SchemaFile)> {
    let tdir = format!("{dir}/{}", layout::table_dir(&t.schema, &t.table));
    let schema: SchemaFile =
        serde_json::from_slice(&read_small(sink, &format!("{tdir}/schema.json"), meta, ids).await?)
            .with_context(|| format!("{tdir}/schema.json is not valid"))?;
    let mut t = t.clone();
    if !meta.encryption_recipients.is_empty() {
        let name = format!("{tdir}/{}", layout::KEYS_FILE);
        let sealed = sink.get(&name).await?;
        let mut plain = Vec::new();
        ids.decrypt(&sealed[..], &name)?.read_to_end(&mut plain)?;
        let keys: Vec<serde_json::Value> =
            serde_json::from_slice(&plain).with_context(|| format!("{name} is not valid"))?;
        for (c, k) in t.chunks.iter_mut().zip(keys) {
            c.first_key = k["first_key"].clone();
            c.last_key = k["last_key"].clone();
            c.lower_bound = k["lower_bound"].clone();
            c.upper_bound = k["upper_bound"].clone();
        }
    }
    Ok((t, schema))
}

struct TablePlan {
    meta: TableMeta,
    schema: SchemaFile,
    columns: Arc<[ColumnInfo]>,
    /// Written columns that are not generated (the INSERT list).
    pick: Vec<usize>,
    database: String,
}

impl TablePlan {
    fn name(&self) -> String {
        format!("{}.{}", self.meta.schema, self.meta.table)
    }
    fn target_sql(&self) -> String {
        quote_table(&self.database, &self.meta.table)
    }
}

struct Job {
    table: usize,
    chunk_no: i64,
}

struct Shared {
    sink: Sink,
    dir: String,
    format: crate::manifest::Format,
    tables: Vec<TablePlan>,
    jobs: Mutex<VecDeque<Job>>,
    state: Arc<dyn StateStore>,
    restore_id: String,
    cancel: CancellationToken,
    progress: Arc<Progress>,
    max_statement: usize,
    identities: Identities,
    /// The target takes `LOAD DATA LOCAL INFILE` (`@@local_infile`).
    local_infile: bool,
}

/// Runs (or resumes) a restore.
///
/// # Errors
/// Any failure; [`Interrupted`] when cancelled. The restore stays resumable.
pub async fn run(
    plan: &Plan,
    opts: &RestoreOptions,
    cancel: CancellationToken,
) -> Result<RestoreOutcome> {
    let started = Instant::now();
    let name = &plan.manifest.name;
    if opts.until.is_some() && plan.manifest.tail.envelope == crate::manifest::Envelope::Row {
        bail!(
            "--until replays change events with before-images: the manifest's [tail] envelope \
             must be debezium or storagetapper, not row"
        );
    }
    let sink = Sink::connect(&plan.destination).await?;
    let (backup_id, meta) = resolve_backup(&sink, name, &opts.backup).await?;
    let dir = layout::backup_dir(name, &backup_id);
    let filter = opts
        .table
        .as_deref()
        .map(|p| Glob::new(p).map(|g| g.compile_matcher()))
        .transpose()
        .context("--table is not a valid glob")?;
    let target = Target::parse(&opts.target)?;
    let mut tables = Vec::new();
    for t in &meta.tables {
        let full = format!("{}.{}", t.schema, t.table);
        if filter.as_ref().is_some_and(|f| !f.is_match(&full)) {
            continue;
        }
        let (t, schema) = load_table(&sink, &dir, &meta, t, &opts.identities).await?;
        let t = &t;
        let columns = ColumnInfo::list(&schema.schema, &t.columns);
        let pick = t
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| !schema.schema.column(c).is_some_and(|col| col.generated))
            .map(|(i, _)| i)
            .collect();
        tables.push(TablePlan {
            meta: t.clone(),
            columns,
            pick,
            database: target.database.clone().unwrap_or_else(|| t.schema.clone()),
            schema,
        });
    }
    if tables.is_empty() {
        bail!(
            "--table {} matches no table of backup {backup_id} (tables: {})",
            opts.table.as_deref().unwrap_or("*"),
            meta.tables
                .iter()
                .map(|t| format!("{}.{}", t.schema, t.table))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let state: Arc<dyn StateStore> = Arc::new(SqliteState::from_url(&plan.state)?);
    let target_key = format!(
        "{}#{}",
        target.display,
        tables
            .iter()
            .map(TablePlan::name)
            .collect::<Vec<_>>()
            .join(",")
    );
    let existing = state.unfinished_restore(&backup_id, &target_key)?;
    let resumed = existing.is_some();
    let mut coord = target.connect().await?;
    session_setup(&mut coord, false).await?;
    let max_packet: u64 = coord
        .query_first("SELECT @@max_allowed_packet")
        .await?
        .unwrap_or(16 << 20);
    let local_infile: bool = coord
        .query_first::<Option<i64>, _>("SELECT @@local_infile")
        .await
        .ok()
        .flatten()
        .flatten()
        .is_some_and(|v| v == 1);
    if !local_infile {
        tracing::info!(
            "The target refuses LOAD DATA LOCAL INFILE (local_infile=OFF): loading with INSERTs."
        );
    }
    let restore_id = match existing {
        Some(id) => {
            tracing::info!(restore = %id, "Resuming the unfinished restore.");
            id
        }
        None => {
            for t in &tables {
                let create = read_small(
                    &sink,
                    &format!(
                        "{dir}/{}/schema.sql",
                        layout::table_dir(&t.meta.schema, &t.meta.table)
                    ),
                    &meta,
                    &opts.identities,
                )
                .await?;
                prepare_table(
                    &mut coord,
                    t,
                    &String::from_utf8_lossy(&create),
                    opts.replace,
                )
                .await?;
            }
            let id = format!(
                "{backup_id}@{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
            );
            state.create_restore(&id, &backup_id, &target_key)?;
            id
        }
    };
    let done: HashSet<(String, i64)> = state.restored_chunks(&restore_id)?.into_iter().collect();
    let mut jobs = VecDeque::new();
    for (ti, t) in tables.iter().enumerate() {
        for (ci, _) in t.meta.chunks.iter().enumerate() {
            let chunk_no = i64::try_from(ci)?;
            if !done.contains(&(t.name(), chunk_no)) {
                if resumed {
                    // It may have committed just before the kill: clear its key range first
                    // (one at a time, before the parallel load, so they cannot deadlock).
                    clear_chunk(&mut coord, t, ci)
                        .await
                        .with_context(|| format!("clearing chunk {ci} of {}", t.name()))?;
                }
                jobs.push_back(Job {
                    table: ti,
                    chunk_no,
                });
            }
        }
    }
    drop(coord);
    let progress = Progress::new(
        opts.progress,
        &tables
            .iter()
            .map(|t| (t.name(), t.meta.rows))
            .collect::<Vec<_>>(),
    );
    let logger = progress.spawn_logger(std::time::Duration::from_secs(5));
    let threads = opts
        .threads
        .unwrap_or(plan.manifest.snapshot.threads)
        .max(1);
    tracing::info!(backup = %backup_id, tables = tables.len(), chunks = jobs.len(), threads, target = %target.display, "Restoring.");
    let shared = Arc::new(Shared {
        sink,
        dir,
        format: meta.format,
        tables,
        jobs: Mutex::new(jobs),
        state,
        restore_id: restore_id.clone(),
        cancel: cancel.clone(),
        progress: Arc::clone(&progress),
        identities: opts.identities.clone(),
        max_statement: usize::try_from(
            max_packet.saturating_sub(64 << 10).clamp(64 << 10, 1 << 20),
        )?,
        local_infile,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..threads {
        let mut conn = target.connect().await?;
        session_setup(&mut conn, opts.no_binlog).await?;
        let sh = Arc::clone(&shared);
        tasks.spawn(async move {
            let r = worker(&sh, conn).await;
            if r.is_err() {
                sh.cancel.cancel();
            }
            r
        });
    }
    let outcome = snapshot::join_workers(&mut tasks).await;
    if let Some(l) = logger {
        l.abort();
    }
    progress.finish();
    outcome?;
    shared.state.finish_restore(&restore_id)?;
    let replay = match &opts.until {
        Some(until) => {
            let mut conn = target.connect().await?;
            session_setup(&mut conn, opts.no_binlog).await?;
            let mapping = crate::replay::Mapping {
                tables: shared
                    .tables
                    .iter()
                    .map(|t| {
                        (
                            (t.meta.schema.clone(), t.meta.table.clone()),
                            t.database.clone(),
                        )
                    })
                    .collect(),
            };
            let r = crate::replay::apply(
                &shared.sink,
                &shared.dir,
                &meta,
                &opts.identities,
                &mut conn,
                &mapping,
                until,
            )
            .await?;
            tracing::info!(
                events = r.events,
                transactions = r.transactions,
                reached = %r.reached,
                "Changelog applied."
            );
            Some(r)
        }
        None => None,
    };
    Ok(RestoreOutcome {
        replay,
        backup_id,
        tables: shared.tables.len(),
        rows_this_run: progress.totals().0,
        seconds: started.elapsed().as_secs_f64(),
        resumed,
    })
}

async fn session_setup(conn: &mut Conn, no_binlog: bool) -> Result<()> {
    conn.query_drop(
        "SET NAMES utf8mb4, time_zone = '+00:00', sql_mode = 'NO_AUTO_VALUE_ON_ZERO', \
         unique_checks = 0, foreign_key_checks = 0",
    )
    .await
    .context("cannot set up the target session")?;
    if no_binlog {
        conn.query_drop("SET sql_log_bin = 0").await.context(
            "--no-binlog: SET sql_log_bin = 0 was refused (needs SUPER or BINLOG ADMIN)",
        )?;
    }
    Ok(())
}

async fn prepare_table(
    conn: &mut Conn,
    t: &TablePlan,
    create_sql: &str,
    replace: bool,
) -> Result<()> {
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS {}",
        quote_ident(&t.database)
    ))
    .await
    .with_context(|| format!("cannot create database {}", t.database))?;
    let exists: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (&t.database, &t.meta.table),
        )
        .await?;
    if exists.unwrap_or(0) > 0 {
        let any: Option<u8> = conn
            .query_first(format!("SELECT 1 FROM {} LIMIT 1", t.target_sql()))
            .await?;
        if any.is_some() && !replace {
            bail!(
                "target table {}.{} is not empty: use --replace to drop and recreate it",
                t.database,
                t.meta.table
            );
        }
        conn.query_drop(format!("DROP TABLE {}", t.target_sql()))
            .await?;
    }
    conn.query_drop(format!("USE {}", quote_ident(&t.database)))
        .await?;
    conn.query_drop(create_sql.trim_end().trim_end_matches(';'))
        .await
        .with_context(|| {
            format!(
                "cannot create {}.{} from schema.sql",
                t.database, t.meta.table
            )
        })?;
    tracing::debug!(table = %t.name(), database = %t.database, "Table created.");
    Ok(())
}

async fn worker(sh: &Shared, mut conn: Conn) -> Result<()> {
    loop {
        if sh.cancel.is_cancelled() {
            return Err(Interrupted.into());
        }
        let job = sh
            .jobs
            .lock()
            .map_err(|_| anyhow!("job queue poisoned"))?
            .pop_front();
        let Some(job) = job else { break };
        let t = &sh.tables[job.table];
        let mut attempt = 0;
        let rows = loop {
            attempt += 1;
            match load_chunk(sh, &mut conn, &job).await {
                Ok(rows) => break rows,
                // Parallel loads into one table can deadlock in InnoDB; the chunk's
                // transaction was rolled back, so it is simply loaded again.
                Err(e) if attempt < 5 && is_retryable(&e) => {
                    tracing::warn!(table = %t.name(), chunk = job.chunk_no, attempt, error = %format!("{e:#}"), "Retrying chunk.");
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "restoring chunk {} of {}",
                        job.chunk_no,
                        t.name()
                    )));
                }
            }
        };
        sh.state
            .restore_chunk_done(&sh.restore_id, &t.name(), job.chunk_no, rows)
            .with_context(|| {
                format!(
                    "cannot record restored chunk {} of {} in the state file",
                    job.chunk_no,
                    t.name()
                )
            })?;
    }
    conn.disconnect().await.ok();
    Ok(())
}

/// A chunk to load: its table, its entry in `metadata.json`, its path and the opened file.
struct ChunkInput<'a> {
    t: &'a TablePlan,
    chunk: &'a layout::ChunkMeta,
    path: String,
    reader: crate::sink::ChannelReader,
    table: format::TableInfo,
}

async fn open_chunk<'a>(sh: &'a Shared, job: &Job) -> Result<ChunkInput<'a>> {
    let t = &sh.tables[job.table];
    let chunk = t
        .meta
        .chunks
        .get(usize::try_from(job.chunk_no)?)
        .ok_or_else(|| anyhow!("{}: no chunk {}", t.name(), job.chunk_no))?;
    let path = format!("{}/{}", sh.dir, chunk.file);
    let reader = sh.sink.open_read(&path).await?;
    let table = format::TableInfo {
        schema: t.meta.schema.clone(),
        table: t.meta.table.clone(),
        columns: Arc::clone(&t.columns),
    };
    Ok(ChunkInput {
        t,
        chunk,
        path,
        reader,
        table,
    })
}

/// Loads one chunk with `LOAD DATA LOCAL INFILE` (about half the server's work of multi-row
/// INSERTs): the file is decoded on a blocking thread into LOAD DATA's text format and streamed
/// to the server, in one transaction. Warnings the server reports are logged.
async fn load_chunk_infile(sh: &Shared, conn: &mut Conn, job: &Job) -> Result<u64> {
    let ChunkInput {
        t,
        chunk,
        path,
        reader,
        table,
    } = open_chunk(sh, job).await?;
    let ids = sh.identities.clone();
    let format = sh.format;
    let ncols = t.columns.len();
    let all: Vec<usize> = (0..ncols).collect();
    let mut enc = SqlEncoder::for_insert(
        &t.target_sql(),
        &t.columns,
        all,
        EncodeOptions {
            max_statement_bytes: sh.max_statement,
            inner_zstd: None,
        },
    );
    let pick = t.pick.clone();
    let columns = Arc::clone(&t.columns);
    let cancel = sh.cancel.clone();
    let (tx, rx) = mpsc::channel::<bytes::Bytes>(4);
    let file = path.clone();
    let decoder = tokio::task::spawn_blocking(move || -> Result<u64> {
        let input = crypto::plain_reader(reader, &file, &ids)?;
        let mut out: Vec<u8> = Vec::with_capacity((1 << 20) + (64 << 10));
        let mut rows = 0u64;
        let send = |out: &mut Vec<u8>| -> Result<()> {
            if cancel.is_cancelled() {
                return Err(anyhow::Error::new(Interrupted));
            }
            let block = std::mem::replace(out, Vec::with_capacity((1 << 20) + (64 << 10)));
            tx.blocking_send(bytes::Bytes::from(block))
                .map_err(|_| anyhow!("the target stopped reading"))
        };
        if format == crate::manifest::Format::Sql {
            let mut input = BufReader::with_capacity(1 << 20, input);
            let mut line = Vec::with_capacity(4096);
            loop {
                line.clear();
                if input.read_until(b'\n', &mut line)? == 0 {
                    break;
                }
                if !line.starts_with(b"(") {
                    continue;
                }
                if !(line.ends_with(b"),\n") || line.ends_with(b");\n")) {
                    bail!("reading {file}: the file is cut off");
                }
                let n = format::sql::tuple_to_tsv(&line, &columns, &pick, &mut out)
                    .with_context(|| format!("reading {file}, row {}", rows + 1))?;
                if n != ncols {
                    bail!("reading {file}: a row has {n} values, the table {ncols} columns");
                }
                rows += 1;
                if out.len() >= 1 << 20 {
                    send(&mut out)?;
                }
            }
        } else {
            let mut dec = format::decoder(
                format,
                &table,
                Box::new(BufReader::with_capacity(1 << 20, input)),
            )?;
            while let Some(batch) = dec
                .next_batch(2000)
                .with_context(|| format!("decoding {file}"))?
            {
                for r in &batch {
                    let tuple = enc.row_tuple(r)?;
                    format::sql::tuple_to_tsv(tuple, &columns, &pick, &mut out)?;
                }
                rows += batch.len() as u64;
                if out.len() >= 1 << 20 {
                    send(&mut out)?;
                }
            }
        }
        if !out.is_empty() {
            send(&mut out)?;
        }
        Ok(rows)
    });
    conn.query_drop(format!("USE {}", quote_ident(&t.database)))
        .await
        .with_context(|| format!("USE {}", t.database))?;
    conn.query_drop("START TRANSACTION").await?;
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    conn.set_infile_handler(async move { Ok(futures::StreamExt::boxed(stream)) });
    let cols = t
        .pick
        .iter()
        .map(|&i| quote_ident(&t.columns[i].name))
        .collect::<Vec<_>>()
        .join(",");
    let load = conn
        .query_drop(format!(
            "LOAD DATA LOCAL INFILE 'chunk' INTO TABLE {} CHARACTER SET utf8mb4 \
             FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({cols})",
            t.target_sql()
        ))
        .await;
    let loaded = conn.affected_rows();
    let warnings = conn.get_warnings();
    let decoded = decoder
        .await
        .map_err(|e| anyhow!("decoder panicked: {e}"))?;
    let result: Result<u64> = (|| {
        let decoded = decoded?;
        load.map_err(|e| {
            anyhow::Error::new(e).context(format!("LOAD DATA into {} failed", t.target_sql()))
        })?;
        if decoded != chunk.rows || loaded != chunk.rows {
            bail!(
                "{path}: metadata.json says {} rows, the file holds {decoded}, the server loaded {loaded}",
                chunk.rows
            );
        }
        Ok(loaded)
    })();
    if let Err(e) = result {
        conn.query_drop("ROLLBACK").await.ok();
        return Err(e);
    }
    if warnings > 0 {
        // As with INSERTs in this session (e.g. a generated column's expression overflowing,
        // as it does on the source): reported, not fatal; the rows are the file's.
        let first: Vec<(String, u32, String)> = conn
            .query("SHOW WARNINGS LIMIT 3")
            .await
            .unwrap_or_default();
        tracing::warn!(
            chunk = %path,
            warnings,
            first = %first
                .iter()
                .map(|(l, c, m)| format!("{l} {c}: {m}"))
                .collect::<Vec<_>>()
                .join("; "),
            "The server reported warnings while loading the chunk."
        );
    }
    conn.query_drop("COMMIT").await.context("COMMIT")?;
    sh.progress.add(job.table, loaded, 0);
    Ok(loaded)
}

/// Splits a SQL chunk file (the layout `format::sql` writes) into its INSERT statements and
/// sends them in groups with their row counts; returns the rows seen.
fn sql_statements(
    mut input: impl std::io::BufRead,
    tx: &mpsc::Sender<(u64, Vec<Vec<u8>>)>,
) -> Result<u64> {
    let mut line = Vec::with_capacity(4096);
    let mut stmt: Vec<u8> = Vec::new();
    let (mut rows, mut in_stmt) = (0u64, 0u64);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.starts_with(b"INSERT INTO ") {
            stmt.clear();
            stmt.extend_from_slice(&line);
            in_stmt = 0;
        } else if line.starts_with(b"(") {
            if stmt.is_empty() {
                bail!("row outside an INSERT statement");
            }
            in_stmt += 1;
            if line.ends_with(b");\n") {
                stmt.extend_from_slice(&line[..line.len() - 2]);
                rows += in_stmt;
                if tx
                    .blocking_send((in_stmt, vec![std::mem::take(&mut stmt)]))
                    .is_err()
                {
                    return Ok(rows);
                }
            } else if line.ends_with(b"),\n") {
                stmt.extend_from_slice(&line);
            } else {
                bail!("the file is cut off");
            }
        }
        // Header lines (session settings) are covered by the restore session itself.
    }
    if !stmt.is_empty() {
        bail!("the file ends inside an INSERT statement (cut off)");
    }
    Ok(rows)
}

/// Deadlock or lock wait timeout: the transaction was rolled back and may be retried.
fn is_retryable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<mysql_async::Error>(),
            Some(mysql_async::Error::Server(s)) if s.code == 1213 || s.code == 1205
        )
    })
}

/// Deletes the rows of a chunk's key range (a resumed chunk may have been committed).
async fn clear_chunk(conn: &mut Conn, t: &TablePlan, chunk_no: usize) -> Result<()> {
    let c = &t.meta.chunks[chunk_no];
    let Some(key) = &t.meta.chunk_key else {
        // One chunk holds the whole table.
        conn.query_drop(format!("DELETE FROM {}", t.target_sql()))
            .await?;
        return Ok(());
    };
    let (Some(first), Some(last)) = (c.first_key.as_array(), c.last_key.as_array()) else {
        return Ok(()); // empty chunk
    };
    let values = |keys: &[serde_json::Value]| -> Result<Vec<Value>> {
        key.columns
            .iter()
            .zip(keys)
            .map(|(name, k)| {
                let col = t
                    .schema
                    .schema
                    .column(name)
                    .ok_or_else(|| anyhow!("key column {name} missing from schema.json"))?;
                value::from_json(col.kind, &k.to_string()).map_err(|e| anyhow!("key {name}: {e}"))
            })
            .collect()
    };
    let (lo_sql, lo_order) = source::bound_condition_with(&key.columns, true, true);
    let (hi_sql, hi_order) = source::bound_condition_with(&key.columns, false, true);
    let lo = values(first)?;
    let hi = values(last)?;
    let mut params: Vec<Value> = lo_order.iter().map(|&i| lo[i].clone()).collect();
    params.extend(hi_order.iter().map(|&i| hi[i].clone()));
    conn.exec_drop(
        format!("DELETE FROM {} WHERE {lo_sql} AND {hi_sql}", t.target_sql()),
        params,
    )
    .await?;
    Ok(())
}

async fn load_chunk(sh: &Shared, conn: &mut Conn, job: &Job) -> Result<u64> {
    let t = &sh.tables[job.table];
    // BIT and spatial values have no text form LOAD DATA converts back exactly.
    let infile = sh.local_infile
        && t.pick
            .iter()
            .all(|&i| !matches!(t.columns[i].kind, Kind::Bit | Kind::Geometry));
    if infile {
        return load_chunk_infile(sh, conn, job).await;
    }
    let ChunkInput {
        t: _,
        chunk,
        path,
        reader,
        table,
    } = open_chunk(sh, job).await?;
    let ids = sh.identities.clone();
    let format = sh.format;
    let mut enc = SqlEncoder::for_insert(
        &t.target_sql(),
        &t.columns,
        t.pick.clone(),
        EncodeOptions {
            max_statement_bytes: sh.max_statement,
            inner_zstd: None,
        },
    );
    let (tx, mut rx) = mpsc::channel::<(u64, Vec<Vec<u8>>)>(4);
    let file = path.clone();
    // SQL chunks already hold INSERTs for this table: send them as they are (no decode and
    // re-encode), unless generated columns must be left out.
    let passthrough = format == crate::manifest::Format::Sql && t.pick.len() == t.columns.len();
    let decoder = tokio::task::spawn_blocking(move || -> Result<u64> {
        let input = crypto::plain_reader(reader, &file, &ids)?;
        if passthrough {
            return sql_statements(BufReader::with_capacity(1 << 20, input), &tx)
                .with_context(|| format!("reading {file}"));
        }
        let mut dec = format::decoder(
            format,
            &table,
            Box::new(BufReader::with_capacity(1 << 20, input)),
        )?;
        let mut rows = 0u64;
        while let Some(batch) = dec
            .next_batch(2000)
            .with_context(|| format!("decoding {file}"))?
        {
            rows += batch.len() as u64;
            let stmts = enc.statements(&batch)?;
            if tx.blocking_send((batch.len() as u64, stmts)).is_err() {
                break;
            }
        }
        Ok(rows)
    });
    // Passed-through statements name the table without its schema.
    conn.query_drop(format!("USE {}", quote_ident(&t.database)))
        .await
        .with_context(|| format!("USE {}", t.database))?;
    conn.query_drop("START TRANSACTION").await?;
    let mut loaded = 0u64;
    let mut exec_err = None;
    while let Some((n, stmts)) = rx.recv().await {
        if sh.cancel.is_cancelled() {
            exec_err = Some(anyhow::Error::new(Interrupted));
            break;
        }
        for s in stmts {
            if let Err(e) = conn.query_drop(s).await {
                exec_err = Some(
                    anyhow::Error::new(e).context(format!("INSERT into {} failed", t.target_sql())),
                );
                break;
            }
        }
        if exec_err.is_some() {
            break;
        }
        loaded += n;
        sh.progress.add(job.table, n, 0);
    }
    drop(rx);
    let decoded = decoder
        .await
        .map_err(|e| anyhow!("decoder panicked: {e}"))?;
    if let Some(e) = exec_err {
        conn.query_drop("ROLLBACK").await.ok();
        return Err(e);
    }
    let decoded = match decoded {
        Ok(n) => n,
        Err(e) => {
            conn.query_drop("ROLLBACK").await.ok();
            return Err(e);
        }
    };
    if decoded != chunk.rows || loaded != chunk.rows {
        conn.query_drop("ROLLBACK").await.ok();
        bail!(
            "{path}: metadata.json says {} rows, the file holds {decoded}",
            chunk.rows
        );
    }
    conn.query_drop("COMMIT").await.context("COMMIT")?;
    Ok(loaded)
}
