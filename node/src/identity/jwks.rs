//! Issuers' key sets: fetched from their `jwks_url`, cached, refreshed,
//! saved in the node's directory, and kept working while an issuer is
//! unreachable.
//!
//! # Layout
//! - One [`UrlKeys`] per key set URL (issuers that share a URL share it):
//!   the last good set with when it was fetched, the last error, and a
//!   lock that lets one fetch run at a time.
//! - `DIR/jwks/<sha256 of the URL, 32 hex digits>.json`, mode 0600: the
//!   last good set of each URL, `{"url", "fetched_ms", "jwks"}`, read when
//!   the URL is first needed, so a node restarted while an issuer is down
//!   keeps its keys.
//! - Inline sets (`jwks = '…'` in an issuers file) are read once per text
//!   and never fetched.
//!
//! # Rules
//! - A request never waits on a fetch when the keys it needs are held and
//!   fresh. It waits (at most the fetch timeout, 2 s) only when the URL
//!   has no fresh set, or the token names a key the set does not hold.
//! - Fetches a request asks for are rate-limited: at most one per URL per
//!   [`JwksOptions::refetch_after`] (10 s); a token with an unknown `kid`
//!   within that time is refused without a fetch.
//! - A timer refetches every set in use every
//!   [`JwksOptions::refresh_every`] (5 min), whatever the rate limit. A
//!   set unused for longer than `max_age` is forgotten (its file stays).
//! - A fetch that fails, or brings a set with no usable key, changes
//!   nothing but the last error: the last good set keeps working until it
//!   is [`JwksOptions::max_age`] old (`jwks_max_age`, 24 h by default),
//!   counted from its last good fetch. Past that its issuer's tokens are
//!   refused until a fetch succeeds.
//! - A fetch: `GET` with a timeout, redirects limited to 3, the body
//!   limited to [`MAX_JWKS_BYTES`], http or https (the issuers file,
//!   signed, names the URL).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::keys::KeySet;
use super::metrics::IdentityMetrics;

/// The largest key set fetched or saved.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// How key sets are fetched and how long they count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksOptions {
    /// Where the last good sets are saved (`DIR/jwks`); none saves nothing.
    pub dir: Option<PathBuf>,
    /// How long a set keeps working after its last good fetch
    /// (`jwks_max_age`).
    pub max_age: Duration,
    /// How often a set in use is fetched again.
    pub refresh_every: Duration,
    /// The least time between two fetches of one URL that requests ask for.
    pub refetch_after: Duration,
    /// The time a fetch may take.
    pub timeout: Duration,
}

/// `jwks_max_age`'s default: a day.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

impl Default for JwksOptions {
    fn default() -> Self {
        JwksOptions {
            dir: None,
            max_age: DEFAULT_MAX_AGE,
            refresh_every: Duration::from_secs(300),
            refetch_after: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
        }
    }
}

/// A good set and when it was fetched.
#[derive(Debug)]
pub struct Fetched {
    /// Its usable keys.
    pub keys: KeySet,
    /// When it was fetched, Unix milliseconds.
    pub fetched_ms: u64,
}

/// One key set URL.
pub struct UrlKeys {
    url: String,
    current: ArcSwapOption<Fetched>,
    fetching: tokio::sync::Mutex<()>,
    attempts: AtomicU64,
    last_attempt: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    last_used: Mutex<Instant>,
}

impl UrlKeys {
    /// The set, if it was fetched at most `max_age` before `now_ms`.
    pub fn fresh(&self, now_ms: u64, max_age: Duration) -> Option<Arc<Fetched>> {
        self.current
            .load_full()
            .filter(|f| u128::from(now_ms.saturating_sub(f.fetched_ms)) <= max_age.as_millis())
    }

    /// The set, however old.
    pub fn held(&self) -> Option<Arc<Fetched>> {
        self.current.load_full()
    }

    /// The last fetch's error, if it failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn since_attempt(&self) -> Option<Duration> {
        self.last_attempt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }

    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
}

/// What a fetch came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetch {
    /// A good set is in place.
    Done,
    /// It failed: why.
    Failed(String),
    /// The rate limit held it back.
    Limited,
}

