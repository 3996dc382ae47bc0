//! Test harness: one private MariaDB per test binary (binlog ROW, free port, temp dir), a
//! database per test, helpers to run the real `storagetapper` binary and to read its files back.
//!
//! The server is watched by a small shell loop that stops it and removes its directory when the
//! test process exits, so nothing is left running. No Docker.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Server {
    /// The watchdog shell (parent of mariadbd); it ends with this process.
    _watchdog: std::process::Child,
    pub port: u16,
    pub dir: PathBuf,
    pub socket: PathBuf,
}

static SERVER: OnceLock<Server> = OnceLock::new();

fn find(bin: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("{bin} not found: run `make deps` (installs mariadb-server from Debian packages)");
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The shared server of this test binary, started on first use.
pub fn server() -> &'static Server {
    SERVER.get_or_init(start_server)
}

fn start_server() -> Server {
    start_server_with(1)
}

static REPLICA: OnceLock<Server> = OnceLock::new();

/// A second server of this test binary: a GTID replica of [`server`] (its own binlog, server
/// id 2), replicating everything the primary has written.
pub fn replica() -> &'static Server {
    REPLICA.get_or_init(|| {
        let primary = server();
        let r = start_server_with(2);
        r.sql(&format!(
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, MASTER_USER = 'root', \
             MASTER_USE_GTID = slave_pos; START SLAVE",
            primary.port
        ));
        r
    })
}

impl Server {
    /// Waits until this replica has applied everything the primary has written so far.
    pub fn catch_up(&self) {
        let target = server().sql("SELECT @@gtid_binlog_pos").trim().to_string();
        let out = self.sql(&format!("SELECT MASTER_GTID_WAIT('{target}', 60)"));
        assert_eq!(out.trim(), "0", "replica did not reach {target}");
    }
}

fn start_server_with(server_id: u32) -> Server {
    let dir = std::env::temp_dir().join(format!(
        "storagetapper-test-{}-{}-{server_id}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let user = whoami();
    let out = Command::new(find("mariadb-install-db"))
        .args([
            "--no-defaults",
            &format!("--user={user}"),
            &format!("--datadir={}", dir.join("data").display()),
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ])
        .output()
        .expect("mariadb-install-db");
    assert!(
        out.status.success(),
        "mariadb-install-db failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let socket = dir.join("s.sock");
    let mariadbd = find("mariadbd");
    let args = [
        "--no-defaults".to_string(),
        format!("--user={user}"),
        format!("--datadir={}", dir.join("data").display()),
        format!("--socket={}", socket.display()),
        format!("--port={port}"),
        "--bind-address=127.0.0.1".into(),
        format!("--log-bin={}", dir.join("data/binlog").display()),
        "--binlog-format=ROW".into(),
        "--binlog-row-image=FULL".into(),
        "--binlog-row-metadata=FULL".into(),
        format!("--server-id={server_id}"),
        "--log-slave-updates".into(),
        "--innodb-buffer-pool-size=128M".into(),
        "--innodb-flush-log-at-trx-commit=2".into(),
        "--sync-binlog=0".into(),
        "--character-set-server=utf8mb4".into(),
        "--collation-server=utf8mb4_general_ci".into(),
        "--max-connections=500".into(),
    ];
    // The watchdog stops the server and removes its files once this test process is gone.
    let script = format!(
        "{} {} > {}/err.log 2>&1 & srv=$!\n\
         while kill -0 {} 2>/dev/null && kill -0 $srv 2>/dev/null; do sleep 0.3; done\n\
         kill $srv 2>/dev/null; wait $srv; rm -rf {}",
        mariadbd.display(),
        args.join(" "),
        dir.display(),
        std::process::id(),
        dir.display()
    );
    let watchdog = Command::new("bash")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mariadbd");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = Command::new(find("mariadb"))
            .args([
                "-uroot",
                &format!("-S{}", socket.display()),
                "-e",
                "SELECT 1",
            ])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            break;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("err.log")).unwrap_or_default();
            panic!("mariadbd did not start within 60 s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Server {
        _watchdog: watchdog,
        port,
        dir,
        socket,
    }
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Server {
    /// Runs SQL as root (utf8mb4), panicking with the error on failure; returns stdout.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new(find("mariadb"))
            .args([
                "-uroot",
                &format!("-S{}", self.socket.display()),
                "--default-character-set=utf8mb4",
                "-N",
                "-B",
                "--raw",
                "-e",
                sql,
            ])
            .output()
            .expect("mariadb client");
        assert!(
            out.status.success(),
            "SQL failed: {sql}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8 output")
    }

    /// One JSON value per output line (for `SELECT JSON_OBJECT(...)`).
    pub fn json_rows(&self, sql: &str) -> Vec<serde_json::Value> {
        self.sql(sql)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l}: {e}")))
            .collect()
    }
}

/// A database and a scratch directory for one test.
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
}

impl Case {
    pub fn new(name: &str) -> Case {
        let s = server();
        s.sql(&format!(
            "DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
        ));
        let dir = s.dir.join("cases").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("case dir");
        Case {
            name: name.to_string(),
            dir,
        }
    }

    pub fn sql(&self, sql: &str) -> String {
        server().sql(&format!("USE `{}`; {sql}", self.name))
    }

