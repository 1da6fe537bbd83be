//! Sends one hostile input to a [`Lab`] by every way in, and checks what
//! each node did with it.
//!
//! - [`over_http`]: `POST /v1/updates` to one node: a 4xx whose body is one
//!   sentence, the refusal counted under its reason, the node's state
//!   unchanged ([`fingerprint`]) and the node alive ([`alive`]).
//! - [`over_peers`]: a fresh admitted peer (a [`Hostile`] with a certificate
//!   alice signed: an admitted node gone bad) publishes the input on the
//!   update topic to every node, then pushes it to every node by sync
//!   ([`Hostile::offer`]): every node refuses it each time (its counter for
//!   the reason grows by one per way), and one that is to blame for it
//!   (`strike`) is penalized by every node. The peer is dropped afterwards,
//!   so the next input starts from a clean record (three strikes ban a
//!   peer, see [`ban_after_three_strikes`]).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use libp2p::{Multiaddr, PeerId};
use serde_json::Value;

use crate::hostile::Hostile;
use crate::netns::{Lab, eventually};

/// One hostile input: an update or a quarantine order's bytes.
#[derive(Clone, Debug)]
pub struct Input {
    /// The finding it reproduces (issue #23's numbering).
    pub finding: u8,
    /// What it is, for messages.
    pub what: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The reason label every node counts its refusal under.
    pub label: &'static str,
    /// Whether a peer that sends it is to blame (struck and penalized); an
    /// input refused for a matter of timing (an order dated ahead of the
    /// node's clock, a root the node has moved past) is not.
    pub strike: bool,
}

impl Input {
    /// A new input.
    pub fn new(finding: u8, what: &str, bytes: Vec<u8>, label: &'static str, strike: bool) -> Self {
        Input {
            finding,
            what: what.into(),
            bytes,
            label,
            strike,
        }
    }
}

/// What identifies node `i`'s state: heads, digest, updates applied,
/// revocations and updates held.
pub async fn fingerprint(lab: &Lab, i: usize) -> Result<Value> {
    let s = lab.status(i).await?;
    Ok(serde_json::json!([
        s["heads"],
        s["digest"],
        s["updates"],
        s["revocations"],
        s["held"]
    ]))
}

/// Node `i` answers `/healthz` and `/readyz` with 200.
pub async fn alive(lab: &Lab, i: usize) -> Result<()> {
    for path in ["healthz", "readyz"] {
        let r = lab
            .http()
            .get(format!("{}/{path}", lab.nodes[i].url()))
            .send()
            .await?;
        ensure!(
            r.status() == 200,
            "node {i}: /{path} answered {}",
            r.status()
        );
    }
    Ok(())
}

/// How many updates node `i` has refused for `label`.
pub async fn refused(lab: &Lab, i: usize, label: &str) -> Result<u64> {
    Ok(lab.status(i).await?["stats"]["refused"][label]
        .as_u64()
        .unwrap_or(0))
}

/// Checks one HTTP refusal: a 4xx whose body is `{"error": one sentence}`;
/// returns the sentence.
pub fn one_sentence(what: &str, code: u16, body: &str) -> Result<String> {
    ensure!(
        (400..500).contains(&code),
        "{what}: answered {code} {body:?}, not a 4xx"
    );
    let v: Value = serde_json::from_str(body)
        .with_context(|| format!("{what}: the body is not JSON: {body:?}"))?;
    let msg = v["error"]
        .as_str()
        .with_context(|| format!("{what}: no \"error\" in {body}"))?;
    ensure!(
        !msg.is_empty() && !msg.contains('\n') && msg.len() <= 400,
        "{what}: the error is not one clear sentence: {msg:?}"
    );
    Ok(msg.to_owned())
}

/// Posts `input` to node `i`'s `POST /v1/updates`: it must be refused with
/// a 4xx and one sentence, counted under its label, with node `i`'s state
/// unchanged and the node alive. Returns the status code and the sentence.
pub async fn over_http(lab: &Lab, i: usize, input: &Input) -> Result<(u16, String)> {
    let what = format!("finding {} ({}) over HTTP", input.finding, input.what);
    let before = fingerprint(lab, i).await?;
    let counted = refused(lab, i, input.label).await?;
    let r = lab
        .http()
        .post(format!("{}/v1/updates", lab.nodes[i].url()))
        .body(input.bytes.clone())
        .send()
        .await
        .with_context(|| what.clone())?;
    let code = r.status().as_u16();
    let body = r.text().await?;
    let msg = one_sentence(&what, code, &body)?;
    ensure!(
        refused(lab, i, input.label).await? == counted + 1,
        "{what}: not counted as refused for {} ({msg})",
        input.label
    );
    ensure!(
        fingerprint(lab, i).await? == before,
        "{what}: node {i}'s state changed"
    );
    alive(lab, i).await.with_context(|| what.clone())?;
    Ok((code, msg))
}

