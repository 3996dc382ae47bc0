//! Reading the binlog: preflight checks, the replication connection (MariaDB GTIDs with
//! `@slave_connect_state`, else file and position), and decoding row events into the same
//! canonical values a snapshot reads (see [`crate::value::canonical`]).
//!
//! Invariants: column names, signedness, ENUM/SET strings and the primary key come from the
//! table map itself (`binlog_row_metadata=FULL` is required and checked), so an event is decoded
//! with the table definition it was written with, also while catching up across an ALTER; a
//! table map without that metadata is an error, never a guess. Transactions are reported whole:
//! [`Item::Commit`] is the only point at which [`BinlogReader::position`] may be saved.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use mysql_async::binlog::BinlogChecksumAlg;
use mysql_async::binlog::events::{
    Event, EventData, OptionalMetadataField, RowsEventData, TableMapEvent,
};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::prelude::*;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, Value};
use mysql_common::io::ParseBuf;
use serde::{Deserialize, Serialize};

use crate::format::ColumnInfo;
use crate::schema::{Kind, TableSchema};
use crate::source::{BinlogPos, Source};

/// MariaDB's GTID event.
const MARIADB_GTID_EVENT: u8 = 162;
/// MariaDB's GTID list event (the state at the start of a file).
const MARIADB_GTID_LIST_EVENT: u8 = 163;
/// MariaDB's compressed event types (`log_bin_compress`): refused.
const MARIADB_COMPRESSED: std::ops::RangeInclusive<u8> = 165..=171;
/// Heartbeat.
const HEARTBEAT_EVENT: u8 = 27;

/// Where a stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// The server's current end of the binlog.
    Now,
    /// A MariaDB GTID state (`0-1-977[,1-2-5]`).
    Gtid(String),
    /// A file and offset.
    FilePos(String, u64),
    /// A MySQL GTID set (`uuid:1-5[,uuid:…]`), streamed with COM_BINLOG_DUMP_GTID.
    MysqlGtid(String),
}

impl StartAt {
    /// Has a stream at `pos`, with GTID state `gtid`, reached this position? (`now` must have
    /// been resolved to a file and offset first; a MySQL GTID set is never reached, since MySQL
    /// positions are tracked by file and offset.)
    pub fn reached_by(&self, pos: &BinlogPos, gtid: &GtidState) -> bool {
        match self {
            StartAt::Now => true,
            StartAt::Gtid(g) => GtidState::parse(g).is_ok_and(|u| gtid.reached(&u)),
            StartAt::FilePos(f, p) => (file_seq(&pos.file), pos.pos) >= (file_seq(f), *p),
            StartAt::MysqlGtid(_) => false,
        }
    }
}

/// The sequence number of a binlog file name (`binlog.000010` → 10), which orders files.
pub fn file_seq(file: &str) -> u64 {
    file.rsplit('.')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Does `s` start like a MySQL GTID set (`3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5`)?
pub fn is_mysql_gtid_set(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 37
        && b[36] == b':'
        && b[..36].iter().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

impl StartAt {
    /// Parses `now`, `<file>:<pos>` or a GTID state.
    ///
    /// # Errors
    /// When the text is none of these.
    pub fn parse(s: &str) -> Result<StartAt, String> {
        if s == "now" {
            return Ok(StartAt::Now);
        }
        if is_mysql_gtid_set(s) {
            return Ok(StartAt::MysqlGtid(s.to_string()));
        }
        if let Some((file, pos)) = s.rsplit_once(':') {
            let pos = pos
                .parse::<u64>()
                .map_err(|_| format!("`{s}`: the offset after `:` must be a number"))?;
            if file.is_empty() {
                return Err(format!("`{s}`: binlog file name missing"));
            }
            return Ok(StartAt::FilePos(file.to_string(), pos));
        }
        GtidState::parse(s).map(|_| StartAt::Gtid(s.to_string()))
    }
}

/// A MariaDB GTID state: the last GTID per replication domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GtidState(BTreeMap<u32, (u32, u64)>);

impl GtidState {
    /// Parses `domain-server-seq[,…]` (empty = no GTIDs yet).
    ///
    /// # Errors
    /// When a part is not three numbers.
    pub fn parse(s: &str) -> Result<GtidState, String> {
        let mut m = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let nums: Vec<&str> = part.split('-').collect();
            let bad = || {
                format!("`{part}` is not a MariaDB GTID (domain-server-seq), a file:pos or `now`")
            };
            if nums.len() != 3 {
                return Err(bad());
            }
            let d = nums[0].parse::<u32>().map_err(|_| bad())?;
            let srv = nums[1].parse::<u32>().map_err(|_| bad())?;
            let seq = nums[2].parse::<u64>().map_err(|_| bad())?;
            m.insert(d, (srv, seq));
        }
        Ok(GtidState(m))
    }

    /// Records a transaction's GTID.
    pub fn apply(&mut self, domain: u32, server: u32, seq: u64) {
        self.0.insert(domain, (server, seq));
    }

    /// The replication domains present.
    pub fn domains(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.keys().copied()
    }

    /// Has nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Is every domain of `self` at or past `other`'s (same domain, higher or equal seq)?
    pub fn reached(&self, other: &GtidState) -> bool {
        other
            .0
            .iter()
            .all(|(d, (_, seq))| self.0.get(d).is_some_and(|(_, s)| s >= seq))
    }
}

impl std::fmt::Display for GtidState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (d, (s, q)) in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{d}-{s}-{q}")?;
        }
        Ok(())
    }
}

/// What the server's binlog settings are; each must allow an exact change stream.
#[derive(Debug, Clone)]
pub struct BinlogSettings {
    /// MariaDB rather than MySQL.
    pub mariadb: bool,
    /// `@@server_id` of the server.
    pub server_id: u32,
}

/// Checks that the server writes a binlog the stream can decode exactly, and that `server_id`
/// is free.
///
/// # Errors
/// Names the variable and the value it needs, or the replica holding `server_id`.
pub async fn preflight(conn: &mut Conn, server_id: u32) -> Result<BinlogSettings> {
    preflight_with(conn, server_id, true).await
}

