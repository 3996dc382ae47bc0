//! The manifest: the serde model of the TOML file (`deny_unknown_fields`) and its validation into
//! a [`Plan`] before any I/O touches a server or a destination.
//!
//! Invariants: every error names the manifest file, the line and the key; secrets are read only
//! from `password_env` / `password_file` and never appear in `Debug` output or messages.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crypto::Recipients;

/// An error in the manifest, located at a file, a line and a key.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: `{key}`: {message}", line = line.map_or_else(|| "?".to_string(), |l| l.to_string()))]
pub struct ManifestError {
    /// The manifest file.
    pub file: PathBuf,
    /// 1-based line of the key, when known.
    pub line: Option<usize>,
    /// Dotted path of the offending key, e.g. `tables[1].columns`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// The TOML document as written by the operator.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Job name: destination prefix and state key.
    pub name: String,
    /// Where rows are read from.
    pub source: SourceConfig,
    /// Where progress is kept.
    #[serde(default)]
    pub state: StateConfig,
    /// Where files go and how they are encoded.
    pub destination: DestinationConfig,
    /// Snapshot settings.
    #[serde(default)]
    pub snapshot: SnapshotConfig,
    /// Change-stream settings (`tail` and `backup --follow`).
    #[serde(default)]
    pub tail: TailConfig,
    /// The tables to back up; globs allowed.
    #[serde(default)]
    pub tables: Vec<TableConfig>,
}

/// `[source]`.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `mysql://user@host:port` (no password in the URL).
    pub url: String,
    /// Name of the environment variable holding the password.
    pub password_env: Option<String>,
    /// File whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// Where the binlog is read from (default: `url`).
    pub binlog_url: Option<String>,
    /// Server id used when dumping the binlog.
    pub server_id: Option<u32>,
}

impl fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceConfig")
            .field("url", &self.url)
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .field("binlog_url", &self.binlog_url)
            .field("server_id", &self.server_id)
            .finish()
    }
}

/// `[state]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// `sqlite:///path/to/file.db`; default: `<state dir>/storagetapper/<name>.db`.
    pub url: Option<String>,
}

/// Row encoding of the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON lines.
    #[default]
    Json,
    /// Avro object container files.
    Avro,
    /// MessagePack, one map per row.
    Msgpack,
    /// SQL INSERT statements.
    Sql,
    /// Parquet.
    Parquet,
}

impl Format {
    /// File extension of a chunk in this format.
    pub fn ext(self) -> &'static str {
        match self {
            Format::Json => "jsonl",
            Format::Avro => "avro",
            Format::Msgpack => "msgpack",
            Format::Sql => "sql",
            Format::Parquet => "parquet",
        }
    }
}

/// Compression applied after encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd stream.
    #[default]
    Zstd,
    /// Plain.
    None,
}

/// `[destination]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// `file:///abs/path` (or `file://relative/to/manifest`).
    pub url: String,
    /// Row encoding.
    #[serde(default)]
    pub format: Format,
    /// Compression.
    #[serde(default)]
    pub compression: Compression,
    /// zstd level (1–22, default 3).
    pub compression_level: Option<i32>,
    /// age recipients (`age1…`); files are encrypted to all of them.
    pub encrypt_to: Option<Vec<String>>,
    /// A file of age recipients, one per line (`#` comments allowed).
    pub encrypt_to_file: Option<PathBuf>,
    /// s3: endpoint URL (default `https://s3.<region>.amazonaws.com`).
    pub endpoint: Option<String>,
    /// s3: region (default `us-east-1`).
    pub region: Option<String>,
    /// s3: name of the environment variable holding the access key id (default
    /// `AWS_ACCESS_KEY_ID`).
    pub access_key_env: Option<String>,
    /// s3: name of the environment variable holding the secret access key (default
    /// `AWS_SECRET_ACCESS_KEY`).
    pub secret_key_env: Option<String>,
    /// s3: name of the environment variable holding a session token (default
    /// `AWS_SESSION_TOKEN` when the default key variables are used).
    pub session_token_env: Option<String>,
    /// s3: path-style requests (`endpoint/bucket/key`, the default) or virtual-hosted ones
    /// (`bucket.endpoint/key`) when false.
    pub path_style: Option<bool>,
    /// s3: storage class of new objects (`STANDARD`, `STANDARD_IA`, `GLACIER_IR` …).
    pub storage_class: Option<String>,
    /// s3: server-side encryption, `AES256` or `aws:kms`.
    pub server_side_encryption: Option<String>,
    /// s3: KMS key id for `server_side_encryption = "aws:kms"` (default: the AWS-managed key).
    pub sse_kms_key_id: Option<String>,
    /// webhdfs: the user name sent as `user.name` (simple authentication).
    pub user: Option<String>,
    /// s3, webhdfs: size of one uploaded part / appended piece (default 8 MiB; at least 5 MiB
    /// on S3).
    pub part_size: Option<ByteSize>,
    /// kafka: topic of a table's change events, a template of `{name}`, `{schema}` and
    /// `{table}` (default `{name}.{schema}.{table}`).
    pub topic: Option<String>,
    /// kafka: topic of schema changes (default `{name}`, as Debezium's schema change topic).
    pub ddl_topic: Option<String>,
    /// kafka, `format = "avro"`: topic of the writer schemas, keyed by fingerprint (default
    /// `{name}.schemas`).
    pub schema_topic: Option<String>,
    /// kafka: partitions of a topic the stream creates (default 1).
    pub partitions: Option<i32>,
    /// kafka: replication factor of a topic the stream creates (default: the broker's).
    pub replication_factor: Option<i32>,
    /// kafka: extra librdkafka producer properties (`"linger.ms" = "20"` …); the ones the
    /// stream's guarantees rest on cannot be changed.
    pub producer: Option<BTreeMap<String, String>>,
}

