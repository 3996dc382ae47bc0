//! Kafka as a change-event destination (`[destination] url = "kafka://…"`): one topic per
//! table from a template, the primary key as the message key, an idempotent producer with
//! `acks=all`, and exactly-once delivery across kills.
//!
//! Invariants:
//! - A message's partition is chosen here, from its key (Java's murmur2, as Kafka's own
//!   clients do), so a row's changes stay in order in one partition and a restart sends an
//!   event to the partition it went to before.
//! - Every message carries the stream's name (`storagetapper.stream`) and the event's seqno
//!   (`storagetapper.seqno`) as headers. With the idempotent producer a partition's log holds
//!   a prefix of what was sent to it, so on the first message to a partition in a run the
//!   highest seqno of this stream already there is read back; events at or below it are not
//!   sent again. The stream position is saved only after the broker acknowledged every event
//!   before it ([`KafkaWriter::flush`]). Together: nothing lost, nothing twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::manifest::{Compression, KafkaTarget};

/// Header naming the stream that wrote a message (`<job>/<stream>`).
pub const STREAM_HEADER: &str = "storagetapper.stream";
/// Header holding a message's seqno (decimal).
pub const SEQNO_HEADER: &str = "storagetapper.seqno";
/// Header holding the transaction's GTID.
pub const GTID_HEADER: &str = "storagetapper.gtid";
/// Header of a snapshot row (`op: "r"`): the backup id it belongs to.
pub const SNAPSHOT_HEADER: &str = "storagetapper.snapshot";
/// Header of a snapshot row: its key in the snapshot's read order (JSON of typed values), so
/// a resumed snapshot knows how far each partition got.
pub const AFTER_HEADER: &str = "storagetapper.after";

/// How far back from a partition's end the last message of this stream is looked for.
const SCAN_LIMIT: i64 = 100_000;
/// Bound on broker requests made while starting (metadata, watermarks, reading back).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A header's value as text.
fn header_text(v: Option<&[u8]>) -> Option<&str> {
    v.and_then(|v| std::str::from_utf8(v).ok())
}

/// Kafka's default partitioner: murmur2 (Kafka's variant) of the key.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ u32::try_from(data.len()).unwrap_or(u32::MAX);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of `key` among `partitions`, as Kafka's Java producer picks it.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    let n = u32::try_from(partitions.max(1)).unwrap_or(1);
    i32::try_from((murmur2(key) & 0x7fff_ffff) % n).unwrap_or(0)
}

/// Fills a topic template.
pub fn topic_name(template: &str, name: &str, schema: &str, table: &str) -> String {
    template
        .replace("{name}", name)
        .replace("{schema}", schema)
        .replace("{table}", table)
}

/// Delivery reports: the first failure is kept, acknowledgements counted.
#[derive(Default)]
struct Reports {
    failed: Mutex<Option<String>>,
    acked: AtomicU64,
}

struct Ctx(Arc<Reports>);

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "{fac}: {log_message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", "{fac}: {log_message}")
            }
            _ => tracing::debug!(target: "librdkafka", "{fac}: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", %error, "{reason}");
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();

    fn delivery(&self, r: &DeliveryResult<'_>, (): ()) {
        match r {
            Ok(_) => {
                self.0.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, m)) => {
                if let Ok(mut f) = self.0.failed.lock()
                    && f.is_none()
                {
                    *f = Some(format!(
                        "topic {} partition {}: {e}",
                        m.topic(),
                        m.partition()
                    ));
                }
            }
        }
    }
}

/// A topic as this run knows it.
struct Topic {
    partitions: i32,
    /// Per partition: this stream's highest seqno already in it (0: none).
    floor: Vec<u64>,
    /// Per partition: the snapshot headers of that last message, if it is a snapshot row.
    marks: Vec<Option<SnapshotMark>>,
}

