//! The `[decision_log]` table of `weft.toml` ([`DecisionLogConfig`]) and
//! the settings a running node takes from it ([`DecisionLogOptions`]).
//!
//! `headers` is secret (it usually carries the receiver's credentials): the
//! `Debug` form and [`DecisionLogConfig::redacted`] show each header's name
//! with its value replaced by [`REDACTED`], and the shipper never logs it.
//! The URL is logged as scheme, host and port only ([`shown_url`]), since a
//! receiver's URL may carry a key in its user info or query.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

/// What a redacted secret shows in place of its value.
pub const REDACTED: &str = "<redacted>";

/// `[decision_log]` in `weft.toml`. Every field has a default; the table
/// ships nothing until `url` or `syslog` is set.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecisionLogConfig {
    /// Where batches are POSTed (`http://` or `https://`). Default empty:
    /// no HTTP sink (and no decision log at all unless `syslog` is set).
    pub url: String,
    /// Headers sent with every batch, like `Authorization = "Splunk …"`.
    /// SECRET: redacted whenever the configuration is printed.
    pub headers: BTreeMap<String, String>,
    /// The most records in one batch. Default 500: a batch of typical
    /// records is 150-300 kB of JSON before gzip, well under the 1 MB
    /// bodies collectors such as Splunk HEC, Logstash and Vector take by
    /// default.
    pub batch_max: usize,
    /// How long records gather before a batch that is not full is sent (a
    /// duration). Default `5s`: a SIEM sees a deny within seconds, at one
    /// request per five seconds when decisions are few.
    pub flush_every: String,
    /// The most bytes of records the buffer on disk holds; when it is full
    /// the oldest are dropped (and counted). Default 64 MiB: about 200,000
    /// records, over an hour of denies at 50 a second while the receiver is
    /// down.
    pub buffer_bytes: u64,
    /// Allows shipped: one in this many (denies are always shipped; 0
    /// ships no allows). Default 100, as the audit trail's
    /// `audit_allow_one_in`.
    pub sample_allow_one_in: u64,
    /// The longest wait between two attempts to deliver a batch the
    /// receiver did not take (a duration); waits double from half a second
    /// up to it, with jitter. Default `60s`.
    pub retry_max: String,
    /// How long one delivery may take before it counts as failed (a
    /// duration). Default `10s`.
    pub timeout: String,
    /// RFC 5424 syslog as a second sink, best effort:
    /// `udp://HOST:PORT` or `tcp://HOST:PORT`. Default empty: none.
    pub syslog: String,
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        DecisionLogConfig {
            url: String::new(),
            headers: BTreeMap::new(),
            batch_max: 500,
            flush_every: "5s".into(),
            buffer_bytes: 64 * 1024 * 1024,
            sample_allow_one_in: 100,
            retry_max: "60s".into(),
            timeout: "10s".into(),
            syslog: String::new(),
        }
    }
}

impl std::fmt::Debug for DecisionLogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.redacted();
        f.debug_struct("DecisionLogConfig")
            .field("url", &shown.url)
            .field("headers", &shown.headers)
            .field("batch_max", &self.batch_max)
            .field("flush_every", &self.flush_every)
            .field("buffer_bytes", &self.buffer_bytes)
            .field("sample_allow_one_in", &self.sample_allow_one_in)
            .field("retry_max", &self.retry_max)
            .field("timeout", &self.timeout)
            .field("syslog", &self.syslog)
            .finish()
    }
}

/// The first wait before delivering a batch again; it doubles with each
/// failure up to [`DecisionLogOptions::retry_max`].
pub const RETRY_FIRST: Duration = Duration::from_millis(500);

/// Records waiting between the API and the buffer by default: 8,192, as
/// the audit trail's decision queue.
pub const DEFAULT_QUEUE: usize = 8192;

/// The decision log of a running node, checked.
#[derive(Clone, Debug)]
pub struct DecisionLogOptions {
    /// Where batches go (`None`: only to syslog).
    pub url: Option<reqwest::Url>,
    /// The syslog sink, if any.
    pub syslog: Option<super::syslog::SyslogTarget>,
    /// Headers sent with every batch (secret).
    pub headers: HeaderMap,
    /// The most records in one batch (at least 1).
    pub batch_max: usize,
    /// How long records gather before a batch that is not full is sent.
    pub flush_every: Duration,
    /// The most bytes the buffer on disk holds.
    pub buffer_bytes: u64,
    /// Allows shipped: one in this many; denies always.
    pub sample_allow_one_in: u64,
    /// Records waiting between the API and the buffer; beyond that, new
    /// ones are dropped (and counted). Default [`DEFAULT_QUEUE`].
    pub queue: usize,
    /// The first wait after a failed delivery.
    pub retry_first: Duration,
    /// The longest wait between two attempts.
    pub retry_max: Duration,
    /// How long one delivery may take.
    pub timeout: Duration,
}

