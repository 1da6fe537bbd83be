//! The decision log's tasks: the intake (queue to buffer) and the sender
//! (buffer to receiver), and the handle the API offers records through.
//! The rules they keep are in the [module doc](super).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use tokio::sync::{Notify, mpsc, watch};

use super::buffer::Buffer;
use super::config::{DecisionLogOptions, shown_url};
use super::{DecisionLogMetrics, DropReason, Pending};

/// Records the intake moves to the buffer at once.
const INTAKE_BATCH: usize = 256;

/// The producers' side, cheap to clone: samples decisions and offers their
/// records without ever waiting.
#[derive(Clone)]
pub struct DecisionLogHandle {
    tx: mpsc::Sender<Pending>,
    allows: Arc<AtomicU64>,
    allow_one_in: u64,
    metrics: DecisionLogMetrics,
}

impl DecisionLogHandle {
    /// Whether a decision goes to the log: `Some(None)` for a deny (always),
    /// `Some(Some(n))` for the one allow in `n` that is shipped, `None`
    /// otherwise.
    pub fn sample(&self, allow: bool) -> Option<Option<u64>> {
        if !allow {
            return Some(None);
        }
        if self.allow_one_in == 0 {
            return None;
        }
        let n = self.allows.fetch_add(1, Ordering::Relaxed);
        n.is_multiple_of(self.allow_one_in)
            .then_some(Some(self.allow_one_in))
    }

    /// Offers a record; when the queue is full (or the node is stopping)
    /// it is dropped and counted, and the caller never waits.
    pub fn offer(&self, record: Pending) {
        if self.tx.try_send(record).is_err() {
            self.metrics.drop_n(DropReason::QueueFull, 1);
        }
    }
}

/// Starts the decision log: returns the handle and the future that runs
/// the intake, the HTTP sender (with a `url`, on the buffer in `db`) and the
/// syslog sink (with a `syslog` target) until `stop` turns true. Then
/// whatever is queued goes to the buffer, which is flushed; records not yet
/// delivered wait there for the next start. `node_id` labels every record.
/// An error names what could not start.
pub fn start(
    opts: DecisionLogOptions,
    db: &sled::Db,
    node_id: String,
    metrics: DecisionLogMetrics,
    stop: watch::Receiver<bool>,
) -> Result<(DecisionLogHandle, impl Future<Output = ()> + use<>), String> {
    let (tx, rx) = mpsc::channel(opts.queue.max(1));
    let handle = DecisionLogHandle {
        tx,
        allows: Arc::default(),
        allow_one_in: opts.sample_allow_one_in,
        metrics: metrics.clone(),
    };
    let ready = Arc::new(Notify::new());
    let sender = match opts.url.clone() {
        None => None,
        Some(url) => {
            let (buffer, dropped) = Buffer::open(db, opts.buffer_bytes)
                .map_err(|e| format!("cannot open the decision log's buffer in the store: {e}"))?;
            metrics.drop_n(DropReason::BufferFull, dropped);
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(opts.timeout)
                .build()
                .map_err(|e| format!("cannot make the decision log's HTTP client: {e}"))?;
            let buffer = Arc::new(buffer);
            show(&buffer, &metrics);
            if !buffer.is_empty() {
                tracing::info!(
                    records = buffer.len(),
                    bytes = buffer.bytes(),
                    "decision records from before the start wait in the buffer to be delivered"
                );
            }
            Some(Sender {
                url,
                opts: opts.clone(),
                client,
                buffer,
                ready: ready.clone(),
                metrics: metrics.clone(),
            })
        }
    };
    let (syslog_tx, syslog) = match opts.syslog.clone() {
        None => (None, None),
        Some(target) => {
            let (tx, rx) = mpsc::channel(super::syslog::SYSLOG_QUEUE);
            (
                Some(tx),
                Some(super::syslog::run(
                    target,
                    rx,
                    metrics.clone(),
                    stop.clone(),
                )),
            )
        }
    };
    let buffer = sender.as_ref().map(|s| s.buffer.clone());
    let intake = Intake {
        rx,
        buffer: buffer.clone(),
        syslog: syslog_tx,
        ready,
        metrics,
        batch_max: opts.batch_max,
        node_id,
        store_failed: false,
    };
    let stop2 = stop.clone();
    let run = async move {
        tokio::join!(
            intake.run(stop),
            async move {
                if let Some(sender) = sender {
                    sender.run(stop2).await;
                }
            },
            async move {
                if let Some(syslog) = syslog {
                    syslog.await;
                }
            }
        );
        if let Some(buffer) = buffer
            && let Err(err) = buffer.flush()
        {
            tracing::error!(%err, "cannot flush the decision log's buffer");
        }
    };
    Ok((handle, run))
}

