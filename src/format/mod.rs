//! Row formats: one encoder and one decoder per format (`json`, `sql`, …), picked by the
//! manifest's `format`. Encoders append bytes to a buffer (the caller compresses and writes
//! them); decoders read a plain (decompressed) stream back into canonical values.
//!
//! Invariant: `decode(encode(rows)) == rows` for canonical values of every column kind
//! (see [`crate::value::canonical`]).

pub mod avro;
pub mod json;
pub mod msgpack;
pub mod parquet;
pub mod sql;

use std::io::BufRead;
use std::sync::Arc;

use anyhow::Result;
use mysql_async::Value;

use crate::manifest::Format;
use crate::schema::{Column, Kind, TableSchema};

/// What an encoder or decoder knows of one column.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    /// Name.
    pub name: String,
    /// Value kind.
    pub kind: Kind,
    /// Fractional-second digits.
    pub fsp: u32,
    /// `COLUMN_TYPE`.
    pub column_type: String,
    /// NULL allowed.
    pub nullable: bool,
}

impl ColumnInfo {
    /// From a captured column.
    pub fn from_column(c: &Column) -> ColumnInfo {
        ColumnInfo {
            name: c.name.clone(),
            kind: c.kind,
            fsp: c.fsp,
            column_type: c.column_type.clone(),
            nullable: c.nullable,
        }
    }

    /// Precision and scale of a `decimal(p,s)` column type (10, 0 when absent).
    pub fn decimal_ps(&self) -> (u8, u8) {
        let inner = self
            .column_type
            .split_once('(')
            .and_then(|(_, r)| r.split_once(')'))
            .map_or("10,0", |(a, _)| a);
        let mut it = inner
            .split(',')
            .map(|x| x.trim().parse::<u8>().unwrap_or(0));
        (it.next().unwrap_or(10), it.next().unwrap_or(0))
    }

    /// The columns of `names` in `schema`, in that order.
    pub fn list(schema: &TableSchema, names: &[String]) -> Arc<[ColumnInfo]> {
        names
            .iter()
            .map(|n| {
                schema.column(n).map_or_else(
                    || ColumnInfo {
                        name: n.clone(),
                        kind: Kind::Text,
                        fsp: 0,
                        column_type: "text".into(),
                        nullable: true,
                    },
                    ColumnInfo::from_column,
                )
            })
            .collect()
    }
}

/// The table a file belongs to.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Columns written, in order.
    pub columns: Arc<[ColumnInfo]>,
}

/// Turns rows into the bytes of one file.
pub trait RowEncoder: Send {
    /// Appends rows (each at least as long as the column list; extra values are ignored).
    ///
    /// # Errors
    /// When a value does not fit its column.
    fn rows(&mut self, rows: &[Vec<Value>], out: &mut Vec<u8>) -> Result<()>;
    /// Appends whatever ends the file.
    ///
    /// # Errors
    /// On encoding failure.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()>;
}

/// Reads rows back from the plain bytes of one file.
pub trait RowDecoder: Send {
    /// Up to `max` rows; `None` at the end.
    ///
    /// # Errors
    /// When the file is damaged or does not fit the schema.
    fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Vec<Value>>>>;
}

/// Options that matter to some encoders.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    /// Upper bound of one SQL statement in bytes.
    pub max_statement_bytes: usize,
    /// zstd level inside the file, for formats that compress themselves (Parquet).
    pub inner_zstd: Option<i32>,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            max_statement_bytes: 1 << 20,
            inner_zstd: Some(3),
        }
    }
}

/// The encoder for `format`.
///
/// # Errors
/// When the encoder cannot start.
pub fn encoder(
    format: Format,
    table: &TableInfo,
    opts: EncodeOptions,
) -> Result<Box<dyn RowEncoder>> {
    Ok(match format {
        Format::Json => Box::new(json::JsonEncoder::new(table)),
        Format::Sql => Box::new(sql::SqlEncoder::new(table, opts)),
        Format::Msgpack => Box::new(msgpack::MsgpackEncoder::new(table)),
        Format::Avro => Box::new(avro::AvroEncoder::new(table)),
        Format::Parquet => Box::new(parquet::ParquetEncoder::new(table, opts.inner_zstd)?),
    })
}

