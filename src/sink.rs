//! The destination: one opendal [`Operator`] built from the manifest's URL (`file://`, `s3://`,
//! `webhdfs://`), wrapped in retry (with jitter), timeout and logging layers, and the write
//! discipline on top of it.
//!
//! Invariant: a final name always holds a complete file; `metadata.json` is written last.
//! On a file system and on WebHDFS a file is written under a temporary name and renamed when
//! whole. S3 has no rename: a file is written straight to its final name as a multipart upload
//! (parts of `part_size`, two in flight) that is completed only by [`FileWriter::commit`] and
//! aborted on failure; uploads left by a killed run are aborted by [`Sink::abort_uploads`]
//! (ListMultipartUploads + AbortMultipartUpload, signed with opendal's own signer, reqsign).

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use opendal::Operator;
use opendal::layers::{LoggingLayer, RetryLayer, TimeoutLayer};

use crate::manifest::{DestinationUrl, S3Target, WebHdfsTarget};

/// Marks temporary files; never part of a final name.
pub const TMP_MARK: &str = ".tmp-";

/// Bound on connecting to a remote destination and checking it.
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// Parts of one file uploaded at the same time (S3).
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Debug)]
enum Backend {
    Fs,
    S3(S3Target),
    WebHdfs(WebHdfsTarget),
}

/// The destination.
#[derive(Clone, Debug)]
pub struct Sink {
    op: Operator,
    backend: std::sync::Arc<Backend>,
    http: reqwest::Client,
    /// For messages (never holds a credential).
    pub display: String,
}

fn layered(op: Operator) -> Operator {
    // Bounded: an unreachable endpoint fails within seconds, not minutes.
    op.layer(
        TimeoutLayer::new()
            .with_timeout(Duration::from_secs(30))
            .with_io_timeout(Duration::from_secs(60)),
    )
    .layer(
        RetryLayer::new()
            .with_jitter()
            .with_max_times(4)
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(4)),
    )
    .layer(LoggingLayer::default())
}

impl Sink {
    /// Builds the operator for a destination and, for a remote one, checks that it answers and
    /// accepts the credentials (a wrong key, a missing bucket or an unreachable endpoint fail
    /// here, naming the destination).
    ///
    /// # Errors
    /// When the backend cannot be configured or reached.
    pub async fn connect(url: &DestinationUrl) -> Result<Sink> {
        let sink = Sink::new(url)?;
        sink.check().await?;
        Ok(sink)
    }

