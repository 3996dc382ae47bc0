//! MessagePack: one map per row, column name → value, maps simply concatenated.
//!
//! Integers are msgpack ints (unsigned up to 2^64-1), FLOAT/DOUBLE are float32/float64,
//! DECIMAL and the temporal types are strings in the JSON mapping's text (exact, zero dates
//! included), text is str, binary and spatial values are bin, BIT is uint, JSON is its exact
//! text as str, NULL is nil.

use std::io::BufRead;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use mysql_async::Value;
use rmpv::Value as Mp;

use super::{ColumnInfo, RowDecoder, RowEncoder, TableInfo};
use crate::schema::Kind;
use crate::value;

/// Encoder.
pub struct MsgpackEncoder {
    columns: Arc<[ColumnInfo]>,
    scratch: Vec<u8>,
}

impl MsgpackEncoder {
    /// For a table.
    pub fn new(table: &TableInfo) -> MsgpackEncoder {
        MsgpackEncoder {
            columns: Arc::clone(&table.columns),
            scratch: Vec::with_capacity(64),
        }
    }
}

/// The JSON-mapping text of a temporal value, without quotes.
pub fn temporal_text(scratch: &mut Vec<u8>, kind: Kind, fsp: u32, v: &Value) -> Result<String> {
    scratch.clear();
    value::write_json(scratch, kind, fsp, v).map_err(|e| anyhow!("{e}"))?;
    let inner = scratch
        .get(1..scratch.len().saturating_sub(1))
        .ok_or_else(|| anyhow!("empty temporal value"))?;
    Ok(String::from_utf8_lossy(inner).into_owned())
}

fn io<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("msgpack: {e}")
}

impl RowEncoder for MsgpackEncoder {
    fn rows(&mut self, rows: &[Vec<Value>], out: &mut Vec<u8>) -> Result<()> {
        use rmp::encode as w;
        for row in rows {
            w::write_map_len(out, u32::try_from(self.columns.len())?).map_err(io)?;
            for (i, c) in self.columns.iter().enumerate() {
                w::write_str(out, &c.name).map_err(io)?;
                let v = row.get(i).unwrap_or(&Value::NULL);
                let r: Result<()> = (|| {
                    match (c.kind, v) {
                        (_, Value::NULL) => w::write_nil(out).map_err(io)?,
                        (Kind::Bit, Value::Bytes(b)) => {
                            w::write_uint(
                                out,
                                b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)),
                            )
                            .map_err(io)?;
                        }
                        (_, Value::Int(n)) => {
                            w::write_sint(out, *n).map_err(io)?;
                        }
                        (_, Value::UInt(n)) => {
                            w::write_uint(out, *n).map_err(io)?;
                        }
                        (_, Value::Float(f)) => w::write_f32(out, *f).map_err(io)?,
                        (_, Value::Double(f)) => w::write_f64(out, *f).map_err(io)?,
                        (_, Value::Date(..) | Value::Time(..)) => {
                            let t = temporal_text(&mut self.scratch, c.kind, c.fsp, v)?;
                            w::write_str(out, &t).map_err(io)?;
                        }
                        (Kind::Binary | Kind::Geometry, Value::Bytes(b)) => {
                            w::write_bin(out, b).map_err(io)?
                        }
                        (_, Value::Bytes(b)) => {
                            let s = std::str::from_utf8(b)
                                .map_err(|e| anyhow!("text is not UTF-8: {e}"))?;
                            w::write_str(out, s).map_err(io)?;
                        }
                    }
                    Ok(())
                })();
                r.with_context(|| format!("column `{}`", c.name))?;
            }
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
}

/// Decoder.
pub struct MsgpackDecoder {
    columns: Arc<[ColumnInfo]>,
    input: Box<dyn BufRead + Send>,
    row_no: u64,
}

impl MsgpackDecoder {
    /// Reads `input`.
    pub fn new(table: &TableInfo, input: Box<dyn BufRead + Send>) -> MsgpackDecoder {
        MsgpackDecoder {
            columns: Arc::clone(&table.columns),
            input,
            row_no: 0,
        }
    }
}

/// A msgpack value of column `c` in canonical form.
///
/// # Errors
/// When the value does not fit the column.
pub fn to_value(c: &ColumnInfo, v: Mp) -> Result<Value> {
    let text = |v: Mp| -> Result<String> {
        match v {
            Mp::String(s) => s.into_str().ok_or_else(|| anyhow!("str is not UTF-8")),
            other => bail!("expected a str, got {other}"),
        }
    };
    Ok(match (c.kind, v) {
        (_, Mp::Nil) => Value::NULL,
        (Kind::Int | Kind::Year, Mp::Integer(n)) => {
            Value::Int(n.as_i64().ok_or_else(|| anyhow!("{n} is out of range"))?)
        }
        (Kind::UInt | Kind::Bit, Mp::Integer(n)) => {
            Value::UInt(n.as_u64().ok_or_else(|| anyhow!("{n} is out of range"))?)
        }
        (Kind::Float, Mp::F32(f)) => Value::Float(f),
        (Kind::Double, Mp::F64(f)) => Value::Double(f),
        (Kind::Date | Kind::DateTime | Kind::Timestamp, v) => {
            value::parse_datetime(c.kind, &text(v)?).map_err(|e| anyhow!("{e}"))?
        }
        (Kind::Time, v) => value::parse_time(&text(v)?).map_err(|e| anyhow!("{e}"))?,
        (Kind::Binary | Kind::Geometry, Mp::Binary(b)) => Value::Bytes(b),
        (Kind::Decimal | Kind::Text | Kind::Enum | Kind::Set | Kind::Json, v) => {
            Value::Bytes(text(v)?.into_bytes())
        }
        (k, v) => bail!("{v} does not fit a {k:?} column"),
    })
}

impl RowDecoder for MsgpackDecoder {
    fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Vec<Value>>>> {
        let mut rows = Vec::new();
        while rows.len() < max {
            if self.input.fill_buf().context("read")?.is_empty() {
                break;
            }
            self.row_no += 1;
            let v = rmpv::decode::read_value(&mut self.input)
                .with_context(|| format!("row {}: damaged or cut-off MessagePack", self.row_no))?;
            let Mp::Map(mut entries) = v else {
                bail!("row {} is not a map", self.row_no);
            };
            let mut row = Vec::with_capacity(self.columns.len());
            for c in self.columns.iter() {
                let pos = entries
                    .iter()
                    .position(|(k, _)| k.as_str() == Some(c.name.as_str()))
                    .ok_or_else(|| {
                        anyhow!("row {}: column `{}` is missing", self.row_no, c.name)
                    })?;
                let (_, v) = entries.swap_remove(pos);
                row.push(
                    to_value(c, v)
                        .with_context(|| format!("row {}: column `{}`", self.row_no, c.name))?,
                );
            }
            rows.push(row);
        }
        Ok((!rows.is_empty()).then_some(rows))
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::Format;

    #[test]
    fn round_trip() {
        super::super::tests::round_trip(Format::Msgpack);
    }
}
