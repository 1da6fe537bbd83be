//! The fault and partition suite: real `weft node run` processes, each in
//! its own network namespace, under partitions (symmetric, one-way,
//! flapping), packet loss, kill -9, hostile peers and bad input. Every
//! scenario ends by checking the invariants through the HTTP API.
//!
//! Needs root, iproute2 and nftables (CI installs them); without network
//! namespaces every test here fails. Knobs (environment):
//! - `WEFT_CRASH_LOOPS` kill -9 rounds of the crash test (default 3; the
//!   issue's goal is 50);
//! - `WEFT_LOAD_SECS` seconds of load under faults (default 8);
//! - `WEFT_LAB_KEEP=1` keeps the lab's files (keys, node dirs, logs);
//! - `WEFT_LAB_LOG` the nodes' `RUST_LOG` (default `info`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, ensure};
use weft_tests::mesh::Author;
use weft_tests::netns::{Lab, LabSpec, eventually, weft};

const PERMIT_ALL: &str = "@id(\"all\")\npermit(principal, action, resource);\n";

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A policy directory holding `main.cedar` with `text`.
fn policy_dir(lab: &Lab, name: &str, text: &str) -> Result<PathBuf> {
    let d = lab.dir.path().join(name);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join("main.cedar"), text)?;
    Ok(d)
}

/// `weft bundle create` on node `i`'s state, signed by alice; the file.
fn bundle_file(lab: &Lab, i: usize, name: &str, policies: &Path) -> Result<PathBuf> {
    let out = lab.dir.path().join(format!("{name}-{}.update", nonce()));
    weft(&[
        "bundle",
        "create",
        "--name",
        "main",
        "--dir",
        &s(policies),
        "--key",
        &s(&lab.alice_key),
        "--node",
        &lab.nodes[i].url(),
        "--out",
        &s(&out),
    ])?;
    Ok(out)
}

/// `weft revoke --out` on node `i`'s state, signed by `key`; the file.
fn revoke_file(lab: &Lab, i: usize, key: &Path, subject: &str) -> Result<PathBuf> {
    let out = lab.dir.path().join(format!("revoke-{}.update", nonce()));
    weft(&[
        "revoke",
        "--key",
        &s(key),
        "--node",
        &lab.nodes[i].url(),
        subject,
        "--reason",
        "test",
        "--out",
        &s(&out),
    ])?;
    Ok(out)
}

fn nonce() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Submits a file to node `i`; it must be applied. Returns its id.
async fn push_file(lab: &Lab, i: usize, file: &Path) -> Result<String> {
    push_bytes(lab, i, std::fs::read(file)?).await
}

/// Submits bytes to node `i`; they must be applied. Returns the id.
async fn push_bytes(lab: &Lab, i: usize, bytes: Vec<u8>) -> Result<String> {
    let (code, body) = lab.submit(i, bytes).await?;
    ensure!(
        code == 202 && body["status"] == "applied",
        "node {i} answered {code} {body}"
    );
    Ok(body["id"].as_str().context("no id")?.to_owned())
}

// ---------------------------------------------------------------------------