async fn preflight_with(conn: &mut Conn, server_id: u32, check_id: bool) -> Result<BinlogSettings> {
    let version: String = conn
        .query_first("SELECT @@version")
        .await?
        .unwrap_or_default();
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    let rows: Vec<(String, String)> = conn
        .query(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', \
             'binlog_row_image', 'binlog_row_metadata', 'log_bin_compress', 'server_id')",
        )
        .await
        .context("cannot read the binlog settings")?;
    let var = |n: &str| {
        rows.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.to_ascii_uppercase())
    };
    let mut problems = Vec::new();
    if var("log_bin").as_deref() != Some("ON") {
        problems.push("log_bin is OFF: start the server with --log-bin".to_string());
    }
    for (name, want) in [
        ("binlog_format", "ROW"),
        ("binlog_row_image", "FULL"),
        ("binlog_row_metadata", "FULL"),
    ] {
        let got = var(name).unwrap_or_else(|| "(absent)".into());
        if got != want {
            problems.push(format!(
                "{name} is {got}, needs {want} (SET GLOBAL {name} = '{want}', and in my.cnf)"
            ));
        }
    }
    if var("log_bin_compress").as_deref() == Some("ON") {
        problems.push(
            "log_bin_compress is ON: compressed binlog events cannot be decoded \
             (SET GLOBAL log_bin_compress = OFF)"
                .to_string(),
        );
    }
    if !problems.is_empty() {
        bail!(
            "the source's binlog cannot be streamed exactly:\n  {}",
            problems.join("\n  ")
        );
    }
    let own: u32 = var("server_id")
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    if own == server_id {
        bail!(
            "server_id {server_id} is the source's own @@server_id: set another [source] \
             server_id in the manifest"
        );
    }
    // A stream that just ended (or was killed) stays registered until the server's dump
    // thread notices, within a heartbeat or two: wait a little before calling it a conflict.
    let mut holder = None;
    for attempt in 0..if check_id { 8 } else { 0 } {
        let hosts: Vec<mysql_async::Row> = conn.query("SHOW SLAVE HOSTS").await.unwrap_or_default();
        holder = hosts.into_iter().find_map(|h| {
            (h.get::<u32, _>(0) == Some(server_id))
                .then(|| h.get::<String, _>(1).unwrap_or_default())
        });
        if holder.is_none() {
            break;
        }
        if attempt < 7 {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
    if let Some(host) = holder {
        bail!(
            "server_id {server_id} is already used by another replica or stream ({host}): \
             set another [source] server_id in the manifest"
        );
    }
    Ok(BinlogSettings {
        mariadb,
        server_id: own,
    })
}

/// The server's current end of the binlog.
///
/// # Errors
/// When the binlog is off or the user lacks the privilege.
pub async fn current_position(conn: &mut Conn, mariadb: bool) -> Result<BinlogPos> {
    let row: Option<mysql_async::Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .context("SHOW MASTER STATUS (needs REPLICATION CLIENT or BINLOG MONITOR)")?;
    let row = row.ok_or_else(|| anyhow!("the source has no binlog (log_bin is OFF)"))?;
    let file: String = row.get(0).unwrap_or_default();
    let pos: u64 = row.get(1).unwrap_or_default();
    let gtid: Option<String> = if mariadb {
        conn.query_first("SELECT @@gtid_binlog_pos").await?
    } else {
        None
    };
    Ok(BinlogPos {
        file,
        pos,
        gtid: gtid.filter(|g| !g.is_empty()),
    })
}

/// The binlog files the server still has, oldest first, with sizes.
///
/// # Errors
/// On query failure.
pub async fn binary_logs(conn: &mut Conn) -> Result<Vec<(String, u64)>> {
    let rows: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .context("SHOW BINARY LOGS")?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.get::<String, _>(0).unwrap_or_default(),
                r.get::<u64, _>(1).unwrap_or_default(),
            )
        })
        .collect())
}

/// The oldest position the server still has, for messages.
async fn oldest_position(conn: &mut Conn) -> String {
    let Ok(logs) = binary_logs(conn).await else {
        return "unknown".into();
    };
    let Some((first, _)) = logs.first() else {
        return "none (no binlog files)".into();
    };
    let gtid: Option<String> = conn
        .exec_first::<Option<String>, _, _>("SELECT BINLOG_GTID_POS(?, 4)", (first.as_str(),))
        .await
        .ok()
        .flatten()
        .flatten();
    match gtid.filter(|g| !g.is_empty()) {
        Some(g) => format!("{first}:4 (gtid {g})"),
        None => format!("{first}:4"),
    }
}

/// Character set of a column, as the conversion to UTF-8 needs it.
#[derive(Debug, Clone, Copy)]
enum Charset {
    /// UTF-8 (utf8mb3, utf8mb4) or ASCII: bytes are the text.
    Utf8,
    /// Raw bytes.
    Binary,
    /// A legacy single- or multi-byte set.
    Other(&'static encoding_rs::Encoding),
}

/// Collation id → character set, read from the server once.
#[derive(Debug, Clone, Default)]
pub struct Collations(HashMap<u16, String>);

impl Collations {
    /// Reads `information_schema.COLLATIONS`.
    ///
    /// # Errors
    /// On query failure.
    pub async fn load(conn: &mut Conn) -> Result<Collations> {
        let rows: Vec<(u16, String)> = conn
            .query(
                "SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS \
                 WHERE ID IS NOT NULL AND CHARACTER_SET_NAME IS NOT NULL",
            )
            .await
            .context("cannot read information_schema.COLLATIONS")?;
        Ok(Collations(rows.into_iter().collect()))
    }