/// `[snapshot]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Worker connections reading chunks in parallel.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Rows per chunk (per file).
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: u64,
    /// Limits across all workers; 0 = unlimited.
    #[serde(default)]
    pub throttle: ThrottleConfig,
}

fn default_threads() -> usize {
    4
}
fn default_chunk_rows() -> u64 {
    100_000
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            threads: default_threads(),
            chunk_rows: default_chunk_rows(),
            throttle: ThrottleConfig::default(),
        }
    }
}

/// `throttle = { rows_per_sec = …, bytes_per_sec = … }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Rows per second across all workers; 0 = unlimited.
    #[serde(default)]
    pub rows_per_sec: u64,
    /// Bytes (as read from the source) per second across all workers; 0 = unlimited.
    #[serde(default)]
    pub bytes_per_sec: ByteSize,
}

/// `[tail]`: the change stream.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TailConfig {
    /// Rotate a changelog file after this many bytes.
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: ByteSize,
    /// Rotate a changelog file after this long.
    #[serde(default = "default_rotate_interval")]
    pub rotate_interval: HumanDuration,
    /// Shape of change events.
    #[serde(default)]
    pub envelope: Envelope,
}

fn default_rotate_bytes() -> ByteSize {
    ByteSize(256 << 20)
}
fn default_rotate_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

impl Default for TailConfig {
    fn default() -> Self {
        TailConfig {
            rotate_bytes: default_rotate_bytes(),
            rotate_interval: default_rotate_interval(),
            envelope: Envelope::default(),
        }
    }
}

/// Change-event envelope.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Envelope {
    /// Debezium's field names.
    #[default]
    Debezium,
    /// Our own.
    Storagetapper,
    /// Flattened after-image.
    Row,
}

/// `[[tables]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Schema (database) name; a glob.
    pub schema: String,
    /// Table name; a glob.
    pub table: String,
    /// Only these columns.
    pub columns: Option<Vec<String>>,
    /// All columns but these.
    pub exclude_columns: Option<Vec<String>>,
    /// SQL condition applied to every chunk query, kept intact.
    #[serde(rename = "where")]
    pub where_: Option<String>,
    /// Index used to chunk and read (default PRIMARY).
    pub index: Option<String>,
    /// Rows per chunk for this table.
    pub chunk_rows: Option<u64>,
}

/// A byte count: an integer or a string like `"256MiB"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_bytes(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Parses `"256MiB"`, `"10MB"`, `"512"`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 1048576, \"64MiB\", \"1GB\")"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (B, KB, KiB, MB, MiB, GB, GiB, TiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

/// A duration written as `"5m"`, `"30s"`, `"1h"`, `"250ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0.as_millis()))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `"5m"`, `"30s"`, `"1h"`, `"250ms"`, `"2d"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. \"30s\", \"5m\", \"1h\")"))?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" | "" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("unknown duration unit `{other}` (ms, s, m, h, d)")),
    };
    Ok(Duration::from_millis(n.saturating_mul(ms)))
}

/// A table pattern compiled from a `[[tables]]` entry.
#[derive(Debug, Clone)]
pub struct TableRule {
    /// Index in `tables` (for error locations).
    pub index: usize,
    /// The entry.
    pub config: TableConfig,
    schema_glob: GlobMatcher,
    table_glob: GlobMatcher,
}

impl TableRule {
    /// Does this rule select `schema.table`?
    pub fn matches(&self, schema: &str, table: &str) -> bool {
        self.schema_glob.is_match(schema) && self.table_glob.is_match(table)
    }

    /// Could this rule select tables of `schema`?
    pub fn matches_schema(&self, schema: &str) -> bool {
        self.schema_glob.is_match(schema)
    }

    /// Is the schema part a literal name (no glob characters)?
    pub fn schema_is_literal(&self) -> bool {
        !self.config.schema.contains(['*', '?', '[', '{'])
    }
}

/// Where the files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationUrl {
    /// A local directory.
    File(PathBuf),
    /// An S3 bucket (any S3-compatible endpoint).
    S3(S3Target),
    /// A WebHDFS endpoint (`webhdfs://`, `swebhdfs://`, `hdfs://`).
    WebHdfs(WebHdfsTarget),
    /// Kafka brokers (`kafka://host:port[,host:port…]`): change events only.
    Kafka(KafkaTarget),
}

impl fmt::Display for DestinationUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DestinationUrl::File(p) => write!(f, "file://{}", p.display()),
            DestinationUrl::S3(t) => write!(f, "{}", t.display()),
            DestinationUrl::WebHdfs(t) => write!(f, "{}", t.display()),
            DestinationUrl::Kafka(t) => write!(f, "kafka://{}", t.brokers),
        }
    }
}

/// Default size of one part of a multipart upload (S3) or of one append (WebHDFS).
pub const DEFAULT_PART_SIZE: u64 = 8 << 20;
/// S3's smallest part (all parts but the last).
pub const MIN_S3_PART_SIZE: u64 = 5 << 20;

/// A resolved `kafka://` destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaTarget {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// Topic template of a table's events.
    pub topic: String,
    /// Topic template of schema changes.
    pub ddl_topic: String,
    /// Topic template of Avro writer schemas (values are single-object encoded).
    pub schema_topic: String,
    /// Partitions of created topics.
    pub partitions: i32,
    /// Replication factor of created topics (-1: the broker's default).
    pub replication_factor: i32,
    /// Extra producer properties.
    pub producer: BTreeMap<String, String>,
}

/// Producer properties the stream sets itself (exactly-once rests on them).
pub const KAFKA_FIXED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
    "transactional.id",
    "partitioner",
];

/// A resolved `s3://bucket/prefix` destination; credentials already read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Target {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// Endpoint URL, `scheme://host[:port]`, no trailing `/`.
    pub endpoint: String,
    /// Signing region.
    pub region: String,
    /// Access key id.
    pub access_key: Secret,
    /// Secret access key.
    pub secret_key: Secret,
    /// Session token, for temporary credentials.
    pub session_token: Option<Secret>,
    /// Path-style addressing.
    pub path_style: bool,
    /// Storage class of new objects.
    pub storage_class: Option<String>,
    /// `AES256` or `aws:kms`.
    pub server_side_encryption: Option<String>,
    /// KMS key id with `aws:kms`.
    pub sse_kms_key_id: Option<String>,
    /// Part size of multipart uploads.
    pub part_size: u64,
}