/// The decoder for `format` reading `input`.
///
/// # Errors
/// When the input does not start like a file of that format.
pub fn decoder(
    format: Format,
    table: &TableInfo,
    input: Box<dyn BufRead + Send>,
) -> Result<Box<dyn RowDecoder>> {
    Ok(match format {
        Format::Json => Box::new(json::JsonDecoder::new(table, input)),
        Format::Sql => Box::new(sql::SqlDecoder::new(table, input)),
        Format::Msgpack => Box::new(msgpack::MsgpackDecoder::new(table, input)),
        Format::Avro => Box::new(avro::AvroDecoder::new(table, input)?),
        Format::Parquet => Box::new(parquet::ParquetDecoder::new(table, input)),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Columns of every kind with values that are hard to keep.
    pub fn torture() -> (TableInfo, Vec<Vec<Value>>) {
        let col = |name: &str, kind: Kind, fsp: u32, ty: &str| ColumnInfo {
            name: name.into(),
            kind,
            fsp,
            column_type: ty.into(),
            nullable: true,
        };
        let cols: Vec<ColumnInfo> = vec![
            col("i", Kind::Int, 0, "bigint(20)"),
            col("u", Kind::UInt, 0, "bigint(20) unsigned"),
            col("dec", Kind::Decimal, 0, "decimal(65,30)"),
            col("f", Kind::Float, 0, "float"),
            col("d", Kind::Double, 0, "double"),
            col("dt", Kind::Date, 0, "date"),
            col("dtm", Kind::DateTime, 6, "datetime(6)"),
            col("ts", Kind::Timestamp, 3, "timestamp(3)"),
            col("tm", Kind::Time, 6, "time(6)"),
            col("y", Kind::Year, 0, "year(4)"),
            col("t", Kind::Text, 0, "varchar(100)"),
            col("e", Kind::Enum, 0, "enum('a','b c')"),
            col("s", Kind::Set, 0, "set('x','y')"),
            col("b", Kind::Binary, 0, "varbinary(10)"),
            col("bit", Kind::Bit, 0, "bit(64)"),
            col("j", Kind::Json, 0, "longtext"),
            col("g", Kind::Geometry, 0, "point"),
        ];
        let rows = vec![
            vec![
                Value::Int(i64::MIN),
                Value::UInt(u64::MAX),
                Value::Bytes(
                    b"-99999999999999999999999999999999999.999999999999999999999999999999".to_vec(),
                ),
                Value::Float(f32::MAX),
                Value::Double(-0.0),
                Value::Date(0, 0, 0, 0, 0, 0, 0),
                Value::Date(2024, 0, 10, 23, 59, 59, 999_999),
                Value::Date(2038, 1, 19, 3, 14, 7, 123_000),
                Value::Time(true, 34, 22, 59, 59, 999_999),
                Value::Int(1901),
                Value::Bytes("a'\\\"\0\n\r\u{1a}\t😀 é".as_bytes().to_vec()),
                Value::Bytes(b"b c".to_vec()),
                Value::Bytes(b"x,y".to_vec()),
                Value::Bytes(vec![0, 1, 0x27, 0x5c, 255]),
                Value::UInt(u64::MAX),
                Value::Bytes(b"{\"a\": [1, 2.50, \"x\\ny\"]}".to_vec()),
                Value::Bytes(vec![
                    0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f,
                ]),
            ],
            vec![Value::NULL; 17],
            vec![
                Value::Int(0),
                Value::UInt(0),
                Value::Bytes(b"0.000000000000000000000000000001".to_vec()),
                Value::Float(-1.175_494_4e-38),
                Value::Double(f64::MIN_POSITIVE),
                Value::Date(9999, 12, 31, 0, 0, 0, 0),
                Value::Date(0, 0, 0, 0, 0, 0, 0),
                Value::Date(1970, 1, 1, 0, 0, 1, 0),
                Value::Time(false, 0, 0, 0, 0, 0),
                Value::Int(0),
                Value::Bytes(Vec::new()),
                Value::Bytes(Vec::new()),
                Value::Bytes(Vec::new()),
                Value::Bytes(Vec::new()),
                Value::UInt(0),
                Value::Bytes(b"{\n  \"multi\": \"line\"\n}".to_vec()),
                Value::Bytes(Vec::new()),
            ],
        ];
        (
            TableInfo {
                schema: "s".into(),
                table: "t`x".into(),
                columns: cols.into(),
            },
            rows,
        )
    }

    /// Encodes then decodes with `format` and checks the rows come back equal.
    pub fn round_trip(format: Format) {
        let (table, rows) = torture();
        let mut enc = encoder(
            format,
            &table,
            EncodeOptions {
                max_statement_bytes: 300,
                inner_zstd: Some(3),
            },
        )
        .expect("encoder");
        let mut out = Vec::new();
        enc.rows(&rows[..1], &mut out).expect("encode");
        enc.rows(&rows[1..], &mut out).expect("encode");
        enc.finish(&mut out).expect("finish");
        let mut dec =
            decoder(format, &table, Box::new(std::io::Cursor::new(out))).expect("decoder");
        let mut got = Vec::new();
        while let Some(b) = dec.next_batch(2).expect("decode") {
            got.extend(b);
        }
        assert_eq!(got.len(), rows.len());
        for (g, w) in got.iter().zip(&rows) {
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                assert_eq!(a, b, "{format:?} column {}", table.columns[i].name);
            }
        }
    }
}
