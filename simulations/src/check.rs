//! The invariant checkers.
//!
//! The engine records observations as the run goes (every `Applied`, every
//! decision probe, every durable restart); [`judge`] turns them into a pass
//! or a fail per invariant. Keeping the judgement a pure function of the
//! observations lets tests feed it violations directly, and lets the engine
//! tests show that a broken configuration is caught.
//!
//! - **Convergence:** after every partition healed, every crashed node
//!   restarted and the network went quiet, every live honest node holds the
//!   same heads.
//! - **Authenticity:** every update any honest node applied is one an
//!   operator authored; in particular nothing a Byzantine node forged.
//! - **Revoke wins:** no honest node's decision allowed a subject after that
//!   node had applied the subject's revocation. Probed after every applied
//!   update that touches the subject (and one random revoked subject), and for
//!   every revoked subject on every node at the end; in full mode the probe
//!   is `weft_crdt::decide` on the node's view.
//! - **Durability:** a node restarting with its store holds, right after
//!   loading it, every update it persisted (acknowledged) before the crash.

use serde::Serialize;
use weft_crdt::ChangeHash;

/// What the engine saw.
#[derive(Clone, Debug, Default)]
pub struct Observations {
    /// (node, update, time): an honest node applied an update no operator authored.
    pub unauthentic: Vec<(u32, ChangeHash, u64)>,
    /// How many of those were forgeries a Byzantine node sent.
    pub forged_applied: usize,
    /// (node, subject, time): a decision allowed a subject after its revocation.
    pub revoke_violations: Vec<(u32, u32, u64)>,
    /// (node, update, time): a durable restart lost an acknowledged update.
    pub lost: Vec<(u32, ChangeHash, u64)>,
    /// Distinct head sets among live honest nodes at the end (1 is converged).
    pub head_sets_at_end: usize,
    /// Live honest nodes at the end.
    pub live_at_end: usize,
    /// Live honest nodes whose heads differ from the majority's at the end.
    pub divergent_nodes: Vec<u32>,
}

/// One invariant's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Invariant {
    /// `convergence`, `authenticity`, `revoke_wins` or `durability`.
    pub name: String,
    /// Whether it held.
    pub pass: bool,
    /// One sentence: what was checked, or the first violation.
    pub detail: String,
}

/// Judges the observations.
pub fn judge(obs: &Observations) -> Vec<Invariant> {
    let inv = |name: &str, pass: bool, detail: String| Invariant {
        name: name.into(),
        pass,
        detail,
    };
    let convergence = if obs.live_at_end == 0 {
        inv("convergence", true, "no live node at the end".into())
    } else if obs.head_sets_at_end == 1 {
        inv(
            "convergence",
            true,
            format!(
                "all {} live honest nodes hold the same heads",
                obs.live_at_end
            ),
        )
    } else {
        let first: Vec<String> = obs
            .divergent_nodes
            .iter()
            .take(5)
            .map(|n| format!("n{n}"))
            .collect();
        inv(
            "convergence",
            false,
            format!(
                "{} distinct head sets among {} live honest nodes at the end ({} node(s) off the majority, first: {})",
                obs.head_sets_at_end,
                obs.live_at_end,
                obs.divergent_nodes.len(),
                first.join(", ")
            ),
        )
    };
    let authenticity = match obs.unauthentic.first() {
        None => inv(
            "authenticity",
            true,
            "every applied update was authored by an operator".into(),
        ),
        Some((n, h, t)) => inv(
            "authenticity",
            false,
            format!(
                "{} unauthentic application(s), {} of them Byzantine forgeries; first: node n{n} applied {h} at {t} ms",
                obs.unauthentic.len(),
                obs.forged_applied
            ),
        ),
    };
    let revoke = match obs.revoke_violations.first() {
        None => inv(
            "revoke_wins",
            true,
            "no decision allowed a subject its node had revoked".into(),
        ),
        Some((n, k, t)) => inv(
            "revoke_wins",
            false,
            format!(
                "{} violation(s); first: node n{n} allowed User::\"u{k}\" at {t} ms after accepting its revocation",
                obs.revoke_violations.len()
            ),
        ),
    };
    let durability = match obs.lost.first() {
        None => inv(
            "durability",
            true,
            "no durable restart lost an acknowledged update".into(),
        ),
        Some((n, h, t)) => inv(
            "durability",
            false,
            format!(
                "{} acknowledged update(s) lost; first: node n{n} restarted at {t} ms without {h}",
                obs.lost.len()
            ),
        ),
    };
    vec![convergence, authenticity, revoke, durability]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> Observations {
        Observations {
            head_sets_at_end: 1,
            live_at_end: 10,
            ..Default::default()
        }
    }

    fn failed(obs: &Observations) -> Vec<String> {
        judge(obs)
            .into_iter()
            .filter(|i| !i.pass)
            .map(|i| i.name)
            .collect()
    }

    #[test]
    fn clean_observations_pass() {
        assert!(failed(&clean()).is_empty());
    }

    #[test]
    fn each_violation_fails_its_invariant_only() {
        let h = ChangeHash([7; 32]);
        let mut o = clean();
        o.head_sets_at_end = 2;
        o.divergent_nodes = vec![3];
        assert_eq!(failed(&o), ["convergence"]);
        let mut o = clean();
        o.unauthentic.push((1, h, 5));
        assert_eq!(failed(&o), ["authenticity"]);
        let mut o = clean();
        o.revoke_violations.push((1, 2, 5));
        assert_eq!(failed(&o), ["revoke_wins"]);
        let mut o = clean();
        o.lost.push((1, h, 5));
        assert_eq!(failed(&o), ["durability"]);
    }
}