impl S3Target {
    /// `s3://bucket/prefix` (no credentials), for messages and paths.
    pub fn display(&self) -> String {
        let p = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("/{}", self.prefix)
        };
        format!("s3://{}{p}", self.bucket)
    }
}

/// A resolved WebHDFS destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebHdfsTarget {
    /// `http://host:port` (or `https://`), no trailing `/`.
    pub endpoint: String,
    /// Absolute directory, starting and ending with `/`.
    pub root: String,
    /// `user.name`.
    pub user: Option<String>,
    /// Size of one append.
    pub part_size: u64,
}

impl WebHdfsTarget {
    /// `webhdfs://host:port/root`, for messages.
    pub fn display(&self) -> String {
        let hostport = self
            .endpoint
            .split_once("://")
            .map_or(self.endpoint.as_str(), |(_, h)| h);
        let scheme = if self.endpoint.starts_with("https://") {
            "swebhdfs"
        } else {
            "webhdfs"
        };
        format!("{scheme}://{hostport}{}", self.root.trim_end_matches('/'))
    }
}

/// Where the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateUrl {
    /// An SQLite file.
    Sqlite(PathBuf),
}

/// A validated manifest: everything checked that can be checked without I/O.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The manifest file.
    pub file: PathBuf,
    /// The raw text (for error locations).
    pub text: String,
    /// The parsed document.
    pub manifest: Manifest,
    /// Source connection URL (no password).
    pub source_url: String,
    /// Source password, if any.
    pub password: Option<Secret>,
    /// Destination.
    pub destination: DestinationUrl,
    /// State store.
    pub state: StateUrl,
    /// Table rules in manifest order.
    pub rules: Vec<TableRule>,
    /// age recipients; empty = not encrypted.
    pub recipients: Recipients,
    /// Hash of what decides the content of a backup (tables, filters, format): a resumed backup
    /// must have the same.
    pub content_hash: String,
}

/// A password that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// One step of a key path.
#[derive(Debug, Clone)]
pub enum Seg {
    /// A table key.
    Key(&'static str),
    /// An array index.
    Index(usize),
}

/// Finds the 1-based line of the key at `path` in `text`.
pub fn locate(text: &str, path: &[Seg]) -> Option<usize> {
    let doc = toml_edit::Document::parse(text).ok()?;
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut item: Option<&toml_edit::Item> = None;
    let mut span = None;
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if let Some(it) = item {
                    table = it.as_table_like()?;
                }
                let (key, it) = table.get_key_value(k)?;
                span = key.span().or_else(|| it.span()).or(span);
                item = Some(it);
            }
            Seg::Index(i) => {
                let it = item?;
                if let Some(aot) = it.as_array_of_tables() {
                    let t = aot.get(*i)?;
                    span = t.span().or(span);
                    table = t;
                    item = None;
                } else {
                    let v = it.as_array()?.get(*i)?;
                    span = v.span().or(span);
                    break;
                }
            }
        }
    }
    span.map(|s| line_of(text, s.start))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn path_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

impl Plan {
    /// Reads, parses and validates a manifest file.
    ///
    /// # Errors
    /// A [`ManifestError`] naming the file, line and key for anything invalid, including a
    /// missing password environment variable.
    pub fn load(file: &Path) -> Result<Plan, ManifestError> {
        let text = std::fs::read_to_string(file).map_err(|e| ManifestError {
            file: file.to_path_buf(),
            line: None,
            key: "-".into(),
            message: format!("cannot read the manifest: {e}"),
        })?;
        Plan::from_text(file, &text)
    }

    /// Parses and validates manifest text read from `file`.
    ///
    /// # Errors
    /// See [`Plan::load`].
    pub fn from_text(file: &Path, text: &str) -> Result<Plan, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| {
            let span = e.span();
            let line = span.as_ref().map(|s| line_of(text, s.start));
            let key = span
                .and_then(|s| text.get(s))
                .map(|k| k.trim().trim_matches(['[', ']']).to_string())
                .filter(|k| !k.is_empty() && k.len() < 64 && !k.contains('\n'))
                .unwrap_or_else(|| "-".into());
            ManifestError {
                file: file.to_path_buf(),
                line,
                key,
                message: e.message().trim().to_string(),
            }
        })?;
        Validator { file, text }.validate(manifest)
    }

    /// An error located at `path` in this manifest.
    pub fn error(&self, path: &[Seg], message: impl Into<String>) -> ManifestError {
        ManifestError {
            file: self.file.clone(),
            line: locate(&self.text, path),
            key: path_string(path),
            message: message.into(),
        }
    }

    /// Effective rows per chunk for a rule.
    pub fn chunk_rows(&self, rule: &TableRule) -> u64 {
        rule.config
            .chunk_rows
            .unwrap_or(self.manifest.snapshot.chunk_rows)
    }
}

