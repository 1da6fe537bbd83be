//! Detection on the node, and its response: the decision stream goes to the
//! detector off the request path, and an alert becomes a quarantine order.
//!
//! `POST /v1/authorize` hands each decision to [`DetectHandle::observe`],
//! which never waits: it puts a [`DecisionEvent`] on a bounded queue, or
//! counts it as dropped when the queue is full. One task drains the queue
//! through the [`Detector`]. For each alert it:
//! - keeps it for `GET /v1/anomalies` and the dashboard, and records it in
//!   the audit trail;
//! - if [`ResponseConfig::quarantine`] is on and the principal is not
//!   already quarantined by this node, asks the node task to issue a
//!   quarantine order for [`ResponseConfig::quarantine_ttl`] (capped by the
//!   trust root's maximum). Whether the mesh honours it is the trust root's
//!   call, made on every node (see `weft_protocol::quarantine`).
//!
//! With [`ResponseConfig::mesh`] the task also works across sites
//! ([`crate::mesh_detect`]): each decision goes to the mesh view too
//! ([`crate::detect::mesh::MeshView::observe_local`]); every 10 s slot it
//! summarizes the node's decisions, merges the summary into the view and
//! hands it to the node task to sign and gossip; and it checks the view
//! each slot and whenever a peer's summary was merged. A mesh alert is
//! handled as a local one (kept, audited, a quarantine order), except that
//! one on a principal the local detector alerted on within its cool-down
//! is the same incident and is dropped.
//!
//! The detector's state is saved to [`ResponseConfig::state_file`] every
//! [`ResponseConfig::save_every`] while decisions come in, and when the node
//! shuts down, and read back at start: a restarted node goes on with the
//! baselines it had learned instead of starting blind. A state file that
//! cannot be read is reported and set aside (`.bad`), and the detector
//! starts fresh.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use weft_protocol::identity::NodeId;
use weft_protocol::summary::Summary;

use crate::anomaly::AnomalyLog;
use crate::audit::{AuditEvent, AuditHandle};
use crate::control::Command;
use crate::detect::summary::{publish_due_ms, publish_offset_ms};
use crate::detect::{Alert, DecisionEvent, Detector, DetectorConfig};
use crate::mesh_detect::{MeshDetect, Outcome};

/// How long the detector lets decisions gather once it has emptied its
/// queue. Without the pause the task parks after each drain, and the next
/// decision has to wake it: a syscall on the request path and a context
/// switch for the node's thread, per decision, whenever the detector keeps
/// up (`scripts/bench-http.sh` showed it as 12% of the API thread's time).
/// 5 ms bounds that to 200 wake-ups a second and delays an alert by at most
/// as much; the default queue (16,384) holds 3 million decisions a second
/// for that long, far above what the API serves.
pub const DRAIN_EVERY: Duration = Duration::from_millis(5);

/// The most decisions taken off the queue at once; a full batch means more
/// are waiting, and they are taken at once, without the pause.
const DRAIN_BATCH: usize = 1024;

/// What the node does with its detector.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponseConfig {
    /// Whether to run the detector at all. Default on.
    pub detect: bool,
    /// Whether, with the detector on, to share summaries with the mesh and
    /// score principals on what the whole mesh saw
    /// ([`crate::mesh_detect`]). Default on.
    pub mesh: bool,
    /// Whether an alert quarantines its principal (if the trust root lets
    /// nodes quarantine). Default on.
    pub quarantine: bool,
    /// How long a quarantine this node issues lasts, at most the trust
    /// root's maximum. Default 15 minutes: long enough for an operator to
    /// look, short enough that a false alarm heals by itself.
    pub quarantine_ttl: Duration,
    /// Decisions the detector's queue holds. Default 16,384: the detector
    /// takes in hundreds of thousands of events a second, so this absorbs
    /// bursts far above what the API serves.
    pub queue: usize,
    /// The detector's settings.
    pub detector: DetectorConfig,
    /// Where the detector's state is kept across restarts (`None`: not
    /// kept). `weft node run` uses `DIR/detector.state`, mode 0600.
    pub state_file: Option<PathBuf>,
    /// How often the state is saved while decisions come in. Default 5
    /// minutes: a crash loses at most that much learning.
    pub save_every: Duration,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        ResponseConfig {
            detect: true,
            mesh: true,
            quarantine: true,
            quarantine_ttl: Duration::from_secs(15 * 60),
            queue: 16_384,
            detector: DetectorConfig::default(),
            state_file: None,
            save_every: Duration::from_secs(5 * 60),
        }
    }
}

