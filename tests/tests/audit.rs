//! The audit trail end to end: real nodes record decisions, updates and
//! admissions in a hash-chained log, sign checkpoints and gossip them; the
//! peer keeps them; `weft audit verify` finds a changed record, a truncated
//! log, and (only with the peer's copies) a log rewritten and re-hashed,
//! even after hundreds of checkpoints of the rewritten log. Checkpoints are
//! kept only from admitted peers, and only about nodes with a valid
//! certificate.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use weft_node::audit::{AUDIT_TOPIC, AuditConfig, AuditLog, MAX_PEER_CHECKPOINTS};
use weft_node::daemon::spawn_node;
use weft_node::keyfile;
use weft_node::layout::NodeDir;
use weft_protocol::audit::{Checkpoint, CheckpointGossip, Record, SignedCheckpoint};
use weft_protocol::identity::{NodeId, SecretKey};
use weft_protocol::trust::{NodeCert, SignedNodeCert};
use weft_tests::hostile::Hostile;
use weft_tests::mesh::{
    Author, Fixture, addr, admitted, authorize, eventually, init_logs, now, push, submit,
};
use weft_tests::netns::weft_status;

fn quick_audit() -> AuditConfig {
    AuditConfig {
        allow_one_in: 1,
        checkpoint_every: Duration::from_millis(200),
        ..AuditConfig::default()
    }
}

async fn get_json(url: &str) -> Result<Value> {
    Ok(reqwest::get(url).await?.json().await?)
}

async fn get_lines(url: &str) -> Result<Vec<Value>> {
    let text = reqwest::get(url).await?.text().await?;
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect()
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}

/// Opens a stopped node's audit log to tamper with it.
fn open_log(dir: &Path) -> Result<(sled::Db, AuditLog)> {
    let db = sled::open(NodeDir::new(dir).store())?;
    let log = AuditLog::open(&db)?;
    Ok((db, log))
}