struct Validator<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Validator<'_> {
    fn err(&self, path: &[Seg], message: impl Into<String>) -> ManifestError {
        ManifestError {
            file: self.file.to_path_buf(),
            line: locate(self.text, path),
            key: path_string(path),
            message: message.into(),
        }
    }

    fn base_dir(&self) -> PathBuf {
        self.file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    fn validate(&self, m: Manifest) -> Result<Plan, ManifestError> {
        use Seg::{Index, Key};
        if m.name.is_empty()
            || !m
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            || m.name.starts_with('.')
        {
            return Err(self.err(
                &[Key("name")],
                format!(
                    "`{}` is not a valid job name: use letters, digits, `_`, `-` and `.`",
                    m.name
                ),
            ));
        }

        // Source.
        let source_url = m.source.url.clone();
        check_mysql_url(&source_url).map_err(|msg| self.err(&[Key("source"), Key("url")], msg))?;
        if let Some(b) = &m.source.binlog_url {
            check_mysql_url(b).map_err(|msg| self.err(&[Key("source"), Key("binlog_url")], msg))?;
        }
        let password = match (&m.source.password_env, &m.source.password_file) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    &[Key("source"), Key("password_file")],
                    "give either `password_env` or `password_file`, not both",
                ));
            }
            (Some(var), None) => match std::env::var(var) {
                Ok(p) => Some(Secret(p)),
                Err(_) => {
                    return Err(self.err(
                        &[Key("source"), Key("password_env")],
                        format!("environment variable `{var}` is not set"),
                    ));
                }
            },
            (None, Some(f)) => {
                let path = self.base_dir().join(f);
                let raw = std::fs::read_to_string(&path).map_err(|e| {
                    self.err(
                        &[Key("source"), Key("password_file")],
                        format!("cannot read password file {}: {e}", path.display()),
                    )
                })?;
                Some(Secret(raw.lines().next().unwrap_or("").to_string()))
            }
            (None, None) => None,
        };

        // Destination.
        let destination = self.destination(&m.destination)?;
        if let Some(level) = m.destination.compression_level
            && !(1..=22).contains(&level)
        {
            return Err(self.err(
                &[Key("destination"), Key("compression_level")],
                format!("zstd level {level} is out of range 1–22"),
            ));
        }
        let mut recipients = Recipients::default();
        if let Some(list) = &m.destination.encrypt_to {
            if list.is_empty() {
                return Err(self.err(
                    &[Key("destination"), Key("encrypt_to")],
                    "`encrypt_to` is empty: name at least one recipient or leave it out",
                ));
            }
            recipients = Recipients::parse(list.iter().map(String::as_str))
                .map_err(|msg| self.err(&[Key("destination"), Key("encrypt_to")], msg))?;
        }
        if let Some(f) = &m.destination.encrypt_to_file {
            let more = Recipients::from_file(&self.base_dir().join(f))
                .map_err(|msg| self.err(&[Key("destination"), Key("encrypt_to_file")], msg))?;
            if more.is_empty() {
                return Err(self.err(
                    &[Key("destination"), Key("encrypt_to_file")],
                    format!("{} holds no recipient", f.display()),
                ));
            }
            recipients.extend(&more);
        }

        // State.
        let state = match &m.state.url {
            None => StateUrl::Sqlite(default_state_dir().join(format!("{}.db", m.name))),
            Some(u) => parse_state(u, &self.base_dir())
                .map_err(|msg| self.err(&[Key("state"), Key("url")], msg))?,
        };

        // Snapshot.
        if m.snapshot.threads == 0 || m.snapshot.threads > 256 {
            return Err(self.err(
                &[Key("snapshot"), Key("threads")],
                "threads must be between 1 and 256",
            ));
        }
        if m.snapshot.chunk_rows == 0 {
            return Err(self.err(
                &[Key("snapshot"), Key("chunk_rows")],
                "chunk_rows must be at least 1",
            ));
        }

        // Tables.
        if m.tables.is_empty() {
            return Err(self.err(
                &[],
                "no [[tables]] entry: name at least one table (globs allowed)",
            ));
        }
        let mut rules = Vec::new();
        for (i, t) in m.tables.iter().enumerate() {
            let glob = |s: &str, key: &'static str| {
                Glob::new(s)
                    .map(|g| g.compile_matcher())
                    .map_err(|e| self.err(&[Key("tables"), Index(i), Key(key)], format!("{e}")))
            };
            if t.schema.is_empty() {
                return Err(self.err(&[Key("tables"), Index(i), Key("schema")], "empty schema"));
            }
            if t.table.is_empty() {
                return Err(self.err(&[Key("tables"), Index(i), Key("table")], "empty table"));
            }
            let schema_glob = glob(&t.schema, "schema")?;
            let table_glob = glob(&t.table, "table")?;
            if t.columns.is_some() && t.exclude_columns.is_some() {
                return Err(self.err(
                    &[Key("tables"), Index(i), Key("exclude_columns")],
                    "give either `columns` or `exclude_columns`, not both",
                ));
            }
            if let Some(c) = &t.columns
                && c.is_empty()
            {
                return Err(self.err(
                    &[Key("tables"), Index(i), Key("columns")],
                    "`columns` is empty: name at least one column or leave it out",
                ));
            }
            if t.chunk_rows == Some(0) {
                return Err(self.err(
                    &[Key("tables"), Index(i), Key("chunk_rows")],
                    "chunk_rows must be at least 1",
                ));
            }
            if let Some(w) = &t.where_
                && (w.trim().is_empty() || w.contains(';'))
            {
                return Err(self.err(
                    &[Key("tables"), Index(i), Key("where")],
                    "`where` must be one non-empty SQL condition without `;`",
                ));
            }
            rules.push(TableRule {
                index: i,
                config: t.clone(),
                schema_glob,
                table_glob,
            });
        }

        let mut sorted_recipients = recipients.strings();
        sorted_recipients.sort();
        let content_hash = {
            let mut h = Sha256::new();
            let mut content = serde_json::json!({
                "tables": m.tables,
                "format": m.destination.format,
                "compression": m.destination.compression,
                "chunk_rows": m.snapshot.chunk_rows,
                "recipients": sorted_recipients,
            });
            // A backup into Kafka is never resumed into files, nor the other way round (the
            // key is absent for files, so their hashes stay what they were).
            if matches!(destination, DestinationUrl::Kafka(_)) {
                content["kafka"] = serde_json::Value::Bool(true);
            }
            h.update(content.to_string().as_bytes());
            hex::encode(h.finalize())
        };

        Ok(Plan {
            file: self.file.to_path_buf(),
            text: self.text.to_string(),
            manifest: m,
            source_url,
            password,
            destination,
            state,
            rules,
            recipients,
            content_hash,
        })
    }
}

