//! The chain of trust roots a node runs under, kept across restarts.
//!
//! `DIR/trust.json` is where an operator gives a node its trust root, but
//! the node also keeps every root it has adopted in its store (the `roots`
//! tree, see [`crate::store`]), and runs under the newest. At a start,
//! [`resolve`] reconciles the two:
//!
//! 1. The stored chain is verified again: its first root as an initial one
//!    (signed by a threshold of its own root keys), each later one as a
//!    rotation from the one before (a threshold of the old root keys and of
//!    its own).
//! 2. `trust.json` must be in that chain (the same version with the same
//!    body), or be newer than its last root and verify as a rotation from
//!    it: an operator installing a rotation by hand. It is then added.
//! 3. Anything else refuses the start: a `trust.json` older than the root
//!    the node has adopted, or a different root under a version the chain
//!    holds. Replacing `trust.json` cannot roll a node back or swap its root.
//!
//! An empty chain (a new node) starts from `trust.json` as an initial root.
//! When the node adopts a rotation from the mesh, it stores the new root and
//! rewrites `trust.json` with it ([`write_trust_file`]), so that a restart
//! finds the two in agreement.

use std::path::Path;
use std::sync::Arc;

use weft_protocol::trust::{SignedRoot, TrustError, TrustRoot, VerifiedRoot, to_trust_file};

/// Why a node's roots do not reconcile.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// A stored root does not verify (damaged, or not a chain).
    #[error("the trust root of version {version} in the store does not verify: {err}")]
    Stored {
        /// Its version, as far as it decodes (0 if not).
        version: u64,
        /// Why.
        err: TrustError,
    },
    /// `trust.json` holds an older root than the node has adopted.
    #[error(
        "trust.json holds trust root version {file}, but this node has adopted version {adopted}: a node never goes back to an older root (put the current root in trust.json, or start a new node)"
    )]
    Older {
        /// The version in `trust.json`.
        file: u64,
        /// The version the node runs under.
        adopted: u64,
    },
    /// `trust.json` holds another root under a version the node holds.
    #[error(
        "trust.json holds a trust root of version {version} that differs from the version {version} this node has adopted"
    )]
    Different {
        /// The version.
        version: u64,
    },
    /// `trust.json` is newer but is not a rotation from the adopted root.
    #[error(
        "trust.json holds trust root version {file}, which does not verify as a rotation from version {adopted}: {err}"
    )]
    NotARotation {
        /// The version in `trust.json`.
        file: u64,
        /// The version the node runs under.
        adopted: u64,
        /// Why.
        err: TrustError,
    },
    /// `trust.json` (with nothing stored) does not verify on its own.
    #[error("the trust root in trust.json does not verify: {0}")]
    File(TrustError),
}

/// The roots a node runs under, oldest first, each with its encoded
/// `SignedRoot`.
#[derive(Clone, Debug)]
pub struct Chain {
    /// Every root, oldest first.
    pub roots: Vec<(TrustRoot, Arc<[u8]>)>,
    /// Whether the last root expired (it is still enforced).
    pub expired: bool,
    /// Roots from `trust.json` that the store does not hold yet, to store.
    pub new: Vec<(u64, Arc<[u8]>)>,
}

impl Chain {
    /// The root the node runs under.
    pub fn latest(&self) -> &TrustRoot {
        &self
            .roots
            .last()
            .expect("a chain holds at least one root")
            .0
    }

    /// The encoded `SignedRoot` of the latest root.
    pub fn latest_signed(&self) -> &Arc<[u8]> {
        &self
            .roots
            .last()
            .expect("a chain holds at least one root")
            .1
    }
}

/// Reconciles `file` (the root in `trust.json`) with `stored` (the encoded
/// roots in the store, in any order) at `now` (Unix seconds), as the module
/// doc says.
pub fn resolve(file: &SignedRoot, stored: &[Vec<u8>], now: u64) -> Result<Chain, ChainError> {
    let mut chain = verify_stored(stored, now)?;
    let offered = file.root().map_err(ChainError::File)?;
    let Some(last) = chain.last() else {
        let verified = file.verify_initial(now).map_err(ChainError::File)?;
        let bytes: Arc<[u8]> = Arc::from(file.to_bytes());
        return Ok(Chain {
            expired: verified.expired,
            roots: vec![(verified.root, bytes.clone())],
            new: vec![(offered.version, bytes)],
        });
    };
    let adopted = last.0.root.version;
    let mut new = Vec::new();
    let expired;
    if offered.version > adopted {
        let next = last
            .0
            .verify_rotation(file, now)
            .map_err(|err| ChainError::NotARotation {
                file: offered.version,
                adopted,
                err,
            })?;
        let bytes: Arc<[u8]> = Arc::from(file.to_bytes());
        expired = next.expired;
        new.push((next.root.version, bytes.clone()));
        chain.push((next, bytes));
    } else if offered.version < adopted {
        return Err(ChainError::Older {
            file: offered.version,
            adopted,
        });
    } else if last.0.root != offered {
        return Err(ChainError::Different {
            version: offered.version,
        });
    } else {
        expired = last.0.root.is_expired(now);
    }
    Ok(Chain {
        roots: chain.into_iter().map(|(v, b)| (v.root, b)).collect(),
        expired,
        new,
    })
}

/// A verified root of a chain, with its encoded `SignedRoot`.
type Link = (VerifiedRoot, Arc<[u8]>);

