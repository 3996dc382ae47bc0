//! Changelog files: change events (DESIGN.md "Change event") in the manifest's format and
//! envelope, and the file they go to (encode → zstd → age, temporary name → final name).
//!
//! Envelopes: `debezium` (Debezium's field names: `before`, `after`, `source`, `op`, `ts_ms`,
//! plus our `key` and `seqno`), `storagetapper` (the same fields, `seqno` and `table` first) and
//! `row` (the after-image, or the before-image of a delete, flattened with `__op`, `__seqno`,
//! `__ts_ms` and `__deleted`). Formats: `json` (one event per line), `msgpack` (one map per
//! event), `sql` (statements that replay the changes; the envelope does not apply), `avro` (one
//! object container per file, its schema a union of the table versions it holds) and `parquet`
//! (one struct per table version).
//!
//! Invariant: row images are encoded by the snapshot's own row encoders, so a value in a
//! changelog file reads exactly as the same value in a chunk file.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use mysql_async::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::binlog::TableMap;
use crate::crypto::Recipients;
use crate::format::{self, ColumnInfo, EncodeOptions, RowEncoder, TableInfo};
use crate::manifest::{Compression, Envelope, Format, TableConfig};
use crate::schema::{Kind, quote_ident, quote_table};
use crate::sink::{FileWriter, Sink};
use crate::snapshot::{HashSink, Out};
use crate::value;

/// Kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Insert.
    Create,
    /// Update.
    Update,
    /// Delete.
    Delete,
    /// Schema change.
    Ddl,
    /// A row of a snapshot (`backup` into Kafka).
    Read,
}

impl Op {
    /// The `op` field.
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Ddl => "ddl",
            Op::Read => "r",
        }
    }
}

/// Where and when an event happened.
#[derive(Debug, Clone)]
pub struct EventSource<'a> {
    /// Job name.
    pub name: &'a str,
    /// Source server id (from the event).
    pub server_id: u32,
    /// Transaction GTID (empty without GTIDs).
    pub gtid: &'a str,
    /// Binlog file.
    pub file: &'a str,
    /// End offset of the event.
    pub pos: u64,
    /// Event time, ms.
    pub ts_ms: u64,
    /// Part of a snapshot.
    pub snapshot: bool,
    /// Index of the row in its binlog event.
    pub row: u64,
}

/// A table of the stream: which columns are written and the encoders for its row images.
pub struct StreamTable {
    /// The table map it was built from.
    pub map: Arc<TableMap>,
    /// Positions (in the table map) of the written columns.
    pub pick: Vec<usize>,
    /// Positions of the key columns (primary key, else every written column).
    pub key: Vec<usize>,
    row: Box<dyn RowEncoder>,
    key_enc: Box<dyn RowEncoder>,
    flat: Option<Box<dyn RowEncoder>>,
    /// This version of the table for an Avro changelog file's schema.
    pub version: AvroVersion,
}

/// One version of a table (its written columns and key) as an Avro changelog file's schema
/// holds it: a file's schema has a union of the versions it can contain.
#[derive(Debug, Clone)]
pub struct AvroVersion {
    /// Identity: table and the columns' names and types.
    pub sig: String,
    row: TableInfo,
    key: TableInfo,
    flat: TableInfo,
}

/// A change event of a table version the open Avro file's schema does not have: the file must
/// be discarded and the stream re-read from its saved position with the version added.
#[derive(Debug, thiserror::Error)]
#[error("table version {0} is not in the changelog file's schema")]
pub struct NewVersion(pub String);

impl StreamTable {
    /// Builds the table's encoders for `format`/`envelope` with the rule's column filter.
    ///
    /// # Errors
    /// When the format cannot hold change events.
    pub fn new(
        map: Arc<TableMap>,
        rule: &TableConfig,
        format: Format,
        envelope: Envelope,
    ) -> Result<StreamTable> {
        let pick: Vec<usize> = map
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                let n = &c.info.name;
                rule.columns
                    .as_ref()
                    .is_none_or(|cols| cols.iter().any(|x| x == n))
                    && !rule
                        .exclude_columns
                        .as_ref()
                        .is_some_and(|cols| cols.iter().any(|x| x == n))
            })
            .map(|(i, _)| i)
            .collect();
        let key = if map.key.is_empty() {
            pick.clone()
        } else {
            map.key.clone()
        };
        let columns: Arc<[ColumnInfo]> =
            pick.iter().map(|&i| map.columns[i].info.clone()).collect();
        let key_columns: Arc<[ColumnInfo]> =
            key.iter().map(|&i| map.columns[i].info.clone()).collect();
        let info = |columns: Arc<[ColumnInfo]>| TableInfo {
            schema: map.schema.clone(),
            table: map.table.clone(),
            columns,
        };
        let enc = |t: &TableInfo| -> Result<Box<dyn RowEncoder>> {
            match format {
                Format::Json | Format::Msgpack | Format::Sql | Format::Avro => {
                    // Avro events are encoded per file version (see `AvroVersion`).
                    let f = if format == Format::Msgpack {
                        format
                    } else {
                        Format::Json
                    };
                    format::encoder(f, t, EncodeOptions::default())
                }
                Format::Parquet => {
                    // Parquet events are encoded per file version (see `AvroVersion`).
                    format::encoder(Format::Json, t, EncodeOptions::default())
                }
            }
        };
        let row = enc(&info(Arc::clone(&columns)))?;
        let key_enc = enc(&info(Arc::clone(&key_columns)))?;
        let mut flat_cols: Vec<ColumnInfo> = columns.to_vec();
        for (name, kind, ty) in [
            ("__op", Kind::Text, "varchar(3)"),
            ("__seqno", Kind::Int, "bigint"),
            ("__ts_ms", Kind::Int, "bigint"),
            ("__deleted", Kind::Text, "varchar(5)"),
        ] {
            flat_cols.push(ColumnInfo {
                name: name.into(),
                kind,
                fsp: 0,
                column_type: ty.into(),
                nullable: false,
            });
        }
        let flat_info = info(flat_cols.into());
        let flat = if envelope == Envelope::Row {
            Some(enc(&flat_info)?)
        } else {
            None
        };
        let sig = format!(
            "{}.{}({})[{}]",
            map.schema,
            map.table,
            columns
                .iter()
                .map(|c| format!("{} {} {:?} {}", c.name, c.column_type, c.kind, c.fsp))
                .collect::<Vec<_>>()
                .join(", "),
            key_columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        let version = AvroVersion {
            sig,
            row: info(Arc::clone(&columns)),
            key: info(Arc::clone(&key_columns)),
            flat: flat_info,
        };
        Ok(StreamTable {
            map,
            pick,
            key,
            row,
            key_enc,
            flat,
            version,
        })
    }
}