    fn charset(&self, id: u16) -> Result<Charset> {
        let name = self
            .0
            .get(&id)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("unknown collation id {id}"))?;
        let label = match name {
            "utf8" | "utf8mb3" | "utf8mb4" | "ascii" => return Ok(Charset::Utf8),
            "binary" => return Ok(Charset::Binary),
            "latin1" => "windows-1252",
            "latin2" => "iso-8859-2",
            "latin5" => "iso-8859-9",
            "latin7" => "iso-8859-13",
            "greek" => "iso-8859-7",
            "hebrew" => "iso-8859-8",
            "koi8r" => "koi8-r",
            "koi8u" => "koi8-u",
            "cp1250" => "windows-1250",
            "cp1251" => "windows-1251",
            "cp1256" => "windows-1256",
            "cp1257" => "windows-1257",
            "cp866" => "ibm866",
            "sjis" | "cp932" => "shift_jis",
            "ujis" | "eucjpms" => "euc-jp",
            "gbk" | "gb2312" => "gbk",
            "gb18030" => "gb18030",
            "big5" => "big5",
            "euckr" => "euc-kr",
            other => bail!("character set {other} is not supported by the change stream"),
        };
        encoding_rs::Encoding::for_label(label.as_bytes())
            .map(Charset::Other)
            .ok_or_else(|| anyhow!("character set {name}: no converter"))
    }
}

/// One column of a table as a table map describes it.
#[derive(Debug, Clone)]
pub struct MapColumn {
    /// What encoders need (name, kind, fsp, type).
    pub info: ColumnInfo,
    charset: Charset,
    /// ENUM or SET member names.
    members: Vec<String>,
    /// MariaDB INET6 stored as 16 bytes.
    inet6: bool,
    /// MariaDB INET4 stored as 4 bytes.
    inet4: bool,
    /// Width of an integer column in bits (0 for other types).
    int_bits: u32,
    /// BINARY(n): the binlog drops trailing zero bytes, the column has n.
    pad_to: usize,
    /// Binlog type, metadata and signedness: how its values are read from a row image.
    ty: mysql_async::consts::ColumnType,
    meta: Vec<u8>,
    unsigned: bool,
}

/// A table as one table map event describes it.
#[derive(Debug)]
pub struct TableMap {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Every column of the table, in table order.
    pub columns: Vec<MapColumn>,
    /// Positions of the primary key columns (empty: no primary key).
    pub key: Vec<usize>,
}

impl TableMap {
    /// `schema.table`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// A table described by captured columns instead of a table map event: the rows of a
    /// snapshot SELECT, to be encoded as change events (`op: "r"`). It cannot decode binlog
    /// row images.
    pub fn from_columns(
        schema: &str,
        table: &str,
        columns: &[ColumnInfo],
        key: Vec<usize>,
    ) -> TableMap {
        TableMap {
            schema: schema.to_string(),
            table: table.to_string(),
            columns: columns
                .iter()
                .map(|info| MapColumn {
                    info: info.clone(),
                    charset: Charset::Utf8,
                    members: Vec::new(),
                    inet6: false,
                    inet4: false,
                    int_bits: 0,
                    pad_to: 0,
                    ty: mysql_async::consts::ColumnType::MYSQL_TYPE_NULL,
                    meta: Vec::new(),
                    unsigned: false,
                })
                .collect(),
            key,
        }
    }

