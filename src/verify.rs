//! `verify`: prove a backup is whole. Every file listed in `metadata.json` must exist, match
//! its size and sha256, decrypt (age authenticates every chunk of the stream, so tampering
//! is caught), decompress and decode, with the row count `metadata.json` gives.
//!
//! Bad files are collected and reported together (exit 1); a missing identity or one that
//! opens nothing is an error (exit 2), not a verdict on the files.

use std::io::Read;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::crypto::{self, Identities, WrongKey};
use crate::format::{self, ColumnInfo};
use crate::layout;
use crate::manifest::Plan;
use crate::restore::{self, load_table};
use crate::sink::Sink;
use crate::snapshot;
use crate::source::{ReadSpec, Source};
use crate::value;

/// Options from the command line.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Backup id or `latest`.
    pub backup: String,
    /// age identities for encrypted backups.
    pub identities: Identities,
    /// Also compare every chunk's fingerprint with the live source.
    pub against_source: bool,
}

/// One bad file.
#[derive(Debug, Clone, Serialize)]
pub struct BadFile {
    /// Path at the destination.
    pub file: String,
    /// What is wrong.
    pub problem: String,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Backup checked.
    pub backup_id: String,
    /// Files checked.
    pub files: usize,
    /// Rows decoded.
    pub rows: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Bad files.
    pub bad: Vec<BadFile>,
    /// With `--against-source`: chunks compared with the live source …
    pub source_chunks: Option<usize>,
    /// … and those whose rows differ now (expected on a live source: writes after the
    /// snapshot), by file.
    pub changed_chunks: Vec<String>,
}

/// Verifies a backup.
///
/// # Errors
/// When the backup cannot be found, or no identity opens it ([`WrongKey`]).
pub async fn run(plan: &Plan, opts: &VerifyOptions) -> Result<VerifyReport> {
    let name = &plan.manifest.name;
    let sink = Sink::connect(&plan.destination).await?;
    let (backup_id, meta) = restore::resolve_backup(&sink, name, &opts.backup).await?;
    let dir = layout::backup_dir(name, &backup_id);
    if !meta.encryption_recipients.is_empty() && opts.identities.is_empty() {
        return Err(anyhow!(
            "backup {backup_id} is encrypted (to {}): give --identity FILE or {}",
            meta.encryption_recipients.join(", "),
            crypto::IDENTITY_ENV
        ));
    }
    let mut report = VerifyReport {
        backup_id: backup_id.clone(),
        files: 0,
        rows: 0,
        bytes: 0,
        bad: Vec::new(),
        source_chunks: None,
        changed_chunks: Vec::new(),
    };
    let mut loaded = Vec::new();
    let mut opened_any = false;
    let mut wrong_key: Option<anyhow::Error> = None;
    let mut unopened: Vec<BadFile> = Vec::new();
    for t in &meta.tables {
        let tdir = format!("{dir}/{}", layout::table_dir(&t.schema, &t.table));
        let (t, schema) = match load_table(&sink, &dir, &meta, t, &opts.identities).await {
            Ok(x) => {
                opened_any = true;
                x
            }
            Err(e) if e.is::<WrongKey>() => {
                unopened.push(BadFile {
                    file: format!("{tdir}/schema.json.age"),
                    problem: format!("{e:#}"),
                });
                wrong_key.get_or_insert(e);
                continue;
            }
            Err(e) => {
                report.bad.push(BadFile {
                    file: format!("{tdir}/schema.json or {}", layout::KEYS_FILE),
                    problem: format!("{e:#}"),
                });
                continue;
            }
        };
        // The other small files restore needs.
        let mut small = vec![format!("{tdir}/schema.sql")];
        if meta.format == crate::manifest::Format::Avro {
            small.push(format!("{tdir}/schema.avsc"));
        }
        for f in small {
            report.files += 1;
            if let Err(e) = restore::read_small(&sink, &f, &meta, &opts.identities).await {
                report.bad.push(BadFile {
                    file: f,
                    problem: format!("{e:#}"),
                });
            }
        }
        let info = format::TableInfo {
            schema: t.schema.clone(),
            table: t.table.clone(),
            columns: ColumnInfo::list(&schema.schema, &t.columns),
        };
        loaded.push(t.clone());
        for c in &t.chunks {
            let path = format!("{dir}/{}", c.file);
            report.files += 1;
            match check_file(&sink, &path, c, &info, meta.format, &opts.identities).await {
                Ok(rows) => {
                    opened_any = true;
                    report.rows += rows;
                    report.bytes += c.bytes;
                }
                Err(e) if e.is::<WrongKey>() => {
                    unopened.push(BadFile {
                        file: path,
                        problem: format!("{e:#}"),
                    });
                    wrong_key.get_or_insert(e);
                }
                Err(e) => report.bad.push(BadFile {
                    file: path,
                    problem: format!("{e:#}"),
                }),
            }
        }
    }
    if let Some(e) = wrong_key {
        if !opened_any {
            return Err(e);
        }
        // Some files open and some do not: those are bad (encrypted to other recipients).
        report.bad.extend(unopened);
    }
    if opts.against_source {
        compare_with_source(plan, &loaded, &mut report).await?;
    }
    Ok(report)
}

