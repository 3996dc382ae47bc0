//! Parquet through arrow: one row group per at most 32k rows (or 16 MiB buffered, whichever
//! comes first, so memory stays bounded), column statistics on, zstd inside the file when the
//! manifest asks for compression (Parquet files get no outer `.zst`, so any reader opens them).
//!
//! Types: INT8…INT64 and UINT8…UINT64 by the MySQL integer width, DECIMAL(p,s) as
//! Decimal128/Decimal256(p,s), FLOAT/DOUBLE, DATE as Date32, DATETIME as Timestamp(µs) without
//! time zone, TIMESTAMP as Timestamp(µs, UTC), TIME as INT64 microseconds, YEAR as INT16,
//! text/ENUM/SET/JSON as UTF8, binary/spatial as BINARY, BIT as UINT64. Each field carries the
//! MySQL type in its metadata (`mysql_type`). Zero dates: the typed value is null and the exact
//! text is in the `__storagetapper_raw` column (a JSON object, column name → text).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use arrow_array::builder::{
    BinaryBuilder, Date32Builder, Decimal128Builder, Decimal256Builder, Float32Builder,
    Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder, UInt8Builder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use mysql_async::Value;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::avro::{epoch_micros, from_epoch_micros};
use super::json::RAW_FIELD;
use super::msgpack::temporal_text;
use super::{ColumnInfo, RowDecoder, RowEncoder, TableInfo};
use crate::schema::Kind;
use crate::value;

/// Rows per row group at most.
const ROW_GROUP_ROWS: usize = 32 * 1024;
/// Buffered bytes that end a row group early.
const ROW_GROUP_BYTES: usize = 16 << 20;

fn int_width(column_type: &str) -> u8 {
    let t = column_type.to_ascii_lowercase();
    if t.starts_with("tinyint") {
        8
    } else if t.starts_with("smallint") {
        16
    } else if t.starts_with("mediumint") || t.starts_with("int") {
        32
    } else {
        64
    }
}

fn data_type(c: &ColumnInfo) -> DataType {
    match c.kind {
        Kind::Int => match int_width(&c.column_type) {
            8 => DataType::Int8,
            16 => DataType::Int16,
            32 => DataType::Int32,
            _ => DataType::Int64,
        },
        Kind::UInt => match int_width(&c.column_type) {
            8 => DataType::UInt8,
            16 => DataType::UInt16,
            32 => DataType::UInt32,
            _ => DataType::UInt64,
        },
        Kind::Year => DataType::Int16,
        Kind::Decimal => {
            let (p, s) = c.decimal_ps();
            let s = i8::try_from(s).unwrap_or(0);
            if p <= 38 {
                DataType::Decimal128(p.max(1), s)
            } else {
                DataType::Decimal256(p, s)
            }
        }
        Kind::Float => DataType::Float32,
        Kind::Double => DataType::Float64,
        Kind::Date => DataType::Date32,
        Kind::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
        Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Kind::Time => DataType::Int64,
        Kind::Text | Kind::Enum | Kind::Set | Kind::Json => DataType::Utf8,
        Kind::Binary | Kind::Geometry => DataType::Binary,
        Kind::Bit => DataType::UInt64,
    }
}

