//! Sites behind NAT, on real `weft node run` processes in network
//! namespaces ([`weft_tests::nat`]): three sites, each a node behind its
//! own router doing nftables masquerade with no inbound rule, and two
//! reachable nodes with `relay = true` on the internet between them. Each
//! site's node is given only one reachable node's address.
//!
//! The test shows, through each node's `/v1/status` and `weft status`:
//! every node admitted by every other, across all sites (through relays or
//! hole-punched direct connections); autonat's verdicts (relays public,
//! sites private); a revocation signed and pushed at one site enforced at
//! every other; with the reachable node two of the sites were given killed,
//! a second revocation from a site still reaching every site; and the kind
//! of each connection between sites.
//!
//! Needs root, iproute2 and nftables; without network namespaces it fails,
//! never skips. `WEFT_LAB_KEEP=1` keeps the lab's files (logs), and
//! `WEFT_LAB_LOG` sets the nodes' `RUST_LOG`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use weft_tests::nat::{NatLab, NatSpec};
use weft_tests::netns::{eventually, weft};

const PERMIT_ALL: &str = "@id(\"all\")\npermit(principal, action, resource);\n";

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `weft bundle create` of a permit-all bundle on node `i`'s state, signed
/// by alice; the file.
fn permit_all(lab: &NatLab, i: usize) -> Result<PathBuf> {
    let policies = lab.dir.path().join("policies");
    std::fs::create_dir_all(&policies)?;
    std::fs::write(policies.join("main.cedar"), PERMIT_ALL)?;
    let out = lab.dir.path().join("main.update");
    weft(&[
        "bundle",
        "create",
        "--name",
        "main",
        "--dir",
        &s(&policies),
        "--key",
        &s(&lab.alice_key),
        "--node",
        &lab.nodes[i].url(),
        "--out",
        &s(&out),
    ])?;
    Ok(out)
}