/// The libp2p addresses and peer ids of every node of the lab.
pub fn targets(lab: &Lab) -> Result<(Vec<Multiaddr>, Vec<PeerId>)> {
    let addrs = lab
        .nodes
        .iter()
        .map(|n| n.multiaddr().parse())
        .collect::<Result<_, _>>()?;
    let ids = lab
        .nodes
        .iter()
        .map(|n| n.id.parse())
        .collect::<Result<_, _>>()?;
    Ok((addrs, ids))
}

/// Node `i`'s view of peer `id`: (admitted, gossip score), if connected.
pub async fn peer_view(lab: &Lab, i: usize, id: &str) -> Result<Option<(bool, Option<f64>)>> {
    let st = lab.status(i).await?;
    Ok(st["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["node_id"] == id)
        .map(|p| (p["admitted"] == true, p["score"].as_f64())))
}

/// Starts a hostile peer named `name` (a new identity alice certifies) and
/// waits until every node has admitted it and it knows every node is
/// subscribed to the update topic.
pub async fn admitted_hostile(lab: &Lab, name: &str) -> Result<Hostile> {
    let (key, cert) = lab.identity(name, None)?;
    let (addrs, ids) = targets(lab)?;
    let h = Hostile::start(&key, cert, addrs)?;
    let id = h.peer_id.to_string();
    let n = lab.nodes.len();
    eventually(
        Duration::from_secs(20),
        &format!("every node to admit {name}"),
        || {
            let id = &id;
            let h = &h;
            let ids = &ids;
            async move {
                for i in 0..n {
                    if !peer_view(lab, i, id).await?.is_some_and(|(a, _)| a) {
                        return Ok(false);
                    }
                }
                let subscribed = h.topic_peers().await?;
                Ok(ids.iter().all(|p| subscribed.contains(p)))
            }
        },
    )
    .await?;
    Ok(h)
}

/// What [`over_peers`] saw.
#[derive(Clone, Copy, Debug)]
pub struct PeerReport {
    /// From the publish until every node had refused the gossip.
    pub gossip: Duration,
    /// From the offer until every node had fetched and refused it by sync.
    pub sync: Duration,
}

/// Waits until every node has refused `label` at least `at_least[i]` times.
async fn refused_everywhere(
    lab: &Lab,
    label: &str,
    at_least: &[u64],
    what: &str,
) -> Result<Duration> {
    eventually(Duration::from_secs(20), what, || async move {
        for (i, min) in at_least.iter().enumerate() {
            if refused(lab, i, label).await? < *min {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
}

/// Has a fresh hostile peer named `carrier` send `input` to every node,
/// by gossip and then by sync, and checks that every node refuses it
/// both times and changes nothing, and penalizes the peer if it is to
/// blame. The peer is stopped at the end.
pub async fn over_peers(lab: &Lab, carrier: &str, input: &Input) -> Result<PeerReport> {
    let what = format!("finding {} ({})", input.finding, input.what);
    let n = lab.nodes.len();
    let mut states = Vec::with_capacity(n);
    let mut counts = Vec::with_capacity(n);
    for i in 0..n {
        states.push(fingerprint(lab, i).await?);
        counts.push(refused(lab, i, input.label).await?);
    }
    let h = admitted_hostile(lab, carrier).await?;
    let (_, ids) = targets(lab)?;

    let started = Instant::now();
    h.publish(input.bytes.clone())
        .await
        .with_context(|| format!("{what}: publishing"))?;
    let once: Vec<u64> = counts.iter().map(|c| c + 1).collect();
    refused_everywhere(
        lab,
        input.label,
        &once,
        &format!("every node to refuse {what} by gossip ({})", input.label),
    )
    .await?;
    let gossip = started.elapsed();

    let started = Instant::now();
    h.offer(input.bytes.clone(), &ids, Duration::from_secs(20))
        .await
        .with_context(|| format!("{what}: offering it by sync"))?;
    let twice: Vec<u64> = counts.iter().map(|c| c + 2).collect();
    refused_everywhere(
        lab,
        input.label,
        &twice,
        &format!("every node to refuse {what} by sync ({})", input.label),
    )
    .await?;
    let sync = started.elapsed();

    let id = h.peer_id.to_string();
    if input.strike {
        eventually(
            Duration::from_secs(10),
            &format!("every node to penalize the peer that sent {what}"),
            || {
                let id = &id;
                async move {
                    for i in 0..n {
                        let score = peer_view(lab, i, id).await?.and_then(|(_, s)| s);
                        if !score.is_some_and(|s| s < 0.0) {
                            return Ok(false);
                        }
                    }
                    Ok(true)
                }
            },
        )
        .await?;
    } else {
        for i in 0..n {
            ensure!(
                peer_view(lab, i, &id).await?.is_some_and(|(a, _)| a),
                "{what}: node {i} dropped the peer, which is not to blame"
            );
        }
    }
    drop(h);
    for (i, state) in states.iter().enumerate() {
        ensure!(
            fingerprint(lab, i).await? == *state,
            "{what}: node {i}'s state changed"
        );
        alive(lab, i).await.with_context(|| what.clone())?;
    }
    Ok(PeerReport { gossip, sync })
}

/// A fresh hostile peer named `name` gossips `inputs` (three or more
/// inputs it is to blame for, none sent before: gossip drops what it has
/// seen): every node bans it at the third strike and disconnects it.
pub async fn ban_after_three_strikes(lab: &Lab, name: &str, inputs: &[Vec<u8>]) -> Result<()> {
    ensure!(inputs.len() >= 3, "three strikes need three inputs");
    let n = lab.nodes.len();
    let mut bans = Vec::with_capacity(n);
    for i in 0..n {
        bans.push(lab.status(i).await?["stats"]["bans"].as_u64().unwrap_or(0));
    }
    let h = admitted_hostile(lab, name).await?;
    let id = h.peer_id.to_string();
    for bytes in inputs {
        // Until a node has banned it, the peer reaches every node.
        let _ = h.publish(bytes.clone()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eventually(
        Duration::from_secs(20),
        &format!("every node to ban {name}"),
        || {
            let id = &id;
            let bans = &bans;
            async move {
                for (i, before) in bans.iter().enumerate() {
                    let st = lab.status(i).await?;
                    if st["stats"]["bans"].as_u64().unwrap_or(0) <= *before
                        || peer_view(lab, i, id).await?.is_some()
                    {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        },
    )
    .await?;
    // It redials every half second and never gets back in.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        for i in 0..n {
            ensure!(
                peer_view(lab, i, &id).await?.is_none_or(|(a, _)| !a),
                "node {i} admitted {name} again after banning it"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// A peer whose certificate (alice's, valid for `lifetime` from now) runs
/// out while it is connected: every node admits it, disconnects it at the
/// expiry, and never admits it again, however often it redials. Returns
/// its key and certificate bytes (for orders signed with the expired
/// certificate) and how long after the expiry the last node dropped it.
pub async fn expiring_peer_is_dropped(
    lab: &Lab,
    name: &str,
    lifetime: Duration,
) -> Result<(weft_protocol::identity::SecretKey, Vec<u8>, Duration)> {
    let (key, cert) = lab.identity(name, Some(&format!("{}s", lifetime.as_secs())))?;
    let expires = std::time::UNIX_EPOCH
        + Duration::from_secs(
            weft_protocol::trust::SignedNodeCert::from_bytes(&cert)?
                .cert()?
                .expires,
        );
    let (addrs, _) = targets(lab)?;
    let h = Hostile::start(&key, cert.clone(), addrs)?;
    let id = h.peer_id.to_string();
    let n = lab.nodes.len();
    eventually(
        lifetime,
        &format!("every node to admit {name} before its certificate expires"),
        || {
            let id = &id;
            async move {
                for i in 0..n {
                    if !peer_view(lab, i, id).await?.is_some_and(|(a, _)| a) {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        },
    )
    .await?;
    eventually(
        lifetime + Duration::from_secs(10),
        &format!("every node to drop {name} once its certificate has expired"),
        || {
            let id = &id;
            async move {
                for i in 0..n {
                    if peer_view(lab, i, id).await?.is_some_and(|(a, _)| a) {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        },
    )
    .await?;
    let late = std::time::SystemTime::now()
        .duration_since(expires)
        .unwrap_or_default();
    ensure!(
        std::time::SystemTime::now() >= expires,
        "{name} was dropped before its certificate expired"
    );
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        for i in 0..n {
            ensure!(
                peer_view(lab, i, &id).await?.is_none_or(|(a, _)| !a),
                "node {i} admitted {name} again with an expired certificate"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok((key, cert, late))
}
