//! The MySQL/MariaDB source: connections, server checks, table resolution, schema capture, the
//! consistent point shared by all workers, chunk boundaries and the exact chunk queries.
//!
//! Invariants: chunk boundaries are computed by the server (so collations are right) and key
//! bounds are always bound as statement parameters, never pasted into SQL; the user's `where`
//! is kept intact inside parentheses.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder, Value};
use serde::{Deserialize, Serialize};

use crate::manifest::{Secret, TableConfig};
use crate::schema::{ChunkKey, Column, Index, Kind, TableSchema, quote_ident, quote_table};

/// Schemas never matched by a glob (only by a literal name).
pub const SYSTEM_SCHEMAS: &[&str] = &["mysql", "information_schema", "performance_schema", "sys"];

/// Connection settings for the source; the password never leaves this struct.
#[derive(Clone)]
pub struct Source {
    opts: Opts,
    /// `host:port` for messages.
    pub display: String,
}

impl Source {
    /// Builds connection options from a `mysql://` URL (without password) and the password.
    ///
    /// # Errors
    /// When the URL cannot be parsed.
    pub fn new(url: &str, password: Option<&Secret>) -> Result<Source> {
        let opts = Opts::from_url(url).map_err(|e| anyhow!("invalid source URL `{url}`: {e}"))?;
        let display = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
        let builder = OptsBuilder::from_opts(opts)
            .pass(password.map(|p| p.expose().to_string()))
            .init(vec![
                "SET SESSION time_zone = '+00:00'".to_string(),
                "SET NAMES utf8mb4".to_string(),
                "SET SESSION net_write_timeout = 3600".to_string(),
                "SET SESSION net_read_timeout = 3600".to_string(),
            ])
            .stmt_cache_size(64)
            .tcp_nodelay(true);
        Ok(Source {
            opts: builder.into(),
            display,
        })
    }

    /// Opens one connection.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses the login (the message never holds the
    /// password).
    pub async fn connect(&self) -> Result<Conn> {
        Conn::new(self.opts.clone())
            .await
            .with_context(|| format!("cannot connect to the source at {}", self.display))
    }
}

/// What the server says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerInfo {
    /// `@@version`.
    pub version: String,
    /// MariaDB rather than MySQL.
    pub mariadb: bool,
    /// `@@server_id`.
    pub server_id: u64,
    /// `@@server_uuid` (MySQL) when there is one.
    pub server_uuid: Option<String>,
    /// `@@hostname`.
    pub hostname: String,
    /// `@@log_bin`.
    pub log_bin: bool,
    /// `@@binlog_format`.
    pub binlog_format: String,
    /// `@@binlog_row_image`.
    pub binlog_row_image: String,
}

/// Reads [`ServerInfo`].
///
/// # Errors
/// When a query fails.
pub async fn server_info(conn: &mut Conn) -> Result<ServerInfo> {
    let row: Option<(String, u64, String, i64, String, String)> = conn
        .query_first(
            "SELECT @@version, @@server_id, @@hostname, @@log_bin, @@binlog_format, \
             @@binlog_row_image",
        )
        .await
        .context("cannot read server variables")?;
    let (version, server_id, hostname, log_bin, binlog_format, binlog_row_image) =
        row.ok_or_else(|| anyhow!("server variables: empty answer"))?;
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    let server_uuid = if mariadb {
        None
    } else {
        conn.query_first::<String, _>("SELECT @@server_uuid")
            .await
            .ok()
            .flatten()
    };
    Ok(ServerInfo {
        version,
        mariadb,
        server_id,
        server_uuid,
        hostname,
        log_bin: log_bin != 0,
        binlog_format,
        binlog_row_image,
    })
}

/// One line of the source checks shown by `plan`.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Passed.
    pub ok: bool,
    /// Detail.
    pub detail: String,
}

