//! `airlock ssh`: the requester's side of the SSH certificate authority. It
//! finds the user's public key, and once the grant is active writes the
//! certificate where ssh looks for it (`id_ed25519-cert.pub` beside
//! `id_ed25519`), so a plain `ssh` uses it with the key.

use crate::terminal::say;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use airlock_server::api::RequestView;
use anyhow::{bail, Context};

/// The keys ssh tries by default, in the order `airlock ssh` picks them.
const DEFAULT_KEYS: [&str; 3] = ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"];

/// The requester's key pair, as files.
pub struct UserKey {
    /// The private key (the `.pub` path without `.pub`): what `ssh -i` takes.
    private: PathBuf,
    /// The OpenSSH public key line sent with the request.
    line: String,
}

impl UserKey {
    /// The key `--key` names (its private half or its `.pub`), or else the
    /// first of `~/.ssh/id_ed25519.pub`, `id_ecdsa.pub`, `id_rsa.pub` that
    /// exists.
    pub fn find(key: Option<&Path>) -> anyhow::Result<UserKey> {
        let public = match key {
            Some(path) if path.extension().is_some_and(|e| e == "pub") => path.to_owned(),
            Some(path) => {
                let public = with_suffix(path, ".pub");
                if !public.exists() {
                    bail!(
                        "--key: `{}` has no public half `{}` (write it with `ssh-keygen -y -f {} > {}`)",
                        path.display(),
                        public.display(),
                        path.display(),
                        public.display()
                    );
                }
                public
            }
            None => {
                let home = std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .context("HOME is not set: name the key with --key")?;
                let dir = Path::new(&home).join(".ssh");
                DEFAULT_KEYS
                    .iter()
                    .map(|name| dir.join(name))
                    .find(|p| p.is_file())
                    .with_context(|| {
                        format!(
                            "no SSH public key in `{}` ({}): make one with `ssh-keygen -t ed25519` or name it with --key",
                            dir.display(),
                            DEFAULT_KEYS.join(", ")
                        )
                    })?
            }
        };
        let text = fs::read_to_string(&public)
            .with_context(|| format!("cannot read `{}`", public.display()))?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .with_context(|| format!("`{}` holds no public key", public.display()))?
            .to_owned();
        let key_type = line.split_whitespace().next().unwrap_or_default();
        if key_type.contains("-cert-v0") {
            bail!(
                "`{}` is a certificate, not a public key: name the key itself with --key",
                public.display()
            );
        }
        if line.split_whitespace().nth(1).is_none() || key_type.starts_with("-----") {
            bail!(
                "`{}` is not an OpenSSH public key (one line like `ssh-ed25519 AAAA… comment`)",
                public.display()
            );
        }
        let private = public
            .to_str()
            .and_then(|p| p.strip_suffix(".pub"))
            .map_or_else(|| public.with_extension(""), PathBuf::from);
        Ok(UserKey { private, line })
    }

    /// The public key line to send with the request.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// Where ssh looks for the key's certificate: `<key>-cert.pub`.
    fn certificate_path(&self) -> PathBuf {
        with_suffix(&self.private, "-cert.pub")
    }

    /// Writes the certificate beside the key (mode 0644) so a reader sees
    /// the old file or the new one, never half of one.
    pub fn write_certificate(&self, certificate: &str) -> anyhow::Result<PathBuf> {
        let path = self.certificate_path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let written = (|| -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)?;
            // `mode` is filtered by the umask; ssh wants no more than 0644.
            file.set_permissions(fs::Permissions::from_mode(0o644))?;
            file.write_all(format!("{}\n", certificate.trim()).as_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write `{}`", path.display()));
        }
        Ok(path)
    }

    /// Prints where the certificate is and how to use it.
    pub fn report(&self, path: &Path, request: &RequestView, json: bool) -> anyhow::Result<()> {
        if json {
            let out = serde_json::json!({
                "certificate_file": path,
                "request": request,
            });
            println!(
                "{}",
                crate::terminal::json_safe(&serde_json::to_string_pretty(&out)?)
            );
            return Ok(());
        }
        say!("certificate: {}", path.display());
        say!("request:     {}", request.id);
        say!(
            "expires:     {}",
            request.expires_at.as_deref().unwrap_or("-")
        );
        say!(
            "connect:     ssh -i {} ACCOUNT@HOST   (ssh uses the certificate beside the key)",
            self.private.display()
        );
        Ok(())
    }
}

/// The certificate of a request that `wait_for_decision` has settled, or why
/// there is none.
pub fn certificate_of(request: &RequestView) -> anyhow::Result<&str> {
    let why = request.end_reason.as_deref().unwrap_or("no reason given");
    match (request.state.as_str(), request.certificate.as_deref()) {
        ("active", Some(certificate)) => Ok(certificate),
        ("active", None) => bail!(
            "request `{}` is active but issued no certificate: `{}` is not an SSH entitlement \
             (end the access with `airlock release {}`)",
            request.id,
            request.entitlement,
            request.id
        ),
        ("approved", _) => bail!(
            "request `{}` is approved and starts at {}; its certificate will then be in \
             `airlock show {} --json`",
            request.id,
            request.activates_at.as_deref().unwrap_or("a later time"),
            request.id
        ),
        (state, _) => bail!("request `{}` is {state}: {why}", request.id),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