/// The Arrow schema of a table's Parquet files.
pub fn arrow_schema(table: &TableInfo) -> SchemaRef {
    let mut fields: Vec<Field> = table
        .columns
        .iter()
        .map(|c| {
            Field::new(&c.name, data_type(c), true).with_metadata(HashMap::from([(
                "mysql_type".to_string(),
                c.column_type.clone(),
            )]))
        })
        .collect();
    fields.push(Field::new(RAW_FIELD, DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

enum Col {
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    D128(Decimal128Builder, u8, i8),
    D256(Decimal256Builder, u8, i8),
    F32(Float32Builder),
    F64(Float64Builder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder, Option<Arc<str>>),
    Str(StringBuilder),
    Bin(BinaryBuilder),
}

impl Col {
    fn new(t: &DataType) -> Col {
        match t {
            DataType::Int8 => Col::I8(Int8Builder::new()),
            DataType::Int16 => Col::I16(Int16Builder::new()),
            DataType::Int32 => Col::I32(Int32Builder::new()),
            DataType::Int64 => Col::I64(Int64Builder::new()),
            DataType::UInt8 => Col::U8(UInt8Builder::new()),
            DataType::UInt16 => Col::U16(UInt16Builder::new()),
            DataType::UInt32 => Col::U32(UInt32Builder::new()),
            DataType::UInt64 => Col::U64(UInt64Builder::new()),
            DataType::Decimal128(p, s) => Col::D128(Decimal128Builder::new(), *p, *s),
            DataType::Decimal256(p, s) => Col::D256(Decimal256Builder::new(), *p, *s),
            DataType::Float32 => Col::F32(Float32Builder::new()),
            DataType::Float64 => Col::F64(Float64Builder::new()),
            DataType::Date32 => Col::Date(Date32Builder::new()),
            DataType::Timestamp(_, tz) => Col::Ts(TimestampMicrosecondBuilder::new(), tz.clone()),
            DataType::Binary => Col::Bin(BinaryBuilder::new()),
            _ => Col::Str(StringBuilder::new()),
        }
    }

    fn null(&mut self) {
        match self {
            Col::I8(b) => b.append_null(),
            Col::I16(b) => b.append_null(),
            Col::I32(b) => b.append_null(),
            Col::I64(b) => b.append_null(),
            Col::U8(b) => b.append_null(),
            Col::U16(b) => b.append_null(),
            Col::U32(b) => b.append_null(),
            Col::U64(b) => b.append_null(),
            Col::D128(b, ..) => b.append_null(),
            Col::D256(b, ..) => b.append_null(),
            Col::F32(b) => b.append_null(),
            Col::F64(b) => b.append_null(),
            Col::Date(b) => b.append_null(),
            Col::Ts(b, _) => b.append_null(),
            Col::Str(b) => b.append_null(),
            Col::Bin(b) => b.append_null(),
        }
    }

    /// Appends `v`; returns false when the value has no typed form (a zero date).
    fn push(&mut self, v: &Value) -> Result<bool> {
        let int = |v: &Value| -> Result<i64> {
            match v {
                Value::Int(n) => Ok(*n),
                Value::UInt(n) => Ok(i64::try_from(*n)?),
                Value::Time(..) => Ok(value::time_micros(v).unwrap_or(0)),
                other => bail!("{other:?} is not an integer"),
            }
        };
        let uint = |v: &Value| -> Result<u64> {
            match v {
                Value::UInt(n) => Ok(*n),
                Value::Int(n) => Ok(u64::try_from(*n)?),
                Value::Bytes(b) => Ok(b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x))),
                other => bail!("{other:?} is not an unsigned integer"),
            }
        };
        let text = |v: &Value| -> Result<String> {
            match v {
                Value::Bytes(b) => {
                    String::from_utf8(b.clone()).map_err(|e| anyhow!("text is not UTF-8: {e}"))
                }
                other => bail!("{other:?} is not text"),
            }
        };
        if let Value::NULL = v {
            self.null();
            return Ok(true);
        }
        match self {
            Col::I8(b) => b.append_value(i8::try_from(int(v)?)?),
            Col::I16(b) => b.append_value(i16::try_from(int(v)?)?),
            Col::I32(b) => b.append_value(i32::try_from(int(v)?)?),
            Col::I64(b) => b.append_value(int(v)?),
            Col::U8(b) => b.append_value(u8::try_from(uint(v)?)?),
            Col::U16(b) => b.append_value(u16::try_from(uint(v)?)?),
            Col::U32(b) => b.append_value(u32::try_from(uint(v)?)?),
            Col::U64(b) => b.append_value(uint(v)?),
            Col::D128(b, _, s) => {
                let unscaled = value::unscaled_digits(&text(v)?, usize::try_from(*s).unwrap_or(0))
                    .map_err(|e| anyhow!("{e}"))?;
                b.append_value(
                    unscaled
                        .parse::<i128>()
                        .map_err(|_| anyhow!("decimal out of range"))?,
                );
            }
            Col::D256(b, _, s) => {
                let unscaled = value::unscaled_digits(&text(v)?, usize::try_from(*s).unwrap_or(0))
                    .map_err(|e| anyhow!("{e}"))?;
                b.append_value(
                    arrow_buffer::i256::from_string(&unscaled)
                        .ok_or_else(|| anyhow!("decimal out of range"))?,
                );
            }
            Col::F32(b) => match v {
                Value::Float(f) => b.append_value(*f),
                other => bail!("{other:?} is not a FLOAT"),
            },
            Col::F64(b) => match v {
                Value::Double(f) => b.append_value(*f),
                other => bail!("{other:?} is not a DOUBLE"),
            },
            Col::Date(b) => match epoch_micros(v) {
                Some(us) => b.append_value(i32::try_from(us.div_euclid(86_400_000_000))?),
                None => {
                    b.append_null();
                    return Ok(false);
                }
            },
            Col::Ts(b, _) => match epoch_micros(v) {
                Some(us) => b.append_value(us),
                None => {
                    b.append_null();
                    return Ok(false);
                }
            },
            Col::Str(b) => b.append_value(text(v)?),
            Col::Bin(b) => match v {
                Value::Bytes(x) => b.append_value(x),
                other => bail!("{other:?} is not bytes"),
            },
        }
        Ok(true)
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        Ok(match self {
            Col::I8(b) => Arc::new(b.finish()),
            Col::I16(b) => Arc::new(b.finish()),
            Col::I32(b) => Arc::new(b.finish()),
            Col::I64(b) => Arc::new(b.finish()),
            Col::U8(b) => Arc::new(b.finish()),
            Col::U16(b) => Arc::new(b.finish()),
            Col::U32(b) => Arc::new(b.finish()),
            Col::U64(b) => Arc::new(b.finish()),
            Col::D128(b, p, s) => Arc::new(b.finish().with_precision_and_scale(*p, *s)?),
            Col::D256(b, p, s) => Arc::new(b.finish().with_precision_and_scale(*p, *s)?),
            Col::F32(b) => Arc::new(b.finish()),
            Col::F64(b) => Arc::new(b.finish()),
            Col::Date(b) => Arc::new(b.finish()),
            Col::Ts(b, tz) => Arc::new(b.finish().with_timezone_opt(tz.clone())),
            Col::Str(b) => Arc::new(b.finish()),
            Col::Bin(b) => Arc::new(b.finish()),
        })
    }
}

/// Collects what the Arrow writer emits.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("buffer poisoned"))?
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn drain_into(&self, out: &mut Vec<u8>) -> Result<()> {
        let mut b = self.0.lock().map_err(|_| anyhow!("buffer poisoned"))?;
        out.append(&mut b);
        Ok(())
    }
}