/// Every key set the node holds.
pub struct KeyStore {
    opts: JwksOptions,
    client: reqwest::Client,
    urls: Mutex<HashMap<String, Arc<UrlKeys>>>,
    inline: Mutex<HashMap<[u8; 32], Arc<KeySet>>>,
    runtime: Option<tokio::runtime::Handle>,
    metrics: IdentityMetrics,
}

/// The most inline sets remembered (the cache is emptied when full).
const MAX_INLINE_SETS: usize = 256;

#[derive(Serialize, Deserialize)]
struct Saved {
    url: String,
    fetched_ms: u64,
    jwks: String,
}

impl KeyStore {
    /// A store. Fetches run on `runtime` (the node's), so their
    /// connections outlive the runtime of the request that asked; with
    /// none they run on the caller's.
    pub fn new(
        opts: JwksOptions,
        runtime: Option<tokio::runtime::Handle>,
        metrics: IdentityMetrics,
    ) -> Arc<KeyStore> {
        let client = reqwest::Client::builder()
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("weft/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        let store = Arc::new(KeyStore {
            opts,
            client,
            urls: Mutex::new(HashMap::new()),
            inline: Mutex::new(HashMap::new()),
            runtime,
            metrics,
        });
        store.start_refresher();
        store
    }

    /// The options.
    pub fn options(&self) -> &JwksOptions {
        &self.opts
    }

    /// The keys of an inline set.
    pub fn inline(&self, text: &str) -> Result<Arc<KeySet>, String> {
        let hash: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        let mut sets = self.inline.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = sets.get(&hash) {
            return Ok(set.clone());
        }
        let set = Arc::new(KeySet::parse(text.as_bytes())?);
        if sets.len() >= MAX_INLINE_SETS {
            sets.clear();
        }
        sets.insert(hash, set.clone());
        Ok(set)
    }

    /// The entry of `url`, made (with the saved set, if any) on first use.
    pub fn url(&self, url: &str) -> Arc<UrlKeys> {
        let mut urls = self.urls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = urls.get(url) {
            u.touch();
            return u.clone();
        }
        let saved = self.opts.dir.as_deref().and_then(|d| load(d, url));
        let entry = Arc::new(UrlKeys {
            url: url.to_owned(),
            current: ArcSwapOption::new(saved.map(Arc::new)),
            fetching: tokio::sync::Mutex::new(()),
            attempts: AtomicU64::new(0),
            last_attempt: Mutex::new(None),
            last_error: Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
        });
        urls.insert(url.to_owned(), entry.clone());
        entry
    }

    /// The entry of `url`, if the store holds it.
    pub fn get(&self, url: &str) -> Option<Arc<UrlKeys>> {
        self.urls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(url)
            .cloned()
    }

    /// Fetches `entry`'s set and waits for it. `forced` (the timer)
    /// ignores the rate limit. When another fetch of the URL is under way,
    /// waits for that one instead.
    pub async fn fetch(&self, entry: &UrlKeys, forced: bool) -> Fetch {
        let before = entry.attempts.load(Ordering::Acquire);
        let _one = entry.fetching.lock().await;
        if entry.attempts.load(Ordering::Acquire) != before {
            // Someone fetched while this waited: its outcome stands.
            return match entry.last_error() {
                None => Fetch::Done,
                Some(e) => Fetch::Failed(e),
            };
        }
        if !forced
            && entry
                .since_attempt()
                .is_some_and(|d| d < self.opts.refetch_after)
        {
            self.metrics.fetch("limited");
            return Fetch::Limited;
        }
        *entry.last_attempt.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let task = fetch_and_save(
            self.client.clone(),
            entry.url.clone(),
            self.opts.dir.clone(),
        );
        let got = match &self.runtime {
            Some(rt) => rt
                .spawn(task)
                .await
                .unwrap_or_else(|_| Err("the fetch was cut short: the node is stopping".into())),
            None => task.await,
        };
        entry.attempts.fetch_add(1, Ordering::AcqRel);
        let mut last_error = entry.last_error.lock().unwrap_or_else(|p| p.into_inner());
        match got {
            Ok(fetched) => {
                self.metrics.fetch("ok");
                entry.current.store(Some(Arc::new(fetched)));
                *last_error = None;
                Fetch::Done
            }
            Err(e) => {
                self.metrics.fetch("error");
                tracing::warn!(url = %entry.url, error = %e, "cannot fetch an issuer's key set: the last good one, if any, stays in use");
                *last_error = Some(e.clone());
                Fetch::Failed(e)
            }
        }
    }

    /// Starts a fetch of `entry` in the background when its set is due
    /// for a refresh (never fetched by this process, or last fetched
    /// [`JwksOptions::refresh_every`] ago). The caller does not wait.
    pub fn refresh_if_due(self: &Arc<Self>, entry: &Arc<UrlKeys>) {
        let due = entry
            .since_attempt()
            .is_none_or(|d| d >= self.opts.refresh_every);
        let Some(rt) = &self.runtime else { return };
        if due && entry.fetching.try_lock().is_ok() {
            // Not due for the requests that follow while this one runs.
            *entry.last_attempt.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            let store = self.clone();
            let entry = entry.clone();
            rt.spawn(async move {
                store.fetch(&entry, true).await;
            });
        }
    }

    /// Every `refresh_every` (checked at least every 30 s), refetches the
    /// sets in use and forgets the ones unused for `max_age`. The task ends
    /// with the store.
    fn start_refresher(self: &Arc<Self>) {
        let Some(rt) = &self.runtime else { return };
        let weak = Arc::downgrade(self);
        let tick = self
            .opts
            .refresh_every
            .clamp(Duration::from_millis(50), Duration::from_secs(30));
        rt.spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(store) = weak.upgrade() else { return };
                let entries: Vec<Arc<UrlKeys>> = {
                    let mut urls = store.urls.lock().unwrap_or_else(|p| p.into_inner());
                    urls.retain(|_, e| {
                        e.last_used
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .elapsed()
                            < store.opts.max_age
                    });
                    urls.values().cloned().collect()
                };
                for e in entries {
                    if e.since_attempt()
                        .is_none_or(|d| d >= store.opts.refresh_every)
                    {
                        store.fetch(&e, true).await;
                    }
                }
            }
        });
    }
}