fn show(buffer: &Buffer, metrics: &DecisionLogMetrics) {
    metrics
        .buffer_bytes
        .set(i64::try_from(buffer.bytes()).unwrap_or(i64::MAX));
    metrics
        .buffer_records
        .set(i64::try_from(buffer.len()).unwrap_or(i64::MAX));
}

/// Until `stop` turns true (or its sender is gone).
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

struct Intake {
    rx: mpsc::Receiver<Pending>,
    /// The HTTP sink's buffer, with a `url`.
    buffer: Option<Arc<Buffer>>,
    /// The syslog sink's queue, with a `syslog` target.
    syslog: Option<mpsc::Sender<Vec<u8>>>,
    ready: Arc<Notify>,
    metrics: DecisionLogMetrics,
    batch_max: usize,
    node_id: String,
    store_failed: bool,
}

impl Intake {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut batch = Vec::with_capacity(INTAKE_BATCH);
        loop {
            tokio::select! {
                biased;
                n = self.rx.recv_many(&mut batch, INTAKE_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    self.store(&mut batch);
                }
                () = stopped(&mut stop) => break,
            }
        }
        // What is still queued goes to the buffer before the end.
        self.rx.close();
        while let Ok(p) = self.rx.try_recv() {
            batch.push(p);
        }
        self.store(&mut batch);
    }

    fn store(&mut self, batch: &mut Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let lines: Vec<Vec<u8>> = batch.iter().map(|p| p.to_line(&self.node_id)).collect();
        if let Some(syslog) = &self.syslog {
            for (p, line) in batch.iter().zip(&lines) {
                let msg = super::syslog::message(line, p.allow, p.at_ms, &self.node_id);
                if syslog.try_send(msg).is_err() {
                    self.metrics.drop_n(DropReason::Syslog, 1);
                }
            }
        }
        batch.clear();
        let Some(buffer) = &self.buffer else {
            return;
        };
        match buffer.push(&lines) {
            Ok(dropped) => {
                self.store_failed = false;
                self.metrics.drop_n(DropReason::BufferFull, dropped);
            }
            Err(err) => {
                if !self.store_failed {
                    tracing::error!(%err, "the store refused decision records: they are dropped (counted in weft_decision_log_dropped_total{{reason=\"store\"}})");
                    self.store_failed = true;
                }
                self.metrics.drop_n(DropReason::Store, lines.len() as u64);
            }
        }
        show(buffer, &self.metrics);
        if buffer.len() >= self.batch_max as u64 {
            self.ready.notify_one();
        }
    }
}

struct Sender {
    url: reqwest::Url,
    opts: DecisionLogOptions,
    client: reqwest::Client,
    buffer: Arc<Buffer>,
    ready: Arc<Notify>,
    metrics: DecisionLogMetrics,
}

/// What became of one batch.
enum Delivery {
    /// The receiver took it (2xx).
    Delivered,
    /// The receiver will never take it (a 4xx other than 408 and 429).
    Rejected(StatusCode),
    /// Not delivered this time: why, in one line.
    Failed(String),
}