/// Six nodes split 3|3. Each side revokes a different subject and writes a
/// different version of the bundle, and keeps enforcing its own state; after
/// the heal all six converge on the union, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_both_sides_enforce_their_own_state_and_converge_after_the_heal() -> Result<()>
{
    let mut lab = Lab::new(LabSpec::new(6))?;
    lab.start_all().await?;
    let formed = lab.wait_admitted(5, Duration::from_secs(30)).await?;
    eprintln!("split-brain: six nodes admitted each other in {formed:?}");

    let v1 = bundle_file(&lab, 0, "v1", &policy_dir(&lab, "v1", PERMIT_ALL)?)?;
    let v1_id = push_file(&lab, 0, &v1).await?;
    let lab_ref = &lab;
    eventually(
        Duration::from_secs(20),
        "bundle v1 to reach all six",
        || {
            let v1_id = v1_id.clone();
            async move {
                for i in 0..6 {
                    if lab_ref.heads(i).await? != [v1_id.clone()] {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        },
    )
    .await?;

    let (west, east): (&[usize], &[usize]) = (&[0, 1, 2], &[3, 4, 5]);
    lab.partition(&[west, east])?;

    // Each side: a revocation and its own version of bundle `main`.
    let w_rev = push_file(
        &lab,
        1,
        &revoke_file(&lab, 1, &lab.alice_key, r#"User::"mallory""#)?,
    )
    .await?;
    let w_bundle = push_file(
        &lab,
        2,
        &bundle_file(
            &lab,
            2,
            "west",
            &policy_dir(
                &lab,
                "west",
                &format!("{PERMIT_ALL}@id(\"west\")\nforbid(principal, action == Action::\"delete\", resource);\n"),
            )?,
        )?,
    )
    .await?;
    let e_rev = push_file(
        &lab,
        4,
        &revoke_file(&lab, 4, &lab.alice_key, r#"User::"trudy""#)?,
    )
    .await?;
    let e_bundle = push_file(
        &lab,
        5,
        &bundle_file(
            &lab,
            5,
            "east",
            &policy_dir(
                &lab,
                "east",
                &format!("{PERMIT_ALL}@id(\"east\")\nforbid(principal, action == Action::\"write\", resource);\n"),
            )?,
        )?,
    )
    .await?;
    let w_ids = [w_rev.clone(), w_bundle.clone()];
    let e_ids = [e_rev.clone(), e_bundle.clone()];

    // Each side converges on its own updates and enforces them.
    let own_state = |i: usize| {
        let lab = lab_ref;
        async move {
            let is_west = i < 3;
            let mallory = lab.allows(i, r#"User::"mallory""#).await?;
            let trudy = lab.allows(i, r#"User::"trudy""#).await?;
            let del = lab
                .authorize(i, r#"User::"bob""#, r#"Action::"delete""#, r#"Doc::"d""#)
                .await?["decision"]
                == "allow";
            let write = lab
                .authorize(i, r#"User::"bob""#, r#"Action::"write""#, r#"Doc::"d""#)
                .await?["decision"]
                == "allow";
            Ok::<_, anyhow::Error>(if is_west {
                !mallory && trudy && !del && write
            } else {
                mallory && !trudy && del && !write
            })
        }
    };
    let t = eventually(
        Duration::from_secs(20),
        "each side to enforce its own updates",
        || async {
            for i in 0..6 {
                if !own_state(i).await? {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await?;
    eprintln!("split-brain: each side enforced its own updates within {t:?}");
    // ... and keeps doing so, and nothing crosses the partition.
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for i in 0..6 {
            ensure!(
                own_state(i).await?,
                "node {i} left its side's state in round {round}"
            );
            let missing = lab
                .holds(i, &if i < 3 { &e_ids } else { &w_ids }[..])
                .await?;
            ensure!(
                missing.len() == 2,
                "node {i} got an update across the partition"
            );
        }
    }

    // Heal: every node holds all four updates, both revocations hold
    // everywhere, and all six decide alike.
    lab.heal_all()?;
    let all_ids: Vec<String> = [v1_id, w_rev, w_bundle, e_rev, e_bundle].to_vec();
    let healed = Instant::now();
    let t = eventually(
        Duration::from_secs(90),
        "all six to converge after the heal",
        || {
            let all_ids = &all_ids;
            async move {
                let first = lab_ref.heads(0).await?;
                for i in 0..6 {
                    if lab_ref.heads(i).await? != first
                        || !lab_ref.holds(i, all_ids).await?.is_empty()
                    {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        },
    )
    .await?;
    eprintln!(
        "split-brain: all six converged {} ms after the heal",
        t.as_millis()
    );
    let _ = healed;
    let mut digests = BTreeMap::new();
    for i in 0..6 {
        let st = lab.status(i).await?;
        ensure!(st["revocations"] == 2, "node {i}: {st}");
        digests.insert(i, st["digest"].clone());
        ensure!(!lab.allows(i, r#"User::"mallory""#).await?);
        ensure!(!lab.allows(i, r#"User::"trudy""#).await?);
        let d = lab
            .authorize(i, r#"User::"trudy""#, r#"Action::"view""#, r#"Doc::"d""#)
            .await?;
        ensure!(d["revoked"] == true, "node {i}: {d}");
    }
    let first = digests[&0].clone();
    ensure!(
        digests.values().all(|d| *d == first),
        "digests differ: {digests:?}"
    );
    // The same answer everywhere for a spread of requests.
    for action in ["view", "write", "delete"] {
        for user in ["bob", "mallory", "trudy"] {
            let mut answers = Vec::new();
            for i in 0..6 {
                let d = lab
                    .authorize(
                        i,
                        &format!("User::\"{user}\""),
                        &format!("Action::\"{action}\""),
                        r#"Doc::"d""#,
                    )
                    .await?;
                answers.push(d["decision"].clone());
            }
            ensure!(
                answers.iter().all(|a| *a == answers[0]),
                "{user} {action}: {answers:?}"
            );
        }
    }
    eprintln!(
        "FAULTS split_brain nodes=6 converge_ms={} result=pass",
        t.as_millis()
    );
    Ok(())
}

/// A one-way cut (0 cannot reach 2) does not stop an update pushed to 0
/// from reaching 2 through 1, and lifting it leaves the mesh whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_way_cut_is_routed_around() -> Result<()> {
    let mut lab = Lab::new(LabSpec::new(3))?;
    lab.start_all().await?;
    lab.wait_admitted(2, Duration::from_secs(30)).await?;
    lab.cut(0, 2)?;
    let mut author = Author::with_key(weft_node::keyfile::read(&lab.alice_key)?, 1);
    let id = push_bytes(&lab, 0, author.bundle("main", r#"User::"alice""#)?).await?;
    let lab_ref = &lab;
    let t = eventually(Duration::from_secs(30), "node 2 to get the update", || {
        let id = id.clone();
        async move { Ok(lab_ref.heads(2).await? == [id]) }
    })
    .await?;
    eprintln!("one-way cut: the update reached the far node in {t:?}");
    ensure!(lab.allows(2, r#"User::"alice""#).await?);
    lab.uncut(0, 2)?;
    Ok(())
}

/// A small pseudo-random number in `0..n` (the clock's nanoseconds; the
/// schedule of kills need not replay).
fn jitter(n: u64) -> u64 {
    (nonce() as u64 ^ (nonce() as u64 >> 17)) % n.max(1)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a stream of pushes came to before the node died.
#[derive(Default)]
struct Stream {
    /// (id, subject) of every update answered 202.
    acked: Vec<(String, String)>,
    /// The update in flight when the node died, if any.
    unacked: Option<Vec<u8>>,
}

/// kill -9 in the middle of a stream of pushes, then a restart while cut off
/// from its peer: every update the node acknowledged with 202 is in its
/// store, and it enforces every revocation it acknowledged before it talks
/// to anyone. `WEFT_CRASH_LOOPS` rounds (3 by default; the goal is 50).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_acknowledged_update() -> Result<()> {
    let loops = env_or("WEFT_CRASH_LOOPS", 3);
    let mut lab = Lab::new(LabSpec::new(2))?;
    lab.start_all().await?;
    lab.wait_admitted(1, Duration::from_secs(30)).await?;
    let v1 = bundle_file(&lab, 0, "v1", &policy_dir(&lab, "v1", PERMIT_ALL)?)?;
    let v1_id = push_file(&lab, 0, &v1).await?;

    // One author writes a chain of revocations on top of the bundle.
    let author = Arc::new(Mutex::new(Author::with_key(
        weft_node::keyfile::read(&lab.alice_key)?,
        1,
    )));
    let mut all_acked: Vec<(String, String)> = vec![(v1_id, String::new())];
    let mut killed_in_flight = 0usize;
    let mut next = 0usize;
    let http = lab.http().clone();
    let url = lab.nodes[0].url();
    for round in 0..loops {
        // Stream revocations to node 0 until it dies.
        let stream = Arc::new(Mutex::new(Stream::default()));
        let task = {
            let (stream, author, http, url) =
                (stream.clone(), author.clone(), http.clone(), url.clone());
            let start = next;
            tokio::spawn(async move {
                for k in start.. {
                    let subject = format!("User::\"u{k}\"");
                    let bytes = author.lock().expect("the author").revoke(&subject)?;
                    stream.lock().expect("the stream").unacked = Some(bytes.clone());
                    let r = http
                        .post(format!("{url}/v1/updates"))
                        .body(bytes)
                        .send()
                        .await;
                    let Ok(r) = r else {
                        return Ok::<_, anyhow::Error>(k);
                    };
                    let code = r.status().as_u16();
                    let Ok(body) = r.json::<serde_json::Value>().await else {
                        return Ok(k);
                    };
                    ensure!(code == 202 && body["status"] == "applied", "{code} {body}");
                    let mut st = stream.lock().expect("the stream");
                    st.unacked = None;
                    st.acked
                        .push((body["id"].as_str().unwrap_or_default().to_owned(), subject));
                }
                Ok(0)
            })
        };
        tokio::time::sleep(Duration::from_millis(150 + jitter(600))).await;
        lab.kill9(0)?;
        next = task.await?? + 1;
        let (acked, unacked) = {
            let mut st = stream.lock().expect("the stream");
            (std::mem::take(&mut st.acked), st.unacked.take())
        };
        ensure!(
            !acked.is_empty(),
            "round {round}: no push was acknowledged before the kill"
        );
        if unacked.is_some() {
            killed_in_flight += 1;
        }
        all_acked.extend(acked);

        // Restart it cut off from its peer.
        lab.isolate(0)?;
        lab.spawn(0)?;
        lab.wait_healthy(0).await?;
        let st = lab.status(0).await?;
        ensure!(
            st["peers"]
                .as_array()
                .is_none_or(|p| p.iter().all(|p| p["admitted"] != true)),
            "round {round}: node 0 reached a peer while cut off: {st}"
        );
        let ids: Vec<String> = all_acked.iter().map(|(id, _)| id.clone()).collect();
        let missing = lab.holds(0, &ids).await?;
        ensure!(
            missing.is_empty(),
            "round {round}: {} acknowledged updates lost by kill -9: {missing:?}",
            missing.len()
        );
        for (_, subject) in all_acked.iter().filter(|(_, s)| !s.is_empty()) {
            let d = lab
                .authorize(0, subject, r#"Action::"view""#, r#"Doc::"d""#)
                .await?;
            ensure!(
                d["decision"] == "deny" && d["revoked"] == true,
                "round {round}: node 0 forgot the revocation of {subject}: {d}"
            );
        }
        // A client retries what was in flight: applied now, or a duplicate
        // if it had reached the store before the kill.
        if let Some(bytes) = unacked {
            let (code, body) = lab.submit(0, bytes).await?;
            ensure!(
                code == 202,
                "round {round}: the retry answered {code} {body}"
            );
            let id = body["id"].as_str().context("no id")?.to_owned();
            all_acked.push((id, format!("User::\"u{}\"", next - 1)));
        }
        lab.heal_all()?;
        eprintln!(
            "crash round {round}: {} updates acknowledged so far, none lost",
            all_acked.len()
        );
    }

    // The peer catches up with everything, and the pair converges.
    let lab_ref = &lab;
    let ids: Vec<String> = all_acked.iter().map(|(id, _)| id.clone()).collect();
    let t = eventually(Duration::from_secs(90), "node 1 to catch up", || {
        let ids = &ids;
        async move {
            Ok(lab_ref.holds(1, ids).await?.is_empty()
                && lab_ref.heads(0).await? == lab_ref.heads(1).await?)
        }
    })
    .await?;
    eprintln!(
        "FAULTS crash_safety kills={loops} acknowledged={} in_flight_at_kill={killed_in_flight} lost=0 peer_caught_up_ms={} result=pass",
        all_acked.len(),
        t.as_millis()
    );
    Ok(())
}
