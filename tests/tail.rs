//! `tail`: change events decode exactly like a snapshot, a changelog replayed gives back the
//! source tables, nothing is lost or written twice across kill -9, schema changes mid-stream
//! (also while catching up from behind them).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value as J;

const TORTURE: &str = include_str!("torture.sql");

/// `file:pos` of the server's binlog end now.
fn position() -> String {
    let out = server().sql("SHOW MASTER STATUS");
    let mut it = out.split('\t');
    let file = it.next().expect("file").trim().to_string();
    let pos = it.next().expect("pos").trim().to_string();
    format!("{file}:{pos}")
}

fn tail_ok(manifest: &Path, args: &[&str]) -> String {
    let m = manifest.to_str().expect("path");
    let mut a = vec!["tail", "-m", m, "--no-progress"];
    a.extend_from_slice(args);
    let o = run(&a);
    assert!(o.status.success(), "tail failed:\n{}", text(&o));
    text(&o)
}

/// Every change event in the stream's files, in file order; checks there are no temporaries.
fn changelog(case: &Case) -> Vec<J> {
    let dir = case.out().join("changelog");
    assert!(
        temporaries(&dir).is_empty(),
        "temporary files left: {:?}",
        temporaries(&dir)
    );
    changelog_files(&dir)
        .iter()
        .flat_map(|f| read_chunk(f))
        .collect()
}

/// The numbered changelog files of `dir`, in order (not `position.json`).
fn changelog_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|f| {
        f.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.as_bytes()[0].is_ascii_digit())
    });
    files.sort();
    files
}

/// Checks seqnos are 1, 2, 3, … with no gap or repeat.
fn check_seqnos(events: &[J]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["seqno"].as_u64(),
            Some(i as u64 + 1),
            "seqno out of order at event {i}: {e}"
        );
    }
}

fn key_of(row: &J, key: &[&str]) -> String {
    key.iter()
        .map(|k| row[*k].to_string())
        .collect::<Vec<_>>()
        .join("|")
}

/// Applies row events of `table` (debezium envelope) to an empty table.
fn replay(events: &[J], schema: &str, table: &str, key: &[&str]) -> BTreeMap<String, J> {
    let mut rows: BTreeMap<String, J> = BTreeMap::new();
    for e in events {
        if e["op"] == "ddl" {
            // What a consumer does with the two statements these tests use.
            let stmt = e["ddl"].as_str().expect("ddl");
            let words: Vec<&str> = stmt.split_whitespace().collect();
            if let Some(i) = words.iter().position(|w| w.eq_ignore_ascii_case("ADD")) {
                let col = words[i + 2];
                let default = words
                    .iter()
                    .position(|w| w.eq_ignore_ascii_case("DEFAULT"))
                    .map(|d| J::String(words[d + 1].trim_matches(['\'', ';']).to_string()))
                    .unwrap_or(J::Null);
                for r in rows.values_mut() {
                    r[col] = default.clone();
                }
            } else if let Some(i) = words.iter().position(|w| w.eq_ignore_ascii_case("DROP")) {
                let col = words[i + 2].trim_end_matches(';');
                for r in rows.values_mut() {
                    r.as_object_mut().expect("row").remove(col);
                }
            }
            continue;
        }
        if e["source"]["db"] != schema || e["source"]["table"] != table {
            continue;
        }
        match e["op"].as_str() {
            Some("c") => {
                let a = &e["after"];
                assert!(
                    rows.insert(key_of(a, key), a.clone()).is_none(),
                    "insert of an existing row: {e}"
                );
            }
            Some("u") => {
                let b = &e["before"];
                let old = rows.remove(&key_of(b, key));
                assert_eq!(old.as_ref(), Some(b), "update's before-image differs: {e}");
                rows.insert(key_of(&e["after"], key), e["after"].clone());
            }
            Some("d") => {
                let b = &e["before"];
                let old = rows.remove(&key_of(b, key));
                assert_eq!(old.as_ref(), Some(b), "delete's before-image differs: {e}");
            }
            other => panic!("unexpected op {other:?}: {e}"),
        }
    }
    rows
}