/// The stored roots, verified as a chain, oldest first.
fn verify_stored(stored: &[Vec<u8>], now: u64) -> Result<Vec<Link>, ChainError> {
    let mut decoded = Vec::with_capacity(stored.len());
    for bytes in stored {
        let signed =
            SignedRoot::from_bytes(bytes).map_err(|err| ChainError::Stored { version: 0, err })?;
        let version = signed
            .root()
            .map_err(|err| ChainError::Stored { version: 0, err })?
            .version;
        decoded.push((version, signed, bytes));
    }
    decoded.sort_by_key(|(v, _, _)| *v);
    let mut chain: Vec<Link> = Vec::with_capacity(decoded.len());
    for (version, signed, bytes) in decoded {
        let verified = match chain.last() {
            None => signed.verify_initial(now),
            Some((prev, _)) => prev.verify_rotation(&signed, now),
        }
        .map_err(|err| ChainError::Stored { version, err })?;
        chain.push((verified, Arc::from(&bytes[..])));
    }
    Ok(chain)
}

/// Writes the encoded `SignedRoot` `signed` to the trust file at `path`, as
/// `weft trust init` writes one, replacing the file in one rename.
pub fn write_trust_file(path: &Path, signed: &[u8]) -> std::io::Result<()> {
    let root = SignedRoot::from_bytes(signed)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, to_trust_file(&root))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::identity::SecretKey;
    use weft_protocol::trust::{Operator, Role};

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    fn root(version: u64, root_key: u8, operator: u8) -> TrustRoot {
        TrustRoot {
            version,
            expires: u64::MAX,
            root_keys: vec![key(root_key).public()],
            root_threshold: 1,
            operators: vec![Operator {
                name: "alice".into(),
                key: key(operator).public(),
                roles: Role::ALL.into_iter().collect(),
            }],
            policy_threshold: 1,
            revoke_threshold: 1,
            node_quarantine: Default::default(),
            max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
            accepted_heads: vec![],
        }
    }

    /// v1 signed by root key 100; v2 (root key 101) signed by 100 and 101;
    /// v3 (root key 101 still) signed by 101.
    fn chain() -> [SignedRoot; 3] {
        [
            SignedRoot::sign(&root(1, 100, 1), &[&key(100)]),
            SignedRoot::sign(&root(2, 101, 1), &[&key(100), &key(101)]),
            SignedRoot::sign(&root(3, 101, 2), &[&key(101)]),
        ]
    }

    fn stored(roots: &[&SignedRoot]) -> Vec<Vec<u8>> {
        roots.iter().map(|r| r.to_bytes()).collect()
    }

    #[test]
    fn a_new_node_starts_from_its_trust_file() {
        let [v1, _, _] = chain();
        let c = resolve(&v1, &[], 0).unwrap();
        assert_eq!(c.latest().version, 1);
        assert_eq!(c.new.len(), 1, "the first root is to be stored");
    }

    #[test]
    fn a_node_keeps_the_root_it_adopted_and_takes_a_newer_file_that_chains() {
        let [v1, v2, v3] = chain();
        // trust.json rewritten to the adopted root: agrees.
        let c = resolve(&v2, &stored(&[&v2, &v1]), 0).unwrap();
        assert_eq!(c.latest().version, 2);
        assert_eq!(c.roots.len(), 2);
        assert!(c.new.is_empty());
        // A newer trust.json that rotates from the adopted root is added.
        let c = resolve(&v3, &stored(&[&v1, &v2]), 0).unwrap();
        assert_eq!(c.latest().version, 3);
        assert_eq!(c.new.len(), 1);
        assert_eq!(c.latest_signed().as_ref(), v3.to_bytes().as_slice());
    }

    /// Finding: trust.json was verified as an initial root on every start
    /// and never compared with the root the store held, so replacing it
    /// rolled a node back or swapped its root.
    #[test]
    fn an_older_or_different_trust_file_refuses_the_start() {
        let [v1, v2, _] = chain();
        let err = resolve(&v1, &stored(&[&v1, &v2]), 0).unwrap_err();
        assert!(
            matches!(
                err,
                ChainError::Older {
                    file: 1,
                    adopted: 2
                }
            ),
            "{err}"
        );
        // Another root of version 2, signed by the same keys.
        let mut other = root(2, 101, 7);
        other.policy_threshold = 1;
        let swapped = SignedRoot::sign(&other, &[&key(100), &key(101)]);
        let err = resolve(&swapped, &stored(&[&v1, &v2]), 0).unwrap_err();
        assert!(matches!(err, ChainError::Different { version: 2 }), "{err}");
        // A fresh root of a higher version that does not chain.
        let foreign = SignedRoot::sign(&root(5, 55, 1), &[&key(55)]);
        let err = resolve(&foreign, &stored(&[&v1, &v2]), 0).unwrap_err();
        assert!(
            matches!(err, ChainError::NotARotation { file: 5, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("rotation"), "{err}");
    }

    #[test]
    fn a_stored_chain_that_does_not_verify_refuses_the_start() {
        let [v1, _, v3] = chain();
        // v3 is not signed by v1's root key: not a rotation from it.
        let err = resolve(&v3, &stored(&[&v1, &v3]), 0).unwrap_err();
        assert!(
            matches!(err, ChainError::Stored { version: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn the_trust_file_is_rewritten_whole() {
        let [_, v2, _] = chain();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust.json");
        std::fs::write(&path, "old").unwrap();
        write_trust_file(&path, &v2.to_bytes()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let back = weft_protocol::trust::from_trust_file(&text).unwrap();
        assert_eq!(back.root().unwrap().version, 2);
    }
}