    /// Builds the operator for a destination without any request to it (see
    /// [`Sink::connect`], which also checks it).
    ///
    /// # Errors
    /// When the backend cannot be configured.
    pub fn new(url: &DestinationUrl) -> Result<Sink> {
        // rustls is built without a default provider (no aws-lc): use ring, once per process;
        // opendal's HTTP transport is a reqwest client with a bounded connect time.
        let _ = rustls::crypto::ring::default_provider().install_default();
        static TRANSPORT: std::sync::Once = std::sync::Once::new();
        let mut failed = None;
        TRANSPORT.call_once(|| {
            match reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
            {
                Ok(c) => opendal::HttpTransporter::install_default(
                    opendal_http_transport_reqwest::ReqwestTransport::new(c),
                ),
                Err(e) => failed = Some(e),
            }
        });
        if let Some(e) = failed {
            return Err(e).context("cannot build the HTTP client");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot build the HTTP client")?;
        let display = url.to_string();
        let (op, backend) = match url {
            DestinationUrl::Kafka(k) => bail!(
                "kafka://{} holds change events (`tail`, and `backup` as op \"r\" events), \
                 not backup files: restores, verification and listings need a file://, s3:// \
                 or webhdfs:// destination",
                k.brokers
            ),
            DestinationUrl::File(dir) => {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("cannot create destination directory {}", dir.display())
                })?;
                let root = dir.to_string_lossy().to_string();
                let builder = opendal::services::Fs::default().root(&root);
                let op = Operator::new(builder).with_context(|| format!("destination {root}"))?;
                (layered(op), Backend::Fs)
            }
            DestinationUrl::S3(t) => {
                let mut b = opendal::services::S3::default()
                    .bucket(&t.bucket)
                    .root(&format!("/{}", t.prefix))
                    .endpoint(&t.endpoint)
                    .region(&t.region)
                    .access_key_id(t.access_key.expose())
                    .secret_access_key(t.secret_key.expose())
                    .disable_config_load()
                    .disable_ec2_metadata();
                if let Some(tok) = &t.session_token {
                    b = b.session_token(tok.expose());
                }
                if !t.path_style {
                    b = b.enable_virtual_host_style();
                }
                if let Some(class) = &t.storage_class {
                    b = b.default_storage_class(class);
                }
                b = match (t.server_side_encryption.as_deref(), &t.sse_kms_key_id) {
                    (Some("AES256"), _) => b.server_side_encryption_with_s3_key(),
                    (Some("aws:kms"), Some(id)) => {
                        b.server_side_encryption_with_customer_managed_kms_key(id)
                    }
                    (Some("aws:kms"), None) => b.server_side_encryption_with_aws_managed_kms_key(),
                    _ => b,
                };
                let op = Operator::new(b).with_context(|| format!("destination {display}"))?;
                (layered(op), Backend::S3(t.clone()))
            }
            DestinationUrl::WebHdfs(t) => {
                let mut b = opendal::services::Webhdfs::default()
                    .endpoint(&t.endpoint)
                    .root(&t.root)
                    .disable_list_batch();
                if let Some(u) = &t.user {
                    b = b.user_name(u);
                }
                let op = Operator::new(b).with_context(|| format!("destination {display}"))?;
                (layered(op), Backend::WebHdfs(t.clone()))
            }
        };
        Ok(Sink {
            op,
            backend: std::sync::Arc::new(backend),
            http,
            display,
        })
    }

    /// One cheap request that needs the endpoint, the credentials and the bucket.
    async fn check(&self) -> Result<()> {
        let probe = async {
            match &*self.backend {
                Backend::Fs => Ok(()),
                Backend::S3(_) => {
                    let mut l = self.op.lister_with("/").limit(1).await?;
                    l.next().await.transpose().map(|_| ())
                }
                Backend::WebHdfs(_) => self.op.create_dir("/").await,
            }
        };
        let result = tokio::time::timeout(CHECK_TIMEOUT, probe)
            .await
            .map_err(|_| {
                anyhow!(
                    "destination {}{}: no answer within {} s",
                    self.display,
                    self.endpoint_note(),
                    CHECK_TIMEOUT.as_secs()
                )
            })?;
        result.map_err(|e| self.explain(&e))
    }

    /// A clear message for a failed check, naming the destination, never a credential.
    fn explain(&self, e: &opendal::Error) -> anyhow::Error {
        use opendal::ErrorKind as K;
        let what = match (e.kind(), &*self.backend) {
            (K::PermissionDenied, Backend::S3(_)) => {
                "access denied: wrong access key or secret key, or no permission on the bucket"
                    .to_string()
            }
            (K::NotFound, Backend::S3(t)) => format!("bucket `{}` does not exist", t.bucket),
            (_, Backend::S3(t)) if e.to_string().contains("NoSuchBucket") => {
                format!("bucket `{}` does not exist", t.bucket)
            }
            (K::PermissionDenied, _) => "permission denied".to_string(),
            (K::ConfigInvalid, _) => "invalid configuration".to_string(),
            _ if is_unreachable(e) => "cannot reach the endpoint".to_string(),
            _ => "the destination refused the request".to_string(),
        };
        let mut detail = e.to_string();
        if let Backend::S3(t) = &*self.backend {
            // S3 error bodies may echo the access key id (real keys are long; a short test
            // value would blot out ordinary words).
            for (secret, mark) in [
                (t.access_key.expose(), "<access key>"),
                (t.secret_key.expose(), "<secret key>"),
            ] {
                if secret.len() >= 8 {
                    detail = detail.replace(secret, mark);
                }
            }
        }
        anyhow!(
            "destination {}{}: {what}\ncaused by: {detail}",
            self.display,
            self.endpoint_note()
        )
    }

    /// ` (endpoint …)` for S3, whose URL does not name it.
    fn endpoint_note(&self) -> String {
        match &*self.backend {
            Backend::S3(t) => format!(" (endpoint {})", t.endpoint),
            _ => String::new(),
        }
    }

    /// Starts a file that becomes visible at `path` only after [`FileWriter::commit`].
    ///
    /// # Errors
    /// When the file cannot be created.
    pub async fn create(&self, path: &str) -> Result<FileWriter> {
        let (target, writer) = match &*self.backend {
            Backend::Fs => {
                let tmp = tmp_name(path);
                let w = self.op.writer(&tmp).await;
                (tmp, w)
            }
            Backend::S3(t) => {
                let part = usize::try_from(t.part_size).unwrap_or(usize::MAX);
                let w = self
                    .op
                    .writer_with(path)
                    .chunk(part)
                    .concurrent(PARTS_IN_FLIGHT)
                    .await;
                (path.to_string(), w)
            }
            Backend::WebHdfs(t) => {
                let tmp = tmp_name(path);
                let part = usize::try_from(t.part_size).unwrap_or(usize::MAX);
                // Appends of `part_size`: memory stays bounded whatever the file size.
                let w = self.op.writer_with(&tmp).append(true).chunk(part).await;
                (tmp, w)
            }
        };
        let writer =
            writer.with_context(|| format!("cannot create {target} at {}", self.display))?;
        Ok(FileWriter {
            sink: self.clone(),
            writer: Some(writer),
            tmp: target,
            path: path.to_string(),
        })
    }

    /// Writes a small file whole (temporary name then rename, or one PUT on S3).
    ///
    /// # Errors
    /// On I/O failure.
    pub async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        let mut w = self.create(path).await?;
        w.write(bytes).await?;
        w.commit().await
    }

    /// Reads a whole small file.
    ///
    /// # Errors
    /// When it does not exist or cannot be read.
    pub async fn get(&self, path: &str) -> Result<Vec<u8>> {
        Ok(self
            .op
            .read(path)
            .await
            .with_context(|| format!("cannot read {path} at {}", self.display))?
            .to_vec())
    }

    /// Does `path` exist? A path ending in `/` is a directory: it exists when something is in
    /// it (object stores have no directories of their own).
    ///
    /// # Errors
    /// On I/O failure other than not-found.
    pub async fn exists(&self, path: &str) -> Result<bool> {
        if path.ends_with('/') {
            return Ok(!self.list(path).await?.is_empty());
        }
        self.op
            .exists(path)
            .await
            .with_context(|| format!("cannot stat {path} at {}", self.display))
    }

    /// Names directly under `dir` (ending in `/` for directories).
    ///
    /// # Errors
    /// On I/O failure; a missing directory lists as empty.
    pub async fn list(&self, dir: &str) -> Result<Vec<String>> {
        let dir = if dir.ends_with('/') {
            dir.to_string()
        } else {
            format!("{dir}/")
        };
        match self.op.list(&dir).await {
            Ok(entries) => Ok(entries
                .into_iter()
                .map(|e| e.path().to_string())
                .filter(|p| p != &dir)
                .collect()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("cannot list {dir} at {}", self.display)),
        }
    }

    /// Deletes temporary files left under `dir` (one level of subdirectories) by a killed run.
    ///
    /// # Errors
    /// On I/O failure.
    pub async fn remove_temporaries(&self, dir: &str) -> Result<usize> {
        let mut removed = 0;
        for entry in self.list(dir).await? {
            let children = if entry.ends_with('/') {
                self.list(&entry).await?
            } else {
                vec![entry]
            };
            for p in children {
                if p.rsplit('/').next().is_some_and(|n| n.contains(TMP_MARK)) {
                    self.op
                        .delete(&p)
                        .await
                        .with_context(|| format!("cannot delete {p}"))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Deletes one file (absent is fine).
    ///
    /// # Errors
    /// On I/O failure.
    pub async fn remove(&self, path: &str) -> Result<()> {
        self.op
            .delete(path)
            .await
            .with_context(|| format!("cannot delete {path} at {}", self.display))
    }

    /// Aborts the multipart uploads left under `dir` by a killed run (S3; elsewhere there are
    /// none) and returns how many there were. Call it only when no other run writes there.
    ///
    /// # Errors
    /// When the uploads cannot be listed or aborted.
    pub async fn abort_uploads(&self, dir: &str) -> Result<usize> {
        let Backend::S3(t) = &*self.backend else {
            return Ok(0);
        };
        let prefix = s3_key(t, &format!("{}/", dir.trim_end_matches('/')));
        let uploads = self.list_uploads(t, &prefix).await?;
        for (key, id) in &uploads {
            let (status, body) = self
                .s3_call(
                    t,
                    http::Method::DELETE,
                    key,
                    &format!("uploadId={}", encode(id, false)),
                )
                .await
                .with_context(|| format!("cannot abort the upload of {key}"))?;
            if !status.is_success() && status != http::StatusCode::NOT_FOUND {
                bail!(
                    "cannot abort the upload of {key} at {}: HTTP {status}: {}",
                    self.display,
                    s3_error(&body)
                );
            }
            tracing::debug!(key = %key, "Aborted an unfinished multipart upload.");
        }
        Ok(uploads.len())
    }

    /// Unfinished multipart uploads (key, upload id) whose key starts with `prefix` (a full key,
    /// bucket-relative).
    async fn list_uploads(&self, t: &S3Target, prefix: &str) -> Result<Vec<(String, String)>> {
        #[derive(serde::Deserialize, Default)]
        #[serde(default, rename_all = "PascalCase")]
        struct Page {
            is_truncated: bool,
            next_key_marker: String,
            next_upload_id_marker: String,
            upload: Vec<Upload>,
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(default, rename_all = "PascalCase")]
        struct Upload {
            key: String,
            upload_id: String,
        }
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            // Sorted by name, as the canonical query wants.
            let mut q = String::new();
            if let Some((k, _)) = &markers {
                q.push_str(&format!("key-marker={}&", encode(k, false)));
            }
            q.push_str(&format!("prefix={}&", encode(prefix, false)));
            if let Some((_, u)) = &markers {
                q.push_str(&format!("upload-id-marker={}&", encode(u, false)));
            }
            q.push_str("uploads=");
            let (status, body) = self
                .s3_call(t, http::Method::GET, "", &q)
                .await
                .context("cannot list multipart uploads")?;
            if !status.is_success() {
                bail!(
                    "cannot list multipart uploads at {}: HTTP {status}: {}",
                    self.display,
                    s3_error(&body)
                );
            }
            let text = String::from_utf8_lossy(&body);
            let page: Page = quick_xml::de::from_str(&text).with_context(|| {
                format!("bad ListMultipartUploads answer from {}", self.display)
            })?;
            out.extend(
                page.upload
                    .into_iter()
                    .filter(|u| u.key.starts_with(prefix))
                    .map(|u| (u.key, u.upload_id)),
            );
            if !page.is_truncated || page.next_key_marker.is_empty() {
                break;
            }
            let next = (page.next_key_marker, page.next_upload_id_marker);
            if markers.as_ref() == Some(&next) {
                break;
            }
            markers = Some(next);
        }
        Ok(out)
    }

    /// One signed S3 request without a body on `key` (bucket-relative, not encoded; empty for
    /// the bucket itself) with an already encoded query.
    async fn s3_call(
        &self,
        t: &S3Target,
        method: http::Method,
        key: &str,
        query: &str,
    ) -> Result<(http::StatusCode, bytes::Bytes)> {
        use reqsign_core::SignRequest;
        let (scheme, host) = t
            .endpoint
            .split_once("://")
            .ok_or_else(|| anyhow!("endpoint {} has no scheme", t.endpoint))?;
        let uri = if t.path_style {
            format!(
                "{scheme}://{host}/{}/{}?{query}",
                encode(&t.bucket, false),
                encode(key, true)
            )
        } else {
            format!(
                "{scheme}://{}.{host}/{}?{query}",
                t.bucket,
                encode(key, true)
            )
        };
        let mut parts = http::Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header("x-amz-content-sha256", reqsign_aws_v4::EMPTY_STRING_SHA256)
            .body(())
            .context("cannot build an S3 request")?
            .into_parts()
            .0;
        let cred = reqsign_aws_v4::Credential {
            access_key_id: t.access_key.expose().to_string(),
            secret_access_key: t.secret_key.expose().to_string(),
            session_token: t.session_token.as_ref().map(|s| s.expose().to_string()),
            expires_in: None,
        };
        reqsign_aws_v4::RequestSigner::new("s3", &t.region)
            .sign_request(&reqsign_core::Context::new(), &mut parts, Some(&cred), None)
            .await
            .map_err(|e| anyhow!("cannot sign an S3 request: {e}"))?;
        let resp = self
            .http
            .request(method, &uri)
            .headers(parts.headers)
            .send()
            .await
            .map_err(|e| anyhow!("{}: {}", self.display, e.without_url()))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| anyhow!("{}: {}", self.display, e.without_url()))?;
        Ok((status, body))
    }

    /// WebHDFS RENAME (opendal's WebHDFS service has none): replaces `to` if it exists.
    async fn webhdfs_rename(&self, t: &WebHdfsTarget, from: &str, to: &str) -> Result<()> {
        let _ = self.op.delete(to).await;
        let mut url = format!(
            "{}/webhdfs/v1{}?op=RENAME&destination={}",
            t.endpoint,
            encode(&format!("{}{from}", t.root), true),
            encode(&format!("{}{to}", t.root), true)
        );
        if let Some(u) = &t.user {
            url.push_str(&format!("&user.name={}", encode(u, false)));
        }
        let resp = self
            .http
            .put(&url)
            .send()
            .await
            .map_err(|e| anyhow!("{}: {}", self.display, e.without_url()))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let ok = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["boolean"].as_bool())
            .unwrap_or(false);
        if !status.is_success() || !ok {
            bail!("WebHDFS RENAME answered HTTP {status}: {}", body.trim());
        }
        Ok(())
    }

    /// Removes a whole directory tree (and, on S3, aborts the uploads under it).
    ///
    /// # Errors
    /// On I/O failure.
    pub async fn remove_dir(&self, dir: &str) -> Result<()> {
        let dir = if dir.ends_with('/') {
            dir.to_string()
        } else {
            format!("{dir}/")
        };
        self.abort_uploads(&dir).await?;
        self.op
            .delete_with(&dir)
            .recursive(true)
            .await
            .with_context(|| format!("cannot remove {dir} at {}", self.display))
    }
}

