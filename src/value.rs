//! MySQL values as they arrive from the source (binary protocol) and their two text forms:
//! the JSON mapping of DESIGN.md ("Rows and types") used for rows and human-readable keys, and
//! the lossless [`KeyValue`] form in which chunk bounds are stored and bound back as parameters.
//!
//! Invariant: one conversion path per kind, allocation-free per value on the row path (values
//! are written straight into the caller's buffer).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mysql_async::Value;
use serde::{Deserialize, Serialize};

use crate::schema::Kind;

/// Why a value could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

/// Writes `v` of a column of kind `kind` with `fsp` fractional digits as JSON into `out`.
///
/// # Errors
/// When the value does not fit its kind (e.g. text that is not UTF-8).
pub fn write_json(out: &mut Vec<u8>, kind: Kind, fsp: u32, v: &Value) -> Result<(), ValueError> {
    match (kind, v) {
        (_, Value::NULL) => out.extend_from_slice(b"null"),
        (_, Value::Int(i)) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        (_, Value::UInt(u)) => out.extend_from_slice(itoa::Buffer::new().format(*u).as_bytes()),
        (_, Value::Float(f)) => write_f32(out, *f),
        (_, Value::Double(f)) => write_f64(out, *f),
        (Kind::Date, Value::Date(y, m, d, ..)) => {
            out.push(b'"');
            write_date(out, *y, *m, *d);
            out.push(b'"');
        }
        (Kind::Timestamp, Value::Date(y, mo, d, h, mi, s, us)) => {
            out.push(b'"');
            write_date(out, *y, *mo, *d);
            out.push(b'T');
            write_hms(out, u32::from(*h), *mi, *s);
            write_frac(out, *us, fsp);
            out.extend_from_slice(b"Z\"");
        }
        (_, Value::Date(y, mo, d, h, mi, s, us)) => {
            out.push(b'"');
            write_date(out, *y, *mo, *d);
            out.push(b' ');
            write_hms(out, u32::from(*h), *mi, *s);
            write_frac(out, *us, fsp);
            out.push(b'"');
        }
        (_, Value::Time(neg, days, h, mi, s, us)) => {
            out.push(b'"');
            if *neg {
                out.push(b'-');
            }
            write_hms(out, days * 24 + u32::from(*h), *mi, *s);
            write_frac(out, *us, fsp);
            out.push(b'"');
        }
        (Kind::Int | Kind::UInt | Kind::Year, Value::Bytes(b)) => {
            // Text protocol: digits as sent.
            if b.is_empty() || !b.iter().all(|c| c.is_ascii_digit() || *c == b'-') {
                return Err(ValueError(format!(
                    "integer column holds non-numeric text {:?}",
                    String::from_utf8_lossy(b)
                )));
            }
            out.extend_from_slice(b);
        }
        (Kind::Float | Kind::Double, Value::Bytes(b)) => out.extend_from_slice(b),
        (Kind::Binary | Kind::Geometry, Value::Bytes(b)) => {
            out.push(b'"');
            let start = out.len();
            out.resize(start + base64::encoded_len(b.len(), true).unwrap_or(0), 0);
            let n = B64
                .encode_slice(b, &mut out[start..])
                .map_err(|e| ValueError(format!("base64: {e}")))?;
            out.truncate(start + n);
            out.push(b'"');
        }
        (Kind::Bit, Value::Bytes(b)) => {
            let n = b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        }
        (Kind::Json, Value::Bytes(b)) => {
            // The JSON value itself. Raw text is kept when it is valid JSON on one line;
            // otherwise it is written as a JSON string so nothing is lost.
            let one_line = !b.iter().any(|&c| c == b'\n' || c == b'\r');
            if one_line && serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok() {
                out.extend_from_slice(b);
            } else {
                write_str(out, utf8(b)?);
            }
        }
        (_, Value::Bytes(b)) => write_str(out, utf8(b)?),
    }
    Ok(())
}