impl StreamTable {
    /// The key of a row image in the event's own encoding (JSON object or msgpack map): a
    /// Kafka message key.
    ///
    /// # Errors
    /// When a value does not fit its column.
    pub fn key_bytes(&mut self, image: &[Value]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(32);
        self.key_enc.rows(&[project(image, &self.key)], &mut out)?;
        if out.last() == Some(&b'\n') {
            out.pop();
        }
        Ok(out)
    }

    /// The key, before- and after-image of a change, each with the written columns only.
    fn images(&self, before: Option<Vec<Value>>, after: Option<Vec<Value>>) -> Result<Images> {
        let key = project(
            after
                .as_deref()
                .or(before.as_deref())
                .ok_or_else(|| anyhow!("event without a row"))?,
            &self.key,
        );
        Ok((
            key,
            before.map(|b| self.written(b)),
            after.map(|a| self.written(a)),
        ))
    }

    /// This table version's place in a file schema's list of versions.
    fn version_in(&self, sigs: &[String]) -> Result<usize, NewVersion> {
        sigs.iter()
            .position(|s| *s == self.version.sig)
            .ok_or_else(|| NewVersion(self.version.sig.clone()))
    }

    /// The `row` envelope's record: the after-image (the before-image of a delete) with
    /// `__op`, `__seqno`, `__ts_ms` and `__deleted`.
    fn flat_row(
        &self,
        op: Op,
        seqno: u64,
        ts_ms: u64,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
    ) -> Result<Vec<Value>> {
        let image = after
            .or(before)
            .ok_or_else(|| anyhow!("event without a row"))?;
        let mut row = self.written(image);
        row.push(Value::Bytes(op.code().as_bytes().to_vec()));
        row.push(Value::Int(i64::try_from(seqno)?));
        row.push(Value::Int(i64::try_from(ts_ms)?));
        let deleted: &[u8] = if op == Op::Delete { b"true" } else { b"false" };
        row.push(Value::Bytes(deleted.to_vec()));
        Ok(row)
    }

    /// The written columns of a row image (the image itself when every column is written).
    fn written(&self, row: Vec<Value>) -> Vec<Value> {
        if self.pick.len() == self.map.columns.len() {
            row
        } else {
            project(&row, &self.pick)
        }
    }
}

/// A change's key, before-image and after-image.
type Images = (Vec<Value>, Option<Vec<Value>>, Option<Vec<Value>>);

/// The values of `row` at `pick`.
fn project(row: &[Value], pick: &[usize]) -> Vec<Value> {
    pick.iter()
        .map(|&i| row.get(i).cloned().unwrap_or(Value::NULL))
        .collect()
}

/// Writes JSON or msgpack trees.
trait Tree {
    fn open(&mut self, out: &mut Vec<u8>, fields: u32);
    fn field(&mut self, out: &mut Vec<u8>, name: &str);
    fn close(&mut self, out: &mut Vec<u8>);
    fn str(&mut self, out: &mut Vec<u8>, s: &str);
    fn uint(&mut self, out: &mut Vec<u8>, n: u64);
    fn null(&mut self, out: &mut Vec<u8>);
    /// One row through a row encoder (which writes one JSON object + newline or one map).
    fn row(&mut self, out: &mut Vec<u8>, enc: &mut dyn RowEncoder, row: Vec<Value>) -> Result<()>;
    fn end_event(&mut self, out: &mut Vec<u8>);
}

struct JsonTree {
    first: Vec<bool>,
}

impl Tree for JsonTree {
    fn open(&mut self, out: &mut Vec<u8>, _fields: u32) {
        out.push(b'{');
        self.first.push(true);
    }
    fn field(&mut self, out: &mut Vec<u8>, name: &str) {
        if let Some(f) = self.first.last_mut() {
            if !*f {
                out.push(b',');
            }
            *f = false;
        }
        value::write_str(out, name);
        out.push(b':');
    }
    fn close(&mut self, out: &mut Vec<u8>) {
        out.push(b'}');
        self.first.pop();
    }
    fn str(&mut self, out: &mut Vec<u8>, s: &str) {
        value::write_str(out, s);
    }
    fn uint(&mut self, out: &mut Vec<u8>, n: u64) {
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }
    fn null(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"null");
    }
    fn row(&mut self, out: &mut Vec<u8>, enc: &mut dyn RowEncoder, row: Vec<Value>) -> Result<()> {
        enc.rows(std::slice::from_ref(&row), out)?;
        if out.last() == Some(&b'\n') {
            out.pop();
        }
        Ok(())
    }
    fn end_event(&mut self, out: &mut Vec<u8>) {
        out.push(b'\n');
    }
}

struct MsgpackTree;

