//! The state table: backups, their chunks and stream positions, behind the [`StateStore`] trait
//! so a MySQL store can follow the SQLite one.
//!
//! Invariants: a chunk is marked `done` only after its file is whole at its final name; a backup
//! is `complete` only after `metadata.json` is written. The schema is versioned in `meta`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::manifest::StateUrl;

/// Version of the state schema written by this build.
pub const STATE_VERSION: i64 = 2;

/// Status of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupStatus {
    /// Started, not finished (resumable).
    Running,
    /// `metadata.json` written.
    Complete,
    /// Given up by `--fresh`.
    Abandoned,
}

impl BackupStatus {
    fn as_str(self) -> &'static str {
        match self {
            BackupStatus::Running => "running",
            BackupStatus::Complete => "complete",
            BackupStatus::Abandoned => "abandoned",
        }
    }
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "running" => BackupStatus::Running,
            "complete" => BackupStatus::Complete,
            "abandoned" => BackupStatus::Abandoned,
            other => {
                return Err(anyhow!(
                    "unknown backup status `{other}` in the state table"
                ));
            }
        })
    }
}

/// A row of `backups`.
#[derive(Debug, Clone, Serialize)]
pub struct BackupRecord {
    /// Backup id (`20261121T093000Z`).
    pub id: String,
    /// Job name.
    pub name: String,
    /// Hash of the manifest's content-deciding parts.
    pub manifest_hash: String,
    /// Status.
    pub status: BackupStatus,
    /// Snapshot position of the first run (JSON of [`crate::source::SnapshotPoint`]).
    pub position: serde_json::Value,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339, when complete.
    pub finished_at: Option<String>,
}

/// A row of `tables`: the schema captured when the backup started.
#[derive(Debug, Clone, Serialize)]
pub struct TableRecord {
    /// `schema.table`.
    pub table: String,
    /// Order in the backup.
    pub ord: i64,
    /// JSON: schema, columns, chunk key, where.
    pub spec: serde_json::Value,
}

/// Chunk status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkStatus {
    /// Not yet written.
    Pending,
    /// File whole at its final name.
    Done,
}

/// A row of `chunks`.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkRecord {
    /// Backup.
    pub backup_id: String,
    /// `schema.table`.
    pub table: String,
    /// 0-based.
    pub chunk_no: i64,
    /// Exclusive lower bound (JSON array of [`crate::value::KeyValue`]) or null.
    pub lower_key: Option<serde_json::Value>,
    /// Inclusive upper bound or null.
    pub upper_key: Option<serde_json::Value>,
    /// Status.
    pub status: ChunkStatus,
    /// What was written, once done.
    pub done: Option<ChunkDone>,
}

/// What a finished chunk recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChunkDone {
    /// Rows in the file.
    pub rows: u64,
    /// Bytes of the stored file.
    pub bytes: u64,
    /// sha256 of the stored file.
    pub sha256: String,
    /// Path relative to the backup directory.
    pub file: String,
    /// First key written (JSON mapping), null when empty.
    pub first_key: serde_json::Value,
    /// Last key written.
    pub last_key: serde_json::Value,
    /// The snapshot point the chunk was read at.
    pub point: serde_json::Value,
    /// Rows' fingerprint (wrapping sum of [`crate::value::row_fingerprint`]).
    pub fingerprint: Option<u64>,
}

