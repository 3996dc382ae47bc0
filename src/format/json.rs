//! JSON lines: one object per row, the columns by name, values in the JSON mapping of
//! DESIGN.md (see [`crate::value::write_json`]).
//!
//! A JSON column whose stored text is valid JSON on one line is embedded as it is. Otherwise
//! (a document with line breaks, or invalid text) the column holds the compacted value (or the
//! text as a string when it is not JSON), and the exact text goes to the reserved field
//! [`RAW_FIELD`] — `{"__storagetapper_raw": {"col": "exact text"}}` — so every line stays one
//! line and restore gives back the bytes the source had.

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use mysql_async::Value;
use serde_json::value::RawValue;

use super::{ColumnInfo, RowDecoder, RowEncoder, TableInfo};
use crate::schema::Kind;
use crate::value;

/// Reserved field holding the exact text of JSON columns that could not be embedded as is.
pub const RAW_FIELD: &str = "__storagetapper_raw";

/// Encoder.
pub struct JsonEncoder {
    columns: Arc<[ColumnInfo]>,
    prefixes: Vec<Vec<u8>>,
    raw: Vec<(usize, String)>,
}

impl JsonEncoder {
    /// For a table.
    pub fn new(table: &TableInfo) -> JsonEncoder {
        let prefixes = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut p = vec![if i == 0 { b'{' } else { b',' }];
                value::write_str(&mut p, &c.name);
                p.push(b':');
                p
            })
            .collect();
        JsonEncoder {
            columns: Arc::clone(&table.columns),
            prefixes,
            raw: Vec::new(),
        }
    }
}

fn embeddable(text: &[u8]) -> bool {
    !text.iter().any(|&c| c == b'\n' || c == b'\r')
        && serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok()
}

impl RowEncoder for JsonEncoder {
    fn rows(&mut self, rows: &[Vec<Value>], out: &mut Vec<u8>) -> Result<()> {
        for row in rows {
            self.raw.clear();
            for (i, c) in self.columns.iter().enumerate() {
                out.extend_from_slice(&self.prefixes[i]);
                let v = row.get(i).unwrap_or(&Value::NULL);
                match (c.kind, v) {
                    (Kind::Json, Value::Bytes(text)) if !embeddable(text) => {
                        let s = String::from_utf8(text.clone()).map_err(|e| {
                            anyhow!("column `{}`: JSON text is not UTF-8: {e}", c.name)
                        })?;
                        match serde_json::from_str::<serde_json::Value>(&s) {
                            Ok(v) => serde_json::to_writer(&mut *out, &v)?,
                            Err(_) => value::write_str(out, &s),
                        }
                        self.raw.push((i, s));
                    }
                    _ => value::write_json(out, c.kind, c.fsp, v)
                        .map_err(|e| anyhow!("column `{}`: {e}", c.name))?,
                }
            }
            if self.columns.is_empty() {
                out.push(b'{');
            }
            if !self.raw.is_empty() {
                out.push(b',');
                value::write_str(out, RAW_FIELD);
                out.push(b':');
                for (n, (i, s)) in self.raw.iter().enumerate() {
                    out.push(if n == 0 { b'{' } else { b',' });
                    value::write_str(out, &self.columns[*i].name);
                    out.push(b':');
                    value::write_str(out, s);
                }
                out.push(b'}');
            }
            out.extend_from_slice(b"}\n");
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
}

/// Decoder.
pub struct JsonDecoder {
    columns: Arc<[ColumnInfo]>,
    input: Box<dyn BufRead + Send>,
    line: String,
    line_no: u64,
}

impl JsonDecoder {
    /// Reads `input`.
    pub fn new(table: &TableInfo, input: Box<dyn BufRead + Send>) -> JsonDecoder {
        JsonDecoder {
            columns: Arc::clone(&table.columns),
            input,
            line: String::new(),
            line_no: 0,
        }
    }

    fn parse_line(&self) -> Result<Vec<Value>> {
        let fields: HashMap<String, Box<RawValue>> = serde_json::from_str(&self.line)
            .with_context(|| format!("line {} is not a JSON object", self.line_no))?;
        let raw: HashMap<String, String> = match fields.get(RAW_FIELD) {
            Some(r) => serde_json::from_str(r.get())
                .with_context(|| format!("line {}: bad {RAW_FIELD}", self.line_no))?,
            None => HashMap::new(),
        };
        self.columns
            .iter()
            .map(|c| {
                if let Some(text) = raw.get(&c.name) {
                    return Ok(Value::Bytes(text.clone().into_bytes()));
                }
                let f = fields.get(&c.name).ok_or_else(|| {
                    anyhow!("line {}: column `{}` is missing", self.line_no, c.name)
                })?;
                value::from_json(c.kind, f.get())
                    .map_err(|e| anyhow!("line {}: column `{}`: {e}", self.line_no, c.name))
            })
            .collect()
    }
}

impl RowDecoder for JsonDecoder {
    fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Vec<Value>>>> {
        let mut rows = Vec::new();
        while rows.len() < max {
            self.line.clear();
            let n = self.input.read_line(&mut self.line).context("read")?;
            if n == 0 {
                break;
            }
            self.line_no += 1;
            if !self.line.ends_with('\n') {
                return Err(anyhow!(
                    "line {} is cut off (the file is truncated)",
                    self.line_no
                ));
            }
            rows.push(self.parse_line()?);
        }
        Ok((!rows.is_empty()).then_some(rows))
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::Format;

    #[test]
    fn round_trip() {
        super::super::tests::round_trip(Format::Json);
    }

    #[test]
    fn multi_line_json_keeps_lines_and_exact_text() {
        let (table, rows) = super::super::tests::torture();
        let mut enc = super::JsonEncoder::new(&table);
        let mut out = Vec::new();
        use super::RowEncoder;
        enc.rows(&rows[2..], &mut out).expect("encode");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains(r#""j":{"multi":"line"}"#), "{text}");
        assert!(text.contains(super::RAW_FIELD), "{text}");
    }
}
