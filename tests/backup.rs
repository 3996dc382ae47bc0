//! End-to-end tests of `backup`, `plan`, `status` and `list` against a private MariaDB.
//! Every test reads the written files back and compares them with the source rows.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Expected rows computed by the server itself (JSON_OBJECT), keyed by `id`.
const ITEMS_JSON: &str = "SELECT JSON_OBJECT('id', id, 'grp', grp, 'name', name, \
     'amount', CAST(amount AS CHAR), 'created', DATE_FORMAT(created, '%Y-%m-%d %H:%i:%s'), \
     'blob_col', TO_BASE64(blob_col), 'n', n) FROM items ORDER BY grp, name";

fn create_items(case: &Case, rows: u64) {
    case.sql(&format!(
        "CREATE TABLE items (
            id INT NOT NULL,
            grp INT NOT NULL,
            name VARCHAR(40) NOT NULL,
            amount DECIMAL(12,2) NOT NULL,
            created DATETIME NOT NULL,
            blob_col VARBINARY(16),
            n BIGINT UNSIGNED NULL,
            PRIMARY KEY (grp, name),
            UNIQUE KEY uk_id (id)
         ) ENGINE=InnoDB;
         INSERT INTO items
         SELECT seq, seq MOD 37,
                CONCAT(ELT(1 + seq MOD 4, 'a', 'Ä', '😀', 'z'), '-', seq, IF(seq MOD 11 = 0, '\"q\\\\\\n', '')),
                seq * 1.25 - 500,
                '2024-02-29 00:00:00' + INTERVAL seq MINUTE,
                IF(seq MOD 5 = 0, NULL, UNHEX(CONCAT('00FF', HEX(seq)))),
                IF(seq MOD 3 = 0, 18446744073709551615, seq)
         FROM seq_1_to_{rows};"
    ));
}

/// Equal row lists, reporting the first difference (not the whole table).
fn assert_rows_eq(got: &[Value], want: &[Value]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g, w,
            "row {i} differs from the source (or is out of key order)"
        );
    }
    assert_eq!(got.len(), want.len(), "row count differs from the source");
}

fn by_id(rows: Vec<Value>) -> BTreeMap<i64, Value> {
    let mut m = BTreeMap::new();
    for r in rows {
        let id = r["id"].as_i64().expect("id");
        assert!(m.insert(id, r).is_none(), "row {id} appears twice");
    }
    m
}