/// Waits until every running node decides `principal` as `allowed`.
async fn wait_everywhere(
    lab: &NatLab,
    principal: &str,
    allowed: bool,
    timeout: Duration,
) -> Result<Duration> {
    eventually(
        timeout,
        &format!(
            "every running node to {} {principal}",
            if allowed { "allow" } else { "deny" }
        ),
        || async move {
            for i in 0..lab.nodes.len() {
                if lab.running(i) && lab.allows(i, principal).await? != allowed {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await
}

/// `weft revoke` (signed by alice, pushed) at site node `at`, then waits
/// until every running node denies `subject`; how long that took.
async fn revoke_at(lab: &NatLab, at: usize, subject: &str) -> Result<Duration> {
    ensure!(
        lab.allows(at, subject).await?,
        "{subject} is denied already"
    );
    let started = Instant::now();
    weft(&[
        "revoke",
        "--key",
        &s(&lab.alice_key),
        "--node",
        &lab.nodes[at].url(),
        subject,
        "--reason",
        "left",
    ])?;
    wait_everywhere(lab, subject, false, Duration::from_secs(20)).await?;
    Ok(started.elapsed())
}

/// What node `i` says of its connection to node `j`: (transport, route,
/// hole_punched), once `j` is admitted.
async fn link(lab: &NatLab, i: usize, j: usize) -> Result<Option<(String, String, bool)>> {
    Ok(lab.peer_entry(i, j).await?.and_then(|p| {
        (p["admitted"] == true).then(|| {
            (
                p["transport"].as_str().unwrap_or_default().to_owned(),
                p["route"].as_str().unwrap_or_default().to_owned(),
                p["hole_punched"] == true,
            )
        })
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sites_behind_nat_form_one_mesh_and_revocations_reach_every_site() -> Result<()> {
    let t0 = Instant::now();
    // Relays 0 and 1; sites A and B are given relay 0, site C relay 1.
    let mut lab = NatLab::new(NatSpec {
        relays: 2,
        site_relay: vec![0, 0, 1],
    })?;
    eprintln!("[{:?}] lab built", t0.elapsed());
    lab.start_all().await?;
    eprintln!("[{:?}] every node up", t0.elapsed());
    let (r0, r1) = (0, 1);
    let sites: Vec<usize> = lab.sites().collect();
    let (a, b, c) = (sites[0], sites[1], sites[2]);
    let n = lab.nodes.len();

    // (a) One mesh across every site: each node admits every other.
    let formed = eventually(
        Duration::from_secs(45),
        "a full mesh across the sites",
        || {
            let lab = &lab;
            async move {
                for i in 0..n {
                    let admitted = lab.admitted(i).await?;
                    for j in (0..n).filter(|j| *j != i) {
                        if !admitted.contains(&lab.nodes[j].id) {
                            return Ok(false);
                        }
                    }
                }
                Ok(true)
            }
        },
    )
    .await
    .with_context(|| {
        format!(
            "site A's log:\n{}\nrelay 0's log:\n{}",
            lab.log_tail(a),
            lab.log_tail(r0)
        )
    })?;
    eprintln!(
        "[{:?}] full mesh of {n} nodes across 3 NATed sites in {formed:?}",
        t0.elapsed()
    );

    // Every site listens through a relay, and no site reaches another
    // site directly except by a hole punch: nothing else crosses a NAT.
    // (A connection may be replaced meanwhile: each pair is read until it
    // is admitted; a kind that cannot cross a NAT fails at once.)
    let violations = std::sync::Mutex::new(Vec::new());
    eventually(
        Duration::from_secs(15),
        "each site's view of the others",
        || {
            let (lab, sites, violations) = (&lab, &sites, &violations);
            async move {
                for &i in sites {
                    let st = lab.status(i).await?;
                    if st["relay"]["via"].as_array().is_none_or(Vec::is_empty) {
                        return Ok(false);
                    }
                    for &j in sites.iter().filter(|j| **j != i) {
                        let Some((transport, route, punched)) = link(lab, i, j).await? else {
                            return Ok(false);
                        };
                        let ok = (route == "relayed" && transport == "relayed" && !punched)
                            || (route == "direct after hole punch"
                                && punched
                                && (transport == "tcp" || transport == "quic"));
                        if !ok {
                            violations.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
                            "{} reaches {} as {transport} {route} (hole punched: {punched})",
                            lab.nodes[i].name, lab.nodes[j].name
                        ));
                        }
                    }
                }
                Ok(true)
            }
        },
    )
    .await?;
    let violations = violations.into_inner().unwrap_or_else(|e| e.into_inner());
    ensure!(
        violations.is_empty(),
        "between NATs only a relay or a hole punch can connect two sites: {violations:?}"
    );

    // autonat: the relays are public, the sites private.
    eventually(Duration::from_secs(30), "autonat's verdicts", || {
        let lab = &lab;
        let sites = &sites;
        async move {
            for i in [r0, r1] {
                if lab.status(i).await?["reachability"] != "public" {
                    return Ok(false);
                }
            }
            for &i in sites {
                if lab.status(i).await?["reachability"] != "private" {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    })
    .await?;

    eprintln!("[{:?}] autonat: relays public, sites private", t0.elapsed());

    // A bundle pushed at site A reaches every node.
    let bundle = std::fs::read(permit_all(&lab, a)?)?;
    let (code, body) = lab.submit(a, bundle).await?;
    ensure!(code == 202, "site A answered {code} {body}");
    wait_everywhere(&lab, r#"User::"alice""#, true, Duration::from_secs(20)).await?;
    wait_everywhere(&lab, r#"User::"carol""#, true, Duration::from_secs(5)).await?;

    // (b) A revocation signed and pushed at site A is enforced at every
    // other site.
    let first = revoke_at(&lab, a, r#"User::"alice""#).await?;
    eprintln!(
        "[{:?}] revocation from site A enforced at every node in {first:?}",
        t0.elapsed()
    );

    // (d) Connection kinds between the sites, once DCUtR has had its say.
    // The routers keep a connection's source port (masquerade with the
    // port free) and map it the same whatever the destination
    // (endpoint-independent mapping): both ends' simultaneous dials meet,
    // so every pair of sites ends up hole punched, over QUIC or TCP.
    let punched = eventually(
        Duration::from_secs(20),
        "every pair of sites connected directly by a hole punch",
        || {
            let lab = &lab;
            let sites = &sites;
            async move {
                for &i in sites {
                    for &j in sites.iter().filter(|j| **j != i) {
                        match link(lab, i, j).await? {
                            Some((_, route, true)) if route == "direct after hole punch" => {}
                            _ => return Ok(false),
                        }
                    }
                }
                Ok(true)
            }
        },
    )
    .await;
    let mut kinds = Vec::new();
    for &i in &sites {
        for &j in sites.iter().filter(|j| **j > i) {
            kinds.push(format!(
                "{}→{}: {:?}",
                lab.nodes[i].name,
                lab.nodes[j].name,
                link(&lab, i, j).await?
            ));
        }
        let st = lab.status(i).await?;
        eprintln!(
            "{}: reachability {}, relay {}",
            lab.nodes[i].name, st["reachability"], st["relay"]
        );
    }
    eprintln!("[{:?}] connections between sites: {kinds:?}", t0.elapsed());
    punched.with_context(|| format!("connections between sites: {kinds:?}"))?;

    // `weft status` says how many peers only a relay reaches, and the
    // site's reachability.
    let text = weft(&["status", "--node", &lab.nodes[a].url()])?;
    ensure!(
        text.contains("0 reachable only through a relay") && text.contains("reachable:   private"),
        "weft status of site A:\n{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&weft(&["status", "--json", "--node", &lab.nodes[a].url()])?)?;
    ensure!(json["reachability"] == "private", "{json}");

    // (c) Kill the relay sites A and B were given; a second revocation,
    // from site B, still reaches every site.
    lab.kill9(r0)?;
    let second = revoke_at(&lab, b, r#"User::"carol""#).await?;
    eprintln!(
        "[{:?}] with relay 0 killed, revocation from site B enforced everywhere in {second:?}",
        t0.elapsed()
    );
    ensure!(
        !lab.allows(c, r#"User::"carol""#).await? && !lab.allows(a, r#"User::"carol""#).await?,
        "carol is still allowed at a site"
    );
    let took = t0.elapsed();
    eprintln!("NAT test ran in {took:?}");
    ensure!(took < Duration::from_secs(90), "the NAT test took {took:?}");
    Ok(())
}
