//! Where a config error is and how it reads: every message names the file,
//! line, column and the dotted field at fault. Also the one duration syntax
//! the config and the CLI share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;

use super::ConfigError;

/// The config text being read, to place errors in it and to resolve the
/// relative paths it names.
pub(super) struct Source<'a> {
    pub(super) path: &'a str,
    text: &'a str,
    /// The directory relative paths are anchored to (the config file's).
    base: &'a Path,
}

impl<'a> Source<'a> {
    pub(super) fn new(path: &'a str, text: &'a str, base: &'a Path) -> Self {
        Source { path, text, base }
    }

    /// Reads the whole text into its raw shape. serde_path_to_error names
    /// the field of a type error, which toml's own message leaves out once
    /// it has a span.
    pub(super) fn deserialize<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        serde_path_to_error::deserialize(toml::Deserializer::new(self.text)).map_err(|e| {
            let field = toml_field(e.path());
            let e = e.into_inner();
            let message = e.message().trim();
            let message = if field.is_empty() {
                message.to_owned()
            } else {
                format!("{field}: {message}")
            };
            self.error(e.span().unwrap_or(0..0), message)
        })
    }

    /// A path as the config wrote it, anchored to the config's directory.
    pub(super) fn resolve(&self, raw: &str) -> PathBuf {
        let p = PathBuf::from(raw);
        let joined = if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        };
        // Drop `.` components so logs show `dir/airlock.db`, not `dir/./airlock.db`.
        joined
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect::<PathBuf>()
    }

    pub(super) fn error(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> ConfigError {
        let before = self
            .text
            .get(..span.start.min(self.text.len()))
            .unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    pub(super) fn duration(
        &self,
        field: &str,
        raw: &Spanned<String>,
    ) -> Result<Duration, ConfigError> {
        parse_duration(raw.get_ref()).map_err(|e| self.error(raw.span(), format!("{field}: {e}")))
    }

    /// A duration that must lie within `range` (both ends included).
    pub(super) fn duration_between(
        &self,
        field: &str,
        raw: &Spanned<String>,
        (shortest, longest): (Duration, Duration),
    ) -> Result<Duration, ConfigError> {
        let value = self.duration(field, raw)?;
        if value < shortest || value > longest {
            return Err(self.error(
                raw.span(),
                format!(
                    "{field}: `{}` must be between {} and {}",
                    raw.get_ref(),
                    humantime::format_duration(shortest),
                    humantime::format_duration(longest)
                ),
            ));
        }
        Ok(value)
    }

    pub(super) fn id<T>(
        &self,
        field: &str,
        raw: &Spanned<String>,
        parse: fn(&str) -> Result<T, airlock_core::IdError>,
    ) -> Result<T, ConfigError> {
        parse(raw.get_ref())
            .map_err(|e| self.error(raw.span(), format!("{field}: `{}` {e}", raw.get_ref())))
    }
}

/// The dotted path of a field, without the segments toml's `Spanned`
/// adds internally.
fn toml_field(path: &serde_path_to_error::Path) -> String {
    path.iter()
        .map(ToString::to_string)
        .filter(|s| !s.starts_with("$__") && s != "?")
        .collect::<Vec<_>>()
        .join(".")
}

/// The one duration syntax of config files and policy annotations.
pub use airlock_core::time::parse_duration;