/// Where a snapshot got to in one partition: the last snapshot row of this stream in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMark {
    /// Backup id ([`SNAPSHOT_HEADER`]).
    pub backup: String,
    /// The row's key in read order ([`AFTER_HEADER`]).
    pub after: String,
}

/// What an earlier run left in a topic's partitions.
#[derive(Debug, Clone)]
pub struct TopicState {
    /// Partitions.
    pub partitions: i32,
    /// Per partition: this stream's highest seqno in it (0: none).
    pub floor: Vec<u64>,
    /// Per partition: the snapshot headers of that message.
    pub marks: Vec<Option<SnapshotMark>>,
}

/// What a [`KafkaWriter::send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Handed to the producer.
    Queued,
    /// Already in the partition from an earlier run: not sent again.
    Skipped,
}

/// The producer of a change stream.
pub struct KafkaWriter {
    target: KafkaTarget,
    stream: String,
    producer: ThreadedProducer<Ctx>,
    reports: Arc<Reports>,
    topics: HashMap<String, Topic>,
    /// Messages handed to the producer.
    pub queued: u64,
    /// Messages not sent because an earlier run had delivered them.
    pub skipped: u64,
}

fn base_config(target: &KafkaTarget) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &target.brokers)
        .set("socket.connection.setup.timeout.ms", "10000")
        .set_log_level(RDKafkaLogLevel::Warning);
    c
}

impl KafkaWriter {
    /// Connects to the brokers (one metadata request, bounded) as stream `stream`.
    ///
    /// # Errors
    /// When the brokers cannot be reached or the producer cannot be built.
    pub fn connect(
        target: &KafkaTarget,
        stream: &str,
        compression: Compression,
    ) -> Result<KafkaWriter> {
        let mut c = base_config(target);
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.kbytes", "65536")
            .set("queue.buffering.max.messages", "200000")
            .set("message.timeout.ms", "120000")
            .set(
                "compression.type",
                match compression {
                    Compression::Zstd => "zstd",
                    Compression::None => "none",
                },
            )
            .set("client.id", format!("storagetapper-{stream}"));
        for (k, v) in &target.producer {
            c.set(k, v);
        }
        let reports = Arc::new(Reports::default());
        let producer: ThreadedProducer<Ctx> = c
            .create_with_context(Ctx(Arc::clone(&reports)))
            .context("cannot create the Kafka producer")?;
        let w = KafkaWriter {
            target: target.clone(),
            stream: stream.to_string(),
            producer,
            reports,
            topics: HashMap::new(),
            queued: 0,
            skipped: 0,
        };
        tokio::task::block_in_place(|| {
            w.producer
                .client()
                .fetch_metadata(None, REQUEST_TIMEOUT)
                .map(|_| ())
        })
        .map_err(|e| anyhow!("cannot reach Kafka at {}: {e}", target.brokers))?;
        Ok(w)
    }

    /// The topic of a table's events.
    pub fn table_topic(&self, name: &str, schema: &str, table: &str) -> String {
        topic_name(&self.target.topic, name, schema, table)
    }

    /// The topic of schema changes.
    pub fn ddl_topic(&self, name: &str, schema: &str) -> String {
        topic_name(&self.target.ddl_topic, name, schema, "")
    }

