//! Policy bundles: their content as stored in the document, and the checks
//! (parse, link, schema validation, entity parsing) that turn it into Cedar
//! objects. The CLI runs the same checks before it signs, and the view runs
//! them on every merged version.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use cedar_policy::{
    Effect, Entities, Entity, EntityUid, Policy, PolicyId, PolicySet, Schema, SlotId, Template,
    ValidationMode, Validator,
};
use serde::{Deserialize, Serialize};

/// What one bundle holds, exactly as the document stores it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleContent {
    /// Cedar policies and templates by id, one policy's text each.
    pub policies: BTreeMap<String, String>,
    /// A Cedar schema in the human-readable `.cedarschema` syntax.
    pub schema: Option<String>,
    /// Entities in Cedar's entity JSON format.
    pub entities: Option<String>,
    /// Template links, as JSON: `[{"template": ID, "id": LINK_ID, "slots": {"?principal": UID, "?resource": UID}}]`.
    pub links: Option<String>,
    /// A free-text description.
    pub description: Option<String>,
    /// Routes from HTTP requests to Cedar requests, TOML ([`crate::routes`]).
    pub routes: Option<String>,
    /// Trusted identity issuers, TOML ([`crate::issuers`]).
    pub issuers: Option<String>,
}

/// One template link in a bundle's `links` field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateLink {
    /// Id of the template, within the bundle.
    pub template: String,
    /// Id of the linked policy, within the bundle.
    pub id: String,
    /// Slot values: `?principal` and/or `?resource` to entity uids.
    pub slots: BTreeMap<String, String>,
}

/// Why a bundle's content is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// A policy does not parse.
    #[error("bundle `{bundle}`: policy `{id}` does not parse: {msg}")]
    Parse {
        /// Bundle name.
        bundle: String,
        /// Policy id within the bundle.
        id: String,
        /// Cedar's message.
        msg: String,
    },
    /// The schema does not parse.
    #[error("bundle `{bundle}`: schema does not parse: {msg}")]
    Schema {
        /// Bundle name.
        bundle: String,
        /// Cedar's message.
        msg: String,
    },
    /// Policies do not validate against the schema.
    #[error("bundle `{bundle}`: policies do not validate against the schema: {msg}")]
    Validation {
        /// Bundle name.
        bundle: String,
        /// Cedar's messages, joined.
        msg: String,
    },
    /// The entities do not parse.
    #[error("bundle `{bundle}`: entities do not parse: {msg}")]
    Entities {
        /// Bundle name.
        bundle: String,
        /// Cedar's message.
        msg: String,
    },
    /// A template link is wrong.
    #[error("bundle `{bundle}`: template link: {msg}")]
    Link {
        /// Bundle name.
        bundle: String,
        /// What is wrong.
        msg: String,
    },
    /// The routes file is wrong.
    #[error("bundle `{bundle}`: routes: {msg}")]
    Routes {
        /// Bundle name.
        bundle: String,
        /// What is wrong.
        msg: String,
    },
    /// The issuers file is wrong.
    #[error("bundle `{bundle}`: issuers: {msg}")]
    Issuers {
        /// Bundle name.
        bundle: String,
        /// What is wrong.
        msg: String,
    },
}

/// A bundle whose content passed every check, as Cedar objects.
#[derive(Clone, Debug)]
pub struct ParsedBundle {
    /// The bundle's policies, templates and links, with ids `NAME/ID`.
    pub policies: PolicySet,
    /// The bundle's entities.
    pub entities: Vec<Entity>,
    /// The bundle's schema, if it has one.
    pub schema: Option<Schema>,
    /// The bundle's routes, if it has a routes file.
    pub routes: Option<std::sync::Arc<crate::routes::BundleRoutes>>,
    /// The bundle's trusted issuers, if it has an issuers file.
    pub issuers: Option<std::sync::Arc<crate::issuers::BundleIssuers>>,
}

/// The id a bundle's policy has in the merged policy set.
pub fn qualified_id(bundle: &str, id: &str) -> PolicyId {
    PolicyId::new(format!("{bundle}/{id}"))
}