/// Encoder.
pub struct ParquetEncoder {
    columns: Arc<[ColumnInfo]>,
    schema: SchemaRef,
    writer: Option<ArrowWriter<Shared>>,
    buf: Shared,
    scratch: Vec<u8>,
}

impl ParquetEncoder {
    /// For a table; `zstd` is the level inside the file (none: uncompressed).
    ///
    /// # Errors
    /// When the writer cannot be created.
    pub fn new(table: &TableInfo, zstd: Option<i32>) -> Result<ParquetEncoder> {
        let schema = arrow_schema(table);
        let (writer, buf) = writer_for(&schema, zstd)?;
        Ok(ParquetEncoder {
            columns: Arc::clone(&table.columns),
            schema,
            writer: Some(writer),
            buf,
            scratch: Vec::new(),
        })
    }
}

impl RowEncoder for ParquetEncoder {
    fn rows(&mut self, rows: &[Vec<Value>], out: &mut Vec<u8>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut cols: Vec<Col> = self
            .schema
            .fields()
            .iter()
            .take(self.columns.len())
            .map(|f| Col::new(f.data_type()))
            .collect();
        let mut raw = StringBuilder::new();
        for row in rows {
            let mut extra: Vec<(String, String)> = Vec::new();
            for (i, c) in self.columns.iter().enumerate() {
                let v = row.get(i).unwrap_or(&Value::NULL);
                let typed = cols[i]
                    .push(v)
                    .with_context(|| format!("column `{}`", c.name))?;
                if !typed {
                    extra.push((
                        c.name.clone(),
                        temporal_text(&mut self.scratch, c.kind, c.fsp, v)?,
                    ));
                }
            }
            if extra.is_empty() {
                raw.append_null();
            } else {
                let m: serde_json::Map<String, serde_json::Value> = extra
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect();
                raw.append_value(serde_json::Value::Object(m).to_string());
            }
        }
        let mut arrays: Vec<ArrayRef> = cols.iter_mut().map(Col::finish).collect::<Result<_>>()?;
        arrays.push(Arc::new(raw.finish()));
        write_batch(&mut self.writer, &self.schema, arrays)?;
        self.buf.drain_into(out)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if let Some(w) = self.writer.take() {
            w.close().context("Parquet footer")?;
        }
        self.buf.drain_into(out)
    }
}

/// A struct column holding one table's rows (a row image, a key) in a change-event file: the
/// table's typed fields and `__storagetapper_raw`, null where the event has no such image.
struct StructCols {
    columns: Arc<[ColumnInfo]>,
    fields: arrow_schema::Fields,
    cols: Vec<Col>,
    raw: StringBuilder,
    valid: Vec<bool>,
}

impl StructCols {
    fn new(table: &TableInfo) -> StructCols {
        let schema = arrow_schema(table);
        StructCols {
            columns: Arc::clone(&table.columns),
            cols: schema
                .fields()
                .iter()
                .take(table.columns.len())
                .map(|f| Col::new(f.data_type()))
                .collect(),
            fields: schema.fields().clone(),
            raw: StringBuilder::new(),
            valid: Vec::new(),
        }
    }

    fn data_type(&self) -> DataType {
        DataType::Struct(self.fields.clone())
    }