/// Where progress is kept.
pub trait StateStore: Send + Sync {
    /// Creates a backup with its tables and chunks, atomically.
    ///
    /// # Errors
    /// On storage failure.
    fn create_backup(
        &self,
        backup: &BackupRecord,
        tables: &[TableRecord],
        chunks: &[ChunkRecord],
    ) -> Result<()>;
    /// The newest `running` backup of a job.
    ///
    /// # Errors
    /// On storage failure.
    fn unfinished(&self, name: &str) -> Result<Option<BackupRecord>>;
    /// All backups of a job, newest first.
    ///
    /// # Errors
    /// On storage failure.
    fn backups(&self, name: &str) -> Result<Vec<BackupRecord>>;
    /// Tables of a backup in order.
    ///
    /// # Errors
    /// On storage failure.
    fn tables(&self, backup_id: &str) -> Result<Vec<TableRecord>>;
    /// Chunks of a backup in table order, then chunk order.
    ///
    /// # Errors
    /// On storage failure.
    fn chunks(&self, backup_id: &str) -> Result<Vec<ChunkRecord>>;
    /// Marks a chunk done (its file is whole at its final name).
    ///
    /// # Errors
    /// On storage failure.
    fn chunk_done(
        &self,
        backup_id: &str,
        table: &str,
        chunk_no: i64,
        done: &ChunkDone,
    ) -> Result<()>;
    /// Sets a backup's status (and finish time when complete).
    ///
    /// # Errors
    /// On storage failure.
    fn set_status(&self, backup_id: &str, status: BackupStatus) -> Result<()>;
    /// The unfinished restore of `backup_id` into `target`, if any.
    ///
    /// # Errors
    /// On storage failure.
    fn unfinished_restore(&self, backup_id: &str, target: &str) -> Result<Option<String>>;
    /// Records a new restore.
    ///
    /// # Errors
    /// On storage failure.
    fn create_restore(&self, id: &str, backup_id: &str, target: &str) -> Result<()>;
    /// Chunks a restore has loaded (committed in the target): (table, chunk).
    ///
    /// # Errors
    /// On storage failure.
    fn restored_chunks(&self, id: &str) -> Result<Vec<(String, i64)>>;
    /// Marks a chunk loaded.
    ///
    /// # Errors
    /// On storage failure.
    fn restore_chunk_done(&self, id: &str, table: &str, chunk_no: i64, rows: u64) -> Result<()>;
    /// Marks a restore complete.
    ///
    /// # Errors
    /// On storage failure.
    fn finish_restore(&self, id: &str) -> Result<()>;
    /// The saved position of a change stream.
    ///
    /// # Errors
    /// On storage failure or a position this build cannot read.
    fn stream_position(&self, stream: &str) -> Result<Option<StreamPosition>>;
    /// Saves a change stream's position (only after every file before it is durable).
    ///
    /// # Errors
    /// On storage failure.
    fn save_stream_position(&self, stream: &str, pos: &StreamPosition) -> Result<()>;
    /// Every saved stream: (name, position, updated at).
    ///
    /// # Errors
    /// On storage failure.
    fn streams(&self) -> Result<Vec<(String, StreamPosition, String)>>;
}

/// A change stream's resume point, stored as the position JSON of DESIGN.md
/// (`{"type":"binlog","file":…,"pos":…,"gtid":…}`) plus the stream's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    /// Always `binlog`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Binlog file.
    pub file: String,
    /// Offset after the last whole transaction written.
    pub pos: u64,
    /// GTID state at that point (MariaDB), if any.
    pub gtid: Option<String>,
    /// The next event's seqno.
    pub next_seqno: u64,
    /// The next changelog file's number.
    pub next_file: u64,
}