    /// Builds the description from a table map event. `known` (the table as captured now, if
    /// it exists) refines kinds the binlog cannot tell apart by name (JSON, INET6, exact
    /// column types) where the table map's type agrees.
    ///
    /// # Errors
    /// When the table map lacks `binlog_row_metadata=FULL` data.
    fn from_event(
        tme: &TableMapEvent<'_>,
        known: Option<&TableSchema>,
        collations: &Collations,
    ) -> Result<TableMap> {
        use mysql_async::consts::ColumnType as T;
        let schema = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        let n = usize::try_from(tme.columns_count())?;
        let mut names: Vec<String> = Vec::new();
        let mut unsigned = Vec::new();
        let mut charsets: Vec<u16> = Vec::new();
        let mut default_charset: Option<(u16, HashMap<u64, u16>)> = None;
        let mut es_charsets: Vec<u16> = Vec::new();
        let mut es_default: Option<(u16, HashMap<u64, u16>)> = None;
        let mut enums: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut sets: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut key = Vec::new();
        let bad = |e: std::io::Error| anyhow!("table map of {schema}.{table}: {e}");
        for field in tme.iter_optional_meta() {
            match field.map_err(bad)? {
                OptionalMetadataField::Signedness(bits) => {
                    unsigned = bits.iter().by_vals().collect();
                }
                OptionalMetadataField::ColumnName(cn) => {
                    for c in cn.iter_names() {
                        names.push(c.map_err(bad)?.name().into_owned());
                    }
                }
                OptionalMetadataField::DefaultCharset(dc) => {
                    let mut non_default = HashMap::new();
                    for x in dc.iter_non_default() {
                        let x = x.map_err(bad)?;
                        non_default.insert(x.column_index(), x.charset());
                    }
                    default_charset = Some((dc.default_charset(), non_default));
                }
                OptionalMetadataField::ColumnCharset(cc) => {
                    for c in cc.iter_charsets() {
                        charsets.push(c.map_err(bad)?);
                    }
                }
                OptionalMetadataField::EnumAndSetDefaultCharset(dc) => {
                    let mut non_default = HashMap::new();
                    for x in dc.iter_non_default() {
                        let x = x.map_err(bad)?;
                        non_default.insert(x.column_index(), x.charset());
                    }
                    es_default = Some((dc.default_charset(), non_default));
                }
                OptionalMetadataField::EnumAndSetColumnCharset(cc) => {
                    for c in cc.iter_charsets() {
                        es_charsets.push(c.map_err(bad)?);
                    }
                }
                OptionalMetadataField::EnumStrValue(ev) => {
                    for e in ev.iter_values() {
                        let e = e.map_err(bad)?;
                        enums.push(e.values().iter().map(|v| v.value_raw().to_vec()).collect());
                    }
                }
                OptionalMetadataField::SetStrValue(sv) => {
                    for s in sv.iter_values() {
                        let s = s.map_err(bad)?;
                        sets.push(s.values().iter().map(|v| v.value_raw().to_vec()).collect());
                    }
                }
                OptionalMetadataField::SimplePrimaryKey(pk) => {
                    for i in pk.iter_indexes() {
                        key.push(usize::try_from(i.map_err(bad)?)?);
                    }
                }
                OptionalMetadataField::PrimaryKeyWithPrefix(pk) => {
                    for k in pk.iter_keys() {
                        key.push(usize::try_from(k.map_err(bad)?.column_index())?);
                    }
                }
                _ => {}
            }
        }
        if names.len() != n {
            bail!(
                "the binlog's table map of {schema}.{table} has no column names: it was written \
                 while binlog_row_metadata was not FULL; start the stream from a position \
                 written after SET GLOBAL binlog_row_metadata = 'FULL'"
            );
        }
        let (mut numeric_i, mut char_i, mut es_i, mut enum_i, mut set_i) = (0, 0, 0, 0, 0);
        let mut columns = Vec::with_capacity(n);
        for (i, name) in names.into_iter().enumerate() {
            let ty = tme
                .get_column_type(i)
                .map_err(|e| anyhow!("table map of {schema}.{table}, column {i}: {e}"))?
                .ok_or_else(|| anyhow!("table map of {schema}.{table}: column {i} has no type"))?;
            let meta = tme.get_column_metadata(i).unwrap_or(&[]);
            let nullable = tme.null_bitmask().get(i).is_some_and(|b| *b);
            let is_unsigned = if ty.is_numeric_type() {
                let u = unsigned.get(numeric_i).copied().unwrap_or(false);
                numeric_i += 1;
                u
            } else {
                false
            };
            let charset_id = if ty.is_character_type() {
                let c = match &default_charset {
                    Some((d, nd)) => nd.get(&(i as u64)).copied().unwrap_or(*d),
                    None => charsets.get(char_i).copied().unwrap_or(63),
                };
                char_i += 1;
                Some(c)
            } else if ty.is_enum_or_set_type() {
                let c = match &es_default {
                    Some((d, nd)) => nd.get(&(i as u64)).copied().unwrap_or(*d),
                    None => es_charsets.get(es_i).copied().unwrap_or(45),
                };
                es_i += 1;
                Some(c)
            } else {
                None
            };
            let charset = match charset_id {
                Some(id) => collations
                    .charset(id)
                    .with_context(|| format!("column {schema}.{table}.{name}"))?,
                None => Charset::Binary,
            };
            let fsp = u32::from(meta.first().copied().unwrap_or(0));
            let text = |raw: &[u8]| -> String {
                match charset {
                    Charset::Other(enc) => enc.decode(raw).0.into_owned(),
                    _ => String::from_utf8_lossy(raw).into_owned(),
                }
            };
            let (kind, fsp, column_type, members) = match ty {
                T::MYSQL_TYPE_TINY
                | T::MYSQL_TYPE_SHORT
                | T::MYSQL_TYPE_INT24
                | T::MYSQL_TYPE_LONG
                | T::MYSQL_TYPE_LONGLONG => (
                    if is_unsigned { Kind::UInt } else { Kind::Int },
                    0,
                    String::new(),
                    vec![],
                ),
                T::MYSQL_TYPE_NEWDECIMAL | T::MYSQL_TYPE_DECIMAL => {
                    let p = meta.first().copied().unwrap_or(10);
                    let s = meta.get(1).copied().unwrap_or(0);
                    (Kind::Decimal, 0, format!("decimal({p},{s})"), vec![])
                }
                T::MYSQL_TYPE_FLOAT => (Kind::Float, 0, String::new(), vec![]),
                T::MYSQL_TYPE_DOUBLE => (Kind::Double, 0, String::new(), vec![]),
                T::MYSQL_TYPE_DATE | T::MYSQL_TYPE_NEWDATE => {
                    (Kind::Date, 0, String::new(), vec![])
                }
                T::MYSQL_TYPE_DATETIME => (Kind::DateTime, 0, String::new(), vec![]),
                T::MYSQL_TYPE_DATETIME2 => (Kind::DateTime, fsp, String::new(), vec![]),
                T::MYSQL_TYPE_TIMESTAMP => (Kind::Timestamp, 0, String::new(), vec![]),
                T::MYSQL_TYPE_TIMESTAMP2 => (Kind::Timestamp, fsp, String::new(), vec![]),
                T::MYSQL_TYPE_TIME => (Kind::Time, 0, String::new(), vec![]),
                T::MYSQL_TYPE_TIME2 => (Kind::Time, fsp, String::new(), vec![]),
                T::MYSQL_TYPE_YEAR => (Kind::Year, 0, String::new(), vec![]),
                T::MYSQL_TYPE_BIT => (Kind::Bit, 0, String::new(), vec![]),
                T::MYSQL_TYPE_JSON => (Kind::Json, 0, String::new(), vec![]),
                T::MYSQL_TYPE_GEOMETRY => (Kind::Geometry, 0, String::new(), vec![]),
                T::MYSQL_TYPE_ENUM => {
                    let m = enums
                        .get(enum_i)
                        .map(|m| m.iter().map(|x| text(x)).collect())
                        .unwrap_or_default();
                    enum_i += 1;
                    (Kind::Enum, 0, String::new(), m)
                }
                T::MYSQL_TYPE_SET => {
                    let m = sets
                        .get(set_i)
                        .map(|m| m.iter().map(|x| text(x)).collect())
                        .unwrap_or_default();
                    set_i += 1;
                    (Kind::Set, 0, String::new(), m)
                }
                _ => {
                    let k = if matches!(charset, Charset::Binary) {
                        Kind::Binary
                    } else {
                        Kind::Text
                    };
                    (k, 0, String::new(), vec![])
                }
            };
            // Refine from the table as it is now, where the binlog's type agrees.
            let now = known.and_then(|s| s.column(&name));
            let mut info = ColumnInfo {
                name,
                kind,
                fsp,
                column_type,
                nullable,
            };
            let (mut inet6, mut inet4) = (false, false);
            if let Some(c) = now {
                let compatible = c.kind == kind
                    || (c.kind == Kind::Json && matches!(kind, Kind::Text | Kind::Binary))
                    || (c.kind == Kind::Text && kind == Kind::Binary);
                if compatible {
                    let ct = c.column_type.to_ascii_lowercase();
                    inet6 = kind == Kind::Binary && ct == "inet6";
                    inet4 = kind == Kind::Binary && ct == "inet4";
                    info.kind = c.kind;
                    if info.column_type.is_empty() || c.kind == kind {
                        info.column_type.clone_from(&c.column_type);
                    }
                }
            }
            if info.column_type.is_empty() {
                info.column_type = format!("{kind:?}").to_ascii_lowercase();
            }
            if matches!(info.kind, Kind::Text | Kind::Json) && matches!(charset, Charset::Binary) {
                info.kind = if inet6 || inet4 {
                    Kind::Text
                } else {
                    Kind::Binary
                };
            }
            let int_bits = match ty {
                T::MYSQL_TYPE_TINY => 8,
                T::MYSQL_TYPE_SHORT => 16,
                T::MYSQL_TYPE_INT24 => 24,
                T::MYSQL_TYPE_LONG => 32,
                T::MYSQL_TYPE_LONGLONG => 64,
                _ => 0,
            };
            let pad_to = if ty == T::MYSQL_TYPE_STRING
                && matches!(charset, Charset::Binary)
                && info.kind == Kind::Binary
            {
                let b0 = usize::from(meta.first().copied().unwrap_or(0));
                let b1 = usize::from(meta.get(1).copied().unwrap_or(0));
                if b0 & 0x30 != 0x30 {
                    b1 | (((b0 & 0x30) ^ 0x30) << 4)
                } else {
                    b1
                }
            } else {
                0
            };
            columns.push(MapColumn {
                info,
                charset,
                members,
                inet6,
                inet4,
                int_bits,
                pad_to,
                ty,
                meta: meta.to_vec(),
                unsigned: is_unsigned,
            });
        }
        Ok(TableMap {
            schema,
            table,
            columns,
            key,
        })
    }

