//! `weft node config`: the effective settings as TOML, each line saying
//! where its value came from, with secrets redacted.
//!
//! A value is redacted when its key is on [`crate::layout::SECRET_KEYS`]
//! or inside a table that is (every value becomes `"<redacted>"`, the keys
//! stay), and a password in a URL (`scheme://user:password@host`) is
//! redacted wherever it appears.

use serde_json::json;

use super::Layers;
use crate::layout::SECRET_KEYS;

/// What a redacted value is printed as.
pub const REDACTED: &str = "<redacted>";

/// Whether the setting at `path` is secret.
pub fn is_secret(path: &str) -> bool {
    SECRET_KEYS.iter().any(|s| {
        path == *s
            || path
                .strip_prefix(s)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// `text` with the password of a `scheme://user:password@host` URL redacted.
pub fn redact_url_password(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let rest = &text[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return text.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return text.to_owned();
    };
    let start = scheme_end + 3 + colon + 1;
    let end = scheme_end + 3 + at;
    format!("{}{REDACTED}{}", &text[..start], &text[end..])
}

fn redact(path: &str, value: &toml::Value) -> toml::Value {
    let secret = is_secret(path);
    match value {
        toml::Value::Table(t) => toml::Value::Table(
            t.iter()
                .map(|(k, v)| (k.clone(), redact(&format!("{path}.{k}"), v)))
                .collect(),
        ),
        toml::Value::Array(a) => toml::Value::Array(a.iter().map(|v| redact(path, v)).collect()),
        _ if secret => toml::Value::String(REDACTED.to_owned()),
        toml::Value::String(s) => toml::Value::String(redact_url_password(s)),
        other => other.clone(),
    }
}

/// The effective settings, redacted, as one TOML table.
fn redacted_table(config: &impl serde::Serialize) -> Result<toml::Table, String> {
    let value = toml::Value::try_from(config)
        .map_err(|e| format!("cannot write the settings as TOML: {e}"))?;
    match value {
        toml::Value::Table(t) => Ok(t.iter().map(|(k, v)| (k.clone(), redact(k, v))).collect()),
        _ => Err("the settings are not a table".to_owned()),
    }
}

fn section(out: &mut String, layers: &Layers, prefix: &str, table: &toml::Table) {
    let path = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    for (k, v) in table.iter().filter(|(_, v)| !v.is_table()) {
        let key = toml::Value::String(k.clone());
        let key = if k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            k.clone()
        } else {
            key.to_string()
        };
        out.push_str(&format!("{key} = {v}  # {}\n", layers.source(&path(k))));
    }
    for (k, v) in table.iter() {
        if let toml::Value::Table(t) = v {
            let p = path(k);
            out.push_str(&format!("\n[{p}]\n"));
            section(out, layers, &p, t);
        }
    }
}

/// The effective settings as TOML, each value followed by where it came
/// from (`# default`, `# file PATH`, `# env WEFT_…`, `# flag --…`).
pub fn to_toml(config: &impl serde::Serialize, layers: &Layers) -> Result<String, String> {
    let table = redacted_table(config)?;
    let mut out = String::from(
        "# The effective settings: flags, then WEFT_* environment variables, then weft.toml,\n\
         # then the defaults. Each value says where it came from; secrets are redacted.\n",
    );
    section(&mut out, layers, "", &table);
    Ok(out)
}

fn sources(
    layers: &Layers,
    prefix: &str,
    table: &toml::Table,
    out: &mut serde_json::Map<String, serde_json::Value>,
) {
    for (k, v) in table {
        let p = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => sources(layers, &p, t, out),
            _ => {
                out.insert(p.clone(), json!(layers.source(&p).to_string()));
            }
        }
    }
}

/// The effective settings as JSON: `{"config": {...}, "sources": {"KEY.PATH": "SOURCE"}}`.
pub fn to_json(
    config: &impl serde::Serialize,
    layers: &Layers,
) -> Result<serde_json::Value, String> {
    let table = redacted_table(config)?;
    let mut src = serde_json::Map::new();
    sources(layers, "", &table, &mut src);
    let config = serde_json::to_value(&table).map_err(|e| e.to_string())?;
    Ok(json!({"config": config, "sources": src}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_redacted() {
        assert_eq!(
            redact_url_password("https://user:pw@siem.example:8443/ingest?x=1"),
            "https://user:<redacted>@siem.example:8443/ingest?x=1"
        );
        assert_eq!(
            redact_url_password("https://siem.example/a@b"),
            "https://siem.example/a@b"
        );
        assert_eq!(redact_url_password("https://u@h/"), "https://u@h/");
        assert_eq!(
            redact_url_password("/ip4/1.2.3.4/tcp/1"),
            "/ip4/1.2.3.4/tcp/1"
        );
    }

    #[test]
    fn secret_paths_cover_their_tables() {
        assert!(is_secret("decision_log.headers"));
        assert!(is_secret("decision_log.headers.Authorization"));
        assert!(!is_secret("decision_log.headers_x"));
        assert!(!is_secret("decision_log.url"));
    }
}
