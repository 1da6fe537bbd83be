//! Labeled decision traces for evaluating anomaly detection.
//!
//! `generate` (built with the `sim` feature, like `weft detect gen`) builds,
//! from a seed, a day-shaped stream of authorization decisions: many
//! principals with daily rhythms (the baseline), benign surprises (new
//! employees, nightly batch jobs, travellers) and labeled attacks. Every event carries its ground truth, and every attack its start
//! and end, so a detector replayed over the trace can be scored per
//! incident. The same `TraceConfig` (seed included) gives the same trace,
//! line for line: one ChaCha8 RNG, no clock, and events ordered by `(at_ms,
//! generation order)`.
//!
//! # File format (`weft-trace/v1`, JSON lines)
//! One JSON object per line, told apart by `"type"`:
//!
//! ```text
//! {"type":"header","format":"weft-trace/v1","seed":7,"principals":1000,"hours":24,
//!  "start_ms":1767571200000,"warmup_ms":43200000,"sites":["site-0",...],"events":512345}
//! {"type":"incident","principal":"User::\"u00042\"","kind":"bulk_exfiltration",
//!  "start_ms":...,"end_ms":...}                                  # one per attack
//! {"type":"surprise","principal":"Service::\"batch-0\"","kind":"batch_job",
//!  "start_ms":...}                                               # benign, labeled benign
//! {"type":"event","at_ms":...,"principal":"User::\"u00042\"","action":"Action::\"view\"",
//!  "resource":"Doc::\"doc-17\"","allow":true,"token_failed":false,"site":"site-3",
//!  "label":"benign"}                                             # in time order
//! ```
//!
//! - Times are Unix milliseconds. `start_ms` is a midnight (UTC), so the hour
//!   of day of an event is `at_ms / 3_600_000 % 24`.
//! - `warmup_ms`: the first part of the trace, from `start_ms`, in which no
//!   attack starts and no surprise begins. An online detector learns its
//!   baselines there; an evaluation scores only alerts after it.
//! - `label` is `benign` or the attack kind ([`AttackKind::as_str`]); an
//!   event of an attacker who acts as a principal carries the attack's label,
//!   while the same principal's own traffic stays `benign`.
//! - `token_failed` is true when the request presented a failed or expired
//!   token; `allow` is the decision.
//! - An event line is a [`DecisionEvent`], as the node feeds its detector,
//!   with the line's `type` and the event's `label` around it.
//!
//! # What is in it
//! - Users (`User::"u00042"`): a home site (sometimes a second one), working
//!   hours starting between 07:00 and 10:00 for 7 to 10 hours, a request rate
//!   between 0.2 and 3 per minute, two or three resource types with one to
//!   three actions each, a working set of 15 to 50 resources, a 2% chance per
//!   request of touching a resource outside it, up to 4% denies, 0.3% expired
//!   tokens, and sometimes an evening session.
//! - Batch jobs (`Service::"batch-0"`), one per 250 principals: every hour
//!   from 22:00 to 04:00, 8 to 12 minutes of 150 to 300 queries a minute over
//!   a fixed set of 120 tables.
//! - New employees (`User::"new-0"`), one per 250 principals: a user who
//!   first appears after the warm-up, during the day, exploring widely (30% of
//!   requests outside the working set, more denies) in the first hour.
//! - Travellers (`User::"trav-0"`), one per 250 principals: an ordinary user
//!   who, within two hours after the warm-up, goes on working as usual from
//!   a site never used before.
//! - Attacks, `TraceConfig::attacks_per_kind` of each kind, each on its own
//!   victim (an ordinary user), starting at a uniform time after the warm-up:
//!   see [`AttackKind`].

use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

use super::DecisionEvent;

#[cfg(any(feature = "sim", test))]
pub use generator::{TraceConfig, generate};

/// The format tag in the header line.
pub const FORMAT: &str = "weft-trace/v1";

/// 2026-01-05T00:00:00Z, a Monday midnight: where generated traces start.
pub const DEFAULT_START_MS: u64 = 1_767_571_200_000;

/// The kinds of attack a trace holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackKind {
    /// 10 minutes of 30 to 90 requests a minute with failed tokens, from
    /// many sites.
    CredentialStuffing,
    /// 5 minutes of 10 to 30 requests a minute for admin, delete and edit on
    /// secrets, hosts and databases, 75% denied.
    PrivilegeProbing,
    /// 10 minutes of 80 to 200 reads a minute, each of a different resource.
    BulkExfiltration,
    /// 20 minutes of 3 to 10 requests a minute from sites the victim never
    /// used, on resource types it never used (ssh to hosts, queries), 15%
    /// denied.
    LateralMovement,
    /// 4 hours of reads of resources new to the victim, the rate rising from
    /// one per 10 minutes to one a minute.
    LowAndSlow,
    /// 10 minutes of requests with failed tokens spread over every site, 3
    /// to 12 a minute at each: every site's share is under its own floors.
    DistributedStuffing,
    /// 5 minutes of probing (as [`AttackKind::PrivilegeProbing`]) spread
    /// over 3 to 5 sites, 3 to 8 requests a minute at each, 75% denied.
    DistributedProbing,
    /// 30 minutes of lateral movement from site to site: 4 to 6 sites the
    /// victim never used, one after the other, 3 to 10 requests a minute
    /// (ssh to hosts, queries, secrets), 15% denied.
    SiteToSiteMovement,
}