#[test]
fn backup_reads_back_equal_to_source() {
    let case = Case::new("readback");
    create_items(&case, 3000);
    case.sql(
        "CREATE TABLE heap (a INT, b TEXT) ENGINE=InnoDB;
         INSERT INTO heap VALUES (1, 'x'), (NULL, NULL), (1, 'x');
         CREATE TABLE skey (code VARCHAR(10) COLLATE utf8mb4_general_ci PRIMARY KEY, v INT);
         INSERT INTO skey SELECT CONCAT(CHAR(65 + seq MOD 26), LOWER(CHAR(65 + seq DIV 26 MOD 26)), seq), seq FROM seq_1_to_500;
         CREATE TABLE empty_t (id INT PRIMARY KEY);",
    );
    let m = case.manifest(
        "[snapshot]\nthreads = 3\nchunk_rows = 256\n\n[[tables]]\nschema = \"readback\"\ntable = \"*\"\n",
    );
    backup_ok(&m, &[]);
    let backups = case.complete_backups();
    assert_eq!(backups.len(), 1);
    let b = &backups[0];
    let meta = metadata(b);
    assert_eq!(meta["snapshot"]["consistent"], true);
    assert!(
        meta["snapshot"]["position"]["file"]
            .as_str()
            .is_some_and(|f| f.starts_with("binlog."))
    );
    assert!(meta["snapshot"]["position"]["gtid"].is_string());

    // Composite string key, many chunks: equal to the source, in key order, each row once.
    let got = read_table(b, "readback.items");
    let want = server().json_rows(&format!("USE readback; {ITEMS_JSON}"));
    assert_eq!(got.len(), 3000);
    assert_rows_eq(&got, &want);
    let t = meta["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["table"] == "items")
        .expect("items");
    assert!(t["chunks"].as_array().expect("chunks").len() >= 11, "{t}");
    assert_eq!(
        t["chunk_key"]["columns"],
        serde_json::json!(["grp", "name"])
    );

    // String key with collation: counts and order as the server sorts.
    let got = read_table(b, "readback.skey");
    let want = server().json_rows(
        "USE readback; SELECT JSON_OBJECT('code', code, 'v', v) FROM skey ORDER BY code",
    );
    assert_rows_eq(&got, &want);

    // No key: one chunk, duplicates kept.
    let heap = read_table(b, "readback.heap");
    assert_eq!(heap.len(), 3);
    let t = meta["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["table"] == "heap")
        .expect("heap");
    assert_eq!(t["chunks"].as_array().expect("chunks").len(), 1);
    assert!(t["chunk_key"].is_null());
    assert_eq!(read_table(b, "readback.empty_t").len(), 0);

    // Schema files.
    let sql = std::fs::read_to_string(b.join("readback.items/schema.sql")).expect("schema.sql");
    assert!(sql.contains("CREATE TABLE `items`"), "{sql}");
    let sj: Value = serde_json::from_slice(
        &std::fs::read(b.join("readback.items/schema.json")).expect("schema.json"),
    )
    .expect("json");
    assert_eq!(sj["primary_key"], serde_json::json!(["grp", "name"]));
    assert_eq!(sj["columns"][6]["kind"], "uint");
    assert!(temporaries(&case.dir).is_empty());
}

#[test]
fn columns_where_and_index_apply_to_every_chunk() {
    let case = Case::new("filters");
    create_items(&case, 2000);
    let m = case.manifest(
        "[snapshot]\nthreads = 2\n\n[[tables]]\nschema = \"filters\"\ntable = \"items\"\n\
         columns = [\"id\", \"amount\"]\nwhere = \"grp IN (1, 2, 3) AND name LIKE '%?%' = 0\"\n\
         index = \"uk_id\"\nchunk_rows = 100\n",
    );
    backup_ok(&m, &[]);
    let b = &case.complete_backups()[0];
    let got = read_table(b, "filters.items");
    let want = server().json_rows(
        "USE filters; SELECT JSON_OBJECT('id', id, 'amount', CAST(amount AS CHAR)) FROM items \
         WHERE grp IN (1, 2, 3) AND name LIKE '%?%' = 0 ORDER BY id",
    );
    assert!(!want.is_empty());
    assert_rows_eq(&got, &want);
    let meta = metadata(b);
    let t = &meta["tables"][0];
    assert_eq!(t["chunk_key"]["index"], "uk_id");
    assert_eq!(t["columns"], serde_json::json!(["id", "amount"]));
    // Chunks are cut on the index (2000 rows / 100), the filter applies inside each.
    assert_eq!(t["chunks"].as_array().expect("chunks").len(), 20);
    assert_eq!(
        t["chunks"][0]["first_key"],
        want[0]["id"].clone().into_array()
    );
}

trait IntoArray {
    fn into_array(self) -> Value;
}
impl IntoArray for Value {
    fn into_array(self) -> Value {
        Value::Array(vec![self])
    }
}

/// Starts a backup and kills it (-9) once `n` chunks are done.
fn kill9_after_chunks(m: &Path, n: u64) {
    let mut child = bin()
        .args(backup_args(m))
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_for_chunks(m, n, &mut child);
    child.kill().expect("kill");
    let _ = child.wait();
}

fn backup_args(m: &Path) -> Vec<String> {
    vec![
        "backup".into(),
        "-m".into(),
        m.to_string_lossy().to_string(),
        "--no-progress".into(),
    ]
}

/// kill -9 at random moments, then rerun: the backup equals the source, every row once, no
/// temporary file survives, and a half-written file is never counted.
#[test]
fn kill9_then_rerun_equals_clean_backup() {
    let case = Case::new("killnine");
    create_items(&case, 20000);
    case.sql("CREATE TABLE other (id INT AUTO_INCREMENT PRIMARY KEY)");
    let m = case.manifest(
        "[snapshot]\nthreads = 2\nchunk_rows = 500\nthrottle = { rows_per_sec = 25000 }\n\n\
         [[tables]]\nschema = \"killnine\"\ntable = \"items\"\n",
    );
    let want = by_id(server().json_rows(&format!("USE killnine; {ITEMS_JSON}")));
    for seed in [1u64, 7, 42, 1234] {
        let mut rng = Lcg(seed);
        let _ = std::fs::remove_dir_all(case.dir.join("out"));
        let _ = std::fs::remove_file(case.dir.join("state.db"));
        // Kill up to three times at random points, then let it finish.
        let mut kills = 0;
        let mut completed = false;
        for _ in 0..3 {
            let delay = Duration::from_millis(rng.range(50, 700));
            let mut child = bin()
                .args(backup_args(&m))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn");
            std::thread::sleep(delay);
            if let Some(status) = child.try_wait().expect("wait") {
                // Finished before the kill: a new run would start a new backup.
                assert!(status.success(), "seed {seed}: run failed");
                completed = true;
                break;
            }
            child.kill().expect("kill -9");
            kills += 1;
            let _ = child.wait();
            // A change elsewhere moves the binlog between runs.
            case.sql("INSERT INTO other VALUES (NULL)");
        }
        if !completed {
            backup_ok(&m, &[]);
        }
        let backups = case.complete_backups();
        assert_eq!(
            backups.len(),
            1,
            "seed {seed}: one backup, resumed, not several"
        );
        let got = by_id(read_table(&backups[0], "killnine.items"));
        assert_eq!(got.len(), want.len(), "seed {seed}");
        assert!(got == want, "seed {seed}: rows differ from the source");
        assert!(
            temporaries(&case.dir).is_empty(),
            "seed {seed}: temporaries left"
        );
        let meta = metadata(&backups[0]);
        let runs = meta["snapshot"]["runs"].as_u64().expect("runs");
        if runs > 1 {
            // Chunks from runs at different binlog positions: honest about it.
            assert_eq!(
                meta["snapshot"]["consistent"], false,
                "seed {seed}: {}",
                meta["snapshot"]
            );
            assert!(meta["snapshot"]["changelog_from"]["pos"].is_u64());
            assert!(meta["snapshot"]["changelog_to"]["pos"].is_u64());
        }
        eprintln!("seed {seed}: {kills} kill(s), {runs} run(s) wrote chunks");
    }
}

#[test]
fn sigterm_stops_cleanly_and_resumes() {
    let case = Case::new("sigterm");
    create_items(&case, 6000);
    let m = case.manifest(
        "[snapshot]\nthreads = 2\nchunk_rows = 300\nthrottle = { rows_per_sec = 3000 }\n\n\
         [[tables]]\nschema = \"sigterm\"\ntable = \"items\"\n",
    );
    let mut child = bin()
        .args(backup_args(&m))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_for_chunks(&m, 2, &mut child);
    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(st.success());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("interrupted"), "{}", text(&out));
    assert!(
        temporaries(&case.dir).is_empty(),
        "files in flight must be discarded"
    );
    assert!(case.complete_backups().is_empty());
    // status shows the unfinished backup with some chunks done.
    let ms = m.to_string_lossy().to_string();
    let o = run(&["status", "-m", &ms, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let s: Value = serde_json::from_slice(&o.stdout).expect("status json");
    assert_eq!(s["backups"][0]["status"], "running");
    let done = s["backups"][0]["chunks_done"].as_u64().expect("done");
    assert!((2..20).contains(&done), "{s}");
    // Resume.
    let o = backup_ok(&m, &[]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("resumed"),
        "{}",
        text(&o)
    );
    let b = &case.complete_backups()[0];
    let got = by_id(read_table(b, "sigterm.items"));
    assert_eq!(
        got,
        by_id(server().json_rows(&format!("USE sigterm; {ITEMS_JSON}")))
    );
}

#[test]
fn fresh_starts_over_and_list_shows_complete_backups() {
    let case = Case::new("fresh");
    create_items(&case, 3000);
    let m = case.manifest(
        "[snapshot]\nthreads = 1\nchunk_rows = 200\nthrottle = { rows_per_sec = 2000 }\n\n\
         [[tables]]\nschema = \"fresh\"\ntable = \"items\"\n",
    );
    kill9_after_chunks(&m, 1);
    let partial: Vec<_> = std::fs::read_dir(case.out())
        .expect("out")
        .flatten()
        .collect();
    assert_eq!(partial.len(), 1);
    backup_ok(&m, &["--fresh"]);
    let backups = case.complete_backups();
    assert_eq!(backups.len(), 1);
    // The abandoned, incomplete directory is gone.
    assert_eq!(std::fs::read_dir(case.out()).expect("out").count(), 1);
    assert_eq!(metadata(&backups[0])["snapshot"]["runs"], 1);
    let ms = m.to_string_lossy().to_string();
    let o = run(&["list", "-m", &ms, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let l: Value = serde_json::from_slice(&o.stdout).expect("list json");
    assert_eq!(l.as_array().expect("array").len(), 1);
    assert_eq!(l[0]["rows"], 3000);
    let o = run(&["status", "-m", &ms, "--json"]);
    let s: Value = serde_json::from_slice(&o.stdout).expect("status json");
    let statuses: Vec<&str> = s["backups"]
        .as_array()
        .expect("b")
        .iter()
        .filter_map(|b| b["status"].as_str())
        .collect();
    assert_eq!(statuses, vec!["complete", "abandoned"]);
}

#[test]
fn throttle_slows_a_run_measurably() {
    let case = Case::new("throttle");
    create_items(&case, 4000);
    let m = case.manifest(
        "[snapshot]\nthreads = 2\nchunk_rows = 250\nthrottle = { rows_per_sec = 1000 }\n\n\
         [[tables]]\nschema = \"throttle\"\ntable = \"items\"\n",
    );
    let t0 = Instant::now();
    backup_ok(&m, &[]);
    let throttled = t0.elapsed();
    // 4000 rows at 1000 rows/s across all workers cannot take less than ~3 s.
    assert!(
        throttled >= Duration::from_millis(2900),
        "throttled run took {throttled:?}"
    );
    assert_eq!(
        read_table(&case.complete_backups()[0], "throttle.items").len(),
        4000
    );
}

#[test]
fn bad_manifests_exit_2_naming_the_key() {
    let case = Case::new("badmanifest");
    case.sql("CREATE TABLE t (id INT PRIMARY KEY, a INT)");
    let port = server().port;
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown key",
            format!(
                "name = \"x\"\n[source]\nurl = \"mysql://root@127.0.0.1:{port}\"\nthread = 3\n[destination]\nurl = \"file:///tmp/x\"\n[[tables]]\nschema = \"a\"\ntable = \"b\"\n"
            ),
            vec![":4:", "thread"],
        ),
        (
            "no table matches",
            format!(
                "name = \"x\"\n[source]\nurl = \"mysql://root@127.0.0.1:{port}\"\n[state]\nurl = \"sqlite://{d}/s.db\"\n[destination]\nurl = \"file://{d}/o\"\n[[tables]]\nschema = \"badmanifest\"\ntable = \"t\"\n[[tables]]\nschema = \"badmanifest\"\ntable = \"nope_*\"\n",
                d = case.dir.display()
            ),
            vec![":13:", "tables[1].table", "nope_*"],
        ),
        (
            "unknown column",
            format!(
                "name = \"x\"\n[source]\nurl = \"mysql://root@127.0.0.1:{port}\"\n[state]\nurl = \"sqlite://{d}/s.db\"\n[destination]\nurl = \"file://{d}/o\"\n[[tables]]\nschema = \"badmanifest\"\ntable = \"t\"\ncolumns = [\"id\", \"zzz\"]\n",
                d = case.dir.display()
            ),
            vec![":11:", "tables[0].columns", "zzz"],
        ),
        (
            "unknown index",
            format!(
                "name = \"x\"\n[source]\nurl = \"mysql://root@127.0.0.1:{port}\"\n[state]\nurl = \"sqlite://{d}/s.db\"\n[destination]\nurl = \"file://{d}/o\"\n[[tables]]\nschema = \"badmanifest\"\ntable = \"t\"\nindex = \"idx_nope\"\n",
                d = case.dir.display()
            ),
            vec![":11:", "tables[0].index", "idx_nope"],
        ),
        (
            "missing env var",
            format!(
                "name = \"x\"\n[source]\nurl = \"mysql://root@127.0.0.1:{port}\"\npassword_env = \"ST_SURELY_UNSET\"\n[destination]\nurl = \"file:///tmp/x\"\n[[tables]]\nschema = \"a\"\ntable = \"b\"\n"
            ),
            vec![":4:", "ST_SURELY_UNSET"],
        ),
    ];
    for (what, manifest, needles) in cases {
        let p = case.dir.join("bad.toml");
        std::fs::write(&p, manifest).expect("write");
        let ps = p.to_string_lossy().to_string();
        for cmd in ["backup", "plan"] {
            let o = run(&[cmd, "-m", &ps, "--no-progress"]);
            assert_eq!(o.status.code(), Some(2), "{what} ({cmd}): {}", text(&o));
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains(&ps), "{what}: error must name the file: {err}");
            for n in &needles {
                assert!(err.contains(n), "{what}: error must contain {n:?}: {err}");
            }
        }
    }
    assert!(
        !case.dir.join("o").exists(),
        "nothing may be written for a bad manifest"
    );
}

#[test]
fn wrong_password_never_appears_in_output() {
    let case = Case::new("password");
    server().sql(
        "CREATE USER IF NOT EXISTS 'bk'@'%' IDENTIFIED BY 'Right-Pass-123';
         CREATE USER IF NOT EXISTS 'bk'@'localhost' IDENTIFIED BY 'Right-Pass-123';
         GRANT SELECT, RELOAD, LOCK TABLES, REPLICATION CLIENT ON *.* TO 'bk'@'%';
         GRANT SELECT, RELOAD, LOCK TABLES, REPLICATION CLIENT ON *.* TO 'bk'@'localhost';",
    );
    case.sql("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2)");
    let m = case.manifest_with_source(
        &format!(
            "url = \"mysql://bk@127.0.0.1:{}\"\npassword_env = \"ST_TEST_PW\"",
            server().port
        ),
        "[[tables]]\nschema = \"password\"\ntable = \"t\"\n",
    );
    let ms = m.to_string_lossy().to_string();
    for cmd in ["backup", "plan"] {
        for verbosity in ["-v", "-vv"] {
            let o = bin()
                .args([cmd, "-m", &ms, "--no-progress", verbosity])
                .env("ST_TEST_PW", "Wr0ng-Secret-Pw")
                .output()
                .expect("run");
            assert_eq!(o.status.code(), Some(2), "{}", text(&o));
            let all = text(&o);
            assert!(!all.contains("Wr0ng-Secret-Pw"), "password leaked:\n{all}");
            assert!(all.contains("Access denied"), "{all}");
        }
    }
    // The right password works (and is not printed either).
    let o = bin()
        .args(["backup", "-m", &ms, "--no-progress", "-vv"])
        .env("ST_TEST_PW", "Right-Pass-123")
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("Right-Pass-123"));
    assert_eq!(
        read_table(&case.complete_backups()[0], "password.t").len(),
        2
    );
}

#[test]
fn plan_shows_tables_selects_and_checks_without_writing() {
    let case = Case::new("plan");
    create_items(&case, 100);
    case.sql("CREATE TABLE nokey (a INT, b INT)");
    let m = case.manifest("[[tables]]\nschema = \"plan\"\ntable = \"*\"\nwhere = \"1 = 1\"\n");
    let ms = m.to_string_lossy().to_string();
    let o = run(&["plan", "-m", &ms]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "plan.items",
        "chunk key: (grp, name) on index PRIMARY",
        "FORCE INDEX (`PRIMARY`) WHERE (`grp` > ? OR (`grp` = ? AND `name` > ?)) AND (`grp` < ? OR (`grp` = ? AND `name` <= ?)) AND (1 = 1)",
        "plan.nokey",
        "read as ONE chunk",
        "binlog_format = ROW",
        "privilege RELOAD",
    ] {
        assert!(out.contains(needle), "plan output lacks {needle:?}:\n{out}");
    }
    assert!(!case.dir.join("out").exists());
    assert!(!case.dir.join("state.db").exists());
}

#[test]
fn manifest_change_refuses_resume_without_fresh() {
    let case = Case::new("changed");
    create_items(&case, 2000);
    let m = case.manifest(
        "[snapshot]\nthreads = 1\nchunk_rows = 100\nthrottle = { rows_per_sec = 1500 }\n\n\
         [[tables]]\nschema = \"changed\"\ntable = \"items\"\n",
    );
    kill9_after_chunks(&m, 1);
    let text_before = std::fs::read_to_string(&m).expect("read");
    std::fs::write(
        &m,
        text_before.replace("table = \"items\"", "table = \"items\"\ncolumns = [\"id\"]"),
    )
    .expect("write");
    let ms = m.to_string_lossy().to_string();
    let o = run(&["backup", "-m", &ms, "--no-progress"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--fresh"), "{}", text(&o));
}

/// Without RELOAD the per-table lock is used; without LOCK TABLES either, no lock (with a
/// warning). Either way the rows are right and metadata.json records how the point was taken.
#[test]
fn lock_fallbacks_are_used_and_recorded() {
    let case = Case::new("locks");
    create_items(&case, 1500);
    server().sql(
        "CREATE USER IF NOT EXISTS 'lt'@'localhost' IDENTIFIED BY 'lt-pw';
         CREATE USER IF NOT EXISTS 'lt'@'%' IDENTIFIED BY 'lt-pw';
         GRANT SELECT, LOCK TABLES, BINLOG MONITOR ON *.* TO 'lt'@'localhost';
         GRANT SELECT, LOCK TABLES, BINLOG MONITOR ON *.* TO 'lt'@'%';
         CREATE USER IF NOT EXISTS 'sel'@'localhost' IDENTIFIED BY 'sel-pw';
         CREATE USER IF NOT EXISTS 'sel'@'%' IDENTIFIED BY 'sel-pw';
         GRANT SELECT ON locks.* TO 'sel'@'localhost';
         GRANT SELECT ON locks.* TO 'sel'@'%';",
    );
    let want = by_id(server().json_rows(&format!("USE locks; {ITEMS_JSON}")));
    for (user, pw, lock) in [("lt", "lt-pw", "table_locks"), ("sel", "sel-pw", "none")] {
        let _ = std::fs::remove_dir_all(case.dir.join("out"));
        let _ = std::fs::remove_file(case.dir.join("state.db"));
        let m = case.manifest_with_source(
            &format!(
                "url = \"mysql://{user}@127.0.0.1:{}\"\npassword_env = \"ST_LOCK_PW\"",
                server().port
            ),
            "[snapshot]\nthreads = 2\nchunk_rows = 400\n\n[[tables]]\nschema = \"locks\"\ntable = \"items\"\n",
        );
        let o = bin()
            .args(backup_args(&m))
            .env("ST_LOCK_PW", pw)
            .output()
            .expect("run");
        assert!(o.status.success(), "{user}: {}", text(&o));
        let b = &case.complete_backups()[0];
        let meta = metadata(b);
        assert_eq!(
            meta["snapshot"]["lock"], lock,
            "{user}: {}",
            meta["snapshot"]
        );
        if lock == "none" {
            assert!(text(&o).contains("without a lock"), "{user}: {}", text(&o));
        }
        assert!(
            by_id(read_table(b, "locks.items")) == want,
            "{user}: rows differ"
        );
    }
}