impl Validator<'_> {
    /// Resolves `[destination]`: the URL, the keys of its scheme (a key of another scheme is an
    /// error), credentials from the environment.
    fn destination(&self, d: &DestinationConfig) -> Result<DestinationUrl, ManifestError> {
        use Seg::Key;
        let url = d.url.trim();
        let scheme = url.split("://").next().unwrap_or(url);
        let at = |key: &'static str| [Key("destination"), Key(key)];
        let s3_keys: [(&'static str, bool); 10] = [
            ("endpoint", d.endpoint.is_some()),
            ("region", d.region.is_some()),
            ("access_key_env", d.access_key_env.is_some()),
            ("secret_key_env", d.secret_key_env.is_some()),
            ("session_token_env", d.session_token_env.is_some()),
            ("path_style", d.path_style.is_some()),
            ("storage_class", d.storage_class.is_some()),
            ("server_side_encryption", d.server_side_encryption.is_some()),
            ("sse_kms_key_id", d.sse_kms_key_id.is_some()),
            ("part_size", d.part_size.is_some()),
        ];
        let webhdfs_keys: [(&'static str, bool); 2] = [
            ("user", d.user.is_some()),
            ("part_size", d.part_size.is_some()),
        ];
        let kafka_keys: [(&'static str, bool); 6] = [
            ("topic", d.topic.is_some()),
            ("ddl_topic", d.ddl_topic.is_some()),
            ("schema_topic", d.schema_topic.is_some()),
            ("partitions", d.partitions.is_some()),
            ("replication_factor", d.replication_factor.is_some()),
            ("producer", d.producer.is_some()),
        ];
        let allowed: &[(&'static str, bool)] = match scheme {
            "s3" => &s3_keys,
            "webhdfs" | "swebhdfs" | "hdfs" => &webhdfs_keys,
            "kafka" => &kafka_keys,
            _ => &[],
        };
        for (key, set) in s3_keys
            .iter()
            .chain(webhdfs_keys.iter())
            .chain(kafka_keys.iter())
        {
            if *set && !allowed.iter().any(|(k, _)| k == key) {
                return Err(self.err(
                    &at(key),
                    format!("`{key}` does not apply to a `{scheme}://` destination"),
                ));
            }
        }
        let part_size = d.part_size.map_or(DEFAULT_PART_SIZE, |b| b.0);
        if part_size == 0 || part_size > (5 << 30) {
            return Err(self.err(
                &at("part_size"),
                "part_size must be more than 0 and at most 5GiB",
            ));
        }
        match scheme {
            "kafka" => self.kafka_destination(d, url),
            "s3" => {
                let rest = &url["s3://".len().min(url.len())..];
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(self.err(&at("url"), format!("`{url}` names no bucket")));
                }
                if part_size < MIN_S3_PART_SIZE {
                    return Err(self.err(
                        &at("part_size"),
                        "part_size must be at least 5MiB on S3 (its smallest part)",
                    ));
                }
                let region = d.region.clone().unwrap_or_else(|| "us-east-1".into());
                let endpoint = match &d.endpoint {
                    Some(e) => {
                        let e = e.trim_end_matches('/');
                        if !(e.starts_with("http://") || e.starts_with("https://"))
                            || e.split("://").nth(1).is_none_or(str::is_empty)
                        {
                            return Err(self.err(
                                &at("endpoint"),
                                format!("`{e}` is not an http:// or https:// URL"),
                            ));
                        }
                        e.to_string()
                    }
                    None => format!("https://s3.{region}.amazonaws.com"),
                };
                let read = |key: &'static str, var: &str| {
                    std::env::var(var)
                        .ok()
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| {
                            self.err(&at(key), format!("environment variable `{var}` is not set"))
                        })
                };
                let (access_key, secret_key, session_token) =
                    match (&d.access_key_env, &d.secret_key_env) {
                        (Some(a), Some(s)) => (
                            read("access_key_env", a)?,
                            read("secret_key_env", s)?,
                            d.session_token_env
                                .as_ref()
                                .map(|t| read("session_token_env", t))
                                .transpose()?,
                        ),
                        (None, None) => {
                            let missing = |var: &str| {
                                self.err(
                                    &at("url"),
                                    format!(
                                        "no S3 credentials: `{var}` is not set (name the variables \
                                         with `access_key_env` and `secret_key_env`, or set \
                                         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                                    ),
                                )
                            };
                            let a = std::env::var("AWS_ACCESS_KEY_ID")
                                .ok()
                                .filter(|v| !v.is_empty())
                                .ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?;
                            let s = std::env::var("AWS_SECRET_ACCESS_KEY")
                                .ok()
                                .filter(|v| !v.is_empty())
                                .ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?;
                            let t = match &d.session_token_env {
                                Some(t) => Some(read("session_token_env", t)?),
                                None => std::env::var("AWS_SESSION_TOKEN")
                                    .ok()
                                    .filter(|v| !v.is_empty()),
                            };
                            (a, s, t)
                        }
                        (Some(_), None) => {
                            return Err(self.err(
                                &at("access_key_env"),
                                "give `secret_key_env` with `access_key_env`",
                            ));
                        }
                        (None, Some(_)) => {
                            return Err(self.err(
                                &at("secret_key_env"),
                                "give `access_key_env` with `secret_key_env`",
                            ));
                        }
                    };
                if let Some(sse) = &d.server_side_encryption
                    && sse != "AES256"
                    && sse != "aws:kms"
                {
                    return Err(self.err(
                        &at("server_side_encryption"),
                        format!("`{sse}` is not `AES256` or `aws:kms`"),
                    ));
                }
                if d.sse_kms_key_id.is_some()
                    && d.server_side_encryption.as_deref() != Some("aws:kms")
                {
                    return Err(self.err(
                        &at("sse_kms_key_id"),
                        "`sse_kms_key_id` needs `server_side_encryption = \"aws:kms\"`",
                    ));
                }
                Ok(DestinationUrl::S3(S3Target {
                    bucket: bucket.to_string(),
                    prefix: prefix.trim_matches('/').to_string(),
                    endpoint,
                    region,
                    access_key: Secret(access_key),
                    secret_key: Secret(secret_key),
                    session_token: session_token.map(Secret),
                    path_style: d.path_style.unwrap_or(true),
                    storage_class: d.storage_class.clone(),
                    server_side_encryption: d.server_side_encryption.clone(),
                    sse_kms_key_id: d.sse_kms_key_id.clone(),
                    part_size,
                }))
            }
            "webhdfs" | "swebhdfs" | "hdfs" => {
                let rest = &url[scheme.len() + "://".len().min(url.len() - scheme.len())..];
                let (hostport, path) = match rest.find('/') {
                    Some(i) => rest.split_at(i),
                    None => (rest, ""),
                };
                if hostport.is_empty() || hostport.contains('@') {
                    return Err(self.err(
                        &at("url"),
                        format!("`{url}` names no NameNode host (webhdfs://host:port/path)"),
                    ));
                }
                let hostport = if hostport.contains(':') {
                    hostport.to_string()
                } else {
                    format!("{hostport}:9870")
                };
                let http = if scheme == "swebhdfs" {
                    "https"
                } else {
                    "http"
                };
                let trimmed = path.trim_matches('/');
                let root = if trimmed.is_empty() {
                    "/".to_string()
                } else {
                    format!("/{trimmed}/")
                };
                Ok(DestinationUrl::WebHdfs(WebHdfsTarget {
                    endpoint: format!("{http}://{hostport}"),
                    root,
                    user: d.user.clone(),
                    part_size,
                }))
            }
            _ => parse_destination(url, &self.base_dir()).map_err(|msg| self.err(&at("url"), msg)),
        }
    }
}

impl Validator<'_> {
    /// `kafka://host:port[,host:port…]` and its keys.
    fn kafka_destination(
        &self,
        d: &DestinationConfig,
        url: &str,
    ) -> Result<DestinationUrl, ManifestError> {
        use Seg::Key;
        let at = |key: &'static str| [Key("destination"), Key(key)];
        let brokers = url["kafka://".len().min(url.len())..].trim_end_matches('/');
        let valid = !brokers.is_empty()
            && brokers.split(',').all(|b| {
                b.rsplit_once(':').is_some_and(|(h, p)| {
                    !h.is_empty() && !h.contains(['/', '@']) && p.parse::<u16>().is_ok()
                })
            });
        if !valid {
            return Err(self.err(
                &at("url"),
                format!("`{url}` is not kafka://host:port[,host:port…]"),
            ));
        }
        if d.encrypt_to.is_some() || d.encrypt_to_file.is_some() {
            let key = if d.encrypt_to.is_some() {
                "encrypt_to"
            } else {
                "encrypt_to_file"
            };
            return Err(self.err(
                &at(key),
                "a `kafka://` destination cannot be encrypted to age recipients (the broker's \
                 TLS and ACLs protect it)",
            ));
        }
        if !matches!(d.format, Format::Json | Format::Msgpack | Format::Avro) {
            return Err(self.err(
                &at("format"),
                format!(
                    "a `kafka://` destination takes `json`, `msgpack` or `avro` events, not `{}`",
                    format!("{:?}", d.format).to_lowercase()
                ),
            ));
        }
        let template = |key: &'static str, v: &Option<String>, default: &str| {
            let t = v.clone().unwrap_or_else(|| default.to_string());
            let mut rest = t.as_str();
            while let Some(i) = rest.find('{') {
                let end = rest[i..].find('}').map(|j| i + j);
                let Some(end) = end else {
                    return Err(self.err(&at(key), format!("`{t}` has an unclosed `{{`")));
                };
                let var = &rest[i + 1..end];
                if !matches!(var, "name" | "schema" | "table") {
                    return Err(self.err(
                        &at(key),
                        format!("`{{{var}}}` in `{t}` is not {{name}}, {{schema}} or {{table}}"),
                    ));
                }
                rest = &rest[end + 1..];
            }
            Ok(t)
        };
        let topic = template("topic", &d.topic, "{name}.{schema}.{table}")?;
        if !topic.contains("{table}") {
            return Err(self.err(
                &at("topic"),
                format!("`{topic}` has no `{{table}}`: each table needs its own topic"),
            ));
        }
        let ddl_topic = template("ddl_topic", &d.ddl_topic, "{name}")?;
        if ddl_topic.contains("{table}") {
            return Err(self.err(
                &at("ddl_topic"),
                "a schema change has no table: use `{name}` and `{schema}` only",
            ));
        }
        let schema_topic = template("schema_topic", &d.schema_topic, "{name}.schemas")?;
        if schema_topic.contains("{table}") || schema_topic.contains("{schema}") {
            return Err(self.err(
                &at("schema_topic"),
                "the schemas of all tables share one topic: use `{name}` only",
            ));
        }
        if d.schema_topic.is_some() && d.format != Format::Avro {
            return Err(self.err(
                &at("schema_topic"),
                "only `format = \"avro\"` publishes schemas",
            ));
        }
        let partitions = d.partitions.unwrap_or(1);
        if partitions < 1 {
            return Err(self.err(&at("partitions"), "partitions must be at least 1"));
        }
        let replication_factor = d.replication_factor.unwrap_or(-1);
        if replication_factor == 0 || replication_factor < -1 {
            return Err(self.err(
                &at("replication_factor"),
                "replication_factor must be at least 1 (or -1 for the broker's default)",
            ));
        }
        let producer = d.producer.clone().unwrap_or_default();
        if let Some(k) = producer
            .keys()
            .find(|k| KAFKA_FIXED_PROPERTIES.contains(&k.as_str()))
        {
            return Err(self.err(
                &at("producer"),
                format!(
                    "`{k}` is set by storagetapper (idempotent producer, acks=all, its own \
                     partitioning by key): remove it"
                ),
            ));
        }
        Ok(DestinationUrl::Kafka(KafkaTarget {
            brokers: brokers.to_string(),
            topic,
            ddl_topic,
            schema_topic,
            partitions,
            replication_factor,
            producer,
        }))
    }
}