impl AttackKind {
    /// Every single-site kind, in report order: what a trace holds
    /// without `TraceConfig::multi_site`.
    pub const ALL: [AttackKind; 5] = [
        AttackKind::CredentialStuffing,
        AttackKind::PrivilegeProbing,
        AttackKind::BulkExfiltration,
        AttackKind::LateralMovement,
        AttackKind::LowAndSlow,
    ];

    /// The label written in traces and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            AttackKind::CredentialStuffing => "credential_stuffing",
            AttackKind::PrivilegeProbing => "privilege_probing",
            AttackKind::BulkExfiltration => "bulk_exfiltration",
            AttackKind::LateralMovement => "lateral_movement",
            AttackKind::LowAndSlow => "low_and_slow",
            AttackKind::DistributedStuffing => "distributed_stuffing",
            AttackKind::DistributedProbing => "distributed_probing",
            AttackKind::SiteToSiteMovement => "site_to_site_movement",
        }
    }

    /// The multi-site kinds, in report order (after [`AttackKind::ALL`]).
    pub const MULTI_SITE: [AttackKind; 3] = [
        AttackKind::DistributedStuffing,
        AttackKind::DistributedProbing,
        AttackKind::SiteToSiteMovement,
    ];

    /// Whether it is one of the bursts the goals time (all but low and slow).
    pub fn is_burst(self) -> bool {
        self != AttackKind::LowAndSlow
    }
}

/// The ground truth of one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// Ordinary traffic, including the benign surprises.
    Benign,
    /// Credential stuffing.
    CredentialStuffing,
    /// Privilege probing.
    PrivilegeProbing,
    /// Bulk exfiltration.
    BulkExfiltration,
    /// Lateral movement.
    LateralMovement,
    /// Low and slow.
    LowAndSlow,
    /// Distributed credential stuffing.
    DistributedStuffing,
    /// Distributed privilege probing.
    DistributedProbing,
    /// Lateral movement from site to site.
    SiteToSiteMovement,
}

impl From<AttackKind> for Label {
    fn from(k: AttackKind) -> Self {
        match k {
            AttackKind::CredentialStuffing => Label::CredentialStuffing,
            AttackKind::PrivilegeProbing => Label::PrivilegeProbing,
            AttackKind::BulkExfiltration => Label::BulkExfiltration,
            AttackKind::LateralMovement => Label::LateralMovement,
            AttackKind::LowAndSlow => Label::LowAndSlow,
            AttackKind::DistributedStuffing => Label::DistributedStuffing,
            AttackKind::DistributedProbing => Label::DistributedProbing,
            AttackKind::SiteToSiteMovement => Label::SiteToSiteMovement,
        }
    }
}

/// The header line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The seed the trace was generated from.
    pub seed: u64,
    /// Principals in the trace (users, new employees and batch jobs).
    pub principals: usize,
    /// How long the trace is, in hours.
    pub hours: u64,
    /// Where the trace starts (a midnight, Unix ms).
    pub start_ms: u64,
    /// How long the warm-up is, from `start_ms`.
    pub warmup_ms: u64,
    /// The sites (node ids) events come from.
    pub sites: Vec<String>,
    /// How many event lines follow.
    pub events: usize,
}

/// One attack: the ground truth an evaluation scores against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// The principal the attacker acts as.
    pub principal: String,
    /// What kind of attack.
    pub kind: AttackKind,
    /// When its first event is due.
    pub start_ms: u64,
    /// When it ends.
    pub end_ms: u64,
}

/// A benign surprise: unusual, but not an attack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Surprise {
    /// The principal.
    pub principal: String,
    /// `new_employee`, `batch_job` or `traveller`.
    pub kind: String,
    /// When it first acts.
    pub start_ms: u64,
}

/// One authorization decision, with its ground truth.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The decision, as the detector sees it.
    #[serde(flatten)]
    pub decision: DecisionEvent,
    /// The ground truth.
    pub label: Label,
}

/// One line of a trace file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    /// The first line.
    Header(Header),
    /// An attack.
    Incident(Incident),
    /// A benign surprise.
    Surprise(Surprise),
    /// A decision.
    Event(Event),
}

/// A trace: its header, its ground truth and its decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// The header.
    pub header: Header,
    /// The attacks, in start order.
    pub incidents: Vec<Incident>,
    /// The benign surprises.
    pub surprises: Vec<Surprise>,
    /// The decisions, in time order.
    pub events: Vec<Event>,
}