/// The request path's side: cheap to clone, never waits.
#[derive(Clone, Debug)]
pub struct DetectHandle {
    tx: Option<mpsc::Sender<DecisionEvent>>,
    anomalies: Arc<AnomalyLog>,
}

impl DetectHandle {
    /// A handle that takes nothing (detection off).
    pub fn off(anomalies: Arc<AnomalyLog>) -> Self {
        DetectHandle {
            tx: None,
            anomalies,
        }
    }

    /// Whether detection runs.
    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Hands one decision to the detector, or counts it as dropped.
    pub fn observe(&self, ev: DecisionEvent) {
        if let Some(tx) = &self.tx
            && tx.try_send(ev).is_err()
        {
            self.anomalies.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The alert as kept for `GET /v1/anomalies`, with what was done about it.
fn alert_json(alert: &Alert, action: &str) -> serde_json::Value {
    let mut v = serde_json::to_value(alert).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("action".into(), action.into());
    }
    v
}

/// The detector saved in `path`, or a fresh one with `seed` when there is
/// none; a file that cannot be read is renamed `.bad` and reported.
pub fn load_detector(cfg: &DetectorConfig, seed: u64, path: Option<&Path>) -> Detector {
    let Some(path) = path else {
        return Detector::new(cfg.clone(), seed);
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Detector::new(cfg.clone(), seed);
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), %e, "cannot read the detector's state; starting fresh");
            return Detector::new(cfg.clone(), seed);
        }
    };
    match Detector::restore(cfg.clone(), &bytes) {
        Ok(d) => {
            tracing::info!(
                path = %path.display(),
                principals = d.tracked(),
                "detector state restored"
            );
            d
        }
        Err(reason) => {
            let bad = path.with_extension("state.bad");
            let _ = std::fs::rename(path, &bad);
            tracing::warn!(
                path = %path.display(),
                set_aside = %bad.display(),
                %reason,
                "the detector's saved state is unusable; starting fresh"
            );
            Detector::new(cfg.clone(), seed)
        }
    }
}