fn utf8(b: &[u8]) -> Result<&str, ValueError> {
    std::str::from_utf8(b).map_err(|e| ValueError(format!("text is not valid UTF-8: {e}")))
}

fn write_f32(out: &mut Vec<u8>, f: f32) {
    if f.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

fn write_f64(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

fn push2(out: &mut Vec<u8>, n: u8) {
    out.push(b'0' + n / 10 % 10);
    out.push(b'0' + n % 10);
}

fn write_date(out: &mut Vec<u8>, y: u16, m: u8, d: u8) {
    let y = y % 10000;
    push2(out, (y / 100) as u8);
    push2(out, (y % 100) as u8);
    out.push(b'-');
    push2(out, m);
    out.push(b'-');
    push2(out, d);
}

fn write_hms(out: &mut Vec<u8>, h: u32, m: u8, s: u8) {
    if h < 100 {
        push2(out, h as u8);
    } else {
        out.extend_from_slice(itoa::Buffer::new().format(h).as_bytes());
    }
    out.push(b':');
    push2(out, m);
    out.push(b':');
    push2(out, s);
}

fn write_frac(out: &mut Vec<u8>, us: u32, fsp: u32) {
    if fsp == 0 {
        return;
    }
    let fsp = fsp.min(6);
    let mut digits = [b'0'; 6];
    let mut v = us % 1_000_000;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.push(b'.');
    out.extend_from_slice(&digits[..fsp as usize]);
}

/// Writes `s` as a JSON string with the escapes JSON requires.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The canonical form of a value for its column kind, shared by every encoder and decoder:
/// BIT and unsigned integers become `UInt`, signed integers and YEAR `Int`; everything else is
/// as the binary protocol gives it.
pub fn canonical(kind: Kind, v: Value) -> Value {
    match (kind, v) {
        (Kind::Bit, Value::Bytes(b)) => {
            Value::UInt(b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
        }
        (Kind::Bit, Value::Int(i)) => Value::UInt(i as u64),
        // The binary protocol sends small unsigned values as signed and the other way round.
        (Kind::UInt, Value::Int(i)) if i >= 0 => Value::UInt(i as u64),
        (Kind::Int | Kind::Year, Value::UInt(u)) if i64::try_from(u).is_ok() => {
            Value::Int(u as i64)
        }
        (_, v) => v,
    }
}

/// Writes `v` as a MariaDB/MySQL literal (for INSERT statements). Strings use backslash
/// escapes (the session must not have NO_BACKSLASH_ESCAPES), bytes are hex literals.
///
/// # Errors
/// When the value does not fit its kind.
pub fn write_sql(out: &mut Vec<u8>, kind: Kind, fsp: u32, v: &Value) -> Result<(), ValueError> {
    match (kind, v) {
        (_, Value::NULL) => out.extend_from_slice(b"NULL"),
        (_, Value::Int(i)) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        (_, Value::UInt(u)) => out.extend_from_slice(itoa::Buffer::new().format(*u).as_bytes()),
        (_, Value::Float(f)) => {
            write_sql_float(out, ryu::Buffer::new().format(*f), f.is_sign_negative())
        }
        (_, Value::Double(f)) => {
            write_sql_float(out, ryu::Buffer::new().format(*f), f.is_sign_negative())
        }
        (
            Kind::Date | Kind::DateTime | Kind::Timestamp | Kind::Time,
            Value::Date(..) | Value::Time(..),
        ) => {
            // The JSON text of a temporal value is `"…"`; for SQL it becomes `'…'` without the
            // `T`/`Z` of TIMESTAMP (the session time zone is UTC).
            let start = out.len();
            write_json(
                out,
                if kind == Kind::Timestamp {
                    Kind::DateTime
                } else {
                    kind
                },
                fsp,
                v,
            )?;
            out[start] = b'\'';
            let end = out.len() - 1;
            out[end] = b'\'';
        }
        (Kind::Binary | Kind::Geometry, Value::Bytes(b)) => write_hex(out, b),
        (Kind::Bit, Value::Bytes(b)) => {
            let n = b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        }
        (
            Kind::Int | Kind::UInt | Kind::Year | Kind::Decimal | Kind::Float | Kind::Double,
            Value::Bytes(b),
        ) => {
            if b.is_empty()
                || !b
                    .iter()
                    .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
            {
                return Err(ValueError(format!(
                    "not a number: {:?}",
                    String::from_utf8_lossy(b)
                )));
            }
            out.extend_from_slice(b);
        }
        (_, Value::Bytes(b)) => write_sql_str(out, b),
        (_, other) => {
            return Err(ValueError(format!(
                "{other:?} does not fit a {kind:?} column"
            )));
        }
    }
    Ok(())
}

fn write_sql_float(out: &mut Vec<u8>, text: &str, negative: bool) {
    // `-0.0` would be read as the DECIMAL 0; a float literal keeps the sign.
    if text == "-0.0" && negative {
        out.extend_from_slice(b"-0e0");
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

/// `X'…'`.
pub fn write_hex(out: &mut Vec<u8>, b: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(b.len() * 2 + 3);
    out.extend_from_slice(b"X'");
    for &x in b {
        out.push(HEX[usize::from(x >> 4)]);
        out.push(HEX[usize::from(x & 15)]);
    }
    out.push(b'\'');
}

/// A quoted string literal with MariaDB's backslash escapes.
pub fn write_sql_str(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'\'');
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'\'' => b"\\'",
            b'\\' => b"\\\\",
            0 => b"\\0",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            0x1a => b"\\Z",
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'\'');
}

fn bad(kind: Kind, text: &str) -> ValueError {
    ValueError(format!("`{text}` is not a valid {kind:?} value"))
}

fn num<T: std::str::FromStr>(s: &str) -> Option<T> {
    s.parse().ok()
}

/// Parses `YYYY-MM-DD[( |T)HH:MM:SS[.ffffff]][Z]` into a DATE/DATETIME value.
pub fn parse_datetime(kind: Kind, s: &str) -> Result<Value, ValueError> {
    let t = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = match t.split_once([' ', 'T']) {
        Some((d, tm)) => (d, Some(tm)),
        None => (t, None),
    };
    let mut dp = date.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (dp.next(), dp.next(), dp.next()) else {
        return Err(bad(kind, s));
    };
    let (y, m, d) = (num::<u16>(y), num::<u8>(m), num::<u8>(d));
    let (Some(y), Some(m), Some(d)) = (y, m, d) else {
        return Err(bad(kind, s));
    };
    let (h, mi, sec, us) = match time {
        None => (0, 0, 0, 0),
        Some(tm) => {
            let (neg, h, mi, sec, us) = parse_hms(tm).ok_or_else(|| bad(kind, s))?;
            if neg || h > 23 {
                return Err(bad(kind, s));
            }
            (h as u8, mi, sec, us)
        }
    };
    Ok(Value::Date(y, m, d, h, mi, sec, us))
}

/// `[-]H+:MM:SS[.f]` → (negative, hours, minutes, seconds, microseconds).
fn parse_hms(s: &str) -> Option<(bool, u32, u8, u8, u32)> {
    let (neg, t) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (main, frac) = match t.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (t, None),
    };
    let mut p = main.splitn(3, ':');
    let h: u32 = num(p.next()?)?;
    let m: u8 = num(p.next()?)?;
    let sec: u8 = num(p.next()?)?;
    let us = match frac {
        None => 0,
        Some(f) if f.len() <= 6 && f.bytes().all(|c| c.is_ascii_digit()) && !f.is_empty() => {
            num::<u32>(f)? * 10u32.pow(6 - f.len() as u32)
        }
        Some(_) => return None,
    };
    Some((neg, h, m, sec, us))
}

/// Parses `[-]HHH:MM:SS[.f]` into a TIME value.
pub fn parse_time(s: &str) -> Result<Value, ValueError> {
    let (neg, h, m, sec, us) = parse_hms(s).ok_or_else(|| bad(Kind::Time, s))?;
    Ok(Value::Time(neg, h / 24, (h % 24) as u8, m, sec, us))
}

/// Parses one field of a JSON-lines row (its raw JSON text) back into the canonical value.
///
/// # Errors
/// When the text does not fit the column kind.
pub fn from_json(kind: Kind, raw: &str) -> Result<Value, ValueError> {
    let raw = raw.trim();
    if raw == "null" {
        return Ok(Value::NULL);
    }
    let string = || -> Result<String, ValueError> {
        serde_json::from_str::<String>(raw)
            .map_err(|e| ValueError(format!("expected a JSON string, got `{raw}`: {e}")))
    };
    Ok(match kind {
        Kind::Int | Kind::Year => Value::Int(num(raw).ok_or_else(|| bad(kind, raw))?),
        Kind::UInt | Kind::Bit => Value::UInt(num(raw).ok_or_else(|| bad(kind, raw))?),
        Kind::Float => Value::Float(num(raw).ok_or_else(|| bad(kind, raw))?),
        Kind::Double => Value::Double(num(raw).ok_or_else(|| bad(kind, raw))?),
        Kind::Decimal | Kind::Text | Kind::Enum | Kind::Set => Value::Bytes(string()?.into_bytes()),
        Kind::Date | Kind::DateTime | Kind::Timestamp => parse_datetime(kind, &string()?)?,
        Kind::Time => parse_time(&string()?)?,
        Kind::Binary | Kind::Geometry => Value::Bytes(
            B64.decode(string()?)
                .map_err(|e| ValueError(format!("not base64: {e}")))?,
        ),
        Kind::Json => Value::Bytes(raw.as_bytes().to_vec()),
    })
}

/// Signed microseconds of a TIME value.
pub fn time_micros(v: &Value) -> Option<i64> {
    let Value::Time(neg, d, h, m, s, us) = v else {
        return None;
    };
    let micros = ((i64::from(*d) * 24 + i64::from(*h)) * 3600 + i64::from(*m) * 60 + i64::from(*s))
        * 1_000_000
        + i64::from(*us);
    Some(if *neg { -micros } else { micros })
}

/// A TIME value from signed microseconds (inverse of [`time_micros`]).
pub fn time_from_micros(n: i64) -> Value {
    let neg = n < 0;
    let a = n.unsigned_abs();
    let secs = a / 1_000_000;
    let h = secs / 3600;
    Value::Time(
        neg,
        (h / 24) as u32,
        (h % 24) as u8,
        (secs / 60 % 60) as u8,
        (secs % 60) as u8,
        (a % 1_000_000) as u32,
    )
}

/// `-123.4` with scale 3 → `-123400`.
pub fn unscaled_digits(text: &str, scale: usize) -> Result<String, ValueError> {
    let (neg, t) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if frac.len() > scale || !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit()) {
        return Err(ValueError(format!(
            "`{text}` is not a decimal with scale {scale}"
        )));
    }
    let mut s = String::with_capacity(int.len() + scale + 1);
    if neg {
        s.push('-');
    }
    s.push_str(int);
    s.push_str(frac);
    s.extend(std::iter::repeat_n('0', scale - frac.len()));
    Ok(s)
}

/// `-123400` with scale 3 → `-123.400`.
pub fn scaled_text(unscaled: &str, scale: usize) -> String {
    let (neg, mut digits) = match unscaled.strip_prefix('-') {
        Some(r) => (true, r.to_string()),
        None => (false, unscaled.to_string()),
    };
    if scale > 0 {
        if digits.len() <= scale {
            digits = format!("{}{digits}", "0".repeat(scale + 1 - digits.len()));
        }
        digits.insert(digits.len() - scale, '.');
    }
    if neg {
        digits.insert(0, '-');
    }
    digits
}

/// A checksum of one row's values as read from the source (binary protocol), the same for the
/// same values whichever format the backup is in. Integers hash by value (signed or not).
/// `scratch` is reused between rows: the row's bytes are gathered and hashed in one call (the
/// CRC of the concatenation, so the same value as hashing piece by piece, at a third of the
/// cost for rows of small values).
pub fn row_fingerprint(row: &[Value], scratch: &mut Vec<u8>) -> u32 {
    scratch.clear();
    for v in row {
        match v {
            Value::NULL => scratch.push(0),
            Value::Bytes(b) => {
                scratch.push(1);
                scratch.extend_from_slice(&(b.len() as u64).to_le_bytes());
                scratch.extend_from_slice(b);
            }
            Value::Int(i) => {
                scratch.push(2);
                scratch.extend_from_slice(&i128::from(*i).to_le_bytes());
            }
            Value::UInt(u) => {
                scratch.push(2);
                scratch.extend_from_slice(&i128::from(*u).to_le_bytes());
            }
            Value::Float(f) => {
                scratch.push(4);
                scratch.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            Value::Double(f) => {
                scratch.push(5);
                scratch.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            Value::Date(y, mo, d, hh, mi, s, us) => {
                scratch.push(6);
                scratch.extend_from_slice(&y.to_le_bytes());
                scratch.extend_from_slice(&[*mo, *d, *hh, *mi, *s]);
                scratch.extend_from_slice(&us.to_le_bytes());
            }
            Value::Time(neg, d, hh, mi, s, us) => {
                scratch.extend_from_slice(&[7, u8::from(*neg)]);
                scratch.extend_from_slice(&d.to_le_bytes());
                scratch.extend_from_slice(&[*hh, *mi, *s]);
                scratch.extend_from_slice(&us.to_le_bytes());
            }
        }
    }
    crc32fast::hash(scratch)
}

/// A value of a chunk key, stored without loss (state table, `metadata.json`) and bound back
/// as a statement parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyValue {
    /// NULL.
    Null,
    /// Signed integer.
    Int(i64),
    /// Unsigned integer.
    UInt(u64),
    /// FLOAT.
    Float(f32),
    /// DOUBLE.
    Double(f64),
    /// Text or bytes, base64.
    Bytes(String),
    /// year, month, day, hour, minute, second, microsecond.
    Date([u32; 7]),
    /// negative, days, hours, minutes, seconds, microseconds.
    Time(bool, [u32; 5]),
}

impl KeyValue {
    /// From a value read from the server.
    pub fn from_value(v: &Value) -> KeyValue {
        match v {
            Value::NULL => KeyValue::Null,
            Value::Int(i) => KeyValue::Int(*i),
            Value::UInt(u) => KeyValue::UInt(*u),
            Value::Float(f) => KeyValue::Float(*f),
            Value::Double(f) => KeyValue::Double(*f),
            Value::Bytes(b) => KeyValue::Bytes(B64.encode(b)),
            Value::Date(y, mo, d, h, mi, s, us) => KeyValue::Date([
                u32::from(*y),
                u32::from(*mo),
                u32::from(*d),
                u32::from(*h),
                u32::from(*mi),
                u32::from(*s),
                *us,
            ]),
            Value::Time(n, d, h, mi, s, us) => {
                KeyValue::Time(*n, [*d, u32::from(*h), u32::from(*mi), u32::from(*s), *us])
            }
        }
    }

    /// Back to a value to bind.
    ///
    /// # Errors
    /// When stored bytes are not valid base64 (a damaged state table).
    pub fn to_value(&self) -> Result<Value, ValueError> {
        let narrow = |x: u32| u8::try_from(x).map_err(|_| ValueError(format!("bad key field {x}")));
        Ok(match self {
            KeyValue::Null => Value::NULL,
            KeyValue::Int(i) => Value::Int(*i),
            KeyValue::UInt(u) => Value::UInt(*u),
            KeyValue::Float(f) => Value::Float(*f),
            KeyValue::Double(f) => Value::Double(*f),
            KeyValue::Bytes(s) => Value::Bytes(
                B64.decode(s)
                    .map_err(|e| ValueError(format!("stored key is not base64: {e}")))?,
            ),
            KeyValue::Date([y, mo, d, h, mi, s, us]) => Value::Date(
                u16::try_from(*y).map_err(|_| ValueError(format!("bad year {y}")))?,
                narrow(*mo)?,
                narrow(*d)?,
                narrow(*h)?,
                narrow(*mi)?,
                narrow(*s)?,
                *us,
            ),
            KeyValue::Time(n, [d, h, mi, s, us]) => {
                Value::Time(*n, *d, narrow(*h)?, narrow(*mi)?, narrow(*s)?, *us)
            }
        })
    }
}

/// A key (one value per key column) in the JSON mapping, for people: `metadata.json`, `status`.
pub fn human_key(kinds: &[(Kind, u32)], values: &[Value]) -> serde_json::Value {
    let mut buf = Vec::with_capacity(32);
    let items = kinds
        .iter()
        .zip(values)
        .map(|((k, fsp), v)| {
            buf.clear();
            match write_json(&mut buf, *k, *fsp, v) {
                Ok(()) => serde_json::from_slice(&buf).unwrap_or(serde_json::Value::Null),
                Err(_) => serde_json::Value::Null,
            }
        })
        .collect();
    serde_json::Value::Array(items)
}

#[cfg(test)]
mod tests {

    /// The fingerprint as first written (one CRC update per piece): fingerprints stored in
    /// existing backups' metadata were computed this way, so the gathered form must agree.
    fn row_fingerprint_piecewise(row: &[Value]) -> u32 {
        let mut h = crc32fast::Hasher::new();
        for v in row {
            match v {
                Value::NULL => h.update(&[0]),
                Value::Bytes(b) => {
                    h.update(&[1]);
                    h.update(&(b.len() as u64).to_le_bytes());
                    h.update(b);
                }
                Value::Int(i) => {
                    h.update(&[2]);
                    h.update(&i128::from(*i).to_le_bytes());
                }
                Value::UInt(u) => {
                    h.update(&[2]);
                    h.update(&i128::from(*u).to_le_bytes());
                }
                Value::Float(f) => {
                    h.update(&[4]);
                    h.update(&f.to_bits().to_le_bytes());
                }
                Value::Double(f) => {
                    h.update(&[5]);
                    h.update(&f.to_bits().to_le_bytes());
                }
                Value::Date(y, mo, d, hh, mi, s, us) => {
                    h.update(&[6]);
                    h.update(&y.to_le_bytes());
                    h.update(&[*mo, *d, *hh, *mi, *s]);
                    h.update(&us.to_le_bytes());
                }
                Value::Time(neg, d, hh, mi, s, us) => {
                    h.update(&[7, u8::from(*neg)]);
                    h.update(&d.to_le_bytes());
                    h.update(&[*hh, *mi, *s]);
                    h.update(&us.to_le_bytes());
                }
            }
        }
        h.finalize()
    }

    #[test]
    fn row_fingerprint_is_the_piecewise_crc() {
        let rows = vec![
            vec![],
            vec![Value::NULL],
            vec![
                Value::Int(-5),
                Value::UInt(u64::MAX),
                Value::Bytes(b"hello".to_vec()),
                Value::Bytes(vec![]),
                Value::Float(1.5),
                Value::Double(-2.25),
                Value::Date(2024, 2, 29, 23, 59, 58, 123_456),
                Value::Time(true, 34, 22, 1, 2, 999_999),
                Value::NULL,
            ],
            vec![Value::Bytes(vec![0xAB; 70_000]), Value::Int(i64::MIN)],
        ];
        let mut scratch = Vec::new();
        for row in &rows {
            assert_eq!(
                row_fingerprint(row, &mut scratch),
                row_fingerprint_piecewise(row),
                "{row:?}"
            );
        }
        // signed and unsigned integers of the same value hash alike
        assert_eq!(
            row_fingerprint(&[Value::Int(7)], &mut scratch),
            row_fingerprint(&[Value::UInt(7)], &mut scratch)
        );
    }
    use super::*;

    fn j(kind: Kind, fsp: u32, v: Value) -> String {
        let mut out = Vec::new();
        write_json(&mut out, kind, fsp, &v).expect("encodes");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn json_mapping() {
        assert_eq!(
            j(Kind::UInt, 0, Value::UInt(u64::MAX)),
            "18446744073709551615"
        );
        assert_eq!(j(Kind::Int, 0, Value::Int(-5)), "-5");
        assert_eq!(
            j(Kind::Decimal, 0, Value::Bytes(b"-999.99".to_vec())),
            "\"-999.99\""
        );
        assert_eq!(j(Kind::Double, 0, Value::Double(-0.0)), "-0.0");
        assert_eq!(
            j(Kind::Date, 0, Value::Date(2024, 2, 29, 0, 0, 0, 0)),
            "\"2024-02-29\""
        );
        assert_eq!(
            j(Kind::Date, 0, Value::Date(0, 0, 0, 0, 0, 0, 0)),
            "\"0000-00-00\""
        );
        assert_eq!(
            j(
                Kind::DateTime,
                6,
                Value::Date(2024, 2, 29, 12, 34, 56, 123_456)
            ),
            "\"2024-02-29 12:34:56.123456\""
        );
        assert_eq!(
            j(
                Kind::Timestamp,
                3,
                Value::Date(2024, 2, 29, 12, 34, 56, 123_000)
            ),
            "\"2024-02-29T12:34:56.123Z\""
        );
        assert_eq!(
            j(Kind::Time, 6, Value::Time(true, 34, 22, 59, 59, 0)),
            "\"-838:59:59.000000\""
        );
        assert_eq!(
            j(Kind::Time, 0, Value::Time(false, 0, 1, 2, 3, 0)),
            "\"01:02:03\""
        );
        assert_eq!(
            j(Kind::Binary, 0, Value::Bytes(vec![0, 1, 255])),
            "\"AAH/\""
        );
        assert_eq!(
            j(Kind::Bit, 0, Value::Bytes(vec![0xff; 8])),
            "18446744073709551615"
        );
        assert_eq!(
            j(
                Kind::Text,
                0,
                Value::Bytes("a\"\\\n\u{1}😀".as_bytes().to_vec())
            ),
            "\"a\\\"\\\\\\n\\u0001😀\""
        );
        assert_eq!(
            j(Kind::Json, 0, Value::Bytes(br#"{"a": [1, 2]}"#.to_vec())),
            r#"{"a": [1, 2]}"#
        );
        assert_eq!(
            j(Kind::Json, 0, Value::Bytes(b"{\n}".to_vec())),
            "\"{\\n}\""
        );
        assert_eq!(j(Kind::Text, 0, Value::NULL), "null");
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut out = Vec::new();
        assert!(write_json(&mut out, Kind::Text, 0, &Value::Bytes(vec![0xff])).is_err());
    }

    #[test]
    fn key_values_round_trip() {
        for v in [
            Value::NULL,
            Value::Int(-3),
            Value::UInt(u64::MAX),
            Value::Bytes(b"k\0x".to_vec()),
            Value::Date(2024, 1, 2, 3, 4, 5, 6),
            Value::Time(true, 1, 2, 3, 4, 5),
            Value::Double(1.5),
        ] {
            let k = KeyValue::from_value(&v);
            let text = serde_json::to_string(&k).expect("ser");
            let back: KeyValue = serde_json::from_str(&text).expect("de");
            assert_eq!(back.to_value().expect("value"), v);
        }
    }
}
