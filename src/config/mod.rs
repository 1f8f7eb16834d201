//! Configuration: Dex's schema read from JSON or YAML, secrets resolved from their
//! env/file forms, validated with key paths in every message.
//!
//! [`load_file`] is the entry point: text → JSON value (keys matched like Go's
//! `encoding/json`, unknown keys reported) → [`schema::Config`] → CLI overrides →
//! [`Settings`] with every problem collected, each named by its key path.

pub(crate) mod decode;
pub(crate) mod duration;
pub mod effective;
pub(crate) mod env;
pub(crate) mod nix_store;
mod postgres;
mod resolve;
pub(crate) mod schema;
mod secrets;
pub mod settings;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;

pub use env::Env;
pub use resolve::SUPPORTED_GRANT_TYPES;
pub use settings::*;

pub(crate) use secrets::read_bounded;

/// Command-line values that replace the file's (when non-empty), as Dex's
/// `--web-http-addr`, `--telemetry-addr`.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub web_http: Option<String>,
    pub web_https: Option<String>,
    pub telemetry_http: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Unknown keys are errors (also switched on by
    /// `DEX_CONFIG_DISALLOW_UNKNOWN_FIELDS=true`).
    pub strict: bool,
    pub overrides: Overrides,
    pub env: Env,
}

/// One problem in the config, named by its key path (`connectors[0].config.baseURL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem that keeps the config from loading. `warnings` are the
/// non-fatal findings made along the way (an unknown key is often why a
/// required one looks missing), listed after the problems.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for problem in &self.problems {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{problem}")?;
        }
        for warning in &self.warnings {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "warning: {warning}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A loaded configuration and the warnings found while loading it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    pub warnings: Vec<Problem>,
}

/// Problems and warnings collected during a load.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Report {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Reads and loads a config file. The Nix-store rule looks at the path as given
/// and at its canonical form, so `/etc/oxidex.json` linked into the store counts.
pub fn load_file(path: &Path, options: &LoadOptions) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![Problem {
            path: String::new(),
            message: format!("cannot read config file {}: {e}", path.display()),
        }],
        warnings: Vec::new(),
    })?;
    let store_path = std::fs::canonicalize(path)
        .ok()
        .filter(|canonical| nix_store::is_in_nix_store(canonical));
    resolve::load(&text, path, store_path.as_deref(), options)
}

/// Loads config text. `path` picks the format (`.json` is JSON, anything else YAML)
/// and decides the Nix-store rule.
pub fn load_str(text: &str, path: &Path, options: &LoadOptions) -> Result<Loaded, ConfigError> {
    resolve::load(text, path, None, options)
}

/// The effective configuration for `check-config`, in Dex's schema
/// ([`effective::dex_schema`]): every default filled in, every secret redacted.
pub fn redacted_json(settings: &Settings) -> serde_json::Value {
    effective::dex_schema(settings)
}
