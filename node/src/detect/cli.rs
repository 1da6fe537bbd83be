//! `weft detect gen` and `weft detect eval`: generate labeled traces and
//! score the detector on them. `gen` is built with the `sim` feature.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use weft_protocol::time::parse_duration;

use super::eval::{EvalConfig, EvalReport, MethodReport, evaluate};
use super::mesh::MeshConfig;
use super::mesh_eval::{MeshEvalReport, evaluate_mesh};
use super::traces::Trace;
#[cfg(feature = "sim")]
use super::traces::{TraceConfig, generate};

/// What `weft detect eval` reports, in the long help of `weft detect`.
macro_rules! eval_help {
    () => {
        "`eval` replays a trace through the detector and, side by side, through a \
        static rate-limit rule, and reports per attack kind:\n\n  \
        precision  detected incidents / (detected + every false positive); strict, since an \
        alert does not name a kind\n  \
        recall     incidents with an alert on their principal between the attack's start and \
        its end plus the grace period / incidents\n  \
        F1         the harmonic mean of the two\n  \
        FP/1k/day  false positives (alerts after the warm-up outside every incident of their \
        principal) per 1,000 principals per day\n  \
        TTD        time from the attack's first request to its first alert: median and maximum\n\n\
        Alerts during the trace's warm-up (its first half, at most 24 h) are not scored: the \
        detector has no training step and learns its baselines there.\n\n\
        --fresh asks what a node that has just started sees instead: each attack gets its own \
        replay through a fresh detector (no saved state, no warm-up), from 30 s before the \
        attack's start to its end plus the grace period, with all the ordinary traffic of that \
        span; every alert counts, and FP/1k/day divides by the replayed hours. --no-floors \
        turns off the detector's absolute floors (the learned model alone).\n\n\
        --mesh replays a trace of several sites (`gen --multi-site`) as a mesh: a detector per \
        site fed only that site's decisions, exchanging signed summaries every 10 s as nodes \
        would, each with its mesh view and cross-site signals; beside it, in the same run, each \
        site's detector alone, one detector over every site and the rate rule at each site. For \
        low and slow it also reports the resources the attacker touched before the alert, and \
        the summaries' cost (bytes per principal, per node per minute)."
    };
}

/// The long help of `weft detect`.
#[cfg(feature = "sim")]
pub const DETECT_LONG_ABOUT: &str = concat!(
    "Generate labeled decision traces and evaluate the anomaly detector on them.\n\n\
    `gen` writes a deterministic trace (JSON lines, format weft-trace/v1): principals with \
    daily rhythms, benign surprises (new employees, nightly batch jobs, travellers at a new site) and labeled attacks \
    (credential stuffing, privilege probing, bulk exfiltration, lateral movement across sites, \
    low-and-slow); with --multi-site also roaming staff, shared service accounts and \
    multi-site attacks (distributed stuffing, distributed probing, site-to-site movement). ",
    eval_help!()
);

/// The long help of `weft detect`: a build without the `sim` feature has no
/// `gen`.
#[cfg(not(feature = "sim"))]
pub const DETECT_LONG_ABOUT: &str = concat!(
    "Evaluate the anomaly detector on labeled decision traces (JSON lines, format weft-trace/v1).\n\n",
    eval_help!()
);

/// `weft detect …`
#[derive(Debug, clap::Subcommand)]
pub enum DetectCommand {
    /// Write a labeled, deterministic trace of decisions (JSON lines).
    #[cfg(feature = "sim")]
    Gen(GenArgs),
    /// Replay a trace through the detector and a rate-limit rule; print precision, recall, F1, FP rate, time to detect.
    #[command(long_about = DETECT_LONG_ABOUT)]
    Eval(EvalArgs),
}

