//! SQL: multi-row `INSERT` statements that the `mariadb` client loads as they are.
//!
//! A file starts with the session settings its literals need (utf8mb4, UTC, backslash escapes,
//! zero dates, explicit zero in AUTO_INCREMENT columns), then one `INSERT INTO `t` (…) VALUES`
//! per at most `max_statement_bytes`, one row per line. Strings are quoted with backslash
//! escapes (so a row never spans lines), bytes are hex literals, TIMESTAMP is UTC.
//! The decoder reads exactly this layout back.

use std::io::BufRead;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use mysql_async::Value;

use super::{ColumnInfo, EncodeOptions, RowDecoder, RowEncoder, TableInfo};
use crate::schema::{Kind, quote_ident};
use crate::value;

/// Session settings at the top of every SQL file.
pub const HEADER: &str = "/*!40101 SET NAMES utf8mb4 */;\n\
/*!40103 SET TIME_ZONE = '+00:00' */;\n\
/*!40101 SET SQL_MODE = 'NO_AUTO_VALUE_ON_ZERO' */;\n\
/*!40014 SET UNIQUE_CHECKS = 0, FOREIGN_KEY_CHECKS = 0 */;\n";

/// Encoder.
pub struct SqlEncoder {
    columns: Arc<[ColumnInfo]>,
    pick: Vec<usize>,
    insert: Vec<u8>,
    max: usize,
    in_statement: usize,
    started: bool,
    row: Vec<u8>,
}

impl SqlEncoder {
    /// For a table: statements name it without schema, so the loading session's database
    /// receives the rows.
    pub fn new(table: &TableInfo, opts: EncodeOptions) -> SqlEncoder {
        let all = (0..table.columns.len()).collect();
        SqlEncoder::for_insert(&quote_ident(&table.table), &table.columns, all, opts)
    }

    /// Statements into `table_sql` (already quoted) for the columns at `pick`.
    pub fn for_insert(
        table_sql: &str,
        columns: &Arc<[ColumnInfo]>,
        pick: Vec<usize>,
        opts: EncodeOptions,
    ) -> SqlEncoder {
        let cols = pick
            .iter()
            .map(|&i| quote_ident(&columns[i].name))
            .collect::<Vec<_>>()
            .join(",");
        SqlEncoder {
            columns: Arc::clone(columns),
            pick,
            insert: format!("INSERT INTO {table_sql} ({cols}) VALUES\n").into_bytes(),
            max: opts.max_statement_bytes.max(1024),
            in_statement: 0,
            started: false,
            row: Vec::with_capacity(4096),
        }
    }

    fn encode_row(&mut self, r: &[Value]) -> Result<()> {
        self.row.clear();
        self.row.push(b'(');
        for (n, &i) in self.pick.iter().enumerate() {
            if n > 0 {
                self.row.push(b',');
            }
            let c = &self.columns[i];
            let v = r.get(i).unwrap_or(&Value::NULL);
            value::write_sql(&mut self.row, c.kind, c.fsp, v)
                .map_err(|e| anyhow!("column `{}`: {e}", c.name))?;
        }
        self.row.push(b')');
        Ok(())
    }

    /// Complete INSERT statements (without `;`) for `rows`, each at most `max_statement_bytes`
    /// (or one row).
    ///
    /// # Errors
    /// When a value does not fit its column.
    pub fn statements(&mut self, rows: &[Vec<Value>]) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut cur: Vec<u8> = Vec::new();
        for r in rows {
            self.encode_row(r)?;
            if !cur.is_empty() && cur.len() + self.row.len() + 2 > self.max {
                out.push(std::mem::take(&mut cur));
            }
            if cur.is_empty() {
                cur.extend_from_slice(&self.insert);
            } else {
                cur.extend_from_slice(b",\n");
            }
            cur.extend_from_slice(&self.row);
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        Ok(out)
    }

    /// One row as a tuple literal `(…)` (the text of a row line in a file), for
    /// [`tuple_to_tsv`].
    ///
    /// # Errors
    /// When a value does not fit its column.
    pub fn row_tuple(&mut self, r: &[Value]) -> Result<&[u8]> {
        self.encode_row(r)?;
        Ok(&self.row)
    }

    fn end_statement(&mut self, out: &mut Vec<u8>) {
        if self.in_statement > 0 {
            out.extend_from_slice(b";\n");
            self.in_statement = 0;
        }
    }
}