    /// Reads one full row image (null bitmap, then the non-null values) at `buf`.
    fn image<'a>(&'a self, buf: &mut ParseBuf<'a>) -> Result<Vec<Value>> {
        let n = self.columns.len();
        let nulls = buf
            .checked_eat(n.div_ceil(8))
            .ok_or_else(|| anyhow!("row image cut off"))?;
        let mut row = Vec::with_capacity(n);
        for (i, c) in self.columns.iter().enumerate() {
            if nulls[i / 8] & (1 << (i % 8)) != 0 {
                row.push(Value::NULL);
                continue;
            }
            let v: BinlogValue<'_> = buf
                .parse((c.ty, c.meta.as_slice(), c.unsigned, false))
                .map_err(|e| anyhow!("column {}: {e}", c.info.name))?;
            row.push(self.value(i, v)?);
        }
        Ok(row)
    }

    /// Converts one decoded binlog value of column `i` to its canonical value.
    fn value(&self, i: usize, v: BinlogValue<'_>) -> Result<Value> {
        let c = &self.columns[i];
        let v = match v {
            BinlogValue::Value(v) => v,
            BinlogValue::Jsonb(j) => {
                let j: serde_json::Value = j
                    .parse()
                    .map_err(|e| anyhow!("column {}: JSON: {e}", c.info.name))?
                    .into();
                Value::Bytes(j.to_string().into_bytes())
            }
            BinlogValue::JsonDiff(_) => bail!(
                "column {}: partial JSON updates (binlog_row_value_options=PARTIAL_JSON) are \
                 not supported",
                c.info.name
            ),
        };
        convert(c, v).map_err(|e| anyhow!("{}.{}: {e}", self.name(), c.info.name))
    }
}

fn convert(c: &MapColumn, v: Value) -> Result<Value> {
    use crate::value::canonical;
    let kind = c.info.kind;
    Ok(match (kind, v) {
        (_, Value::NULL) => Value::NULL,
        (Kind::UInt, Value::Int(i)) if i < 0 => {
            // A signed reading of an unsigned column: reinterpret by width.
            let mask = match c.int_bits {
                8 | 16 | 24 | 32 => (1u64 << c.int_bits) - 1,
                _ => u64::MAX,
            };
            Value::UInt(i as u64 & mask)
        }
        (Kind::Int, Value::Int(i)) if c.int_bits == 24 && i >= 1 << 23 => {
            // A 24-bit value read without its sign.
            Value::Int(i - (1 << 24))
        }
        (Kind::Binary, Value::Bytes(mut b)) if b.len() < c.pad_to => {
            b.resize(c.pad_to, 0);
            Value::Bytes(b)
        }
        (Kind::Year, Value::Bytes(b)) => {
            let y: i64 = std::str::from_utf8(&b)?.parse()?;
            Value::Int(if y == 1900 { 0 } else { y })
        }
        (Kind::Timestamp, Value::Int(secs)) => timestamp(secs, 0)?,
        (Kind::Timestamp, Value::Bytes(b)) => {
            let t = std::str::from_utf8(&b)?;
            let (s, us) = t.split_once('.').unwrap_or((t, "0"));
            timestamp(s.parse()?, us.parse()?)?
        }
        (Kind::Enum, Value::Int(i)) => {
            let i = usize::try_from(i)?;
            if i == 0 {
                Value::Bytes(Vec::new())
            } else {
                let m = c
                    .members
                    .get(i - 1)
                    .ok_or_else(|| anyhow!("ENUM index {i} has no member"))?;
                Value::Bytes(m.as_bytes().to_vec())
            }
        }
        (Kind::Set, Value::Bytes(b)) => {
            let mut bits = 0u64;
            for (n, byte) in b.iter().enumerate() {
                bits |= u64::from(*byte) << (8 * n);
            }
            let mut out = Vec::new();
            for (n, m) in c.members.iter().enumerate() {
                if n < 64 && bits & (1 << n) != 0 {
                    if !out.is_empty() {
                        out.push(b',');
                    }
                    out.extend_from_slice(m.as_bytes());
                }
            }
            Value::Bytes(out)
        }
        (Kind::Text, Value::Bytes(b)) if c.inet6 && b.len() == 16 => {
            let a: [u8; 16] = b.as_slice().try_into()?;
            Value::Bytes(std::net::Ipv6Addr::from(a).to_string().into_bytes())
        }
        (Kind::Text, Value::Bytes(b)) if c.inet4 && b.len() == 4 => {
            let a: [u8; 4] = b.as_slice().try_into()?;
            Value::Bytes(std::net::Ipv4Addr::from(a).to_string().into_bytes())
        }
        (Kind::Text | Kind::Json, Value::Bytes(b)) => match c.charset {
            Charset::Utf8 | Charset::Binary => Value::Bytes(b),
            Charset::Other(enc) => {
                let (text, _, bad) = enc.decode(&b);
                if bad {
                    bail!("text is not valid {}", enc.name());
                }
                Value::Bytes(text.into_owned().into_bytes())
            }
        },
        (k, v) => canonical(k, v),
    })
}

