//! Entity uid templates: `Doc::"{id}"`, `User::"{sub}"`, `Tenant::"{org}/{team}"`.
//!
//! A template is a Cedar entity type and an id with `{name}` placeholders.
//! The type is parsed once, when the template is read; a uid is then built
//! with [`EntityUid::from_type_name_and_id`] from the id with each
//! placeholder filled in, so a filled-in value is only ever an id: it can
//! hold quotes, `::` or anything else without changing the type or
//! escaping the string.
//!
//! Routes fill placeholders from the path's named segments
//! ([`crate::routes`]); issuers from a verified token's claims
//! ([`crate::issuers`]).

use std::str::FromStr as _;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};

/// One piece of a template's id.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Slot(String),
}

/// A parsed uid template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UidTemplate {
    text: String,
    type_name: EntityTypeName,
    pieces: Vec<Piece>,
}

impl UidTemplate {
    /// Reads `Type::"id with {slots}"`. The id may not hold `"` or `\`
    /// outside its slots; a slot is `{name}` with a name of letters,
    /// digits, `_`, `-` and `.`.
    pub fn parse(text: &str) -> Result<UidTemplate, String> {
        let shape = || format!("{text:?} is not a uid template like Doc::\"{{id}}\"");
        let (type_text, rest) = text.split_once("::\"").ok_or_else(shape)?;
        let id = rest.strip_suffix('"').ok_or_else(shape)?;
        let type_name = EntityTypeName::from_str(type_text.trim())
            .map_err(|e| format!("{text:?}: {type_text:?} is not a Cedar entity type: {e}"))?;
        let mut pieces = Vec::new();
        let mut rest = id;
        while !rest.is_empty() {
            match rest.find('{') {
                None => {
                    pieces.push(Piece::Text(rest.to_owned()));
                    rest = "";
                }
                Some(open) => {
                    if open > 0 {
                        pieces.push(Piece::Text(rest[..open].to_owned()));
                    }
                    let close = rest[open..]
                        .find('}')
                        .ok_or_else(|| format!("{text:?}: a `{{` is not closed"))?;
                    let name = &rest[open + 1..open + close];
                    if name.is_empty()
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                    {
                        return Err(format!(
                            "{text:?}: {{{name}}} is not a slot (letters, digits, _, - and . only)"
                        ));
                    }
                    pieces.push(Piece::Slot(name.to_owned()));
                    rest = &rest[open + close + 1..];
                }
            }
        }
        for p in &pieces {
            if let Piece::Text(t) = p
                && (t.contains('"') || t.contains('\\') || t.contains('}'))
            {
                return Err(format!(
                    "{text:?}: the id may not hold `\"`, `\\` or `}}` outside a slot"
                ));
            }
        }
        Ok(UidTemplate {
            text: text.to_owned(),
            type_name,
            pieces,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The names of its slots, in order.
    pub fn slots(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Slot(s) => Some(s.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// The uid with every slot filled by `value(name)`; `Err(name)` names
    /// the first slot that has no value.
    pub fn fill<'v>(
        &self,
        mut value: impl FnMut(&str) -> Option<&'v str>,
    ) -> Result<EntityUid, String> {
        let mut id = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => id.push_str(t),
                Piece::Slot(s) => id.push_str(value(s).ok_or_else(|| s.clone())?),
            }
        }
        Ok(EntityUid::from_type_name_and_id(
            self.type_name.clone(),
            EntityId::new(id),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_ids_and_never_change_the_type() {
        let t = UidTemplate::parse(r#"Doc::"{org}/{id}""#).unwrap();
        assert_eq!(t.slots().collect::<Vec<_>>(), ["org", "id"]);
        let uid = t
            .fill(|s| Some(if s == "org" { "acme" } else { "a\"b::c" }))
            .unwrap();
        assert_eq!(uid.type_name().to_string(), "Doc");
        assert_eq!(uid.id().unescaped(), "acme/a\"b::c");
        assert_eq!(t.fill(|_| None), Err("org".to_owned()));

        let plain = UidTemplate::parse(r#"NS::Doc::"index""#).unwrap();
        assert_eq!(plain.slots().count(), 0);
        assert_eq!(
            plain.fill(|_| None).unwrap().to_string(),
            r#"NS::Doc::"index""#
        );
        for bad in [
            "Doc",
            r#"Doc::"{id}"#,
            r#"1Doc::"{id}""#,
            r#"Doc::"{id""#,
            r#"Doc::"{}""#,
            r#"Doc::"{a b}""#,
            r#"Doc::"a"b{id}""#,
            r#"Doc::"a\b""#,
        ] {
            assert!(UidTemplate::parse(bad).is_err(), "{bad} parsed");
        }
    }
}
