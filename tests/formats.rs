//! Type fidelity and restore: a type-torture table is backed up in each implemented format,
//! read back with our decoders and compared value by value with the source (read over the
//! binary protocol), then restored and compared with `CHECKSUM TABLE`. SQL files are also
//! loaded by the `mariadb` client as they are.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Stdio;

use common::*;
use mysql_async::Value;
use mysql_async::prelude::*;
use storagetapper::format::{self, ColumnInfo, TableInfo};
use storagetapper::layout::SchemaFile;
use storagetapper::manifest::Format;
use storagetapper::value::canonical;

const TORTURE: &str = include_str!("torture.sql");

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The source rows over the binary protocol (UTC, utf8mb4), canonical for each column kind.
fn source_rows(db: &str, table: &str, columns: &[ColumnInfo]) -> Vec<Vec<Value>> {
    runtime().block_on(async {
        let url = format!("mysql://root@127.0.0.1:{}/{db}", server().port);
        let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).expect("url"))
            .await
            .expect("connect");
        conn.query_drop("SET time_zone = '+00:00', NAMES utf8mb4")
            .await
            .expect("session");
        let cols = columns
            .iter()
            .map(|c| format!("`{}`", c.name))
            .collect::<Vec<_>>()
            .join(",");
        let rows: Vec<mysql_async::Row> = conn
            .exec(format!("SELECT {cols} FROM `{table}` ORDER BY 1"), ())
            .await
            .expect("select");
        rows.into_iter()
            .map(|r| {
                r.unwrap()
                    .into_iter()
                    .zip(columns)
                    .map(|(v, c)| canonical(c.kind, v))
                    .collect()
            })
            .collect()
    })
}