/// The table as a fresh backup writes it, by key.
fn table_now(case: &Case, table: &str, key: &[&str]) -> BTreeMap<String, J> {
    let m = case.dir.join(format!("snap-{table}.toml"));
    std::fs::write(
        &m,
        format!(
            "name = \"snap\"\n[source]\nurl = \"mysql://root@127.0.0.1:{}\"\n[state]\n\
             url = \"sqlite://{dir}/snap.db\"\n[destination]\nurl = \"file://{dir}/snap\"\n\
             [[tables]]\nschema = \"{db}\"\ntable = \"{table}\"\n",
            server().port,
            dir = case.dir.display(),
            db = case.name
        ),
    )
    .expect("manifest");
    backup_ok(&m, &["--fresh"]);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(case.dir.join("snap/snap"))
        .expect("snap dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("metadata.json").exists())
        .collect();
    dirs.sort();
    let latest = dirs.last().expect("a backup");
    read_table(latest, &format!("{}.{table}", case.name))
        .into_iter()
        .map(|r| (key_of(&r, key), r))
        .collect()
}

#[test]
fn change_events_decode_exactly_like_the_snapshot() {
    let case = Case::new("tail_types");
    let start = position();
    case.sql(TORTURE);
    let snap = table_now(&case, "torture", &["id"]);
    case.sql("DELETE FROM torture WHERE id = 4");
    let m = case.manifest(&format!(
        "[[tables]]\nschema = \"{}\"\ntable = \"torture\"\n",
        case.name
    ));
    let out = tail_ok(&m, &["--from", &start, "--until", "now"]);
    assert!(out.contains("reached --until"), "{out}");
    let events = changelog(&case);
    check_seqnos(&events);
    assert_eq!(events[0]["op"], "ddl", "the CREATE TABLE comes first");
    let inserts: Vec<&J> = events.iter().filter(|e| e["op"] == "c").collect();
    assert_eq!(inserts.len(), 4);
    for e in &inserts {
        let after = &e["after"];
        let want = &snap[&key_of(after, &["id"])];
        // MariaDB does not log VIRTUAL generated columns' values: compare the others.
        for (col, v) in want.as_object().expect("row") {
            if col == "gen" {
                continue;
            }
            assert_eq!(
                &after[col], v,
                "column {col} of row {}: change event {} vs snapshot {}",
                after["id"], after[col], v
            );
        }
        assert_eq!(e["source"]["db"], case.name.as_str());
        assert_eq!(e["source"]["table"], "torture");
        assert_eq!(e["key"], serde_json::json!({"id": after["id"]}));
        assert!(
            e["source"]["gtid"]
                .as_str()
                .is_some_and(|g| g.starts_with("0-1-"))
        );
    }
    // All rows of one INSERT statement share its transaction's GTID.
    assert!(
        inserts
            .iter()
            .all(|e| e["source"]["gtid"] == inserts[0]["source"]["gtid"])
    );
    let del = events.iter().find(|e| e["op"] == "d").expect("a delete");
    assert_eq!(del["after"], J::Null);
    for (col, v) in snap[&key_of(&serde_json::json!({"id": 4}), &["id"])]
        .as_object()
        .expect("row")
    {
        if col != "gen" {
            assert_eq!(&del["before"][col], v, "delete before-image, column {col}");
        }
    }
}

/// One random transaction of 1–4 row changes on two tables; returns its SQL and the number of
/// row changes it makes (every statement changes exactly one row).
fn transaction(
    rng: &mut Lcg,
    live_a: &mut Vec<u64>,
    live_b: &mut Vec<(String, u64)>,
    next: &mut u64,
) -> (String, u64) {
    let mut sql = String::from("START TRANSACTION;");
    let n = rng.range(1, 5);
    let texts = [
        "plain",
        "😀 emoji",
        "quote '' and \\\\ back",
        "ünïcödé",
        "tab\there",
    ];
    for _ in 0..n {
        let text = texts[rng.range(0, texts.len() as u64) as usize];
        let nullable = if rng.range(0, 3) == 0 {
            "NULL".to_string()
        } else {
            rng.range(0, 1000).to_string()
        };
        match (rng.range(0, 6), live_a.is_empty(), live_b.is_empty()) {
            (0 | 1, _, _) | (2 | 3, true, _) => {
                *next += 1;
                live_a.push(*next);
                sql += &format!("INSERT INTO a VALUES ({next}, 0, '{text}', {nullable});");
            }
            (2, false, _) => {
                let id = live_a[rng.range(0, live_a.len() as u64) as usize];
                sql += &format!(
                    "UPDATE a SET v = v + 1, s = '{text}', n = {nullable} WHERE id = {id};"
                );
            }
            (3, false, _) => {
                let i = rng.range(0, live_a.len() as u64) as usize;
                let id = live_a.swap_remove(i);
                sql += &format!("DELETE FROM a WHERE id = {id};");
            }
            (4, _, _) | (5, _, true) => {
                *next += 1;
                let k = (format!("k{}", *next % 7), *next);
                sql += &format!("INSERT INTO b VALUES ('{}', {}, {nullable}, 0);", k.0, k.1);
                live_b.push(k);
            }
            _ => {
                let i = rng.range(0, live_b.len() as u64) as usize;
                if rng.range(0, 2) == 0 {
                    let (k1, k2) = live_b.swap_remove(i);
                    sql += &format!("DELETE FROM b WHERE k1 = '{k1}' AND k2 = {k2};");
                } else {
                    let (k1, k2) = &live_b[i];
                    sql += &format!(
                        "UPDATE b SET c = c + 1, payload = {nullable} WHERE k1 = '{k1}' AND k2 = {k2};"
                    );
                }
            }
        }
    }
    sql += "COMMIT;";
    (sql, n)
}

/// Tables `a` (single key) and `b` (composite key) and an `ignored` one for the kill tests.
const KILL_TABLES: &str = "CREATE TABLE a (id BIGINT PRIMARY KEY, v INT NOT NULL, s VARCHAR(50), \
     n INT NULL); CREATE TABLE b (k1 VARCHAR(20), k2 INT, payload TEXT NULL, c INT NOT NULL, \
     PRIMARY KEY (k1, k2)); CREATE TABLE ignored (id INT PRIMARY KEY)";

/// Three rounds of: start `tail`, random transactions on `a` and `b` (and `ignored`) while it
/// runs, kill -9 at a random moment, more transactions while it is down. Then a last run to
/// `--until now`. Returns the number of row changes made to `a` and `b`.
fn kill_rounds(case: &Case, m: &Path, start: &str, seed: u64) -> u64 {
    let mut rng = Lcg(seed);
    let (mut live_a, mut live_b, mut next) = (Vec::new(), Vec::new(), 0u64);
    let mut changes = 0u64;
    let mut write = |rng: &mut Lcg, n: u64, changes: &mut u64| {
        let mut sql = String::new();
        for _ in 0..n {
            let (s, c) = transaction(rng, &mut live_a, &mut live_b, &mut next);
            sql += &s;
            *changes += c;
        }
        sql += "INSERT INTO ignored VALUES (FLOOR(RAND() * 1000000000)) ON DUPLICATE KEY UPDATE id = id;";
        case.sql(&sql);
    };
    let mut first = true;
    for round in 0..3 {
        let mut args = vec![
            "tail".to_string(),
            "-m".into(),
            m.to_str().expect("path").into(),
            "--no-progress".into(),
        ];
        if first {
            args.push("--from".into());
            args.push(start.to_string());
            first = false;
        }
        let mut child = bin()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tail");
        for _ in 0..rng.range(2, 5) {
            let n = rng.range(20, 60);
            write(&mut rng, n, &mut changes);
            std::thread::sleep(Duration::from_millis(rng.range(50, 700)));
        }
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err)
                .ok();
            panic!("tail ended early in round {round}: {status}\n{err}");
        }
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        // More changes while the stream is down.
        let n = rng.range(10, 40);
        write(&mut rng, n, &mut changes);
    }
    let out = tail_ok(m, &["--until", "now"]);
    assert!(out.contains("reached --until"), "{out}");
    changes
}

#[test]
fn killed_and_restarted_tail_loses_and_repeats_nothing() {
    for seed in [7u64, 1234] {
        let case = Case::new(&format!("tail_kill_{seed}"));
        case.sql(KILL_TABLES);
        let start = position();
        let m = case.manifest(&format!(
            "[tail]\nrotate_bytes = \"2KiB\"\nrotate_interval = \"1s\"\n\n\
             [[tables]]\nschema = \"{0}\"\ntable = \"a\"\n\n[[tables]]\nschema = \"{0}\"\ntable = \"b\"\n",
            case.name
        ));
        let changes = kill_rounds(&case, &m, &start, seed);
        let events = changelog(&case);
        check_seqnos(&events);
        let row_events = events.iter().filter(|e| e["op"] != "ddl").count() as u64;
        assert_eq!(
            row_events, changes,
            "one event per row change, none lost or repeated"
        );
        let a = replay(&events, &case.name, "a", &["id"]);
        assert_eq!(a, table_now(&case, "a", &["id"]), "seed {seed}: table a");
        let b = replay(&events, &case.name, "b", &["k1", "k2"]);
        assert_eq!(
            b,
            table_now(&case, "b", &["k1", "k2"]),
            "seed {seed}: table b"
        );
        assert!(events.iter().all(|e| e["source"]["table"] != "ignored"));
        // `status` shows the saved stream position.
        let st = run(&["status", "-m", m.to_str().expect("path"), "--json"]);
        let st: J = serde_json::from_slice(&st.stdout).expect("status JSON");
        assert_eq!(st["streams"][0]["stream"], "tail");
        assert_eq!(st["streams"][0]["next_seqno"], events.len() as u64 + 1);
        // Every transaction's rows share one GTID, and GTIDs only grow.
        let mut last = 0u64;
        for e in &events {
            let g = e["source"]["gtid"].as_str().expect("gtid");
            let seq: u64 = g.rsplit('-').next().expect("seq").parse().expect("number");
            assert!(seq >= last, "GTIDs go backwards at {e}");
            last = seq;
        }
    }
}

