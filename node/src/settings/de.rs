//! Deserializes the layered tree into [`crate::layout::Config`].
//!
//! Values from weft.toml and flags are TOML already and deserialize as
//! TOML does. An environment variable's text is parsed by what the field
//! asks for:
//!
//! | field type | the variable holds |
//! |---|---|
//! | integer | decimal digits, like `8` |
//! | boolean | `true` or `false` (also `1` or `0`) |
//! | string, path, enum | the text as it is, no quotes |
//! | list | items separated by commas (`a,b`), or a TOML array (`["a", "b"]`) |
//! | table | a TOML inline table (`{key = "value"}`), or one variable per key (`WEFT_TABLE__KEY`) |
//! | optional value | as for the value (an empty variable counts as unset) |
//!
//! Every error names where the value came from ([`Node::place`]) and
//! never echoes an environment variable's text.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::layers::Node;

/// An error while reading the settings: one line naming the value's place.
#[derive(Debug)]
pub struct SettingsError {
    message: String,
    place: Option<String>,
}

impl SettingsError {
    fn at(mut self, place: impl FnOnce() -> String) -> Self {
        if self.place.is_none() {
            self.place = Some(place());
        }
        self
    }
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.place {
            Some(p) => write!(f, "{p}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for SettingsError {}

impl de::Error for SettingsError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SettingsError {
            message: msg.to_string(),
            place: None,
        }
    }
}

fn from_toml(e: toml::de::Error) -> SettingsError {
    SettingsError {
        message: e.message().to_owned(),
        place: None,
    }
}

/// Parses `text` as one TOML value (an array, an inline table, a string…).
pub fn parse_toml_value(text: &str) -> Result<toml::Value, String> {
    let doc: toml::Table =
        toml::from_str(&format!("v = {text}")).map_err(|e| e.message().to_owned())?;
    doc.get("v").cloned().ok_or_else(|| "no value".to_owned())
}

/// The deserializer over a [`Node`].
pub struct NodeDe(pub Node);

struct TableAccess {
    entries: std::vec::IntoIter<(String, Node)>,
    pending: Option<Node>,
}

impl<'de> de::MapAccess<'de> for TableAccess {
    type Error = SettingsError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, SettingsError> {
        let Some((key, node)) = self.entries.next() else {
            return Ok(None);
        };
        let place = node.place();
        self.pending = Some(node);
        let key: de::value::StringDeserializer<SettingsError> = key.into_deserializer();
        seed.deserialize(key).map(Some).map_err(|e| e.at(|| place))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, SettingsError> {
        let node = self
            .pending
            .take()
            .ok_or_else(|| de::Error::custom("a value without its key"))?;
        let place = node.place();
        seed.deserialize(NodeDe(node)).map_err(|e| e.at(|| place))
    }
}

struct ListAccess {
    items: std::vec::IntoIter<String>,
    var: String,
    path: String,
}

impl<'de> de::SeqAccess<'de> for ListAccess {
    type Error = SettingsError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, SettingsError> {
        match self.items.next() {
            None => Ok(None),
            Some(raw) => seed
                .deserialize(NodeDe(Node::Env {
                    raw,
                    var: self.var.clone(),
                    path: self.path.clone(),
                }))
                .map(Some),
        }
    }
}

/// Parses an environment variable's text as `T`, or says what it is not.
fn parse_env<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T, SettingsError> {
    raw.trim()
        .parse()
        .map_err(|_| de::Error::custom(format!("not {what}")))
}

macro_rules! env_number {
    ($($method:ident => $ty:ty, $visit:ident, $what:literal;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SettingsError> {
                match self.0 {
                    Node::Env { raw, .. } => visitor.$visit(parse_env::<$ty>(&raw, $what)?),
                    _ => self.deserialize_any(visitor),
                }
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for NodeDe {
    type Error = SettingsError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SettingsError> {
        match self.0 {
            Node::Table { entries, .. } => visitor.visit_map(TableAccess {
                entries: entries.into_iter(),
                pending: None,
            }),
            Node::Value { value, .. } => {
                de::Deserializer::deserialize_any(value, visitor).map_err(from_toml)
            }
            Node::Env { raw, .. } => visitor.visit_string(raw),
        }
    }

    env_number! {
        deserialize_u8 => u8, visit_u8, "an unsigned integer";
        deserialize_u16 => u16, visit_u16, "an unsigned integer";
        deserialize_u32 => u32, visit_u32, "an unsigned integer";
        deserialize_u64 => u64, visit_u64, "an unsigned integer";
        deserialize_u128 => u128, visit_u128, "an unsigned integer";
        deserialize_i8 => i8, visit_i8, "an integer";
        deserialize_i16 => i16, visit_i16, "an integer";
        deserialize_i32 => i32, visit_i32, "an integer";
        deserialize_i64 => i64, visit_i64, "an integer";
        deserialize_i128 => i128, visit_i128, "an integer";
        deserialize_f32 => f32, visit_f32, "a number";
        deserialize_f64 => f64, visit_f64, "a number";
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SettingsError> {
        match self.0 {
            Node::Env { raw, .. } => match raw.trim() {
                "true" | "1" => visitor.visit_bool(true),
                "false" | "0" => visitor.visit_bool(false),
                _ => Err(de::Error::custom("not a boolean (true or false)")),
            },
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SettingsError> {
        match self.0 {
            Node::Value { value, .. } => value.deserialize_option(visitor).map_err(from_toml),
            node => visitor.visit_some(NodeDe(node)),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SettingsError> {
        match self.0 {
            Node::Env { raw, var, path } => {
                if raw.trim_start().starts_with('[') {
                    let value = parse_toml_value(&raw).map_err(|e| {
                        de::Error::custom(format!("not a TOML array like [\"a\", \"b\"]: {e}"))
                    })?;
                    return value.deserialize_seq(visitor).map_err(from_toml);
                }
                let items: Vec<String> = raw
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                visitor.visit_seq(ListAccess {
                    items: items.into_iter(),
                    var,
                    path,
                })
            }
            node => NodeDe(node).deserialize_any(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, SettingsError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, SettingsError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SettingsError> {
        match self.0 {
            Node::Env { raw, var, path } => {
                let value = parse_toml_value(&raw).map_err(|e| {
                    de::Error::custom(format!(
                        "not a TOML inline table like {{key = \"value\"}} ({e}); or set its keys with {var}__KEY"
                    ))
                })?;
                let node = Node::Value {
                    value,
                    source: super::Source::Env(var),
                    path,
                };
                NodeDe(node).deserialize_any(visitor)
            }
            node => NodeDe(node).deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SettingsError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SettingsError> {
        match self.0 {
            Node::Env { raw, .. } => {
                let raw: de::value::StringDeserializer<SettingsError> = raw.into_deserializer();
                visitor.visit_enum(raw)
            }
            Node::Value { value, .. } => value
                .deserialize_enum(name, variants, visitor)
                .map_err(from_toml),
            node => NodeDe(node).deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, SettingsError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, SettingsError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        char str string bytes byte_buf unit unit_struct identifier
    }
}