/// Decodes every chunk of a table with our own decoder for `format`.
fn decode_table(backup: &Path, table: &str, format: Format) -> (TableInfo, Vec<Vec<Value>>) {
    let meta = metadata(backup);
    let t = meta["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["table"] == table)
        .expect("table in metadata");
    let schema: SchemaFile = serde_json::from_slice(
        &std::fs::read(backup.join(format!(
            "{}.{table}/schema.json",
            t["schema"].as_str().expect("schema")
        )))
        .expect("schema.json"),
    )
    .expect("schema.json parses");
    let info = TableInfo {
        schema: schema.schema.schema.clone(),
        table: table.to_string(),
        columns: ColumnInfo::list(&schema.schema, &schema.selected_columns),
    };
    let mut rows = Vec::new();
    for c in t["chunks"].as_array().expect("chunks") {
        let path = backup.join(c["file"].as_str().expect("file"));
        let raw = std::fs::read(&path).expect("chunk");
        let mut plain = Vec::new();
        if path.extension().is_some_and(|e| e == "zst") {
            zstd::stream::read::Decoder::new(&raw[..])
                .expect("zstd")
                .read_to_end(&mut plain)
                .expect("zstd decode");
        } else {
            plain = raw;
        }
        let mut dec =
            format::decoder(format, &info, Box::new(std::io::Cursor::new(plain))).expect("decoder");
        while let Some(b) = dec.next_batch(100).expect("decode") {
            rows.extend(b);
        }
    }
    (info, rows)
}

fn checksum(table: &str) -> String {
    let out = server().sql(&format!("CHECKSUM TABLE {table}"));
    out.split_whitespace().nth(1).expect("checksum").to_string()
}

fn assert_values_equal(info: &TableInfo, got: &[Vec<Value>], want: &[Vec<Value>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    for (r, (g, w)) in got.iter().zip(want).enumerate() {
        for (i, c) in info.columns.iter().enumerate() {
            let (a, b) = (&g[i], &w[i]);
            let same = match (a, b) {
                // Compare floats bit for bit: -0.0 must stay -0.0.
                (Value::Double(x), Value::Double(y)) => x.to_bits() == y.to_bits(),
                (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
                _ => a == b,
            };
            assert!(
                same,
                "{what}: row {r} column `{}` ({:?}): got {a:?}, source {b:?}",
                c.name, c.kind
            );
        }
    }
}

#[test]
fn torture_round_trips_in_every_format_and_restores_identically() {
    let case = Case::new("torture");
    case.sql(TORTURE);
    let source_sum = checksum("torture.torture");
    for format in [
        Format::Json,
        Format::Sql,
        Format::Msgpack,
        Format::Avro,
        Format::Parquet,
    ] {
        let ext = format.ext();
        let m = fresh_backup(&case, format, "torture");
        let b = &case.complete_backups()[0];
        let (info, got) = decode_table(b, "torture", format);
        let want = source_rows("torture", "torture", &info.columns);
        assert_values_equal(&info, &got, &want, ext);

        // Restore into a new database: identical checksum.
        let db = format!("torture_restored_{ext}");
        server().sql(&format!("DROP DATABASE IF EXISTS {db}"));
        let ms = m.to_string_lossy().to_string();
        let target = format!("mysql://root@127.0.0.1:{}/{db}", server().port);
        let o = run(&["restore", "-m", &ms, "--target", &target, "--no-progress"]);
        assert!(o.status.success(), "{ext}: {}", text_of(&o));
        assert_eq!(
            checksum(&format!("{db}.torture")),
            source_sum,
            "{ext}: restored checksum"
        );
        // A second restore into the same, now non-empty, table is refused …
        let o = run(&["restore", "-m", &ms, "--target", &target, "--no-progress"]);
        assert_eq!(o.status.code(), Some(2), "{ext}: {}", text_of(&o));
        assert!(text_of(&o).contains("--replace"), "{}", text_of(&o));
        // … unless --replace.
        let o = run(&[
            "restore",
            "-m",
            &ms,
            "--target",
            &target,
            "--no-progress",
            "--replace",
        ]);
        assert!(o.status.success(), "{ext}: {}", text_of(&o));
        assert_eq!(
            checksum(&format!("{db}.torture")),
            source_sum,
            "{ext}: replaced checksum"
        );
    }
}

/// `Com_load` of the server: how many LOAD DATA statements it ran.
fn load_data_count() -> u64 {
    let out = server().sql("SHOW GLOBAL STATUS LIKE 'Com_load'");
    out.split('\t')
        .nth(1)
        .and_then(|v| v.trim().parse().ok())
        .expect("Com_load")
}

#[test]
fn restore_through_load_data_is_identical_in_every_format() {
    // The torture table without BIT and spatial columns (those restore with INSERTs): every
    // chunk loads with LOAD DATA LOCAL INFILE, which must give the same table.
    let case = Case::new("infile");
    case.sql(TORTURE);
    case.sql(
        "ALTER TABLE torture DROP COLUMN bt1, DROP COLUMN bt10, DROP COLUMN bt64, \
         DROP COLUMN geo, DROP COLUMN pt",
    );
    let source_sum = checksum("infile.torture");
    for format in [
        Format::Json,
        Format::Sql,
        Format::Msgpack,
        Format::Avro,
        Format::Parquet,
    ] {
        let ext = format.ext();
        let m = fresh_backup(&case, format, "infile");
        let chunks = metadata(&case.complete_backups()[0])["tables"][0]["chunks"]
            .as_array()
            .expect("chunks")
            .len() as u64;
        let db = format!("infile_restored_{ext}");
        server().sql(&format!("DROP DATABASE IF EXISTS {db}"));
        let target = format!("mysql://root@127.0.0.1:{}/{db}", server().port);
        let before = load_data_count();
        let o = run(&[
            "restore",
            "-m",
            &m.to_string_lossy(),
            "--target",
            &target,
            "--no-progress",
        ]);
        assert!(o.status.success(), "{ext}: {}", text_of(&o));
        assert!(
            load_data_count() - before >= chunks,
            "{ext}: every chunk through LOAD DATA"
        );
        assert_eq!(
            checksum(&format!("{db}.torture")),
            source_sum,
            "{ext}: restored checksum"
        );
    }
}

/// A new backup of `schema.torture` in `format` (2 rows per chunk, 2 threads) into an empty
/// destination and state; returns its manifest.
fn fresh_backup(case: &Case, format: Format, schema: &str) -> std::path::PathBuf {
    let _ = std::fs::remove_dir_all(case.dir.join("out"));
    let _ = std::fs::remove_file(case.dir.join("state.db"));
    let m = case.manifest_with_destination(
        &format!("format = \"{}\"", format_key(format)),
        &format!(
            "[snapshot]\nthreads = 2\nchunk_rows = 2\n\n[[tables]]\nschema = \"{schema}\"\n\
             table = \"torture\"\n"
        ),
    );
    backup_ok(&m, &[]);
    m
}

fn format_key(f: Format) -> &'static str {
    match f {
        Format::Json => "json",
        Format::Sql => "sql",
        Format::Avro => "avro",
        Format::Msgpack => "msgpack",
        Format::Parquet => "parquet",
    }
}

fn text_of(o: &std::process::Output) -> String {
    text(o)
}

#[test]
fn sql_chunk_files_load_with_the_mariadb_client_as_they_are() {
    let case = Case::new("sqlload");
    case.sql(TORTURE);
    let m = case.manifest_with_destination(
        "format = \"sql\"\ncompression = \"none\"",
        "[snapshot]\nchunk_rows = 2\n\n[[tables]]\nschema = \"sqlload\"\ntable = \"torture\"\n",
    );
    backup_ok(&m, &[]);
    let b = &case.complete_backups()[0];
    server().sql("DROP DATABASE IF EXISTS sqlload_client; CREATE DATABASE sqlload_client; CREATE TABLE sqlload_client.torture LIKE sqlload.torture");
    let mut files: Vec<_> = std::fs::read_dir(b.join("sqlload.torture"))
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .filter(|p| !p.ends_with("schema.sql"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 2);
    for f in files {
        let out = std::process::Command::new("mariadb")
            .args([
                "-uroot",
                &format!("-S{}", server().socket.display()),
                "sqlload_client",
            ])
            .stdin(Stdio::from(std::fs::File::open(&f).expect("open")))
            .output()
            .expect("mariadb client");
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        checksum("sqlload_client.torture"),
        checksum("sqlload.torture")
    );
}

#[test]
fn restore_resumes_after_kill_without_duplicates() {
    let case = Case::new("restorekill");
    case.sql(
        "CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(40), n DECIMAL(10,2));
         INSERT INTO big SELECT seq, MD5(seq), seq / 3 FROM seq_1_to_60000;
         CREATE TABLE nokey (a INT, b TEXT);
         INSERT INTO nokey SELECT seq MOD 7, REPEAT('x', seq MOD 13) FROM seq_1_to_3000;",
    );
    // json goes through decode -> INSERT; sql chunks are sent through as they are.
    for (seed, format) in [(3u64, "json"), (11, "sql"), (17, "sql")] {
        let _ = std::fs::remove_dir_all(case.dir.join("out"));
        let _ = std::fs::remove_file(case.dir.join("state.db"));
        let m = case.manifest_with_destination(&format!("format = \"{format}\""), "[snapshot]\nthreads = 2\nchunk_rows = 2000\n\n[[tables]]\nschema = \"restorekill\"\ntable = \"*\"\n",);
        backup_ok(&m, &[]);
        let ms = m.to_string_lossy().to_string();
        let target = format!("mysql://root@127.0.0.1:{}/restorekill_t", server().port);
        server().sql("DROP DATABASE IF EXISTS restorekill_t");
        let mut rng = Lcg(seed);
        let mut child = bin()
            .args([
                "restore",
                "-m",
                &ms,
                "--target",
                &target,
                "--no-progress",
                "--replace",
                "--threads",
                "2",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(std::time::Duration::from_millis(rng.range(150, 600)));
        let _ = child.kill();
        let _ = child.wait();
        // Rerun (without --replace: a resumed restore keeps what it loaded).
        let o = run(&["restore", "-m", &ms, "--target", &target, "--no-progress"]);
        if !o.status.success() {
            // The kill came before any table existed in the state: start over cleanly.
            assert!(text(&o).contains("--replace"), "{}", text(&o));
            let o = run(&[
                "restore",
                "-m",
                &ms,
                "--target",
                &target,
                "--no-progress",
                "--replace",
            ]);
            assert!(o.status.success(), "{}", text(&o));
        }
        assert_eq!(
            checksum("restorekill_t.big"),
            checksum("restorekill.big"),
            "seed {seed}"
        );
        assert_eq!(
            checksum("restorekill_t.nokey"),
            checksum("restorekill.nokey"),
            "seed {seed}"
        );
        let n = server().sql("SELECT COUNT(*) FROM restorekill_t.big");
        assert_eq!(n.trim(), "60000");
    }
}

#[test]
fn a_cut_off_sql_chunk_is_refused_by_restore() {
    let case = Case::new("sqlcut");
    case.sql("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40)); INSERT INTO t SELECT seq, MD5(seq) FROM seq_1_to_500;");
    let m = case.manifest_with_destination(
        "format = \"sql\"\ncompression = \"none\"",
        "[[tables]]\nschema = \"sqlcut\"\ntable = \"t\"\n",
    );
    backup_ok(&m, &[]);
    let b = &case.complete_backups()[0];
    let f = b.join("sqlcut.t/00000.sql");
    let full = std::fs::read(&f).expect("chunk");
    std::fs::write(&f, &full[..full.len() - 40]).expect("cut");
    let target = format!("mysql://root@127.0.0.1:{}/sqlcut_t", server().port);
    let o = run(&[
        "restore",
        "-m",
        &m.to_string_lossy(),
        "--target",
        &target,
        "--no-progress",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("cut off"), "{}", text(&o));
    // Nothing of the cut chunk was committed.
    assert_eq!(server().sql("SELECT COUNT(*) FROM sqlcut_t.t").trim(), "0");
}

fn python() -> std::path::PathBuf {
    let p = std::env::var_os("STORAGETAPPER_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python"));
    assert!(
        p.exists(),
        "{} is missing: run `make pydeps` (a venv with fastavro, pyarrow, msgpack, zstandard)",
        p.display()
    );
    p
}

fn ymd(y: u16, m: u8, d: u8) -> String {
    format!("{y:04}-{m:02}-{d:02}")
}

fn frac(us: u32, digits: u32) -> String {
    if digits == 0 {
        String::new()
    } else {
        format!(".{:06}", us)[..1 + digits as usize].to_string()
    }
}

fn micros_of_time(neg: bool, d: u32, h: u8, m: u8, s: u8, us: u32) -> i64 {
    let v = ((i64::from(d) * 24 + i64::from(h)) * 3600 + i64::from(m) * 60 + i64::from(s))
        * 1_000_000
        + i64::from(us);
    if neg { -v } else { v }
}

/// Checks what an independent reader produced for one value against the source value.
fn check_reader_value(
    fmt: Format,
    c: &ColumnInfo,
    src: &Value,
    got: &serde_json::Value,
) -> Result<(), String> {
    use storagetapper::schema::Kind;
    let tag = got[0].as_str().unwrap_or("");
    let text = got[1].as_str().unwrap_or("");
    let typed = matches!(fmt, Format::Avro | Format::Parquet);
    let want = |t: &str, x: String| -> Result<(), String> {
        if tag == t && text == x {
            Ok(())
        } else {
            Err(format!("want [{t}, {x}], got {got}"))
        }
    };
    let zero_date = |_y: u16, m: u8, d: u8| m == 0 || d == 0;
    match (c.kind, src) {
        (_, Value::NULL) => {
            if tag == "null" {
                Ok(())
            } else {
                Err(format!("want null, got {got}"))
            }
        }
        (Kind::UInt, Value::UInt(u))
            if fmt == Format::Avro && c.column_type.starts_with("bigint") =>
        {
            want("dec", u.to_string())
        }
        (Kind::Int | Kind::UInt | Kind::Year, Value::Int(n)) => want("int", n.to_string()),
        (Kind::UInt, Value::UInt(n)) => want("int", n.to_string()),
        (Kind::Bit, Value::UInt(n)) if fmt == Format::Avro => want("int", (*n as i64).to_string()),
        (Kind::Bit, Value::UInt(n)) => want("int", n.to_string()),
        (Kind::Decimal, Value::Bytes(b)) => want(
            if typed { "dec" } else { "str" },
            String::from_utf8_lossy(b).into_owned(),
        ),
        (Kind::Float, Value::Float(f)) => {
            let x: f64 = text.parse().map_err(|_| format!("not a float: {got}"))?;
            if tag == "float" && (x as f32).to_bits() == f.to_bits() {
                Ok(())
            } else {
                Err(format!("want {f:e}, got {got}"))
            }
        }
        (Kind::Double, Value::Double(f)) => {
            let x: f64 = text.parse().map_err(|_| format!("not a float: {got}"))?;
            if tag == "float" && x.to_bits() == f.to_bits() {
                Ok(())
            } else {
                Err(format!("want {f:e}, got {got}"))
            }
        }
        (Kind::Date, Value::Date(y, m, d, ..)) => {
            if typed && zero_date(*y, *m, *d) {
                want("raw", ymd(*y, *m, *d))
            } else {
                want(if typed { "date" } else { "str" }, ymd(*y, *m, *d))
            }
        }
        (Kind::DateTime | Kind::Timestamp, Value::Date(y, mo, d, h, mi, s, us)) => {
            let utc = c.kind == Kind::Timestamp;
            let own = format!(
                "{}{}{h:02}:{mi:02}:{s:02}{}",
                ymd(*y, *mo, *d),
                if utc { "T" } else { " " },
                frac(*us, c.fsp)
            );
            if !typed {
                want("str", if utc { format!("{own}Z") } else { own })
            } else if zero_date(*y, *mo, *d) {
                want("raw", if utc { format!("{own}Z") } else { own })
            } else {
                want(
                    if utc { "ts_utc" } else { "ts" },
                    format!("{} {h:02}:{mi:02}:{s:02}.{us:06}", ymd(*y, *mo, *d)),
                )
            }
        }
        (Kind::Time, Value::Time(neg, d, h, m, s, us)) => {
            if typed {
                want("int", micros_of_time(*neg, *d, *h, *m, *s, *us).to_string())
            } else {
                want(
                    "str",
                    format!(
                        "{}{:02}:{m:02}:{s:02}{}",
                        if *neg { "-" } else { "" },
                        d * 24 + u32::from(*h),
                        frac(*us, c.fsp)
                    ),
                )
            }
        }
        (Kind::Binary | Kind::Geometry, Value::Bytes(b)) => {
            if fmt == Format::Json {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| format!("{e}: {got}"))?;
                if tag == "str" && &bytes == b {
                    Ok(())
                } else {
                    Err(format!("want bytes {}, got {got}", hex::encode(b)))
                }
            } else {
                want("bytes", hex::encode(b))
            }
        }
        (Kind::Json, Value::Bytes(b)) if fmt == Format::Json => {
            let src: serde_json::Value =
                serde_json::from_slice(b).map_err(|e| format!("source JSON: {e}"))?;
            let seen: serde_json::Value = match tag {
                "json" | "int" | "float" => {
                    serde_json::from_str(text).map_err(|e| format!("{e}: {got}"))?
                }
                "str" => serde_json::Value::String(text.to_string()),
                _ => return Err(format!("unexpected {got}")),
            };
            if seen == src {
                Ok(())
            } else {
                Err(format!("want {src}, got {got}"))
            }
        }
        (_, Value::Bytes(b)) => want("str", String::from_utf8_lossy(b).into_owned()),
        (k, v) => Err(format!("no expectation for {k:?} {v:?}")),
    }
}

/// Python's json, msgpack, fastavro and pyarrow read our files and see the source's values.
#[test]
fn independent_readers_see_exact_values() {
    let py = python();
    let case = Case::new("readers");
    case.sql(TORTURE);
    for format in [Format::Json, Format::Msgpack, Format::Avro, Format::Parquet] {
        let _ = std::fs::remove_dir_all(case.dir.join("out"));
        let _ = std::fs::remove_file(case.dir.join("state.db"));
        let m = case.manifest_with_destination(
            &format!("format = \"{}\"", format_key(format)),
            "[snapshot]\nchunk_rows = 3\n\n[[tables]]\nschema = \"readers\"\ntable = \"torture\"\n",
        );
        backup_ok(&m, &[]);
        let b = &case.complete_backups()[0];
        let meta = metadata(b);
        let files: Vec<String> = meta["tables"][0]["chunks"]
            .as_array()
            .expect("chunks")
            .iter()
            .map(|c| {
                b.join(c["file"].as_str().expect("file"))
                    .to_string_lossy()
                    .to_string()
            })
            .collect();
        let out = std::process::Command::new(&py)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers.py"))
            .arg(format_key(format))
            .args(&files)
            .output()
            .expect("python");
        assert!(
            out.status.success(),
            "{format:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("reader output"))
            .collect();
        let (info, _) = decode_table(b, "torture", format);
        let want = source_rows("readers", "torture", &info.columns);
        assert_eq!(rows.len(), want.len(), "{format:?}");
        let mut problems = Vec::new();
        for (r, (got, src)) in rows.iter().zip(&want).enumerate() {
            for (i, c) in info.columns.iter().enumerate() {
                if let Err(e) = check_reader_value(format, c, &src[i], &got[&c.name]) {
                    problems.push(format!(
                        "{format:?} row {r} `{}` ({:?}): {e}",
                        c.name, c.kind
                    ));
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
