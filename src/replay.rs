//! Point-in-time restore: applies a backup's changelog (written by `backup --follow`) to the
//! tables a restore has just loaded, up to a position (`restore --until`).
//!
//! Invariants: changes are applied idempotently (an insert is a `REPLACE`, an update deletes
//! the before-key when the key changed and replaces the after-image, a delete deletes by key),
//! so a snapshot whose chunks were read at different points converges once the changelog has
//! been applied past the last chunk point; one target transaction per source transaction;
//! column types come from the target table as it is at that point of the stream (DDL events
//! are applied in order), and a column the target does not have is an error, never dropped.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;

use anyhow::{Context, Result, anyhow, bail};
use mysql_async::prelude::*;
use mysql_async::{Conn, Value};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::binlog::{GtidState, StartAt, file_seq};
use crate::crypto::{self, Identities};
use crate::format::ColumnInfo;
use crate::format::json::RAW_FIELD;
use crate::layout::Metadata;
use crate::manifest::Format;
use crate::schema::{TableSchema, quote_ident, quote_table};
use crate::sink::Sink;
use crate::source::BinlogPos;
use crate::value;

/// One value as stored in the changelog, decoded once the column's type is known.
#[derive(Debug, Clone)]
enum Cell {
    /// JSON text of the value (or the exact text of a JSON column kept aside).
    Json(String),
    /// Exact text of a JSON column (from `__storagetapper_raw`).
    Exact(String),
    /// A msgpack value.
    Mp(rmpv::Value),
    /// An Avro value, with the exact text kept for it in `__storagetapper_raw`, if any.
    Avro(apache_avro::types::Value, Option<String>),
    /// A one-row slice of a Parquet column, with the row's `__storagetapper_raw` object.
    Parquet(arrow_array::ArrayRef, Option<HashMap<String, String>>),
}

type Row = Vec<(String, Cell)>;

/// A change event read back.
#[derive(Debug, Clone)]
struct Event {
    op: String,
    db: String,
    table: String,
    gtid: String,
    file: String,
    pos: u64,
    seqno: u64,
    before: Option<Row>,
    after: Option<Row>,
    key: Vec<String>,
    ddl: Option<String>,
    /// A statement of an SQL changelog (its table in `db`/`table`).
    sql: Option<String>,
}

#[derive(Deserialize)]
struct JsonSource {
    db: Option<String>,
    table: Option<String>,
    gtid: Option<String>,
    file: String,
    pos: u64,
}

#[derive(Deserialize)]
struct JsonEvent<'a> {
    op: String,
    #[serde(borrow)]
    before: Option<&'a RawValue>,
    #[serde(borrow)]
    after: Option<&'a RawValue>,
    #[serde(borrow)]
    key: Option<&'a RawValue>,
    source: JsonSource,
    seqno: u64,
    ddl: Option<String>,
    db: Option<String>,
}

fn json_row(raw: Option<&RawValue>) -> Result<Option<Row>> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    if raw.get() == "null" {
        return Ok(None);
    }
    let fields: indexmap_like::Fields<'_> = serde_json::from_str(raw.get())?;
    let exact: HashMap<String, String> = match fields.0.iter().find(|(k, _)| k == RAW_FIELD) {
        Some((_, r)) => serde_json::from_str(r.get())?,
        None => HashMap::new(),
    };
    Ok(Some(
        fields
            .0
            .into_iter()
            .filter(|(k, _)| k != RAW_FIELD)
            .map(|(k, v)| {
                let cell = match exact.get(&k) {
                    Some(t) => Cell::Exact(t.clone()),
                    None => Cell::Json(v.get().to_string()),
                };
                (k, cell)
            })
            .collect(),
    ))
}

/// Ordered object fields without an extra dependency.
mod indexmap_like {
    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde_json::value::RawValue;

    pub struct Fields<'a>(pub Vec<(String, &'a RawValue)>);

    impl<'de: 'a, 'a> serde::Deserialize<'de> for Fields<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<'a>(std::marker::PhantomData<&'a ()>);
            impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
                type Value = Fields<'a>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Fields<'a>, A::Error> {
                    let mut v = Vec::new();
                    while let Some((k, val)) = m.next_entry::<String, &'de RawValue>()? {
                        v.push((k, val));
                    }
                    Ok(Fields(v))
                }
            }
            d.deserialize_map(V(std::marker::PhantomData))
        }
    }
}

