//! Avro object container files, written by our own streaming encoder (one block per batch,
//! codec `null`: the outer zstd compresses) and read back with the `apache-avro` crate, so every
//! file we write is checked by an independent reader in our own tests.
//!
//! Schema: a record with one field per column, each `["null", T]`:
//! TINYINT…INT → int (INT UNSIGNED → long), BIGINT → long, BIGINT UNSIGNED → decimal(20,0),
//! DECIMAL(p,s) → bytes decimal(p,s), FLOAT/DOUBLE → float/double, DATE → int date,
//! DATETIME → long local-timestamp-micros, TIMESTAMP → long timestamp-micros, TIME → long
//! microseconds (signed), YEAR → int, text/ENUM/SET/JSON → string, binary/spatial → bytes,
//! BIT → long (the 64 bits as two's complement). Field names are the column names with
//! characters Avro does not allow replaced by `_`; the column's own name is in `mysql_name`.
//!
//! Zero dates and dates with zero parts have no typed form: the field is null and the exact
//! text is in the last field, `__storagetapper_raw` (`map<string>`, column name → text).

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use apache_avro::types::Value as Av;
use mysql_async::Value;
use num_bigint::BigInt;

use super::{ColumnInfo, RowDecoder, RowEncoder, TableInfo};
use crate::format::json::RAW_FIELD;
use crate::format::msgpack::temporal_text;
use crate::schema::Kind;
use crate::value;

/// How one column is stored in Avro.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AvroType {
    Int,
    Long,
    /// decimal(p, s) as bytes.
    Decimal(u32, u32),
    Float,
    Double,
    Date,
    LocalMicros,
    UtcMicros,
    TimeMicros,
    Str,
    Bytes,
}

fn avro_type(c: &ColumnInfo) -> AvroType {
    let ty = c.column_type.to_ascii_lowercase();
    match c.kind {
        Kind::Int if ty.starts_with("bigint") => AvroType::Long,
        Kind::Int | Kind::Year => AvroType::Int,
        Kind::UInt if ty.starts_with("bigint") => AvroType::Decimal(20, 0),
        Kind::UInt if ty.starts_with("int") => AvroType::Long,
        Kind::UInt => AvroType::Int,
        Kind::Decimal => {
            let (p, s) = c.decimal_ps();
            AvroType::Decimal(u32::from(p), u32::from(s))
        }
        Kind::Float => AvroType::Float,
        Kind::Double => AvroType::Double,
        Kind::Date => AvroType::Date,
        Kind::DateTime => AvroType::LocalMicros,
        Kind::Timestamp => AvroType::UtcMicros,
        Kind::Time => AvroType::TimeMicros,
        Kind::Bit => AvroType::Long,
        Kind::Text | Kind::Enum | Kind::Set | Kind::Json => AvroType::Str,
        Kind::Binary | Kind::Geometry => AvroType::Bytes,
    }
}

/// An Avro name from a column or table name.
pub fn avro_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// The Avro schema (JSON) of a table's chunk files; also written as `schema.avsc`.
pub fn schema_json(table: &TableInfo) -> serde_json::Value {
    let mut used = std::collections::HashSet::new();
    let mut fields: Vec<serde_json::Value> = table
        .columns
        .iter()
        .map(|c| {
            let mut name = avro_name(&c.name);
            while !used.insert(name.clone()) || name == RAW_FIELD {
                name.push('_');
            }
            let t = match avro_type(c) {
                AvroType::Int => serde_json::json!("int"),
                AvroType::Long => serde_json::json!("long"),
                AvroType::Decimal(p, s) => serde_json::json!({"type": "bytes", "logicalType": "decimal", "precision": p, "scale": s}),
                AvroType::Float => serde_json::json!("float"),
                AvroType::Double => serde_json::json!("double"),
                AvroType::Date => serde_json::json!({"type": "int", "logicalType": "date"}),
                AvroType::LocalMicros => serde_json::json!({"type": "long", "logicalType": "local-timestamp-micros"}),
                AvroType::UtcMicros => serde_json::json!({"type": "long", "logicalType": "timestamp-micros"}),
                AvroType::TimeMicros => serde_json::json!("long"),
                AvroType::Str => serde_json::json!("string"),
                AvroType::Bytes => serde_json::json!("bytes"),
            };
            serde_json::json!({
                "name": name,
                "type": ["null", t],
                "default": null,
                "mysql_name": c.name,
                "mysql_type": c.column_type,
            })
        })
        .collect();
    fields.push(serde_json::json!({
        "name": RAW_FIELD,
        "type": ["null", {"type": "map", "values": "string"}],
        "default": null,
        "doc": "exact text of values with no typed form (zero dates), by column name",
    }));
    serde_json::json!({
        "type": "record",
        "name": avro_name(&table.table),
        "namespace": format!("storagetapper.{}", avro_name(&table.schema)),
        "fields": fields,
    })
}

fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Microseconds since the epoch of a DATE/DATETIME value, or `None` for a zero date or a date
/// with zero parts (which only text can hold).
pub fn epoch_micros(v: &Value) -> Option<i64> {
    let Value::Date(y, m, d, h, mi, s, us) = v else {
        return None;
    };
    let (y, m, d) = (i64::from(*y), u32::from(*m), u32::from(*d));
    if m == 0 || m > 12 || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    Some(
        ((days * 86_400 + i64::from(*h) * 3600 + i64::from(*mi) * 60 + i64::from(*s)) * 1_000_000)
            + i64::from(*us),
    )
}

/// A DATE/DATETIME value from microseconds since the epoch.
pub fn from_epoch_micros(micros: i64) -> Value {
    let days = micros.div_euclid(86_400_000_000);
    let rem = micros.rem_euclid(86_400_000_000);
    let (y, m, d) = civil_from_days(days);
    let secs = rem / 1_000_000;
    Value::Date(
        y as u16,
        m as u8,
        d as u8,
        (secs / 3600) as u8,
        (secs / 60 % 60) as u8,
        (secs % 60) as u8,
        (rem % 1_000_000) as u32,
    )
}

/// The unscaled two's-complement bytes of a decimal text with `scale` digits.
///
/// # Errors
/// When the text is not a decimal with at most `scale` fractional digits.
pub fn decimal_bytes(text: &str, scale: u32) -> Result<Vec<u8>> {
    let digits = value::unscaled_digits(text, scale as usize).map_err(|e| anyhow!("{e}"))?;
    let n: BigInt = digits
        .parse()
        .map_err(|_| anyhow!("`{text}` is not a decimal"))?;
    Ok(n.to_signed_bytes_be())
}

/// The decimal text (MySQL's form: exactly `scale` fractional digits) of unscaled bytes.
pub fn decimal_text(bytes: &[u8], scale: u32) -> String {
    value::scaled_text(
        &BigInt::from_signed_bytes_be(bytes).to_string(),
        scale as usize,
    )
}

/// Encoder.
pub struct AvroEncoder {
    columns: Arc<[ColumnInfo]>,
    types: Vec<AvroType>,
    schema: String,
    sync: [u8; 16],
    started: bool,
    block: Vec<u8>,
    raw: Vec<(usize, String)>,
    scratch: Vec<u8>,
}

impl AvroEncoder {
    /// For a table.
    pub fn new(table: &TableInfo) -> AvroEncoder {
        use sha2::Digest;
        let schema = schema_json(table).to_string();
        let seed = format!(
            "{schema}{:?}{}",
            std::time::SystemTime::now(),
            std::process::id()
        );
        let digest = sha2::Sha256::digest(seed.as_bytes());
        let mut sync = [0u8; 16];
        sync.copy_from_slice(&digest[..16]);
        AvroEncoder {
            types: table.columns.iter().map(avro_type).collect(),
            columns: Arc::clone(&table.columns),
            schema,
            sync,
            started: false,
            block: Vec::with_capacity(1 << 20),
            raw: Vec::new(),
            scratch: Vec::new(),
        }
    }