    fn push(&mut self, row: Option<&[Value]>, scratch: &mut Vec<u8>) -> Result<()> {
        let Some(row) = row else {
            for c in &mut self.cols {
                c.null();
            }
            self.raw.append_null();
            self.valid.push(false);
            return Ok(());
        };
        let mut extra = serde_json::Map::new();
        for (i, c) in self.columns.iter().enumerate() {
            let v = row.get(i).unwrap_or(&Value::NULL);
            if !self.cols[i]
                .push(v)
                .with_context(|| format!("column `{}`", c.name))?
            {
                extra.insert(
                    c.name.clone(),
                    serde_json::Value::String(temporal_text(scratch, c.kind, c.fsp, v)?),
                );
            }
        }
        if extra.is_empty() {
            self.raw.append_null();
        } else {
            self.raw
                .append_value(serde_json::Value::Object(extra).to_string());
        }
        self.valid.push(true);
        Ok(())
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        let mut arrays: Vec<ArrayRef> = self
            .cols
            .iter_mut()
            .map(Col::finish)
            .collect::<Result<_>>()?;
        arrays.push(Arc::new(self.raw.finish()));
        let nulls = arrow_buffer::NullBuffer::from(std::mem::take(&mut self.valid));
        Ok(Arc::new(
            arrow_array::StructArray::try_new(self.fields.clone(), arrays, Some(nulls))
                .context("arrow struct")?,
        ))
    }
}

/// One table version a Parquet change-event file can hold: its row image and key.
pub struct EventTable {
    /// Name used in the struct columns (`before_<name>`, `after_<name>`, `key_<name>`).
    pub name: String,
    /// The written columns.
    pub row: TableInfo,
    /// The key columns.
    pub key: TableInfo,
}

/// Where and when a change happened (the `source` struct).
pub struct EventSourceFields<'a> {
    /// Job name.
    pub name: &'a str,
    /// Event time, ms.
    pub ts_ms: i64,
    /// Part of a snapshot.
    pub snapshot: bool,
    /// Schema and table (none for DDL).
    pub table: Option<(&'a str, &'a str)>,
    /// Originating server.
    pub server_id: i64,
    /// Transaction GTID.
    pub gtid: Option<&'a str>,
    /// Binlog file.
    pub file: &'a str,
    /// Offset.
    pub pos: i64,
    /// Row index in the event.
    pub row: i64,
}

/// A Parquet file of change events: `op`, `seqno`, `ts_ms`, a `source` struct, `ddl`, `db`,
/// and per table version three nullable structs `before_<t>`, `after_<t>`, `key_<t>` (Parquet
/// has no unions: the event's image is in the structs of its table, the others are null).
pub struct ParquetEvents {
    schema: SchemaRef,
    writer: Option<ArrowWriter<Shared>>,
    buf: Shared,
    op: StringBuilder,
    seqno: Int64Builder,
    ts_ms: Int64Builder,
    src_str: [StringBuilder; 4],
    src_opt: [StringBuilder; 3],
    src_long: [Int64Builder; 4],
    src_fields: arrow_schema::Fields,
    file: StringBuilder,
    ddl: StringBuilder,
    db: StringBuilder,
    tables: Vec<[StructCols; 3]>,
    rows: usize,
    scratch: Vec<u8>,
}

impl ParquetEvents {
    /// A file that can hold `tables`; `zstd` is the level inside the file.
    ///
    /// # Errors
    /// When the writer cannot be created.
    pub fn new(tables: &[EventTable], zstd: Option<i32>) -> Result<ParquetEvents> {
        let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
        let l = |n: &str| Field::new(n, DataType::Int64, false);
        // version, connector, name, snapshot | db, table, gtid | ts_ms, server_id, pos, row;
        // then file (a string) at the end of the strings.
        let src_fields: arrow_schema::Fields = vec![
            s("version", false),
            s("connector", false),
            s("name", false),
            s("snapshot", false),
            s("db", true),
            s("table", true),
            s("gtid", true),
            l("ts_ms"),
            l("server_id"),
            l("pos"),
            l("row"),
            s("file", false),
        ]
        .into();
        let structs: Vec<[StructCols; 3]> = tables
            .iter()
            .map(|t| {
                [
                    StructCols::new(&t.row),
                    StructCols::new(&t.row),
                    StructCols::new(&t.key),
                ]
            })
            .collect();
        let mut fields = vec![
            s("op", false),
            Field::new("seqno", DataType::Int64, false),
            Field::new("ts_ms", DataType::Int64, false),
            Field::new("source", DataType::Struct(src_fields.clone()), false),
            s("ddl", true),
            s("db", true),
        ];
        for (t, sc) in tables.iter().zip(&structs) {
            for (prefix, c) in ["before", "after", "key"].iter().zip(sc.iter()) {
                fields.push(Field::new(
                    format!("{prefix}_{}", t.name),
                    c.data_type(),
                    true,
                ));
            }
        }
        let schema = Arc::new(Schema::new(fields));
        let (writer, buf) = writer_for(&schema, zstd)?;
        Ok(ParquetEvents {
            schema,
            writer: Some(writer),
            buf,
            op: StringBuilder::new(),
            seqno: Int64Builder::new(),
            ts_ms: Int64Builder::new(),
            src_str: std::array::from_fn(|_| StringBuilder::new()),
            src_opt: std::array::from_fn(|_| StringBuilder::new()),
            src_long: std::array::from_fn(|_| Int64Builder::new()),
            src_fields,
            file: StringBuilder::new(),
            ddl: StringBuilder::new(),
            db: StringBuilder::new(),
            tables: structs,
            rows: 0,
            scratch: Vec::new(),
        })
    }