/// The bucket-relative key of a destination path.
fn s3_key(t: &S3Target, path: &str) -> String {
    if t.prefix.is_empty() {
        path.to_string()
    } else {
        format!("{}/{path}", t.prefix)
    }
}

/// Percent-encodes all but unreserved characters (and `/` when `keep_slash`).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `Code: Message` of an S3 error body (never echoes the rest, which may name the key id).
fn s3_error(body: &[u8]) -> String {
    #[derive(serde::Deserialize, Default)]
    #[serde(default, rename_all = "PascalCase")]
    struct Error {
        code: String,
        message: String,
    }
    let e: Error = quick_xml::de::from_str(&String::from_utf8_lossy(body)).unwrap_or_default();
    format!("{}: {}", e.code, e.message)
}

fn is_unreachable(e: &opendal::Error) -> bool {
    let mut text = e.to_string();
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        text.push_str(&s.to_string());
        src = s.source();
    }
    let t = text.to_ascii_lowercase();
    [
        "connect",
        "dns",
        "resolve",
        "refused",
        "timed out",
        "timeout",
    ]
    .iter()
    .any(|w| t.contains(w))
}

impl Sink {
    /// Opens `path` for reading by blocking code: a task streams it in pieces through a
    /// bounded channel, so memory stays bounded whatever the file size.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub async fn open_read(&self, path: &str) -> Result<ChannelReader> {
        use futures::StreamExt;
        let reader = self
            .op
            .reader_with(path)
            .chunk(1 << 20)
            .await
            .with_context(|| format!("cannot open {path} at {}", self.display))?;
        let mut stream = reader
            .into_bytes_stream(..)
            .await
            .with_context(|| format!("cannot read {path} at {}", self.display))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
        let name = path.to_string();
        tokio::spawn(async move {
            while let Some(piece) = stream.next().await {
                let failed = piece.is_err();
                let piece = piece.map_err(|e| std::io::Error::other(format!("{name}: {e}")));
                if tx.send(piece).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(ChannelReader {
            rx,
            cur: bytes::Bytes::new(),
        })
    }
}

/// A `Read` over pieces sent by an async task (see [`Sink::open_read`]); use it on a blocking
/// thread.
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    cur: bytes::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(piece) => self.cur = piece?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

fn tmp_name(path: &str) -> String {
    let (dir, name) = match path.rsplit_once('/') {
        Some((d, n)) => (format!("{d}/"), n),
        None => (String::new(), path),
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{dir}.{name}{TMP_MARK}{}-{nanos}", std::process::id())
}

/// A file being written: under a temporary name (file system, WebHDFS) or as an uncompleted
/// multipart upload (S3).
pub struct FileWriter {
    sink: Sink,
    writer: Option<opendal::Writer>,
    /// What is being written now (equals `path` on S3).
    tmp: String,
    path: String,
}

impl FileWriter {
    /// Appends bytes.
    ///
    /// # Errors
    /// On I/O failure.
    pub async fn write(&mut self, bytes: Vec<u8>) -> Result<()> {
        match self.writer.as_mut() {
            Some(w) => w
                .write(bytes)
                .await
                .with_context(|| format!("cannot write {} at {}", self.tmp, self.sink.display)),
            None => Err(anyhow!("{} is already closed", self.tmp)),
        }
    }

    /// Closes the file and gives it its final name (on S3: completes the upload).
    ///
    /// # Errors
    /// On I/O failure; the temporary file (or upload) is then left for cleanup.
    pub async fn commit(mut self) -> Result<()> {
        if let Some(mut w) = self.writer.take() {
            w.close()
                .await
                .with_context(|| format!("cannot close {} at {}", self.tmp, self.sink.display))?;
        }
        match &*self.sink.backend {
            Backend::S3(_) => Ok(()),
            Backend::Fs => self
                .sink
                .op
                .rename(&self.tmp, &self.path)
                .await
                .with_context(|| format!("cannot rename {} to {}", self.tmp, self.path)),
            Backend::WebHdfs(t) => self
                .sink
                .webhdfs_rename(t, &self.tmp, &self.path)
                .await
                .with_context(|| format!("cannot rename {} to {}", self.tmp, self.path)),
        }
    }

    /// Discards the file (on S3: aborts the upload; nothing was visible).
    pub async fn abort(mut self) {
        if let Some(mut w) = self.writer.take() {
            let _ = w.abort().await;
        }
        if !matches!(&*self.sink.backend, Backend::S3(_)) {
            let _ = self.sink.op.delete(&self.tmp).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded_once() {
        assert_eq!(
            encode("shop/2026T1/a.b_c-d~e", true),
            "shop/2026T1/a.b_c-d~e"
        );
        assert_eq!(encode("a b/ü+=", true), "a%20b/%C3%BC%2B%3D");
        assert_eq!(encode("a/b", false), "a%2Fb");
    }

    #[test]
    fn s3_error_bodies_give_code_and_message_only() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>NoSuchUpload</Code>\
            <Message>gone</Message><AWSAccessKeyId>AKIAEXAMPLEKEY</AWSAccessKeyId></Error>";
        assert_eq!(s3_error(body), "NoSuchUpload: gone");
        assert_eq!(s3_error(b"not xml"), ": ");
    }
}