impl Trace {
    /// Writes the trace as JSON lines.
    pub fn write_jsonl(&self, mut w: impl Write) -> io::Result<()> {
        let mut line = |l: &Line| -> io::Result<()> {
            serde_json::to_writer(&mut w, l)?;
            w.write_all(b"\n")
        };
        line(&Line::Header(self.header.clone()))?;
        for i in &self.incidents {
            line(&Line::Incident(i.clone()))?;
        }
        for s in &self.surprises {
            line(&Line::Surprise(s.clone()))?;
        }
        for e in &self.events {
            line(&Line::Event(e.clone()))?;
        }
        Ok(())
    }

    /// Reads a trace written by [`Trace::write_jsonl`].
    pub fn read_jsonl(r: impl BufRead) -> io::Result<Trace> {
        let mut header = None;
        let mut incidents = Vec::new();
        let mut surprises = Vec::new();
        let mut events = Vec::new();
        for (n, l) in r.lines().enumerate() {
            let l = l?;
            if l.trim().is_empty() {
                continue;
            }
            let parsed: Line = serde_json::from_str(&l).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("line {}: {e}", n + 1))
            })?;
            match parsed {
                Line::Header(h) if header.is_none() && n == 0 => {
                    if h.format != FORMAT {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("the format is `{}`, not `{FORMAT}`", h.format),
                        ));
                    }
                    header = Some(h);
                }
                Line::Header(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "line {}: a header must be the first line, and only it",
                            n + 1
                        ),
                    ));
                }
                Line::Incident(i) => incidents.push(i),
                Line::Surprise(s) => surprises.push(s),
                Line::Event(e) => events.push(e),
            }
        }
        let header = header.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "the trace has no header line")
        })?;
        Ok(Trace {
            header,
            incidents,
            surprises,
            events,
        })
    }
}

/// The trace generator: what `weft detect gen` writes.
#[cfg(any(feature = "sim", test))]
mod generator {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::{
        AttackKind, DEFAULT_START_MS, DecisionEvent, Event, FORMAT, Header, Incident, Label,
        Surprise, Trace,
    };

    const MIN_MS: u64 = 60_000;
    const HOUR_MS: u64 = 3_600_000;
    const DAY_MS: u64 = 24 * HOUR_MS;
    /// Sites of a trace unless its config says otherwise.
    const DEFAULT_SITES: usize = 8;
    const USER_TYPES: [&str; 5] = ["Doc", "Repo", "Ticket", "Wiki", "Db"];
    const USER_ACTIONS: [&str; 5] = ["view", "edit", "list", "comment", "query"];
    const POOL: u32 = 5_000;

    impl AttackKind {
        fn duration_ms(self) -> u64 {
            match self {
                AttackKind::CredentialStuffing | AttackKind::BulkExfiltration => 10 * MIN_MS,
                AttackKind::PrivilegeProbing => 5 * MIN_MS,
                AttackKind::LateralMovement => 20 * MIN_MS,
                AttackKind::LowAndSlow => 4 * HOUR_MS,
                AttackKind::DistributedStuffing => 10 * MIN_MS,
                AttackKind::DistributedProbing => 5 * MIN_MS,
                AttackKind::SiteToSiteMovement => 30 * MIN_MS,
            }
        }
    }