/// Replaces the harness's file:// destination URL of manifest `m` with `keys`.
fn destination(case: &Case, m: &Path, keys: &str) {
    let text = std::fs::read_to_string(m).expect("manifest");
    let file_url = format!("url = \"file://{}/out\"", case.dir.display());
    assert!(text.contains(&file_url), "{text}");
    std::fs::write(m, text.replacen(&file_url, keys, 1)).expect("manifest");
}

/// One message read back from Kafka.
struct KafkaEvent {
    partition: i32,
    key: Vec<u8>,
    seqno_header: u64,
    stream_header: String,
    value: Vec<u8>,
}

/// Every message of `topic`, partition by partition, from the start to the end.
fn read_topic(brokers: &str, topic: &str) -> Vec<KafkaEvent> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "storagetapper-test")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = md.topics()[0].partitions().len() as i32;
    let mut out = Vec::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        if high <= low {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .expect("tpl");
        consumer.assign(&tpl).expect("assign");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        // To the partition's end (its EOF once past the high watermark), not just to the high
        // watermark: tansu reports that one too low.
        let mut next = low;
        loop {
            assert!(std::time::Instant::now() < deadline, "reading {topic}/{p}");
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = match m {
                Err(rdkafka::error::KafkaError::PartitionEOF(q)) if q == p && next >= high => break,
                Err(rdkafka::error::KafkaError::PartitionEOF(_)) => continue,
                m => m.expect("message"),
            };
            if m.partition() != p {
                continue; // still queued from the partition read before
            }
            next = m.offset() + 1;
            let header = |name: &str| -> Option<String> {
                let h = m.headers()?;
                let v = h.iter().find(|h| h.key == name).and_then(|h| h.value)?;
                Some(String::from_utf8(v.to_vec()).expect("utf8 header"))
            };
            out.push(KafkaEvent {
                partition: p,
                key: m.key().expect("key").to_vec(),
                // none on the schemas topic
                seqno_header: header("storagetapper.seqno")
                    .map_or(0, |s| s.parse().expect("seqno")),
                stream_header: header("storagetapper.stream").expect("stream header"),
                value: m.payload().expect("payload").to_vec(),
            });
        }
    }
    out
}

/// CRC-64-AVRO (Rabin), written from the Avro specification: the fingerprint in a
/// single-object encoded message's header.
fn avro_rabin(data: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    let mut table = [0u64; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut fp = i as u64;
        for _ in 0..8 {
            fp = (fp >> 1) ^ (EMPTY & 0u64.wrapping_sub(fp & 1));
        }
        *t = fp;
    }
    data.iter().fold(EMPTY, |fp, &b| {
        (fp >> 8) ^ table[((fp ^ u64::from(b)) & 0xff) as usize]
    })
}

/// An Avro single-object encoded message (`C3 01`, fingerprint, datum) decoded with the
/// writer schema found in the schemas topic by its fingerprint, as JSON.
fn avro_message(schemas: &HashMap<String, String>, bytes: &[u8]) -> J {
    assert_eq!(&bytes[..2], &[0xC3, 0x01], "single-object marker");
    let fp: [u8; 8] = bytes[2..10].try_into().expect("fingerprint");
    let hex: String = fp.iter().map(|b| format!("{b:02x}")).collect();
    let text = schemas
        .get(&hex)
        .unwrap_or_else(|| panic!("schema {hex} is not in the schemas topic"));
    let schema = apache_avro::Schema::parse_str(text).expect("schema parses");
    assert_eq!(
        avro_rabin(schema.canonical_form().as_bytes()).to_le_bytes(),
        fp,
        "fingerprint of {text}"
    );
    let mut datum = &bytes[10..];
    let v = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
        .build()
        .expect("datum reader")
        .read_value(&mut datum)
        .expect("datum decodes");
    assert!(datum.is_empty(), "bytes after the datum");
    let mut j = J::try_from(v).expect("as JSON");
    // Avro row records carry `__storagetapper_raw` (null unless a value did not fit its type).
    for image in ["before", "after"] {
        if let Some(o) = j.get_mut(image).and_then(J::as_object_mut) {
            let raw = o.remove("__storagetapper_raw");
            assert!(raw.is_none_or(|r| r.is_null()), "raw values in {image}");
        }
    }
    j
}

/// Every event of the kill tests' tables `a` and `b` read back from their topics (3
/// partitions), checked on the way: seqnos grow in each partition, the stream header is the
/// `tail` stream's, the value's seqno is the header's, the message key is the event's key and
/// its partition the Java client's for it. Returns (seqno, event) pairs in seqno order.
fn table_events(case: &Case, brokers: &str, decode: &dyn Fn(&[u8]) -> J) -> Vec<(u64, J)> {
    let mut events: Vec<(u64, J)> = Vec::new();
    for t in ["a", "b"] {
        let topic = format!("{0}.{0}.{t}", case.name);
        let got = read_topic(brokers, &topic);
        for p in 0..3 {
            let seqs: Vec<u64> = got
                .iter()
                .filter(|e| e.partition == p)
                .map(|e| e.seqno_header)
                .collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "{topic} partition {p} out of order: {seqs:?}"
            );
        }
        for e in got {
            assert_eq!(e.stream_header, format!("{}/tail", case.name));
            let value = decode(&e.value);
            assert_eq!(value["seqno"].as_u64(), Some(e.seqno_header));
            assert_eq!(value["source"]["table"], t);
            let key = decode(&e.key);
            assert_eq!(key, value["key"], "message key");
            assert_eq!(
                e.partition,
                storagetapper::kafka::partition_of(&e.key, 3),
                "partition of key {key}"
            );
            events.push((e.seqno_header, value));
        }
    }
    events.sort_by_key(|e| e.0);
    events
}