impl Tree for MsgpackTree {
    fn open(&mut self, out: &mut Vec<u8>, fields: u32) {
        let _ = rmp::encode::write_map_len(out, fields);
    }
    fn field(&mut self, out: &mut Vec<u8>, name: &str) {
        let _ = rmp::encode::write_str(out, name);
    }
    fn close(&mut self, _out: &mut Vec<u8>) {}
    fn str(&mut self, out: &mut Vec<u8>, s: &str) {
        let _ = rmp::encode::write_str(out, s);
    }
    fn uint(&mut self, out: &mut Vec<u8>, n: u64) {
        let _ = rmp::encode::write_uint(out, n);
    }
    fn null(&mut self, out: &mut Vec<u8>) {
        let _ = rmp::encode::write_nil(out);
    }
    fn row(&mut self, out: &mut Vec<u8>, enc: &mut dyn RowEncoder, row: Vec<Value>) -> Result<()> {
        enc.rows(std::slice::from_ref(&row), out)
    }
    fn end_event(&mut self, _out: &mut Vec<u8>) {}
}

/// Encodes change events into the plain bytes of a changelog file.
pub struct EventEncoder {
    format: Format,
    envelope: Envelope,
    json: JsonTree,
    msgpack: MsgpackTree,
    /// A transaction's `BEGIN` is written (SQL).
    sql_in_trx: bool,
    started: bool,
    avro: Option<AvroState>,
    parquet: Option<(Vec<String>, crate::format::parquet::ParquetEvents)>,
    parquet_rows: Option<(Vec<String>, crate::format::parquet::ParquetRows)>,
}

/// An Avro changelog file: its schema (a union of the table versions it may hold), one record
/// encoder per version, and the block being filled.
struct AvroState {
    sigs: Vec<String>,
    row: Vec<crate::format::avro::AvroEncoder>,
    key: Vec<crate::format::avro::AvroEncoder>,
    flat: Vec<crate::format::avro::AvroEncoder>,
    schema: String,
    sync: [u8; 16],
    block: Vec<u8>,
    count: i64,
    /// Kafka: one event per message (single-object encoding), never framed in blocks.
    single: bool,
}

fn avro_record_schema(t: &TableInfo, name: &str) -> serde_json::Value {
    let mut v = crate::format::avro::schema_json(t);
    v["name"] = serde_json::Value::String(crate::format::avro::avro_name(name));
    v
}

fn avro_full_name(t: &TableInfo, name: &str) -> String {
    format!(
        "storagetapper.{}.{}",
        crate::format::avro::avro_name(&t.schema),
        crate::format::avro::avro_name(name)
    )
}

impl AvroState {
    fn new(envelope: Envelope, versions: &[AvroVersion]) -> AvroState {
        use crate::format::avro::AvroEncoder;
        use serde_json::json;
        let names = |i: usize, v: &AvroVersion| {
            (
                format!("{}_v{i}", v.row.table),
                format!("{}_key_v{i}", v.row.table),
                format!("{}_row_v{i}", v.row.table),
            )
        };
        let opt = |t: &str| json!(["null", t]);
        let schema = if envelope == Envelope::Row {
            let mut branches: Vec<serde_json::Value> = versions
                .iter()
                .enumerate()
                .map(|(i, v)| avro_record_schema(&v.flat, &names(i, v).2))
                .collect();
            branches.push(json!({
                "type": "record", "name": "Ddl", "namespace": "storagetapper",
                "fields": [
                    {"name": "__op", "type": "string"}, {"name": "__seqno", "type": "long"},
                    {"name": "__ts_ms", "type": "long"}, {"name": "__schema", "type": "string"},
                    {"name": "__ddl", "type": "string"},
                ],
            }));
            serde_json::Value::Array(branches)
        } else {
            let mut before = vec![json!("null")];
            let mut after = vec![json!("null")];
            let mut key = vec![json!("null")];
            for (i, v) in versions.iter().enumerate() {
                let (r, k, _) = names(i, v);
                before.push(avro_record_schema(&v.row, &r));
                after.push(json!(avro_full_name(&v.row, &r)));
                key.push(avro_record_schema(&v.key, &k));
            }
            json!({
                "type": "record", "name": "ChangeEvent", "namespace": "storagetapper",
                "fields": [
                    {"name": "before", "type": before},
                    {"name": "after", "type": after},
                    {"name": "source", "type": {
                        "type": "record", "name": "Source", "namespace": "storagetapper",
                        "fields": [
                            {"name": "version", "type": "string"},
                            {"name": "connector", "type": "string"},
                            {"name": "name", "type": "string"},
                            {"name": "ts_ms", "type": "long"},
                            {"name": "snapshot", "type": "string"},
                            {"name": "db", "type": opt("string")},
                            {"name": "table", "type": opt("string")},
                            {"name": "server_id", "type": "long"},
                            {"name": "gtid", "type": opt("string")},
                            {"name": "file", "type": "string"},
                            {"name": "pos", "type": "long"},
                            {"name": "row", "type": "long"},
                        ],
                    }},
                    {"name": "op", "type": "string"},
                    {"name": "ts_ms", "type": "long"},
                    {"name": "key", "type": key},
                    {"name": "seqno", "type": "long"},
                    {"name": "ddl", "type": opt("string")},
                    {"name": "db", "type": opt("string")},
                ],
            })
        };
        let schema = schema.to_string();
        let seed = format!("{schema}{:?}{}", SystemTime::now(), std::process::id());
        let digest = <sha2::Sha256 as sha2::Digest>::digest(seed.as_bytes());
        let mut sync = [0u8; 16];
        sync.copy_from_slice(&digest[..16]);
        AvroState {
            sigs: versions.iter().map(|v| v.sig.clone()).collect(),
            row: versions.iter().map(|v| AvroEncoder::new(&v.row)).collect(),
            key: versions.iter().map(|v| AvroEncoder::new(&v.key)).collect(),
            flat: versions.iter().map(|v| AvroEncoder::new(&v.flat)).collect(),
            schema,
            sync,
            block: Vec::with_capacity(1 << 20),
            count: 0,
            single: false,
        }
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        use crate::format::avro::write_long;
        if self.count == 0 {
            return;
        }
        write_long(out, self.count);
        write_long(out, i64::try_from(self.block.len()).unwrap_or(i64::MAX));
        out.extend_from_slice(&self.block);
        out.extend_from_slice(&self.sync);
        self.block.clear();
        self.count = 0;
    }