/// SQLite state, one file per job by default.
pub struct SqliteState {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS backups (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    manifest_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    position TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE TABLE IF NOT EXISTS tables (
    backup_id TEXT NOT NULL,
    table_name TEXT NOT NULL,
    ord INTEGER NOT NULL,
    spec TEXT NOT NULL,
    PRIMARY KEY (backup_id, table_name)
);
CREATE TABLE IF NOT EXISTS chunks (
    backup_id TEXT NOT NULL,
    table_name TEXT NOT NULL,
    chunk_no INTEGER NOT NULL,
    lower_key TEXT,
    upper_key TEXT,
    status TEXT NOT NULL,
    rows INTEGER,
    bytes INTEGER,
    sha256 TEXT,
    file TEXT,
    first_key TEXT,
    last_key TEXT,
    point TEXT,
    fingerprint TEXT,
    lease_owner TEXT,
    lease_expiry TEXT,
    PRIMARY KEY (backup_id, table_name, chunk_no)
);
CREATE TABLE IF NOT EXISTS restores (
    id TEXT PRIMARY KEY,
    backup_id TEXT NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE TABLE IF NOT EXISTS restore_chunks (
    restore_id TEXT NOT NULL,
    table_name TEXT NOT NULL,
    chunk_no INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    done_at TEXT NOT NULL,
    PRIMARY KEY (restore_id, table_name, chunk_no)
);
CREATE TABLE IF NOT EXISTS positions (
    stream TEXT PRIMARY KEY,
    position TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
";

fn json_col(s: Option<String>) -> Result<Option<serde_json::Value>> {
    s.map(|s| serde_json::from_str(&s).context("state table holds invalid JSON"))
        .transpose()
}

impl SqliteState {
    /// Opens (creating if missing) the state file.
    ///
    /// # Errors
    /// When the file cannot be created or was written by a newer version.
    pub fn open(path: &Path) -> Result<SqliteState> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open state file {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("cannot create the state tables in {}", path.display()))?;
        let version: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match version.as_deref().map(str::parse::<i64>) {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('version', ?1)",
                    params![STATE_VERSION.to_string()],
                )?;
            }
            Some(Ok(1)) => {
                // Version 2 adds the chunk fingerprint.
                conn.execute_batch(
                    "ALTER TABLE chunks ADD COLUMN fingerprint TEXT; \
                     UPDATE meta SET value = '2' WHERE key = 'version';",
                )
                .with_context(|| format!("cannot upgrade state file {}", path.display()))?;
            }
            Some(Ok(v)) if v <= STATE_VERSION => {}
            Some(v) => {
                return Err(anyhow!(
                    "state file {} has version {:?}, newer than this build's {STATE_VERSION}",
                    path.display(),
                    v
                ));
            }
        }
        Ok(SqliteState {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        })
    }

    /// Opens the store a manifest names.
    ///
    /// # Errors
    /// See [`SqliteState::open`].
    pub fn from_url(url: &StateUrl) -> Result<SqliteState> {
        match url {
            StateUrl::Sqlite(p) => SqliteState::open(p),
        }
    }

    /// Opens the store for reading only (`status`): never creates or writes anything, so it
    /// cannot get in the way of a running backup. `None` when there is no state file yet.
    ///
    /// # Errors
    /// When the file exists but cannot be opened.
    pub fn open_read_only(url: &StateUrl) -> Result<Option<SqliteState>> {
        let StateUrl::Sqlite(path) = url;
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("cannot open state file {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        Ok(Some(SqliteState {
            conn: Arc::new(Mutex::new(conn)),
            path: path.clone(),
        }))
    }

    /// The file behind this store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| anyhow!("state store lock poisoned"))
    }

    fn backup_rows(&self, sql: &str, name: &str) -> Result<Vec<BackupRecord>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map(params![name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, manifest_hash, status, position, started_at, finished_at) = row?;
            out.push(BackupRecord {
                id,
                name,
                manifest_hash,
                status: BackupStatus::parse(&status)?,
                position: serde_json::from_str(&position)?,
                started_at,
                finished_at,
            });
        }
        Ok(out)
    }
}

impl StateStore for SqliteState {
    fn unfinished_restore(&self, backup_id: &str, target: &str) -> Result<Option<String>> {
        let conn = self.lock()?;
        Ok(conn
            .query_row(
                "SELECT id FROM restores WHERE backup_id = ?1 AND target = ?2 AND status = 'running' \
                 ORDER BY started_at DESC LIMIT 1",
                params![backup_id, target],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn create_restore(&self, id: &str, backup_id: &str, target: &str) -> Result<()> {
        let conn = self.lock()?;
        conn.execute(
            "INSERT INTO restores (id, backup_id, target, status, started_at) \
             VALUES (?1, ?2, ?3, 'running', ?4)",
            params![id, backup_id, target, chrono::Utc::now().to_rfc3339()],
        )
        .with_context(|| format!("cannot record restore {id}"))?;
        Ok(())
    }

    fn restored_chunks(&self, id: &str) -> Result<Vec<(String, i64)>> {
        let conn = self.lock()?;
        let mut stmt =
            conn.prepare("SELECT table_name, chunk_no FROM restore_chunks WHERE restore_id = ?1")?;
        let rows = stmt.query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(Into::into)
    }

    fn restore_chunk_done(&self, id: &str, table: &str, chunk_no: i64, rows: u64) -> Result<()> {
        let conn = self.lock()?;
        conn.execute(
            "INSERT OR REPLACE INTO restore_chunks (restore_id, table_name, chunk_no, rows, done_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, table, chunk_no, i64::try_from(rows)?, chrono::Utc::now().to_rfc3339()],
        )?;
        Ok(())
    }

    fn finish_restore(&self, id: &str) -> Result<()> {
        let conn = self.lock()?;
        conn.execute(
            "UPDATE restores SET status = 'complete', finished_at = ?2 WHERE id = ?1",
            params![id, chrono::Utc::now().to_rfc3339()],
        )?;
        Ok(())
    }

    fn stream_position(&self, stream: &str) -> Result<Option<StreamPosition>> {
        let conn = self.lock()?;
        let text: Option<String> = conn
            .query_row(
                "SELECT position FROM positions WHERE stream = ?1",
                params![stream],
                |r| r.get(0),
            )
            .optional()?;
        text.map(|t| {
            serde_json::from_str(&t)
                .with_context(|| format!("state table: position of stream {stream} is invalid"))
        })
        .transpose()
    }

    fn save_stream_position(&self, stream: &str, pos: &StreamPosition) -> Result<()> {
        let conn = self.lock()?;
        conn.execute(
            "INSERT INTO positions (stream, position, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (stream) DO UPDATE SET position = ?2, updated_at = ?3",
            params![
                stream,
                serde_json::to_string(pos)?,
                chrono::Utc::now().to_rfc3339()
            ],
        )
        .with_context(|| format!("cannot save the position of stream {stream}"))?;
        Ok(())
    }

    fn streams(&self) -> Result<Vec<(String, StreamPosition, String)>> {
        let conn = self.lock()?;
        let mut stmt =
            conn.prepare("SELECT stream, position, updated_at FROM positions ORDER BY stream")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (s, p, u) = r?;
            out.push((s, serde_json::from_str(&p)?, u));
        }
        Ok(out)
    }

    fn create_backup(
        &self,
        b: &BackupRecord,
        tables: &[TableRecord],
        chunks: &[ChunkRecord],
    ) -> Result<()> {
        let mut conn = self.lock()?;
        // IMMEDIATE: take the write lock up front, so a busy database waits instead of failing.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO backups (id, name, manifest_hash, status, position, started_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                b.id,
                b.name,
                b.manifest_hash,
                b.status.as_str(),
                b.position.to_string(),
                b.started_at
            ],
        )
        .with_context(|| format!("cannot record backup {}", b.id))?;
        for t in tables {
            tx.execute(
                "INSERT INTO tables (backup_id, table_name, ord, spec) VALUES (?1, ?2, ?3, ?4)",
                params![b.id, t.table, t.ord, t.spec.to_string()],
            )?;
        }
        {
            let mut stmt = tx.prepare(
                "INSERT INTO chunks (backup_id, table_name, chunk_no, lower_key, upper_key, status) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending')",
            )?;
            for c in chunks {
                stmt.execute(params![
                    b.id,
                    c.table,
                    c.chunk_no,
                    c.lower_key.as_ref().map(|v| v.to_string()),
                    c.upper_key.as_ref().map(|v| v.to_string()),
                ])?;
            }
        }
        tx.commit()
            .context("cannot commit the new backup to the state table")
    }

