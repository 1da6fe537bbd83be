//! Trust-root rotations on in-process nodes: what a rotation drops stays
//! dropped across a restart, whatever the node's store holds.
//!
//! The mesh-wide story (the CLI, gossip, sync, a node that was down, a
//! `trust.json` put back) is in `tests/netns.rs`.

use std::time::Duration;

use anyhow::{Result, ensure};
use weft_node::daemon::spawn_node;
use weft_node::keyfile;
use weft_protocol::identity::SecretKey;
use weft_protocol::trust::{Operator, Role, SignedRoot, TrustRoot};
use weft_tests::mesh::{Author, Fixture, authorize, heads, init_logs, now, push, submit};

/// A fixture whose root (signed by `root_key`) has alice (every role) and
/// bob (policy).
fn fixture(root_key: &SecretKey, bob: &SecretKey) -> Result<Fixture> {
    let mut fx = Fixture::new()?;
    fx.root.root_keys = vec![root_key.public()];
    fx.root.operators.push(Operator {
        name: "bob".into(),
        key: bob.public(),
        roles: [Role::Policy].into_iter().collect(),
    });
    fx.root.sort_operators();
    fx.root.validate()?;
    fx.signed = SignedRoot::sign(&fx.root, &[root_key]);
    Ok(fx)
}

/// Version 2 of `root`: bob removed, vouching for `accepted` (hex heads).
fn without_bob(root: &TrustRoot, accepted: &[String], root_key: &SecretKey) -> Result<Vec<u8>> {
    let mut next = root.clone();
    next.version = 2;
    next.expires = now() + 86_400;
    next.operators.retain(|o| o.name != "bob");
    next.accepted_heads = accepted
        .iter()
        .map(|h| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(h, &mut out)?;
            Ok(out)
        })
        .collect::<Result<_, hex::FromHexError>>()?;
    next.validate()?;
    Ok(SignedRoot::sign(&next, &[root_key]).to_bytes())
}

/// An update bob wrote under version 1 after the heads a rotation vouched
/// for is dropped when the node adopts the rotation, and the history the
/// rotation vouched for is kept. A restart must not bring the dropped
/// update back, even with a snapshot of the store taken before the
/// rotation, which covers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_a_rotation_drops_stays_dropped_after_a_restart() -> Result<()> {
    init_logs();
    let root_key = keyfile::generate()?;
    let bob = keyfile::generate()?;
    let fx = fixture(&root_key, &bob)?;
    let (dir, _) = fx.node_dir("a", true)?;
    let mut opts = fx.options(dir, &[]);
    // A snapshot after every applied update.
    opts.snapshot_every = 1;
    let node = spawn_node(opts.clone()).await?;

    let mut alice = Author::new(&fx);
    push(&node, alice.bundle("first", r#"User::"carol""#)?).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kept = push(&node, alice.bundle("main", r#"User::"alice""#)?).await?;
    // One snapshot at a time: let each be written before the next update.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rotation = without_bob(&fx.root, std::slice::from_ref(&kept), &root_key)?;
    let mut by_bob = Author::with_key(SecretKey::from_pkcs8_pem(&bob.to_pkcs8_pem())?, 1);
    by_bob.follow(&node).await?;
    let dropped = push(&node, by_bob.bundle("bob", r#"User::"bob""#)?).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(authorize(&node, r#"User::"bob""#).await?["decision"] == "allow");

    let (code, body) = submit(&node, rotation).await?;
    ensure!(code == 202 && body["status"] == "applied", "{code} {body}");
    ensure!(
        heads(&node).await? == [kept.clone()],
        "the rotation did not drop {dropped}: heads {:?}",
        heads(&node).await?
    );
    ensure!(authorize(&node, r#"User::"bob""#).await?["decision"] == "deny");
    node.shutdown().await?;

    let node = spawn_node(opts).await?;
    ensure!(
        node.load_report().from_snapshot == 2,
        "the node did not start from the snapshot it took under version 2: {:?}",
        node.load_report()
    );
    ensure!(
        node.status().await?.trust_root.version == 2,
        "the restarted node runs under version {}",
        node.status().await?.trust_root.version
    );
    ensure!(
        heads(&node).await? == [kept.clone()],
        "the restart brought back the update the rotation dropped: heads {:?}",
        heads(&node).await?
    );
    ensure!(
        authorize(&node, r#"User::"bob""#).await?["decision"] == "deny",
        "bob's dropped bundle decides again after the restart"
    );
    ensure!(authorize(&node, r#"User::"alice""#).await?["decision"] == "allow");
    ensure!(authorize(&node, r#"User::"carol""#).await?["decision"] == "allow");
    node.shutdown().await?;
    Ok(())
}

/// The same when the rotation is put in `trust.json` by hand while the node
/// is stopped: the node starts under version 2, does not restore the
/// snapshot it took under version 1, and so does not bring back bob's
/// update, which version 2 did not vouch for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_put_in_the_trust_file_by_hand_drops_what_it_does_not_vouch_for() -> Result<()> {
    init_logs();
    let root_key = keyfile::generate()?;
    let bob = keyfile::generate()?;
    let fx = fixture(&root_key, &bob)?;
    let (dir, _) = fx.node_dir("a", true)?;
    let mut opts = fx.options(dir.clone(), &[]);
    opts.snapshot_every = 1;
    let node = spawn_node(opts.clone()).await?;
    let mut alice = Author::new(&fx);
    push(&node, alice.bundle("first", r#"User::"carol""#)?).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kept = push(&node, alice.bundle("main", r#"User::"alice""#)?).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut by_bob = Author::with_key(SecretKey::from_pkcs8_pem(&bob.to_pkcs8_pem())?, 1);
    by_bob.follow(&node).await?;
    push(&node, by_bob.bundle("bob", r#"User::"bob""#)?).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.shutdown().await?;

    let rotation = without_bob(&fx.root, std::slice::from_ref(&kept), &root_key)?;
    std::fs::write(
        weft_node::layout::NodeDir::new(&dir).trust(),
        weft_protocol::trust::to_trust_file(&SignedRoot::from_bytes(&rotation)?),
    )?;
    let node = spawn_node(opts).await?;
    ensure!(node.status().await?.trust_root.version == 2);
    ensure!(
        node.load_report().snapshot_dropped,
        "the snapshot taken under version 1 was restored under version 2"
    );
    ensure!(
        heads(&node).await? == [kept.clone()],
        "heads {:?}",
        heads(&node).await?
    );
    ensure!(authorize(&node, r#"User::"bob""#).await?["decision"] == "deny");
    ensure!(authorize(&node, r#"User::"carol""#).await?["decision"] == "allow");
    node.shutdown().await?;
    Ok(())
}
