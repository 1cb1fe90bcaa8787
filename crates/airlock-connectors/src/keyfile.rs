//! Private key files (the SSH CA's, the audit checkpoint key): created once
//! readable by their owner only, and refused when other users can read them,
//! the rule ssh itself applies to private keys.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("`{path}` is not a regular file")]
    NotAFile { path: String },
    #[error("`{path}` is accessible to other users (mode {mode:o}): `chmod 600` it")]
    Exposed { path: String, mode: u32 },
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: io::Error,
    },
}

fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> KeyFileError + 'a {
    move |source| KeyFileError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

/// Reads a key file that only its owner may read.
pub fn read_private(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    let meta = fs::metadata(path).map_err(io_error("read", path))?;
    if !meta.is_file() {
        return Err(KeyFileError::NotAFile {
            path: path.display().to_string(),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Exposed {
            path: path.display().to_string(),
            mode,
        });
    }
    fs::read(path).map_err(io_error("read", path))
}

/// Whether `path` exists (a dangling symlink counts: it is not ours to replace).
pub fn exists(path: &Path) -> Result<bool, KeyFileError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error("inspect", path)(e)),
    }
}

/// Creates `path` holding `bytes` (mode 0600, missing directories 0700)
/// unless it exists; `false` when another process created it first, whose
/// key then wins. Written to a temporary file and hard-linked into place,
/// so nobody ever reads half a key.
pub fn create_private(path: &Path, bytes: &[u8]) -> Result<bool, KeyFileError> {
    let dir = parent_dir(path);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error("create the directory of", path))?;
    let tmp = sibling(path, ".tmp-new");
    write_new_file(&tmp, bytes, 0o600).map_err(io_error("write", &tmp))?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_error("create", path)(e)),
    }
}

/// `path` with `suffix` appended to its file name.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The directory `path` is in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
}

/// Writes a new file (replacing a leftover of the same name) and syncs it.
pub fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let _ = fs::remove_file(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_owner_only_and_refused_once_exposed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/k");
        assert!(!exists(&path).unwrap());
        assert!(create_private(&path, b"one").unwrap());
        assert!(!create_private(&path, b"two").unwrap());
        assert_eq!(read_private(&path).unwrap(), b"one");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_private(&path).unwrap_err().to_string();
        assert!(
            err.contains("mode 640") && err.contains("chmod 600"),
            "{err}"
        );
    }
}