fn verify(dir: &Path, peer_dir: Option<&Path>) -> Result<(i32, String, String)> {
    let d = dir.display().to_string();
    let mut args = vec!["audit", "verify", "--dir", d.as_str()];
    let p;
    if let Some(peer) = peer_dir {
        p = peer.display().to_string();
        args.extend(["--peer-dir", p.as_str()]);
    }
    weft_status(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_records_events_and_peer_checkpoints_expose_rewrites() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let (dir_a, id_a) = fx.node_dir("a", true)?;
    let (dir_b, _) = fx.node_dir("b", true)?;
    let mut oa = fx.options(dir_a.clone(), &[]);
    oa.audit = quick_audit();
    let a = spawn_node(oa).await?;
    let mut ob = fx.options(dir_b.clone(), &[addr(&a)]);
    ob.audit = quick_audit();
    let b = spawn_node(ob).await?;

    let mut author = Author::new(&fx);
    push(&a, author.bundle("b", r#"User::"alice""#)?).await?;
    let (code, _) = submit(&a, b"garbage".to_vec()).await?;
    ensure!(code == 400);
    ensure!(authorize(&a, r#"User::"alice""#).await?["decision"] == "allow");
    ensure!(authorize(&a, r#"User::"mallory""#).await?["decision"] == "deny");

    // The records, exported over HTTP.
    let url_a = a.api_url();
    eventually(Duration::from_secs(10), "a's records", || {
        let url = format!("{url_a}/v1/audit");
        async move {
            let lines = get_lines(&url).await?;
            Ok(lines.iter().any(|l| l["event"]["kind"] == "admitted")
                && lines
                    .iter()
                    .filter(|l| l["event"]["kind"] == "decision")
                    .count()
                    == 2)
        }
    })
    .await?;
    let kinds = get_lines(&format!("{url_a}/v1/audit")).await?;
    let find = |pred: &dyn Fn(&Value) -> bool| kinds.iter().any(|l| pred(&l["event"]));
    ensure!(find(&|e| e["kind"] == "started"), "{kinds:#?}");
    ensure!(
        find(&|e| e["kind"] == "update_applied" && e["touches"][0] == "bundle b"),
        "{kinds:#?}"
    );
    ensure!(
        find(&|e| e["kind"] == "update_refused" && e["source"] == "api"),
        "{kinds:#?}"
    );
    ensure!(
        find(&|e| e["kind"] == "decision"
            && e["principal"] == r#"User::"mallory""#
            && e["decision"] == "deny"),
        "{kinds:#?}"
    );
    ensure!(
        find(&|e| e["kind"] == "decision" && e["decision"] == "allow" && e["sampled_one_in"] == 1),
        "{kinds:#?}"
    );
    for (i, l) in kinds.iter().enumerate() {
        ensure!(l["seq"] == i as u64 + 1, "records are numbered from 1: {l}");
    }
    // `since` skips what came before.
    let last_ms = kinds.last().unwrap()["at_ms"].as_u64().unwrap();
    let later = get_lines(&format!("{url_a}/v1/audit?since={}", last_ms + 1)).await?;
    ensure!(later.iter().all(|l| l["at_ms"].as_u64() > Some(last_ms)));

    // A live check of the chain, and the status fields.
    let v = get_json(&format!("{url_a}/v1/audit/verify")).await?;
    ensure!(v["ok"] == true, "{v}");
    let st = get_json(&format!("{url_a}/v1/status")).await?;
    ensure!(st["audit"]["records"].as_u64() >= Some(6), "{st}");
    ensure!(st["audit"]["dropped"] == 0, "{st}");
    let metrics = reqwest::get(format!("{url_a}/metrics"))
        .await?
        .text()
        .await?;
    ensure!(metrics.contains("weft_audit_dropped_total 0"), "{metrics}");
    ensure!(metrics.contains("weft_audit_records "), "{metrics}");

    // B holds A's checkpoint of A's current head.
    let url_b = b.api_url();
    eventually(
        Duration::from_secs(15),
        "b to hold a's newest checkpoint",
        || {
            let (ua, ub) = (url_a.clone(), url_b.clone());
            async move {
                let head = get_json(&format!("{ua}/v1/audit/status")).await?;
                let held = get_lines(&format!("{ub}/v1/audit/checkpoints?node={id_a}")).await?;
                Ok(held
                    .iter()
                    .any(|c| c["seq"] == head["records"] && c["head"] == head["head"]))
            }
        },
    )
    .await?;
    let records = get_json(&format!("{url_a}/v1/audit/status")).await?["records"]
        .as_u64()
        .unwrap();
    a.shutdown().await?;
    b.shutdown().await?;

    // Intact: verifies alone and against the peer.
    let (code, out, err) = verify(&dir_a, Some(&dir_b))?;
    ensure!(code == 0, "{out}{err}");
    ensure!(out.contains("intact"), "{out}");

    let scratch = tempfile::tempdir()?;

    // A changed record is named.
    let changed = scratch.path().join("changed");
    copy_dir(&dir_a, &changed)?;
    {
        let (db, log) = open_log(&changed)?;
        let mut r = log.record(3).context("record 3")?;
        r.event = br#"{"kind":"admitted","peer":"forged"}"#.to_vec();
        log.records_tree()
            .insert(3u64.to_be_bytes(), r.to_value())?;
        db.flush()?;
    }
    let (code, _, err) = verify(&changed, None)?;
    ensure!(code == 1, "{err}");
    ensure!(err.contains("record 3 was changed"), "{err}");

    // A removed record is named.
    let removed = scratch.path().join("removed");
    copy_dir(&dir_a, &removed)?;
    {
        let (db, log) = open_log(&removed)?;
        log.records_tree().remove(4u64.to_be_bytes())?;
        db.flush()?;
    }
    let (code, _, err) = verify(&removed, None)?;
    ensure!(code == 1 && err.contains("record 4 is missing"), "{err}");

    // A truncated log, even with the node's own checkpoints and head marker
    // wiped, is caught by the checkpoint the peer holds.
    let cut = scratch.path().join("cut");
    copy_dir(&dir_a, &cut)?;
    {
        let (db, log) = open_log(&cut)?;
        for s in records - 2..=records {
            log.records_tree().remove(s.to_be_bytes())?;
        }
        db.drop_tree("audit_checkpoints")?;
        db.open_tree("meta")?.remove("audit_head")?;
        db.flush()?;
    }
    let (code, out, err) = verify(&cut, None)?;
    ensure!(
        code == 0,
        "without the peer the cut is invisible: {out}{err}"
    );
    let (code, _, err) = verify(&cut, Some(&dir_b))?;
    ensure!(code == 1 && err.contains("truncated"), "{err}");
    ensure!(err.contains("held by peer"), "{err}");

    // A rewrite that re-hashes the chain after record 2 and wipes the
    // node's own checkpoints: consistent on its own, exposed by the peer.
    let rewritten = scratch.path().join("rewritten");
    copy_dir(&dir_a, &rewritten)?;
    {
        let (db, log) = open_log(&rewritten)?;
        let mut prev = log.record(2).context("record 2")?.hash;
        for seq in 3..=records {
            let old = log.record(seq).context("a record")?;
            let event = if seq == 3 {
                br#"{"kind":"admitted","peer":"forged"}"#.to_vec()
            } else {
                old.event
            };
            let r = Record::new(seq, old.at_ms, prev, event);
            prev = r.hash;
            log.records_tree().insert(seq.to_be_bytes(), r.to_value())?;
        }
        db.drop_tree("audit_checkpoints")?;
        db.open_tree("meta")?.remove("audit_head")?;
        db.flush()?;
    }
    let (code, out, err) = verify(&rewritten, None)?;
    ensure!(code == 0, "the chain alone cannot tell: {out}{err}");
    let (code, _, err) = verify(&rewritten, Some(&dir_b))?;
    ensure!(code == 1, "{err}");
    ensure!(
        err.contains("disagrees with the checkpoint") && err.contains("held by peer"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_verify_from_the_command_line() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let (dir, _) = fx.node_dir("solo", true)?;
    let mut o = fx.options(dir.clone(), &[]);
    o.audit = quick_audit();
    let node = spawn_node(o).await?;
    for _ in 0..3 {
        authorize(&node, r#"User::"mallory""#).await?;
    }
    let url = node.api_url();
    eventually(Duration::from_secs(10), "three denies recorded", || {
        let url = url.clone();
        async move {
            let st = get_json(&format!("{url}/v1/audit/status")).await?;
            Ok(st["records"].as_u64() >= Some(4))
        }
    })
    .await?;
    let (code, out, err) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || weft_status(&["audit", "export", "--node", &url, "--since", "1h"])
    })
    .await??;
    ensure!(code == 0, "{err}");
    let denies = out
        .lines()
        .filter(|l| l.contains(r#""decision":"deny""#))
        .count();
    ensure!(denies == 3, "{out}");
    // A running node's store is locked: verify says so in one line.
    let (code, _, err) = verify(&dir, None)?;
    ensure!(
        code == 1 && err.contains("in use by a running node"),
        "{err}"
    );
    ensure!(err.lines().count() == 1, "{err}");
    let (code, _, err) = weft_status(&["audit", "export", "--node", &url, "--since", "soon"])?;
    ensure!(code == 1 && err.starts_with("error: --since"), "{err}");
    node.shutdown().await?;
    Ok(())
}

/// A certificate of `node` signed by `issuer`, valid from an hour ago until
/// `expires` (Unix seconds).
fn cert(node: NodeId, issuer: &SecretKey, expires: u64) -> SignedNodeCert {
    SignedNodeCert::sign(
        &NodeCert {
            node,
            name: "edge".into(),
            issuer: issuer.public(),
            issued: now() - 3600,
            expires,
        },
        issuer,
    )
}

/// `key`'s checkpoint of record `seq` (hash `head`), signed.
fn signed_checkpoint(key: &SecretKey, seq: u64, head: [u8; 32]) -> SignedCheckpoint {
    let cp = Checkpoint {
        node: NodeId::new(key.public()),
        seq,
        head,
        at_ms: now() * 1000,
    };
    SignedCheckpoint::sign(&cp, key)
}

/// `key`'s checkpoint of record `seq`, as gossiped with `cert`.
fn gossip(key: &SecretKey, cert: &SignedNodeCert, seq: u64) -> Vec<u8> {
    CheckpointGossip {
        checkpoint: signed_checkpoint(key, seq, [seq as u8; 32]),
        cert: cert.clone(),
    }
    .to_bytes()
}

/// The checkpoints of `node` that the node at `url` holds.
async fn held_by(url: &str, node: &NodeId) -> Result<Vec<Value>> {
    get_lines(&format!("{url}/v1/audit/checkpoints?node={node}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_kept_only_from_admitted_peers_and_only_of_certified_nodes() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let (dir, _) = fx.node_dir("a", true)?;
    let mut o = fx.options(dir, &[]);
    // Long enough for the silent peer to stay connected, unadmitted,
    // through the test.
    o.replica.admission_timeout_ms = 60_000;
    let a = spawn_node(o).await?;
    let url = a.api_url();
    let valid_until = now() + 86_400;

    // Two admitted peers, and one connected that never shows its
    // certificate (a valid one).
    let (k1, k2, ks) = (
        keyfile::generate()?,
        keyfile::generate()?,
        keyfile::generate()?,
    );
    let (id1, id2, ids) = (
        NodeId::new(k1.public()),
        NodeId::new(k2.public()),
        NodeId::new(ks.public()),
    );
    let (c1, c2, cs) = (
        cert(id1, &fx.alice, valid_until),
        cert(id2, &fx.alice, valid_until),
        cert(ids, &fx.alice, valid_until),
    );
    let h1 = Hostile::start(&k1, c1.to_bytes(), vec![addr(&a)])?;
    let h2 = Hostile::start(&k2, c2.to_bytes(), vec![addr(&a)])?;
    let silent = Hostile::start_silent(&ks, vec![addr(&a)])?;
    eventually(Duration::from_secs(15), "a to admit both peers", || async {
        Ok(admitted(&a).await? == 2 && silent.connected().await?.len() == 1)
    })
    .await?;

    // The silent peer passes on a checkpoint of its own, valid in every
    // other way.
    silent
        .publish_on_when_ready(AUDIT_TOPIC, gossip(&ks, &cs, 1))
        .await?;

    // Fake nodes' checkpoints, passed on by admitted peers: no certificate,
    // an expired one, one from another mesh's operator, and another node's.
    let fake = |n: u8| {
        let k = SecretKey::from_seed([n; 32]);
        let id = NodeId::new(k.public());
        (k, id)
    };
    let ((f1, n1), (f2, n2), (f3, n3), (f4, n4)) = (fake(1), fake(2), fake(3), fake(4));
    let stranger = keyfile::generate()?;
    h1.publish_on_when_ready(AUDIT_TOPIC, signed_checkpoint(&f1, 1, [1; 32]).to_bytes())
        .await?;
    h1.publish_on_when_ready(AUDIT_TOPIC, gossip(&f2, &cert(n2, &fx.alice, now() - 1), 1))
        .await?;
    h2.publish_on_when_ready(
        AUDIT_TOPIC,
        gossip(&f3, &cert(n3, &stranger, valid_until), 1),
    )
    .await?;
    h2.publish_on_when_ready(AUDIT_TOPIC, gossip(&f4, &c2, 1))
        .await?;
    // Then each admitted peer passes on a good one of its own: both are
    // kept (two rejects each leave their scores above the graylist).
    h1.publish_on_when_ready(AUDIT_TOPIC, gossip(&k1, &c1, 1))
        .await?;
    h2.publish_on_when_ready(AUDIT_TOPIC, gossip(&k2, &c2, 1))
        .await?;
    eventually(Duration::from_secs(15), "the good checkpoints kept", || {
        let url = url.clone();
        async move { Ok(held_by(&url, &id1).await?.len() == 1 && held_by(&url, &id2).await?.len() == 1) }
    })
    .await?;
    // Each peer's messages are handled in order, so the bad ones were
    // handled before; the silent peer's had as long as a second more.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (id, what) in [
        (n1, "with no certificate"),
        (n2, "with an expired certificate"),
        (n3, "with another mesh's certificate"),
        (n4, "with another node's certificate"),
        (ids, "passed on by a peer that is not admitted"),
    ] {
        let held = held_by(&url, &id).await?;
        ensure!(held.is_empty(), "a kept a checkpoint {what}: {held:?}");
    }
    let st = get_json(&format!("{url}/v1/audit/status")).await?;
    ensure!(st["peer_checkpoints"] == 2, "{st}");
    ensure!(
        st["checkpoints_refused"] == 4,
        "the four forged ones refused, the silent peer's ignored: {st}"
    );
    let metrics = reqwest::get(format!("{url}/metrics")).await?.text().await?;
    ensure!(
        metrics.contains("weft_audit_checkpoints_refused_total 4"),
        "{metrics}"
    );
    drop((h1, h2, silent));
    a.shutdown().await?;
    Ok(())
}

/// A node rewrites its log, wipes its own checkpoints and signs hundreds
/// of checkpoints of the rewritten log, more than a peer keeps of the
/// newest: the peer still holds one from before that contradicts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_is_exposed_after_hundreds_of_new_checkpoints() -> Result<()> {
    init_logs();
    let fx = Fixture::new()?;
    let (dir_a, id_a) = fx.node_dir("a", true)?;
    let (dir_b, _) = fx.node_dir("b", true)?;
    let key_a = keyfile::read(&NodeDir::new(&dir_a).key())?;
    let event = |seq: u64, forged: bool| {
        let peer = if forged { "forged" } else { "honest" };
        format!(r#"{{"kind":"admitted","peer":"{peer}{seq}"}}"#).into_bytes()
    };
    let sign = |log: &AuditLog| -> Result<(Checkpoint, SignedCheckpoint)> {
        let (seq, head) = log.head();
        let cp = Checkpoint {
            node: id_a,
            seq,
            head,
            at_ms: now() * 1000,
        };
        let signed = SignedCheckpoint::sign(&cp, &key_a);
        log.put_own_checkpoint(&cp, &signed)?;
        Ok((cp, signed))
    };
    let after = MAX_PEER_CHECKPOINTS as u64 + 44;
    {
        let (db_a, log_a) = open_log(&dir_a)?;
        let (db_b, log_b) = open_log(&dir_b)?;
        // 100 records, each followed by a checkpoint that b keeps.
        for seq in 1..=100u64 {
            let prev = if seq == 1 {
                weft_protocol::audit::GENESIS
            } else {
                log_a.record(seq - 1).context("a record")?.hash
            };
            let r = Record::new(seq, now() * 1000, prev, event(seq, false));
            log_a
                .records_tree()
                .insert(seq.to_be_bytes(), r.to_value())?;
        }
        drop(log_a);
        let log_a = AuditLog::open(&db_a)?;
        for seq in 1..=100u64 {
            let r = log_a.record(seq).context("a record")?;
            let cp = Checkpoint {
                node: id_a,
                seq,
                head: r.hash,
                at_ms: now() * 1000,
            };
            let signed = SignedCheckpoint::sign(&cp, &key_a);
            log_a.put_own_checkpoint(&cp, &signed)?;
            ensure!(log_b.put_peer_checkpoint(&cp, &signed)?);
        }
        // Records from 60 on are rewritten and re-hashed, a's own
        // checkpoints wiped, and the log goes on: a checkpoint of every new
        // record, each kept by b.
        let mut prev = log_a.record(59).context("record 59")?.hash;
        for seq in 60..=100u64 {
            let r = Record::new(seq, now() * 1000, prev, event(seq, true));
            prev = r.hash;
            log_a
                .records_tree()
                .insert(seq.to_be_bytes(), r.to_value())?;
        }
        db_a.drop_tree("audit_checkpoints")?;
        drop(log_a);
        let log_a = AuditLog::open(&db_a)?;
        for seq in 101..=100 + after {
            log_a.append(
                now() * 1000,
                &weft_node::audit::AuditEvent::Dropped { count: seq },
            )?;
            let (cp, signed) = sign(&log_a)?;
            ensure!(log_b.put_peer_checkpoint(&cp, &signed)?);
        }
        log_a.mark_head()?;
        db_a.flush()?;
        db_b.flush()?;
    }
    // Consistent on its own, and with its own checkpoints.
    let (code, out, err) = verify(&dir_a, None)?;
    ensure!(code == 0, "the chain alone cannot tell: {out}{err}");
    // b keeps a bounded number, and one from before the rewrite.
    let (code, out, err) = verify(&dir_a, Some(&dir_b))?;
    ensure!(code == 1, "the rewrite went unnoticed: {out}{err}");
    ensure!(
        err.contains("disagrees with the checkpoint") && err.contains("held by peer"),
        "{err}"
    );
    {
        let (_db, log_b) = open_log(&dir_b)?;
        let held = log_b.peer_checkpoints_of(&id_a).len();
        ensure!(held <= MAX_PEER_CHECKPOINTS, "b holds {held}");
    }
    Ok(())
}