    fn source(&mut self, src: &EventSource<'_>, table: Option<&TableMap>) -> Result<()> {
        use crate::format::avro::{write_bytes, write_long};
        let b = &mut self.block;
        let opt = |b: &mut Vec<u8>, v: Option<&str>| match v {
            Some(s) => {
                write_long(b, 1);
                write_bytes(b, s.as_bytes());
            }
            None => write_long(b, 0),
        };
        write_bytes(b, env!("CARGO_PKG_VERSION").as_bytes());
        write_bytes(b, b"mysql");
        write_bytes(b, src.name.as_bytes());
        write_long(b, i64::try_from(src.ts_ms)?);
        write_bytes(b, if src.snapshot { b"true" } else { b"false" });
        opt(b, table.map(|t| t.schema.as_str()));
        opt(b, table.map(|t| t.table.as_str()));
        write_long(b, i64::from(src.server_id));
        opt(b, (!src.gtid.is_empty()).then_some(src.gtid));
        write_bytes(b, src.file.as_bytes());
        write_long(b, i64::try_from(src.pos)?);
        write_long(b, i64::try_from(src.row)?);
        Ok(())
    }
}

/// Kafka with `format = "avro"`: events and keys of one table version (or the schema-change
/// events, with no version) in the Avro specification's single-object encoding: `C3 01`, the
/// 8-byte little-endian CRC-64-AVRO (Rabin) fingerprint of the writer schema's canonical form,
/// then the datum. The schemas themselves go to the schemas topic, keyed by fingerprint.
pub struct AvroSingle {
    events: EventEncoder,
    key: Option<crate::format::avro::AvroEncoder>,
    /// The value schema (JSON) and its fingerprint.
    pub value_schema: (String, [u8; 8]),
    /// The key schema (JSON) and its fingerprint (none for schema changes: their key is the
    /// database name as text, like the JSON form).
    pub key_schema: Option<(String, [u8; 8])>,
}

/// Starts a single-object encoded message in `out` (replaced): marker and fingerprint.
fn single_object_header(out: &mut Vec<u8>, fp: &[u8; 8]) {
    out.clear();
    out.extend_from_slice(&[0xC3, 0x01]);
    out.extend_from_slice(fp);
}

/// The CRC-64-AVRO fingerprint of a schema's canonical form.
///
/// # Errors
/// When the schema does not parse (a bug: we wrote it).
pub fn avro_fingerprint(schema: &str) -> Result<[u8; 8]> {
    let parsed =
        apache_avro::Schema::parse_str(schema).with_context(|| format!("Avro schema {schema}"))?;
    let fp = parsed.fingerprint::<apache_avro::rabin::Rabin>();
    fp.bytes
        .as_slice()
        .try_into()
        .map_err(|_| anyhow!("Rabin fingerprint of {} bytes", fp.bytes.len()))
}

impl AvroSingle {
    /// For one table version, or (`None`) for schema-change events.
    ///
    /// # Errors
    /// When a schema does not parse.
    pub fn new(envelope: Envelope, version: Option<&AvroVersion>) -> Result<AvroSingle> {
        let versions: Vec<AvroVersion> = version.into_iter().cloned().collect();
        let mut events = EventEncoder::for_file(Format::Avro, envelope, &versions, None)?;
        let a = events
            .avro
            .as_mut()
            .ok_or_else(|| anyhow!("Avro state missing"))?;
        a.single = true;
        let value = a.schema.clone();
        let value_fp = avro_fingerprint(&value)?;
        let key_schema = match version {
            Some(v) => {
                let mut schema = avro_record_schema(&v.key, &format!("{}_key", v.key.table));
                schema["namespace"] = serde_json::Value::String(format!(
                    "storagetapper.{}",
                    crate::format::avro::avro_name(&v.key.schema)
                ));
                let schema = schema.to_string();
                let fp = avro_fingerprint(&schema)?;
                Some((schema, fp))
            }
            None => None,
        };
        Ok(AvroSingle {
            events,
            key: version.map(|v| crate::format::avro::AvroEncoder::new(&v.key)),
            value_schema: (value, value_fp),
            key_schema,
        })
    }

    /// The event just encoded, as a message value: header, then the datum.
    fn take(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let a = self
            .events
            .avro
            .as_mut()
            .ok_or_else(|| anyhow!("Avro state missing"))?;
        single_object_header(out, &self.value_schema.1);
        out.append(&mut a.block);
        a.count = 0;
        Ok(())
    }

    /// One row change as a message value, into `out` (replaced).
    ///
    /// # Errors
    /// When a value does not fit its column.
    #[allow(clippy::too_many_arguments)]
    pub fn row_event(
        &mut self,
        out: &mut Vec<u8>,
        t: &mut StreamTable,
        op: Op,
        seqno: u64,
        src: &EventSource<'_>,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
    ) -> Result<()> {
        self.events
            .avro_row_event(t, op, seqno, src, before, after)?;
        self.take(out)
    }

    /// One schema change as a message value, into `out` (replaced).
    ///
    /// # Errors
    /// On encoding failure.
    pub fn ddl_event(
        &mut self,
        out: &mut Vec<u8>,
        seqno: u64,
        src: &EventSource<'_>,
        schema: &str,
        statement: &str,
    ) -> Result<()> {
        self.events.avro_ddl_event(seqno, src, schema, statement)?;
        self.take(out)
    }