fn parse_json_event(line: &str) -> Result<Event> {
    let e: JsonEvent<'_> = serde_json::from_str(line)?;
    let key = match e.key {
        Some(k) if k.get() != "null" => json_row(Some(k))?
            .unwrap_or_default()
            .into_iter()
            .map(|(n, _)| n)
            .collect(),
        _ => Vec::new(),
    };
    Ok(Event {
        op: e.op,
        db: e.db.or(e.source.db).unwrap_or_default(),
        table: e.source.table.unwrap_or_default(),
        gtid: e.source.gtid.unwrap_or_default(),
        file: e.source.file,
        pos: e.source.pos,
        seqno: e.seqno,
        before: json_row(e.before)?,
        after: json_row(e.after)?,
        key,
        ddl: e.ddl,
        sql: None,
    })
}

fn mp_event(v: rmpv::Value) -> Result<Event> {
    let rmpv::Value::Map(fields) = v else {
        bail!("a change event is not a map");
    };
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v.clone())
    };
    let text = |v: Option<rmpv::Value>| v.and_then(|v| v.as_str().map(str::to_string));
    let row = |v: Option<rmpv::Value>| -> Option<Row> {
        match v {
            Some(rmpv::Value::Map(m)) => Some(
                m.into_iter()
                    .filter_map(|(k, v)| k.as_str().map(|k| (k.to_string(), Cell::Mp(v))))
                    .collect(),
            ),
            _ => None,
        }
    };
    let source = get("source").unwrap_or(rmpv::Value::Nil);
    let sget = |name: &str| match &source {
        rmpv::Value::Map(m) => m
            .iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v.clone()),
        _ => None,
    };
    Ok(Event {
        op: text(get("op")).ok_or_else(|| anyhow!("event without op"))?,
        db: text(get("db"))
            .or_else(|| text(sget("db")))
            .unwrap_or_default(),
        table: text(sget("table")).unwrap_or_default(),
        gtid: text(sget("gtid")).unwrap_or_default(),
        file: text(sget("file")).unwrap_or_default(),
        pos: sget("pos").and_then(|v| v.as_u64()).unwrap_or(0),
        seqno: get("seqno").and_then(|v| v.as_u64()).unwrap_or(0),
        before: row(get("before")),
        after: row(get("after")),
        key: row(get("key"))
            .unwrap_or_default()
            .into_iter()
            .map(|(n, _)| n)
            .collect(),
        ddl: text(get("ddl")),
        sql: None,
    })
}

fn avro_event(v: apache_avro::types::Value) -> Result<Event> {
    use apache_avro::types::Value as Av;
    let Av::Record(fields) = v else {
        bail!("a change event is not a record (envelope `row` cannot be replayed)");
    };
    let mut f: HashMap<String, Av> = fields.into_iter().collect();
    let unwrap = |v: Av| match v {
        Av::Union(_, inner) => *inner,
        other => other,
    };
    let text = |v: Option<Av>| match v.map(unwrap) {
        Some(Av::String(s)) => Some(s),
        _ => None,
    };
    let long = |v: Option<Av>| match v.map(unwrap) {
        Some(Av::Long(n)) => u64::try_from(n).ok(),
        Some(Av::Int(n)) => u64::try_from(n).ok(),
        _ => None,
    };
    let row = |v: Option<Av>| -> Option<Row> {
        let Some(Av::Record(cols)) = v.map(unwrap) else {
            return None;
        };
        let mut raw: HashMap<String, String> = HashMap::new();
        let mut out = Vec::with_capacity(cols.len());
        for (name, value) in cols {
            if name == RAW_FIELD {
                if let Av::Map(m) = unwrap(value) {
                    for (k, v) in m {
                        if let Av::String(t) = v {
                            raw.insert(k, t);
                        }
                    }
                }
            } else {
                out.push((name, value));
            }
        }
        Some(
            out.into_iter()
                .map(|(n, v)| {
                    let r = raw.get(&n).cloned();
                    (n, Cell::Avro(v, r))
                })
                .collect(),
        )
    };
    let mut source: HashMap<String, Av> = match f.remove("source").map(unwrap) {
        Some(Av::Record(s)) => s.into_iter().collect(),
        _ => HashMap::new(),
    };
    Ok(Event {
        op: text(f.remove("op")).ok_or_else(|| anyhow!("event without op"))?,
        db: text(f.remove("db"))
            .or_else(|| text(source.remove("db")))
            .unwrap_or_default(),
        table: text(source.remove("table")).unwrap_or_default(),
        gtid: text(source.remove("gtid")).unwrap_or_default(),
        file: text(source.remove("file")).unwrap_or_default(),
        pos: long(source.remove("pos")).unwrap_or(0),
        seqno: long(f.remove("seqno")).unwrap_or(0),
        before: row(f.remove("before")),
        after: row(f.remove("after")),
        key: row(f.remove("key"))
            .unwrap_or_default()
            .into_iter()
            .map(|(n, _)| n)
            .collect(),
        ddl: text(f.remove("ddl")),
        sql: None,
    })
}