/// Source checks: version, binlog, format, privileges.
pub async fn checks(conn: &mut Conn, info: &ServerInfo) -> Vec<Check> {
    let mut out = vec![
        Check {
            name: "version".into(),
            ok: true,
            detail: info.version.clone(),
        },
        Check {
            name: "binlog enabled (log_bin)".into(),
            ok: info.log_bin,
            detail: if info.log_bin {
                "ON".into()
            } else {
                "OFF: the backup will have no binlog position".into()
            },
        },
        Check {
            name: "binlog_format = ROW".into(),
            ok: info.binlog_format.eq_ignore_ascii_case("ROW"),
            detail: info.binlog_format.clone(),
        },
        Check {
            name: "binlog_row_image = FULL".into(),
            ok: info.binlog_row_image.eq_ignore_ascii_case("FULL"),
            detail: info.binlog_row_image.clone(),
        },
    ];
    let grants: Vec<String> = conn.query("SHOW GRANTS").await.unwrap_or_default();
    let all = grants.join("\n").to_ascii_uppercase();
    let has = |p: &str| all.contains("ALL PRIVILEGES") || all.contains(p);
    for (privilege, why) in [
        ("SELECT", "read tables"),
        (
            "RELOAD",
            "FLUSH TABLES WITH READ LOCK (else LOCK TABLES is used)",
        ),
        ("LOCK TABLES", "per-table lock fallback"),
    ] {
        out.push(Check {
            name: format!("privilege {privilege}"),
            ok: has(privilege),
            detail: why.into(),
        });
    }
    let binlog_priv = has("REPLICATION CLIENT") || has("BINLOG MONITOR") || has("SUPER");
    out.push(Check {
        name: "privilege REPLICATION CLIENT / BINLOG MONITOR".into(),
        ok: binlog_priv,
        detail: "read the binlog position".into(),
    });
    out
}

/// A base table known to the server.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Schema.
    pub schema: String,
    /// Name.
    pub table: String,
    /// Estimated rows (`information_schema.TABLES.TABLE_ROWS`).
    pub est_rows: u64,
    /// Estimated data bytes.
    pub est_bytes: u64,
}

/// All base tables of the server.
///
/// # Errors
/// When the query fails.
pub async fn list_tables(conn: &mut Conn) -> Result<Vec<TableInfo>> {
    let rows: Vec<(String, String, u64, u64)> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COALESCE(TABLE_ROWS, 0), COALESCE(DATA_LENGTH, 0) \
             FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' \
             ORDER BY TABLE_SCHEMA, TABLE_NAME",
        )
        .await
        .context("cannot list tables")?;
    Ok(rows
        .into_iter()
        .map(|(schema, table, est_rows, est_bytes)| TableInfo {
            schema,
            table,
            est_rows,
            est_bytes,
        })
        .collect())
}

/// Captures a table's columns, indexes and `SHOW CREATE TABLE`.
///
/// # Errors
/// When the table is gone or a query fails.
pub async fn capture_schema(conn: &mut Conn, schema: &str, table: &str) -> Result<TableSchema> {
    let name = format!("{schema}.{table}");
    type ColRow = (
        String,
        String,
        String,
        String,
        String,
        Option<String>,
        u32,
        String,
    );
    let cols: Vec<ColRow> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY, \
             CHARACTER_SET_NAME, COALESCE(DATETIME_PRECISION, 0), EXTRA \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
            (schema, table),
        )
        .await
        .with_context(|| format!("cannot read the columns of {name}"))?;
    if cols.is_empty() {
        bail!("table {name} does not exist or has no columns");
    }
    // MariaDB's JSON is LONGTEXT with a `json_valid(col)` check; MySQL has no TABLE_NAME here.
    let checks: Vec<String> = conn
        .exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
            (schema, table),
        )
        .await
        .unwrap_or_default();
    let json_cols: Vec<String> = checks
        .iter()
        .filter_map(|c| {
            let c = c.trim();
            let inner = c.strip_prefix("json_valid(")?.strip_suffix(')')?;
            Some(inner.trim_matches('`').replace("``", "`"))
        })
        .collect();
    let columns = cols
        .into_iter()
        .map(
            |(name, data_type, column_type, nullable, key, charset, fsp, extra)| {
                let is_json = json_cols.iter().any(|j| j.eq_ignore_ascii_case(&name));
                Column {
                    kind: Kind::from_info(&data_type, &column_type, is_json),
                    generated: extra.to_ascii_uppercase().contains("GENERATED"),
                    name,
                    data_type,
                    column_type,
                    nullable: nullable == "YES",
                    key,
                    charset,
                    fsp,
                }
            },
        )
        .collect::<Vec<_>>();

    let stats: Vec<(String, i64, String, String)> = conn
        .exec(
            "SELECT INDEX_NAME, NON_UNIQUE, COLUMN_NAME, NULLABLE FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY INDEX_NAME = 'PRIMARY' DESC, \
             INDEX_NAME, SEQ_IN_INDEX",
            (schema, table),
        )
        .await
        .with_context(|| format!("cannot read the indexes of {name}"))?;
    let mut indexes: Vec<Index> = Vec::new();
    for (iname, non_unique, col, nullable) in stats {
        let nullable = nullable == "YES";
        match indexes.iter_mut().find(|i| i.name == iname) {
            Some(i) => {
                i.columns.push(col);
                i.nullable |= nullable;
            }
            None => indexes.push(Index {
                name: iname,
                unique: non_unique == 0,
                columns: vec![col],
                nullable,
            }),
        }
    }
    let primary_key = indexes
        .iter()
        .find(|i| i.name == "PRIMARY")
        .map(|i| i.columns.clone())
        .unwrap_or_default();
    let create: Option<(String, String)> = conn
        .query_first(format!("SHOW CREATE TABLE {}", quote_table(schema, table)))
        .await
        .with_context(|| format!("SHOW CREATE TABLE {name}"))?;
    let create_sql = create.map(|(_, sql)| sql).unwrap_or_default();
    Ok(TableSchema {
        schema: schema.to_string(),
        table: table.to_string(),
        columns,
        indexes,
        primary_key,
        create_sql,
    })
}