impl DecisionLogOptions {
    /// Options shipping to `url` with the defaults of [`DecisionLogConfig`].
    pub fn new(url: Option<reqwest::Url>) -> Self {
        DecisionLogOptions {
            url,
            syslog: None,
            headers: HeaderMap::new(),
            batch_max: 500,
            flush_every: Duration::from_secs(5),
            buffer_bytes: 64 * 1024 * 1024,
            sample_allow_one_in: 100,
            queue: DEFAULT_QUEUE,
            retry_first: RETRY_FIRST,
            retry_max: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

impl DecisionLogConfig {
    /// The same settings with every header value replaced by [`REDACTED`]
    /// and the URL shown without user info or query.
    pub fn redacted(&self) -> DecisionLogConfig {
        let mut shown = self.clone();
        for v in shown.headers.values_mut() {
            *v = REDACTED.to_owned();
        }
        if let Ok(mut url) = reqwest::Url::parse(&self.url)
            && (!url.username().is_empty() || url.password().is_some() || url.query().is_some())
        {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            if url.query().is_some() {
                url.set_query(Some(REDACTED));
            }
            shown.url = url.to_string();
        }
        shown
    }

    /// The options of a running node: `None` when neither `url` nor
    /// `syslog` is set. An error names the setting (`decision_log.SETTING`)
    /// and what is wrong.
    pub fn options(&self) -> Result<Option<DecisionLogOptions>, String> {
        if self.url.is_empty() && self.syslog.is_empty() {
            return Ok(None);
        }
        let url = if self.url.is_empty() {
            None
        } else {
            let url = reqwest::Url::parse(&self.url).map_err(|e| {
                format!(
                    "decision_log.url \"{}\" is not a URL: {e}",
                    self.redacted().url
                )
            })?;
            if url.scheme() != "http" && url.scheme() != "https" {
                return Err(format!(
                    "decision_log.url must be http:// or https://, not {}://",
                    url.scheme()
                ));
            }
            Some(url)
        };
        let syslog = if self.syslog.is_empty() {
            None
        } else {
            Some(super::syslog::SyslogTarget::parse(&self.syslog)?)
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("decision_log.headers: \"{name}\" is not a header name"))?;
            let mut v = HeaderValue::from_str(value).map_err(|_| {
                format!("decision_log.headers: the value of {name} is not a valid header value")
            })?;
            v.set_sensitive(true);
            headers.insert(n, v);
        }
        if self.batch_max == 0 {
            return Err("decision_log.batch_max must be at least 1".into());
        }
        if self.buffer_bytes < 64 * 1024 {
            return Err(format!(
                "decision_log.buffer_bytes {} is below the least of 65536 (64 KiB)",
                self.buffer_bytes
            ));
        }
        let duration = |name: &str, text: &str| -> Result<Duration, String> {
            weft_protocol::time::parse_duration(text)
                .map(Duration::from_secs)
                .map_err(|e| format!("decision_log.{name}: {e}"))
        };
        let flush_every = duration("flush_every", &self.flush_every)?;
        let retry_max = duration("retry_max", &self.retry_max)?;
        let timeout = duration("timeout", &self.timeout)?;
        if timeout.is_zero() {
            return Err("decision_log.timeout must be longer than 0s".into());
        }
        Ok(Some(DecisionLogOptions {
            url,
            syslog,
            headers,
            batch_max: self.batch_max,
            flush_every,
            buffer_bytes: self.buffer_bytes,
            sample_allow_one_in: self.sample_allow_one_in,
            queue: DEFAULT_QUEUE,
            retry_first: RETRY_FIRST,
            retry_max: retry_max.max(RETRY_FIRST),
            timeout,
        }))
    }

    /// The table as it appears in `weft.toml`, a comment per setting,
    /// headers written out in full (this is the file itself).
    pub fn to_toml(&self) -> String {
        let headers = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k:?} = {v:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "[decision_log]\n\
             # where batches of decision records are POSTed (empty: no decision log)\n\
             url = {:?}\n\
             # headers sent with every batch (SECRET: redacted when printed)\n\
             headers = {{ {headers} }}\n\
             # the most records in one batch\n\
             batch_max = {}\n\
             # how long records gather before a batch that is not full is sent\n\
             flush_every = {:?}\n\
             # the most bytes the buffer on disk holds (the oldest records are dropped beyond)\n\
             buffer_bytes = {}\n\
             # ship one allow in this many (denies always; 0: no allows)\n\
             sample_allow_one_in = {}\n\
             # the longest wait between two attempts to deliver a batch\n\
             retry_max = {:?}\n\
             # how long one delivery may take\n\
             timeout = {:?}\n\
             # RFC 5424 syslog as a second sink, best effort: \"udp://HOST:PORT\" or \"tcp://HOST:PORT\" (empty: none)\n\
             syslog = {:?}\n",
            self.url,
            self.batch_max,
            self.flush_every,
            self.buffer_bytes,
            self.sample_allow_one_in,
            self.retry_max,
            self.timeout,
            self.syslog,
        )
    }
}

/// Whether `path` (a `weft.toml` whose `[decision_log]` holds headers)
/// can be read by its group or by others: the node warns at start, since
/// the headers are the receiver's credentials.
pub fn readable_by_others(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o044 != 0)
}