    /// The message key of a row image (its key columns as the key record), into `out`.
    ///
    /// # Errors
    /// When a value does not fit its column, or for schema-change events (no key record).
    pub fn key(&mut self, out: &mut Vec<u8>, t: &StreamTable, image: &[Value]) -> Result<()> {
        let (Some(enc), Some((_, fp))) = (self.key.as_mut(), self.key_schema.as_ref()) else {
            bail!("schema-change events have no key record");
        };
        single_object_header(out, fp);
        enc.record(&project(image, &t.key), out)
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl EventEncoder {
    /// For a format and envelope.
    ///
    /// # Errors
    /// When the format cannot hold change events yet.
    pub fn new(format: Format, envelope: Envelope) -> Result<EventEncoder> {
        Self::for_file(format, envelope, &[], None)
    }

    /// For one changelog file; an Avro file's schema holds `versions`.
    ///
    /// # Errors
    /// When the format cannot hold change events yet.
    pub fn for_file(
        format: Format,
        envelope: Envelope,
        versions: &[AvroVersion],
        inner_zstd: Option<i32>,
    ) -> Result<EventEncoder> {
        let tables = || -> Vec<crate::format::parquet::EventTable> {
            versions
                .iter()
                .enumerate()
                .map(|(i, v)| crate::format::parquet::EventTable {
                    name: crate::format::avro::avro_name(&format!(
                        "{}_{}_v{i}",
                        v.row.schema, v.row.table
                    )),
                    row: v.row.clone(),
                    key: v.key.clone(),
                })
                .collect()
        };
        let sigs = || versions.iter().map(|v| v.sig.clone()).collect::<Vec<_>>();
        let parquet_rows = if format == Format::Parquet && envelope == Envelope::Row {
            Some((
                sigs(),
                crate::format::parquet::ParquetRows::new(&tables(), inner_zstd)?,
            ))
        } else {
            None
        };
        let parquet = if format == Format::Parquet && envelope != Envelope::Row {
            Some((
                sigs(),
                crate::format::parquet::ParquetEvents::new(&tables(), inner_zstd)?,
            ))
        } else {
            None
        };
        Ok(EventEncoder {
            parquet,
            parquet_rows,
            format,
            envelope,
            json: JsonTree { first: Vec::new() },
            msgpack: MsgpackTree,
            sql_in_trx: false,
            started: false,
            avro: (format == Format::Avro).then(|| AvroState::new(envelope, versions)),
        })
    }

    fn tree(&mut self) -> &mut dyn Tree {
        match self.format {
            Format::Msgpack => &mut self.msgpack,
            _ => &mut self.json,
        }
    }

    /// Starts a file (SQL: the session header).
    pub fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            if self.format == Format::Sql {
                out.extend_from_slice(format::sql::HEADER.as_bytes());
            }
            if let Some(a) = &self.avro {
                crate::format::avro::write_header(out, &a.schema, &a.sync);
            }
        }
        self.started = true;
    }

    /// Ends a transaction that had events (SQL: `COMMIT`; Avro: the block is written).
    ///
    /// # Errors
    /// When a Parquet batch cannot be encoded.
    pub fn commit(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.format == Format::Sql && self.sql_in_trx {
            out.extend_from_slice(b"COMMIT;\n");
            self.sql_in_trx = false;
        }
        if let Some(a) = self.avro.as_mut() {
            a.flush(out);
        }
        Ok(())
    }

    /// Keeps memory bounded inside a large transaction: a full Avro block or a full Parquet
    /// batch goes to `out` now (the file is still only committed at a transaction boundary).
    fn bound(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if let Some(a) = self.avro.as_mut()
            && !a.single
            && a.block.len() >= 1 << 20
        {
            a.flush(out);
        }
        if let Some((_, p)) = self.parquet.as_mut()
            && p.buffered() >= 4096
        {
            p.flush(out)?;
        }
        if let Some((_, p)) = self.parquet_rows.as_mut()
            && p.buffered() >= 4096
        {
            p.flush(out)?;
        }
        Ok(())
    }