/// The columns a table entry selects, as indices into `schema.columns`.
///
/// # Errors
/// Naming a column that does not exist.
pub fn select_columns(schema: &TableSchema, cfg: &TableConfig) -> Result<Vec<usize>, String> {
    let check = |names: &[String]| -> Result<(), String> {
        for n in names {
            if schema.column(n).is_none() {
                return Err(format!(
                    "column `{n}` does not exist in {} (columns: {})",
                    schema.full_name(),
                    schema
                        .columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        Ok(())
    };
    if let Some(cols) = &cfg.columns {
        check(cols)?;
        return Ok(cols
            .iter()
            .filter_map(|n| {
                schema
                    .columns
                    .iter()
                    .position(|c| c.name.eq_ignore_ascii_case(n))
            })
            .collect());
    }
    let excluded = cfg.exclude_columns.clone().unwrap_or_default();
    check(&excluded)?;
    let out: Vec<usize> = (0..schema.columns.len())
        .filter(|&i| {
            !excluded
                .iter()
                .any(|e| e.eq_ignore_ascii_case(&schema.columns[i].name))
        })
        .collect();
    if out.is_empty() {
        return Err(format!(
            "every column of {} is excluded",
            schema.full_name()
        ));
    }
    Ok(out)
}

/// Picks the chunk key: the manifest's `index`, else PRIMARY, else the first unique index
/// without nullable columns; `None` means the table is read as one chunk.
///
/// # Errors
/// When the named index does not exist or allows NULL (rows with NULL keys would be missed).
pub fn choose_chunk_key(
    schema: &TableSchema,
    index: Option<&str>,
) -> Result<Option<ChunkKey>, String> {
    let pick = |i: &Index| ChunkKey {
        index: i.name.clone(),
        columns: i.columns.clone(),
        unique: i.unique,
    };
    if let Some(name) = index {
        let i = schema.index(name).ok_or_else(|| {
            format!(
                "index `{name}` does not exist on {} (indexes: {})",
                schema.full_name(),
                if schema.indexes.is_empty() {
                    "none".to_string()
                } else {
                    schema
                        .indexes
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )
        })?;
        if i.nullable {
            return Err(format!(
                "index `{name}` of {} has a nullable column: rows with NULL keys could not be \
                 chunked; pick an index on NOT NULL columns",
                schema.full_name()
            ));
        }
        return Ok(Some(pick(i)));
    }
    Ok(schema
        .indexes
        .iter()
        .find(|i| i.name == "PRIMARY")
        .or_else(|| schema.indexes.iter().find(|i| i.unique && !i.nullable))
        .map(pick))
}

/// `(c1 > ? OR (c1 = ? AND c2 > ?))` for a lower bound, `… <= ?` for an upper one; returns the
/// SQL and how many times each key value is bound (in order).
fn bound_condition(cols: &[String], lower: bool) -> (String, Vec<usize>) {
    bound_condition_with(cols, lower, !lower)
}

/// A bound condition on a (composite) key: `lower` gives `>` (`>=` when `inclusive`),
/// otherwise `<` (`<=`); returns the SQL and the key index bound at each `?`.
pub fn bound_condition_with(cols: &[String], lower: bool, inclusive: bool) -> (String, Vec<usize>) {
    let strict = if lower { ">" } else { "<" };
    let last = match (lower, inclusive) {
        (true, true) => ">=",
        (true, false) => ">",
        (false, true) => "<=",
        (false, false) => "<",
    };
    let mut sql = String::new();
    let mut order = Vec::new();
    build_cond(cols, 0, strict, last, &mut sql, &mut order);
    (sql, order)
}

fn build_cond(
    cols: &[String],
    i: usize,
    strict: &str,
    last: &str,
    sql: &mut String,
    order: &mut Vec<usize>,
) {
    let c = quote_ident(&cols[i]);
    if i + 1 == cols.len() {
        sql.push_str(&format!("{c} {last} ?"));
        order.push(i);
        return;
    }
    sql.push_str(&format!("({c} {strict} ? OR ({c} = ? AND "));
    order.push(i);
    order.push(i);
    build_cond(cols, i + 1, strict, last, sql, order);
    sql.push_str("))");
}

/// A statement with its parameters.
#[derive(Debug, Clone)]
pub struct Query {
    /// SQL with `?` placeholders.
    pub sql: String,
    /// Bound values.
    pub params: Vec<Value>,
}

/// How a table is read: its chunk key, the selected columns and the filter.
#[derive(Debug, Clone)]
pub struct ReadSpec {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Columns written to files, in order.
    pub columns: Vec<String>,
    /// Key columns read in addition (not written) because the filter left them out.
    pub extra_key_columns: Vec<String>,
    /// Chunk key; `None` = one chunk.
    pub key: Option<ChunkKey>,
    /// The user's condition.
    pub where_: Option<String>,
}

impl ReadSpec {
    /// The SELECT for one chunk with bounds `(lower, upper]`.
    pub fn chunk_query(&self, lower: Option<&[Value]>, upper: Option<&[Value]>) -> Query {
        let cols = self
            .columns
            .iter()
            .chain(&self.extra_key_columns)
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sql = format!(
            "SELECT {cols} FROM {}",
            quote_table(&self.schema, &self.table)
        );
        let mut conds = Vec::new();
        let mut params = Vec::new();
        if let Some(key) = &self.key {
            sql.push_str(&format!(" FORCE INDEX ({})", quote_ident(&key.index)));
            for (bound, is_lower) in [(lower, true), (upper, false)] {
                if let Some(values) = bound {
                    let (cond, order) = bound_condition(&key.columns, is_lower);
                    conds.push(cond);
                    params.extend(order.iter().map(|&i| values[i].clone()));
                }
            }
        }
        if let Some(w) = &self.where_ {
            conds.push(format!("({w})"));
        }
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        if let Some(key) = &self.key {
            sql.push_str(" ORDER BY ");
            sql.push_str(
                &key.columns
                    .iter()
                    .map(|c| quote_ident(c))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        Query { sql, params }
    }

    /// The boundary query: the key of the `chunk_rows`-th row after `after`.
    pub fn boundary_query(&self, after: Option<&[Value]>, chunk_rows: u64) -> Option<Query> {
        let key = self.key.as_ref()?;
        let cols = key
            .columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sql = format!(
            "SELECT {cols} FROM {} FORCE INDEX ({})",
            quote_table(&self.schema, &self.table),
            quote_ident(&key.index)
        );
        let mut params = Vec::new();
        if let Some(values) = after {
            let (cond, order) = bound_condition(&key.columns, true);
            sql.push_str(" WHERE ");
            sql.push_str(&cond);
            params.extend(order.iter().map(|&i| values[i].clone()));
        }
        sql.push_str(&format!(
            " ORDER BY {cols} LIMIT 1 OFFSET {}",
            chunk_rows.saturating_sub(1)
        ));
        Some(Query { sql, params })
    }
}

/// Computes chunk boundaries `b1 < b2 < …` on the server: chunk i holds keys in
/// `(b(i-1), b(i)]`, the first has no lower bound and the last no upper bound.
///
/// # Errors
/// When a query fails.
pub async fn boundaries(
    conn: &mut Conn,
    spec: &ReadSpec,
    chunk_rows: u64,
) -> Result<Vec<Vec<Value>>> {
    let mut out: Vec<Vec<Value>> = Vec::new();
    loop {
        let Some(q) = spec.boundary_query(out.last().map(Vec::as_slice), chunk_rows) else {
            return Ok(out);
        };
        let row: Option<mysql_async::Row> = conn
            .exec_first(&q.sql, q.params)
            .await
            .with_context(|| format!("chunk boundaries of {}.{}", spec.schema, spec.table))?;
        match row {
            Some(r) => out.push(r.unwrap()),
            None => break,
        }
    }
    // A boundary on the very last key would leave an empty last chunk: drop it.
    if let Some(last) = out.last()
        && let Some(q) = spec.boundary_query(Some(last), 1)
    {
        let after: Option<mysql_async::Row> = conn
            .exec_first(&q.sql, q.params)
            .await
            .with_context(|| format!("chunk boundaries of {}.{}", spec.schema, spec.table))?;
        if after.is_none() {
            out.pop();
        }
    }
    Ok(out)
}

/// A binlog position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPos {
    /// Binlog file.
    pub file: String,
    /// Offset in it.
    pub pos: u64,
    /// GTID set at that point, when the server has GTIDs.
    pub gtid: Option<String>,
}

impl std::fmt::Display for BinlogPos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)?;
        if let Some(g) = &self.gtid {
            write!(f, " gtid {g}")?;
        }
        Ok(())
    }
}

impl BinlogPos {
    /// Orders positions by file sequence and offset.
    pub fn key(&self) -> (String, u64) {
        (self.file.clone(), self.pos)
    }
}

/// How the consistent point was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    /// FLUSH TABLES WITH READ LOCK.
    GlobalReadLock,
    /// LOCK TABLES … READ on the backed-up tables.
    TableLocks,
    /// No lock: each worker has its own snapshot point.
    None,
}

/// A worker connection inside its consistent snapshot.
pub struct Worker {
    /// The connection, with an open `START TRANSACTION WITH CONSISTENT SNAPSHOT`.
    pub conn: Conn,
    /// Its snapshot point, when the server tells it.
    pub point: Option<BinlogPos>,
}

/// The consistent point of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotPoint {
    /// Lock used.
    pub lock: LockMode,
    /// How long the lock was held.
    pub lock_held_ms: u64,
    /// Position read while locked (or the first worker's without lock).
    pub position: Option<BinlogPos>,
}

async fn read_position(conn: &mut Conn, mariadb: bool) -> Result<Option<BinlogPos>> {
    let row: Option<mysql_async::Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .context("SHOW MASTER STATUS (needs REPLICATION CLIENT or BINLOG MONITOR)")?;
    let Some(row) = row else {
        return Ok(None);
    };
    let file: String = row.get(0).unwrap_or_default();
    let pos: u64 = row.get(1).unwrap_or_default();
    let gtid: Option<String> = if mariadb {
        conn.query_first("SELECT @@gtid_binlog_pos").await?
    } else {
        conn.query_first("SELECT @@gtid_executed")
            .await
            .ok()
            .flatten()
    };
    Ok(Some(BinlogPos {
        file,
        pos,
        gtid: gtid.filter(|g| !g.is_empty()),
    }))
}

/// MariaDB tells each transaction's binlog point (`binlog_snapshot_file/position`).
async fn worker_point(conn: &mut Conn) -> Result<Option<BinlogPos>> {
    let rows: Vec<(String, String)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .unwrap_or_default();
    let file = rows
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("binlog_snapshot_file"))
        .map(|(_, v)| v.clone());
    let pos = rows
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("binlog_snapshot_position"))
        .and_then(|(_, v)| v.parse::<u64>().ok());
    match (file, pos) {
        (Some(file), Some(pos)) if !file.is_empty() => {
            let gtid: Option<String> = conn
                .exec_first::<Option<String>, _, _>(
                    "SELECT BINLOG_GTID_POS(?, ?)",
                    (file.as_str(), pos),
                )
                .await
                .ok()
                .flatten()
                .flatten();
            Ok(Some(BinlogPos {
                file,
                pos,
                gtid: gtid.filter(|g| !g.is_empty()),
            }))
        }
        _ => Ok(None),
    }
}

