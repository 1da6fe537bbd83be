//! Secret key files: PKCS#8 PEM, readable by their owner only.
//!
//! A key file is created with mode 0600 and never overwritten. Reading one
//! whose mode grants any permission to group or others fails, as ssh does:
//! a secret that others could have read is no longer a secret.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use thiserror::Error;
use weft_protocol::identity::{KeyError, SecretKey};
use zeroize::Zeroizing;

/// The largest key file read (a PKCS#8 ed25519 PEM is about 170 bytes).
const MAX_KEY_FILE_LEN: u64 = 16 << 10;

/// Why a key file could not be written or read. Each message is one sentence.
#[derive(Debug, Error)]
pub enum KeyFileError {
    /// The file exists already.
    #[error("refusing to overwrite {}: the file already exists", .0.display())]
    Exists(PathBuf),
    /// The file grants permissions to group or others.
    #[error(
        "key file {path} is {what} by others (mode {mode:04o}); run chmod 600 {path}",
        path = .path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// `readable`, `writable` or `accessible`.
        what: &'static str,
        /// The permission bits.
        mode: u32,
    },
    /// The file could not be opened, read or written.
    #[error("cannot {action} key file {}: {source}", .path.display())]
    Io {
        /// What was being done: `create`, `write`, `read`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is too large to be a key.
    #[error("{} is not a key file: it is larger than {MAX_KEY_FILE_LEN} bytes", .0.display())]
    TooLarge(PathBuf),
    /// The file's content is not a usable key.
    #[error("{}: {source}", .path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with the key.
        source: KeyError,
    },
    /// The operating system's random source failed.
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
}

/// Generates a new secret key from the operating system's random source.
pub fn generate() -> Result<SecretKey, KeyFileError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice()).map_err(|e| KeyFileError::Random(e.to_string()))?;
    Ok(SecretKey::from_seed(*seed))
}

/// Writes `key` to a new file at `path` as PKCS#8 PEM with mode 0600.
/// Refuses to overwrite an existing file.
pub fn write(path: &Path, key: &SecretKey) -> Result<(), KeyFileError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                KeyFileError::Exists(path.to_path_buf())
            } else {
                io_err("create", path, e)
            }
        })?;
    let pem = key.to_pkcs8_pem();
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err("write", path, e))
}

/// Reads a secret key from `path`, refusing a file that group or others may
/// access in any way.
pub fn read(path: &Path) -> Result<SecretKey, KeyFileError> {
    let file = File::open(path).map_err(|e| io_err("read", path, e))?;
    // Check the mode of the file we opened, not of whatever is at the path now.
    let meta = file.metadata().map_err(|e| io_err("read", path, e))?;
    check_mode(path, meta.permissions().mode())?;
    if meta.len() > MAX_KEY_FILE_LEN {
        return Err(KeyFileError::TooLarge(path.to_path_buf()));
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_KEY_FILE_LEN + 1)
        .read_to_string(&mut text)
        .map_err(|e| io_err("read", path, e))?;
    SecretKey::from_pkcs8_pem(&text).map_err(|source| KeyFileError::Key {
        path: path.to_path_buf(),
        source,
    })
}

fn check_mode(path: &Path, mode: u32) -> Result<(), KeyFileError> {
    let perm = mode & 0o777;
    if perm & 0o077 == 0 {
        return Ok(());
    }
    let what = if perm & 0o044 != 0 {
        "readable"
    } else if perm & 0o022 != 0 {
        "writable"
    } else {
        "accessible"
    };
    Err(KeyFileError::Permissions {
        path: path.to_path_buf(),
        what,
        mode: perm,
    })
}

fn io_err(action: &'static str, path: &Path, source: io::Error) -> KeyFileError {
    KeyFileError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let key = generate().unwrap();
        write(&path, &key).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read(&path).unwrap().public(), key.public());
    }

    #[test]
    fn refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        write(&path, &generate().unwrap()).unwrap();
        let err = write(&path, &generate().unwrap()).unwrap_err().to_string();
        assert!(err.starts_with("refusing to overwrite"), "{err}");
        assert!(err.ends_with("k.key: the file already exists"), "{err}");
    }

    #[test]
    fn refuses_open_modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        write(&path, &generate().unwrap()).unwrap();
        for (mode, what) in [
            (0o644, "readable"),
            (0o620, "writable"),
            (0o601, "accessible"),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read(&path).unwrap_err().to_string();
            let p = path.display();
            assert_eq!(
                err,
                format!("key file {p} is {what} by others (mode {mode:04o}); run chmod 600 {p}")
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        read(&path).unwrap();
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(generate().unwrap().public(), generate().unwrap().public());
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        f.write_all(b"hello").unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(
            err.contains("the secret key is not a valid ed25519 PKCS#8 PEM document"),
            "{err}"
        );
    }
}