/// The events of one Parquet record batch (the change-event layout, not `row`).
fn parquet_events(batch: &arrow_array::RecordBatch) -> Result<Vec<Event>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{Array, StructArray};
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| anyhow!("Parquet changelog without column `{name}` (envelope row?)"))
    };
    let text = |a: &dyn Array, i: usize| -> Option<String> {
        let s = a.as_string_opt::<i32>()?;
        (!s.is_null(i)).then(|| s.value(i).to_string())
    };
    let op = col("op")?;
    let seqno = col("seqno")?;
    let ddl = col("ddl")?;
    let db = col("db")?;
    let source = col("source")?.as_struct();
    let sfield = |n: &str| {
        source
            .column_by_name(n)
            .ok_or_else(|| anyhow!("Parquet changelog: source has no `{n}`"))
    };
    let (s_db, s_table, s_gtid, s_file, s_pos) = (
        sfield("db")?,
        sfield("table")?,
        sfield("gtid")?,
        sfield("file")?,
        sfield("pos")?,
    );
    let images: Vec<(String, &StructArray)> = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(f, _)| {
            ["before_", "after_", "key_"]
                .iter()
                .any(|p| f.name().starts_with(p))
        })
        .map(|(f, a)| (f.name().clone(), a.as_struct()))
        .collect();
    let image = |prefix: &str, i: usize| -> Result<Option<Row>> {
        for (name, st) in &images {
            if !name.starts_with(prefix) || st.is_null(i) {
                continue;
            }
            let raw = match st
                .column_by_name(RAW_FIELD)
                .and_then(|r| text(r.as_ref(), i))
            {
                Some(t) => Some(serde_json::from_str::<HashMap<String, String>>(&t)?),
                None => None,
            };
            let mut row = Vec::new();
            for (f, child) in st.fields().iter().zip(st.columns()) {
                if f.name() != RAW_FIELD {
                    row.push((
                        f.name().clone(),
                        Cell::Parquet(child.slice(i, 1), raw.clone()),
                    ));
                }
            }
            return Ok(Some(row));
        }
        Ok(None)
    };
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        out.push(Event {
            op: text(op.as_ref(), i).ok_or_else(|| anyhow!("event without op"))?,
            db: text(db.as_ref(), i)
                .or_else(|| text(s_db.as_ref(), i))
                .unwrap_or_default(),
            table: text(s_table.as_ref(), i).unwrap_or_default(),
            gtid: text(s_gtid.as_ref(), i).unwrap_or_default(),
            file: text(s_file.as_ref(), i).unwrap_or_default(),
            pos: u64::try_from(s_pos.as_primitive::<Int64Type>().value(i)).unwrap_or(0),
            seqno: u64::try_from(seqno.as_primitive::<Int64Type>().value(i)).unwrap_or(0),
            before: image("before_", i)?,
            after: image("after_", i)?,
            key: image("key_", i)?
                .unwrap_or_default()
                .into_iter()
                .map(|(n, _)| n)
                .collect(),
            ddl: text(ddl.as_ref(), i),
            sql: None,
        });
    }
    Ok(out)
}

