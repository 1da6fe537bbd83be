//! Packet delay for kernels without `tc netem`: NFQUEUE and a thread that
//! holds each packet for a fixed time before letting it go.
//!
//! A rule in the node's namespace (`iptables -t mangle -A OUTPUT -o eth0
//! ... -j NFQUEUE`) hands every packet the node sends to its peers to a
//! netfilter queue. A thread of the test process, moved into that
//! namespace with `setns(2)`, reads the queue's metadata (no payload is
//! copied), keeps each packet for the delay and then accepts it, in the
//! order it arrived. The kernel keeps the packets meanwhile, so what the
//! node's TCP stack sees is a slower link, exactly as with netem: its
//! retransmission timers, congestion window and libp2p's keep-alives all
//! run against the real added latency.
//!
//! The thread polls its queue without blocking (the crate does not expose
//! its socket), every 200 µs while packets are held and every millisecond
//! otherwise, so the delay is exact to about a millisecond.

use std::collections::VecDeque;
use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use nfq::{Queue, Verdict};

use crate::netns::run;

/// The netfilter queue every delayed namespace uses (queues are per
/// namespace).
const QUEUE: u16 = 0;
/// Packets the kernel holds for the queue before it drops new ones.
const QUEUE_LEN: u32 = 65_536;

/// A running delay on one namespace's outgoing packets; dropping it lifts
/// the delay and lets every held packet go.
pub struct Delay {
    ns: String,
    rule: Vec<String>,
    stop: Arc<AtomicBool>,
    delayed: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Delay {
    /// Delays by `delay` every packet that namespace `ns` sends out of
    /// `eth0`, except those to `spare` (the test's own API calls).
    pub fn start(ns: &str, delay: Duration, spare: Ipv4Addr) -> Result<Delay> {
        let stop = Arc::new(AtomicBool::new(false));
        let delayed = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<()>>(1);
        let thread = {
            let (ns, stop, delayed) = (ns.to_owned(), stop.clone(), delayed.clone());
            std::thread::Builder::new()
                .name(format!("delay-{ns}"))
                .spawn(move || {
                    let queue = match open_in(&ns) {
                        Ok(q) => {
                            let _ = ready_tx.send(Ok(()));
                            q
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    hold(queue, delay, &stop, &delayed);
                })?
        };
        ready_rx
            .recv()
            .map_err(|_| anyhow!("the delay thread for {ns} ended before it was ready"))??;
        let rule: Vec<String> = [
            "-t",
            "mangle",
            "-A",
            "OUTPUT",
            "-o",
            "eth0",
            "!",
            "-d",
            &spare.to_string(),
            "-j",
            "NFQUEUE",
            "--queue-num",
            &QUEUE.to_string(),
            "--queue-bypass",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut d = Delay {
            ns: ns.to_owned(),
            rule,
            stop,
            delayed,
            thread: Some(thread),
        };
        d.iptables("-A").context(
            "cannot queue packets with iptables NFQUEUE (install iptables; the kernel needs \
             nfnetlink_queue and xt_NFQUEUE)",
        )?;
        Ok(d)
    }

    /// Packets delayed so far.
    pub fn delayed(&self) -> u64 {
        self.delayed.load(Ordering::Relaxed)
    }

    fn iptables(&mut self, op: &str) -> Result<String> {
        let mut args: Vec<&str> = vec!["netns", "exec", &self.ns, "iptables"];
        let rule: Vec<&str> = self.rule.iter().map(String::as_str).collect();
        args.extend(rule.iter().map(|a| if *a == "-A" { op } else { a }));
        run(Command::new("ip").args(&args))
    }
}

impl Drop for Delay {
    fn drop(&mut self) {
        // No new packets reach the queue; the thread lets the held ones go.
        let _ = self.iptables("-D");
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Moves this thread into namespace `ns` and binds the queue there.
fn open_in(ns: &str) -> Result<Queue> {
    let path = ["/run/netns", "/var/run/netns"]
        .iter()
        .map(|d| std::path::Path::new(d).join(ns))
        .find(|p| p.exists())
        .ok_or_else(|| anyhow!("namespace {ns} not found under /run/netns"))?;
    let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // setns(2) moves only this thread into the namespace.
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| anyhow!("setns into {ns} failed: {e}"))?;
    let mut q = Queue::open().context("opening a netfilter queue socket")?;
    q.bind(QUEUE).context("binding netfilter queue 0")?;
    q.set_copy_range(QUEUE, 0)?;
    q.set_queue_max_len(QUEUE, QUEUE_LEN)?;
    q.set_nonblocking(true);
    Ok(q)
}

fn hold(mut q: Queue, delay: Duration, stop: &AtomicBool, delayed: &AtomicU64) {
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        loop {
            match q.recv() {
                Ok(m) => held.push_back((Instant::now() + delay, m)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    eprintln!("delay queue: {e}");
                    break;
                }
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| stopping || *due <= now) {
            let (_, mut m) = held.pop_front().expect("a held packet");
            m.set_verdict(Verdict::Accept);
            if let Err(e) = q.verdict(m) {
                eprintln!("delay queue verdict: {e}");
            }
            delayed.fetch_add(1, Ordering::Relaxed);
        }
        if stopping {
            return;
        }
        std::thread::sleep(if held.is_empty() {
            Duration::from_millis(1)
        } else {
            Duration::from_micros(200)
        });
    }
}