    fn unfinished(&self, name: &str) -> Result<Option<BackupRecord>> {
        Ok(self
            .backup_rows(
                "SELECT id, name, manifest_hash, status, position, started_at, finished_at \
                 FROM backups WHERE name = ?1 AND status = 'running' ORDER BY id DESC LIMIT 1",
                name,
            )?
            .into_iter()
            .next())
    }

    fn backups(&self, name: &str) -> Result<Vec<BackupRecord>> {
        self.backup_rows(
            "SELECT id, name, manifest_hash, status, position, started_at, finished_at \
             FROM backups WHERE name = ?1 ORDER BY id DESC",
            name,
        )
    }

    fn tables(&self, backup_id: &str) -> Result<Vec<TableRecord>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(
            "SELECT table_name, ord, spec FROM tables WHERE backup_id = ?1 ORDER BY ord",
        )?;
        let rows = stmt.query_map(params![backup_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (table, ord, spec) = row?;
            out.push(TableRecord {
                table,
                ord,
                spec: serde_json::from_str(&spec)?,
            });
        }
        Ok(out)
    }

    fn chunks(&self, backup_id: &str) -> Result<Vec<ChunkRecord>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(
            "SELECT c.table_name, c.chunk_no, c.lower_key, c.upper_key, c.status, c.rows, c.bytes, \
             c.sha256, c.file, c.first_key, c.last_key, c.point, c.fingerprint \
             FROM chunks c JOIN tables t ON t.backup_id = c.backup_id AND t.table_name = c.table_name \
             WHERE c.backup_id = ?1 ORDER BY t.ord, c.chunk_no",
        )?;
        type Raw = (
            String,
            i64,
            Option<String>,
            Option<String>,
            String,
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let rows = stmt.query_map(params![backup_id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
                r.get(11)?,
                r.get(12)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (
                table,
                chunk_no,
                lower,
                upper,
                status,
                rows,
                bytes,
                sha,
                file,
                first,
                last,
                point,
                fp,
            ): Raw = row?;
            let status = match status.as_str() {
                "done" => ChunkStatus::Done,
                _ => ChunkStatus::Pending,
            };
            let done = if status == ChunkStatus::Done {
                Some(ChunkDone {
                    rows: u64::try_from(rows.unwrap_or(0)).unwrap_or(0),
                    bytes: u64::try_from(bytes.unwrap_or(0)).unwrap_or(0),
                    sha256: sha.unwrap_or_default(),
                    file: file.unwrap_or_default(),
                    first_key: json_col(first)?.unwrap_or(serde_json::Value::Null),
                    last_key: json_col(last)?.unwrap_or(serde_json::Value::Null),
                    point: json_col(point)?.unwrap_or(serde_json::Value::Null),
                    fingerprint: fp.and_then(|f| f.parse().ok()),
                })
            } else {
                None
            };
            out.push(ChunkRecord {
                backup_id: backup_id.to_string(),
                table,
                chunk_no,
                lower_key: json_col(lower)?,
                upper_key: json_col(upper)?,
                status,
                done,
            });
        }
        Ok(out)
    }

    fn chunk_done(&self, backup_id: &str, table: &str, chunk_no: i64, d: &ChunkDone) -> Result<()> {
        let conn = self.lock()?;
        let n = conn.execute(
            "UPDATE chunks SET status = 'done', rows = ?4, bytes = ?5, sha256 = ?6, file = ?7, \
             first_key = ?8, last_key = ?9, point = ?10, fingerprint = ?11 \
             WHERE backup_id = ?1 AND table_name = ?2 AND chunk_no = ?3",
            params![
                backup_id,
                table,
                chunk_no,
                i64::try_from(d.rows)?,
                i64::try_from(d.bytes)?,
                d.sha256,
                d.file,
                d.first_key.to_string(),
                d.last_key.to_string(),
                d.point.to_string(),
                d.fingerprint.map(|f| f.to_string()),
            ],
        )?;
        if n != 1 {
            return Err(anyhow!(
                "chunk {table}#{chunk_no} of backup {backup_id} is not in the state table"
            ));
        }
        Ok(())
    }

    fn set_status(&self, backup_id: &str, status: BackupStatus) -> Result<()> {
        let conn = self.lock()?;
        let finished = (status == BackupStatus::Complete).then(|| chrono::Utc::now().to_rfc3339());
        conn.execute(
            "UPDATE backups SET status = ?2, finished_at = COALESCE(?3, finished_at) WHERE id = ?1",
            params![backup_id, status.as_str(), finished],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_resume_and_finish() {
        let dir = std::env::temp_dir().join(format!("st-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let st = SqliteState::open(&dir.join("s.db")).expect("open");
        let b = BackupRecord {
            id: "20260101T000000Z".into(),
            name: "job".into(),
            manifest_hash: "h".into(),
            status: BackupStatus::Running,
            position: serde_json::json!({}),
            started_at: "now".into(),
            finished_at: None,
        };
        let t = TableRecord {
            table: "s.t".into(),
            ord: 0,
            spec: serde_json::json!({"x": 1}),
        };
        let chunks: Vec<ChunkRecord> = (0..3)
            .map(|i| ChunkRecord {
                backup_id: b.id.clone(),
                table: "s.t".into(),
                chunk_no: i,
                lower_key: (i > 0).then(|| serde_json::json!([{"int": i}])),
                upper_key: None,
                status: ChunkStatus::Pending,
                done: None,
            })
            .collect();
        st.create_backup(&b, &[t], &chunks).expect("create");
        assert_eq!(st.unfinished("job").expect("q").expect("one").id, b.id);
        let d = ChunkDone {
            rows: 5,
            bytes: 10,
            sha256: "ab".into(),
            file: "s.t/00001.jsonl.zst".into(),
            first_key: serde_json::json!([1]),
            last_key: serde_json::json!([5]),
            point: serde_json::json!({"file": "b.1", "pos": 4}),
            fingerprint: Some(u64::MAX),
        };
        st.chunk_done(&b.id, "s.t", 1, &d).expect("done");
        let got = st.chunks(&b.id).expect("chunks");
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].done.as_ref(), Some(&d));
        assert_eq!(got[0].status, ChunkStatus::Pending);
        assert!(st.chunk_done(&b.id, "s.t", 9, &d).is_err());
        st.set_status(&b.id, BackupStatus::Complete)
            .expect("status");
        assert!(st.unfinished("job").expect("q").is_none());
        // Reopening keeps everything.
        drop(st);
        let st = SqliteState::open(&dir.join("s.db")).expect("reopen");
        assert_eq!(
            st.backups("job").expect("q")[0].status,
            BackupStatus::Complete
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