    /// Ends the file (Parquet: the last row group and the footer).
    ///
    /// # Errors
    /// On encoding failure.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if let Some((_, p)) = self.parquet.as_mut() {
            p.finish(out)?;
        }
        if let Some((_, p)) = self.parquet_rows.as_mut() {
            p.finish(out)?;
        }
        Ok(())
    }

    fn parquet_src<'a>(
        src: &'a EventSource<'a>,
        table: Option<(&'a str, &'a str)>,
    ) -> Result<crate::format::parquet::EventSourceFields<'a>> {
        Ok(crate::format::parquet::EventSourceFields {
            name: src.name,
            ts_ms: i64::try_from(src.ts_ms)?,
            snapshot: src.snapshot,
            table,
            server_id: i64::from(src.server_id),
            gtid: (!src.gtid.is_empty()).then_some(src.gtid),
            file: src.file,
            pos: i64::try_from(src.pos)?,
            row: i64::try_from(src.row)?,
        })
    }

    fn avro_row_event(
        &mut self,
        t: &StreamTable,
        op: Op,
        seqno: u64,
        src: &EventSource<'_>,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
    ) -> Result<()> {
        use crate::format::avro::{write_bytes, write_long};
        let envelope = self.envelope;
        let a = self
            .avro
            .as_mut()
            .ok_or_else(|| anyhow!("Avro state missing"))?;
        let i = t.version_in(&a.sigs)?;
        let branch = i64::try_from(i)?;
        if envelope == Envelope::Row {
            let row = t.flat_row(op, seqno, src.ts_ms, before, after)?;
            write_long(&mut a.block, branch);
            a.flat[i].record(&row, &mut a.block)?;
        } else {
            let (key, before, after) = t.images(before, after)?;
            for image in [before, after] {
                match image {
                    Some(r) => {
                        write_long(&mut a.block, branch + 1);
                        a.row[i].record(&r, &mut a.block)?;
                    }
                    None => write_long(&mut a.block, 0),
                }
            }
            a.source(src, Some(&t.map))?;
            write_bytes(&mut a.block, op.code().as_bytes());
            write_long(&mut a.block, i64::try_from(now_ms())?);
            write_long(&mut a.block, branch + 1);
            a.key[i].record(&key, &mut a.block)?;
            write_long(&mut a.block, i64::try_from(seqno)?);
            write_long(&mut a.block, 0);
            write_long(&mut a.block, 0);
        }
        a.count += 1;
        Ok(())
    }

    fn avro_ddl_event(
        &mut self,
        seqno: u64,
        src: &EventSource<'_>,
        schema: &str,
        statement: &str,
    ) -> Result<()> {
        use crate::format::avro::{write_bytes, write_long};
        let envelope = self.envelope;
        let a = self
            .avro
            .as_mut()
            .ok_or_else(|| anyhow!("Avro state missing"))?;
        if envelope == Envelope::Row {
            write_long(&mut a.block, i64::try_from(a.sigs.len())?);
            write_bytes(&mut a.block, b"ddl");
            write_long(&mut a.block, i64::try_from(seqno)?);
            write_long(&mut a.block, i64::try_from(src.ts_ms)?);
            write_bytes(&mut a.block, schema.as_bytes());
            write_bytes(&mut a.block, statement.as_bytes());
        } else {
            write_long(&mut a.block, 0);
            write_long(&mut a.block, 0);
            a.source(src, None)?;
            write_bytes(&mut a.block, b"ddl");
            write_long(&mut a.block, i64::try_from(now_ms())?);
            write_long(&mut a.block, 0);
            write_long(&mut a.block, i64::try_from(seqno)?);
            write_long(&mut a.block, 1);
            write_bytes(&mut a.block, statement.as_bytes());
            write_long(&mut a.block, 1);
            write_bytes(&mut a.block, schema.as_bytes());
        }
        a.count += 1;
        Ok(())
    }

    /// One row change.
    ///
    /// # Errors
    /// When a value does not fit its column.
    #[allow(clippy::too_many_arguments)]
    pub fn row_event(
        &mut self,
        out: &mut Vec<u8>,
        t: &mut StreamTable,
        op: Op,
        seqno: u64,
        src: &EventSource<'_>,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
    ) -> Result<()> {
        if self.format == Format::Sql {
            return self.sql_event(out, t, op, seqno, src, before.as_deref(), after.as_deref());
        }
        if self.format == Format::Avro {
            self.avro_row_event(t, op, seqno, src, before, after)?;
            return self.bound(out);
        }
        if let Some((sigs, p)) = self.parquet_rows.as_mut() {
            let i = t.version_in(sigs)?;
            let image = t.written(
                after
                    .or(before)
                    .ok_or_else(|| anyhow!("event without a row"))?,
            );
            let name = t.map.name();
            p.push(
                op.code(),
                i64::try_from(seqno)?,
                i64::try_from(src.ts_ms)?,
                Some((i, &name, &image)),
                None,
            )?;
            return self.bound(out);
        }
        if let Some((sigs, p)) = self.parquet.as_mut() {
            let i = t.version_in(sigs)?;
            let (key, before, after) = t.images(before, after)?;
            let fields = Self::parquet_src(src, Some((&t.map.schema, &t.map.table)))?;
            p.push(
                op.code(),
                i64::try_from(seqno)?,
                i64::try_from(now_ms())?,
                &fields,
                Some(i),
                [before.as_deref(), after.as_deref(), Some(&key)],
                None,
            )?;
            return self.bound(out);
        }
        if t.flat.is_some() {
            let row = t.flat_row(op, seqno, src.ts_ms, before, after)?;
            let tree: &mut dyn Tree = match self.format {
                Format::Msgpack => &mut self.msgpack,
                _ => &mut self.json,
            };
            let flat = t
                .flat
                .as_mut()
                .ok_or_else(|| anyhow!("row envelope encoder missing"))?;
            tree.row(out, flat.as_mut(), row)?;
            tree.end_event(out);
            return Ok(());
        }
        let envelope = self.envelope;
        let table = t.map.name();
        let (key, before, after) = t.images(before, after)?;
        let tree = self.tree();
        tree.open(
            out,
            if envelope == Envelope::Storagetapper {
                9
            } else {
                8
            },
        );
        let put_common = |tree: &mut dyn Tree, out: &mut Vec<u8>| -> Result<()> {
            tree.field(out, "before");
            match before {
                Some(b) => tree.row(out, t.row.as_mut(), b)?,
                None => tree.null(out),
            }
            tree.field(out, "after");
            match after {
                Some(a) => tree.row(out, t.row.as_mut(), a)?,
                None => tree.null(out),
            }
            Ok(())
        };
        if envelope == Envelope::Storagetapper {
            tree.field(out, "seqno");
            tree.uint(out, seqno);
            tree.field(out, "table");
            tree.str(out, &table);
            tree.field(out, "op");
            tree.str(out, op.code());
            tree.field(out, "key");
            tree.row(out, t.key_enc.as_mut(), key)?;
            put_common(tree, out)?;
            write_source(tree, out, src, Some(&t.map))?;
            tree.field(out, "ts_ms");
            tree.uint(out, now_ms());
            tree.field(out, "gtid");
            tree.str(out, src.gtid);
        } else {
            put_common(tree, out)?;
            write_source(tree, out, src, Some(&t.map))?;
            tree.field(out, "op");
            tree.str(out, op.code());
            tree.field(out, "ts_ms");
            tree.uint(out, now_ms());
            tree.field(out, "key");
            tree.row(out, t.key_enc.as_mut(), key)?;
            tree.field(out, "seqno");
            tree.uint(out, seqno);
        }
        tree.close(out);
        tree.end_event(out);
        Ok(())
    }

    /// A schema change (a record of its own).
    ///
    /// # Errors
    /// On encoding failure.
    pub fn ddl_event(
        &mut self,
        out: &mut Vec<u8>,
        seqno: u64,
        src: &EventSource<'_>,
        schema: &str,
        statement: &str,
    ) -> Result<()> {
        if self.format == Format::Sql {
            self.commit(out)?;
            out.extend_from_slice(
                format!(
                    "-- seqno={seqno} op=ddl gtid={} pos={}:{}\n",
                    src.gtid, src.file, src.pos
                )
                .as_bytes(),
            );
            if !schema.is_empty() {
                out.extend_from_slice(format!("USE {};\n", quote_ident(schema)).as_bytes());
            }
            out.extend_from_slice(statement.as_bytes());
            out.extend_from_slice(b";\n");
            return Ok(());
        }
        if self.format == Format::Avro {
            self.avro_ddl_event(seqno, src, schema, statement)?;
            return self.bound(out);
        }
        if let Some((_, p)) = self.parquet_rows.as_mut() {
            p.push(
                "ddl",
                i64::try_from(seqno)?,
                i64::try_from(src.ts_ms)?,
                None,
                Some((schema, statement)),
            )?;
            return self.bound(out);
        }
        if let Some((_, p)) = self.parquet.as_mut() {
            let fields = Self::parquet_src(src, None)?;
            p.push(
                "ddl",
                i64::try_from(seqno)?,
                i64::try_from(now_ms())?,
                &fields,
                None,
                [None, None, None],
                Some((schema, statement)),
            )?;
            return self.bound(out);
        }
        let envelope = self.envelope;
        let tree = self.tree();
        if envelope == Envelope::Row {
            tree.open(out, 5);
            tree.field(out, "__op");
            tree.str(out, "ddl");
            tree.field(out, "__seqno");
            tree.uint(out, seqno);
            tree.field(out, "__ts_ms");
            tree.uint(out, src.ts_ms);
            tree.field(out, "__schema");
            tree.str(out, schema);
            tree.field(out, "__ddl");
            tree.str(out, statement);
        } else {
            tree.open(out, 8);
            tree.field(out, "before");
            tree.null(out);
            tree.field(out, "after");
            tree.null(out);
            write_source(tree, out, src, None)?;
            // `source.db` is the statement's default schema.
            tree.field(out, "op");
            tree.str(out, "ddl");
            tree.field(out, "ddl");
            tree.str(out, statement);
            tree.field(out, "db");
            tree.str(out, schema);
            tree.field(out, "ts_ms");
            tree.uint(out, now_ms());
            tree.field(out, "seqno");
            tree.uint(out, seqno);
        }
        tree.close(out);
        tree.end_event(out);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn sql_event(
        &mut self,
        out: &mut Vec<u8>,
        t: &mut StreamTable,
        op: Op,
        seqno: u64,
        src: &EventSource<'_>,
        before: Option<&[Value]>,
        after: Option<&[Value]>,
    ) -> Result<()> {
        if !self.sql_in_trx {
            out.extend_from_slice(format!("-- gtid={}\nBEGIN;\n", src.gtid).as_bytes());
            self.sql_in_trx = true;
        }
        out.extend_from_slice(
            format!(
                "-- seqno={seqno} op={} pos={}:{} ts_ms={}\n",
                op.code(),
                src.file,
                src.pos,
                src.ts_ms
            )
            .as_bytes(),
        );
        let table = quote_table(&t.map.schema, &t.map.table);
        let cols = &t.map.columns;
        let value = |out: &mut Vec<u8>, i: usize, row: &[Value]| -> Result<()> {
            let c = &cols[i].info;
            value::write_sql(out, c.kind, c.fsp, row.get(i).unwrap_or(&Value::NULL))
                .map_err(|e| anyhow!("{}.{}: {e}", t.map.name(), c.name))
        };
        let condition = |out: &mut Vec<u8>, row: &[Value]| -> Result<()> {
            for (n, &i) in t.key.iter().enumerate() {
                if n > 0 {
                    out.extend_from_slice(b" AND ");
                }
                out.extend_from_slice(quote_ident(&cols[i].info.name).as_bytes());
                out.extend_from_slice(b" <=> ");
                value(out, i, row)?;
            }
            Ok(())
        };
        match (op, before, after) {
            (Op::Create | Op::Read, _, Some(a)) => {
                out.extend_from_slice(format!("INSERT INTO {table} (").as_bytes());
                for (n, &i) in t.pick.iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(quote_ident(&cols[i].info.name).as_bytes());
                }
                out.extend_from_slice(b") VALUES (");
                for (n, &i) in t.pick.iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    value(out, i, a)?;
                }
                out.extend_from_slice(b");\n");
            }
            (Op::Update, Some(b), Some(a)) => {
                out.extend_from_slice(format!("UPDATE {table} SET ").as_bytes());
                for (n, &i) in t.pick.iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(quote_ident(&cols[i].info.name).as_bytes());
                    out.push(b'=');
                    value(out, i, a)?;
                }
                out.extend_from_slice(b" WHERE ");
                condition(out, b)?;
                out.extend_from_slice(b" LIMIT 1;\n");
            }
            (Op::Delete, Some(b), _) => {
                out.extend_from_slice(format!("DELETE FROM {table} WHERE ").as_bytes());
                condition(out, b)?;
                out.extend_from_slice(b" LIMIT 1;\n");
            }
            _ => bail!("{}: {:?} event without its row image", t.map.name(), op),
        }
        Ok(())
    }
}

