//! Object names of a backup and the `metadata.json` written last as its completion marker.
//!
//! ```text
//! <name>/<backup-id>/<schema>.<table>/schema.sql|schema.json|00000.<ext>[.zst]
//! <name>/<backup-id>/metadata.json
//! ```

use serde::{Deserialize, Serialize};

use crate::manifest::{Compression, Format};
use crate::schema::{ChunkKey, TableSchema};
use crate::source::{BinlogPos, LockMode};

/// Version of the `metadata.json` layout.
pub const FORMAT_VERSION: u32 = 1;

/// `<name>/<id>`.
pub fn backup_dir(name: &str, id: &str) -> String {
    format!("{name}/{id}")
}

/// `<schema>.<table>`, the directory of a table inside a backup.
pub fn table_dir(schema: &str, table: &str) -> String {
    format!("{schema}.{table}")
}

/// File name of chunk `n`.
pub fn chunk_file(n: i64, format: Format, compression: Compression, encrypted: bool) -> String {
    let z = match (format, compression) {
        // Parquet compresses inside the file, so every Parquet reader opens it.
        (Format::Parquet, _) | (_, Compression::None) => "",
        (_, Compression::Zstd) => ".zst",
    };
    format!("{n:05}.{}{z}{}", format.ext(), age_suffix(encrypted))
}

/// `.age` when encrypted.
pub fn age_suffix(encrypted: bool) -> &'static str {
    if encrypted { ".age" } else { "" }
}

/// The per-table file holding chunk keys when the backup is encrypted (keys are row data, so
/// they stay out of the plain `metadata.json`).
pub const KEYS_FILE: &str = "keys.json.age";

/// A new backup id from the current UTC time.
pub fn new_backup_id() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

/// The point a chunk was read at: which run, how it was locked, which binlog position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkPoint {
    /// Start time of the run (RFC 3339) that read the chunk.
    pub run: String,
    /// Lock used by that run.
    pub lock: LockMode,
    /// The reading worker's snapshot position.
    pub position: Option<BinlogPos>,
}

/// `metadata.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metadata {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// `storagetapper`.
    pub tool: String,
    /// Crate version.
    pub tool_version: String,
    /// Job name.
    pub name: String,
    /// Backup id.
    pub backup_id: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// Where it came from.
    pub source: SourceMeta,
    /// Consistency of the snapshot.
    pub snapshot: SnapshotMeta,
    /// Row encoding.
    pub format: Format,
    /// Compression.
    pub compression: Compression,
    /// zstd level, when compressed.
    pub compression_level: Option<i32>,
    /// age recipients (none: not encrypted).
    pub encryption_recipients: Vec<String>,
    /// Tables.
    pub tables: Vec<TableMeta>,
}

/// Source facts in `metadata.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceMeta {
    /// `host:port` from the manifest.
    pub host: String,
    /// `@@hostname`.
    pub hostname: String,
    /// `@@version`.
    pub version: String,
    /// `@@server_id`.
    pub server_id: u64,
    /// `@@server_uuid` (MySQL).
    pub server_uuid: Option<String>,
}

/// Whether the backup is consistent at one point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// True when every chunk was read at one point (one run under a lock, or equal positions).
    pub consistent: bool,
    /// That point, when consistent and the binlog is on.
    pub position: Option<BinlogPos>,
    /// When not consistent: apply the changelog from here …
    pub changelog_from: Option<BinlogPos>,
    /// … to here to reach a consistent state.
    pub changelog_to: Option<BinlogPos>,
    /// How many runs (first + resumes) read chunks.
    pub runs: usize,
    /// Lock used by the first run.
    pub lock: LockMode,
    /// How long the first run held the lock.
    pub lock_held_ms: u64,
}

impl SnapshotMeta {
    /// Derives consistency from the points of all chunks.
    pub fn from_points(points: &[ChunkPoint], lock: LockMode, lock_held_ms: u64) -> SnapshotMeta {
        let mut runs: Vec<&str> = points.iter().map(|p| p.run.as_str()).collect();
        runs.sort_unstable();
        runs.dedup();
        let positions: Vec<&BinlogPos> =
            points.iter().filter_map(|p| p.position.as_ref()).collect();
        let all_have_pos = positions.len() == points.len() && !points.is_empty();
        let same_pos = all_have_pos && positions.windows(2).all(|w| w[0].key() == w[1].key());
        let one_locked_run = runs.len() <= 1 && points.iter().all(|p| p.lock != LockMode::None);
        let consistent = same_pos || (one_locked_run && (all_have_pos || positions.is_empty()));
        let min = positions
            .iter()
            .min_by_key(|p| p.key())
            .map(|p| (*p).clone());
        let max = positions
            .iter()
            .max_by_key(|p| p.key())
            .map(|p| (*p).clone());
        SnapshotMeta {
            consistent,
            position: if consistent { min.clone() } else { None },
            changelog_from: if consistent { None } else { min },
            changelog_to: if consistent { None } else { max },
            runs: runs.len(),
            lock,
            lock_held_ms,
        }
    }
}

