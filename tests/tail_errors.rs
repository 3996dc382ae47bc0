//! `tail` refuses what it cannot stream exactly, with messages that name the problem: a server
//! id held by another stream, compressed binlog, missing row metadata, a purged position.
//! Its own test binary (own server): it changes global variables and purges the binlog.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn tail_err(manifest: &std::path::Path, args: &[&str]) -> String {
    let m = manifest.to_str().expect("path");
    let mut a = vec!["tail", "-m", m, "--no-progress"];
    a.extend_from_slice(args);
    let o = run(&a);
    assert_eq!(o.status.code(), Some(2), "tail should fail:\n{}", text(&o));
    text(&o)
}

#[test]
fn refuses_what_it_cannot_stream_exactly() {
    let case = Case::new("tail_errors");
    case.sql("CREATE TABLE t (id INT PRIMARY KEY)");
    let m = case.manifest_with_source(
        &format!(
            "url = \"mysql://root@127.0.0.1:{}\"\nserver_id = 4242",
            server().port
        ),
        &format!("[[tables]]\nschema = \"{}\"\ntable = \"t\"\n", case.name),
    );

    // Another stream holds the server id.
    let mut first = bin()
        .args([
            "tail",
            "-m",
            m.to_str().expect("path"),
            "--no-progress",
            "--duration",
            "60s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server().sql("SHOW SLAVE HOSTS").contains("4242") {
        assert!(Instant::now() < deadline, "first stream never registered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = tail_err(&m, &["--duration", "1s"]);
    assert!(
        out.contains("server_id 4242 is already used by another replica or stream"),
        "{out}"
    );
    first.kill().expect("kill");
    first.wait().expect("reap");

    // Compressed binlog events would vanish: refused up front.
    server().sql("SET GLOBAL log_bin_compress = ON");
    let out = tail_err(&m, &["--duration", "1s"]);
    server().sql("SET GLOBAL log_bin_compress = OFF");
    assert!(out.contains("log_bin_compress is ON"), "{out}");

    // Without FULL row metadata columns have no names: refused, naming the fix.
    server().sql("SET GLOBAL binlog_row_metadata = MINIMAL");
    let out = tail_err(&m, &["--duration", "1s"]);
    server().sql("SET GLOBAL binlog_row_metadata = FULL");
    assert!(
        out.contains("binlog_row_metadata is MINIMAL, needs FULL"),
        "{out}"
    );

    // A purged position: the message names it and the oldest one the server still has.
    let first_file = server()
        .sql("SHOW BINARY LOGS")
        .lines()
        .next()
        .and_then(|l| l.split('\t').next())
        .expect("a binlog")
        .to_string();
    case.sql("INSERT INTO t VALUES (1)");
    server().sql("FLUSH BINARY LOGS");
    let current = server()
        .sql("SHOW MASTER STATUS")
        .split('\t')
        .next()
        .expect("file")
        .to_string();
    // A dump thread still reading the old file keeps it: retry until it is gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        server().sql(&format!("PURGE BINARY LOGS TO '{current}'"));
        if !server().sql("SHOW BINARY LOGS").contains(&first_file) {
            break;
        }
        assert!(Instant::now() < deadline, "{first_file} was never purged");
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = tail_err(
        &m,
        &["--from", &format!("{first_file}:4"), "--duration", "10s"],
    );
    assert!(
        out.contains(&format!(
            "binlog position {first_file}:4 is no longer on the server"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("the oldest available is {current}:4")),
        "{out}"
    );
    // The same through a GTID the server no longer has.
    let out = tail_err(&m, &["--from", "0-1-1", "--duration", "10s"]);
    assert!(out.contains("is no longer on the server"), "{out}");
}
