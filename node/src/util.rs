//! Small helpers that the CLI commands and the daemon share: text on one
//! line, and the files they read and write (bounded reads, the trust file,
//! new files, atomic replacements).
//!
//! A leaf: it uses no other module of this crate.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use weft_protocol::trust::{MAX_TRUST_ROOT_LEN, SignedRoot, from_trust_file};

/// The longest text [`shorten`] keeps, in characters.
const SHORT: usize = 300;

/// `text` on one line: every run of white space (newlines included) becomes
/// one space.
pub use weft_crdt::bundle::one_line_text as one_line;

/// `text` on one line, cut to at most 300 characters (an ellipsis marks a
/// cut).
pub fn shorten(text: &str) -> String {
    let flat = one_line(text);
    if flat.chars().count() <= SHORT {
        flat
    } else {
        let mut out: String = flat.chars().take(SHORT).collect();
        out.push('…');
        out
    }
}

/// An error and its causes, on one line, at most 300 characters.
pub fn error_line(e: &dyn std::error::Error) -> String {
    shorten(&weft_crdt::bundle::one_line(e))
}

/// Reads at most `max` bytes of `path`, refusing a longer file as not being
/// `what`.
pub fn read_limited(path: &Path, max: usize, what: &str) -> Result<Vec<u8>> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() > max {
        bail!(
            "{} is too large to be {what} (over {max} bytes)",
            path.display()
        );
    }
    Ok(bytes)
}

/// Reads a trust file (`trust.json`): its text and the signed root in it,
/// decoded but not verified.
pub fn read_trust_file(path: &Path) -> Result<(String, SignedRoot)> {
    let bytes = read_limited(path, MAX_TRUST_ROOT_LEN, "a trust file")?;
    let text = String::from_utf8(bytes).map_err(|_| {
        anyhow!(
            "{} is not a trust file: it is not UTF-8 text",
            path.display()
        )
    })?;
    let signed = from_trust_file(&text).with_context(|| path.display().to_string())?;
    Ok((text, signed))
}

/// Writes `bytes` to `path`: a new file, or (with `overwrite`) replacing an
/// existing one atomically. Secret keys are not written here: `keyfile`
/// writes them, with mode 0600.
pub fn write_new_file(path: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
    if overwrite {
        return write_atomic(path, bytes);
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow!(
                    "refusing to overwrite {}: the file already exists (pass --force to replace it)",
                    path.display()
                )
            } else {
                anyhow!("cannot create {}: {e}", path.display())
            }
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Replaces `path` with `bytes` atomically: writes `path.tmp`, syncs it, and
/// renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        bail!("cannot write {}: {e}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_on_one_line() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
        assert_eq!(shorten("a\n b"), "a b");
        assert!(shorten(&"x".repeat(400)).ends_with('…'));
        assert_eq!(shorten(&"x".repeat(400)).chars().count(), 301);
    }

    #[test]
    fn new_files_are_not_overwritten_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_new_file(&path, b"one", false).unwrap();
        let err = write_new_file(&path, b"two", false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        write_new_file(&path, b"three", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
        assert!(!dir.path().join("f.tmp").exists());
    }
}