    fn header(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"Obj\x01");
        put_long(out, 2);
        put_bytes(out, b"avro.schema");
        put_bytes(out, self.schema.as_bytes());
        put_bytes(out, b"avro.codec");
        put_bytes(out, b"null");
        put_long(out, 0);
        out.extend_from_slice(&self.sync);
        self.started = true;
    }

    fn field(&mut self, i: usize, v: &Value) -> Result<()> {
        let c = &self.columns[i];
        let out = &mut self.block;
        if let Value::NULL = v {
            put_long(out, 0);
            return Ok(());
        }
        let typed_null = |out: &mut Vec<u8>| put_long(out, 0);
        let t = self.types[i];
        match t {
            AvroType::Date | AvroType::LocalMicros | AvroType::UtcMicros => match epoch_micros(v) {
                Some(us) => {
                    put_long(out, 1);
                    put_long(
                        out,
                        if t == AvroType::Date {
                            us.div_euclid(86_400_000_000)
                        } else {
                            us
                        },
                    );
                }
                None => {
                    typed_null(out);
                    let text = temporal_text(&mut self.scratch, c.kind, c.fsp, v)?;
                    self.raw.push((i, text));
                }
            },
            _ => {
                put_long(out, 1);
                match (t, v) {
                    (AvroType::Int | AvroType::Long, Value::Int(n)) => put_long(out, *n),
                    (AvroType::Int | AvroType::Long, Value::UInt(n)) => put_long(out, *n as i64),
                    (AvroType::Long, Value::Bytes(b)) if c.kind == Kind::Bit => {
                        put_long(
                            out,
                            b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)) as i64,
                        );
                    }
                    (AvroType::Decimal(_, _), Value::UInt(n)) => {
                        put_bytes(out, &BigInt::from(*n).to_signed_bytes_be())
                    }
                    (AvroType::Decimal(_, _), Value::Int(n)) => {
                        put_bytes(out, &BigInt::from(*n).to_signed_bytes_be())
                    }
                    (AvroType::Decimal(_, s), Value::Bytes(b)) => {
                        let text =
                            std::str::from_utf8(b).map_err(|_| anyhow!("decimal is not text"))?;
                        put_bytes(out, &decimal_bytes(text, s)?);
                    }
                    (AvroType::Float, Value::Float(f)) => out.extend_from_slice(&f.to_le_bytes()),
                    (AvroType::Double, Value::Double(f)) => out.extend_from_slice(&f.to_le_bytes()),
                    (AvroType::TimeMicros, Value::Time(..)) => {
                        put_long(out, value::time_micros(v).unwrap_or(0));
                    }
                    (AvroType::Str, Value::Bytes(b)) => {
                        std::str::from_utf8(b).map_err(|e| anyhow!("text is not UTF-8: {e}"))?;
                        put_bytes(out, b);
                    }
                    (AvroType::Bytes, Value::Bytes(b)) => put_bytes(out, b),
                    (t, v) => bail!("{v:?} does not fit Avro {t:?}"),
                }
            }
        }
        Ok(())
    }
}

impl AvroEncoder {
    /// Appends one record (the table's fields and `__storagetapper_raw`) to the block.
    fn encode_row(&mut self, row: &[Value]) -> Result<()> {
        self.raw.clear();
        for i in 0..self.columns.len() {
            let v = row.get(i).unwrap_or(&Value::NULL);
            self.field(i, v)
                .with_context(|| format!("column `{}`", self.columns[i].name))?;
        }
        if self.raw.is_empty() {
            put_long(&mut self.block, 0);
        } else {
            put_long(&mut self.block, 1);
            put_long(&mut self.block, self.raw.len() as i64);
            for (i, text) in &self.raw {
                put_bytes(&mut self.block, self.columns[*i].name.as_bytes());
                put_bytes(&mut self.block, text.as_bytes());
            }
            put_long(&mut self.block, 0);
        }
        Ok(())
    }

