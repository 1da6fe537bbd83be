//! The effective settings of `weft node run`: weft.toml, `WEFT_*`
//! environment variables and command-line flags, layered.
//!
//! ```text
//! flag (--api …)                     highest
//! environment (WEFT_API=…)
//! DIR/weft.toml (api = "…")
//! default (Config::default())       lowest
//! ```
//!
//! Layout: [`layers`] builds one tree of values from the file, the
//! environment ([`env`] names the variables) and the flags, each leaf
//! remembering where it came from; [`de`] deserializes that tree into
//! [`Config`] (`#[serde(default, deny_unknown_fields)]`), so a key missing
//! from every layer takes its default and a key no field has is an error;
//! [`print`] renders the result for `weft node config` ([`command`]).
//!
//! Rules:
//! - No code here names a setting: a key added to [`Config`] (a scalar, a
//!   list, an optional value or a table) is read from `WEFT_<KEY>` (and
//!   `WEFT_<TABLE>__<KEY>`) with no change to this module.
//! - An environment value is parsed by the type of the field it sets:
//!   integers, booleans, strings, lists (comma-separated, or a TOML array),
//!   tables (a TOML inline table). A value that does not fit names the
//!   variable.
//! - A `WEFT_*` variable that is neither a setting nor on
//!   [`env::NOT_SETTINGS`] is an error, never ignored.
//! - Secrets ([`crate::layout::SECRET_KEYS`], and passwords in URLs) are
//!   never printed; errors never echo an environment variable's value.

pub mod de;
pub mod env;
pub mod layers;
pub mod print;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::layout::{Config, NodeDir};

pub use layers::Layers;

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `Config::default()`: no layer set it.
    Default,
    /// The node directory's weft.toml.
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
    /// A command-line flag, like `--api`.
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// A flag of `weft node run` that sets a weft.toml key.
#[derive(Clone, Debug)]
pub struct FlagValue {
    /// The weft.toml key, like `api`.
    pub key: &'static str,
    /// The flag, like `--api`.
    pub flag: &'static str,
    /// Its value.
    pub value: toml::Value,
}

/// The effective settings and where each came from.
#[derive(Debug)]
pub struct Resolved {
    /// The settings the node runs with.
    pub config: Config,
    /// The layered values, to say where each setting came from.
    pub layers: Layers,
}

impl Resolved {
    /// Where the setting at `path` (dotted, like `decision_log.url`) came from.
    pub fn source(&self, path: &str) -> Source {
        self.layers.source(path)
    }

    /// `key (from SOURCE)`, for error messages about a setting's value.
    pub fn describe(&self, path: &str) -> String {
        format!("{path} (from {})", self.source(path))
    }
}

/// Reads the settings of the node in `dir`: `config_file` (which must
/// exist) or else `dir`'s weft.toml (if any), then the `WEFT_*` variables
/// among `vars`, then `flags`. Errors are one line naming the file, the
/// variable or the flag.
pub fn resolve(
    dir: &NodeDir,
    config_file: Option<&Path>,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
    flags: &[FlagValue],
) -> Result<Resolved, String> {
    let file = config_file.map_or_else(|| dir.config(), Path::to_path_buf);
    let mut layers = Layers::default();
    if config_file.is_some() || file.exists() {
        // The file alone first, so that its errors carry toml's line and
        // column.
        Config::load(&file)?;
        layers.add_file(&file)?;
    }
    layers.add_env(env::settings_from(vars)?)?;
    for f in flags {
        layers.add_flag(f);
    }
    let config = layers.config()?;
    Ok(Resolved { config, layers })
}

/// [`resolve`] with this process's environment.
pub fn resolve_from_process(
    dir: &Path,
    config_file: Option<&Path>,
    flags: &[FlagValue],
) -> Result<Resolved, String> {
    resolve(&NodeDir::new(dir), config_file, std::env::vars_os(), flags)
}

#[cfg(test)]
mod tests;