/// The file `url`'s last good set is saved in.
pub fn saved_path(dir: &Path, url: &str) -> PathBuf {
    let hash = hex::encode(Sha256::digest(url.as_bytes()));
    dir.join(format!("{}.json", &hash[..32]))
}

fn load(dir: &Path, url: &str) -> Option<Fetched> {
    let path = saved_path(dir, url);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read a saved key set");
            return None;
        }
    };
    let saved: Saved = match serde_json::from_slice(&bytes) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "a saved key set is not readable: it is ignored");
            return None;
        }
    };
    if saved.url != url {
        return None;
    }
    match KeySet::parse(saved.jwks.as_bytes()) {
        Ok(keys) if !keys.is_empty() => Some(Fetched {
            keys,
            fetched_ms: saved.fetched_ms,
        }),
        _ => None,
    }
}

fn save(dir: &Path, url: &str, body: &str, fetched_ms: u64) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir)?;
    let path = saved_path(dir, url);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec(&Saved {
        url: url.to_owned(),
        fetched_ms,
        jwks: body.to_owned(),
    })?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&text)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// One fetch: the set, checked, and saved when `dir` is given.
async fn fetch_and_save(
    client: reqwest::Client,
    url: String,
    dir: Option<PathBuf>,
) -> Result<Fetched, String> {
    let body = get(&client, &url).await?;
    let keys = KeySet::parse(body.as_bytes()).map_err(|e| format!("{url}: {e}"))?;
    if keys.is_empty() {
        return Err(format!(
            "{url}: the key set holds no usable key (RS256, ES256 or EdDSA)"
        ));
    }
    let fetched_ms = crate::clock::now_ms();
    if let Some(dir) = dir {
        let saving = url.clone();
        let written =
            tokio::task::spawn_blocking(move || save(&dir, &saving, &body, fetched_ms)).await;
        if let Ok(Err(e)) | Err(e) = written.map_err(std::io::Error::other) {
            tracing::warn!(url = %url, error = %e, "cannot save an issuer's key set in the node directory");
        }
    }
    Ok(Fetched { keys, fetched_ms })
}

async fn get(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let mut resp = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| crate::util::error_line(&e))?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| crate::util::error_line(&e))?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!(
                "{url}: the key set is over the limit of {MAX_JWKS_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| format!("{url}: the key set is not UTF-8 text"))
}