    /// Appends the binary encoding of one record of this table to `out` (no container
    /// framing): for records nested in other records, e.g. change events.
    ///
    /// # Errors
    /// When a value does not fit its column.
    pub fn record(&mut self, row: &[Value], out: &mut Vec<u8>) -> Result<()> {
        self.block.clear();
        self.encode_row(row)?;
        out.extend_from_slice(&self.block);
        Ok(())
    }
}

/// Appends an Avro `long` (zigzag varint).
pub fn write_long(out: &mut Vec<u8>, v: i64) {
    put_long(out, v);
}

/// Appends Avro `bytes` or `string`.
pub fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_bytes(out, b);
}

/// The container-file header for `schema` with sync marker `sync` (codec null).
pub fn write_header(out: &mut Vec<u8>, schema: &str, sync: &[u8; 16]) {
    out.extend_from_slice(b"Obj\x01");
    put_long(out, 2);
    put_bytes(out, b"avro.schema");
    put_bytes(out, schema.as_bytes());
    put_bytes(out, b"avro.codec");
    put_bytes(out, b"null");
    put_long(out, 0);
    out.extend_from_slice(sync);
}

impl RowEncoder for AvroEncoder {
    fn rows(&mut self, rows: &[Vec<Value>], out: &mut Vec<u8>) -> Result<()> {
        if !self.started {
            self.header(out);
        }
        if rows.is_empty() {
            return Ok(());
        }
        self.block.clear();
        for row in rows {
            self.encode_row(row)?;
        }
        put_long(out, rows.len() as i64);
        put_long(out, self.block.len() as i64);
        out.extend_from_slice(&self.block);
        out.extend_from_slice(&self.sync);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if !self.started {
            self.header(out);
        }
        Ok(())
    }
}

/// Decoder (the `apache-avro` crate's reader).
pub struct AvroDecoder {
    columns: Arc<[ColumnInfo]>,
    types: Vec<AvroType>,
    reader: apache_avro::Reader<'static, Box<dyn BufRead + Send>>,
    row_no: u64,
}

impl AvroDecoder {
    /// Reads `input`.
    ///
    /// # Errors
    /// When the header is not an Avro header.
    pub fn new(table: &TableInfo, input: Box<dyn BufRead + Send>) -> Result<AvroDecoder> {
        Ok(AvroDecoder {
            types: table.columns.iter().map(avro_type).collect(),
            columns: Arc::clone(&table.columns),
            reader: apache_avro::Reader::new(input).context("not an Avro object container file")?,
            row_no: 0,
        })
    }
}

fn unwrap_union(v: Av) -> Av {
    match v {
        Av::Union(_, inner) => *inner,
        other => other,
    }
}

/// A value read by `apache-avro` from a record written for column `c`, in canonical form
/// (`raw`: the record's `__storagetapper_raw` entries).
///
/// # Errors
/// When the value does not fit the column.
pub fn value_of(c: &ColumnInfo, v: Av, raw: &HashMap<String, String>) -> Result<Value> {
    to_value(c, avro_type(c), v, raw)
}