impl BundleContent {
    /// Parses, links and validates the content of bundle `name`.
    pub fn parse(&self, name: &str) -> Result<ParsedBundle, BundleError> {
        let b = || name.to_owned();
        let mut set = PolicySet::new();
        for (id, text) in &self.policies {
            let pid = qualified_id(name, id);
            let parse_err = |msg: String| BundleError::Parse {
                bundle: b(),
                id: id.clone(),
                msg,
            };
            match Policy::parse(Some(pid.clone()), text) {
                Ok(policy) => set.add(policy).map_err(|e| parse_err(one_line(&e)))?,
                Err(policy_err) => match Template::parse(Some(pid), text) {
                    Ok(template) if template.slots().next().is_some() => set
                        .add_template(template)
                        .map_err(|e| parse_err(one_line(&e)))?,
                    _ => return Err(parse_err(one_line(&policy_err))),
                },
            }
        }
        if let Some(links) = &self.links {
            let links: Vec<TemplateLink> =
                serde_json::from_str(links).map_err(|e| BundleError::Link {
                    bundle: b(),
                    msg: format!("links are not valid JSON: {e}"),
                })?;
            for link in links {
                let mut vals = HashMap::new();
                for (slot, uid) in &link.slots {
                    let slot_id = match slot.as_str() {
                        "?principal" => SlotId::principal(),
                        "?resource" => SlotId::resource(),
                        other => {
                            return Err(BundleError::Link {
                                bundle: b(),
                                msg: format!("unknown slot `{other}` in link `{}`", link.id),
                            });
                        }
                    };
                    let uid = EntityUid::from_str(uid).map_err(|e| BundleError::Link {
                        bundle: b(),
                        msg: format!("link `{}`: {}", link.id, one_line(&e)),
                    })?;
                    vals.insert(slot_id, uid);
                }
                set.link(
                    qualified_id(name, &link.template),
                    qualified_id(name, &link.id),
                    vals,
                )
                .map_err(|e| BundleError::Link {
                    bundle: b(),
                    msg: format!("link `{}`: {}", link.id, one_line(&e)),
                })?;
            }
        }
        let schema = match &self.schema {
            None => None,
            Some(src) => {
                let (schema, _warnings) =
                    Schema::from_cedarschema_str(src).map_err(|e| BundleError::Schema {
                        bundle: b(),
                        msg: one_line(&e),
                    })?;
                let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
                if !result.validation_passed() {
                    let msg = result
                        .validation_errors()
                        .map(|e| one_line(e))
                        .collect::<Vec<_>>()
                        .join("; ");
                    return Err(BundleError::Validation { bundle: b(), msg });
                }
                Some(schema)
            }
        };
        let entities = match &self.entities {
            None => Vec::new(),
            Some(json) => Entities::from_json_str(json, schema.as_ref())
                .map_err(|e| BundleError::Entities {
                    bundle: b(),
                    msg: one_line(&e),
                })?
                .into_iter()
                .collect(),
        };
        let routes = match &self.routes {
            None => None,
            Some(text) => Some(std::sync::Arc::new(
                crate::routes::BundleRoutes::parse(text)
                    .map_err(|msg| BundleError::Routes { bundle: b(), msg })?,
            )),
        };
        let issuers = match &self.issuers {
            None => None,
            Some(text) => Some(std::sync::Arc::new(
                crate::issuers::BundleIssuers::parse(text)
                    .map_err(|msg| BundleError::Issuers { bundle: b(), msg })?,
            )),
        };
        Ok(ParsedBundle {
            policies: set,
            entities,
            schema,
            routes,
            issuers,
        })
    }
}

impl ParsedBundle {
    /// Ids of the bundle's `forbid` policies (static and linked).
    pub fn forbids(&self) -> impl Iterator<Item = &PolicyId> {
        self.policies
            .policies()
            .filter(|p| p.effect() == Effect::Forbid)
            .map(Policy::id)
    }
}

