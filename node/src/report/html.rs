//! The report as one self-contained, print-friendly HTML page: inline CSS,
//! no scripts. The page is a maud template, so every string from the
//! evidence is escaped when it is written, by construction.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use weft_protocol::time::format_timestamp;

use super::model::{ControlStatus, Report};

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;margin:0;background:#f4f6f9}
main{max-width:1100px;margin:0 auto;padding:24px 28px 48px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;padding-bottom:4px;border-bottom:2px solid #dde3ea}
h3{font-size:15px;margin:16px 0 6px}
.meta{color:#5b6675;margin:0 0 12px}.meta code{font-size:12px}
table{border-collapse:collapse;width:100%;margin:6px 0 12px}
th,td{border:1px solid #dde3ea;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#eef2f6;font-weight:600}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
pre{background:#f6f8fa;border:1px solid #e1e6ec;padding:8px;white-space:pre-wrap;word-break:break-word;margin:4px 0}
.muted{color:#7a8594}.key{word-break:break-all}
.st{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:12px;white-space:nowrap}
.met{background:#dff5e3;color:#166b2c}.partial{background:#fff3d6;color:#8a5a00}
.notmet{background:#fde2e1;color:#a8201a}.na{background:#e9ecf0;color:#4b5563}
.notes li{margin:2px 0}
@media print{body{background:#fff}main{padding:0;max-width:none}h2{break-after:avoid}tr,pre{break-inside:avoid}}
"#;
/// The report as one self-contained HTML page (inline CSS, no scripts,
/// every string from the evidence escaped).
pub fn render_html(r: &Report) -> String {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Weft compliance report: " (r.node.node_id) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                main {
                    (header(r))
                    // Controls first: what an auditor reads.
                    (controls(r))
                    (node(r))
                    (trust_root(r))
                    (certificates(r))
                    (bundles(r))
                    (timeline(r))
                    (decisions(r))
                    (audit(r))
                }
            }
        }
    };
    let mut out = page.into_string();
    out.push('\n');
    out
}

/// A time as text; `time not recorded` for none.
fn when(time: Option<u64>) -> String {
    match time {
        Some(t) => format_timestamp(t),
        None => "time not recorded".into(),
    }
}

/// `items` joined by commas, or `none` in grey when there are none.
fn list_or(items: &[String], none: &str) -> Markup {
    html! {
        @if items.is_empty() {
            span class="muted" { (none) }
        } @else {
            (items.join(", "))
        }
    }
}

/// A status badge: `class` picks its colour.
fn badge(class: &str, text: &str) -> Markup {
    html! { span class={ "st " (class) } { (text) } }
}

fn status_badge(s: ControlStatus) -> Markup {
    let class = match s {
        ControlStatus::Met => "met",
        ControlStatus::Partial => "partial",
        ControlStatus::NotMet => "notmet",
        ControlStatus::NotAvailable => "na",
    };
    badge(class, s.as_str())
}

fn header(r: &Report) -> Markup {
    let n = &r.node;
    html! {
        h1 { "Weft compliance report" }
        p class="meta" {
            "Generated " (format_timestamp(r.generated_at))
            " · node " code id="node-id" { (n.node_id) }
            @if let Some(url) = &n.url {
                " at " code { (url) }
            }
            br;
            "state digest " code id="digest" { (n.digest) }
            " · " (n.updates) " update(s), " (n.held) " held · format " (r.format)
        }
    }
}

fn controls(r: &Report) -> Markup {
    html! {
        h2 id="controls" { "Controls" }
        table {
            tr { th { "Control" } th { "What it asks" } th { "Evidence" } th { "Status" } th { "Why" } }
            @for c in &r.controls {
                tr class="control" data-id=(c.id) {
                    td {
                        b { (c.id) }
                        br;
                        span class="muted" { (c.framework) " · " (c.title) }
                    }
                    td { (c.asks) }
                    td {
                        @for (i, section) in c.evidence.iter().enumerate() {
                            @if i > 0 { ", " }
                            a href={ "#" (section) } { (section) }
                        }
                    }
                    td { (status_badge(c.status)) }
                    td { (c.why) }
                }
            }
        }
        @if !r.notes.is_empty() {
            ul class="notes" {
                @for note in &r.notes {
                    li { (note) }
                }
            }
        }
    }
}

fn node(r: &Report) -> Markup {
    let n = &r.node;
    html! {
        h2 id="node" { "Node" }
        table {
            tr { th { "Node id" } td { code { (n.node_id) } } }
            tr {
                th { "Heads" }
                td {
                    @for (i, head) in n.heads.iter().enumerate() {
                        @if i > 0 { br; }
                        code { (head) }
                    }
                }
            }
            tr {
                th { "Last sync" }
                td {
                    @match n.last_sync_ms_ago {
                        Some(ms) => { (format!("{:.1} s ago", ms as f64 / 1000.0)) }
                        None => { "never" }
                    }
                }
            }
            tr { th { "Stale" } td { (if n.stale { "yes" } else { "no" }) } }
        }
    }
}

fn trust_root(r: &Report) -> Markup {
    let t = &r.trust_root;
    let q = &t.quarantine;
    html! {
        h2 id="trust_root" { "Trust root" }
        table {
            tr { th { "Version" } td { (t.version) } }
            tr {
                th { "Expires" }
                td {
                    (format_timestamp(t.expires))
                    @if t.expired { " " (badge("notmet", "expired")) }
                }
            }
            tr {
                th { "Root keys" }
                td {
                    @for (i, key) in t.root_keys.iter().enumerate() {
                        @if i > 0 { br; }
                        code class="key" { (key) }
                    }
                    " (threshold " (t.root_threshold) ")"
                }
            }
            tr { th { "Policy threshold" } td { (t.policy_threshold) } }
            tr { th { "Revocation threshold" } td { (t.revoke_threshold) } }
            tr {
                th { "Node quarantine" }
                td {
                    @if q.allowed {
                        "allowed: at most " (q.max_ttl_secs) " s each, "
                        (q.max_per_node_per_hour) " per node per hour"
                    } @else {
                        "not allowed (limits if enabled: " (q.max_ttl_secs) " s, "
                        (q.max_per_node_per_hour) " per node per hour)"
                    }
                }
            }
        }
        h3 { "Operators" }
        table {
            tr { th { "Name" } th { "Key" } th { "Roles" } }
            @for o in &t.operators {
                tr {
                    td { (o.name) }
                    td { code class="key" { (o.key) } }
                    td { (o.roles.join(", ")) }
                }
            }
        }
    }
}

fn certificates(r: &Report) -> Markup {
    let certs = &r.certificates;
    html! {
        h2 id="certificates" { "Node certificates" }
        @match &certs.node {
            Some(c) => {
                table {
                    tr { th { "This node" } td { (c.name) " " code { (c.node_id) } } }
                    tr {
                        th { "Issued by" }
                        td {
                            (c.issuer_name.as_deref().unwrap_or("(unknown operator)"))
                            " " code class="key" { (c.issuer) }
                        }
                    }
                    tr { th { "Issued" } td { (format_timestamp(c.issued)) } }
                    tr { th { "Expires" } td { (format_timestamp(c.expires)) } }
                    tr {
                        th { "Valid" }
                        td {
                            @if c.valid {
                                (badge("met", "valid"))
                            } @else {
                                (badge("notmet", "not valid")) " " (c.error.as_deref().unwrap_or(""))
                            }
                        }
                    }
                }
            }
            None => { p class="muted" { "This node has no certificate." } }
        }
        @if !certs.peers.is_empty() {
            table {
                tr { th { "Peer" } th { "Name" } th { "Certificate" } th { "Expires" } }
                @for p in &certs.peers {
                    tr {
                        td { code { (p.node_id) } }
                        td { (p.name.as_deref().unwrap_or("")) }
                        td { (if p.admitted { "verified at admission" } else { "not admitted" }) }
                        td {
                            @if let Some(t) = p.expires { (format_timestamp(t)) }
                        }
                    }
                }
            }
        }
        p class="muted" { (certs.note) }
    }
}

fn bundles(r: &Report) -> Markup {
    html! {
        h2 id="bundles" { "Policies in force" }
        @if r.bundles.is_empty() {
            p class="muted" { "No bundle." }
        }
        @for b in &r.bundles {
            h3 class="bundle" {
                "Bundle " code { (b.name) } " · " (b.policy_count)
                (if b.policy_count == 1 { " policy" } else { " policies" })
                @if let Some(d) = &b.description { " · " (d) }
            }
            @if let Some(err) = &b.error {
                p { (badge("notmet", "error")) " " (err) " (the last good version stays in force)" }
            }
            @if b.conflicts > 0 {
                p { (b.conflicts) " concurrent write(s)." }
            }
            table {
                tr { th { "Signed by" } th { "Key" } th { "Roles" } }
                @if b.signers.is_empty() {
                    tr { td colspan="3" class="muted" { "no known signer" } }
                }
                @for s in &b.signers {
                    tr {
                        td { (s.name.as_deref().unwrap_or("(not in the current trust root)")) }
                        td { code class="key" { (s.key) } }
                        td { (s.roles.join(", ")) }
                    }
                }
            }
            table {
                tr { th { "Change" } th { "When" } th { "Signers" } }
                @for c in &b.changes {
                    tr {
                        td { code { (c.hash.chars().take(16).collect::<String>()) } }
                        td { (when(c.time)) }
                        td { (list_or(&c.signers, "none known")) }
                    }
                }
            }
            @for p in &b.policies {
                div class="policy" { b { (p.id) } pre { (p.text) } }
            }
        }
    }
}

fn timeline(r: &Report) -> Markup {
    html! {
        h2 id="timeline" { "Revocations and quarantines" }
        @if r.timeline.is_empty() {
            p class="muted" { "None." }
        } @else {
            table {
                tr { th { "When" } th { "Kind" } th { "Subject" } th { "Reason" } th { "Signed by" } }
                @for t in &r.timeline {
                    tr class="event" {
                        td { (when(t.time)) }
                        td { (t.kind) }
                        td { code { (t.subject) } }
                        td { (t.reason) }
                        td { (list_or(&t.signers, "not recorded")) }
                    }
                }
            }
        }
        div id="revocations" {}
        div id="quarantines" {}
    }
}

fn decisions(r: &Report) -> Markup {
    let d = &r.decisions;
    html! {
        h2 id="decisions" { "Decisions and updates" }
        p class="muted" { "Since the node started." }
        table {
            tr { th { "Allowed" } td { (d.allow) } }
            tr { th { "Denied" } td { (d.deny) } }
            tr { th { "Denied (revoked)" } td { (d.revoked) } }
            tr { th { "Total" } td { (d.total) } }
            tr { th { "Updates applied" } td { (d.updates_applied) } }
            tr {
                th { "Updates refused" }
                td {
                    @if d.updates_refused.is_empty() {
                        "0"
                    } @else {
                        @for (i, (reason, n)) in d.updates_refused.iter().enumerate() {
                            @if i > 0 { ", " }
                            (reason) ": " (n)
                        }
                    }
                }
            }
            tr { th { "Sync rounds / updates by sync" } td { (d.sync_rounds) " / " (d.synced) } }
            tr { th { "Peers banned" } td { (d.bans) } }
            tr { th { "Concurrent writes" } td { (d.conflicts) } }
        }
    }
}

fn audit(r: &Report) -> Markup {
    html! {
        h2 id="audit" { "Audit chain" }
        @match &r.audit {
            None => {
                p { (badge("na", "not available")) " The node has no audit trail." }
            }
            Some(a) => {
                table {
                    tr {
                        th { "Verification" }
                        td {
                            @if a.verify.ok {
                                (badge("met", "verified"))
                            } @else {
                                (badge("notmet", "failed"))
                                @if let Some(n) = a.verify.first_bad { " at record " (n) }
                                @if let Some(e) = &a.verify.error { ": " (e) }
                            }
                        }
                    }
                    tr { th { "Records" } td { (a.verify.records) } }
                    tr { th { "Checkpoints" } td { (a.verify.checkpoints) } }
                    @if let Some(s) = &a.status {
                        tr { th { "Head" } td { code { (s.head) } } }
                        tr { th { "Dropped" } td { (s.dropped) } }
                        tr {
                            th { "Last checkpoint" }
                            td {
                                @match &s.last_checkpoint {
                                    Some(c) => {
                                        "record " (c.seq) " at " (format_timestamp(c.at_ms / 1000))
                                        ", head " code { (c.head) }
                                    }
                                    None => { "none" }
                                }
                            }
                        }
                        tr { th { "Peer checkpoints" } td { (s.peer_checkpoints) } }
                    }
                }
            }
        }
    }
}
