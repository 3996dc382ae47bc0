//! age encryption: recipients from the manifest, identities for reading, and the Read/Write
//! adapters of the pipeline (encode → compress → encrypt; decrypt → decompress → decode).
//!
//! Invariant: when recipients are set, every byte that reaches the destination (temporary
//! files included) has passed through the age writer; only `metadata.json` is plain, and it
//! holds no row data (chunk keys go to an encrypted `keys.json.age` per table).

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use age::secrecy::ExposeSecret;
use anyhow::{Context, Result, anyhow, bail};

/// Environment variable naming identity files (`:`-separated), like `--identity`.
pub const IDENTITY_ENV: &str = "STORAGETAPPER_IDENTITY";

/// Parsed age recipients (X25519).
#[derive(Clone, Default)]
pub struct Recipients(Arc<Vec<age::x25519::Recipient>>);

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.strings()).finish()
    }
}

impl Recipients {
    /// Parses `age1…` strings.
    ///
    /// # Errors
    /// Naming the first string that is not an X25519 recipient.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Recipients, String> {
        let mut out = Vec::new();
        for s in items {
            let s = s.trim();
            let r: age::x25519::Recipient = s
                .parse()
                .map_err(|e| format!("`{s}` is not an age X25519 recipient (age1…): {e}"))?;
            out.push(r);
        }
        Ok(Recipients(Arc::new(out)))
    }

    /// Reads a recipients file: one `age1…` per line, `#` comments and blank lines ignored.
    ///
    /// # Errors
    /// When the file cannot be read or a line is not a recipient (named with its number).
    pub fn from_file(path: &Path) -> Result<Recipients, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read recipients file {}: {e}", path.display()))?;
        let mut items = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            Recipients::parse([l]).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
            items.push(l.to_string());
        }
        Recipients::parse(items.iter().map(String::as_str))
    }

    /// Adds more.
    pub fn extend(&mut self, other: &Recipients) {
        let mut v: Vec<_> = self.0.as_ref().clone();
        v.extend(other.0.iter().cloned());
        self.0 = Arc::new(v);
    }

    /// None at all: no encryption.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `age1…` strings.
    pub fn strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    /// An age writer around `out`.
    ///
    /// # Errors
    /// When the age header cannot be written.
    pub fn encrypt<W: Write>(&self, out: W) -> Result<age::stream::StreamWriter<W>> {
        let enc = age::Encryptor::with_recipients(self.0.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| anyhow!("age: {e}"))?;
        enc.wrap_output(out).context("age: cannot write the header")
    }

    /// Encrypts a small buffer whole.
    ///
    /// # Errors
    /// On encryption failure.
    pub fn encrypt_bytes(&self, plain: &[u8]) -> Result<Vec<u8>> {
        let mut w = self.encrypt(Vec::with_capacity(plain.len() + 256))?;
        w.write_all(plain)?;
        Ok(w.finish()?)
    }
}

/// Identities for decrypting, with the files they came from (for messages).
#[derive(Clone, Default)]
pub struct Identities {
    ids: Arc<Vec<Box<dyn age::Identity + Send + Sync>>>,
    /// Files they were read from.
    pub files: Vec<PathBuf>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("files", &self.files)
            .finish()
    }
}

impl Identities {
    /// Reads age identity files (`--identity`, else `STORAGETAPPER_IDENTITY`).
    ///
    /// # Errors
    /// Naming the file that cannot be read or holds no identity.
    pub fn load(files: &[PathBuf]) -> Result<Identities> {
        let mut files = files.to_vec();
        if files.is_empty()
            && let Some(v) = std::env::var_os(IDENTITY_ENV)
        {
            files = std::env::split_paths(&v).collect();
        }
        let mut ids: Vec<Box<dyn age::Identity + Send + Sync>> = Vec::new();
        for f in &files {
            let file = age::IdentityFile::from_file(f.to_string_lossy().into_owned())
                .with_context(|| format!("cannot read identity file {}", f.display()))?;
            let found = file
                .into_identities()
                .map_err(|e| anyhow!("identity file {}: {e}", f.display()))?;
            if found.is_empty() {
                bail!("identity file {} holds no age identity", f.display());
            }
            ids.extend(found);
        }
        Ok(Identities {
            ids: Arc::new(ids),
            files,
        })
    }