/// Renders an error, with its sources, on one line.
pub fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let m = inner.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = inner.source();
    }
    one_line_text(s)
}

/// `text` on one line: every run of white space (newlines included)
/// becomes one space, and any other control character is written escaped
/// (`\u{1b}`), so quoted input cannot start a line or drive a terminal.
pub fn one_line_text(text: impl std::fmt::Display) -> String {
    let mut out = String::new();
    for word in text.to_string().split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        for c in word.chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
    }
    out
}

/// Splits the text of a `.cedar` file into single policies, each with its id:
/// the `@id("...")` annotation when it has one, or `STEM.N` (N counting from 0).
pub fn split_policy_file(stem: &str, text: &str) -> Result<Vec<(String, String)>, String> {
    let set = PolicySet::from_str(text).map_err(|e| format!("{stem}.cedar: {}", one_line(&e)))?;
    // PolicySet::from_str names policies policy0, policy1, ... in source order.
    let mut out = Vec::new();
    let mut items: Vec<(usize, String, String)> = Vec::new();
    for p in set.policies() {
        let n = index_of(p.id());
        let id = p
            .annotation("id")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{stem}.{n}"));
        items.push((n, id, p.to_string()));
    }
    for t in set.templates() {
        let n = index_of(t.id());
        let id = t
            .annotation("id")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{stem}.{n}"));
        items.push((n, id, t.to_string()));
    }
    items.sort();
    for (_, id, text) in items {
        if out.iter().any(|(i, _)| *i == id) {
            return Err(format!("{stem}.cedar: policy id `{id}` is used twice"));
        }
        out.push((id, text));
    }
    Ok(out)
}

fn index_of(id: &PolicyId) -> usize {
    id.to_string()
        .trim_start_matches("policy")
        .parse()
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_text_has_no_control_characters() {
        let t = one_line_text("a\n\n b\tc\u{1b}[31m\u{7f}");
        assert_eq!(t, "a b c\\u{1b}[31m\\u{7f}");
    }

    fn content(policies: &[(&str, &str)]) -> BundleContent {
        BundleContent {
            policies: policies
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn parses_policies_templates_and_links() {
        let mut c = content(&[
            ("p", r#"permit(principal == User::"a", action, resource);"#),
            (
                "t",
                r#"permit(principal == ?principal, action, resource in ?resource);"#,
            ),
        ]);
        c.links = Some(
            r#"[{"template":"t","id":"l1","slots":{"?principal":"User::\"b\"","?resource":"Folder::\"f\""}}]"#
                .into(),
        );
        let parsed = c.parse("team").unwrap();
        assert!(parsed.policies.policy(&PolicyId::new("team/p")).is_some());
        assert!(parsed.policies.template(&PolicyId::new("team/t")).is_some());
        assert!(parsed.policies.policy(&PolicyId::new("team/l1")).is_some());
    }

    #[test]
    fn bad_policy_is_refused_with_its_id() {
        let c = content(&[("bad", "permit(principal, action")]);
        let err = c.parse("x").unwrap_err();
        assert!(
            matches!(&err, BundleError::Parse { id, .. } if id == "bad"),
            "{err}"
        );
    }

    #[test]
    fn schema_validation_refuses_unknown_types() {
        let mut c = content(&[("p", r#"permit(principal == Robot::"r", action, resource);"#)]);
        c.schema = Some(
            "entity User; entity Doc; action view appliesTo { principal: User, resource: Doc };"
                .into(),
        );
        assert!(matches!(c.parse("x"), Err(BundleError::Validation { .. })));
    }

    #[test]
    fn splits_files_by_annotation_or_position() {
        let text = r#"
            permit(principal, action, resource);
            @id("deny-bob") forbid(principal == User::"bob", action, resource);
        "#;
        let parts = split_policy_file("main", text).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, "main.0");
        assert_eq!(parts[1].0, "deny-bob");
        assert!(split_policy_file("m", "@id(\"a\") permit(principal,action,resource); @id(\"a\") permit(principal,action,resource);").is_err());
    }
}