    /// Sends one event (unless an earlier run delivered it already).
    ///
    /// # Errors
    /// When the topic cannot be prepared, a delivery failed, or the producer refuses the
    /// message.
    pub async fn send(
        &mut self,
        topic: &str,
        key: &[u8],
        value: &[u8],
        seqno: u64,
        gtid: &str,
        snapshot: Option<&SnapshotMark>,
    ) -> Result<Sent> {
        self.check()?;
        let t = self.topic(topic)?;
        let partition = partition_of(key, t.partitions);
        let floor = t
            .floor
            .get(usize::try_from(partition).unwrap_or(0))
            .copied()
            .unwrap_or(0);
        if seqno <= floor {
            self.skipped += 1;
            return Ok(Sent::Skipped);
        }
        let mut seq_text = itoa::Buffer::new();
        let seq = seq_text.format(seqno);
        let mut headers = OwnedHeaders::new_with_capacity(5)
            .insert(Header {
                key: STREAM_HEADER,
                value: Some(self.stream.as_bytes()),
            })
            .insert(Header {
                key: SEQNO_HEADER,
                value: Some(seq.as_bytes()),
            })
            .insert(Header {
                key: GTID_HEADER,
                value: Some(gtid.as_bytes()),
            });
        if let Some(s) = snapshot {
            headers = headers
                .insert(Header {
                    key: SNAPSHOT_HEADER,
                    value: Some(s.backup.as_bytes()),
                })
                .insert(Header {
                    key: AFTER_HEADER,
                    value: Some(s.after.as_bytes()),
                });
        }
        self.produce(topic, partition, key, value, headers)
            .await
            .with_context(|| format!("cannot send seqno {seqno} to topic `{topic}`"))?;
        self.queued += 1;
        Ok(Sent::Queued)
    }

    /// A topic as this run knows it, prepared (found or created, its partitions' last
    /// messages of this stream read back) on first use.
    fn topic(&mut self, topic: &str) -> Result<&Topic> {
        if !self.topics.contains_key(topic) {
            let t = tokio::task::block_in_place(|| self.prepare(topic))
                .with_context(|| format!("Kafka topic `{topic}`"))?;
            self.topics.insert(topic.to_string(), t);
        }
        self.topics
            .get(topic)
            .ok_or_else(|| anyhow!("topic {topic} vanished"))
    }

    /// What earlier runs of this stream left in `topic` (read when the topic is first used in
    /// this run).
    ///
    /// # Errors
    /// When the topic cannot be found, created or read back.
    pub fn topic_state(&mut self, topic: &str) -> Result<TopicState> {
        let t = self.topic(topic)?;
        Ok(TopicState {
            partitions: t.partitions,
            floor: t.floor.clone(),
            marks: t.marks.clone(),
        })
    }