fn timestamp(secs: i64, micros: u32) -> Result<Value> {
    if secs == 0 && micros == 0 {
        return Ok(Value::Date(0, 0, 0, 0, 0, 0, 0));
    }
    let t = chrono::DateTime::from_timestamp(secs, micros * 1000)
        .ok_or_else(|| anyhow!("TIMESTAMP {secs} out of range"))?
        .naive_utc();
    use chrono::{Datelike, Timelike};
    Ok(Value::Date(
        u16::try_from(t.year())?,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        micros,
    ))
}

/// One row change.
#[derive(Debug, Clone)]
pub enum Change {
    /// INSERT.
    Insert(Vec<Value>),
    /// UPDATE: before, after.
    Update(Vec<Value>, Vec<Value>),
    /// DELETE.
    Delete(Vec<Value>),
}

/// What the reader hands on.
#[derive(Debug)]
pub enum Item {
    /// A transaction starts.
    Begin {
        /// Its GTID (`domain-server-seq`), empty without GTIDs.
        gtid: String,
    },
    /// Row changes of one table (one rows event).
    Rows {
        /// The table as the event's table map describes it.
        table: Arc<TableMap>,
        /// The changes, in order.
        changes: Vec<Change>,
        /// Event time (seconds).
        ts: u32,
        /// End offset of the event in its file.
        pos: u64,
    },
    /// A statement that is not a transaction marker (DDL, TRUNCATE, …).
    Ddl {
        /// Default schema of the statement.
        schema: String,
        /// The statement.
        statement: String,
        /// Event time (seconds).
        ts: u32,
    },
    /// A transaction ended: [`BinlogReader::position`] is now a safe resume point.
    Commit {
        /// Event time (seconds).
        ts: u32,
    },
    /// The server is alive; nothing new (or only events of other tables).
    Heartbeat,
}

/// Decides which tables' rows are decoded; the others are skipped undecoded.
pub type TableFilter = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// A replication connection that yields whole transactions.
pub struct BinlogReader {
    stream: BinlogStream,
    file: String,
    pos: u64,
    gtid: GtidState,
    /// Raw name of a fake ROTATE seen before the format description (may carry a CRC).
    pending_rotate: Option<Vec<u8>>,
    in_trx: bool,
    standalone: bool,
    pending_gtid: Option<(u32, u32, u64)>,
    pending_commit: Option<(u64, u32)>,
    tables: HashMap<u64, Option<Arc<TableMap>>>,
    filter: TableFilter,
    known: HashMap<(String, String), Option<TableSchema>>,
    lookup: Source,
    lookup_conn: Option<Conn>,
    collations: Collations,
    /// Event time of the last event.
    pub last_ts: u32,
}

impl BinlogReader {
    /// Opens a replication stream at `from` (`gtid` is the GTID state at that point when known)
    /// as replica `server_id`. `source` is used for a second connection (schema lookups).
    ///
    /// # Errors
    /// When the position is no longer on the server, the server refuses, or the id is taken.
    pub async fn open(
        source: &Source,
        server_id: u32,
        from: &BinlogPos,
        filter: TableFilter,
    ) -> Result<BinlogReader> {
        Self::open_with(source, server_id, from, filter, true).await
    }

    /// Opens the stream again after this process's own stream with `server_id` ended (its
    /// registration may linger on the server for a moment, so it is not a conflict).
    ///
    /// # Errors
    /// As [`BinlogReader::open`].
    pub async fn reopen(
        source: &Source,
        server_id: u32,
        from: &BinlogPos,
        filter: TableFilter,
    ) -> Result<BinlogReader> {
        Self::open_with(source, server_id, from, filter, false).await
    }