fn to_value(c: &ColumnInfo, t: AvroType, v: Av, raw: &HashMap<String, String>) -> Result<Value> {
    if let Some(text) = raw.get(&c.name) {
        return value::parse_datetime(c.kind, text).map_err(|e| anyhow!("{e}"));
    }
    let micros_to = |us: i64| from_epoch_micros(us);
    Ok(match (c.kind, t, unwrap_union(v)) {
        (_, _, Av::Null) => Value::NULL,
        (Kind::UInt, _, Av::Int(n)) => Value::UInt(u64::try_from(n)?),
        (Kind::UInt, _, Av::Long(n)) => Value::UInt(u64::try_from(n)?),
        (Kind::Bit, _, Av::Long(n)) => Value::UInt(n as u64),
        (_, _, Av::Int(n)) => Value::Int(i64::from(n)),
        (_, _, Av::Long(n)) if t == AvroType::TimeMicros => value::time_from_micros(n),
        (_, _, Av::Long(n)) => Value::Int(n),
        (Kind::UInt, AvroType::Decimal(..), Av::Decimal(d)) => {
            let b: Vec<u8> = Vec::try_from(&d).map_err(|e| anyhow!("{e}"))?;
            Value::UInt(decimal_text(&b, 0).parse()?)
        }
        (_, AvroType::Decimal(_, s), Av::Decimal(d)) => {
            let b: Vec<u8> = Vec::try_from(&d).map_err(|e| anyhow!("{e}"))?;
            Value::Bytes(decimal_text(&b, s).into_bytes())
        }
        (_, _, Av::Float(f)) => Value::Float(f),
        (_, _, Av::Double(f)) => Value::Double(f),
        (_, _, Av::Date(d)) => match micros_to(i64::from(d) * 86_400_000_000) {
            Value::Date(y, m, d, ..) => Value::Date(y, m, d, 0, 0, 0, 0),
            other => other,
        },
        (_, _, Av::TimestampMicros(us) | Av::LocalTimestampMicros(us)) => micros_to(us),
        (_, _, Av::String(s)) => Value::Bytes(s.into_bytes()),
        (_, _, Av::Bytes(b)) => Value::Bytes(b),
        (k, t, v) => bail!("Avro {v:?} does not fit a {k:?} column ({t:?})"),
    })
}

impl RowDecoder for AvroDecoder {
    fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Vec<Value>>>> {
        let mut rows = Vec::new();
        while rows.len() < max {
            let Some(rec) = self.reader.next() else { break };
            self.row_no += 1;
            let rec = rec.with_context(|| format!("record {}: damaged Avro data", self.row_no))?;
            let Av::Record(mut fields) = rec else {
                bail!("record {} is not a record", self.row_no);
            };
            let raw_field = fields.pop().map(|(_, v)| unwrap_union(v));
            let raw: HashMap<String, String> = match raw_field {
                Some(Av::Map(m)) => m
                    .into_iter()
                    .filter_map(|(k, v)| match v {
                        Av::String(s) => Some((k, s)),
                        _ => None,
                    })
                    .collect(),
                _ => HashMap::new(),
            };
            if fields.len() != self.columns.len() {
                bail!(
                    "record {} has {} fields for {} columns",
                    self.row_no,
                    fields.len(),
                    self.columns.len()
                );
            }
            let row = fields
                .into_iter()
                .enumerate()
                .map(|(i, (_, v))| {
                    to_value(&self.columns[i], self.types[i], v, &raw).with_context(|| {
                        format!("record {}: column `{}`", self.row_no, self.columns[i].name)
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            rows.push(row);
        }
        Ok((!rows.is_empty()).then_some(rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Format;

    #[test]
    fn round_trip() {
        super::super::tests::round_trip(Format::Avro);
    }

    #[test]
    fn dates_and_decimals() {
        for (y, m, d) in [
            (1970, 1, 1),
            (2024, 2, 29),
            (0, 1, 1),
            (9999, 12, 31),
            (1969, 12, 31),
        ] {
            let days = days_from_civil(y, m, d);
            assert_eq!(civil_from_days(days), (y, m, d));
        }
        assert_eq!(days_from_civil(1970, 1, 2), 1);
        for (t, s) in [
            ("-999.99", 2),
            ("0.01", 2),
            ("0.00", 2),
            ("123", 0),
            ("-0.000000000000000000000000000001", 30),
        ] {
            assert_eq!(decimal_text(&decimal_bytes(t, s).expect("bytes"), s), t);
        }
        let v = Value::Date(2038, 1, 19, 3, 14, 7, 999_999);
        assert_eq!(from_epoch_micros(epoch_micros(&v).expect("typed")), v);
        assert!(epoch_micros(&Value::Date(2024, 2, 30, 0, 0, 0, 0)).is_none());
    }

    #[test]
    fn schema_parses() {
        let (table, _) = super::super::tests::torture();
        apache_avro::Schema::parse_str(&schema_json(&table).to_string())
            .expect("valid Avro schema");
    }
}