/// Writes the detector's state to `path` (mode 0600) through a temporary
/// file and a rename, so a crash leaves the old state or the new, never
/// half of one.
pub fn save_detector(detector: &Detector, path: &Path) -> std::io::Result<()> {
    let bytes = detector.save();
    let tmp = path.with_extension("state.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

fn save_logged(detector: &Detector, path: Option<&Path>) {
    if let Some(path) = path
        && let Err(e) = save_detector(detector, path)
    {
        tracing::error!(path = %path.display(), %e, "saving the detector's state failed");
    }
}

/// Detection across sites, for the detector task: the mesh view (shared
/// with the node task, which takes peers' summaries in), this node's id as
/// its summaries name it, and the way to the node task, which signs and
/// gossips them ([`crate::mesh_detect`]).
#[derive(Clone, Debug)]
pub struct MeshWiring {
    /// The mesh view and its counters.
    pub detect: Arc<MeshDetect>,
    /// This node.
    pub node: NodeId,
    /// This node's summaries, to the node task.
    pub publish: mpsc::Sender<Summary>,
}

/// Local alerts remembered at most, to keep the mesh view from raising an
/// incident the detector has raised already.
const MAX_LOCAL_ALERTS: usize = 4096;

/// The longest a node waits before it quarantines on a mesh alert
/// ([`mesh_quarantine_delay`]).
pub const MESH_QUARANTINE_SPREAD_MS: u64 = 400;

/// How long this node waits before it quarantines `principal` on a mesh
/// alert: a point below [`MESH_QUARANTINE_SPREAD_MS`] read from a hash of
/// the node id and the principal. Every node alerts on a mesh-wide finding
/// at the same exchange; waiting each its own time, most find the order
/// of the node that went first in force when their turn comes, and issue
/// none (the node task checks, [`crate::task`]'s `denied_everywhere`). A
/// different principal puts different nodes first.
pub fn mesh_quarantine_delay(node: &NodeId, principal: &str) -> Duration {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    h.update(node.to_string().as_bytes());
    h.update([0]);
    h.update(principal.as_bytes());
    let d = h.finalize();
    let n = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    Duration::from_millis(n % MESH_QUARANTINE_SPREAD_MS)
}

/// What the task does with each alert, local or from the mesh view.
struct Responder {
    quarantine: bool,
    quarantine_ttl: Duration,
    cooldown_ms: u64,
    anomalies: Arc<AnomalyLog>,
    audit: AuditHandle,
    commands: mpsc::Sender<Command>,
    /// Principals this node quarantined, until when (Unix seconds).
    ours: BTreeMap<String, u64>,
    /// Principals the local detector alerted on, when (Unix ms).
    local: BTreeMap<String, u64>,
    /// This node, with the mesh on: mesh alerts' quarantines wait
    /// [`mesh_quarantine_delay`].
    node: Option<NodeId>,
}

impl Responder {
    /// Keeps, audits and (when it may) quarantines on one alert; a mesh
    /// alert on a principal the local detector alerted on within its
    /// cool-down is the same incident, and is dropped. Returns false when
    /// the node task has stopped.
    async fn respond(&mut self, alert: Alert, mesh: Option<&MeshDetect>) -> bool {
        if alert.signal.is_none() {
            if self.local.len() >= MAX_LOCAL_ALERTS {
                let cooldown = self.cooldown_ms;
                self.local
                    .retain(|_, t| alert.at_ms < t.saturating_add(cooldown));
                if self.local.len() >= MAX_LOCAL_ALERTS {
                    self.local.pop_first();
                }
            }
            self.local.insert(alert.principal.clone(), alert.at_ms);
        } else {
            if self
                .local
                .get(&alert.principal)
                .is_some_and(|t| alert.at_ms < t.saturating_add(self.cooldown_ms))
            {
                tracing::debug!(principal = %alert.principal, signal = ?alert.signal, "a mesh alert on a principal alerted on here already");
                return true;
            }
            if let Some(m) = mesh {
                m.count_alert();
            }
        }
        let now = alert.at_ms / 1000;
        self.ours.retain(|_, until| *until > now);
        let action = if !self.quarantine {
            "alert only"
        } else if self.ours.contains_key(&alert.principal) {
            "already quarantined"
        } else {
            "quarantine requested"
        };
        tracing::warn!(
            principal = %alert.principal,
            score = alert.score,
            signal = alert.signal.as_deref().unwrap_or("local"),
            reason = %alert.reason,
            action,
            "anomaly"
        );
        self.anomalies.push(alert_json(&alert, action));
        self.audit.record(AuditEvent::Anomaly {
            principal: alert.principal.clone(),
            score: alert.score,
            reason: alert.reason.clone(),
            evidence: alert.evidence.clone(),
        });
        if action != "quarantine requested" {
            return true;
        }
        let until = now + self.quarantine_ttl.as_secs();
        self.ours.insert(alert.principal.clone(), until);
        let record = weft_crdt::QuarantineRecord {
            reason: alert.reason.clone(),
            issuer: None,
            issued_at: now,
            expires_at: Some(until),
            score: Some(alert.score),
            evidence: alert.evidence.clone(),
            lifted: false,
        };
        let (reply, answer) = oneshot::channel();
        let cmd = Command::Quarantine {
            subject: alert.principal.clone(),
            record,
            reply,
        };
        if let (Some(node), Some(_)) = (&self.node, &alert.signal) {
            // A mesh alert: sent at this node's turn, without holding up
            // the task.
            let wait = mesh_quarantine_delay(node, &alert.principal);
            let commands = self.commands.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                if commands.send(cmd).await.is_ok() {
                    let _ = answer.await;
                }
            });
            return true;
        }
        if self.commands.send(cmd).await.is_err() {
            return false;
        }
        // The node task answers at once; the result is counted and logged
        // there.
        let _ = answer.await;
        true
    }
}