/// The kill test against a Kafka broker: every row change once, each key's changes in order
/// in one partition (the Java client's partition for the key), seqnos 1..n over the topics.
/// `format` json or avro (Avro: values and keys decoded with the schemas topic's schemas).
fn kafka_kill_test(case: &Case, brokers: &str, seed: u64, format: &str) {
    case.sql(KILL_TABLES);
    let start = position();
    let m = case.manifest_with_destination(
        "",
        &format!(
            "[[tables]]\nschema = \"{0}\"\ntable = \"a\"\n\n[[tables]]\nschema = \"{0}\"\ntable = \"b\"\n",
            case.name
        ),
    );
    destination(
        case,
        &m,
        &format!("url = \"kafka://{brokers}\"\npartitions = 3\nformat = \"{format}\""),
    );
    let changes = kill_rounds(case, &m, &start, seed);
    let mut schemas: HashMap<String, String> = HashMap::new();
    if format == "avro" {
        for e in read_topic(brokers, &format!("{}.schemas", case.name)) {
            let key = String::from_utf8(e.key).expect("hex key");
            let text = String::from_utf8(e.value).expect("schema text");
            if let Some(old) = schemas.insert(key.clone(), text.clone()) {
                assert_eq!(old, text, "two schemas under {key}");
            }
        }
        // a value and a key schema per table
        assert!(schemas.len() >= 4, "schemas: {schemas:?}");
    }
    let decode = |bytes: &[u8]| -> J {
        if format == "avro" {
            avro_message(&schemas, bytes)
        } else {
            serde_json::from_slice(bytes).expect("JSON")
        }
    };
    let events = table_events(case, brokers, &decode);
    let seqnos: Vec<u64> = events.iter().map(|e| e.0).collect();
    let want: Vec<u64> = (1..=changes).collect();
    assert_eq!(
        seqnos, want,
        "seqnos 1..{changes}, each once (lost or repeated events otherwise)"
    );
    let values: Vec<J> = events.into_iter().map(|e| e.1).collect();
    let a = replay(&values, &case.name, "a", &["id"]);
    assert_eq!(a, table_now(case, "a", &["id"]), "seed {seed}: table a");
    let b = replay(&values, &case.name, "b", &["k1", "k2"]);
    assert_eq!(
        b,
        table_now(case, "b", &["k1", "k2"]),
        "seed {seed}: table b"
    );
}

/// The kill test against librdkafka's mock cluster (in this process, so it outlives the killed
/// streams), the two tables' topics made with 3 partitions.
fn kafka_mock_kill_test(name: &str, seed: u64, format: &str) {
    let mock = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let case = Case::new(name);
    for t in ["a", "b"] {
        mock.create_topic(&format!("{0}.{0}.{t}", case.name), 3, 1)
            .expect("topic");
    }
    kafka_kill_test(&case, &mock.bootstrap_servers(), seed, format);
}

#[test]
fn kafka_stream_killed_and_restarted_loses_and_repeats_nothing() {
    kafka_mock_kill_test("kafka_kill", 99, "json");
}

/// The same with Avro values and keys (single-object encoding, schemas in `{name}.schemas`).
#[test]
fn kafka_avro_stream_killed_and_restarted_loses_and_repeats_nothing() {
    kafka_mock_kill_test("kafka_avro", 7, "avro");
}

/// Applies events in order by key only (a resumed snapshot's `r` event may come before older
/// changes of its row, so before-images are not compared): `r`, `c` and `u` set the row, `d`
/// removes it.
fn apply_by_key(events: &[J], table: &str, key: &[&str]) -> BTreeMap<String, J> {
    let mut rows = BTreeMap::new();
    for e in events.iter().filter(|e| e["source"]["table"] == table) {
        match e["op"].as_str() {
            Some("r" | "c" | "u") => {
                if e["op"] == "u" {
                    rows.remove(&key_of(&e["before"], key));
                }
                rows.insert(key_of(&e["after"], key), e["after"].clone());
            }
            Some("d") => {
                rows.remove(&key_of(&e["before"], key));
            }
            other => panic!("unexpected op {other:?}: {e}"),
        }
    }
    rows
}