    /// Appends one event: a row change of table `table` (an index into the file's tables)
    /// or, with `table` none, a DDL statement.
    ///
    /// # Errors
    /// When a value does not fit its column.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        op: &str,
        seqno: i64,
        ts_ms: i64,
        src: &EventSourceFields<'_>,
        table: Option<usize>,
        images: [Option<&[Value]>; 3],
        ddl: Option<(&str, &str)>,
    ) -> Result<()> {
        self.op.append_value(op);
        self.seqno.append_value(seqno);
        self.ts_ms.append_value(ts_ms);
        self.src_str[0].append_value(env!("CARGO_PKG_VERSION"));
        self.src_str[1].append_value("mysql");
        self.src_str[2].append_value(src.name);
        self.src_str[3].append_value(if src.snapshot { "true" } else { "false" });
        self.src_opt[0].append_option(src.table.map(|t| t.0));
        self.src_opt[1].append_option(src.table.map(|t| t.1));
        self.src_opt[2].append_option(src.gtid);
        self.src_long[0].append_value(src.ts_ms);
        self.src_long[1].append_value(src.server_id);
        self.src_long[2].append_value(src.pos);
        self.src_long[3].append_value(src.row);
        self.ddl.append_option(ddl.map(|d| d.1));
        self.db.append_option(ddl.map(|d| d.0));
        self.file.append_value(src.file);
        for (i, sc) in self.tables.iter_mut().enumerate() {
            for (j, c) in sc.iter_mut().enumerate() {
                let image = if table == Some(i) { images[j] } else { None };
                c.push(image, &mut self.scratch)?;
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Writes what is buffered as a record batch (at a transaction boundary, or at the end);
    /// the file's bytes so far go to `out`.
    ///
    /// # Errors
    /// On encoding failure.
    pub fn flush(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.rows == 0 {
            return self.buf.drain_into(out);
        }
        let mut src: Vec<ArrayRef> = Vec::with_capacity(12);
        for b in &mut self.src_str {
            src.push(Arc::new(b.finish()));
        }
        for b in &mut self.src_opt {
            src.push(Arc::new(b.finish()));
        }
        for b in &mut self.src_long {
            src.push(Arc::new(b.finish()));
        }
        src.push(Arc::new(self.file.finish()));
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(self.op.finish()),
            Arc::new(self.seqno.finish()),
            Arc::new(self.ts_ms.finish()),
            Arc::new(
                arrow_array::StructArray::try_new(self.src_fields.clone(), src, None)
                    .context("arrow struct")?,
            ),
            Arc::new(self.ddl.finish()),
            Arc::new(self.db.finish()),
        ];
        for sc in &mut self.tables {
            for c in sc.iter_mut() {
                arrays.push(c.finish()?);
            }
        }
        write_batch(&mut self.writer, &self.schema, arrays)?;
        self.rows = 0;
        self.buf.drain_into(out)
    }

    /// Buffered events.
    pub fn buffered(&self) -> usize {
        self.rows
    }

    /// Writes the rest and the footer.
    ///
    /// # Errors
    /// On encoding failure.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.flush(out)?;
        if let Some(w) = self.writer.take() {
            w.close().context("Parquet footer")?;
        }
        self.buf.drain_into(out)
    }
}

fn writer_for(schema: &SchemaRef, zstd: Option<i32>) -> Result<(ArrowWriter<Shared>, Shared)> {
    let compression = match zstd {
        Some(l) => Compression::ZSTD(ZstdLevel::try_new(l).map_err(|e| anyhow!("{e}"))?),
        None => Compression::UNCOMPRESSED,
    };
    let props = WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(format!("storagetapper {}", env!("CARGO_PKG_VERSION")))
        .build();
    let buf = Shared::default();
    let writer = ArrowWriter::try_new(buf.clone(), Arc::clone(schema), Some(props))
        .context("cannot start a Parquet file")?;
    Ok((writer, buf))
}

