//! A snapshot read on a GTID replica continues with a change stream read on the primary
//! (`source.url` = replica, `source.binlog_url` = primary): MariaDB GTIDs are global, so the
//! replica's snapshot point is where the primary's stream starts, and `restore --until` then
//! gives the primary's tables at a position. Its own test binary: primary + replica.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn checksum(s: &Server, db: &str, table: &str) -> String {
    s.sql(&format!("CHECKSUM TABLE `{db}`.`{table}`"))
        .split('\t')
        .nth(1)
        .expect("checksum")
        .trim()
        .to_string()
}

#[test]
fn snapshot_on_the_replica_tail_on_the_primary_restore_until() {
    let case = Case::new("replica_pitr");
    case.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(30), n INT NULL); \
         INSERT INTO t SELECT seq, CONCAT('v', seq), seq % 9 FROM seq_1_to_2000",
    );
    let r = replica();
    r.catch_up();
    assert_eq!(
        checksum(r, &case.name, "t"),
        checksum(server(), &case.name, "t")
    );
    let m = case.manifest_with_source(
        &format!(
            "url = \"mysql://root@127.0.0.1:{}\"\nbinlog_url = \"mysql://root@127.0.0.1:{}\"",
            r.port,
            server().port
        ),
        &format!(
            "[snapshot]\nchunk_rows = 300\n\n[[tables]]\nschema = \"{}\"\ntable = \"t\"\n",
            case.name
        ),
    );
    let child = bin()
        .args([
            "backup",
            "-m",
            m.to_str().expect("path"),
            "--no-progress",
            "--follow",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while case.complete_backups().is_empty()
        || !server().sql("SHOW SLAVE HOSTS").contains("storagetapper")
    {
        assert!(
            Instant::now() < deadline,
            "backup --follow did not start streaming"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let backup = case.complete_backups().pop().expect("backup");
    let meta = metadata(&backup);
    assert_eq!(
        meta["source"]["server_id"], 2,
        "the snapshot was read on the replica"
    );
    case.sql(
        "UPDATE t SET s = CONCAT(s, '+') WHERE id % 4 = 0; DELETE FROM t WHERE id % 13 = 0; \
         INSERT INTO t VALUES (5000, 'new', NULL)",
    );
    let gtid = server().sql("SELECT @@gtid_binlog_pos").trim().to_string();
    let want = checksum(server(), &case.name, "t");
    case.sql("UPDATE t SET n = 0; DELETE FROM t WHERE id < 100");
    std::thread::sleep(Duration::from_millis(1500));
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "backup --follow:\n{}", text(&out));

    server().sql("DROP DATABASE IF EXISTS replica_copy; CREATE DATABASE replica_copy");
    let o = run(&[
        "restore",
        "-m",
        m.to_str().expect("path"),
        "--target",
        &format!("mysql://root@127.0.0.1:{}/replica_copy", server().port),
        "--until",
        &gtid,
        "--no-progress",
    ]);
    assert!(o.status.success(), "restore --until {gtid}:\n{}", text(&o));
    assert_eq!(
        checksum(server(), "replica_copy", "t"),
        want,
        "the primary's table at {gtid}"
    );
}