/// `backup --follow` into Kafka, killed twice while sending the snapshot and once while
/// following, with transactions all along; then `tail --until now`. Every row has exactly one
/// `r` event, seqnos are unique and grow in each partition, and the events applied in seqno
/// order give the tables' final contents.
#[test]
fn kafka_backup_follow_killed_and_restarted_loses_and_repeats_nothing() {
    let mock = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let case = Case::new("kafka_snap");
    for t in ["a", "b"] {
        mock.create_topic(&format!("{0}.{0}.{t}", case.name), 3, 1)
            .expect("topic");
    }
    let brokers = mock.bootstrap_servers();
    case.sql(KILL_TABLES);
    // Keys whose byte order differs from the collation's ('K1' sorts with 'k1'): the resume
    // point is compared by the server, not by bytes.
    case.sql(
        "INSERT INTO a SELECT seq, 0, CONCAT('s', seq), NULL FROM seq_1_to_6000; \
         INSERT INTO b SELECT CONCAT(IF(seq % 2, 'K', 'k'), seq % 5), seq, NULL, 0 \
         FROM seq_1_to_3000",
    );
    let mut live_a: Vec<u64> = (1..=6000).collect();
    let mut live_b: Vec<(String, u64)> = (1..=3000u64)
        .map(|i| {
            (
                format!("{}{}", if i % 2 == 1 { "K" } else { "k" }, i % 5),
                i,
            )
        })
        .collect();
    let mut next = 10_000u64;
    let m = case.manifest_with_destination(
        "",
        &format!(
            "[snapshot]\nchunk_rows = 1000\nthrottle = {{ rows_per_sec = 6000 }}\n\n\
             [[tables]]\nschema = \"{0}\"\ntable = \"a\"\n\n[[tables]]\nschema = \"{0}\"\ntable = \"b\"\n",
            case.name
        ),
    );
    destination(
        &case,
        &m,
        &format!("url = \"kafka://{brokers}\"\npartitions = 3\nformat = \"json\""),
    );
    let mpath = m.to_str().expect("path").to_string();
    // (retried: the running backup may hold the state file's lock for a moment)
    let status = || -> J {
        for _ in 0..50 {
            let st = run(&["status", "-m", &mpath, "--json"]);
            if st.status.success() {
                return serde_json::from_slice(&st.stdout).expect("status JSON");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("status keeps failing");
    };
    let complete = || status()["backups"][0]["status"] == "complete";
    let chunks_done = || status()["backups"][0]["chunks_done"].as_u64().unwrap_or(0);
    let mut rng = Lcg(11);
    let mut logs = Vec::new();
    for round in 0..3 {
        let cmd = if complete() { "tail" } else { "backup" };
        let mut args = vec![cmd, "-m", &mpath, "--no-progress"];
        if cmd == "backup" {
            args.push("--follow");
        }
        let mut child = bin()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // Rounds 0 and 1 end inside a chunk of the snapshot (one chunk is 1000 rows, 170 ms
        // at the throttle's pace), round 2 in the follow phase.
        let done_before = chunks_done();
        let steps = if round < 2 { 2 } else { 10 };
        for _ in 0..steps {
            let mut sql = String::new();
            for _ in 0..rng.range(5, 20) {
                sql += &transaction(&mut rng, &mut live_a, &mut live_b, &mut next).0;
            }
            case.sql(&sql);
            std::thread::sleep(Duration::from_millis(rng.range(80, 300)));
        }
        if round < 2 {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while chunks_done() == done_before {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no chunk done in round {round}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(rng.range(30, 150)));
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "{cmd} ended early in round {round}"
        );
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        let mut err = String::new();
        use std::io::Read;
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .ok();
        logs.push(err);
    }
    let last = if complete() {
        run(&["tail", "-m", &mpath, "--no-progress", "--until", "now"])
    } else {
        run(&[
            "backup",
            "-m",
            &mpath,
            "--no-progress",
            "--follow",
            "--until",
            "now",
        ])
    };
    assert!(last.status.success(), "{}", text(&last));
    assert!(complete(), "the snapshot completed");
    let all_logs = logs.join("\n");
    assert!(
        all_logs.contains("Resuming the unfinished backup"),
        "a run resumed the snapshot:\n{all_logs}"
    );
    assert!(
        all_logs.contains("Rows an interrupted run delivered: not sending them again"),
        "a resumed run skipped rows delivered before the kill:\n{all_logs}"
    );

    let events = table_events(&case, &brokers, &|b| {
        serde_json::from_slice(b).expect("JSON")
    });
    for (_, value) in &events {
        assert_eq!(
            value["source"]["snapshot"] == "true",
            value["op"] == "r",
            "snapshot flag of {value}"
        );
    }
    let mut seen = std::collections::HashSet::new();
    assert!(
        events.iter().all(|e| seen.insert(e.0)),
        "a seqno used twice"
    );
    // Every snapshot row once; all of them before the change events.
    let reads: Vec<&J> = events
        .iter()
        .map(|e| &e.1)
        .filter(|v| v["op"] == "r")
        .collect();
    let mut read_keys = std::collections::HashSet::new();
    for r in &reads {
        let k = format!("{}|{}", r["source"]["table"], r["key"]);
        assert!(read_keys.insert(k.clone()), "two r events for {k}");
    }
    assert!(reads.len() >= 9000, "{} r events", reads.len());
    let first_change = events.iter().position(|e| e.1["op"] != "r");
    let last_read = events.iter().rposition(|e| e.1["op"] == "r");
    assert!(
        first_change.is_some() && last_read < first_change,
        "r events precede the change stream"
    );
    let values: Vec<J> = events.into_iter().map(|e| e.1).collect();
    assert_eq!(
        apply_by_key(&values, "a", &["id"]),
        table_now(&case, "a", &["id"]),
        "table a"
    );
    assert_eq!(
        apply_by_key(&values, "b", &["k1", "k2"]),
        table_now(&case, "b", &["k1", "k2"]),
        "table b"
    );
}

/// A cached `tansu` broker binary (never built here): `STORAGETAPPER_TANSU`, else `tansu` on
/// the PATH, else `~/.cache/storagetapper/tansu/bin/tansu`.
fn tansu() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STORAGETAPPER_TANSU") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("tansu"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let p =
            PathBuf::from(std::env::var_os("HOME")?).join(".cache/storagetapper/tansu/bin/tansu");
        p.is_file().then_some(p)
    })
}

