//! RFC 5424 syslog, the decision log's second sink (`syslog =
//! "udp://HOST:PORT"` or `"tcp://HOST:PORT"` in `[decision_log]`).
//!
//! Each record is one message: `<PRI>1 TIMESTAMP NODE_ID weft PROCID
//! decision - JSON`, facility authpriv (10), severity warning (4) for a
//! deny and informational (6) for an allow, so `<84>` or `<86>`; the
//! message is the record's JSON line without its newline. Over UDP a
//! message is one datagram; over TCP messages are framed by octet counting
//! (RFC 6587: `LENGTH SP MESSAGE`), on one connection made again after a
//! failure (at most once a second).
//!
//! Syslog is best effort, with no buffer on disk: a message that finds
//! its queue full, or that the network refuses (no connection, a datagram
//! too large), is dropped and counted
//! (`weft_decision_log_dropped_total{reason="syslog"}`). The HTTP sink is
//! the one that survives outages and restarts.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, watch};

use super::{DecisionLogMetrics, DropReason};

/// Messages waiting for the syslog task.
pub const SYSLOG_QUEUE: usize = 8192;

/// How syslog messages travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// One datagram per message.
    Udp,
    /// Octet-counted frames on a TCP connection.
    Tcp,
}

/// Where syslog messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyslogTarget {
    /// UDP or TCP.
    pub transport: Transport,
    /// `HOST:PORT`.
    pub addr: String,
}

impl SyslogTarget {
    /// Reads `udp://HOST:PORT` or `tcp://HOST:PORT`.
    pub fn parse(text: &str) -> Result<SyslogTarget, String> {
        let (transport, addr) = if let Some(a) = text.strip_prefix("udp://") {
            (Transport::Udp, a)
        } else if let Some(a) = text.strip_prefix("tcp://") {
            (Transport::Tcp, a)
        } else {
            return Err(format!(
                "decision_log.syslog \"{text}\" is neither udp://HOST:PORT nor tcp://HOST:PORT"
            ));
        };
        let port = addr.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
        if !matches!(port, Some(Ok(_))) || addr.starts_with(':') {
            return Err(format!(
                "decision_log.syslog \"{text}\" has no HOST:PORT (like udp://127.0.0.1:514)"
            ));
        }
        Ok(SyslogTarget {
            transport,
            addr: addr.to_owned(),
        })
    }
}

/// One record as an RFC 5424 message. `line` is its JSON line.
pub fn message(line: &[u8], allow: bool, at_ms: u64, node_id: &str) -> Vec<u8> {
    const AUTHPRIV: u8 = 10;
    let severity = if allow { 6 } else { 4 };
    let json = line.strip_suffix(b"\n").unwrap_or(line);
    let mut out = format!(
        "<{}>1 {} {node_id} weft {} decision - ",
        AUTHPRIV * 8 + severity,
        super::record::timestamp(at_ms),
        std::process::id()
    )
    .into_bytes();
    out.extend_from_slice(json);
    out
}

/// Sends messages from `rx` to `target` until `stop` turns true or every
/// sender is gone.
pub async fn run(
    target: SyslogTarget,
    mut rx: mpsc::Receiver<Vec<u8>>,
    metrics: DecisionLogMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let mut sink = Sink {
        target,
        udp: None,
        tcp: None,
        next_try: Instant::now(),
        failing: false,
    };
    loop {
        let msg = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => break,
            },
            () = super::shipper::stopped(&mut stop) => break,
        };
        match sink.send(&msg).await {
            Ok(()) => {
                if sink.failing {
                    tracing::info!(to = %sink.target.addr, "syslog takes decision records again");
                    sink.failing = false;
                }
            }
            Err(err) => {
                metrics.drop_n(DropReason::Syslog, 1);
                if !sink.failing {
                    tracing::warn!(to = %sink.target.addr, %err, "cannot send decision records to syslog: they are dropped (counted in weft_decision_log_dropped_total{{reason=\"syslog\"}})");
                    sink.failing = true;
                }
            }
        }
    }
}

struct Sink {
    target: SyslogTarget,
    udp: Option<tokio::net::UdpSocket>,
    tcp: Option<tokio::net::TcpStream>,
    /// No new connection before this (after a failure).
    next_try: Instant,
    failing: bool,
}

impl Sink {
    async fn send(&mut self, msg: &[u8]) -> std::io::Result<()> {
        match self.target.transport {
            Transport::Udp => {
                if self.udp.is_none() {
                    self.udp = Some(self.connect_udp().await?);
                }
                let Some(sock) = &self.udp else {
                    return Ok(());
                };
                let sent = sock.send(msg).await;
                if sent.is_err() {
                    self.udp = None;
                }
                sent.map(|_| ())
            }
            Transport::Tcp => {
                if self.tcp.is_none() {
                    if Instant::now() < self.next_try {
                        return Err(std::io::Error::other("waiting to connect again"));
                    }
                    self.next_try = Instant::now() + Duration::from_secs(1);
                    let conn = tokio::time::timeout(
                        Duration::from_secs(5),
                        tokio::net::TcpStream::connect(&self.target.addr),
                    )
                    .await
                    .map_err(|_| std::io::Error::other("connecting timed out"))??;
                    self.tcp = Some(conn);
                }
                let Some(conn) = &mut self.tcp else {
                    return Ok(());
                };
                let mut frame = format!("{} ", msg.len()).into_bytes();
                frame.extend_from_slice(msg);
                let sent = conn.write_all(&frame).await;
                if sent.is_err() {
                    self.tcp = None;
                }
                sent
            }
        }
    }

    async fn connect_udp(&self) -> std::io::Result<tokio::net::UdpSocket> {
        let to = tokio::net::lookup_host(&self.target.addr)
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other("the host has no address"))?;
        let local = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let sock = tokio::net::UdpSocket::bind(local).await?;
        sock.connect(to).await?;
        Ok(sock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_messages() {
        assert_eq!(
            SyslogTarget::parse("udp://127.0.0.1:514").unwrap(),
            SyslogTarget {
                transport: Transport::Udp,
                addr: "127.0.0.1:514".into()
            }
        );
        assert_eq!(
            SyslogTarget::parse("tcp://logs.example:601")
                .unwrap()
                .transport,
            Transport::Tcp
        );
        for bad in [
            "syslog.example:514",
            "udp://host",
            "tcp://:514",
            "udp://h:x",
        ] {
            let e = SyslogTarget::parse(bad).unwrap_err();
            assert!(e.starts_with("decision_log.syslog"), "{e}");
        }
        let m = message(b"{\"a\":1}\n", false, 1_780_000_000_123, "12D3node");
        let m = String::from_utf8(m).unwrap();
        let pid = std::process::id();
        assert_eq!(
            m,
            format!("<84>1 2026-05-28T20:26:40.123Z 12D3node weft {pid} decision - {{\"a\":1}}")
        );
        assert!(
            String::from_utf8(message(b"{}\n", true, 0, "n"))
                .unwrap()
                .starts_with("<86>1 ")
        );
    }
}