/// Arguments of `weft detect gen`.
#[cfg(feature = "sim")]
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Where to write the trace.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The seed of every random choice.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Ordinary users (one new employee, one batch job and one traveller per 250 come on top).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub principals: usize,
    /// Length of the trace in hours; the first half (at most 24) is warm-up.
    #[arg(long, value_name = "H", default_value_t = 24)]
    pub hours: u64,
    /// Attacks of each kind [default: one per 100 principals, at least 2].
    #[arg(long, value_name = "K")]
    pub attacks_per_kind: Option<usize>,
    /// Sites (nodes) the decisions come from.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub sites: usize,
    /// Add multi-site principals (roaming staff, shared service accounts) and attacks (distributed stuffing, distributed probing, site-to-site movement).
    #[arg(long)]
    pub multi_site: bool,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `weft detect eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The trace (from `weft detect gen`).
    #[arg(long, value_name = "FILE")]
    pub trace: PathBuf,
    /// The detector's seed.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// The detector's alert threshold (half-space trees score, 0 to 1) [default: 0.2].
    #[arg(long, value_name = "X")]
    pub threshold: Option<f64>,
    /// The norm of the driving z-scores an event needs to alert [default: 5.5].
    #[arg(long, value_name = "X")]
    pub min_norm: Option<f64>,
    /// How long after an attack's end an alert still counts.
    #[arg(long, value_name = "D", default_value = "5m")]
    pub grace: String,
    /// The baseline rule's limit, requests per principal per minute.
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub rate_limit: u32,
    /// Fresh mode: replay each attack, from 30 s before it starts, through a fresh detector (no state, no warm-up).
    #[arg(long)]
    pub fresh: bool,
    /// Without the detector's absolute floors: the learned model alone.
    #[arg(long)]
    pub no_floors: bool,
    /// Mesh mode: a detector per site of the trace, each fed its own site's decisions, exchanging signed summaries every 10 s.
    #[arg(long, conflicts_with = "fresh")]
    pub mesh: bool,
    /// Mesh mode: new resource bits within an hour at which the mesh view's `new_resources` signal alerts [default: 14].
    #[arg(long, value_name = "N", requires = "mesh")]
    pub mesh_new_resources: Option<u32>,
    /// Print the whole report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `weft detect …`.
pub fn detect(cmd: DetectCommand) -> Result<ExitCode> {
    match cmd {
        #[cfg(feature = "sim")]
        DetectCommand::Gen(a) => gen_cmd(&a),
        DetectCommand::Eval(a) => eval_cmd(&a),
    }
}

#[cfg(feature = "sim")]
fn gen_cmd(a: &GenArgs) -> Result<ExitCode> {
    use std::io::{BufWriter, Write as _};

    if a.principals == 0 {
        bail!("--principals must be at least 1");
    }
    if a.hours < 2 {
        bail!("--hours must be at least 2 (the first half is warm-up)");
    }
    if !(2..=256).contains(&a.sites) {
        bail!("--sites must be between 2 and 256");
    }
    let trace = generate(&TraceConfig {
        seed: a.seed,
        principals: a.principals,
        hours: a.hours,
        attacks_per_kind: a.attacks_per_kind,
        sites: a.sites,
        multi_site: a.multi_site,
    });
    let f = File::create(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let mut w = BufWriter::new(f);
    trace
        .write_jsonl(&mut w)
        .and_then(|()| w.flush())
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "file": a.out.display().to_string(),
                "seed": a.seed,
                "principals": trace.header.principals,
                "hours": trace.header.hours,
                "warmup_ms": trace.header.warmup_ms,
                "events": trace.events.len(),
                "incidents": trace.incidents.len(),
                "surprises": trace.surprises.len(),
            })
        );
    } else {
        println!(
            "wrote {} events of {} principals over {} h ({} attacks, {} benign surprises) to {}",
            trace.events.len(),
            trace.header.principals,
            trace.header.hours,
            trace.incidents.len(),
            trace.surprises.len(),
            a.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn eval_cmd(a: &EvalArgs) -> Result<ExitCode> {
    let f = File::open(&a.trace).with_context(|| format!("cannot read {}", a.trace.display()))?;
    let trace = Trace::read_jsonl(BufReader::new(f))
        .with_context(|| format!("{} is not a weft trace", a.trace.display()))?;
    let mut cfg = EvalConfig {
        seed: a.seed,
        grace_ms: parse_duration(&a.grace).context("--grace")? * 1000,
        rate_limit_per_min: a.rate_limit,
        fresh: a.fresh,
        ..EvalConfig::default()
    };
    if a.no_floors {
        cfg.detector.floors = None;
    }
    if let Some(t) = a.threshold {
        if !(0.0..=1.0).contains(&t) {
            bail!("--threshold must be between 0 and 1");
        }
        cfg.detector.threshold = t;
    }
    if let Some(n) = a.min_norm {
        cfg.detector.min_norm = n;
    }
    if a.mesh {
        let mut mesh = MeshConfig::default();
        if let Some(n) = a.mesh_new_resources {
            mesh.new_resources = n;
        }
        let report = evaluate_mesh(&trace, &cfg, &mesh);
        if a.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", human_mesh(&report));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = evaluate(&trace, &cfg);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn secs(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 120_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) => format!("{:.0}m", ms as f64 / 60_000.0),
    }
}

fn table(m: &MethodReport) -> String {
    let mut out = format!(
        "{} ({}): {} alerts, {} false positives, {:.2} per 1,000 principals per day\n",
        m.method, m.description, m.alerts, m.false_positives, m.fp_per_1000_principals_per_day
    );
    out += &format!(
        "  {:<20} {:>9} {:>9} {:>7} {:>6} {:>8} {:>8}\n",
        "kind", "detected", "precision", "recall", "F1", "TTD p50", "TTD max"
    );
    for k in &m.kinds {
        out += &format!(
            "  {:<20} {:>4}/{:<4} {:>9.3} {:>7.3} {:>6.3} {:>8} {:>8}\n",
            k.kind,
            k.detected,
            k.incidents,
            k.precision,
            k.recall,
            k.f1,
            secs(k.ttd_p50_ms),
            secs(k.ttd_max_ms)
        );
    }
    out
}

/// The human form of a mesh report.
pub fn human_mesh(r: &MeshEvalReport) -> String {
    let mut out = format!(
        "trace seed {}: {} principals, {} h ({:.0} h scored after the warm-up), {} events at {} sites; a detector per site, exchanging signed summaries every 10 s\n\n",
        r.trace_seed, r.principals, r.hours, r.scored_hours, r.events, r.sites
    );
    for m in [&r.mesh, &r.single_site, &r.all_sites_in_one, &r.rate_limit] {
        out += &table(m);
        out += "\n";
    }
    let low: Vec<String> = [&r.mesh, &r.single_site]
        .iter()
        .filter_map(|m| {
            let k = m.kinds.iter().find(|k| k.kind == "low_and_slow")?;
            Some(format!(
                "{}: p50 {}, max {}",
                m.method,
                k.resources_before_alert_p50
                    .map_or("-".into(), |v| v.to_string()),
                k.resources_before_alert_max
                    .map_or("-".into(), |v| v.to_string())
            ))
        })
        .collect();
    out += &format!(
        "low and slow, resources touched before the alert: {}\n",
        low.join("; ")
    );
    let signals: Vec<String> = r
        .mesh_signals
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    out += &format!("mesh view alerts by signal: {}\n", signals.join(", "));
    let c = &r.summaries;
    out += &format!(
        "summaries: {} ({} bytes, {:.1} per principal line; {:.0} bytes per node per minute; at most {} principals in one; {} left out; {} verified, {} refused)\n",
        c.summaries,
        c.bytes,
        c.bytes_per_principal,
        c.bytes_per_node_per_minute,
        c.max_principals,
        c.dropped,
        c.verified,
        c.refused
    );
    out += &format!(
        "mesh run: {:.0} events/s on one thread, exchanges included\n",
        r.events_per_sec
    );
    if !r.mesh.false_positive_samples.is_empty() {
        out += "\nmesh false positives (first ones):\n";
        for f in &r.mesh.false_positive_samples {
            out += &format!("  {} at {}: {}\n", f.principal, f.at_ms, f.reason);
        }
    }
    out
}

/// The human form of a report.
pub fn human(r: &EvalReport) -> String {
    let mut out = if r.mode == "fresh" {
        format!(
            "trace seed {}: {} principals, {} h; fresh: each attack replayed from 30 s before it through a fresh detector ({:.1} h replayed, {} events)\n\n",
            r.trace_seed, r.principals, r.hours, r.scored_hours, r.events
        )
    } else {
        format!(
            "trace seed {}: {} principals, {} h ({:.0} h scored after the warm-up), {} events\n\n",
            r.trace_seed, r.principals, r.hours, r.scored_hours, r.events
        )
    };
    out += &table(&r.detector);
    out += "\n";
    out += &table(&r.baseline);
    out += &format!(
        "\ndetector: {:.0} events/s on one thread, {} principals tracked, ~{:.0} bytes each ({:.1} MB in all)\n",
        r.performance.events_per_sec,
        r.performance.tracked,
        r.performance.bytes_per_principal,
        r.performance.memory_bytes as f64 / 1e6
    );
    if !r.detector.false_positive_samples.is_empty() {
        out += "\ndetector false positives (first ones):\n";
        for f in &r.detector.false_positive_samples {
            out += &format!("  {} at {}: {}\n", f.principal, f.at_ms, f.reason);
        }
    }
    out
}
