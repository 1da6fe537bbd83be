//! The layered values: one tree built from weft.toml, the environment and
//! the flags, in that order, each later layer replacing what an earlier
//! one set at the same key. Every leaf remembers where it came from.

use std::path::Path;

use super::env::EnvSetting;
use super::{FlagValue, Source};
use crate::layout::Config;

/// A value in the tree.
#[derive(Clone, Debug)]
pub enum Node {
    /// A table: its keys in the order they were first set.
    Table {
        /// The keys and their values.
        entries: Vec<(String, Node)>,
        /// Which layer made the table.
        source: Source,
        /// Its dotted key path (empty for the root).
        path: String,
    },
    /// A typed value, from weft.toml or a flag.
    Value {
        /// The value.
        value: toml::Value,
        /// Where it came from.
        source: Source,
        /// Its dotted key path.
        path: String,
    },
    /// An environment variable's text, parsed when the field's type is known.
    Env {
        /// The text.
        raw: String,
        /// The variable.
        var: String,
        /// Its dotted key path.
        path: String,
    },
}

impl Node {
    /// Where this value came from.
    pub fn source(&self) -> Source {
        match self {
            Node::Table { source, .. } | Node::Value { source, .. } => source.clone(),
            Node::Env { var, .. } => Source::Env(var.clone()),
        }
    }

    /// How an error about this value names its place: the variable, the
    /// flag, or the key and the file.
    pub fn place(&self) -> String {
        match self {
            Node::Env { var, .. } => format!("environment variable {var}"),
            Node::Table { source, path, .. } | Node::Value { source, path, .. } => match source {
                Source::Env(var) => format!("environment variable {var}"),
                Source::Flag(flag) => format!("flag {flag}"),
                Source::File(file) => format!("{path} in {}", file.display()),
                Source::Default => format!("setting {path}"),
            },
        }
    }

    fn from_toml(value: toml::Value, source: &Source, path: String) -> Node {
        match value {
            toml::Value::Table(t) => Node::Table {
                entries: t
                    .into_iter()
                    .map(|(k, v)| {
                        let p = join(&path, &k);
                        (k, Node::from_toml(v, source, p))
                    })
                    .collect(),
                source: source.clone(),
                path,
            },
            value => Node::Value {
                value,
                source: source.clone(),
                path,
            },
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The layered tree.
#[derive(Clone, Debug)]
pub struct Layers {
    root: Node,
}

impl Default for Layers {
    fn default() -> Self {
        Layers {
            root: Node::Table {
                entries: Vec::new(),
                source: Source::Default,
                path: String::new(),
            },
        }
    }
}

impl Layers {
    /// Adds weft.toml at `file`.
    pub fn add_file(&mut self, file: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            format!(
                "{} is not a valid weft.toml: {}",
                file.display(),
                e.message()
            )
        })?;
        let source = Source::File(file.to_owned());
        for (k, v) in table {
            let node = Node::from_toml(v, &source, k.clone());
            self.insert(&[k], node, &source)?;
        }
        Ok(())
    }

    /// Adds settings from the environment.
    pub fn add_env(&mut self, settings: Vec<EnvSetting>) -> Result<(), String> {
        for s in settings {
            let node = Node::Env {
                raw: s.value,
                var: s.var.clone(),
                path: s.path.join("."),
            };
            self.insert(&s.path, node, &Source::Env(s.var))?;
        }
        Ok(())
    }

    /// Adds a flag's value.
    pub fn add_flag(&mut self, flag: &FlagValue) {
        let node = Node::Value {
            value: flag.value.clone(),
            source: Source::Flag(flag.flag),
            path: flag.key.to_owned(),
        };
        // A top-level key never meets a non-table on its way.
        let _ = self.insert(&[flag.key.to_owned()], node, &Source::Flag(flag.flag));
    }

    /// Sets `node` at `path`, making the tables on the way as `source`.
    fn insert(&mut self, path: &[String], node: Node, source: &Source) -> Result<(), String> {
        let Some((last, parents)) = path.split_last() else {
            return Ok(());
        };
        let mut here = &mut self.root;
        let mut walked = String::new();
        for key in parents {
            walked = join(&walked, key);
            let Node::Table { entries, .. } = here else {
                unreachable!("only tables are walked into")
            };
            let i = match entries.iter().position(|(k, _)| k == key) {
                Some(i) => i,
                None => {
                    entries.push((
                        key.clone(),
                        Node::Table {
                            entries: Vec::new(),
                            source: source.clone(),
                            path: walked.clone(),
                        },
                    ));
                    entries.len() - 1
                }
            };
            let slot = &mut entries[i].1;
            if let Node::Env { raw, var, path } = slot {
                // A whole table from one variable, refined by another.
                *slot = inline_table(raw, var, path)?;
            }
            if !matches!(slot, Node::Table { .. }) {
                return Err(format!(
                    "{}: `{walked}` is not a table, so it has no key `{}` (from {})",
                    slot.place(),
                    path[parents.len()..].join("."),
                    source
                ));
            }
            here = slot;
        }
        let Node::Table { entries, .. } = here else {
            unreachable!("only tables are walked into")
        };
        match entries.iter_mut().find(|(k, _)| k == last) {
            Some((_, slot)) => *slot = node,
            None => entries.push((last.clone(), node)),
        }
        Ok(())
    }

    /// The node at `path`, or the nearest value above it that holds it.
    fn find(&self, path: &str) -> Option<&Node> {
        let mut here = &self.root;
        for key in path.split('.') {
            match here {
                Node::Table { entries, .. } => {
                    here = &entries.iter().find(|(k, _)| k == key)?.1;
                }
                // An inline table from one source holds all its keys.
                _ => return Some(here),
            }
        }
        Some(here)
    }

    /// Where the setting at `path` came from.
    pub fn source(&self, path: &str) -> Source {
        self.find(path).map_or(Source::Default, Node::source)
    }

    /// The settings: every layer's values over the defaults.
    pub fn config(&self) -> Result<Config, String> {
        self.deserialize()
    }

    /// The layered values as `T` (which takes its defaults for what no
    /// layer set).
    pub fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        T::deserialize(super::de::NodeDe(self.root.clone())).map_err(|e| e.to_string())
    }
}

/// An environment variable holding a whole table, as a table.
fn inline_table(raw: &str, var: &str, path: &str) -> Result<Node, String> {
    let value = super::de::parse_toml_value(raw).map_err(|e| {
        format!("environment variable {var}: not a TOML inline table like {{key = \"value\"}}: {e}")
    })?;
    if !value.is_table() {
        return Err(format!(
            "environment variable {var}: `{path}` is a table: write it as {{key = \"value\"}}, or set its keys with {var}__KEY"
        ));
    }
    Ok(Node::from_toml(
        value,
        &Source::Env(var.to_owned()),
        path.to_owned(),
    ))
}