    /// Any identity at all?
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn describe(&self) -> String {
        if self.files.is_empty() {
            format!("no identity given (use --identity FILE or {IDENTITY_ENV})")
        } else {
            format!(
                "identities from {}",
                self.files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }

    /// An age reader around `input`; `name` is the file, for messages.
    ///
    /// # Errors
    /// [`WrongKey`] when no identity opens it; other errors when it is not an age file.
    pub fn decrypt<R: Read>(&self, input: R, name: &str) -> Result<age::stream::StreamReader<R>> {
        let dec =
            age::Decryptor::new(input).map_err(|e| anyhow!("{name} is not an age file: {e}"))?;
        dec.decrypt(self.ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => anyhow::Error::new(WrongKey {
                    file: name.to_string(),
                    tried: self.describe(),
                }),
                other => anyhow!("cannot decrypt {name}: {other}"),
            })
    }
}

/// No identity opens a file.
#[derive(Debug, thiserror::Error)]
#[error("cannot open {file}: it is encrypted to other recipients ({tried})")]
pub struct WrongKey {
    /// The file.
    pub file: String,
    /// Which identities were tried.
    pub tried: String,
}

/// The plain bytes of a stored file: decrypt when it ends in `.age`, then decompress when it
/// ends in `.zst`.
///
/// # Errors
/// When decryption cannot start.
pub fn plain_reader(
    input: impl Read + Send + 'static,
    name: &str,
    ids: &Identities,
) -> Result<Box<dyn Read + Send>> {
    let base = name.strip_suffix(".age");
    let r: Box<dyn Read + Send> = match base {
        Some(_) => Box::new(ids.decrypt(BufReader::with_capacity(1 << 16, input), name)?),
        None => Box::new(input),
    };
    let base = base.unwrap_or(name);
    Ok(if base.ends_with(".zst") {
        Box::new(zstd::stream::read::Decoder::new(r).context("zstd")?)
    } else {
        r
    })
}

/// A new X25519 identity: (key-file text, recipient).
pub fn generate_identity() -> (String, String) {
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let text = format!(
        "# created: {}\n# public key: {recipient}\n{}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        id.to_string().expose_secret()
    );
    (text, recipient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_then_decrypt_and_wrong_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let (text, recipient) = generate_identity();
        let key = dir.path().join("key.txt");
        std::fs::write(&key, text).expect("write");
        let r = Recipients::parse([recipient.as_str()]).expect("recipient");
        let sealed = r.encrypt_bytes(b"hello rows").expect("encrypt");
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
        let ids = Identities::load(std::slice::from_ref(&key)).expect("identities");
        let mut plain = String::new();
        ids.decrypt(&sealed[..], "x.age")
            .expect("decrypt")
            .read_to_string(&mut plain)
            .expect("read");
        assert_eq!(plain, "hello rows");
        let (other, _) = generate_identity();
        let other_key = dir.path().join("other.txt");
        std::fs::write(&other_key, other).expect("write");
        let wrong = Identities::load(&[other_key]).expect("identities");
        let e = wrong
            .decrypt(&sealed[..], "x.age")
            .err()
            .expect("wrong key");
        assert!(e.is::<WrongKey>(), "{e}");
        assert!(e.to_string().contains("other.txt"), "{e}");
    }

    #[test]
    fn bad_recipient_is_named() {
        let e = Recipients::parse(["age1notakey"]).expect_err("error");
        assert!(e.contains("age1notakey"), "{e}");
    }
}
