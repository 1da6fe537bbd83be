//! API bearer tokens and the token file (`api_tokens_file`).
//!
//! A token is `weftapi_` followed by 64 hex digits: 256 bits from the
//! operating system's random source. The file keeps only its SHA-256, one
//! token a line:
//!
//! ```text
//! # NAME  SCOPES               SHA-256 OF THE TOKEN
//! grafana metrics              sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! ci      read,audit,metrics   sha256:…
//! ```
//!
//! Names are unique, without white space; scopes are `read`, `audit` and
//! `metrics`, comma-separated. Blank lines and lines starting with `#` are
//! skipped. A plain hash is enough (no salt, no slow hash): the token is
//! random with 256 bits of entropy, so its hash cannot be reversed by
//! guessing, and one fast hash per request keeps checks cheap. The file is
//! written with mode 0600 all the same. A token itself is never written
//! anywhere by the node: the audit trail names a token by its name, or by
//! the first 8 hex digits of its hash when it is unknown.

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::access::Scope;

/// The prefix of every API token.
pub const TOKEN_PREFIX: &str = "weftapi_";

/// One token's entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenEntry {
    /// Its name.
    pub name: String,
    /// What it may read.
    pub scopes: Vec<Scope>,
}

/// The tokens of a file, by hash.
#[derive(Clone, Debug, Default)]
pub struct TokenSet {
    by_hash: HashMap<[u8; 32], TokenEntry>,
}

/// The SHA-256 of a token.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// How a token that is not in the file is named: its hash's first 8 hex digits.
pub fn unknown_label(token: &str) -> String {
    format!("token sha256:{}", &hex::encode(hash(token))[..8])
}

/// A fresh token.
pub fn mint() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
}

/// The file's line for a token.
pub fn line(name: &str, scopes: &[Scope], token: &str) -> String {
    let scopes: Vec<&str> = scopes.iter().map(|s| s.name()).collect();
    format!(
        "{name} {} sha256:{}\n",
        scopes.join(","),
        hex::encode(hash(token))
    )
}

/// Parses `read,audit` into scopes.
pub fn parse_scopes(text: &str) -> Result<Vec<Scope>, String> {
    let mut scopes = Vec::new();
    for s in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let scope = Scope::parse(s)
            .ok_or_else(|| format!("\"{s}\" is not a scope (read, audit, metrics)"))?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err("no scope given (read, audit, metrics)".into());
    }
    Ok(scopes)
}

impl TokenSet {
    /// Reads a token file; the error names the file and the line.
    pub fn load(path: &Path) -> Result<TokenSet, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("api_tokens_file {}: cannot read it: {e}", path.display()))?;
        TokenSet::parse(&text).map_err(|e| format!("api_tokens_file {}: {e}", path.display()))
    }

    /// Parses a token file's text.
    pub fn parse(text: &str) -> Result<TokenSet, String> {
        let mut set = TokenSet::default();
        let mut names = std::collections::BTreeSet::new();
        for (n, raw) in text.lines().enumerate() {
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let at = || format!("line {}", n + 1);
            let fields: Vec<&str> = l.split_whitespace().collect();
            let [name, scopes, digest] = fields[..] else {
                return Err(format!(
                    "{} is not `NAME SCOPES sha256:HEX` (as `weft api token add` writes)",
                    at()
                ));
            };
            let scopes = parse_scopes(scopes).map_err(|e| format!("{}: {e}", at()))?;
            let digest = digest
                .strip_prefix("sha256:")
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| format!("{}: the hash is not sha256: and 64 hex digits", at()))?;
            if !names.insert(name.to_owned()) {
                return Err(format!("{}: the name {name} is used twice", at()));
            }
            set.by_hash.insert(
                digest,
                TokenEntry {
                    name: name.to_owned(),
                    scopes,
                },
            );
        }
        Ok(set)
    }

    /// The entry of `token`, if the file holds it.
    pub fn find(&self, token: &str) -> Option<&TokenEntry> {
        self.by_hash.get(&hash(token))
    }

    /// Whether a token named `name` is in the set.
    pub fn has_name(&self, name: &str) -> bool {
        self.by_hash.values().any(|e| e.name == name)
    }

    /// How many tokens.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_is_found_by_its_line_only() {
        let t = mint().unwrap();
        assert!(t.starts_with(TOKEN_PREFIX) && t.len() == TOKEN_PREFIX.len() + 64);
        let file = format!(
            "# tokens\n\n{}",
            line("ci", &[Scope::Read, Scope::Metrics], &t)
        );
        assert!(!file.contains(&t[TOKEN_PREFIX.len()..]));
        let set = TokenSet::parse(&file).unwrap();
        let e = set.find(&t).unwrap();
        assert_eq!(e.name, "ci");
        assert_eq!(e.scopes, vec![Scope::Read, Scope::Metrics]);
        assert!(set.find("weftapi_00").is_none());
        assert!(TokenSet::parse("ci read").is_err());
        assert!(TokenSet::parse("ci write sha256:00").is_err());
        let twice = format!(
            "{}{}",
            line("a", &[Scope::Read], &t),
            line("a", &[Scope::Read], "x")
        );
        assert!(TokenSet::parse(&twice).unwrap_err().contains("used twice"));
    }
}