/// Opens `threads` worker connections at one consistent point: brief global read lock (else
/// per-table locks, else no lock with a warning), position read, a consistent snapshot opened
/// on every worker, unlock.
///
/// # Errors
/// When connections fail or a snapshot cannot be opened.
pub async fn consistent_point(
    source: &Source,
    info: &ServerInfo,
    tables: &[(String, String)],
    threads: usize,
) -> Result<(SnapshotPoint, Vec<Worker>)> {
    let mut coord = source.connect().await?;
    let mut conns = Vec::with_capacity(threads);
    for _ in 0..threads {
        let mut c = source.connect().await?;
        c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await
            .context("set isolation level")?;
        conns.push(c);
    }
    // Don't queue behind a long DDL forever: give up the lock attempt after a while.
    coord
        .query_drop("SET SESSION lock_wait_timeout = 60")
        .await
        .ok();
    let started = Instant::now();
    let mut lock = LockMode::GlobalReadLock;
    if let Err(e) = coord.query_drop("FLUSH TABLES WITH READ LOCK").await {
        tracing::warn!(error = %e, "FLUSH TABLES WITH READ LOCK not permitted; trying LOCK TABLES.");
        lock = LockMode::TableLocks;
        let list = tables
            .iter()
            .map(|(s, t)| format!("{} READ", quote_table(s, t)))
            .collect::<Vec<_>>()
            .join(", ");
        if let Err(e) = coord.query_drop(format!("LOCK TABLES {list}")).await {
            tracing::warn!(
                error = %e,
                "LOCK TABLES not permitted either: taking snapshots without a lock. Each worker \
                 reads at its own point; metadata.json will say the backup needs the changelog \
                 between the earliest and latest point."
            );
            lock = LockMode::None;
        }
    }
    let position = if info.log_bin {
        match read_position(&mut coord, info.mariadb).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "Cannot read the binlog position.");
                None
            }
        }
    } else {
        None
    };
    let mut opened = Vec::with_capacity(threads);
    let mut failure = None;
    for mut c in conns {
        match c
            .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await
        {
            Ok(()) => opened.push(c),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if lock != LockMode::None {
        coord
            .query_drop("UNLOCK TABLES")
            .await
            .context("UNLOCK TABLES")?;
    }
    let held = started.elapsed();
    if let Some(e) = failure {
        return Err(e).context("START TRANSACTION WITH CONSISTENT SNAPSHOT");
    }
    drop(coord);
    let mut workers = Vec::with_capacity(threads);
    for mut conn in opened {
        let point = if info.log_bin {
            match worker_point(&mut conn).await? {
                Some(p) => Some(p),
                None if lock != LockMode::None => position.clone(),
                None => None,
            }
        } else {
            None
        };
        workers.push(Worker { conn, point });
    }
    let position = if lock == LockMode::None {
        workers.first().and_then(|w| w.point.clone())
    } else {
        position
    };
    let held_ms = u64::try_from(held.as_millis()).unwrap_or(u64::MAX);
    tracing::info!(
        lock = ?lock,
        held_ms,
        position = %position.as_ref().map_or_else(|| "none".to_string(), ToString::to_string),
        "Consistent point taken."
    );
    Ok((
        SnapshotPoint {
            lock,
            lock_held_ms: if lock == LockMode::None { 0 } else { held_ms },
            position,
        },
        workers,
    ))
}

/// Sleeps are cut short by this much when checking for cancellation.
pub const POLL: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(key: &[&str]) -> ReadSpec {
        ReadSpec {
            schema: "s".into(),
            table: "t".into(),
            columns: vec!["a".into(), "b".into()],
            extra_key_columns: vec![],
            key: Some(ChunkKey {
                index: "PRIMARY".into(),
                columns: key.iter().map(|s| s.to_string()).collect(),
                unique: true,
            }),
            where_: Some("b > 'x?'".into()),
        }
    }

    #[test]
    fn composite_bounds_are_parameters() {
        let s = spec(&["a", "b"]);
        let lo = [Value::Int(1), Value::Bytes(b"k".to_vec())];
        let hi = [Value::Int(9), Value::Bytes(b"z".to_vec())];
        let q = s.chunk_query(Some(&lo), Some(&hi));
        assert_eq!(
            q.sql,
            "SELECT `a`, `b` FROM `s`.`t` FORCE INDEX (`PRIMARY`) WHERE (`a` > ? OR (`a` = ? AND \
             `b` > ?)) AND (`a` < ? OR (`a` = ? AND `b` <= ?)) AND (b > 'x?') ORDER BY `a`, `b`"
        );
        assert_eq!(
            q.params,
            vec![
                Value::Int(1),
                Value::Int(1),
                Value::Bytes(b"k".to_vec()),
                Value::Int(9),
                Value::Int(9),
                Value::Bytes(b"z".to_vec())
            ]
        );
    }

    #[test]
    fn single_key_boundary_query() {
        let s = spec(&["a"]);
        let q = s
            .boundary_query(Some(&[Value::Int(5)]), 1000)
            .expect("keyed");
        assert_eq!(
            q.sql,
            "SELECT `a` FROM `s`.`t` FORCE INDEX (`PRIMARY`) WHERE `a` > ? ORDER BY `a` LIMIT 1 OFFSET 999"
        );
        assert_eq!(q.params, vec![Value::Int(5)]);
    }
}