fn write_source(
    tree: &mut dyn Tree,
    out: &mut Vec<u8>,
    src: &EventSource<'_>,
    table: Option<&TableMap>,
) -> Result<()> {
    tree.field(out, "source");
    tree.open(out, 12);
    tree.field(out, "version");
    tree.str(out, env!("CARGO_PKG_VERSION"));
    tree.field(out, "connector");
    tree.str(out, "mysql");
    tree.field(out, "name");
    tree.str(out, src.name);
    tree.field(out, "ts_ms");
    tree.uint(out, src.ts_ms);
    tree.field(out, "snapshot");
    tree.str(out, if src.snapshot { "true" } else { "false" });
    tree.field(out, "db");
    match table {
        Some(t) => tree.str(out, &t.schema),
        None => tree.null(out),
    }
    tree.field(out, "table");
    match table {
        Some(t) => tree.str(out, &t.table),
        None => tree.null(out),
    }
    tree.field(out, "server_id");
    tree.uint(out, u64::from(src.server_id));
    tree.field(out, "gtid");
    if src.gtid.is_empty() {
        tree.null(out);
    } else {
        tree.str(out, src.gtid);
    }
    tree.field(out, "file");
    tree.str(out, src.file);
    tree.field(out, "pos");
    tree.uint(out, src.pos);
    tree.field(out, "row");
    tree.uint(out, src.row);
    tree.close(out);
    Ok(())
}

