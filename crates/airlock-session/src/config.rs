//! The companion's settings: a small TOML file (`--config PATH`, default
//! `/etc/airlock/session.toml`), read at every start, every error naming
//! the file and the field.
//!
//! ```toml
//! url = "https://airlock.example.com"      # where recordings go; omit to keep them in the spool
//! token_file = "/etc/airlock/session.token" # an API token with the `report` scope
//! krl = "/etc/ssh/airlock_revoked.krl"      # the KRL sshd reads (RevokedKeys)
//! spool_dir = "/var/spool/airlock-session"  # recordings not sent yet
//! host = "web1"                             # this host's name in records (default: its hostname)
//! spool_max_bytes = 268435456               # the spool's bound (default 256 MiB)
//! retry_for = 600                           # seconds a session's sender keeps trying (default 600)
//! ssh_keygen = "/usr/bin/ssh-keygen"        # tests the certificate against the KRL
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the companion looks without `--config`.
pub const DEFAULT_PATH: &str = "/etc/airlock/session.toml";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub url: Option<String>,
    pub token_file: Option<PathBuf>,
    pub krl: PathBuf,
    pub spool_dir: PathBuf,
    pub host: String,
    pub spool_max_bytes: u64,
    pub retry_for: Duration,
    pub ssh_keygen: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    url: Option<String>,
    token_file: Option<PathBuf>,
    krl: PathBuf,
    spool_dir: PathBuf,
    host: Option<String>,
    spool_max_bytes: Option<u64>,
    retry_for: Option<u64>,
    ssh_keygen: Option<PathBuf>,
}

/// Why the settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}`: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let raw: Raw =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim().to_owned()))?;
        if let Some(url) = &raw.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(format!(
                    "url: `{url}` must start with `https://` (or `http://`)"
                )));
            }
            if raw.token_file.is_none() {
                return Err(invalid(
                    "token_file: must be set with `url` (an API token with the `report` scope)"
                        .to_owned(),
                ));
            }
        }
        let host = match raw.host {
            Some(host) if host.trim().is_empty() => {
                return Err(invalid("host: must not be empty".to_owned()))
            }
            Some(host) => host,
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "unknown-host".to_owned()),
        };
        Ok(Config {
            url: raw.url.map(|u| u.trim_end_matches('/').to_owned()),
            token_file: raw.token_file,
            krl: raw.krl,
            spool_dir: raw.spool_dir,
            host,
            spool_max_bytes: raw.spool_max_bytes.unwrap_or(256 * 1024 * 1024),
            retry_for: Duration::from_secs(raw.retry_for.unwrap_or(600)),
            ssh_keygen: raw
                .ssh_keygen
                .unwrap_or_else(|| PathBuf::from("ssh-keygen")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_reads_with_defaults_and_refuses_naming_the_field() {
        let path = Path::new("session.toml");
        let c = Config::parse(path, "krl = \"/k\"\nspool_dir = \"/s\"\nhost = \"web1\"\n").unwrap();
        assert_eq!((c.url, c.host.as_str()), (None, "web1"));
        assert_eq!(c.retry_for, Duration::from_secs(600));
        let e = Config::parse(
            path,
            "krl = \"/k\"\nspool_dir = \"/s\"\nurl = \"https://a\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("token_file"), "{e}");
        let e = Config::parse(
            path,
            "krl = \"/k\"\nspool_dir = \"/s\"\nurl = \"ftp://a\"\ntoken_file = \"/t\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("url: `ftp://a`"), "{e}");
        let e = Config::parse(path, "krl = \"/k\"\nspool = \"/s\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("spool"), "{e}");
    }
}