/// Writes one record batch, ending the row group when it is large (bounded memory).
fn write_batch(
    writer: &mut Option<ArrowWriter<Shared>>,
    schema: &SchemaRef,
    arrays: Vec<ArrayRef>,
) -> Result<()> {
    let batch = RecordBatch::try_new(Arc::clone(schema), arrays).context("arrow batch")?;
    let w = writer
        .as_mut()
        .ok_or_else(|| anyhow!("Parquet file already finished"))?;
    w.write(&batch).context("Parquet write")?;
    if w.in_progress_size() > ROW_GROUP_BYTES {
        w.flush().context("Parquet row group")?;
    }
    Ok(())
}

/// A Parquet changelog file with the `row` envelope: `__op`, `__seqno`, `__ts_ms`,
/// `__deleted`, `__table`, `__schema`/`__ddl` (DDL records), and per table version one nullable
/// struct (named after it) with the row image: the after-image, or the before-image of a
/// delete.
pub struct ParquetRows {
    schema: SchemaRef,
    writer: Option<ArrowWriter<Shared>>,
    buf: Shared,
    op: StringBuilder,
    seqno: Int64Builder,
    ts_ms: Int64Builder,
    deleted: StringBuilder,
    table: StringBuilder,
    ddl_schema: StringBuilder,
    ddl: StringBuilder,
    tables: Vec<StructCols>,
    rows: usize,
    scratch: Vec<u8>,
}

impl ParquetRows {
    /// A file that can hold `tables` (their `row` images); `zstd` is the level inside the file.
    ///
    /// # Errors
    /// When the writer cannot be created.
    pub fn new(tables: &[EventTable], zstd: Option<i32>) -> Result<ParquetRows> {
        let structs: Vec<StructCols> = tables.iter().map(|t| StructCols::new(&t.row)).collect();
        let mut fields = vec![
            Field::new("__op", DataType::Utf8, false),
            Field::new("__seqno", DataType::Int64, false),
            Field::new("__ts_ms", DataType::Int64, false),
            Field::new("__deleted", DataType::Utf8, false),
            Field::new("__table", DataType::Utf8, true),
            Field::new("__schema", DataType::Utf8, true),
            Field::new("__ddl", DataType::Utf8, true),
        ];
        for (t, c) in tables.iter().zip(&structs) {
            fields.push(Field::new(&t.name, c.data_type(), true));
        }
        let schema = Arc::new(Schema::new(fields));
        let (writer, buf) = writer_for(&schema, zstd)?;
        Ok(ParquetRows {
            schema,
            writer: Some(writer),
            buf,
            op: StringBuilder::new(),
            seqno: Int64Builder::new(),
            ts_ms: Int64Builder::new(),
            deleted: StringBuilder::new(),
            table: StringBuilder::new(),
            ddl_schema: StringBuilder::new(),
            ddl: StringBuilder::new(),
            tables: structs,
            rows: 0,
            scratch: Vec::new(),
        })
    }

    /// Appends one record: a row image of table `table` (`schema.table` in `name`), or a DDL
    /// statement (`ddl`: default schema, statement).
    ///
    /// # Errors
    /// When a value does not fit its column.
    pub fn push(
        &mut self,
        op: &str,
        seqno: i64,
        ts_ms: i64,
        image: Option<(usize, &str, &[Value])>,
        ddl: Option<(&str, &str)>,
    ) -> Result<()> {
        self.op.append_value(op);
        self.seqno.append_value(seqno);
        self.ts_ms.append_value(ts_ms);
        self.deleted
            .append_value(if op == "d" { "true" } else { "false" });
        self.table.append_option(image.map(|i| i.1));
        self.ddl_schema.append_option(ddl.map(|d| d.0));
        self.ddl.append_option(ddl.map(|d| d.1));
        for (i, c) in self.tables.iter_mut().enumerate() {
            let row = image.filter(|im| im.0 == i).map(|im| im.2);
            c.push(row, &mut self.scratch)?;
        }
        self.rows += 1;
        Ok(())
    }

    /// Buffered records.
    pub fn buffered(&self) -> usize {
        self.rows
    }

    /// Writes what is buffered as a record batch; the file's bytes so far go to `out`.
    ///
    /// # Errors
    /// On encoding failure.
    pub fn flush(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.rows == 0 {
            return self.buf.drain_into(out);
        }
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(self.op.finish()),
            Arc::new(self.seqno.finish()),
            Arc::new(self.ts_ms.finish()),
            Arc::new(self.deleted.finish()),
            Arc::new(self.table.finish()),
            Arc::new(self.ddl_schema.finish()),
            Arc::new(self.ddl.finish()),
        ];
        for c in &mut self.tables {
            arrays.push(c.finish()?);
        }
        write_batch(&mut self.writer, &self.schema, arrays)?;
        self.rows = 0;
        self.buf.drain_into(out)
    }

    /// Writes the rest and the footer.
    ///
    /// # Errors
    /// On encoding failure.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.flush(out)?;
        if let Some(w) = self.writer.take() {
            w.close().context("Parquet footer")?;
        }
        self.buf.drain_into(out)
    }
}