#[test]
fn kafka_stream_against_tansu_when_cached() {
    let Some(tansu) = tansu() else {
        eprintln!(
            "SKIPPED kafka_stream_against_tansu_when_cached: no tansu binary (set \
             STORAGETAPPER_TANSU or put it on the PATH; see README)"
        );
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let mut broker = std::process::Command::new(&tansu)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "tansu did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let case = Case::new("kafka_tansu");
    // Topics are not auto-created by tansu: the stream creates them (3 partitions).
    let r = std::panic::catch_unwind(|| {
        kafka_kill_test(&case, &format!("127.0.0.1:{port}"), 5, "json");
    });
    broker.kill().ok();
    broker.wait().ok();
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn kafka_unreachable_broker_is_a_clear_error() {
    let case = Case::new("kafka_down");
    case.sql("CREATE TABLE a (id INT PRIMARY KEY)");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let m = case.manifest(&format!(
        "[[tables]]\nschema = \"{}\"\ntable = \"a\"\n",
        case.name
    ));
    destination(&case, &m, &format!("url = \"kafka://127.0.0.1:{port}\""));
    let t = std::time::Instant::now();
    let o = run(&["tail", "-m", m.to_str().expect("path"), "--no-progress"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        t.elapsed() < Duration::from_secs(40),
        "took {:?}",
        t.elapsed()
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("cannot reach Kafka at 127.0.0.1:{port}")),
        "{err}"
    );
    // And `backup` (snapshot rows as op "r" events) the same, before it records anything.
    let o = run(&["backup", "-m", m.to_str().expect("path"), "--no-progress"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains(&format!("cannot reach Kafka at 127.0.0.1:{port}")),
        "{}",
        text(&o)
    );
    let st = run(&["status", "-m", m.to_str().expect("path"), "--json"]);
    let st: J = serde_json::from_slice(&st.stdout).expect("status JSON");
    assert_eq!(st["backups"], serde_json::json!([]), "nothing recorded");
}

#[test]
fn schema_changes_mid_stream_and_while_catching_up() {
    let case = Case::new("tail_alter");
    case.sql("CREATE TABLE t (id INT PRIMARY KEY, a INT)");
    let start = position();
    let m = case.manifest(&format!(
        "[[tables]]\nschema = \"{}\"\ntable = \"t\"\n",
        case.name
    ));
    case.sql(
        "INSERT INTO t VALUES (1, 10), (2, 20), (3, 30); UPDATE t SET a = 11 WHERE id = 1; \
         ALTER TABLE t ADD COLUMN b VARCHAR(10) NOT NULL DEFAULT 'x'; \
         INSERT INTO t VALUES (4, 40, 'new'); UPDATE t SET b = 'upd', a = 21 WHERE id = 2; \
         DELETE FROM t WHERE id = 3",
    );
    // Catch up from behind the ALTER: each event carries the columns it was written with.
    tail_ok(&m, &["--from", &start, "--until", "now"]);
    let events = changelog(&case);
    let first = events.iter().find(|e| e["op"] == "c").expect("insert");
    let cols: Vec<&String> = first["after"].as_object().expect("row").keys().collect();
    assert_eq!(cols, ["id", "a"], "pre-ALTER event has the old columns");
    let ddl: Vec<&J> = events.iter().filter(|e| e["op"] == "ddl").collect();
    assert_eq!(ddl.len(), 1);
    assert!(
        ddl[0]["ddl"]
            .as_str()
            .expect("ddl")
            .contains("ADD COLUMN b")
    );
    // Live: the stream runs while a column is dropped.
    let child = bin()
        .args([
            "tail",
            "-m",
            m.to_str().expect("path"),
            "--no-progress",
            "--duration",
            "4s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(800));
    case.sql(
        "INSERT INTO t VALUES (5, 50, 'five'); ALTER TABLE t DROP COLUMN a; \
         INSERT INTO t VALUES (6, 'six'); UPDATE t SET b = CONCAT(b, '!')",
    );
    let o = child.wait_with_output().expect("wait");
    assert!(o.status.success(), "live tail failed:\n{}", text(&o));
    tail_ok(&m, &["--until", "now"]);
    let events = changelog(&case);
    check_seqnos(&events);
    let rows = replay(&events, &case.name, "t", &["id"]);
    assert_eq!(rows, table_now(&case, "t", &["id"]));
    let last = events
        .iter()
        .rev()
        .find(|e| e["op"] == "u")
        .expect("update");
    let cols: Vec<&String> = last["after"].as_object().expect("row").keys().collect();
    assert_eq!(cols, ["id", "b"], "post-DROP events have the new columns");
}

#[test]
fn sql_changelog_replays_with_the_client() {
    let case = Case::new("tail_sql");
    case.sql("CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(20), d DATETIME(3) NULL)");
    let start = position();
    let m = case.manifest_with_destination(
        "format = \"sql\"\ncompression = \"none\"",
        &format!("[[tables]]\nschema = \"{}\"\ntable = \"t\"\n", case.name),
    );
    case.sql(
        "INSERT INTO t VALUES (1, 'a''b', '2024-01-01 00:00:00.123'), (2, NULL, NULL); \
         UPDATE t SET s = 'x\\\\y' WHERE id = 2; DELETE FROM t WHERE id = 1; \
         INSERT INTO t VALUES (3, '😀', NOW(3))",
    );
    tail_ok(&m, &["--from", &start, "--until", "now"]);
    // Load the files into an empty copy of the table with the plain client.
    let copy = Case::new("tail_sql_copy");
    copy.sql("CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(20), d DATETIME(3) NULL)");
    let dir = case.out().join("changelog");
    let files = changelog_files(&dir);
    assert!(!files.is_empty());
    for f in files {
        let sql = std::fs::read_to_string(&f).expect("sql file");
        let sql = sql.replace(&format!("`{}`.", case.name), &format!("`{}`.", copy.name));
        copy.sql(&sql);
    }
    let checksum = |db: &str| {
        server()
            .sql(&format!("CHECKSUM TABLE `{db}`.t"))
            .split('\t')
            .nth(1)
            .map(str::to_string)
    };
    assert_eq!(checksum(&case.name), checksum(&copy.name));
}

/// `CHECKSUM TABLE` of `db`.`table`.
fn checksum(db: &str, table: &str) -> String {
    server()
        .sql(&format!("CHECKSUM TABLE `{db}`.`{table}`"))
        .split('\t')
        .nth(1)
        .expect("checksum")
        .trim()
        .to_string()
}

#[test]
fn backup_follow_then_restore_until_gives_the_source_at_that_position() {
    pitr("tail_pitr", "json", "debezium");
}

#[test]
fn point_in_time_restore_from_a_msgpack_changelog() {
    pitr("tail_pitr_mp", "msgpack", "storagetapper");
}

#[test]
fn point_in_time_restore_from_an_sql_changelog() {
    pitr("tail_pitr_sql", "sql", "debezium");
}

#[test]
fn point_in_time_restore_from_a_parquet_changelog() {
    pitr("tail_pitr_pq", "parquet", "debezium");
}

#[test]
fn point_in_time_restore_from_an_avro_changelog() {
    pitr("tail_pitr_av", "avro", "debezium");
}

fn pitr(name: &str, format: &str, envelope: &str) {
    let case = Case::new(name);
    case.sql(
        "CREATE TABLE a (id INT PRIMARY KEY, s VARCHAR(40), n DECIMAL(10,2) NULL); \
         CREATE TABLE b (k1 VARCHAR(10), k2 INT, v TEXT, PRIMARY KEY (k1, k2)); \
         INSERT INTO a SELECT seq, CONCAT('row ', seq), seq / 7 FROM seq_1_to_500; \
         INSERT INTO b SELECT CONCAT('k', seq % 5), seq, REPEAT('x', seq % 30) FROM seq_1_to_300",
    );
    let m = case.manifest_with_destination(
        &format!("format = \"{format}\""),
        &format!(
            "[snapshot]\nchunk_rows = 100\n\n[tail]\nrotate_bytes = \"4KiB\"\nenvelope = \"{envelope}\"\n\n\
             [[tables]]\nschema = \"{0}\"\ntable = \"a\"\n\n[[tables]]\nschema = \"{0}\"\ntable = \"b\"\n",
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
        .expect("spawn backup --follow");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while case.complete_backups().is_empty()
        || !server().sql("SHOW SLAVE HOSTS").contains("storagetapper")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "backup --follow did not start streaming"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let backup = case.complete_backups().pop().expect("backup");
    case.sql(
        "UPDATE a SET s = CONCAT(s, ' changed') WHERE id % 3 = 0; DELETE FROM a WHERE id % 11 = 0; \
         INSERT INTO a VALUES (1000, '😀 new', NULL); UPDATE b SET k2 = k2 + 1000 WHERE k2 % 7 = 0; \
         DELETE FROM b WHERE k1 = 'k3'",
    );
    let p1 = position();
    let gtid1 = server().sql("SELECT @@gtid_binlog_pos").trim().to_string();
    let (a1, b1) = (checksum(&case.name, "a"), checksum(&case.name, "b"));
    case.sql(
        "ALTER TABLE a ADD COLUMN extra INT NOT NULL DEFAULT 5; \
         UPDATE a SET extra = id WHERE id < 100; INSERT INTO a VALUES (1001, 'after alter', 1.5, 7); \
         START TRANSACTION; DELETE FROM b WHERE k2 > 1000; INSERT INTO b VALUES ('z', 1, 'in trx'); COMMIT",
    );
    let p2 = position();
    let (a2, b2) = (checksum(&case.name, "a"), checksum(&case.name, "b"));
    // Let the stream catch up, then stop it the way an operator does.
    std::thread::sleep(Duration::from_millis(1500));
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "backup --follow did not stop cleanly:\n{}",
        text(&out)
    );
    assert!(backup.join("changelog").is_dir());

    for (suffix, until, a, b) in [
        ("p1", p1.as_str(), &a1, &b1),
        ("g1", gtid1.as_str(), &a1, &b1),
        ("p2", p2.as_str(), &a2, &b2),
    ] {
        let db = format!("{name}_{suffix}");
        let db = db.as_str();
        server().sql(&format!(
            "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"
        ));
        let o = run(&[
            "restore",
            "-m",
            m.to_str().expect("path"),
            "--target",
            &format!("mysql://root@127.0.0.1:{}/{db}", server().port),
            "--until",
            until,
            "--no-progress",
        ]);
        assert!(o.status.success(), "restore --until {until}:\n{}", text(&o));
        assert!(text(&o).contains("changelog applied"), "{}", text(&o));
        assert_eq!(&checksum(db, "a"), a, "table a at {until}");
        assert_eq!(&checksum(db, "b"), b, "table b at {until}");
    }
}

#[test]
fn row_envelope_flattens_the_after_image() {
    let case = Case::new("tail_row");
    case.sql("CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(10), secret VARCHAR(10))");
    let start = position();
    let m = case.manifest(&format!(
        "[tail]\nenvelope = \"row\"\n\n[[tables]]\nschema = \"{}\"\ntable = \"t\"\n\
         exclude_columns = [\"secret\"]\n",
        case.name
    ));
    case.sql(
        "INSERT INTO t VALUES (1, 'a', 'x'), (2, 'b', 'y'); UPDATE t SET s = 'c' WHERE id = 1; \
         DELETE FROM t WHERE id = 2",
    );
    tail_ok(&m, &["--from", &start, "--until", "now"]);
    let events = changelog(&case);
    let ops: Vec<&str> = events
        .iter()
        .map(|e| e["__op"].as_str().expect("__op"))
        .collect();
    assert_eq!(ops, ["c", "c", "u", "d"]);
    assert_eq!(
        events[2],
        serde_json::json!({"id": 1, "s": "c", "__op": "u", "__seqno": 3,
            "__ts_ms": events[2]["__ts_ms"], "__deleted": "false"})
    );
    assert_eq!(events[3]["id"], 2);
    assert_eq!(events[3]["s"], "b", "a delete carries the before-image");
    assert_eq!(events[3]["__deleted"], "true");
    assert!(
        events.iter().all(|e| e.get("secret").is_none()),
        "exclude_columns applies"
    );
}

#[test]
fn where_filter_applies_to_changes() {
    let case = Case::new("tail_where");
    case.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, status VARCHAR(10), d DATE); \
         INSERT INTO t VALUES (1, 'open', '2024-01-01'), (2, 'closed', '2024-01-01'), \
         (3, 'open', '2023-01-01')",
    );
    let start = position();
    let m = case.manifest(&format!(
        "[[tables]]\nschema = \"{}\"\ntable = \"t\"\n\
         where = \"status = 'open' AND d >= '2024-01-01'\"\n",
        case.name
    ));
    case.sql(
        "INSERT INTO t VALUES (10, 'open', '2024-05-05'), (11, 'closed', '2024-05-05'); \
         UPDATE t SET status = 'closed' WHERE id = 1; UPDATE t SET status = 'open' WHERE id = 2; \
         UPDATE t SET d = '2025-01-01' WHERE id = 10; UPDATE t SET d = '2024-02-02' WHERE id = 3; \
         DELETE FROM t WHERE id = 11; DELETE FROM t WHERE id = 2",
    );
    tail_ok(&m, &["--from", &start, "--until", "now"]);
    let events = changelog(&case);
    let got: Vec<(String, i64)> = events
        .iter()
        .map(|e| {
            let row = if e["after"].is_null() {
                &e["before"]
            } else {
                &e["after"]
            };
            (
                e["op"].as_str().expect("op").to_string(),
                row["id"].as_i64().expect("id"),
            )
        })
        .collect();
    let want: Vec<(String, i64)> = [
        ("c", 10), // inserted inside the filter
        ("d", 1),  // left the filter: a delete
        ("c", 2),  // entered it: an insert
        ("u", 10), // stayed inside
        ("c", 3),  // entered it by its date
        ("d", 2),  // deleted while inside
    ]
    .iter()
    .map(|(o, i)| (o.to_string(), *i))
    .collect();
    assert_eq!(got, want);
}

fn python() -> PathBuf {
    let p = std::env::var_os("STORAGETAPPER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python"));
    assert!(p.exists(), "{} is missing: run `make pydeps`", p.display());
    p
}

/// Does a JSON-changelog value equal a value read by fastavro (tagged by tests/readers.py)?
fn same_value(json: &J, tagged: &J) -> bool {
    let tag = tagged[0].as_str().unwrap_or("");
    let text = tagged[1].as_str().unwrap_or("");
    match json {
        J::Null => tag == "null",
        J::Number(n) => tag == "int" && n.to_string() == text,
        J::String(s) => match tag {
            "ts_utc" => s.replace('T', " ").trim_end_matches('Z') == text,
            "str" | "dec" | "ts" | "date" => s == text,
            _ => false,
        },
        _ => false,
    }
}

#[test]
fn avro_changelog_reads_back_with_fastavro_across_schema_changes() {
    typed_changelog("avro", "tail_avro");
}

#[test]
fn parquet_changelog_reads_back_with_pyarrow_across_schema_changes() {
    typed_changelog("parquet", "tail_parquet");
}

/// A changelog in a typed format (`avro`, `parquet`), read by an independent reader, equals the
/// JSON changelog of the same binlog range, across a table first touched mid-file and an ALTER.
fn typed_changelog(format: &str, name: &str) {
    let case = Case::new(name);
    case.sql(
        "CREATE TABLE a (id INT PRIMARY KEY, s VARCHAR(20), d DECIMAL(8,2), dt DATETIME(6), \
         ts TIMESTAMP(6) NULL); CREATE TABLE b (id INT PRIMARY KEY, v VARCHAR(10))",
    );
    let start = position();
    // Table a, then b first touched in the same file, then a new version of a (ALTER): each
    // new version makes the Avro file start over with it in the schema.
    case.sql(
        "INSERT INTO a VALUES (1, 'one', 1.50, '2024-01-01 00:00:01.5', '2024-02-29 12:00:00'), \
         (2, NULL, NULL, NULL, NULL); INSERT INTO b VALUES (1, 'b1'); \
         UPDATE a SET s = 'uno' WHERE id = 1; ALTER TABLE a ADD COLUMN extra INT; \
         INSERT INTO a VALUES (3, 'three', -3.25, '2000-01-01', '2001-01-01 01:01:01.000001', 7); \
         DELETE FROM a WHERE id = 2; UPDATE b SET v = 'b2'",
    );
    let end = position();
    let json_m = case.manifest_with_destination(
        "format = \"json\"",
        &format!("[[tables]]\nschema = \"{}\"\ntable = \"*\"\n", case.name),
    );
    tail_ok(&json_m, &["--from", &start, "--until", &end]);
    let want = changelog(&case);
    // The same range in the typed format, into another job.
    let avro = Case::new(&format!("{name}_b"));
    let avro_m = avro.manifest_with_destination(
        &format!("format = \"{format}\""),
        &format!("[[tables]]\nschema = \"{}\"\ntable = \"*\"\n", case.name),
    );
    let out = tail_ok(&avro_m, &["--from", &start, "--until", &end]);
    assert!(out.contains(&format!("{} events", want.len())), "{out}");
    assert!(
        out.contains("reading again with it in the file's schema"),
        "{out}"
    );
    let files = changelog_files(&avro.out().join("changelog"));
    let suffix = if format == "avro" {
        ".avro.zst"
    } else {
        ".parquet"
    };
    assert!(files.iter().all(|f| f.to_string_lossy().ends_with(suffix)));
    let o = std::process::Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers.py"))
        .arg(format!("{format}-events"))
        .args(&files)
        .output()
        .expect("python");
    assert!(
        o.status.success(),
        "{format} reader:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let got: Vec<J> = String::from_utf8(o.stdout)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["op"], w["op"], "{g} vs {w}");
        assert_eq!(g["seqno"], w["seqno"]);
        assert_eq!(g["gtid"], w["source"]["gtid"]);
        if w["op"] == "ddl" {
            assert_eq!(g["ddl"], w["ddl"]);
            continue;
        }
        for image in ["before", "after", "key"] {
            let (gi, wi) = (&g[image], &w[image]);
            assert_eq!(gi.is_null(), wi.is_null(), "{image} of {w}");
            let Some(wi) = wi.as_object() else { continue };
            let gi = gi.as_object().expect("image");
            assert_eq!(gi.len(), wi.len(), "{image} columns of {w} vs {g}");
            for (col, v) in wi {
                assert!(
                    same_value(v, &gi[col]),
                    "{image}.{col}: json {v} vs {format} {}",
                    gi[col]
                );
            }
        }
    }
}

#[test]
fn max_events_and_sigterm_stop_at_a_transaction_boundary() {
    let case = Case::new("tail_stop");
    case.sql("CREATE TABLE t (id INT PRIMARY KEY, v INT)");
    let start = position();
    let m = case.manifest(&format!(
        "[[tables]]\nschema = \"{}\"\ntable = \"t\"\n",
        case.name
    ));
    // Transactions of 3 rows: --max-events 4 stops after the second (6 events).
    case.sql(
        "INSERT INTO t VALUES (1,1),(2,2),(3,3); INSERT INTO t VALUES (4,4),(5,5),(6,6); \
         INSERT INTO t VALUES (7,7),(8,8),(9,9)",
    );
    let out = tail_ok(&m, &["--from", &start, "--max-events", "4"]);
    assert!(out.contains("reached --max-events: 6 events"), "{out}");
    assert_eq!(changelog(&case).len(), 6);
    // A running stream stopped by SIGTERM makes its file durable, saves and exits 0.
    let child = bin()
        .args(["tail", "-m", m.to_str().expect("path"), "--no-progress"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(1500));
    case.sql("UPDATE t SET v = v + 1 WHERE id <= 2");
    std::thread::sleep(Duration::from_millis(1000));
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let o = child.wait_with_output().expect("wait");
    assert!(o.status.success(), "SIGTERM:\n{}", text(&o));
    assert!(
        text(&o).contains("stopped by signal: 5 events"),
        "{}",
        text(&o)
    );
    let events = changelog(&case);
    check_seqnos(&events);
    assert_eq!(events.len(), 11);
    assert_eq!(events[10]["op"], "u");
}

#[test]
fn parquet_row_envelope_reads_back_with_pyarrow() {
    let case = Case::new("tail_pq_row");
    case.sql("CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(10), d DECIMAL(6,2))");
    let start = position();
    let m = case.manifest_with_destination(
        "format = \"parquet\"",
        &format!(
            "[tail]\nenvelope = \"row\"\n\n[[tables]]\nschema = \"{}\"\ntable = \"t\"\n",
            case.name
        ),
    );
    case.sql(
        "INSERT INTO t VALUES (1, 'a', 1.25), (2, 'b', NULL); UPDATE t SET s = 'c' WHERE id = 1; \
         DELETE FROM t WHERE id = 2",
    );
    tail_ok(&m, &["--from", &start, "--until", "now"]);
    let files = changelog_files(&case.out().join("changelog"));
    let script = "import sys, json, pyarrow.parquet as pq\n\
        for f in sys.argv[1:]:\n\
        \x20   for r in pq.read_table(f).to_pylist():\n\
        \x20       img = [v for k, v in r.items() if not k.startswith('__') and v is not None]\n\
        \x20       print(json.dumps({'op': r['__op'], 'seqno': r['__seqno'], 'deleted': r['__deleted'],\n\
        \x20           'table': r['__table'], 'row': {k: str(v) for k, v in img[0].items()} if img else None}))\n";
    let o = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .args(&files)
        .output()
        .expect("python");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: Vec<J> = String::from_utf8(o.stdout)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let table = format!("{}.t", case.name);
    assert_eq!(
        got,
        vec![
            serde_json::json!({"op": "c", "seqno": 1, "deleted": "false", "table": table,
                "row": {"id": "1", "s": "a", "d": "1.25", "__storagetapper_raw": "None"}}),
            serde_json::json!({"op": "c", "seqno": 2, "deleted": "false", "table": table,
                "row": {"id": "2", "s": "b", "d": "None", "__storagetapper_raw": "None"}}),
            serde_json::json!({"op": "u", "seqno": 3, "deleted": "false", "table": table,
                "row": {"id": "1", "s": "c", "d": "1.25", "__storagetapper_raw": "None"}}),
            serde_json::json!({"op": "d", "seqno": 4, "deleted": "true", "table": table,
                "row": {"id": "2", "s": "b", "d": "None", "__storagetapper_raw": "None"}}),
        ]
    );
}