fn check_mysql_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("mysql://")
        .ok_or_else(|| format!("`{url}` is not a mysql:// URL"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && userinfo.contains(':')
    {
        // Never echo the URL here: it holds a password.
        return Err(
            "the URL holds a password: remove it and use `password_env` or `password_file`".into(),
        );
    }
    if authority.rsplit('@').next().unwrap_or("").is_empty() {
        return Err(format!("`{url}` names no host"));
    }
    Ok(())
}

fn parse_destination(url: &str, base: &Path) -> Result<DestinationUrl, String> {
    if let Some(p) = url.strip_prefix("file://") {
        if p.is_empty() {
            return Err("`file://` names no directory".into());
        }
        let path = Path::new(p);
        return Ok(DestinationUrl::File(if path.is_absolute() {
            path.to_path_buf()
        } else {
            base.join(path)
        }));
    }
    Err(format!(
        "`{url}` is not a supported destination URL (file:///path, s3://bucket/prefix, \
         webhdfs://host:port/path, kafka://host:port)"
    ))
}

fn parse_state(url: &str, base: &Path) -> Result<StateUrl, String> {
    if let Some(p) = url.strip_prefix("sqlite://") {
        let path = Path::new(p);
        if p.is_empty() {
            return Err("`sqlite://` names no file".into());
        }
        return Ok(StateUrl::Sqlite(if path.is_absolute() {
            path.to_path_buf()
        } else {
            base.join(path)
        }));
    }
    if url.starts_with("mysql://") {
        return Err(
            "a MySQL state store is not implemented yet in this version; use sqlite://".into(),
        );
    }
    Err(format!(
        "`{url}` is not a supported state URL (sqlite:///path/file.db)"
    ))
}

/// `$XDG_STATE_HOME/storagetapper`, else `~/.local/state/storagetapper`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("storagetapper");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(h).join(".local/state/storagetapper");
    }
    PathBuf::from(".storagetapper")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Plan, ManifestError> {
        Plan::from_text(Path::new("/m/test.toml"), text)
    }

    const GOOD: &str = r#"