/// `url` as logs show it: scheme, host and port only.
pub fn shown_url(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}", url.scheme()),
        (Some(h), None) => format!("{}://{h}", url.scheme()),
        _ => format!("{}://", url.scheme()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_off_and_settings_are_checked() {
        assert!(DecisionLogConfig::default().options().unwrap().is_none());
        let mut c = DecisionLogConfig {
            url: "https://siem.example/ingest".into(),
            ..Default::default()
        };
        c.headers
            .insert("Authorization".into(), "Bearer s3cret".into());
        let o = c.options().unwrap().unwrap();
        assert_eq!(o.batch_max, 500);
        assert_eq!(o.flush_every, Duration::from_secs(5));
        assert!(o.headers["authorization"].is_sensitive());
        assert!(o.syslog.is_none());
        // Syslog alone is a decision log too.
        let only = DecisionLogConfig {
            syslog: "udp://127.0.0.1:514".into(),
            ..Default::default()
        };
        let o = only.options().unwrap().unwrap();
        assert!(o.url.is_none() && o.syslog.is_some());
        for (edit, says) in [
            (
                Box::new(|c: &mut DecisionLogConfig| c.url = "siem".into())
                    as Box<dyn Fn(&mut DecisionLogConfig)>,
                "decision_log.url",
            ),
            (Box::new(|c| c.url = "ftp://x/".into()), "decision_log.url"),
            (Box::new(|c| c.batch_max = 0), "decision_log.batch_max"),
            (
                Box::new(|c| c.buffer_bytes = 10),
                "decision_log.buffer_bytes",
            ),
            (
                Box::new(|c| c.flush_every = "soon".into()),
                "decision_log.flush_every",
            ),
            (
                Box::new(|c| c.timeout = "0s".into()),
                "decision_log.timeout",
            ),
            (
                Box::new(|c| c.syslog = "host:514".into()),
                "decision_log.syslog",
            ),
            (
                Box::new(|c| {
                    c.headers.insert("bad name".into(), "v".into());
                }),
                "decision_log.headers",
            ),
        ] {
            let mut bad = c.clone();
            edit(&mut bad);
            let err = bad.options().unwrap_err();
            assert!(err.starts_with(says), "{err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn secrets_never_show() {
        let mut c = DecisionLogConfig {
            url: "https://user:pw@siem.example/ingest?key=k3y".into(),
            ..Default::default()
        };
        c.headers
            .insert("Authorization".into(), "Bearer s3cret".into());
        let printed = format!("{c:?} {:?}", c.redacted());
        for secret in ["s3cret", "pw", "k3y"] {
            assert!(!printed.contains(secret), "{secret} shows in {printed}");
        }
        assert!(printed.contains("Authorization"));
        assert_eq!(
            shown_url(&reqwest::Url::parse(&c.url).unwrap()),
            "https://siem.example:443"
        );
        // The file's own text keeps them, and reads back.
        let back: DecisionLogConfig =
            toml::from_str(c.to_toml().strip_prefix("[decision_log]\n").unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