/// A changelog file being written: plain bytes go through [zstd →] [age →] to a temporary
/// name at the destination; [`ChangeFile::commit`] gives it its final name.
pub struct ChangeFile {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    encode: JoinHandle<Result<(u64, String)>>,
    write: JoinHandle<Result<FileWriter>>,
    /// Final path.
    pub path: String,
    /// Plain bytes handed in.
    pub plain_bytes: u64,
}

impl ChangeFile {
    /// Starts `path`.
    ///
    /// # Errors
    /// When the temporary file cannot be created.
    pub async fn create(
        sink: &Sink,
        path: &str,
        zstd_level: Option<i32>,
        recipients: &Recipients,
    ) -> Result<ChangeFile> {
        let mut file = sink.create(path).await?;
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(4);
        let recipients = recipients.clone();
        let encode = tokio::task::spawn_blocking(move || -> Result<(u64, String)> {
            let mut out = Out::new(HashSink::new(out_tx), zstd_level, &recipients)?;
            while let Some(buf) = rx.blocking_recv() {
                out.writer().write_all(&buf)?;
            }
            let mut sink = out.finish()?;
            sink.ship()?;
            Ok(sink.summary())
        });
        let write = tokio::spawn(async move {
            while let Some(buf) = out_rx.recv().await {
                file.write(buf).await?;
            }
            Ok(file)
        });
        Ok(ChangeFile {
            tx: Some(tx),
            encode,
            write,
            path: path.to_string(),
            plain_bytes: 0,
        })
    }

    /// Discards the file (its temporary name is removed).
    pub async fn abort(mut self) {
        self.tx = None;
        let _ = (&mut self.encode).await;
        if let Ok(Ok(file)) = (&mut self.write).await {
            file.abort().await;
        }
    }

    /// Hands on plain bytes.
    ///
    /// # Errors
    /// When the pipeline stopped (its error is reported by [`ChangeFile::commit`]).
    pub async fn write(&mut self, buf: Vec<u8>) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.plain_bytes += buf.len() as u64;
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| anyhow!("{}: already finished", self.path))?;
        if tx.send(buf).await.is_err() {
            // The pipeline failed: surface its error.
            self.tx = None;
            return Err(self.fail().await);
        }
        Ok(())
    }

    async fn fail(&mut self) -> anyhow::Error {
        let e = match (&mut self.encode).await {
            Ok(Err(e)) => e,
            Err(e) => anyhow!("encoder task: {e}"),
            Ok(Ok(_)) => match (&mut self.write).await {
                Ok(Err(e)) => e,
                Err(e) => anyhow!("writer task: {e}"),
                Ok(Ok(_)) => anyhow!("pipeline stopped"),
            },
        };
        e.context(format!("cannot write {}", self.path))
    }

    /// Ends the file and gives it its final name: (stored bytes, sha256).
    ///
    /// # Errors
    /// When any stage failed; the temporary file is then removed.
    pub async fn commit(mut self) -> Result<(u64, String)> {
        self.tx = None;
        let summary = (&mut self.encode)
            .await
            .map_err(|e| anyhow!("encoder task: {e}"))?
            .with_context(|| format!("cannot write {}", self.path))?;
        let file = (&mut self.write)
            .await
            .map_err(|e| anyhow!("writer task: {e}"))?
            .with_context(|| format!("cannot write {}", self.path))?;
        file.commit().await?;
        Ok(summary)
    }
}

/// The changelog file name for number `n` (the chunk naming of the layout).
pub fn file_name(n: u64, format: Format, compression: Compression, encrypted: bool) -> String {
    crate::layout::chunk_file(
        i64::try_from(n).unwrap_or(i64::MAX),
        format,
        compression,
        encrypted,
    )
}

/// The number of a changelog file name (`00012.jsonl.zst` → 12).
pub fn file_number(name: &str) -> Option<u64> {
    let base = name.rsplit('/').next()?;
    let (n, _) = base.split_once('.')?;
    if n.len() >= 5 && n.bytes().all(|b| b.is_ascii_digit()) {
        n.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        let n = file_name(12, Format::Json, Compression::Zstd, false);
        assert_eq!(n, "00012.jsonl.zst");
        assert_eq!(file_number(&format!("x/changelog/{n}")), Some(12));
        assert_eq!(file_number("123456.sql.age"), Some(123_456));
        assert_eq!(file_number(".00001.sql.tmp-1-2"), None);
    }
}