name = "shop"
[source]
url = "mysql://backup@127.0.0.1:3306"
[destination]
url = "file:///var/backups"
[[tables]]
schema = "shop"
table = "order_*"
"#;

    #[test]
    fn good_manifest_parses_with_defaults() {
        let p = parse(GOOD).expect("valid");
        assert_eq!(p.manifest.snapshot.threads, 4);
        assert_eq!(p.manifest.snapshot.chunk_rows, 100_000);
        assert_eq!(p.destination, DestinationUrl::File("/var/backups".into()));
        assert!(p.rules[0].matches("shop", "order_items"));
        assert!(!p.rules[0].matches("shop", "orders"));
        assert!(!p.rules[0].matches("shop2", "order_items"));
        assert_eq!(p.manifest.tail.rotate_bytes, ByteSize(256 << 20));
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = GOOD.replace("[destination]", "[destination]\nformatt = \"json\"");
        let e = parse(&text).expect_err("unknown key");
        assert_eq!(e.line, Some(6), "{e}");
        assert_eq!(e.key, "formatt");
        assert!(e.to_string().contains("/m/test.toml:6"), "{e}");
    }

    #[test]
    fn validation_error_names_table_entry_key() {
        let text = format!("{GOOD}columns = [\"a\"]\nexclude_columns = [\"b\"]\n");
        let e = parse(&text).expect_err("both");
        assert_eq!(e.key, "tables[0].exclude_columns");
        assert_eq!(e.line, Some(11), "{e}");
    }

    #[test]
    fn missing_password_env_names_variable() {
        let text = GOOD.replace(
            "[destination]",
            "password_env = \"ST_TEST_SURELY_UNSET_VAR\"\n[destination]",
        );
        let e = parse(&text).expect_err("unset");
        assert!(e.to_string().contains("ST_TEST_SURELY_UNSET_VAR"), "{e}");
        assert_eq!(e.key, "source.password_env");
    }

    #[test]
    fn password_in_url_is_refused_without_echo() {
        let text = GOOD.replace("backup@", "backup:hunter2@");
        let e = parse(&text).expect_err("password in url");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(e.key, "source.url");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("10MB"), Ok(10_000_000));
        assert_eq!(parse_bytes("7"), Ok(7));
        assert!(parse_bytes("7 parsecs").is_err());
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn content_hash_ignores_threads() {
        let a = parse(GOOD).expect("valid");
        let b = parse(&format!("{GOOD}\n")).expect("valid");
        let c = parse(&GOOD.replace("[destination]", "[snapshot]\nthreads = 2\n[destination]"))
            .expect("valid");
        assert_eq!(a.content_hash, b.content_hash);
        assert_eq!(a.content_hash, c.content_hash);
        let d = parse(&GOOD.replace("order_*", "orders")).expect("valid");
        assert_ne!(a.content_hash, d.content_hash);
    }

    fn with_destination(url: &str, keys: &str) -> String {
        GOOD.replace(
            "url = \"file:///var/backups\"",
            &format!("url = \"{url}\"\n{keys}"),
        )
    }

    #[test]
    fn s3_destination_resolves_keys_and_credentials() {
        // PATH and HOME are set in any test environment.
        let text = with_destination(
            "s3://bkt/a/b/",
            "endpoint = \"http://127.0.0.1:9000/\"\naccess_key_env = \"PATH\"\nsecret_key_env = \"HOME\"\npath_style = false\npart_size = \"16MiB\"",
        );
        let p = parse(&text).expect("valid");
        let DestinationUrl::S3(t) = &p.destination else {
            panic!("not s3: {:?}", p.destination);
        };
        assert_eq!(t.bucket, "bkt");
        assert_eq!(t.prefix, "a/b");
        assert_eq!(t.endpoint, "http://127.0.0.1:9000");
        assert_eq!(t.region, "us-east-1");
        assert!(!t.path_style);
        assert_eq!(t.part_size, 16 << 20);
        assert_eq!(t.secret_key.expose(), std::env::var("HOME").expect("HOME"));
        assert_eq!(p.destination.to_string(), "s3://bkt/a/b");
        // Debug output never holds a secret.
        let home = std::env::var("HOME").expect("HOME");
        assert!(!format!("{:?}", p.destination).contains(&format!("\"{home}\"")));
    }

    #[test]
    fn s3_key_errors_name_line_and_key() {
        let e = parse(&with_destination(
            "s3://bkt",
            "access_key_env = \"ST_TEST_SURELY_UNSET_KEY\"\nsecret_key_env = \"HOME\"",
        ))
        .expect_err("unset");
        assert_eq!(e.key, "destination.access_key_env");
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e.to_string().contains("ST_TEST_SURELY_UNSET_KEY"), "{e}");

        let e = parse(&with_destination(
            "s3://bkt",
            "access_key_env = \"PATH\"\nsecret_key_env = \"HOME\"\npart_size = \"1MiB\"",
        ))
        .expect_err("small part");
        assert_eq!(e.key, "destination.part_size");

        let e = parse(&with_destination(
            "s3://bkt",
            "access_key_env = \"PATH\"\nsecret_key_env = \"HOME\"\nserver_side_encryption = \"rot13\"",
        ))
        .expect_err("sse");
        assert_eq!(e.key, "destination.server_side_encryption");
    }

    #[test]
    fn keys_of_another_scheme_are_errors() {
        let e = parse(&with_destination("file:///x", "endpoint = \"http://h\"")).expect_err("file");
        assert_eq!(e.key, "destination.endpoint");
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e.message.contains("does not apply to a `file://`"), "{e}");
        let e =
            parse(&with_destination("webhdfs://nn:9870/x", "region = \"eu\"")).expect_err("hdfs");
        assert_eq!(e.key, "destination.region");
        let e = parse(&with_destination(
            "s3://b",
            "access_key_env = \"PATH\"\nsecret_key_env = \"HOME\"\nuser = \"hdfs\"",
        ))
        .expect_err("s3");
        assert_eq!(e.key, "destination.user");
    }

    #[test]
    fn webhdfs_urls() {
        let p = parse(&with_destination("hdfs://nn/backups/", "user = \"bk\"")).expect("valid");
        let DestinationUrl::WebHdfs(t) = &p.destination else {
            panic!("not webhdfs");
        };
        assert_eq!(t.endpoint, "http://nn:9870");
        assert_eq!(t.root, "/backups/");
        assert_eq!(t.user.as_deref(), Some("bk"));
        assert_eq!(p.destination.to_string(), "webhdfs://nn:9870/backups");
        let p = parse(&with_destination("swebhdfs://nn:9871", "")).expect("valid");
        let DestinationUrl::WebHdfs(t) = &p.destination else {
            panic!("not webhdfs");
        };
        assert_eq!(
            (t.endpoint.as_str(), t.root.as_str()),
            ("https://nn:9871", "/")
        );
        assert!(parse(&with_destination("webhdfs:///x", "")).is_err());
    }

    #[test]
    fn kafka_destinations() {
        let p = parse(&with_destination(
            "kafka://b1:9092,b2:9093",
            "topic = \"cdc.{schema}.{table}\"\npartitions = 6\nproducer = { \"linger.ms\" = \"20\" }",
        ))
        .expect("valid");
        let DestinationUrl::Kafka(t) = &p.destination else {
            panic!("not kafka");
        };
        assert_eq!(t.brokers, "b1:9092,b2:9093");
        assert_eq!(t.topic, "cdc.{schema}.{table}");
        assert_eq!(t.ddl_topic, "{name}");
        assert_eq!(t.schema_topic, "{name}.schemas");
        assert_eq!((t.partitions, t.replication_factor), (6, -1));
        assert_eq!(t.producer.get("linger.ms").map(String::as_str), Some("20"));
        for (url, keys, key, says) in [
            ("kafka://b1", "", "destination.url", "host:port"),
            (
                "kafka://b1:9092",
                "topic = \"{name}.all\"",
                "destination.topic",
                "{table}",
            ),
            (
                "kafka://b1:9092",
                "topic = \"{db}.{table}\"",
                "destination.topic",
                "{db}",
            ),
            (
                "kafka://b1:9092",
                "ddl_topic = \"{table}\"",
                "destination.ddl_topic",
                "no table",
            ),
            (
                "kafka://b1:9092",
                "format = \"parquet\"",
                "destination.format",
                "parquet",
            ),
            (
                "kafka://b1:9092",
                "format = \"avro\"\nschema_topic = \"{schema}.s\"",
                "destination.schema_topic",
                "`{name}` only",
            ),
            (
                "kafka://b1:9092",
                "schema_topic = \"s\"",
                "destination.schema_topic",
                "avro",
            ),
            (
                "kafka://b1:9092",
                "partitions = 0",
                "destination.partitions",
                "at least 1",
            ),
            (
                "kafka://b1:9092",
                "producer = { acks = \"1\" }",
                "destination.producer",
                "`acks`",
            ),
            (
                "kafka://b1:9092",
                "region = \"eu\"",
                "destination.region",
                "kafka://",
            ),
            ("file:///x", "topic = \"t\"", "destination.topic", "file://"),
        ] {
            let e = parse(&with_destination(url, keys)).expect_err(keys);
            assert_eq!(e.key, key, "{e}");
            assert!(e.message.contains(says), "{e}");
        }
    }
}