/// `` `a``b`.`c` `` at the start of `s`: the two identifiers and the rest.
fn qualified_name(s: &str) -> Option<(String, String, &str)> {
    fn ident(s: &str) -> Option<(String, &str)> {
        let mut out = String::new();
        let mut chars = s.strip_prefix('`')?.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '`' {
                if chars.peek().map(|p| p.1) == Some('`') {
                    chars.next();
                    out.push('`');
                } else {
                    return Some((out, &s[i + 2..]));
                }
            } else {
                out.push(c);
            }
        }
        None
    }
    let (db, rest) = ident(s)?;
    let (table, rest) = ident(rest.strip_prefix('.')?)?;
    Some((db, table, rest))
}

/// The events of an SQL changelog file: one per statement, with the position comments.
fn sql_events(input: impl BufRead, name: &str) -> Result<Vec<Event>> {
    let field = |line: &str, key: &str| -> Option<String> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key).map(str::to_string))
    };
    let mut out: Vec<Event> = Vec::new();
    let mut gtid = String::new();
    let mut cur: Option<Event> = None;
    let mut ddl: Option<(Event, String)> = None;
    let flush_ddl = |ddl: &mut Option<(Event, String)>, out: &mut Vec<Event>| {
        if let Some((mut e, text)) = ddl.take() {
            let t = text.trim().trim_end_matches(';').to_string();
            e.ddl = Some(t);
            out.push(e);
        }
    };
    for (n, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("{name}, line {}", n + 1))?;
        if let Some(g) = line.strip_prefix("-- gtid=") {
            flush_ddl(&mut ddl, &mut out);
            gtid = g.trim().to_string();
            continue;
        }
        if line.starts_with("-- seqno=") {
            flush_ddl(&mut ddl, &mut out);
            let pos = field(&line, "pos=").unwrap_or_default();
            let (file, pos) = pos.rsplit_once(':').unwrap_or(("", "0"));
            let e = Event {
                op: field(&line, "op=").unwrap_or_default(),
                db: String::new(),
                table: String::new(),
                gtid: field(&line, "gtid=").unwrap_or_else(|| gtid.clone()),
                file: file.to_string(),
                pos: pos.parse().unwrap_or(0),
                seqno: field(&line, "seqno=")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                before: None,
                after: None,
                key: Vec::new(),
                ddl: None,
                sql: None,
            };
            if e.op == "ddl" {
                ddl = Some((e, String::new()));
            } else {
                cur = Some(e);
            }
            continue;
        }
        if let Some((e, text)) = ddl.as_mut() {
            if let Some(db) = line.strip_prefix("USE ").and_then(|r| r.strip_suffix(';'))
                && text.is_empty()
                && e.db.is_empty()
            {
                e.db = db.trim_matches('`').replace("``", "`");
                continue;
            }
            text.push_str(&line);
            text.push('\n');
            continue;
        }
        if line.starts_with("/*!") || line == "BEGIN;" || line == "COMMIT;" || line.is_empty() {
            continue;
        }
        let mut e = cur
            .take()
            .ok_or_else(|| anyhow!("{name}, line {}: a statement without its comment", n + 1))?;
        let rest = ["INSERT INTO ", "UPDATE ", "DELETE FROM "]
            .iter()
            .find_map(|p| line.strip_prefix(p))
            .ok_or_else(|| anyhow!("{name}, line {}: not a change statement", n + 1))?;
        let (db, table, _) = qualified_name(rest)
            .ok_or_else(|| anyhow!("{name}, line {}: no `schema`.`table`", n + 1))?;
        e.db = db;
        e.table = table;
        e.sql = Some(line);
        out.push(e);
    }
    flush_ddl(&mut ddl, &mut out);
    Ok(out)
}