/// One table in `metadata.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableMeta {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Columns written, in order.
    pub columns: Vec<String>,
    /// Chunk key (none: one chunk).
    pub chunk_key: Option<ChunkKey>,
    /// The manifest's filter.
    #[serde(rename = "where")]
    pub where_: Option<String>,
    /// Rows in all chunks.
    pub rows: u64,
    /// Bytes of all chunk files.
    pub bytes: u64,
    /// Chunks in key order.
    pub chunks: Vec<ChunkMeta>,
}

/// One chunk in `metadata.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkMeta {
    /// Path relative to the backup directory.
    pub file: String,
    /// Rows.
    pub rows: u64,
    /// Bytes of the stored file.
    pub bytes: u64,
    /// sha256 of the stored file.
    pub sha256: String,
    /// First key in the file (JSON mapping), null when empty.
    pub first_key: serde_json::Value,
    /// Last key in the file.
    pub last_key: serde_json::Value,
    /// Exclusive lower bound of the chunk's key range (typed, lossless), null for the first.
    #[serde(default)]
    pub lower_bound: serde_json::Value,
    /// Inclusive upper bound, null for the last.
    #[serde(default)]
    pub upper_bound: serde_json::Value,
    /// Fingerprint of the chunk's rows at the snapshot (see `verify --against-source`).
    #[serde(default)]
    pub source_fingerprint: Option<u64>,
    /// The point the chunk was read at.
    pub point: ChunkPoint,
}

/// What `schema.json` holds: the table as captured plus how it was read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchemaFile {
    /// The table.
    #[serde(flatten)]
    pub schema: TableSchema,
    /// Columns written to the files, in order.
    pub selected_columns: Vec<String>,
    /// Chunk key.
    pub chunk_key: Option<ChunkKey>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(file: &str, p: u64) -> Option<BinlogPos> {
        Some(BinlogPos {
            file: file.into(),
            pos: p,
            gtid: None,
        })
    }

    #[test]
    fn one_locked_run_is_consistent() {
        let pts = vec![
            ChunkPoint {
                run: "a".into(),
                lock: LockMode::GlobalReadLock,
                position: pos("b.1", 10),
            };
            3
        ];
        let m = SnapshotMeta::from_points(&pts, LockMode::GlobalReadLock, 3);
        assert!(m.consistent);
        assert_eq!(m.position, pos("b.1", 10));
    }

    #[test]
    fn resumed_run_needs_changelog() {
        let mut pts = vec![ChunkPoint {
            run: "a".into(),
            lock: LockMode::GlobalReadLock,
            position: pos("b.000001", 10),
        }];
        pts.push(ChunkPoint {
            run: "b".into(),
            lock: LockMode::GlobalReadLock,
            position: pos("b.000002", 4),
        });
        let m = SnapshotMeta::from_points(&pts, LockMode::GlobalReadLock, 3);
        assert!(!m.consistent);
        assert_eq!(m.changelog_from, pos("b.000001", 10));
        assert_eq!(m.changelog_to, pos("b.000002", 4));
        assert_eq!(m.runs, 2);
    }

    #[test]
    fn resumed_run_without_writes_is_still_one_point() {
        let pts = vec![
            ChunkPoint {
                run: "a".into(),
                lock: LockMode::GlobalReadLock,
                position: pos("b.1", 10),
            },
            ChunkPoint {
                run: "b".into(),
                lock: LockMode::None,
                position: pos("b.1", 10),
            },
        ];
        assert!(SnapshotMeta::from_points(&pts, LockMode::GlobalReadLock, 3).consistent);
    }

    #[test]
    fn names() {
        assert_eq!(
            chunk_file(7, Format::Json, Compression::Zstd, false),
            "00007.jsonl.zst"
        );
        assert_eq!(
            chunk_file(7, Format::Json, Compression::None, false),
            "00007.jsonl"
        );
        assert_eq!(
            chunk_file(7, Format::Parquet, Compression::Zstd, false),
            "00007.parquet"
        );
        assert_eq!(
            chunk_file(7, Format::Avro, Compression::Zstd, true),
            "00007.avro.zst.age"
        );
    }
}