    /// Writes a manifest with the given `[[tables]]` (and any extra top-level sections) and
    /// returns its path. Source is the test server as root, destination and state are in
    /// the case directory.
    pub fn manifest(&self, extra: &str) -> PathBuf {
        self.manifest_with_source(
            &format!("url = \"mysql://root@127.0.0.1:{}\"", server().port),
            extra,
        )
    }

    /// Like [`Case::manifest`], with more `[destination]` keys (`format = "sql"` …).
    pub fn manifest_with_destination(&self, destination: &str, extra: &str) -> PathBuf {
        self.manifest_full(
            &format!("url = \"mysql://root@127.0.0.1:{}\"", server().port),
            destination,
            extra,
        )
    }

    pub fn manifest_with_source(&self, source: &str, extra: &str) -> PathBuf {
        self.manifest_full(source, "", extra)
    }

    fn manifest_full(&self, source: &str, destination: &str, extra: &str) -> PathBuf {
        let text = format!(
            "name = \"{name}\"\n\n[source]\n{source}\n\n[state]\nurl = \"sqlite://{dir}/state.db\"\n\n\
             [destination]\nurl = \"file://{dir}/out\"\n{destination}\n\n{extra}\n",
            name = self.name,
            dir = self.dir.display(),
        );
        let p = self.dir.join("manifest.toml");
        std::fs::write(&p, text).expect("write manifest");
        p
    }

    pub fn out(&self) -> PathBuf {
        self.dir.join("out").join(&self.name)
    }

    /// Backup directories that have metadata.json.
    pub fn complete_backups(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.out())
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.join("metadata.json").exists())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_storagetapper"));
    c.env_remove("STORAGETAPPER_LOG");
    c
}

/// Runs the binary with args; returns the output.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run storagetapper")
}

pub fn text(o: &Output) -> String {
    format!(
        "status: {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `backup -m manifest --no-progress` and asserts success.
pub fn backup_ok(manifest: &Path, extra: &[&str]) -> Output {
    let m = manifest.to_string_lossy().to_string();
    let mut args = vec!["backup", "-m", m.as_str(), "--no-progress"];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(o.status.success(), "backup failed\n{}", text(&o));
    o
}

pub fn metadata(backup_dir: &Path) -> serde_json::Value {
    let raw = std::fs::read(backup_dir.join("metadata.json")).expect("metadata.json");
    serde_json::from_slice(&raw).expect("metadata is JSON")
}

/// Reads a chunk file with our own reader: zstd (by extension) then JSON lines.
pub fn read_chunk(path: &Path) -> Vec<serde_json::Value> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let plain = if path.extension().is_some_and(|e| e == "zst") {
        let mut d = zstd::stream::read::Decoder::new(&raw[..]).expect("zstd");
        let mut s = Vec::new();
        d.read_to_end(&mut s).expect("zstd decode");
        s
    } else {
        raw
    };
    let text = String::from_utf8(plain).expect("utf8");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
        .collect()
}

/// All rows of a table in a backup, chunk by chunk in chunk order, checking each chunk file
/// against its metadata entry (rows, bytes, sha256).
pub fn read_table(backup_dir: &Path, table: &str) -> Vec<serde_json::Value> {
    use sha2::Digest;
    let meta = metadata(backup_dir);
    let t = meta["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| {
            format!(
                "{}.{}",
                t["schema"].as_str().unwrap_or(""),
                t["table"].as_str().unwrap_or("")
            ) == table
        })
        .unwrap_or_else(|| panic!("{table} not in metadata"));
    let mut rows = Vec::new();
    for c in t["chunks"].as_array().expect("chunks") {
        let path = backup_dir.join(c["file"].as_str().expect("file"));
        let raw = std::fs::read(&path).expect("chunk file");
        assert_eq!(
            raw.len() as u64,
            c["bytes"].as_u64().expect("bytes"),
            "{}",
            path.display()
        );
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&raw)),
            c["sha256"].as_str().expect("sha"),
            "{}",
            path.display()
        );
        let r = read_chunk(&path);
        assert_eq!(
            r.len() as u64,
            c["rows"].as_u64().expect("rows"),
            "{}",
            path.display()
        );
        rows.extend(r);
    }
    assert_eq!(rows.len() as u64, t["rows"].as_u64().expect("rows"));
    rows
}

/// Polls `status --json` until the unfinished backup has at least `min_done` chunks done
/// (the child must still be running); panics after 30 s.
pub fn wait_for_chunks(manifest: &Path, min_done: u64, child: &mut std::process::Child) {
    let m = manifest.to_string_lossy().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = run(&["status", "-m", &m, "--json"]);
        if o.status.success() {
            let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status json");
            let running = s["backups"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|b| b["status"] == "running");
            if running.is_some_and(|b| b["chunks_done"].as_u64().unwrap_or(0) >= min_done) {
                return;
            }
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read as _;
                let _ = e.read_to_string(&mut err);
            }
            panic!("the backup ended ({status}) before it could be interrupted:\n{err}");
        }
        assert!(Instant::now() < deadline, "no progress within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every file below `dir` whose name marks it temporary.
pub fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".tmp-"))
            {
                out.push(p);
            }
        }
    }
    out
}

/// A small deterministic PRNG for seeds in tests.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}