/// Reads every chunk's key range from the live source and compares its fingerprint with the
/// one taken at the snapshot.
async fn compare_with_source(
    plan: &Plan,
    tables: &[layout::TableMeta],
    report: &mut VerifyReport,
) -> Result<()> {
    use mysql_async::prelude::*;
    let src = Source::new(&plan.source_url, plan.password.as_ref())?;
    let mut conn = src.connect().await?;
    let mut compared = 0;
    for t in tables {
        let extra_key_columns = t
            .chunk_key
            .as_ref()
            .map(|k| {
                k.columns
                    .iter()
                    .filter(|c| !t.columns.iter().any(|s| s.eq_ignore_ascii_case(c)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let spec = ReadSpec {
            schema: t.schema.clone(),
            table: t.table.clone(),
            columns: t.columns.clone(),
            extra_key_columns,
            key: t.chunk_key.clone(),
            where_: t.where_.clone(),
        };
        for c in &t.chunks {
            let Some(want) = c.source_fingerprint else {
                continue;
            };
            let bound = |j: &serde_json::Value| -> Result<Option<Vec<mysql_async::Value>>> {
                if j.is_null() {
                    Ok(None)
                } else {
                    snapshot::key_values(j).map(Some)
                }
            };
            let (lower, upper) = (bound(&c.lower_bound)?, bound(&c.upper_bound)?);
            let q = spec.chunk_query(lower.as_deref(), upper.as_deref());
            let mut result = conn
                .exec_iter(q.sql.as_str(), q.params)
                .await
                .with_context(|| format!("source query for {}", c.file))?;
            let (mut rows, mut fp, mut scratch) = (0u64, 0u64, Vec::new());
            while let Some(row) = result.next().await? {
                rows += 1;
                fp = fp.wrapping_add(u64::from(value::row_fingerprint(
                    &row.unwrap(),
                    &mut scratch,
                )));
            }
            compared += 1;
            if rows != c.rows || fp != want {
                report.changed_chunks.push(c.file.clone());
            }
        }
    }
    report.source_chunks = Some(compared);
    Ok(())
}

async fn check_file(
    sink: &Sink,
    path: &str,
    c: &layout::ChunkMeta,
    info: &format::TableInfo,
    fmt: crate::manifest::Format,
    ids: &Identities,
) -> Result<u64> {
    if !sink.exists(path).await? {
        return Err(anyhow!("missing"));
    }
    // Pass 1: the stored bytes.
    let mut reader = sink.open_read(path).await?;
    let (bytes, sha) = tokio::task::spawn_blocking(move || -> Result<(u64, String)> {
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = reader.read(&mut buf)?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
        }
        Ok((n, hex::encode(h.finalize())))
    })
    .await
    .map_err(|e| anyhow!("reader panicked: {e}"))??;
    if bytes != c.bytes {
        return Err(anyhow!(
            "size {bytes} bytes, metadata.json says {}",
            c.bytes
        ));
    }
    if sha != c.sha256 {
        return Err(anyhow!(
            "sha256 {sha} does not match metadata.json ({})",
            c.sha256
        ));
    }
    // Pass 2: decrypt, decompress, decode, count.
    let reader = sink.open_read(path).await?;
    let (ids, info, name) = (ids.clone(), info.clone(), path.to_string());
    let rows = tokio::task::spawn_blocking(move || -> Result<u64> {
        let plain = crypto::plain_reader(reader, &name, &ids)?;
        let mut dec = format::decoder(
            fmt,
            &info,
            Box::new(std::io::BufReader::with_capacity(1 << 20, plain)),
        )?;
        let mut rows = 0u64;
        while let Some(b) = dec.next_batch(4096).context("cannot decode")? {
            rows += b.len() as u64;
        }
        Ok(rows)
    })
    .await
    .map_err(|e| anyhow!("decoder panicked: {e}"))??;
    if rows != c.rows {
        return Err(anyhow!("{rows} rows, metadata.json says {}", c.rows));
    }
    Ok(rows)
}