    async fn open_with(
        source: &Source,
        server_id: u32,
        from: &BinlogPos,
        filter: TableFilter,
        check_id: bool,
    ) -> Result<BinlogReader> {
        let mut conn = source.connect().await?;
        let settings = preflight_with(&mut conn, server_id, check_id).await?;
        let collations = Collations::load(&mut conn).await?;
        let logs = binary_logs(&mut conn).await?;
        let use_gtid = settings.mariadb && from.gtid.is_some();
        // MySQL's flavour: COM_BINLOG_DUMP_GTID with the executed set. Not testable here (no
        // MySQL server in Debian); positions are then tracked by file and offset.
        let mysql_gtid = !settings.mariadb
            && from
                .gtid
                .as_deref()
                .is_some_and(|g| g.split(',').all(|p| is_mysql_gtid_set(p.trim())));
        if !use_gtid && !mysql_gtid && !logs.iter().any(|(f, _)| *f == from.file) {
            let oldest = oldest_position(&mut conn).await;
            bail!(
                "binlog position {}:{} is no longer on the server (purged?); the oldest \
                 available is {oldest}",
                from.file,
                from.pos
            );
        }
        if settings.mariadb {
            conn.query_drop("SET @mariadb_slave_capability = 4").await?;
        }
        conn.query_drop("SET @master_heartbeat_period = 1000000000")
            .await?;
        let mut request = BinlogStreamRequest::new(server_id).with_hostname(b"storagetapper");
        let gtid = match (&from.gtid, use_gtid) {
            (Some(g), false) if mysql_gtid => {
                let sids = g
                    .split(',')
                    .map(|p| {
                        p.trim()
                            .parse::<mysql_common::packets::Sid<'static>>()
                            .map_err(|e| anyhow!("MySQL GTID set `{p}`: {e}"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                request = request.with_gtid().with_gtid_set(sids);
                GtidState::default()
            }
            (Some(g), true) => {
                conn.exec_drop("SET @slave_connect_state = ?", (g.as_str(),))
                    .await?;
                conn.query_drop("SET @slave_gtid_strict_mode = 1").await?;
                GtidState::parse(g).map_err(|e| anyhow!(e))?
            }
            _ => {
                request = request
                    .with_filename(from.file.as_bytes())
                    .with_pos(from.pos.max(4));
                from.gtid
                    .as_deref()
                    .map(GtidState::parse)
                    .transpose()
                    .map_err(|e| anyhow!(e))?
                    .unwrap_or_default()
            }
        };
        let stream = conn
            .get_binlog_stream(request)
            .await
            .with_context(|| format!("cannot start the binlog stream at {from}"))?;
        Ok(BinlogReader {
            stream,
            file: from.file.clone(),
            pos: from.pos,
            gtid,
            pending_rotate: None,
            in_trx: false,
            standalone: false,
            pending_gtid: None,
            pending_commit: None,
            tables: HashMap::new(),
            filter,
            known: HashMap::new(),
            lookup: source.clone(),
            lookup_conn: None,
            collations,
            last_ts: 0,
        })
    }

    /// The position after the last whole transaction (meaningful right after
    /// [`Item::Commit`]).
    pub fn position(&self) -> BinlogPos {
        BinlogPos {
            file: self.file.clone(),
            pos: self.pos,
            gtid: (!self.gtid.is_empty()).then(|| self.gtid.to_string()),
        }
    }

    /// The GTID state after the last whole transaction.
    pub fn gtid_state(&self) -> &GtidState {
        &self.gtid
    }

    /// Forgets the captured definitions of a schema's tables (after a DDL statement).
    pub fn forget_schema(&mut self, schema: &str) {
        self.known.retain(|(s, _), _| s != schema);
        self.tables.clear();
    }

    async fn known(&mut self, schema: &str, table: &str) -> Result<Option<TableSchema>> {
        let k = (schema.to_string(), table.to_string());
        if let Some(s) = self.known.get(&k) {
            return Ok(s.clone());
        }
        if self.lookup_conn.is_none() {
            self.lookup_conn = Some(self.lookup.connect().await?);
        }
        let conn = self
            .lookup_conn
            .as_mut()
            .ok_or_else(|| anyhow!("lookup connection"))?;
        let s = crate::source::capture_schema(conn, schema, table)
            .await
            .ok();
        self.known.insert(k, s.clone());
        Ok(s)
    }

    /// The next item; `None` when the server ends the stream.
    ///
    /// # Errors
    /// On a broken connection, an event that cannot be decoded exactly, a purged position or
    /// another stream taking over this server id.
    pub async fn next(&mut self) -> Result<Option<Item>> {
        loop {
            if let Some((pos, ts)) = self.pending_commit.take() {
                return Ok(Some(self.commit(pos, ts)));
            }
            let Some(ev) = self.stream.next().await else {
                return Ok(None);
            };
            let ev = ev.map_err(|e| self.stream_error(e))?;
            if let Some(item) = self.handle(ev).await? {
                return Ok(Some(item));
            }
        }
    }

    fn stream_error(&self, e: mysql_async::Error) -> anyhow::Error {
        let text = e.to_string();
        if let mysql_async::Error::Server(s) = &e {
            if s.code == 4052 || text.contains("same server_id") || text.contains("server_id") {
                return anyhow!(
                    "the binlog stream was taken over: another replica or stream connected with \
                     the same server_id ({text}); give each stream its own [source] server_id"
                );
            }
            if s.code == 1236 {
                return anyhow!(
                    "binlog position {} is no longer on the server (purged?): {text}",
                    self.position()
                );
            }
        }
        anyhow!("binlog stream at {}: {text}", self.position())
    }

    async fn handle(&mut self, ev: Event) -> Result<Option<Item>> {
        let raw = ev.header().event_type_raw();
        let ts = ev.header().timestamp();
        let log_pos = u64::from(ev.header().log_pos());
        if ts != 0 {
            self.last_ts = ts;
        }
        if MARIADB_COMPRESSED.contains(&raw) {
            bail!(
                "compressed binlog event (type {raw}) at {}:{log_pos}: log_bin_compress must be \
                 OFF for the change stream",
                self.file
            );
        }
        if raw == MARIADB_GTID_EVENT {
            let d = ev.data();
            if d.len() < 13 {
                bail!("short GTID event at {}:{log_pos}", self.file);
            }
            let seq = u64::from_le_bytes(d[0..8].try_into()?);
            let domain = u32::from_le_bytes(d[8..12].try_into()?);
            let flags = d[12];
            let server = ev.header().server_id();
            self.in_trx = true;
            self.standalone = flags & 1 != 0;
            self.pending_gtid = Some((domain, server, seq));
            self.pos = log_pos.max(self.pos);
            return Ok(Some(Item::Begin {
                gtid: format!("{domain}-{server}-{seq}"),
            }));
        }
        if raw == MARIADB_GTID_LIST_EVENT {
            return Ok(None);
        }
        if raw == HEARTBEAT_EVENT {
            return Ok(Some(Item::Heartbeat));
        }
        let Some(data) = ev
            .read_data()
            .with_context(|| format!("cannot decode binlog event at {}:{log_pos}", self.file))?
        else {
            return Ok(None);
        };
        match data {
            EventData::RotateEvent(r) => {
                let name = r.name_raw().to_vec();
                if log_pos == 0 && ts == 0 {
                    // Fake rotate: the name may carry the CRC until the FDE says so.
                    self.pending_rotate = Some(name);
                } else {
                    self.file = String::from_utf8_lossy(&name).into_owned();
                    self.pos = r.position();
                }
                Ok(None)
            }
            EventData::FormatDescriptionEvent(fde) => {
                if let Some(mut name) = self.pending_rotate.take() {
                    if matches!(
                        fde.footer().get_checksum_alg(),
                        Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32))
                    ) && name.len() > 4
                    {
                        name.truncate(name.len() - 4);
                    }
                    let name = String::from_utf8_lossy(&name).into_owned();
                    if name != self.file {
                        self.file = name;
                        self.pos = 4;
                    }
                }
                Ok(None)
            }
            EventData::QueryEvent(q) => {
                let stmt = q.query();
                let s = stmt.trim();
                let upper: String = s.chars().take(16).collect::<String>().to_ascii_uppercase();
                if upper.starts_with("BEGIN") || upper.starts_with("XA START") {
                    self.in_trx = true;
                    return Ok(None);
                }
                if upper.starts_with("COMMIT") || upper.starts_with("ROLLBACK") {
                    return Ok(Some(self.commit(log_pos, ts)));
                }
                let item = Item::Ddl {
                    schema: q.schema().into_owned(),
                    statement: s.to_string(),
                    ts,
                };
                if self.standalone || !self.in_trx {
                    // A DDL is its own transaction: the commit is reported next.
                    self.pending_commit = Some((log_pos, ts));
                }
                Ok(Some(item))
            }
            EventData::XidEvent(_) => Ok(Some(self.commit(log_pos, ts))),
            EventData::TableMapEvent(tme) => {
                let id = tme.table_id();
                let schema = tme.database_name().into_owned();
                let table = tme.table_name().into_owned();
                if self.tables.contains_key(&id) {
                    // Same id, same definition (an ALTER gives the table a new id).
                } else if (self.filter)(&schema, &table) {
                    let known = self.known(&schema, &table).await?;
                    let map = TableMap::from_event(&tme, known.as_ref(), &self.collations)?;
                    self.tables.insert(id, Some(Arc::new(map)));
                } else {
                    self.tables.insert(id, None);
                }
                Ok(None)
            }
            EventData::RowsEvent(rows) => self.rows(&rows, ts, log_pos),
            _ => Ok(None),
        }
    }

    fn commit(&mut self, log_pos: u64, ts: u32) -> Item {
        if let Some((d, s, q)) = self.pending_gtid.take() {
            self.gtid.apply(d, s, q);
        }
        self.in_trx = false;
        self.standalone = false;
        if log_pos > 0 {
            self.pos = log_pos;
        }
        Item::Commit { ts }
    }

    fn rows(&mut self, rows: &RowsEventData<'_>, ts: u32, log_pos: u64) -> Result<Option<Item>> {
        let id = rows.table_id();
        let Some(entry) = self.tables.get(&id) else {
            bail!(
                "rows event for table id {id} at {}:{log_pos} without its table map",
                self.file
            );
        };
        let Some(table) = entry.clone() else {
            return Ok(None);
        };
        let n = table.columns.len();
        let ctx = || format!("a row of {} at {}:{log_pos}", table.name(), self.file);
        if usize::try_from(rows.num_columns()).ok() != Some(n) {
            bail!(
                "{}: rows event has {} columns, its table map {n}",
                ctx(),
                rows.num_columns()
            );
        }
        let image_cols = |bits: Option<Vec<bool>>| -> Result<Option<Vec<bool>>> {
            match bits {
                Some(b) if b.iter().all(|x| *x) => Ok(Some(b)),
                Some(_) => bail!(
                    "{}: the row image lacks columns: binlog_row_image must be FULL",
                    table.name()
                ),
                None => Ok(None),
            }
        };
        let before_cols = image_cols(
            rows.columns_before_image()
                .map(|b| b.iter().by_vals().collect()),
        )?;
        let after_cols = image_cols(
            rows.columns_after_image()
                .map(|b| b.iter().by_vals().collect()),
        )?;
        let mut buf = ParseBuf(rows.rows_data());
        let mut changes = Vec::new();
        while !buf.is_empty() {
            let before = match before_cols {
                Some(_) => Some(table.image(&mut buf).with_context(ctx)?),
                None => None,
            };
            let after = match after_cols {
                Some(_) => Some(table.image(&mut buf).with_context(ctx)?),
                None => None,
            };
            changes.push(match (before, after) {
                (None, Some(a)) => Change::Insert(a),
                (Some(b), Some(a)) => Change::Update(b, a),
                (Some(b), None) => Change::Delete(b),
                (None, None) => break,
            });
        }
        Ok(Some(Item::Rows {
            table,
            changes,
            ts,
            pos: log_pos,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse() {
        assert_eq!(StartAt::parse("now"), Ok(StartAt::Now));
        assert_eq!(
            StartAt::parse("binlog.000042:1234"),
            Ok(StartAt::FilePos("binlog.000042".into(), 1234))
        );
        assert_eq!(
            StartAt::parse("0-1-977,1-2-5"),
            Ok(StartAt::Gtid("0-1-977,1-2-5".into()))
        );
        let mysql = "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5";
        assert_eq!(StartAt::parse(mysql), Ok(StartAt::MysqlGtid(mysql.into())));
        assert!(StartAt::parse("binlog.000042:x").is_err());
        assert!(StartAt::parse("0-1").is_err());
        assert!(StartAt::parse(":4").is_err());
    }

    #[test]
    fn gtid_states_compare_per_domain() {
        let mut s = GtidState::parse("0-1-10,1-2-5").expect("state");
        assert_eq!(s.to_string(), "0-1-10,1-2-5");
        assert!(s.reached(&GtidState::parse("0-1-10").expect("g")));
        assert!(!s.reached(&GtidState::parse("0-1-11").expect("g")));
        assert!(!s.reached(&GtidState::parse("2-1-1").expect("g")));
        s.apply(0, 3, 11);
        assert!(s.reached(&GtidState::parse("0-1-11,1-2-5").expect("g")));
        assert_eq!(s.to_string(), "0-3-11,1-2-5");
    }
}