    /// Sends an Avro writer schema to the schemas topic, keyed by its fingerprint (hex). Not
    /// deduplicated: a restart may send a schema again, with the same key and value.
    ///
    /// # Errors
    /// As [`KafkaWriter::send`].
    pub async fn send_schema(
        &mut self,
        topic: &str,
        fingerprint: &[u8; 8],
        schema: &str,
    ) -> Result<()> {
        self.check()?;
        let partitions = match self.topics.get(topic) {
            Some(t) => t.partitions,
            None => {
                let partitions = tokio::task::block_in_place(|| self.ensure(topic))
                    .with_context(|| format!("Kafka topic `{topic}`"))?;
                self.topics.insert(
                    topic.to_string(),
                    Topic {
                        partitions,
                        floor: Vec::new(),
                        marks: Vec::new(),
                    },
                );
                partitions
            }
        };
        let key: String = fingerprint.iter().map(|b| format!("{b:02x}")).collect();
        let partition = partition_of(key.as_bytes(), partitions);
        let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
            key: STREAM_HEADER,
            value: Some(self.stream.as_bytes()),
        });
        self.produce(topic, partition, key.as_bytes(), schema.as_bytes(), headers)
            .await
            .with_context(|| format!("cannot send schema {key} to topic `{topic}`"))
    }

    /// The topic of Avro writer schemas.
    pub fn schema_topic(&self, name: &str) -> String {
        topic_name(&self.target.schema_topic, name, "", "")
    }

    /// Hands one message to the producer, waiting while its queue is full.
    async fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: &[u8],
        headers: OwnedHeaders,
    ) -> Result<()> {
        let mut record = BaseRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(value)
            .headers(headers);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.check()?;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Waits until the broker acknowledged every message sent so far.
    ///
    /// # Errors
    /// When a message was not delivered (the position must then not be saved).
    pub async fn flush(&mut self) -> Result<()> {
        self.check()?;
        loop {
            let r = tokio::task::block_in_place(|| self.producer.flush(Duration::from_secs(10)));
            match r {
                Ok(()) => break,
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {
                    self.check()?;
                    tracing::warn!(
                        brokers = %self.target.brokers,
                        in_flight = self.producer.in_flight_count(),
                        "Kafka has not acknowledged every event yet; waiting."
                    );
                }
                Err(e) => bail!("Kafka at {}: {e}", self.target.brokers),
            }
        }
        self.check()
    }

    /// Messages the broker acknowledged.
    pub fn acked(&self) -> u64 {
        self.reports.acked.load(Ordering::Relaxed)
    }

    fn check(&self) -> Result<()> {
        let failed = self
            .reports
            .failed
            .lock()
            .map_err(|_| anyhow!("delivery report lock poisoned"))?
            .clone();
        match failed {
            Some(f) => bail!(
                "Kafka at {} did not take an event: {f}",
                self.target.brokers
            ),
            None => Ok(()),
        }
    }

    /// Finds (or creates) the topic and reads back this stream's last seqno per partition.
    fn prepare(&self, topic: &str) -> Result<Topic> {
        let partitions = self.ensure(topic)?;
        let consumer: BaseConsumer = base_config(&self.target)
            .set("group.id", format!("storagetapper-{}", self.stream))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .context("cannot create a Kafka consumer")?;
        let mut floor = Vec::with_capacity(usize::try_from(partitions).unwrap_or(1));
        let mut marks = Vec::with_capacity(floor.capacity());
        for p in 0..partitions {
            let (seqno, mark) = self.last_seqno(&consumer, topic, p)?;
            floor.push(seqno);
            marks.push(mark);
        }
        if floor.iter().any(|&f| f > 0) {
            tracing::info!(
                topic,
                last_seqno = ?floor,
                "Events up to these seqnos are already in the topic's partitions; not sending them again."
            );
        }
        Ok(Topic {
            partitions,
            floor,
            marks,
        })
    }

    /// Finds the topic (creating it if missing): its partition count.
    fn ensure(&self, topic: &str) -> Result<i32> {
        let mut partitions = self.partition_count(topic)?;
        if partitions == 0 {
            self.create(topic)?;
            for _ in 0..50 {
                partitions = self.partition_count(topic)?;
                if partitions > 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if partitions == 0 {
                bail!("created, but the broker does not list it");
            }
        }
        Ok(partitions)
    }

    fn partition_count(&self, topic: &str) -> Result<i32> {
        let md = self
            .producer
            .client()
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|e| anyhow!("metadata: {e}"))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Ok(0);
        };
        match t.error() {
            None => Ok(i32::try_from(t.partitions().len())?),
            Some(e) => {
                let code = RDKafkaErrorCode::from(e);
                if matches!(
                    code,
                    RDKafkaErrorCode::UnknownTopicOrPartition
                        | RDKafkaErrorCode::UnknownTopic
                        | RDKafkaErrorCode::LeaderNotAvailable
                ) {
                    Ok(0)
                } else {
                    bail!("metadata: {code}")
                }
            }
        }
    }

    fn create(&self, topic: &str) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = base_config(&self.target)
            .create()
            .context("cannot create a Kafka admin client")?;
        let replication = TopicReplication::Fixed(self.target.replication_factor);
        let new = NewTopic::new(topic, self.target.partitions, replication);
        let opts = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let rt = tokio::runtime::Handle::current();
        let results = rt
            .block_on(admin.create_topics([&new], &opts))
            .map_err(|e| anyhow!("cannot create it: {e}"))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, e)) => bail!(
                    "cannot create it ({e}); create it yourself or give `partitions` / \
                     `replication_factor` the broker accepts"
                ),
            }
        }
        tracing::info!(
            topic,
            partitions = self.target.partitions,
            "Created the Kafka topic."
        );
        Ok(())
    }

    /// This stream's highest seqno in a partition (0: none), looking back from its end, and
    /// the snapshot headers of that message.
    fn last_seqno(
        &self,
        consumer: &BaseConsumer,
        topic: &str,
        partition: i32,
    ) -> Result<(u64, Option<SnapshotMark>)> {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map_err(|e| anyhow!("partition {partition}: {e}"))?;
        let mut end = high;
        while end > low && high - end < SCAN_LIMIT {
            let start = (end - 1000).max(low);
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Offset(start))
                .map_err(|e| anyhow!("partition {partition}: {e}"))?;
            consumer
                .assign(&tpl)
                .map_err(|e| anyhow!("partition {partition}: {e}"))?;
            let mut best = 0u64;
            let mut best_mark = None;
            let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
            let mut next = start;
            // The last window reads to the partition's real end (its EOF), not to the high
            // watermark: a broker may report that one too low (tansu 0.6 gives the last
            // batch's base offset + 1), and a message past it must still count.
            let last_window = end == high;
            while next < end || last_window {
                if std::time::Instant::now() > deadline {
                    bail!("partition {partition}: cannot read offsets {start}..{end} back");
                }
                let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                    continue;
                };
                let m = match m {
                    Err(KafkaError::PartitionEOF(p))
                        if p == partition && last_window && next >= end =>
                    {
                        break;
                    }
                    Err(KafkaError::PartitionEOF(_)) => continue,
                    m => m.map_err(|e| anyhow!("partition {partition}: {e}"))?,
                };
                if m.partition() != partition || m.topic() != topic {
                    // Still queued from the partition read before this one.
                    continue;
                }
                next = m.offset() + 1;
                if m.offset() >= end && !last_window {
                    break;
                }
                if let Some(h) = m.headers() {
                    let mut ours = false;
                    let mut seq = None;
                    let (mut backup, mut after) = (None, None);
                    for hd in h.iter() {
                        match hd.key {
                            STREAM_HEADER => ours = hd.value == Some(self.stream.as_bytes()),
                            SEQNO_HEADER => {
                                seq = header_text(hd.value).and_then(|v| v.parse::<u64>().ok());
                            }
                            SNAPSHOT_HEADER => backup = header_text(hd.value),
                            AFTER_HEADER => after = header_text(hd.value),
                            _ => {}
                        }
                    }
                    if ours
                        && let Some(s) = seq
                        && s > best
                    {
                        best = s;
                        best_mark = backup.zip(after).map(|(b, a)| SnapshotMark {
                            backup: b.to_string(),
                            after: a.to_string(),
                        });
                    }
                }
            }
            if best > 0 {
                return Ok((best, best_mark));
            }
            end = start;
        }
        if end > low {
            tracing::warn!(
                topic,
                partition,
                "No event of this stream in the last {SCAN_LIMIT} messages of the partition: \
                 events delivered before a kill may be delivered again."
            );
        }
        Ok((0, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // librdkafka's unit test vectors (Java's Utils.murmur2).
        let cases: [(&[u8], u32); 5] = [
            (b"kafka", 0xd067_cf64),
            (b"giberish123456789", 0x8f55_2b0c),
            (b"1234", 0x9fc9_7b14),
            (b"234", 0xe7c0_09ca),
            (b"", 0x106e_08d9),
        ];
        for (k, want) in cases {
            assert_eq!(murmur2(k), want, "{}", String::from_utf8_lossy(k));
        }
        assert_eq!(partition_of(b"kafka", 1), 0);
        assert!((0..7).contains(&partition_of(b"x", 7)));
    }

    #[test]
    fn topic_templates() {
        assert_eq!(
            topic_name("{name}.{schema}.{table}", "job", "shop", "orders"),
            "job.shop.orders"
        );
        assert_eq!(topic_name("{name}", "job", "shop", ""), "job");
    }
}