impl Sender {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let url = shown_url(&self.url);
        let mut failures: u32 = 0;
        let mut rejected_logged = BTreeSet::new();
        'outer: loop {
            tokio::select! {
                () = tokio::time::sleep(self.opts.flush_every) => {}
                () = self.ready.notified() => {}
                () = stopped(&mut stop) => break,
            }
            // Send everything held, a batch at a time.
            loop {
                let batch = match self.buffer.oldest(self.opts.batch_max) {
                    Ok(b) if b.is_empty() => break,
                    Ok(b) => b,
                    Err(err) => {
                        tracing::error!(%err, "cannot read the decision log's buffer");
                        break;
                    }
                };
                let n = batch.len() as u64;
                let body = match gzip(batch.iter().map(|(_, line)| line.as_ref())) {
                    Ok(b) => b,
                    Err(err) => {
                        tracing::error!(%err, "cannot compress a batch of decision records");
                        break;
                    }
                };
                let delivery = tokio::select! {
                    d = self.deliver(body) => d,
                    // Abandoned: the batch stays in the buffer and goes
                    // again after the next start.
                    () = stopped(&mut stop) => break 'outer,
                };
                match delivery {
                    Delivery::Delivered => {
                        self.remove(batch.iter().map(|(seq, _)| *seq));
                        self.metrics.sent.inc_by(n);
                        if failures > 0 {
                            tracing::info!(url, "the decision log's receiver takes batches again");
                        }
                        failures = 0;
                    }
                    Delivery::Rejected(status) => {
                        self.remove(batch.iter().map(|(seq, _)| *seq));
                        self.metrics.drop_n(DropReason::Rejected, n);
                        if rejected_logged.insert(status) {
                            tracing::error!(
                                url,
                                status = status.as_u16(),
                                records = n,
                                "the decision log's receiver refused a batch: it is dropped (counted in weft_decision_log_dropped_total{{reason=\"rejected\"}}; this is logged once per status)"
                            );
                        }
                    }
                    Delivery::Failed(why) => {
                        self.metrics.retried.inc_by(n);
                        if failures == 0 {
                            tracing::warn!(
                                url,
                                why,
                                held = self.buffer.len(),
                                "cannot deliver decision records: they stay in the buffer and go again with backoff"
                            );
                        }
                        let wait = backoff(&self.opts, failures);
                        failures = failures.saturating_add(1);
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = stopped(&mut stop) => break 'outer,
                        }
                    }
                }
                show(&self.buffer, &self.metrics);
            }
        }
    }

    fn remove(&self, seqs: impl IntoIterator<Item = u64>) {
        if let Err(err) = self.buffer.remove(seqs) {
            tracing::error!(%err, "cannot remove delivered records from the decision log's buffer: they may be sent again");
        }
    }

    async fn deliver(&self, body: Vec<u8>) -> Delivery {
        let mut headers = self.opts.headers.clone();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let sent = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await;
        match sent {
            Err(e) => Delivery::Failed(crate::util::error_line(&e.without_url())),
            Ok(r) => {
                let status = r.status();
                if status.is_success() {
                    Delivery::Delivered
                } else if status.is_client_error()
                    && status != StatusCode::REQUEST_TIMEOUT
                    && status != StatusCode::TOO_MANY_REQUESTS
                {
                    Delivery::Rejected(status)
                } else {
                    Delivery::Failed(format!("the receiver answered {status}"))
                }
            }
        }
    }
}

/// The wait after `failures` failures in a row: `retry_first` doubled that
/// many times, at most `retry_max`, then a random point in its upper half
/// (jitter, so that nodes cut off together do not come back in step).
pub fn backoff(opts: &DecisionLogOptions, failures: u32) -> Duration {
    let full = opts
        .retry_first
        .saturating_mul(1u32 << failures.min(20))
        .min(opts.retry_max);
    let half = full / 2;
    let jitter = getrandom::u64().unwrap_or(0) % (half.as_millis() as u64 + 1);
    half + Duration::from_millis(jitter)
}

/// `lines` gzip-compressed, one after another.
fn gzip<'a>(lines: impl Iterator<Item = &'a [u8]>) -> std::io::Result<Vec<u8>> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for line in lines {
        z.write_all(line)?;
    }
    z.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut o = DecisionLogOptions::new(Some("http://127.0.0.1:1/".parse().unwrap()));
        o.retry_first = Duration::from_millis(100);
        o.retry_max = Duration::from_secs(2);
        for (failures, full) in [(0, 100), (1, 200), (3, 800), (5, 2000), (40, 2000)] {
            for _ in 0..20 {
                let w = backoff(&o, failures).as_millis() as u64;
                assert!((full / 2..=full).contains(&w), "{failures}: {w}");
            }
        }
    }

    #[test]
    fn allows_are_sampled_and_denies_always_go() {
        let (tx, _rx) = mpsc::channel(1);
        let h = DecisionLogHandle {
            tx,
            allows: Arc::default(),
            allow_one_in: 3,
            metrics: DecisionLogMetrics::default(),
        };
        let picked: Vec<_> = (0..7).map(|_| h.sample(true)).collect();
        assert_eq!(
            picked,
            [
                Some(Some(3)),
                None,
                None,
                Some(Some(3)),
                None,
                None,
                Some(Some(3))
            ]
        );
        assert_eq!(h.sample(false), Some(None));
        let none = DecisionLogHandle {
            allow_one_in: 0,
            ..h
        };
        assert_eq!(none.sample(true), None);
        assert_eq!(none.sample(false), Some(None));
    }
}