/// Reads every event of the changelog files in order, on a blocking thread.
fn read_events(
    sink: Sink,
    files: Vec<String>,
    format: Format,
    ids: Identities,
) -> mpsc::Receiver<Result<Event>> {
    let (tx, rx) = mpsc::channel(256);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let run = || -> Result<()> {
            for f in files {
                let reader = handle.block_on(sink.open_read(&f))?;
                let plain = crypto::plain_reader(reader, &f, &ids)?;
                let mut input = std::io::BufReader::with_capacity(1 << 16, plain);
                match format {
                    Format::Json => {
                        let mut line = String::new();
                        let mut n = 0u64;
                        loop {
                            line.clear();
                            if input.read_line(&mut line)? == 0 {
                                break;
                            }
                            n += 1;
                            let e = parse_json_event(&line)
                                .with_context(|| format!("{f}, line {n}"))?;
                            if tx.blocking_send(Ok(e)).is_err() {
                                return Ok(());
                            }
                        }
                    }
                    Format::Msgpack => loop {
                        if input.fill_buf()?.is_empty() {
                            break;
                        }
                        let v = rmpv::decode::read_value(&mut input)
                            .with_context(|| format!("{f}: damaged msgpack"))?;
                        if tx.blocking_send(mp_event(v)).is_err() {
                            return Ok(());
                        }
                    },
                    Format::Avro => {
                        let reader = apache_avro::Reader::new(input)
                            .with_context(|| format!("{f}: not an Avro file"))?;
                        for v in reader {
                            let e = v
                                .with_context(|| format!("{f}: damaged Avro"))
                                .and_then(avro_event);
                            if tx.blocking_send(e).is_err() {
                                return Ok(());
                            }
                        }
                    }
                    Format::Parquet => {
                        for batch in crate::format::parquet::read_batches(input)
                            .with_context(|| format!("{f}: not a Parquet file"))?
                        {
                            let batch = batch.with_context(|| format!("{f}: damaged"))?;
                            for e in parquet_events(&batch).with_context(|| f.clone())? {
                                if tx.blocking_send(Ok(e)).is_err() {
                                    return Ok(());
                                }
                            }
                        }
                    }
                    Format::Sql => {
                        for e in sql_events(input, &f)? {
                            if tx.blocking_send(Ok(e)).is_err() {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            Ok(())
        };
        if let Err(e) = run() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

/// Where the restored tables go: source `schema.table` → target database.
pub struct Mapping {
    /// (source schema, table) → target database.
    pub tables: BTreeMap<(String, String), String>,
}

/// What the changelog phase did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplayOutcome {
    /// Change events applied.
    pub events: u64,
    /// Transactions applied.
    pub transactions: u64,
    /// The position reached.
    pub reached: String,
}

/// Applies `<backup>/changelog/` up to `until` through `conn`.
///
/// # Errors
/// When the changelog is missing, does not reach `until`, or a change cannot be applied.
pub async fn apply(
    sink: &Sink,
    dir: &str,
    meta: &Metadata,
    ids: &Identities,
    conn: &mut Conn,
    mapping: &Mapping,
    until: &str,
) -> Result<ReplayOutcome> {
    let until = StartAt::parse(until).map_err(|e| anyhow!("--until {e}"))?;
    if matches!(until, StartAt::Now | StartAt::MysqlGtid(_)) {
        bail!("--until needs a MariaDB GTID or <file>:<pos>");
    }
    let start = meta
        .snapshot
        .position
        .clone()
        .or_else(|| meta.snapshot.changelog_from.clone())
        .ok_or_else(|| anyhow!("the backup has no binlog position to replay from"))?;
    let must_reach = meta.snapshot.changelog_to.clone();
    let cdir = format!("{dir}/changelog");
    let mut files: Vec<(u64, String)> = sink
        .list(&cdir)
        .await?
        .into_iter()
        .filter_map(|p| crate::changelog::file_number(&p).map(|n| (n, p)))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "backup {} has no changelog: take it with `backup --follow` to restore to a position",
            meta.backup_id
        );
    }
    let mut gtid = start
        .gtid
        .as_deref()
        .map(GtidState::parse)
        .transpose()
        .map_err(|e| anyhow!(e))?
        .unwrap_or_default();
    if past(&until, &start, &gtid) {
        bail!("--until is before the backup's snapshot position {start}");
    }
    let covered: Option<crate::state::StreamPosition> = match sink
        .exists(&format!("{cdir}/{}", crate::tail::COVERED_FILE))
        .await?
    {
        true => Some(
            serde_json::from_slice(
                &sink
                    .get(&format!("{cdir}/{}", crate::tail::COVERED_FILE))
                    .await?,
            )
            .with_context(|| format!("{cdir}/{} is not valid", crate::tail::COVERED_FILE))?,
        ),
        false => None,
    };
    let mut rx = read_events(
        sink.clone(),
        files.into_iter().map(|(_, p)| p).collect(),
        meta.format,
        ids.clone(),
    );
    let mut schemas: HashMap<(String, String), TableSchema> = HashMap::new();
    let mut events = 0u64;
    let mut transactions = 0u64;
    let mut current: Option<(String, Vec<Event>)> = None;
    let mut last = start.clone();
    let mut done = until.reached_by(&start, &gtid);
    while !done {
        let Some(e) = rx.recv().await else {
            break;
        };
        let e = e?;
        let same = current
            .as_ref()
            .is_some_and(|(g, _)| *g == e.gtid && !g.is_empty());
        if !same && let Some((g, trx)) = current.take() {
            // A transaction is whole once the next one starts.
            let n = apply_trx(conn, mapping, &mut schemas, &trx).await?;
            events += n;
            transactions += 1;
            advance(&mut gtid, &g);
            if let Some(ev) = trx.last() {
                last = BinlogPos {
                    file: ev.file.clone(),
                    pos: ev.pos,
                    gtid: Some(gtid.to_string()),
                };
            }
        }
        // Stop before a transaction that starts past `until`.
        let at = BinlogPos {
            file: e.file.clone(),
            pos: e.pos,
            gtid: None,
        };
        if beyond(&until, &at, &e.gtid) {
            done = true;
            break;
        }
        match current.as_mut() {
            Some((_, trx)) => trx.push(e),
            None => current = Some((e.gtid.clone(), vec![e])),
        }
    }
    if let Some((g, trx)) = current.take() {
        // The changelog ended at a transaction boundary (files hold whole transactions).
        let n = apply_trx(conn, mapping, &mut schemas, &trx).await?;
        events += n;
        transactions += 1;
        advance(&mut gtid, &g);
        if let Some(ev) = trx.last() {
            last = BinlogPos {
                file: ev.file.clone(),
                pos: ev.pos,
                gtid: Some(gtid.to_string()),
            };
        }
        done = done || until.reached_by(&last, &gtid);
    }
    if !done && let Some(c) = &covered {
        // No events between the last one and the end the stream covered.
        let end = BinlogPos {
            file: c.file.clone(),
            pos: c.pos,
            gtid: c.gtid.clone(),
        };
        let end_gtid = c
            .gtid
            .as_deref()
            .and_then(|g| GtidState::parse(g).ok())
            .unwrap_or_default();
        if until.reached_by(&end, &end_gtid) {
            done = true;
        } else {
            last = end;
        }
    }
    if !done {
        bail!(
            "the changelog ends at {last}, before --until: restored up to there; \
             let `backup --follow` run longer or pick an earlier position"
        );
    }
    if let Some(to) = must_reach
        && !StartAt::FilePos(to.file.clone(), to.pos).reached_by(&last, &GtidState::default())
        && to
            .gtid
            .as_deref()
            .is_none_or(|g| GtidState::parse(g).is_ok_and(|t| !gtid.reached(&t)))
    {
        tracing::warn!(
            "--until is before {to}, the last chunk point of this (not consistent) backup: \
             the tables may not be consistent at that position"
        );
    }
    Ok(ReplayOutcome {
        events,
        transactions,
        reached: gtid.to_string(),
    })
}

fn advance(state: &mut GtidState, gtid: &str) {
    let p: Vec<&str> = gtid.split('-').collect();
    if let [d, s, q] = p[..]
        && let (Ok(d), Ok(s), Ok(q)) = (d.parse(), s.parse(), q.parse())
    {
        state.apply(d, s, q);
    }
}

/// Is `at`, an event of the transaction `trx_gtid`, past `until`?
fn beyond(until: &StartAt, at: &BinlogPos, trx_gtid: &str) -> bool {
    match until {
        StartAt::Now => true,
        StartAt::Gtid(g) => {
            let (Ok(u), Ok(t)) = (GtidState::parse(g), GtidState::parse(trx_gtid)) else {
                return false;
            };
            // Past when its domain's sequence number is beyond the target's.
            !u.reached(&t) && t.domains().all(|d| u.domains().any(|x| x == d))
        }
        StartAt::FilePos(f, p) => (file_seq(&at.file), at.pos) > (file_seq(f), *p),
        StartAt::MysqlGtid(_) => false,
    }
}

/// Is the snapshot start already past `until` (so the position cannot be restored)?
fn past(until: &StartAt, start: &BinlogPos, gtid: &GtidState) -> bool {
    match until {
        StartAt::FilePos(f, p) => (file_seq(&start.file), start.pos) > (file_seq(f), *p),
        StartAt::Gtid(g) => GtidState::parse(g).is_ok_and(|u| gtid.reached(&u) && *gtid != u),
        StartAt::Now | StartAt::MysqlGtid(_) => false,
    }
}

async fn target_schema<'a>(
    conn: &mut Conn,
    schemas: &'a mut HashMap<(String, String), TableSchema>,
    db: &str,
    table: &str,
) -> Result<&'a TableSchema> {
    let k = (db.to_string(), table.to_string());
    if !schemas.contains_key(&k) {
        let s = crate::source::capture_schema(conn, db, table)
            .await
            .with_context(|| format!("target table {db}.{table}"))?;
        schemas.insert(k.clone(), s);
    }
    schemas
        .get(&k)
        .ok_or_else(|| anyhow!("target table {db}.{table}"))
}

fn decode(schema: &TableSchema, row: &Row) -> Result<Vec<(String, Value, ColumnInfo)>> {
    let mut out = Vec::with_capacity(row.len());
    for (name, cell) in row {
        let col = schema.column(name).ok_or_else(|| {
            anyhow!(
                "the target table {}.{} has no column `{name}`",
                schema.schema,
                schema.table
            )
        })?;
        if col.generated {
            continue;
        }
        let info = ColumnInfo::from_column(col);
        let v = match cell {
            Cell::Exact(t) => Value::Bytes(t.clone().into_bytes()),
            Cell::Json(raw) => value::from_json(col.kind, raw).map_err(|e| anyhow!("{e}"))?,
            Cell::Mp(v) => crate::format::msgpack::to_value(&info, v.clone())?,
            Cell::Avro(v, raw) => {
                let mut m = HashMap::new();
                if let Some(t) = raw {
                    m.insert(name.clone(), t.clone());
                }
                crate::format::avro::value_of(&info, v.clone(), &m)?
            }
            Cell::Parquet(a, raw) => crate::format::parquet::value_at(&info, a, raw.clone())?,
        };
        out.push((name.clone(), v, info));
    }
    Ok(out)
}

fn literal(out: &mut String, v: &Value, c: &ColumnInfo) -> Result<()> {
    let mut b = Vec::new();
    value::write_sql(&mut b, c.kind, c.fsp, v).map_err(|e| anyhow!("column {}: {e}", c.name))?;
    out.push_str(&String::from_utf8(b).map_err(|e| anyhow!("column {}: {e}", c.name))?);
    Ok(())
}

fn key_condition(
    out: &mut String,
    row: &[(String, Value, ColumnInfo)],
    key: &[String],
) -> Result<()> {
    let mut first = true;
    for (name, v, c) in row
        .iter()
        .filter(|(n, _, _)| key.is_empty() || key.contains(n))
    {
        if !first {
            out.push_str(" AND ");
        }
        first = false;
        out.push_str(&quote_ident(name));
        out.push_str(" <=> ");
        literal(out, v, c)?;
    }
    if first {
        bail!("a change without key columns");
    }
    Ok(())
}

async fn apply_trx(
    conn: &mut Conn,
    mapping: &Mapping,
    schemas: &mut HashMap<(String, String), TableSchema>,
    trx: &[Event],
) -> Result<u64> {
    let mut statements = Vec::new();
    let mut applied = 0u64;
    for e in trx {
        if e.op == "ddl" {
            let Some(stmt) = e.ddl.as_deref() else {
                continue;
            };
            // Only statements about restored tables, run in their target database.
            let hit = mapping
                .tables
                .iter()
                .find(|((s, t), _)| *s == e.db && mentions(stmt, t));
            if let Some(((s, _), target_db)) = hit {
                let stmt = if s == target_db {
                    stmt.to_string()
                } else {
                    stmt.replace(&format!("`{s}`."), &format!("`{target_db}`."))
                        .replace(&format!("{s}."), &format!("{target_db}."))
                };
                statements.push(format!("USE {}", quote_ident(target_db)));
                statements.push(stmt);
                schemas.retain(|(d, _), _| d != target_db);
                applied += 1;
            }
            continue;
        }
        let Some(target_db) = mapping.tables.get(&(e.db.clone(), e.table.clone())) else {
            continue;
        };
        if let Some(stmt) = &e.sql {
            // An SQL changelog statement: into the target table, inserts as REPLACE.
            let (verb, rest) = ["INSERT INTO ", "UPDATE ", "DELETE FROM "]
                .iter()
                .find_map(|p| stmt.strip_prefix(p).map(|r| (*p, r)))
                .ok_or_else(|| anyhow!("seqno {}: not a change statement", e.seqno))?;
            let (_, _, tail) = qualified_name(rest)
                .ok_or_else(|| anyhow!("seqno {}: no `schema`.`table`", e.seqno))?;
            let verb = if verb == "INSERT INTO " {
                "REPLACE INTO "
            } else {
                verb
            };
            statements.push(format!(
                "{verb}{}{}",
                quote_table(target_db, &e.table),
                tail.trim_end_matches(';')
            ));
            applied += 1;
            continue;
        }
        let schema = target_schema(conn, schemas, target_db, &e.table)
            .await?
            .clone();
        let table = quote_table(target_db, &e.table);
        let ctx = || format!("seqno {} ({} on {}.{})", e.seqno, e.op, e.db, e.table);
        let before = e
            .before
            .as_ref()
            .map(|r| decode(&schema, r))
            .transpose()
            .with_context(ctx)?;
        let after = e
            .after
            .as_ref()
            .map(|r| decode(&schema, r))
            .transpose()
            .with_context(ctx)?;
        if let Some(b) = &before
            && (e.op == "d" || after.as_ref().is_some_and(|a| key_changed(b, a, &e.key)))
        {
            let mut s = format!("DELETE FROM {table} WHERE ");
            key_condition(&mut s, b, &e.key).with_context(ctx)?;
            s.push_str(" LIMIT 1");
            statements.push(s);
        }
        if let Some(a) = &after {
            let mut s = format!("REPLACE INTO {table} (");
            s.push_str(
                &a.iter()
                    .map(|(n, _, _)| quote_ident(n))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            s.push_str(") VALUES (");
            for (i, (_, v, c)) in a.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                literal(&mut s, v, c).with_context(ctx)?;
            }
            s.push(')');
            statements.push(s);
        }
        applied += 1;
    }
    run(conn, statements).await?;
    Ok(applied)
}

fn key_changed(
    before: &[(String, Value, ColumnInfo)],
    after: &[(String, Value, ColumnInfo)],
    key: &[String],
) -> bool {
    let pick = |r: &[(String, Value, ColumnInfo)]| -> Vec<Value> {
        r.iter()
            .filter(|(n, _, _)| key.is_empty() || key.contains(n))
            .map(|(_, v, _)| v.clone())
            .collect()
    };
    pick(before) != pick(after)
}

fn mentions(stmt: &str, table: &str) -> bool {
    stmt.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .any(|w| w == table)
}

async fn run(conn: &mut Conn, statements: Vec<String>) -> Result<()> {
    if statements.is_empty() {
        return Ok(());
    }
    let ddl = statements.iter().any(|s| s.starts_with("USE "));
    if !ddl {
        conn.query_drop("START TRANSACTION").await?;
    }
    for s in &statements {
        if let Err(e) = conn.query_drop(s.as_str()).await {
            if !ddl {
                let _ = conn.query_drop("ROLLBACK").await;
            }
            return Err(anyhow!(
                "applying the changelog: {e}\n  statement: {}",
                short(s)
            ));
        }
    }
    if !ddl {
        conn.query_drop("COMMIT").await?;
    }
    Ok(())
}

fn short(s: &str) -> String {
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s.to_string()
    }
}