/// Record batches of a Parquet file read from a stream (spooled like [`ParquetDecoder`]).
///
/// # Errors
/// When the input is not a Parquet file.
pub fn read_batches(
    input: impl std::io::Read,
) -> Result<impl Iterator<Item = Result<RecordBatch>>> {
    let spool = SealedSpool::new(input)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(spool)
        .context("not a Parquet file (or cut off)")?
        .with_batch_size(4096)
        .build()?;
    Ok(reader.map(|b| b.context("Parquet read")))
}

/// The value at row 0 of `a` (a one-row slice of a column written for `c`), canonical;
/// `raw` is the row's `__storagetapper_raw` object, if any.
///
/// # Errors
/// When the value does not fit the column.
pub fn value_at(
    c: &ColumnInfo,
    a: &ArrayRef,
    raw: Option<HashMap<String, String>>,
) -> Result<Value> {
    column_values(c, a, &[raw])?
        .pop()
        .ok_or_else(|| anyhow!("empty Parquet value"))
}

/// Decoder: spools the stream to a temporary file (Parquet needs random access), then reads
/// record batches from it. The spool is encrypted to a key that exists only in memory, so the
/// decoded file never lies on disk in plain text, even when the backup is encrypted.
pub struct ParquetDecoder {
    columns: Arc<[ColumnInfo]>,
    source: Option<Box<dyn BufRead + Send>>,
    reader: Option<ParquetRecordBatchReader>,
}

impl ParquetDecoder {
    /// Reads `input`.
    pub fn new(table: &TableInfo, input: Box<dyn BufRead + Send>) -> ParquetDecoder {
        ParquetDecoder {
            columns: Arc::clone(&table.columns),
            source: Some(input),
            reader: None,
        }
    }

    fn open(&mut self, batch: usize) -> Result<()> {
        if let Some(src) = self.source.take() {
            let spool = SealedSpool::new(src)?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(spool)
                .context("not a Parquet file (or cut off)")?
                .with_batch_size(batch.max(1))
                .build()?;
            self.reader = Some(reader);
        }
        Ok(())
    }
}

type SealedFile = Arc<Mutex<age::stream::StreamReader<std::fs::File>>>;

/// A temporary file holding bytes encrypted to an in-memory key, readable at any offset.
struct SealedSpool {
    file: SealedFile,
    len: u64,
}

impl SealedSpool {
    fn new(mut src: impl std::io::Read) -> Result<SealedSpool> {
        use std::io::Seek;
        let key = age::x25519::Identity::generate();
        let recipient = key.to_public();
        let file = tempfile::tempfile().context("cannot create a temporary file for Parquet")?;
        let enc =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .map_err(|e| anyhow!("age: {e}"))?;
        let mut w = enc.wrap_output(file).context("spool")?;
        let len = std::io::copy(&mut src, &mut w).context("spooling Parquet data")?;
        let mut file = w.finish().context("spool")?;
        file.rewind()?;
        let dec = age::Decryptor::new(file).map_err(|e| anyhow!("spool: {e}"))?;
        let r = dec
            .decrypt(std::iter::once(&key as &dyn age::Identity))
            .map_err(|e| anyhow!("spool: {e}"))?;
        Ok(SealedSpool {
            file: Arc::new(Mutex::new(r)),
            len,
        })
    }
}

impl parquet::file::reader::Length for SealedSpool {
    fn len(&self) -> u64 {
        self.len
    }
}

/// A reader at an offset of a [`SealedSpool`].
struct SpoolRead {
    file: SealedFile,
    pos: u64,
}

