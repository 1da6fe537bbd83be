//! A real headless Chromium for the browser tests: driven over WebDriver
//! (chromedriver, through `fantoccini`), or run once from the command line
//! to dump a page's DOM or take a screenshot.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver`
//! (`.ci/run` installs them); `WEFT_CHROMIUM` and `WEFT_CHROMEDRIVER` point
//! elsewhere. When they are missing the tests fail with that message: they
//! never skip.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use fantoccini::{Client, ClientBuilder};
use tempfile::TempDir;

/// The flags every Chromium here runs with: headless, and as root (CI)
/// without the sandbox, which needs user namespaces.
pub const FLAGS: [&str; 4] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
];

fn find(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    match std::env::var_os(env) {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.exists()),
        None => candidates.iter().map(PathBuf::from).find(|p| p.exists()),
    }
}

/// The Chromium binary, or an error saying how to install it.
pub fn chromium() -> Result<PathBuf> {
    find(
        "WEFT_CHROMIUM",
        &[
            "/usr/bin/chromium",
            "/usr/bin/chromium-browser",
            "/usr/bin/google-chrome",
        ],
    )
    .context(
        "Chromium is not installed (looked for WEFT_CHROMIUM, /usr/bin/chromium, /usr/bin/chromium-browser, /usr/bin/google-chrome): \
         install it with `apt-get install chromium chromium-driver`, as .ci/run does; the browser tests need a real browser",
    )
}

/// The chromedriver binary, or an error saying how to install it.
pub fn chromedriver() -> Result<PathBuf> {
    find(
        "WEFT_CHROMEDRIVER",
        &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
    )
    .context(
        "chromedriver is not installed (looked for WEFT_CHROMEDRIVER, /usr/bin/chromedriver): \
         install it with `apt-get install chromium-driver`, as .ci/run does",
    )
}

/// `target/test-artifacts/`, made if missing.
pub fn artifacts_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test exe>
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .context("the test executable is not in target/<profile>/deps")?;
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Runs Chromium once on `url` with `args` and returns its stdout.
pub fn run_once(url: &str, args: &[&str]) -> Result<String> {
    let bin = chromium()?;
    let profile = tempfile::tempdir()?;
    let out = Command::new(&bin)
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    ensure!(
        out.status.success(),
        "{} exited with {}: {}",
        bin.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The DOM of `url` after its scripts ran, as Chromium serializes it.
pub fn dump_dom(url: &str) -> Result<String> {
    run_once(url, &["--dump-dom"])
}

/// A screenshot of `url` into `png`, `width` by `height` pixels.
pub fn screenshot(url: &str, png: &Path, width: u32, height: u32) -> Result<()> {
    run_once(
        url,
        &[
            &format!("--screenshot={}", png.display()),
            &format!("--window-size={width},{height}"),
            "--hide-scrollbars",
        ],
    )?;
    ensure!(
        png.exists(),
        "Chromium wrote no screenshot to {}",
        png.display()
    );
    Ok(())
}

/// A browser session: chromedriver and the headless Chromium it drives.
pub struct Browser {
    /// The WebDriver client.
    pub client: Client,
    driver: Child,
    driver_url: String,
    _profile: TempDir,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a session.
    pub async fn start(width: u32, height: u32) -> Result<Browser> {
        let chromium = chromium()?;
        let driver_bin = chromedriver()?;
        let port = free_port()?;
        let mut driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", driver_bin.display()))?;
        let driver_url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(format!("{driver_url}/status")).await
                && r.status().is_success()
            {
                break;
            }
            if let Some(status) = driver.try_wait()? {
                bail!("{} exited at start with {status}", driver_bin.display());
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = driver.kill();
                bail!("chromedriver did not answer on {driver_url} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir()?;
        let mut args: Vec<String> = FLAGS.iter().map(|s| (*s).to_owned()).collect();
        args.push(format!("--window-size={width},{height}"));
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": args,
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let caps = match caps {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("a JSON object"),
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = match ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver_url)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                let _ = driver.kill();
                let _ = driver.wait();
                bail!("chromedriver could not start Chromium: {e}");
            }
        };
        Ok(Browser {
            client,
            driver,
            driver_url,
            _profile: profile,
        })
    }

    /// The browser console's entries at level SEVERE since the last call
    /// (chromedriver's log endpoint), leaving out failed resource loads: the
    /// dashboard probes optional endpoints that may answer 404.
    pub async fn console_errors(&self) -> Result<Vec<String>> {
        let session = self
            .client
            .session_id()
            .await?
            .context("no WebDriver session")?;
        let resp = reqwest::Client::new()
            .post(format!("{}/session/{session}/se/log", self.driver_url))
            .json(&serde_json::json!({"type": "browser"}))
            .send()
            .await?;
        ensure!(
            resp.status().is_success(),
            "chromedriver's log endpoint answered {}",
            resp.status()
        );
        let body: serde_json::Value = resp.json().await?;
        Ok(body["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .filter_map(|e| e["message"].as_str())
            .filter(|m| !m.contains("Failed to load resource"))
            .map(str::to_owned)
            .collect())
    }

    /// Ends the session and stops chromedriver.
    pub async fn close(mut self) -> Result<()> {
        let closed = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        closed.context("closing the browser session")?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