impl RowEncoder for SqlEncoder {
    fn rows(&mut self, rows: &[Vec<Value>], out: &mut Vec<u8>) -> Result<()> {
        if !self.started {
            out.extend_from_slice(HEADER.as_bytes());
            self.started = true;
        }
        for r in rows {
            self.encode_row(r)?;
            if self.in_statement > 0 && self.in_statement + self.row.len() + 2 > self.max {
                self.end_statement(out);
            }
            if self.in_statement == 0 {
                out.extend_from_slice(&self.insert);
                self.in_statement = self.insert.len();
            } else {
                out.extend_from_slice(b",\n");
            }
            out.extend_from_slice(&self.row);
            self.in_statement += self.row.len() + 2;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if !self.started {
            out.extend_from_slice(HEADER.as_bytes());
            self.started = true;
        }
        self.end_statement(out);
        Ok(())
    }
}

/// Decoder of the files [`SqlEncoder`] writes.
pub struct SqlDecoder {
    columns: Arc<[ColumnInfo]>,
    input: Box<dyn BufRead + Send>,
    line: Vec<u8>,
    line_no: u64,
}

impl SqlDecoder {
    /// Reads `input`.
    pub fn new(table: &TableInfo, input: Box<dyn BufRead + Send>) -> SqlDecoder {
        SqlDecoder {
            columns: Arc::clone(&table.columns),
            input,
            line: Vec::new(),
            line_no: 0,
        }
    }
}

/// Appends one row tuple line `(…)` of a SQL file as a line of `LOAD DATA`'s default text
/// format (tab-separated, `\\` escapes, `\N` for NULL) with the fields at `pick` in order;
/// returns how many fields the tuple has. Numbers and strings keep their text, hex literals
/// become their bytes, so the server converts each field exactly as it converts the literal.
/// One exception: LOAD DATA reads every field as a string, and the string `0` is the YEAR
/// 2000 where the number 0 is 0000, so YEAR 0 is written `0000`.
///
/// # Errors
/// When the line is not a tuple.
pub fn tuple_to_tsv(
    line: &[u8],
    columns: &[ColumnInfo],
    pick: &[usize],
    out: &mut Vec<u8>,
) -> Result<usize> {
    let lits = parse_tuple(line)?;
    for (n, &i) in pick.iter().enumerate() {
        if n > 0 {
            out.push(b'\t');
        }
        match lits.get(i) {
            None => bail!(
                "the row has {} values, column {} is missing",
                lits.len(),
                i + 1
            ),
            Some(Lit::Null) => out.extend_from_slice(b"\\N"),
            Some(Lit::Number(t))
                if t == "0" && columns.get(i).is_some_and(|c| c.kind == Kind::Year) =>
            {
                out.extend_from_slice(b"0000");
            }
            Some(Lit::Number(t)) => out.extend_from_slice(t.as_bytes()),
            Some(Lit::Str(b) | Lit::Hex(b)) => {
                for &c in b {
                    match c {
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\t' => out.extend_from_slice(b"\\t"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        0 => out.extend_from_slice(b"\\0"),
                        c => out.push(c),
                    }
                }
            }
        }
    }
    out.push(b'\n');
    Ok(lits.len())
}

/// One literal of a row tuple.
#[derive(Debug, PartialEq)]
enum Lit {
    Null,
    Number(String),
    Str(Vec<u8>),
    Hex(Vec<u8>),
}

fn parse_tuple(line: &[u8]) -> Result<Vec<Lit>> {
    let mut out = Vec::new();
    let mut i = 1; // after '('
    loop {
        let rest = line.get(i..).ok_or_else(|| anyhow!("row ends early"))?;
        let (lit, used) = match rest.first() {
            Some(b'N') if rest.starts_with(b"NULL") => (Lit::Null, 4),
            Some(b'\'') => {
                let mut s = Vec::new();
                let mut j = 1;
                loop {
                    match rest.get(j) {
                        None => bail!("unterminated string"),
                        Some(b'\'') => break,
                        Some(b'\\') => {
                            let c = rest.get(j + 1).ok_or_else(|| anyhow!("dangling escape"))?;
                            s.push(match c {
                                b'0' => 0,
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b'Z' => 0x1a,
                                b't' => b'\t',
                                b'b' => 8,
                                other => *other,
                            });
                            j += 2;
                        }
                        Some(c) => {
                            s.push(*c);
                            j += 1;
                        }
                    }
                }
                (Lit::Str(s), j + 1)
            }
            Some(b'X') if rest.get(1) == Some(&b'\'') => {
                let end = rest[2..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .ok_or_else(|| anyhow!("unterminated hex literal"))?;
                let hex = &rest[2..2 + end];
                (
                    Lit::Hex(hex::decode(hex).context("bad hex literal")?),
                    end + 3,
                )
            }
            Some(c) if c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.') => {
                let end = rest
                    .iter()
                    .position(|&c| {
                        !(c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
                    })
                    .unwrap_or(rest.len());
                (
                    Lit::Number(String::from_utf8_lossy(&rest[..end]).into_owned()),
                    end,
                )
            }
            _ => bail!("unexpected text at byte {i}"),
        };
        out.push(lit);
        i += used;
        match line.get(i) {
            Some(b',') => i += 1,
            Some(b')') => return Ok(out),
            _ => bail!("expected `,` or `)` at byte {i}"),
        }
    }
}

fn to_value(c: &ColumnInfo, lit: Lit) -> Result<Value> {
    let text = |b: Vec<u8>| String::from_utf8(b).map_err(|e| anyhow!("not UTF-8: {e}"));
    Ok(match (c.kind, lit) {
        (_, Lit::Null) => Value::NULL,
        (Kind::Int | Kind::Year, Lit::Number(n)) => {
            Value::Int(n.parse().with_context(|| format!("bad integer {n}"))?)
        }
        (Kind::UInt | Kind::Bit, Lit::Number(n)) => {
            Value::UInt(n.parse().with_context(|| format!("bad integer {n}"))?)
        }
        (Kind::Float, Lit::Number(n)) => {
            Value::Float(n.parse().with_context(|| format!("bad float {n}"))?)
        }
        (Kind::Double, Lit::Number(n)) => {
            Value::Double(n.parse().with_context(|| format!("bad double {n}"))?)
        }
        (Kind::Decimal, Lit::Number(n)) => Value::Bytes(n.into_bytes()),
        (Kind::Date | Kind::DateTime | Kind::Timestamp, Lit::Str(s)) => {
            value::parse_datetime(c.kind, &text(s)?).map_err(|e| anyhow!("{e}"))?
        }
        (Kind::Time, Lit::Str(s)) => value::parse_time(&text(s)?).map_err(|e| anyhow!("{e}"))?,
        (Kind::Binary | Kind::Geometry, Lit::Hex(b)) => Value::Bytes(b),
        (Kind::Text | Kind::Enum | Kind::Set | Kind::Json, Lit::Str(s)) => Value::Bytes(s),
        (k, l) => bail!("{l:?} does not fit a {k:?} column"),
    })
}

impl RowDecoder for SqlDecoder {
    fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Vec<Value>>>> {
        let mut rows = Vec::new();
        while rows.len() < max {
            self.line.clear();
            let n = self
                .input
                .read_until(b'\n', &mut self.line)
                .context("read")?;
            if n == 0 {
                break;
            }
            self.line_no += 1;
            if self.line.first() != Some(&b'(') {
                continue; // header, INSERT INTO … VALUES
            }
            if !(self.line.ends_with(b"),\n") || self.line.ends_with(b");\n")) {
                bail!("line {} is cut off (the file is truncated)", self.line_no);
            }
            let lits = parse_tuple(&self.line).with_context(|| format!("line {}", self.line_no))?;
            if lits.len() != self.columns.len() {
                bail!(
                    "line {}: {} values for {} columns",
                    self.line_no,
                    lits.len(),
                    self.columns.len()
                );
            }
            let row = self
                .columns
                .iter()
                .zip(lits)
                .map(|(c, l)| {
                    to_value(c, l)
                        .with_context(|| format!("line {}: column `{}`", self.line_no, c.name))
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
        super::super::tests::round_trip(Format::Sql);
    }

    #[test]
    fn statements_are_split_and_rows_stay_on_one_line() {
        let (table, rows) = super::super::tests::torture();
        let mut enc = SqlEncoder::new(
            &table,
            EncodeOptions {
                max_statement_bytes: 1024,
                inner_zstd: None,
            },
        );
        let mut out = Vec::new();
        for _ in 0..10 {
            enc.rows(&rows, &mut out).expect("encode");
        }
        enc.finish(&mut out).expect("finish");
        let text = String::from_utf8_lossy(&out);
        assert!(text.matches("INSERT INTO `t``x`").count() > 3, "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with('(')).count(), 30);
        assert!(text.ends_with(");\n"));
    }

    #[test]
    fn tuples_become_load_data_lines() {
        let mut out = Vec::new();
        let line = b"(1,NULL,'a\\tb\\\\c\\nd\\0',X'00ff5c09',-1.5e-7,'2020-01-01 00:00:00'),\n";
        let col = |kind| ColumnInfo {
            name: "c".into(),
            kind,
            fsp: 0,
            column_type: String::new(),
            nullable: true,
        };
        let cols: Vec<ColumnInfo> = [
            Kind::Int,
            Kind::Int,
            Kind::Text,
            Kind::Binary,
            Kind::Double,
            Kind::DateTime,
        ]
        .into_iter()
        .map(col)
        .collect();
        let n = tuple_to_tsv(line, &cols, &[0, 1, 2, 3, 4, 5], &mut out).expect("tuple");
        assert_eq!(n, 6);
        assert_eq!(
            out,
            b"1\t\\N\ta\\tb\\\\c\\nd\\0\t\\0\xff\\\\\\t\t-1.5e-7\t2020-01-01 00:00:00\n".to_vec()
        );
        out.clear();
        tuple_to_tsv(b"(1,2,3);\n", &cols, &[2, 0], &mut out).expect("pick");
        assert_eq!(out, b"3\t1\n".to_vec());
        assert!(tuple_to_tsv(b"(1,2)", &cols, &[3], &mut out).is_err());
        // YEAR 0 is 0000, not the string `0` (= 2000).
        out.clear();
        let years = [col(Kind::Year), col(Kind::Int)];
        tuple_to_tsv(b"(0,0)", &years, &[0, 1], &mut out).expect("year");
        assert_eq!(out, b"0000\t0\n".to_vec());
    }
}
