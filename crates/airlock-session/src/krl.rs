//! Whether the KRL sshd reads lists the session's certificate. The KRL is
//! watched, not read at every look: its identity (inode, size, mtime) is
//! taken every poll and the certificate tested again (`ssh-keygen -Q`, the
//! same code sshd's check shares) only when it changed. The connector
//! replaces the file by a rename, so a reader never sees half of one.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What `ssh-keygen -Q` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Listed,
    NotListed,
    /// The KRL or the certificate could not be read; the reason.
    Unknown(String),
}

pub struct KrlWatch {
    krl: PathBuf,
    keygen: PathBuf,
    seen: Option<(u64, u64, u64, i64, i64)>,
    last: Verdict,
}

impl KrlWatch {
    pub fn new(krl: &Path, keygen: &Path) -> KrlWatch {
        KrlWatch {
            krl: krl.to_owned(),
            keygen: keygen.to_owned(),
            seen: None,
            last: Verdict::Unknown("not tested yet".to_owned()),
        }
    }

    /// The verdict on `certificate` (a file holding it), tested again only
    /// when the KRL changed since the last test, or when that test could
    /// not tell.
    pub fn look(&mut self, certificate: &Path) -> &Verdict {
        let identity = std::fs::metadata(&self.krl)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()));
        let unchanged = identity.is_some() && identity == self.seen;
        if !unchanged || matches!(self.last, Verdict::Unknown(_)) {
            self.seen = identity;
            self.last = test(&self.keygen, &self.krl, certificate);
        }
        &self.last
    }
}

/// `ssh-keygen -Q -f KRL CERT`: 0 and `ok`, 1 and `REVOKED`, anything else
/// an error.
pub fn test(keygen: &Path, krl: &Path, certificate: &Path) -> Verdict {
    let out = Command::new(keygen)
        .arg("-Q")
        .arg("-f")
        .arg(krl)
        .arg(certificate)
        .stdin(Stdio::null())
        .output();
    match out {
        Err(e) => Verdict::Unknown(format!("cannot run `{}`: {e}", keygen.display())),
        Ok(out) => {
            let said = String::from_utf8_lossy(&out.stdout);
            match out.status.code() {
                Some(0) if said.trim_end().ends_with(": ok") => Verdict::NotListed,
                Some(1) if said.contains("REVOKED") => Verdict::Listed,
                _ => Verdict::Unknown(format!(
                    "`ssh-keygen -Q` on `{}` failed ({}): {}",
                    krl.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
            }
        }
    }
}