/// What woke the detector task.
enum Wake {
    /// Decisions (0: every handle is gone).
    Decisions(usize),
    /// A slot's summary is due.
    Slot,
    /// A peer's summary was merged into the view.
    Heard,
    /// The node is shutting down.
    Stop,
}

/// Waits until `due_ms` (Unix ms) with the mesh on; forever without.
async fn slot_ends(mesh: Option<&MeshWiring>, due_ms: u64) {
    if mesh.is_none() {
        return std::future::pending().await;
    }
    let wait = due_ms.saturating_sub(crate::clock::now_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

/// Waits until a peer's summary was merged, with the mesh on; forever
/// without.
async fn heard(mesh: Option<&MeshWiring>) {
    match mesh {
        Some(m) => m.detect.heard().notified().await,
        None => std::future::pending().await,
    }
}

/// Starts detection: returns the request path's handle and the task to
/// spawn. The task ends when every handle is dropped or `shutdown` turns
/// true, and saves the detector's state as it ends. With `mesh` (and
/// detection on), it also summarizes this node's decisions every slot,
/// merges them into the mesh view and has the node task gossip them,
/// feeds each decision to the view, and checks the view each slot and
/// whenever a peer's summary was merged: mesh alerts go the way local
/// ones go.
pub fn start(
    cfg: ResponseConfig,
    seed: u64,
    anomalies: Arc<AnomalyLog>,
    commands: mpsc::Sender<Command>,
    audit: AuditHandle,
    mut shutdown: watch::Receiver<bool>,
    mesh: Option<MeshWiring>,
) -> (DetectHandle, impl std::future::Future<Output = ()> + use<>) {
    let (tx, mut rx) = mpsc::channel::<DecisionEvent>(cfg.queue.max(1));
    let handle = DetectHandle {
        tx: cfg.detect.then_some(tx),
        anomalies: anomalies.clone(),
    };
    let mesh = mesh.filter(|_| cfg.detect);
    let task = async move {
        let state = cfg.state_file.clone();
        let mut detector = if cfg.detect {
            load_detector(&cfg.detector, seed, state.as_deref())
        } else {
            Detector::new(cfg.detector.clone(), seed)
        };
        if mesh.is_some() {
            detector.enable_summaries();
        }
        let mut responder = Responder {
            quarantine: cfg.quarantine,
            quarantine_ttl: cfg.quarantine_ttl,
            cooldown_ms: cfg.detector.cooldown_ms,
            anomalies,
            audit,
            commands,
            ours: BTreeMap::new(),
            local: BTreeMap::new(),
            node: mesh.as_ref().map(|m| m.node),
        };
        let mut last_save = Instant::now();
        let mut unsaved = false;
        // This node's summaries go out at its own point of each slot.
        let offset = mesh.as_ref().map_or(0, |m| publish_offset_ms(&m.node));
        let mut due = publish_due_ms(crate::clock::now_ms(), offset);
        let mut batch = Vec::with_capacity(DRAIN_BATCH);
        'run: loop {
            let wake = tokio::select! {
                n = rx.recv_many(&mut batch, DRAIN_BATCH) => Wake::Decisions(n),
                changed = shutdown.changed() => {
                    if changed.is_ok() && !*shutdown.borrow() {
                        continue;
                    }
                    Wake::Stop
                }
                () = slot_ends(mesh.as_ref(), due) => Wake::Slot,
                () = heard(mesh.as_ref()) => Wake::Heard,
            };
            let mut alerts = Vec::new();
            let mut drained = DRAIN_BATCH;
            match wake {
                Wake::Decisions(0) | Wake::Stop => break,
                Wake::Decisions(n) => {
                    drained = n;
                    unsaved = true;
                    let mut view = mesh.as_ref().map(|m| (m.node, m.detect.view()));
                    for ev in batch.drain(..) {
                        let local = detector.observe(&ev);
                        match view.as_mut() {
                            Some((node, v)) => {
                                let o = v.observe_beside(*node, &ev, local);
                                alerts.extend(o.local);
                                alerts.extend(o.across);
                            }
                            None => alerts.extend(local),
                        }
                    }
                }
                Wake::Slot => {
                    let now = crate::clock::now_ms();
                    due = publish_due_ms(now, offset);
                    if let Some(m) = &mesh {
                        let summaries = detector.summarize(m.node, now);
                        {
                            let mut v = m.detect.view();
                            v.advance(now);
                            for s in &summaries {
                                if let Err(err) = v.ingest_local(s) {
                                    tracing::debug!(%err, "this node's summary was not merged");
                                }
                            }
                            alerts = detector.check_mesh(&mut v, now);
                        }
                        for s in summaries {
                            if m.publish.try_send(s).is_err() {
                                m.detect.count(Outcome::Unpublished);
                            }
                        }
                    }
                }
                Wake::Heard => {
                    if let Some(m) = &mesh {
                        let now = crate::clock::now_ms();
                        let mut v = m.detect.view();
                        v.advance(now);
                        alerts = detector.check_mesh(&mut v, now);
                    }
                }
            }
            for alert in alerts {
                let from = mesh.as_ref().map(|m| m.detect.as_ref());
                if !responder.respond(alert, from).await {
                    break 'run;
                }
            }
            if unsaved && last_save.elapsed() >= cfg.save_every {
                save_logged(&detector, state.as_deref());
                last_save = Instant::now();
                unsaved = false;
            }
            if drained < DRAIN_BATCH {
                // The queue is empty: let decisions gather instead of being
                // woken for each one (see DRAIN_EVERY).
                tokio::time::sleep(DRAIN_EVERY).await;
            }
        }
        if unsaved {
            save_logged(&detector, state.as_deref());
        }
    };
    (handle, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::traces::{AttackKind, TraceConfig, generate};

    /// Each node's turn is its own, below the spread, the same every time,
    /// and spread out: among 50 nodes the first goes within a tenth of it.
    #[test]
    fn mesh_quarantine_turns_are_spread_and_stable() {
        let nodes: Vec<NodeId> = (0..50u8)
            .map(|i| {
                NodeId::new(weft_protocol::identity::SecretKey::from_seed([i + 1; 32]).public())
            })
            .collect();
        let who = r#"User::"mallory""#;
        let turns: Vec<Duration> = nodes
            .iter()
            .map(|n| mesh_quarantine_delay(n, who))
            .collect();
        let spread = Duration::from_millis(MESH_QUARANTINE_SPREAD_MS);
        assert!(turns.iter().all(|t| *t < spread), "{turns:?}");
        assert_eq!(turns[7], mesh_quarantine_delay(&nodes[7], who));
        assert!(
            turns.iter().min().is_some_and(|t| *t < spread / 10),
            "{turns:?}"
        );
        let mut distinct = turns.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 40, "{turns:?}");
        assert_ne!(
            mesh_quarantine_delay(&nodes[0], who),
            mesh_quarantine_delay(&nodes[0], r#"User::"eve""#),
            "another principal, another order of turns"
        );
    }

    /// A generated day (real detector, real queue) through the response
    /// task: every alert is kept and audited, and each alerted principal
    /// gets exactly one quarantine request while its quarantine runs, with
    /// the alert's reason, score and evidence.
    #[tokio::test]
    async fn alerts_become_quarantine_requests() {
        let trace = generate(&TraceConfig {
            seed: 11,
            principals: 150,
            hours: 24,
            attacks_per_kind: Some(3),
            ..TraceConfig::default()
        });
        let anomalies = Arc::new(AnomalyLog::new());
        let (commands, mut node_task) = mpsc::channel(64);
        let (audit_tx, mut audit_rx) = mpsc::channel(1 << 16);
        let audit = AuditHandle::for_tests(audit_tx);
        let cfg = ResponseConfig {
            queue: trace.events.len() + 1,
            ..ResponseConfig::default()
        };
        let ttl = cfg.quarantine_ttl.as_secs();
        let (_stop, stop) = watch::channel(false);
        let (handle, task) = start(cfg, 1, anomalies.clone(), commands, audit, stop, None);
        let task = tokio::spawn(task);
        // The node task's side: answer every request, keep what was asked.
        let asked = tokio::spawn(async move {
            let mut asked = Vec::new();
            while let Some(cmd) = node_task.recv().await {
                if let Command::Quarantine {
                    subject,
                    record,
                    reply,
                } = cmd
                {
                    let _ = reply.send(Ok("id".into()));
                    asked.push((subject, record));
                }
            }
            asked
        });
        for e in &trace.events {
            handle.observe(e.decision.clone());
        }
        drop(handle);
        task.await.unwrap();
        let asked = asked.await.unwrap();

        let st = anomalies.status();
        assert_eq!(st.dropped, 0);
        assert!(st.alerts > 0, "the trace's attacks raise alerts");
        let alerts = anomalies.recent();
        assert_eq!(alerts.len() as u64, st.alerts.min(200));
        // Probing attackers are among those quarantined.
        let probers: Vec<&str> = trace
            .incidents
            .iter()
            .filter(|i| i.kind == AttackKind::PrivilegeProbing)
            .map(|i| i.principal.as_str())
            .collect();
        assert!(
            asked.iter().any(|(s, _)| probers.contains(&s.as_str())),
            "no prober quarantined: {:?}",
            asked.iter().map(|(s, _)| s).collect::<Vec<_>>()
        );
        for (subject, record) in &asked {
            assert_eq!(record.expires_at, Some(record.issued_at + ttl));
            assert!(record.score.is_some() && !record.reason.is_empty());
            assert!(!record.evidence.is_empty(), "{subject}: no evidence");
        }
        // One request per principal while its quarantine runs.
        let mut last: BTreeMap<&str, u64> = BTreeMap::new();
        for (subject, record) in &asked {
            if let Some(until) = last.insert(subject, record.issued_at + ttl) {
                assert!(record.issued_at >= until, "{subject} asked twice");
            }
        }
        // Every alert went to the audit trail.
        let mut audited = 0;
        while let Ok(ev) = audit_rx.try_recv() {
            if matches!(ev, AuditEvent::Anomaly { .. }) {
                audited += 1;
            }
        }
        assert_eq!(audited, st.alerts);
    }

    #[test]
    fn a_full_queue_counts_its_drops() {
        let anomalies = Arc::new(AnomalyLog::new());
        let (commands, _rx) = mpsc::channel(1);
        let (audit_tx, _audit_rx) = mpsc::channel(1);
        let cfg = ResponseConfig {
            queue: 2,
            ..ResponseConfig::default()
        };
        let (_stop, stop) = watch::channel(false);
        let (handle, _task) = start(
            cfg,
            1,
            anomalies.clone(),
            commands,
            AuditHandle::for_tests(audit_tx),
            stop,
            None,
        );
        let ev = DecisionEvent {
            at_ms: 0,
            principal: r#"User::"a""#.into(),
            action: r#"Action::"view""#.into(),
            resource: r#"Doc::"d""#.into(),
            allow: true,
            token_failed: false,
            site: None,
        };
        for _ in 0..5 {
            handle.observe(ev.clone());
        }
        assert_eq!(anomalies.status().dropped, 3);
        let off = DetectHandle::off(anomalies.clone());
        off.observe(ev);
        assert!(!off.is_on());
        assert_eq!(anomalies.status().dropped, 3);
    }

    fn decision(at_ms: u64, principal: &str) -> DecisionEvent {
        DecisionEvent {
            at_ms,
            principal: principal.into(),
            action: r#"Action::"view""#.into(),
            resource: r#"Doc::"d""#.into(),
            allow: true,
            token_failed: false,
            site: Some("site-0".into()),
        }
    }

    /// What the detector learned survives a restart: the task saves its
    /// state (mode 0600) when the node shuts down, and the next start
    /// reads it back; an unreadable file is set aside and the detector
    /// starts fresh.
    #[tokio::test]
    async fn the_detector_state_is_saved_at_shutdown_and_restored() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("detector.state");
        let cfg = ResponseConfig {
            state_file: Some(path.clone()),
            ..ResponseConfig::default()
        };
        let anomalies = Arc::new(AnomalyLog::new());
        let (commands, _node_task) = mpsc::channel(64);
        let (audit_tx, _audit_rx) = mpsc::channel(1024);
        let (stop_tx, stop) = watch::channel(false);
        let (handle, task) = start(
            cfg.clone(),
            9,
            anomalies.clone(),
            commands,
            AuditHandle::for_tests(audit_tx),
            stop,
            None,
        );
        let task = tokio::spawn(task);
        for i in 0..40u64 {
            handle.observe(decision(1_000 * i, &format!("User::\"u{i}\"")));
        }
        // Let the task take them in, then shut down.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !path.exists(),
            "nothing saved before the interval or the end"
        );
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the task ends on shutdown")
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let restored = load_detector(&cfg.detector, 1, Some(&path));
        assert_eq!(restored.tracked(), 40);

        std::fs::write(&path, b"not a detector").unwrap();
        let fresh = load_detector(&cfg.detector, 1, Some(&path));
        assert_eq!(fresh.tracked(), 0);
        assert!(!path.exists());
        assert_eq!(
            std::fs::read(path.with_extension("state.bad")).unwrap(),
            b"not a detector"
        );
        drop(handle);
    }

    /// With the mesh on, every decision goes to the mesh view too, and a
    /// burst at this node alone crosses the deny floor there as well as in
    /// the local detector: one incident, one alert (the local one), and the
    /// view holds the principal's cell. The learned model alone (no
    /// floors) has no floor on the mesh either: no alert at all.
    #[tokio::test]
    async fn one_burst_here_is_one_alert_with_the_mesh_on() {
        for floors in [true, false] {
            let mut cfg = ResponseConfig::default();
            if !floors {
                cfg.detector.floors = None;
            }
            let anomalies = Arc::new(AnomalyLog::new());
            let (commands, mut node_task) = mpsc::channel(64);
            let (audit_tx, _audit_rx) = mpsc::channel(1024);
            let (_stop, stop) = watch::channel(false);
            let node = NodeId::new(weft_protocol::identity::SecretKey::from_seed([5; 32]).public());
            let detect = Arc::new(MeshDetect::new(crate::mesh_detect::mesh_config(
                &cfg.detector,
            )));
            let (publish, _published) = mpsc::channel(8);
            let wiring = MeshWiring {
                detect: detect.clone(),
                node,
                publish,
            };
            let (handle, task) = start(
                cfg,
                3,
                anomalies.clone(),
                commands,
                AuditHandle::for_tests(audit_tx),
                stop,
                Some(wiring),
            );
            let task = tokio::spawn(task);
            tokio::spawn(async move {
                while let Some(cmd) = node_task.recv().await {
                    if let Command::Quarantine { reply, .. } = cmd {
                        let _ = reply.send(Err("not allowed".into()));
                    }
                }
            });
            let now = crate::clock::now_ms();
            for k in 0..40u64 {
                handle.observe(DecisionEvent {
                    at_ms: now + k,
                    principal: r#"User::"mallory""#.into(),
                    action: r#"Action::"edit""#.into(),
                    resource: format!(r#"Secret::"s{k}""#),
                    allow: false,
                    token_failed: false,
                    site: None,
                });
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let alerts = anomalies.recent();
            if floors {
                assert_eq!(alerts.len(), 1, "{alerts:#?}");
                assert_eq!(alerts[0]["floor"], "denies", "{}", alerts[0]);
                assert!(alerts[0].get("signal").is_none(), "{}", alerts[0]);
            } else {
                assert!(alerts.is_empty(), "{alerts:#?}");
            }
            let st = detect.status();
            assert_eq!((st.sites, st.alerts), (1, 0));
            assert!(st.cells >= 1);
            assert_eq!(detect.view().window(r#"User::"mallory""#).total.denies, 40);
            drop(handle);
            task.await.unwrap();
        }
    }
}