impl std::io::Read for SpoolRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::Seek;
        let mut f = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("spool poisoned"))?;
        f.seek(std::io::SeekFrom::Start(self.pos))?;
        let n = f.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl parquet::file::reader::ChunkReader for SealedSpool {
    type T = SpoolRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<SpoolRead> {
        Ok(SpoolRead {
            file: Arc::clone(&self.file),
            pos: start,
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        use std::io::Read;
        let mut buf = vec![0u8; length];
        let mut r = SpoolRead {
            file: Arc::clone(&self.file),
            pos: start,
        };
        r.read_exact(&mut buf)
            .map_err(|e| parquet::errors::ParquetError::General(format!("spool: {e}")))?;
        Ok(bytes::Bytes::from(buf))
    }
}

fn column_values(
    c: &ColumnInfo,
    a: &ArrayRef,
    raw: &[Option<HashMap<String, String>>],
) -> Result<Vec<Value>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    let n = a.len();
    let mut out = Vec::with_capacity(n);
    for (i, raw_row) in raw.iter().enumerate().take(n) {
        if let Some(text) = raw_row.as_ref().and_then(|m| m.get(&c.name)) {
            out.push(value::parse_datetime(c.kind, text).map_err(|e| anyhow!("{e}"))?);
            continue;
        }
        if a.is_null(i) {
            out.push(Value::NULL);
            continue;
        }
        let v = match a.data_type() {
            DataType::Int8 => Value::Int(i64::from(a.as_primitive::<Int8Type>().value(i))),
            DataType::Int16 => Value::Int(i64::from(a.as_primitive::<Int16Type>().value(i))),
            DataType::Int32 => Value::Int(i64::from(a.as_primitive::<Int32Type>().value(i))),
            DataType::Int64 if c.kind == Kind::Time => {
                let us = a.as_primitive::<Int64Type>().value(i);
                value::time_from_micros(us)
            }
            DataType::Int64 => Value::Int(a.as_primitive::<Int64Type>().value(i)),
            DataType::UInt8 => Value::UInt(u64::from(a.as_primitive::<UInt8Type>().value(i))),
            DataType::UInt16 => Value::UInt(u64::from(a.as_primitive::<UInt16Type>().value(i))),
            DataType::UInt32 => Value::UInt(u64::from(a.as_primitive::<UInt32Type>().value(i))),
            DataType::UInt64 => Value::UInt(a.as_primitive::<UInt64Type>().value(i)),
            DataType::Decimal128(_, s) => Value::Bytes(
                value::scaled_text(
                    &a.as_primitive::<Decimal128Type>().value(i).to_string(),
                    usize::try_from(*s).unwrap_or(0),
                )
                .into_bytes(),
            ),
            DataType::Decimal256(_, s) => Value::Bytes(
                value::scaled_text(
                    &a.as_primitive::<Decimal256Type>().value(i).to_string(),
                    usize::try_from(*s).unwrap_or(0),
                )
                .into_bytes(),
            ),
            DataType::Float32 => Value::Float(a.as_primitive::<Float32Type>().value(i)),
            DataType::Float64 => Value::Double(a.as_primitive::<Float64Type>().value(i)),
            DataType::Date32 => match from_epoch_micros(
                i64::from(a.as_primitive::<Date32Type>().value(i)) * 86_400_000_000,
            ) {
                Value::Date(y, m, d, ..) => Value::Date(y, m, d, 0, 0, 0, 0),
                other => other,
            },
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                from_epoch_micros(a.as_primitive::<TimestampMicrosecondType>().value(i))
            }
            DataType::Utf8 => Value::Bytes(a.as_string::<i32>().value(i).as_bytes().to_vec()),
            DataType::Binary => Value::Bytes(a.as_binary::<i32>().value(i).to_vec()),
            other => bail!("unexpected Parquet column type {other}"),
        };
        out.push(v);
    }
    Ok(out)
}

impl RowDecoder for ParquetDecoder {
    fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Vec<Value>>>> {
        use arrow_array::cast::AsArray;
        self.open(max)?;
        let Some(reader) = self.reader.as_mut() else {
            return Ok(None);
        };
        let Some(batch) = reader.next() else {
            return Ok(None);
        };
        let batch = batch.context("damaged Parquet data")?;
        let n = batch.num_rows();
        let raw_col = batch
            .column_by_name(RAW_FIELD)
            .ok_or_else(|| anyhow!("Parquet file has no {RAW_FIELD} column"))?;
        let raw_strings = raw_col.as_string::<i32>();
        let raw: Vec<Option<HashMap<String, String>>> = (0..n)
            .map(|i| {
                if raw_strings.is_null(i) {
                    Ok(None)
                } else {
                    serde_json::from_str(raw_strings.value(i)).map(Some)
                }
            })
            .collect::<Result<_, _>>()
            .context("bad raw column")?;
        let mut cols = Vec::with_capacity(self.columns.len());
        for c in self.columns.iter() {
            let a = batch
                .column_by_name(&c.name)
                .ok_or_else(|| anyhow!("Parquet file has no column `{}`", c.name))?;
            cols.push(column_values(c, a, &raw).with_context(|| format!("column `{}`", c.name))?);
        }
        let mut rows: Vec<Vec<Value>> = (0..n).map(|_| Vec::with_capacity(cols.len())).collect();
        for col in cols {
            for (r, v) in rows.iter_mut().zip(col) {
                r.push(v);
            }
        }
        Ok(Some(rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Format;

    #[test]
    fn round_trip() {
        super::super::tests::round_trip(Format::Parquet);
    }

    #[test]
    fn decimal_text_helpers() {
        assert_eq!(value::unscaled_digits("-1.5", 3).expect("ok"), "-1500");
        assert_eq!(value::scaled_text("-1500", 3), "-1.500");
        assert_eq!(value::scaled_text("5", 2), "0.05");
        assert_eq!(value::scaled_text("-5", 2), "-0.05");
        assert_eq!(value::scaled_text("123", 0), "123");
    }
}
