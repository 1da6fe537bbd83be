//! `weft node init` and `weft node certify`.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::ExitCode;
use std::str::FromStr as _;

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::json;
use weft_protocol::identity::NodeId;
use weft_protocol::time::{format_timestamp, parse_duration};
use weft_protocol::trust::{NodeCert, Role, SignedNodeCert, validate_name};

use super::common::verify_root;
use super::{NodeCertifyArgs, NodeInitArgs};
use crate::keyfile;
use crate::layout::{Config, NodeDir};
use crate::util::{read_trust_file, write_atomic, write_new_file};

/// Runs `weft node init`.
pub(crate) fn init(a: &NodeInitArgs) -> Result<ExitCode> {
    // Check everything before creating anything.
    let now = crate::clock::unix_secs()?;
    let (trust_text, signed) = read_trust_file(&a.trust)?;
    let root = verify_root(&signed, now, &a.trust.display().to_string())?;
    let mut config = Config::default();
    if let Some(listen) = &a.listen {
        check_multiaddr(listen, "--listen")?;
        let addr = libp2p::Multiaddr::from_str(listen)?;
        crate::transport::check_listen(&addr).map_err(|e| anyhow!("--listen: {e}"))?;
        config.listen = listen.clone();
    }
    if let Some(api) = &a.api {
        check_host_port(api)?;
        config.api = api.clone();
    }
    for peer in &a.peers {
        check_multiaddr(peer, "--peer")?;
    }
    config.peers = a.peers.clone();

    let dir = NodeDir::new(&a.dir);
    let created = prepare_dir(&a.dir)?;
    let key = match populate(&dir, &trust_text, &config) {
        Ok(key) => key,
        Err(e) => {
            // Leave nothing half-made behind: the directory was new or empty.
            if created {
                let _ = std::fs::remove_dir_all(&a.dir);
            } else {
                for p in [dir.key(), dir.trust(), dir.config()] {
                    let _ = std::fs::remove_file(p);
                }
                let _ = std::fs::remove_dir_all(dir.store());
            }
            return Err(e);
        }
    };
    let node_id = NodeId::new(key.public());
    if a.json {
        println!(
            "{}",
            json!({
                "node_id": node_id.to_string(),
                "public_key": key.public().to_string(),
                "dir": a.dir.display().to_string(),
                "key": dir.key().display().to_string(),
                "trust": dir.trust().display().to_string(),
                "trust_version": root.version,
                "config": serde_json::to_value(&config)?,
                "store": dir.store().display().to_string(),
            })
        );
    } else {
        let d = a.dir.display();
        println!("created node directory {d} (mode 0700)");
        println!("  key:    {} (mode 0600)", dir.key().display());
        println!(
            "  trust:  {} (trust root version {}, expires {})",
            dir.trust().display(),
            root.version,
            format_timestamp(root.expires)
        );
        println!(
            "  config: {} (listen {}, api {}, {} peer{})",
            dir.config().display(),
            config.listen,
            config.api,
            config.peers.len(),
            if config.peers.len() == 1 { "" } else { "s" }
        );
        println!("  store:  {}", dir.store().display());
        println!(
            "next: an operator with the admit role runs `weft node certify --key OPERATOR_KEY --dir {d}`"
        );
        println!("{node_id}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates `dir` with mode 0700, or checks that an existing one is an empty
/// directory (and sets it to 0700). Returns whether it was created.
fn prepare_dir(dir: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            if !meta.is_dir() {
                bail!(
                    "refusing to use {}: it exists and is not a directory",
                    dir.display()
                );
            }
            let mut entries = std::fs::read_dir(dir)
                .with_context(|| format!("cannot read directory {}", dir.display()))?;
            if entries.next().is_some() {
                bail!(
                    "refusing to use {}: the directory is not empty (give a new or empty directory)",
                    dir.display()
                );
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot set the mode of {} to 0700", dir.display()))?;
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create directory {}", parent.display()))?;
            }
            DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
            // The umask may have taken bits away, never added any; set it exactly.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot set the mode of {} to 0700", dir.display()))?;
            Ok(true)
        }
        Err(e) => Err(anyhow!("cannot use {}: {e}", dir.display())),
    }
}

/// Writes the key, the trust file, weft.toml and the store directory.
fn populate(
    dir: &NodeDir,
    trust_text: &str,
    config: &Config,
) -> Result<weft_protocol::identity::SecretKey> {
    let key = keyfile::generate()?;
    keyfile::write(&dir.key(), &key)?;
    write_new_file(&dir.trust(), trust_text.as_bytes(), false)?;
    write_new_file(&dir.config(), config.to_toml().as_bytes(), false)?;
    DirBuilder::new()
        .mode(0o700)
        .create(dir.store())
        .with_context(|| format!("cannot create directory {}", dir.store().display()))?;
    Ok(key)
}

fn check_multiaddr(text: &str, flag: &str) -> Result<()> {
    libp2p::Multiaddr::from_str(text).map_err(|e| {
        anyhow!("{flag} \"{text}\" is not a libp2p multiaddr (like /ip4/127.0.0.1/tcp/7101): {e}")
    })?;
    Ok(())
}

fn check_host_port(text: &str) -> Result<()> {
    let bad = || anyhow!("--api \"{text}\" is not HOST:PORT (like 127.0.0.1:7100)");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

/// Runs `weft node certify`.
pub(crate) fn certify(a: &NodeCertifyArgs) -> Result<ExitCode> {
    let now = crate::clock::unix_secs()?;
    let dir = NodeDir::new(&a.dir);
    if !a.dir.is_dir() {
        bail!(
            "{} is not a node directory (run `weft node init --dir {}` first)",
            a.dir.display(),
            a.dir.display()
        );
    }
    let lifetime = parse_duration(&a.expires).context("--expires")?;
    let trust_path = dir.trust();
    let (_, signed) = read_trust_file(&trust_path)?;
    let root = verify_root(&signed, now, &trust_path.display().to_string())?;
    let operator_key = keyfile::read(&a.key)?;
    let issuer = operator_key.public();
    let op = root.operator_by_key(&issuer).ok_or_else(|| {
        anyhow!(
            "the key in {} ({issuer}) is not an operator in trust root version {} ({}); only an operator with the admit role can certify nodes",
            a.key.display(),
            root.version,
            trust_path.display()
        )
    })?;
    if !op.has_role(Role::Admit) {
        let roles: Vec<&str> = op.roles.iter().map(|r| r.as_str()).collect();
        bail!(
            "operator {} does not hold the admit role in {} (their roles: {}); only an operator with the admit role can certify nodes",
            op.name,
            trust_path.display(),
            roles.join(", ")
        );
    }
    let node_key = keyfile::read(&dir.key())?;
    let node = NodeId::new(node_key.public());
    drop(node_key);
    let name = match &a.name {
        Some(n) => n.clone(),
        None => a
            .dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .ok_or_else(|| {
                anyhow!(
                    "cannot take a node name from {}; pass --name NAME",
                    a.dir.display()
                )
            })?,
    };
    validate_name(&name).map_err(|e| {
        anyhow!(
            "{e} (the node name{}; pass --name NAME)",
            if a.name.is_some() {
                ""
            } else {
                " comes from the directory's name"
            }
        )
    })?;
    let expires = now
        .checked_add(lifetime)
        .ok_or_else(|| anyhow!("--expires {} is too far in the future", a.expires))?;
    let cert = NodeCert {
        node,
        name: name.clone(),
        issuer,
        issued: now,
        expires,
    };
    let signed_cert = SignedNodeCert::sign(&cert, &operator_key);
    // Check it as a peer will before writing it.
    signed_cert
        .verify(&root, now)
        .context("the certificate just signed does not verify")?;
    let replaced = dir.cert().exists();
    write_atomic(&dir.cert(), &signed_cert.to_bytes())?;
    if a.json {
        println!(
            "{}",
            json!({
                "node_id": node.to_string(),
                "name": name,
                "issuer": op.name,
                "issuer_key": issuer.to_string(),
                "issued": format_timestamp(now),
                "expires": format_timestamp(expires),
                "file": dir.cert().display().to_string(),
                "replaced": replaced,
            })
        );
    } else {
        println!(
            "{} node certificate {}",
            if replaced {
                "replaced the"
            } else {
                "wrote the"
            },
            dir.cert().display()
        );
        println!("  node:    {name} ({node})");
        println!("  issuer:  {} ({issuer})", op.name);
        println!("  valid:   until {}", format_timestamp(expires));
        println!("{node}");
    }
    Ok(ExitCode::SUCCESS)
}
