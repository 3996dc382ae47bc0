//! Encryption to age recipients, `keygen`, `verify` and the restore drill, against the Debian
//! `age` CLI and a private MariaDB.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sha2::Digest;

fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let _ = std::fs::remove_file(&key);
    let o = run(&["keygen", "-o", &key.to_string_lossy()]);
    assert!(o.status.success(), "{}", text(&o));
    let recipient = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "key file must be private");
    }
    // Never overwritten.
    let again = run(&["keygen", "-o", &key.to_string_lossy()]);
    assert_eq!(again.status.code(), Some(2));
    (key, recipient)
}

fn encrypted_manifest(
    case: &Case,
    recipient: &str,
    destination_extra: &str,
    tables: &str,
) -> PathBuf {
    case.manifest_with_destination(
        &format!("encrypt_to = [\"{recipient}\"]\n{destination_extra}"),
        tables,
    )
}

fn age_decrypt(key: &Path, file: &Path) -> Vec<u8> {
    let o = Command::new("age")
        .args(["-d", "-i", &key.to_string_lossy(), &file.to_string_lossy()])
        .output()
        .expect("age CLI (apt-get install age)");
    assert!(
        o.status.success(),
        "age -d {}: {}",
        file.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

fn checksum(table: &str) -> String {
    server()
        .sql(&format!("CHECKSUM TABLE {table}"))
        .split_whitespace()
        .nth(1)
        .expect("checksum")
        .to_string()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn age_cli_reads_our_files_and_we_read_the_cli_s() {
    let case = Case::new("agecli");
    case.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(40), b VARBINARY(8));
         INSERT INTO t SELECT seq, CONCAT('row-', seq), UNHEX(HEX(seq)) FROM seq_1_to_2500;",
    );
    let (key, recipient) = keygen(&case.dir, "key.txt");
    let m = encrypted_manifest(
        &case,
        &recipient,
        "",
        "[snapshot]\nchunk_rows = 1000\n\n[[tables]]\nschema = \"agecli\"\ntable = \"t\"\n",
    );
    backup_ok(&m, &[]);
    let b = case.complete_backups()[0].clone();
    let mut meta = metadata(&b);
    assert_eq!(meta["encryption_recipients"][0], recipient.as_str());
    // The age CLI decrypts every chunk; zstd -d gives JSON lines.
    let mut rows = 0;
    for c in meta["tables"][0]["chunks"].as_array().expect("chunks") {
        let f = b.join(c["file"].as_str().expect("file"));
        assert!(
            f.to_string_lossy().ends_with(".jsonl.zst.age"),
            "{}",
            f.display()
        );
        let z = age_decrypt(&key, &f);
        let plain = zstd::stream::decode_all(&z[..]).expect("zstd -d");
        let text = String::from_utf8(plain).expect("utf8");
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            assert!(v["s"].as_str().is_some_and(|s| s.starts_with("row-")));
            rows += 1;
        }
        // First/last keys are not in the plain metadata.
        assert!(c["first_key"].is_null() && c["last_key"].is_null(), "{c}");
    }
    assert_eq!(rows, 2500);
    let schema = age_decrypt(&key, &b.join("agecli.t/schema.sql.age"));
    assert!(String::from_utf8_lossy(&schema).contains("CREATE TABLE `t`"));

    // A chunk re-encrypted by the CLI (to a key made by age-keygen, plus ours) is read by us.
    let cli_key = case.dir.join("cli-key.txt");
    let _ = std::fs::remove_file(&cli_key);
    let o = Command::new("age-keygen")
        .args(["-o", &cli_key.to_string_lossy()])
        .output()
        .expect("age-keygen");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cli_recipient = std::fs::read_to_string(&cli_key)
        .expect("cli key")
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
        .expect("public key line");
    let chunk = b.join(
        meta["tables"][0]["chunks"][1]["file"]
            .as_str()
            .expect("file"),
    );
    let zst = age_decrypt(&key, &chunk);
    let plain_zst = case.dir.join("chunk.zst");
    std::fs::write(&plain_zst, &zst).expect("write");
    let o = Command::new("age")
        .args([
            "-r",
            &cli_recipient,
            "-o",
            &chunk.to_string_lossy(),
            &plain_zst.to_string_lossy(),
        ])
        .output()
        .expect("age -r");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stored = std::fs::read(&chunk).expect("chunk");
    meta["tables"][0]["chunks"][1]["bytes"] = serde_json::json!(stored.len());
    meta["tables"][0]["chunks"][1]["sha256"] =
        serde_json::json!(hex::encode(sha2::Sha256::digest(&stored)));
    std::fs::write(
        b.join("metadata.json"),
        serde_json::to_vec_pretty(&meta).expect("json"),
    )
    .expect("write");
    let ms = m.to_string_lossy().to_string();
    let (k1, k2) = (
        key.to_string_lossy().to_string(),
        cli_key.to_string_lossy().to_string(),
    );
    let o = run(&["verify", "-m", &ms, "-i", &k1, "-i", &k2]);
    assert!(o.status.success(), "{}", text(&o));
    let target = format!("mysql://root@127.0.0.1:{}/agecli_restored", server().port);
    server().sql("DROP DATABASE IF EXISTS agecli_restored");
    let o = run(&[
        "restore",
        "-m",
        &ms,
        "-i",
        &k1,
        "-i",
        &k2,
        "--target",
        &target,
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(checksum("agecli_restored.t"), checksum("agecli.t"));
}

#[test]
fn no_plaintext_value_anywhere_under_an_encrypted_backup() {
    let case = Case::new("noplain");
    case.sql(
        "CREATE TABLE secrets (email VARCHAR(80) PRIMARY KEY, note TEXT, n INT) COMMENT 'CANARY-COMMENT-77';
         INSERT INTO secrets SELECT CONCAT('CANARY-KEY-', seq, '@example.com'), CONCAT('CANARY-NOTE-', seq), seq FROM seq_1_to_300;",
    );
    let (_, recipient) = keygen(&case.dir, "key.txt");
    let tables =
        "[snapshot]\nchunk_rows = 100\n\n[[tables]]\nschema = \"noplain\"\ntable = \"secrets\"\n";
    let canaries: [&[u8]; 3] = [b"CANARY-KEY-", b"CANARY-NOTE-", b"CANARY-COMMENT-77"];
    let found = |dir: &Path| -> Vec<String> {
        let mut hits = Vec::new();
        for f in files_under(dir) {
            let bytes = std::fs::read(&f).expect("read");
            for c in canaries {
                if bytes.windows(c.len()).any(|w| w == c) {
                    hits.push(format!(
                        "{} holds {}",
                        f.display(),
                        String::from_utf8_lossy(c)
                    ));
                }
            }
        }
        hits
    };
    // Control: without encryption (and without compression) the values are plainly there, so
    // the search below can find them.
    let m = case.manifest_with_destination("compression = \"none\"", tables);
    backup_ok(&m, &[]);
    assert_eq!(
        found(&case.dir.join("out")).len(),
        6 + 3,
        "control: plain files must show every canary"
    );
    let _ = std::fs::remove_dir_all(case.dir.join("out"));
    let _ = std::fs::remove_file(case.dir.join("state.db"));
    // Encrypted, uncompressed: nothing.
    for format in ["json", "sql", "avro", "msgpack", "parquet"] {
        let _ = std::fs::remove_dir_all(case.dir.join("out"));
        let _ = std::fs::remove_file(case.dir.join("state.db"));
        let m = encrypted_manifest(
            &case,
            &recipient,
            &format!("compression = \"none\"\nformat = \"{format}\"\n"),
            tables,
        );
        backup_ok(&m, &[]);
        let hits = found(&case.dir.join("out"));
        assert!(
            hits.is_empty(),
            "{format}: plaintext under an encrypted backup:\n{}",
            hits.join("\n")
        );
        assert!(temporaries(&case.dir).is_empty());
    }
}

#[test]
fn verify_names_tampered_and_missing_files_and_refuses_a_wrong_key() {
    let case = Case::new("tamper");
    case.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40));
         INSERT INTO t SELECT seq, MD5(seq) FROM seq_1_to_3000;",
    );
    let (key, recipient) = keygen(&case.dir, "key.txt");
    let (other, other_recipient) = keygen(&case.dir, "other.txt");
    let m = encrypted_manifest(
        &case,
        &recipient,
        "format = \"msgpack\"\n",
        "[snapshot]\nchunk_rows = 1000\n\n[[tables]]\nschema = \"tamper\"\ntable = \"t\"\n",
    );
    backup_ok(&m, &[]);
    let b = case.complete_backups()[0].clone();
    let ms = m.to_string_lossy().to_string();
    let k = key.to_string_lossy().to_string();
    let o = run(&["verify", "-m", &ms, "-i", &k]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("3000 rows"),
        "{}",
        text(&o)
    );
    // The identity may also come from the environment.
    let o = bin()
        .args(["verify", "-m", &ms])
        .env("STORAGETAPPER_IDENTITY", &key)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Without any identity: a clear error.
    let o = run(&["verify", "-m", &ms]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--identity"), "{}", text(&o));

    let meta = metadata(&b);
    let files: Vec<String> = meta["tables"][0]["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|c| c["file"].as_str().expect("file").to_string())
        .collect();
    // Flip one byte in the middle of a chunk.
    let victim = b.join(&files[1]);
    let mut bytes = std::fs::read(&victim).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&victim, &bytes).expect("write");
    let o = run(&["verify", "-m", &ms, "-i", &k]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        out.contains("BAD tamper/") && out.contains(&files[1]),
        "{out}"
    );
    assert_eq!(out.matches("BAD ").count(), 1, "{out}");
    bytes[mid] ^= 0x01;
    std::fs::write(&victim, &bytes).expect("restore byte");
    // Delete a chunk.
    std::fs::remove_file(b.join(&files[2])).expect("delete");
    let o = run(&["verify", "-m", &ms, "-i", &k, "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
    assert_eq!(report["bad"].as_array().expect("bad").len(), 1, "{report}");
    assert!(
        report["bad"][0]["file"]
            .as_str()
            .expect("file")
            .ends_with(&files[2])
    );
    assert_eq!(report["bad"][0]["problem"], "missing");
    // Wrong identity: exit 2, naming the file it could not open and the key tried.
    let o = run(&["verify", "-m", &ms, "-i", &other.to_string_lossy()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        err.contains("cannot open") && err.contains(".age") && err.contains("other.txt"),
        "{err}"
    );
    // One chunk (whole, sha256 right) encrypted to someone else: bad, not skipped.
    let victim = b.join(&files[0]);
    let plain = age_decrypt(&key, &victim);
    let plain_path = case.dir.join("plain.zst");
    std::fs::write(&plain_path, plain).expect("write");
    let o = Command::new("age")
        .args([
            "-r",
            &other_recipient,
            "-o",
            &victim.to_string_lossy(),
            &plain_path.to_string_lossy(),
        ])
        .output()
        .expect("age -r");
    assert!(o.status.success());
    let mut meta = metadata(&b);
    let stored = std::fs::read(&victim).expect("read");
    meta["tables"][0]["chunks"][0]["bytes"] = serde_json::json!(stored.len());
    meta["tables"][0]["chunks"][0]["sha256"] =
        serde_json::json!(hex::encode(sha2::Sha256::digest(&stored)));
    std::fs::write(
        b.join("metadata.json"),
        serde_json::to_vec_pretty(&meta).expect("json"),
    )
    .expect("write");
    let o = run(&["verify", "-m", &ms, "-i", &k]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        out.contains(&files[0]) && out.contains("other recipients"),
        "{out}"
    );
    let target = format!("mysql://root@127.0.0.1:{}/tamper_r", server().port);
    let o = run(&[
        "restore",
        "-m",
        &ms,
        "-i",
        &other.to_string_lossy(),
        "--target",
        &target,
        "--no-progress",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("other.txt"), "{}", text(&o));
}

#[test]
fn encrypted_restore_drill_gives_identical_tables() {
    let case = Case::new("drill");
    case.sql(
        "CREATE TABLE a (id BIGINT UNSIGNED PRIMARY KEY, d DECIMAL(30,10), t DATETIME(6), s TEXT);
         INSERT INTO a SELECT seq, seq / 7, '2020-01-01' + INTERVAL seq SECOND, REPEAT('é', seq MOD 50) FROM seq_1_to_5000;
         CREATE TABLE b (k VARCHAR(20), v BLOB);
         INSERT INTO b SELECT CONCAT('k', seq), UNHEX(MD5(seq)) FROM seq_1_to_700;",
    );
    let (key, recipient) = keygen(&case.dir, "key.txt");
    for format in ["avro", "parquet"] {
        let _ = std::fs::remove_dir_all(case.dir.join("out"));
        let _ = std::fs::remove_file(case.dir.join("state.db"));
        let m = encrypted_manifest(
            &case,
            &recipient,
            &format!("format = \"{format}\"\n"),
            "[snapshot]\nthreads = 2\nchunk_rows = 1200\n\n[[tables]]\nschema = \"drill\"\ntable = \"*\"\n",
        );
        backup_ok(&m, &[]);
        let ms = m.to_string_lossy().to_string();
        let db = format!("drill_{format}");
        server().sql(&format!("DROP DATABASE IF EXISTS {db}"));
        let target = format!("mysql://root@127.0.0.1:{}/{db}", server().port);
        let o = bin()
            .args(["restore", "-m", &ms, "--target", &target, "--no-progress"])
            .env("STORAGETAPPER_IDENTITY", &key)
            .output()
            .expect("run");
        assert!(o.status.success(), "{format}: {}", text(&o));
        for t in ["a", "b"] {
            assert_eq!(
                checksum(&format!("{db}.{t}")),
                checksum(&format!("drill.{t}")),
                "{format} table {t}"
            );
        }
    }
}

/// `verify --against-source` reads each chunk's key range on the live source and reports the
/// chunks whose rows changed since the snapshot (reported, not counted as bad).
#[test]
fn verify_against_source_reports_changed_chunks() {
    let case = Case::new("fingerprint");
    let (key, recipient) = keygen(&case.dir, "key.txt");
    let k = key.to_string_lossy().to_string();
    for encrypted in [false, true] {
        case.sql(
            "DROP TABLE IF EXISTS t;
             CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40), d DATETIME(3), x DOUBLE);
             INSERT INTO t SELECT seq, MD5(seq), '2024-01-01' + INTERVAL seq SECOND, seq / 3 FROM seq_1_to_3000;",
        );
        let _ = std::fs::remove_dir_all(case.dir.join("out"));
        let _ = std::fs::remove_file(case.dir.join("state.db"));
        let tables = "[snapshot]\nchunk_rows = 1000\n\n[[tables]]\nschema = \"fingerprint\"\ntable = \"t\"\ncolumns = [\"v\", \"d\", \"x\"]\n";
        let m = if encrypted {
            encrypted_manifest(&case, &recipient, "format = \"parquet\"\n", tables)
        } else {
            case.manifest(tables)
        };
        backup_ok(&m, &[]);
        let ms = m.to_string_lossy().to_string();
        let verify = || {
            let o = run(&["verify", "-m", &ms, "-i", &k, "--against-source", "--json"]);
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
            let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
            assert_eq!(r["source_chunks"], 3, "{r}");
            let mut changed: Vec<String> = r["changed_chunks"]
                .as_array()
                .expect("changed")
                .iter()
                .map(|f| {
                    f.as_str()
                        .expect("file")
                        .rsplit('/')
                        .next()
                        .expect("name")
                        .to_string()
                })
                .collect();
            changed.sort();
            changed
        };
        assert!(
            verify().is_empty(),
            "nothing changed yet (encrypted: {encrypted})"
        );
        case.sql("UPDATE t SET v = 'changed' WHERE id = 1500; DELETE FROM t WHERE id = 10;");
        let changed = verify();
        assert_eq!(changed.len(), 2, "encrypted {encrypted}: {changed:?}");
        assert!(
            changed[0].starts_with("00000.") && changed[1].starts_with("00001."),
            "{changed:?}"
        );
    }
}
