//! The destination: one opendal [`Operator`] built from the manifest's URL, wrapped in retry
//! (with jitter), timeout and logging layers, and the write discipline on top of it.
//!
//! Invariant: a file is written under a temporary name and only renamed to its final name when
//! whole, so a final name always holds a complete file; `metadata.json` is written last.

use anyhow::{Context, Result};
use opendal::Operator;
use opendal::layers::{LoggingLayer, RetryLayer, TimeoutLayer};

use crate::manifest::DestinationUrl;

/// Marks temporary files; never part of a final name.
pub const TMP_MARK: &str = ".tmp-";

/// The destination.
#[derive(Clone, Debug)]
pub struct Sink {
    op: Operator,
    /// For messages.
    pub display: String,
}

impl Sink {
    /// Builds the operator for a destination.
    ///
    /// # Errors
    /// When the backend cannot be configured (e.g. the directory cannot be created).
    pub fn new(url: &DestinationUrl) -> Result<Sink> {
        match url {
            DestinationUrl::File(dir) => {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("cannot create destination directory {}", dir.display())
                })?;
                let root = dir.to_string_lossy().to_string();
                let builder = opendal::services::Fs::default().root(&root);
                let op = Operator::new(builder)
                    .with_context(|| format!("destination {root}"))?
                    .layer(TimeoutLayer::new())
                    .layer(RetryLayer::new().with_jitter().with_max_times(5))
                    .layer(LoggingLayer::default());
                Ok(Sink {
                    op,
                    display: format!("file://{root}"),
                })
            }
        }
    }

    /// Starts a file that becomes visible at `path` only after [`FileWriter::commit`].
    ///
    /// # Errors
    /// When the temporary file cannot be created.
    pub async fn create(&self, path: &str) -> Result<FileWriter> {
        let tmp = tmp_name(path);
        let writer = self
            .op
            .writer(&tmp)
            .await
            .with_context(|| format!("cannot create {tmp} at {}", self.display))?;
        Ok(FileWriter {
            op: self.op.clone(),
            writer: Some(writer),
            tmp,
            path: path.to_string(),
        })
    }

    /// Writes a small file whole (temporary name, then rename).
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

    /// Does `path` exist?
    ///
    /// # Errors
    /// On I/O failure other than not-found.
    pub async fn exists(&self, path: &str) -> Result<bool> {
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

    /// Removes a whole directory tree.
    ///
    /// # Errors
    /// On I/O failure.
    pub async fn remove_dir(&self, dir: &str) -> Result<()> {
        let dir = if dir.ends_with('/') {
            dir.to_string()
        } else {
            format!("{dir}/")
        };
        self.op
            .delete_with(&dir)
            .recursive(true)
            .await
            .with_context(|| format!("cannot remove {dir} at {}", self.display))
    }
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

/// A file being written under a temporary name.
pub struct FileWriter {
    op: Operator,
    writer: Option<opendal::Writer>,
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
                .with_context(|| format!("cannot write {}", self.tmp)),
            None => Err(anyhow::anyhow!("{} is already closed", self.tmp)),
        }
    }

    /// Closes the file and gives it its final name.
    ///
    /// # Errors
    /// On I/O failure; the temporary file is then left for cleanup.
    pub async fn commit(mut self) -> Result<()> {
        if let Some(mut w) = self.writer.take() {
            w.close()
                .await
                .with_context(|| format!("cannot close {}", self.tmp))?;
        }
        self.op
            .rename(&self.tmp, &self.path)
            .await
            .with_context(|| format!("cannot rename {} to {}", self.tmp, self.path))
    }

    /// Discards the file.
    pub async fn abort(mut self) {
        if let Some(mut w) = self.writer.take() {
            let _ = w.abort().await;
        }
        let _ = self.op.delete(&self.tmp).await;
    }
}