    /// What to generate.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct TraceConfig {
        /// The seed of every random choice.
        pub seed: u64,
        /// Ordinary users (new employees and batch jobs come on top: one of
        /// each per 250, at least one).
        pub principals: usize,
        /// Length in hours (at least 2).
        pub hours: u64,
        /// Attacks of each kind (default: one per 100 principals, at least 2).
        pub attacks_per_kind: Option<usize>,
        /// Sites (at least 2). Default 8.
        pub sites: usize,
        /// Multi-site principals and attacks on top: roaming staff and
        /// shared service accounts (one each per 250), and the
        /// [`AttackKind::MULTI_SITE`] attacks. Generated after everything
        /// else, so the rest of the trace is the same as without them.
        pub multi_site: bool,
    }

    impl Default for TraceConfig {
        fn default() -> Self {
            TraceConfig {
                seed: 1,
                principals: 1000,
                hours: 24,
                attacks_per_kind: None,
                sites: DEFAULT_SITES,
                multi_site: false,
            }
        }
    }

    impl TraceConfig {
        /// Half the trace, at most 24 hours: enough for every principal's
        /// working day to be seen once before anything is scored.
        pub fn warmup_ms(&self) -> u64 {
            (self.hours * HOUR_MS / 2).min(DAY_MS)
        }
    }

    struct User {
        id: String,
        home: usize,
        second: Option<usize>,
        start_h: f64,
        len_h: f64,
        rate: f64,
        pairs: Vec<(&'static str, &'static str)>,
        working: Vec<(usize, u32)>,
        deny_p: f64,
        evening: Option<f64>,
    }

    fn pick<T: Copy>(rng: &mut ChaCha8Rng, xs: &[T]) -> T {
        xs[rng.random_range(0..xs.len())]
    }

    /// Exponential inter-arrival times: a Poisson process of `per_min` events a
    /// minute over `[from, to)`.
    fn poisson(rng: &mut ChaCha8Rng, from: u64, to: u64, per_min: f64) -> Vec<u64> {
        let mut out = Vec::new();
        if per_min <= 0.0 {
            return out;
        }
        let mean_ms = MIN_MS as f64 / per_min;
        let mut t = from as f64;
        loop {
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            t += -u.ln() * mean_ms;
            if t >= to as f64 {
                return out;
            }
            out.push(t as u64);
        }
    }

    fn uid(ty: &str, id: impl std::fmt::Display) -> String {
        format!("{ty}::\"{id}\"")
    }

    fn resource(ty: usize, n: u32) -> String {
        let t = USER_TYPES[ty];
        uid(t, format!("{}-{n}", t.to_ascii_lowercase()))
    }

    fn new_user(rng: &mut ChaCha8Rng, id: String, sites: usize) -> User {
        let home = rng.random_range(0..sites);
        let second = rng
            .random_bool(0.3)
            .then(|| (home + rng.random_range(1..sites)) % sites);
        let ntypes = rng.random_range(2..=3);
        let mut types: Vec<usize> = Vec::new();
        while types.len() < ntypes {
            let t = rng.random_range(0..USER_TYPES.len());
            if !types.contains(&t) {
                types.push(t);
            }
        }
        let mut pairs = Vec::new();
        for &t in &types {
            let nact = rng.random_range(1..=3);
            let mut acts: Vec<&'static str> = Vec::new();
            while acts.len() < nact {
                let a = pick(rng, &USER_ACTIONS);
                if !acts.contains(&a) {
                    acts.push(a);
                }
            }
            for a in acts {
                pairs.push((a, USER_TYPES[t]));
            }
        }
        let nwork = rng.random_range(15..=50);
        let working = (0..nwork)
            .map(|_| (pick(rng, &types), rng.random_range(0..POOL)))
            .collect();
        User {
            id,
            home,
            second,
            start_h: rng.random_range(7.0..10.0),
            len_h: rng.random_range(7.0..10.0),
            rate: rng.random_range(0.2f64.ln()..3.0f64.ln()).exp(),
            pairs,
            working,
            deny_p: rng.random_range(0.0..0.04),
            evening: rng.random_bool(0.3).then(|| rng.random_range(19.0..23.0)),
        }
    }

    fn site(i: usize) -> String {
        format!("site-{i}")
    }

    /// One ordinary request of `u` at `t`; `explore` is the chance it touches a
    /// resource outside the working set.
    fn user_event(rng: &mut ChaCha8Rng, u: &User, t: u64, explore: f64, deny_p: f64) -> Event {
        let (action, ty) = pick(rng, &u.pairs);
        let ti = USER_TYPES.iter().position(|x| *x == ty).unwrap_or(0);
        let res = if rng.random_bool(explore) {
            resource(ti, rng.random_range(0..POOL))
        } else {
            let same: Vec<u32> = u
                .working
                .iter()
                .filter(|(t, _)| *t == ti)
                .map(|(_, n)| *n)
                .collect();
            let n = if same.is_empty() {
                rng.random_range(0..POOL)
            } else {
                pick(rng, &same)
            };
            resource(ti, n)
        };
        let token_failed = rng.random_bool(0.003);
        let s = match u.second {
            Some(s2) if rng.random_bool(0.2) => s2,
            _ => u.home,
        };
        Event {
            decision: DecisionEvent {
                at_ms: t,
                principal: u.id.clone(),
                action: uid("Action", action),
                resource: res,
                allow: !token_failed && !rng.random_bool(deny_p),
                token_failed,
                site: Some(site(s)),
            },
            label: Label::Benign,
        }
    }

    /// The user's ordinary traffic over `[from, to)`.
    fn user_days(
        rng: &mut ChaCha8Rng,
        u: &User,
        start: u64,
        from: u64,
        to: u64,
        out: &mut Vec<Event>,
    ) {
        let mut day = start;
        while day < to {
            let mut spans = vec![(
                day + (u.start_h * HOUR_MS as f64) as u64,
                day + ((u.start_h + u.len_h) * HOUR_MS as f64) as u64,
                u.rate,
            )];
            if let Some(h) = u.evening {
                let s = day + (h * HOUR_MS as f64) as u64;
                spans.push((s, s + 20 * MIN_MS, u.rate / 2.0));
            }
            for (a, b, rate) in spans {
                let (a, b) = (a.max(from), b.min(to));
                if a < b {
                    for t in poisson(rng, a, b, rate) {
                        out.push(user_event(rng, u, t, 0.02, u.deny_p));
                    }
                }
            }
            day += DAY_MS;
        }
    }

    /// One of the user's own (action, resource type) pairs.
    fn own_pair(rng: &mut ChaCha8Rng, u: &User) -> (&'static str, usize) {
        let (a, ty) = pick(rng, &u.pairs);
        (a, USER_TYPES.iter().position(|x| *x == ty).unwrap_or(0))
    }

    fn attack(
        rng: &mut ChaCha8Rng,
        kind: AttackKind,
        u: &User,
        start: u64,
        out: &mut Vec<Event>,
        sites: usize,
    ) {
        let end = start + kind.duration_ms();
        let label = Label::from(kind);
        let mk = |t, action: &str, res: String, allow, token_failed, s: usize| Event {
            decision: DecisionEvent {
                at_ms: t,
                principal: u.id.clone(),
                action: uid("Action", action),
                resource: res,
                allow,
                token_failed,
                site: Some(site(s)),
            },
            label,
        };
        match kind {
            AttackKind::CredentialStuffing => {
                let rate = rng.random_range(30.0..90.0);
                for t in poisson(rng, start, end, rate) {
                    let (a, ty) = pick(rng, &u.pairs);
                    let ti = USER_TYPES.iter().position(|x| *x == ty).unwrap_or(0);
                    let s = rng.random_range(0..sites);
                    out.push(mk(
                        t,
                        a,
                        resource(ti, rng.random_range(0..POOL)),
                        false,
                        true,
                        s,
                    ));
                }
            }
            AttackKind::PrivilegeProbing => {
                let rate = rng.random_range(10.0..30.0);
                for t in poisson(rng, start, end, rate) {
                    let a = pick(rng, &["admin", "delete", "edit"]);
                    let ty = pick(rng, &["Secret", "Host", "Db"]);
                    let res = uid(
                        ty,
                        format!("{}-{}", ty.to_ascii_lowercase(), rng.random_range(0..200)),
                    );
                    out.push(mk(t, a, res, !rng.random_bool(0.75), false, u.home));
                }
            }
            AttackKind::BulkExfiltration => {
                let rate = rng.random_range(80.0..200.0);
                for t in poisson(rng, start, end, rate) {
                    let (a, ti) = own_pair(rng, u);
                    out.push(mk(
                        t,
                        a,
                        resource(ti, rng.random_range(0..POOL)),
                        true,
                        false,
                        u.home,
                    ));
                }
            }
            AttackKind::LateralMovement => {
                let rate = rng.random_range(3.0..10.0);
                let others: Vec<usize> = (0..sites)
                    .filter(|s| *s != u.home && Some(*s) != u.second)
                    .collect();
                for t in poisson(rng, start, end, rate) {
                    let (a, ty) =
                        pick(rng, &[("ssh", "Host"), ("query", "Db"), ("view", "Secret")]);
                    let res = uid(
                        ty,
                        format!("{}-{}", ty.to_ascii_lowercase(), rng.random_range(0..500)),
                    );
                    let s = pick(rng, &others);
                    out.push(mk(t, a, res, !rng.random_bool(0.15), false, s));
                }
            }
            AttackKind::DistributedStuffing => {
                // Every site gets a share under its own floors: 3 to 12 a
                // minute each, all of them failed tokens.
                let per_site = rng.random_range(3.0..12.0);
                for t in poisson(rng, start, end, per_site * sites as f64) {
                    let (a, ti) = own_pair(rng, u);
                    let s = rng.random_range(0..sites);
                    out.push(mk(
                        t,
                        a,
                        resource(ti, rng.random_range(0..POOL)),
                        false,
                        true,
                        s,
                    ));
                }
            }
            AttackKind::DistributedProbing => {
                // Three to five sites, 3 to 8 probes a minute at each.
                let n = rng.random_range(3..=5usize).min(sites);
                let mut at: Vec<usize> = (0..sites).collect();
                while at.len() > n {
                    at.swap_remove(rng.random_range(0..at.len()));
                }
                let per_site = rng.random_range(3.0..8.0);
                for t in poisson(rng, start, end, per_site * n as f64) {
                    let a = pick(rng, &["admin", "delete", "edit"]);
                    let ty = pick(rng, &["Secret", "Host", "Db"]);
                    let res = uid(
                        ty,
                        format!("{}-{}", ty.to_ascii_lowercase(), rng.random_range(0..200)),
                    );
                    let s = pick(rng, &at);
                    out.push(mk(t, a, res, !rng.random_bool(0.75), false, s));
                }
            }
            AttackKind::SiteToSiteMovement => {
                // From one site the victim never used to the next, four to
                // six of them, a few minutes at each.
                let mut others: Vec<usize> = (0..sites)
                    .filter(|s| *s != u.home && Some(*s) != u.second)
                    .collect();
                let hops = rng.random_range(4..=6usize).min(others.len()).max(1);
                let rate = rng.random_range(3.0..10.0);
                let leg = kind.duration_ms() / hops as u64;
                for h in 0..hops {
                    if others.is_empty() {
                        break;
                    }
                    let s = others.swap_remove(rng.random_range(0..others.len()));
                    let from = start + h as u64 * leg;
                    for t in poisson(rng, from, from + leg, rate) {
                        let (a, ty) =
                            pick(rng, &[("ssh", "Host"), ("query", "Db"), ("view", "Secret")]);
                        let res = uid(
                            ty,
                            format!("{}-{}", ty.to_ascii_lowercase(), rng.random_range(0..500)),
                        );
                        out.push(mk(t, a, res, !rng.random_bool(0.15), false, s));
                    }
                }
            }
            AttackKind::LowAndSlow => {
                // Per minute, one read with a probability rising from 0.1 to 1.
                let minutes = kind.duration_ms() / MIN_MS;
                for m in 0..minutes {
                    let p = 0.1 + 0.9 * (m as f64 / minutes as f64);
                    if rng.random_bool(p) {
                        let t = start + m * MIN_MS + rng.random_range(0..MIN_MS);
                        let (a, ti) = own_pair(rng, u);
                        out.push(mk(
                            t,
                            a,
                            resource(ti, rng.random_range(0..POOL)),
                            true,
                            false,
                            u.home,
                        ));
                    }
                }
            }
        }
    }

    /// The multi-site part of a trace: roaming staff and shared service
    /// accounts from the trace's start, then the multi-site attacks on
    /// victims no other attack took.
    #[allow(clippy::too_many_arguments)]
    fn multi_site(
        rng: &mut ChaCha8Rng,
        users: &[User],
        victims: &mut Vec<usize>,
        (start, scored_from, end): (u64, u64, u64),
        (sites, extras, per_kind): (usize, usize, usize),
        events: &mut Vec<Event>,
        incidents: &mut Vec<Incident>,
        surprises: &mut Vec<Surprise>,
    ) {
        // Roaming staff: an ordinary user who works from two to four sites,
        // moving to another every one to three hours.
        for k in 0..extras {
            let u = new_user(rng, uid("User", format!("roam-{k}")), sites);
            let n = rng.random_range(2..=4usize).min(sites);
            let mut at = vec![u.home];
            while at.len() < n {
                let s = rng.random_range(0..sites);
                if !at.contains(&s) {
                    at.push(s);
                }
            }
            let mut own = Vec::new();
            user_days(rng, &u, start, start, end, &mut own);
            let mut here = 0usize;
            let mut moves_at = start;
            for e in &mut own {
                let d = &mut e.decision;
                while d.at_ms >= moves_at {
                    here = (here + rng.random_range(1..n.max(2))) % n;
                    moves_at = d.at_ms.max(moves_at) + rng.random_range(HOUR_MS..3 * HOUR_MS);
                }
                d.site = Some(site(at[here]));
            }
            events.append(&mut own);
            surprises.push(Surprise {
                principal: u.id.clone(),
                kind: "roaming_staff".into(),
                start_ms: start,
            });
        }
        // Shared service accounts: one identity used at three sites or more
        // at once, all day, 1 to 4 requests a minute at each.
        for k in 0..extras {
            let id = uid("Service", format!("shared-{k}"));
            let n = rng.random_range(3..=sites.max(3)).min(sites);
            let mut at: Vec<usize> = (0..sites).collect();
            while at.len() > n {
                at.swap_remove(rng.random_range(0..at.len()));
            }
            let working: Vec<String> = (0..40)
                .map(|i| uid("Db", format!("shared-{k}-{i}")))
                .collect();
            for s in at {
                let rate = rng.random_range(1.0..4.0);
                for t in poisson(rng, start, end, rate) {
                    let action = pick(rng, &["query", "list"]);
                    events.push(Event {
                        decision: DecisionEvent {
                            at_ms: t,
                            principal: id.clone(),
                            action: uid("Action", action),
                            resource: working[rng.random_range(0..working.len())].clone(),
                            allow: !rng.random_bool(0.01),
                            token_failed: false,
                            site: Some(site(s)),
                        },
                        label: Label::Benign,
                    });
                }
            }
            surprises.push(Surprise {
                principal: id,
                kind: "shared_account".into(),
                start_ms: start,
            });
        }
        for kind in AttackKind::MULTI_SITE {
            for _ in 0..per_kind {
                if victims.is_empty() {
                    break;
                }
                let v = victims.swap_remove(rng.random_range(0..victims.len()));
                let dur = kind.duration_ms();
                let lo = scored_from + 10 * MIN_MS;
                let hi = end.saturating_sub(dur + 10 * MIN_MS).max(lo + 1);
                let s = rng.random_range(lo..hi);
                attack(rng, kind, &users[v], s, events, sites);
                incidents.push(Incident {
                    principal: users[v].id.clone(),
                    kind,
                    start_ms: s,
                    end_ms: s + dur,
                });
            }
        }
    }

    /// Generates a trace.
    pub fn generate(cfg: &TraceConfig) -> Trace {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let hours = cfg.hours.max(2);
        let sites = cfg.sites.max(2);
        let start = DEFAULT_START_MS;
        let end = start + hours * HOUR_MS;
        let warmup = TraceConfig {
            hours,
            ..cfg.clone()
        }
        .warmup_ms();
        let scored_from = start + warmup;
        let extras = (cfg.principals / 250).max(1);
        let per_kind = cfg
            .attacks_per_kind
            .unwrap_or((cfg.principals / 100).max(2));

        let users: Vec<User> = (0..cfg.principals)
            .map(|i| new_user(&mut rng, uid("User", format!("u{i:05}")), sites))
            .collect();
        let mut events = Vec::new();
        for u in &users {
            user_days(&mut rng, u, start, start, end, &mut events);
        }

        let mut surprises = Vec::new();
        // Nightly batch jobs.
        for k in 0..extras {
            let id = uid("Service", format!("batch-{k}"));
            let home = rng.random_range(0..sites);
            let tables: Vec<String> = (0..120)
                .map(|n| uid("Db", format!("table-{k}-{n}")))
                .collect();
            let mut first = None;
            // From the day before, so the runs after the trace's first midnight
            // are there too.
            let mut day = start - DAY_MS;
            while day < end {
                for h in [22u64, 23, 24, 25, 26, 27, 28] {
                    let s = day + h * HOUR_MS + 5 * MIN_MS + rng.random_range(0..MIN_MS);
                    let len = rng.random_range(8..=12) * MIN_MS;
                    if s < start || s + len > end {
                        continue;
                    }
                    let rate = rng.random_range(150.0..300.0);
                    let ts = poisson(&mut rng, s, s + len, rate);
                    first = first.or(ts.first().copied());
                    for t in ts {
                        events.push(Event {
                            decision: DecisionEvent {
                                at_ms: t,
                                principal: id.clone(),
                                action: uid("Action", "query"),
                                resource: tables[rng.random_range(0..tables.len())].clone(),
                                allow: true,
                                token_failed: false,
                                site: Some(site(home)),
                            },
                            label: Label::Benign,
                        });
                    }
                }
                day += DAY_MS;
            }
            surprises.push(Surprise {
                principal: id,
                kind: "batch_job".into(),
                start_ms: first.unwrap_or(start),
            });
        }
        // New employees: they join after the warm-up, in working hours.
        for k in 0..extras {
            let mut u = new_user(&mut rng, uid("User", format!("new-{k}")), sites);
            let span = end.saturating_sub(scored_from + 3 * HOUR_MS);
            let mut join = scored_from + rng.random_range(0..span.max(1));
            let h = (join % DAY_MS) as f64 / HOUR_MS as f64;
            if !(9.0..15.0).contains(&h) {
                join = join - join % DAY_MS + 10 * HOUR_MS;
                if join < scored_from {
                    join += DAY_MS;
                }
            }
            let join = join.min(end.saturating_sub(3 * HOUR_MS)).max(scored_from);
            let jh = (join % DAY_MS) as f64 / HOUR_MS as f64;
            u.start_h = jh;
            // The first hour: exploring.
            for t in poisson(&mut rng, join, (join + HOUR_MS).min(end), u.rate) {
                let d = u.deny_p + 0.05;
                events.push(user_event(&mut rng, &u, t, 0.3, d));
            }
            u.start_h = jh + 1.0;
            user_days(
                &mut rng,
                &u,
                join - join % DAY_MS,
                (join + HOUR_MS).min(end),
                end,
                &mut events,
            );
            surprises.push(Surprise {
                principal: u.id.clone(),
                kind: "new_employee".into(),
                start_ms: join,
            });
        }

        // Attacks, each on its own victim.
        let mut victims: Vec<usize> = (0..users.len()).collect();
        let mut incidents = Vec::new();
        for kind in AttackKind::ALL {
            for _ in 0..per_kind {
                if victims.is_empty() {
                    break;
                }
                let v = victims.swap_remove(rng.random_range(0..victims.len()));
                let dur = kind.duration_ms();
                let lo = scored_from + 10 * MIN_MS;
                let hi = end.saturating_sub(dur + 10 * MIN_MS).max(lo + 1);
                let s = rng.random_range(lo..hi);
                attack(&mut rng, kind, &users[v], s, &mut events, sites);
                incidents.push(Incident {
                    principal: users[v].id.clone(),
                    kind,
                    start_ms: s,
                    end_ms: s + dur,
                });
            }
        }
        // Travellers, one per 250 principals: ordinary users who, some time
        // after the warm-up, go on working as usual from a site they were never
        // seen at. Generated last, so every other principal and attack is the
        // same as in a trace of the same seed without them.
        for k in 0..extras {
            let u = new_user(&mut rng, uid("User", format!("trav-{k}")), sites);
            let away = (0..sites)
                .filter(|s| *s != u.home && Some(*s) != u.second)
                .collect::<Vec<_>>();
            let away = pick(&mut rng, &away);
            let leaves = scored_from + rng.random_range(0..2 * HOUR_MS);
            let mut own = Vec::new();
            user_days(&mut rng, &u, start, start, end, &mut own);
            let mut first_away = None;
            for e in &mut own {
                let d = &mut e.decision;
                if d.at_ms >= leaves {
                    d.site = Some(site(away));
                    first_away = first_away.or(Some(d.at_ms));
                }
            }
            events.append(&mut own);
            surprises.push(Surprise {
                principal: u.id.clone(),
                kind: "traveller".into(),
                start_ms: first_away.unwrap_or(leaves),
            });
        }
        if cfg.multi_site {
            multi_site(
                &mut rng,
                &users,
                &mut victims,
                (start, scored_from, end),
                (sites, extras, per_kind),
                &mut events,
                &mut incidents,
                &mut surprises,
            );
        }
        incidents.sort_by(|a, b| (a.start_ms, &a.principal).cmp(&(b.start_ms, &b.principal)));
        // A stable sort keeps generation order among equal times.
        events.sort_by_key(|e| e.decision.at_ms);
        let header = Header {
            format: FORMAT.into(),
            seed: cfg.seed,
            principals: cfg.principals + if cfg.multi_site { 5 } else { 3 } * extras,
            hours,
            start_ms: start,
            warmup_ms: warmup,
            sites: (0..sites).map(site).collect(),
            events: events.len(),
        };
        Trace {
            header,
            incidents,
            surprises,
            events,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> TraceConfig {
        TraceConfig {
            seed: 3,
            principals: 40,
            hours: 24,
            attacks_per_kind: Some(2),
            ..TraceConfig::default()
        }
    }

    #[test]
    fn same_seed_same_trace_and_round_trip() {
        let a = generate(&small());
        let b = generate(&small());
        assert_eq!(a, b);
        let mut buf = Vec::new();
        a.write_jsonl(&mut buf).unwrap();
        let back = Trace::read_jsonl(&buf[..]).unwrap();
        assert_eq!(a, back);
        assert_eq!(a.header.events, a.events.len());
    }

    #[test]
    fn every_kind_is_labeled_after_the_warmup() {
        let t = generate(&small());
        let from = t.header.start_ms + t.header.warmup_ms;
        for kind in AttackKind::ALL {
            let inc: Vec<_> = t.incidents.iter().filter(|i| i.kind == kind).collect();
            assert_eq!(inc.len(), 2, "{kind:?}");
            for i in inc {
                assert!(i.start_ms >= from);
                assert!(t.events.iter().any(|e| e.decision.principal == i.principal
                    && e.label == Label::from(kind)
                    && e.decision.at_ms >= i.start_ms
                    && e.decision.at_ms < i.end_ms));
            }
        }
        assert!(
            t.events
                .windows(2)
                .all(|w| w[0].decision.at_ms <= w[1].decision.at_ms)
        );
        assert_eq!(t.surprises.len(), 3);
    }

    #[test]
    fn a_traveller_works_as_usual_from_a_site_never_used_before() {
        let t = generate(&small());
        let from = t.header.start_ms + t.header.warmup_ms;
        let trav = t.surprises.iter().find(|s| s.kind == "traveller").unwrap();
        assert!(trav.start_ms >= from);
        let own: Vec<_> = t
            .events
            .iter()
            .filter(|e| e.decision.principal == trav.principal)
            .collect();
        assert!(own.iter().all(|e| e.label == Label::Benign));
        let before: std::collections::BTreeSet<_> = own
            .iter()
            .filter(|e| e.decision.at_ms < trav.start_ms)
            .map(|e| e.decision.site.clone())
            .collect();
        let away: Vec<_> = own
            .iter()
            .filter(|e| e.decision.at_ms >= trav.start_ms)
            .collect();
        assert!(!before.is_empty() && !away.is_empty());
        assert!(
            away.iter()
                .all(|e| e.decision.site == away[0].decision.site)
        );
        assert!(
            !before.contains(&away[0].decision.site),
            "{before:?} {:?}",
            away[0].decision.site
        );
    }

    /// An event line is the decision's fields, flat, between its type and
    /// its label, as `weft-trace/v1` has it.
    #[test]
    fn an_event_line_keeps_its_format() {
        for line in [
            r#"{"type":"event","at_ms":5,"principal":"User::\"u1\"","action":"Action::\"view\"","resource":"Doc::\"doc-1\"","allow":true,"token_failed":false,"site":"site-3","label":"benign"}"#,
            r#"{"type":"event","at_ms":7,"principal":"User::\"u2\"","action":"Action::\"edit\"","resource":"Db::\"db-2\"","allow":false,"token_failed":true,"site":null,"label":"low_and_slow"}"#,
        ] {
            let parsed: Line = serde_json::from_str(line).unwrap();
            assert!(matches!(parsed, Line::Event(_)));
            assert_eq!(serde_json::to_string(&parsed).unwrap(), line);
        }
    }
}
